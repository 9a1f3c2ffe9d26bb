"""Training, checkpoints, BatchNorm folding, quantisation and the NIR round trip, on real runs."""

from __future__ import annotations

import copy
import dataclasses

import nir
import numpy as np
import pytest
import torch

from spikefold.core.errors import HardwareRangeError, StateRangeError
from spikefold.export import nir_io
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import simulate
from spikefold.train import checkpoint
from spikefold.train.loop import TrainConfig, evaluate, model_from_checkpoint, train
from spikefold.train.models import ModelConfig
from spikefold.train.neurons import NeuronConfig
from tests import nir_euler


def test_training_reaches_95_percent(trained, split):
    result, _ = trained
    assert result.test_accuracy >= 0.95
    assert evaluate(result.model, split.x_test, split.y_test) == result.test_accuracy


def test_checkpoint_round_trip_and_resume(split, tmp_path):
    cfg = ModelConfig(hidden=(32,), timesteps=2)
    full = train(cfg, TrainConfig(epochs=3, seed=1), split, out=tmp_path / "full")
    # Interrupted (Ctrl-C) after 2 epochs, then resumed from last.pt: the same weights as the full run.
    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, TrainConfig(epochs=3, seed=1), split, out=tmp_path / "resumed", on_epoch=interrupt)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    state = checkpoint.load(tmp_path / "resumed" / "last.pt")
    assert state["epoch"] == 2
    resumed = train(cfg, TrainConfig(epochs=3, seed=1), split, out=tmp_path / "resumed", resume=True)
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    loaded = model_from_checkpoint(tmp_path / "full" / "model.pt")
    for key, value in full.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_bn_folding_equals_unfolded_model(trained, split):
    model = trained[0].model.eval()
    # BN's running statistics must be non-trivial for the test to mean anything.
    assert not torch.allclose(model.hidden[0].bn.running_var, torch.ones_like(model.hidden[0].bn.running_var))
    with torch.no_grad():
        reference = model.double()(torch.as_tensor(split.x_test, dtype=torch.float64)).numpy()
    model.float()
    logits, _ = fold(model).run(split.x_test)
    np.testing.assert_allclose(logits, reference, rtol=1e-9, atol=1e-9)


def test_integer_network_keeps_accuracy(exported, split):
    fnet, net, report = exported
    float_pred = fnet.run(split.x_test)[0].argmax(1)
    int_pred = simulate(net, net.input.encode(split.x_test)).predictions
    assert (int_pred == split.y_test).mean() >= (float_pred == split.y_test).mean() - 0.02
    assert (int_pred == float_pred).mean() >= 0.97
    for layer in report.layers:
        assert 127 < layer.max_abs_weight <= 255, "weights should use the 8-bit range"
        assert layer.headroom_bits >= 1.0, "calibration keeps a bit of headroom"
    weights = [c.synapses.weights for layer in net.layers for c in layer.inputs]
    mixed = [w for w in weights if w.min() < 0 < w.max()]
    assert mixed and all((w % 2 == 0).all() for w in mixed), "mixed-sign weights are stored even"


def test_nir_round_trip(exported, split, tmp_path):
    _, net, _ = exported
    path = nir_io.write(net, tmp_path / "model.nir")
    graph = nir.read(path)  # type-checked by NIR
    assert [type(n).__name__ for n in graph.nodes.values()].count("LIF") == len(net.layers) - 1
    back = nir_io.read(path)
    assert back.timesteps == net.timesteps and back.input == net.input
    for a, b in zip(net.layers, back.layers):
        assert a.name == b.name and a.readout == b.readout and a.scale == b.scale
        assert [c.source for c in a.inputs] == [c.source for c in b.inputs]
        for ca, cb in zip(a.inputs, b.inputs):
            np.testing.assert_array_equal(ca.synapses.weights, cb.synapses.weights)
            assert (ca.synapses.weight_exp, ca.synapses.num_message_bits) == (cb.synapses.weight_exp,
                                                                              cb.synapses.num_message_bits)
        assert (a.neurons.du, a.neurons.dv, a.neurons.vth) == (b.neurons.du, b.neurons.dv, b.neurons.vth)
        np.testing.assert_array_equal(a.neurons.bias_mant, b.neurons.bias_mant)
        np.testing.assert_array_equal(a.neurons.bias_exp, b.neurons.bias_exp)
    # The float graph is the network the integers run: NIR's equations stepped by forward Euler at the dt the
    # file states, on the float test data, predict what the integer simulator predicts (the integer LIF's
    # truncated decay is the only difference).
    outputs = nir_euler.run(graph, split.x_test, net.timesteps, graph.metadata["spikefold.dt"])
    sim = simulate(net, net.input.encode(split.x_test))
    float_logits = np.sum(outputs, axis=0)
    agree = (float_logits.argmax(1) == sim.predictions).mean()
    assert agree >= 0.99, f"the float graph agrees with the integer simulator on only {agree:.2%} of predictions"


def test_unrepresentable_threshold_names_layer_value_and_range(exported, split, loihi2):
    bad = copy.deepcopy(exported[0])
    bad.layers[0].neuron.options.vth = 1e-9
    with pytest.raises(HardwareRangeError, match=r"layer 'hidden0'.*vth = 0.*\[1, 131071\]"):
        quantise(bad, loihi2, split.x_train[:100])


def test_leaks_too_small_for_loihi_name_layer_and_decay(exported, split, loihi2):
    """A decay within 1/8192 of 1 leaks nothing in Loihi's 12-bit units: a named error for the voltage, the
    readout's voltage and the current, never a silently leak-free neuron."""
    def with_change(change):
        bad = copy.deepcopy(exported[0])
        change(bad)
        return bad

    def neuron_decay(bad):
        with torch.no_grad():
            bad.layers[0].neuron.beta_logit.fill_(float(torch.logit(torch.tensor(0.99999, dtype=torch.float64))))

    cases = [(neuron_decay, r"layer 'hidden0': decay 0.99999\d rounds to dv = 0 \(no leak\)"),
             (lambda bad: setattr(bad.layers[-1], "readout_decay", 0.99999),
              r"layer 'readout': readout decay 0.999990 rounds to dv = 0"),
             (lambda bad: setattr(bad.layers[0], "current_decay", 0.99999),
              r"layer 'hidden0': current decay 0.999990 rounds to du \+ 1 = 0")]
    for change, message in cases:
        with pytest.raises(HardwareRangeError, match=message + r".*decay <= 1 - 1/8192"):
            quantise(with_change(change), loihi2, split.x_train[:100])


def test_calibration_overflow_names_layer(exported, split):
    _, net, _ = exported
    hot = dataclasses.replace(net, layers=list(net.layers))
    layer = hot.layers[1]
    hot.layers[1] = dataclasses.replace(layer, inputs=[dataclasses.replace(
        layer.inputs[0], synapses=dataclasses.replace(layer.inputs[0].synapses, weight_exp=7))])
    with pytest.raises(StateRangeError, match=r"layer 'hidden1'.*(wrapped|saturated) \d+ times"):
        check_state_range(hot, hot.input.encode(split.x_train[:200]))


def test_validate_names_out_of_range_parameter(exported, loihi2):
    _, net, _ = exported
    bad = dataclasses.replace(net, layers=list(net.layers))
    first = bad.layers[0].inputs[0]
    bad.layers[0] = dataclasses.replace(bad.layers[0], inputs=[dataclasses.replace(
        first, synapses=dataclasses.replace(first.synapses, weight_exp=9))])
    with pytest.raises(HardwareRangeError, match=r"layer 'hidden0': weight_exp = 9 is outside the hardware range \[-8, 7\]"):
        bad.validate(loihi2)


KINDS = ["lif", "atgo", "agl", "mpinit_trsg", "psg_pda"]
SMALL = {"mlp": dict(arch="mlp", input_shape=(64,), hidden=(24,)),
         "cnn": dict(arch="vgg", input_shape=(1, 8, 8), plan=(4, "A", 8, "A"))}


@pytest.fixture(scope="module")
def every_type(split):
    """One short real training run per neuron type and model."""
    out = {}
    for kind in KINDS:
        for model, arch in SMALL.items():
            options = {"reset": "subtract"} if kind == "lif" and model == "cnn" else {}
            cfg = ModelConfig(timesteps=3, neuron=NeuronConfig(kind, options),
                              norm="tdbn" if kind == "agl" else "bn", **arch)
            out[kind, model] = train(cfg, TrainConfig(epochs=2), split).model
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", list(SMALL))
def test_fold_equals_the_trained_model(every_type, split, kind, model):
    """BatchNorm, pooling, input gains and output scales folded: the same logits as the model."""
    net = every_type[kind, model]
    with torch.no_grad():
        reference = net.double()(torch.as_tensor(split.x_test[:100], dtype=torch.float64)).numpy()
    net.float()
    logits, _ = fold(net).run(split.x_test[:100])
    np.testing.assert_allclose(logits, reference, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", list(SMALL))
def test_every_type_runs_exactly_in_lava(every_type, split, loihi2, kind, model, tmp_path):
    from spikefold.deploy import lava_runner
    from spikefold.deploy.validation import compare

    fnet = fold(every_type[kind, model])
    net, report = quantise(fnet, loihi2, split.x_train)
    check_state_range(net, net.input.encode(split.x_train), report)
    net = nir_io.read(nir_io.write(net, tmp_path / "m.nir"))  # through NIR, as deploy gets it
    x = net.input.encode(split.x_test[:12])
    ref = simulate(net, x)
    assert sum(int(s.sum()) for s in ref.spikes) > 0
    agreement = compare(net, ref, lava_runner.run(net, x))
    assert agreement.exact, agreement.first
    stock = kind in ("agl", "psg_pda") or (kind == "lif" and model == "mlp")
    assert all(lava_runner.lava_process(layer).startswith("stock" if stock else "custom") for layer in net.layers[:-1])
    assert (int_acc := (simulate(net, net.input.encode(split.x_test)).predictions == split.y_test).mean()) > 0.5, int_acc


def test_schedule_longer_than_the_model_is_named(every_type, split, loihi2):
    fnet = fold(every_type["atgo", "mlp"])
    fnet.timesteps = 2  # the neurons keep a 3-step schedule
    with pytest.raises(HardwareRangeError, match=r"layer 'hidden0': its threshold schedule has 3 timesteps but "
                                                 r"the model runs 2"):
        quantise(fnet, loihi2, split.x_train[:50])


def test_weights_beyond_the_exponent_range_are_named(exported, split, loihi2):
    bad = copy.deepcopy(exported[0])
    # A threshold 10**4 times the weights' scale: the 17-bit vth caps the layer scale so low that the 8-bit
    # graded-input weights would need an exponent below -8.
    bad.layers[0].neuron.options.vth = 1e4
    with pytest.raises(HardwareRangeError, match=r"layer 'hidden0': weights span .* weight_exp = -\d+, below the "
                                                 r"hardware range \[-8, 7\]"):
        quantise(bad, loihi2, split.x_train[:100])
