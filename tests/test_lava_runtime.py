"""Lava on Python 3.11 through spikefold's compatibility fix, and every Lava runtime stopped on every path:
a normal end, an error after the run, a Lava process that fails mid-run, and Ctrl-C."""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.shared_memory
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spikefold.deploy import lava_compat, lava_runner
from spikefold.core.errors import TargetError
from spikefold.export import nir_io
from tests.lava_leftovers import live_processes_after, segments, start_cli, unique_tag
from tests.random_nets import random_input, random_network


@pytest.fixture
def shm_tag(monkeypatch):
    """Lava's segments in this test carry a tag of their own (see tests/lava_leftovers.py)."""
    tag = unique_tag()
    monkeypatch.setattr(multiprocessing.shared_memory, "_SHM_NAME_PREFIX", f"/{tag}")
    return tag


def test_compat_fix_leaves_dataclasses_untouched():
    before = dataclasses.dataclass
    lava_compat.ensure_lava()
    lava_compat.ensure_lava()  # idempotent
    assert dataclasses.dataclass is before
    from lava.magma.compiler.var_model import ByteEncoder, CoreEncoder

    if sys.version_info >= (3, 11):
        assert ByteEncoder.__hash__ is object.__hash__
    assert CoreEncoder().x == ByteEncoder()


def test_runtime_stopped_after_success_and_after_an_error(monkeypatch, shm_tag):
    net = random_network(3)
    x = random_input(net, samples=3, seed=0)
    lava_compat.ensure_lava()
    from lava.proc.monitor.process import Monitor

    seen, get_data = [], Monitor.get_data

    def observed(self):  # runs while the runtime is up: its segments must carry the tag
        seen.append(segments(shm_tag))
        return get_data(self)

    monkeypatch.setattr(Monitor, "get_data", observed)
    lava_runner.run(net, x)
    assert seen and all(seen), "the run's segments must be named with the tag"
    assert multiprocessing.active_children() == []
    assert segments(shm_tag) == []

    def broken(self):
        raise RuntimeError("monitor failed")

    monkeypatch.setattr(Monitor, "get_data", broken)
    with pytest.raises(RuntimeError, match="monitor failed"):
        lava_runner.run(net, x)
    assert multiprocessing.active_children() == []
    assert segments(shm_tag) == []


def test_a_lava_process_failing_mid_run_is_reported_not_waited_on(monkeypatch, shm_tag):
    """Lava's own Runtime.wait() never returns when a process model raises; the run must end with a named
    error and nothing left behind. The failure is injected into Lava's LIF model, which the forked
    processes inherit."""
    lava_compat.ensure_lava()
    from lava.proc.lif.models import PyLifResetModelBitAcc

    def broken(self):
        raise ValueError("neuron model failed")

    monkeypatch.setattr(PyLifResetModelBitAcc, "run_spk", broken)
    net = random_network(3)
    with pytest.raises(TargetError, match="a Lava process ended during the run: ValueError: neuron model failed"):
        lava_runner.run(net, random_input(net, samples=3, seed=0))
    assert multiprocessing.active_children() == []
    assert segments(shm_tag) == []


@pytest.mark.parametrize("whom", ["process group", "parent only"])
def test_ctrl_c_mid_run_stops_everything(tmp_path, exported, whom):
    """A terminal's Ctrl-C reaches the whole process group, Lava's processes included; `kill -INT` only the
    parent. Either way: exit status 130 promptly, no process and no shared-memory segment left."""
    _, net, _ = exported
    model = nir_io.write(net, tmp_path / "model.nir")
    tag = unique_tag()
    proc = start_cli(["deploy", str(model), "--samples", "300", "--chunk", "300"], tag)
    deadline = time.monotonic() + 60
    while not segments(tag) and time.monotonic() < deadline:  # Lava's channels exist: the runtime is up
        time.sleep(0.05)
    assert segments(tag), "the Lava runtime never started"
    time.sleep(1.0)  # well into the run
    if whom == "process group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert live_processes_after(proc.pid) == []
    assert segments(tag) == []


def test_sigkill_of_the_parent_leaves_nothing_behind(tmp_path, exported):
    """SIGKILL runs no cleanup in the parent: Lava's processes die with it (PR_SET_PDEATHSIG), the resource
    tracker then unlinks the run's segments, and the next Lava run removes whatever a dead run's record names."""
    from spikefold.deploy import lava_runtime

    _, net, _ = exported
    model = nir_io.write(net, tmp_path / "model.nir")
    tag = unique_tag()
    proc = start_cli(["deploy", str(model), "--samples", "300", "--chunk", "300"], tag)
    deadline = time.monotonic() + 60
    while not segments(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert segments(tag), "the Lava runtime never started"
    deadline = time.monotonic() + 120  # the record is written once the runtime is built: running from then on
    while not (records := list(lava_runtime.RUN_RECORDS.glob(f"{proc.pid}-*.json"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert records, "the run did not record its processes and segments"
    time.sleep(0.5)
    proc.kill()
    proc.communicate(timeout=60)
    assert live_processes_after(proc.pid, 20) == []
    deadline = time.monotonic() + 20
    while segments(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert segments(tag) == []
    lava_runtime.remove_leftovers()  # what the next run does first: the dead run's record goes
    assert not any(path.exists() for path in records)


_AFTER_MULTIPROCESSING = """
import multiprocessing, sys
from spikefold.core.errors import TargetError
from spikefold.deploy import lava_runner
from spikefold.sim.simulator import simulate
from tests.random_nets import random_input, random_network
from tests.same_runs import assert_same_runs

if sys.argv[1] == "used":  # the default context used, as a DataLoader with workers does: the method is now fixed
    worker = multiprocessing.Process(target=int)
    worker.start()
    worker.join()
else:
    multiprocessing.set_start_method(sys.argv[1])
net = random_network(3)
x = random_input(net, samples=3, seed=0)
try:
    got = lava_runner.run(net, x)
except TargetError as exc:
    print("TargetError:", exc)
    sys.exit(0)
assert len(got.spikes) == len(net.layers)
assert_same_runs(net, simulate(net, x), got, states=False)  # every layer's spikes and the readout voltage
print("same as the simulator, start method", multiprocessing.get_start_method())
"""


@pytest.mark.parametrize("before", ["used", "fork", "spawn"])
def test_lava_runs_after_the_process_used_multiprocessing(before):
    """Lava's import sets the start method to "fork", which multiprocessing refuses once a process has used its
    default context (a DataLoader's workers) or set a method: with "fork" already in place Lava runs as usual;
    any other method is a named error, not Lava's "context has already been set"."""
    done = subprocess.run([sys.executable, "-c", _AFTER_MULTIPROCESSING, before], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    if before == "spawn":
        assert "TargetError: Lava runs its processes by fork" in done.stdout
        assert "set_start_method('fork', force=True)" in done.stdout
    else:
        assert "same as the simulator, start method fork" in done.stdout
