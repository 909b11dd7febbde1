/* The fault gate in C, for the requests the cython transport's workers answer themselves
 * (READ, WRITE, FLUSH, FSYNC).
 *
 * While rules exist, every open file has a view: for each of the four methods, either no
 * rule touches it (the worker serves it as if no rule existed), or every rule that does is
 * one C can decide (errno, probability, corrupt, short; the rules are listed in the view),
 * or some rule needs the event loop (a delay: a worker never sleeps; a max_hits budget,
 * which Python counts) and the request is queued to the trio thread like any other.
 *
 * Views are immutable. The file-system logic compiles one per open at open time and after
 * every rule change and publishes it with one atomic store (df_view_publish), so a rule
 * added while a file is open fires on that fd's next request. An old view is freed once no
 * worker can still be reading it: each worker's sequence number is odd while it handles a
 * request (quiescent-state reclamation), and the reclaimer waits until every worker has
 * been even or has moved on since the swap.
 */
#ifndef CHAOSFS_DEVFUSE_GATE_H
#define CHAOSFS_DEVFUSE_GATE_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define DF_HOT_READ 1
#define DF_HOT_WRITE 2
#define DF_HOT_FLUSH 4
#define DF_HOT_FSYNC 8
#define DF_HOT_LOCK 16         /* GETLK, SETLK, SETLKW: answered here only if no rule touches them */
#define DF_HOT_ALL 31
#define DF_MAX_CHOICES 48
#define DF_MAX_WORKERS 64
#define DF_HIT_SLOTS 4096      /* per-rule hit counters, indexed by a rule's slot */

enum { DF_CORRUPT_NONE, DF_CORRUPT_ZERO, DF_CORRUPT_RANDOM, DF_CORRUPT_BITFLIP };

/* One rule as a worker applies it (chaosfs/faults/engine.py's verdict_of, for one method). */
struct df_crule {
    uint8_t methods;            /* DF_HOT_* bits it applies to */
    uint8_t corrupt_mode;       /* DF_CORRUPT_*; read/write only */
    uint16_t nchoices[4];       /* random errno: the choices per method (bit index) */
    uint32_t slot;              /* its hit counter */
    uint64_t threshold;         /* fires when a 32-bit draw < threshold (1<<32: always) */
    int32_t err;                /* a fixed errno, or 0 */
    uint32_t corrupt_len, corrupt_occ;
    double short_frac;          /* keep this fraction of a read/write (0: off) */
    double expires;             /* CLOCK_MONOTONIC seconds; 0: never */
    int16_t choices[4][DF_MAX_CHOICES];
};

struct df_view {
    struct df_view *next_retired;
    uint8_t direct;             /* methods no rule touches */
    uint8_t in_c;               /* methods whose rules are all decided here */
    uint32_t n;
    struct df_crule r[];
};

/* What the matching rules decided for one request. */
struct df_verdict {
    int err;
    uint8_t corrupt_mode;       /* copied from the rule: the view may be freed after */
    uint32_t corrupt_len, corrupt_occ;
    double short_frac;
};

struct df_gate {
    struct df_view **views;     /* per fh (== backing fd); NULL: every hot request to Python */
    size_t nviews;
    uint64_t *hits;             /* [DF_HIT_SLOTS] */
    /* reclamation: per-worker sequence numbers, one cache line each */
    struct { uint64_t v; char pad[56]; } seq[DF_MAX_WORKERS];
    int nworkers;
    pthread_mutex_t lock;       /* publishers (trio and gRPC threads) and the retired list */
    struct df_view *retired;
    uint64_t retired_seen[DF_MAX_WORKERS];
};

/* xorshift64*, one state per worker thread, seeded from the kernel's CSPRNG */
static __thread uint64_t df_rng_state;

static inline uint32_t df_rand32(void)
{
    uint64_t x = df_rng_state;
    if (!x) {
        if (getrandom(&x, sizeof x, 0) != sizeof x || !x)
            x = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&x;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    df_rng_state = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

static inline uint32_t df_below(uint32_t n)  /* uniform in [0, n), n > 0 */
{
    return (uint32_t)(((uint64_t)df_rand32() * n) >> 32);
}

static inline int df_bit_index(int bit)
{
    return bit == DF_HOT_READ ? 0 : bit == DF_HOT_WRITE ? 1 : bit == DF_HOT_FLUSH ? 2 : 3;
}

/* Roll every rule of the view that applies to `bit`; combine the ones that fire like
 * verdict_of (first errno wins, first corrupt, first short). Returns 1 if any fired. */
static inline int df_decide(struct df_gate *g, const struct df_view *v, int bit, double now,
                            struct df_verdict *out)
{
    int fired = 0, bi = df_bit_index(bit);
    out->err = 0;
    out->corrupt_mode = DF_CORRUPT_NONE;
    out->short_frac = 0;
    for (uint32_t i = 0; i < v->n; i++) {
        const struct df_crule *r = &v->r[i];
        if (!(r->methods & bit) || (r->expires && now >= r->expires))
            continue;
        if (r->threshold <= 0xFFFFFFFFull && df_rand32() >= r->threshold)
            continue;
        fired = 1;
        __atomic_fetch_add(&g->hits[r->slot % DF_HIT_SLOTS], 1, __ATOMIC_RELAXED);
        if (!out->err) {
            if (r->nchoices[bi])
                out->err = r->choices[bi][df_below(r->nchoices[bi])];
            else if (r->err)
                out->err = r->err;
        }
        if (bit == DF_HOT_READ || bit == DF_HOT_WRITE) {
            if (r->corrupt_mode != DF_CORRUPT_NONE && out->corrupt_mode == DF_CORRUPT_NONE) {
                out->corrupt_mode = r->corrupt_mode;
                out->corrupt_len = r->corrupt_len;
                out->corrupt_occ = r->corrupt_occ;
            }
            if (r->short_frac > 0 && !(out->short_frac > 0))
                out->short_frac = r->short_frac;
        }
    }
    return fired;
}

/* `n` kept of a read/write of `len` bytes under a short action (never 0 of a non-empty op) */
static inline size_t df_shorten(size_t len, double frac)
{
    if (!(frac > 0) || len <= 1)
        return len;
    size_t n = (size_t)((double)len * frac);
    return n < 1 ? 1 : n;
}

/* Corrupt `len` bytes in place, as chaosfs/faults/rules.py's Corrupt.apply does. */
static inline void df_corrupt(const struct df_verdict *r, unsigned char *p, size_t len)
{
    if (!len)
        return;
    for (uint32_t k = 0; k < r->corrupt_occ; k++) {
        size_t n = r->corrupt_len < len ? r->corrupt_len : len;
        size_t start = (size_t)(((uint64_t)df_rand32() * (uint64_t)(len - n + 1)) >> 32);
        for (size_t j = 0; j < n; j++) {
            unsigned char *b = &p[start + j];
            if (r->corrupt_mode == DF_CORRUPT_ZERO) {
                *b = 0;
            } else if (r->corrupt_mode == DF_CORRUPT_RANDOM) {
                unsigned char c = (unsigned char)df_rand32();
                *b = c == *b ? (unsigned char)(c ^ 0xFF) : c;  /* never a no-op */
            } else {
                *b ^= (unsigned char)(1u << df_below(8));
            }
        }
    }
}

/* ---- publication and reclamation ------------------------------------------------------ */

/* `hits`: DF_HIT_SLOTS counters owned by the caller (the Python FaultGate's). */
static int df_gate_init(struct df_gate *g, size_t nviews, uint64_t *hits)
{
    memset(g, 0, sizeof *g);
    g->views = calloc(nviews, sizeof *g->views);
    if (!g->views)
        return -1;
    g->hits = hits;
    g->nviews = nviews;
    pthread_mutex_init(&g->lock, NULL);
    return 0;
}

/* A worker entering / leaving a request's use of the views. */
static inline void df_gate_enter(struct df_gate *g, int w)
{
    __atomic_store_n(&g->seq[w].v, g->seq[w].v + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  /* pairs with the fence in df_reclaim */
}

static inline void df_gate_leave(struct df_gate *g, int w)
{
    __atomic_store_n(&g->seq[w].v, g->seq[w].v + 1, __ATOMIC_RELEASE);
}

static inline const struct df_view *df_view_of(struct df_gate *g, uint64_t fh)
{
    return fh < g->nviews ? __atomic_load_n(&g->views[fh], __ATOMIC_ACQUIRE) : NULL;
}

/* Free the retired views if no worker can still hold one: every worker that was inside a
 * request at the last snapshot (odd sequence number) has left it since. A later snapshot
 * is a conservative stand-in for every earlier retirement's. Caller holds g->lock. */
static void df_reclaim_locked(struct df_gate *g)
{
    if (!g->retired)
        return;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    for (int w = 0; w < g->nworkers; w++) {
        uint64_t now = __atomic_load_n(&g->seq[w].v, __ATOMIC_ACQUIRE);
        if ((g->retired_seen[w] & 1) && now == g->retired_seen[w])
            return;  /* still inside the request it was in at the snapshot */
    }
    struct df_view *v = g->retired;
    g->retired = NULL;
    while (v) {
        struct df_view *next = v->next_retired;
        free(v);
        v = next;
    }
}

/* Swap in `v` (or NULL) for fh; the old view is freed once no worker can hold it.
 * Returns 0, or -1 if fh is out of range (then v is freed). */
static int df_view_publish(struct df_gate *g, uint64_t fh, struct df_view *v)
{
    if (fh >= g->nviews) {
        free(v);
        return -1;
    }
    pthread_mutex_lock(&g->lock);
    struct df_view *old = __atomic_exchange_n(&g->views[fh], v, __ATOMIC_SEQ_CST);
    if (old) {
        df_reclaim_locked(g);  /* the older ones, against the previous snapshot */
        old->next_retired = g->retired;
        g->retired = old;
        /* Pairs with df_gate_enter's fence: a worker seen even here loads the new view. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        for (int w = 0; w < g->nworkers; w++)
            g->retired_seen[w] = __atomic_load_n(&g->seq[w].v, __ATOMIC_ACQUIRE);
        df_reclaim_locked(g);  /* at once if no worker is inside a request */
    }
    pthread_mutex_unlock(&g->lock);
    return 0;
}

/* Called now and then by the trio thread (and at every publish) so retired views do not
 * wait for the next rule change. */
static void df_gate_tick(struct df_gate *g)
{
    pthread_mutex_lock(&g->lock);
    df_reclaim_locked(g);
    pthread_mutex_unlock(&g->lock);
}

/* Views live as long as the session: one transport per process, freed with it. */

#endif
