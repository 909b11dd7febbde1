"""The FUSE transports, and the one small interface the file-system logic sees of them.

FsOperations (chaosfs/fs/operations.py) never reaches into a transport's internals: it holds
a Transport and calls the methods below. Two implement it:
- libfuse.py: LibfuseTransport, pyfuse3 + libfuse 3.14 with the session hooks of
  _fuseconn.c (fuseconn.py loads them before pyfuse3; chaosfs/__init__.py keeps that order);
- _devfuse.pyx + devfuse_core.h: DevFuseTransport, chaosfs's own /dev/fuse session with C
  worker threads for the hot requests.
"""
from __future__ import annotations

from typing import Any, Protocol



class Transport(Protocol):
    """The calls the file-system logic makes into the transport."""

    # cache invalidation (kernel notifications); never call from the FUSE loop's own thread
    # while the kernel may be waiting for that loop
    def invalidate_inode(self, ino: int, attr_only: bool) -> None: ...
    def invalidate_entry(self, parent_ino: int, name: bytes) -> None: ...

    # readdir replies: whether this one wants attributes (READDIRPLUS: each entry is a
    # lookup) or names only; one entry with attributes into the reply being built (False
    # when it is full), or names only: the run of a DirSnapshot's records from `start`
    # that fits (chaosfs/fs/_dirents.pyx)
    def readdir_plus(self, token: Any) -> bool: ...
    def readdir_reply(self, token: Any, name: bytes, entry: Any, next_id: int) -> bool: ...
    def readdir_names(self, token: Any, entries: Any, start: int) -> None: ...

    # kill-priv: the kernel asked this inode's pending SETATTR(size)/OPEN(O_TRUNC) to clear
    # set-id bits (the caller lacks CAP_FSETID); clear_setid does it the kernel's way
    def take_kill(self, ino: int) -> bool: ...
    def clear_setid(self, fd: int) -> bool: ...

    # kernel passthrough: whether the kernel accepted it, backing ids, and the offer that
    # makes the OPEN/CREATE reply for `fh` a passthrough open (RuntimeError when full)
    def passthrough_active(self) -> bool: ...
    def backing_open(self, fd: int) -> int: ...
    def backing_close(self, backing_id: int) -> None: ...
    def offer_passthrough(self, fh: int, backing_id: int) -> None: ...

    # which hot requests of this open no rule can touch (HOT_* bits) and the rules that
    # match its file: a transport that answers hot requests without the file-system logic
    # (answers_hot) serves the untouched ones as if no rule existed and may apply the
    # rules itself where it can (the cython transport's C gate); the rest come to the
    # Operations methods
    answers_hot: bool
    # POSIX record locks (per inode and lock owner) and flock()s (per open fh), held on the
    # backing files by a transport that negotiates them; OSError (EAGAIN: a conflict)
    def lock_get(self, ino: int, owner: int, fh: int, typ: int, start: int,
                 end: int) -> tuple[int, int, int, int]: ...
    def lock_set(self, ino: int, owner: int, pid: int, fh: int, typ: int, start: int, end: int,
                 is_flock: bool) -> None: ...
    def set_hot(self, fh: int, mask: int, rules: tuple[Any, ...] = ()) -> None: ...
    # GETATTR of inode `ino` answered by the transport itself (answers_hot) with fstat(fd),
    # `fd` being the inode table's O_PATH fd, while the gate's epoch is still `epoch` (no
    # getattr rule matched the inode then); attrs_drop(ino) comes before that fd is closed
    def attrs_offer(self, ino: int, fd: int, timeout: float, epoch: int) -> None: ...
    def attrs_drop(self, ino: int) -> None: ...
    def attrs_drop_many(self, inos: list[int]) -> None: ...
    # a context manager held by whichever thread runs handler code (the transport's own,
    # and the control plane's while it publishes rules); take it to read or change what
    # handlers change (names, opens) from another thread, never while asking the kernel
    # for something that may need a reply
    handlers_lock: Any


def make_transport(kind: str, *, hooks: bool = True) -> Any:
    """`-transport`: "pyfuse3" (libfuse) or "cython" (chaosfs's own /dev/fuse session)."""
    if kind == "pyfuse3":
        from chaosfs.transport.libfuse import LibfuseTransport
        return LibfuseTransport(hooks)
    if kind == "cython":
        from chaosfs.transport._devfuse import DevFuseTransport
        return DevFuseTransport()
    raise ValueError(f"unknown transport {kind!r} (cython or pyfuse3)")
