"""Real networks trained for a few optimiser steps, for tests that need trained weights but not accuracy."""

from __future__ import annotations

import torch
from torch import nn

from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig


def train_briefly(cfg: ModelConfig, split) -> nn.Module:
    """One epoch over ``split``'s training samples in batches of 32, then BatchNorm recalibration, in eval mode.

    After so few steps BatchNorm's running statistics (momentum 0.1) are far from what a deep network actually
    computes, and it falls silent in eval mode; one pass in training mode with momentum 1 sets them to the data's
    own, so every layer is active and the checks on it mean something."""
    model = train(cfg, TrainConfig(epochs=1, batch_size=32, seed=1), split).model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    with torch.no_grad():
        model(torch.as_tensor(split.x_train, dtype=torch.float32))
    return model.eval()
