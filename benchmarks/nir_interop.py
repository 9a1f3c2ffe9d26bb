"""NIR both ways, with the real tools, on digits (static input every step).

Import: networks built, trained and exported by snnTorch 1.0 (MLP 64-48-10, on static input and on binary
input spikes that change every step; of Synaptic neurons, exported as CubaLIF; with an RLeaky hidden layer,
exported with a recurrent Affine), SpikingJelly 2.0 (conv 8, 2x2 average pooling, 10; Conv1d 8 channels,
kernel 5, stride 2) and Norse 1.1 (MLP 64-48-10, ending in spiking neurons or in an LI readout), and two
hand-built graphs (the Synaptic graph's last layer made a CubaLI readout; the snnTorch MLP with a Delay of 2
steps before its second Affine), whose float run is an Euler reading of the graph (tests/nir_euler.py), are
imported with ``spikefold.export.nir_import`` at 8-bit weights, simulated by spikefold's integer simulator and
run in Lava. Reported: the tool's own float accuracy, the integer simulator's, Lava's (on --lava-samples
samples, with whether every spike, current and voltage equals the simulator's), the share of each layer's
spike slots where the simulator and the tool agree, and the share of predictions.

Export: spikefold's digits MLP (64-48-10, T = 4), exported by ``nir_io.write``, loaded by snnTorch, SpikingJelly
and Norse (told dt = 1e-4 where they take one); the Output summed over the timesteps is their logits. Reported:
each tool's accuracy and its agreement with spikefold's simulator on predictions; for Rockpool and Sinabs,
what they compute, or the error they stop with; Rockpool also on the graph written for its reading
(``nir_io.write(..., reader="rockpool")``). Then the imported RLeaky network written back and loaded by Norse and
snnTorch (also in the form written for snnTorch, ``reader="snntorch"``). ``--only recurrent`` runs that part
alone and replaces its rows in an existing JSON file.

    .venv/bin/python benchmarks/nir_interop.py          # writes benchmarks/results/nir_interop.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nir
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.nir_tool_nets

from spikefold.core import files  # noqa: E402
from spikefold.deploy import lava_runner  # noqa: E402
from spikefold.deploy.validation import compare  # noqa: E402
from spikefold.export import hw_config, nir_io  # noqa: E402
from spikefold.export.fold import fold  # noqa: E402
from spikefold.export.nir_import import import_graph  # noqa: E402
from spikefold.export.quantise import quantise  # noqa: E402
from spikefold.export.state_range import check_state_range  # noqa: E402
from spikefold.sim.simulator import simulate  # noqa: E402
from spikefold.train.data import digits  # noqa: E402
from spikefold.train.loop import TrainConfig, train  # noqa: E402
from spikefold.train.models import ModelConfig  # noqa: E402
from tests import nir_tool_nets  # noqa: E402


def _lava(net, x_int: np.ndarray) -> tuple[bool, np.ndarray]:
    """Whether Lava equals the simulator on every spike, current, voltage and readout voltage; Lava's
    predictions."""
    lava, golden = lava_runner.run(net, x_int, record_state=True), simulate(net, x_int, record_state=True)
    return compare(net, golden, lava).exact, lava.predictions


def import_direction(split, hw, epochs: int, lava_samples: int, rleaky) -> list[dict]:
    """Each tool's network imported and run; ``rleaky``: snnTorch's RLeaky network (trained once, for
    :func:`recurrent_export` too). The hand-built graphs derive from the trained ones without changing them."""
    rows = []
    mlp = nir_tool_nets.snntorch_mlp(split, epochs=epochs)
    synaptic = nir_tool_nets.snntorch_mlp(split, epochs=epochs, synaptic=True)
    builds = (lambda: mlp, lambda: nir_tool_nets.snntorch_mlp(split, epochs=epochs, spike_input=True),
              lambda: synaptic, lambda: nir_tool_nets.cuba_readout(synaptic), lambda: rleaky,
              lambda: nir_tool_nets.delayed(mlp, 2), lambda: nir_tool_nets.spikingjelly_cnn(split, epochs=epochs),
              lambda: nir_tool_nets.spikingjelly_cnn(split, epochs=epochs, conv1d=True),
              lambda: nir_tool_nets.norse_mlp(split, epochs=epochs),
              lambda: nir_tool_nets.norse_mlp(split, epochs=epochs, leaky_readout=True))
    for build in builds:
        tool_net = build()
        net, report, _ = import_graph(tool_net.graph, hw, tool_net.dt, tool_net.timesteps, tool_net.x_train)
        check_state_range(net, net.input.encode(tool_net.x_train), report)
        x = net.input.encode(tool_net.x_test)
        sim = simulate(net, x)
        lava_equal, lava_pred = _lava(net, x[:lava_samples])
        rows.append({
            "tool": tool_net.tool, "network": tool_net.network, "timesteps": tool_net.timesteps,
            "tool_float_accuracy": float((tool_net.predictions == split.y_test).mean()),
            "int_sim_accuracy": float((sim.predictions == split.y_test).mean()),
            "lava_accuracy": float((lava_pred == split.y_test[:lava_samples]).mean()),
            "lava_samples": lava_samples, "lava_equals_sim": bool(lava_equal),
            "spike_slot_agreement": [float((a == b).mean()) for a, b in zip(tool_net.spikes, sim.spikes)],
            "prediction_agreement": float((sim.predictions == tool_net.predictions).mean()),
            "weight_rel_error": [q.weight_rel_error for q in report.layers],
        })
    return rows


def export_direction(split, hw, lava_samples: int, out: Path) -> list[dict]:
    from norse.torch import from_nir as norse_from_nir
    from snntorch.import_nir import import_from_nir as snntorch_from_nir
    from spikingjelly.activation_based.nir_exchange.from_nir import import_from_nir as sj_from_nir

    result = train(ModelConfig(hidden=(64, 48), timesteps=4), TrainConfig(epochs=12), split, out=out / "trained")
    net, report = quantise(fold(result.model), hw, split.x_train)
    check_state_range(net, net.input.encode(split.x_train), report)
    path = nir_io.write(net, out / "model.nir")
    x_int = net.input.encode(split.x_test)
    sim = simulate(net, x_int)
    lava_equal, lava_pred = _lava(net, x_int[:lava_samples])
    base = {"network": "spikefold MLP 64-48-10", "timesteps": net.timesteps,
            "int_sim_accuracy": float((sim.predictions == split.y_test).mean()),
            "lava_accuracy": float((lava_pred == split.y_test[:lava_samples]).mean()),
            "lava_samples": lava_samples, "lava_equals_sim": bool(lava_equal)}
    x = torch.tensor(split.x_test, dtype=torch.float32)
    runners = {"snntorch": lambda g: nir_tool_nets.summed_output(snntorch_from_nir(g), x, net.timesteps),
               "spikingjelly": lambda g: nir_tool_nets.summed_output(sj_from_nir(g, dt=nir_io.DT), x, net.timesteps),
               "norse": lambda g: nir_tool_nets.summed_output(norse_from_nir(g, dt=nir_io.DT), x, net.timesteps),
               "rockpool": lambda g: _rockpool_logits(g, x, net.timesteps),
               "sinabs": lambda g: _sinabs_logits(g, x, net.timesteps)}
    rockpool_path = nir_io.write(net, out / "model-rockpool.nir", reader="rockpool")
    runners["rockpool (graph written for it)"] = lambda _: _rockpool_logits(nir.read(rockpool_path), x, net.timesteps)
    rows = []
    for tool, run in runners.items():
        try:
            pred = run(nir.read(path)).argmax(1)
        except Exception as exc:  # what the tool itself says
            rows.append(base | {"tool": tool, "tool_accuracy": None, "prediction_agreement": None,
                                "cannot": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append(base | {"tool": tool, "tool_accuracy": float((pred == split.y_test).mean()),
                            "prediction_agreement": float((pred == sim.predictions).mean())})
    return rows


def recurrent_export(split, hw, tool_net, out: Path) -> list[dict]:
    """snnTorch's RLeaky network ``tool_net`` imported (as in :func:`import_direction`), written back by
    ``nir_io.write``: the plain graph (its recurrent synapses an Affine from the LIF back to itself) loaded by
    Norse and by snnTorch, and the graph written for snnTorch (``reader="snntorch"``) by snnTorch: their
    predictions (spike counts of the last layer) against spikefold's simulator."""
    from norse.torch import from_nir as norse_from_nir
    from snntorch.import_nir import import_from_nir as snntorch_from_nir

    net, _, _ = import_graph(tool_net.graph, hw, tool_net.dt, tool_net.timesteps, tool_net.x_train)
    sim = simulate(net, net.input.encode(split.x_test))
    x = torch.tensor(split.x_test, dtype=torch.float32)
    rows = []
    for tool, reader, load in (("norse", "euler", lambda g: norse_from_nir(g, dt=nir_io.DT)),
                               ("snntorch", "euler", snntorch_from_nir), ("snntorch", "snntorch", snntorch_from_nir)):
        path = nir_io.write(net, out / f"recurrent_{reader}.nir", reader=reader)
        pred = nir_tool_nets.summed_output(load(nir.read(path)), x, net.timesteps).argmax(1)
        rows.append({"tool": tool, "reader": reader,
                     "network": tool_net.network + f" (imported, written back, reader={reader})",
                     "tool_accuracy": float((pred == split.y_test).mean()),
                     "int_sim_accuracy": float((sim.predictions == split.y_test).mean()),
                     "prediction_agreement": float((pred == sim.predictions).mean())})
    return rows


def _rockpool_logits(graph, x: torch.Tensor, steps: int) -> np.ndarray:
    from rockpool.nn.modules.torch.nir import from_nir

    model = from_nir(graph)
    out = model(x.unsqueeze(1).expand(-1, steps, -1))[0]  # (batch, time, features); then its state
    return out.detach().sum(1).numpy()


def _sinabs_logits(graph, x: torch.Tensor, steps: int) -> np.ndarray:
    """Sinabs's squeezed layers take (batch * time, features)."""
    import sinabs

    model = sinabs.from_nir(graph, batch_size=len(x))
    out = model(x.unsqueeze(1).expand(-1, steps, -1).reshape(-1, x.shape[1]))
    out = out[0] if isinstance(out, tuple) else out
    return out.detach().reshape(len(x), steps, -1).sum(1).numpy()


def _print_recurrent(rows: list[dict]) -> None:
    print(f"\n{'export':8} {'tool':13} {'network':84} {'int sim':>8} {'tool':>8} {'predictions':>11}")
    for r in rows:
        print(f"{'':8} {r['tool']:13} {r['network']:84} {r['int_sim_accuracy'] * 100:7.2f}% "
              f"{r['tool_accuracy'] * 100:7.2f}% {r['prediction_agreement'] * 100:10.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of the tools' networks")
    parser.add_argument("--lava-samples", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/nir_interop.json")
    parser.add_argument("--only", choices=("recurrent",), default=None,
                        help="run only the recurrent export rows and replace them in an existing --out")
    args = parser.parse_args()
    split, hw = digits(), hw_config.load("loihi2")
    started = time.time()
    rleaky = nir_tool_nets.snntorch_mlp(split, epochs=args.epochs, recurrent=True)
    if args.only:
        with tempfile.TemporaryDirectory() as work:
            recurrent = recurrent_export(split, hw, rleaky, Path(work))
        _print_recurrent(recurrent)
        result = json.loads(Path(args.out).read_text())
        result["recurrent_export"] = recurrent
        result["recurrent_export_run"] = {"seconds": round(time.time() - started, 1),
                                          "load_average": os.getloadavg()}
        files.write_text(args.out, json.dumps(result, indent=2))
        print(f"\nupdated {args.out}")
        return
    imported = import_direction(split, hw, args.epochs, args.lava_samples, rleaky)
    with tempfile.TemporaryDirectory() as work:  # the trained model and its NIR file are not results
        exported = export_direction(split, hw, args.lava_samples, Path(work))
        recurrent = recurrent_export(split, hw, rleaky, Path(work))
    print(f"{'import':8} {'tool':13} {'network':42} {'tool float':>10} {'int sim':>8} {'Lava':>8} {'Lava=sim':>8} "
          f"{'spike slots':>16} {'predictions':>11}")
    for r in imported:
        slots = "/".join(f"{s * 100:.2f}" for s in r["spike_slot_agreement"])
        print(f"{'':8} {r['tool']:13} {r['network']:42} {r['tool_float_accuracy'] * 100:9.2f}% "
              f"{r['int_sim_accuracy'] * 100:7.2f}% {r['lava_accuracy'] * 100:7.2f}% {str(r['lava_equals_sim']):>8} "
              f"{slots:>15}% {r['prediction_agreement'] * 100:10.2f}%")
    print(f"\n{'export':8} {'tool':32} {'network':22} {'int sim':>8} {'Lava':>8} {'Lava=sim':>8} {'tool':>8} "
          f"{'predictions':>11}")
    for r in exported:
        if r["tool_accuracy"] is None:
            print(f"{'':8} {r['tool']:32} {r['network']:22} cannot load: {r['cannot'][:90]}")
            continue
        print(f"{'':8} {r['tool']:32} {r['network']:22} {r['int_sim_accuracy'] * 100:7.2f}% "
              f"{r['lava_accuracy'] * 100:7.2f}% {str(r['lava_equals_sim']):>8} {r['tool_accuracy'] * 100:7.2f}% "
              f"{r['prediction_agreement'] * 100:10.2f}%")
    _print_recurrent(recurrent)
    result = {"import": imported, "export": exported, "recurrent_export": recurrent,
              "test_samples": int(len(split.y_test)),
              "seconds": round(time.time() - started, 1),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "load_average": os.getloadavg()}}
    files.write_text(args.out, json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
