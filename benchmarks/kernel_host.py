"""The host's share of a fused neuron layer: the Python and dispatch work of one forward + backward, with every
Triton launch replaced by one that does nothing, so that only the host's work is timed. On a GPU that work
runs while the GPU waits whenever a layer's kernels take less time than it (a small layer, a short sequence),
and no kernel speed-up shortens it.

Side by side, per neuron type, on the CPU (tiny tensors: their own arithmetic costs almost nothing):

    direct      what a layer runs outside torch.compile: ops.lif / ops.atgo, a plain autograd.Function around
                the kernels' functions
    custom-op   the same call through the torch.library custom ops (what torch.compile sees, and what eager
                calls ran before the direct path existed)
    eager       the layer's eager steps (no kernels), for scale

The median over --repeats batches of --calls calls each, the three paths' batches taken in turn, in microseconds
per forward + backward; ratios against the custom-op row. The GPU check (benchmarks/gpu_check.sh) runs it on the
GPU machine's host too, beside what the kernels themselves take there (``profile`` in neuron_kernels.json).

    python benchmarks/kernel_host.py      # table, and benchmarks/results/kernel_host.json
    python benchmarks/kernel_host.py --dry-run --out /tmp/host.json    # two calls each: checks the script
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # the fused path on CPU tensors; every launch below is a no-op anyway

import torch  # noqa: E402

import gpu_timing  # noqa: E402
from neuron_kernels import KINDS, layer_call, spikefold_layer  # noqa: E402

SHAPE = (4, 2, 8, 4, 4)  # T = 4, a CIFAR-like layer in miniature
PATHS = ("direct", "custom-op", "eager")


class NoLaunch:
    """Stands in for a Triton kernel: ``kernel[grid](...)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def stub_launches(ops) -> None:
    """Every kernel ``ops`` launches becomes a NoLaunch (the triton_lif module itself is left alone)."""
    real = ops.triton_lif
    ops.triton_lif = types.SimpleNamespace(**{**vars(real), "lif_forward_kernel": NoLaunch(),
                                              "lif_backward_kernel": NoLaunch(),
                                              "adaptive_step_kernel": NoLaunch()})


def batch_microseconds(call, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def measure(kind: str, calls: int, repeats: int) -> dict[str, float]:
    """Median microseconds per call of each path, the paths' batches taken in turn (one of each per repeat),
    so that a slow spell of the machine weighs on every path alike."""
    from spikefold.train.kernels import ops

    direct = ops.lif, ops.atgo
    through_ops = ops.lif_forward, ops.atgo_adaptive_forward

    def run_path(path: str, call):
        def run():
            ops.lif, ops.atgo = through_ops if path == "custom-op" else direct
            try:
                return batch_microseconds(call, calls)
            finally:
                ops.lif, ops.atgo = direct
        return run

    runs = {path: run_path(path, layer_call(spikefold_layer(kind, "eager" if path == "eager" else "triton", SHAPE,
                                                            torch.device("cpu")), SHAPE, torch.device("cpu")))
            for path in PATHS}
    batches = {path: [] for path in PATHS}
    for run in runs.values():  # warm-up
        run()
    for _ in range(repeats):
        for path, run in runs.items():
            batches[path].append(run())
    return {path: statistics.median(times) for path, times in batches.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per timed batch (default 200)")
    parser.add_argument("--repeats", type=int, default=15, help="timed batches; the median is kept (default 15)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), metavar="KIND",
                        help=f"neuron types (default all: {', '.join(KINDS)})")
    parser.add_argument("--out", type=Path, default=gpu_timing.RESULTS / "kernel_host.json",
                        help="JSON path (default benchmarks/results/kernel_host.json)")
    parser.add_argument("--dry-run", action="store_true", help="two calls per path: checks the script")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.calls, args.repeats = 2, 1
    torch.set_num_threads(1)
    from spikefold.train.kernels import ops

    stub_launches(ops)
    rows = []
    record = {"machine": gpu_timing.machine(torch.device("cpu")), "complete": False, "dry_run": args.dry_run,
              "shape": list(SHAPE), "settings": {"calls": args.calls, "repeats": args.repeats, "statistic": "median",
                                                 "unit": "microseconds per forward + backward"}, "results": rows}
    for kind in args.kinds:
        row = {"kind": kind, **measure(kind, args.calls, args.repeats)}
        rows.append(row)
        print(f"{kind}: " + ", ".join(f"{path} {row[path]:.0f} us" for path in PATHS), file=sys.stderr)
        gpu_timing.write(args.out, record, quiet=True)  # a run cut off keeps the kinds it measured
    record["complete"] = True
    gpu_timing.write(args.out, record)
    print(gpu_timing.table([[r["kind"], *(f"{r[p]:.0f}" for p in PATHS), f"{r['direct'] / r['custom-op']:.2f}",
                             f"{r['eager'] / r['custom-op']:.2f}"] for r in rows],
                           ["neuron", *(f"{p} (us)" for p in PATHS), "direct / custom-op", "eager / custom-op"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
