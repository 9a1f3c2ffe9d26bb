"""What the GPU benchmarks (neuron_kernels.py, train_step.py) share: the device check, timing with CUDA events
after warm-up (median of repeats), the GPU's peak memory bandwidth and a record of the machine.

``--dry-run`` in those scripts runs tiny shapes on the CPU, the kernels on Triton's interpreter, timed with
the wall clock: it checks that a script runs end to end, it measures nothing.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spikefold.core import files

RESULTS = Path(__file__).parent / "results"

# Peak memory bandwidth in bytes/s by device name, for when the driver's clock and bus width are not at hand
# (NVIDIA's data sheets: H100 SXM5 HBM3, H100 PCIe HBM2e, H100 NVL, H200 HBM3e, A100 80GB SXM / PCIe).
PEAK_BANDWIDTH = (("H100 PCIe", 2.0e12), ("H100 NVL", 3.9e12), ("H100", 3.35e12), ("H200", 4.8e12),
                  ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12))


def device_for(dry_run: bool) -> torch.device:
    """CUDA, or exit 2 with a message; the CPU for a dry run (kernels on Triton's interpreter, which must be
    chosen before the kernels are first imported)."""
    if dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print(f"error: {Path(sys.argv[0]).name} needs a CUDA GPU (it was written for an H100) and none is "
              "available here; --dry-run runs tiny shapes on the CPU to check the script", file=sys.stderr)
        sys.exit(2)
    return torch.device("cuda")


def median_seconds(run: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median time of ``run()``: CUDA events on a GPU (after ``warmup`` untimed calls), else the wall clock."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def neuron_kernel_names() -> tuple[str, ...]:
    """The names spikefold's neuron kernels carry in a profile: triton_lif's launched kernels. Their time in a
    call is what the kernels themselves take (bandwidth, launch choices); their share of a fused training step
    bounds what any neuron kernel could still gain there (Amdahl: convolutions, BatchNorm, the optimiser stay)."""
    from spikefold.train.kernels import triton_lif

    return tuple(name for name in vars(triton_lif) if name.endswith("_kernel"))


def kernel_breakdown(run: Callable[[], object], device: torch.device, top: int = 4, ours: tuple[str, ...] = (),
                     calls: int = 1) -> dict:
    """Where one call of ``run()`` spends its time, from torch's profiler: on a GPU, the kernels it launched
    (how many, their summed device time, the longest by name, and the summed time of those whose names contain
    one of ``ours``), so that a caller can set that against the call's CUDA-event time (the rest is host work and
    gaps between launches), and the host's events that took longest by their own time (operators, and CUDA
    runtime and driver calls such as launches, allocations or a synchronisation); on the CPU (a dry run), the
    operators it ran and those host events. One extra untimed call first, so nothing compiles inside the
    profile; then ``calls`` calls profiled, every figure given per call (their mean)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    run()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        for _ in range(calls):
            run()
        if cuda:
            torch.cuda.synchronize(device)
    averages = list(prof.key_averages())

    def per_call(count: int) -> float:  # a whole number where every call ran the same events
        return count // calls if count % calls == 0 else count / calls

    host = sorted(((a.key, per_call(a.count), a.self_cpu_time_total / 1e6 / calls) for a in averages
                   if a.self_cpu_time_total > 0), key=lambda k: -k[2])
    host_longest = [{"name": name[:120], "count": count, "seconds": t} for name, count, t in host[:top]]
    if not cuda:
        return {"operators": per_call(sum(a.count for a in averages)), "kernels": None, "kernel_seconds": None,
                "host_longest": host_longest}
    # The GPU's own events, each kernel (or copy, or fill) once under its own name: not the operators that
    # launched them, whose device time is those kernels' again, nor the ranges of record_function and
    # autograd.Function (user annotations), which the profiler also lays on the GPU's timeline around them.
    kernels = [(a.key, per_call(a.count), a.self_device_time_total / 1e6 / calls) for a in averages
               if a.device_type == DeviceType.CUDA and not getattr(a, "is_user_annotation", False)
               and a.self_device_time_total > 0]
    kernels.sort(key=lambda k: -k[2])
    return {"kernels": sum(count for _, count, _ in kernels), "kernel_seconds": sum(t for _, _, t in kernels),
            "longest": [{"name": name[:120], "count": count, "seconds": t} for name, count, t in kernels[:top]],
            "ours_seconds": sum(t for name, _, t in kernels if any(part in name for part in ours)),
            "host_longest": host_longest}


def profile_row(row: dict, make_run: Callable[[], Callable[[], object]], device: torch.device,
                ours: tuple[str, ...] = (), calls: int = 1) -> str:
    """A timed row once more under the profiler: ``row["profile"]`` from :func:`kernel_breakdown` of a fresh
    ``make_run()`` (``ours`` and ``calls`` as there), or ``row["profile_error"]`` when it fails; a line to print
    either way. Call it only once every row is timed: a profiler that recorded CUDA activity leaves CUPTI attached, which
    slows the launches of whatever runs after it (pytorch/pytorch#144455)."""
    try:
        row["profile"] = p = kernel_breakdown(make_run(), device, ours=ours, calls=calls)
        note = (f"{p['kernels']} kernels, {p['kernel_seconds'] * 1e3:.3f} ms on the GPU"
                if p["kernel_seconds"] is not None else f"{p['operators']} operators")
    except Exception as exc:  # reported in the row; the other rows still get theirs
        row["profile_error"] = note = f"{type(exc).__name__}: {exc}"[:300]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return note


def peak_bandwidth(device: torch.device) -> tuple[float | None, str]:
    """(bytes/s, where the figure comes from): the data-sheet figure for the device's name, else the memory clock
    and bus width from NVML when it is installed. The data sheet first: for the H200's HBM3e, NVML's clock times
    bus width (about 4.1 TB/s from the 3201 MHz seen there) falls short of the 4.8 TB/s NVIDIA states, and of
    the 4.3 TB/s a plain device-to-device copy was seen to reach."""
    if device.type != "cuda":
        return None, "no GPU"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BANDWIDTH:
        if key in name:
            return value, f"data sheet for '{key}' ({value / 1e12:.2f} TB/s), matched in the name '{name}'"
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        clock_hz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM) * 1e6
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        return 2 * clock_hz * bus_bits / 8, f"NVML: 2 x {clock_hz / 1e6:.0f} MHz x {bus_bits} bit (double data rate)"
    except Exception:  # NVML absent or without these queries
        return None, f"unknown for '{name}': add it to PEAK_BANDWIDTH in benchmarks/gpu_timing.py"


def cpu_name() -> str:
    """The host CPU's model name (Linux's /proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def machine(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    bandwidth, source = peak_bandwidth(device)
    record = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "host": cpu_name(),
              "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
              "triton": triton_version, "cuda": torch.version.cuda, "peak_bandwidth_bytes_per_s": bandwidth,
              "peak_bandwidth_source": source, "dry_run": device.type != "cuda"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.update(multiprocessors=props.multi_processor_count, memory_bytes=props.total_memory)
    return record


def write(path: Path, payload: dict, quiet: bool = False) -> None:
    """Atomically: the benchmarks rewrite their JSON after every row, so a run cut off (a GPU lease ending)
    keeps what it measured, and a reader never sees half a file."""
    files.write_text(path, json.dumps(payload, indent=1) + "\n")
    if not quiet:
        print(f"wrote {path}")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
