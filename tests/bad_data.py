"""Small CIFAR-10 folders on disk, whole or damaged, in the 'python version' format spikefold's loader reads
(the real data set is not on these machines): for the tests and benchmarks/bad_input_campaign.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar(root: Path, labels: int = 9, data=None, batch=None) -> Path:
    """Three images per batch file, labels 0, 1 and ``labels``; ``data`` replaces the images, ``batch`` a whole
    batch (e.g. a list instead of a dict)."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        content = batch if batch is not None else {
            b"data": data if data is not None else rng.integers(0, 256, (3, 3072), dtype=np.uint8),
            b"labels": [0, 1, labels]}
        (base / name).write_bytes(pickle.dumps(content, protocol=2))
    return root
