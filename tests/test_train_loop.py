"""The compiled training loop (csrc/train_loop.pxi, _core.TrainLoop): runs of whole steps in
one call give bitwise the weights, optimizer state, streams and history of the step-by-step
path (Trainer._compiled = False), on 1, 2 and 3 threads; models, losses, optimizers and
callbacks it cannot run keep the step-by-step path; Ctrl-C still stops within a second."""
import textwrap

import numpy as np
import pytest

import pyneuro as pn
from pyneuro import _core
from pyneuro.losses import MSE, BinaryCrossEntropy, Huber


def data(n=203, n_in=12, classes=4, dtype=np.float32, seed=0):
    """Rows with a learnable class (203 rows: batch 16 leaves a short last batch of 11)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    y = (X[:, :classes] + 0.3 * rng.standard_normal((n, classes))).argmax(axis=1)
    return X, y


def net(dtype="float32", dropout=0.0, widths=(12, 16, 8, 4), acts=("relu", "tanh", None), seed=3):
    layers = []
    for i, act in enumerate(acts):
        layers.append(pn.Dense(widths[i], widths[i + 1], act))
        if dropout and i < len(acts) - 1:
            layers.append(pn.Dropout(dropout))
    return pn.Sequential(layers, seed=seed, dtype=dtype)


def train(compiled, make_model, X, y, loss="cross_entropy", opt=lambda: pn.Adam(1e-2), epochs=2, batch=16,
          callbacks=None, **fit):
    model = make_model()
    trainer = pn.Trainer(model, loss, opt(), batch_size=batch, epochs=epochs, seed=7, verbose=0)
    trainer._compiled = compiled
    used = []
    original = trainer._train_epoch_compiled

    def spy(*args):
        used.append(True)
        return original(*args)
    trainer._train_epoch_compiled = spy
    trainer.fit(X, y, callbacks=callbacks, **fit)
    return trainer, bool(used)


def assert_same(a, b):
    """Bitwise: weights, gradients, optimizer state and step count, dropout streams, history."""
    ta, tb = a, b
    assert ta.model.params.tobytes() == tb.model.params.tobytes()
    assert ta.model.grads.tobytes() == tb.model.grads.tobytes()
    sa, sb = ta.optimizer.state_arrays(), tb.optimizer.state_arrays()
    assert sa.keys() == sb.keys() and all(sa[k].tobytes() == sb[k].tobytes() for k in sa)
    assert ta.optimizer.t == tb.optimizer.t and ta.optimizer.current_lr == tb.optimizer.current_lr
    for la, lb in zip(ta.model.layers, tb.model.layers):
        if isinstance(la, pn.Dropout):
            assert la.rng.bit_generator.state == lb.rng.bit_generator.state
    assert ta.rng.bit_generator.state == tb.rng.bit_generator.state
    ha = {k: v for k, v in ta.history.items() if k != "time"}
    hb = {k: v for k, v in tb.history.items() if k != "time"}
    assert ha == hb


def both(make_model, X, y, **kw):
    old, used_old = train(False, make_model, X, y, **kw)
    new, used_new = train(True, make_model, X, y, **kw)
    assert not used_old and used_new, "the compiled path was expected to run"
    assert_same(old, new)
    return new


OPTIMIZERS = {
    "sgd": lambda: pn.SGD(0.05),
    "momentum": lambda: pn.SGD(0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda: pn.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: pn.Adam(1e-2),
    "adamw": lambda: pn.AdamW(1e-2, weight_decay=0.05),
    "adam_l2_clip": lambda: pn.Adam(1e-2, weight_decay=1e-3, clip_norm=0.5),
    "rmsprop": lambda: pn.RMSprop(1e-3, weight_decay=1e-4),
    "sgd_step_schedule": lambda: pn.SGD(0.1, momentum=0.5, schedule=pn.CosineRestarts(5, min_factor=0.1)),
    "adam_epoch_schedule": lambda: pn.Adam(1e-2, schedule=pn.StepDecay(1, 0.5)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_optimizers_bitwise_equal_to_step_by_step(dtype, opt):
    X, y = data(dtype=np.float64 if dtype == "float64" else np.float32)
    both(lambda: net(dtype), X, y, opt=OPTIMIZERS[opt])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_dropout_bitwise_equal(dtype, p):
    """The dropout uniforms are drawn before each run from each layer's own stream."""
    X, y = data()
    new = both(lambda: net(dtype, dropout=p), X, y)
    assert np.isfinite(new.history["loss"]).all()


def test_dropout_as_first_layer_and_every_activation():
    X, y = data(n_in=12)
    make = lambda: pn.Sequential([pn.Dropout(0.2), pn.Dense(12, 10, "gelu"), pn.Dense(10, 9, "elu"),
                                  pn.Dense(9, 8, "leaky_relu"), pn.Dense(8, 7, "sigmoid"),
                                  pn.Dense(7, 6, "softmax"), pn.Dense(6, 4)], seed=1)
    both(make, X, y, opt=OPTIMIZERS["momentum"])


@pytest.mark.parametrize("source", ["uint8", "bool", "int16", "float64", "float32_to_64"])
def test_inputs_of_another_dtype_are_converted_as_gathered(source):
    X, y = data()
    Xs = {"uint8": (np.abs(X) * 60).astype(np.uint8), "bool": X > 0, "int16": (X * 100).astype(np.int16),
          "float64": X.astype(np.float64), "float32_to_64": X}[source]
    dtype = "float64" if source == "float32_to_64" else "float32"
    if source == "float64":   # float64 data for a float32 model is checked for overflow per batch
        old, _ = train(False, lambda: net(dtype), Xs, y)
        new, used = train(True, lambda: net(dtype), Xs, y)
        assert not used
        assert_same(old, new)
        return
    both(lambda: net(dtype), Xs, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["mse", "mse_half", "mae", "huber", "bce", "bce_pos", "ce_probs"])
def test_losses_bitwise_equal(dtype, loss):
    X, y = data()
    if loss.startswith("bce"):
        Y = (y[:, None] == np.arange(3)).astype(dtype)
        L = BinaryCrossEntropy(pos_weight=[2.0, 0.5, 1.0]) if loss == "bce_pos" else "binary_cross_entropy"
        both(lambda: net(dtype, widths=(12, 16, 8, 3)), X, Y, loss=L)
    elif loss == "ce_probs":
        Y = np.full((len(y), 4), 0.1, dtype) + 0.6 * (y[:, None] == np.arange(4))
        both(lambda: net(dtype), X, Y, loss="cross_entropy")
    else:
        Y = X[:, :4] * 2 + 1
        L = {"mse": "mse", "mse_half": MSE("half_sum_outputs"), "mae": "mae", "huber": Huber(0.5)}[loss]
        both(lambda: net(dtype), X, Y.astype(dtype), loss=L, opt=OPTIMIZERS["momentum"])


def test_accuracy_of_one_sigmoid_output_trained_with_mse():
    """A probability output: accuracy counted at ½ against [y > ½]."""
    X, y = data()
    Y = (y == 0).astype(np.float32).reshape(-1, 1)
    new = both(lambda: net(widths=(12, 16, 8, 1), acts=("relu", "relu", "sigmoid")), X, Y, loss="mse")
    assert "accuracy" in new.history


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sample_and_class_weights(dtype):
    X, y = data()
    w = np.random.default_rng(2).random(len(y)) * 2
    w[:40] = 0
    given = w.copy()
    both(lambda: net(dtype, dropout=0.2), X, y, sample_weight=w, class_weight={0: 3.0})
    assert np.array_equal(w, given)   # class_weight multiplies a copy, never the caller's weights


@pytest.fixture
def loops(monkeypatch):
    """Every _core.TrainLoop the trainer makes, in order."""
    made, real = [], _core.TrainLoop
    monkeypatch.setattr(_core, "TrainLoop", lambda *a: made.append(real(*a)) or made[-1])
    return made


def test_validation_metrics_steps_per_epoch_and_frozen_layers(loops):
    """Training metrics (outputs kept per step), validation, steps_per_epoch, a frozen layer
    (two trainable runs: the update inside the backward pass skips it)."""
    X, y = data(n=300)

    def make():
        model = net()
        model.layers[1].trainable = False
        return model
    old, _ = train(False, make, X, y, validation_split=0.2, steps_per_epoch=9, epochs=3)
    new, used = train(True, make, X, y, validation_split=0.2, steps_per_epoch=9, epochs=3)
    assert used and loops[-1].fused_update
    assert_same(old, new)
    model = lambda: net()
    m_old = pn.Trainer(model(), batch_size=16, epochs=2, seed=7, verbose=0, metrics=["f1", "roc_auc"])
    m_new = pn.Trainer(model(), batch_size=16, epochs=2, seed=7, verbose=0, metrics=["f1", "roc_auc"])
    m_old._compiled = False
    m_old.fit(X, y)
    m_new.fit(X, y)
    assert_same(m_old, m_new)


NETS = {
    "relu": lambda: pn.Sequential([pn.Dense(300, 256, "relu"), pn.Dropout(0.2), pn.Dense(256, 128, "relu"),
                                   pn.Dense(128, 10)], seed=0),
    # 784 inputs are 4 KC slices of W's rows: a few rows' forward is cut along them (gemm_k_slices)
    "wide_input": lambda: pn.Sequential([pn.Dense(784, 64, "relu"), pn.Dense(64, 10)], seed=0),
    # each activation below a Dense layer is fused into that layer's dX GEMM (softmax is not)
    "every_activation": lambda: pn.Sequential([pn.Dense(300, 40, "gelu"), pn.Dense(40, 30, "elu"),
                                               pn.Dense(30, 20, "tanh"), pn.Dense(20, 16, "softmax"),
                                               pn.Dense(16, 12, "sigmoid"), pn.Dense(12, 10, "leaky_relu")],
                                              seed=0),
}


@pytest.mark.parametrize("num", [2, 3])
@pytest.mark.parametrize("net_, batch, opt", [("relu", 256, "momentum"), ("relu", 2, "adam_l2_clip"),
                                              ("every_activation", 64, "adam"),
                                              ("every_activation", 5, "momentum"),
                                              ("wide_input", 32, "momentum"), ("wide_input", 1, "adam")])
def test_same_bits_on_1_2_3_threads(num_threads, loops, num, net_, batch, opt):
    """One thread team for the run: at batch 256 GEMMs, gathers and updates are split over
    the threads; at 2 or 5 rows some threads have no rows at all. Without clipping, each
    layer's update is made inside the backward pass by the threads that made its dW. A Dense
    forward of few rows by a wide W (4·rows·slices ≤ inputs: 300 inputs at 2 or 5 rows, 784 at
    1 or 32) is cut along W's K slices (2 and 4 slices)."""
    make = NETS[net_]
    X, y = data(n=700, n_in=make().n_in, classes=10)
    num_threads(1)
    one, used = train(True, make, X, y, batch=batch, opt=OPTIMIZERS[opt], epochs=1)
    assert used and loops[-1].fused_update == ("clip" not in opt)
    num_threads(num)
    many, _ = train(True, make, X, y, batch=batch, opt=OPTIMIZERS[opt], epochs=1)
    assert_same(one, many)
    old, _ = train(False, make, X, y, batch=batch, opt=OPTIMIZERS[opt], epochs=1)
    assert_same(old, many)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parameters_gradients_and_optimizer_state_start_on_a_cache_line(dtype, tmp_path):
    """A thread's rows of W are whole 64-byte lines of its own (a 16-float tile is one line):
    params, grads and every state vector start on a line, built, loaded and resumed."""
    make = lambda: pn.Sequential([pn.Dense(12, 8, "relu"), pn.Dense(8, 4)], seed=0, dtype=dtype)
    X, y = data(n=40, dtype=dtype)
    for opt in ("momentum", "adam", "rmsprop"):
        t, _ = train(True, make, X, y, opt=OPTIMIZERS[opt], epochs=1)
        vectors = [t.model.params, t.model.grads, *t.optimizer.state_arrays().values()]
        assert len(vectors) >= 3 and all(v.ctypes.data % 64 == 0 for v in vectors)
    t.model.save(tmp_path / "m.pnz")
    assert pn.load(tmp_path / "m.pnz").params.ctypes.data % 64 == 0


class Counting(pn.Callback):
    def __init__(self):
        self.n = 0

    def on_batch_end(self, batch, logs):
        self.n += 1


@pytest.mark.parametrize("cb", ["subclass", "lambda"])
def test_a_batch_callback_takes_the_step_by_step_path(cb):
    X, y = data()
    seen = []
    callback = Counting() if cb == "subclass" else pn.LambdaCallback(on_batch_end=lambda b, logs: seen.append(b))
    old, _ = train(False, lambda: net(dropout=0.2), X, y)
    new, used = train(True, lambda: net(dropout=0.2), X, y, callbacks=[callback])
    assert not used
    assert_same(old, new)
    assert (callback.n if cb == "subclass" else len(seen)) == 2 * 13
    # an epoch callback keeps the compiled path, and sees the same logs
    logs_old, logs_new = [], []
    train(False, lambda: net(), X, y, callbacks=[pn.LambdaCallback(on_epoch_end=lambda e, l: logs_old.append(l))])
    _, used = train(True, lambda: net(), X, y, callbacks=[pn.LambdaCallback(on_epoch_end=lambda e, l: logs_new.append(l))])
    assert used
    assert [{k: v for k, v in d.items() if k != "time"} for d in logs_old] == \
           [{k: v for k, v in d.items() if k != "time"} for d in logs_new]


def test_models_it_cannot_run_keep_the_old_path():
    X, y = data()
    make = lambda: pn.Sequential([pn.Scale(np.full(12, 0.5)), pn.Dense(12, 4)], seed=0)
    old, _ = train(False, make, X, y)
    new, used = train(True, make, X, y)
    assert not used
    assert_same(old, new)


def test_divergence_stops_at_the_same_step_with_the_same_state():
    X, y = data()
    X[150:, 0] = np.inf
    results = []
    for compiled in (False, True):
        model = net(dropout=0.2)
        trainer = pn.Trainer(model, "cross_entropy", pn.SGD(10.0), batch_size=16, seed=7, verbose=0,
                             allow_nonfinite=True)
        trainer._compiled = compiled
        with pytest.raises(pn.trainer.DivergenceError) as err:
            trainer.fit(X, y, epochs=2)
        results.append((str(err.value), trainer))
    assert results[0][0] == results[1][0]
    assert_same(results[0][1], results[1][1])


def test_run_refuses_what_does_not_fit():
    model = net()
    W = model.layers[0]
    loop = _core.TrainLoop([("dense", W.W, W.b, W.dW, W.db, "relu", 0.0)], model.params, model.grads,
                           np.zeros((5, 12), np.float32), np.zeros(5, np.int64), None, 4, "cross_entropy", 1.0,
                           1.0, None, "sgd", {}, None, None, [(0, W.W.size + W.b.size)], 0.0, True, 0.0, 0)
    perm = np.arange(5, dtype=np.int64)
    out = np.empty(2), np.empty(2, np.int64)
    with pytest.raises(ValueError, match="do not fit"):
        loop.run(perm, 0, 3, np.ones(3), 0, [], np.empty(3), np.empty(3, np.int64))
    with pytest.raises(ValueError, match="perm"):
        loop.run(perm + 3, 0, 2, np.ones(2), 0, [], *out)
    with pytest.raises(ValueError, match="masks"):
        loop.run(perm, 0, 2, np.ones(2), 0, [np.empty(3, np.float32)], *out)
    with pytest.raises(TypeError, match="X"):
        _core.TrainLoop([("dense", W.W, W.b, W.dW, W.db, "relu", 0.0)], model.params, model.grads,
                        np.zeros((5, 12), np.complex64), np.zeros(5, np.int64), None, 4, "cross_entropy", 1.0,
                        1.0, None, "sgd", {}, None, None, [], 0.0, True, 0.0, 0)


INTERRUPT = textwrap.dedent("""
    import numpy as np, pyneuro as pn
    rng = np.random.default_rng(0)
    X = rng.random((400_000, 64), dtype=np.float32); y = rng.integers(0, 10, 400_000)
    # 25 000 steps of 30 MFLOP: an epoch takes seconds even at the machine's peak, so the
    # signal (1.5 s after "ready") lands inside the first one
    model = pn.Sequential([pn.Dense(64, 4096, "relu"), pn.Dropout(0.1), pn.Dense(4096, 10)], seed=0)
    trainer = pn.Trainer(model, batch_size=16, epochs=5, verbose=0, seed=0)
    print("ready", flush=True)
    try:
        trainer.fit(X, y)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        print(trainer.optimizer.t > 4, trainer.history.epochs, np.isfinite(model.params).all(), flush=True)
""")


def test_ctrl_c_stops_the_compiled_loop_within_a_second():
    from test_robustness import interrupted
    first, latency, result, err = interrupted(INTERRUPT)
    assert first == "interrupted", err
    assert latency < 1.0, latency
    assert result == ["True", "0", "True"], (result, err)


def test_a_schedule_that_fails_mid_epoch_fails_after_the_same_steps():
    """A per-step schedule whose factor turns invalid at step 17: both paths raise there, with
    the weights of the 17 steps before it."""
    def factor(n):
        return 1.0 if n < 17 else -1.0
    factor.per = "step"
    X, y = data()
    out = []
    for compiled in (False, True):
        trainer = pn.Trainer(net(), "cross_entropy", pn.SGD(0.05, schedule=factor), batch_size=16, seed=7, verbose=0)
        trainer._compiled = compiled
        with pytest.raises(ValueError, match="step 17"):
            trainer.fit(X, y, epochs=2)
        out.append(trainer)
    assert out[0].optimizer.t == out[1].optimizer.t == 17
    assert out[0].model.params.tobytes() == out[1].model.params.tobytes()


def images(n=203, shape=(1, 12, 12), classes=4, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n,) + shape).astype(dtype)
    return X, (X.reshape(n, -1)[:, :classes] + 0.3 * rng.standard_normal((n, classes))).argmax(axis=1)


CNNS = {
    # a max pooling after a ReLU convolution makes its δ; tanh, padding, average pooling, Flatten
    "lenet_like": lambda dt: pn.Sequential([
        pn.Conv2D(1, 4, 3, activation="relu"), pn.MaxPool2D(2), pn.Conv2D(4, 6, 3, padding=1, activation="tanh"),
        pn.AvgPool2D(2), pn.Flatten(), pn.Dense(24, 8, "relu"), pn.Dense(8, 4)], seed=1, dtype=dt, input_shape=(1, 12, 12)),
    # no bias, stride 2, dilation, overlapping max windows after an ELU, dropout between, a
    # Dense right after a convolution (its dX GEMM makes the convolution's δ)
    "odd": lambda dt: pn.Sequential([
        pn.Conv2D(1, 5, 3, stride=2, padding="valid", activation="elu", bias=False), pn.Dropout(0.2),
        pn.Conv2D(5, 3, 2, dilation=2, activation="sigmoid"), pn.MaxPool2D(2, stride=1), pn.Flatten(),
        pn.Dense(12, 4)], seed=2, dtype=dt, input_shape=(1, 12, 12)),
    "conv_then_dense": lambda dt: pn.Sequential([
        pn.Conv2D(1, 3, 5, activation="gelu"), pn.Dense(192, 4)], seed=3, dtype=dt, input_shape=(1, 12, 12)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cnn", sorted(CNNS))
@pytest.mark.parametrize("num", [1, 2, 3])
def test_convolutional_networks_bitwise_equal(num_threads, loops, dtype, cnn, num):
    """Conv2D, pooling and Flatten run inside the compiled loop too: bitwise the step-by-step
    path on 1, 2 and 3 threads (batch 16, a short last batch of 11, and batch 2 where a
    thread has no sample), each layer updated inside the backward pass."""
    X, y = images(dtype=np.float64 if dtype == "float64" else np.float32)
    num_threads(num)
    for batch, opt in ((16, "adam"), (2, "momentum")):
        new = both(lambda: CNNS[cnn](dtype), X, y, batch=batch, opt=OPTIMIZERS[opt], epochs=1)
        assert loops[-1].fused_update and np.isfinite(new.history["loss"]).all()


def test_convolutional_network_clipping_frozen_layer_and_uint8_images(loops):
    """Clipping (the update after the backward pass), a frozen convolution (two trainable
    runs), and uint8 images (N, H, W) converted as they are gathered."""
    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, (150, 12, 12), dtype=np.uint8)
    y = rng.integers(0, 4, 150)
    both(lambda: CNNS["lenet_like"]("float32"), X, y, opt=OPTIMIZERS["adam_l2_clip"], epochs=1)
    assert not loops[-1].fused_update

    def frozen():
        model = CNNS["lenet_like"]("float32")
        model.layers[2].trainable = False
        return model
    both(frozen, X, y, opt=OPTIMIZERS["momentum"], epochs=1)
    assert loops[-1].fused_update
