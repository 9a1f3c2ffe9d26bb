"""Write an integer network as a NIR graph and read it back.

The graph uses standard NIR nodes whose float parameters describe the *quantised* network in the float model's
units (one NIR time unit is one timestep, dt = 1): ``Input -> ((Flatten ->) Affine or Conv2d -> CubaLIF)* ->
(Flatten ->) Affine -> I -> Output``. For a layer with scale S: ``weight = W_eff 2**e 64 / (S * input_unit)``,
``bias = (bias_mant << bias_exp) / S``, ``v_threshold = vth 64 / S``, ``tau_syn = 4096 / (du + 1)``,
``tau_mem = 4096 / dv`` and ``r = tau_mem`` (so that v gains exactly I each step). The readout is an
integrator ``I`` (dv = 0). The exact integers ride in each node's ``metadata`` under ``spikefold.*`` keys,
including what standard NIR cannot say (a per-timestep threshold schedule, the subtractive reset, MP-Init's
initial-potential synapses, and whether the layer runs on stock or custom Lava processes), and the graph's
metadata holds the input encoding and timesteps, so reading gives back the identical integer network.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import nir
import numpy as np

from spikefold.errors import NIRFileError
from spikefold.export import hw_config
from spikefold.export.intnet import (
    ACT_SHIFT,
    DECAY_UNITY,
    LIF,
    VTH_SHIFT,
    Conv2d,
    Dense,
    InputEncoding,
    IntNetwork,
    Layer,
)

FORMAT = "spikefold-intnet-1"
SUPPORTED_NODES = ("Input", "Affine", "Conv2d", "CubaLIF", "I", "Flatten", "Output")


def _synapse(layer: Layer, input_unit: float) -> nir.NIRNode:
    syn, neu = layer.synapses, layer.neurons
    gain = 2.0**syn.weight_exp * (1 << ACT_SHIFT) / (layer.scale * input_unit)
    bias = neu.effective_bias() / layer.scale
    meta = {
        "spikefold.weights": np.asarray(syn.weights, np.int32),
        "spikefold.weight_exp": int(syn.weight_exp),
        "spikefold.num_weight_bits": int(syn.num_weight_bits),
        "spikefold.num_message_bits": int(syn.num_message_bits),
        "spikefold.scale": float(layer.scale),
    }
    if isinstance(syn, Conv2d):
        c_in, h, w = syn.input_shape
        meta |= {"spikefold.input_shape": np.asarray(syn.input_shape), "spikefold.stride": int(syn.stride),
                 "spikefold.padding": int(syn.padding)}
        per_channel = bias.reshape(syn.output_shape[0], -1)[:, 0]  # one bias per map: export repeats it per neuron
        return nir.Conv2d(input_shape=(h, w), weight=syn.effective_weights() * gain, stride=syn.stride,
                          padding=syn.padding, dilation=1, groups=1, bias=per_channel.astype(np.float64),
                          metadata=meta)
    return nir.Affine(weight=syn.effective_weights() * gain, bias=bias.astype(np.float64), metadata=meta)


def _neuron(layer: Layer) -> nir.NIRNode:
    neu = layer.neurons
    shape = layer.synapses.output_shape if isinstance(layer.synapses, Conv2d) else (neu.size,)
    meta = {
        "spikefold.du": int(neu.du),
        "spikefold.dv": int(neu.dv),
        "spikefold.vth": int(neu.vth) if np.ndim(neu.vth) == 0 else np.asarray(neu.vth, np.int64),
        "spikefold.reset": neu.reset,
        "spikefold.bias_mant": np.asarray(neu.bias_mant, np.int32),
        "spikefold.bias_exp": np.asarray(neu.bias_exp, np.int32),
        "spikefold.readout": bool(layer.readout),
        "spikefold.process": layer.process,
    }
    if layer.initial is not None:
        meta |= {"spikefold.initial_weights": np.asarray(layer.initial.weights, np.int32),
                 "spikefold.initial_weight_exp": int(layer.initial.weight_exp)}
    if layer.readout:
        return nir.I(r=np.ones(shape), metadata=meta)
    tau_mem = np.full(shape, DECAY_UNITY / neu.dv)
    # NIR's CubaLIF has one threshold and a reset to v_reset: a schedule's first value stands in for it and
    # the subtractive reset is only in the metadata, which is what deploy reads.
    return nir.CubaLIF(
        tau_syn=np.full(shape, DECAY_UNITY / (neu.du + 1)),
        tau_mem=tau_mem,
        r=tau_mem.copy(),
        v_leak=np.zeros(shape),
        v_threshold=np.full(shape, neu.threshold(0) * (1 << VTH_SHIFT) / layer.scale),
        v_reset=np.zeros(shape),
        metadata=meta,
    )


def to_nir(net: IntNetwork) -> nir.NIRGraph:
    first = net.layers[0].synapses
    in_shape = first.input_shape if isinstance(first, Conv2d) else (net.input.size,)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
    edges = []
    previous, previous_shape = "input", in_shape
    for i, layer in enumerate(net.layers):
        unit = net.input.scale if i == 0 else 1.0
        if not isinstance(layer.synapses, Conv2d) and len(previous_shape) > 1:
            nodes[f"{layer.name}.flatten"] = nir.Flatten(input_type={"input": np.array(previous_shape)}, start_dim=0)
            edges.append((previous, f"{layer.name}.flatten"))
            previous = f"{layer.name}.flatten"
        nodes[f"{layer.name}.synapse"] = _synapse(layer, unit)
        nodes[f"{layer.name}.neuron"] = _neuron(layer)
        edges += [(previous, f"{layer.name}.synapse"), (f"{layer.name}.synapse", f"{layer.name}.neuron")]
        previous = f"{layer.name}.neuron"
        previous_shape = layer.synapses.output_shape if isinstance(layer.synapses, Conv2d) else (layer.size,)
    nodes["output"] = nir.Output(output_type={"output": np.array([net.readout.size])})
    edges.append((previous, "output"))
    metadata: dict[str, Any] = {
        "spikefold.format": FORMAT,
        "spikefold.timesteps": int(net.timesteps),
        "spikefold.dt": 1.0,
        "spikefold.hw_config": net.hw_config,
        "spikefold.input_scale": float(net.input.scale),
        "spikefold.input_bits": int(net.input.bits),
    }
    for key, value in net.metadata.items():
        metadata[f"spikefold.meta.{key}"] = value
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write(net: IntNetwork, path: str | Path) -> Path:
    """Write atomically: a crash never leaves a half-written file where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        nir.write(tmp, to_nir(net))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: str | Path) -> IntNetwork:
    """Read a NIR file written by :func:`write` back into the identical integer network, checked against the
    ranges of the hw_config it names."""
    path = Path(path)
    if not path.is_file():
        raise NIRFileError(f"NIR file {path} does not exist; write one with `spikefold export`")
    try:
        graph = nir.read(path)
    except Exception as exc:  # h5py/nir raise many types for a damaged file; all mean the same to a user
        raise NIRFileError(
            f"NIR file {path} cannot be read ({type(exc).__name__}: {exc}); it is corrupt or not a NIR "
            "file: re-run `spikefold export`") from None
    net = from_nir(graph, source=str(path))
    net.validate(hw_config.load(net.hw_config))
    return net


def _chain(graph: nir.NIRGraph, source: str) -> list[str]:
    for name, node in graph.nodes.items():
        kind = type(node).__name__
        if kind not in SUPPORTED_NODES:
            raise NIRFileError(
                f"{source}: node '{name}' has type {kind}, which spikefold deploy cannot map to Lava; "
                f"supported node types: {', '.join(SUPPORTED_NODES)}")
    successors: dict[str, list[str]] = {}
    for a, b in graph.edges:
        successors.setdefault(a, []).append(b)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise NIRFileError(f"{source}: expected one Input node, found {len(inputs)}")
    order, current = [], inputs[0]
    while True:
        order.append(current)
        nxt = successors.get(current, [])
        if not nxt:
            break
        if len(nxt) > 1:
            raise NIRFileError(f"{source}: node '{current}' feeds {len(nxt)} nodes; only chains are supported")
        current = nxt[0]
        if current in order:
            raise NIRFileError(f"{source}: the graph has a cycle through node '{current}'")
    if len(order) != len(graph.nodes):
        missing = sorted(set(graph.nodes) - set(order))
        raise NIRFileError(f"{source}: nodes {missing} are not on the path from input to output")
    return order


def _meta(node: nir.NIRNode, name: str, key: str, source: str) -> Any:
    meta = getattr(node, "metadata", None) or {}
    if f"spikefold.{key}" not in meta:
        raise NIRFileError(
            f"{source}: node '{name}' carries no spikefold integer '{key}'; only graphs written by "
            "`spikefold export` can be deployed bit-exactly")
    return meta[f"spikefold.{key}"]


def from_nir(graph: nir.NIRGraph, source: str = "<graph>") -> IntNetwork:
    meta = graph.metadata or {}
    if meta.get("spikefold.format") != FORMAT:
        raise NIRFileError(
            f"{source}: this NIR graph was not written by spikefold (no '{FORMAT}' integer metadata); "
            "export the model with `spikefold export` to get the integers Loihi runs")
    order = [n for n in _chain(graph, source) if not isinstance(graph.nodes[n], nir.Flatten)]
    kinds = [type(graph.nodes[n]).__name__ for n in order]
    body = kinds[1:-1]
    if kinds[-1] != "Output" or len(body) < 2 or len(body) % 2:
        raise NIRFileError(f"{source}: expected Input -> (Affine/Conv2d -> neuron)+ -> Output, got {' -> '.join(kinds)}")
    layers = []
    for k in range(0, len(body), 2):
        sname, nname = order[1 + k], order[2 + k]
        if body[k] not in ("Affine", "Conv2d") or body[k + 1] not in ("CubaLIF", "I"):
            raise NIRFileError(
                f"{source}: node '{sname}' ({body[k]}) -> '{nname}' ({body[k + 1]}) is not Affine/Conv2d -> CubaLIF/I")
        synapse, neuron = graph.nodes[sname], graph.nodes[nname]

        def value(node, name, key):
            return _meta(node, name, key, source)

        common = dict(weights=np.asarray(value(synapse, sname, "weights"), np.int32),
                      weight_exp=int(value(synapse, sname, "weight_exp")),
                      num_weight_bits=int(value(synapse, sname, "num_weight_bits")),
                      num_message_bits=int(value(synapse, sname, "num_message_bits")))
        if body[k] == "Conv2d":
            syn = Conv2d(**common, input_shape=tuple(int(v) for v in value(synapse, sname, "input_shape")),
                         stride=int(value(synapse, sname, "stride")), padding=int(value(synapse, sname, "padding")))
        else:
            syn = Dense(**common)
        vth = np.asarray(value(neuron, nname, "vth"), np.int64)
        initial = None
        if "spikefold.initial_weights" in (neuron.metadata or {}):
            initial = Dense(weights=np.asarray(value(neuron, nname, "initial_weights"), np.int32),
                            weight_exp=int(value(neuron, nname, "initial_weight_exp")))
        layers.append(Layer(
            name=nname.rsplit(".", 1)[0],
            synapses=syn,
            neurons=LIF(
                du=int(value(neuron, nname, "du")),
                dv=int(value(neuron, nname, "dv")),
                vth=int(vth) if vth.ndim == 0 else vth,
                bias_mant=np.asarray(value(neuron, nname, "bias_mant"), np.int32),
                bias_exp=np.asarray(value(neuron, nname, "bias_exp"), np.int32),
                reset=str(value(neuron, nname, "reset")),
            ),
            scale=float(value(synapse, sname, "scale")),
            readout=bool(value(neuron, nname, "readout")),
            initial=initial,
        ))
    first = layers[0].synapses
    in_size = int(np.prod(first.input_shape)) if isinstance(first, Conv2d) else int(first.shape[1])
    extra = {k[len("spikefold.meta."):]: v for k, v in meta.items() if k.startswith("spikefold.meta.")}
    return IntNetwork(
        input=InputEncoding(size=in_size, scale=float(meta["spikefold.input_scale"]),
                            bits=int(meta["spikefold.input_bits"])),
        layers=layers,
        timesteps=int(meta["spikefold.timesteps"]),
        hw_config=str(meta.get("spikefold.hw_config", "loihi2")),
        metadata=extra,
    )
