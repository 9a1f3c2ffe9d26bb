"""Write an integer network as a NIR graph and read it back.

The graph is the quantised network as a float network other tools run: its input is the float data (in [0, 1]
before the input encoding), one timestep is ``DT`` = 1e-4 s (snnTorch's fixed dt; tell SpikingJelly and Norse
``dt=1e-4``), and NIR's continuous-time equations, discretised by forward Euler at that dt, give the integer
network's spikes. A hidden layer is an ``LIF`` (an ``IF`` when it does not leak, a ``CubaLIF`` when its current
carries over, du < 4095) fed by one ``Affine`` or ``Conv2d`` per connection (a ``Flatten`` before an ``Affine``
that reads a map); a layer with several connections is a node where edges merge, whose inputs NIR sums, and a
recurrent connection an ``Affine`` from the neuron back to itself (a cycle, which Norse steps with the previous
timestep's spikes, as the integer network does; snnTorch 1.0 misreads that form: see ``reader="snntorch"``). The
non-firing readout is no neuron at all: its synapses feed the ``Output`` directly, and since the readout
integrates without leak, the sum of the Output over the timesteps is its final voltage over S (the logits). A
chain reads ``Input -> ((Flatten ->) Affine or Conv2d -> LIF)* -> (Flatten ->) Affine -> Output``; a spiking
last layer ends ``-> LIF -> Output`` and its spike counts are the prediction; a readout that leaks (imported
from an ``LI`` or ``CubaLI``) ends ``-> LI -> Output`` (or ``CubaLI``), and its final voltage is the logit.

For a layer with scale S (v_int ~= v_float S) and decay dv: ``tau = DT 4096 / dv``, ``r = 1``,
``v_threshold = vth 64 / S``, ``v_leak = v_reset = 0``. NIR's LIF ``tau dv/dt = -v + r I`` steps
``v += (DT / tau)(I - v)``, where the integer LIF adds its whole input, so the synapse carries the gain
``tau / DT = 4096 / dv``: ``weight = W_eff 2**e 64 unit 4096 / (dv S)``, ``bias = (bias_mant << bias_exp) 4096 /
(dv S)``, with ``unit`` the float value of one integer input unit (the input encoding's scale for the input's
synapses, 1 for a spike). The readout's synapses carry no gain. The exact integers ride in each node's
``metadata`` under ``spikefold.*`` keys, including what standard NIR cannot say (a per-timestep threshold
schedule, the subtractive reset, MP-Init's initial-potential synapses, what the layer needs beyond Loihi's basic
neuron (``Layer.needs``, as words), and the layer's name and position in the network's order), and the graph's metadata holds the
input encoding and timesteps, so reading gives back the identical integer network.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import resource
import signal
from pathlib import Path
from typing import Any

import nir
import numpy as np

from spikefold.core import files
from spikefold.core.errors import NIRFileError, SpikefoldError
from spikefold.export import hw_config
from spikefold.export.intnet import (
    ACT_SHIFT,
    DECAY_UNITY,
    INPUT,
    LIF,
    VTH_SHIFT,
    Connection,
    Conv2d,
    Dense,
    InputEncoding,
    IntNetwork,
    Layer,
)

FORMAT = "spikefold-intnet-1"
SUPPORTED_NODES = ("Input", "Affine", "Conv2d", "LIF", "IF", "CubaLIF", "LI", "CubaLI", "I", "Flatten", "Delay",
                   "Output")
# I: the readout of files written before the Output form; LI, CubaLI: a readout that leaks
NEURON_NODES = (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.CubaLI, nir.I)
DT = 1e-4  # seconds per timestep in the graphs written here
READERS = ("euler", "rockpool", "snntorch")  # whose reading of NIR a graph is written for
ROCKPOOL_FORGET = 1e-6  # the share of a current Rockpool's LIF keeps where Loihi's forgets it (du = 4095)
# The dt each tool's graphs mean (NIR stores none), for `spikefold import`'s help and errors.
DT_CONVENTIONS = ("snnTorch 1.0: 1e-4 (fixed in its exporter); SpikingJelly 2.0: the dt given to its exporter "
                  "(default 1e-4); Norse 1.1: the square of its modules' dt (its exporter writes dt times tau; "
                  "1e-6 for its default 1e-3); Rockpool 3.1: the module's dt (default 1e-3); Sinabs 3.1: 1 (it "
                  "counts time in steps); spikefold: 1e-4")

# Reading a damaged HDF5 file can loop inside the HDF5 library, where neither Ctrl-C nor SIGTERM reaches it, or
# allocate without bound: the file is read in a forked child that is killed after this long, with its memory
# capped at READ_MEMORY_FACTOR times the file's size above what it starts with (and at least READ_MEMORY_MIN).
READ_TIMEOUT_S = 120.0
READ_MEMORY_FACTOR = 64
READ_MEMORY_MIN = 2 << 30
# Far above any recipe (T <= 10), low enough that a run's (T, neurons) spike records stay allocatable.
MAX_TIMESTEPS = 1 << 16


def _membrane_gain(layer: Layer) -> float:
    """What NIR's membrane needs its input multiplied by to take all of it per step, as the integer LIF does:
    tau / dt = 4096 / dv (see the module docstring); 1 for an IF (r = 1 / DT already adds the whole input) and
    for the integrating readout."""
    neu = layer.neurons
    return 1.0 if (layer.readout and not _leaky_readout(layer)) or not neu.dv else DECAY_UNITY / neu.dv


def _gain(layer: Layer) -> float:
    """What the float synapses into ``layer`` carry beyond the integer weights' own value: the membrane's gain
    and, where the current carries over, its own Euler step 4096 / (du + 1) (1 for du = 4095); the integrating
    readout's synapses carry none."""
    if layer.readout and not _leaky_readout(layer):
        return 1.0
    return _membrane_gain(layer) * DECAY_UNITY / (layer.neurons.du + 1)


def _rockpool_keeps(layer: Layer) -> tuple[float, float]:
    """The share of the current and of the voltage a step keeps, as Rockpool's exp(-dt / tau) decays take them:
    (4095 - du) / 4096 (at least ROCKPOOL_FORGET: its current cannot forget at once) and (4096 - dv) / 4096."""
    neu = layer.neurons
    return max((DECAY_UNITY - 1 - neu.du) / DECAY_UNITY, ROCKPOOL_FORGET), (DECAY_UNITY - neu.dv) / DECAY_UNITY


def _rockpool_neuron(layer: Layer, index: int) -> nir.CubaLIF:
    """A firing layer as Rockpool 3.1's ``from_nir`` reads a CubaLIF (its LIFTorch): ``dt = tau_mem / (1 + r)``,
    then each step ``i = (i + x) exp(-dt/tau_syn)``, ``v = exp(-dt/tau_mem) v + i + v_leak``; w_in is ignored and
    v_leak is its bias. So tau_mem gives Loihi's voltage decay at dt = DT, r sets that dt, v_leak carries the
    bias, and a current that Loihi forgets every step keeps ROCKPOOL_FORGET of itself (the synapses make up for
    the share the decay takes at once: see :func:`_synapse`)."""
    neu, shape = layer.neurons, layer.output_shape
    keep_u, keep_v = _rockpool_keeps(layer)
    tau_mem = DT / -math.log(keep_v) if keep_v < 1 else DT * 1e12  # an IF: no decay a float32 can see
    threshold = neu.threshold(0) * (1 << VTH_SHIFT) / layer.scale
    return nir.CubaLIF(tau_syn=np.full(shape, DT / -math.log(keep_u)), tau_mem=np.full(shape, tau_mem),
                       r=np.full(shape, tau_mem / DT - 1), v_leak=neu.effective_bias().reshape(shape) / layer.scale,
                       w_in=np.ones(shape), v_threshold=np.full(shape, threshold), v_reset=np.zeros(shape),
                       metadata=_neuron_metadata(layer, index))


def _synapse(layer: Layer, syn: Dense, input_unit: float, delay: int = 0, reader: str = "euler") -> nir.NIRNode:
    neu = layer.neurons
    rockpool = reader == "rockpool" and not layer.readout
    layer_gain = 1.0 / _rockpool_keeps(layer)[0] if rockpool else _gain(layer)
    gain = 2.0**syn.weight_exp * (1 << ACT_SHIFT) * input_unit * layer_gain / layer.scale
    # NIR sums what arrives at the neuron, so the bias rides on the layer's first connection only. Where the
    # current carries over (du < 4095), a bias in NIR's synapses builds up in it to 4096 / (du + 1) times its
    # value, as the integer network's voltage bias does together with its first-step pulse into u (export's
    # quantise): so the bias carries the membrane's gain alone.
    bias = (neu.effective_bias() * _membrane_gain(layer) / layer.scale
            if syn is layer.inputs[0].synapses and not rockpool else np.zeros(neu.size))
    meta = {
        "spikefold.weights": np.asarray(syn.weights, np.int32),
        "spikefold.weight_exp": int(syn.weight_exp),
        "spikefold.num_weight_bits": int(syn.num_weight_bits),
        "spikefold.num_message_bits": int(syn.num_message_bits),
        "spikefold.scale": float(layer.scale),
    }
    if delay:
        meta["spikefold.delay"] = int(delay)
    if isinstance(syn, Conv2d):
        c_in, h, w = syn.input_shape
        meta |= {"spikefold.input_shape": np.asarray(syn.input_shape), "spikefold.stride": int(syn.stride),
                 "spikefold.padding": int(syn.padding)}
        per_channel = bias.reshape(syn.output_shape[0], -1)[:, 0]  # one bias per map: export repeats it per neuron
        return nir.Conv2d(input_shape=(h, w), weight=syn.effective_weights() * gain, stride=syn.stride,
                          padding=syn.padding, dilation=1, groups=1, bias=per_channel.astype(np.float64),
                          metadata=meta)
    return nir.Affine(weight=syn.effective_weights() * gain, bias=bias.astype(np.float64), metadata=meta)


def _neuron_metadata(layer: Layer, index: int) -> dict[str, Any]:
    neu = layer.neurons
    meta = {
        "spikefold.layer_name": layer.name,
        "spikefold.layer_index": int(index),
        "spikefold.du": int(neu.du),
        "spikefold.dv": int(neu.dv),
        "spikefold.vth": int(neu.vth) if np.ndim(neu.vth) == 0 else np.asarray(neu.vth, np.int64),
        "spikefold.reset": neu.reset,
        "spikefold.bias_mant": np.asarray(neu.bias_mant, np.int32),
        "spikefold.bias_exp": np.asarray(neu.bias_exp, np.int32),
        "spikefold.readout": bool(layer.readout),
        "spikefold.needs": ", ".join(layer.needs),  # for readers: read() derives them from the integers
    }
    if layer.initial is not None:
        meta |= {"spikefold.initial_weights": np.asarray(layer.initial.weights, np.int32),
                 "spikefold.initial_weight_exp": int(layer.initial.weight_exp)}
    return meta


def _leaky_readout(layer: Layer) -> bool:
    """A readout whose voltage leaks (an imported LI or CubaLI): written as that node, not as synapses feeding
    the Output. (An integrating readout whose current carries over, dv = 0 < 4095 - du, has no NIR node: it is
    written as its synapses, which a float reader takes without the carry-over; its integers are exact.)"""
    return layer.readout and layer.neurons.dv > 0


def _neuron(layer: Layer, index: int) -> nir.NIRNode:
    """A firing layer's neuron node, or a leaky readout's (the integrating readout has none: its synapses feed
    the Output)."""
    neu = layer.neurons
    shape = layer.output_shape
    meta = _neuron_metadata(layer, index)
    if layer.readout:
        leak = dict(tau=np.full(shape, DT * DECAY_UNITY / neu.dv), r=np.ones(shape), v_leak=np.zeros(shape),
                    metadata=meta)
        if neu.du + 1 == DECAY_UNITY:
            return nir.LI(**leak)
        return nir.CubaLI(tau_syn=np.full(shape, DT * DECAY_UNITY / (neu.du + 1)), tau_mem=leak.pop("tau"),
                          w_in=np.ones(shape), **leak)
    # NIR's neurons have one threshold and a reset to v_reset: a schedule's first value stands in for it and
    # the subtractive reset is only in the metadata, which is what deploy reads.
    common = dict(v_threshold=np.full(shape, neu.threshold(0) * (1 << VTH_SHIFT) / layer.scale),
                  v_reset=np.zeros(shape), metadata=meta)
    tau_mem = np.full(shape, DT * DECAY_UNITY / neu.dv if neu.dv else np.inf)
    r = np.full(shape, 1.0 if neu.dv else 1.0 / DT)
    if neu.du + 1 < DECAY_UNITY:
        return nir.CubaLIF(tau_syn=np.full(shape, DT * DECAY_UNITY / (neu.du + 1)), tau_mem=tau_mem, r=r,
                           v_leak=np.zeros(shape), w_in=np.ones(shape), **common)
    if neu.dv == 0:
        return nir.IF(r=r, **common)
    return nir.LIF(tau=tau_mem, r=r, v_leak=np.zeros(shape), **common)


def to_nir(net: IntNetwork, reader: str = "euler") -> nir.NIRGraph:
    """The graph, read by forward Euler at DT (snnTorch, SpikingJelly, Norse) or, with ``reader="rockpool"``,
    with firing layers written for Rockpool 3.1's reading of a CubaLIF (:func:`_rockpool_neuron`), which the
    Euler tools would read otherwise; ``reader="snntorch"`` is the Euler graph with each recurrent connection
    written so that snnTorch 1.0's importer reads it (Norse reads the plain one). spikefold reads each back into
    the identical integer network."""
    if reader not in READERS:
        raise ValueError(f"reader '{reader}' is not one of {READERS}")
    shapes: dict[str, tuple[int, ...]] = {}
    first = next(c.synapses for layer in net.layers for c in layer.inputs if c.source == INPUT)
    shapes[INPUT] = first.input_shape if isinstance(first, Conv2d) else (net.input.size,)
    nodes: dict[str, nir.NIRNode] = {INPUT: nir.Input(input_type={"input": np.array(shapes[INPUT])})}
    edges = []
    for i, layer in enumerate(net.layers):
        if layer.readout and not _leaky_readout(layer):
            neuron = "output"
            nodes[neuron] = nir.Output(output_type={"output": np.array(layer.output_shape)},
                                       metadata=_neuron_metadata(layer, i))
        else:
            neuron = f"{layer.name}.neuron"
            nodes[neuron] = _rockpool_neuron(layer, i) if reader == "rockpool" and not layer.readout else \
                _neuron(layer, i)
        shapes[layer.name] = layer.output_shape  # (a recurrent connection reads the layer itself)
        for c in layer.inputs:
            sender = INPUT if c.source == INPUT else f"{c.source}.neuron"
            synapse = f"{layer.name}.synapse" if len(layer.inputs) == 1 else f"{layer.name}.synapse.{c.source}"
            if c.delay:  # NIR's Delay holds the spikes back; the synapse's metadata keeps the integer
                nodes[f"{synapse}.delay"] = nir.Delay(delay=np.full(shapes[c.source], c.delay * DT))
                edges.append((sender, f"{synapse}.delay"))
                sender = f"{synapse}.delay"
            # snnTorch 1.0's importer takes a neuron <-> Affine cycle for its RLeaky and rewires it into a sub-graph
            # whose input feeds the recurrent weights (the layer's input would pass through them). For it, a
            # Flatten of one axis onto itself, which changes nothing, keeps the cycle out of that pattern; nirtorch
            # then steps it with the previous step's spikes, as Norse steps the plain cycle (which that Flatten
            # confuses).
            one_axis = reader == "snntorch" and c.source == layer.name and len(shapes[c.source]) == 1
            if not isinstance(c.synapses, Conv2d) and (len(shapes[c.source]) > 1 or one_axis):
                nodes[f"{synapse}.flatten"] = nir.Flatten(input_type={"input": np.array(shapes[c.source])},
                                                          start_dim=0, end_dim=0 if one_axis else -1)
                edges.append((sender, f"{synapse}.flatten"))
                sender = f"{synapse}.flatten"
            nodes[synapse] = _synapse(layer, c.synapses, net.input.scale if c.source == INPUT else 1.0, c.delay,
                                      reader)
            edges += [(sender, synapse), (synapse, neuron)]
    if "output" not in nodes:  # a spiking last layer (the Output carries its spikes) or a leaky readout
        nodes["output"] = nir.Output(output_type={"output": np.array(net.readout.output_shape)})
        edges.append((f"{net.readout.name}.neuron", "output"))
    metadata: dict[str, Any] = {
        "spikefold.format": FORMAT,
        "spikefold.timesteps": int(net.timesteps),
        "spikefold.dt": DT,
        "spikefold.hw_config": net.hw_config,
        "spikefold.input_scale": float(net.input.scale),
        "spikefold.input_bits": int(net.input.bits),
        "spikefold.input_per_timestep": bool(net.input.per_timestep),
    }
    for key, value in net.metadata.items():
        metadata[f"spikefold.meta.{key}"] = value
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write(net: IntNetwork, path: str | Path, reader: str = "euler") -> Path:
    """Write atomically: a crash never leaves a half-written file where a good one was. ``reader``: as for
    :func:`to_nir`."""
    with files.atomic_path(path) as tmp:
        nir.write(tmp, to_nir(net, reader))
    return Path(path)


def read(path: str | Path, timeout_s: float | None = None) -> IntNetwork:
    """Read a NIR file written by :func:`write` back into the identical integer network, checked against the
    ranges of the hw_config it names. Any file, however damaged, gives the network or a named error
    (:class:`NIRFileError`, or the range error that names the parameter) within ``timeout_s``
    (default :data:`READ_TIMEOUT_S`)."""
    path = Path(path)
    if not path.is_file():
        raise NIRFileError(f"NIR file {path} does not exist; write one with `spikefold export`")
    return checked_network(_read_graph(path, READ_TIMEOUT_S if timeout_s is None else timeout_s), str(path))


def checked_network(graph: nir.NIRGraph, source: str) -> IntNetwork:
    """The integer network a graph holds, fully checked (file format and hardware ranges); any fault in it is a
    named error."""
    try:
        net = from_nir(graph, source=source)
        _check_loaded(graph, net, source)
        net.validate(hw_config.load(net.hw_config))
    except SpikefoldError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file reaches any line of the mapping; all are this error
        raise NIRFileError(f"NIR file {source} holds a damaged network ({type(exc).__name__}: {exc}); re-run "
                           "`spikefold export`") from None
    return net


def _read_graph(path: Path, timeout_s: float) -> nir.NIRGraph:
    """``nir.read`` in a forked child, bounded in time and memory (see :data:`READ_TIMEOUT_S`)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    limit = max(READ_MEMORY_MIN, READ_MEMORY_FACTOR * path.stat().st_size)
    child = context.Process(target=_read_in_child, args=(path, sender, limit), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise NIRFileError(f"NIR file {path}: reading it did not finish within {timeout_s:g} s (a damaged HDF5 "
                               "structure makes the HDF5 library loop); re-run `spikefold export`")
        outcome, payload = receiver.recv()
    except (EOFError, OSError):
        outcome, payload = "error", f"the reading process ended with exit code {child.exitcode}"
    finally:
        child.join(1.0)  # it exits as soon as it has sent
        if child.is_alive():
            child.kill()
            child.join()
        receiver.close()
    if outcome == "error":
        raise NIRFileError(f"NIR file {path} cannot be read ({payload}); it is corrupt or not a NIR file: re-run "
                           "`spikefold export`")
    return payload


def _read_in_child(path: Path, sender, memory_limit: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a Ctrl-C ends the read; the parent reports it
    with contextlib.suppress(OSError, ValueError):
        in_use = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (in_use + memory_limit, resource.RLIM_INFINITY))
    try:
        outcome = ("graph", nir.read(path))
    except BaseException as exc:  # noqa: BLE001 - h5py/nir raise many types for a damaged file
        outcome = ("error", f"{type(exc).__name__}: {exc}"[:500])
    try:
        sender.send(outcome)
    except Exception as exc:  # noqa: BLE001 - e.g. a graph too large to pickle within the memory cap
        sender.send(("error", f"{type(exc).__name__}: {exc}"[:500]))
    # Out at once: the usual exit flushes stdio, whose locks another thread of the parent may have held at fork.
    os._exit(0)


def _layers(graph: nir.NIRGraph, source: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The layers in the graph, in the order written: per neuron node, its (synapse node, sending neuron node or
    the Input node) pairs. Checks the node types and that every node lies on a path from input to output."""
    for name, node in graph.nodes.items():
        kind = type(node).__name__
        if kind not in SUPPORTED_NODES:
            raise NIRFileError(
                f"{source}: node '{name}' has type {kind}, which spikefold deploy cannot map to Lava; "
                f"supported node types: {', '.join(SUPPORTED_NODES)}")
    successors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    predecessors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for a, b in graph.edges:
        successors[a].append(b)
        predecessors[b].append(a)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRFileError(f"{source}: expected one Input and one Output node, found Inputs {inputs} and Outputs "
                           f"{outputs}; every node must lie on the path from the one input to the one output")

    def reach(start: str, step: dict[str, list[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in step[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    stray = set(graph.nodes) - (reach(inputs[0], successors) & reach(outputs[0], predecessors))
    if stray:
        raise NIRFileError(f"{source}: nodes {sorted(stray)} are not on a path from input to output")

    def single(name: str, step: dict[str, list[str]], what: str) -> str:
        if len(step[name]) != 1:
            raise NIRFileError(f"{source}: node '{name}' has {len(step[name])} {what}; it needs exactly one")
        return step[name][0]

    def is_layer(name: str) -> bool:
        """A neuron node, or an Output that synapses feed (the readout written as its synapses alone)."""
        node = graph.nodes[name]
        return isinstance(node, NEURON_NODES) or (isinstance(node, nir.Output) and any(
            isinstance(graph.nodes[p], (nir.Affine, nir.Conv2d)) for p in predecessors[name]))

    layers = []
    for name, node in graph.nodes.items():
        if not is_layer(name):
            continue
        pairs = []
        for synapse in predecessors[name]:
            if not isinstance(graph.nodes[synapse], (nir.Affine, nir.Conv2d)):
                raise NIRFileError(f"{source}: node '{synapse}' ({type(graph.nodes[synapse]).__name__}) feeds the "
                                   f"neuron '{name}'; only Affine or Conv2d synapses may")
            single(synapse, successors, "successors")
            sender = single(synapse, predecessors, "inputs")
            if isinstance(graph.nodes[sender], nir.Flatten):
                single(sender, successors, "successors")
                sender = single(sender, predecessors, "inputs")
            if isinstance(graph.nodes[sender], nir.Delay):  # (its integer rides in the synapse's metadata)
                single(sender, successors, "successors")
                sender = single(sender, predecessors, "inputs")
            if not isinstance(graph.nodes[sender], NEURON_NODES + (nir.Input,)):
                raise NIRFileError(f"{source}: synapse '{synapse}' reads node '{sender}' "
                                   f"({type(graph.nodes[sender]).__name__}); it must read a neuron or the input")
            pairs.append((synapse, sender))
        if not pairs:
            raise NIRFileError(f"{source}: neuron '{name}' has no input synapses")
        layers.append((name, pairs))
    if not is_layer(outputs[0]):
        last = single(outputs[0], predecessors, "inputs")
        if not isinstance(graph.nodes[last], NEURON_NODES):
            raise NIRFileError(f"{source}: the Output reads '{last}' ({type(graph.nodes[last]).__name__}); it must "
                               "read a neuron or the readout's synapses")
    # HDF5 does not keep the order nodes were written in: order the layers so that every one comes after what
    # it reads, breaking ties by the position each neuron was written at (files without it: by name).
    def written(name: str) -> tuple[int, str]:
        index = (graph.nodes[name].metadata or {}).get("spikefold.layer_index", -1)
        return _integer(index, f"{source}: node '{name}' metadata spikefold.layer_index"), name

    pending = dict(layers)
    order: list[tuple[str, list[tuple[str, str]]]] = []
    while pending:
        ready = [name for name, pairs in pending.items()  # (a neuron may read itself: its recurrent synapses)
                 if all(sender not in pending or sender == name for _, sender in pairs)]
        if not ready:
            # What is left reads a cycle or lies on one; shed what merely reads it to name the cycle itself.
            cycle = set(pending)
            while sinks := {n for n in cycle if not any(n == s != m for m in cycle for _, s in pending[m])}:
                cycle -= sinks
            raise NIRFileError(f"{source}: the graph has a cycle through the neurons {sorted(cycle)}")
        name = min(ready, key=written)
        order.append((name, pending.pop(name)))
    return order


def _meta(node: nir.NIRNode, name: str, key: str, source: str) -> Any:
    meta = getattr(node, "metadata", None) or {}
    if not isinstance(meta, dict) or f"spikefold.{key}" not in meta:
        raise NIRFileError(
            f"{source}: node '{name}' carries no spikefold integer '{key}'; only graphs written by "
            "`spikefold export` can be deployed bit-exactly")
    return meta[f"spikefold.{key}"]


def _integers(value: Any, where: str, ndim: tuple[int, ...] = (0,)) -> np.ndarray:
    """``value`` as int64 after checking it is an integer array of one of the ranks ``ndim`` that fits int32
    (what Lava's processes hold): a float, a string or a wrapped value is named, never converted."""
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer) or arr.ndim not in ndim:
        ranks = " or ".join({0: "one integer", 1: "a 1-D integer array"}.get(n, f"a {n}-D integer array")
                            for n in ndim)
        raise NIRFileError(f"{where} must be {ranks}, found {arr.dtype} of shape {arr.shape}; "
                           "re-run `spikefold export`")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise NIRFileError(f"{where} holds {arr.min() if arr.min() < 0 else arr.max()}, outside int32; "
                           "re-run `spikefold export`")
    return arr.astype(np.int64)


def _integer(value: Any, where: str) -> int:
    return int(_integers(value, where))


def _flag(value: Any, where: str) -> bool:
    arr = np.asarray(value)
    if arr.shape != () or not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)) or arr not in (0, 1):
        raise NIRFileError(f"{where} must be true or false, found {value!r}; re-run `spikefold export`")
    return bool(arr)


def _finite(value: Any, where: str, positive: bool = False) -> float:
    try:
        number = float(np.asarray(value).item())
    except (TypeError, ValueError):
        raise NIRFileError(f"{where} must be one number, found {value!r}; re-run `spikefold export`") from None
    if not math.isfinite(number) or (positive and number <= 0):
        raise NIRFileError(f"{where} = {number} must be a finite number{' > 0' if positive else ''}; "
                           "re-run `spikefold export`")
    return number


def from_nir(graph: nir.NIRGraph, source: str = "<graph>") -> IntNetwork:
    meta = graph.metadata or {}
    if not isinstance(meta, dict):
        raise NIRFileError(f"{source}: the graph's metadata is not a mapping; re-run `spikefold export`")
    if not isinstance(meta.get("spikefold.format"), str) or meta["spikefold.format"] != FORMAT:
        raise NIRFileError(
            f"{source}: this NIR graph was not written by spikefold (no '{FORMAT}' integer metadata); "
            "export the model with `spikefold export` to get the integers Loihi runs")
    layers, names = [], {}
    for nname, pairs in _layers(graph, source):
        neuron = graph.nodes[nname]
        names[nname] = str((neuron.metadata or {}).get("spikefold.layer_name", nname.rsplit(".", 1)[0]))

        def value(node, name, key):
            return _meta(node, name, key, source)

        def integer(node, name, key):
            return _integer(value(node, name, key), f"{source}: node '{name}' metadata spikefold.{key}")

        def integers(node, name, key, ndim):
            return _integers(value(node, name, key), f"{source}: node '{name}' metadata spikefold.{key}", ndim)

        inputs = []
        for sname, sender in pairs:
            synapse = graph.nodes[sname]
            conv = isinstance(synapse, nir.Conv2d)
            common = dict(weights=integers(synapse, sname, "weights", (4,) if conv else (2,)).astype(np.int32),
                          weight_exp=integer(synapse, sname, "weight_exp"),
                          num_weight_bits=integer(synapse, sname, "num_weight_bits"),
                          num_message_bits=integer(synapse, sname, "num_message_bits"))
            if conv:
                shape = integers(synapse, sname, "input_shape", (1,))
                stride, padding = integer(synapse, sname, "stride"), integer(synapse, sname, "padding")
                kernel = common["weights"].shape
                if (shape.shape != (3,) or shape.min() < 1 or stride < 1 or padding < 0 or kernel[1] != shape[0]
                        or min(kernel[2:]) < 1 or min(int(shape[1]) + 2 * padding - kernel[2],
                                                       int(shape[2]) + 2 * padding - kernel[3]) < 0):
                    raise NIRFileError(
                        f"{source}: node '{sname}': convolution of kernel {kernel} over input {tuple(shape)} with "
                        f"stride {stride} and padding {padding} is not a valid convolution; re-run `spikefold export`")
                syn = Conv2d(**common, input_shape=tuple(int(v) for v in shape), stride=stride, padding=padding)
            else:
                syn = Dense(**common)
            delay = integer(synapse, sname, "delay") if "spikefold.delay" in (synapse.metadata or {}) else 0
            inputs.append(Connection(INPUT if isinstance(graph.nodes[sender], nir.Input) else names[sender], syn,
                                     delay=delay))
        vth = integers(neuron, nname, "vth", (0, 1))
        initial = None
        if "spikefold.initial_weights" in (neuron.metadata or {}):
            initial = Dense(weights=integers(neuron, nname, "initial_weights", (2,)).astype(np.int32),
                            weight_exp=integer(neuron, nname, "initial_weight_exp"))
        reset = value(neuron, nname, "reset")
        if not isinstance(reset, str):
            raise NIRFileError(f"{source}: node '{nname}' metadata spikefold.reset must be 'zero' or 'subtract', "
                               f"found {reset!r}")
        layers.append(Layer(
            name=names[nname],
            inputs=inputs,
            neurons=LIF(
                du=integer(neuron, nname, "du"),
                dv=integer(neuron, nname, "dv"),
                vth=int(vth) if vth.ndim == 0 else vth,
                bias_mant=integers(neuron, nname, "bias_mant", (0, 1)).astype(np.int32),
                bias_exp=integers(neuron, nname, "bias_exp", (0, 1)).astype(np.int32),
                reset=reset,
            ),
            scale=_finite(value(graph.nodes[pairs[0][0]], pairs[0][0], "scale"),
                          f"{source}: node '{pairs[0][0]}' metadata spikefold.scale", positive=True),
            readout=_flag(value(neuron, nname, "readout"), f"{source}: node '{nname}' metadata spikefold.readout"),
            initial=initial,
        ))
    first = next(c.synapses for layer in layers for c in layer.inputs if c.source == INPUT)
    in_size = int(np.prod(first.input_shape)) if isinstance(first, Conv2d) else int(first.shape[1])
    extra = {k[len("spikefold.meta."):]: v for k, v in meta.items() if k.startswith("spikefold.meta.")}
    def graph_value(key: str) -> Any:
        if f"spikefold.{key}" not in meta:
            raise NIRFileError(f"{source}: the graph's metadata has no spikefold.{key}; re-run `spikefold export`")
        return meta[f"spikefold.{key}"]

    hw_name = meta.get("spikefold.hw_config", "loihi2")
    if not isinstance(hw_name, str):
        raise NIRFileError(f"{source}: the graph's metadata spikefold.hw_config must be a name, found {hw_name!r}")
    return IntNetwork(
        input=InputEncoding(size=in_size, scale=_finite(graph_value("input_scale"),
                                                        f"{source}: spikefold.input_scale", positive=True),
                            bits=_integer(graph_value("input_bits"), f"{source}: spikefold.input_bits"),
                            per_timestep=_flag(meta.get("spikefold.input_per_timestep", False),
                                               f"{source}: spikefold.input_per_timestep")),
        layers=layers,
        timesteps=_integer(graph_value("timesteps"), f"{source}: spikefold.timesteps"),
        hw_config=hw_name,
        metadata=extra,
    )


def _check_loaded(graph: nir.NIRGraph, net: IntNetwork, source: str) -> None:
    """What ``IntNetwork.validate`` (the hardware's ranges) leaves to the file format: the NIR float parameters
    are finite, timesteps is bounded, and every per-neuron array has one entry per neuron."""
    for name, node in graph.nodes.items():
        for field, value in vars(node).items():
            if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number) and \
                    not np.isfinite(value).all():
                raise NIRFileError(f"{source}: node '{name}' parameter {field} holds NaN or infinite values; the "
                                   "file is damaged: re-run `spikefold export`")
    if not 1 <= net.timesteps <= MAX_TIMESTEPS:
        raise NIRFileError(f"{source}: spikefold.timesteps = {net.timesteps} is outside 1..{MAX_TIMESTEPS}; re-run "
                           "`spikefold export`")
    for layer in net.layers:
        neu = layer.neurons
        for what in ("bias_mant", "bias_exp"):
            shape = np.shape(getattr(neu, what))
            if shape not in ((), (neu.size,)):
                raise NIRFileError(f"{source}: layer '{layer.name}': {what} has shape {shape} for {neu.size} "
                                   f"neurons; re-run `spikefold export`")
