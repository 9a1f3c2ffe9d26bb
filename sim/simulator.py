"""Bit-exact simulation of an integer network, vectorised over samples.

Timing is layer-synchronous: at timestep t every layer sees its input layer's output of the same t. Lava's
Dense adds one timestep of delay per layer, so Lava's layer l answers l steps later; ``spikefold.deploy``
undoes that shift before comparing. The arithmetic is ``spikefold.export.intnet``'s, unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.errors import DataError, StateRangeError
from spikefold.export.intnet import STATE_MAX, IntNetwork


@dataclasses.dataclass
class LayerStats:
    """Range use of one layer's 24-bit state over a run."""

    max_abs_u: int = 0
    max_abs_v: int = 0
    u_wraps: int = 0
    v_saturations: int = 0

    def update(self, u: np.ndarray, v: np.ndarray, wrapped: np.ndarray, saturated: np.ndarray) -> None:
        self.max_abs_u = max(self.max_abs_u, int(np.abs(u).max(initial=0)))
        self.max_abs_v = max(self.max_abs_v, int(np.abs(v).max(initial=0)))
        self.u_wraps += int(wrapped.sum())
        self.v_saturations += int(saturated.sum())


@dataclasses.dataclass
class SimResult:
    """What a run produced. Arrays are indexed (sample, timestep, neuron)."""

    spikes: list[np.ndarray]  # one bool array per layer (the readout's is all False)
    readout_v: np.ndarray  # int64, the readout layer's voltage after every timestep
    stats: list[LayerStats]
    u: list[np.ndarray] | None = None  # per-layer state traces when recorded
    v: list[np.ndarray] | None = None

    @property
    def logits(self) -> np.ndarray:
        return self.readout_v[:, -1, :]

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def spike_counts(self) -> np.ndarray:
        """Spikes per layer and timestep, summed over samples: shape (layers, T)."""
        return np.stack([s.sum(axis=(0, 2)) for s in self.spikes])


def check_input(net: IntNetwork, x_int: np.ndarray) -> np.ndarray:
    """Validate encoded input: shape (samples, input size), integers within the encoding's range."""
    x = np.asarray(x_int)
    if x.ndim != 2 or x.shape[1] != net.input.size:
        raise DataError(
            f"input has shape {x.shape}; this network takes (samples, {net.input.size}) encoded integers")
    if not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"input must be encoded integers (InputEncoding.encode), got dtype {x.dtype}")
    hi = (1 << net.input.bits) - 1
    if x.size and (x.min() < 0 or x.max() > hi):
        raise DataError(f"input values span [{x.min()}, {x.max()}]; the encoding allows [0, {hi}]")
    return x.astype(np.int64)


def simulate(net: IntNetwork, x_int: np.ndarray, record_state: bool = False) -> SimResult:
    """Run every sample of ``x_int`` (samples, inputs) for ``net.timesteps`` steps from zero state."""
    x = check_input(net, x_int)
    n, steps = x.shape[0], net.timesteps
    weights = [layer.synapses.effective_weights() for layer in net.layers]
    biases = [layer.neurons.effective_bias() for layer in net.layers]
    u = [np.zeros((n, layer.size), np.int64) for layer in net.layers]
    v = [np.zeros((n, layer.size), np.int64) for layer in net.layers]
    spikes = [np.zeros((n, steps, layer.size), bool) for layer in net.layers]
    trace_u = [np.zeros((n, steps, layer.size), np.int64) for layer in net.layers] if record_state else None
    trace_v = [np.zeros((n, steps, layer.size), np.int64) for layer in net.layers]
    stats = [LayerStats() for _ in net.layers]
    # Direct input: the same graded message every timestep, so the first layer's synaptic input is constant.
    first_input = net.layers[0].synapses.forward(x, weights[0])
    for t in range(steps):
        pre = None
        for i, layer in enumerate(net.layers):
            a_in = first_input if i == 0 else layer.synapses.forward(pre, weights[i])
            out = layer.neurons.step(u[i], v[i], a_in, biases[i])
            u[i], v[i] = out.u, out.v
            stats[i].update(out.u, out.v, out.u_wrapped, out.v_saturated)
            spikes[i][:, t] = out.spikes
            trace_v[i][:, t] = out.v
            if trace_u is not None:
                trace_u[i][:, t] = out.u
            pre = out.spikes
    return SimResult(
        spikes=spikes,
        readout_v=trace_v[-1],
        stats=stats,
        u=trace_u,
        v=trace_v if record_state else None,
    )


def check_state_range(net: IntNetwork, x_int: np.ndarray, report=None) -> SimResult:
    """Run calibration data and fail, naming the layer and by how much, if any state wraps or saturates or
    the readout fires. With a ``QuantReport`` from export, fill in each layer's measured range use."""
    result = simulate(net, x_int)
    for i, (layer, st) in enumerate(zip(net.layers, result.stats)):
        if report is not None:
            entry = report.layers[i]
            entry.max_abs_u, entry.max_abs_v = st.max_abs_u, st.max_abs_v
            entry.headroom_bits = float(np.log2(STATE_MAX / max(st.max_abs_u, st.max_abs_v, 1)))
        problems = []
        if st.u_wraps:
            problems.append(f"its current wrapped {st.u_wraps} times (largest |u| {st.max_abs_u})")
        if st.v_saturations:
            problems.append(f"its voltage saturated {st.v_saturations} times (largest |v| {st.max_abs_v})")
        if layer.readout and result.spikes[i].any():
            problems.append(f"the readout fired {int(result.spikes[i].sum())} times")
        if problems:
            raise StateRangeError(
                f"layer '{layer.name}' leaves the 24-bit state range (limit {STATE_MAX - 1}) on "
                f"{len(x_int)} calibration samples: {'; '.join(problems)}. Lower the layer's scale "
                "(export with a smaller --headroom) or retrain with weight decay")
    return result
