"""lava-dl's netx HDF5 files, both ways: the integer network written as a file ``lava.lib.dl.netx.hdf5.Network``
builds and runs in Lava, and files that lava-dl's SLAYER exports read into an integer network.

What netx holds and how it maps (lava-dl 0.6.0, read from ``netx/hdf5.py`` and ``netx/blocks``):

- A chain of layers ``layer/<i>``: ``input`` (its ``shape`` only), ``dense``, ``conv`` and ``flatten``. netx
  connects each layer to the one before; it implements no pooling (spikefold folds average pooling into the next
  convolution's kernel, which netx runs as a larger, strided ``conv``), so the chain is the whole graph.
- ``weight`` holds what one spike delivers, as an integer. netx re-encodes a dense matrix for Lava's ``Dense``
  without loss (it shifts the weights up and sets a negative exponent that shifts the sum back exactly), so the
  synaptic input is ``weight @ s``, with no rounding after the sum. A ``conv`` runs Lava's ``Conv``, which uses
  the weights as they are, sums in float32 and clamps the sum to 24 bits. Conv weights are (out, in, kh, kw), a
  correlation, as torch and spikefold's ``Conv2d`` hold them (netx flips them for Lava's convolution itself).
- ``neuron`` is ``CUBA``: Lava's LIF with ``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant`` and
  ``bias_mant = bias`` at a bias exponent fixed at 6. Neurons are laid out (x, y, channel) in Lava, and a
  ``flatten`` before a dense layer orders them (channel, y, x), as spikefold does.
- Reset and input are not in the file: the caller builds ``hdf5.Network(path, input_message_bits=B,
  reset_interval=T, reset_offset=1)``. netx staggers each layer's reset by its place in the chain
  (``reset_offset + 1 + i``), which with ``reset_offset = 1`` is the step spikefold's Lava runner resets a layer
  at depth ``i + 1``: the first step its sample reaches it.

So an integer network is exact in netx when it is a chain of basic LIF layers (zero reset, one threshold, no
initial potential), every connection's ``shift(W_eff @ s, weight_exp)`` equals an integer matrix's product that
Lava keeps without loss, and every effective bias is a multiple of 64. The shipped hw_config ``loihi2_netx``
(weight exponent 0, bias exponent 6) makes ``spikefold export`` produce such integers. Anything else is refused
by name (:class:`~spikefold.core.errors.ExportFormatError`); it needs spikefold's own processes
(``spikefold deploy``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikefold.core.errors import ExportFormatError, NetxFileError
from spikefold.export import hw_config
from spikefold.export.intnet import (INPUT, LIF, STATE_MAX, Connection, Conv2d, Dense, InputEncoding, IntNetwork,
                                     Layer, lava_weights, shift, weight_step)
from spikefold.core.files import write_bytes

NETX_BIAS_EXP = 6  # netx hands CUBA neurons bias_exp = 6 whatever the file says
NETX_RESET_OFFSET = 1  # hdf5.Network(reset_offset=1) staggers resets as spikefold's Lava runner does
READABLE_TYPES = ("input", "dense", "conv", "flatten")
# Layer types lava-dl writes that spikefold cannot map, and why (netx itself raises NotImplementedError for
# the first five).
_UNREADABLE = {
    "pool": "lava-dl's netx does not implement pooling layers either",
    "average": "lava-dl's netx does not implement average layers either",
    "concat": "lava-dl's netx does not implement concat layers either",
    "convT": "lava-dl's netx does not implement transposed convolutions either",
    "unpool": "lava-dl's netx does not implement unpooling either",
    "dense_rec": "it is recurrent, and spikefold's integer network is feed-forward",
    "dense_comp": "its complex-valued synapses drive resonate-and-fire neurons, which spikefold does not model",
}


def synapse_matrix(synapses: Dense) -> np.ndarray:
    """The integer weights netx would need for ``synapses``: what one spike (or one unit of graded input)
    delivers, ``W_eff * 2**weight_exp``; refused where the exponent's shift after the sum rounds."""
    w = lava_weights(synapses.weights, synapses.num_weight_bits)
    if synapses.weight_exp >= 0:
        return shift(w, synapses.weight_exp)
    step = 1 << -synapses.weight_exp
    if np.any(w % step):
        raise ExportFormatError(
            f"weight_exp {synapses.weight_exp} floors each synaptic sum, which netx cannot express (its weights "
            "apply no exponent after the sum); export with --hw-config loihi2_netx (weight exponent 0; a graded "
            "input layer may also need a smaller --input-scale)")
    return w // step


def lossless_dense(matrix: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """(weights, weight_exp) for a spikefold ``Dense`` of 8-bit weights whose synaptic input is exactly
    ``matrix @ s``, as netx's re-encoding makes it in Lava; refused when no 8-bit form holds ``matrix``."""
    m = np.asarray(matrix, np.int64)
    step = weight_step(bool(m.min(initial=0) < 0 < m.max(initial=0)), 8)
    # Lava keeps multiples of `step` only (2 for a mixed-sign matrix): the matrix times step, shifted back, may fit.
    candidates = [(m * step, -(step.bit_length() - 1)), (m, 0)] if step > 1 else [(m, 0)]
    for weights, exp in candidates:
        if np.array_equal(lava_weights(weights, 8), weights):
            return weights, exp
    raise ExportFormatError(
        f"{what}: weights span [{m.min()}, {m.max()}], which Lava's 8-bit synapses do not hold exactly "
        "(mixed-sign weights outside [-128, 127] must be even, single-sign ones within 8 bits)")


def _check_chain(net: IntNetwork) -> None:
    """Refuse, naming the layer and the feature, what netx's chain of basic CUBA layers cannot express."""
    for index, layer in enumerate(net.layers):
        expected = INPUT if index == 0 else net.layers[index - 1].name
        if [c.source for c in layer.inputs] != [expected]:
            raise ExportFormatError(
                f"layer '{layer.name}' takes input from {[c.source for c in layer.inputs]}; netx's layers form a "
                f"chain (each reads only '{expected}'), so skip connections and residual sums need spikefold's "
                "own runner (spikefold deploy)")
        if layer.inputs[0].delay:
            raise ExportFormatError(f"layer '{layer.name}': its synapses delay by {layer.inputs[0].delay} steps, "
                                    "which spikefold does not write to netx; use spikefold's own runner (spikefold "
                                    "deploy)")
        if layer.neurons.needs:
            raise ExportFormatError(
                f"layer '{layer.name}' has {layer.neurons.needs[0]}, which netx's CUBA neuron (Lava's LIF) cannot "
                "express; it needs spikefold's own Lava process (spikefold deploy)")
        if layer.initial is not None:
            raise ExportFormatError(
                f"layer '{layer.name}' starts each sample from an initial potential (MP-Init), delivered through "
                "pulse synapses netx has no layer for; it needs spikefold's runner (spikefold deploy)")
        syn = layer.inputs[0].synapses
        if isinstance(syn, Conv2d) and index > 0 and not isinstance(net.layers[index - 1].inputs[0].synapses, Conv2d):
            raise ExportFormatError(
                f"layer '{layer.name}': a convolution reading a dense layer's output has no netx form (netx "
                "connects a 1-D output only to a dense layer); it needs spikefold's runner (spikefold deploy)")


def _conv_sum_bound(kernel: np.ndarray, max_input: int) -> int:
    """The largest |synaptic sum| a neuron of a convolution with this (out, in, kh, kw) kernel can receive: Lava's
    Conv sums in float32 and clamps to 24 bits where spikefold's synapses wrap at 32, so the two agree only
    below 2**23."""
    per_output = np.abs(kernel).reshape(kernel.shape[0], -1).sum(axis=1)
    return int(per_output.max(initial=0)) * max_input


def _neuron_group(group: h5py.Group, neu: LIF) -> None:
    group.create_dataset("type", (1,), "S10", [b"CUBA"])
    for key, value in (("iDecay", neu.du + 1), ("vDecay", neu.dv), ("vThMant", int(neu.vth)), ("refDelay", 1)):
        group.create_dataset(key, data=np.int64(value))
    group.create_dataset("gradedSpike", data=False)


def _netx_bias(layer: Layer) -> np.ndarray:
    bias = layer.neurons.effective_bias()
    unit = 1 << NETX_BIAS_EXP
    mant = bias // unit
    lo, hi = -(1 << 12), (1 << 12) - 1  # Lava's 13-bit bias mantissa
    if np.any(bias % unit) or mant.min(initial=0) < lo or mant.max(initial=0) > hi:
        worst = int(bias[np.argmax((bias % unit != 0) | (mant < lo) | (mant > hi))])
        raise ExportFormatError(
            f"layer '{layer.name}': effective bias {worst} is not a 13-bit mantissa times 2**{NETX_BIAS_EXP}, netx's "
            "fixed bias exponent; export with --hw-config loihi2_netx (bias exponent 6)")
    return mant


def to_bytes(net: IntNetwork) -> bytes:
    """The netx HDF5 file for ``net``, in memory (raises ExportFormatError for what netx cannot express)."""
    _check_chain(net)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        # spikefold's own attributes: netx ignores them; read() takes the timesteps and input encoding back.
        f.attrs.update({"spikefold.timesteps": net.timesteps, "spikefold.input_bits": net.input.bits,
                        "spikefold.input_scale": net.input.scale, "spikefold.input_per_timestep": net.input.per_timestep,
                        "spikefold.netx_reset_offset": NETX_RESET_OFFSET})
        layers = f.create_group("layer")
        first = net.layers[0].inputs[0].synapses
        entries: list[tuple[str, Any]] = [("input", first.input_shape if isinstance(first, Conv2d) else (net.input.size,))]
        graded = (1 << net.input.bits) - 1
        for index, layer in enumerate(net.layers):
            syn = layer.inputs[0].synapses
            try:
                matrix = synapse_matrix(syn)
            except ExportFormatError as exc:
                raise ExportFormatError(f"layer '{layer.name}': {exc}") from None
            lossless_dense(matrix, f"layer '{layer.name}'")
            if isinstance(syn, Conv2d):
                bound = _conv_sum_bound(matrix, graded if index == 0 else 1)
                if bound >= STATE_MAX:
                    raise ExportFormatError(
                        f"layer '{layer.name}': convolution sums can reach {bound}; Lava's Conv (netx) clamps them "
                        f"at {STATE_MAX - 1} where the integer network wraps at 32 bits; lower the weights or "
                        "the input bits")
            elif index > 0 and isinstance(net.layers[index - 1].inputs[0].synapses, Conv2d):
                entries.append(("flatten", None))
            entries.append((layer.name, (layer, matrix)))
        for i, (kind, item) in enumerate(entries):
            g = layers.create_group(str(i))
            if kind in ("input", "flatten"):
                g.create_dataset("type", (1,), "S10", [kind.encode()])
                if item is not None:
                    g.create_dataset("shape", data=np.asarray(item, np.int64))
                continue
            layer, matrix = item
            syn, neu = layer.inputs[0].synapses, layer.neurons
            bias = _netx_bias(layer)
            if isinstance(syn, Conv2d):
                c, h, w = syn.output_shape
                g.create_dataset("type", (1,), "S10", [b"conv"])
                g.create_dataset("shape", data=np.asarray(syn.output_shape, np.int64))
                g.create_dataset("inChannels", data=np.int64(syn.input_shape[0]))
                g.create_dataset("outChannels", data=np.int64(c))
                g.create_dataset("kernelSize", data=np.asarray(matrix.shape[2:], np.int64))
                for key, value in (("stride", syn.stride), ("padding", syn.padding), ("dilation", 1)):
                    g.create_dataset(key, data=np.array([value, value], np.int64))
                g.create_dataset("groups", data=np.int64(1))
                g.create_dataset("bias", data=bias.reshape(c, h, w).transpose(2, 1, 0))  # Lava's (x, y, c)
            else:
                g.create_dataset("type", (1,), "S10", [b"dense"])
                g.create_dataset("shape", data=np.array([neu.size], np.int64))
                g.create_dataset("inFeatures", data=np.int64(matrix.shape[1]))
                g.create_dataset("outFeatures", data=np.int64(matrix.shape[0]))
                g.create_dataset("bias", data=bias)
            g.create_dataset("weight", data=matrix.astype(np.int64))
            g.attrs["spikefold.name"] = layer.name
            _neuron_group(g.create_group("neuron"), neu)
    return buffer.getvalue()


def write(net: IntNetwork, path: str | Path) -> Path:
    """Write ``net`` as a netx HDF5 file, atomically."""
    return write_bytes(Path(path), to_bytes(net))


def _text(group: h5py.Group, key: str, where: str) -> str:
    if key not in group:
        raise NetxFileError(f"{where} has no '{key}' dataset; it is not a netx layer as lava-dl writes them")
    value = group[key][()]
    value = value[0] if np.ndim(value) else value
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _array(group: h5py.Group, key: str, where: str, integer: bool = True) -> np.ndarray:
    if key not in group:
        raise NetxFileError(f"{where} has no '{key}' dataset, which netx needs")
    value = np.asarray(group[key][()])
    if integer and value.size and not np.array_equal(value, np.trunc(value)):
        raise NetxFileError(f"{where}/{key} holds non-integer values; netx truncates them, so the file is not "
                            "a quantised export (export with SLAYER's own export_hdf5 after quantised training)")
    return value.astype(np.int64) if integer else value


def _read_neurons(group: h5py.Group, where: str, size: int, bias_layout) -> LIF:
    if "neuron" not in group:
        raise NetxFileError(f"{where} has no 'neuron' group; spikefold maps layers of CUBA neurons only")
    neu = group["neuron"]
    kind = _text(neu, "type", f"{where}/neuron")
    if kind not in ("CUBA", "LOIHI"):
        raise NetxFileError(f"{where}: neuron type '{kind}' is not CUBA; spikefold models Loihi's CUBA LIF only "
                            "(sigma-delta and resonate-and-fire neurons need lava-dl's netx)")
    if "messageBits" in neu and int(np.asarray(neu["messageBits"][()]).ravel()[0]) > 0:
        raise NetxFileError(f"{where}: graded output spikes (messageBits > 0) are not modelled; use binary spikes")
    bias = _array(group, "bias", where) if "bias" in group else np.zeros(size, np.int64)
    bias = bias_layout(bias)
    scalar = {key: int(np.asarray(_array(neu, key, f"{where}/neuron")).ravel()[0])
              for key in ("iDecay", "vDecay", "vThMant")}
    return LIF(du=scalar["iDecay"] - 1, dv=scalar["vDecay"], vth=scalar["vThMant"],
               bias_mant=bias.astype(np.int32), bias_exp=np.full(size, NETX_BIAS_EXP, np.int32))


def _as_synapses(matrix: np.ndarray, where: str, message_bits: int, conv: dict | None) -> Dense:
    try:
        weights, exp = lossless_dense(matrix, where)
    except ExportFormatError as exc:
        raise NetxFileError(str(exc)) from None
    common = dict(weights=weights.astype(np.int32), weight_exp=exp, num_weight_bits=8,
                  num_message_bits=message_bits)
    return Conv2d(**common, **conv) if conv is not None else Dense(**common)


def read(path: str | Path, timesteps: int | None = None, input_bits: int | None = None,
         input_scale: float | None = None) -> IntNetwork:
    """Read a netx HDF5 file (lava-dl's SLAYER ``export_hdf5``, or :func:`write`) into the integer network.

    ``timesteps`` and ``input_bits`` (what ``hdf5.Network(input_message_bits=...)`` is given; 1 for binary
    spikes) are not in a SLAYER file: pass them, or they come from the attributes :func:`write` adds. The last
    layer is the network's output (its voltage after the last step is read as the logits; its spikes are
    recorded like every layer's).
    """
    path = Path(path)
    if not path.is_file():
        raise NetxFileError(f"netx file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise NetxFileError(f"netx file {path} cannot be read as HDF5 ({exc})") from None
    with f:
        if "layer" not in f:
            raise NetxFileError(f"{path} has no 'layer' group: it is not a netx network file (lava-dl's "
                                "SLAYER writes one with net.export_hdf5)")
        attrs = dict(f.attrs)
        timesteps = int(timesteps or attrs.get("spikefold.timesteps", 0))
        if timesteps < 1:
            raise NetxFileError(f"{path}: netx files do not record timesteps per sample; pass them (--timesteps)")
        bits = int(input_bits or attrs.get("spikefold.input_bits", 1))
        scale = float(input_scale or attrs.get("spikefold.input_scale", (1 << bits) - 1))
        keys = sorted(f["layer"].keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if not keys or not all(k.isdigit() for k in keys):
            raise NetxFileError(f"{path}: layer group names must be 0, 1, 2, ... (found {list(f['layer'].keys())})")
        net = _read_layers(f["layer"], keys, str(path), timesteps, bits, scale)
        net.input.per_timestep = bool(attrs.get("spikefold.input_per_timestep", False))
    # Read weights may sit at exponent -1 (see lossless_dense), which loihi2_netx would not allow: a network read
    # from netx is checked against, and reports energy for, the plain loihi2 config.
    net.validate(hw_config.load(net.hw_config))
    return net


def _read_layers(layers_group: h5py.Group, keys: list[str], source: str, timesteps: int, bits: int,
                 scale: float) -> IntNetwork:
    shape: tuple[int, ...] | None = None  # output shape of what the next layer reads: (C, H, W) or (n,)
    layers: list[Layer] = []
    for key in keys:
        group, where = layers_group[key], f"{source}: layer/{key}"
        kind = _text(group, "type", where)
        if kind in _UNREADABLE:
            raise NetxFileError(f"{where} is a '{kind}' layer, which spikefold cannot read: {_UNREADABLE[kind]}")
        if kind not in READABLE_TYPES:
            raise NetxFileError(f"{where} has type '{kind}', unknown to spikefold (it reads "
                                f"{', '.join(READABLE_TYPES)} layers as lava-dl 0.6 writes them)")
        if kind == "input":
            if "neuron" in group:
                raise NetxFileError(f"{where}: an input layer with neurons (SLAYER's Input block) has no synapses "
                                    "before it, which spikefold's layers always have; export without the Input block")
            if layers:
                raise NetxFileError(f"{where}: an input layer after other layers")
            shape = tuple(int(v) for v in _array(group, "shape", where))
            continue
        if kind == "flatten":
            if shape is not None:
                shape = (int(np.prod(shape)),)
            continue
        if shape is None:
            raise NetxFileError(f"{where}: the file has no input layer with a shape before its first {kind} layer")
        if "delay" in group and np.any(_array(group, "delay", where)):
            raise NetxFileError(f"{where}: per-synapse delays are not modelled by spikefold's integer network "
                                "(train without SLAYER's delay or with delay = 0)")
        message_bits = bits if not layers else 0
        if message_bits == 1:
            message_bits = 0  # one-bit input is a binary spike, as netx's input_message_bits = 0 sends it
        name = f"layer{len(layers)}"
        if kind == "dense":
            weight = _array(group, "weight", where)
            n_in = int(np.prod(shape))
            weight = weight.reshape(weight.shape[0], -1)
            if weight.shape[1] != n_in:
                raise NetxFileError(f"{where}: weight has {weight.shape[1]} inputs but the layer before has {n_in} "
                                    "outputs")
            synapses = _as_synapses(weight, where, message_bits, None)
            size = weight.shape[0]
            neurons = _read_neurons(group, where, size, lambda b: np.broadcast_to(b.ravel(), (size,)).copy())
            shape = (size,)
        else:
            if len(shape) != 3:
                raise NetxFileError(f"{where}: a conv layer needs a (C, H, W) input, got shape {shape}")
            weight = _array(group, "weight", where)
            weight = weight.reshape(weight.shape[:4])
            geometry = {}
            for k in ("stride", "padding", "dilation"):
                v = np.atleast_1d(_array(group, k, where))
                if np.any(v != v.ravel()[0]):
                    raise NetxFileError(f"{where}: {k} {v.tolist()} differs between the axes; spikefold's Conv2d "
                                        "has one per layer")
                geometry[k] = int(v.ravel()[0])
            if geometry.pop("dilation") != 1 or int(np.asarray(_array(group, "groups", where)).ravel()[0]) != 1:
                raise NetxFileError(f"{where}: dilated or grouped convolutions are not modelled by spikefold")
            conv = dict(input_shape=tuple(shape), **geometry)
            synapses = _as_synapses(weight, where, message_bits, conv)
            c, h, w = out_shape = synapses.output_shape
            declared = tuple(int(v) for v in _array(group, "shape", where))
            if declared != out_shape:
                raise NetxFileError(f"{where}: shape {declared} does not match the convolution's output {out_shape}")
            size = c * h * w

            def conv_bias(b, c=c, h=h, w=w):
                if b.size == c:  # one per channel, as SLAYER writes a normalisation's bias
                    return np.repeat(b.ravel(), h * w)
                return b.reshape(w, h, c).transpose(2, 1, 0).ravel()  # Lava's (x, y, c) -> (c, y, x)

            neurons = _read_neurons(group, where, size, conv_bias)
            bound = _conv_sum_bound(weight, ((1 << bits) - 1) if not layers else 1)
            if bound >= STATE_MAX:
                raise NetxFileError(f"{where}: convolution sums can reach {bound}; Lava's Conv clamps them at "
                                    f"{STATE_MAX - 1} where spikefold's synapses wrap at 32 bits")
            shape = out_shape
        layers.append(Layer(name=str(group.attrs.get("spikefold.name", name)),
                            inputs=[Connection(INPUT if not layers else layers[-1].name, synapses)],
                            neurons=neurons, scale=1.0))
    if not layers:
        raise NetxFileError(f"{source}: no dense or conv layer to read")
    layers[-1].readout = True
    size = int(np.prod(layers[0].inputs[0].synapses.input_shape if isinstance(layers[0].inputs[0].synapses, Conv2d)
                       else (layers[0].inputs[0].synapses.shape[1],)))
    return IntNetwork(input=InputEncoding(size=size, scale=scale, bits=bits), layers=layers, timesteps=timesteps)
