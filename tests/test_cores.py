"""Partitioned core mapping: convolution tiles read only their receptive field, every core within its limits,
counts per actual synapse; checked against the unrolled matrices of small networks (which the mapper never
builds)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.cores_resnet19 import resnet19
from spikefold.core.errors import MappingError
from spikefold.export import hw_config
from spikefold.export.intnet import Conv2d
from spikefold.sim import energy
from spikefold.sim.cores import LIMITS, grid, map_onto_cores
from spikefold.sim.simulator import simulate
from tests.random_nets import conv_network, random_input
from tests.test_energy import _config_with_limits


def _connectivity(net, layer_index: int) -> np.ndarray:
    """(neurons, inputs) 0/1 matrix of the layer's actual synapses, unrolled from a kernel of ones."""
    parts = []
    for c in net.layers[layer_index].inputs:
        syn = c.synapses
        if isinstance(syn, Conv2d):  # the convolution of a kernel of ones with each unit input
            ones = Conv2d(np.ones(np.shape(syn.weights), np.int64), 0, input_shape=syn.input_shape,
                          stride=syn.stride, padding=syn.padding)
            parts.append(ones.accumulate(np.eye(syn.shape[1], dtype=np.int64)).T.astype(np.int64))
        else:
            parts.append(np.ones(syn.shape, np.int64))
    return np.concatenate(parts, axis=1)


def test_convolution_tiles_hold_only_their_receptive_field(tmp_path):
    net = conv_network(5, timesteps=3)  # conv1: 4 x 6 x 6 neurons, 1 x 6 x 6 input, 3x3, padding 1
    hw = _config_with_limits(tmp_path, neurons_per_core=40, input_axons_per_core=70)
    core_map = map_onto_cores(net, hw)
    for i, layer in enumerate(net.layers):
        conn = _connectivity(net, i)
        shape = grid(layer.output_shape)
        cores = core_map.of_layer(i)
        assert sorted(np.concatenate([c.tile.indices(shape) for c in cores]).tolist()) == list(range(layer.size))
        for core in cores:
            rows = conn[core.tile.indices(shape)]
            assert core.synapses == rows.sum()  # one per kernel tap inside the map
            assert core.input_axons == np.count_nonzero(rows.any(axis=0))  # the inputs the tile reads, no more
            for key, used in (("neurons_per_core", core.neurons), ("synapses_per_core", core.synapses),
                              ("input_axons_per_core", core.input_axons),
                              ("output_axons_per_core", core.output_axons)):
                assert used <= hw.figure("limits", key).value
    assert all(c.groups == 1 for c in core_map.cores)  # these limits need no fan-in split
    conv1 = core_map.of_layer(0)
    assert len(conv1) > 1 and all(c.input_axons < 36 for c in conv1)  # split spatially: none reads the whole map
    # Output axons: one per neuron and per core of conv2 whose receptive field holds it.
    reads = _connectivity(net, 1)
    conv2_cores = core_map.of_layer(1)
    per_neuron = sum((reads[c.tile.indices(grid(net.layers[1].output_shape))].any(axis=0)).astype(int)
                     for c in conv2_cores)
    for core in conv1:
        assert core.output_axons == per_neuron[core.tile.indices(grid(net.layers[0].output_shape))].sum()


def test_energy_counts_synaptic_ops_per_actual_synapse_of_each_tile(tmp_path):
    net = conv_network(5, timesteps=3)
    x = random_input(net, 4, seed=2)
    result = simulate(net, x)
    hw = _config_with_limits(tmp_path, neurons_per_core=40, input_axons_per_core=70)
    report = energy.estimate(net, x, result, hw, hw_config.load("ann_45nm"))
    core_map = map_onto_cores(net, hw)
    conv2 = core_map.of_layer(1)
    conn = _connectivity(net, 1)
    spikes_in = result.spikes[0].sum(axis=(0, 1)) / len(x)  # conv1's spikes per inference, per neuron
    activities = [a for a in report.cores if a.layer == "conv2"]
    assert len(conv2) > 1  # the layer is split: each tile counts its own synapses
    for core, activity in zip(conv2, activities, strict=True):
        rows = conn[core.tile.indices(grid(net.layers[1].output_shape))]
        assert activity.synaptic_ops == pytest.approx(float(spikes_in @ rows.sum(axis=0)))
        assert activity.messages_in == pytest.approx(float(spikes_in @ rows.any(axis=0)))
    # NeuroBench's count: non-zero weights only, per (input, output) pair.
    conv2 = net.layers[1].inputs[0].synapses
    w = conv2.accumulate(np.eye(conv2.shape[1], dtype=np.int64)).T  # the effective matrix, column by column
    assert report.neurobench["layers"][1]["Effective_ACs"] == pytest.approx(
        float(spikes_in @ np.count_nonzero(w, axis=0)))
    conv1 = net.layers[0].inputs[0].synapses
    w0 = conv1.accumulate(np.eye(conv1.shape[1], dtype=np.int64)).T
    assert report.neurobench["layers"][0]["Effective_MACs"] == pytest.approx(
        float((x != 0).sum(axis=0) @ np.count_nonzero(w0, axis=0)) / len(x) * net.timesteps)


def test_a_convolution_no_tile_can_hold_is_refused_with_what_would_fit(tmp_path):
    net = conv_network(5, timesteps=3)
    # conv2 reads 4 channels x 4 x 4 taps: with 10 input axons not even one channel of one pixel fits.
    with pytest.raises(MappingError, match=r"layer 'conv2' cannot be partitioned onto loihi2 cores: .* needs \d+ "
                                           r"input_axons where a core has 10; use fewer input channels"):
        map_onto_cores(net, _config_with_limits(tmp_path, input_axons_per_core=10))


def test_a_residual_net_at_1_16_width_maps_within_every_limit():
    net = resnet19(1 / 16)
    hw = hw_config.load("loihi2")
    core_map = map_onto_cores(net, hw)
    caps = {key: hw.figure("limits", key).value for key in LIMITS}
    assert all(c.neurons <= caps["neurons_per_core"] and c.synapses <= caps["synapses_per_core"]
               and c.input_axons <= caps["input_axons_per_core"] and c.output_axons <= caps["output_axons_per_core"]
               for c in core_map.cores)
    summary = core_map.summary(net)
    assert summary["cores"] == len(core_map.cores) and summary["chips"] == -(-summary["cores"] // 128)
    assert sum(row["neurons"] for row in summary["layers"]) == sum(layer.size for layer in net.layers)
