"""Activity counts and the energy model on a network whose spikes are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from spikefold.deploy import lava_runner
from spikefold.export import hw_config
from spikefold.export.intnet import LIF, VTH_NEVER, Dense, InputEncoding, IntNetwork, Layer
from spikefold.sim import energy
from spikefold.sim.simulator import simulate


def _known_network() -> IntNetwork:
    """Hidden neuron 0 has a positive bias and threshold 0: it fires every step. Neurons 1 and 2 never do.
    Weights are zero, so the input does not matter to the spikes."""
    hidden = Layer("hidden", Dense(np.zeros((3, 2), np.int32), 0, num_message_bits=8),
                   LIF(du=4095, dv=100, vth=0, bias_mant=np.array([1, 0, -1]), bias_exp=np.zeros(3, int)), 1.0)
    readout = Layer("readout", Dense(np.array([[3, 0, 0], [0, 5, 0]], np.int32), 0),
                    LIF(du=4095, dv=0, vth=VTH_NEVER, bias_mant=np.zeros(2, int), bias_exp=np.zeros(2, int)), 1.0,
                    readout=True)
    return IntNetwork(InputEncoding(2, 255.0, 8), [hidden, readout], timesteps=3)


def test_counts_and_energy_by_hand():
    net = _known_network()
    x = np.array([[5, 0], [0, 0]])  # one non-zero input in sample 0, none in sample 1
    result = simulate(net, x)
    assert result.spikes[0][:, :, 0].all() and not result.spikes[0][:, :, 1:].any()
    # Readout voltage: 3 spikes x weight 3, each shifted << 6 into the current.
    np.testing.assert_array_equal(result.logits, [[3 * 3 * 64, 0], [3 * 3 * 64, 0]])
    loihi, ref = hw_config.load("loihi2"), hw_config.load("ann_45nm")
    report = energy.estimate(net, x, result, loihi, ref)
    hidden, out = report.layers
    # Per inference: 1 non-zero input in 2 samples over 3 steps = 1.5 messages into 3 neurons.
    assert (hidden.input_messages, hidden.synaptic_ops, hidden.neuron_updates, hidden.spikes) == (1.5, 4.5, 9, 3)
    # The readout receives neuron 0's 3 spikes, each driving 2 synapses.
    assert (out.input_messages, out.synaptic_ops, out.neuron_updates, out.spikes) == (3, 6, 6, 0)
    assert hidden.firing_rate == pytest.approx(3 / 9)
    e = {k: loihi.figure(s, k).value for s, k in [("energy", "synaptic_op"), ("energy", "neuron_update"),
                                                  ("energy", "neuron_update_active"), ("energy", "spike_message")]}
    expected_hidden = 4.5 * e["synaptic_op"] + 6 * e["neuron_update"] + 3 * e["neuron_update_active"] \
        + 1.5 * e["spike_message"]
    assert hidden.energy_j == pytest.approx(expected_hidden)
    step = loihi.figure("timing", "time_per_step").value
    assert report.latency_s == pytest.approx((3 + 2) * step)
    assert report.static_j == pytest.approx(loihi.figure("energy", "static_power").value * 3 * step)
    assert report.ann_45nm_j == pytest.approx((6 + 6) * 4.6e-12)
    assert report.snn_45nm_j == pytest.approx(6 * 3 * 4.6e-12 + 6 * 0.9e-12)


def test_energy_from_lava_equals_energy_from_sim():
    net = _known_network()
    x = np.array([[5, 0], [0, 0], [255, 255]])
    loihi, ref = hw_config.load("loihi2"), hw_config.load("ann_45nm")
    from_sim = energy.estimate(net, x, simulate(net, x), loihi, ref)
    from_lava = energy.estimate(net, x, lava_runner.run(net, x), loihi, ref)
    assert from_sim.to_dict() == from_lava.to_dict()


def test_every_figure_names_its_source():
    for name in hw_config.available():
        cfg = hw_config.load(name)
        for section in ("energy", "timing"):
            for key in cfg.raw.get(section, {}):
                fig = cfg.figure(section, key)
                assert fig.source and fig.unit, f"{name}: {section}.{key} needs a unit and a source"
