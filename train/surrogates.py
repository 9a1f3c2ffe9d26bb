"""Surrogate gradients: Heaviside forward, a chosen derivative backward, and DS-ATGO's width rule (TGO). The
neurons (spikefold.train.neurons) and the fused kernels (spikefold.train.kernels) both use them, so they live
apart from either.

Every shape is parameterised by a *width* w (in the units of its argument) and normalised so that its peak is
1/w; "inside the gradient window" means |x| < w/2 for every shape (for the smooth ones this is a convention
that makes window shares comparable across shapes):

    rectangular  f'(x) = 1/w                         on |x| < w/2
    triangular   f'(x) = (1/w) max(0, 1 - |x|/w)      support |x| < w
    sigmoid      f'(x) = a s(ax)(1 - s(ax)),  a = 4/w (s the logistic function)
    arctan       f'(x) = (1/w) / (1 + (pi x / w)^2)

The forward is H(x) = 1 if x > 0 else 0, strict like Loihi's ``v > vth``. ``width`` may be a tensor (a
per-timestep or learnable width); it receives no gradient through the backward pass.
"""

from __future__ import annotations

import math

import torch

SHAPES = ("rectangular", "triangular", "sigmoid", "arctan")


def derivative(shape: str, x: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """f'(x) of the named shape with the given width (see the module docstring)."""
    if shape == "rectangular":
        return (x.abs() < width / 2).to(x.dtype) / width
    if shape == "triangular":
        return torch.clamp(1.0 - x.abs() / width, min=0.0) / width
    if shape == "sigmoid":
        s = torch.sigmoid(4.0 * x / width)
        return (4.0 / width) * s * (1.0 - s)
    if shape == "arctan":
        return 1.0 / (width * (1.0 + (math.pi * x / width) ** 2))
    raise ValueError(f"unknown surrogate shape '{shape}'; valid: {', '.join(SHAPES)}")


def smooth_step(shape: str, x: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """An antiderivative of :func:`derivative`, for shapes that have a closed form used by PSG."""
    if shape == "sigmoid":
        return torch.sigmoid(4.0 * x / width)
    if shape == "arctan":
        return 0.5 + torch.atan(math.pi * x / width) / math.pi
    raise ValueError(f"the learnable (PSG) surrogate needs a smooth shape: sigmoid or arctan, got '{shape}'")


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, width, shape):
        ctx.save_for_backward(x, width if torch.is_tensor(width) else torch.tensor(width, dtype=x.dtype))
        ctx.shape = shape
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, width = ctx.saved_tensors
        return grad * derivative(ctx.shape, x, width), None, None


def spike(x: torch.Tensor, width: torch.Tensor | float, shape: str = "rectangular") -> torch.Tensor:
    """Heaviside of x with the named surrogate derivative of the given width."""
    if shape not in SHAPES:
        raise ValueError(f"unknown surrogate shape '{shape}'; valid: {', '.join(SHAPES)}")
    return _Spike.apply(x, width, shape)


def tgo_width(tgo: str, threshold: torch.Tensor, std: torch.Tensor | None, k0: float, v_ref: float) -> torch.Tensor:
    """DS-ATGO's rectangular surrogate width for thresholds (one, or one per timestep) and the std of H behind
    them: k = k0 (1 + tanh(dV - V_ref)), dV the threshold (``tgo="threshold"``) or the std (``"std"``); k0 with
    TGO ``"off"``."""
    if tgo == "off":
        return torch.full_like(threshold, k0)
    dv = threshold if tgo == "threshold" else std
    return k0 * (1.0 + torch.tanh(torch.as_tensor(dv, dtype=torch.float32) - v_ref))


def in_window(x: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """Which elements lie inside the gradient window |x| < width/2."""
    return x.abs() < width / 2
