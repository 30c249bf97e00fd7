"""The documentation site: built by Sphinx with warnings as errors, every page's ``>>>``
examples run as doctests during that build (docs/_ext/pyneuro_docs.py), the API reference
covering every public name, the tutorial's pictures drawn by pyneuro, and the README's links.

The build is the one command the docs give: ``python -m sphinx -W -b html docs OUT``
(about a minute on two cores: most of it the tutorial's training and pictures).
"""
import importlib
import inspect
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import pyneuro as pn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
pyneuro_docs = pytest.importorskip("pyneuro_docs", reason="sphinx is missing (pip install -e '.[test]')")

FIGURES = ["cost.png", "weights.png", "network.png", "neuron.png", "saliency.png", "confusion.png"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("myst_parser", reason="myst-parser is missing (pip install -e '.[docs]')")
    pytest.importorskip("matplotlib", reason="matplotlib is missing (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-d",
                           str(out / "doctrees"), str(DOCS), str(out / "html")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"sphinx failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return out / "html", proc.stdout + proc.stderr


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors_and_runs_every_example(site):
    html, log = site
    ran = dict(re.findall(r"pyneuro_docs: doctest (\S+): (\d+) examples passed", log))
    assert int(ran.get("tutorial.rst", 0)) >= 50, log[-3000:]
    pages_with_examples = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.rst")
                           if not {"_build", "_generated", "api"} & set(p.relative_to(DOCS).parts)
                           and ">>> " in p.read_text()}
    assert pages_with_examples <= set(ran), pages_with_examples - set(ran)
    for page in ("index", "tutorial", "guide/index", "guide/models", "guide/training", "guide/saving",
                 "guide/cli", "guide/sklearn", "guide/onnx", "guide/threads", "guide/mpi", "guide/embedding",
                 "api/index", "api/pyneuro", "performance", "architecture", "install", "changelog"):
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.slow
def test_tutorial_shows_the_pictures_pyneuro_drew(site):
    html, _ = site
    page = (html / "tutorial.html").read_text()
    for name in FIGURES:
        assert f"_images/{name}" in page, name
        image = html / "_images" / name
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 5000, name
    assert "MathJax" in page or "mathjax" in page


@pytest.mark.slow
def test_api_reference_documents_every_public_name(site):
    html, _ = site
    top = (html / "api" / "pyneuro.html").read_text()
    missing = [n for n in pn.__all__ if not inspect.ismodule(getattr(pn, n)) and f'id="pyneuro.{n}"' not in top]
    assert not missing, f"not in the API reference: {missing}"
    for modname in pyneuro_docs.public_modules(pn):
        module = importlib.import_module(modname)
        page = (html / "api" / f"{modname}.html").read_text()
        exported = {id(getattr(pn, n)) for n in pn.__all__}
        for name in pyneuro_docs.public_names(module, exported):
            assert f'id="{modname}.{name}"' in page, f"{modname}.{name}"
    cli = (html / "guide" / "cli.html").read_text()
    for command in ("train", "predict", "evaluate", "show", "export", "serve"):
        assert f"pyneuro {command}" in cli, command


def test_api_pages_follow_all_so_new_names_appear_without_editing_the_docs():
    """A name added to a module's __all__ (a conv layer, say) gets its entry; names the top
    level already exports, and submodules, are left out of a submodule's page."""
    def conv2d(x):
        """A new layer function."""
    mod = types.ModuleType("pyneuro.fake_layers", "A module added later.")
    mod.conv2d, mod.Dense, mod.datasets = conv2d, pn.Dense, pn.datasets
    mod.__all__ = ["conv2d", "Dense", "datasets"]
    exported = {id(getattr(pn, n)) for n in pn.__all__}
    assert pyneuro_docs.public_names(mod, exported) == ["conv2d"]
    page = pyneuro_docs._page("pyneuro.fake_layers", mod, ["conv2d"], "lead")
    assert ".. autofunction:: pyneuro.fake_layers.conv2d" in page
    # without __all__: the classes and functions the module defines itself
    del mod.__all__
    conv2d.__module__ = "pyneuro.fake_layers"
    assert pyneuro_docs.public_names(mod, exported) == ["conv2d"]


def test_plain_text_docstrings_become_valid_rest():
    """Formulas laid out in indented columns become literal blocks; |x| and word_ are escaped
    outside literals (docutils would read a substitution and a link)."""
    doc = ["Mean absolute error |y − ŷ| over rows, as:", "    L = 1/n Σ |y_i − ŷ_i|", "then val_ is kept.",
           "", "Parameters", "----------", "x : int", "    The input:", "        x = a·b", "    more."]
    out = pyneuro_docs.literal_blocks(doc)
    assert out[:5] == ["Mean absolute error |y − ŷ| over rows, as::", "", "    L = 1/n Σ |y_i − ŷ_i|", "",
                       "then val_ is kept."]
    assert out[-5:] == ["    The input::", "", "        x = a·b", "", "    more."]
    assert pyneuro_docs.escape_prose("|y| and val_ but ``a|b_``") == r"\|y\| and val\_ but ``a|b_``"


def test_readme_keeps_its_two_commands_and_links_the_site():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "pip install . && pyneuro train" in first_block
    assert 'pip install -e ".[test]" && python -m pytest' in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && python -m pytest' in ci
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert {"docs/tutorial.rst", "docs/guide/index.rst", "docs/performance.rst", "docs/architecture.rst",
            "docs/install.rst"} <= set(links), links
    for link in links:
        assert (ROOT / link).exists(), link
