"""A small synthetic CIFAR10-DVS copy in the on-disk form tonic's ``CIFAR10DVS`` reads
(``<root>/CIFAR10DVS/<class>/*.aedat4``), written with iniVation's dv-processing. Each class is a bar whose
position depends on the class, drifting over the recording, with events of both polarities, on the real
data set's 128 x 128 sensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SENSOR = 128
DURATION_US = 1_000_000


def write_recording(path: Path, events: np.ndarray) -> None:
    """Write (t, x, y, p) rows, t in microseconds ascending, as one AEDAT4 file of a 128 x 128 camera."""
    import dv_processing as dv

    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.EventOnlyConfig("DVXplorer_spikefold",
                                                                                       (SENSOR, SENSOR)))
    store = dv.EventStore()
    for t, x, y, p in events:
        store.push_back(int(t), int(x), int(y), bool(p))
    writer.writeEvents(store)
    del writer  # the file is complete once the writer is gone


def class_events(label: int, rng: np.random.Generator, count: int = 600) -> np.ndarray:
    t = np.sort(rng.integers(1, DURATION_US, size=count))
    row = (12 * label + 8 + (t * 24) // DURATION_US) % SENSOR  # a bar that drifts down over the recording
    x = rng.integers(16, 112, size=count)
    y = np.clip(row + rng.integers(-3, 4, size=count), 0, SENSOR - 1)
    return np.stack([t, x, y, rng.integers(0, 2, size=count)], axis=1)


def write_dataset(root: Path, per_class: int = 2, classes: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in range(classes):
        folder = root / "CIFAR10DVS" / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            write_recording(folder / f"cifar10_{CLASSES[label]}_{k}.aedat4", class_events(label, rng))
    return root
