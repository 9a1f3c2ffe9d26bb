"""What every spiking neuron layer shares: its dynamics stated once, the multi-step loop, probe hooks.

Each type states its dynamics once, as the :class:`RecurrenceForm` its ``recurrence_form`` returns: the eager
step (:meth:`RecurrenceForm.step`), the fused kernels (spikefold.train.kernels, which a layer's ``backend``
selects) and the inference form export folds (:meth:`RecurrenceForm.inference`) all come from it. A type writes
by hand only what is a training-time extra: DS-ATGO's batch thresholds, MP-Init's running initial potential,
PDA's loss.

Input currents are shaped (T, batch, ...); the output has the same shape. A neuron that keeps running statistics
keeps them as registered buffers, so they are saved in checkpoints, moved with ``.to(device)``, averaged over
all processes under ``torch.distributed`` while training (spikefold.train.distributed), and used frozen in
``eval()`` mode.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import NamedTuple

import torch
from torch import nn

from spikefold.train import kernels, surrogates

# The one reset vocabulary, from training to Lava: "zero" sets the potential to 0 after a spike (Lava's LIF,
# snnTorch's "zero", elsewhere "hard"); "subtract" takes the threshold off it (snnTorch's "subtract", "soft").
RESETS = ("zero", "subtract")

class StepOutput(NamedTuple):
    """One timestep: the new state, what the layer sends on, and what probes look at."""

    state: torch.Tensor
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

    A type's :class:`RecurrenceForm` with every value frozen (:meth:`RecurrenceForm.inference`); TrSG's relative
    argument H/threshold - 1 > 0 decides as H > threshold (IEEE division, threshold > 0). Export maps it onto
    Loihi's integer LIF (``spikefold.export.intnet``), whose resets carry the same two names."""

    decay: float
    input_gain: float
    threshold: float | list[float]
    reset: str
    initial: float = 0.0
    output_scale: float = 1.0


def _at(value: torch.Tensor | float, t: int) -> torch.Tensor | float:
    """Timestep t's entry of one value or one per timestep."""
    if torch.is_tensor(value) and value.dim() > 0:
        return value[t] if value.numel() > 1 else value.reshape(())
    return value


def _detached(value: torch.Tensor | float) -> torch.Tensor | float:
    return value.detach() if torch.is_tensor(value) else value


@dataclasses.dataclass
class RecurrenceForm:
    """A neuron's dynamics, the one statement of them that its eager step, the fused kernels and export's
    inference form all derive from::

        H(t) = decay U(t-1) + input_gain I(t),     U(0) = initial
        x(t) = H(t) / threshold[t] - 1   if relative,   else   H(t) - threshold[t]
        S(t) = Heaviside(x(t)),   dS/dx = f'(x(t); width[t])   (surrogates.derivative of shape ``surrogate``)
        U(t) = H(t) (1 - S(t))   reset "zero",   or   H(t) - threshold[t] S(t)   reset "subtract"
        the layer sends output_scale S(t)   (S(t) when output_scale is None)

    Tensors keep their autograd graph, so gradients reach each that requires one, except the initial potential
    (which must not require one); threshold and width are one value or one per timestep (then without a
    gradient). The width gets no gradient (as through ``surrogates.spike``) unless ``smooth_width``: then S is
    PSG's straight-through smooth step g(x/w) and dS/dw = -(x/w) f'(x). :meth:`step` is the reference the
    kernels must equal, values and gradients."""

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
        if self.reset not in RESETS:
            raise ValueError(f"a RecurrenceForm's reset is one of {', '.join(RESETS)}, got {self.reset!r}")

    def initial_state(self, like: torch.Tensor) -> torch.Tensor:
        """U(0), shaped like one timestep's input."""
        return torch.zeros_like(like) if self.initial is None else torch.full_like(like, float(self.initial))

    def charge(self, u: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """H(t) from U(t-1) and I(t)."""
        return self.decay * u + (current if self.input_gain is None else self.input_gain * current)

    def fire(self, h: torch.Tensor, t: int, threshold: torch.Tensor | float | None = None,
             width: torch.Tensor | float | None = None) -> StepOutput:
        """Spike and reset at timestep t; ``threshold`` and ``width``, where given, replace the form's (DS-ATGO's
        batch threshold in training)."""
        threshold = _at(self.threshold, t) if threshold is None else threshold
        width = _at(self.width, t) if width is None else width
        x = h / threshold - 1.0 if self.relative else h - threshold
        if self.smooth_width:
            smooth = surrogates.smooth_step(self.surrogate, x, width)
            s = (x > 0).to(h.dtype) + (smooth - smooth.detach())  # exactly 0 + exactly the Heaviside value
        else:
            s = surrogates.spike(x, width, self.surrogate)
        u = h * (1.0 - s) if self.reset == "zero" else h - threshold * s
        output = s if self.output_scale is None else self.output_scale * s
        window = width * threshold if self.relative else width  # in the potential's units
        return StepOutput(u, output, s.detach(), h, _detached(threshold), _detached(window))

    def step(self, u: torch.Tensor, current: torch.Tensor, t: int) -> StepOutput:
        """Timestep t of the equations above."""
        return self.fire(self.charge(u, current), t)

    def inference(self) -> InferenceForm:
        """The same dynamics with every value frozen, as export folds them."""
        threshold = self.threshold
        per_step = torch.is_tensor(threshold) and threshold.dim() > 0
        return InferenceForm(
            decay=float(_detached(self.decay)),
            input_gain=1.0 if self.input_gain is None else float(_detached(self.input_gain)),
            threshold=[float(v) for v in threshold.detach()] if per_step else float(_detached(threshold)),
            reset=self.reset,
            initial=0.0 if self.initial is None else float(self.initial),
            output_scale=1.0 if self.output_scale is None else float(_detached(self.output_scale)))


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

    @abc.abstractmethod
    def recurrence_form(self, steps: int) -> RecurrenceForm:
        """The neuron's dynamics for a run of ``steps`` timesteps, with its parameters as they are now (the
        frozen schedules of evaluation mode where a type keeps running statistics)."""

    schedule_length = 1  # the timesteps a type keeps values for (DS-ATGO: its threshold schedule)

    def step(self, state: torch.Tensor, current: torch.Tensor, t: int) -> StepOutput:
        """Timestep t on the eager path. The form is made afresh each step, so each step's graph holds its own
        copy of the learned parameters' transforms, as the eager path always has (same gradients, to the bit)."""
        return self.recurrence_form(t + 1).step(state, current, t)

    def inference_form(self) -> InferenceForm:
        """The evaluation-mode dynamics in the form export folds (see :class:`InferenceForm`)."""
        return self.recurrence_form(self.schedule_length).inference()

    def kernel_unsupported(self) -> str | None:
        """Why this layer, as configured now, cannot run on the fused kernels (None: it can)."""
        return None

    def after_sequence(self, state: torch.Tensor, spikes: torch.Tensor) -> None:
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
        state = self.recurrence_form(currents.shape[0]).initial_state(currents[0])
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
