"""Networks described in one line, for the command line: `--model cnn` or `--layers SPEC`.

A SPEC is a comma-separated list of layers, applied in order, then the output Dense:

    conv32x5        Conv2D, 32 channels, 5×5 kernel   (conv32x5s2: stride 2; conv32x3same:
                    'same' padding; conv32x3p1: 1 pixel of zeros around)
    pool2           MaxPool2D 2×2 (stride 2)           avgpool2: AvgPool2D
    gap             GlobalAvgPool2D                    flatten: Flatten
    bn              BatchNorm                          ln: LayerNorm
    dense128        Dense, 128 units                   dropout0.25: Dropout(0.25)

Conv2D and hidden Dense layers take the hidden activation; the model reads images of
the data set's shape (1, H, W).
"""
from __future__ import annotations

import math
import re

import numpy as np

from .conv import Conv2D
from .layers import Dense, Dropout, Layer
from .normalization import BatchNorm, LayerNorm
from .pooling import AvgPool2D, Flatten, GlobalAvgPool2D, MaxPool2D

MODELS = {
    "mlp": "dense256,dense128",
    "cnn": "conv32x5,pool2,conv64x5,pool2,dense128",    # LeNet-like: 28×28 → 24 → 12 → 8 → 4
}

_CONV = re.compile(r"conv(\d+)x(\d+)(?:s(\d+))?(same|p(\d+))?")
_TOKENS = {
    re.compile(r"(avg)?pool(\d+)"): lambda m, act: (AvgPool2D if m[1] else MaxPool2D)(int(m[2])),
    re.compile(r"gap"): lambda m, act: GlobalAvgPool2D(),
    re.compile(r"flatten"): lambda m, act: Flatten(),
    re.compile(r"bn"): lambda m, act: BatchNorm(),
    re.compile(r"ln"): lambda m, act: LayerNorm(),
    re.compile(r"dropout(0?\.\d+)"): lambda m, act: Dropout(float(m[1])),
}


def layers_from_spec(spec: str, input_shape: tuple, n_out: int, activation: str = "relu") -> list[Layer]:
    """The layers SPEC describes (module docstring) for samples of `input_shape`, ending in
    Dense(n_out) with linear outputs (logits).

    Raises
    ------
    ValueError
        For an unknown token, naming it and the forms SPEC accepts.
    """
    layers: list[Layer] = []
    channels = input_shape[0] if len(input_shape) == 3 else None
    width = None     # a hidden Dense's input width, once the image is flat
    shape = tuple(input_shape)
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        conv, dense = _CONV.fullmatch(token), re.fullmatch(r"dense(\d+)", token)
        if conv:
            if channels is None:
                raise ValueError(f"--layers {token}: a convolution needs images; it follows a dense layer")
            same = conv[4] == "same"
            layer: Layer = Conv2D(channels, int(conv[1]), int(conv[2]), stride=int(conv[3] or 1),
                                  padding="same" if same else int(conv[5] or 0), activation=activation)
            channels = int(conv[1])
        elif dense:
            layer = Dense(width if width is not None else math.prod(shape), int(dense[1]), activation=activation)
            width, channels = int(dense[1]), None
        else:
            match = next(((pattern.fullmatch(token), make) for pattern, make in _TOKENS.items()
                          if pattern.fullmatch(token)), None)
            if match is None:
                raise ValueError(f"--layers: unknown layer {token!r}; expected convCxK[sS][same|pP], pool K, "
                                 "avgpool K, gap, flatten, bn, ln, dense N or dropout P (e.g. "
                                 "'conv32x5,pool2,conv64x5,pool2,dense128')")
            layer = match[1](match[0], activation)
        layers.append(layer)
        shape = _next_shape(layer, shape)
    layers.append(Dense(width if width is not None else math.prod(shape), n_out))
    return layers


def _next_shape(layer: Layer, shape: tuple) -> tuple:
    """The sample's shape after `layer` (Sequential builds it again in the model's dtype)."""
    return layer.build_shape(shape, np.dtype(np.float32))
