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

#endif
