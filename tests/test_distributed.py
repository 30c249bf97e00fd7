"""Data-parallel training over MPI: 2 ranks (mpiexec -n 2) against one process."""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyneuro as pn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or subprocess.run([sys.executable, "-c", "import mpi4py.MPI"], capture_output=True).returncode,
    reason="needs mpi4py and an MPI library (pip install '.[mpi]')")

TRAIN = textwrap.dedent("""
    import sys, numpy as np, pyneuro as pn
    def train(distributed, dtype, batch, opt, epochs=3):
        X, y = pn.datasets.load_digits(dtype=dtype)
        X, y = X[:1437], y[:1437]                       # 1437 rows: uneven shards, a short last batch
        model = pn.Sequential([pn.Dense(64, 48, "relu"), pn.Dense(48, 10)], seed=5, dtype=dtype)
        optimizer = pn.SGD(lr=0.05, momentum=0.9) if opt == "sgd" else pn.Adam(lr=2e-3)
        t = pn.Trainer(model, optimizer=optimizer, batch_size=batch, epochs=epochs, seed=7, verbose=0,
                       distributed=distributed)
        history = t.fit(X, y, validation_split=0.1)
        return model.params, history
    if __name__ == "__main__":
        dtype, batch, opt, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        params, history = train(True, dtype, batch, opt)
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
        np.save(f"{out}.{rank}.npy", params)
        np.save(f"{out}.{rank}.history.npy", np.array([history[k] for k in sorted(history) if k != "time"]))
""")


def run_mpi(n, source, args, tmp_path, timeout=120):
    """`source` as a script on n ranks under mpiexec."""
    script = tmp_path / "script.py"
    script.write_text(source)
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def single_process(dtype, batch, opt):
    ns = {}
    exec(TRAIN.split("if __name__")[0], ns)
    return ns["train"](False, dtype, batch, opt)


@needs_mpi
@pytest.mark.parametrize("dtype, batch, opt, rtol", [
    ("float64", 64, "sgd", 1e-10),      # float64: only the order of the batch sum differs
    ("float64", 1, "adam", 1e-10),      # batch 1 on 2 ranks: one rank holds no row of each batch
    ("float32", 100, "adam", 2e-4),     # float32 rounding, 3 epochs of Adam
])
def test_two_ranks_train_like_one_process(tmp_path, dtype, batch, opt, rtol):
    proc = run_mpi(2, TRAIN, [dtype, batch, opt, tmp_path / "w"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [np.load(tmp_path / f"w.{r}.npy") for r in (0, 1)]
    histories = [np.load(tmp_path / f"w.{r}.history.npy") for r in (0, 1)]
    assert np.array_equal(ranks[0], ranks[1])            # every rank took the same steps
    assert np.array_equal(histories[0], histories[1])    # and reports the same metrics
    params, history = single_process(dtype, batch, opt)
    scale = np.abs(params).max()
    assert np.abs(ranks[0] - params).max() <= rtol * scale, np.abs(ranks[0] - params).max() / scale
    reference = np.array([history[k] for k in sorted(history) if k != "time"])
    np.testing.assert_allclose(histories[0], reference, rtol=max(rtol, 1e-6) * 10)


FAIL = textwrap.dedent("""
    import numpy as np, pyneuro as pn
    from mpi4py import MPI
    X, y = pn.datasets.load_digits()
    model = pn.Sequential([pn.Dense(64, 10)], seed=0)
    def boom(epoch, logs):
        if MPI.COMM_WORLD.Get_rank() == 1 and epoch == 1:
            raise RuntimeError("rank one broke")
    pn.Trainer(model, epochs=50, verbose=0, distributed=True).fit(X, y, callbacks=[pn.LambdaCallback(on_epoch_end=boom)])
""")


@needs_mpi
def test_a_failing_rank_stops_the_job(tmp_path):
    proc = run_mpi(2, FAIL, [], tmp_path, timeout=60)
    assert proc.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: rank one broke" in proc.stderr


@needs_mpi
def test_command_line_on_two_ranks(tmp_path):
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "pyneuro.cli", "train", "--distributed",
                           "--epochs", "5", "--save", str(tmp_path / "m.st")], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy") == 1 and "2 MPI ranks" in proc.stdout   # rank 0 alone prints
    single = subprocess.run([sys.executable, "-m", "pyneuro.cli", "train", "--epochs", "5"], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    acc = lambda out: out.split("test accuracy ")[1].split()[0]   # noqa: E731
    assert acc(proc.stdout) == acc(single.stdout)
    assert pn.load(tmp_path / "m.st").n_out == 10


def test_without_mpi4py_the_error_says_what_to_install():
    code = ("import sys; sys.modules['mpi4py'] = None; import pyneuro as pn; "
            "pn.Trainer(pn.Sequential([pn.Dense(3, 2)]), distributed=True)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and "pip install 'pyneuro[mpi]'" in proc.stderr


UNSEEDED = textwrap.dedent("""
    import numpy as np, pyneuro as pn
    from mpi4py import MPI
    X, y = pn.datasets.load_digits()
    model = pn.Sequential([pn.Dense(64, 10)])                 # no seed anywhere
    t = pn.Trainer(model, epochs=2, verbose=0, distributed=True)
    t.fit(X, y, validation_split=0.2)
    every = MPI.COMM_WORLD.allgather(model.params.tobytes())
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(len(every), all(p == every[0] for p in every))
""")


@needs_mpi
def test_unseeded_ranks_still_agree(tmp_path):
    proc = run_mpi(2, UNSEEDED, [], tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "True"]


# ---- sample and class weights over ranks -------------------------------------------------------
WEIGHTED = textwrap.dedent("""
    import sys, numpy as np, pyneuro as pn
    def train(distributed, batch, epochs=2):
        X, y = pn.datasets.load_digits(dtype="float64")
        X, y = X[:701], y[:701]
        w = np.random.default_rng(3).random(701) * 2
        w[np.random.default_rng(4).random(701) < 0.3] = 0       # zero weights: some shards, some batches
        model = pn.Sequential([pn.Dense(64, 32, "relu"), pn.Dense(32, 10)], seed=5, dtype="float64")
        t = pn.Trainer(model, optimizer=pn.SGD(lr=0.05, momentum=0.9), batch_size=batch, epochs=epochs, seed=7,
                       verbose=0, distributed=distributed, metrics=["f1", "roc_auc"])
        history = t.fit(X, y, validation_split=0.1, sample_weight=w, class_weight="balanced")
        history["evaluated"] = [t.evaluate(X, y, sample_weight=w)["loss"]]
        return model.params, history
    if __name__ == "__main__":
        batch, out = int(sys.argv[1]), sys.argv[2]
        params, history = train(True, batch)
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
        np.save(f"{out}.{rank}.npy", params)
        np.save(f"{out}.{rank}.history.npy", np.concatenate([history[k] for k in sorted(history) if k != "time"]))
""")


def _weighted_single(batch):
    ns = {}
    exec(WEIGHTED.split("if __name__")[0], ns)
    return ns["train"](False, batch)


def _close_histories(a, b, rtol=1e-9):
    assert sorted(a) == sorted(b)
    for k in a:
        if k != "time":
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-12, err_msg=k)


class _ThreadComm:
    """Two ranks as two threads of this process: the calls Distributed makes on an mpi4py
    communicator (bcast, Bcast, Allreduce in place with SUM, allgather), with MPI's meaning."""

    def __init__(self, rank, shared):
        self.rank, self.shared = rank, shared

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return 2

    def _exchange(self, value):
        slots, barrier = self.shared
        slots[self.rank] = value
        barrier.wait()
        out = list(slots)
        barrier.wait()
        return out

    def bcast(self, value, root=0):
        return self._exchange(value)[root]

    def Bcast(self, array, root=0):
        array[...] = self._exchange(array.copy())[root]

    def Allreduce(self, _in_place, array, op=None):
        parts = self._exchange(array.copy())
        array[...] = parts[0] + parts[1]

    def allgather(self, value):
        return self._exchange(value)

    def Abort(self, code):
        raise RuntimeError("abort")


def _thread_rank(rank, shared):
    """A Distributed on rank `rank` of a _ThreadComm (no mpi4py needed)."""
    from types import SimpleNamespace
    d = pn.distributed.Distributed.__new__(pn.distributed.Distributed)
    d._mpi, d.comm = SimpleNamespace(IN_PLACE=None, SUM=None), _ThreadComm(rank, shared)
    d.rank, d.size, d._stats = rank, 2, np.zeros(3)
    d.allreduce_seconds, d.allreduce_calls = 0.0, 0
    return d


@pytest.mark.parametrize("batch", [64, 3])     # batch 3: shards of 1 and 2 rows, many all-zero shards
def test_weighted_training_on_two_thread_ranks_equals_one_process(batch):
    """Distributed's own arithmetic (shards weighing W_r / W) on a two-rank communicator of threads."""
    import threading
    ns = {}
    exec(WEIGHTED.split("if __name__")[0], ns)
    shared = ([None, None], threading.Barrier(2, timeout=120))
    results = [None, None]

    def run(rank):
        results[rank] = ns["train"](_thread_rank(rank, shared), batch)
    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results[0] is not None and results[1] is not None
    assert np.array_equal(results[0][0], results[1][0])
    params, history = _weighted_single(batch)
    assert np.abs(results[0][0] - params).max() <= 1e-10 * np.abs(params).max()
    _close_histories(results[0][1], history)
    assert history["loss"][0] > 0


@needs_mpi
def test_weighted_training_on_two_mpi_ranks_equals_one_process(tmp_path):
    proc = run_mpi(2, WEIGHTED, [16, tmp_path / "w"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [np.load(tmp_path / f"w.{r}.npy") for r in (0, 1)]
    assert np.array_equal(ranks[0], ranks[1])
    params, history = _weighted_single(16)
    assert np.abs(ranks[0] - params).max() <= 1e-10 * np.abs(params).max()
    reference = np.concatenate([history[k] for k in sorted(history) if k != "time"])
    np.testing.assert_allclose(np.load(tmp_path / "w.0.history.npy"), reference, rtol=1e-9)
