"""One training step (forward, loss, backward, SGD update) of the papers' networks, per neuron type, with the
neuron layers on the fused kernels and on the eager steps: samples/s and peak GPU memory.

    resnet19-T2   ResNet-19, CIFAR-10 shapes (3 x 32 x 32), batch 128, T = 2    (DS-ATGO, MPD-AGL, MP-Init)
    resnet19-T4   the same, T = 4
    vggsnn-T10    VGGSNN, CIFAR10-DVS shapes (2 x 48 x 48 frames, T = 10 of them), batch 32

Synthetic data (the step's cost does not depend on it). Timing: CUDA events around a whole step after
warm-up, the median of --repeats; peak memory: torch.cuda.max_memory_allocated over the timed steps. Once every
row is timed, one more step of each under torch's profiler records the kernels it launched and their summed GPU
time, and the host events that took longest (``profile`` in the JSON): where the kernels' time falls well short
of the step's, the GPU waited on the host.
--variants adds bf16 autocast with channels_last ("bf16-cl") and torch.compile ("compile") runs.

    python benchmarks/train_step.py            # table, and benchmarks/results/train_step.json
    python benchmarks/train_step.py --dry-run  # tiny networks on the CPU (Triton's interpreter): checks the script

Target (issue 6), evaluated into the JSON: ResNet-19 T = 2, fused >= 2x eager, per neuron type.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

import gpu_timing

KINDS = ("lif", "atgo", "agl", "mpinit_trsg", "psg_pda")
VARIANTS = ("fp32", "bf16-cl", "compile")
TARGET_RESNET19_T2 = 2.0


def networks(dry_run: bool) -> dict[str, tuple[dict, int]]:
    """name -> (ModelConfig fields without the neuron, batch size)."""
    if dry_run:
        return {"resnet19-T2": ({"arch": "resnet19", "input_shape": (3, 8, 8), "timesteps": 2,
                                 "width": 1 / 16}, 4),
                "vggsnn-T10": ({"arch": "vgg", "input_shape": (2, 8, 8), "timesteps": 3, "temporal_input": True,
                                "plan": (8, "A", 8, "A")}, 4)}
    return {"resnet19-T2": ({"arch": "resnet19", "input_shape": (3, 32, 32), "timesteps": 2}, 128),
            "resnet19-T4": ({"arch": "resnet19", "input_shape": (3, 32, 32), "timesteps": 4}, 128),
            "vggsnn-T10": ({"arch": "vgg", "input_shape": (2, 48, 48), "timesteps": 10, "temporal_input": True},
                           32)}


def step_of(fields: dict, batch: int, kind: str, backend: str, variant: str, device: torch.device):
    """A closure that runs one training step, and the model."""
    from spikefold.train.models import ModelConfig, build_model
    from spikefold.train.neurons import NeuronConfig

    cfg = ModelConfig(classes=10, neuron=NeuronConfig(kind), norm="tdbn" if kind == "agl" else "bn", **fields)
    model = build_model(cfg).to(device).train()
    model.set_backend(backend)
    channels_last = variant == "bf16-cl"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if variant == "compile":
        torch._dynamo.reset()  # each model its own cache: past Dynamo's recompile limit it would run eagerly
    net = torch.compile(model) if variant == "compile" else model
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (batch, cfg.timesteps, *cfg.input_shape) if cfg.temporal_input else (batch, *cfg.input_shape)
    x = torch.rand(shape, generator=gen).to(device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    loss_fn = nn.CrossEntropyLoss()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant == "bf16-cl")

    def step():
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(net(x), y)
            extra = model.auxiliary_loss()
            if extra is not None:
                loss = loss + extra
        loss.backward()
        optimiser.step()

    return step


def _cell(row: dict, key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    return fmt.format(row[key] / scale) if key in row else row.get("error", "-")[:30]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", choices=list(networks(False)), default=list(networks(False)))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["fp32"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/train_step.json; a dry "
                        "run writes only where --out says)")
    parser.add_argument("--dry-run", action="store_true", help="tiny networks on the CPU, kernels on Triton's "
                        "interpreter: checks the script end to end, measures nothing")
    args = parser.parse_args(argv)
    device = gpu_timing.device_for(args.dry_run)
    chosen = {name: fields for name, fields in networks(args.dry_run).items() if name in args.networks}
    record = gpu_timing.machine(device)
    print(record["device"], flush=True)

    out = args.out or (None if args.dry_run else gpu_timing.RESULTS / "train_step.json")
    rows: list[dict] = []

    def save(verdicts: dict | None) -> None:
        """The JSON with every row so far (verdicts once all are in), rewritten after each row."""
        if out is not None:
            gpu_timing.write(out, {"machine": record, "complete": verdicts is not None,
                                   "settings": {"warmup": args.warmup, "repeats": args.repeats,
                                                "optimiser": "SGD momentum 0.9", "statistic": "median"},
                                   "target_resnet19_t2_speedup": TARGET_RESNET19_T2, "verdicts": verdicts or {},
                                   "results": rows}, quiet=verdicts is None)

    for name, (fields, batch) in chosen.items():
        for kind in args.kinds:
            for variant in args.variants:
                for backend in ("triton", "eager"):
                    row = {"network": name, "batch": batch, "kind": kind, "variant": variant, "backend": backend}
                    step = None
                    try:
                        step = step_of(fields, batch, kind, backend, variant, device)
                        if device.type == "cuda":
                            step()  # warm-up includes compiling; the peak below is of the timed steps
                            torch.cuda.reset_peak_memory_stats(device)
                        seconds = gpu_timing.median_seconds(step, device, args.warmup, args.repeats)
                        row.update(seconds=seconds, samples_per_s=batch / seconds)
                        if device.type == "cuda":
                            row["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
                    except Exception as exc:  # e.g. out of memory: reported, the run goes on
                        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                    del step
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    print(f"  {name:12s} {kind:12s} {variant:8s} {backend:7s} " + (
                        f"{row['samples_per_s']:9.1f} samples/s" if "seconds" in row else row["error"][:90]),
                        flush=True)
                    rows.append(row)
                    save(None)
    # Is the GPU busy through a step, or waiting on the host, and how much of it do the neuron kernels take?
    # Profiled only once every row is timed (see gpu_timing.profile_row).
    for row in rows:
        if "seconds" not in row:
            continue
        fields, batch = chosen[row["network"]]
        gpu_timing.profile_row(row, lambda: step_of(fields, batch, row["kind"], row["backend"], row["variant"],
                                                    device), device, ours=gpu_timing.neuron_kernel_names())
        save(None)

    by = {(r["network"], r["kind"], r["variant"], r["backend"]): r for r in rows}
    lines, verdicts = [], {}
    for (network, kind, variant, backend), r in by.items():
        if backend != "triton":
            continue
        eager = by.get((network, kind, variant, "eager"), {})
        speedup = eager["seconds"] / r["seconds"] if "seconds" in r and "seconds" in eager else None
        if network == "resnet19-T2" and speedup is not None:
            verdicts[f"{kind}/{variant}"] = {"speedup": speedup, "met": speedup >= TARGET_RESNET19_T2}
        lines.append([network, kind, variant, _cell(r, "samples_per_s"), _cell(eager, "samples_per_s"),
                      f"{speedup:.2f}x" if speedup else "-", _cell(r, "peak_memory_bytes", 2**30, "{:.2f}"),
                      _cell(eager, "peak_memory_bytes", 2**30, "{:.2f}")])
    print()
    print(gpu_timing.table(lines, ["network", "neuron", "variant", "fused samples/s", "eager samples/s", "speed-up",
                                   "fused peak GiB", "eager peak GiB"]))
    met = sum(v["met"] for v in verdicts.values())
    print(f"\nResNet-19 T = 2, fused >= {TARGET_RESNET19_T2}x eager: met in {met} of {len(verdicts)}"
          + (" (dry run: interpreter timings, they mean nothing)" if args.dry_run else ""))
    save(verdicts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
