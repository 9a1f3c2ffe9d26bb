"""NeuroBench 2.3.0 itself (optional test extra) on spikefold's float models agrees with spikefold's count of
its metrics: Effective_MACs (graded input) and Effective_ACs (spikes), non-zero weights only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikefold.export.intnet import Conv2d, Dense
from spikefold.sim.energy import nonzero_fan
from spikefold.train.models import ModelConfig, build_model

neurobench_models = pytest.importorskip(
    "neurobench.models", reason="NeuroBench (the neurobench extra) is not installed; `make test` installs it")
from neurobench.hooks.layer import LayerHook  # noqa: E402
from neurobench.metrics.workload import SynapticOperations  # noqa: E402


def _spikefold_counts(model, x) -> tuple[float, float]:
    """(MACs, ACs) per sample from what each connection layer received, counted spikefold's way."""
    seen = []
    handles = [layer.register_forward_pre_hook(lambda m, args: seen.append((m, args[0].detach())))
               for layer in model.modules() if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    macs = acs = 0.0
    for layer, inputs in seen:
        w = layer.weight.detach().numpy()
        if isinstance(layer, torch.nn.Conv2d):
            geometry = Conv2d(w, 0, input_shape=tuple(inputs.shape[-3:]), stride=layer.stride[0],
                              padding=layer.padding[0])
            sent = (inputs != 0).reshape(-1, int(np.prod(inputs.shape[-3:]))).sum(0).numpy()
        else:
            geometry = Dense(w, 0)
            sent = (inputs != 0).reshape(-1, inputs.shape[-1]).sum(0).numpy()
        ops = float(sent @ nonzero_fan(geometry, w)) / len(x)
        spiking = bool(((inputs == 0) | (inputs == 1)).all())
        acs, macs = (acs + ops, macs) if spiking else (acs, macs + ops)
    return macs, acs


@pytest.mark.parametrize("cfg", [
    ModelConfig(arch="mlp", input_shape=(20,), hidden=(16, 12), timesteps=3),
    ModelConfig(arch="vgg", input_shape=(2, 6, 6), plan=(4, 5), timesteps=3)], ids=["mlp", "cnn"])
def test_neurobench_synaptic_operations_equal_spikefolds(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # zero some weights: NeuroBench counts only non-zero ones, and so must spikefold
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(torch.rand_like(p) > 0.3).mul_(4.0)
    x = torch.rand(5, int(np.prod(cfg.input_shape)))
    x[:, ::3] = 0  # zero inputs are no operation
    wrapped = neurobench_models.TorchModel(model)
    wrapped.connection_hooks = [LayerHook(layer) for layer in wrapped.connection_layers()]
    with torch.no_grad():
        preds = wrapped(x)
    theirs = SynapticOperations()(wrapped, preds, (x, None))
    macs, acs = _spikefold_counts(model, x)
    assert acs > 0 and macs > 0
    # The float model computes the static input's first layer once, not per timestep, so NeuroBench counts its
    # MACs once; the integer network receives the input every step, and spikefold's report counts them T times.
    assert theirs["Effective_MACs"] == pytest.approx(macs)
    assert theirs["Effective_ACs"] == pytest.approx(acs)
