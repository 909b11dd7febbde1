"""The sidecar's Prometheus endpoint (-metrics-addr) on a real daemon: what it counts (injected
errors apart from the backing file system's), that it follows the rule table live, that it is
off by default, and that it goes with the daemon."""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CHAOSFS_CTL, errno_of, free_port


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def pread4k(path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 4096, 0)
    finally:
        os.close(fd)


def value(m: dict, name: str, **labels: str) -> float | None:
    for s in m.get(name, []):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on, from its socket fds and /proc/net/tcp{,6}."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.parametrize("transport", ["pyfuse3", "cython"])
def test_metrics_follow_operations_and_rules(daemon_factory, transport: str) -> None:
    mport = free_port()
    d = daemon_factory(f"-transport={transport}", f"-metrics-addr=127.0.0.1:{mport}")
    (d.original / "victim").write_bytes(b"v" * 4096)
    (d.original / "other").write_bytes(b"o" * 4096)

    m = scrape(mport)
    assert value(m, "chaosfs_info", transport=transport) == 1
    assert value(m, "chaosfs_active_rules", origin="injure") == 0
    assert value(m, "chaosfs_active_rules", origin="v1") == 0
    assert m.get("chaosfs_injected_faults_total") is None

    import grpc
    from chaosfs.proto import faults_pb2, faults_pb2_grpc
    from tests.compat09 import Injure09
    c = Injure09(d.addr)
    ch = grpc.insecure_channel(d.addr)
    try:
        c.SetFault(c.request(methods=["read"], errno=5, pct=100, path="victim"), timeout=10)
        faults = faults_pb2_grpc.FaultsStub(ch)
        rule = faults_pb2.Rule(id="slow", methods=["read"], path="other")
        rule.delay.fixed_us = 20_000
        faults.AddRule(faults_pb2.AddRuleRequest(rule=rule), timeout=10)
        for _ in range(3):  # one read request each (the rules make the files direct_io)
            assert errno_of(pread4k, d.mountpoint / "victim") == 5
            assert pread4k(d.mountpoint / "other") == b"o" * 4096

        m = scrape(mport)
        assert value(m, "chaosfs_active_rules", origin="injure") == 1
        assert value(m, "chaosfs_active_rules", origin="v1") == 1
        assert value(m, "chaosfs_injected_faults_total", rule="injure:read", action="errno",
                     origin="injure") == 3
        assert value(m, "chaosfs_injected_faults_total", rule="slow", action="delay",
                     origin="v1") == 3
        reads = value(m, "chaosfs_operations_total", method="read")
        assert reads is not None and reads >= 6
        assert value(m, "chaosfs_operation_errors_total", method="read") == 3
        # the delayed reads sit at or above the 16.384 ms bound, the failed ones far below
        buckets = {s.labels["le"]: s.value for s in m["chaosfs_operation_duration_seconds_bucket"]
                   if s.labels["method"] == "read"}
        assert buckets["+Inf"] == reads
        assert buckets["0.016384"] <= reads - 3
        assert list(buckets.values()) == sorted(buckets.values())  # cumulative

        # the next scrape sees the table as it is now, nothing cached
        c.RecoverAll(c.empty(), timeout=10)
        m = scrape(mport)
        assert value(m, "chaosfs_active_rules", origin="injure") == 0
        assert value(m, "chaosfs_active_rules", origin="v1") == 0
        assert m.get("chaosfs_injected_faults_total") is None
    finally:
        c.close()
        ch.close()

    assert mport in listening_ports(d.proc.pid)
    assert d.stop(signal.SIGTERM) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mport), timeout=2).close()


def test_metrics_are_off_by_default(daemon_factory) -> None:
    d = daemon_factory()
    # the 0.9 command line: only the gRPC port listens
    assert listening_ports(d.proc.pid) == {d.port}


def test_metrics_listener_on_all_interfaces_form(daemon_factory) -> None:
    mport = free_port()
    d = daemon_factory(f"-metrics-addr=:{mport}")
    assert listening_ports(d.proc.pid) == {d.port, mport}
    assert value(scrape(mport), "chaosfs_active_rules", origin="v1") == 0


def pread_direct(path) -> bytes:
    """One READ request per call: O_DIRECT makes chaosfs answer the open with direct_io, so
    no page cache or readahead multiplies or hides the request."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return os.pread(fd, 4096, 0)
    finally:
        os.close(fd)


def test_injected_and_backing_errors_counted_apart(daemon_factory, transport: str, hot_impl: str) -> None:
    """An errno rule's errors and the backing file system's are counted apart per method, on
    every path that decides them: the C workers (-transport=cython, a rule C decides; a file no
    rule touches), the hot handlers (-hot) with and without a firing rule, the cold handlers.

    The backing file system that fails reads is a second chaosfs: its own errno rule is, to
    the daemon under test, a real EIO from the disk."""
    import grpc
    from chaosfs.proto import faults_pb2 as fpb, faults_pb2_grpc

    disk = daemon_factory(name="disk")  # the failing "disk"
    for name in ("victim", "victim2", "bad.bin", "bad2.bin"):
        (disk.original / name).write_bytes(name[0].encode() * 4096)
    (disk.original / "locked").mkdir()
    (disk.original / "full").mkdir()
    (disk.original / "full" / "x").write_bytes(b"x")
    mport = free_port()
    d = daemon_factory(f"-transport={transport}", f"-hot={hot_impl}",
                       f"-metrics-addr=127.0.0.1:{mport}", start=False, name="sut")
    d.original = disk.mountpoint
    d.start()

    def add(ch, **kw) -> None:
        faults_pb2_grpc.FaultsStub(ch).AddRule(fpb.AddRuleRequest(rule=fpb.Rule(**kw)), timeout=10)

    with grpc.insecure_channel(disk.addr) as dch, grpc.insecure_channel(d.addr) as ch:
        add(dch, id="disk-eio", methods=["read"], path=r"^bad", errno=fpb.ErrnoAction(code=errno.EIO))
        # decided by the C workers on -transport=cython
        add(ch, id="inj", methods=["read"], path=r"^victim$", errno=fpb.ErrnoAction(code=errno.EBADMSG))
        # max_hits: decided in Python on either transport
        add(ch, id="inj-py", methods=["read"], path=r"^victim2$", max_hits=1000,
            errno=fpb.ErrnoAction(code=errno.ENOLINK))
        # fires without an errno: the backing read's error comes out of a firing verdict
        add(ch, id="slow-bad", methods=["read"], path=r"^bad\.bin$", delay=fpb.DelayAction(fixed_us=1))
        add(ch, id="inj-cold", methods=["rmdir"], path=r"^locked$", errno=fpb.ErrnoAction(code=errno.EPERM))
        stub = faults_pb2_grpc.FaultsStub(ch)
        stub.Stats(fpb.StatsRequest(reset=True), timeout=10)

        m = d.mountpoint
        for _ in range(3):
            assert errno_of(pread_direct, m / "victim") == errno.EBADMSG
        for _ in range(2):
            assert errno_of(pread_direct, m / "victim2") == errno.ENOLINK
            assert errno_of(pread_direct, m / "bad.bin") == errno.EIO     # through the rule's verdict
            assert errno_of(pread_direct, m / "bad2.bin") == errno.EIO    # no rule: C worker / plain path
            assert errno_of(os.rmdir, m / "locked") == errno.EPERM
        assert errno_of(os.rmdir, m / "full") == errno.ENOTEMPTY
        assert (disk.original / "locked").is_dir()

        st = {x.method: x for x in stub.Stats(fpb.StatsRequest(), timeout=10).methods}
        ms = scrape(mport)
        ctl = subprocess.run([CHAOSFS_CTL, "--addr", d.addr, "stats"], capture_output=True,
                             text=True, timeout=30)

    # read: 3 + 2 injected, 2 + 2 from the disk
    assert (st["read"].injected_errors, st["read"].backing_errors, st["read"].errors) == (5, 4, 9)
    assert (st["rmdir"].injected_errors, st["rmdir"].backing_errors, st["rmdir"].errors) == (2, 1, 3)
    for name, x in st.items():
        assert x.injected_errors + x.backing_errors == x.errors, name
        if name not in ("read", "rmdir"):
            assert x.injected_errors == 0, name
    for method, (inj, back) in {"read": (5, 4), "rmdir": (2, 1)}.items():
        assert value(ms, "chaosfs_injected_errors_total", method=method) == inj, method
        assert value(ms, "chaosfs_backing_errors_total", method=method) == back, method
        assert value(ms, "chaosfs_operation_errors_total", method=method) == inj + back, method
    for s in ms["chaosfs_operation_errors_total"]:
        method = s.labels["method"]
        assert (value(ms, "chaosfs_injected_errors_total", method=method)
                + value(ms, "chaosfs_backing_errors_total", method=method)) == s.value, method

    assert ctl.returncode == 0, ctl.stderr
    lines = ctl.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("METHOD"))
    assert header.split() == ["METHOD", "OPS", "ERRORS", "INJECTED/BACKING", "P50", "P99"]
    body = lines[lines.index(header) + 1:]
    body = body[:body.index("")] if "" in body else body  # the table ends at a blank line
    rows = {ln.split()[0]: ln.split() for ln in body}
    assert rows["read"][2:4] == ["9", "5/4"] and rows["rmdir"][2:4] == ["3", "2/1"]
    assert d.stop(signal.SIGTERM) == 0  # before the disk goes
