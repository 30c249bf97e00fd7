"""Sphinx configuration of pyneuro's documentation site.

Build (warnings are errors):  python -m sphinx -W -b html docs docs/_build/html

Before reading any page the build (docs/_ext/pyneuro_docs.py)
  1. writes the API reference, one page per public module, from ``pyneuro.__all__`` and the
     public submodules (so names added later appear without editing the docs), and
  2. runs every page's ``>>>`` examples as doctests, in docs/_generated/figures/; the
     tutorial's examples draw its pictures there with pyneuro itself. A failing example
     stops the build.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
if os.environ.get("PYNEURO_DOCS_SOURCE"):  # document a source tree instead of the installed package
    sys.path.insert(0, os.environ["PYNEURO_DOCS_SOURCE"])

import pyneuro  # noqa: E402

project = "pyneuro"
author = "the pyneuro authors"
copyright = "2026, the pyneuro authors"
version = release = pyneuro.__version__

extensions = [
    "sphinx.ext.autodoc",      # the API reference from the docstrings
    "sphinx.ext.autosummary",  # the one-line tables at the top of each API page
    "sphinx.ext.napoleon",     # reads the NumPy-style sections (Parameters, Returns, Raises)
    "sphinx.ext.mathjax",      # :math: and .. math:: in the pages
    "sphinx.ext.viewcode",     # a link from each documented name to its source
    "myst_parser",             # ARCHITECTURE.md and CHANGELOG.md, included as they are
    "pyneuro_docs",            # API pages from __all__, the pages' doctests and figures
]

# MathJax from the site itself where sphinx-mathjax-offline is installed (the docs extra
# installs it: pages then read formulas with no network); otherwise from MathJax's CDN.
try:
    import importlib
    importlib.import_module("sphinx-mathjax-offline")
    extensions.append("sphinx-mathjax-offline")
except ImportError:
    pass

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autosummary_generate = False

# Doctests: every page's >>> examples (docs/_ext/pyneuro_docs.py)
pyneuro_doctest_flags = ["ELLIPSIS", "NORMALIZE_WHITESPACE"]

exclude_patterns = ["_build", "_generated/figures", "_generated/*.rst", "**/.ipynb_checkpoints"]
templates_path = []
html_theme = "alabaster"
html_static_path = []
html_title = f"pyneuro {release}"
html_theme_options = {"description": "a neural-network library built from the math up",
                      "fixed_sidebar": True, "page_width": "1160px", "sidebar_width": "230px"}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
