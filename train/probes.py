"""Probes: the diagnostics the papers report, for any model and neuron type.

- firing rate per layer and timestep;
- share of neurons inside the surrogate's gradient window, per layer and timestep;
- membrane-potential histograms per layer and timestep, as potential / threshold (so layers and neuron types with
  different thresholds share one axis; the threshold is at 1);
- per weight layer, the L2 norm of its gradient at every training step: mean and coefficient of variation.

Activity probes add a few reductions per layer and timestep to a forward pass, cheap enough to leave on during
evaluation. Results go to ``probes.json`` and PNG plots.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikefold.train.neurons import SpikingNeuron


class _LayerTally:
    def __init__(self, bins: int):
        self.spikes: dict[int, float] = {}
        self.elements: dict[int, float] = {}
        self.in_window: dict[int, float] = {}
        self.hist: dict[int, np.ndarray] = {}
        self.outside = 0.0
        self.bins = bins


class ActivityProbe:
    """Accumulates activity over any number of forward passes while attached to a model."""

    def __init__(self, bins: int = 60, lo: float = -2.0, hi: float = 4.0):
        self.bins, self.lo, self.hi = bins, lo, hi
        self.layers: dict[str, _LayerTally] = {}

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator["ActivityProbe"]:
        neurons = [(name, m) for name, m in model.named_modules() if isinstance(m, SpikingNeuron)]
        for name, neuron in neurons:
            neuron.probe, neuron.probe_name = self, name
        try:
            yield self
        finally:
            for _, neuron in neurons:
                neuron.probe = None

    @torch.no_grad()
    def observe(self, name: str, t: int, potential: torch.Tensor, spikes: torch.Tensor,
                threshold: torch.Tensor | float, window: torch.Tensor | float) -> None:
        tally = self.layers.setdefault(name, _LayerTally(self.bins))
        threshold = torch.as_tensor(threshold, dtype=potential.dtype, device=potential.device)
        window = torch.as_tensor(window, dtype=potential.dtype, device=potential.device)
        n = float(potential.numel())
        tally.elements[t] = tally.elements.get(t, 0.0) + n
        tally.spikes[t] = tally.spikes.get(t, 0.0) + float(spikes.sum())
        inside = ((potential - threshold).abs() < window / 2).sum()
        tally.in_window[t] = tally.in_window.get(t, 0.0) + float(inside)
        relative = (potential / threshold).float().flatten()
        counts = torch.histc(relative, self.bins, self.lo, self.hi).cpu().numpy()
        tally.hist[t] = tally.hist.get(t, np.zeros(self.bins)) + counts
        tally.outside += n - float(counts.sum())

    def summary(self) -> dict:
        out = {}
        for name, tally in self.layers.items():
            steps = sorted(tally.elements)
            rates = [tally.spikes[t] / tally.elements[t] for t in steps]
            window = [tally.in_window[t] / tally.elements[t] for t in steps]
            out[name] = {
                "firing_rate": rates,
                "firing_rate_mean": float(np.mean(rates)),
                "firing_rate_spread": float(np.max(rates) - np.min(rates)),
                "window_share": window,
                "window_share_mean": float(sum(tally.in_window.values()) / sum(tally.elements.values())),
                "histogram": {"edges": np.linspace(self.lo, self.hi, self.bins + 1).tolist(),
                              "counts": [tally.hist[t].tolist() for t in steps],
                              "outside_range": tally.outside},
            }
        return out


class GradientProbe:
    """Call after each backward pass: records the gradient norm of every weight layer (2-D or more weights)."""

    def __init__(self):
        self.norms: dict[str, list[float]] = {}

    def __call__(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if p.grad is not None and p.dim() >= 2:
                self.norms.setdefault(name, []).append(float(p.grad.detach().norm()))

    def summary(self) -> dict:
        out = {}
        for name, values in self.norms.items():
            v = np.asarray(values)
            mean = float(v.mean())
            out[name] = {"mean": mean, "cv": float(v.std() / mean) if mean > 0 else 0.0, "steps": len(v)}
        return out


@torch.no_grad()
def observe(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> dict:
    """Run ``x`` through ``model`` in evaluation mode with an activity probe attached; its summary."""
    probe = ActivityProbe()
    model.eval()
    device = next(model.parameters()).device
    with probe.attached(model):
        for i in range(0, len(x), batch_size):
            model(torch.as_tensor(x[i : i + batch_size], dtype=torch.float32, device=device))
    return probe.summary()


def write(out: str | Path, activity: dict, gradients: dict | None = None) -> list[Path]:
    """probes.json and the plots (firing_rate.png, window_share.png, potentials.png, gradients.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "probes.json"]
    tmp = out / ".probes.json.tmp"
    tmp.write_text(json.dumps({"activity": activity, "gradients": gradients or {}}, indent=1))
    tmp.replace(paths[0])
    names = list(activity)
    if not names:
        return paths

    for key, title, fname in (("firing_rate", "firing rate", "firing_rate.png"),
                              ("window_share", "share inside the gradient window", "window_share.png")):
        grid = np.array([activity[n][key] for n in names])
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * grid.shape[1], 0.9 + 0.35 * len(names)))
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xticks(range(grid.shape[1]), [str(t + 1) for t in range(grid.shape[1])])
        ax.set_xlabel("timestep")
        ax.set_title(f"{title} per layer and timestep", fontsize=9)
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        paths.append(out / fname)

    steps = len(activity[names[0]]["histogram"]["counts"])
    fig, axes = plt.subplots(len(names), steps, figsize=(2.0 * steps, 1.1 * len(names) + 0.6), squeeze=False,
                             sharex=True)
    for r, name in enumerate(names):
        hist = activity[name]["histogram"]
        edges = np.asarray(hist["edges"])
        for c, counts in enumerate(hist["counts"]):
            ax = axes[r][c]
            ax.stairs(counts, edges, fill=True, color="tab:blue")
            ax.axvline(1.0, color="tab:red", lw=0.8)
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=6, rotation=0, ha="right")
            if r == 0:
                ax.set_title(f"t = {c + 1}", fontsize=8)
    fig.suptitle("membrane potential / threshold (red: threshold)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "potentials.png", dpi=100)
    plt.close(fig)
    paths.append(out / "potentials.png")

    if gradients:
        gnames = list(gradients)
        fig, ax = plt.subplots(figsize=(6, 0.8 + 0.3 * len(gnames)))
        ax.barh(gnames, [gradients[n]["mean"] for n in gnames],
                xerr=[gradients[n]["mean"] * gradients[n]["cv"] for n in gnames], color="tab:orange")
        ax.set_xlabel("weight-gradient L2 norm (mean, bar: +- one std)")
        ax.tick_params(axis="y", labelsize=6)
        fig.tight_layout()
        fig.savefig(out / "gradients.png", dpi=110)
        plt.close(fig)
        paths.append(out / "gradients.png")
    return paths
