"""What every spiking neuron layer shares: the multi-step loop, probe hooks, and statistics sync across
processes. Subclasses state their equations in their docstring and implement them in ``step``.

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


def global_sum(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Sum tensors over all processes when running distributed (a no-op otherwise)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
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

    def initial_state(self, current: torch.Tensor) -> Any:
        return torch.zeros_like(current)

    @abc.abstractmethod
    def step(self, state: Any, current: torch.Tensor, t: int) -> StepOutput:
        """One timestep of the neuron's equations."""

    @abc.abstractmethod
    def inference_form(self) -> InferenceForm:
        """The evaluation-mode dynamics in the common form export folds (see :class:`InferenceForm`)."""

    def after_sequence(self, state: Any, spikes: torch.Tensor) -> None:
        """Hook after the last timestep (running statistics that need the whole sequence)."""

    def forward(self, currents: torch.Tensor) -> torch.Tensor:
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
        return ", ".join(f"{f.name}={getattr(self.options, f.name)!r}" for f in dataclasses.fields(self.options))


def decay_parameter(value: float, learnable: bool) -> nn.Parameter:
    """A decay in (0, 1) stored as its logit, so that sigmoid keeps it in range while it learns."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"a decay must lie in (0, 1), got {value}")
    return nn.Parameter(torch.logit(torch.tensor(float(value), dtype=torch.float64)).float(),
                        requires_grad=learnable)
