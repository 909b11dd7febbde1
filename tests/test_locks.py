"""POSIX record locks and BSD flock() through the mount.

-transport=cython negotiates FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS and holds the locks on
the backing files (chaosfs/transport/devfuse_locks.h), so they hold across processes, against programs
using the backing directory directly, and lock rules fire. Under -transport=pyfuse3 the
kernel keeps them local: still real between processes using the mount.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
import sys
import time

import pytest

from chaosfs.proto import faults_pb2 as fpb
from tests.conftest import errno_of

FLOCK = struct.Struct("hhqqi4x")

TRY_LOCKF = """import fcntl, sys
f = open(sys.argv[1], 'r+')
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, int(sys.argv[2]), int(sys.argv[3]))
    print('GOT')
except OSError as e:
    print('BLOCKED', e.errno)
"""
TRY_FLOCK = """import fcntl, sys
f = open(sys.argv[1])
try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print('GOT')
except OSError as e:
    print('BLOCKED', e.errno)
"""


def other(code: str, *args) -> str:
    """Run `code` in another process (another lock owner) and return what it printed."""
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.fixture
def lk(fault_daemon):
    return fault_daemon({"f": b"0123456789" * 10})


def test_posix_locks_conflict_between_processes_and_go_with_close(lk):
    path = lk.mountpoint / "f"
    f = open(path, "r+")
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
    assert other(TRY_LOCKF, path, 10, 0) == f"BLOCKED {errno.EAGAIN}"
    assert other(TRY_LOCKF, path, 10, 20) == "GOT"  # another range is free
    if lk.transport == "cython":  # held on the backing file itself
        assert other(TRY_LOCKF, lk.original / "f", 10, 0) == f"BLOCKED {errno.EAGAIN}"
    # F_GETLK from another process names the lock and its holder
    probe = ("import fcntl, struct, sys; f = open(sys.argv[1], 'r+'); "
             "print(*struct.unpack('hhqqi4x', fcntl.fcntl(f, fcntl.F_GETLK, "
             "struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 5, 0))))")
    typ, _, start, length, pid = map(int, other(probe, path).split())
    assert (typ, start, length) == (fcntl.F_WRLCK, 0, 10)
    assert pid == os.getpid()
    # a waiter blocks until our lock goes; closing ANY fd of ours on the file drops it (POSIX)
    waiter = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, sys; f = open(sys.argv[1], 'r+'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX, 10, 0); print('GOT')", str(path)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert waiter.poll() is None, "the waiter got a lock we hold"
    open(path).close()
    assert waiter.communicate(timeout=20)[0].strip() == "GOT"
    f.close()
    assert other(TRY_LOCKF, path, 10, 0) == "GOT"


def test_flock_conflicts_and_goes_with_the_open(lk):
    path = lk.mountpoint / "f"
    g = open(path)
    fcntl.flock(g, fcntl.LOCK_EX)
    assert other(TRY_FLOCK, path) == f"BLOCKED {errno.EWOULDBLOCK}"
    if lk.transport == "cython":
        assert other(TRY_FLOCK, lk.original / "f") == f"BLOCKED {errno.EWOULDBLOCK}"
    dup = os.dup(g.fileno())  # the same open: still locked after one of its fds closes
    g.close()
    assert other(TRY_FLOCK, path) == f"BLOCKED {errno.EWOULDBLOCK}"
    os.close(dup)
    assert other(TRY_FLOCK, path) == "GOT"


def test_a_signal_interrupts_a_lock_wait(lk):
    path = lk.mountpoint / "f"
    f = open(path, "r+")
    fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)
    code = """import fcntl, signal, sys, time
class Alarm(Exception):
    pass
def ring(*a):
    raise Alarm()
signal.signal(signal.SIGALRM, ring)
f = open(sys.argv[1], 'r+')
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)
    print('GOT')
except Alarm:
    print('INTERRUPTED')
"""
    assert other(code, path) == "INTERRUPTED"
    f.close()
    assert other(TRY_LOCKF, path, 10, 0) == "GOT"  # the interrupted wait took nothing


def test_lock_rules_fire_on_the_cython_transport(lk):
    path = lk.mountpoint / "f"
    lk.injure.SetFault(lk.injure.request(methods=["setlk"], errno=errno.ENOLCK, pct=100, path="^f$"))
    f = open(path, "r+")
    if lk.transport == "pyfuse3":  # documented: the kernel keeps locks, the rule is idle
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
        assert "never sends setlk" in lk.wait_log("never sends setlk")
        f.close()
        return
    assert errno_of(fcntl.lockf, f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0) == errno.ENOLCK
    assert errno_of(fcntl.flock, f, fcntl.LOCK_EX | fcntl.LOCK_NB) == errno.ENOLCK
    lk.injure.RecoverAll(lk.injure.empty())
    lk.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
        methods=["getlk"], path="^f$", errno=fpb.ErrnoAction(code=errno.EIO))))
    arg = FLOCK.pack(fcntl.F_WRLCK, 0, 0, 5, 0)
    assert errno_of(fcntl.fcntl, f, fcntl.F_GETLK, arg) == errno.EIO
    lk.faults.Clear(fpb.ClearRequest())
    lk.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
        methods=["setlkw"], path="^f$", delay=fpb.DelayAction(fixed_us=300_000))))
    t0 = time.monotonic()
    fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)  # blocking: setlkw
    assert time.monotonic() - t0 >= 0.3
    f.close()
