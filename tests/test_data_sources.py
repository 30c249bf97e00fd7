"""Data of any real dtype, Datasets and iterables of batches (pyneuro/data_sources.py,
csrc/gather.pxi's converting gather), and the preprocessing layers Scale and Standardize."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyneuro as pn
from pyneuro import _core

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [np.float16, np.float32, np.float64, np.bool_, np.int8, np.int16, np.int32, np.int64,
           np.uint8, np.uint16, np.uint32, np.uint64]

rng0 = np.random.default_rng(0)
X8 = rng0.integers(0, 256, (203, 17)).astype(np.uint8)
Y8 = rng0.integers(0, 3, 203)


@pytest.mark.parametrize("out_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("source", SOURCES, ids=[np.dtype(t).name for t in SOURCES])
@pytest.mark.parametrize("threads", [1, 3])
def test_gather_converts_like_astype(source, out_dtype, threads):
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((37, 13)) * 1e3).astype(source) if source != np.bool_ else rng.random((37, 13)) > .5
    idx = rng.integers(0, 37, 29).astype(np.int64)
    out = np.empty((29, 13), out_dtype)
    pn.set_num_threads(threads)
    try:
        _core.gather_rows(X, idx, out)
    finally:
        pn.set_num_threads(None)
    np.testing.assert_array_equal(out, X.astype(out_dtype)[idx])
    with pytest.raises(ValueError, match="indices must lie"):
        _core.gather_rows(X, np.array([0, 37]), out[:2])


def test_gather_refuses_complex_and_objects():
    out = np.empty((1, 2), np.float32)
    for X in (np.zeros((2, 2), np.complex64), np.zeros((2, 2), object), np.zeros((2, 2), "U3")):
        with pytest.raises(TypeError, match="X: expected a real dtype"):
            _core.gather_rows(X, np.array([0]), out)


def scaled_model(first):
    return pn.Sequential([*first, pn.Dense(17, 12, "relu"), pn.Dense(12, 3)], seed=4)


def test_uint8_with_scale_trains_bitwise_as_its_float_version():
    """Scale computes x·float32(s): float data pre-scaled with that same product agrees bitwise."""
    a, b = scaled_model([pn.Scale(1 / 255)]), scaled_model([])
    pn.Trainer(a, batch_size=16, epochs=1, seed=2, verbose=0).fit(X8, Y8)
    pn.Trainer(b, batch_size=16, epochs=1, seed=2, verbose=0).fit(X8.astype(np.float32) * np.float32(1 / 255), Y8)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.predict(X8), b.predict(X8.astype(np.float32) * np.float32(1 / 255)))


def test_standardize_fit_save_load_and_onnx(tmp_path):
    s = pn.Standardize.fit(X8, batch_size=50)
    np.testing.assert_allclose(s._m, X8.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s._s, X8.std(axis=0), rtol=1e-12)
    model = scaled_model([s])
    pn.Trainer(model, batch_size=32, epochs=1, seed=0, verbose=0).fit(X8, Y8)
    model.save(tmp_path / "m.safetensors")
    back = pn.load(tmp_path / "m.safetensors")
    assert isinstance(back.layers[0], pn.Standardize)
    np.testing.assert_array_equal(back.predict(X8), model.predict(X8))
    want = (X8.astype(np.float32) - s._m.astype(np.float32)) / s._s.astype(np.float32)
    np.testing.assert_array_equal(model.layers[0].forward(X8.astype(np.float32)), want)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from pyneuro.onnx_export import to_onnx_bytes
    sess = ort.InferenceSession(to_onnx_bytes(model), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": X8.astype(np.float32)})[0]
    np.testing.assert_allclose(got, model.predict(X8), rtol=1e-5, atol=1e-5)


def test_preprocessing_layers_refuse_bad_values():
    with pytest.raises(ValueError, match="non-zero"):
        pn.Standardize(0.0, [1.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        pn.Scale(np.nan)
    with pytest.raises(ValueError, match="3 values for 17 input columns"):
        scaled_model([pn.Scale([1.0, 2.0, 3.0])])


class RowsDataset:
    """ds[idx] -> (X_b, y_b) for an index array."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, idx):
        return self.X[idx], self.y[idx]


def test_a_dataset_trains_bitwise_as_its_arrays():
    a, b = scaled_model([pn.Scale(1 / 255)]), scaled_model([pn.Scale(1 / 255)])
    ha = pn.Trainer(a, batch_size=16, epochs=2, seed=5, verbose=0).fit(X8, Y8, validation_split=0.2)
    hb = pn.Trainer(b, batch_size=16, epochs=2, seed=5, verbose=0).fit(RowsDataset(X8, Y8), validation_split=0.2)
    np.testing.assert_array_equal(a.params, b.params)
    assert ha["val_loss"] == hb["val_loss"]


def test_generators_and_lists_of_batches():
    batches = [(X8[s:s + 32], Y8[s:s + 32]) for s in range(0, len(X8), 32)]

    def forever():
        while True:
            yield from batches

    a, b = scaled_model([pn.Scale(1 / 255)]), scaled_model([pn.Scale(1 / 255)])
    trainer = pn.Trainer(a, epochs=2, seed=0, verbose=0, metrics=["f1"])
    h = trainer.fit(batches, validation_data=batches[:2])
    # a generator: steps_per_epoch batches per epoch, the epochs continuing where it stopped
    pn.Trainer(b, epochs=1, seed=0, verbose=0).fit(forever(), steps_per_epoch=2 * len(batches))
    np.testing.assert_array_equal(a.params, b.params)
    assert len(h["loss"]) == 2 and len(h["val_f1"]) == 2
    val = trainer.evaluate(np.concatenate([X8[:64]]), Y8[:64])
    assert trainer.evaluate(batches[:2]) == val
    with pytest.raises(ValueError, match="steps_per_epoch"):
        pn.Trainer(b, verbose=0).fit(iter(batches))
    with pytest.raises(ValueError, match="cannot be split"):
        pn.Trainer(b, verbose=0).fit(batches, validation_split=0.5)
    with pytest.raises(TypeError, match="expected batches"):
        pn.Trainer(b, verbose=0).fit([(X8,)])


def test_a_steps_limit_on_arrays():
    model = scaled_model([pn.Scale(1 / 255)])
    seen = []
    cb = pn.LambdaCallback(on_batch_end=lambda b, logs: seen.append(b))
    pn.Trainer(model, batch_size=10, epochs=1, seed=0, verbose=0).fit(X8, Y8, steps_per_epoch=3, callbacks=[cb])
    assert seen == [0, 1, 2]


LIMITED = """
import resource, sys, time
sys.path.insert(0, {repo!r})
import numpy as np, pyneuro as pn
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
X = np.memmap({path!r}, dtype=np.uint8, mode="r", shape=({rows}, 784))
y = np.zeros({rows}, np.int64)
model = pn.Sequential([pn.Scale(1 / 255), pn.Dense(784, 32, "relu"), pn.Dense(32, 10)], seed=0)
t0 = time.perf_counter()
h = pn.Trainer(model, batch_size=128, epochs=1, seed=0, verbose=0).fit(X, y, steps_per_epoch=200)
print(h["loss"][0], model.predict(X[:1000]).shape, f"{{time.perf_counter() - t0:.1f}} s")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS (Linux)")
def test_a_uint8_memmap_larger_than_the_address_space_limit_as_float32(tmp_path):
    """1.1 GiB of uint8 rows (4.4 GiB as float32) train under a 3 GiB address-space limit:
    no whole copy, each batch converted in the gather."""
    rows = (11 * 2**30 // 10) // 784
    path = tmp_path / "images.u8"
    with open(path, "wb") as f:      # sparse: nothing written but a few rows
        f.write(np.arange(784 * 64, dtype=np.uint8).tobytes())
        f.truncate(rows * 784)
    code = LIMITED.format(repo=REPO, path=str(path), rows=rows)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(1000, 10)" in proc.stdout, proc.stdout
