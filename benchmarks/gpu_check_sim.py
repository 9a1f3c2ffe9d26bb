"""The simulator on the GPU against the CPU, on the same integer networks and the same inputs: throughput of each
and every spike, readout voltage and spike count compared. The GPU check's simulator step (gpu_check.py).

Networks, as in sim_vs_lava.py (which compares the CPU simulator with Lava) and trained the same way, for
--epochs (on the GPU where there is one): the demo MLP 64-128-128-10, a 784-256-256-10 MLP on digits scaled up
to 28 x 28, the digits CNN (conv 16, pool, conv 32, pool). --resnet19-width adds a ResNet-19 (see
resnet19_network). Throughput is sample-timesteps per second, the median of --repeats runs over --samples samples
(the data set repeated), after a warm-up run; the CPU uses all of torch's threads.

    python benchmarks/gpu_check_sim.py --out sim.json          # needs CUDA
    python benchmarks/gpu_check_sim.py --dry-run --out sim.json  # tiny runs, "GPU" = the CPU in other batches

Exits 1 when any spike, readout voltage or count differs between the two devices, or when Lava was imported
(the GPU machine has no Lava: nothing here may need it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import gpu_timing
from sim_vs_lava import _export, digits_28x28, median_time
from spikefold.export import hw_config
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.intnet import IntNetwork
from spikefold.sim.simulator import SimResult, simulate
from spikefold.train.data import digits
from spikefold.train.models import ModelConfig, build_model


def resnet19_network(width: float, input_shape: tuple[int, int, int]) -> tuple[IntNetwork, np.ndarray]:
    """HOOK for the full-width ResNet-19 (issue 13 makes the simulator run convolutions as convolutions; until
    then a full-width network does not fit in memory, so --resnet19-width is 0, off, by default). Untrained,
    folded and quantised on uniform random CIFAR-shaped input: its throughput, not its accuracy, is measured.
    When issue 13's benchmark has a builder of a briefly trained ResNet-19 with calibrated BatchNorm statistics,
    call it here instead."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resnet19", input_shape=input_shape, width=width, timesteps=2)).eval()
    x = np.random.default_rng(0).random((256, int(np.prod(input_shape))), dtype=np.float32)
    net, _ = quantise(fold(model), hw_config.load("loihi2"), x)
    return net, x


def networks(args, work: Path) -> list[tuple[str, IntNetwork, np.ndarray]]:
    """(name, network, float inputs) per network."""
    d = digits()
    big = digits_28x28()
    cnn = ModelConfig(arch="vgg", input_shape=(1, 8, 8), plan=(16, "A", 32, "A"))
    found = [("demo MLP 64-128-128-10", _export(d, ModelConfig(), args.epochs, work / "demo"), d.x_test),
             ("MLP 784-256-256-10", _export(big, ModelConfig(input_shape=(784,), hidden=(256, 256)), args.epochs,
                                            work / "mlp784"), big.x_test),
             ("digits CNN (2 conv + 2 pool)", _export(d, cnn, args.epochs, work / "cnn"), d.x_test)]
    if args.resnet19_width:
        shape = (3, 8, 8) if args.dry_run else (3, 32, 32)
        net, x = resnet19_network(args.resnet19_width, shape)
        found.append((f"ResNet-19, width {args.resnet19_width:g}, {shape[1]}x{shape[2]}", net, x))
    return found


def differences(a: SimResult, b: SimResult) -> dict:
    """Spikes compared and differing over every layer, and whether readout voltages and counts are equal."""
    compared = sum(s.size for s in a.spikes)
    differing = sum(int(np.count_nonzero(s != t)) for s, t in zip(a.spikes, b.spikes))
    return {"spikes_compared": compared, "spikes_differing": differing,
            "readout_equal": bool(np.array_equal(a.readout_v, b.readout_v)),
            "stats_equal": [vars(s) for s in a.stats] == [vars(s) for s in b.stats]}


def bench(name: str, net: IntNetwork, x_float: np.ndarray, gpu: str, args) -> dict:
    x = np.resize(net.input.encode(x_float), (args.samples, net.input.size))
    steps = args.samples * net.timesteps
    # the dry run's "GPU" is the CPU again in batches of 7 samples, so the comparison still crosses batchings
    gpu_batch = 7 if args.dry_run else None
    runs = {"cpu": lambda: simulate(net, x, device="cpu"),
            "gpu": lambda: simulate(net, x, device=gpu, batch_size=gpu_batch)}
    results = {device: run() for device, run in runs.items()}  # also the warm-up
    row = {"network": name, "sizes": [net.input.size] + [layer.size for layer in net.layers],
           "timesteps": net.timesteps, "samples": args.samples, "cpu_threads": torch.get_num_threads(),
           **differences(results["cpu"], results["gpu"])}
    for device, run in runs.items():
        row[f"{device}_rate"] = steps / median_time(run, args.repeats)
    row["gpu_over_cpu"] = row["gpu_rate"] / row["cpu_rate"]
    return row


def agreed(row: dict) -> bool:
    return row.get("spikes_differing") == 0 and row.get("readout_equal") and row.get("stats_equal")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each network (default 10)")
    parser.add_argument("--samples", type=int, default=20000, help="samples per timed run (default 20000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resnet19-width", type=float, default=0.0,
                        help="add a ResNet-19 of this width (1 = full; default 0: off, see resnet19_network)")
    parser.add_argument("--out", type=Path, required=True, help="JSON path")
    parser.add_argument("--dry-run", action="store_true", help="tiny runs on the CPU, both sides: checks the script")
    args = parser.parse_args(argv)
    device = gpu_timing.device_for(args.dry_run)
    record = gpu_timing.machine(device)
    print(record["device"], flush=True)
    rows: list[dict] = []

    def save(complete: bool) -> None:
        record["lava_imported"] = "lava" in sys.modules
        gpu_timing.write(args.out, {"machine": record, "complete": complete, "settings": vars(args) | {
            "out": str(args.out)}, "results": rows}, quiet=not complete)

    with tempfile.TemporaryDirectory() as work:
        for name, net, x in networks(args, Path(work)):
            try:
                row = bench(name, net, x, "cuda" if device.type == "cuda" else "cpu", args)
            except Exception as exc:  # e.g. out of memory: reported, the other networks still run
                row = {"network": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
            rows.append(row)
            print(f"  {name:34s} " + (f"cpu {row['cpu_rate']:12,.0f}  gpu {row['gpu_rate']:12,.0f} sample-steps/s"
                                      f"  {row['spikes_differing']} of {row['spikes_compared']:,} spikes differ"
                                      if "error" not in row else row["error"][:90]), flush=True)
            save(False)
    save(True)
    failed = [r["network"] for r in rows if "error" not in r and not agreed(r)]
    if failed or record["lava_imported"]:
        print(f"GPU and CPU disagree on: {', '.join(failed) or '-'}; Lava imported: {record['lava_imported']}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
