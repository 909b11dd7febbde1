/* The inodes whose GETATTR the workers answer themselves: FUSE inode number -> the O_PATH fd
 * the inode table holds for it, the attribute timeout to reply with, and the fault gate's
 * epoch at which no rule touched its getattr.
 *
 * The file-system logic offers an inode after it looked it up or served a getattr (and
 * found no getattr rule on its path); a worker then answers with one fstat(2), without the
 * GIL. The offer goes stale when the gate's epoch moves (any rule change, any rename), so a
 * rule added on the path takes effect on the next GETATTR: the worker passes the request up
 * and the Python handler, which sees the rule, decides again. The logic takes the inode
 * back (df_attrs_drop) before it closes the fd: the fstat runs under the read lock, so a
 * worker never stats an fd number that has been closed and reused for another file.
 *
 * Open addressing with linear probing; a dropped slot becomes a tombstone, and the table is
 * rebuilt when live slots and tombstones fill 3/4 of it.
 */
#ifndef CHAOSFS_DEVFUSE_ATTRS_H
#define CHAOSFS_DEVFUSE_ATTRS_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <linux/fuse.h>

#define DF_ATTRS_EMPTY 0          /* FUSE never uses inode number 0 */
#define DF_ATTRS_GONE UINT64_MAX  /* a tombstone */

struct df_attr_ent {
    uint64_t ino;
    uint64_t epoch;
    uint64_t valid_ns;            /* attribute timeout */
    int fd;
};

struct df_attrs {
    pthread_rwlock_t lock;
    struct df_attr_ent *t;
    size_t cap;                   /* a power of two, or 0 before the first offer */
    size_t used;                  /* live + tombstones */
    size_t live;
};

static inline size_t df_attrs_hash(uint64_t ino, size_t cap)
{
    return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static int df_attrs_init(struct df_attrs *a)
{
    a->t = NULL;
    a->cap = a->used = a->live = 0;
    /* Writers first: a storm of GETATTRs must not starve the handler (which holds the
     * handlers' lock) that offers or drops an inode. */
    pthread_rwlockattr_t at;
    if (pthread_rwlockattr_init(&at))
        return -1;
    pthread_rwlockattr_setkind_np(&at, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&a->lock, &at) ? -1 : 0;
    pthread_rwlockattr_destroy(&at);
    return rc;
}

/* The slot holding `ino`, or NULL. Under either lock. */
static inline struct df_attr_ent *df_attrs_find(const struct df_attrs *a, uint64_t ino)
{
    if (!a->cap)
        return NULL;
    for (size_t i = df_attrs_hash(ino, a->cap);; i = (i + 1) & (a->cap - 1)) {
        struct df_attr_ent *e = &a->t[i];
        if (e->ino == ino)
            return e;
        if (e->ino == DF_ATTRS_EMPTY)
            return NULL;
    }
}

/* Rebuild at `cap` slots (live entries only). Under the write lock. */
static int df_attrs_rebuild(struct df_attrs *a, size_t cap)
{
    struct df_attr_ent *t = calloc(cap, sizeof *t);
    if (!t)
        return -1;
    for (size_t i = 0; i < a->cap; i++) {
        struct df_attr_ent *e = &a->t[i];
        if (e->ino == DF_ATTRS_EMPTY || e->ino == DF_ATTRS_GONE)
            continue;
        size_t j = df_attrs_hash(e->ino, cap);
        while (t[j].ino != DF_ATTRS_EMPTY)
            j = (j + 1) & (cap - 1);
        t[j] = *e;
    }
    free(a->t);
    a->t = t;
    a->cap = cap;
    a->used = a->live;
    return 0;
}

/* Offer (or refresh) `ino`. Returns -1 (ENOMEM) if the table cannot grow: the inode is then
 * simply not answered here. */
static int df_attrs_offer(struct df_attrs *a, uint64_t ino, int fd, uint64_t valid_ns,
                          uint64_t epoch)
{
    if (ino == DF_ATTRS_EMPTY || ino == DF_ATTRS_GONE)
        return 0;
    /* Most offers repeat one already made (every lookup of a known name): a read lock
     * tells, and the workers keep answering meanwhile. */
    pthread_rwlock_rdlock(&a->lock);
    const struct df_attr_ent *same = df_attrs_find(a, ino);
    int known = same && same->fd == fd && same->valid_ns == valid_ns && same->epoch == epoch;
    pthread_rwlock_unlock(&a->lock);
    if (known)
        return 0;
    pthread_rwlock_wrlock(&a->lock);
    struct df_attr_ent *e = df_attrs_find(a, ino);
    if (!e) {
        if ((a->used + 1) * 4 > a->cap * 3) {
            size_t cap = a->cap ? a->cap : 1024;
            while ((a->live + 1) * 2 > cap)
                cap *= 2;  /* rebuilt at most half full: tombstones do not count */
            if (df_attrs_rebuild(a, cap) < 0) {
                pthread_rwlock_unlock(&a->lock);
                errno = ENOMEM;
                return -1;
            }
        }
        size_t i = df_attrs_hash(ino, a->cap);
        while (a->t[i].ino != DF_ATTRS_EMPTY && a->t[i].ino != DF_ATTRS_GONE)
            i = (i + 1) & (a->cap - 1);
        if (a->t[i].ino == DF_ATTRS_EMPTY)
            a->used++;
        a->live++;
        e = &a->t[i];
        e->ino = ino;
    }
    e->fd = fd;
    e->valid_ns = valid_ns;
    e->epoch = epoch;
    pthread_rwlock_unlock(&a->lock);
    return 0;
}

/* Take `ino` back; when this returns no worker is using its fd. */
static void df_attrs_drop(struct df_attrs *a, uint64_t ino)
{
    pthread_rwlock_wrlock(&a->lock);
    struct df_attr_ent *e = df_attrs_find(a, ino);
    if (e) {
        e->ino = DF_ATTRS_GONE;
        e->fd = -1;
        a->live--;
    }
    pthread_rwlock_unlock(&a->lock);
}

static void df_attrs_free(struct df_attrs *a)
{
    free(a->t);
    a->t = NULL;
    a->cap = a->used = a->live = 0;
}

/* The GETATTR reply for `ino` if it is offered and the offer is current (`epoch`: the gate's
 * now, or 0 while no rule exists, when every offer is). Returns 1 and fills `o`, 0 if the
 * request must go to the Python handler, or -errno if fstat failed. */
static inline int df_attrs_getattr(struct df_attrs *a, uint64_t ino, uint64_t epoch,
                                   struct fuse_attr_out *o)
{
    struct stat st;
    int r;
    pthread_rwlock_rdlock(&a->lock);
    const struct df_attr_ent *e = df_attrs_find(a, ino);
    if (!e || (epoch && e->epoch != epoch)) {
        pthread_rwlock_unlock(&a->lock);
        return 0;
    }
    uint64_t valid = e->valid_ns;
    r = fstat(e->fd, &st) < 0 ? -errno : 1;
    pthread_rwlock_unlock(&a->lock);
    if (r < 0)
        return r;
    memset(o, 0, sizeof *o);
    o->attr_valid = valid / 1000000000u;
    o->attr_valid_nsec = (uint32_t)(valid % 1000000000u);
    struct fuse_attr *at = &o->attr;
    at->ino = ino;
    at->size = (uint64_t)st.st_size;
    at->blocks = (uint64_t)st.st_blocks;
    at->atime = (uint64_t)st.st_atim.tv_sec;
    at->atimensec = (uint32_t)st.st_atim.tv_nsec;
    at->mtime = (uint64_t)st.st_mtim.tv_sec;
    at->mtimensec = (uint32_t)st.st_mtim.tv_nsec;
    at->ctime = (uint64_t)st.st_ctim.tv_sec;
    at->ctimensec = (uint32_t)st.st_ctim.tv_nsec;
    at->mode = st.st_mode;
    at->nlink = (uint32_t)st.st_nlink;
    at->uid = st.st_uid;
    at->gid = st.st_gid;
    at->rdev = (uint32_t)st.st_rdev;
    at->blksize = (uint32_t)st.st_blksize;
    return 1;
}

#endif
