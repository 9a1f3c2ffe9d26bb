"""Import a foreign NIR graph (snnTorch, SpikingJelly, Norse, Sinabs, Rockpool, ...) into the integer network.

NIR is continuous-time and stores no dt, so the user names the dt the tool simulated with. Each neuron is read
as forward Euler at that dt, the discretisation snnTorch, SpikingJelly and Norse use::

    LIF   tau dv/dt = (v_leak - v) + r I   ->  v(t) = (1 - dt/tau) v(t-1) + (dt r / tau) I(t)
    IF    dv/dt = r I                      ->  v(t) = v(t-1) + dt r I(t)
    CubaLIF tau_syn dI/dt = -I + w_in x    ->  I(t) = (1 - dt/tau_syn) I(t-1) + (dt w_in / tau_syn) x(t), then
          the LIF's voltage reads the stepped current (snnTorch's Synaptic; Norse's importer): Loihi's u with
          du + 1 = 4096 dt / tau_syn (du = 4095 for tau_syn = dt: the current does not carry over)
    I after the last synapses (NIR 1.0.8's integrator; it has no separate Integrator), or synapses feeding the
    Output directly: the non-firing readout (v(t) = v(t-1) + dt r I(t), the logits its final voltage)
    LI, CubaLI: a readout that leaks, the LIF's or CubaLIF's equations without a threshold (dv, du as above);
    the logits are its voltage after the last step

A neuron spikes when v > v_threshold and resets to v_reset = 0 (NIR's reset; ``reset="subtract"`` for a tool
that subtracts the threshold instead, as snnTorch does by default without saying so in the file). The input
gain ``dt r / tau`` is folded into the synapses, so each layer becomes spikefold's own float form (the baseline
LIF neuron of ``spikefold.train.neurons``), and export's calibration-driven quantisation
(``spikefold.export.quantise.quantise``) picks the scales, exponents and 8-bit weights and reports what rounding
cost. A graph ending in spiking neurons keeps a spiking last layer: its spike counts are the prediction.

Between two neurons any chain of ``Flatten``, ``AvgPool2d`` / ``SumPool2d`` (2x2, stride 2: folded into the next
synapse), one ``Affine`` / ``Linear`` / ``Conv2d`` / ``Conv1d`` (a Conv2d of height 1), ``Scale``
(after it) and ``Delay`` (whole timesteps: the connection's synaptic delay) is one layer's synapses. Calibration
data with a time axis (samples, T, features) makes the input per-timestep (``InputEncoding.per_timestep``; plain
spikes when it holds only 0 and 1). Whatever Loihi 2 cannot run (a voltage leak towards v_leak != 0, a reset
to v_reset != 0, per-neuron time constants, a memoryless Threshold, several inputs, recurrence, ...) is a
:class:`~spikefold.core.errors.NIRFileError` naming the node, the parameter and what is accepted.
"""

from __future__ import annotations

import dataclasses

import nir
import numpy as np
import torch

from spikefold.core.errors import DataError, NIRFileError
from spikefold.export.float_net import FloatInput, FloatLayer, FloatNetwork
from spikefold.export.fold import pool_into_conv, pool_into_linear
from spikefold.export.hw_config import HwConfig
from spikefold.export.intnet import INPUT, IntNetwork
from spikefold.export.nir_io import DT_CONVENTIONS
from spikefold.export.quantise import QuantReport, quantise
from spikefold.train.neurons.lif import LIF, LIFOptions

SYNAPSE_NODES = (nir.Affine, nir.Linear, nir.Conv2d, nir.Conv1d)
PASSING_NODES = (nir.Flatten, nir.AvgPool2d, nir.SumPool2d, nir.Scale, nir.Delay)
NEURON_NODES = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold, nir.I, nir.LI, nir.CubaLI)
ACCEPTED = "Input, Output, Affine, Linear, Conv2d, Conv1d, Flatten, AvgPool2d, SumPool2d, Scale, " \
           "Delay (whole timesteps), LIF, IF, CubaLIF, " \
           "I, LI, CubaLI"


@dataclasses.dataclass
class _Neuron:
    """A neuron node read at dt: its float form and the gain its input carries."""

    decay: float  # the voltage's, per step
    gain: float
    threshold: float | None  # None: a readout, which never fires
    current_decay: float = 0.0  # the synaptic current's carry-over per step (CubaLIF, CubaLI)


def _uniform(node: nir.NIRNode, name: str, param: str, source: str) -> float:
    values = np.asarray(getattr(node, param), np.float64)
    if values.size == 0 or not np.isfinite(values).all() and not (param.startswith("tau") and np.isinf(values).all()):
        raise NIRFileError(f"{source}: node '{name}' ({type(node).__name__}) has a non-finite {param}")
    if np.ptp(values) > 1e-9 * max(np.abs(values).max(), 1e-300):
        raise NIRFileError(
            f"{source}: node '{name}' ({type(node).__name__}) has {param} varying over its neurons "
            f"({values.min():.6g} .. {values.max():.6g}); a Loihi layer shares one value: split the layer")
    return float(values.flat[0])


def _zero(node: nir.NIRNode, name: str, param: str, source: str, why: str) -> None:
    value = getattr(node, param, None)
    if value is not None and np.any(np.asarray(value, np.float64) != 0):
        raise NIRFileError(f"{source}: node '{name}' ({type(node).__name__}) has {param} = "
                           f"{np.asarray(value).ravel()[0]:.6g}; only {param} = 0 is accepted: {why}")


def _decay(tau: float, dt: float, name: str, node: nir.NIRNode, source: str, param: str = "tau") -> float:
    if not dt <= tau:
        raise NIRFileError(
            f"{source}: node '{name}' ({type(node).__name__}) has {param} = {tau:.6g} s, shorter than dt = "
            f"{dt:.6g} s: forward Euler would decay by more than the whole state each step; the dt is implausible "
            f"for this graph. Tools' conventions: {DT_CONVENTIONS}")
    return 1.0 - dt / tau


def _neuron(node: nir.NIRNode, name: str, dt: float, source: str) -> _Neuron:
    """The float form of one neuron node at ``dt``; refuses by name what Loihi's LIF cannot run.

    A CubaLIF / CubaLI's current steps ``I(t) = (1 - dt/tau_syn) I(t-1) + (dt/tau_syn) w_in x(t)`` and its voltage
    reads the updated current (as snnTorch's Synaptic, Norse's importer and Loihi's u then v do); the input's
    whole gain ``(dt/tau_syn) w_in (dt r/tau_mem)`` is folded into the synapses."""
    if isinstance(node, nir.Threshold):
        raise NIRFileError(f"{source}: node '{name}' (Threshold) forgets its voltage every step, which needs "
                           "dv = 4096, one more than Loihi's 12-bit dv holds (dv = 4095 keeps 1/4096 of it, which "
                           "can tip a later comparison): export the layer as an LIF "
                           "(tau >= 4096/4095 dt, dv = 4095, keeps that 1/4096)")
    if isinstance(node, nir.I):
        return _Neuron(decay=1.0, gain=dt * _uniform(node, name, "r", source), threshold=None)
    _zero(node, name, "v_leak", source, "Loihi's LIF decays towards 0 (fold a constant leak into the bias)")
    threshold = None
    if not isinstance(node, (nir.LI, nir.CubaLI)):
        _zero(node, name, "v_reset", source, "Loihi's LIF resets the voltage to 0")
        threshold = _uniform(node, name, "v_threshold", source)
    if isinstance(node, nir.IF):
        return _Neuron(decay=1.0, gain=dt * _uniform(node, name, "r", source), threshold=threshold)
    current_decay, in_gain = 0.0, 1.0
    if isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        tau_syn = _uniform(node, name, "tau_syn", source)
        current_decay = _decay(tau_syn, dt, name, node, source, "tau_syn")
        in_gain = dt / tau_syn * _uniform(node, name, "w_in", source)
        tau = _uniform(node, name, "tau_mem", source)
    else:
        tau = _uniform(node, name, "tau", source)
    decay = _decay(tau, dt, name, node, source, "tau_mem" if hasattr(node, "tau_mem") else "tau")
    return _Neuron(decay=decay, gain=in_gain * dt * _uniform(node, name, "r", source) / tau, threshold=threshold,
                   current_decay=current_decay)


def _lif_module(neuron: _Neuron, reset: str) -> LIF:
    """spikefold's baseline LIF with this decay held exactly: its logit in float64 (decay_parameter keeps a
    trainable float32 logit inside (0, 1); an IF's decay of 1 is a logit of +inf)."""
    module = LIF(LIFOptions(beta=0.5, vth=neuron.threshold, reset=reset))
    module.beta_logit = torch.nn.Parameter(torch.logit(torch.tensor(neuron.decay, dtype=torch.float64)),
                                           requires_grad=False)
    return module.double().eval()


class _Reader:
    """Walks the graph's one path from Input to Output, collecting each layer's synapses and neuron."""

    def __init__(self, graph: nir.NIRGraph, dt: float, reset: str, source: str):
        self.graph, self.dt, self.reset, self.source = graph, dt, reset, source
        self.succ = {n: [b for a, b in graph.edges if a == n] for n in graph.nodes}
        self.pred = {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
        # A neuron's recurrent synapses: an Affine or Linear that reads the neuron and feeds only it back (as
        # snnTorch writes RLeaky / RSynaptic). Taken out of the chain, they join the layer's own inputs.
        self.recurrent: dict[str, list[str]] = {}
        for name, node in graph.nodes.items():
            back = self.pred[name]
            if isinstance(node, (nir.Affine, nir.Linear)) and len(back) == 1 and self.succ[name] == back and \
                    isinstance(graph.nodes[back[0]], NEURON_NODES):
                self.recurrent.setdefault(back[0], []).append(name)
                self.succ[back[0]].remove(name)
                self.pred[back[0]].remove(name)
                self.pred[name] = self.succ[name] = []

    def fail(self, message: str) -> NIRFileError:
        return NIRFileError(f"{self.source}: {message}")

    def start(self) -> tuple[str, tuple[int, ...]]:
        inputs = [n for n, node in self.graph.nodes.items() if isinstance(node, nir.Input)]
        if len(inputs) != 1:
            raise self.fail(f"the graph has {len(inputs)} Input nodes {inputs}; the integer network takes one input")
        for name, node in self.graph.nodes.items():
            if not isinstance(node, (nir.Input, nir.Output) + SYNAPSE_NODES + PASSING_NODES + NEURON_NODES):
                raise self.fail(f"node '{name}' has type {type(node).__name__}, which the importer cannot map to "
                                f"Loihi 2; accepted: {ACCEPTED}")
            if len(self.pred[name]) > 1 or len(self.succ[name]) > 1:
                raise self.fail(
                    f"node '{name}' has {len(self.pred[name])} inputs and {len(self.succ[name])} outputs; the "
                    "importer takes a chain (no branches or merges); a neuron may read itself only through its own "
                    "recurrent Affine or Linear (a feedback from a later layer would reach it too late on Lava's "
                    "pipeline)")
        shape = tuple(int(v) for v in np.ravel(next(iter(self.graph.nodes[inputs[0]].input_type.values()))))
        return inputs[0], shape

    def next(self, name: str) -> str:
        if not self.succ[name]:
            raise self.fail(f"node '{name}' leads nowhere; every node must lie on the path to the Output")
        nxt = self.succ[name][0]
        if nxt in self.seen:
            raise self.fail(f"the graph has a cycle through '{nxt}'; the importer takes recurrent edges only as a "
                            "neuron's own Affine or Linear back to itself (a feedback from a later layer would reach "
                            "it too late on Lava's pipeline)")
        self.seen.add(nxt)
        return nxt

    def read(self) -> tuple[list[FloatLayer], tuple[int, ...]]:
        name, input_shape = self.start()
        self.seen = {name}
        shape, source, layers = input_shape, INPUT, []
        while True:
            weight, bias, conv, pool, synapse_seen, delay = None, None, None, None, None, 0
            name = self.next(name)
            node = self.graph.nodes[name]
            while isinstance(node, SYNAPSE_NODES + PASSING_NODES):
                if isinstance(node, nir.Delay):
                    if bias is not None and np.any(bias):
                        raise self.fail(f"Delay '{name}' follows synapses with a bias, which it would hold back too, "
                                        "but Loihi adds a bias every step; put the Delay before the synapses")
                    delay += self.delay_steps(node, name)
                elif isinstance(node, nir.Flatten):
                    pass  # a weight matrix reads (C, H, W) maps flattened in that order anyway
                elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
                    if synapse_seen or pool or len(shape) != 3 or min(shape[1:]) < 2:
                        raise self.fail(f"pooling node '{name}' must come between a neuron layer's (C, H, W) maps "
                                        "and the next synapses (one pooling per layer)")
                    for param in ("kernel_size", "stride"):
                        if np.any(np.asarray(getattr(node, param)) != 2):
                            raise self.fail(f"pooling node '{name}': {param} = {np.ravel(getattr(node, param))}; "
                                            "the importer folds 2x2 pooling with stride 2 into the next synapses")
                    _zero(node, name, "padding", self.source, "padded pooling is not folded")
                    pool = "sum" if isinstance(node, nir.SumPool2d) else "avg"
                elif isinstance(node, nir.Scale):
                    if weight is None:
                        raise self.fail(f"Scale node '{name}' must follow an Affine, Linear or Conv2d")
                    s = np.asarray(node.scale, np.float64).ravel()
                    weight = weight * s.reshape(-1, *([1] * (weight.ndim - 1)))
                    bias = bias * s
                else:
                    if synapse_seen:
                        raise self.fail(f"node '{name}' follows the synapses '{synapse_seen}' with no neuron between; "
                                        "fold the two into one")
                    synapse_seen = name
                    weight, bias, conv, shape = self.synapse(node, name, shape, pool)
                name = self.next(name)
                node = self.graph.nodes[name]
            if weight is None:
                raise self.fail(f"node '{name}' ({type(node).__name__}) is reached without synapses before it; "
                                "every neuron layer needs an Affine, Linear or Conv2d")
            output = isinstance(node, nir.Output)
            neuron = None if output else _neuron(node, name, self.dt, self.source)
            neuron = neuron or _Neuron(decay=1.0, gain=1.0, threshold=None)  # synapses feeding the Output
            spiking = neuron.threshold is not None
            layer_name = f"layer{len(layers)}"
            inputs = [FloatInput(source, weight * neuron.gain, conv, delay)]
            for rname in self.recurrent.get(name, []):
                if conv is not None:
                    raise self.fail(f"recurrent synapses '{rname}' feed the convolution layer '{name}' back; the "
                                    "importer takes recurrence on Affine / Linear layers only")
                w_rec, b_rec = self.recurrent_synapse(rname, name, int(np.prod(shape)), spiking)
                inputs.append(FloatInput(layer_name, w_rec * neuron.gain))
                bias = bias + b_rec
            layers.append(FloatLayer(
                layer_name, inputs, bias * neuron.gain, _lif_module(neuron, self.reset) if spiking else None,
                current_decay=neuron.current_decay, readout_decay=1.0 if spiking else neuron.decay))
            if output:
                return layers, input_shape
            if not spiking:  # a readout (I, LI, CubaLI) must feed the Output
                nxt = self.next(name)
                if not isinstance(self.graph.nodes[nxt], nir.Output):
                    raise self.fail(f"the readout '{name}' ({type(node).__name__}) never fires, so only the Output "
                                    "may read it")
                return layers, input_shape
            source = layer_name
            if isinstance(self.graph.nodes[self.succ[name][0]] if self.succ[name] else None, nir.Output):
                return layers, input_shape  # a spiking last layer

    def delay_steps(self, node: nir.Delay, name: str) -> int:
        """A Delay's whole number of timesteps at dt (one for every neuron: Loihi's delay is per connection)."""
        seconds = _uniform(node, name, "delay", self.source)
        steps = round(seconds / self.dt)
        if steps < 0 or not np.isclose(steps * self.dt, seconds, rtol=1e-6, atol=1e-12 * self.dt):
            raise self.fail(f"Delay '{name}' holds {seconds:.6g} s, not a whole number of timesteps of dt = "
                            f"{self.dt:.6g} s; Loihi delays by whole timesteps")
        return steps

    def recurrent_synapse(self, name: str, neuron: str, size: int, spiking: bool) -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias per neuron) of the Affine or Linear ``name`` that feeds ``neuron`` its own spikes."""
        node = self.graph.nodes[name]
        weight = np.asarray(node.weight, np.float64)
        if not spiking:
            raise self.fail(f"'{name}' feeds the readout '{neuron}' its own output, but a readout never fires")
        if weight.shape != (size, size):
            raise self.fail(f"recurrent synapses '{name}' have weights {weight.shape}; the neuron '{neuron}' has "
                            f"{size} neurons, so they must be ({size}, {size})")
        bias = np.asarray(getattr(node, "bias", 0.0), np.float64) * np.ones(size)
        return weight, bias

    def synapse(self, node, name: str, shape: tuple[int, ...], pool: str | None):
        """(weight, bias per output channel, conv geometry or None, output shape) of one synapse node, with a
        preceding pooling folded in."""
        weight = np.asarray(node.weight, np.float64)
        bias = np.asarray(getattr(node, "bias", 0.0), np.float64) * np.ones(weight.shape[0])
        if isinstance(node, nir.Conv1d):
            # A Conv2d over maps of height 1 is the same sum, exactly. The integer network's Conv2d has one padding
            # for both axes, so a padding p pads the height too: the kernel gets height 2p + 1, zero but for its
            # middle row, which alone meets the map (the other rows read the padding's zeros), and the output keeps
            # height (1 + 2p - (2p + 1)) // stride + 1 = 1. The zero rows hold no synapse (cores and energy count
            # only taps inside the map); they cost kernel memory and, in a CPU simulation, multiplications by 0.
            if len(shape) not in (2, 3) or len(shape) == 3 and shape[1] != 1:
                raise self.fail(f"Conv1d '{name}' reads a {shape} input; it needs (C, L) signals")
            for param, accepted in (("dilation", 1), ("groups", 1)):
                if isinstance(getattr(node, param), str) or np.any(np.asarray(getattr(node, param)) != accepted):
                    raise self.fail(f"Conv1d '{name}': {param} = {getattr(node, param)}; only {accepted} is accepted")
            padding = np.ravel(node.padding) if not isinstance(node.padding, str) else None
            if padding is None or padding.size != 1 or padding[0] < 0 or padding[0] != int(padding[0]):
                raise self.fail(f"Conv1d '{name}': padding = {node.padding!r}; one whole number >= 0 is accepted "
                                "(zeros on both ends of the signal)")
            pad = int(padding[0])
            conv = {"input_shape": (shape[0], 1, shape[-1]), "stride": int(np.ravel(node.stride)[0]), "padding": pad}
            weight = np.pad(weight[:, :, None, :], ((0, 0), (0, 0), (pad, pad), (0, 0)))
            return weight, bias, conv, FloatInput(INPUT, weight, conv).output_shape()
        if isinstance(node, nir.Conv2d):
            if len(shape) != 3:
                raise self.fail(f"Conv2d '{name}' reads a {shape} input; it needs (C, H, W) maps")
            for param in ("dilation", "groups"):
                if np.any(np.asarray(getattr(node, param)) != 1):
                    raise self.fail(f"Conv2d '{name}': {param} = {np.ravel(getattr(node, param))}; only 1 is accepted")
            stride, padding = np.ravel(node.stride), np.ravel(node.padding)
            if isinstance(node.padding, str) or len(set(stride.tolist())) != 1 or len(set(padding.tolist())) != 1:
                raise self.fail(f"Conv2d '{name}': stride {node.stride} and padding {node.padding} must be one "
                                "integer for both axes")
            stride, padding = int(stride[0]), int(padding[0])
            if pool:
                weight, stride, padding = pool_into_conv(weight, stride, padding)
                weight = weight * (4.0 if pool == "sum" else 1.0)
            conv = {"input_shape": shape, "stride": stride, "padding": padding}
            out = FloatInput(INPUT, weight, conv).output_shape()
            return weight, bias, conv, out
        size = int(np.prod(shape))
        if pool:
            c, h, w = shape
            if weight.shape[1] != c * (h // 2) * (w // 2):
                raise self.fail(f"'{name}' takes {weight.shape[1]} inputs after pooling {shape} maps to "
                                f"{c * (h // 2) * (w // 2)}")
            weight = pool_into_linear(weight, shape) * (4.0 if pool == "sum" else 1.0)
        if weight.shape[1] != size:
            raise self.fail(f"'{name}' takes {weight.shape[1]} inputs but receives {size} (shape {shape})")
        return weight, bias, None, (weight.shape[0],)


def float_network(graph: nir.NIRGraph, dt: float, timesteps: int, reset: str = "zero",
                  source: str = "<graph>") -> FloatNetwork:
    """The graph read at ``dt`` as spikefold's float network (what quantisation approximates)."""
    if not (isinstance(dt, (int, float)) and np.isfinite(dt) and 0 < dt <= 1):
        raise NIRFileError(f"{source}: dt = {dt} is missing or implausible; give the tool's step in seconds "
                           f"(0 < dt <= 1). Tools' conventions: {DT_CONVENTIONS}")
    if reset not in ("zero", "subtract"):
        raise NIRFileError(f"reset '{reset}' is not zero or subtract")
    if timesteps < 1:
        raise NIRFileError(f"timesteps must be >= 1, got {timesteps}")
    layers, input_shape = _Reader(graph, float(dt), reset, source).read()
    return FloatNetwork(layers, int(timesteps), input_shape)


def check_calibration(x: np.ndarray, input_shape: tuple[int, ...], timesteps: int,
                      source: str = "calibration data") -> np.ndarray:
    """Calibration data as (samples, features) floats in [0, 1], or (samples, T, features) for input that changes
    every timestep; a named error for the wrong shape or range."""
    x = np.asarray(x, np.float64)
    size = int(np.prod(input_shape))
    per_step = x.ndim >= 3 and x.shape[1] == timesteps and int(np.prod(x.shape[2:])) == size
    if len(x) == 0 or not per_step and (x.ndim < 2 or int(np.prod(x.shape[1:])) != size):
        raise DataError(f"{source} has shape {x.shape}; the graph's input takes (samples, {size}) for static input "
                        f"or (samples, {timesteps}, {size}) for input that changes every timestep")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError(f"{source} spans [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}]; the integer network's input "
                        "encoding takes values in [0, 1]: scale the data")
    return x.reshape(len(x), timesteps, size) if per_step else x.reshape(len(x), size)


def import_graph(graph: nir.NIRGraph, hw: HwConfig, dt: float, timesteps: int, calibration_x: np.ndarray,
                 reset: str = "zero", weight_bits: int | None = None,
                 source: str = "<graph>") -> tuple[IntNetwork, QuantReport, FloatNetwork]:
    """Quantise a foreign graph for ``hw``: (integer network, per-layer quantisation report, float network).
    Run ``spikefold.export.state_range.check_state_range`` on the result to measure the state's headroom."""
    fnet = float_network(graph, dt, timesteps, reset, source)
    x = check_calibration(calibration_x, fnet.input_shape, timesteps)
    fnet.temporal_input = x.ndim == 3  # input that changes every step: InputEncoding.per_timestep
    binary = fnet.temporal_input and bool(np.isin(x, (0.0, 1.0)).all())  # spikes: sent as plain spikes
    net, report = quantise(fnet, hw, x, weight_bits=weight_bits, binary_input=binary)
    net.metadata.update({"imported_from": source, "dt": float(dt)})
    return net, report, fnet
