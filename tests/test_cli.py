"""The pyneuro command's train --save/--plot/--checkpoint, predict, evaluate and show,
on small data (and MNIST at full size where ../shared/data/mnist is present)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyneuro as pn
from pyneuro.idx import write_idx

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"


def run(*args, timeout=120, code=None):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "pyneuro.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def one_line_error(proc, fragment):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0], lines[0]


def is_png(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    proc = run("train", "--epochs", "4", "--save", d / "m.st", "--plot", d / "curves.png",
               "--checkpoint", d / "ck.st", "--validation-split", "0.1")
    assert proc.returncode == 0, proc.stderr
    return d, proc.stdout


def test_train_saves_plots_and_checkpoints(trained):
    d, out = trained
    model = pn.load(d / "m.st")
    assert model.info["image_shape"] == [8, 8] and model.info["training"]["epochs"] == 4
    assert is_png(d / "curves.png")
    assert pn.Trainer.from_checkpoint(d / "ck.st").epoch == 4
    accuracy = float(re.search(r"test accuracy (\S+)", out).group(1))
    X, y = pn.datasets.load_digits()
    _, X_test, _, y_test = pn.datasets.train_test_split(X, y, test_size=0.2, seed=0)
    assert abs(accuracy - np.mean(model.predict_classes(X_test) == y_test)) < 1e-4


def test_predict_arrays_and_images(trained, tmp_path):
    from PIL import Image
    d, _ = trained
    model = pn.load(d / "m.st")
    X, _ = pn.datasets.load_digits()
    expected = model.predict_classes(X[:4])
    np.save(tmp_path / "rows.npy", X[:3])
    np.save(tmp_path / "counts.npy", np.rint(X[3] * 16).astype(np.uint8).reshape(8, 8))  # raw 0..16 pixels
    Image.fromarray(np.rint(X[0].reshape(8, 8) * 255).astype(np.uint8)).save(tmp_path / "ink.png")
    Image.fromarray(np.rint(255 - X[1].reshape(8, 8) * 255).astype(np.uint8)).save(tmp_path / "paper.png")
    proc = run("predict", d / "m.st", tmp_path / "rows.npy", tmp_path / "counts.npy", tmp_path / "ink.png",
               tmp_path / "paper.png", "--top", "2")
    assert proc.returncode == 0, proc.stderr
    got = [int(c) for c in re.findall(r": class (\d+)", proc.stdout)]
    assert got == [*expected[:3], expected[3], expected[0], expected[1]]
    assert all(len(re.findall(r"\d: [01]\.\d{3}", line)) == 2 for line in proc.stdout.splitlines())


@pytest.mark.parametrize("make, fragment", [
    (lambda p: __import__("PIL.Image").Image.fromarray(np.zeros((9, 8), np.uint8)).save(p / "x.png"),
     "the image is 8x9 pixels, the model takes 8x8 images"),
    (lambda p: (p / "x.png").write_bytes(b"not an image"), "cannot read the image"),
    (lambda p: np.save(p / "x.npy", np.zeros((2, 5))), "does not hold samples of 64 values"),
    (lambda p: (p / "x.npy").write_bytes(b"junk"), "cannot read the .npy file"),
])
def test_predict_refuses_input_that_cannot_match(trained, tmp_path, make, fragment):
    make(tmp_path)
    name = next(tmp_path.iterdir())
    one_line_error(run("predict", trained[0] / "m.st", name), fragment)


def test_predict_refuses_a_damaged_model(tmp_path):
    (tmp_path / "m.st").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    one_line_error(run("predict", tmp_path / "m.st", tmp_path / "m.st"), "not a pyneuro model file")


def test_evaluate_prints_loss_accuracy_and_confusion(trained):
    d, out = trained
    proc = run("evaluate", d / "m.st")
    assert proc.returncode == 0, proc.stderr
    acc = float(re.search(r"accuracy (\S+)", proc.stdout).group(1))
    assert acc == float(re.search(r"test accuracy (\S+)", out).group(1))
    rows = [list(map(int, line.split()[1:])) for line in proc.stdout.splitlines()[3:]]
    cm = np.array(rows)
    n = int(re.search(r"\((\d+) samples\)", proc.stdout).group(1))
    assert cm.shape == (10, 10) and cm.sum() == n == 359 and abs(np.trace(cm) / n - acc) < 1e-4


def test_evaluate_takes_a_split_given_on_the_command_line(trained):
    d, _ = trained
    model = pn.load(d / "m.st")
    proc = run("evaluate", d / "m.st", "--test-size", "0.5", "--split-seed", "3")
    assert proc.returncode == 0, proc.stderr
    X, y = pn.datasets.load_digits()
    _, X_test, _, y_test = pn.datasets.train_test_split(X, y, test_size=0.5, seed=3)
    assert f"({len(y_test)} samples)" in proc.stdout
    acc = float(re.search(r"accuracy (\S+)", proc.stdout).group(1))
    assert abs(acc - np.mean(model.predict_classes(X_test) == y_test)) < 1e-4


def test_show_draws_weights_and_confusion(trained):
    d, _ = trained
    proc = run("show", d / "m.st", "--out", d / "w.png", "--confusion", d / "cm.png", "--neurons", "16")
    assert proc.returncode == 0, proc.stderr
    assert is_png(d / "w.png") and is_png(d / "cm.png")


def test_pictures_without_matplotlib_say_what_to_install(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from pyneuro.cli import main; "
            f"sys.exit(main(['train', '--epochs', '1', '--quiet', '--plot', r'{tmp_path / 'c.png'}']))")
    one_line_error(run(code=code), "pip install 'pyneuro[plot]'")


def test_idx_dataset_from_any_folder(tmp_path, rng):
    for part, n in (("train", 300), ("t10k", 100)):
        labels = rng.integers(0, 3, n).astype(np.uint8)
        images = np.zeros((n, 5, 5), np.uint8)
        images[np.arange(n), labels, :] = 255           # class c: row c lit
        write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", labels)
    proc = run("train", "--dataset", "idx", "--data-dir", tmp_path, "--epochs", "3", "--quiet",
               "--save", tmp_path / "m.st")
    assert proc.returncode == 0, proc.stderr
    assert float(re.search(r"test accuracy (\S+)", proc.stdout).group(1)) == 1.0
    assert pn.load(tmp_path / "m.st").info["image_shape"] == [5, 5]
    one_line_error(run("train", "--dataset", "mnist", "--data-dir", tmp_path / "none"), "download_mnist")


@pytest.mark.skipif(not (MNIST / "t10k-labels-idx1-ubyte.gz").is_file(), reason=f"no MNIST at {MNIST}")
def test_mnist_main_job_reaches_98_percent(tmp_path):
    proc = run("train", "--dataset", "mnist", "--data-dir", MNIST, "--save", tmp_path / "m.st", timeout=600)
    assert proc.returncode == 0, proc.stderr
    accuracy = float(re.search(r"test accuracy (\S+)", proc.stdout).group(1))
    wall = float(re.search(r"wall time (\S+) s", proc.stdout).group(1))
    assert accuracy >= 0.98 and wall < 180, proc.stdout[-300:]
    assert "epoch  12" in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["train", "--epochs", "1", "--quiet", "--save", "/proc/no-such-dir/m.st"], "No such file or directory"),
    (["predict", "/no/such/model.st", "x.npy"], "cannot read the model file"),
    (["evaluate", "/no/such/model.st"], "cannot read the model file"),
    (["show", "/no/such/model.st", "--out", "w.png"], "cannot read the model file"),
    (["train", "--dataset", "idx", "--data-dir", "/no/such/dir"], "no train-images-idx3-ubyte"),
])
def test_file_errors_are_one_line(args, fragment):
    one_line_error(run(*args), fragment)


@pytest.mark.parametrize("args, fragment", [
    (["--optimizer", "sgd", "--lr", "1e10", "--schedule", "none"], "loss became"),
    (["--hidden", "4000000000"], "out of memory"),
    (["--hidden", "8", "--batch-size", "4000000000"], None),       # clipped to the data, trains
    (["--threads", "100000"], "set_num_threads: n must be <="),    # crashed inside OpenMP once
])
def test_training_failures_the_user_caused_are_one_line(args, fragment):
    proc = run("train", "--epochs", "1", "--quiet", *args)
    if fragment is None:
        assert proc.returncode == 0, proc.stderr
    else:
        one_line_error(proc, fragment)


@pytest.mark.parametrize("flag", ["--save", "--checkpoint", "--plot"])
def test_an_unwritable_destination_is_refused_before_training(flag, tmp_path):
    """/sys refuses new files even to root; a folder is not a file name. Nothing trains."""
    for dest, fragment in (("/sys/m.st", f"{flag} /sys/m.st: cannot write into /sys"),
                           (str(tmp_path), "is a folder")):
        proc = run("train", "--epochs", "1", flag, dest)
        one_line_error(proc, fragment)
        assert "epoch" not in proc.stdout and "Total params" not in proc.stdout, proc.stdout


def test_show_draws_the_network_a_neuron_and_saliency_of_a_model_trained_in_python(tmp_path):
    """A model saved from Python records no image shape: 64 inputs are read as 8x8."""
    X, y = pn.datasets.load_digits()
    model = pn.Sequential([pn.Dense(64, 20, "sigmoid"), pn.Dense(20, 10)], seed=0)
    pn.Trainer(model, epochs=5, verbose=0, seed=0).fit(X, y)
    model.save(tmp_path / "m.st")
    np.save(tmp_path / "x.npy", X[7])
    proc = run("show", tmp_path / "m.st", "--out", tmp_path / "w.png")
    assert proc.returncode == 0 and is_png(tmp_path / "w.png"), proc.stderr
    proc = run("show", tmp_path / "m.st", "--input", tmp_path / "x.npy", "--out", tmp_path / "net.png",
               "--saliency", tmp_path / "sal.png")
    assert proc.returncode == 0 and is_png(tmp_path / "net.png") and is_png(tmp_path / "sal.png"), proc.stderr
    proc = run("show", tmp_path / "m.st", "--input", tmp_path / "x.npy", "--neuron", "0:3", "--out", tmp_path / "n.png")
    assert proc.returncode == 0 and is_png(tmp_path / "n.png"), proc.stderr
    z = float(re.search(r"z = (\S+),", proc.stdout).group(1))
    Z, A = model.activations(X[7:8], pre_activation=True)[0]
    assert abs(z - Z[0, 3]) < 1e-3 and f"a = sigmoid(z) = {A[0, 3]:.4f}" in proc.stdout, proc.stdout
    proc = run("evaluate", tmp_path / "m.st")          # the digits, found from the input width
    assert proc.returncode == 0 and "cross_entropy loss" in proc.stdout, proc.stderr
    odd = pn.Sequential([pn.Dense(60, 3)], seed=0)
    odd.save(tmp_path / "odd.st")
    one_line_error(run("show", tmp_path / "odd.st", "--out", tmp_path / "o.png"), "--image-shape")
    assert run("show", tmp_path / "odd.st", "--out", tmp_path / "o.png", "--image-shape", "6", "10").returncode == 0
    one_line_error(run("evaluate", tmp_path / "odd.st"), "--dataset")
    one_line_error(run("show", tmp_path / "m.st", "--neuron", "0:3", "--out", tmp_path / "o.png"), "--input")


def test_the_essays_network_trains_from_the_command_line(tmp_path):
    """784-30-10 sigmoid with the quadratic cost and plain SGD, as the essay has it (here on
    the 8x8 digits, 64-30-10); evaluate reports the model's own loss."""
    proc = run("train", "--hidden", "30", "--activation", "sigmoid", "--loss", "mse", "--mse-reduction",
               "half_sum_outputs", "--optimizer", "sgd", "--momentum", "0", "--lr", "3", "--batch-size", "10",
               "--epochs", "15", "--schedule", "none", "--quiet", "--save", tmp_path / "essay.st")
    assert proc.returncode == 0, proc.stderr
    accuracy = float(re.search(r"test accuracy (\S+)", proc.stdout).group(1))
    assert accuracy > 0.9, proc.stdout
    model = pn.load(tmp_path / "essay.st")
    assert model.output == "probabilities" and model.final_activation == "sigmoid"
    proc = run("evaluate", tmp_path / "essay.st")
    assert proc.returncode == 0 and "mse loss" in proc.stdout, proc.stderr
    assert abs(float(re.search(r"accuracy (\S+)", proc.stdout).group(1)) - accuracy) < 1e-4
