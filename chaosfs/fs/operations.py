"""The file-system logic: every FUSE operation, in the Operations class both transports call.

Names are resolved through the inode table's O_PATH handles and *at() calls (inodes.py).
Each handler asks the fault gate first (self._fault*), then does the syscall; handlers.py
says how one fails and is counted. The hot ones (read/write/fsync/flush/release) come from
``chaosfs.fs._hot.HotPath`` or its pure-Python twin in ``chaosfs.fs.hot_python``; on the
cython transport, C workers answer most of them before they reach Python
(chaosfs/transport/devfuse_core.h). What the transport may answer without this logic, and
the walk that keeps it honest after a rule change, is offers.py; xattrs, locks and the
/dev/fuse-only operations are extended.py. The transport is reached only through the
Transport it is given (chaosfs/transport/__init__.py).
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from typing import Any, Callable, Optional

import pyfuse3
import trio
from pyfuse3 import FUSEError

from chaosfs.faults._gate import FaultGate, Node
from chaosfs.faults.engine import InjectedError
from chaosfs.faults.methods import ATTR_METHODS, DATA_METHODS
from chaosfs.fs import _hot
from chaosfs.fs.durability import TRUNCATE, Durability
from chaosfs.fs.extended import ExtendedOps
from chaosfs.fs.handlers import M, fuse_op, setattr_methods
from chaosfs.fs.inodes import IO_CACHED, Handle, InodeTable, proc_path
from chaosfs.fs.offers import GETATTR_METHODS, LOOKUP_METHODS, TransportOffers
from chaosfs.transport import Transport

log = logging.getLogger("chaosfs.fs")

AT_FDCWD = -100
# Flags the kernel may pass that must not reach the backing open: O_DIRECT is answered with
# direct_io instead (the kernel's buffers are not aligned for it); O_NOFOLLOW was honoured
# by the kernel's own walk (a symlink never gets here), and our open goes through the
# /proc magic link of the node's O_PATH handle, which O_NOFOLLOW would refuse (ELOOP).
OPEN_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_DIRECT | os.O_NOFOLLOW


class CacheConfig:
    """Kernel cache settings while no rule exists (see README, 'Caches and faults')."""

    def __init__(self, attr_timeout: float = 1.0, entry_timeout: float = 1.0,
                 keep_cache: bool = True) -> None:
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.keep_cache = keep_cache


class FsOperations(TransportOffers, ExtendedOps, pyfuse3.Operations):
    """Every FUSE operation but the hot five; reads top to bottom in the order the kernel
    tends to call them. Mixed with a HotPath class by ``make_operations``."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False
    passthrough = False  # -passthrough=unmatched (make_operations)
    # The armed power-loss model (chaosfs.fs.power), or None: every change to the backing
    # tree is told to it first.
    durable: Optional[Durability] = None

    gate: FaultGate
    handles: dict[int, Handle]

    def setup(self, original: str, transport: Transport,
              cache: Optional[CacheConfig] = None) -> None:
        self.transport = transport
        self.root_fd = os.open(original, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.inodes = InodeTable(self.root_fd, before_close=transport.attrs_drop_many)
        self.cache = cache or CacheConfig()
        self.gate.path_of = self.inodes.path_of
        # Inodes known to carry no security.capability (cleared by set/removexattr, forget).
        self.no_caps: set[int] = set()
        self.passthrough_warned = False

    def _handle(self, fh: int, is_dir: bool = False) -> Handle:
        """The open behind a file handle. One we never issued (fh 0 from a kernel that
        believes we have no open, or a stale one) is EBADF, never some other file's fd."""
        h = self.handles.get(fh)
        if h is None or h.is_dir != is_dir:
            raise FUSEError(errno.EBADF)
        return h

    # ---- attributes ---------------------------------------------------------------------

    def _rules_touch(self, node: Node, methods: frozenset) -> bool:
        """Whether a rule on one of `methods` matches this node (match cached per epoch).
        Only such nodes lose kernel caching: rules cost the files they don't match nothing."""
        gate = self.gate
        if not gate.active or not gate.ruled_any(methods):
            return False
        if node.match_epoch != gate.epoch:
            gate.match(node)
        return any(r.touches(methods) for r in node.matched)

    def _timeouts(self, node: Node) -> tuple[float, float]:
        """(entry, attribute) cache timeouts the kernel gets for this node."""
        entry, attr = self.cache.entry_timeout, self.cache.attr_timeout
        if self.gate.active and self._rules_touch(node, ATTR_METHODS):
            # Uncached only as far as the rule needs, so it fires once per syscall as on a
            # disk: a lookup rule sees every walk to the name; a getattr rule sees every
            # stat of a file. A directory keeps its attributes cached: with
            # default_permissions every walk through it re-reads them with the same GETATTR
            # a stat sends, and a rule on `dir` must not fire (or fail) for `dir/file`.
            if self._rules_touch(node, LOOKUP_METHODS):
                entry = 0.0
            if not node.is_dir and self._rules_touch(node, GETATTR_METHODS):
                attr = 0.0
        return entry, attr

    def _entry(self, node: Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.ino
        e.generation = 0
        e.entry_timeout, e.attr_timeout = self._timeouts(node)
        self._offer_attrs(node, e.attr_timeout)
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        e.st_rdev = st.st_rdev
        e.st_size = st.st_size
        e.st_blksize = st.st_blksize
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    async def _fault(self, method: str, node: Node) -> None:
        if self.gate.active:
            v = self.gate.check(M[method], node)
            if v is not None:
                await v.apply_plain()

    async def _fault_name(self, method: str, parent: Node, name: bytes) -> None:
        """Fault check for an operation on a name that may have no node yet."""
        if self.gate.active and self.gate.ruled_any((M[method],)):
            path = self.inodes.path_of(parent)
            path = os.fsdecode(name) if not path else f"{path}/{os.fsdecode(name)}"
            v = self.gate.check_path(M[method], path)
            if v is not None:
                await v.apply_plain()

    def _stat(self, node: Node) -> os.stat_result:
        return os.stat(self.inodes.fd(node))

    def _new_entry(self, parent: Node, name: bytes) -> pyfuse3.EntryAttributes:
        node, st = self.inodes.lookup(parent, name)
        return self._entry(node, st)

    def _made_entry(self, parent: Node, name: bytes) -> pyfuse3.EntryAttributes:
        """The entry of a name just made (mknod, mkdir, symlink, link)."""
        node, st = self.inodes.lookup(parent, name)
        if self.durable is not None:
            self.durable.created((parent.dev, parent.bino), self.inodes.fd(parent), name, st)
        return self._entry(node, st)

    def armed_data(self, node: Node, fd: int, kind: str, off: int = 0, length: int = 0,
                   mode: int = 0) -> None:
        """Tell the armed power-loss model about a data change before it is made. If the
        old data cannot be kept the change still happens (the app is not to suffer) and
        the cut will say it was not exact."""
        d = self.durable
        try:
            d.data_op((node.dev, node.bino), fd, kind, off, length, mode)
        except OSError as e:
            d.lost_bytes += length
            log.error("power-loss: cannot keep the old data of %s: %s (a cut will not be exact)",
                      self.inodes.path_of(node) or "/", e.strerror)

    def _removing(self, parent: Node, name: bytes, remove: Callable[[int], None]) -> None:
        """unlink/rmdir, told to the armed power-loss model (which keeps what goes)."""
        pfd = self.inodes.fd(parent)
        d = self.durable
        if d is None:
            remove(pfd)
            return
        e = d.removing((parent.dev, parent.bino), pfd, name)
        try:
            remove(pfd)
        except BaseException:
            d.failed(e)
            raise
        d.done(e)

    @fuse_op("lookup")
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        parent = self.inodes.get(parent_inode)
        await self._fault_name("lookup", parent, name)
        return self._new_entry(parent, name)

    async def forget(self, inode_list: Any) -> None:
        if self.no_caps:
            for ino, _ in inode_list:
                self.no_caps.discard(ino)
        fds = self.inodes.forget_many(inode_list)
        # The bookkeeping is done: a big batch's fds close on a thread, and the trio
        # thread (letting go of the handlers lock meanwhile) serves what waits behind it.
        if len(fds) > 64:
            failed = await trio.to_thread.run_sync(_hot.close_fds, fds)
        else:
            failed = _hot.close_fds(fds) if fds else 0
        if failed:
            log.warning("forget: closing %d of %d fds failed", failed, len(fds))

    @fuse_op("getattr")
    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        if node.is_dir and node.parent is not None:
            # A worker cannot await the thread below: it hands on any rule it would roll.
            self.gate.hand_on(M["getattr"], node, True)
        try:
            await self._fault("getattr", node)
        except FUSEError:
            if node.is_dir and node.parent is not None:
                # After an error the kernel keeps this directory's attributes stale, and
                # every walk through it would ask (and fail) again. Dropping its name makes
                # the next walk look it up instead: the LOOKUP reply refreshes them.
                await trio.to_thread.run_sync(self.transport.invalidate_entry, node.parent.ino, node.name)
            raise
        return self._entry(node, self._stat(node))

    @fuse_op("getattr")
    async def statx(self, inode: int, fh: Optional[int], flags: int, mask: int,
                    ctx: Any) -> tuple[tuple[int, ...], float]:
        """statx(2) for the fields getattr lacks (btime; the /dev/fuse transport only):
        the backing file's, under our inode number; getattr rules fire."""
        node = self.inodes.get(inode)
        await self._fault("getattr", node)
        h = self.handles.get(fh) if fh is not None else None
        fd = h.fd if h is not None and not h.is_dir else self.inodes.fd(node)
        # AT_STATX_* sync flags pass through; the backing fs answers for its own caches
        sx = _hot.statx_fd(fd, mask | 0x7ff, flags & 0x6000)  # STATX_BASIC_STATS
        sx = sx[:7] + (node.ino,) + sx[8:]
        return sx, self._timeouts(node)[1]

    @fuse_op("truncate", counted_as=setattr_methods)
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Optional[int], ctx: Any) -> pyfuse3.EntryAttributes:
        # Taken first, so a faulted or failed truncate does not leave the request queued.
        kill = fields.update_size and self.transport.take_kill(inode)
        node = self.inodes.get(inode)
        fd = self.inodes.fd(node)
        checks = [m for m, on in (("truncate", fields.update_size), ("chmod", fields.update_mode),
                                  ("chown", fields.update_uid or fields.update_gid),
                                  ("utimens", fields.update_atime or fields.update_mtime)) if on]
        if len(checks) > 1:
            # On a worker, a waiting rule on a later check must hand the request on before
            # the first one rolls and counts its rules (they would roll again on trio).
            for m in checks:
                self.gate.hand_on(M[m], node)
        for m in checks:
            await self._fault(m, node)

        if fields.update_size:
            if self.durable is not None and not node.is_dir and not node.is_link:
                self.armed_data(node, fd, TRUNCATE, 0, attr.st_size)
            if fh is not None:
                os.ftruncate(self._handle(fh).fd, attr.st_size)
            else:
                os.truncate(proc_path(fd), attr.st_size)
        if fields.update_mode:
            if node.is_link:
                raise FUSEError(errno.EOPNOTSUPP)
            os.chmod(proc_path(fd), stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            _hot.chown_fd(fd, attr.st_uid if fields.update_uid else -1,
                          attr.st_gid if fields.update_gid else -1)
        if fields.update_atime or fields.update_mtime:
            atime = attr.st_atime_ns if fields.update_atime else None
            mtime = attr.st_mtime_ns if fields.update_mtime else None
            # Following the /proc magic link of an O_PATH fd lands on the inode itself, also
            # for a symlink (its target is not followed), whatever names it has now.
            _hot.utimens_at(AT_FDCWD, os.fsencode(proc_path(fd)), atime, mtime, False)
        if kill:
            self.transport.clear_setid(fd)
        return self._entry(node, os.stat(fd))

    @fuse_op("readlink")
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        node = self.inodes.get(inode)
        await self._fault("readlink", node)
        return os.readlink(b"", dir_fd=self.inodes.fd(node))

    @fuse_op("access")
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        # With default_permissions the kernel checks permissions itself; this answers for
        # existence (and for faults on access).
        node = self.inodes.get(inode)
        await self._fault("access", node)
        self._stat(node)
        return True

    @fuse_op("statfs")
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        await self._fault("statfs", self.inodes.root)
        sv = os.statvfs(proc_path(self.root_fd))
        d = pyfuse3.StatvfsData()
        for f in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                  "f_ffree", "f_favail", "f_namemax"):
            setattr(d, f, getattr(sv, f))
        return d

    # ---- creating and removing names ----------------------------------------------------

    def _owner(self, parent: Node, ctx: Any) -> tuple[int, int]:
        """The caller owns what it creates; a setgid directory passes its group on."""
        pst = os.stat(self.inodes.fd(parent))
        gid = pst.st_gid if pst.st_mode & stat.S_ISGID else ctx.gid
        return ctx.uid, gid

    def _own_new_file(self, fd: int, parent: Node, ctx: Any) -> os.stat_result:
        """A file just created through `fd` belongs to the caller (create, O_TMPFILE)."""
        uid, gid = self._owner(parent, ctx)
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                # chown(2) cleared the set-id bits the creator asked for.
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
            st = os.fstat(fd)
        return st

    def _chown_new(self, parent: Node, name: bytes, ctx: Any, mode: int = 0) -> None:
        uid, gid = self._owner(parent, ctx)
        pfd = self.inodes.fd(parent)
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if (st.st_uid, st.st_gid) == (uid, gid):
            return  # chown(2) would clear S_ISUID/S_ISGID even when nothing changes
        os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
        if mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISDIR(st.st_mode):
            # chown(2) cleared the set-id bits the creator asked for; put them back.
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=pfd)

    @fuse_op("mknod")
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        parent = self.inodes.get(parent_inode)
        await self._fault_name("mknod", parent, name)
        os.mknod(name, mode & ~ctx.umask, rdev, dir_fd=self.inodes.fd(parent))
        self._chown_new(parent, name, ctx, mode)
        return self._made_entry(parent, name)

    @fuse_op("mkdir")
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        parent = self.inodes.get(parent_inode)
        await self._fault_name("mkdir", parent, name)
        pfd = self.inodes.fd(parent)
        os.mkdir(name, mode & ~ctx.umask, dir_fd=pfd)
        self._chown_new(parent, name, ctx)
        pst = os.stat(pfd)
        if pst.st_mode & stat.S_ISGID:
            # mkdir(2) inherits S_ISGID from the parent; our chown above cleared it.
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(st.st_mode) | stat.S_ISGID, dir_fd=pfd)
        return self._made_entry(parent, name)

    @fuse_op("symlink")
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        parent = self.inodes.get(parent_inode)
        await self._fault_name("symlink", parent, name)
        if self.gate.active:
            v = self.gate.check_path(M["symlink"], os.fsdecode(target))
            if v is not None:
                await v.apply_plain()
        os.symlink(target, name, dir_fd=self.inodes.fd(parent))
        self._chown_new(parent, name, ctx)
        return self._made_entry(parent, name)

    @fuse_op("link")
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        parent = self.inodes.get(new_parent_inode)
        await self._fault("link", node)
        await self._fault_name("link", parent, new_name)
        os.link(proc_path(self.inodes.fd(node)), new_name,
                dst_dir_fd=self.inodes.fd(parent), follow_symlinks=True)
        return self._made_entry(parent, new_name)

    def _pin(self, parent: Node, name: bytes) -> None:
        """Before a name goes away, make sure a known node keeps an fd to its inode, so an
        open-but-unlinked file still answers getattr."""
        try:
            st = os.stat(name, dir_fd=self.inodes.fd(parent), follow_symlinks=False)
        except OSError:
            return
        node = self.inodes.known(st)
        if node is not None and node.fd < 0:
            try:
                self.inodes.fd(node)
            except (OSError, FUSEError):
                pass

    @fuse_op("unlink")
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        parent = self.inodes.get(parent_inode)
        await self._fault_name("unlink", parent, name)
        self._pin(parent, name)
        self._removing(parent, name, lambda pfd: os.unlink(name, dir_fd=pfd))

    @fuse_op("rmdir")
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        parent = self.inodes.get(parent_inode)
        await self._fault_name("rmdir", parent, name)
        self._removing(parent, name, lambda pfd: os.rmdir(name, dir_fd=pfd))

    @fuse_op("rename")
    async def rename(self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        pold = self.inodes.get(parent_old)
        pnew = self.inodes.get(parent_new)
        await self._fault_name("rename", pold, name_old)
        await self._fault_name("rename", pnew, name_new)
        ofd, nfd = self.inodes.fd(pold), self.inodes.fd(pnew)
        moved = self._known_at(ofd, name_old)
        other = self._known_at(nfd, name_new)
        if other is not None and not flags & pyfuse3.RENAME_EXCHANGE:
            self._pin(pnew, name_new)
        d = self.durable
        if d is None:
            _hot.rename2(ofd, name_old, nfd, name_new, flags)
        else:
            e = d.renaming((pold.dev, pold.bino), ofd, name_old, (pnew.dev, pnew.bino), nfd,
                           name_new, flags)
            try:
                _hot.rename2(ofd, name_old, nfd, name_new, flags)
            except BaseException:
                d.failed(e)
                raise
            d.done(e)
        if moved is not None:
            moved.parent, moved.name = pnew, name_new
        if other is not None and flags & pyfuse3.RENAME_EXCHANGE:
            other.parent, other.name = pold, name_old
        # Cached rule matches of everything below the moved name are now wrong.
        self.gate.next_epoch()
        if self.gate.active:
            self._publish_hot_all()
        if moved is not None and self.gate.active and self._rules_touch(moved, DATA_METHODS):
            # Pages cached under the old name must not answer for a file a rule now
            # matches. Off the loop thread: the kernel may need us to answer meanwhile.
            await trio.to_thread.run_sync(self.transport.invalidate_inode, moved.ino, False)

    def _known_at(self, dirfd: int, name: bytes) -> Optional[Node]:
        try:
            return self.inodes.known(os.stat(name, dir_fd=dirfd, follow_symlinks=False))
        except OSError:
            return None

    # ---- files --------------------------------------------------------------------------

    def _file_info(self, fd: int, node: Node, flags: int) -> pyfuse3.FileInfo:
        fi = pyfuse3.FileInfo(fh=fd)
        fi.direct_io = bool(flags & os.O_DIRECT)
        h = Handle(fd, node)
        data_rule = self.gate.active and self._rules_touch(node, DATA_METHODS)
        if (self.passthrough and self.durable is None and not fi.direct_io
                and self.transport.passthrough_active()
                and (node.pt_opens or not (data_rule or node.cached_opens))
                and self._passthrough(h)):
            # The kernel reads and writes the backing file itself. If a read/write rule
            # matches while other opens of the inode are in passthrough, the kernel wants
            # this open in passthrough too: with direct_io its read/write still reach us.
            fi.direct_io = data_rule
            fi.keep_cache = False  # the kernel refuses passthrough opens with other flags
            self.handles[fd] = h
            self._publish_hot(h)
            return fi
        if data_rule and not fi.direct_io:
            # A read/write rule applies: keep the page cache out so every op reaches us.
            fi.direct_io = True
        fi.keep_cache = (self.cache.keep_cache and not fi.direct_io
                         and not (self.gate.active and node.matched))
        if not fi.direct_io:
            node.cached_opens += 1
            h.io = IO_CACHED
        self.handles[fd] = h
        self._publish_hot(h)
        return fi

    @fuse_op("open")
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        kill = flags & os.O_TRUNC and self.transport.take_kill(inode)
        node = self.inodes.get(inode)
        await self._fault("open", node)
        if flags & os.O_TRUNC and self.durable is not None and not node.is_dir:
            self.armed_data(node, self.inodes.fd(node), TRUNCATE, 0, 0)
        fd = os.open(proc_path(self.inodes.fd(node)), (flags & ~OPEN_STRIP) | os.O_CLOEXEC)
        if kill:
            try:
                changed = self.transport.clear_setid(fd)
            except OSError:
                os.close(fd)
                raise
            if changed:  # the kernel refreshes size, not mode, after an O_TRUNC open
                self.transport.invalidate_inode(inode, True)
        return self._file_info(fd, node, flags)

    @fuse_op("create")
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self.inodes.get(parent_inode)
        await self._fault_name("create", parent, name)
        pfd = self.inodes.fd(parent)
        # O_NOFOLLOW: a symlink that appeared in the backing dir since the kernel's lookup
        # must not make us create or open a file outside -original.
        fd = os.open(name, (flags & ~(os.O_DIRECT | os.O_NOCTTY)) | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     mode & ~ctx.umask, dir_fd=pfd)
        try:
            st = self._own_new_file(fd, parent, ctx)
            node = self.inodes.remember(parent, name, st)
        except BaseException:
            os.close(fd)
            raise
        if node.fd < 0:
            try:
                self.inodes.fd(node)
            except (OSError, FUSEError):
                pass
        if self.durable is not None:
            self.durable.created((parent.dev, parent.bino), pfd, name, st)
        entry = self._entry(node, st)
        return self._file_info(fd, node, flags), entry

    # ---- directories --------------------------------------------------------------------

    @fuse_op("opendir")
    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self.inodes.get(inode)
        await self._fault("opendir", node)
        fd = os.open(proc_path(self.inodes.fd(node)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.handles[fd] = Handle(fd, node, is_dir=True)
        return fd

    @fuse_op("readdir")
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        h = self._handle(fh, is_dir=True)
        await self._fault("readdir", h.node)
        if start_id == 0 or h.entries is None:
            # One snapshot per pass: offsets stay stable while entries come and go. Names,
            # inode numbers and types from getdents alone: no stat per entry.
            h.entries = self.inodes.listing(h.fd, h.node.dev)
        entries = h.entries
        if not self.transport.readdir_plus(token):
            # Names only, numbered as the kernel will see them once it looks them up
            # (inodes.number_for), so d_ino matches st_ino.
            self.transport.readdir_names(token, entries, start_id)
            return
        parent = h.node
        lookup, entry, reply, name_at = self.inodes.lookup, self._entry, self.transport.readdir_reply, entries.name
        for i in range(start_id, len(entries)):
            name = name_at(i)
            try:
                node, st = lookup(parent, name, h.fd)
            except OSError:
                continue  # removed since the snapshot
            # readdirplus counts as a lookup only if the kernel takes the entry.
            if not reply(token, name, entry(node, st), i + 1):
                self.inodes.forget(node.ino, 1)
                return

    @fuse_op("releasedir")
    async def releasedir(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is not None:
            os.close(h.fd)

    @fuse_op("fsyncdir")
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        h = self._handle(fh, is_dir=True)
        await self._fault("fsyncdir", h.node)
        d = self.durable
        mark, epoch = (d.seq, d.epoch) if d is not None else (0, 0)
        await trio.to_thread.run_sync(os.fsync, h.fd)
        if d is not None and self.durable is d:
            if d.epoch != epoch:
                raise InjectedError(errno.EIO)  # cut while syncing: the app must not count on it
            d.dir_synced((h.node.dev, h.node.bino), mark)

def make_operations(original: str, transport: Transport, *, hot: str = "cython",
                    cache: Optional[CacheConfig] = None, fsync_inline: bool = False,
                    passthrough: bool = False) -> FsOperations:
    """The Operations object a transport serves: the cold path above plus the chosen hot path."""
    if hot == "cython":
        base: type = _hot.HotPath
    elif hot == "python":
        from chaosfs.fs.hot_python import PyHotPath
        base = PyHotPath
    else:
        raise ValueError(f"unknown hot path {hot!r} (cython or python)")
    cls = type("Operations", (base, FsOperations), {})
    ops = cls()
    ops.fsync_inline = fsync_inline
    ops.passthrough = passthrough
    ops.setup(original, transport, cache)
    return ops
