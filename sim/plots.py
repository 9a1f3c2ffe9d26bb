"""Plots of a run's activity and energy (matplotlib, written as PNGs). Imported only by the reporting code."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from spikefold.export.intnet import IntNetwork  # noqa: E402
from spikefold.sim.energy import EnergyReport  # noqa: E402
from spikefold.sim.simulator import SimResult  # noqa: E402


def firing_per_layer_and_timestep(net: IntNetwork, result: SimResult, path: Path) -> Path:
    hidden = [i for i, layer in enumerate(net.layers) if not layer.readout]
    rates = np.array([result.spikes[i].mean(axis=(0, 2)) for i in hidden])
    fig, ax = plt.subplots(figsize=(6, 1.4 + 0.28 * len(hidden)))
    image = ax.imshow(rates, aspect="auto", cmap="viridis", vmin=0)
    ax.set_yticks(range(len(hidden)), [net.layers[i].name for i in hidden])
    ax.set_xticks(range(net.timesteps), [str(t + 1) for t in range(net.timesteps)])
    ax.set_xlabel("timestep")
    ax.set_title("firing rate (spikes per neuron per step)")
    for (r, c), value in np.ndenumerate(rates):
        ax.text(c, r, f"{value:.3f}", ha="center", va="center", fontsize=8,
                color="w" if value < rates.max() / 2 else "k")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _layer_labels(ax, names: list[str]) -> None:
    """Layer names under bars: turned upright when there are too many to sit side by side."""
    if len(names) > 5:
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)


def energy_per_layer(report: EnergyReport, path: Path) -> Path:
    names = [row.name for row in report.layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names)), 3.6))
    ax.bar(names, [row.energy_j * 1e9 for row in report.layers], color="tab:blue", label="Loihi 2 dynamic")
    _layer_labels(ax, names)
    ax.set_ylabel("nJ per inference")
    ax.set_title(f"dynamic energy per layer (static {report.static_j * 1e6:.1f} uJ not shown)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cores_used(report: EnergyReport, path: Path) -> Path:
    """Cores per layer, and each core's work per timestep (mean over timesteps) against the barrier."""
    names = [row.name for row in report.layers]
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9.0, 0.5 * len(names)), 3.6),
                                      gridspec_kw={"width_ratios": [1, 2.2]})
    left.bar(names, [row.cores for row in report.layers], color=[colours[n] for n in names])
    _layer_labels(left, names)
    left.set_ylabel("cores")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_title(f"{sum(row.cores for row in report.layers)} cores on {report.hw_config}")
    busy_us = [float(np.mean(core.busy_s)) * 1e6 for core in report.cores]
    right.bar(range(len(report.cores)), busy_us, color=[colours[core.layer] for core in report.cores])
    barrier_us = report.figures["timing.barrier_sync"].value * 1e6
    right.axhline(barrier_us, color="k", linestyle=":", label=f"barrier {barrier_us:.2f} us")
    right.set_xlabel("core")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("us of work per timestep")
    right.set_title(f"latency {report.latency_s * 1e6:.1f} us per inference")
    right.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cores_per_layer(summary: dict, path: Path) -> Path:
    """A core mapping's cores per layer (``CoreMap.summary``), with the chips and boards it needs in the title."""
    names = [row["layer"] for row in summary["layers"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names)), 3.6))
    ax.bar(names, [row["cores"] for row in summary["layers"]],
           color=["tab:orange" if row["input_groups"] > 1 else "tab:blue" for row in summary["layers"]])
    _layer_labels(ax, names)
    ax.set_yscale("log")
    ax.set_ylabel("cores (orange: fan-in split)")
    boards = ", ".join(f"{n} {name}" for name, n in summary["boards"].items())
    ax.set_title(f"{summary['cores']:,} cores, {summary['chips']:,} chips on {summary['hw_config']} ({boards})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
