"""BatchNorm and LayerNorm: normalise, then scale and shift (csrc/norm.pxi).

BatchNorm, per channel c over the N = B·P values of a batch (P = H·W for images, 1 for
features), as PyTorch's BatchNorm1d/2d:

    training    μ_c = (1/N) Σ x,  σ²_c = (1/N) Σ (x − μ_c)²,  x̂ = (x − μ_c)/√(σ²_c + ε)
                y = γ_c·x̂ + β_c
                running μ ← (1 − m)·running μ + m·μ_c,  running σ² ← (1 − m)·running σ² + m·σ²_c·N/(N − 1)
    evaluation  x̂ = (x − running μ_c)/√(running σ²_c + ε),  y = γ_c·x̂ + β_c
    backward    ∂L/∂β_c = Σ dY,  ∂L/∂γ_c = Σ dY·x̂
                dX = (γ_c/√(σ²_c + ε))·(dY − (1/N)·Σ dY − x̂·(1/N)·Σ dY·x̂)      (training)

LayerNorm, per sample over its F values (all of C·H·W for an image):

    μ = (1/F) Σ_j x_j,  σ² = (1/F) Σ_j (x_j − μ)²,  x̂ = (x − μ)/√(σ² + ε),  y = γ ⊙ x̂ + β
    backward  g = dY ⊙ γ,  dX = (g − mean(g) − x̂·mean(g ⊙ x̂))/√(σ² + ε)
              ∂L/∂γ = Σ_samples dY ⊙ x̂,  ∂L/∂β = Σ_samples dY
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._validation import check_float
from .layers import Layer, builtin_layer


@builtin_layer
class BatchNorm(Layer):
    """Batch normalisation over features (input (F,)) or over channels (input (C, H, W)):
    y = γ·(x − μ)/√(σ² + ε) + β with the batch's μ, σ² while training and the running
    ones at evaluation (formulas in pyneuro.normalization). The running statistics are
    part of the model's parameter vector as non-trainable values: saved, loaded and
    checkpointed with it, never changed by the optimizer.

    Parameters
    ----------
    momentum : float
        m in running ← (1 − m)·running + m·batch statistic, in [0, 1] (PyTorch's default 0.1).
    eps : float
        ε > 0 (default 1e-5, as PyTorch).

    In data-parallel training over MPI the statistics are those of the whole batch, all
    ranks' rows together (synchronised batch norm), so 2 ranks train as one process does.
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum = check_float(momentum, "BatchNorm momentum", 0.0, 1.0)
        self.eps = check_float(eps, "BatchNorm eps", 0.0, low_open=True)
        self._training = False
        self.ranks: Any = None     # distributed training: what sums over the ranks (Trainer sets it)
        self._N = 0           # values per channel in the (global) batch of the last training forward

    def build_shape(self, in_shape, dtype):
        in_shape = tuple(in_shape)
        if len(in_shape) == 2:
            raise ValueError(f"BatchNorm: expected features (F,) or images (C, H, W), got {in_shape}")
        self.C = in_shape[0]
        self.P = math.prod(in_shape[1:])
        self.dtype, self.in_shape, self.out_shape = dtype, in_shape, in_shape
        self.n_in = self.n_out = math.prod(in_shape)
        self._shared = None    # the work vectors, made at the first forward (loading allocates nothing)
        return in_shape

    def _work(self) -> None:
        """Per-channel work vectors: μ, σ², 1/√(σ² + ε), a product, the whole batch's Σ dY and
        Σ dY·x̂, the constants 0 and 1, and what goes over the ranks in one message."""
        C, dtype = self.C, self.dtype
        self._mean, self._var, self._invstd, self._scale, self._sum_dY, self._sum_dY_xhat = (
            np.empty(C, dtype) for _ in range(6))
        self._zero, self._one = np.zeros(C, dtype), np.ones(C, dtype)
        self._shared = np.empty(2 * C + 1, dtype)

    def param_shapes(self):
        return [("gamma", (self.C,)), ("beta", (self.C,))]

    def state_shapes(self):
        return [("running_mean", (self.C,)), ("running_var", (self.C,))]

    def bind(self, params, grads):
        self.gamma, self.beta = params["gamma"], params["beta"]
        self.dgamma, self.dbeta = grads["gamma"], grads["beta"]
        self.running_mean, self.running_var = params["running_mean"], params["running_var"]

    def init_params(self, rng):
        self.gamma[...] = 1
        self.beta[...] = 0
        self.running_mean[...] = 0
        self.running_var[...] = 1

    def config(self):
        return {"momentum": self.momentum, "eps": self.eps}

    def inference(self):
        return [("batchnorm", self)]

    def _over_ranks(self, *vectors, count: float = 0) -> float:
        """Sum the (C,) vectors (and a count) over the MPI ranks, in place; one process: as they are."""
        if self.ranks is None:
            return count
        C, shared = self.C, self._shared
        for k, v in enumerate(vectors):
            shared[k * C:(k + 1) * C] = v
        shared[-1] = count
        self.ranks.sum(shared)
        for k, v in enumerate(vectors):
            v[...] = shared[k * C:(k + 1) * C]
        return float(shared[-1])

    def _statistics(self, x) -> None:
        """The batch's μ and σ² (over all ranks' rows) into _mean and _var, and the running
        statistics updated."""
        _core.channel_sums(x, self.C, self._mean)
        N = self._N = int(self._over_ranks(self._mean, count=x.shape[0] * self.P))
        if N < 2:
            raise ValueError(f"BatchNorm: training needs more than one value per channel, got a batch of "
                             f"{N // self.P} sample(s) of {self.P} value(s) per channel")
        self._mean /= N
        _core.channel_sq_dev(x, self._mean, self.C, self._var)
        self._over_ranks(self._var)
        self._var /= N
        m = self.momentum
        for running, batch, weight in ((self.running_mean, self._mean, m), (self.running_var, self._var,
                                                                           m * N / (N - 1))):
            running *= 1 - m
            np.multiply(batch, weight, out=self._scale)
            running += self._scale

    def forward(self, x, training=False):
        B = x.shape[0]
        if self._shared is None:
            self._work()
        if training:
            self._statistics(x)
            mean, var = self._mean, self._var
        else:
            mean, var = self.running_mean, self.running_var
        np.add(var, self.eps, out=self._invstd)
        np.sqrt(self._invstd, out=self._invstd)
        np.divide(1, self._invstd, out=self._invstd)
        xhat, y = self._buffer("xhat", B, self.n_in), self._buffer("y", B, self.n_out)
        _core.batchnorm_apply(x, mean, self._invstd, self.gamma, self.beta, self.C, xhat, y)
        self._xhat, self._training = xhat, training
        return y

    def backward(self, dA, need_input_grad=True):
        _core.channel_sums(dA, self.C, self.dbeta)
        _core.channel_dot(dA, self._xhat, self.C, self.dgamma)
        if not need_input_grad:
            return None
        dX = self._buffer("dX", dA.shape[0], self.n_in)
        if self._training:
            sum_dY, sum_dY_xhat = self.dbeta, self.dgamma
            if self.ranks is not None:
                # each rank's dA is ∂(its rows' mean loss)/∂Y = (B/b)·∂(batch mean loss)/∂Y: the
                # whole batch's sums are Σ_ranks (b/B)·local sums, seen back on this rank's scale
                share = dA.shape[0] * self.P / self._N
                sum_dY, sum_dY_xhat = self._sum_dY, self._sum_dY_xhat
                np.multiply(self.dbeta, share, out=sum_dY)
                np.multiply(self.dgamma, share, out=sum_dY_xhat)
                self._over_ranks(sum_dY, sum_dY_xhat)
                sum_dY /= share
                sum_dY_xhat /= share
            _core.batchnorm_input_grad(dA, self._xhat, self.gamma, self._invstd, sum_dY, sum_dY_xhat, self._N,
                                       self.C, dX)
        else:   # the running statistics are constants: dX = dY·γ/√(running σ² + ε)
            np.multiply(self.gamma, self._invstd, out=self._scale)
            _core.batchnorm_apply(dA, self._zero, self._scale, self._one, self._zero, self.C, None, dX)
        return dX


@builtin_layer
class LayerNorm(Layer):
    """Layer normalisation over each sample's values (all C·H·W of an image):
    y = γ ⊙ (x − μ)/√(σ² + ε) + β with the sample's own μ and σ² (formulas in
    pyneuro.normalization), the same in training and evaluation; γ, β have one value per
    input value (PyTorch's LayerNorm over the sample's whole shape).

    Parameters
    ----------
    eps : float
        ε > 0 (default 1e-5, as PyTorch).
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = check_float(eps, "LayerNorm eps", 0.0, low_open=True)

    def param_shapes(self):
        return [("gamma", (self.n_in,)), ("beta", (self.n_in,))]

    def bind(self, params, grads):
        self.gamma, self.beta = params["gamma"], params["beta"]
        self.dgamma, self.dbeta = grads["gamma"], grads["beta"]

    def init_params(self, rng):
        self.gamma[...] = 1
        self.beta[...] = 0

    def config(self):
        return {"eps": self.eps}

    def inference(self):
        return [("layernorm", self)]

    def forward(self, x, training=False):
        B = x.shape[0]
        xhat, y = self._buffer("xhat", B, self.n_in), self._buffer("y", B, self.n_out)
        invstd = self._buffer("invstd", B, 1).reshape(-1)
        _core.layernorm_forward(x, self.gamma, self.beta, self.eps, xhat, invstd, y)
        self._xhat, self._invstd = xhat, invstd
        return y

    def backward(self, dA, need_input_grad=True):
        dX = self._buffer("dX", dA.shape[0], self.n_in)
        _core.layernorm_backward(dA, self._xhat, self.gamma, self._invstd, dX, self.dgamma, self.dbeta)
        return dX if need_input_grad else None
