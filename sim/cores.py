"""Map an integer network's layers onto neurocores within a hw_config's per-core limits, partitioning layers
that exceed them, as a Loihi compiler has to.

Every layer is seen as a (C, H, W) grid of neurons ((N, 1, 1) for a dense layer). A core holds one *tile*: a box
of output channels x rows x columns (a dense layer's tile is a run of neurons), and, where one neuron's fan-in
exceeds a core's input axons, one of ``groups`` slices of the input channels (of a dense input: of the inputs).
A tile's needs, summed over the layer's connections:

- neurons: the box's;
- input axons: what its receptive field reads; a convolution tile reads only the input rows and columns its
  kernels cover (clipped to the map), a dense tile every input of its slice;
- synapses: one per actual (neuron, input) pair: kernel taps that fall inside the map, not the padding;
- output axons: one per neuron and per core of the consuming layers whose receptive field holds that neuron
  (Loihi's discrete axons); the readout sends nothing.

Where ``groups > 1``, each of the tile's cores sums its slice of inputs and all but one send their partial sums to
the core whose neurons integrate and fire, as one graded message per neuron and step (Loihi 2 graded spikes):
that core needs one more input axon per neuron and partial-sum core. spikefold's simulator and Lava run the
unsplit layer, so such a mapping is a hardware estimate, flagged in ``CoreMap.notes``.

Layers are mapped from the last one back, because a layer's output axons depend on how the layers it sends to
are tiled. For each layer the tiling with the fewest cores that respects every limit is chosen; when none does
(one output pixel's receptive field in one input channel is more than a core holds, say), a
:class:`MappingError` names the layer, the limit and what would fit. Chips hold ``limits.cores`` cores; boards
and systems (``BOARDS``) hold chips. The input arrives from the host (an embedded CPU on Loihi 2).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from spikefold.core.errors import MappingError
from spikefold.export.hw_config import Figure, HwConfig
from spikefold.export.intnet import INPUT, Connection, Conv2d, IntNetwork

LIMITS = ("cores", "neurons_per_core", "synapses_per_core", "input_axons_per_core", "output_axons_per_core")
# Multi-chip Loihi 2 systems, chips each: Intel's Kapoho Point board (8 Loihi 2 chips) and Hala Point
# (1,152 Loihi 2 chips, 2024), the largest Intel has built; Intel Loihi 2 brief and Hala Point announcement.
BOARDS = {"Kapoho Point (8 chips)": 8, "Hala Point (1152 chips)": 1152}


@dataclasses.dataclass(frozen=True)
class Box:
    """A half-open box of a (C, H, W) grid."""

    c0: int
    c1: int
    r0: int
    r1: int
    w0: int
    w1: int

    @property
    def size(self) -> int:
        return (self.c1 - self.c0) * (self.r1 - self.r0) * (self.w1 - self.w0)

    def indices(self, shape: tuple[int, int, int]) -> np.ndarray:
        """Flat (C, H, W)-ordered indices of the box's elements."""
        c, r, w = np.ix_(range(self.c0, self.c1), range(self.r0, self.r1), range(self.w0, self.w1))
        return ((c * shape[1] + r) * shape[2] + w).ravel()


def grid(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A layer's or input's neurons as (C, H, W): a dense population is (N, 1, 1)."""
    return tuple(shape) if len(shape) == 3 else (int(np.prod(shape)), 1, 1)  # type: ignore[return-value]


def source_shape(net: IntNetwork, c: Connection) -> tuple[int, int, int]:
    """What connection ``c`` reads, as (C, H, W): a convolution's input maps (the input's too), else the source
    layer's output (a dense population is (N, 1, 1))."""
    if isinstance(c.synapses, Conv2d):
        return grid(c.synapses.input_shape)
    return grid((net.input.size,) if c.source == INPUT else net.layers[net.index(c.source)].output_shape)


def _covered(out0: int, out1: int, stride: int, padding: int, kernel: int, size: int) -> tuple[int, int]:
    """The input rows (or columns) that output rows [out0, out1) read, clipped to the map."""
    return max(0, out0 * stride - padding), min(size, (out1 - 1) * stride - padding + kernel)


def _taps(out0: int, out1: int, stride: int, padding: int, kernel: int, size: int) -> int:
    """Kernel taps inside the map, summed over output rows [out0, out1) (the padding holds no synapse)."""
    y = np.arange(out0, out1) * stride - padding
    return int((np.minimum(y + kernel, size) - np.maximum(y, 0)).clip(0).sum())


def _uses(out0: int, out1: int, stride: int, padding: int, kernel: int, size: int) -> np.ndarray:
    """Per input row, how many of output rows [out0, out1) read it."""
    counts = np.zeros(size, np.int64)
    for y in range(out0, out1):
        lo, hi = _covered(y, y + 1, stride, padding, kernel, size)
        counts[lo:hi] += 1
    return counts


@dataclasses.dataclass(frozen=True)
class Core:
    """One neurocore: a tile of one layer and, where the layer's fan-in is split, one slice of its inputs."""

    index: int  # position in the whole mapping, 0-based, input side first
    layer: int
    tile: Box  # in the layer's (C, H, W) grid
    group: int  # which input slice, 0..groups-1
    groups: int
    fires: bool  # holds the neurons that integrate and fire (the last group's core)
    synapses: int
    input_axons: int
    output_axons: int

    @property
    def neurons(self) -> int:
        return self.tile.size


def _input_slice(connection: Connection, group: int, groups: int, shape: tuple[int, int, int]) -> tuple[int, int]:
    """The source channels (of a dense input: the flat inputs) group ``group`` reads."""
    n = shape[0] if isinstance(connection.synapses, Conv2d) else int(np.prod(shape))
    return n * group // groups, n * (group + 1) // groups


def receptive_box(connection: Connection, tile: Box, group: int, groups: int,
                  source_shape: tuple[int, int, int]) -> Box | tuple[int, int]:
    """What of its source a core reads through ``connection``: a box of the source grid (convolution) or a run of
    flat source indices (dense)."""
    lo, hi = _input_slice(connection, group, groups, source_shape)
    syn = connection.synapses
    if not isinstance(syn, Conv2d):
        return lo, hi
    _, _, kh, kw = np.shape(syn.weights)
    r0, r1 = _covered(tile.r0, tile.r1, syn.stride, syn.padding, kh, source_shape[1])
    w0, w1 = _covered(tile.w0, tile.w1, syn.stride, syn.padding, kw, source_shape[2])
    return Box(lo, hi, r0, r1, w0, w1)


def synapses_per_source(connection: Connection, core: Core, source_shape: tuple[int, int, int]) -> np.ndarray:
    """Per source neuron (flat), the synapses it drives in ``core``: what one of its spikes costs there."""
    n = int(np.prod(source_shape))
    out = np.zeros(n, np.int64)
    region = receptive_box(connection, core.tile, core.group, core.groups, source_shape)
    syn = connection.synapses
    if not isinstance(syn, Conv2d):
        out[region[0]:region[1]] = core.neurons
        return out
    _, _, kh, kw = np.shape(syn.weights)
    rows = _uses(core.tile.r0, core.tile.r1, syn.stride, syn.padding, kh, source_shape[1])
    cols = _uses(core.tile.w0, core.tile.w1, syn.stride, syn.padding, kw, source_shape[2])
    per_pixel = np.outer(rows, cols) * (core.tile.c1 - core.tile.c0)
    out = out.reshape(source_shape)
    out[region.c0:region.c1] = per_pixel
    return out.ravel()


@dataclasses.dataclass
class CoreMap:
    hw_config: str
    cores: list[Core]
    limits: dict[str, Figure]
    notes: list[str] = dataclasses.field(default_factory=list)

    def of_layer(self, layer: int) -> list[Core]:
        return [core for core in self.cores if core.layer == layer]

    @property
    def chips(self) -> int:
        return math.ceil(len(self.cores) / self.limits["cores"].value)

    def summary(self, net: IntNetwork) -> dict:
        """Cores and chips per layer and in all, and the boards and systems the chips need."""
        layers = []
        for i, layer in enumerate(net.layers):
            mine = self.of_layer(i)
            tile = mine[0].tile
            layers.append({"layer": layer.name, "neurons": layer.size, "cores": len(mine),
                           "input_groups": mine[0].groups,
                           "tile": [tile.c1 - tile.c0, tile.r1 - tile.r0, tile.w1 - tile.w0],
                           "synapses": int(sum(c.synapses for c in mine)),
                           "max_input_axons": max(c.input_axons for c in mine),
                           "max_output_axons": max(c.output_axons for c in mine)})
        return {"hw_config": self.hw_config, "cores": len(self.cores), "chips": self.chips,
                "boards": {name: math.ceil(self.chips / chips) for name, chips in BOARDS.items()},
                "layers": layers, "notes": self.notes}


def _bands(size: int) -> list[int]:
    """Candidate tile extents along one axis: the whole axis, then halving down to 1."""
    out = [size]
    while out[-1] > 1:
        out.append(math.ceil(out[-1] / 2))
    return out


def _splits(size: int, extent: int) -> list[tuple[int, int]]:
    count = math.ceil(size / extent)
    bounds = [size * k // count for k in range(count + 1)]  # even: extents differ by at most one
    return list(zip(bounds[:-1], bounds[1:]))


class _Layout:
    """One layer's candidate tilings and their needs per core."""

    def __init__(self, net: IntNetwork, index: int, fan_out: np.ndarray):
        self.net, self.index, self.layer = net, index, net.layers[index]
        self.shape = grid(self.layer.output_shape)
        self.sources = [source_shape(self.net, c) for c in self.layer.inputs]
        # Summed-area table of output axons per neuron: a tile's output axons in O(1).
        self.out_axons = np.pad(fan_out.reshape(self.shape), ((1, 0), (1, 0), (1, 0))).cumsum(0).cumsum(1).cumsum(2)

    def _box_sum(self, b: Box) -> int:
        s = self.out_axons
        return int(s[b.c1, b.r1, b.w1] - s[b.c0, b.r1, b.w1] - s[b.c1, b.r0, b.w1] - s[b.c1, b.r1, b.w0]
                   + s[b.c0, b.r0, b.w1] + s[b.c0, b.r1, b.w0] + s[b.c1, b.r0, b.w0] - s[b.c0, b.r0, b.w0])

    def needs(self, tile: Box, group: int, groups: int) -> tuple[int, int, int]:
        """(synapses, input axons, output axons) of the core holding ``tile``'s slice ``group``."""
        synapses = axons = 0
        for c, shape in zip(self.layer.inputs, self.sources):
            region = receptive_box(c, tile, group, groups, shape)
            syn = c.synapses
            if isinstance(syn, Conv2d):
                _, _, kh, kw = np.shape(syn.weights)
                axons += region.size
                synapses += ((tile.c1 - tile.c0) * (region.c1 - region.c0)
                             * _taps(tile.r0, tile.r1, syn.stride, syn.padding, kh, shape[1])
                             * _taps(tile.w0, tile.w1, syn.stride, syn.padding, kw, shape[2]))
            else:
                axons += region[1] - region[0]
                synapses += tile.size * (region[1] - region[0])
        fires = group == groups - 1
        if fires:  # the other groups' partial sums arrive here, one axon per neuron and group
            axons += tile.size * (groups - 1)
        return synapses, axons, self._box_sum(tile) if fires else tile.size

    def candidates(self):
        """(groups, tiles): whole fan-in first, then whole channels, each from the fewest cores up."""
        c, h, w = self.shape
        max_groups = max(s[0] if isinstance(conn.synapses, Conv2d) else int(np.prod(s))
                         for conn, s in zip(self.layer.inputs, self.sources))
        options = []
        for groups in sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, max_groups}):
            if groups > max_groups:
                continue
            for ec, eh, ew in itertools.product(_bands(c), _bands(h), _bands(w)):
                cores = groups * math.ceil(c / ec) * math.ceil(h / eh) * math.ceil(w / ew)
                options.append((cores, groups, ec, eh, ew))
        # Splitting the fan-in needs partial sums sent between cores: only where no whole-fan-in tiling fits.
        # Then tiles that hold every output channel of a patch: a layer split by channels multiplies the cores
        # each spike of the layer before must reach, which costs that layer output axons.
        for *_, groups, ec, eh, ew in sorted((g > 1, math.ceil(c / rest[0]), n, g, *rest)
                                             for n, g, *rest in options):
            yield groups, [Box(c0, c1, r0, r1, w0, w1) for (c0, c1), (r0, r1), (w0, w1)
                           in itertools.product(_splits(c, ec), _splits(h, eh), _splits(w, ew))]


def consumer_fan_out(net: IntNetwork, index: int, cores: dict[int, list[Core]]) -> np.ndarray:
    """Per neuron of layer ``index``, the cores of the layers it sends to whose receptive field holds it."""
    layer = net.layers[index]
    shape = grid(layer.output_shape)
    fan_out = np.zeros(shape, np.int64)
    for k in net.consumers(index):
        if k == index:  # a recurrent layer's own cores are chosen with it, after this: counted as one (at least)
            fan_out += 1
            continue
        for c in net.layers[k].inputs:
            if c.source != layer.name:
                continue
            for core in cores[k]:
                region = receptive_box(c, core.tile, core.group, core.groups, shape)
                if isinstance(region, Box):
                    fan_out[region.c0:region.c1, region.r0:region.r1, region.w0:region.w1] += 1
                else:
                    fan_out.reshape(-1)[region[0]:region[1]] += 1
    return fan_out.ravel()


def map_onto_cores(net: IntNetwork, hw: HwConfig) -> CoreMap:
    """The fewest cores per layer that respect every per-core limit of ``hw``, layers partitioned as needed; a
    :class:`MappingError` naming the layer, the limit and what would fit when no partition does."""
    limits = {key: hw.figure("limits", key) for key in LIMITS}
    caps = {key: int(limits[key].value) for key in LIMITS[1:]}
    per_layer: dict[int, list[Core]] = {}
    for index in reversed(range(len(net.layers))):
        layout = _Layout(net, index, consumer_fan_out(net, index, per_layer))
        best = None  # the candidate that failed by least, for the error
        for groups, tiles in layout.candidates():
            cores, worst = [], None
            for tile, group in itertools.product(tiles, range(groups)):
                synapses, axons, out_axons = layout.needs(tile, group, groups)
                used = {"neurons_per_core": tile.size, "synapses_per_core": synapses,
                        "input_axons_per_core": axons, "output_axons_per_core": out_axons}
                over = [(used[k] / caps[k], k, used[k]) for k in used if used[k] > caps[k]]
                if over:
                    worst = max(over)
                    break
                cores.append(Core(-1, index, tile, group, groups, group == groups - 1, synapses, axons, out_axons))
            if worst is None:
                per_layer[index] = cores
                break
            if best is None or worst < best[0]:
                best = (worst, tiles[0], groups)
        else:
            (_, key, used), tile, groups = best
            raise MappingError(
                f"layer '{net.layers[index].name}' cannot be partitioned onto {hw.name} cores: the closest tiling "
                f"({tile.c1 - tile.c0} x {tile.r1 - tile.r0} x {tile.w1 - tile.w0} neurons, inputs split {groups} "
                f"ways) still needs {used} {key.replace('_per_core', '')} where a core has {caps[key]}; "
                f"{_what_fits(key)}")
    cores = []
    for index in range(len(net.layers)):
        cores += [dataclasses.replace(c, index=len(cores) + k) for k, c in enumerate(per_layer[index])]
    notes = []
    split = [net.layers[i].name for i in per_layer if per_layer[i][0].groups > 1]
    if split:
        notes.append(f"fan-in split into partial sums (sent as graded spikes to the firing core; not simulated): "
                     f"{', '.join(split)}")
    return CoreMap(hw.name, cores, limits, notes)


def _what_fits(key: str) -> str:
    return {"output_axons_per_core": "shrink the layers it sends to or use fewer, larger cores downstream",
            "input_axons_per_core": "use fewer input channels or a smaller kernel",
            "synapses_per_core": "use fewer input channels or a smaller kernel",
            "neurons_per_core": "use a hw_config with larger cores"}[key]
