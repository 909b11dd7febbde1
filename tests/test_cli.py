"""The daemon's command line and lifecycle: bad input, the seed's flag forms, SIGTERM, and
restarts over a stale pidfile or a dead mount. Real processes and real mounts throughout."""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from chaosfs import __version__
from tests.conftest import CHAOSFS, Daemon, free_port, mount_type


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([CHAOSFS, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def dirs(tmp_path: Path) -> Path:
    for d in ("o", "m", "o/inner", "m/inner"):
        (tmp_path / d).mkdir()
    (tmp_path / "afile").write_text("x")
    return tmp_path


GOOD = {"-pidfile": "run/pid", "-original": "o", "-mountpoint": "m"}

BAD = {
    "no pidfile": (["-original=o", "-mountpoint=m"], "-pidfile"),
    "no original": (["-pidfile=run/pid", "-mountpoint=m"], "-original"),
    "no mountpoint": (["-pidfile=run/pid", "-original=o"], "-mountpoint"),
    "nothing": ([], "-pidfile"),
    "original missing": (["-pidfile=run/pid", "-original=nope", "-mountpoint=m"], "nope"),
    "original a file": (["-pidfile=run/pid", "-original=afile", "-mountpoint=m"], "not a directory"),
    "mountpoint missing": (["-pidfile=run/pid", "-original=o", "-mountpoint=nope"], "nope"),
    "mountpoint a file": (["-pidfile=run/pid", "-original=o", "-mountpoint=afile"], "not a directory"),
    "equal": (["-pidfile=run/pid", "-original=o", "-mountpoint=o"], "same"),
    "equal via dot path": (["-pidfile=run/pid", "-original=o", "-mountpoint=./o/../o/"], "same"),
    "mountpoint inside original": (["-pidfile=run/pid", "-original=o", "-mountpoint=o/inner"], "inside"),
    "original inside mountpoint": (["-pidfile=run/pid", "-original=m/inner", "-mountpoint=m"], "inside"),
    "pidfile dir under a file": (["-pidfile=afile/sub/pid", "-original=o", "-mountpoint=m"], "-pidfile"),
    "pidfile dir in /proc": (["-pidfile=/proc/chaosfs-nope/pid", "-original=o", "-mountpoint=m"], "-pidfile"),
    "pidfile is a directory": (["-pidfile=o/inner", "-original=o", "-mountpoint=m"], "-pidfile"),
    "addr no port": (["-addr=nope", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-addr"),
    "addr port too big": (["-addr=:99999", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-addr"),
    "addr bad port": (["-addr=:http", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-addr"),
    "addr v6 unbracketed": (["-addr=::1:80", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-addr"),
    "addr bad host": (["-addr=no_such host:80", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-addr"),
    "unknown flag": (["-bogus", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-bogus"),
    "unknown double-dash flag": (["--bogus=1", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "bogus"),
    "flag without value": (["-original=o", "-mountpoint=m", "-pidfile"], "-pidfile"),
    "positional argument": (["-pidfile=run/pid", "-original=o", "-mountpoint=m", "extra"], "extra"),
    "bad bool": (["-version=maybe"], "maybe"),
    "bad number": (["-workers=lots", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-workers"),
    "bad fsync mode": (["-fsync=sometimes", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "thread or inline"),
    "bad passthrough mode": (["-passthrough=always", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "off or unmatched"),
    "passthrough without hooks": (["-passthrough=unmatched", "-fuse-hooks=false", "-pidfile=run/pid",
                                   "-original=o", "-mountpoint=m"], "-passthrough needs -fuse-hooks"),
    "bad killpriv bool": (["-killpriv-v2=maybe", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "maybe"),
    "bad transport": (["-transport=libfuse2", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "cython or pyfuse3"),
    "no fuse threads": (["-transport=cython", "-fuse-threads=0", "-pidfile=run/pid", "-original=o",
                         "-mountpoint=m"], "-fuse-threads"),
    "too many fuse threads": (["-fuse-threads=65", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "1 to 64"),
    "metrics addr no port": (["-metrics-addr=localhost", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-metrics-addr"),
    "metrics addr bad port": (["-metrics-addr=:99999", "-pidfile=run/pid", "-original=o", "-mountpoint=m"], "-metrics-addr"),
    "metrics addr is the grpc port": (["-addr=:7000", "-metrics-addr=127.0.0.1:7000", "-pidfile=run/pid",
                                       "-original=o", "-mountpoint=m"], "gRPC port"),
    "cython transport, missing original": (["-transport=cython", "-pidfile=run/pid", "-original=nope",
                                            "-mountpoint=m"], "-original"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_one_line_exit_2_nothing_mounted(dirs: Path, case: str):
    args, needle = BAD[case]
    p = run_cli(*args, cwd=dirs)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert mount_type(str(dirs / "m")) is None and mount_type(str(dirs / "o")) is None
    assert str(dirs) not in open("/proc/self/mountinfo").read()  # (other tests mount elsewhere)
    assert not (dirs / "run" / "pid").exists()
    assert (dirs / "o" / "inner").is_dir()  # nothing was removed


def test_dev_fuse_unusable(dirs: Path):
    # A unix socket bound over /dev/fuse in a private mount namespace: open() gives ENXIO.
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(dirs / "sock"))
    try:
        p = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f'mount --bind "$1" /dev/fuse && exec "$2" -pidfile=run/pid -original=o -mountpoint=m',
             "sh", str(dirs / "sock"), CHAOSFS],
            capture_output=True, text=True, cwd=dirs, timeout=30)
    finally:
        sock.close()
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.splitlines()) == 1 and "/dev/fuse" in p.stderr
    assert not (dirs / "run" / "pid").exists()


def test_port_in_use(dirs: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = run_cli(f"-addr=127.0.0.1:{port}", "-pidfile=run/pid", "-original=o", "-mountpoint=m", cwd=dirs)
    assert p.returncode == 2, p.stderr
    assert [l for l in p.stderr.splitlines() if "chaosfs:" in l and "-addr" in l], p.stderr
    assert mount_type(str(dirs / "m")) is None
    assert not (dirs / "run" / "pid").exists()


def test_metrics_port_in_use(dirs: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = run_cli(f"-addr=127.0.0.1:{free_port()}", f"-metrics-addr=127.0.0.1:{port}",
                    "-pidfile=run/pid", "-original=o", "-mountpoint=m", cwd=dirs)
    assert p.returncode == 2, p.stderr
    (line,) = [l for l in p.stderr.splitlines() if "chaosfs:" in l]
    assert "-metrics-addr" in line and "in use" in line, p.stderr
    assert "Traceback" not in p.stderr
    assert mount_type(str(dirs / "m")) is None
    assert not (dirs / "run" / "pid").exists()


def test_version_and_help():
    p = run_cli("-version")
    assert (p.returncode, p.stdout.strip(), p.stderr) == (0, f"chaosfs {__version__}", "")
    p = run_cli("--version")
    assert p.returncode == 0 and __version__ in p.stdout
    for flag in ("-h", "--help", "-help"):
        p = run_cli(flag)
        assert p.returncode == 0, p.stderr
        for name in ("-addr", "-pidfile", "-original", "-mountpoint", "-version"):
            assert name in p.stdout
        assert "Traceback" not in p.stderr
    # a closed pipe is no reason for a traceback
    p = subprocess.run(f"{CHAOSFS} -h | head -c 1", shell=True, capture_output=True, text=True, timeout=30)
    assert "Traceback" not in p.stderr and "Error" not in p.stderr


# ---- running daemons with a custom command line ---------------------------------------------

def start_argv(d: Daemon, argv: list[str], timeout: float = 15.0) -> float:
    """Start chaosfs with exactly `argv`; returns the seconds until pidfile + live mount. The
    pidfile must never appear before the mount answers."""
    logf = open(d.log, "ab")
    t0 = time.monotonic()
    d.proc = subprocess.Popen([CHAOSFS, *argv], stdout=logf, stderr=logf)
    logf.close()
    while time.monotonic() - t0 < timeout:
        if d.proc.poll() is not None:
            raise AssertionError(f"chaosfs exited {d.proc.returncode}:\n{d.log_text()}")
        try:
            mine = d.pidfile.read_text().strip() == str(d.proc.pid)  # not a stale one
        except OSError:
            mine = False
        if mine:
            assert mount_type(str(d.mountpoint)) == "fuse.chaosfs", "pidfile before the mount"
            os.listdir(d.mountpoint)
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"not ready:\n{d.log_text()}")


def works(d: Daemon) -> None:
    (d.mountpoint / "probe").write_text("through the mount")
    assert (d.original / "probe").read_text() == "through the mount"
    assert d.pidfile.read_text().strip() == str(d.proc.pid)


def seed_argv(d: Daemon, port: int) -> list[str]:
    return [f"-addr=:{port}", f"-pidfile={d.pidfile}", f"-original={d.original}",
            f"-mountpoint={d.mountpoint}"]


def test_seed_command_line_form(daemon_factory):
    d = daemon_factory(start=False)
    port = free_port()
    start_argv(d, seed_argv(d, port))
    works(d)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # `:PORT` listens on all interfaces, loopback included
    assert d.stop() == 0


@pytest.mark.parametrize("style", ["space", "double-dash", "double-dash-eq", "mixed"])
def test_flag_spellings(daemon_factory, style: str):
    d = daemon_factory(start=False)
    port = free_port()
    vals = {"addr": f"127.0.0.1:{port}", "pidfile": str(d.pidfile), "original": str(d.original),
            "mountpoint": str(d.mountpoint)}
    argv: list[str] = []
    for i, (k, v) in enumerate(vals.items()):
        form = {"space": "sp", "double-dash": "ddsp", "double-dash-eq": "ddeq",
                "mixed": ("sp", "ddsp", "eq", "ddeq")[i]}[style]
        argv += {"sp": [f"-{k}", v], "ddsp": [f"--{k}", v], "eq": [f"-{k}={v}"],
                 "ddeq": [f"--{k}={v}"]}[form]
    start_argv(d, argv)
    works(d)
    assert d.stop() == 0


# ---- signals ----------------------------------------------------------------------------------

def _io_load(mnt: Path, stop: threading.Event) -> list[threading.Thread]:
    """Writers, fsyncers and readers hammering the mount until the daemon goes away."""
    def writer(i: int):
        try:
            fd = os.open(mnt / f"w{i}", os.O_CREAT | os.O_RDWR, 0o644)
            buf = os.urandom(1 << 16)
            off = 0
            while not stop.is_set():
                os.pwrite(fd, buf, off)
                off = (off + len(buf)) % (64 << 20)
                if i % 2:
                    os.fsync(fd)
                os.pread(fd, 1 << 16, 0)
        except OSError:
            return  # ENOTCONN once the daemon is gone: expected

    def lister():
        try:
            while not stop.is_set():
                os.listdir(mnt)
                os.stat(mnt / "w0") if (mnt / "w0").exists() else None
        except OSError:
            return

    ts = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(4)]
    ts.append(threading.Thread(target=lister, daemon=True))
    for t in ts:
        t.start()
    return ts


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_with_io_in_flight_cleans_up(daemon_factory, signame: str):
    d = daemon_factory()
    stop = threading.Event()
    ts = _io_load(d.mountpoint, stop)
    # and a process sitting inside the mount, which makes a plain unmount EBUSY
    busy = subprocess.Popen(["sleep", "60"], cwd=d.mountpoint)
    try:
        time.sleep(1.0)
        assert all(t.is_alive() for t in ts), "the I/O load died before the signal"
        t0 = time.monotonic()
        d.proc.send_signal(getattr(signal, signame))
        try:
            rc = d.proc.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"chaosfs still running 5 s after {signame}:\n{d.log_text()}")
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        busy.kill()
        busy.wait()
    for t in ts:
        t.join(10)
    assert rc == 0, d.log_text()
    assert elapsed < 5
    assert mount_type(str(d.mountpoint)) is None, "mount left behind"
    assert not d.pidfile.exists(), "pidfile left behind"
    assert "Traceback" not in d.log_text()


def test_sigterm_idle_is_quick(daemon_factory):
    d = daemon_factory()
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 2
    assert mount_type(str(d.mountpoint)) is None and not d.pidfile.exists()
    # the backing data is untouched by the unmount
    assert list(d.original.iterdir()) == []


# ---- restarts ---------------------------------------------------------------------------------

def test_restart_over_stale_pidfile_dead_pid(daemon_factory):
    d = daemon_factory(start=False)
    gone = subprocess.Popen(["true"])
    gone.wait()
    d.pidfile.parent.mkdir(parents=True, exist_ok=True)
    d.pidfile.write_text(f"{gone.pid}\n")
    d.start()
    works(d)
    assert d.stop() == 0
    assert not d.pidfile.exists()


@pytest.mark.parametrize("content", ["garbage", "", "1"])
def test_restart_over_unreadable_or_foreign_pidfile(daemon_factory, content: str):
    # "1" is init here: alive, and not chaosfs.
    d = daemon_factory(start=False)
    d.pidfile.parent.mkdir(parents=True, exist_ok=True)
    d.pidfile.write_text(content)
    d.start()
    works(d)
    assert d.stop() == 0


def test_restart_over_pidfile_of_live_non_chaosfs_process(daemon_factory):
    d = daemon_factory(start=False)
    other = subprocess.Popen(["sleep", "60"])
    try:
        d.pidfile.parent.mkdir(parents=True, exist_ok=True)
        d.pidfile.write_text(f"{other.pid}\n")
        d.start()
        works(d)
        assert other.poll() is None, "chaosfs touched the process named in the stale pidfile"
        assert d.stop() == 0
    finally:
        other.kill()
        other.wait()


def test_pidfile_of_live_chaosfs_is_refused(daemon_factory):
    a = daemon_factory()
    b = daemon_factory(start=False)
    b.pidfile = a.pidfile
    p = subprocess.run(b.argv(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.startswith("chaosfs:")]
    assert len(lines) == 1 and str(a.proc.pid) in lines[0], p.stderr
    assert mount_type(str(b.mountpoint)) is None
    assert a.pidfile.read_text().strip() == str(a.proc.pid)
    works(a)


def test_restart_over_dead_mount(daemon_factory):
    d = daemon_factory()
    (d.mountpoint / "kept").write_text("data")
    d.stop(signal.SIGKILL)
    with pytest.raises(OSError) as ei:
        os.listdir(d.mountpoint)
    assert ei.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    assert mount_type(str(d.mountpoint)) == "fuse.chaosfs"  # dead, but still mounted
    elapsed = start_argv(d, d.argv()[1:])
    assert elapsed < 2.0, f"took {elapsed:.2f}s to mount over a dead mount"
    assert (d.mountpoint / "kept").read_text() == "data"
    works(d)
    # exactly one chaosfs mount at the mountpoint now
    n = sum(1 for line in open("/proc/self/mountinfo") if f" {d.mountpoint} " in line)
    assert n == 1
    assert d.stop() == 0
    assert mount_type(str(d.mountpoint)) is None


def test_restart_twice_in_a_row(daemon_factory):
    d = daemon_factory()
    for _ in range(2):
        assert d.stop(signal.SIGTERM) == 0
        d.start()
        works(d)


def test_external_unmount_ends_the_daemon(daemon_factory):
    """Someone unmounts us (kubelet tearing down, an admin): the daemon must not linger with a
    pidfile that claims a live mount."""
    d = daemon_factory()
    p = subprocess.run(["umount", str(d.mountpoint)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    try:
        d.proc.wait(5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chaosfs still running 5 s after its mount went away:\n{d.log_text()}")
    assert not d.pidfile.exists()
    assert mount_type(str(d.mountpoint)) is None
    assert "Traceback" not in d.log_text()


def test_relative_paths(daemon_factory):
    d = daemon_factory(start=False)
    base = d.original.parent
    logf = open(d.log, "ab")
    d.proc = subprocess.Popen([CHAOSFS, f"-addr=127.0.0.1:{d.port}", "-pidfile=run/chaosfs.pid",
                               "-original=original", "-mountpoint=./mnt/"], cwd=base,
                              stdout=logf, stderr=logf)
    logf.close()
    deadline = time.monotonic() + 15
    while not (d.pidfile.exists() and mount_type(str(d.mountpoint)) == "fuse.chaosfs"):
        assert d.proc.poll() is None and time.monotonic() < deadline, d.log_text()
        time.sleep(0.02)
    works(d)
    assert d.stop() == 0
    assert not d.pidfile.exists() and mount_type(str(d.mountpoint)) is None


def test_fs_type_of_picks_the_deepest_topmost_mount(tmp_path: Path):
    # -passthrough sizes max_stack_depth from the file system holding -original.
    from chaosfs.mounts import fs_type_of
    info = tmp_path / "mountinfo"
    info.write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 0:5 / /var/lib/a\\040b rw - overlay overlay rw\n"
        "3 1 0:6 / /var/lib rw - tmpfs tmpfs rw\n"
        "4 3 0:7 / /var/lib rw - xfs /dev/sdb rw\n")
    assert fs_type_of("/var/lib/a b/data", str(info)) == "overlay"
    assert fs_type_of("/var/lib/ab", str(info)) == "xfs"  # mounted over the tmpfs
    assert fs_type_of("/var/lib", str(info)) == "xfs"
    assert fs_type_of("/etc", str(info)) == "ext4"
    assert fs_type_of("/etc", str(tmp_path / "missing")) is None
