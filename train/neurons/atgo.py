"""``atgo``: DS-ATGO's forward adaptive threshold (AT) and backward threshold-driven surrogate (TGO).

    H(t) = tau U(t-1) + I(t),    tau = sigmoid(w) learned per layer (PLIF, starts at 0.2)
    S(t) = Heaviside(H(t) - thr(t)),    U(t) = H(t) (1 - S(t))          (hard reset)

AT, training: thr(t) = f_c (mean H(t) + std H(t)), one scalar per layer and timestep over the whole batch and
all neurons (over all processes when distributed), on detached H. For Gaussian H this fires 1 - Phi(1) =
15.87 % of neurons whatever the mean and spread. A running value per timestep follows it like BatchNorm's
statistics, r(t) <- (1 - m) r(t) + m thr(t), starting at 1.0; ``eval()`` uses the frozen r(t): on Loihi, a
per-timestep threshold schedule.

TGO: rectangular surrogate of width k(t) = k0 (1 + tanh(dV - V_ref)), centred on thr(t). The paper's dV is the
adaptive threshold (``tgo="threshold"``); the official code feeds std(H) (``tgo="std"``); ``tgo="off"`` keeps a
fixed width k0.
"""

from __future__ import annotations

import dataclasses

import torch

from spikefold.train.neurons import surrogates
from spikefold.train.neurons.base import InferenceForm, SpikingNeuron, StepOutput, decay_parameter, global_sum

TGO_VARIANTS = ("threshold", "std", "off")


@dataclasses.dataclass
class ATGOOptions:
    timesteps: int = 4
    tau: float = 0.2
    learn_tau: bool = True
    fc: float = 1.0
    momentum: float = 0.1
    initial_threshold: float = 1.0
    tgo: str = "threshold"
    k0: float = 1.0
    v_ref: float = 1.0


def batch_threshold(h: torch.Tensor, fc: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_c (mean + std), std) of H over every element, summed over all processes when distributed."""
    h = h.detach().double()
    n, s1, s2 = global_sum(torch.tensor(float(h.numel()), dtype=torch.float64, device=h.device), h.sum(),
                           (h * h).sum())
    mean = s1 / n
    std = torch.sqrt(torch.clamp(s2 / n - mean * mean, min=0.0))
    return (fc * (mean + std)).float(), std.float()


def tgo_width(dv: torch.Tensor | float, k0: float, v_ref: float) -> torch.Tensor:
    """k = k0 (1 + tanh(dV - V_ref))."""
    return k0 * (1.0 + torch.tanh(torch.as_tensor(dv, dtype=torch.float32) - v_ref))


class ATGO(SpikingNeuron):
    kind = "atgo"

    def __init__(self, options: ATGOOptions):
        super().__init__(options)
        self.tau_logit = decay_parameter(options.tau, options.learn_tau)
        self.register_buffer("running_threshold", torch.full((options.timesteps,), float(options.initial_threshold)))

    @property
    def tau(self) -> torch.Tensor:
        return torch.sigmoid(self.tau_logit)

    def step(self, u, current, t):
        o = self.options
        if t >= self.running_threshold.shape[0]:
            raise ValueError(f"atgo neuron keeps a threshold schedule of {self.running_threshold.shape[0]} "
                             f"timesteps but was run for timestep {t + 1}; build it with timesteps >= {t + 1}")
        h = self.tau * u + current
        if self.training:
            thr, std = batch_threshold(h, o.fc)
            with torch.no_grad():
                self.running_threshold[t].lerp_(thr, o.momentum)
        else:
            thr = self.running_threshold[t]
            std = h.detach().std(unbiased=False) if o.tgo == "std" else None
        if o.tgo == "off":
            width = torch.tensor(o.k0)
        else:
            width = tgo_width(thr if o.tgo == "threshold" else std, o.k0, o.v_ref)
        s = surrogates.spike(h - thr, width.to(h.dtype), "rectangular")
        return StepOutput(h * (1.0 - s), s, s, h, thr, width)

    def inference_form(self) -> InferenceForm:
        return InferenceForm(decay=float(self.tau.detach()), input_gain=1.0,
                             threshold=[float(v) for v in self.running_threshold], reset="zero")
