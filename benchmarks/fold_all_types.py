"""Every neuron type, as an MLP and a small CNN on digits: train, fold, quantise, run in Lava and in the
simulator, compare.

For each of the five neuron types and both models it reports float and integer test accuracy (all 360 test
samples, integer sim), the drop, how each layer runs in Lava (stock or custom process), and whether Lava
loihi2-sim and spikefold's sim agree on every spike of every layer and timestep over the first N test
samples. Prints a table and writes JSON.

    python benchmarks/fold_all_types.py [--epochs 30] [--lava-samples 100] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from spikefold.deploy import lava_runner
from spikefold.deploy.validation import compare
from spikefold.export import hw_config
from spikefold.export.fold import fold, quantise
from spikefold.sim.simulator import check_state_range, simulate
from spikefold.train import data
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig
from spikefold.train.neurons import NEURONS, NeuronConfig

MODELS = {
    "mlp": dict(arch="mlp", input_shape=(64,), hidden=(128, 128)),
    "cnn": dict(arch="vgg", input_shape=(1, 8, 8), plan=(16, "A", 32, "A")),
}


def one(kind: str, model: str, epochs: int, lava_samples: int, seed: int = 0) -> dict:
    split = data.digits()
    cfg = ModelConfig(timesteps=4, neuron=NeuronConfig(kind), norm="tdbn" if kind == "agl" else "bn",
                      **MODELS[model])
    result = train(cfg, TrainConfig(epochs=epochs, seed=seed), split)
    fnet = fold(result.model)
    float_acc = float((fnet.run(split.x_test)[0].argmax(1) == split.y_test).mean())
    net, report = quantise(fnet, hw_config.load("loihi2"), split.x_train)
    check_state_range(net, net.input.encode(split.x_train), report)
    x = net.input.encode(split.x_test)
    sim = simulate(net, x)
    int_acc = float((sim.predictions == split.y_test).mean())
    start = time.perf_counter()
    lava = lava_runner.run_in_chunks(net, x[:lava_samples], chunk=50)
    agreement = compare(net, simulate(net, x[:lava_samples]), lava)
    return {"kind": kind, "model": model, "float_accuracy": float_acc, "int_accuracy": int_acc,
            "drop_pp": (float_acc - int_acc) * 100, "lava_samples": lava_samples,
            "lava_exact": agreement.exact, "spikes_compared": agreement.spikes_compared,
            "processes": [q.process for q in report.layers[:-1]],
            "headroom_bits": [q.headroom_bits for q in report.layers],
            "lava_seconds": time.perf_counter() - start}


def table(rows: list[dict]) -> str:
    lines = ["| neuron | model | float acc (%) | integer acc (%) | drop (pp) | Lava = sim, every spike | hidden layers run on |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        kinds = sorted({p.split(":")[0] for p in r["processes"]})
        lines.append(f"| {r['kind']} | {r['model']} | {r['float_accuracy'] * 100:.2f} | {r['int_accuracy'] * 100:.2f} | "
                     f"{r['drop_pp']:+.2f} | {'yes' if r['lava_exact'] else 'NO'} ({r['lava_samples']} samples, "
                     f"{r['spikes_compared']:,} slots) | {', '.join(kinds)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lava-samples", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows = []
    for kind in NEURONS:
        for model in MODELS:
            rows.append(one(kind, model, args.epochs, args.lava_samples))
            r = rows[-1]
            print(f"{kind:12s} {model}: float {r['float_accuracy'] * 100:.2f} %, integer {r['int_accuracy'] * 100:.2f} %,"
                  f" Lava exact: {r['lava_exact']}", flush=True)
    print(table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fold_all_types.json").write_text(json.dumps(
        {"machine": {"platform": platform.platform()}, "epochs": args.epochs, "rows": rows}, indent=1))
    print(f"wrote {out / 'fold_all_types.json'}")


if __name__ == "__main__":
    main()
