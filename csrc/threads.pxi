# threads.pxi — how many threads a kernel runs on, and each thread's work buffers.
#
#   _nthreads()          min(set_num_threads(n), OpenMP's current maximum): OMP_NUM_THREADS,
#                        lowered by threadpoolctl, is a ceiling an embedding application sets
#                        and pyneuro obeys whatever was called before; 1 without OpenMP and in
#                        a child of fork
#   _nthreads_for(work)  1 below PARALLEL_MIN_WORK elements, else _nthreads()
#   pn_workspace(slot, bytes)   the calling thread's buffer for that slot, kept across calls
#   team_share(n, tid, nt)      thread tid's share [a, b) of n items in a team of nt threads
#                        (one parallel region running many phases: pn_barrier() between them)
#
# Results never depend on the thread count: every kernel splits its reductions in a
# way fixed by the sizes alone (DESIGN.md, rule 3); this number only sets the speed.
# uses: nothing (runtime.h underneath).

cdef extern from "runtime.h" nogil:
    int pn_openmp_enabled()
    int pn_omp_max_threads()
    int pn_omp_thread_limit()
    int pn_forked
    void pn_watch_fork()
    int pn_team_size()
    void pn_barrier()
    enum: PN_TEAM_MAX
    void pn_team_own(uint64_t *ranges, long blocks)
    long pn_team_next(uint64_t *ranges)
    enum:
        PN_WS_PACK_A
        PN_WS_PACK_B
        PN_WS_NORM
        PN_WS_CHAIN
        PN_WS_CHAIN_ROWS
        PN_WS_CONV_IMAGE
        PN_WS_CONV_COLS
        PN_WS_ROW_SLICES
    void *pn_workspace(int slot, size_t nbytes)


# One process-wide setting. 0 means "follow OpenMP": OMP_NUM_THREADS and
# threadpoolctl's limits, as omp_get_max_threads() reports them; a set number can only
# choose fewer than that.
cdef int _user_threads = 0


def max_threads():
    """The most threads set_num_threads accepts: OpenMP's thread limit, and 4 × the CPUs
    this process may run on (more only oversubscribes them; far more exhausts the runtime)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(min(pn_omp_thread_limit(), 4 * cpus))


def openmp_enabled():
    """True when the core was built with OpenMP (kernels can use several threads)."""
    return bool(pn_openmp_enabled())


def set_num_threads(n):
    """Set the number of threads every kernel uses (process-wide). Results do not depend on it.

    Parameters
    ----------
    n : int or None
        Threads, 1 ≤ n ≤ max_threads(); None returns to the default: OpenMP's, i.e.
        OMP_NUM_THREADS or threadpoolctl's limit, else all cores. OpenMP's current maximum
        stays a ceiling: under threadpool_limits(1) the kernels run on one thread.
    """
    global _user_threads
    if n is None:
        _user_threads = 0
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be a positive int or None, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if n > max_threads():
        raise ValueError(f"set_num_threads: n must be <= {max_threads()} (OpenMP's thread limit and 4 x the "
                         f"CPUs this process may use), got {n}")
    _user_threads = <int>n


def _threads_chosen():
    """Whether set_num_threads chose a thread count (pyneuro.distributed respects it)."""
    return _user_threads > 0


def get_num_threads():
    """The number of threads the kernels use now (1 when built without OpenMP, and in a
    process made by fork, where GNU OpenMP's thread pool cannot be used)."""
    return _nthreads()


cdef enum:
    PARALLEL_MIN_WORK = 32768   # elements: below this a kernel runs on one thread (a fork-join
                                # costs more than the work; on a busy machine, much more)


cdef inline int _nthreads_for(Py_ssize_t work) noexcept nogil:
    """Threads for an elementwise or row kernel over `work` elements."""
    return 1 if work < PARALLEL_MIN_WORK else _nthreads()


cdef struct Share:
    Py_ssize_t a, b


cdef inline Share team_share(Py_ssize_t n, int tid, int nt) noexcept nogil:
    """Items [a, b) of n for thread tid of nt: contiguous, in thread order, sizes within one."""
    cdef Share s
    s.a, s.b = n * tid // nt, n * (tid + 1) // nt
    return s


cdef inline int _nthreads() noexcept nogil:
    if not pn_openmp_enabled() or pn_forked:   # a child of fork: one thread (runtime.h)
        return 1
    cdef int ceiling = pn_omp_max_threads()
    return _user_threads if 0 < _user_threads < ceiling else ceiling


pn_watch_fork()
