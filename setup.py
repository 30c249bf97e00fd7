"""Build of pyneuro's compiled core: one extension, ``pyneuro._core``, from csrc/.

OpenMP is detected by compiling and linking a tiny program with ``-fopenmp``;
where that fails the core builds serial (``pyneuro.openmp_enabled()`` says so).
No ``-march=native``: SIMD kernels carry their own target attributes and are
chosen at run time (csrc/cpu_dispatch.h), so a wheel runs on any x86-64.

The Cython directives are set here and nowhere else (CYTHON_DIRECTIVES; no
``# cython:`` line in csrc/): kernels run without bounds checks because every
wrapper checks its arrays first (DESIGN.md, rule 1).

Environment knobs (for developers, not for users):
  PYNEURO_NO_OPENMP=1   build serial even where OpenMP works
  PYNEURO_SANITIZE=1    build with -fsanitize=address (see README, "AddressSanitizer")
  PYNEURO_DEBUG=1       build a bounds-checked debug core: boundscheck, wraparound and
                        initializedcheck on, -O1 -g. Slow; run the test suite on it now
                        and then. Switching between it and the release core needs a full
                        rebuild: ``python setup.py build_ext --inplace --force``.
  PYNEURO_KEEP_SYMBOLS=1
                        keep the debug information and symbol table in a release core
                        (-O3 -g, not stripped) for profilers and debuggers. Without it
                        (and without PYNEURO_DEBUG) release builds -- wheels included --
                        compile with -g0 and link with the symbol table stripped
                        (about 0.7 MB instead of 3.6 MB); Python still finds PyInit__core
                        in the dynamic symbol table.
"""
import os
import shutil
import sys
import tempfile

import numpy
from Cython.Distutils import build_ext
from setuptools import Extension, setup

DEBUG = bool(os.environ.get("PYNEURO_DEBUG"))
KEEP_SYMBOLS = DEBUG or bool(os.environ.get("PYNEURO_KEEP_SYMBOLS")) or bool(os.environ.get("PYNEURO_SANITIZE"))

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def openmp_flags(compiler):
    """Return the -fopenmp flags if this compiler builds and links an OpenMP program."""
    if os.environ.get("PYNEURO_NO_OPENMP"):
        return []
    flags = ["/openmp"] if compiler.compiler_type == "msvc" else ["-fopenmp"]
    tmp = tempfile.mkdtemp(prefix="pyneuro-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=flags)
        return flags
    except Exception:  # any compile or link failure means: no OpenMP here
        return []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def strip_flags(compiler):
    """Return (compile, link) flags that leave debug information and the symbol table out
    of a release core — and, on ELF, the unwind tables (C code that raises no C++
    exceptions needs none; 65 KB of the core) — nothing when PYNEURO_KEEP_SYMBOLS /
    PYNEURO_DEBUG ask to keep them (profilers walk stacks with those tables)."""
    if KEEP_SYMBOLS or compiler.compiler_type == "msvc":  # MSVC keeps debug info in a .pdb anyway
        return [], []
    if sys.platform == "darwin":  # Apple's ld: -S drops debug info, -x local symbols
        return ["-g0"], ["-Wl,-S,-x"]
    return ["-g0", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"], ["-Wl,--strip-all"]


class BuildExt(build_ext):
    """Cython's build_ext (it cythonizes per extension, honouring --force) plus OpenMP."""

    def build_extensions(self):
        omp = openmp_flags(self.compiler)
        self.announce(f"pyneuro: OpenMP {'enabled ' + ' '.join(omp) if omp else 'not found: serial build'}", level=2)
        print(f"pyneuro: OpenMP {'enabled' if omp else 'not available, building serial'}", file=sys.stderr)
        strip = strip_flags(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args += omp + strip[0]
            ext.extra_link_args += omp + strip[1]
        super().build_extensions()


compile_args = ["-O1", "-g"] if DEBUG else ["-O3"]
compile_args += ["-fno-math-errno", "-Wno-unused-function", "-Wno-unreachable-code"]
link_args = []
if os.environ.get("PYNEURO_SANITIZE"):
    compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
    link_args += ["-fsanitize=address"]

extensions = [
    Extension(
        "pyneuro._core",
        sources=["csrc/_core.pyx"],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        depends=[os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith((".pxi", ".h"))],
    )
]
for ext in extensions:
    ext.cython_directives = CYTHON_DIRECTIVES

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
