"""Weighted losses (issue 17): sample weights in the loss kernels (the weighted mean
L = Σ w_i ℓ_i / Σ w_i), BCE's pos_weight, against NumPy references of scikit-learn's and
PyTorch's formulas and finite differences; bitwise the same on 1–3 threads and, without
weights, as the unweighted kernel; Trainer.fit/evaluate(sample_weight, class_weight) and
the scikit-learn estimators' fit(sample_weight)."""
import numpy as np
import pytest

import pyneuro as pn
from pyneuro import _core
from pyneuro.losses import BinaryCrossEntropy
from test_losses import elementwise_ref
from reference import DTYPES, assert_close, away_from, f64, numeric_grad, rel_err, sigmoid_ref, softmax_ref

POINTWISE = ["binary_cross_entropy", "mse", "mae", "huber"]


def lse(z):
    m = z.max(axis=1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def weighted_ce_ref(Z, y, w):
    """Σ_i w_i ℓ_i / Σ_i w_i and its gradient, ℓ_i = Σ_j T_ij (lse(Z_i) − Z_ij)."""
    z, w = f64(Z), f64(w)
    T = np.eye(z.shape[1])[y] if y.ndim == 1 else f64(y)
    ell = np.sum(T * (lse(z) - z), axis=1)
    g = softmax_ref(z) * T.sum(axis=1, keepdims=True) - T
    return float(w @ ell / w.sum()), g * w[:, None] / w.sum()


def torch_bce_with_logits(z, y, w=None, pos_weight=None):
    """PyTorch's BCEWithLogitsLoss(weight=w[:, None], pos_weight=p, reduction='mean') written in
    NumPy (its formula: log_weight = 1 + (p − 1)·y; ℓ = (1 − y)·z + log_weight·(log1p(e^{−|z|})
    + max(−z, 0))), with the weighted mean Σ w_i Σ_j ℓ_ij / (m Σ w_i) that pyneuro documents."""
    z, y = f64(z), f64(y)
    p = np.ones(z.shape[1]) if pos_weight is None else f64(pos_weight)
    lw = 1 + (p - 1) * y
    ell = (1 - y) * z + lw * (np.log1p(np.exp(-np.abs(z))) + np.maximum(-z, 0))
    g = lw * sigmoid_ref(z) - p * y
    w = np.ones(z.shape[0]) if w is None else f64(w)
    scale = w[:, None] / (z.shape[1] * w.sum())
    return float(np.sum(ell * scale)), g * scale


def pointwise_ref(kind, Z, Y, w, delta=1.0):
    """Σ_i w_i Σ_j ℓ_ij / (m Σ_i w_i) and its gradient."""
    if kind == "binary_cross_entropy":
        return torch_bce_with_logits(Z, Y, w)
    ell, g = elementwise_ref(kind, Z, Y, delta)
    scale = f64(w)[:, None] / (ell.shape[1] * f64(w).sum())
    return float(np.sum(ell * scale)), g * scale


def weights(rng, B, dtype, zeros=True):
    w = rng.uniform(0, 3, B)
    if zeros:
        w[::5] = 0
    return w.astype(dtype)


def call(fn, *args, **kw):
    """(L, ∂L/∂Z) of a loss kernel; the value alone must agree."""
    Z = args[0] if fn is _core.softmax_cross_entropy else args[1]
    dZ = np.full_like(Z, np.nan)
    L = fn(*args, delta=dZ, **kw)
    assert fn(*args, **kw) == L
    return L, dZ


# ---- against references ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_weighted_cross_entropy_matches_reference(dtype, targets):
    rng = np.random.default_rng(0)
    B, C = 37, 5
    Z = (rng.standard_normal((B, C)) * 2).astype(dtype)
    y = (rng.integers(0, C, B) if targets == "labels" else rng.dirichlet(np.ones(C), B).astype(dtype))
    w = weights(rng, B, dtype)
    L, dZ = call(_core.softmax_cross_entropy, Z, y, w=w)
    L_ref, g_ref = weighted_ce_ref(Z, y, w)
    assert_close(L, L_ref, dtype, "L")
    assert_close(dZ, g_ref, dtype, "dZ")


def test_weighted_cross_entropy_is_sklearn_log_loss():
    """On probabilities P = softmax(Z), sklearn.metrics.log_loss(sample_weight=w) is the
    weighted cross-entropy of the logits Z."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    B, C = 50, 4
    Z = rng.standard_normal((B, C))
    y = rng.integers(0, C, B)
    y[:C] = np.arange(C)
    w = rng.uniform(0.1, 2, B)
    expected = metrics.log_loss(y, softmax_ref(Z), sample_weight=w, labels=np.arange(C))
    assert abs(_core.softmax_cross_entropy(Z, y, w=w) - expected) < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", POINTWISE)
def test_weighted_pointwise_matches_reference(dtype, kind):
    rng = np.random.default_rng(2)
    B, m = 29, 3
    Z = away_from(rng, (B, m)).astype(dtype)
    Y = (rng.uniform(0, 1, (B, m)) if kind == "binary_cross_entropy" else rng.standard_normal((B, m))).astype(dtype)
    w = weights(rng, B, dtype)
    L, dZ = call(_core.pointwise_loss, kind, Z, Y, w=w, huber_delta=0.7)
    L_ref, g_ref = pointwise_ref(kind, Z, Y, w, delta=0.7)
    assert_close(L, L_ref, dtype, "L")
    assert_close(dZ, g_ref, dtype, "dZ")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_pos_weight_is_pytorch_bce_with_logits(dtype, weighted):
    rng = np.random.default_rng(3)
    B, m = 31, 4
    Z = (rng.standard_normal((B, m)) * 4).astype(dtype)
    Y = (rng.uniform(0, 1, (B, m)) < 0.3).astype(dtype)
    p = np.array([1.0, 3.0, 0.5, 19.0], dtype)
    w = weights(rng, B, dtype) if weighted else None
    L, dZ = call(_core.pointwise_loss, "binary_cross_entropy", Z, Y, w=w, pos_weight=p)
    L_ref, g_ref = torch_bce_with_logits(Z, Y, w, p)
    assert_close(L, L_ref, dtype, "L")
    assert_close(dZ, g_ref, dtype, "dZ")


# ---- finite differences (float64) --------------------------------------------------------
@pytest.mark.parametrize("case", ["ce_labels", "ce_probs", "bce_pos_weight", "mse", "mae", "huber"])
def test_weighted_gradients_by_central_differences(case):
    rng = np.random.default_rng(4)
    B, m = 9, 4
    Z = away_from(rng, (B, m))
    w = weights(rng, B, np.float64)
    if case.startswith("ce"):
        y = rng.integers(0, m, B) if case == "ce_labels" else rng.dirichlet(np.ones(m), B)

        def f():
            return _core.softmax_cross_entropy(Z, y, w=w)
        L, dZ = call(_core.softmax_cross_entropy, Z, y, w=w)
    else:
        kind = "binary_cross_entropy" if case == "bce_pos_weight" else case
        Y = rng.uniform(0, 1, (B, m)) if kind == "binary_cross_entropy" else away_from(rng, (B, m))
        if kind != "binary_cross_entropy":     # keep r = Z − Y off the kinks (mae, huber)
            Z = Y + away_from(rng, (B, m), kinks=(0.0, 0.8, -0.8))
        kw = dict(w=w, huber_delta=0.8,
                  pos_weight=np.array([2.0, 0.5, 7.0, 1.0]) if kind == "binary_cross_entropy" else None)

        def f():
            return _core.pointwise_loss(kind, Z, Y, **kw)
        L, dZ = call(_core.pointwise_loss, kind, Z, Y, **kw)
    assert rel_err(dZ, numeric_grad(f, Z)) < 1e-7


# ---- bitwise: threads, and the unweighted path ---------------------------------------------
def _all_losses(dtype, w):
    rng = np.random.default_rng(5)
    B, C = 4099, 37
    Z = (rng.standard_normal((B, C)) * 3).astype(dtype)
    y = rng.integers(0, C, B)
    T = rng.dirichlet(np.ones(C), B).astype(dtype)
    w = None if w is None else (np.ones(B, dtype) if w == "ones" else weights(rng, B, dtype))
    out = [call(_core.softmax_cross_entropy, Z, y, w=w), call(_core.softmax_cross_entropy, Z, T, w=w)]
    for kind in POINTWISE:
        Y = rng.uniform(0, 1, (B, C)).astype(dtype)
        out.append(call(_core.pointwise_loss, kind, Z, Y, w=w, scale=1.5))
    out.append(call(_core.pointwise_loss, "binary_cross_entropy", Z, Y, w=w,
                    pos_weight=np.linspace(0.5, 4, C).astype(dtype)))
    return out


def _same_bits(a, b):
    for (La, da), (Lb, db) in zip(a, b):
        assert np.float64(La).tobytes() == np.float64(Lb).tobytes()
        assert da.tobytes() == db.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_weighted_losses_bitwise_on_1_2_3_threads(dtype, num_threads):
    runs = []
    for n in (1, 2, 3):
        num_threads(n)
        runs.append(_all_losses(dtype, "random"))
    _same_bits(runs[0], runs[1])
    _same_bits(runs[0], runs[2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_of_ones_are_bitwise_the_unweighted_kernel(dtype):
    _same_bits(_all_losses(dtype, None), _all_losses(dtype, "ones"))


def test_zero_weight_sum_gives_zero_loss_and_gradient():
    Z, y = np.ones((3, 2)), np.array([0, 1, 0])
    L, dZ = call(_core.softmax_cross_entropy, Z, y, w=np.zeros(3))
    assert L == 0.0 and not dZ.any()


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_kernels_refuse_bad_weights(bad):
    Z, Y = np.ones((3, 2)), np.zeros((3, 2))
    w = np.array([1.0, bad, 1.0])
    with pytest.raises(ValueError, match="sample weights"):
        _core.softmax_cross_entropy(Z, np.array([0, 1, 0]), w=w)
    with pytest.raises(ValueError, match="sample weights"):
        _core.pointwise_loss("mse", Z, Y, w=w)
    with pytest.raises(ValueError, match="w"):
        _core.pointwise_loss("mse", Z, Y, w=np.ones(2))
    with pytest.raises(TypeError):
        _core.pointwise_loss("mse", Z, Y, w=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="pos_weight"):
        _core.pointwise_loss("mse", Z, Y, pos_weight=np.ones(2))
    with pytest.raises(ValueError, match="pos_weight"):
        BinaryCrossEntropy(pos_weight=-1.0)


# ---- Trainer -------------------------------------------------------------------------------
def imbalanced(n=2000, seed=0):
    """95/5 binary problem with overlapping classes."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.05).astype(np.int64)
    X = rng.standard_normal((n, 8)).astype(np.float32)
    X[:, :2] += 1.2 * y[:, None]
    return X, y


def recall(model, X, y):
    pred = pn.metrics.classes_from_outputs(model.predict(X)) if model.n_out > 1 else \
        (model.predict(X)[:, 0] > 0).astype(np.int64)
    return float(np.mean(pred[y == 1] == 1))


def _train(loss, n_out, X, y, **fit):
    model = pn.Sequential.mlp(X.shape[1], (16,), n_out, "relu", seed=0)
    trainer = pn.Trainer(model, loss, pn.optimizers.Adam(lr=0.01), batch_size=64, epochs=15, seed=0, verbose=0)
    Y = y if n_out > 1 else y.reshape(-1, 1).astype(np.float32)
    trainer.fit(X, Y, **fit)
    return model


def test_class_weight_and_pos_weight_raise_minority_recall():
    X, y = imbalanced()
    Xt, yt = imbalanced(seed=1)
    plain = recall(_train("cross_entropy", 2, X, y), Xt, yt)
    balanced = recall(_train("cross_entropy", 2, X, y, class_weight="balanced"), Xt, yt)
    p = float((y == 0).sum() / (y == 1).sum())
    pos = recall(_train(BinaryCrossEntropy(pos_weight=p), 1, X, y), Xt, yt)
    assert balanced > plain + 0.25 and pos > plain + 0.25, (plain, balanced, pos)


def test_fit_with_weights_of_ones_is_bitwise_unweighted_fit():
    X, y = imbalanced(300)
    a = _train("cross_entropy", 2, X, y)
    b = _train("cross_entropy", 2, X, y, sample_weight=np.full(300, 1.0))
    assert a.params.tobytes() == b.params.tobytes()


def test_class_weight_multiplies_sample_weight_and_evaluate_is_weighted():
    X, y = imbalanced(400)
    model = pn.Sequential.mlp(8, (8,), 2, "relu", seed=0)
    trainer = pn.Trainer(model, "cross_entropy", batch_size=400, epochs=1, seed=0, verbose=0)
    sw = np.random.default_rng(0).uniform(0.5, 2, 400)
    hist = trainer.fit(X, y, sample_weight=sw, class_weight={1: 4.0}, epochs=1)
    assert hist["loss"][0] > 0
    # evaluate: the weighted mean over all rows, whatever the batch size
    w = sw * np.where(y == 1, 4.0, 1.0)
    Zp = f64(model.predict(X))
    ell = (lse(Zp)[:, 0] - Zp[np.arange(400), y])
    expected = float(w @ ell / w.sum())
    for batch in (400, 64):
        got = trainer.evaluate(X, y, batch_size=batch, sample_weight=w)["loss"]
        assert abs(got - expected) < 1e-5 * max(1, expected)
    assert trainer.evaluate(X, y)["loss"] != pytest.approx(expected)


def test_fit_refuses_bad_weights():
    X, y = imbalanced(100)
    trainer = pn.Trainer(pn.Sequential.mlp(8, (4,), 2, seed=0), "cross_entropy", epochs=1, verbose=0)
    for sw, err in [(np.ones(99), ValueError), (-np.ones(100), ValueError), (np.zeros(100), ValueError),
                    ("x", TypeError)]:
        with pytest.raises(err, match="sample_weight"):
            trainer.fit(X, y, sample_weight=sw)
    with pytest.raises(ValueError, match="class_weight"):
        trainer.fit(X, y, class_weight={5: 1.0})
    with pytest.raises(TypeError, match="class_weight"):
        trainer.fit(X, y, class_weight="balance")
    reg = pn.Trainer(pn.Sequential.mlp(8, (4,), 1, seed=0), "mse", epochs=1, verbose=0)
    with pytest.raises(ValueError, match="class_weight"):
        reg.fit(X, y.reshape(-1, 1).astype(np.float32), class_weight="balanced")


def test_balanced_is_sklearns_formula():
    utils = pytest.importorskip("sklearn.utils")
    from pyneuro._validation import class_weight_rows
    y = np.array([0, 0, 0, 1, 2, 2])
    expected = utils.compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert np.allclose(class_weight_rows("balanced", y, 3), expected[y], rtol=1e-15)


# ---- scikit-learn ----------------------------------------------------------------------------
def test_sklearn_sample_weight_integer_is_repeated_rows_approximately():
    pytest.importorskip("sklearn")
    from pyneuro.sklearn import MLPRegressor
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    k = rng.integers(0, 3, 60)
    a = MLPRegressor((16,), max_iter=200, random_state=0, tol=0).fit(X, y, sample_weight=k)
    b = MLPRegressor((16,), max_iter=200, random_state=0, tol=0).fit(np.repeat(X, k, axis=0), np.repeat(y, k))
    Xt = rng.standard_normal((50, 3))
    assert np.abs(a.predict(Xt) - b.predict(Xt)).mean() < 0.1 * np.abs(b.predict(Xt)).mean()


def test_weights_need_an_array_of_rows():
    """A Dataset or an iterable of batches has no weight per row here: refused, never ignored."""
    X, y = pn.datasets.load_digits()

    class Rows:
        def __len__(self):
            return len(X)

        def __getitem__(self, idx):
            return X[idx], y[idx]
    trainer = pn.Trainer(pn.Sequential([pn.Dense(64, 10)], seed=0), epochs=1, verbose=0)
    for data, kw in ((Rows(), {}), ([(X[:32], y[:32])], {})):
        with pytest.raises(ValueError, match="need an array X"):
            trainer.fit(data, sample_weight=np.ones(len(X)), **kw)
    with pytest.raises(ValueError, match="evaluate takes weights with an array X"):
        trainer.evaluate(Rows(), sample_weight=np.ones(len(X)))
