"""The metadata job: create N files, list them cold, stat them cold, unlink them.

    python -m perf.metadata DIR N [--flat]     (prints one JSON object)

--flat works in DIR itself (for the ceiling FS, which has no mkdir).

Runs as its own process so `taskset` can pin it like fio.
"""
from __future__ import annotations

import json
import os
import sys
import time

from perf.jobs import drop_caches


def main() -> int:
    base, n = sys.argv[1], int(sys.argv[2])
    flat = "--flat" in sys.argv[3:]
    d = base if flat else os.path.join(base, f"meta-{os.getpid()}")
    if not flat:
        os.mkdir(d)
    names = [f"m{os.getpid()}-{i:05d}" for i in range(n)]
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        t0 = time.perf_counter()
        for name in names:
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644, dir_fd=dfd))
        create = time.perf_counter() - t0

        drop_caches()
        t0 = time.perf_counter()
        listed = os.listdir(d)
        readdir = time.perf_counter() - t0
        if len(listed) < n:
            print(f"readdir saw {len(listed)} of {n} entries", file=sys.stderr)
            return 1

        drop_caches()
        t0 = time.perf_counter()
        for name in names:
            os.stat(name, dir_fd=dfd)
        stat = time.perf_counter() - t0

        t0 = time.perf_counter()
        for name in names:
            os.unlink(name, dir_fd=dfd)
        unlink = time.perf_counter() - t0
    finally:
        os.close(dfd)
    if not flat:
        os.rmdir(d)
    print(json.dumps({"create_ops": n / create, "stat_ops": n / stat, "unlink_ops": n / unlink,
                      "readdir_ms": readdir * 1000}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
