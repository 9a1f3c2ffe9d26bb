"""Fold a trained model into a float network, then quantise it into the integer network a hw_config allows.

Folding is exact in floating point:

- BatchNorm (linear or conv, tdBN included) into the preceding weights: ``W' = diag(g / sqrt(var + eps)) W``,
  ``b' = beta - g mean / sqrt(var + eps)`` per output channel;
- 2x2 average pooling into the *next* synapse: a pooled map feeding a k x k convolution (stride s, padding p)
  is the unpooled map feeding a 2k x 2k convolution (stride 2s, padding 2p) whose kernel repeats each weight over
  a 2x2 block, divided by 4; a pooled map feeding the readout likewise spreads each weight over its 2x2 block;
- each neuron's :class:`~spikefold.train.neurons.base.InferenceForm`: its input gain (TrSG's 1/tau) into its
  own weights and bias, its output scale (TrSG's Vthr) into the next layer's weights, its decay to ``dv``, its
  threshold (or DS-ATGO's per-timestep schedule) to ``vth``, its initial potential (MP-Init) to one pulse per
  sample through (n, 1) synapses, and its reset to Loihi's zero reset or spikefold's subtractive one.

The float reference (:meth:`FloatNetwork.run`) runs the trained neuron modules themselves on the folded
currents, so the neurons' equations exist once and the folding is checked against the model it came from.

Quantisation, per layer, picks one scale S (v_int ~= H * S). Loihi adds ``(W_int s) << e << 6`` to the current,
so the weights become ``W' S / (input_unit * 64 * 2**e)``; S is the largest value for which the threshold fits
its 17 bits, the bias its 13-bit mantissa and 3-bit exponent, and the state seen on calibration data keeps one
bit of headroom below 2**23; ``e`` is then the largest exponent that keeps the weights within 8 bits, so they
use the full range. Mixed-sign weights are rounded to even numbers: Lava's Dense would truncate an odd one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from spikefold.errors import ConfigError, HardwareRangeError
from spikefold.export.hw_config import HwConfig
from spikefold.export.intnet import (
    ACT_SHIFT,
    DECAY_UNITY,
    INPUT,
    LIF,
    STATE_MAX,
    VTH_NEVER,
    VTH_SHIFT,
    Connection,
    Conv2d,
    Dense,
    InputEncoding,
    IntNetwork,
    Layer,
    shift,
)
from spikefold.train.models import ResidualBlock, SpikingBlock, SpikingModel, TdBatchNorm
from spikefold.train.neurons import SpikingNeuron
from spikefold.train.neurons.base import InferenceForm

HEADROOM = 0.5  # use at most half the 24-bit range on calibration data
EXPORTABLE = ("mlp", "vgg", "resnet19", "sew_resnet19")


@dataclasses.dataclass
class FloatInput:
    """Synapses from one source into a layer, in the trained model's units."""

    source: str  # INPUT or a layer name
    weight: np.ndarray  # (out, in) or (out, in, kh, kw); BatchNorm and pooling folded in
    conv: dict | None = None  # input_shape, stride, padding for a convolution

    def current(self, h: torch.Tensor) -> torch.Tensor:
        """Synaptic current (no bias) for (T, batch, ...) presynaptic activity."""
        steps, batch = h.shape[:2]
        flat, w = h.flatten(0, 1), torch.as_tensor(self.weight)
        if self.conv is None:
            out = flat.flatten(1) @ w.T
        else:
            flat = flat.reshape(-1, *self.conv["input_shape"])
            out = nn.functional.conv2d(flat, w, stride=self.conv["stride"], padding=self.conv["padding"])
        return out.unflatten(0, (steps, batch))

    def output_shape(self) -> tuple[int, ...]:
        if self.conv is None:
            return (int(self.weight.shape[0]),)
        return Conv2d(self.weight, 0, input_shape=self.conv["input_shape"], stride=self.conv["stride"],
                      padding=self.conv["padding"]).output_shape


@dataclasses.dataclass
class FloatLayer:
    """One layer of the folded network: the currents of its inputs summed, plus a bias, into the trained
    neuron (None for the readout)."""

    name: str
    inputs: list[FloatInput]
    bias: np.ndarray  # (out channels,)
    neuron: SpikingNeuron | None

    @property
    def readout(self) -> bool:
        return self.neuron is None

    def currents(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Input currents I(t), given every earlier layer's (T, batch, ...) output by name."""
        total = sum(fi.current(outputs[fi.source]) for fi in self.inputs)
        bias = torch.as_tensor(self.bias)
        return total + bias.reshape(-1, *([1] * (total.dim() - 3)))

    def output_size(self) -> int:
        return int(np.prod(self.inputs[0].output_shape()))


class _Peaks:
    """Probe interface: the largest |potential| each neuron layer reaches."""

    def __init__(self):
        self.peak: dict[int, float] = {}

    def observe(self, name, t, potential, spikes, threshold, window):
        self.peak[int(name)] = max(self.peak.get(int(name), 0.0), float(potential.abs().max()))


@dataclasses.dataclass
class FloatNetwork:
    """The trained model with BatchNorm and pooling folded away: what the integer network approximates."""

    layers: list[FloatLayer]
    timesteps: int
    input_shape: tuple[int, ...]

    @torch.no_grad()
    def run(self, x: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Time-averaged logits for x (samples, features) and, per layer, the largest |state| reached in
        state units: the neuron's potential or its current (input gain included), whichever is larger; for the
        readout, its running sum of currents."""
        inp = torch.as_tensor(np.asarray(x, np.float64)).reshape(len(x), *self.input_shape)
        outputs = {INPUT: inp.unsqueeze(0).expand(self.timesteps, *inp.shape)}
        peaks = []
        for i, layer in enumerate(self.layers):
            current = layer.currents(outputs)
            if layer.readout:
                peaks.append(float(current.flatten(2).cumsum(0).abs().max()))
                return current.flatten(2).mean(0).numpy(), peaks
            neuron = layer.neuron.double().eval()
            form = neuron.inference_form()
            recorder = _Peaks()
            neuron.probe, neuron.probe_name = recorder, str(i)
            try:
                outputs[layer.name] = neuron(current)
            finally:
                neuron.probe = None
                neuron.float()
            peaks.append(max(recorder.peak[i], form.input_gain * float(current.abs().max()),
                             abs(form.decay * form.initial) + form.input_gain * float(current.abs().max())))
        # A spiking last layer (an imported graph's): its time-averaged spikes are the logits.
        return outputs[self.layers[-1].name].flatten(2).mean(0).numpy(), peaks


def _bn_fold(weight: torch.Tensor, bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    inv_std = 1.0 / torch.sqrt(bn.running_var.detach().cpu().double() + bn.eps)
    gamma = bn.weight.detach().cpu().double() if bn.affine else torch.ones_like(inv_std)
    if isinstance(bn, TdBatchNorm):
        gamma = gamma * bn.scale
    beta = bn.bias.detach().cpu().double() if bn.affine else torch.zeros_like(inv_std)
    scale = gamma * inv_std
    w = weight.detach().cpu().double()
    w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    return w.numpy(), (beta - gamma * bn.running_mean.detach().cpu().double() * inv_std).numpy()


def pool_into_conv(kernel: np.ndarray, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """A k x k convolution after 2x2 average pooling, as one 2k x 2k convolution of the unpooled map."""
    return np.repeat(np.repeat(kernel, 2, axis=2), 2, axis=3) / 4.0, 2 * stride, 2 * padding


def pool_into_linear(weight: np.ndarray, shape: tuple[int, int, int], window: int = 2) -> np.ndarray:
    """A linear layer on a flattened ``window`` x ``window``-average-pooled (C, H, W) map (stride = window), as
    one on the unpooled map; rows and columns the pooling drops get zero weight."""
    c, h, w = shape
    pooled = weight.reshape(-1, c, h // window, w // window)
    spread = np.zeros((weight.shape[0], c, h, w))
    spread[:, :, : h // window * window, : w // window * window] = \
        np.repeat(np.repeat(pooled, window, axis=2), window, axis=3) / window**2
    return spread.reshape(weight.shape[0], -1)


@dataclasses.dataclass
class _Signal:
    """What a weight layer of the model reads, in the folded network's terms: the sum of some layers' outputs
    (or the input), all of one shape, seen through a pooling that folds into the weights reading it. A SEW
    block's output is such a sum: each reader gets one connection per addend, so no neuron ever sends more
    than a binary spike."""

    sources: list[str]
    shape: tuple[int, ...]
    pool: str | None = None  # "avg2" (2x2 average, stride 2) or "global" (average over the whole map)

    def pooled(self, kind: str) -> "_Signal":
        if self.pool is not None:
            raise ConfigError(f"export folds one pooling between two weight layers; '{kind}' follows '{self.pool}'")
        return _Signal(self.sources, self.shape, kind)


class _Folder:
    """Walks a model's blocks in execution order, folding each into a :class:`FloatLayer`."""

    def __init__(self):
        self.layers: list[FloatLayer] = []

    def inputs(self, signal: _Signal, weight: np.ndarray, geometry: tuple[int, int] | None) -> list[FloatInput]:
        """One connection per source of ``signal`` into a weight layer (its weight already folded with BatchNorm;
        ``geometry``: a convolution's (stride, padding), None for a linear layer), with the signal's pooling
        folded into the weights."""
        conv = None
        if geometry is not None:
            stride, padding = geometry
            if signal.pool == "avg2":
                weight, stride, padding = pool_into_conv(weight, stride, padding)
            elif signal.pool == "global":
                raise ConfigError("a convolution after global average pooling cannot be exported")
            conv = {"input_shape": tuple(signal.shape), "stride": stride, "padding": padding}
        elif signal.pool is not None:
            window = 2 if signal.pool == "avg2" else signal.shape[1]
            if signal.pool == "global" and signal.shape[1] != signal.shape[2]:
                raise ConfigError(f"global pooling of a non-square {signal.shape[1:]} map cannot be exported")
            weight = pool_into_linear(weight, signal.shape, window)
        return [FloatInput(source, weight, conv) for source in signal.sources]

    def geometry(self, module: nn.Module) -> tuple[int, int] | None:
        """(stride, padding) of a convolution, None for a linear layer."""
        if not isinstance(module, nn.Conv2d):
            return None
        if module.groups != 1 or module.dilation not in (1, (1, 1)):
            raise ConfigError(f"layer {len(self.layers)}: grouped or dilated convolutions cannot be exported yet")
        return module.stride[0], module.padding[0]

    def add(self, name: str, inputs: list[FloatInput], bias: np.ndarray, neuron: SpikingNeuron | None) -> _Signal:
        self.layers.append(FloatLayer(name, inputs, bias, neuron))
        return _Signal([name], inputs[0].output_shape())

    def block(self, name: str, signal: _Signal, block: SpikingBlock) -> _Signal:
        """weight -> BatchNorm -> neuron, reading ``signal``."""
        weight, bias = _bn_fold(block.weight.weight, block.bn)
        return self.add(name, self.inputs(signal, weight, self.geometry(block.weight)), bias, block.neuron)

    def residual(self, name: str, x: _Signal, block: ResidualBlock) -> _Signal:
        h = self.block(f"{name}_conv1", x, block.conv1)
        if block.sew:  # SN(BN(conv2 h)) + shortcut: the sum stays a sum of binary spike sources
            out = self.block(f"{name}_conv2", h, block.conv2)
            shortcut = x if block.down is None else self.block(f"{name}_down", x, block.down)
            return _Signal(out.sources + shortcut.sources, out.shape)
        # Standard block: SN(BN(conv2 h) + shortcut x), the shortcut a 1x1 conv + BN or the identity.
        weight, bias = _bn_fold(block.conv2.weight.weight, block.conv2.bn)
        inputs = self.inputs(h, weight, self.geometry(block.conv2.weight))
        if block.down is None:  # the identity, as a 1x1 convolution
            channels = x.shape[0]
            inputs += self.inputs(x, np.eye(channels).reshape(channels, channels, 1, 1), (1, 0))
        else:
            conv, norm = block.down
            down_weight, down_bias = _bn_fold(conv.weight, norm)
            inputs += self.inputs(x, down_weight, self.geometry(conv))
            bias = bias + down_bias
        return self.add(f"{name}_conv2", inputs, bias, block.neuron)

    def readout(self, signal: _Signal, linear: nn.Linear) -> None:
        weight = linear.weight.detach().cpu().double().numpy()
        bias = linear.bias.detach().cpu().double().numpy() if linear.bias is not None else np.zeros(linear.out_features)
        self.add("readout", self.inputs(signal, weight, None), bias, None)


def fold(model: SpikingModel) -> FloatNetwork:
    """Fold BatchNorm (with its running statistics) and pooling; the neurons stay as trained (their input gain,
    output scale, threshold and initial potential are folded by :func:`quantise`)."""
    cfg = model.cfg
    if cfg.arch not in EXPORTABLE:
        raise ConfigError(f"export folds {', '.join(EXPORTABLE)} models; '{cfg.arch}' cannot be exported yet")
    if cfg.temporal_input:
        raise ConfigError("export handles direct (analog) input; sequence input cannot be exported yet")
    model = model.eval()
    folder = _Folder()
    signal = _Signal([INPUT], tuple(cfg.input_shape))
    if cfg.arch == "mlp":
        for k, block in enumerate(model.hidden):
            signal = folder.block(f"hidden{k}", signal, block)
    elif cfg.arch == "vgg":
        for item in model.features:
            if isinstance(item, nn.AvgPool2d):
                if item.kernel_size not in (2, (2, 2)) or item.stride not in (2, (2, 2)):
                    raise ConfigError("export folds 2x2 average pooling (stride 2) only")
                signal = signal.pooled("avg2")
            else:
                signal = folder.block(f"conv{len(folder.layers)}", signal, item)
    else:
        signal = folder.block("stem", signal, model.stem)
        for k, block in enumerate(model.blocks):
            signal = folder.residual(f"block{k}", signal, block)
        signal = signal.pooled("global")
        if model.head is not None:
            signal = folder.block("head", signal, model.head)
    folder.readout(signal, model.readout)
    return FloatNetwork(folder.layers, cfg.timesteps, tuple(cfg.input_shape))


@dataclasses.dataclass
class LayerQuantisation:
    """What quantising one layer cost, and how much of the 24-bit state it uses on calibration data."""

    name: str
    process: str  # "stock (hardware-compatible): ..." or "custom (simulation only): ..."
    scale: float
    weight_exp: int | list[int]  # one per connection (a list when the layer has several)
    max_abs_weight: int
    weight_rel_error: float  # ||W_int - W S|| / ||W S|| over all connections, each weighted by its 2**weight_exp
    vth: int | list[int]
    bias_rel_error: float
    max_abs_u: int = 0
    max_abs_v: int = 0
    headroom_bits: float = 0.0  # log2(2**23 / largest |state|) on calibration data


@dataclasses.dataclass
class QuantReport:
    layers: list[LayerQuantisation]
    calibration_samples: int
    weight_bits: int = 8  # Lava's num_weight_bits of every connection
    float_int_agreement: float = 0.0  # share of calibration samples whose prediction the two agree on
    qat: dict | None = None  # fine-tuning through the integer forward, when run (spikefold.export.qat)


@dataclasses.dataclass
class LayerTerms:
    """One layer as the integer LIF receives it, in the float model's units: each connection's weights with
    the neuron's input gain and the source's output scale (TrSG's Vthr) folded in, the float value of one
    integer input unit per connection, and the bias (input gain folded in)."""

    layer: FloatLayer
    form: InferenceForm | None  # None for the readout
    weights: list[np.ndarray]
    units: list[float]
    bias: np.ndarray  # per output channel

    def neuron_bias(self) -> np.ndarray:
        """The bias per neuron (a convolution repeats its channel's bias over the map)."""
        size = self.layer.output_size()
        return np.repeat(self.bias, size // len(self.bias))


def layer_terms(fnet: FloatNetwork, input_scale: float) -> list[LayerTerms]:
    sent_scale = {INPUT: 1.0}  # what a source sends per spike; Loihi sends the bare spikes
    terms = []
    for fl in fnet.layers:
        form = fl.neuron.inference_form() if fl.neuron is not None else None
        gain = form.input_gain if form else 1.0
        terms.append(LayerTerms(fl, form, [fi.weight * gain * sent_scale[fi.source] for fi in fl.inputs],
                                [input_scale if fi.source == INPUT else 1.0 for fi in fl.inputs], fl.bias * gain))
        sent_scale[fl.name] = form.output_scale if form else 1.0
    return terms


def weight_step(mixed: bool, weight_bits: int) -> int:
    """The spacing of the integer weights Lava's Dense keeps unchanged: it truncates
    ``8 - num_weight_bits (+ 1 for a mixed-sign matrix)`` low bits."""
    return 1 << (8 - weight_bits + int(mixed))


def integer_weights(w, weight_bits: int):
    """Real-valued integer-unit weights ``w`` (numpy array or torch tensor) rounded to the nearest value Lava's
    Dense keeps unchanged: a multiple of :func:`weight_step` in [-256, 256 - step] for a mixed-sign matrix,
    within +-(256 - step) otherwise."""
    mixed = bool(w.min() < 0 < w.max())
    step = weight_step(mixed, weight_bits)
    low = -256 if mixed else step - 256
    if isinstance(w, np.ndarray):
        return np.clip(step * np.rint(w / step), low, 256 - step)
    return torch.clamp(step * torch.round(w / step), low, 256 - step)


def _quantise_bias(name: str, b: np.ndarray, b_lo: int, b_hi: int, mant_bits: int):
    limit = (1 << (mant_bits - 1)) - 1
    need = np.ceil(np.log2(np.maximum(np.abs(b), 1e-300) / limit))
    exp = np.clip(need, b_lo, b_hi).astype(np.int64)
    mant = np.rint(b / np.exp2(exp)).astype(np.int64)
    if np.abs(mant).max(initial=0) > limit:
        worst = int(np.abs(b).argmax())
        raise HardwareRangeError(
            f"layer '{name}': bias {b[worst]:.4g} (in state units) needs a mantissa above {limit} even at "
            f"bias_exp = {b_hi}; lower the layer scale")
    return mant, exp


def _quantise_initial(name: str, value: float, size: int, e_lo: int, e_hi: int) -> Dense | None:
    """MP-Init's initial contribution (in a_in units) as (n, 1) pulse synapses of 8 bits and an exponent."""
    if value == 0:
        return None
    exp = max(e_lo, math.ceil(math.log2(abs(value) / 255)))
    if exp > e_hi:
        raise HardwareRangeError(f"layer '{name}': initial potential {value:.4g} (synaptic units) needs "
                                 f"weight_exp {exp} > {e_hi}; lower the layer scale")
    w = int(np.clip(np.rint(value / 2.0**exp), -255, 255))
    return Dense(weights=np.full((size, 1), w, np.int32), weight_exp=exp)


def _scale_and_exponents(lt: LayerTerms, s_max: float, weight_bits: int, e_lo: int, e_hi: int) -> tuple[float, list[int]]:
    """The layer scale S (at most ``s_max``) and one weight exponent per connection.

    Loihi adds ``(W_int s) << e << 6`` to the current, so connection c's integer weights are
    ``W_c S / (unit_c 64 2**e_c)``. As with one connection, S is lowered from ``s_max`` until the connection
    that limits it fills its 8 bits exactly; then every other connection gets the smallest exponent at which its
    weights fit, so each uses more than half its range."""
    lims, scale = [], s_max
    for w, unit in zip(lt.weights, lt.units):
        w_lim = 256 - weight_step(bool(w.min() < 0 < w.max()), weight_bits)
        max_w = float(np.abs(w).max())
        lims.append((w_lim, max_w, unit))
        if max_w == 0:
            continue
        exp = math.floor(math.log2(s_max * max_w / (unit * (1 << ACT_SHIFT) * w_lim)))
        if exp < e_lo:
            raise HardwareRangeError(
                f"layer '{lt.layer.name}': weights span {max_w:.4g} in threshold units, which would need "
                f"weight_exp = {exp}, below the hardware range [{e_lo}, {e_hi}]; lower the threshold or "
                "regularise the weights")
        if exp <= e_hi:
            scale = min(scale, w_lim * unit * (1 << ACT_SHIFT) * 2.0**exp / max_w)
    exps = []
    for w_lim, max_w, unit in lims:
        if max_w == 0:
            exps.append(e_lo)
            continue
        # The smallest exponent at which the weights fit (the tolerance absorbs log2 of an exact power of 2).
        need = math.ceil(math.log2(scale * max_w / (unit * (1 << ACT_SHIFT) * w_lim)) - 1e-9)
        exps.append(min(max(need, e_lo), e_hi))
    return scale, exps


def quantise(fnet: FloatNetwork, hw: HwConfig, calibration_x: np.ndarray, input_scale: float | None = None,
             weight_bits: int | None = None) -> tuple[IntNetwork, QuantReport]:
    """Quantise ``fnet`` for ``hw`` using ``calibration_x`` (float inputs in [0, 1]) to size each layer's scale.

    ``weight_bits`` (default: the hw_config's) sets Lava's ``num_weight_bits``: weights are then multiples of
    2**(8 - weight_bits), plus one bit for a mixed-sign matrix. Raises HardwareRangeError when a value cannot
    be represented. Whether the integer state stays in range on the calibration data is checked by running it
    (``spikefold.sim.simulator.check_state_range``).
    """
    bits_in = hw.bits("message_bits")
    max_bits = hw.bits("weight_bits")
    weight_bits = max_bits if weight_bits is None else int(weight_bits)
    if not 1 <= weight_bits <= max_bits:
        raise HardwareRangeError(f"weight bits = {weight_bits} is outside {hw.name}'s range [1, {max_bits}]")
    encoding = InputEncoding(size=int(np.prod(fnet.input_shape)), scale=float(input_scale or (1 << bits_in) - 1),
                             bits=bits_in)
    _, peaks = fnet.run(calibration_x)
    e_lo, e_hi = hw.range("weight_exp")
    b_lo, b_hi = hw.range("bias_exp")
    mant_bits = hw.bits("bias_mant_bits")
    vth_max = (1 << hw.bits("threshold_bits")) - 1
    layers, reports = [], []
    for i, lt in enumerate(layer_terms(fnet, encoding.scale)):
        fl, form = lt.layer, lt.form
        thresholds = np.atleast_1d(np.asarray(form.threshold, np.float64)) if form else None
        if thresholds is not None and len(thresholds) > 1 and len(thresholds) != fnet.timesteps:
            raise HardwareRangeError(
                f"layer '{fl.name}': its threshold schedule has {len(thresholds)} timesteps but the model runs "
                f"{fnet.timesteps}; retrain with timesteps = {len(thresholds)}")
        # Largest scale each constraint allows.
        limits = [HEADROOM * STATE_MAX / max(peaks[i], 1e-12)]
        if form is not None:
            limits.append(vth_max * (1 << VTH_SHIFT) / max(float(thresholds.max()), 1e-12))
        if np.abs(lt.bias).max(initial=0) > 0:
            limits.append(((1 << (mant_bits - 1)) - 1) * 2.0**b_hi / np.abs(lt.bias).max())
        scale, exps = _scale_and_exponents(lt, min(limits), weight_bits, e_lo, e_hi)
        neuron_bias = lt.neuron_bias()
        mant, bexp = _quantise_bias(fl.name, neuron_bias * scale, b_lo, b_hi, mant_bits)
        size = fl.output_size()
        initial = None
        if form is None:
            dv, vth, reset = 0, VTH_NEVER, "zero"
        else:
            dv, reset = int(round(DECAY_UNITY * (1.0 - form.decay))), form.reset
            vth_all = np.rint(thresholds * scale / (1 << VTH_SHIFT)).astype(np.int64)
            vth = int(vth_all[0]) if len(vth_all) == 1 else vth_all
            if form.decay < 1 and dv < 1:  # (a decay of exactly 1, an IF, is dv = 0)
                raise HardwareRangeError(
                    f"layer '{fl.name}': decay {form.decay:.6f} rounds to dv = 0 (no leak); Loihi's 12-bit dv "
                    "needs decay <= 1 - 1/8192")
            if vth_all.min() < 1 or vth_all.max() > vth_max:
                bad = int(vth_all.min() if vth_all.min() < 1 else vth_all.max())
                raise HardwareRangeError(
                    f"layer '{fl.name}': threshold scales to vth = {bad}, outside the hardware range "
                    f"[1, {vth_max}]; retrain with a larger threshold or lower the layer scale")
            initial = _quantise_initial(fl.name, form.decay * form.initial * scale / (1 << ACT_SHIFT), size,
                                        e_lo, e_hi)
        inputs, exact, rounded, max_abs = [], [], [], 0
        for fi, w, unit, exp in zip(fl.inputs, lt.weights, lt.units, exps):
            w_exact = w * scale / (unit * (1 << ACT_SHIFT) * 2.0**exp)
            w_int = integer_weights(w_exact, weight_bits).astype(np.int32)
            common = dict(weights=w_int, weight_exp=exp, num_weight_bits=weight_bits,
                          num_message_bits=bits_in if fi.source == INPUT else 0)
            if fi.conv is not None:
                synapses = Conv2d(**common, input_shape=tuple(fi.conv["input_shape"]), stride=fi.conv["stride"],
                                  padding=fi.conv["padding"])
            else:
                synapses = Dense(**common)
            inputs.append(Connection(fi.source, synapses))
            exact.append(w_exact.ravel() * 2.0**exp)  # integer units of the same size across connections
            rounded.append(w_int.ravel() * 2.0**exp)
            max_abs = max(max_abs, int(np.abs(w_int).max()))
        layer = Layer(name=fl.name, inputs=inputs,
                      neurons=LIF(du=DECAY_UNITY - 1, dv=dv, vth=vth, bias_mant=mant.astype(np.int32),
                                  bias_exp=bexp.astype(np.int32), reset=reset),
                      scale=scale, readout=form is None, initial=initial)
        layers.append(layer)
        exact_w, w_all, exact_b = np.concatenate(exact), np.concatenate(rounded), neuron_bias * scale
        reports.append(LayerQuantisation(
            name=fl.name, process=layer.process, scale=scale, weight_exp=exps[0] if len(exps) == 1 else exps,
            max_abs_weight=max_abs,
            weight_rel_error=float(np.linalg.norm(w_all - exact_w) / max(np.linalg.norm(exact_w), 1e-300)),
            vth=vth if np.ndim(vth) == 0 else [int(v) for v in vth],
            bias_rel_error=float(np.linalg.norm(shift(mant, bexp) - exact_b) / max(np.linalg.norm(exact_b), 1e-300))
            if np.any(exact_b) else 0.0,
        ))
    net = IntNetwork(input=encoding, layers=layers, timesteps=fnet.timesteps, hw_config=hw.name)
    net.validate(hw)
    return net, QuantReport(reports, calibration_samples=len(calibration_x), weight_bits=weight_bits)
