"""pyneuro — a small neural-network library with its own compiled numeric core.

    import pyneuro as pn
    model = pn.Sequential([pn.Dense(64, 128, activation="relu"), pn.Dense(128, 10)], seed=0)
    trainer = pn.Trainer(model, loss="cross_entropy", optimizer=pn.Adam(lr=1e-3), epochs=30, seed=0)
"""
from . import datasets, metrics
from ._version import __version__
from ._core import get_num_threads, openmp_enabled, set_num_threads
from .callbacks import (Callback, CSVLogger, EarlyStopping, LambdaCallback, ModelCheckpoint,
                        ReduceLROnPlateau)
from .conv import Conv2D
from .layers import (ELU, GELU, Activation, Dense, Dropout, Identity, Layer, LeakyReLU, ReLU,
                     Scale, Sigmoid, Softmax, Standardize, Tanh, register_layer)
from .losses import MAE, MSE, BinaryCrossEntropy, CrossEntropy, Huber, Loss, register_loss
from .metrics import register_metric
from .model import Sequential, load_model
from .normalization import BatchNorm, LayerNorm
from .optimizers import (SGD, Adam, AdamW, CosineDecay, CosineRestarts, ExponentialDecay, LinearWarmup,
                         OneCycle, Optimizer, RMSprop, Schedule, StepDecay)
from .pooling import AvgPool2D, Flatten, GlobalAvgPool2D, MaxPool2D
from .trainer import DivergenceError, History, Trainer


def load(path) -> Sequential:
    """Load a model saved by Sequential.save (or a Trainer checkpoint), parameters and
    info restored: its predictions equal the saved model's bitwise.

    Parameters
    ----------
    path : str or os.PathLike

    Raises
    ------
    ValueError
        For a damaged, edited or foreign file.
    """
    return load_model(path)


__all__ = [
    "Activation", "Adam", "AvgPool2D", "BatchNorm", "Conv2D", "Flatten", "GlobalAvgPool2D", "LayerNorm",
    "MaxPool2D", "AdamW", "BinaryCrossEntropy", "Callback", "CosineDecay", "CosineRestarts",
    "CrossEntropy", "CSVLogger", "LinearWarmup", "OneCycle", "ReduceLROnPlateau", "Schedule",
    "Dense", "DivergenceError", "Dropout", "EarlyStopping", "ELU", "ExponentialDecay", "GELU",
    "History", "Huber", "Identity", "LambdaCallback", "Layer", "LeakyReLU", "Loss", "MAE", "MSE",
    "Optimizer", "ReLU", "RMSprop", "SGD", "Sequential", "Sigmoid", "Softmax", "StepDecay", "Tanh",
    "Scale", "Standardize", "Trainer", "datasets", "metrics", "get_num_threads", "load", "ModelCheckpoint",
    "openmp_enabled", "set_num_threads", "register_layer", "register_loss", "register_metric",
]
