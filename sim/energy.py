"""Energy and latency per inference from the activity a run measured (simulator or Lava), per layer and core.

The layers are first mapped onto cores (``spikefold.sim.cores``). Then, per core and per timestep, averaged
over the run's samples:

- messages in: what arrives at the core: the spikes of every layer it reads (and, where it reads the input, the
  non-zero graded inputs the host sends); every core of a layer receives all of them;
- synaptic operations: messages in x the core's neurons (each message drives one synapse per neuron);
- neuron updates: every neuron, every timestep; spikes out: from the run itself;
- messages out: spikes x the cores of the layers it sends to (one message per destination core).

Energy is dynamic (synaptic ops, neuron updates, the dearer update of a spiking neuron, messages) plus static
power over the time an inference occupies the chip when samples stream back to back. Latency per timestep is
the busiest core's work (the operations above times the hw_config's time per operation) plus the barrier
that ends every timestep; an inference takes its T timesteps plus one step of Dense delay per layer on its
deepest path (each costed at the mean step). Beside it: the same network as an ANN on the 45 nm reference (one
pass of MACs), and the SNN papers' 45 nm convention (MACs for the analog input's synapses, one accumulate per
synaptic op driven by a spike).
Every figure comes from the hw_config with its source; proxies are flagged and listed in ``notes``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.export.hw_config import Figure, HwConfig
from spikefold.export.intnet import INPUT, IntNetwork
from spikefold.sim.cores import CoreMap, map_onto_cores
from spikefold.sim.simulator import SimResult

ENERGY = ("synaptic_op", "neuron_update", "neuron_update_active", "spike_message")
TIMING = ("synaptic_op", "neuron_update", "neuron_spike", "spike_message", "barrier_sync")


@dataclasses.dataclass
class CoreActivity:
    """One core, per inference (sums over timesteps, means over samples)."""

    core: int
    layer: str
    neurons: int
    synapses: int
    input_axons: int
    output_axons: int
    messages_in: float
    synaptic_ops: float
    neuron_updates: float
    spikes: float
    messages_out: float
    busy_s: list[float]  # work time at each timestep
    energy_j: float


@dataclasses.dataclass
class LayerActivity:
    """One layer, per inference."""

    name: str
    neurons: int
    fan_in: int
    cores: int
    input_messages: float  # arriving at the layer (each is delivered to every one of its cores)
    synaptic_ops: float
    neuron_updates: float
    spikes: float
    messages_out: float
    firing_rate: float  # spikes per neuron per timestep
    spikes_per_timestep: list[float]
    energy_j: float  # dynamic energy of the layer's cores


@dataclasses.dataclass
class EnergyReport:
    hw_config: str
    samples: int
    timesteps: int
    layers: list[LayerActivity]
    cores: list[CoreActivity]
    chips: int
    step_s: list[float]  # per timestep: busiest core + barrier
    busiest_core: list[int]  # per timestep
    latency_s: float
    period_s: float  # time between samples streamed back to back
    dynamic_j: float
    static_j: float
    ann_45nm_j: float
    snn_45nm_j: float
    figures: dict[str, Figure]
    notes: list[str]

    @property
    def total_j(self) -> float:
        return self.dynamic_j + self.static_j

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["total_j"] = self.total_j
        return d


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


def estimate(net: IntNetwork, x_int: np.ndarray, result: SimResult, hw: HwConfig, reference: HwConfig,
             core_map: CoreMap | None = None) -> EnergyReport:
    """Energy and latency per inference of ``net`` on ``hw`` from a layer-synchronous run's spikes."""
    if result.timing != "synchronous":
        raise ValueError("estimate needs a layer-synchronous result (simulator.align_to_synchronous)")
    core_map = core_map or map_onto_cores(net, hw)
    fig, notes = _figures(hw, reference)
    e = {key: fig[f"energy.{key}"].value for key in ENERGY}
    t = {key: fig[f"timing.{key}"].value for key in TIMING}
    n, steps = max(len(x_int), 1), net.timesteps
    # Non-zero inputs sent per timestep (graded spikes, or events): the same every step for static input.
    x_int = np.asarray(x_int)
    graded = (np.count_nonzero(x_int, axis=(0, 2)) / n if net.input.per_timestep
              else np.full(steps, np.count_nonzero(x_int) / n))
    sent = {layer.name: result.spikes[i].sum(axis=(0, 2)) / n for i, layer in enumerate(net.layers)}
    cores, layers = [], []
    busy = []  # per core, per timestep
    input_ops = 0.0  # synaptic operations driven by the graded input (MACs in the 45 nm convention)
    for i, layer in enumerate(net.layers):
        per_neuron = result.spikes[i].sum(axis=0) / n  # (T, neurons): mean spikes per sample
        arriving = sum(graded if c.source == INPUT else sent[c.source] for c in layer.inputs)
        input_ops += float(graded.sum()) * layer.size * sum(c.source == INPUT for c in layer.inputs)
        next_cores = sum(len(core_map.of_layer(k)) for k in net.consumers(i))
        layer_cores = core_map.of_layer(i)
        for core in layer_cores:
            spikes_t = per_neuron[:, core.start:core.stop].sum(axis=1)
            ops_t = arriving * core.neurons
            messages_t = spikes_t * next_cores
            busy_t = (ops_t * t["synaptic_op"] + (core.neurons - spikes_t) * t["neuron_update"]
                      + spikes_t * t["neuron_spike"] + messages_t * t["spike_message"])
            energy = float((ops_t * e["synaptic_op"] + (core.neurons - spikes_t) * e["neuron_update"]
                            + spikes_t * e["neuron_update_active"] + messages_t * e["spike_message"]).sum())
            busy.append(busy_t)
            cores.append(CoreActivity(
                core=core.index, layer=layer.name, neurons=core.neurons, synapses=core.synapses,
                input_axons=core.input_axons, output_axons=core.output_axons,
                messages_in=float(arriving.sum()), synaptic_ops=float(ops_t.sum()),
                neuron_updates=float(core.neurons * steps), spikes=float(spikes_t.sum()),
                messages_out=float(messages_t.sum()), busy_s=busy_t.tolist(), energy_j=energy))
        mine = cores[-len(layer_cores):]
        spikes_t = per_neuron.sum(axis=1)
        layers.append(LayerActivity(
            name=layer.name, neurons=layer.size, fan_in=layer.fan_in, cores=len(layer_cores),
            input_messages=float(arriving.sum()), synaptic_ops=sum(c.synaptic_ops for c in mine),
            neuron_updates=float(layer.size * steps), spikes=float(spikes_t.sum()),
            messages_out=sum(c.messages_out for c in mine), firing_rate=float(spikes_t.sum()) / (layer.size * steps),
            spikes_per_timestep=spikes_t.tolist(), energy_j=sum(c.energy_j for c in mine)))
    busy_arr = np.array(busy)  # (cores, T)
    step = busy_arr.max(axis=0) + t["barrier_sync"]
    period = float(step.sum())
    latency = period + max(net.depths()) * float(step.mean())
    dynamic = sum(layer.energy_j for layer in layers)
    static_power = fig["energy.static_power"].value if "energy.static_power" in fig else 0.0
    macs = sum(c.synapses.shape[0] * c.synapses.shape[1] for layer in net.layers for c in layer.inputs)
    first_macs = sum(c.synapses.shape[0] * c.synapses.shape[1] for layer in net.layers for c in layer.inputs
                     if c.source == INPUT) * steps
    spike_ops = sum(layer.synaptic_ops for layer in layers) - input_ops
    return EnergyReport(
        hw_config=hw.name, samples=len(x_int), timesteps=steps, layers=layers, cores=cores,
        chips=core_map.chips, step_s=step.tolist(), busiest_core=busy_arr.argmax(axis=0).tolist(),
        latency_s=latency, period_s=period, dynamic_j=dynamic, static_j=static_power * period,
        ann_45nm_j=macs * fig["ann_45nm.mac"].value,
        snn_45nm_j=first_macs * fig["ann_45nm.mac"].value
        + spike_ops * fig["ann_45nm.ac"].value,
        figures=fig, notes=notes)


def markdown_lines(e: dict) -> list[str]:
    """An energy report (as ``to_dict`` gives it) as Markdown: the per-core table, the step times, the figures
    with their sources, and the notes."""
    lines = ["", f"## Cores ({e['hw_config']}, per inference)", "",
             "| core | layer | neurons | synapses | synaptic ops | spikes | messages out | busiest step (us) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in e["cores"]:
        lines.append(f"| {c['core']} | {c['layer']} | {c['neurons']} | {c['synapses']} | {c['synaptic_ops']:.0f} | "
                     f"{c['spikes']:.1f} | {c['messages_out']:.1f} | {max(c['busy_s']) * 1e6:.2f} |")
    lines += ["", "Step time per timestep (busiest core + barrier): "
              + ", ".join(f"{s * 1e6:.2f} us" for s in e["step_s"]) + ".",
              "", "## Figures used", "", "| figure | value | source | proxy |", "| --- | --- | --- | --- |"]
    for name, f in e["figures"].items():
        lines.append(f"| {name} | {f['value']:g} {f['unit']} | {f['source']} | {'yes' if f['proxy'] else 'no'} |")
    lines += [""] + [f"- {note}" for note in e["notes"]]
    return lines
