"""`spikefold validate --layers`: each layer run alone in Lava, driven by the spikes the integer sim recorded
for its sources, on a trained CNN and on a residual graph with per-timestep input; a one-unit weight change
fails at its layer; an interrupted run resumes."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from spikefold.deploy import lava_runner
from spikefold.deploy.layerwise import WHOLE_NETWORK_NEURONS, choose_layers
from spikefold.core.errors import ConfigError
from spikefold.export import nir_io
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.intnet import INPUT
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import simulate
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig
from tests.cli_runs import interrupt_once_written, read_report, run_cli
from tests.random_nets import random_input, residual_network




@pytest.fixture(scope="module")
def cnn(split, loihi2, tmp_path_factory) -> Path:
    """A VGG-style CNN trained on 8 x 8 digits (conv 4 maps, 2x2 pooling folded into a 4x4 stride-2 conv of 6
    maps, readout), exported to NIR, with 24 test samples as an .npz file beside it."""
    cfg = ModelConfig(arch="vgg", input_shape=(1, 8, 8), plan=(4, "A", 6), timesteps=3)
    subset = dataclasses.replace(split, x_train=split.x_train[:400], y_train=split.y_train[:400])
    model = train(cfg, TrainConfig(epochs=2, batch_size=32), subset).model
    net, report = quantise(fold(model), loihi2, split.x_train[:300])
    check_state_range(net, net.input.encode(split.x_train[:300]), report)
    folder = tmp_path_factory.mktemp("layerwise")
    np.savez(folder / "x.npz", x=split.x_test[:24], y=split.y_test[:24])
    return nir_io.write(net, folder / "model.nir")


def test_each_layer_alone_equals_the_simulator_with_skips_and_per_timestep_input():
    """A graph where layers read several sources (the input among them) through 0 to 3 steps of synaptic
    delay, binary per-timestep input: every layer run alone, driven by the sim's recorded spikes, gives
    the sim's spikes, u and v."""
    net = residual_network(0, input_bits=1, per_timestep=True)
    x = random_input(net, samples=3, seed=0)
    ref = simulate(net, x, record_state=True)
    assert all(s.any() for s in ref.spikes[:-1])
    for i, layer in enumerate(net.layers):
        inputs = {c.source: x if c.source == INPUT else ref.spikes[net.index(c.source)] for c in layer.inputs}
        got = lava_runner.run_layer(net, i, inputs, record_state=True)
        np.testing.assert_array_equal(got.spikes, ref.spikes[i], err_msg=layer.name)
        np.testing.assert_array_equal(got.u, ref.u[i], err_msg=layer.name)
        np.testing.assert_array_equal(got.v, ref.v[i], err_msg=layer.name)


def test_an_interrupted_layerwise_run_resumes_and_passes(cnn, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["validate", str(cnn), "--data", str(cnn.parent / "x.npz"), "--layers", "each", "--chunk", "12",
            "--states", "--out", str(out)]
    interrupt_once_written(args, out / "chunks" / "chunk-00000-layer-000.npz")
    kept = len(list((out / "chunks").glob("chunk-*.npz")))
    assert 1 <= kept < 6
    code, stdout, _ = run_cli(capsys, *args, "--resume")
    report = read_report(out)
    assert code == 0, stdout
    assert report["mode"] == "layerwise" and report["chunks"]["reused_samples"] == 12 * kept
    assert [(row["name"], row["samples"]) for row in report["layers"]] == [("conv0", 24), ("conv1", 24),
                                                                          ("readout", 24)]
    assert all(row["spikes_compared"] > 0 and row["states_differing"] == 0 for row in report["layers"])
    assert report["layers"][1]["spikes"]["reference_spikes"] and sum(report["layers"][1]["spikes"]["target_spikes"]) > 0
    code, _, err = run_cli(capsys, *args[:5], "conv1", *args[6:], "--resume")
    assert code == 2 and "cannot resume" in err and "layers" in err


def test_one_weight_one_unit_lower_fails_at_its_layer_only(cnn, tmp_path, capsys):
    """A weight of conv1 lowered by one unit where that moves its effective value (Lava's Dense keeps
    mixed-sign weights even, so an even weight is lowered: the odd result is truncated a further unit) and
    some spike on the data. Every layer is driven by the reference's spikes, so only conv1 fails."""
    net = nir_io.read(cnn)
    x = net.input.encode(np.load(cnn.parent / "x.npz")["x"][:12])
    reference = simulate(net, x)
    synapses = net.layers[1].inputs[0].synapses
    changed = copy.deepcopy(net)
    for index in zip(*np.nonzero(synapses.weights % 2 == 0)):
        changed.layers[1].inputs[0].synapses.weights[index] -= 1
        if not np.array_equal(simulate(changed, x).spikes[1], reference.spikes[1]):
            break
        changed.layers[1].inputs[0].synapses.weights[index] += 1
    else:
        raise AssertionError("no weight of conv1 changes a spike")
    assert not np.array_equal(changed.layers[1].inputs[0].synapses.effective_weights(), synapses.effective_weights())
    path = nir_io.write(changed, cnn.parent / "changed.nir")
    np.savez(cnn.parent / "x12.npz", x=np.load(cnn.parent / "x.npz")["x"][:12])
    code, stdout, _ = run_cli(capsys, "validate", path, "--reference", cnn, "--data", cnn.parent / "x12.npz",
                           "--layers", "conv0,conv1", "--out", tmp_path / "changed")
    report = read_report(tmp_path / "changed")
    assert code == 1
    assert report["first_divergence"]["layer"] == "conv1" and "layer 'conv1'" in stdout
    passed = {c["name"]: c["passed"] for c in report["checks"]}
    assert passed == {"spikes conv0": True, "spikes conv1": False}


def test_which_layers_run(cnn, tmp_path, capsys):
    net = nir_io.read(cnn)
    assert choose_layers(net, None) is None  # small: whole
    assert choose_layers(net, "whole") is None
    assert choose_layers(net, "each") == [0, 1, 2]
    assert choose_layers(net, "readout, conv0") == [0, 2]
    big = copy.deepcopy(net)
    big.layers[0].neurons.bias_mant = np.zeros(WHOLE_NETWORK_NEURONS + 1, np.int32)
    assert choose_layers(big, None) == [0, 1, 2]
    with pytest.raises(ConfigError, match="'conv9' is not a layer of the model; name some of: conv0, conv1, readout"):
        choose_layers(net, "conv0,conv9")
    code, _, err = run_cli(capsys, "validate", cnn, "--layers", "each", "--float-model", cnn, "--data",
                        cnn.parent / "x.npz", "--out", tmp_path / "x")
    assert code == 2 and "--float-model" in err and "--layers whole" in err


def test_per_timestep_data_through_nir_and_the_cli(tmp_path, capsys):
    """NIR carries per-timestep input; sim, deploy and validate take (samples, T, features) data for it and
    name what is wrong with any other shape or with graded values for binary event input."""
    net = residual_network(0, input_bits=1, per_timestep=True)
    path = nir_io.write(net, tmp_path / "events.nir")
    back = nir_io.read(path)
    assert back.input == net.input and back.input.per_timestep
    x = random_input(net, samples=4, seed=1)
    np.testing.assert_array_equal(simulate(back, x).readout_v, simulate(net, x).readout_v)
    np.savez(tmp_path / "events.npz", x=x.astype(np.float64), y=np.array([0, 1, 2, 3]))
    code, stdout, _ = run_cli(capsys, "deploy", path, "--data", tmp_path / "events.npz", "--samples", "4")
    assert code == 0 and "4 samples" in stdout
    np.savez(tmp_path / "flat.npz", x=x.reshape(4, -1))
    np.savez(tmp_path / "short.npz", x=x[:, :3])
    np.savez(tmp_path / "graded.npz", x=x / 2)
    for name, message in (("flat", "expected (samples, 4 timesteps, features)"),
                          ("short", "takes input that changes every timestep: (samples, 4 timesteps, features)"),
                          ("graded", "this network takes binary event input")):
        code, _, err = run_cli(capsys, "sim", path, "--data", tmp_path / f"{name}.npz")
        assert code == 2 and message in err, err
