"""Data-parallel training over MPI (mpi4py; the optional `mpi` extra).

Every rank holds the same model. Each global batch of B rows (the same shuffled
rows on every rank: same seed) is cut into contiguous shards, one per rank; rank r
computes the gradient of its shard's (weighted) mean loss,
g_r = (1/W_r) Σ_{i∈r} w_i ∇ℓ_i with W_r = Σ_{i∈r} w_i (w_i = 1 unweighted, W_r = b_r rows),
and one in-place Allreduce over the flat gradient vector gives the gradient of the batch:

    g = Σ_r (W_r / W) · g_r = (1/W) Σ_i w_i ∇ℓ_i,    W = Σ_r W_r = Σ_{i in batch} w_i

(the single-process gradient, summed in another order). The step's scalars (W_r·L_r,
correct, W_r) travel first, in one 3-number Allreduce, so every rank knows W before it
scales its gradient; so all ranks see (and stop on) the same loss. Every rank then takes the
same optimizer step. Launch with `mpiexec -n 4 python ...`
or `mpiexec -n 4 pyneuro train --distributed`.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np


class OneProcess:
    """Training in this process alone: the one-rank case of Distributed, so the Trainer
    runs one code path (as llm.c does with num_processes == 1). Nothing to exchange."""

    rank, size, is_root = 0, 1, True
    allreduce_seconds, allreduce_calls = 0.0, 0

    def bcast(self, value):
        return value

    def shard(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def broadcast(self, array: np.ndarray) -> None:
        pass

    def sum(self, array: np.ndarray) -> None:
        pass

    def gather(self, array: np.ndarray) -> np.ndarray:
        return array

    def combine_step(self, grads: np.ndarray, loss: float, correct: int | None,
                     share: float) -> tuple[float, int | None, float]:
        return loss, correct, share

    def abort(self, error: BaseException) -> None:
        pass    # the exception reaches the caller


class Distributed:
    """The MPI side of synchronous data parallelism.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The communicator (default MPI.COMM_WORLD).
    """

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError("distributed training needs mpi4py and an MPI library: "
                              "pip install 'pyneuro[mpi]' (mpi4py and mpich)") from None
        self._mpi = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._stats = np.zeros(3)      # (loss·W_r, correct, W_r) of a step, reused: no allocation per step
        self.allreduce_seconds = 0.0   # time spent combining gradients, and how many times
        self.allreduce_calls = 0
        self._share_cores()

    def _share_cores(self) -> None:
        """Ranks on one machine split its cores: each rank's kernels get cores / ranks-here
        threads (at least 1), unless OMP_NUM_THREADS or pn.set_num_threads chose already.
        Oversubscribed, OpenMP workers and MPI's busy-polling starve each other."""
        from . import _core
        here = self.comm.Split_type(self._mpi.COMM_TYPE_SHARED).Get_size()
        if here > 1 and "OMP_NUM_THREADS" not in os.environ and not _core._threads_chosen():
            _core.set_num_threads(max(1, (os.cpu_count() or 1) // here))

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def bcast(self, value):
        """Rank 0's value (any picklable object), on every rank."""
        return self.comm.bcast(value, root=0)

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of `rows` (parts differ in length by at most one)."""
        n = rows.shape[0]
        return rows[n * self.rank // self.size:n * (self.rank + 1) // self.size]

    def broadcast(self, array: np.ndarray) -> None:
        """Rank 0's values into `array` on every rank (in place)."""
        self.comm.Bcast(array, root=0)

    def sum(self, array: np.ndarray) -> None:
        """Element-wise sum over the ranks, in place, on one contiguous buffer."""
        self.comm.Allreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)

    def gather(self, array: np.ndarray) -> np.ndarray:
        """The ranks' row blocks of `array` stacked in rank order, on every rank (the rows of
        a sharded set, as shard cut them)."""
        return np.concatenate(self.comm.allgather(array))

    def combine_step(self, grads: np.ndarray, loss: float, correct: int | None,
                     share: float) -> tuple[float, int | None, float]:
        """Combine the shards' gradients into the batch gradient g = Σ_r (W_r/W) g_r (in place)
        and return the batch's mean loss L = Σ_r W_r L_r / W, its correct count and W, the
        same on every rank. share: this shard's W_r (its rows, or the sum of its rows'
        weights); a batch whose weights are all 0 gives L = 0 and no gradient."""
        stats = self._stats
        stats[0], stats[1], stats[2] = loss * share, correct or 0, share
        self.sum(stats)
        total = float(stats[2])
        if total and share != total:
            grads *= share / total
        t = time.perf_counter()
        self.sum(grads)
        self.allreduce_seconds += time.perf_counter() - t
        self.allreduce_calls += 1
        return (float(stats[0] / total) if total else 0.0), (None if correct is None else int(stats[1])), total

    def abort(self, error: BaseException) -> None:
        """Stop every rank: one rank's exception must not leave the others waiting
        (a single rank lets it reach the caller)."""
        if self.size == 1:
            return
        print(f"pyneuro: rank {self.rank} of {self.size} failed: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
        self.comm.Abort(1)
