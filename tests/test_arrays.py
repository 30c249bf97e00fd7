"""gather_rows, dropout_mask, multiply, argmax_rows, all_finite, rows_as_given (csrc/gather.pxi,
dropout.pxi, elementwise.pxi, reduce.pxi) against NumPy.
All four are exact (copies, one comparison, one rounded product), so equality is exact."""
import numpy as np
import pytest

from pyneuro import _core
from pyneuro._validation import check_features
from reference import DTYPES


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,n,k", [(1, 1, 1), (50, 13, 50), (50, 13, 200), (10, 1, 0), (7, 0, 3)])
def test_gather_rows(rng, N, n, k, dtype):
    X = rng.standard_normal((N, n)).astype(dtype)
    idx = rng.integers(0, N, k)           # repeats included when k > N
    out = np.full((k, n), np.nan, dtype)
    assert _core.gather_rows(X, idx, out) is out
    assert np.array_equal(out, X[idx])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask(rng, p, dtype):
    U = rng.uniform(0, 1, 10001).astype(dtype)
    U[:3] = [dtype(p), 0, np.nextafter(dtype(1), dtype(0))]  # U = p is kept
    expected = np.where(U >= dtype(p), dtype(1) / (dtype(1) - dtype(p)), dtype(0))
    _core.dropout_mask(U, p)
    assert np.array_equal(U, expected)
    if p == 0:
        assert np.all(U == 1)
    else:
        assert abs(np.mean(U) - 1) < 0.05  # inverted dropout keeps the mean


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_rate_out_of_range(p):
    U = np.zeros(4)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        _core.dropout_mask(U, p)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 17, 10001])
def test_multiply(rng, n, dtype):
    A, B = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    out = np.full(n, np.nan, dtype)
    assert _core.multiply(A, B, out) is out
    assert np.array_equal(out, A * B)
    expected = A * B
    _core.multiply(A, B, A)  # out may be an input
    assert np.array_equal(A, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C", [(1, 1), (33, 10), (1000, 3), (0, 4)])
def test_argmax_rows(rng, B, C, dtype):
    Z = rng.integers(-3, 3, (B, C)).astype(dtype)  # many ties: the first one wins
    out = np.full(B, -1, np.int64)
    assert _core.argmax_rows(Z, out) is out
    assert np.array_equal(out, np.argmax(Z, axis=1))


def test_argmax_rows_needs_columns():
    with pytest.raises(ValueError, match="no columns"):
        _core.argmax_rows(np.empty((3, 0)), np.empty(3, np.int64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (4095,), (4097,), (3, 5000), (2, 3, 4)])
def test_all_finite_matches_numpy(rng, shape, dtype):
    a = rng.standard_normal(shape).astype(dtype)
    assert _core.all_finite(a) is True
    if a.size:
        info = np.finfo(dtype)
        for bad, good in [(np.nan, info.max), (np.inf, -info.max), (-np.inf, info.tiny / 2)]:
            flat = a.reshape(-1)
            k = int(rng.integers(a.size))
            flat[k] = good
            assert _core.all_finite(a) is True
            flat[k] = bad
            assert _core.all_finite(a) is False
            flat[k] = 0


@pytest.mark.parametrize("bad", [np.zeros(3, np.int64), np.zeros((4, 4), np.float32)[:, ::2],
                                 np.zeros(3, ">f8"), [1.0, 2.0]])
def test_all_finite_refuses_what_it_cannot_read(bad):
    with pytest.raises(TypeError, match="a: expected"):
        _core.all_finite(bad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_as_given_only_where_check_features_has_nothing_to_do(tmp_path, dtype):
    """rows_as_given (check_features' one-call fast path) says True for a plain C-contiguous
    2-d float32/64 ndarray with rows, the width asked (int or 1-tuple) and finite values (or
    non-finite allowed); False for every other case, which check_features then converts or
    refuses by name."""
    X = np.ones((3, 4), dtype)
    assert _core.rows_as_given(X, 4, False) is True
    assert _core.rows_as_given(X, (4,), False) is True
    memmap = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=dtype, shape=(3, 4))
    nan = X.copy()
    nan[2, 3] = np.nan
    assert _core.rows_as_given(nan, 4, True) is True
    for other, width in [(nan, 4), (X, 5), (X, (2, 2)), (X, np.int64(4)), (X, None), (X, True),
                         (X.astype(np.float16), 4), (X.astype(np.int32), 4),
                         (X.astype(X.dtype.newbyteorder()), 4), (np.asfortranarray(np.ones((3, 4), dtype)), 4),
                         (np.ones((6, 4), dtype)[::2], 4), (X[0], 4), (X[None], 4), (X[:0], 4),
                         (memmap, 4), (X.tolist(), 4)]:
        assert _core.rows_as_given(other, width, False) is False, (other, width)
    assert type(check_features(memmap, np.dtype(dtype), 4)) is np.ndarray     # not the subclass
    assert check_features(X, np.dtype(dtype), (4,)) is X
    with pytest.raises(ValueError, match="contains NaN or infinity"):
        check_features(nan, np.dtype(dtype), 4)
