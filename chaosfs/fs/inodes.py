"""The inode table: FUSE inode numbers (ours, never reused) for backing inodes, each with an
O_PATH handle, and the open-file handles.

Everything is resolved through O_PATH handles and *at() calls relative to the parent's
handle, never through absolute paths, so a renamed ancestor or a deep tree cannot leave a
stale or too-long path behind. Backing inodes are keyed by (st_dev, st_ino) only while we
hold an fd or a kernel reference to them.
"""
from __future__ import annotations

import errno
import os
import resource
import stat
from typing import Callable, Optional

import pyfuse3
from pyfuse3 import FUSEError

from chaosfs.faults._gate import Node
from chaosfs.fs._dirents import DirSnapshot
from chaosfs.fs._hot import close_fds

O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
PROMISED_MAX = 1 << 16


def proc_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


# Handle.io: which of the node's open counts this open holds.
IO_UNCOUNTED, IO_CACHED, IO_PASSTHROUGH = 0, 1, 2


class Handle:
    """An open file: its own backing fd (one per open, so O_RDONLY and O_WRONLY opens of one
    inode never share an fd) and the node, for fault matching."""

    __slots__ = ("fd", "node", "is_dir", "entries", "io")

    def __init__(self, fd: int, node: Node, is_dir: bool = False) -> None:
        self.fd = fd
        self.node = node
        self.is_dir = is_dir
        self.entries: Optional[DirSnapshot] = None  # a directory being listed
        self.io = IO_UNCOUNTED


class InodeTable:
    """FUSE inode <-> backing inode bookkeeping, lookup counts and forget, in one place."""

    def __init__(self, root_fd: int, before_close: Callable[[list[int]], None] = lambda inos: None) -> None:
        st = os.fstat(root_fd)
        # Told nodes' numbers before their fds close (the transport may be using the fds).
        self.before_close = before_close
        self.root = Node()
        self.root.ino = pyfuse3.ROOT_INODE
        self.root.fd = root_fd
        self.root.dev, self.root.bino = st.st_dev, st.st_ino
        self.root.is_dir = True
        self.root.lookups = 1 << 62  # the root is never forgotten
        self.by_ino: dict[int, Node] = {self.root.ino: self.root}
        self.by_key: dict[tuple[int, int], Node] = {(st.st_dev, st.st_ino): self.root}
        self._next_ino = pyfuse3.ROOT_INODE + 1
        # Numbers promised in names-only readdir replies to inodes the kernel has not
        # looked up yet: the node made at the lookup takes it, so d_ino == st_ino. Bounded
        # (oldest dropped): past that, a huge listing's later stat may show another number.
        self._promised: dict[tuple[int, int], int] = {}
        # Node fds held open; pinning new nodes stops at half the fd limit, so files can
        # still be opened for I/O when the kernel knows very many inodes.
        self.open_fds = 0
        self.max_pinned = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2

    def __len__(self) -> int:
        return len(self.by_ino)

    def get(self, ino: int) -> Node:
        try:
            return self.by_ino[ino]
        except KeyError:
            raise FUSEError(errno.ESTALE) from None

    def remember(self, parent: Node, name: bytes, st: os.stat_result, fd: int = -1) -> Node:
        """Count one kernel reference to (parent, name), creating the node if new.

        A new node gets its O_PATH fd at once: while the kernel knows the node, the backing
        inode stays allocated, so the backing fs cannot hand its number to a new file (which
        would otherwise be taken for this node: wrong type, wrong name, ESTALE). `fd`, if
        given, is an O_PATH fd `st` came from: adopted as the pin, or closed."""
        key = (st.st_dev, st.st_ino)
        node = self.by_key.get(key)
        if node is not None and node.fd < 0 and (
                node.is_dir != stat.S_ISDIR(st.st_mode) or node.is_link != stat.S_ISLNK(st.st_mode)):
            # An unpinned node whose number the backing fs reused: a different file.
            del self.by_key[key]
            node = None
        if node is None:
            node = Node()
            node.ino = self._promised.pop(key, 0)
            if not node.ino:
                node.ino = self._next_ino
                self._next_ino += 1
            node.dev, node.bino = key
            node.is_dir = stat.S_ISDIR(st.st_mode)
            node.is_link = stat.S_ISLNK(st.st_mode)
            self.by_ino[node.ino] = node
            self.by_key[key] = node
        if node.parent is not parent or node.name != name:
            node.parent = parent
            node.name = name
            node.match_epoch = 0  # another path (a hard link): its rules are matched anew
        node.lookups += 1
        if fd >= 0:
            if node.fd < 0 and self.open_fds < self.max_pinned:
                node.fd = fd
                self.open_fds += 1
            else:
                os.close(fd)
        elif node.fd < 0 and self.open_fds < self.max_pinned:
            try:
                fd = os.open(name, O_PATH, dir_fd=self.fd(parent))
            except (OSError, FUSEError):
                pass  # gone already, or out of fds: stay lazy
            else:
                fst = os.fstat(fd)
                if (fst.st_dev, fst.st_ino) == key:
                    node.fd = fd
                    self.open_fds += 1
                else:
                    os.close(fd)
        return node

    def number_for(self, dev: int, bino: int) -> int:
        """The FUSE inode number of backing inode (dev, bino), promised if not yet known."""
        key = (dev, bino)
        node = self.by_key.get(key)
        if node is not None:
            return node.ino
        ino = self._promised.get(key)
        if ino is None:
            if len(self._promised) >= PROMISED_MAX:
                del self._promised[next(iter(self._promised))]
            ino = self._promised[key] = self._next_ino
            self._next_ino += 1
        return ino

    def listing(self, dir_fd: int, dev: int) -> DirSnapshot:
        """The entries of the open directory `dir_fd` on device `dev`, numbered as
        number_for would number them (in C: DirSnapshot keeps by_key, _promised and
        _next_ino as number_for does)."""
        return DirSnapshot(dir_fd, dev, self, PROMISED_MAX)

    def lookup(self, parent: Node, name: bytes, dirfd: int = -1) -> tuple[Node, os.stat_result]:
        """remember() for a name the kernel is about to learn: open it O_PATH and fstat that
        fd (two syscalls; stat-then-pin would take three and could pin another file)."""
        fd = os.open(name, O_PATH, dir_fd=self.fd(parent) if dirfd < 0 else dirfd)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        return self.remember(parent, name, st, fd), st

    def known(self, st: os.stat_result) -> Optional[Node]:
        return self.by_key.get((st.st_dev, st.st_ino))

    def forget(self, ino: int, n: int) -> None:
        if close_fds(self.forget_many(((ino, n),))):
            raise OSError(errno.EBADF, "closing a forgotten inode's fd failed")

    def forget_many(self, items) -> list[int]:
        """The kernel forgets (ino, n) lookups of each: a node it no longer knows at all is
        dropped. The fds of those are returned for the caller to close (close_fds), the
        transport already told: closing thousands of them (a drop_caches) takes
        milliseconds, which need not hold up the requests behind them."""
        by_ino, by_key, root = self.by_ino, self.by_key, self.root
        inos: list[int] = []
        fds: list[int] = []
        for ino, n in items:
            node = by_ino.get(ino)
            if node is None or node is root:
                continue
            node.lookups -= n
            if node.lookups <= 0:
                del by_ino[ino]
                key = (node.dev, node.bino)
                if by_key.get(key) is node:
                    del by_key[key]
                if node.fd >= 0:
                    inos.append(ino)
                    fds.append(node.fd)
                    node.fd = -1
                node.parent = None
        if fds:
            self.open_fds -= len(fds)
            self.before_close(inos)
        return fds

    def fd(self, node: Node) -> int:
        """The node's O_PATH fd, opened through its parent's on first use and checked to be
        the same backing inode (the backing fs may have reused the name)."""
        if node.fd >= 0:
            return node.fd
        parent = node.parent
        if parent is None:
            raise FUSEError(errno.ESTALE)
        fd = os.open(node.name, O_PATH, dir_fd=self.fd(parent))
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (node.dev, node.bino):
            os.close(fd)
            raise FUSEError(errno.ESTALE)
        node.fd = fd
        self.open_fds += 1
        return fd

    def path_of(self, node: Node) -> str:
        """Mount-relative path without a leading slash ("" for the root), for fault rules."""
        parts = []
        while node is not None and node is not self.root:
            parts.append(node.name)
            node = node.parent
        return os.fsdecode(b"/".join(reversed(parts)))
