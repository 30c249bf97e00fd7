"""ONNX export (the optional `onnx` extra): a Sequential as a standard ONNX graph.

(the steps of layers.inference_steps, which the compiled prediction chain runs too)
    Dense       Y = MatMul(X, W) + b, then its activation
    relu, sigmoid, tanh, softmax (last axis)   Relu, Sigmoid, Tanh, Softmax
    leaky_relu(α), elu(α)                      LeakyRelu(alpha), Elu(alpha)
    gelu (exact)                               ½·x·(1 + Erf(x/√2))  (Gelu is opset 20; this is opset 17)
    Dropout, Identity                          nothing (inference)
    Scale (y = x·s), Standardize (y = (x − μ)/σ)   Mul; Sub, Div
    Conv2D      Conv (pads top, left, bottom, right), then its activation
    MaxPool2D, AvgPool2D      MaxPool, AveragePool (count_include_pad=1, as the layer)
    GlobalAvgPool2D           GlobalAveragePool, Flatten
    BatchNorm   BatchNormalization with the running statistics (inference form)
    LayerNorm   LayerNormalization over the whole sample (axis 1)
    Flatten     (Flatten where a Dense reads an image)
The graph has one input "input" (batch × n_in, or batch × C × H × W for a model with an
image input_shape; batch dynamic) and one output "output" (batch × n_out), in the
model's dtype; weights are initializers.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._version import __version__
from .io import atomic_write
from .layers import inference_steps

OPSET = 17


def to_onnx_bytes(model) -> bytes:
    """The serialized ONNX ModelProto of `model`."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("ONNX export needs onnx: pip install 'pyneuro[onnx]'") from None

    elem = TensorProto.FLOAT if model.dtype == np.float32 else TensorProto.DOUBLE
    nodes, inits = [], []
    counter = iter(range(10**9))

    def fresh(stem):
        return f"{stem}_{next(counter)}"

    def const(value, stem):
        name = fresh(stem)
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=model.dtype), name))
        return name

    def activation(x, act, alpha):
        if act == "identity":
            return x
        y = fresh(act)
        simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
        if act in simple:
            nodes.append(helper.make_node(simple[act], [x], [y]))
        elif act == "softmax":
            nodes.append(helper.make_node("Softmax", [x], [y], axis=-1))
        elif act == "leaky_relu":
            nodes.append(helper.make_node("LeakyRelu", [x], [y], alpha=float(alpha)))
        elif act == "elu":
            nodes.append(helper.make_node("Elu", [x], [y], alpha=float(alpha)))
        elif act == "gelu":
            scaled, erf, one_plus, half_x = fresh("gelu_scaled"), fresh("gelu_erf"), fresh("gelu_1p"), fresh("gelu_hx")
            nodes.extend([helper.make_node("Mul", [x, const(1 / math.sqrt(2), "inv_sqrt2")], [scaled]),
                      helper.make_node("Erf", [scaled], [erf]),
                      helper.make_node("Add", [erf, const(1.0, "one")], [one_plus]),
                      helper.make_node("Mul", [x, const(0.5, "half")], [half_x]),
                      helper.make_node("Mul", [half_x, one_plus], [y])])
        else:
            raise ValueError(f"to_onnx: no ONNX form for activation {act!r}")
        return y

    def flat(x):
        """x as (batch, features): a Flatten node when it is an image."""
        if rank == 2:
            return x
        y = fresh("flatten")
        nodes.append(helper.make_node("Flatten", [x], [y], axis=1))
        return y

    def op(kind, inputs, stem, **attrs):
        y = fresh(stem)
        nodes.append(helper.make_node(kind, inputs, [y], **attrs))
        return y

    x, rank = "input", 1 + len(model.input_shape)
    for i, step in inference_steps(model.layers):
        layer: Any = step[1] if len(step) == 2 else None   # conv, pool, norm steps carry their layer
        if step[0] == "opaque":
            raise ValueError(f"to_onnx: layer {i} ({type(step[1]).__name__}) has no ONNX form")
        if step[0] == "conv":
            top, left, bottom, right = layer.pads(*layer.in_shape[1:])
            x = op("Conv", [x, const(layer.W, f"W{i}"), const(layer.b, f"b{i}")], f"conv{i}",
                   kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                   dilations=list(layer.dilation), pads=[top, left, bottom, right])
            x = activation(x, layer.activation, layer.alpha)
        elif step[0] == "pool":
            ph, pw = layer.padding
            attrs = {"count_include_pad": 1} if layer.kind == "avg" else {}
            x = op("MaxPool" if layer.kind == "max" else "AveragePool", [x], f"pool{i}",
                   kernel_shape=list(layer.kernel_size), strides=list(layer.stride), pads=[ph, pw, ph, pw], **attrs)
        elif step[0] == "global_avg_pool":
            x = op("GlobalAveragePool", [x], f"gap{i}")
            x, rank = flat(x), 2
        elif step[0] == "batchnorm":
            x = op("BatchNormalization", [x] + [const(v, f"bn{i}_{k}") for k, v in (
                ("scale", layer.gamma), ("bias", layer.beta), ("mean", layer.running_mean),
                ("var", layer.running_var))], f"batchnorm{i}", epsilon=layer.eps)
        elif step[0] == "layernorm":
            shape = layer.in_shape
            x = op("LayerNormalization", [x, const(layer.gamma.reshape(shape), f"ln{i}_scale"),
                                          const(layer.beta.reshape(shape), f"ln{i}_bias")],
                   f"layernorm{i}", axis=1, epsilon=layer.eps)
        elif step[0] == "dense":
            _, W, b, act, alpha = step
            x, rank = flat(x), 2
            mm, z = fresh(f"dense{i}_matmul"), fresh(f"dense{i}")
            nodes += [helper.make_node("MatMul", [x, const(W, f"W{i}")], [mm]),
                      helper.make_node("Add", [mm, const(b, f"b{i}")], [z])]
            x = activation(z, act, alpha)
        elif step[0] == "affine":
            _, m, s, divide = step
            shape = model.layers[i].in_shape     # per value of the sample
            m, s = m.reshape(shape), s.reshape(shape)
            if divide:
                centred, x_new = fresh(f"standardize{i}_sub"), fresh(f"standardize{i}")
                nodes += [helper.make_node("Sub", [x, const(m, f"mean{i}")], [centred]),
                          helper.make_node("Div", [centred, const(s, f"std{i}")], [x_new])]
            else:
                x_new = fresh(f"scale{i}")
                nodes.append(helper.make_node("Mul", [x, const(s, f"scale{i}")], [x_new]))
            x = x_new
        else:
            x = activation(x, step[1], step[2])
    nodes.append(helper.make_node("Identity", [flat(x)], ["output"]))
    graph = helper.make_graph(nodes, "pyneuro", [helper.make_tensor_value_info("input", elem,
                                                                               ["batch", *model.input_shape])],
                              [helper.make_tensor_value_info("output", elem, ["batch", model.n_out])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pyneuro", producer_version=__version__)
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def to_onnx(model, path) -> None:
    """Write `model` as an ONNX file, atomically."""
    atomic_write(path, to_onnx_bytes(model))
