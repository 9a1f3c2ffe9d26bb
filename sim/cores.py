"""Map an integer network's layers onto neurocores within a hw_config's per-core limits.

Each layer is split into as few cores as its limits allow, neurons spread evenly (core sizes differ by at
most one). A core of layer l holds, for its n neurons:

- n neurons                                    <= ``limits.neurons_per_core``
- fan_in x n synapses (Lava's Dense is dense)  <= ``limits.synapses_per_core``
- fan_in input axons (every input reaches it)  <= ``limits.input_axons_per_core``
- n x (cores of the layers l sends to) output axons  <= ``limits.output_axons_per_core``
  (one axon per neuron and destination core, Loihi's discrete axons; the readout sends nothing)

fan_in counts every connection into the layer (a residual layer's shortcut too). Layers are mapped from the last
one back, because a layer's output axons depend on how many cores the layers it sends to need. The input
arrives from the host (an embedded CPU on Loihi 2), not from a neurocore.
"""

from __future__ import annotations

import dataclasses
import math

from spikefold.errors import MappingError
from spikefold.export.hw_config import Figure, HwConfig
from spikefold.export.intnet import IntNetwork

LIMITS = ("cores", "neurons_per_core", "synapses_per_core", "input_axons_per_core", "output_axons_per_core")


@dataclasses.dataclass(frozen=True)
class Core:
    """One neurocore: which neurons of which layer it holds, and what it uses of its limits."""

    index: int  # position in the whole mapping, 0-based, input side first
    layer: int  # layer index
    start: int  # neurons [start, stop) of the layer
    stop: int
    synapses: int
    input_axons: int
    output_axons: int

    @property
    def neurons(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass
class CoreMap:
    hw_config: str
    cores: list[Core]
    limits: dict[str, Figure]

    def of_layer(self, layer: int) -> list[Core]:
        return [core for core in self.cores if core.layer == layer]

    @property
    def chips(self) -> int:
        return math.ceil(len(self.cores) / self.limits["cores"].value)


def map_onto_cores(net: IntNetwork, hw: HwConfig) -> CoreMap:
    """The fewest cores per layer that respect every per-core limit of ``hw``; a :class:`MappingError`
    naming the layer and the limit when one neuron's needs alone exceed a core."""
    limits = {key: hw.figure("limits", key) for key in LIMITS}
    neurons_max = int(limits["neurons_per_core"].value)
    synapses_max = int(limits["synapses_per_core"].value)
    in_axons_max = int(limits["input_axons_per_core"].value)
    out_axons_max = int(limits["output_axons_per_core"].value)
    per_layer: list[list[tuple[int, int, int, int, int]]] = []
    counts: dict[int, int] = {}  # cores per layer, filled from the last layer back
    for index in reversed(range(len(net.layers))):
        layer = net.layers[index]
        # The readout's spikes go nowhere (the host reads its voltage): it has no consumers.
        next_cores = sum(counts[k] for k in net.consumers(index))
        fan_in = layer.fan_in
        if fan_in > in_axons_max:
            raise MappingError(
                f"layer '{layer.name}': its {fan_in} inputs exceed the {in_axons_max} input axons of a "
                f"{hw.name} core; split the layer below it or use a hw_config with larger cores")
        per_core = min(neurons_max, synapses_max // fan_in,
                       out_axons_max // next_cores if next_cores else neurons_max)
        if synapses_max < fan_in:
            raise MappingError(
                f"layer '{layer.name}': one neuron needs {fan_in} synapses (its fan-in) but a {hw.name} core holds "
                f"{synapses_max} (synapses_per_core); shrink the layer below it")
        if out_axons_max < next_cores:
            raise MappingError(
                f"layer '{layer.name}': one neuron needs {next_cores} output axons (one per core of the layers "
                f"it sends to) but a {hw.name} core has {out_axons_max} (output_axons_per_core); shrink those layers")
        count = math.ceil(layer.size / per_core)
        bounds = [layer.size * k // count for k in range(count + 1)]  # even split: sizes differ by <= 1
        per_layer.append([(start, stop, fan_in * (stop - start), fan_in, (stop - start) * next_cores)
                          for start, stop in zip(bounds[:-1], bounds[1:])])
        counts[index] = count
    cores = []
    for layer_index, spans in enumerate(reversed(per_layer)):
        for start, stop, synapses, in_axons, out_axons in spans:
            cores.append(Core(len(cores), layer_index, start, stop, synapses, in_axons, out_axons))
    return CoreMap(hw.name, cores, limits)
