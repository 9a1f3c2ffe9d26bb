"""Make lava-nc 0.10.0 importable on Python 3.11 without touching site-packages.

Lava declares Python <3.11. On 3.11 exactly one thing breaks: ``lava/magma/compiler/var_model.py`` uses a
``ByteEncoder()`` instance as a dataclass field default, and 3.11's dataclasses reject unhashable defaults.
We import that module once with ``dataclasses.dataclass`` wrapped so that the class it creates under the name
``ByteEncoder`` keeps identity hashing, which is what 3.10 silently allowed; nothing else changes. On 3.10 (or
once the module is imported) this is a no-op.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys

from spikefold.core.errors import TargetError

_VAR_MODEL = "lava.magma.compiler.var_model"
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
    """Import Lava's core, applying the 3.11 fix when needed; a clear error when Lava is not installed."""
    if _VAR_MODEL in sys.modules:
        return
    if sys.version_info < (3, 11):
        _import(_VAR_MODEL)
        return
    original = dataclasses.dataclass
    dataclasses.dataclass = _hashable_byte_encoder(original)
    try:
        _import(_VAR_MODEL)
    finally:
        dataclasses.dataclass = original


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
