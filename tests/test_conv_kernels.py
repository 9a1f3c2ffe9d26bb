"""Convolutions stay kernels end to end, and compute what the dense matrix they stand for computes.

The reference everywhere is built here, independently of ``spikefold.export.intnet``: the convolution unrolled
into its (out C*H*W, in C*H*W) matrix by loops over output and kernel positions, with Lava's own weight rules
(``lava.utils.weightutils``) applied to that matrix, which is exactly how Lava's stock Dense runs it. Networks
with every convolution replaced by that matrix are the formulation spikefold used before convolutions stayed
kernels; the kernel path must give the same integers, in the simulator and in Lava."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from spikefold.deploy import lava_runner
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export import intnet
from spikefold.export.intnet import Conv2d, Dense, IntNetwork
from spikefold.export.state_range import check_state_range
from spikefold.export.runner import matmul_plan
from spikefold.sim.simulator import simulate
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig, batchnorm_from_data
from tests.random_nets import conv_skip_network, random_input
from tests.same_runs import assert_same_runs


def _unrolled(conv: Conv2d) -> np.ndarray:
    """The raw (unclipped) kernel as the matrix mapping (C, H, W)-ordered inputs to outputs, zero padding."""
    c_in, h, w = conv.input_shape
    c_out, ho, wo = conv.output_shape
    kernel = np.asarray(conv.weights, np.int64)
    kh, kw = kernel.shape[2:]
    m = np.zeros((c_out, ho, wo, c_in, h, w), np.int64)
    for y in range(ho):
        for x in range(wo):
            for i in range(kh):
                for j in range(kw):
                    yy, xx = y * conv.stride + i - conv.padding, x * conv.stride + j - conv.padding
                    if 0 <= yy < h and 0 <= xx < w:
                        m[:, y, x, :, yy, xx] = kernel[:, :, i, j]
    return m.reshape(c_out * ho * wo, c_in * h * w)


def _lava_kept(matrix: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """What Lava's Dense keeps of a weight matrix, by Lava's own functions."""
    from spikefold.deploy.lava_compat import ensure_lava

    ensure_lava()
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    mode = determine_sign_mode(matrix)
    return truncate_weights(clip_weights(matrix, mode, num_bits=8), mode, num_weight_bits).astype(np.int64)


def _as_dense(net: IntNetwork) -> IntNetwork:
    """``net`` with every convolution replaced by its unrolled matrix (the raw weights: Lava clips them)."""
    dense = copy.deepcopy(net)
    for layer in dense.layers:
        for c in layer.inputs:
            if isinstance(c.synapses, Conv2d):
                syn = c.synapses
                c.synapses = Dense(_unrolled(syn).astype(np.int32), syn.weight_exp, syn.num_weight_bits,
                                   syn.num_message_bits)
    return dense


GEOMETRIES = [  # (c_in, c_out, input h, w, kernel, stride, padding)
    (1, 4, 6, 6, 3, 1, 1), (3, 5, 7, 9, 3, 2, 1), (2, 3, 8, 8, 4, 2, 2), (4, 2, 5, 5, 1, 1, 0), (2, 6, 9, 7, 5, 3, 2),
]


@pytest.mark.parametrize("sign", ["mixed", "excitatory", "inhibitory"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_convolution_equals_the_unrolled_matrix(geometry, sign, monkeypatch):
    """Stride, padding, sizes that do not divide evenly, odd weights in every sign mode, 6 to 8 weight bits,
    graded and binary input: numpy and torch (float32 and float64) give the unrolled matrix's integers."""
    c_in, c_out, h, w, k, stride, padding = geometry
    rng = np.random.default_rng(hash((geometry, sign)) % 2**32)
    kernel = rng.integers(-300, 300, size=(c_out, c_in, k, k))  # beyond 8 bits too: Lava clips
    kernel = {"mixed": kernel, "excitatory": np.abs(kernel), "inhibitory": -np.abs(kernel)}[sign]
    for bits, graded in ((8, True), (7, False), (6, True)):
        conv = Conv2d(kernel.astype(np.int32), weight_exp=int(rng.integers(-3, 4)), num_weight_bits=bits,
                      num_message_bits=8 if graded else 0, input_shape=(c_in, h, w), stride=stride, padding=padding)
        s = rng.integers(0, 256 if graded else 2, size=(5, c_in * h * w))
        acc = s @ _lava_kept(_unrolled(conv), bits).T
        expected = acc << conv.weight_exp if conv.weight_exp >= 0 else acc >> -conv.weight_exp
        assert np.abs(expected).max() < 2**31  # no wrap-around here: Lava's wrap is checked against Lava below
        np.testing.assert_array_equal(conv.forward(s), expected)
        for dtype in (torch.float32, torch.float64):
            kernel_t = torch.as_tensor(conv.effective_weights(), dtype=dtype)
            np.testing.assert_array_equal(conv.forward(torch.as_tensor(s), kernel_t).numpy(), expected)
            # the GPU's form (one matrix product per chunk of samples), here on the CPU: 5 samples in 1 or 3 chunks
            maps = torch.as_tensor(s, dtype=dtype).reshape(5, c_in, h, w)
            per_sample = int(np.prod(conv.output_shape[1:])) * c_in * k * k
            for samples in (5, 2):
                monkeypatch.setattr(intnet, "WINDOW_VALUES", samples * per_sample)
                for array in (torch.as_tensor, np.asarray):  # the form GPU tensors and numpy arrays take
                    got = conv.correlate(array(maps), array(kernel_t))
                    np.testing.assert_array_equal(np.asarray(got).astype(np.int64), acc)
                    assert conv.correlate(array(maps[:0]), array(kernel_t)).shape == (0, acc.shape[1])


def test_partial_sums_beyond_float32_run_in_float64():
    """A kernel whose sums pass 2**24 (graded input, 32 channels x 3 x 3 at full weight) is summed in
    float64, exactly, where float32 would round."""
    rng = np.random.default_rng(3)
    kernel = np.full((2, 32, 3, 3), 255, np.int32)
    kernel[0, ::2, 0, 0] = 253
    conv = Conv2d(kernel, weight_exp=-6, num_message_bits=8, input_shape=(32, 4, 4), stride=1, padding=1)
    assert conv.partial_sum_bound() == 32 * 9 * 255 * 255 > 2**24
    assert conv.exact_weights().dtype == np.float64
    s = rng.integers(250, 256, size=(3, 32 * 16))
    exact = s @ _lava_kept(_unrolled(conv), 8).T
    f32 = torch.nn.functional.conv2d(torch.as_tensor(s, dtype=torch.float32).reshape(3, 32, 4, 4),
                                     torch.as_tensor(conv.effective_weights(), dtype=torch.float32), padding=1)
    assert not np.array_equal(f32.flatten(1).numpy().astype(np.int64), exact), "float32 must get this case wrong"
    np.testing.assert_array_equal(conv.accumulate(s).astype(np.int64), exact)
    np.testing.assert_array_equal(conv.forward(s), exact >> 6)


@pytest.mark.parametrize("seed", range(2))
def test_convolutions_with_skips_pooling_and_delays_run_exactly_in_lava(seed):
    """Stride, padding, a pooled kernel, convolutions summed at one layer, the graded input reaching a deep
    layer, synaptic delays on convolutions, schedules, resets and initial potentials: the simulator, the same
    network with unrolled matrices, and Lava (spikefold's ConvSynapses) agree on every spike, u and v."""
    net = conv_skip_network(seed)
    conv_delays = [net.delay(i, c) for i, layer in enumerate(net.layers) for c in layer.inputs
                   if isinstance(c.synapses, Conv2d)]
    assert sorted(set(conv_delays)) == [0, 1, 2]
    x = random_input(net, samples=4, seed=seed)
    ref = simulate(net, x, record_state=True)
    assert all(s.any() for s in ref.spikes[:-1]), "every convolution layer must spike"
    assert_same_runs(net, ref, simulate(_as_dense(net), x, record_state=True))
    assert_same_runs(net, ref, lava_runner.run(net, x, record_state=True))
    lava_timing = simulate(net, x, timing="lava", batch_size=3)
    assert lava_timing.spikes[0].shape[1] == net.timesteps + max(net.depths())


def _briefly_trained(cfg: ModelConfig, split) -> nn.Module:
    """A few real optimiser steps, then BatchNorm statistics set to the data's own, so every layer spikes."""
    subset = dataclasses.replace(split, x_train=split.x_train[:160], y_train=split.y_train[:160])
    return batchnorm_from_data(train(cfg, TrainConfig(epochs=1, batch_size=32, seed=2), subset).model,
                                 subset.x_train)


@pytest.mark.parametrize("arch", ["vgg", pytest.param("sew_resnet19", marks=pytest.mark.slow)])
def test_digits_cnn_and_sew_net_match_the_unrolled_formulation(split, loihi2, arch):
    """The digits CNN (2x2 pooling folded into the next kernel) and the SEW residual net (1/16 width),
    exported with streamed calibration: the kernel path gives the unrolled formulation's integers and spikes,
    and Lava runs the CNN's kernels (ConvSynapses) to the same integers. The SEW net is slow (training it takes
    minutes on the shared machine); its kernels run in Lava in test_residual.py's fast tests."""
    cfg = ModelConfig(arch=arch, input_shape=(1, 8, 8), timesteps=2, width=1 / 16,
                      plan=(8, "A", 16, "A") if arch == "vgg" else None)
    fnet = fold(_briefly_trained(cfg, split))
    calibration = split.x_train[:200]
    net, report = quantise(fnet, loihi2, calibration)
    stats = check_state_range(net, net.input.encode(calibration), report, batch_size=16)  # streamed
    assert [s.max_abs_v for s in stats] == [entry.max_abs_v for entry in report.layers]
    assert sum(isinstance(c.synapses, Conv2d) for layer in net.layers for c in layer.inputs) >= 2
    if arch == "vgg":
        assert any(c.synapses.stride == 2 and c.synapses.weights.shape[2] == 6
                   for layer in net.layers for c in layer.inputs if isinstance(c.synapses, Conv2d))
    x = net.input.encode(split.x_test[:3])
    ref = simulate(_as_dense(net), x, record_state=True)
    assert all(s.any() for s in ref.spikes[:-1]), "every layer must spike"
    assert_same_runs(net, ref, simulate(net, x, record_state=True))
    if arch == "vgg":
        assert_same_runs(net, ref, lava_runner.run(net, x, record_state=True))
    assert all(p.dtype == "float32" for p in matmul_plan(net))
