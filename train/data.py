"""Data sets. The default, scikit-learn's digits (8x8 grey images, 1797 samples), ships with scikit-learn, so
the whole pipeline runs offline. Pixels are scaled to [0, 1] and fed directly (analog input) every timestep."""

from __future__ import annotations

import dataclasses

import numpy as np

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclasses.dataclass
class Split:
    x_train: np.ndarray  # float32, (n, features) in [0, 1]
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()) + 1)


def digits() -> Split:
    """scikit-learn's digits, split 80/20 stratified with a fixed seed (the same split on every machine)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return Split(x_train, y_train, x_test, y_test)


DATASETS = {"digits": digits}
