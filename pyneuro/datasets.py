"""Data sets and splitting.

load_digits(): the 1,797 8×8 handwritten digits that ship inside the package
(UCI "Optical Recognition of Handwritten Digits", E. Alpaydin and C. Kaynak,
1998, CC BY 4.0; see pyneuro/data/NOTICE.md).
load_mnist(data_dir): the 70,000 28×28 MNIST digits from the four canonical IDX
files; load_idx(data_dir) reads any data set stored in that layout (Fashion-MNIST,
KMNIST, ...). download_mnist(data_dir) fetches the files and checks their SHA-256.
data_dir defaults to $PYNEURO_DATA, then to a per-user cache folder.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from importlib import resources

import numpy as np

from ._validation import as_generator, check_float
from .idx import read_idx

# name stem -> SHA-256 of the canonical gzip file (Y. LeCun, C. Cortes, C. J. C. Burges)
MNIST_FILES = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_MAX_DOWNLOAD = 64 * 2**20
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")


def default_data_dir() -> str:
    """$PYNEURO_DATA, else $XDG_CACHE_HOME/pyneuro (~/.cache/pyneuro)."""
    if os.environ.get("PYNEURO_DATA"):
        return os.environ["PYNEURO_DATA"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "pyneuro")


def _idx_file(data_dir: str, stem: str) -> str:
    """The file of `stem` in data_dir: gzip or raw, canonical or dotted name."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{data_dir}: no {stem}[.gz] (looked for {stem}.gz, {stem}, {dotted}.gz, "
                            f"{dotted}); pyneuro.datasets.download_mnist(data_dir) fetches MNIST")


def load_idx(data_dir=None, dtype="float32"):
    """Any data set stored in MNIST's layout: the four IDX files train-images-idx3-ubyte,
    train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        The folder (default: default_data_dir()).
    dtype : {'float32', 'float64'}

    Returns
    -------
    X_train, y_train, X_test, y_test
        uint8 images flattened and scaled to [0, 1] in `dtype`; labels as int64.
    """
    data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    out = []
    for part in ("train", "t10k"):
        img_path, lab_path = _idx_file(data_dir, f"{part}-images-idx3-ubyte"), _idx_file(data_dir, f"{part}-labels-idx1-ubyte")
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or images.dtype != np.uint8 or 0 in images.shape:
            raise ValueError(f"{img_path}: expected uint8 images (count, rows, cols), at least one of at least "
                             f"1x1 pixels, got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise ValueError(f"{lab_path}: expected uint8 labels (count,), got {labels.dtype} {labels.shape}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{lab_path}: {labels.shape[0]} labels for the {images.shape[0]} images of {img_path}")
        X = images.reshape(images.shape[0], -1).astype(dtype)
        X /= 255
        out += [X, labels.astype(np.int64)]
    return tuple(out)


def load_mnist(data_dir=None, dtype="float32"):
    """The MNIST digits: 60,000 training and 10,000 test images of 28×28 pixels.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder of the four canonical IDX files (default: default_data_dir()).
    dtype : {'float32', 'float64'}

    Returns
    -------
    X_train, y_train, X_test, y_test
        Pixels in [0, 1], 784 per image row by row; labels 0..9 as int64.
    """
    X_train, y_train, X_test, y_test = load_idx(data_dir, dtype)
    if X_train.shape != (60000, 784) or X_test.shape != (10000, 784) or max(y_train.max(), y_test.max()) > 9:
        raise ValueError(f"{data_dir or default_data_dir()}: these IDX files are not MNIST (train {X_train.shape}, "
                         f"test {X_test.shape}, labels up to {max(y_train.max(), y_test.max())}); "
                         "use load_idx for other data sets")
    return X_train, y_train, X_test, y_test


def sha256_file(path) -> str:
    """The SHA-256 of a file, as hex.

    Parameters
    ----------
    path : str or os.PathLike
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_mnist(data_dir=None, mirrors=MNIST_MIRRORS, fetch=None) -> str:
    """Fetch the four MNIST files, each checked against its published SHA-256 before it is
    kept; files already present and correct are not fetched again.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Where to put them (default: default_data_dir()).
    mirrors : sequence of str
        Base URLs tried in order.
    fetch : callable (url) -> bytes, optional
        Replaces the HTTP client (tests use it).

    Returns
    -------
    str
        data_dir.
    """
    from .io import atomic_write
    data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    os.makedirs(data_dir, exist_ok=True)
    if fetch is None:
        def fetch(url):
            from urllib.request import urlopen
            with urlopen(url, timeout=60) as r:
                data = r.read(_MAX_DOWNLOAD + 1)     # a mirror that sends without end is cut off
            if len(data) > _MAX_DOWNLOAD:
                raise OSError(f"{url}: more than {_MAX_DOWNLOAD} bytes (an MNIST file has about 10 MB)")
            return data
    for stem, digest in MNIST_FILES.items():
        path = os.path.join(data_dir, stem + ".gz")
        if os.path.isfile(path) and sha256_file(path) == digest:
            continue
        errors = []
        for mirror in mirrors:
            try:
                data = fetch(mirror + stem + ".gz")
            except OSError as e:
                errors.append(f"{mirror}: {e}")
                continue
            if hashlib.sha256(data).hexdigest() != digest:
                errors.append(f"{mirror}: SHA-256 mismatch (expected {digest})")
                continue
            atomic_write(path, data)
            break
        else:
            raise OSError(f"could not fetch a verified {stem}.gz: " + "; ".join(errors))
    return data_dir


def load_digits(dtype="float32") -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8×8 handwritten digits bundled with pyneuro (UCI, CC BY 4.0).

    Parameters
    ----------
    dtype : {'float32', 'float64'}

    Returns
    -------
    X : ndarray of shape (1797, 64)
        Pixels scaled from 0..16 to [0, 1].
    y : ndarray of int64, shape (1797,)
        Labels 0..9.
    """
    with resources.files("pyneuro").joinpath("data/digits.csv.gz").open("rb") as raw:
        with gzip.open(raw, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 65:
        raise ValueError(f"digits.csv.gz: expected rows of 65 integers, got shape {data.shape}")
    X = (data[:, :64] / 16.0).astype(dtype)
    y = np.ascontiguousarray(data[:, 64])
    return X, y


def train_test_split(X, y, test_size: float = 0.25, seed=None, stratify: bool = True):
    """Split rows into training and test parts, seeded.

    Parameters
    ----------
    X, y : array-like with the same number of rows
    test_size : float
        Fraction for the test part, in (0, 1).
    seed : int, Generator or None
    stratify : bool
        Each class contributes round(test_size · its count) rows to the test part.

    Returns
    -------
    X_train, X_test, y_train, y_test
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"train_test_split: X has {X.shape[0]} rows but y has {y.shape[0]}")
    n = X.shape[0]
    test_size = check_float(test_size, "test_size", 0.0, 1.0, low_open=True, high_open=True)
    rng = as_generator(seed)
    if stratify:
        parts = []
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            k = int(round(test_size * members.shape[0]))
            parts.append(rng.permutation(members)[:k])
        test = np.concatenate(parts)
    else:
        test = rng.permutation(n)[:int(round(test_size * n))]
    if test.shape[0] == 0 or test.shape[0] == n:
        raise ValueError(f"train_test_split: test_size {test_size} of {n} samples leaves an empty part")
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    train = rng.permutation(np.flatnonzero(~is_test))
    test = rng.permutation(test)
    return X[train], X[test], y[train], y[test]
