"""Layer-wise hardware-in-the-loop validation: each chosen layer runs on the target on its own, driven by
the spikes the integer simulator recorded for its sources (or the encoded input, for a layer the input
feeds), and its spikes (with ``states``, every u and v; for the readout, its voltage) are held against the
simulator's.

A network too big to run whole in Lava's CPU simulation is validated this way one layer at a time, in
bounded memory: per chunk of samples the reference network is simulated once, then each layer runs on the
target with only its own synapses and neurons built (``lava_runner.run_layer``, through the same builder as
a whole-network deploy, keeping the layer's depth, reset offset and each connection's synaptic delay).
Because every layer gets the reference's input, a divergence is the layer's own: the report names each
layer's first one and the earliest layer that diverges. Each (chunk, layer) result is saved as it finishes,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from spikefold.deploy import data_source, lava_runner
from spikefold.deploy.validation import (Check, Chunks, Divergence, LayerAgreement, ValidationSummary,
                                         first_difference, layer_spikes, merge_layer_spikes)
from spikefold.core.errors import ConfigError
from spikefold.export.intnet import INPUT, IntNetwork
from spikefold.sim.simulator import simulate

# Above this many neurons a network is validated layer by layer unless --layers says otherwise: Lava's CPU
# simulation of a whole 90,122-neuron ResNet-19 took about 14 GB (issue 13), far beyond a shared machine.
WHOLE_NETWORK_NEURONS = 20_000


def choose_layers(net: IntNetwork, spec: str | None) -> list[int] | None:
    """The layer indices ``--layers`` names ("each", or names separated by commas), or None to validate the
    network whole ("whole"). Without ``spec``: whole when the network has at most WHOLE_NETWORK_NEURONS neurons, else
    each layer in turn."""
    if spec is not None and spec.strip() == "whole":
        return None
    if spec is None:
        neurons = sum(layer.size for layer in net.layers)
        return None if neurons <= WHOLE_NETWORK_NEURONS else list(range(len(net.layers)))
    if spec.strip() == "each":
        return list(range(len(net.layers)))
    names = [name.strip() for name in spec.split(",") if name.strip()]
    known = [layer.name for layer in net.layers]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(f"--layers {spec!r}: {', '.join(repr(n) for n in unknown) or 'no layer'} is not a layer "
                          f"of the model; name some of: {', '.join(known)}, or give 'each' or 'whole'")
    return sorted({known.index(name) for name in names})


@dataclasses.dataclass
class LayerResult:
    """One layer's comparison, accumulated over chunks."""

    index: int
    spikes: LayerAgreement | None = None
    states_compared: int = 0
    states_differing: int = 0
    readout_v_max_difference: int = 0  # the readout: largest |voltage difference| at any timestep
    first: tuple | None = None  # (ordering key, Divergence)
    samples: int = 0
    target_s: float = 0.0

    def add(self, net: IntNetwork, offset: int, reference: dict[str, np.ndarray], target: dict[str, np.ndarray],
            states: bool, seconds: float) -> None:
        layer = net.layers[self.index]
        part = layer_spikes(layer.name, reference["spikes"], target["spikes"])
        self.spikes = part if self.spikes is None else merge_layer_spikes(self.spikes, part)
        pairs = [("spikes", "spikes")]
        if layer.readout:
            if not states:
                pairs.append(("readout v", "v"))
            self.readout_v_max_difference = max(self.readout_v_max_difference, int(
                np.abs(reference["v"] - target["v"]).max(initial=0)))
        if states:
            for var in ("u", "v"):
                pairs.append((var, var))
                self.states_compared += reference[var].size
                self.states_differing += int((reference[var] != target[var]).sum())
        for what, var in pairs:
            hit = first_difference(net, self.index, what, reference[var], target[var], offset)
            if hit is not None and (self.first is None or hit[0] < self.first[0]):
                self.first = hit
        self.samples += len(reference["spikes"])
        self.target_s += seconds


@dataclasses.dataclass
class LayerwiseRow:
    """One layer's verdict in a layer-wise validation."""

    name: str
    index: int
    neurons: int
    sources: list[str]
    samples: int
    spikes_compared: int
    spikes_differing: int
    states_compared: int | None  # u and v integers, with --states
    states_differing: int | None
    spikes: LayerAgreement
    first_divergence: Divergence | None
    target_s: float


@dataclasses.dataclass
class LayerwiseReport(ValidationSummary):
    """A layer-wise validation: besides the summary, every layer's verdict."""

    mode: str  # "layerwise"
    states: bool
    layers: list[LayerwiseRow]


def run(cfg, net: IntNetwork, reference: IntNetwork, data: data_source.RunData, layers: list[int], store,
        on_progress=None) -> LayerwiseReport:
    """Validate ``layers`` of ``net`` on ``cfg.target`` chunk by chunk (``cfg``: a ValidationConfig), each
    driven by and compared with the integer sim of ``reference``; (chunk, layer) results already in
    ``store`` are reused. Returns the report (without writing it)."""
    n = len(data.x_int)
    bounds = lava_runner.chunk_bounds(n, cfg.chunk)
    total = n * len(layers)
    reused = store.held(bounds, layers)
    done = reused
    if on_progress is not None:
        on_progress(done, total, reused)
    results = {i: LayerResult(i) for i in layers}
    sim_s = 0.0
    for k, (start, stop) in enumerate(bounds):
        x = data.x_int[start:stop]
        t0 = time.perf_counter()
        golden = simulate(reference, x, record_state=cfg.states)
        sim_s += time.perf_counter() - t0
        for i in layers:
            layer = net.layers[i]
            expected = {"spikes": golden.spikes[i]}
            if cfg.states:
                expected |= {"u": golden.u[i], "v": golden.v[i]}
            elif layer.readout:
                expected["v"] = golden.readout_v
            key = store.key(k, i)
            t0 = time.perf_counter()
            if store.has(key):
                got = store.load_arrays(key)
            else:
                inputs = {source: x if source == INPUT else golden.spikes[net.index(source)]
                          for source in layer.sources}
                lava = lava_runner.run_layer(net, i, inputs, cfg.target, cfg.states)
                got = {name: a for name, a in (("spikes", lava.spikes), ("u", lava.u), ("v", lava.v)) if a is not None}
                store.save_arrays(key, got)
                done += stop - start
            results[i].add(net, start, expected, got, cfg.states, time.perf_counter() - t0)
            if on_progress is not None:
                on_progress(done, total, reused)
    return _report(cfg, net, data, layers, results, reused, bounds, sim_s)


def _report(cfg, net: IntNetwork, data: data_source.RunData, layers: list[int], results: dict[int, LayerResult],
            reused: int, bounds: list, sim_s: float) -> LayerwiseReport:
    checks, rows = [], []
    tol = cfg.tolerances
    for i in layers:
        r, layer = results[i], net.layers[i]
        share = r.spikes.differing_share
        differing = sum(r.spikes.differing)
        checks.append(Check(f"spikes {layer.name}", share <= tol.spikes, share, tol.spikes,
                            f"{differing:,} of {r.spikes.slots * len(r.spikes.differing):,} spike slots differ"))
        if layer.readout:
            checks.append(Check("readout voltages", r.readout_v_max_difference <= tol.logits,
                                r.readout_v_max_difference, tol.logits,
                                "largest absolute readout-voltage difference vs the integer sim, any timestep"))
        if cfg.states:
            checks.append(Check(f"neuron states (u, v) {layer.name}", r.states_differing == 0, r.states_differing, 0,
                                f"{r.states_differing:,} of {r.states_compared:,} u and v integers differ"))
        rows.append(LayerwiseRow(
            name=layer.name, index=i, neurons=layer.size, sources=[c.source for c in layer.inputs],
            samples=r.samples, spikes_compared=r.spikes.slots * len(r.spikes.differing), spikes_differing=differing,
            states_compared=r.states_compared if cfg.states else None,
            states_differing=r.states_differing if cfg.states else None, spikes=r.spikes,
            first_divergence=r.first[1] if r.first else None, target_s=r.target_s))
    diverging = [results[i].first[1] for i in layers if results[i].first is not None]
    first: Divergence | None = diverging[0] if diverging else None  # layers are in network order
    return LayerwiseReport(
        passed=all(c.passed for c in checks), mode="layerwise", model=str(cfg.model),
        reference=str(cfg.reference or cfg.model), target=cfg.target, data=data.source, samples=len(data.x_int),
        timesteps=net.timesteps, states=cfg.states, layers=rows, chunks=Chunks(cfg.chunk, len(bounds), reused),
        tolerances=cfg.tolerances, checks=checks, first_divergence=first,
        timings={"target_s": sum(r.target_s for r in results.values()), "int_sim_s": sim_s})
