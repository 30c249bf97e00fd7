"""pyneuro's two built-in networks (pyneuro.architectures.MODELS) against PyTorch and onnxruntime.

    python bench/networks.py                  # the CNN, 2 threads, 3 rounds
    python bench/networks.py --model mlp      # the MLP
    python bench/networks.py --threads 1 --rounds 5

Networks, ReLU, softmax cross-entropy, Adam, float32, inputs of uniform pixels (speed does
not depend on the values):
    cnn  LeNet-like (issue 18): Conv2D(1→32, 5×5), MaxPool 2, Conv2D(32→64, 5×5), MaxPool 2,
         Dense(1024→128), Dense(128→10); inputs (N, 1, 28, 28)
    mlp  784-256-128-10 (issue 19); inputs (N, 784)

    train      samples/s of --steps training steps at batch 64 (after 5 warm-up steps)
    predict    ms for a batch of 1000, and µs for one image (median of 15 calls); pyneuro's
               batch also as GFLOP/s and % of the peak probed in the same run

pyneuro's trained model is exported to ONNX and run by onnxruntime (same graph, same
threads). Every measurement runs in a fresh subprocess, the libraries taking turns,
--rounds rounds; the table gives medians and pyneuro's ratio to each (> 1: pyneuro faster).
PyTorch and onnxruntime are used when installed; the table says when one is not.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCH, LR = 64, 1e-3
LIBRARIES = ("pyneuro", "torch", "onnxruntime")


SHAPES = {"cnn": (1, 28, 28), "mlp": (784,)}


def data(n, model):
    rng = np.random.default_rng(0)
    return rng.random((n,) + SHAPES[model], dtype=np.float32), rng.integers(0, 10, n)


def median_seconds(call, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pyneuro_model(model):
    import pyneuro as pn
    from pyneuro.architectures import MODELS, layers_from_spec
    return pn.Sequential(layers_from_spec(MODELS[model], SHAPES[model], 10, "relu"), seed=0,
                         input_shape=SHAPES[model])


def flops_per_sample(model):
    """Multiply-adds ×2 of one sample's forward pass: 2·n_in·n_out a Dense, 2·Cout·P·k a Conv2D."""
    import pyneuro as pn
    net = pyneuro_model(model)
    return sum(2 * layer.n_in * layer.n_out if isinstance(layer, pn.Dense) else
               2 * layer.n_out * layer._plan.k if isinstance(layer, pn.Conv2D) else 0 for layer in net.layers)


def run_pyneuro(model, task, steps, threads):
    import pyneuro as pn
    pn.set_num_threads(threads)
    net = pyneuro_model(model)
    if task == "train":
        X, y = data(BATCH * (steps + 5), model)
        trainer = pn.Trainer(net, optimizer=pn.Adam(lr=LR), batch_size=BATCH, epochs=1, seed=0, verbose=0)
        trainer.fit(X[:BATCH * 5], y[:BATCH * 5])          # warm-up: work buffers, pages
        t = time.perf_counter()
        trainer.fit(X[BATCH * 5:], y[BATCH * 5:])
        return BATCH * steps / (time.perf_counter() - t)
    X, _ = data(1000, model)
    net.predict(X)
    return {"batch_ms": 1e3 * median_seconds(lambda: net.predict(X), 15),
            "one_us": 1e6 * median_seconds(lambda: net.predict(X[:1]), 15)}


def run_torch(model_name, task, steps, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn = torch.nn
    if model_name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    if task == "train":
        X, y = data(BATCH * (steps + 5), model_name)
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        loss_fn = nn.CrossEntropyLoss()
        perm = torch.randperm(X.shape[0])

        def run(first, last):
            for s in range(first, last):
                idx = perm[s * BATCH:(s + 1) * BATCH]
                optimizer.zero_grad()
                loss_fn(model(X[idx]), y[idx]).backward()
                optimizer.step()
        run(0, 5)
        t = time.perf_counter()
        run(5, steps + 5)
        return BATCH * steps / (time.perf_counter() - t)
    X = torch.from_numpy(data(1000, model_name)[0])
    model.eval()
    with torch.inference_mode():
        model(X)
        return {"batch_ms": 1e3 * median_seconds(lambda: model(X), 15),
                "one_us": 1e6 * median_seconds(lambda: model(X[:1]), 15)}


def run_onnxruntime(model, task, steps, threads):
    if task == "train":
        return None
    import onnxruntime as ort
    path = os.path.join(tempfile.mkdtemp(), f"{model}.onnx")
    pyneuro_model(model).to_onnx(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    X = data(1000, model)[0]
    session.run(None, {"input": X})
    return {"batch_ms": 1e3 * median_seconds(lambda: session.run(None, {"input": X}), 15),
            "one_us": 1e6 * median_seconds(lambda: session.run(None, {"input": X[:1]}), 15)}


def installed(library):
    return library == "pyneuro" or subprocess.run([sys.executable, "-c", f"import {library}"],
                                                  capture_output=True).returncode == 0


def measure(library, model, task, steps, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import networks; "
            f"print(json.dumps(networks.run_{library}({model!r}, {task!r}, {steps}, {threads})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{library} {task}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=SHAPES, default="cnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    libraries = [lib for lib in LIBRARIES if installed(lib)]
    missing = [lib for lib in LIBRARIES if lib not in libraries]
    results = {(lib, task): [] for lib in libraries for task in ("train", "predict")}
    for r in range(args.rounds):
        for lib in (libraries if r % 2 == 0 else libraries[::-1]):
            for task in ("train", "predict"):
                value = measure(lib, args.model, task, args.steps, args.threads)
                if value is not None:
                    results[lib, task].append(value)
    import pyneuro as pn
    pn.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(__file__))
    from gemm import peak_gflops
    peak = peak_gflops(np.float32, 5)
    name = {"cnn": "LeNet-like CNN", "mlp": "MLP 784-256-128-10"}[args.model]
    print(f"{name}, float32, {args.threads} thread(s), {args.rounds} rounds (medians); "
          f"peak probe {peak:.1f} GFLOP/s" + (f"; not installed: {', '.join(missing)}" if missing else ""))
    train = {lib: statistics.median(v) for (lib, task), v in results.items() if task == "train" and v}
    pred = {lib: {k: statistics.median(d[k] for d in v) for k in ("batch_ms", "one_us")}
            for (lib, task), v in results.items() if task == "predict" and v}
    print(f"{'':12} {'train samples/s':>16} {'predict 1000 ms':>16} {'predict 1 µs':>14}")
    for lib in libraries:
        t = f"{train[lib]:16.0f}" if lib in train else f"{'-':>16}"
        print(f"{lib:12} {t} {pred[lib]['batch_ms']:16.2f} {pred[lib]['one_us']:14.0f}")
    for lib in libraries[1:]:
        parts = [f"train {train['pyneuro'] / train[lib]:.2f}x"] if lib in train else []
        parts += [f"predict 1000 {pred[lib]['batch_ms'] / pred['pyneuro']['batch_ms']:.2f}x",
                  f"one image {pred[lib]['one_us'] / pred['pyneuro']['one_us']:.2f}x"]
        print(f"pyneuro vs {lib}: " + ", ".join(parts))
    gflops = flops_per_sample(args.model) * 1000 / (pred["pyneuro"]["batch_ms"] * 1e-3) / 1e9
    print(f"pyneuro predict 1000: {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f} % of the peak probe "
          f"({flops_per_sample(args.model) / 1e6:.2f} MFLOP a sample)")


if __name__ == "__main__":
    main()
