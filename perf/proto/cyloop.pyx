# cython: language_level=3, boundscheck=False, wraparound=False
"""Measurement prototype: a Cython /dev/fuse loop. Hot opcodes (READ/WRITE/FLUSH/FSYNC) are
answered in C with the GIL released; everything else is handed to a Python object, the
way chaosfs's Operations would keep serving the cold path. One file (/f), one thread.

    python -m cyloop BACKING MOUNTPOINT   (after building, see perf/proto/__init__.py)
"""
import os
import signal
import struct
import sys

from libc.errno cimport errno, EINTR, EAGAIN, ENOENT, ENODEV
from libc.stdint cimport uint64_t, uint32_t
from libc.stdlib cimport free
from cpython.bytes cimport PyBytes_FromStringAndSize

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)

cdef extern from "fuseproto.h" nogil:
    int FP_BUFSIZE
    struct fp_server:
        int dev
        int passthrough
        int fault
        uint64_t hot_ops
        uint64_t cold_ops
    struct fuse_in_header:
        uint32_t len
        uint32_t opcode
        uint64_t unique
        uint64_t nodeid
    int fp_init(fp_server *s, const char *backing, const char *mnt, const char *name, int pt)
    int fp_hot(fp_server *s, char *buf, ssize_t n)
    int fp_cold(fp_server *s, char *buf, ssize_t n)
    int fp_reply(fp_server *s, uint64_t unique, int err, const void *p, size_t n)
    void *aligned_alloc(size_t alignment, size_t size)

cdef fp_server S
HEADER = 40
OP_LOOKUP, OP_GETATTR, OP_OPEN, OP_RELEASE = 1, 3, 14, 18


def reply(uint64_t unique, int err, bytes data=b""):
    fp_reply(&S, unique, err, <const char *>data, len(data))


class ColdOps:
    """The Python side: lookups, attributes and opens (where a fault rule would be matched
    and a passthrough decision made). Returns False to let the C defaults answer."""

    def __init__(self, backing):
        self.backing = backing

    def _attr(self, nodeid):
        if nodeid == 1:
            mode, size, nlink, t = 0o40755, 0, 2, 0
        else:
            st = os.stat(self.backing)
            mode, size, nlink, t = st.st_mode, st.st_size, 1, int(st.st_mtime)
        # struct fuse_attr (88 bytes)
        return struct.pack("<QQQQQQIIIIIIIIII", nodeid, size, (size + 511) // 512, t, t, t,
                           0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0)

    def handle(self, int opcode, uint64_t unique, uint64_t nodeid, bytes arg):
        if opcode == OP_LOOKUP:
            if nodeid != 1 or arg.rstrip(b"\0") != b"f":
                reply(unique, ENOENT)
            else:
                reply(unique, 0, struct.pack("<QQQQII", 2, 0, 1, 1, 0, 0) + self._attr(2))
            return True
        if opcode == OP_GETATTR:
            reply(unique, 0, struct.pack("<QII", 1, 0, 0) + self._attr(nodeid))
            return True
        if opcode == OP_OPEN:
            flags = struct.unpack_from("<I", arg)[0]
            strip = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_DIRECT | os.O_TRUNC
            try:
                fd = os.open(self.backing, (flags & ~strip) | os.O_CLOEXEC)
            except OSError as e:
                reply(unique, e.errno)
                return True
            reply(unique, 0, struct.pack("<QIi", fd, 1 if flags & os.O_DIRECT else 0, 0))
            return True
        if opcode == OP_RELEASE:
            os.close(struct.unpack_from("<Q", arg)[0])
            reply(unique, 0)
            return True
        return False


def serve(str backing, str mnt, ops=None):
    cdef bytes b = os.fsencode(backing), m = os.fsencode(mnt)
    cdef char *buf = <char *>aligned_alloc(4096, FP_BUFSIZE)
    cdef ssize_t n = 0
    cdef int err = 0
    cdef fuse_in_header *h = <fuse_in_header *>buf
    if fp_init(&S, b, m, b"cyloop", 0) < 0:
        raise OSError(errno, f"mounting {mnt}: {os.strerror(errno)}")
    ops = ops or ColdOps(backing)
    try:
        while True:
            with nogil:
                while True:
                    n = read(S.dev, buf, FP_BUFSIZE)
                    if n < 0:
                        err = errno
                        if err == EINTR or err == EAGAIN or err == ENOENT:
                            continue
                        break
                    if not fp_hot(&S, buf, n):
                        break
            if n < 0:
                if err == ENODEV:
                    return
                raise OSError(err, os.strerror(err))
            S.cold_ops += 1
            if not ops.handle(h.opcode, h.unique, h.nodeid,
                              PyBytes_FromStringAndSize(buf + 40, n - 40)):
                if fp_cold(&S, buf, n) < 0:
                    return
    finally:
        free(buf)


def main():
    if len(sys.argv) != 3:
        print("usage: cyloop BACKING MOUNTPOINT", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the runner unmounts after us
    serve(sys.argv[1], sys.argv[2])
    return 0
