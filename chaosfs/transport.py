"""What the file-system logic needs from the FUSE transport, in one small interface.

FsOperations (passthrough.py) never reaches into a transport's internals: it holds a
Transport and calls these methods. LibfuseTransport is pyfuse3 + libfuse 3.14 with the
session hooks of _fuseconn.c (loaded here, before pyfuse3, so the hooks bind: that
ordering is kept by chaosfs/__init__.py, whatever module is imported first).
"""
from __future__ import annotations

from typing import Any, Protocol

from chaosfs import fuseconn
from chaosfs.methods import NEVER_FIRE
import pyfuse3  # noqa: E402


class Transport(Protocol):
    """The calls the file-system logic makes into the transport."""

    # cache invalidation (kernel notifications); never call from the FUSE loop's own thread
    # while the kernel may be waiting for that loop
    def invalidate_inode(self, ino: int, attr_only: bool) -> None: ...
    def invalidate_entry(self, parent_ino: int, name: bytes) -> None: ...

    # one readdir entry into the reply being built; False when the reply is full
    def readdir_reply(self, token: Any, name: bytes, entry: Any, next_id: int) -> bool: ...

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

    # which hot requests of this open no rule can touch (HOT_* bits): a transport that
    # answers them without the file-system logic (answers_hot) may then do so while rules
    # exist elsewhere
    answers_hot: bool
    def set_hot(self, fh: int, mask: int) -> None: ...


class LibfuseTransport:
    """pyfuse3's session (libfuse 3.14) with chaosfs's session hooks under it."""

    never_fire = NEVER_FIRE  # methods whose requests never reach the daemon
    answers_hot = False      # every request reaches the Python handlers

    def __init__(self, hooks: bool = True) -> None:
        self.hooks = hooks

    # -- lifecycle (the daemon's calls; the DevFuseTransport has the same four) --

    def mount(self, ops: Any, mountpoint: str, options: Any, *, killpriv_v2: bool = True,
              passthrough_depth: int = 0, workers: int = 0) -> None:
        if self.hooks:
            fuseconn.enable(killpriv_v2=killpriv_v2, passthrough_depth=passthrough_depth)
        try:
            pyfuse3.init(ops, mountpoint, set(options))
        except RuntimeError as e:
            raise OSError(f"mount {mountpoint}: {e}") from None

    async def main(self, max_tasks: int) -> None:
        await pyfuse3.main(min_tasks=1, max_tasks=max_tasks)

    def close(self, unmount: bool = True) -> None:
        pyfuse3.close(unmount=unmount)

    def describe(self) -> str:
        return "pyfuse3 transport: " + fuseconn.describe()

    def negotiated(self) -> bool:
        s = fuseconn.status()
        return not s["enabled"] or s["init_replied"]

    # -- the Transport interface --

    def invalidate_inode(self, ino: int, attr_only: bool) -> None:
        try:
            pyfuse3.invalidate_inode(ino, attr_only=attr_only)
        except OSError:
            pass  # the kernel forgot it meanwhile: nothing cached to drop

    def invalidate_entry(self, parent_ino: int, name: bytes) -> None:
        try:
            pyfuse3.invalidate_entry(parent_ino, name)
        except OSError:
            pass

    def readdir_reply(self, token: Any, name: bytes, entry: Any, next_id: int) -> bool:
        return pyfuse3.readdir_reply(token, name, entry, next_id)

    take_kill = staticmethod(fuseconn.take_kill)
    clear_setid = staticmethod(fuseconn.clear_setid)
    passthrough_active = staticmethod(fuseconn.passthrough_active)
    backing_open = staticmethod(fuseconn.backing_open)
    backing_close = staticmethod(fuseconn.backing_close)
    offer_passthrough = staticmethod(fuseconn.passthrough_reply)

    def set_hot(self, fh: int, mask: int) -> None:
        pass


def make_transport(kind: str, *, hooks: bool = True) -> Any:
    """`-transport`: "pyfuse3" (libfuse, the default) or "cython" (chaosfs's own /dev/fuse
    session, chaosfs/_devfuse.pyx)."""
    if kind == "pyfuse3":
        return LibfuseTransport(hooks)
    if kind == "cython":
        from chaosfs._devfuse import DevFuseTransport
        return DevFuseTransport()
    raise ValueError(f"unknown transport {kind!r} (cython or pyfuse3)")
