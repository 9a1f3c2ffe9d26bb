"""Core mapping, activity counts, energy and latency on a network whose spikes are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from spikefold.deploy import lava_runner
from spikefold.core.errors import MappingError
from spikefold.export import hw_config
from spikefold.export.intnet import INPUT, LIF, VTH_NEVER, Connection, Dense, InputEncoding, IntNetwork, Layer
from spikefold.sim import energy
from spikefold.sim.cores import map_onto_cores
from spikefold.sim.simulator import simulate


def _known_network() -> IntNetwork:
    """Hidden neuron 0 has a positive bias and threshold 0: it fires every step. Neurons 1 and 2 never do.
    Weights are zero, so the input does not matter to the spikes."""
    hidden = Layer("hidden", [Connection(INPUT, Dense(np.zeros((3, 2), np.int32), 0, num_message_bits=8))],
                   LIF(du=4095, dv=100, vth=0, bias_mant=np.array([1, 0, -1]), bias_exp=np.zeros(3, int)), 1.0)
    readout = Layer("readout", [Connection("hidden", Dense(np.array([[3, 0, 0], [0, 5, 0]], np.int32), 0))],
                    LIF(du=4095, dv=0, vth=VTH_NEVER, bias_mant=np.zeros(2, int), bias_exp=np.zeros(2, int)), 1.0,
                    readout=True)
    return IntNetwork(InputEncoding(2, 255.0, 8), [hidden, readout], timesteps=3)


def _config_with_limits(tmp_path, **limits) -> hw_config.HwConfig:
    """loihi2.yaml with some per-core limits replaced: small enough to split the tiny test networks."""
    raw = hw_config.load("loihi2").raw
    for key, value in limits.items():
        raw["limits"][key] = dict(raw["limits"][key], value=value)
    path = tmp_path / "small_cores.yaml"
    path.write_text(yaml.safe_dump(raw))
    return hw_config.load(path)


def test_counts_energy_and_latency_per_core_by_hand(tmp_path):
    net = _known_network()
    x = np.array([[5, 0], [0, 0]])  # one non-zero input in sample 0, none in sample 1
    result = simulate(net, x)
    assert result.spikes[0][:, :, 0].all() and not result.spikes[0][:, :, 1:].any()
    # Readout voltage: 3 spikes x weight 3, each shifted << 6 into the current.
    np.testing.assert_array_equal(result.logits, [[3 * 3 * 64, 0], [3 * 3 * 64, 0]])
    hw = _config_with_limits(tmp_path, neurons_per_core=2)  # the 3 hidden neurons need 2 cores: {0}, {1, 2}
    report = energy.estimate(net, x, result, hw, hw_config.load("ann_45nm"))
    e = {k: hw.figure("energy", k).value for k in hw.raw["energy"]}
    t = {k: hw.figure("timing", k).value for k in hw.raw["timing"]}
    core0, core1, core2 = report.cores
    assert [(c.layer, c.neurons) for c in report.cores] == [("hidden", 1), ("hidden", 2), ("readout", 2)]
    # Per inference: 1 non-zero input in 2 samples, every step: 0.5 messages per step into every hidden core.
    assert (core0.messages_in, core0.synaptic_ops, core0.spikes, core0.messages_out) == (1.5, 1.5, 3, 3)
    assert (core1.messages_in, core1.synaptic_ops, core1.spikes, core1.messages_out) == (1.5, 3.0, 0, 0)
    # The readout core receives neuron 0's spike each step; each drives its 2 neurons' synapses.
    assert (core2.messages_in, core2.synaptic_ops, core2.neuron_updates, core2.spikes) == (3, 6, 6, 0)
    # Work in a layer's window (hidden: steps 1..3, readout at depth 2: steps 2..4) and, outside it, the idle
    # neuron updates.
    window = {0: 0.5 * t["message_in"] + 0.5 * t["synaptic_op"] + t["neuron_spike"] + t["spike_message"],
              1: 0.5 * t["message_in"] + 1.0 * t["synaptic_op"] + 2 * t["neuron_update"],
              2: 1.0 * t["message_in"] + 2.0 * t["synaptic_op"] + 2 * t["neuron_update"]}
    idle = {0: t["neuron_update"], 1: 2 * t["neuron_update"], 2: 2 * t["neuron_update"]}
    first = {0: 1, 1: 1, 2: 2}
    busy = {c: [window[c] if first[c] <= s < first[c] + 3 else idle[c] for s in range(5)] for c in window}
    for core in report.cores:
        assert core.busy_s == pytest.approx(busy[core.core])
    # A step lasts as long as its slowest core, then the barrier; the period is T steps of the busiest window.
    steps = [max(busy[c][s] for c in busy) + t["barrier_sync"] for s in range(5)]
    assert report.step_s == pytest.approx(steps)
    assert report.step_s[0] < report.step_s[2] and report.step_s[4] < report.step_s[2]  # fill and drain are cheap
    assert report.latency_s == pytest.approx(sum(steps))  # T steps + one per layer of Dense delay, each its own
    period = 3 * (max(window.values()) + t["barrier_sync"])
    assert report.period_s == pytest.approx(period)
    assert core0.energy_j == pytest.approx(1.5 * e["synaptic_op"] + 3 * e["neuron_update_active"]
                                           + 3 * e["spike_message"])
    assert core1.energy_j == pytest.approx(3 * e["synaptic_op"] + 6 * e["neuron_update"])
    hidden, readout = report.layers
    assert (hidden.cores, hidden.synaptic_ops, hidden.spikes, hidden.firing_rate) == (2, 4.5, 3, pytest.approx(1 / 3))
    assert hidden.spikes_per_timestep == [1, 1, 1]
    assert hidden.energy_j == pytest.approx(core0.energy_j + core1.energy_j)
    assert report.dynamic_j == pytest.approx(core0.energy_j + core1.energy_j + core2.energy_j)
    assert report.static_j == pytest.approx(e["static_power"] * period)
    assert sum(report.step_energy_j) == pytest.approx(report.dynamic_j)
    assert report.ann_45nm_j == pytest.approx((6 + 6) * 4.6e-12)
    assert report.snn_45nm_j == pytest.approx(6 * 3 * 4.6e-12 + 6 * 0.9e-12)


def _known_residual_network() -> IntNetwork:
    """The known network's hidden layer, a relay neuron that fires every step (bias 1, threshold 0), and a
    readout that reads the relay and, skipping it, the hidden layer."""
    known = _known_network()
    hidden = known.layers[0]
    relay = Layer("relay", [Connection("hidden", Dense(np.zeros((1, 3), np.int32), 0))],
                  LIF(du=4095, dv=100, vth=0, bias_mant=np.array([1]), bias_exp=np.zeros(1, int)), 1.0)
    readout = Layer("readout", [Connection("relay", Dense(np.array([[7], [0]], np.int32), 0)),
                                Connection("hidden", Dense(np.array([[3, 0, 0], [0, 5, 0]], np.int32), 0))],
                    known.readout.neurons, 1.0, readout=True)
    return IntNetwork(known.input, [hidden, relay, readout], timesteps=3)


def test_counts_a_skip_connection_by_hand():
    """A layer read by two layers sends to both; a layer that reads two receives both; the deepest path sets
    the Dense delay in the latency."""
    net = _known_residual_network()
    assert net.depths() == [1, 2, 3] and net.delay(2, net.readout.inputs[1]) == 1
    x = np.array([[5, 0], [0, 0]])
    result = simulate(net, x)
    assert result.spikes[1].all()
    np.testing.assert_array_equal(result.logits, [[(3 * 7 + 3 * 3) * 64, 0]] * 2)
    hw = hw_config.load("loihi2")
    report = energy.estimate(net, x, result, hw, hw_config.load("ann_45nm"))
    e, t = hw.figure("energy", "synaptic_op").value, hw.figure("timing", "synaptic_op").value
    hidden, relay, readout = report.cores
    assert (hidden.messages_in, hidden.synaptic_ops, hidden.spikes, hidden.messages_out) == (1.5, 4.5, 3, 6)
    assert hidden.output_axons == 3 * 2  # one per neuron and destination core: the relay's and the readout's
    assert (relay.messages_in, relay.synaptic_ops, relay.spikes, relay.messages_out) == (3, 3, 3, 3)
    assert (readout.messages_in, readout.synaptic_ops, readout.input_axons) == (6, 12, 4)
    assert report.layers[2].fan_in == 4 and report.layers[2].energy_j > 12 * e
    t_in, t_update = hw.figure("timing", "message_in").value, hw.figure("timing", "neuron_update").value
    # The readout (depth 3) works on timestep 0 at step 3: 2 messages in, 4 synaptic ops, 2 neurons.
    assert readout.busy_s[3] == pytest.approx(2 * t_in + 4 * t + 2 * t_update)
    assert readout.busy_s[:3] == pytest.approx([2 * t_update] * 3)
    assert len(report.step_s) == 3 + 3 and report.latency_s == pytest.approx(sum(report.step_s))
    assert report.ann_45nm_j == pytest.approx((6 + 3 + 2 + 6) * 4.6e-12)
    assert report.snn_45nm_j == pytest.approx(6 * 3 * 4.6e-12 + (3 + 12) * 0.9e-12)
    from_lava = energy.estimate(net, x, lava_runner.run(net, x), hw, hw_config.load("ann_45nm"))
    assert from_lava.to_dict() == report.to_dict()


def test_loihi1_has_no_static_power_and_says_so():
    net = _known_network()
    x = np.array([[5, 0]])
    report = energy.estimate(net, x, simulate(net, x), hw_config.load("loihi1"), hw_config.load("ann_45nm"))
    assert report.static_j == 0 and any("static" in note for note in report.notes)
    assert report.total_j == report.dynamic_j > 0


def test_mapping_splits_by_synapse_memory_and_output_axons(tmp_path):
    net = _known_network()  # hidden: fan-in 2, 3 neurons; readout: fan-in 3, 2 neurons
    # 3 synapses per core hold one neuron of either layer (2 and 3 synapses per neuron).
    by_synapses = map_onto_cores(net, _config_with_limits(tmp_path, synapses_per_core=3))
    assert [c.neurons for c in by_synapses.of_layer(0)] == [1, 1, 1]
    assert [c.neurons for c in by_synapses.of_layer(1)] == [1, 1]
    by_axons = map_onto_cores(net, _config_with_limits(tmp_path, output_axons_per_core=1, synapses_per_core=6))
    # The readout fits one core (6 synapses); each hidden neuron needs one output axon per readout core.
    assert len(by_axons.of_layer(1)) == 1 and [c.neurons for c in by_axons.of_layer(0)] == [1, 1, 1]
    for core_map, hw in ((by_synapses, 3), (by_axons, 6)):
        assert all(c.synapses <= hw for c in core_map.cores)
        assert all(c.output_axons <= core_map.limits["output_axons_per_core"].value for c in core_map.cores)


def test_mapping_respects_every_limit_of_the_shipped_configs(exported):
    _, net, _ = exported
    for name in ("loihi2", "loihi1"):
        core_map = map_onto_cores(net, hw_config.load(name))
        lim = {k: f.value for k, f in core_map.limits.items()}
        for i, layer in enumerate(net.layers):
            cores = core_map.of_layer(i)
            assert sum(c.neurons for c in cores) == layer.size
            assert max(c.neurons for c in cores) - min(c.neurons for c in cores) <= 1
            nxt = sum(len(core_map.of_layer(k)) for k in net.consumers(i))
            for c in cores:
                assert c.neurons <= lim["neurons_per_core"]
                assert c.synapses == c.neurons * layer.fan_in <= lim["synapses_per_core"]
                assert c.input_axons == layer.fan_in <= lim["input_axons_per_core"]
                assert c.output_axons == c.neurons * nxt <= lim["output_axons_per_core"]


def test_a_layer_no_core_can_hold_is_a_named_error(tmp_path):
    net = _known_network()
    # 2 input axons: even one readout neuron with its 3 inputs split 3 ways needs 1 + 2 partial-sum axons.
    with pytest.raises(MappingError, match=r"layer 'readout' cannot be partitioned .* needs 3 input_axons where a "
                                           r"core has 2"):
        map_onto_cores(net, _config_with_limits(tmp_path, input_axons_per_core=2))
    with pytest.raises(MappingError, match=r"layer 'hidden' cannot be partitioned .* needs 2 output_axons where a "
                                           r"core has 1; shrink the layers it sends to"):
        map_onto_cores(net, _config_with_limits(tmp_path, synapses_per_core=3, output_axons_per_core=1))


def test_a_fan_in_over_the_synapse_memory_is_split_into_partial_sums(tmp_path):
    """2 synapses a core, 3 inputs a readout neuron: its inputs are split 3 ways, the last core fires."""
    net = _known_network()
    core_map = map_onto_cores(net, _config_with_limits(tmp_path, synapses_per_core=2))
    readout = core_map.of_layer(1)
    assert [(c.groups, c.group, c.neurons, c.synapses, c.fires) for c in readout] == [
        (3, 0, 2, 2, False), (3, 1, 2, 2, False), (3, 2, 2, 2, True)]
    assert readout[-1].input_axons == 1 + 2 * 2  # its own input and the two other cores' partial sums
    assert any("partial sums" in note for note in core_map.notes)
    x = np.array([[5, 0], [0, 0]])
    report = energy.estimate(net, x, simulate(net, x), _config_with_limits(tmp_path, synapses_per_core=2),
                             hw_config.load("ann_45nm"))
    # Hidden neuron 0 spikes every step, and only the first slice (input 0) holds its synapses.
    assert [c.synaptic_ops for c in report.cores[-3:]] == [6, 0, 0]
    assert [c.messages_out for c in report.cores[-3:]] == [6, 6, 0]  # 2 partial sums a step, 3 steps


def test_energy_from_lava_equals_energy_from_sim():
    net = _known_network()
    x = np.array([[5, 0], [0, 0], [255, 255]])
    loihi, ref = hw_config.load("loihi2"), hw_config.load("ann_45nm")
    from_sim = energy.estimate(net, x, simulate(net, x), loihi, ref)
    from_lava = energy.estimate(net, x, lava_runner.run(net, x), loihi, ref)
    assert from_sim.to_dict() == from_lava.to_dict()


def test_every_figure_names_its_unit_and_source_and_loihi2_marks_its_proxies():
    for name in hw_config.available():
        cfg = hw_config.load(name)
        for section in ("energy", "timing", "limits"):
            for key in cfg.raw.get(section, {}):
                fig = cfg.figure(section, key)
                assert fig.source and fig.unit, f"{name}: {section}.{key} needs a unit and a source"
    # Intel has published no Loihi 2 per-operation energy or time: every such figure must say it is a proxy.
    loihi2 = hw_config.load("loihi2")
    for section in ("energy", "timing"):
        for key in loihi2.raw[section]:
            assert loihi2.figure(section, key).proxy, f"loihi2 {section}.{key} must be marked as a proxy"


@pytest.mark.parametrize("value, problem", [(None, "is missing"), ("23.6 pJ", "must be a number >= 0"),
                                            (-1e-12, "must be a number >= 0")])
def test_a_bad_energy_figure_is_a_named_error_with_exit_status_2(exported, tmp_path, value, problem, capsys):
    from spikefold.cli import main
    from spikefold.export import nir_io

    raw = hw_config.load("loihi2").raw
    if value is None:
        del raw["energy"]["synaptic_op"]
    else:
        raw["energy"]["synaptic_op"]["value"] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(hw_config.ConfigError, match=rf"energy\.synaptic_op\.value.*{problem}"):
        hw_config.load(bad).figure("energy", "synaptic_op")
    path = str(nir_io.write(exported[1], tmp_path / "m.nir"))
    assert main(["sim", path, "--samples", "5", "--hw-config", str(bad)]) == 2
    assert "energy.synaptic_op" in capsys.readouterr().err


def test_energy_md_opens_with_the_totals_and_neurobench_metrics(exported, split, tmp_path):
    from spikefold.cli import main
    from spikefold.export import nir_io

    path = str(nir_io.write(exported[1], tmp_path / "m.nir"))
    assert main(["sim", path, "--samples", "10", "--out", str(tmp_path / "sim")]) == 0
    text = (tmp_path / "sim" / "energy.md").read_text()
    for needle in ("| energy per inference |", "| latency (T + D = ", "| accuracy |", "Effective_ACs",
                   "ActivationSparsity", "## Steps"):
        assert needle in text, needle
    import json

    e = json.loads((tmp_path / "sim" / "energy.json").read_text())
    assert len(e["step_s"]) == len(e["step_energy_j"]) == exported[1].timesteps + max(exported[1].depths())
    assert e["accuracy"] is not None and e["latency_s"] == pytest.approx(sum(e["step_s"]))
