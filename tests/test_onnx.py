"""The integer network as ONNX, run in onnxruntime's CPU provider: every spike of every layer and every readout
voltage equal to spikefold's simulator, on trained networks (digits MLP, a small CNN, a residual net) and on
random ones that wrap, saturate and use every neuron feature."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from spikefold.cli import main
from spikefold.core.errors import ExportFormatError
from spikefold.export import nir_io, onnx_io
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.intnet import Dense
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import simulate
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig, batchnorm_from_data
from spikefold.train.neurons import NeuronConfig
from tests.random_nets import conv_network, featured_network, random_input, random_network, residual_network

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed; `make test` installs the onnx extra")


def run_onnx(model_bytes: bytes, x_int: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.asarray(x_int, np.int64)})


def assert_onnx_equals_simulator(net, x_int: np.ndarray) -> None:
    outputs = run_onnx(onnx_io.to_bytes(net), x_int)
    sim = simulate(net, x_int)
    assert len(outputs) == len(net.layers) + 1
    for layer, spikes, expected in zip(net.layers, outputs, sim.spikes):
        assert spikes.dtype == bool
        np.testing.assert_array_equal(spikes, expected, err_msg=f"spikes of {layer.name}")
    assert outputs[-1].dtype == np.int64
    np.testing.assert_array_equal(outputs[-1], sim.readout_v, err_msg="readout voltage")
    assert sum(int(s.sum()) for s in sim.spikes) > 0, "the network must fire for the check to mean something"


def test_onnx_digits_mlp_equals_simulator(exported, split, tmp_path):
    """The trained digits MLP, through its NIR file as the CLI reads it, then ONNX."""
    _, net, _ = exported
    net = nir_io.read(nir_io.write(net, tmp_path / "m.nir"))
    assert_onnx_equals_simulator(net, net.input.encode(split.x_test[:64]))


@pytest.fixture(scope="module")
def small_trained(split):
    """A small CNN (two convolutions, each followed by 2x2 average pooling that export folds into the next
    kernel) and a SEW-ResNet-19 at 1/16 width, each a few real optimiser steps on digits, BatchNorm statistics
    set from the data (spikefold.train.models.batchnorm_from_data)."""
    subset = dataclasses.replace(split, x_train=split.x_train[:256], y_train=split.y_train[:256])
    configs = {
        "cnn": ModelConfig(arch="vgg", input_shape=(1, 8, 8), plan=(4, "A", 8, "A"), timesteps=3),
        "sew_resnet19": ModelConfig(arch="sew_resnet19", input_shape=(1, 8, 8), width=1 / 16, timesteps=2,
                                    neuron=NeuronConfig("mpinit_trsg")),
    }
    return {name: batchnorm_from_data(train(cfg, TrainConfig(epochs=1, batch_size=32, seed=1), subset).model,
                                        subset.x_train) for name, cfg in configs.items()}


@pytest.mark.slow  # about 90 s on 2 shared cores, mostly training; the fast suite covers both graph shapes
@pytest.mark.parametrize("name", ["cnn", "sew_resnet19"])  # with random integers (test_onnx_fixed_point_corner_cases)
def test_onnx_trained_cnn_and_residual_equal_simulator(small_trained, split, loihi2, name):
    """Convolutions (pooling folded in), shortcuts that skip layers, MP-Init's initial potential and TrSG's
    subtractive reset: onnxruntime's spikes and readout equal the simulator's."""
    net, report = quantise(fold(small_trained[name]), loihi2, split.x_train[:256])
    check_state_range(net, net.input.encode(split.x_train[:256]), report)
    if name == "sew_resnet19":
        assert any(len(layer.inputs) > 1 for layer in net.layers), "a residual graph has layers with several inputs"
    assert_onnx_equals_simulator(net, net.input.encode(split.x_test[:32]))


CORNER_CASES = {  # name: (network, whether its currents wrap and voltages saturate on random input)
    "random": (lambda: random_network(1), False),
    "wrapping": (lambda: random_network(2, wild=True), True),
    "scheduled-subtract-initial": (lambda: featured_network(3), False),
    "residual": (lambda: residual_network(4), False),
    "conv": (lambda: conv_network(5), False),
    "per-timestep-binary-input": (lambda: random_network(6, input_bits=1, per_timestep=True), False),
    "per-timestep-graded-input": (lambda: random_network(7, per_timestep=True), False),
}


@pytest.mark.parametrize("case", list(CORNER_CASES))
def test_onnx_fixed_point_corner_cases(case):
    """Odd mixed-sign weights, negative exponents, currents that wrap at 24 bits and voltages that saturate,
    per-timestep thresholds, subtractive resets, initial potentials, skip connections, convolutions, input
    that changes every timestep (binary events and graded)."""
    build, overflows = CORNER_CASES[case]
    net = build()
    x = random_input(net, 12, seed=9)
    if overflows:
        stats = simulate(net, x).stats
        assert sum(st.u_wraps for st in stats) > 0 and sum(st.v_saturations for st in stats) > 0
    assert_onnx_equals_simulator(net, x)


def test_onnx_refuses_synapses_it_has_no_form_for(tmp_path):
    """A synapse class the exporter does not know is named, not silently exported as a Dense."""

    @dataclasses.dataclass
    class Sparse(Dense):
        pass

    net = random_network(1)
    first = net.layers[0].inputs[0]
    net.layers[0].inputs[0] = dataclasses.replace(first, synapses=Sparse(**dataclasses.asdict(first.synapses)))
    with pytest.raises(ExportFormatError, match="layer 'layer0': synapses of type Sparse have no ONNX form"):
        onnx_io.write(net, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_cli_convert_writes_onnx_and_netx(exported, tmp_path):
    """`spikefold convert` from a NIR file: ONNX that runs to the simulator's readout; netx refused by name
    (the loihi2 export uses negative weight exponents), exit status 2, no file left."""
    _, net, _ = exported
    assert any(c.synapses.weight_exp < 0 for layer in net.layers for c in layer.inputs)
    nir_path = nir_io.write(net, tmp_path / "m.nir")
    assert main(["convert", str(nir_path), str(tmp_path / "m.onnx")]) == 0
    x = random_input(net, 4, seed=2)
    outputs = run_onnx((tmp_path / "m.onnx").read_bytes(), x)
    np.testing.assert_array_equal(outputs[-1], simulate(net, x).readout_v)
    assert main(["convert", str(nir_path), str(tmp_path / "m.h5"), "--to", "netx"]) == 2
    assert not (tmp_path / "m.h5").exists()
