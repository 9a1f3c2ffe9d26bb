"""The Triton kernels as torch.library custom ops with autograd and fake (shape-only) implementations, so that
torch.compile treats each as one opaque op (no graph break) and sees one op per layer and direction. Outside
torch.compile the same functions run through a plain autograd.Function (``lif`` and ``atgo``, see :func:`_either`):
the custom ops' dispatch (schema checks, the dispatcher's round trips through Python, their autograd wrapper) costs
the host about as much again as the rest of a call (benchmarks/kernel_host.py), and on a layer the GPU runs in a
fraction of a millisecond the GPU waits for the host. Tensors here are in rows form, (T, N) with unit stride along N
(see ``rows``).

Imported on first use only: it needs Triton.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.library import custom_op

from spikefold.train import surrogates
from spikefold.train.distributed import distributed
from spikefold.train.kernels import triton_lif


PROGRAMS_PER_SM = 4
MAX_BLOCK = 512
# The timestep loops' pipeline (see triton_lif): each program keeps its loads of the next PIPELINE_STAGES - 1
# timesteps in flight. Each stage costs a row of shared memory per stream, so a deeper pipeline lets fewer
# programs of MAX_BLOCK reside on a multiprocessor (tests/compile_kernels.py checks PROGRAMS_PER_SM still fit);
# the GPU check's launch sweep times other depths.
PIPELINE_STAGES = 4


@functools.cache
def resident_programs(device: torch.device) -> int:
    """The programs a launch aims for: PROGRAMS_PER_SM per multiprocessor (16 off a GPU, on the interpreter).
    It is also the most a kernel that loops over blocks by itself is given."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return PROGRAMS_PER_SM * sms


# Host arithmetic in plain Python: triton.cdiv and triton.next_power_of_2 are Triton functions, a few microseconds
# per call from Python, twice per launch.
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_power_of_2(a: int) -> int:
    return 1 << (a - 1).bit_length()


def launch_shape(n: int, device: torch.device) -> tuple[int, int, int]:
    """(programs, neurons per program, warps). Each program walks every timestep in turn, so the GPU fills
    only with several programs per multiprocessor: aim for PROGRAMS_PER_SM, with 128 to MAX_BLOCK neurons each,
    4 per thread (one 128-bit access where the tensors are 16-byte aligned and N a multiple of 16, as Triton
    then specialises). Not 1024: the heaviest backward needs up to 128 registers per thread, so only two
    programs of 8 warps would fit on an SM; tests/compile_kernels.py checks that PROGRAMS_PER_SM of MAX_BLOCK
    fit, for every variant, on an H100."""
    block = min(MAX_BLOCK, max(128, _next_power_of_2(_cdiv(n, resident_programs(device)))))
    return _cdiv(n, block), block, block // 128


def _step_stride(schedule: Tensor) -> int:
    """How far the kernels step through a (1,) or (T,) schedule per timestep."""
    return schedule.stride(0) if schedule.numel() > 1 else 0


def _unit_stride(x: Tensor) -> Tensor:
    """x with unit stride along N; any row stride (0 for a gradient broadcast over time) is kept."""
    return x if x.stride(1) == 1 or x.shape[1] == 1 else x.contiguous()


def _lif_forward(current: Tensor, decay: Tensor, gain: Tensor, threshold: Tensor, width: Tensor, scale: Tensor,
                 initial: Tensor, zero_reset: bool, relative: bool, scale_output: bool, surrogate: str,
                 save_h: bool, final: bool, moments: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(output, H for the backward, final U, fired at least once, [sum H, sum H^2]); unrequested ones empty.
    ``surrogate`` only matters to the backward; so does ``width``, which gets a gradient (PSG's smooth step,
    -(x/w) f'(x)) when it requires one."""
    current = _unit_stride(current)  # a caller other than lif_sequence (or a compiler) may pass any strides
    steps, n = current.shape
    programs, block, warps = launch_shape(n, current.device)
    out = torch.empty((steps, n), dtype=current.dtype, device=current.device)
    f32 = {"dtype": torch.float32, "device": current.device}
    h = torch.empty((steps, n) if save_h else (0,), **f32)
    final_u = torch.empty((n,) if final else (0,), **f32)
    fired = torch.empty((n,) if final else (0,), dtype=torch.int8, device=current.device)
    sums = torch.empty((programs, 2) if moments else (0,), dtype=torch.float64, device=current.device)
    triton_lif.lif_forward_kernel[(programs,)](
        current, current.stride(0), out, h, final_u, fired, sums, decay, gain, threshold, _step_stride(threshold),
        scale, initial, steps, n, ZERO_RESET=zero_reset, RELATIVE=relative, SCALE_OUTPUT=scale_output,
        SAVE_H=save_h, FINAL=final, MOMENTS=moments, BLOCK=block, STAGES=PIPELINE_STAGES, num_warps=warps,
        **triton_lif.LAUNCH)
    return out, h, final_u, fired.bool(), sums.sum(0) if moments else sums


lif_forward = custom_op("spikefold::lif_forward", _lif_forward, mutates_args=())


@lif_forward.register_fake
def _(current, decay, gain, threshold, width, scale, initial, zero_reset, relative, scale_output, surrogate,
      save_h, final, moments):
    steps, n = current.shape
    f32 = {"dtype": torch.float32, "device": current.device}
    return (current.new_empty((steps, n)), torch.empty((steps, n) if save_h else (0,), **f32),
            torch.empty((n,) if final else (0,), **f32),
            torch.empty((n,) if final else (0,), dtype=torch.bool, device=current.device),
            torch.empty((2,) if moments else (0,), dtype=torch.float64, device=current.device))


def _lif_backward(grad_out: Tensor, moments_grad: Tensor, h: Tensor, current: Tensor, decay: Tensor, gain: Tensor,
                  threshold: Tensor, width: Tensor, scale: Tensor, initial: Tensor, zero_reset: bool,
                  relative: bool, scale_output: bool, surrogate: str, moments: bool, param_grads: Sequence[bool],
                  input_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(d loss / d current, the parameter gradients in triton_lif.PARTIALS order as one (5,) tensor, those not in
    ``param_grads`` undefined). ``current`` is read only when the input gain needs its gradient (else it may be
    empty)."""
    h = h.contiguous()  # the kernel steps through H by rows of exactly N
    steps, n = h.shape
    programs, block, warps = launch_shape(n, h.device)
    grad_out = _unit_stride(grad_out)
    grad_x = torch.empty((steps, n), dtype=input_dtype, device=h.device)
    partials = torch.empty((programs, len(triton_lif.PARTIALS)), dtype=torch.float32, device=h.device)
    reads_input = param_grads[1]
    x = _unit_stride(current) if reads_input else h
    triton_lif.lif_backward_kernel[(programs,)](
        grad_out, grad_out.stride(0), grad_x, h, x, x.stride(0), moments_grad, partials, decay, gain,
        threshold, _step_stride(threshold), width, _step_stride(width), scale, initial, steps, n, (steps - 1) * n,
        (steps - 1) * grad_out.stride(0), (steps - 1) * x.stride(0),
        ZERO_RESET=zero_reset, RELATIVE=relative, SCALE_OUTPUT=scale_output,
        SHAPE=triton_lif.SURROGATES.index(surrogate), MOMENTS=moments, DECAY_GRAD=param_grads[0],
        GAIN_GRAD=param_grads[1], THR_GRAD=param_grads[2], WIDTH_GRAD=param_grads[3], SCALE_GRAD=param_grads[4],
        BLOCK=block, STAGES=PIPELINE_STAGES, num_warps=warps, **triton_lif.LAUNCH)
    return grad_x, partials.sum(0) if any(param_grads) else partials.new_empty(len(triton_lif.PARTIALS))


lif_backward = custom_op("spikefold::lif_backward", _lif_backward, mutates_args=())


@lif_backward.register_fake
def _(grad_out, moments_grad, h, current, decay, gain, threshold, width, scale, initial, zero_reset, relative,
      scale_output, surrogate, moments, param_grads, input_dtype):
    return (torch.empty(h.shape, dtype=input_dtype, device=h.device),
            torch.empty((len(triton_lif.PARTIALS),), dtype=torch.float32, device=h.device))


def _zeros_if_none(grad_out: Tensor | None, h: Tensor, dtype: torch.dtype) -> Tensor:
    """The output's gradient, or zeros (one row broadcast over time) when only another output has one."""
    if grad_out is not None:
        return grad_out
    return torch.zeros((1, h.shape[1]), dtype=dtype, device=h.device).expand(h.shape)


def _backward_op(ctx):
    """The backward kernel's op: the custom op where the forward ran as one (under torch.compile), else the
    function itself (see :func:`_either`)."""
    return _lif_backward if getattr(ctx, "direct", False) else lif_backward


def _param_grads(ctx, first: int) -> list[bool]:
    """Which of decay, gain, threshold, width, scale (inputs ``first`` .. ``first + 4``) need a gradient."""
    return [bool(ctx.needs_input_grad[first + k]) for k in range(len(triton_lif.PARTIALS))]


def _setup_lif(ctx, inputs, output):
    (current, decay, gain, threshold, width, scale, initial, zero_reset, relative, scale_output, surrogate,
     save_h, final, moments) = inputs
    ctx.set_materialize_grads(False)
    # H is the backward's own record, and the final potential and who fired feed running statistics only:
    # no gradient flows back through them, and autograd is told so rather than dropping one silently.
    ctx.mark_non_differentiable(output[1], output[2], output[3])
    ctx.flags = (zero_reset, relative, scale_output, surrogate, moments)
    ctx.param_grads = _param_grads(ctx, 1)
    ctx.input_dtype = current.dtype
    kept = current if ctx.param_grads[1] else current.new_empty(0)  # the input is read back only for d/d gain
    ctx.save_for_backward(output[1], kept, decay, gain, threshold, width, scale, initial)


def _backward_lif(ctx, grad_out, grad_h, grad_final, grad_fired, grad_moments):
    h, current, decay, gain, threshold, width, scale, initial = ctx.saved_tensors
    if h.numel() == 0:
        raise RuntimeError("spikefold::lif_forward ran without saving H (save_h=False) but a gradient is needed")
    zero_reset, relative, scale_output, surrogate, moments = ctx.flags
    grad_out = _zeros_if_none(grad_out, h, ctx.input_dtype)
    # the sums' gradient is read only where one flows back to them; else any tensor stands in, unread
    moments = moments and grad_moments is not None
    grad_x, grads = _backward_op(ctx)(grad_out, grad_moments if moments else h, h, current, decay, gain, threshold,
                                      width, scale, initial, zero_reset, relative, scale_output, surrogate, moments,
                                      ctx.param_grads, ctx.input_dtype)
    params = (decay, gain, threshold, width, scale)
    param_grads = [grads[k].reshape(p.shape).to(p.dtype) if ctx.param_grads[k] else None
                   for k, p in enumerate(params)]
    return (grad_x if ctx.needs_input_grad[0] else None, *param_grads, None, None, None, None, None, None, None,
            None)


lif_forward.register_autograd(_backward_lif, setup_context=_setup_lif)


def _atgo_adaptive_forward(current: Tensor, decay: Tensor, fc: float, tgo: str, k0: float, v_ref: float
                           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """DS-ATGO in training: (spikes, H, threshold per timestep, surrogate width per timestep).

    Each timestep's threshold needs the mean and std of H over the whole layer (and over all processes) before
    any neuron may spike, so the timesteps cannot share one launch: launch t integrates step t and writes
    per-program sums of H and H^2; launch t + 1 reduces them to step t's threshold in every program, then
    spikes step t and integrates step t + 1. T + 1 launches, no other work per timestep on one GPU; under
    DDP the sums are added up and all-reduced between launches (two small ops). No host synchronisation."""
    current = _unit_stride(current)
    steps, n = current.shape
    blocks, block, warps = launch_shape(n, current.device)
    programs = min(blocks, resident_programs(current.device))  # each over several blocks when fewer
    out = torch.empty((steps, n), dtype=current.dtype, device=current.device)
    h = torch.empty((steps, n), dtype=torch.float32, device=current.device)
    thresholds = torch.empty(steps, dtype=torch.float32, device=current.device)
    stds = torch.empty(steps, dtype=torch.float32, device=current.device)
    sums = torch.empty((2, programs, 2), dtype=torch.float64, device=current.device)  # steps t and t - 1
    constants = torch.full((2,), float(n), dtype=torch.float64, device=current.device)  # (count, f_c)
    constants[1] = fc
    reduced = distributed()
    totals = torch.empty(2 if reduced else 0, dtype=torch.float64, device=current.device)
    if reduced:
        dist.all_reduce(constants[:1])
    launch = triton_lif.adaptive_step_kernel[(programs,)]
    fixed = {"REDUCED": reduced, "BLOCK": block, "ROWS": _next_power_of_2(programs), "num_warps": warps,
             **triton_lif.LAUNCH}
    for t in range(steps + 1):
        launch(current, current.stride(0), out, h, sums, totals, thresholds, stds, constants, decay, n, t,
               SPIKE=t > 0, INTEGRATE=t < steps, **fixed)
        if reduced and t < steps:
            torch.sum(sums[t % 2], 0, out=totals)
            dist.all_reduce(totals)
    return out, h, thresholds, surrogates.tgo_width(tgo, thresholds, stds, k0, v_ref)


atgo_adaptive_forward = custom_op("spikefold::atgo_adaptive_forward", _atgo_adaptive_forward, mutates_args=())


@atgo_adaptive_forward.register_fake
def _(current, decay, fc, tgo, k0, v_ref):
    steps, n = current.shape
    f32 = {"dtype": torch.float32, "device": current.device}
    return (current.new_empty((steps, n)), torch.empty((steps, n), **f32), torch.empty(steps, **f32),
            torch.empty(steps, **f32))


def _setup_atgo(ctx, inputs, output):
    current, decay = inputs[:2]
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(*output[1:])  # as on the eager path: the statistics are of detached H
    ctx.input_dtype = current.dtype
    ctx.save_for_backward(output[1], decay, output[2], output[3])


def _backward_atgo(ctx, grad_out, grad_h, grad_thresholds, grad_width):
    h, decay, thresholds, width = ctx.saved_tensors
    one, zero = decay.new_ones(1), decay.new_zeros(1)
    grad_out = _zeros_if_none(grad_out, h, ctx.input_dtype)
    grad_x, grads = _backward_op(ctx)(grad_out, h.new_zeros(2, dtype=torch.float64), h, h.new_empty(0), decay,
                                      one, thresholds, width, one, zero, True, False, False, "rectangular", False,
                                      [bool(ctx.needs_input_grad[1]), False, False, False, False], ctx.input_dtype)
    return (grad_x if ctx.needs_input_grad[0] else None,
            grads[0].reshape(decay.shape) if ctx.needs_input_grad[1] else None, None, None, None, None)


atgo_adaptive_forward.register_autograd(_backward_atgo, setup_context=_setup_atgo)


def _either(op, forward, setup_context, backward):
    """Call ``op`` (a custom op) with its gradient: the op itself under torch.compile; elsewhere its forward,
    autograd set-up and backward as a plain autograd.Function, the same functions, so the same values and
    gradients, without the custom op's dispatch. The Function's forward takes ``ctx`` itself: with a separate
    setup_context, Function.apply binds its arguments through inspect.signature on every call, about a sixth of a
    LIF call's host work."""
    def run(ctx, *inputs):
        ctx.direct = True  # the backward calls its kernel's function directly too
        output = forward(*inputs)
        setup_context(ctx, inputs, output)
        return output

    direct = type(f"Direct{forward.__name__}", (torch.autograd.Function,),
                  {"forward": staticmethod(run), "backward": staticmethod(backward)})

    def call(*inputs):
        return op(*inputs) if torch.compiler.is_compiling() else direct.apply(*inputs)

    return call


lif = _either(lif_forward, _lif_forward, _setup_lif, _backward_lif)
atgo = _either(atgo_adaptive_forward, _atgo_adaptive_forward, _setup_atgo, _backward_atgo)
