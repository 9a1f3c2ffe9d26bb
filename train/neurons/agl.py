"""``agl``: MPD-AGL, a rectangular surrogate whose width follows the membrane potential's spread.

    H(t) = beta U(t-1) + I(t),    beta = sigmoid(w) learned per layer (starts at 0.2)
    S(t) = Heaviside(H(t) - Vth),    Vth = 0.5 fixed,    U(t) = H(t) (1 - S(t))

The threshold-dependent BatchNorm before the neuron (``tdbn``) makes each channel's input alpha Vth gamma x_hat +
(its shift). With gbar the mean of that BatchNorm's gamma (one detached scalar per layer), the surrogate width is

    w(1) = 2 gbar Vth                      (no potential carried into the first step)
    w(t) = 2 sqrt(1 + beta^2) gbar Vth      for t >= 2

so the window [Vth - w/2, Vth + w/2] spans one standard deviation of H at every step. w is kept > 0. At
inference this is a plain LIF with a fixed threshold: nothing beyond BatchNorm to fold.
"""

from __future__ import annotations

import dataclasses

import torch

from spikefold.core.errors import ConfigError
from spikefold.train.neurons.base import RecurrenceForm, SpikingNeuron, decay_parameter

MIN_WIDTH = 1e-3


@dataclasses.dataclass
class AGLOptions:
    beta: float = 0.2  # membrane decay per step (starts here; learned unless learn_beta is off)
    learn_beta: bool = True
    vth: float = 0.5


def agl_width(t: int, gbar: torch.Tensor, beta: torch.Tensor, vth: float) -> torch.Tensor:
    """The MPD-AGL surrogate width at timestep t (0-based)."""
    spread = gbar if t == 0 else torch.sqrt(1.0 + beta * beta) * gbar
    return torch.clamp(2.0 * spread * vth, min=MIN_WIDTH)


class AGL(SpikingNeuron):
    kind = "agl"

    def __init__(self, options: AGLOptions):
        super().__init__(options)
        self.beta_logit = decay_parameter(options.beta, options.learn_beta)
        self._norm = None

    def bind_norm(self, norm: torch.nn.Module) -> None:
        """Read gamma from ``norm`` (the BatchNorm right before this neuron); kept out of the module tree."""
        self.__dict__["_norm"] = norm

    @property
    def beta(self) -> torch.Tensor:
        return torch.sigmoid(self.beta_logit)

    def gbar(self) -> torch.Tensor:
        if self._norm is None or getattr(self._norm, "weight", None) is None:
            raise ConfigError("an 'agl' neuron needs an affine BatchNorm right before it (norm 'bn' or 'tdbn'); "
                              "its width rule reads that BatchNorm's gamma")
        return self._norm.weight.detach().mean()

    def recurrence_form(self, steps: int) -> RecurrenceForm:
        gbar, beta = self.gbar(), self.beta
        first, later = (agl_width(t, gbar, beta.detach(), self.options.vth).reshape(1) for t in (0, 1))
        width = torch.cat([first, later.expand(steps - 1)])
        return RecurrenceForm(decay=beta, threshold=self.options.vth, width=width, reset="zero",
                              surrogate="rectangular")
