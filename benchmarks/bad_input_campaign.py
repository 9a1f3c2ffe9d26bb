"""The bad-input and fault campaign (issue 17), rerunnable: bad inputs through the CLI, damaged NIR files through
the reader, and SIGKILL of a Lava run's parent. Prints a table and writes benchmarks/results/bad_input_campaign.json.

Each CLI case must end in a named error (exit status 2, one line, no traceback) before any work. What it got:
  named      exit 2 with spikefold's or argparse's one-line error
  traceback  an exception escaped the CLI
  silent     the command went on (exit 0 or 1) with input it should have refused

    .venv/bin/python benchmarks/bad_input_campaign.py [--graph-cases 1000] [--byte-cases 300]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import nir
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spikefold.cli import main  # noqa: E402
from spikefold.export import nir_io  # noqa: E402
from spikefold.train.data import digits  # noqa: E402
from spikefold.train.loop import TrainConfig, train  # noqa: E402
from spikefold.train.models import ModelConfig  # noqa: E402
from tests import nir_fuzz  # noqa: E402
from tests.bad_data import write_cifar  # noqa: E402
from tests.lava_leftovers import live_processes_after, segments, start_cli, unique_tag  # noqa: E402


def _hw(work: Path, name: str, old: str, new: str) -> Path:
    text = (REPO / "hw_configs" / "loihi2.yaml").read_text()
    assert old in text
    path = work / f"{name}.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _graph_file(work: Path, net, name: str, change) -> Path:
    graph = nir_io.to_nir(net)
    change(graph)
    path = work / f"{name}.nir"
    nir.write(path, graph)
    return path


def cases(work: Path, checkpoint: Path, other_checkpoint: Path, model: Path, net) -> list[tuple[str, list]]:
    """(what, argv) pairs: every one must be refused by name."""
    afile = work / "afile"
    afile.write_text("a file")
    existing = work / "existing.nir"
    existing.write_bytes(b"earlier result")
    (work / "sim-existing").mkdir()
    (work / "sim-existing" / "energy.json").write_text("{}")
    (work / "val-existing" / "chunks").mkdir(parents=True)
    (work / "val-existing" / "chunks" / "manifest.json").write_text("{}")
    (work / "train-existing").mkdir()
    (work / "train-existing" / "model.pt").write_bytes(b"earlier")
    corrupt = work / "corrupt.pt"
    corrupt.write_bytes(os.urandom(300))
    bad_nir = work / "corrupt.nir"
    bad_nir.write_bytes(b"not hdf5" * 40)
    np.savez(work / "flat3d.npz", x=np.zeros((3, 8, 8)))
    first = "hidden0.synapse"
    ck, m = str(checkpoint), str(model)

    def meta(key, value, node=None):
        def change(graph):
            (graph.nodes[node].metadata if node else graph.metadata)[key] = value
        return change

    def nan_weight(graph):
        graph.nodes[first].weight[0, 0] = np.nan

    return [
        ("sim --data cifar10 without --data-root", ["sim", m, "--data", "cifar10"]),
        ("deploy --data cifar10 without --data-root", ["deploy", m, "--data", "cifar10"]),
        ("validate --data cifar10 without --data-root", ["validate", m, "--data", "cifar10", "--out", work / "v1"]),
        ("sim --data cifar10 (a digits model)", ["sim", m, "--data", "cifar10", "--data-root", write_cifar(work / "c1"),
                                                  "--samples", 2]),
        ("CIFAR batch that is a list", ["export", ck, "--out", work / "e1.nir", "--dataset", "cifar10",
                                        "--data-root", write_cifar(work / "c2", batch=[1, 2])]),
        ("CIFAR batch holding strings", ["export", ck, "--out", work / "e2.nir", "--dataset", "cifar10",
                                         "--data-root", write_cifar(work / "c3", data=np.array([["a"] * 3072] * 3))]),
        ("CIFAR label 300", ["export", ck, "--out", work / "e3.nir", "--dataset", "cifar10",
                             "--data-root", write_cifar(work / "c4", labels=300)]),
        ("hw_config energy as a string", ["sim", m, "--samples", 5, "--hw-config",
                                          _hw(work, "s", "synaptic_op: {value: 23.6e-12", "synaptic_op: {value: lots")]),
        ("hw_config negative energy", ["sim", m, "--samples", 5, "--hw-config",
                                       _hw(work, "n", "synaptic_op: {value: 23.6e-12", "synaptic_op: {value: -23.6e-12")]),
        ("hw_config negative time", ["sim", m, "--samples", 5, "--hw-config",
                                     _hw(work, "t", "barrier_sync: {value: 0.6e-6", "barrier_sync: {value: -0.6e-6")]),
        ("train --out under a file", ["train", "--epochs", 1, "--out", afile / "x"]),
        ("export --out under a file", ["export", ck, "--out", afile / "x.nir"]),
        ("sim --out under a file", ["sim", m, "--out", afile / "x"]),
        ("validate --out under a file", ["validate", m, "--out", afile / "x"]),
        ("pipeline --out under a file", ["pipeline", "--epochs", 1, "--out", afile / "x"]),
        ("deploy --report under a file", ["deploy", m, "--report", afile / "x.json"]),
        ("train --resume with another --hidden", ["train", "--epochs", 1, "--hidden", 24, "--resume", "--out",
                                                  checkpoint.parent]),
        ("NaN in the NIR float parameters", ["sim", _graph_file(work, net, "nan", nan_weight)]),
        ("export --input-scale nan", ["export", ck, "--out", work / "s1.nir", "--input-scale", "nan"]),
        ("export --input-scale 0", ["export", ck, "--out", work / "s2.nir", "--input-scale", "0"]),
        ("export --input-scale -1", ["export", ck, "--out", work / "s3.nir", "--input-scale", "-1"]),
        ("NIR input_scale 0", ["sim", _graph_file(work, net, "zero", meta("spikefold.input_scale", 0.0))]),
        ("NIR input_scale NaN", ["sim", _graph_file(work, net, "nanscale", meta("spikefold.input_scale", np.nan))]),
        ("NIR timesteps 2**31 - 1", ["sim", _graph_file(work, net, "t31", meta("spikefold.timesteps", 2**31 - 1))]),
        ("NIR bias_exp of the wrong length", ["sim", _graph_file(work, net, "bexp", meta(
            "spikefold.bias_exp", np.zeros(3, np.int32), "hidden0.neuron"))]),
        ("NIR num_message_bits 9", ["sim", _graph_file(work, net, "nmb", meta(
            "spikefold.num_message_bits", 9, first))]),
        ("graded input through num_message_bits 0", ["sim", _graph_file(work, net, "nmb0", meta(
            "spikefold.num_message_bits", 0, first))]),
        ("NIR weights as floats", ["sim", _graph_file(work, net, "wf", meta(
            "spikefold.weights", np.zeros((net.layers[0].size, 64)) + 0.5, first))]),
        ("validate --float-model of another architecture", ["validate", m, "--samples", 5, "--float-model",
                                                            other_checkpoint, "--out", work / "v2"]),
        ("export over an existing file", ["export", ck, "--out", existing]),
        ("sim --out over earlier results", ["sim", m, "--samples", 5, "--out", work / "sim-existing"]),
        ("validate over an interrupted run without --resume", ["validate", m, "--out", work / "val-existing"]),
        ("train over a finished run", ["train", "--epochs", 1, "--out", work / "train-existing"]),
        ("missing checkpoint", ["export", work / "none.pt", "--out", work / "e4.nir"]),
        ("corrupt checkpoint", ["export", corrupt, "--out", work / "e5.nir"]),
        ("missing NIR file", ["sim", work / "none.nir"]),
        ("corrupt NIR file", ["sim", bad_nir]),
        ("--samples 0", ["sim", m, "--samples", 0]),
        ("--samples beyond the data", ["sim", m, "--samples", 100000]),
        ("--data missing .npz", ["sim", m, "--data", work / "none.npz"]),
        ("--data .npz of 3-D samples", ["sim", m, "--data", work / "flat3d.npz"]),
        ("unknown data set", ["sim", m, "--data", "mnist"]),
        ("unknown target", ["deploy", m, "--target", "spinnaker"]),
        ("--timesteps 0", ["train", "--timesteps", 0, "--out", work / "t0"]),
        ("--beta 1.5", ["train", "--beta", 1.5, "--out", work / "t1"]),
        ("--hidden abc", ["train", "--hidden", "abc", "--out", work / "t2"]),
        ("--threads 0", ["sim", m, "--threads", 0]),
        ("validate --chunk 0", ["validate", m, "--chunk", 0, "--out", work / "v3"]),
        ("missing recipe", ["train", "--recipe", "no_such_recipe", "--out", work / "t3"]),
        ("unknown hw_config", ["sim", m, "--hw-config", "loihi9"]),
        ("--qat-lr -1", ["export", ck, "--out", work / "e6.nir", "--qat-lr", -1]),
        ("--weight-bits 0", ["export", ck, "--out", work / "e7.nir", "--weight-bits", 0]),
    ]


def run_case(argv: list) -> tuple[str, str, float]:
    err = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's refusal
        code = stop.code
    except BaseException as exc:  # noqa: BLE001 - what the campaign counts
        return "traceback", f"{type(exc).__name__}: {exc}"[:200], time.perf_counter() - t0
    text = " ".join(err.getvalue().split())
    result = "named" if code == 2 and "error" in text and "Traceback" not in text else "silent"
    return result, text[:200] or f"exit {code}", time.perf_counter() - t0


def sigkill_leftovers(model: Path) -> dict:
    """Start a Lava deploy, SIGKILL the parent mid-run, count its processes and segments 10 s later."""
    tag = unique_tag()
    proc = start_cli(["deploy", str(model), "--samples", "300", "--chunk", "300"], tag)
    deadline = time.monotonic() + 120
    while not segments(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    started = bool(segments(tag))
    time.sleep(1.0)
    proc.kill()
    proc.communicate(timeout=60)
    processes = live_processes_after(proc.pid, 10)
    deadline = time.monotonic() + 10  # the resource tracker unlinks a dead run's segments as it exits
    while segments(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"run_started": started, "processes": len(processes), "segments": len(segments(tag))}


def main_campaign() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph-cases", type=int, default=1000, help="damaged graphs (default 1000)")
    parser.add_argument("--byte-cases", type=int, default=300, help="damaged files (default 300)")
    parser.add_argument("--work", default="/tmp/spikefold-campaign", help="scratch folder (emptied first)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    split = digits()
    t0 = time.perf_counter()
    train(ModelConfig(hidden=(32, 24), timesteps=4), TrainConfig(epochs=3), split, out=work / "trained")
    train(ModelConfig(hidden=(20,), timesteps=4), TrainConfig(epochs=1), split, out=work / "other")
    from spikefold.pipeline import export_checkpoint

    net, _, _ = export_checkpoint(work / "trained" / "model.pt", work / "model.nir")
    setup_s = time.perf_counter() - t0

    rows = []
    for what, argv in cases(work, work / "trained" / "model.pt", work / "other" / "model.pt", work / "model.nir", net):
        result_kind, detail, seconds = run_case(argv)
        rows.append({"case": what, "result": result_kind, "seconds": round(seconds, 2), "message": detail})

    x = split.x_test[:2]
    fuzz = nir_fuzz.fuzz_graph(work / "model.nir", args.graph_cases, 17, x)
    fuzz += nir_fuzz.fuzz_bytes(work / "model.nir", work, args.byte_cases, 17, x, timeout_s=20)
    unnamed = [f for f in fuzz if f.result not in ("loaded", "named")]
    hangs = [f for f in fuzz if "did not finish within" in f.detail or f.seconds > 20]
    kill = sigkill_leftovers(work / "model.nir")

    counts = {kind: sum(r["result"] == kind for r in rows) for kind in ("named", "traceback", "silent")}
    summary = {
        "bad_inputs": len(rows), **{f"bad_inputs_{k}": v for k, v in counts.items()},
        "fuzz_cases": len(fuzz), "fuzz_loaded": sum(f.result == "loaded" for f in fuzz),
        "fuzz_named": sum(f.result == "named" for f in fuzz), "fuzz_unnamed": len(unnamed),
        "fuzz_reads_bounded_by_the_timeout": len(hangs), "fuzz_longest_s": round(max(f.seconds for f in fuzz), 2),
        "sigkill_processes_left": kill["processes"], "sigkill_segments_left": kill["segments"],
    }
    lines = [f"{'case':<52} {'result':<10} {'s':>6}  message"]
    lines += [f"{r['case']:<52} {r['result']:<10} {r['seconds']:>6.2f}  {r['message'][:90]}" for r in rows]
    lines += ["", f"{'figure':<40} value"] + [f"{k:<40} {v}" for k, v in summary.items()]
    text = "\n".join(lines)
    print(text)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version(), "torch": torch.__version__,
               "load_average": os.getloadavg()}
    out = REPO / "benchmarks" / "results" / "bad_input_campaign.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "options": vars(args), "setup_s": setup_s, "summary": summary,
                               "cases": rows, "sigkill": kill,
                               "fuzz_unnamed": [vars(f) for f in unnamed][:50],
                               "fuzz_by_result": {k: sum(f.result == k for f in fuzz) for k in {f.result for f in fuzz}},
                               "table": text}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main_campaign()
