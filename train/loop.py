"""The training loop: surrogate-gradient BPTT for any model and neuron type, on CUDA when available.

Each epoch ends with an atomic ``last.pt`` (model, optimiser, scheduler, epoch, history), so an interrupted run
resumes where it stopped with the same batches; the final model is ``model.pt``. Launched by torchrun
(``torchrun --nproc_per_node=N -m spikefold.cli train ...``) it joins torchrun's process group, each process on
its own GPU; under ``torch.distributed`` the model is wrapped in DDP, every rank trains on its own shard of each
batch, and the neurons' running statistics are averaged over ranks as they are computed, on the eager path and
the kernels alike; only rank 0 writes files.

On a GPU the neuron layers run on the fused kernels (``backend``, see spikefold.train.kernels); ``precision``
"bf16" runs the forward under autocast, ``channels_last`` keeps conv activations NHWC and ``compile`` wraps
the model in torch.compile. The kernels work under all three.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from spikefold.core.devices import resolve_device
from spikefold.core.errors import CheckpointError, ConfigError
from spikefold.train import checkpoint, kernels
from spikefold.train.data import Split
from spikefold.train.models import ModelConfig, SpikingModel, build_model, check_keys

OPTIMISERS = ("adamw", "sgd")
PRECISIONS = ("fp32", "bf16")  # fp16 would need loss scaling; bf16 does not


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    optimiser: str = "adamw"
    lr: float = 5e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    augment: bool = False  # random crop (pad 4) and horizontal flip, for image data
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when available
    backend: str = "auto"  # neuron layers: "auto" (fused kernels on CUDA), "eager" or "triton"; see train.kernels
    precision: str = "fp32"  # "bf16": forward under bf16 autocast (the neuron kernels keep their state in fp32)
    channels_last: bool = False  # conv nets: NHWC weights and activations (the neuron kernels take any layout)
    compile: bool = False  # torch.compile the model (the neuron kernels are custom ops it keeps whole)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        check_keys(cls, d, "training options")
        cfg = cls(**d)
        if cfg.optimiser not in OPTIMISERS:
            raise ConfigError(f"unknown optimiser '{cfg.optimiser}'; valid: {', '.join(OPTIMISERS)}")
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1, got {cfg.epochs} and {cfg.batch_size}")
        if cfg.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{cfg.precision}'; valid: {', '.join(PRECISIONS)}")
        kernels.check_backend(cfg.backend)
        return cfg


@dataclasses.dataclass
class TrainResult:
    model: SpikingModel
    history: list[dict]
    test_accuracy: float


def join_torchrun(device: torch.device) -> torch.device:
    """Under torchrun (WORLD_SIZE > 1 in the environment): join its process group, NCCL on GPUs and gloo on
    the CPU, unless this process has joined one already, and train on this process's GPU (LOCAL_RANK) when
    the device names no index (a named error when it names another). Elsewhere a no-op. Returns the device to
    train on."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type == "cuda" and device.index != local:
        raise ConfigError(f"under torchrun each process trains on its own GPU (this one, LOCAL_RANK {local}, on "
                          f"cuda:{local}), but the device is '{device}'; use --device cuda (or auto)")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def distributed_rank() -> int:
    """This process's rank under torch.distributed (0 when not distributed)."""
    return _distributed()[0]


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for every sample of x, in evaluation mode (frozen running statistics)."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(torch.as_tensor(x[i : i + batch_size], device=device, dtype=torch.float32)).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    return float((predict(model, x, batch_size).argmax(1) == y).mean()) if len(x) else 0.0


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip of (batch, C, H, W) images, as one gather on x's device.
    The offsets and flips are drawn from ``generator`` (a CPU generator), so a seed crops alike on any device."""
    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (b,), generator=generator)
    dx = torch.randint(0, 9, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    dy, dx, flip = torch.stack([dy, dx, flip.long()]).to(x.device)  # one copy to x's device
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None].bool(), cols.flip(1), cols)  # a flipped crop reads its columns from the right
    samples = torch.arange(b, device=x.device)[:, None, None, None]
    channels = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[samples, channels, rows[:, None, :, None], cols[:, None, None, :]]


def model_from_checkpoint(path: str | Path) -> SpikingModel:
    payload = checkpoint.load(path)
    try:
        model = build_model(ModelConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
    except (ConfigError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match the model it describes: {exc}") from None
    return model.eval()


def _resume_options(cfg: TrainConfig) -> dict:
    """The training options a resumed run must share with the run it continues (not where it runs)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}


def _check_resumable(path: Path, state: dict, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """A resumed run continues the same training, or is refused before any step: another model would not load,
    other options would silently make a run that is neither the old one nor a new one."""
    differ = []
    for what, before, now in (("model", state["model_config"], model_cfg.to_dict()),
                              ("training", state.get("train_config"), _resume_options(cfg))):
        if before is None:  # checkpoints written before the options were stored
            continue
        differ += [f"{what} {key} {before.get(key)!r} -> {now.get(key)!r}" for key in sorted(set(before) | set(now))
                   if before.get(key) != now.get(key)]
    if differ:
        raise CheckpointError(f"cannot resume from {path}: the run it continues had other options "
                              f"({'; '.join(differ)}); resume with the same options, or start afresh in another "
                              "--out folder (or with --force)")


def _optimiser(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimiser == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(model_cfg: ModelConfig, cfg: TrainConfig, data: Split, out: str | Path | None = None,
          resume: bool = False, on_epoch: Callable[[dict], None] | None = None,
          after_backward: Callable[[SpikingModel], None] | None = None) -> TrainResult:
    """Train on ``data``; with ``out``, write ``last.pt`` every epoch and ``model.pt`` at the end.

    ``after_backward(model)`` runs after every backward pass (gradient probes).
    """
    device = join_torchrun(resolve_device(cfg.device))
    rank, world = _distributed()
    torch.manual_seed(cfg.seed)
    kernels.check_device(cfg.backend, device)
    model = build_model(model_cfg).to(device)
    model.set_backend(cfg.backend)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    expected = ((model_cfg.timesteps,) if model_cfg.temporal_input else ()) + tuple(model_cfg.input_shape)
    if tuple(data.x_train.shape[1:]) != expected and int(np.prod(data.x_train.shape[1:])) != int(np.prod(expected)):
        raise ConfigError(f"the data's samples have shape {data.x_train.shape[1:]}, the model expects {expected}")
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    optimiser = _optimiser(model, cfg)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=cfg.epochs)
    history: list[dict] = []
    start = 0
    out = Path(out) if out is not None else None
    if resume and out is not None and (out / "last.pt").exists():
        state = checkpoint.load(out / "last.pt")
        _check_resumable(out / "last.pt", state, model_cfg, cfg)
        model.load_state_dict(state["state_dict"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        history = list(state.get("history", []))
        start = int(state["epoch"])
    x_train = torch.as_tensor(data.x_train, dtype=torch.float32)
    y_train = torch.as_tensor(data.y_train)
    generator = torch.Generator()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for epoch in range(start, cfg.epochs):
        generator.manual_seed(cfg.seed + epoch)  # the same batches whether or not the run was resumed
        order = torch.randperm(len(x_train), generator=generator)
        model.train()
        total, seen = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device: no sync
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i : i + cfg.batch_size]
            if len(batch) < world:  # too few to give every rank a sample: dropped by every rank alike, since a
                break  # rank that skipped a step would leave the others waiting in its all-reduces
            idx = batch[rank::world]  # each rank its shard of the global batch
            xb, yb = x_train[idx].to(device, non_blocking=True), y_train[idx].to(device, non_blocking=True)
            if cfg.augment:
                xb = augment(xb.reshape(len(xb), *model_cfg.input_shape), generator)
            if cfg.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = loss_fn(net(xb), yb)
                extra = model.auxiliary_loss()
                if extra is not None:
                    loss = loss + extra
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward(model)
            optimiser.step()
            total += loss.detach() * len(idx)
            seen += len(idx)
        schedule.step()
        record = {"epoch": epoch + 1, "loss": float(total) / max(seen, 1),
                  "test_accuracy": evaluate(model, data.x_test, data.y_test)}
        history.append(record)
        if out is not None and rank == 0:
            checkpoint.save(out / "last.pt", {
                "model_config": model_cfg.to_dict(), "state_dict": model.state_dict(),
                "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                "epoch": epoch + 1, "history": history, "train_config": _resume_options(cfg)})
        if on_epoch is not None:
            on_epoch(record)
    accuracy = evaluate(model, data.x_test, data.y_test)
    if out is not None and rank == 0:
        checkpoint.save(out / "model.pt", {
            "model_config": model_cfg.to_dict(), "state_dict": model.state_dict(),
            "history": history, "test_accuracy": accuracy})
    return TrainResult(model.eval(), history, accuracy)
