"""Finite-difference check of a model's backpropagated gradient.

    ∂L/∂θ_k ≈ (L(θ + ε·e_k) − L(θ − ε·e_k)) / 2ε        (central differences)
    error = ‖g_backprop − g_numeric‖ / (‖g_backprop‖ + ‖g_numeric‖)
Meaningful in float64. Dropout layers replay the same mask at every evaluation.
"""
from __future__ import annotations

import numpy as np

from .layers import Dropout
from .losses import get_loss
from .model import Sequential


def check_gradients(model: Sequential, loss, X: np.ndarray, y: np.ndarray, eps: float = 1e-6,
                    training: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Compare backpropagation with central finite differences.

    Parameters
    ----------
    model : Sequential
    X, y : the data
    loss : str or Loss
    eps : float
        Finite-difference step h: ∂L/∂θᵢ ≈ (L(θ + h·eᵢ) − L(θ − h·eᵢ)) / 2h.
    training : bool
        Run the training-mode forward pass (dropout masks are replayed).

    Returns
    -------
    error, analytic, numeric
        ‖analytic − numeric‖ / (‖analytic‖ + ‖numeric‖), and both gradient vectors.
    """
    loss = get_loss(loss)
    y = loss.prepare_targets(y, X.shape[0], model.n_out, model.dtype)
    rngs = [layer.rng for layer in model.layers if isinstance(layer, Dropout) and layer.rng is not None]
    states = [r.bit_generator.state for r in rngs]

    def evaluate(delta=None) -> float:
        for r, s in zip(rngs, states):
            r.bit_generator.state = s
        return loss.value_and_grad(model.forward(X, training), y, delta)

    delta = np.empty((X.shape[0], model.n_out), dtype=model.dtype)
    evaluate(delta)
    model.backward(delta)
    analytic = model.grads.copy()
    numeric = np.zeros_like(analytic)     # state values (running statistics) are no parameters: 0
    theta = model.params
    for k in (k for _, a, b in model._spans for k in range(a, b)):
        keep = theta[k]
        theta[k] = keep + eps
        up = evaluate()
        theta[k] = keep - eps
        down = evaluate()
        theta[k] = keep
        numeric[k] = (up - down) / (2 * eps)
    denom = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    error = float(np.linalg.norm(analytic - numeric) / denom) if denom else 0.0
    return error, analytic, numeric
