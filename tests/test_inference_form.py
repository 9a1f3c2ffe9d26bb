"""Each neuron type's inference form (what export folds into the integer network) reproduces the module in
``eval()``, spike for spike and potential for potential, for every option that changes the dynamics, after a few
real training steps have moved the learned parameters and running statistics away from their starting values.

The inference form's equations are evaluated here by a loop of this file's own, written from the
``InferenceForm`` docstring (not the modules' step, not export's float reference, which runs the modules):

    H(t) = decay U(t-1) + input_gain I(t),     U(0) = initial
    S(t) = Heaviside(H(t) - threshold[t])
    U(t) = 0 where S(t), else H(t)  (reset "zero");   H(t) - threshold[t] where S(t), else H(t)  ("subtract")
    the layer sends output_scale S(t)

in float32 like the module, so that every value is comparable bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from spikefold.train.neurons import NeuronConfig, build
from spikefold.train.neurons.base import InferenceForm

STEPS, BATCH, FEATURES = 6, 16, 24

# (kind, options, input scale): every reset, relative/absolute surrogate argument, MP-Init on and off, every TGO
# variant, learnable decays started away from their defaults. Surrogate shapes change only gradients.
CASES = [
    *[("lif", {"reset": r, "beta": 0.7, "learn_beta": True, "vth": 0.8}, 1.0) for r in ("zero", "subtract")],
    ("lif", {"beta": 0.3}, 1.0),
    *[("atgo", {"tgo": v, "beta": 0.4}, 1.0) for v in ("threshold", "std", "off")],
    ("atgo", {"learn_beta": False, "momentum": 0.5}, 1.0),
    ("agl", {"beta": 0.6}, 0.6),
    *[("mpinit_trsg", {"reset": r, "relative": rel, "mp_init": m, "tau": 3.0, "vthr": 0.7}, 2.0)
      for r in ("subtract", "zero") for rel in (True, False) for m in (True, False)],
    ("psg_pda", {"beta": 0.6, "learn_beta": True, "surrogate": "arctan"}, 1.0),
    ("psg_pda", {"pda_weight": 0.0, "learn_width": False}, 1.0),
]


class _Record:
    """The probe interface: each timestep's potential H and spikes, as the module computed them."""

    def __init__(self):
        self.potentials, self.spikes = [], []

    def observe(self, name, t, potential, spikes, threshold, window):
        self.potentials.append(potential.clone())
        self.spikes.append(spikes.clone())


def _trained(kind: str, options: dict, scale: float) -> torch.nn.Module:
    """The neuron after three SGD steps in training mode on random currents (a BatchNorm before AGL, whose
    gamma its width rule reads)."""
    torch.manual_seed(0)
    neuron = build(NeuronConfig(kind, options), STEPS)
    learned = [p for p in neuron.parameters() if p.requires_grad]
    if kind == "agl":
        norm = torch.nn.BatchNorm1d(FEATURES)
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        neuron.bind_norm(norm)
    optimiser = torch.optim.SGD(learned, lr=0.5) if learned else None
    readout = torch.randn(FEATURES)
    neuron.train()
    for _ in range(3):  # with nothing to learn, still the running statistics' updates
        currents = (torch.randn(STEPS, BATCH, FEATURES) + 0.4) * scale
        output = neuron(currents)
        if optimiser is not None:
            loss = (output * readout).mean()
            if neuron.auxiliary_loss is not None:
                loss = loss + neuron.auxiliary_loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return neuron.eval()


def _inference_loop(form: InferenceForm, currents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, S) for every timestep, from the inference form's equations alone."""
    thresholds = form.threshold if isinstance(form.threshold, list) else [form.threshold] * len(currents)
    u = torch.full_like(currents[0], form.initial)
    potentials, spikes = [], []
    for t, current in enumerate(currents):
        h = form.decay * u + form.input_gain * current
        s = h > thresholds[t]
        reset_to = h - thresholds[t] if form.reset == "subtract" else torch.zeros_like(h)
        u = torch.where(s, reset_to, h)
        potentials.append(h)
        spikes.append(s)
    return torch.stack(potentials), torch.stack(spikes)


@pytest.mark.parametrize("kind,options,scale", CASES)
def test_inference_form_reproduces_the_eval_module(kind, options, scale):
    neuron = _trained(kind, options, scale)
    form = neuron.inference_form()
    assert form.reset in ("zero", "subtract")
    # what training moved is in the form: learned decays, thresholds, MP-Init's potential, ATGO's schedule
    if options.get("learn_beta", kind in ("atgo", "agl")):
        assert form.decay != pytest.approx(options.get("beta", 0.2 if kind in ("atgo", "agl") else 0.5), abs=1e-4)
    if kind == "mpinit_trsg":
        assert form.threshold != pytest.approx(options["vthr"], abs=1e-4)
        assert form.input_gain == pytest.approx(1 - form.decay, abs=1e-6)
        assert (form.initial != 0) == options["mp_init"]
        assert form.output_scale == (form.threshold if options["relative"] else 1.0)
    if kind == "atgo":
        assert len(form.threshold) == STEPS and len(set(form.threshold)) == STEPS and 1.0 not in form.threshold

    torch.manual_seed(1)
    currents = (torch.randn(STEPS, 64, FEATURES) + 0.4) * scale
    record = _Record()
    neuron.probe, neuron.probe_name = record, "layer"
    with torch.no_grad():
        output = neuron(currents)
    neuron.probe = None
    potentials, spikes = _inference_loop(form, currents)

    assert torch.equal(torch.stack(record.spikes), spikes.float()), "a spike differs"
    assert torch.equal(torch.stack(record.potentials), potentials), "a potential differs"
    assert torch.equal(output, form.output_scale * spikes.float())
    assert 0.02 < float(spikes.float().mean()) < 0.9  # the comparison covers firing and silent neurons alike
    if kind == "atgo":  # every timestep's own threshold decides: the schedule is not one value
        assert any((potentials[t] > form.threshold[t]).ne(potentials[t] > form.threshold[0]).any()
                   for t in range(1, STEPS))
