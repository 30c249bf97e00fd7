"""Data sets and splitting.

load_digits(): the 1,797 8×8 handwritten digits that ship inside the package
(UCI "Optical Recognition of Handwritten Digits", E. Alpaydin and C. Kaynak,
1998, CC BY 4.0; see pyneuro/data/NOTICE.md).
"""
from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

from ._validation import as_generator, check_float


def load_digits(dtype="float32") -> tuple[np.ndarray, np.ndarray]:
    """(X, y): X of shape (1797, 64), pixels scaled from 0..16 to [0, 1]; y int64 labels 0..9."""
    with resources.files("pyneuro").joinpath("data/digits.csv.gz").open("rb") as raw:
        with gzip.open(raw, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 65:
        raise ValueError(f"digits.csv.gz: expected rows of 65 integers, got shape {data.shape}")
    X = (data[:, :64] / 16.0).astype(dtype)
    y = np.ascontiguousarray(data[:, 64])
    return X, y


def train_test_split(X, y, test_size: float = 0.25, seed=None, stratify: bool = True):
    """Split rows into (X_train, X_test, y_train, y_test), seeded.

    Stratified by default: each class contributes round(test_size · its count)
    rows to the test part (y must then hold class labels)."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"train_test_split: X has {X.shape[0]} rows but y has {y.shape[0]}")
    n = X.shape[0]
    test_size = check_float(test_size, "test_size", 0.0, 1.0, low_open=True, high_open=True)
    rng = as_generator(seed)
    if stratify:
        test = []
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            k = int(round(test_size * members.shape[0]))
            test.append(rng.permutation(members)[:k])
        test = np.concatenate(test)
    else:
        test = rng.permutation(n)[:int(round(test_size * n))]
    if test.shape[0] == 0 or test.shape[0] == n:
        raise ValueError(f"train_test_split: test_size {test_size} of {n} samples leaves an empty part")
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    train = rng.permutation(np.flatnonzero(~is_test))
    test = rng.permutation(test)
    return X[train], X[test], y[train], y[test]
