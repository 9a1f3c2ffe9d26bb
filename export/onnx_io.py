"""The integer network as an ONNX model that computes exactly what ``spikefold.sim.simulator.simulate`` does.

For running the deployed integers on any ONNX runtime (onnxruntime's CPU provider is checked in the tests) and
for viewing the network (Netron and friends). The model is unrolled over the network's T timesteps
(layer-synchronous time, the simulator's default timing): no state crosses calls, so one call is one batch
of samples from zero state, with nothing for the caller to carry between timesteps.

- input ``x``: int64, the encoded input (``InputEncoding.encode``): (samples, inputs), held for all T steps, or
  (samples, T, inputs) for input that changes every timestep (``InputEncoding.per_timestep``);
- outputs ``spikes.<layer>``: bool (samples, T, neurons) per layer, and ``readout_v``: int64 (samples, T,
  readout neurons), the last layer's voltage after every step (``SimResult.readout_v``; the logits are its
  last step).

Everything is int64 and uses only ops that onnxruntime's CPU provider implements for int64 (MatMul, Gather,
Add, Sub, Mul, Div, Mod, Abs, Neg, Min, Max, Greater, Less, Where, Concat, ...). The equations are
``spikefold.export.intnet``'s, spelled in those ops: ONNX's BitShift is unsigned-only, so ``x << k`` is a
multiplication by 2**k and the arithmetic (flooring) ``x >> k`` is ``(x - (x mod 2**k)) / 2**k`` with Mod's
sign-of-divisor (Python) convention, which makes the division exact; the 32-bit wrap is
``((x + 2**31) mod 2**32) - 2**31``; Loihi's decay rounds toward zero as ``sign(p) (|p| / 4096)``. A
convolution gathers its input patches with a fixed index table (a zero slot standing for the padding) and
multiplies them by the kernel, so only Conv2d's kernel and geometry are used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikefold.core.errors import ExportFormatError
from spikefold.export.intnet import (ACT_SHIFT, DECAY_UNITY, INPUT, STATE_BITS, STATE_MAX, VTH_SHIFT,
                                     Conv2d, Dense, IntNetwork, Layer, lava_weights)
from spikefold.core.files import write_bytes

OPSET = 17
PROTOBUF_LIMIT = 2 << 30  # a serialised ONNX model (weights inside) must stay below 2 GiB


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError:
        raise ExportFormatError("ONNX export needs the onnx package: pip install 'spikefold[onnx]'") from None
    return onnx


class _Builder:
    """Accumulates nodes and int64 constants, naming each value uniquely."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0
        self.constants: dict[tuple, str] = {}  # (shape, bytes) -> name

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint: str = "c") -> str:
        """An int64 constant, stored once however often the unrolled steps use it."""
        array = np.asarray(value, dtype=np.int64)
        key = (array.shape, array.tobytes())
        if key not in self.constants:
            self.constants[key] = name = self.name(hint)
            self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return self.constants[key]

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    # The fixed-point operations, each the ONNX spelling of intnet's.
    def floor_shift(self, x: str, k: int) -> str:
        """x >> k, arithmetic (flooring)."""
        d = self.const(1 << k)
        return self.op("Div", self.op("Sub", x, self.op("Mod", x, d, fmod=0)), d)

    def shift(self, x: str, exp: int) -> str:
        return self.op("Mul", x, self.const(1 << exp)) if exp >= 0 else self.floor_shift(x, -exp)

    def wrap32(self, x: str) -> str:
        half = self.const(1 << 31)
        return self.op("Sub", self.op("Mod", self.op("Add", x, half), self.const(1 << 32), fmod=0), half)

    def trunc_decay(self, x: str, keep: int) -> str | None:
        """x * keep / 4096 rounded toward zero; None for 0 (the state is forgotten)."""
        if keep == 0:
            return None
        if keep == DECAY_UNITY:
            return x
        prod = self.op("Mul", x, self.const(keep))
        magnitude = self.op("Div", self.op("Abs", prod), self.const(DECAY_UNITY))
        return self.op("Where", self.op("Less", prod, self.const(0)), self.op("Neg", magnitude), magnitude)


def _conv_patches(syn: Conv2d) -> tuple[np.ndarray, np.ndarray]:
    """For each output position, the flat input index of each kernel tap (C*H*W, a zero slot, for padding), and
    the kernel as a (C*kh*kw, out) matrix in the same tap order."""
    c_in, h, w = syn.input_shape
    c_out, ho, wo = syn.output_shape
    kernel = lava_weights(syn.weights, syn.num_weight_bits)
    _, _, kh, kw = kernel.shape
    c, i, j = np.meshgrid(np.arange(c_in), np.arange(kh), np.arange(kw), indexing="ij")
    y = np.arange(ho)[:, None, None, None, None] * syn.stride + i[None, None] - syn.padding
    x = np.arange(wo)[None, :, None, None, None] * syn.stride + j[None, None] - syn.padding
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    index = np.where(inside, c[None, None] * h * w + y * w + x, c_in * h * w)
    return index.reshape(ho * wo, c_in * kh * kw), kernel.reshape(c_out, -1).T


def _synaptic_input(b: _Builder, syn: Dense, s: str, where: str) -> str:
    """Lava's Dense output (``Dense.a_out`` of the exact product) for presynaptic output ``s`` (int64)."""
    if type(syn) is Conv2d:
        index, kernel = _conv_patches(syn)
        zero = b.op("Mul", b.op("Slice", s, b.const([0]), b.const([1]), b.const([1])), b.const(0))
        patches = b.op("Gather", b.op("Concat", s, zero, axis=1), b.const(index, "patch_index"), axis=1)
        per_position = b.op("MatMul", patches, b.const(kernel, "kernel"))  # (samples, positions, out)
        acc = b.op("Reshape", b.op("Transpose", per_position, perm=[0, 2, 1]), b.const([0, -1]))
    elif type(syn) is Dense:
        acc = b.op("MatMul", s, b.const(lava_weights(syn.weights, syn.num_weight_bits).T, "weights"))
    else:
        raise ExportFormatError(f"{where}: synapses of type {type(syn).__name__} have no ONNX form (Dense and "
                                "Conv2d do)")
    if syn.num_message_bits > 0:
        acc = b.wrap32(acc)
    return b.wrap32(b.shift(acc, int(syn.weight_exp)))


def _lif_step(b: _Builder, layer: Layer, t: int, u: str | None, v: str | None, a_in: str) -> tuple[str, str, str]:
    """:meth:`spikefold.export.intnet.LIF.step`, the definition, spelled in ONNX ops: (u, v after the reset,
    spikes as bool). A change to ``LIF.step`` must be made here too; tests/test_onnx.py holds the two to every
    spike and state on onnxruntime."""
    neu = layer.neurons
    u_raw = b.wrap32(b.op("Mul", a_in, b.const(1 << ACT_SHIFT)))
    if neu.du + 1 < DECAY_UNITY and u is not None:
        decayed = b.trunc_decay(u, DECAY_UNITY - (neu.du + 1))
        u_raw = b.wrap32(b.op("Add", decayed, u_raw))
    turns = b.floor_shift(b.op("Add", u_raw, b.const(STATE_MAX - 1)), STATE_BITS)
    turns = b.op("Max", b.op("Min", turns, b.const(1)), b.const(-1))
    u_new = b.op("Sub", u_raw, b.op("Mul", turns, b.const(1 << STATE_BITS)), hint=f"u_{layer.name}_t{t}")
    v_sum = b.op("Add", u_new, b.const(neu.effective_bias(), "bias"))
    decayed_v = b.trunc_decay(v, DECAY_UNITY - neu.dv) if v is not None else None
    if decayed_v is not None:
        v_sum = b.op("Add", decayed_v, v_sum)
    v_new = b.op("Max", b.op("Min", b.wrap32(v_sum), b.const(STATE_MAX - 1)), b.const(-(STATE_MAX - 1)))
    threshold = b.const(neu.threshold(t) << VTH_SHIFT)
    spikes = b.op("Greater", v_new, threshold, hint=f"s_{layer.name}_t{t}")
    if neu.reset == "subtract":
        v_out = b.op("Sub", v_new, b.op("Mul", threshold, b.op("Cast", spikes, to=b.onnx.TensorProto.INT64)))
    else:
        v_out = b.op("Where", spikes, b.const(0), v_new)
    return u_new, v_out, spikes


def to_model(net: IntNetwork):
    """The ONNX ``ModelProto`` of ``net``, unrolled over ``net.timesteps``."""
    onnx = _onnx()
    b = _Builder(onnx)
    index = {layer.name: i for i, layer in enumerate(net.layers)}
    x = "x"
    per_timestep = net.input.per_timestep
    # Static input is held for all T steps, so what an input connection delivers is computed once; per-timestep
    # input sends row t of each sample at step t.
    from_input: dict[tuple[int, int, int], str] = {}

    def input_part(i: int, j: int, t: int) -> str:
        key = (i, j, t if per_timestep else 0)
        if key not in from_input:
            sent = b.op("Gather", x, b.const(t), axis=1) if per_timestep else x
            from_input[key] = _synaptic_input(b, net.layers[i].inputs[j].synapses, sent,
                                              f"layer '{net.layers[i].name}'")
        return from_input[key]

    u: list[str | None] = [None] * len(net.layers)  # None: zero state (the first step)
    v: list[str | None] = [None] * len(net.layers)
    spikes: list[list[str]] = [[] for _ in net.layers]
    readout_v: list[str] = []
    as_int: dict[tuple[int, int], str] = {}  # (source layer, step): its spikes as int64, cast once
    for t in range(net.timesteps):
        for i, layer in enumerate(net.layers):
            a_in = None
            for j, c in enumerate(layer.inputs):
                sent_at = t - layer.lag(c)  # nothing before the sample's first step
                if sent_at < 0:
                    continue
                if c.source == INPUT:
                    part = input_part(i, j, sent_at)
                else:
                    key = (index[c.source], sent_at)
                    if key not in as_int:
                        as_int[key] = b.op("Cast", spikes[key[0]][sent_at], to=onnx.TensorProto.INT64)
                    part = _synaptic_input(b, c.synapses, as_int[key], f"layer '{layer.name}'")
                a_in = part if a_in is None else b.wrap32(b.op("Add", a_in, part))
            if a_in is None:  # every connection delayed past this step: no synaptic input, for each sample
                batch = b.op("Slice", b.op("Shape", x), b.const([0]), b.const([1]))
                a_in = b.op("Expand", b.const(np.zeros((1, layer.size), np.int64)),
                            b.op("Concat", batch, b.const([layer.size]), axis=0))
            initial = layer.initial_input()
            if initial is not None and t == 0:
                a_in = b.wrap32(b.op("Add", a_in, b.const(initial, "initial")))
            u[i], v[i], s = _lif_step(b, layer, t, u[i], v[i], a_in)
            spikes[i].append(s)
        readout_v.append(v[-1])
    axis = b.const([1])
    outputs = []
    for layer, per_step in zip(net.layers, spikes):
        name = f"spikes.{layer.name}"
        b.nodes.append(b.helper.make_node("Concat", [b.op("Unsqueeze", s, axis) for s in per_step], [name], axis=1))
        outputs.append(b.helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, ["samples", net.timesteps,
                                                                                      layer.size]))
    b.nodes.append(b.helper.make_node("Concat", [b.op("Unsqueeze", s, axis) for s in readout_v], ["readout_v"],
                                      axis=1))
    outputs.append(b.helper.make_tensor_value_info("readout_v", onnx.TensorProto.INT64,
                                                   ["samples", net.timesteps, net.readout.size]))
    input_shape = ["samples", *net.input.sample_shape(net.timesteps)]
    inputs = [b.helper.make_tensor_value_info(x, onnx.TensorProto.INT64, input_shape)]
    graph = b.helper.make_graph(b.nodes, "spikefold_integer_network", inputs, outputs, b.initializers)
    model = b.helper.make_model(graph, opset_imports=[b.helper.make_opsetid("", OPSET)],
                                producer_name="spikefold", doc_string=__doc__.splitlines()[0])
    meta = {"timesteps": net.timesteps, "input_bits": net.input.bits, "input_scale": net.input.scale,
            "input_per_timestep": net.input.per_timestep,
            "hw_config": net.hw_config, "layers": ",".join(layer.name for layer in net.layers)}
    onnx.helper.set_model_props(model, {f"spikefold.{k}": str(val) for k, val in meta.items()})
    return model


def to_bytes(net: IntNetwork) -> bytes:
    onnx = _onnx()
    model = to_model(net)
    size = model.ByteSize()
    if size >= PROTOBUF_LIMIT:
        raise ExportFormatError(
            f"the ONNX model would be {size / 2**30:.2f} GiB, beyond protobuf's 2 GiB (it is unrolled over "
            f"{net.timesteps} timesteps); export fewer timesteps or a smaller network")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write(net: IntNetwork, path: str | Path) -> Path:
    """Write ``net`` as an ONNX model, atomically."""
    return write_bytes(Path(path), to_bytes(net))
