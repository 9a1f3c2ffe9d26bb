"""One neuron layer alone, forward + backward, side by side in one run on one GPU: spikefold's fused kernels
and its eager steps for every neuron type, SpikingJelly 2.0's multi-step LIF (each of its CUDA implementations:
native CUDA, Triton, PyTorch) and snnTorch 1.0's Leaky (one call per timestep, as snnTorch runs).

Input currents (T, batch, ...), fp32, every layer in training mode, a random upstream gradient:

    seq-4096    T = 500, B = 16, N = 4096           long sequences, few neurons
    seq-16384   T = 500, B = 16, N = 16384
    cifar-T2/4/6  T = 2/4/6, B = 128, 128 x 32 x 32   a ResNet-19 stem layer on CIFAR-10
    tiny-T4     T = 4, B = 2, 8 x 4 x 4               so small that the GPU's work is nothing: a call's time is
                                                      its fixed cost (host work, launches), no target

Timing: CUDA events around one forward + backward, after warm-up; the median of --repeats. For spikefold's
fused rows, once every row is timed, PROFILED_CALLS more calls under torch's profiler record the kernels they
launched, their GPU time per call, that of spikefold's own neuron kernels among them, and the host events that
took longest (``profile`` in the JSON): where the kernels' time falls well short of the call's, host work or
launch gaps cost the rest, and the host events say which. Bandwidth: the bytes the fused kernel of that type
moves (``fused_bytes``) over the call's time, the same count for every contender of a type so that the column
compares like with like, and for the fused rows also over the neuron kernels' own GPU time (what the kernels
achieve, as a profiler reports it; the call's figure also counts the host's work around them), against the
GPU's peak (gpu_timing.peak_bandwidth, which records where the figure comes from). SpikingJelly picks its
implementation when imported, so each one runs in a subprocess of this script.

``--launch-sweep`` runs only the fused LIF, once per launch of LAUNCH_GRID (pipeline stages, neurons per
program, warps) besides the default that ``ops.launch_shape`` and ``ops.PIPELINE_STAGES`` pick, and writes those
rows instead, each the neuron kernels' own GPU time per call (the profiler's, over --repeats calls): a call's
CUDA-event time at these shapes is mostly the host's work, the same under every launch, and would bury the
launch's effect in its noise. Where the default is far from the best, the run says which way to move it,
without another run on the GPU; its one-stage row (no pipelining) says what the pipelined timestep loop gains.

    pip install --no-deps spikingjelly==2.0.0 snntorch==1.0.0 loguru     # loguru: SpikingJelly's logger
    python benchmarks/neuron_kernels.py        # table, and benchmarks/results/neuron_kernels.json
    python benchmarks/neuron_kernels.py --dry-run    # tiny shapes on the CPU (Triton's interpreter): checks the script

Targets (issues 6 and 16), evaluated into the JSON: every fused type >= 20x its eager version on the long
sequences (T = 500) and >= 3x on the CIFAR shapes (T <= 6), where the eager path launches fewer steps; fused LIF
at least as fast as SpikingJelly's fastest LIF on every shape; fused kernels at >= 50 % of the peak memory
bandwidth on the CIFAR shapes, over their own GPU time where profiled (bandwidth is reported for every row).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

import gpu_timing

SHAPES = {"seq-4096": (500, 16, 4096), "seq-16384": (500, 16, 16384), "cifar-T2": (2, 128, 128, 32, 32),
          "cifar-T4": (4, 128, 128, 32, 32), "cifar-T6": (6, 128, 128, 32, 32), "tiny-T4": (4, 2, 8, 4, 4)}
DRY_SHAPES = {"seq-64": (5, 2, 64), "cifar-T2": (2, 2, 4, 4, 4), "tiny-T4": (4, 2, 8, 4, 4)}
KINDS = ("lif", "atgo", "agl", "mpinit_trsg", "psg_pda")
SPIKINGJELLY = ("cuda", "triton", "torch")  # SJ_LIF_CUDA_IMPLEMENTATION values
# A shape's family is its name up to the first '-': "seq" (T = 500), "cifar" (T <= 6) or "tiny" (no targets).
# (pipeline stages, neurons per program, warps) for --launch-sweep, None for the default: first the depth of the
# timestep loop's pipeline at the default launch shape (1: none, each timestep's loads wait out their latency),
# then the launch shapes at the default depth, 1 to 8 neurons per thread, 1 to 16 warps
LAUNCH_GRID = (*((stages, None, None) for stages in (1, 2, 3, 6, 8)),
               *((None, block, warps) for block in (64, 128, 256, 512, 1024, 2048) for warps in (1, 2, 4, 8, 16)
                 if 1 <= block // (32 * warps) <= 8))
DRY_LAUNCH_GRID = ((1, None, None), (None, 128, 1), (None, 256, 2))
PROFILED_CALLS = 5
TARGETS = {"fused_over_eager": {"seq": 20.0, "cifar": 3.0}, "lif_over_spikingjelly": 1.0,
           "fraction_of_peak_bandwidth": {"cifar": 0.5}}


def family(shape: str) -> str:
    return shape.split("-")[0]


def fused_bytes(kind: str, elements: int, element_bytes: int) -> int:
    """Bytes the fused kernels move for one forward + backward over ``elements`` = T x N values: the forward
    reads I and writes S and H (fp32), the backward reads dL/dS and H and writes dL/dI. MP-Init's backward also
    reads I (for the input gain's gradient); DS-ATGO's training forward reads each H back once more (one
    launch per timestep)."""
    per_element = 4 * element_bytes + 2 * 4
    if kind == "mpinit_trsg":
        per_element += element_bytes
    if kind == "atgo":
        per_element += 4
    return elements * per_element


def spikefold_layer(kind: str, backend: str, shape: tuple[int, ...], device: torch.device):
    from spikefold.train.neurons import NeuronConfig, build

    layer = build(NeuronConfig(kind), shape[0]).to(device).train()
    if kind == "agl":
        layer.bind_norm(torch.nn.BatchNorm1d(shape[2]).to(device))  # its width reads gamma
    layer.backend = backend
    return layer


def spikingjelly_layer():
    from spikingjelly.activation_based import neuron

    return neuron.LIFNode(tau=2.0, step_mode="m")  # decay 1/2, hard reset to 0, threshold 1


def snntorch_layer():
    import snntorch

    leaky = snntorch.Leaky(beta=0.5, reset_mechanism="zero")

    def run(currents):
        mem, spikes = torch.zeros_like(currents[0]), []
        for current in currents:
            spike, mem = leaky(current, mem)
            spikes.append(spike)
        return torch.stack(spikes)

    return run


def layer_call(layer, shape, device, reset=None):
    """One forward + backward of ``layer`` on random currents of ``shape``, as a function to time."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    currents = (torch.randn(shape, generator=gen) + 0.5).to(device).requires_grad_()
    upstream = torch.randn(shape, generator=gen).to(device)

    def run():
        if reset is not None:
            reset()
        currents.grad = None
        layer(currents).backward(upstream)

    return run


def time_layer(layer, shape, device, warmup, repeats, reset=None) -> float:
    """Median seconds of one forward + backward of ``layer`` on random currents of ``shape``."""
    return gpu_timing.median_seconds(layer_call(layer, shape, device, reset), device, warmup, repeats)


def measure(name: str, make, shapes: dict, device, args, kind="lif", reset_of=None) -> list[dict]:
    rows = []
    for shape_name, shape in shapes.items():
        row = {"shape": shape_name, "dims": list(shape), "contender": name, "kind": kind}
        try:
            layer = make(shape)
            reset = reset_of(layer) if reset_of else None
            row["seconds"] = time_layer(layer, shape, device, args.warmup, args.repeats, reset)
        except Exception as exc:  # a contender that cannot run here is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"  {shape_name:10s} {name:28s} " + (f"{row['seconds'] * 1e3:10.3f} ms" if "seconds" in row
                                                   else row["error"][:90]), flush=True)
        rows.append(row)
    return rows


def profile_fused(rows: list[dict], device):
    """Each timed fused row, PROFILED_CALLS more times under torch's profiler (gpu_timing.profile_row, once every
    row is timed): is the call's time its kernels', or host work? Yields after each row."""
    for row in rows:
        if not row["contender"].startswith("spikefold-triton") or "seconds" not in row:
            continue
        shape = tuple(row["dims"])
        note = gpu_timing.profile_row(
            row, lambda: layer_call(spikefold_layer(row["kind"], "triton", shape, device), shape, device), device,
            ours=gpu_timing.neuron_kernel_names(), calls=PROFILED_CALLS)
        print(f"  {row['shape']:10s} {row['contender']:28s} profiled: {note[:90]}", flush=True)
        yield


def spikingjelly_rows(shapes: dict, args, device) -> list[dict]:
    """Each SpikingJelly implementation in a subprocess (it picks one per process, at import). A worker that
    fails or runs out of time keeps the shapes it finished; the rest get its reason as their error."""
    rows = []
    for impl in SPIKINGJELLY if device.type == "cuda" else ("torch",):
        command = [sys.executable, __file__, "--spikingjelly-worker", impl, "--warmup", str(args.warmup),
                   "--repeats", str(args.repeats), "--shapes", *args.shapes, *(["--dry-run"] if args.dry_run else [])]
        env = {**os.environ, "SJ_LIF_CUDA_IMPLEMENTATION": impl}
        try:  # its CUDA implementation compiles at first use: bounded, so it cannot eat a GPU lease
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.worker_timeout)
            output = done.stdout
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:300] if done.returncode else ""
        except subprocess.TimeoutExpired as exc:  # what it printed so far (bytes, whatever text= said)
            output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            reason = f"no result within --worker-timeout {args.worker_timeout} s"
        measured = [json.loads(line) for line in output.splitlines() if line.startswith("{") and line.endswith("}")]
        done_shapes = {row["shape"] for row in measured}
        missing = [{"shape": s, "dims": list(d), "contender": f"spikingjelly-{impl}", "kind": "lif",
                    "error": reason or "no output"} for s, d in shapes.items() if s not in done_shapes]
        for row in [*measured, *missing]:
            rows.append(row)
            print(f"  {row['shape']:10s} {row['contender']:28s} " + (
                f"{row['seconds'] * 1e3:10.3f} ms" if "seconds" in row else row["error"][:90]), flush=True)
    return rows


def summarise(rows: list[dict], peak: float | None, element_bytes: int) -> dict:
    """Bandwidth per row (over the call's time; over the neuron kernels' own GPU time too where profiled) and the
    targets' verdicts: the bandwidth target is the kernels' where profiled, else the call's."""
    by = {(r["shape"], r["contender"]): r for r in rows}
    for r in rows:
        if "seconds" in r:
            r["bytes"] = fused_bytes(r["kind"], math.prod(r["dims"]), element_bytes)
            r["bytes_per_s"] = r["bytes"] / r["seconds"]
            r["fraction_of_peak"] = r["bytes_per_s"] / peak if peak else None
            kernel_seconds = (r.get("profile") or {}).get("ours_seconds")
            if kernel_seconds:
                r["kernel_bytes_per_s"] = r["bytes"] / kernel_seconds
                r["kernel_fraction_of_peak"] = r["kernel_bytes_per_s"] / peak if peak else None
            else:  # no profile (yet, or it failed): no figure left from another reading
                r.pop("kernel_bytes_per_s", None)
                r.pop("kernel_fraction_of_peak", None)
    verdicts = {"fused_over_eager": {}, "lif_over_spikingjelly": {}, "fraction_of_peak_bandwidth": {}}
    for shape in sorted({r["shape"] for r in rows}):
        if family(shape) not in TARGETS["fused_over_eager"]:  # the tiny layer: its fixed cost, no target
            continue
        for kind in KINDS:
            fused, eager = by.get((shape, f"spikefold-triton:{kind}")), by.get((shape, f"spikefold-eager:{kind}"))
            target = TARGETS["fused_over_eager"][family(shape)]
            if fused and eager and "seconds" in fused and "seconds" in eager:
                ratio = eager["seconds"] / fused["seconds"]
                verdicts["fused_over_eager"][f"{shape}/{kind}"] = {"speedup": ratio, "target": target,
                                                                    "met": ratio >= target}
            target = TARGETS["fraction_of_peak_bandwidth"].get(family(shape))
            if target is not None and fused and fused.get("fraction_of_peak") is not None:
                over_kernels = fused.get("kernel_fraction_of_peak") is not None
                f = fused["kernel_fraction_of_peak"] if over_kernels else fused["fraction_of_peak"]
                verdicts["fraction_of_peak_bandwidth"][f"{shape}/{kind}"] = {
                    "fraction": f, "over": "the neuron kernels' GPU time" if over_kernels else "the call's time",
                    "call_fraction": fused["fraction_of_peak"], "target": target, "met": f >= target}
        sj = [r["seconds"] for r in rows if r["shape"] == shape and r["contender"].startswith("spikingjelly")
              and "seconds" in r]
        lif = by.get((shape, "spikefold-triton:lif"))
        if sj and lif and "seconds" in lif:
            ratio = min(sj) / lif["seconds"]
            verdicts["lif_over_spikingjelly"][shape] = {"speedup_over_fastest": ratio,
                                                        "target": TARGETS["lif_over_spikingjelly"],
                                                        "met": ratio >= TARGETS["lif_over_spikingjelly"]}
    return verdicts


def kernel_seconds(run, device: torch.device, args) -> float:
    """The neuron kernels' own GPU time per call of ``run``, the mean over --repeats calls under the profiler
    (after --warmup calls); the wall clock's median in a dry run, where there are no kernels to profile."""
    if device.type != "cuda":
        return gpu_timing.median_seconds(run, device, args.warmup, args.repeats)
    for _ in range(args.warmup):
        run()
    return gpu_timing.kernel_breakdown(run, device, ours=gpu_timing.neuron_kernel_names(),
                                       calls=args.repeats)["ours_seconds"]


def launch_sweep(shapes: dict, device: torch.device, grid, args):
    """The fused LIF under the default launch, then each of ``grid``, one list of rows (one per shape) at a
    time, each row the kernels' own time (:func:`kernel_seconds`): ``ops.launch_shape`` and
    ``ops.PIPELINE_STAGES`` are replaced for the sweep's own calls (and put back), so every row runs the same
    kernels with only their pipeline depth, grid, block and warps changed."""
    from spikefold.train.kernels import ops

    default_shape, default_stages = ops.launch_shape, ops.PIPELINE_STAGES
    for stages, block, warps in ((None, None, None), *grid):
        shape_of = default_shape if block is None else (lambda n, _device, b=block, w=warps: (-(-n // b), b, w))
        depth = stages or default_stages
        rows = []
        for shape_name, shape in shapes.items():
            programs, row_block, row_warps = shape_of(math.prod(shape[1:]), device)
            row = {"shape": shape_name, "dims": list(shape), "contender": "spikefold-triton:lif", "kind": "lif",
                   "default": stages is None and block is None, "programs": programs, "block": row_block,
                   "warps": row_warps, "stages": depth}
            ops.launch_shape, ops.PIPELINE_STAGES = shape_of, depth
            try:
                run = layer_call(spikefold_layer("lif", "triton", shape, device), shape, device)
                row["seconds"] = kernel_seconds(run, device, args)
            except Exception as exc:  # a launch that cannot run here (too many registers, say) is reported
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                ops.launch_shape, ops.PIPELINE_STAGES = default_shape, default_stages
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"  {shape_name:10s} {depth} stages, {row_block:4d} neurons, {row_warps:2d} warps " + (
                f"{row['seconds'] * 1e3:10.3f} ms" if "seconds" in row else row["error"][:90]), flush=True)
            rows.append(row)
        yield rows


def chosen_shapes(args) -> dict[str, tuple[int, ...]]:
    """The shapes asked for; in a dry run, the dry shape of each family asked for."""
    if args.dry_run:
        families = {family(name) for name in args.shapes}
        return {name: dims for name, dims in DRY_SHAPES.items() if family(name) in families}
    return {name: SHAPES[name] for name in args.shapes}


def spikingjelly_worker(impl: str, args) -> None:
    """The subprocess side of spikingjelly_rows: one JSON line per shape on stdout."""
    device = gpu_timing.device_for(args.dry_run)
    from spikingjelly.activation_based import functional

    for shape_name, shape in chosen_shapes(args).items():
        row = {"shape": shape_name, "dims": list(shape), "contender": f"spikingjelly-{impl}", "kind": "lif"}
        try:
            layer = spikingjelly_layer().to(device)
            row["seconds"] = time_layer(layer, shape, device, args.warmup, args.repeats,
                                        reset=lambda: functional.reset_net(layer))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        print(json.dumps(row), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-others", action="store_true", help="spikefold only: skip SpikingJelly and snnTorch")
    parser.add_argument("--worker-timeout", type=float, default=300.0,
                        help="seconds each SpikingJelly implementation may take for all shapes (default 300)")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/neuron_kernels.json; a "
                        "dry run writes only where --out says)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, kernels on Triton's "
                        "interpreter: checks the script end to end, measures nothing")
    parser.add_argument("--launch-sweep", action="store_true", help="only the fused LIF, under each launch of "
                        "LAUNCH_GRID and the default (rows with stages, programs, block, warps)")
    parser.add_argument("--spikingjelly-worker", choices=SPIKINGJELLY, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.spikingjelly_worker:
        spikingjelly_worker(args.spikingjelly_worker, args)
        return 0
    device = gpu_timing.device_for(args.dry_run)
    shapes = chosen_shapes(args)
    record = gpu_timing.machine(device)
    print(f"{record['device']}; peak bandwidth: {record['peak_bandwidth_source']}", flush=True)

    out = args.out or (None if args.dry_run else gpu_timing.RESULTS / "neuron_kernels.json")
    rows: list[dict] = []
    if args.launch_sweep:
        return sweep_main(shapes, device, record, out, args)

    def save(complete: bool) -> dict:
        """The verdicts so far, and the JSON rewritten with every row measured so far."""
        verdicts = summarise(rows, record["peak_bandwidth_bytes_per_s"], element_bytes=4)
        if out is not None:
            gpu_timing.write(out, {"machine": record, "complete": complete,
                                   "settings": {"warmup": args.warmup, "repeats": args.repeats, "dtype": "float32",
                                                "mode": "train", "statistic": "median"},
                                   "targets": TARGETS, "verdicts": verdicts, "results": rows}, quiet=not complete)
        return verdicts

    for kind in args.kinds:
        for backend in ("triton", "eager"):
            rows += measure(f"spikefold-{backend}:{kind}",
                            lambda shape, k=kind, b=backend: spikefold_layer(k, b, shape, device), shapes, device,
                            args, kind=kind)
            save(False)
    if not args.no_others:
        rows += spikingjelly_rows(shapes, args, device)
        save(False)
        rows += measure("snntorch-leaky", lambda shape: snntorch_layer(), shapes, device, args)
    for _ in profile_fused(rows, device):
        save(False)
    verdicts = save(True)

    eager = {(r["shape"], r["kind"]): r["seconds"] for r in rows
             if r["contender"].startswith("spikefold-eager") and "seconds" in r}
    lines = []
    for r in rows:
        if "seconds" not in r:
            lines.append([r["shape"], r["contender"], "-", "-", "-", "-", "-", r["error"][:60]])
            continue
        speedup = eager.get((r["shape"], r["kind"]), float("nan")) / r["seconds"]
        kernels = r.get("kernel_fraction_of_peak")
        lines.append([r["shape"], r["contender"], f"{r['seconds'] * 1e3:.3f}", f"{speedup:.1f}x",
                      f"{r['bytes_per_s'] / 1e9:.0f}",
                      f"{100 * r['fraction_of_peak']:.0f} %" if r.get("fraction_of_peak") is not None else "-",
                      f"{100 * kernels:.0f} %" if kernels is not None else "-", ""])
    print()
    print(gpu_timing.table(lines, ["shape", "contender", "ms (median)", "vs spikefold eager", "GB/s",
                                   "of peak", "kernels' of peak", "note"]))
    print("\ntargets:" + (" (dry run: interpreter timings, they mean nothing)" if args.dry_run else ""))
    for target, results in verdicts.items():
        met = sum(v["met"] for v in results.values())
        print(f"  {target} (>= {TARGETS[target]}): met in {met} of {len(results)}")
    return 0


def sweep_summary(rows: list[dict]) -> dict:
    """Per shape: the default launch, the fastest, and how many times slower the default is."""
    summary = {}
    for shape in dict.fromkeys(r["shape"] for r in rows):
        timed = [r for r in rows if r["shape"] == shape and "seconds" in r]
        default = next((r for r in timed if r["default"]), None)
        if default is None:
            continue
        best = min(timed, key=lambda r: r["seconds"])
        summary[shape] = {"default": {k: default[k] for k in ("stages", "block", "warps", "seconds")},
                          "best": {k: best[k] for k in ("stages", "block", "warps", "seconds")},
                          "default_over_best": default["seconds"] / best["seconds"]}
    return summary


def sweep_main(shapes: dict, device: torch.device, record: dict, out: Path | None, args) -> int:
    """--launch-sweep: the rows, the JSON rewritten after every launch, and per shape the default against the
    fastest."""
    rows: list[dict] = []
    settings = {"warmup": args.warmup, "repeats": args.repeats, "dtype": "float32", "mode": "train",
                "statistic": "mean of the neuron kernels' GPU time per call (profiler)" if device.type == "cuda"
                else "median of the wall clock (dry run)", "kind": "lif"}
    grid = DRY_LAUNCH_GRID if args.dry_run else LAUNCH_GRID
    for done, measured in enumerate(launch_sweep(shapes, device, grid, args)):
        rows += measured
        complete = done == len(grid)  # the default and every launch of the grid
        if out is not None:
            gpu_timing.write(out, {"machine": record, "complete": complete, "settings": settings,
                                   "best": sweep_summary(rows), "results": rows}, quiet=not complete)
    print(gpu_timing.table([[r["shape"], "default" if r["default"] else "", str(r["stages"]), str(r["block"]),
                             str(r["warps"]), str(r["programs"]),
                             f"{r['seconds'] * 1e3:.3f}" if "seconds" in r else r["error"][:60]] for r in rows],
                           ["shape", "", "stages", "block", "warps", "programs", "kernels' ms per call"]))

    def launch(v: dict) -> str:
        return (f"{v['stages']} stage{'s' if v['stages'] > 1 else ''}, {v['block']} neurons, "
                f"{v['warps']} warp{'s' if v['warps'] > 1 else ''}")

    for shape, v in sweep_summary(rows).items():
        print(f"{shape}: the default ({launch(v['default'])}) takes {v['default_over_best']:.2f}x the time of the "
              f"fastest ({launch(v['best'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
