"""Every file spikefold writes (checkpoints, NIR files, reports, arrays) goes through one atomic writer: a crash,
Ctrl-C or SIGKILL never leaves half a file where a reader, or a resumed run, would take it for a whole one, and
the file gets the permissions the user's umask gives a new file (a temporary file alone would be 0600).

Outputs are also checked before any work is done (:func:`check_output_file`, :func:`check_output_folder`), so a
run never spends an hour to fail at its first write, and never overwrites earlier results unless told to."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spikefold.core.errors import ConfigError

TEMP_PREFIX = ".spikefold-tmp."  # temporary files of unfinished writes; a later write removes stale ones


def _umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temps(folder: Path, name: str) -> None:
    """Temporary files an earlier write of ``name`` left when its process was killed (SIGKILL runs no cleanup):
    removed when they belong to a process that no longer runs."""
    for stale in folder.glob(f"{TEMP_PREFIX}{name}.*"):
        pid = stale.name[len(TEMP_PREFIX) + len(name) + 1:].split(".", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to (for writers that want a path, like h5py); on a clean
    exit it gets the umask's permissions and replaces ``path`` in one rename, on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.{os.getpid()}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_plain))


def _plain(obj: Any) -> Any:
    """numpy values and paths as the JSON types they stand for."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _check_writable_place(path: Path, flag: str) -> None:
    """``path`` can be created: no existing file stands where a folder on its way must be, and the nearest
    existing folder is writable."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder; choose an output path "
                                  "outside it")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{flag} {path}: the folder {parent} is not writable; choose another output path")
            return


def check_output_file(path: str | Path, flag: str, force: bool) -> Path:
    """Before any work: ``path`` can be written as a file, and an existing one is overwritten only with force."""
    path = Path(path)
    _check_writable_place(path, flag)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not force:
        raise ConfigError(f"{flag} {path} already exists; pass --force to overwrite it, or choose another path")
    return path


def check_output_folder(path: str | Path, flag: str, force: bool, results: Iterable[str]) -> Path:
    """Before any work: ``path`` can be a folder, and none of the ``results`` (file names) a run writes there
    exists yet unless ``force`` allows overwriting them."""
    path = Path(path)
    _check_writable_place(path, flag)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file; give a folder")
    found = [name for name in results if (path / name).exists()]
    if found and not force:
        raise ConfigError(f"{flag} {path} already holds results of an earlier run ({', '.join(found)}); pass "
                          "--force to overwrite them, or choose another folder")
    return path
