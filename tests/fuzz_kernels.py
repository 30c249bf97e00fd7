"""Fuzz every pyneuro._core entry point with random, mostly-wrong arguments.

    python tests/fuzz_kernels.py SEED COUNT

Each call starts from a consistent one (random small sizes, zeros included) and
then mutates some of it: another dtype, a dimension more or less, a shape off by
one, a strided or Fortran view, a read-only output, None, a list, NaN/inf scalars.
Only TypeError/ValueError (or a result) may come back; anything else is printed
and the exit status is 1. A crash kills this process, not the test runner
(tests/test_robustness.py runs it in a subprocess).
"""
import sys

import numpy as np

from pyneuro import _core

ACTS = sorted(_core.ACTIVATIONS)
KINDS = sorted(_core.POINTWISE_LOSSES)


def call(rng, name):
    d = lambda: int(rng.choice([0, 1, 2, 3, 5, 7, 17]))            # noqa: E731
    B, n, m, k = d(), d(), d(), d()
    dt = rng.choice([np.float32, np.float64])
    f = lambda *shape: rng.standard_normal(shape).astype(dt)        # noqa: E731
    if name == "gemm_into":
        ta, tb = bool(rng.integers(2)), bool(rng.integers(2))
        arrays = [f(*((k, B) if ta else (B, k))), f(*((n, k) if tb else (k, n))), f(B, n)]
        return lambda a: _core.gemm_into(*a, trans_a=ta, trans_b=tb, alpha=float(rng.standard_normal()),
                                         beta=float(rng.choice([0.0, 1.0, np.nan]))), arrays, {2}
    if name == "dense_forward":
        act = str(rng.choice(ACTS))
        return lambda a: _core.dense_forward(*a, act, 0.1), [f(B, n), f(n, m), f(m), f(B, m), f(B, m)], {3, 4}
    if name == "dense_backward":
        return lambda a: _core.dense_backward(*a), [f(B, n), f(n, m), f(B, m), f(n, m), f(m), f(B, n)], {3, 4, 5}
    if name == "activation_forward":
        act = str(rng.choice(ACTS))
        return lambda a: _core.activation_forward(act, 0.2, *a), [f(B, m), f(B, m)], {1}
    if name == "activation_backward":
        act = str(rng.choice(ACTS))
        return lambda a: _core.activation_backward(act, 0.2, *a), [f(B, m), f(B, m), f(B, m), f(B, m)], {3}
    if name == "softmax_cross_entropy":
        y = rng.integers(0, max(m, 1), B) if rng.integers(2) else rng.random((B, m)).astype(dt)
        return lambda a: _core.softmax_cross_entropy(*a), [f(B, m), y, f(B, m)], {2}
    if name == "pointwise_loss":
        kind = str(rng.choice(KINDS))
        return lambda a: _core.pointwise_loss(kind, *a), [f(B, m), rng.random((B, m)).astype(dt), f(B, m)], {2}
    if name == "sgd_step":
        return lambda a: _core.sgd_step(*a, float(rng.choice([0.1, -1, np.nan])), momentum=0.9), [f(n), f(n), f(n)], {0, 2}
    if name == "adam_step":
        return lambda a: _core.adam_step(*a, int(rng.integers(-1, 3)), 0.01), [f(n), f(n), f(n), f(n)], {0, 2, 3}
    if name == "rmsprop_step":
        return lambda a: _core.rmsprop_step(*a, 0.01), [f(n), f(n), f(n)], {0, 2}
    if name == "global_norm":
        return lambda a: _core.global_norm(*a), [f(n)], set()
    if name == "gather_rows":
        idx = rng.integers(-2, max(B, 1) + 2, k).astype(np.int64)
        return lambda a: _core.gather_rows(*a), [f(B, n), idx, f(k, n)], {2}
    if name == "dropout_mask":
        return lambda a: _core.dropout_mask(*a, float(rng.choice([0.0, 0.5, 1.0, -0.1, np.nan]))), [f(n)], {0}
    if name == "multiply":
        return lambda a: _core.multiply(*a), [f(n), f(n), f(n)], {2}
    if name == "affine_columns":
        divide = bool(rng.integers(2))
        return lambda a: _core.affine_columns(a[0], a[1], a[2], divide, a[3]), [f(B, n), f(n), f(n), f(B, n)], {3}
    if name == "argmax_rows":
        return lambda a: _core.argmax_rows(*a), [f(B, m), np.zeros(B, np.int64)], {1}
    if name == "all_finite":
        return lambda a: _core.all_finite(*a), [f(B, n)], set()
    if name == "rows_as_given":
        width = [n, (n,), (n, 1), None, -1, 2**62][int(rng.integers(6))]
        return lambda a: _core.rows_as_given(a[0], width, bool(rng.integers(2))), [f(B, n)], set()
    if name == "InferenceChain":
        acts = [str(rng.choice(ACTS)) for _ in range(2)]
        return (lambda a: _core.InferenceChain([("dense", a[0], a[1], acts[0], 0.1), ("dense", a[2], a[3], acts[1], 0.1)]
                                               ).forward(a[4], a[5]),
                [f(n, k), f(k), f(k, m), f(m), f(B, n), f(B, m)], {5})
    if name in ("ConvPlan", "PoolPlan"):
        C, H, W, O = int(rng.integers(1, 4)), int(rng.integers(3, 7)), int(rng.integers(3, 7)), int(rng.integers(1, 4))
        if name == "ConvPlan":
            p = _core.ConvPlan(C, H, W, O, kernel=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                               stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, 2)), dtype=dt)
            if rng.integers(2):
                act = str(rng.choice(ACTS))
                return (lambda a: p.forward(*a, act, 0.1),
                        [f(B, p.in_features), f(O, p.k), f(O), f(B, p.out_features), f(B, p.out_features)], {3, 4})
            return (lambda a: p.backward(*a), [f(B, p.in_features), f(O, p.k), f(B, p.out_features), f(O, p.k), f(O),
                                               f(B, p.in_features)], {3, 4, 5})
        p = _core.PoolPlan(C, H, W, str(rng.choice(["max", "avg"])), kernel=int(rng.integers(1, 3)), dtype=dt)
        return (lambda a: (p.forward(a[0], a[1]), p.backward(a[2], a[3])),
                [f(B, p.in_features), f(B, p.out_features), f(B, p.out_features), f(B, p.in_features)], {1, 3})
    C, P = k + 1, int(rng.integers(1, 4))          # channels, positions per channel
    if name in ("global_avg_pool_forward", "global_avg_pool_backward"):
        arrays = [f(B, C * P), f(B, C)] if name.endswith("forward") else [f(B, C), f(B, C * P)]
        return lambda a: getattr(_core, name)(*a, C), arrays, {1}
    if name == "channel_sums":
        return lambda a: _core.channel_sums(a[0], C, a[1]), [f(B, C * P), f(C)], {1}
    if name in ("channel_sq_dev", "channel_dot"):
        second = f(C) if name == "channel_sq_dev" else f(B, C * P)
        return lambda a: getattr(_core, name)(a[0], a[1], C, a[2]), [f(B, C * P), second, f(C)], {2}
    if name == "batchnorm_apply":
        return (lambda a: _core.batchnorm_apply(*a[:5], C, a[5], a[6]),
                [f(B, C * P), f(C), f(C), f(C), f(C), f(B, C * P), f(B, C * P)], {5, 6})
    if name == "batchnorm_input_grad":
        N = float(rng.choice([B * P, 0, -1, np.nan]))
        return (lambda a: _core.batchnorm_input_grad(*a[:6], N, C, a[6]),
                [f(B, C * P), f(B, C * P), f(C), f(C), f(C), f(C), f(B, C * P)], {6})
    if name == "layernorm_forward":
        eps = float(rng.choice([1e-5, 0.0, -1.0, np.nan]))
        return (lambda a: _core.layernorm_forward(a[0], a[1], a[2], eps, a[3], a[4], a[5]),
                [f(B, n), f(n), f(n), f(B, n), f(B), f(B, n)], {3, 4, 5})
    if name == "layernorm_backward":
        return (lambda a: _core.layernorm_backward(*a), [f(B, n), f(B, n), f(n), f(B), f(B, n), f(n), f(n)], {4, 5, 6})
    if name == "TrainLoop":
        size = n * m + m
        rule = str(rng.choice(["sgd", "adam"]))
        state = [f(size), f(size)] if rule == "adam" else [None, None]

        def run(a):
            loop = _core.TrainLoop([("dense", a[2], a[3], a[4], a[5], "relu", 0.0)], a[0], a[1], a[6], a[7], None, 2,
                                   "cross_entropy", 1.0, 1.0, None, rule, {}, *state, [(0, size)], 0.0, True, 0.0, 0)
            return loop.run(a[8], 0, 2, np.full(2, 0.1), 0, [], np.empty(2), np.empty(2, np.int64))
        return run, [f(size), f(size), f(n, m), f(m), f(n, m), f(m), f(B, n), rng.integers(0, max(m, 1), B),
                     rng.integers(-1, max(B, 1) + 1, 4).astype(np.int64)], {0, 1, 4, 5}
    raise KeyError(name)


def mutate(rng, a, is_output):
    if not isinstance(a, np.ndarray):
        return a
    r = rng.integers(12)
    if r == 0:
        return a.astype(rng.choice([np.int64, np.float16, np.complex64, bool, object]))
    if r == 1:
        return a.astype(np.float64 if a.dtype == np.float32 else np.float32)
    if r == 2:
        return a[None]
    if r == 3 and a.ndim:
        return a.reshape(-1) if a.ndim > 1 else a.reshape(1, -1)
    if r == 4 and a.ndim:
        return np.resize(a, (a.shape[0] + 1,) + a.shape[1:])
    if r == 5 and a.ndim and a.shape[-1] > 1:
        return a[..., ::2]
    if r == 6:
        return np.asfortranarray(a)
    if r == 7 and is_output:
        a = a.copy()
        a.flags.writeable = False
        return a
    if r == 8:
        return None
    if r == 9:
        return a.tolist()
    if r == 10 and a.dtype.kind == "f" and a.size:
        a = a.copy()
        a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf])
        return a
    return a


def main(seed, count):
    rng = np.random.default_rng(seed)
    names = ["gemm_into", "dense_forward", "dense_backward", "activation_forward",
             "activation_backward", "softmax_cross_entropy", "pointwise_loss", "sgd_step", "adam_step",
             "rmsprop_step", "global_norm", "gather_rows", "dropout_mask", "multiply", "argmax_rows",
             "all_finite", "rows_as_given", "InferenceChain", "affine_columns", "ConvPlan", "PoolPlan", "global_avg_pool_forward",
             "global_avg_pool_backward", "channel_sums", "channel_sq_dev", "channel_dot", "batchnorm_apply",
             "batchnorm_input_grad", "layernorm_forward", "layernorm_backward", "TrainLoop"]
    bad = 0
    for i in range(count):
        name = names[i % len(names)]
        fn, arrays, outputs = call(rng, name)
        if rng.integers(4):   # three calls in four are mutated somewhere
            j = int(rng.integers(len(arrays)))
            arrays[j] = mutate(rng, arrays[j], j in outputs)
        try:
            fn(arrays)
        except (TypeError, ValueError):
            pass
        except Exception as e:  # anything else is a defect
            bad += 1
            print(f"call {i} {name}: {type(e).__name__}: {e}")
    print(f"{count} calls, {bad} undocumented exceptions")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
