"""pyneuro against the libraries a user would pick instead: PyTorch and scikit-learn.

    python bench/peers.py                       # 2 threads, batches 32, 128, 512
    python bench/peers.py --threads 2 --epochs 3

Network 784-256-128-10 ReLU, softmax cross-entropy, float32, 60,000 MNIST-shaped
samples (uniform pixels, random labels: speed does not depend on the values).
Training throughput: samples/s of one shuffled epoch, median of --epochs epochs
after a warm-up of a tenth of an epoch, for SGD with momentum and for Adam.
Prediction: µs per call for one sample (1×784) and for a batch of 1000, median
of 7 samples. Every measurement runs in a fresh subprocess (each library has its
own thread pool and they must not spin against each other), --rounds of them
per library and configuration, the libraries taking turns (in reversed order
every other round); all use the same number of threads.
Also: `import` time in a fresh interpreter, peak memory while training, and the
speed-up of batch-512 training from 1 to 2 threads.

PyTorch and scikit-learn are used when installed (pip install ".[bench]" torch==2.13.0
scikit-learn); the table says so when one is not.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

N_SAMPLES, WIDTHS = 60_000, (784, 256, 128, 10)
LR = {"sgd": 0.01, "adam": 1e-3}
LIBRARIES = ("pyneuro", "torch", "sklearn")


def data():
    rng = np.random.default_rng(0)
    X = rng.random((N_SAMPLES, WIDTHS[0]), dtype=np.float32)
    y = rng.integers(0, WIDTHS[-1], N_SAMPLES)
    return X, y


# ---- one library, one configuration: run inside a worker process ---------------------------
def pyneuro_model(opt):
    import pyneuro as pn
    model = pn.Sequential([pn.Dense(784, 256, "relu"), pn.Dense(256, 128, "relu"), pn.Dense(128, 10)],
                          seed=0)
    optimizer = pn.SGD(lr=LR["sgd"], momentum=0.9) if opt == "sgd" else pn.Adam(lr=LR["adam"])
    return pn, model, optimizer


def torch_model(opt):
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10))
    optimizer = (torch.optim.SGD(model.parameters(), lr=LR["sgd"], momentum=0.9) if opt == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=LR["adam"]))
    return torch, model, optimizer


def sklearn_model(opt, batch):
    from sklearn.neural_network import MLPClassifier
    return MLPClassifier(hidden_layer_sizes=WIDTHS[1:-1], activation="relu", solver=opt, alpha=0.0,
                         batch_size=batch, learning_rate_init=LR[opt], momentum=0.9,
                         nesterovs_momentum=False, shuffle=True, random_state=0)


def train(lib, batch, opt, epochs):
    """Seconds per epoch, one per timed epoch."""
    X, y = data()
    warm = N_SAMPLES // 10
    if lib == "pyneuro":
        pn, model, optimizer = pyneuro_model(opt)
        trainer = pn.Trainer(model, "cross_entropy", optimizer, batch_size=batch, verbose=0, seed=0)
        trainer.fit(X[:warm], y[:warm], epochs=1)
        return trainer.fit(X, y, epochs=epochs)["time"][-epochs:]
    if lib == "torch":
        torch, model, optimizer = torch_model(opt)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        loss_fn = torch.nn.CrossEntropyLoss()

        def epoch(n):
            perm = torch.randperm(n)
            for s in range(0, n, batch):
                idx = perm[s:s + batch]
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(Xt[idx]), yt[idx]).backward()
                optimizer.step()
        epoch(warm)
        times = []
        for _ in range(epochs):
            t = time.perf_counter()
            epoch(N_SAMPLES)
            times.append(time.perf_counter() - t)
        return times
    clf = sklearn_model(opt, batch)
    classes = np.arange(WIDTHS[-1])
    clf.partial_fit(X[:warm], y[:warm], classes=classes)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        clf.partial_fit(X, y)     # one shuffled epoch of mini-batches
        times.append(time.perf_counter() - t)
    return times


def per_call(fn, seconds=0.05, samples=7):
    """Median seconds per call of fn(), each sample ≥ `seconds` long."""
    fn()
    t = time.perf_counter()
    fn()
    calls = max(1, int(seconds / max(time.perf_counter() - t, 1e-7)))
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t) / calls)
    return statistics.median(out)


def predict(lib, rows):
    X, y = data()
    x = X[:rows].copy()
    if lib == "pyneuro":
        _, model, _ = pyneuro_model("sgd")
        return per_call(lambda: model.predict(x))
    if lib == "torch":
        torch, model, _ = torch_model("sgd")
        xt = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                return model(xt)
        return per_call(run)
    clf = sklearn_model("sgd", 128)
    clf.partial_fit(X[:1000], y[:1000], classes=np.arange(WIDTHS[-1]))
    return per_call(lambda: clf.predict_proba(x))


def memory():
    """Peak RSS while training an epoch at batch 128, against data + parameters."""
    import resource
    X, y = data()
    pn, model, optimizer = pyneuro_model("sgd")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pn.Trainer(model, "cross_entropy", optimizer, batch_size=128, verbose=0, seed=0).fit(X, y, epochs=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak": peak, "before_training": base, "data_and_params": X.nbytes + y.nbytes + model.params.nbytes}


def worker(args):
    kind, lib = args.worker[0], args.worker[1]
    threads = args.threads
    if lib == "pyneuro":
        import pyneuro
        pyneuro.set_num_threads(threads)
    elif lib == "torch":
        import torch
        torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits
    from gemm import wake_blas
    wake_blas(threadpool_limits)             # (OpenBLAS runs slow on one thread until woken)
    with threadpool_limits(limits=threads):   # NumPy's BLAS (scikit-learn computes with it)
        if kind == "train":
            out = train(lib, int(args.worker[2]), args.worker[3], args.epochs)
        elif kind == "predict":
            out = predict(lib, int(args.worker[2]))
        else:
            out = memory()
    print(json.dumps(out))


# ---- the driver -----------------------------------------------------------------------
def run_worker(*argv, threads, epochs=3):
    cmd = [sys.executable, __file__, "--threads", str(threads), "--epochs", str(epochs), "--worker", *map(str, argv)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def installed(lib):
    if lib == "pyneuro":
        return True
    code = "import torch" if lib == "torch" else "import sklearn.neural_network"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def import_seconds(module, repeats=5):
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                                  text=True, check=True).stdout) for _ in range(repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for every library (default 2)")
    parser.add_argument("--batches", default="32,128,512", help="comma-separated batch sizes")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration (median)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="fresh processes per library and configuration (default 2)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    libs = [lib for lib in LIBRARIES if installed(lib)]
    for lib in LIBRARIES:
        if lib not in libs:
            print(f"{lib} is not installed: its columns are left out")
    nt, batches = args.threads, [int(b) for b in args.batches.split(",")]
    print(f"{N_SAMPLES:,} samples, network {'-'.join(map(str, WIDTHS))}, float32, {nt} thread(s), "
          f"median of {args.epochs} epochs × {args.rounds} processes\n")

    def rounds(*argv, threads=nt, order=libs):
        """{lib: all results} over --rounds fresh processes per library, the libraries
        taking turns (reversed order every other round)."""
        out = {lib: [] for lib in order}
        for r in range(args.rounds):
            for lib in (order if r % 2 == 0 else order[::-1]):
                res = run_worker(argv[0], lib, *argv[1:], threads=threads, epochs=args.epochs)
                out[lib] += res if isinstance(res, list) else [res]
        return out

    rate = {}
    for b in batches:
        for opt in ("sgd", "adam"):
            for lib, times in rounds("train", b, opt).items():
                rate[lib, b, opt] = N_SAMPLES / statistics.median(times)
    head = ["batch", "optimizer"] + [f"{lib} samples/s" for lib in libs] + \
           [f"vs {lib}" for lib in libs if lib != "pyneuro"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for b in batches:
        for opt in ("sgd", "adam"):
            ours = rate["pyneuro", b, opt]
            cells = [str(b), "SGD momentum 0.9" if opt == "sgd" else "Adam"]
            cells += [f"{rate[lib, b, opt]:,.0f}" for lib in libs]
            cells += [f"{ours / rate[lib, b, opt]:.2f}×" for lib in libs if lib != "pyneuro"]
            print("| " + " | ".join(cells) + " |")

    print("\n| prediction | " + " | ".join(f"{lib} µs" for lib in libs) + " | " +
          " | ".join(f"vs {lib}" for lib in libs if lib != "pyneuro") + " |\n|" + "---|" * (2 * len(libs)))
    for rows in (1, 1000):
        t = {lib: statistics.median(v) for lib, v in rounds("predict", rows).items()}
        print(f"| {rows} × 784 | " + " | ".join(f"{t[lib] * 1e6:,.1f}" for lib in libs) + " | " +
              " | ".join(f"{t[lib] / t['pyneuro']:.1f}× faster" for lib in libs if lib != "pyneuro") + " |")

    if 512 in batches and nt > 1:
        for opt in ("sgd", "adam"):
            one = N_SAMPLES / statistics.median(rounds("train", 512, opt, threads=1, order=["pyneuro"])["pyneuro"])
            print(f"\nbatch 512, {opt}: 1 thread {one:,.0f} samples/s, {nt} threads "
                  f"{rate['pyneuro', 512, opt]:,.0f}: speed-up {rate['pyneuro', 512, opt] / one:.2f}×")

    print("\nimport time (fresh interpreter, median of 5): " + ", ".join(
        f"{m} {import_seconds(m) * 1e3:.0f} ms" for m in
        ["numpy", "pyneuro"] + (["torch"] if "torch" in libs else []) +
        (["sklearn.neural_network"] if "sklearn" in libs else [])))
    mem = run_worker("memory", "pyneuro", threads=nt)
    print(f"peak memory training at batch 128: {mem['peak'] / 2**20:.0f} MiB "
          f"(before training {mem['before_training'] / 2**20:.0f} MiB); data + parameters "
          f"{mem['data_and_params'] / 2**20:.0f} MiB: ratio {mem['peak'] / mem['data_and_params']:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
