"""How every cold-path handler of the file-system logic fails and is counted: one
decorator, so each Operations method reads as fault check, syscall, result."""
from __future__ import annotations

import errno
import functools
import logging
from typing import Any, Callable, Optional

import trio
from pyfuse3 import FUSEError

from chaosfs.faults._gate import monotonic
from chaosfs.faults.engine import InjectedError
from chaosfs.faults.methods import METHOD_ID, safe_errno

M = METHOD_ID
log = logging.getLogger("chaosfs.fs")


def fuse_op(method: str, counted_as: Optional[Callable[..., tuple[int, ...]]] = None) -> Callable:
    """Error mapping and stats for a cold-path handler. An exception other than FUSEError
    escaping into pyfuse3 would end its main loop and kill the mount for everyone, and an
    errno the kernel would misread (ENOSYS where it means "not implemented", 512 and up)
    must never reach it. `counted_as(*args)`: the method ids the stats count the request
    under, for setattr (one request, up to four 0.9 operations). An InjectedError (a fault's)
    is counted apart from the rest (the backing file system's or chaosfs's own)."""
    mid = M[method]
    own = (mid,)

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def handler(self: Any, *args: Any) -> Any:
            t0 = monotonic()
            note = self.gate.note
            ids = own if counted_as is None else counted_as(*args)
            try:
                result = await fn(self, *args)
            except FUSEError as e:
                injected = isinstance(e, InjectedError)
                for i in ids:
                    note(i, t0, True, injected)
                err = safe_errno(mid, e.errno)
                if err != e.errno:
                    raise (InjectedError if injected else FUSEError)(err) from None
                raise
            except OSError as e:
                for i in ids:
                    note(i, t0, True)
                raise FUSEError(safe_errno(mid, e.errno or errno.EIO)) from None
            except (trio.Cancelled, KeyboardInterrupt):
                raise
            except Exception:
                log.exception("%s failed unexpectedly", method)
                for i in ids:
                    note(i, t0, True)
                raise FUSEError(errno.EIO) from None
            for i in ids:
                note(i, t0, False)
            return result

        return handler

    return wrap


def setattr_methods(inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> tuple[int, ...]:
    ids = []
    if fields.update_size:
        ids.append(M["truncate"])
    if fields.update_mode:
        ids.append(M["chmod"])
    if fields.update_uid or fields.update_gid:
        ids.append(M["chown"])
    if fields.update_atime or fields.update_mtime or not ids:
        ids.append(M["utimens"])  # also a bare ctime update (chown -1 -1, touch of nothing)
    return tuple(ids)
