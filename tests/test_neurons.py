"""The five neuron types reproduce the numbers their papers state (../shared/docs/seed-methods.md)."""

from __future__ import annotations

import math

import pytest
import torch

from spikefold.core.errors import ConfigError
from spikefold.train import surrogates
from spikefold.train.neurons import NeuronConfig, build
from spikefold.train.probes import ActivityProbe


def gaussian(n: int, mu: float, sigma: float) -> torch.Tensor:
    """n evenly spaced quantiles of N(mu, sigma^2): a deterministic Gaussian sample."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (mu + sigma * torch.special.ndtri(p)).float()


class _Windows:
    """Records what a neuron reports at each timestep (the probe interface)."""

    def __init__(self):
        self.width, self.threshold = {}, {}

    def observe(self, name, t, potential, spikes, threshold, window):
        self.width[t], self.threshold[t] = float(window), float(threshold)


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (3.0, 0.2), (-2.0, 5.0), (0.7, 0.05)])
def test_atgo_fires_15_87_percent_of_gaussian_input(mu, sigma):
    neuron = build(NeuronConfig("atgo"), timesteps=1).train()
    spikes = neuron(gaussian(200_000, mu, sigma).reshape(1, 1, -1)).detach()
    assert float(spikes.mean()) * 100 == pytest.approx(15.87, abs=0.2)


@pytest.mark.parametrize("sigma,fixed,tgo", [(0.5, 47.72, 26.00), (1.0, 24.17, 24.17), (2.0, 12.10, 21.30)])
def test_tgo_window_shares(sigma, fixed, tgo):
    """mu = 0, so the adaptive threshold mean + std equals sigma; the share of U inside the window."""
    shares = {}
    for variant in ("off", "threshold"):
        neuron = build(NeuronConfig("atgo", {"tgo": variant}), timesteps=1).train()
        probe = ActivityProbe()
        with probe.attached(neuron):
            neuron(gaussian(400_000, 0.0, sigma).reshape(1, 1, -1))
        shares[variant] = probe.summary()[""]["window_share_mean"] * 100
    assert shares["off"] == pytest.approx(fixed, abs=0.1)
    assert shares["threshold"] == pytest.approx(tgo, abs=0.1)


def test_tgo_code_variant_uses_std():
    neuron = build(NeuronConfig("atgo", {"tgo": "std"}), timesteps=1).train()
    rec = neuron.probe = _Windows()
    neuron(gaussian(10_000, 5.0, 2.0).reshape(1, 1, -1))
    assert rec.width[0] == pytest.approx(1 + math.tanh(2.0 - 1.0), rel=1e-4)  # dV = std = 2, not thr = 7


def test_agl_widths_at_initialisation():
    neuron = build(NeuronConfig("agl"), timesteps=3).train()
    bn = torch.nn.BatchNorm1d(16)  # gamma = 1
    neuron.bind_norm(bn)
    rec = neuron.probe = _Windows()
    neuron(torch.randn(3, 8, 16))
    assert rec.width[0] == pytest.approx(1.0, abs=1e-6)
    assert rec.width[1] == pytest.approx(1.0198, abs=1e-4) and rec.width[2] == pytest.approx(1.0198, abs=1e-4)
    assert rec.threshold[0] == 0.5


def _trsg_gradient(vthr: float, relative: bool, shape: str) -> torch.Tensor:
    """dO/dM at M = c * Vthr for a grid of relative positions c."""
    neuron = build(NeuronConfig("mpinit_trsg", {"vthr": vthr, "relative": relative, "surrogate": shape,
                                                "mp_init": False}), timesteps=1).train()
    c = torch.linspace(0.2, 1.8, 33)
    tau = 1.0 / float(neuron.inv_tau)
    current = (c * vthr * tau).reshape(1, 1, -1).requires_grad_()
    neuron(current).sum().backward()
    return current.grad.flatten() * tau  # dO/dI = dO/dM * dM/dI, dM/dI = 1/tau


@pytest.mark.parametrize("shape", surrogates.SHAPES)
def test_trsg_gradient_independent_of_threshold(shape):
    grads = [_trsg_gradient(v, True, shape) for v in (0.1, 0.5, 1.0, 1.5, 2.0)]
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-4, atol=1e-6)
    absolute = [_trsg_gradient(v, False, shape) for v in (0.1, 0.5, 1.0, 1.5, 2.0)]
    assert not torch.allclose(absolute[0], absolute[-1], rtol=1e-2)


@pytest.mark.parametrize("vthr", [1.0, 2.0])
def test_mp_init_settles_near_half_threshold_with_subtractive_reset(vthr):
    torch.manual_seed(0)
    neuron = build(NeuronConfig("mpinit_trsg", {"vthr": vthr, "reset": "subtract"}), timesteps=8).train()
    drive = (torch.rand(1, 4096) * 2 * vthr).expand(8, 4096).contiguous()
    with torch.no_grad():
        for _ in range(150):
            neuron(drive)
    assert float(neuron.initial_potential) == pytest.approx(vthr / 2, abs=0.1 * vthr)


def test_mp_init_starts_every_sample_at_the_running_mean():
    neuron = build(NeuronConfig("mpinit_trsg"), timesteps=1).eval()
    neuron.initial_potential.fill_(0.4)
    rec = ActivityProbe(bins=10, lo=0.0, hi=1.0)
    with rec.attached(neuron):
        neuron(torch.zeros(1, 2, 3))  # no input: M = (1 - 1/tau) * 0.4 = 0.2
    counts = rec.summary()[""]["histogram"]["counts"][0]
    assert counts[2] == 6  # every potential / threshold in [0.2, 0.3)


def test_psg_width_learns_and_forward_is_exactly_heaviside():
    neuron = build(NeuronConfig("psg_pda", {"pda_weight": 0.1}), timesteps=2).train()
    x = torch.randn(2, 4, 32, requires_grad=True)
    out = neuron(x)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert neuron.auxiliary_loss is not None and float(neuron.auxiliary_loss) > 0
    (out.sum() + neuron.auxiliary_loss).backward()
    assert neuron.width_raw.grad is not None and float(neuron.width_raw.grad.abs()) > 0


def test_psg_pda_regulariser_pulls_towards_target():
    """Gradient descent on the PDA term alone moves the potentials' Gaussian fit towards the target."""
    neuron = build(NeuronConfig("psg_pda", {"pda_weight": 1.0, "target_mean": 0.5, "target_std": 0.5}),
                   timesteps=1).train()
    current = (torch.randn(1, 64, 64) * 3 + 2).requires_grad_()
    opt = torch.optim.Adam([current], lr=0.1)
    losses = []
    for _ in range(150):
        neuron(current)
        loss = neuron.auxiliary_loss
        losses.append(float(loss))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.05 * losses[0]
    assert float(current.mean()) == pytest.approx(0.5, abs=0.1)


def test_bad_neuron_configs_name_what_is_valid():
    with pytest.raises(ConfigError, match=r"unknown neuron type 'izhikevich'; valid: lif, atgo, agl, mpinit_trsg"):
        build(NeuronConfig("izhikevich"), 4)
    with pytest.raises(ConfigError, match=r"neuron 'lif' has no option\(s\) \['tgo'\]; valid options: .*reset"):
        build(NeuronConfig("lif", {"tgo": "std"}), 4)
    with pytest.raises(ConfigError, match=r"surrogate = 'rectangular' is not valid; choose one of: sigmoid, arctan"):
        build(NeuronConfig("psg_pda", {"surrogate": "rectangular"}), 4)
    with pytest.raises(ConfigError, match=r"reset = 'partial' is not valid; choose one of: zero, subtract"):
        build(NeuronConfig("mpinit_trsg", {"reset": "partial"}), 4)
    with pytest.raises(ConfigError, match=r"schedule has 6 timesteps but the model runs 4"):
        build(NeuronConfig("atgo", {"timesteps": 6}), 4)
    with pytest.raises(ConfigError, match=r"tau must be > 1"):
        build(NeuronConfig("mpinit_trsg", {"tau": 0.5}), 4)
    neuron = build(NeuronConfig("agl"), 2)
    with pytest.raises(ConfigError, match="needs an affine BatchNorm right before it"):
        neuron(torch.randn(2, 3, 4))


def test_renamed_options_are_refused_with_the_new_name():
    with pytest.raises(ConfigError, match=r"neuron 'atgo': option 'tau' is now called 'beta' .* write beta=0.3"):
        build(NeuronConfig("atgo", {"tau": 0.3}), 4)
    with pytest.raises(ConfigError, match=r"neuron 'agl': option 'learn_tau' is now called 'learn_beta'"):
        build(NeuronConfig("agl", {"learn_tau": False}), 4)
    for old, new in (("hard", "zero"), ("soft", "subtract")):
        with pytest.raises(ConfigError, match=rf"neuron 'lif': reset '{old}' is now called '{new}' .* reset={new}"):
            build(NeuronConfig("lif", {"reset": old}), 4)
    assert build(NeuronConfig("mpinit_trsg", {"tau": 3.0}), 4).options.tau == 3.0  # a time constant there


def test_checkpoint_written_before_the_renames_loads_with_names_mapped(tmp_path):
    """A format-1 checkpoint (options tau/learn_tau and reset hard/soft, parameter tau_logit) loads as the model
    it was: the same parameters, buffers and spikes."""
    from spikefold.train.loop import model_from_checkpoint
    from spikefold.train.models import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(16,), neuron=NeuronConfig("atgo", {"beta": 0.3, "learn_beta": False}))
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.neurons()[0][1].beta_logit.fill_(0.25)
        model.neurons()[0][1].running_threshold.copy_(torch.tensor([0.6, 0.7, 0.8, 0.9]))
    old_config = cfg.to_dict()
    old_config["neuron"] = {"kind": "atgo", "options": {"tau": 0.3, "learn_tau": False}}
    old_state = {k.replace("beta_logit", "tau_logit"): v for k, v in model.state_dict().items()}
    assert any(k.endswith(".tau_logit") for k in old_state)
    torch.save({"format": "spikefold-checkpoint-1", "model_config": old_config, "state_dict": old_state},
               tmp_path / "old.pt")
    loaded = model_from_checkpoint(tmp_path / "old.pt")
    assert loaded.neurons()[0][1].options.beta == 0.3
    for (name, before), (_, after) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(before, after), name
    x = torch.rand(8, 64) * 4
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))

    lif = ModelConfig(hidden=(16,), neuron=NeuronConfig("lif", {"reset": "subtract"})).to_dict()
    lif["neuron"]["options"]["reset"] = "soft"
    state = build_model(ModelConfig.from_dict({**lif, "neuron": {"kind": "lif"}})).state_dict()
    torch.save({"format": "spikefold-checkpoint-1", "model_config": lif, "state_dict": state}, tmp_path / "lif.pt")
    assert model_from_checkpoint(tmp_path / "lif.pt").neurons()[0][1].options.reset == "subtract"
