"""ResNet-19 for CIFAR-10 (recipes/mpd_agl_cifar10_resnet19.yaml's architecture) at full, 1/4 and 1/16 width
through spikefold: export (fold, quantise with streamed calibration, state-range check, NIR write), then the
simulator on CPU. T = 2.

Each width is trained briefly (--train-steps optimiser steps) on synthetic CIFAR-shaped data, then its
BatchNorm statistics are set to the data's own (one pass in training mode, momentum 1) so that every
layer spikes; the simulator run checks that every layer did. Every stage runs in a subprocess of its own, which
reports its wall time and its peak resident memory (getrusage's ru_maxrss), so one stage's memory is not
counted against another's.

``cores`` and ``chips`` come from the partitioned core mapping (:func:`hardware_columns`); the last stage
validates every layer alone in Lava on ``--lava-samples`` samples (:func:`stage_lava`).

    .venv/bin/python benchmarks/full_size.py --widths 1/16 1/4        # while developing
    .venv/bin/python benchmarks/full_size.py --widths 1               # full width: watch `free -g`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from spikefold.core.files import write_json

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mpd_agl_cifar10_resnet19.yaml"
RESULTS = Path(__file__).parent / "results" / "full_size.json"
WIDTHS = {"1/16": 1 / 16, "1/4": 1 / 4, "1": 1.0}
TIMESTEPS = 2


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def synthetic_cifar(samples: int, seed: int, side: int = 32):
    """CIFAR-shaped images (3 x side x side in [0, 1]; CIFAR's side is 32) whose class shifts each channel's
    brightness, so a few steps of training have something to fit."""
    from spikefold.train.data import Split

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=samples)
    tint = rng.random((10, 3, 1, 1))
    x = np.clip(0.5 * rng.random((samples, 3, side, side)) + 0.5 * tint[y], 0.0, 1.0).astype(np.float32)
    return Split(x, y.astype(np.int64), x[: max(1, samples // 4)], y[: max(1, samples // 4)].astype(np.int64))


def model_config(width: float, side: int = 32):
    """The recipe's ResNet-19 at ``width``, T = TIMESTEPS, on side x side images (CIFAR's side is 32)."""
    from spikefold.train.models import ModelConfig

    recipe = yaml.safe_load(RECIPE.read_text())
    return ModelConfig.from_dict({**recipe["model"], "width": width, "timesteps": TIMESTEPS,
                                  "input_shape": [3, side, side]})


def stage_train(width: float, steps: int, batch: int, out: Path) -> dict:
    from spikefold.train import checkpoint
    from spikefold.train.loop import TrainConfig, train
    from spikefold.train.models import batchnorm_from_data

    cfg = model_config(width)
    data = synthetic_cifar(steps * batch, seed=0)
    start = time.perf_counter()
    model = train(cfg, TrainConfig(epochs=1, batch_size=batch, optimiser="sgd", lr=0.05, seed=0, device="cpu"),
                  data).model
    trained_s = time.perf_counter() - start
    batchnorm_from_data(model, synthetic_cifar(8, seed=1).x_train)  # so that every layer spikes
    checkpoint.save(out, {"model_config": cfg.to_dict(), "state_dict": model.state_dict()})
    return {"train_s": trained_s, "train_steps": steps, "train_batch": batch}


def stage_export(ckpt: Path, nir_path: Path, calibration_samples: int) -> dict:
    from spikefold.export import hw_config, nir_io
    from spikefold.export.fold import fold
    from spikefold.export.quantise import quantise
    from spikefold.export.state_range import check_state_range
    from spikefold.train.loop import model_from_checkpoint

    hw = hw_config.load("loihi2")
    calibration = synthetic_cifar(calibration_samples, seed=2).x_train.reshape(calibration_samples, -1)
    times = {}
    start = time.perf_counter()
    fnet = fold(model_from_checkpoint(ckpt))
    times["fold_s"] = time.perf_counter() - start
    net, report = quantise(fnet, hw, calibration)
    times["quantise_s"] = time.perf_counter() - start - sum(times.values())
    check_state_range(net, net.input.encode(calibration), report)
    times["range_check_s"] = time.perf_counter() - start - sum(times.values())
    nir_io.write(net, nir_path)
    times["nir_write_s"] = time.perf_counter() - start - sum(times.values())
    synapses = [c.synapses for layer in net.layers for c in layer.inputs]
    return {"export_s": time.perf_counter() - start, **times, "calibration_samples": calibration_samples,
            "layers": len(net.layers), "neurons": sum(layer.size for layer in net.layers),
            "weights_held": sum(int(np.size(s.weights)) for s in synapses),
            "synapses_unrolled": sum(s.shape[0] * s.shape[1] for s in synapses),
            "nir_mb": nir_path.stat().st_size / 2**20,
            "min_headroom_bits": min(entry.headroom_bits for entry in report.layers)}


def stage_sim(nir_path: Path, samples: int, threads: int) -> dict:
    from spikefold.export import nir_io
    from spikefold.sim.simulator import simulate

    net = nir_io.read(nir_path)
    x = net.input.encode(synthetic_cifar(samples + 1, seed=3).x_train.reshape(samples + 1, -1))
    simulate(net, x[:1], threads=threads)  # warm-up: first calls allocate and pick kernels
    start = time.perf_counter()
    result = simulate(net, x[1:], threads=threads)
    elapsed = time.perf_counter() - start
    per_layer = [int(s.sum()) for s in result.spikes[:-1]]
    silent = [layer.name for layer, count in zip(net.layers, per_layer) if count == 0]
    return {"sim_samples": samples, "sim_s": elapsed, "sim_samples_per_s": samples / elapsed,
            "threads": threads, "silent_layers": silent,
            "spikes_per_sample": sum(per_layer) / samples}


def hardware_columns(nir_path: Path) -> dict:
    """Cores and chips of the partitioned core mapping on loihi2 (spikefold.sim.cores)."""
    from spikefold.export import hw_config, nir_io
    from spikefold.sim.cores import map_onto_cores

    core_map = map_onto_cores(nir_io.read(nir_path), hw_config.load("loihi2"))
    return {"cores": len(core_map.cores), "chips": core_map.chips}


def stage_lava(nir_path: Path, samples: int) -> dict:
    """Layer-wise hardware-in-the-loop validation (``spikefold validate --layers each``): every layer run alone
    in Lava's bit-accurate simulation, driven by the input spikes the simulator recorded for it, every spike
    compared. Peak memory counts Lava's forked processes too (the largest of them)."""
    from spikefold.deploy.validation_run import ValidationConfig, run_validation

    with tempfile.TemporaryDirectory(prefix="full_size_lava_") as work:
        data = Path(work) / "x.npz"
        x = synthetic_cifar(samples, seed=4).x_train.reshape(samples, -1)
        np.savez(data, x=x)
        start = time.perf_counter()
        report = run_validation(ValidationConfig(model=nir_path, data=str(data), samples=samples, layers="each",
                                                 chunk=samples, out=Path(work) / "validate"))
        elapsed = time.perf_counter() - start
    rows = report.layers
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"lava_samples": samples, "lava_layers": len(rows), "lava_layerwise_s": elapsed,
            "lava_layerwise_s_per_layer": [round(r.target_s, 2) for r in rows],
            "lava_children_peak_gb": children,
            "spikes_compared": sum(r.spikes_compared for r in rows),
            "spikes_differing": sum(r.spikes_differing for r in rows),
            "spikes_equal": all(r.spikes_differing == 0 for r in rows)}


def _child(args: list[str], timeout: float) -> dict:
    """Run one stage in a fresh interpreter; its last stdout line is its JSON result."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"stage {args[:2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": os.sysconf("SC_PAGE_SIZE") *
            os.sysconf("SC_PHYS_PAGES") / 2**30, "python": platform.python_version(), "torch": torch.__version__,
            "load_average_start": os.getloadavg()}


def table(rows: list[dict]) -> str:
    lines = ["| width | neurons | kernel weights | unrolled synapses | train steps (s) | calibration samples | export (s) "
             "| export peak (GB) | sim samples/s (CPU) | sim peak (GB) | every layer spiked | cores | chips | "
             "Lava layer-wise |", "| --- " * 14 + "|"]
    for r in rows:
        lava = "-" if r.get("spikes_equal") is None else (
            f"{r['lava_layers']} layers, {r['lava_samples']} samples, {r['lava_layerwise_s']:.0f} s, peak "
            f"{max(r['lava_peak_gb'], r['lava_children_peak_gb']):.2f} GB; {r['spikes_compared']:,} spikes, "
            f"{'all equal' if r['spikes_equal'] else str(r['spikes_differing']) + ' differ'}")
        lines.append(
            f"| {r['width']} | {r['neurons']:,} | {r['weights_held']:,} | {r['synapses_unrolled']:,} | "
            f"{r['train_s']:.0f} | {r['calibration_samples']} | {r['export_s']:.1f} | {r['export_peak_gb']:.2f} | {r['sim_samples_per_s']:.2f} | "
            f"{r['sim_peak_gb']:.2f} | {'yes' if not r['silent_layers'] else 'no: ' + ', '.join(r['silent_layers'])} | "
            f"{r['cores'] or '-'} | {r['chips'] or '-'} | {lava} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--calibration-samples", type=int, default=16)
    p.add_argument("--sim-samples", type=int, default=8)
    p.add_argument("--lava-samples", type=int, default=2,
                   help="samples of the layer-wise Lava validation (0: skip it)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads in every stage (default 1: on a shared machine torch's 2-thread "
                        "kernels collapse when other jobs hold the cores)")
    p.add_argument("--stage-timeout", type=float, default=1800.0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)  # internal: run one stage in this process
    args = p.parse_args()
    if args.stage:
        torch.set_num_threads(args.threads)
        kind, *rest = args.stage
        if kind == "train":
            result = stage_train(WIDTHS[rest[0]], args.train_steps, args.train_batch, Path(rest[1]))
        elif kind == "export":
            result = stage_export(Path(rest[0]), Path(rest[1]), args.calibration_samples)
        elif kind == "lava":
            result = stage_lava(Path(rest[0]), args.lava_samples)
        else:
            result = stage_sim(Path(rest[0]), args.sim_samples, args.threads)
        print(json.dumps({**result, "peak_gb": _peak_rss_gb()}))
        return 0

    info, out = machine(), Path(args.out)
    # Rows of widths not run now are kept from an earlier run (the full width is run alone, late, on a shared
    # machine); each row records its own time and load.
    earlier = json.loads(out.read_text())["results"] if out.exists() else []
    rows = [r for r in earlier if r["width"] not in args.widths]
    common = ["--train-steps", str(args.train_steps), "--train-batch", str(args.train_batch),
              "--calibration-samples", str(args.calibration_samples), "--sim-samples", str(args.sim_samples),
              "--threads", str(args.threads), "--lava-samples", str(args.lava_samples)]
    with tempfile.TemporaryDirectory(prefix="full_size_") as work:
        for name in args.widths:
            ckpt, nir_path = Path(work) / f"w{len(rows)}.pt", Path(work) / f"w{len(rows)}.nir"
            row = {"width": name, "timesteps": TIMESTEPS, "load_average_start": os.getloadavg()[0],
                   "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            stages = [("train", [name, str(ckpt)]), ("export", [str(ckpt), str(nir_path)]), ("sim", [str(nir_path)])]
            stages += [("lava", [str(nir_path)])] if args.lava_samples else []
            for stage, paths in stages:
                result = _child([*common, "--stage", stage, *paths], args.stage_timeout)
                peak = result.pop("peak_gb")
                row |= result | {f"{stage}_peak_gb": peak}
            row |= hardware_columns(nir_path)
            rows.append(row)
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            write_json(out, {"machine": info, "options": {k: v for k, v in vars(args).items() if k != "stage"},
                             "results": rows})
    rows.sort(key=lambda r: WIDTHS[r["width"]])
    text = table(rows)
    print("\n" + text)
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']:.0f} GiB, Python {info['python']}, "
          f"torch {info['torch']}")
    write_json(out, {"machine": info, "options": {k: v for k, v in vars(args).items() if k != "stage"},
                     "results": rows, "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
