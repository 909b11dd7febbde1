"""Shared fixtures: a real chaosfs daemon mounted on temp dirs, always cleaned up; a real
kube-apiserver + etcd for the session, and a namespace of it per test."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

# grpcio runs fork handlers in every fork() of a process that holds channels; a fork while
# another thread is inside gRPC (tests start psql, sqlite writers and daemons from threads
# that poll a daemon over gRPC) can crash the child. Our children exec at once: no handlers.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHAOSFS = str(BIN / "chaosfs")
CHAOSFS_CTL = str(BIN / "chaosfs-ctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mount_type(path: str) -> Optional[str]:
    from chaosfs.mounts import mount_type as _mount_type  # decodes mountinfo's \040 escapes
    return _mount_type(path)


def lazy_unmount(path: str) -> None:
    subprocess.run(["fusermount3", "-u", "-z", "-q", path], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


@dataclass
class Daemon:
    original: Path
    mountpoint: Path
    pidfile: Path
    port: int
    proc: Optional[subprocess.Popen] = None
    args: list = field(default_factory=list)
    log: Optional[Path] = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [CHAOSFS, f"-addr=127.0.0.1:{self.port}", f"-pidfile={self.pidfile}",
                f"-original={self.original}", f"-mountpoint={self.mountpoint}", *self.args]

    def start(self, timeout: float = 15.0, env: Optional[dict] = None) -> "Daemon":
        assert self.log is not None
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=logf,
                                     env={**os.environ, **(env or {})})
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chaosfs exited with {self.proc.returncode}:\n{self.log_text()}")
            if (self._pidfile_is_ours() and mount_type(str(self.mountpoint)) == "fuse.chaosfs"):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"chaosfs did not become ready:\n{self.log_text()}")

    def _pidfile_is_ours(self) -> bool:
        # A stale pidfile and a dead mount from a killed run must not count as ready.
        try:
            return self.pidfile.read_text().strip() == str(self.proc.pid)
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        """The log once it holds `text` (or at the timeout, for the caller's assertion)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.log_text()

    def method_counts(self) -> dict[str, int]:
        """Requests served per FUSE method, from the Stats RPC."""
        import grpc
        from chaosfs.proto import faults_pb2, faults_pb2_grpc
        with grpc.insecure_channel(self.addr) as ch:
            st = faults_pb2_grpc.FaultsStub(ch).Stats(faults_pb2.StatsRequest(), timeout=10)
        return {m.method: m.count for m in st.methods}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        if mount_type(str(self.mountpoint)):
            lazy_unmount(str(self.mountpoint))
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        while mount_type(str(self.mountpoint)):
            lazy_unmount(str(self.mountpoint))


def errno_of(fn, *a) -> int:
    """The errno `fn(*a)` fails with, 0 if it succeeds."""
    try:
        fn(*a)
    except OSError as e:
        return e.errno
    return 0


def make_daemon(base: Path, *args: str) -> Daemon:
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)  # other uids walk through (allow_other tests)
    for d in ("original", "mnt"):
        (base / d).mkdir(exist_ok=True)
        os.chmod(base / d, 0o755)
    return Daemon(original=base / "original", mountpoint=base / "mnt",
                  pidfile=base / "run" / "chaosfs.pid", port=free_port(), args=list(args),
                  log=base / "chaosfs.log")


@pytest.fixture
def daemon_factory():
    """Start chaosfs daemons with extra flags: `daemon_factory("-hot=python")`.

    Dirs live in their own /tmp/chaosfs-test-* (0755), not under pytest's temp root, which
    another pytest session may reset to 0700 and lock out tests acting as another uid."""
    made: list[Daemon] = []
    tmp_path = Path(tempfile.mkdtemp(prefix="chaosfs-test-", dir="/tmp"))
    os.chmod(tmp_path, 0o755)

    def factory(*args: str, start: bool = True, name: Optional[str] = None, env: Optional[dict] = None) -> Daemon:
        d = make_daemon(tmp_path / (name or f"d{len(made)}"), *args)
        made.append(d)
        if start:
            d.start(env=env)
        return d

    yield factory
    for d in made:
        d.cleanup()
    if not any(mount_type(str(d.mountpoint)) for d in made):
        shutil.rmtree(tmp_path, ignore_errors=True)


# Both FUSE transports: pyfuse3 (libfuse) and chaosfs's own /dev/fuse session.
TRANSPORTS = ("pyfuse3", "cython")


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


@pytest.fixture
def fault_daemon(daemon_factory, transport):
    """make(tree) -> a daemon on each transport with `tree` ({relative path: bytes}) in its
    backing dir and both control APIs attached: d.injure (a 0.9 client built from the 0.9
    proto alone) and d.faults (chaosfs.v1)."""
    import grpc
    from chaosfs.proto import faults_pb2_grpc
    from tests.compat09 import Injure09
    made: list[Daemon] = []

    def make(tree: dict) -> Daemon:
        d = daemon_factory(f"-transport={transport}")
        d.transport = transport
        for rel, data in tree.items():
            (d.original / rel).parent.mkdir(parents=True, exist_ok=True)
            (d.original / rel).write_bytes(data)
        d.injure = Injure09(d.addr)
        d.channel = grpc.insecure_channel(d.addr)
        d.faults = faults_pb2_grpc.FaultsStub(d.channel)
        made.append(d)
        return d

    yield make
    for d in made:
        d.injure.close()
        d.channel.close()


@pytest.fixture(params=["cython", "python"])
def hot_impl(request) -> str:
    return request.param


@pytest.fixture
def chaosfs_mount(daemon_factory) -> Daemon:
    """A running chaosfs (Cython hot path) over an empty original dir."""
    return daemon_factory()


# ------------------------------------------------------------------ a real API server
_KUBE_BUILD_ERROR = pytest.StashKey[Exception]()


def _say(config):
    """A line on the terminal even while pytest captures output."""
    def say(line: str) -> None:
        capman = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        with capman.global_and_fixture_disabled():
            if reporter is not None:
                # write_line starts a new line after a file's name, not after -q's dots
                if not reporter.currentfspath and reporter._tw.width_of_current_line:
                    reporter.write("\n")
                reporter.write_line(f"kube-api: {line}")
            else:
                print(f"kube-api: {line}", flush=True)
    return say


def _uses_kube_api(item) -> bool:
    return "kube_api" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(session, config, items):
    # The API-server tests run last: when the e2e test runs too, its e2e/run builds the
    # Kubernetes binaries beside its image builds (as on every cold CI machine), and these
    # tests then find them cached instead of building them alone before everything.
    items.sort(key=_uses_kube_api)  # stable: the order within each group stays


def pytest_collection_finish(session):
    # A cold build takes 8-19 min: done here, before the first test, so that no test's
    # timeout covers it. Only when a collected test needs the API server and no collected
    # e2e run (which builds the same binaries, ahead of these tests) will build them.
    config = session.config
    if config.option.collectonly or not any(_uses_kube_api(i) for i in session.items):
        return
    if os.environ.get("CHAOSFS_E2E_MODE", "node") == "node" and any(
            i.nodeid.startswith("tests/test_e2e.py::") for i in session.items):
        return
    from e2e.control_plane import ControlPlaneError, cache_dir, ensure_binaries
    try:
        ensure_binaries(cache_dir(), _say(config))
    except ControlPlaneError as exc:
        config.stash[_KUBE_BUILD_ERROR] = exc  # raised by the fixture, in each test using it


@pytest.fixture(scope="session")
def kube_api(pytestconfig):
    """An ApiClient of a real etcd + kube-apiserver 1.20 started for this session on
    loopback, with the IoChaos CRD Established (tests/kubeapi.py)."""
    if _KUBE_BUILD_ERROR in pytestconfig.stash:
        raise pytestconfig.stash[_KUBE_BUILD_ERROR]
    from e2e.control_plane import binaries_missing, cache_dir
    if binaries_missing(cache_dir()):  # the e2e run before these tests did not build them
        pytest.fail(f"kube-apiserver is not in {cache_dir() / 'kube' / 'bin'} after the e2e "
                    f"test (its build log: {cache_dir() / 'build-kube.log'})")
    from tests.kubeapi import control_plane
    with control_plane(say=_say(pytestconfig)) as api:
        yield api


@pytest.fixture
def kube(kube_api, request):
    """This test's own namespace on the session's API server (tests.kubeapi.Namespace)."""
    from tests.kubeapi import Namespace, namespace_name
    return Namespace(kube_api, namespace_name(request.node.name))
