"""SANA-FE (``pip install sanafe==2.2.9``, SLAM Lab, UT Austin) as a second energy and latency engine: the
integer network built as a SANA-FE network on SANA-FE's own Loihi architecture (the release's
``sanafe/examples/loihi.yaml``), mapped core for core as :mod:`spikefold.sim.cores` maps it, and run.

SANA-FE's ``loihi_lif`` soma computes in floating point, ``v = trunc(v * leak_decay * 64) / 64 + bias + u``,
``u = u * input_decay + input``, fire where ``v > threshold``. In units of 1/64 of spikefold's voltage integer
every term is a dyadic fraction held exactly in a double, so the spikes stay exact when:

- voltage decay: ``leak_decay = (4096 - dv) / 4096``; SANA-FE's truncation toward zero is Lava's;
- current: only a current that forgets every step (``du = 4095``, ``input_decay = 0``): SANA-FE does not
  truncate the current's decay, so other ``du`` are refused;
- weights: ``W_eff * 2**weight_exp`` per synapse; Lava floors the sum after a negative exponent, SANA-FE does not,
  so every effective weight of a spike-driven connection must be a multiple of ``2**-weight_exp``; for the graded
  input (the same every step) the floor's residue is one extra synapse per neuron from an extra input neuron;
- bias: ``(bias_mant << bias_exp) / 64``;
- resets: "zero" is SANA-FE's hard reset to 0, "subtract" its soft reset; one threshold for all timesteps;
- graded input: SANA-FE's messages carry no payload, so each non-zero input is an input neuron that fires at
  steps 0..T-1, and its value is multiplied into its synapses' weights: the network is built again per sample;
- the Dense delay: SANA-FE, like Lava, delivers a spike one step after it is sent, so a layer at depth d starts
  its window at step d; Lava's ``LIFReset`` (as :mod:`spikefold.deploy` sets it) zeroes the layer's state at
  every step congruent to d modulo T, and so does the engine (it runs step by step); a skip connection's extra
  delay of k steps is a chain of k relay populations (weight 1, threshold 0.5, no leak), one step each, since
  SANA-FE 2.2.9's ``accumulator_with_delay`` dendrite delivered nothing when tried here (the relays' work is
  counted in SANA-FE's figures); an initial potential (MP-Init) is an input neuron firing the step before each
  window starts.

It runs ``T + D`` steps per sample and returns every spike and the readout voltage, in Lava's timing, so the
caller compares them with ``simulate(..., timing="lava")``; and SANA-FE's energy (synapse, soma, network) and
simulated time per step. 24-bit wrap and saturation are not modelled by SANA-FE: a run whose simulator states
wrapped is refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spikefold.core.errors import SanaFeError
from spikefold.export.intnet import INPUT, Conv2d, IntNetwork
from spikefold.sim.cores import CoreMap, grid
from spikefold.sim.energy import EnergyReport
from spikefold.sim.simulator import SimResult

RELEASE = "sanafe 2.2.9"
INPUTS_PER_CORE = 1024  # loihi.yaml's replicated input units per core
NEURONS_PER_CORE = 1024  # loihi.yaml's max_neurons_supported


@dataclasses.dataclass
class SanaFeRun:
    """What SANA-FE measured, per inference (means over samples), beside the spikes it produced."""

    spikes: list[np.ndarray]  # per layer, bool (samples, T + D, neurons), Lava's timing
    readout_v: np.ndarray  # int64 (samples, T + D, classes), spikefold's voltage units
    energy_j: float
    energy_by_unit_j: dict[str, float]  # synapse, dendrite, soma, network
    latency_s: float
    step_s: list[float]
    step_energy_j: list[float]
    synaptic_ops: float
    messages: float
    neurons_updated: float
    neurons_fired: float
    release: str = RELEASE


def _import():
    try:
        import sanafe
    except ImportError:
        raise SanaFeError("the SANA-FE engine needs the optional extra: pip install 'spikefold[sanafe]' "
                          "(sanafe==2.2.9)") from None
    return sanafe


def check_representable(net: IntNetwork, reference: SimResult | None = None) -> None:
    """A :class:`SanaFeError` naming the layer and parameter where SANA-FE's LIF cannot give the same spikes."""
    if net.input.per_timestep:
        raise SanaFeError("the network takes input that changes every timestep; the SANA-FE engine builds the "
                          "static input's per-sample network only")
    for layer in net.layers:
        neu = layer.neurons
        if neu.du != 4095:
            raise SanaFeError(f"layer '{layer.name}': du = {neu.du}; SANA-FE's loihi_lif does not truncate the "
                              "current's decay as Loihi does, so only du = 4095 (a current that forgets every step) "
                              "runs exactly there")
        if np.ndim(neu.vth):
            raise SanaFeError(f"layer '{layer.name}' has a per-timestep threshold schedule; SANA-FE's loihi_lif has "
                              "one threshold")
        for c in layer.inputs + ([] if layer.initial is None else [_initial_connection(layer)]):
            exp = c.synapses.weight_exp
            w = c.synapses.effective_weights()
            if exp < 0 and c.source != INPUT and np.any(w % (1 << -exp)):
                raise SanaFeError(
                    f"layer '{layer.name}': weights from '{c.source}' with weight_exp {exp} are not all multiples "
                    f"of {1 << -exp}; Lava floors their sum after the shift and SANA-FE does not, so the spikes "
                    "would differ")
    if reference is not None:
        for layer, stats in zip(net.layers, reference.stats):
            if stats.u_wraps or stats.v_saturations:
                raise SanaFeError(f"layer '{layer.name}': its 24-bit state wrapped or saturated in the simulator; "
                                  "SANA-FE computes in doubles and would not")


def _initial_connection(layer):
    from spikefold.export.intnet import Connection

    return Connection("initial", layer.initial)


def _edges(net: IntNetwork, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, destination, weight) of every actual synapse of a connection, weight in SANA-FE's units
    (``W_eff * 2**weight_exp``); a convolution's from its kernel and geometry, never unrolled."""
    syn = c.synapses
    scale = 2.0 ** syn.weight_exp
    w = syn.effective_weights()
    if not isinstance(syn, Conv2d):
        dst, src = np.indices(w.shape).reshape(2, -1)
        return src, dst, w.ravel() * scale
    c_in, h, wd = syn.input_shape
    c_out, ho, wo = syn.output_shape
    src, dst, weight = [], [], []
    for i, j in np.ndindex(w.shape[2:]):
        y = np.arange(ho) * syn.stride + i - syn.padding
        x = np.arange(wo) * syn.stride + j - syn.padding
        oy, ox = np.nonzero((y[:, None] >= 0) & (y[:, None] < h) & (x[None, :] >= 0) & (x[None, :] < wd))
        if not len(oy):
            continue
        co, ci, k = np.meshgrid(np.arange(c_out), np.arange(c_in), np.arange(len(oy)), indexing="ij")
        src.append(((ci * h + y[oy][k]) * wd + x[ox][k]).ravel())
        dst.append(((co * ho + oy[k]) * wo + ox[k]).ravel())
        weight.append(w[co, ci, i, j].ravel() * scale)
    return np.concatenate(src), np.concatenate(dst), np.concatenate(weight)


def run(net: IntNetwork, x_int: np.ndarray, core_map: CoreMap, reference: SimResult | None = None) -> SanaFeRun:
    """Run every sample of ``x_int`` through SANA-FE; ``reference`` (the simulator's run) is checked for state
    wrap first."""
    sanafe = _import()
    check_representable(net, reference)
    arch = sanafe.load_loihi()
    hw_cores = arch.cores()
    inputs_needed = -(-net.input.size // INPUTS_PER_CORE) + sum(layer.initial is not None for layer in net.layers)
    if len(core_map.cores) + inputs_needed > len(hw_cores):
        raise SanaFeError(f"the mapping needs {len(core_map.cores)} cores and {inputs_needed} input cores; SANA-FE's "
                          f"Loihi architecture ({RELEASE}) has {len(hw_cores)} (one chip)")
    if max(c.neurons for c in core_map.cores) > NEURONS_PER_CORE:
        raise SanaFeError(f"the {core_map.hw_config} mapping puts up to {max(c.neurons for c in core_map.cores)} "
                          f"neurons on a core; SANA-FE's Loihi cores hold {NEURONS_PER_CORE}: use --hw-config "
                          "loihi1_sanafe (or loihi1)")
    if any(c.groups > 1 for c in core_map.cores):
        raise SanaFeError("the mapping splits a fan-in into partial sums, which SANA-FE's LIF cannot combine; "
                          "use a hw_config with larger cores")
    T, depths = net.timesteps, net.depths()
    steps = T + max(depths)
    edges = {(i, k): _edges(net, c) for i, layer in enumerate(net.layers) for k, c in enumerate(layer.inputs)}
    chip = sanafe.SpikingChip(arch)
    n = len(x_int)
    spikes = [np.zeros((n, steps, layer.size), bool) for layer in net.layers]
    readout_v = np.zeros((n, steps, net.readout.size), np.int64)
    totals = dict.fromkeys(("synapse", "dendrite", "soma", "network"), 0.0)
    counts = dict.fromkeys(("spikes", "packets_sent", "neurons_updated", "neurons_fired"), 0.0)
    step_s, step_energy = np.zeros(steps), np.zeros(steps)
    try:
        _run_samples(sanafe, chip, net, x_int, core_map, hw_cores, edges, depths, spikes, readout_v, totals, counts,
                     step_s, step_energy)
    except RuntimeError as exc:  # SANA-FE's kernel reports what it cannot simulate as a bare runtime error
        raise SanaFeError(f"SANA-FE ({RELEASE}) could not run the network: {exc}") from None
    per = max(n, 1)
    return SanaFeRun(
        spikes=spikes, readout_v=readout_v, energy_j=sum(totals.values()) / per,
        energy_by_unit_j={k: v / per for k, v in totals.items()}, latency_s=float(step_s.sum()) / per,
        step_s=(step_s / per).tolist(), step_energy_j=(step_energy / per).tolist(),
        synaptic_ops=counts["spikes"] / per, messages=counts["packets_sent"] / per,
        neurons_updated=counts["neurons_updated"] / per, neurons_fired=counts["neurons_fired"] / per)


def _run_samples(sanafe, chip, net, x_int, core_map, hw_cores, edges, depths, spikes, readout_v, totals, counts,
                 step_s, step_energy) -> None:
    """Each sample on its own network, step by step, filling the arrays and sums the caller holds."""
    T, steps = net.timesteps, net.timesteps + max(depths)
    for sample, x in enumerate(np.asarray(x_int, np.int64)):
        snet, groups = _build(sanafe, net, x, core_map, hw_cores, edges, depths)
        chip.reset()  # a fresh sample: zero potentials and SANA-FE's step counter
        try:
            chip.load(snet)
        except sanafe.HardwareMappingError as exc:
            raise SanaFeError(f"SANA-FE's Loihi architecture ({RELEASE}) cannot hold the mapping: {exc}") from None
        mapped = chip.mapped_neuron_groups
        for s in range(steps):
            for i, layer in enumerate(net.layers):
                # LIFReset zeroes the layer's state every T steps from its depth, as Lava's does (so also in the
                # fill steps before its first window, and at the next window in the drain steps).
                if s > 0 and (s - depths[i]) % T == 0:
                    for neuron in mapped[layer.name]:
                        neuron.set_attributes(model_attributes={"potential": 0.0})
            r = chip.sim(1, spike_trace=True, potential_trace=True, perf_trace=True)
            for address in r["spike_trace"][0]:
                name, _, index = str(address).rpartition(".")
                if name in groups:
                    spikes[groups[name]][sample, s, int(index)] = True
            readout_v[sample, s] = np.rint(np.asarray(r["potential_trace"][0]) * 64).astype(np.int64)
            for key in totals:
                totals[key] += r["energy"][key]
            for key in counts:
                counts[key] += r[key]
            step_s[s] += r["sim_time"]
            step_energy[s] += r["energy"]["total"]


def _build(sanafe, net: IntNetwork, x: np.ndarray, core_map: CoreMap, hw_cores, edges, depths):
    """One sample's SANA-FE network, mapped: the input neurons on the first cores, then spikefold's cores."""
    T, steps = net.timesteps, net.timesteps + max(depths)
    snet = sanafe.Network()
    inp = snet.create_neuron_group(INPUT, net.input.size, model_attributes={})
    for i, neuron in enumerate(inp.neurons):
        neuron.set_attributes(soma_hw_name=f"loihi_inputs[{i % INPUTS_PER_CORE}]",
                              model_attributes={"spikes": [bool(x[i])] * T + [False] * (steps - T)})
        neuron.map_to_core(hw_cores[i // INPUTS_PER_CORE])
    first_core = -(-net.input.size // INPUTS_PER_CORE)
    next_core = first_core + len(core_map.cores)  # relays go on the cores after spikefold's
    groups, sources = {}, {INPUT: inp}
    for i, layer in enumerate(net.layers):
        neu = layer.neurons
        group = snet.create_neuron_group(
            layer.name, layer.size, soma_hw_name="loihi_lif", log_spikes=True, log_potential=layer.readout,
            default_synapse_hw_name="loihi_conv_synapse" if isinstance(layer.inputs[0].synapses, Conv2d)
            else "loihi_dense_synapse",
            default_dendrite_hw_name="loihi_dendrites",
            model_attributes={"threshold": float(neu.vth), "reset": 0.0,
                              "reset_mode": "hard" if neu.reset == "zero" else "soft",
                              "leak_decay": (4096 - neu.dv) / 4096, "input_decay": 0.0})
        bias = neu.effective_bias() / 64.0
        for j, neuron in enumerate(group.neurons):
            if bias[j]:
                neuron.set_attributes(model_attributes={"bias": float(bias[j])})
        shape = grid(layer.output_shape)
        for core in core_map.of_layer(i):
            for j in core.tile.indices(shape):
                group.neurons[int(j)].map_to_core(hw_cores[first_core + core.index])
        for k, c in enumerate(layer.inputs):
            src, dst, weight = edges[(i, k)]
            if c.source == INPUT:  # the graded value rides on the weight; zero inputs never fire
                weight = weight * x[src]
            source = sources[c.source]
            for step in range(net.delay(i, c, depths)):  # a skip connection's extra delay: one relay per step
                source, next_core = _relay(snet, source, f"{layer.name}.{c.source}.relay{step}", hw_cores, next_core)
            source.connect_neurons_sparse(group, {"w": weight.tolist()}, list(zip(src.tolist(), dst.tolist())))
            if c.source == INPUT and c.synapses.weight_exp < 0:
                # Lava floors the graded sum after the negative shift; the input is the same every step, so the
                # floor's residue is one more synapse per neuron from an input neuron firing with the input.
                exact = c.synapses.forward(x[None, :])[0].astype(float)
                residue = exact - np.bincount(dst, weights=weight, minlength=layer.size)
                fix = snet.create_neuron_group(f"{layer.name}.floor", 1, model_attributes={})
                fix.neurons[0].set_attributes(soma_hw_name="loihi_inputs[1]",
                                              model_attributes={"spikes": [True] * T + [False] * (steps - T)})
                fix.map_to_core(hw_cores[len(hw_cores) - 1 - i])
                fix.connect_neurons_sparse(group, {"w": residue.tolist()}, [(0, j) for j in range(layer.size)])
        if layer.initial is not None:  # MP-Init: one spike that arrives as each window starts
            pulse = snet.create_neuron_group(f"{layer.name}.initial", 1, model_attributes={})
            pulse.neurons[0].set_attributes(
                soma_hw_name="loihi_inputs[0]",
                model_attributes={"spikes": [s + 1 >= depths[i] and (s + 1 - depths[i]) % T == 0
                                             for s in range(steps)]})
            pulse.map_to_core(hw_cores[len(hw_cores) - 1 - i])
            w = layer.initial.effective_weights()[:, 0] * 2.0 ** layer.initial.weight_exp
            pulse.connect_neurons_sparse(group, {"w": w.tolist()}, [(0, j) for j in range(layer.size)])
        groups[layer.name] = i
        sources[layer.name] = group
    if next_core > len(hw_cores) - len(net.layers):
        raise SanaFeError(f"the mapping and its delay relays need {next_core} cores; SANA-FE's Loihi architecture "
                          f"({RELEASE}) has {len(hw_cores)} (one chip), {len(net.layers)} of them kept for input pulses")
    return snet, groups


def _relay(snet, source, name: str, hw_cores, next_core: int):
    """A copy of ``source`` one step later: a neuron per source neuron that fires the step after it receives a
    spike (weight 1, threshold 0.5, no leak, reset to 0)."""
    size = len(source.neurons)
    relay = snet.create_neuron_group(name, size, soma_hw_name="loihi_lif", default_synapse_hw_name="loihi_dense_synapse",
                                     model_attributes={"threshold": 0.5, "reset": 0.0, "reset_mode": "hard",
                                                       "leak_decay": 0.0, "input_decay": 0.0})
    for j, neuron in enumerate(relay.neurons):
        neuron.map_to_core(hw_cores[min(next_core + j // INPUTS_PER_CORE, len(hw_cores) - 1)])
    source.connect_neurons_sparse(relay, {"w": [1.0] * size}, [(j, j) for j in range(size)])
    return relay, next_core + -(-size // INPUTS_PER_CORE)


def compare(run: SanaFeRun, lava_timed: SimResult, report: EnergyReport) -> dict:
    """SANA-FE's figures beside spikefold's, per inference, and whether every spike and readout voltage agree
    (``lava_timed``: the simulator's run in Lava's timing)."""
    spikes_equal = all(np.array_equal(a, b) for a, b in zip(run.spikes, lava_timed.spikes))
    by_op = report.energy_by_operation_j
    return {
        "release": run.release,
        "spikes_equal": bool(spikes_equal),
        "readout_equal": bool(np.array_equal(run.readout_v, lava_timed.readout_v)),
        "spikes_per_layer": {"sanafe": [float(s.sum()) / max(len(s), 1) for s in run.spikes],
                             "spikefold": [float(s.sum()) / max(len(s), 1) for s in lava_timed.spikes]},
        "sanafe": {"energy_j": run.energy_j, "by_unit_j": run.energy_by_unit_j, "latency_s": run.latency_s,
                   "step_s": run.step_s, "step_energy_j": run.step_energy_j, "synaptic_ops": run.synaptic_ops,
                   "messages": run.messages, "neurons_updated": run.neurons_updated,
                   "neurons_fired": run.neurons_fired},
        "spikefold": {"energy_j": report.dynamic_j, "by_operation_j": by_op, "latency_s": report.latency_s,
                      "step_s": report.step_s, "step_energy_j": report.step_energy_j,
                      "synaptic_ops": sum(layer.synaptic_ops for layer in report.layers),
                      "messages": sum(layer.messages_out for layer in report.layers),
                      "hw_config": report.hw_config},
    }
