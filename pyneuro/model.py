"""Sequential: a stack of layers with all parameters in one flat vector.

    forward:  a₀ = X,  a_k = layer_k(a_{k−1})          backward: g_{k−1} = layer_kᵀ(g_k)
Parameters θ and gradients ∂L/∂θ are two contiguous vectors; each layer's W, b
(and dW, db) are views into them, so one optimizer call updates the whole model.
"""
from __future__ import annotations

import math
import os
import threading

import numpy as np

from . import _core
from ._buffers import zeros_aligned
from ._registry import load_hint, not_registered, registered_name
from ._validation import as_dtype, as_generator, check_features, check_float, check_int, row_blocks
from .io import json_fault, read_file, write_file
from .layers import LAYERS, Dense, Dropout, Layer, _Linear, inference_plan, inference_steps
from .pooling import MaxPool2D
from .losses import LOSSES, OUTPUT_KINDS, Loss, get_loss
from .metrics import classes_from_outputs, probabilities_from_outputs


class Sequential:
    """A stack of layers applied in order, a_k = layer_k(a_{k−1}), all parameters in one
    flat vector (`params`, gradients in `grads`).

    Parameters
    ----------
    layers : list of Layer
        The layers, each used once.
    seed : int, numpy.random.Generator or None
        Seed of the initial weights and of dropout.
    dtype : {'float32', 'float64'}
        Floating-point type of parameters and computation.
    input_dim : int, optional
        Input width, needed only when the first layer does not fix it.
    input_shape : tuple of int, optional
        One sample's shape, e.g. (1, 28, 28) for a grey 28×28 image (C, H, W): needed
        when the first layer is a Conv2D or a pooling layer. The model then also reads
        images (N, C, H, W), and (N, H, W) when C = 1, besides flat rows (N, C·H·W).
    """

    def __init__(self, layers, seed=None, dtype="float32", input_dim: int | None = None,
                 input_shape=None, *, _init: bool = True):
        self.layers: list[Layer] = list(layers)
        if not self.layers:
            raise ValueError("Sequential: expected at least one layer, got none")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, not a pyneuro Layer")
        if len({id(layer) for layer in self.layers}) != len(self.layers):
            raise ValueError("Sequential: the same layer object appears twice; create separate layers")
        self.dtype = as_dtype(dtype)
        self.seed = seed
        self.info: dict = {}   # JSON-able facts kept with the model by save() (e.g. input preprocessing)
        self.loss: Loss | None = None   # the loss it was trained on, and so what its outputs are
        self.output: str | None = None  # (one of losses.OUTPUT_KINDS): set by Trainer.fit
        self.input_shape = self._input_shape(input_dim, input_shape)
        self.n_in = math.prod(self.input_shape)
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build_shape(shape, self.dtype)
            except ValueError as e:
                raise ValueError(f"Sequential: layer {i}: {e}") from None
        self.output_shape = shape
        self.n_out = math.prod(shape)
        # each layer's parameters, then its state (not trained), as views of one vector
        blocks = [[(name, shape, True) for name, shape in layer.param_shapes()]
                  + [(name, shape, False) for name, shape in layer.state_shapes()] for layer in self.layers]
        total = sum(math.prod(shape) for block in blocks for _, shape, _ in block)
        self.params = zeros_aligned(total, self.dtype)
        self.grads = zeros_aligned(total, self.dtype)
        off = 0
        self._spans: list[tuple[int, int, int]] = []    # (layer, start, stop) of each trained run
        self._runs: tuple[tuple, list[tuple[int, int]]] | None = None   # (trainable flags, runs)
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            views, gviews = {}, {}
            for name, shape, trained in block:
                size = math.prod(shape)
                views[name] = self.params[off:off + size].reshape(shape)
                gviews[name] = self.grads[off:off + size].reshape(shape)
                if trained and size:
                    self._spans.append((i, off, off + size))
                off += size
            layer.bind(views, gviews)
        rng = as_generator(seed)
        for layer in self.layers:   # (private) _init=False: params are overwritten at once (model_from),
            if _init or not layer.param_shapes():   # so only layers without any (Dropout's stream) draw
                layer.init_params(rng)
        self._chain = self._inference_chain()
        self._first_with_params = next((i for i, layer in enumerate(self.layers) if layer.param_shapes()), 0)
        # One training step or one batch of prediction at a time: the layers' buffers (and the
        # weights an optimizer step rewrites) are never used by two of them at once.
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()   # held by the one Trainer.fit running on this model

    def _input_shape(self, input_dim, input_shape) -> tuple[int, ...]:
        """One sample's shape: input_shape, else (input_dim,), else fixed by the first layer
        that has a width (layers before it, such as Scale or an activation, keep it)."""
        if input_shape is not None:
            if input_dim is not None:
                raise ValueError("Sequential: pass input_dim or input_shape, not both")
            if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
                input_shape = (input_shape,)
            if not isinstance(input_shape, (tuple, list)) or not 1 <= len(input_shape) <= 3:
                raise ValueError(f"input_shape: expected a tuple of 1 to 3 ints ((C, H, W) for images), "
                                 f"got {input_shape!r:.60}")
            return tuple(check_int(v, "input_shape", 1) for v in input_shape)
        if input_dim is not None:
            return (check_int(input_dim, "input_dim", 1),)
        n = next((layer.n_in for layer in self.layers if layer.n_in is not None), None)
        if n is None:
            raise ValueError(f"Sequential: the first layer ({type(self.layers[0]).__name__}) does not fix "
                             "the input's shape; pass input_shape=(C, H, W) for images, or input_dim=")
        return (n,)

    def _inference_chain(self):
        """The inference pass as one compiled call (_core.InferenceChain) when every step of
        layers.inference_plan is a Dense (activation fused), a Conv2D or a max/average
        pooling; None for any other stack (it runs layer by layer)."""
        steps = []
        for step in inference_plan(self.layers):
            if step[0] == "dense":
                steps.append(step)
            elif step[0] == "conv":
                conv = step[1]
                steps.append(("conv", conv._plan, conv._W2, conv.b, conv.activation, conv.alpha))
            elif step[0] == "pool":
                steps.append(("pool", step[1]._plan))
            else:
                return None
        return _core.InferenceChain(steps) if steps else None

    # ---- training interface (arrays already validated by the caller) ------------
    def forward(self, X: np.ndarray, training: bool = False) -> np.ndarray:
        """The network output for a validated batch; a view of a work buffer (copy it to keep it)."""
        out = X
        for layer in self.layers:
            out = layer.forward(out, training)
        return out

    def backward(self, dA: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Backpropagate dA = ∂L/∂A of the output; fills self.grads, and returns ∂L/∂X of
        the input when input_grad (a view of a work buffer), else None. Without input_grad it
        stops at the first layer with parameters: layers before it (Scale, Standardize) have
        no gradient to give."""
        g: np.ndarray | None = dA
        first = 0 if input_grad else self._first_with_params
        i = len(self.layers) - 1
        while i >= first:
            assert g is not None
            pool, before = self.layers[i], self.layers[i - 1] if i > 0 else None
            if i - 1 >= first and self._masks_relu(pool, before):   # max pooling after a ReLU: one pass
                assert isinstance(pool, MaxPool2D) and isinstance(before, _Linear)
                g = pool.backward(g, need_input_grad=True, after_relu=True)
                i -= 1
                g = before.backward_delta(g, need_input_grad=input_grad or i > first)
            else:
                g = self.layers[i].backward(g, need_input_grad=input_grad or i > first)
            i -= 1
        return g if input_grad else None

    @staticmethod
    def _masks_relu(layer: Layer, before: Layer | None) -> bool:
        """Whether layer is a max pooling whose input is the ReLU output of the layer before
        it, so its backward can give ∂L/∂Z of that layer directly (δ = routed dY where
        relu(Z) > 0); neither's backward overridden by a subclass."""
        return (isinstance(layer, MaxPool2D) and type(layer).backward is MaxPool2D.backward
                and isinstance(before, _Linear) and type(before).backward is _Linear.backward
                and before.activation == "relu")

    def trainable_ranges(self) -> list[tuple[int, int]]:
        """The [start, stop) runs of `params` that training updates: those of the layers
        whose `trainable` is True, adjacent ones merged (the optimizer asks at every step)."""
        flags = tuple(layer.trainable for layer in self.layers)
        if self._runs is None or self._runs[0] != flags:
            runs: list[tuple[int, int]] = []
            for i, a, b in self._spans:
                if not flags[i]:
                    continue
                if runs and runs[-1][1] == a:
                    runs[-1] = (runs[-1][0], b)
                else:
                    runs.append((a, b))
            self._runs = (flags, runs)
        return self._runs[1]

    def count_trainable_params(self) -> int:
        """How many parameters training updates (those of layers with trainable True)."""
        return sum(b - a for a, b in self.trainable_ranges())

    @property
    def final_activation(self) -> str | None:
        """The activation the last step applies ('identity' for a linear output; None when
        a layer without an inference form ends the model)."""
        steps = inference_plan(self.layers)
        last = steps[-1] if steps else ("act", "identity")     # no-op layers alone: the identity
        return last[3] if last[0] == "dense" else last[1] if last[0] == "act" else None

    def image_shape(self, shape=None) -> tuple[int, int]:
        """The (height, width) of the images the model reads (the pictures, the draw-a-digit
        page and image inputs use it).

        Parameters
        ----------
        shape : pair of int, optional
            Given by the user (``--image-shape H W``); must agree with the model's info if
            that has one.

        Returns
        -------
        tuple of int
            From `shape`, else ``info["image_shape"]``, else the (H, W) of the model's
            input_shape (C, H, W), else a square input width (784 → 28×28, 64 → 8×8).

        Raises
        ------
        ValueError
            When the shape does not hold n_in pixels, disagrees with the info, or cannot be
            known (a non-square input width and no shape in the info).
        """
        known = self.info.get("image_shape")
        for what, value in (("--image-shape", shape), ("the model's info image_shape", known)):
            if value is None:
                continue
            rule = f"{what} should be [rows, cols] with rows x cols = {self.n_in} (the input width)"
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)):
                raise ValueError(f"{rule}: two positive integers, got {value!r:.60}")
            if value[0] * value[1] != self.n_in:
                raise ValueError(f"{rule}: {value[0]}x{value[1]} holds {value[0] * value[1]} pixels")
        if shape is not None and known is not None and list(shape) != list(known):
            raise ValueError(f"--image-shape {shape[0]} {shape[1]} disagrees with the model's info "
                             f"({known[0]}x{known[1]}); leave the flag out")
        chosen = shape if shape is not None else known
        if chosen is None and len(self.input_shape) > 1:
            chosen = self.input_shape[-2:]
        if chosen is not None:
            return int(chosen[0]), int(chosen[1])
        side = math.isqrt(self.n_in)
        if side * side != self.n_in:
            raise ValueError(f"the model takes {self.n_in} inputs, not a square image, and its info has no "
                             "image_shape; pass --image-shape H W")
        return side, side

    def shown_layers(self) -> list[int]:
        """The layers whose outputs make the network's activation pattern, by index (into
        layers and activations()): one per step of layers.inference_steps — no-op layers
        (Dropout, Identity) left out, a linear Dense and the activation layer after it shown
        once, as the activation's output. The last is the output layer."""
        return [i for i, _ in inference_steps(self.layers)]

    def output_kind(self) -> str:
        """What the outputs are (losses.OUTPUT_KINDS): as recorded by training, else read
        from the last layer: a sigmoid/softmax ends in probabilities, one linear output is a
        logit, several are class logits."""
        if self.output is not None:
            return self.output
        if self.final_activation in ("sigmoid", "softmax"):
            return "probabilities"
        return "binary_logits" if self.n_out == 1 else "class_logits"

    def _trained_on(self, loss) -> None:
        """Record the loss the model is being trained on (Trainer.fit), and so its outputs."""
        self.loss = loss
        self.output = loss.output_kind(self.final_activation)
        assert self.output in OUTPUT_KINDS, self.output

    # ---- user interface --------------------------------------------------------
    def predict(self, X, batch_size: int = 1024, allow_nonfinite: bool = False) -> np.ndarray:
        """The network output (logits for a classifier) for every row of X.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_in), real
            float16/32/64, integers or bool, converted to the model's dtype batch by batch
            (a uint8 or float64 memmap is never copied whole); non-contiguous views are
            copied once; NaN/inf are refused unless allowed.
        batch_size : int
            Rows per compiled call (bounds the work memory).
        allow_nonfinite : bool
            Accept NaN/inf in X (they propagate to their rows).

        Returns
        -------
        ndarray of shape (n_samples, n_out)
        """
        X = check_features(X, self.dtype, self.input_shape, allow_nonfinite=allow_nonfinite)
        batch_size = check_int(batch_size, "batch_size", 1)
        out = np.empty((X.shape[0], self.n_out), dtype=self.dtype)
        if self._chain is not None and X.dtype == self.dtype and X.shape[0] <= batch_size:
            with self._lock:        # one block in the model's dtype: one compiled call, no loop
                return self._chain.forward(X, out)
        for s, xb in row_blocks(X, self.dtype, batch_size, allow_nonfinite=allow_nonfinite):
            with self._lock:
                if self._chain is not None:
                    self._chain.forward(xb, out[s:s + batch_size])
                else:
                    out[s:s + batch_size] = self.forward(xb)
        return out

    def predict_proba(self, X, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities, as the model's outputs mean them (output_kind): softmax of
        class logits, σ of binary logits, the outputs themselves when the model ends in
        probabilities; one output p becomes the two columns [1 − p, p].

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_in)
        batch_size : int

        Returns
        -------
        ndarray of shape (n_samples, n_classes)

        Raises
        ------
        ValueError
            When the outputs are values (a regressor): probabilities of nothing.
        """
        kind = self._probability_kind("predict_proba")
        return probabilities_from_outputs(self.predict(X, batch_size), kind)

    def _probability_kind(self, where: str) -> str:
        kind = self.output_kind()
        if kind == "values":
            name = self.loss.name if self.loss is not None else "a regression loss"
            raise ValueError(f"{where}: this model's outputs are values (it was trained on {name} with a "
                             f"{self.final_activation} output), not probabilities of classes; use predict()")
        return kind

    def predict_classes(self, X, batch_size: int = 1024, threshold: float = 0.5) -> np.ndarray:
        """The most likely class of each row: the argmax of the outputs, or for a single
        output whether its probability exceeds `threshold`.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_in)
        batch_size : int
        threshold : float
            Single-output models: the probability above which a row is class 1 (default ½).

        Returns
        -------
        ndarray of int64, shape (n_samples,)
        """
        threshold = check_float(threshold, "threshold", 0.0, 1.0, low_open=True, high_open=True)
        return classes_from_outputs(self.predict(X, batch_size), threshold=self.decision_threshold(threshold))

    def decision_threshold(self, probability: float = 0.5) -> float:
        """A single output's class threshold on its own scale for the given probability:
        the logit log(p/(1 − p)) for logits, p itself for probabilities."""
        if self._probability_kind("predict_classes") == "probabilities":
            return probability
        return float(np.log(probability) - np.log1p(-probability))

    def activations(self, X, pre_activation: bool = False, batch_size: int = 1024) -> list:
        """Every layer's output for the rows of X (the inference pass, layer by layer in the
        compiled core), as fresh arrays.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_in)
        pre_activation : bool
            Also return each layer's pre-activation Z (a Dense layer's X·W + b, an activation
            layer's input; the output itself for layers without one).
        batch_size : int
            Rows per pass (bounds the work memory).

        Returns
        -------
        list
            One array (n_samples, width) per layer, or (Z, A) pairs when pre_activation.
        """
        X = check_features(X, self.dtype, self.input_shape)
        batch_size = check_int(batch_size, "batch_size", 1)
        outs = [(np.empty((X.shape[0], layer.n_out), self.dtype), np.empty((X.shape[0], layer.n_out), self.dtype))
                for layer in self.layers]
        for s, A in row_blocks(X, self.dtype, batch_size):
            with self._lock:
                for layer, (Z_all, A_all) in zip(self.layers, outs):
                    X_in, A = A, layer.forward(A, training=False)
                    Z_all[s:s + batch_size] = layer.pre_activation(X_in, A)
                    A_all[s:s + batch_size] = A
        return outs if pre_activation else [A for _, A in outs]

    def input_gradient(self, X, y, loss=None, batch_size: int = 1024) -> np.ndarray:
        """∂L/∂X: how the mean loss over the rows of X changes with each input value (the
        saliency of each pixel). Overwrites the parameter gradients `grads`.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_in)
        y : ndarray
            Targets, as for Trainer.fit with this loss.
        loss : str or Loss, optional
            Default: the loss the model was trained on.
        batch_size : int

        Returns
        -------
        ndarray of shape (n_samples, n_in)
        """
        if loss is None and self.loss is None:
            raise ValueError("input_gradient: this model was never trained, so it has no loss of its own; "
                             "pass loss=")
        loss = get_loss(self.loss if loss is None else loss)
        X = check_features(X, self.dtype, self.input_shape)
        y = loss.prepare_targets(y, X.shape[0], self.n_out, self.dtype)
        batch_size = check_int(batch_size, "batch_size", 1)
        n, dX = X.shape[0], np.empty(X.shape, self.dtype)
        for s, xb in row_blocks(X, self.dtype, batch_size):
            with self._lock:
                Z = self.forward(xb, training=False)
                delta = np.empty_like(Z)
                loss.value_and_grad(Z, y[s:s + batch_size], delta)   # of the batch's mean
                dX[s:s + batch_size] = self.backward(delta, input_grad=True)
            if Z.shape[0] != n:
                dX[s:s + batch_size] *= Z.shape[0] / n                 # of the mean over all rows
        return dX

    def save(self, path, info: dict | None = None) -> None:
        """Write the model to one safetensors file, atomically; pyneuro.load(path) rebuilds it.

        Parameters
        ----------
        path : str or os.PathLike
        info : dict, optional
            Facts to keep with the model (default: self.info): a JSON object (str keys;
            dicts, lists, str, int, finite float, bool, None), else TypeError/ValueError.
        """
        save_model(self, path, info)

    def to_onnx(self, path) -> None:
        """Write the inference graph as an ONNX file (needs onnx); onnxruntime reproduces
        predict() within float rounding.

        Parameters
        ----------
        path : str or os.PathLike
        """
        from .onnx_export import to_onnx
        to_onnx(self, path)

    def __reduce__(self):
        """Pickle support (joblib, scikit-learn): rebuilt from the architecture, the
        parameters and info, so the layers' views into one flat vector survive."""
        return (model_from, (model_document(self, "pickle"), self.params, self.info))

    def count_params(self) -> int:
        return int(self.params.size)

    def get_weights(self) -> np.ndarray:
        """A copy of the flat parameter vector."""
        return self.params.copy()

    def set_weights(self, weights) -> None:
        """Overwrite all parameters.

        Parameters
        ----------
        weights : ndarray
            A vector like get_weights() returns (same dtype and length).
        """
        w = np.asarray(weights)
        if w.shape != self.params.shape or w.dtype != self.dtype:
            raise ValueError(f"set_weights: expected a {self.dtype} vector of shape {self.params.shape}, "
                             f"got {w.dtype} {w.shape}")
        self.params[...] = w

    @classmethod
    def mlp(cls, n_in: int, hidden, n_out: int, activation: str = "relu", dropout: float = 0.0,
            seed=None, dtype="float32", output_activation: str | None = None) -> "Sequential":
        """A multilayer perceptron: Dense(activation) [+ Dropout] per hidden width, then a
        Dense output, linear (logits) unless output_activation is given.

        Parameters
        ----------
        n_in, n_out : int
            Input features and outputs.
        hidden : sequence of int
            The hidden layers' widths.
        activation : str
            The hidden layers' activation.
        dropout : float
            Dropout rate after each hidden layer (0: none).
        seed, dtype
            As for Sequential.
        output_activation : str, optional
            The output layer's activation ('sigmoid' for the textbook's network trained on
            mse); None: linear outputs (logits for cross_entropy).
        """
        layers: list[Layer] = []
        for width in hidden:
            layers.append(Dense(n_in, width, activation=activation))
            if dropout:
                layers.append(Dropout(dropout))
            n_in = width
        layers.append(Dense(n_in, n_out, activation=output_activation))
        return cls(layers, seed=seed, dtype=dtype)

    def summary(self, print_fn=print) -> str:
        """A table of layers, output shapes and parameter counts ("frozen" marks a layer
        whose trainable is False), with the trainable and non-trainable totals.

        Parameters
        ----------
        print_fn : callable or None
            Called with the table (default print); None prints nothing.

        Returns
        -------
        str
            The table, as a str whose repr is the table itself; IPython and Jupyter show
            it as a cell's result only when print_fn was None (it was printed already).
        """
        rows = [("Layer", "Output shape", "Params")]
        for i, layer in enumerate(self.layers):
            n = sum(math.prod(s) for _, s in layer.param_shapes() + layer.state_shapes())
            frozen = "" if layer.trainable else " (frozen)"
            rows.append((f"{i}: {layer!r}{frozen}", str((None,) + tuple(layer.out_shape or ())), f"{n:,}"))
        w = [max(len(r[c]) for r in rows) for c in range(3)]
        line = "-" * (sum(w) + 4)
        text = [line, f"{rows[0][0]:<{w[0]}}  {rows[0][1]:<{w[1]}}  {rows[0][2]:>{w[2]}}", line]
        text += [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}" for a, b, c in rows[1:]]
        trainable = self.count_trainable_params()
        text += [line, f"Total params: {self.count_params():,}  (dtype {self.dtype}, input shape "
                       f"{(None,) + self.input_shape})",
                 f"Trainable params: {trainable:,}", f"Non-trainable params: {self.count_params() - trainable:,}", line]
        out = _Table("\n".join(text))
        if print_fn is not None:
            print_fn(str(out))
            out.shown = True
        return out

    def __repr__(self):
        return f"Sequential([{', '.join(map(repr, self.layers))}], dtype='{self.dtype}')"


class _Table(str):
    """A printed table: its repr is the table (not a string literal full of \\n), and as a
    notebook cell's result it shows once (nothing more when it was printed already)."""

    shown = False

    def __repr__(self) -> str:
        return str(self)

    def _ipython_display_(self) -> None:
        if not self.shown:
            print(self)


# ---- the model in a file: its description, rebuilt and checked ----------------------
def model_document(model: Sequential, where: str = "save") -> dict:
    """The architecture as JSON: dtype, input width (and a sample's shape when it has more
    than one axis), each layer's type (its registered name)
    and config ("trainable": false for a frozen layer; absent means trainable, as in older
    files), and once trained the loss and what the outputs are. A ValueError, naming
    `where`, for what a file could not bring back: a layer or loss not registered, a config
    that is not JSON."""
    layers = []
    for i, layer in enumerate(model.layers):
        name = registered_name(LAYERS, type(layer))
        if name is None:
            raise not_registered(type(layer), "layer", f"{where}: layer {i}")
        layers.append({"type": name, "config": _json_config(layer, where),
                       **({} if layer.trainable else {"trainable": False})})
    doc = {"dtype": model.dtype.name, "input_dim": model.n_in, "layers": layers}
    if len(model.input_shape) > 1:
        doc["input_shape"] = list(model.input_shape)
    if model.loss is not None:
        doc.update(loss=loss_document(model.loss, where), output=model.output)
    return doc


def loss_document(loss: Loss, where: str) -> dict:
    """{'name', 'config'} of a loss, refused (ValueError) unless it is registered."""
    if LOSSES.get(loss.name) is not type(loss):
        raise not_registered(type(loss), "loss", where)
    return {"name": loss.name, "config": _json_config(loss, where)}


def _json_config(obj, where: str) -> dict:
    """obj.config(), refused unless it is a dict a file keeps exactly."""
    config = obj.config()
    fault = json_fault(config, f"{type(obj).__name__}.config()") if isinstance(config, dict) else \
        f"{type(obj).__name__}.config() should return a dict"
    if fault:
        raise ValueError(f"{where}: {fault}: a file could not rebuild it")
    return config


def _trained_on(doc: dict, path: str) -> tuple[Loss | None, str | None]:
    """(loss, output kind) a model document records; (None, None) for a model never trained
    (and files written before pyneuro recorded them)."""
    if "loss" not in doc:
        return None, None
    try:
        spec, output = doc["loss"], doc["output"]
        if not (isinstance(spec, dict) and spec.get("name") in LOSSES and isinstance(spec.get("config"), dict)):
            raise ValueError(f"loss should be {{'name': one of {sorted(LOSSES)}, 'config': {{...}}}}, "
                             f"got {spec!r:.80} " + load_hint("loss"))
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output should be one of {OUTPUT_KINDS}, got {output!r:.80}")
        return LOSSES[spec["name"]](**spec["config"]), output
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: damaged model description ({type(e).__name__}: {e})") from None


def check_info(info, where: str = "info") -> dict:
    """`info` when it is a JSON object that a file keeps exactly (see io.json_fault);
    TypeError for anything but a dict, ValueError for what JSON cannot hold."""
    if not isinstance(info, dict):
        raise TypeError(f"{where}: expected a dict (a JSON object), got {type(info).__name__}")
    fault = json_fault(info, where)
    if fault:
        raise ValueError(fault)
    return info


def _described_layers(doc, path: str) -> tuple[list[Layer], np.dtype, tuple, int]:
    """(layers, dtype, input shape, parameter count) of a model document: the layers are
    made and their widths checked, nothing is allocated for their parameters."""
    try:
        if not isinstance(doc, dict):
            raise TypeError(f"expected a JSON object, got {type(doc).__name__}")
        specs = doc["layers"]
        if not isinstance(specs, list) or not specs:
            raise TypeError(f"'layers' should be a non-empty list, got {specs!r:.80}")
        layers: list[Layer] = []
        for i, spec in enumerate(specs):
            if not (isinstance(spec, dict) and isinstance(spec.get("type"), str)
                    and isinstance(spec.get("config"), dict)):
                raise TypeError(f"layer {i} should be {{'type': name, 'config': {{...}}}}, got {spec!r:.80}")
            cls = LAYERS.get(spec["type"])
            if cls is None:
                raise ValueError(f"layer {i} has unknown type {spec['type']!r:.80} "
                                 + load_hint("layer"))
            made: Layer = cls(**spec["config"])
            if not isinstance(spec.get("trainable", True), bool):
                raise TypeError(f"layer {i}: trainable should be true or false, got {spec['trainable']!r:.40}")
            made.trainable = spec.get("trainable", True)
            layers.append(made)
        if doc["dtype"] not in ("float32", "float64"):
            raise ValueError(f"dtype should be 'float32' or 'float64', got {doc['dtype']!r:.80}")
        dtype = np.dtype(doc["dtype"])
        n_in = check_int(doc["input_dim"], "input_dim", 1)
        shape = doc.get("input_shape", [n_in])
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 3 or math.prod(
                check_int(v, "input_shape", 1) for v in shape) != n_in):
            raise ValueError(f"input_shape should be 1 to 3 ints whose product is input_dim {n_in}, "
                             f"got {shape!r:.80}")
        shape = tuple(shape)
        count = 0
        for i, layer in enumerate(layers):
            try:
                shape = layer.build_shape(shape, dtype)
            except ValueError as e:
                raise ValueError(f"Sequential: layer {i}: {e}") from None
            count += sum(math.prod(s) for _, s in layer.param_shapes() + layer.state_shapes())
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{path}: damaged model description ({type(e).__name__}: {e})") from None
    return layers, dtype, tuple(doc.get("input_shape", [n_in])), count


def model_from(doc, params, info, path="<model>") -> Sequential:
    """The model of a model document with these parameters and info (checked against the
    architecture before anything is allocated): what loading a file and unpickling both do."""
    path = os.fspath(path)
    layers, dtype, input_shape, count = _described_layers(doc, path)
    if not isinstance(params, np.ndarray) or params.shape != (count,) or params.dtype != dtype:
        got = "none" if params is None else f"{getattr(params, 'dtype', type(params).__name__)} " \
                                            f"{getattr(params, 'shape', '')}"
        raise ValueError(f"{path}: damaged: the architecture needs {dtype} params of shape ({count},), "
                         f"the file holds {got}")
    model = Sequential(layers, dtype=dtype, input_shape=input_shape, _init=False)   # the file's params replace them
    model.params[...] = params
    model.info = info or {}
    model.loss, model.output = _trained_on(doc, path)
    return model


def model_from_file(tensors: dict, docs: dict, path) -> Sequential:
    """The model that read_file's (tensors, documents) of `path` hold: model_from, and the
    file's own checks: params finite, info a JSON object, no tensor nobody reads."""
    path = os.fspath(path)
    known = {"params"} | ({n for n in tensors if n.startswith("optimizer.")} if "checkpoint" in docs else set())
    if set(tensors) - known:
        raise ValueError(f"{path}: damaged: unexpected tensors {sorted(set(tensors) - known)!r:.200} "
                         "(a model file holds 'params', a checkpoint also 'optimizer.*')")
    params = tensors.get("params")
    if isinstance(params, np.ndarray) and params.dtype in (np.float32, np.float64) and params.ndim == 1 \
            and not _core.all_finite(params):
        raise ValueError(f"{path}: damaged: its parameters hold NaN or infinity")
    try:
        info = check_info({} if docs.get("info") is None else docs["info"], "info")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: damaged info ({e})") from None
    return model_from(docs.get("model"), params, info, path)


def save_model(model: Sequential, path, info: dict | None = None) -> None:
    """Write the model (architecture, dtype, parameters, `info`) to one safetensors file;
    refused (nothing written) when `info` is not a JSON object or a parameter is NaN/inf."""
    write_file(path, {"params": model.params},
               {"model": model_document(model, os.fspath(path)), "info": checked_for_saving(model, info, path)})


def checked_for_saving(model: Sequential, info, path) -> dict:
    """The info to write with `model` (its own when None), after the checks that make the file
    loadable: info a JSON object, parameters finite."""
    info = check_info(model.info if info is None else info, "info")
    if not _core.all_finite(model.params):
        raise ValueError(f"{os.fspath(path)}: refusing to write a model whose parameters hold NaN or "
                         "infinity (it could not be loaded)")
    return info


def load_model(path) -> Sequential:
    """The model a save_model file (or a checkpoint) holds, its `info` restored; predictions
    match the saved model's bitwise."""
    tensors, docs = read_file(path)
    return model_from_file(tensors, docs, path)
