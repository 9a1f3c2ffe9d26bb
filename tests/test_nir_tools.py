"""NIR both ways with the real tools (pyproject's nir-tools extra): networks built, trained briefly and exported by
snnTorch and SpikingJelly are imported into the integer network, simulated and run in Lava; spikefold's own
export is loaded by snnTorch, SpikingJelly and Norse and predicts what spikefold's simulator predicts."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from spikefold.deploy import lava_runner
from spikefold.errors import DataError, NIRFileError
from spikefold.export import nir_io
from spikefold.export.nir_import import import_graph
from spikefold.sim.simulator import check_state_range, simulate

snn = pytest.importorskip("snntorch")
from snntorch import utils as snn_utils  # noqa: E402
from snntorch.export_nir import export_to_nir  # noqa: E402
from snntorch.import_nir import import_from_nir  # noqa: E402

STEPS = 6


def _snntorch_mlp(split, epochs: int):
    """An snnTorch MLP (64-48-10, zero reset in the step it fires, as its NIR file says), trained on spike counts."""
    torch.manual_seed(0)

    def leaky(n):
        return snn.Leaky(beta=torch.full((n,), 0.8), threshold=torch.ones(n), init_hidden=True,
                         reset_mechanism="zero", reset_delay=False)

    net = torch.nn.Sequential(torch.nn.Linear(64, 48), leaky(48), torch.nn.Linear(48, 10), leaky(10))

    def run(x):
        snn_utils.reset(net)
        spikes = [[], []]
        for _ in range(STEPS):
            hidden = net[1](net[0](x))
            spikes[0].append(hidden)
            spikes[1].append(net[3](net[2](hidden)))
        return [torch.stack(s, 1) for s in spikes]  # (samples, T, neurons) per layer

    x, y = torch.tensor(split.x_train, dtype=torch.float32), torch.tensor(split.y_train)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(run(x[idx])[1].sum(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        spikes = [s.numpy().astype(bool) for s in run(torch.tensor(split.x_test, dtype=torch.float32))]
    return export_to_nir(net, x[:1], model_name="snntorch", ignore_dims=[0]), spikes


@pytest.fixture(scope="module")
def snntorch_mlp(split):
    return _snntorch_mlp(split, epochs=2)


@pytest.fixture(scope="module")
def snntorch_untrained(split):
    return _snntorch_mlp(split, epochs=0)


def agreement(net, split, tool_spikes):
    """The integer simulator against the tool's own spikes: per layer, the share of equal spike slots; and the
    share of equal predictions (spike counts of the last layer)."""
    sim = simulate(net, net.input.encode(split.x_test))
    slots = [float((a == b).mean()) for a, b in zip(tool_spikes, sim.spikes)]
    predictions = float((sim.predictions == tool_spikes[-1].sum(1).argmax(1)).mean())
    return sim, slots, predictions


@pytest.mark.slow
def test_snntorch_mlp_imports_and_runs_exactly_in_lava(snntorch_mlp, split, loihi2):
    graph, tool_spikes = snntorch_mlp
    net, report, _ = import_graph(graph, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train)
    check_state_range(net, net.input.encode(split.x_train), report)
    assert not net.readout.readout, "snnTorch's last Leaky stays a spiking layer"
    assert [layer.max_abs_weight for layer in report.layers] == [254, 254]  # mixed-sign 8-bit, even
    sim, slots, predictions = agreement(net, split, tool_spikes)
    assert min(slots) >= 0.98, slots
    assert predictions >= 0.95, predictions
    x = net.input.encode(split.x_test[:6])
    lava = lava_runner.run(net, x)
    golden = simulate(net, x)
    for a, b in zip(golden.spikes, lava.spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(golden.readout_v, lava.readout_v)
    np.testing.assert_array_equal(golden.predictions, lava.predictions)


def _run_tool(module, x: torch.Tensor, steps: int) -> np.ndarray:
    """Sum over the steps of what a tool's imported module outputs for static input (nirtorch's executors
    return (output, state); the state goes back in)."""
    total, state = 0, None
    for _ in range(steps):
        out = module(x) if state is None else module(x, state)
        if isinstance(out, tuple):
            out, state = out
        total = total + out.detach()
    return total.numpy()


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
        logits = _run_tool(load(nir.read(path)), x, net.timesteps)
        agree = (logits.argmax(1) == expected).mean()
        assert agree == 1.0, f"{tool} agrees with spikefold's simulator on {agree:.2%} of predictions"


def test_bad_imports_are_named(snntorch_untrained, split, loihi2):
    graph, _ = snntorch_untrained
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
    with pytest.raises(NIRFileError, match=r"has 2 inputs and 1 outputs.*recurrent edges"):
        import_graph(loop, loihi2, dt=1e-4, timesteps=STEPS, calibration_x=split.x_train)


def test_import_command(snntorch_untrained, split, tmp_path, capsys):
    from spikefold.cli import main

    graph, _ = snntorch_untrained
    nir.write(tmp_path / "snn.nir", graph)
    np.savez(tmp_path / "calib.npz", x=split.x_train[:200])
    args = ["import", str(tmp_path / "snn.nir"), "--timesteps", str(STEPS), "--calibration",
            str(tmp_path / "calib.npz"), "--out", str(tmp_path / "loihi.nir")]
    assert main(args + ["--dt", "1e-4"]) == 0
    net = nir_io.read(tmp_path / "loihi.nir")
    assert [layer.size for layer in net.layers] == [48, 10] and net.timesteps == STEPS
    out = capsys.readouterr().out
    assert "layer0" in out and "layer1" in out  # the per-layer quantisation report
    assert main(args + ["--dt", "5"]) == 2
    assert "dt = 5.0 is missing or implausible" in " ".join(capsys.readouterr().err.split())
