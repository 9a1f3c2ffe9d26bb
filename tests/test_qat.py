"""Quantisation-aware fine-tuning: its forward is the integer network, to the integer; its straight-through
backward reaches every weight and bias; fine-tuning recovers what coarse weights lost; the result is the
network the last forward ran."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikefold.core.errors import ConfigError, HardwareRangeError
from spikefold.export import nir_io
from spikefold.export.quantise import quantise
from spikefold.export.qat import IntegerForward, finetune
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import simulate
from tests.random_nets import conv_network, featured_network, random_input, residual_network


def _readout(model: IntegerForward, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy().astype(np.int64)


@pytest.mark.parametrize("build", [featured_network, residual_network, conv_network],
                         ids=["schedules-resets-initial", "skips", "conv"])
def test_integer_forward_is_the_integer_network(build, loihi2):
    """Readout voltages equal the simulator's for every sample, whatever the network uses."""
    net = build(1)
    x = random_input(net, samples=16, seed=3)
    model = IntegerForward(net, loihi2)
    np.testing.assert_array_equal(_readout(model, x), simulate(net, x).readout_v[:, -1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_integer_forward_on_gpu_is_the_integer_network(loihi2):
    for net in (residual_network(1), conv_network(1)):
        x = random_input(net, samples=32, seed=3)
        model = IntegerForward(net, loihi2).to("cuda")
        with torch.no_grad():
            voltage = model(torch.as_tensor(x, device="cuda")).cpu().numpy().astype(np.int64)
        np.testing.assert_array_equal(voltage, simulate(net, x).readout_v[:, -1])


def test_gradients_reach_every_weight_and_bias(exported, split, loihi2):
    _, net, _ = exported
    model = IntegerForward(net, loihi2)
    x = torch.as_tensor(net.input.encode(split.x_train[:64]))
    logits = model(x) / (net.readout.scale * net.timesteps)
    torch.nn.functional.cross_entropy(logits, torch.as_tensor(split.y_train[:64])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_finetuning_recovers_what_three_bit_weights_lost(exported, split, loihi2):
    """Three-bit weights (Lava's num_weight_bits = 3: multiples of 64) cost the float model accuracy; two epochs
    through the integer forward win it back. The returned network is exactly what the last forward ran, keeps
    every scale, exponent and threshold export chose, and stays in range."""
    fnet = exported[0]
    net, _ = quantise(fnet, loihi2, split.x_train, weight_bits=3)
    x_test = net.input.encode(split.x_test)
    before = (simulate(net, x_test).predictions == split.y_test).mean()
    result = finetune(fnet, net, loihi2, split.x_train, split.y_train, epochs=2)
    tuned = result.net
    after = (simulate(tuned, x_test).predictions == split.y_test).mean()
    float_acc = (fnet.run(split.x_test)[0].argmax(1) == split.y_test).mean()
    assert before < float_acc - 0.02, "three-bit weights must lose accuracy for this test to mean anything"
    assert after >= before + 0.02, (before, after)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    tuned.validate(loihi2)
    check_state_range(tuned, tuned.input.encode(split.x_train))
    for a, b in zip(net.layers, tuned.layers):
        assert (a.scale, a.neurons.vth, a.neurons.dv) == (b.scale, b.neurons.vth, b.neurons.dv)
        np.testing.assert_array_equal(a.neurons.bias_exp, b.neurons.bias_exp)
        for ca, cb in zip(a.inputs, b.inputs):
            assert ca.synapses.weight_exp == cb.synapses.weight_exp and cb.synapses.num_weight_bits == 3
            assert (cb.synapses.weights % 32 == 0).all(), "three-bit weights are multiples of 32 (64 if mixed)"
    assert any((ca.synapses.weights != cb.synapses.weights).any()
               for a, b in zip(net.layers, tuned.layers) for ca, cb in zip(a.inputs, b.inputs))
    np.testing.assert_array_equal(_readout(IntegerForward(tuned, loihi2), x_test[:50]),
                                  simulate(tuned, x_test[:50]).readout_v[:, -1])


def test_bad_options_are_named(exported, split, loihi2):
    fnet, net, _ = exported
    with pytest.raises(ConfigError, match="QAT epochs must be >= 1"):
        finetune(fnet, net, loihi2, split.x_train, split.y_train, epochs=0)
    with pytest.raises(ConfigError, match="QAT needs lr > 0"):
        finetune(fnet, net, loihi2, split.x_train, split.y_train, lr=-1.0)


def test_weight_bits_outside_the_hardware_range_are_named(exported, split, loihi2):
    with pytest.raises(HardwareRangeError, match=r"weight bits = 9 is outside loihi2's range \[1, 8\]"):
        quantise(exported[0], loihi2, split.x_train[:50], weight_bits=9)


def test_cli_export_with_coarse_weights_and_qat(trained, capsys, tmp_path):
    from spikefold.cli import main

    checkpoint = trained[1] / "model.pt"
    out = tmp_path / "qat.nir"
    assert main(["export", str(checkpoint), "--out", str(out), "--weight-bits", "3", "--qat-epochs", "1"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "QAT, 1 epochs: integer test accuracy" in printed
    net = nir_io.read(out)
    assert all(c.synapses.num_weight_bits == 3 for layer in net.layers for c in layer.inputs)
    assert main(["export", str(checkpoint), "--out", str(out), "--qat-epochs", "1", "--qat-lr", "-1"]) == 2
    assert "--qat-lr > 0" in capsys.readouterr().err
