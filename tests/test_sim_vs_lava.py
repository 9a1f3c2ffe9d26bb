"""The simulator and Lava's bit-accurate CPU models agree on every spike and every u and v integer."""

from __future__ import annotations

import numpy as np
import pytest

from spikefold.deploy import lava_runner
from spikefold.deploy.validation import compare
from spikefold.sim.simulator import simulate
from tests.random_nets import conv_network, featured_network, random_input, random_network, residual_network
from tests.same_runs import assert_same_runs


def _assert_identical(net, ref, got):
    """Every integer equal, and validation's own comparison says so too."""
    assert_same_runs(net, ref, got)
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
    weights = [c.synapses for net in nets for layer in net.layers for c in layer.inputs]
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


@pytest.mark.parametrize("seed", range(3))
def test_schedules_subtractive_reset_and_initial_potentials(seed):
    net = featured_network(seed)
    assert any(layer.neurons.needs for layer in net.layers)
    x = random_input(net, samples=5, seed=seed)
    _assert_identical(net, simulate(net, x, record_state=True), lava_runner.run(net, x, record_state=True))


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_skip_connections_summed_inputs_and_synaptic_delays(seed):
    """Layers that sum several connections, the graded input reaching deep layers, and skips that Lava runs
    through DelayDense with 1 to 3 steps of delay, together with schedules, resets and initial potentials."""
    net = residual_network(seed)
    delays = [net.delay(i, c) for i, layer in enumerate(net.layers) for c in layer.inputs]
    assert sorted(set(delays)) == [0, 1, 2, 3]
    x = random_input(net, samples=5, seed=seed)
    ref = simulate(net, x, record_state=True)
    assert all(s.any() for s in ref.spikes[:-1]), "every hidden layer must spike"
    _assert_identical(net, ref, lava_runner.run(net, x, record_state=True))


@pytest.mark.parametrize("seed", range(2))
def test_convolutions_with_graded_input(seed):
    net = conv_network(seed)
    x = random_input(net, samples=4, seed=seed)
    ref = simulate(net, x, record_state=True)
    assert all(s.any() for s in ref.spikes[:-1]), "both conv layers must spike"
    _assert_identical(net, ref, lava_runner.run(net, x, record_state=True))


def test_scheduled_lif_float_model_agrees_where_arithmetic_is_exact():
    """With no decay and integer inputs the float model's real arithmetic equals the fixed-point model."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    from spikefold.deploy.scheduled_lif import ScheduledLIF
    from spikefold.export.intnet import LIF

    rng = np.random.default_rng(0)
    steps, n = 12, 6
    data = rng.integers(0, 2, size=(4, steps))
    weights = rng.integers(-20, 40, size=(n, 4))
    neuron = LIF(du=4095, dv=0, vth=np.array([30, 60, 90]), bias_mant=np.zeros(n, int), bias_exp=np.zeros(n, int),
                 reset="subtract")
    spikes = {}
    for tag in ("fixed_pt", "floating_pt"):
        src, dense = RingBuffer(data=data), Dense(weights=weights * 2)
        lif = ScheduledLIF(shape=(n,), du=4095, dv=0, vth=neuron.vth, bias_mant=np.zeros(n), bias_exp=np.zeros(n),
                           reset="subtract", timesteps=3, offset=2)
        src.s_out.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        mon = Monitor()
        mon.probe(lif.s_out, steps)
        try:
            lif.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag=tag))
            spikes[tag] = np.asarray(mon.get_data()[lif.name]["s_out"]).astype(bool)
        finally:
            lif.stop()
    assert spikes["fixed_pt"].any()
    np.testing.assert_array_equal(spikes["fixed_pt"], spikes["floating_pt"])


@pytest.mark.parametrize("input_bits", [1, 8])
def test_input_that_changes_every_timestep(input_bits):
    """Per-timestep input, binary events (plain spikes into Dense with num_message_bits = 0) and graded
    values (graded spikes), reaching deep layers through delayed skip connections: sim and Lava agree on
    every spike, u and v. A static copy of the first timestep would give other spikes, so the timesteps
    really do differ."""
    net = residual_network(1, input_bits=input_bits, per_timestep=True)
    assert [c.synapses.num_message_bits for layer in net.layers for c in layer.inputs if c.source == "input"] == \
        [0 if input_bits == 1 else 8] * 3
    x = random_input(net, samples=4, seed=input_bits)
    assert x.shape == (4, net.timesteps, net.input.size) and not (x == x[:, :1]).all()
    ref = simulate(net, x, record_state=True)
    assert all(s.any() for s in ref.spikes[:-1]), "every hidden layer must spike"
    _assert_identical(net, ref, lava_runner.run(net, x, record_state=True))
    net.input.per_timestep = False
    static = simulate(net, x[:, 0], record_state=True)
    assert any(not np.array_equal(a, b) for a, b in zip(ref.spikes, static.spikes))
