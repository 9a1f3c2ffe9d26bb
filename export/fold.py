"""Fold a trained model into a float network, then quantise it into the integer network a hw_config allows.

Folding (exact in floating point): BatchNorm into the preceding Linear,
``W' = diag(gamma / sqrt(var + eps)) W`` and ``b' = beta - gamma mean / sqrt(var + eps)``.

Quantisation, per layer, picks one scale S (v_int ~= U_float * S). Loihi adds ``(W_int s) << e << 6`` to
the current, so the weights become ``W' S / (input_unit * 64 * 2**e)``; S is the largest value for which the
threshold fits its 17 bits, the bias its 13-bit mantissa and 3-bit exponent, and the state seen on
calibration data keeps one bit of headroom below 2**23; ``e`` is then the largest exponent that keeps the
weights within 8 bits, so the weights use the full range. Mixed-sign weights are rounded to even numbers:
Lava's Dense would truncate an odd one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from spikefold.errors import ConfigError, HardwareRangeError
from spikefold.export.hw_config import HwConfig
from spikefold.export.intnet import (
    ACT_SHIFT,
    DECAY_UNITY,
    LIF,
    STATE_MAX,
    VTH_NEVER,
    VTH_SHIFT,
    Dense,
    InputEncoding,
    IntNetwork,
    Layer,
    shift,
)
from spikefold.train.models import SpikingMLP, TdBatchNorm
from spikefold.train.neurons.lif import LIF as FloatLIF
from spikefold.train.neurons.lif import lif_step

HEADROOM = 0.5  # use at most half the 24-bit range on calibration data


@dataclasses.dataclass
class FloatLayer:
    name: str
    weight: np.ndarray  # float64 (out, in), BatchNorm folded in
    bias: np.ndarray  # float64 (out,)
    beta: float  # membrane decay (hidden layers)
    vth: float
    readout: bool = False


@dataclasses.dataclass
class FloatNetwork:
    """The trained model with BatchNorm folded away: what the integer network approximates."""

    layers: list[FloatLayer]
    timesteps: int

    @torch.no_grad()
    def run(self, x: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Time-averaged logits for x (samples, features) and, per layer, the largest |current| or
        |potential| reached (the readout's potential is its running sum of currents)."""
        inp = torch.as_tensor(np.asarray(x, np.float64))
        peaks = []
        h = inp.unsqueeze(0).expand(self.timesteps, *inp.shape)
        for layer in self.layers:
            current = h @ torch.as_tensor(layer.weight).T + torch.as_tensor(layer.bias)
            if layer.readout:
                peaks.append(float(current.cumsum(0).abs().max()))
                return current.mean(0).numpy(), peaks
            beta = torch.tensor(layer.beta, dtype=torch.float64)
            u = torch.zeros_like(current[0])
            out, peak = [], float(current.abs().max())
            for step_current in current:
                u, s, h = lif_step(u, step_current, beta, layer.vth, "hard", "rectangular", 1.0)
                peak = max(peak, float(h.abs().max()))
                out.append(s)
            peaks.append(peak)
            h = torch.stack(out)
        raise ValueError("a float network must end in a readout layer")


def fold(model: SpikingMLP) -> FloatNetwork:
    """Fold BatchNorm (with its running statistics, i.e. evaluation mode) into the weights and biases."""
    if model.cfg.arch != "mlp":
        raise ConfigError(f"export folds MLPs so far; '{model.cfg.arch}' models cannot be exported yet")
    layers = []
    for i, block in enumerate(model.hidden):
        neuron = block.neuron
        if not isinstance(neuron, FloatLIF) or neuron.options.reset != "hard":
            raise ConfigError(
                f"layer hidden{i}: neuron type '{neuron.kind}' (reset '{getattr(neuron.options, 'reset', '-')}') "
                "cannot be exported yet; export supports 'lif' with hard reset")
        bn = block.bn
        inv_std = 1.0 / torch.sqrt(bn.running_var.detach().cpu().double() + bn.eps)
        gamma = bn.weight.detach().cpu().double() if bn.affine else torch.ones_like(inv_std)
        if isinstance(bn, TdBatchNorm):
            gamma = gamma * bn.scale
        shift = bn.bias.detach().cpu().double() if bn.affine else torch.zeros_like(inv_std)
        weight = block.weight.weight.detach().cpu().double() * (gamma * inv_std)[:, None]
        bias = shift - gamma * bn.running_mean.detach().cpu().double() * inv_std
        layers.append(FloatLayer(f"hidden{i}", weight.numpy(), bias.numpy(),
                                 float(neuron.beta.detach()), float(neuron.options.vth)))
    ro = model.readout
    bias = ro.bias.detach().cpu().double().numpy() if ro.bias is not None else np.zeros(ro.out_features)
    layers.append(FloatLayer("readout", ro.weight.detach().cpu().double().numpy(), bias, 0.0, 0.0, readout=True))
    return FloatNetwork(layers, model.cfg.timesteps)


@dataclasses.dataclass
class LayerQuantisation:
    """What quantising one layer cost, and how much of the 24-bit state it uses on calibration data."""

    name: str
    scale: float
    weight_exp: int
    max_abs_weight: int
    weight_rel_error: float  # ||W_int - W S|| / ||W S|| in the float model's units
    vth: int
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


def quantise(fnet: FloatNetwork, hw: HwConfig, calibration_x: np.ndarray,
             input_scale: float | None = None) -> tuple[IntNetwork, QuantReport]:
    """Quantise ``fnet`` for ``hw`` using ``calibration_x`` (float inputs in [0, 1]) to size each layer's scale.

    Raises HardwareRangeError when a value cannot be represented. Whether the integer state stays in range
    on the calibration data is checked by running it (``spikefold.sim.simulator.check_state_range``).
    """
    bits_in = hw.bits("message_bits")
    encoding = InputEncoding(size=fnet.layers[0].weight.shape[1],
                             scale=float(input_scale or (1 << bits_in) - 1), bits=bits_in)
    _, peaks = fnet.run(calibration_x)
    e_lo, e_hi = hw.range("weight_exp")
    b_lo, b_hi = hw.range("bias_exp")
    mant_bits = hw.bits("bias_mant_bits")
    vth_max = (1 << hw.bits("threshold_bits")) - 1
    layers, reports = [], []
    for i, fl in enumerate(fnet.layers):
        unit = encoding.scale if i == 0 else 1.0  # one integer input unit in float units is 1/unit
        w_lim = 254 if _mixed(fl.weight) else 255
        max_w = float(np.abs(fl.weight).max())
        # Largest scale each constraint allows.
        limits = [HEADROOM * STATE_MAX / max(peaks[i], 1e-12)]
        if not fl.readout:
            limits.append(vth_max * (1 << VTH_SHIFT) / fl.vth)
        if np.abs(fl.bias).max(initial=0) > 0:
            limits.append(((1 << (mant_bits - 1)) - 1) * 2.0**b_hi / np.abs(fl.bias).max())
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
        w_int = fl.weight * per_unit
        w_int = 2 * np.rint(w_int / 2) if _mixed(fl.weight) else np.rint(w_int)
        w_int = np.clip(w_int, -256, 255).astype(np.int32)
        mant, bexp = _quantise_bias(fl.name, fl.bias * scale, b_lo, b_hi, mant_bits)
        if fl.readout:
            dv, vth = 0, VTH_NEVER
        else:
            dv = int(round(DECAY_UNITY * (1.0 - fl.beta)))
            vth = int(round(fl.vth * scale / (1 << VTH_SHIFT)))
            if dv < 1:
                raise HardwareRangeError(
                    f"layer '{fl.name}': decay beta = {fl.beta:.6f} rounds to dv = 0 (no leak); Loihi's 12-bit "
                    "dv needs beta <= 1 - 1/8192")
            if not 1 <= vth <= vth_max:
                raise HardwareRangeError(
                    f"layer '{fl.name}': threshold {fl.vth} scales to vth = {vth}, outside [1, {vth_max}]")
        layers.append(Layer(
            name=fl.name,
            synapses=Dense(weights=w_int, weight_exp=exp, num_weight_bits=8,
                           num_message_bits=bits_in if i == 0 else 0),
            neurons=LIF(du=DECAY_UNITY - 1, dv=dv, vth=vth, bias_mant=mant.astype(np.int32),
                        bias_exp=bexp.astype(np.int32)),
            scale=scale,
            readout=fl.readout,
        ))
        exact_w = fl.weight * per_unit
        exact_b = fl.bias * scale
        reports.append(LayerQuantisation(
            name=fl.name, scale=scale, weight_exp=exp, max_abs_weight=int(np.abs(w_int).max()),
            weight_rel_error=float(np.linalg.norm(w_int - exact_w) / max(np.linalg.norm(exact_w), 1e-300)),
            vth=vth,
            bias_rel_error=float(np.linalg.norm(shift(mant, bexp) - exact_b) / max(np.linalg.norm(exact_b), 1e-300))
            if np.any(exact_b) else 0.0,
        ))
    net = IntNetwork(input=encoding, layers=layers, timesteps=fnet.timesteps, hw_config=hw.name)
    net.validate(hw)
    return net, QuantReport(reports, calibration_samples=len(calibration_x))
