"""The durability model behind power-loss experiments: what a real page cache would still hold
unsynced, and how to roll the backing tree back to its last durable state.

From the moment it is armed, every change the daemon makes to the backing tree is recorded
*before* it is made, as an undo record:

- file data, per backing inode: each write, truncate and fallocate keeps the old bytes of
  the range it changes (in an undo file of its own under the power-loss directory, never
  under -original) and the size before it. A successful fsync/fdatasync of the file drops
  its records: that is the file's new durable state.
- directory entries, one journal for the tree: each create, mkdir, mknod, symlink, link,
  unlink, rmdir and rename, with the directories it touches. An inode an unlink or a rename
  would free is first hard-linked into the stash (so the power-loss directory must sit on
  -original's file system); a removed directory keeps its mode, owner and times. An entry
  becomes durable when every directory it touches has been fsynced since (the `posix`
  model, what POSIX promises), or when any fsync succeeds after it (`journal`: a
  journalling file system such as ext4 or xfs commits all earlier metadata changes with it).

The daemon keeps serving reads and writes from the backing files as before; nothing is
buffered. A cut (rollback) undoes the non-durable records in reverse order, optionally
keeping a random subset of the data operations or a torn prefix of each file's last write,
and reports what it changed.

The model works on file descriptors (an O_PATH handle per tracked directory, a read-write
handle per tracked file), so renames of ancestors made since do not confuse it.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import stat
import time
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger("chaosfs.power")

O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
RENAME_EXCHANGE = 2

# fallocate(2) modes (linux/falloc.h)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20

WRITE, TRUNCATE, FALLOCATE = "write", "truncate", "fallocate"
MODELS = ("posix", "journal")
CHUNK = 1 << 20

Key = tuple[int, int]  # (st_dev, st_ino) of a backing inode


class PowerLossError(Exception):
    """An arm/cut that cannot be done now; str() is one line naming the problem."""


class PowerLossArgError(PowerLossError):
    """A bad argument; str() starts with its name."""


@dataclass
class DataOp:
    kind: str
    off: int
    length: int      # write/fallocate length; truncate: the new size
    mode: int        # fallocate mode
    size_before: int
    r_off: int       # the range whose old bytes were kept
    r_len: int
    u_off: int       # where in the undo file; -1: not kept (the undo bound was hit)


class FileTrack:
    """One file's data records since its last fsync."""

    __slots__ = ("fd", "undo_fd", "undo_name", "undo_len", "ops", "base")

    def __init__(self, fd: int, undo_fd: int, undo_name: str) -> None:
        self.fd = fd            # O_RDWR on the backing inode
        self.undo_fd = undo_fd  # its undo file (old bytes)
        self.undo_name = undo_name
        self.undo_len = 0
        self.ops: list[DataOp] = []
        self.base = 0           # ops dropped from the front of `ops` by fsyncs so far


@dataclass
class Entry:
    """A directory-entry change. `dirs` are the directories it touches (durability);
    `names` the (directory, name) slots a rollback reports and the kernel must forget."""
    seq: int
    kind: str                      # new / gone / rename
    dirs: tuple[Key, ...]
    parent: Key
    name: bytes
    inode: Key                     # what the name held (new, gone) or what moved (rename)
    is_dir: bool = False
    stash: Optional[bytes] = None  # gone/rename-over: its hard link in the stash
    meta: Optional[os.stat_result] = None  # gone/rename-over of a directory: to recreate it
    parent2: Optional[Key] = None  # rename: the destination
    name2: bytes = b""
    exchange: bool = False
    replaced: Optional[Key] = None  # rename over an existing name: the inode it freed


@dataclass
class CutOptions:
    keep_probability: float = 0.0  # each unsynced data operation survives with this chance
    torn: bool = False             # the last unsynced write of a file survives up to a sector
    sector: int = 512
    seed: Optional[int] = None


@dataclass
class CutReport:
    files: list[str] = field(default_factory=list)       # files whose data was rolled back
    bytes_dropped: int = 0                               # unsynced bytes written, not kept
    ops_dropped: int = 0
    ops_kept: int = 0
    torn: list[str] = field(default_factory=list)        # "path@offset+kept"
    entries: list[str] = field(default_factory=list)     # "removed a/b", "restored a/c", ...
    inexact: list[str] = field(default_factory=list)     # what could not be put back, and why
    seconds: float = 0.0
    # for the caller: directory slots whose names changed (kernel dentries to drop)
    slots: list[tuple[Key, bytes]] = field(default_factory=list)
    moved: list[tuple[Key, Key, bytes]] = field(default_factory=list)  # inode, parent, name


class Durability:
    """The armed model. Not thread-safe: every call comes from the FUSE loop's thread."""

    def __init__(self, root_fd: int, workdir: str, max_undo: int, model: str = "posix") -> None:
        if model not in MODELS:
            raise PowerLossArgError(f"model: {model!r} is not one of {', '.join(MODELS)}")
        root_st = os.fstat(root_fd)
        _claim(workdir)
        try:
            os.makedirs(workdir, mode=0o700)
            os.mkdir(os.path.join(workdir, "stash"), 0o700)
            os.mkdir(os.path.join(workdir, "undo"), 0o700)
            with open(os.path.join(workdir, "pid"), "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as e:
            shutil.rmtree(workdir, ignore_errors=True)
            raise PowerLossError(f"power-loss directory {workdir}: {e.strerror}") from None
        if os.stat(workdir).st_dev != root_st.st_dev:
            shutil.rmtree(workdir, ignore_errors=True)
            raise PowerLossError(f"power-loss directory {workdir} is not on -original's file "
                                 "system (removed files are kept by hard links there)")
        self.workdir = workdir
        self.root_path = os.readlink(f"/proc/self/fd/{root_fd}")
        self.max_undo = max_undo
        self.model = model
        self.stash_fd = os.open(os.path.join(workdir, "stash"), O_PATH | os.O_DIRECTORY)
        self.undo_dir_fd = os.open(os.path.join(workdir, "undo"), O_PATH | os.O_DIRECTORY)
        self.files: dict[Key, FileTrack] = {}
        # an O_PATH handle per directory a record names
        self.dirs: dict[Key, int] = {(root_st.st_dev, root_st.st_ino): os.dup(root_fd)}
        self.journal: list[Entry] = []
        self.synced_at: dict[Key, int] = {}
        self.commit_seq = 0
        self.seq = 0
        self.undo_bytes = 0
        self.lost_bytes = 0
        self.armed_at = time.time()
        self._nstash = 0
        self.epoch = 0  # moves at every rollback
        # a directory a rollback recreated: its old inode -> the new one (older records
        # that name the old inode mean the new one)
        self.alias: dict[Key, Key] = {}

    # ---- bookkeeping -----------------------------------------------------------------------

    def close(self) -> None:
        """Disarm: forget every record and remove the power-loss directory."""
        for t in self.files.values():
            self._close_track(t)
        self.files.clear()
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()
        self.journal.clear()
        os.close(self.stash_fd)
        os.close(self.undo_dir_fd)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_track(self, t: FileTrack) -> None:
        os.close(t.fd)
        os.close(t.undo_fd)
        try:
            os.unlink(t.undo_name, dir_fd=self.undo_dir_fd)
        except OSError:
            pass
        self.undo_bytes -= t.undo_len

    def _track(self, key: Key, path_fd: int) -> FileTrack:
        t = self.files.get(key)
        if t is None:
            fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDWR | os.O_CLOEXEC)
            name = str(self._next())
            try:
                undo = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                               dir_fd=self.undo_dir_fd)
            except BaseException:
                os.close(fd)
                raise
            t = self.files[key] = FileTrack(fd, undo, name)
        return t

    def _dir(self, key: Key, fd: int) -> Key:
        if key not in self.dirs:
            self.dirs[key] = os.dup(fd)
        return key

    def _save(self, t: FileTrack, off: int, length: int) -> int:
        """Keep the old bytes of [off, off+length) in the file's undo file; its offset there,
        or -1 when that would pass the bound (the loss is counted and reported)."""
        if length <= 0:
            return 0
        if self.undo_bytes + length > self.max_undo:
            if not self.lost_bytes:
                log.warning("power-loss undo bound (%d bytes) reached: old data of further "
                            "overwrites is not kept, a cut will report those ranges inexact",
                            self.max_undo)
            self.lost_bytes += length
            return -1
        at = t.undo_len
        done = 0
        while done < length:
            chunk = os.pread(t.fd, min(CHUNK, length - done), off + done)
            if not chunk:
                break
            os.pwrite(t.undo_fd, chunk, at + done)
            done += len(chunk)
        t.undo_len += length
        self.undo_bytes += length
        return at

    # ---- data: called before the change is made ------------------------------------------

    def data_op(self, key: Key, path_fd: int, kind: str, off: int = 0, length: int = 0,
                mode: int = 0) -> None:
        t = self._track(key, path_fd)
        size = os.fstat(t.fd).st_size
        if kind == WRITE:
            r_off, r_end = off, min(off + length, size)
        elif kind == TRUNCATE:
            r_off, r_end = length, size  # shrinking destroys [new size, size)
        elif mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE):
            r_off, r_end = off, size     # the whole tail moves
        elif mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            r_off, r_end = off, min(off + length, size)
        else:
            r_off, r_end = off, off      # allocation changes no byte, only maybe the size
        r_len = max(0, r_end - r_off)
        u_off = self._save(t, r_off, r_len)
        t.ops.append(DataOp(kind, off, length, mode, size, r_off, r_len, u_off))

    def sync_mark(self, key: Key) -> tuple[Optional[str], int, int]:
        """Taken when an fsync starts: what it can make durable is what came before (the
        track, by its unique undo name, and how many ops it had recorded in all)."""
        t = self.files.get(key)
        if t is None:
            return None, 0, self.seq
        return t.undo_name, t.base + len(t.ops), self.seq

    def file_synced(self, key: Key, mark: tuple[Optional[str], int, int]) -> None:
        """fsync/fdatasync of the file succeeded: its data as it was when the call started
        is durable (a write that raced with the call is not, nor one that a concurrent
        fsync's emptying left to a track made after the mark)."""
        name, recorded, seq = mark
        t = self.files.get(key)
        if t is not None and t.undo_name == name and recorded > t.base:
            del t.ops[:recorded - t.base]
            t.base = recorded
            if not t.ops:  # wholly durable: the track and its old bytes go
                del self.files[key]
                self._close_track(t)
        if self.model == "journal":
            self._commit(seq)

    # ---- directory entries ---------------------------------------------------------------

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def created(self, parent: Key, parent_fd: int, name: bytes, st: os.stat_result) -> None:
        """A name now exists that did not (create, mkdir, mknod, symlink, link, O_TMPFILE
        linked in)."""
        self._dir(parent, parent_fd)
        self.journal.append(Entry(self._next(), "new", (parent,), parent, name,
                                  (st.st_dev, st.st_ino), stat.S_ISDIR(st.st_mode)))

    def _keep(self, dirfd: int, name: bytes) -> tuple[Optional[bytes], Optional[os.stat_result], Key, bool]:
        """Before a name goes: hard-link what it holds into the stash (a directory, which
        must be empty, is kept as its attributes)."""
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        key = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            return None, st, key, True
        self._nstash += 1
        link = b"%d" % self._nstash
        os.link(name, link, src_dir_fd=dirfd, dst_dir_fd=self.stash_fd, follow_symlinks=False)
        return link, st, key, False

    def removing(self, parent: Key, parent_fd: int, name: bytes) -> Entry:
        """Before unlink/rmdir; `done(entry)` after it succeeded, `failed(entry)` if it failed."""
        link, st, key, is_dir = self._keep(parent_fd, name)
        self._dir(parent, parent_fd)
        return Entry(0, "gone", (parent,), parent, name, key, is_dir, link, st)

    def renaming(self, old: Key, old_fd: int, name: bytes, new: Key, new_fd: int, name2: bytes,
                 flags: int) -> Entry:
        st = os.stat(name, dir_fd=old_fd, follow_symlinks=False)
        e = Entry(0, "rename", (old,) if old == new else (old, new), old, name,
                  (st.st_dev, st.st_ino), stat.S_ISDIR(st.st_mode), parent2=new, name2=name2,
                  exchange=bool(flags & RENAME_EXCHANGE))
        self._dir(old, old_fd)
        self._dir(new, new_fd)
        if not e.exchange:
            try:
                link, meta, key, _ = self._keep(new_fd, name2)
            except FileNotFoundError:
                pass
            else:
                e.stash, e.meta, e.replaced = link, meta, key
        return e

    def done(self, e: Entry) -> None:
        e.seq = self._next()
        self.journal.append(e)

    def failed(self, e: Entry) -> None:
        if e.stash is not None:
            try:
                os.unlink(e.stash, dir_fd=self.stash_fd)
            except OSError:
                pass

    def dir_synced(self, key: Key, seq: int) -> None:
        """fsync of a directory succeeded: its entries as they were when the call started
        (`seq`, the model's self.seq then) are durable."""
        self.synced_at[key] = max(seq, self.synced_at.get(key, 0))
        if self.model == "journal":
            self._commit(seq)
        else:
            self._prune()

    def _commit(self, seq: int) -> None:
        self.commit_seq = max(self.commit_seq, seq)
        self._prune()

    def _durable(self, e: Entry) -> bool:
        if e.seq <= self.commit_seq:
            return True
        return all(self.synced_at.get(d, 0) >= e.seq for d in e.dirs)

    def _prune(self) -> None:
        keep = []
        for e in self.journal:
            if self._durable(e):
                self.failed(e)  # its stash link is no longer needed
            else:
                keep.append(e)
        self.journal = keep

    # ---- what is tracked -------------------------------------------------------------------

    def status(self) -> dict:
        files = [t for t in self.files.values() if t.ops]
        return {
            "model": self.model,
            "armed_seconds": round(time.time() - self.armed_at, 3),
            "files": len(files),
            "unsynced_bytes": sum(op.length for t in files for op in t.ops if op.kind == WRITE),
            "data_ops": sum(len(t.ops) for t in files),
            "undo_bytes": self.undo_bytes,
            "max_undo_bytes": self.max_undo,
            "undo_overflow_bytes": self.lost_bytes,
            "dir_entries": len(self.journal),
        }

    # ---- the cut ---------------------------------------------------------------------------

    def _path(self, fd: int) -> str:
        """Mount-relative path of what an fd holds now (for reports)."""
        try:
            p = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return "?"
        if p == self.root_path:
            return "/"
        if p.startswith(self.root_path + "/"):
            return p[len(self.root_path) + 1:]
        if p.endswith(" (deleted)"):
            return "(deleted)"
        return "(outside)"

    def _slot(self, parent: Key, name: bytes) -> str:
        fd = self.dirs.get(parent)
        base = self._path(fd) if fd is not None else "?"
        n = os.fsdecode(name)
        return n if base == "/" else f"{base}/{n}"

    def rollback(self, opts: CutOptions) -> CutReport:
        """Put the backing tree back to its durable state (see CutOptions for what may
        survive). The model is empty afterwards; close() it or keep tracking from here."""
        t0 = time.monotonic()
        rng = random.Random(opts.seed)
        rep = CutReport()
        rolled = [t for t in self.files.values() if t.ops]
        for t in rolled:
            self._rollback_file(t, opts, rng, rep)
        for e in reversed(self.journal):
            if not self._durable(e) and not self._in_removed_dir(e):
                try:
                    self._undo_entry(e, rep)
                except OSError as err:
                    rep.inexact.append(f"{e.kind} {self._slot(e.parent, e.name)}: {err.strerror}")
        rep.files = sorted(self._path(t.fd) for t in rolled)  # the names they have now
        for t in list(self.files.values()):
            self._close_track(t)
        self.files.clear()
        for e in self.journal:
            self.failed(e)
        self.journal.clear()
        self.synced_at.clear()
        self.alias.clear()
        self.commit_seq = self.seq
        self.epoch += 1
        rep.seconds = time.monotonic() - t0
        return rep

    def _rollback_file(self, t: FileTrack, opts: CutOptions, rng: random.Random, rep: CutReport) -> None:
        ops = t.ops
        keep = [opts.keep_probability > 0 and rng.random() < opts.keep_probability for _ in ops]
        torn_at = -1
        if opts.torn:
            for i in range(len(ops) - 1, -1, -1):
                if ops[i].kind == WRITE and ops[i].length > 0:
                    torn_at = i
                    break
        path = self._path(t.fd)
        # Undo newest first: before undoing op i the file is as op i left it, so what a
        # surviving write wrote can be read back then.
        survivors: dict[int, bytes] = {}
        for i in range(len(ops) - 1, -1, -1):
            op = ops[i]
            if op.kind == WRITE and (keep[i] or i == torn_at):
                n = op.length
                if i == torn_at and not keep[i]:
                    s = opts.sector
                    bounds = list(range((op.off // s + 1) * s, op.off + op.length, s))
                    n = (rng.choice(bounds) - op.off) if bounds else 0
                    rep.torn.append(f"{path}@{op.off}+{n}/{op.length}")
                survivors[i] = os.pread(t.fd, n, op.off) if n else b""
            if op.u_off >= 0 and op.r_len:
                done = 0
                while done < op.r_len:
                    chunk = os.pread(t.undo_fd, min(CHUNK, op.r_len - done), op.u_off + done)
                    if not chunk:
                        break
                    os.pwrite(t.fd, chunk, op.r_off + done)
                    done += len(chunk)
            elif op.r_len:
                rep.inexact.append(f"{path}: {op.r_len} bytes at {op.r_off} not kept (undo bound)")
            os.ftruncate(t.fd, op.size_before)
        for i, op in enumerate(ops):
            if i in survivors:
                if survivors[i]:
                    os.pwrite(t.fd, survivors[i], op.off)
            elif keep[i] and op.kind == TRUNCATE:
                os.ftruncate(t.fd, op.length)
            elif keep[i] and op.kind == FALLOCATE:
                try:
                    _fallocate(t.fd, op.mode, op.off, op.length)
                except OSError:
                    pass
            kept = keep[i] or i in survivors
            rep.ops_kept += kept
            rep.ops_dropped += not kept
            if op.kind == WRITE:
                rep.bytes_dropped += op.length - (len(survivors[i]) if i in survivors else 0)

    def _in_removed_dir(self, e: Entry) -> bool:
        """Whether a directory the entry lives in stays removed: its own removal was durable
        (undone entries are walked newest first, so one that is not was put back by now).
        The entry then went with the directory, as on a disk: nothing to undo."""
        for key in (e.parent, e.parent2) if e.kind == "rename" else (e.parent,):
            fd = self.dirs.get(key)
            if fd is not None:
                try:
                    if os.fstat(fd).st_nlink == 0:
                        return True
                except OSError:
                    pass
        return False

    def _dirfd(self, key: Key) -> int:
        fd = self.dirs.get(key)
        if fd is None:
            raise OSError(errno.ESTALE, "directory not tracked")
        return fd

    def _holds(self, dirfd: int, name: bytes, inode: Key) -> bool:
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self.alias.get(inode, inode)

    def _put_back(self, dirfd: int, name: bytes, stash: Optional[bytes],
                  meta: Optional[os.stat_result], inode: Key) -> None:
        """Restore a removed name: its stashed inode, or a directory like the removed one."""
        if stash is not None:
            os.link(stash, name, src_dir_fd=self.stash_fd, dst_dir_fd=dirfd, follow_symlinks=False)
            return
        assert meta is not None
        os.mkdir(name, stat.S_IMODE(meta.st_mode), dir_fd=dirfd)
        os.chown(name, meta.st_uid, meta.st_gid, dir_fd=dirfd, follow_symlinks=False)
        os.chmod(name, stat.S_IMODE(meta.st_mode), dir_fd=dirfd)
        os.utime(name, ns=(meta.st_atime_ns, meta.st_mtime_ns), dir_fd=dirfd, follow_symlinks=False)
        # entries undone later (older ones) that lived in the removed directory go here
        new = os.open(name, O_PATH, dir_fd=dirfd)
        nst = os.fstat(new)
        self.alias[inode] = (nst.st_dev, nst.st_ino)
        old = self.dirs.pop(inode, None)
        if old is not None:
            os.close(old)
        self.dirs[inode] = new

    def _undo_entry(self, e: Entry, rep: CutReport) -> None:
        if e.kind == "new":
            dirfd = self._dirfd(e.parent)
            if not self._holds(dirfd, e.name, e.inode):
                rep.inexact.append(f"created {self._slot(e.parent, e.name)}: changed since, left")
                return
            what = self._slot(e.parent, e.name)
            if e.is_dir:
                _remove_tree(dirfd, e.name)
            else:
                os.unlink(e.name, dir_fd=dirfd)
            rep.entries.append(f"removed {what}")
            rep.slots.append((e.parent, e.name))
        elif e.kind == "gone":
            dirfd = self._dirfd(e.parent)
            self._put_back(dirfd, e.name, e.stash, e.meta, e.inode)
            rep.entries.append(f"restored {self._slot(e.parent, e.name)}")
            rep.slots.append((e.parent, e.name))
        else:
            ofd, nfd = self._dirfd(e.parent), self._dirfd(e.parent2)
            if not self._holds(nfd, e.name2, e.inode):
                rep.inexact.append(f"renamed {self._slot(e.parent2, e.name2)}: changed since, left")
                return
            from chaosfs.fs import _hot
            _hot.rename2(nfd, e.name2, ofd, e.name, RENAME_EXCHANGE if e.exchange else 0)
            if e.replaced is not None:
                self._put_back(nfd, e.name2, e.stash, e.meta, e.replaced)
            rep.entries.append(f"renamed back {self._slot(e.parent2, e.name2)} -> "
                               f"{self._slot(e.parent, e.name)}")
            rep.slots += [(e.parent, e.name), (e.parent2, e.name2)]
            rep.moved.append((e.inode, e.parent, e.name))


def _claim(workdir: str) -> None:
    """A power-loss directory left by a daemon that is gone is removed; one a live daemon
    uses is refused."""
    if not os.path.lexists(workdir):
        return
    try:
        with open(os.path.join(workdir, "pid")) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid and pid != os.getpid() and os.path.exists(f"/proc/{pid}"):
        raise PowerLossError(f"power-loss directory {workdir} is in use by pid {pid}")
    shutil.rmtree(workdir, ignore_errors=True)


def _fallocate(fd: int, mode: int, off: int, length: int) -> None:
    from chaosfs.fs import _hot
    _hot.fallocate_fd(fd, mode, off, length)


def _remove_tree(dirfd: int, name: bytes) -> None:
    """rm -r of name in dirfd, by *at() calls (a directory created since the last durable
    state goes with whatever it holds, as a journal replay would lose its inode)."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        for child in os.listdir(fd):
            c = os.fsencode(child)
            st = os.stat(c, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(fd, c)
            else:
                os.unlink(c, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dirfd)
