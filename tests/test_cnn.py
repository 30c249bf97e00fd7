"""Convolutional networks end to end: shapes, gradients, files, threads, ONNX, learning.

The kernels are checked against NumPy in test_conv.py and test_pool_norm.py; here the
layers are checked inside whole models, against finite differences and references.
"""
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import pyneuro as pn
from pyneuro.architectures import layers_from_spec
from pyneuro.gradcheck import check_gradients

REPO = Path(__file__).resolve().parents[1]


def cnn(spec, shape, n_out=3, dtype="float64", seed=0, activation="tanh"):
    return pn.Sequential(layers_from_spec(spec, shape, n_out, activation), seed=seed, dtype=dtype,
                         input_shape=shape)


def data(shape, n=5, n_out=3, seed=1, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape).astype(dtype), rng.integers(0, n_out, n)


# ---- gradients: every layer, alone after a convolution and in a small CNN -------------------------
GRAD_SPECS = [
    ("conv3x3p1", (2, 6, 5)),
    ("conv3x2s2", (2, 7, 6)),
    ("conv4x3same", (1, 6, 6)),
    ("conv3x3p1,pool2", (2, 6, 5)),
    ("conv3x1,avgpool2", (2, 5, 4)),
    ("conv3x3p1,gap", (2, 5, 5)),
    ("conv3x3p1,bn", (2, 5, 4)),
    ("conv3x3p1,ln", (2, 5, 4)),
    ("dense6,bn", (7,)),
    ("dense6,ln", (7,)),
    ("conv4x3p1,bn,pool2,conv3x2,ln,dense5,dropout0.3,dense4", (2, 7, 6)),
]


@pytest.mark.parametrize("spec, shape", GRAD_SPECS)
@pytest.mark.parametrize("training", [False, True])
def test_whole_model_gradients_match_central_differences(spec, shape, training):
    model = cnn(spec, shape)
    X, y = data(shape)
    X = X.reshape(X.shape[0], -1)
    if training or "bn" not in spec:
        error, analytic, _ = check_gradients(model, "cross_entropy", X, y, training=training)
    else:   # evaluation-mode BatchNorm: running statistics that are not the initial 0 and 1
        for layer in model.layers:
            if isinstance(layer, pn.BatchNorm):
                layer.running_mean[...] = np.linspace(-0.3, 0.4, layer.C)
                layer.running_var[...] = np.linspace(0.5, 2.0, layer.C)
        error, analytic, _ = check_gradients(model, "cross_entropy", X, y)
    assert error < 1e-6, error
    assert np.abs(analytic).max() > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pooling_does_the_relu_backward_before_it_in_the_same_pass(dtype):
    """Sequential.backward hands a max pooling the ReLU output it pooled, and the pooling returns
    ∂L/∂Z of the layer before: bitwise the gradients of the two backward passes run apart
    (overlapping 3×3 windows and the 2×2 ones), and right by central differences."""
    layers = [pn.Conv2D(2, 5, 3, padding=1, activation="relu"), pn.MaxPool2D(3, stride=2, padding=1),
              pn.Conv2D(5, 4, 2, activation="relu"), pn.MaxPool2D(2), pn.Dense(8, 5, activation="relu"),
              pn.Dense(5, 3)]
    model = pn.Sequential(layers, seed=0, dtype=dtype, input_shape=(2, 9, 8))
    assert [model._masks_relu(model.layers[i], model.layers[i - 1]) for i in range(1, 6)] == [
        True, False, True, False, False]
    X, y = data((2, 9, 8), n=6, dtype=dtype)
    X = X.reshape(6, -1)
    out = model.forward(X, training=True)
    dA = np.random.default_rng(2).standard_normal(out.shape).astype(dtype)
    model.backward(dA)
    fused = model.grads.copy()
    g = dA
    for i in range(len(model.layers) - 1, -1, -1):              # each layer on its own
        g = model.layers[i].backward(g, need_input_grad=i > 0)
    assert np.array_equal(fused, model.grads)
    assert np.count_nonzero(fused) > fused.size // 2
    if dtype == "float64":
        error, analytic, _ = check_gradients(model, "cross_entropy", X, y)
        assert error < 1e-6, error


def test_input_gradient_of_a_cnn_matches_finite_differences():
    model = cnn("conv3x3p1,bn,pool2,dense4", (1, 6, 6))
    X, y = data((1, 6, 6), n=3)
    model._trained_on(pn.CrossEntropy())
    dX = model.input_gradient(X, y)
    flat = X.reshape(3, -1).copy()
    loss = pn.CrossEntropy()
    for k in [0, 7, 20, 35]:
        up, down = flat.copy(), flat.copy()
        up[1, k] += 1e-6
        down[1, k] -= 1e-6
        f = [loss.value_and_grad(model.predict(v), loss.prepare_targets(y, 3, 3, np.float64), None)
             for v in (up, down)]
        assert dX[1, k] == pytest.approx((f[0] - f[1]) / 2e-6, rel=1e-5, abs=1e-9)


# ---- shapes -------------------------------------------------------------------------------------
def test_layers_report_their_output_shapes():
    model = cnn("conv32x5,pool2,conv64x5,pool2,dense128", (1, 28, 28), n_out=10, dtype="float32",
                activation="relu")
    assert [layer.out_shape for layer in model.layers] == [(32, 24, 24), (32, 12, 12), (64, 8, 8), (64, 4, 4),
                                                           (128,), (10,)]
    table = model.summary(print_fn=None)
    assert "(None, 32, 24, 24)" in table and "(None, 64, 4, 4)" in table and "(None, 1, 28, 28)" in table
    W = model.layers[0].W
    assert W.shape == (32, 1, 5, 5) and abs(W.std() - math.sqrt(2 / 25)) < 0.05   # He init, fan_in C·kh·kw


def test_images_are_read_as_n_c_h_w_or_n_h_w_or_flat_rows():
    model = cnn("conv2x3,pool2", (1, 6, 6), dtype="float32")
    X = np.random.default_rng(0).random((4, 1, 6, 6), dtype=np.float32)
    out = model.predict(X)
    assert np.array_equal(model.predict(X[:, 0]), out) and np.array_equal(model.predict(X.reshape(4, 36)), out)
    assert np.array_equal(model.predict((X * 255).astype(np.uint8)), model.predict((X * 255).astype(np.uint8)
                                                                                       .astype(np.float32)))
    with pytest.raises(ValueError, match=r"samples of shape \(1, 6, 6\).*got shape \(4, 2, 3, 6\)"):
        model.predict(X.reshape(4, 2, 3, 6))


@pytest.mark.parametrize("make, message", [
    (lambda: pn.Sequential([pn.Conv2D(1, 2, 3)]), "input_shape"),
    (lambda: pn.Sequential([pn.Dense(16, 4), pn.Conv2D(1, 2, 3)]), r"reads images \(C, H, W\)"),
    (lambda: pn.Sequential([pn.Conv2D(3, 2, 3)], input_shape=(1, 8, 8)), "receives images with 1 channels"),
    (lambda: pn.Sequential([pn.Conv2D(1, 2, 9)], input_shape=(1, 8, 8)), "8"),
    (lambda: pn.Conv2D(1, 2, 3, activation="softmax"), "softmax"),
    (lambda: pn.Conv2D(1, 2, 2, stride=2, padding="same"), "stride 1"),
    (lambda: pn.Conv2D(1, 2, 0), "kernel_size"),
    (lambda: pn.BatchNorm(momentum=2), "momentum"),
])
def test_bad_architectures_are_refused_clearly(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---- BatchNorm: batch statistics in training, running ones at evaluation (PyTorch's formulas) ----
def test_batchnorm_follows_pytorchs_formulas():
    model = pn.Sequential([pn.BatchNorm(momentum=0.2, eps=1e-3)], input_shape=(3, 4, 5), dtype="float64")
    bn = model.layers[0]
    bn.gamma[...], bn.beta[...] = [1.5, -0.5, 2.0], [0.1, 0.2, -0.3]
    X, _ = data((3, 4, 5), n=6)
    Y = model.forward(X.reshape(6, -1), training=True).reshape(X.shape)
    mean, var = X.mean(axis=(0, 2, 3)), X.var(axis=(0, 2, 3))
    c = (None, slice(None), None, None)
    ref = bn.gamma[c] * (X - mean[c]) / np.sqrt(var[c] + 1e-3) + bn.beta[c]
    np.testing.assert_allclose(Y, ref, rtol=1e-12, atol=1e-12)
    N = 6 * 20
    np.testing.assert_allclose(bn.running_mean, 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * var * N / (N - 1), rtol=1e-12)
    Y_eval = model.predict(X)
    ref = bn.gamma[c] * (X - bn.running_mean[c]) / np.sqrt(bn.running_var[c] + 1e-3) + bn.beta[c]
    np.testing.assert_allclose(Y_eval.reshape(X.shape), ref, rtol=1e-12, atol=1e-12)
    assert model.count_trainable_params() == 6 and model.count_params() == 12


def test_the_optimizer_never_changes_running_statistics_and_training_does():
    model = cnn("conv3x3p1,bn,dense4", (1, 5, 5), n_out=3, dtype="float32")
    bn = model.layers[1]
    start = (bn.running_mean.ctypes.data - model.params.ctypes.data) // 4
    state = slice(start, start + 6)                 # running mean and variance, 3 channels each
    assert np.array_equal(model.params[state], [0, 0, 0, 1, 1, 1])
    assert all(b <= start or a >= start + 6 for a, b in model.trainable_ranges())
    X, y = data((1, 5, 5), n=40, dtype="float32")
    trainer = pn.Trainer(model, optimizer=pn.AdamW(lr=0.1, weight_decay=0.5), batch_size=8, epochs=2,
                         seed=0, verbose=0)
    trainer.fit(X, y)
    assert all(not v[state].any() for v in trainer.optimizer.state_arrays().values())   # no moments either
    assert np.isfinite(bn.running_mean).all() and (bn.running_var > 0).all()
    assert not np.array_equal(model.params[state], [0, 0, 0, 1, 1, 1])     # moved by the batches


# ---- files: save/load, checkpoints and exact resume, hostile descriptions -------------------------
def test_a_cnn_saves_loads_and_resumes_exactly(tmp_path):
    X, y = data((1, 8, 8), n=60, n_out=4, dtype="float32")

    def make():
        model = cnn("conv4x3p1,bn,pool2,conv4x3,ln,dense8,dropout0.2", (1, 8, 8), n_out=4, dtype="float32")
        return pn.Trainer(model, optimizer=pn.Adam(lr=0.01), batch_size=16, epochs=3, seed=3, verbose=0)

    full, part = make(), make()
    full.fit(X, y)
    stop = pn.LambdaCallback(on_epoch_end=lambda e, logs: setattr(part, "stop_training", e == 1))
    part.fit(X, y, callbacks=[pn.ModelCheckpoint(tmp_path / "ck.st", monitor="loss", save_best_only=False), stop])
    resumed = pn.Trainer.from_checkpoint(tmp_path / "ck.st", verbose=0)
    resumed.fit(X, y)
    assert np.array_equal(resumed.model.params, full.model.params)
    full.model.save(tmp_path / "m.st")
    back = pn.load(tmp_path / "m.st")
    assert back.input_shape == (1, 8, 8) and [type(a) for a in back.layers] == [type(a) for a in full.model.layers]
    assert np.array_equal(back.predict(X), full.model.predict(X))
    assert np.array_equal(back.predict_proba(X), full.model.predict_proba(X))


def test_a_file_declaring_a_giant_convolution_is_refused_before_allocation(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from test_hostile_files import under_memory_limit
    from fuzz_model_files import forge
    doc = {"dtype": "float32", "input_dim": 784, "input_shape": [1, 28, 28],
           "layers": [{"type": "Conv2D", "config": {"in_channels": 1, "out_channels": 2**30, "kernel_size": [5, 5]}}]}
    path = tmp_path / "conv.st"
    path.write_bytes(forge({"params": np.zeros(4, np.float32)}, {"model": doc, "info": {}}))
    result, seconds, _ = under_memory_limit(f"pyneuro.load({str(path)!r})")
    assert result.startswith(f"ValueError: {path}: damaged: the architecture needs float32 params"), result
    assert seconds < 5


def test_a_file_declaring_a_giant_input_width_before_a_scale_is_refused_before_allocation(tmp_path):
    """Scale/Standardize make their per-column vectors at first use, not when the file's
    declared width is read: the parameters' count refuses the file first."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_hostile_files import under_memory_limit
    from fuzz_model_files import forge
    doc = {"dtype": "float32", "input_dim": 2**30,
           "layers": [{"type": "Scale", "config": {"scale": 0.5}},
                      {"type": "Dense", "config": {"n_in": 2**30, "n_out": 1}}]}
    path = tmp_path / "scale.st"
    path.write_bytes(forge({"params": np.zeros(4, np.float32)}, {"model": doc, "info": {}}))
    result, seconds, _ = under_memory_limit(f"pyneuro.load({str(path)!r})")
    assert result.startswith(f"ValueError: {path}: damaged: the architecture needs float32 params"), result
    assert seconds < 5


# ---- threads and memory ---------------------------------------------------------------------------
def test_training_a_cnn_is_bitwise_identical_on_1_2_and_3_threads():
    X, y = data((1, 12, 12), n=64, n_out=5, dtype="float32")
    results = []
    old = pn.get_num_threads()
    try:
        for threads in (1, 2, 3):
            pn.set_num_threads(threads)
            model = cnn("conv6x3p1,bn,pool2,conv8x3,ln,dense16,dropout0.2", (1, 12, 12), n_out=5,
                        dtype="float32", activation="relu")
            pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), batch_size=16, epochs=2, seed=0, verbose=0).fit(X, y)
            results.append(model.params.copy())
    finally:
        pn.set_num_threads(old)
    assert all(np.array_equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("spec, chained", [("conv6x3p1,pool2,conv8x3s2,avgpool2,dense7", True),
                                           ("conv5x3p1,pool2,conv4x2,bn,dense6", False)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prediction_in_one_compiled_call_equals_the_layers_one_by_one(spec, chained, dtype):
    """Conv/pool/dense stacks predict through _core.InferenceChain (rows in chunks per thread,
    or, for fewer rows than 2 threads, each step threaded); any other stack layer by layer.
    Either way predict is bitwise the layers' own forward, for every batch size and thread count."""
    X, _ = data((2, 28, 27), n=130, dtype=dtype)     # 6·28·27 values a row: chunks of ≤ 13 rows
    old = pn.get_num_threads()
    try:
        for threads in (1, 2, 3):
            pn.set_num_threads(threads)
            model = cnn(spec, (2, 28, 27), n_out=4, dtype=dtype, activation="relu")
            assert isinstance(model._chain, pn._core.InferenceChain) == chained
            for n in (1, 2, 5, 9, 130):
                expected = model.forward(X[:n].reshape(n, -1)).copy()
                assert np.array_equal(model.predict(X[:n]), expected), (threads, n)
                small = pn._core._set_chain_chunk_bytes(2 * 2 * 6 * 28 * 27 * 8)   # chunks of 2 rows:
                try:                                                      # 9 rows in 6 chunks, the last empty
                    assert np.array_equal(model.predict(X[:n]), expected), (threads, n, "chunks of 2")
                finally:
                    pn._core._set_chain_chunk_bytes(small)
    finally:
        pn.set_num_threads(old)


def test_prediction_of_a_batch_too_large_to_keep_a_buffer_for():
    """The rows waiting for the dense tail (here 400 × 8·28·28 float32, 10 MB) are above what a
    thread keeps between calls (8 MiB): the call makes and frees its own buffer, same result."""
    model = cnn("conv8x3p1,dense5", (1, 28, 28), n_out=3, dtype="float32", activation="relu")
    X, _ = data((1, 28, 28), n=400, dtype="float32")
    expected = model.forward(X.reshape(400, -1)).copy()
    assert np.array_equal(model.predict(X, batch_size=400), expected)
    assert np.array_equal(model.predict(X[:7], batch_size=400), expected[:7])


def test_a_training_step_allocates_nothing_after_the_first():
    model = cnn("conv8x3p1,bn,pool2,conv8x3,avgpool2,ln,dense16", (1, 16, 16), n_out=4, dtype="float32")
    X, y = data((1, 16, 16), n=32, n_out=4, dtype="float32")
    X = X.reshape(32, -1)
    loss = pn.CrossEntropy()
    Y = loss.prepare_targets(y, 32, 4, np.float32)
    delta = np.empty((32, 4), np.float32)

    def step():
        loss.value_and_grad(model.forward(X, training=True), Y, delta)
        model.backward(delta)

    step()
    tracemalloc.start()
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024, peak      # the work arrays are tens of kB each: none was made again


# ---- ONNX: the exported graph in onnxruntime -------------------------------------------------------
@pytest.mark.parametrize("spec", ["conv4x3p1,bn,pool2,conv6x3s2,ln,dense8",
                                  "conv4x3same,avgpool2,conv5x2,gap,dense6"])
def test_onnx_export_of_a_cnn_matches_onnxruntime(tmp_path, spec):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed")
    model = cnn(spec, (2, 9, 9), n_out=5, dtype="float32", activation="relu")
    X, y = data((2, 9, 9), n=30, n_out=5, dtype="float32")
    pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), batch_size=10, epochs=2, seed=0, verbose=0).fit(X, y)
    model.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": X})[0]
    np.testing.assert_allclose(out, model.predict(X), rtol=1e-5, atol=1e-5)


# ---- learning ----------------------------------------------------------------------------------------
def test_a_small_cnn_learns_the_digits():
    X, y = pn.datasets.load_digits()
    X_tr, X_te, y_tr, y_te = pn.datasets.train_test_split(X, y, test_size=0.25, seed=0)
    model = cnn("conv16x3p1,pool2,conv32x3p1,pool2,dense64", (1, 8, 8), n_out=10, dtype="float32",
                activation="relu")
    pn.Trainer(model, optimizer=pn.Adam(lr=2e-3), batch_size=32, epochs=12, seed=0, verbose=0).fit(X_tr, y_tr)
    accuracy = (model.predict_classes(X_te) == y_te).mean()
    assert accuracy > 0.97, accuracy


def test_the_command_line_trains_a_cnn_from_a_layer_spec(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyneuro.cli", "train", "--layers", "conv8x3p1,pool2,dense32",
                           "--epochs", "8", "--save", str(tmp_path / "m.st"), "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    accuracy = float(proc.stdout.split("test accuracy")[1].split()[0])
    assert accuracy > 0.9, proc.stdout
    model = pn.load(tmp_path / "m.st")
    assert isinstance(model.layers[0], pn.Conv2D) and model.input_shape == (1, 8, 8)
    proc = subprocess.run([sys.executable, "-m", "pyneuro.cli", "show", str(tmp_path / "m.st"), "--out",
                           str(tmp_path / "filters.png")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and "8 filters (3x3)" in proc.stdout, proc.stderr
    assert (tmp_path / "filters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- MPI: BatchNorm's statistics over all ranks' rows, 2 ranks = 1 process ---------------------------
MPI_CNN = '''
import sys, numpy as np, pyneuro as pn
from pyneuro.architectures import layers_from_spec
def train(distributed):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((90, 1, 8, 8)), rng.integers(0, 4, 90)     # 90 rows: a short last batch
    model = pn.Sequential(layers_from_spec("conv4x3p1,bn,pool2,dense8,bn", (1, 8, 8), 4, "relu"), seed=2,
                          dtype="float64", input_shape=(1, 8, 8))
    trainer = pn.Trainer(model, optimizer=pn.SGD(lr=0.05, momentum=0.9), batch_size=16, epochs=3, seed=4,
                         verbose=0, distributed=distributed)
    trainer.fit(X, y)
    return model.params
if __name__ == "__main__":
    params = train(True)
    from mpi4py import MPI
    np.save(f"{sys.argv[1]}.{MPI.COMM_WORLD.Get_rank()}.npy", params)
'''


def test_batchnorm_on_two_mpi_ranks_trains_like_one_process(tmp_path):
    from test_distributed import needs_mpi, run_mpi
    if needs_mpi.args[0]:
        pytest.skip(needs_mpi.kwargs["reason"])
    proc = run_mpi(2, MPI_CNN, [tmp_path / "w"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [np.load(tmp_path / f"w.{r}.npy") for r in (0, 1)]
    assert np.array_equal(ranks[0], ranks[1])
    ns: dict = {}
    exec(MPI_CNN.split("if __name__")[0], ns)
    single = ns["train"](False)
    assert np.abs(ranks[0] - single).max() <= 1e-10 * np.abs(single).max()


def test_the_scikit_learn_classifier_trains_a_cnn_from_a_layer_spec():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    from sklearn.base import clone
    from pyneuro.sklearn import MLPClassifier
    X, y = pn.datasets.load_digits()
    X_tr, X_te, y_tr, y_te = pn.datasets.train_test_split(X, y, test_size=0.25, seed=0)
    clf = MLPClassifier(layers="conv16x3p1,pool2,dense64", input_shape=(1, 8, 8), max_iter=12,
                        learning_rate_init=2e-3, batch_size=32, random_state=0).fit(X_tr, y_tr)
    assert isinstance(clf.model_.layers[0], pn.Conv2D) and clf.score(X_te, y_te) > 0.95
    assert clone(clf).get_params()["layers"] == "conv16x3p1,pool2,dense64"
    with pytest.raises(ValueError, match=r"input_shape \(1, 7, 7\) holds 49 values, X has 64"):
        MLPClassifier(layers="conv4x3", input_shape=(1, 7, 7), max_iter=1).fit(X_tr, y_tr)
