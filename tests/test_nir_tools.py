"""NIR both ways with the real tools (pyproject's nir-tools extra): networks built, trained briefly and exported by
snnTorch, SpikingJelly and Norse are imported into the integer network, simulated and run in Lava; spikefold's own
export is loaded by snnTorch, SpikingJelly and Norse and predicts what spikefold's simulator predicts."""

from __future__ import annotations

import copy

import nir
import numpy as np
import pytest
import torch

from spikefold.deploy import lava_runner
from spikefold.core.errors import DataError, HardwareRangeError, NIRFileError
from spikefold.export import nir_io
from spikefold.export.intnet import Connection, Dense
from spikefold.export.nir_import import import_graph
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import simulate

snn = pytest.importorskip("snntorch", reason="snnTorch (the nir-tools extra) is not installed; `make test` installs it")
from snntorch.import_nir import import_from_nir  # noqa: E402

from tests import nir_euler, nir_tool_nets  # noqa: E402
from tests.same_runs import assert_same_runs  # noqa: E402

STEPS = 6


@pytest.fixture(scope="module")
def snntorch_mlp(split):
    return nir_tool_nets.snntorch_mlp(split, epochs=2, timesteps=STEPS)


@pytest.fixture(scope="module")
def snntorch_mlp_1(split):
    return nir_tool_nets.snntorch_mlp(split, epochs=1, timesteps=STEPS)


@pytest.fixture(scope="module")
def snntorch_rleaky(split):
    return nir_tool_nets.snntorch_mlp(split, epochs=1, timesteps=STEPS, recurrent=True)


@pytest.fixture(scope="module")
def snntorch_untrained(split):
    return nir_tool_nets.snntorch_mlp(split, epochs=0, timesteps=STEPS)


def _import_and_check(tool_net, split, loihi2):
    """Import, then: the simulator against the tool's own spikes (>= 98 % of each layer's spike slots, >= 95 % of
    predictions at 8-bit weights), and Lava against the simulator on every spike, current and voltage of a few
    samples."""
    x_train, x_test = tool_net.x_train, tool_net.x_test
    net, report, _ = import_graph(tool_net.graph, loihi2, dt=tool_net.dt, timesteps=tool_net.timesteps,
                                  calibration_x=x_train)
    check_state_range(net, net.input.encode(x_train), report)
    assert net.readout.readout == (tool_net.readout is not None), "a spiking last layer stays one, a readout too"
    assert all(layer.max_abs_weight == 254 for layer in report.layers)  # mixed-sign 8-bit, even
    sim = simulate(net, net.input.encode(x_test))
    slots = [float((a == b).mean()) for a, b in zip(tool_net.spikes, sim.spikes)]
    assert len(slots) == len(tool_net.spikes) and min(slots) >= 0.98, slots
    assert (sim.predictions == tool_net.predictions).mean() >= 0.95
    x = net.input.encode(x_test[:6])
    lava = lava_runner.run(net, x, record_state=True)
    assert_same_runs(net, simulate(net, x, record_state=True), lava)
    return net


@pytest.mark.slow
def test_snntorch_mlp_imports_and_runs_exactly_in_lava(snntorch_mlp, split, loihi2):
    _import_and_check(snntorch_mlp, split, loihi2)


def test_snntorch_mlp_with_spike_input_changing_every_step(split, loihi2):
    """Binary input spikes that change every step, as snnTorch networks usually get them: the calibration data's
    time axis makes the input per-timestep binary spikes (InputEncoding.per_timestep, 1 bit)."""
    tool_net = nir_tool_nets.snntorch_mlp(split, epochs=1, timesteps=STEPS, spike_input=True)
    net = _import_and_check(tool_net, split, loihi2)
    assert net.input.per_timestep and net.input.bits == 1


@pytest.fixture(scope="module")
def snntorch_synaptic(split):
    return nir_tool_nets.snntorch_mlp(split, epochs=1, timesteps=STEPS, synaptic=True)


def test_snntorch_synaptic_imports_with_its_current_decay(snntorch_synaptic, split, loihi2):
    """snnTorch's Synaptic (exported as CubaLIF, tau_syn = 2.5 dt): the current's decay 0.6 becomes Loihi's du
    (du + 1 = round(4096 * 0.4)), the Affine's bias a voltage bias plus a first-step pulse into u (the bias
    carried in the current); Lava's stock LIF runs it exactly."""
    net = _import_and_check(snntorch_synaptic, split, loihi2)
    assert [(layer.neurons.du, layer.neurons.dv) for layer in net.layers] == [(1637, 819)] * 2
    assert all(layer.initial is not None and layer.initial.shape == (layer.size, 1) for layer in net.layers)


def test_hand_built_cuba_readout_against_euler(snntorch_synaptic, split, loihi2, tmp_path):
    """A CubaLI readout (no tool writes one): snnTorch's Synaptic graph with its last CubaLIF made a CubaLI of
    the same constants. The integer readout (du and dv both leaking, never firing) predicts what an independent
    Euler reading of the graph (tests/nir_euler.py) predicts from its final voltage, and Lava equals the
    simulator on every spike and state. Written back, the graph holds a CubaLIF and a CubaLI whose Euler reading
    predicts what the simulator does (bar the rounding of the bias's first-step pulse), and spikefold reads the
    identical integer network from it."""
    tool_net = nir_tool_nets.cuba_readout(snntorch_synaptic)
    net = _import_and_check(tool_net, split, loihi2)
    assert net.readout.readout and (net.readout.neurons.du, net.readout.neurons.dv) == (1637, 819)
    path = nir_io.write(net, tmp_path / "cuba.nir")
    written = nir.read(path)
    assert [type(n).__name__ for n in written.nodes.values()].count("CubaLIF") == 1
    assert [type(n).__name__ for n in written.nodes.values()].count("CubaLI") == 1
    x = net.input.encode(split.x_test)
    golden = simulate(net, x, record_state=True)
    assert_same_runs(net, golden, simulate(nir_io.read(path), x, record_state=True))
    final = nir_euler.run(written, split.x_test, STEPS, nir_io.DT)[-1]
    assert (final.argmax(1) == golden.predictions).mean() >= 0.98


def test_hand_built_delay_becomes_a_synaptic_delay(snntorch_mlp_1, split, loihi2, tmp_path):
    """A Delay of 2 timesteps between snnTorch's hidden LIF and the next Affine (no tool writes one) becomes that
    connection's synaptic delay (Lava's DelayDense: 2 steps beyond the Dense's one); the output layer agrees with
    an Euler reading of the graph, Lava (a runtime per sample) with the simulator on every spike and state, and
    the delay goes through spikefold's NIR file (a Delay node, the integer in the metadata) and ONNX."""
    from tests.test_onnx import assert_onnx_equals_simulator

    net = _import_and_check(nir_tool_nets.delayed(snntorch_mlp_1, 2), split, loihi2)
    assert [c.delay for c in net.layers[1].inputs] == [2] and net.delay(1, net.layers[1].inputs[0]) == 2
    written = nir_io.write(net, tmp_path / "delayed.nir")
    assert any(isinstance(node, nir.Delay) for node in nir.read(written).nodes.values())
    x = net.input.encode(split.x_test[:50])
    assert_same_runs(net, simulate(net, x, record_state=True), simulate(nir_io.read(written), x, record_state=True))
    assert_onnx_equals_simulator(net, x)
    odd = nir_tool_nets.delayed(snntorch_mlp_1, 2).graph
    odd.nodes["delay"] = nir.Delay(delay=np.full(48, 1.5e-4))
    with pytest.raises(NIRFileError, match=r"Delay 'delay' holds 0.00015 s, not a whole number of timesteps"):
        import_graph(odd, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train)


def test_float_delay_holds_activity_back_even_past_the_window():
    """The float reference's delayed synapses: a delay of d steps delivers step t's activity at t + d, and one of
    T steps or more delivers nothing within the T steps (it once returned the wrong number of timesteps)."""
    from spikefold.export.float_net import FloatInput

    h = torch.arange(24, dtype=torch.float64).reshape(3, 2, 4)  # (T, batch, in)
    weight = np.eye(4)[:3] * 2.0  # each output twice one input
    for delay in range(6):
        got = FloatInput("x", weight, delay=delay).current(h).numpy()
        want = np.zeros((3, 2, 3))
        for t in range(delay, 3):
            want[t] = 2.0 * h[t - delay, :, :3].numpy()
        np.testing.assert_array_equal(got, want)


def test_snntorch_rleaky_imports_its_recurrent_synapses(snntorch_rleaky, split, loihi2, tmp_path):
    """snnTorch's RLeaky (its recurrent Linear exported as an Affine from the LIF back to itself): a recurrent
    connection of the hidden layer, which reads its own spikes of the previous step, as RLeaky does and as Lava's
    Dense from s_out back to a_in delivers them. Lava (a runtime per sample) equals the simulator on every spike
    and state; the network goes through spikefold's NIR file unchanged and onnxruntime runs it alike."""
    from tests.test_onnx import assert_onnx_equals_simulator

    net = _import_and_check(snntorch_rleaky, split, loihi2)
    assert [c.source for c in net.layers[0].inputs] == ["input", "layer0"] and net.layers[0].recurrent
    loud = copy.deepcopy(net)  # a bias that fires the layer on its own before its first sample reaches Lava
    loud.layers[0].neurons.bias_mant[:] = 4095
    loud.layers[0].neurons.bias_exp[:] = 7
    loud.layers[0].neurons.vth = 100
    with pytest.raises(HardwareRangeError, match=r"layer 'layer0': its bias alone could fire it within the 1 "
                                                 r"step\(s\).*recurrent or delayed synapses of layer 'layer0'"):
        loud.validate(loihi2)
    alone = copy.deepcopy(net)
    alone.layers[0].inputs = alone.layers[0].inputs[1:]
    with pytest.raises(HardwareRangeError, match=r"layer 'layer0' reads only itself"):
        alone.validate(loihi2)
    feedback = copy.deepcopy(net)  # layer0 reading layer1's spikes: too late on Lava's pipeline
    feedback.layers[0].inputs[1] = Connection("layer1", Dense(np.zeros((48, 10), np.int32), 0))
    with pytest.raises(HardwareRangeError, match=r"its input 'layer1' is not the input, an earlier layer or itself.*"
                                                 r"Lava's pipeline delivers a later layer's spikes too late"):
        feedback.validate(loihi2)
    path = nir_io.write(net, tmp_path / "recurrent.nir")
    x = net.input.encode(split.x_test[:50])
    golden = simulate(net, x, record_state=True)
    for written in (path, nir_io.write(net, tmp_path / "snntorch.nir", reader="snntorch")):
        assert_same_runs(net, golden, simulate(nir_io.read(written), x, record_state=True))
    assert_onnx_equals_simulator(net, x)


def test_tools_load_spikefolds_recurrent_graph(snntorch_rleaky, split, loihi2, tmp_path):
    """The imported RLeaky network written back: Norse reads the plain graph (the recurrent Affine from the LIF
    back to itself), snnTorch the graph written for it (`convert --nir-reader snntorch`), and both step the same
    float network: their predictions are equal on every sample, and equal to spikefold's simulator's wherever
    Loihi's truncating decays (which no float graph carries, and which feed back here) do not tip a spike count.
    The plain graph in snnTorch shows why the form exists: its importer sends the layer's input through the
    recurrent weights."""
    from norse.torch import from_nir as norse_from_nir

    from spikefold.cli import main

    tool_net = snntorch_rleaky
    net, _, _ = import_graph(tool_net.graph, loihi2, tool_net.dt, tool_net.timesteps, tool_net.x_train)
    plain = nir_io.write(net, tmp_path / "recurrent.nir")
    for_snntorch = tmp_path / "snntorch.nir"
    assert main(["convert", str(plain), str(for_snntorch), "--nir-reader", "snntorch"]) == 0
    expected = simulate(net, net.input.encode(split.x_test)).predictions
    x = torch.tensor(split.x_test, dtype=torch.float32)

    def predictions(module):
        return nir_tool_nets.summed_output(module, x, net.timesteps).argmax(1)

    norse = predictions(norse_from_nir(nir.read(plain), dt=nir_io.DT))
    snntorch = predictions(import_from_nir(nir.read(for_snntorch)))
    np.testing.assert_array_equal(snntorch, norse)
    assert (norse == expected).mean() >= 0.98, f"{(norse == expected).mean():.2%} of predictions equal"
    assert (predictions(import_from_nir(nir.read(plain))) == expected).mean() < 0.9


@pytest.mark.slow
def test_spikingjelly_cnn_with_pooling_imports_and_runs_exactly_in_lava(split, loihi2):
    _import_and_check(nir_tool_nets.spikingjelly_cnn(split, epochs=2, timesteps=STEPS), split, loihi2)


def test_spikingjelly_conv1d_imports_as_a_conv2d_of_height_1(split, loihi2):
    """SpikingJelly's Conv1d (8 channels, kernel 5, stride 2, padding 2) on the digits as one 64-long signal runs as
    a Conv2d over (1, 1, 64) maps with padding 2 and (8, 1, 5, 5) kernels zero but for their middle row (the
    integer network's one padding pads the height too; the other rows meet only that padding): the same sums,
    so Lava equals the simulator on every spike and state, and the simulator agrees with SpikingJelly as for its
    2-D networks. The zero rows hold no synapse in the core mapping."""
    from spikefold.deploy.lava_compat import ensure_lava
    from spikefold.sim.cores import map_onto_cores
    from tests.test_onnx import assert_onnx_equals_simulator

    ensure_lava()
    import lava.proc.io.source  # noqa: F401  (Lava's runtime fixes the fork start method at import: before training)

    tool_net = nir_tool_nets.spikingjelly_cnn(split, epochs=2, timesteps=STEPS, conv1d=True, padding=2)
    net = _import_and_check(tool_net, split, loihi2)
    synapses = net.layers[0].inputs[0].synapses
    assert synapses.input_shape == (1, 1, 64) and synapses.weights.shape == (8, 1, 5, 5)
    assert (synapses.stride, synapses.padding, net.layers[0].output_shape) == (2, 2, (8, 1, 32))
    assert not synapses.weights[:, :, [0, 1, 3, 4]].any() and synapses.weights[:, :, 2].any()
    unpadded = copy.deepcopy(net)  # the same signal zero-padded by hand, read by kernels of height 1
    conv = unpadded.layers[0].inputs[0].synapses
    conv.weights, conv.padding = conv.weights[:, :, 2:3], 0
    x = net.input.encode(split.x_test[:40])
    padded_x = np.pad(x.reshape(-1, 1, 64), ((0, 0), (0, 0), (2, 2)))
    conv.input_shape, unpadded.input.size = (1, 1, 68), 68
    assert_same_runs(net, simulate(net, x), simulate(unpadded, padded_x.reshape(len(x), -1)), states=False)
    # 8 maps x 32 outputs x 5 taps, less the taps over the signal's padding (2 at the first output, 1 at the last)
    assert sum(core.synapses for core in map_onto_cores(net, loihi2).of_layer(0)) == 8 * (32 * 5 - 3)
    assert_onnx_equals_simulator(net, x)


@pytest.mark.slow
def test_norse_mlp_imports_and_runs_exactly_in_lava(split, loihi2):
    _import_and_check(nir_tool_nets.norse_mlp(split, epochs=3, timesteps=STEPS), split, loihi2)


def test_norse_leaky_readout_imports(split, loihi2):
    """Norse's LIBoxCell as the last layer (exported as LI): a readout that leaks (dv = 4096 dt / tau = 1024) and
    never fires; its final voltage predicts what Norse's does."""
    net = _import_and_check(nir_tool_nets.norse_mlp(split, epochs=3, timesteps=STEPS, leaky_readout=True), split,
                            loihi2)
    assert net.readout.readout and (net.readout.neurons.du, net.readout.neurons.dv) == (4095, 1024)


def test_tools_load_spikefolds_export_and_predict_alike(exported, split, tmp_path):
    """The reverse direction: spikefold's graph in snnTorch (dt fixed at 1e-4), SpikingJelly and Norse (told
    dt = 1e-4); the Output summed over the timesteps is the readout's voltage over its scale."""
    from norse.torch import from_nir as norse_from_nir
    from spikingjelly.activation_based.nir_exchange.from_nir import import_from_nir as sj_from_nir

    _, net, _ = exported
    path = nir_io.write(net, tmp_path / "model.nir")
    expected = simulate(net, net.input.encode(split.x_test)).predictions
    x = torch.tensor(split.x_test, dtype=torch.float32)
    loaders = {"snntorch": import_from_nir, "spikingjelly": lambda g: sj_from_nir(g, dt=nir_io.DT),
               "norse": lambda g: norse_from_nir(g, dt=nir_io.DT)}
    for tool, load in loaders.items():
        logits = nir_tool_nets.summed_output(load(nir.read(path)), x, net.timesteps)
        agree = (logits.argmax(1) == expected).mean()
        assert agree == 1.0, f"{tool} agrees with spikefold's simulator on {agree:.2%} of predictions"


def test_rockpool_loads_the_graph_written_for_it(exported, split, tmp_path):
    """Rockpool 3.1 cannot read spikefold's LIF nodes (it asks them for tau_mem); the graph written for its
    reading (CubaLIF with its exp(-dt/tau) decays, dt set through r, the bias in v_leak) loads and predicts what
    spikefold's simulator does on nearly every sample (Rockpool resets by subtraction and fires several spikes
    a step, which no NIR parameter changes); spikefold reads the same integers back from it. Written by
    `spikefold convert --nir-reader rockpool`."""
    pytest.importorskip("rockpool", reason="Rockpool (the nir-tools extra) is not installed; `make test` installs it")
    from rockpool.nn.modules.torch.nir import from_nir

    from spikefold.cli import main

    _, net, _ = exported
    euler = nir_io.write(net, tmp_path / "euler.nir")
    path = tmp_path / "rockpool.nir"
    assert main(["convert", str(euler), str(path), "--nir-reader", "rockpool"]) == 0
    x = net.input.encode(split.x_test)
    expected = simulate(net, x).predictions
    np.testing.assert_array_equal(simulate(nir_io.read(path), x).predictions, expected)
    steps = torch.tensor(split.x_test, dtype=torch.float32).unsqueeze(1).expand(-1, net.timesteps, -1)
    out = from_nir(nir.read(path))(steps)[0]  # (samples, T, classes), then its state
    agree = (out.detach().sum(1).numpy().argmax(1) == expected).mean()
    assert agree >= 0.97, f"Rockpool agrees with spikefold's simulator on {agree:.2%} of predictions"
    with pytest.raises(AttributeError, match="tau_mem"):  # what the Euler graph gets from it
        from_nir(nir.read(euler))


def test_bad_imports_are_named(snntorch_untrained, split, loihi2):
    graph = snntorch_untrained.graph
    with pytest.raises(NIRFileError, match=r"dt = 0.*implausible.*snnTorch 1.0: 1e-4"):
        import_graph(graph, loihi2, dt=0, timesteps=STEPS, calibration_x=split.x_train)
    with pytest.raises(NIRFileError, match=r"node '1' \(LIF\) has tau = 0.0005 s, shorter than dt = 0.01"):
        import_graph(graph, loihi2, dt=1e-2, timesteps=STEPS, calibration_x=split.x_train)
    with pytest.raises(DataError, match=r"shape \(10, 32\).*\(samples, 64\)"):
        import_graph(graph, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train[:10, :32])
    with pytest.raises(DataError, match=r"spans \[0, 16\].*\[0, 1\]"):
        import_graph(graph, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train * 16)
    leaky = nir.NIRGraph(nodes=dict(graph.nodes), edges=list(graph.edges))
    lif = leaky.nodes["1"]
    leaky.nodes["1"] = nir.LIF(tau=lif.tau, r=lif.r, v_leak=np.full_like(lif.v_leak, 0.1),
                               v_threshold=lif.v_threshold, v_reset=lif.v_reset)
    with pytest.raises(NIRFileError, match=r"node '1' \(LIF\) has v_leak = 0.1; only v_leak = 0"):
        import_graph(leaky, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train)
    twice = nir.NIRGraph(nodes={**graph.nodes, "input2": nir.Input(input_type={"input": np.array([64])})},
                         edges=graph.edges + [("input2", "0")], type_check=False)
    with pytest.raises(NIRFileError, match=r"2 Input nodes"):
        import_graph(twice, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train)
    loop = nir.NIRGraph(nodes=dict(graph.nodes), edges=graph.edges + [("3", "2")], type_check=False)
    with pytest.raises(NIRFileError, match=r"has 2 inputs and 1 outputs.*feedback from a later layer would reach it "
                                           r"too late on Lava's pipeline"):
        import_graph(loop, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train)
    threshold = nir.NIRGraph(nodes=dict(graph.nodes, **{"3": nir.Threshold(threshold=np.ones(10))}),
                             edges=list(graph.edges), type_check=False)
    with pytest.raises(NIRFileError, match=r"node '3' \(Threshold\) forgets its voltage every step.*dv = 4096"):
        import_graph(threshold, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train)
    first = graph.nodes["0"]  # the first Affine as a Conv1d over the 64 features as one signal, padded "same"
    same = nir.NIRGraph(nodes=dict(graph.nodes, **{
        "input": nir.Input(input_type={"input": np.array([1, 64])}),
        "0": nir.Conv1d(input_shape=64, weight=np.ones((48, 1, 3)), stride=1, padding="same", dilation=1, groups=1,
                        bias=first.bias)}), edges=list(graph.edges), type_check=False)
    with pytest.raises(NIRFileError, match=r"Conv1d '0': padding = 'same'; one whole number >= 0 is accepted"):
        import_graph(same, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train)


def test_import_command(snntorch_untrained, split, tmp_path, capsys):
    from spikefold.cli import main

    graph = snntorch_untrained.graph
    nir.write(tmp_path / "snn.nir", graph)
    np.savez(tmp_path / "calib.npz", x=split.x_train[:200])
    args = ["import", str(tmp_path / "snn.nir"), "--timesteps", str(STEPS), "--calibration",
            str(tmp_path / "calib.npz"), "--out", str(tmp_path / "loihi.nir")]
    assert main(args + ["--dt", "1e-4"]) == 0
    net = nir_io.read(tmp_path / "loihi.nir")
    assert [layer.size for layer in net.layers] == [48, 10] and net.timesteps == STEPS
    out = capsys.readouterr().out
    assert "layer0" in out and "layer1" in out  # the per-layer quantisation report
    assert main(args + ["--dt", "1e-4"]) == 2  # the output exists: kept without --force
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--dt", "5", "--force"]) == 2
    assert "dt = 5.0 is missing or implausible" in " ".join(capsys.readouterr().err.split())
