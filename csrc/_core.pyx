"""pyneuro._core — the compiled core: every loop that touches numbers.

One extension built from one file per kind of math (included below), so the
kernels share inline helpers, one thread setting and one OpenMP runtime.

The ``def`` functions here are the kernels' Python-facing wrappers: they check
dtypes, contiguity and shapes in O(1) (labels in the same pass that reads
them) and raise TypeError/ValueError naming what was expected and what was
given; the ``cdef ... nogil`` kernels behind them run without bounds checks
(the Cython directives are set in setup.py only) and release the GIL.
Only pyneuro's own Python code is meant to call this module.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

import os

import numpy as np

from pyneuro._buffers import zeros_aligned as _zeros_aligned
cimport numpy as cnp

cnp.import_array()

# Each file uses only those above it (its "uses:" line says which); the lowest first.
include "scalar_math.pxi"    # f_exp, f_log, … (libm per dtype) and the logistic σ
include "threads.pxi"        # the thread count, fork safety, per-thread work buffers (runtime.h)
include "cpu_dispatch.pxi"   # which ISA's SIMD kernels run (cpu_dispatch.h)
include "checks.pxi"         # the O(1) boundary checks every wrapper uses
include "reduce.pxi"         # ordered sums, row max and Σ e^(z − max); argmax_rows, all_finite
include "activations.pxi"    # A = f(Z), delta = dA ⊙ f′(Z)
include "gemm.pxi"           # C = α·op(A)·op(B) + β·C, with its epilogues (bias, activation, its backward)
include "dense.pxi"          # the dense layer: Z = X·W + b, A = f(Z) and its gradients
include "conv.pxi"           # the 2-d convolution (ConvPlan): an implicit GEMM per sample, forward and backward
include "norm.pxi"           # per-channel sums (BatchNorm's pieces), BatchNorm apply/grad, LayerNorm
include "pool.pxi"           # max/avg pooling (PoolPlan), global average pooling
include "inference_chain.pxi"  # the compiled prediction pass of dense, conv and pool steps (InferenceChain)
include "losses.pxi"         # loss values and delta = ∂L/∂Z
include "optim.pxi"          # SGD / Adam / RMSprop steps, the global gradient norm
include "gather.pxi"         # out[i] = X[idx[i]]: a shuffled batch, converted to the model dtype
include "dropout.pxi"        # the inverted-dropout mask
include "elementwise.pxi"    # out = A ⊙ B
include "train_loop.pxi"      # TrainLoop: runs of whole training steps (gather … update) in one call
