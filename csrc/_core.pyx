# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""pyneuro._core — the compiled core: every loop that touches numbers.

One extension built from one file per kind of math (included below), so the
kernels share inline helpers, one thread setting and one OpenMP runtime.

The ``def`` functions here are the kernels' Python-facing wrappers: they check
dtypes, contiguity and shapes in O(1) (labels in the same pass that reads
them) and raise TypeError/ValueError naming what was expected and what was
given; the ``cdef ... nogil`` kernels behind them run without bounds checks.
Only pyneuro's own Python code is meant to call this module.
"""
include "common.pxi"
include "activations.pxi"
include "gemm.pxi"
include "dense.pxi"
include "network.pxi"
include "losses.pxi"
include "optim.pxi"
include "arrays.pxi"
