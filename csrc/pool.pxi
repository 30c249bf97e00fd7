# pool.pxi — 2-D max and average pooling (PoolPlan) and global average pooling.
#
# Layout: a batch is (B, C·H·W), C-contiguous, each row one sample in C, H, W order (NCHW
# flattened); a (sample, channel) plane is H·W contiguous values, P = H·W.
#
#   PoolPlan(C, H, W, kind, kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw))
#     Ho = ⌊(H + 2ph − kh)/sh⌋ + 1,  Wo = ⌊(W + 2pw − kw)/sw⌋ + 1   (PyTorch, ceil_mode=False)
#     window (i, j) = rows i·sh − ph … i·sh − ph + kh − 1, columns j·sw − pw … + kw − 1
#     max  Y[s,c,i,j] = max over the window's real positions (padding acts as −∞);
#          argmax recorded in training: the first maximum in row-major window order
#          (a NaN wins and propagates, the first one);
#          dX[s,c,h,w] = Σ over windows whose argmax is (h, w) of dY[s,c,i,j]
#     avg  Y[s,c,i,j] = (1/(kh·kw))·Σ_window X   (padding counts as zeros: count_include_pad)
#          dX[s,c,h,w] = Σ over windows covering (h, w) of dY[s,c,i,j]/(kh·kw)
#     X, dX: (B, C·H·W),  Y, dY: (B, C·Ho·Wo),  argmax: int32 index h·W + w within a plane
#   global_avg_pool_forward   Y[s,c] = (1/P)·Σ_p X[s,c,p]      X: (B, C·P), Y: (B, C)
#   global_avg_pool_backward  dX[s,c,p] = dY[s,c]/P
#
# Precision: the forward's window sums are accumulated in double (norm.pxi's seg_reduce for
# the global pool); the backward passes add the few dY routed to one position in the dtype.
# Threads: tasks own whole (sample, channel) planes (global pooling: whole rows); inside a
# plane everything runs serially in a fixed order (a backward zeroes its plane, then adds
# dY in row-major output order), so no two threads touch one output and every result is
# bitwise the same on any number of threads.
# uses: norm (seg_reduce), threads, checks.

from libc.stdint cimport INT32_MAX

cdef extern from "cpu_dispatch.h" nogil:   # pool_kernels.h: 2×2 max pooling, the variant in use
    int pn_maxpool2x2_f32(long W, long Ho, long Wo, const float *x, float *y)
    int pn_maxpool2x2_f64(long W, long Ho, long Wo, const double *x, double *y)

cdef enum:
    POOL_MAX = 0
    POOL_AVG = 1

ctypedef struct PoolGeom:
    Py_ssize_t H, W, Ho, Wo, kh, kw, sh, sw, ph, pw


cdef inline void _maxpool_plane(const floating *x, floating *y, int32_t *arg, const PoolGeom *geom) noexcept nogil:
    """One plane of max pooling: y[i, j] = max of window (i, j), arg[i, j] its index (arg may be NULL).
    Branch-free selection (a max over random data defeats the branch predictor); a window
    holding a NaN is scanned again for its first NaN."""
    cdef PoolGeom g = geom[0]         # a local copy: stores through y cannot change it
    cdef Py_ssize_t i, j, h, w, h0, h1, w0, w1, k, best_k
    cdef floating best, v
    cdef int nan_seen
    for i in range(g.Ho):
        h0 = i * g.sh - g.ph
        h1 = min(h0 + g.kh, g.H)
        h0 = max(h0, 0)
        for j in range(g.Wo):
            w0 = j * g.sw - g.pw
            w1 = min(w0 + g.kw, g.W)
            w0 = max(w0, 0)
            best_k = h0 * g.W + w0          # every window holds a real position (padding ≤ k/2)
            best = x[best_k]
            nan_seen = 0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    k = h * g.W + w
                    v = x[k]
                    best_k = k if v > best else best_k
                    best = v if v > best else best
                    nan_seen |= v != v
            if nan_seen:                    # rare: the first NaN wins (and propagates)
                for k in range(h1 * g.W - 1, h0 * g.W - 1, -1):
                    if w0 <= k % g.W < w1 and x[k] != x[k]:
                        best_k = k
                best = x[best_k]
            y[i * g.Wo + j] = best
            if arg != NULL:
                arg[i * g.Wo + j] = <int32_t>best_k


cdef inline bint _maxpool2x2_plane(const floating *x, floating *y, int32_t *arg,
                                   const PoolGeom *geom) noexcept nogil:
    """_maxpool_plane for the common window (2×2, stride 2, no padding), its rule unrolled:
    a, b from row 2i, then c, d from row 2i + 1, the first maximum in that order (without
    arg: on whole vectors, pool_kernels.h). Returns whether a NaN was seen; the caller then
    redoes the plane by the general rule."""
    cdef PoolGeom g = geom[0]
    cdef Py_ssize_t i, j, k0
    cdef floating a, b, c, d, best
    cdef int kb
    cdef bint nan_seen = 0
    if arg == NULL:
        if floating is float:
            return pn_maxpool2x2_f32(g.W, g.Ho, g.Wo, x, y)
        else:
            return pn_maxpool2x2_f64(g.W, g.Ho, g.Wo, x, y)
    for i in range(g.Ho):
        for j in range(g.Wo):
            k0 = 2 * i * g.W + 2 * j
            a, b, c, d = x[k0], x[k0 + 1], x[k0 + g.W], x[k0 + g.W + 1]
            best, kb = a, 0
            kb = 1 if b > best else kb
            best = b if b > best else best
            kb = 2 if c > best else kb
            best = c if c > best else best
            kb = 3 if d > best else kb
            best = d if d > best else best
            nan_seen |= (a != a) | (b != b) | (c != c) | (d != d)
            y[i * g.Wo + j] = best
            if arg != NULL:
                arg[i * g.Wo + j] = <int32_t>(k0 + (kb & 1) + (kb >> 1) * g.W)
    return nan_seen


cdef inline void _avgpool_plane(const floating *x, floating *y, const PoolGeom *g) noexcept nogil:
    """One plane of average pooling: y[i, j] = Σ window (i, j) / (kh·kw), summed in double."""
    cdef Py_ssize_t i, j, h, w, h0, h1, w0, w1
    cdef double s, area = <double>(g.kh * g.kw)
    for i in range(g.Ho):
        h0 = i * g.sh - g.ph
        h1 = min(h0 + g.kh, g.H)
        h0 = max(h0, 0)
        for j in range(g.Wo):
            w0 = j * g.sw - g.pw
            w1 = min(w0 + g.kw, g.W)
            w0 = max(w0, 0)
            s = 0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    s += x[h * g.W + w]
            y[i * g.Wo + j] = <floating>(s / area)


cdef inline void _maxpool_plane_backward(const floating *dy, const int32_t *arg, floating *dx,
                                         const floating *x, const PoolGeom *g) noexcept nogil:
    """dx = 0, then dx[arg[o]] += dy[o] for the outputs o of the plane in row-major order;
    with x (the forward's input, x = relu(z)) only where x[arg[o]] > 0: then dx is
    ∂L/∂z of the ReLU before the pooling, relu′(z) = [z > 0] = [x > 0], in the same pass."""
    cdef Py_ssize_t o
    for o in range(g.H * g.W):
        dx[o] = 0
    if x == NULL:
        for o in range(g.Ho * g.Wo):
            dx[arg[o]] += dy[o]
    else:
        for o in range(g.Ho * g.Wo):
            if x[arg[o]] > 0:
                dx[arg[o]] += dy[o]


cdef inline void _avgpool_plane_backward(const floating *dy, floating *dx, const PoolGeom *geom) noexcept nogil:
    """dx = 0, then each output (i, j) in row-major order adds dy[i, j]/(kh·kw) to its window's
    real positions (the same order on any number of threads: the plane is one task)."""
    cdef PoolGeom g = geom[0]          # a local copy: stores through dx cannot change it
    cdef Py_ssize_t i, j, h, w, h0, h1, w0, w1
    cdef floating v, area = <floating>(g.kh * g.kw)
    for h in range(g.H * g.W):
        dx[h] = 0
    for i in range(g.Ho):
        h0 = i * g.sh - g.ph
        h1 = min(h0 + g.kh, g.H)
        h0 = max(h0, 0)
        for j in range(g.Wo):
            w0 = j * g.sw - g.pw
            w1 = min(w0 + g.kw, g.W)
            w0 = max(w0, 0)
            v = dy[i * g.Wo + j] / area
            for h in range(h0, h1):
                for w in range(w0, w1):
                    dx[h * g.W + w] += v


cdef void _pool_forward(int kind, const floating *X, floating *Y, int32_t *arg, Py_ssize_t planes,
                        const PoolGeom *g, int nt) noexcept nogil:
    """Pool `planes` planes on at most nt threads."""
    cdef Py_ssize_t q
    for q in prange(planes, num_threads=min(nt, _nthreads_for(planes * g.H * g.W)), schedule="static"):
        pool_plane(kind, X, Y, arg, q, g)


cdef inline void pool_plane(int kind, const floating *X, floating *Y, int32_t *arg, Py_ssize_t q,
                            const PoolGeom *g) noexcept nogil:
    """Plane q of _pool_forward (2×2 max windows of stride 2 by the unrolled rule)."""
    cdef Py_ssize_t n_in = g.H * g.W, n_out = g.Ho * g.Wo
    cdef int32_t *a = arg + q * n_out if arg != NULL else NULL
    if kind == POOL_AVG:
        _avgpool_plane(X + q * n_in, Y + q * n_out, g)
    elif (g.kh != 2 or g.kw != 2 or g.sh != 2 or g.sw != 2 or g.ph != 0 or g.pw != 0
          or _maxpool2x2_plane(X + q * n_in, Y + q * n_out, a, g)):
        _maxpool_plane(X + q * n_in, Y + q * n_out, a, g)


cdef void _pool_backward(int kind, const floating *dY, const int32_t *arg, floating *dX,
                         const floating *X, Py_ssize_t planes, const PoolGeom *g) noexcept nogil:
    """dX from dY for `planes` planes; X (max only, may be NULL) masks as the ReLU before."""
    cdef Py_ssize_t q
    for q in prange(planes, num_threads=_nthreads_for(planes * g.H * g.W), schedule="static"):
        pool_plane_backward(kind, dY, arg, dX, X, q, g)


cdef inline void pool_plane_backward(int kind, const floating *dY, const int32_t *arg, floating *dX,
                                     const floating *X, Py_ssize_t q, const PoolGeom *g) noexcept nogil:
    """Plane q of _pool_backward."""
    cdef Py_ssize_t n_in = g.H * g.W, n_out = g.Ho * g.Wo
    if kind == POOL_MAX:
        _maxpool_plane_backward(dY + q * n_out, arg + q * n_out, dX + q * n_in,
                                X + q * n_in if X != NULL else NULL, g)
    else:
        _avgpool_plane_backward(dY + q * n_out, dX + q * n_in, g)


cdef object _pair(str name, object v):
    """(a, b) from an int or a pair of ints (bools and other types refused)."""
    t = (v, v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
    if (not isinstance(t, (tuple, list)) or len(t) != 2
            or any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) for e in t)):
        raise TypeError(f"PoolPlan: {name} must be an int or a pair of ints, got {v!r}")
    return int(t[0]), int(t[1])


cdef class PoolPlan:
    """2-D max or average pooling of (B, C·H·W) batches (NCHW rows), forward and backward.

    Ho = ⌊(H + 2·ph − kh)/sh⌋ + 1, Wo likewise (PyTorch's floor mode). Max pooling treats
    padding as −∞ and, in training, records each output's argmax (the first maximum in
    row-major window order) in an int32 buffer the plan owns, sized for the largest batch
    seen and reused; backward routes dY there. Average pooling divides by kh·kw, padding
    included (PyTorch's count_include_pad=True).

    Parameters
    ----------
    C, H, W : int
        Channels, height and width of one input sample (all ≥ 1).
    kind : {'max', 'avg'}
    kernel : int or (int, int)
        (kh, kw), each ≥ 1.
    stride : int or (int, int), optional
        (sh, sw), each ≥ 1; default the kernel (PyTorch's default).
    padding : int or (int, int), optional
        (ph, pw), each in [0, k/2] (PyTorch's rule); default 0.
    dtype : float32 or float64
        The dtype of the arrays the plan accepts.

    Attributes
    ----------
    out_h, out_w : int
        Ho, Wo.
    in_features, out_features : int
        C·H·W and C·Ho·Wo, the widths of X and Y.
    """
    cdef PoolGeom g
    cdef readonly Py_ssize_t C, out_h, out_w, in_features, out_features
    cdef readonly str kind
    cdef readonly object dtype
    cdef int _kind
    cdef object _argmax          # int32 (capacity rows, out_features), or None before training
    cdef Py_ssize_t _recorded    # rows whose argmax the last training forward recorded (−1: none)

    def __init__(self, C, H, W, kind, kernel=2, stride=None, padding=0, dtype=np.float32):
        for name, v in (("C", C), ("H", H), ("W", W)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"PoolPlan: {name} must be a positive int, got {v!r}")
        if kind not in ("max", "avg"):
            raise ValueError(f"PoolPlan: kind must be 'max' or 'avg', got {kind!r}")
        kh, kw = _pair("kernel", kernel)
        sh, sw = _pair("stride", kernel if stride is None else stride)
        ph, pw = _pair("padding", padding)
        if kh < 1 or kw < 1:
            raise ValueError(f"PoolPlan: kernel must be >= 1, got ({kh}, {kw})")
        if sh < 1 or sw < 1:
            raise ValueError(f"PoolPlan: stride must be >= 1, got ({sh}, {sw})")
        if not (0 <= ph <= kh // 2 and 0 <= pw <= kw // 2):
            raise ValueError(f"PoolPlan: padding must lie in [0, kernel/2] (PyTorch's rule), got padding "
                             f"({ph}, {pw}) for kernel ({kh}, {kw})")
        Ho = (H + 2 * ph - kh) // sh + 1 if H + 2 * ph >= kh else 0
        Wo = (W + 2 * pw - kw) // sw + 1 if W + 2 * pw >= kw else 0
        if Ho < 1 or Wo < 1:
            raise ValueError(f"PoolPlan: the output would be {Ho}x{Wo}: the padded input ({H}+2*{ph})x({W}+2*{pw}) "
                             f"is smaller than the kernel {kh}x{kw}")
        if H * W > INT32_MAX:
            raise ValueError(f"PoolPlan: a plane of {H}x{W} positions is too large (int32 argmax indices)")
        dt = np.dtype(dtype)
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"PoolPlan: dtype must be float32 or float64, got {dt}")
        self.g.H, self.g.W, self.g.Ho, self.g.Wo = H, W, Ho, Wo
        self.g.kh, self.g.kw, self.g.sh, self.g.sw, self.g.ph, self.g.pw = kh, kw, sh, sw, ph, pw
        self.C, self.out_h, self.out_w = C, Ho, Wo
        self.in_features, self.out_features = C * H * W, C * Ho * Wo
        self.kind, self._kind, self.dtype = kind, POOL_MAX if kind == "max" else POOL_AVG, dt
        self._argmax, self._recorded = None, -1

    @property
    def kernel(self):
        """(kh, kw)."""
        return (self.g.kh, self.g.kw)

    @property
    def stride(self):
        """(sh, sw)."""
        return (self.g.sh, self.g.sw)

    @property
    def padding(self):
        """(ph, pw)."""
        return (self.g.ph, self.g.pw)

    def __repr__(self):
        return (f"PoolPlan(C={self.C}, H={self.g.H}, W={self.g.W}, kind={self.kind!r}, kernel={self.kernel}, "
                f"stride={self.stride}, padding={self.padding}, dtype={self.dtype.name})")

    cdef _check(self, str where, str a_name, object A, Py_ssize_t a_width, str b_name, object B,
                Py_ssize_t b_width):
        _float_array(a_name, A, 2)
        _float_array(b_name, B, 2, True)
        _same_dtype(where, [a_name, b_name], [A, B])
        if A.dtype != self.dtype:
            raise TypeError(f"{where}: the plan is {self.dtype} but {a_name} is {A.dtype}")
        _shape(a_name, A, (A.shape[0], a_width))
        _shape(b_name, B, (A.shape[0], b_width))

    def forward(self, X, Y, training=True):
        """Pool a batch: Y = pool(X).

        Parameters
        ----------
        X : ndarray, shape (B, in_features)
        Y : ndarray, shape (B, out_features)
            Receives the pooled batch.
        training : bool
            Max pooling: record each output's argmax for backward (the plan keeps one
            buffer, grown only when a batch is larger than any before).

        Returns
        -------
        Y
        """
        self._check("PoolPlan.forward", "X", X, self.in_features, "Y", Y, self.out_features)
        cdef Py_ssize_t B = X.shape[0]
        cdef int32_t *arg = NULL
        if self._kind == POOL_MAX and training:
            if self._argmax is None or self._argmax.shape[0] < B:
                self._argmax = None   # the old buffer goes before the larger one comes
                self._argmax = np.empty((B, self.out_features), np.int32)
            arg = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>self._argmax)
            self._recorded = B
        if B == 0:
            return Y
        cdef void *x = cnp.PyArray_DATA(<cnp.ndarray>X)
        cdef void *y = cnp.PyArray_DATA(<cnp.ndarray>Y)
        cdef Py_ssize_t planes = B * self.C
        cdef bint f32 = self.dtype == F32
        with nogil:
            if f32:
                _pool_forward(self._kind, <const float *>x, <float *>y, arg, planes, &self.g, _nthreads())
            else:
                _pool_forward(self._kind, <const double *>x, <double *>y, arg, planes, &self.g, _nthreads())
        return Y

    def backward(self, dY, dX, X=None):
        """Gradient of the pooling: dX (overwritten) from dY.

        Max pooling routes each dY to the argmax its training forward recorded (adding
        where windows overlap), so dY must have that forward's batch size; average
        pooling spreads each dY over its window as dY/(kh·kw).

        Parameters
        ----------
        dY : ndarray, shape (B, out_features)
        dX : ndarray, shape (B, in_features)
        X : ndarray, shape (B, in_features), optional
            Max pooling only: the forward's input when it is the output of a ReLU,
            X = relu(Z); dX is then ∂L/∂Z (each routed dY kept only where X > 0), the
            ReLU's backward done in the same pass.

        Returns
        -------
        dX
        """
        self._check("PoolPlan.backward", "dY", dY, self.out_features, "dX", dX, self.in_features)
        cdef Py_ssize_t B = dY.shape[0]
        cdef const int32_t *arg = NULL
        cdef void *xp = NULL
        if X is not None:
            if self._kind != POOL_MAX:
                raise ValueError("PoolPlan.backward: X (a ReLU's output to mask by) is for max pooling only")
            _float_array("X", X, 2)
            _same_dtype("PoolPlan.backward", ["dY", "X"], [dY, X])
            _shape("X", X, (B, self.in_features))
            xp = cnp.PyArray_DATA(<cnp.ndarray>X)
        if self._kind == POOL_MAX:
            if self._recorded != B:
                raise ValueError(f"PoolPlan.backward: dY has {B} rows but the last training forward "
                                 + (f"recorded {self._recorded}" if self._recorded >= 0 else "was never run")
                                 + " (max pooling routes dY to the argmax that forward recorded)")
            arg = <const int32_t *>cnp.PyArray_DATA(<cnp.ndarray>self._argmax)
        if B == 0:
            return dX
        cdef void *dy = cnp.PyArray_DATA(<cnp.ndarray>dY)
        cdef void *dx = cnp.PyArray_DATA(<cnp.ndarray>dX)
        cdef Py_ssize_t planes = B * self.C
        cdef bint f32 = self.dtype == F32
        with nogil:
            if f32:
                _pool_backward(self._kind, <const float *>dy, arg, <float *>dx, <const float *>xp,
                               planes, &self.g)
            else:
                _pool_backward(self._kind, <const double *>dy, arg, <double *>dx, <const double *>xp,
                               planes, &self.g)
        return dX


# ---- global average pooling -----------------------------------------------------------------
cdef void _gap_forward(const floating[:, ::1] X, floating[:, ::1] Y, Py_ssize_t C) except *:
    cdef Py_ssize_t B = X.shape[0], P = X.shape[1] // C, r
    cdef const floating *x = &X[0, 0]
    cdef floating *y = &Y[0, 0]
    with nogil:
        for r in prange(B * C, num_threads=_nthreads_for(B * C * P), schedule="static"):
            y[r] = <floating>(seg_reduce(RED_SUM, x + r * P, x, x, 0.0, P) / P)


cdef void _gap_backward(const floating[:, ::1] dY, floating[:, ::1] dX, Py_ssize_t C) except *:
    cdef Py_ssize_t B = dY.shape[0], P = dX.shape[1] // C, r, p
    cdef const floating *dy = &dY[0, 0]
    cdef floating *dx = &dX[0, 0]
    cdef floating v
    with nogil:
        for r in prange(B * C, num_threads=_nthreads_for(B * C * P), schedule="static"):
            v = dy[r] / P
            for p in range(P):
                dx[r * P + p] = v


cdef object _gap_check(str where, object X, object Y, object C):
    """Check global_avg_pool_forward's X (B, C·P), P ≥ 1, and Y (B, C); returns B·P."""
    B, P = _channels(where, "X", X, C)
    _float_array("Y", Y, 2, True)
    _same_dtype(where, ["X", "Y"], [X, Y])
    _shape("Y", Y, (B, C))
    if P == 0:
        raise ValueError(f"X: expected at least one position per channel, got shape {X.shape}")
    return B


def global_avg_pool_forward(X, Y, C):
    """Global average pooling: Y[s, c] = (1/P)·Σ_p X[s, c, p] (summed in double).

    Parameters
    ----------
    X : ndarray, shape (B, C·P)
        NCHW rows, P = H·W positions per channel.
    Y : ndarray, shape (B, C)
        Receives the channel means.
    C : int
        The number of channels.

    Returns
    -------
    Y
    """
    if _gap_check("global_avg_pool_forward", X, Y, C):
        if X.dtype == F32:
            _gap_forward[float](X, Y, C)
        else:
            _gap_forward[double](X, Y, C)
    return Y


def global_avg_pool_backward(dY, dX, C):
    """Gradient of global average pooling: dX[s, c, p] = dY[s, c]/P.

    Parameters
    ----------
    dY : ndarray, shape (B, C)
    dX : ndarray, shape (B, C·P)
        Receives the gradient (overwritten).
    C : int

    Returns
    -------
    dX
    """
    B, one = _channels("global_avg_pool_backward", "dY", dY, C)
    _shape("dY", dY, (B, C))
    _float_array("dX", dX, 2, True)
    _same_dtype("global_avg_pool_backward", ["dY", "dX"], [dY, dX])
    if dX.shape[0] != B or dX.shape[1] % C or dX.shape[1] == 0:
        raise ValueError(f"dX: expected shape ({B}, C·P) with C = {C} and P >= 1, got {dX.shape}")
    if B:
        if dX.dtype == F32:
            _gap_backward[float](dY, dX, C)
        else:
            _gap_backward[double](dY, dX, C)
    return dX
