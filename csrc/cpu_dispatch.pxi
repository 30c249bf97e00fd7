# cpu_dispatch.pxi — which instruction set the SIMD kernels run: the GEMM's register
# tiles and operand packing, the optimizer updates and the piecewise-linear activations,
# chosen together, once for the process (cpu_dispatch.h).
#
#   gemm_kernel()          'avx512' (AVX-512 GEMM tiles, AVX2+FMA elsewhere), 'avx2' or 'generic'
#   set_gemm_kernel(name)  'auto' (the best this CPU supports), 'avx512', 'avx2' or 'generic'
#   PYNEURO_GEMM_KERNEL    the same choice from the environment, at import
#
# Each variant is deterministic on its own (thread count never changes a result); 'avx512'
# and 'avx2' give the same bits (the same FMA chain for every element), 'generic' may
# differ from them in the last bits, since AVX2+FMA rounds a·b + c once.
# uses: nothing (cpu_dispatch.h underneath).

cdef extern from "cpu_dispatch.h" nogil:
    int pn_cpu_has_avx2_fma()
    int pn_cpu_has_avx512()
    int pn_isa
    void pn_select_isa(int isa)

KERNELS = ("generic", "avx2", "avx512")     # pn_isa's values, in order


def gemm_kernel():
    """The SIMD kernels in use: 'avx512' (the GEMM's tiles on AVX-512, the rest AVX2+FMA),
    'avx2' (AVX2+FMA) or 'generic' (any CPU)."""
    return KERNELS[pn_isa]


def set_gemm_kernel(name):
    """Choose the SIMD kernels: 'auto' (best this CPU supports), 'avx512', 'avx2' or
    'generic'. A choice this CPU lacks raises ValueError."""
    has = {"generic": True, "avx2": pn_cpu_has_avx2_fma(), "avx512": pn_cpu_has_avx512()}
    if name == "auto":
        name = "avx512" if has["avx512"] else "avx2" if has["avx2"] else "generic"
    if name not in has:
        raise ValueError(f"set_gemm_kernel: expected 'auto', 'avx512', 'avx2' or 'generic', got {name!r}")
    if not has[name]:
        raise ValueError(f"set_gemm_kernel: {name!r} asked for, but this CPU lacks "
                         f"{'AVX-512F' if name == 'avx512' else 'AVX2+FMA'}")
    pn_select_isa(KERNELS.index(name))
    if KERNELS[pn_isa] != name:
        raise ValueError(f"set_gemm_kernel: {name!r} was not built into this copy of pyneuro")


def _select_kernel_from_environment():
    """PYNEURO_GEMM_KERNEL=generic|avx2|auto picks the kernels at import (default auto)."""
    import os
    name = os.environ.get("PYNEURO_GEMM_KERNEL", "auto")
    try:
        set_gemm_kernel(name)
    except ValueError as e:
        raise ValueError(f"PYNEURO_GEMM_KERNEL={name!r}: {e}") from None


_select_kernel_from_environment()
