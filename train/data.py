"""Data sets, as float arrays in [0, 1] (direct analog input) with integer labels.

- ``digits`` (default): scikit-learn's 8x8 digits (1797 samples), shipped with scikit-learn, so everything runs
  offline. Split 80/20, stratified, with a fixed seed. Flat (64 features); conv models view it as (1, 8, 8).
- ``cifar10`` / ``cifar100``: the "python version" archives, extracted under a local root the user gives
  (``cifar-10-batches-py/`` or ``cifar-100-python/``). Nothing is downloaded. Their batch files are pickles;
  they are read with an unpickler that admits numpy arrays and plain containers only, never code.
- ``cifar10_dvs``: CIFAR10-DVS through ``tonic`` (optional) from a local root, binned into T frames of
  (2, 48, 48); the samples are sequences (the model's ``temporal_input``).
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np

from spikefold.core.errors import DataError

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclasses.dataclass
class Split:
    x_train: np.ndarray  # float32 in [0, 1], (n, ...) per-sample shape
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()) + 1)


def digits(root: str | Path | None = None) -> Split:
    """scikit-learn's digits, split 80/20 stratified with a fixed seed (the same split on every machine)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return Split(x_train, y_train, x_test, y_test)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, strings and numbers; refuses every other global (i.e. code)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 carry raw bytes; it runs no code
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches hold only arrays")


def _load_batch(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing file {path}; extract the CIFAR 'python version' archive under the data root")
    try:
        with path.open("rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many types; all mean the same to a user
        raise DataError(f"{path} is not a CIFAR batch file ({type(exc).__name__}: {exc}); re-extract the CIFAR "
                        "'python version' archive") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a CIFAR batch (a dict with 'data' and labels); "
                        "re-extract the CIFAR 'python version' archive")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _images(batch: dict, path: Path, label_key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path} has no '{label_key}' or 'data' entry; is it the right CIFAR variant?")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DataError(f"{path}: expected (n, 3072) uint8 images, got {data.shape} of {data.dtype}; re-extract "
                        "the CIFAR 'python version' archive")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: '{label_key}' must be {len(data)} integers (one per image), got {labels.shape} "
                        f"of {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{path}: '{label_key}' holds labels in [{labels.min()}, {labels.max()}] but the data set "
                        f"has {classes} classes (0..{classes - 1}); the file is damaged or of another data set")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels.astype(np.int64)


def _root(root: str | Path | None, name: str) -> Path:
    if root is None:
        raise DataError(f"data set '{name}' is read from a local copy: pass its folder with --data-root")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist (data set '{name}')")
    return root


def cifar10(root: str | Path | None) -> Split:
    base = _root(root, "cifar10") / "cifar-10-batches-py"
    train = [_images(_load_batch(base / f"data_batch_{i}"), base / f"data_batch_{i}", "labels", 10)
             for i in range(1, 6)]
    x_test, y_test = _images(_load_batch(base / "test_batch"), base / "test_batch", "labels", 10)
    return Split(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test)


def cifar100(root: str | Path | None) -> Split:
    base = _root(root, "cifar100") / "cifar-100-python"
    x_train, y_train = _images(_load_batch(base / "train"), base / "train", "fine_labels", 100)
    x_test, y_test = _images(_load_batch(base / "test"), base / "test", "fine_labels", 100)
    return Split(x_train, y_train, x_test, y_test)


DVS_FOLDER = "CIFAR10DVS"  # tonic's CIFAR10DVS reads <root>/CIFAR10DVS/<class name>/*.aedat4


def cifar10_dvs(root: str | Path | None, timesteps: int = 10, size: int = 48) -> Split:
    """CIFAR10-DVS from a local copy, as (T, 2, size, size) event-count frames scaled to [0, 1] per sample,
    split 90/10 per class with the fixed seed (the data set ships no split).

    The files are what tonic's ``CIFAR10DVS`` reads once its archive is extracted:
    ``<root>/CIFAR10DVS/<class name>/*.aedat4``, one recording per file, the class named by its folder
    (airplane ... truck). They are read with tonic (optional: the ``dvs`` extra, which the Makefile installs),
    which never downloads here: a missing copy is an error. Samples are taken in sorted path order, so the
    split is the same on every machine.
    """
    base = _root(root, "cifar10_dvs")
    try:
        import tonic
    except ImportError:
        raise DataError("cifar10_dvs needs the optional package 'tonic' (make env installs it; by hand: "
                        "pip install --no-deps tonic==1.7.0 aedat==2.3.0 tqdm importRosbag requests)") from None

    class CIFAR10DVS(tonic.datasets.CIFAR10DVS):  # tonic reads <root>/<class name>: keep tonic's
        """tonic's reader with its download replaced by the check that the files are here."""

        def _check_exists(self) -> bool:
            return any(Path(self.location_on_system).glob("*/*.aedat4"))

        def download(self) -> None:
            raise DataError(f"no CIFAR10-DVS recordings under {base / DVS_FOLDER} (expected "
                            f"{DVS_FOLDER}/<class>/*.aedat4); extract the data set there: spikefold never "
                            "downloads")

    folder = base / DVS_FOLDER
    strays = [d.name for d in folder.iterdir() if d.is_dir() and d.name not in tonic.datasets.CIFAR10DVS.classes] \
        if folder.is_dir() else []
    if strays:
        raise DataError(f"{folder}: folders {sorted(strays)} are not CIFAR10-DVS classes "
                        f"({', '.join(tonic.datasets.CIFAR10DVS.classes)})")
    dataset = CIFAR10DVS(save_to=str(base))
    order = sorted(range(len(dataset.data)), key=lambda k: dataset.data[k])
    dataset.data = [dataset.data[k] for k in order]
    dataset.targets = [dataset.targets[k] for k in order]
    sensor = tonic.datasets.CIFAR10DVS.sensor_size
    transform = tonic.transforms.Compose([
        tonic.transforms.Downsample(spatial_factor=size / sensor[0]),
        tonic.transforms.ToFrame(sensor_size=(size, size, 2), n_time_bins=timesteps),
    ])
    frames, labels = [], []
    for k, path in enumerate(dataset.data):
        try:
            events, label = dataset[k]
        except Exception as exc:  # the AEDAT4 decoder raises its own types for a damaged file
            raise DataError(f"{path} cannot be read as an AEDAT4 event recording ({type(exc).__name__}: {exc})") from None
        if len(events) == 0:
            raise DataError(f"{path} holds no events")
        f = transform(events).astype(np.float32)
        frames.append(f / max(float(f.max()), 1.0))
        labels.append(int(label))
    x, y = np.stack(frames), np.asarray(labels, np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: len(idx) // 10]] = True
    return Split(x[~test], y[~test], x[test], y[test])


DATASETS = {"digits": digits, "cifar10": cifar10, "cifar100": cifar100, "cifar10_dvs": cifar10_dvs}


def load(name: str, root: str | Path | None = None) -> Split:
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}'; available: {', '.join(DATASETS)}")
    return DATASETS[name](root) if name != "digits" else digits()
