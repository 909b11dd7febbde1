"""-passthrough=unmatched: files no read/write rule matches are read and written by the kernel
from the backing file (FUSE passthrough, Linux >= 6.9), and what that means for faults.

The whole passthrough test module also runs against a daemon in this mode
(tests/test_passthrough.py, config "passthrough"); these tests pin down what is specific:
that the I/O really bypasses chaosfs, and how rules and open files interact.
"""
from __future__ import annotations

import errno
import mmap
import os
import subprocess
import time

import grpc
import pytest

from chaosfs.proto import faults_pb2 as fpb, faults_pb2_grpc
from tests.conftest import CHAOSFS_CTL

DATA = os.urandom(4 << 20)


@pytest.fixture
def pt(daemon_factory, transport):
    d = daemon_factory("-passthrough=unmatched", f"-transport={transport}")
    assert "kernel passthrough for unmatched files" in d.wait_log("FUSE connection")
    (d.original / "db").mkdir()
    (d.original / "db" / "data.sst").write_bytes(DATA)
    (d.original / "other.bin").write_bytes(DATA)
    d.channel = grpc.insecure_channel(d.addr)
    d.faults = faults_pb2_grpc.FaultsStub(d.channel)
    yield d
    d.channel.close()


def reads_served(d) -> int:
    return d.method_counts().get("read", 0)


def add_eio(d, path: str, rid: str = "") -> fpb.AddRuleResponse:
    return d.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
        id=rid, methods=["read", "write"], path=path, errno=fpb.ErrnoAction(code=errno.EIO))), timeout=10)


def test_unmatched_files_bypass_the_daemon(pt):
    assert (pt.mountpoint / "db" / "data.sst").read_bytes() == DATA
    with open(pt.mountpoint / "new.bin", "wb") as f:
        f.write(DATA)
    assert (pt.original / "new.bin").read_bytes() == DATA
    counts = pt.method_counts()
    assert counts.get("read", 0) == 0 and counts.get("write", 0) == 0


def test_shared_mmap_writes_reach_the_backing_file(pt):
    fd = os.open(pt.mountpoint / "other.bin", os.O_RDWR)
    try:
        with mmap.mmap(fd, 8192) as m:
            m[:5] = b"HELLO"
            m.flush()
    finally:
        os.close(fd)
    assert (pt.original / "other.bin").read_bytes()[:5] == b"HELLO"


def test_a_rule_present_at_open_time_faults_as_without_passthrough(pt):
    add_eio(pt, "^db/")
    with pytest.raises(OSError) as e:
        (pt.mountpoint / "db" / "data.sst").read_bytes()
    assert e.value.errno == errno.EIO
    # The other file is still served by the kernel, untouched by the rule.
    before = reads_served(pt)
    assert (pt.mountpoint / "other.bin").read_bytes() == DATA
    assert reads_served(pt) == before


def test_a_rule_added_while_a_file_is_open_is_reported_and_applies_to_new_opens(pt):
    old = os.open(pt.mountpoint / "db" / "data.sst", os.O_RDONLY)
    try:
        resp = add_eio(pt, "^db/", "late")
        assert list(resp.bypassed_paths) == ["db/data.sst"]
        assert "rule late: 1 file(s) open in kernel passthrough" in pt.log_text()
        # The fd opened before the rule keeps reading the backing file: the documented bypass.
        assert os.pread(old, 16, 0) == DATA[:16]
        # A new open of the same inode succeeds (the kernel wants it in passthrough too)
        # and its reads reach chaosfs, so the rule fires.
        new = os.open(pt.mountpoint / "db" / "data.sst", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                os.pread(new, 16, 0)
            assert e.value.errno == errno.EIO
        finally:
            os.close(new)
    finally:
        os.close(old)
    # Once every fd is closed, opens are plain direct I/O and faults apply to all of them.
    time.sleep(0.2)  # RELEASE is asynchronous
    with pytest.raises(OSError):
        (pt.mountpoint / "db" / "data.sst").read_bytes()
    pt.faults.Clear(fpb.ClearRequest(), timeout=10)
    before = reads_served(pt)
    assert (pt.mountpoint / "db" / "data.sst").read_bytes() == DATA
    assert reads_served(pt) == before  # back in passthrough


def test_ctl_warns_about_bypassed_files(pt):
    fd = os.open(pt.mountpoint / "other.bin", os.O_RDONLY)
    try:
        out = subprocess.run([CHAOSFS_CTL, "--addr", pt.addr, "add", "-m", "read", "--path",
                              "^other", "--errno", "5"], capture_output=True, text=True)
    finally:
        os.close(fd)
    assert out.returncode == 0, out.stderr
    assert "1 open file(s) bypass this rule until reopened" in out.stderr
    assert "other.bin" in out.stderr


def test_o_direct_opens_are_served_by_chaosfs(pt):
    fd = os.open(pt.mountpoint / "other.bin", os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 4096)
        assert os.preadv(fd, [buf], 0) == 4096
        assert bytes(buf) == DATA[:4096]
    finally:
        os.close(fd)
    assert reads_served(pt) >= 1
