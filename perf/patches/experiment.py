"""Run the chaosfs daemon with the proposed hot-path changes applied in-process, so their
effect can be measured beside the unpatched daemon before anyone edits the package:

    perf/run --no-proto --compare "patched=.venv/bin/python -m perf.patches.experiment \
        -addr=127.0.0.1:0 -pidfile=/tmp/patched.pid -original={original} -mountpoint={mountpoint}"

Same flags as `chaosfs`. CHAOSFS_EXPERIMENT selects changes (comma-separated, default all):
  caps   - answer getxattr("security.capability") from a per-inode negative cache
  fsync  - fsync/fdatasync inline with the GIL released instead of via a trio worker thread
The equivalent source changes are in perf/patches/*.patch.
"""
from __future__ import annotations

import errno
import os
import sys

from pyfuse3 import FUSEError

CAPS = b"security.capability"


def patched_operations(which: set[str]):
    from chaosfs import _hot
    from chaosfs.passthrough import FsOperations

    def make(original, *, hot="cython", cache=None):
        if hot == "cython":
            hot_cls: type = _hot.HotPath
        else:
            from chaosfs.purepy import PyHotPath
            hot_cls = PyHotPath
        base = type("Operations", (hot_cls, FsOperations), {})
        ns: dict = {}
        if "caps" in which:
            cold_getxattr = base.getxattr

            async def getxattr(self, inode, name, ctx):
                # The kernel asks this before every buffered write (file_remove_privs).
                if name == CAPS and inode in self.no_caps and not self.gate.active:
                    raise FUSEError(errno.ENODATA)
                try:
                    return await cold_getxattr(self, inode, name, ctx)
                except FUSEError as e:
                    if name == CAPS and e.errno == errno.ENODATA:
                        self.no_caps.add(inode)
                    raise

            def forget_caps(fn):
                async def wrapper(self, inode, *a):
                    self.no_caps.discard(inode)
                    return await fn(self, inode, *a)
                return wrapper

            ns["getxattr"] = getxattr
            ns["setxattr"] = forget_caps(base.setxattr)
            ns["removexattr"] = forget_caps(base.removexattr)
        if "fsync" in which:
            from chaosfs.methods import METHOD_ID
            m_fsync = METHOD_ID["fsync"]

            async def fsync(self, fh, datasync):
                t0 = _hot.monotonic()
                if self.gate.active:
                    v = self.gate.check(m_fsync, self.handles[fh].node)
                    if v is not None:
                        await v.apply_plain()
                err = _hot._sync(fh, bool(datasync))  # releases the GIL; blocks this loop
                self.gate.note(m_fsync, t0, err != 0)
                if err:
                    raise FUSEError(err)
            ns["fsync"] = fsync
        cls = type("PatchedOperations", (base,), ns)
        ops = cls()
        ops.no_caps = set()
        ops.setup(original, cache)
        return ops
    return make


def main() -> int:
    which = set(filter(None, os.environ.get("CHAOSFS_EXPERIMENT", "caps,fsync").split(",")))
    from chaosfs import daemon
    daemon.make_operations = patched_operations(which)
    from chaosfs.cli import main as cli_main
    sys.argv[0] = "chaosfs"
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
