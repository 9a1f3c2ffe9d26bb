"""Lava on Python 3.11 through spikefold's compatibility fix, and runtimes stopped on every path."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys

import pytest

from spikefold.deploy import lava_compat, lava_runner
from tests.random_nets import random_input, random_network


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_compat_fix_leaves_dataclasses_untouched():
    before = dataclasses.dataclass
    lava_compat.ensure_lava()
    lava_compat.ensure_lava()  # idempotent
    assert dataclasses.dataclass is before
    from lava.magma.compiler.var_model import ByteEncoder, CoreEncoder

    if sys.version_info >= (3, 11):
        assert ByteEncoder.__hash__ is object.__hash__
    assert CoreEncoder().x == ByteEncoder()


def test_runtime_stopped_after_success_and_failure(monkeypatch):
    net = random_network(3)
    x = random_input(net, samples=3, seed=0)
    shm_before = _shm()
    lava_runner.run(net, x)
    from lava.proc.monitor.process import Monitor

    def broken(self):
        raise RuntimeError("monitor failed")

    monkeypatch.setattr(Monitor, "get_data", broken)
    with pytest.raises(RuntimeError, match="monitor failed"):
        lava_runner.run(net, x)
    assert multiprocessing.active_children() == []
    assert _shm() - shm_before == set()
