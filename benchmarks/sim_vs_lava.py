"""spikefold's simulator against Lava's bit-accurate CPU simulation (Loihi2SimCfg(select_tag="fixed_pt")),
side by side on the same integer networks and the same inputs, with a check that every spike agreed.

Networks: the demo model (digits, 64-128-128-10, T = 4, the `make demo` recipe), a 784-256-256-10 MLP
(trained on digits scaled up to 28 x 28, T = 4), the digits CNN (recipes/digits_cnn.yaml: conv 16, pool,
conv 32, pool) and a SEW-ResNet-19 at 1/16 width (digits, T = 4; 21 layers and 42 connections, skips through
DelayDense). Lava runs the residual net's many processes slowly, so it gets shorter runs (--residual-lava-samples).

Throughput is sample-timesteps per second. Lava's is its marginal rate, the difference between a long and a
short run, so its start-up (compiling, forking processes) is not counted against it; its rate including
start-up is reported too. The simulator's is the median of repeated runs over many samples. Medians of
--repeats runs throughout; the machine and its load are recorded with the results.

    .venv/bin/python benchmarks/sim_vs_lava.py               # writes benchmarks/results/sim_vs_lava.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch

from spikefold.deploy import lava_runner
from spikefold.deploy.validation import compare
from spikefold.export import hw_config, nir_io
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.intnet import IntNetwork
from spikefold.export.state_range import check_state_range
from spikefold.export.runner import matmul_plan
from spikefold.sim.simulator import simulate
from spikefold.train.data import Split, digits
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig

RESULTS = Path(__file__).parent / "results" / "sim_vs_lava.json"


def _export(split: Split, model_cfg: ModelConfig, epochs: int, out: Path) -> IntNetwork:
    result = train(model_cfg, TrainConfig(epochs=epochs, seed=0), split, out=out)
    net, report = quantise(fold(result.model), hw_config.load("loihi2"), split.x_train)
    check_state_range(net, net.input.encode(split.x_train), report)
    return net


def digits_28x28() -> Split:
    """digits' 8 x 8 images scaled up to 28 x 28 (bilinear), so that a 784-input MLP sees image-like data."""
    d = digits()

    def up(x: np.ndarray) -> np.ndarray:
        images = scipy.ndimage.zoom(x.reshape(-1, 8, 8), (1, 3.5, 3.5), order=1)
        return np.clip(images, 0.0, 1.0).reshape(len(x), 784).astype(np.float32)

    return Split(up(d.x_train), d.y_train, up(d.x_test), d.y_test)


def networks(args) -> list[tuple[str, IntNetwork, np.ndarray, tuple[int, int]]]:
    """(name, network, inputs, (short, long) Lava run lengths) per benchmarked network."""
    work = Path(args.work)
    d = digits()
    if args.demo_model:
        demo = nir_io.read(args.demo_model)
    else:
        demo = _export(d, ModelConfig(), 30, work / "demo")  # what `spikefold pipeline` trains
    big = digits_28x28()
    mlp = _export(big, ModelConfig(input_shape=(784,), hidden=(256, 256)), args.epochs_784, work / "mlp784")
    cnn = _export(d, ModelConfig(arch="vgg", input_shape=(1, 8, 8), plan=(16, "A", 32, "A")), 30, work / "cnn")
    sew = _export(d, ModelConfig(arch="sew_resnet19", input_shape=(1, 8, 8), width=1 / 16), 30, work / "sew")
    x_digits = np.concatenate([d.x_test, d.x_train])
    return [("demo 64-128-128-10", demo, x_digits, args.lava_samples),
            ("MLP 784-256-256-10", mlp, np.concatenate([big.x_test, big.x_train]), args.lava_samples),
            ("digits CNN (2 conv + 2 pool)", cnn, x_digits, args.lava_samples),
            ("SEW-ResNet-19, 1/16 width", sew, x_digits, args.residual_lava_samples)]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name: str, net: IntNetwork, x_float: np.ndarray, lava_samples: tuple[int, int], args) -> dict:
    x = net.input.encode(x_float)
    T = net.timesteps
    short, long = lava_samples
    # Every spike of Lava's long run against the simulator's, before any timing.
    lava_result = lava_runner.run(net, x[:long])
    agreement = compare(net, simulate(net, x[:long]), lava_result)
    t_short = median_time(lambda: lava_runner.run(net, x[:short]), args.repeats)
    t_long = median_time(lambda: lava_runner.run(net, x[:long]), args.repeats)
    lava_rate = (long - short) * T / (t_long - t_short)
    big = np.resize(x, (args.sim_samples, x.shape[1]))  # repeats the data set up to sim_samples rows
    sim = {}
    for threads in sorted({1, torch.get_num_threads()}):
        simulate(net, big[:256], threads=threads)  # warm-up
        sim[f"cpu, {threads} thread{'s' if threads > 1 else ''}"] = (
            args.sim_samples * T / median_time(lambda: simulate(net, big, threads=threads), args.repeats))
    if torch.cuda.is_available():
        simulate(net, big[:256], device="cuda")
        sim[f"gpu ({torch.cuda.get_device_name()})"] = (
            args.sim_samples * T / median_time(lambda: simulate(net, big, device="cuda"), args.repeats))
    best_cpu = max(v for k, v in sim.items() if k.startswith("cpu"))
    return {
        "network": name,
        "sizes": [net.input.size] + [layer.size for layer in net.layers],
        "connections": sum(len(layer.inputs) for layer in net.layers),
        "timesteps": T,
        "matmul": [p.dtype for p in matmul_plan(net)],
        "lava_samples": [short, long],
        "lava_s": [t_short, t_long],
        "lava_rate": lava_rate,
        "lava_rate_with_startup": long * T / t_long,
        "sim_samples": args.sim_samples,
        "sim_rate": sim,
        "ratio_cpu": best_cpu / lava_rate,
        "spikes_compared": agreement.spikes_compared,
        "spikes_differing": agreement.spikes_differing,
        "readout_equal": agreement.readout_equal,
    }


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import lava

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "lava-nc": getattr(lava, "__version__", "0.10.0"),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_start": os.getloadavg()}


def table(rows: list[dict]) -> str:
    lines = ["| network | Lava (sample-steps/s) | spikefold sim (sample-steps/s) | ratio | every spike agreed |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        sims = "; ".join(f"{v:,.0f} ({k})" for k, v in r["sim_rate"].items())
        agreed = (f"yes ({r['spikes_compared']:,} spike slots, readout voltages equal)"
                  if r["spikes_differing"] == 0 and r["readout_equal"] else f"NO ({r['spikes_differing']} differ)")
        lines.append(f"| {r['network']} | {r['lava_rate']:,.1f} | {sims} | {r['ratio_cpu']:,.0f}x | {agreed} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo-model", default=None, help="a demo model.nir to use instead of training one")
    p.add_argument("--epochs-784", type=int, default=10)
    p.add_argument("--lava-samples", type=int, nargs=2, default=(25, 100), help="short and long Lava run")
    p.add_argument("--residual-lava-samples", type=int, nargs=2, default=(5, 20),
                   help="short and long Lava run of the residual net")
    p.add_argument("--sim-samples", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default="runs/benchmark", help="folder for the trained models")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    info = machine()
    rows = [bench(name, net, x, lava_samples, args) for name, net, x, lava_samples in networks(args)]
    info["load_average_end"] = os.getloadavg()
    text = table(rows)
    print(text)
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, torch {info['torch']}, "
          f"lava-nc {info['lava-nc']}, GPU: {info['cuda'] or 'none'}; load average {info['load_average_start']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "options": vars(args), "results": rows, "table": text}, indent=2))
    print(f"results: {out}")
    return 0 if all(r["spikes_differing"] == 0 and r["readout_equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
