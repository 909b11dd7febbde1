"""The operations beyond the file tree's names and data: extended attributes, POSIX and BSD
locks, and what only the /dev/fuse transport delivers (O_TMPFILE, fallocate, SEEK_DATA/
SEEK_HOLE, copy_file_range). A mixin of FsOperations (operations.py), same conventions:
fault check first (self._fault), then the syscall on the backing file."""
from __future__ import annotations

import errno
import os
from typing import Any

import pyfuse3
import trio
from pyfuse3 import FUSEError

from chaosfs.faults._gate import Node
from chaosfs.faults.methods import DATA_METHODS
from chaosfs.fs import _hot
from chaosfs.fs.durability import FALLOCATE, WRITE
from chaosfs.fs.handlers import fuse_op
from chaosfs.fs.inodes import proc_path

# Asked by the kernel before a buffered write (file_remove_privs) until it marks the inode
# S_NOSEC; again after each attribute refresh.
CAPS = b"security.capability"


class ExtendedOps:
    """xattrs, locks and the /dev/fuse-only operations of FsOperations."""

    # ---- what only the /dev/fuse transport delivers (pyfuse3 has no handlers for these) --

    @fuse_op("create")
    async def tmpfile(self, parent_inode: int, mode: int, flags: int,
                      ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        """open(dir, O_TMPFILE): an unnamed file in that directory (create rules on the
        directory's path fire). linkat() later names it through LINK, as natively; O_EXCL
        keeps it unlinkable."""
        parent = self.inodes.get(parent_inode)
        await self._fault("create", parent)
        fd = os.open(proc_path(self.inodes.fd(parent)),
                     (flags & ~(os.O_DIRECT | os.O_NOCTTY | os.O_CREAT)) | os.O_TMPFILE | os.O_CLOEXEC,
                     mode & ~ctx.umask)
        try:
            st = self._own_new_file(fd, parent, ctx)
            # The node's pin comes from the open itself: it has no name to be found by.
            node = self.inodes.remember(parent, b"", st, os.open(proc_path(fd), os.O_PATH | os.O_CLOEXEC))
        except BaseException:
            os.close(fd)
            raise
        return self._file_info(fd, node, flags), self._entry(node, st)

    @fuse_op("allocate")
    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        h = self._handle(fh)
        await self._fault("allocate", h.node)
        if self.durable is not None:
            self.armed_data(h.node, h.fd, FALLOCATE, offset, length, mode)
        _hot.fallocate_fd(h.fd, mode, offset, length)

    @fuse_op("lseek")
    async def lseek(self, fh: int, offset: int, whence: int) -> int:
        # SEEK_DATA/SEEK_HOLE as the backing file knows them; the fd's own position is
        # never used for I/O (pread/pwrite), so moving it disturbs nothing.
        h = self._handle(fh)
        await self._fault("lseek", h.node)
        return os.lseek(h.fd, offset, whence)

    @fuse_op("copy_file_range")
    async def copy_file_range(self, fh_in: int, off_in: int, fh_out: int, off_out: int,
                              length: int, flags: int) -> int:
        src, dst = self._handle(fh_in), self._handle(fh_out)
        await self._fault("copy_file_range", dst.node)
        if self.gate.active and (self._rules_touch(src.node, DATA_METHODS)
                                 or self._rules_touch(dst.node, DATA_METHODS)):
            # The kernel then copies with read and write requests, which the rules see in
            # full (corrupt and short included).
            raise FUSEError(errno.EOPNOTSUPP)
        if self.durable is not None:
            self.armed_data(dst.node, dst.fd, WRITE, off_out, length)
        return os.copy_file_range(src.fd, dst.fd, length, off_in, off_out)

    # ---- locks (the cython transport negotiates POSIX and BSD locks and holds them on the
    # backing files: transport/devfuse_locks.h; its workers answer these when no rule
    # touches them, so only matched requests and waits that must wait come here) ---------

    @fuse_op("getlk")
    async def getlk(self, fh: int, owner: int, typ: int, start: int, end: int,
                    ctx: Any) -> tuple[int, int, int, int]:
        h = self._handle(fh)
        await self._fault("getlk", h.node)
        return self.transport.lock_get(h.node.ino, owner, fh, typ, start, end)

    @fuse_op("setlk")
    async def setlk(self, fh: int, owner: int, typ: int, start: int, end: int, is_flock: bool,
                    ctx: Any) -> None:
        await self._setlk("setlk", fh, owner, typ, start, end, is_flock, False, ctx)

    @fuse_op("setlkw")
    async def setlkw(self, fh: int, owner: int, typ: int, start: int, end: int, is_flock: bool,
                     ctx: Any) -> None:
        await self._setlk("setlkw", fh, owner, typ, start, end, is_flock, True, ctx)

    async def _setlk(self, method: str, fh: int, owner: int, typ: int, start: int, end: int,
                     is_flock: bool, wait: bool, ctx: Any) -> None:
        h = self._handle(fh)
        await self._fault(method, h.node)
        pause = 0.001
        while True:
            try:
                self.transport.lock_set(h.node.ino, owner, ctx.pid, fh, typ, start, end, is_flock)
                return
            except OSError as e:
                if not wait or e.errno != errno.EAGAIN:
                    raise
            # Waiting is polling on the trio thread: no thread sits blocked in fcntl, and
            # the transport can cancel the wait when the kernel interrupts the request.
            await trio.sleep(pause)
            pause = min(pause * 2, 0.02)

    # ---- extended attributes ------------------------------------------------------------

    def _xattr_path(self, node: Node) -> tuple[str, bool]:
        # Not (parent, name): a symlink's remembered name may be a hard link removed since.
        # The magic link of its O_PATH fd resolves to the symlink inode, not its target.
        return proc_path(self.inodes.fd(node)), True

    @fuse_op("setxattr")
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        self.no_caps.discard(inode)
        node = self.inodes.get(inode)
        await self._fault("setxattr", node)
        path, follow = self._xattr_path(node)
        os.setxattr(path, name, value, follow_symlinks=follow)

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        # The per-write capability probe, answered without the cold path while no rule exists.
        if name == CAPS and not self.gate.active and inode in self.no_caps:
            raise FUSEError(errno.ENODATA)
        return await self._getxattr(inode, name, ctx)

    @fuse_op("getxattr")
    async def _getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        node = self.inodes.get(inode)
        await self._fault("getxattr", node)
        path, follow = self._xattr_path(node)
        try:
            return os.getxattr(path, name, follow_symlinks=follow)
        except OSError as e:
            if name == CAPS and e.errno == errno.ENODATA:
                self.no_caps.add(inode)
            raise

    @fuse_op("listxattr")
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        node = self.inodes.get(inode)
        await self._fault("listxattr", node)
        path, follow = self._xattr_path(node)
        return [os.fsencode(n) for n in os.listxattr(path, follow_symlinks=follow)]

    @fuse_op("removexattr")
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self.no_caps.discard(inode)
        node = self.inodes.get(inode)
        await self._fault("removexattr", node)
        path, follow = self._xattr_path(node)
        os.removexattr(path, name, follow_symlinks=follow)
