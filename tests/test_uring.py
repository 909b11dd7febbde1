"""-fuse-uring: FUSE over io_uring in the cython transport (Linux >= 6.14, protocol 7.42).

The kernel offers FUSE_OVER_IO_URING only while the fuse module's `enable_uring` parameter is
on. These tests turn it on themselves (and off for the fallback cases), say so on stderr, and
put back whatever value they found. That io_uring really carries the requests is checked on
the daemon's own rings: /proc/PID/fdinfo of an io_uring fd shows its completion-queue head,
which moves once per request a ring entry delivered.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from chaosfs.proto import faults_pb2 as fpb
from chaosfs.proto import faults_pb2_grpc
from tests.conftest import CHAOSFS, errno_of, make_daemon, mount_type
from tests.reliability_util import drop_caches, fio, job_errors

# Missing on a kernel without CONFIG_FUSE_IO_URING: then these tests fail, they do not skip.
PARAM = Path("/sys/module/fuse/parameters/enable_uring")


def _set_param(value: str) -> None:
    print(f"test_uring: setting {PARAM} = {value}", file=sys.stderr)
    PARAM.write_text(value)


@pytest.fixture
def enable_uring(request):
    """set(value): enable_uring = value for this test; the original value comes back after."""
    before = PARAM.read_text().strip()

    def set_(value: str) -> None:
        _set_param(value)

    yield set_
    if PARAM.read_text().strip() != before:
        _set_param(before)


@pytest.fixture
def uring_daemon(daemon_factory, enable_uring):
    enable_uring("Y")

    def make(*args: str, **kw):
        return daemon_factory("-transport=cython", "-fuse-uring=on", *args, **kw)
    return make


def io_uring_fds(pid: int) -> list[str]:
    """The process's io_uring fds (one it closes meanwhile is skipped, not an error)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[io_uring]":
                found.append(fd)
        except OSError:
            pass
    return found


def ring_completions(pid: int) -> int:
    """Completions posted on the process's io_uring instances (the CQ heads, summed)."""
    total, rings = 0, 0
    for fd in io_uring_fds(pid):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        rings += 1
        for line in info.splitlines():
            if line.startswith("CqHead:"):
                total += int(line.split()[1])
    assert rings, "the daemon has no io_uring"
    return total


def stub(d):
    ch = grpc.insecure_channel(d.addr)
    return ch, faults_pb2_grpc.FaultsStub(ch)


def add_rule(d, **kw) -> str:
    ch, s = stub(d)
    with ch:
        return s.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(**kw)), timeout=10).id


def tree(root: Path) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            out[rel] = None if p.is_dir() else p.read_bytes()
    return out


# ---- it is used, and it serves the file system ----------------------------------------------

def test_ring_is_live_and_carries_the_requests(uring_daemon):
    d = uring_daemon()
    log = d.log_text()
    assert "FUSE over io_uring: " in log and "protocol 7.42" in log, log
    assert "FUSE over io_uring (" in log  # describe(): the mode that is live
    (d.original / "f").write_bytes(os.urandom(64 * 1024))
    before = ring_completions(d.proc.pid)
    fd = os.open(d.mountpoint / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        for i in range(200):
            os.preadv(fd, [bytearray(4096)], (i % 16) * 4096)
    finally:
        os.close(fd)
    # LOOKUP/OPEN/200 READs/FLUSH/RELEASE: each came in a ring entry
    assert ring_completions(d.proc.pid) - before >= 200


def test_file_system_through_the_ring_matches_the_backing_dir(uring_daemon):
    d = uring_daemon()
    m, o = d.mountpoint, d.original
    payload = os.urandom(3 * 1024 * 1024 + 123)  # several 1 MiB requests and a tail
    (m / "big").write_bytes(payload)
    with open(m / "big", "r+b") as f:
        f.seek(5000)
        f.write(b"patched")
        f.flush()
        os.fsync(f.fileno())
        os.fdatasync(f.fileno())
    expect = payload[:5000] + b"patched" + payload[5007:]
    assert (o / "big").read_bytes() == expect
    drop_caches()
    assert (m / "big").read_bytes() == expect
    (m / "dir" / "sub").mkdir(parents=True)
    for i in range(300):  # READDIR of more than one batch
        (m / "dir" / f"n{i:03d}").write_bytes(str(i).encode())
    os.rename(m / "dir" / "n000", m / "dir" / "sub" / "moved")
    os.symlink("n001", m / "dir" / "link")
    os.truncate(m / "dir" / "n002", 1)
    os.unlink(m / "dir" / "n003")
    assert sorted(os.listdir(m / "dir")) == sorted(os.listdir(o / "dir"))
    assert len(os.listdir(m / "dir")) == 300 - 2 + 2  # 2 gone, sub and link came
    assert tree(m) == tree(o)
    assert os.readlink(m / "dir" / "link") == "n001"
    st_m, st_o = os.stat(m / "dir" / "n004"), os.stat(o / "dir" / "n004")
    assert (st_m.st_size, st_m.st_mode, st_m.st_mtime_ns) == (st_o.st_size, st_o.st_mode, st_o.st_mtime_ns)
    assert errno_of(os.stat, m / "nope") == errno.ENOENT  # an errno reply through the ring
    os.setxattr(m / "big", "user.k", b"v")
    assert os.getxattr(o / "big", "user.k") == b"v"


def test_fio_verify_through_the_ring(uring_daemon):
    d = uring_daemon()
    job = ["--name=verify", f"--directory={d.mountpoint}", "--ioengine=psync", "--rw=randwrite",
           "--bsrange=512-256k", "--numjobs=2", "--size=8M", "--verify=crc32c", "--randrepeat=1",
           "--randseed=7", "--group_reporting=0"]
    assert job_errors(fio(*job, "--do_verify=0", "--end_fsync=1")) == [0, 0]
    drop_caches()
    assert job_errors(fio(*job, "--verify_only")) == [0, 0]
    backing = [a.replace(str(d.mountpoint), str(d.original)) for a in job]
    assert job_errors(fio(*backing, "--verify_only")) == [0, 0]


# ---- fault rules --------------------------------------------------------------------------

def test_errno_rules_fire_in_the_ring_and_python_paths(uring_daemon):
    d = uring_daemon()
    (d.original / "bad").write_bytes(b"b" * 8192)
    (d.original / "good").write_bytes(b"g" * 8192)
    add_rule(d, methods=["read"], path="^bad$", errno=fpb.ErrnoAction(code=errno.EIO))
    add_rule(d, methods=["write"], path="^bad$", errno=fpb.ErrnoAction(code=errno.ENOSPC))
    (d.original / "attr").write_bytes(b"a")
    add_rule(d, methods=["getattr"], path="^attr$", errno=fpb.ErrnoAction(code=errno.EACCES))
    with open(d.mountpoint / "bad", "r+b", buffering=0) as f:
        assert errno_of(os.pread, f.fileno(), 100, 0) == errno.EIO          # decided in C
        assert errno_of(os.pwrite, f.fileno(), b"x", 0) == errno.ENOSPC
    assert errno_of(os.stat, d.mountpoint / "attr") == errno.EACCES         # answered by Python
    assert (d.mountpoint / "good").read_bytes() == b"g" * 8192
    assert (d.original / "bad").read_bytes() == b"b" * 8192
    assert "FUSE over io_uring (" in d.log_text()


def test_delayed_reads_stall_no_other_file(uring_daemon):
    """40 reads sleeping in a 2 s delay hold 40 ring entries (more than a queue starts with):
    another file's stat/read/create all finish while every delayed read still waits."""
    d = uring_daemon()
    (d.original / "slow").write_bytes(b"s" * 4096)
    (d.original / "fast").write_bytes(b"f" * 4096)
    add_rule(d, methods=["read"], path="^slow$", delay=fpb.DelayAction(fixed_us=2_000_000))
    done = []
    fds = [os.open(d.mountpoint / "slow", os.O_RDONLY | os.O_DIRECT) for _ in range(40)]
    threads = [threading.Thread(target=lambda fd=fd: done.append(os.pread(fd, 4096, 0))) for fd in fds]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.3)
    for i in range(5):
        os.stat(d.mountpoint / "fast")
        with open(d.mountpoint / "fast", "rb") as f:
            assert f.read() == b"f" * 4096
        (d.mountpoint / f"new{i}").write_bytes(b"x")
    assert done == [], "the other file's operations waited for the delayed reads"
    assert time.monotonic() - t0 < 1.5
    for t in threads:
        t.join()
    assert done == [b"s" * 4096] * 40
    assert time.monotonic() - t0 < 4.0  # concurrent, not serial
    for fd in fds:
        os.close(fd)


# ---- lifecycle ----------------------------------------------------------------------------

def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_sigterm_with_requests_in_flight_leaves_nothing(uring_daemon):
    d = uring_daemon()
    (d.original / "slow").write_bytes(b"s" * 4096)
    add_rule(d, methods=["read"], path="^slow$", delay=fpb.DelayAction(fixed_us=10_000_000))
    errs = []

    def reader():
        try:
            with open(d.mountpoint / "slow", "rb", buffering=0) as f:
                f.read(10)
        except OSError as e:
            errs.append(e.errno)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=8) == 0
    assert time.monotonic() - t0 < 4.0
    t.join(5)
    assert not t.is_alive() and errs, "the in-flight read was neither answered nor failed"
    assert mount_type(str(d.mountpoint)) is None
    assert not d.pidfile.exists()
    assert "stopped in" in d.log_text()


def test_unmount_from_outside_ends_the_daemon(uring_daemon):
    d = uring_daemon()
    (d.mountpoint / "x").write_bytes(b"1")
    pid = d.proc.pid
    assert _threads(pid) >= 3  # trio + 2 queue threads at least
    subprocess.run(["fusermount3", "-u", str(d.mountpoint)], check=True)
    assert d.proc.wait(8) == 0  # every thread joined: the process could exit
    assert "the kernel ended the FUSE session" in d.log_text()


# ---- unavailable: -fuse-uring=on fails, auto falls back --------------------------------------

def test_on_without_kernel_support_is_a_one_line_error(daemon_factory, enable_uring):
    enable_uring("N")
    d = daemon_factory("-transport=cython", "-fuse-uring=on", start=False)
    p = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("chaosfs: ")]
    assert len(err) == 1 and "-fuse-uring=on" in err[0] and "enable_uring" in err[0], p.stderr
    assert mount_type(str(d.mountpoint)) is None
    assert not d.pidfile.exists()


def test_auto_without_kernel_support_falls_back_to_dev_fuse(daemon_factory, enable_uring):
    enable_uring("N")
    d = daemon_factory("-transport=cython", "-fuse-uring=auto")
    log = d.wait_log("FUSE connection")  # logged a moment after "ready"
    assert "FUSE over io_uring not used (-fuse-uring=auto)" in log
    assert "2 /dev/fuse worker thread(s) (io_uring not used" in log
    (d.mountpoint / "f").write_bytes(b"abc")
    assert (d.original / "f").read_bytes() == b"abc"
    assert io_uring_fds(d.proc.pid) == []


def test_auto_with_kernel_support_uses_it(daemon_factory, enable_uring):
    enable_uring("Y")
    d = daemon_factory("-transport=cython", "-fuse-uring=auto")
    assert "FUSE over io_uring (" in d.wait_log("FUSE over io_uring (")


def test_off_never_asks_for_it(daemon_factory, enable_uring):
    enable_uring("Y")
    d = daemon_factory("-transport=cython")
    log = d.wait_log("FUSE connection")  # logged a moment after "ready"
    assert "protocol 7.40" in log and "2 /dev/fuse worker thread(s)" in log and "io_uring" not in log


@pytest.mark.parametrize("args,text", [
    (["-fuse-uring=maybe"], "expected auto, on or off"),
    (["-fuse-uring=on", "-transport=pyfuse3"], "-fuse-uring=on needs -transport=cython"),
])
def test_bad_values_are_one_line_usage_errors(tmp_path, args, text):
    base = make_daemon(tmp_path / "d")
    p = subprocess.run([CHAOSFS, f"-pidfile={base.pidfile}", f"-original={base.original}",
                        f"-mountpoint={base.mountpoint}", *args], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], p.stderr
