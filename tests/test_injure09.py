"""injure.Injure behaves as Chaos Mesh 0.9.1 did (issue 12, section 2), asserted against the
0.9 behaviour the compat spec records, not against chaosfs's own proto or tables: a client
built from the 0.9 proto alone, a real daemon, a real mount.
"""
from __future__ import annotations

import errno
import math
import os
import time

import grpc
import pytest

from chaosfs.proto import faults_pb2 as fpb, faults_pb2_grpc
from tests.compat09 import Injure09
from tests.conftest import errno_of

METHODS_09 = set("open read write mkdir rmdir opendir fsync flush release truncate getattr "
                 "chown chmod utimens allocate getlk setlk setlkw statfs readlink symlink "
                 "create access link mknod rename unlink getxattr listxattr removexattr "
                 "setxattr".split())


@pytest.fixture
def fs(fault_daemon):
    return fault_daemon({"dir/file": b"file-bytes" * 100, "top": b"top" * 10})


def rules(d) -> dict:
    return {r.id: r for r in d.faults.ListRules(fpb.ListRulesRequest()).rules}


def counts(d) -> dict:
    """Requests per method since the last call (the Stats RPC, reset each time)."""
    st = d.faults.Stats(fpb.StatsRequest(reset=True))
    return {m.method: m.count for m in st.methods}


def test_methods_is_the_set_of_31_names(fs):
    names = list(fs.injure.Methods(fs.injure.empty()).methods)
    assert len(names) == 31 and set(names) == METHODS_09  # 0.9's order was random


@pytest.mark.parametrize("pct, n", [(1, 3000), (50, 2000), (98, 4000), (99, 2000), (150, 500)])
def test_pct_fires_as_rand_intn_99_lt_pct(fs, pct, n):
    """0.9: fires when rand.Intn(99) < pct, i.e. with probability min(pct, 99)/99."""
    inj, top = fs.injure, fs.mountpoint / "top"
    inj.SetFault(inj.request(methods=["getattr"], errno=errno.EIO, pct=pct, path="^top$"))
    failed = sum(errno_of(os.stat, top) == errno.EIO for _ in range(n))
    p = min(pct, 99) / 99
    if p == 1:
        assert failed == n
        return
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(failed - mean) <= 4.5 * sd, (failed, mean, sd)
    assert rules(fs)["injure:getattr"].hits == failed  # one GETATTR, one roll, per stat(2)


def test_delays_take_the_whole_uint32_microsecond_range(fs):
    inj = fs.injure
    inj.SetFault(inj.request(methods=["read"], delay=61 * 60 * 10**6, pct=100, path="^nothing$"))
    inj.SetFault(inj.request(methods=["write"], delay=(1 << 32) - 1, pct=100, path="^nothing$"))
    got = rules(fs)
    assert got["injure:read"].delay.fixed_us == 61 * 60 * 10**6
    assert got["injure:write"].delay.fixed_us == (1 << 32) - 1
    fs.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(id="v1", path="^nothing$",
                                                       delay=fpb.DelayAction(fixed_us=(1 << 32) - 1))))
    with pytest.raises(grpc.RpcError) as ei:
        fs.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(id="v2", delay=fpb.DelayAction(fixed_us=1 << 32))))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "delay" in ei.value.details()


def test_unknown_method_names_are_ignored_and_the_rest_applied(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFault(inj.request(methods=["read", "typo"], errno=errno.EIO, pct=100, path="^top$"))
    assert set(rules(fs)) == {"injure:read"}
    assert errno_of(lambda: open(m / "top", "rb", buffering=0).read()) == errno.EIO
    inj.SetFault(inj.request(methods=["typo", "write"], errno=errno.ENOSPC, pct=100, path="^top$"))
    assert set(rules(fs)) == {"injure:read", "injure:write"}
    log = fs.wait_log("'typo' ignored")
    assert log.count("'typo' ignored") == 1  # logged once, not per request
    inj.RecoverMethod(inj.request(methods=["read", "typo"]))
    assert set(rules(fs)) == {"injure:write"}


def test_empty_methods_list_is_ok_and_injects_nothing(fs):
    inj = fs.injure
    inj.SetFault(inj.request(methods=[], errno=errno.EIO, pct=100))
    assert rules(fs) == {} and not inj.Injected(inj.empty()).injected
    with pytest.raises(grpc.RpcError) as ei:  # what cannot mean anything is still refused
        inj.SetFault(inj.request(methods=["read"], errno=errno.EIO, pct=100, path="("))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and ei.value.details().startswith("path")


def test_access_is_accepted_but_logged_as_never_firing(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFault(inj.request(methods=["access"], errno=errno.EACCES, pct=100))
    assert os.access(m / "top", os.R_OK)  # the kernel checks access(2) itself
    assert "never sends access" in fs.wait_log("never sends access")
    if fs.transport == "pyfuse3":  # the kernel keeps locks local under libfuse 3.14
        fs.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(id="locks", methods=["getlk", "setlk"],
                                                           errno=fpb.ErrnoAction(code=5))))
        assert "never sends getlk, setlk" in fs.wait_log("never sends getlk, setlk")


# ---- a rule fires once per syscall, as the operation would on a disk ----------------------
# What native ext4 does per syscall, in the 0.9 method names (the app's view), and where a
# FUSE mount with default_permissions cannot help but differ (documented in README):
#   stat(file)            getattr 1
#   open(file)            open 1     (+ getattr 1: the kernel refreshes the file's attributes
#                                     for its permission check with the GETATTR stat sends)
#   close(fd)             flush 1, release 1
#   stat(dir/file)        getattr 1, on file; none on dir or on the mount root

def test_all_methods_rule_fires_once_per_syscall(fs):
    inj, m = fs.injure, fs.mountpoint
    f = m / "dir" / "file"
    inj.SetFaultAll(inj.request(delay=1, pct=100))  # a 1 µs delay on every method and path
    def warm() -> None:  # names and directories cached, as after any earlier access
        os.stat(f)
        counts(fs)

    for _ in range(3):
        warm()
        os.stat(f)
        assert counts(fs) == {"getattr": 1}
    for _ in range(3):
        warm()
        fd = os.open(f, os.O_RDONLY)
        c = counts(fs)
        assert c["open"] == 1 and c.get("getattr", 0) <= 1 and set(c) <= {"open", "getattr"}, c
        os.close(fd)
        deadline = time.monotonic() + 3
        c = counts(fs)
        while c.get("release", 0) == 0 and time.monotonic() < deadline:  # release is async
            time.sleep(0.02)
            c.update({k: c.get(k, 0) + v for k, v in counts(fs).items()})
        assert c == {"flush": 1, "release": 1}, c
    assert rules(fs)["injure:open"].hits == 3


def test_getattr_rule_on_a_directory_fails_stat_of_it_not_below_it(fs):
    inj, m = fs.injure, fs.mountpoint
    os.stat(m / "dir" / "file")
    inj.SetFault(inj.request(methods=["getattr"], errno=errno.EIO, pct=100, path="^dir$"))
    assert errno_of(os.stat, m / "dir") == errno.EIO
    for _ in range(3):
        assert errno_of(os.stat, m / "dir" / "file") == 0
        assert (m / "dir" / "file").read_bytes() == b"file-bytes" * 100
        assert errno_of(os.stat, m / "top") == 0
    inj.SetFault(inj.request(methods=["getattr"], errno=errno.EIO, pct=100, path="^dir/file$"))
    for _ in range(3):  # every stat of a matched file reaches the rule
        assert errno_of(os.stat, m / "dir" / "file") == errno.EIO


def test_allocate_lseek_copy_rules_fire_on_the_devfuse_transport(daemon_factory):
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    d = daemon_factory("-transport=cython")
    inj = Injure09(d.addr)
    faults = d.faults = faults_pb2_grpc.FaultsStub(grpc.insecure_channel(d.addr))
    m = d.mountpoint
    (m / "wal").write_bytes(b"")
    fd = os.open(m / "wal", os.O_RDWR)
    try:
        inj.SetFault(inj.request(methods=["allocate"], errno=errno.ENOSPC, pct=100, path="^wal$"))
        assert libc.fallocate(fd, 0, 0, 1 << 20) < 0 and ctypes.get_errno() == errno.ENOSPC
        assert os.fstat(fd).st_size == 0  # a faulted operation touches nothing
        inj.RecoverAll(inj.empty())
        assert libc.fallocate(fd, 0, 0, 1 << 20) == 0
        assert (d.original / "wal").stat().st_size == 1 << 20
        faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(methods=["lseek"], path="^wal$",
                                                        errno=fpb.ErrnoAction(code=errno.EIO))))
        assert errno_of(os.lseek, fd, 0, os.SEEK_DATA) == errno.EIO
        faults.Clear(fpb.ClearRequest())
        bfd = os.open(d.original / "wal", os.O_RDONLY)  # answered as the backing file does
        assert os.lseek(fd, 0, os.SEEK_HOLE) == os.lseek(bfd, 0, os.SEEK_HOLE)
        os.close(bfd)
    finally:
        os.close(fd)
    # copy_file_range: with a read rule on the source the kernel copies through READs,
    # so the rule sees every byte; without one the copy is served in one request
    data = os.urandom(200_000)
    (m / "src").write_bytes(data)
    rid = faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
        methods=["read"], path="^src$", delay=fpb.DelayAction(fixed_us=1)))).id
    counts(d)
    for name in ("dst1", "dst2"):
        s, t = os.open(m / "src", os.O_RDONLY), os.open(m / name, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            copied = 0
            while copied < len(data):
                n = os.copy_file_range(s, t, len(data) - copied, copied, copied)
                assert n > 0
                copied += n
        finally:
            os.close(s)
            os.close(t)
        assert (d.original / name).read_bytes() == data
        c = counts(d)
        if name == "dst1":
            assert c.get("read", 0) > 0 and rules(d)[rid].hits > 0, c
            faults.Clear(fpb.ClearRequest())
            counts(d)
        else:
            assert c.get("copy_file_range", 0) >= 1 and c.get("read", 0) == 0, c
    inj.close()
