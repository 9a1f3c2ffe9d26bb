"""Where a run's samples come from (validate, deploy, sim), checked against the model before anything runs.

A data set is named (``digits``, ``digits:train``, ``digits:all``; the test split by default; data sets read
from a local copy, such as ``cifar10_dvs``, need its folder as ``root``) or is an ``.npz`` file with ``x`` in
the range the model's input encoding represents (``[0, 1]`` for spikefold's exports, 0 or 1 for binary event
input) and, optionally, integer labels ``y``. ``x`` is (samples, features) for a network with static input
and (samples, T, features) for one whose input changes every timestep (``InputEncoding.per_timestep``);
further axes (channels, rows, columns) are flattened in C order. Named data sets come from
``spikefold.train.data``, imported only when one is named: an ``.npz`` file needs nothing from training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from spikefold.core.errors import DataError
from spikefold.export.intnet import IntNetwork

SPLITS = ("test", "train", "all")


@dataclasses.dataclass
class RunData:
    source: str  # "digits:test" or the file's path
    x: np.ndarray  # float (samples, features) or (samples, T, features), as the float model takes it
    x_int: np.ndarray  # encoded for the integer network: the same shape, integers
    labels: np.ndarray | None

    @property
    def fingerprint(self) -> str:
        """What a resumed run checks: the same samples (and labels), in the same order."""
        digest = hashlib.sha256(np.ascontiguousarray(self.x_int).tobytes())
        if self.labels is not None:
            digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()


def load(spec: str | None, net: IntNetwork, samples: int | None, model: str,
         root: str | Path | None = None) -> RunData:
    """The first ``samples`` of the data ``spec`` names (default: the test split of the data set the model
    was trained on), encoded for ``net``; ``model`` names the model in messages; ``root`` is the local folder
    of a data set that is not embedded (``--data-root``)."""
    if spec is None:
        trained_on = net.metadata.get("dataset")
        if not trained_on:
            raise DataError(f"{model} does not say which data set it was trained on; pass --data NAME or FILE.npz")
        spec = str(trained_on)
    if spec.endswith(".npz"):
        source, x, y = _from_file(Path(spec))
        want = 3 if net.input.per_timestep else 2
        if x.ndim != want:
            raise DataError(f"data file {spec}: x has shape {x.shape}; expected {_layout(net)}: flatten each "
                            "sample's features to one row")
    else:
        source, x, y = _named(spec, root)
        # Further axes (channels, rows, columns) are flattened in C order; a sequence keeps its time axis.
        keep = 2 if net.input.per_timestep and x.ndim > 2 else 1
        x = x.reshape(*x.shape[:keep], -1)
    if net.input.per_timestep and x.shape[1] != net.timesteps:
        raise DataError(f"data {source}: x has shape {x.shape}, but {model} takes input that changes every "
                        f"timestep: {_layout(net)}")
    if samples is not None:
        if samples < 1:
            raise DataError(f"--samples must be >= 1, got {samples}")
        if samples > len(x):
            raise DataError(f"--samples {samples} asked for, but data {source} has {len(x)} samples; "
                            "ask for fewer or name a larger split (e.g. digits:all)")
        x, y = x[:samples], (y[:samples] if y is not None else None)
    if x.shape[-1] != net.input.size:
        per = "per sample and timestep" if net.input.per_timestep else "per sample"
        raise DataError(f"model/data mismatch: {model} takes {net.input.size} inputs {per}, but data "
                        f"{source} has {x.shape[-1]} features; validate with the data the model was trained on")
    classes = net.readout.size
    if y is not None and len(y) and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"model/data mismatch: data {source} has labels in [{y.min()}, {y.max()}] but {model} "
                        f"has {classes} outputs (classes 0..{classes - 1})")
    try:
        x_int = net.input.encode(x)
    except DataError as exc:
        raise DataError(f"data {source}: {exc}") from None
    return RunData(source, x, x_int, y)


def _layout(net: IntNetwork) -> str:
    if net.input.per_timestep:
        return f"(samples, {net.timesteps} timesteps, features)"
    return "(samples, features)"


def _named(spec: str, root: str | Path | None) -> tuple[str, np.ndarray, np.ndarray]:
    from spikefold.train import data as datasets

    name, _, split = spec.partition(":")
    split = split or "test"
    if name not in datasets.DATASETS:
        raise DataError(f"unknown data set '{name}'; available: {', '.join(datasets.DATASETS)}, or a .npz file")
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' in --data {spec}; choose {name}:{'|'.join(SPLITS)}")
    data = datasets.load(name, root)
    parts = {"test": [(data.x_test, data.y_test)], "train": [(data.x_train, data.y_train)],
             "all": [(data.x_test, data.y_test), (data.x_train, data.y_train)]}[split]
    x = np.concatenate([p[0] for p in parts])
    return f"{name}:{split}", x, np.concatenate([p[1] for p in parts])


def _from_file(path: Path) -> tuple[str, np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"data file {path} cannot be read as .npz ({type(exc).__name__}); "
                        "write it with numpy.savez(path, x=..., y=...)") from None
    if "x" not in arrays:
        raise DataError(f"data file {path} has no array 'x' (it has: {', '.join(arrays) or 'none'}); "
                        "write it with numpy.savez(path, x=..., y=...)")
    x, y = arrays["x"], arrays.get("y")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"data file {path}: x has dtype {x.dtype}; expected numbers")
    if y is not None:
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"data file {path}: y has shape {y.shape} and dtype {y.dtype}; expected one integer "
                            f"label per sample, shape ({len(x)},)")
    return str(path), x.astype(np.float64), y
