"""The training loop: surrogate-gradient BPTT with AdamW and a cosine schedule, on CUDA when available.

Each epoch ends with an atomic ``last.pt`` (model, optimiser, scheduler, epoch), so an interrupted run
resumes where it stopped; the final model is ``model.pt``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikefold.errors import CheckpointError
from spikefold.train import checkpoint
from spikefold.train.data import Split
from spikefold.train.models import MLPConfig, SpikingMLP


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when available


@dataclasses.dataclass
class TrainResult:
    model: SpikingMLP
    history: list[dict]
    test_accuracy: float


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available here; use --device cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i : i + batch_size], device=device)
        correct += int((model(xb).argmax(1).cpu().numpy() == y[i : i + batch_size]).sum())
    return correct / max(len(x), 1)


def build_model(cfg: MLPConfig) -> SpikingMLP:
    return SpikingMLP(cfg)


def model_from_checkpoint(path: str | Path) -> SpikingMLP:
    payload = checkpoint.load(path)
    try:
        model = build_model(MLPConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match the model it describes: {exc}") from None
    return model.eval()


def train(model_cfg: MLPConfig, cfg: TrainConfig, data: Split, out: str | Path | None = None,
          resume: bool = False, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train on ``data``; with ``out``, write ``last.pt`` every epoch and ``model.pt`` at the end."""
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model = build_model(model_cfg).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=cfg.epochs)
    history: list[dict] = []
    start = 0
    out = Path(out) if out is not None else None
    if resume and out is not None and (out / "last.pt").exists():
        state = checkpoint.load(out / "last.pt")
        model.load_state_dict(state["state_dict"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        history = list(state.get("history", []))
        start = int(state["epoch"])
    x_train = torch.as_tensor(data.x_train, device=device)
    y_train = torch.as_tensor(data.y_train, device=device)
    generator = torch.Generator().manual_seed(cfg.seed)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, cfg.epochs):
        generator.manual_seed(cfg.seed + epoch)  # the same batches whether or not the run was resumed
        order = torch.randperm(len(x_train), generator=generator).to(device)
        model.train()
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        schedule.step()
        record = {"epoch": epoch + 1, "loss": total / len(order),
                  "test_accuracy": evaluate(model, data.x_test, data.y_test)}
        history.append(record)
        if out is not None:
            checkpoint.save(out / "last.pt", {
                "model_config": model_cfg.to_dict(), "state_dict": model.state_dict(),
                "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                "epoch": epoch + 1, "history": history})
        if on_epoch is not None:
            on_epoch(record)
    accuracy = evaluate(model, data.x_test, data.y_test)
    if out is not None:
        checkpoint.save(out / "model.pt", {
            "model_config": model_cfg.to_dict(), "state_dict": model.state_dict(),
            "history": history, "test_accuracy": accuracy})
    return TrainResult(model.cpu().eval(), history, accuracy)
