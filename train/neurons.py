"""Neuron dynamics used in training, written once as pure step functions; modules wrap them.

Export folds what these equations learned into the integer LIF of ``spikefold.export.intnet``; the docstrings
state which integer parameters each float parameter becomes.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RectangularSpike(torch.autograd.Function):
    """Heaviside forward, H(0) = 0 (Loihi fires on v > vth); rectangular surrogate backward:
    dS/dx = 1/width on |x| < width/2, else 0."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, width: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.width = width
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        window = (x.abs() < ctx.width / 2).to(grad.dtype) / ctx.width
        return grad * window, None


def lif_step(u: torch.Tensor, s: torch.Tensor, current: torch.Tensor, beta: torch.Tensor, vth: float,
             width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the leaky integrate-and-fire neuron with hard reset to zero::

        U(t) = beta * U(t-1) * (1 - S(t-1)) + I(t)
        S(t) = H(U(t) - Vth)

    On Loihi this is the CUBA LIF with du = 4095 (u = I, no current memory), dv = 4096 (1 - beta), the
    threshold Vth scaled into vth, and the reset to zero that Lava's LIF performs after a spike.
    """
    u = beta * u * (1.0 - s) + current
    return u, RectangularSpike.apply(u - vth, width)


class LIF(nn.Module):
    """Multi-step LIF layer over input currents shaped (T, batch, ...).

    ``learn_beta`` makes the decay a per-layer parameter beta = sigmoid(w) (PLIF); otherwise beta is fixed.
    """

    def __init__(self, beta: float = 0.5, vth: float = 1.0, surrogate_width: float = 1.0,
                 learn_beta: bool = False):
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"LIF decay beta must be in [0, 1), got {beta}")
        logit = math.log(beta / (1 - beta)) if beta > 0 else -20.0
        self.beta_logit = nn.Parameter(torch.tensor(logit), requires_grad=learn_beta)
        self.vth = vth
        self.surrogate_width = surrogate_width

    @property
    def beta(self) -> torch.Tensor:
        return torch.sigmoid(self.beta_logit)

    def forward(self, currents: torch.Tensor) -> torch.Tensor:
        beta = self.beta
        u = torch.zeros_like(currents[0])
        s = torch.zeros_like(currents[0])
        spikes = []
        for current in currents:
            u, s = lif_step(u, s, current, beta, self.vth, self.surrogate_width)
            spikes.append(s)
        return torch.stack(spikes)
