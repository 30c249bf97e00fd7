"""Distribution: the sdist, the wheel built from it, and the wheel installed where no C
compiler is on PATH.

The slow tests share one ``python -m build`` (sdist, then the wheel from the unpacked sdist
in a fresh isolated venv: build's own two-step, so the wheel can only use what the sdist
holds) and one fresh venv without system site-packages, numpy and the rest coming from
PyPI or pip's cache. Together they take about three minutes on two cores, most of it the
compile; deselect them with ``-m "not slow"``.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import pyneuro as pn

ROOT = Path(__file__).resolve().parents[1]
HAVE_BUILD = shutil.which("pyproject-build") is not None or bool(
    subprocess.run([sys.executable, "-c", "import build"], capture_output=True).returncode == 0)
needs_build = pytest.mark.skipif(not HAVE_BUILD, reason="the 'build' package is missing (pip install -e '.[test]')")
ONE_MB = 1_000_000


def _run(cmd, timeout, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def elf_section_names(path):
    """Names of an ELF64 little-endian file's sections (read from its section header table)."""
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not an ELF64 LE file"
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    str_off, str_size = headers[e_shstrndx][4], headers[e_shstrndx][5]
    strtab = data[str_off:str_off + str_size]
    return {strtab[h[0]:strtab.index(b"\0", h[0])].decode() for h in headers}


def _source_files():
    """Every file a build reads: the tracked sources under csrc/ and pyneuro/ and the build's
    own files (git's list where there is one, else the folders as they are)."""
    try:
        files = subprocess.run(["git", "ls-files", "csrc", "pyneuro"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(ROOT)) for d in ("csrc", "pyneuro") for p in (ROOT / d).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".so", ".c", ".html")]
    return set(files) | {"setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md", "CHANGELOG.md"}


BUILD_OUTPUTS = re.compile(r"(\.so|\.pyd|\.dylib|\.o|\.obj|\.pyc)$|(^|/)__pycache__/|^csrc/.*\.(c|html)$|^(build|dist)/")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """sdist and wheel from ``python -m build`` (the wheel built from the sdist)."""
    if not HAVE_BUILD:
        pytest.skip("the 'build' package is missing")
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYNEURO_")}  # a release build
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=900, env=env)
    sdist, = out.glob("pyneuro-*.tar.gz")
    wheel, = out.glob("pyneuro-*.whl")
    return sdist, wheel


@pytest.mark.slow
@needs_build
def test_sdist_holds_what_a_build_needs_and_no_build_output(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        top = f"pyneuro-{pn.__version__}/"
        names = {n[len(top):] for n in tar.getnames() if n.startswith(top)}
    missing = sorted(_source_files() - names)
    assert not missing, f"the sdist lacks {missing}"
    assert "pyneuro/data/NOTICE.md" in names and "pyneuro/data/digits.csv.gz" in names
    leftovers = sorted(n for n in names if BUILD_OUTPUTS.search(n))
    assert not leftovers, f"build outputs in the sdist: {leftovers}"


@pytest.mark.slow
@needs_build
def test_wheel_is_small_stripped_and_without_build_leftovers(dists):
    _, wheel = dists
    size = wheel.stat().st_size
    assert size < ONE_MB, f"{wheel.name}: {size} bytes"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        leftovers = [n for n in names if n.endswith((".pyx", ".pxi", ".pxd", ".c", ".h", ".o", ".html"))
                     and not n.startswith("pyneuro/web/")]
        assert not leftovers, leftovers
        assert not [n for n in names if n.startswith(("tests/", "csrc/", "bench/", "docs/"))]
        for needed in ("pyneuro/data/digits.csv.gz", "pyneuro/data/NOTICE.md", "pyneuro/py.typed",
                       "pyneuro/_core.pyi", "pyneuro/web/index.html"):
            assert needed in names, needed
        assert any(n.endswith("licenses/LICENSE") for n in names)
        core, = [n for n in names if re.fullmatch(r"pyneuro/_core\..*(so|pyd)", n)]
        installed = sum(i.file_size for i in zf.infolist())
        if core.endswith(".so"):
            so = Path(zf.extract(core, wheel.parent / "unpacked"))
            sections = elf_section_names(so)
            assert not {s for s in sections if s.startswith(".debug")}, sorted(sections)
            assert ".symtab" not in sections, "the core keeps its symbol table"
            assert ".dynsym" in sections  # PyInit__core is still found
    print(f"\nwheel {wheel.name}: {size / 1e6:.3f} MB; installed {installed / 1e6:.3f} MB")


def _auditwheel():
    exe = shutil.which("auditwheel") or str(Path(sys.executable).with_name("auditwheel"))
    return exe if Path(exe).exists() and sys.platform.startswith("linux") else None


@pytest.fixture(scope="module")
def release_wheel(dists, tmp_path_factory):
    """The wheel as it would be released: on Linux, auditwheel's repair (libgomp bundled, a
    manylinux tag); elsewhere the wheel as built."""
    _, wheel = dists
    exe = _auditwheel()
    if exe is None:
        return wheel, None
    show = _run([exe, "show", str(wheel)], timeout=120).stdout
    out = tmp_path_factory.mktemp("repaired")
    _run([exe, "repair", "--wheel-dir", str(out), str(wheel)], timeout=300)
    repaired, = out.glob("*.whl")
    return repaired, show


@pytest.mark.slow
@needs_build
def test_auditwheel_names_libgomp_and_repair_gives_a_manylinux_wheel(release_wheel):
    wheel, show = release_wheel
    if show is None:
        pytest.skip("auditwheel runs on Linux only (pip install auditwheel)")
    flat = " ".join(show.split())
    tag = re.search(r'consistent with the following platform tag: "([^"]+)"', flat)
    assert tag, show
    if pn.openmp_enabled():
        assert "libgomp.so.1" in flat, show
    assert re.search(r"-manylinux_2_\d+_x86_64\.whl$|-manylinux_2_\d+_aarch64\.whl$", wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        libs = [n for n in zf.namelist() if n.startswith("pyneuro.libs/")]
    if pn.openmp_enabled():
        assert any("libgomp" in n for n in libs), libs
    assert wheel.stat().st_size < ONE_MB, wheel.stat().st_size
    print(f"\n{' '.join(show.split())}\nrepaired: {wheel.name}, {wheel.stat().st_size / 1e6:.3f} MB, bundles {libs}")


SMOKE = r"""
import shutil, subprocess, sys
import numpy as np
import pyneuro as pn
from pyneuro import io as pio
assert shutil.which("cc") is None and shutil.which("gcc") is None, "a C compiler is on PATH"
assert "site-packages" in pn.__file__, pn.__file__
X_train, X_test, y_train, y_test = pn.datasets.train_test_split(*pn.datasets.load_digits(), test_size=0.2, seed=0)
model = pn.Sequential([pn.Dense(64, 64, activation="relu"), pn.Dense(64, 10)], seed=0)
trainer = pn.Trainer(model, loss="cross_entropy", optimizer=pn.Adam(lr=1e-2), batch_size=32, epochs=1, seed=0, verbose=0)
trainer.fit(X_train, y_train)
acc = trainer.evaluate(X_test, y_test)["accuracy"]
assert acc > 0.8, acc
model.save("m.safetensors")
again = pn.load("m.safetensors")
assert np.array_equal(again.predict(X_test), model.predict(X_test))
assert pio.read_file("m.safetensors")[1]["pyneuro_version"] == pn.__version__
out = subprocess.run(["pyneuro", "--version"],
                     capture_output=True, text=True, check=True).stdout.strip()
assert out == f"pyneuro {pn.__version__}", out
print("SMOKE OK", pn.__version__, acc, pn.openmp_enabled())
"""


@pytest.mark.slow
@needs_build
def test_wheel_installs_and_runs_in_a_fresh_venv_without_a_c_compiler(release_wheel, tmp_path):
    wheel, _ = release_wheel
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    # PATH holds the venv alone: no cc, gcc, c++ or clang to fall back on; CC names nothing,
    # and pip may only take wheels, so nothing can be compiled on the way.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=str(bindir), CC="/nonexistent/cc", CXX="/nonexistent/c++")
    for compiler in ("cc", "gcc", "c++", "clang"):
        assert shutil.which(compiler, path=env["PATH"]) is None
    _run([str(python), "-m", "pip", "install", "--only-binary", ":all:", str(wheel)], timeout=300, env=env)
    proc = _run([str(python), "-c", SMOKE], timeout=300, env=env, cwd=tmp_path)
    assert "SMOKE OK" in proc.stdout
    site = Path(_run([str(python), "-c", "import pyneuro, os; print(os.path.dirname(pyneuro.__file__))"],
                     timeout=60, env=env, cwd=tmp_path).stdout.strip())
    installed = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    libs = site.parent / "pyneuro.libs"
    installed += sum(p.stat().st_size for p in libs.rglob("*") if p.is_file()) if libs.exists() else 0
    print(f"\n{proc.stdout.strip()}; installed size {installed / 1e6:.3f} MB")


def test_version_has_one_source():
    """pyproject.toml reads the version from pyneuro/_version.py; the CLI and model files use it."""
    text = (ROOT / "pyproject.toml").read_text()
    assert 'version = { attr = "pyneuro._version.__version__" }' in text
    assert not re.search(r'^version\s*=\s*"', text, re.M), "a second, literal version in pyproject.toml"
    import contextlib
    import io
    from pyneuro.cli import main
    buf = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(buf):
        main(["--version"])
    assert exit_info.value.code == 0
    assert buf.getvalue().strip() == f"pyneuro {pn.__version__}"
    assert re.search(rf"^## \[{re.escape(pn.__version__)}\]", (ROOT / "CHANGELOG.md").read_text(), re.M), \
        "CHANGELOG.md has no section for the package's version"
