# C-level declarations of the /dev/fuse transport: the kernel's protocol structs (from
# <linux/fuse.h>, protocol 7.38, plus the 7.40 passthrough pieces in fuse740.h) and the
# worker core in devfuse_core.h. The Python-facing API is _devfuse.pyi.
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "<linux/fuse.h>" nogil:
    enum:
        FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_SETATTR, FUSE_READLINK, FUSE_SYMLINK
        FUSE_MKNOD, FUSE_MKDIR, FUSE_UNLINK, FUSE_RMDIR, FUSE_RENAME, FUSE_LINK, FUSE_OPEN
        FUSE_READ, FUSE_WRITE, FUSE_STATFS, FUSE_RELEASE, FUSE_FSYNC, FUSE_SETXATTR
        FUSE_GETXATTR, FUSE_LISTXATTR, FUSE_REMOVEXATTR, FUSE_FLUSH, FUSE_INIT, FUSE_OPENDIR
        FUSE_READDIR, FUSE_RELEASEDIR, FUSE_FSYNCDIR, FUSE_ACCESS, FUSE_CREATE
        FUSE_INTERRUPT, FUSE_DESTROY, FUSE_BATCH_FORGET, FUSE_READDIRPLUS, FUSE_RENAME2
        FUSE_NOTIFY_REPLY, FUSE_NOTIFY_INVAL_INODE, FUSE_NOTIFY_INVAL_ENTRY
        FUSE_FALLOCATE, FUSE_LSEEK, FUSE_COPY_FILE_RANGE, FUSE_GETLK, FUSE_SETLK, FUSE_SETLKW
        FUSE_TMPFILE
        FUSE_POSIX_LOCKS, FUSE_FLOCK_LOCKS, FUSE_LK_FLOCK
        FUSE_ASYNC_READ, FUSE_ATOMIC_O_TRUNC, FUSE_BIG_WRITES, FUSE_AUTO_INVAL_DATA
        FUSE_DO_READDIRPLUS, FUSE_READDIRPLUS_AUTO, FUSE_ASYNC_DIO, FUSE_PARALLEL_DIROPS, FUSE_MAX_PAGES
        FUSE_HANDLE_KILLPRIV_V2, FUSE_INIT_EXT
        FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE, FATTR_ATIME, FATTR_MTIME, FATTR_FH
        FATTR_ATIME_NOW, FATTR_MTIME_NOW, FATTR_CTIME, FATTR_KILL_SUIDGID
        FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_NONSEEKABLE
        FUSE_OPEN_KILL_SUIDGID, FUSE_FSYNC_FDATASYNC

    struct fuse_attr:
        uint64_t ino, size, blocks, atime, mtime, ctime
        uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags
    struct fuse_kstatfs:
        uint64_t blocks, bfree, bavail, files, ffree
        uint32_t bsize, namelen, frsize, padding
    struct fuse_in_header:
        uint32_t len, opcode
        uint64_t unique, nodeid
        uint32_t uid, gid, pid
    struct fuse_out_header:
        uint32_t len
        int32_t error
        uint64_t unique
    struct fuse_init_in:
        uint32_t major, minor, max_readahead, flags, flags2
    struct fuse_entry_out:
        uint64_t nodeid, generation, entry_valid, attr_valid
        uint32_t entry_valid_nsec, attr_valid_nsec
        fuse_attr attr
    struct fuse_attr_out:
        uint64_t attr_valid
        uint32_t attr_valid_nsec, dummy
        fuse_attr attr
    struct fuse_forget_in:
        uint64_t nlookup
    struct fuse_forget_one:
        uint64_t nodeid, nlookup
    struct fuse_batch_forget_in:
        uint32_t count
    struct fuse_getattr_in:
        uint32_t getattr_flags
        uint64_t fh
    struct fuse_setattr_in:
        uint32_t valid
        uint64_t fh, size, atime, mtime, ctime
        uint32_t atimensec, mtimensec, ctimensec, mode, uid, gid
    struct fuse_mknod_in:
        uint32_t mode, rdev, umask
    struct fuse_mkdir_in:
        uint32_t mode, umask
    struct fuse_rename_in:
        uint64_t newdir
    struct fuse_rename2_in:
        uint64_t newdir
        uint32_t flags
    struct fuse_link_in:
        uint64_t oldnodeid
    struct fuse_open_in:
        uint32_t flags, open_flags
    struct fuse_create_in:
        uint32_t flags, mode, umask, open_flags
    struct fuse_release_in:
        uint64_t fh
    struct fuse_flush_in:
        uint64_t fh
        uint64_t lock_owner
    struct fuse_file_lock:
        uint64_t start, end
        uint32_t type, pid
    struct fuse_lk_in:
        uint64_t fh, owner
        fuse_file_lock lk
        uint32_t lk_flags
    struct fuse_lk_out:
        fuse_file_lock lk
    struct fuse_interrupt_in:
        uint64_t unique
    struct fuse_read_in:
        uint64_t fh, offset
        uint32_t size
    struct fuse_write_in:
        uint64_t fh, offset
        uint32_t size, write_flags
    struct fuse_write_out:
        uint32_t size, padding
    struct fuse_statfs_out:
        fuse_kstatfs st
    struct fuse_fsync_in:
        uint64_t fh
        uint32_t fsync_flags
    struct fuse_setxattr_in:
        uint32_t size, flags
    struct fuse_getxattr_in:
        uint32_t size
    struct fuse_getxattr_out:
        uint32_t size, padding
    struct fuse_access_in:
        uint32_t mask
    struct fuse_fallocate_in:
        uint64_t fh, offset, length
        uint32_t mode
    struct fuse_lseek_in:
        uint64_t fh, offset
        uint32_t whence
    struct fuse_lseek_out:
        uint64_t offset
    struct fuse_copy_file_range_in:
        uint64_t fh_in, off_in, nodeid_out, fh_out, off_out, len, flags
    struct fuse_dirent:
        uint64_t ino, off
        uint32_t namelen, type
    struct fuse_notify_inval_inode_out:
        uint64_t ino
        int64_t off, len
    struct fuse_notify_inval_entry_out:
        uint64_t parent
        uint32_t namelen, flags

cdef extern from "fuse740.h" nogil:
    uint32_t FUSE740_PASSTHROUGH_FLAGS2
    uint32_t FUSE740_FOPEN_PASSTHROUGH
    unsigned long FUSE740_IOC_BACKING_OPEN
    unsigned long FUSE740_IOC_BACKING_CLOSE
    struct fuse740_backing_map:
        int32_t fd
        uint32_t flags
        uint64_t padding
    struct fuse740_init_out:
        uint32_t major, minor, max_readahead, flags
        uint16_t max_background, congestion_threshold
        uint32_t max_write, time_gran
        uint16_t max_pages, map_alignment
        uint32_t flags2, max_stack_depth
    enum:
        FUSE739_STATX
    struct fuse739_sx_time:
        int64_t tv_sec
        uint32_t tv_nsec
    struct fuse739_statx:
        uint32_t mask, blksize
        uint64_t attributes
        uint32_t nlink, uid, gid
        uint16_t mode
        uint64_t ino, size, blocks, attributes_mask
        fuse739_sx_time atime, btime, ctime, mtime
        uint32_t rdev_major, rdev_minor, dev_major, dev_minor
    struct fuse739_statx_in:
        uint32_t getattr_flags
        uint64_t fh
        uint32_t sx_flags, sx_mask
    struct fuse739_statx_out:
        uint64_t attr_valid
        uint32_t attr_valid_nsec, flags
        fuse739_statx stat
    struct fuse740_open_out:
        uint64_t fh
        uint32_t open_flags
        int32_t backing_id

cdef extern from "devfuse_gate.h" nogil:
    enum:
        DF_HOT_READ, DF_HOT_WRITE, DF_HOT_FLUSH, DF_HOT_FSYNC, DF_HOT_LOCK, DF_HOT_ALL, DF_MAX_CHOICES,
        DF_HIT_SLOTS,
        DF_CORRUPT_NONE, DF_CORRUPT_ZERO, DF_CORRUPT_RANDOM, DF_CORRUPT_BITFLIP
    struct df_crule:
        uint8_t methods
        uint8_t corrupt_mode
        uint16_t nchoices[4]
        uint32_t slot
        uint64_t threshold
        int32_t err
        uint32_t corrupt_len, corrupt_occ
        double short_frac
        double expires
        int16_t choices[4][48]
    struct df_view:
        uint8_t direct
        uint8_t in_c
        uint32_t n
        df_crule r[1]
    struct df_gate:
        uint64_t *hits
    int df_gate_init(df_gate *g, size_t nviews, uint64_t *hits)
    int df_view_publish(df_gate *g, uint64_t fh, df_view *v)
    void df_gate_tick(df_gate *g)


cdef extern from "devfuse_locks.h" nogil:
    struct df_locks:
        int count
    int df_lk_get(df_locks *t, uint64_t nodeid, uint64_t owner, uint64_t fh, uint32_t *type,
                  uint64_t *start, uint64_t *end, uint32_t *pid)
    int df_lk_set(df_locks *t, uint64_t nodeid, uint64_t owner, uint32_t pid, uint64_t fh,
                  uint32_t type, uint64_t start, uint64_t end, int is_flock)
    void df_lk_release_owner(df_locks *t, uint64_t nodeid, uint64_t owner)
    void df_lk_release_fh(df_locks *t, uint64_t nodeid, uint64_t fh)


cdef extern from "devfuse_attrs.h" nogil:
    struct df_attrs:
        size_t live
    int df_attrs_offer(df_attrs *a, uint64_t ino, int fd, uint64_t valid_ns, uint64_t epoch)
    void df_attrs_drop(df_attrs *a, uint64_t ino)
    void df_attrs_free(df_attrs *a)


cdef extern from "devfuse_core.h" nogil:
    enum:
        DF_MAX_WORKERS, DF_BUCKETS, DF_METHODS, DF_M_READ, DF_M_WRITE, DF_M_FSYNC, DF_M_FLUSH
        DF_M_GETLK, DF_M_SETLK, DF_M_SETLKW, DF_M_GETATTR, DF_FORGET_WAKE
    struct df_msg:
        df_msg *next
        int fd
        uint32_t len
        int replied
        char data[1]
    struct df_server:
        int dev
        int nworkers
        int fds[64]
        int started
        size_t bufsize
        int killpriv_v2
        const int *gate_active
        const unsigned long long *gate_epoch
        unsigned long long *counts
        unsigned long long *errors
        unsigned long long *hist
        unsigned long long *injected
        unsigned char *issued
        df_gate gate
        df_locks locks
        df_attrs attrs
        size_t nissued
        int efd
        int ended
        int nq
        int (*py_take)(df_server *s, df_msg *m) noexcept nogil
        void (*py_exit)() noexcept nogil
        int py_keep
        void *py_owner
        const int *gate_may_wait
        int trio_busy
        int detached
        fuse_forget_one *forgets
    int df_start(df_server *s, int nworkers)
    df_msg *df_take(df_server *s)
    fuse_forget_one *df_forgets_take(df_server *s, size_t *n)
    size_t df_forgets_pending(df_server *s)
    int df_reply(int fd, uint64_t unique, int err, const void *p, size_t n)
    void df_set_issued(df_server *s, uint64_t fh, int kind)
    int df_init_server(df_server *s)
    void df_join(df_server *s, double seconds)
    int chaosfs_clear_setid(int fd)


cdef extern from "devfuse_uring.h" nogil:
    enum:
        DF_FUSE_OVER_IO_URING_FLAGS2, DF_URING_MINOR, DF_UQ_INITIAL, DF_UQ_MAX
    int df_uring_probe()
    int df_uring_start(df_server *s, int nq)
    int df_uring_refuse(df_server *s)
    void df_uring_stop(df_server *s, double seconds)
    int df_msg_reply(df_msg *m, int err, const void *p, size_t n)
    void df_msg_free(df_msg *m)
