"""Compare a target's run with the simulator's, spike for spike and integer for integer."""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.export.intnet import IntNetwork
from spikefold.sim.simulator import SimResult


@dataclasses.dataclass
class Divergence:
    layer: str
    what: str  # "spikes", "readout v", "u" or "v"
    sample: int
    timestep: int
    neuron: int
    reference: int
    target: int


@dataclasses.dataclass
class Agreement:
    samples: int
    spikes_compared: int  # spike slots (sample x timestep x neuron) compared, all layers
    spikes_differing: int
    readout_equal: bool
    predictions_equal: float  # share of samples with the same prediction
    per_layer_differing: dict[str, int]
    first: Divergence | None

    @property
    def exact(self) -> bool:
        return self.spikes_differing == 0 and self.readout_equal


def _first(net: IntNetwork, index: int, what: str, ref: np.ndarray, got: np.ndarray):
    """The earliest (timestep, sample, neuron) where ``ref`` and ``got`` differ, keyed for ordering."""
    diff = np.argwhere(ref != got)
    if not len(diff):
        return None
    k, t, j = min(diff.tolist(), key=lambda d: (d[1], d[0], d[2]))
    found = Divergence(net.layers[index].name, what, int(k), int(t), int(j), int(ref[k, t, j]), int(got[k, t, j]))
    return (t, index, k), found


def compare(net: IntNetwork, reference: SimResult, target: SimResult) -> Agreement:
    """Every spike of every layer and timestep, the readout voltage, and u/v where both recorded them.

    The first divergence is the earliest timestep, and within it the lowest layer: in layer-synchronous time
    that is where the two runs started to differ; everything after it may only be a consequence.
    """
    per_layer, found, compared = {}, [], 0
    for i, layer in enumerate(net.layers):
        ref, got = reference.spikes[i], target.spikes[i]
        if ref.shape != got.shape:
            raise ValueError(f"layer '{layer.name}': reference spikes {ref.shape} vs target {got.shape}")
        per_layer[layer.name] = int((ref != got).sum())
        compared += ref.size
        pairs = [("spikes", ref, got)]
        if i == len(net.layers) - 1:
            pairs.append(("readout v", reference.readout_v, target.readout_v))
        for name, a, b in (("u", reference.u, target.u), ("v", reference.v, target.v)):
            if a is not None and b is not None:
                pairs.append((name, a[i], b[i]))
        found += [hit for hit in (_first(net, i, *pair) for pair in pairs) if hit is not None]
    return Agreement(
        samples=len(reference.readout_v),
        spikes_compared=compared,
        spikes_differing=sum(per_layer.values()),
        readout_equal=bool(np.array_equal(reference.readout_v, target.readout_v)),
        predictions_equal=float((reference.predictions == target.predictions).mean()),
        per_layer_differing=per_layer,
        first=min(found, key=lambda hit: hit[0])[1] if found else None,
    )
