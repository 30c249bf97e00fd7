"""scikit-learn estimators on pyneuro's model and Trainer (scikit-learn is an optional extra).

    from pyneuro.sklearn import MLPClassifier, MLPRegressor
    clf = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=30, random_state=0).fit(X, y)

The constructor speaks scikit-learn's MLP dialect (hidden_layer_sizes, activation,
solver, alpha, batch_size, learning_rate_init, max_iter, tol, n_iter_no_change,
early_stopping, validation_fraction, momentum, nesterovs_momentum, random_state,
warm_start, verbose) plus pyneuro's own (dtype, threads, dropout).

    loss       classifier: softmax cross-entropy; regressor: ½·mean squared error
    alpha      L2 penalty α/(2·batch)·‖W‖², i.e. weight decay λ = α / batch size
    weights    fit/partial_fit(sample_weight=w): each batch minimises the weighted mean loss
               Σ_i w_i ℓ_i / Σ_i w_i (pyneuro.Trainer.fit); the validation score is unweighted
    stopping   after max_iter epochs, or when the monitored value (training loss, or the
               validation score with early_stopping) has not improved by tol for
               n_iter_no_change epochs
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _core
from ._validation import check_float, check_int
from .architectures import layers_from_spec
from .callbacks import Callback
from .layers import Dense
from .metrics import classes_from_outputs
from .model import Sequential
from .optimizers import SGD, Adam
from .trainer import Trainer

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
                "gelu": "gelu", "elu": "elu", "leaky_relu": "leaky_relu"}


class _StopWhenFlat(Callback):
    """scikit-learn's stopping rule: stop when `key` (minimised) has not improved on the
    best by more than tol for n epochs in a row."""

    def __init__(self, key: str, tol: float, n: int):
        self.key, self.tol, self.n = key, tol, n
        self.best, self.wait = np.inf, 0

    def on_epoch_end(self, epoch, logs):
        value = logs[self.key]
        if value > self.best - self.tol:
            self.wait += 1
            if self.wait >= self.n:
                self.trainer.stop_training = True
        else:
            self.wait = 0
        self.best = min(self.best, value)


class _BaseMLP(BaseEstimator):
    _loss = "cross_entropy"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, dtype="float32",
                 threads=None, dropout=0.0, layers=None, input_shape=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.threads = threads
        self.dropout = dropout
        self.layers = layers
        self.input_shape = input_shape

    # ---- parameters -> pyneuro objects ------------------------------------------------------
    def _check_params(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.isscalar(sizes) else list(sizes)
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes: expected positive ints, got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.solver not in ("adam", "sgd"):
            raise ValueError(f"solver: expected 'adam' or 'sgd' (pyneuro has no lbfgs), got {self.solver!r}")
        check_int(self.max_iter, "max_iter", 1)
        check_float(self.alpha, "alpha", 0.0)
        if self.batch_size != "auto":
            check_int(self.batch_size, "batch_size", 1)   # or 'auto'
        if self.early_stopping:
            check_float(self.validation_fraction, "validation_fraction", 0.0, 1.0, low_open=True, high_open=True)
        return sizes

    def _batch(self, n):
        return min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)

    def _build(self, n_in, n_out, sizes):
        seed = int(self._rng.integers(2**63))
        if self.layers is None:
            return Sequential.mlp(n_in, sizes, n_out, _ACTIVATIONS[self.activation], self.dropout,
                                  seed=seed, dtype=self.dtype)
        shape = (n_in,) if self.input_shape is None else tuple(self.input_shape)
        if math.prod(shape) != n_in:
            raise ValueError(f"input_shape {shape} holds {math.prod(shape)} values, X has {n_in} features")
        return Sequential(layers_from_spec(self.layers, shape, n_out, _ACTIVATIONS[self.activation]), seed=seed,
                          dtype=self.dtype, input_shape=shape)

    def _trainer(self, n_samples):
        batch = self._batch(n_samples)
        decay = self.alpha / batch
        if self.solver == "sgd":
            opt = SGD(lr=self.learning_rate_init, momentum=self.momentum,
                      nesterov=bool(self.nesterovs_momentum and self.momentum > 0), weight_decay=decay)
        else:
            opt = Adam(lr=self.learning_rate_init, weight_decay=decay)
        return Trainer(self.model_, self._loss, opt, batch_size=batch, epochs=self.max_iter,
                       seed=int(self._rng.integers(2**63)), verbose=2 if self.verbose else 0,
                       allow_nonfinite=True,   # validate_data has refused NaN/inf already: no second scan
                       metrics=[])             # scikit-learn's MLPs log the loss alone

    # ---- fitting ------------------------------------------------------------------------
    def _fit(self, X, y, incremental, sample_weight=None):
        sizes = self._check_params()
        if self.threads is not None:
            _core.set_num_threads(self.threads)
        first = not (incremental or self.warm_start) or not hasattr(self, "model_")
        # X keeps its dtype and memory (a uint8 or float64 memmap is not copied): the Trainer
        # converts each batch to the model's dtype as it gathers it
        X, y = validate_data(self, X, y, reset=first, dtype="numeric",
                             multi_output=self._multi_output, y_numeric=not self._classifier)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        Y = self._encode(y, first)
        if first:
            rs = self.random_state   # None, an int, or a RandomState whose stream gives the seed
            self._rng = np.random.default_rng(
                rs if rs is None or isinstance(rs, (int, np.integer)) else int(check_random_state(rs).randint(2**32)))
            self.model_ = self._build(X.shape[1], self._n_out, sizes)
            self.loss_curve_ = []
            self.t_ = 0
        if not incremental or getattr(self, "_trainer_", None) is None:
            # fit (warm or not) starts a fresh optimizer from the current parameters, as scikit-learn
            # does; partial_fit continues the one it has (unless unpickled: those carry none)
            self._trainer_ = self._trainer(X.shape[0])
        trainer = self._trainer_
        if X.shape[0] < 2 and self.early_stopping and not incremental:
            raise ValueError(f"early_stopping needs at least 2 samples, got {X.shape[0]}")
        callbacks = []
        split = self.validation_fraction if self.early_stopping and not incremental else 0.0
        if split and int(round(X.shape[0] * split)) in (0, X.shape[0]):
            split = 0.0
        if not incremental:
            key = "val_loss" if split else "loss"
            callbacks.append(_StopWhenFlat(key, self.tol, self.n_iter_no_change))
        done = trainer.history.epochs
        history = trainer.fit(X, Y, epochs=1 if incremental else self.max_iter, validation_split=split,
                              callbacks=callbacks, sample_weight=sample_weight)
        self.loss_curve_ += [float(v) for v in history["loss"][done:]]
        if split:
            # scikit-learn's: accuracy for a classifier; for a regressor, −MSE (not R²)
            self.validation_scores_ = ([float(v) for v in history["val_accuracy"]] if self._classifier
                                       else [float(-v) for v in history["val_loss"]])
            self.best_validation_score_ = max(self.validation_scores_)
        self.n_iter_ = len(self.loss_curve_)
        self.t_ += (len(history["loss"]) - done) * (X.shape[0] - int(round(X.shape[0] * split)))  # samples seen
        self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ else np.inf
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else np.inf
        self.n_layers_ = len(sizes) + 2
        self.n_outputs_ = self._n_out
        self.coefs_ = [layer.W for layer in self.model_.layers if isinstance(layer, Dense)]
        self.intercepts_ = [layer.b for layer in self.model_.layers if isinstance(layer, Dense)]
        return self

    def fit(self, X, y, sample_weight=None):
        """Train for up to max_iter epochs (from scratch unless warm_start). Returns self.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like
        sample_weight : array-like of shape (n_samples,), optional
            w_i ≥ 0 per sample (not all 0); the loss is Σ_i w_i ℓ_i / Σ_i w_i per batch.
        """
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def _forward(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype="numeric")   # converted batch by batch by predict
        return self.model_.predict(X)

    def __getstate__(self):
        """Pickles (joblib, GridSearchCV) carry the model, not the optimizer's state."""
        state = dict(self.__dict__)
        state.pop("_trainer_", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier: pyneuro's Sequential of Dense layers with softmax
    cross-entropy, trained by pyneuro's Trainer. Labels may be of any type (ints, strings).

    {parameters}

    Attributes
    ----------
    classes_, n_features_in_, model_ (the pyneuro Sequential), loss_curve_, n_iter_, best_loss_,
    coefs_, intercepts_, validation_scores_ and best_validation_score_ (with early_stopping:
    accuracy on the held-out part, per epoch)
    """

    _classifier, _multi_output = True, False

    def _encode(self, y, first):
        check_classification_targets(y)
        if first:
            if not (hasattr(self, "_encoder") and not hasattr(self, "model_")):  # partial_fit sets it first
                self._encoder = LabelEncoder().fit(y)
            self.classes_ = self._encoder.classes_
            self._n_out = max(len(self.classes_), 2)
        return self._encoder.transform(y).astype(np.int64)   # refuses labels not seen at first

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), weighted by sample_weight as in fit. The first call needs
        `classes` (all labels that will appear)."""
        if not hasattr(self, "model_"):
            if classes is None:
                raise ValueError("partial_fit: the first call needs classes= (every label that will appear)")
            self._encoder = LabelEncoder().fit(np.asarray(classes))
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict_proba(self, X):
        """Class probabilities, softmax of the network's outputs: shape (n_samples, n_classes)."""
        Z = self._forward(X)                  # one column per class (two for a single class)
        if len(self.classes_) == 1:
            return np.ones((Z.shape[0], 1), Z.dtype)
        _core.activation_forward("softmax", 0.0, Z, Z)
        return Z

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most likely label of each sample."""
        Z = self._forward(X)
        if len(self.classes_) == 1:
            return np.full(Z.shape[0], self.classes_[0])
        return self.classes_[classes_from_outputs(Z)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor: Dense layers with an identity output, trained on
    mean squared error by pyneuro's Trainer. y: (n_samples,) or (n_samples, n_targets).

    {parameters}

    Attributes
    ----------
    n_features_in_, model_, loss_curve_, n_iter_, best_loss_, coefs_, intercepts_,
    validation_scores_ and best_validation_score_ (with early_stopping: −MSE on the held-out
    part per epoch, where scikit-learn reports R²)
    """

    _classifier, _multi_output, _loss = False, True, "mse"

    def _encode(self, y, first):
        y = np.asarray(y, dtype=self.dtype)
        if first:
            self._y_1d = y.ndim == 1
            self._n_out = 1 if y.ndim == 1 else y.shape[1]
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if Y.shape[1] != self._n_out:
            raise ValueError(f"y has {Y.shape[1]} targets, the model was fitted with {self._n_out}")
        return np.ascontiguousarray(Y)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), weighted by sample_weight as in fit; the first call builds
        the model."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X):
        """The network's outputs as float64 (scikit-learn's convention for regressors):
        (n_samples,) when fitted on 1-d y."""
        Z = self._forward(X).astype(np.float64)
        return Z[:, 0].copy() if self._y_1d else Z


# the constructor parameters both estimators share, written once into their docstrings
_PARAMETERS = """Parameters
    ----------
    hidden_layer_sizes : tuple of int
        Widths of the hidden layers (default (100,)).
    activation : {'relu', 'tanh', 'logistic', 'identity', 'gelu', 'elu', 'leaky_relu'}
    solver : {'adam', 'sgd'}
    alpha : float
        L2 penalty α/(2·batch)·‖W‖² (weight decay λ = α/batch).
    batch_size : int or 'auto'
        'auto': min(200, n_samples).
    learning_rate_init : float
    max_iter : int
        Epochs at most.
    shuffle : bool
        Accepted for compatibility; batches are always shuffled.
    random_state : int or None
    tol : float
    n_iter_no_change : int
        Stop when the training loss (or, with early_stopping, the validation loss) has not
        improved by tol for this many epochs.
    early_stopping : bool
    validation_fraction : float
        Held out for early stopping.
    momentum : float
        For solver='sgd'.
    nesterovs_momentum : bool
    warm_start : bool
        fit() continues from the current weights.
    verbose : bool
    dtype : {'float32', 'float64'}
        pyneuro's computation type.
    threads : int or None
        pyneuro's kernel threads (process-wide, as pn.set_num_threads).
    dropout : float
        Dropout after each hidden layer (of hidden_layer_sizes).
    layers : str, optional
        The hidden layers as a one-line spec (pyneuro.architectures, as ``pyneuro train
        --layers``), e.g. 'conv32x5,pool2,conv64x5,pool2,dense128': a convolutional network;
        it replaces hidden_layer_sizes and dropout.
    input_shape : tuple of int, optional
        One sample's shape (C, H, W) for convolutional layers; X stays 2-d, each row the
        image's C·H·W values."""
for _cls in (MLPClassifier, MLPRegressor):
    _cls.__doc__ = (_cls.__doc__ or "").replace("{parameters}", _PARAMETERS)
