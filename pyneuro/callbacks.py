"""Callbacks: hooks the Trainer calls at the ends of batches, epochs and training.

logs are dicts of floats: per batch {"loss", "accuracy"?}; per epoch the same plus
"val_loss", "val_accuracy" and "val_<metric>" when there is validation data. What a
callback adds to an epoch's logs in on_epoch_end is kept in the History and printed.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any

import numpy as np

from ._validation import check_float, check_int
from .metrics import higher_is_better
from .model import model_document


class History(dict):
    """Per-epoch metrics: history['loss'], ['accuracy'], ['val_loss'], ['val_accuracy'] (lists)."""

    @property
    def epochs(self) -> int:
        return len(self.get("loss", []))


class Callback:
    """Subclass and override what you need. self.trainer is set before training starts."""

    trainer: Any = None   # the Trainer, set before training starts

    def on_train_begin(self, logs: dict) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...
    def on_batch_end(self, batch: int, logs: dict) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, logs: dict) -> None: ...


class LambdaCallback(Callback):
    """A Callback made of plain functions.

    Parameters
    ----------
    on_epoch_end : callable (epoch, logs), optional
    on_batch_end : callable (batch, logs), optional
    on_train_begin, on_train_end : callable (logs), optional
    """

    def __init__(self, on_epoch_end=None, on_batch_end=None, on_train_begin=None, on_train_end=None):
        for name, fn in (("on_epoch_end", on_epoch_end), ("on_batch_end", on_batch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"LambdaCallback {name}: expected a callable, got {type(fn).__name__}")
                setattr(self, name, fn)


def _sign(monitor: str, mode: str) -> float:
    """+1 when smaller values of `monitor` are better, −1 when larger ('auto': larger for
    accuracies, precision, recall, F1, AUC and R², metrics.higher_is_better)."""
    if mode == "auto":
        mode = "max" if higher_is_better(monitor) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    return 1.0 if mode == "min" else -1.0


def _logged(callback, logs: dict) -> float:
    """The value callback.monitor names in this epoch's logs."""
    if callback.monitor not in logs:
        raise ValueError(f"{type(callback).__name__}: monitor {callback.monitor!r} is not among the logged "
                         f"values {sorted(logs)}; pass validation data or monitor 'loss'")
    return logs[callback.monitor]


class EarlyStopping(Callback):
    """Stop training when `monitor` has not improved by more than min_delta for `patience` epochs.

    Parameters
    ----------
    monitor : str
        A logged value: 'val_loss' (default), 'loss', 'val_accuracy', ...
    patience : int
        Epochs without improvement before stopping.
    min_delta : float
        The least change that counts as an improvement.
    mode : {'auto', 'min', 'max'}
        'auto': 'max' for accuracies, precision, recall, F1, AUC and R², else 'min'.
    restore_best : bool
        Put back the weights of the best epoch when training ends.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = False):
        self.monitor = monitor
        self.patience = check_int(patience, "patience", 0)
        self.min_delta = check_float(min_delta, "min_delta", 0.0)
        self.sign = _sign(monitor, mode)
        self.restore_best = bool(restore_best)

    def on_train_begin(self, logs):
        self.best = np.inf
        self.best_epoch = None
        self.best_weights = None
        self.wait = 0

    def on_epoch_end(self, epoch, logs):
        value = self.sign * _logged(self, logs)
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_weights = self.trainer.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.trainer.stop_training = True

    def on_train_end(self, logs):
        if self.restore_best and self.best_weights is not None:
            self.trainer.model.set_weights(self.best_weights)


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's base learning rate by `factor` when `monitor` has not improved
    by more than min_delta for `patience` epochs:
        lr ← max(lr·factor, min_lr)
    then `cooldown` epochs without counting (Keras' rule: the cooldown is counted down as each
    epoch ends, before that epoch is judged, so the last cooldown epoch already counts).
    It changes optimizer.lr, the base a schedule multiplies; the new lr is saved in
    checkpoints, the callback's own counters are not.

    Parameters
    ----------
    monitor : str
        A logged value (default 'val_loss').
    factor : float
        In (0, 1).
    patience : int
        Epochs without improvement before a reduction.
    min_lr : float
        The lowest base learning rate it sets (≥ 0).
    cooldown : int
        Epochs after a reduction before counting again.
    mode : {'auto', 'min', 'max'}
    min_delta : float
        The least change that counts as an improvement.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_lr: float = 0.0, cooldown: int = 0, mode: str = "auto", min_delta: float = 0.0):
        self.monitor = monitor
        self.factor = check_float(factor, "factor", 0.0, 1.0, low_open=True, high_open=True)
        self.patience = check_int(patience, "patience", 0)
        self.min_lr = check_float(min_lr, "min_lr", 0.0)
        self.cooldown = check_int(cooldown, "cooldown", 0)
        self.sign = _sign(monitor, mode)
        self.min_delta = check_float(min_delta, "min_delta", 0.0)

    def on_train_begin(self, logs):
        self.best = np.inf
        self.wait = self.cooling = 0

    def on_epoch_end(self, epoch, logs):
        value = self.sign * _logged(self, logs)
        if self.cooling:
            self.cooling -= 1
            self.wait = 0
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
        elif not self.cooling:
            self.wait += 1
            if self.wait >= self.patience:
                opt = self.trainer.optimizer
                if opt.lr > self.min_lr:
                    opt.lr = max(opt.lr * self.factor, self.min_lr) or opt.lr   # an lr stays > 0
                self.cooling, self.wait = self.cooldown, 0


class ModelCheckpoint(Callback):
    """Save a checkpoint at the end of an epoch: every epoch, or only when `monitor` improved.
    The file is a model file (pyneuro.load reads it) that also carries the optimizer state,
    the epoch and the random streams: Trainer.from_checkpoint(path).fit(...) continues exactly.

    Parameters
    ----------
    path : str or os.PathLike
    monitor : str
        The logged value that decides "best" (default 'val_loss').
    save_best_only : bool
        Save only when `monitor` improved (default) or every epoch.
    mode : {'auto', 'min', 'max'}
    """

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = True, mode: str = "auto"):
        self.path = path
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.sign = _sign(monitor, mode)
        self.best = np.inf

    def on_train_begin(self, logs):
        """Refuse now, not after an epoch, a model no checkpoint could bring back (a custom
        layer or loss that is not registered)."""
        model_document(self.trainer.model, os.fspath(self.path))

    def on_epoch_end(self, epoch, logs):
        if self.save_best_only:
            value = self.sign * _logged(self, logs)
            if not value < self.best:
                return
            self.best = value
        if self.trainer.is_root:    # distributed: one rank writes
            self.trainer.save_checkpoint(self.path)


class CSVLogger(Callback):
    """Write one CSV line per epoch: the epoch (counted from 1, as printed) and every logged
    value, a header line first. Each line is appended in one write to a file opened with
    O_APPEND, so a reader (tail -f) never sees half a line. The columns are those of the
    first epoch (put CSVLogger after callbacks that add values); a value that appears later
    is an error, as a CSV file cannot grow a column; a value missing later is left empty.
    Distributed, only the root rank writes.

    Parameters
    ----------
    path : str or os.PathLike
    append : bool
        Continue an existing file (its header gives the columns) instead of starting anew.
    """

    def __init__(self, path, append: bool = False):
        self.path = os.fspath(path)
        self.append = bool(append)
        self.columns: list[str] | None = None

    def on_train_begin(self, logs):
        self.columns = None
        if not self.trainer.is_root:
            return
        if self.append and os.path.exists(self.path) and os.path.getsize(self.path):
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f))[1:]
        else:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            self.append = True     # a second fit continues the file

    def on_epoch_end(self, epoch, logs):
        if not self.trainer.is_root:
            return
        if self.columns is None:
            self.columns = list(logs)
            self._write(["epoch", *self.columns])
        new = [k for k in logs if k not in self.columns]
        if new:
            raise ValueError(f"CSVLogger: {new[0]!r} was logged at epoch {epoch + 1} but is not a column of "
                             f"{self.path} (columns {self.columns}, fixed at the first epoch); add the "
                             "CSVLogger after the callbacks that log values, or start a new file")
        self._write([epoch + 1, *(logs.get(k, "") for k in self.columns)])

    def _write(self, row: list) -> None:
        """One line, appended in one os.write (a line is whole or absent)."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(row)
        data = buf.getvalue().encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"CSVLogger: a short write to {self.path}")
        finally:
            os.close(fd)
