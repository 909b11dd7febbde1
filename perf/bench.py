"""`perf/run`: the benchmark suite. Variants run interleaved (A B C A B C ...) inside every
job, so a burst of load from a neighbour hits all of them alike; the report gives medians,
min-max and ratios, never a pass/fail."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from perf import jobs as J
from perf import report
from perf.variants import Variant, VariantError, all_cpus, parse_compare, set_affinity, standard

PERF_DIR = Path(__file__).resolve().parent


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"perf/run: {message}\n")


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = _Parser(prog="perf/run", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, short jobs, 6 variants, 6 jobs")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    p.add_argument("--runtime", type=float,
                   help="seconds per fio and SQLite job (default 5; quick 1.5)")
    p.add_argument("--pin", action="store_true",
                   help="pin fio and every daemon to one CPU for all jobs (taskset)")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=CMD",
                   help="also mount another FUSE passthrough: CMD uses {original} and "
                        "{mountpoint} and should stay in the foreground; repeatable")
    p.add_argument("--variants", help="comma-separated subset of variant names")
    p.add_argument("--jobs", help="comma-separated subset of job names")
    p.add_argument("--fault-rounds", type=int, help="SetFault latency samples (default 50)")
    p.add_argument("--out", type=Path, help="results dir (default perf/results/<timestamp>)")
    p.add_argument("--workdir", type=Path, help="where backing files live (default: /var/tmp)")
    p.add_argument("--seq-size-mib", type=int, default=512)
    p.add_argument("--rand-size-mib", type=int, default=2048)
    p.add_argument("--meta-files", type=int, default=3000)
    p.add_argument("--pg-scale", type=int, help="pgbench -i -s (default 10; quick 1)")
    p.add_argument("--pg-time", type=int, help="pgbench -T seconds (default 30; quick 3)")
    a = p.parse_args(argv)
    if any(v is not None and v <= 0 for v in (a.rounds, a.runtime, a.fault_rounds, a.pg_scale, a.pg_time)):
        p.error("--rounds, --runtime, --fault-rounds, --pg-scale and --pg-time must be positive")
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.runtime = a.runtime or (1.5 if a.quick else 5.0)
    a.fault_rounds = a.fault_rounds or (5 if a.quick else 50)
    a.pg_scale = a.pg_scale or (1 if a.quick else 10)
    a.pg_time = a.pg_time or (3 if a.quick else 30)
    if a.quick:
        a.seq_size_mib = min(a.seq_size_mib, 64)
        a.rand_size_mib = min(a.rand_size_mib, 32)
        a.meta_files = min(a.meta_files, 300)
    if a.meta_files < 1 or a.seq_size_mib < 1 or a.rand_size_mib < 1:
        p.error("--meta-files and the --*-size-mib options must be positive")
    return a


def _select(items: list, names: Optional[str], what: str) -> list:
    if not names:
        return items
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {i.name for i in items}
    bad = [n for n in wanted if n not in known]
    if bad:
        raise VariantError(f"unknown {what} {', '.join(bad)} (known: {', '.join(sorted(known))})")
    return [i for i in items if i.name in wanted]


def _check_tools() -> None:
    for tool in ("fio", "taskset"):
        if shutil.which(tool) is None:
            raise VariantError(f"{tool} not found (Debian: apt-get install "
                               f"{'fio' if tool == 'fio' else 'util-linux'})")
    if not os.path.exists("/dev/fuse"):
        raise VariantError("/dev/fuse is missing")


class Databases:
    """The PostgreSQL cluster of each variant, made the first time pgbench runs on it."""

    def __init__(self, work: Path, backing: Path) -> None:
        self.work, self.backing = work, backing
        self.pg: dict[str, object] = {}     # variant -> db.Postgres, or the reason it failed
        self.init_s: dict[str, float] = {}

    def postgres(self, v: Variant, scale: int):
        from perf import db
        if v.name not in self.pg:
            try:
                pg = db.Postgres(v.root, self.backing, self.work, v.name)
                self.pg[v.name] = pg
                print(f"(initdb + pgbench -i -s {scale})", end=" ", flush=True)
                self.init_s[v.name] = pg.prepare(scale)
            except db.DbError as e:
                self.pg[v.name] = str(e)
        return self.pg[v.name]

    def close(self) -> None:
        for pg in self.pg.values():
            if not isinstance(pg, str):
                pg.stop()


def run_one(job: J.Job, v: Variant, args: argparse.Namespace, pin_cpu: str, dbs: Databases) -> dict:
    assert v.root is not None
    pinned = args.pin or job.pinned
    cpus = pin_cpu if pinned else None
    pid = v.pid
    pg = None
    if job.kind == "pgbench":
        pg = dbs.postgres(v, args.pg_scale)
        if isinstance(pg, str):
            return {"error": [pg]}
    if pinned and pid and not args.pin:
        set_affinity(pid, pin_cpu)
    J.drop_caches()
    if job.kind == "fio":
        J.warm(args.backing / "data" / job.file)
    J.reset_peak_rss(pid)
    c0, t0 = J.proc_cpu_s(pid), time.monotonic()
    try:
        if job.kind == "metadata":
            flat = v.kind in ("ceiling", "ceiling-io")
            r = J.run_metadata(v.root if flat else v.root / "meta", args.meta_files, cpus, flat)
        elif job.kind == "pgbench":
            from perf import db
            try:
                r = pg.sample(4, 2, args.pg_time)
            except db.DbError as e:
                r = {"error": [str(e)]}
            if v.name in dbs.init_s:    # the one-off load, reported with the first sample
                r["init_s"] = dbs.init_s.pop(v.name)
        elif job.kind == "sqlite":
            from perf import db
            r = db.run_sqlite(v.root / "db", args.runtime, cpus)
        else:
            r = J.run_fio(job, v.root if v.kind in ("ceiling", "ceiling-io") else v.root / "data", args.runtime, cpus)
    finally:
        if pinned and pid and not args.pin:
            set_affinity(pid, all_cpus())
    wall = time.monotonic() - t0
    c1 = J.proc_cpu_s(pid)
    if c0 is not None and c1 is not None:
        r["cpu_pct"] = 100 * (c1 - c0) / wall
    mem = J.proc_mem_mb(pid)
    if "VmHWM" in mem:
        r["peak_rss_mb"] = mem["VmHWM"]
    return r


def _interrupt(signum, frame) -> None:
    # SIGTERM must unmount and stop the daemons like Ctrl-C does (they run in their own
    # sessions so a terminal's Ctrl-C reaches only us).
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or PERF_DIR / "results" / stamp
    try:
        _check_tools()
        variants = _select(standard(args.quick), args.variants, "variant")
        variants += [parse_compare(s) for s in args.compare]
        jobs = _select(J.standard_jobs(
            args.quick, args.seq_size_mib << 20, args.rand_size_mib << 20,
            pg_title=f"pgbench TPC-B -s {args.pg_scale} -c 4 -j 2 -T {args.pg_time}",
            sqlite_title=f"SQLite WAL, FULL sync, 4 KiB row per txn, {args.runtime:g} s"),
            args.jobs, "job")
    except VariantError as e:
        print(f"perf/run: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    base = args.workdir or Path("/var/tmp")
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="chaosfs-perf-", dir=base))
    os.chmod(work, 0o755)
    backing = args.backing = work / "backing"
    for d in ("data", "meta", "faulty", "db"):
        (backing / d).mkdir(parents=True, exist_ok=True)
    (backing / "faulty" / "victim").write_bytes(b"x" * 4096)
    (backing / "data" / "probe.bin").write_bytes(os.urandom(4096))
    pin_cpu = str(min(os.sched_getaffinity(0)))
    results: dict = {
        "started": stamp, "argv": sys.argv[1:] if argv is None else argv,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "host": {"kernel": os.uname().release, "cpus": os.cpu_count(), "backing": str(backing)},
        "variants": {}, "jobs": {j.name: {"title": j.title, "headline": j.headline} for j in jobs},
        "samples": {},
    }
    started: list[Variant] = []
    failed: list[str] = []
    dbs = Databases(work, backing)
    t_start = time.monotonic()
    try:
        print(f"laying out files in {backing} ...", flush=True)
        J.layout(backing / "data", jobs)
        for v in variants:
            try:
                v.start(work, backing)
            except VariantError as e:
                # loud: on stderr now, in the report, and in the exit status
                print(f"perf/run: FAILED {e}", file=sys.stderr, flush=True)
                results["variants"][v.name] = {"label": v.label, "kind": v.kind, "error": str(e)}
                failed.append(v.name)
                continue
            started.append(v)
            if args.pin and v.pid:
                set_affinity(v.pid, pin_cpu)
        time.sleep(1.0)
        for v in started:
            results["variants"][v.name] = {
                "label": v.label, "kind": v.kind, "args": v.args, "command": v.command,
                "startup_ms": None if v.startup_s is None else v.startup_s * 1000,
                "idle_rss_mb": J.proc_mem_mb(v.pid).get("VmRSS"),
            }
        for rnd in range(args.rounds):
            for job in jobs:
                # rotate the order each round so no variant always runs right after another
                k = rnd % len(started) if started else 0
                for v in started[k:] + started[:k]:
                    if not job.applies(v.kind):
                        continue
                    print(f"round {rnd + 1}/{args.rounds}  {job.name:<20} {v.name:<12}", end=" ",
                          flush=True)
                    r = run_one(job, v, args, pin_cpu, dbs)
                    results["samples"].setdefault(job.name, {}).setdefault(v.name, []).append(r)
                    print(report.brief(job, r), flush=True)
        # both transports, each with no rules of its own (the probe's rule is the only one)
        for chaos in (v for v in started if v.name in ("chaosfs", "devfuse") and v.addr):
            print(f"measuring SetFault latency on {chaos.name} ...", flush=True)
            try:
                fl = __import__("perf.faultlat", fromlist=["measure"]).measure(
                    chaos.addr, chaos.root, "data/probe.bin", args.fault_rounds)
            except Exception as e:  # reported, not fatal: the rest of the run is still useful
                fl = {"error": f"{type(e).__name__}: {e}"}
            results.setdefault("fault_latency", {})[chaos.name] = fl
        for v in started:
            if v.pid:
                results["variants"][v.name]["end_rss_mb"] = J.proc_mem_mb(v.pid).get("VmRSS")
    except KeyboardInterrupt:
        print("\ninterrupted: writing what was measured", file=sys.stderr)
        results["interrupted"] = True
    finally:
        try:
            dbs.close()     # no server may hold files on a mount being unmounted
        finally:
            for v in started:
                v.stop()
                if v.stall_summary is not None:
                    results["variants"][v.name]["stall"] = v.stall_summary
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = time.monotonic() - t_start
    report.write(out, results)
    print(f"results: {out}/results.json, {out}/table.md" +
          (f", {out}/chart.png" if (out / "chart.png").exists() else ""))
    if failed:
        print(f"perf/run: {len(failed)} variant(s) FAILED: {', '.join(failed)} (reasons in table.md)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
