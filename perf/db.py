"""The database jobs: PostgreSQL's pgbench (TPC-B) and SQLite, with the data on each variant.

pgbench: Debian's `postgresql` (binaries under /usr/lib/postgresql/<version>/bin), run as the
`postgres` user (initdb refuses root; every mount is allow_other). Per variant the cluster is
made once (`initdb`, then `pgbench -i -s SCALE`, timed as `init_s`) in `db/<variant>/` of the
backing directory, i.e. through that variant's mount; every sample then starts the server
cold (the caller dropped the caches), runs `pgbench -c 4 -j 2 -T SECONDS` and stops it. The
server listens on a unix socket in the run's work dir only (no TCP).

SQLite: `python -m perf.sqlite_job` in its own process (see there).
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

PG_USER = "postgres"


class DbError(Exception):
    """One-line reason a database sample could not run."""


def pg_bindir() -> Path:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: [int(x) for x in re.findall(r"\d+", d)])
    for d in reversed(dirs):
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "postgres", "pgbench")):
            return Path(d)
    raise DbError("PostgreSQL not found under /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")


def pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        raise DbError(f"no {PG_USER!r} user (Debian's postgresql package creates it)") from None


def check_reachable(path: Path, uid: int) -> None:
    """Every parent of `path` must be searchable by `uid`, or the server cannot reach it."""
    p = path
    while True:
        st = p.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            raise DbError(f"the {PG_USER} user cannot reach {path}: {p} is mode "
                          f"{st.st_mode & 0o777:o} (use --workdir under /var/tmp)")
        if p.parent == p:
            return
        p = p.parent


def _tail(text: str) -> str:
    """The line that says why: the last PANIC/FATAL/error line, else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    why = next((ln for ln in reversed(lines)
                if re.search(r"PANIC|FATAL|ERROR|error|could not|failed", ln) and "removing" not in ln),
               lines[-1] if lines else "(no output)")
    if "could not fsync" in why and "not supported" in why:
        why += " (the file system answers this fsync(2) with EOPNOTSUPP; PostgreSQL stops on any fsync failure)"
    return why


class Postgres:
    """One cluster on one variant. `prepare()` once, then `sample()` per round."""

    def __init__(self, variant_root: Path, backing: Path, work: Path, name: str) -> None:
        self.bindir = pg_bindir()
        self.user = pg_user()
        self.name = name
        # created natively in the backing dir, seen through the variant's mount
        self.native_dir = backing / "db" / name
        self.datadir = variant_root / "db" / name / "pgdata"
        self.sockdir = work / "pgsock"
        self.log = work / f"pg-{name}.log"
        self.port = 54320   # the socket file lives in our own sockdir: no clash with a system server
        self.proc: Optional[subprocess.Popen] = None
        self.log_mark = 0

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[],
                                  cwd=self.sockdir, env=self._env())
        except subprocess.TimeoutExpired:
            raise DbError(f"{Path(argv[0]).name} did not finish in {timeout:.0f} s") from None

    def _env(self) -> dict:
        return {"PATH": f"{self.bindir}:/usr/bin:/bin", "HOME": str(self.sockdir), "LANG": "C",
                "PGHOST": str(self.sockdir), "PGPORT": str(self.port), "PGUSER": PG_USER}

    def prepare(self, scale: int) -> float:
        """initdb + pgbench -i; returns pgbench -i's wall time in seconds."""
        self.sockdir.mkdir(exist_ok=True)
        os.chown(self.sockdir, self.user.pw_uid, self.user.pw_gid)
        check_reachable(self.sockdir, self.user.pw_uid)
        check_reachable(self.datadir.parent.parent.parent, self.user.pw_uid)
        shutil.rmtree(self.native_dir, ignore_errors=True)
        # The data directory itself is made natively, owned by postgres: passthrough_ll
        # creates what it is asked to with its own (root) credentials, and postgres refuses
        # a data directory it does not own.
        (self.native_dir / "pgdata").mkdir(parents=True)
        for d in (self.native_dir, self.native_dir / "pgdata"):
            os.chown(d, self.user.pw_uid, self.user.pw_gid)
            os.chmod(d, 0o700)
        # -N: no fsync of the fresh cluster (set-up, not the measurement)
        r = self._run([str(self.bindir / "initdb"), "-N", "-U", PG_USER, "-E", "UTF8",
                       "--locale=C", "-D", str(self.datadir)], timeout=300)
        if r.returncode:
            raise DbError(f"initdb: {_tail(r.stderr or r.stdout)}")
        self.start()
        try:
            t0 = time.monotonic()
            r = self._run([str(self.bindir / "pgbench"), "-i", "-q", "-s", str(scale), "postgres"],
                          timeout=1800)
            init_s = time.monotonic() - t0
            if r.returncode:
                raise DbError(f"pgbench -i: {_tail(r.stderr)}; server: {self._log_tail()}")
        finally:
            self.stop()
        return init_s

    def start(self) -> None:
        self.log_mark = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.datadir), "-k", str(self.sockdir),
                 "-p", str(self.port), "-c", "listen_addresses="],
                stdout=logf, stderr=logf, user=self.user.pw_uid, group=self.user.pw_gid,
                extra_groups=[], cwd=self.sockdir, env=self._env(), start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            r = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.sockdir),
                                "-p", str(self.port)], env=self._env())
            if r.returncode == 0:
                return
            if self.proc.poll() is not None:
                self.proc = None
                raise DbError(f"postgres exited: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DbError(f"postgres not ready after 120 s: {self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        """Why the server failed: from this start's part of the log only."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_mark)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        # the log line's prefix (timestamp, pid) says nothing
        return re.sub(r"^\S+ \S+ \S+ \[\d+\] ", "", _tail(text))

    def stop(self) -> None:
        """Fast shutdown (SIGINT); immediate (SIGQUIT), then SIGKILL of its process group if
        it hangs: nothing may keep files open on the mount when the variant unmounts."""
        p = self.proc
        if p is None:
            return
        escalated = False
        for sig, wait in ((signal.SIGINT, 60), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
            if p.poll() is not None:
                break
            try:
                if sig == signal.SIGKILL:
                    os.killpg(p.pid, sig)   # the postmaster's own session: its backends too
                else:
                    p.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                escalated = True
        if escalated:   # backends of a postmaster that did not shut down cleanly
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None

    def sample(self, clients: int, threads: int, seconds: float) -> dict:
        self.start()
        try:
            r = self._run([str(self.bindir / "pgbench"), "-c", str(clients), "-j", str(threads),
                           "-T", str(max(1, round(seconds))), "postgres"], timeout=seconds + 600)
        finally:
            self.stop()
        if r.returncode:
            raise DbError(f"pgbench: {_tail(r.stderr or r.stdout)}; server: {self._log_tail()}")
        tps = re.search(r"^tps = ([\d.]+)", r.stdout, re.M)
        lat = re.search(r"^latency average = ([\d.]+) ms", r.stdout, re.M)
        failed = re.search(r"^number of failed transactions: (\d+)", r.stdout, re.M)
        if not tps:
            raise DbError(f"pgbench printed no tps: {_tail(r.stdout)}")
        out = {"tps": float(tps.group(1)), "errors": int(failed.group(1)) if failed else 0}
        if lat:
            out["pg_lat_ms"] = float(lat.group(1))
        return out

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.native_dir, ignore_errors=True)


def run_sqlite(dirpath: Path, seconds: float, cpus: Optional[str]) -> dict:
    from perf.jobs import taskset
    dirpath.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "perf.sqlite_job", str(dirpath), str(seconds)]
    p = subprocess.run(taskset(argv, cpus), capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=seconds + 300)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["sqlite job failed"])[-1:]}
    return json.loads(p.stdout)
