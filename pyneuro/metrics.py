"""Classification metrics."""
from __future__ import annotations

import numpy as np


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
