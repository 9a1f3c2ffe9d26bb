"""`spikefold validate`: real Lava runs held against the integer sim and the float model, failures that name
the layer, chunked runs that resume, named errors for bad input, and nothing left behind."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spikefold.cli import main
from spikefold.deploy import data_source
from spikefold.deploy.validation import compare
from spikefold.export import nir_io
from spikefold.export.intnet import IntNetwork
from spikefold.sim.simulator import simulate
from tests.cli_runs import interrupt_once_written, read_report, run_cli
from tests.lava_leftovers import live_processes_after, segments, start_cli, unique_tag




def changed_weight(net: IntNetwork, x_int: np.ndarray, layer: int, flips_spikes: bool) -> tuple[IntNetwork, tuple]:
    """A copy of ``net`` with one weight of ``layer`` lowered by one unit, chosen (with the integer sim) so
    that on ``x_int`` it changes some spike (``flips_spikes``) or changes the state but no spike. Lava's
    Dense drops the lowest bit of mixed-sign weights, so only weights whose effective value moves count."""
    reference = simulate(net, x_int, record_state=True)
    weights = net.layers[layer].inputs[0].synapses.weights
    for i, j in np.ndindex(*weights.shape):
        changed = copy.deepcopy(net)
        changed.layers[layer].inputs[0].synapses.weights[i, j] -= 1
        if np.array_equal(changed.layers[layer].inputs[0].synapses.effective_weights(),
                          net.layers[layer].inputs[0].synapses.effective_weights()):
            continue
        agreement = compare(net, reference, simulate(changed, x_int, record_state=True))
        if agreement.first is not None and (agreement.spikes_differing > 0) == flips_spikes:
            return changed, (i, j)
    raise AssertionError(f"no weight of layer {layer} changes the run that way")


@pytest.fixture(scope="module")
def model(exported, tmp_path_factory) -> Path:
    _, net, _ = exported
    return nir_io.write(net, tmp_path_factory.mktemp("validate") / "model.nir")


def test_validate_passes_against_the_sim_and_the_float_model(model, trained, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "validate", model, "--samples", 60, "--chunk", 25,
                           "--float-model", trained[1] / "model.pt", "--out", out)
    assert code == 0 and "PASS" in stdout
    report = read_report(out)
    assert report["passed"] and report["samples"] == 60 and report["chunks"]["count"] == 3
    checks = {c["name"]: c for c in report["checks"]}
    assert {"spikes hidden0", "spikes hidden1", "spikes readout", "readout voltages", "predictions vs integer sim",
            "predictions vs float model", "accuracy vs float model"} <= set(checks)
    assert checks["predictions vs integer sim"]["measured"] == 1.0 and report["first_divergence"] is None
    per_sample = report["predictions"]["per_sample"]
    assert all(len(per_sample[k]) == 60 for k in ("target", "int_sim", "float", "labels"))
    assert per_sample["target"] == per_sample["int_sim"]
    layers = report["agreement"]["layers"]
    assert all(row["reference_spikes"] == row["target_spikes"] and not any(row["differing"]) for row in layers)
    assert sum(layers[0]["target_spikes"]) > 0, "the model must actually spike"
    assert report["energy"]["latency_s"] > 0 and report["energy"]["cores"]
    for name in ("report.json", "report.md", "divergence.png", "firing.png", "energy.png", "cores.png"):
        assert (out / name).is_file(), name
    assert (out / "report.md").read_text().startswith("# spikefold validate: PASS")


def test_one_changed_weight_fails_and_the_report_names_its_layer(model, tmp_path, capsys):
    reference = nir_io.read(model)
    x_int = data_source.load(None, reference, 60, "model").x_int
    changed, where = changed_weight(reference, x_int, layer=1, flips_spikes=True)
    path = nir_io.write(changed, tmp_path / "changed.nir")
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "validate", path, "--reference", model, "--samples", 60, "--out", out)
    assert code == 1, f"weight {where} of hidden1 changes spikes, so validation must fail"
    report = read_report(out)
    first = report["first_divergence"]
    assert not report["passed"] and first["layer"] == "hidden1" and first["what"] == "spikes"
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "spikes hidden1" in failed and "spikes hidden0" not in failed
    assert f"layer 'hidden1', timestep {first['timestep']}" in stdout.replace("\n", " ")
    assert "# spikefold validate: FAIL" in (out / "report.md").read_text()


def test_with_states_a_change_that_moves_no_spike_still_fails_at_its_layer(model, tmp_path, capsys):
    reference = nir_io.read(model)
    x_int = data_source.load(None, reference, 40, "model").x_int
    changed, _ = changed_weight(reference, x_int, layer=0, flips_spikes=False)
    path = nir_io.write(changed, tmp_path / "quiet.nir")
    code, _, _ = run_cli(capsys, "validate", path, "--reference", model, "--samples", 40, "--out", tmp_path / "a")
    assert code == 0, "spikes and readout are unchanged, so a spike-level validation passes"
    code, _, _ = run_cli(capsys, "validate", path, "--reference", model, "--samples", 40, "--states",
                      "--out", tmp_path / "b")
    report = read_report(tmp_path / "b")
    assert code == 1 and report["first_divergence"]["layer"] == "hidden0"
    assert report["first_divergence"]["what"] in ("u", "v")
    assert report["agreement"]["states_differing"] > 0


def test_an_interrupted_run_resumes_from_its_last_finished_chunk(model, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["validate", str(model), "--samples", "60", "--chunk", "20", "--out", str(out)]
    interrupt_once_written(args, out / "chunks" / "chunk-00000.npz")
    kept = sorted(p.name for p in (out / "chunks").glob("chunk-*.npz"))
    assert kept and len(kept) < 3
    code, _, _ = run_cli(capsys, *args, "--resume")
    report = read_report(out)
    assert code == 0 and report["chunks"]["reused_samples"] == 20 * len(kept)
    assert len(report["predictions"]["per_sample"]["target"]) == 60
    code, _, err = run_cli(capsys, *args[:2], "--samples", "40", *args[4:], "--resume")
    assert code == 2 and "cannot resume" in err and "samples 60 -> 40" in err


def test_bad_input_gets_named_errors(model, tmp_path, capsys):
    def error(*extra) -> str:
        code, _, err = run_cli(capsys, "validate", model, "--out", tmp_path / "bad", *extra)
        assert code == 2, err
        return err

    np.savez(tmp_path / "images.npz", x=np.zeros((5, 8, 8)))
    np.savez(tmp_path / "bright.npz", x=np.full((5, 64), 3.0))
    np.savez(tmp_path / "mnist.npz", x=np.zeros((5, 784)))
    np.savez(tmp_path / "labels.npz", x=np.zeros((3, 64)), y=np.array([0, 4, 12]))
    assert "x has shape (5, 8, 8); expected (samples, features)" in error("--data", tmp_path / "images.npz")
    assert "input values span [3, 3]" in error("--data", tmp_path / "bright.npz")
    assert "model/data mismatch" in error("--data", tmp_path / "mnist.npz")
    assert "takes 64 inputs per sample" in error("--data", tmp_path / "mnist.npz")
    assert "labels in [0, 12]" in error("--data", tmp_path / "labels.npz")
    assert "does not exist" in error("--data", tmp_path / "missing.npz")
    assert "unknown data set 'mnist'" in error("--data", "mnist")
    assert "has 360 samples" in error("--samples", 5000)
    assert "lava-loihi" in error("--target", "loihi2")
    assert "unknown target 'spinnaker'" in error("--target", "spinnaker")
    assert "--spike-tolerance must be a share in [0, 1]" in error("--spike-tolerance", 2)
    assert "--chunk must be >= 1 sample, got 0" in error("--chunk", 0)
    assert "--chunk must be >= 1 sample, got 0" in error("--chunk", 0, "--layers", "each")
    other = copy.deepcopy(nir_io.read(model))
    other.timesteps += 1
    other_path = nir_io.write(other, tmp_path / "other.nir")
    assert "not the same network shape (timesteps" in error("--reference", other_path)
    assert not (tmp_path / "bad" / "chunks").exists(), "bad input must fail before any Lava run"


def test_validating_from_an_npz_file_needs_no_training_code(model, split, tmp_path):
    data = tmp_path / "digits.npz"
    np.savez(data, x=split.x_test[:12], y=split.y_test[:12])
    code = ("import sys\n"
            "sys.modules['spikefold.train'] = None  # the training code cannot be imported\n"
            "from spikefold.cli import main\n"
            f"sys.exit(main(['validate', {str(model)!r}, '--data', {str(data)!r}, '--out', {str(tmp_path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_report(tmp_path)["passed"]


@pytest.mark.slow
def test_demo_model_on_500_digits_and_with_one_weight_changed(tmp_path, capsys):
    """What the README shows: the demo recipe (64-128-128-10, T = 4, 30 epochs) validated on 500 digits; the
    same export with one weight lowered by one unit fails, and the report points to that layer."""
    assert main(["train", "--out", str(tmp_path / "train")]) == 0
    model = tmp_path / "model.nir"
    assert main(["export", str(tmp_path / "train" / "model.pt"), "--out", str(model)]) == 0
    code, _, _ = run_cli(capsys, "validate", model, "--data", "digits:all", "--samples", 500,
                      "--float-model", tmp_path / "train" / "model.pt", "--out", tmp_path / "pass")
    report = read_report(tmp_path / "pass")
    assert code == 0 and report["passed"] and report["samples"] == 500
    reference = nir_io.read(model)
    x_int = data_source.load("digits:all", reference, 500, "model").x_int
    changed, _ = changed_weight(reference, x_int, layer=0, flips_spikes=True)
    path = nir_io.write(changed, tmp_path / "changed.nir")
    code, _, _ = run_cli(capsys, "validate", path, "--reference", model, "--data", "digits:all", "--samples", 500,
                      "--out", tmp_path / "fail")
    report = read_report(tmp_path / "fail")
    assert code == 1 and report["first_divergence"]["layer"] == "hidden0"


@pytest.mark.slow
def test_fifty_validate_runs_leave_no_lava_process_or_segment(model, tmp_path, split):
    """50 CLI runs, passing and failing on purpose (a changed weight, bad data, an unreachable target,
    Ctrl-C mid-run): afterwards none of their processes runs and none of their /dev/shm segments exists."""
    reference = nir_io.read(model)
    changed, _ = changed_weight(reference, data_source.load(None, reference, 10, "m").x_int, 1, flips_spikes=True)
    changed_path = nir_io.write(changed, tmp_path / "changed.nir")
    np.savez(tmp_path / "bad.npz", x=np.full((4, 64), 9.0))
    kinds = {
        "pass": (["validate", model, "--samples", 10, "--chunk", 5], 0),
        "changed": (["validate", changed_path, "--reference", model, "--samples", 10, "--chunk", 5], 1),
        "bad data": (["validate", model, "--data", tmp_path / "bad.npz"], 2),
        "no board": (["validate", model, "--target", "loihi2"], 2),
        "ctrl-c": (["validate", model, "--samples", 200, "--chunk", 200], 130),
    }
    order = list(kinds) * 10
    sessions, tags = [], []
    for k, kind in enumerate(order):
        args, expected = kinds[kind]
        tag = unique_tag()
        proc = start_cli([str(a) for a in args] + ["--out", str(tmp_path / f"run{k}")], tag)
        if kind == "ctrl-c":
            deadline = time.monotonic() + 60
            while not segments(tag) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == expected, f"run {k} ({kind}): {err[-500:]}"
        sessions.append(proc.pid)
        tags.append(tag)
    assert [p for s in sessions for p in live_processes_after(s)] == []
    assert [name for tag in tags for name in segments(tag)] == []
