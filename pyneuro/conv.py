"""Conv2D: the 2-D convolution of an image batch, on the core's own GEMM (csrc/conv.pxi).

A sample is an image (C, H, W), its row the C·H·W values in that order (NCHW). With
kernel (kh, kw), stride (sh, sw), dilation (dh, dw) and padding (top, left, bottom, right):

    Z[o, y, x] = b[o] + Σ_{c,i,j} W[o, c, i, j] · X[c, y·sh + i·dh − top, x·sw + j·dw − left]
    A = f(Z)                       (outside the image X counts as 0)
    Ho = ⌊(H + top + bottom − dh·(kh − 1) − 1) / sh⌋ + 1, likewise Wo

W is (C_out, C, kh, kw), as PyTorch's Conv2d and ONNX's Conv lay it out.
"""
from __future__ import annotations

import math

import numpy as np

from . import _core
from ._validation import check_int
from .layers import _Linear, builtin_layer


def pair(value, what: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (each ≥ minimum) as a pair: 3 → (3, 3)."""
    values = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) != 2:
        raise ValueError(f"{what}: expected an int or a pair of ints, got {value!r:.40}")
    return check_int(values[0], what, minimum), check_int(values[1], what, minimum)


def image_shape_of(in_shape, layer: str) -> tuple[int, int, int]:
    """(C, H, W) of a layer's input, or a ValueError saying how to give the model images."""
    if len(in_shape) != 3:
        raise ValueError(f"{layer} reads images (C, H, W), but its input is {tuple(in_shape)}; give the "
                         "model input_shape=(C, H, W) (Sequential(..., input_shape=(1, 28, 28)))")
    return in_shape


@builtin_layer
class Conv2D(_Linear):
    """2-D convolution (cross-correlation, as PyTorch's Conv2d), bias and activation fused:
    Z[o, y, x] = b[o] + Σ_{c,i,j} W[o, c, i, j]·X[c, y·sh + i·dh − p, x·sw + j·dw − p],
    A = f(Z).

    Parameters
    ----------
    in_channels, out_channels : int
        C and C_out (≥ 1).
    kernel_size : int or (int, int)
        (kh, kw).
    stride : int or (int, int)
        (sh, sw), ≥ 1.
    padding : int, (int, int), 'valid' or 'same'
        Zeros around the image: p rows above and below, p columns left and right ((ph, pw)
        for each axis); 'valid' is 0; 'same' keeps H×W (stride 1 only; an odd total puts
        the extra row/column at the bottom/right, as PyTorch does).
    dilation : int or (int, int)
        Spacing of the kernel's taps (dh, dw), ≥ 1.
    activation : str or None
        One of pyneuro._core.ACTIVATIONS except 'softmax'; None is identity.
    bias : bool
        Whether the layer has b (False: Z has no bias term).
    init : {'he', 'glorot'} or callable, optional
        As Dense, with fan_in = C·kh·kw and fan_out = C_out·kh·kw; a callable gets the
        shape (C_out, C, kh, kw).
    alpha : float, optional
        Slope of leaky_relu / scale of elu.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 activation: str | None = None, bias: bool = True, init=None, alpha: float | None = None):
        super().__init__()
        self.in_channels = check_int(in_channels, "Conv2D in_channels", 1)
        self.out_channels = check_int(out_channels, "Conv2D out_channels", 1)
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size", 1)
        self.stride = pair(stride, "Conv2D stride", 1)
        self.dilation = pair(dilation, "Conv2D dilation", 1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Conv2D padding: expected an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2D padding='same' needs stride 1 (as in PyTorch), got stride {self.stride}")
            self.padding: str | tuple[int, int] = padding
        else:
            self.padding = pair(padding, "Conv2D padding", 0)
        self._set_activation(activation, alpha, init)
        if self.activation == "softmax":
            raise ValueError("Conv2D activation: softmax is over a row of classes, not an image; end the "
                             "model with Dense outputs (logits) and loss='cross_entropy'")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Conv2D bias: expected True or False, got {bias!r:.40}")
        self.bias = bool(bias)
        self.W = self.dW = np.empty((0, 0, 0, 0))     # views into the model's vectors, set by bind()
        self.b = self.db = np.empty(0)

    def pads(self, H: int, W: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) zeros for an H×W input."""
        if self.padding == "valid":
            return 0, 0, 0, 0
        if isinstance(self.padding, str):     # 'same'
            th, tw = (d * (k - 1) for d, k in zip(self.dilation, self.kernel_size))
            return th // 2, tw // 2, th - th // 2, tw - tw // 2
        ph, pw = self.padding
        return ph, pw, ph, pw

    def build_shape(self, in_shape, dtype):
        C, H, W = image_shape_of(in_shape, "Conv2D")
        if C != self.in_channels:
            raise ValueError(f"Conv2D({self.in_channels}, {self.out_channels}) receives images with {C} channels")
        self.dtype = dtype
        self._plan = _core.ConvPlan(C, H, W, self.out_channels, kernel=self.kernel_size, stride=self.stride,
                                    padding=self.pads(H, W), dilation=self.dilation, dtype=dtype)
        self.in_shape, self.out_shape = (C, H, W), (self.out_channels, self._plan.out_h, self._plan.out_w)
        self.n_in, self.n_out = C * H * W, math.prod(self.out_shape)
        return self.out_shape

    def param_shapes(self):
        shapes = [("W", (self.out_channels, self.in_channels) + self.kernel_size)]
        return shapes + [("b", (self.out_channels,))] if self.bias else shapes

    def bind(self, params, grads):
        self.W, self.dW = params["W"], grads["W"]
        k = self.W.shape[1] * self.W.shape[2] * self.W.shape[3]
        self._W2, self._dW2 = self.W.reshape(self.out_channels, k), self.dW.reshape(self.out_channels, k)
        if self.bias:
            self.b, self.db = params["b"], grads["b"]
        else:   # no bias: b = 0 for the kernel, its gradient written to scratch
            self.b, self.db = np.zeros(self.out_channels, self.dtype), np.empty(self.out_channels, self.dtype)

    def init_params(self, rng):
        _, C, kh, kw = self.W.shape
        self._init_weights(rng, C * kh * kw, self.out_channels * kh * kw)

    def config(self):
        cfg = {"in_channels": self.in_channels, "out_channels": self.out_channels,
               "kernel_size": list(self.kernel_size), "stride": list(self.stride),
               "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
               "dilation": list(self.dilation), "activation": self.activation, "bias": self.bias}
        return self._with_alpha(cfg)

    def __repr__(self) -> str:
        """Conv2D(C, C_out, k, ...) with the arguments that differ from their defaults."""
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else list(self.kernel_size)
        shown = [f"{self.in_channels}, {self.out_channels}, {k}"]
        defaults = {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "activation": "identity",
                    "bias": True}
        shown += [f"{key}={value!r}" for key, value in self.config().items()
                  if key in defaults and value != defaults[key]]
        return f"Conv2D({', '.join(shown)})"

    def inference(self):
        return [("conv", self)]

    def _forward(self, x, Z, A):
        self._plan.forward(x, self._W2, self.b, Z, A, self.activation, self.alpha)

    def _backward(self, delta, dX):
        self._plan.backward(self._x, self._W2, delta, self._dW2, self.db, dX)
