"""Fused multi-step kernels for the neuron layers: one Triton program per block of neurons runs all T timesteps
with the state in registers, forward and backward, instead of a dozen PyTorch ops per timestep.

Every neuron type but DS-ATGO in training reduces to one recurrence,
:class:`~spikefold.train.neurons.base.RecurrenceForm`, which one forward and one backward kernel run
(``triton_lif``). DS-ATGO's training threshold needs statistics of the whole layer at each timestep before
any neuron spikes, so it runs one launch per timestep, each of which first reduces the previous timestep's
sums (``ops.atgo_adaptive_forward``); its backward is the common one. The eager ``step`` of each type stays the
reference, the CPU path and the path under probes.

A layer's ``backend`` picks the path (:func:`fused`): ``eager``; ``triton`` (an error where it cannot run);
``auto`` (the default: the kernels for CUDA tensors when Triton is installed, else eager, with a one-time
warning when a CUDA layer cannot use them). On a CPU machine ``triton`` runs on Triton's interpreter when
TRITON_INTERPRET=1 was set before the kernels were first used; that is how the tests check them without a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from spikefold.core.errors import ConfigError

if TYPE_CHECKING:  # the neurons import this module, so it imports them only where it runs them (ops)
    from spikefold.train.neurons.base import RecurrenceForm

BACKENDS = ("auto", "eager", "triton")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # the recurrence itself always runs in fp32
# A program's int32 neuron indices run up to N - 1 + its block (ops.MAX_BLOCK, 512 neurons; 1024 to spare): N must
# leave room for them.
MAX_NEURONS = 2**31 - 1024

_warned: set[str] = set()


def check_backend(name: str) -> str:
    """``name`` if it is a backend, else a named error listing them."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown neuron backend '{name}'; valid: {', '.join(BACKENDS)}")
    return name


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether the kernels run on Triton's CPU interpreter (decided by TRITON_INTERPRET when first imported)."""
    from spikefold.train.kernels import triton_lif

    return type(triton_lif.lif_forward_kernel).__name__ == "InterpretedFunction"


def check_device(backend: str, device: torch.device | str) -> None:
    """A named error, before any work, when ``backend`` cannot run on ``device``."""
    check_backend(backend)
    if backend != "triton":
        return
    if not triton_installed():
        raise ConfigError("neuron backend 'triton' needs the Triton package: pip install 'spikefold[gpu]' "
                          "(or use backend 'auto' or 'eager')")
    if torch.device(device).type != "cuda" and not interpreting():
        raise ConfigError(f"neuron backend 'triton' needs a CUDA device; this run is on '{device}'. Use backend "
                          "'auto' or 'eager' (or set TRITON_INTERPRET=1 to run the kernels on Triton's slow CPU "
                          "interpreter, as the tests do)")


def _unsupported_input(currents: Tensor) -> str | None:
    if currents.dtype not in KERNEL_DTYPES:
        return f"the kernels take {', '.join(map(str, KERNEL_DTYPES))}, not {currents.dtype}"
    if currents[0].numel() > MAX_NEURONS:
        return (f"{currents[0].numel()} neurons per timestep overflow the kernels' 32-bit neuron index (at most "
                f"{MAX_NEURONS})")
    return None


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def fused(backend: str, currents: Tensor, unsupported: str | None = None) -> bool:
    """Whether a layer with this ``backend`` runs ``currents`` through the fused kernels; ``unsupported`` is
    the layer's own reason it cannot (None when it can). Never a silent change of results: where the kernels
    cannot run, the eager reference does, with a warning, or the choice is refused with a named error."""
    if backend == "eager" or currents.numel() == 0:
        return False
    if backend == "auto":
        if not currents.is_cuda:
            return False
        if not triton_installed():
            reason = "Triton is not installed (pip install 'spikefold[gpu]')"
        else:
            reason = _unsupported_input(currents) or unsupported
    else:
        check_device(backend, currents.device)
        problem = _unsupported_input(currents)
        if problem is not None:
            raise ConfigError(f"neuron backend 'triton' cannot run this layer's input: {problem}; use backend "
                              "'eager' (or 'auto') for it")
        reason = unsupported
    if reason is not None:
        _warn_once(f"spiking neurons run on the eager (slow) path: {reason}")
        return False
    return True


class FusedRun(NamedTuple):
    """What a fused layer returns: its output (T, ...) and, when asked for, the final potential and which
    neurons fired at least once (shaped like one timestep), and (count, sum H, sum H^2) over every H, float64,
    differentiable."""

    output: Tensor
    final_state: Tensor | None = None
    fired: Tensor | None = None
    potential_sums: tuple[Tensor, Tensor, Tensor] | None = None


def rows(x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """(rows, unrows): x (T, ...) as a (T, N) view whose row t is x[t] in its memory order (contiguous,
    channels_last, or one slice broadcast over T with row stride 0), and the function that gives a (T, N)
    result x's shape and layout. Where no such view exists (x[t] not dense, e.g. every other element) the
    rows are a copy, which costs one more pass over x."""
    order = sorted(range(1, x.dim()), key=lambda d: x.stride(d), reverse=True)
    permuted = x.permute(0, *order)
    flat = permuted.reshape(x.shape[0], -1)
    if flat.stride(1) != 1 and flat.shape[1] > 1:
        flat = flat.contiguous()
    inverse = [0] * x.dim()
    for position, d in enumerate((0, *order)):
        inverse[d] = position
    return flat, lambda y: y.view(y.shape[0], *permuted.shape[1:]).permute(inverse)


def _schedule(value, steps: int, like: Tensor) -> Tensor:
    """One value or one per timestep as a float32 (1,) or (T,) tensor for the kernels, keeping the autograd
    graph of a tensor value. A copy: a neuron may update its buffers in place (MP-Init's initial potential)
    while the backward still needs the values this run used."""
    if not torch.is_tensor(value):
        return _constant(float(value), like.device)
    value = value.to(dtype=torch.float32, device=like.device)  # differentiable: a gradient flows back
    if value.numel() not in (1, steps):
        raise ValueError(f"a schedule has {value.numel()} values for {steps} timesteps")
    if value.numel() > 1 and value.requires_grad:
        raise ValueError("the kernels give a gradient to one value for all timesteps, not to one per timestep")
    return value.reshape(-1).clone()


def _constant(value: float, device: torch.device) -> Tensor:
    """``value`` as a float32 (1,) tensor on ``device``. The kernels only read it, so one tensor per value and
    device serves every call: a fill per call and constant costs the host a dispatch and the GPU a launch, five
    of them per LIF layer (with them and two unneeded backward launches gone, a small LIF layer's call on the
    H200 went from 0.92 to 0.80 ms). Made fresh while torch.compile traces or a CUDA graph captures, whose
    tensors belong to that graph."""
    if torch.compiler.is_compiling() or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return torch.full((1,), value, dtype=torch.float32, device=device)
    return _kept_constant(value.hex(), device)  # the exact bits: -0.0 is not 0.0 here


@functools.lru_cache(maxsize=256)
def _kept_constant(bits: str, device: torch.device) -> Tensor:
    # an ordinary tensor even when first asked for under inference_mode, so that training may save it later
    with torch.inference_mode(False), torch.no_grad():
        return torch.full((1,), float.fromhex(bits), dtype=torch.float32, device=device)


def lif_sequence(currents: Tensor, form: RecurrenceForm, final_state: bool = False,
                 potential_sums: bool = False) -> FusedRun:
    """Run a layer whose dynamics are ``form`` over ``currents`` (T, ...) in the kernels."""
    from spikefold.train.kernels import ops

    x, unrows = rows(currents)
    steps = x.shape[0]
    threshold = _schedule(form.threshold, steps, x)
    # no gradient to the width unless PSG's smooth step carries one, as through surrogates.spike
    width = form.width.detach() if torch.is_tensor(form.width) and not form.smooth_width else form.width
    width = _schedule(width, steps, x)
    decay = _schedule(form.decay, 1, x)
    gain = _schedule(1.0 if form.input_gain is None else form.input_gain, 1, x)
    scale = _schedule(1.0 if form.output_scale is None else form.output_scale, 1, x)
    if torch.is_tensor(form.initial) and form.initial.requires_grad:
        raise ValueError("the kernels give no gradient to the initial potential; pass it detached")
    initial = _schedule(0.0 if form.initial is None else form.initial, 1, x)
    save_h = torch.is_grad_enabled() and any(t.requires_grad for t in (x, decay, gain, threshold, width, scale))
    out, _, final_u, fired, sums = ops.lif(
        x, decay, gain, threshold, width, scale, initial, form.reset == "zero", form.relative,
        form.output_scale is not None, form.surrogate, save_h, final_state, potential_sums)
    moments = None
    if potential_sums:  # the count is a fill on the device, made only for the layers that ask
        moments = (torch.full((), float(x.numel()), dtype=torch.float64, device=x.device), sums[0], sums[1])
    return FusedRun(unrows(out),
                    unrows(final_u.view(1, -1))[0] if final_state else None,
                    unrows(fired.view(1, -1))[0] if final_state else None,
                    moments)


def atgo_training_sequence(currents: Tensor, decay: Tensor, fc: float, tgo: str, k0: float, v_ref: float
                           ) -> tuple[Tensor, Tensor]:
    """DS-ATGO in training mode: (spikes shaped like ``currents``, the threshold of each timestep)."""
    from spikefold.train.kernels import ops

    x, unrows = rows(currents)
    out, _, thresholds, _ = ops.atgo(x, _schedule(decay, 1, x), fc, tgo, k0, v_ref)
    return unrows(out), thresholds
