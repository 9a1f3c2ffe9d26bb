"""Make lava-nc 0.10.0 importable on Python 3.11 without touching site-packages.

Lava declares Python <3.11. On 3.11 exactly one thing breaks: ``lava/magma/compiler/var_model.py`` uses a
``ByteEncoder()`` instance as a dataclass field default, and 3.11's dataclasses reject unhashable defaults.
We import that module once with ``dataclasses.dataclass`` wrapped so that the class it creates under the name
``ByteEncoder`` keeps identity hashing, which is what 3.10 silently allowed; nothing else changes. On 3.10 (or
once the module is imported) this is a no-op.

Lava's runtime also calls ``multiprocessing.set_start_method("fork")`` when first imported, which raises
"context has already been set" in a process that has already used multiprocessing's default context (a
DataLoader with workers, a process pool): the start method is then fixed, on Linux to "fork", what Lava asks
for. So that import runs with the call skipped when the method already set is Lava's; any other method is a
named error, since Lava's runtime forks its processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import multiprocessing
import sys
from collections.abc import Iterator

from spikefold.core.errors import TargetError

_VAR_MODEL = "lava.magma.compiler.var_model"
_LAVA_MULTIPROCESSING = "lava.magma.runtime.message_infrastructure.multiprocessing"
# lava-nc declares Python < 3.11 and pins old packages; its dependencies that matter are spikefold's own
# (pyproject.toml), so it is installed without them. On Python 3.10 `pip install "spikefold[lava]"` does it.
INSTALL_LAVA = "pip install --no-deps --ignore-requires-python lava-nc==0.10.0"


def _hashable_byte_encoder(original):
    @functools.wraps(original)
    def dataclass(cls=None, /, **kwargs):
        def wrap(c):
            made = original(c, **kwargs)
            if made.__name__ == "ByteEncoder" and made.__hash__ is None:
                made.__hash__ = object.__hash__
            return made

        return wrap if cls is None else wrap(cls)

    return dataclass


def ensure_lava() -> None:
    """Import Lava's core, applying the 3.11 fix when needed and accepting a start method already set to
    "fork"; a clear error when Lava is not installed or the process runs another start method."""
    if _VAR_MODEL in sys.modules and _LAVA_MULTIPROCESSING in sys.modules:
        return
    with _fork_accepted(), _hashable_dataclass_defaults():
        _import(_VAR_MODEL)
        _import(_LAVA_MULTIPROCESSING)


@contextlib.contextmanager
def _hashable_dataclass_defaults() -> Iterator[None]:
    if sys.version_info < (3, 11):
        yield
        return
    original = dataclasses.dataclass
    dataclasses.dataclass = _hashable_byte_encoder(original)
    try:
        yield
    finally:
        dataclasses.dataclass = original


@contextlib.contextmanager
def _fork_accepted() -> Iterator[None]:
    method = multiprocessing.get_start_method(allow_none=True)
    if method is None:  # Lava sets "fork" itself
        yield
        return
    if method != "fork":
        raise TargetError(f"Lava runs its processes by fork, but this Python process set multiprocessing's start "
                          f"method to '{method}'. Run the Lava step in a process of its own (the spikefold CLI "
                          "is one), or call multiprocessing.set_start_method('fork', force=True) before it")
    original = multiprocessing.set_start_method
    multiprocessing.set_start_method = lambda wanted, force=False: None if wanted == "fork" else original(
        wanted, force)
    try:
        yield
    finally:
        multiprocessing.set_start_method = original


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "lava":
            raise TargetError(
                f"Lava is not installed in this environment; install it with `{INSTALL_LAVA}` "
                "(or, in a clone, `make env`)"
            ) from None
        raise
