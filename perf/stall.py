"""Background load for the delay variants: reads that a delay rule holds, kept in flight
while the jobs run on other paths.

    python -m perf.stall FILE THREADS        (runs until SIGTERM, then prints one JSON object)

Each thread loops over 4 KiB O_DIRECT preads of FILE (O_DIRECT: every read reaches the
daemon, none is answered from the page cache), so THREADS delayed requests are always
waiting in the daemon. The summary says how many finished and how long they took, so the
run can check that the delay really applied.
"""
from __future__ import annotations

import json
import mmap
import os
import signal
import sys
import threading
import time

BLOCK = 4096


def main() -> int:
    path, nthreads = sys.argv[1], int(sys.argv[2])
    stop = threading.Event()
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def reader(k: int) -> None:
        buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT wants
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError as e:
            with lock:
                errors.append(f"open: {e.strerror}")
            return
        size = max(BLOCK, os.fstat(fd).st_size // BLOCK * BLOCK)  # whole blocks: aligned offsets
        off = (k * BLOCK) % size
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    os.preadv(fd, [buf], off)
                except OSError as e:
                    with lock:
                        errors.append(f"read: {e.strerror}")
                    return
                with lock:
                    lat.append(time.perf_counter() - t0)
                off = (off + BLOCK) % size
        finally:
            os.close(fd)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(nthreads)]
    for t in threads:
        t.start()
    stop.wait()
    # The readers still inside a delayed read are not waited for: daemon threads.
    with lock:
        done = sorted(lat)
        print(json.dumps({"reads": len(done), "threads": nthreads,
                          "lat_min_ms": 1e3 * done[0] if done else None,
                          "lat_median_ms": 1e3 * done[len(done) // 2] if done else None,
                          "errors": errors[:3]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
