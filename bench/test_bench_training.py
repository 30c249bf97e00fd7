"""pytest-benchmark suites for a training step and for prediction: `python -m pytest bench -q`.

One step = gather a shuffled batch, forward, softmax cross-entropy, backward, one
optimizer update, for the 784-256-128-10 ReLU network of bench/peers.py; PyTorch's
twin runs when it is installed. `python bench/peers.py` prints the epoch-level
table with ratios."""
import numpy as np
import pytest

import peers

BATCHES = [32, 128, 512]
OPTIMIZERS = ["sgd", "adam"]


@pytest.fixture(scope="module")
def data():
    return peers.data()


def pyneuro_step(opt, batch, data):
    """A closure running one training step of pyneuro's Trainer internals on a fresh batch."""
    X, y = data
    pn, model, optimizer = peers.pyneuro_model(opt)
    trainer = pn.Trainer(model, "cross_entropy", optimizer, batch_size=batch, verbose=0, seed=0)
    source = trainer._data(X, y)
    rng = np.random.default_rng(0)

    def step():
        idx = rng.integers(0, X.shape[0], batch)
        xb, yb, dZ, _ = source.fetch(trainer, idx)
        Z = model.forward(xb, training=True)
        trainer.loss.value_and_grad(Z, yb, dZ)
        model.backward(dZ)
        optimizer.step()
    return step


def torch_step(opt, batch, data):
    torch = pytest.importorskip("torch")
    X, y = data
    _, model, optimizer = peers.torch_model(opt)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(0, X.shape[0], (batch,), generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(Xt[idx]), yt[idx]).backward()
        optimizer.step()
    return step


@pytest.mark.parametrize("opt", OPTIMIZERS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("lib", ["pyneuro", "torch"])
def test_training_step(benchmark, lib, batch, opt, data):
    step = (pyneuro_step if lib == "pyneuro" else torch_step)(opt, batch, data)
    benchmark.extra_info["samples_per_step"] = batch
    benchmark(step)


@pytest.mark.parametrize("rows", [1, 1000])
@pytest.mark.parametrize("lib", ["pyneuro", "torch"])
def test_predict(benchmark, lib, rows, data):
    x = data[0][:rows].copy()
    if lib == "pyneuro":
        _, model, _ = peers.pyneuro_model("sgd")
        benchmark(model.predict, x)
        return
    torch = pytest.importorskip("torch")
    _, model, _ = peers.torch_model("sgd")
    xt = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return model(xt)
    benchmark(run)
