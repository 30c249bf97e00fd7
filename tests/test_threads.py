"""Threads: the thread setting, bitwise-identical results on 1, 2 and 3 threads for
every kernel (sizes large enough that the work is really split), and GIL release."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import pyneuro
from pyneuro import _core
from reference import DTYPES, KNOBS

needs_openmp = pytest.mark.skipif(not _core.openmp_enabled(), reason="built without OpenMP")
THREADS = (1, 2, 3, 4)


# ---- the setting ------------------------------------------------------------------------
@needs_openmp
def test_get_num_threads_honours_set_num_threads(num_threads):
    for n in (1, 2, 3, 7, np.int64(2)):
        num_threads(n)
        assert _core.get_num_threads() == n
    num_threads(None)
    assert _core.get_num_threads() >= 1


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-1, ValueError), ("2", TypeError),
                                       (True, TypeError), (2.0, TypeError), ([2], TypeError)])
def test_set_num_threads_rejects(num_threads, bad, error):
    num_threads(2)
    with pytest.raises(error, match="set_num_threads"):
        _core.set_num_threads(bad)
    if _core.openmp_enabled():
        assert _core.get_num_threads() == 2  # unchanged


@needs_openmp
@pytest.mark.parametrize("omp", ["1", "3"])
def test_omp_num_threads_is_the_default(omp):
    env = dict(os.environ, OMP_NUM_THREADS=omp)
    out = subprocess.run([sys.executable, "-c", "import pyneuro;print(pyneuro.get_num_threads())"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == omp


def test_package_exports_the_thread_setting():
    assert pyneuro.get_num_threads is _core.get_num_threads
    assert pyneuro.set_num_threads is _core.set_num_threads
    assert pyneuro.openmp_enabled() == _core.openmp_enabled()


# ---- determinism: every kernel, 1 vs 2 vs 3 threads ---------------------------------------
def _gemm(M, K, N, ta, tb):
    def run(rng, dt):
        A = rng.standard_normal((K, M) if ta else (M, K)).astype(dt)
        B = rng.standard_normal((N, K) if tb else (K, N)).astype(dt)
        C = rng.standard_normal((M, N)).astype(dt)
        return [_core.gemm_into(A, B, C, ta, tb, alpha=0.7, beta=-1.3)]
    return run


def _dense_forward(act):
    def run(rng, dt):
        X, W, b = (rng.standard_normal(s).astype(dt) for s in ((300, 257), (257, 130), (130,)))
        Z, A = np.empty((300, 130), dt), np.empty((300, 130), dt)
        _core.dense_forward(X, W, b, Z, A, act, 0.1)
        return [Z, A]
    return run


def _one_row(rng, dt):
    """One row, α = 1, β = 0: its K slices are spread over the threads (row_k_slices)."""
    x, W, b = (rng.standard_normal(s).astype(dt) for s in ((1, 1000), (1000, 130), (130,)))
    Z, A = np.empty((1, 130), dt), np.empty((1, 130), dt)
    _core.dense_forward(x, W, b, Z, A, "relu", 0.0)
    return [Z, A, _core.gemm_into(x, W.T.copy(), np.empty((1, 130), dt), trans_b=True)]


def _dense_backward(rng, dt):
    X, W, D = (rng.standard_normal(s).astype(dt) for s in ((1000, 130), (130, 70), (1000, 70)))
    dW, db, dX = np.empty((130, 70), dt), np.empty(70, dt), np.empty((1000, 130), dt)
    _core.dense_backward(X, W, D, dW, db, dX)
    return [dW, db, dX]


def _activation(act):
    def run(rng, dt):
        Z, G = (rng.standard_normal((1000, 67)).astype(dt) for _ in range(2))
        A, dZ = np.empty_like(Z), np.empty_like(Z)
        _core.activation_forward(act, 0.2, Z, A)
        _core.activation_backward(act, 0.2, Z, A, G, dZ)
        return [A, dZ]
    return run


def _cross_entropy(targets):
    def run(rng, dt):
        Z = rng.standard_normal((5000, 10)).astype(dt)       # above PARALLEL_MIN_WORK: threads run
        y = rng.integers(0, 10, 5000) if targets == "labels" else rng.dirichlet(np.ones(10), 5000).astype(dt)
        dZ = np.empty_like(Z)
        return [_core.softmax_cross_entropy(Z, y, dZ), dZ]
    return run


def _pointwise(kind):
    def run(rng, dt):
        Z, Y = rng.standard_normal((6000, 7)).astype(dt), rng.uniform(0, 1, (6000, 7)).astype(dt)
        dZ = np.empty_like(Z)
        return [_core.pointwise_loss(kind, Z, Y, dZ, huber_delta=0.5), dZ]
    return run


N = 100003


def _sgd(nesterov):
    def run(rng, dt):
        w, g, v = (rng.standard_normal(N).astype(dt) for _ in range(3))
        _core.sgd_step(w, g, v, 0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
        return [w, v]
    return run


def _adam(decoupled):
    def run(rng, dt):
        w, g, m = (rng.standard_normal(N).astype(dt) for _ in range(3))
        v = rng.uniform(0, 1, N).astype(dt)
        _core.adam_step(w, g, m, v, 3, 1e-3, weight_decay=0.01, decoupled=decoupled)
        return [w, m, v]
    return run


def _rmsprop(rng, dt):
    w, g, v = rng.standard_normal(N).astype(dt), rng.standard_normal(N).astype(dt), np.zeros(N, dt)
    _core.rmsprop_step(w, g, v, 1e-3, weight_decay=0.01)
    return [w, v]


def _global_norm(rng, dt):
    return [_core.global_norm(rng.standard_normal(20 * 16384 + 5).astype(dt))]


def _gather_rows(rng, dt):
    X = rng.standard_normal((1000, 33)).astype(dt)
    out = np.empty((2000, 33), dt)
    return [_core.gather_rows(X, rng.integers(0, 1000, 2000), out)]


def _gather_rows_uint8(rng, dt):
    X = rng.integers(0, 256, (1000, 33)).astype(np.uint8)
    return [_core.gather_rows(X, rng.integers(0, 1000, 2000), np.empty((2000, 33), dt))]


def _affine_columns(rng, dt):
    X = rng.standard_normal((700, 97)).astype(dt)
    m, s = rng.standard_normal(97).astype(dt), rng.uniform(0.5, 2, 97).astype(dt)
    return [_core.affine_columns(X, m, s, False, np.empty_like(X)), _core.affine_columns(X, m, s, True, np.empty_like(X))]


def _inference_chain(rng, dt):
    Ws = [rng.standard_normal(s).astype(dt) * 0.1 for s in ((300, 200), (200, 70), (70, 10))]
    bs = [rng.standard_normal(s[1]).astype(dt) for s in ((300, 200), (200, 70), (70, 10))]
    chain = _core.InferenceChain([("dense", W, b, act, 0.0) for W, b, act in zip(Ws, bs, ["gelu", "tanh", "softmax"])])
    X = rng.standard_normal((257, 300)).astype(dt)
    conv = _core.ConvPlan(3, 12, 11, 8, kernel=3, padding=(1, 1, 1, 1), dtype=dt)
    pool = _core.PoolPlan(8, 12, 11, "max", kernel=2, dtype=dt)
    Wc, bc = rng.standard_normal((8, conv.k)).astype(dt), rng.standard_normal(8).astype(dt)
    Wd, bd = rng.standard_normal((pool.out_features, 5)).astype(dt), rng.standard_normal(5).astype(dt)
    images = _core.InferenceChain([("conv", conv, Wc, bc, "relu", 0.0), ("pool", pool), ("dense", Wd, bd, "softmax", 0.0)])
    Xi = rng.standard_normal((100, conv.in_features)).astype(dt)
    return [chain.forward(X, np.empty((257, 10), dt)), chain.forward(X[:1], np.empty((1, 10), dt)),
            images.forward(Xi, np.empty((100, 5), dt)), images.forward(Xi[:1], np.empty((1, 5), dt))]


def _conv(rng, dt):
    plan = _core.ConvPlan(16, 13, 12, 24, kernel=(3, 4), stride=(1, 2), padding=(1, 1, 2, 1), dtype=dt)
    X = rng.standard_normal((64, plan.in_features)).astype(dt)
    W = rng.standard_normal((24, plan.k)).astype(dt)
    b, D = rng.standard_normal(24).astype(dt), rng.standard_normal((64, plan.out_features)).astype(dt)
    Z, A = np.empty_like(D), np.empty_like(D)
    dW, db, dX = np.empty_like(W), np.empty_like(b), np.empty_like(X)
    plan.forward(X, W, b, Z, A, "elu", 0.7)
    plan.backward(X, W, D, dW, db, dX)
    return [Z, A, dW, db, dX]


def _dropout_mask(rng, dt):
    U = rng.uniform(0, 1, N).astype(dt)
    _core.dropout_mask(U, 0.3)
    return [U]


def _multiply(rng, dt):
    A, B = rng.standard_normal(N).astype(dt), rng.standard_normal(N).astype(dt)
    return [_core.multiply(A, B, np.empty(N, dt))]


def _argmax_rows(rng, dt):
    return [_core.argmax_rows(rng.standard_normal((1000, 37)).astype(dt), np.empty(1000, np.int64))]


def _pool(kind, C, H, W, k, s, p, B):
    def run(rng, dt):
        plan = _core.PoolPlan(C, H, W, kind, kernel=k, stride=s, padding=p, dtype=dt)
        Y = plan.forward(rng.standard_normal((B, plan.in_features)).astype(dt), np.empty((B, plan.out_features), dt))
        return [Y, plan.backward(rng.standard_normal(Y.shape).astype(dt), np.empty((B, plan.in_features), dt))]
    return run


def _global_avg_pool(rng, dt):
    X = rng.standard_normal((64, 32 * 25)).astype(dt)
    Y = _core.global_avg_pool_forward(X, np.empty((64, 32), dt), 32)
    return [Y, _core.global_avg_pool_backward(Y, np.empty_like(X), 32)]


def _batchnorm(B, C, P):
    """Training BatchNorm composed from its pieces, as the layer does it."""
    def run(rng, dt):
        X, dY = (rng.standard_normal((B, C * P)).astype(dt) for _ in range(2))
        g, b = rng.standard_normal(C).astype(dt), rng.standard_normal(C).astype(dt)
        mean = _core.channel_sums(X, C, np.empty(C, dt)) / (B * P)
        inv = (1 / np.sqrt(_core.channel_sq_dev(X, mean, C, np.empty(C, dt)) / (B * P) + 1e-5)).astype(dt)
        xhat, Y, dX = np.empty_like(X), np.empty_like(X), np.empty_like(X)
        _core.batchnorm_apply(X, mean, inv, g, b, C, xhat, Y)
        sums = [_core.channel_sums(dY, C, np.empty(C, dt)), _core.channel_dot(dY, xhat, C, np.empty(C, dt))]
        _core.batchnorm_input_grad(dY, xhat, g, inv, *sums, B * P, C, dX)
        return [mean, inv, xhat, Y, *sums, dX]
    return run


def _layernorm(rng, dt):
    B, F = 700, 67
    X, dY = (rng.standard_normal((B, F)).astype(dt) for _ in range(2))
    g, b = rng.standard_normal(F).astype(dt), rng.standard_normal(F).astype(dt)
    out = [np.empty_like(X), np.empty(B, dt), np.empty_like(X), np.empty_like(X), np.empty(F, dt), np.empty(F, dt)]
    _core.layernorm_forward(X, g, b, 1e-5, *out[:3])
    _core.layernorm_backward(dY, out[0], g, out[1], *out[3:])
    return out


def _train_loop(rng, dt):
    """Three whole steps (gather of uint8 rows, Dense–Dropout–Dense, weighted cross-entropy, Adam
    with clipping) of _core.TrainLoop, sizes that split every piece over the threads."""
    widths = (300, 200, 10)
    params = (rng.standard_normal(300 * 200 + 200 + 200 * 10 + 10) * 0.05).astype(dt)
    grads, m, v = np.zeros_like(params), np.zeros_like(params), np.zeros_like(params)
    W1, b1 = params[:60000].reshape(300, 200), params[60000:60200]
    W2, b2 = params[60200:62200].reshape(200, 10), params[62200:]
    dW1, db1 = grads[:60000].reshape(300, 200), grads[60000:60200]
    dW2, db2 = grads[60200:62200].reshape(200, 10), grads[62200:]
    X = rng.integers(0, 256, (900, widths[0]), dtype=np.uint8)
    y, w = rng.integers(0, 10, 900), rng.random(900).astype(dt)
    loop = _core.TrainLoop([("dense", W1, b1, dW1, db1, "gelu", 0.0), ("dropout", 200, 0.3),
                            ("dense", W2, b2, dW2, db2, "identity", 0.0)], params, grads, X, y, w, 300,
                           "cross_entropy", 1.0, 1.0, None, "adam", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
                           m, v, [(0, params.size)], 1.0, True, 0.0, 0)
    perm = rng.permutation(900)
    losses, right = np.empty(3), np.empty(3, np.int64)
    loop.run(perm, 0, 3, np.full(3, 1e-3), 0, [rng.random(900 * 200).astype(dt)], losses, right)
    return [params, grads, m, v, losses, right]


KERNELS = {
    "train_loop": _train_loop,
    "maxpool_k2": _pool("max", 32, 24, 24, 2, 2, 0, 5),
    "maxpool_k3_s2_overlapping": _pool("max", 7, 17, 19, 3, 2, 1, 23),
    "avgpool_k3_s2_overlapping": _pool("avg", 7, 17, 19, 3, 2, 1, 23),
    "global_avg_pool": _global_avg_pool,
    "batchnorm_images": _batchnorm(37, 7, 143),     # one channel per task
    "batchnorm_dense": _batchnorm(3001, 37, 1),     # 16 channels per task
    "layernorm": _layernorm,
    **{f"gemm_300x500x700_ta{int(ta)}_tb{int(tb)}": _gemm(300, 500, 700, ta, tb)
       for ta in (False, True) for tb in (False, True)},
    "gemm_50x600x700_column_split": _gemm(50, 600, 700, False, False),   # threads split N
    "gemm_700x600x20_row_split": _gemm(700, 600, 20, False, True),       # threads split M
    "gemm_997x300x997_grid": _gemm(997, 300, 997, True, True),           # 2-d grid, edge tiles
    "gemm_20x300x4200_two_slabs": _gemm(20, 300, 4200, True, False),
    **{f"dense_forward_{a}": _dense_forward(a) for a in sorted(_core.ACTIVATIONS)},
    "one_row_k_slices": _one_row,
    "dense_backward": _dense_backward,
    "inference_chain": _inference_chain,
    "conv": _conv,
    **{f"activation_{a}": _activation(a) for a in sorted(_core.ACTIVATIONS)},
    "cross_entropy_labels": _cross_entropy("labels"),
    "cross_entropy_probabilities": _cross_entropy("probabilities"),
    **{f"pointwise_{k}": _pointwise(k) for k in sorted(_core.POINTWISE_LOSSES)},
    "sgd": _sgd(False), "sgd_nesterov": _sgd(True),
    "adam": _adam(False), "adamw": _adam(True),
    "rmsprop": _rmsprop,
    "global_norm": _global_norm,
    "gather_rows": _gather_rows,
    "gather_rows_uint8": _gather_rows_uint8,
    "affine_columns": _affine_columns,
    "dropout_mask": _dropout_mask,
    "multiply": _multiply,
    "argmax_rows": _argmax_rows,
}


def as_bytes(results):
    return [np.asarray(r).tobytes() for r in results]


@needs_openmp
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_bitwise_identical_on_any_thread_count(num_threads, kernel, dtype):
    outputs = {}
    for n in THREADS:
        num_threads(n)
        outputs[n] = as_bytes(KERNELS[kernel](np.random.default_rng(1234), dtype))
    assert outputs[2] == outputs[1], f"{kernel}: 2 threads differ from 1"
    assert outputs[3] == outputs[1], f"{kernel}: 3 threads differ from 1"
    assert outputs[4] == outputs[1], f"{kernel}: 4 threads differ from 1"


def test_every_kernel_has_a_determinism_case():
    knobs = KNOBS | {"all_finite", "rows_as_given"}   # predicates: nothing to add up
    wrappers = {n for n in dir(_core) if not n.startswith("_") and callable(getattr(_core, n))} - knobs
    called = {n for run in KERNELS.values() for n in run.__code__.co_names}
    assert wrappers - called == set(), "a new kernel needs a case in KERNELS"


# ---- the GIL is released while a kernel runs --------------------------------------------------
def _count_while(work):
    """Run work() in a thread and count loop turns here until it returns: (seconds, turns/s)."""
    done, took = threading.Event(), []

    def worker():
        t0 = time.perf_counter()
        work()
        took.append(time.perf_counter() - t0)
        done.set()

    thread = threading.Thread(target=worker)
    turns = 0
    start = time.perf_counter()
    thread.start()
    while not done.is_set():
        turns += 1
    elapsed = time.perf_counter() - start
    thread.join()
    return took[0], turns / elapsed


def _big_gemm():
    A = np.random.default_rng(0).standard_normal((1700, 1700))
    C = np.empty_like(A)
    return lambda: _core.gemm_into(A, A, C)


def _big_activation():
    Z = np.random.default_rng(0).standard_normal((2000, 2500))
    A = np.empty_like(Z)
    return lambda: _core.activation_forward("gelu", 0.0, Z, A)


@pytest.mark.parametrize("make_work", [_big_gemm, _big_activation], ids=["gemm", "gelu"])
def test_kernels_release_the_gil(num_threads, make_work):
    """On 1 kernel thread the counting loop keeps its speed; with the GIL held it would
    stall for the whole kernel (getting only ~5 ms switch intervals between calls)."""
    num_threads(1)
    kernel = make_work()
    once = 0.0
    for _ in range(2):  # the first call also allocates work buffers and touches pages
        t0 = time.perf_counter()
        kernel()
        once = time.perf_counter() - t0
        if once > 0.3:
            break
    repeats = max(1, int(np.ceil(0.3 / once)))  # a single call for the gemm

    def work():
        for _ in range(repeats):
            kernel()

    seconds, rate = _count_while(work)
    assert seconds > 0.2, f"kernel took only {seconds:.3f} s: too short to show anything"
    _, free_rate = _count_while(lambda: time.sleep(seconds))
    assert rate > 0.3 * free_rate, f"counter ran at {rate / free_rate:.0%} of its free speed"


# ---- limits the runtime and the embedding application set ---------------------------------
def test_a_thread_count_the_runtime_cannot_honour_is_refused(num_threads):
    """65536 threads were accepted once and the next parallel kernel crashed inside OpenMP."""
    cap = _core.max_threads()
    assert 4 <= cap <= 4 * (os.cpu_count() or 1)
    for n in (cap + 1, 16384, 65536, 2**40):
        with pytest.raises(ValueError, match=f"set_num_threads: n must be <= {cap}"):
            _core.set_num_threads(n)
    num_threads(cap)
    A = np.ones((200, 200), np.float32)
    np.testing.assert_array_equal(_core.gemm_into(A, A, np.empty_like(A)), np.full((200, 200), 200, np.float32))


LIMITS = """
import numpy as np, pyneuro as pn
from threadpoolctl import threadpool_limits
if not pn.openmp_enabled():
    print("serial"); raise SystemExit
pn.set_num_threads(2)                       # the library first, then the application's limit
with threadpool_limits(1, user_api="openmp"):
    first = pn.get_num_threads()
after_first = pn.get_num_threads()
pn.set_num_threads(None)
with threadpool_limits(1, user_api="openmp"):
    pn.set_num_threads(2)                   # the limit first, then the library asks for more
    second = pn.get_num_threads()
    pn.set_num_threads(1)
    fewer = pn.get_num_threads()
pn.set_num_threads(2)
print(first, after_first, second, fewer, pn.get_num_threads())
"""


def test_an_applications_thread_limit_holds_in_both_orders():
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    proc = subprocess.run([sys.executable, "-c", LIMITS], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.strip() == "serial":
        pytest.skip("built without OpenMP")
    assert proc.stdout.split() == ["1", "2", "1", "1", "2"]
