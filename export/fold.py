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
    LIF,
    STATE_MAX,
    VTH_NEVER,
    VTH_SHIFT,
    Conv2d,
    Dense,
    InputEncoding,
    IntNetwork,
    Layer,
    shift,
)
from spikefold.train.models import SpikingBlock, SpikingModel, TdBatchNorm
from spikefold.train.neurons import SpikingNeuron

HEADROOM = 0.5  # use at most half the 24-bit range on calibration data
EXPORTABLE = ("mlp", "vgg")


@dataclasses.dataclass
class FloatLayer:
    """One layer of the folded network, in the trained model's units."""

    name: str
    weight: np.ndarray  # (out, in) or (out, in, kh, kw); BatchNorm and pooling folded in
    bias: np.ndarray  # (out channels,)
    neuron: SpikingNeuron | None  # the trained neuron (None for the readout)
    conv: dict | None = None  # input_shape, stride, padding for a convolution

    @property
    def readout(self) -> bool:
        return self.neuron is None

    def currents(self, h: torch.Tensor) -> torch.Tensor:
        """Synaptic currents for (T, batch, ...) presynaptic activity."""
        steps, batch = h.shape[:2]
        flat = h.flatten(0, 1)
        w, b = torch.as_tensor(self.weight), torch.as_tensor(self.bias)
        if self.conv is None:
            out = flat.flatten(1) @ w.T + b
        else:
            flat = flat.reshape(-1, *self.conv["input_shape"])
            out = nn.functional.conv2d(flat, w, b, stride=self.conv["stride"], padding=self.conv["padding"])
        return out.unflatten(0, (steps, batch))

    def output_size(self) -> int:
        if self.conv is None:
            return int(self.weight.shape[0])
        return int(np.prod(Conv2d(self.weight, 0, input_shape=self.conv["input_shape"], stride=self.conv["stride"],
                                  padding=self.conv["padding"]).output_shape))


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
        h = inp.unsqueeze(0).expand(self.timesteps, *inp.shape)
        peaks = []
        for i, layer in enumerate(self.layers):
            current = layer.currents(h)
            if layer.readout:
                peaks.append(float(current.flatten(2).cumsum(0).abs().max()))
                return current.flatten(2).mean(0).numpy(), peaks
            neuron = layer.neuron.double().eval()
            form = neuron.inference_form()
            recorder = _Peaks()
            neuron.probe, neuron.probe_name = recorder, str(i)
            try:
                h = neuron(current)
            finally:
                neuron.probe = None
                neuron.float()
            peaks.append(max(recorder.peak[i], form.input_gain * float(current.abs().max()),
                             abs(form.decay * form.initial) + form.input_gain * float(current.abs().max())))
        raise ValueError("a float network must end in a readout layer")


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


def pool_into_linear(weight: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A linear layer on a flattened 2x2-average-pooled (C, H, W) map, as one on the unpooled map."""
    c, h, w = shape
    pooled = weight.reshape(-1, c, h // 2, w // 2)
    spread = np.zeros((weight.shape[0], c, h, w))
    spread[:, :, : h // 2 * 2, : w // 2 * 2] = np.repeat(np.repeat(pooled, 2, axis=2), 2, axis=3) / 4.0
    return spread.reshape(weight.shape[0], -1)


def fold(model: SpikingModel) -> FloatNetwork:
    """Fold BatchNorm (with its running statistics) and pooling; the neurons stay as trained (their input gain,
    output scale, threshold and initial potential are folded by :func:`quantise`)."""
    cfg = model.cfg
    if cfg.arch not in EXPORTABLE:
        raise ConfigError(f"export folds {' and '.join(EXPORTABLE)} models; '{cfg.arch}' (residual adds) cannot "
                          "be exported yet")
    if cfg.temporal_input:
        raise ConfigError("export handles direct (analog) input; sequence input cannot be exported yet")
    model = model.eval()
    items = list(model.hidden) if cfg.arch == "mlp" else list(model.features)
    layers: list[FloatLayer] = []
    shape = tuple(cfg.input_shape)  # of what the next synapse receives, before any pooling fold
    pooled = False
    for item in items:
        if isinstance(item, nn.AvgPool2d):
            if item.kernel_size not in (2, (2, 2)) or item.stride not in (2, (2, 2)) or pooled:
                raise ConfigError("export folds single 2x2 average pooling (stride 2) only")
            pooled = True
            continue
        block: SpikingBlock = item
        weight, bias = _bn_fold(block.weight.weight, block.bn)
        if isinstance(block.weight, nn.Conv2d):
            conv = block.weight
            if conv.groups != 1 or conv.dilation not in (1, (1, 1)):
                raise ConfigError(f"layer {len(layers)}: grouped or dilated convolutions cannot be exported yet")
            stride, padding = conv.stride[0], conv.padding[0]
            in_shape = shape
            if pooled:
                weight, stride, padding = pool_into_conv(weight, stride, padding)
            layer = FloatLayer(f"conv{len(layers)}", weight, bias, block.neuron,
                               {"input_shape": in_shape, "stride": stride, "padding": padding})
            shape = Conv2d(weight, 0, input_shape=in_shape, stride=stride, padding=padding).output_shape
        else:
            layer = FloatLayer(f"hidden{len(layers)}", weight, bias, block.neuron)
            shape = (weight.shape[0],)
        layers.append(layer)
        pooled = False
    ro = model.readout
    weight = ro.weight.detach().cpu().double().numpy()
    if pooled:
        weight = pool_into_linear(weight, shape)
    bias = ro.bias.detach().cpu().double().numpy() if ro.bias is not None else np.zeros(ro.out_features)
    layers.append(FloatLayer("readout", weight, bias, None))
    return FloatNetwork(layers, cfg.timesteps, tuple(cfg.input_shape))


@dataclasses.dataclass
class LayerQuantisation:
    """What quantising one layer cost, and how much of the 24-bit state it uses on calibration data."""

    name: str
    process: str  # "stock (hardware-compatible): ..." or "custom (simulation only): ..."
    scale: float
    weight_exp: int
    max_abs_weight: int
    weight_rel_error: float  # ||W_int - W S|| / ||W S|| in the float model's units
    vth: int | list[int]
    bias_rel_error: float
    max_abs_u: int = 0
    max_abs_v: int = 0
    headroom_bits: float = 0.0  # log2(2**23 / largest |state|) on calibration data


@dataclasses.dataclass
class QuantReport:
    layers: list[LayerQuantisation]
    calibration_samples: int
    float_int_agreement: float = 0.0  # share of calibration samples whose prediction the two agree on


def _mixed(w: np.ndarray) -> bool:
    return bool(w.min() < 0 < w.max())


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


def quantise(fnet: FloatNetwork, hw: HwConfig, calibration_x: np.ndarray,
             input_scale: float | None = None) -> tuple[IntNetwork, QuantReport]:
    """Quantise ``fnet`` for ``hw`` using ``calibration_x`` (float inputs in [0, 1]) to size each layer's scale.

    Raises HardwareRangeError when a value cannot be represented. Whether the integer state stays in range
    on the calibration data is checked by running it (``spikefold.sim.simulator.check_state_range``).
    """
    bits_in = hw.bits("message_bits")
    encoding = InputEncoding(size=int(np.prod(fnet.input_shape)), scale=float(input_scale or (1 << bits_in) - 1),
                             bits=bits_in)
    _, peaks = fnet.run(calibration_x)
    e_lo, e_hi = hw.range("weight_exp")
    b_lo, b_hi = hw.range("bias_exp")
    mant_bits = hw.bits("bias_mant_bits")
    vth_max = (1 << hw.bits("threshold_bits")) - 1
    layers, reports = [], []
    sent_scale = 1.0  # the previous layer sends sent_scale * spikes; Loihi sends the bare spikes
    for i, fl in enumerate(fnet.layers):
        form = fl.neuron.inference_form() if fl.neuron is not None else None
        gain = form.input_gain if form else 1.0
        weight, bias = fl.weight * gain * sent_scale, fl.bias * gain
        sent_scale = form.output_scale if form else 1.0
        thresholds = np.atleast_1d(np.asarray(form.threshold, np.float64)) if form else None
        if thresholds is not None and len(thresholds) > 1 and len(thresholds) != fnet.timesteps:
            raise HardwareRangeError(
                f"layer '{fl.name}': its threshold schedule has {len(thresholds)} timesteps but the model runs "
                f"{fnet.timesteps}; retrain with timesteps = {len(thresholds)}")
        unit = encoding.scale if i == 0 else 1.0  # one integer input unit in float units is 1/unit
        w_lim = 254 if _mixed(weight) else 255
        max_w = float(np.abs(weight).max())
        # Largest scale each constraint allows.
        limits = [HEADROOM * STATE_MAX / max(peaks[i], 1e-12)]
        if form is not None:
            limits.append(vth_max * (1 << VTH_SHIFT) / max(float(thresholds.max()), 1e-12))
        if np.abs(bias).max(initial=0) > 0:
            limits.append(((1 << (mant_bits - 1)) - 1) * 2.0**b_hi / np.abs(bias).max())
        s_max = min(limits)
        if max_w == 0:
            exp, scale = e_lo, s_max
        else:
            exp = math.floor(math.log2(s_max * max_w / (unit * (1 << ACT_SHIFT) * w_lim)))
            if exp > e_hi:
                exp, scale = e_hi, s_max
            elif exp < e_lo:
                raise HardwareRangeError(
                    f"layer '{fl.name}': weights span {max_w:.4g} in threshold units, which would need "
                    f"weight_exp = {exp}, below the hardware range [{e_lo}, {e_hi}]; lower the threshold or "
                    "regularise the weights")
            else:
                scale = w_lim * unit * (1 << ACT_SHIFT) * 2.0**exp / max_w
        per_unit = scale / (unit * (1 << ACT_SHIFT) * 2.0**exp)
        w_int = weight * per_unit
        w_int = 2 * np.rint(w_int / 2) if _mixed(weight) else np.rint(w_int)
        w_int = np.clip(w_int, -256, 255).astype(np.int32)
        size = fl.output_size()
        neuron_bias = np.repeat(bias, size // len(bias)) if fl.conv is not None else bias
        mant, bexp = _quantise_bias(fl.name, neuron_bias * scale, b_lo, b_hi, mant_bits)
        initial = None
        if form is None:
            dv, vth, reset = 0, VTH_NEVER, "zero"
        else:
            dv, reset = int(round(DECAY_UNITY * (1.0 - form.decay))), form.reset
            vth_all = np.rint(thresholds * scale / (1 << VTH_SHIFT)).astype(np.int64)
            vth = int(vth_all[0]) if len(vth_all) == 1 else vth_all
            if form.decay > 0 and dv < 1:
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
        if fl.conv is not None:
            synapses = Conv2d(weights=w_int, weight_exp=exp, num_message_bits=bits_in if i == 0 else 0,
                              input_shape=tuple(fl.conv["input_shape"]), stride=fl.conv["stride"],
                              padding=fl.conv["padding"])
        else:
            synapses = Dense(weights=w_int, weight_exp=exp, num_message_bits=bits_in if i == 0 else 0)
        layer = Layer(name=fl.name, synapses=synapses,
                      neurons=LIF(du=DECAY_UNITY - 1, dv=dv, vth=vth, bias_mant=mant.astype(np.int32),
                                  bias_exp=bexp.astype(np.int32), reset=reset),
                      scale=scale, readout=form is None, initial=initial)
        layers.append(layer)
        exact_w, exact_b = weight * per_unit, neuron_bias * scale
        reports.append(LayerQuantisation(
            name=fl.name, process=layer.process, scale=scale, weight_exp=exp,
            max_abs_weight=int(np.abs(w_int).max()),
            weight_rel_error=float(np.linalg.norm(w_int - exact_w) / max(np.linalg.norm(exact_w), 1e-300)),
            vth=vth if np.ndim(vth) == 0 else [int(v) for v in vth],
            bias_rel_error=float(np.linalg.norm(shift(mant, bexp) - exact_b) / max(np.linalg.norm(exact_b), 1e-300))
            if np.any(exact_b) else 0.0,
        ))
    net = IntNetwork(input=encoding, layers=layers, timesteps=fnet.timesteps, hw_config=hw.name)
    net.validate(hw)
    return net, QuantReport(reports, calibration_samples=len(calibration_x))
