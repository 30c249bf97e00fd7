"""In a real Jupyter kernel (nbclient + ipykernel): the Trainer's progress bar shows, and
model.summary() as a cell's last line shows its table once."""
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = """\
import numpy as np
import pyneuro as pn
X = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
y = (X[:, 0] > 0).astype(np.int64)
model = pn.Sequential.mlp(8, [16], 2, seed=0)
pn.Trainer(model, epochs=2, batch_size=16, verbose=1, seed=0).fit(X, y)
print(pn.__file__)"""


def _text(output) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    return output.get("data", {}).get("text/plain", "")


def test_notebook_shows_a_progress_bar_and_the_summary_once():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(TRAIN), nbformat.v4.new_code_cell("model.summary()")]
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ROOT + (os.pathsep + env_path if env_path else "")
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": ROOT}}).execute()
    finally:
        if env_path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = env_path
    train, summary = nb.cells[0].outputs, nb.cells[1].outputs
    printed = "".join(map(_text, train))
    assert os.path.join(ROOT, "pyneuro") in printed          # the kernel ran this tree's pyneuro
    widget = any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in train)
    text_bar = any(o["output_type"] == "stream" and o["name"] == "stderr" and "epoch 1" in o["text"]
                   and "batch" in o["text"] for o in train)
    assert widget or text_bar, train
    assert printed.count("epoch   2") == 1
    shown = "".join(map(_text, summary))
    assert shown.count("Total params") == 1, summary
    assert "\\n" not in shown
