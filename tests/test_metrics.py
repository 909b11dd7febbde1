"""The sidecar's Prometheus endpoint (-metrics-addr) on a real daemon: what it counts, that it
follows the rule table live, that it is off by default, and that it goes with the daemon."""
from __future__ import annotations

import os
import signal
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import errno_of, free_port


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
