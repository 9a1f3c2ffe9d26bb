"""The integer network: every integer a Loihi 2 core holds for a feed-forward spiking network, and the
fixed-point equations Lava's bit-accurate models (lava-nc 0.10.0, ``Loihi2SimCfg(select_tag="fixed_pt")``)
compute on them.

This module is the one place those equations are written. They take numpy arrays or torch tensors alike
(int64; ``_ops`` supplies the few functions the two libraries spell differently), so ``spikefold.sim``
runs this same code vectorised over samples on CPU or GPU; ``spikefold.deploy`` hands the same integers to
Lava's processes and the tests check that both agree on every spike and state integer. What a layer needs beyond
Loihi's basic neuron is said here as data (:attr:`Layer.needs`); which Lava process runs it is deploy's choice.

A network is a directed acyclic graph of layers in topological order. Each layer is a population of LIF
neurons fed by one or more :class:`Connection` s (Dense or Conv2d synapses from the encoded input or from an
earlier layer's spikes); the inputs arriving at a neuron are summed, as Lava sums every Dense connected to one
port. A chain ``input -> layer0 -> layer1 -> ...`` is the common case; residual networks add connections that
skip layers (a shortcut, or the addends of a SEW block's sum, each through its own synapses). The last layer is
either a *readout*, an integrating neuron (``dv = 0``) that never fires and whose voltage after the last timestep
is the logit, or a spiking layer (as networks imported from other tools end), whose spike counts are.

Time is layer-synchronous: at timestep t every layer sees its sources' outputs of the same t. Lava delivers
what a Dense receives one step later, so on Lava a layer at depth d (the longest path from the input, counted in
connections) runs d steps behind the input, and a connection that skips layers carries
``depth(layer) - depth(source) - 1`` extra steps of synaptic delay to arrive in step (:meth:`IntNetwork.delay`).
A layer may also read its own spikes of the previous timestep (a recurrent connection: Lava's Dense from its
s_out back to its a_in, whose one step of delay is that timestep on either timing); a later layer's spikes
would reach it too late on Lava's pipeline, so that is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from spikefold.core.errors import DataError, HardwareRangeError
from spikefold.export.hw_config import HwConfig

DECAY_SHIFT = 12  # decays are fractions of 2**12
DECAY_UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6  # synaptic input is MSB-aligned into the 24-bit current by << 6
VTH_SHIFT = 6  # so is the threshold
STATE_BITS = 24
STATE_MAX = 1 << (STATE_BITS - 1)  # 2**23
VTH_NEVER = (1 << 17) - 1  # largest 17-bit threshold: a readout neuron uses it


class _ArrayOps(NamedTuple):
    """The few functions the equations need that numpy and torch spell differently. Everything else is an
    operator (``+ * << >> & < !=``), which both define identically for int64 arrays."""

    int64: Callable[[Any], Any]
    int32: Callable[[Any], Any]  # keeps the low 32 bits, two's complement, as a C cast does
    where: Callable[[Any, Any, Any], Any]
    clip: Callable[[Any, Any, Any], Any]
    concatenate: Callable[[list], Any]  # along the first axis


_NUMPY = _ArrayOps(int64=lambda a: np.asarray(a, dtype=np.int64), int32=lambda a: np.asarray(a).astype(np.int32),
                   where=np.where, clip=np.clip, concatenate=np.concatenate)


def _ops(*arrays: Any) -> _ArrayOps:
    """numpy's functions, or torch's when any argument is a torch tensor (the simulator runs these same
    equations on int64 tensors, on CPU or GPU; torch is imported only then)."""
    if any(type(a).__module__.startswith("torch") for a in arrays):
        import torch

        return _ArrayOps(
            int64=lambda a: a.to(torch.int64) if isinstance(a, torch.Tensor) else torch.as_tensor(a, dtype=torch.int64),
            int32=lambda a: a.to(torch.int32),
            where=torch.where,
            clip=lambda a, lo, hi: torch.clamp(a, min=lo, max=hi),
            concatenate=torch.cat,
        )
    return _NUMPY


def _trunc_decay(x: Any, keep: int) -> Any:
    """x * keep / 4096 rounded toward zero, as Loihi's decay unit computes it (x: int64 array or tensor)."""
    if keep == 0:  # du = 4095 or dv = 4096: the state is forgotten every step
        return 0
    x = _ops(x).int64(x)
    if keep == DECAY_UNITY:  # dv = 0: no decay (x * 4096 >> 12 is x exactly)
        return x
    prod = x * keep
    # Round toward zero without a branch: a negative product is biased by 4095 before the flooring shift.
    return (prod + ((prod >> 63) & (DECAY_UNITY - 1))) >> DECAY_SHIFT


def wrap32(x: Any) -> Any:
    """Two's-complement wrap to int32: Lava's CPU model computes in int32 and overflows silently."""
    ops = _ops(x)
    return ops.int64(ops.int32(x))  # the cast keeps the low 32 bits: ((x + 2**31) mod 2**32) - 2**31


def shift(x: Any, exp: Any) -> Any:
    """x * 2**exp with an arithmetic (flooring) right shift for negative exponents; ``exp`` is one integer or
    one per element."""
    if isinstance(exp, (int, np.integer)):
        return x << int(exp) if exp >= 0 else x >> -int(exp)
    ops = _ops(x, exp)
    exp = ops.int64(exp)
    return ops.where(exp >= 0, x << ops.clip(exp, 0, None), x >> ops.clip(-exp, 0, None))


@dataclasses.dataclass
class InputEncoding:
    """How samples enter the network: as graded spikes ``x_int = clip(round(x * scale), 0, 2**bits - 1)``.

    Static input (``per_timestep=False``): one vector per sample, sent unchanged at each of its T timesteps;
    encoded arrays are (samples, size). Input that changes every timestep (``per_timestep=True``, event
    frames or spike trains): one vector per sample and timestep, encoded arrays are (samples, T, size), and
    timestep t of a sample sends row t.

    Binary event input is ``bits = 1`` with ``scale = 1``: x_int is 0 or 1, and the synapses it feeds have
    ``num_message_bits = 0``, so Lava's source sends plain spikes and its Dense adds the weights of the
    inputs that spiked. Graded input (``bits > 1``) feeds synapses with ``num_message_bits = bits``, whose
    payload Lava multiplies in.
    """

    size: int
    scale: float
    bits: int
    per_timestep: bool = False

    @property
    def binary(self) -> bool:
        return self.bits == 1

    @property
    def message_bits(self) -> int:
        """``num_message_bits`` of the synapses the input feeds: 0 (plain spikes) for binary input."""
        return 0 if self.binary else self.bits

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Encode float input (samples, ...), or (samples, T, ...) per timestep, into (samples, size) or
        (samples, T, size) integers; values the encoding cannot represent are an error, never silently
        clipped."""
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(len(x), x.shape[1], -1) if self.per_timestep and x.ndim >= 2 else x.reshape(len(x), -1)
        hi = (1 << self.bits) - 1
        q = np.rint(x * self.scale)
        if x.size and (not np.isfinite(x).all() or q.min() < 0 or q.max() > hi):
            what = "binary events (0 or 1)" if self.binary else "[0, 1]"
            raise DataError(
                f"input values span [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}] but the {self.bits}-bit input "
                f"encoding (scale {self.scale:g}) represents [0, {hi / self.scale:.4g}]; scale the data to {what}")
        if self.binary and x.size and not np.array_equal(q, x):
            raise DataError("this network takes binary event input (0 or 1 per input and timestep), but the data "
                            "holds other values; pass the events themselves, not rates or counts")
        return q.astype(np.int64)

    def sample_shape(self, timesteps: int) -> tuple[int, ...]:
        """The shape one encoded sample has: (size,), or (T, size) for per-timestep input."""
        return (timesteps, self.size) if self.per_timestep else (self.size,)

    def check(self, x_int: np.ndarray, timesteps: int) -> np.ndarray:
        """Validate encoded input for a network of ``timesteps``: shape (samples, size), or (samples, T, size) per
        timestep, integers within the encoding's range. Returns it as int64 (itself when it already is)."""
        x = np.asarray(x_int)
        shape = self.sample_shape(timesteps)
        if x.shape[1:] != shape or x.ndim != 1 + len(shape):
            what = "per timestep" if self.per_timestep else "the same at every timestep"
            raise DataError(f"input has shape {x.shape}; this network takes (samples, {', '.join(map(str, shape))}) "
                            f"encoded integers (input {what})")
        if not np.issubdtype(x.dtype, np.integer):
            raise DataError(f"input must be encoded integers (InputEncoding.encode), got dtype {x.dtype}")
        hi = (1 << self.bits) - 1
        if x.size and (x.min() < 0 or x.max() > hi):
            raise DataError(f"input values span [{x.min()}, {x.max()}]; the encoding allows [0, {hi}]")
        return x.astype(np.int64, copy=False)


FLOAT32_EXACT = 1 << 24  # every integer of magnitude <= 2**24 is a float32
FLOAT64_EXACT = 1 << 53


def exact_dtype(bound: int) -> str:
    """The narrowest type in which a sum of integer products is exact when every partial sum stays within
    ``bound`` in magnitude, whatever order the library adds in: "float32" up to 2**24, "float64" up to 2**53,
    else "int64". The products themselves (|w| <= 256, input <= 255) are exact in float32 and in the reduced
    formats torch may substitute for it (TF32, bf16)."""
    if bound <= FLOAT32_EXACT:
        return "float32"
    return "float64" if bound <= FLOAT64_EXACT else "int64"


@dataclasses.dataclass
class Dense:
    """Dense synapses (Lava ``Dense``, bit-accurate model).

    a_out = (W_eff @ s) << weight_exp (arithmetic >> for a negative exponent), in int32, where W_eff is ``weights``
    under Lava's weight rules (:func:`lava_weights`). ``num_message_bits > 0`` means graded input (the payload
    is multiplied in); 0 means binary spikes. Lava delivers a_out one timestep later than s arrived.

    The sum ``W_eff @ s`` runs in floating point where that is exact (:meth:`partial_sum_bound`,
    :func:`exact_dtype`), else in integers; numpy arrays and torch tensors alike.
    """

    weights: np.ndarray  # int, shape (out, in), as handed to Lava's Dense
    weight_exp: int
    num_weight_bits: int = 8
    num_message_bits: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(postsynaptic neurons, presynaptic neurons)."""
        return tuple(self.weights.shape)  # type: ignore[return-value]

    def effective_weights(self) -> np.ndarray:
        """The integers Lava keeps of ``weights`` (:func:`lava_weights`), in the same layout."""
        return lava_weights(self.weights, self.num_weight_bits)

    def max_input(self) -> int:
        """The largest presynaptic value: 2**bits - 1 for graded input, 1 for spikes."""
        return (1 << self.num_message_bits) - 1 if self.num_message_bits > 0 else 1

    def partial_sum_bound(self, max_input: int | None = None) -> int:
        """The largest magnitude any partial sum of one output can reach for inputs in [0, max_input]
        (default :meth:`max_input`): the largest sum of |W_eff| over what one output reads (a matrix row, or a
        kernel's output channel over its input channels and window), times max_input."""
        w = np.abs(self.effective_weights())
        per_output = w.reshape(w.shape[0], -1).sum(axis=1)
        return int(per_output.max(initial=0)) * int(self.max_input() if max_input is None else max_input)

    def exact_weights(self) -> np.ndarray:
        """``effective_weights()`` in the narrowest type in which :meth:`accumulate` is exact."""
        return self.effective_weights().astype(exact_dtype(self.partial_sum_bound()))

    def accumulate(self, s: Any, weights: Any = None) -> Any:
        """``W_eff @ s`` for a batch of presynaptic outputs ``s`` (batch, in) -> (batch, out), exact.

        ``weights`` is ``effective_weights()`` in a type where the sum is exact (:meth:`exact_weights`; the
        simulator hands a torch tensor on ``s``'s device); the sum runs, and the result comes, in that type."""
        w = self.exact_weights() if weights is None else weights
        return self._apply(s.astype(w.dtype) if isinstance(s, np.ndarray) else s.to(w.dtype), w)

    def _apply(self, s: Any, w: Any) -> Any:
        return s @ w.T

    def forward(self, s: Any, weights: Any = None) -> Any:
        """What Lava's Dense sends for presynaptic outputs ``s`` (batch, in): int64 (batch, out). ``weights``:
        as for :meth:`accumulate`."""
        return self.a_out(_ops(s).int64(self.accumulate(s, weights)))

    def a_out(self, acc: Any) -> Any:
        """What Lava's Dense sends, given ``acc = W_eff @ s`` as int64."""
        if self.num_message_bits > 0:  # Lava's graded path accumulates in int32; the binary path in int64
            acc = wrap32(acc)
        return wrap32(shift(acc, self.weight_exp))


def weight_step(mixed: bool, num_weight_bits: int) -> int:
    """The spacing of the integer weights Lava keeps: it truncates ``8 - num_weight_bits (+ 1 for a mixed-sign
    matrix)`` low bits."""
    return 1 << (8 - num_weight_bits + int(mixed))


def weight_range(mixed: bool, num_weight_bits: int) -> tuple[int, int]:
    """The smallest and largest weight on the grid Lava keeps unchanged (multiples of :func:`weight_step`):
    [-256, 256 - step] for a mixed-sign matrix, within +-(256 - step) otherwise."""
    step = weight_step(mixed, num_weight_bits)
    return (-256 if mixed else step - 256), 256 - step


def lava_weights(weights: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """What Lava's Dense keeps of integer weights: clipped to 8 bits ([-256, 255] for mixed sign), then
    truncated to multiples of :func:`weight_step` (toward minus infinity, on the magnitude for an all-negative
    matrix); the sign mode is the whole matrix's (or kernel's)."""
    w = np.asarray(weights, dtype=np.int64)
    lo, hi = int(w.min(initial=0)), int(w.max(initial=0))
    mixed = lo < 0 < hi
    inhibitory = hi <= 0 and lo < 0
    mag = -w if inhibitory else w
    mag = np.clip(mag, -256 if mixed else 0, 255)
    step = weight_step(mixed, num_weight_bits)
    mag = mag // step * step
    return -mag if inhibitory else mag


def integer_weights(w: Any, num_weight_bits: int) -> Any:
    """Real-valued integer-unit weights ``w`` (numpy array or torch tensor) rounded to the nearest values
    :func:`lava_weights` keeps unchanged: multiples of :func:`weight_step` within :func:`weight_range`. Export
    and QAT round with this."""
    mixed = bool(w.min() < 0 < w.max())
    step = weight_step(mixed, num_weight_bits)
    rounded = step * (np.rint(w / step) if isinstance(w, np.ndarray) else (w / step).round())
    return _ops(w).clip(rounded, *weight_range(mixed, num_weight_bits))


@dataclasses.dataclass
class Conv2d(Dense):
    """Convolution synapses: ``weights`` (out, in, kh, kw) over input maps ``input_shape`` (C, H, W), zero
    ``padding`` and ``stride`` on both axes, neurons ordered (channel, row, column); correlation, as torch's
    ``conv2d``.

    a_out is the Dense's with ``W_eff @ s`` the convolution of ``s`` with the effective kernel: Lava's weight
    rules applied to the kernel, whose sign mode is that of the (out, in) matrix the convolution stands for
    (unrolling adds only zeros). It runs as a convolution everywhere, so memory grows with the kernel, never with
    the matrix: torch's ``conv2d`` on CPU tensors, else :meth:`correlate` (numpy arrays, GPU tensors). A pooling
    layer before the convolution is folded into its kernel by export.
    """

    input_shape: tuple[int, int, int] = (1, 1, 1)
    stride: int = 1
    padding: int = 0

    @property
    def output_shape(self) -> tuple[int, int, int]:
        _, h, w = self.input_shape
        k_out, _, kh, kw = np.asarray(self.weights).shape
        return (int(k_out), (h + 2 * self.padding - kh) // self.stride + 1,
                (w + 2 * self.padding - kw) // self.stride + 1)

    @property
    def shape(self) -> tuple[int, int]:
        return int(np.prod(self.output_shape)), int(np.prod(self.input_shape))

    def _apply(self, s: Any, w: Any) -> Any:
        maps = s.reshape(s.shape[0], *self.input_shape)
        if isinstance(s, np.ndarray) or s.device.type != "cpu":
            return self.correlate(maps, w)
        from torch.nn import functional

        # exact too (it adds products), and on the CPU faster (benchmarks/gpu_check_sim.py times both)
        return functional.conv2d(maps, w, stride=self.stride, padding=self.padding).flatten(1)

    def correlate(self, maps: Any, w: Any) -> Any:
        """The convolution of (batch, C, H, W) maps, numpy or torch, with kernel ``w`` -> (batch, out * H' * W'):
        the windows of the zero-padded maps against the kernel, one matrix product per chunk of samples whose
        windows (C * kh * kw values per output position) stay within :data:`WINDOW_VALUES`. On a GPU this
        rather than torch's ``conv2d``: cuDNN's Winograd and FFT algorithms round, and without cuDNN torch runs one
        im2col and one matrix product per sample, two kernel launches per sample and timestep."""
        outputs = int(np.prod(self.output_shape))
        samples = max(1, WINDOW_VALUES // (int(np.prod(self.output_shape[1:])) * int(np.prod(w.shape[1:]))))
        parts = []
        for start in range(0, max(len(maps), 1), samples):  # once for an empty batch too: its empty result
            chunk = maps[start:start + samples]
            parts.append(_correlate(chunk, w, self.stride, self.padding).reshape(len(chunk), outputs))
        return parts[0] if len(parts) == 1 else _ops(maps).concatenate(parts)


WINDOW_VALUES = 1 << 27  # the most window values one product of Conv2d.correlate unfolds (1 GiB in float64)


def _correlate(maps: Any, kernel: Any, stride: int, padding: int) -> Any:
    """torch's ``conv2d`` of (batch, C, H, W) maps with an (out, C, kh, kw) kernel -> (batch, out, H', W'): the
    windows of the zero-padded maps (a view) contracted with the kernel, one matrix product over every sample and
    position, summed in the arrays' type; numpy arrays or torch tensors."""
    p, (kh, kw) = padding, kernel.shape[2:]
    if isinstance(maps, np.ndarray):
        padded = np.pad(maps, ((0, 0), (0, 0), (p, p), (p, p)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
        return np.tensordot(windows, kernel, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    import torch
    from torch.nn import functional

    windows = functional.pad(maps, (p, p, p, p)).unfold(2, kh, stride).unfold(3, kw, stride)
    return torch.tensordot(windows, kernel, dims=([1, 4, 5], [1, 2, 3])).permute(0, 3, 1, 2)


# What a layer may need beyond Loihi's basic CUBA LIF neuron fed by binary spikes (Layer.needs).
PER_TIMESTEP_THRESHOLD = "a per-timestep threshold"
SUBTRACTIVE_RESET = "a subtractive reset"
INITIAL_POTENTIAL = "an initial potential"
GRADED_INPUT = "graded input"


class LIFStep(NamedTuple):
    u: np.ndarray
    v: np.ndarray  # after the reset
    potential: np.ndarray  # v before the reset: what was compared with the threshold
    spikes: np.ndarray
    u_wrapped: np.ndarray  # bool: the current left the 24-bit range and wrapped
    v_saturated: np.ndarray  # bool: the voltage was clipped to the 24-bit range


@dataclasses.dataclass
class LIF:
    """Loihi CUBA leaky integrate-and-fire neuron, as Lava's bit-accurate ``PyLifModelBitAcc`` computes it.

    Every timestep, in this order::

        u = trunc0(u * (4096 - (du + 1)) / 4096) + (a_in << 6)   wrapped to 24 bits (two's complement)
        v = trunc0(v * (4096 - dv) / 4096) + u + (bias_mant << bias_exp)   saturated to +-(2**23 - 1)
        s = v > (vth[t] << 6)                     vth: one threshold, or one per timestep t of a sample
        v[s] = 0                or   v[s] -= vth[t] << 6      reset "zero" (Lava's LIF) or "subtract"

    trunc0 rounds toward zero. Sums are int32 in Lava's CPU model and wrap there (only far outside the 24-bit
    range). A float LIF ``U(t) = beta U(t-1)(1 - S(t-1)) + I(t)`` is ``du = 4095``
    (the current forgets every step, so u = a_in << 6), ``dv = 4096 (1 - beta)``. Loihi's basic neuron has one
    threshold and the zero reset; a schedule and the subtractive reset are :attr:`needs` beyond it.
    """

    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray  # int, shape (n,)
    bias_exp: np.ndarray  # int, shape (n,)
    reset: str = "zero"  # or "subtract"

    @property
    def needs(self) -> tuple[str, ...]:
        """What this neuron needs beyond Loihi's basic one (one threshold, reset to zero): a subset of
        (:data:`PER_TIMESTEP_THRESHOLD`, :data:`SUBTRACTIVE_RESET`), in that order; empty for the basic neuron."""
        return tuple(need for need, wanted in ((PER_TIMESTEP_THRESHOLD, np.ndim(self.vth) > 0),
                                               (SUBTRACTIVE_RESET, self.reset == "subtract")) if wanted)

    def threshold(self, t: int) -> int:
        """vth at position t of a sample."""
        return int(self.vth) if np.ndim(self.vth) == 0 else int(np.asarray(self.vth)[t])

    @property
    def size(self) -> int:
        return int(np.asarray(self.bias_mant).shape[0])

    def effective_bias(self) -> np.ndarray:
        return shift(np.asarray(self.bias_mant, dtype=np.int64), np.asarray(self.bias_exp, dtype=np.int64))

    def step(self, u: Any, v: Any, a_in: Any, bias: Any = None, t: int = 0) -> LIFStep:
        """One timestep (position ``t`` in its sample) for int64 state ``u``, ``v`` (numpy arrays or torch
        tensors, any leading batch shape). With tensors on a GPU, pass ``bias`` (``effective_bias()``) as a
        tensor on that device."""
        bias = self.effective_bias() if bias is None else bias
        ops = _ops(u, v, a_in)
        u_raw = wrap32(ops.int64(a_in) << ACT_SHIFT)
        if self.du + 1 < DECAY_UNITY:  # else the current is forgotten each step: nothing to add, nothing to re-wrap
            u_raw = wrap32(_trunc_decay(u, DECAY_UNITY - (self.du + 1)) + u_raw)
        # Lava wraps u once: above 2**23 it subtracts 2**24, at or below -2**23 it adds 2**24, however far
        # outside it is. turns = floor((u + 2**23 - 1) / 2**24) is 0 inside (-2**23, 2**23], so clipped to
        # [-1, 1] it says which of the two (if any) applies.
        turns = ops.clip((u_raw + (STATE_MAX - 1)) >> STATE_BITS, -1, 1)
        u_new = u_raw - (turns << STATE_BITS)
        v_raw = wrap32(_trunc_decay(v, DECAY_UNITY - self.dv) + u_new + bias)
        v_new = ops.clip(v_raw, -(STATE_MAX - 1), STATE_MAX - 1)
        saturated = v_new != v_raw
        threshold = self.threshold(t) << VTH_SHIFT
        spikes = v_new > threshold
        v_out = v_new - threshold * spikes if self.reset == "subtract" else v_new * ~spikes  # v[s] -= thr or = 0
        return LIFStep(u_new, v_out, v_new, spikes, turns != 0, saturated)


INPUT = "input"  # the source name of the encoded input


@dataclasses.dataclass
class Connection:
    """Synapses from one source into a layer: ``source`` is :data:`INPUT` (the encoded input: graded spikes, or
    binary ones for event input), the name of an earlier layer (binary spikes), or the layer's own name: a
    recurrent connection, which delivers the layer's spikes of the previous timestep (as Lava's Dense from the
    neurons' s_out back to their a_in does, one step later)."""

    source: str
    synapses: Dense
    delay: int = 0  # further timesteps the spikes take to arrive (a NIR Delay; Lava's DelayDense)


@dataclasses.dataclass
class Layer:
    """One layer: a population of neurons and the synapses that feed it.

    ``scale`` relates the integers back to the float model: v_int ~= U_float * scale (it is what makes the
    NIR graph's float parameters consistent with the integers).
    """

    name: str
    inputs: list[Connection]
    neurons: LIF
    scale: float
    readout: bool = False
    # An initial potential (MP-Init), re-encoded for Loihi's basic neuron: one spike at the first step of every
    # sample through these (n, 1) synapses, so a_in gains ``initial.forward([1])`` at timestep 0.
    initial: Dense | None = None

    @property
    def size(self) -> int:
        return self.neurons.size

    @property
    def recurrent(self) -> bool:
        """Whether the layer reads its own spikes of the previous timestep."""
        return any(c.source == self.name for c in self.inputs)

    @property
    def sources(self) -> list[str]:
        """What feeds the layer, in connection order, other than itself (a recurrent layer makes its own spikes)."""
        return [c.source for c in self.inputs if c.source != self.name]

    def lag(self, connection: Connection) -> int:
        """In layer-synchronous timing, the steps between a spike sent on ``connection`` and its delivery: the
        connection's own delay, plus one for the layer's own spikes of the previous step (a recurrent one)."""
        return connection.delay + int(connection.source == self.name)

    @property
    def spans_samples(self) -> bool:
        """Whether, on Lava's pipeline, a spike sent in one sample could reach the layer after its next reset:
        through a recurrent or delayed connection (a reset clears u and v, not what is in flight)."""
        return self.recurrent or any(c.delay for c in self.inputs)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """(C, H, W) when convolutions feed the layer, else (neurons,)."""
        synapses = self.inputs[0].synapses
        return synapses.output_shape if isinstance(synapses, Conv2d) else (self.size,)

    @property
    def fan_in(self) -> int:
        """Presynaptic neurons (or input channels) over all of the layer's connections."""
        return sum(c.synapses.shape[1] for c in self.inputs)

    @property
    def needs(self) -> tuple[str, ...]:
        """What running the layer takes beyond Loihi's basic neuron fed by binary spikes: its neurons'
        :attr:`LIF.needs`, then :data:`INITIAL_POTENTIAL` and :data:`GRADED_INPUT` where they apply."""
        graded = any(c.synapses.num_message_bits > 0 for c in self.inputs)
        return self.neurons.needs + tuple(need for need, wanted in ((INITIAL_POTENTIAL, self.initial is not None),
                                                                    (GRADED_INPUT, graded)) if wanted)

    def initial_input(self) -> np.ndarray | None:
        """The synaptic input the initial-potential synapses add at a sample's first step, or None."""
        return None if self.initial is None else self.initial.forward(np.ones((1, 1), np.int64))[0]


@dataclasses.dataclass
class IntNetwork:
    """The integer network: what export produces, NIR carries, and sim and deploy run."""

    input: InputEncoding
    layers: list[Layer]
    timesteps: int
    hw_config: str = "loihi2"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def readout(self) -> Layer:
        return self.layers[-1]

    def index(self, name: str) -> int:
        """Position of the layer called ``name``."""
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(name)

    def source_size(self, source: str) -> int:
        return self.input.size if source == INPUT else self.layers[self.index(source)].size

    def depths(self) -> list[int]:
        """Per layer, the longest path from the input in connections (1 for a layer the input feeds directly):
        on Lava, the steps by which the layer lags the input."""
        depth: dict[str, int] = {INPUT: 0}
        for layer in self.layers:
            depth[layer.name] = 1 + max(depth[source] for source in layer.sources)
        return [depth[layer.name] for layer in self.layers]

    def delay(self, layer_index: int, connection: Connection, depths: list[int] | None = None) -> int:
        """Extra synaptic delay (steps beyond a Dense's one) that keeps ``connection`` layer-synchronous on
        Lava: ``depth(layer) - depth(source) - 1`` plus the connection's own delay (for a recurrent connection,
        whose one step is the Dense's, the latter alone)."""
        if connection.source == self.layers[layer_index].name:
            return connection.delay
        depths = self.depths() if depths is None else depths
        source = 0 if connection.source == INPUT else depths[self.index(connection.source)]
        return depths[layer_index] - source - 1 + connection.delay

    def consumers(self, layer_index: int) -> list[int]:
        """The layers that receive this layer's spikes."""
        name = self.layers[layer_index].name
        return [i for i, layer in enumerate(self.layers) if any(c.source == name for c in layer.inputs)]

    def _check_quiet_before_first_sample(self) -> None:
        """On Lava a layer at depth d runs d steps before its first sample (reset at step d), where a spike that
        reaches a recurrent or delayed connection could be delivered into that sample. Those steps see no input
        unless an earlier layer fired in its own, and from zero v grows by at most the bias per step: so where a
        layer reads itself or a delayed connection, it and every layer before it must not reach the threshold on
        depth x bias."""
        last = max((i for i, layer in enumerate(self.layers) if layer.spans_samples), default=-1)
        depths = self.depths()
        for index, layer in enumerate(self.layers[: last + 1]):
            if depths[index] * int(layer.neurons.effective_bias().max(initial=0)) > \
                    int(np.max(layer.neurons.vth)) << VTH_SHIFT and not layer.readout:
                raise HardwareRangeError(
                    f"layer '{layer.name}': its bias alone could fire it within the {depths[index]} step(s) it runs "
                    f"on Lava's pipeline before its first sample, and the recurrent or delayed synapses of layer "
                    f"'{self.layers[last].name}' would carry that into the sample; lower the bias")

    def validate(self, hw: HwConfig) -> None:
        """Check the graph and every integer against the ranges ``hw`` allows; name the layer, value and range
        if not."""
        if self.timesteps < 1:
            raise HardwareRangeError(f"timesteps must be >= 1, got {self.timesteps}")
        if not self.layers:
            raise HardwareRangeError("an integer network needs at least one layer")
        msg_bits = hw.bits("message_bits")
        if not 1 <= self.input.bits <= msg_bits:
            raise HardwareRangeError(
                f"input encoding uses {self.input.bits} bits; {hw.name} graded spikes allow 1..{msg_bits}")
        e_lo, e_hi = hw.range("weight_exp")
        b_lo, b_hi = hw.range("bias_exp")
        vth_max = (1 << hw.bits("threshold_bits")) - 1
        dmax = (1 << hw.bits("decay_bits")) - 1
        delay_max = (1 << hw.bits("delay_bits")) - 1
        mant = 1 << (hw.bits("bias_mant_bits") - 1)
        sizes = {INPUT: self.input.size}
        for index, layer in enumerate(self.layers):
            neu = layer.neurons
            if layer.name in sizes:
                raise HardwareRangeError(f"layer name '{layer.name}' is used twice (or is the reserved '{INPUT}')")
            if not layer.inputs:
                raise HardwareRangeError(f"layer '{layer.name}' has no input connections")
            if layer.readout and index != len(self.layers) - 1:
                raise HardwareRangeError(f"layer '{layer.name}' is a readout but not the last layer")
            if all(c.source == layer.name for c in layer.inputs):
                raise HardwareRangeError(f"layer '{layer.name}' reads only itself; it needs input from the input or "
                                         "an earlier layer")
            if layer.recurrent:
                sizes[layer.name] = neu.size  # its own spikes, a step late
            for c in layer.inputs:
                syn = c.synapses
                if c.delay < 0:
                    raise HardwareRangeError(f"layer '{layer.name}': delay {c.delay} from '{c.source}' is negative")
                if c.source not in sizes:
                    raise HardwareRangeError(
                        f"layer '{layer.name}': its input '{c.source}' is not the input, an earlier layer or itself; "
                        "list layers in topological order (a layer may read a later one's spikes only through its "
                        "own recurrent connection: Lava's pipeline delivers a later layer's spikes too late. Every "
                        "Lava synapse delivers one step after its spikes are sent, so a layer at depth d runs "
                        "timestep t at step t + d; spikes a layer at depth dL sends in its timestep t - 1 arrive "
                        "at step t + dL, when a layer at depth dK < dL already runs its timestep t + dL - dK, "
                        "dL - dK steps after it needed them, and a synaptic delay can only add steps)")
                if syn.shape[1] != sizes[c.source]:
                    raise HardwareRangeError(
                        f"layer '{layer.name}': weights from '{c.source}' expect {syn.shape[1]} inputs but "
                        f"'{c.source}' has {sizes[c.source]} outputs")
                if syn.shape[0] != neu.size:
                    raise HardwareRangeError(
                        f"layer '{layer.name}': {syn.shape[0]} weight rows from '{c.source}' for {neu.size} neurons")
                what = f"weights from '{c.source}'" if len(layer.inputs) > 1 else "weights"
                _check_range(layer.name, what, syn.weights, -256, 255, "re-quantise the weights")
                _check_range(layer.name, "num_weight_bits", syn.num_weight_bits, 1, hw.bits("weight_bits"),
                             "Lava truncates by 8 - num_weight_bits bits, so it must be 1..8")
                _check_range(layer.name, "weight_exp", syn.weight_exp, e_lo, e_hi,
                             "rescale the layer (threshold and weights) so the exponent fits")
                _check_range(layer.name, "num_message_bits", syn.num_message_bits, 0, msg_bits,
                             "0 for spikes, the input encoding's bits for graded input")
                if c.source == INPUT and syn.num_message_bits != self.input.message_bits:
                    kind = "binary spikes" if self.input.binary else f"{self.input.bits}-bit graded spikes"
                    raise HardwareRangeError(
                        f"layer '{layer.name}': its synapses from the input have num_message_bits = "
                        f"{syn.num_message_bits}, but the input sends {kind}; they need {self.input.message_bits}")
            _check_range(layer.name, "du", neu.du, 0, dmax, "use a decay in [0, 1]")
            _check_range(layer.name, "dv", neu.dv, 0, dmax, "use a decay in [0, 1]")
            _check_range(layer.name, "vth", neu.vth, 0, vth_max, "lower the layer scale")
            _check_range(layer.name, "bias_mant", neu.bias_mant, -mant, mant - 1, "raise bias_exp")
            _check_range(layer.name, "bias_exp", neu.bias_exp, b_lo, b_hi, "lower the layer scale")
            if neu.reset not in ("zero", "subtract"):
                raise HardwareRangeError(f"layer '{layer.name}': reset '{neu.reset}' is not zero or subtract")
            if np.ndim(neu.vth) and np.shape(neu.vth) != (self.timesteps,):
                raise HardwareRangeError(
                    f"layer '{layer.name}': threshold schedule has {np.size(neu.vth)} entries but the network "
                    f"runs {self.timesteps} timesteps; export the model with timesteps = {np.size(neu.vth)}")
            if layer.initial is not None:
                if layer.initial.shape != (neu.size, 1):
                    raise HardwareRangeError(
                        f"layer '{layer.name}': initial-potential synapses {layer.initial.shape}, need ({neu.size}, 1)")
                _check_range(layer.name, "initial weights", layer.initial.weights, -256, 255, "rescale")
                _check_range(layer.name, "initial weight_exp", layer.initial.weight_exp, e_lo, e_hi, "rescale")
            sizes[layer.name] = neu.size
        if self.readout.readout and any(c.source == self.readout.name for layer in self.layers for c in layer.inputs):
            raise HardwareRangeError(f"the readout '{self.readout.name}' never fires, so no layer may take input from it")
        self._check_quiet_before_first_sample()
        depths = self.depths()
        for index, layer in enumerate(self.layers):
            for c in layer.inputs:
                delay = self.delay(index, c, depths)
                _check_range(layer.name, f"synaptic delay from '{c.source}'", delay, 0,
                             delay_max, "shorten the skip connection (it spans too many layers)")
                if delay and c.synapses.num_message_bits > 0:
                    # Lava's DelayDense sums graded input in int64 before it wraps, Dense (and a_out) in int32:
                    # they agree only while no sum can leave int32.
                    bound = c.synapses.partial_sum_bound((1 << self.input.bits) - 1 if c.source == INPUT else 1)
                    if bound > np.iinfo(np.int32).max:
                        raise HardwareRangeError(
                            f"layer '{layer.name}': delayed graded input from '{c.source}' can sum to {bound}, beyond "
                            "int32, where Lava's DelayDense and Dense differ; lower the weights or the input bits")


def _check_range(layer: str, param: str, value: Any, lo: int, hi: int, fix: str) -> None:
    arr = np.asarray(value)
    if arr.size == 0:
        return
    vmin, vmax = int(arr.min()), int(arr.max())
    if vmin < lo or vmax > hi:
        bad = vmin if vmin < lo else vmax
        raise HardwareRangeError(
            f"layer '{layer}': {param} = {bad} is outside the hardware range [{lo}, {hi}]; {fix}")
