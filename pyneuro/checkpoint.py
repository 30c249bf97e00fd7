"""Checkpoints: a model file that also holds the training state, to resume exactly.

A checkpoint is a pyneuro model file (pyneuro.load reads its model) with
    tensors    "optimizer.<name>"   the optimizer's state vectors (velocity, moments …)
    document   "checkpoint"         epoch, the end epoch of the fit that was running, the
                                    Trainer's settings (metrics by name), loss and optimizer
                                    descriptions,
                                    optimizer step t, the random streams (shuffling, split,
                                    dropout) and the history
Resuming restores every one of them, so the rest of the fit ends with bitwise the
weights uninterrupted training would have. Loading checks every field's type and
range, so a damaged or hostile checkpoint is a ValueError naming the file and the
field, never a failure later in fit.
"""
from __future__ import annotations

import numbers

from . import _core
from .callbacks import History
from ._registry import load_hint
from .io import read_file, write_file
from .losses import LOSSES
from .metrics import metric_names_for_file
from .model import checked_for_saving, loss_document, model_document, model_from_file
from .optimizers import Adam, RMSprop, optimizer_from_description

_MAX_COUNT = 2**62   # epochs, steps: far beyond any fit, and within the kernels' C long


def save_checkpoint(trainer, path) -> None:
    """Write `trainer`'s model and training state to `path` (atomically)."""
    opt = trainer.optimizer
    tensors = {"params": trainer.model.params}
    tensors.update({f"optimizer.{k}": v for k, v in opt.state_arrays().items()})
    doc = {"epoch": trainer.epoch, "end_epoch": trainer._end_epoch, "epochs": trainer.epochs,
           "batch_size": trainer.batch_size, "loss": loss_document(trainer.loss, str(path)),
           "optimizer": opt.describe(), "step": opt.t,
           "rng": trainer.rng.bit_generator.state, "split_seed": trainer._split_seed,
           "allow_nonfinite": trainer.allow_nonfinite, "history": dict(trainer.history),
           "metrics": metric_names_for_file(trainer._metric_specs, str(path)),
           "layer_rngs": [rng.bit_generator.state if (rng := getattr(layer, "rng", None)) is not None
                          else None for layer in trainer.model.layers]}
    write_file(path, tensors, {"model": model_document(trainer.model, str(path)),
                               "info": checked_for_saving(trainer.model, None, path), "checkpoint": doc})


def _count(ck: dict, key: str, low: int = 0, high: int = _MAX_COUNT) -> int:
    """ck[key], an int in [low, high]."""
    value = ck[key]
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{key} should be an integer in [{low}, {high}], got {value!r:.60}")
    return value


def _set_rng_state(bit_generator, state, what: str) -> None:
    """Restore a bit generator's state from its JSON form, refusing any the generator would
    not give back as it was (a wrong type, a number out of range, a foreign generator)."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} should be a random generator's state (a dict), got {state!r:.60}")
    try:
        bit_generator.state = state
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{what} is not a state of {type(bit_generator).__name__} ({type(e).__name__}: {e})") \
            from None
    if bit_generator.state != state:
        raise ValueError(f"{what} is not a state of {type(bit_generator).__name__} (it does not read back "
                         f"as written: {state!r:.120})")


def _history(value) -> History:
    """The history document: a dict of lists of numbers."""
    if not isinstance(value, dict):
        raise ValueError(f"history should be a dict of lists of numbers, got {type(value).__name__}")
    for key, values in value.items():
        if not isinstance(values, list) or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                   for v in values):
            raise ValueError(f"history[{key!r:.40}] should be a list of numbers, got {values!r:.60}")
    return History({k: list(v) for k, v in value.items()})


def load_checkpoint(trainer_class, path, schedule=None, verbose: int = 1):
    """A `trainer_class` (Trainer) in the state save_checkpoint recorded in `path`."""
    tensors, docs = read_file(path)
    ck = docs.get("checkpoint")
    if ck is None:
        raise ValueError(f"{path}: a model file, not a checkpoint (pyneuro.load reads it)")
    model = model_from_file(tensors, docs, path)
    try:
        if not isinstance(ck, dict):
            raise ValueError(f"expected a JSON object, got {type(ck).__name__}")
        loss_doc = ck["loss"]
        if not (isinstance(loss_doc, dict) and loss_doc.get("name") in LOSSES
                and isinstance(loss_doc.get("config"), dict)):
            raise ValueError(f"loss should be {{'name': one of {sorted(LOSSES)}, 'config': {{...}}}}, "
                             f"got {loss_doc!r:.80} " + load_hint("loss"))
        if not isinstance(ck["allow_nonfinite"], bool):
            raise ValueError(f"allow_nonfinite should be true or false, got {ck['allow_nonfinite']!r:.40}")
        if not isinstance(ck["optimizer"], dict):
            raise ValueError(f"optimizer should be a description (a dict), got {ck['optimizer']!r:.60}")
        metrics = ck.get("metrics")    # absent in checkpoints older than it: the default
        if metrics is not None and not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
            raise ValueError(f"metrics should be null or a list of names, got {metrics!r:.80}")
        epoch = _count(ck, "epoch")
        end_epoch = _count(ck, "end_epoch", epoch)
        loss = LOSSES[loss_doc["name"]](**loss_doc["config"])
        trainer = trainer_class(model, loss, optimizer_from_description(ck["optimizer"], schedule),
                                batch_size=_count(ck, "batch_size", 1), epochs=_count(ck, "epochs"), seed=0,
                                verbose=verbose, allow_nonfinite=ck["allow_nonfinite"], metrics=metrics)
        opt = trainer.optimizer
        opt.t = _count(ck, "step")
        states = opt.state_arrays()
        extra = {n for n in tensors if n.startswith("optimizer.")} - {f"optimizer.{k}" for k in states}
        if extra:
            raise ValueError(f"tensors {sorted(extra)} belong to no state of {type(opt).__name__}")
        for name, arr in states.items():
            saved = tensors.get(f"optimizer.{name}")
            if saved is None:
                raise ValueError(f"optimizer.{name} is missing ({type(opt).__name__} keeps it)")
            if saved.shape != arr.shape or saved.dtype != arr.dtype:
                raise ValueError(f"optimizer.{name} should be {arr.dtype} {arr.shape}, "
                                 f"the file holds {saved.dtype} {saved.shape}")
            if not _core.all_finite(saved) or (name == "v" and isinstance(opt, (Adam, RMSprop))
                                               and (saved < 0).any()):
                raise ValueError(f"optimizer.{name} holds NaN, infinity or (a second moment) negative numbers")
            arr[...] = saved
        _set_rng_state(trainer.rng.bit_generator, ck["rng"], "rng")
        trainer._split_seed = _count(ck, "split_seed", 0, 2**63 - 1)
        layer_rngs = ck["layer_rngs"]
        if not isinstance(layer_rngs, list) or len(layer_rngs) != len(model.layers):
            raise ValueError(f"layer_rngs should list one entry per layer ({len(model.layers)}), got "
                             f"{layer_rngs!r:.60}")
        for i, (layer, state) in enumerate(zip(model.layers, layer_rngs)):
            rng = getattr(layer, "rng", None)
            if rng is None and state is not None:
                raise ValueError(f"layer_rngs[{i}]: layer {i} ({type(layer).__name__}) has no random stream")
            if rng is not None:
                _set_rng_state(rng.bit_generator, state, f"layer_rngs[{i}]")   # a Dropout's mask stream
        trainer.epoch = epoch
        trainer.history = _history(ck["history"])
        trainer._end_epoch = end_epoch       # the interrupted fit's last epoch
        trainer._pending_epochs = end_epoch - epoch
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from None
    return trainer
