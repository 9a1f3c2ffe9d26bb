"""Energy and latency per inference from the activity a run measured (simulator or Lava), per layer, core and
timestep.

The layers are first mapped onto cores (``spikefold.sim.cores``, which partitions layers that exceed a core).
Then, per core and per timestep, averaged over the run's samples:

- messages in: the spikes (and, where it reads the input, the non-zero graded inputs the host sends) that fall
  in the core's receptive field: a convolution tile receives only the part of the map its kernels read;
- synaptic operations: per arriving message, the synapses it drives in the core (one per actual synapse: a
  dense core's every neuron, a convolution tile's kernel taps over that input);
- neuron updates: every neuron, every timestep; spikes out: from the run itself;
- messages out: each spike once per core of the consuming layers that reads it; a core holding a slice of a
  split fan-in sends one partial sum per neuron and step.

Energy is dynamic (synaptic ops, neuron updates, the dearer update of a spiking neuron, messages) plus static
power over the time an inference occupies the chip when samples stream back to back. Latency follows Lava's
schedule: a layer at depth d works on a sample's timestep tau at step tau + d, so one inference takes T + D steps
(D the deepest layer's depth) and each step costs what its busiest core does in that step (messages received,
synaptic ops, neuron updates, spikes, messages sent, times the hw_config's time per operation) plus the barrier
that ends it; a layer outside its window only updates its neurons. The drain steps at the end are thus charged
their own, small, cost. Beside it: the same network as an ANN on the 45 nm reference (one pass of MACs), the SNN
papers' 45 nm convention (MACs for the graded input's synapses, one accumulate per synaptic op driven by a
spike), and NeuroBench's metric names (:func:`neurobench_metrics`).
Every figure comes from the hw_config with its source; proxies are flagged and listed in ``notes``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.export.hw_config import Figure, HwConfig
from spikefold.export.intnet import INPUT, Conv2d, Dense, IntNetwork
from spikefold.sim.cores import (Box, Core, CoreMap, consumer_fan_out, grid, map_onto_cores, source_shape,
                                 synapses_per_source)
from spikefold.sim.simulator import SimResult

ENERGY = ("synaptic_op", "neuron_update", "neuron_update_active", "spike_message")
TIMING = ("message_in", "synaptic_op", "neuron_update", "neuron_spike", "spike_message", "barrier_sync")


@dataclasses.dataclass
class CoreActivity:
    """One core, per inference (sums over timesteps, means over samples)."""

    core: int
    layer: str
    neurons: int
    input_group: int  # which slice of a split fan-in (0 when not split)
    synapses: int
    input_axons: int
    output_axons: int
    messages_in: float
    synaptic_ops: float
    neuron_updates: float
    spikes: float
    messages_out: float
    busy_s: list[float]  # work time at each step of Lava's schedule (T + D steps)
    energy_j: float


@dataclasses.dataclass
class LayerActivity:
    """One layer, per inference."""

    name: str
    neurons: int
    fan_in: int
    cores: int
    input_messages: float  # arriving at the layer's cores, each core counting what reaches it
    synaptic_ops: float
    neuron_updates: float
    spikes: float
    messages_out: float
    firing_rate: float  # spikes per neuron per timestep
    spikes_per_timestep: list[float]
    energy_j: float  # dynamic energy of the layer's cores
    energy_by_operation_j: dict[str, float]
    readout: bool = False  # the readout integrates and never spikes


@dataclasses.dataclass
class EnergyReport:
    hw_config: str
    samples: int
    timesteps: int
    layers: list[LayerActivity]
    cores: list[CoreActivity]
    chips: int
    step_s: list[float]  # per step of Lava's schedule (T + D): busiest core + barrier
    step_energy_j: list[float]  # dynamic energy per step of the same schedule
    busiest_core: list[int]  # per step
    latency_s: float  # one inference: the sum of its T + D steps
    period_s: float  # time between samples streamed back to back: T steps at full load
    dynamic_j: float
    static_j: float
    energy_by_operation_j: dict[str, float]
    ann_45nm_j: float
    snn_45nm_j: float
    neurobench: dict
    figures: dict[str, Figure]
    notes: list[str]

    @property
    def total_j(self) -> float:
        return self.dynamic_j + self.static_j

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["total_j"] = self.total_j
        return d


@dataclasses.dataclass
class SimReport:
    """``spikefold sim``'s result: the integer simulator's accuracy on the data, the energy and latency estimated
    from its spikes, and, when asked for, SANA-FE's run beside it (``sanafe_engine.compare``)."""

    model: str
    data: str
    samples: int
    accuracy: float | None  # None for data without labels
    energy: EnergyReport
    sanafe: dict | None = None


def _figures(hw: HwConfig, reference: HwConfig) -> tuple[dict[str, Figure], list[str]]:
    fig = {f"energy.{key}": hw.figure("energy", key) for key in ENERGY}
    fig |= {f"timing.{key}": hw.figure("timing", key) for key in TIMING}
    notes = []
    if "static_power" in hw.raw.get("energy", {}):
        fig["energy.static_power"] = hw.figure("energy", "static_power")
    else:
        notes.append(f"{hw.name} has no cited static power figure: static energy is not included")
    fig["ann_45nm.mac"] = reference.figure("energy", "mac")
    fig["ann_45nm.ac"] = reference.figure("energy", "ac")
    proxies = [name for name, f in fig.items() if f.proxy]
    if proxies:
        notes.append(f"proxies (not measured on {hw.name}): {', '.join(proxies)}")
    notes.append("messages are charged the within-tile spike energy: placement on the mesh (hops) is not modelled")
    return fig, notes


def input_per_step(net: IntNetwork, x_int: np.ndarray) -> np.ndarray:
    """Mean non-zero inputs per sample at each timestep, (T, inputs): graded spikes or events; static input sends
    the same every step."""
    x = np.asarray(x_int) != 0
    n = max(len(x), 1)
    if net.input.per_timestep:
        return x.sum(axis=0) / n
    return np.tile(x.sum(axis=0) / n, (net.timesteps, 1))


def _source_activity(net: IntNetwork, x_int: np.ndarray, result: SimResult, n: int) -> dict[str, np.ndarray]:
    """Per source, the mean messages per sample sent at each timestep, (T, source neurons)."""
    sent = {INPUT: input_per_step(net, x_int)}
    for i, layer in enumerate(net.layers):
        sent[layer.name] = result.spikes[i].sum(axis=0) / n
    return sent


def estimate(net: IntNetwork, x_int: np.ndarray, result: SimResult, hw: HwConfig, reference: HwConfig,
             core_map: CoreMap | None = None) -> EnergyReport:
    """Energy and latency per inference of ``net`` on ``hw`` from a layer-synchronous run's spikes."""
    if result.timing != "synchronous":
        raise ValueError("estimate needs a layer-synchronous result (simulator.align_to_synchronous)")
    core_map = core_map or map_onto_cores(net, hw)
    fig, notes = _figures(hw, reference)
    notes += core_map.notes
    e = {key: fig[f"energy.{key}"].value for key in ENERGY}
    t = {key: fig[f"timing.{key}"].value for key in TIMING}
    n, steps = max(len(x_int), 1), net.timesteps
    depths = net.depths()
    schedule = steps + max(depths)  # Lava's steps for one inference
    sent = _source_activity(net, x_int, result, n)
    per_layer_cores = {i: core_map.of_layer(i) for i in range(len(net.layers))}
    cores, layers = [], []
    busy = np.zeros((len(core_map.cores), schedule))
    step_energy = np.zeros(schedule)
    by_op_total = dict.fromkeys(("synaptic_ops", "neuron_updates", "spikes", "messages"), 0.0)
    input_ops = 0.0  # synaptic operations driven by the graded input (MACs in the 45 nm convention)
    for i, layer in enumerate(net.layers):
        fan_out = consumer_fan_out(net, i, per_layer_cores)  # consumer cores reading each neuron
        shape = grid(layer.output_shape)
        by_op = dict.fromkeys(by_op_total, 0.0)
        for core in per_layer_cores[i]:
            ops_t = np.zeros(steps)
            arriving_t = np.zeros(steps)
            for c in layer.inputs:
                fan = synapses_per_source(c, core, source_shape(net, c))
                ops_t += sent[c.source] @ fan
                arriving_t += sent[c.source] @ (fan > 0)
                if c.source == INPUT:
                    input_ops += float((sent[c.source] @ fan).sum())
            if core.fires:
                neurons = core.tile.indices(shape)
                spikes_t = sent[layer.name][:, neurons].sum(axis=1)
                messages_t = sent[layer.name][:, neurons] @ fan_out[neurons]
                updates = core.neurons
            else:  # a partial-sum core: one graded message per neuron and step to the firing core
                spikes_t, messages_t, updates = np.zeros(steps), np.full(steps, float(core.neurons)), 0
            busy_t = (arriving_t * t["message_in"] + ops_t * t["synaptic_op"]
                      + (updates - spikes_t) * t["neuron_update"] + spikes_t * t["neuron_spike"]
                      + messages_t * t["spike_message"])
            parts = {"synaptic_ops": ops_t * e["synaptic_op"],
                     "neuron_updates": (updates - spikes_t) * e["neuron_update"],
                     "spikes": spikes_t * e["neuron_update_active"], "messages": messages_t * e["spike_message"]}
            energy_t = sum(parts.values())
            for key, value in parts.items():
                by_op[key] += float(value.sum())
            # Lava's schedule: the window tau = 0..T-1 at steps depth..depth+T-1; outside it, idle updates.
            busy[core.index] = updates * t["neuron_update"]
            busy[core.index, depths[i]:depths[i] + steps] = busy_t
            step_energy[depths[i]:depths[i] + steps] += energy_t
            cores.append(CoreActivity(
                core=core.index, layer=layer.name, neurons=core.neurons, input_group=core.group,
                synapses=core.synapses, input_axons=core.input_axons, output_axons=core.output_axons,
                messages_in=float(arriving_t.sum()), synaptic_ops=float(ops_t.sum()),
                neuron_updates=float(updates * steps), spikes=float(spikes_t.sum()),
                messages_out=float(messages_t.sum()), busy_s=busy[core.index].tolist(),
                energy_j=float(energy_t.sum())))
        mine = cores[-len(per_layer_cores[i]):]
        spikes_t = sent[layer.name].sum(axis=1)
        for key in by_op:
            by_op_total[key] += by_op[key]
        layers.append(LayerActivity(
            name=layer.name, neurons=layer.size, fan_in=layer.fan_in, cores=len(mine),
            input_messages=sum(c.messages_in for c in mine), synaptic_ops=sum(c.synaptic_ops for c in mine),
            neuron_updates=float(layer.size * steps), spikes=float(spikes_t.sum()),
            messages_out=sum(c.messages_out for c in mine), firing_rate=float(spikes_t.sum()) / (layer.size * steps),
            spikes_per_timestep=spikes_t.tolist(), energy_j=sum(c.energy_j for c in mine),
            energy_by_operation_j=by_op, readout=layer.readout))
    step = busy.max(axis=0) + t["barrier_sync"]
    # Streaming back to back, every layer is in some sample's window at every step: T steps at full load.
    window_busy = np.stack([busy[c.core, depths[net.index(c.layer)]:depths[net.index(c.layer)] + steps]
                            for c in cores])
    period = float((window_busy.max(axis=0) + t["barrier_sync"]).sum())
    dynamic = sum(layer.energy_j for layer in layers)
    static_power = fig["energy.static_power"].value if "energy.static_power" in fig else 0.0
    ann_macs = sum(_synapses(net, c) for layer in net.layers for c in layer.inputs)
    # The papers' convention: the graded input's synapses all MAC at every timestep, as an ANN layer would;
    # binary event input drives accumulates like any spike.
    graded = not net.input.binary
    first_macs = graded * sum(_synapses(net, c) for layer in net.layers for c in layer.inputs
                              if c.source == INPUT) * steps
    spike_ops = sum(layer.synaptic_ops for layer in layers) - graded * input_ops
    return EnergyReport(
        hw_config=hw.name, samples=len(x_int), timesteps=steps, layers=layers, cores=cores,
        chips=core_map.chips, step_s=step.tolist(), step_energy_j=step_energy.tolist(),
        busiest_core=busy.argmax(axis=0).tolist(), latency_s=float(step.sum()), period_s=period,
        dynamic_j=dynamic, static_j=static_power * period, energy_by_operation_j=by_op_total,
        ann_45nm_j=ann_macs * fig["ann_45nm.mac"].value,
        snn_45nm_j=first_macs * fig["ann_45nm.mac"].value + spike_ops * fig["ann_45nm.ac"].value,
        neurobench=neurobench_metrics(net, x_int, result), figures=fig, notes=notes)


def _synapses(net: IntNetwork, c) -> int:
    """Actual synapses of a connection: a convolution's kernel taps inside the map, a dense one's every pair."""
    if not isinstance(c.synapses, Conv2d):
        return int(np.prod(c.synapses.shape))
    c_out, h, w = c.synapses.output_shape
    whole = Core(0, 0, Box(0, c_out, 0, h, 0, w), 0, 1, True, 0, 0, 0)
    return int(synapses_per_source(c, whole, source_shape(net, c)).sum())


def neurobench_metrics(net: IntNetwork, x_int: np.ndarray, result: SimResult) -> dict:
    """NeuroBench's workload metrics (neurobench 2.3.0 ``SynapticOperations`` and ``ActivationSparsity``), per
    inference, from the integer run: per layer, NeuroBench counts a synaptic operation for every (non-zero
    input, non-zero weight) pair at every timestep, a MAC where the input is graded (the direct input, repeated
    over the T timesteps) and an AC where it is a spike (binary event input included); activation sparsity is the share of zero outputs over
    all spiking layers' neurons and timesteps (the readout does not spike and is left out)."""
    n = max(len(x_int), 1)
    inputs_sent = input_per_step(net, x_int).sum(axis=0)  # per input, over the timesteps
    macs = acs = 0.0
    per_layer = []
    for i, layer in enumerate(net.layers):
        layer_macs = layer_acs = 0.0
        for c in layer.inputs:
            nonzero = nonzero_fan(c.synapses, c.synapses.effective_weights())
            if c.source == INPUT and not net.input.binary:
                layer_macs += float(inputs_sent @ nonzero)
            elif c.source == INPUT:  # binary events are spikes: one AC per (event, non-zero weight)
                layer_acs += float(inputs_sent @ nonzero)
            else:
                layer_acs += float(result.spikes[net.index(c.source)].sum(axis=(0, 1)) @ nonzero) / n
        macs, acs = macs + layer_macs, acs + layer_acs
        per_layer.append({"layer": layer.name, "Effective_MACs": layer_macs, "Effective_ACs": layer_acs,
                          "synaptic_operations": layer_macs + layer_acs})
    spiking = [i for i, layer in enumerate(net.layers) if not layer.readout]
    slots = sum(result.spikes[i][0].size for i in spiking)
    fired = sum(float(result.spikes[i].sum()) / n for i in spiking)
    return {"Effective_MACs": macs, "Effective_ACs": acs, "synaptic_operations": macs + acs,
            "ActivationSparsity": 1.0 - fired / slots if slots else 0.0, "layers": per_layer}


def nonzero_fan(synapses: Dense, weights: np.ndarray) -> np.ndarray:
    """Per input of a connection with these ``weights`` (a convolution's geometry taken from ``synapses``), the
    non-zero weights it meets over all outputs: NeuroBench's synaptic operations per non-zero input. A
    convolution tap over the padding meets no input."""
    if not isinstance(synapses, Conv2d):
        return np.count_nonzero(weights, axis=0)
    c_in, h, w = synapses.input_shape
    _, ho, wo = synapses.output_shape
    nonzero = np.count_nonzero(weights, axis=0)  # (in, kh, kw): output channels with a non-zero weight per tap
    fan = np.zeros((c_in, h, w), np.int64)
    for i, j in np.ndindex(nonzero.shape[1:]):
        rows = np.arange(ho) * synapses.stride + i - synapses.padding
        cols = np.arange(wo) * synapses.stride + j - synapses.padding
        rows, cols = rows[(rows >= 0) & (rows < h)], cols[(cols >= 0) & (cols < w)]
        fan[:, rows[:, None], cols[None, :]] += nonzero[:, i, j][:, None, None]
    return fan.ravel()
