"""Find what a Lava run left behind: live processes of a session, and /dev/shm segments with a name tag.

/dev/shm is shared by everything on the machine, so a before/after listing would also catch other users'
Lava runs. Instead each audited run names its segments: Python's shared_memory takes the name prefix from
``multiprocessing.shared_memory._SHM_NAME_PREFIX``, which processes forked afterwards (Lava's memory manager)
inherit. Only the name changes; the segments are created and removed exactly as without it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

SHM = Path("/dev/shm")
_counter = itertools.count()


def unique_tag() -> str:
    """A segment-name prefix (without the leading slash) unique to this test process and call. Python keeps
    POSIX names within 14 characters, so the prefix may have at most 9 after its slash."""
    return f"sf{os.getpid() % 0xFFFF:04x}{next(_counter) % 0xFF:02x}"


def segments(tag: str) -> list[str]:
    return sorted(name for name in os.listdir(SHM) if name.startswith(tag)) if SHM.is_dir() else []


def live_processes(session: int) -> list[str]:
    """Processes of ``session`` that are still running (zombies are dead, waiting only to be reaped by
    init), as 'pid command' lines."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != session:
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100]
        except (OSError, ProcessLookupError):
            continue  # gone while we looked
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(f"{entry} {command}")
    return found


def start_cli(args: list[str], tag: str, cwd: Path | None = None) -> subprocess.Popen:
    """``spikefold ARGS`` in a new session (so its processes can be found, and a Ctrl-C can reach the whole
    group as a terminal's would), its shared memory named with ``tag``."""
    # SIGINT's default handler restored: a parent started in the background (`cmd &` in a script) hands its
    # children SIGINT ignored, and then no Ctrl-C would reach them.
    code = ("import signal, sys, multiprocessing.shared_memory as shm\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            f"shm._SHM_NAME_PREFIX = '/{tag}'\n"
            "from spikefold.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def live_processes_after(session: int, seconds: float = 10.0) -> list[str]:
    """live_processes(session) once they have had ``seconds`` to exit (Python's resource tracker exits only
    after its parent has): anything still running then was left behind."""
    import time

    deadline = time.monotonic() + seconds
    while (left := live_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
