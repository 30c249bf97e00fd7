# scalar_math.pxi — scalar functions of one float of either dtype, shared by the kernels.
#
#   f_exp, f_expm1, f_log, f_log1p, f_tanh, f_erf, f_abs: one name, the libm call of the
#       element's own precision underneath (expf for float32, exp for float64)
#   σ(z) = 1 / (1 + e⁻ᶻ) for z ≥ 0,  eᶻ / (1 + eᶻ) otherwise   (e^{−|z|} only: no overflow)
#
# Pure functions of their argument: no loops, no threads, the same bits on every call.
# uses: nothing (the lowest file).

from libc.math cimport (exp, expf, expm1, expm1f, log, logf, log1p, log1pf, tanh, tanhf,
                        erf, erff, fabs, fabsf)


cdef inline floating f_exp(floating x) noexcept nogil:
    return expf(x) if floating is float else exp(x)

cdef inline floating f_expm1(floating x) noexcept nogil:
    return expm1f(x) if floating is float else expm1(x)

cdef inline floating f_log(floating x) noexcept nogil:
    return logf(x) if floating is float else log(x)

cdef inline floating f_log1p(floating x) noexcept nogil:
    return log1pf(x) if floating is float else log1p(x)

cdef inline floating f_tanh(floating x) noexcept nogil:
    return tanhf(x) if floating is float else tanh(x)

cdef inline floating f_erf(floating x) noexcept nogil:
    return erff(x) if floating is float else erf(x)

cdef inline floating f_abs(floating x) noexcept nogil:
    return fabsf(x) if floating is float else fabs(x)


cdef inline floating sigmoid(floating z) noexcept nogil:
    cdef floating e
    if z >= 0:
        return 1 / (1 + f_exp(-z))
    e = f_exp(z)
    return e / (1 + e)
