"""Pictures (matplotlib, the optional `plot` extra): learning curves, first-layer
weights as images, confusion matrices. Each function writes one image file
(format from its extension) and returns its path."""
from __future__ import annotations

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("pictures need matplotlib: pip install 'pyneuro[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    from .io import atomic_write
    import io
    import os
    buf = io.BytesIO()       # drawn in memory, then written atomically (mode as open() gives)
    fig.savefig(buf, format=os.path.splitext(os.fspath(path))[1][1:].lower() or "png", dpi=110)
    atomic_write(path, buf.getvalue())
    return path


def plot_history(history: dict, path):
    """Loss and accuracy against epoch, training and (when present) validation.

    Parameters
    ----------
    history : dict
        A History (lists per key: 'loss', 'accuracy', 'val_loss', 'val_accuracy').
    path : str or os.PathLike
        Image file; the format follows the extension.
    """
    plt = _pyplot()
    panels = [k for k in ("loss", "accuracy") if k in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, key in zip(axes[0], panels):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], "o-", label="training")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_weights(W: np.ndarray, image_shape, path, n: int = 64, what: str = "hidden neurons"):
    """First-layer weights drawn as images: column k of W (what hidden neuron k, or
    convolution filter k, responds to) as an image_shape picture, red positive / blue
    negative, each on its own scale.

    Parameters
    ----------
    W : ndarray of shape (h·w, n_hidden)
    image_shape : (h, w)
    path : str or os.PathLike
    n : int
        How many neurons (filters) to draw.
    what : str
        What the columns are, for the title ('hidden neurons', 'filters').
    """
    plt = _pyplot()
    h, w = image_shape
    if W.shape[0] != h * w:
        raise ValueError(f"plot_weights: {W.shape[0]} inputs do not make {h}x{w} images")
    n = min(n, W.shape[1])
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            img = W[:, k].reshape(h, w)
            lim = float(np.abs(img).max()) or 1.0
            ax.imshow(img, cmap="bwr", vmin=-lim, vmax=lim)
            ax.set_title(str(k), fontsize=6)
    fig.suptitle(f"first-layer weights of {n} {what} (red +, blue −)", fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_confusion(cm: np.ndarray, path, title: str = "confusion matrix"):
    """A confusion matrix with its counts written in.

    Parameters
    ----------
    cm : ndarray of shape (k, k)
        cm[i, j] = samples of class i predicted as j.
    path : str or os.PathLike
    title : str
    """
    plt = _pyplot()
    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(0.55 * k + 2, 0.55 * k + 1.5))
    ax.imshow(np.log1p(cm), cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
