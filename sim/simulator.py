"""The simulator: every sample of a network run bit-exactly (:mod:`spikefold.export.runner`, on CPU or GPU, in
layer-synchronous or Lava's timing), collected as spike and voltage arrays for the reports, energy and Lava's
comparison."""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.export.intnet import IntNetwork
from spikefold.export.runner import LayerStats, run_batches


@dataclasses.dataclass
class SimResult:
    """What a run produced. Arrays are indexed (sample, timestep, neuron); with ``timing == "lava"`` the
    second axis is Lava's step (see the module docstring)."""

    spikes: list[np.ndarray]  # one bool array per layer (the readout's is all False)
    readout_v: np.ndarray  # int64, the readout layer's voltage after every timestep
    stats: list[LayerStats]
    u: list[np.ndarray] | None = None  # per-layer state traces when recorded
    v: list[np.ndarray] | None = None
    timing: str = "synchronous"
    spiking_output: bool = False  # the last layer fires: its spike counts, not its voltage, are the logits

    @property
    def logits(self) -> np.ndarray:
        return self.spikes[-1].sum(axis=1) if self.spiking_output else self.readout_v[:, -1, :]

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def spike_counts(self) -> np.ndarray:
        """Spikes per layer and timestep, summed over samples: shape (layers, T)."""
        return np.stack([s.sum(axis=(0, 2)) for s in self.spikes])


def simulate(net: IntNetwork, x_int: np.ndarray, record_state: bool = False, timing: str = "synchronous",
             device: str | None = "cpu", batch_size: int | None = None, threads: int | None = None) -> SimResult:
    """Run every sample of ``x_int`` (samples, inputs), or (samples, T, inputs) for per-timestep input, for
    ``net.timesteps`` steps from zero state.

    ``device``: "cpu" (default), "cuda[:N]", or "auto". ``batch_size``: samples per pass (default on CPU:
    as many as keep the widest layer's state near 1 MiB, 1..1024; on GPU: as many as keep all layers' state
    within 1 GiB); ``threads``: CPU threads (default: torch's). Results depend on neither.
    """
    x = net.input.check(x_int, net.timesteps)
    n = x.shape[0]
    steps = net.timesteps + (max(net.depths()) if timing == "lava" else 0)
    spikes = [np.zeros((n, steps, layer.size), bool) for layer in net.layers]
    traces = {name: [np.zeros((n, steps, layer.size), np.int64) for layer in net.layers]
              for name in (("u", "v") if record_state else ())}
    readout_v = traces["v"][-1] if record_state else np.zeros((n, steps, net.readout.size), np.int64)
    stats = [LayerStats() for _ in net.layers]
    for start, stop, run in run_batches(net, x, record_state, timing, device, batch_size, threads):
        for i in range(len(net.layers)):
            spikes[i][start:stop] = run.spikes[i].cpu().numpy()
            for name, arrays in traces.items():
                arrays[i][start:stop] = run.traces[name][i].cpu().numpy()
            stats[i].merge(run.stats[i].result())
        if not record_state:
            readout_v[start:stop] = run.readout_v.cpu().numpy()
    return SimResult(spikes=spikes, readout_v=readout_v, stats=stats, u=traces.get("u"), v=traces.get("v"),
                     timing=timing, spiking_output=not net.readout.readout)


def align_to_synchronous(net: IntNetwork, result: SimResult) -> SimResult:
    """A Lava-timing result re-indexed to layer-synchronous time: each layer's window starts as many steps
    late as its depth (the same shift ``spikefold.deploy`` applies to what Lava's monitors record)."""
    if result.timing != "lava":
        raise ValueError(f"align_to_synchronous needs a Lava-timing result, got '{result.timing}'")
    T, depths = net.timesteps, net.depths()

    def window(i: int, a: np.ndarray) -> np.ndarray:
        return a[:, depths[i] : depths[i] + T]

    last = len(net.layers) - 1
    return SimResult(
        spikes=[window(i, s) for i, s in enumerate(result.spikes)],
        readout_v=window(last, result.readout_v),
        stats=result.stats,
        u=[window(i, a) for i, a in enumerate(result.u)] if result.u is not None else None,
        v=[window(i, a) for i, a in enumerate(result.v)] if result.v is not None else None,
        timing="synchronous",
        spiking_output=result.spiking_output,
    )


def spike_table(net: IntNetwork, result: SimResult) -> list[dict]:
    """Spikes per layer, per sample and per timestep (means over samples), as plain rows for reports."""
    n = max(len(result.readout_v), 1)
    return [{"layer": layer.name, "neurons": layer.size,
             "spikes_per_sample": float(result.spikes[i].sum()) / n,
             "per_timestep": (result.spikes[i].sum(axis=(0, 2)) / n).tolist()}
            for i, layer in enumerate(net.layers)]
