/* FUSE protocol 7.40 (Linux 6.9) additions missing from Debian 12's <linux/fuse.h> (7.38),
 * for kernel passthrough. Values from the kernel's include/uapi/linux/fuse.h. Shared by
 * _fuseconn.c and the perf/proto prototypes. */
#ifndef CHAOSFS_FUSE740_H
#define CHAOSFS_FUSE740_H

#include <stdint.h>
#include <sys/ioctl.h>

#define FUSE740_PASSTHROUGH_FLAGS2 (1u << 5)   /* FUSE_PASSTHROUGH = 1ULL << 37 */
#define FUSE740_FOPEN_PASSTHROUGH (1u << 7)
struct fuse740_backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
#define FUSE740_IOC_BACKING_OPEN _IOW(229, 1, struct fuse740_backing_map)
#define FUSE740_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/* fuse_init_out: max_stack_depth follows flags2. */
struct fuse740_init_out {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth;
    uint16_t request_timeout, unused[11];
};

/* fuse_open_out: backing_id took the place of padding. */
struct fuse740_open_out { uint64_t fh; uint32_t open_flags; int32_t backing_id; };

/* FUSE_STATX (7.39, Linux 6.6): statx(2) with the fields getattr lacks (btime). */
#define FUSE739_STATX 52
struct fuse739_sx_time { int64_t tv_sec; uint32_t tv_nsec; int32_t reserved; };
struct fuse739_statx {
    uint32_t mask, blksize;
    uint64_t attributes;
    uint32_t nlink, uid, gid;
    uint16_t mode, spare0;
    uint64_t ino, size, blocks, attributes_mask;
    struct fuse739_sx_time atime, btime, ctime, mtime;
    uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
    uint64_t spare2[14];
};
struct fuse739_statx_in { uint32_t getattr_flags, reserved; uint64_t fh; uint32_t sx_flags, sx_mask; };
struct fuse739_statx_out {
    uint64_t attr_valid;
    uint32_t attr_valid_nsec, flags;
    uint64_t spare[2];
    struct fuse739_statx stat;
};

#endif
