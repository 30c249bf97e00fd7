"""The `pyneuro` command.

    pyneuro train                     train the handwritten-digit classifier that ships with the
                                      package; print progress, the test accuracy and the wall time
    pyneuro train --dataset mnist --data-dir DIR --save model.safetensors --plot curves.png
    pyneuro predict MODEL INPUT...    class and top probabilities of .npy arrays or images
    pyneuro evaluate MODEL            loss, accuracy and confusion matrix on the model's test data
    pyneuro show MODEL --out W.png    first-layer weights as images (and --confusion CM.png)
    pyneuro export MODEL --onnx OUT   the model as ONNX
    pyneuro COMMAND --help            every flag

A user error (bad flag value, bad data, a file that cannot be read) prints one
line and exits with status 2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

from .architectures import MODELS, layers_from_spec
from .losses import MSE

# training defaults per data set (flags left unset take these)
DEFAULTS = {
    "digits": {"hidden": [256, 128], "activation": "relu", "optimizer": "adam", "lr": 2e-3,
               "batch_size": 32, "epochs": 30, "schedule": "cosine", "validation_split": 0.0},
    "mnist": {"hidden": [256, 128], "activation": "relu", "optimizer": "adam", "lr": 1e-3,
              "batch_size": 64, "epochs": 12, "schedule": "cosine", "validation_split": 0.1},
}
DEFAULTS["idx"] = DEFAULTS["mnist"]
# convolutional networks (--model cnn, --layers): fewer epochs (8 reach 99.33 % on MNIST's test set)
CNN_DEFAULTS = {"mnist": {"epochs": 8}, "idx": {"epochs": 8}}
DATASETS = {"digits": "the 1,797 8x8 UCI digits bundled with pyneuro (a stratified test split)",
            "mnist": "MNIST's four IDX files in --data-dir (default $PYNEURO_DATA, then ~/.cache/pyneuro)",
            "idx": "any four IDX files in MNIST's layout and names in --data-dir"}


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _neuron(text: str) -> tuple[int, int]:
    layer, _, j = text.partition(":")
    try:
        return _nonneg_int(layer), _nonneg_int(j)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected LAYER:NEURON as two integers >= 0, e.g. 0:5, got {text!r}") from None


def _image_flags(p) -> None:
    p.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                   help="images: invert grey levels (auto: when the border is light)")
    p.add_argument("--image-shape", type=_positive_int, nargs=2, default=None, metavar=("H", "W"),
                   help="the input image's rows and columns (default: the model's info, else a square)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (no usage dump), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


SPLIT_DEFAULTS = {"test_size": 0.2, "split_seed": 0}


def _data_flags(p):
    p.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="data set: " + "; ".join(f"{k} = {v}" for k, v in DATASETS.items()))
    p.add_argument("--data-dir", default=None, help="folder of the IDX files (mnist, idx)")
    p.add_argument("--test-size", type=float, default=None,
                   help="digits: fraction held out for the test (default 0.2; evaluate/show: the model's)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="digits: seed of the train/test split (default 0; evaluate/show: the model's)")


def _split(args, info: dict) -> tuple:
    """(test_size, split_seed): as given on the command line, else as recorded in the
    model's info, else the defaults."""
    return tuple(getattr(args, k) if getattr(args, k) is not None else info.get(k, v)
                 for k, v in SPLIT_DEFAULTS.items())


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    parser = _Parser(prog="pyneuro", description="pyneuro: neural networks with a compiled core.")
    parser.add_argument("--version", action="version", version=f"pyneuro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    train = sub.add_parser("train", help="train a classifier (default: the bundled 8x8 handwritten digits)",
                           description="Train a network (a multilayer perceptron, or a convolutional one with "
                                       "--model cnn or --layers) and report its test accuracy. "
                                       "Flags left unset take the data set's defaults (see DEFAULTS in "
                                       "pyneuro/cli.py).", formatter_class=fmt)
    _data_flags(train)
    train.add_argument("--model", choices=sorted(MODELS), default="mlp",
                       help="mlp: dense layers (--hidden); cnn: a LeNet-like convolutional network ("
                            f"{MODELS['cnn']})")
    train.add_argument("--layers", metavar="SPEC", default=None,
                       help="the hidden layers, comma-separated, before the output layer: convCxK (C channels, "
                            "KxK kernel; convCxKs2 stride 2, convCxKsame 'same' padding, convCxKpP P zeros "
                            "around), poolK / avgpoolK (max / average KxK), gap (global average), flatten, bn "
                            "(BatchNorm), ln (LayerNorm), denseN, dropoutP; e.g. "
                            "'conv32x5,pool2,conv64x5,pool2,dense128'")
    train.add_argument("--hidden", type=_positive_int, nargs="+", default=None, metavar="N",
                       help="widths of the hidden layers, e.g. --hidden 256 128")
    train.add_argument("--activation", default=None,
                       choices=["relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu"],
                       help="activation of the hidden layers")
    train.add_argument("--dropout", type=float, default=0.0, help="dropout probability after each hidden layer")
    train.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "mse"],
                       help="cross_entropy: softmax on logits; mse: squared error against one-hot "
                            "targets (the essay's quadratic cost; see --mse-reduction)")
    train.add_argument("--mse-reduction", default="mean", choices=sorted(MSE.REDUCTIONS),
                       help="mse: mean over all outputs; sum_outputs: Σ_j (a_j − y_j)² per sample; "
                            "half_sum_outputs: the textbook's C = 1/2n Σ ||y − a||², for which eta = 3 works")
    train.add_argument("--output-activation", default=None, choices=["none", "sigmoid", "softmax"],
                       help="activation of the output layer (default: none for cross_entropy, sigmoid for mse)")
    train.add_argument("--optimizer", default=None, choices=["sgd", "adam", "adamw", "rmsprop"], help="optimizer")
    train.add_argument("--lr", type=_positive_float, default=None, help="base learning rate")
    train.add_argument("--momentum", type=float, default=0.9, help="momentum (sgd only)")
    train.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (L2; decoupled for adamw)")
    train.add_argument("--schedule", default=None, choices=["none", "cosine", "step", "exp"],
                       help="learning-rate schedule over the epochs")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="mini-batch size")
    train.add_argument("--epochs", type=_nonneg_int, default=None, help="passes over the training data")
    train.add_argument("--validation-split", type=float, default=None,
                       help="fraction of the training data held out for validation each epoch")
    train.add_argument("--seed", type=int, default=0, help="seed of the initial weights, dropout and shuffling")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="threads for the compiled kernels (default: OMP_NUM_THREADS or all cores)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="floating-point type")
    train.add_argument("--save", metavar="MODEL", default=None, help="write the trained model to this file")
    train.add_argument("--checkpoint", metavar="FILE", default=None,
                       help="write a resumable checkpoint here after every epoch")
    train.add_argument("--plot", metavar="PNG", default=None,
                       help="draw loss and accuracy against epoch into this picture (needs matplotlib)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI ranks: mpiexec -n 4 pyneuro train --distributed "
                            "(needs mpi4py and an MPI library: pip install 'pyneuro[mpi]')")
    train.add_argument("--quiet", action="store_true", help="print only the final result")

    predict = sub.add_parser("predict", help="classify .npy arrays or image files with a saved model",
                             description="Print the class and the top probabilities of each input. "
                                         ".npy: one sample per row (or one sample), already scaled like "
                                         "the training data; integer arrays are scaled as the training "
                                         "pixels were. Images (PNG, JPEG; needs Pillow) are read as grey "
                                         "levels, must have the size of the training images, and are "
                                         "inverted when their background is light.", formatter_class=fmt)
    predict.add_argument("model", help="a file written by pyneuro train --save (or Sequential.save)")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help=".npy files or images")
    predict.add_argument("--top", type=_positive_int, default=3, help="how many classes to list")
    _image_flags(predict)

    def model_command(name, help, description):
        p = sub.add_parser(name, help=help, description=description, formatter_class=fmt)
        p.add_argument("model", help="a file written by pyneuro train --save (or Sequential.save)")
        return p

    evaluate = model_command("evaluate", "loss, accuracy and confusion matrix of a saved model",
                             "Evaluate a saved model on a data set's test part (default: the data set "
                             "it was trained on).")
    _data_flags(evaluate)
    show = model_command("show", "draw a model at work: weights, activations, one neuron, saliency",
                         "Without --input: what each first-layer neuron responds to (its weights as an "
                         "image). With --input: the network's activations on that input, layer by layer "
                         "(the strongest contributions as lines, the output's probabilities), or with "
                         "--neuron one neuron's weighted sum and activation in numbers; --saliency adds "
                         "dL/dx over the input. --confusion draws the confusion matrix on a data set's "
                         "test part (needs matplotlib).")
    show.add_argument("--out", required=True, metavar="PNG",
                      help="the picture: first-layer weights, or with --input the activations (or the neuron)")
    show.add_argument("--input", metavar="FILE", default=None,
                      help="one input: an image (PNG/JPEG, needs Pillow) or a .npy sample")
    show.add_argument("--neuron", type=_neuron, default=None, metavar="L:J",
                      help="with --input: draw neuron J of layer L (numbered as in the model's summary)")
    show.add_argument("--saliency", metavar="PNG", default=None,
                      help="with --input: draw dL/dx (which pixels move the loss) over the input")
    show.add_argument("--label", type=_nonneg_int, default=None,
                      help="--saliency: the class whose loss is differentiated (default: the predicted one)")
    _image_flags(show)
    show.add_argument("--neurons", type=_positive_int, default=64, help="how many neurons to draw")
    show.add_argument("--confusion", metavar="PNG", default=None, help="also draw the confusion matrix here")
    _data_flags(show)
    export = model_command("export", "write a saved model in another format (ONNX)",
                           "Convert a saved model; onnxruntime then reproduces pyneuro's predictions "
                           "(needs onnx: pip install 'pyneuro[onnx]').")
    export.add_argument("--onnx", metavar="OUT", required=True, help="the ONNX file to write")
    serve = model_command("serve", "a web page to draw a digit and watch the network think",
                          "Serve a local web page: draw a digit with a mouse, pen or finger and see, as you "
                          "draw, the predicted class, the probabilities and every hidden layer's "
                          "activations. The same server answers POST /predict {\"pixels\": [...]} and "
                          "GET /model (JSON). Ctrl-C stops it.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (127.0.0.1: this machine only; 0.0.0.0: every network)")
    serve.add_argument("--port", type=_nonneg_int, default=8000, help="port (0: any free one)")
    serve.add_argument("--image-shape", type=_positive_int, nargs=2, default=None, metavar=("H", "W"),
                       help="the input image's height and width, for a model whose info lacks them "
                            "(default: the info's, else a square of the input width)")
    return parser


def _schedule(name: str, epochs: int):
    from .optimizers import CosineDecay, ExponentialDecay, StepDecay
    if name == "cosine":
        return CosineDecay(max(epochs, 1))
    if name == "step":
        return StepDecay(max(epochs // 3, 1), 0.1)
    if name == "exp":
        return ExponentialDecay(0.95)
    return None


def load_data(dataset: str, data_dir, dtype: str, test_size: float, split_seed: int):
    """(X_train, y_train, X_test, y_test, info): info describes the inputs for predict."""
    import pyneuro as pn
    if dataset == "digits":
        X, y = pn.datasets.load_digits(dtype=dtype)
        X_train, X_test, y_train, y_test = pn.datasets.train_test_split(X, y, test_size=test_size, seed=split_seed)
        info = {"dataset": "digits", "image_shape": [8, 8], "pixel_max": 16, "test_size": test_size,
                "split_seed": split_seed}
    else:
        load = pn.datasets.load_mnist if dataset == "mnist" else pn.datasets.load_idx
        X_train, y_train, X_test, y_test = load(data_dir, dtype=dtype)
        side = int(round(np.sqrt(X_train.shape[1])))
        shape = [side, side] if side * side == X_train.shape[1] else None
        info = {"dataset": dataset, "data_dir": os.path.abspath(data_dir or pn.datasets.default_data_dir()),
                "image_shape": shape, "pixel_max": 255}
    info["background"] = "dark"   # ink is the high value in both, as in MNIST
    info["classes"] = int(max(y_train.max(), y_test.max())) + 1
    return X_train, y_train, X_test, y_test, info


def _check_destination(flag: str, path: str) -> None:
    """Refuse, before any training, an output path that cannot be written: a folder, or a
    place this user cannot create files in (tried with a real file, so root is judged right)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a folder; give a file name")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pyneuro-probe-", dir=folder)
    except OSError as e:
        raise type(e)(e.errno, f"{flag} {path}: cannot write into {folder} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _model(args, n_in: int, info: dict):
    """The network the flags describe: an MLP (--hidden), or --model cnn / --layers SPEC
    reading the data set's images (1, H, W)."""
    import pyneuro as pn
    output = None if args.output_activation == "none" else args.output_activation
    if args.layers is None and args.model == "mlp":
        return pn.Sequential.mlp(n_in, args.hidden, info["classes"], args.activation, args.dropout,
                                 seed=args.seed, dtype=args.dtype, output_activation=output)
    if args.hidden_given or args.dropout:
        raise ValueError("--hidden and --dropout describe an MLP; with --model cnn or --layers, put dense and "
                         "dropout layers in --layers")
    if info.get("image_shape") is None:
        raise ValueError(f"--{'layers' if args.layers else 'model cnn'}: the data set's samples are not square "
                         "images, so a convolutional network cannot read them")
    shape = (1, *info["image_shape"])
    layers = layers_from_spec(args.layers or MODELS[args.model], shape, info["classes"], args.activation)
    if output is not None:
        layers.append(pn.Activation(output))
    return pn.Sequential(layers, seed=args.seed, dtype=args.dtype, input_shape=shape)


def train(args) -> dict:
    import pyneuro as pn

    t_start = time.perf_counter()
    for flag in ("save", "checkpoint", "plot"):
        if getattr(args, flag):
            _check_destination(f"--{flag}", getattr(args, flag))
    if args.threads is not None:
        pn.set_num_threads(args.threads)
    dataset = args.dataset or "digits"
    args.hidden_given = args.hidden is not None
    conv = args.model == "cnn" or args.layers is not None
    for key, value in {**DEFAULTS[dataset], **(CNN_DEFAULTS.get(dataset, {}) if conv else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.output_activation is None:
        args.output_activation = "sigmoid" if args.loss == "mse" else "none"
    X_train, y_train, X_test, y_test, info = load_data(dataset, args.data_dir, args.dtype, *_split(args, {}))
    model = _model(args, X_train.shape[1], info)
    loss = MSE(args.mse_reduction) if args.loss == "mse" else pn.CrossEntropy()
    opt_args = {"lr": args.lr, "weight_decay": args.weight_decay, "schedule": _schedule(args.schedule, args.epochs)}
    if args.optimizer == "sgd":
        opt_args["momentum"] = args.momentum
    optimizer = pn.optimizers.get_optimizer(args.optimizer, **opt_args)
    trainer = pn.Trainer(model, loss=loss, optimizer=optimizer, batch_size=args.batch_size,
                         epochs=args.epochs, seed=args.seed, verbose=0 if args.quiet else 1,
                         distributed=args.distributed)
    if not trainer.is_root:        # other ranks train silently and write nothing
        args.quiet, args.save, args.plot, args.checkpoint = True, None, None, None
    model.info = {**info, "training": {k: getattr(args, k) for k in (
        "model", "layers", "hidden", "activation", "dropout", "loss", "mse_reduction", "output_activation", "optimizer", "lr",
        "momentum", "weight_decay", "schedule", "batch_size", "epochs", "validation_split", "seed", "dtype")}}
    if not args.quiet:
        ranks = f", {trainer.dist.size} MPI ranks" if args.distributed else ""
        print(f"pyneuro {pn.__version__}: {dataset}, {X_train.shape[0]} training / {X_test.shape[0]} test "
              f"samples, {pn.get_num_threads()} thread(s){ranks}, {args.dtype}")
        model.summary()
    callbacks: list[pn.Callback] = [pn.ModelCheckpoint(args.checkpoint, save_best_only=False)] if args.checkpoint else []
    t_fit = time.perf_counter()
    y_train, y_test = (loss.targets_from_labels(y, model.n_out, model.dtype) for y in (y_train, y_test))
    history = trainer.fit(X_train, y_train, validation_split=args.validation_split, callbacks=callbacks)
    fit_time = time.perf_counter() - t_fit
    result = trainer.evaluate(X_test, y_test)
    if args.save:
        model.save(args.save)
    if args.plot:
        from .plots import plot_history
        plot_history(history, args.plot)
    wall = time.perf_counter() - t_start
    if trainer.is_root:
        print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  "
              f"training {fit_time:.2f} s  wall time {wall:.2f} s")
    for what, path in (("model", args.save), ("learning curves", args.plot)):
        if path and not args.quiet:
            print(f"{what} written to {path}")
    return result


def _model_data(model, args):
    """The test part of the data set named by the flags, else of the one the model records
    in its info (name and folder), else of the bundled digits for a 64-input model."""
    info = model.info
    dataset = args.dataset or info.get("dataset") or ("digits" if model.n_in == 64 else None)
    if dataset not in DATASETS:
        raise ValueError(f"{args.model}: the model records no data set it was trained on; "
                         "name one with --dataset (and --data-dir)")
    own = dataset == info.get("dataset")
    data_dir = args.data_dir or (info.get("data_dir") if own else None)
    _, _, X, y, _ = load_data(dataset, data_dir, model.dtype.name, *_split(args, info if own else {}))
    return dataset, X, y


def evaluate(args) -> dict:
    import pyneuro as pn
    from .losses import get_loss
    from .metrics import classes_from_outputs, confusion_matrix
    model = pn.load(args.model)
    dataset, X, y = _model_data(model, args)
    Z = model.predict(X)
    loss = get_loss(model.loss or "cross_entropy")     # the model's own (files before 0.2: cross-entropy)
    value = loss(Z, loss.prepare_targets(loss.targets_from_labels(y, model.n_out, model.dtype),
                                         X.shape[0], model.n_out, model.dtype, "y"))
    cm = confusion_matrix(y, classes_from_outputs(Z, threshold=model.decision_threshold()), model.n_out)
    acc = float(np.trace(cm)) / len(y)
    print(f"{args.model} on the {dataset} test set ({len(y)} samples): {loss.name} loss {value:.4f}  "
          f"accuracy {acc:.4f}")
    print("confusion matrix (rows: true class, columns: predicted class)")
    width = max(len(str(cm.max())), len(str(model.n_out - 1))) + 1
    print(" " * 6 + "".join(f"{j:>{width}}" for j in range(model.n_out)))
    for i in range(model.n_out):
        print(f"{i:>5} " + "".join(f"{c:>{width}}" for c in cm[i]))
    return {"loss": value, "accuracy": acc, "confusion": cm}


def _input_info(model, model_path, image_shape=None) -> dict:
    """What predict and show read from the model's info, checked: image_shape ([rows, cols],
    rows·cols = the input width: the --image-shape flag, else the info's, else a square input
    width's), pixel_max (a positive number, default 1), background ('dark', 'light' or absent)."""
    info = model.info
    try:
        shape: list | None = list(model.image_shape(image_shape))
    except ValueError as e:
        if image_shape is not None or info.get("image_shape") is not None:
            raise ValueError(f"{model_path}: {e}") from None
        shape = None        # not an image model: .npy inputs only (images say so when given)
    pixel_max = info.get("pixel_max", 1)
    try:
        ok = type(pixel_max) in (int, float) and 0 < float(pixel_max) < float("inf")
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f"{model_path}: damaged info: pixel_max should be a positive number, got {pixel_max!r:.60}")
    background = info.get("background")
    if background not in (None, "dark", "light"):
        raise ValueError(f"{model_path}: damaged info: background should be 'dark' or 'light', got {background!r:.60}")
    return {"image_shape": shape, "pixel_max": float(pixel_max), "background": background}


def _read_npy(path: str) -> np.ndarray:
    """The array of a .npy file, its header checked against the file's size before the data
    is read (a header promising more than the file holds costs no memory)."""
    from numpy.lib import format as npy
    from .io import open_regular
    with open_regular(path, ".npy file") as (f, size):
        try:
            version = npy.read_magic(f)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read_header(f)
            need = f.tell() + math.prod(shape) * dtype.itemsize
            if dtype.hasobject or need != size:
                raise ValueError(f"its header promises {dtype} {shape} ({need} bytes in all), the file holds "
                                 f"{size} bytes" if not dtype.hasobject else "it holds Python objects")
            f.seek(0)
            return np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path}: cannot read the .npy file ({e})") from None


def _read_image(path: str, shape) -> np.ndarray:
    """Grey levels in [0, 1] of an image of `shape` (rows, cols); its size is read from the
    header and checked before any pixel is decoded."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(f"{path}: reading images needs Pillow: pip install 'pyneuro[image]'") from None
    from .io import open_regular
    with open_regular(path, "PNG or JPEG image") as (f, _):
        try:
            with Image.open(f) as im:          # lazy: only the header is read here
                width, height = im.size
                if [height, width] == list(shape):
                    return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
        except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as e:
            raise ValueError(f"{path}: cannot read the image ({e})") from None
    raise ValueError(f"{path}: the image is {width}x{height} pixels, the model takes "
                     f"{shape[1]}x{shape[0]} images (resize it first)")


def _read_inputs(path: str, model, invert: str, info: dict | None = None):
    """(labels, X): the samples in `path` as model inputs (`info`: _input_info's)."""
    info = _input_info(model, "the model") if info is None else info
    n_in = model.n_in
    if path.lower().endswith(".npy"):
        a = _read_npy(path)
        if a.dtype.kind in "iu":
            a = a / info["pixel_max"]
        elif a.dtype.kind != "f":
            raise ValueError(f"{path}: expected numbers, got dtype {a.dtype}")
        a = np.asarray(a, dtype=model.dtype)
        if a.size == n_in:
            a = a.reshape(1, n_in)
        elif a.ndim >= 2 and int(np.prod(a.shape[1:])) == n_in:
            a = a.reshape(a.shape[0], n_in)
        else:
            raise ValueError(f"{path}: an array of shape {a.shape} does not hold samples of {n_in} values "
                             f"(the model's input width)")
        labels = [path] if a.shape[0] == 1 else [f"{path}[{i}]" for i in range(a.shape[0])]
        return labels, np.ascontiguousarray(a)
    shape = info["image_shape"]
    if not shape:
        raise ValueError(f"{path}: the model's {n_in} inputs are no square image and its info records no "
                         "image shape: give it with --image-shape H W")
    grey = _read_image(path, shape)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]).mean()
    if invert == "yes" or (invert == "auto" and border > 0.5 and info["background"] == "dark"):
        grey = 1.0 - grey
    return [path], grey.reshape(1, n_in).astype(model.dtype)


def predict(args) -> list:
    import pyneuro as pn
    model = pn.load(args.model)
    info = _input_info(model, args.model, args.image_shape)
    results = []
    for path in args.inputs:
        labels, X = _read_inputs(path, model, args.invert, info)
        P = model.predict_proba(X)
        for label, p in zip(labels, P):
            top = np.argsort(-p, kind="stable")[:args.top]
            print(f"{label}: class {top[0]}  (" + ", ".join(f"{c}: {p[c]:.3f}" for c in top) + ")")
            results.append(int(top[0]))
    return results


def show(args) -> None:
    import pyneuro as pn
    from .metrics import confusion_matrix
    from .network_plots import plot_network, plot_neuron, plot_saliency
    from .plots import plot_confusion, plot_weights
    model = pn.load(args.model)
    info = _input_info(model, args.model, args.image_shape)
    shape = info["image_shape"]
    if args.input:
        _, X = _read_inputs(args.input, model, args.invert, info)
        if X.shape[0] != 1:
            raise ValueError(f"{args.input}: holds {X.shape[0]} samples; --input takes one")
        if args.neuron:
            layer, j = args.neuron
            numbers = plot_neuron(model, X[0], layer, j, args.out, shape)
            print(f"neuron {j} of layer {layer} on {args.input}: z = {numbers['z']:.4f}, "
                  f"a = {numbers['activation']}(z) = {numbers['a']:.4f}; drawn to {args.out}")
        else:
            plot_network(model, X[0], args.out, shape)
            print(f"the network's activations on {args.input} drawn to {args.out}")
        if args.saliency:
            target = int(model.predict_classes(X)[0]) if args.label is None else args.label
            plot_saliency(model, X[0], target, args.saliency, shape)
            print(f"∂L/∂x for class {target} drawn to {args.saliency}")
    else:
        if args.neuron or args.saliency:
            raise ValueError("--neuron and --saliency draw one input: give it with --input")
        first = next((layer for layer in model.layers if isinstance(layer, (pn.Dense, pn.Conv2D))), None)
        if isinstance(first, pn.Conv2D):     # its filters W[o] (C·kh × kw: the channels stacked)
            C_out, C, kh, kw = first.W.shape
            plot_weights(first.W.reshape(C_out, -1).T, (C * kh, kw), args.out, n=args.neurons, what="filters")
            print(f"first convolution's {min(args.neurons, C_out)} filters ({kh}x{kw}) written to {args.out}")
        else:
            if first is None or not shape:
                raise ValueError(f"{args.model}: no first Dense or Conv2D layer on image inputs to draw "
                                 "(--image-shape H W gives the image shape)")
            plot_weights(first.W, shape, args.out, n=args.neurons)
            print(f"first-layer weights of {min(args.neurons, first.n_out)} neurons written to {args.out}")
    if args.confusion:
        dataset, X, y = _model_data(model, args)
        cm = confusion_matrix(y, model.predict_classes(X), model.n_out)
        plot_confusion(cm, args.confusion, f"{dataset} test set: accuracy {np.trace(cm) / len(y):.4f}")
        print(f"confusion matrix on the {dataset} test set written to {args.confusion}")


def export(args) -> None:
    import pyneuro as pn
    pn.load(args.model).to_onnx(args.onnx)
    print(f"{args.model} written as ONNX to {args.onnx}")


def serve(args) -> None:
    import pyneuro as pn
    from .serve import serve as serve_page
    model = pn.load(args.model)
    try:
        serve_page(model, args.host, args.port, args.image_shape)
    except KeyboardInterrupt:
        print("pyneuro: stopped serving", file=sys.stderr)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        {"train": train, "predict": predict, "evaluate": evaluate, "show": show,
         "export": export, "serve": serve}[args.command](args)
    except (ValueError, TypeError, ImportError, OSError, ArithmeticError) as e:   # the user's to fix
        print(f"pyneuro: error: {e}", file=sys.stderr)             # (ArithmeticError: divergence)
        return 2
    except MemoryError as e:
        print(f"pyneuro: error: out of memory ({e or 'an allocation failed'}); try a smaller model, "
              "batch or data set", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyneuro: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
