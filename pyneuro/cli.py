"""The `pyneuro` command.

    pyneuro train            train the handwritten-digit classifier that ships with the package,
                             print progress, the test accuracy and the wall time
    pyneuro train --help     every flag

A user error (bad flag value, bad data) prints one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

DEFAULTS = {"hidden": [256, 128], "activation": "relu", "optimizer": "adam", "lr": 2e-3,
            "batch_size": 32, "epochs": 30, "schedule": "cosine"}


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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = _Parser(prog="pyneuro", description="pyneuro: neural networks with a compiled core.")
    parser.add_argument("--version", action="version", version=f"pyneuro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    train = sub.add_parser("train", help="train a classifier (default: the bundled 8x8 handwritten digits)",
                           description="Train a multilayer perceptron and report its test accuracy.",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--dataset", choices=["digits"], default="digits",
                       help="data set: digits = the 1,797 8x8 UCI digits bundled with pyneuro")
    train.add_argument("--hidden", type=_positive_int, nargs="+", default=DEFAULTS["hidden"], metavar="N",
                       help="widths of the hidden layers, e.g. --hidden 256 128")
    train.add_argument("--activation", default=DEFAULTS["activation"],
                       choices=["relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu"],
                       help="activation of the hidden layers")
    train.add_argument("--dropout", type=float, default=0.0, help="dropout probability after each hidden layer")
    train.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=["sgd", "adam", "adamw", "rmsprop"],
                       help="optimizer")
    train.add_argument("--lr", type=_positive_float, default=DEFAULTS["lr"], help="base learning rate")
    train.add_argument("--momentum", type=float, default=0.9, help="momentum (sgd only)")
    train.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (L2; decoupled for adamw)")
    train.add_argument("--schedule", default=DEFAULTS["schedule"], choices=["none", "cosine", "step", "exp"],
                       help="learning-rate schedule over the epochs")
    train.add_argument("--batch-size", type=_positive_int, default=DEFAULTS["batch_size"], help="mini-batch size")
    train.add_argument("--epochs", type=_nonneg_int, default=DEFAULTS["epochs"], help="passes over the training data")
    train.add_argument("--test-size", type=float, default=0.2, help="fraction of the data held out for the test")
    train.add_argument("--validation-split", type=float, default=0.0,
                       help="fraction of the training data held out for validation each epoch")
    train.add_argument("--seed", type=int, default=0, help="seed of the initial weights, dropout and shuffling")
    train.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="threads for the compiled kernels (default: OMP_NUM_THREADS or all cores)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="floating-point type")
    train.add_argument("--quiet", action="store_true", help="print only the final result")
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


def train(args) -> dict:
    import pyneuro as pn

    t_start = time.perf_counter()
    if args.threads is not None:
        pn.set_num_threads(args.threads)
    X, y = pn.datasets.load_digits(dtype=args.dtype)
    X_train, X_test, y_train, y_test = pn.datasets.train_test_split(X, y, test_size=args.test_size,
                                                                   seed=args.split_seed)
    n_classes = int(y.max()) + 1
    layers, n = [], X.shape[1]
    for width in args.hidden:
        layers.append(pn.Dense(n, width, activation=args.activation))
        if args.dropout:
            layers.append(pn.Dropout(args.dropout))
        n = width
    layers.append(pn.Dense(n, n_classes))
    model = pn.Sequential(layers, seed=args.seed, dtype=args.dtype)
    opt_args = {"lr": args.lr, "weight_decay": args.weight_decay, "schedule": _schedule(args.schedule, args.epochs)}
    if args.optimizer == "sgd":
        opt_args["momentum"] = args.momentum
    optimizer = pn.optimizers.get_optimizer(args.optimizer, **opt_args)
    trainer = pn.Trainer(model, loss="cross_entropy", optimizer=optimizer, batch_size=args.batch_size,
                         epochs=args.epochs, seed=args.seed, verbose=0 if args.quiet else 1)
    if not args.quiet:
        print(f"pyneuro {pn.__version__}: {args.dataset}, {X_train.shape[0]} training / {X_test.shape[0]} test "
              f"samples, {pn.get_num_threads()} thread(s), {args.dtype}")
        model.summary()
    t_fit = time.perf_counter()
    trainer.fit(X_train, y_train, validation_split=args.validation_split)
    fit_time = time.perf_counter() - t_fit
    result = trainer.evaluate(X_test, y_test)
    wall = time.perf_counter() - t_start
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  "
          f"training {fit_time:.2f} s  wall time {wall:.2f} s")
    return result


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            train(args)
    except (ValueError, TypeError) as e:
        print(f"pyneuro: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyneuro: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
