"""Pictures of a network at work on one input (matplotlib, the optional `plot` extra).

    plot_network   the essay's Figure 1: the input, each layer's neurons coloured by their
                   activation a = f(z), the strongest contributions w_ij·x_i as lines, and
                   the output neurons with their probabilities
    plot_neuron    the essay's Figure 2: one neuron's inputs x_i, weights w_i, products
                   w_i·x_i, the sum z = Σ w_i·x_i + b and its activation a = f(z), in numbers
    plot_saliency  the input with ∂L/∂x laid over it: which pixels would change the loss

They take any model whose first layer sees an image (Sequential.image_shape); the
numbers come from the model's own compiled forward pass (Sequential.activations)
and backward pass (Sequential.input_gradient).
"""
from __future__ import annotations

import numpy as np

from .layers import inference_steps
from .plots import _pyplot, _save


def _one_input(model, x) -> np.ndarray:
    x = np.asarray(x, dtype=model.dtype).reshape(1, -1)
    if x.shape[1] != model.n_in:
        raise ValueError(f"expected one input of {model.n_in} values, got {x.shape[1]}")
    return x


def _columns(model, x):
    """[(name, layer index, A (width,), W or None)]: the input, then one column per inference
    step (the output of its last layer, and the weights that lead into it)."""
    steps = inference_steps(model.layers)
    for i, step in steps:
        if step[0] == "opaque":
            raise ValueError(f"cannot draw layer {i} ({type(step[1]).__name__}): it has no inference form")
    acts = model.activations(x)
    cols = [("input", -1, x[0], None)]
    for i, step in steps:
        if step[0] == "dense":
            cols.append((f"{i}: {step[3]}" if step[3] != "identity" else f"{i}: linear", i, acts[i][0], step[1]))
        else:
            cols.append((f"{i}: {step[1] if step[0] == 'act' else step[0]}", i, acts[i][0], None))
    return cols


def plot_network(model, x, path, image_shape=None, max_neurons: int = 32, max_lines: int = 80):
    """Figure 1 for one input: the pattern of neurons firing, layer by layer.

    Parameters
    ----------
    model : Sequential
    x : array of n_in values
        One input (already scaled as the model's training data).
    path : str or os.PathLike
        Image file; the format follows the extension.
    image_shape : (int, int), optional
        Default: image_shape_of(model).
    max_neurons : int
        Wider layers show their max_neurons most active neurons (a note says so).
    max_lines : int
        Contributions w_ij·a_i drawn per pair of layers (the largest |w_ij·a_i|).

    Returns
    -------
    dict
        'shown' (the neuron indices drawn per layer) and 'probabilities' of the output.
    """
    plt = _pyplot()
    x = _one_input(model, x)
    h, w = model.image_shape(image_shape)
    cols = _columns(model, x)
    proba = model.predict_proba(x)[0] if model.output_kind() != "values" else None
    # one unit of x is one unit of y: the image is 0.8 wide, columns 0.7 apart, neurons in [0.05, 0.95]
    xmax = 0.8 + 0.7 * (len(cols) - 1) + 0.45
    fig, ax = plt.subplots(figsize=(5.5 * (xmax + 0.05), 5.5 * 1.16))
    half_w, half_h = 0.4 * w / max(h, w), 0.4 * h / max(h, w)
    ax.imshow(x[0].reshape(h, w), cmap="gray_r", extent=(0.4 - half_w, 0.4 + half_w, 0.5 - half_h, 0.5 + half_h))
    # where each pixel's centre is, to start the first layer's lines from
    pos = {k: (0.4 + half_w * (2 * (k % w + 0.5) / w - 1), 0.5 + half_h * (1 - 2 * (k // w + 0.5) / h))
           for k in range(model.n_in)}
    cmap = plt.get_cmap("viridis")
    shown = {}
    for c, (name, i, A, W) in enumerate(cols[1:], start=1):
        xc = 0.8 + 0.7 * c
        order = np.arange(A.size) if A.size <= max_neurons else np.sort(np.argsort(-A, kind="stable")[:max_neurons])
        ys = np.linspace(0.95, 0.05, order.size) if order.size > 1 else np.array([0.5])
        lo, hi = float(A.min()), float(A.max())
        new_pos = {int(j): (xc, float(y)) for j, y in zip(order, ys)}
        if W is not None:                                  # the strongest contributions a_i·w_ij
            prev = cols[c - 1][2]
            src = np.array(sorted(pos))
            contrib = prev[src, None] * W[src][:, order]
            top = np.argsort(-np.abs(contrib), axis=None, kind="stable")[:max_lines]
            big = float(np.abs(contrib).max()) or 1.0
            for flat in top:
                a, b = np.unravel_index(flat, contrib.shape)
                value = contrib[a, b]
                if value == 0:
                    continue
                (x0, y0), (x1, y1) = pos[int(src[a])], new_pos[int(order[b])]
                ax.plot([x0, x1], [y0, y1], color="tab:red" if value > 0 else "tab:blue",
                        lw=0.3 + 2.2 * abs(value) / big, alpha=0.25 + 0.6 * abs(value) / big, zorder=1)
        for j in order:
            level = (A[j] - lo) / (hi - lo) if hi > lo else 0.5
            xy = new_pos[int(j)]
            ax.add_patch(plt.Circle(xy, min(0.022, 0.35 / order.size), facecolor=cmap(level), edgecolor="black",
                                    lw=0.5, zorder=3))
            if c == len(cols) - 1:
                label = f"{j}" + (f"  p={proba[j]:.3f}" if proba is not None and proba.size == A.size else
                                  f"  {A[j]:.3f}")
                ax.text(xy[0] + 0.04, xy[1], label, va="center", fontsize=8,
                        weight="bold" if j == int(np.argmax(A)) else "normal")
        note = "" if order.size == A.size else f"\n{order.size} most active of {A.size}"
        ax.text(xc, 1.02, f"{name}{note}\na in [{lo:.2g}, {hi:.2g}]", ha="center", va="bottom", fontsize=7)
        shown[i] = order
        pos = new_pos
    ax.set_xlim(-0.05, xmax)
    ax.set_ylim(-0.02, 1.14)
    ax.set_aspect("equal")
    ax.axis("off")
    guess = int(np.argmax(proba)) if proba is not None else None
    ax.set_title("neurons coloured by activation (dark low, yellow high); lines: strongest w·a "
                 "(red +, blue −)" + (f"; the network reads a {guess}" if guess is not None else ""), fontsize=9)
    fig.tight_layout()
    try:
        _save(fig, path)
    finally:
        plt.close(fig)
    return {"shown": shown, "probabilities": proba}


def plot_neuron(model, x, layer: int, neuron: int, path, image_shape=None, top: int = 12):
    """Figure 2 for one neuron of a Dense layer on one input: its inputs x_i, weights w_i,
    the products w_i·x_i, z = Σ w_i·x_i + b and a = f(z), with the numbers.

    Parameters
    ----------
    model : Sequential
    x : array of n_in values
    layer : int
        The Dense layer's index in model.layers (as summary() numbers them).
    neuron : int
        Which of its outputs.
    path : str or os.PathLike
    image_shape : (int, int), optional
        Used when the layer reads the input image: x, w and w·x are drawn as images too.
    top : int
        How many of the largest |w_i·x_i| to list.

    Returns
    -------
    dict
        'z' and 'a' as computed from the numbers drawn (float64), 'activation'.
    """
    plt = _pyplot()
    x = _one_input(model, x)
    step = next((s for i, s in inference_steps(model.layers) if s[0] == "dense" and layer < len(model.layers)
                 and s[1] is getattr(model.layers[layer], "W", None)), None)
    if step is None:
        raise ValueError(f"layer {layer} is not a Dense layer of this model "
                         f"(Dense layers: {[i for i, s in inference_steps(model.layers) if s[0] == 'dense']})")
    _, W, b, act, alpha = step
    if not 0 <= neuron < W.shape[1]:
        raise ValueError(f"layer {layer} has neurons 0..{W.shape[1] - 1}, got {neuron}")
    inputs = x[0] if layer == 0 else model.activations(x)[layer - 1][0]
    w = W[:, neuron].astype(np.float64)
    xi = inputs.astype(np.float64)
    prod = w * xi
    z = float(prod.sum() + b[neuron])
    a = float(_activate(act, alpha, z))
    order = np.argsort(-np.abs(prod), kind="stable")[:top]
    rest = float(prod.sum() - prod[order].sum())
    images = None
    if layer == 0:
        try:
            images = model.image_shape(image_shape)
        except ValueError:
            pass                # inputs that are no image: the products alone
    fig = plt.figure(figsize=(10, 6.4 if images else 4.6))
    grid = fig.add_gridspec(2 if images else 1, 3, height_ratios=[1, 1.25] if images else [1])
    if images:
        for k, (title, img, cm) in enumerate((("inputs x_i", xi, "gray_r"), ("weights w_i", w, "bwr"),
                                              ("products w_i·x_i", prod, "bwr"))):
            axi = fig.add_subplot(grid[0, k])
            lim = float(np.abs(img).max()) or 1.0
            axi.imshow(img.reshape(images), cmap=cm, vmin=-lim if cm == "bwr" else None, vmax=lim)
            axi.set_title(title, fontsize=9)
            axi.axis("off")
    ax = fig.add_subplot(grid[-1, :2])
    ax.barh(np.arange(order.size)[::-1], prod[order], color=["tab:red" if p > 0 else "tab:blue" for p in prod[order]])
    ax.set_yticks(np.arange(order.size)[::-1])
    ax.set_yticklabels([f"i={i}: x={xi[i]:.3f} · w={w[i]:+.3f}" for i in order], fontsize=7)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("w_i·x_i (the largest in size)", fontsize=8)
    ax.set_title(f"neuron {neuron} of layer {layer} ({act})", fontsize=9)
    txt = fig.add_subplot(grid[-1, 2])
    txt.axis("off")
    lines = [f"{len(w)} inputs", "", "z = Σ w_i·x_i + b", f"  = {prod.sum():+.4f} (Σ) {b[neuron]:+.4f} (b)",
             f"  = {z:+.4f}", "", f"the {top} largest products: {prod[order].sum():+.4f}",
             f"the other {len(w) - order.size}: {rest:+.4f}", "", f"a = {act}(z) = {a:.4f}"]
    txt.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=9)
    fig.tight_layout()
    try:
        _save(fig, path)
    finally:
        plt.close(fig)
    return {"z": z, "a": a, "activation": act}


def _activate(act: str, alpha: float, z: float) -> float:
    """f(z) of one number in float64, the formulas of csrc's activations (softmax has no
    value of its own: a neuron's share needs its whole layer, so z is returned)."""
    from math import erf, exp, sqrt, tanh
    return {"identity": z, "relu": max(z, 0.0), "leaky_relu": z if z > 0 else alpha * z,
            "elu": z if z > 0 else alpha * (exp(z) - 1), "sigmoid": 1 / (1 + exp(-z)) if z >= 0 else exp(z) / (1 + exp(z)),
            "tanh": tanh(z), "gelu": 0.5 * z * (1 + erf(z / sqrt(2))), "softmax": z}[act]


def plot_saliency(model, x, target, path, image_shape=None, loss=None):
    """The input image with ∂L/∂x laid over it, for one input and its target class.

    Parameters
    ----------
    model : Sequential
    x : array of n_in values
    target : int
        The class whose loss is differentiated (e.g. the predicted one).
    path : str or os.PathLike
    image_shape : (int, int), optional
    loss : str or Loss, optional
        Default: the loss the model was trained on.

    Returns
    -------
    ndarray of shape (h, w)
        ∂L/∂x as drawn.
    """
    from .losses import get_loss
    plt = _pyplot()
    x = _one_input(model, x)
    h, w = model.image_shape(image_shape)
    own = get_loss(loss if loss is not None else (model.loss or "cross_entropy"))
    y = own.targets_from_labels(np.array([target]), model.n_out, model.dtype)
    grad = model.input_gradient(x, y, loss=own)[0].reshape(h, w)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    axes[0].imshow(x[0].reshape(h, w), cmap="gray_r")
    axes[0].set_title("input", fontsize=9)
    lim = float(np.abs(grad).max()) or 1.0
    axes[1].imshow(x[0].reshape(h, w), cmap="gray_r", alpha=0.45)
    shown = axes[1].imshow(grad, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.75)
    axes[1].set_title(f"∂L/∂x for class {target} ({own.name}): red raises the loss", fontsize=9)
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    try:
        _save(fig, path)
    finally:
        plt.close(fig)
    return grad
