"""Compare a target's run with a reference run of the same network shape, spike for spike and integer for
integer: per layer and timestep, per sample, and where they first diverge; and what a validation judges that by
and reports (its tolerances, checks, and the summary both kinds of validation share)."""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.core.errors import ConfigError
from spikefold.export.intnet import IntNetwork
from spikefold.sim.simulator import SimResult


@dataclasses.dataclass
class Check:
    """One line of a validation verdict."""

    name: str
    passed: bool
    measured: float
    limit: float
    detail: str


@dataclasses.dataclass
class Divergence:
    layer: str
    what: str  # "spikes", "readout v", "u" or "v"
    sample: int
    timestep: int
    neuron: int
    reference: int
    target: int


@dataclasses.dataclass
class LayerAgreement:
    """One layer, per timestep, summed over samples and neurons."""

    name: str
    reference_spikes: list[int]
    target_spikes: list[int]
    differing: list[int]  # spike slots (sample, neuron) that differ
    slots: int  # slots per timestep: samples x neurons

    @property
    def differing_share(self) -> float:
        return sum(self.differing) / max(self.slots * len(self.differing), 1)


@dataclasses.dataclass
class Agreement:
    samples: int
    spikes_compared: int  # spike slots (sample x timestep x neuron) compared, all layers
    spikes_differing: int
    readout_equal: bool
    max_logit_difference: int  # largest |readout voltage difference| after the last timestep
    states_differing: int | None  # u and v integers that differ, when both runs recorded them
    predictions_equal: float  # share of samples with the same prediction
    per_layer_differing: dict[str, int]
    layers: list[LayerAgreement]
    first: Divergence | None

    @property
    def exact(self) -> bool:
        return self.spikes_differing == 0 and self.readout_equal and not self.states_differing

    def to_dict(self) -> dict:
        """As JSON, with the verdict :attr:`exact` beside the counts."""
        return dataclasses.asdict(self) | {"exact": self.exact}


@dataclasses.dataclass
class Chunks:
    """How a validation's samples were cut into target runs, and how many samples a resumed run reused."""

    size: int
    count: int
    reused_samples: int


@dataclasses.dataclass
class Tolerances:
    """What counts as agreement. The defaults demand exact agreement with the integer simulator."""

    spikes: float = 0.0  # largest share of a layer's spike slots (sample x timestep x neuron) that may differ
    logits: int = 0  # largest |readout voltage difference| after the last timestep
    agreement: float = 1.0  # smallest share of samples predicted as the integer sim predicts them
    float_agreement: float = 0.95  # the same against the float model (with a float model)
    accuracy_drop: float = 0.02  # how far the target's accuracy may fall below the float model's

    FLAGS = {"spikes": "--spike-tolerance", "agreement": "--min-agreement",
             "float_agreement": "--min-float-agreement", "accuracy_drop": "--max-accuracy-drop"}

    def check(self) -> None:
        for name, flag in self.FLAGS.items():
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{flag} must be a share in [0, 1], got {value}")
        if self.logits < 0:
            raise ConfigError(f"--logit-tolerance must be >= 0, got {self.logits}")


@dataclasses.dataclass
class ValidationSummary:
    """What both validations report, of the whole network (``validation_run.ValidationReport``) and layer by
    layer (``layerwise.LayerwiseReport``): the verdict, which runs were compared on which samples in how many
    chunks, the checks and where the target first diverged."""

    passed: bool
    model: str
    reference: str
    target: str
    data: str
    samples: int
    timesteps: int
    chunks: Chunks
    tolerances: Tolerances
    checks: list[Check]
    first_divergence: Divergence | None
    timings: dict[str, float]


@dataclasses.dataclass
class DeployReport:
    """``spikefold deploy``'s result: the target's accuracy and spikes, and its agreement with the integer sim."""

    target: str
    data: str
    samples: int
    accuracy: float | None  # None for data without labels
    spikes: list[dict]  # per layer: spikes per sample and per timestep (simulator.spike_table)
    agreement: Agreement


def first_difference(net: IntNetwork, index: int, what: str, ref: np.ndarray, got: np.ndarray, sample_offset: int = 0):
    """The earliest (timestep, sample, neuron) where ``ref`` and ``got`` differ, keyed for ordering; samples
    are numbered from ``sample_offset`` (a chunk's first sample)."""
    diff = np.argwhere(ref != got)
    if not len(diff):
        return None
    k, t, j = min(diff.tolist(), key=lambda d: (d[1], d[0], d[2]))
    found = Divergence(net.layers[index].name, what, int(k) + sample_offset, int(t), int(j), int(ref[k, t, j]),
                       int(got[k, t, j]))
    return (t, index, k + sample_offset), found


def layer_spikes(name: str, ref: np.ndarray, got: np.ndarray) -> LayerAgreement:
    """One layer's spikes (sample, timestep, neuron) compared, summed per timestep."""
    if ref.shape != got.shape:
        raise ValueError(f"layer '{name}': reference spikes {ref.shape} vs target {got.shape}")
    return LayerAgreement(name=name, reference_spikes=ref.sum(axis=(0, 2)).tolist(),
                          target_spikes=got.sum(axis=(0, 2)).tolist(), differing=(ref != got).sum(axis=(0, 2)).tolist(),
                          slots=ref.shape[0] * ref.shape[2])


def merge_layer_spikes(a: LayerAgreement, b: LayerAgreement) -> LayerAgreement:
    """Two runs' comparisons of one layer (say, two chunks of samples) as one."""
    def add(x: list[int], y: list[int]) -> list[int]:
        return [p + q for p, q in zip(x, y)]

    return LayerAgreement(a.name, add(a.reference_spikes, b.reference_spikes), add(a.target_spikes, b.target_spikes),
                          add(a.differing, b.differing), a.slots + b.slots)


def compare(net: IntNetwork, reference: SimResult, target: SimResult) -> Agreement:
    """Every spike of every layer and timestep, the readout voltage, and u/v where both recorded them.

    The first divergence is the earliest timestep, and within it the lowest layer: in layer-synchronous time
    that is where the two runs started to differ; everything after it may only be a consequence.
    """
    layers, found, compared = [], [], 0
    states_compared = all(r is not None for r in (reference.u, reference.v, target.u, target.v))
    states_differing = 0
    for i, layer in enumerate(net.layers):
        ref, got = reference.spikes[i], target.spikes[i]
        layers.append(layer_spikes(layer.name, ref, got))
        compared += ref.size
        pairs = [("spikes", ref, got)]
        if i == len(net.layers) - 1:
            pairs.append(("readout v", reference.readout_v, target.readout_v))
        if states_compared:
            for name, a, b in (("u", reference.u, target.u), ("v", reference.v, target.v)):
                pairs.append((name, a[i], b[i]))
                states_differing += int((a[i] != b[i]).sum())
        found += [hit for hit in (first_difference(net, i, *pair) for pair in pairs) if hit is not None]
    logit_diff = np.abs(reference.logits - target.logits)
    return Agreement(
        samples=len(reference.readout_v),
        spikes_compared=compared,
        spikes_differing=sum(sum(row.differing) for row in layers),
        readout_equal=bool(np.array_equal(reference.readout_v, target.readout_v)),
        max_logit_difference=int(logit_diff.max(initial=0)),
        states_differing=states_differing if states_compared else None,
        predictions_equal=float((reference.predictions == target.predictions).mean()),
        per_layer_differing={row.name: sum(row.differing) for row in layers},
        layers=layers,
        first=min(found, key=lambda hit: hit[0])[1] if found else None,
    )
