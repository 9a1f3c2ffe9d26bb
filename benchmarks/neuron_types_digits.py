"""Compare the five neuron types on the embedded digits data set.

Trains the same MLP (64-128-128-10, AdamW, 30 epochs) with every neuron type at T = 2 and T = 4 over several
seeds, and reports test accuracy (mean +- std), the last hidden layer's per-timestep firing-rate spread
(max - min over timesteps) and its share of neurons inside the gradient window, measured by the probes on the
test set. Prints a table, writes JSON and a PNG.

    python benchmarks/neuron_types_digits.py [--seeds 3] [--epochs 30] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from spikefold.train import data, probes
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig
from spikefold.train.neurons import NEURONS, NeuronConfig


def run(kind: str, timesteps: int, seed: int, epochs: int) -> dict:
    cfg = ModelConfig(hidden=(128, 128), timesteps=timesteps, neuron=NeuronConfig(kind),
                      norm="tdbn" if kind == "agl" else "bn")
    split = data.digits()
    start = time.perf_counter()
    result = train(cfg, TrainConfig(epochs=epochs, seed=seed), split)
    seconds = time.perf_counter() - start
    activity = probes.observe(result.model, split.x_test)
    last = activity[sorted(activity)[-1]]
    return {"kind": kind, "timesteps": timesteps, "seed": seed, "accuracy": result.test_accuracy,
            "firing_rate": last["firing_rate"], "firing_rate_spread": last["firing_rate_spread"],
            "window_share": last["window_share_mean"], "train_seconds": seconds}


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for kind in NEURONS:
        for timesteps in sorted({r["timesteps"] for r in runs}):
            sel = [r for r in runs if r["kind"] == kind and r["timesteps"] == timesteps]
            if not sel:
                continue
            acc = np.array([r["accuracy"] for r in sel]) * 100
            rows.append({
                "kind": kind, "timesteps": timesteps, "seeds": len(sel),
                "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(sel) > 1 else 0.0,
                "firing_rate_mean": float(np.mean([np.mean(r["firing_rate"]) for r in sel])),
                "firing_rate_spread": float(np.mean([r["firing_rate_spread"] for r in sel])),
                "window_share": float(np.mean([r["window_share"] for r in sel])),
                "train_seconds_median": float(np.median([r["train_seconds"] for r in sel])),
            })
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| neuron | T | test accuracy (%) | firing rate | rate spread over t | in gradient window | train s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['timesteps']} | {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f} | "
                     f"{r['firing_rate_mean']:.3f} | {r['firing_rate_spread']:.3f} | {r['window_share']:.3f} | "
                     f"{r['train_seconds_median']:.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    steps = sorted({r["timesteps"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    width = 0.8 / len(steps)
    for j, t in enumerate(steps):
        sel = [next(r for r in rows if r["kind"] == k and r["timesteps"] == t) for k in kinds]
        xs = np.arange(len(kinds)) + j * width
        axes[0].bar(xs, [r["accuracy_mean"] for r in sel], width, yerr=[r["accuracy_std"] for r in sel],
                    label=f"T = {t}")
        axes[1].bar(xs, [r["firing_rate_spread"] for r in sel], width, label=f"T = {t}")
        axes[2].bar(xs, [r["window_share"] for r in sel], width, label=f"T = {t}")
    for ax, title in zip(axes, ("test accuracy (%)", "firing-rate spread over timesteps",
                                "share in gradient window")):
        ax.set_xticks(np.arange(len(kinds)) + width * (len(steps) - 1) / 2, kinds, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
    low = min(r["accuracy_mean"] - r["accuracy_std"] for r in rows)
    axes[0].set_ylim(max(0, low - 2), 100)
    axes[0].legend(fontsize=8)
    fig.suptitle("neuron types on digits (last hidden layer for the activity panels)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for kind in NEURONS:
        for t in args.timesteps:
            for seed in range(args.seeds):
                runs.append(run(kind, t, seed, args.epochs))
                print(f"{kind:12s} T={t} seed={seed}: {runs[-1]['accuracy'] * 100:.2f} %", flush=True)
    rows = summarise(runs)
    print(table(rows))
    machine = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    (out / "neuron_types_digits.json").write_text(json.dumps({"machine": machine, "rows": rows, "runs": runs},
                                                             indent=1))
    plot(rows, out / "neuron_types_digits.png")
    print(f"wrote {out / 'neuron_types_digits.json'} and {out / 'neuron_types_digits.png'}")


if __name__ == "__main__":
    main()
