"""Where the Trainer reads its batches from: arrays, Datasets, iterables of batches.

Every source gives batches (X_b, y_b) in the model's dtype, converted where they are
read (pyneuro._core.gather_rows: X_b = T(X[idx]), T the conversion to the model's
float), so no data set is copied whole:

    ArraySource      X (ndarray, np.memmap, list) and y: rows gathered by index
    DatasetSource    any object with __len__ and __getitem__ that answers
                     ds[idx] -> (X_b, y_b) for an int64 index array idx (rows idx)
    IterableSource   an iterable or generator of (X_b, y_b) batches

The first two allow random access: an epoch is a seeded permutation of their rows, cut
into batches (reproducible by seed). An iterable gives its own batches in its own order:
an epoch is one pass over it (iter() is called again each epoch: a list of batches or a
re-iterable object), or `steps_per_epoch` batches of a one-shot generator.
"""
from __future__ import annotations

import numpy as np

from ._validation import check_features, read_rows


class ArraySource:
    """Rows of an array X (any real dtype) and their prepared targets y."""

    random_access = True

    def __init__(self, trainer, X, y, name="X"):
        m = trainer.model
        self.X = check_features(X, m.dtype, m.input_shape, name, trainer.allow_nonfinite)
        self.y = trainer.loss.prepare_targets(y, self.X.shape[0], m.n_out, m.dtype,
                                              "y" if name == "X" else f"y of {name}")
        self.name, self.allow_nonfinite = name, trainer.allow_nonfinite

    def __len__(self) -> int:
        return self.X.shape[0]

    def fetch(self, trainer, idx):
        """(xb, yb, delta, pred): the rows idx gathered into the trainer's batch buffers."""
        xb, yb, delta, pred = trainer._buffers(idx.shape[0], self.y)
        read_rows(self.X, idx, xb, self.name, self.allow_nonfinite)
        if self.y.ndim == 1:
            np.take(self.y, idx, out=yb)
        else:
            read_rows(self.y, idx, yb)
        return xb, yb, delta, pred


def _checked_batch(trainer, X_b, y_b, name):
    """A user batch (X_b, y_b) validated and converted into the trainer's batch buffers."""
    m = trainer.model
    X_b = check_features(X_b, m.dtype, m.input_shape, f"X of a batch of {name}", trainer.allow_nonfinite)
    y_b = trainer.loss.prepare_targets(y_b, X_b.shape[0], m.n_out, m.dtype, f"y of a batch of {name}")
    xb, yb, delta, pred = trainer._buffers(X_b.shape[0], y_b)
    read_rows(X_b, np.arange(X_b.shape[0], dtype=np.int64), xb, name, trainer.allow_nonfinite)
    yb[...] = y_b
    return xb, yb, delta, pred


def _pair(item, name):
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise TypeError(f"{name}: expected batches (X_b, y_b), got {type(item).__name__}")
    return item


class DatasetSource:
    """A Dataset: len(ds) rows, ds[idx] -> (X_b, y_b) for an int64 index array idx."""

    random_access = True

    def __init__(self, ds, name="X"):
        self.ds, self.name = ds, name
        self.n = len(ds)
        if self.n < 1:
            raise ValueError(f"{name}: expected at least one sample, got an empty {type(ds).__name__}")

    def __len__(self) -> int:
        return self.n

    def fetch(self, trainer, idx):
        return _checked_batch(trainer, *_pair(self.ds[idx], f"{self.name}[idx]"), self.name)


class IterableSource:
    """An iterable of (X_b, y_b) batches; `steps` batches per epoch (None: one whole pass)."""

    random_access = False

    def __init__(self, it, steps, name="X"):
        self.it, self.steps, self.name = it, steps, name
        self._iter = None
        if steps is None and iter(it) is it:
            raise ValueError(f"{name}: a generator or iterator has no length; pass steps_per_epoch "
                             "(or a list of batches, or an object whose iter() starts a new pass)")

    def batches(self):
        """The epoch's batches: a new pass over the iterable, or the next `steps` of an iterator."""
        if self.steps is None or self._iter is None or iter(self.it) is not self.it:
            self._iter = iter(self.it)
        n = 0
        for item in self._iter:
            yield _pair(item, self.name)
            n += 1
            if n == self.steps:
                return
        if n == 0:
            raise ValueError(f"{self.name}: the iterable gave no batches (a generator used up?)")

    def fetch(self, trainer, batch):
        return _checked_batch(trainer, *batch, self.name)


def data_source(trainer, X, y, steps=None, name="X"):
    """The source of fit/evaluate's data: arrays (with y), a Dataset or an iterable of batches
    (y None). Array-likes (np.memmap, lists of rows) are arrays; a list of tuples is batches."""
    batches = isinstance(X, list) and len(X) > 0 and isinstance(X[0], tuple)   # [(X_b, y_b), …]
    if isinstance(X, np.ndarray) or (isinstance(X, list) and not batches) or y is not None:
        if y is None:
            raise TypeError(f"{name}: an array needs its targets y")
        return ArraySource(trainer, X, y, name)
    if hasattr(X, "__len__") and hasattr(X, "__getitem__") and not batches:
        return DatasetSource(X, name)
    if hasattr(X, "__iter__"):
        return IterableSource(X, steps, name)
    raise TypeError(f"{name}: expected an array, a Dataset (len, ds[idx] -> (X_b, y_b)) or an iterable "
                    f"of (X_b, y_b) batches, got {type(X).__name__}")
