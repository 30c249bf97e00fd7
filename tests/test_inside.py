"""Seeing inside a model: every layer's activations, ∂L/∂X, and probabilities that mean
what the outputs mean — against NumPy references and central finite differences."""
import numpy as np
import pytest

import pyneuro as pn
from reference import numeric_grad

ACT = {"identity": lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
       "sigmoid": lambda z: 1 / (1 + np.exp(-z))}


def _softmax(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _model(dtype="float64", seed=0):
    return pn.Sequential([pn.Dense(7, 9, "tanh"), pn.Dropout(0.3), pn.Dense(9, 6), pn.ReLU(),
                          pn.Dense(6, 4, "sigmoid"), pn.Dense(4, 3)], seed=seed, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_are_each_layers_output_as_fresh_arrays(rng, dtype):
    model = _model(dtype)
    X = rng.standard_normal((37, 7)).astype(dtype)
    pairs = model.activations(X, pre_activation=True, batch_size=10)   # several batches
    A, Zs = X.astype(np.float64), []
    for layer, (Z, out) in zip(model.layers, pairs):
        if isinstance(layer, pn.Dense):
            Zr = A @ layer.W.astype(np.float64) + layer.b
            A = ACT[layer.activation](Zr)
        elif isinstance(layer, pn.ReLU):
            Zr, A = A, np.maximum(A, 0)
        else:                              # Dropout: the identity at inference
            Zr = A
        tol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(Z, Zr, rtol=tol, atol=tol)
        np.testing.assert_allclose(out, A, rtol=tol, atol=tol)
        Zs.append(Z)
    plain = model.activations(X)
    assert [a.shape for a in plain] == [(37, 9), (37, 9), (37, 6), (37, 6), (37, 4), (37, 3)]
    np.testing.assert_array_equal(plain[-1], model.predict(X))
    kept = [a.copy() for a in plain]
    model.activations(rng.standard_normal((37, 7)).astype(dtype))      # buffers are reused inside…
    model.predict(X[:3])
    for before, after in zip(kept, plain):                             # …but what was returned stays
        np.testing.assert_array_equal(before, after)
    assert all(a.base is None for a in plain) and all(z.base is None for z in Zs)


@pytest.mark.parametrize("loss, outputs", [("cross_entropy", 3), ("mse", 3), ("binary_cross_entropy", 1),
                                           (pn.MSE("half_sum_outputs"), 3), (pn.Huber(0.5), 2)])
def test_input_gradient_equals_central_differences(rng, loss, outputs):
    model = pn.Sequential([pn.Dense(5, 8, "tanh"), pn.Dense(8, 6, "sigmoid"), pn.Dense(6, outputs)],
                          seed=1, dtype="float64")
    X = rng.standard_normal((11, 5))
    name = loss if isinstance(loss, str) else loss.name
    if name == "cross_entropy":
        y = rng.integers(0, outputs, 11)
    elif name == "binary_cross_entropy":
        y = rng.integers(0, 2, (11, 1)).astype(np.float64)
    else:
        y = rng.standard_normal((11, outputs))
    own = pn.losses.get_loss(loss)
    targets = own.prepare_targets(y, 11, outputs, model.dtype)
    grad = model.input_gradient(X, y, loss=loss, batch_size=4)      # batches of 4, 4, 3: one mean
    numeric = numeric_grad(lambda: own(model.predict(X), targets), X)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_input_gradient_uses_the_loss_the_model_was_trained_on():
    X, y = pn.datasets.load_digits(dtype="float64")
    model = pn.Sequential([pn.Dense(64, 16, "relu"), pn.Dense(16, 10)], seed=0, dtype="float64")
    with pytest.raises(ValueError, match="never trained.*pass loss="):
        model.input_gradient(X[:2], y[:2])
    pn.Trainer(model, epochs=1, verbose=0, seed=0).fit(X, y)
    np.testing.assert_array_equal(model.input_gradient(X[:5], y[:5]),
                                  model.input_gradient(X[:5], y[:5], loss="cross_entropy"))


def test_predict_proba_follows_what_the_outputs_are(rng):
    X = rng.standard_normal((20, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 20)
    onehot = np.eye(4, dtype=np.float32)[labels]

    logits = pn.Sequential([pn.Dense(6, 4)], seed=0)              # untrained, linear: class logits
    np.testing.assert_allclose(logits.predict_proba(X), _softmax(logits.predict(X).astype(np.float64)), rtol=1e-5)

    essay = pn.Sequential([pn.Dense(6, 8, "sigmoid"), pn.Dense(8, 4, "sigmoid")], seed=0)
    pn.Trainer(essay, loss="mse", optimizer=pn.SGD(lr=1.0), batch_size=10, epochs=2, verbose=0, seed=0).fit(X, onehot)
    assert essay.output == "probabilities"
    np.testing.assert_array_equal(essay.predict_proba(X), essay.predict(X))   # no softmax on top

    binary = pn.Sequential([pn.Dense(6, 1)], seed=0)
    pn.Trainer(binary, loss="binary_cross_entropy", batch_size=10, epochs=1, verbose=0).fit(X, (labels > 1).astype(np.float32))
    z = binary.predict(X).astype(np.float64)[:, 0]
    p = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(binary.predict_proba(X), np.stack([1 - p, p], axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(binary.predict_classes(X), (p > 0.5).astype(np.int64))
    np.testing.assert_array_equal(binary.predict_classes(X, threshold=0.8), (p > 0.8).astype(np.int64))

    regressor = pn.Sequential([pn.Dense(6, 8, "relu"), pn.Dense(8, 2)], seed=0)
    pn.Trainer(regressor, loss="mse", batch_size=10, epochs=1, verbose=0).fit(X, rng.standard_normal((20, 2)))
    assert regressor.output == "values"
    with pytest.raises(ValueError, match="outputs are values .*trained on mse.*use predict"):
        regressor.predict_proba(X)

    ends_in_softmax = pn.Sequential([pn.Dense(6, 4), pn.Softmax()], seed=0)
    np.testing.assert_array_equal(ends_in_softmax.predict_proba(X), ends_in_softmax.predict(X))


def test_the_essays_sigmoid_network_reads_confident_digits_as_confident():
    """A 64-30-10 sigmoid network trained with the quadratic cost: predict_proba is its own
    output (a 0.99 seven stays 0.99), and accuracy is counted on its one-hot targets."""
    X_train, X_test, y_train, y_test = pn.datasets.train_test_split(*pn.datasets.load_digits(), test_size=0.2, seed=0)
    model = pn.Sequential.mlp(64, [30], 10, "sigmoid", seed=0, output_activation="sigmoid")
    cost = pn.MSE("half_sum_outputs")
    trainer = pn.Trainer(model, loss=cost, optimizer=pn.SGD(lr=3.0), batch_size=10, epochs=15, verbose=0, seed=0)
    history = trainer.fit(X_train, cost.targets_from_labels(y_train, 10, model.dtype))
    result = trainer.evaluate(X_test, cost.targets_from_labels(y_test, 10, model.dtype))
    assert result["accuracy"] > 0.93 and history["accuracy"][-1] > 0.95, (result, history["accuracy"][-3:])
    P = model.predict_proba(X_test)
    np.testing.assert_array_equal(P, model.predict(X_test))
    assert np.median(P.max(axis=1)) > 0.9            # confident, and not squashed by a softmax


def test_the_file_keeps_what_the_outputs_are(tmp_path):
    X, y = pn.datasets.load_digits()
    model = pn.Sequential.mlp(64, [16], 10, "sigmoid", seed=0, output_activation="sigmoid")
    cost = pn.MSE("half_sum_outputs")
    pn.Trainer(model, loss=cost, optimizer=pn.SGD(lr=3.0), epochs=1, verbose=0).fit(X, cost.targets_from_labels(y, 10, model.dtype))
    model.save(tmp_path / "m.st")
    back = pn.load(tmp_path / "m.st")
    assert (back.output, back.loss.name, back.loss.config()) == ("probabilities", "mse", {"reduction": "half_sum_outputs"})
    np.testing.assert_array_equal(back.predict_proba(X[:50]), model.predict_proba(X[:50]))
    fresh = pn.Sequential.mlp(64, [16], 10, seed=0)
    fresh.save(tmp_path / "fresh.st")                      # never trained: nothing recorded
    assert pn.load(tmp_path / "fresh.st").loss is None and pn.load(tmp_path / "fresh.st").output is None


def test_mse_reductions_scale_the_loss_as_documented(rng):
    Z, Y = rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    r2 = (Z - Y) ** 2
    for reduction, expected, grad in (("mean", r2.mean(), 2 * (Z - Y) / Z.size),
                                      ("sum_outputs", r2.sum(axis=1).mean(), 2 * (Z - Y) / 9),
                                      ("half_sum_outputs", r2.sum(axis=1).mean() / 2, (Z - Y) / 9)):
        delta = np.empty_like(Z)
        assert np.isclose(pn.MSE(reduction).value_and_grad(Z, Y, delta), expected, rtol=1e-12)
        np.testing.assert_allclose(delta, grad, rtol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        pn.MSE("sum")
