"""Probes: the diagnostics the papers report, for any model and neuron type.

- firing rate per layer and timestep;
- share of neurons inside the surrogate's gradient window, per layer and timestep;
- membrane-potential histograms per layer and timestep, as potential / threshold (so layers and neuron types with
  different thresholds share one axis; the threshold is at 1);
- per weight layer, the L2 norm of its gradient at every training step: mean, coefficient of variation and
  percentiles (10th, 50th, 90th).

Layers carry export's names (``hidden0``, ``conv3``, ``readout``: ``SpikingModel.layer_of``), timesteps are
numbered 0 .. T-1. Activity probes add a few reductions per layer and timestep to a forward pass, cheap enough to
leave on during evaluation. ``spikefold.reporting.write_probes`` writes ``probes.json`` and the PNG plots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from spikefold.train.models import SpikingModel
from spikefold.train.neurons import SpikingNeuron


def layers_of(model: nn.Module, paths) -> dict[str, str]:
    """Export's name of the layer each module or parameter at ``paths`` belongs to; a bare module keeps its own
    path. The model's layer names are worked out once for all of them."""
    if not isinstance(model, SpikingModel):
        return {path: path for path in paths}
    names = model.layer_names()
    return {path: model.layer_of(path, names) for path in paths}


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
        names = layers_of(model, [name for name, _ in neurons])
        for name, neuron in neurons:
            neuron.probe, neuron.probe_name = self, names[name]
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
    """Call after each backward pass: records the gradient norm of every weight layer (its 2-D or larger weights;
    a layer with several weight tensors, like a residual block's shortcut, gets the norm of all of them)."""

    def __init__(self):
        self.norms: dict[str, list[float]] = {}
        self._layers: tuple[nn.Module, dict[str, str]] | None = None  # (model, weight parameter -> layer)

    def _layer_of_weights(self, model: nn.Module) -> dict[str, str]:
        """Each weight parameter's layer name, worked out at the first step of a model, not at every step."""
        if self._layers is None or self._layers[0] is not model:
            self._layers = (model, layers_of(model, [path for path, p in model.named_parameters() if p.dim() >= 2]))
        return self._layers[1]

    def __call__(self, model: nn.Module) -> None:
        layers = self._layer_of_weights(model)
        squares: dict[str, torch.Tensor] = {}  # float64 on the device, added in parameter order; one sync a step
        for name, p in model.named_parameters():
            if p.grad is not None and name in layers:
                square = p.grad.detach().double().square().sum()
                squares[layers[name]] = square if layers[name] not in squares else squares[layers[name]] + square
        if squares:
            for layer, square in zip(squares, torch.stack(list(squares.values())).tolist()):
                self.norms.setdefault(layer, []).append(square ** 0.5)

    def summary(self) -> dict:
        out = {}
        for name, values in self.norms.items():
            v = np.asarray(values)
            mean = float(v.mean())
            p10, median, p90 = (float(q) for q in np.percentile(v, [10, 50, 90]))
            out[name] = {"mean": mean, "cv": float(v.std() / mean) if mean > 0 else 0.0, "steps": len(v),
                         "p10": p10, "median": median, "p90": p90}
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
