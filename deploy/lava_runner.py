"""Build Lava processes for an integer network and run them on a target.

Every dense connection maps onto Lava's stock ``Dense`` (graded for the analog input), or ``DelayDense`` where
a connection skips layers and needs extra synaptic delay to stay in step; every convolution onto spikefold's
``ConvSynapses`` (a kernel, with its delay); every population onto ``LIFReset``, or spikefold's
``ScheduledLIF`` for what the stock LIF cannot express. Connections into one population all drive
its ``a_in`` port, which sums them. Samples are streamed back to back, ``T`` steps each, in one Lava run.
Lava's Dense delays by one step, so a layer at depth ``d`` (``IntNetwork.depths``) works on sample ``k``,
timestep ``tau`` at Lava step ``k T + tau + 1 + d``; its ``LIFReset`` clears u and v at the first of those
steps (``reset_offset = (1 + d) mod T``), which is the state reset between samples. Monitors record what was
sent; the result is re-aligned to the simulator's layer-synchronous timing so the two compare array for array.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.deploy.lava_compat import ensure_lava
from spikefold.deploy.lava_runtime import lava_run
from spikefold.core.errors import ConfigError, TargetError
from spikefold.export.intnet import INPUT, Conv2d, Dense, IntNetwork, Layer
from spikefold.sim.simulator import SimResult

TARGETS = ("loihi2-sim", "loihi2")
# How a layer's neurons run on Lava: Lava's stock LIFReset computes Loihi's basic neuron; what a neuron needs beyond
# it (LIF.needs: a threshold per timestep, a subtractive reset) takes spikefold's ScheduledLIF. A layer's other
# needs (Layer.needs: an initial potential, graded input) run on stock processes (a pulse through (n, 1)
# synapses; a Dense with num_message_bits).
STOCK, CUSTOM = "stock (hardware-compatible)", "custom (simulation only)"


@dataclasses.dataclass
class _Built:
    root: object  # one process of the network, from which Lava finds the rest
    neurons: dict[int, object]  # layer index -> LIFReset or ScheduledLIF
    monitors: dict[tuple[int, str], object]  # (layer index, var name) -> Monitor
    steps: int


def check_target(target: str) -> None:
    """Fail early, with the fix, for a target that is unknown or cannot be reached here."""
    if target not in TARGETS:
        raise TargetError(f"unknown target '{target}'; choose one of: {', '.join(TARGETS)}")
    if target == "loihi2":
        ensure_lava()
        from lava.utils import loihi

        if not loihi.is_installed():
            raise TargetError(
                "target 'loihi2' needs Intel's lava-loihi extension, which is not installed here "
                "(it is distributed to INRC members). Use --target loihi2-sim for Lava's bit-accurate "
                "CPU simulation of the same network.")


def process_kind(layer: Layer) -> str:
    """:data:`STOCK` where Lava's LIFReset runs the layer's neurons, :data:`CUSTOM` where ScheduledLIF must."""
    return CUSTOM if layer.neurons.needs else STOCK


def lava_process(layer: Layer) -> str:
    """The Lava process that runs the layer's neurons, and whether hardware can run it: "stock
    (hardware-compatible): LIFReset", or "custom (simulation only): ScheduledLIF for" the first of the neuron's
    needs."""
    needs = layer.neurons.needs
    return f"{CUSTOM}: ScheduledLIF for {needs[0]}" if needs else f"{STOCK}: LIFReset"


def lava_processes(net: IntNetwork) -> dict[str, str]:
    """:func:`lava_process` of every layer, by name."""
    return {layer.name: lava_process(layer) for layer in net.layers}


def _run_config(target: str):
    from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg

    if target == "loihi2-sim":
        return Loihi2SimCfg(select_tag="fixed_pt")
    return Loihi2HwCfg()


def _synapses(synapses: Dense, delay: int, name: str):
    """The one Lava process for a connection's ``synapses``, holding what it receives ``delay`` steps beyond
    the Dense's one: Lava's stock Dense (or DelayDense) for a Dense, spikefold's ConvSynapses for a Conv2d
    (Lava's own Conv is not Loihi's arithmetic: see ``spikefold.deploy.conv_synapses``)."""
    common = dict(weight_exp=int(synapses.weight_exp), num_weight_bits=int(synapses.num_weight_bits),
                  num_message_bits=int(synapses.num_message_bits), name=name)
    weights = np.asarray(synapses.weights, np.int32)
    if isinstance(synapses, Conv2d):
        from spikefold.deploy.conv_synapses import ConvSynapses

        return ConvSynapses(weights=weights, input_shape=synapses.input_shape, stride=synapses.stride,
                            padding=synapses.padding, output_size=synapses.shape[0], delay=delay, **common)
    from lava.proc.dense.process import DelayDense, Dense as LavaDense

    if delay == 0:
        return LavaDense(weights=weights, **common)
    delays = np.full(weights.shape, delay, dtype=int)  # Lava checks for dtype int
    return DelayDense(weights=weights, delays=delays, **common)


def _sent(net: IntNetwork, source: str, values: np.ndarray, depths: list[int], steps: int) -> np.ndarray:
    """What ``source`` sends, step by step, as a RingBuffer's (size, steps) data: the encoded input (at depth
    0), or a layer's recorded spikes (samples, T, neurons) at that layer's depth ``d``, so sample k's timestep
    tau goes out at Lava step k T + tau + 1 + d, as it would from the whole network."""
    n, T = len(values), net.timesteps
    depth = 0 if source == INPUT else depths[net.index(source)]
    data = np.zeros((values.shape[-1], steps), np.int32)
    if source == INPUT and not net.input.per_timestep:  # static input: the same vector every timestep
        data[:, : n * T] = np.repeat(values.T, T, axis=1)
    else:
        data[:, depth : depth + n * T] = values.reshape(n * T, -1).T
    return data


def _build(net: IntNetwork, sources: dict[str, np.ndarray], layers: list[int], record_state: bool) -> _Built:
    """Lava processes for ``layers`` (indices, in order), each driven by its connections: from another built
    layer's neurons, or from a RingBuffer replaying ``sources[name]`` (the encoded input, or a layer's recorded
    spikes) at the step that source would send it in the whole network. Every layer keeps its place in the
    whole network's timing (depth, reset offset, synaptic delays), so a part runs exactly as it does within
    the whole."""
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIFReset
    from lava.proc.monitor.process import Monitor

    n = len(next(iter(sources.values())))
    steps_per_sample, depths = net.timesteps, net.depths()
    steps = n * steps_per_sample + max(depths[i] for i in layers)
    senders, rings = {}, []
    for name, values in sources.items():
        ring = RingBuffer(data=_sent(net, name, values, depths, steps))
        senders[name] = ring.s_out
        rings.append(ring)
    neurons, monitors = {}, {}
    for index in layers:
        layer = net.layers[index]
        neu, depth = layer.neurons, depths[index]
        # The layer starts each sample at Lava step k T + depth + 1 (one step of delay per Dense on its path).
        offset = (depth + 1) % steps_per_sample
        common = dict(shape=(neu.size,), du=int(neu.du), dv=int(neu.dv),
                      bias_mant=np.asarray(neu.bias_mant, np.int32), bias_exp=np.asarray(neu.bias_exp, np.int32),
                      name=f"{layer.name}.lif")
        if not layer.neurons.needs:
            lif = LIFReset(vth=int(neu.vth), reset_interval=steps_per_sample, reset_offset=offset, **common)
        else:
            from spikefold.deploy.scheduled_lif import ScheduledLIF

            lif = ScheduledLIF(vth=neu.vth, reset=neu.reset, timesteps=steps_per_sample, offset=offset, **common)
        senders[layer.name] = lif.s_out  # before its inputs: a recurrent connection reads it
        for c in layer.inputs:
            dense = _synapses(c.synapses, net.delay(index, c, depths), f"{layer.name}.from.{c.source}")
            senders[c.source].connect(dense.s_in)
            dense.a_out.connect(lif.a_in)
        if layer.initial is not None:
            # MP-Init re-encoded on stock processes: one spike sent the step before each sample's first step
            # reaches the neurons through the initial-potential synapses exactly then.
            pulses = np.zeros((1, steps), np.int32)
            pulses[0, depth - 1 + np.arange(n) * steps_per_sample] = 1
            pulse_source = RingBuffer(data=pulses)
            initial = _synapses(layer.initial, 0, f"{layer.name}.initial")
            pulse_source.s_out.connect(initial.s_in)
            initial.a_out.connect(lif.a_in)
        probes = [] if layer.readout else ["s_out"]
        if index == len(net.layers) - 1:  # the last layer's voltage (a readout's is the logits)
            probes.append("v")
        if record_state:
            probes = ["s_out", "u", "v"]
        for var in probes:
            monitor = Monitor()
            monitor.probe(getattr(lif, var), steps)
            monitors[(index, var)] = monitor
        neurons[index] = lif
    return _Built(rings[0], neurons, monitors, steps)


def _execute(net: IntNetwork, sources: dict[str, np.ndarray], layers: list[int], target: str,
             record_state: bool) -> dict[tuple[int, str], np.ndarray]:
    """Build and run ``layers``; per (layer index, var) what the monitors recorded, as (samples, T, neurons)
    in layer-synchronous time. A recurrent or delayed connection would carry a sample's last spikes into the
    next sample's first steps (a reset clears u and v, not what is in flight), so networks with one run a Lava
    runtime per sample."""
    check_target(target)
    ensure_lava()
    n = len(next(iter(sources.values())))
    if n > 1 and any(net.layers[i].spans_samples for i in layers):
        parts = [_run_once(net, {k: v[i : i + 1] for k, v in sources.items()}, layers, target, record_state)
                 for i in range(n)]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return _run_once(net, sources, layers, target, record_state)


def _run_once(net: IntNetwork, sources: dict[str, np.ndarray], layers: list[int], target: str,
              record_state: bool) -> dict[tuple[int, str], np.ndarray]:
    """One Lava runtime over all of ``sources``' samples (see :func:`_execute`)."""
    built = _build(net, sources, layers, record_state)
    n, steps_per_sample, depths = len(next(iter(sources.values()))), net.timesteps, net.depths()
    try:
        with lava_run(built.root, _run_config(target), built.steps):
            recorded = {}
            for (index, var), monitor in built.monitors.items():
                lif = built.neurons[index]
                rows = np.asarray(monitor.get_data()[lif.name][var])
                # The layer works on sample k, timestep tau at Lava step k T + tau + 1 + depth, which the monitor
                # stores in row k T + tau + depth.
                start = depths[index]
                window = rows[start : start + n * steps_per_sample]
                recorded[(index, var)] = window.reshape(n, steps_per_sample, -1)
    except Exception as exc:
        if target != "loihi2" or isinstance(exc, TargetError):
            raise
        raise TargetError(f"target 'loihi2' could not be reached or run ({type(exc).__name__}: {exc}); check the "
                          "board and lava-loihi's settings, or use --target loihi2-sim") from exc
    return recorded


def run(net: IntNetwork, x_int: np.ndarray, target: str = "loihi2-sim", record_state: bool = False) -> SimResult:
    """Run ``x_int`` (samples, inputs), or (samples, T, inputs) for per-timestep input, through Lava; the
    result is aligned to the simulator's timing."""
    x = net.input.check(x_int, net.timesteps)
    recorded = _execute(net, {INPUT: x}, list(range(len(net.layers))), target, record_state)
    n, steps_per_sample = len(x), net.timesteps
    spikes = []
    for index, layer in enumerate(net.layers):
        if (index, "s_out") in recorded:
            spikes.append(recorded[(index, "s_out")].astype(bool))
        else:
            spikes.append(np.zeros((n, steps_per_sample, layer.size), bool))
    last = len(net.layers) - 1
    readout_v = recorded[(last, "v")].astype(np.int64)
    u = v = None
    if record_state:
        u = [recorded[(i, "u")].astype(np.int64) for i in range(len(net.layers))]
        v = [recorded[(i, "v")].astype(np.int64) for i in range(len(net.layers))]
    return SimResult(spikes=spikes, readout_v=readout_v, stats=[], u=u, v=v, spiking_output=not net.readout.readout)


@dataclasses.dataclass
class LayerRun:
    """One layer's run on its own: spikes (samples, T, neurons), and u, v when recorded (always v for the
    readout, whose voltage is its output)."""

    spikes: np.ndarray
    u: np.ndarray | None
    v: np.ndarray | None


def run_layer(net: IntNetwork, index: int, inputs: dict[str, np.ndarray], target: str = "loihi2-sim",
              record_state: bool = False) -> LayerRun:
    """Run layer ``index`` alone, driven by ``inputs``: for each of its sources, the encoded input (as
    :func:`run` takes it) or that layer's spikes (samples, T, neurons) in layer-synchronous time, each
    through the layer's own synapses and delays. Its result is aligned like :func:`run`'s."""
    layer = net.layers[index]
    needed = set(layer.sources)
    if set(inputs) != needed:
        raise ConfigError(f"layer '{layer.name}' reads {sorted(needed)}; got spikes for {sorted(inputs)}")
    sources = {name: (net.input.check(values, net.timesteps) if name == INPUT else np.asarray(values))
               for name, values in inputs.items()}
    recorded = _execute(net, sources, [index], target, record_state)
    n = len(next(iter(sources.values())))
    spikes = (recorded[(index, "s_out")].astype(bool) if (index, "s_out") in recorded
              else np.zeros((n, net.timesteps, layer.size), bool))
    state = {var: recorded[(index, var)].astype(np.int64) if (index, var) in recorded else None for var in ("u", "v")}
    return LayerRun(spikes, state["u"], state["v"])


def check_chunk(chunk: int) -> None:
    """A named error for a chunk size (``--chunk``) below one sample."""
    if chunk < 1:
        raise ConfigError(f"--chunk must be >= 1 sample, got {chunk}")


def chunk_bounds(samples: int, chunk: int) -> list[tuple[int, int]]:
    """(first sample, end) of each chunk of ``chunk`` samples, in order."""
    check_chunk(chunk)
    return [(start, min(start + chunk, samples)) for start in range(0, samples, chunk)]


def run_in_chunks(net: IntNetwork, x_int: np.ndarray, target: str = "loihi2-sim", chunk: int = 100,
                  record_state: bool = False, on_chunk=None, store=None) -> SimResult:
    """Run ``x_int`` in chunks of ``chunk`` samples, one Lava runtime each (stopped before the next starts);
    ``on_chunk(done)`` is called after each chunk run with the samples run so far, for progress bars.

    With ``store`` (validation's ``ChunkStore``), a chunk the store holds is loaded instead of run, and each chunk
    run is saved there before the next starts, so that an interrupted run can resume."""
    bounds = chunk_bounds(len(x_int), chunk)
    check_target(target)
    parts, done = [], 0
    for k, (start, stop) in enumerate(bounds):
        key = None if store is None else store.key(k)
        if key is not None and store.has(key):
            parts.append(store.load(key))
            continue
        parts.append(run(net, x_int[start:stop], target, record_state))
        if key is not None:
            store.save(key, parts[-1])
        done += stop - start
        if on_chunk is not None:
            on_chunk(done)
    return concatenate(parts)


def concatenate(parts: list[SimResult]) -> SimResult:
    def cat(lists):
        return [np.concatenate(arrays) for arrays in zip(*lists)]

    return SimResult(
        spikes=cat([p.spikes for p in parts]),
        readout_v=np.concatenate([p.readout_v for p in parts]),
        stats=[],
        u=cat([p.u for p in parts]) if parts[0].u is not None else None,
        v=cat([p.v for p in parts]) if parts[0].v is not None else None,
        spiking_output=parts[0].spiking_output,
    )
