"""The state-range check of an integer network: run it on calibration data and fail, naming the layer and by how
much, if any 24-bit state wraps or saturates or the readout fires; with export's ``QuantReport``, record how much
of the range each layer uses.

Export owns the check, so an export is complete without the simulator: it runs the network on
:mod:`spikefold.export.runner`, the runner the simulator uses too, batch by batch (memory bounded by a batch,
whatever the number of samples).
"""

from __future__ import annotations

import numpy as np

from spikefold.core.errors import StateRangeError
from spikefold.export.intnet import STATE_MAX, IntNetwork
from spikefold.export.runner import LayerStats, run_batches


def measure(net: IntNetwork, x_int: np.ndarray, batch_size: int | None = None) -> tuple[list[LayerStats], int]:
    """Run encoded input ``x_int`` layer-synchronously for ``net.timesteps`` steps from zero state on the CPU,
    ``batch_size`` samples at a time (default: as many as keep the widest layer's state near 1 MiB). Returns
    each layer's range use and how often the last layer fired."""
    x = net.input.check(x_int, net.timesteps)
    stats = [LayerStats() for _ in net.layers]
    last_fired = 0
    for _, _, run in run_batches(net, x, record_state=False, timing="synchronous", device="cpu",
                                 batch_size=batch_size, threads=None):
        for total, batch in zip(stats, run.stats):
            total.merge(batch.result())
        last_fired += int(run.spikes[-1].sum())
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
