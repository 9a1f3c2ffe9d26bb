"""``psg_pda``: parametric surrogate gradient (PSG) and membrane-potential distribution adjustment (PDA).

RECONSTRUCTION: the paper (arXiv 2304.13289) gives neither code nor equations; this is spikefold's reading.

Dynamics are the baseline LIF with reset "zero": H(t) = beta U(t-1) + I(t), S = Heaviside(H - Vth),
U(t) = H(t) (1 - S(t)).

PSG: the surrogate's width w = softplus(rho) is one learnable scalar per layer. A width used only in the
backward pass would get no gradient, so the spike is computed as a straight-through smoothed step:

    S = Heaviside(x) + g_w(x) - stopgrad(g_w(x)),    x = H - Vth,    g_w = sigmoid(4x / w) (or arctan)

Its value is exactly the Heaviside spike, dS/dx = g_w'(x) is the usual surrogate (peak 1/w), and dS/dw =
dg_w/dw is the gradient the loss would give w if the forward were smoothed. After training w is fixed and
inference is a plain LIF.

PDA: a loss term per layer, lambda * SKL(N(mu, sigma^2) || N(mu*, sigma*^2)), the symmetric KL divergence between a
Gaussian fitted to the layer's pre-spike potentials (over batch, neurons and timesteps) and a target Gaussian
around the threshold (mu* = target_mean Vth, sigma* = target_std Vth). It keeps potentials away from the
threshold's edge, where quantisation would flip spikes. The model sums these terms into its training loss.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from spikefold.train import kernels
from spikefold.train.neurons.base import RecurrenceForm, SpikingNeuron, decay_parameter


@dataclasses.dataclass
class PSGPDAOptions:
    beta: float = 0.5
    learn_beta: bool = False
    vth: float = 1.0
    surrogate: str = "sigmoid"  # sigmoid or arctan: PSG needs a smooth step
    width: float = 1.0  # initial width
    learn_width: bool = True
    pda_weight: float = 0.01  # lambda; 0 disables PDA
    target_mean: float = 0.5  # mu* in units of Vth
    target_std: float = 0.5  # sigma* in units of Vth


def symmetric_kl(mu_p, var_p, mu_q, var_q) -> torch.Tensor:
    """KL(p||q) + KL(q||p) for two univariate Gaussians."""
    return ((var_p - var_q) ** 2 + (var_p + var_q) * (mu_p - mu_q) ** 2) / (2.0 * var_p * var_q)


class PSGPDA(SpikingNeuron):
    kind = "psg_pda"

    def __init__(self, options: PSGPDAOptions):
        super().__init__(options)
        self.beta_logit = decay_parameter(options.beta, options.learn_beta)
        self.width_raw = torch.nn.Parameter(torch.tensor(options.width).expm1().log(),
                                            requires_grad=options.learn_width)
        self._potential_sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # for PDA

    @property
    def width(self) -> torch.Tensor:
        return F.softplus(self.width_raw)

    def step(self, u, current, t):
        """The form's step; in training with PDA, also the sums of H that PDA's loss is made of."""
        out = super().step(u, current, t)
        if self._regularises:
            h64 = out.potential.double()
            sums = (h64.new_full((), float(h64.numel())), h64.sum(), (h64 * h64).sum())
            previous = self._potential_sums
            self._potential_sums = sums if previous is None else tuple(a + b for a, b in zip(previous, sums))
        return out

    @property
    def _regularises(self) -> bool:
        return self.training and self.options.pda_weight > 0

    def recurrence_form(self, steps: int) -> RecurrenceForm:
        o = self.options
        return RecurrenceForm(decay=torch.sigmoid(self.beta_logit), threshold=o.vth, width=self.width, reset="zero",
                              surrogate=o.surrogate, smooth_width=True)

    def forward_fused(self, currents):
        run = kernels.lif_sequence(currents, self.recurrence_form(currents.shape[0]),
                                   potential_sums=self._regularises)
        self._set_pda_loss(run.potential_sums)
        return run.output

    def after_sequence(self, u, spikes):
        sums, self._potential_sums = self._potential_sums, None
        self._set_pda_loss(sums)

    def _set_pda_loss(self, sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> None:
        """PDA's term from (count, sum H, sum H^2) over every pre-spike potential of the sequence (float64, so
        that the variance from these sums loses nothing); None: no term."""
        self.auxiliary_loss = None
        if sums is None:
            return
        o = self.options
        count, sum_h, sum_h2 = sums
        mean = sum_h / count
        var = (sum_h2 / count - mean * mean).clamp(min=1e-6)
        kl = symmetric_kl(mean, var, o.target_mean * o.vth, (o.target_std * o.vth) ** 2)
        self.auxiliary_loss = (o.pda_weight * kl).float()
