"""Quantise a float reference network into the integer network a hw_config allows.

Per layer, one scale S (v_int ~= H * S). Loihi adds ``(W_int s) << e << 6`` to the current, so the weights
become ``W' S / (input_unit * 64 * 2**e)``; S is the largest value for which the threshold fits its 17 bits, the
bias its 13-bit mantissa and 3-bit exponent, and the state seen on calibration data keeps one bit of headroom
below 2**23; ``e`` is then the largest exponent that keeps the weights within 8 bits, so they use the full range.
Weights are rounded to values Lava keeps unchanged (:func:`spikefold.export.intnet.integer_weights`: mixed-sign
weights to even numbers, as Lava's Dense would truncate an odd one). Each neuron's inference form folds in too:
its input gain (TrSG's 1/tau) into its own weights and bias, its output scale (TrSG's Vthr) into the next
layer's weights, its decay to ``dv``, its threshold (or DS-ATGO's per-timestep schedule) to ``vth``, its initial
potential (MP-Init) to one pulse per sample through (n, 1) synapses, and its reset to Loihi's zero reset or
spikefold's subtractive one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spikefold.core.errors import HardwareRangeError
from spikefold.export.float_net import FloatLayer, FloatNetwork
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
    integer_weights,
    shift,
    weight_range,
)
from spikefold.train.neurons.base import InferenceForm

HEADROOM = 0.5  # use at most half the 24-bit range on calibration data


@dataclasses.dataclass
class LayerQuantisation:
    """What quantising one layer cost, and how much of the 24-bit state it uses on calibration data."""

    name: str
    needs: list[str]  # what the layer needs beyond Loihi's basic neuron (intnet.Layer.needs)
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
class QatReport:
    """Fine-tuning through the integer forward (spikefold.export.qat): per epoch, and the integer network's test
    accuracy before and after."""

    epochs: int
    lr: float
    history: list[dict]
    integer_test_accuracy_before: float
    integer_test_accuracy_after: float


@dataclasses.dataclass
class QuantReport:
    layers: list[LayerQuantisation]
    calibration_samples: int
    weight_bits: int = 8  # Lava's num_weight_bits of every connection
    float_int_agreement: float = 0.0  # share of calibration samples whose prediction the two agree on
    qat: QatReport | None = None  # when fine-tuned


@dataclasses.dataclass
class ExportReport:
    """``spikefold export``'s result (MODEL.report.json): the quantisation and the Lava process of each layer."""

    checkpoint: str
    nir: str
    float_test_accuracy: float
    quantisation: QuantReport
    processes: dict[str, str]  # layer name -> the process that runs it


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
        sent_scale[fl.name] = form.output_scale if form else 1.0  # (a recurrent connection reads it too)
        terms.append(LayerTerms(fl, form, [fi.weight * gain * sent_scale[fi.source] for fi in fl.inputs],
                                [input_scale if fi.source == INPUT else 1.0 for fi in fl.inputs], fl.bias * gain))
    return terms


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


def _quantise_initial(name: str, value: np.ndarray, e_lo: int, e_hi: int) -> Dense | None:
    """A first-step pulse per neuron (in a_in units: MP-Init's initial potential, a carried-over current's bias
    transient) as (n, 1) synapses of 8 bits and an exponent."""
    peak = float(np.abs(value).max(initial=0))
    if peak == 0:
        return None
    exp = max(e_lo, math.ceil(math.log2(peak / 255)))
    if exp > e_hi:
        raise HardwareRangeError(f"layer '{name}': initial potential {peak:.4g} (synaptic units) needs "
                                 f"weight_exp {exp} > {e_hi}; lower the layer scale")
    w = np.clip(np.rint(value / 2.0**exp), -255, 255)
    return Dense(weights=w.reshape(-1, 1).astype(np.int32), weight_exp=exp)


def _decay_units(decay: float) -> int:
    """What a state that keeps ``decay`` of itself per step loses, in Loihi's 12-bit units: round(4096 (1 - decay))
    (dv for the voltage, du + 1 for the current)."""
    return int(round(DECAY_UNITY * (1.0 - decay)))


def _voltage_decay(name: str, what: str, decay: float) -> int:
    """Loihi's dv for a voltage that keeps ``decay`` per step; a named error where a leak rounds to none."""
    dv = _decay_units(decay)
    if decay < 1 and dv < 1:  # (a decay of exactly 1, an IF's or an integrator's, is dv = 0)
        raise HardwareRangeError(f"layer '{name}': {what} {decay:.6f} rounds to dv = 0 (no leak); Loihi's 12-bit "
                                 "dv needs decay <= 1 - 1/8192")
    return dv


def _current_decay(fl: FloatLayer) -> int:
    """Loihi's du for the layer's current: 4095 forgets it every step; ``du + 1 = 4096 (1 - current_decay)``."""
    du = _decay_units(fl.current_decay) - 1
    if du < 0:
        raise HardwareRangeError(f"layer '{fl.name}': current decay {fl.current_decay:.6f} rounds to du + 1 = 0 "
                                 "(a current that never decays); Loihi's du needs decay <= 1 - 1/8192")
    return du


def _scale_and_exponents(lt: LayerTerms, s_max: float, weight_bits: int, e_lo: int, e_hi: int) -> tuple[float, list[int]]:
    """The layer scale S (at most ``s_max``) and one weight exponent per connection.

    Loihi adds ``(W_int s) << e << 6`` to the current, so connection c's integer weights are
    ``W_c S / (unit_c 64 2**e_c)``. As with one connection, S is lowered from ``s_max`` until the connection
    that limits it fills its 8 bits exactly; then every other connection gets the smallest exponent at which its
    weights fit, so each uses more than half its range."""
    lims, scale = [], s_max
    for w, unit in zip(lt.weights, lt.units):
        w_lim = weight_range(bool(w.min() < 0 < w.max()), weight_bits)[1]
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
             weight_bits: int | None = None, binary_input: bool = False) -> tuple[IntNetwork, QuantReport]:
    """Quantise ``fnet`` for ``hw`` using ``calibration_x`` (float inputs in [0, 1]; (samples, T, ...) for a
    model with temporal input) to size each layer's scale.

    The input is sent as graded spikes, per timestep for temporal input; ``binary_input`` sends it as plain
    spikes instead (events: every value 0 or 1), see :class:`~spikefold.export.intnet.InputEncoding`.

    ``weight_bits`` (default: the hw_config's) sets Lava's ``num_weight_bits``: weights are then multiples of
    2**(8 - weight_bits), plus one bit for a mixed-sign matrix. Raises HardwareRangeError when a value cannot
    be represented. Whether the integer state stays in range on the calibration data is checked by running it
    (:func:`spikefold.export.state_range.check_state_range`).
    """
    bits_in = hw.bits("message_bits")
    max_bits = hw.bits("weight_bits")
    weight_bits = max_bits if weight_bits is None else int(weight_bits)
    if not 1 <= weight_bits <= max_bits:
        raise HardwareRangeError(f"weight bits = {weight_bits} is outside {hw.name}'s range [1, {max_bits}]")
    if binary_input:
        encoding = InputEncoding(size=int(np.prod(fnet.input_shape)), scale=1.0, bits=1,
                                 per_timestep=fnet.temporal_input)
        encoding.encode(calibration_x)  # names data that are not events
    else:
        encoding = InputEncoding(size=int(np.prod(fnet.input_shape)),
                                 scale=float(input_scale or (1 << bits_in) - 1), bits=bits_in,
                                 per_timestep=fnet.temporal_input)
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
        du = _current_decay(fl)
        # A bias b into a current that carries over (u(t) = a u(t-1) + b + ...) is Loihi's voltage bias b / (1 - a)
        # plus a first-step pulse of -b a / (1 - a) into u, which decays as u does: together b (1 - a**(t+1)) /
        # (1 - a) in u at step t, exactly.
        carry = (DECAY_UNITY - 1 - du) / DECAY_UNITY
        # Largest scale each constraint allows.
        limits = [HEADROOM * STATE_MAX / max(peaks[i], 1e-12)]
        if form is not None:
            limits.append(vth_max * (1 << VTH_SHIFT) / max(float(thresholds.max()), 1e-12))
        if np.abs(lt.bias).max(initial=0) > 0:
            limits.append(((1 << (mant_bits - 1)) - 1) * 2.0**b_hi * (1 - carry) / np.abs(lt.bias).max())
        scale, exps = _scale_and_exponents(lt, min(limits), weight_bits, e_lo, e_hi)
        neuron_bias = lt.neuron_bias() / (1 - carry)
        mant, bexp = _quantise_bias(fl.name, neuron_bias * scale, b_lo, b_hi, mant_bits)
        size = fl.output_size()
        pulse = -neuron_bias * carry * scale / (1 << ACT_SHIFT)  # a_in units
        if form is None:
            dv, vth, reset = _voltage_decay(fl.name, "readout decay", fl.readout_decay), VTH_NEVER, "zero"
        else:
            dv, reset = _voltage_decay(fl.name, "decay", form.decay), form.reset
            vth_all = np.rint(thresholds * scale / (1 << VTH_SHIFT)).astype(np.int64)
            vth = int(vth_all[0]) if len(vth_all) == 1 else vth_all
            if vth_all.min() < 1 or vth_all.max() > vth_max:
                bad = int(vth_all.min() if vth_all.min() < 1 else vth_all.max())
                raise HardwareRangeError(
                    f"layer '{fl.name}': threshold scales to vth = {bad}, outside the hardware range "
                    f"[1, {vth_max}]; retrain with a larger threshold or lower the layer scale")
            pulse = pulse + form.decay * form.initial * scale / (1 << ACT_SHIFT)
        initial = _quantise_initial(fl.name, np.broadcast_to(pulse, (size,)), e_lo, e_hi)
        inputs, exact, rounded, max_abs = [], [], [], 0
        for fi, w, unit, exp in zip(fl.inputs, lt.weights, lt.units, exps):
            w_exact = w * scale / (unit * (1 << ACT_SHIFT) * 2.0**exp)
            w_int = integer_weights(w_exact, weight_bits).astype(np.int32)
            common = dict(weights=w_int, weight_exp=exp, num_weight_bits=weight_bits,
                          num_message_bits=encoding.message_bits if fi.source == INPUT else 0)
            if fi.conv is not None:
                synapses = Conv2d(**common, input_shape=tuple(fi.conv["input_shape"]), stride=fi.conv["stride"],
                                  padding=fi.conv["padding"])
            else:
                synapses = Dense(**common)
            inputs.append(Connection(fi.source, synapses, delay=fi.delay))
            exact.append(w_exact.ravel() * 2.0**exp)  # integer units of the same size across connections
            rounded.append(w_int.ravel() * 2.0**exp)
            max_abs = max(max_abs, int(np.abs(w_int).max()))
        layer = Layer(name=fl.name, inputs=inputs,
                      neurons=LIF(du=du, dv=dv, vth=vth, bias_mant=mant.astype(np.int32),
                                  bias_exp=bexp.astype(np.int32), reset=reset),
                      scale=scale, readout=form is None, initial=initial)
        layers.append(layer)
        exact_w, w_all, exact_b = np.concatenate(exact), np.concatenate(rounded), neuron_bias * scale
        reports.append(LayerQuantisation(
            name=fl.name, needs=list(layer.needs), scale=scale, weight_exp=exps[0] if len(exps) == 1 else exps,
            max_abs_weight=max_abs,
            weight_rel_error=float(np.linalg.norm(w_all - exact_w) / max(np.linalg.norm(exact_w), 1e-300)),
            vth=vth if np.ndim(vth) == 0 else [int(v) for v in vth],
            bias_rel_error=float(np.linalg.norm(shift(mant, bexp) - exact_b) / max(np.linalg.norm(exact_b), 1e-300))
            if np.any(exact_b) else 0.0,
        ))
    net = IntNetwork(input=encoding, layers=layers, timesteps=fnet.timesteps, hw_config=hw.name)
    net.validate(hw)
    return net, QuantReport(reports, calibration_samples=len(calibration_x), weight_bits=weight_bits)
