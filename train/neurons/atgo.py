"""``atgo``: DS-ATGO's forward adaptive threshold (AT) and backward threshold-driven surrogate (TGO).

    H(t) = beta U(t-1) + I(t),    beta = sigmoid(w) learned per layer (PLIF, starts at 0.2)
    S(t) = Heaviside(H(t) - thr(t)),    U(t) = H(t) (1 - S(t))          (reset to zero)

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

from spikefold.train import kernels, surrogates
from spikefold.train.distributed import global_sum
from spikefold.train.neurons.base import RecurrenceForm, SpikingNeuron, decay_parameter

TGO_VARIANTS = ("threshold", "std", "off")


@dataclasses.dataclass
class ATGOOptions:
    timesteps: int = 4
    beta: float = 0.2  # membrane decay per step (starts here; learned unless learn_beta is off)
    learn_beta: bool = True
    fc: float = 1.0
    momentum: float = 0.1
    initial_threshold: float = 1.0
    tgo: str = "threshold"
    k0: float = 1.0
    v_ref: float = 1.0


def batch_threshold(h: torch.Tensor, fc: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_c (mean + std), std) of H over every element, in float64 over all processes when distributed. The
    fused kernels compute the same from their per-program sums (kernels.triton_lif.adaptive_step_kernel)."""
    h = h.detach().double()
    n, s1, s2 = global_sum(torch.tensor(float(h.numel()), dtype=torch.float64, device=h.device), h.sum(),
                           (h * h).sum())
    mean = s1 / n
    std = torch.sqrt(torch.clamp(s2 / n - mean * mean, min=0.0))
    return (fc * (mean + std)).float(), std.float()


class ATGO(SpikingNeuron):
    kind = "atgo"

    def __init__(self, options: ATGOOptions):
        super().__init__(options)
        self.beta_logit = decay_parameter(options.beta, options.learn_beta)
        self.register_buffer("running_threshold", torch.full((options.timesteps,), float(options.initial_threshold)))

    @property
    def beta(self) -> torch.Tensor:
        return torch.sigmoid(self.beta_logit)

    @property
    def schedule_length(self) -> int:
        return self.running_threshold.shape[0]

    def _check_schedule(self, steps: int) -> None:
        if steps > self.schedule_length:
            raise ValueError(f"atgo neuron keeps a threshold schedule of {self.schedule_length} "
                             f"timesteps but was run for timestep {steps}; build it with timesteps >= {steps}")

    def step(self, u, current, t):
        """The form's step in evaluation mode; in training, the threshold of the batch's H (the running schedule
        follows it), and with ``tgo="std"`` a width from the std of H."""
        o = self.options
        form = self.recurrence_form(t + 1)
        if not self.training and o.tgo != "std":
            return form.step(u, current, t)
        h = form.charge(u, current)
        if self.training:
            thr, std = batch_threshold(h, o.fc)
            with torch.no_grad():
                self.running_threshold[t].lerp_(thr, o.momentum)
        else:
            thr, std = self.running_threshold[t], h.detach().std(unbiased=False)
        width = surrogates.tgo_width(o.tgo, thr, std, o.k0, o.v_ref)
        return form.fire(h, t, threshold=thr, width=width.to(h.dtype))

    def kernel_unsupported(self) -> str | None:
        if not self.training and self.options.tgo == "std" and torch.is_grad_enabled():
            # The width then needs the std of H at each timestep, for the backward only; eval-mode gradients
            # are rare, so the eager path computes them.
            return "atgo in eval mode with tgo='std' and gradients enabled"
        return None

    def recurrence_form(self, steps: int) -> RecurrenceForm:
        """The frozen threshold schedule of evaluation mode (training thresholds come from batch statistics:
        see step and forward_fused)."""
        o = self.options
        self._check_schedule(steps)
        threshold = self.running_threshold[:steps]
        # tgo="std" takes its width from H (see step); the kernels run it only without gradients, where the width
        # is never used
        width = surrogates.tgo_width("off" if o.tgo == "std" else o.tgo, threshold, None, o.k0, o.v_ref)
        return RecurrenceForm(decay=self.beta, threshold=threshold, width=width, reset="zero", surrogate="rectangular")

    def forward_fused(self, currents):
        if not self.training:
            return super().forward_fused(currents)
        o = self.options
        self._check_schedule(currents.shape[0])
        spikes, thresholds = kernels.atgo_training_sequence(currents, self.beta, o.fc, o.tgo, o.k0, o.v_ref)
        with torch.no_grad():
            self.running_threshold[: currents.shape[0]].lerp_(thresholds, o.momentum)
        return spikes
