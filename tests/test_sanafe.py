"""SANA-FE (the optional second energy engine) runs the integer network spike for spike as the simulator does."""

from __future__ import annotations

import numpy as np
import pytest

from spikefold.core.errors import SanaFeError
from spikefold.export import hw_config
from spikefold.sim import energy, sanafe_engine
from spikefold.export.intnet import INPUT
from spikefold.sim.cores import Box, Core, grid, map_onto_cores, synapses_per_source
from spikefold.sim.simulator import align_to_synchronous, simulate
from tests.random_nets import conv_network, random_input, random_network, residual_network

pytest.importorskip("sanafe", reason="SANA-FE (the sanafe extra) is not installed; `make test` installs it")


def _compare(net, x):
    hw = hw_config.load("loihi1_sanafe")
    lava_timed = simulate(net, x, timing="lava")
    run = sanafe_engine.run(net, x, map_onto_cores(net, hw), lava_timed)
    for layer, ours, theirs in zip(net.layers, lava_timed.spikes, run.spikes):
        differ = np.argwhere(theirs != ours)
        assert not len(differ), f"{layer.name}: (sample, step, neuron) differing first: {differ[:5].tolist()}"
    np.testing.assert_array_equal(run.readout_v, lava_timed.readout_v)
    report = energy.estimate(net, x, align_to_synchronous(net, lava_timed), hw, hw_config.load("ann_45nm"))
    return run, report


def _synaptic_ops_over_lava_schedule(net, x, lava_timed) -> float:
    """Synaptic ops per inference over all T + D steps of Lava's schedule (fill steps included, where a layer's
    bias can fire it before its window): every spike (or non-zero input, T steps) times the synapses it drives."""
    total = 0.0
    for layer in net.layers:
        c_out, h, w = grid(layer.output_shape)
        whole = Core(0, 0, Box(0, c_out, 0, h, 0, w), 0, 1, True, 0, 0, 0)
        for c in layer.inputs:
            if c.source == INPUT:
                sent = (x != 0).sum(axis=0) * net.timesteps
                shape = grid(c.synapses.input_shape if hasattr(c.synapses, "input_shape") else (net.input.size,))
            else:
                i = net.index(c.source)
                sent, shape = lava_timed.spikes[i].sum(axis=(0, 1)), grid(net.layers[i].output_shape)
            total += float(sent @ synapses_per_source(c, whole, shape)) / len(x)
            if c.source == INPUT and c.synapses.weight_exp < 0:
                total += layer.size * net.timesteps  # the floor-residue synapses, one per neuron and step
    return total


def test_the_trained_mlp_spikes_exactly_in_sanafe(exported, split):
    _, net, _ = exported
    x = net.input.encode(split.x_test[:3])
    run, report = _compare(net, x)
    assert sum(s.sum() for s in run.spikes[:-1]) > 0  # the hidden layers fire
    assert run.synaptic_ops == pytest.approx(_synaptic_ops_over_lava_schedule(net, x, simulate(net, x, timing="lava")))


def test_a_cnn_spikes_exactly_in_sanafe():
    net = conv_network(5, timesteps=3)  # its currents forget every step (du = 4095), as SANA-FE's must
    x = random_input(net, 2, seed=1) // 16  # small enough that no state saturates (SANA-FE computes in doubles)
    run, report = _compare(net, x)
    assert sum(s.sum() for s in run.spikes[:-1]) > 0
    # One synaptic op per kernel tap inside the map, per spike.
    assert run.synaptic_ops == pytest.approx(_synaptic_ops_over_lava_schedule(net, x, simulate(net, x, timing="lava")))


def test_what_sanafe_cannot_represent_is_a_named_error():
    net = conv_network(5, timesteps=3)
    net.layers[1].neurons.du = 100
    with pytest.raises(SanaFeError, match=r"layer '.*': du = \d+; SANA-FE's loihi_lif does not truncate"):
        sanafe_engine.check_representable(net)
    for layer in net.layers:
        layer.neurons.du = 4095
    net.layers[0].neurons.vth = np.arange(1, 4)
    with pytest.raises(SanaFeError, match="per-timestep threshold schedule"):
        sanafe_engine.check_representable(net)
    wide = random_network(2, sizes=(4, 1100, 3), weight_exp=0)
    for layer in wide.layers:
        layer.neurons.du = 4095
    with pytest.raises(SanaFeError, match=r"up to 1100 neurons on a core; SANA-FE's Loihi cores hold 1024: use "
                                          r"--hw-config loihi1_sanafe"):
        sanafe_engine.run(wide, np.zeros((1, 4), np.int64), map_onto_cores(wide, hw_config.load("loihi2")))


def test_cli_sim_reports_sanafe_beside_spikefold(exported, tmp_path):
    import json

    from spikefold.cli import main
    from spikefold.export import nir_io

    path = str(nir_io.write(exported[1], tmp_path / "m.nir"))
    out = tmp_path / "sim"
    assert main(["sim", path, "--samples", "3", "--hw-config", "loihi1_sanafe", "--energy-engine", "sanafe",
                 "--out", str(out)]) == 0
    side = json.loads((out / "energy.json").read_text())["sanafe"]
    assert side["spikes_equal"] and side["readout_equal"] and side["release"] == "sanafe 2.2.9"
    assert side["sanafe"]["energy_j"] > 0 and len(side["sanafe"]["step_s"]) == len(side["spikefold"]["step_s"])
    assert "## SANA-FE (sanafe 2.2.9) beside spikefold" in (out / "energy.md").read_text()


def test_skip_connections_initial_potentials_and_subtractive_resets_spike_exactly_in_sanafe():
    """A graph whose connections skip 1 to 3 layers (relays in SANA-FE), with initial potentials, subtractive
    resets and a negative input weight exponent (the floor-residue synapse)."""
    net = residual_network(3, timesteps=2)  # depths up to 4: Lava's resets fall in the fill steps too
    for layer in net.layers:
        layer.neurons.du = 4095
        layer.neurons.vth = int(np.ravel(layer.neurons.vth)[0])  # SANA-FE has one threshold
        for c in layer.inputs:
            if c.source != INPUT:
                c.synapses.weight_exp = max(0, c.synapses.weight_exp)
    assert max(net.delay(i, c) for i, layer in enumerate(net.layers) for c in layer.inputs) == 3
    assert any(layer.initial is not None for layer in net.layers)
    assert {layer.neurons.reset for layer in net.layers} == {"zero", "subtract"}
    x = random_input(net, 3, seed=4) // 16
    run, _ = _compare(net, x)
    assert sum(s.sum() for s in run.spikes[:-1]) > 0
