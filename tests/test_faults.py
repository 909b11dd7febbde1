"""Fault engine + gRPC control plane against a real daemon, real mount, real gRPC."""
from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from chaosfs.proto import faults_pb2 as fpb, faults_pb2_grpc
from tests.conftest import CHAOSFS_CTL, errno_of

COMPAT_31 = ("open read write mkdir rmdir opendir fsync flush release truncate getattr chown "
             "chmod utimens allocate getlk setlk setlkw statfs readlink symlink create access "
             "link mknod rename unlink getxattr listxattr removexattr setxattr").split()


@pytest.fixture
def fs(fault_daemon):
    return fault_daemon({"db/000012.sst": b"sst-data" * 512, "other.txt": b"other-data" * 400})


def rules_of(d) -> list:
    return list(d.faults.ListRules(fpb.ListRulesRequest()).rules)


def read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ---- injure.Injure (0.9) ------------------------------------------------------------------

def test_set_fault_errno_on_path_then_recover_all(fs):
    m = fs.mountpoint
    assert read_file(m / "db" / "000012.sst")  # now in the page cache
    assert not fs.injure.Injected(fs.injure.empty()).injected
    fs.injure.SetFault(fs.injure.request(methods=["read"], errno=5, pct=100, path="db/.*"))
    assert fs.injure.Injected(fs.injure.empty()).injected
    assert errno_of(read_file, m / "db" / "000012.sst") == errno.EIO
    assert read_file(m / "other.txt") == b"other-data" * 400  # other paths untouched
    fs.injure.RecoverAll(fs.injure.empty())
    assert not fs.injure.Injected(fs.injure.empty()).injected
    assert read_file(m / "db" / "000012.sst") == b"sst-data" * 512


def test_set_fault_replaces_per_method_and_recover_method(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFault(inj.request(methods=["open"], errno=13, pct=100, path="other"))
    assert errno_of(os.open, m / "other.txt", os.O_RDONLY) == errno.EACCES
    inj.SetFault(inj.request(methods=["open"], errno=2, pct=100, path="other"))  # replaces
    assert errno_of(os.open, m / "other.txt", os.O_RDONLY) == errno.ENOENT
    assert [r.id for r in rules_of(fs)] == ["injure:open"]
    inj.SetFault(inj.request(methods=["mkdir"], errno=28, pct=100))
    assert errno_of(os.mkdir, m / "newdir") == errno.ENOSPC
    inj.RecoverMethod(inj.request(methods=["open"]))
    os.close(os.open(m / "other.txt", os.O_RDONLY))
    assert errno_of(os.mkdir, m / "newdir") == errno.ENOSPC
    inj.RecoverMethod(inj.request(methods=["mkdir"]))
    os.mkdir(m / "newdir")
    assert (fs.original / "newdir").is_dir()


def test_set_fault_all_and_random_errno_range(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFaultAll(inj.request(random=True, pct=100, path="^db/"))
    seen = set()
    for _ in range(60):
        e = errno_of(os.stat, m / "db" / "000012.sst")
        assert 7 <= e <= 53, e
        seen.add(e)
    assert len(seen) > 5  # really random
    assert read_file(m / "other.txt")  # regex anchored at db/: other.txt unaffected
    assert len(rules_of(fs)) == 31


def test_delay_only_fault_is_microseconds(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFault(inj.request(methods=["getattr"], delay=200_000, pct=100, path="other"))
    t0 = time.monotonic()
    os.stat(m / "other.txt")
    took = time.monotonic() - t0
    assert 0.19 <= took < 2.0, took
    t0 = time.monotonic()
    os.stat(m / "db")
    assert time.monotonic() - t0 < 0.15


def test_pct_zero_never_fires(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFault(inj.request(methods=["read"], errno=5, pct=0, path="other"))
    for _ in range(50):
        assert read_file(m / "other.txt")


@pytest.mark.parametrize("request_kw, field", [
    (dict(methods=["read"], errno=5, path="("), "path"),
    (dict(methods=["read"], errno=70000), "errno"),
    (dict(methods=["read"], errno=512), "errno"),
    (dict(methods=[], errno=5, path="("), "path"),  # checked even with nothing to set
])
def test_bad_compat_requests_are_invalid_argument_and_change_nothing(fs, request_kw, field):
    inj = fs.injure
    inj.SetFault(inj.request(methods=["write"], errno=28, pct=100))
    before = [(r.id, r.path) for r in rules_of(fs)]
    with pytest.raises(grpc.RpcError) as ei:
        inj.SetFault(inj.request(**request_kw))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in ei.value.details()
    assert [(r.id, r.path) for r in rules_of(fs)] == before


def test_release_gets_delay_only(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFault(inj.request(methods=["release"], errno=5, delay=100_000, pct=100, path="other"))
    fd = os.open(m / "other.txt", os.O_RDONLY)
    t0 = time.monotonic()
    os.close(fd)  # close never fails; release is async in the kernel, so wait for it to land
    assert time.monotonic() - t0 < 1.0
    st = fs.faults.Stats(fpb.StatsRequest())
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and "release" not in {x.method for x in st.methods}:
        time.sleep(0.05)
        st = fs.faults.Stats(fpb.StatsRequest())
    assert {r.id: r.hits for r in st.rules}["injure:release"] >= 1
    rel = {x.method: x for x in st.methods}["release"]
    assert rel.errors == 0


def test_rename_matches_either_path(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFault(inj.request(methods=["rename"], errno=18, pct=100, path="^db/"))
    assert errno_of(os.rename, m / "other.txt", m / "db" / "moved") == errno.EXDEV
    assert errno_of(os.rename, m / "db" / "000012.sst", m / "x.sst") == errno.EXDEV
    (m / "a").write_bytes(b"1")
    os.rename(m / "a", m / "b")
    assert (fs.original / "b").exists()


# ---- chaosfs.v1.Faults ---------------------------------------------------------------------

def add(d, **kw) -> str:
    return d.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(**kw))).id


def test_rules_coexist_and_remove_by_id(fs):
    m = fs.mountpoint
    a = add(fs, methods=["read"], path="other", errno=fpb.ErrnoAction(code=5))
    b = add(fs, methods=["open"], path="sst$", errno=fpb.ErrnoAction(code=13))
    assert a != b and {r.id for r in rules_of(fs)} == {a, b}
    assert errno_of(read_file, m / "other.txt") == errno.EIO
    assert errno_of(read_file, m / "db" / "000012.sst") == errno.EACCES
    fs.faults.RemoveRule(fpb.RemoveRuleRequest(ids=[a]))
    assert read_file(m / "other.txt")
    with pytest.raises(grpc.RpcError) as ei:
        fs.faults.RemoveRule(fpb.RemoveRuleRequest(ids=[b, "nope"]))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert {r.id for r in rules_of(fs)} == {b}  # all or nothing


def test_recover_all_clears_v1_rules_too(fs):
    add(fs, methods=["read"], errno=fpb.ErrnoAction(code=5))
    fs.injure.RecoverAll(fs.injure.empty())
    assert rules_of(fs) == []


def test_glob_paths(fs):
    m = fs.mountpoint
    add(fs, methods=["open"], path="db/*.sst", path_kind=fpb.GLOB, errno=fpb.ErrnoAction(code=5))
    assert errno_of(read_file, m / "db" / "000012.sst") == errno.EIO
    (fs.original / "db" / "sub").mkdir()
    (fs.original / "db" / "sub" / "1.sst").write_bytes(b"x")
    assert read_file(m / "db" / "sub" / "1.sst") == b"x"  # * stays inside one segment


def test_realistic_random_errno_per_method(fs):
    m = fs.mountpoint
    add(fs, methods=["write"], path="other", errno=fpb.ErrnoAction(random=True))
    seen = set()
    with open(m / "other.txt", "r+b", buffering=0) as f:
        for _ in range(80):
            seen.add(errno_of(f.write, b"x"))
    assert seen <= {errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EINTR}
    assert len(seen) >= 3


def test_corrupt_read_bytes_differ_from_backing(fs):
    m = fs.mountpoint
    add(fs, methods=["read"], path="other", corrupt=fpb.CorruptAction(mode=fpb.ZERO, length=4, occurrences=2))
    data = read_file(m / "other.txt")
    orig = (fs.original / "other.txt").read_bytes()
    assert len(data) == len(orig)
    diff = [i for i in range(len(orig)) if data[i] != orig[i]]
    assert 1 <= len(diff) <= 8 and all(data[i] == 0 for i in diff)


def test_corrupt_write_lands_corrupted_in_backing(fs):
    m = fs.mountpoint
    add(fs, methods=["write"], path="new.bin", corrupt=fpb.CorruptAction(mode=fpb.BITFLIP, length=16))
    payload = bytes(range(256)) * 16
    with open(m / "new.bin", "wb") as f:
        assert f.write(payload) == len(payload)
    stored = (fs.original / "new.bin").read_bytes()
    diff = [i for i in range(len(payload)) if stored[i] != payload[i]]
    assert 1 <= len(diff) <= 16
    assert all(bin(stored[i] ^ payload[i]).count("1") == 1 for i in diff)


def test_short_read_and_short_write(fs):
    m = fs.mountpoint
    add(fs, methods=["read", "write"], path="other", short=fpb.ShortAction(fraction=0.25))
    fd = os.open(m / "other.txt", os.O_RDWR)
    try:
        assert len(os.pread(fd, 4000, 0)) == 1000
        assert os.pwrite(fd, b"z" * 400, 0) == 100
    finally:
        os.close(fd)
    assert (fs.original / "other.txt").read_bytes()[:101] == b"z" * 100 + b"o"


def test_probability_within_binomial_bounds(fs):
    m = fs.mountpoint
    add(fs, methods=["read"], path="other", probability=30.0, errno=fpb.ErrnoAction(code=5))
    fd = os.open(m / "other.txt", os.O_RDONLY)
    n, fails = 2000, 0
    try:
        for i in range(n):
            try:
                os.pread(fd, 64, (i * 64) % 4000)
            except OSError as e:
                assert e.errno == errno.EIO
                fails += 1
    finally:
        os.close(fd)
    sd = math.sqrt(n * 0.3 * 0.7)
    assert abs(fails - 0.3 * n) < 5 * sd, fails
    hits = {r.id: r.hits for r in fs.faults.Stats(fpb.StatsRequest()).rules}
    assert list(hits.values()) == [fails]


def test_already_open_handle_and_page_cache_do_not_hide_a_read_fault(fs):
    m = fs.mountpoint
    fd = os.open(m / "other.txt", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == (b"other-data" * 10)  # cached now
        assert read_file(m / "other.txt")
        add(fs, methods=["read"], path="other", errno=fpb.ErrnoAction(code=5))
        assert errno_of(os.pread, fd, 100, 0) == errno.EIO      # the open handle
        assert errno_of(read_file, m / "other.txt") == errno.EIO  # a new handle
    finally:
        os.close(fd)


def test_attr_and_entry_caches_do_not_hide_getattr_or_lookup_faults(fs):
    m = fs.mountpoint
    os.stat(m / "other.txt")  # attr + entry cached (1 s by default)
    add(fs, methods=["getattr"], path="other", errno=fpb.ErrnoAction(code=5))
    assert errno_of(os.stat, m / "other.txt") == errno.EIO
    fs.faults.Clear(fpb.ClearRequest())
    os.stat(m / "db" / "000012.sst")
    add(fs, methods=["lookup"], path="sst$", errno=fpb.ErrnoAction(code=2))
    assert errno_of(os.stat, m / "db" / "000012.sst") == errno.ENOENT


def test_getattr_rule_reaches_an_open_file_whose_attributes_were_served(fs):
    """-transport=cython answers GETATTR in its workers once an inode is known and no rule
    touches it; a rule added later, or a rename onto a matched path, must still fire on
    the next fstat (a write drops the kernel's cached attributes, so fstat asks)."""
    m = fs.mountpoint
    fd = os.open(m / "other.txt", os.O_RDWR)
    fd2 = os.open(m / "db" / "000012.sst", os.O_RDWR)
    try:
        for i in range(5):  # served (by the workers, on cython) with the right sizes
            os.pwrite(fd, b"z", 4000 + i)
            assert os.fstat(fd).st_size == 4001 + i
        rid = add(fs, methods=["getattr"], path="^other", errno=fpb.ErrnoAction(code=5))
        os.pwrite(fd, b"z", 0)
        os.pwrite(fd2, b"z", 0)
        assert errno_of(os.fstat, fd) == errno.EIO
        assert os.fstat(fd2).st_size == len(b"sst-data" * 512)  # another file: untouched
        fs.faults.RemoveRule(fpb.RemoveRuleRequest(ids=[rid]))
        os.pwrite(fd, b"z", 0)
        assert os.fstat(fd).st_size == 4005
        # the rule's path is the file's after a rename, not the one it was served under
        add(fs, methods=["getattr"], path="moved$", errno=fpb.ErrnoAction(code=13))
        os.pwrite(fd2, b"z", 0)
        assert os.fstat(fd2).st_size == len(b"sst-data" * 512)
        os.rename(m / "db" / "000012.sst", m / "db" / "moved")
        os.pwrite(fd2, b"z", 0)
        assert errno_of(os.fstat, fd2) == errno.EACCES
        assert os.fstat(fd).st_size == 4005
    finally:
        os.close(fd)
        os.close(fd2)


def test_getattr_rule_on_a_hard_link_reaches_the_inode_served_under_its_other_name(fs):
    """A rule matches the path an inode was last looked up by: once it is reached through
    a hard link the rule matches, its attributes must no longer be answered as they were
    under the name the rule does not match."""
    m = fs.mountpoint
    os.link(fs.original / "other.txt", fs.original / "hardlink")
    add(fs, methods=["getattr"], path="^hardlink$", errno=fpb.ErrnoAction(code=5))
    fd = os.open(m / "other.txt", os.O_RDWR)
    try:
        for _ in range(3):  # answered (and on cython offered to the workers) as other.txt
            os.pwrite(fd, b"z", 0)
            assert os.fstat(fd).st_size == len(b"other-data" * 400)
        try:  # the inode is now known by this name (the lookup's attributes may do for stat)
            os.stat(m / "hardlink")
        except OSError as e:
            assert e.errno == errno.EIO
        os.pwrite(fd, b"z", 0)
        assert errno_of(os.fstat, fd) == errno.EIO
    finally:
        os.close(fd)


def test_attributes_never_come_from_another_inode_across_forgets(fs):
    """Inodes come and go (unlink, the kernel forgetting them) while their attributes are
    answered from fds the inode table closes and the kernel hands out again: every fstat
    must show its own file's size and number, never another's."""
    m = fs.mountpoint
    stop = threading.Event()
    bad: list = []

    def churn(k: int) -> None:
        i = 0
        while not stop.is_set():
            p = m / f"churn{k}-{i % 7}"
            size = 1 + (k * 1000 + i) % 5000
            fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
            try:
                os.pwrite(fd, b"c" * size, 0)
                st = os.fstat(fd)
                if st.st_size != size or os.stat(p).st_ino != st.st_ino:
                    bad.append((p.name, size, st.st_size))
            finally:
                os.close(fd)
            os.unlink(p)
            i += 1

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2")  # dentries and inodes: the kernel sends FORGETs
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad, bad[:5]


def test_delay_rules_come_and_go_under_a_metadata_storm(fs):
    """Metadata requests no rule can delay are served by the worker that read them
    (-transport=cython); a delay rule published meanwhile must neither fail one of them
    nor leave one stalled: each request sees the table before or after the change, whole."""
    m = fs.mountpoint
    for i in range(20):
        (fs.original / f"storm{i}").write_bytes(b"s" * i)
    stop = threading.Event()
    errors: list = []
    counts = [0, 0, 0]

    def storm(k: int) -> None:
        while not stop.is_set():
            for i in range(20):
                p = m / f"storm{i}"
                try:
                    if os.stat(p).st_size != i:
                        errors.append(("size", p.name))
                    os.close(os.open(p, os.O_RDONLY))
                    os.listdir(m)
                except OSError as e:
                    errors.append((p.name, e.errno))
                counts[k] += 1

    threads = [threading.Thread(target=storm, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(15):
            rid = add(fs, methods=["lookup", "open"], path="^delayed$", delay=fpb.DelayAction(fixed_us=20_000))
            time.sleep(0.02)
            fs.faults.RemoveRule(fpb.RemoveRuleRequest(ids=[rid]))
            time.sleep(0.02)
        (fs.original / "delayed").write_bytes(b"d")
        rid = add(fs, methods=["lookup"], path="^delayed$", delay=fpb.DelayAction(fixed_us=300_000))
        t0 = time.monotonic()
        os.stat(m / "delayed")
        assert time.monotonic() - t0 >= 0.29  # the rule is in force while the storm goes on
        fs.faults.RemoveRule(fpb.RemoveRuleRequest(ids=[rid]))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a storm thread is stuck"
    assert not errors, errors[:5]
    assert min(counts) > 0, counts


def test_delay_does_not_stall_other_files_or_same_file_reads(fs):
    m = fs.mountpoint
    add(fs, methods=["read"], path="^db/", delay=fpb.DelayAction(fixed_us=500_000))
    results = {}

    def slow(i):
        t0 = time.monotonic()
        fd = os.open(m / "db" / "000012.sst", os.O_RDONLY)
        os.pread(fd, 100, 0)
        os.close(fd)
        results[i] = time.monotonic() - t0

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    fd = os.open(m / "other.txt", os.O_RDONLY)
    for i in range(20):
        os.pread(fd, 100, i * 100)
    os.close(fd)
    fast = time.monotonic() - t0
    for t in threads:
        t.join()
    assert fast < 0.25, fast
    assert all(0.45 <= v < 0.95 for v in results.values()), results  # concurrent, not serial


def test_delayed_requests_beyond_workers_stall_no_other_file(daemon_factory):
    """-transport=cython: a request sleeping in a fault delay gives its -workers place up, so
    more delayed reads than -workers leave another file's open/stat/read unaffected: all of
    them are done while every delayed read is still waiting."""
    import grpc
    from chaosfs.proto import faults_pb2_grpc
    d = daemon_factory("-transport=cython", "-workers=4")
    (d.original / "slow").write_bytes(b"s" * 4096)
    (d.original / "fast").write_bytes(b"f" * 4096)
    with grpc.insecure_channel(d.addr) as ch:
        faults_pb2_grpc.FaultsStub(ch).AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
            methods=["read"], path="^slow$", delay=fpb.DelayAction(fixed_us=3_000_000))))
    done = []
    fds = [os.open(d.mountpoint / "slow", os.O_RDONLY) for _ in range(16)]
    threads = [threading.Thread(target=lambda fd=fd: done.append(os.pread(fd, 10, 0))) for fd in fds]
    for t in threads:
        t.start()
    time.sleep(0.3)  # all 16 reads are in the daemon, sleeping
    for i in range(5):
        os.stat(d.mountpoint / "fast")
        with open(d.mountpoint / "fast", "rb") as f:
            assert f.read() == b"f" * 4096
        (d.mountpoint / f"new{i}").write_bytes(b"x")
    assert done == [], "the other file's operations waited for the delayed reads"
    for t in threads:
        t.join()
    assert done == [b"s" * 10] * 16
    for fd in fds:
        os.close(fd)


def test_delayed_lookups_stall_no_other_name_and_the_fast_path_comes_back(daemon_factory):
    """-transport=cython answers metadata on its reading task while no rule can make a
    request wait; a delay rule must switch that off at once (delayed lookups of one name
    sleep on their own, every other name's create/stat/unlink goes on) and removing the
    rule brings it back without losing a request."""
    import grpc
    from chaosfs.proto import faults_pb2_grpc
    d = daemon_factory("-transport=cython", "-entry-timeout=0", "-attr-timeout=0")
    # in a directory of their own: a create takes its directory's lock, which the kernel
    # holds shared for every lookup in it, delayed or not
    (d.original / "slow").mkdir()
    for i in range(6):
        (d.original / "slow" / f"s{i}").write_bytes(b"s")
    with grpc.insecure_channel(d.addr) as ch:
        stub = faults_pb2_grpc.FaultsStub(ch)
        stub.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
            id="slow", methods=["lookup"], path="^slow/", delay=fpb.DelayAction(fixed_us=2_000_000))))
        done = []
        threads = [threading.Thread(target=lambda i=i: done.append(os.stat(d.mountpoint / "slow" / f"s{i}").st_size))
                   for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # all six lookups are sleeping in the daemon
        t0 = time.monotonic()
        for i in range(50):
            p = d.mountpoint / f"fast{i}"
            p.write_bytes(b"f" * i)
            assert os.stat(p).st_size == i
            p.unlink()
        fast = time.monotonic() - t0
        assert done == [], f"other names' metadata waited for the delayed lookups ({fast:.2f} s)"
        assert fast < 1.5, fast
        for t in threads:
            t.join()
        assert done == [1] * 6
        stub.RemoveRule(fpb.RemoveRuleRequest(ids=["slow"]))
    t0 = time.monotonic()
    for i in range(6):
        assert os.stat(d.mountpoint / "slow" / f"s{i}").st_size == 1
    assert time.monotonic() - t0 < 1.0
    assert sorted(os.listdir(d.mountpoint / "slow")) == [f"s{i}" for i in range(6)]
    assert os.listdir(d.mountpoint) == ["slow"]


def test_worker_served_requests_under_a_delay_rule_wait_once_and_happen_once(fs):
    """While a delay rule exists, the cython transport's workers still serve requests the
    rule does not match; one it matches goes on to the trio thread before anything is done
    (engine.MustWait), so the delay applies, the operation happens exactly once (an
    O_EXCL create run twice would fail EEXIST) and the rule counts one hit per request."""
    (fs.original / "slow").mkdir()
    (fs.original / "slow" / "gone").write_bytes(b"x")
    add(fs, id="slowmeta", methods=["create", "unlink", "mkdir", "lookup"], path="^slow/",
        delay=fpb.DelayAction(fixed_us=300_000))
    add(fs, id="slowfail", methods=["rmdir"], path="^slow/", errno=fpb.ErrnoAction(code=errno.EROFS),
        delay=fpb.DelayAction(fixed_us=300_000))
    t0 = time.monotonic()
    os.close(os.open(fs.mountpoint / "slow" / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    t_create = time.monotonic() - t0
    t0 = time.monotonic()
    os.unlink(fs.mountpoint / "slow" / "gone")
    t_unlink = time.monotonic() - t0
    os.mkdir(fs.mountpoint / "slow" / "sub")
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        os.rmdir(fs.mountpoint / "slow" / "sub")
    t_rmdir = time.monotonic() - t0
    assert e.value.errno == errno.EROFS
    # each waited (a lookup of the name comes first and is delayed too: >= one delay)
    assert min(t_create, t_unlink, t_rmdir) >= 0.29, (t_create, t_unlink, t_rmdir)
    assert sorted(os.listdir(fs.original / "slow")) == ["new", "sub"]
    assert (fs.original / "slow" / "sub").is_dir()
    hits = {r.id: r.hits for r in fs.faults.Stats(fpb.StatsRequest()).rules}
    assert hits["slowfail"] == 1, hits
    # untouched paths are not delayed while the rule exists
    t0 = time.monotonic()
    for i in range(20):
        p = fs.mountpoint / f"quick{i}"
        p.write_bytes(b"q")
        assert os.stat(p).st_size == 1
        p.unlink()
    assert time.monotonic() - t0 < 1.0


def test_open_setattr_release_under_a_delay_rule_wait_once_and_clear_setid_once(fs):
    """OPEN, SETATTR and RELEASE are served on the workers while a delay rule exists too;
    one a rule matches goes on to the trio thread before anything is done. An O_TRUNC open
    and a truncate by a user, and a chmod by root, of set-id files then wait once, count one
    hit each, and leave the mode bits as they are natively (the kernel's kill-priv note is
    taken once); a delayed release counts once."""
    slow, native = fs.original / "slow", fs.original.parent / "native-setid"
    for d in (slow, native):
        d.mkdir()
        os.chmod(d, 0o777)
    os.chmod(fs.original, 0o777)
    delay = fpb.DelayAction(fixed_us=300_000)
    add(fs, id="slowopen", methods=["open"], path="^slow/o$", delay=delay)
    add(fs, id="slowtrunc", methods=["truncate"], path="^slow/t$", delay=delay)
    add(fs, id="slowchmod", methods=["chmod"], path="^slow/c$", delay=delay)
    add(fs, id="slowrelease", methods=["release"], path="^slow/r$", delay=delay)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    steps = {"o": (nobody, ': > "$f"'), "t": (nobody, 'truncate -s 3 "$f"'),
             "c": ([], 'chmod 2755 "$f"')}
    for name, (prefix, cmd) in steps.items():
        modes, took = [], []
        for f in (fs.mountpoint / "slow" / name, native / name):
            f.write_bytes(b"data" * 1024)
            os.chown(f, 65534, 65534)
            os.chmod(f, 0o6775)
            t0 = time.monotonic()
            subprocess.run([*prefix, "sh", "-c", cmd], check=True, env={**os.environ, "f": str(f)},
                           stdin=subprocess.DEVNULL)
            took.append(time.monotonic() - t0)
            modes.append(os.stat(f).st_mode & 0o7777)
        assert took[0] >= 0.29, (name, took)
        assert oct(modes[0]) == oct(modes[1]), (name, oct(modes[0]), oct(modes[1]))
        assert (slow / name).stat().st_mode & 0o7777 == modes[1]
    assert (slow / "t").stat().st_size == 3
    (slow / "r").write_bytes(b"r")
    (fs.mountpoint / "slow" / "r").read_bytes()
    t0 = time.monotonic()
    for _ in range(3):
        os.close(os.open(fs.mountpoint / "slow" / "o", os.O_RDONLY))
    assert time.monotonic() - t0 >= 0.85
    want = {"slowopen": 4, "slowtrunc": 1, "slowchmod": 2, "slowrelease": 1}  # (+ the setup chmod)
    deadline = time.monotonic() + 5
    while True:  # (a release is answered after close(2) returns)
        hits = {r.id: r.hits for r in fs.faults.Stats(fpb.StatsRequest()).rules}
        if hits == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert hits == want


def test_ttl_and_max_hits_expire(fs):
    m = fs.mountpoint
    add(fs, id="ttl", methods=["getattr"], path="other", errno=fpb.ErrnoAction(code=5), ttl_seconds=0.5)
    assert errno_of(os.stat, m / "other.txt") == errno.EIO
    deadline = time.monotonic() + 5
    while rules_of(fs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rules_of(fs) == []
    os.stat(m / "other.txt")
    add(fs, id="twice", methods=["getattr"], path="other", errno=fpb.ErrnoAction(code=5), max_hits=2)
    assert [errno_of(os.stat, m / "other.txt") for _ in range(4)] == [errno.EIO, errno.EIO, 0, 0]


@pytest.mark.parametrize("rule, field", [
    (dict(methods=["nope"], errno=fpb.ErrnoAction(code=5)), "methods"),
    (dict(path="a(", errno=fpb.ErrnoAction(code=5)), "path"),
    (dict(path="[ab", path_kind=fpb.GLOB, errno=fpb.ErrnoAction(code=5)), "path"),
    (dict(errno=fpb.ErrnoAction(code=5000)), "errno"),
    (dict(methods=["read"]), "action"),
    (dict(probability=100.5, errno=fpb.ErrnoAction(code=5)), "probability"),
    (dict(probability=-1, errno=fpb.ErrnoAction(code=5)), "probability"),
    (dict(delay=fpb.DelayAction(fixed_us=1 << 32)), "delay"),
    (dict(errno=fpb.ErrnoAction(code=512)), "errno"),
    (dict(errno=fpb.ErrnoAction(code=38)), "errno"),  # every method: open among them
    (dict(methods=["read", "fsync"], errno=fpb.ErrnoAction(code=38)), "errno"),
    (dict(methods=["read"], corrupt=fpb.CorruptAction(length=1 << 30)), "corrupt.length"),
    (dict(methods=["open"], corrupt=fpb.CorruptAction(length=1)), "methods"),
    (dict(short=fpb.ShortAction(fraction=1.5), methods=["read"]), "short"),
    (dict(ttl_seconds=-1, errno=fpb.ErrnoAction(code=5)), "ttl"),
    (dict(path="x" * 5000, errno=fpb.ErrnoAction(code=5)), "path"),
])
def test_invalid_rules_rejected_and_table_unchanged(fs, rule, field):
    keep = add(fs, id="keep", methods=["write"], errno=fpb.ErrnoAction(code=28))
    with pytest.raises(grpc.RpcError) as ei:
        add(fs, **rule)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details().startswith(field), ei.value.details()
    assert [r.id for r in rules_of(fs)] == [keep]


def test_duplicate_id_is_already_exists(fs):
    add(fs, id="x", errno=fpb.ErrnoAction(code=5), methods=["read"], path="nomatch")
    with pytest.raises(grpc.RpcError) as ei:
        add(fs, id="x", errno=fpb.ErrnoAction(code=6), methods=["read"])
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_many_nonmatching_rules_and_rename_invalidates_match_cache(fs):
    m = fs.mountpoint
    for i in range(1000):
        add(fs, methods=["read"], path=f"^nomatch{i}/", errno=fpb.ErrnoAction(code=5))
    assert read_file(m / "other.txt") == b"other-data" * 400
    add(fs, id="hot", methods=["read"], path="^db/moved", errno=fpb.ErrnoAction(code=5))
    fd = os.open(m / "other.txt", os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 0) == b"other-data"
        os.rename(m / "other.txt", m / "db" / "moved.txt")
        assert errno_of(os.pread, fd, 10, 0) == errno.EIO  # same handle, new path
    finally:
        os.close(fd)
    hits = {r.id: r.hits for r in fs.faults.Stats(fpb.StatsRequest()).rules}
    assert hits["hot"] >= 1 and sum(hits.values()) == hits["hot"]  # the 1,000 never fired


def test_stats_counts_and_histograms(fs):
    m = fs.mountpoint
    fs.faults.Stats(fpb.StatsRequest(reset=True))
    fd = os.open(m / "other.txt", os.O_RDONLY | os.O_DIRECT) if False else os.open(m / "other.txt", os.O_RDONLY)
    os.close(fd)
    add(fs, methods=["getattr"], path="other", errno=fpb.ErrnoAction(code=5))
    for _ in range(5):
        errno_of(os.stat, m / "other.txt")
    st = fs.faults.Stats(fpb.StatsRequest())
    by = {x.method: x for x in st.methods}
    assert by["getattr"].errors >= 5 and by["getattr"].count >= 5
    assert sum(by["getattr"].histogram) == by["getattr"].count
    assert by["getattr"].p50_us > 0


# ---- standard services, CLI, security ------------------------------------------------------

def test_health_serving_and_reflection_lists_services(fs):
    h = health_pb2_grpc.HealthStub(fs.channel)
    assert h.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    assert h.Check(health_pb2.HealthCheckRequest(service="injure.Injure")).status == health_pb2.HealthCheckResponse.SERVING
    r = reflection_pb2_grpc.ServerReflectionStub(fs.channel)
    resp = next(r.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in resp.list_services_response.service}
    assert {"injure.Injure", "chaosfs.v1.Faults", "grpc.health.v1.Health"} <= names


def ctl(d, *args, check=True):
    p = subprocess.run([CHAOSFS_CTL, "--addr", d.addr, *args], capture_output=True, text=True, timeout=30)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_chaosfs_ctl_end_to_end(fs):
    m = fs.mountpoint
    lines = ctl(fs, "methods").stdout.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == COMPAT_31
    assert {ln.split("\t")[0] for ln in lines if "never fires" in ln} == {"access"}
    assert {ln.split("\t")[0] for ln in lines if "cython only" in ln} == {
        "allocate", "getlk", "setlk", "setlkw"}
    ctl(fs, "set", "read", "--errno", "5", "--path", "other")
    assert errno_of(read_file, m / "other.txt") == errno.EIO
    assert json.loads(ctl(fs, "--json", "injected").stdout) == {"injected": True}
    ctl(fs, "recover", "read")
    assert read_file(m / "other.txt")
    rid = ctl(fs, "add", "-m", "getattr", "--path", "sst$", "--errno", "2", "--ttl", "60").stdout.strip()
    assert errno_of(os.stat, m / "db" / "000012.sst") == errno.ENOENT
    listing = ctl(fs, "rules").stdout
    assert rid in listing and "errno=2" in listing
    data = json.loads(ctl(fs, "--json", "rules").stdout)
    assert data[0]["id"] == rid and data[0]["methods"] == ["getattr"]
    assert "getattr" in ctl(fs, "stats").stdout
    ctl(fs, "rm", rid)
    os.stat(m / "db" / "000012.sst")
    bad = ctl(fs, "add", "--path", "(", "--errno", "5", check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "path" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_chaosfs_ctl_unreachable_is_one_line():
    p = subprocess.run([CHAOSFS_CTL, "--addr", "127.0.0.1:1", "rules"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert p.stderr.strip().startswith("chaosfs-ctl: cannot reach chaosfs at 127.0.0.1:1")
    assert p.stderr.count("\n") == 1


def test_token_auth(daemon_factory, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    d = daemon_factory(f"-token-file={tok}")
    ch = grpc.insecure_channel(d.addr)
    stub = faults_pb2_grpc.FaultsStub(ch)
    with pytest.raises(grpc.RpcError) as ei:
        stub.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(methods=["read"], errno=fpb.ErrnoAction(code=5))))
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as ei:
        stub.ListRules(fpb.ListRulesRequest(), metadata=[("authorization", "Bearer wrong")])
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    good = [("authorization", "Bearer s3cret")]
    assert list(stub.ListRules(fpb.ListRulesRequest(), metadata=good).rules) == []
    h = health_pb2_grpc.HealthStub(ch)
    assert h.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    ch.close()


def test_mtls(daemon_factory, tmp_path):
    import trustme
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@chaosfs")
    paths = {}
    for name, blob in {"ca": ca.cert_pem.bytes(), "cert": server.cert_chain_pems[0].bytes(),
                       "key": server.private_key_pem.bytes(), "ccert": client.cert_chain_pems[0].bytes(),
                       "ckey": client.private_key_pem.bytes()}.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(blob)
    d = daemon_factory(f"-tls-cert={paths['cert']}", f"-tls-key={paths['key']}", f"-tls-client-ca={paths['ca']}")
    good = grpc.ssl_channel_credentials(ca.cert_pem.bytes(), client.private_key_pem.bytes(),
                                        client.cert_chain_pems[0].bytes())
    ch = grpc.secure_channel(d.addr, good)
    assert list(faults_pb2_grpc.FaultsStub(ch).ListRules(fpb.ListRulesRequest(), timeout=10).rules) == []
    ch.close()
    anon = grpc.secure_channel(d.addr, grpc.ssl_channel_credentials(ca.cert_pem.bytes()))
    with pytest.raises(grpc.RpcError) as ei:
        faults_pb2_grpc.FaultsStub(anon).ListRules(fpb.ListRulesRequest(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    anon.close()


def test_rules_uncache_only_the_files_they_match(fs):
    """1,000 rules that match nothing leave other files' attribute cache alone; a getattr
    rule (even one that never fires) makes its own file ask the daemon every time."""
    m = fs.mountpoint
    for i in range(1000):
        add(fs, methods=["getattr"], path=f"^nomatch{i}/", errno=fpb.ErrnoAction(code=5))
    add(fs, id="watch", methods=["getattr"], path="sst$", probability=0.0, errno=fpb.ErrnoAction(code=5))
    os.stat(m / "other.txt")
    os.stat(m / "db" / "000012.sst")
    fs.faults.Stats(fpb.StatsRequest(reset=True))
    for _ in range(30):
        os.stat(m / "other.txt")
    n_other = {x.method: x.count for x in fs.faults.Stats(fpb.StatsRequest(reset=True)).methods}.get("getattr", 0)
    for _ in range(30):
        os.stat(m / "db" / "000012.sst")
    n_sst = {x.method: x.count for x in fs.faults.Stats(fpb.StatsRequest()).methods}.get("getattr", 0)
    assert n_other <= 3, n_other   # served from the kernel's cache
    assert n_sst >= 30, n_sst      # every stat reached the daemon


def test_every_operation_counted_under_its_own_name_injected_errors_included(fs):
    inj, m = fs.injure, fs.mountpoint
    inj.SetFault(inj.request(methods=["fsync", "flush"], errno=errno.EIO, pct=100, path="other"))
    fs.faults.Stats(fpb.StatsRequest(reset=True))
    fd = os.open(m / "other.txt", os.O_RDWR)
    assert errno_of(os.fsync, fd) == errno.EIO
    assert errno_of(os.close, fd) == errno.EIO  # flush's error; the fd is closed all the same
    os.truncate(m / "other.txt", 10)
    os.chmod(m / "other.txt", 0o600)
    os.utime(m / "other.txt", (1, 2))
    st = {x.method: x for x in fs.faults.Stats(fpb.StatsRequest()).methods}
    assert st["fsync"].count == 1 and st["fsync"].errors == 1
    assert st["flush"].count == 1 and st["flush"].errors == 1
    for name in ("fsync", "flush"):  # the rule's, not the backing file system's
        assert (st[name].injected_errors, st[name].backing_errors) == (1, 0), name
    for name in ("truncate", "chmod", "utimens"):
        assert st[name].count == 1 and st[name].errors == 0, name


def test_rule_change_reaches_fds_already_open_and_spares_others(fs):
    """On the /dev/fuse transport open files are served by C workers while no rule can touch
    them: a rule added, removed or renamed onto must change that on the very next request."""
    m = fs.mountpoint
    (m / "a.db").write_bytes(b"A" * 8192)
    (m / "b.db").write_bytes(b"B" * 8192)
    (m / "c.tmp").write_bytes(b"C" * 8192)
    fa = os.open(m / "a.db", os.O_RDWR | os.O_DIRECT)
    fb = os.open(m / "b.db", os.O_RDWR | os.O_DIRECT)
    fc = os.open(m / "c.tmp", os.O_RDWR | os.O_DIRECT)
    try:
        for fd in (fa, fb, fc):
            assert os.pread(fd, 4, 0)
        rid = add(fs, methods=["read", "write", "fsync"], path=r"^a\.db$", errno=fpb.ErrnoAction(code=5))
        assert errno_of(os.pread, fa, 4, 0) == errno.EIO
        assert errno_of(os.pwrite, fa, b"x", 0) == errno.EIO
        assert errno_of(os.fsync, fa) == errno.EIO
        assert os.pread(fb, 4, 0) == b"BBBB" and os.pwrite(fb, b"b", 0) == 1  # spared
        os.fsync(fb)
        os.rename(m / "c.tmp", m / "a.db")  # an open file renamed onto the rule's path
        assert errno_of(os.pread, fc, 4, 0) == errno.EIO
        fs.faults.RemoveRule(fpb.RemoveRuleRequest(ids=[rid]))
        assert os.pread(fc, 4, 0) == b"CCCC" and os.pwrite(fc, b"c", 0) == 1
        os.fsync(fc)
    finally:
        for fd in (fa, fb, fc):
            os.close(fd)
    assert (fs.original / "a.db").read_bytes()[:2] == b"cC"
    assert (fs.original / "b.db").read_bytes()[:2] == b"bB"
