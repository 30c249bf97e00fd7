"""Losses on the network output Z (B × m): value and gradient ∂L/∂Z, computed in the core.

    cross_entropy         softmax fused in: Z are logits, targets are integer labels
                          (or class probabilities); L = mean_i [lse(Z_i) − Z_{i,y_i}]
    binary_cross_entropy  sigmoid fused in: Z are logits, targets in [0, 1]; pos_weight p
                          weighs the positive term: ℓ = −[p·y log σ(z) + (1−y) log(1−σ(z))]
    mse, mae, huber(δ)    regression, mean over all elements

Sample weights w (one per row, >= 0) turn every mean into a weighted mean:
L = Σ_i w_i ℓ_i / Σ_i w_i for cross-entropy, L = Σ_i w_i Σ_j ℓ_ij / (m Σ_i w_i) for the
elementwise losses (a row's weight applies to each of its m outputs); Σ_i w_i = 0 gives 0.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._registry import register
from ._validation import check_float, check_labels, check_targets


# What a model's outputs are, known from the loss it was trained on (Loss.output_kind):
#   class_logits    softmax gives class probabilities         (cross_entropy)
#   binary_logits   σ gives each output's probability         (binary_cross_entropy)
#   probabilities   already probabilities (a sigmoid/softmax output trained on a regression loss)
#   values          real numbers, probabilities of nothing    (a regressor)
OUTPUT_KINDS = ("class_logits", "binary_logits", "probabilities", "values")


class Loss:
    """Base class of the losses; subclass it (and register it, register_loss) for your own.

    A subclass implements value_and_grad; what its targets mean is said by a few attributes
    and methods, whose defaults fit a regression loss on real targets:

    ``name``
        The name files record (register_loss sets it; default the class name).
    ``classifier``
        False (default): targets are real values and no accuracy is counted. True: each
        target row names a class (an integer label, or a one-hot / probability row), so
        accuracy is counted on training and validation data, from the argmax of the
        outputs (a single output: its sign as a logit, or ½ after a sigmoid).
    ``prepare_targets``
        Validates targets once; default: real targets of shape (n, n_outputs) (or (n,) for
        one output). Override it to take integer labels.
    ``reports_accuracy(n_outputs)``, ``output_kind(final_activation)``,
    ``targets_from_labels(labels, n_outputs, dtype)``, ``config()``
        See each method; config() must return the constructor arguments (JSON values).
    """

    name = ""
    classifier = False

    def prepare_targets(self, y, n_samples: int, n_outputs: int, dtype: np.dtype, name: str = "y"):
        """Validate user targets once (at the boundary) and return them ready for the kernel."""
        return check_targets(y, n_samples, n_outputs, dtype, name)

    def value_and_grad(self, Z: np.ndarray, y: np.ndarray, delta: np.ndarray | None,
                       w: np.ndarray | None = None) -> float:
        """L(Z, y), writing δ = ∂L/∂Z into delta unless it is None; with sample weights w (B,)
        of Z's dtype, the weighted mean (see the module's docstring)."""
        raise NotImplementedError

    def __call__(self, Z, y, w=None) -> float:
        # a loss of one's own may take no weights: w is passed only when there are some
        return self.value_and_grad(Z, y, None) if w is None else self.value_and_grad(Z, y, None, w)

    def targets_from_labels(self, labels: np.ndarray, n_outputs: int, dtype) -> np.ndarray:
        """This loss's targets for integer class labels: one-hot rows (a 0/1 column for one
        output); cross-entropy takes the labels themselves."""
        labels = np.asarray(labels, dtype=np.int64)
        if n_outputs == 1:
            return labels.reshape(-1, 1).astype(dtype)
        return np.ascontiguousarray(np.eye(n_outputs, dtype=dtype)[labels])

    def classes_of(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """Each row's class (int64), for class_weight; only a classifier's targets have one."""
        raise ValueError(f"class_weight: {self.name} targets are not classes; use sample_weight")

    def reports_accuracy(self, n_outputs: int) -> bool:
        """Whether a model of n_outputs trained on this loss predicts one class per row
        (default: `classifier`)."""
        return self.classifier

    def accuracy_note(self, n_outputs: int) -> str:
        """Why a model of n_outputs trained on this loss gets no accuracy (when
        reports_accuracy says so); the Trainer says it once."""
        if self.classifier:
            return f"{n_outputs} outputs of {self.name} are several labels, not one class per row"
        if type(self).__module__ == __name__:
            return f"{self.name} is a regression loss"
        return (f"{type(self).__name__} is not a classification loss: set {type(self).__name__}.classifier "
                "= True if its targets are classes")

    def output_kind(self, final_activation: str | None) -> str:
        """What the outputs of a model trained on this loss are (OUTPUT_KINDS), given the
        activation of its last layer: on sigmoid/softmax outputs probabilities (for a
        regression loss, the textbook's quadratic cost), else class logits for a
        `classifier` and values for a regression loss. Override it for other outputs
        (a single binary logit: 'binary_logits')."""
        if final_activation in ("sigmoid", "softmax"):
            return "probabilities"
        return "class_logits" if self.classifier else "values"

    def config(self) -> dict:
        """The constructor arguments that rebuild this loss (JSON values); default none."""
        return {}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class CrossEntropy(Loss):
    """Softmax cross-entropy on logits; targets: int labels (B,) or probabilities (B, C)."""

    name = "cross_entropy"
    classifier = True

    def prepare_targets(self, y, n_samples, n_outputs, dtype, name="y"):
        if n_outputs < 2:
            raise ValueError(f"cross_entropy needs a model with >= 2 outputs (one per class), got {n_outputs}; "
                             "use binary_cross_entropy for a single logit")
        if isinstance(y, np.ndarray) and y.ndim == 2 and y.dtype.kind == "f":
            y = check_targets(y, n_samples, n_outputs, dtype, name)
            if (y < 0).any():
                raise ValueError(f"{name}: class probabilities must be >= 0")
            return y
        return check_labels(y, n_samples, n_outputs, name)

    def value_and_grad(self, Z, y, delta, w=None):
        return _core.softmax_cross_entropy(Z, y, delta, w)

    def output_kind(self, final_activation):
        return "class_logits"

    def classes_of(self, y, n_outputs):
        if y.ndim != 1:
            raise ValueError("class_weight: needs integer class labels, got class probabilities "
                             "(weigh the rows with sample_weight)")
        return y

    def targets_from_labels(self, labels, n_outputs, dtype):
        return np.asarray(labels, dtype=np.int64)


class _Pointwise(Loss):
    kind = ""

    def __init__(self):
        self.huber_delta = 1.0   # read by the kernel for Huber only

    @property
    def name(self):
        return self.kind

    def value_and_grad(self, Z, y, delta, w=None):
        return _core.pointwise_loss(self.kind, Z, y, delta, self.huber_delta, 1.0, w)


class BinaryCrossEntropy(_Pointwise):
    """Binary cross-entropy on logits z, computed stably; targets y in [0, 1]:

        ℓ = −[p·y·log σ(z) + (1 − y)·log(1 − σ(z))],   ∂ℓ/∂z = (1 + (p − 1)·y)·σ(z) − p·y

    with p = 1 unless pos_weight is given (PyTorch's BCEWithLogitsLoss(pos_weight=p)).

    Parameters
    ----------
    pos_weight : float or sequence of float, optional
        p ≥ 0 for every output (a number) or one per output (length m, the model's outputs).
        p > 1 raises recall on the positive class; for an imbalanced problem
        p = n_negative / n_positive balances the two terms.
    """

    kind = "binary_cross_entropy"
    classifier = True

    def __init__(self, pos_weight=None):
        super().__init__()
        self.pos_weight = None
        if pos_weight is not None:
            p = np.asarray(pos_weight, dtype=np.float64)
            if p.ndim > 1 or p.size == 0 or not np.isfinite(p).all() or (p < 0).any():
                raise ValueError(f"pos_weight: expected a number or a 1-d sequence of finite numbers "
                                 f">= 0, got {pos_weight!r}")
            self.pos_weight = float(p) if p.ndim == 0 else [float(v) for v in p]

    def _pos_weight(self, Z):
        """pos_weight as the kernel takes it: (m,) of Z's dtype, or None."""
        if self.pos_weight is None:
            return None
        p = np.asarray(self.pos_weight, dtype=Z.dtype)
        if p.ndim == 0:
            return np.full(Z.shape[1], p, dtype=Z.dtype)
        if p.shape[0] != Z.shape[1]:
            raise ValueError(f"pos_weight: expected one weight per output ({Z.shape[1]}), got {p.shape[0]}")
        return p

    def value_and_grad(self, Z, y, delta, w=None):
        return _core.pointwise_loss(self.kind, Z, y, delta, 1.0, 1.0, w, self._pos_weight(Z))

    def config(self):
        return {} if self.pos_weight is None else {"pos_weight": self.pos_weight}

    def prepare_targets(self, y, n_samples, n_outputs, dtype, name="y"):
        y = check_targets(y, n_samples, n_outputs, dtype, name)
        if ((y < 0) | (y > 1)).any():
            raise ValueError(f"{name}: binary targets must lie in [0, 1], got values in [{y.min()}, {y.max()}]")
        return y

    def reports_accuracy(self, n_outputs):
        return n_outputs == 1   # several outputs are several labels, not one class

    def classes_of(self, y, n_outputs):
        if n_outputs != 1 or ((y != 0) & (y != 1)).any():
            raise ValueError("class_weight: binary_cross_entropy needs one output with 0/1 targets "
                             "(several outputs: use pos_weight or sample_weight)")
        return y[:, 0].astype(np.int64)

    def output_kind(self, final_activation):
        return "binary_logits"


class MSE(_Pointwise):
    """Squared error r² (r = z − y), reduced over a batch of B rows of m outputs as

        'mean'              L = 1/(B·m) Σ_i Σ_j r_ij²     (PyTorch's and Keras's MSE)
        'sum_outputs'       L = 1/B Σ_i ‖r_i‖²
        'half_sum_outputs'  L = 1/(2B) Σ_i ‖r_i‖²         (the textbook's quadratic cost
                                                            C = 1/2n Σ_x ‖y(x) − a(x)‖²)

    The reductions differ by a constant factor (m, m/2), which scales the gradient and so
    the learning rate that works: the textbook's η = 3 is meant for 'half_sum_outputs'.

    Parameters
    ----------
    reduction : {'mean', 'sum_outputs', 'half_sum_outputs'}
    """
    kind = "mse"
    REDUCTIONS = {"mean": None, "sum_outputs": 1.0, "half_sum_outputs": 0.5}   # per-sample factor

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in self.REDUCTIONS:
            raise ValueError(f"MSE reduction: expected one of {sorted(self.REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction

    def value_and_grad(self, Z, y, delta, w=None):
        factor = self.REDUCTIONS[self.reduction]
        scale = 1.0 if factor is None else factor * Z.shape[1]   # mean over elements × m·factor
        return _core.pointwise_loss(self.kind, Z, y, delta, self.huber_delta, scale, w)

    def config(self):
        return {} if self.reduction == "mean" else {"reduction": self.reduction}


class MAE(_Pointwise):
    """Mean absolute error, mean over all elements."""
    kind = "mae"


class Huber(_Pointwise):
    """Huber loss: ℓ = ½r² for |r| ≤ δ, δ(|r| − ½δ) beyond (r = z − y); mean over all elements.

    Parameters
    ----------
    delta : float
        δ > 0.
    """

    kind = "huber"

    def __init__(self, delta: float = 1.0):
        self.huber_delta = check_float(delta, "Huber delta", 0.0, low_open=True)

    def config(self):
        return {"delta": self.huber_delta}


LOSSES: dict[str, type[Loss]] = {"cross_entropy": CrossEntropy, "binary_cross_entropy": BinaryCrossEntropy,
                                 "mse": MSE, "mae": MAE, "huber": Huber}
_BUILTIN_LOSSES = frozenset(LOSSES)


def register_loss(cls=None, *, name: str | None = None):
    """Make a custom Loss subclass one that files can name: checkpoints and saved trained
    models record it, Trainer.from_checkpoint and pyneuro.load rebuild it as
    ``cls(**loss.config())``, and Trainer(loss=name) finds it. Usable as a decorator,
    with or without arguments.

    Registration lasts for the process: import the module that registers the class before
    loading a file that names it. Saving with an unregistered loss is refused.

    Parameters
    ----------
    cls : type, optional
        The Loss subclass (set its `classifier` to True when targets are classes).
    name : str, optional
        The name files record (default: the class's own `name`, else its ``__name__``);
        not a built-in loss's name. It becomes ``cls.name``.

    Returns
    -------
    type
        `cls` itself (a decorator without `cls`).
    """
    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, Loss)):
            raise TypeError(f"register_loss: expected a subclass of pyneuro.Loss, got {cls!r:.60}")
        own = cls.__dict__.get("name")
        chosen = name or (own if isinstance(own, str) and own else cls.__name__)
        register(LOSSES, _BUILTIN_LOSSES, chosen, cls, "loss")
        cls.name = chosen
        return cls
    return add if cls is None else add(cls)


def get_loss(loss) -> Loss:
    """A Loss from its name or a Loss instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ValueError(f"loss: expected a Loss or one of {sorted(LOSSES)}, got {loss!r}")
