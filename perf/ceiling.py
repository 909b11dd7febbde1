"""The pyfuse3 ceiling: the fastest file system pyfuse3 can serve, as a benchmark variant.

Reads return constant bytes and writes are discarded (no syscall), so what fio measures
here is pyfuse3's own dispatch cost; chaosfs's overhead is its distance from this. Files are
in memory (name -> size) so fio can lay out, stat and reopen them.

    python -m perf.ceiling MOUNTPOINT PIDFILE [BACKING]

With BACKING (a flat directory), the same file system does real I/O instead: one backing fd
per open, os.pread/os.pwrite/os.fsync on it (`ceiling-io`). The distance from `ceiling` to
`ceiling-io` is what the backing file system itself costs; chaosfs's own overhead is its
distance from `ceiling-io`.
"""
from __future__ import annotations

import errno
import os
import signal
import stat
import sys

import pyfuse3
import trio

ZEROS = bytes(1 << 20)


class CeilingFS(pyfuse3.Operations):
    def __init__(self) -> None:
        super().__init__()
        self.names: dict[bytes, int] = {}   # name -> inode
        self.sizes: dict[int, int] = {}     # inode -> size
        self.next_ino = pyfuse3.ROOT_INODE + 1

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.entry_timeout = e.attr_timeout = 1.0
        if ino == pyfuse3.ROOT_INODE:
            e.st_mode, e.st_nlink = stat.S_IFDIR | 0o755, 2
        else:
            e.st_mode, e.st_nlink, e.st_size = stat.S_IFREG | 0o644, 1, self.sizes[ino]
        e.st_blksize = 4096
        e.st_blocks = (e.st_size + 511) // 512
        return e

    async def lookup(self, parent, name, ctx):
        if name not in self.names:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self.names[name])

    async def getattr(self, ino, ctx):
        return self._attr(ino)

    async def setattr(self, ino, attr, fields, fh, ctx):
        if fields.update_size:
            self.sizes[ino] = attr.st_size
        return self._attr(ino)

    async def create(self, parent, name, mode, flags, ctx):
        ino = self.names.setdefault(name, self.next_ino)
        if ino == self.next_ino:
            self.next_ino += 1
            self.sizes[ino] = 0
        return pyfuse3.FileInfo(fh=ino), self._attr(ino)

    async def open(self, ino, flags, ctx):
        return pyfuse3.FileInfo(fh=ino, direct_io=bool(flags & os.O_DIRECT))

    async def read(self, fh, off, size):
        return ZEROS[:max(0, min(size, self.sizes[fh] - off))]

    async def write(self, fh, off, buf):
        if off + len(buf) > self.sizes[fh]:
            self.sizes[fh] = off + len(buf)
        return len(buf)

    async def fsync(self, fh, datasync):
        pass

    async def unlink(self, parent, name, ctx):
        self.sizes.pop(self.names.pop(name), None)

    async def opendir(self, ino, ctx):
        return ino

    async def readdir(self, fh, start, token):
        items = list(self.names.items())
        for i in range(start, len(items)):
            if not pyfuse3.readdir_reply(token, items[i][0], self._attr(items[i][1]), i + 1):
                return

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 24
        s.f_files = s.f_ffree = s.f_favail = 1 << 20
        s.f_namemax = 255
        return s


class IoCeilingFS(CeilingFS):
    def __init__(self, backing: str) -> None:
        super().__init__()
        self.dir = os.open(backing, os.O_RDONLY | os.O_DIRECTORY)
        self.ino_name: dict[int, bytes] = {}
        for name in os.listdir(backing.encode()):
            self._add(name)

    def _add(self, name: bytes) -> int:
        ino = self.names.setdefault(name, self.next_ino)
        if ino == self.next_ino:
            self.next_ino += 1
            self.ino_name[ino] = name
        self.sizes[ino] = os.stat(name, dir_fd=self.dir).st_size
        return ino

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        if ino != pyfuse3.ROOT_INODE:
            self.sizes[ino] = os.stat(self.ino_name[ino], dir_fd=self.dir).st_size
        return super()._attr(ino)

    async def setattr(self, ino, attr, fields, fh, ctx):
        if fields.update_size:
            os.truncate(os.path.join(f"/proc/self/fd/{self.dir}", os.fsdecode(self.ino_name[ino])), attr.st_size)
        return self._attr(ino)

    async def create(self, parent, name, mode, flags, ctx):
        fd = os.open(name, os.O_CREAT | os.O_RDWR, 0o644, dir_fd=self.dir)
        return pyfuse3.FileInfo(fh=fd), self._attr(self._add(name))

    async def open(self, ino, flags, ctx):
        fd = os.open(self.ino_name[ino], os.O_RDWR, dir_fd=self.dir)
        return pyfuse3.FileInfo(fh=fd, direct_io=bool(flags & os.O_DIRECT))

    async def release(self, fh):
        os.close(fh)

    async def read(self, fh, off, size):
        return os.pread(fh, size, off)

    async def write(self, fh, off, buf):
        return os.pwrite(fh, buf, off)

    async def fsync(self, fh, datasync):
        os.fsync(fh)

    async def unlink(self, parent, name, ctx):
        os.unlink(name, dir_fd=self.dir)
        self.ino_name.pop(self.names.pop(name), None)


async def _serve(pidfile: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pyfuse3.main)
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
            async for _ in sigs:
                break
        nursery.cancel_scope.cancel()


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print("usage: python -m perf.ceiling MOUNTPOINT PIDFILE [BACKING]", file=sys.stderr)
        return 2
    fs = IoCeilingFS(sys.argv[3]) if len(sys.argv) == 4 else CeilingFS()
    pyfuse3.init(fs, sys.argv[1], {"fsname=ceiling", "subtype=ceiling"})
    try:
        trio.run(_serve, sys.argv[2])
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
