"""Classification metrics, and the one rule that turns network outputs into classes.

    class of a row   argmax_j Z_ij (the first of ties), or [z > 0] for a single logit
"""
from __future__ import annotations

import numpy as np

from . import _core


def classes_from_outputs(Z: np.ndarray, out: np.ndarray | None = None, threshold: float = 0.0) -> np.ndarray:
    """The class each row of a network output stands for: argmax_j Z_ij (the first of
    ties), or [z > threshold] for a single output (a logit: 0 is σ(z) > ½).

    Parameters
    ----------
    Z : ndarray of shape (n, C), float32 or float64, C-contiguous
        Logits or probabilities (one column per class), or one logit per row.
    out : ndarray of int64, shape (n,), optional
        Where to write the classes.
    threshold : float
        The decision threshold of a single output, on its own scale (0 for a logit, ½ for
        a probability).

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    if out is None:
        out = np.empty(Z.shape[0], dtype=np.int64)
    if Z.shape[1] == 1:
        np.greater(Z[:, 0], threshold, out=out, casting="unsafe")
        return out
    return _core.argmax_rows(Z, out)


def count_correct(Z: np.ndarray, y: np.ndarray, out: np.ndarray | None = None, threshold: float = 0.0) -> int:
    """How many rows of Z are classified right (classes_from_outputs against the truth).

    Parameters
    ----------
    Z : ndarray of shape (n, C)
        Network outputs.
    y : ndarray
        Integer labels (n,), class probabilities (n, C) (the true class is their argmax),
        or 0/1 targets (n, 1) (the true class is [y > ½]).
    out : ndarray of int64, shape (n,), optional
        Work array for the predicted classes.
    threshold : float
        As for classes_from_outputs.

    Returns
    -------
    int
    """
    pred = classes_from_outputs(Z, out, threshold)
    if y.ndim == 2:
        y = y[:, 0] > 0.5 if y.shape[1] == 1 else y.argmax(axis=1)
    return int(np.count_nonzero(pred == y))


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """The confusion matrix: cm[i, j] = number of samples of true class i predicted as j.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
    n_classes : int

    Returns
    -------
    ndarray of int64, shape (n_classes, n_classes)
    """
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"confusion_matrix: expected two 1-d label arrays of one length, "
                         f"got shapes {y_true.shape} and {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"confusion_matrix: {name} must lie in [0, {n_classes - 1}], "
                             f"got [{y.min()}, {y.max()}]")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
