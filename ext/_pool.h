/* The kernel's parallel path: helper threads that claim blocks of rows.
 *
 * A job is n_blocks independent blocks, run as fn(ctx, block). The calling thread
 * opens the job, wakes the sleeping helpers, and claims blocks itself from a shared
 * ticket, as every awake helper does. When no block is left it waits only for the
 * blocks that helpers have claimed and are still running, never for a helper that
 * has not started: a helper that is not scheduled until the job is over (the other
 * cores are busy) finds nothing to claim, and goes back to sleep.
 *
 * That is the point of this file. An OpenMP parallel region ends in a barrier that
 * waits for every thread of the team, so on a machine whose other cores are busy
 * a call waits a scheduler time slice (milliseconds) for a helper that would have
 * finished its share in microseconds. onnxruntime's thread pool works like this one.
 *
 * Helpers are started lazily (at the first parallel job, so a process that forks
 * workers before scoring starts none) and never exit. An idle helper polls for the
 * next job for SW_POOL_SPIN_NS, then sleeps on a condition variable: it does not
 * spin for long on a core another process could use. When every other core is busy,
 * Linux wakes a sleeping helper on the caller's own CPU, where it can only take
 * turns with the caller (measured: cold two-thread calls 1.5x slower than one
 * thread); a helper that finds itself on the caller's CPU (Linux: sched_getcpu)
 * leaves the job to the caller and goes back to sleep. One caller owns the pool at a
 * time; a concurrent caller scores its rows on its own thread rather than wait.
 * After fork() the child forgets the parent's helpers and starts its own.
 *
 * Compiled when the kernel is built with OpenMP (the build's "parallel or not"
 * switch; -fopenmp also links the threads library) on a POSIX system with GCC-style
 * atomics; elsewhere SW_HAVE_POOL is 0 and the kernel uses OpenMP's prange.
 */
#ifndef SCOREWIRE_POOL_H
#define SCOREWIRE_POOL_H

#include <stddef.h>
#include <stdint.h>

#if defined(_OPENMP) && defined(__GNUC__) && (defined(__unix__) || defined(__APPLE__))
#define SW_HAVE_POOL 1
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#else
#define SW_HAVE_POOL 0
#endif

typedef void (*sw_block_fn)(void* ctx, ptrdiff_t block);

#if SW_HAVE_POOL

enum { SW_POOL_MAX_HELPERS = 63 };

/* an idle helper polls for a new job this long before it sleeps */
#ifndef SW_POOL_SPIN_NS
#define SW_POOL_SPIN_NS 50000
#endif

/* The ticket: generation (high 40 bits) and next block to claim (low 24 bits).
 * SW_POOL_CLOSED as the block means "being set up, do not claim yet". */
#define SW_POOL_BLOCK_BITS 24
#define SW_POOL_MAX_BLOCKS (((ptrdiff_t)1 << SW_POOL_BLOCK_BITS) - 1)
#define SW_POOL_CLOSED ((uint64_t)SW_POOL_MAX_BLOCKS)
#define SW_POOL_GEN(t) ((t) >> SW_POOL_BLOCK_BITS)
#define SW_POOL_BLOCK(t) ((t) & SW_POOL_CLOSED)

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;              /* helpers running (written under mu, atomic) */
    int sleepers;             /* helpers waiting on cv (atomic) */
    int busy;                 /* a caller owns the pool (atomic flag) */
    int use;                  /* 0: callers use OpenMP instead (tests) */
    uint64_t ticket;          /* atomic, see above */
    /* the open job: written by its caller while the ticket is CLOSED (atomic) */
    sw_block_fn fn;
    void* ctx;
    ptrdiff_t n_blocks;
    int n_helpers;            /* helpers 0 .. n_helpers - 1 may join */
    int caller_cpu;           /* the CPU the caller started on, -1 if unknown */
    ptrdiff_t done;           /* blocks finished by helpers (atomic) */
} sw_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 1, 0,
             NULL, NULL, 0, 0, -1, 0};

static inline void sw_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* the CPU this thread runs on, -1 where unknown (Python.h defines _GNU_SOURCE) */
static inline int sw_cpu(void) {
#if defined(__linux__) && defined(_GNU_SOURCE)
    return sched_getcpu();
#else
    return -1;
#endif
}

static inline int64_t sw_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The next block of generation g, or -1 when it has none left (or is over). */
static inline ptrdiff_t sw_pool_claim(uint64_t g, ptrdiff_t n_blocks) {
    uint64_t t = __atomic_load_n(&sw_pool.ticket, __ATOMIC_ACQUIRE);
    for (;;) {
        if (SW_POOL_GEN(t) != g || (ptrdiff_t)SW_POOL_BLOCK(t) >= n_blocks) return -1;
        if (__atomic_compare_exchange_n(&sw_pool.ticket, &t, t + 1, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return (ptrdiff_t)SW_POOL_BLOCK(t);
    }
}

/* Help with generation g's job if it is open to helper `id`; return when no block
 * is left: 1 when this helper left the job because it runs on the caller's CPU.
 * The job's fields are read before the claim and are only trusted because the
 * claim's compare-and-swap then finds the ticket still in generation g: a caller
 * writes the next job's fields only after moving the ticket to the next generation
 * (a seqlock). */
static int sw_pool_help(int id, uint64_t g) {
    sw_block_fn fn = __atomic_load_n(&sw_pool.fn, __ATOMIC_RELAXED);
    void* ctx = __atomic_load_n(&sw_pool.ctx, __ATOMIC_RELAXED);
    ptrdiff_t n_blocks = __atomic_load_n(&sw_pool.n_blocks, __ATOMIC_RELAXED);
    int n_helpers = __atomic_load_n(&sw_pool.n_helpers, __ATOMIC_RELAXED);
    int caller_cpu = __atomic_load_n(&sw_pool.caller_cpu, __ATOMIC_RELAXED);
    ptrdiff_t b;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (id >= n_helpers) return 0;
    for (;;) {
        if (caller_cpu >= 0 && sw_cpu() == caller_cpu) return 1;
        if ((b = sw_pool_claim(g, n_blocks)) < 0) return 0;
        fn(ctx, b);
        __atomic_fetch_add(&sw_pool.done, 1, __ATOMIC_RELEASE);
    }
}

static void* sw_pool_helper(void* arg) {
    int id = (int)(intptr_t)arg;
    uint64_t seen = (uint64_t)-1;  /* the last generation this helper has finished */
    int64_t idle_since = sw_now_ns();
    unsigned spins = 0;
    for (;;) {
        uint64_t t = __atomic_load_n(&sw_pool.ticket, __ATOMIC_ACQUIRE);
        uint64_t g = SW_POOL_GEN(t);
        if (g != seen) {
            if (SW_POOL_BLOCK(t) == SW_POOL_CLOSED) {  /* the caller is still setting up */
                sw_cpu_relax();
                continue;
            }
            /* on the caller's CPU: sleep at once (spinning would take its turns) */
            idle_since = sw_pool_help(id, g) ? 0 : sw_now_ns();
            seen = g;
            spins = 0;
            continue;
        }
        if (++spins % 64 != 0 || sw_now_ns() - idle_since < SW_POOL_SPIN_NS) {
            sw_cpu_relax();
            continue;
        }
        /* sleep until the generation changes. sleepers is raised before the ticket is
           read again, and a caller reads sleepers after it opens a job (both seq_cst),
           so either the caller sees a sleeper and signals, or this thread sees the job */
        pthread_mutex_lock(&sw_pool.mu);
        __atomic_fetch_add(&sw_pool.sleepers, 1, __ATOMIC_SEQ_CST);
        while (SW_POOL_GEN(__atomic_load_n(&sw_pool.ticket, __ATOMIC_SEQ_CST)) == seen)
            pthread_cond_wait(&sw_pool.cv, &sw_pool.mu);
        __atomic_fetch_sub(&sw_pool.sleepers, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&sw_pool.mu);
    }
    return NULL;
}

/* In a child after fork(): the parent's helpers do not exist here. */
static void sw_pool_atfork_child(void) {
    pthread_mutex_init(&sw_pool.mu, NULL);
    pthread_cond_init(&sw_pool.cv, NULL);
    sw_pool.started = 0;
    sw_pool.sleepers = 0;
    sw_pool.busy = 0;
}

/* Start helpers until there are n; returns how many there are. Helpers block every
 * signal (they inherit the mask they are created with): signals go to Python's
 * threads. */
static int sw_pool_start(int n) {
    static int atfork_registered = 0;
    pthread_attr_t attr;
    pthread_t th;
    sigset_t all, old;
    if (n > SW_POOL_MAX_HELPERS) n = SW_POOL_MAX_HELPERS;
    if (__atomic_load_n(&sw_pool.started, __ATOMIC_ACQUIRE) >= n) return n;
    pthread_mutex_lock(&sw_pool.mu);
    if (!atfork_registered) {
        atfork_registered = pthread_atfork(NULL, NULL, sw_pool_atfork_child) == 0;
    }
    if (atfork_registered && sw_pool.started < n && pthread_attr_init(&attr) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        while (sw_pool.started < n &&
               pthread_create(&th, &attr, sw_pool_helper, (void*)(intptr_t)sw_pool.started) == 0)
            __atomic_store_n(&sw_pool.started, sw_pool.started + 1, __ATOMIC_RELEASE);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    n = sw_pool.started;
    pthread_mutex_unlock(&sw_pool.mu);
    return n;
}

/* 1 when parallel jobs go to this pool, 0 when the kernel uses OpenMP's prange */
static int sw_pool_enabled(void) {
    return __atomic_load_n(&sw_pool.use, __ATOMIC_RELAXED);
}

/* Run fn(ctx, b) for every b < n_blocks, on this thread and up to n_helpers helpers.
 * Returns 0 without running anything when another caller owns the pool (or n_blocks
 * is too large): the caller then runs the blocks itself, rather than wait. */
static int sw_pool_run(sw_block_fn fn, void* ctx, ptrdiff_t n_blocks, int n_helpers) {
    uint64_t g;
    ptrdiff_t b, mine = 0;
    unsigned spins = 0;
    if (n_blocks >= SW_POOL_MAX_BLOCKS) return 0;
    if (__atomic_exchange_n(&sw_pool.busy, 1, __ATOMIC_ACQUIRE)) return 0;
    n_helpers = sw_pool_start(n_helpers);
    /* open generation g: close the ticket, write the job, then open it (seqlock) */
    g = SW_POOL_GEN(__atomic_load_n(&sw_pool.ticket, __ATOMIC_RELAXED)) + 1;
    __atomic_store_n(&sw_pool.ticket, (g << SW_POOL_BLOCK_BITS) | SW_POOL_CLOSED,
                     __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&sw_pool.fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&sw_pool.ctx, ctx, __ATOMIC_RELAXED);
    __atomic_store_n(&sw_pool.n_blocks, n_blocks, __ATOMIC_RELAXED);
    __atomic_store_n(&sw_pool.n_helpers, n_helpers, __ATOMIC_RELAXED);
    __atomic_store_n(&sw_pool.caller_cpu, sw_cpu(), __ATOMIC_RELAXED);
    __atomic_store_n(&sw_pool.done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&sw_pool.ticket, g << SW_POOL_BLOCK_BITS, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sw_pool.sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&sw_pool.mu);
        pthread_cond_broadcast(&sw_pool.cv);
        pthread_mutex_unlock(&sw_pool.mu);
    }
    while ((b = sw_pool_claim(g, n_blocks)) >= 0) {
        fn(ctx, b);
        mine++;
    }
    /* every block is claimed; wait for those still running on helpers */
    while (__atomic_load_n(&sw_pool.done, __ATOMIC_ACQUIRE) + mine < n_blocks) {
        if (++spins % 256 == 0) sched_yield();  /* a preempted helper may need this core */
        else sw_cpu_relax();
    }
    __atomic_store_n(&sw_pool.busy, 0, __ATOMIC_RELEASE);
    return 1;
}

static int sw_pool_set_use(int on) {
    return __atomic_exchange_n(&sw_pool.use, on ? 1 : 0, __ATOMIC_RELAXED);
}

static int sw_pool_started(void) {
    return __atomic_load_n(&sw_pool.started, __ATOMIC_RELAXED);
}

#else /* !SW_HAVE_POOL */

static int sw_pool_enabled(void) { return 0; }
static inline int sw_pool_run(sw_block_fn fn, void* ctx, ptrdiff_t n_blocks, int n_helpers) {
    (void)fn; (void)ctx; (void)n_blocks; (void)n_helpers;
    return 0;
}
static int sw_pool_set_use(int on) { (void)on; return 0; }
static int sw_pool_started(void) { return 0; }

#endif /* SW_HAVE_POOL */
#endif /* SCOREWIRE_POOL_H */
