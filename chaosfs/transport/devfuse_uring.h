/*
 * FUSE over io_uring for the /dev/fuse transport (-fuse-uring; Linux >= 6.14, protocol 7.42).
 *
 * After INIT has negotiated FUSE_OVER_IO_URING, the kernel keeps new requests waiting until
 * every queue (one per possible CPU) has a ring entry registered, then sends each request to
 * the queue of the CPU its caller runs on, in an entry of ours: a header buffer (in header,
 * the opcode's fixed struct, the entry's in/out trailer) and a payload buffer (what follows
 * the struct: WRITE's data, names). The reply goes back in the same buffers with one
 * COMMIT_AND_FETCH command, which also hands the entry back for the next request: one
 * io_uring_enter per request instead of a read(2) and a write(2).
 *
 * Each queue has a thread of its own, pinned to that CPU (the caller sleeps while we serve,
 * so the request stays on one core), owning one io_uring (SQE128 for the 80-byte command,
 * SINGLE_ISSUER|DEFER_TASKRUN: the kernel copies a request into our buffers in this thread
 * only when it asks for completions). The thread answers the hot requests with df_hot, the
 * same code the /dev/fuse workers run; everything else is copied into a df_msg shaped as
 * read(2) would give it and queued to the trio thread like a worker's. The trio thread's
 * reply (df_msg_reply) is written into the entry and handed back to its queue thread, which
 * commits it: only the owner thread ever touches a ring. An eventfd read through the ring
 * wakes it for that.
 *
 * FORGET and INTERRUPT still come through /dev/fuse reads (the kernel sends them there, and
 * notifications can only go that way), so one /dev/fuse worker keeps running.
 *
 * Layouts and numbers from the kernel's include/uapi/linux/fuse.h (7.42) and
 * fs/fuse/dev_uring.c; Debian 12's headers predate them.
 */
#ifndef CHAOSFS_DEVFUSE_URING_H
#define CHAOSFS_DEVFUSE_URING_H

#include <linux/io_uring.h>
#include <sched.h>
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "devfuse_core.h"

/* ---- the 7.42 protocol pieces ------------------------------------------------------------ */

#define DF_FUSE_OVER_IO_URING_FLAGS2 (1u << 9)   /* FUSE_OVER_IO_URING = 1ULL << 41 */
#define DF_URING_MINOR 42
#define DF_URING_IN_OUT_SZ 128
#define DF_URING_OP_SZ 128
enum { DF_URING_CMD_REGISTER = 1, DF_URING_CMD_COMMIT_AND_FETCH = 2 };

struct df_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;     /* the request's unique: what a commit names */
    uint32_t payload_sz;    /* bytes valid in the payload buffer, either way */
    uint32_t padding;
    uint64_t reserved;
};

struct df_uring_req_header {
    char in_out[DF_URING_IN_OUT_SZ];   /* fuse_in_header on fetch, fuse_out_header on commit */
    char op_in[DF_URING_OP_SZ];        /* the opcode's fixed struct (in_args[0]) */
    struct df_uring_ent_in_out ent;
};

/* In the SQE's 80-byte command area. */
struct df_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

/* ---- a minimal io_uring (raw syscalls: one issuer, no SQ polling) ----------------------- */

struct df_ring {
    int fd;
    unsigned sq_entries, sq_mask, cq_mask;
    unsigned *sq_head, *sq_tail, *sq_array, *cq_head, *cq_tail;
    struct io_uring_cqe *cqes;
    char *sqes;                 /* 128-byte slots */
    void *rings;
    size_t rings_sz, sqes_sz;
    unsigned pending;           /* filled, not yet submitted */
};

#define DF_RING_FLAGS (IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)

static int df_ring_setup(struct df_ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    memset(r, 0, sizeof *r);
    p.flags = DF_RING_FLAGS;
    r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (r->fd < 0)
        return -1;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {  /* every kernel with FUSE io_uring has it */
        close(r->fd);
        errno = ENOSYS;
        return -1;
    }
    size_t sq = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->rings_sz = sq > cq ? sq : cq;
    r->rings = mmap(NULL, r->rings_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                    r->fd, IORING_OFF_SQ_RING);
    if (r->rings == MAP_FAILED)
        goto fail;
    r->sqes_sz = (size_t)p.sq_entries * 128;
    r->sqes = mmap(NULL, r->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        munmap(r->rings, r->rings_sz);
        goto fail;
    }
    char *b = r->rings;
    r->sq_entries = p.sq_entries;
    r->sq_head = (unsigned *)(b + p.sq_off.head);
    r->sq_tail = (unsigned *)(b + p.sq_off.tail);
    r->sq_mask = *(unsigned *)(b + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(b + p.sq_off.array);
    r->cq_head = (unsigned *)(b + p.cq_off.head);
    r->cq_tail = (unsigned *)(b + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(b + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(b + p.cq_off.cqes);
    return 0;
fail:
    {
        int e = errno;
        close(r->fd);
        r->fd = -1;
        errno = e;
    }
    return -1;
}

static void df_ring_free(struct df_ring *r)
{
    if (r->fd < 0)
        return;
    munmap(r->sqes, r->sqes_sz);
    munmap(r->rings, r->rings_sz);
    close(r->fd);  /* cancels the commands still in the kernel */
    r->fd = -1;
}

/* A zeroed SQE slot, or NULL if the SQ is full (it never is: one SQE per entry at most). */
static struct io_uring_sqe *df_ring_sqe(struct df_ring *r)
{
    unsigned tail = *r->sq_tail, head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (tail - head >= r->sq_entries)
        return NULL;
    unsigned i = tail & r->sq_mask;
    struct io_uring_sqe *e = (struct io_uring_sqe *)(r->sqes + (size_t)i * 128);
    memset(e, 0, 128);
    r->sq_array[i] = i;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    r->pending++;
    return e;
}

/* Submit what is pending and wait for `wait` completions (0: just run the deferred work). */
static int df_ring_enter(struct df_ring *r, unsigned wait)
{
    int n = (int)syscall(__NR_io_uring_enter, r->fd, r->pending, wait, IORING_ENTER_GETEVENTS,
                         NULL, 0);
    if (n >= 0)
        r->pending -= (unsigned)n <= r->pending ? (unsigned)n : r->pending;
    return n;
}

/* Whether io_uring with our flags can be had at all (checked before INIT asks for it: once
 * negotiated, the kernel holds every request until the ring is registered). */
static int df_uring_probe(void)
{
    struct df_ring r;
    if (df_ring_setup(&r, 4) < 0)
        return -errno;
    df_ring_free(&r);
    return 0;
}

/* ---- ring entries and queues ------------------------------------------------------------- */

#define DF_UQ_KICK 1ull          /* user_data of the eventfd read; entries are pointers */
#define DF_UQ_INITIAL 8          /* entries registered per queue at start */
#define DF_UQ_MAX 64             /* more are registered while the trio thread holds most */

struct df_ring_ent {
    struct df_uq *q;
    struct df_uring_req_header *hdr;
    char *payload;
    struct iovec iov[2];
    uint64_t commit_id;
    struct df_ring_ent *next;    /* on q->commits */
};

struct df_uq {
    struct df_server *s;
    int qid, slot;               /* slot: this thread's gate reclamation index */
    struct df_ring r;
    int efd;                     /* the trio thread's "an entry is ready to commit" */
    uint64_t efd_buf;
    pthread_mutex_t lock;        /* commits, stopped */
    struct df_ring_ent *commits;
    int stopped;
    struct df_ring_ent *ents;
    int nents;                   /* registered */
    int held;                    /* of those, waiting for the trio thread's reply */
    int dead;                    /* ended by the kernel (teardown) */
    struct df_uring_req_header *hdrs;
    char *pay;                   /* DF_UQ_MAX payload buffers of s->bufsize, reserved lazily */
    pthread_t thread;
    int started;
    int err;                     /* setup result for the starter (errno) */
    sem_t ready;
};

static void df_ring_fill_cmd(struct io_uring_sqe *e, struct df_ring_ent *ent, int op)
{
    struct df_uq *q = ent->q;
    e->opcode = IORING_OP_URING_CMD;
    e->fd = q->s->dev;
    e->cmd_op = (uint32_t)op;
    e->addr = (uint64_t)(uintptr_t)ent->iov;
    e->len = 2;
    e->user_data = (uint64_t)(uintptr_t)ent;
    struct df_uring_cmd_req *c = (struct df_uring_cmd_req *)e->cmd;
    c->qid = (uint16_t)q->qid;
    c->commit_id = op == DF_URING_CMD_COMMIT_AND_FETCH ? ent->commit_id : 0;
}

static int df_uq_register(struct df_uq *q)
{
    if (q->nents >= DF_UQ_MAX)
        return -1;
    struct df_ring_ent *ent = &q->ents[q->nents];
    ent->q = q;
    ent->hdr = &q->hdrs[q->nents];
    ent->payload = q->pay + (size_t)q->nents * q->s->bufsize;
    ent->iov[0].iov_base = ent->hdr;
    ent->iov[0].iov_len = sizeof *ent->hdr;
    ent->iov[1].iov_base = ent->payload;
    ent->iov[1].iov_len = q->s->bufsize;
    struct io_uring_sqe *e = df_ring_sqe(&q->r);
    if (!e)
        return -1;
    df_ring_fill_cmd(e, ent, DF_URING_CMD_REGISTER);
    q->nents++;
    return 0;
}

static void df_uq_arm_kick(struct df_uq *q)
{
    struct io_uring_sqe *e = df_ring_sqe(&q->r);
    if (!e)
        return;
    e->opcode = IORING_OP_READ;
    e->fd = q->efd;
    e->addr = (uint64_t)(uintptr_t)&q->efd_buf;
    e->len = sizeof q->efd_buf;
    e->user_data = DF_UQ_KICK;
}

/* Fill the entry's reply: out header in the header buffer, the bytes in the payload buffer
 * (p == ent->payload: already there). A reply larger than the buffer cannot be sent: EIO. */
static void df_ring_fill_reply(struct df_ring_ent *ent, uint64_t unique, int err, const void *p,
                               size_t n)
{
    if (!err && n > ent->q->s->bufsize)
        err = EIO;
    if (err)
        n = 0;
    struct fuse_out_header *h = (struct fuse_out_header *)ent->hdr->in_out;
    h->len = (uint32_t)(sizeof *h + n);
    h->error = -err;
    h->unique = unique;
    if (n && p != ent->payload)
        memcpy(ent->payload, p, n);
    ent->hdr->ent.payload_sz = (uint32_t)n;
}

/* df_hot's reply sink on a queue thread: the commit follows once df_hot returns. */
static int df_ring_send(struct df_out *o, uint64_t unique, int err, const void *p, size_t n)
{
    df_ring_fill_reply(o->ent, unique, err, p, n);
    return 0;
}

/* The entry whose request this queue thread has handed to py_take (NULL otherwise), and
 * whether it was answered: that reply goes straight into the entry and df_uq_serve commits
 * it, no eventfd round. Any other reply (even one a handler here gives another request)
 * takes the trio thread's way. */
static __thread struct df_ring_ent *df_uq_taking;
static __thread int df_uq_self_replied;

/* One request arrived in `ent`: answer it here (in C, or in Python through py_take), or
 * queue it to the trio thread. */
static void df_uq_serve(struct df_uq *q, struct df_ring_ent *ent)
{
    struct df_server *s = q->s;
    struct fuse_in_header *h = (struct fuse_in_header *)ent->hdr->in_out;
    uint32_t psz = ent->hdr->ent.payload_sz;
    ent->commit_id = ent->hdr->ent.commit_id;
    if (psz > s->bufsize)
        psz = (uint32_t)s->bufsize;
    /* in.len counts the header, the fixed struct and the payload: the struct's size is
     * what is left (0 for opcodes whose first argument is a name: it is in the payload). */
    size_t alen = h->len >= sizeof *h + psz ? h->len - sizeof *h - psz : 0;
    if (alen > DF_URING_OP_SZ)
        alen = DF_URING_OP_SZ;
    struct df_in in = {.h = h, .arg = ent->hdr->op_in, .alen = alen, .pay = ent->payload,
                       .paylen = psz};
    struct df_out o = {.send = df_ring_send, .data = ent->payload, .fd = -1, .ent = ent};
    df_kill_setid(s, &in);
    if (!df_hot(s, q->slot, &in, &o)) {
        /* As read(2) would have given it, so the trio side decodes both paths alike. */
        size_t n = sizeof *h + alen + psz;
        struct df_msg *m = malloc(sizeof *m + n);
        if (m) {
            m->next = NULL;
            m->fd = -1;
            m->ent = ent;
            m->replied = 0;
            m->len = (uint32_t)n;
            memcpy(m->data, h, sizeof *h);
            memcpy(m->data + sizeof *h, ent->hdr->op_in, alen);
            memcpy(m->data + sizeof *h + alen, ent->payload, psz);
            int (*take)(struct df_server *, struct df_msg *) = __atomic_load_n(&s->py_take, __ATOMIC_ACQUIRE);
            df_uq_self_replied = 0;
            df_uq_taking = ent;
            int took = take && take(s, m);
            df_uq_taking = NULL;
            if (took) {                   /* it owned m and freed it */
                if (!df_uq_self_replied)  /* cannot happen: take answers what it takes */
                    df_ring_fill_reply(ent, h->unique, EIO, NULL, 0);
                goto commit;
            }
            q->held++;
            /* Keep entries free for the hot requests while slow ones (a fault delay) wait
             * in Python: registering one more is cheap (its pages are only touched when
             * used). */
            if (q->nents - q->held < 2)
                df_uq_register(q);
            df_push(s, m);
            return;
        }
        df_ring_fill_reply(ent, h->unique, ENOMEM, NULL, 0);
    }
commit:;
    struct io_uring_sqe *e = df_ring_sqe(&q->r);
    if (e)
        df_ring_fill_cmd(e, ent, DF_URING_CMD_COMMIT_AND_FETCH);
}

/* The trio thread's replies, committed by their queue's thread. */
static void df_uq_take_commits(struct df_uq *q)
{
    pthread_mutex_lock(&q->lock);
    struct df_ring_ent *ent = q->commits;
    q->commits = NULL;
    pthread_mutex_unlock(&q->lock);
    while (ent) {
        struct df_ring_ent *next = ent->next;
        struct io_uring_sqe *e = df_ring_sqe(&q->r);
        if (e)
            df_ring_fill_cmd(e, ent, DF_URING_CMD_COMMIT_AND_FETCH);
        q->held--;
        ent = next;
    }
}

static int df_uq_setup(struct df_uq *q)
{
    if (df_ring_setup(&q->r, 2 * DF_UQ_MAX) < 0)
        return errno;
    for (int i = 0; i < DF_UQ_INITIAL; i++)
        df_uq_register(q);
    df_uq_arm_kick(q);
    if (df_ring_enter(&q->r, 0) < 0)
        return errno;
    /* A refused REGISTER completes at once; one that took waits for a request. */
    unsigned head = *q->r.cq_head, tail = __atomic_load_n(q->r.cq_tail, __ATOMIC_ACQUIRE);
    int err = 0;
    for (; head != tail; head++) {
        struct io_uring_cqe *c = &q->r.cqes[head & q->r.cq_mask];
        if (c->user_data != DF_UQ_KICK && c->res < 0 && !err)
            err = -c->res;
    }
    /* Leave them for the loop: an ENOTCONN there is just a dead entry. */
    return err;
}

static void *df_uq_main(void *p)
{
    struct df_uq *q = p;
    struct df_server *s = q->s;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(q->qid, &set);
    /* Best effort: the kernel picks the queue by the caller's CPU, so its server thread
     * belongs there (an offline CPU's queue just never gets requests). */
    (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    q->err = df_uq_setup(q);
    sem_post(&q->ready);
    if (q->err)
        return NULL;
    for (;;) {
        if (df_ring_enter(&q->r, 1) < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY)
            break;
        unsigned head = *q->r.cq_head, tail = __atomic_load_n(q->r.cq_tail, __ATOMIC_ACQUIRE);
        int stop = 0;
        for (; head != tail; head++) {
            struct io_uring_cqe *c = &q->r.cqes[head & q->r.cq_mask];
            if (c->user_data == DF_UQ_KICK) {
                df_uq_take_commits(q);
                pthread_mutex_lock(&q->lock);
                stop = q->stopped;
                pthread_mutex_unlock(&q->lock);
                if (!stop)
                    df_uq_arm_kick(q);
                continue;
            }
            struct df_ring_ent *ent = (struct df_ring_ent *)(uintptr_t)c->user_data;
            if (c->res < 0) {
                q->dead++;   /* ENOTCONN: the connection is being torn down */
                continue;
            }
            df_uq_serve(q, ent);
        }
        __atomic_store_n(q->r.cq_head, head, __ATOMIC_RELEASE);
        if (stop)
            break;
    }
    df_py_exit(s);
    return NULL;
}

/* The trio thread's reply to a request, whichever path it came by; at most one per request
 * (a ring entry answered twice would commit whatever request it holds by then). */
static int df_msg_reply(struct df_msg *m, int err, const void *p, size_t n)
{
    uint64_t unique = ((struct fuse_in_header *)m->data)->unique;
    if (!m->ent)
        return df_reply(m->fd, unique, err, p, n);
    if (m->replied)
        return 1;
    m->replied = 1;
    struct df_ring_ent *ent = m->ent;
    struct df_uq *q = ent->q;
    if (ent == df_uq_taking) {  /* served on its queue's thread: df_uq_serve commits it */
        df_ring_fill_reply(ent, unique, err, p, n);
        df_uq_self_replied = 1;
        return 0;
    }
    pthread_mutex_lock(&q->lock);
    if (q->stopped) {  /* the queue thread is gone; the kernel ended the request */
        pthread_mutex_unlock(&q->lock);
        return 1;
    }
    df_ring_fill_reply(ent, unique, err, p, n);
    ent->next = q->commits;
    q->commits = ent;
    pthread_mutex_unlock(&q->lock);
    uint64_t one = 1;
    (void)!write(q->efd, &one, sizeof one);
    return 0;
}

/* A request the trio thread drops unanswered (its task was cancelled at shutdown): a ring
 * entry must still go back to the kernel. */
static void df_msg_free(struct df_msg *m)
{
    if (m && m->ent && !m->replied)
        df_msg_reply(m, EIO, NULL, 0);
    free(m);
}

static void df_uring_stop(struct df_server *s, double seconds);

/* Start one queue thread per possible CPU and register their entries. Returns 0, or an
 * errno (then nothing is left running; the caller makes the kernel fall back). */
static int df_uring_start(struct df_server *s, int nq)
{
    if (nq < 1 || nq > DF_MAX_WORKERS - 1)
        return EINVAL;
    s->uq = calloc((size_t)nq, sizeof *s->uq);
    if (!s->uq)
        return ENOMEM;
    int err = 0;
    for (int i = 0; i < nq; i++) {  /* first, so a failed start can stop every queue */
        s->uq[i].r.fd = -1;
        s->uq[i].efd = -1;
        pthread_mutex_init(&s->uq[i].lock, NULL);
        sem_init(&s->uq[i].ready, 0, 0);
    }
    for (int i = 0; i < nq; i++) {
        struct df_uq *q = &s->uq[i];
        q->s = s;
        q->qid = i;
        q->slot = i;
        q->efd = eventfd(0, EFD_CLOEXEC);
        q->ents = calloc(DF_UQ_MAX, sizeof *q->ents);
        q->hdrs = aligned_alloc(64, DF_UQ_MAX * sizeof *q->hdrs);
        /* Reserved, not committed: a buffer's pages are only touched by the requests it
         * carries (4 KiB reads touch one). */
        q->pay = mmap(NULL, (size_t)DF_UQ_MAX * s->bufsize, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (q->efd < 0 || !q->ents || !q->hdrs || q->pay == MAP_FAILED) {
            if (q->pay == MAP_FAILED)
                q->pay = NULL;
            err = ENOMEM;
            break;
        }
        memset(q->hdrs, 0, DF_UQ_MAX * sizeof *q->hdrs);
    }
    s->nq = nq;
    /* Queue threads take gate slots 0..nq-1, the /dev/fuse workers the ones after. */
    s->wbase = nq;
    s->gate.nworkers = nq;
    for (int i = 0; i < nq && !err; i++) {
        struct df_uq *q = &s->uq[i];
        if (pthread_create(&q->thread, NULL, df_uq_main, q) != 0) {
            err = EAGAIN;
            break;
        }
        q->started = 1;
        sem_wait(&q->ready);
        err = q->err;
    }
    if (err)
        df_uring_stop(s, 1.0);
    return err;
}

/* Make the kernel give up on io_uring for this connection (after INIT negotiated it and our
 * registration failed before the kernel saw a bad one): a REGISTER it refuses (a header
 * buffer too small) clears the connection's io_uring flag and releases the requests it
 * held, which then come through /dev/fuse reads. Returns 0 if the kernel answered. */
static int df_uring_refuse(struct df_server *s)
{
    struct df_ring r;
    if (df_ring_setup(&r, 4) < 0)
        return -1;
    char small[8];
    struct iovec iov[2] = {{small, sizeof small}, {small, sizeof small}};
    struct io_uring_sqe *e = df_ring_sqe(&r);
    e->opcode = IORING_OP_URING_CMD;
    e->fd = s->dev;
    e->cmd_op = DF_URING_CMD_REGISTER;
    e->addr = (uint64_t)(uintptr_t)iov;
    e->len = 2;
    int rc = df_ring_enter(&r, 1) < 0 ? -1 : 0;
    df_ring_free(&r);
    return rc;
}

/* Stop the queue threads (after the session ended or on a failed start) and close their
 * rings; the buffers stay (a late reply from the trio thread finds `stopped`). */
static void df_uring_stop(struct df_server *s, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)seconds;
    for (int i = 0; i < s->nq; i++) {
        struct df_uq *q = &s->uq[i];
        pthread_mutex_lock(&q->lock);
        q->stopped = 1;
        pthread_mutex_unlock(&q->lock);
        if (q->efd >= 0) {
            uint64_t one = 1;
            (void)!write(q->efd, &one, sizeof one);
        }
    }
    for (int i = 0; i < s->nq; i++) {
        struct df_uq *q = &s->uq[i];
        if (q->started) {
            if (pthread_timedjoin_np(q->thread, NULL, &until) != 0) {
                pthread_detach(q->thread);  /* still in the kernel: the process exit takes it */
                q->started = 0;
                continue;
            }
            q->started = 0;
        }
        df_ring_free(&q->r);
    }
}

#endif
