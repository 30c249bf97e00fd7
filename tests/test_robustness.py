"""Misuse and stress end in a clear exception or a correct result (issue: never crash,
never hang, never lose work): bad input at every public entry point, views, faults
during training, several Python threads, fork, memory over many epochs."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import pyneuro as pn
from reference import KNOBS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_model(dtype="float32", seed=0, dropout=False):
    layers = [pn.Dense(6, 8, "tanh")] + ([pn.Dropout(0.2)] if dropout else []) + [pn.Dense(8, 3)]
    return pn.Sequential(layers, seed=seed, dtype=dtype)


def data(n=40, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)).astype(dtype), rng.integers(0, 3, n)


# ---- bad input: one table for every public entry point that takes data ----------------------
X0, y0 = data()
BAD_X = [
    ("object", X0.astype(object), TypeError, "dtype object"),
    ("complex", X0.astype(np.complex64), TypeError, "dtype complex64"),
    ("strings", X0.astype(str), TypeError, "real numbers"),
    ("float64 too large for float32", np.full(X0.shape, 1e300), ValueError, "too large for float32"),
    ("1-d", X0[0], ValueError, "2-d"),
    ("3-d", X0[None], ValueError, "2-d"),
    ("features", X0[:, :5], ValueError, "expects 6 features, got 5"),
    ("empty", X0[:0], ValueError, "at least one sample"),
    ("nan", np.where(np.arange(X0.size).reshape(X0.shape) == 7, np.nan, X0).astype(np.float32), ValueError, "NaN"),
    ("inf", np.where(np.arange(X0.size).reshape(X0.shape) == 7, -np.inf, X0).astype(np.float32), ValueError, "NaN or infinity"),
    ("a string", "X", TypeError, "numpy array"),
]
ENTRIES = {
    "predict": lambda m, X: m.predict(X),
    "predict_proba": lambda m, X: m.predict_proba(X),
    "predict_classes": lambda m, X: m.predict_classes(X),
    "fit": lambda m, X: pn.Trainer(m, verbose=0).fit(X, y0[:len(X)] if hasattr(X, "__len__") else y0),
    "evaluate": lambda m, X: pn.Trainer(m, verbose=0).evaluate(X, y0[:len(X)] if hasattr(X, "__len__") else y0),
}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("label, X, error, fragment", BAD_X, ids=[b[0] for b in BAD_X])
def test_bad_features_are_refused_clearly(entry, label, X, error, fragment):
    model = small_model()
    before = model.get_weights()
    with pytest.raises(error, match=re.escape(fragment)):
        ENTRIES[entry](model, X)
    assert np.array_equal(model.get_weights(), before)


# other real dtypes are read as their float32 values (X.astype(float32)), batch by batch
OTHER_REAL_X = [
    ("int64", (X0 * 10).astype(np.int64)),
    ("uint8", (np.abs(X0) * 40).astype(np.uint8)),
    ("int8", (X0 * 30).astype(np.int8)),
    ("uint64", (np.abs(X0) * 1e6).astype(np.uint64)),
    ("bool", X0 > 0),
    ("float16", X0.astype(np.float16)),
    ("float64 for a float32 model", X0.astype(np.float64) + 1e-9),
    ("list of rows", (X0 * 10).astype(np.int16).tolist()),
]


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("label, X", OTHER_REAL_X, ids=[r[0] for r in OTHER_REAL_X])
def test_other_real_dtypes_are_read_as_their_float_values(entry, label, X):
    as_float = np.asarray(X).astype(np.float32)
    model, same = small_model(), small_model()
    if entry == "fit":
        got = pn.Trainer(model, verbose=0, seed=1, batch_size=8, epochs=2).fit(X, y0)
        want = pn.Trainer(same, verbose=0, seed=1, batch_size=8, epochs=2).fit(as_float, y0)
        assert got["loss"] == want["loss"]
        np.testing.assert_array_equal(model.get_weights(), same.get_weights())
    else:
        got, want = ENTRIES[entry](model, X), ENTRIES[entry](same, as_float)
        np.testing.assert_array_equal(got["loss"] if entry == "evaluate" else got,
                                      want["loss"] if entry == "evaluate" else want)


@pytest.mark.parametrize("y, error, fragment", [
    (y0 + 3, ValueError, "labels must lie in [0, 2]"),
    (-y0 - 1, ValueError, "labels must lie in [0, 2]"),
    (y0.astype(np.float64) + 0.5, TypeError, "integer class labels"),
    (y0[:-1], ValueError, "expected 40 labels"),
    (y0.reshape(-1, 2), ValueError, "1-d array of labels"),
    ("y", TypeError, "numpy array"),
])
@pytest.mark.parametrize("entry", ["fit", "evaluate"])
def test_bad_labels_are_refused_clearly(y, error, fragment, entry):
    trainer = pn.Trainer(small_model(), verbose=0)
    with pytest.raises(error, match=re.escape(fragment)):
        getattr(trainer, entry)(X0, y)


def test_nonfinite_inputs_are_accepted_when_asked():
    X = X0.copy()
    X[3, 2] = np.nan
    model = small_model()
    assert np.isnan(model.predict(X, allow_nonfinite=True)[3]).all()
    assert np.isfinite(np.delete(model.predict(X, allow_nonfinite=True), 3, axis=0)).all()


@pytest.mark.parametrize("make, error, fragment", [
    (lambda: pn.Trainer(small_model(), batch_size=0), ValueError, "batch_size: expected an int >= 1, got 0"),
    (lambda: pn.Trainer(small_model(), batch_size=-3), ValueError, "batch_size"),
    (lambda: pn.Trainer(small_model(), batch_size=2.5), TypeError, "batch_size"),
    (lambda: pn.Trainer(small_model(), epochs=-1), ValueError, "epochs: expected an int >= 0, got -1"),
    (lambda: pn.Adam(lr=0), ValueError, "lr: expected a finite number in (0.0, inf]"),
    (lambda: pn.SGD(lr=float("nan")), ValueError, "lr"),
    (lambda: pn.SGD(lr=-1), ValueError, "lr"),
    (lambda: pn.Dropout(1.0), ValueError, "Dropout p"),
    (lambda: pn.Dropout(-0.1), ValueError, "Dropout p"),
    (lambda: pn.Dense(0, 3), ValueError, "Dense n_in"),
    (lambda: pn.Dense(3, 2, activation="swish"), ValueError, "activation"),
    (lambda: pn.Sequential([pn.Dense(3, 4), pn.Dense(5, 2)]), ValueError, "receives 4 inputs"),
    (lambda: pn.Sequential([]), ValueError, "at least one layer"),
    (lambda: pn.Sequential([pn.Dense(3, 4)], dtype="float16"), TypeError, "dtype"),
    (lambda: pn.Trainer(small_model(), loss="hinge"), ValueError, "loss"),
    (lambda: pn.Trainer(small_model(), optimizer="lbfgs"), ValueError, "optimizer"),
    (lambda: pn.Trainer(small_model(), verbose=3), ValueError, "verbose"),
    (lambda: pn.Trainer(small_model(), verbose=0).fit(X0, y0, epochs=-2), ValueError, "epochs"),
    (lambda: pn.Trainer(small_model(), verbose=0).fit(X0, y0, validation_split=1.0), ValueError, "validation_split"),
    (lambda: pn.datasets.train_test_split(X0, y0[:-1]), ValueError, "40 rows but y has 39"),
])
def test_bad_settings_are_refused_clearly(make, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        make()


def test_batch_larger_than_the_data_is_clipped_with_a_warning():
    trainer = pn.Trainer(small_model(), batch_size=1000, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="batch_size 1000 is larger than the 40 training samples"):
        trainer.fit(X0, y0)


VIEWS = {
    "fortran": lambda X: np.asfortranarray(X),
    "negative stride": lambda X: np.flipud(np.flipud(X).copy()),
    "stepped rows": lambda X: np.repeat(X, 2, axis=0)[::2],
    "stepped columns": lambda X: np.repeat(X, 2, axis=1)[:, ::2],
    "transpose": lambda X: np.ascontiguousarray(X.T).T,
    "reversed": lambda X: np.ascontiguousarray(X[::-1])[::-1],
    "read-only": lambda X: np.frombuffer(X.tobytes(), X.dtype).reshape(X.shape),
}


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_views_give_the_contiguous_result(view):
    X = VIEWS[view](X0)
    assert np.array_equal(X, X0)
    model = small_model()
    assert np.array_equal(model.predict(X), model.predict(X0))
    t1, t2 = pn.Trainer(small_model(), epochs=2, seed=1, verbose=0), pn.Trainer(small_model(), epochs=2, seed=1, verbose=0)
    t1.fit(X, y0)
    t2.fit(X0, y0)
    assert np.array_equal(t1.model.params, t2.model.params)
    assert t1.evaluate(X, y0) == t2.evaluate(X0, y0)


# ---- faults during training ------------------------------------------------------------------
def test_callback_exception_propagates_and_model_stays_consistent():
    class Boom(RuntimeError):
        pass
    seen = []

    def on_batch_end(batch, logs):
        seen.append(trainer.model.get_weights())
        if batch == 3:
            raise Boom("from the user's callback")
    trainer = pn.Trainer(small_model(), batch_size=5, epochs=3, verbose=0)
    with pytest.raises(Boom, match="from the user's callback"):
        trainer.fit(X0, y0, callbacks=[pn.LambdaCallback(on_batch_end=on_batch_end)])
    assert np.array_equal(trainer.model.get_weights(), seen[-1])   # the weights of the last step
    assert trainer.history.epochs == 0 and np.isfinite(trainer.model.params).all()
    trainer.fit(X0, y0, epochs=1)                                    # and it can go on


INTERRUPT = textwrap.dedent("""
    import numpy as np, pyneuro as pn
    rng = np.random.default_rng(0)
    X = rng.random((400_000, 64), dtype=np.float32); y = rng.integers(0, 10, 400_000)

    class Stop(Exception):
        pass

    def run(stop_after=None, keep={}):
        # 25 000 steps 2048 wide: the epoch lasts well past the signal, 1.5 s after "ready"
        model = pn.Sequential([pn.Dense(64, 2048, "relu"), pn.Dense(2048, 10)], seed=0)
        trainer = keep["trainer"] = pn.Trainer(model, batch_size=16, epochs=5, verbose=0, seed=0)
        trainer.fit(X[:64], y[:64], epochs=1)          # one completed epoch: 4 steps
        def halt(b, logs):
            if stop_after is not None and trainer.optimizer.t >= stop_after:
                raise Stop
        try:
            trainer.fit(X, y, callbacks=[pn.LambdaCallback(on_batch_end=halt)])
        except Stop:
            pass
        return model, trainer

    print("ready", flush=True)
    state = {}
    try:
        run(keep=state)
    except KeyboardInterrupt:
        trainer = state["trainer"]
        model = trainer.model
        print("interrupted", flush=True)
        steps = trainer.optimizer.t
        replay, _ = run(stop_after=steps)             # the same steps, run to completion
        print(steps > 4, np.array_equal(model.params, replay.params), trainer.history.epochs,
              np.isfinite(model.predict(X[:100])).all(), flush=True)
""")


def interrupted(script: str):
    """Run `script` (it prints "ready", trains a long epoch, and on KeyboardInterrupt prints
    "interrupted" then one line of results); send SIGINT 1.5 s after "ready" (well inside
    the epoch). Returns (first line after the signal, seconds it took, result words, stderr)."""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    first = proc.stdout.readline().strip()
    latency = time.perf_counter() - sent
    result = proc.stdout.readline().split()
    proc.wait(timeout=60)
    return first, latency, result, proc.stderr.read()


def test_keyboard_interrupt_stops_within_a_second_and_keeps_the_last_step():
    """Ctrl-C inside a long epoch: KeyboardInterrupt within a second, and the model holds
    exactly the weights of its last completed step (bitwise the same as running that
    many steps), with the history of the completed epochs."""
    first, latency, result, err = interrupted(INTERRUPT)
    assert first == "interrupted", err
    assert latency < 1.0, latency
    assert result == ["True", "True", "1", "True"], (result, err)


# ---- embedding: threads, fork, memory --------------------------------------------------------
@pytest.mark.parametrize("stack", ["chain", "layers"])
def test_predict_from_8_threads_equals_serial(stack):
    layers = [pn.Dense(30, 64, "relu"), pn.Dense(64, 5)] if stack == "chain" else \
             [pn.Dense(30, 64), pn.Sigmoid(), pn.Dense(64, 5), pn.Tanh()]   # Sigmoid after a Dense: layer by layer
    model = pn.Sequential(layers, seed=0)
    inputs = [np.random.default_rng(i).standard_normal((1 + 37 * i, 30)).astype(np.float32) for i in range(8)]
    serial = [model.predict(X) for X in inputs]
    results = [None] * 8

    def worker(i):
        for _ in range(30):
            out = model.predict(inputs[i])
            if not np.array_equal(out, serial[i]):
                results[i] = "differs"
                return
        results[i] = "same"
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["same"] * 8


@pytest.mark.parametrize("stack", ["chain", "layers"])
def test_predict_while_another_thread_trains_the_same_model(stack):
    """Each prediction made while the model trains is the prediction of the weights it had
    between two steps: checked whenever the weights did not change across the call."""
    layers = [pn.Dense(64, 48, "relu"), pn.Dense(48, 10)] if stack == "chain" else \
             [pn.Dense(64, 48), pn.ReLU(), pn.Tanh(), pn.Dense(48, 10)]
    model = pn.Sequential(layers, seed=0)
    twin = pn.Sequential([type(layer)(**layer.config()) for layer in layers], seed=0)
    X, y = pn.datasets.load_digits()
    Xq = X[:300]
    done, checked, wrong = threading.Event(), [0], []

    def predict():
        while not done.is_set():
            w0 = model.get_weights()
            out = model.predict(Xq)
            if np.array_equal(w0, model.get_weights()):
                twin.set_weights(w0)
                checked[0] += 1
                if not np.array_equal(out, twin.predict(Xq)):
                    wrong.append(float(np.abs(out - twin.predict(Xq)).max()))
    t = threading.Thread(target=predict)
    t.start()
    try:
        enough = pn.LambdaCallback(on_epoch_end=lambda e, logs: setattr(trainer, "stop_training", checked[0] >= 20))
        trainer = pn.Trainer(model, optimizer=pn.SGD(lr=1e-3), batch_size=16, epochs=5000, seed=0, verbose=0)
        trainer.fit(X, y, callbacks=[enough])
    finally:
        done.set()
        t.join()
    assert checked[0] >= 20 and not wrong, (checked[0], wrong[:5])


def test_a_second_fit_on_the_same_model_is_refused_while_the_first_runs():
    X, y = data()
    model = small_model()
    trainer = pn.Trainer(model, batch_size=8, epochs=2, seed=0, verbose=0)
    inside, release, errors = threading.Event(), threading.Event(), []

    def first():
        def hold(batch, logs):
            inside.set()
            release.wait(10)
        trainer.fit(X, y, callbacks=[pn.LambdaCallback(on_batch_end=hold)], epochs=1)
    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(10)
    for second in (trainer, pn.Trainer(model, verbose=0)):
        with pytest.raises(RuntimeError, match="fit is already running"):
            second.fit(X, y, epochs=1)
    release.set()
    t.join()
    assert trainer.epoch == 1                  # the first fit finished its one epoch
    assert trainer.fit(X, y, epochs=1).epochs == 2   # and fit works again afterwards


def test_two_models_train_in_two_threads_without_interfering():
    X, y = pn.datasets.load_digits()

    def train(seed, out):
        m = pn.Sequential([pn.Dense(64, 64, "relu"), pn.Dropout(0.1), pn.Dense(64, 10)], seed=seed)
        pn.Trainer(m, optimizer=pn.Adam(lr=2e-3), batch_size=32, epochs=3, seed=seed, verbose=0).fit(X, y)
        out[seed] = m.params.copy()
    alone, together = {}, {}
    train(1, alone)
    train(2, alone)
    threads = [threading.Thread(target=train, args=(s, together)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(alone[s], together[s]) for s in (1, 2))


FORK = textwrap.dedent("""
    import multiprocessing as mp, numpy as np, pyneuro as pn
    def work(seed):
        X, y = pn.datasets.load_digits()
        m = pn.Sequential([pn.Dense(64, 128, "relu"), pn.Dense(128, 10)], seed=seed)
        pn.Trainer(m, epochs=2, verbose=0, seed=0).fit(X, y)
        return m.params.tobytes()
    if __name__ == "__main__":
        A = np.ones((600, 600), np.float32)
        for _ in range(3):
            pn._core.gemm_into(A, A, np.empty_like(A))    # the parent's OpenMP pool is busy and alive
        here = [work(s) for s in (0, 1)]
        with mp.get_context("fork").Pool(2) as pool:
            there = pool.map(work, (0, 1))
        print("same" if here == there else "differ")
""")


def test_fork_after_openmp_work_does_not_hang():
    proc = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "same"


MEMORY = textwrap.dedent("""
    import resource, numpy as np, pyneuro as pn
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    X, y = pn.datasets.load_digits()
    m = pn.Sequential([pn.Dense(64, 128, "relu"), pn.Dropout(0.1), pn.Dense(128, 10)], seed=0)
    seen = {}
    cb = pn.LambdaCallback(on_epoch_end=lambda e, logs: seen.__setitem__(e + 1, rss()))
    pn.Trainer(m, batch_size=32, epochs=50, verbose=0, seed=0).fit(X, y, validation_split=0.1, callbacks=[cb])
    print(seen[5], seen[50])
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_memory_does_not_grow_over_50_epochs():
    proc = subprocess.run([sys.executable, "-c", MEMORY], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    at5, at50 = map(int, proc.stdout.split())
    assert at50 <= at5 * 1.03, (at5, at50)


# ---- fuzzing ---------------------------------------------------------------------------------
def test_kernels_survive_fuzzing_in_a_subprocess():
    """30,000 random, mostly malformed calls to every _core entry point: only documented
    exceptions, and a crash fails this test instead of killing the runner."""
    import fuzz_kernels
    from pyneuro import _core
    knobs = KNOBS
    public = {n for n in dir(_core) if not n.startswith("_") and callable(getattr(_core, n))} - knobs
    covered = {n for n in public if f'"{n}"' in open(fuzz_kernels.__file__).read()}
    assert public == covered, public - covered
    proc = subprocess.run([sys.executable, fuzz_kernels.__file__, "20261129", "30000"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])


from hypothesis import given, settings, strategies as st   # noqa: E402

LAYOUTS = {"C": lambda X: X, "Fortran": np.asfortranarray, "reversed": lambda X: np.ascontiguousarray(X[::-1])[::-1],
           "stepped": lambda X: np.repeat(X, 3, axis=1)[:, ::3], "transposed": lambda X: np.ascontiguousarray(X.T).T}


def reference_forward(model, X):
    a = X.astype(np.float64)
    for layer in model.layers:
        a = a @ layer.W.astype(np.float64) + layer.b
        a = np.tanh(a) if layer.activation == "tanh" else a
    return a


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(0, 40), d=st.integers(1, 12), h=st.integers(1, 16), k=st.integers(1, 6),
       model_dtype=st.sampled_from(["float32", "float64"]),
       data_dtype=st.sampled_from(["float32", "float64", "int32", "uint8", "float16", "bool", "complex64"]),
       layout=st.sampled_from(sorted(LAYOUTS)), width_off=st.sampled_from([0, 0, 0, 1, -1]),
       poison=st.sampled_from([None, None, np.nan, np.inf]), seed=st.integers(0, 2**31))
def test_predict_fuzz(n, d, h, k, model_dtype, data_dtype, layout, width_off, poison, seed):
    """Random shapes, dtypes, memory layouts and values: a documented exception naming the
    problem, or exactly what a NumPy float64 forward pass gives (of X converted to the
    model's dtype)."""
    rng = np.random.default_rng(seed)
    model = pn.Sequential([pn.Dense(d, h, "tanh"), pn.Dense(h, k)], seed=seed % 1000, dtype=model_dtype)
    X = rng.standard_normal((n, max(d + width_off, 1))).astype(data_dtype) if data_dtype != "bool" else \
        rng.random((n, max(d + width_off, 1))) > 0.5
    if poison is not None and n and X.dtype.kind == "f":
        X.flat[rng.integers(X.size)] = poison
    X = LAYOUTS[layout](X)
    expected_error = None
    if X.dtype.kind == "c":     # other real dtypes are read as their values in the model's dtype
        expected_error = (TypeError, "dtype")
    elif n == 0:                # checked before the width (check_features' order)
        expected_error = (ValueError, "at least one sample")
    elif X.shape[1] != d:
        expected_error = (ValueError, f"expects {d} features")
    elif not np.isfinite(X).all():
        expected_error = (ValueError, "NaN or infinity")
    if expected_error:
        with pytest.raises(expected_error[0], match=expected_error[1]):
            model.predict(X)
        return
    out = model.predict(X)
    tol = 1e-4 if model_dtype == "float32" else 1e-10
    np.testing.assert_allclose(out, reference_forward(model, X), rtol=tol, atol=tol)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(1, 60), batch=st.integers(1, 80), classes=st.integers(2, 5),
       layout=st.sampled_from(sorted(LAYOUTS)), opt=st.sampled_from(["sgd", "adam", "rmsprop", "adamw"]),
       label_dtype=st.sampled_from(["int64", "int32", "uint8"]), seed=st.integers(0, 2**31))
def test_fit_fuzz(n, batch, classes, layout, opt, label_dtype, seed):
    """Random sizes, batch sizes (also larger than the data), layouts, optimizers and label
    types: one epoch trains to finite weights, the same as on contiguous input."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(label_dtype)
    results = []
    for data in (LAYOUTS[layout](X), X):
        model = pn.Sequential([pn.Dense(5, 7, "relu"), pn.Dense(7, classes)], seed=1)
        trainer = pn.Trainer(model, optimizer=opt, batch_size=batch, epochs=1, seed=2, verbose=0)
        with warnings_as_expected(batch > n):
            trainer.fit(data, y)
        results.append(model.params.copy())
    assert np.isfinite(results[0]).all() and np.array_equal(results[0], results[1])


def warnings_as_expected(clipped):
    import contextlib
    return pytest.warns(UserWarning, match="larger than") if clipped else contextlib.nullcontext()
