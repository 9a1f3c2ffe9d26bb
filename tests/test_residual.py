"""Residual networks (ResNet-19's standard block and SEW-ResNet-19's additive block) folded into integer
graphs whose layers sum several connections, carried through NIR, and run bit-exactly in Lava."""

from __future__ import annotations

import dataclasses

import nir
import numpy as np
import pytest
import torch

from spikefold.export import nir_io
from spikefold.export.fold import fold
from spikefold.export.quantise import layer_terms, quantise
from spikefold.export.intnet import ACT_SHIFT, INPUT
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import simulate
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig, batchnorm_from_data
from spikefold.train.neurons import NeuronConfig

KINDS = ["lif", "atgo", "agl", "mpinit_trsg", "psg_pda"]
ARCHS = ["resnet19", "sew_resnet19"]


@pytest.fixture(scope="module")
def residual_models(split):
    """Per neuron type and residual architecture (8 x 8 digits, 1/16 width, T = 2): ten real optimiser steps,
    then BatchNorm recalibration. After so few steps BatchNorm's running statistics (momentum 0.1) are far from
    what a 19-layer network actually computes, and it falls silent in eval mode; one pass in training mode with
    momentum 1 sets them to the data's own, so every layer is active and the checks below mean something."""
    subset = dataclasses.replace(split, x_train=split.x_train[:320], y_train=split.y_train[:320])
    out = {}
    for kind in KINDS:
        for arch in ARCHS:
            cfg = ModelConfig(arch=arch, input_shape=(1, 8, 8), width=1 / 16, timesteps=2,
                              neuron=NeuronConfig(kind), norm="tdbn" if kind == "agl" else "bn")
            model = train(cfg, TrainConfig(epochs=1, batch_size=32, seed=1), subset).model
            out[kind, arch] = batchnorm_from_data(model, subset.x_train)
    return out


def _export(model, split, loihi2):
    calibration = split.x_train[:320]
    net, report = quantise(fold(model), loihi2, calibration)
    check_state_range(net, net.input.encode(calibration), report)
    return net, report


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_residual_fold_equals_the_trained_model(residual_models, split, kind, arch):
    """Shortcuts (identity, 1x1 conv + BatchNorm, SEW's spiking downsample), SEW sums and global pooling
    folded: the same logits as the model."""
    model = residual_models[kind, arch]
    with torch.no_grad():
        reference = model.double()(torch.as_tensor(split.x_test[:60], dtype=torch.float64)).numpy()
    model.float()
    logits, _ = fold(model).run(split.x_test[:60])
    np.testing.assert_allclose(logits, reference, rtol=1e-7, atol=1e-7)
    assert np.ptp(reference, axis=0).max() > 0.1, "the logits must depend on the input"


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_graph_shape(residual_models, split, loihi2, arch):
    """The standard block's neuron sums conv2 and the shortcut; a SEW block's reader gets one connection per
    addend of the block's sum, so every neuron sends binary spikes; the readout reads the pooled map."""
    net, _ = _export(residual_models["lif", arch], split, loihi2)
    names = [layer.name for layer in net.layers]
    sources = {layer.name: [c.source for c in layer.inputs] for layer in net.layers}
    assert names[0] == "stem" and names[-1] == "readout" and sources["stem"] == [INPUT]
    if arch == "resnet19":
        assert len(names) == 1 + 8 * 2 + 1
        assert sources["block0_conv2"] == ["block0_conv1", "stem"]  # identity shortcut
        assert sources["block3_conv2"] == ["block3_conv1", "block2_conv2"]  # 1x1 conv shortcut
        assert sources["readout"] == ["block7_conv2"]
    else:
        assert "block3_down" in names and "head" in names
        assert sources["block2_conv1"] == ["block1_conv2", "block0_conv2", "stem"]
        assert sources["block4_conv1"] == ["block3_conv2", "block3_down"]
        assert sources["head"] == ["block7_conv2", "block6_conv2", "block6_down"]  # the last stage's sum, pooled
    delays = [net.delay(i, c) for i, layer in enumerate(net.layers) for c in layer.inputs]
    assert max(delays) >= 1, "skips need synaptic delay on Lava"
    x = net.input.encode(split.x_test[:50])
    spiking = [bool(s.any()) for s in simulate(net, x).spikes[:-1]]
    assert sum(spiking) >= len(spiking) - 2, f"most layers must spike: {spiking}"


def test_quantisation_error_of_a_summing_layer(residual_models, split, loihi2):
    """A layer fed by several connections has one weight exponent each; its reported weight error is measured
    in the float model's units, rebuilt here from the integers Lava holds."""
    model = residual_models["lif", "resnet19"]
    fnet = fold(model)
    net, report = _export(model, split, loihi2)
    summing = [i for i, layer in enumerate(net.layers) if len(layer.inputs) > 1]
    assert summing and any(len(set(report.layers[i].weight_exp)) > 1 for i in summing), "exponents should differ"
    for i, lt in enumerate(layer_terms(fnet, net.input.scale)):
        layer = net.layers[i]
        rebuilt = [c.synapses.effective_weights() * 2.0**c.synapses.weight_exp * unit * (1 << ACT_SHIFT) / layer.scale
                   for c, unit in zip(layer.inputs, lt.units)]
        error = np.sqrt(sum(np.sum((r - w) ** 2) for r, w in zip(rebuilt, lt.weights)))
        norm = np.sqrt(sum(np.sum(w**2) for w in lt.weights))
        assert report.layers[i].weight_rel_error == pytest.approx(error / norm, rel=1e-9), layer.name
        assert report.layers[i].weight_rel_error < 0.02, layer.name


def test_residual_nir_round_trip_with_merging_edges(residual_models, split, loihi2, tmp_path):
    net, _ = _export(residual_models["mpinit_trsg", "sew_resnet19"], split, loihi2)
    path = nir_io.write(net, tmp_path / "sew.nir")
    graph = nir.read(path)  # NIR's own reader type-checks every edge, merges included
    incoming = {}
    for _, b in graph.edges:
        incoming[b] = incoming.get(b, 0) + 1
    assert incoming["block2_conv1.neuron"] == 3
    back = nir_io.read(path)
    assert [layer.name for layer in back.layers] == [layer.name for layer in net.layers]
    for a, b in zip(net.layers, back.layers):
        assert [c.source for c in a.inputs] == [c.source for c in b.inputs]
        for ca, cb in zip(a.inputs, b.inputs):
            np.testing.assert_array_equal(ca.synapses.weights, cb.synapses.weights)
            assert ca.synapses.weight_exp == cb.synapses.weight_exp
        assert a.neurons.reset == b.neurons.reset and (a.initial is None) == (b.initial is None)
    x = net.input.encode(split.x_test[:30])
    np.testing.assert_array_equal(simulate(net, x).readout_v, simulate(back, x).readout_v)


def _lava_exact(net, split, samples):
    from spikefold.deploy import lava_runner
    from spikefold.deploy.validation import compare

    x = net.input.encode(split.x_test[:samples])
    ref = simulate(net, x, record_state=True)
    assert sum(int(s.sum()) for s in ref.spikes) > 0
    agreement = compare(net, ref, lava_runner.run(net, x, record_state=True))
    assert agreement.exact, agreement.first
    assert agreement.states_differing == 0


@pytest.mark.parametrize("kind,arch", [("atgo", "resnet19"), ("mpinit_trsg", "sew_resnet19")])
def test_residual_runs_exactly_in_lava(residual_models, split, loihi2, tmp_path, kind, arch):
    """Every spike, u and v of every layer: schedules (custom process) with shortcuts; soft reset and initial
    potentials with SEW sums; skips through DelayDense."""
    net, _ = _export(residual_models[kind, arch], split, loihi2)
    _lava_exact(nir_io.read(nir_io.write(net, tmp_path / "m.nir")), split, samples=2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_type_runs_exactly_in_lava_as_a_residual_net(residual_models, split, loihi2, kind, arch):
    net, _ = _export(residual_models[kind, arch], split, loihi2)
    _lava_exact(net, split, samples=8)
