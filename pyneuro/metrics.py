"""Metrics: how good a model's outputs are, against the truth; and the one rule that turns
network outputs into classes and probabilities.

    class of a row          argmax_j Z_ij (the first of ties), or [z > t] for a single output
    probabilities of a row  softmax(Z_i) of class logits, σ(z) of a logit, Z_i of probabilities

Classification metrics take integer labels 0 … C−1 (y_true, y_pred: shape (n,)) or scores
(y_score, y_prob: shape (n, C), or (n,) for the positive class of two); regression metrics
take real targets (n,) or (n, m). Every metric takes optional non-negative sample weights
w_i (default 1) and equals scikit-learn's metric of the same name. Everything is
vectorised NumPy: a loop runs over classes at most, never over samples.
"""
from __future__ import annotations

import functools
import re
from typing import Callable

import numpy as np

from . import _core
from ._registry import load_hint, not_registered, register

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
    return int(np.count_nonzero(pred == labels_from_targets(y)))


def confusion_matrix(y_true, y_pred, n_classes: int | None = None, sample_weight=None) -> np.ndarray:
    """The confusion matrix: cm[i, j] = Σ w_k over the samples k of true class i predicted as j.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
        Class labels in [0, n_classes).
    n_classes : int, optional
        The number of classes C (default: the largest label + 1).
    sample_weight : array-like of shape (n,), optional
        w_k ≥ 0; without it each sample counts 1.

    Returns
    -------
    ndarray of shape (C, C)
        int64 counts, or float64 sums of weights when sample_weight is given.
    """
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(y_true, y_pred, "y_pred")
    w = _weights(sample_weight, y_true.shape[0])
    n_classes = _n_classes(n_classes, y_true, y_pred)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and y.max() >= n_classes:
            raise ValueError(f"confusion_matrix: {name} must lie in [0, {n_classes - 1}], "
                             f"got [{y.min()}, {y.max()}]")
    cm = np.bincount(y_true * n_classes + y_pred, weights=w, minlength=n_classes * n_classes)
    return cm.reshape(n_classes, n_classes)


def probabilities_from_outputs(Z: np.ndarray, kind: str) -> np.ndarray:
    """Class probabilities from network outputs, as the outputs mean them (losses.OUTPUT_KINDS):
    softmax(Z_i) of class logits, σ(z) of binary logits, Z itself of probabilities; a single
    output p becomes the two columns [1 − p, p].

    Parameters
    ----------
    Z : ndarray of shape (n, C), float32 or float64, C-contiguous
        Network outputs (overwritten for logits: pass a copy to keep them).
    kind : {'class_logits', 'binary_logits', 'probabilities'}

    Returns
    -------
    ndarray of shape (n, C), or (n, 2) for a single output
    """
    if kind == "values":
        raise ValueError("probabilities_from_outputs: the outputs are values (a regressor), "
                         "not probabilities of classes")
    if kind not in ("class_logits", "binary_logits", "probabilities"):
        raise ValueError(f"kind: expected 'class_logits', 'binary_logits' or 'probabilities', got {kind!r}")
    if kind != "probabilities":
        _core.activation_forward("softmax" if kind == "class_logits" else "sigmoid", 0.0, Z, Z)
    return np.hstack([1 - Z, Z]) if Z.shape[1] == 1 else Z


def labels_from_targets(y: np.ndarray) -> np.ndarray:
    """The true class of each row of a loss's targets: integer labels as they are, the argmax
    of class probabilities (n, C), [y > ½] of 0/1 targets (n, 1).

    Parameters
    ----------
    y : ndarray of shape (n,), (n, 1) or (n, C)

    Returns
    -------
    ndarray of shape (n,)
    """
    if y.ndim == 2:
        return (y[:, 0] > 0.5).astype(np.int64) if y.shape[1] == 1 else y.argmax(axis=1)
    return y


# ---- checks at the boundary -----------------------------------------------------------------
def _labels(y, name: str) -> np.ndarray:
    """Class labels: a 1-d array of non-negative integers (integral floats are accepted)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array of class labels, got shape {y.shape}")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iub":
        raise ValueError(f"{name}: expected integer class labels 0 … C−1, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError(f"{name}: expected class labels >= 0, got {y.min()}")
    return y


def _reals(y, name: str, ndims=(1, 2)) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "fiub":
        raise ValueError(f"{name}: expected real numbers, got dtype {y.dtype}")
    if y.ndim not in ndims:
        raise ValueError(f"{name}: expected an array of {' or '.join(f'{d}' for d in ndims)} dimensions, "
                         f"got shape {y.shape}")
    if y.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name}: contains NaN or infinity")
    return y.astype(np.float64, copy=False)


def _same_length(y_true: np.ndarray, other: np.ndarray, name: str) -> None:
    if other.shape[0] != y_true.shape[0]:
        raise ValueError(f"{name}: expected {y_true.shape[0]} rows (one per sample of y_true), "
                         f"got shape {other.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("y_true: expected at least one sample, got none")


def _weights(sample_weight, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = _reals(sample_weight, "sample_weight", (1,))
    if w.shape[0] != n:
        raise ValueError(f"sample_weight: expected {n} weights (one per sample), got {w.shape[0]}")
    if w.min() < 0:
        raise ValueError(f"sample_weight: expected weights >= 0, got {w.min()}")
    if not w.sum() > 0:
        raise ValueError("sample_weight: the weights sum to 0")
    return w


def _n_classes(n_classes, *labels: np.ndarray) -> int:
    found = 1 + max((int(y.max()) for y in labels if y.size), default=0)
    if n_classes is None:
        return max(found, 1)
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes: expected an int >= 1, got {n_classes!r}")
    if found > n_classes:
        raise ValueError(f"n_classes: the labels go up to {found - 1}, beyond n_classes = {n_classes}")
    return int(n_classes)


def _mean(values: np.ndarray, w: np.ndarray | None) -> float:
    """Σ w_i v_i / Σ w_i over the samples (axis 0): the plain mean without weights."""
    return float(np.average(values, axis=0, weights=w))


# ---- classification -------------------------------------------------------------------------
def accuracy(y_true, y_pred, sample_weight=None) -> float:
    """The fraction of samples classified right: Σ w_i [ŷ_i = y_i] / Σ w_i.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
        True and predicted class labels.
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float
    """
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(y_true, y_pred, "y_pred")
    return _mean(y_true == y_pred, _weights(sample_weight, y_true.shape[0]))


def _scores(y_score, y_true: np.ndarray, name: str = "y_score") -> np.ndarray:
    """Scores (n, C) with C ≥ 2 columns: a 1-d score s of the positive class becomes [−s, s]
    for ranking, which keeps the order of class 1's scores."""
    S = _reals(y_score, name)
    _same_length(y_true, S, name)
    if S.ndim == 1 or S.shape[1] == 1:
        s = S.reshape(-1)
        S = np.stack([-s, s], axis=1)
    if y_true.max() >= S.shape[1]:
        raise ValueError(f"y_true: labels must lie in [0, {S.shape[1] - 1}] (one column of {name} each), "
                         f"got {y_true.max()}")
    return S


def top_k_accuracy(y_true, y_score, k: int = 5, sample_weight=None) -> float:
    """The fraction of samples whose true class is among the k highest scores:
    Σ w_i [rank_i < k] / Σ w_i, rank_i = #{j : S_ij > S_iy} + #{j > y : S_ij = S_iy}
    (ties go to the higher class index, as scikit-learn's stable sort does).

    Parameters
    ----------
    y_true : array-like of int, shape (n,)
    y_score : array-like of shape (n, C)
        Scores or probabilities, one column per class.
    k : int
        How many of the best-scored classes count (k ≥ C: every sample counts).
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float
    """
    y_true = _labels(y_true, "y_true")
    S = _scores(y_score, y_true)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    s_true = np.take_along_axis(S, y_true[:, None], axis=1)
    later = np.arange(S.shape[1])[None, :] > y_true[:, None]
    rank = np.count_nonzero((S > s_true) | ((S == s_true) & later), axis=1)
    return _mean(rank < k, _weights(sample_weight, y_true.shape[0]))


AVERAGES = ("binary", "macro", "micro", "weighted")


def _counts(y_true, y_pred, average: str, n_classes, pos_label: int, sample_weight):
    """Per-class (tp, fp, fn, support) from the confusion matrix, reduced for `average`:
    one positive class for 'binary', summed for 'micro', per class otherwise."""
    if average not in AVERAGES:
        raise ValueError(f"average: expected one of {AVERAGES}, got {average!r}")
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    _same_length(y_true, y_pred, "y_pred")
    present = np.union1d(y_true, y_pred)
    if average == "binary":
        if present.max() > 1 or (n_classes is not None and n_classes > 2):
            raise ValueError(f"average='binary' needs labels 0 and 1, got labels {present[:10].tolist()}"
                             f"{' …' if present.size > 10 else ''}; choose average 'macro', 'micro' or 'weighted'")
        if pos_label not in (0, 1):
            raise ValueError(f"pos_label: expected 0 or 1, got {pos_label!r}")
        n_classes = 2
    cm = confusion_matrix(y_true, y_pred, n_classes, sample_weight).astype(np.float64)
    tp = np.diag(cm)
    fp, fn, support = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp, cm.sum(axis=1)
    if average == "binary":
        return tp[[pos_label]], fp[[pos_label]], fn[[pos_label]], support[[pos_label]]
    if n_classes is None:      # scikit-learn's classes: those in y_true or y_pred
        tp, fp, fn, support = tp[present], fp[present], fn[present], support[present]
    if average == "micro":
        return tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True), support.sum(keepdims=True)
    return tp, fp, fn, support


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(num.shape, float(zero_division))
    np.divide(num, den, out=out, where=den > 0)
    return out


def _averaged(values: np.ndarray, support: np.ndarray, average: str) -> float:
    if average == "weighted":
        return float(np.average(values, weights=support)) if support.sum() > 0 else 0.0
    return float(values.mean())


def _check_zero_division(zero_division) -> float:
    if not (zero_division in (0, 1) or (isinstance(zero_division, float) and np.isnan(zero_division))):
        raise ValueError(f"zero_division: expected 0, 1 or nan, got {zero_division!r}")
    return float(zero_division)


_PRF_PARAMETERS = """
    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
    average : {'binary', 'macro', 'micro', 'weighted'}
        'binary': the score of class pos_label (labels 0 and 1 only); 'macro': the mean of
        the per-class scores; 'micro': the score of the summed counts Σ_c tp_c, Σ_c fp_c,
        Σ_c fn_c; 'weighted': the mean weighted by each class's support (Σ w of its true
        samples).
    n_classes : int, optional
        The classes 0 … n_classes−1 that 'macro' and 'weighted' average over; default (as
        scikit-learn) the classes found in y_true or y_pred.
    pos_label : {0, 1}
        The positive class of 'binary'.
    sample_weight : array-like of shape (n,), optional
    zero_division : {0, 1, nan}
        The value of a score 0/0 (a class never predicted, or absent).

    Returns
    -------
    float
    """


def _prf(score, y_true, y_pred, average, n_classes, pos_label, sample_weight, zero_division) -> float:
    """score(tp, fp, fn) → (numerator, denominator), per class or summed, then averaged."""
    zd = _check_zero_division(zero_division)
    tp, fp, fn, support = _counts(y_true, y_pred, average, n_classes, pos_label, sample_weight)
    num, den = score(tp, fp, fn)
    return _averaged(_ratio(num, den, zd), support, average)


def precision(y_true, y_pred, average: str = "binary", n_classes: int | None = None, pos_label: int = 1,
              sample_weight=None, zero_division: float = 0.0) -> float:
    return _prf(lambda tp, fp, fn: (tp, tp + fp), y_true, y_pred, average, n_classes, pos_label,
                sample_weight, zero_division)


def recall(y_true, y_pred, average: str = "binary", n_classes: int | None = None, pos_label: int = 1,
           sample_weight=None, zero_division: float = 0.0) -> float:
    return _prf(lambda tp, fp, fn: (tp, tp + fn), y_true, y_pred, average, n_classes, pos_label,
                sample_weight, zero_division)


def f1(y_true, y_pred, average: str = "binary", n_classes: int | None = None, pos_label: int = 1,
       sample_weight=None, zero_division: float = 0.0) -> float:
    return _prf(lambda tp, fp, fn: (2 * tp, 2 * tp + fp + fn), y_true, y_pred, average, n_classes,
                pos_label, sample_weight, zero_division)


precision.__doc__ = """Of the samples predicted as a class, the fraction that are of it:
    P_c = tp_c / (tp_c + fp_c), averaged.
""" + _PRF_PARAMETERS
recall.__doc__ = """Of the samples of a class, the fraction predicted as it:
    R_c = tp_c / (tp_c + fn_c), averaged.
""" + _PRF_PARAMETERS
f1.__doc__ = """The harmonic mean of precision and recall:
    F1_c = 2 P_c R_c / (P_c + R_c) = 2 tp_c / (2 tp_c + fp_c + fn_c), averaged.
""" + _PRF_PARAMETERS


def _binary_auc(positive: np.ndarray, s: np.ndarray, w: np.ndarray | None) -> float:
    """The area under the ROC curve of scores s for the 0/1 truth `positive`: the curve's
    points (FP(t), TP(t)) at every distinct threshold t, joined by straight lines (the
    trapezoid rule, which counts a tie between a positive and a negative as ½)."""
    order = np.argsort(-s, kind="mergesort")
    s, positive = s[order], positive[order]
    w = np.ones_like(s) if w is None else w[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.shape[0] - 1]     # the last row of each distinct score
    tps = np.r_[0.0, np.cumsum(w * positive)[last]]
    fps = np.r_[0.0, np.cumsum(w * ~positive)[last]]
    return float(np.trapezoid(tps, fps) / (tps[-1] * fps[-1]))


def roc_auc(y_true, y_score, average: str = "macro", sample_weight=None) -> float:
    """The area under the ROC curve: the probability that a random positive scores above a
    random negative (ties count ½), AUC = ∫ TPR d(FPR). Multi-class: one-vs-rest, AUC_c of
    class c against all others on the scores S_:c, averaged.

    Parameters
    ----------
    y_true : array-like of int, shape (n,)
        Labels 0 … C−1; every class must occur, and not alone (AUC needs both positives and
        negatives).
    y_score : array-like of shape (n,), (n, 1) or (n, C)
        Scores of class 1 (two classes), or one column of scores per class (n, 2 takes
        column 1 for two classes).
    average : {'macro', 'weighted'}
        Multi-class: the plain mean of AUC_c, or weighted by each class's support Σ w.
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float
    """
    y_true = _labels(y_true, "y_true")
    S = _reals(y_score, "y_score")
    _same_length(y_true, S, "y_score")
    w = _weights(sample_weight, y_true.shape[0])
    if average not in ("macro", "weighted"):
        raise ValueError(f"average: expected 'macro' or 'weighted', got {average!r}")
    C = 2 if S.ndim == 1 or S.shape[1] <= 2 else S.shape[1]
    support = np.bincount(y_true, weights=w, minlength=C)
    if support.shape[0] > C:
        raise ValueError(f"y_true: labels must lie in [0, {C - 1}] (the columns of y_score), got {y_true.max()}")
    absent = np.flatnonzero(support == 0)
    if absent.size:
        raise ValueError(f"roc_auc: y_true has no samples of class {absent.tolist()[:10]} (of {C}); the ROC "
                         "AUC needs positives and negatives of every class" +
                         (" (got a single class)" if C - absent.size == 1 else ""))
    if C == 2:
        s = S.reshape(-1) if S.ndim == 1 or S.shape[1] == 1 else S[:, 1]
        return _binary_auc(y_true == 1, s, w)
    auc = np.array([_binary_auc(y_true == c, S[:, c], w) for c in range(C)])
    return _averaged(auc, support, "weighted" if average == "weighted" else "macro")


def log_loss(y_true, y_prob, sample_weight=None) -> float:
    """The mean negative log-likelihood of the true classes (cross-entropy):
    −Σ_i w_i log p_{i,y_i} / Σ_i w_i, with p clipped to [ε, 1 − ε] (ε the machine epsilon of
    y_prob's dtype) so that a confident mistake costs much but not infinity.

    Parameters
    ----------
    y_true : array-like of int, shape (n,)
    y_prob : array-like of shape (n, C), or (n,) for the probability of class 1
        Probabilities in [0, 1] (not checked to sum to 1 over a row).
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float
    """
    y_true = _labels(y_true, "y_true")
    P = np.asarray(y_prob)
    eps = np.finfo(P.dtype if P.dtype.kind == "f" else np.float64).eps
    P = _reals(P, "y_prob")
    _same_length(y_true, P, "y_prob")
    if P.min() < 0 or P.max() > 1:
        raise ValueError(f"y_prob: expected probabilities in [0, 1], got values in [{P.min()}, {P.max()}]")
    if P.ndim == 1 or P.shape[1] == 1:
        p1 = P.reshape(-1)
        P = np.stack([1 - p1, p1], axis=1)
    if y_true.max() >= P.shape[1]:
        raise ValueError(f"y_true: labels must lie in [0, {P.shape[1] - 1}] (one column of y_prob each), "
                         f"got {y_true.max()}")
    p_true = np.take_along_axis(np.clip(P, eps, 1 - eps), y_true[:, None], axis=1)[:, 0]
    return -_mean(np.log(p_true), _weights(sample_weight, y_true.shape[0]))


# ---- regression -----------------------------------------------------------------------------
def _targets(y_true, y_pred, sample_weight):
    """(y_true, y_pred) as float64 (n, m) of one shape, and the weights."""
    y_true, y_pred = _reals(y_true, "y_true"), _reals(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_pred: expected the shape of y_true {y_true.shape}, got {y_pred.shape}")
    return y_true.reshape(y_true.shape[0], -1), y_pred.reshape(y_true.shape[0], -1), \
        _weights(sample_weight, y_true.shape[0])


_ERROR_PARAMETERS = """
    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,) or (n, m)
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float
    """


def _mean_error(error, y_true, y_pred, sample_weight) -> float:
    """Σ_i w_i error(y_ij − ŷ_ij) / Σ_i w_i, averaged over the outputs j."""
    y_true, y_pred, w = _targets(y_true, y_pred, sample_weight)
    return float(np.mean(np.average(error(y_true - y_pred), axis=0, weights=w)))


def mse(y_true, y_pred, sample_weight=None) -> float:
    return _mean_error(np.square, y_true, y_pred, sample_weight)


def mae(y_true, y_pred, sample_weight=None) -> float:
    return _mean_error(np.abs, y_true, y_pred, sample_weight)


mse.__doc__ = """The mean squared error, Σ_i w_i (y_ij − ŷ_ij)² / Σ_i w_i, averaged over the outputs j.
""" + _ERROR_PARAMETERS
mae.__doc__ = """The mean absolute error, Σ_i w_i |y_ij − ŷ_ij| / Σ_i w_i, averaged over the outputs j.
""" + _ERROR_PARAMETERS


def r2(y_true, y_pred, sample_weight=None) -> float:
    """The coefficient of determination, R²_j = 1 − Σ_i w_i (y_ij − ŷ_ij)² / Σ_i w_i (y_ij − ȳ_j)²
    (ȳ_j the weighted mean), averaged over the outputs j; an output with constant truth
    scores 1 when predicted exactly, else 0 (scikit-learn's force_finite).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,) or (n, m)
        At least two samples.
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float
    """
    y_true, y_pred, w = _targets(y_true, y_pred, sample_weight)
    if y_true.shape[0] < 2:
        raise ValueError(f"r2: expected at least 2 samples, got {y_true.shape[0]}")
    ww = np.ones((y_true.shape[0], 1)) if w is None else w[:, None]
    residual = (ww * (y_true - y_pred) ** 2).sum(axis=0)
    total = (ww * (y_true - np.average(y_true, axis=0, weights=w)) ** 2).sum(axis=0)
    score = np.where(residual == 0, 1.0, 0.0)
    np.subtract(1.0, residual / np.where(total == 0, 1.0, total), out=score, where=total != 0)
    return float(score.mean())


# ---- metrics by name (Trainer(metrics=[...])) --------------------------------------------------
class Outputs:
    """A model's outputs on a data set and the truth, in the forms the metrics take.

    Parameters
    ----------
    Z : ndarray of shape (n, n_out)
        The network outputs.
    y : ndarray
        The targets as the loss took them (labels (n,), or (n, m)).
    kind : str
        What the outputs are (losses.OUTPUT_KINDS).
    threshold : float
        A single output's class threshold on its own scale (0 for a logit, ½ for a probability).
    """

    def __init__(self, Z: np.ndarray, y: np.ndarray, kind: str, threshold: float):
        self.Z, self.y, self.kind, self.threshold = Z, y, kind, threshold
        self.n_classes = max(Z.shape[1], 2)
        self.average = "binary" if self.n_classes == 2 else "macro"

    @property
    def labels(self) -> np.ndarray:
        """The true classes."""
        return labels_from_targets(self.y)

    @property
    def classes(self) -> np.ndarray:
        """The predicted classes (classes_from_outputs with the model's threshold)."""
        return classes_from_outputs(self.Z, threshold=self.threshold)

    @property
    def proba(self) -> np.ndarray:
        """Class probabilities (probabilities_from_outputs), one column per class."""
        return probabilities_from_outputs(self.Z.copy(), self.kind)


_BY_CLASS: dict[str, Callable[[Outputs], float]] = {
    "accuracy": lambda o: accuracy(o.labels, o.classes),
    "precision": lambda o: precision(o.labels, o.classes, o.average, o.n_classes),
    "recall": lambda o: recall(o.labels, o.classes, o.average, o.n_classes),
    "f1": lambda o: f1(o.labels, o.classes, o.average, o.n_classes),
    "roc_auc": lambda o: roc_auc(o.labels, o.proba),
    "log_loss": lambda o: log_loss(o.labels, o.proba),
}
_BY_VALUE: dict[str, Callable[[Outputs], float]] = {
    "mse": lambda o: mse(o.y, o.Z),
    "mae": lambda o: mae(o.y, o.Z),
    "r2": lambda o: r2(o.y, o.Z),
}
METRIC_NAMES = (*_BY_CLASS, "top_k_accuracy", "top<k>_accuracy", *_BY_VALUE)
_BUILTIN_METRICS = frozenset(METRIC_NAMES)
_TOP_K = re.compile(r"top(\d+|_k)_accuracy")
_HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "roc_auc", "r2", "auc"}
_LOWER_IS_BETTER: set[str] = set()
_ON = {"classes": lambda fn: lambda o: float(fn(o.labels, o.classes)),
       "probabilities": lambda fn: lambda o: float(fn(o.labels, o.proba)),
       "values": lambda fn: lambda o: float(fn(o.y, o.Z))}


def register_metric(fn=None, *, name: str | None = None, on: str = "classes", higher_is_better: bool = True):
    """Make a function a metric Trainer(metrics=[name]) computes by name, and one whose
    direction callbacks (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau) know. Usable as
    a decorator, with or without arguments. Registration lasts for the process.

    Parameters
    ----------
    fn : callable, optional
        f(y_true, y) -> float.
    name : str, optional
        The logged name (default ``fn.__name__``); not a built-in metric's name.
    on : {'classes', 'probabilities', 'values'}
        What f takes: the true and the predicted classes (n,), the true classes and class
        probabilities (n, C) (both for a classifier), or the targets and the outputs (n, m)
        (a regressor).
    higher_is_better : bool
        Whether larger values are better (an accuracy; False for an error).

    Returns
    -------
    callable
        `fn` itself (a decorator without `fn`).
    """
    if on not in _ON:
        raise ValueError(f"register_metric: on should be one of {sorted(_ON)}, got {on!r:.40}")

    def add(fn):
        if not callable(fn):
            raise TypeError(f"register_metric: expected a function, got {fn!r:.60}")
        label = getattr(fn, "__name__", "") if name is None else name
        table = _BY_VALUE if on == "values" else _BY_CLASS
        other = _BY_CLASS if on == "values" else _BY_VALUE
        if label in other and label not in _BUILTIN_METRICS:
            raise ValueError(f"register_metric: {label!r} is already registered on other outputs")
        register(table, _BUILTIN_METRICS, label, functools.update_wrapper(_ON[on](fn), fn), "metric")
        (_HIGHER_IS_BETTER if higher_is_better else _LOWER_IS_BETTER).add(label)
        (_LOWER_IS_BETTER if higher_is_better else _HIGHER_IS_BETTER).discard(label)
        return fn
    return add if fn is None else add(fn)


def registered_metric_name(fn) -> str | None:
    """The name a function was registered under with register_metric, or None.

    Parameters
    ----------
    fn : callable

    Returns
    -------
    str or None
    """
    for table in (_BY_CLASS, _BY_VALUE):
        for label, entry in table.items():
            if label not in _BUILTIN_METRICS and (entry is fn or getattr(entry, "__wrapped__", None) is fn):
                return label
    return None


def metric_names_for_file(specs, where: str) -> list[str] | None:
    """Trainer(metrics=specs) as a file records it: names (a registered function by its
    registered name), None for the default; an unregistered function is refused, since a
    file naming it could not be resumed.

    Parameters
    ----------
    specs : list of str or callable, or None
    where : str
        The file, for the message.

    Returns
    -------
    list of str or None
    """
    if specs is None:
        return None
    names = []
    for m in specs:
        name = m if isinstance(m, str) else registered_metric_name(m)
        if name is None:
            raise not_registered(m, "metric", where)
        names.append(name)
    return names


def higher_is_better(name: str) -> bool:
    """Whether larger values of a logged metric are better: accuracies, precision, recall, F1,
    ROC AUC, R² (with or without a 'val_' prefix); losses and errors are smaller-is-better.

    Parameters
    ----------
    name : str
        A logged name ('val_f1', 'top5_accuracy', 'val_loss', ...).

    Returns
    -------
    bool
    """
    base = name[4:] if name.startswith("val_") else name
    return base not in _LOWER_IS_BETTER and (base in _HIGHER_IS_BETTER or "acc" in base
                                             or base.endswith("_auc"))


def metric(name, kind: str, classifier: bool) -> tuple[str, Callable[[Outputs], float]]:
    """The metric Trainer(metrics=[...]) computes for a name or a callable, checked against
    what the model's outputs are.

    Parameters
    ----------
    name : str or callable
        A name of METRIC_NAMES ('top_k_accuracy' is top-5, 'top3_accuracy' top-3), or a
        function f(y_true, outputs) -> float named by its __name__: y_true the true classes
        (n,) and outputs the class probabilities (n, C) of a classifier, or the targets and
        the outputs (n, m) of a regressor.
    kind : str
        What the outputs are (losses.OUTPUT_KINDS).
    classifier : bool
        Whether the outputs give one class per row.

    Returns
    -------
    (str, callable)
        The logged name and a function of Outputs.
    """
    if callable(name) and registered_metric_name(name) is not None:
        name = registered_metric_name(name)     # as registered (its `on`): the same as by name
    if callable(name):
        fn = name
        label = getattr(fn, "__name__", "")
        if not label.isidentifier() or label == "<lambda>":
            raise ValueError(f"metrics: a callable metric needs a __name__ to be logged under, got {label!r}; "
                             "use a def (or set fn.__name__)")
        if classifier:
            return label, lambda o: float(fn(o.labels, o.proba))
        return label, lambda o: float(fn(o.y, o.Z))
    if not isinstance(name, str):
        raise TypeError(f"metrics: expected names or callables, got {type(name).__name__}")
    top = _TOP_K.fullmatch(name)
    if name in _BY_CLASS or top:
        if not classifier:
            raise ValueError(f"metrics: {name!r} needs outputs that are classes; this model's outputs are "
                             f"{kind} (a regressor or several labels): use 'mse', 'mae' or 'r2'")
        if top:
            k = 5 if top.group(1) == "_k" else int(top.group(1))
            return name, lambda o: top_k_accuracy(o.labels, o.proba, k)
        return name, _BY_CLASS[name]
    if name in _BY_VALUE:
        if kind not in ("values", "probabilities"):
            raise ValueError(f"metrics: {name!r} compares outputs with real targets; this model's outputs are "
                             f"{kind}, not values: use 'log_loss', 'accuracy', ...")
        return name, _BY_VALUE[name]
    raise ValueError(f"metrics: unknown metric {name!r}; expected one of "
                     f"{(*METRIC_NAMES, *(set(_BY_CLASS) | set(_BY_VALUE)) - _BUILTIN_METRICS)} or a callable "
                     + load_hint("metric"))
