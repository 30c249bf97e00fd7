"""Layers: Dense, the activation layers, Dropout, and the preprocessing layers Scale and Standardize.

A layer maps a batch X (B × n_in) to A (B × n_out):
    forward(X, training) -> A          backward(dA = ∂L/∂A) -> dX = ∂L/∂X
Each row is one sample, flat; a layer also knows the shape of a sample (in_shape →
out_shape, without the batch): an image is (C, H, W), its row the C·H·W values in that
order (NCHW, as PyTorch and ONNX lay them out), so Flatten moves no data.
(a Dense layer's pre-activation is Z = X·W + b, and δ = ∂L/∂Z is named `delta`)
Its parameters and their gradients are views into the model's two flat vectors
(one optimizer call updates everything). Work buffers are owned by the layer,
sized for the largest batch seen, and reused: a training step allocates nothing.
All arithmetic runs in pyneuro._core.
"""
from __future__ import annotations

import math

import numpy as np

from . import _core
from ._registry import register
from ._validation import check_float, check_int

_DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
_RELU_FAMILY = {"relu", "leaky_relu", "elu", "gelu"}


def _activation_name(activation) -> str:
    name = "identity" if activation is None else activation
    if not isinstance(name, str) or name not in _core.ACTIVATIONS:
        raise ValueError(f"activation: expected None or one of {sorted(_core.ACTIVATIONS)}, got {activation!r}")
    return name


class Layer:
    """Base class. Subclasses set n_in/n_out in build() (or in_shape/out_shape in
    build_shape(), for layers that need the sample's shape) and implement forward/backward.

    `trainable` (default True): set it to False to freeze the layer: the optimizer then
    never changes its parameters (nor their momentum or moments), from its next step on.
    """

    def __init__(self):
        self.n_in = self.n_out = None     # a sample's flat width in and out, set by build
        self.in_shape = self.out_shape = None   # one sample's shape in and out, set by build_shape
        self.dtype = None
        self._bufs: dict[str, np.ndarray] = {}

    @property
    def trainable(self) -> bool:
        """Whether the optimizer updates this layer's parameters (saved in the model file)."""
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"trainable: expected True or False, got {value!r:.40}")
        self._trainable = bool(value)

    # -- wiring (called by Sequential) ------------------------------------------
    def build(self, n_in: int, dtype: np.dtype) -> int:
        """Fix the input width and dtype; return the output width."""
        self.n_in, self.dtype = n_in, dtype
        self.n_out = n_in
        return self.n_out

    def build_shape(self, in_shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
        """Fix one sample's input shape and the dtype; return its output shape. The default
        reads the flat width (build): a layer that keeps the width keeps the shape, one that
        changes it (Dense) gives (n_out,)."""
        width = math.prod(in_shape)
        n_out = self.build(width, dtype)
        self.in_shape, self.out_shape = tuple(in_shape), (tuple(in_shape) if n_out == width else (n_out,))
        return self.out_shape

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of each trainable parameter (views of the model's `params`)."""
        return []

    def state_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of each value the layer keeps that training does not descend on
        (BatchNorm's running statistics): also views of `params` — saved, loaded and
        checkpointed with the parameters — but never changed by the optimizer."""
        return []

    def bind(self, params: dict, grads: dict) -> None:
        """Receive views into the model's flat parameter and gradient vectors."""

    def init_params(self, rng: np.random.Generator) -> None:
        """Draw initial parameters (and any other randomness) from rng."""

    def config(self) -> dict:
        """The constructor arguments that rebuild this layer."""
        return {}

    def pre_activation(self, X: np.ndarray, A: np.ndarray) -> np.ndarray:
        """After forward(X) gave A: the value the layer's activation was applied to (A itself
        for a layer without one)."""
        return A

    def inference(self) -> list[tuple] | None:
        """What the layer computes at inference, as steps ("dense", W, b, act, alpha),
        ("act", act, alpha) or ("affine", m, s, divide) (y = (x − m)·s, or /s); [] for none; None when it has no such form (a custom layer).
        The compiled prediction chain and the ONNX exporter both read these."""
        return None

    # -- work buffers -------------------------------------------------------------
    def _buffer(self, key: str, rows: int, cols: int) -> np.ndarray:
        """A (rows, cols) C-contiguous work array, reused across batches."""
        buf = self._bufs.get(key)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
            buf = np.empty((max(rows, 1), cols), dtype=self.dtype)
            self._bufs[key] = buf
        return buf[:rows]

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dA: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dX = ∂L/∂X from dA = ∂L/∂A (None when not needed); parameter gradients into the grads views."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class _Linear(Layer):
    """A layer Z = linear(X; W) + b, A = f(Z) with f fused into its kernel: Dense and Conv2D.
    Subclasses give the kernel calls (_forward, _backward) and the fans of W for init."""

    W: np.ndarray
    b: np.ndarray
    init: object
    activation: str
    alpha: float
    _x = _Z = _A = None

    def _set_activation(self, activation, alpha, init) -> None:
        """activation, its α (the activation's default when None) and the init scheme ('he'
        for the ReLU family when None, else 'glorot'), checked."""
        self.activation = _activation_name(activation)
        self.alpha = check_float(_DEFAULT_ALPHA.get(self.activation, 0.0) if alpha is None else alpha, "alpha")
        if init is None:
            init = "he" if self.activation in _RELU_FAMILY else "glorot"
        if not (callable(init) or init in ("he", "glorot")):
            raise ValueError(f"init: expected 'he', 'glorot' or a callable, got {init!r}")
        self.init = init

    def _with_alpha(self, cfg: dict) -> dict:
        """cfg with the activation's α added, for the activations that have one."""
        if self.activation in _DEFAULT_ALPHA:
            cfg["alpha"] = self.alpha
        return cfg

    def _forward(self, x, Z, A) -> None:
        raise NotImplementedError

    def _backward(self, delta, dX) -> None:
        raise NotImplementedError

    def _init_weights(self, rng, fan_in: int, fan_out: int) -> None:
        """W from self.init: 'he' normal with σ = √(2/fan_in), 'glorot' uniform in
        ±√(6/(fan_in + fan_out)), or the callable (rng, shape, dtype); b = 0."""
        shape = self.W.shape
        if callable(self.init):
            W = np.asarray(self.init(rng, shape, self.dtype))
            if W.shape != shape:
                raise ValueError(f"init: the callable returned shape {W.shape}, expected {shape}")
        elif self.init == "he":
            W = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            W = rng.uniform(-limit, limit, shape)
        self.W[...] = W
        self.b[...] = 0

    def pre_activation(self, X, A):
        return self._Z

    def forward(self, x, training=False):
        B = x.shape[0]
        Z = self._buffer("Z", B, self.n_out)
        A = None if self.activation == "identity" else self._buffer("A", B, self.n_out)
        self._forward(x, Z, A)
        self._x, self._Z, self._A = x, Z, (Z if A is None else A)
        return self._A

    def backward(self, dA, need_input_grad=True):
        delta = dA
        if self.activation != "identity":
            delta = self._buffer("delta", dA.shape[0], self.n_out)
            _core.activation_backward(self.activation, self.alpha, self._Z, self._A, dA, delta)
        return self.backward_delta(delta, need_input_grad)

    def backward_delta(self, delta, need_input_grad=True):
        """The gradients from δ = ∂L/∂Z, the activation's backward already done (by the
        layer after, as MaxPool2D does for a ReLU: Sequential.backward)."""
        dX = self._buffer("dX", delta.shape[0], self.n_in) if need_input_grad else None
        self._backward(delta, dX)
        return dX


class Dense(_Linear):
    """Fully connected layer: Z = x·W + b, y = f(Z), bias and f fused into the GEMM.

    A sample of another shape (an image (C, H, W) after a convolution) is read as its flat
    C·H·W values, in that order: Dense flattens as Flatten() would.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths (≥ 1).
    activation : str or None
        One of pyneuro._core.ACTIVATIONS ('relu', 'gelu', 'tanh', ...); None is identity.
    init : {'he', 'glorot'} or callable, optional
        'he': normal, σ = √(2/n_in) (default for the relu family); 'glorot': uniform in
        ±√(6/(n_in+n_out)) (default otherwise); or a callable (rng, shape, dtype) -> array.
    alpha : float, optional
        Slope of leaky_relu (default 0.01) or scale of elu (default 1.0).
    """

    def __init__(self, n_in: int, n_out: int, activation: str | None = None, init=None,
                 alpha: float | None = None):
        super().__init__()
        self.n_in = check_int(n_in, "Dense n_in", 1)
        self.n_out = check_int(n_out, "Dense n_out", 1)
        self._set_activation(activation, alpha, init)
        self.W: np.ndarray = np.empty((0, 0))    # views into the model's vectors, set by bind()
        self.b: np.ndarray = np.empty(0)
        self.dW: np.ndarray = np.empty((0, 0))
        self.db: np.ndarray = np.empty(0)

    def build(self, n_in, dtype):
        if n_in != self.n_in:
            raise ValueError(f"Dense({self.n_in}, {self.n_out}) receives {n_in} inputs from the layer before it")
        self.dtype = dtype
        return self.n_out

    def param_shapes(self):
        return [("W", (self.n_in, self.n_out)), ("b", (self.n_out,))]

    def bind(self, params, grads):
        self.W, self.b = params["W"], params["b"]
        self.dW, self.db = grads["W"], grads["b"]

    def init_params(self, rng):
        self._init_weights(rng, self.n_in, self.n_out)

    def config(self):
        return self._with_alpha({"n_in": self.n_in, "n_out": self.n_out, "activation": self.activation})

    def inference(self):
        return [("dense", self.W, self.b, self.activation, self.alpha)]

    def _forward(self, x, Z, A):
        _core.dense_forward(x, self.W, self.b, Z, A, self.activation, self.alpha)

    def _backward(self, delta, dX):
        _core.dense_backward(self._x, self.W, delta, self.dW, self.db, dX)


class Activation(Layer):
    """Activation layer: y = f(x) elementwise (softmax: per row).

    Parameters
    ----------
    activation : str or None
        One of pyneuro._core.ACTIVATIONS; None is identity.
    alpha : float, optional
        Slope of leaky_relu / scale of elu.
    """

    name = "identity"

    def __init__(self, activation: str | None = None, alpha: float | None = None):
        super().__init__()
        self.activation = _activation_name(activation or self.name)
        self.alpha = check_float(_DEFAULT_ALPHA.get(self.activation, 0.0) if alpha is None else alpha, "alpha")
        self._x = self._y = None

    def config(self):
        return {"alpha": self.alpha} if self.activation in _DEFAULT_ALPHA else {}

    def inference(self):
        return [] if self.activation == "identity" else [("act", self.activation, self.alpha)]

    def pre_activation(self, X, A):
        return X

    def forward(self, x, training=False):
        y = self._buffer("y", x.shape[0], self.n_out)
        _core.activation_forward(self.activation, self.alpha, x, y)
        self._x, self._y = x, y
        return y

    def backward(self, dA, need_input_grad=True):
        dX = self._buffer("dX", dA.shape[0], self.n_in)
        _core.activation_backward(self.activation, self.alpha, self._x, self._y, dA, dX)
        return dX


class Identity(Activation):
    name = "identity"

    def forward(self, x, training=False):
        return x

    def backward(self, dA, need_input_grad=True):
        return dA


class ReLU(Activation):
    name = "relu"


class LeakyReLU(Activation):
    name = "leaky_relu"

    def __init__(self, alpha: float = 0.01):
        super().__init__(alpha=alpha)


class ELU(Activation):
    name = "elu"

    def __init__(self, alpha: float = 1.0):
        super().__init__(alpha=alpha)


class Sigmoid(Activation):
    name = "sigmoid"


class Tanh(Activation):
    name = "tanh"


class GELU(Activation):
    """GELU in its exact form, x·Φ(x) with the normal CDF Φ (not the tanh approximation)."""
    name = "gelu"


class Softmax(Activation):
    """Row-wise softmax. For classification train on logits with loss='cross_entropy'
    (softmax is fused into that loss) rather than ending the model with this layer."""
    name = "softmax"


class Dropout(Layer):
    """Inverted dropout: while training y = x ⊙ M, M = [U ≥ p]/(1−p) with U ~ uniform[0, 1);
    at evaluation y = x, so E[y] = x either way.

    Parameters
    ----------
    p : float
        Probability of dropping a unit, in [0, 1).
    seed : int or None
        Seed of the mask stream; None draws it from the model's seed.
    """

    def __init__(self, p: float = 0.5, seed=None):
        super().__init__()
        self.p = check_float(p, "Dropout p", 0.0, 1.0, high_open=True)
        self.seed = seed
        self.rng = None if seed is None else np.random.default_rng(seed)
        self._mask = None

    def config(self):
        return {"p": self.p}

    def inference(self):
        return []   # the identity at inference

    def init_params(self, rng):
        if self.rng is None:
            self.rng = np.random.default_rng(rng.integers(2**63))

    def forward(self, x, training=False):
        if not training or self.p == 0:
            self._mask = None
            return x
        B = x.shape[0]
        mask = self._buffer("mask", B, self.n_out)
        self.rng.random(out=mask.reshape(-1), dtype=self.dtype)
        _core.dropout_mask(mask.reshape(-1), self.p)
        y = self._buffer("y", B, self.n_out)
        _core.multiply(x.reshape(-1), mask.reshape(-1), y.reshape(-1))
        self._mask = mask
        return y

    def backward(self, dA, need_input_grad=True):
        if self._mask is None:
            return dA
        dX = self._buffer("dX", dA.shape[0], self.n_in)
        _core.multiply(dA.reshape(-1), self._mask.reshape(-1), dX.reshape(-1))
        return dX


class _Affine(Layer):
    """The per-column affine map y = (x − m)·s or (x − m)/s, in the core (affine_columns);
    no trainable parameters: m and s are part of the layer's config (saved in the model
    file). Its inference step is ("affine", m, s, divide)."""

    _divide = False

    def __init__(self, m, s, what: str):
        super().__init__()
        self._m = self._vector(m, f"{what}")
        self._s = self._vector(s, f"{what}")
        self._columns: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _vector(v, what: str) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        if a.ndim > 1 or a.size == 0 or not np.isfinite(a).all():
            raise ValueError(f"{what}: expected a finite number or 1-d array of them, got {v!r:.60}")
        return a.reshape(-1)

    def build(self, n_in, dtype):
        for a in (self._m, self._s):
            if a.size not in (1, n_in):
                raise ValueError(f"{type(self).__name__} has {a.size} values for {n_in} input columns")
        self.n_in = self.n_out = n_in
        self.dtype = dtype
        self._columns = None    # made at first use: a file's declared width costs nothing before
        return n_in             # its parameters are checked against it

    def _per_column(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m, s, 0) as contiguous n_in-vectors of the model's dtype."""
        if self._columns is None:
            n = self.n_in
            self._columns = (np.ascontiguousarray(np.broadcast_to(self._m, (n,)), dtype=self.dtype),
                             np.ascontiguousarray(np.broadcast_to(self._s, (n,)), dtype=self.dtype),
                             np.zeros(n, self.dtype))
        return self._columns

    @staticmethod
    def _plain(a: np.ndarray):
        return float(a[0]) if a.size == 1 else [float(v) for v in a]

    def inference(self):
        shift, factor, _ = self._per_column()
        return [("affine", shift, factor, self._divide)]

    def forward(self, x, training=False):
        y = self._buffer("y", x.shape[0], self.n_out)
        shift, factor, _ = self._per_column()
        return _core.affine_columns(x, shift, factor, self._divide, y)

    def backward(self, dA, need_input_grad=True):
        if not need_input_grad:
            return None
        dX = self._buffer("dX", dA.shape[0], self.n_in)
        _, factor, zero = self._per_column()
        return _core.affine_columns(dA, zero, factor, self._divide, dX)


class Scale(_Affine):
    """Scale the inputs: y = x·s (per column when s is an array), e.g. Scale(1/255) on uint8
    pixels. No trainable parameters; s is saved with the model. ONNX: Mul.

    With s rounded to the model's dtype first (s = float32(1/255) in a float32 model), a
    uint8 batch gives bitwise X.astype(float32) * float32(s) — the same numbers as float
    data pre-scaled that way (x/255 rounds differently: use the product on both sides).

    Parameters
    ----------
    scale : float or array_like of shape (n_in,)
        Finite.
    """

    def __init__(self, scale):
        super().__init__(0.0, scale, "Scale scale")

    def config(self):
        return {"scale": self._plain(self._s)}


class Standardize(_Affine):
    """Standardize the inputs: y = (x − μ)/σ per column. No trainable parameters; μ and σ
    are saved with the model. ONNX: Sub, Div.

    Parameters
    ----------
    mean : float or array_like of shape (n_in,)
        μ.
    std : float or array_like of shape (n_in,)
        σ, finite and non-zero.
    """

    _divide = True

    def __init__(self, mean, std):
        super().__init__(mean, std, "Standardize mean/std")
        if (self._s == 0).any():
            raise ValueError("Standardize std: expected non-zero values (a constant column? use std 1 there)")

    def config(self):
        return {"mean": self._plain(self._m), "std": self._plain(self._s)}

    @classmethod
    def fit(cls, X, batch_size: int = 4096) -> "Standardize":
        """A Standardize with the columns' mean μ_j = (1/N)·Σ_i x_ij and standard deviation
        σ_j = √((1/N)·Σ_i (x_ij − μ_j)²) (columns with σ_j = 0 get 1), in float64, read in
        blocks of rows (a memmap is not copied whole).

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features), real
        batch_size : int
            Rows per block.

        Returns
        -------
        Standardize
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0 or X.dtype.kind not in "fiub":
            raise ValueError(f"Standardize.fit: expected a non-empty 2-d real array, got "
                             f"{X.dtype} of shape {X.shape}")
        batch_size = check_int(batch_size, "batch_size", 1)
        n = X.shape[0]
        total = np.zeros(X.shape[1])
        for s in range(0, n, batch_size):
            total += X[s:s + batch_size].sum(axis=0, dtype=np.float64)
        mean = total / n
        sq = np.zeros(X.shape[1])
        for s in range(0, n, batch_size):
            sq += ((X[s:s + batch_size] - mean) ** 2).sum(axis=0)
        std = np.sqrt(sq / n)
        std[std == 0] = 1.0
        return cls(mean, std)


def inference_steps(layers) -> list[tuple[int, tuple]]:
    """The inference pass of a stack of layers as (i, step) pairs, layer i being the one
    whose output is the step's output. Steps are Layer.inference()'s — ("dense", W, b, act,
    alpha), ("act", act, alpha), a convolution's, a pooling's, … — with an activation layer
    folded into a linear Dense just before it (A = f(X·W + b) is one step), no-op layers left
    out, and ("opaque", layer) for a layer without an inference form (a custom layer: it
    runs as it is)."""
    steps: list[tuple[int, tuple]] = []
    for i, layer in enumerate(layers):
        own = layer.inference()
        for step in [("opaque", layer)] if own is None else own:
            last = steps[-1][1] if steps else None
            if step[0] == "act" and last is not None and last[0] == "dense" and last[3] == "identity":
                steps[-1] = (i, last[:3] + step[1:])
            else:
                steps.append((i, step))
    return steps


def inference_plan(layers) -> list[tuple]:
    """The steps of inference_steps, without the layer indices. The compiled prediction
    chain (InferenceChain) runs them when all are dense, conv and pool steps; the ONNX
    exporter writes them."""
    return [step for _, step in inference_steps(layers)]


LAYERS: dict[str, type[Layer]] = {}     # the names model files use
_BUILTIN_LAYERS: set[str] = set()


def builtin_layer(cls: type[Layer]) -> type[Layer]:
    """Enter one of pyneuro's own layers in LAYERS under its class name (a decorator for
    the modules that define layers: conv, pooling, normalization)."""
    LAYERS[cls.__name__] = cls
    _BUILTIN_LAYERS.add(cls.__name__)
    return cls


for _cls in (Dense, Identity, ReLU, LeakyReLU, ELU, Sigmoid, Tanh, GELU, Softmax, Dropout, Scale, Standardize):
    builtin_layer(_cls)


def register_layer(cls=None, *, name: str | None = None):
    """Make a custom Layer subclass (a layer or an activation) one that model files can
    name: Sequential.save, checkpoints and pickling write it, pyneuro.load rebuilds it as
    ``cls(**layer.config())``. Usable as a decorator, with or without arguments.

    Registration lasts for the process: import the module that registers the class before
    loading a file that names it. A file naming an unregistered layer is refused when it
    would be written, never written unreadable.

    Parameters
    ----------
    cls : type, optional
        The Layer subclass. Its config() must return the constructor arguments that rebuild
        it, as JSON values (numbers, strings, lists, dicts).
    name : str, optional
        The name files record (default ``cls.__name__``); not a built-in layer's name.
        Registering the same class again (a notebook cell run twice) is fine.

    Returns
    -------
    type
        `cls` itself (a decorator without `cls`).

    Examples
    --------
    >>> @pn.register_layer
    ... class Swish(pn.Layer):
    ...     def forward(self, X, training=False): ...
    ...     def backward(self, dA, need_input_grad=True): ...
    """
    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"register_layer: expected a subclass of pyneuro.Layer, got {cls!r:.60}")
        register(LAYERS, _BUILTIN_LAYERS, cls.__name__ if name is None else name, cls, "layer")
        return cls
    return add if cls is None else add(cls)
