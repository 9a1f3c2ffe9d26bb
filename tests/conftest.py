"""Shared fixtures: one small real training run and its export, reused across the suite."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the fused neuron kernels (spikefold.train.kernels) run on Triton's CPU interpreter, so that
# tests/test_kernels.py checks their logic here too. Triton reads this when the kernels are first imported;
# nothing else in the suite uses Triton, and layers choose the kernels on CPU only when asked to ("triton").
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from spikefold.export import hw_config
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.state_range import check_state_range
from spikefold.train.data import digits
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig


@pytest.fixture(scope="session")
def split():
    return digits()


@pytest.fixture(scope="session")
def trained(split, tmp_path_factory):
    """A real digits MLP (smaller than the demo's, same recipe), with its checkpoint folder."""
    out = tmp_path_factory.mktemp("trained")
    result = train(ModelConfig(hidden=(64, 48), timesteps=4), TrainConfig(epochs=12), split, out=out)
    return result, out


@pytest.fixture(scope="session")
def loihi2():
    return hw_config.load("loihi2")


@pytest.fixture(scope="session")
def exported(trained, split, loihi2):
    """The trained model folded, quantised and range-checked: (float network, integer network, report)."""
    fnet = fold(trained[0].model)
    net, report = quantise(fnet, loihi2, split.x_train)
    check_state_range(net, net.input.encode(split.x_train), report)
    net.metadata["dataset"] = "digits"
    return fnet, net, report
