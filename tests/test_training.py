"""Learning end to end: the README example, the `pyneuro train` command, reproducibility,
small problems with known answers, optimizers and schedules, dropout, callbacks,
divergence, verbosity, the digits data and the CLI's user errors."""
import contextlib
import io
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pyneuro as pn
from pyneuro import cli

REPO = Path(__file__).resolve().parents[1]


# ---- shared helpers -----------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    """The README's split: X_train, X_test, y_train, y_test (float32, int64)."""
    return pn.datasets.train_test_split(*pn.datasets.load_digits(), test_size=0.2, seed=0)


@pytest.fixture
def set_threads():
    """Call it to set the kernels' thread count; the default is restored afterwards."""
    yield pn.set_num_threads
    pn.set_num_threads(None)


def mlp(widths, seed=0, activation="relu", dtype="float32", dropout=0.0):
    """Dense layers of the given widths (hidden ones with `activation`, optional dropout)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        layers.append(pn.Dense(n_in, n_out, activation=None if last else activation))
        if dropout and not last:
            layers.append(pn.Dropout(dropout))
    return pn.Sequential(layers, seed=seed, dtype=dtype)


def fit(model, X, y, loss="cross_entropy", optimizer=None, epochs=2, batch_size=32, seed=0, **kw):
    """Train silently; returns the Trainer."""
    trainer = pn.Trainer(model, loss=loss, optimizer=optimizer or pn.Adam(lr=1e-3), batch_size=batch_size,
                         epochs=epochs, seed=seed, verbose=0)
    trainer.fit(X, y, **kw)
    return trainer


def digits_weights(X, y, seed, dtype="float32", epochs=2):
    """The trained flat weights (bytes) of a 64-256-128-10 net with dropout, digits, 2 epochs."""
    model = mlp([64, 256, 128, 10], seed=seed, dtype=dtype, dropout=0.2)
    fit(model, X.astype(dtype), y, epochs=epochs, batch_size=100, seed=seed)
    return model.params.tobytes()


# ---- the README example ---------------------------------------------------------------
README_EXAMPLE = '''\
import pyneuro as pn
X_train, X_test, y_train, y_test = pn.datasets.train_test_split(*pn.datasets.load_digits(), test_size=0.2, seed=0)
model = pn.Sequential([pn.Dense(64, 128, activation="relu"), pn.Dense(128, 10)], seed=0)
trainer = pn.Trainer(model, loss="cross_entropy", optimizer=pn.Adam(lr=1e-3), batch_size=32, epochs=30, seed=0)
history = trainer.fit(X_train, y_train, validation_split=0.1, callbacks=[pn.EarlyStopping(patience=5, restore_best=True)])
print(trainer.evaluate(X_test, y_test))      # {"loss": ..., "accuracy": ...}
labels = model.predict_classes(X_test); probs = model.predict_proba(X_test)
model.summary()
'''


@pytest.fixture(scope="module")
def readme_run():
    """The README example, run verbatim; its namespace and what it printed."""
    assert README_EXAMPLE in (REPO / "README.md").read_text(), "README example changed; update the test"
    ns, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(README_EXAMPLE, "README.md", "exec"), ns)
    return ns, out.getvalue()


def test_readme_example_reaches_stated_accuracy(readme_run):
    ns, printed = readme_run
    result = ns["trainer"].evaluate(ns["X_test"], ns["y_test"])
    assert result["accuracy"] >= 0.93
    assert str(result) in printed  # the printed dict is the evaluation
    # evaluate's accuracy and loss agree with the model's own predictions
    y_test, labels, probs = ns["y_test"], ns["labels"], ns["probs"]
    assert result["accuracy"] == pytest.approx(np.mean(labels == y_test), abs=1e-12)
    ref_loss = -np.mean(np.log(probs.astype(np.float64)[np.arange(len(y_test)), y_test]))
    assert result["loss"] == pytest.approx(ref_loss, rel=1e-4)
    assert "Total params: 9,610" in printed  # 64·128 + 128 + 128·10 + 10


def test_readme_example_predictions_and_history(readme_run):
    ns, _ = readme_run
    labels, probs, X_test = ns["labels"], ns["probs"], ns["X_test"]
    assert labels.dtype == np.int64 and labels.shape == (X_test.shape[0],)
    assert probs.shape == (X_test.shape[0], 10) and probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), labels)
    history = ns["history"]
    keys = ["loss", "accuracy", "val_loss", "val_accuracy"]
    lengths = {k: len(history[k]) for k in keys}
    assert len(set(lengths.values())) == 1, lengths
    assert 1 <= history.epochs <= 30
    assert all(np.isfinite(history[k]).all() for k in keys)
    assert all(0 <= a <= 1 for a in history["accuracy"] + history["val_accuracy"])
    assert history["loss"][-1] < history["loss"][0]


# ---- learning quality of the command -------------------------------------------------------
def test_pyneuro_train_default_accuracy_over_seeds(capsys):
    accuracies = []
    for seed in range(5):
        t0 = time.perf_counter()
        assert cli.main(["train", "--quiet", "--seed", str(seed)]) == 0
        wall = time.perf_counter() - t0
        out = capsys.readouterr().out
        match = re.search(r"test accuracy (\d+\.\d+)", out)
        assert match, out
        accuracies.append(float(match.group(1)))
        assert wall < 10, f"seed {seed}: {wall:.1f} s"
    assert min(accuracies) >= 0.96, accuracies
    assert np.mean(accuracies) >= 0.97, accuracies


# ---- reproducibility -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_gives_bitwise_identical_weights_on_any_thread_count(digits, set_threads, dtype):
    X, _, y, _ = digits
    runs = {}
    for threads in (1, 2, 2, 1):
        set_threads(threads)
        runs.setdefault(threads, []).append(digits_weights(X, y, seed=0, dtype=dtype))
    assert runs[1][0] == runs[1][1], "two runs on 1 thread differ"
    assert runs[2][0] == runs[2][1], "two runs on 2 threads differ"
    assert runs[1][0] == runs[2][0], "1 thread and 2 threads differ"
    assert digits_weights(X, y, seed=1, dtype=dtype) != runs[1][0], "another seed gives the same weights"


# ---- small problems with known answers ---------------------------------------------------
def test_xor_with_2_4_1_network():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    model = pn.Sequential([pn.Dense(2, 4, activation="tanh"), pn.Dense(4, 1)], seed=0)
    trainer = fit(model, X, y.astype(np.float32), loss="binary_cross_entropy", optimizer=pn.Adam(lr=0.05),
                  epochs=300, batch_size=4)
    np.testing.assert_array_equal(model.predict_classes(X), y)
    assert trainer.history["accuracy"][-1] == 1.0
    assert trainer.history["loss"][-1] < 0.05


def test_sine_regression_with_mse():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(256, 1)).astype(np.float32)
    model = mlp([1, 16, 16, 1], activation="tanh")
    fit(model, x, np.sin(x), loss="mse", optimizer=pn.Adam(lr=0.01), epochs=200)
    grid = np.linspace(-3, 3, 101, dtype=np.float32)[:, None]
    mse = float(np.mean((model.predict(grid).astype(np.float64) - np.sin(grid.astype(np.float64))) ** 2))
    assert mse < 0.01


# ---- dtypes --------------------------------------------------------------------------------
def test_float64_model_end_to_end(digits):
    """A float64 model trains, predicts and evaluates in float64, and learns what its float32 twin does."""
    labels = {}
    for dtype in ("float32", "float64"):
        X_train, X_test, y_train, y_test = (a.astype(dtype) if a.dtype.kind == "f" else a for a in digits)
        model = mlp([64, 64, 10], dtype=dtype)
        trainer = fit(model, X_train, y_train, optimizer=pn.Adam(lr=3e-3), epochs=10,
                      validation_data=(X_test, y_test))
        assert model.params.dtype == model.predict(X_test).dtype == np.dtype(dtype)
        probs = model.predict_proba(X_test)
        assert probs.dtype == np.dtype(dtype)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12 if dtype == "float64" else 1e-5)
        assert trainer.evaluate(X_test, y_test)["accuracy"] >= 0.93
        assert trainer.history["val_accuracy"][-1] >= 0.93
        labels[dtype] = model.predict_classes(X_test)
    assert np.mean(labels["float32"] == labels["float64"]) >= 0.97


@pytest.mark.parametrize("model_dtype, data_dtype", [("float32", np.float64), ("float64", np.float32)])
@pytest.mark.parametrize("entry", ["fit", "predict", "evaluate", "validation_data"])
def test_mixed_dtypes_are_converted_per_batch(digits, model_dtype, data_dtype, entry):
    """Data of the other float dtype gives what its conversion to the model's dtype gives."""
    X, _, y, _ = digits
    X, y = X[:50], y[:50]
    results = []
    for data in (X.astype(data_dtype), X.astype(data_dtype).astype(model_dtype)):
        model = mlp([64, 10], dtype=model_dtype)
        trainer = pn.Trainer(model, epochs=1, verbose=0, seed=0)
        out = {
            "fit": lambda: trainer.fit(data, y)["loss"],
            "predict": lambda: model.predict(data),
            "evaluate": lambda: trainer.evaluate(data, y),
            "validation_data": lambda: trainer.fit(X.astype(model_dtype), y, validation_data=(data, y))["val_loss"],
        }[entry]()
        results.append((out, model.get_weights()))
    np.testing.assert_equal(results[0], results[1])


# ---- optimizers and schedules -------------------------------------------------------------
OPTIMIZERS = {
    "SGD": lambda: pn.SGD(lr=0.1),
    "SGD momentum": lambda: pn.SGD(lr=0.05, momentum=0.9),
    "SGD nesterov": lambda: pn.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "SGD weight_decay": lambda: pn.SGD(lr=0.1, weight_decay=1e-3),
    "Adam": lambda: pn.Adam(lr=5e-3),
    "AdamW": lambda: pn.AdamW(lr=5e-3, weight_decay=0.01),
    "RMSprop": lambda: pn.RMSprop(lr=5e-3),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_reduces_training_loss(digits, name):
    X, _, y, _ = digits
    model = mlp([64, 32, 10])
    trainer = pn.Trainer(model, optimizer=OPTIMIZERS[name](), epochs=3, seed=0, verbose=0)
    before = trainer.evaluate(X, y)["loss"]
    trainer.fit(X, y)
    after = trainer.evaluate(X, y)
    assert after["loss"] < 0.4 * before, (before, after)
    assert after["accuracy"] > 0.85
    assert trainer.history["loss"][-1] < trainer.history["loss"][0]


@pytest.mark.parametrize("clip", ["none", "inactive", "active"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("schedule", [None, lambda epoch: 0.5])
def test_sgd_step_with_clipping_matches_numpy(clip, weight_decay, schedule):
    """One full-batch SGD step on a 3→2 linear model with mse, against a NumPy re-implementation."""
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2)) * 3
    model = pn.Sequential([pn.Dense(3, 2)], seed=0, dtype="float64")
    model.params[6:] = [0.3, -0.2]  # non-zero bias
    w0 = model.get_weights()
    W, b = w0[:6].reshape(3, 2), w0[6:]
    dZ = 2 * (X @ W + b - Y) / Y.size           # ∂ mean((Z − Y)²) / ∂Z
    g = np.concatenate([(X.T @ dZ).ravel(), dZ.sum(axis=0)])
    norm = np.linalg.norm(g)
    clip_norm = {"none": None, "inactive": 2 * norm, "active": 0.25 * norm}[clip]
    lr = 0.1
    opt = pn.SGD(lr=lr, weight_decay=weight_decay, clip_norm=clip_norm, schedule=schedule)
    fit(model, X, Y, loss="mse", optimizer=opt, epochs=1, batch_size=8)

    scale = 0.25 if clip == "active" else 1.0
    eta = lr * (1 if schedule is None else 0.5)
    expected = w0 - eta * (scale * g + weight_decay * w0)
    np.testing.assert_allclose(model.params, expected, rtol=1e-12, atol=1e-14)
    if clip == "active" and weight_decay == 0:
        assert np.linalg.norm(model.params - w0) == pytest.approx(eta * clip_norm, rel=1e-12)


SCHEDULES = {
    "StepDecay": (lambda: pn.StepDecay(step_size=2, gamma=0.5), [1, 1, 0.5, 0.5, 0.25, 0.25]),
    "ExponentialDecay": (lambda: pn.ExponentialDecay(0.9), [1, 0.9, 0.81, 0.729, 0.6561, 0.59049]),
    "CosineDecay": (lambda: pn.CosineDecay(4, min_factor=0.1),
                    [1, 0.1 + 0.45 * (1 + math.sqrt(0.5)), 0.55, 0.1 + 0.45 * (1 - math.sqrt(0.5)), 0.1, 0.1]),
    "callable": (lambda: (lambda epoch: 1 / (1 + epoch)), [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6]),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_sets_learning_rate_per_epoch(name):
    make, factors = SCHEDULES[name]
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((20, 3)).astype(np.float32), rng.standard_normal((20, 1)).astype(np.float32)
    model = pn.Sequential([pn.Dense(3, 1)], seed=0)
    lrs = []
    record = pn.LambdaCallback(on_epoch_end=lambda epoch, logs: lrs.append(trainer.optimizer.current_lr))
    trainer = pn.Trainer(model, loss="mse", optimizer=pn.SGD(lr=0.2, schedule=make()), batch_size=8, epochs=3,
                         verbose=0)
    trainer.fit(X, Y, callbacks=[record])
    trainer.fit(X, Y, callbacks=[record])  # a second fit continues the schedule
    np.testing.assert_allclose(lrs, 0.2 * np.array(factors), rtol=1e-12)


# ---- dropout ---------------------------------------------------------------------------------
def test_dropout_is_identity_at_evaluation(digits):
    X = digits[1]
    plain = mlp([64, 32, 10])
    for p in (0.0, 0.5, 0.9):
        model = mlp([64, 32, 10], dropout=p)
        model.set_weights(plain.get_weights())
        np.testing.assert_array_equal(model.predict(X), plain.predict(X))
        np.testing.assert_array_equal(model.forward(X[:7], training=False), plain.predict(X[:7]))


def test_dropout_mask_is_seeded(digits):
    X, _, y, _ = digits
    X, y = X[:300], y[:300]

    def trained(seed, dropout):
        model = mlp([64, 32, 10], seed=seed, dropout=dropout)
        fit(model, X, y, epochs=2, seed=0)
        return model.params.tobytes()

    assert trained(0, 0.5) == trained(0, 0.5)
    assert trained(0, 0.5) != trained(0, 0.0)   # the masks change training
    assert trained(0, 0.5) != trained(1, 0.5)
    # an explicit Dropout seed fixes the mask whatever the model's seed
    x = np.ones((4, 50), dtype=np.float32)
    masks = [pn.Sequential([pn.Dropout(0.5, seed=7)], input_dim=50, seed=s).forward(x, training=True).copy()
             for s in (0, 1)]
    np.testing.assert_array_equal(masks[0], masks[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_inverted_dropout_keeps_the_mean(p, dtype):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, size=(2000, 50)).astype(dtype)
    y = pn.Sequential([pn.Dropout(p)], input_dim=50, seed=0, dtype=dtype).forward(x, training=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)    # survivors scaled by 1/(1−p)
    assert abs(1 - kept.mean() - p) < 0.01                                 # about p of them dropped
    assert y.mean() == pytest.approx(x.mean(), rel=0.02)                   # E[y] = x


# ---- callbacks -------------------------------------------------------------------------------
def _snapshots(model, store):
    return pn.LambdaCallback(on_epoch_end=lambda epoch, logs: store.append(model.get_weights()))


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping_stops_after_patience_epochs_without_improvement(digits, patience):
    """min_delta is so large that only the first epoch counts as an improvement; the documented
    rule ("stop when it has not improved for `patience` epochs") then stops after 1 + patience."""
    X, _, y, _ = digits
    model = mlp([64, 16, 10])
    es = pn.EarlyStopping(monitor="loss", patience=patience, min_delta=1e6)
    trainer = fit(model, X[:200], y[:200], epochs=20, callbacks=[es])
    assert trainer.history.epochs == 1 + patience


def test_early_stopping_restores_best_weights(digits):
    X, _, y, _ = digits
    model = mlp([64, 128, 10])
    snaps = []
    trainer = fit(model, X[:180], y[:180], optimizer=pn.Adam(lr=1e-2), epochs=60, validation_split=0.3,
                  callbacks=[pn.EarlyStopping(patience=3, restore_best=True), _snapshots(model, snaps)])
    val_loss = trainer.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert trainer.history.epochs < 60, "no early stop"
    assert best < len(val_loss) - 1, "the best epoch was the last one; the test proves nothing"
    assert not np.array_equal(snaps[best], snaps[-1])
    np.testing.assert_array_equal(model.params, snaps[best])


def test_lambda_callback_hooks_are_called(digits):
    X, _, y, _ = digits
    calls = {"batch": [], "epoch": [], "begin": 0, "end": 0}
    cb = pn.LambdaCallback(
        on_batch_end=lambda b, logs: calls["batch"].append((b, np.isfinite(logs["loss"]))),
        on_epoch_end=lambda e, logs: calls["epoch"].append(e),
        on_train_begin=lambda logs: calls.__setitem__("begin", calls["begin"] + 1),
        on_train_end=lambda logs: calls.__setitem__("end", calls["end"] + 1))
    fit(mlp([64, 10]), X[:100], y[:100], epochs=3, batch_size=32, callbacks=[cb])  # 4 batches per epoch
    assert calls["batch"] == [(b, True) for b in range(4)] * 3
    assert calls["epoch"] == [0, 1, 2]
    assert calls["begin"] == calls["end"] == 1


# ---- divergence ------------------------------------------------------------------------------
def _diverging_case(kind, digits):
    X, _, y, _ = digits
    if kind == "nan_row":  # one NaN input row: the loss of the batch holding it is NaN
        X = X.copy()
        X[123, 5] = np.nan
        return X, y, "cross_entropy", pn.Adam(), "nan"
    Y = np.eye(10, dtype=np.float32)[y]
    if kind == "huge_lr":  # weights blow up after a few steps, the loss overflows
        return X, Y, "mse", pn.SGD(lr=1e6), "inf"
    return X * np.float32(1e30), Y, "mse", pn.SGD(lr=0.01), "inf"  # finite inputs, overflowing loss


@pytest.mark.parametrize("kind, activation", [("nan_row", "tanh"), ("nan_row", "relu"), ("huge_lr", "relu"),
                                              ("overflowing_inputs", "relu")])
def test_divergence_raises_and_keeps_weights_from_before_the_batch(digits, kind, activation):
    X, y, loss, optimizer, value = _diverging_case(kind, digits)
    model = mlp([64, 32, 10], activation=activation)
    trainer = pn.Trainer(model, loss=loss, optimizer=optimizer, batch_size=50, epochs=1, seed=0, verbose=0,
                         allow_nonfinite=True)
    trainer.fit(digits[0][:100], y[:100])  # one clean epoch first: the failure is in epoch 2
    last = [model.get_weights()]
    record = pn.LambdaCallback(on_batch_end=lambda b, logs: last.__setitem__(0, model.get_weights()))
    calls = []
    counter = pn.LambdaCallback(on_batch_end=lambda b, logs: calls.append(b))
    with pytest.raises(pn.DivergenceError) as exc:
        trainer.fit(X, y, callbacks=[record, counter])
    n_batches = math.ceil(X.shape[0] / 50)
    msg = str(exc.value)
    assert f"loss became {value}" in msg
    assert f"epoch 2, batch {len(calls) + 1} of {n_batches}" in msg, msg
    assert np.isfinite(last[0]).all()
    np.testing.assert_array_equal(model.params, last[0])
    assert isinstance(exc.value, FloatingPointError)


# ---- verbosity -------------------------------------------------------------------------------
@pytest.mark.parametrize("verbose, lines", [(0, 0), (2, 3)])
def test_verbose_output(digits, capsys, verbose, lines):
    X, _, y, _ = digits
    trainer = pn.Trainer(mlp([64, 10]), epochs=3, verbose=verbose, seed=0)
    trainer.fit(X[:200], y[:200], validation_split=0.2)
    out, err = capsys.readouterr()
    assert err == ""
    printed = out.splitlines()
    assert len(printed) == lines, out
    for i, line in enumerate(printed, 1):
        assert re.match(rf"epoch\s+{i}\s", line) and "val_accuracy" in line, line


# ---- data ------------------------------------------------------------------------------------
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_load_digits():
    X, y = pn.datasets.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and X.flags.c_contiguous
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.unique(X * 16), np.arange(17))  # pixels are k/16
    assert y.shape == (1797,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), DIGIT_COUNTS)
    X64, y64 = pn.datasets.load_digits(dtype="float64")
    assert X64.dtype == np.float64
    np.testing.assert_array_equal(X64, X)
    np.testing.assert_array_equal(y64, y)


@pytest.mark.parametrize("test_size", [0.2, 0.5])
def test_train_test_split_is_stratified_seeded_disjoint_and_complete(test_size):
    _, y = pn.datasets.load_digits()
    ids = np.arange(y.shape[0]).reshape(-1, 1)  # features that name their row
    ids_train, ids_test, y_train, y_test = pn.datasets.train_test_split(ids, y, test_size=test_size, seed=0)
    train, test = ids_train[:, 0], ids_test[:, 0]
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(y.shape[0]))
    np.testing.assert_array_equal(y_train, y[train])
    np.testing.assert_array_equal(y_test, y[test])
    test_counts = np.bincount(y_test, minlength=10)
    assert np.all(np.abs(test_counts - test_size * np.array(DIGIT_COUNTS)) <= 0.5 + 1e-9), test_counts
    again = pn.datasets.train_test_split(ids, y, test_size=test_size, seed=0)
    np.testing.assert_array_equal(again[1], ids_test)
    other = pn.datasets.train_test_split(ids, y, test_size=test_size, seed=1)
    assert not np.array_equal(np.sort(other[1][:, 0]), np.sort(test))


# ---- summary -----------------------------------------------------------------------------------
def test_summary_lists_layers_shapes_and_parameter_count(capsys):
    layers = [pn.Dense(64, 32, activation="relu"), pn.Dropout(0.2), pn.Dense(32, 16, activation="tanh"),
              pn.ReLU(), pn.Dense(16, 10)]
    model = pn.Sequential(layers, seed=0)
    text = model.summary()
    assert capsys.readouterr().out.strip() == text.strip()
    total = sum(d.n_in * d.n_out + d.n_out for d in layers if isinstance(d, pn.Dense))
    assert total == model.count_params() == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert f"Total params: {total:,}" in text
    rows = [line for line in text.splitlines() if re.match(r"\d+: ", line)]
    assert len(rows) == len(layers)
    for i, (row, layer) in enumerate(zip(rows, layers)):
        n_params = layer.n_in * layer.n_out + layer.n_out if isinstance(layer, pn.Dense) else 0
        assert row.startswith(f"{i}: {layer!r}")
        assert f"(None, {layer.n_out})" in row
        assert row.split()[-1] == f"{n_params:,}"
    assert model.summary(print_fn=None) == text and capsys.readouterr().out == ""


# ---- command line --------------------------------------------------------------------------------
TRAIN_FLAGS = ["--dataset", "--hidden", "--activation", "--dropout", "--optimizer", "--lr", "--momentum",
               "--weight-decay", "--schedule", "--batch-size", "--epochs", "--test-size", "--validation-split",
               "--seed", "--split-seed", "--threads", "--dtype", "--quiet", "--help"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pyneuro.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


@pytest.mark.parametrize("args, expected", [
    ([], ["train", "--help", "--version"]),
    (["train"], TRAIN_FLAGS),
])
def test_cli_help_lists_every_flag(args, expected):
    proc = run_cli(*args, "--help")
    assert proc.returncode == 0, proc.stderr
    missing = [flag for flag in expected if flag not in proc.stdout]
    assert not missing, missing


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "ten"], "--epochs"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--hidden", "64", "0"], "--hidden"),
    (["--threads", "0"], "--threads"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--dropout", "1.5"], "Dropout p"),
    (["--test-size", "1.5"], "test_size"),
    (["--weight-decay", "-1"], "weight_decay"),
    (["--validation-split", "1"], "validation_split"),
    (["--optimizer", "sgd", "--momentum", "1"], "momentum"),
])
def test_cli_bad_flag_value_exits_2_with_one_line(args, fragment):
    proc = run_cli("train", "--quiet", *args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line message, got {len(lines)} lines:\n{proc.stderr}"
    assert "error" in lines[0] and fragment in lines[0], lines[0]


@pytest.mark.parametrize("layers", [
    lambda: [pn.Dense(8, 16, "relu"), pn.Dense(16, 3)],                       # one compiled chain
    lambda: [pn.Dense(8, 16), pn.Tanh(), pn.Dropout(0.5), pn.Dense(16, 3), pn.Softmax()],
    lambda: [pn.Dense(8, 16, "relu"), pn.Sigmoid(), pn.Dense(16, 3)],         # no fold: layer by layer
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_equals_the_training_forward_pass(layers, dtype):
    model = pn.Sequential(layers(), seed=3, dtype=dtype)
    X = np.random.default_rng(0).standard_normal((70, 8)).astype(dtype)
    expected = model.forward(X).copy()
    assert np.array_equal(model.predict(X, batch_size=32), expected)   # blocks of rows
    assert np.array_equal(model.predict(X), expected)                  # all rows in one call
    assert np.array_equal(model.predict(X[:1]), expected[:1])


def test_mlp_is_dense_and_dropout_per_hidden_width_then_a_linear_output():
    m = pn.Sequential.mlp(8, [5, 4], 3, "tanh", dropout=0.1, seed=0, dtype="float64")
    assert [(type(layer).__name__, layer.config()) for layer in m.layers] == [
        ("Dense", {"n_in": 8, "n_out": 5, "activation": "tanh"}), ("Dropout", {"p": 0.1}),
        ("Dense", {"n_in": 5, "n_out": 4, "activation": "tanh"}), ("Dropout", {"p": 0.1}),
        ("Dense", {"n_in": 4, "n_out": 3, "activation": "identity"})]
    assert m.dtype == np.float64
    assert [type(layer).__name__ for layer in pn.Sequential.mlp(8, [5], 3).layers] == ["Dense", "Dense"]
