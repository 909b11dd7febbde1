"""The workloads: fio jobs (psync, time-based), a metadata job and two database jobs
(pgbench, SQLite: `perf/db.py`), each returning metrics.

A metric is (value, unit, better) with better "higher" or "lower"; ratios are always
computed so that > 1 means faster than the reference.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

MiB = 1 << 20


@dataclass
class Job:
    name: str
    title: str
    fio: dict = field(default_factory=dict)   # fio options (kind "fio" only)
    pinned: bool = False                      # fio and the daemon on one CPU
    file: str = ""                            # under data/
    size: int = 0
    kind: str = "fio"                         # fio | metadata | pgbench | sqlite

    @property
    def metadata(self) -> bool:
        return self.kind == "metadata"

    @property
    def db(self) -> bool:
        return self.kind in ("pgbench", "sqlite")

    @property
    def headline(self) -> str:
        """The metric the summary table and chart use."""
        if self.kind != "fio":
            return {"metadata": "create_ops", "pgbench": "tps", "sqlite": "inserts_s"}[self.kind]
        return "bw_mibs" if self.fio.get("bs") == "1m" else "iops"

    def applies(self, variant_kind: str) -> bool:
        """The ceiling file systems are flat and hold no directories: no database on them."""
        return not (self.db and variant_kind in ("ceiling", "ceiling-io"))


def standard_jobs(quick: bool, seq_size: int, rand_size: int, pg_title: str = "pgbench TPC-B",
                  sqlite_title: str = "SQLite WAL, FULL sync, 4 KiB row per txn") -> list[Job]:
    # Reads need a file larger than one pass of the fastest variant (fio's random map reads
    # each block once per pass), or the FUSE page cache starts answering instead of the daemon.
    write_size = min(rand_size, 1 << 30)
    rr = {"rw": "randread", "bs": "4k"}
    rw = {"rw": "randwrite", "bs": "4k"}
    jobs = [
        Job("seqread-1m", "seq read 1 MiB", {"rw": "read", "bs": "1m"}, file="seq.bin", size=seq_size),
        Job("seqwrite-1m", "seq write 1 MiB", {"rw": "write", "bs": "1m"}, file="seqw.bin", size=seq_size),
        Job("randread-4k", "rand read 4 KiB", rr, file="rand.bin", size=rand_size),
        Job("randread-4k-pin", "rand read 4 KiB, pinned", rr, pinned=True, file="rand.bin", size=rand_size),
        Job("randread-4k-4j", "rand read 4 KiB, 4 jobs", {**rr, "numjobs": 4}, file="rand.bin", size=rand_size),
        Job("randwrite-4k", "rand write 4 KiB", rw, file="randw.bin", size=write_size),
        Job("randwrite-4k-pin", "rand write 4 KiB, pinned", rw, pinned=True, file="randw.bin", size=write_size),
        Job("randwrite-4k-fsync", "rand write 4 KiB fsync=1", {**rw, "fsync": 1}, file="wal.bin", size=64 * MiB),
        Job("randread-4k-direct", "rand read 4 KiB direct=1", {**rr, "direct": 1}, file="rand.bin", size=rand_size),
        Job("metadata", "create/stat/unlink 3000, readdir", kind="metadata"),
        Job("pgbench", pg_title, kind="pgbench"),
        Job("sqlite", sqlite_title, kind="sqlite"),
    ]
    if quick:
        keep = {"seqread-1m", "randread-4k-pin", "randwrite-4k-fsync", "metadata", "pgbench", "sqlite"}
        jobs = [j for j in jobs if j.name in keep]
    return jobs


# ---- system helpers ----------------------------------------------------------------------

def drop_caches() -> None:
    """Every job starts cold: page cache, dentries and inodes (FUSE's included)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # not root: results are warmer, the comparison still interleaves


def warm(path: Path) -> None:
    """Read a backing file into the page cache. Jobs measure the FUSE layer, so its own
    cache starts cold while the backing file is served from memory, as in the reference
    figures (a cold virtual disk would otherwise dominate every variant alike)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        while os.read(fd, 4 * MiB):
            pass
    finally:
        os.close(fd)


def proc_cpu_s(pid: Optional[int]) -> Optional[float]:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_mem_mb(pid: Optional[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    if pid is None:
        return out
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return out


def reset_peak_rss(pid: Optional[int]) -> None:
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5\n")
    except OSError:
        pass


def taskset(argv: list[str], cpus: Optional[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


# ---- running ----------------------------------------------------------------------------

def layout(data: Path, jobs: list[Job]) -> None:
    """Create the job files natively in the backing dir (fio would otherwise lay them out
    through each mount, timing nothing useful)."""
    data.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(MiB)
    for j in jobs:
        if j.kind != "fio" or not j.file:
            continue
        p = data / j.file
        if p.exists() and p.stat().st_size == j.size:
            continue
        with open(p, "wb") as f:
            for _ in range(j.size // MiB):
                f.write(chunk)
            f.truncate(j.size)


def run_fio(job: Job, dirpath: Path, runtime: float, cpus: Optional[str]) -> dict:
    opts = {"ioengine": "psync", "time_based": 1, "runtime": f"{runtime}s", "ramp_time": "0.5s",
            "filename": str(dirpath / job.file), "size": job.size, "group_reporting": 1,
            "invalidate": 0, **job.fio}  # invalidate would evict the warmed backing file
    argv = ["fio", "--name", job.name, "--output-format=json"]
    argv += [f"--{k}={v}" for k, v in opts.items()]
    p = subprocess.run(taskset(argv, cpus), capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["fio failed"]}
    # fio may print warnings before the JSON document
    doc = json.loads(p.stdout[p.stdout.index("{"):])
    j = doc["jobs"][0]
    side = j["write"] if job.fio["rw"] in ("write", "randwrite") else j["read"]
    lat = side.get("clat_ns", {})
    if job.fio.get("fsync"):
        # what the application waits for per record: the write and its fsync
        lat_mean = side.get("lat_ns", {}).get("mean", 0) + j.get("sync", {}).get("lat_ns", {}).get("mean", 0)
        p99 = j.get("sync", {}).get("lat_ns", {}).get("percentile", {}).get("99.000000")
    else:
        lat_mean = side.get("lat_ns", {}).get("mean", lat.get("mean", 0))
        p99 = lat.get("percentile", {}).get("99.000000")
    return {
        "iops": side["iops"],
        "bw_mibs": side["bw_bytes"] / MiB,
        "lat_mean_us": lat_mean / 1000,
        "lat_p99_us": (p99 or 0) / 1000,
        "errors": j.get("error", 0),
    }


def run_metadata(dirpath: Path, n: int, cpus: Optional[str], flat: bool = False) -> dict:
    argv = [sys.executable, "-m", "perf.metadata", str(dirpath), str(n), *(["--flat"] if flat else [])]
    p = subprocess.run(taskset(argv, cpus), capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["metadata job failed"])[-1:]}
    return json.loads(p.stdout)


METRICS = {
    # key: (unit, better)
    "iops": ("IOPS", "higher"),
    "bw_mibs": ("MiB/s", "higher"),
    "lat_mean_us": ("mean µs", "lower"),
    "lat_p99_us": ("p99 µs", "lower"),
    "create_ops": ("ops/s", "higher"),
    "stat_ops": ("ops/s", "higher"),
    "unlink_ops": ("ops/s", "higher"),
    "readdir_ms": ("ms", "lower"),
    "tps": ("TPS", "higher"),
    "pg_lat_ms": ("latency ms", "lower"),
    "init_s": ("pgbench -i s", "lower"),
    "inserts_s": ("inserts/s", "higher"),
    "cpu_pct": ("% CPU", "lower"),
    "peak_rss_mb": ("MB", "lower"),
}


def timed(fn, *a) -> tuple[dict, float]:
    t0 = time.monotonic()
    r = fn(*a)
    return r, time.monotonic() - t0
