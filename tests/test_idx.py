"""IDX files and the MNIST loaders: good and broken files, the canonical MNIST files
in ../shared/data/mnist, download verification (never over the network)."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

import pyneuro as pn
from pyneuro.idx import parse_idx, read_idx, write_idx

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").is_file(),
                                 reason=f"MNIST not found at {MNIST} (../shared/data/mnist)")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path, dtype, name, rng):
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    write_idx(tmp_path / name, a)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    b = read_idx(tmp_path / name)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and np.array_equal(a, b)


def test_header_is_big_endian_as_specified():
    data = bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2]) + np.array([258, -3], ">i2").tobytes()
    assert parse_idx(data).tolist() == [[258, -3]]


GOOD = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))


@pytest.mark.parametrize("data, message", [
    (b"", "not an IDX file"),
    (b"PK\x03\x04rest", "not an IDX file"),
    (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]), "unknown IDX element type 0x42"),
    (bytes([0, 0, 8, 0]), "0 dimensions"),
    (GOOD[:9], "truncated IDX header"),
    (GOOD[:-1], "truncated: the header promises shape (2, 3)"),
    (GOOD + b"\0", "has trailing bytes"),
])
def test_broken_files_name_the_file_and_the_fault(tmp_path, data, message):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
        read_idx(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_damaged_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD)[:-6])
    with pytest.raises(ValueError, match="damaged or truncated gzip"):
        read_idx(path)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


def write_quartet(folder, rng, n_train=120, n_test=40, side=6, classes=4, gz=True):
    for part, n in (("train", n_train), ("t10k", n_test)):
        ext = ".gz" if gz else ""
        write_idx(folder / f"{part}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, side, side), dtype=np.uint8))
        write_idx(folder / f"{part}-labels-idx1-ubyte{ext}", rng.integers(0, classes, n).astype(np.uint8))


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_any_quartet(tmp_path, rng, gz):
    write_quartet(tmp_path, rng, gz=gz)
    X_train, y_train, X_test, y_test = pn.datasets.load_idx(tmp_path)
    assert X_train.shape == (120, 36) and X_test.shape == (40, 36) and X_train.dtype == np.float32
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert np.array_equal(X_train, raw.reshape(120, 36).astype(np.float32) / 255)
    assert y_train.dtype == np.int64 and y_test.max() < 4
    with pytest.raises(ValueError, match="not MNIST"):
        pn.datasets.load_mnist(tmp_path)


def test_quartet_with_mismatched_counts(tmp_path, rng):
    write_quartet(tmp_path, rng)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(39, np.uint8))
    with pytest.raises(ValueError, match="39 labels for the 40 images"):
        pn.datasets.load_idx(tmp_path)


def test_data_dir_defaults_to_the_environment(tmp_path, rng, monkeypatch):
    write_quartet(tmp_path, rng)
    monkeypatch.setenv("PYNEURO_DATA", str(tmp_path))
    assert pn.datasets.default_data_dir() == str(tmp_path)
    assert pn.datasets.load_idx()[0].shape == (120, 36)
    monkeypatch.delenv("PYNEURO_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert pn.datasets.default_data_dir() == str(tmp_path / "cache" / "pyneuro")
    with pytest.raises(FileNotFoundError, match="download_mnist"):
        pn.datasets.load_mnist()


@needs_mnist
def test_mnist_is_the_canonical_set():
    X_train, y_train, X_test, y_test = pn.datasets.load_mnist(MNIST)
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert X_train.min() == 0 and X_train.max() == 1
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(X_train.mean() * 255 - 33.3184) < 1e-3   # SOURCES.md
    for stem, digest in pn.datasets.MNIST_FILES.items():
        assert pn.datasets.sha256_file(MNIST / f"{stem}.gz") == digest


@needs_mnist
def test_download_verifies_every_file(tmp_path):
    served = {f"https://mirror/{stem}.gz": (MNIST / f"{stem}.gz").read_bytes() for stem in pn.datasets.MNIST_FILES}
    calls = []

    def fetch(url):
        calls.append(url)
        return served[url]
    pn.datasets.download_mnist(tmp_path, mirrors=["https://mirror/"], fetch=fetch)
    assert len(calls) == 4 and pn.datasets.load_mnist(tmp_path)[0].shape == (60000, 784)
    pn.datasets.download_mnist(tmp_path, mirrors=["https://mirror/"], fetch=fetch)
    assert len(calls) == 4                                  # verified files are not fetched again


def test_download_refuses_bytes_that_fail_the_checksum(tmp_path):
    def bad_mirror(url):
        return b"not mnist"

    def offline(url):
        raise OSError("network is unreachable")
    with pytest.raises(OSError, match="SHA-256 mismatch.*network is unreachable"):
        pn.datasets.download_mnist(tmp_path, mirrors=["https://a/", "https://b/"],
                                   fetch=lambda url: bad_mirror(url) if "//a/" in url else offline(url))
    assert os.listdir(tmp_path) == []                       # nothing unverified was kept
