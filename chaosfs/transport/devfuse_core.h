/*
 * The /dev/fuse transport's worker threads: plain C; Python only through py_take.
 *
 * Each worker blocks in read(2) on its own clone of the session fd (FUSE_DEV_IOC_CLONE), so
 * requests are spread over threads by the kernel. A worker answers GETATTR for the inodes
 * the file-system logic offered (devfuse_attrs.h), and READ, WRITE, FLUSH, FSYNC and the
 * lock requests when the file handle is one the daemon issued and either no fault rule
 * exists (the gate's `active` flag, read without a lock: the control plane publishes a
 * complete rule table before it sets the flag) or the open's view (devfuse_gate.h) says
 * no rule touches the method or every rule that does is decided here; every other request
 * is answered by the Operations logic: on the worker itself (py_take) when its handler
 * cannot wait, else copied onto a queue that the trio thread drains (an eventfd wakes it).
 * A reply goes back on the fd its request came from: a clone only accepts replies to the
 * requests read from it.
 */
#ifndef CHAOSFS_DEVFUSE_CORE_H
#define CHAOSFS_DEVFUSE_CORE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/fuse.h>

#include "devfuse_attrs.h"
#include "devfuse_gate.h"
#include "devfuse_locks.h"
#include "setid.h"

#define DF_BUCKETS 32
#define DF_METHODS 48
/* Method ids (chaosfs/faults/methods.py's order; checked at import by _devfuse.pyx). */
#define DF_M_READ 1
#define DF_M_WRITE 2
#define DF_M_FSYNC 6
#define DF_M_FLUSH 7
#define DF_M_GETATTR 10
#define DF_M_GETLK 15
#define DF_M_SETLK 16
#define DF_M_SETLKW 17

struct df_ring_ent;    /* devfuse_uring.h */
struct df_uq;

struct df_msg {
    struct df_msg *next;
    int fd;          /* the fd the request came from: its reply goes there */
    uint32_t len;
    /* A request that came in a ring entry (-fuse-uring) is answered by committing that entry,
     * not by a write on fd; the entry holds the kernel's request until then, so it must be
     * answered exactly once (df_msg_reply, devfuse_uring.h). NULL: it came from /dev/fuse. */
    struct df_ring_ent *ent;
    int replied;
    char data[];     /* the request, header first (as read(2) gives it); 8-byte aligned */
};

struct df_server {
    int dev;                       /* the session fd (mount's fd=) */
    int nworkers;
    int fds[DF_MAX_WORKERS];
    pthread_t threads[DF_MAX_WORKERS];
    int started;
    size_t bufsize;                /* max_write + room for the headers */
    int killpriv_v2;
    /* the fault gate's view (FaultGate's own fields, kept alive by the Python side) */
    const int *gate_active;
    const unsigned long long *gate_epoch;  /* moves on every rule change and rename */
    unsigned long long *counts, *errors, *hist;  /* hist: [DF_METHODS][DF_BUCKETS] */
    unsigned long long *injected;  /* the part of errors a rule injected (df_record_injected) */
    /* file handles the daemon issued (fh == backing fd): 1 file, 2 directory */
    unsigned char *issued;
    struct df_gate gate;           /* per-open views, consulted only while rules exist */
    struct df_locks locks;         /* POSIX locks on the backing files, per (inode, owner) */
    struct df_attrs attrs;         /* inodes whose GETATTR is answered here */
    size_t nissued;
    /* to the trio thread */
    pthread_mutex_t qlock;
    struct df_msg *qhead, *qtail;
    int efd;
    int ended;                     /* workers that saw the session end */
    int wbase;                     /* gate slot of worker 0 (the ring queue threads take 0..) */
    /* A request for the Operations logic that the worker which read it may serve itself
     * (with the GIL, under the transport's handlers lock) instead of waking the trio
     * thread: py_take returns 1 if it took the message (and answered it), 0 to queue it.
     * NULL: every such request is queued. */
    int (*py_take)(struct df_server *s, struct df_msg *m);
    /* A worker's last call as it ends: lets go of the Python thread state py_take made it
     * keep, while py_keep says the interpreter is still there (close() clears it once the
     * joins are done: a worker df_join gave up on leaves its state to the process exit). */
    void (*py_exit)(void);
    int py_keep;
    void *py_owner;
    const int *gate_may_wait;      /* FaultGate.may_wait: some rule can make a request wait */
    int detached;                  /* workers df_join gave up on (still running) */
    int trio_busy;                 /* the trio thread runs tasks (not waiting for I/O): it is
                                    * awake anyway, so its queue costs no wake-up */
    /* FORGETs, to the trio thread without a message each (df_forget) */
    pthread_mutex_t flock;
    struct fuse_forget_one *forgets;
    size_t nforgets, forgets_cap;
    /* FUSE over io_uring (devfuse_uring.h): one queue per possible CPU, 0 when off */
    int nq;
    struct df_uq *uq;
};

static inline double df_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline void df_record(struct df_server *s, int method, double t0, int failed)
{
    double us = (df_now() - t0) * 1e6, edge = 1.0;
    int b = 0;
    while (us >= edge && b < DF_BUCKETS - 1) {
        edge *= 2.0;
        b++;
    }
    __atomic_fetch_add(&s->counts[method], 1, __ATOMIC_RELAXED);
    if (failed)
        __atomic_fetch_add(&s->errors[method], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->hist[method * DF_BUCKETS + b], 1, __ATOMIC_RELAXED);
}

/* A request answered with the errno a rule gave it: counted as failed and as injected. Only
 * the fired-errno branches call it, so a request no rule touches never reads this counter. */
static inline void df_record_injected(struct df_server *s, int method, double t0)
{
    df_record(s, method, t0, 1);
    __atomic_fetch_add(&s->injected[method], 1, __ATOMIC_RELAXED);
}

static inline int df_issued(struct df_server *s, uint64_t fh, int kind)
{
    return fh < s->nissued && __atomic_load_n(&s->issued[fh], __ATOMIC_ACQUIRE) == kind;
}

/* Whether worker `w` answers this request itself: -1 no (to the trio thread), 0 yes with
 * no fault, 1 yes and the rules fired (`vd` says how). */
static inline int df_gate(struct df_server *s, int w, uint64_t fh, int bit, double now,
                          struct df_verdict *vd)
{
    if (!df_issued(s, fh, 1))
        return -1;
    if (!__atomic_load_n(s->gate_active, __ATOMIC_ACQUIRE))
        return 0;
    int r = -1;
    df_gate_enter(&s->gate, w);
    const struct df_view *v = df_view_of(&s->gate, fh);
    if (v) {
        if (v->direct & bit)
            r = 0;
        else if (v->in_c & bit)
            r = df_decide(&s->gate, v, bit, now, vd);
    }
    df_gate_leave(&s->gate, w);
    return r;
}

/* An injected errno as safe_errno (chaosfs/faults/methods.py) would send it. */
static inline int df_safe_errno(int bit, int err)
{
    if (err == ENOSYS && (bit == DF_HOT_FLUSH || bit == DF_HOT_FSYNC))
        return EOPNOTSUPP;
    return err > 0 && err <= 511 ? err : EIO;
}

/* One reply: header + optional payload, on the fd the request came from. Returns 0, or 1
 * when the kernel had forgotten the request (ENOENT: interrupted), or -1 on another error. */
static inline int df_reply(int fd, uint64_t unique, int err, const void *p, size_t n)
{
    struct fuse_out_header h = {.len = (uint32_t)(sizeof h + (err ? 0 : n)),
                                .error = -err, .unique = unique};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)p, n}};
    ssize_t w;
    do
        w = writev(fd, iov, err || !n ? 1 : 2);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return errno == ENOENT ? 1 : -1;
    return 0;
}

static inline void df_notify_inval_attr(struct df_server *s, uint64_t nodeid)
{
    struct fuse_notify_inval_inode_out o = {.ino = nodeid, .off = -1, .len = 0};
    struct fuse_out_header h = {.len = sizeof h + sizeof o, .error = FUSE_NOTIFY_INVAL_INODE};
    struct iovec iov[2] = {{&h, sizeof h}, {&o, sizeof o}};
    (void)!writev(s->dev, iov, 2);
}

/* One request as the hot path sees it, wherever it was read from: its header, the opcode's
 * fixed struct, and what follows that struct (WRITE's data). Read from /dev/fuse the three are
 * contiguous (pay == NULL: the data follows the struct); a ring entry has the header and the
 * struct in its header buffer and the data in its payload buffer. */
struct df_in {
    struct fuse_in_header *h;
    char *arg;         /* the opcode's fixed struct */
    size_t alen;       /* bytes at arg (/dev/fuse: everything after the header) */
    char *pay;         /* ring: the payload buffer; /dev/fuse: NULL */
    size_t paylen;
};

/* Where a hot reply goes. `data` has room for the largest READ reply (max_write bytes); a
 * reply whose p == data is already in place (READ's pread target), so neither path copies
 * it. send returns as df_reply does. */
struct df_out {
    int (*send)(struct df_out *o, uint64_t unique, int err, const void *p, size_t n);
    char *data;
    int fd;                       /* /dev/fuse: the fd the request came from */
    struct df_ring_ent *ent;      /* ring: the entry it came in */
};

/* What follows the fixed struct of `fixed` bytes (WRITE's data), and how many bytes of it. */
static inline char *df_in_data(const struct df_in *in, size_t fixed, size_t *len)
{
    if (in->pay) {
        *len = in->paylen;
        return in->pay;
    }
    *len = in->alen - fixed;
    return in->arg + fixed;
}

/* The /dev/fuse reply: `data` sits right after a fuse_out_header's room in the worker's
 * out buffer, so an in-place READ goes out in one write(2). */
static int df_dev_send(struct df_out *o, uint64_t unique, int err, const void *p, size_t n)
{
    if (p != o->data || err)
        return df_reply(o->fd, unique, err, p, n);
    struct fuse_out_header *h = (struct fuse_out_header *)(o->data - sizeof *h);
    h->len = (uint32_t)(sizeof *h + n);
    h->error = 0;
    h->unique = unique;
    ssize_t wr;
    do
        wr = write(o->fd, h, h->len);
    while (wr < 0 && errno == EINTR);
    if (wr < 0)
        return errno == ENOENT ? 1 : -1;
    return 0;
}

/* The kernel marks every write by a caller without CAP_FSETID; the bits go before the data
 * lands, whichever thread then serves the write. */
static inline void df_kill_setid(struct df_server *s, const struct df_in *in)
{
    if (in->h->opcode == FUSE_WRITE && in->alen >= sizeof(struct fuse_write_in)) {
        struct fuse_write_in *w = (struct fuse_write_in *)in->arg;
        if ((w->write_flags & FUSE_WRITE_KILL_SUIDGID) && df_issued(s, w->fh, 1)
                && chaosfs_clear_setid((int)w->fh) == 1)
            df_notify_inval_attr(s, in->h->nodeid);
    }
}

/* The hot requests, answered here when df_gate allows. Returns 1 if answered (through
 * o->send). `w` is the caller's gate slot. The errno of a failed syscall goes to the app as
 * the syscall gave it: the backing fs only returns errnos the kernel passes through (< 512),
 * and FLUSH/FSYNC's ENOSYS (a backing fs without fsync) becomes EOPNOTSUPP, never the reply
 * that switches them off. A fired errno answers without doing the operation, as the Python
 * handlers do. */
static int df_hot(struct df_server *s, int w, const struct df_in *in, struct df_out *o)
{
    const struct fuse_in_header *h = in->h;
    char *arg = in->arg;
    size_t alen = in->alen;
    double t0 = df_now();
    struct df_verdict vd;
    int err = 0, g;
    switch (h->opcode) {
    case FUSE_READ: {
        if (alen < sizeof(struct fuse_read_in))
            return 0;
        struct fuse_read_in *r = (struct fuse_read_in *)arg;
        if (r->size > s->bufsize - sizeof(struct fuse_out_header)
                || (g = df_gate(s, w, r->fh, DF_HOT_READ, t0, &vd)) < 0)
            return 0;
        if (g && vd.err) {
            o->send(o, h->unique, df_safe_errno(DF_HOT_READ, vd.err), NULL, 0);
            df_record_injected(s, DF_M_READ, t0);
            return 1;
        }
        size_t size = g ? df_shorten(r->size, vd.short_frac) : r->size;
        char *data = o->data;
        ssize_t got;
        do
            got = pread((int)r->fh, data, size, (off_t)r->offset);
        while (got < 0 && errno == EINTR);
        if (got < 0)
            err = errno;
        else if (g && vd.corrupt_mode)
            df_corrupt(&vd, (unsigned char *)data, (size_t)got);
        o->send(o, h->unique, err, data, got > 0 ? (size_t)got : 0);
        df_record(s, DF_M_READ, t0, err != 0);
        return 1;
    }
    case FUSE_WRITE: {
        if (alen < sizeof(struct fuse_write_in))
            return 0;
        struct fuse_write_in *wi = (struct fuse_write_in *)arg;
        size_t have;
        unsigned char *data = (unsigned char *)df_in_data(in, sizeof *wi, &have);
        if (have < wi->size || (g = df_gate(s, w, wi->fh, DF_HOT_WRITE, t0, &vd)) < 0)
            return 0;
        if (g && vd.err) {
            o->send(o, h->unique, df_safe_errno(DF_HOT_WRITE, vd.err), NULL, 0);
            df_record_injected(s, DF_M_WRITE, t0);
            return 1;
        }
        size_t len = wi->size;
        if (g) {
            if (vd.corrupt_mode)
                df_corrupt(&vd, data, len);  /* the request buffer is ours */
            len = df_shorten(len, vd.short_frac);
        }
        ssize_t put;
        do
            put = pwrite((int)wi->fh, data, len, (off_t)wi->offset);
        while (put < 0 && errno == EINTR);
        struct fuse_write_out wo = {.size = put > 0 ? (uint32_t)put : 0};
        if (put < 0)
            err = errno;
        o->send(o, h->unique, err, &wo, sizeof wo);
        df_record(s, DF_M_WRITE, t0, err != 0);
        return 1;
    }
    case FUSE_FLUSH: {
        if (alen < sizeof(struct fuse_flush_in))
            return 0;
        struct fuse_flush_in *f = (struct fuse_flush_in *)arg;
        if ((g = df_gate(s, w, f->fh, DF_HOT_FLUSH, t0, &vd)) < 0)
            return 0;
        df_lk_release_owner(&s->locks, h->nodeid, f->lock_owner);  /* close(2) drops them */
        if (g && vd.err) {
            o->send(o, h->unique, df_safe_errno(DF_HOT_FLUSH, vd.err), NULL, 0);
            df_record_injected(s, DF_M_FLUSH, t0);
            return 1;
        }
        /* close(dup(fd)) gives the backing fs the close-time hook (and error) of a close */
        int nfd = dup((int)f->fh);
        if (nfd < 0 || close(nfd) < 0)
            err = errno;
        if (err == ENOSYS)
            err = EOPNOTSUPP;
        o->send(o, h->unique, err, NULL, 0);
        df_record(s, DF_M_FLUSH, t0, err != 0);
        return 1;
    }
    case FUSE_FSYNC: {
        if (alen < sizeof(struct fuse_fsync_in))
            return 0;
        struct fuse_fsync_in *f = (struct fuse_fsync_in *)arg;
        if ((g = df_gate(s, w, f->fh, DF_HOT_FSYNC, t0, &vd)) < 0)
            return 0;
        if (g && vd.err) {
            o->send(o, h->unique, df_safe_errno(DF_HOT_FSYNC, vd.err), NULL, 0);
            df_record_injected(s, DF_M_FSYNC, t0);
            return 1;
        }
        /* On this worker: others keep serving meanwhile, no thread hop. */
        int rc = (f->fsync_flags & 1) ? fdatasync((int)f->fh) : fsync((int)f->fh);
        if (rc < 0)
            err = errno == ENOSYS ? EOPNOTSUPP : errno;
        o->send(o, h->unique, err, NULL, 0);
        df_record(s, DF_M_FSYNC, t0, err != 0);
        return 1;
    }
    case FUSE_GETATTR: {
        /* The offer says no rule touches this inode's getattr at the gate's current epoch
         * (any epoch while no rule exists); a failed fstat goes up too, so the Python
         * handler's error path (a directory's name dropped) stays the only one. */
        struct fuse_attr_out *ao = (struct fuse_attr_out *)o->data;
        uint64_t epoch = __atomic_load_n(s->gate_active, __ATOMIC_ACQUIRE)
                         ? __atomic_load_n(s->gate_epoch, __ATOMIC_ACQUIRE) : 0;
        if (df_attrs_getattr(&s->attrs, h->nodeid, epoch, ao) <= 0)
            return 0;
        o->send(o, h->unique, 0, ao, sizeof *ao);
        df_record(s, DF_M_GETATTR, t0, 0);
        return 1;
    }
    case FUSE_GETLK:
    case FUSE_SETLK:
    case FUSE_SETLKW: {
        if (alen < sizeof(struct fuse_lk_in))
            return 0;
        struct fuse_lk_in *l = (struct fuse_lk_in *)arg;
        int m = h->opcode == FUSE_GETLK ? DF_M_GETLK : h->opcode == FUSE_SETLK ? DF_M_SETLK : DF_M_SETLKW;
        if (df_gate(s, w, l->fh, DF_HOT_LOCK, t0, &vd) != 0)
            return 0;
        if (h->opcode == FUSE_GETLK) {
            struct fuse_lk_out lo = {.lk = l->lk};
            err = df_lk_get(&s->locks, h->nodeid, l->owner, l->fh, &lo.lk.type, &lo.lk.start,
                            &lo.lk.end, &lo.lk.pid);
            o->send(o, h->unique, err, &lo, sizeof lo);
        } else {
            err = df_lk_set(&s->locks, h->nodeid, l->owner, h->pid, l->fh, l->lk.type,
                            l->lk.start, l->lk.end, (l->lk_flags & FUSE_LK_FLOCK) != 0);
            if (err == EAGAIN && h->opcode == FUSE_SETLKW)
                return 0;  /* it must wait: the trio thread polls, no worker blocks */
            o->send(o, h->unique, err, NULL, 0);
        }
        df_record(s, m, t0, err != 0);
        return 1;
    }
    }
    return 0;
}

static inline void df_set_issued(struct df_server *s, uint64_t fh, int kind)
{
    if (fh < s->nissued) {
        __atomic_store_n(&s->issued[fh], (unsigned char)kind, __ATOMIC_RELEASE);
        if (!kind)
            df_view_publish(&s->gate, fh, NULL);  /* the next open of this fd starts clean */
    }
}

static void df_push(struct df_server *s, struct df_msg *m)
{
    pthread_mutex_lock(&s->qlock);
    if (s->qtail)
        s->qtail->next = m;
    else
        s->qhead = m;
    s->qtail = m;
    pthread_mutex_unlock(&s->qlock);
    uint64_t one = 1;
    (void)!write(s->efd, &one, sizeof one);
}

/* A pile of forgets this big is taken at once; a smaller one when the trio thread wakes
 * for anything else, or FORGET_LINGER after it began (DevFuseTransport._main). */
#define DF_FORGET_WAKE 512

/* A FORGET or BATCH_FORGET: no reply, so no message and no wake-up for it. Its items join
 * the pile the trio thread takes in one go: a drop_caches, or a run of unlinks, sends
 * thousands, one at a time, while the trio thread has requests to serve. Holding them a
 * little changes nothing the kernel sees: it already dropped the inodes, and a LOOKUP
 * that meets such a node meanwhile only adds to its count. */
static void df_forget(struct df_server *s, const struct df_in *r)
{
    struct fuse_forget_one one;
    const struct fuse_forget_one *items;
    size_t n;
    if (r->h->opcode == FUSE_FORGET) {
        if (r->alen < sizeof(struct fuse_forget_in))
            return;
        one.nodeid = r->h->nodeid;
        one.nlookup = ((const struct fuse_forget_in *)r->arg)->nlookup;
        items = &one;
        n = 1;
    }
    else {
        const struct fuse_batch_forget_in *b = (const struct fuse_batch_forget_in *)r->arg;
        if (r->alen < sizeof *b)
            return;
        n = (r->alen - sizeof *b) / sizeof(struct fuse_forget_one);
        if (b->count < n)
            n = b->count;
        items = (const struct fuse_forget_one *)((const char *)r->arg + sizeof *b);
    }
    pthread_mutex_lock(&s->flock);
    if (s->nforgets + n > s->forgets_cap) {
        size_t cap = s->forgets_cap ? s->forgets_cap * 2 : 1024;
        while (cap < s->nforgets + n)
            cap *= 2;
        struct fuse_forget_one *p = realloc(s->forgets, cap * sizeof *p);
        if (!p) {  /* out of memory: these inodes stay known, as if the forget were lost */
            pthread_mutex_unlock(&s->flock);
            return;
        }
        s->forgets = p;
        s->forgets_cap = cap;
    }
    memcpy(s->forgets + s->nforgets, items, n * sizeof *items);
    /* the first of a pile (the trio thread then gives it FORGET_LINGER to grow), and
     * the one that makes it big */
    int wake = s->nforgets == 0 || (s->nforgets < DF_FORGET_WAKE && s->nforgets + n >= DF_FORGET_WAKE);
    __atomic_store_n(&s->nforgets, s->nforgets + n, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->flock);
    if (wake) {
        uint64_t one1 = 1;
        (void)!write(s->efd, &one1, sizeof one1);
    }
}

/* The forgets waiting, oldest first, and their number; the caller frees the array. */
static struct fuse_forget_one *df_forgets_take(struct df_server *s, size_t *n)
{
    pthread_mutex_lock(&s->flock);
    struct fuse_forget_one *f = s->forgets;
    *n = s->nforgets;
    s->forgets = NULL;
    s->forgets_cap = 0;
    __atomic_store_n(&s->nforgets, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->flock);
    return f;
}

static inline size_t df_forgets_pending(struct df_server *s)
{
    return __atomic_load_n(&s->nforgets, __ATOMIC_RELAXED);
}

/* The queue's whole content, oldest first (the trio thread takes it in one go). */
static struct df_msg *df_take(struct df_server *s)
{
    pthread_mutex_lock(&s->qlock);
    struct df_msg *m = s->qhead;
    s->qhead = s->qtail = NULL;
    pthread_mutex_unlock(&s->qlock);
    return m;
}

/* A serving thread's last call (a worker's, a ring queue's). */
static void df_py_exit(struct df_server *s)
{
    void (*py_exit)(void) = __atomic_load_n(&s->py_exit, __ATOMIC_ACQUIRE);
    if (py_exit && __atomic_load_n(&s->py_keep, __ATOMIC_ACQUIRE))
        py_exit();
}

struct df_worker_arg {
    struct df_server *s;
    int fd;
    int index;       /* its slot in the gate's reclamation state */
};

static void *df_worker(void *p)
{
    struct df_worker_arg a = *(struct df_worker_arg *)p;
    free(p);
    struct df_server *s = a.s;
    char *buf = aligned_alloc(4096, s->bufsize);
    char *out = aligned_alloc(4096, s->bufsize);
    struct df_out o = {.send = df_dev_send, .data = out + sizeof(struct fuse_out_header),
                       .fd = a.fd, .ent = NULL};
    int why = 0;
    while (buf && out) {
        ssize_t n = read(a.fd, buf, s->bufsize);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ENOENT)
                continue;  /* ENOENT: the request was interrupted before we read it */
            why = errno;   /* ENODEV: unmounted or aborted */
            break;
        }
        if ((size_t)n < sizeof(struct fuse_in_header))
            continue;
        struct fuse_in_header *in = (struct fuse_in_header *)buf;
        struct df_in req = {.h = in, .arg = buf + sizeof *in, .alen = (size_t)n - sizeof *in,
                            .pay = NULL, .paylen = 0};
        if (in->opcode == FUSE_FORGET || in->opcode == FUSE_BATCH_FORGET) {
            df_forget(s, &req);
            continue;
        }
        df_kill_setid(s, &req);
        if (df_hot(s, a.index, &req, &o))
            continue;
        struct df_msg *m = malloc(sizeof *m + (size_t)n);
        if (!m) {
            df_reply(a.fd, in->unique, ENOMEM, NULL, 0);
            continue;
        }
        m->next = NULL;
        m->fd = a.fd;
        m->ent = NULL;
        m->replied = 0;
        m->len = (uint32_t)n;
        memcpy(m->data, buf, (size_t)n);
        int (*take)(struct df_server *, struct df_msg *) = __atomic_load_n(&s->py_take, __ATOMIC_ACQUIRE);
        if (take && take(s, m))
            continue;
        df_push(s, m);
    }
    free(buf);
    free(out);
    df_py_exit(s);
    /* An empty message says "this worker is gone" (len 0). */
    struct df_msg *m = calloc(1, sizeof *m);
    if (m) {
        m->fd = -why;
        df_push(s, m);
    }
    return NULL;
}

static int df_init_server(struct df_server *s)
{
    pthread_mutex_init(&s->qlock, NULL);
    pthread_mutex_init(&s->flock, NULL);
    s->forgets = NULL;
    s->nforgets = s->forgets_cap = 0;
    df_locks_init(&s->locks);
    if (df_attrs_init(&s->attrs) < 0)
        return -1;
    s->qhead = s->qtail = NULL;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return s->efd < 0 ? -1 : 0;
}

/* After the session ended: wait for the workers (each returns on ENODEV), close clones. */
static void df_join(struct df_server *s, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)seconds;
    for (int i = 0; i < s->nworkers; i++) {
        if (pthread_timedjoin_np(s->threads[i], NULL, &until) != 0) {
            pthread_detach(s->threads[i]);  /* still blocked: the process exit takes it */
            s->detached++;
        }
        else if (i > 0)
            close(s->fds[i]);
    }
    s->nworkers = 0;
    s->started = 0;
}

static int df_start(struct df_server *s, int nworkers)
{
    if (nworkers < 1 || s->wbase + nworkers > DF_MAX_WORKERS) {
        errno = EINVAL;
        return -1;
    }
    for (int i = 0; i < nworkers; i++) {
        int fd = s->dev;
        if (i > 0) {
            fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
            if (fd < 0)
                return -1;
            uint32_t master = (uint32_t)s->dev;
            if (ioctl(fd, FUSE_DEV_IOC_CLONE, &master) < 0) {
                close(fd);
                return -1;
            }
        }
        s->fds[i] = fd;
        struct df_worker_arg *a = malloc(sizeof *a);
        if (!a)
            return -1;
        a->s = s;
        a->fd = fd;
        a->index = s->wbase + i;
        if (pthread_create(&s->threads[i], NULL, df_worker, a) != 0) {
            free(a);
            if (i > 0)
                close(fd);
            errno = EAGAIN;
            return -1;
        }
        s->nworkers = i + 1;
        s->gate.nworkers = s->wbase + i + 1;
    }
    s->started = 1;
    return 0;
}

#endif
