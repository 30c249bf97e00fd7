"""Control at every step (issue 17): the learning rate read at every step (callbacks, per-step
schedules, ReduceLROnPlateau), stop_training inside an epoch, schedules past their horizon,
and frozen layers (trainable = False)."""
import math

import numpy as np
import pytest

import pyneuro as pn
from pyneuro.io import read_file, write_file


def same_rows(n=20, seed=0):
    """n copies of one row (x, y): every batch's mean-loss gradient is the one row's."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(3), rng.standard_normal(2) * 3
    return np.tile(x, (n, 1)), np.tile(y, (n, 1))


def numpy_grad(w, X, Y):
    """∂ mean((X·W + b − Y)²)/∂θ of a Dense(3, 2) with θ = [W.ravel(), b]."""
    W, b = w[:6].reshape(3, 2), w[6:]
    dZ = 2 * (X @ W + b - Y) / Y.size
    return np.concatenate([(X.T @ dZ).ravel(), dZ.sum(axis=0)])


# ---- the learning rate, read at every step ------------------------------------------------------
@pytest.mark.parametrize("schedule", [None, pn.LinearWarmup(3)])
def test_lr_set_in_a_batch_callback_acts_at_the_next_step(schedule):
    """An LR finder: lr grows by 1.5 after every batch; each step is a NumPy SGD step with
    η = (the lr set after the step before) · factor(step)."""
    X, Y = same_rows()
    model = pn.Sequential([pn.Dense(3, 2)], seed=0, dtype="float64")
    trainer = pn.Trainer(model, loss="mse", optimizer=pn.SGD(lr=0.01, schedule=schedule), batch_size=8,
                         epochs=2, verbose=0, seed=0)
    weights, lrs = [model.get_weights()], [0.01]

    def finder(batch, logs):
        weights.append(model.get_weights())
        trainer.optimizer.lr = lrs[-1] * 1.5
        lrs.append(trainer.optimizer.lr)

    trainer.fit(X, Y, callbacks=[pn.LambdaCallback(on_batch_end=finder)])
    assert len(weights) == 7                                  # 3 batches a epoch, 2 epochs
    for s in range(6):
        factor = 1.0 if schedule is None else min(1.0, (s + 1) / 3)
        expected = weights[s] - lrs[s] * factor * numpy_grad(weights[s], X[:1], Y[:1])
        np.testing.assert_allclose(weights[s + 1], expected, rtol=1e-12, atol=1e-14)


def test_lr_is_checked_and_current_lr_is_read_only():
    opt = pn.SGD(lr=0.1)
    for bad in (0.0, -1.0, math.nan, "1"):
        with pytest.raises((ValueError, TypeError), match="lr"):
            opt.lr = bad
    with pytest.raises(AttributeError, match="set optimizer.lr"):
        opt.current_lr = 0.5
    assert opt.lr == opt.current_lr == 0.1


def test_a_per_step_schedule_sets_every_steps_learning_rate():
    X, Y = same_rows(20)
    model = pn.Sequential([pn.Dense(3, 2)], seed=0)
    cycle = pn.OneCycle(total_steps=6)
    trainer = pn.Trainer(model, loss="mse", optimizer=pn.Adam(lr=0.1, schedule=cycle), batch_size=10,
                         epochs=4, verbose=0)
    seen = []
    trainer.fit(X.astype(np.float32), Y.astype(np.float32),
                callbacks=[pn.LambdaCallback(on_batch_end=lambda b, logs: seen.append(trainer.optimizer.current_lr))])
    np.testing.assert_allclose(seen, [0.1 * cycle(s) for s in range(8)], rtol=1e-15)
    assert seen[0] == pytest.approx(0.1 / 25) and seen[5] == seen[6] == seen[7] == pytest.approx(0.1 / 25e4)


# ---- schedules --------------------------------------------------------------------------------
def test_schedule_formulas():
    warm = pn.LinearWarmup(4)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    sgdr = pn.CosineRestarts(period=2, t_mult=2, min_factor=0.1)
    starts = [0, 2, 6, 14]                                    # cycles of 2, 4, 8 steps
    for s in range(14):
        start = max(a for a in starts if a <= s)
        length = starts[starts.index(start) + 1] - start
        assert sgdr(s) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * (s - start) / length)) / 2)
    assert [sgdr(s) for s in starts] == [1.0] * 4
    assert pn.CosineRestarts(3)(7) == pytest.approx(pn.CosineRestarts(3)(1))
    cycle = pn.OneCycle(11, pct_start=0.4, div_factor=10, final_div_factor=100)
    assert cycle(0) == pytest.approx(0.1) and cycle(4) == pytest.approx(1.0)
    assert cycle(2) == pytest.approx(0.55) and cycle(10) == pytest.approx(1e-3) and cycle(10**18) == cycle(10)
    assert pn.CosineRestarts(1, t_mult=3)(10**18) <= 1.0      # a huge step count: exact, no overflow


def test_schedules_settle_at_their_floor_and_never_overflow():
    for s in (pn.CosineDecay(3), pn.ExponentialDecay(0.5), pn.StepDecay(1, 0.5), pn.LinearWarmup(2),
              pn.CosineRestarts(5, 2), pn.OneCycle(10)):
        for n in (10**3, 10**6, 2**62):
            assert 0.0 <= s(n) <= 1.0
    assert pn.CosineDecay(3)(4) == 0.0 and pn.ExponentialDecay(0.5)(2000) == 0.0
    for bad in (lambda: pn.ExponentialDecay(2.0), lambda: pn.StepDecay(1, gamma=1.5)):
        with pytest.raises(ValueError, match="gamma"):
            bad()
    with pytest.raises(ValueError, match="per"):
        pn.CosineDecay(3, per="batch")
    with pytest.raises(ValueError, match="per"):
        pn.SGD(schedule=type("S", (), {"per": "hour", "__call__": lambda self, n: 1.0})())


def test_cosine_decay_past_its_horizon_trains_on_with_learning_rate_zero():
    """CosineDecay(T) with its floor 0: no error at epoch T + 1; the steps there change nothing."""
    X, Y = same_rows(16)
    model = pn.Sequential([pn.Dense(3, 2)], seed=0, dtype="float64")
    trainer = pn.Trainer(model, loss="mse", optimizer=pn.SGD(lr=0.1, schedule=pn.CosineDecay(2)), batch_size=8,
                         epochs=2, verbose=0)
    trainer.fit(X, Y)
    w = model.get_weights()
    trainer.fit(X, Y, epochs=2)
    assert trainer.optimizer.current_lr == 0.0 and np.array_equal(model.params, w)


def test_a_per_step_schedule_resumes_bitwise_from_a_checkpoint(tmp_path):
    X, y = pn.datasets.load_digits()
    X, y = X[:300], y[:300]

    def make():
        model = pn.Sequential([pn.Dense(64, 16, "relu"), pn.Dense(16, 10)], seed=1)
        opt = pn.SGD(lr=0.1, momentum=0.9, schedule=pn.CosineRestarts(5, 2, 0.01))
        return pn.Trainer(model, optimizer=opt, batch_size=50, epochs=4, seed=3, verbose=0)

    full, part = make(), make()
    full.fit(X, y)
    stop = pn.LambdaCallback(on_epoch_end=lambda e, logs: setattr(part, "stop_training", e == 1))
    part.fit(X, y, callbacks=[pn.ModelCheckpoint(tmp_path / "ck.st", monitor="loss", save_best_only=False), stop])
    resumed = pn.Trainer.from_checkpoint(tmp_path / "ck.st", verbose=0)
    assert resumed.optimizer.t == 12 and resumed.optimizer.schedule.config() == full.optimizer.schedule.config()
    resumed.fit(X, y)
    assert np.array_equal(resumed.model.params, full.model.params)


# ---- stop_training inside an epoch ------------------------------------------------------------
def test_stop_training_in_on_batch_end_stops_after_that_step():
    X, Y = same_rows(50)
    model = pn.Sequential([pn.Dense(3, 2)], seed=0, dtype="float64")
    trainer = pn.Trainer(model, loss="mse", optimizer=pn.SGD(lr=0.01), batch_size=10, epochs=3, verbose=0)
    losses, ends = [], []

    def on_batch_end(batch, logs):
        losses.append(logs["loss"])
        trainer.stop_training = batch == 2

    history = trainer.fit(X, Y, validation_data=(X, Y), callbacks=[pn.LambdaCallback(
        on_batch_end=on_batch_end, on_epoch_end=lambda e, logs: ends.append(e))])
    assert trainer.optimizer.t == 3 and ends == [0] and trainer.epoch == 1
    assert history["loss"] == [pytest.approx(np.mean(losses), rel=1e-12)]   # the partial epoch's logs
    assert len(history["val_loss"]) == 1


# ---- ReduceLROnPlateau ------------------------------------------------------------------------
def test_reduce_lr_on_plateau_follows_keras_rule():
    cb = pn.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.03, cooldown=1)
    cb.trainer = type("T", (), {"optimizer": pn.SGD(lr=0.1)})()
    cb.on_train_begin({})
    lrs = []
    for value in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]:
        cb.on_epoch_end(0, {"val_loss": value})
        lrs.append(cb.trainer.optimizer.lr)
    # waits 2 → 0.05; the cooldown ends as the next epoch begins (Keras), which then counts; → 0.03
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03]
    cb.cooldown = 2
    cb.on_train_begin({})
    cb.trainer.optimizer.lr = 0.1
    for value in [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]:
        cb.on_epoch_end(0, {"val_loss": value})
        lrs.append(cb.trainer.optimizer.lr)
    assert lrs[-6:] == [0.1, 0.1, 0.05, 0.05, 0.05, 0.03]
    with pytest.raises(ValueError, match="factor"):
        pn.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="not among the logged"):
        cb.on_epoch_end(0, {"loss": 1.0})


def test_reduce_lr_on_plateau_in_training_scales_the_scheduled_rate():
    X, Y = same_rows(16)
    model = pn.Sequential([pn.Dense(3, 2)], seed=0)
    opt = pn.SGD(lr=1e-9, schedule=pn.StepDecay(1, 0.5))             # too small to improve anything
    trainer = pn.Trainer(model, loss="mse", optimizer=opt, batch_size=8, epochs=4, verbose=0)
    cb = pn.ReduceLROnPlateau(monitor="loss", factor=0.1, patience=1, min_delta=1.0)
    trainer.fit(X.astype(np.float32), Y.astype(np.float32), callbacks=[cb])
    assert opt.lr == pytest.approx(1e-9 * 0.1 ** 3)
    assert opt.current_lr == pytest.approx(1e-9 * 0.1 ** 2 * 0.5 ** 3)   # lr before the last reduction


# ---- frozen layers ----------------------------------------------------------------------------
FREEZE_OPTIMIZERS = {
    "SGD momentum+wd": lambda: pn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "Adam": lambda: pn.Adam(lr=5e-3, weight_decay=1e-3),
    "AdamW": lambda: pn.AdamW(lr=5e-3),
    "RMSprop": lambda: pn.RMSprop(lr=5e-3, weight_decay=1e-3),
    "SGD clip_norm": lambda: pn.SGD(lr=0.1, momentum=0.5, clip_norm=0.1),
}


@pytest.mark.parametrize("name", list(FREEZE_OPTIMIZERS))
@pytest.mark.parametrize("frozen", [[1], [0, 2]])
def test_a_frozen_layer_never_changes(name, frozen):
    X, y = pn.datasets.load_digits()
    X, y = X[:200], y[:200]
    model = pn.Sequential([pn.Dense(64, 16, "relu"), pn.Dense(16, 16, "tanh"), pn.Dense(16, 10)], seed=0)
    for i in frozen:
        model.layers[i].trainable = False
    trainer = pn.Trainer(model, optimizer=FREEZE_OPTIMIZERS[name](), batch_size=32, epochs=3, seed=0, verbose=0)
    before = [(layer.W.copy(), layer.b.copy()) for layer in model.layers]
    trainer.fit(X, y)
    for i, (layer, (W, b)) in enumerate(zip(model.layers, before)):
        same = np.array_equal(layer.W, W) and np.array_equal(layer.b, b)
        assert same == (i in frozen), i
    for state in trainer.optimizer.state_arrays().values():   # nor their momentum or moments
        for i, a, b in model._spans:
            if not model.layers[i].trainable:
                assert not state[a:b].any()


def test_clip_norm_counts_only_trainable_parameters():
    """One full-batch SGD step with active clipping, frozen first layer, against NumPy."""
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2)) * 3
    model = pn.Sequential([pn.Dense(3, 4), pn.Dense(4, 2)], seed=0, dtype="float64")
    model.layers[0].trainable = False
    w0 = model.get_weights()
    W1, b1, W2, b2 = w0[:12].reshape(3, 4), w0[12:16], w0[16:24].reshape(4, 2), w0[24:]
    Z1 = X @ W1 + b1
    dZ = 2 * (Z1 @ W2 + b2 - Y) / Y.size
    g = np.concatenate([(Z1.T @ dZ).ravel(), dZ.sum(axis=0)])
    clip = 0.25 * np.linalg.norm(g)
    pn.Trainer(model, loss="mse", optimizer=pn.SGD(lr=0.1, clip_norm=clip), batch_size=8, epochs=1,
               verbose=0).fit(X, Y)
    np.testing.assert_array_equal(model.params[:16], w0[:16])
    np.testing.assert_allclose(model.params[16:], w0[16:] - 0.1 * 0.25 * g, rtol=1e-12, atol=1e-14)


def test_trainable_set_after_the_trainer_was_made_acts_at_the_next_step():
    X, y = pn.datasets.load_digits()
    X, y = X[:100], y[:100]
    model = pn.Sequential([pn.Dense(64, 16, "relu"), pn.Dense(16, 10)], seed=0)
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), batch_size=20, epochs=1, verbose=0)
    trainer.fit(X, y)
    first = model.layers[0].W.copy()

    def freeze(batch, logs):          # from the second step on
        model.layers[0].trainable = False
        frozen_at.append(model.layers[0].W.copy())

    frozen_at: list = []
    trainer.fit(X, y, callbacks=[pn.LambdaCallback(on_batch_end=freeze)])
    assert not np.array_equal(frozen_at[0], first) and np.array_equal(model.layers[0].W, frozen_at[0])
    model.layers[0].trainable = True
    trainer.fit(X, y)
    assert not np.array_equal(model.layers[0].W, frozen_at[0])


def test_trainable_in_summary_and_files(tmp_path):
    model = pn.Sequential([pn.Dense(3, 4, "relu"), pn.Dropout(0.1), pn.Dense(4, 2)], seed=0)
    with pytest.raises(TypeError, match="trainable"):
        model.layers[0].trainable = "no"
    model.layers[0].trainable = False
    text = model.summary(print_fn=None)
    assert "(frozen)" in text and "Trainable params: 10" in text and "Non-trainable params: 16" in text
    assert model.trainable_ranges() == [(16, 26)] and model.count_trainable_params() == 10
    model.save(tmp_path / "m.st")
    loaded = pn.load(tmp_path / "m.st")
    assert [layer.trainable for layer in loaded.layers] == [False, True, True]
    import pickle
    assert [layer.trainable for layer in pickle.loads(pickle.dumps(model)).layers] == [False, True, True]
    trainer = pn.Trainer(model, optimizer=pn.SGD(lr=0.1), epochs=1, verbose=0)
    trainer.save_checkpoint(tmp_path / "ck.st")
    assert pn.Trainer.from_checkpoint(tmp_path / "ck.st", verbose=0).model.layers[0].trainable is False
    tensors, docs = read_file(tmp_path / "m.st")
    for value, ok in ((None, True), ("no", False)):       # older files: no key; a damaged one
        spec = docs["model"]["layers"][0]
        spec.pop("trainable", None)
        if value is not None:
            spec["trainable"] = value
        write_file(tmp_path / "x.st", tensors, docs)
        if ok:
            assert pn.load(tmp_path / "x.st").layers[0].trainable is True
        else:
            with pytest.raises(ValueError, match="trainable should be true or false"):
                pn.load(tmp_path / "x.st")
