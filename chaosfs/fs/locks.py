"""POSIX record locks and BSD flock()s, held on the backing files so they are real across
processes (and against programs using the backing directory directly).

The kernel names a POSIX lock's holder by a lock owner (one per process's file table), not
by an open file. Each (inode, owner) pair gets a backing open of its own and takes Linux
open-file-description locks on it (F_OFD_*): two owners conflict as two processes do, and
all of one owner's locks merge and split as one process's do, whichever of its fds asked.
An owner's locks on a file go when it closes any fd of that file (FLUSH names the owner),
as POSIX says. flock() belongs to the open itself: it is taken on that open's backing fd
and goes with it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Optional

# struct flock on Linux x86-64/arm64: short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid (padded to 32 bytes).
_FLOCK = struct.Struct("hhqqi4x")
OFFSET_MAX = (1 << 63) - 1
F_RDLCK, F_WRLCK, F_UNLCK = fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK


def _flock_arg(typ: int, start: int, end: int) -> bytes:
    length = 0 if end >= OFFSET_MAX else end - start + 1  # 0: to the end of the file, forever
    return _FLOCK.pack(typ, os.SEEK_SET, start, length, 0)


class LockTable:
    """Backing opens per (inode, lock owner), and who holds them (for F_GETLK's l_pid)."""

    def __init__(self) -> None:
        self._fds: dict[tuple[int, int], int] = {}
        self._pids: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._fds)

    def _fd(self, ino: int, owner: int, path: str, typ: int) -> int:
        key = (ino, owner)
        fd = self._fds.get(key)
        if fd is None:
            # O_RDWR so the owner can take both read and write locks; a file we may only read
            # (a read-only backing fs) still gets read locks.
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
            except OSError as e:
                if e.errno not in (errno.EROFS, errno.EACCES, errno.ETXTBSY) or typ == F_WRLCK:
                    raise
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
            self._fds[key] = fd
        return fd

    def getlk(self, ino: int, owner: int, path: str, typ: int, start: int,
              end: int) -> tuple[int, int, int, int]:
        """(type, start, end, pid) of a lock that would block this one, or F_UNLCK."""
        if typ == F_UNLCK:
            return F_UNLCK, start, end, 0
        fd = self._fd(ino, owner, path, typ)
        t, _, s, ln, _ = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock_arg(typ, start, end)))
        if t == F_UNLCK:
            return F_UNLCK, start, end, 0
        e = OFFSET_MAX if ln == 0 else s + ln - 1
        # OFD locks have no pid: name the process of another owner holding locks here.
        pid = next((p for (i, o), p in self._pids.items() if i == ino and o != owner), 0)
        return t, s, e, pid

    def setlk(self, ino: int, owner: int, pid: int, path: str, typ: int, start: int,
              end: int) -> None:
        """Take or drop a lock without waiting: BlockingIOError (EAGAIN) if it conflicts."""
        if typ == F_UNLCK and (ino, owner) not in self._fds:
            return  # nothing of this owner's to drop
        fd = self._fd(ino, owner, path, typ)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_arg(typ, start, end))
        if typ != F_UNLCK:
            self._pids[(ino, owner)] = pid

    def release_owner(self, ino: int, owner: int) -> None:
        """The owner closed a file descriptor of this inode: all its locks on it go."""
        fd = self._fds.pop((ino, owner), None)
        self._pids.pop((ino, owner), None)
        if fd is not None:
            os.close(fd)  # drops every OFD lock taken through it

    def release_inode(self, ino: int) -> None:
        for key in [k for k in self._fds if k[0] == ino]:
            self.release_owner(*key)


def flock(fd: int, typ: int, wait: bool) -> None:
    """A BSD lock on one open's backing fd (its lifetime is that open's)."""
    op = fcntl.LOCK_UN if typ == F_UNLCK else fcntl.LOCK_SH if typ == F_RDLCK else fcntl.LOCK_EX
    fcntl.flock(fd, op if wait or op == fcntl.LOCK_UN else op | fcntl.LOCK_NB)


def lock_errno(e: OSError) -> Optional[int]:
    """EAGAIN/EACCES from a non-blocking attempt: a conflict (the caller may wait)."""
    return e.errno if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) else None
