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
