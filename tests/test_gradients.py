"""Whole-model finite-difference gradient checks (float64) for every layer × loss.

Each model is  Dense(4→5) [→ layer under test] → Dense(5→3)  so the layer's backward
pass is on the path to the first Dense's parameters. Inputs are random (no input sits
on a kink: relu at 0, |r| = 0 for mae); check_gradients compares backprop with central
differences of the loss over every parameter.
"""
import zlib

import numpy as np
import pytest

import pyneuro as pn
from pyneuro.gradcheck import check_gradients

B, N_IN, HIDDEN, N_OUT = 5, 4, 5, 3
TOL = 1e-6

ACTIVATIONS = ["identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "softmax"]

# name -> factory of the middle part of the model (a list of layers after the input)
LAYERS = {f"Dense[{a}]": (lambda a=a: [pn.Dense(N_IN, HIDDEN, activation=a)]) for a in ACTIVATIONS}
LAYERS.update({
    cls.__name__: (lambda cls=cls: [pn.Dense(N_IN, HIDDEN), cls()])
    for cls in (pn.Identity, pn.ReLU, pn.LeakyReLU, pn.ELU, pn.Sigmoid, pn.Tanh, pn.GELU, pn.Softmax)
})
LAYERS["LeakyReLU(alpha=0.2)"] = lambda: [pn.Dense(N_IN, HIDDEN), pn.LeakyReLU(alpha=0.2)]
LAYERS["ELU(alpha=0.5)"] = lambda: [pn.Dense(N_IN, HIDDEN), pn.ELU(alpha=0.5)]
LAYERS["Dropout"] = lambda: [pn.Dense(N_IN, HIDDEN), pn.Dropout(0.4)]
LAYERS["Scale"] = lambda: [pn.Scale([0.5, -2.0, 1.5, 3.0]), pn.Dense(N_IN, HIDDEN, "tanh"), pn.Scale(0.7)]
LAYERS["Standardize"] = lambda: [pn.Standardize([0.1, -0.2, 0.3, 0.0], [0.5, 2.0, 1.5, 0.8]),
                                 pn.Dense(N_IN, HIDDEN, "tanh"), pn.Standardize(0.2, 1.7)]


def _labels(rng):
    return rng.integers(0, N_OUT, size=B)


def _probabilities(rng):
    return rng.dirichlet(np.ones(N_OUT), size=B)


def _unit(rng):
    return rng.uniform(0.0, 1.0, size=(B, N_OUT))


def _regression(rng):
    # Network outputs are O(1); targets offset by ±(1..2) keep every |residual| well above eps.
    return rng.choice([-1.0, 1.0], size=(B, N_OUT)) * rng.uniform(1.0, 2.0, size=(B, N_OUT))


# name -> (loss, target factory)
LOSSES = {
    "cross_entropy[labels]": ("cross_entropy", _labels),
    "cross_entropy[probabilities]": ("cross_entropy", _probabilities),
    "binary_cross_entropy": ("binary_cross_entropy", _unit),
    "mse": ("mse", _regression),
    "mae": ("mae", _regression),
    "huber(delta=1.5)": (pn.Huber(delta=1.5), _regression),  # residuals on both sides of δ
}


def _model(middle, seed):
    return pn.Sequential(middle + [pn.Dense(HIDDEN, N_OUT)], seed=seed, dtype="float64")


def _inputs(rng):
    return rng.standard_normal((B, N_IN))


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_model_gradient_matches_finite_differences(layer_name, loss_name):
    rng = np.random.default_rng(zlib.crc32(f"{layer_name}/{loss_name}".encode()))
    model = _model(LAYERS[layer_name](), seed=int(rng.integers(2**31)))
    # Non-zero biases, so that no unit sits at a symmetric point of its activation.
    model.params[...] += rng.uniform(-0.3, 0.3, size=model.params.shape)
    loss, targets = LOSSES[loss_name]
    X, y = _inputs(rng), targets(rng)
    training = layer_name == "Dropout"

    error, analytic, numeric = check_gradients(model, loss, X, y, training=training)

    assert analytic.shape == numeric.shape == (model.count_params(),)
    assert np.linalg.norm(numeric) > 1e-3, "degenerate check: the loss does not depend on the parameters"
    assert error < TOL, f"relative gradient error {error:.3g}"
    if training:
        # The mask was really applied: without it (evaluation mode) the gradient differs.
        _, analytic_eval, _ = check_gradients(model, loss, X, y, training=False)
        assert not np.allclose(analytic, analytic_eval)


@pytest.mark.parametrize("loss_name", ["cross_entropy[labels]", "mse"])
def test_gradient_check_detects_a_wrong_gradient(loss_name):
    """The check itself can fail: a layer whose backward pass is off by 1 % is caught."""

    class SkewedTanh(pn.Tanh):
        def backward(self, grad, need_input_grad=True):
            return super().backward(grad, need_input_grad) * 1.01

    rng = np.random.default_rng(0)
    model = _model([pn.Dense(N_IN, HIDDEN), SkewedTanh()], seed=0)
    loss, targets = LOSSES[loss_name]
    error, _, _ = check_gradients(model, loss, _inputs(rng), targets(rng))
    assert error > 1e-4


def test_gradient_check_leaves_parameters_unchanged():
    rng = np.random.default_rng(1)
    model = _model([pn.Dense(N_IN, HIDDEN, activation="tanh")], seed=1)
    before = model.get_weights()
    check_gradients(model, "mse", _inputs(rng), _regression(rng))
    np.testing.assert_array_equal(model.params, before)
