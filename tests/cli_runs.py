"""Running the CLI in-process from a test and reading the report it wrote."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from spikefold.cli import main
from tests.lava_leftovers import start_cli, unique_tag


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Exit status, stdout, and stderr with whitespace collapsed; never a traceback."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, " ".join(captured.err.split())


def read_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def interrupt_once_written(args: list[str], path: Path) -> None:
    """Start the CLI in its own process group, Ctrl-C it as soon as ``path`` exists (a first finished chunk),
    and check that it stopped as an interrupted run does: status 130, pointing to --resume."""
    proc = start_cli(args, unique_tag())
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume" in err
