"""Model files: round trips for every layer type and both dtypes, damaged and foreign
files, atomic writes, checkpoints and exact resume."""
import json
import os
import struct

import numpy as np
import pytest

import pyneuro as pn
from pyneuro import io as pio

DTYPES = ["float32", "float64"]


def every_layer():
    return [pn.Dense(6, 12, "gelu"), pn.Dropout(0.3), pn.Dense(12, 10), pn.ReLU(), pn.LeakyReLU(0.2),
            pn.ELU(0.7), pn.Dense(10, 9, "elu", alpha=0.5), pn.Sigmoid(), pn.Tanh(), pn.Identity(),
            pn.GELU(), pn.Dense(9, 4, "leaky_relu", alpha=0.1), pn.Softmax()]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_layer_type(tmp_path, dtype, rng):
    model = pn.Sequential(every_layer(), seed=1, dtype=dtype)
    model.info = {"note": "kept", "shape": [2, 3]}
    X = rng.standard_normal((50, 6)).astype(dtype)
    model.save(tmp_path / "m.safetensors")
    back = pn.load(tmp_path / "m.safetensors")
    assert repr(back) == repr(model) and back.dtype == model.dtype
    assert np.array_equal(back.params, model.params)
    assert np.array_equal(back.predict(X), model.predict(X))            # bitwise
    assert back.info == {"note": "kept", "shape": [2, 3]}
    assert {type(a) for a in (back.layers[1], back.layers[4])} == {pn.Dropout, pn.LeakyReLU}
    assert back.layers[4].alpha == 0.2 and back.layers[1].p == 0.3


def test_info_given_to_save_replaces_the_models_even_when_empty(tmp_path):
    model = pn.Sequential([pn.Dense(3, 2)], seed=0)
    model.info = {"a": 1}
    model.save(tmp_path / "given.st", info={"b": 2})
    model.save(tmp_path / "empty.st", info={})
    assert pn.load(tmp_path / "given.st").info == {"b": 2}
    assert pn.load(tmp_path / "empty.st").info == {}


def test_file_is_plain_safetensors_with_json_metadata(tmp_path):
    from safetensors.numpy import load_file
    from safetensors import safe_open
    model = pn.Sequential([pn.Dense(3, 2)], seed=0)
    model.save(tmp_path / "m.st")
    assert np.array_equal(load_file(tmp_path / "m.st")["params"], model.params)
    with safe_open(tmp_path / "m.st", "np") as f:
        meta = f.metadata()
    assert meta["format"] == "pyneuro-model" and meta["pyneuro_version"] == pn.__version__
    assert json.loads(meta["model"])["layers"][0] == {"type": "Dense", "config": {
        "n_in": 3, "n_out": 2, "activation": "identity"}}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.st"
    pn.Sequential([pn.Dense(4, 5, "relu"), pn.Dense(5, 3)], seed=0).save(path)
    return path


def rewrite_metadata(path, edit, fix_checksum=False):
    """Rewrite the safetensors header's metadata with edit(meta) (same tensors)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header["__metadata__"])
    if fix_checksum:
        meta = header["__metadata__"]
        tensors = {"params": np.frombuffer(data[8 + n:], np.float32)}
        meta["sha256"] = pio._digest({k: v for k, v in meta.items() if k != "sha256"}, tensors)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


@pytest.mark.parametrize("cut", [0, 5, 8, 40, -1, -7])
def test_truncated_file(saved, cut):
    data = saved.read_bytes()
    saved.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(ValueError, match=str(saved)):
        pn.load(saved)


def test_flipped_byte_in_the_weights(saved):
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0x10
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        pn.load(saved)


def test_hand_edited_metadata(saved):
    rewrite_metadata(saved, lambda m: m.update(model=m["model"].replace('"relu"', '"tanh"')))
    with pytest.raises(ValueError, match="edited by hand"):
        pn.load(saved)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(model='{"dtype": "float32", "layers": [{"type": "Conv9"'), "not JSON"),
    (lambda m: m.update(model=m["model"].replace('"Dense"', '"Conv9"', 1)), "unknown type 'Conv9'"),
    (lambda m: m.update(model=m["model"].replace('"n_out": 5', '"n_out": 6')), "receives 6 inputs"),
    (lambda m: m.update(model=m["model"].replace('"input_dim": 4', '"input_dim": 7').replace('"n_in": 4', '"n_in": 7')),
     "params of shape"),
    (lambda m: m.update(format_version="2"), "newer pyneuro"),
])
def test_consistent_but_wrong_metadata(saved, edit, message):
    rewrite_metadata(saved, edit, fix_checksum=True)
    with pytest.raises(ValueError, match=message):
        pn.load(saved)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(100), bytes(range(256)) * 4,
                                     b"{}" * 10, b"\xff" * 8 + b"{}"])
def test_foreign_files(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a pyneuro model file"):
        pn.load(path)


def test_safetensors_file_from_elsewhere(tmp_path):
    from safetensors.numpy import save_file
    save_file({"weight": np.zeros(3, np.float32)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="without pyneuro metadata"):
        pn.load(tmp_path / "other.safetensors")


def test_interrupted_write_keeps_the_old_file(saved, monkeypatch):
    before = saved.read_bytes()
    model = pn.Sequential([pn.Dense(4, 5, "relu"), pn.Dense(5, 3)], seed=9)

    class Disk(Exception):
        pass

    real_fdopen = os.fdopen

    def failing_fdopen(fd, mode):
        f = real_fdopen(fd, mode)
        real_write = f.write

        def write(data):           # half the bytes reach the disk, then it fails
            real_write(data[:len(data) // 2])
            raise Disk("disk full")
        f.write = write
        return f
    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with pytest.raises(Disk):
        model.save(saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before                   # the previous file is intact
    assert sorted(os.listdir(saved.parent)) == [saved.name]  # and no temporary is left behind
    assert np.array_equal(pn.load(saved).params, pn.Sequential(
        [pn.Dense(4, 5, "relu"), pn.Dense(5, 3)], seed=0).params)


def test_failed_rename_leaves_no_temporary(saved, monkeypatch):
    before = saved.read_bytes()
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("EXDEV")))
    with pytest.raises(OSError):
        pio.atomic_write(saved, b"new")
    monkeypatch.undo()
    assert saved.read_bytes() == before and os.listdir(saved.parent) == [saved.name]


# ---- checkpoints ------------------------------------------------------------------------------
def make_trainer(opt, dtype, epochs=6):
    model = pn.Sequential([pn.Dense(64, 32, "relu"), pn.Dropout(0.2), pn.Dense(32, 10)], seed=1, dtype=dtype)
    optimizer = {"adam": lambda: pn.Adam(lr=2e-3, schedule=pn.CosineDecay(epochs)),
                 "sgd": lambda: pn.SGD(lr=0.05, momentum=0.9, nesterov=True, schedule=pn.StepDecay(2, 0.5)),
                 "rmsprop": lambda: pn.RMSprop(lr=1e-3, clip_norm=1.0),
                 "adamw": lambda: pn.AdamW(lr=1e-3, schedule=pn.ExponentialDecay(0.9))}[opt]()
    return pn.Trainer(model, "cross_entropy", optimizer, batch_size=50, epochs=epochs, seed=3, verbose=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", ["adam", "sgd", "rmsprop", "adamw"])
def test_resume_is_bitwise_identical(tmp_path, opt, dtype):
    X, y = pn.datasets.load_digits(dtype=dtype)
    X, y = X[:600], y[:600]
    full = make_trainer(opt, dtype)
    full.fit(X, y, validation_split=0.2)
    part = make_trainer(opt, dtype)
    part.fit(X, y, validation_split=0.2,
             callbacks=[pn.ModelCheckpoint(tmp_path / "ck.st", save_best_only=False), interrupt_after(part, 2)])
    resumed = pn.Trainer.from_checkpoint(tmp_path / "ck.st", verbose=0)
    assert resumed.epoch == 2
    resumed.fit(X, y, validation_split=0.2)                 # the 4 epochs still to come
    assert resumed.epoch == 6
    assert np.array_equal(resumed.model.params, full.model.params)
    assert resumed.history["val_loss"] == full.history["val_loss"]


def interrupt_after(trainer, epochs):
    """A callback that stops `trainer` after `epochs` epochs, as a crash would."""
    return pn.LambdaCallback(on_epoch_end=lambda e, logs: setattr(trainer, "stop_training", e + 1 == epochs))


@pytest.mark.parametrize("default_epochs, earlier_fits", [(3, 0), (2, 2)])
def test_resume_finishes_the_fit_that_was_running(tmp_path, default_epochs, earlier_fits):
    """Not the Trainer's default epochs: fit(epochs=5) interrupted after 3 resumes for 2 more,
    also when earlier fits already ran epochs."""
    X, y = pn.datasets.load_digits()
    X, y = X[:300], y[:300]
    full, part = (make_trainer("sgd", "float32", default_epochs) for _ in range(2))
    for t in (full, part):
        t.fit(X, y, epochs=earlier_fits)
    full.fit(X, y, epochs=5)
    part.fit(X, y, epochs=5, callbacks=[pn.ModelCheckpoint(tmp_path / "ck.st", save_best_only=False),
                                        interrupt_after(part, earlier_fits + 3)])
    resumed = pn.Trainer.from_checkpoint(tmp_path / "ck.st", verbose=0)
    assert resumed.epoch == earlier_fits + 3
    resumed.fit(X, y)
    assert resumed.epoch == full.epoch == earlier_fits + 5
    assert np.array_equal(resumed.model.params, full.model.params)


def test_checkpoint_is_a_model_file_and_a_model_file_is_no_checkpoint(tmp_path):
    X, y = pn.datasets.load_digits()
    t = make_trainer("adam", "float32", epochs=1)
    t.fit(X[:200], y[:200])
    t.save_checkpoint(tmp_path / "ck.st")
    assert np.array_equal(pn.load(tmp_path / "ck.st").predict(X), t.model.predict(X))
    t.model.save(tmp_path / "m.st")
    with pytest.raises(ValueError, match="not a checkpoint"):
        pn.Trainer.from_checkpoint(tmp_path / "m.st")


def test_schedule_given_as_a_function_must_be_passed_again(tmp_path):
    X, y = pn.datasets.load_digits()
    model = pn.Sequential([pn.Dense(64, 10)], seed=0)
    t = pn.Trainer(model, "cross_entropy", pn.Adam(schedule=lambda e: 0.5 ** e), epochs=2, verbose=0)
    t.fit(X[:100], y[:100], epochs=1)
    t.save_checkpoint(tmp_path / "ck.st")
    with pytest.raises(ValueError, match="pass it again with schedule="):
        pn.Trainer.from_checkpoint(tmp_path / "ck.st")
    assert pn.Trainer.from_checkpoint(tmp_path / "ck.st", schedule=lambda e: 0.5 ** e).epoch == 1


def test_save_best_only_keeps_the_best_epoch(tmp_path):
    X, y = pn.datasets.load_digits()
    seen = []
    t = make_trainer("sgd", "float32", epochs=5)
    t.optimizer.lr = 3.0   # too large: validation loss rises after a while
    cb = pn.ModelCheckpoint(tmp_path / "best.st", monitor="val_loss")
    record = pn.LambdaCallback(on_epoch_end=lambda e, logs: seen.append((logs["val_loss"], t.model.get_weights())))
    t.allow_nonfinite = True
    try:
        t.fit(X, y, validation_split=0.25, callbacks=[cb, record])
    except pn.DivergenceError:
        pass
    best_loss, best_weights = min(seen, key=lambda s: s[0])
    assert np.array_equal(pn.load(tmp_path / "best.st").params, best_weights)


def test_checkpoint_that_lies_about_a_tensor_is_refused(tmp_path):
    from safetensors.numpy import load_file
    X, y = pn.datasets.load_digits()
    t = make_trainer("adam", "float32", epochs=1)
    t.fit(X[:100], y[:100])
    t.save_checkpoint(tmp_path / "ck.st")
    tensors, docs = pio.read_file(tmp_path / "ck.st")
    tensors["optimizer.m"] = tensors["optimizer.m"][:1]           # a consistent file, a wrong tensor
    pio.write_file(tmp_path / "bad.st", tensors, {k: v for k, v in docs.items() if k != "pyneuro_version"})
    assert load_file(tmp_path / "bad.st")["optimizer.m"].shape == (1,)
    with pytest.raises(ValueError, match=r"optimizer.m should be float32 \(\d+,\), the file holds float32 \(1,\)"):
        pn.Trainer.from_checkpoint(tmp_path / "bad.st")
