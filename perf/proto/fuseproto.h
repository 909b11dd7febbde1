/* A measurement prototype, not product code: the smallest /dev/fuse server that exposes one
 * backing file as /f, speaking the FUSE protocol directly (no libfuse) so it can negotiate
 * what Debian 12's libfuse 3.14 cannot: kernel passthrough (FUSE_PASSTHROUGH, Linux >= 6.9).
 *
 * Shared by kpass.c (a C main loop) and cyloop.pyx (a Cython loop that serves the hot
 * opcodes with the GIL released and hands the rest to Python).  Single-threaded.
 */
#ifndef CHAOSFS_FUSEPROTO_H
#define CHAOSFS_FUSEPROTO_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../../chaosfs/transport/fuse740.h"
#define FP_PASSTHROUGH_FLAGS2 FUSE740_PASSTHROUGH_FLAGS2
#define FP_FOPEN_PASSTHROUGH FUSE740_FOPEN_PASSTHROUGH
#define FP_IOC_BACKING_OPEN FUSE740_IOC_BACKING_OPEN
#define FP_IOC_BACKING_CLOSE FUSE740_IOC_BACKING_CLOSE
#define fp_backing_map fuse740_backing_map
#define fp_init_out fuse740_init_out

#define FP_FILE_INO 2
#define FP_BUFSIZE (FUSE_MIN_READ_BUFFER + (1 << 20) + 4096)

struct fp_server {
    int dev;                 /* /dev/fuse */
    int backing_fd;          /* O_PATH-free plain fd of the backing file, for stat */
    const char *backing;     /* path reopened per OPEN */
    int want_passthrough;    /* configured */
    int passthrough;         /* negotiated at INIT */
    char pt_open[4096];      /* per fd: opened in passthrough mode */
    int pt_id, pt_refs;      /* the inode's one backing id, shared by its passthrough opens */
    volatile int fault;      /* a "rule" matches /f: no passthrough at open, READ -> EIO */
    uint64_t hot_ops, cold_ops;
};

static int fp_mount(const char *mnt, const char *name) {
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    char opts[256];
    snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
    char type[64];
    snprintf(type, sizeof type, "fuse.%s", name);
    if (mount(name, mnt, type, MS_NOSUID | MS_NODEV, opts) < 0) {
        int e = errno; close(fd); errno = e; return -1;
    }
    return fd;
}

static int fp_reply(struct fp_server *s, uint64_t unique, int err, const void *p, size_t n) {
    struct fuse_out_header oh = { .len = sizeof oh + (err ? 0 : n), .error = -err, .unique = unique };
    struct iovec iov[2] = { { &oh, sizeof oh }, { (void *)p, err ? 0 : n } };
    ssize_t r = writev(s->dev, iov, err || !n ? 1 : 2);
    return r < 0 ? -errno : 0;
}

static void fp_attr(struct fp_server *s, uint64_t ino, struct fuse_attr *a) {
    memset(a, 0, sizeof *a);
    a->ino = ino;
    if (ino == FUSE_ROOT_ID) {
        a->mode = S_IFDIR | 0755; a->nlink = 2; a->blksize = 4096;
        return;
    }
    struct stat st;
    fstat(s->backing_fd, &st);
    a->size = st.st_size; a->blocks = st.st_blocks;
    a->atime = st.st_atim.tv_sec; a->atimensec = st.st_atim.tv_nsec;
    a->mtime = st.st_mtim.tv_sec; a->mtimensec = st.st_mtim.tv_nsec;
    a->ctime = st.st_ctim.tv_sec; a->ctimensec = st.st_ctim.tv_nsec;
    a->mode = st.st_mode; a->nlink = 1; a->blksize = 4096;
}

/* READ/WRITE/FLUSH/FSYNC on an open file: the requests a passthrough file never sends.
 * Returns 1 if answered, 0 if the request is not a hot one (or a fault must decide). */
static int fp_hot(struct fp_server *s, char *buf, ssize_t n) {
    struct fuse_in_header *h = (struct fuse_in_header *)buf;
    (void)n;
    switch (h->opcode) {
    case FUSE_READ: {
        struct fuse_read_in *in = (struct fuse_read_in *)(h + 1);
        if (s->fault) return 0;
        /* reuse the request buffer for the data: the request is fully parsed */
        char *data = buf + sizeof(struct fuse_out_header);
        uint64_t fh = in->fh, off = in->offset, unique = h->unique; uint32_t size = in->size;
        ssize_t r = pread((int)fh, data, size, (off_t)off);
        struct fuse_out_header *oh = (struct fuse_out_header *)buf;
        if (r < 0) return fp_reply(s, unique, errno, NULL, 0), 1;
        oh->len = sizeof *oh + r; oh->error = 0; oh->unique = unique;
        write(s->dev, buf, oh->len);
        s->hot_ops++;
        return 1;
    }
    case FUSE_WRITE: {
        struct fuse_write_in *in = (struct fuse_write_in *)(h + 1);
        if (s->fault) return 0;
        ssize_t r = pwrite((int)in->fh, (char *)(in + 1), in->size, (off_t)in->offset);
        if (r < 0) return fp_reply(s, h->unique, errno, NULL, 0), 1;
        struct fuse_write_out wo = { .size = (uint32_t)r };
        fp_reply(s, h->unique, 0, &wo, sizeof wo);
        s->hot_ops++;
        return 1;
    }
    case FUSE_FLUSH:
        fp_reply(s, h->unique, 0, NULL, 0);
        return 1;
    case FUSE_FSYNC: {
        struct fuse_fsync_in *in = (struct fuse_fsync_in *)(h + 1);
        int r = (in->fsync_flags & 1) ? fdatasync((int)in->fh) : fsync((int)in->fh);
        fp_reply(s, h->unique, r < 0 ? errno : 0, NULL, 0);
        return 1;
    }
    }
    return 0;
}

/* Everything else, in C (kpass.c's cold path; cyloop.pyx has its own in Python). */
static int fp_cold(struct fp_server *s, char *buf, ssize_t n) {
    struct fuse_in_header *h = (struct fuse_in_header *)buf;
    void *arg = h + 1;
    s->cold_ops++;
    switch (h->opcode) {
    case FUSE_INIT: {
        struct fuse_init_in *in = arg;
        struct fp_init_out o = {0};
        o.major = FUSE_KERNEL_VERSION; o.minor = in->minor < 45 ? in->minor : 45;
        o.max_readahead = in->max_readahead;
        o.flags = (in->flags & (FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_INIT_EXT));
        o.max_background = 16; o.congestion_threshold = 12;
        o.max_write = 1 << 20; o.max_pages = 256; o.time_gran = 1;
        if (s->want_passthrough && (in->flags & FUSE_INIT_EXT) && (in->flags2 & FP_PASSTHROUGH_FLAGS2)) {
            o.flags2 = FP_PASSTHROUGH_FLAGS2;
            o.max_stack_depth = 1;  /* the backing fs is not itself a FUSE passthrough */
            s->passthrough = 1;
        }
        return fp_reply(s, h->unique, 0, &o, sizeof o);
    }
    case FUSE_LOOKUP: {
        if (h->nodeid != FUSE_ROOT_ID || strcmp((char *)arg, "f") != 0)
            return fp_reply(s, h->unique, ENOENT, NULL, 0);
        struct fuse_entry_out e = {0};
        e.nodeid = FP_FILE_INO; e.entry_valid = 1; e.attr_valid = 1;
        fp_attr(s, FP_FILE_INO, &e.attr);
        return fp_reply(s, h->unique, 0, &e, sizeof e);
    }
    case FUSE_FORGET: case FUSE_BATCH_FORGET: case FUSE_INTERRUPT:
        return 0;
    case FUSE_GETATTR: case FUSE_SETATTR: {
        struct fuse_attr_out o = {0};
        o.attr_valid = 1;
        fp_attr(s, h->nodeid, &o.attr);
        return fp_reply(s, h->unique, 0, &o, sizeof o);
    }
    case FUSE_OPEN: {
        struct fuse_open_in *in = arg;
        int fd = open(s->backing, (in->flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT | O_TRUNC)) | O_CLOEXEC);
        if (fd < 0) return fp_reply(s, h->unique, errno, NULL, 0);
        struct fuse_open_out o = {0};
        o.fh = (uint64_t)fd;
        /* A rule matching the file: its new opens must reach us. If the inode is already
         * open in passthrough mode the kernel insists every open of it is passthrough too
         * (else EIO), so the open joins the backing file with FOPEN_DIRECT_IO added: its
         * read/write come to the server, only mmap uses the backing file. */
        if (s->passthrough && fd < 4096 && (!s->fault || s->pt_refs > 0)) {
            /* The kernel serves this open's read/write/mmap from the backing file from now
             * on. All passthrough opens of one inode must share one backing file, so the id
             * is opened once per inode and kept while any of them is open (the opener also
             * looks it up only after our reply). */
            if (s->pt_refs == 0) {
                struct fp_backing_map m = { .fd = fd };
                s->pt_id = ioctl(s->dev, FP_IOC_BACKING_OPEN, &m);
            }
            if (s->pt_id >= 0) {
                s->pt_refs++;
                s->pt_open[fd] = 1;
                o.open_flags = FP_FOPEN_PASSTHROUGH | (s->fault ? FOPEN_DIRECT_IO : 0);
                o.padding = (uint32_t)s->pt_id;       /* backing_id */
                return fp_reply(s, h->unique, 0, &o, sizeof o);
            }
        }
        /* an open a rule matches is direct_io, as chaosfs does */
        if (s->fault) o.open_flags = FOPEN_DIRECT_IO;
        if (in->flags & O_DIRECT) o.open_flags |= FOPEN_DIRECT_IO;
        return fp_reply(s, h->unique, 0, &o, sizeof o);
    }
    case FUSE_RELEASE: {
        struct fuse_release_in *in = arg;
        int fd = (int)in->fh;
        if (fd < 4096 && s->pt_open[fd]) {
            s->pt_open[fd] = 0;
            if (--s->pt_refs == 0) {
                uint32_t bid = (uint32_t)s->pt_id;
                ioctl(s->dev, FP_IOC_BACKING_CLOSE, &bid);
            }
        }
        close(fd);
        return fp_reply(s, h->unique, 0, NULL, 0);
    }
    case FUSE_READ:   /* only here when a fault is on */
        return fp_reply(s, h->unique, EIO, NULL, 0);
    case FUSE_WRITE:
        return fp_reply(s, h->unique, EIO, NULL, 0);
    case FUSE_OPENDIR:
        return fp_reply(s, h->unique, 0, &(struct fuse_open_out){0}, sizeof(struct fuse_open_out));
    case FUSE_READDIR: case FUSE_RELEASEDIR: case FUSE_ACCESS:
        return fp_reply(s, h->unique, 0, NULL, 0);
    case FUSE_STATFS: {
        struct statvfs sv; struct fuse_statfs_out o = {0};
        fstatvfs(s->backing_fd, &sv);
        o.st.blocks = sv.f_blocks; o.st.bfree = sv.f_bfree; o.st.bavail = sv.f_bavail;
        o.st.files = sv.f_files; o.st.ffree = sv.f_ffree; o.st.bsize = sv.f_bsize;
        o.st.frsize = sv.f_frsize; o.st.namelen = 255;
        return fp_reply(s, h->unique, 0, &o, sizeof o);
    }
    case FUSE_DESTROY:
        return -1;
    }
    (void)n;
    return fp_reply(s, h->unique, ENOSYS, NULL, 0);
}

static int fp_init(struct fp_server *s, const char *backing, const char *mnt, const char *name,
                   int passthrough) {
    memset(s, 0, sizeof *s);
    s->backing = backing;
    s->want_passthrough = passthrough;
    s->backing_fd = open(backing, O_RDONLY | O_CLOEXEC);
    if (s->backing_fd < 0) return -1;
    s->dev = fp_mount(mnt, name);
    return s->dev < 0 ? -1 : 0;
}

#endif
