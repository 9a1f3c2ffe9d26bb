"""The bad-input campaign's cases (issue 17): each is refused by name with exit status 2 before any work, or
works; files honour the umask; a killed save leaves no temporary file; the NIR reader survives damaged files."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spikefold import __version__
from spikefold.core import files
from spikefold.cli import build_parser, main
from spikefold.core.errors import HardwareRangeError
from spikefold.export import nir_io
from spikefold.export.intnet import INPUT, Connection, Dense, InputEncoding, IntNetwork, Layer, LIF

from tests import nir_fuzz
from tests.bad_data import write_cifar

REPO = Path(__file__).resolve().parents[1]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, " ".join(captured.err.split()), captured.out


@pytest.fixture(scope="module")
def model(exported, tmp_path_factory):
    return nir_io.write(exported[1], tmp_path_factory.mktemp("rel") / "model.nir")


@pytest.fixture()
def a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return path


def _cases(model, checkpoint, a_file):
    """(argv, what the message must say) for an output path under an existing file, per command."""
    under = a_file / "x"
    return [
        (("train", "--epochs", 1, "--out", under), "afile is a file, not a folder"),
        (("export", checkpoint, "--out", under / "m.nir"), "afile is a file, not a folder"),
        (("sim", model, "--out", under), "afile is a file, not a folder"),
        (("deploy", model, "--report", under / "r.json"), "afile is a file, not a folder"),
        (("validate", model, "--out", under), "afile is a file, not a folder"),
        (("pipeline", "--epochs", 1, "--out", under), "afile is a file, not a folder"),
    ]


def test_an_output_under_a_file_is_refused_before_any_work(capsys, model, trained, a_file):
    for argv, message in _cases(model, trained[1] / "model.pt", a_file):
        t0 = time.perf_counter()
        code, err, _ = _run(capsys, *argv)
        assert code == 2 and message in err, (argv, err)
        assert time.perf_counter() - t0 < 10, f"{argv[0]} worked before checking its output"


def test_existing_outputs_are_kept_unless_forced(capsys, model, trained, tmp_path):
    nir_file = tmp_path / "m.nir"
    nir_file.write_bytes(b"earlier result")
    code, err, _ = _run(capsys, "export", trained[1] / "model.pt", "--out", nir_file)
    assert code == 2 and "m.nir already exists; pass --force" in err
    assert nir_file.read_bytes() == b"earlier result"
    code, err, _ = _run(capsys, "export", trained[1] / "model.pt", "--out", nir_file, "--force")
    assert code == 0 and nir_io.read(nir_file).layers
    sim_out = tmp_path / "sim"
    assert _run(capsys, "sim", model, "--samples", 20, "--out", sim_out)[0] == 0
    code, err, _ = _run(capsys, "sim", model, "--samples", 20, "--out", sim_out)
    assert code == 2 and "already holds results of an earlier run (energy.json, energy.md)" in err
    # validate: the finished chunks of an interrupted run are kept, not silently deleted
    chunks = tmp_path / "val" / "chunks"
    chunks.mkdir(parents=True)
    (chunks / "manifest.json").write_text("{}")
    (chunks / "chunk-00000.npz").write_bytes(b"finished work")
    code, err, _ = _run(capsys, "validate", model, "--out", tmp_path / "val")
    assert code == 2 and "chunks/manifest.json" in err and "--force" in err
    assert (chunks / "chunk-00000.npz").read_bytes() == b"finished work"


@pytest.mark.parametrize("scale", ["nan", "0", "-3", "inf", "abc"])
def test_input_scale_must_be_finite_and_positive(capsys, trained, tmp_path, scale):
    with pytest.raises(SystemExit) as stop:  # argparse refuses it: exit 2 with the option named
        main(["export", str(trained[1] / "model.pt"), "--out", str(tmp_path / "m.nir"), "--input-scale", scale])
    assert stop.value.code == 2 and "--input-scale" in capsys.readouterr().err


def test_nir_file_with_nan_parameters_or_bad_scale_is_refused(capsys, exported, tmp_path):
    graph = nir_io.to_nir(exported[1])
    graph.nodes["hidden0.synapse"].weight[0, 0] = np.nan
    path = tmp_path / "nan.nir"
    import nir

    nir.write(path, graph)
    code, err, _ = _run(capsys, "sim", path)
    assert code == 2 and "node 'hidden0.synapse' parameter weight holds NaN" in err
    graph = nir_io.to_nir(exported[1])
    graph.metadata["spikefold.input_scale"] = 0.0
    nir.write(tmp_path / "zero.nir", graph)
    code, err, _ = _run(capsys, "sim", tmp_path / "zero.nir")
    assert code == 2 and "spikefold.input_scale = 0.0 must be a finite number > 0" in err


@pytest.mark.parametrize("command", ["sim", "deploy", "validate"])
def test_real_data_sets_from_the_command_line(capsys, model, tmp_path, command):
    code, err, _ = _run(capsys, command, model, "--data", "cifar10")
    assert code == 2 and "data set 'cifar10' is read from a local copy: pass its folder with --data-root" in err
    root = write_cifar(tmp_path / "c10")
    code, err, _ = _run(capsys, command, model, "--data", "cifar10", "--data-root", root, "--samples", 2)
    assert code == 2 and "takes 64 inputs per sample, but data cifar10:test has 3072 features" in err


def test_a_cifar_model_exports_and_simulates_from_its_data_root(capsys, tmp_path):
    """--data-root end to end on a small CIFAR-10 folder: export calibrates on it, sim runs its test split."""
    from spikefold.train import data as datasets
    from spikefold.train.loop import TrainConfig, train
    from spikefold.train.models import ModelConfig

    root = write_cifar(tmp_path / "c10")
    split = datasets.load("cifar10", root)
    train(ModelConfig(input_shape=(3072,), hidden=(16,), timesteps=2), TrainConfig(epochs=1), split,
          out=tmp_path / "run")
    code, err, _ = _run(capsys, "export", tmp_path / "run" / "model.pt", "--out", tmp_path / "m.nir", "--dataset",
                        "cifar10", "--data-root", root, "--input-scale", 7)  # coarse input: an untrained net's
    assert code == 0, err  # small weights then need no exponent below the hardware's
    code, err, out = _run(capsys, "sim", tmp_path / "m.nir", "--data-root", root)
    assert code == 0 and "3 samples of cifar10:test: accuracy" in " ".join(out.split()), err + out


@pytest.mark.parametrize("damage,message", [
    ({"labels": 300}, "holds labels in [0, 300] but the data set has 10 classes"),
    ({"data": np.array([["a"] * 3072] * 3)}, "expected (n, 3072) uint8 images"),
    ({"batch": [1, 2, 3]}, "holds a list, not a CIFAR batch"),
])
def test_damaged_cifar_batches_are_named(capsys, trained, tmp_path, damage, message):
    root = write_cifar(tmp_path / "c10", **damage)
    code, err, _ = _run(capsys, "export", trained[1] / "model.pt", "--out", tmp_path / "m.nir", "--dataset",
                        "cifar10", "--data-root", root)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("figure,message", [
    ("-18.25e-12", "energy.synaptic_op.value = -1.825e-11 must be a number >= 0"),
    ("'lots'", "energy.synaptic_op.value = 'lots' must be a number >= 0"),
    (".nan", "energy.synaptic_op.value = nan must be a number >= 0"),
])
def test_hw_config_figures_are_checked_at_load(capsys, model, tmp_path, figure, message):
    text = (REPO / "hw_configs" / "loihi2.yaml").read_text()
    assert "synaptic_op: {value: 23.6e-12" in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("synaptic_op: {value: 23.6e-12", f"synaptic_op: {{value: {figure}", 1))
    code, err, _ = _run(capsys, "sim", model, "--samples", 5, "--hw-config", path)
    assert code == 2 and message in err, err


def test_validate_refuses_a_float_model_of_another_architecture(capsys, model, split, tmp_path):
    from spikefold.train.loop import TrainConfig, train
    from spikefold.train.models import ModelConfig

    train(ModelConfig(hidden=(20,), timesteps=4), TrainConfig(epochs=1), split, out=tmp_path / "other")
    code, err, _ = _run(capsys, "validate", model, "--samples", 5, "--float-model", tmp_path / "other" / "model.pt",
                        "--out", tmp_path / "val")
    assert code == 2 and "is not the architecture of the integer model" in err and "[20, 10] vs 4, [64, 48, 10]" in err


def test_resume_with_other_options_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert _run(capsys, "train", "--epochs", 1, "--hidden", 16, "--out", out, "--no-probes", "--threads", 1)[0] == 0
    weights = (out / "last.pt").read_bytes()
    code, err, _ = _run(capsys, "train", "--epochs", 1, "--hidden", 24, "--out", out, "--resume")
    assert code == 2 and "cannot resume" in err and "model hidden [16] -> [24]" in err
    assert (out / "last.pt").read_bytes() == weights
    code, err, _ = _run(capsys, "train", "--epochs", 1, "--hidden", 16, "--out", out)
    assert code == 2 and "already holds results of an earlier run (model.pt, last.pt)" in err


def test_files_honour_the_umask(tmp_path, exported):
    from spikefold.train import checkpoint

    before = os.umask(0o027)
    try:
        written = [files.write_json(tmp_path / "r.json", {"a": 1}),
                   nir_io.write(exported[1], tmp_path / "m.nir"),
                   checkpoint.save(tmp_path / "c.pt", {"model_config": {}, "state_dict": {}})]
    finally:
        os.umask(before)
    assert [oct(p.stat().st_mode & 0o777) for p in written] == [oct(0o640)] * 3


def test_a_save_killed_by_sigkill_leaves_no_temporary_file_after_the_next(tmp_path):
    """A process saving checkpoints in a loop is killed with SIGKILL mid-save; the next save of the same file
    removes what the killed one left."""
    script = ("import sys, torch; from spikefold.train import checkpoint\n"
              "big = {'model_config': {}, 'state_dict': {'w': torch.zeros(4_000_000)}}\n"
              "print('saving', flush=True)\n"
              "while True: checkpoint.save(sys.argv[1], big)\n")
    path = tmp_path / "last.pt"
    leftovers = []
    for _ in range(20):  # until a kill lands mid-save (most do: a save is nearly all of the loop)
        child = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"saving\n"
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        leftovers = list(tmp_path.glob(f"{files.TEMP_PREFIX}*"))
        if leftovers:
            break
    assert leftovers, "no kill landed mid-save in 20 tries"
    from spikefold.train import checkpoint

    checkpoint.save(path, {"model_config": {}, "state_dict": {}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_version_and_help_for_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"spikefold {__version__}"
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, command in sub.choices.items() for action in command._actions
               if not action.help and action.dest != "help"]
    assert not missing, missing
    torchless = {"convert"}  # it only reads and writes files (NIR, netx, ONNX): no torch runs there
    threads = [name for name, command in sub.choices.items() if name not in torchless
               and not any("--threads" in a.option_strings for a in command._actions)]
    assert not threads, f"no --threads on {threads}"


def test_shipped_recipe_by_name_from_any_folder(tmp_path, monkeypatch):
    from spikefold import cli

    monkeypatch.chdir(tmp_path)
    import yaml

    assert cli._recipe("digits_cnn") == yaml.safe_load((REPO / "recipes" / "digits_cnn.yaml").read_text())


def _graded_net(input_size: int, message_bits: int, weight: int, skip: bool) -> IntNetwork:
    neurons = lambda n: LIF(du=4095, dv=2048, vth=100, bias_mant=np.zeros(n, np.int32), bias_exp=np.zeros(n, np.int32))
    hidden = Layer("hidden", [Connection(INPUT, Dense(np.full((4, input_size), weight, np.int32), -8,
                                                      num_message_bits=message_bits))], neurons(4), 1.0)
    inputs = [Connection("hidden", Dense(np.ones((2, 4), np.int32), 0))]
    if skip:  # the readout reads the input too, one layer later: a DelayDense in Lava
        inputs.append(Connection(INPUT, Dense(np.full((2, input_size), weight, np.int32), -8, num_message_bits=8)))
    readout = Layer("readout", inputs, dataclasses.replace(neurons(2), dv=0), 1.0, readout=True)
    return IntNetwork(InputEncoding(input_size, 255.0, 8), [hidden, readout], timesteps=2)


def test_networks_where_the_simulator_and_lava_would_differ_are_refused(loihi2):
    _graded_net(64, 8, 100, skip=True).validate(loihi2)  # within int32: accepted
    with pytest.raises(HardwareRangeError, match="from the input have num_message_bits = 0, but the input sends 8-bit graded spikes"):
        _graded_net(64, 0, 100, skip=False).validate(loihi2)
    with pytest.raises(HardwareRangeError, match="num_message_bits = 9 is outside the hardware range"):
        _graded_net(64, 9, 100, skip=False).validate(loihi2)
    with pytest.raises(HardwareRangeError, match="delayed graded input from 'input' can sum to 2188741500"):
        _graded_net(33_660, 8, 255, skip=True).validate(loihi2)


def test_fuzzed_nir_files_load_or_are_named(model, split, tmp_path):
    """A few hundred seeded mutations; every one loads (and simulates) or ends in a spikefold error."""
    torch.set_num_threads(1)  # tiny simulations: one thread is many times faster on a shared machine
    outcomes = nir_fuzz.fuzz_graph(model, 300, seed=17, x=split.x_test[:2])
    outcomes += nir_fuzz.fuzz_bytes(model, tmp_path, 60, seed=17, x=split.x_test[:2])
    unnamed = [o for o in outcomes if o.result not in ("loaded", "named")]
    assert not unnamed, unnamed[:5]
    assert sum(o.result == "named" for o in outcomes) > 100  # the mutations do reach the checks


@pytest.mark.slow
def test_fuzzed_nir_files_long_run(model, split, tmp_path):
    torch.set_num_threads(1)
    outcomes = nir_fuzz.fuzz_graph(model, 3000, seed=1, x=split.x_test[:2])
    outcomes += nir_fuzz.fuzz_bytes(model, tmp_path, 1000, seed=1, x=split.x_test[:2])
    unnamed = [o for o in outcomes if o.result not in ("loaded", "named")]
    assert not unnamed, unnamed[:5]


def test_a_read_that_does_not_finish_is_bounded(model, tmp_path):
    """142 zeroed bytes in the HDF5 structure of an export make the HDF5 library loop (found by the campaign's
    fuzzing): the read is stopped at its time limit and named."""
    damaged = bytearray(model.read_bytes())
    damaged[2794 : 2794 + 142] = bytes(142)
    path = tmp_path / "loops.nir"
    path.write_bytes(bytes(damaged))
    t0 = time.perf_counter()
    with pytest.raises(nir_io.NIRFileError, match="loops.nir: reading it did not finish within 3 s"):
        nir_io.read(path, timeout_s=3)
    assert time.perf_counter() - t0 < 30
