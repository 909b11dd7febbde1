"""The pyfuse3 transport: pyfuse3's session (libfuse 3.14) with chaosfs's session hooks under
it (fuseconn.py, _fuseconn.c). Implements chaosfs.transport.Transport."""
from __future__ import annotations

import contextlib
import errno
from typing import Any

from chaosfs.transport import fuseconn
from chaosfs.faults.methods import NEVER_FIRE
import pyfuse3  # noqa: E402  (after fuseconn: its hooks must bind first)


class LibfuseTransport:
    """pyfuse3's session (libfuse 3.14) with chaosfs's session hooks under it."""

    never_fire = NEVER_FIRE  # methods whose requests never reach the daemon
    answers_hot = False      # every request reaches the Python handlers
    # handlers run on pyfuse3's trio thread only: nothing to exclude
    handlers_lock = contextlib.nullcontext()

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

    def readdir_plus(self, token: Any) -> bool:
        return True  # pyfuse3's readdir handler always gives attributes

    def readdir_reply(self, token: Any, name: bytes, entry: Any, next_id: int) -> bool:
        return pyfuse3.readdir_reply(token, name, entry, next_id)

    def readdir_names(self, token: Any, entries: Any, start: int) -> None:
        raise AssertionError("pyfuse3 readdir replies carry attributes")

    take_kill = staticmethod(fuseconn.take_kill)
    clear_setid = staticmethod(fuseconn.clear_setid)
    passthrough_active = staticmethod(fuseconn.passthrough_active)
    backing_open = staticmethod(fuseconn.backing_open)
    backing_close = staticmethod(fuseconn.backing_close)
    offer_passthrough = staticmethod(fuseconn.passthrough_reply)

    # libfuse 3.14 via pyfuse3 negotiates no locks: the kernel keeps them, never asks us
    def lock_get(self, ino: int, owner: int, fh: int, typ: int, start: int,
                 end: int) -> tuple[int, int, int, int]:
        raise OSError(errno.EOPNOTSUPP, "locks are the kernel's under pyfuse3")

    def lock_set(self, ino: int, owner: int, pid: int, fh: int, typ: int, start: int, end: int,
                 is_flock: bool) -> None:
        raise OSError(errno.EOPNOTSUPP, "locks are the kernel's under pyfuse3")

    def set_hot(self, fh: int, mask: int, rules: tuple[Any, ...] = ()) -> None:
        pass

    def attrs_offer(self, ino: int, fd: int, timeout: float, epoch: int) -> None:
        pass

    def attrs_drop(self, ino: int) -> None:
        pass

    def attrs_drop_many(self, inos: list[int]) -> None:
        pass
