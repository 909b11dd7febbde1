from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "<dirent.h>" nogil:
    # glibc >= 2.30 (_GNU_SOURCE): the raw records, without a DIR stream's buffering
    ssize_t getdents64(int fd, void *buf, size_t n)

# What getdents64 fills in (the kernel's struct linux_dirent64).
cdef struct linux_dirent64:
    uint64_t d_ino
    int64_t d_off
    uint16_t d_reclen
    uint8_t d_type
    char d_name[1]

# One entry of a plain READDIR reply (include/uapi/linux/fuse.h): the name follows, the
# record is padded to 8 bytes.
cdef struct fuse_dirent:
    uint64_t ino
    uint64_t off
    uint32_t namelen
    uint32_t type


cdef class DirSnapshot:
    cdef char *recs         # fuse_dirent records, back to back
    cdef size_t size
    cdef size_t cap
    cdef uint32_t *at       # at[i]: where record i starts; at[count] == size
    cdef Py_ssize_t count

    cdef _grow(self, size_t need)
    cdef _grow_at(self, size_t cap)
