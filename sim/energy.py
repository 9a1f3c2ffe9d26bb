"""Energy and latency per inference from the activity a run measured (simulator or Lava).

Counts, per layer and per inference:
- input messages: the spikes (or, for the analog input layer, the non-zero graded values) arriving;
- synaptic operations: each message times the synapses it drives (the layer's fan-out of that input);
- neuron updates: neurons x timesteps; spikes out.
Loihi 2 energy is dynamic (synaptic ops, neuron updates, spike messages) plus static power over the time the
inference occupies the chip; latency is the pipelined depth (T + layers steps) times the time per step. The
same network as an ANN on the 45 nm reference (one pass, multiply-accumulates) and the SNN papers' 45 nm
convention (accumulates per synaptic op, MACs for the analog first layer) sit beside it. Every figure comes from
the hw_config with its source; proxies are flagged.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.export.hw_config import Figure, HwConfig
from spikefold.export.intnet import IntNetwork
from spikefold.sim.simulator import SimResult


@dataclasses.dataclass
class LayerActivity:
    name: str
    neurons: int
    fan_in: int
    input_messages: float  # per inference
    synaptic_ops: float
    neuron_updates: float
    spikes: float
    firing_rate: float  # spikes per neuron per timestep
    energy_j: float = 0.0  # Loihi 2 dynamic energy of this layer


@dataclasses.dataclass
class EnergyReport:
    samples: int
    timesteps: int
    layers: list[LayerActivity]
    dynamic_j: float
    static_j: float
    latency_s: float
    period_s: float
    ann_45nm_j: float
    snn_45nm_j: float
    figures: dict[str, Figure]

    @property
    def total_j(self) -> float:
        return self.dynamic_j + self.static_j

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["total_j"] = self.total_j
        return d


def measure_activity(net: IntNetwork, x_int: np.ndarray, result: SimResult) -> list[LayerActivity]:
    """Per-layer activity per inference from a run's spikes and its encoded input."""
    n = max(len(x_int), 1)
    steps = net.timesteps
    rows = []
    # What arrives at layer 0 each timestep: the non-zero graded inputs (the same at every step).
    arriving = np.count_nonzero(x_int) * steps / n
    for i, layer in enumerate(net.layers):
        spikes = float(result.spikes[i].sum()) / n
        fan_out_of_input = layer.synapses.shape[0]
        rows.append(LayerActivity(
            name=layer.name,
            neurons=layer.size,
            fan_in=layer.synapses.shape[1],
            input_messages=arriving,
            synaptic_ops=arriving * fan_out_of_input,
            neuron_updates=float(layer.size * steps),
            spikes=spikes,
            firing_rate=spikes / (layer.size * steps),
        ))
        arriving = spikes
    return rows


def estimate(net: IntNetwork, x_int: np.ndarray, result: SimResult, hw: HwConfig,
             reference: HwConfig) -> EnergyReport:
    layers = measure_activity(net, x_int, result)
    fig = {
        "synaptic_op": hw.figure("energy", "synaptic_op"),
        "neuron_update": hw.figure("energy", "neuron_update"),
        "neuron_update_active": hw.figure("energy", "neuron_update_active"),
        "spike_message": hw.figure("energy", "spike_message"),
        "static_power": hw.figure("energy", "static_power"),
        "time_per_step": hw.figure("timing", "time_per_step"),
        "mac_45nm": reference.figure("energy", "mac"),
        "ac_45nm": reference.figure("energy", "ac"),
    }
    dynamic = 0.0
    for row in layers:
        row.energy_j = (
            row.synaptic_ops * fig["synaptic_op"].value
            + (row.neuron_updates - row.spikes) * fig["neuron_update"].value
            + row.spikes * fig["neuron_update_active"].value
            + row.input_messages * fig["spike_message"].value
        )
        dynamic += row.energy_j
    step = fig["time_per_step"].value
    period = net.timesteps * step  # samples stream back to back, one every T steps
    latency = (net.timesteps + len(net.layers)) * step  # first input to the readout's last update
    macs = sum(layer.synapses.shape[0] * layer.synapses.shape[1] for layer in net.layers)
    first_macs = net.layers[0].synapses.shape[0] * net.layers[0].synapses.shape[1] * net.timesteps
    later_ops = sum(row.synaptic_ops for row in layers[1:])
    return EnergyReport(
        samples=len(x_int),
        timesteps=net.timesteps,
        layers=layers,
        dynamic_j=dynamic,
        static_j=fig["static_power"].value * period,
        latency_s=latency,
        period_s=period,
        ann_45nm_j=macs * fig["mac_45nm"].value,
        snn_45nm_j=first_macs * fig["mac_45nm"].value + later_ops * fig["ac_45nm"].value,
        figures=fig,
    )
