"""Load on `pyneuro serve`'s JSON API: many clients at once, every answer checked.

    python bench/serve_load.py                         # a small digits model, trained here in a second
    python bench/serve_load.py MODEL --threads 8 --requests 200
    python bench/serve_load.py MODEL --url http://127.0.0.1:8000/   # a server already running MODEL

Starts `pyneuro serve MODEL --port 0` in a process of its own (unless --url names a running
one), then THREADS client threads each send REQUESTS `POST /predict` requests of random
pixels over one keep-alive connection. Every answer is checked against
`model.predict_proba` on the same pixels, computed here from the same file: a mismatch is a
class that differs or a probability off by more than 1e-6. Prints the errors and mismatches
(both must be 0; the exit status is 1 otherwise), latency percentiles (p50, p90, p99, max)
and requests per second over the whole run.
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

import numpy as np

import pyneuro as pn

TOLERANCE = 1e-6


def small_digits_model(folder: str) -> str:
    """A 64-64-32-10 classifier of the bundled digits, saved in folder."""
    X, y = pn.datasets.load_digits()
    model = pn.Sequential.mlp(64, [64, 32], 10, seed=0)
    pn.Trainer(model, loss="cross_entropy", optimizer=pn.Adam(lr=3e-3), batch_size=32, epochs=20, seed=0,
               verbose=0).fit(X, y)
    path = os.path.join(folder, "digits.safetensors")
    model.save(path, info={"image_shape": [8, 8], "pixel_max": 16, "background": "dark", "dataset": "digits"})
    return path


def start_server(model_path: str) -> tuple[subprocess.Popen, str]:
    """`pyneuro serve MODEL --port 0` (this pyneuro) in its own process, and its URL."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(pn.__file__)))
    env = {**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "pyneuro.cli", "serve", model_path, "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    url = re.search(r"http://\S+/", line)
    if not url:
        proc.kill()
        sys.exit(f"the server did not start: {line!r}")
    return proc, url.group(0)


def client(url: str, X: np.ndarray, P: np.ndarray, out: dict, t: int) -> None:
    """Send each row of X in turn over one connection; record latency, errors, mismatches."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    latencies, errors, mismatches, worst = [], [], 0, 0.0
    for x, p in zip(X, P):
        body = json.dumps({"pixels": x.tolist()})
        start = time.perf_counter()
        try:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            continue
        latencies.append(time.perf_counter() - start)
        if r.status != 200:
            errors.append(f"HTTP {r.status}: {data[:200]!r}")
            continue
        doc = json.loads(data)
        diff = float(np.max(np.abs(np.array(doc["probabilities"]) - p)))
        worst = max(worst, diff)
        if doc["class"] != int(np.argmax(p)) or diff > TOLERANCE:
            mismatches += 1
    conn.close()
    out[t] = (latencies, errors, mismatches, worst)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a saved classifier (default: a small digits model trained here)")
    parser.add_argument("--url", help="a server already running MODEL (default: start one)")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--requests", type=int, default=200, help="requests per client thread")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pixels")
    args = parser.parse_args()
    if args.url and not args.model:
        parser.error("--url needs MODEL, the file that server runs (to check its answers)")
    with tempfile.TemporaryDirectory() as folder:
        model_path = args.model or small_digits_model(folder)
        model = pn.load(model_path)
        X = np.random.default_rng(args.seed).random((args.threads, args.requests, model.n_in), dtype=np.float32)
        P = model.predict_proba(X.reshape(-1, model.n_in)).reshape(args.threads, args.requests, -1)
        proc, url = (None, args.url) if args.url else start_server(model_path)
        try:
            out: dict = {}
            threads = [threading.Thread(target=client, args=(url, X[t], P[t], out, t)) for t in range(args.threads)]
            start = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - start
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    latencies = np.array([v for lat, _, _, _ in out.values() for v in lat]) * 1e3
    errors = [e for _, errs, _, _ in out.values() for e in errs]
    mismatches = sum(m for _, _, m, _ in out.values())
    worst = max(w for _, _, _, w in out.values())
    total = args.threads * args.requests
    print(f"pyneuro serve: {model_path} ({model.n_in} inputs), {args.threads} client threads x {args.requests} "
          f"requests = {total}, {pn.get_num_threads()} kernel thread(s), {os.cpu_count()} CPU(s)")
    print(f"errors {len(errors)}  mismatches {mismatches}  (largest |p - predict_proba| {worst:.2e})")
    for e in errors[:5]:
        print(f"  {e}")
    if latencies.size:
        p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
        print(f"latency ms: p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  max {latencies.max():.2f}")
    print(f"throughput: {total / wall:.0f} requests/s ({wall:.2f} s wall)")
    return 1 if errors or mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
