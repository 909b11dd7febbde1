"""The things being compared: a native directory and FUSE mounts over one backing directory.

Every mount is started once per run and stays up while the jobs interleave across variants,
so each variant's numbers come from the same minutes of a noisy machine.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from chaosfs import mounts

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class VariantError(Exception):
    """A variant could not be started; str() is the one-line reason."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_cpus() -> str:
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))


def set_affinity(pid: int, cpus: str) -> None:
    """Pin every thread of `pid` (trio, worker and gRPC threads alike)."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Variant:
    name: str
    label: str
    kind: str                      # native | ceiling | ceiling-io | chaosfs | ref | compare
    args: list[str] = field(default_factory=list)
    rules: Optional[Callable[[str], None]] = None   # called with the gRPC address
    # reads kept waiting under faulty/ while the jobs run (perf/stall.py): with a delay rule
    # there, they show whether a stalled path slows the others
    stall_threads: int = 0
    command: Optional[str] = None  # --compare command template
    # ref: builds the reference into the given dir, returns its command template
    build: Optional[Callable[[Path], str]] = None
    # set by start()
    root: Optional[Path] = None    # where jobs run (mountpoint or the native dir)
    proc: Optional[subprocess.Popen] = None
    addr: Optional[str] = None
    startup_s: Optional[float] = None
    log: Optional[Path] = None
    stall: Optional[subprocess.Popen] = None
    stall_summary: Optional[dict] = None   # what perf/stall.py reported at stop()
    # the daemon to measure (RSS, CPU, pinning); None for native
    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, work: Path, backing: Path) -> None:
        if self.kind == "native":
            self.root = backing
            return
        if self.kind == "ref":
            assert self.build is not None
            try:
                self.command = self.build(work / "refs")
            except VariantError as e:
                raise VariantError(f"{self.name}: build failed: {e}") from None
        mnt = work / f"mnt-{self.name}"
        mnt.mkdir(parents=True, exist_ok=True)
        pidfile = work / f"{self.name}.pid"
        pidfile.unlink(missing_ok=True)
        self.log = work / f"{self.name}.log"
        if self.kind == "chaosfs":
            port = free_port()
            self.addr = f"127.0.0.1:{port}"
            argv = [str(BIN / "chaosfs"), f"-addr={self.addr}", f"-pidfile={pidfile}",
                    f"-original={backing}", f"-mountpoint={mnt}", "-log-level=warning", *self.args]
        elif self.kind == "ceiling":
            argv = [sys.executable, "-m", "perf.ceiling", str(mnt), str(pidfile), *self.args]
        elif self.kind == "ceiling-io":
            (backing / "data").mkdir(exist_ok=True)
            argv = [sys.executable, "-m", "perf.ceiling", str(mnt), str(pidfile), str(backing / "data")]
        else:
            assert self.command is not None
            argv = shlex.split(self.command.format(original=shlex.quote(str(backing)),
                                                   mountpoint=shlex.quote(str(mnt))))
        t0 = time.monotonic()
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=logf, cwd=ROOT,
                                         start_new_session=True)
        deadline = t0 + 30
        while True:
            ready = mounts.mount_type(str(mnt)) is not None
            if self.kind in ("chaosfs", "ceiling", "ceiling-io"):
                ready = ready and pidfile.exists()
            if ready:
                break
            if self.proc.poll() is not None and self.kind != "compare":  # may daemonize
                raise VariantError(f"{self.name}: exited with {self.proc.returncode}: "
                                   f"{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise VariantError(f"{self.name}: not mounted after 30 s: {self._log_tail()}")
            time.sleep(0.005)
        self.startup_s = time.monotonic() - t0
        self.root = mnt
        try:
            if self.rules is not None:
                assert self.addr is not None
                self.rules(self.addr)
            if self.stall_threads:
                self._start_stall()
        except Exception as e:  # not half set up: nothing of this variant stays mounted
            self.stop()
            raise VariantError(f"{self.name}: setting up its rules or load failed: "
                               f"{type(e).__name__}: {e}") from None

    def _start_stall(self) -> None:
        assert self.root is not None
        target = self.root / "faulty" / "stall.bin"
        target.parent.mkdir(exist_ok=True)
        if not target.exists():
            target.write_bytes(os.urandom(1 << 20))  # the rule delays reads, not writes
        self.stall = subprocess.Popen([sys.executable, "-m", "perf.stall", str(target),
                                       str(self.stall_threads)], cwd=ROOT,
                                      stdout=subprocess.PIPE, text=True)

    def _stop_stall(self) -> None:
        p, self.stall = self.stall, None
        if p is None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        try:
            self.stall_summary = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.stall_summary = {"error": f"perf.stall exited with {p.returncode}, no summary"}

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines() if self.log else []
        except OSError:
            lines = []
        return lines[-1] if lines else "(no output)"

    def stop(self) -> None:
        self._stop_stall()  # first: its reads are on the mount
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.root is not None and self.kind != "native":
            for _ in range(5):
                if mounts.mount_type(str(self.root)) is None:
                    break
                mounts.lazy_unmount(str(self.root))


# ---- fault-rule setups (over the real gRPC API) ------------------------------------------

def _faults_stub(addr: str):
    import grpc
    from chaosfs.proto import faults_pb2_grpc
    ch = grpc.insecure_channel(addr)
    grpc.channel_ready_future(ch).result(timeout=10)
    return ch, faults_pb2_grpc.FaultsStub(ch)


def rules_nonmatching(n: int) -> Callable[[str], None]:
    """n rules on data and metadata methods whose paths match nothing fio touches."""
    def add(addr: str) -> None:
        from chaosfs.proto import faults_pb2 as pb
        ch, stub = _faults_stub(addr)
        with ch:
            for i in range(n):
                stub.AddRule(pb.AddRuleRequest(rule=pb.Rule(
                    methods=["read", "write", "open", "getattr", "lookup"],
                    path=f"^nowhere/d{i}/", errno=pb.ErrnoAction(code=5))), timeout=10)
    return add


def rule_other_path(pct: float) -> Callable[[str], None]:
    """One EIO rule at `pct` % on every method under faulty/, which the jobs never touch."""
    def add(addr: str) -> None:
        from chaosfs.proto import faults_pb2 as pb
        ch, stub = _faults_stub(addr)
        with ch:
            stub.AddRule(pb.AddRuleRequest(rule=pb.Rule(
                path="^faulty/", errno=pb.ErrnoAction(code=5), probability=pct)), timeout=10)
    return add


def rule_delay_other_path(ms: int) -> Callable[[str], None]:
    """A fixed delay on every read under faulty/ (where perf/stall.py keeps reads waiting)."""
    def add(addr: str) -> None:
        from chaosfs.proto import faults_pb2 as pb
        ch, stub = _faults_stub(addr)
        with ch:
            stub.AddRule(pb.AddRuleRequest(rule=pb.Rule(
                methods=["read"], path="^faulty/", delay=pb.DelayAction(fixed_us=ms * 1000))), timeout=10)
    return add


def arm_power_loss(addr: str) -> None:
    """An armed power-loss experiment (every write and fsync tracked, old data kept)."""
    import grpc
    from chaosfs.proto import powerloss_pb2 as pb, powerloss_pb2_grpc as pbg
    with grpc.insecure_channel(addr) as ch:
        pbg.PowerLossStub(ch).Arm(pb.ArmRequest(max_undo_bytes=4 << 30), timeout=10)


def _ref_passthrough_ll(single: bool) -> Callable[[Path], str]:
    def build(out: Path) -> str:
        from perf import refs
        return refs.passthrough_ll(out, single)
    return build


def _ref_gofuse(out: Path) -> str:
    from perf import refs
    return refs.gofuse_loopback(out)


# the references every chaosfs variant is compared with in the report (besides native)
REFERENCES = ("passthrough_ll-s", "gofuse")
QUICK = ("native", "ceiling", "chaosfs", "devfuse", "passthrough_ll-s", "gofuse")


def standard(quick: bool) -> list[Variant]:
    cy = "-transport=cython"
    vs = [
        Variant("native", "native dir", "native"),
        Variant("ceiling", "pyfuse3 ceiling", "ceiling"),
        Variant("ceiling-io", "pyfuse3 ceiling, real I/O", "ceiling-io"),
        Variant("passthrough_ll-s", "libfuse passthrough_ll -s", "ref", build=_ref_passthrough_ll(True)),
        Variant("passthrough_ll-mt", "libfuse passthrough_ll, multi-threaded", "ref",
                build=_ref_passthrough_ll(False)),
        Variant("gofuse", "go-fuse loopback", "ref", build=_ref_gofuse),
        Variant("chaosfs", "chaosfs (no rules)", "chaosfs"),
        Variant("devfuse", "chaosfs -transport=cython", "chaosfs", [cy]),
        Variant("devfuse-passthrough", "chaosfs -transport=cython -passthrough=unmatched", "chaosfs",
                [cy, "-passthrough=unmatched"]),
        # needs the fuse module's enable_uring on (root: echo Y > /sys/module/fuse/parameters/enable_uring);
        # "on", not "auto": without it the variant fails to start rather than measure /dev/fuse again
        Variant("devfuse-uring", "chaosfs -transport=cython -fuse-uring=on", "chaosfs",
                [cy, "-fuse-uring=on"]),
        Variant("devfuse-rules1000", "chaosfs -transport=cython, 1000 non-matching rules", "chaosfs",
                [cy], rules=rules_nonmatching(1000)),
        Variant("devfuse-eio30", "chaosfs -transport=cython, 30% EIO on other path", "chaosfs",
                [cy], rules=rule_other_path(30.0)),
        Variant("devfuse-delay500", "chaosfs -transport=cython, 500 ms delay on other path, 64 reads stalled",
                "chaosfs", [cy], rules=rule_delay_other_path(500), stall_threads=64),
        # a power-loss directory each (the default, beside the backing dir, is one per
        # backing dir: a second armed daemon on it is refused); the daemon removes it at exit
        Variant("devfuse-armed", "chaosfs -transport=cython, power loss armed", "chaosfs",
                [cy, f"-power-loss-dir=/var/tmp/chaosfs-perf-pl-devfuse.{os.getpid()}"],
                rules=arm_power_loss),
        Variant("chaosfs-armed", "chaosfs, power loss armed", "chaosfs",
                [f"-power-loss-dir=/var/tmp/chaosfs-perf-pl-chaosfs.{os.getpid()}"], rules=arm_power_loss),
        Variant("chaosfs-splice", "chaosfs -fuse-hooks=false", "chaosfs", ["-fuse-hooks=false"]),
        Variant("fsync-inline", "chaosfs -fsync=inline", "chaosfs", ["-fsync=inline"]),
        Variant("passthrough", "chaosfs -passthrough=unmatched", "chaosfs", ["-passthrough=unmatched"]),
        Variant("chaosfs-py", "chaosfs -hot=python", "chaosfs", ["-hot=python"]),
        Variant("rules1000", "chaosfs, 1000 non-matching rules", "chaosfs",
                rules=rules_nonmatching(1000)),
        Variant("eio30", "chaosfs, 30% EIO on other path", "chaosfs", rules=rule_other_path(30.0)),
        Variant("delay500", "chaosfs, 500 ms delay on other path, 64 reads stalled", "chaosfs",
                rules=rule_delay_other_path(500), stall_threads=64),
    ]
    if quick:
        vs = [v for v in vs if v.name in QUICK]
    return vs


def parse_compare(spec: str) -> Variant:
    """`NAME=CMD` (or just CMD); CMD may use {original} and {mountpoint}."""
    name, sep, cmd = spec.partition("=")
    if not sep or " " in name or not name:
        name, cmd = f"compare{abs(hash(spec)) % 1000}", spec
    if "{mountpoint}" not in cmd:
        raise VariantError(f"--compare {spec!r}: the command must contain {{mountpoint}}")
    return Variant(name, name, "compare", command=cmd)
