"""What every spiking neuron layer shares: the multi-step loop, probe hooks, and statistics sync across
processes. Subclasses state their equations in their docstring and implement them in ``step``, the reference;
``recurrence_form`` hands the same equations to the fused kernels (spikefold.train.kernels), which a layer's
``backend`` selects.

Input currents are shaped (T, batch, ...); the output has the same shape. A neuron that keeps running statistics
keeps them as registered buffers, so they are saved in checkpoints, moved with ``.to(device)``, averaged over
all processes under ``torch.distributed`` while training, and used frozen in ``eval()`` mode.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from spikefold.train import kernels


class StepOutput(NamedTuple):
    """One timestep: the new state, what the layer sends on, and what probes look at."""

    state: Any
    output: torch.Tensor  # what the next layer receives (spikes, or Vthr * spikes for TrSG)
    spikes: torch.Tensor  # binary spikes (for firing rates)
    potential: torch.Tensor  # the potential compared with the threshold (before reset)
    threshold: torch.Tensor | float  # the threshold it was compared with
    window: torch.Tensor | float  # surrogate window width, in the potential's units


@dataclasses.dataclass
class InferenceForm:
    """What a trained neuron computes in evaluation mode, in the one form every type folds to::

        H(t) = decay U(t-1) + input_gain I(t),     U(0) = initial
        S(t) = Heaviside(H(t) - threshold[t])      (threshold: one value, or one per timestep)
        U(t) = H(t) (1 - S(t))   reset "zero",   or   H(t) - threshold[t] S(t)   reset "subtract"
        the layer sends output_scale * S(t)

    Export maps it onto Loihi's integer LIF (``spikefold.export.intnet``)."""

    decay: float
    input_gain: float
    threshold: float | list[float]
    reset: str
    initial: float = 0.0
    output_scale: float = 1.0


@dataclasses.dataclass
class RecurrenceForm:
    """A neuron's training-time dynamics in the one form the fused kernels run; its ``step`` is the reference
    they must equal, values and gradients::

        H(t) = decay U(t-1) + input_gain I(t),     U(0) = initial
        x(t) = H(t) / threshold[t] - 1   if relative,   else   H(t) - threshold[t]
        S(t) = Heaviside(x(t)),   dS/dx = f'(x(t); width[t])   (surrogates.derivative of shape ``surrogate``)
        U(t) = H(t) (1 - S(t))   reset "hard",   or   H(t) - threshold[t] S(t)   reset "soft"
        the layer sends output_scale S(t)   (S(t) when output_scale is None)

    Tensors keep their autograd graph, so gradients reach each that requires one, as through ``step``, except
    the initial potential (which must not require one); threshold and width are one value or one per timestep
    (then without a gradient). The width gets no gradient (as through ``surrogates.spike``) unless
    ``smooth_width``: then S is PSG's straight-through smooth step g(x/w) and dS/dw = -(x/w) f'(x)."""

    decay: torch.Tensor | float
    threshold: torch.Tensor | float
    width: torch.Tensor | float
    reset: str
    surrogate: str
    input_gain: torch.Tensor | float | None = None
    relative: bool = False
    output_scale: torch.Tensor | None = None
    initial: torch.Tensor | float | None = None
    smooth_width: bool = False

    def __post_init__(self):
        if self.reset not in ("hard", "soft"):
            raise ValueError(f"a RecurrenceForm's reset is 'hard' or 'soft', got {self.reset!r}")


def distributed() -> bool:
    """Whether this process is one of several in a process group (DDP under torchrun)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_sum(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Sum tensors over all processes when running distributed (a no-op otherwise)."""
    if not distributed():
        return list(tensors)
    packed = torch.stack([t.detach().to(torch.float64).reshape(()) for t in tensors])
    dist.all_reduce(packed)
    return list(packed.to(tensors[0].dtype).unbind())


class SpikingNeuron(nn.Module, abc.ABC):
    """Base class: runs ``step`` over timesteps, feeds an attached probe, collects auxiliary losses."""

    kind = "abstract"

    def __init__(self, options):
        super().__init__()
        self.options = options
        self.probe = None  # set by spikefold.train.probes while observing
        self.probe_name = ""
        self.auxiliary_loss: torch.Tensor | None = None  # set in forward by neurons that regularise
        self.backend = "auto"

    @property
    def backend(self) -> str:
        """Which path runs the layer: "eager" (``step`` per timestep), "triton" (the fused kernels), or "auto"
        (the kernels for CUDA input where they can run); see spikefold.train.kernels."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        self._backend = kernels.check_backend(name)

    def initial_state(self, current: torch.Tensor) -> Any:
        return torch.zeros_like(current)

    @abc.abstractmethod
    def step(self, state: Any, current: torch.Tensor, t: int) -> StepOutput:
        """One timestep of the neuron's equations."""

    @abc.abstractmethod
    def inference_form(self) -> InferenceForm:
        """The evaluation-mode dynamics in the common form export folds (see :class:`InferenceForm`)."""

    @abc.abstractmethod
    def recurrence_form(self, steps: int) -> RecurrenceForm:
        """The dynamics of ``step`` for a run of ``steps`` timesteps, in the form the fused kernels run."""

    def kernel_unsupported(self) -> str | None:
        """Why this layer, as configured now, cannot run on the fused kernels (None: it can)."""
        return None

    def after_sequence(self, state: Any, spikes: torch.Tensor) -> None:
        """Hook after the last timestep (running statistics that need the whole sequence)."""

    def forward(self, currents: torch.Tensor) -> torch.Tensor:
        # Probes observe each timestep's potential, threshold and window, which only the eager loop produces.
        if self.probe is None and kernels.fused(self.backend, currents, self.kernel_unsupported()):
            return self.forward_fused(currents)
        return self.forward_eager(currents)

    def forward_fused(self, currents: torch.Tensor) -> torch.Tensor:
        """The layer on the fused kernels; equal to :meth:`forward_eager`, values and gradients."""
        return kernels.lif_sequence(currents, self.recurrence_form(currents.shape[0])).output

    def forward_eager(self, currents: torch.Tensor) -> torch.Tensor:
        """The reference: ``step`` once per timestep."""
        state = self.initial_state(currents[0])
        outputs, spikes = [], []
        for t in range(currents.shape[0]):
            out = self.step(state, currents[t], t)
            if self.probe is not None:
                self.probe.observe(self.probe_name, t, out.potential.detach(), out.spikes.detach(),
                                   out.threshold, out.window)
            state = out.state
            outputs.append(out.output)
            spikes.append(out.spikes)
        self.after_sequence(state, torch.stack(spikes))
        return torch.stack(outputs)

    def extra_repr(self) -> str:
        options = (f"{f.name}={getattr(self.options, f.name)!r}" for f in dataclasses.fields(self.options))
        return ", ".join((*options, f"backend={self.backend!r}"))


def decay_parameter(value: float, learnable: bool) -> nn.Parameter:
    """A decay in (0, 1) stored as its logit, so that sigmoid keeps it in range while it learns."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"a decay must lie in (0, 1), got {value}")
    return nn.Parameter(torch.logit(torch.tensor(float(value), dtype=torch.float64)).float(),
                        requires_grad=learnable)
