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
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from spikefold.errors import TargetError

SHM_DIR = Path("/dev/shm")  # where Linux keeps POSIX shared memory, Lava's channels included
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


@contextlib.contextmanager
def lava_run(source, run_cfg, num_steps: int) -> Iterator[object]:
    """Compile ``source``'s process graph for ``run_cfg``, run it ``num_steps`` steps and yield its runtime
    (read monitors inside the block). On leaving the block, however it is left, the runtime is stopped."""
    from lava.magma.core.run_conditions import RunSteps

    forced = False
    try:
        with ctrl_c_deferred():
            source.create_runtime(run_cfg=run_cfg)
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
