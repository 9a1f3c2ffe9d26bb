"""Every neuron type as an MLP, a small CNN, a ResNet-19 and a SEW-ResNet-19 on digits: train, fold, quantise,
run in Lava and in the simulator, compare; then quantisation-aware fine-tuning at coarse weights.

For each of the five neuron types and each model it reports float and integer test accuracy (all 360 test
samples, integer sim), the drop, how each layer runs in Lava (stock or custom process), and whether Lava
loihi2-sim and spikefold's sim agree on every spike of every layer and timestep over the first N test samples
(`--lava-samples`; residual networks, whose Lava runs hold many more processes, use `--residual-lava-samples`).
Then the same float model is exported with `--qat-bits`-bit weights (Lava's num_weight_bits), where rounding
costs accuracy, and fine-tuned through the integer forward for `--qat-epochs` epochs: integer accuracy before
and after. Prints the tables and writes JSON.

    python benchmarks/fold_all_types.py [--epochs 30] [--models mlp,cnn,resnet19,sew_resnet19] [--kinds lif,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from spikefold.core import files
from spikefold.deploy import lava_runner
from spikefold.deploy.validation import compare
from spikefold.export import hw_config
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.qat import finetune
from spikefold.export.state_range import check_state_range
from spikefold.reporting import run_metadata
from spikefold.sim.simulator import simulate
from spikefold.train import data
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig
from spikefold.train.neurons import NEURONS, NeuronConfig

MODELS = {
    "mlp": dict(arch="mlp", input_shape=(64,), hidden=(128, 128)),
    "cnn": dict(arch="vgg", input_shape=(1, 8, 8), plan=(16, "A", 32, "A")),
    "resnet19": dict(arch="resnet19", input_shape=(1, 8, 8), width=1 / 16),
    "sew_resnet19": dict(arch="sew_resnet19", input_shape=(1, 8, 8), width=1 / 16),
}


def one(kind: str, model: str, args, seed: int = 0) -> dict:
    split = data.digits()
    hw = hw_config.load("loihi2")
    cfg = ModelConfig(timesteps=4, neuron=NeuronConfig(kind), norm="tdbn" if kind == "agl" else "bn",
                      **MODELS[model])
    start = time.perf_counter()
    result = train(cfg, TrainConfig(epochs=args.epochs, seed=seed), split)
    train_s = time.perf_counter() - start
    fnet = fold(result.model)
    float_acc = float((fnet.run(split.x_test)[0].argmax(1) == split.y_test).mean())
    net, report = quantise(fnet, hw, split.x_train)
    check_state_range(net, net.input.encode(split.x_train), report)
    x = net.input.encode(split.x_test)
    int_acc = float((simulate(net, x).predictions == split.y_test).mean())
    samples = args.lava_samples if model in ("mlp", "cnn") else args.residual_lava_samples
    start = time.perf_counter()
    lava = lava_runner.run_in_chunks(net, x[:samples], chunk=50, record_state=True)
    agreement = compare(net, simulate(net, x[:samples], record_state=True), lava)
    lava_s = time.perf_counter() - start

    coarse, _ = quantise(fnet, hw, split.x_train, weight_bits=args.qat_bits)
    check_state_range(coarse, coarse.input.encode(split.x_train))
    coarse_acc = float((simulate(coarse, x).predictions == split.y_test).mean())
    start = time.perf_counter()
    tuned = finetune(fnet, coarse, hw, split.x_train, split.y_train, epochs=args.qat_epochs).net
    qat_s = time.perf_counter() - start
    check_state_range(tuned, tuned.input.encode(split.x_train))
    qat_acc = float((simulate(tuned, x).predictions == split.y_test).mean())
    return {"kind": kind, "model": model, "float_accuracy": float_acc, "int_accuracy": int_acc,
            "drop_pp": (float_acc - int_acc) * 100, "lava_samples": samples,
            "lava_exact": agreement.exact, "states_differing": agreement.states_differing,
            "spikes_compared": agreement.spikes_compared,
            "processes": [lava_runner.lava_process(layer) for layer in net.layers[:-1]],
            "headroom_bits": [q.headroom_bits for q in report.layers],
            "qat": {"weight_bits": args.qat_bits, "epochs": args.qat_epochs, "int_accuracy": coarse_acc,
                    "qat_accuracy": qat_acc, "seconds": qat_s},
            "train_seconds": train_s, "lava_seconds": lava_s}


def table(rows: list[dict]) -> str:
    lines = ["| neuron | model | float acc (%) | integer acc (%) | drop (pp) | Lava = sim, every spike, u and v | "
             "hidden layers run on |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        kinds = sorted({p.split(":")[0] for p in r["processes"]})
        lines.append(f"| {r['kind']} | {r['model']} | {r['float_accuracy'] * 100:.2f} | {r['int_accuracy'] * 100:.2f} | "
                     f"{r['drop_pp']:+.2f} | {'yes' if r['lava_exact'] else 'NO'} ({r['lava_samples']} samples, "
                     f"{r['spikes_compared']:,} spike slots) | {', '.join(kinds)} |")
    return "\n".join(lines)


def qat_table(rows: list[dict]) -> str:
    bits, epochs = rows[0]["qat"]["weight_bits"], rows[0]["qat"]["epochs"]
    lines = [f"| neuron | model | float acc (%) | {bits}-bit integer acc (%) | after QAT, {epochs} epochs (%) | "
             "recovered (pp) | QAT s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        q = r["qat"]
        lines.append(f"| {r['kind']} | {r['model']} | {r['float_accuracy'] * 100:.2f} | {q['int_accuracy'] * 100:.2f} | "
                     f"{q['qat_accuracy'] * 100:.2f} | {(q['qat_accuracy'] - q['int_accuracy']) * 100:+.2f} | "
                     f"{q['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    parser.add_argument("--kinds", default=",".join(NEURONS), help="comma-separated, of: " + ", ".join(NEURONS))
    parser.add_argument("--lava-samples", type=int, default=100)
    parser.add_argument("--residual-lava-samples", type=int, default=20)
    parser.add_argument("--qat-bits", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for chosen, known, what in ((models, MODELS, "models"), (kinds, NEURONS, "kinds")):
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            parser.error(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    run = run_metadata(command=[sys.executable, *sys.argv], seed=0) | {"load_average_start": os.getloadavg()}
    rows = []
    for model in models:
        for kind in kinds:
            rows.append(one(kind, model, args))
            r = rows[-1]
            print(f"{kind:12s} {model:12s}: float {r['float_accuracy'] * 100:.2f} %, integer {r['int_accuracy'] * 100:.2f} %,"
                  f" Lava exact: {r['lava_exact']}; {args.qat_bits}-bit {r['qat']['int_accuracy'] * 100:.2f} % -> QAT "
                  f"{r['qat']['qat_accuracy'] * 100:.2f} %", flush=True)
    print(table(rows))
    print()
    print(qat_table(rows))
    run["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    files.write_text(out / "fold_all_types.json",
                     json.dumps({"run": run, "epochs": args.epochs, "rows": rows}, indent=1))
    print(f"wrote {out / 'fold_all_types.json'}")


if __name__ == "__main__":
    main()
