# cpu_dispatch.pxi — which instruction set the SIMD kernels run: the GEMM's register
# tiles and operand packing and the optimizer updates, chosen together, once for the
# process (cpu_dispatch.h).
#
#   gemm_kernel()          'avx2' (AVX2+FMA) or 'generic' (any CPU)
#   set_gemm_kernel(name)  'auto' (the best this CPU supports), 'avx2' or 'generic'
#   PYNEURO_GEMM_KERNEL    the same choice from the environment, at import
#
# Each variant is deterministic on its own (thread count never changes a result); the
# two may differ in the last bits, since AVX2+FMA rounds a·b + c once.
# uses: nothing (cpu_dispatch.h underneath).

cdef extern from "cpu_dispatch.h" nogil:
    int pn_cpu_has_avx2_fma()
    int pn_isa
    void pn_select_isa(int isa)


def gemm_kernel():
    """The SIMD kernels in use (GEMM micro-kernel and packing, optimizer updates): 'avx2'
    (AVX2+FMA) or 'generic' (any CPU)."""
    return "avx2" if pn_isa == 1 else "generic"


def set_gemm_kernel(name):
    """Choose the SIMD kernels (GEMM micro-kernel and packing, optimizer updates): 'auto'
    (best this CPU supports), 'avx2' or 'generic'. 'avx2' on a CPU without AVX2+FMA raises
    ValueError."""
    if name == "auto":
        pn_select_isa(1 if pn_cpu_has_avx2_fma() else 0)
    elif name == "avx2":
        if not pn_cpu_has_avx2_fma():
            raise ValueError("set_gemm_kernel: 'avx2' asked for, but this CPU lacks AVX2+FMA")
        pn_select_isa(1)
    elif name == "generic":
        pn_select_isa(0)
    else:
        raise ValueError(f"set_gemm_kernel: expected 'auto', 'avx2' or 'generic', got {name!r}")


def _select_kernel_from_environment():
    """PYNEURO_GEMM_KERNEL=generic|avx2|auto picks the kernels at import (default auto)."""
    import os
    name = os.environ.get("PYNEURO_GEMM_KERNEL", "auto")
    try:
        set_gemm_kernel(name)
    except ValueError as e:
        raise ValueError(f"PYNEURO_GEMM_KERNEL={name!r}: {e}") from None


_select_kernel_from_environment()
