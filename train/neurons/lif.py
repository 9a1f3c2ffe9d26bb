"""``lif``: the baseline leaky integrate-and-fire neuron (LIF, or PLIF with a learnable decay).

    H(t) = beta U(t-1) + I(t)
    S(t) = Heaviside(H(t) - Vth)                      (strict: fires on H > Vth)
    U(t) = H(t) (1 - S(t))  reset "zero",   or   H(t) - Vth S(t)  reset "subtract"

On Loihi 2 (reset "zero"): du = 4095, so the current is I(t) each step; dv = 4096 (1 - beta); Vth and I are scaled
together into vth and the weights; Lava's LIF resets v to zero after a spike.
"""

from __future__ import annotations

import dataclasses

import torch

from spikefold.train.neurons.base import RecurrenceForm, SpikingNeuron, decay_parameter


@dataclasses.dataclass
class LIFOptions:
    beta: float = 0.5  # membrane decay per step
    learn_beta: bool = False  # PLIF: beta = sigmoid(w) learned per layer
    vth: float = 1.0
    reset: str = "zero"  # "zero" (to zero) or "subtract" (the threshold)
    surrogate: str = "rectangular"
    width: float = 1.0


class LIF(SpikingNeuron):
    kind = "lif"

    def __init__(self, options: LIFOptions):
        super().__init__(options)
        self.beta_logit = decay_parameter(options.beta, options.learn_beta)

    @property
    def beta(self) -> torch.Tensor:
        return torch.sigmoid(self.beta_logit)

    def recurrence_form(self, steps: int) -> RecurrenceForm:
        o = self.options
        return RecurrenceForm(decay=self.beta, threshold=o.vth, width=o.width, reset=o.reset, surrogate=o.surrogate)
