/* POSIX record locks and BSD flock()s for the cython transport, held on the backing files.
 *
 * The kernel names a POSIX lock's holder by a lock owner (one per process's file table),
 * not by an open file. Each (inode, owner) pair gets a backing open of its own and takes
 * Linux open-file-description locks on it (F_OFD_*): two owners conflict as two processes
 * do, and one owner's locks merge and split as one process's do, whichever of its fds
 * asked. An owner's locks on a file go when it closes any fd of that file (FLUSH names the
 * owner), as POSIX says; also when the last reference to an open it locked through goes
 * (RELEASE): the kernel skips FLUSH when the file's write-back failed (an injected write
 * error on a dirty mmap page, a power cut), and those owners' locks must not outlive
 * their process. flock() belongs to the open itself: it is taken on that open's
 * backing fd (fh) and goes with it. Locks on the backing files also conflict with programs
 * using the backing directory directly.
 *
 * Workers answer GETLK, SETLK and SETLKW here when no rule touches them (a SETLKW that
 * would wait goes to the trio thread, which polls df_lk_set so no thread sits blocked);
 * the trio thread calls the same functions for requests a rule matched.
 */
#ifndef CHAOSFS_DEVFUSE_LOCKS_H
#define CHAOSFS_DEVFUSE_LOCKS_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#define DF_LK_OFFSET_MAX 0x7fffffffffffffffull

struct df_lk_owner {
    struct df_lk_owner *next;
    uint64_t nodeid, owner;
    int fd;
    uint32_t pid;
    unsigned nfh, capfh;
    uint64_t *fhs;                  /* the opens (fh) it locked through: see df_lk_release_fh */
};

static void df_lk_free(struct df_lk_owner *o)
{
    close(o->fd);  /* drops every OFD lock taken through it */
    free(o->fhs);
    free(o);
}

/* Remember that `o` used open `fh`. Returns 0 or ENOMEM. */
static int df_lk_note_fh(struct df_lk_owner *o, uint64_t fh)
{
    for (unsigned i = 0; i < o->nfh; i++)
        if (o->fhs[i] == fh)
            return 0;
    if (o->nfh == o->capfh) {
        unsigned cap = o->capfh ? o->capfh * 2 : 2;
        uint64_t *n = realloc(o->fhs, cap * sizeof *n);
        if (!n)
            return ENOMEM;
        o->fhs = n;
        o->capfh = cap;
    }
    o->fhs[o->nfh++] = fh;
    return 0;
}

struct df_locks {
    pthread_mutex_t lock;
    struct df_lk_owner *buckets[256];
    int count;                      /* owners with an open; read without the lock by FLUSH */
};

static void df_locks_init(struct df_locks *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
}

static inline unsigned df_lk_hash(uint64_t nodeid, uint64_t owner)
{
    uint64_t h = (nodeid * 0x9E3779B97F4A7C15ull) ^ (owner * 0xC2B2AE3D27D4EB4Full);
    return (unsigned)(h >> 56);
}

/* Caller holds t->lock. `create`: open the owner's backing fd through fh if it has none. */
static struct df_lk_owner *df_lk_find(struct df_locks *t, uint64_t nodeid, uint64_t owner,
                                      uint64_t fh, int create, int *err)
{
    struct df_lk_owner **b = &t->buckets[df_lk_hash(nodeid, owner)];
    for (struct df_lk_owner *o = *b; o; o = o->next)
        if (o->nodeid == nodeid && o->owner == owner) {
            if (create && (*err = df_lk_note_fh(o, fh)))
                return NULL;
            return o;
        }
    if (!create)
        return NULL;
    char path[40];
    snprintf(path, sizeof path, "/proc/self/fd/%llu", (unsigned long long)fh);
    /* O_RDWR so the owner can take read and write locks; a file we may only read (a
     * read-only backing fs) still gets read locks. */
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && (errno == EROFS || errno == EACCES || errno == ETXTBSY))
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    struct df_lk_owner *o = calloc(1, sizeof *o);
    if (!o) {
        close(fd);
        *err = ENOMEM;
        return NULL;
    }
    o->nodeid = nodeid;
    o->owner = owner;
    o->fd = fd;
    if ((*err = df_lk_note_fh(o, fh))) {
        df_lk_free(o);
        return NULL;
    }
    o->next = *b;
    *b = o;
    __atomic_store_n(&t->count, t->count + 1, __ATOMIC_RELEASE);
    return o;
}

static inline void df_lk_flock(struct flock *fl, uint32_t type, uint64_t start, uint64_t end)
{
    memset(fl, 0, sizeof *fl);
    fl->l_type = (short)type;
    fl->l_whence = SEEK_SET;
    fl->l_start = (off_t)start;
    fl->l_len = end >= DF_LK_OFFSET_MAX ? 0 : (off_t)(end - start + 1);  /* 0: to EOF, forever */
}

/* F_GETLK: fills type/start/end/pid of a lock that would block this one (type F_UNLCK if
 * none). Returns 0 or an errno. */
static int df_lk_get(struct df_locks *t, uint64_t nodeid, uint64_t owner, uint64_t fh,
                     uint32_t *type, uint64_t *start, uint64_t *end, uint32_t *pid)
{
    *pid = 0;
    if (*type == F_UNLCK)
        return 0;
    int err = 0;
    pthread_mutex_lock(&t->lock);
    struct df_lk_owner *o = df_lk_find(t, nodeid, owner, fh, 1, &err);
    if (o) {
        struct flock fl;
        df_lk_flock(&fl, *type, *start, *end);
        if (fcntl(o->fd, F_OFD_GETLK, &fl) < 0) {
            err = errno;
        } else if (fl.l_type == F_UNLCK) {
            *type = F_UNLCK;
        } else {
            *type = (uint32_t)fl.l_type;
            *start = (uint64_t)fl.l_start;
            *end = fl.l_len == 0 ? DF_LK_OFFSET_MAX : (uint64_t)(fl.l_start + fl.l_len - 1);
            if (fl.l_pid > 0)  /* a classic lock by a process on the backing file */
                *pid = (uint32_t)fl.l_pid;
            /* OFD locks carry no pid: name the process of another owner holding locks here */
            for (int i = 0; i < 256 && !*pid; i++)
                for (struct df_lk_owner *q = t->buckets[i]; q; q = q->next)
                    if (q->nodeid == nodeid && q->owner != owner && q->pid) {
                        *pid = q->pid;
                        break;
                    }
        }
    }
    pthread_mutex_unlock(&t->lock);
    return err;
}

/* Take or drop a POSIX lock without waiting (EAGAIN if it conflicts), or with is_flock a
 * BSD lock on the open's own backing fd. Returns 0 or an errno. */
static int df_lk_set(struct df_locks *t, uint64_t nodeid, uint64_t owner, uint32_t pid,
                     uint64_t fh, uint32_t type, uint64_t start, uint64_t end, int is_flock)
{
    if (is_flock) {
        int op = type == F_UNLCK ? LOCK_UN : (type == F_RDLCK ? LOCK_SH : LOCK_EX) | LOCK_NB;
        return flock((int)fh, op) < 0 ? errno : 0;
    }
    int err = 0;
    pthread_mutex_lock(&t->lock);
    struct df_lk_owner *o = df_lk_find(t, nodeid, owner, fh, type != F_UNLCK, &err);
    if (o) {
        struct flock fl;
        df_lk_flock(&fl, type, start, end);
        if (fcntl(o->fd, F_OFD_SETLK, &fl) < 0)
            err = errno == EACCES ? EAGAIN : errno;
        else if (type != F_UNLCK)
            o->pid = pid;
    }
    pthread_mutex_unlock(&t->lock);
    return err;
}

/* The owner closed a file descriptor of this inode (FLUSH): all its POSIX locks on it go. */
static void df_lk_release_owner(struct df_locks *t, uint64_t nodeid, uint64_t owner)
{
    if (!__atomic_load_n(&t->count, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&t->lock);
    struct df_lk_owner **p = &t->buckets[df_lk_hash(nodeid, owner)];
    while (*p) {
        struct df_lk_owner *o = *p;
        if (o->nodeid == nodeid && o->owner == owner) {
            *p = o->next;
            df_lk_free(o);
            __atomic_store_n(&t->count, t->count - 1, __ATOMIC_RELEASE);
            break;
        }
        p = &o->next;
    }
    pthread_mutex_unlock(&t->lock);
}

/* The last reference to open `fh` went (RELEASE): every owner that locked through it has
 * closed a descriptor of this inode, so, as with FLUSH, all its POSIX locks on it go. */
static void df_lk_release_fh(struct df_locks *t, uint64_t nodeid, uint64_t fh)
{
    if (!__atomic_load_n(&t->count, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < 256; i++) {
        struct df_lk_owner **p = &t->buckets[i];
        while (*p) {
            struct df_lk_owner *o = *p;
            int used = 0;
            for (unsigned k = 0; k < o->nfh && !used; k++)
                used = o->fhs[k] == fh;
            if (o->nodeid == nodeid && used) {
                *p = o->next;
                df_lk_free(o);
                __atomic_store_n(&t->count, t->count - 1, __ATOMIC_RELEASE);
                continue;
            }
            p = &o->next;
        }
    }
    pthread_mutex_unlock(&t->lock);
}

#endif
