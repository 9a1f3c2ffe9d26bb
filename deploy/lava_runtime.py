"""A Lava run from start to stop, with the runtime stopped on every path: a normal end, an error in spikefold
or in a Lava process, and Ctrl-C.

Lava 0.10.0 leaves three ways to get stuck or leak, each handled here:

- A Ctrl-C from a terminal goes to the whole process group, so it also lands in the processes Lava forks;
  one killed halfway through a step leaves the runtime waiting for it forever. Those processes are forked
  while :func:`ctrl_c_deferred`'s handler is installed, inherit it, and so never die of a Ctrl-C.
- A process model that raises can leave ``Runtime.wait()`` waiting forever. The run is started without
  blocking and watched: a Lava process that ends before the run does is reported as a :class:`TargetError`.
- ``Runtime.stop()`` asks each process to stop and waits for the answer, which never comes from a process
  that died or a run that was interrupted mid-step. Then the processes are ended directly, and the memory
  manager with them; any of the runtime's shared-memory segments still present afterwards is removed.

A parent killed by SIGKILL runs none of that. So every process Lava forks for a run asks the kernel to kill it
when its parent dies (``PR_SET_PDEATHSIG``), after which Python's resource tracker, left with no process
writing to it, unlinks the run's shared memory. And each run records its processes and segments in
:data:`RUN_RECORDS`; the next run removes what a dead run's record names (a process only if it is still the
one recorded, by its start time), so a leftover of any kind lasts at most until the next Lava run.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from spikefold.core import files
from spikefold.core.errors import TargetError

SHM_DIR = Path("/dev/shm")  # where Linux keeps POSIX shared memory, Lava's channels included
RUN_RECORDS = Path(tempfile.gettempdir()) / f"spikefold-lava-runs-{os.getuid()}"
PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>
ACTOR_EXIT_S = 5.0  # how long a terminated Lava process may take to exit before it is killed
POLL_S = 0.005  # how often a running Lava run is checked for dead processes


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block is done, then raise KeyboardInterrupt. Processes forked inside
    the block keep this handler for good, so a Ctrl-C never kills them."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


_parent_of_lava: list[int] = []  # the pid that forks Lava's processes, set while it does


def _die_with_parent() -> None:
    """In a process just forked for a Lava run: be killed when the parent dies, and die now if it already has."""
    if not _parent_of_lava:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _parent_of_lava[0]:
        os._exit(1)


os.register_at_fork(after_in_child=_die_with_parent)


@contextlib.contextmanager
def _lava_forks() -> Iterator[None]:
    """Processes forked inside the block (Lava's) die with this process. The kernel ties PR_SET_PDEATHSIG to the
    forking thread, so Lava's processes are forked from this one, which lives as long as the run."""
    _parent_of_lava.append(os.getpid())
    try:
        yield
    finally:
        _parent_of_lava.pop()


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), which tells it from a later process with the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _record(runtime) -> Path | None:
    """Write down this run's processes and segments, for :func:`remove_leftovers` should this process die."""
    infra = getattr(runtime, "_messaging_infrastructure", None)
    if infra is None:
        return None
    pids = [actor.pid for actor in getattr(infra, "actors", [])]
    manager = getattr(getattr(getattr(infra, "smm", None), "_manager", None), "_process", None)
    if manager is not None:
        pids.append(manager.pid)
    smm = getattr(infra, "smm", None)
    record = {"pid": os.getpid(), "start": _start_time(os.getpid()),
              "processes": {str(pid): _start_time(pid) for pid in pids if pid},
              "segments": [handle.name for handle in getattr(smm, "_shared_memory_handles", [])]}
    return files.write_json(RUN_RECORDS / f"{os.getpid()}-{id(runtime)}.json", record)


def remove_leftovers() -> list[str]:
    """End the processes and unlink the segments of Lava runs whose spikefold process is gone (killed before it
    could stop them). Returns what was removed, as 'process PID' and 'segment NAME'."""
    removed = []
    for path in RUN_RECORDS.glob("*.json") if RUN_RECORDS.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written: its run is alive
        if _start_time(record.get("pid", 0)) == record.get("start") and record.get("start") is not None:
            continue  # its run is still going
        for pid, start in record.get("processes", {}).items():
            if start is not None and _start_time(int(pid)) == start:
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
                    removed.append(f"process {pid}")
        for name in record.get("segments", []):
            segment = SHM_DIR / str(name).lstrip("/")
            if segment.exists():
                with contextlib.suppress(OSError):
                    segment.unlink()
                    removed.append(f"segment {name}")
        path.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def lava_run(source, run_cfg, num_steps: int) -> Iterator[object]:
    """Compile ``source``'s process graph for ``run_cfg``, run it ``num_steps`` steps and yield its runtime
    (read monitors inside the block). On leaving the block, however it is left, the runtime is stopped."""
    from lava.magma.core.run_conditions import RunSteps

    remove_leftovers()
    forced = False
    record = None
    try:
        with ctrl_c_deferred(), _lava_forks():
            source.create_runtime(run_cfg=run_cfg)
            record = _record(getattr(source, "runtime", None))
        source.run(condition=RunSteps(num_steps=num_steps, blocking=False))
        _wait_watched(source.runtime)
        yield source.runtime
    except BaseException as exc:
        # KeyboardInterrupt/SystemExit may land mid-step: the processes are ended rather than asked.
        forced = not isinstance(exc, Exception)
        raise
    finally:
        with ctrl_c_deferred():
            shut_down(getattr(source, "runtime", None), forced)
            if record is not None:
                record.unlink(missing_ok=True)


def _wait_watched(runtime) -> None:
    """Wait for a non-blocking run to finish, failing as soon as one of its processes has ended."""
    replies = getattr(runtime, "service_to_runtime", None)
    actors = getattr(getattr(runtime, "_messaging_infrastructure", None), "actors", None)
    if replies is None or actors is None:  # a runtime of another kind (hardware): Lava's own wait
        runtime.wait()
        return
    while not all(port.probe() for port in replies):
        dead = [actor for actor in actors if not actor.is_alive()]
        if dead:
            raise TargetError(f"a Lava process ended during the run: {_reason(dead[0])}; the runtime was stopped")
        time.sleep(POLL_S)
    runtime.wait()


def _reason(actor) -> str:
    error = actor.exception  # Lava's SystemProcess keeps the exception its model raised
    if error:
        exc, _ = error
        return f"{type(exc).__name__}: {exc}"
    return f"exit code {actor.exitcode}"


def shut_down(runtime, forced: bool = False) -> None:
    """Stop a Lava runtime: with Lava's own stop() when it is idle and whole, else by ending its processes;
    then remove any shared-memory segment of it that is still there (a manager ended before cleaning up)."""
    if runtime is None:
        return
    infra = getattr(runtime, "_messaging_infrastructure", None)
    smm = getattr(infra, "smm", None)
    segments = [handle.name for handle in getattr(smm, "_shared_memory_handles", [])]
    idle_and_whole = (getattr(runtime, "_is_started", False) and not getattr(runtime, "_is_running", True)
                      and all(actor.is_alive() for actor in getattr(infra, "actors", [])))
    if forced or not idle_and_whole:
        if infra is not None:
            _end_processes(runtime, infra)
    else:
        try:
            runtime.stop()
        except Exception:  # noqa: BLE001 - whatever went wrong, the processes still have to go
            _end_processes(runtime, infra)
    for name in segments:
        with contextlib.suppress(OSError):
            (SHM_DIR / name.lstrip("/")).unlink(missing_ok=True)


def _end_processes(runtime, infra) -> None:
    actors = list(getattr(infra, "actors", []))
    for actor in actors:
        if actor.is_alive():
            actor.terminate()
    for actor in actors:
        multiprocessing.Process.join(actor, ACTOR_EXIT_S)
        if actor.is_alive():
            actor.kill()
        actor.join()  # Lava's SystemProcess.join: reaps the process and closes its pipes
    if getattr(infra, "smm", None) is not None:
        with contextlib.suppress(Exception):  # a manager that is already gone has nothing left to end
            infra.smm.shutdown()  # ends the memory manager, which unlinks its segments
    watchdog = getattr(runtime, "_watchdog_manager", None)
    if watchdog is not None:
        watchdog.stop()
    # Runtime.__del__ calls stop() on a started runtime, which would wait on the processes just ended.
    runtime._is_started = runtime._is_running = False
