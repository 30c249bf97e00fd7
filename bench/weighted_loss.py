"""What sample weights and input conversion cost in a whole training step:
`flock /work/timing.lock python bench/weighted_loss.py [rounds]`.

One training step as Trainer.fit takes it — gather and convert the batch's rows, forward,
loss and ∂L/∂Z, backward, Adam update (Trainer._gradient, then optimizer.step) — of the
784-256-128-10 ReLU network of bench/peers.py at batch 128, float32 model, side by side:

    float32            float32 X, unweighted (the reference)
    weighted           float32 X, per-row sample weights (gathered with the rows, the
                       weighted loss kernel, W_b summed)
    uint8              uint8 X converted in the gather (the conversion alone)
    uint8 + Scale      uint8 X converted in the gather, then a Scale(1/255) layer
    float64            float64 X converted in the gather

The variants' steps are interleaved: each round times a block of steps of every variant in
turn, so a shared machine's load falls on all alike; the figures are the medians over the
rounds of the time per step. Also the loss kernel alone, weighted and not.
"""
import sys
import time

import numpy as np

import peers

BATCH = 128
VARIANTS = ("float32", "weighted", "uint8", "uint8 + Scale", "float64")


def step_fn(variant: str):
    """A function running one training step of `variant` (a fresh model and Trainer)."""
    X, y = peers.data()
    pn, model, optimizer = peers.pyneuro_model("adam")
    w = None
    if variant == "weighted":
        w = np.random.default_rng(1).uniform(0, 2, X.shape[0]).astype(np.float32)
    elif variant.startswith("uint8"):
        X = (X * 255).astype(np.uint8)
        if variant == "uint8 + Scale":
            model = pn.Sequential([pn.Scale(1 / 255), *model.layers], seed=0)
    elif variant == "float64":
        X = X.astype(np.float64)
    trainer = pn.Trainer(model, "cross_entropy", optimizer, batch_size=BATCH, verbose=0, seed=0)
    source = trainer._data(X, y)
    rng = np.random.default_rng(0)

    def step():
        trainer._gradient(source, rng.integers(0, X.shape[0], BATCH), w)
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


def interleaved_medians(fns: dict, rounds: int, block: int) -> dict:
    """{name: median over `rounds` of the time per call}, each round timing `block` calls of
    every function in turn (after one warm-up block each)."""
    times: dict = {name: [] for name in fns}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(block):
                fn()
            if r:                       # round 0 warms up
                times[name].append((time.perf_counter() - t) / block)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def main(rounds=30):
    step = interleaved_medians({v: step_fn(v) for v in VARIANTS}, rounds, block=10)
    kernel = interleaved_medians({"unweighted": loss_fn(False), "weighted": loss_fn(True)}, rounds, block=500)
    base = step["float32"]
    print(f"whole training step, batch {BATCH}, 784-256-128-10 float32 model, Adam; "
          f"medians of {rounds} interleaved rounds")
    for v in VARIANTS:
        print(f"  {v:<14} {step[v] * 1e6:9.1f} µs/step   {(step[v] / base - 1):+7.2%} vs float32")
    print(f"  loss kernel alone: unweighted {kernel['unweighted'] * 1e6:.2f} µs "
          f"({kernel['unweighted'] / base:.2%} of a step), weighted {kernel['weighted'] * 1e6:.2f} µs "
          f"({kernel['weighted'] / base:.2%} of a step)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:])))
