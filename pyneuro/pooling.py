"""Pooling and Flatten: layers that summarise or reshape an image batch (csrc/pool.pxi).

A sample is an image (C, H, W), its row the C·H·W values in that order (NCHW). For a
window of kh×kw at stride (sh, sw) with padding (ph, pw) on each side:

    max:  Y[c, y, x] = max_{i,j} X[c, y·sh + i − ph, x·sw + j − pw]       (padding: −∞)
    avg:  Y[c, y, x] = (1/(kh·kw)) Σ_{i,j} X[c, y·sh + i − ph, x·sw + j − pw]   (padding: 0,
          counted, as PyTorch's AvgPool2d with count_include_pad=True)
    Ho = ⌊(H + 2·ph − kh) / sh⌋ + 1, likewise Wo
    global average:  Y[c] = (1/(H·W)) Σ_{y,x} X[c, y, x]
"""
from __future__ import annotations

import math

from . import _core
from .conv import image_shape_of, pair
from .layers import Layer, builtin_layer


class _Pool2D(Layer):
    """Max or average pooling over kh×kw windows (see the module's formulas)."""

    kind = "max"

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, f"{name} kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, f"{name} stride", 1)
        self.padding = pair(padding, f"{name} padding", 0)

    def build_shape(self, in_shape, dtype):
        C, H, W = image_shape_of(in_shape, type(self).__name__)
        self.dtype = dtype
        self._plan = _core.PoolPlan(C, H, W, self.kind, kernel=self.kernel_size, stride=self.stride,
                                    padding=self.padding, dtype=dtype)
        self.in_shape, self.out_shape = (C, H, W), (C, self._plan.out_h, self._plan.out_w)
        self.n_in, self.n_out = C * H * W, math.prod(self.out_shape)
        return self.out_shape

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding)}

    def inference(self):
        return [("pool", self)]

    def forward(self, x, training=False):
        y = self._buffer("y", x.shape[0], self.n_out)
        self._plan.forward(x, y, True)    # max: records each window's argmax, which backward
        self._x = x                       # needs after evaluation too (input gradients)
        return y                          # (and x, when it masks a ReLU's backward)

    def backward(self, dA, need_input_grad=True, after_relu=False):
        """∂L/∂X; with after_relu (max pooling whose input X = relu(Z)), ∂L/∂Z instead: the
        ReLU's backward in the same pass (Sequential.backward pairs them)."""
        if not need_input_grad:
            return None
        dX = self._buffer("dX", dA.shape[0], self.n_in)
        self._plan.backward(dA, dX, self._x if after_relu else None)
        return dX


@builtin_layer
class MaxPool2D(_Pool2D):
    """Max pooling: Y[c, y, x] = max over the kh×kw window at (y·sh − ph, x·sw − pw)
    (padding never wins), as PyTorch's MaxPool2d; the gradient flows to each window's
    maximum (the first, in row-major order, on ties).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: the kernel size (windows side by side).
    padding : int or (int, int)
        At most half the kernel, as in PyTorch.
    """

    kind = "max"


@builtin_layer
class AvgPool2D(_Pool2D):
    """Average pooling: Y[c, y, x] = (1/(kh·kw)) Σ over the kh×kw window, padding counted
    as zeros (PyTorch's AvgPool2d default, count_include_pad=True).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: the kernel size.
    padding : int or (int, int)
    """

    kind = "avg"


@builtin_layer
class GlobalAvgPool2D(Layer):
    """Global average pooling: Y[c] = (1/(H·W)) Σ_{y,x} X[c, y, x]; (C, H, W) → (C,)."""

    def build_shape(self, in_shape, dtype):
        C, H, W = image_shape_of(in_shape, "GlobalAvgPool2D")
        self.dtype, self.in_shape, self.out_shape = dtype, (C, H, W), (C,)
        self.n_in, self.n_out = C * H * W, C
        return self.out_shape

    def inference(self):
        return [("global_avg_pool", self)]

    def forward(self, x, training=False):
        y = self._buffer("y", x.shape[0], self.n_out)
        _core.global_avg_pool_forward(x, y, self.n_out)
        return y

    def backward(self, dA, need_input_grad=True):
        if not need_input_grad:
            return None
        dX = self._buffer("dX", dA.shape[0], self.n_in)
        _core.global_avg_pool_backward(dA, dX, self.n_out)
        return dX


@builtin_layer
class Flatten(Layer):
    """A sample of any shape as one row of its values in C-order: (C, H, W) → (C·H·W,).
    Rows are already stored that way, so no data moves."""

    def build_shape(self, in_shape, dtype):
        self.dtype, self.in_shape = dtype, tuple(in_shape)
        self.n_in = self.n_out = math.prod(in_shape)
        self.out_shape = (self.n_out,)
        return self.out_shape

    def inference(self):
        return []

    def forward(self, x, training=False):
        return x

    def backward(self, dA, need_input_grad=True):
        return dA
