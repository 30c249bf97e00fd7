"""scikit-learn estimators, ONNX export, threadpoolctl and typing."""
import os
import subprocess
import sys

import numpy as np
import pytest

import pyneuro as pn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install '.[test]')")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from pyneuro.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


# ---- scikit-learn ----------------------------------------------------------------------------
def _expected_failed_checks(estimator):
    """scikit-learn runs its own MLP's weight-equivalence check with solver='lbfgs' (full
    batch, deterministic); pyneuro trains by mini-batch SGD/Adam, where rows repeated k times
    and a weight k give different batches, so the two fits agree only approximately
    (test_sample_weight_integer_is_repeated_rows checks that)."""
    return {"check_sample_weight_equivalence_on_dense_data":
            "mini-batch training: integer weights equal repeated rows only approximately"}


@parametrize_with_checks([MLPClassifier(max_iter=50, random_state=0), MLPRegressor(max_iter=50, random_state=0)],
                         expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def digits_split():
    from sklearn.model_selection import train_test_split
    X, y = pn.datasets.load_digits(dtype="float64")
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def test_pipeline_grid_search_and_cross_validation():
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X_train, X_test, y_train, y_test = digits_split()
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=100, random_state=0))
    scores = cross_val_score(pipe, X_train, y_train, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.93
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2], "mlpclassifier__solver": ["adam", "sgd"]},
                        cv=2, n_jobs=2)
    grid.fit(X_train, y_train)
    assert grid.best_estimator_.score(X_test, y_test) > 0.9


def test_string_labels_partial_fit_and_fitted_attributes():
    X_train, X_test, y_train, y_test = digits_split()
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = MLPClassifier(hidden_layer_sizes=(64,), random_state=0, max_iter=40).fit(X_train, names[y_train])
    assert list(clf.classes_) == sorted(names) and clf.n_features_in_ == 64
    assert clf.predict(X_test).dtype.kind == "U" and clf.score(X_test, names[y_test]) > 0.93
    P = clf.predict_proba(X_test)
    assert P.shape == (len(X_test), 10) and np.allclose(P.sum(axis=1), 1, atol=1e-5)
    assert len(clf.loss_curve_) == clf.n_iter_ <= 40 and clf.best_loss_ == min(clf.loss_curve_)
    inc = MLPClassifier(hidden_layer_sizes=(64,), random_state=0, batch_size=32)
    for epoch in range(10):
        for part in np.array_split(np.arange(len(X_train)), 3):
            inc.partial_fit(X_train[part], names[y_train[part]], classes=names)
    assert inc.n_iter_ == 30 and inc.score(X_test, names[y_test]) > 0.9
    with pytest.raises(ValueError, match="unseen labels"):
        inc.partial_fit(X_train[:5], np.array(["ten"] * 5))
    with pytest.raises(ValueError, match="classes="):
        MLPClassifier().partial_fit(X_train, y_train)


def test_warm_start_continues_and_early_stopping_stops():
    X_train, _, y_train, _ = digits_split()
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, warm_start=True, random_state=0)
    clf.fit(X_train, y_train)
    first = clf.loss_curve_[-1]
    clf.fit(X_train, y_train)
    assert clf.n_iter_ == 10 and clf.loss_curve_[-1] < first
    assert clf.t_ == 10 * len(X_train)                       # training samples seen
    W = clf.coefs_[0].copy()
    clf.set_params(learning_rate_init=1e-12).fit(X_train, y_train)
    assert np.abs(clf.coefs_[0] - W).max() < 1e-6             # a warm fit takes the new learning rate
    es = MLPClassifier(hidden_layer_sizes=(32,), max_iter=500, early_stopping=True, n_iter_no_change=3,
                       random_state=0).fit(X_train, y_train)
    assert es.n_iter_ < 500 and len(es.validation_scores_) == es.n_iter_
    assert 0.8 < es.best_validation_score_ == max(es.validation_scores_) <= 1   # accuracies, as scikit-learn's
    assert es.t_ == es.n_iter_ * (len(X_train) - round(0.1 * len(X_train)))


def test_random_state_may_be_a_RandomState():
    X_train, _, y_train, _ = digits_split()
    a, b = (MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=np.random.RandomState(5))
            .fit(X_train, y_train) for _ in range(2))
    assert np.array_equal(a.coefs_[0], b.coefs_[0])
    with pytest.raises(ValueError):
        MLPClassifier(random_state="five").fit(X_train, y_train)


def test_regressor_matches_the_target():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (600, 3))
    Y = np.c_[np.sin(X[:, 0]) + X[:, 1] ** 2 / 4, X[:, 2] * 0.5]
    reg = MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=300, learning_rate_init=3e-3, random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (600, 2) and reg.score(X, Y) > 0.97
    assert MLPRegressor(max_iter=20, random_state=0).fit(X, Y[:, 0]).predict(X).shape == (600,)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # its reference run stops at max_iter
def test_digits_accuracy_matches_scikit_learn():
    """Same split, same settings: within one point of scikit-learn's MLPClassifier (the speed
    comparison is a benchmark: python -m pytest bench/test_bench_sklearn.py)."""
    from sklearn.neural_network import MLPClassifier as SkMLP
    X_train, X_test, y_train, y_test = digits_split()
    params = dict(hidden_layer_sizes=(100,), max_iter=60, random_state=0, tol=0.0, n_iter_no_change=1000)
    ours = MLPClassifier(**params).fit(X_train, y_train).score(X_test, y_test)
    theirs = SkMLP(**params).fit(X_train, y_train).score(X_test, y_test)
    assert ours >= theirs - 0.01, (ours, theirs)


# ---- ONNX ------------------------------------------------------------------------------------
def every_layer(dtype, gelu=True):
    layers = [pn.Dense(6, 12, "gelu" if gelu else "relu"), pn.Dropout(0.3), pn.Dense(12, 10), pn.ReLU(),
              pn.LeakyReLU(0.2), pn.ELU(0.7), pn.Dense(10, 9, "elu", alpha=0.5), pn.Sigmoid(), pn.Tanh(),
              pn.Identity(), pn.Dense(9, 9, "sigmoid"), pn.Dense(9, 9, "tanh"), pn.Dense(9, 4, "leaky_relu", alpha=0.1),
              pn.Softmax()]
    if gelu:
        layers.insert(10, pn.GELU())
    return pn.Sequential(layers, seed=1, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_export_runs_in_onnxruntime(tmp_path, dtype):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed")
    # onnxruntime's CPU kernels have no float64 Erf, Elu or LeakyRelu: the float64 model keeps
    # to Relu, Sigmoid, Tanh and Softmax (its every-layer graph still passes onnx.checker)
    if dtype == "float32":
        model = every_layer(dtype)
    else:
        every_layer(dtype).to_onnx(tmp_path / "all.onnx")
        model = pn.Sequential([pn.Dense(6, 12, "relu"), pn.Dropout(0.3), pn.Dense(12, 10), pn.Sigmoid(),
                               pn.Dense(10, 9, "tanh"), pn.Identity(), pn.Dense(9, 4), pn.Softmax()], seed=1, dtype=dtype)
    model.to_onnx(tmp_path / "m.onnx")
    X = np.random.default_rng(0).standard_normal((33, 6)).astype(dtype)
    out = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]
    assert out.dtype == np.dtype(dtype) and out.shape == (33, 4)
    np.testing.assert_allclose(out, model.predict(X), rtol=0, atol=1e-5 if dtype == "float32" else 1e-12)


def test_export_command(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    model = pn.Sequential([pn.Dense(64, 32, "gelu"), pn.Dense(32, 10)], seed=0)
    model.save(tmp_path / "m.st")
    proc = subprocess.run([sys.executable, "-m", "pyneuro.cli", "export", str(tmp_path / "m.st"), "--onnx",
                           str(tmp_path / "m.onnx")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    X, _ = pn.datasets.load_digits()
    out = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]
    np.testing.assert_allclose(out, model.predict(X), atol=1e-5)


# ---- threadpoolctl ---------------------------------------------------------------------------
THREADPOOL = """
import numpy as np, pyneuro as pn
from threadpoolctl import threadpool_info, threadpool_limits
if not pn.openmp_enabled():
    print("serial"); raise SystemExit
libs = [i for i in threadpool_info() if i["user_api"] == "openmp"]
A = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
before = pn.get_num_threads()
blas_before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
with threadpool_limits(1, user_api="openmp"):
    inside = pn.get_num_threads()
    one = pn._core.gemm_into(A, A, np.empty_like(A))
after = pn.get_num_threads()
two = pn._core.gemm_into(A, A, np.empty_like(A))
blas_after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(len(libs) >= 1, before, inside, after, np.array_equal(one, two), blas_before == blas_after)
"""


def test_threadpoolctl_sees_and_limits_the_kernels():
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    proc = subprocess.run([sys.executable, "-c", THREADPOOL], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.strip() == "serial":
        pytest.skip("built without OpenMP")
    assert proc.stdout.split() == ["True", "2", "1", "2", "True", "True"]


# ---- typing ----------------------------------------------------------------------------------
def test_mypy_passes():
    pytest.importorskip("mypy", reason="mypy is not installed")
    proc = subprocess.run([sys.executable, "-m", "mypy", "pyneuro"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]


# ---- documentation ---------------------------------------------------------------------------
def _public_objects():
    import inspect
    import pyneuro.datasets
    import pyneuro.idx
    import pyneuro.metrics
    import pyneuro.plots
    import pyneuro.serve
    import pyneuro.sklearn
    out = [(f"pyneuro.{n}", getattr(pn, n)) for n in pn.__all__ if not inspect.ismodule(getattr(pn, n))]
    for mod in (pyneuro.datasets, pyneuro.idx, pyneuro.metrics, pyneuro.plots, pyneuro.serve):
        out += [(f"{mod.__name__}.{n}", o) for n, o in vars(mod).items()
                if not n.startswith("_") and inspect.isfunction(o) and o.__module__ == mod.__name__]
    out += [("pyneuro.sklearn.MLPClassifier", pyneuro.sklearn.MLPClassifier),
            ("pyneuro.sklearn.MLPRegressor", pyneuro.sklearn.MLPRegressor)]
    return out


METHODS = ["Sequential.predict", "Sequential.predict_proba", "Sequential.predict_classes", "Sequential.save",
           "Sequential.to_onnx", "Sequential.set_weights", "Sequential.summary", "Trainer.fit", "Trainer.evaluate",
           "Trainer.save_checkpoint", "Trainer.from_checkpoint"]


def _takes_parameters(fn):
    import inspect
    try:
        params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]
    except (TypeError, ValueError):
        return False
    return bool(params)


@pytest.mark.parametrize("name, obj", _public_objects(), ids=[n for n, _ in _public_objects()])
def test_public_api_is_documented(name, obj):
    """Every public class and function has a docstring; those that take arguments list them
    in a NumPy-style Parameters section."""
    import inspect
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    own_init = inspect.isclass(obj) and "__init__" in vars(obj)
    if (own_init and _takes_parameters(obj.__init__)) or (not inspect.isclass(obj) and _takes_parameters(obj)):
        assert "Parameters\n----------" in doc, f"{name}: no NumPy-style Parameters section"


@pytest.mark.parametrize("name", METHODS)
def test_main_methods_are_documented(name):
    import inspect
    cls, method = name.split(".")
    doc = inspect.getdoc(getattr(getattr(pn, cls), method)) or ""
    assert "Parameters\n----------" in doc, name


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_estimators_read_a_memmap_batch_by_batch(tmp_path, dtype):
    """fit and predict pass X through: a uint8 or float64 memmap is converted batch by batch
    (tracemalloc sees NumPy's allocations: none as large as a converted copy of X)."""
    import tracemalloc
    rng = np.random.default_rng(0)
    n, d = 20000, 100
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=dtype, shape=(n, d))
    X[:] = rng.integers(0, 4, (n, d)).astype(dtype)
    y = (np.asarray(X[:, :3], np.float64).sum(axis=1) > 4.5).astype(np.int64)
    X.flush()
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    float32_copy = n * d * 4
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, batch_size=256, random_state=0)
    tracemalloc.start()
    try:
        clf.fit(X, y)
        proba = clf.predict_proba(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < float32_copy / 2, (peak, float32_copy)
    reference = clf.model_.predict_proba(np.asarray(X, np.float32))
    np.testing.assert_allclose(proba, reference, rtol=1e-6, atol=1e-7)
