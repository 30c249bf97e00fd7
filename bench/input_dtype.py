"""What reading uint8 input costs: a training step of the 784-256-128-10 ReLU network at
batch 128 on uint8 data (converted to float32 in the gather, X_b = float32(X[idx])) side
by side with float32 data, in one run. Prints both medians and the ratio, and the
gathers alone (the conversion's own cost as a share of a step).

    python bench/input_dtype.py [repeats]
"""
import sys
import time

import numpy as np

import peers


def median_seconds(X, y, repeats, whole_step=True, batch=128):
    """The median time of a training step (or of its gather alone, where the conversion is)."""
    pn, model, optimizer = peers.pyneuro_model("sgd")
    trainer = pn.Trainer(model, "cross_entropy", optimizer, batch_size=batch, verbose=0, seed=0)
    source = trainer._data(X, y)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        idx = rng.integers(0, X.shape[0], batch)
        t = time.perf_counter()
        xb, yb, dZ, _ = source.fetch(trainer, idx)
        if whole_step:
            Z = model.forward(xb, training=True)
            trainer.loss.value_and_grad(Z, yb, dZ)
            model.backward(dZ)
            optimizer.step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(repeats=400):
    _, y = peers.data()
    rng = np.random.default_rng(0)
    X8 = rng.integers(0, 256, (y.shape[0], 784)).astype(np.uint8)
    X32 = X8.astype(np.float32)
    rounds = [(median_seconds(X32, y, repeats), median_seconds(X8, y, repeats)) for _ in range(3)]
    f32, u8 = min(r[0] for r in rounds), min(r[1] for r in rounds)   # best of 3 interleaved rounds
    print(f"batch 128, 784-256-128-10: float32 input {f32 * 1e3:.3f} ms/step, uint8 input {u8 * 1e3:.3f} ms/step, "
          f"ratio {u8 / f32:.3f} ({(u8 / f32 - 1) * 100:+.1f} %)")
    g32 = min(median_seconds(X32, y, repeats, whole_step=False) for _ in range(3))
    g8 = min(median_seconds(X8, y, repeats, whole_step=False) for _ in range(3))
    print(f"gather alone: float32 {g32 * 1e6:.1f} us, uint8 {g8 * 1e6:.1f} us; the conversion's share of a "
          f"float32 step: {(g8 - g32) / f32 * 100:+.2f} %")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
