# Included by _devfuse.pyx (before DevFuseTransport): what the handlers receive and how
# their results become reply structs, and the request a worker queued.

# ---- what the handlers receive ------------------------------------------------------------

class RequestContext:
    """What pyfuse3's RequestContext carries: the caller's ids and, for creates, its umask."""
    __slots__ = ("uid", "gid", "pid", "umask")

    def __init__(self, uid, gid, pid, umask=0):
        self.uid, self.gid, self.pid, self.umask = uid, gid, pid, umask


class SetattrAttrs:
    __slots__ = ("st_mode", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")


class SetattrFields:
    __slots__ = ("update_atime", "update_mtime", "update_ctime", "update_mode", "update_uid",
                 "update_gid", "update_size")


cdef class DirBuffer:
    """The READDIR(PLUS) reply being built: readdir_reply() appends while it fits."""
    cdef bytearray buf
    cdef size_t limit
    cdef bint plus

    def __cinit__(self, size_t limit, bint plus):
        self.buf = bytearray()
        self.limit = limit
        self.plus = plus


cdef inline uint64_t _sec(double t):
    return <uint64_t>t if t > 0 else 0


cdef inline uint32_t _nsec(double t):
    return <uint32_t>((t - <uint64_t>t) * 1e9) if t > 0 else 0


cdef void _fill_attr(fuse_attr *a, object e):
    cdef long long at = e.st_atime_ns, mt = e.st_mtime_ns, ct = e.st_ctime_ns
    a.ino = e.st_ino
    a.size = e.st_size
    a.blocks = e.st_blocks
    a.atime = at // 1000000000
    a.atimensec = at % 1000000000
    a.mtime = mt // 1000000000
    a.mtimensec = mt % 1000000000
    a.ctime = ct // 1000000000
    a.ctimensec = ct % 1000000000
    a.mode = e.st_mode
    a.nlink = e.st_nlink
    a.uid = e.st_uid
    a.gid = e.st_gid
    a.rdev = e.st_rdev
    a.blksize = e.st_blksize
    a.flags = 0


cdef void _fill_entry(fuse_entry_out *o, object e):
    memset(o, 0, sizeof(fuse_entry_out))
    o.nodeid = e.st_ino
    o.generation = e.generation
    o.entry_valid = _sec(e.entry_timeout)
    o.entry_valid_nsec = _nsec(e.entry_timeout)
    o.attr_valid = _sec(e.attr_timeout)
    o.attr_valid_nsec = _nsec(e.attr_timeout)
    _fill_attr(&o.attr, e)


cdef bytes _entry_bytes(object e):
    cdef fuse_entry_out o
    _fill_entry(&o, e)
    return PyBytes_FromStringAndSize(<char *>&o, sizeof(o))


cdef bytes _cstr(const char *p, size_t avail):
    """A NUL-terminated name inside the request (never past its end)."""
    return PyBytes_FromStringAndSize(p, strnlen(p, avail))


cdef class _Request:
    """One request taken off the workers' queue; owns the copied bytes."""
    cdef df_msg *m
    cdef fuse_in_header *h
    cdef char *arg
    cdef size_t alen
    cdef object owner   # the transport: a ring request's reply reaches into its server

    def __dealloc__(self):
        df_msg_free(self.m)  # a ring entry dropped unanswered still goes back (EIO)


cdef _Request _wrap(df_msg *m, owner):
    cdef _Request r = _Request.__new__(_Request)
    r.m = m
    r.owner = owner
    r.h = <fuse_in_header *>m.data
    r.arg = m.data + IN_HDR
    r.alen = m.len - IN_HDR
    return r


cdef inline void _need(size_t have, size_t want) except *:
    if have < want:
        raise FUSEError(E.EINVAL)


cdef uint32_t _open_flags(fi):
    cdef uint32_t f = 0
    if fi.direct_io:
        f |= FOPEN_DIRECT_IO
    if fi.keep_cache:
        f |= FOPEN_KEEP_CACHE
    if fi.nonseekable:
        f |= FOPEN_NONSEEKABLE
    return f
