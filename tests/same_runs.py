"""The one comparison of two runs of the same integer network that bit-exact tests make: every layer's spikes,
with ``states`` every u and v, and the last layer's voltage, integer for integer, each named by its layer."""

from __future__ import annotations

import numpy as np


def assert_same_runs(net, ref, got, states: bool = True) -> int:
    """Fail, naming the layer and the variable, where ``got`` (a SimResult) differs from ``ref``; returns the spike
    slots compared."""
    for i, layer in enumerate(net.layers):
        np.testing.assert_array_equal(ref.spikes[i], got.spikes[i], err_msg=f"{layer.name} spikes")
        if states:
            np.testing.assert_array_equal(ref.u[i], got.u[i], err_msg=f"{layer.name} u")
            np.testing.assert_array_equal(ref.v[i], got.v[i], err_msg=f"{layer.name} v")
    np.testing.assert_array_equal(ref.readout_v, got.readout_v, err_msg="the last layer's voltage")
    return sum(s.size for s in ref.spikes)
