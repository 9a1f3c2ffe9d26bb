"""Triton kernels for the LIF-family recurrence of :class:`spikefold.train.neurons.base.RecurrenceForm`.

Every tensor is seen as rows: row t holds the N elements of timestep t in memory order (``kernels.rows`` builds
these views), so one program owns a block of neurons and walks all T timesteps with the membrane potential in
registers. The forward writes H (fp32) for the backward, which walks the timesteps in reverse and rebuilds
S(t) and U(t-1) from H exactly as the forward made them. Parameter gradients are summed per program into a
partials row (decay, input gain, threshold, width, output scale) that the caller adds up.

Both timestep loops are software-pipelined by Triton (``tl.range(T, num_stages=STAGES)``): the loads of the next
STAGES - 1 timesteps (the input; in the backward the upstream gradient, H and the input) are in flight as
asynchronous copies into shared memory while a program computes the current one, so that a long sequence over
few neurons is not bound by one memory latency per timestep. Fetching ahead by hand into registers does not do
this: handing a fetched value on to the next iteration is a register move, and a move waits for its load.

Arithmetic follows the eager reference operation by operation (``enable_fp_fusion=False`` keeps a * u + b * i
two roundings, like two PyTorch ops; division that decides a spike is IEEE-rounded ``div_rn``), so spikes agree
bit for bit and gradients to fp32 rounding. tests/compile_kernels.py compiles 198 variants for sm_90 (every
forward flag combination, every backward dynamics combination per surrogate, DS-ATGO's step modes), each with
and without Triton's alignment specialisation, checks their PTX, and checks that the aligned cubins are
pipelined, use 128-bit accesses and fit ops.PROGRAMS_PER_SM programs per multiprocessor; it and the interpreter
tests pass with Triton 3.3 to 3.9.
"""

from __future__ import annotations

import triton
import triton.language as tl

SURROGATES = ("rectangular", "triangular", "sigmoid", "arctan")  # the order of the SHAPE constexpr
PARTIALS = ("decay", "input_gain", "threshold", "width", "output_scale")  # columns of the partials rows
LAUNCH = {"enable_fp_fusion": False}


@triton.jit
def _surrogate_derivative(x, w, SHAPE: tl.constexpr):
    """f'(x) of spikefold.train.surrogates.derivative, same operations."""
    if SHAPE == 0:
        d = tl.where(tl.abs(x) < w / 2.0, 1.0, 0.0) / w
    elif SHAPE == 1:
        d = tl.maximum(1.0 - tl.abs(x) / w, 0.0) / w
    elif SHAPE == 2:
        sg = tl.sigmoid(4.0 * x / w)
        d = (4.0 / w) * sg * (1.0 - sg)
    else:
        z = 3.141592653589793 * x / w
        d = 1.0 / (w * (1.0 + z * z))
    return d


@triton.jit
def _within(cols, N, row_exists):
    """The load mask for a row that may not exist (the backward's H(t - 1) at t = 0). Written as one
    comparison because Triton's interpreter rejects a vector mask and-ed with a scalar condition."""
    return cols < tl.where(row_exists, N, 0)


@triton.jit
def _argument(h, thr, RELATIVE: tl.constexpr):
    """The surrogate's argument x: H/threshold - 1 (TrSG) or H - threshold."""
    if RELATIVE:
        x = tl.math.div_rn(h, thr) - 1.0
    else:
        x = h - thr
    return x


@triton.jit
def _reset(h, s, thr, ZERO_RESET: tl.constexpr):
    if ZERO_RESET:
        u = h * (1.0 - s)
    else:
        u = h - thr * s
    return u


@triton.jit
def lif_forward_kernel(x_ptr, x_row_stride, out_ptr, h_ptr, final_ptr, fired_ptr, moments_ptr,
                       decay_ptr, gain_ptr, thr_ptr, thr_stride, scale_ptr, initial_ptr, T, N,
                       ZERO_RESET: tl.constexpr, RELATIVE: tl.constexpr, SCALE_OUTPUT: tl.constexpr,
                       SAVE_H: tl.constexpr, FINAL: tl.constexpr, MOMENTS: tl.constexpr, BLOCK: tl.constexpr,
                       STAGES: tl.constexpr):
    pid = tl.program_id(0)
    cols = pid * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    a = tl.load(decay_ptr)
    b = tl.load(gain_ptr)
    c = tl.load(scale_ptr)
    u = tl.zeros([BLOCK], tl.float32) + tl.load(initial_ptr)
    fired = tl.zeros([BLOCK], tl.int8)
    sum_h = tl.zeros([BLOCK], tl.float64)
    sum_h2 = tl.zeros([BLOCK], tl.float64)
    out_row = out_ptr + cols
    h_row = h_ptr + cols
    x_row = x_ptr + cols
    for t in tl.range(T, num_stages=STAGES):  # pipelined: see the module's docstring
        i = tl.load(x_row, mask=mask, other=0.0).to(tl.float32)
        thr = tl.load(thr_ptr + t * thr_stride)
        h = a * u + b * i
        s = tl.where(_argument(h, thr, RELATIVE) > 0.0, 1.0, 0.0)
        if SCALE_OUTPUT:
            out = c * s
        else:
            out = s
        tl.store(out_row, out.to(out_ptr.dtype.element_ty), mask=mask)
        if SAVE_H:
            tl.store(h_row, h, mask=mask)
        if FINAL:
            fired = tl.maximum(fired, s.to(tl.int8))
        if MOMENTS:
            h64 = tl.where(mask, h, 0.0).to(tl.float64)
            sum_h += h64
            sum_h2 += h64 * h64
        u = _reset(h, s, thr, ZERO_RESET)
        x_row += x_row_stride
        out_row += N
        h_row += N
    if FINAL:
        tl.store(final_ptr + cols, u, mask=mask)
        tl.store(fired_ptr + cols, fired, mask=mask)
    if MOMENTS:
        tl.store(moments_ptr + 2 * pid, tl.sum(sum_h, 0))
        tl.store(moments_ptr + 2 * pid + 1, tl.sum(sum_h2, 0))


@triton.jit
def lif_backward_kernel(grad_out_ptr, grad_out_row_stride, grad_x_ptr, h_ptr, x_ptr, x_row_stride,
                        moments_grad_ptr, partials_ptr, decay_ptr, gain_ptr, thr_ptr, thr_stride, width_ptr,
                        width_stride, scale_ptr, initial_ptr, T, N, last_row, last_grad_out_row, last_x_row,
                        ZERO_RESET: tl.constexpr, RELATIVE: tl.constexpr, SCALE_OUTPUT: tl.constexpr,
                        SHAPE: tl.constexpr, MOMENTS: tl.constexpr, DECAY_GRAD: tl.constexpr,
                        GAIN_GRAD: tl.constexpr, THR_GRAD: tl.constexpr, WIDTH_GRAD: tl.constexpr,
                        SCALE_GRAD: tl.constexpr, BLOCK: tl.constexpr, STAGES: tl.constexpr):
    pid = tl.program_id(0)
    cols = pid * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    a = tl.load(decay_ptr)
    b = tl.load(gain_ptr)
    c = tl.load(scale_ptr)
    u0 = tl.load(initial_ptr)
    if MOMENTS:  # d loss / d sum(H) and d loss / d sum(H^2)
        g1 = tl.load(moments_grad_ptr).to(tl.float32)
        g2 = tl.load(moments_grad_ptr + 1).to(tl.float32)
    grad_u = tl.zeros([BLOCK], tl.float32)  # d loss / d U(t), flowing back from t + 1
    acc_decay = tl.zeros([BLOCK], tl.float32)
    acc_gain = tl.zeros([BLOCK], tl.float32)
    acc_thr = tl.zeros([BLOCK], tl.float32)
    acc_width = tl.zeros([BLOCK], tl.float32)
    acc_scale = tl.zeros([BLOCK], tl.float32)
    gx_row = grad_x_ptr + last_row + cols
    go_row = grad_out_ptr + last_grad_out_row + cols
    x_row = x_ptr + last_x_row + cols
    h_row = h_ptr + last_row + cols
    h = tl.load(h_row, mask=mask, other=0.0)
    # the surrogate's argument of step t; each step computes step t - 1's to rebuild U(t - 1) and hands it on
    thr = tl.load(thr_ptr + (T - 1) * thr_stride)
    x = _argument(h, thr, RELATIVE)
    for k in tl.range(T, num_stages=STAGES):  # pipelined: see the module's docstring
        t = T - 1 - k
        go = tl.load(go_row, mask=mask, other=0.0).to(tl.float32)
        h_row -= N
        h_prev = tl.load(h_row, mask=_within(cols, N, t > 0), other=0.0)  # H(t - 1)
        if GAIN_GRAD:
            i = tl.load(x_row, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(width_ptr + t * width_stride)
        s = tl.where(x > 0.0, 1.0, 0.0)
        sg = _surrogate_derivative(x, w, SHAPE)
        if SCALE_OUTPUT:
            grad_s = go * c
        else:
            grad_s = go
        if ZERO_RESET:  # U = H (1 - S): autograd differentiates through S as well
            grad_s = grad_s - grad_u * h
            grad_h = grad_u * (1.0 - s)
        else:  # U = H - threshold S
            grad_s = grad_s - grad_u * thr
            grad_h = grad_u
        grad_x_arg = grad_s * sg
        if RELATIVE:
            grad_h += grad_x_arg / thr
        else:
            grad_h += grad_x_arg
        if MOMENTS:
            grad_h += g1 + 2.0 * h * g2
        grad_h = tl.where(mask, grad_h, 0.0)
        # U(t-1), rebuilt from H(t-1) exactly as the forward made it (U(0) = initial at t = 0)
        thr_prev = tl.load(thr_ptr + tl.maximum(t - 1, 0) * thr_stride)
        x_prev = _argument(h_prev, thr_prev, RELATIVE)
        s_prev = tl.where(x_prev > 0.0, 1.0, 0.0)
        u_prev = tl.where(t > 0, _reset(h_prev, s_prev, thr_prev, ZERO_RESET), u0)
        if DECAY_GRAD:
            acc_decay += grad_h * u_prev
        if GAIN_GRAD:
            acc_gain += grad_h * i
        if THR_GRAD:
            if RELATIVE:
                acc_thr -= grad_x_arg * h / (thr * thr)
            else:
                acc_thr -= grad_x_arg
            if not ZERO_RESET:
                acc_thr -= grad_u * s
        if WIDTH_GRAD:  # straight-through smooth step g(x/w): dS/dw = -(x/w) f'(x)
            acc_width -= grad_s * (x / w) * sg
        if SCALE_GRAD:
            acc_scale += go * s
        tl.store(gx_row, (grad_h * b).to(grad_x_ptr.dtype.element_ty), mask=mask)
        grad_u = grad_h * a
        h = h_prev
        thr = thr_prev
        x = x_prev
        go_row -= grad_out_row_stride
        if GAIN_GRAD:
            x_row -= x_row_stride
        gx_row -= N
    row = partials_ptr + 5 * pid  # only the sums asked for: a block-wide reduction each (the rest stay unset)
    if DECAY_GRAD:
        tl.store(row, tl.sum(acc_decay, 0))
    if GAIN_GRAD:
        tl.store(row + 1, tl.sum(acc_gain, 0))
    if THR_GRAD:
        tl.store(row + 2, tl.sum(acc_thr, 0))
    if WIDTH_GRAD:
        tl.store(row + 3, tl.sum(acc_width, 0))
    if SCALE_GRAD:
        tl.store(row + 4, tl.sum(acc_scale, 0))


@triton.jit(do_not_specialize=["t"])
def adaptive_step_kernel(x_ptr, x_row_stride, out_ptr, h_ptr, sums_ptr, totals_ptr, thr_ptr, std_ptr,
                         constants_ptr, decay_ptr, N, t, SPIKE: tl.constexpr, INTEGRATE: tl.constexpr,
                         REDUCED: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """Launch t of DS-ATGO in training (zero reset, U(0) = 0), each program over the blocks pid, pid +
    programs, ... With SPIKE, every program first turns step t - 1's sums of H and H^2 (fp64) into that step's
    threshold f_c (mean + std), all in the same order so that all agree (constants: element count, f_c;
    program 0 stores the threshold and std), then spikes and resets step t - 1; with INTEGRATE it integrates
    step t and stores its row of step t's sums. The sums of step t are rows of half t % 2 of sums (2, programs,
    2); with REDUCED (under DDP) step t - 1's were added up and all-reduced into totals (2,) between launches.
    Everything else is addressed from t here, so a timestep costs the host one launch and no tensor ops."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    if SPIKE:
        if REDUCED:
            s1 = tl.load(totals_ptr)
            s2 = tl.load(totals_ptr + 1)
        else:
            rows = tl.arange(0, ROWS)
            valid = rows < programs
            previous_sums = sums_ptr + ((t - 1) % 2) * 2 * programs
            s1 = tl.sum(tl.load(previous_sums + 2 * rows, mask=valid, other=0.0), 0)
            s2 = tl.sum(tl.load(previous_sums + 2 * rows + 1, mask=valid, other=0.0), 0)
        count = tl.load(constants_ptr)
        mean = s1 / count  # fp64: IEEE-rounded division and square root (compile_kernels checks)
        std = tl.sqrt(tl.maximum(s2 / count - mean * mean, 0.0))
        thr = (tl.load(constants_ptr + 1) * (mean + std)).to(tl.float32)
        if pid == 0:
            tl.store(thr_ptr + t - 1, thr)
            tl.store(std_ptr + t - 1, std.to(tl.float32))
    a = tl.load(decay_ptr)
    step = t.to(tl.int64)
    previous_row = (step - 1) * N
    row = step * N
    x_row = step * x_row_stride
    sum_h = tl.zeros([BLOCK], tl.float64)
    sum_h2 = tl.zeros([BLOCK], tl.float64)
    for start in range(pid * BLOCK, N, programs * BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < N
        u = tl.zeros([BLOCK], tl.float32)
        if SPIKE:
            h_prev = tl.load(h_ptr + previous_row + cols, mask=mask, other=0.0)
            s = tl.where(h_prev - thr > 0.0, 1.0, 0.0)
            tl.store(out_ptr + previous_row + cols, s.to(out_ptr.dtype.element_ty), mask=mask)
            u = h_prev * (1.0 - s)
        if INTEGRATE:
            h = a * u + tl.load(x_ptr + x_row + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(h_ptr + row + cols, h, mask=mask)
            h64 = tl.where(mask, h, 0.0).to(tl.float64)
            sum_h += h64
            sum_h2 += h64 * h64
    if INTEGRATE:
        sums = sums_ptr + (t % 2) * 2 * programs + 2 * pid
        tl.store(sums, tl.sum(sum_h, 0))
        tl.store(sums + 1, tl.sum(sum_h2, 0))
