"""The simulator on the GPU against the CPU, on the same integer networks and the same inputs: throughput of each
and every spike, readout voltage and spike count compared. The GPU check's simulator step (gpu_check.py).

Networks, as in sim_vs_lava.py (which compares the CPU simulator with Lava) and trained the same way, for
--epochs (on the GPU where there is one): the demo MLP 64-128-128-10, a 784-256-256-10 MLP on digits scaled up
to 28 x 28, the digits CNN (conv 16, pool, conv 32, pool); and the CIFAR-10 ResNet-19 at --resnet19-width (full
width unless told otherwise; see resnet19_network). Throughput is sample-timesteps per second, the median of
--repeats runs over --samples samples (--resnet19-samples for the ResNet-19; the data repeated), after a warm-up
run; the CPU uses all of torch's threads.

    python benchmarks/gpu_check_sim.py --out sim.json          # needs CUDA
    python benchmarks/gpu_check_sim.py --dry-run --out sim.json  # tiny runs, "GPU" = the CPU in other batches

Side by side, for the networks with convolutions, on each device at the batch its simulator runs: every
convolution once over random input as one matrix product (``intnet.Conv2d.correlate``, the simulator's way on a
GPU) and by torch's ``conv2d`` without cuDNN (whose Winograd and FFT algorithms round; the simulator's way on the
CPU, where oneDNN is fast; on a GPU, one im2col and one matrix product per sample). Both sums must agree.

Exits 1 when any spike, readout voltage, count or convolution sum differs between the two devices or ways, or
when Lava was imported (the GPU machine has no Lava: nothing here may need it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import gpu_timing
from full_size import model_config, synthetic_cifar
from sim_vs_lava import _export, digits_28x28, median_time
from spikefold.export import hw_config
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.runner import default_batch_size
from spikefold.export.intnet import Conv2d, IntNetwork
from spikefold.sim.simulator import SimResult, simulate
from spikefold.train.data import digits
from spikefold.train.models import ModelConfig, batchnorm_from_data, build_model


def resnet19_network(width: float, side: int) -> tuple[IntNetwork, np.ndarray]:
    """ResNet-19 as full_size.py builds it (recipes/mpd_agl_cifar10_resnet19.yaml's architecture, T = 2) at
    ``width`` on side x side CIFAR-shaped images, untrained, its BatchNorm statistics set from the data so that
    every layer spikes, folded and quantised on such images: its throughput, not its accuracy, is measured. The
    network and 64 images to run."""
    torch.manual_seed(0)
    model = batchnorm_from_data(build_model(model_config(width, side)), synthetic_cifar(8, seed=1, side=side).x_train)
    calibration = synthetic_cifar(16, seed=2, side=side).x_train.reshape(16, -1)
    net, _ = quantise(fold(model), hw_config.load("loihi2"), calibration)
    return net, synthetic_cifar(64, seed=3, side=side).x_train.reshape(64, -1)


def networks(args, work: Path) -> list[tuple[str, IntNetwork, np.ndarray]]:
    """(name, network, float inputs) per network."""
    d = digits()
    big = digits_28x28()
    cnn = ModelConfig(arch="vgg", input_shape=(1, 8, 8), plan=(16, "A", 32, "A"))
    found = [("demo MLP 64-128-128-10", _export(d, ModelConfig(), args.epochs, work / "demo"), d.x_test),
             ("MLP 784-256-256-10", _export(big, ModelConfig(input_shape=(784,), hidden=(256, 256)), args.epochs,
                                            work / "mlp784"), big.x_test),
             ("digits CNN (2 conv + 2 pool)", _export(d, cnn, args.epochs, work / "cnn"), d.x_test)]
    found = [(name, net, x, args.samples) for name, net, x in found]
    if args.resnet19_width:
        side = 8 if args.dry_run else 32
        net, x = resnet19_network(args.resnet19_width, side)
        found.append((f"ResNet-19, width {args.resnet19_width:g}, {side}x{side}", net, x, args.resnet19_samples))
    return found


def differences(net: IntNetwork, a: SimResult, b: SimResult) -> dict:
    """Spikes compared, fired (in ``a``) and differing over every layer, the layers but the readout that never
    fired (where a comparison would say little), and whether readout voltages and counts are equal."""
    compared = sum(s.size for s in a.spikes)
    differing = sum(int(np.count_nonzero(s != t)) for s, t in zip(a.spikes, b.spikes, strict=True))
    silent = [layer.name for layer, s in zip(net.layers[:-1], a.spikes) if not s.any()]
    return {"spikes_compared": compared, "spikes_fired": sum(int(np.count_nonzero(s)) for s in a.spikes),
            "silent_layers": silent, "spikes_differing": differing,
            "readout_equal": bool(np.array_equal(a.readout_v, b.readout_v)),
            "stats_equal": [vars(s) for s in a.stats] == [vars(s) for s in b.stats]}


def convolutions(net: IntNetwork, samples: int, device: torch.device, repeats: int) -> dict:
    """Every convolution of ``net`` once over ``samples`` random inputs on ``device``, as one matrix product per
    chunk of samples (``Conv2d.correlate``, the simulator's way on a GPU) and by torch's ``conv2d`` without
    cuDNN (its way on the CPU): the summed median seconds of each, and whether every sum agreed. Empty for a
    network without convolutions."""
    from torch.nn import functional

    synapses = [c.synapses for layer in net.layers for c in layer.inputs if isinstance(c.synapses, Conv2d)]
    if not synapses:
        return {}
    rng = np.random.default_rng(0)
    seconds = {"product": 0.0, "conv2d": 0.0}
    equal = True
    torch.set_float32_matmul_precision("highest")  # as the simulator runs: products summed in IEEE float32
    with torch.backends.cudnn.flags(enabled=False), torch.inference_mode():
        for syn in synapses:
            weights = torch.as_tensor(syn.exact_weights(), device=device)
            s = torch.as_tensor(rng.integers(0, syn.max_input() + 1, size=(samples, *syn.input_shape)),
                                device=device).to(weights.dtype)
            runs = {"product": lambda: syn.correlate(s, weights),
                    "conv2d": lambda: functional.conv2d(s, weights, stride=syn.stride, padding=syn.padding).flatten(1)}
            equal &= torch.equal(runs["product"](), runs["conv2d"]())  # also each way's warm-up
            for way, run in runs.items():
                seconds[way] += gpu_timing.median_seconds(run, device, 0, repeats)
    return {"convolutions": len(synapses), "samples": samples, "product_seconds": seconds["product"],
            "conv2d_seconds": seconds["conv2d"], "equal": bool(equal)}


def bench(name: str, net: IntNetwork, x_float: np.ndarray, samples: int, gpu: str, args) -> dict:
    x = np.resize(net.input.encode(x_float), (samples, net.input.size))
    steps = samples * net.timesteps
    # the dry run's "GPU" is the CPU again in batches of 7 samples, so the comparison still crosses batchings
    gpu_batch = 7 if args.dry_run else None
    runs = {"cpu": lambda: simulate(net, x, device="cpu"),
            "gpu": lambda: simulate(net, x, device=gpu, batch_size=gpu_batch)}
    results = {device: run() for device, run in runs.items()}  # also the warm-up
    row = {"network": name, "sizes": [net.input.size] + [layer.size for layer in net.layers],
           "timesteps": net.timesteps, "samples": samples, "cpu_threads": torch.get_num_threads(),
           **differences(net, results["cpu"], results["gpu"])}
    for device, run in runs.items():
        row[f"{device}_rate"] = steps / median_time(run, args.repeats)
    row["gpu_over_cpu"] = row["gpu_rate"] / row["cpu_rate"]
    # each device at the batch its simulator runs
    for side, device in (("cpu", torch.device("cpu")), ("gpu", torch.device(gpu))):
        batch = gpu_batch if side == "gpu" and gpu_batch else default_batch_size(net, device)
        found = convolutions(net, min(samples, batch), device, args.repeats)
        if found:
            row.setdefault("convolutions", {})[side] = found
    return row


def agreed(row: dict) -> bool:
    return (row.get("spikes_differing") == 0 and row.get("readout_equal") and row.get("stats_equal")
            and all(side["equal"] for side in row.get("convolutions", {}).values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each network (default 10)")
    parser.add_argument("--samples", type=int, default=20000, help="samples per timed run (default 20000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resnet19-width", type=float, default=1.0,
                        help="add a ResNet-19 of this width (default 1, full width; 0: none; see resnet19_network)")
    parser.add_argument("--resnet19-samples", type=int, default=64,
                        help="samples per timed run of the ResNet-19 (default 64)")
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
        for name, net, x, samples in networks(args, Path(work)):
            try:
                row = bench(name, net, x, samples, "cuda" if device.type == "cuda" else "cpu", args)
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
