"""Optimizers and learning-rate schedules.

An optimizer updates the model's flat parameter vector w in place from the flat
gradient g, in one compiled call per step (formulas in csrc/optim.pxi):
    SGD (momentum μ, Nesterov, weight decay λ), Adam, AdamW (decoupled λ), RMSprop.
Optional clipping by global norm: g ← g · min(1, c / ‖g‖₂), folded into the step.
A schedule sets the learning rate of each epoch: η_e = η · factor(e).
"""
from __future__ import annotations

import math

import numpy as np

from . import _core
from ._validation import check_float, check_int


# ---- schedules: epoch -> factor of the base learning rate -------------------------
class Schedule:
    def __call__(self, epoch: int) -> float:
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments (vars), for saving in checkpoints."""
        return dict(vars(self))


class StepDecay(Schedule):
    """Step decay: factor(e) = γ^⌊e / step_size⌋.

    Parameters
    ----------
    step_size : int
        Epochs between decays (≥ 1).
    gamma : float
        γ > 0.
    """

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = check_int(step_size, "step_size", 1)
        self.gamma = check_float(gamma, "gamma", 0.0, low_open=True)

    def __call__(self, epoch):
        return self.gamma ** (epoch // self.step_size)


class ExponentialDecay(Schedule):
    """Exponential decay: factor(e) = γ^e.

    Parameters
    ----------
    gamma : float
        γ > 0.
    """

    def __init__(self, gamma: float):
        self.gamma = check_float(gamma, "gamma", 0.0, low_open=True)

    def __call__(self, epoch):
        return self.gamma ** epoch


class CosineDecay(Schedule):
    """Cosine decay: factor(e) = m + (1 − m)·(1 + cos(π·min(e, T)/T))/2, from 1 down to m at epoch T.

    Parameters
    ----------
    total_epochs : int
        T (≥ 1).
    min_factor : float
        m in [0, 1].
    """

    def __init__(self, total_epochs: int, min_factor: float = 0.0):
        self.total_epochs = check_int(total_epochs, "total_epochs", 1)
        self.min_factor = check_float(min_factor, "min_factor", 0.0, 1.0)

    def __call__(self, epoch):
        t = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))


SCHEDULES = {cls.__name__: cls for cls in (StepDecay, ExponentialDecay, CosineDecay)}


def _schedule(schedule):
    if schedule is None or callable(schedule):
        return schedule
    raise TypeError(f"schedule: expected a Schedule or a callable epoch -> factor, got {type(schedule).__name__}")


# ---- optimizers ------------------------------------------------------------------
class Optimizer:
    """Base class of the optimizers: learning rate, schedule, optional clipping; bind() attaches
    it to a model's flat parameter and gradient vectors and step() updates them in one call.

    Parameters
    ----------
    {common}
    """

    def __init__(self, lr: float, weight_decay: float = 0.0, clip_norm: float | None = None,
                 schedule=None):
        self.lr = check_float(lr, "lr", 0.0, low_open=True)
        self.weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        self.clip_norm = None if clip_norm is None else check_float(clip_norm, "clip_norm", 0.0, low_open=True)
        self.schedule = _schedule(schedule)
        self.current_lr = self.lr
        self.t = 0
        self.w: np.ndarray | None = None
        self.g: np.ndarray | None = None

    def bind(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Attach to flat parameter/gradient vectors; state buffers are made here, once."""
        self.w, self.g = params, grads
        self.t = 0
        self._init_state()

    def _init_state(self):
        pass

    _state: tuple[str, ...] = ()   # attributes holding per-parameter state vectors

    def state_arrays(self) -> dict:
        """The per-parameter state vectors (momentum, moments), by name."""
        return {name: getattr(self, name) for name in self._state if getattr(self, name) is not None}

    def describe(self) -> dict:
        """JSON-able: the class, its arguments and its schedule ('callable' for a function)."""
        s = self.schedule
        sched = None if s is None else ({"type": type(s).__name__, "config": s.config()}
                                        if type(s).__name__ in SCHEDULES else "callable")
        return {"type": type(self).__name__, "config": self.config(), "schedule": sched}

    def set_epoch(self, epoch: int) -> None:
        try:
            factor = 1.0 if self.schedule is None else float(self.schedule(epoch))
        except OverflowError:    # γ^e beyond float range (e.g. ExponentialDecay(1e300))
            factor = math.inf
        if not (np.isfinite(factor) and factor > 0):
            raise ValueError(f"schedule: epoch {epoch} gave learning-rate factor {factor}; expected a finite number > 0")
        self.current_lr = self.lr * factor

    def grad_scale(self) -> float:
        """min(1, c/‖g‖₂) when clipping by global norm c, else 1."""
        if self.clip_norm is None:
            return 1.0
        assert self.g is not None, "bound by the Trainer"
        norm = _core.global_norm(self.g)
        return min(1.0, self.clip_norm / (norm + 1e-12))

    def step(self) -> None:
        if self.w is None:
            raise RuntimeError(f"{type(self).__name__}.step: not bound to a model (Trainer binds it)")
        self.t += 1
        self._step(self.grad_scale())

    def _step(self, scale: float) -> None:
        raise NotImplementedError

    def config(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay, "clip_norm": self.clip_norm}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (formulas in csrc/optim.pxi):
    g ← g + λ·w;  v ← μ·v + g;  w ← w − η·v, or w − η·(g + μ·v) with Nesterov (μ = 0: w − η·g).

    Parameters
    ----------
    {common}
    momentum : float
        μ in [0, 1).
    nesterov : bool
        Nesterov momentum (needs μ > 0).
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, clip_norm: float | None = None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.momentum = check_float(momentum, "momentum", 0.0, 1.0, high_open=True)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)
        self.v = None

    _state = ("v",)   # None without momentum

    def _init_state(self):
        self.v = np.zeros_like(self.w) if self.momentum else None

    def _step(self, scale):
        _core.sgd_step(self.w, self.g, self.v, self.current_lr, self.momentum, self.nesterov,
                       self.weight_decay, scale)

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam: g ← g + λ·w (L2);  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
    w ← w − η·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε). For decoupled weight decay use AdamW.

    Parameters
    ----------
    {common}
    beta1, beta2 : float
        β₁, β₂ in [0, 1).
    eps : float
        ε > 0.
    """

    decoupled = False

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_norm: float | None = None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.beta1 = check_float(beta1, "beta1", 0.0, 1.0, high_open=True)
        self.beta2 = check_float(beta2, "beta2", 0.0, 1.0, high_open=True)
        self.eps = check_float(eps, "eps", 0.0, low_open=True)
        self.m = self.v = None

    _state = ("m", "v")

    def _init_state(self):
        self.m = np.zeros_like(self.w)
        self.v = np.zeros_like(self.w)

    def _step(self, scale):
        _core.adam_step(self.w, self.g, self.m, self.v, self.t, self.current_lr, self.beta1,
                        self.beta2, self.eps, self.weight_decay, self.decoupled, scale)

    def config(self):
        return {**super().config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, w ← w − η·λ·w each step (default λ = 0.01).

    Parameters
    ----------
    {common}
    beta1, beta2 : float
    eps : float
    """

    decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01, clip_norm: float | None = None, schedule=None):
        super().__init__(lr, beta1, beta2, eps, weight_decay, clip_norm, schedule)


class RMSprop(Optimizer):
    """RMSprop: g ← g + λ·w;  v ← ρ·v + (1−ρ)·g²;  w ← w − η·g / (√v + ε).

    Parameters
    ----------
    {common}
    rho : float
        ρ in [0, 1).
    eps : float
        ε > 0.
    """

    def __init__(self, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0,
                 clip_norm: float | None = None, schedule=None):
        super().__init__(lr, weight_decay, clip_norm, schedule)
        self.rho = check_float(rho, "rho", 0.0, 1.0, high_open=True)
        self.eps = check_float(eps, "eps", 0.0, low_open=True)
        self.v = None

    _state = ("v",)

    def _init_state(self):
        self.v = np.zeros_like(self.w)

    def _step(self, scale):
        _core.rmsprop_step(self.w, self.g, self.v, self.current_lr, self.rho, self.eps,
                           self.weight_decay, scale)

    def config(self):
        return {**super().config(), "rho": self.rho, "eps": self.eps}


# the parameters every optimizer shares, written once into each docstring's {common}
_COMMON_PARAMETERS = """lr : float
        Base learning rate η (> 0).
    weight_decay : float
        λ ≥ 0.
    clip_norm : float, optional
        Clip the gradient by its global norm: g ← g·min(1, c/‖g‖₂).
    schedule : Schedule or callable, optional
        η_e = η·factor(e) for epoch e."""
for _cls in (Optimizer, SGD, Adam, AdamW, RMSprop):
    _cls.__doc__ = (_cls.__doc__ or "").replace("{common}", _COMMON_PARAMETERS)

OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def optimizer_from_description(desc: dict, schedule=None) -> Optimizer:
    """Rebuild an Optimizer from describe(); a 'callable' schedule must be passed again."""
    classes = {cls.__name__: cls for cls in OPTIMIZERS.values()}
    try:
        cls = classes[desc["type"]]
        sched = desc["schedule"]
        if sched == "callable":
            if schedule is None:
                raise ValueError("the optimizer had a schedule given as a function, which a file cannot "
                                 "hold; pass it again with schedule=")
        elif sched is not None:
            schedule = SCHEDULES[sched["type"]](**sched["config"])
        return cls(**desc["config"], schedule=schedule)
    except (KeyError, TypeError) as e:
        raise ValueError(f"damaged optimizer description ({type(e).__name__}: {e})") from None


def get_optimizer(opt, **kwargs) -> Optimizer:
    if isinstance(opt, Optimizer):
        return opt
    if isinstance(opt, str) and opt.lower() in OPTIMIZERS:
        return OPTIMIZERS[opt.lower()](**kwargs)
    raise ValueError(f"optimizer: expected an Optimizer or one of {sorted(OPTIMIZERS)}, got {opt!r}")
