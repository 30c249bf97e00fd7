/* runtime.h — what the kernels need from the machine: OpenMP (or its absence),
 * per-thread work buffers that live across calls, and fork safety. (The CPU's
 * features and the choice of SIMD kernels are cpu_dispatch.h's.)
 */
#ifndef PYNEURO_RUNTIME_H
#define PYNEURO_RUNTIME_H
#include <stdint.h>

#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <limits.h>

/* OpenMP's current maximum (OMP_NUM_THREADS, lowered by threadpoolctl through
 * omp_set_num_threads) and its hard thread limit (OMP_THREAD_LIMIT). */
#ifdef _OPENMP
#include <omp.h>
static int pn_openmp_enabled(void) { return 1; }
static int pn_omp_max_threads(void) { return omp_get_max_threads(); }
static int pn_omp_thread_limit(void) { return omp_get_thread_limit(); }
/* Inside one parallel region (a thread team running a whole computation, train_loop.pxi):
 * the team's size, and a barrier every thread of it must reach before any goes on. */
static int pn_team_size(void) { return omp_get_num_threads(); }
static void pn_barrier(void) {
    #pragma omp barrier
}
#else
static int pn_openmp_enabled(void) { return 0; }
static int pn_omp_max_threads(void) { return 1; }
static int pn_omp_thread_limit(void) { return INT_MAX; }
static int pn_team_size(void) { return 1; }
static void pn_barrier(void) {}
#endif

/* ---- row blocks shared by a thread team ------------------------------------------
 * A product whose row blocks a team shares as they come (gemm.pxi): thread t first takes
 * the blocks of its own range (the contiguous share a static split gives it) from the
 * front, then, its range empty, the other threads' from the back. So a block changes
 * core only at the end, where the cores' speeds differ: the lines of C (and of W, for an
 * update) mostly stay in the cache of the core that wrote them. ranges[t] = lo | hi << 32,
 * set by t (pn_team_own) at the start of each round of blocks (a KC slice of a product);
 * a barrier ends each round, every range then empty (zeroed before a run's first). A
 * thread that looks at a range before its owner has set it sees it empty and leaves
 * those blocks to the owner. */
#define PN_TEAM_MAX 64
static int pn_team_thread(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static void pn_team_own(uint64_t *ranges, long blocks) {
    int t = pn_team_thread(), nt = pn_team_size();
    uint64_t lo = (uint64_t)(t * blocks / nt), hi = (uint64_t)((t + 1) * blocks / nt);
    __atomic_store_n(&ranges[t], lo | hi << 32, __ATOMIC_RELAXED);
}
static long pn_team_next(uint64_t *ranges) {       /* the next block, or −1: none left */
    int t = pn_team_thread(), nt = pn_team_size();
    for (int k = 0; k < nt; k++) {
        int u = (t + k) % nt;
        uint64_t v = __atomic_load_n(&ranges[u], __ATOMIC_RELAXED), lo, hi;
        while ((lo = v & 0xffffffffu) < (hi = v >> 32)) {
            uint64_t w = k == 0 ? (lo + 1) | hi << 32 : lo | (hi - 1) << 32;
            if (__atomic_compare_exchange_n(&ranges[u], &v, w, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                return (long)(k == 0 ? lo : hi - 1);
        }
    }
    return -1;
}

/* ---- per-thread work buffers -------------------------------------------------
 * pn_workspace(slot, bytes) returns a 64-byte aligned buffer of at least `bytes`
 * that belongs to the calling OS thread (an OpenMP worker or a Python thread).
 * It grows when asked for more and is reused by every later call, so the hot
 * loops allocate nothing once warm. Buffers are freed when their thread exits.
 * Returns NULL when memory is exhausted.
 */
enum {                      /* the slots, one per kind of buffer */
    PN_WS_PACK_A,           /* GEMM: packed A block          (gemm.pxi)        */
    PN_WS_PACK_B,           /* GEMM: packed B slab           (gemm.pxi)        */
    PN_WS_NORM,             /* per-chunk sums of ‖g‖²        (optim.pxi)       */
    PN_WS_CHAIN,            /* InferenceChain's activations  (inference_chain.pxi) */
    PN_WS_CHAIN_ROWS,       /* InferenceChain: all rows before its dense tail    */
    PN_WS_CONV_IMAGE,       /* one zero-padded input image   (conv.pxi)        */
    PN_WS_CONV_COLS,        /* one sample's unfolded columns (conv.pxi)        */
    PN_WS_ROW_SLICES,       /* GEMM of one row: a product per K slice (gemm.pxi) */
    PN_WORKSPACE_SLOTS
};

typedef struct {
    void *ptr[PN_WORKSPACE_SLOTS];
    size_t size[PN_WORKSPACE_SLOTS];
} pn_workspace_t;

static pthread_key_t pn_workspace_key;
static pthread_once_t pn_workspace_once = PTHREAD_ONCE_INIT;

static void pn_workspace_free(void *p) {
    pn_workspace_t *ws = (pn_workspace_t *)p;
    for (int i = 0; i < PN_WORKSPACE_SLOTS; i++) free(ws->ptr[i]);
    free(ws);
}

static void pn_workspace_init_key(void) { pthread_key_create(&pn_workspace_key, pn_workspace_free); }

static void *pn_workspace(int slot, size_t bytes) {
    pthread_once(&pn_workspace_once, pn_workspace_init_key);
    pn_workspace_t *ws = (pn_workspace_t *)pthread_getspecific(pn_workspace_key);
    if (ws == NULL) {
        ws = (pn_workspace_t *)calloc(1, sizeof(pn_workspace_t));
        if (ws == NULL) return NULL;
        pthread_setspecific(pn_workspace_key, ws);
    }
    if (ws->size[slot] < bytes) {
        size_t want = (bytes + 63) & ~(size_t)63;
        void *p = NULL;
        if (posix_memalign(&p, 64, want) != 0) return NULL;
        free(ws->ptr[slot]);
        ws->ptr[slot] = p;
        ws->size[slot] = want;
    }
    return ws->ptr[slot];
}

/* ---- fork safety -------------------------------------------------------------
 * GNU OpenMP's thread pool does not survive fork(): a child that enters a parallel
 * region the parent's pool served can wait forever for threads that are not
 * there. A child of fork (multiprocessing's default start method on Linux) runs
 * every kernel on one thread instead; pn_watch_fork() arms this at import.
 */
static volatile int pn_forked = 0;
static void pn_mark_forked(void) { pn_forked = 1; }
static void pn_watch_fork(void) { pthread_atfork(NULL, NULL, pn_mark_forked); }

#endif
