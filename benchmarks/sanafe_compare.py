"""spikefold's energy and latency model beside SANA-FE's (sanafe 2.2.9, its Loihi architecture) on the same
integer networks, spike for spike: the demo MLP (digits, 128-128, T = 4), a small CNN and a residual net
(ResNet-19 at 1/16 width), each trained briefly on digits here. spikefold is run with loihi2 (Davies 2018
energies) and loihi1_sanafe (SANA-FE 2.2.9's constants in spikefold's model); SANA-FE maps each network core for
core as spikefold's loihi1_sanafe mapping does. Prints a table and writes benchmarks/results/sanafe_compare.json.

    .venv/bin/python benchmarks/sanafe_compare.py [--samples 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from spikefold.export import hw_config
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.sim import energy, sanafe_engine
from spikefold.sim.cores import map_onto_cores
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import align_to_synchronous, simulate
from spikefold.train.data import digits
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig, batchnorm_from_data


def _trained(cfg: ModelConfig, epochs: int, split):
    return batchnorm_from_data(train(cfg, TrainConfig(epochs=epochs, batch_size=32, seed=1), split).model,
                               split.x_train)


def networks(split):
    loihi2 = hw_config.load("loihi2")
    for name, cfg, epochs in (
            ("demo MLP 64-128-128-10", ModelConfig(arch="mlp", input_shape=(64,), hidden=(128, 128), timesteps=4), 10),
            ("CNN 1x8x8-8c3-A-16c3-10", ModelConfig(arch="vgg", input_shape=(1, 8, 8), plan=(8, "A", 16), timesteps=4), 5),
            ("ResNet-19 1/16 width", ModelConfig(arch="resnet19", input_shape=(1, 8, 8), width=1 / 16,
                                                     timesteps=2), 1)):
        model = _trained(cfg, epochs, split)
        net, report = quantise(fold(model), loihi2, split.x_train)
        check_state_range(net, net.input.encode(split.x_train), report)
        yield name, net


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    split = digits()
    rows, results = [], []
    for name, net in networks(split):
        x = net.input.encode(split.x_test[:args.samples])
        labels = split.y_test[:args.samples]
        lava_timed = simulate(net, x, timing="lava")
        synchronous = align_to_synchronous(net, lava_timed)
        accuracy = float((synchronous.predictions == labels).mean())
        entry = {"network": name, "samples": len(x), "neurons": sum(layer.size for layer in net.layers),
                 "accuracy": accuracy, "spikefold": {}}
        for config in ("loihi2", "loihi1_sanafe"):
            report = energy.estimate(net, x, synchronous, hw_config.load(config), hw_config.load("ann_45nm"))
            entry["spikefold"][config] = {
                "dynamic_j": report.dynamic_j, "latency_s": report.latency_s, "step_s": report.step_s,
                "by_operation_j": report.energy_by_operation_j, "cores": len(report.cores),
                "synaptic_ops": sum(layer.synaptic_ops for layer in report.layers),
                "messages": sum(layer.messages_out for layer in report.layers), "neurobench": report.neurobench}
            rows.append((name, f"spikefold {config}", report.dynamic_j, report.latency_s,
                         entry["spikefold"][config]["synaptic_ops"], entry["spikefold"][config]["messages"], ""))
        start = time.perf_counter()
        try:
            run = sanafe_engine.run(net, x, map_onto_cores(net, hw_config.load("loihi1_sanafe")), lava_timed)
        except Exception as exc:  # noqa: BLE001 - a network SANA-FE cannot represent is a result to report
            entry["sanafe"] = {"error": str(exc)}
            rows.append((name, "SANA-FE", float("nan"), float("nan"), float("nan"), float("nan"), str(exc)[:60]))
        else:
            equal = all(np.array_equal(a, b) for a, b in zip(run.spikes, lava_timed.spikes))
            entry["sanafe"] = {**dataclasses.asdict(run), "spikes_equal": equal,
                               "readout_equal": bool(np.array_equal(run.readout_v, lava_timed.readout_v)),
                               "seconds": time.perf_counter() - start}
            for key in ("spikes", "readout_v"):
                entry["sanafe"].pop(key)
            rows.append((name, "SANA-FE 2.2.9", run.energy_j, run.latency_s, run.synaptic_ops, run.messages,
                         f"spikes equal: {equal}"))
        results.append(entry)
    print(f"{'network':<26} {'engine':<25} {'dyn. uJ':>8} {'lat. us':>8} {'syn. ops':>10} {'messages':>9}  note")
    for name, engine, j, s, ops, msgs, note in rows:
        print(f"{name:<26} {engine:<25} {j * 1e6:>8.3f} {s * 1e6:>8.1f} {ops:>10.1f} {msgs:>9.1f}  {note}")
    out = Path(__file__).parent / "results" / "sanafe_compare.json"
    out.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
