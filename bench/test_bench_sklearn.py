"""pytest-benchmark: fitting pyneuro.sklearn.MLPClassifier against scikit-learn's own
MLPClassifier on the digits (same split, same settings): `python -m pytest bench/test_bench_sklearn.py`."""
import warnings

import numpy as np
import pytest

import pyneuro as pn

sklearn = pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def split():
    from sklearn.model_selection import train_test_split
    X, y = pn.datasets.load_digits(dtype="float64")
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


@pytest.mark.parametrize("impl", ["pyneuro", "sklearn"])
def test_fit_digits(benchmark, impl, split):
    from sklearn.neural_network import MLPClassifier as SkMLP
    from pyneuro.sklearn import MLPClassifier
    X_train, X_test, y_train, y_test = split
    cls = MLPClassifier if impl == "pyneuro" else SkMLP
    params = dict(hidden_layer_sizes=(100,), max_iter=60, random_state=0, tol=0.0, n_iter_no_change=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = benchmark(lambda: cls(**params).fit(X_train, y_train))
    benchmark.extra_info["accuracy"] = float(np.mean(est.predict(X_test) == y_test))
