"""Run a test's work in several gloo processes, as DDP's statistics tests need.

``spawn(work, world, *args)`` starts ``world`` processes, each joining one gloo process group and calling
``work(rank, world, *args)``; the work writes what the test then compares (files). A process whose work
raised fails the spawn with its traceback.

Teardown is skipped on purpose. In 4 of 11 full-suite runs on the 2-core machine a test failed; in the three logs
kept, a rank aborted ("terminate called without an active exception") after both ranks had written their results,
i.e. in gloo's teardown (destroy_process_group or the process's exit), never in the work. So once every rank has
finished (a barrier), each leaves with os._exit(0), which runs no C++ destructor. The production path, train()
under torchrun with its own teardown, is tested by test_kernels' torchrun test, which this leaves alone.
"""

from __future__ import annotations

import faulthandler
import os
import socket
from collections.abc import Callable

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(work: Callable[..., None], world: int, *args) -> None:
    mp.spawn(_process, args=(work, world, free_port(), args), nprocs=world, join=True)


def _process(rank: int, work: Callable[..., None], world: int, port: int, args: tuple) -> None:
    faulthandler.enable()  # a native abort in the work still shows where, with every thread's Python stack
    # gloo all-reduces CPU and CUDA tensors alike, and unlike NCCL lets two processes share one GPU
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        work(rank, world, *args)
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    os._exit(0)
