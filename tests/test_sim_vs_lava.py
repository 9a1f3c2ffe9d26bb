"""The simulator and Lava's bit-accurate CPU models agree on every spike and every u and v integer."""

from __future__ import annotations

import numpy as np
import pytest

from spikefold.deploy import lava_runner
from spikefold.deploy.validation import compare
from spikefold.sim.simulator import simulate
from tests.random_nets import random_input, random_network


def _assert_identical(net, ref, got):
    for i, layer in enumerate(net.layers):
        np.testing.assert_array_equal(ref.spikes[i], got.spikes[i], err_msg=f"{layer.name} spikes")
        np.testing.assert_array_equal(ref.u[i], got.u[i], err_msg=f"{layer.name} u")
        np.testing.assert_array_equal(ref.v[i], got.v[i], err_msg=f"{layer.name} v")
    np.testing.assert_array_equal(ref.readout_v, got.readout_v)
    assert compare(net, ref, got).exact


@pytest.mark.parametrize("seed", range(6))
def test_random_networks_every_state_integer(seed):
    net = random_network(seed)
    x = random_input(net, samples=5, seed=seed)
    ref = simulate(net, x, record_state=True)
    got = lava_runner.run(net, x, record_state=True)
    _assert_identical(net, ref, got)


def test_random_networks_cover_the_corner_cases():
    """The seeds above really do exercise odd mixed-sign weights, negative exponents, truncation widths
    and non-trivial current decay; the wild ones below wrap and saturate."""
    nets = [random_network(seed) for seed in range(6)]
    weights = [layer.synapses for net in nets for layer in net.layers]
    assert any(w.weights.min() < 0 < w.weights.max() and (w.weights % 2 == 1).any() for w in weights)
    assert any(w.weight_exp < 0 for w in weights)
    assert {w.num_weight_bits for w in weights} >= {6, 7, 8}
    assert any(layer.neurons.du < 4095 for net in nets for layer in net.layers)


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_wraparound_and_saturation(seed):
    net = random_network(seed, wild=True)
    x = random_input(net, samples=6, seed=seed)
    ref = simulate(net, x, record_state=True)
    assert sum(s.u_wraps for s in ref.stats) > 0, "the case must wrap the 24-bit current"
    assert sum(s.v_saturations for s in ref.stats) > 0, "the case must saturate the 24-bit voltage"
    got = lava_runner.run(net, x, record_state=True)
    _assert_identical(net, ref, got)


def test_one_timestep_and_deep_chain():
    """T = 1 (a reset every step) and five layers (five steps of Dense delay) still line up."""
    net = random_network(7, sizes=(6, 9, 8, 7, 6, 3), timesteps=1)
    x = random_input(net, samples=7, seed=1)
    _assert_identical(net, simulate(net, x, record_state=True), lava_runner.run(net, x, record_state=True))


def test_demo_model_spikes_equal(exported, split):
    _, net, _ = exported
    x = net.input.encode(split.x_test[:40])
    ref = simulate(net, x, record_state=True)
    got = lava_runner.run_in_chunks(net, x, chunk=20, record_state=True)
    _assert_identical(net, ref, got)
    assert sum(int(s.sum()) for s in ref.spikes) > 1000, "the demo model must actually spike"
