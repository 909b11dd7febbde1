"""The SQLite job: one 4 KiB row per transaction into a WAL database with synchronous=FULL
(every commit fsyncs the WAL), for a fixed time.

    python -m perf.sqlite_job DIR SECONDS        (prints one JSON object)

Runs as its own process so `taskset` can pin it like fio; the database is removed after.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time

ROW = 4096


def main() -> int:
    base, seconds = sys.argv[1], float(sys.argv[2])
    path = os.path.join(base, f"bench-{os.getpid()}.db")
    con = sqlite3.connect(path, isolation_level=None)   # autocommit: one statement, one transaction
    try:
        if con.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            print("journal_mode=WAL refused", file=sys.stderr)
            return 1
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        payload = os.urandom(ROW)
        ins = "INSERT INTO t (v) VALUES (?)"
        lat: list[float] = []
        for _ in range(20):     # warm-up: the file, its WAL and the first pages exist
            con.execute(ins, (payload,))
        t_end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        now = t0
        while now < t_end:
            con.execute(ins, (payload,))
            t1 = time.perf_counter()
            lat.append(t1 - now)
            now = t1
        elapsed = now - t0
        count = con.execute("SELECT count(*) FROM t").fetchone()[0]
        if count != len(lat) + 20:
            print(f"table holds {count} rows, {len(lat) + 20} inserted", file=sys.stderr)
            return 1
    finally:
        con.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(path + suffix)
            except FileNotFoundError:
                pass
    if not lat:
        print("no insert finished in time", file=sys.stderr)
        return 1
    lat.sort()
    print(json.dumps({"inserts_s": len(lat) / elapsed,
                      "lat_mean_us": 1e6 * sum(lat) / len(lat),
                      "lat_p99_us": 1e6 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
                      "errors": 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
