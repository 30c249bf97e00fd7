"""The one validation boundary: what public functions call on user input.

Everything that reaches a kernel has passed through here (or through the
kernels' own O(1) checks): a bad argument is a TypeError/ValueError that names
the parameter, what was expected and what was given.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _core

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype) -> np.dtype:
    """'float32' / 'float64' / numpy dtype → np.dtype; anything else is refused."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected 'float32' or 'float64', got {dt}")
    return dt


def check_features(X, dtype: np.dtype, n_features, name: str = "X",
                   allow_nonfinite: bool = False) -> np.ndarray:
    """A non-empty 2-d real array with `n_features` columns, returned C-contiguous in its own
    dtype (any of _core.GATHER_SOURCES: float16/32/64, signed and unsigned integers, bool).

    `n_features` may be a sample's shape (C, H, W): X is then rows of C·H·W values, or
    images (N, C, H, W) — or (N, H, W) when C = 1 — taken as those rows (a reshape, no copy
    of contiguous data).

    It is not converted here: read_rows and row_blocks convert each batch to the model's
    `dtype` where it is read, so a uint8 or float64 memmap is never copied whole. Lists
    become arrays; non-contiguous views (Fortran order, steps) are copied once into C
    order; complex, object and string data are refused. Float data is checked for NaN and
    infinity here (without a copy); values that overflow the model's dtype, per batch."""
    if _core.rows_as_given(X, n_features, allow_nonfinite):   # the common case, in one call
        return X
    if not isinstance(X, np.ndarray):
        if isinstance(X, (list, tuple)):
            X = np.asarray(X)
        else:
            raise TypeError(f"{name}: expected a numpy array of {dtype}, got {type(X).__name__}")
    dt = X.dtype
    if dt not in _core.GATHER_SOURCES:
        raise TypeError(f"{name}: expected an array of real numbers (float, int, uint or bool; "
                        f"converted to {dtype} batch by batch), got dtype {dt}")
    if isinstance(n_features, tuple):
        if len(n_features) > 1:
            X = _image_rows(X, n_features, name)
        n_features = math.prod(n_features)
    shape = X.shape          # (each read of X.shape makes a tuple: a one-row prediction notices)
    if len(shape) != 2:
        hint = f" (one sample? use {name}.reshape(1, -1))" if len(shape) == 1 else ""
        raise ValueError(f"{name}: expected a 2-d array (samples, features), got shape {shape}{hint}")
    if shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got shape {shape}")
    if n_features is not None and shape[1] != n_features:
        raise ValueError(f"{name}: the model expects {n_features} features, got {shape[1]} "
                         f"(shape {shape})")
    X = np.ascontiguousarray(X)
    if not allow_nonfinite and dt.kind == "f" and not _all_finite(X, dt):
        raise ValueError(f"{name}: contains NaN or infinity (pass allow_nonfinite=True to accept it)")
    return X


def _image_rows(X: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """X as rows (N, prod(shape)): images (N,) + shape, or (N, H, W) for one channel, are
    reshaped; flat rows pass; any other shape is refused, naming both."""
    if X.ndim == 2 or X.ndim < 2:
        return X
    if X.shape[1:] == shape or (shape[0] == 1 and X.shape[1:] == shape[1:]):
        return X.reshape(X.shape[0], -1)
    one = f", (N, {', '.join(map(str, shape[1:]))})" if shape[0] == 1 else ""
    raise ValueError(f"{name}: the model reads samples of shape {shape}: expected an array (N, "
                     f"{', '.join(map(str, shape))}){one} or rows (N, {math.prod(shape)}), got shape {X.shape}")


def _all_finite(X: np.ndarray, dt: np.dtype, block: int = 4096) -> bool:
    """Whether every value of a float array X (of dtype dt) is finite (float16 in blocks of
    rows: no whole copy)."""
    if dt in FLOAT_DTYPES:
        return _core.all_finite(X)
    return all(np.isfinite(X[s:s + block]).all() for s in range(0, X.shape[0], block))


def read_rows(X: np.ndarray, idx: np.ndarray, out: np.ndarray, name: str = "X",
              allow_nonfinite: bool = False) -> np.ndarray:
    """out = X[idx] converted to out's dtype (in the core's gather); for float data of
    another dtype, a value that overflows out's dtype (1e300 as float32) is refused."""
    _core.gather_rows(X, idx, out)
    if not allow_nonfinite and X.dtype.kind == "f" and X.dtype != out.dtype and not _core.all_finite(out):
        raise ValueError(f"{name}: holds values too large for {out.dtype} (they would become infinite)")
    return out


def row_blocks(X: np.ndarray, dtype: np.dtype, batch_size: int, name: str = "X",
               allow_nonfinite: bool = False):
    """(start, X[start:start + batch_size] in `dtype`) for consecutive blocks of rows: views
    of X when it has that dtype (X itself when it fits one block: no generator to run, the
    cost of a one-row prediction), else converted into one reused buffer (bounded memory)."""
    if X.dtype == dtype and X.shape[0] <= batch_size:
        return ((0, X),)
    return _blocks_of(X, dtype, batch_size, name, allow_nonfinite)


def _blocks_of(X: np.ndarray, dtype: np.dtype, batch_size: int, name: str,
               allow_nonfinite: bool):
    """row_blocks' blocks, one at a time."""
    buf = None if X.dtype == dtype else np.empty((min(batch_size, X.shape[0]), X.shape[1]), dtype)
    for s in range(0, X.shape[0], batch_size):
        if buf is None:
            yield s, X[s:s + batch_size]
        else:
            e = min(s + batch_size, X.shape[0])
            yield s, read_rows(X, np.arange(s, e, dtype=np.int64), buf[:e - s], name, allow_nonfinite)


def check_labels(y, n_samples: int, n_classes: int, name: str = "y") -> np.ndarray:
    """Integer class labels in [0, n_classes), one per sample, as contiguous int64."""
    y = np.asarray(y) if isinstance(y, (list, tuple)) else y
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of integer labels, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array of labels, got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name}: expected {n_samples} labels (one per sample), got {y.shape[0]}")
    lo, hi = (int(y.min()), int(y.max())) if y.size else (0, 0)
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"{name}: labels must lie in [0, {n_classes - 1}] for a model with "
                         f"{n_classes} outputs, got values in [{lo}, {hi}]")
    return np.ascontiguousarray(y, dtype=np.int64)


def check_targets(y, n_samples: int, n_outputs: int, dtype: np.dtype, name: str = "y",
                  allow_nonfinite: bool = False) -> np.ndarray:
    """Real-valued targets, shape (samples, outputs) — (samples,) when outputs is 1."""
    y = np.asarray(y) if isinstance(y, (list, tuple)) else y
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of targets, got {type(y).__name__}")
    if y.dtype.kind not in "fiub" or y.dtype == np.float16:
        raise TypeError(f"{name}: expected real-valued targets, got dtype {y.dtype}")
    if y.ndim == 1 and n_outputs == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != n_outputs:
        raise ValueError(f"{name}: expected targets of shape ({n_samples}, {n_outputs}), got {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name}: expected {n_samples} targets (one per sample), got {y.shape[0]}")
    y = np.ascontiguousarray(y, dtype=dtype)
    if not allow_nonfinite and not _core.all_finite(y):
        raise ValueError(f"{name}: contains NaN or infinity")
    return y


def check_sample_weight(sample_weight, n_samples: int, dtype: np.dtype, name: str = "sample_weight") -> np.ndarray:
    """One weight per sample, finite and >= 0, not all 0, as a contiguous array of dtype."""
    w = np.asarray(sample_weight) if isinstance(sample_weight, (list, tuple)) else sample_weight
    if isinstance(w, numbers.Real) and not isinstance(w, bool):
        w = np.full(n_samples, float(w))    # a number: the same weight for every sample
    if not isinstance(w, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of weights, got {type(w).__name__}")
    if w.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected real weights, got dtype {w.dtype}")
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"{name}: expected shape ({n_samples},) (one weight per sample), got {w.shape}")
    w = np.ascontiguousarray(w, dtype=dtype)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name}: weights must be finite and >= 0")
    if n_samples and not (w > 0).any():
        raise ValueError(f"{name}: all weights are zero; at least one must be > 0")
    return w


def class_weight_rows(class_weight, classes: np.ndarray, n_classes: int, name: str = "class_weight") -> np.ndarray:
    """Each sample's weight from its class: class_weight is a dict {class: weight} (classes
    left out weigh 1) or 'balanced', weight_c = n_samples / (n_classes · count_c)
    (scikit-learn's formula; n_classes counts the classes present). Returns float64 (n,)."""
    counts = np.bincount(classes, minlength=n_classes)
    if isinstance(class_weight, str) and class_weight == "balanced":
        present = counts > 0
        per_class = np.zeros(n_classes)
        per_class[present] = classes.shape[0] / (present.sum() * counts[present])
    elif isinstance(class_weight, dict):
        per_class = np.ones(n_classes)
        for c, v in class_weight.items():
            if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= int(c) < n_classes:
                raise ValueError(f"{name}: keys must be classes in [0, {n_classes - 1}], got {c!r}")
            per_class[int(c)] = check_float(v, f"{name}[{c}]", 0.0)
    else:
        raise TypeError(f"{name}: expected a dict {{class: weight}} or 'balanced', got {class_weight!r}")
    return per_class[classes]


def check_int(value, name: str, minimum: int | None = None) -> int:
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_float(value, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number within [low, high] (open ends where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not np.isfinite(value) or not lo_ok or not hi_ok:
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        rng = f"{lb}{'-inf' if low is None else low}, {'inf' if high is None else high}{hb}"
        raise ValueError(f"{name}: expected a finite number in {rng}, got {value}")
    return value


def as_generator(seed) -> np.random.Generator:
    """A numpy Generator from a seed, a SeedSequence or a Generator (None: fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)) and not isinstance(seed, bool):
        return np.random.default_rng(seed)  # type: ignore[arg-type]  # numbers.Integral is an int here
    raise TypeError(f"seed: expected an int, None or a numpy.random.Generator, got {type(seed).__name__}")
