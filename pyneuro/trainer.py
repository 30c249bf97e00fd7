"""Trainer: mini-batch gradient descent over a data set.

Each epoch: a seeded permutation of the training rows; for every batch of it
    X_b = T(X[perm_b])  (gathered in the core and converted to the model's dtype T, no copy
                         of the data set; Datasets and iterables of batches: data_sources.py)
    Z = model(X_b);  L, ∂L/∂Z = loss(Z, y_b);  backprop;  θ ← optimizer(θ, ∂L/∂θ)
then validation, history, callbacks. Nothing is allocated per batch but the
few scalars Python needs. A model of Dense, Conv2D, pooling, Flatten and Dropout layers
with a built-in loss and optimizer, and no callback at batch ends, runs its steps in chunks
of whole steps in the core (_core.TrainLoop, csrc/train_loop.pxi): the same results, bitwise.
"""
from __future__ import annotations

import importlib.util
import signal
import sys
import threading
import time
import warnings

import numpy as np

from . import _core
from ._validation import as_generator, check_float, check_int, check_sample_weight, class_weight_rows
from .callbacks import Callback, History
from .checkpoint import load_checkpoint, save_checkpoint
from .data_sources import ArraySource, data_source
from .distributed import Distributed, OneProcess
from .conv import Conv2D
from .layers import Dense, Dropout, Softmax
from .losses import MAE, MSE, BinaryCrossEntropy, CrossEntropy, Huber, Loss, get_loss
from .metrics import Outputs, count_correct, metric
from .model import Sequential
from .normalization import BatchNorm
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, get_optimizer
from .pooling import AvgPool2D, Flatten, MaxPool2D


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose stderr is no terminal, but shows a bar)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _progress_bar(total: int, desc: str):
    """A tqdm bar, or None where nobody would see one: in a terminal, tqdm's text bar on
    stderr; in a Jupyter kernel, tqdm's notebook widget where ipywidgets is installed, else
    the text bar (the notebook redraws it in place). tqdm is imported only when a bar is
    shown: it costs 40 ms."""
    notebook = _in_notebook()
    if not (notebook or sys.stderr.isatty()):
        return None
    if notebook and importlib.util.find_spec("ipywidgets") is not None:   # tqdm.notebook needs it
        from tqdm.notebook import tqdm as widget
        return widget(total=total, desc=desc, unit="batch", leave=False)
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr)


class _InterruptBetweenSteps:
    """While fit runs in the main thread under Python's default SIGINT handler, Ctrl-C
    only sets a flag and check() raises KeyboardInterrupt at the next step boundary:
    the model and the optimizer then always hold the state of a completed step."""

    def __enter__(self):
        self.pending, self.previous = False, None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._flag)
        return self

    def _flag(self, signum, frame):
        self.pending = True

    def check(self):
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __exit__(self, kind, value, tb):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if kind is None:
            self.check()
        return False


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite; the model keeps the weights it had before that batch."""


class Trainer:
    """Mini-batch training of a Sequential model.

    Each step: gather a shuffled batch, forward, loss and ∂L/∂Z, backward, one
    optimizer update of the flat parameter vector.

    Control from callbacks (pyneuro.callbacks): the optimizer reads `optimizer.lr` and its
    schedule at every step, so a change in a callback acts at the next step; layers whose
    `trainable` is False are not updated. `stop_training = True` set in on_epoch_end ends
    training after that epoch; set in on_batch_end, after the current step: that partial
    epoch still counts, and the History records its logs (means over the batches it ran,
    and validation).

    Parameters
    ----------
    model : Sequential
    loss : str or Loss
        'cross_entropy' (softmax fused, on logits), 'binary_cross_entropy', 'mse', 'mae',
        'huber', or a Loss instance.
    optimizer : Optimizer or str, optional
        Default Adam().
    batch_size : int
        Rows per step; larger than the data is clipped to it, with a warning.
    epochs : int
        Default number of epochs of fit().
    seed : int, Generator or None
        Drives shuffling and the validation split.
    verbose : {0, 1, 2}
        0 silent, 1 progress bar (in a terminal) and a line per epoch, 2 a line per epoch.
    allow_nonfinite : bool
        Accept NaN/inf in the data.
    metrics : list of str or callable, optional
        Computed each epoch on the training data (logged as '<name>', as Keras does) and on
        the validation data (as 'val_<name>'), and by evaluate() (as '<name>'); printed in
        the epoch line, kept in the History, usable as a callback's ``monitor``. The
        training values come from the outputs the training steps produced during the epoch
        (kept as they go: n_rows × (n_out + target width) numbers per epoch), so they are
        outputs under dropout and of weights that changed from batch to batch, as Keras's
        training metrics are; the validation values are of the model at the epoch's end.
        Metrics are unweighted (sample_weight/class_weight weigh the loss only). Names:
        'accuracy', 'top_k_accuracy' (top 5) or 'top<k>_accuracy', 'precision', 'recall',
        'f1' (binary for two classes, else macro-averaged), 'roc_auc' (one-vs-rest, macro
        for several classes), 'log_loss', 'mse', 'mae', 'r2' (pyneuro.metrics), or functions
        f(y_true, outputs) -> float logged under their __name__ (a classifier's true classes
        and class probabilities, a regressor's targets and outputs). Outputs become classes
        and probabilities as the model means them (Sequential.predict_proba). Default: none
        for a classifier, ['r2', 'mae'] for a regressor. A checkpoint records them by name
        (save_checkpoint refuses a callable that is not registered: pn.register_metric).
    Attributes
    ----------
    accuracy_note : str or None
        Why no accuracy is counted (a regression loss, a custom loss whose `classifier` is
        False, several binary labels), added once to the first epoch line; None when
        accuracy is counted.
    """

    def __init__(self, model: Sequential, loss="cross_entropy", optimizer: Optimizer | str | None = None,
                 batch_size: int = 32, epochs: int = 10, seed=None, verbose: int = 1,
                 allow_nonfinite: bool = False, distributed=False, metrics=None):
        if not isinstance(model, Sequential):
            raise TypeError(f"model: expected a pyneuro Sequential, got {type(model).__name__}")
        self.model = model
        self.loss: Loss = get_loss(loss)
        if self.loss.name == "cross_entropy" and isinstance(model.layers[-1], Softmax):
            raise ValueError("loss: cross_entropy applies softmax itself (it takes logits); remove the "
                             "model's final Softmax layer (predict_proba gives probabilities)")
        outputs = self.loss.output_kind(model.final_activation)   # what the model's outputs will be
        # accuracy is counted when the outputs are classes: logits, or probabilities (a
        # sigmoid/softmax output trained on one-hot targets with mse, the textbook's network)
        self._accuracy = self.loss.reports_accuracy(model.n_out) or outputs == "probabilities"
        self._threshold = 0.5 if outputs == "probabilities" else 0.0   # of a single output
        self.accuracy_note = None if self._accuracy else f"no accuracy: {self.loss.accuracy_note(model.n_out)}"
        self._outputs = outputs
        self._metrics = self._named_metrics(metrics)
        self._metric_specs = None if metrics is None else list(metrics)   # as given (checkpoints)
        self.optimizer = Adam() if optimizer is None else get_optimizer(optimizer)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.epochs = check_int(epochs, "epochs", 0)
        self.rng = as_generator(seed)
        self._split_seed = int(self.rng.integers(2**63))   # validation_split: the same rows every fit
        self._pending_epochs: int | None = None            # set by from_checkpoint
        self._end_epoch = 0                                # the epoch the running (or last) fit ends at
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
        # the ranks this Trainer trains with: this process alone, or MPI's
        self.dist: OneProcess | Distributed = OneProcess()
        if distributed:
            self.dist = distributed if isinstance(distributed, Distributed) else Distributed()
        # one shuffle for all ranks, even when seed is None: rank 0's stream everywhere
        self.rng.bit_generator.state = self.dist.bcast(self.rng.bit_generator.state)
        self._split_seed = self.dist.bcast(self._split_seed)
        self.verbose = verbose if self.is_root else 0
        self.allow_nonfinite = bool(allow_nonfinite)
        self.optimizer.bind(model.params, model.grads, model.trainable_ranges)
        self.stop_training = False
        self.history = History()
        self.epoch = 0
        self._bufs: tuple | None = None   # (xb, yb, delta, pred) of the largest batch so far
        self._wbuf: np.ndarray | None = None   # a batch's sample weights

    def _named_metrics(self, metrics) -> dict:
        """{logged name: function of metrics.Outputs} of the metrics asked for (or the default)."""
        if metrics is None:
            metrics = ["r2", "mae"] if self._outputs == "values" else []
        if isinstance(metrics, (str, bytes)) or not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics: expected a list of names or callables, got {type(metrics).__name__}")
        named: dict = {}
        for m in metrics:
            name, fn = metric(m, self._outputs, self._accuracy)
            if name in named or name in ("loss", "time"):
                raise ValueError(f"metrics: {name!r} is asked for twice, or is the name of a logged value")
            named[name] = fn
        if self._accuracy:
            named.pop("accuracy", None)    # counted anyway, on training and validation data
        return named

    @property
    def is_root(self) -> bool:
        """True on the process that prints and writes files (rank 0, or the only one)."""
        return self.dist.is_root

    # ---- data at the boundary ---------------------------------------------------
    def _data(self, X, y, name="X", steps=None):
        """The data's source (data_sources.py), validated as far as it can be up front."""
        source = data_source(self, X, y, steps, name)
        if not source.random_access and self.dist.size > 1:
            raise ValueError(f"{name}: distributed training needs data with random access (arrays or a "
                             "Dataset), not an iterable of batches")
        return source

    def _buffers(self, B: int, y: np.ndarray):
        """Batch buffers of B rows, reused across batches and epochs."""
        bufs = self._bufs
        if bufs is None or bufs[0].shape[0] < B or bufs[1].shape[1:] != y.shape[1:] or bufs[1].dtype != y.dtype:
            m = self.model
            bufs = self._bufs = (np.empty((B, m.n_in), m.dtype), np.empty((B,) + y.shape[1:], y.dtype),
                                 np.empty((B, m.n_out), m.dtype), np.empty(B, np.int64))
        xb, yb, delta, pred = bufs
        return xb[:B], yb[:B], delta[:B], pred[:B]

    def _weights_of(self, w, idx):
        """The batch's sample weights (a reused buffer), or None when training is unweighted."""
        if w is None:
            return None
        if self._wbuf is None or self._wbuf.shape[0] < idx.shape[0]:
            self._wbuf = np.empty(idx.shape[0], w.dtype)
        return np.take(w, idx, out=self._wbuf[:idx.shape[0]])

    def _loss_and_grad(self, Z, yb, delta, wb) -> float:
        """The batch's loss (weighted mean Σ w_i ℓ_i / Σ w_i with sample weights wb), δ into delta."""
        return self.loss.value_and_grad(Z, yb, delta) if wb is None else self.loss.value_and_grad(Z, yb, delta, wb)

    def _gradient(self, source, batch, w=None, seen=None) -> tuple[float, int | None, int, float]:
        """Forward and backward over one batch (rows idx of a random-access source, or an
        iterable's (X_b, y_b)): fills model.grads with ∂L/∂θ of the batch's mean loss (weighted
        by the rows' sample weights w of a random-access source);
        returns (loss, correct, rows, W_b), W_b the batch's rows or the sum of its weights.
        Each rank takes its shard of the rows and the shards' gradients are combined, each
        weighing W_r / W_b (pyneuro/distributed.py; one process: all rows). With `seen` (a
        list), a copy of the outputs and targets of this rank's rows is appended to it (the
        training metrics)."""
        if not source.random_access:
            xb, yb, delta, pred = source.fetch(self, batch)
            Z = self.model.forward(xb, training=True)
            self._keep(seen, Z, yb)
            loss = self.loss.value_and_grad(Z, yb, delta)
            correct = self._correct(Z, yb, pred)
            self.model.backward(delta)
            return loss, correct, xb.shape[0], float(xb.shape[0])
        idx = batch
        rows = self.dist.shard(idx)
        wb = self._weights_of(w, rows)
        share = float(rows.shape[0]) if wb is None else float(wb.sum(dtype=np.float64))   # W_r
        loss, correct = 0.0, None
        if rows.shape[0]:
            xb, yb, delta, pred = source.fetch(self, rows)
            Z = self.model.forward(xb, training=True)
            self._keep(seen, Z, yb)
            loss = self._loss_and_grad(Z, yb, delta, wb)
            correct = self._correct(Z, yb, pred)
            self.model.backward(delta)
        else:                                   # more ranks than rows in this batch
            self.model.grads[...] = 0
            correct = 0 if self._accuracy else None
        loss, correct, total = self.dist.combine_step(self.model.grads, loss, correct, share)   # total: W_b
        return loss, correct, idx.shape[0], total

    @staticmethod
    def _keep(seen, Z, yb) -> None:
        """Append copies of a training batch's outputs and targets to `seen` (when a list)."""
        if seen is not None:
            seen.append((Z.copy(), yb.copy()))

    def _correct(self, Z, yb, pred) -> int | None:
        """How many rows of the batch are classified right (None when outputs are not classes)."""
        return count_correct(Z, yb, pred, self._threshold) if self._accuracy else None

    # ---- training ----------------------------------------------------------------
    def fit(self, X, y=None, validation_data=None, validation_split: float = 0.0,
            callbacks: list[Callback] | None = None, epochs: int | None = None,
            steps_per_epoch: int | None = None, sample_weight=None, class_weight=None) -> History:
        """Train, epoch after epoch.

        With sample_weight and/or class_weight each row i weighs w_i = sample_weight_i ·
        class_weight[y_i]: a step minimises its batch's weighted mean loss
        L = Σ_i w_i ℓ_i / Σ_i w_i (pyneuro.losses; a batch whose weights are all 0 gives 0 and
        no gradient), the logged batch 'loss' is that weighted mean, and the epoch's 'loss' is
        Σ_batches L_b W_b / Σ_batches W_b (W_b = Σ_{i in b} w_i), the weighted mean over the
        epoch's rows. 'accuracy' and the validation values stay unweighted. Weights need an
        array X (class_weight: and its y).

        Parameters
        ----------
        X : array_like of shape (n_samples, n_in), Dataset, or iterable of batches
            An array (ndarray, np.memmap, list) of any real dtype — float16/32/64, integers,
            bool — each batch converted to the model's dtype as it is gathered
            (X_b = T(X[idx]), no whole copy); or a Dataset, an object with ``len(ds)`` and
            ``ds[idx] -> (X_b, y_b)`` for an int64 index array ``idx`` (y then None); or an
            iterable or generator of ``(X_b, y_b)`` batches (y None), one pass per epoch, or
            `steps_per_epoch` batches of it. Arrays and Datasets are shuffled by the seed.
        y : array_like, optional
            With an array X: integer labels (n_samples,), class probabilities, or real targets.
        validation_data : tuple (X_val, y_val), Dataset or iterable of batches, optional
            An iterable must start a new pass at each iter() (a list of batches, not a generator).
        validation_split : float
            Fraction of the rows held out for validation (the same rows on every call; arrays
            and Datasets).
        callbacks : list of Callback, optional
        epochs : int, optional
            How many epochs (default: the Trainer's, less those a checkpoint already ran).
        steps_per_epoch : int, optional
            Batches per epoch (at most): needed for a generator, which has no length.
        sample_weight : array-like of shape (n_samples,) or float, optional
            w_i ≥ 0 per row (finite, not all 0), gathered with the rows into each batch.
        class_weight : dict {class: weight} or 'balanced', optional
            Classifiers trained on integer labels (cross_entropy) or one 0/1 output
            (binary_cross_entropy): row i weighs class_weight[y_i] (classes left out: 1);
            'balanced' is scikit-learn's n_samples / (n_classes · bincount(y)) over the
            training rows. Multiplies sample_weight. Given to fit only, not to the Trainer.

        Returns
        -------
        History
            Per-epoch 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'time' (also self.history).
        """
        if not self.model._fit_lock.acquire(blocking=False):
            raise RuntimeError("fit is already running on this Trainer's model (in another thread); "
                               "one model trains in one fit at a time")
        try:
            return self._fit(X, y, validation_data, validation_split, callbacks, epochs, steps_per_epoch,
                             sample_weight, class_weight)
        except Exception as error:   # one rank's failure stops the job instead of hanging the others
            self.dist.abort(error)
            raise
        finally:
            self.model._fit_lock.release()

    def _fit(self, X, y, validation_data, validation_split, callbacks, epochs, steps, sample_weight=None,
             class_weight=None) -> History:
        steps = None if steps is None else check_int(steps, "steps_per_epoch", 1)
        train = self._data(X, y, steps=steps)
        self.model._trained_on(self.loss)
        self.dist.broadcast(self.model.params)   # every rank starts from rank 0's weights
        epochs = self._epochs_to_run(epochs)
        rows, val = self._split(train, validation_data, validation_split)
        w = self._row_weights(train, rows, sample_weight, class_weight)
        batch = self._batch_size_for(rows.shape[0]) if rows is not None else self.batch_size
        self._synchronise_batchnorm(rows, batch, w)
        callbacks = self._attach(callbacks)
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin({})
        with _InterruptBetweenSteps() as interrupt:
            for _ in range(epochs):
                epoch, t0 = self.epoch, time.perf_counter()
                self.optimizer.set_epoch(epoch)
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                logs = self._train_epoch(train, rows, batch, steps, callbacks, interrupt, w)
                if val is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate(*val).items()})
                logs["time"] = time.perf_counter() - t0
                self.epoch += 1
                self._end_of_epoch(epoch, logs, callbacks)
                interrupt.check()
                if self.stop_training:
                    break
        for cb in callbacks:
            cb.on_train_end({})
        return self.history

    def _synchronise_batchnorm(self, rows, batch: int, w) -> None:
        """On several MPI ranks, BatchNorm layers take their statistics over all ranks' rows
        (normalization.BatchNorm.ranks). Every rank must then hold rows of every batch, and the
        shards weigh by their rows (refused with sample weights rather than weighed wrong)."""
        norms = [layer for layer in self.model.layers if isinstance(layer, BatchNorm)]
        for layer in norms:
            layer.ranks = self.dist if self.dist.size > 1 else None
        if not norms or self.dist.size == 1:
            return
        if w is not None:
            raise ValueError("BatchNorm on several MPI ranks: sample_weight/class_weight are not supported "
                             "(the batch statistics are unweighted; train on one process)")
        smallest = min(batch, rows.shape[0] % batch or batch) if rows is not None else batch
        if smallest < self.dist.size:
            raise ValueError(f"BatchNorm on {self.dist.size} MPI ranks needs at least {self.dist.size} rows in "
                             f"every batch (one per rank), but a batch has {smallest}; choose another batch_size")

    def _end_of_epoch(self, epoch: int, logs: dict, callbacks) -> None:
        """The callbacks' on_epoch_end, in order; what each logs (a callback may add values,
        logs["val_auc"] = …) is kept in the history before the next one runs (a checkpoint
        holds it), and the epoch's line is printed once all have run."""
        recorded: set = set()
        for cb in [*callbacks, None]:
            for k, v in logs.items():
                if k not in recorded:
                    self.history.setdefault(k, []).append(v)
                    recorded.add(k)
            if cb is not None:
                cb.on_epoch_end(epoch, logs)
        if self.verbose:
            print(f"epoch {self.epoch:>3}  " + "  ".join(
                f"{k} {v:.4f}" if k != "time" else f"({v:.2f} s)" for k, v in logs.items()
                if isinstance(v, (int, float, np.number))) + self._say_once(), flush=True)

    def _say_once(self) -> str:
        """accuracy_note, for the first epoch line this Trainer prints ('' after)."""
        note, self._said = ("" if getattr(self, "_said", False) or not self.accuracy_note
                            else f"  ({self.accuracy_note})"), True
        return note

    def _row_weights(self, source, rows, sample_weight, class_weight) -> np.ndarray | None:
        """Each row's weight w_i = sample_weight_i · class_weight[y_i] (fit's docstring), or None."""
        if sample_weight is None and class_weight is None:
            return None
        if not isinstance(source, ArraySource):
            raise ValueError("sample_weight/class_weight: need an array X (and y); a Dataset or an iterable "
                             "of batches has no weights per row here")
        y = source.y    # distributed: every rank holds all rows and weights, and uses its shard's
        n, dtype = y.shape[0], self.model.dtype
        w = np.ones(n, dtype) if sample_weight is None else check_sample_weight(sample_weight, n, dtype)
        if class_weight is not None:
            w = w.copy() if sample_weight is not None else w   # never the caller's array, written below
            classes = self.loss.classes_of(y, self.model.n_out)
            per_row = class_weight_rows(class_weight, classes[rows], self.model.n_out)
            w[rows] *= per_row.astype(dtype)
        if not (w[rows] > 0).any():
            raise ValueError("sample_weight/class_weight: the weights of all training rows are zero")
        return w

    def _epoch_batches(self, source, rows, batch, steps):
        """(number of batches or None, the epoch's batches): index arrays of a seeded
        permutation of `rows` (at most `steps` of them), or an iterable source's own batches."""
        if rows is None:
            return steps, source.batches()
        n_batches, perm = self._epoch_rows(rows, batch, steps)
        return n_batches, (perm[b * batch:(b + 1) * batch] for b in range(n_batches))

    def _epoch_rows(self, rows, batch, steps) -> tuple[int, np.ndarray]:
        """(number of batches, the rows they take in order): a seeded permutation of `rows`,
        cut to `steps` batches when given."""
        perm = rows[self.rng.permutation(rows.shape[0])]
        n_batches = (rows.shape[0] + batch - 1) // batch
        n_batches = n_batches if steps is None else min(steps, n_batches)
        return n_batches, np.ascontiguousarray(perm[:min(perm.shape[0], n_batches * batch)])

    def _train_epoch(self, source, rows, batch, steps, callbacks, interrupt, w=None) -> dict:
        """One pass over the source (a seeded permutation of `rows`), a step per batch; the epoch's
        logs (its loss the mean over rows, weighted by w when given)."""
        loop = self._compiled_loop(source, rows, batch, w, callbacks)
        if loop is not None:
            return self._train_epoch_compiled(loop, source, rows, batch, steps, interrupt, w)
        n_batches, batches = self._epoch_batches(source, rows, batch, steps)
        total_loss, total_correct, seen, weight = 0.0, 0, 0, 0.0
        outputs: list | None = [] if self._metrics else None   # (Z_b, y_b) of this rank's rows
        bar = _progress_bar(n_batches, f"epoch {self.epoch + 1}") if self.verbose == 1 else None
        try:
            for b, key in enumerate(batches):
                with self.model._lock:    # a predict() from another thread waits for the whole step
                    loss, correct, n_rows, W_b = self._gradient(source, key, w, outputs)
                    if not np.isfinite(loss):
                        raise DivergenceError(f"loss became {loss} at epoch {self.epoch + 1}, batch {b + 1} "
                                              f"of {n_batches or '?'}; the model keeps the weights from before this "
                                              "batch (try a smaller learning rate or clip_norm)")
                    self.optimizer.step()
                interrupt.check()         # Ctrl-C lands here, between whole steps
                total_loss += loss * W_b
                weight += W_b
                seen += n_rows
                logs = {"loss": loss}
                if correct is not None:
                    total_correct += correct
                    logs["accuracy"] = correct / n_rows
                for cb in callbacks:
                    cb.on_batch_end(b, logs)
                if bar is not None:
                    # the weighted mean so far; undefined while every row seen weighed 0
                    bar.set_postfix(loss=f"{total_loss / weight:.4f}" if weight else "n/a", refresh=False)
                    bar.update(1)
                if self.stop_training:    # set in on_batch_end: the epoch ends after this step
                    break
        finally:
            if bar is not None:
                bar.close()
        return self._epoch_logs(total_loss, weight, total_correct, seen, outputs)

    # ---- the compiled path: runs of whole steps in one call (csrc/train_loop.pxi) ----------
    _compiled = True      # (private) False: every epoch takes the step-by-step path

    def _compiled_loop(self, source, rows, batch, w, callbacks):
        """A _core.TrainLoop for this epoch when the core can run its steps whole, else None.
        It can when: one process, an array source whose X needs no per-batch overflow check,
        only Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten and Dropout layers (each Dropout its
        own stream) with a Dense among them, a built-in loss and optimizer (clip_norm: one
        trainable run), and no callback with on_batch_end. The
        results are bitwise those of the step-by-step path (tests/test_train_loop.py)."""
        m, opt, loss = self.model, self.optimizer, self.loss
        if not (self._compiled and self.dist.size == 1 and isinstance(source, ArraySource) and rows is not None):
            return None
        if any(getattr(cb.on_batch_end, "__func__", None) is not Callback.on_batch_end for cb in callbacks):
            return None
        X = source.X
        if X.ndim > 2:           # images (N, C, H, W) or (N, H, W): rows of C·H·W, as the layers read them
            if not X.flags.c_contiguous:
                return None
            X = X.reshape(len(X), -1)
        if X.dtype == np.float16 or (X.dtype.kind == "f" and X.dtype.itemsize > m.dtype.itemsize
                                     and not self.allow_nonfinite):
            return None   # float16: converted in NumPy; float64 → float32: checked for overflow per batch
        kinds = [type(layer) for layer in m.layers]
        drops = [layer for layer in m.layers if type(layer) is Dropout and layer.p > 0]
        if (not set(kinds) <= {Dense, Dropout, Conv2D, MaxPool2D, AvgPool2D, Flatten} or Dense not in kinds
                or len({id(d.rng) for d in drops}) != len(drops)):
            return None
        if type(loss) not in (CrossEntropy, BinaryCrossEntropy, MSE, MAE, Huber):
            return None
        hyper = {"weight_decay": opt.weight_decay}
        if type(opt) is SGD:
            rule, s1, s2 = "sgd", opt.v, None
            hyper.update(momentum=opt.momentum, nesterov=opt.nesterov)
        elif type(opt) in (Adam, AdamW):
            rule, s1, s2 = "adam", opt.m, opt.v
            hyper.update(beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps, decoupled=opt.decoupled)
        elif type(opt) is RMSprop:
            rule, s1, s2 = "rmsprop", opt.v, None
            hyper.update(rho=opt.rho, eps=opt.eps)
        else:
            return None
        runs = [(r.start, r.stop) for r in opt._runs()]
        if opt.clip_norm is not None and len(runs) != 1:
            return None
        specs, skipped = [], 0     # Flatten and Dropout(0) do nothing: no step of their own
        for i, layer in enumerate(m.layers):
            if type(layer) is Dense:
                specs.append(("dense", layer.W, layer.b, layer.dW, layer.db, layer.activation, layer.alpha))
            elif type(layer) is Conv2D:
                specs.append(("conv", layer._W2, layer.b, layer._dW2, layer.db, layer.activation, layer.alpha,
                              layer._plan))
            elif type(layer) in (MaxPool2D, AvgPool2D):
                specs.append(("pool", layer._plan))
            elif type(layer) is Dropout and layer.p > 0:
                specs.append(("dropout", layer.n_out, layer.p))
            else:
                skipped += i < m._first_with_params
        first = m._first_with_params - skipped
        scale = 1.0
        if type(loss) is MSE and loss.REDUCTIONS[loss.reduction] is not None:
            scale = loss.REDUCTIONS[loss.reduction] * m.n_out
        pos_weight = loss._pos_weight(np.empty((0, m.n_out), m.dtype)) if type(loss) is BinaryCrossEntropy else None
        self._drops = drops
        return _core.TrainLoop(specs, m.params, m.grads, X, source.y, w, batch, loss.name, scale, loss.huber_delta if loss.name != "cross_entropy"
                               else 1.0, pos_weight, rule, hyper, s1, s2, runs, opt.clip_norm or 0.0,
                               self._accuracy, self._threshold, first)

    def _planned_lrs(self, k: int) -> tuple[np.ndarray, Exception | None]:
        """The learning rates of the next k steps (Optimizer._scheduled_lr at t, t+1, …), and the
        error a schedule raised at the step where it did (the lrs then stop before it)."""
        opt, t0, lrs = self.optimizer, self.optimizer.t, []
        try:
            for j in range(k):
                opt.t = t0 + j
                lrs.append(opt._scheduled_lr())
                if opt.schedule is None or getattr(opt.schedule, "per", "epoch") == "epoch":
                    lrs.extend(lrs[-1:] * (k - 1))
                    break
        except Exception as error:   # raised after the steps before it, as the step-by-step path does
            return np.array(lrs, np.float64), error
        finally:
            opt.t = t0
        return np.array(lrs, np.float64), None

    def _train_epoch_compiled(self, loop, source, rows, batch, steps, interrupt, w) -> dict:
        """_train_epoch's epoch, its steps run in chunks of whole steps by `loop` (a
        _core.TrainLoop), each chunk about 0.1 s of work: Ctrl-C, the progress bar and the
        model's lock are seen between chunks. Same logs, same weights, same streams."""
        m, opt = self.model, self.optimizer
        n_batches, perm = self._epoch_rows(rows, batch, steps)
        total_loss, total_correct, seen, weight = 0.0, 0, 0, 0.0
        outputs: list | None = [] if self._metrics else None
        bar = _progress_bar(n_batches, f"epoch {self.epoch + 1}") if self.verbose == 1 else None
        widths = loop.dropout_widths
        # steps per chunk: grown towards ~0.1 s of work, the dropout uniforms kept under 16 MB
        most = max(1, (16 << 20) // max(1, sum(widths) * batch * m.dtype.itemsize))
        done, k = 0, 1
        try:
            while done < n_batches:
                k = min(k, n_batches - done, most)
                lrs, error = self._planned_lrs(k)
                k = lrs.shape[0]
                if k == 0:
                    assert error is not None
                    raise error
                start = done * batch
                n_rows = min(perm.shape[0], start + k * batch) - start
                states = [d.rng.bit_generator.state for d in self._drops]
                masks = [np.empty(n_rows * n, m.dtype) for n in widths]
                for d, u in zip(self._drops, masks):
                    d.rng.random(out=u, dtype=m.dtype)
                losses, correct = np.empty(k), np.zeros(k, np.int64)
                zout = np.empty((n_rows, m.n_out), m.dtype) if outputs is not None else None
                t0, tick = opt.t, time.perf_counter()
                with m._lock:
                    got = loop.run(perm, start, k, lrs, t0, masks, losses, correct, zout)
                time.sleep(0)             # a predict() waiting in another thread gets its turn here
                tick = time.perf_counter() - tick
                opt.t = t0 + got
                if got:
                    opt._current_lr = float(lrs[got - 1])
                for j in range(got):
                    a, b = start + j * batch, min(perm.shape[0], start + (j + 1) * batch)
                    W_b = float(b - a) if w is None else float(w[perm[a:b]].sum(dtype=np.float64))
                    total_loss += float(losses[j]) * W_b
                    weight += W_b
                    seen += b - a
                    total_correct += int(correct[j])
                    if outputs is not None and zout is not None:
                        outputs.append((zout[a - start:b - start], source.y[perm[a:b]]))
                done += got
                if bar is not None:
                    bar.set_postfix(loss=f"{total_loss / weight:.4f}" if weight else "n/a", refresh=False)
                    bar.update(got)
                if got < k:               # a loss that is not finite: the streams as the step-by-step path leaves them
                    for d, state in zip(self._drops, states):
                        d.rng.bit_generator.state = state
                        d.rng.random(out=np.empty((min(perm.shape[0], start + (got + 1) * batch) - start)
                                                  * d.n_out, m.dtype), dtype=m.dtype)
                    raise DivergenceError(f"loss became {float(losses[got])} at epoch {self.epoch + 1}, batch "
                                          f"{done + 1} of {n_batches}; the model keeps the weights from before "
                                          "this batch (try a smaller learning rate or clip_norm)")
                interrupt.check()         # Ctrl-C lands here, between whole chunks of steps
                if error is not None and done < n_batches:
                    raise error
                k = max(1, min(4 * k, int(k * 0.1 / max(tick, 1e-6))))
        finally:
            if bar is not None:
                bar.close()
        return self._epoch_logs(total_loss, weight, total_correct, seen, outputs)

    def _epoch_logs(self, total_loss: float, weight: float, correct: int, seen: int, outputs) -> dict:
        """The epoch's logs: loss Σ L_b W_b / Σ W_b, accuracy, the training metrics."""
        logs = {"loss": total_loss / weight if weight else 0.0,
                **({"accuracy": correct / seen} if self._accuracy else {})}
        if outputs is not None:
            logs.update(self._metric_values(outputs))
        return logs

    def _metric_values(self, batches: list) -> dict:
        """The Trainer's metrics of the (Z_b, y_b) pairs this rank kept, all ranks' rows
        gathered (every rank returns the same numbers)."""
        m = self.model
        Z = np.concatenate([z for z, _ in batches]) if batches else np.empty((0, m.n_out), m.dtype)
        y = np.concatenate([t for _, t in batches]) if batches else np.empty(0)
        outputs = Outputs(self.dist.gather(Z), self.dist.gather(y), self._outputs, self._threshold)
        return {name: fn(outputs) for name, fn in self._metrics.items()}

    def _split(self, train, validation_data, validation_split) -> tuple:
        """(training rows (None for an iterable source), validation (source, rows or None) or None)."""
        validation_split = check_float(validation_split, "validation_split", 0.0, 1.0, high_open=True)
        n = len(train) if train.random_access else 0
        rows = np.arange(n, dtype=np.int64) if train.random_access else None
        if validation_data is not None:
            if validation_split:
                raise ValueError("fit: pass validation_data or validation_split, not both")
            pair = (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2
                    and not isinstance(validation_data[0], (tuple, list)))   # not a list of batches
            if pair:
                val = self._data(validation_data[0], validation_data[1], name="validation_data")
            elif isinstance(validation_data, tuple):
                raise TypeError("validation_data: expected a tuple (X_val, y_val), a Dataset or a list of batches")
            else:
                val = self._data(validation_data, None, name="validation_data")
            return rows, (val, None)
        if not validation_split:
            return rows, None
        if rows is None:
            raise ValueError("validation_split: an iterable of batches cannot be split; pass validation_data")
        perm = np.random.default_rng(self._split_seed).permutation(n)
        n_val = int(round(n * validation_split))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"validation_split: {validation_split} of {n} samples leaves "
                             f"{n - n_val} for training and {n_val} for validation; both need >= 1")
        return np.sort(perm[n_val:]), (train, np.sort(perm[:n_val]))

    def _epochs_to_run(self, epochs) -> int:
        """fit's epochs: as asked, else what a checkpoint left to run, else the Trainer's."""
        if epochs is None:
            epochs = self.epochs if self._pending_epochs is None else self._pending_epochs
        epochs = check_int(epochs, "epochs", 0)
        self._pending_epochs = None
        self._end_epoch = self.epoch + epochs
        return epochs

    def _batch_size_for(self, n: int) -> int:
        if self.batch_size > n:
            warnings.warn(f"batch_size {self.batch_size} is larger than the {n} training samples; "
                          f"using {n}", stacklevel=4)
            return n
        return self.batch_size

    def _attach(self, callbacks) -> list[Callback]:
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected pyneuro Callback objects, got {type(cb).__name__}")
            cb.trainer = self
        return callbacks

    # ---- checkpoints -----------------------------------------------------------------
    def save_checkpoint(self, path) -> None:
        """Write a checkpoint (atomic): model, optimizer state, epoch, random streams, history.
        pyneuro.load(path) reads the model from it; from_checkpoint(path) resumes training.

        Parameters
        ----------
        path : str or os.PathLike
        """
        save_checkpoint(self, path)

    @classmethod
    def from_checkpoint(cls, path, schedule=None, verbose: int = 1) -> "Trainer":
        """A Trainer in the state save_checkpoint recorded; fit() without `epochs` runs the
        epochs still to come and ends with bitwise the weights of uninterrupted training.

        Parameters
        ----------
        path : str or os.PathLike
        schedule : callable, optional
            The learning-rate schedule, when it was a function (files cannot hold those).
        verbose : {0, 1, 2}

        Returns
        -------
        Trainer
        """
        return load_checkpoint(cls, path, schedule, verbose)

    # ---- evaluation ------------------------------------------------------------------
    def _evaluate(self, source, rows=None, batch_size: int = 1024, w=None) -> dict:
        """Mean loss (weighted by w, for an array source, when given) and accuracy over the
        source's rows (or source[rows]), and the metrics;
        distributed, each rank takes a shard, the sums are added up and the outputs gathered,
        so every rank returns the same numbers. An iterable source is read in one pass."""
        if source.random_access:
            every = np.arange(len(source), dtype=np.int64) if rows is None else rows
            mine = self.dist.shard(every)
            keys = (mine[s:s + batch_size] for s in range(0, mine.shape[0], batch_size))
        else:
            keys = source.batches()
        sums = np.zeros(4)    # Σ loss·W_b, Σ correct, rows, Σ W_b (W_b: the batch's rows or weights)
        kept: list | None = [] if self._metrics else None   # (Z_b, y_b), for the metrics
        for key in keys:
            with self.model._lock:
                xb, yb, _, pred = source.fetch(self, key)
                Z = self.model.forward(xb, training=False)
                wb = self._weights_of(w, key)
                W_b = xb.shape[0] if wb is None else float(wb.sum())
                sums[0] += (self.loss(Z, yb) if wb is None else self.loss(Z, yb, wb)) * W_b
                sums[1] += self._correct(Z, yb, pred) or 0
                sums[2] += xb.shape[0]
                sums[3] += W_b
                self._keep(kept, Z, yb)
        self.dist.sum(sums)
        n = int(sums[2])
        out = {"loss": float(sums[0]) / float(sums[3])}
        if self._accuracy:
            out["accuracy"] = int(sums[1]) / n
        if kept is not None:
            out.update(self._metric_values(kept))
        return out

    def evaluate(self, X, y=None, batch_size: int = 1024, sample_weight=None) -> dict:
        """Mean loss, accuracy for classifiers, and the Trainer's metrics, over (X, y).

        With sample_weight the loss is the weighted mean Σ_i w_i ℓ_i / Σ_i w_i over all rows
        (batch by batch: Σ_b L_b W_b / Σ_b W_b); accuracy and metrics stay unweighted.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_in), Dataset, or iterable of batches
            As for fit (any real dtype, converted batch by batch); an iterable is read once.
        y : array_like, optional
            With an array X.
        batch_size : int
            Rows per batch of an array or a Dataset.
        sample_weight : array-like of shape (n_samples,), optional
            w_i ≥ 0 per row, not all 0 (an array X only).

        Returns
        -------
        dict
            {'loss': float, 'accuracy': float (classifiers only), and one float per metric}.
        """
        source = self._data(X, y)
        w = None
        if sample_weight is not None:
            if not isinstance(source, ArraySource):
                raise ValueError("sample_weight: evaluate takes weights with an array X (and y)")
            w = check_sample_weight(sample_weight, len(source), self.model.dtype)
        return self._evaluate(source, None, check_int(batch_size, "batch_size", 1), w)
