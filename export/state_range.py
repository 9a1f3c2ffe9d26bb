"""The state-range check of an integer network: run it on calibration data and fail, naming the layer and by how
much, if any 24-bit state wraps or saturates or the readout fires; with export's ``QuantReport``, record how much
of the range each layer uses.

Export owns the check, so an export is complete without the simulator: it steps :mod:`spikefold.export.intnet`'s
equations layer-synchronously on numpy arrays, batch by batch (memory bounded by a batch, whatever the number of
samples). The simulator computes the same :class:`LayerStats` for its own runs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.core.errors import ConfigError, StateRangeError
from spikefold.export.intnet import INPUT, STATE_MAX, IntNetwork, wrap32

BATCH_STATE_VALUES = 1 << 17  # a batch keeps each layer's int64 state near 1 MiB, in cache


@dataclasses.dataclass
class LayerStats:
    """Range use of one layer's 24-bit state over a run."""

    max_abs_u: int = 0
    max_abs_v: int = 0
    u_wraps: int = 0
    v_saturations: int = 0

    def merge(self, other: LayerStats) -> None:
        self.max_abs_u = max(self.max_abs_u, other.max_abs_u)
        self.max_abs_v = max(self.max_abs_v, other.max_abs_v)
        self.u_wraps += other.u_wraps
        self.v_saturations += other.v_saturations


def measure(net: IntNetwork, x_int: np.ndarray, batch_size: int | None = None) -> tuple[list[LayerStats], int]:
    """Run encoded input ``x_int`` layer-synchronously for ``net.timesteps`` steps from zero state, ``batch_size``
    samples at a time (default: as many as keep the widest layer's state near 1 MiB). Returns each layer's range
    use and how often the last layer fired."""
    x = net.input.check(x_int, net.timesteps)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch size must be >= 1 sample, got {batch_size}")
    batch = batch_size or min(1024, max(1, BATCH_STATE_VALUES // max(layer.size for layer in net.layers)))
    weights = [[c.synapses.exact_weights() for c in layer.inputs] for layer in net.layers]
    biases = [layer.neurons.effective_bias() for layer in net.layers]
    initials = [layer.initial_input() for layer in net.layers]
    stats = [LayerStats() for _ in net.layers]
    last_fired = 0
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]
        u = [np.zeros((len(xb), layer.size), np.int64) for layer in net.layers]
        v = [np.zeros_like(state) for state in u]
        for t in range(net.timesteps):
            sent = {INPUT: xb[:, t] if net.input.per_timestep else xb}
            for i, layer in enumerate(net.layers):
                a_in = np.zeros((len(xb), layer.size), np.int64)
                for c, w in zip(layer.inputs, weights[i]):
                    a_in = wrap32(a_in + c.synapses.forward(sent[c.source], w))  # Lava sums a port in int32
                if initials[i] is not None and t == 0:  # MP-Init's pulse at a sample's first step
                    a_in = wrap32(a_in + initials[i])
                out = layer.neurons.step(u[i], v[i], a_in, biases[i], t=t)
                u[i], v[i], sent[layer.name] = out.u, out.v, out.spikes
                stats[i].merge(LayerStats(int(np.abs(out.u).max(initial=0)), int(np.abs(out.v).max(initial=0)),
                                          int(out.u_wrapped.sum()), int(out.v_saturated.sum())))
            last_fired += int(sent[net.layers[-1].name].sum())
    return stats, last_fired


def check_state_range(net: IntNetwork, x_int: np.ndarray, report=None,
                      batch_size: int | None = None) -> list[LayerStats]:
    """Run calibration data (see :func:`measure`) and fail, naming the layer and by how much, if any state wraps or
    saturates or the readout fires. With a ``QuantReport`` (``spikefold.export.quantise``), fill in each layer's
    measured range use. Returns each layer's range use."""
    stats, last_fired = measure(net, x_int, batch_size)
    for i, (layer, st) in enumerate(zip(net.layers, stats)):
        if report is not None:
            entry = report.layers[i]
            entry.max_abs_u, entry.max_abs_v = st.max_abs_u, st.max_abs_v
            entry.headroom_bits = float(np.log2(STATE_MAX / max(st.max_abs_u, st.max_abs_v, 1)))
        problems = []
        if st.u_wraps:
            problems.append(f"its current wrapped {st.u_wraps} times (largest |u| {st.max_abs_u})")
        if st.v_saturations:
            problems.append(f"its voltage saturated {st.v_saturations} times (largest |v| {st.max_abs_v})")
        if layer.readout and last_fired:
            problems.append(f"the readout fired {last_fired} times")
        if problems:
            raise StateRangeError(
                f"layer '{layer.name}' leaves the 24-bit state range (limit {STATE_MAX - 1}) on "
                f"{len(x_int)} calibration samples: {'; '.join(problems)}. Calibrate on more of the data "
                "(export's --calibration-samples; by default the whole training split) or retrain with weight decay")
    return stats
