"""The hot handlers in plain Python: same behaviour as chaosfs.fs._hot.HotPath, selectable with
``-hot=python`` so perf/ can show what the Cython path buys."""
from __future__ import annotations

import errno
import os
from typing import Any, Callable

import trio
from pyfuse3 import FUSEError

from chaosfs.faults._gate import FaultGate, monotonic
from chaosfs.faults.engine import InjectedError
from chaosfs.faults.methods import METHOD_ID, safe_errno

M_READ, M_WRITE, M_FSYNC, M_FLUSH, M_RELEASE = (
    METHOD_ID[m] for m in ("read", "write", "fsync", "flush", "release"))


def _pread(fd: int, off: int, size: int) -> bytes:
    try:
        return os.pread(fd, size, off)
    except OSError as e:
        raise FUSEError(e.errno or errno.EIO) from None


def pwrite_fuse(fd: int, off: int, buf: Any) -> int:
    try:
        return os.pwrite(fd, buf, off)
    except OSError as e:
        raise FUSEError(e.errno or errno.EIO) from None


async def write_through(ops: Any, fh: int, off: int, buf: bytes,
                        pwrite: Callable[[int, int, bytes], int]) -> int:
    """A WRITE: the gate, then `pwrite(fd, off, data)`, counted in the stats. Also the
    armed power-loss write (chaosfs.fs.power), whose pwrite records the change first."""
    gate = ops.gate
    t0 = monotonic()
    h = ops.handles.get(fh)
    if h is None:  # an fh we never issued: never some other file's fd
        gate.note(M_WRITE, t0, True)
        raise FUSEError(errno.EBADF)
    try:
        v = gate.check(M_WRITE, h.node) if gate.active else None
        n = await v.apply_write(fh, off, buf, pwrite) if v is not None else pwrite(fh, off, buf)
    except FUSEError as e:
        gate.note(M_WRITE, t0, True, isinstance(e, InjectedError))
        raise
    gate.note(M_WRITE, t0, False)
    return n


class PyHotPath:
    def __init__(self) -> None:
        self.handles: dict[int, Any] = {}
        self.gate = FaultGate()
        self.fsync_inline = False

    def _hot_handle(self, method: int, fh: int, t0: float) -> Any:
        h = self.handles.get(fh)
        if h is None:  # an fh we never issued: never some other file's fd
            self.gate.note(method, t0, True)
            raise FUSEError(errno.EBADF)
        return h

    async def read(self, fh: int, off: int, size: int) -> bytes:
        t0 = monotonic()
        h = self._hot_handle(M_READ, fh, t0)
        try:
            if self.gate.active:
                v = self.gate.check(M_READ, h.node)
                if v is not None:
                    data = await v.apply_read(fh, off, size, _pread)
                    self.gate.note(M_READ, t0, False)
                    return data
            data = _pread(fh, off, size)
        except FUSEError as e:
            self.gate.note(M_READ, t0, True, isinstance(e, InjectedError))
            raise
        self.gate.note(M_READ, t0, False)
        return data

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await write_through(self, fh, off, buf, pwrite_fuse)

    async def _plain_fault(self, method: int, fh: int, t0: float) -> None:
        """The delay/errno a rule gives fsync or flush of this open (counted when it fails)."""
        h = self._hot_handle(method, fh, t0)
        if not self.gate.active:
            return
        v = self.gate.check(method, h.node)
        if v is not None:
            try:
                await v.apply_plain()
            except FUSEError as e:
                self.gate.note(method, t0, True, isinstance(e, InjectedError))
                raise

    async def fsync(self, fh: int, datasync: bool) -> None:
        t0 = monotonic()
        await self._plain_fault(M_FSYNC, fh, t0)
        try:
            sync = os.fdatasync if datasync else os.fsync
            if self.fsync_inline:
                sync(fh)
            else:
                await trio.to_thread.run_sync(sync, fh)
        except OSError as e:
            self.gate.note(M_FSYNC, t0, True)
            raise FUSEError(safe_errno(M_FSYNC, e.errno or errno.EIO)) from None
        self.gate.note(M_FSYNC, t0, False)

    async def flush(self, fh: int) -> None:
        t0 = monotonic()
        await self._plain_fault(M_FLUSH, fh, t0)
        try:
            os.close(os.dup(fh))
        except OSError as e:
            self.gate.note(M_FLUSH, t0, True)
            raise FUSEError(safe_errno(M_FLUSH, e.errno or errno.EIO)) from None
        self.gate.note(M_FLUSH, t0, False)

    async def release(self, fh: int) -> None:
        t0 = monotonic()
        h = self.handles.get(fh)
        if h is None:  # not ours: closing it would close some other fd
            self.gate.note(M_RELEASE, t0, True)
            return
        # Checked before the handle is dropped: on a worker, a rule that would make this
        # wait hands the request on (MustWait) with nothing undone yet.
        v = self.gate.check(M_RELEASE, h.node) if self.gate.active else None
        del self.handles[fh]
        if h.io:
            self.release_io(h)  # type: ignore[attr-defined]
        if v is not None:
            await v.apply_delay_only()
        try:
            os.close(fh)
        except OSError:
            pass
        self.gate.note(M_RELEASE, t0, False)
