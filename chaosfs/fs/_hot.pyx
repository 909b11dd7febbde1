# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The per-request hot path of the pyfuse3 transport: read, write, fsync, flush, release.

Handlers take the backing fd straight from the file handle (fh *is* the backing fd), so the
no-rule path is: one flag test, one syscall with the GIL released, one bytes object.
An error a rule injected (engine.InjectedError) is counted apart from the backing fd's.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.errno cimport errno, EINTR, EINVAL, EBADF
from libc.string cimport memcpy
from posix.types cimport off_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import array as _array
import os
import trio
from pyfuse3 import FUSEError

from chaosfs.faults import methods as _m
from chaosfs.faults.engine import InjectedError
from chaosfs.faults._gate cimport FaultGate, Node, N_METHODS, now_s as _now

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void *buf, size_t count, off_t offset)
    ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
    int close(int fd)
    int dup(int fd)
    int fsync(int fd)
    int fdatasync(int fd)

cdef extern from "<stdio.h>" nogil:
    int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                  unsigned int flags)

cdef extern from "<fcntl.h>" nogil:
    int AT_EMPTY_PATH
    int AT_SYMLINK_NOFOLLOW
    int AT_FDCWD
    int fchownat(int dirfd, const char *pathname, unsigned int owner, unsigned int group, int flags)
    int fallocate(int fd, int mode, off_t offset, off_t len)

cdef extern from "<sys/stat.h>" nogil:
    long UTIME_NOW
    long UTIME_OMIT
    int utimensat(int dirfd, const char *pathname, const timespec times[2], int flags)

# Method ids the hot handlers use; checked against methods.py at import.
cdef enum:
    M_READ = 1
    M_WRITE = 2
    M_FSYNC = 6
    M_FLUSH = 7
    M_RELEASE = 8

assert _m.METHOD_ID["read"] == M_READ and _m.METHOD_ID["write"] == M_WRITE
assert _m.METHOD_ID["fsync"] == M_FSYNC and _m.METHOD_ID["flush"] == M_FLUSH
assert _m.METHOD_ID["release"] == M_RELEASE
assert len(_m.ALL_METHODS) <= N_METHODS


cdef object _pread(int fd, off_t off, size_t size):
    cdef ssize_t n
    cdef object buf = PyBytes_FromStringAndSize(NULL, size)
    cdef char *p = PyBytes_AS_STRING(buf)
    with nogil:
        n = pread(fd, p, size, off)
        while n < 0 and errno == EINTR:
            n = pread(fd, p, size, off)
    if n < 0:
        raise FUSEError(errno)
    if <size_t>n < size:
        return buf[:n]
    return buf


cdef size_t _pwrite(int fd, off_t off, object data) except? 0:
    cdef Py_buffer view
    cdef ssize_t n
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            n = pwrite(fd, view.buf, view.len, off)
            while n < 0 and errno == EINTR:
                n = pwrite(fd, view.buf, view.len, off)
    finally:
        PyBuffer_Release(&view)
    if n < 0:
        raise FUSEError(errno)
    return <size_t>n


def pread_fd(int fd, off_t off, size_t size):
    return _pread(fd, off, size)


def pwrite_fd(int fd, off_t off, data):
    return _pwrite(fd, off, data)


def _sync(int fd, bint datasync):
    cdef int rc
    with nogil:
        rc = fdatasync(fd) if datasync else fsync(fd)
    return errno if rc < 0 else 0


import logging
_log = logging.getLogger("chaosfs.hot")


cdef object _internal(str what):
    # Anything but FUSEError escaping a handler would end pyfuse3's loop (and the mount).
    _log.exception("%s: unexpected error in the fault path", what)
    return FUSEError(5)


_safe_errno = _m.safe_errno


cdef class HotPath:
    """read/write/fsync/flush/release for pyfuse3. `handles` maps fh -> Handle (fd, node);
    an fh not in it was never issued by us (EBADF), whatever fd number it happens to be."""

    def __cinit__(self):
        self.handles = {}
        self.gate = FaultGate()

    cdef object _bad_fh(self, int method, double t0):
        self.gate.record(method, t0, True)
        return FUSEError(EBADF)

    async def read(self, fh, off, size):
        cdef double t0 = _now()
        cdef object h = self.handles.get(fh)
        cdef int fd
        cdef object v
        if h is None:
            raise self._bad_fh(M_READ, t0)
        fd = fh
        if self.gate.active:
            try:
                v = self.gate.check(M_READ, h.node)
            except Exception:
                raise _internal("read")
            if v is not None:
                try:
                    data = await v.apply_read(fd, off, size, pread_fd)
                except FUSEError as e:
                    self.gate.record_failed(M_READ, t0, isinstance(e, InjectedError))
                    raise
                except Exception:
                    self.gate.record(M_READ, t0, True)
                    raise _internal("read")
                self.gate.record(M_READ, t0, False)
                return data
        try:
            data = _pread(fd, off, size)
        except FUSEError:
            self.gate.record(M_READ, t0, True)
            raise
        self.gate.record(M_READ, t0, False)
        return data

    async def write(self, fh, off, buf):
        cdef double t0 = _now()
        cdef object h = self.handles.get(fh)
        cdef int fd
        cdef size_t n
        if h is None:
            raise self._bad_fh(M_WRITE, t0)
        fd = fh
        if self.gate.active:
            try:
                v = self.gate.check(M_WRITE, h.node)
            except Exception:
                raise _internal("write")
            if v is not None:
                try:
                    n = await v.apply_write(fd, off, buf, pwrite_fd)
                except FUSEError as e:
                    self.gate.record_failed(M_WRITE, t0, isinstance(e, InjectedError))
                    raise
                except Exception:
                    self.gate.record(M_WRITE, t0, True)
                    raise _internal("write")
                self.gate.record(M_WRITE, t0, False)
                return n
        try:
            n = _pwrite(fd, off, buf)
        except FUSEError:
            self.gate.record(M_WRITE, t0, True)
            raise
        self.gate.record(M_WRITE, t0, False)
        return n

    async def fsync(self, fh, datasync):
        cdef double t0 = _now()
        cdef object h = self.handles.get(fh)
        cdef int fd
        cdef int err
        if h is None:
            raise self._bad_fh(M_FSYNC, t0)
        fd = fh
        if self.gate.active:
            try:
                v = self.gate.check(M_FSYNC, h.node)
            except Exception:
                raise _internal("fsync")
            if v is not None:
                try:
                    await v.apply_plain()
                except FUSEError as e:
                    self.gate.record_failed(M_FSYNC, t0, isinstance(e, InjectedError))
                    raise
        if self.fsync_inline:
            # -fsync=inline: no thread hop (a WAL writer's fsync=1 pattern gains most), but
            # the loop serves nothing else while the disk syncs.
            err = _sync(fd, datasync)
        else:
            # fsync can take tens of ms: a worker thread keeps the loop serving other files.
            err = await trio.to_thread.run_sync(_sync, fd, bool(datasync))
        self.gate.record(M_FSYNC, t0, err != 0)
        if err:
            raise FUSEError(_safe_errno(M_FSYNC, err))

    async def flush(self, fh):
        cdef double t0 = _now()
        cdef object h = self.handles.get(fh)
        cdef int fd
        cdef int nfd, rc, err
        if h is None:
            raise self._bad_fh(M_FLUSH, t0)
        fd = fh
        if self.gate.active:
            try:
                v = self.gate.check(M_FLUSH, h.node)
            except Exception:
                raise _internal("flush")
            if v is not None:
                try:
                    await v.apply_plain()
                except FUSEError as e:
                    self.gate.record_failed(M_FLUSH, t0, isinstance(e, InjectedError))
                    raise
        # close(dup(fd)) gives the backing fs the close-time hook (and error) of a real close.
        with nogil:
            nfd = dup(fd)
            rc = close(nfd) if nfd >= 0 else -1
            err = errno
        self.gate.record(M_FLUSH, t0, rc < 0)
        if rc < 0:
            raise FUSEError(_safe_errno(M_FLUSH, err))

    async def release(self, fh):
        cdef double t0 = _now()
        cdef int fd = fh
        h = self.handles.get(fh)
        if h is None:
            # Never ours (or released already): closing it would close some other fd.
            self.gate.record(M_RELEASE, t0, True)
            return
        v = None
        if self.gate.active:
            # Checked before the handle is dropped: on a worker, a rule that would make
            # this wait hands the request on (MustWait) with nothing undone yet.
            try:
                v = self.gate.check(M_RELEASE, h.node)
            except Exception:
                _internal("release")
        del self.handles[fh]
        if h.io:
            self.release_io(h)
        if v is not None:
            try:
                await v.apply_delay_only()
            except Exception:
                _internal("release")
        with nogil:
            close(fd)
        self.gate.record(M_RELEASE, t0, False)


# ---- syscalls Python's os module cannot express ------------------------------------------

def close_fds(list fds):
    """Close every fd in `fds` with one release of the GIL (os.close releases it once per
    fd, and a worker thread that takes it meanwhile holds it for a whole request). The
    number that failed."""
    cdef Py_ssize_t i, n = len(fds)
    cdef int failed = 0
    if n == 0:
        return 0
    cdef int[:] view = _array.array("i", fds)
    with nogil:
        for i in range(n):
            if close(view[i]) < 0 and errno != EINTR:
                failed += 1
    return failed


def rename2(int olddirfd, bytes old, int newdirfd, bytes new, unsigned int flags):
    cdef int rc
    cdef const char *o = old
    cdef const char *n = new
    with nogil:
        rc = renameat2(olddirfd, o, newdirfd, n, flags)
    if rc < 0:
        raise OSError(errno, os.strerror(errno))


def chown_fd(int fd, long long uid, long long gid):
    """fchownat(fd, "", ..., AT_EMPTY_PATH): works on O_PATH fds and on symlinks."""
    cdef int rc
    with nogil:
        rc = fchownat(fd, b"", <unsigned int>uid, <unsigned int>gid,
                      AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
    if rc < 0:
        raise OSError(errno, os.strerror(errno))


def utimens_at(int dirfd, bytes path, object atime_ns, object mtime_ns, bint nofollow):
    """utimensat with UTIME_OMIT for a None time (what setattr's missing field means)."""
    cdef timespec ts[2]
    cdef int rc
    cdef const char *p = path
    if atime_ns is None:
        ts[0].tv_sec = 0
        ts[0].tv_nsec = UTIME_OMIT
    else:
        ts[0].tv_sec = atime_ns // 1000000000
        ts[0].tv_nsec = atime_ns % 1000000000
    if mtime_ns is None:
        ts[1].tv_sec = 0
        ts[1].tv_nsec = UTIME_OMIT
    else:
        ts[1].tv_sec = mtime_ns // 1000000000
        ts[1].tv_nsec = mtime_ns % 1000000000
    with nogil:
        rc = utimensat(dirfd, p, ts, AT_SYMLINK_NOFOLLOW if nofollow else 0)
    if rc < 0:
        raise OSError(errno, os.strerror(errno))


def fallocate_fd(int fd, int mode, off_t offset, off_t length):
    cdef int rc
    with nogil:
        rc = fallocate(fd, mode, offset, length)
    if rc < 0:
        raise OSError(errno, os.strerror(errno))


cdef extern from "<sys/stat.h>" nogil:
    """
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE
    #endif
    """
    struct statx_timestamp:
        long long tv_sec
        unsigned int tv_nsec
    struct statx:
        unsigned int stx_mask, stx_blksize
        unsigned long long stx_attributes
        unsigned int stx_nlink, stx_uid, stx_gid
        unsigned short stx_mode
        unsigned long long stx_ino, stx_size, stx_blocks, stx_attributes_mask
        statx_timestamp stx_atime, stx_btime, stx_ctime, stx_mtime
        unsigned int stx_rdev_major, stx_rdev_minor
    int c_statx "statx"(int dirfd, const char *path, int flags, unsigned int mask, statx *buf)


def statx_fd(int fd, unsigned int mask, int flags):
    """statx(2) of an fd (AT_EMPTY_PATH): (mask, blksize, attributes, nlink, uid, gid, mode,
    ino, size, blocks, attributes_mask, atime s, ns, btime s, ns, ctime s, ns, mtime s, ns,
    rdev major, minor)."""
    cdef statx b
    cdef int rc
    with nogil:
        rc = c_statx(fd, b"", flags | AT_EMPTY_PATH, mask, &b)
    if rc < 0:
        raise OSError(errno, os.strerror(errno))
    return (b.stx_mask, b.stx_blksize, b.stx_attributes, b.stx_nlink, b.stx_uid, b.stx_gid,
            b.stx_mode, b.stx_ino, b.stx_size, b.stx_blocks, b.stx_attributes_mask,
            b.stx_atime.tv_sec, b.stx_atime.tv_nsec, b.stx_btime.tv_sec, b.stx_btime.tv_nsec,
            b.stx_ctime.tv_sec, b.stx_ctime.tv_nsec, b.stx_mtime.tv_sec, b.stx_mtime.tv_nsec,
            b.stx_rdev_major, b.stx_rdev_minor)
