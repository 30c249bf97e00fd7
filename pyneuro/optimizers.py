"""Optimizers and learning-rate schedules.

An optimizer updates the model's flat parameter vector w in place from the flat
gradient g, in one compiled call per step and trainable run (formulas in csrc/optim.pxi):
    SGD (momentum μ, Nesterov, weight decay λ), Adam, AdamW (decoupled λ), RMSprop.
Optional clipping by global norm: g ← g · min(1, c / ‖g‖₂), folded into the step (the norm
of the trainable parameters' gradient only).
The learning rate of every step is read afresh: η_step = lr · factor(e) for a schedule per
epoch e, lr · factor(s) for one per step s (s = optimizer.t, the steps taken before this
one). `lr` is the base: writing it (a callback, ReduceLROnPlateau) acts at the next step.
"""
from __future__ import annotations

import math

import numpy as np

from . import _core
from ._buffers import zeros_aligned
from ._validation import check_float, check_int

PER = ("epoch", "step")


# ---- schedules: epoch or step -> factor of the base learning rate ---------------------
def _per(per) -> str:
    if per not in PER:
        raise ValueError(f"per: expected 'epoch' or 'step', got {per!r}")
    return per


def _cosine(start: float, end: float, x: float) -> float:
    """From `start` at x = 0 to `end` at x = 1 along half a cosine: end + (start − end)·(1 + cos πx)/2."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * x))


class Schedule:
    """Base class of the learning-rate schedules: factor(n) ≥ 0 of the base learning rate, n
    the epoch (per='epoch') or the optimizer's step count (per='step', counted from 0).
    Every schedule settles at a finite floor past its horizon; none overflows.

    Parameters
    ----------
    per : {'epoch', 'step'}
        What n counts.
    """

    per = "epoch"

    def __call__(self, n: int) -> float:
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments (vars), for saving in checkpoints."""
        return dict(vars(self))


class StepDecay(Schedule):
    """Step decay: factor(n) = γ^⌊n / step_size⌋ (decays towards 0; γ ≤ 1, so it never overflows).

    Parameters
    ----------
    step_size : int
        Epochs (or steps) between decays (≥ 1).
    gamma : float
        γ in (0, 1].
    per : {'epoch', 'step'}
    """

    def __init__(self, step_size: int, gamma: float = 0.1, per: str = "epoch"):
        self.step_size = check_int(step_size, "step_size", 1)
        self.gamma = check_float(gamma, "gamma", 0.0, 1.0, low_open=True)
        self.per = _per(per)

    def __call__(self, n):
        return self.gamma ** (n // self.step_size)


class ExponentialDecay(Schedule):
    """Exponential decay: factor(n) = γ^n (decays towards 0; γ > 1 would overflow and is refused).

    Parameters
    ----------
    gamma : float
        γ in (0, 1].
    per : {'epoch', 'step'}
    """

    def __init__(self, gamma: float, per: str = "epoch"):
        self.gamma = check_float(gamma, "gamma", 0.0, 1.0, low_open=True)
        self.per = _per(per)

    def __call__(self, n):
        return self.gamma ** n


class CosineDecay(Schedule):
    """Cosine decay: factor(n) = m + (1 − m)·(1 + cos(π·min(n, T)/T))/2, from 1 down to m at
    n = T, and m after it. A factor 0 (the default floor) is a valid step that changes nothing.

    Parameters
    ----------
    total_epochs : int
        T (≥ 1), in epochs (or steps with per='step').
    min_factor : float
        m in [0, 1].
    per : {'epoch', 'step'}
    """

    def __init__(self, total_epochs: int, min_factor: float = 0.0, per: str = "epoch"):
        self.total_epochs = check_int(total_epochs, "total_epochs", 1)
        self.min_factor = check_float(min_factor, "min_factor", 0.0, 1.0)
        self.per = _per(per)

    def __call__(self, n):
        return _cosine(1.0, self.min_factor, min(n, self.total_epochs) / self.total_epochs)


class LinearWarmup(Schedule):
    """Linear warm-up: factor(s) = min(1, (s + 1)/W): η/W at the first step, η from step W − 1 on.

    Parameters
    ----------
    warmup_steps : int
        W (≥ 1).
    per : {'step', 'epoch'}
        Default 'step'.
    """

    def __init__(self, warmup_steps: int, per: str = "step"):
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", 1)
        self.per = _per(per)

    def __call__(self, n):
        return min(1.0, (n + 1) / self.warmup_steps)


class CosineRestarts(Schedule):
    """Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017): cycle i lasts
    T_i = T₀·k^i steps; at position t of its cycle factor = m + (1 − m)·(1 + cos(π·t/T_i))/2,
    back to 1 at each restart.

    Parameters
    ----------
    period : int
        T₀, the first cycle's length (≥ 1).
    t_mult : int
        k ≥ 1, the growth of the cycles.
    min_factor : float
        m in [0, 1].
    per : {'step', 'epoch'}
        Default 'step'.
    """

    def __init__(self, period: int, t_mult: int = 1, min_factor: float = 0.0, per: str = "step"):
        self.period = check_int(period, "period", 1)
        self.t_mult = check_int(t_mult, "t_mult", 1)
        self.min_factor = check_float(min_factor, "min_factor", 0.0, 1.0)
        self.per = _per(per)

    def __call__(self, n):
        length, t = self.period, n
        if self.t_mult == 1:
            t = n % length
        else:                       # exact integers; a cycle count logarithmic in n
            while t >= length:
                t, length = t - length, length * self.t_mult
        return _cosine(1.0, self.min_factor, t / length)


class OneCycle(Schedule):
    """One-cycle policy (Smith 2018, PyTorch's OneCycleLR with cosine phases): from 1/d up to
    1 at the peak step u = p·(T − 1), then down to 1/(d·f) at step T − 1, and there after:
        s ≤ u:  factor = 1 + (1/d − 1)·(1 + cos(π·s/u))/2
        s > u:  factor = 1/(d·f) + (1 − 1/(d·f))·(1 + cos(π·(min(s, T−1) − u)/(T − 1 − u)))/2
    The base learning rate is the peak.

    Parameters
    ----------
    total_steps : int
        T (≥ 2).
    pct_start : float
        p in (0, 1): the rising part.
    div_factor : float
        d ≥ 1: the start is η/d.
    final_div_factor : float
        f ≥ 1: the end is η/(d·f).
    per : {'step', 'epoch'}
        Default 'step'.
    """

    def __init__(self, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, per: str = "step"):
        self.total_steps = check_int(total_steps, "total_steps", 2)
        self.pct_start = check_float(pct_start, "pct_start", 0.0, 1.0, low_open=True, high_open=True)
        self.div_factor = check_float(div_factor, "div_factor", 1.0)
        self.final_div_factor = check_float(final_div_factor, "final_div_factor", 1.0)
        self.per = _per(per)

    def __call__(self, n):
        last = self.total_steps - 1
        peak = self.pct_start * last
        if n <= peak:
            return _cosine(1.0 / self.div_factor, 1.0, n / peak)
        end = 1.0 / (self.div_factor * self.final_div_factor)
        return _cosine(1.0, end, (min(n, last) - peak) / (last - peak))


SCHEDULES = {cls.__name__: cls for cls in (StepDecay, ExponentialDecay, CosineDecay, LinearWarmup,
                                           CosineRestarts, OneCycle)}


def _schedule(schedule):
    if schedule is None:
        return schedule
    if not callable(schedule):
        raise TypeError(f"schedule: expected a Schedule or a callable epoch -> factor, got {type(schedule).__name__}")
    _per(getattr(schedule, "per", "epoch"))
    return schedule


# ---- optimizers ------------------------------------------------------------------
class Optimizer:
    """Base class of the optimizers: learning rate, schedule, optional clipping; bind() attaches
    it to a model's flat parameter and gradient vectors and step() updates them, one compiled
    call per run of trainable parameters.

    Every step uses η = lr·factor, the schedule's factor of the epoch (set_epoch) or of the
    step count t, read at that step: setting `lr` (e.g. in a callback) acts at the next step.
    `current_lr` is that η (read-only). Parameters outside the trainable runs (frozen layers)
    and their state (momentum, moments) are never touched, and clip_norm's ‖g‖₂ counts only
    the trainable parameters.

    Parameters
    ----------
    {common}
    """

    def __init__(self, lr: float, weight_decay: float = 0.0, clip_norm: float | None = None,
                 schedule=None):
        self.lr = lr
        self.weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        self.clip_norm = None if clip_norm is None else check_float(clip_norm, "clip_norm", 0.0, low_open=True)
        self.schedule = _schedule(schedule)
        self._current_lr = self._lr
        self.epoch = 0
        self.t = 0
        self.w: np.ndarray | None = None
        self.g: np.ndarray | None = None
        self._trainable = None

    @property
    def lr(self) -> float:
        """The base learning rate η (> 0) that the schedule multiplies; read at every step."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_float(value, "lr", 0.0, low_open=True)

    @property
    def current_lr(self) -> float:
        """The learning rate of the latest step (or of the next, after set_epoch): lr·factor."""
        return self._current_lr

    @current_lr.setter
    def current_lr(self, value) -> None:
        raise AttributeError("current_lr is lr x the schedule's factor, recomputed at every step; "
                             "set optimizer.lr (the base) instead")

    def bind(self, params: np.ndarray, grads: np.ndarray, trainable=None) -> None:
        """Attach to flat parameter/gradient vectors; state buffers are made here, once.

        Parameters
        ----------
        params, grads : ndarray
            The model's flat vectors.
        trainable : callable, optional
            Returns the (start, stop) runs of params to update, asked at every step
            (Sequential.trainable_ranges); default: all of them.
        """
        self.w, self.g = params, grads
        self.t = 0
        self._trainable = trainable
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
        """The epoch that per-epoch schedules read from now on (the Trainer calls it as each
        epoch begins); current_lr becomes the next step's learning rate."""
        self.epoch = epoch
        self._current_lr = self._scheduled_lr()

    def _scheduled_lr(self) -> float:
        """lr·factor(epoch) or lr·factor(t), checked: a finite factor ≥ 0."""
        s = self.schedule
        if s is None:
            return self._lr
        per = getattr(s, "per", "epoch")
        n = self.epoch if per == "epoch" else self.t
        try:
            factor = float(s(n))
        except OverflowError:    # a callable's γ^n beyond float range
            factor = math.inf
        if not (np.isfinite(factor) and factor >= 0):
            raise ValueError(f"schedule: {per} {n} gave learning-rate factor {factor}; expected a finite number >= 0")
        return self._lr * factor

    def _runs(self) -> list[slice]:
        """The runs of trainable parameters, as slices of the flat vectors."""
        assert self.w is not None
        if self._trainable is None:
            return [slice(0, self.w.shape[0])]
        return [slice(a, b) for a, b in self._trainable()]

    def grad_scale(self, runs: list[slice] | None = None) -> float:
        """min(1, c/‖g‖₂) when clipping by global norm c (g: the trainable runs), else 1."""
        if self.clip_norm is None:
            return 1.0
        assert self.g is not None, "bound by the Trainer"
        runs = self._runs() if runs is None else runs
        if len(runs) == 1:
            norm = _core.global_norm(self.g[runs[0]])
        else:
            norm = math.sqrt(sum(_core.global_norm(self.g[r]) ** 2 for r in runs))
        return min(1.0, self.clip_norm / (norm + 1e-12))

    def step(self) -> None:
        """One update of the trainable parameters with η = lr·factor of this epoch or step."""
        if self.w is None:
            raise RuntimeError(f"{type(self).__name__}.step: not bound to a model (Trainer binds it)")
        self._current_lr = self._scheduled_lr()
        self.t += 1
        runs = self._runs()
        scale = self.grad_scale(runs)
        for run in runs:
            self._step(run, scale)

    def _step(self, run: slice, scale: float) -> None:
        """The compiled update of w[run] from g[run] (and the state's [run])."""
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
        self.v = zeros_aligned(self.w.size, self.w.dtype) if self.momentum else None

    def _step(self, run, scale):
        assert self.w is not None and self.g is not None
        _core.sgd_step(self.w[run], self.g[run], None if self.v is None else self.v[run], self._current_lr,
                       self.momentum, self.nesterov, self.weight_decay, scale)

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
        self.m = zeros_aligned(self.w.size, self.w.dtype)
        self.v = zeros_aligned(self.w.size, self.w.dtype)

    def _step(self, run, scale):
        assert self.w is not None and self.g is not None and self.m is not None and self.v is not None
        _core.adam_step(self.w[run], self.g[run], self.m[run], self.v[run], self.t, self._current_lr,
                        self.beta1, self.beta2, self.eps, self.weight_decay, self.decoupled, scale)

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
        self.v = zeros_aligned(self.w.size, self.w.dtype)

    def _step(self, run, scale):
        assert self.w is not None and self.g is not None and self.v is not None
        _core.rmsprop_step(self.w[run], self.g[run], self.v[run], self._current_lr, self.rho, self.eps,
                           self.weight_decay, scale)

    def config(self):
        return {**super().config(), "rho": self.rho, "eps": self.eps}


# the parameters every optimizer shares, written once into each docstring's {common}
_COMMON_PARAMETERS = """lr : float
        Base learning rate η (> 0), read at every step: setting it acts at the next step.
    weight_decay : float
        λ ≥ 0.
    clip_norm : float, optional
        Clip the gradient by its global norm: g ← g·min(1, c/‖g‖₂), ‖g‖₂ over the
        trainable parameters.
    schedule : Schedule or callable, optional
        η = lr·factor(n): n the epoch, or the step count t when the schedule's `per` is
        'step' (a callable: epoch -> factor, unless it has an attribute per='step')."""
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
