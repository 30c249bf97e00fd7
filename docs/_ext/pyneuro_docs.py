"""Sphinx extension of pyneuro's docs: API pages generated from the package, and the pages'
``>>>`` examples run as doctests (their pictures written for the pages to show).

Both happen at ``builder-inited``, before Sphinx reads a page:

* ``write_api_pages`` writes docs/api/<module>.rst for ``pyneuro`` (every name in
  ``pyneuro.__all__``) and for each public submodule (its ``__all__``, else the classes and
  functions it defines, less those ``pyneuro`` already exports) and an index with a toctree,
  docs/api/index.rst (docs/api/ is all generated, and ignored by git). A name added to
  ``__all__`` (or a function added to a public module) is documented at the next build with
  no edit here. ``write_cli_page`` does the same for every command's ``--help``.
* Docstrings are written as plain text for help(): ``literal_blocks`` (before napoleon) and
  ``escape_prose`` (after it) make them valid reST without editing them.
* ``run_doctests`` runs every docs page that has ``>>>`` examples with the standard library's
  doctest (one fresh namespace per page, the working folder docs/_generated/figures, where
  the examples save their pictures). Any failure raises, so the build stops.
"""
from __future__ import annotations

import doctest
import importlib
import inspect
import io
import os
import pkgutil
import re
import time
from contextlib import redirect_stdout
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)


def public_modules(package) -> list[str]:
    """Names of the package's public submodules (no leading underscore), sorted."""
    return sorted(f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_"))


def public_names(module, exported: set[int]) -> list[str]:
    """A module's public names: its __all__, else the classes and functions defined in it;
    objects in ``exported`` (documented elsewhere) left out. Submodules are never listed."""
    if hasattr(module, "__all__"):
        names = list(module.__all__)
    else:
        names = [n for n, o in vars(module).items()
                 if not n.startswith("_") and (inspect.isclass(o) or inspect.isfunction(o))
                 and getattr(o, "__module__", None) == module.__name__]
    return [n for n in names if not inspect.ismodule(getattr(module, n)) and id(getattr(module, n)) not in exported]


def _page(modname: str, module, names: list[str], lead: str) -> str:
    title = f"``{modname}``"
    out = [title, "=" * len(title), "", lead, ""]
    out += [f".. module:: {modname}", ""]
    doc = inspect.getdoc(module) or ""
    if doc:   # module docstrings are laid-out plain text (formulas in columns): shown as they are
        out += ["::", ""] + [("   " + line).rstrip() for line in doc.splitlines()] + [""]
    if not names:
        out += ["This module has no public names of its own (see :doc:`pyneuro`).", ""]
        return "\n".join(out)
    out += [".. currentmodule:: " + modname, "", ".. autosummary::", ""]
    out += [f"   {n}" for n in names] + [""]
    for n in names:
        obj = getattr(module, n)
        kind = "autoclass" if inspect.isclass(obj) else "autofunction"
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            kind = "autoexception"
        out += [f".. {kind}:: {modname}.{n}"] + (["   :members:", "   :show-inheritance:"] if kind != "autofunction" else []) + [""]
    return "\n".join(out)


def write_api_pages(srcdir: Path) -> list[str]:
    import pyneuro
    outdir = srcdir / "api"
    outdir.mkdir(parents=True, exist_ok=True)
    top = [n for n in pyneuro.__all__ if not inspect.ismodule(getattr(pyneuro, n))]
    exported = {id(getattr(pyneuro, n)) for n in top}
    pages = {"pyneuro": _page("pyneuro", pyneuro, sorted(top, key=str.lower),
                              "Every name in ``pyneuro.__all__``; ``import pyneuro as pn`` and use ``pn.<name>``.")}
    for modname in public_modules(pyneuro):
        module = importlib.import_module(modname)
        names = public_names(module, exported)
        pages[modname] = _page(modname, module, names,
                               f"The public names of ``{modname}`` that ``pyneuro`` does not export itself.")
    index = ["API reference", "=============", "",
             "Generated at each build from ``pyneuro.__all__`` and the public submodules.", "",
             ".. toctree::", "   :maxdepth: 1", ""] + [f"   {m}" for m in pages]
    written = {"index.rst": "\n".join(index) + "\n"} | {f"{m}.rst": text + "\n" for m, text in pages.items()}
    for name, text in written.items():
        path = outdir / name
        if not path.exists() or path.read_text() != text:   # unchanged pages keep their mtime
            path.write_text(text)
    for stale in outdir.glob("*.rst"):
        if stale.name not in written:
            stale.unlink()
    return list(pages)


_LITERAL = re.compile(r"(``.+?``|:math:`[^`]*`|`[^`]*`_?)")


def escape_prose(line: str) -> str:
    """Escape what reST would read as markup in plain-text prose: ``|x|`` (a substitution),
    ``word_`` (a link target). Literal spans and roles are left alone."""
    parts = _LITERAL.split(line)
    for i in range(0, len(parts), 2):   # the even parts are outside literals
        parts[i] = re.sub(r"(?<!\\)\|", r"\\|", parts[i])
        parts[i] = re.sub(r"(?<=\w)_(?=\W|$)", r"\\_", parts[i])
    return "".join(parts)


_LIST_SECTIONS = {"Parameters", "Other Parameters", "Returns", "Yields", "Receives", "Raises", "Warns",
                  "Attributes", "Methods"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def literal_blocks(lines: list[str]) -> list[str]:
    """Before napoleon: a run of lines indented deeper than the prose line just above it
    (a formula laid out in columns, as the docstrings write them for help()) becomes a reST
    literal block: a blank line and ``::`` before it, a blank line after it. Inside the
    NumPy list sections the item lines ("name : type") and their descriptions keep their
    shape; ``term`` lines keep their definition lists; Examples are left alone."""
    out: list[str] = []
    section, base = None, None          # base: the indent of the prose the run hangs from
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and nxt.strip() and set(nxt.strip()) == {"-"} and _indent(line) == 0:
            section, base = line.strip(), None
            out.append(line)
            continue
        if base is not None:                       # inside a run made literal
            if not line.strip() or _indent(line) > base:
                out.append(line)
                continue
            if out[-1].strip():
                out.append("")
            base = None
        prev = next((p for p in reversed(out) if p.strip()), None)
        starts_run = (line.strip() and prev is not None and _indent(line) > _indent(prev)
                      and section != "Examples" and not prev.lstrip().startswith((">>>", "...", "``", ":"))
                      and not set(prev.strip()) <= {"-", "="}
                      and not (section in _LIST_SECTIONS and _indent(prev) == 0))
        if (line.strip() and prev is not None and _indent(line) > _indent(prev) and prev.lstrip().startswith("``")
                and len(out) > 1 and out[-1] is prev and out[-2].strip() and out[-2].rstrip().endswith(",")):
            out[-2:] = [out[-2].rstrip() + " " + out[-1].strip()]   # a term written on two lines: one
        if starts_run:
            while not out[-1].strip():
                out.pop()
            if out[-1].rstrip().endswith(":") and not out[-1].rstrip().endswith("::"):
                out[-1] = out[-1].rstrip() + ":"
                out.append("")
            elif not out[-1].rstrip().endswith("::"):
                out += ["", " " * _indent(prev) + "::", ""]
            else:
                out.append("")
            base = _indent(prev)
        elif (line.strip() and out and out[-1].strip() and prev is not None and _indent(line) < _indent(prev)
              and section not in _LIST_SECTIONS and section != "Examples"
              and not prev.lstrip().startswith((">>>", "..."))):
            out.append("")                          # a definition list or block quote ends
        out.append(line)
    return out


def on_before_napoleon(app, what, name, obj, options, lines):
    lines[:] = literal_blocks(list(lines))


def on_process_docstring(app, what, name, obj, options, lines):
    """After napoleon (which turned the NumPy sections into fields): make pyneuro's plain-text
    prose safe for reST (the docstrings are written to be read with help(); the site shows
    them the same)."""
    literal = None                       # the indent of the paragraph that opened a literal block
    for i, line in enumerate(lines):
        if literal is not None:
            if not line.strip() or _indent(line) > literal:
                continue
            literal = None
        lines[i] = escape_prose(line)
        if line.rstrip().endswith("::"):
            literal = _indent(line)


def on_skip_member(app, what, name, obj, skip, options):
    """Leave out members that other libraries attach (scikit-learn's set_*_request)."""
    module = getattr(obj, "__module__", None) or ""
    if callable(obj) and module and not module.startswith("pyneuro") and not inspect.isbuiltin(obj):
        return True
    return None


def doctest_pages(srcdir: Path) -> list[Path]:
    skip = {"_build", "_generated", "api"}
    return sorted(p for p in srcdir.rglob("*.rst")
                  if not skip & set(p.relative_to(srcdir).parts) and ">>> " in p.read_text())


def run_doctests(srcdir: Path, flags: list[str]) -> dict:
    figures = srcdir / "_generated" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    optionflags = 0
    for f in flags:
        optionflags |= getattr(doctest, f)
    cwd = os.getcwd()
    report, results = io.StringIO(), {}
    try:
        os.chdir(figures)
        for page in doctest_pages(srcdir):
            t0 = time.perf_counter()
            with redirect_stdout(report):
                res = doctest.testfile(str(page), module_relative=False, globs={}, optionflags=optionflags,
                                       raise_on_error=False, report=True, encoding="utf-8")
            results[str(page.relative_to(srcdir))] = (res.attempted, res.failed, time.perf_counter() - t0)
    finally:
        os.chdir(cwd)
    failed = {k: v for k, v in results.items() if v[1]}
    if failed:
        raise ExtensionError(f"doctest failures in {sorted(failed)}:\n{report.getvalue()[-6000:]}")
    return results


def write_cli_page(srcdir: Path) -> list[str]:
    """docs/_generated/cli_help.rst: ``pyneuro --help`` and every command's ``--help``, from
    the parser itself (a command added later appears with no edit here)."""
    import argparse
    from pyneuro.cli import build_parser
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "92"          # argparse wraps at $COLUMNS
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        out = ["``pyneuro --help``", "-" * 18, "", ".. code-block:: text", ""]
        out += ["   " + line for line in parser.format_help().splitlines()] + [""]
        for name, cmd in sub.choices.items():
            title = f"``pyneuro {name}``"
            out += [title, "-" * len(title), "", ".. code-block:: text", ""]
            out += [("   " + line).rstrip() for line in cmd.format_help().splitlines()] + [""]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    path = srcdir / "_generated" / "cli_help.rst"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(out) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return list(sub.choices)


def on_builder_inited(app):
    srcdir = Path(app.srcdir)
    commands = write_cli_page(srcdir)
    logger.info(f"pyneuro_docs: --help of {len(commands)} commands")
    modules = write_api_pages(srcdir)
    logger.info(f"pyneuro_docs: API pages for {len(modules)} modules")
    if app.builder.name in ("html", "dirhtml", "singlehtml", "latex", "doctest") and app.config.pyneuro_run_doctests:
        for page, (attempted, _, seconds) in run_doctests(srcdir, app.config.pyneuro_doctest_flags).items():
            logger.info(f"pyneuro_docs: doctest {page}: {attempted} examples passed ({seconds:.1f} s)")


def setup(app):
    app.add_config_value("pyneuro_doctest_flags", ["ELLIPSIS", "NORMALIZE_WHITESPACE"], "env")
    app.add_config_value("pyneuro_run_doctests", True, "env")
    app.connect("builder-inited", on_builder_inited)
    app.connect("autodoc-process-docstring", on_before_napoleon, priority=400)
    app.connect("autodoc-process-docstring", on_process_docstring, priority=600)  # after napoleon (500)
    app.connect("autodoc-skip-member", on_skip_member)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
