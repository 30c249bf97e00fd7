"""Vectors that start on a cache line.

A thread team splits a weight matrix by rows or columns, and the kernels store 16-float
tiles: with the first element 64-byte aligned (NumPy gives 16), a tile is one line and a
line belongs to one thread's share, so no line is written by one core while the other reads
it (on the 2-core Zen 1 here, an update of lines the other core had read ran 4–5× slower).
"""
from __future__ import annotations

import numpy as np

LINE = 64     # bytes


def zeros_aligned(n: int, dtype) -> np.ndarray:
    """np.zeros(n, dtype) whose data starts at a multiple of LINE bytes (a view of a larger
    buffer, which it keeps alive)."""
    dt = np.dtype(dtype)
    raw = np.zeros(n * dt.itemsize + LINE, np.uint8)
    skip = -raw.ctypes.data % LINE
    return raw[skip:skip + n * dt.itemsize].view(dt)
