"""The fast simulator: intnet's equations on numpy and torch alike, float products only where exact, Lava's
timing and layer-synchronous timing identical up to the shift, on CPU and (where present) GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikefold.deploy import lava_runner
from spikefold.core.errors import ConfigError
from spikefold.export.intnet import (FLOAT32_EXACT, INPUT, LIF, VTH_NEVER, Connection, Dense, InputEncoding,
                                     IntNetwork, Layer)
from spikefold.export.runner import matmul_plan
from spikefold.sim.simulator import align_to_synchronous, simulate
from tests.random_nets import conv_skip_network, random_input, random_network, residual_network
from tests.same_runs import assert_same_runs

NETWORKS = [dict(seed=s) for s in range(4)] + [dict(seed=s, wild=True) for s in (0, 2, 4)] + [
    dict(seed=7, sizes=(6, 9, 8, 7, 6, 3), timesteps=1), dict(seed=8, timesteps=5)] + [
    dict(seed=s, residual=True) for s in (0, 3)] + [dict(seed=s, conv=True) for s in (0, 1)]


def _network(kwargs: dict) -> IntNetwork:
    kwargs = dict(kwargs)
    if kwargs.pop("conv", False):  # convolutions: on a GPU, intnet's own matrix product rather than torch's
        return conv_skip_network(kwargs["seed"])
    return residual_network(kwargs["seed"]) if kwargs.pop("residual", False) else random_network(**kwargs)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("wild", [False, True])
def test_intnet_equations_agree_on_numpy_and_torch(seed, wild):
    """The one copy of the equations gives the same integers on numpy arrays and torch tensors, wrap-around
    and saturation included (states drawn across the whole 24-bit range and beyond)."""
    net = random_network(seed, wild=wild)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        synapses = layer.inputs[0].synapses
        n, fan_in = layer.size, synapses.shape[1]
        u, v = rng.integers(-(2**24), 2**24, (2, 9, n))
        top = 255 if synapses.num_message_bits else 1
        s = rng.integers(0, top + 1, (9, fan_in))
        w = synapses.effective_weights()
        a_np = synapses.forward(s)
        a_torch = synapses.forward(torch.as_tensor(s), torch.as_tensor(w))
        np.testing.assert_array_equal(a_np, a_torch.numpy())
        step_np = layer.neurons.step(u, v, a_np)
        step_torch = layer.neurons.step(torch.as_tensor(u), torch.as_tensor(v), a_torch,
                                        torch.as_tensor(layer.neurons.effective_bias()))
        for field in step_np._fields:
            np.testing.assert_array_equal(getattr(step_np, field), getattr(step_torch, field).numpy(), err_msg=field)


def _graded_layer_beyond_float32() -> IntNetwork:
    """300 graded inputs at full 8-bit weight: partial sums reach 300 * 255 * 255 > 2**24."""
    weights = np.full((4, 300), 255, np.int32)
    weights[1, ::3] = 254
    hidden = Layer("wide", [Connection(INPUT, Dense(weights, -8, num_message_bits=8))],
                   LIF(du=4095, dv=1024, vth=60000, bias_mant=np.zeros(4, int), bias_exp=np.zeros(4, int)), 1.0)
    readout = Layer("readout", [Connection("wide", Dense(np.full((2, 4), 9, np.int32), 0))],
                    LIF(du=4095, dv=0, vth=VTH_NEVER, bias_mant=np.zeros(2, int), bias_exp=np.zeros(2, int)), 1.0,
                    readout=True)
    return IntNetwork(InputEncoding(300, 255.0, 8), [hidden, readout], timesteps=3)


def test_float_products_only_where_exact_and_float64_beyond():
    net = _graded_layer_beyond_float32()
    wide, readout = matmul_plan(net)
    assert wide.bound == 300 * 255 * 255 > FLOAT32_EXACT and wide.dtype == "float64"
    assert readout.bound == 4 * 9 and readout.dtype == "float32"
    x = np.full((5, 300), 255, np.int64)
    x[:, 0] = 254  # odd sums above 2**24: float32 cannot hold them
    w = net.layers[0].inputs[0].synapses.effective_weights()
    exact = x @ w.T
    assert not np.array_equal((x.astype(np.float32) @ w.T.astype(np.float32)).astype(np.int64), exact), \
        "the case must be one that float32 gets wrong"
    ref = simulate(net, x, record_state=True)
    np.testing.assert_array_equal(ref.u[0][:, 0], net.layers[0].inputs[0].synapses.a_out(exact) << 6)
    got = lava_runner.run(net, x, record_state=True)
    np.testing.assert_array_equal(ref.u[0], got.u[0])
    np.testing.assert_array_equal(ref.readout_v, got.readout_v)


@pytest.mark.parametrize("kwargs", NETWORKS, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()))
def test_lava_timing_equals_synchronous_timing_shifted(kwargs):
    """Lava's timing (one step of delay per Dense, synaptic delays on skip connections, staggered resets)
    and layer-synchronous timing are the same computation: every layer's spikes, u and v agree once shifted
    by the layer's depth."""
    net = _network(kwargs)
    x = random_input(net, samples=9, seed=kwargs["seed"])
    sync = simulate(net, x, record_state=True)
    lava = simulate(net, x, record_state=True, timing="lava")
    T, L, depths = net.timesteps, len(net.layers), net.depths()
    assert lava.spikes[0].shape[1] == T + max(depths)
    for i in range(L):
        window = slice(depths[i], depths[i] + T)
        np.testing.assert_array_equal(lava.spikes[i][:, window], sync.spikes[i])
        np.testing.assert_array_equal(lava.u[i][:, window], sync.u[i])
        np.testing.assert_array_equal(lava.v[i][:, window], sync.v[i])
    aligned = align_to_synchronous(net, lava)
    np.testing.assert_array_equal(aligned.readout_v, sync.readout_v)
    np.testing.assert_array_equal(lava.logits, sync.logits)  # Lava's last step is the readout's last timestep


def test_results_do_not_depend_on_batch_size_or_threads():
    net = random_network(5, wild=True)
    x = random_input(net, samples=23, seed=3)
    ref = simulate(net, x, record_state=True)
    for kwargs in (dict(batch_size=1), dict(batch_size=7), dict(threads=1), dict(batch_size=5, timing="lava")):
        got = simulate(net, x, record_state=True, **kwargs)
        if got.timing == "lava":
            got = align_to_synchronous(net, got)
        else:  # (Lava timing's stats also cover the steps outside each layer's window)
            assert [vars(s) for s in got.stats] == [vars(s) for s in ref.stats]
        assert_same_runs(net, ref, got)


def test_bad_options_are_named_errors():
    net = random_network(1)
    x = random_input(net, samples=2, seed=0)
    with pytest.raises(ConfigError, match="unknown timing 'late'"):
        simulate(net, x, timing="late")
    with pytest.raises(ConfigError, match="unknown device 'tpu0'"):
        simulate(net, x, device="tpu0")
    with pytest.raises(ConfigError, match="batch size must be >= 1"):
        simulate(net, x, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device; use --device cpu"):
            simulate(net, x, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kwargs", NETWORKS, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()))
def test_gpu_equals_cpu(kwargs):
    net = _network(kwargs)
    x = random_input(net, samples=64, seed=kwargs["seed"])
    for timing in ("synchronous", "lava"):
        cpu = simulate(net, x, record_state=True, timing=timing, device="cpu")
        gpu = simulate(net, x, record_state=True, timing=timing, device="cuda")
        assert_same_runs(net, cpu, gpu)
        assert [vars(s) for s in cpu.stats] == [vars(s) for s in gpu.stats]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_float64_layer_and_lava_agree():
    net = _graded_layer_beyond_float32()
    x = np.full((5, 300), 255, np.int64)
    x[:, 0] = 254
    gpu = simulate(net, x, record_state=True, device="cuda")
    got = lava_runner.run(net, x, record_state=True)
    np.testing.assert_array_equal(gpu.u[0], got.u[0])
    np.testing.assert_array_equal(gpu.readout_v, got.readout_v)


@pytest.mark.parametrize("bits", [12, 16, 24])
def test_graded_input_wider_than_a_byte_reaches_the_synapses_whole(bits):
    """Input of 12 to 24 bits, which travels to the device in a 16- or 32-bit integer type rather than int64:
    Lava agrees with the simulator on every spike, u and v."""
    net = random_network(bits, input_bits=bits)
    x = random_input(net, samples=4, seed=bits)
    assert x.max() >= 1 << (bits - 1), "the input's top bit must be used"
    assert_same_runs(net, lava_runner.run(net, x, record_state=True), simulate(net, x, record_state=True))
