# cython: language_level=3, boundscheck=False, wraparound=False
"""A directory's entries, read once per listing pass: one getdents64 loop, no Python object
per entry.

Kept as the records of a plain READDIR reply (FUSE's `struct fuse_dirent`), numbered with
the inode numbers the kernel will see for these names once it looks them up (d_ino ==
st_ino) and with offsets that are their index + 1. So a names-only batch is one copy of a
run of records, and the offsets the kernel sends back stay valid while entries come and go
in the backing directory (a new pass, at offset 0, reads it again).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.errno cimport errno
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset, strlen

from chaosfs.faults._gate cimport Node

cdef extern from "<unistd.h>" nogil:
    long lseek(int fd, long off, int whence)

cdef enum:
    READ_CHUNK = 65536   # one getdents64 call's buffer


cdef inline size_t _rec_size(size_t namelen) nogil:
    return (sizeof(fuse_dirent) + namelen + 7) & ~(<size_t>7)


cdef uint64_t _number(uint64_t dev, uint64_t bino, dict known, dict promised,
                      uint64_t *next_ino) except 0:
    """The inode table's number_for, answered here: a Python call per entry would cost more
    than the rest of the listing (a cold listing promises a number to every entry)."""
    key = (dev, bino)
    cdef PyObject *hit = PyDict_GetItem(known, key)
    if hit != NULL:
        return (<Node>hit).ino
    hit = PyDict_GetItem(promised, key)
    if hit != NULL:
        return <object>hit
    cdef uint64_t ino = next_ino[0]
    next_ino[0] = ino + 1
    promised[key] = ino
    return ino


cdef class DirSnapshot:
    """The entries of the open directory `fd` (rewound first), but "." and "..", each
    numbered as the inode table's number_for numbers them: `table` is that InodeTable,
    whose `by_key` ((dev, ino) -> Node), `_promised` ((dev, ino) -> number, oldest first,
    at most `max_promised`) and `_next_ino` are read and updated here."""

    def __cinit__(self, int fd, uint64_t dev, table, Py_ssize_t max_promised):
        self.recs = NULL
        self.at = NULL
        self.size = self.cap = 0
        self.count = 0
        cdef char *chunk = <char *>malloc(READ_CHUNK)
        cdef size_t at_cap = 256
        self.at = <uint32_t *>malloc(at_cap * sizeof(uint32_t))
        if chunk == NULL or self.at == NULL:
            free(chunk)
            raise MemoryError()
        cdef ssize_t n
        cdef size_t pos, namelen, rec
        cdef linux_dirent64 *d
        cdef fuse_dirent *f
        cdef const char *name
        cdef dict known = table.by_key
        cdef dict promised = table._promised
        cdef uint64_t next_ino = table._next_ino
        try:
            if lseek(fd, 0, 0) < 0:
                raise OSError(errno, "lseek")
            while True:
                n = getdents64(fd, chunk, READ_CHUNK)
                if n < 0:
                    raise OSError(errno, "getdents64")
                if n == 0:
                    break
                pos = 0
                while pos < <size_t>n:
                    d = <linux_dirent64 *>(chunk + pos)
                    pos += d.d_reclen
                    name = d.d_name
                    if name[0] == b'.' and (name[1] == 0 or (name[1] == b'.' and name[2] == 0)):
                        continue
                    namelen = strlen(name)
                    rec = _rec_size(namelen)
                    if self.size + rec > self.cap:
                        self._grow(rec)
                    if <size_t>self.count + 2 > at_cap:
                        at_cap *= 2
                        self._grow_at(at_cap)
                    f = <fuse_dirent *>(self.recs + self.size)
                    memset(f, 0, rec)
                    f.ino = _number(dev, d.d_ino, known, promised, &next_ino)
                    f.off = self.count + 1
                    f.namelen = <uint32_t>namelen
                    f.type = d.d_type
                    memcpy(<char *>f + sizeof(fuse_dirent), name, namelen)
                    self.at[self.count] = <uint32_t>self.size
                    self.size += rec
                    self.count += 1
            self.at[self.count] = <uint32_t>self.size
        finally:
            free(chunk)
            table._next_ino = next_ino
            if len(promised) > max_promised:  # the oldest promises go first
                for key in list(promised)[:len(promised) - max_promised]:
                    del promised[key]

    cdef _grow(self, size_t need):
        cdef size_t cap = self.cap * 2 if self.cap else READ_CHUNK
        while cap < self.size + need:
            cap *= 2
        if cap > 0xffffffff:
            raise OSError(75, "directory too large to list")  # EOVERFLOW
        cdef char *p = <char *>realloc(self.recs, cap)
        if p == NULL:
            raise MemoryError()
        self.recs, self.cap = p, cap

    cdef _grow_at(self, size_t cap):
        cdef uint32_t *p = <uint32_t *>realloc(self.at, cap * sizeof(uint32_t))
        if p == NULL:
            raise MemoryError()
        self.at = p

    def __dealloc__(self):
        free(self.recs)
        free(self.at)

    def __len__(self):
        return self.count

    def name(self, Py_ssize_t i) -> bytes:
        if i < 0 or i >= self.count:
            raise IndexError(i)
        cdef fuse_dirent *f = <fuse_dirent *>(self.recs + self.at[i])
        return PyBytes_FromStringAndSize(<char *>f + sizeof(fuse_dirent), f.namelen)

    def span(self, Py_ssize_t start, size_t room) -> bytes:
        """The whole records from entry `start` on that fit in `room` bytes (b"" past the
        end or when not even one fits)."""
        if start < 0 or start >= self.count:
            return b""
        cdef size_t begin = self.at[start]
        cdef Py_ssize_t lo = start, hi = self.count
        cdef Py_ssize_t mid
        # the last record end within begin + room: the ends are sorted
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.at[mid] - begin <= room:
                lo = mid
            else:
                hi = mid - 1
        return PyBytes_FromStringAndSize(self.recs + begin, self.at[lo] - begin)
