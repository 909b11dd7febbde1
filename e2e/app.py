"""The e2e application: writes and reads files in its data dir in a loop and reports every
operation as one JSON line (time, file, op, errno, milliseconds) in the report dir.

Runs in the app container of the test pod (only Python's standard library). Its first line
records whether the data dir was already a chaosfs FUSE mount when the process started, which
is how the harness checks that the app did not start before the mount was live.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import time

FILES = ("victim.dat", "other.dat")
PAYLOAD = os.urandom(4096)


def fstype_of(path: str) -> str | None:
    """The file-system type of the mount whose mount point is exactly `path` (last one wins)."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == path:
                found = right.split()[0]
    return found


def timed(fn) -> tuple[int, float]:
    t0 = time.monotonic()
    try:
        fn()
        err = 0
    except OSError as e:
        err = e.errno or errno.EIO
    return err, (time.monotonic() - t0) * 1000.0


def write_file(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, PAYLOAD)
    finally:
        os.close(fd)


def read_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, len(PAYLOAD) + 1)
    finally:
        os.close(fd)
    if data != PAYLOAD:
        raise OSError(errno.EILSEQ, "content differs from what was written")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--interval", type=float, default=0.1)
    args = ap.parse_args()
    # As pid 1 of its container the default SIGTERM action would be ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = open(os.path.join(args.report, "events.jsonl"), "a", buffering=1)
    out.write(json.dumps({"t": time.time(), "event": "start",
                          "fstype": fstype_of(args.data)}) + "\n")
    while True:
        for name in FILES:
            path = os.path.join(args.data, name)
            for op, fn in (("write", write_file), ("read", read_file)):
                err, ms = timed(lambda: fn(path))
                out.write(json.dumps({"t": time.time(), "file": name, "op": op,
                                      "errno": err, "ms": round(ms, 3)}) + "\n")
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
