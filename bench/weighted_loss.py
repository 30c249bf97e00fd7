"""What sample weights cost in a training step: `python bench/weighted_loss.py`.

One step (gather, forward, softmax cross-entropy, backward, Adam) of the 784-256-128-10
ReLU network of bench/peers.py at batch 128, float32, with and without per-row weights
(the weights gathered with the rows, the weighted kernel); also the loss kernel alone.
Prints the times measured in this run and the ratios."""
import sys
import timeit

import numpy as np

import peers

BATCH = 128


def step_fn(weighted: bool):
    X, y = peers.data()
    pn, model, optimizer = peers.pyneuro_model("adam")
    trainer = pn.Trainer(model, "cross_entropy", optimizer, batch_size=BATCH, verbose=0, seed=0)
    w = np.random.default_rng(1).uniform(0, 2, X.shape[0]).astype(np.float32) if weighted else None
    rng = np.random.default_rng(0)

    def step():
        idx = rng.integers(0, X.shape[0], BATCH)
        trainer._gradient(X, y, idx, w)
        optimizer.step()
    return step


def loss_fn(weighted: bool):
    import pyneuro as pn
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((BATCH, 10)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    dZ = np.empty_like(Z)
    w = rng.uniform(0, 2, BATCH).astype(np.float32) if weighted else None
    return lambda: pn._core.softmax_cross_entropy(Z, y, dZ, w)


def best_pair(a, b, number, repeat=9):
    """The best time per call of a and of b, their runs interleaved (a shared machine's
    load then falls on both alike)."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(timeit.timeit(a, number=number) / number)
        tb.append(timeit.timeit(b, number=number) / number)
    return min(ta), min(tb)


def main():
    plain, weighted = best_pair(step_fn(False), step_fn(True), 30)
    loss_plain, loss_weighted = best_pair(loss_fn(False), loss_fn(True), 2000)
    print(f"batch {BATCH}, 784-256-128-10, float32, Adam")
    print(f"  step, unweighted       {plain * 1e6:9.1f} µs")
    print(f"  step, sample weights   {weighted * 1e6:9.1f} µs   ratio {weighted / plain:.4f}")
    print(f"  loss kernel, unweighted {loss_plain * 1e6:8.2f} µs   ({loss_plain / plain:.2%} of a step)")
    print(f"  loss kernel, weighted   {loss_weighted * 1e6:8.2f} µs   ({loss_weighted / plain:.2%} of a step)")
    print(f"  weighted loss and weight gathering: {(weighted - plain) / plain:+.2%} of a step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
