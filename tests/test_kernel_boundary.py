"""The one boundary (DESIGN.md, rule 1): every _core wrapper refuses bad arrays with a
TypeError/ValueError that names the argument, and accepts read-only inputs.

Each wrapper is described once (SPECS): how to build a good call and which of its
arrays are outputs, shape-checked against the others, or int64. Every bad variant of
every array is then derived from that description.
"""
import re
from dataclasses import dataclass

import numpy as np
import pytest

from pyneuro import _core
from reference import DTYPES, KNOBS, other_float


@dataclass
class Spec:
    call: object                    # call(arrays: dict) -> result
    shapes: dict                    # name -> shape, in call order; int64 names listed in `ints`
    outputs: tuple = ()             # written: must be writable
    checked: tuple = ()             # shapes checked against earlier arrays
    ints: tuple = ()                # int64 arrays (labels, indices, argmax output)
    optional: tuple = ()            # may be None
    make_int: object = None         # make_int(name, shape) -> valid int64 array
    any_real: tuple = ()            # read in any real dtype (converted): only complex is refused

    def arrays(self, dtype, rng=None):
        rng = rng or np.random.default_rng(0)
        return {name: (self.make_int(name, shape) if name in self.ints
                       else rng.uniform(0.1, 0.9, shape).astype(dtype))
                for name, shape in self.shapes.items()}


def _labels(name, shape):
    return np.arange(shape[0], dtype=np.int64) % 3


def _conv(a):
    """A ConvPlan's arguments, in the dtype most of the arrays have (a test changes one at a time)."""
    dts = [x.dtype for x in a.values() if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    return dict(C=2, H=5, W=4, out_channels=3, kernel=(3, 2), padding=(1, 0, 0, 1),
                dtype=max(set(dts), key=dts.count) if dts else np.float32)


SPECS = {
    "gemm_into": Spec(lambda a: _core.gemm_into(a["A"], a["B"], a["C"]),
                      {"A": (5, 7), "B": (7, 4), "C": (5, 4)}, outputs=("C",), checked=("B", "C")),
    "dense_forward": Spec(lambda a: _core.dense_forward(a["X"], a["W"], a["b"], a["Z"], a["A"], "tanh"),
                          {"X": (5, 3), "W": (3, 4), "b": (4,), "Z": (5, 4), "A": (5, 4)},
                          outputs=("Z", "A"), checked=("W", "b", "Z", "A"), optional=("A",)),
    "dense_backward": Spec(lambda a: _core.dense_backward(a["X"], a["W"], a["delta"], a["dW"], a["db"], a["dX"]),
                           {"X": (5, 3), "W": (3, 4), "delta": (5, 4), "dW": (3, 4), "db": (4,), "dX": (5, 3)},
                           outputs=("dW", "db", "dX"), checked=("W", "delta", "dW", "db", "dX"),
                           optional=("dX",)),
    "activation_forward": Spec(lambda a: _core.activation_forward("gelu", 0.0, a["Z"], a["A"]),
                               {"Z": (5, 4), "A": (5, 4)}, outputs=("A",), checked=("A",)),
    "activation_backward": Spec(lambda a: _core.activation_backward("softmax", 0.0, a["Z"], a["A"], a["dA"], a["delta"]),
                                {"Z": (5, 4), "A": (5, 4), "dA": (5, 4), "delta": (5, 4)},
                                outputs=("delta",), checked=("A", "dA", "delta")),
    "cross_entropy_labels": Spec(lambda a: _core.softmax_cross_entropy(a["Z"], a["y"], a["delta"]),
                                 {"Z": (5, 4), "y": (5,), "delta": (5, 4)}, outputs=("delta",),
                                 checked=("y", "delta"), ints=("y",), make_int=_labels, optional=("delta",)),
    "cross_entropy_probabilities": Spec(lambda a: _core.softmax_cross_entropy(a["Z"], a["y"], a["delta"]),
                                        {"Z": (5, 4), "y": (5, 4), "delta": (5, 4)}, outputs=("delta",),
                                        checked=("y", "delta"), optional=("delta",)),
    **{f"pointwise_{kind}": Spec(lambda a, kind=kind: _core.pointwise_loss(kind, a["Z"], a["Y"], a["delta"]),
                                 {"Z": (5, 4), "Y": (5, 4), "delta": (5, 4)}, outputs=("delta",),
                                 checked=("Y", "delta"), optional=("delta",))
       for kind in sorted(_core.POINTWISE_LOSSES)},
    "sgd_step": Spec(lambda a: _core.sgd_step(a["w"], a["g"], a["v"], 0.1, momentum=0.9),
                     {"w": (6,), "g": (6,), "v": (6,)}, outputs=("w", "v"), checked=("g", "v")),
    "sgd_step_plain": Spec(lambda a: _core.sgd_step(a["w"], a["g"], None, 0.1),
                           {"w": (6,), "g": (6,)}, outputs=("w",), checked=("g",)),
    "adam_step": Spec(lambda a: _core.adam_step(a["w"], a["g"], a["m"], a["v"], 1, 0.1),
                      {"w": (6,), "g": (6,), "m": (6,), "v": (6,)}, outputs=("w", "m", "v"),
                      checked=("g", "m", "v")),
    "rmsprop_step": Spec(lambda a: _core.rmsprop_step(a["w"], a["g"], a["v"], 0.1),
                         {"w": (6,), "g": (6,), "v": (6,)}, outputs=("w", "v"), checked=("g", "v")),
    "global_norm": Spec(lambda a: _core.global_norm(a["g"]), {"g": (6,)}),
    "gather_rows": Spec(lambda a: _core.gather_rows(a["X"], a["idx"], a["out"]),
                        {"X": (6, 3), "idx": (4,), "out": (4, 3)}, outputs=("out",), checked=("out",),
                        ints=("idx",), make_int=lambda n, s: np.array([5, 0, 2, 2], np.int64),
                        any_real=("X",)),
    "affine_columns": Spec(lambda a: _core.affine_columns(a["X"], a["m"], a["s"], True, a["out"]),
                           {"X": (5, 3), "m": (3,), "s": (3,), "out": (5, 3)}, outputs=("out",),
                           checked=("m", "s", "out")),
    "dropout_mask": Spec(lambda a: _core.dropout_mask(a["U"], 0.5), {"U": (6,)}, outputs=("U",)),
    "multiply": Spec(lambda a: _core.multiply(a["A"], a["B"], a["out"]),
                     {"A": (6,), "B": (6,), "out": (6,)}, outputs=("out",), checked=("A", "B")),
    "InferenceChain": Spec(lambda a: _core.InferenceChain([("dense", a["step 0 W"], a["step 0 b"], "relu", 0.0),
                                                           ("dense", a["step 1 W"], a["step 1 b"], "softmax", 0.0)]
                                                          ).forward(a["X"], a["out"]),
                           {"step 0 W": (3, 4), "step 0 b": (4,), "step 1 W": (4, 2), "step 1 b": (2,), "X": (5, 3),
                            "out": (5, 2)}, outputs=("out",), checked=("step 0 b", "step 1 W", "step 1 b", "out")),
    "ConvPlan.forward": Spec(lambda a: _core.ConvPlan(**_conv(a)).forward(a["X"], a["W"], a["b"], a["Z"], a["A"], "relu"),
                             {"X": (3, 40), "W": (3, 12), "b": (3,), "Z": (3, 48), "A": (3, 48)},
                             outputs=("Z", "A"), checked=("W", "b", "Z", "A"), optional=("b", "A")),
    "ConvPlan.backward": Spec(lambda a: _core.ConvPlan(**_conv(a)).backward(a["X"], a["W"], a["delta"], a["dW"], a["db"], a["dX"]),
                              {"X": (3, 40), "W": (3, 12), "delta": (3, 48), "dW": (3, 12), "db": (3,),
                               "dX": (3, 40)}, outputs=("dW", "db", "dX"),
                              checked=("W", "delta", "dW", "db", "dX"), optional=("db", "dX")),
    "argmax_rows": Spec(lambda a: _core.argmax_rows(a["Z"], a["out"]), {"Z": (5, 4), "out": (5,)},
                        outputs=("out",), checked=("out",), ints=("out",),
                        make_int=lambda n, s: np.zeros(s, np.int64)),
    # pool.pxi, norm.pxi: (B, C·P) batches, here C = 3 channels of P = 2 (pooling: 2 channels of 4x4)
    "channel_sums": Spec(lambda a: _core.channel_sums(a["X"], 3, a["out"]), {"X": (5, 6), "out": (3,)},
                         outputs=("out",), checked=("out",)),
    "channel_sq_dev": Spec(lambda a: _core.channel_sq_dev(a["X"], a["mean"], 3, a["out"]),
                           {"X": (5, 6), "mean": (3,), "out": (3,)}, outputs=("out",), checked=("mean", "out")),
    "channel_dot": Spec(lambda a: _core.channel_dot(a["A"], a["B"], 3, a["out"]),
                        {"A": (5, 6), "B": (5, 6), "out": (3,)}, outputs=("out",), checked=("B", "out")),
    "batchnorm_apply": Spec(lambda a: _core.batchnorm_apply(a["X"], a["mean"], a["invstd"], a["gamma"], a["beta"], 3,
                                                            a["xhat"], a["Y"]),
                            {"X": (5, 6), "mean": (3,), "invstd": (3,), "gamma": (3,), "beta": (3,), "xhat": (5, 6),
                             "Y": (5, 6)}, outputs=("xhat", "Y"),
                            checked=("mean", "invstd", "gamma", "beta", "xhat", "Y"), optional=("xhat",)),
    "batchnorm_input_grad": Spec(lambda a: _core.batchnorm_input_grad(a["dY"], a["xhat"], a["gamma"], a["invstd"],
                                                                      a["sum_dY"], a["sum_dY_xhat"], 10, 3, a["dX"]),
                                 {"dY": (5, 6), "xhat": (5, 6), "gamma": (3,), "invstd": (3,), "sum_dY": (3,),
                                  "sum_dY_xhat": (3,), "dX": (5, 6)}, outputs=("dX",),
                                 checked=("xhat", "gamma", "invstd", "sum_dY", "sum_dY_xhat", "dX")),
    "layernorm_forward": Spec(lambda a: _core.layernorm_forward(a["X"], a["gamma"], a["beta"], 1e-5, a["xhat"],
                                                                a["invstd"], a["Y"]),
                              {"X": (5, 4), "gamma": (4,), "beta": (4,), "xhat": (5, 4), "invstd": (5,), "Y": (5, 4)},
                              outputs=("xhat", "invstd", "Y"), checked=("gamma", "beta", "xhat", "invstd", "Y"),
                              optional=("xhat", "invstd")),
    "layernorm_backward": Spec(lambda a: _core.layernorm_backward(a["dY"], a["xhat"], a["gamma"], a["invstd"], a["dX"],
                                                                  a["dgamma"], a["dbeta"]),
                               {"dY": (5, 4), "xhat": (5, 4), "gamma": (4,), "invstd": (5,), "dX": (5, 4),
                                "dgamma": (4,), "dbeta": (4,)}, outputs=("dX", "dgamma", "dbeta"),
                               checked=("xhat", "gamma", "invstd", "dX", "dgamma", "dbeta")),
    "global_avg_pool_forward": Spec(lambda a: _core.global_avg_pool_forward(a["X"], a["Y"], 3),
                                    {"X": (5, 6), "Y": (5, 3)}, outputs=("Y",), checked=("Y",)),
    "global_avg_pool_backward": Spec(lambda a: _core.global_avg_pool_backward(a["dY"], a["dX"], 3),
                                     {"dY": (5, 3), "dX": (5, 6)}, outputs=("dX",), checked=("dX",)),
    "TrainLoop": Spec(lambda a: _core.TrainLoop([("dense", a["W"], a["b"], a["dW"], a["db"], "relu", 0.0)], a["params"],
                                                a["grads"], a["X"], a["y"], None, 2, "cross_entropy", 1.0, 1.0, None,
                                                "sgd", {}, None, None, [(0, 16)], 0.0, True, 0.0, 0)
                      .run(a["perm"], 0, 2, np.full(2, 0.1), 0, [], np.empty(2), np.empty(2, np.int64)),
                      {"params": (16,), "grads": (16,), "W": (3, 4), "b": (4,), "dW": (3, 4), "db": (4,), "X": (5, 3),
                       "y": (5,), "perm": (4,)}, outputs=("params", "grads", "dW", "db"),
                      checked=("grads", "b", "dW", "db", "y"), ints=("y", "perm"), any_real=("X",),
                      make_int=lambda n, s: np.arange(s[0], dtype=np.int64) % 3),
    "PoolPlan.forward": Spec(lambda a: _core.PoolPlan(2, 4, 4, "max", kernel=2, dtype=_dtype_of(a, "X", "Y"))
                             .forward(a["X"], a["Y"]), {"X": (5, 32), "Y": (5, 8)}, outputs=("Y",), checked=("Y",)),
    "PoolPlan.backward": Spec(lambda a: _trained(_core.PoolPlan(2, 4, 4, "max", kernel=2, dtype=_dtype_of(a, "dY", "dX")),
                                                 5).backward(a["dY"], a["dX"]),
                              {"dY": (5, 8), "dX": (5, 32)}, outputs=("dX",), checked=("dX",)),
}


def _dtype_of(a, *names):
    """The float dtype of the call's arrays that have one (a pooling plan is made for one dtype)."""
    return next((a[n].dtype for n in names if isinstance(a[n], np.ndarray) and a[n].dtype in DTYPES), np.float64)


def _trained(plan, rows):
    """The plan after a training forward of `rows` rows (max pooling's backward needs its argmax)."""
    plan.forward(np.random.default_rng(0).standard_normal((rows, plan.in_features)).astype(plan.dtype),
                 np.empty((rows, plan.out_features), plan.dtype))
    return plan


# ---- bad variants of one array --------------------------------------------------------
def _non_contiguous(a, how):
    if how == "fortran":
        return np.asfortranarray(a)
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _grown(a):
    return np.resize(a, (a.shape[0] + 1,) + a.shape[1:])


def variants(spec, name, a):
    """(label, bad array, expected exception types) for array `name` of a valid call."""
    floating = name not in spec.ints
    out = []
    if name in spec.any_real:
        out.append(("dtype complex128", a.astype(np.complex128), TypeError))
    elif floating:
        for dt in (np.int64, np.float16, np.complex128):
            out.append((f"dtype {np.dtype(dt)}", a.astype(dt), TypeError))
        if sum(n not in spec.ints and n not in spec.any_real for n in spec.shapes) > 1:
            out.append(("mixed float dtypes", a.astype(other_float(a.dtype)), TypeError))
    else:
        for dt in (np.int32, np.float64):
            out.append((f"dtype {np.dtype(dt)}", a.astype(dt), TypeError))
    any_error = (TypeError, ValueError)
    strict = ValueError if floating else any_error
    out.append(("one more dimension", a[None], any_error))
    if a.ndim == 2:  # (a 1-d y is read as labels: TypeError)
        out.append(("one dimension less", a.ravel(), any_error))
        out.append(("Fortran order", _non_contiguous(a, "fortran"), strict))
    out.append(("strided slice", _non_contiguous(a, "slice"), strict))
    if name in spec.checked:
        out.append(("shape mismatch", _grown(a), ValueError))
    if name in spec.outputs:
        out.append(("read-only output", _read_only(a), strict))
    out.append(("a list", a.tolist(), TypeError))
    if name not in spec.optional:
        out.append(("None", None, TypeError))
    return out


CASES = [
    pytest.param(kernel, name, label, errors, dtype, id=f"{kernel}-{name}-{label}-{np.dtype(dtype)}")
    for kernel, spec in SPECS.items()
    for dtype in DTYPES
    for name, a in spec.arrays(dtype).items()
    for label, _, errors in variants(spec, name, a)
]


def _names(name):
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")


@pytest.mark.parametrize("kernel,name,label,errors,dtype", CASES)
def test_bad_array_is_refused_by_name(kernel, name, label, errors, dtype):
    spec = SPECS[kernel]
    arrays = spec.arrays(dtype)
    before = {n: np.copy(a) for n, a in arrays.items()}
    arrays[name] = {lab: bad for lab, bad, _ in variants(spec, name, arrays[name])}[label]
    with pytest.raises(errors) as info:
        spec.call(arrays)
    assert _names(name).search(str(info.value)), f"message does not name {name!r}: {info.value}"
    for n, a in arrays.items():  # nothing was written before the refusal
        if n != name:
            assert np.array_equal(a, before[n], equal_nan=True), f"{n} was modified"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", sorted(SPECS))
def test_read_only_inputs_work(kernel, dtype):
    """Inputs are declared const: read-only arrays give the same result as writable ones."""
    spec = SPECS[kernel]
    writable, frozen = spec.arrays(dtype), spec.arrays(dtype)
    for name in frozen:
        if name not in spec.outputs:
            frozen[name].flags.writeable = False
    r1, r2 = spec.call(writable), spec.call(frozen)
    assert np.array_equal(np.asarray(r1), np.asarray(r2))
    for name in spec.shapes:
        assert np.array_equal(writable[name], frozen[name]), name


def test_every_wrapper_has_a_spec():
    knobs = KNOBS | {"all_finite", "rows_as_given"}   # they take any shape: tests/test_arrays.py
    wrappers = {n for n in dir(_core) if not n.startswith("_") and callable(getattr(_core, n))} - knobs
    called = {n for spec in SPECS.values() for n in spec.call.__code__.co_names}
    assert wrappers - called == set(), "a new wrapper needs a Spec"


# ---- values out of range ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad_label", [-1, 4, 2**40, -(2**62)])
def test_labels_out_of_range(dtype, bad_label):
    Z = np.zeros((5, 4), dtype)
    y = np.array([0, 1, bad_label, 3, 2], np.int64)
    for dZ in (None, np.zeros_like(Z)):
        with pytest.raises(ValueError, match=r"^y: .*labels must lie in \[0, 3\]"):
            _core.softmax_cross_entropy(Z, y, dZ)


@pytest.mark.parametrize("bad_index", [-1, 6, 2**40])
def test_gather_indices_out_of_range(bad_index):
    X = np.zeros((6, 3))
    with pytest.raises(ValueError, match=r"^idx: .*indices must lie in \[0, 5\]"):
        _core.gather_rows(X, np.array([0, bad_index, 1], np.int64), np.zeros((3, 3)))


def test_v_may_be_none_without_momentum_only():
    w, g = np.zeros(3), np.ones(3)
    _core.sgd_step(w, g, None, 0.5)
    assert w.tolist() == [-0.5] * 3
    with pytest.raises(TypeError, match=r"\bv\b"):
        _core.sgd_step(w, g, None, 0.5, momentum=0.9)


@pytest.mark.parametrize("call,error,match", [
    (lambda: _core.activation_forward("swish", 0.0, np.zeros((2, 2)), np.zeros((2, 2))), ValueError, "activation"),
    (lambda: _core.activation_forward(99, 0.0, np.zeros((2, 2)), np.zeros((2, 2))), ValueError, "activation"),
    (lambda: _core.pointwise_loss("hinge", np.zeros((2, 2)), np.zeros((2, 2))), ValueError, "kind"),
    (lambda: _core.pointwise_loss("huber", np.zeros((2, 2)), np.zeros((2, 2)), huber_delta=0.0), ValueError, "delta"),
    (lambda: _core.pointwise_loss("mse", np.zeros((0, 2)), np.zeros((0, 2))), ValueError, "non-empty"),
    (lambda: _core.softmax_cross_entropy(np.zeros((2, 0)), np.zeros(2, np.int64)), ValueError, "non-empty"),
    (lambda: _core.gemm_into(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3))), ValueError, "inner dimensions"),
    (lambda: _core.gemm_into(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((3, 3)), trans_a=True), ValueError,
     "inner dimensions"),
])
def test_bad_arguments_other_than_arrays(call, error, match):
    with pytest.raises(error, match=match):
        call()
