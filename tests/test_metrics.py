"""pyneuro.metrics against scikit-learn on random cases (ties, absent classes, weights),
their errors, and the metrics the Trainer logs, prints and writes (CSVLogger)."""
import csv

import numpy as np
import pytest

import pyneuro as pn
from pyneuro import metrics as M

skm = pytest.importorskip("sklearn.metrics")

SEEDS = range(40)


def _case(seed, n_classes=None, weights=None):
    """Random labels, predictions and scores; some classes absent, scores with ties."""
    rng = np.random.default_rng(seed)
    C = n_classes or int(rng.integers(2, 7))
    n = int(rng.integers(10, 300))
    y = rng.integers(0, C, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, C, n))
    if seed % 4 == 1 and C > 2:    # a class absent from the truth
        y[y == C - 1] = 0
    if seed % 4 == 2 and C > 2:    # a class never predicted
        pred[pred == 1] = 0
    S = rng.random((n, C))
    if seed % 2:                   # coarse scores: many ties
        S = np.round(S, 1)
    S[np.arange(n), y] += rng.random(n) * 0.5
    P = S / S.sum(axis=1, keepdims=True)
    w = rng.random(n) * 3 if (weights if weights is not None else seed % 3 == 0) else None
    return y, pred, S, P, w, C


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_and_confusion_matrix(seed):
    y, pred, S, P, w, C = _case(seed)
    assert M.accuracy(y, pred, w) == pytest.approx(skm.accuracy_score(y, pred, sample_weight=w), abs=1e-12)
    cm = M.confusion_matrix(y, pred, C, sample_weight=w)
    ref = skm.confusion_matrix(y, pred, labels=np.arange(C), sample_weight=w)
    np.testing.assert_allclose(cm, ref, atol=1e-12)
    assert M.confusion_matrix(y, pred, C).dtype == np.int64


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to 'n_classes'")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_accuracy(seed, k):
    y, pred, S, P, w, C = _case(seed, n_classes=3 + seed % 4)
    ref = skm.top_k_accuracy_score(y, S, k=k, labels=np.arange(C), sample_weight=w)
    assert M.top_k_accuracy(y, S, k, w) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_precision_recall_f1_multiclass(seed, average):
    y, pred, S, P, w, C = _case(seed)
    for ours, theirs in ((M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score)):
        # default classes: those present (as scikit-learn); n_classes: all of 0 … C−1
        ref = theirs(y, pred, average=average, sample_weight=w, zero_division=0)
        assert ours(y, pred, average, sample_weight=w) == pytest.approx(ref, abs=1e-12), ours.__name__
        ref = theirs(y, pred, average=average, labels=np.arange(C), sample_weight=w, zero_division=0)
        assert ours(y, pred, average, n_classes=C, sample_weight=w) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pos_label", [0, 1])
def test_precision_recall_f1_binary(seed, pos_label):
    y, pred, S, P, w, C = _case(seed, n_classes=2)
    for ours, theirs in ((M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score)):
        ref = theirs(y, pred, pos_label=pos_label, sample_weight=w, zero_division=0)
        assert ours(y, pred, pos_label=pos_label, sample_weight=w) == pytest.approx(ref, abs=1e-12)


def test_precision_zero_division_and_never_predicted():
    y, pred = np.array([0, 1, 1, 0]), np.array([0, 0, 0, 0])
    assert M.precision(y, pred) == skm.precision_score(y, pred, zero_division=0) == 0.0
    assert M.precision(y, pred, zero_division=1) == skm.precision_score(y, pred, zero_division=1) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_binary(seed):
    y, pred, S, P, w, C = _case(seed, n_classes=2)
    s = S[:, 1] - S[:, 0]
    if seed % 2:
        s = np.round(s, 1)      # ties between positives and negatives
    ref = skm.roc_auc_score(y, s, sample_weight=w)
    assert M.roc_auc(y, s, sample_weight=w) == pytest.approx(ref, abs=1e-12)
    assert M.roc_auc(y, P, sample_weight=w) == pytest.approx(skm.roc_auc_score(y, P[:, 1], sample_weight=w),
                                                             abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_roc_auc_one_vs_rest(seed, average):
    y, pred, S, P, w, C = _case(seed, n_classes=3 + seed % 4)
    y[:C] = np.arange(C)        # every class present
    ref = skm.roc_auc_score(y, P, multi_class="ovr", average=average, sample_weight=w)
    assert M.roc_auc(y, P, average, w) == pytest.approx(ref, abs=1e-12)


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
@pytest.mark.parametrize("seed", SEEDS)
def test_log_loss(seed):
    y, pred, S, P, w, C = _case(seed)
    P[0, y[0]] = 0.0            # clipped to eps, as scikit-learn does
    P[1] = np.eye(C)[y[1]]
    ref = skm.log_loss(y, P, labels=np.arange(C), sample_weight=w)
    assert M.log_loss(y, P, w) == pytest.approx(ref, abs=1e-12)
    y2, _, _, P2, w2, _ = _case(seed, n_classes=2)
    assert M.log_loss(y2, P2[:, 1], w2) == pytest.approx(skm.log_loss(y2, P2[:, 1], sample_weight=w2), abs=1e-12)
    P32 = P2.astype(np.float32)   # summed in float64 (scikit-learn sums float32 in float32)
    eps32 = np.finfo(np.float32).eps      # but clipped to float32's epsilon
    ref = skm.log_loss(y2, np.clip(P32.astype(np.float64), eps32, 1 - eps32))
    assert M.log_loss(y2, P32) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("outputs", [None, 1, 3])
def test_regression_metrics(seed, outputs):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    shape = (n,) if outputs is None else (n, outputs)
    y = rng.normal(size=shape)
    yhat = y + rng.normal(scale=0.5, size=shape)
    if seed % 5 == 0 and outputs == 3:
        y[:, 1] = 2.0           # a constant output: R² 0 (predicted wrong), or 1 (exactly)
        yhat[:, 2] = y[:, 2]
        if seed % 10 == 0:
            yhat[:, 1] = 2.0
    w = rng.random(n) if seed % 2 else None
    for ours, theirs in ((M.mse, skm.mean_squared_error), (M.mae, skm.mean_absolute_error), (M.r2, skm.r2_score)):
        assert ours(y, yhat, w) == pytest.approx(theirs(y, yhat, sample_weight=w), abs=1e-12), ours.__name__


@pytest.mark.parametrize("call, match", [
    (lambda: M.accuracy([0, 1], [0, 1, 1]), "expected 2 rows"),
    (lambda: M.accuracy([[0, 1]], [[0, 1]]), "1-d array of class labels"),
    (lambda: M.accuracy([0, -1], [0, 1]), "labels >= 0"),
    (lambda: M.accuracy([0.5, 1], [0, 1]), "integer class labels"),
    (lambda: M.accuracy([], []), "at least one sample"),
    (lambda: M.precision([0, 2, 1], [0, 1, 1]), "average='binary' needs labels 0 and 1"),
    (lambda: M.f1([0, 1], [0, 1], average="samples"), "average: expected one of"),
    (lambda: M.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]), "single class"),
    (lambda: M.roc_auc([0, 1, 1], np.full((3, 3), 1 / 3)), "no samples of class \\[2\\]"),
    (lambda: M.roc_auc([0, 1], [[0.1], [0.2], [0.3]]), "expected 2 rows"),
    (lambda: M.roc_auc([0, 1], [0.1, np.nan]), "NaN"),
    (lambda: M.log_loss([0, 1], [[0.5, 0.5], [1.5, -0.5]]), "probabilities in \\[0, 1\\]"),
    (lambda: M.log_loss([0, 3], [[0.5, 0.5], [0.5, 0.5]]), "labels must lie in \\[0, 1\\]"),
    (lambda: M.top_k_accuracy([0, 1], [[0.5, 0.5], [0.5, 0.5]], k=0), "k: expected an int >= 1"),
    (lambda: M.mse([1.0, 2.0], [1.0, 2.0, 3.0]), "shape of y_true"),
    (lambda: M.r2([1.0], [1.0]), "at least 2 samples"),
    (lambda: M.mae([1.0, 2.0], [1.0, 2.0], sample_weight=[1.0, -1.0]), "weights >= 0"),
    (lambda: M.mae([1.0, 2.0], [1.0, 2.0], sample_weight=[1.0]), "expected 2 weights"),
    (lambda: M.confusion_matrix([0, 3], [0, 1], 2), "n_classes"),
])
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_vectorised_on_a_million_samples():
    """No loop over samples: a million rows take well under a second."""
    import time
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 10**6), rng.random(10**6)
    t = time.perf_counter()
    M.roc_auc(y, s), M.f1(y, (s > 0.5).astype(int)), M.log_loss(y, s)
    assert time.perf_counter() - t < 5.0


# ---- the Trainer ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3, size=(3, 4))
    y = rng.integers(0, 3, 300)
    X = (centers[y] + rng.normal(size=(300, 4))).astype(np.float32)
    return X, y


def test_trainer_logs_prints_and_evaluates_metrics(blobs, capsys):
    X, y = blobs
    model = pn.Sequential.mlp(4, [16], 3, seed=0)

    def balanced(y_true, proba):
        return skm.balanced_accuracy_score(y_true, proba.argmax(axis=1))

    t = pn.Trainer(model, epochs=3, seed=0, verbose=2,
                   metrics=["accuracy", "f1", "roc_auc", "log_loss", "top2_accuracy", balanced])
    h = t.fit(X[:200], y[:200], validation_data=(X[200:], y[200:]))
    printed = capsys.readouterr().out.splitlines()
    for key in ("val_f1", "val_roc_auc", "val_log_loss", "val_top2_accuracy", "val_balanced"):
        assert len(h[key]) == 3, key
        assert all(key in line for line in printed), (key, printed)
    P = model.predict_proba(X[200:])
    assert h["val_roc_auc"][-1] == pytest.approx(skm.roc_auc_score(y[200:], P, multi_class="ovr"), abs=1e-6)
    assert h["val_f1"][-1] == pytest.approx(skm.f1_score(y[200:], P.argmax(1), average="macro"), abs=1e-12)
    assert h["val_log_loss"][-1] == pytest.approx(h["val_loss"][-1], rel=1e-4)
    ev = t.evaluate(X[200:], y[200:])
    assert ev["roc_auc"] == pytest.approx(h["val_roc_auc"][-1], abs=1e-12)
    assert set(ev) == {"loss", "accuracy", "f1", "roc_auc", "log_loss", "top2_accuracy", "balanced"}


def test_single_logit_metrics_use_the_models_probabilities(blobs):
    X, y = blobs
    yb = (y == 0).astype(np.float32)
    model = pn.Sequential.mlp(4, [8], 1, seed=0)
    t = pn.Trainer(model, loss="binary_cross_entropy", epochs=2, seed=0, verbose=0,
                   metrics=["precision", "recall", "roc_auc"])
    ev = t.evaluate(X, yb)
    p = model.predict_proba(X)[:, 1]
    assert ev["roc_auc"] == pytest.approx(skm.roc_auc_score(yb, p), abs=1e-6)
    assert ev["precision"] == skm.precision_score(yb, model.predict_classes(X), zero_division=0)


def test_regressor_gets_r2_and_mae_and_refuses_class_metrics():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5])).astype(np.float32)
    model = pn.Sequential.mlp(3, [16], 1, seed=0)
    t = pn.Trainer(model, loss="mse", epochs=5, seed=0, verbose=0)
    h = t.fit(X, y, validation_split=0.25)
    assert "val_r2" in h and "val_mae" in h
    ev = t.evaluate(X, y)
    Z = model.predict(X)[:, 0]
    assert ev["r2"] == pytest.approx(skm.r2_score(y, Z), abs=1e-6)
    assert ev["mae"] == pytest.approx(skm.mean_absolute_error(y, Z), abs=1e-6)
    with pytest.raises(ValueError, match="needs outputs that are classes"):
        pn.Trainer(pn.Sequential.mlp(3, [4], 1, seed=0), loss="mse", metrics=["roc_auc"])
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        pn.Trainer(pn.Sequential.mlp(3, [4], 2, seed=0), metrics=["auc"])
    with pytest.raises(ValueError, match="compares outputs with real targets"):
        pn.Trainer(pn.Sequential.mlp(3, [4], 2, seed=0), metrics=["r2"])


def test_early_stopping_auto_mode_knows_higher_is_better():
    for name in ("val_f1", "val_roc_auc", "val_r2", "precision", "val_top5_accuracy", "val_auc"):
        assert pn.EarlyStopping(monitor=name).sign == -1.0, name
    for name in ("val_loss", "val_log_loss", "val_mse", "mae"):
        assert pn.EarlyStopping(monitor=name).sign == 1.0, name


def test_callback_logs_are_kept_printed_and_written(blobs, tmp_path, capsys):
    """A callback's own logs["val_auc"] reaches History, the printed line and the CSV file;
    EarlyStopping and ModelCheckpoint can monitor the metrics."""
    X, y = blobs
    yb = (y == 0).astype(np.float32)
    model = pn.Sequential.mlp(4, [8], 1, seed=0)

    def add_auc(epoch, logs):
        logs["val_auc"] = M.roc_auc(yb[200:], model.predict(X[200:])[:, 0])

    path = tmp_path / "log.csv"
    t = pn.Trainer(model, loss="binary_cross_entropy", epochs=4, seed=0, verbose=2, metrics=["f1"])
    h = t.fit(X[:200], yb[:200], validation_data=(X[200:], yb[200:]),
              callbacks=[pn.LambdaCallback(on_epoch_end=add_auc), pn.EarlyStopping(monitor="val_auc", patience=9),
                         pn.ModelCheckpoint(tmp_path / "best.st", monitor="val_f1"), pn.CSVLogger(path)])
    assert len(h["val_auc"]) == h.epochs == 4
    printed = capsys.readouterr().out.splitlines()
    assert all("val_auc" in line for line in printed)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["epoch", *h.keys()]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert [float(r[rows[0].index("val_auc")]) for r in rows[1:]] == h["val_auc"]
    t.fit(X[:200], yb[:200], validation_data=(X[200:], yb[200:]), epochs=1,
          callbacks=[pn.LambdaCallback(on_epoch_end=add_auc), pn.CSVLogger(path, append=True)])
    rows = list(csv.reader(path.open()))
    assert len(rows) == 6 and rows[-1][0] == "5"


def test_csv_logger_refuses_a_new_column(blobs, tmp_path):
    X, y = blobs
    extra = pn.LambdaCallback(on_epoch_end=lambda e, logs: logs.update({"late": 1.0}) if e == 1 else None)
    t = pn.Trainer(pn.Sequential.mlp(4, [4], 3, seed=0), epochs=2, seed=0, verbose=0)
    with pytest.raises(ValueError, match="'late'"):
        t.fit(X, y, callbacks=[extra, pn.CSVLogger(tmp_path / "log.csv")])


def _train_metrics_of_frozen_model(X, y, **trainer_args):
    """A Trainer whose layers are all frozen: its training outputs during an epoch are the
    model's outputs (no step changes a weight), so the training metrics have a reference."""
    model = pn.Sequential.mlp(4, [16], 3, seed=1)
    for layer in model.layers:
        layer.trainable = False
    return model, pn.Trainer(model, seed=0, **trainer_args)


def test_training_metrics_are_of_the_epochs_outputs(blobs, capsys):
    X, y = blobs
    model, t = _train_metrics_of_frozen_model(X, y, epochs=2, batch_size=32, verbose=2,
                                              metrics=["f1", "roc_auc", "log_loss", "top2_accuracy", "precision"])
    stop = pn.EarlyStopping(monitor="f1", patience=5)       # a training metric as a monitor
    h = t.fit(X[:200], y[:200], validation_data=(X[200:], y[200:]), callbacks=[stop])
    P = model.predict_proba(X[:200])                        # the outputs every batch saw
    assert h["roc_auc"] == pytest.approx([skm.roc_auc_score(y[:200], P, multi_class="ovr")] * 2, abs=1e-6)
    assert h["f1"] == pytest.approx([skm.f1_score(y[:200], P.argmax(1), average="macro")] * 2, abs=1e-12)
    assert h["precision"][0] == pytest.approx(skm.precision_score(y[:200], P.argmax(1), average="macro"),
                                              abs=1e-12)
    assert h["log_loss"][0] == pytest.approx(skm.log_loss(y[:200], P, labels=[0, 1, 2]), rel=1e-5)
    assert h["log_loss"][0] == pytest.approx(h["loss"][0], rel=1e-4)   # the same cross-entropy
    assert h["top2_accuracy"][0] == pytest.approx(skm.top_k_accuracy_score(y[:200], P, k=2), abs=1e-12)
    Pv = model.predict_proba(X[200:])
    assert h["val_roc_auc"][0] == pytest.approx(skm.roc_auc_score(y[200:], Pv, multi_class="ovr"), abs=1e-6)
    lines = capsys.readouterr().out.splitlines()
    assert all(" roc_auc " in line and " val_roc_auc " in line for line in lines), lines
    assert list(h)[:7] == ["loss", "accuracy", "f1", "roc_auc", "log_loss", "top2_accuracy", "precision"]


def test_training_metrics_of_a_regressor_and_an_iterable_of_batches():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(90, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5])).astype(np.float32)[:, None]
    model = pn.Sequential.mlp(3, [8], 1, seed=0)
    for layer in model.layers:
        layer.trainable = False
    t = pn.Trainer(model, loss="mse", epochs=1, seed=0, verbose=0)          # default: r2, mae
    batches = [(X[i:i + 20], y[i:i + 20]) for i in range(0, 90, 20)]
    h = t.fit(batches)
    Z = model.predict(X)
    assert h["r2"][0] == pytest.approx(skm.r2_score(y, Z), abs=1e-6)
    assert h["mae"][0] == pytest.approx(skm.mean_absolute_error(y, Z), abs=1e-6)
    assert h["loss"][0] == pytest.approx(np.mean((Z - y) ** 2), rel=1e-5)


def test_training_metrics_see_the_outputs_under_changing_weights(blobs):
    """One full batch per epoch: the epoch's training outputs are those of the weights it starts with."""
    X, y = blobs
    model = pn.Sequential.mlp(4, [16], 3, seed=2)
    t = pn.Trainer(model, epochs=1, batch_size=300, seed=0, verbose=0, metrics=["roc_auc"])
    for _ in range(3):
        P = model.predict_proba(X)
        h = t.fit(X, y)
        assert h["roc_auc"][-1] == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovr"), abs=1e-6)


def test_checkpoints_keep_the_metrics(blobs, tmp_path):
    X, y = blobs

    @M.register_metric(name="rest17_balanced")
    def balanced(y_true, y_pred):
        return skm.balanced_accuracy_score(y_true, y_pred)

    t = pn.Trainer(pn.Sequential.mlp(4, [8], 3, seed=0), epochs=2, seed=0, verbose=0,
                   metrics=["f1", balanced, "roc_auc"])
    t.fit(X, y, epochs=1)
    t.save_checkpoint(tmp_path / "c.ckpt")
    resumed = pn.Trainer.from_checkpoint(tmp_path / "c.ckpt", verbose=0)
    assert list(resumed._metrics) == ["f1", "rest17_balanced", "roc_auc"] == list(t._metrics)
    a, b = t.fit(X, y, epochs=2), resumed.fit(X, y, epochs=2)
    for key in ("f1", "rest17_balanced", "roc_auc", "loss"):
        assert a[key] == b[key] and len(a[key]) == 3, key
    P = t.model.predict_proba(X)
    assert t.evaluate(X, y)["rest17_balanced"] == skm.balanced_accuracy_score(y, P.argmax(1))
    # an unregistered function: refused when saving, with how to register it
    def mine(y_true, proba):
        return 0.0
    t2 = pn.Trainer(pn.Sequential.mlp(4, [8], 3, seed=0), verbose=0, metrics=[mine])
    with pytest.raises(ValueError, match="register_metric"):
        t2.save_checkpoint(tmp_path / "d.ckpt")
    assert not (tmp_path / "d.ckpt").exists()
    # defaults stay defaults: a regressor resumes with r2 and mae
    r = pn.Trainer(pn.Sequential.mlp(4, [8], 1, seed=0), loss="mse", verbose=0)
    r.save_checkpoint(tmp_path / "r.ckpt")
    assert list(pn.Trainer.from_checkpoint(tmp_path / "r.ckpt", verbose=0)._metrics) == ["r2", "mae"]
