"""Cores and chips for the full-width CIFAR ResNet-19 (recipes/mpd_agl_cifar10_resnet19.yaml's architecture),
partitioned by spikefold.sim.cores, per hw_config. The integer network is built synthetically (random integer
kernels of the right shapes, no training: the mapping depends only on shapes). Prints a table and writes
benchmarks/results/cores_resnet19.json and cores_resnet19.png.

    .venv/bin/python benchmarks/cores_resnet19.py [--width 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spikefold.export import hw_config
from spikefold.export.intnet import INPUT, LIF, VTH_NEVER, Connection, Conv2d, Dense, InputEncoding, IntNetwork, Layer
from spikefold.sim.cores import map_onto_cores
from spikefold.reporting import cores_per_layer_figure, save_figure
from spikefold.train.models import RESNET19_STAGES


def resnet19(width: float, classes: int = 10, timesteps: int = 2) -> IntNetwork:
    rng = np.random.default_rng(0)

    def lif(n, readout=False):
        return LIF(du=4095, dv=0, vth=VTH_NEVER if readout else 100, bias_mant=np.zeros(n, int),
                   bias_exp=np.zeros(n, int))

    def conv(cin, cout, k, stride, shape, message_bits=0):
        return Conv2d(rng.integers(-8, 8, size=(cout, cin, k, k)).astype(np.int8), 0, num_message_bits=message_bits,
                      input_shape=shape, stride=stride, padding=k // 2)

    stem = max(1, round(128 * width))
    layers = [Layer("stem", [Connection(INPUT, conv(3, stem, 3, 1, (3, 32, 32), 8))], lif(stem * 32 * 32), 1.0)]
    cin, shape, name = stem, (stem, 32, 32), "stem"
    for s, (planes, count, stride) in enumerate(RESNET19_STAGES):
        cout = max(1, round(planes * width))
        for b in range(count):
            st = stride if b == 0 else 1
            c1 = conv(cin, cout, 3, st, shape)
            out_shape = c1.output_shape
            layers.append(Layer(f"s{s}b{b}.conv1", [Connection(name, c1)], lif(int(np.prod(out_shape))), 1.0))
            c2 = conv(cout, cout, 3, 1, out_shape)
            short = conv(cin, cout, 1, st, shape) if (st != 1 or cin != cout) else Conv2d(
                np.eye(cout, dtype=np.int8)[:, :, None, None], 0, input_shape=shape, stride=1, padding=0)
            layers.append(Layer(f"s{s}b{b}.conv2", [Connection(f"s{s}b{b}.conv1", c2), Connection(name, short)],
                                lif(int(np.prod(out_shape))), 1.0))
            cin, shape, name = cout, out_shape, f"s{s}b{b}.conv2"
    fan_in = int(np.prod(shape))  # global average pooling folded into the readout
    layers.append(Layer("readout", [Connection(name, Dense(rng.integers(-8, 8, size=(classes, fan_in)), 0))],
                        lif(classes, True), 1.0, readout=True))
    return IntNetwork(InputEncoding(3 * 32 * 32, 255.0, 8), layers, timesteps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()
    net = resnet19(args.width)
    out = Path(__file__).parent / "results"
    results = {"width": args.width, "neurons": sum(layer.size for layer in net.layers), "configs": {}}
    print(f"ResNet-19 at width {args.width}: {results['neurons']:,} neurons, {len(net.layers)} layers")
    print(f"{'hw_config':<14} {'cores':>8} {'chips':>6} {'Kapoho Point':>13} {'Hala Point':>11} {'map s':>6}")
    for name in ("loihi2", "loihi1"):
        start = time.perf_counter()
        core_map = map_onto_cores(net, hw_config.load(name))
        summary = core_map.summary(net)
        summary["seconds"] = time.perf_counter() - start
        results["configs"][name] = summary
        boards = list(summary["boards"].values())
        print(f"{name:<14} {summary['cores']:>8,} {summary['chips']:>6,} {boards[0]:>13,} {boards[1]:>11,} "
              f"{summary['seconds']:>6.1f}")
        save_figure(cores_per_layer_figure(summary), out / f"cores_resnet19_{name}.png")
    (out / "cores_resnet19.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
