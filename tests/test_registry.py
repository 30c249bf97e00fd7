"""Extension points: custom layers, losses and metrics registered by name (pyneuro/_registry.py),
saved, loaded and resumed; unregistered ones refused when a file would be written."""
import pickle

import numpy as np
import pytest

import pyneuro as pn
from pyneuro import layers, losses, metrics
from pyneuro.gradcheck import check_gradients


@pytest.fixture(autouse=True)
def own_registries():
    """Registration is process-global: every test leaves the tables as it found them."""
    saved = [(table, dict(table)) for table in (layers.LAYERS, losses.LOSSES, metrics._BY_CLASS, metrics._BY_VALUE)]
    yield
    for table, entries in saved:
        table.clear()
        table.update(entries)


class Swish(pn.Layer):
    """A = X·σ(βX), elementwise."""

    def __init__(self, beta=1.0):
        super().__init__()
        self.beta = beta

    def config(self):
        return {"beta": self.beta}

    def forward(self, X, training=False):
        self.X, self.s = X, 1 / (1 + np.exp(-self.beta * X))
        return X * self.s

    def backward(self, dA, need_input_grad=True):
        s = self.s
        return dA * (s + self.beta * self.X * s * (1 - s))


class OneHotCE(pn.Loss):
    """Softmax cross-entropy written by a user: one-hot targets, a classifier."""

    classifier = True

    def value_and_grad(self, Z, y, delta):
        return pn.CrossEntropy().value_and_grad(Z, y, delta)


class Squared(pn.Loss):
    """A user's regression loss (defaults: classifier False)."""

    def value_and_grad(self, Z, y, delta):
        return pn.MSE().value_and_grad(Z, y, delta)


def data(n=80, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, 4))
    labels = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    return X, labels, np.eye(3)[labels]


def swish_model(dtype="float64"):
    return pn.Sequential([pn.Dense(4, 8), Swish(beta=1.5), pn.Dense(8, 3)], dtype=dtype, seed=0)


def test_registered_layer_trains_passes_gradcheck_saves_loads_pickles_and_resumes(tmp_path):
    assert pn.register_layer(Swish) is Swish
    X, labels, _ = data()
    model = swish_model()
    error, _, _ = check_gradients(model, "cross_entropy", X[:8], labels[:8])
    assert error < 1e-7
    trainer = pn.Trainer(model, epochs=2, verbose=0, seed=0)
    trainer.fit(X, labels)
    model.save(tmp_path / "m.st")
    for back in (pn.load(tmp_path / "m.st"), pickle.loads(pickle.dumps(model))):
        assert isinstance(back.layers[1], Swish) and back.layers[1].beta == 1.5
        np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    trainer.save_checkpoint(tmp_path / "c.st")
    trainer.fit(X, labels, epochs=2)
    resumed = pn.Trainer.from_checkpoint(tmp_path / "c.st", verbose=0)
    resumed.fit(X, labels, epochs=2)
    np.testing.assert_array_equal(resumed.model.params, model.params)


def test_unregistered_layer_is_refused_before_any_file_is_written(tmp_path):
    X, labels, _ = data()
    model = swish_model()
    trainer = pn.Trainer(model, epochs=1, verbose=0, seed=0)
    writes = [lambda: model.save(tmp_path / "m.st"), lambda: pickle.dumps(model),
              lambda: trainer.save_checkpoint(tmp_path / "c.st"),
              lambda: trainer.fit(X, labels, callbacks=[pn.ModelCheckpoint(tmp_path / "best.st", monitor="loss")])]
    for write in writes:
        with pytest.raises(ValueError, match=r"Swish is not a registered layer.*register_layer"):
            write()
    assert list(tmp_path.iterdir()) == [] and trainer.epoch == 0    # refused before training


def test_loading_an_unknown_layer_says_how_to_register_it(tmp_path):
    pn.register_layer(Swish)
    swish_model().save(tmp_path / "m.st")
    del layers.LAYERS["Swish"]          # a fresh process that never imported the module
    with pytest.raises(ValueError, match=r"unknown type 'Swish'.*pyneuro.register_layer"):
        pn.load(tmp_path / "m.st")


def test_registering_names_built_ins_clashes_and_repeats():
    with pytest.raises(ValueError, match="built-in layer"):
        pn.register_layer(Swish, name="Dense")
    with pytest.raises(ValueError, match="built-in loss"):
        pn.register_loss(name="mse")(Squared)
    with pytest.raises(TypeError, match="subclass of pyneuro.Layer"):
        pn.register_layer(Squared)
    pn.register_layer(Swish)
    pn.register_layer(Swish)            # the same class again: fine

    class Other(pn.Layer):
        pass
    with pytest.raises(ValueError, match="already registered"):
        pn.register_layer(Other, name="Swish")

    @pn.register_layer(name="Swish2")
    class Swish2(Swish):
        pass
    assert pn.Sequential([Swish2()], input_dim=3).__reduce__()[1][0]["layers"][0]["type"] == "Swish2"


def test_registered_loss_with_one_hot_targets_reports_accuracy_and_resumes(tmp_path):
    pn.register_loss(OneHotCE)
    assert OneHotCE.name == "OneHotCE"
    X, labels, onehot = data()
    trainer = pn.Trainer(swish_model(), loss=OneHotCE(), epochs=2, verbose=0, seed=0)
    pn.register_layer(Swish)
    h = trainer.fit(X, onehot, validation_split=0.25)
    builtin = pn.Trainer(swish_model(), loss="cross_entropy", epochs=2, verbose=0, seed=0)
    assert set(h) == set(builtin.fit(X, onehot, validation_split=0.25))   # val_accuracy kept
    assert trainer.accuracy_note is None
    trainer.save_checkpoint(tmp_path / "c.st")
    resumed = pn.Trainer.from_checkpoint(tmp_path / "c.st", verbose=0)
    assert isinstance(resumed.loss, OneHotCE)
    assert "val_accuracy" in resumed.fit(X, onehot, epochs=1, validation_split=0.25)
    assert pn.load(tmp_path / "c.st").output == "class_logits"
    assert isinstance(pn.Trainer(swish_model(), loss="OneHotCE").loss, OneHotCE)


def test_unregistered_loss_is_refused_at_write_time(tmp_path):
    pn.register_layer(Swish)
    X, _, onehot = data()
    trainer = pn.Trainer(swish_model(), loss=Squared(), epochs=1, verbose=0, seed=0)
    trainer.fit(X, onehot)
    for write in (lambda: trainer.save_checkpoint(tmp_path / "c.st"), lambda: trainer.model.save(tmp_path / "m.st")):
        with pytest.raises(ValueError, match=r"Squared is not a registered loss.*register_loss"):
            write()
    assert list(tmp_path.iterdir()) == []


def test_no_accuracy_is_explained_once(capsys):
    X, _, onehot = data()
    trainer = pn.Trainer(pn.Sequential([pn.Dense(4, 3)], dtype="float64", seed=0), loss=Squared(), epochs=2, verbose=2, seed=0)
    trainer.fit(X, onehot)
    lines = capsys.readouterr().out.splitlines()
    assert "Squared.classifier = True" in trainer.accuracy_note
    assert trainer.accuracy_note in lines[0] and trainer.accuracy_note not in lines[1]
    note = pn.Trainer(pn.Sequential([pn.Dense(4, 3)]), loss="mse").accuracy_note
    assert note == "no accuracy: mse is a regression loss"


def test_registered_metric_is_computed_by_name_and_knows_its_direction():
    @pn.register_metric(on="values", higher_is_better=False)
    def max_error(y_true, outputs):
        return float(np.abs(y_true - outputs).max())

    @pn.register_metric
    def wrong(y_true, y_pred):
        return float(np.mean(y_true != y_pred))

    with pytest.raises(ValueError, match="built-in metric"):
        pn.register_metric(max_error, name="mae")
    X, labels, onehot = data()
    h = pn.Trainer(pn.Sequential([pn.Dense(4, 3)], dtype="float64", seed=0), loss="mse", epochs=1, verbose=0,
                   metrics=["max_error"]).fit(X, onehot, validation_split=0.25)
    assert h["val_max_error"][0] > 0
    assert not metrics.higher_is_better("val_max_error")
    h = pn.Trainer(pn.Sequential([pn.Dense(4, 3)], dtype="float64", seed=0), epochs=1, verbose=0,
                   metrics=["wrong"]).fit(X, labels, validation_split=0.25)
    assert h["val_wrong"][0] == pytest.approx(1 - h["val_accuracy"][0])


def test_summary_repr_is_the_table():
    model = swish_model()
    text = model.summary(print_fn=None)
    assert repr(text) == text == str(text) and "\\n" not in repr(text)
