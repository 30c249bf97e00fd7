# train_loop.pxi — a run of k training steps of a network of dense, convolution, pooling and
# dropout layers in one compiled call (TrainLoop).
#
# Step s = 0..k−1 of an epoch whose shuffled rows are perm (batch B; the last batch may be short):
#   rows   = perm[start + s·B : start + (s+1)·B]                      B_s rows
#   A₀     = T(X[rows])           gathered, converted to the model's float T   A₀: B_s×n₀
#   layer l, Dense    Z_l = A_{l−1}·W_l + b_l,  A_l = f_l(Z_l)        W_l: n_{l−1}×n_l, b_l: n_l
#            Conv2D   Z_l = conv(A_{l−1}, W_l) + b_l, A_l = f_l(Z_l)  conv.pxi (W_l: Cout × C·kh·kw)
#            Pool     A_l = max / avg over windows (argmax kept)      pool.pxi
#            Dropout  A_l = A_{l−1} ⊙ M_l,  M_l = [U ≥ p]/(1−p)       U: uniforms drawn by the caller
#   L, δ   = loss(A_last, y[rows], w[rows])    losses.pxi's row kernels (δ = ∂L/∂A_last: B_s×n_L)
#   back   Dense    δ_l = dA_l ⊙ f′(Z_l);  dW_l = A_{l−1}ᵀ·δ_l;  db_l = Σ_rows δ_l;  dA_{l−1} = δ_l·W_lᵀ
#          Conv2D   δ_l as Dense;  dW_l = Σ_s δ_s·cols_sᵀ;  db_l = Σ_{s,p} δ;  dA_{l−1} = col2im(W_lᵀ·δ_s)
#          Pool     dA_{l−1} = dY routed to the argmax (max) or spread over the window (avg); a
#                   max pooling after a ReLU layer gives that layer's δ directly (kept where A > 0)
#          Dropout  dA_{l−1} = dA_l ⊙ M_l      (down to the first layer with parameters)
#   update g ← σ·g (σ = min(1, c/(‖g‖₂ + 10⁻¹²)) with clip_norm c, else 1), then per trainable
#          run of θ the optimizer's update (optim_kernels.h) with η = lrs[s] and t = t₀ + s + 1
#   out    loss[s] = L; correct[s] = rows classified right (when counted); the outputs A_last
#          (when kept)
# A step whose L is not finite ends the run after its backward pass, before its update (the
# caller raises, as the step-by-step path does).
#
# One thread team for the whole run: the call opens one parallel region and every thread
# runs every step, taking its share of each phase (gemm_team's rectangle of the grid gemm
# would use, or its row blocks as they come where that grid is row bands, or, for a Dense
# forward of few rows by a wide W, its KC slices of W's rows: gemm_k_slices, so a thread
# reads in the forward the rows of W it updates after the backward; its rows, chunks or
# elements of the rest: team_share), with a barrier where a phase reads what another wrote:
# after the gather, after each layer forward, after the loss's chunk sums (then every thread
# adds them in order and has the same L), after each layer backward, after the update. No
# fork/join per kernel, no Python between steps.
#
# Fused where the math allows, each bitwise what the separate pass gives:
#   δ_{l−1} = dA_{l−1} ⊙ f′(Z_{l−1}) in the epilogue of the GEMM dA_{l−1} = δ_l·W_lᵀ
#   (elementwise activations below a Dense layer; C is δ_{l−1}'s buffer, made in place), a
#   ReLU layer's A_l = f(Z_l) over Z_l (f′ = [Z > 0] = [A > 0]: one stream, not two), and
#   db_l = Σ_rows δ_l while gemm packs δ_l for dW_l (rows added in order 0..B−1, as
#   dense_backward does); θ_l's update right after layer l's backward, each thread the
#   rectangle of dW_l it made (update_layer), and for a Dense layer with no dA_{l−1} to make
#   (nothing else reads W_l then) inside the dW_l GEMM, each block of W_l as soon as
#   gemm_block has finished that block of dW_l (update_epilogue).
# When dW_l's grid leaves threads idle (a small last layer), dA_{l−1} starts on those.
#
# Every piece is the kernel the step-by-step path (Trainer, layers.py) calls: gather's
# conversion, the GEMMs with dense_layer's epilogue, act_backward, dense_backward's bias sums,
# conv.pxi's forward tasks and conv_backward_share, pool.pxi's planes,
# ce_label_rows / ce_prob_rows / pointwise_rows with the same chunks, the optimizer's
# update_chunk over the same UPDATE_CHUNK slices; so a run is bitwise those k steps taken one
# by one, and, as each kernel is, the same on any number of threads. The uniforms U of every
# Dropout layer for the k steps are drawn by the caller from the layer's own stream before the
# call, in the order the steps would draw them (a stream drawn in one piece or in k pieces
# gives the same values). Work buffers (B rows of every layer) belong to the TrainLoop, made
# once; the GIL is released for the whole run.
# uses: gather (source_t), dense (forward_epilogue), gemm (gemm_team, gemm_grid, grid_rect,
# team_cuts_k, gemm_k_slices, k_slices_values, Epilogue), conv (ConvPlan, forward_parts,
# forward_task, conv_backward_share), pool (PoolPlan, pool_plane, pool_plane_backward),
# activations (act_backward, softmax_row, ACT_*), losses (weight_sum, ce_label_rows,
# ce_prob_rows, pointwise_rows, LOSS_*), reduce (chunk_rows, sum_in_order, MAX_CHUNKS), optim
# (update_slice, update_chunk, UPDATE_CHUNK, NORM_CHUNK, sumsq_range, PN_*), threads
# (team_share, pn_barrier), checks.

from libc.math cimport pow, sqrt, isfinite
from libc.string cimport memcpy, memset
from libc.stdlib cimport calloc

cdef enum:
    LAYER_DENSE = 0
    LAYER_DROPOUT = 1
    LAYER_CONV = 2
    LAYER_POOL = 3
    LOSS_CE_LABELS = 10      # (the pointwise kinds are losses.pxi's LOSS_BCE … LOSS_HUBER)
    LOSS_CE_PROBS = 11
    ACC_NONE = 0
    ACC_LABELS = 1           # argmax of the outputs against integer labels
    ACC_ARGMAX = 2           # … against the argmax of class-probability targets
    ACC_BINARY = 3           # [z > threshold] of one output against [y > ½]

cdef dict GATHER_KINDS = {np.dtype(t): k for k, t in enumerate(
    (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
     np.uint64, np.bool_))}
cdef dict RULES = {"sgd": PN_SGD, "adam": PN_ADAM, "rmsprop": PN_RMSPROP}
cdef object F64 = np.dtype(np.float64)


cdef struct LoopLayer:
    int kind, act, grad_in        # grad_in: this layer hands ∂L/∂A_{l−1} down
    Py_ssize_t n, m               # input and output widths
    double alpha, p
    char *W
    char *b
    char *dW
    char *db
    char *Z
    char *A                       # the output A_l (Z for identity)
    char *delta                   # δ_l (Dense with an activation), else NULL: δ_l is dA_l
    char *dX
    char *mask                    # Dropout: this run's uniforms → masks, step after step
    Py_ssize_t w_off, b_off       # W's and b's place in params (and dW's, db's in grads)
    const ConvGeom *conv          # Conv2D: its geometry (W: Cout × K), W and Wᵀ packed for gemm
    char *wpack
    char *wtpack
    const PoolGeom *pool          # pooling: its geometry and kind, planes per row, this batch's
    int pool_kind                 # argmax (max)
    Py_ssize_t planes
    int32_t *arg
    bint masks_relu               # a max pooling after a ReLU layer: it makes that layer's δ
    bint train_w, train_b         # … inside the trainable runs


cdef struct LoopRun:
    int nl, first, src, loss, acc, rule, n_runs
    Py_ssize_t N, n_in, n_out, n_rows, batch
    const char *X
    const int64_t *ylab
    const char *ytar
    const char *w
    const char *pos_weight
    int64_t *yb
    char *tb
    char *wb
    char *xb
    char *dZ
    char *params
    char *grads
    char *s1
    char *s2
    const int64_t *runs
    double huber_delta, scale, threshold, clip
    double hyper[8]               # mu, nesterov | b1, b2, eps, decoupled | rho, eps; wd in [7]
    double *norm_partial
    double loss_partial[MAX_CHUNKS]
    int err                       # a GEMM's work buffers could not be made (set by any thread)
    bint fuse_update              # each layer's update made by the threads that made its dW
    char *kslices                 # a Dense forward cut along K (gemm_k_slices): its products
    uint64_t team[PN_TEAM_MAX]    # the team's ranges of row blocks (gemm_team, runtime.h)
    Py_ssize_t got
    LoopLayer *layers


cdef void gather_typed(const source_t *X, Py_ssize_t n, const int64_t *rows, Py_ssize_t i0,
                       Py_ssize_t i1, floating *out) noexcept nogil:
    """out[i, :] = T(X[rows[i], :]) for i in [i0, i1) (gather.pxi's conversion; rows in range)."""
    cdef Py_ssize_t i, j
    for i in range(i0, i1):
        for j in range(n):
            out[i * n + j] = <floating>X[rows[i] * n + j]


cdef void gather_source(int src, const char *X, Py_ssize_t n, const int64_t *rows, Py_ssize_t i0,
                        Py_ssize_t i1, floating *out) noexcept nogil:
    """gather_typed for X of dtype GATHER_KINDS code `src` (bool read as uint8)."""
    if src == 0:
        gather_typed(<const float *>X, n, rows, i0, i1, out)
    elif src == 1:
        gather_typed(<const double *>X, n, rows, i0, i1, out)
    elif src == 2:
        gather_typed(<const int8_t *>X, n, rows, i0, i1, out)
    elif src == 3:
        gather_typed(<const int16_t *>X, n, rows, i0, i1, out)
    elif src == 4:
        gather_typed(<const int32_t *>X, n, rows, i0, i1, out)
    elif src == 5:
        gather_typed(<const int64_t *>X, n, rows, i0, i1, out)
    elif src == 6 or src == 10:
        gather_typed(<const uint8_t *>X, n, rows, i0, i1, out)
    elif src == 7:
        gather_typed(<const uint16_t *>X, n, rows, i0, i1, out)
    elif src == 8:
        gather_typed(<const uint32_t *>X, n, rows, i0, i1, out)
    else:
        gather_typed(<const uint64_t *>X, n, rows, i0, i1, out)


cdef void gather_batch(LoopRun *r, const int64_t *rows, Py_ssize_t B, const floating *tag,
                       int tid, int nt) noexcept nogil:
    """This thread's share of the batch's rows: A₀, targets (labels or rows of y), weights."""
    cdef Share sh = team_share(B, tid, nt)
    cdef Py_ssize_t i
    gather_source(r.src, r.X, r.n_in, rows, sh.a, sh.b, <floating *>r.xb)
    if r.ylab != NULL:
        for i in range(sh.a, sh.b):
            r.yb[i] = r.ylab[rows[i]]
    else:
        gather_typed(<const floating *>r.ytar, r.n_out, rows, sh.a, sh.b, <floating *>r.tb)
    if r.w != NULL:
        for i in range(sh.a, sh.b):
            (<floating *>r.wb)[i] = (<const floating *>r.w)[rows[i]]


cdef double batch_loss(LoopRun *r, const floating *Z, floating *delta, Py_ssize_t B,
                       int tid, int nt) noexcept nogil:
    """L of the batch and δ = ∂L/∂Z, as softmax_cross_entropy / pointwise_loss compute them:
    chunks of chunk_rows(B) rows (this thread's share of them), their sums added in order
    after a barrier by every thread (so all get the same L), W = Σ w (or B)."""
    cdef Py_ssize_t m = r.n_out, chunk = chunk_rows(B), c
    cdef Py_ssize_t nchunks = (B + chunk - 1) // chunk
    cdef Share sh = team_share(nchunks, tid, nt)
    cdef double W = B
    cdef int bad = 0
    cdef const floating *w = <const floating *>r.wb if r.w != NULL else NULL
    cdef floating inv
    cdef bint ce = r.loss == LOSS_CE_LABELS or r.loss == LOSS_CE_PROBS
    if w != NULL:
        W = weight_sum(w, B, &bad)
    if ce:
        inv = (<floating>1 / <floating>W if W > 0 else 0) if w != NULL else <floating>1 / B
    else:
        inv = (<floating>r.scale / <floating>(m * W) if W > 0 else 0) if w != NULL else <floating>r.scale / (B * m)
    for c in range(sh.a, sh.b):
        if r.loss == LOSS_CE_LABELS:
            r.loss_partial[c] = ce_label_rows(Z, r.yb, w, delta, c * chunk, min(B, (c + 1) * chunk), m, inv, &bad)
        elif r.loss == LOSS_CE_PROBS:
            r.loss_partial[c] = ce_prob_rows(Z, <const floating *>r.tb, w, delta, c * chunk,
                                             min(B, (c + 1) * chunk), m, inv)
        else:
            r.loss_partial[c] = pointwise_rows(r.loss, <floating>r.huber_delta, Z, <const floating *>r.tb, w,
                                               <const floating *>r.pos_weight, delta, c * chunk,
                                               min(B, (c + 1) * chunk), m, inv)
    pn_barrier()
    if W <= 0:
        return 0.0
    if ce:
        return sum_in_order(r.loss_partial, nchunks) / W
    return r.scale * sum_in_order(r.loss_partial, nchunks) / (m * W)


cdef int64_t count_right(LoopRun *r, const floating *Z, Py_ssize_t B) noexcept nogil:
    """Rows whose class (metrics.classes_from_outputs) is the true one (labels_from_targets)."""
    cdef Py_ssize_t i, j, best, truth, m = r.n_out
    cdef const floating *t
    cdef int64_t right = 0
    for i in range(B):
        if r.acc == ACC_BINARY:
            best = Z[i] > <floating>r.threshold
            truth = (<const floating *>r.tb)[i] > 0.5
        else:
            best = 0
            for j in range(1, m):
                if Z[i * m + j] > Z[i * m + best]:
                    best = j
            if r.acc == ACC_LABELS:
                truth = r.yb[i]
            else:
                t = <const floating *>r.tb + i * m
                truth = 0
                for j in range(1, m):
                    if t[j] > t[truth]:
                        truth = j
        right += best == truth
    return right


cdef void rule_scalars(LoopRun *r, double lr, long t, double s, double *h) noexcept nogil:
    """The update kernel's scalars in optim.pxi's order, with learning rate lr at step t and
    gradient scale s."""
    cdef double *q = r.hyper
    if r.rule == PN_SGD:            # lr, momentum, nesterov, weight_decay, grad_scale
        h[0], h[1], h[2], h[3], h[4] = lr, q[0], q[1], q[7], s
    elif r.rule == PN_ADAM:         # lr, β₁, β₂, 1−β₁, 1−β₂, ε, λ, decoupled, c₁, c₂, σ
        h[0], h[1], h[2], h[3], h[4] = lr, q[2], q[3], 1.0 - q[2], 1.0 - q[3]
        h[5], h[6], h[7] = q[4], q[7], q[5]
        h[8], h[9], h[10] = 1.0 / (1.0 - pow(q[2], <double>t)), 1.0 / (1.0 - pow(q[3], <double>t)), s
    else:                           # lr, ρ, 1−ρ, ε, λ, σ
        h[0], h[1], h[2], h[3], h[4], h[5] = lr, q[6], 1.0 - q[6], q[4], q[7], s


cdef void optimizer_step(LoopRun *r, double lr, long t, const floating *tag, int tid, int nt) noexcept nogil:
    """One update of every trainable run (Optimizer.step): the clip scale σ of ‖g‖₂ (optim.pxi's
    global_norm, one run), then each run's UPDATE_CHUNK chunks shared by the threads; a
    barrier at the end."""
    cdef double h[11]
    cdef double s = 1, norm
    cdef Py_ssize_t a, e, c, nchunks
    cdef int i
    cdef Share sh
    if r.clip > 0:
        a, e = r.runs[0], r.runs[1]
        nchunks = (e - a + NORM_CHUNK - 1) // NORM_CHUNK
        sh = team_share(nchunks, tid, nt)
        for c in range(sh.a, sh.b):
            r.norm_partial[c] = sumsq_range(<const floating *>r.grads + a, c * NORM_CHUNK,
                                            min(e - a, (c + 1) * NORM_CHUNK))
        pn_barrier()
        norm = sqrt(sum_in_order(r.norm_partial, nchunks)) if e > a else 0
        s = min(1.0, r.clip / (norm + 1e-12))
    rule_scalars(r, lr, t, s, h)
    for i in range(r.n_runs):
        a, e = r.runs[2 * i], r.runs[2 * i + 1]
        sh = team_share((e - a + UPDATE_CHUNK - 1) // UPDATE_CHUNK, tid, nt)
        for c in range(sh.a, sh.b):
            update_chunk(r.rule, c, e - a, <floating *>r.params + a, <const floating *>r.grads + a,
                         <floating *>r.s1 + a if r.s1 != NULL else NULL,
                         <floating *>r.s2 + a if r.s2 != NULL else NULL, h)
    pn_barrier()


cdef inline Epilogue update_epilogue(const LoopRun *r, const LoopLayer *L, const double *h,
                                     const floating *tag) noexcept nogil:
    """The epilogue that updates a Dense layer's W_l from the blocks of dW_l = A_{l−1}ᵀ·δ_l
    as gemm_block finishes them (in L2 still), by the optimizer's rule with scalars h."""
    cdef Epilogue ep
    ep.bias = ep.out = ep.Zf = ep.Af = NULL
    ep.W, ep.ldo, ep.rule, ep.h = <floating *>r.params + L.w_off, L.m, r.rule, h
    ep.s1 = <floating *>r.s1 + L.w_off if r.s1 != NULL else NULL
    ep.s2 = <floating *>r.s2 + L.w_off if r.s2 != NULL else NULL
    return ep


cdef void update_layer(LoopRun *r, const LoopLayer *L, Py_ssize_t B, const double *h, bint w_done,
                       const floating *tag, int tid, int nt) noexcept nogil:
    """The update of this thread's rectangle of W_l, the one whose dW_l it made (the grid of
    the product A_{l−1}ᵀ·δ_l, or of a convolution's Σ_s δ_s·cols_sᵀ), while it is in its
    cache (w_done: already, by update_epilogue); and of the b_l it summed: a Dense layer's
    columns over a rectangle of the grid's first row, a convolution's channels of its share.
    Elementwise, so the same values as optimizer_step's chunks."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64, i
    cdef bint conv = L.kind == LAYER_CONV
    cdef Py_ssize_t M = L.conv.Cout if conv else L.n, N = L.conv.K if conv else L.m
    cdef int tn, tm = gemm_grid(M, N, B * L.conv.P if conv else B, nt, nr, &tn)
    cdef Rect q
    cdef Share sh
    cdef floating *P = <floating *>r.params
    cdef const floating *G = <const floating *>r.grads
    cdef floating *s1 = <floating *>r.s1
    cdef floating *s2 = <floating *>r.s2
    if L.train_b and conv:
        sh = team_share(M, tid, nt)
        update_slice(r.rule, L.b_off + sh.a, sh.b - sh.a, P, G, s1, s2, h)
    if tid >= tm * tn:
        return
    q = grid_rect(tid, tm, tn, M, N, nr)
    if q.m1 <= q.m0 or q.n1 <= q.n0:
        return
    if L.train_w and not w_done:
        for i in range(q.m0, q.m1):
            update_slice(r.rule, L.w_off + i * N + q.n0, q.n1 - q.n0, P, G, s1, s2, h)
    if L.train_b and not conv and q.m0 == 0:
        update_slice(r.rule, L.b_off + q.n0, q.n1 - q.n0, P, G, s1, s2, h)


cdef void forward(LoopRun *r, Py_ssize_t B, const Py_ssize_t *off, const floating *tag, int tid,
                  int nt) noexcept nogil:
    """A_l of every layer for this batch (A₀ gathered), a barrier after each layer: Dense by
    gemm_team with the bias+activation epilogue (softmax a pass of its own); Conv2D by
    conv_forward's tasks (W packed first, by one thread), pooling by planes (recording the
    argmax), each thread its share; Dropout as A_l = A_{l−1} ⊙ M_l with M_l made from this
    step's uniforms in place."""
    cdef const floating *x = <const floating *>r.xb
    cdef LoopLayer *L
    cdef Epilogue ep
    cdef Share sh
    cdef Py_ssize_t i, l, parts
    cdef floating *mask
    cdef floating *A
    cdef floating keep, p
    for l in range(r.nl):
        L = &r.layers[l]
        if L.kind == LAYER_DENSE:
            ep = forward_epilogue(L.b, L.act, L.alpha,
                                  L.A if L.act != ACT_IDENTITY and L.act != ACT_SOFTMAX else NULL, L.m)
            if team_cuts_k(B, L.n, nt):
                if gemm_k_slices(B, L.m, L.n, x, L.n, 1, <const floating *>L.W, L.m, 1, <floating *>L.Z,
                                 L.m, &ep, <floating *>r.kslices, tid, nt):
                    r.err = 1
            elif gemm_team(False, False, B, L.m, L.n, <floating>1, x, L.n, <const floating *>L.W, L.m,
                           <floating>0, <floating *>L.Z, L.m, &ep, <floating *>NULL, r.team, tid, nt):
                r.err = 1
            if L.act == ACT_SOFTMAX:
                pn_barrier()
                sh = team_share(B, tid, nt)
                for i in range(sh.a, sh.b):
                    softmax_row(<floating *>L.Z + i * L.m, <floating *>L.A + i * L.m, L.m)
        elif L.kind == LAYER_CONV:
            if tid == 0:
                conv_prepack(L.conv, <const floating *>L.W, <floating *>L.wpack)
            pn_barrier()
            parts = forward_parts(L.conv, B, nt, tag)
            sh = team_share(B * parts, tid, nt)
            for i in range(sh.a, sh.b):
                if forward_task(L.conv, i, parts, x, <const floating *>L.wpack, <const floating *>L.b,
                                L.act, <floating>L.alpha, <floating *>L.Z,
                                <floating *>L.A if L.act != ACT_IDENTITY else NULL):
                    r.err = 1
        elif L.kind == LAYER_POOL:
            sh = team_share(B * L.planes, tid, nt)
            for i in range(sh.a, sh.b):
                pool_plane(L.pool_kind, x, <floating *>L.A, L.arg, i, L.pool)
        else:
            mask, A = <floating *>L.mask + off[l], <floating *>L.A
            p = <floating>L.p
            keep = 1 / (1 - p)
            sh = team_share(B * L.n, tid, nt)
            for i in range(sh.a, sh.b):
                mask[i] = keep if mask[i] >= p else 0
                A[i] = x[i] * mask[i]
        pn_barrier()
        x = <const floating *>L.A


cdef inline bint makes_delta(const LoopLayer *L, const LoopLayer *below) noexcept nogil:
    """Whether L's dX product makes the δ of the layer below in its epilogue (a Dense layer
    over a Dense or Conv2D layer with an elementwise activation): its C is then δ's buffer,
    made in place, and L keeps no dX of its own."""
    return (L.kind == LAYER_DENSE and (below.kind == LAYER_DENSE or below.kind == LAYER_CONV)
            and below.act != ACT_IDENTITY and below.act != ACT_SOFTMAX)


cdef void backward(LoopRun *r, Py_ssize_t B, const Py_ssize_t *off, const double *h, const floating *tag,
                   int tid, int nt) noexcept nogil:
    """∂L/∂θ of every layer down to the first with parameters, from δ = ∂L/∂A_last in dZ; a
    barrier after each layer. Dense and Conv2D: δ_l = dA_l ⊙ f′(Z_l), unless the layer above
    made it (a Dense layer's dX GEMM, epilogue out = C ⊙ f′; a max pooling after a ReLU, its
    routed dY kept where A_l > 0). Dense: dW_l = A_{l−1}ᵀ·δ_l with db_l summed as δ_l is
    packed, dA_{l−1} = δ_l·W_lᵀ. Conv2D: conv_backward_share (db_l by channels, dW_l by
    rectangles, a barrier, dA_{l−1} by samples). Pooling: dY routed by planes.
    Dropout: dA_{l−1} = dA_l ⊙ M_l. With h (the update's scalars), each layer with
    parameters is updated once its backward is done (update_layer; a Dense layer's W_l
    inside its dW_l product when it makes no dA_{l−1}: update_epilogue)."""
    cdef const floating *dA = <const floating *>r.dZ
    cdef const floating *x
    cdef floating *delta
    cdef LoopLayer *L
    cdef LoopLayer *below
    cdef Epilogue ep
    cdef Share sh
    cdef Py_ssize_t i, l
    cdef const floating *mask
    cdef bint made = False          # δ_l already made by the layer above
    cdef bint w_done                # W_l updated inside its dW_l product
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    cdef int tm, tn
    for l in range(r.nl - 1, r.first - 1, -1):
        L = &r.layers[l]
        x = <const floating *>(r.layers[l - 1].A if l > 0 else r.xb)
        below = &r.layers[l - 1] if l > 0 else NULL
        delta = <floating *>dA
        # a Dense layer with no dX (nothing else reads W_l now): W_l updated as its dW_l blocks are finished
        w_done = L.kind == LAYER_DENSE and h != NULL and L.train_w and not L.grad_in
        if L.kind == LAYER_DENSE or L.kind == LAYER_CONV:
            if L.act != ACT_IDENTITY:
                delta = <floating *>L.delta
                if not made:
                    sh = team_share(B, tid, nt)
                    for i in range(sh.a, sh.b):
                        act_backward(L.act, <floating>L.alpha, <const floating *>L.Z + i * L.m,
                                     <const floating *>L.A + i * L.m, dA + i * L.m, delta + i * L.m, L.m)
                    pn_barrier()
            made = False
        if L.kind == LAYER_DENSE:
            if w_done:
                ep = update_epilogue(r, L, h, tag)
            if gemm_team(True, False, L.n, L.m, B, <floating>1, x, L.n, delta, L.m, <floating>0,
                         <floating *>L.dW, L.m, &ep if w_done else NULL, <floating *>L.db, r.team, tid, nt):
                r.err = 1
            if L.grad_in:
                made = makes_delta(L, below)
                ep.bias, ep.bias_rows, ep.act, ep.alpha = NULL, False, below.act, below.alpha
                ep.out, ep.ldo, ep.Zf, ep.Af, ep.W = below.delta, L.n, below.Z, below.A, NULL
                # on the threads dW's grid leaves idle first (a small last layer: dW on one, dX on another)
                tm = gemm_grid(L.n, L.m, B, nt, nr, &tn)
                if gemm_team(False, True, B, L.n, L.m, <floating>1, delta, L.m, <const floating *>L.W, L.m,
                             <floating>0, <floating *>(below.delta if made else L.dX), L.n, &ep if made else NULL,
                             <floating *>NULL, r.team, (tid + nt - tm * tn) % nt, nt):
                    r.err = 1
        elif L.kind == LAYER_CONV:
            if conv_backward_share(L.conv, B, x, <const floating *>L.W, delta, <floating *>L.dW,
                                   <floating *>L.db, <floating *>L.dX if L.grad_in else NULL,
                                   <floating *>L.wtpack, tid, nt):
                r.err = 1
        elif L.kind == LAYER_POOL:
            made = L.masks_relu
            sh = team_share(B * L.planes, tid, nt)
            for i in range(sh.a, sh.b):
                pool_plane_backward(L.pool_kind, dA, L.arg, <floating *>below.delta if made else <floating *>L.dX,
                                    <const floating *>below.A if made else NULL, i, L.pool)
        else:
            mask = <const floating *>L.mask + off[l]
            sh = team_share(B * L.n, tid, nt)
            for i in range(sh.a, sh.b):
                (<floating *>L.dX)[i] = dA[i] * mask[i]
            made = False
        pn_barrier()
        if h != NULL and (L.kind == LAYER_DENSE or L.kind == LAYER_CONV):
            update_layer(r, L, B, h, w_done, tag, tid, nt)
        dA = <const floating *>L.dX


cdef Py_ssize_t run_steps(LoopRun *r, const int64_t *perm, Py_ssize_t start, Py_ssize_t steps,
                          const double *lrs, long t0, double *loss_out, int64_t *correct_out,
                          floating *zout, int tid, int nt) noexcept nogil:
    """Thread tid's part of the steps (formulas at the top of the file), in a team of nt;
    every thread returns the same: how many steps were completed (the index of a step whose
    loss was not finite, else `steps`), or −1 when GEMM buffers failed."""
    cdef Py_ssize_t s, l, B, r0, done_rows = 0
    cdef const int64_t *rows
    cdef Py_ssize_t off[64]
    cdef double loss
    cdef double h[11]
    cdef bint failed, fuse
    cdef const floating *tag = zout     # (the specialisation's float type, for the helpers)
    for l in range(r.nl):
        off[l] = 0
    for s in range(steps):
        r0 = start + s * r.batch
        B = min(r.batch, r.n_rows - r0)
        rows = perm + r0
        gather_batch(r, rows, B, tag, tid, nt)
        pn_barrier()
        forward(r, B, off, tag, tid, nt)
        loss = batch_loss(r, <const floating *>r.layers[r.nl - 1].A, <floating *>r.dZ, B, tid, nt)
        if tid == 0:
            loss_out[s] = loss
            if r.acc != ACC_NONE:
                correct_out[s] = count_right(r, <const floating *>r.layers[r.nl - 1].A, B)
            if zout != NULL:
                memcpy(zout + done_rows * r.n_out, r.layers[r.nl - 1].A, B * r.n_out * sizeof(floating))
        done_rows += B
        # the update inside the backward pass, from the second step of a run on (the first
        # makes the GEMMs' work buffers: a failure to must leave θ as it was)
        fuse = r.fuse_update and s > 0 and isfinite(loss)
        if fuse:
            rule_scalars(r, lrs[s], t0 + s + 1, 1.0, h)
        backward(r, B, off, h if fuse else NULL, tag, tid, nt)
        failed = r.err                 # read by all after the barrier, then a barrier before
        pn_barrier()                   # anyone could set it again
        if failed:
            return -1
        if not isfinite(loss):         # the step-by-step path stops here too, gradients made
            return s
        for l in range(r.nl):
            if r.layers[l].kind == LAYER_DROPOUT:
                off[l] += B * r.layers[l].n
        if not fuse:
            optimizer_step(r, lrs[s], t0 + s + 1, tag, tid, nt)
    return steps


cdef Py_ssize_t run_team(LoopRun *r, const int64_t *perm, Py_ssize_t start, Py_ssize_t steps,
                         const double *lrs, long t0, double *loss_out, int64_t *correct_out,
                         floating *zout, int nt) noexcept nogil:
    """run_steps in one parallel region of (at most) nt threads: one thread team for the run."""
    cdef Py_ssize_t got = 0
    cdef int tid = 0
    r.err = 0
    memset(r.team, 0, sizeof(r.team))     # every range empty until its owner sets it
    with parallel(num_threads=nt):
        tid = threadid()
        got = run_steps(r, perm, start, steps, lrs, t0, loss_out, correct_out, zout, tid, pn_team_size())
        if tid == 0:
            r.got = got
    return r.got


cdef class TrainLoop:
    """Runs of training steps of a network of Dense, Conv2D, pooling and Dropout layers in
    one compiled call each (formulas in csrc/train_loop.pxi); bitwise the Trainer's
    step-by-step results.

    Parameters
    ----------
    layers : list of tuple
        ('dense', W, b, dW, db, activation, alpha) — W (n, m), b (m,) and their gradients dW,
        db, views of `params` and `grads`; ('conv', W, b, dW, db, activation, alpha, plan) —
        W (Cout, k), b (Cout,), plan a ConvPlan (b, db may lie outside params: a bias of
        zeros); ('pool', plan), plan a PoolPlan; or ('dropout', n, p), p in (0, 1).
    params, grads : ndarray
        The model's flat parameter and gradient vectors (float32 or float64).
    X : ndarray (N, n₀), C-contiguous, a dtype of GATHER_KINDS (float16 is not taken)
    y : ndarray
        int64 labels (N,) (cross_entropy) or targets (N, n_L) of the model's dtype.
    w : ndarray (N,) or None
        Sample weights, the model's dtype, finite and ≥ 0.
    batch : int
        Rows of a step (the last step of an epoch may have fewer).
    loss : str
        'cross_entropy', 'binary_cross_entropy', 'mse', 'mae' or 'huber'.
    scale, huber_delta : float
        pointwise_loss's scale and δ.
    pos_weight : ndarray (n_L,) or None
        binary_cross_entropy's weight of the positive term.
    rule : str
        'sgd', 'adam' or 'rmsprop'; `hyper` its scalars: momentum, nesterov (sgd), beta1,
        beta2, eps, decoupled (adam), rho, eps (rmsprop), weight_decay.
    s1, s2 : ndarray or None
        The optimizer's state vectors (sgd: velocity or None; adam: m, v; rmsprop: v).
    runs : list of (start, stop)
        The trainable runs of params.
    clip_norm : float
        c > 0 clips by the global norm (one run only), 0 does not.
    accuracy : bool
        Count the rows classified right; `threshold` is that of a single output.
    first : int
        Index of the first layer with parameters (backward stops there).
    """
    cdef LoopRun r
    cdef list _keep
    cdef object dtype
    cdef readonly Py_ssize_t batch, n_out
    cdef readonly tuple dropout_widths

    def __cinit__(self):
        self.r.layers = NULL

    def __dealloc__(self):
        free(self.r.layers)

    def __init__(self, list layers, params, grads, X, y, w, Py_ssize_t batch, str loss, double scale,
                 double huber_delta, pos_weight, str rule, dict hyper, s1, s2, list runs,
                 double clip_norm, bint accuracy, double threshold, int first):
        _check_vectors("TrainLoop", ["params", "grads"], [params, grads], 0)
        dt = self.dtype = params.dtype
        keep = self._keep = [params, grads, X, y]
        if not layers or len(layers) > 64:
            raise ValueError(f"TrainLoop: expected 1 to 64 layers, got {len(layers)}")
        if batch < 1:
            raise ValueError(f"TrainLoop: batch must be >= 1, got {batch}")
        if not isinstance(X, np.ndarray) or X.dtype not in GATHER_KINDS:
            raise TypeError(f"X: expected an array of a dtype in {sorted(map(str, GATHER_KINDS))}, "
                            f"got {getattr(X, 'dtype', type(X).__name__)}")
        if X.ndim != 2 or not X.flags.c_contiguous:
            raise ValueError(f"X: expected a C-contiguous 2-d array, got shape {X.shape}, strides {X.strides}")
        if rule not in RULES:
            raise ValueError(f"TrainLoop: rule must be one of {sorted(RULES)}, got {rule!r}")
        cdef int L = len(layers), l
        self.r.layers = <LoopLayer *>calloc(L, sizeof(LoopLayer))
        if self.r.layers == NULL:
            raise MemoryError("TrainLoop: out of memory")
        self.r.nl, self.r.first, self.r.batch = L, first, batch
        self.batch = batch
        width = X.shape[1]
        drops = []
        cdef LoopLayer *Ly
        for l, spec in enumerate(layers):
            Ly = &self.r.layers[l]
            if spec[0] in ("dense", "conv") and len(spec) == (7 if spec[0] == "dense" else 8):
                W, b, dW, db, act, alpha = spec[1:7]
                for name, a, wr in (("W", W, False), ("b", b, False), ("dW", dW, True), ("db", db, True)):
                    _float_array(f"layers[{l}].{name}", a, 2 if name in ("W", "dW") else 1, wr)
                _same_dtype("TrainLoop", ["params", "W", "b", "dW", "db"], [params, W, b, dW, db])
                Ly.act, Ly.alpha = _act_code(act), float(alpha)
                if spec[0] == "dense":
                    Ly.kind, Ly.n, Ly.m = LAYER_DENSE, W.shape[0], W.shape[1]
                    _shape("b", b, (W.shape[1],))
                else:
                    if not isinstance(spec[7], ConvPlan) or spec[7].dtype != dt or Ly.act == ACT_SOFTMAX:
                        raise ValueError(f"TrainLoop: layers[{l}]: expected a ConvPlan of {dt} and an activation "
                                         f"other than softmax, got {spec[7]!r:.60} and {act!r}")
                    cp = <ConvPlan>spec[7]
                    _shape("W", W, (cp.out_channels, cp.k))
                    _shape("b", b, (cp.out_channels,))
                    Ly.kind, Ly.n, Ly.m, Ly.conv = LAYER_CONV, cp.in_features, cp.out_features, &cp.g
                    Ly.wpack, Ly.wtpack = <char *>cp._packed(False), <char *>cp._packed(True)
                    keep.append(cp)
                if Ly.n != width:
                    raise ValueError(f"TrainLoop: layers[{l}] takes {Ly.n} inputs, the layer before gives {width}")
                _shape("dW", dW, W.shape)
                _shape("db", db, b.shape)
                for name, a in (("W", W), ("b", b), ("dW", dW), ("db", db)):
                    keep.append(a)
                Ly.W, Ly.b = <char *>cnp.PyArray_DATA(<cnp.ndarray>W), <char *>cnp.PyArray_DATA(<cnp.ndarray>b)
                Ly.dW, Ly.db = <char *>cnp.PyArray_DATA(<cnp.ndarray>dW), <char *>cnp.PyArray_DATA(<cnp.ndarray>db)
                Ly.Z = self._buffer(batch * Ly.m)
                # ReLU's A = f(Z) overwrites Z: f′(Z) = [Z > 0] = [A > 0] bit for bit (NaN, −0
                # included), so the backward reads it from A, and no second B × m stream is written
                Ly.A = self._buffer(batch * Ly.m) if Ly.act != ACT_IDENTITY and Ly.act != ACT_RELU else Ly.Z
                Ly.delta = self._buffer(batch * Ly.m) if Ly.act != ACT_IDENTITY else NULL
                width = Ly.m
            elif spec[0] == "pool" and len(spec) == 2:
                if not isinstance(spec[1], PoolPlan) or spec[1].dtype != dt or spec[1].in_features != width:
                    raise ValueError(f"TrainLoop: layers[{l}]: expected a PoolPlan of {dt} taking {width} "
                                     f"values, got {spec[1]!r:.80}")
                pp = <PoolPlan>spec[1]
                Ly.kind, Ly.n, Ly.m, Ly.pool = LAYER_POOL, pp.in_features, pp.out_features, &pp.g
                Ly.pool_kind, Ly.planes = pp._kind, pp.C
                Ly.A = Ly.Z = self._buffer(batch * Ly.m)
                arg = np.empty(batch * Ly.m, np.int32)
                keep += [pp, arg]
                Ly.arg = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>arg)
                width = Ly.m
            elif spec[0] == "dropout":
                _, n, p = spec
                if n != width or not 0 < p < 1:
                    raise ValueError(f"TrainLoop: layers[{l}] is dropout of width {n} (layer before: {width}) "
                                     f"with p {p}; expected p in (0, 1)")
                Ly.kind, Ly.n, Ly.m, Ly.p = LAYER_DROPOUT, n, n, p
                Ly.A = self._buffer(batch * n)
                drops.append(n)
            else:
                raise ValueError(f"TrainLoop: layers[{l}]: expected a ('dense', …), ('conv', …), ('pool', plan) or "
                                 f"('dropout', n, p) tuple, got {spec!r:.80}")
            Ly.grad_in = l > first
            Ly.dX = (self._buffer(batch * Ly.n) if Ly.grad_in and not makes_delta(Ly, &self.r.layers[l - 1])
                     else NULL)
        self.dropout_widths = tuple(drops)
        cdef Py_ssize_t kslices = 0      # the most any Dense forward cut along K needs
        for l in range(L):
            if self.r.layers[l].kind == LAYER_DENSE:
                kslices = max(kslices, k_slices_values(batch, self.r.layers[l].m, self.r.layers[l].n))
        self.r.kslices = self._buffer(kslices)
        if not 0 <= first < L or self.r.layers[first].kind not in (LAYER_DENSE, LAYER_CONV):
            raise ValueError(f"TrainLoop: first must be the index of the first Dense or Conv2D layer, got {first}")
        for l in range(first + 1, L):    # as Sequential.backward pairs them (its _masks_relu)
            Ly = &self.r.layers[l]
            Ly.masks_relu = (Ly.kind == LAYER_POOL and Ly.pool_kind == POOL_MAX and self.r.layers[l - 1].act == ACT_RELU
                             and self.r.layers[l - 1].kind in (LAYER_DENSE, LAYER_CONV))
        self.r.n_in, self.r.n_out, self.n_out = X.shape[1], width, width
        self.r.N = X.shape[0]
        self.r.src = GATHER_KINDS[X.dtype]
        self.r.X = <const char *>cnp.PyArray_DATA(<cnp.ndarray>X)
        self.r.xb = self._buffer(batch * X.shape[1])
        self.r.dZ = self._buffer(batch * width)
        self.r.ylab, self.r.ytar, self.r.tb, self.r.yb = NULL, NULL, NULL, NULL
        if loss == "cross_entropy" and isinstance(y, np.ndarray) and y.ndim == 1:
            if y.dtype != I64 or not y.flags.c_contiguous:
                raise TypeError(f"y: expected contiguous int64 labels, got {y.dtype} with strides {y.strides}")
            self.r.loss, self.r.ylab = LOSS_CE_LABELS, <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>y)
            labels = np.empty(batch, np.int64)
            keep.append(labels)
            self.r.yb = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>labels)
        else:
            if loss != "cross_entropy" and loss not in POINTWISE_LOSSES:
                raise ValueError(f"TrainLoop: unknown loss {loss!r}")
            _float_array("y", y, 2)
            _same_dtype("TrainLoop", ["params", "y"], [params, y])
            self.r.loss = LOSS_CE_PROBS if loss == "cross_entropy" else POINTWISE_LOSSES[loss]
            self.r.ytar, self.r.tb = <const char *>cnp.PyArray_DATA(<cnp.ndarray>y), self._buffer(batch * width)
        if y.shape[0] != X.shape[0] or (y.ndim == 2 and y.shape[1] != width):
            raise ValueError(f"y: expected {X.shape[0]} rows of {width} targets (or labels), got shape {y.shape}")
        self.r.w = self.r.wb = NULL
        if w is not None:
            _float_array("w", w, 1)
            _same_dtype("TrainLoop", ["params", "w"], [params, w])
            _shape("w", w, (X.shape[0],))
            keep.append(w)
            self.r.w, self.r.wb = <const char *>cnp.PyArray_DATA(<cnp.ndarray>w), self._buffer(batch)
        self.r.pos_weight = NULL
        if pos_weight is not None:
            _float_array("pos_weight", pos_weight, 1)
            _same_dtype("TrainLoop", ["params", "pos_weight"], [params, pos_weight])
            _shape("pos_weight", pos_weight, (width,))
            keep.append(pos_weight)
            self.r.pos_weight = <const char *>cnp.PyArray_DATA(<cnp.ndarray>pos_weight)
        self.r.scale, self.r.huber_delta = scale, huber_delta
        self.r.acc = ACC_NONE
        if accuracy:
            self.r.acc = (ACC_LABELS if self.r.ylab != NULL else ACC_BINARY if width == 1 else ACC_ARGMAX)
        self.r.threshold = threshold
        # the optimizer
        self.r.rule = RULES[rule]
        q = [hyper.get(k, 0.0) for k in ("momentum", "nesterov", "beta1", "beta2", "eps", "decoupled", "rho",
                                         "weight_decay")]
        for l in range(8):
            self.r.hyper[l] = float(q[l])
        self.r.params = <char *>cnp.PyArray_DATA(<cnp.ndarray>params)
        self.r.grads = <char *>cnp.PyArray_DATA(<cnp.ndarray>grads)
        self.r.s1 = self.r.s2 = NULL
        for name, s in (("s1", s1), ("s2", s2)):
            if s is not None:
                _check_vectors("TrainLoop", ["params", name], [params, s])
                keep.append(s)
        if s1 is not None:
            self.r.s1 = <char *>cnp.PyArray_DATA(<cnp.ndarray>s1)
        if s2 is not None:
            self.r.s2 = <char *>cnp.PyArray_DATA(<cnp.ndarray>s2)
        if (self.r.rule == PN_ADAM and s2 is None) or (self.r.rule != PN_SGD and s1 is None):
            raise ValueError(f"TrainLoop: {rule} needs its state vectors")
        spans = np.asarray(runs, dtype=np.int64).reshape(-1)
        if spans.size % 2 or (spans.size and (spans.min() < 0 or spans.max() > params.shape[0]
                                               or (spans[1::2] < spans[::2]).any())):
            raise ValueError(f"TrainLoop: runs must be (start, stop) pairs within params, got {runs}")
        keep.append(spans)
        self.r.runs = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>spans)
        self.r.n_runs = spans.size // 2
        self.r.clip = clip_norm
        if clip_norm > 0 and self.r.n_runs != 1:
            raise ValueError("TrainLoop: clip_norm needs exactly one trainable run")
        self.r.fuse_update = clip_norm == 0 and self._placed(layers, params, grads, spans)
        partial = np.empty(max(1, (params.shape[0] + NORM_CHUNK - 1) // NORM_CHUNK), np.float64)
        keep.append(partial)
        self.r.norm_partial = <double *>cnp.PyArray_DATA(<cnp.ndarray>partial)

    cdef bint _placed(self, list layers, params, grads, spans) except -1:
        """Each Dense layer's places of W and b in params (dW's and db's the same in grads),
        and whether they lie wholly inside the trainable runs or wholly outside; True when
        every layer's do and their trainable ones make up the runs exactly (then a layer's
        update can follow its backward pass: update_layer)."""
        cdef LoopLayer *Ly
        runs = spans.reshape(-1, 2).tolist()
        covered, item = 0, params.itemsize
        for l, spec in enumerate(layers):
            if spec[0] not in ("dense", "conv"):
                continue
            Ly = &self.r.layers[l]
            for k, (a, da) in enumerate(((spec[1], spec[3]), (spec[2], spec[4]))):
                gap = a.ctypes.data - params.ctypes.data
                if not 0 <= gap < params.nbytes:   # not a parameter (a convolution's zero bias): never updated
                    continue
                if gap % item or da.ctypes.data - grads.ctypes.data != gap or gap // item + a.size > params.size:
                    return False
                i0, i1 = gap // item, gap // item + a.size
                inside = any(s <= i0 and i1 <= e for s, e in runs)
                if not inside and any(s < i1 and i0 < e for s, e in runs):
                    return False
                covered += a.size if inside else 0
                if k == 0:
                    Ly.w_off, Ly.train_w = i0, inside
                else:
                    Ly.b_off, Ly.train_b = i0, inside
        return covered == sum(e - s for s, e in runs)

    @property
    def fused_update(self):
        """Whether each layer is updated right after its backward pass (update_layer)."""
        return bool(self.r.fuse_update)

    cdef char *_buffer(self, Py_ssize_t n) except NULL:
        """A work buffer of n values of the model's dtype, owned by the loop, starting on a
        cache line (so a thread's rows of it are whole lines of its own)."""
        a = _zeros_aligned(max(n, 1), self.dtype)
        self._keep.append(a)
        return <char *>cnp.PyArray_DATA(<cnp.ndarray>a)

    def run(self, perm, Py_ssize_t start, Py_ssize_t steps, lrs, long t0, masks, loss_out,
            correct_out, zout=None):
        """Steps start/batch … of the epoch's rows `perm` (int64, the epoch's rows in order):
        `steps` of them from row `start`, with learning rates lrs[s] (float64) and optimizer
        step counts t0 + 1 …; masks: one flat array per Dropout layer of uniforms (the model's
        dtype) for these steps' rows, made into the masks in place; loss_out (float64) and
        correct_out (int64) receive each step's loss and rows right; zout (rows × n_L) the
        outputs, when given. Returns the steps completed (fewer when a loss was not finite)."""
        for name, a, dt, out in (("perm", perm, I64, False), ("lrs", lrs, F64, False),
                                 ("loss_out", loss_out, F64, True), ("correct_out", correct_out, I64, True)):
            if not isinstance(a, np.ndarray) or a.dtype != dt:
                raise TypeError(f"{name}: expected a numpy array of {dt}, got {getattr(a, 'dtype', type(a).__name__)}")
            if a.ndim != 1 or not a.flags.c_contiguous or (out and not a.flags.writeable):
                raise ValueError(f"{name}: expected a contiguous{' writable' if out else ''} 1-d array, got shape "
                                 f"{a.shape}, strides {a.strides}")
        cdef const int64_t[::1] p = perm
        cdef const double[::1] lr = lrs
        cdef double[::1] lo = loss_out
        cdef int64_t[::1] co = correct_out
        cdef Py_ssize_t n_rows = p.shape[0], rows, l, k = 0, got
        if steps < 1 or start < 0 or start + (steps - 1) * self.r.batch >= n_rows:
            raise ValueError(f"TrainLoop.run: steps {steps} from row {start} do not fit in {n_rows} rows")
        if lr.shape[0] < steps or lo.shape[0] < steps or co.shape[0] < steps:
            raise ValueError(f"TrainLoop.run: lrs, loss_out and correct_out need {steps} entries")
        if p.shape[0] and (np.min(perm) < 0 or np.max(perm) >= self.r.N):
            raise ValueError(f"perm: row indices must lie in [0, {self.r.N - 1}]")
        rows = min(n_rows, start + steps * self.r.batch) - start
        if len(masks) != len(self.dropout_widths):
            raise ValueError(f"masks: expected {len(self.dropout_widths)} arrays, got {len(masks)}")
        for l in range(self.r.nl):
            if self.r.layers[l].kind == LAYER_DROPOUT:
                _float_array(f"masks[{k}]", masks[k], 1, True)
                if masks[k].dtype != self.dtype or masks[k].shape[0] < rows * self.r.layers[l].n:
                    raise ValueError(f"masks[{k}]: expected {rows * self.r.layers[l].n} values of {self.dtype}")
                self.r.layers[l].mask = <char *>cnp.PyArray_DATA(<cnp.ndarray>masks[k])
                k += 1
        cdef char *zo = NULL
        if zout is not None:
            _float_array("zout", zout, 2, True)
            if zout.dtype != self.dtype or zout.shape[0] < rows or zout.shape[1] != self.n_out:
                raise ValueError(f"zout: expected ({rows}, {self.n_out}) of {self.dtype}, got {zout.shape}")
            zo = <char *>cnp.PyArray_DATA(<cnp.ndarray>zout)
        cdef bint f32 = self.dtype == F32
        self.r.n_rows = n_rows
        cdef int nt = _nthreads()
        with nogil:
            if f32:
                got = run_team(&self.r, &p[0], start, steps, &lr[0], t0, &lo[0], &co[0], <float *>zo, nt)
            else:
                got = run_team(&self.r, &p[0], start, steps, &lr[0], t0, &lo[0], &co[0], <double *>zo, nt)
        if got < 0:
            raise MemoryError("TrainLoop.run: could not allocate GEMM work buffers")
        return got
