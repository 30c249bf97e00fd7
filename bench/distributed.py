"""Data parallelism on this machine: 2 MPI ranks × 1 thread against 1 process × 2 threads.

    python bench/distributed.py [--batch 128] [--epochs 3]

MNIST-shaped data (60,000 × 784, random), the 784-256-128-10 ReLU network, SGD with
momentum; the median epoch of --epochs after a warm-up, and for the ranks the time
each step spends in the gradient Allreduce. Needs mpi4py and an MPI library
(pip install ".[mpi]").
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

WORKER = r"""
import json, sys, numpy as np, pyneuro as pn
batch, epochs, distributed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
rng = np.random.default_rng(0)
X = rng.random((60000, 784), dtype=np.float32); y = rng.integers(0, 10, 60000)
model = pn.Sequential([pn.Dense(784, 256, "relu"), pn.Dense(256, 128, "relu"), pn.Dense(128, 10)], seed=0)
t = pn.Trainer(model, optimizer=pn.SGD(lr=0.01, momentum=0.9), batch_size=batch, verbose=0, seed=0,
               distributed=distributed)
t.fit(X[:6000], y[:6000], epochs=1)
calls0, secs0 = (t.dist.allreduce_calls, t.dist.allreduce_seconds) if t.dist else (0, 0.0)
times = t.fit(X, y, epochs=epochs)["time"][-epochs:]
if t.is_root:
    steps = (t.dist.allreduce_calls - calls0) if t.dist else 0
    print(json.dumps({"epoch": times, "threads": pn.get_num_threads(),
                      "allreduce_us": ((t.dist.allreduce_seconds - secs0) / steps * 1e6) if steps else 0.0}))
"""


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else "mpiexec"
    single = run([sys.executable, "-c", WORKER, str(args.batch), str(args.epochs), "0"])
    ranks = run([mpiexec, "-n", "2", sys.executable, "-c", WORKER, str(args.batch), str(args.epochs), "1"])
    steps = -(-60000 // args.batch)
    for name, r in (("1 process × %d threads" % single["threads"], single),
                    ("2 ranks × %d thread(s)" % ranks["threads"], ranks)):
        med = statistics.median(r["epoch"])
        extra = f", Allreduce {r['allreduce_us']:.0f} µs per step ({r['allreduce_us'] * steps / 1e6 / med:.0%} of the epoch)" \
            if r["allreduce_us"] else ""
        print(f"{name}: {60000 / med:,.0f} samples/s (epoch {med:.2f} s, batch {args.batch}){extra}")


if __name__ == "__main__":
    main()
