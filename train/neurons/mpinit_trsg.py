"""``mpinit_trsg``: membrane-potential initialisation (MP-Init) and the threshold-robust surrogate (TrSG).

    M[t] = (1 - 1/tau) U[t-1] + (1/tau) I[t]      tau = 1/sigmoid(w), learned per layer (starts at 2)
    S[t] = Heaviside(M[t] - Vthr)                 Vthr = softplus(k), learned per layer (starts at 1)
    U[t] = M[t] - Vthr S[t]                       reset "subtract" (default), or U[t] = M[t] (1 - S[t]) "zero"

MP-Init: U[0] = u0 at the start of every sample, in training and inference. u0 is a running mean (EMA, 0.9
old + 0.1 new) of U[T] over the neurons that spiked at least once in the sample; it settles near Vthr/2 with
reset "subtract" and Vthr/4 with reset "zero".

TrSG: the surrogate acts on the relative argument x = M/Vthr - 1 and the layer sends O = Vthr S, so
dO/dM = f'(x) whatever Vthr is, while the window scales with Vthr. ``relative=False`` gives the absolute-scale
surrogate (x = M - Vthr, O = S) for comparison. Sending Vthr S is the same, numerically, as sending binary
spikes and multiplying the next layer's weights by Vthr, which is how it is folded for Loihi.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from spikefold.train import kernels
from spikefold.train.distributed import global_sum
from spikefold.train.neurons.base import RecurrenceForm, SpikingNeuron


@dataclasses.dataclass
class MPInitTrSGOptions:
    tau: float = 2.0
    vthr: float = 1.0
    reset: str = "subtract"
    surrogate: str = "rectangular"
    width: float = 1.0  # in units of the relative argument x
    relative: bool = True  # TrSG; False: absolute-scale surrogate
    mp_init: bool = True
    momentum: float = 0.1


class MPInitTrSG(SpikingNeuron):
    kind = "mpinit_trsg"

    def __init__(self, options: MPInitTrSGOptions):
        super().__init__(options)
        if options.tau <= 1.0:
            raise ValueError(f"mpinit_trsg tau must be > 1 (tau = 1/sigmoid(w)), got {options.tau}")
        if options.vthr <= 0.0:
            raise ValueError(f"mpinit_trsg vthr must be > 0, got {options.vthr}")
        self.inv_tau_logit = torch.nn.Parameter(torch.logit(torch.tensor(1.0 / options.tau)))
        self.vthr_raw = torch.nn.Parameter(torch.tensor(options.vthr).expm1().log())  # softplus^-1
        self.register_buffer("initial_potential", torch.zeros(()))

    @property
    def inv_tau(self) -> torch.Tensor:
        return torch.sigmoid(self.inv_tau_logit)

    @property
    def vthr(self) -> torch.Tensor:
        return F.softplus(self.vthr_raw)

    def recurrence_form(self, steps: int) -> RecurrenceForm:
        o, k, vthr = self.options, self.inv_tau, self.vthr
        return RecurrenceForm(decay=1.0 - k, input_gain=k, threshold=vthr, width=o.width, reset=o.reset,
                              surrogate=o.surrogate, relative=o.relative, output_scale=vthr if o.relative else None,
                              initial=self.initial_potential if o.mp_init else None)

    @property
    def _tracks_initial_potential(self) -> bool:
        return self.training and self.options.mp_init

    def forward_fused(self, currents):
        run = kernels.lif_sequence(currents, self.recurrence_form(currents.shape[0]),
                                   final_state=self._tracks_initial_potential)
        if self._tracks_initial_potential:
            self._update_initial_potential(run.final_state, run.fired)
        return run.output

    def after_sequence(self, u, spikes):
        if self._tracks_initial_potential:
            self._update_initial_potential(u, spikes.detach().amax(0) > 0)

    def _update_initial_potential(self, u: torch.Tensor, fired: torch.Tensor) -> None:
        """EMA of the mean final potential U[T] over the neurons that fired at least once in the sample."""
        # Masked sums and a select, not indexing and an `if`: no wait for the GPU in the training step.
        total, count = global_sum((u.detach().double() * fired).sum(), fired.sum().double())
        with torch.no_grad():
            old = self.initial_potential
            mean = (total / count.clamp(min=1)).to(old.dtype)
            # A new tensor, not an in-place update: the forward has saved the old one for the backward (the
            # kernels' op, and torch.compile's graph, which saves the buffer itself), so changing it in place
            # fails the backward's version check.
            self.initial_potential = torch.where(count > 0, torch.lerp(old, mean, self.options.momentum), old)
