"""Checkpoints: a model file that also holds the training state, to resume exactly.

A checkpoint is a pyneuro model file (pyneuro.load reads its model) with
    tensors    "optimizer.<name>"   the optimizer's state vectors (velocity, moments …)
    document   "checkpoint"         epoch, the end epoch of the fit that was running, the
                                    Trainer's settings, loss and optimizer descriptions,
                                    optimizer step t, the random streams (shuffling, split,
                                    dropout) and the history
Resuming restores every one of them, so the rest of the fit ends with bitwise the
weights uninterrupted training would have.
"""
from __future__ import annotations

from .callbacks import History
from .io import read_file, write_file
from .losses import LOSSES
from .model import model_document, model_from
from .optimizers import optimizer_from_description


def save_checkpoint(trainer, path) -> None:
    """Write `trainer`'s model and training state to `path` (atomically)."""
    opt = trainer.optimizer
    tensors = {"params": trainer.model.params}
    tensors.update({f"optimizer.{k}": v for k, v in opt.state_arrays().items()})
    doc = {"epoch": trainer.epoch, "end_epoch": trainer._end_epoch, "epochs": trainer.epochs,
           "batch_size": trainer.batch_size, "loss": {"name": trainer.loss.name, "config": trainer.loss.config()},
           "optimizer": opt.describe(), "step": opt.t,
           "rng": trainer.rng.bit_generator.state, "split_seed": trainer._split_seed,
           "allow_nonfinite": trainer.allow_nonfinite, "history": dict(trainer.history),
           "layer_rngs": [rng.bit_generator.state if (rng := getattr(layer, "rng", None)) is not None
                          else None for layer in trainer.model.layers]}
    write_file(path, tensors, {"model": model_document(trainer.model), "info": trainer.model.info,
                               "checkpoint": doc})


def load_checkpoint(trainer_class, path, schedule=None, verbose: int = 1):
    """A `trainer_class` (Trainer) in the state save_checkpoint recorded in `path`."""
    tensors, docs = read_file(path)
    ck = docs.get("checkpoint")
    if not isinstance(ck, dict):
        raise ValueError(f"{path}: a model file, not a checkpoint (pyneuro.load reads it)")
    model = model_from(docs.get("model", {}), tensors.get("params"), docs.get("info"), path)
    try:
        loss = LOSSES[ck["loss"]["name"]](**ck["loss"]["config"])
        trainer = trainer_class(model, loss, optimizer_from_description(ck["optimizer"], schedule),
                                batch_size=ck["batch_size"], epochs=ck["epochs"], seed=0, verbose=verbose,
                                allow_nonfinite=ck["allow_nonfinite"])
        opt = trainer.optimizer
        opt.t = int(ck["step"])
        for name, arr in opt.state_arrays().items():
            saved = tensors[f"optimizer.{name}"]
            if saved.shape != arr.shape or saved.dtype != arr.dtype:
                raise ValueError(f"optimizer.{name} should be {arr.dtype} {arr.shape}, "
                                 f"the file holds {saved.dtype} {saved.shape}")
            arr[...] = saved
        trainer.rng.bit_generator.state = ck["rng"]
        trainer._split_seed = int(ck["split_seed"])
        for layer, state in zip(model.layers, ck["layer_rngs"]):
            if state is not None:
                getattr(layer, "rng").bit_generator.state = state   # a Dropout's mask stream
        trainer.epoch = int(ck["epoch"])
        trainer.history = History({k: list(v) for k, v in ck["history"].items()})
        trainer._end_epoch = int(ck["end_epoch"])       # the interrupted fit's last epoch
        trainer._pending_epochs = max(0, trainer._end_epoch - trainer.epoch)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from None
    return trainer
