"""The IoChaos reconciler through its kopf handlers, against a real API server and real
chaosfs daemons.

The API side is real: an etcd + kube-apiserver 1.20 started once per session on loopback
(tests/kubeapi.py, on e2e/control_plane.py; built from Debian's source package into e2e/run's
cache when missing), deploy/iochaos-crd.yaml applied, and the engine on
`controller.kube.KubeCluster`, the class the deployed controller uses. So resourceVersion
conflicts, the refusal of new finalizers while deleting, deletionTimestamp and the object's
removal with its last finalizer, the CRD's schema pruning and the status subresource's merge
patches are the API server's own, and the Events checked are read back from it. Each test
has its own namespace (and its selectors name it); objects are left for the session's end.
There is no kubelet: the pods are API objects with spec.nodeName, reported Running with
podIP 127.0.0.1 through the status subresource. The sidecars are real: one chaosfs daemon
per pod on loopback, each pod's chaosfs container's `-addr` flag the daemon's port, so port
discovery, the 0.9 requests and their effect on file I/O are real. The handlers are called
directly (not by kopf's watch) and the engine's clock is a fake, so the tests decide when
each reconcile happens and what time it sees.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import os
import random

import pytest

from controller.engine import Engine
from controller.operator import Handlers
from tests.compat09 import Injure09

UTC = dt.timezone.utc


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def world(kube, daemon_factory):
    """(kube, handlers, clock, daemons): three etcd pods in the test's namespace, each with a
    real chaosfs daemon."""
    clock = Clock()
    daemons = {}
    for i in range(3):
        d = daemon_factory(name=f"etcd-{i}")
        (d.original / "data.txt").write_bytes(b"hello\n")
        daemons[f"etcd-{i}"] = d
        kube.add_pod(f"etcd-{i}", {"app": "etcd"}, d.port)
    engine = Engine(kube.cluster, dial_timeout=4.0, probe_timeout=2.0, resync=0.05, clock=clock,
                    rng=random.Random(5))
    yield kube, Handlers(engine), clock, daemons
    # the daemons (and their mounts) go with daemon_factory


def injected(d) -> bool:
    c = Injure09(d.addr)
    try:
        return c.Injected(c.empty(), timeout=5).injected
    finally:
        c.close()


def read_errno(d) -> int:
    try:
        with open(d.mountpoint / "data.txt", "rb") as f:
            f.read()
    except OSError as exc:
        return exc.errno
    return 0


def run(coro):
    return asyncio.run(coro)


def errno_spec(ns: str) -> dict:
    # label selection is cluster-wide: `namespaces` keeps out the other tests' pods
    return {"action": "errno", "errno": "5", "methods": ["read"], "mode": "all", "layer": "fs",
            "selector": {"namespaces": [ns], "labelSelectors": {"app": "etcd"}}}


def test_one_shot_inject_reinject_pause_resume_delete(world) -> None:
    kube, h, clock, daemons = world
    kube.create("io-errno", errno_spec(kube.ns))
    run(h.on_event(namespace=kube.ns, name="io-errno"))

    obj = kube.get("io-errno")
    assert sorted(obj["metadata"]["finalizers"]) == [f"{kube.ns}/etcd-{i}" for i in range(3)]
    exp = obj["status"]["experiment"]
    assert obj["status"]["phase"] == "Normal" and exp["phase"] == "Running"
    assert exp["startTime"] == "2024-03-01T10:00:00Z"
    assert {r["name"] for r in exp["podRecords"]} == set(daemons)
    assert all(r["action"] == "errno" and r["podIP"] == "127.0.0.1" for r in exp["podRecords"])
    assert "ChaosInjected" in kube.reasons()
    for d in daemons.values():
        assert read_errno(d) == errno.EIO  # the 0.9 SetFault(read, errno 5) reached the mount

    # level-triggered: a restarted sidecar has no faults; the next tick sets them again
    d0 = daemons["etcd-0"]
    d0.stop()
    d0.start()
    assert read_errno(d0) == 0 and not injected(d0)
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace=kube.ns, name="io-errno"))
    assert injected(d0) and read_errno(d0) == errno.EIO
    assert "ChaosReinjected" in kube.reasons()
    rec = {r["name"]: r for r in kube.get("io-errno")["status"]["experiment"]["podRecords"]}
    assert "re-injected" in rec["etcd-0"]["message"]

    # pause recovers and waits; removing the annotation resumes
    kube.annotate("io-errno", "experiment.chaos-mesh.org/pause", "true")
    run(h.on_event(namespace=kube.ns, name="io-errno"))
    obj = kube.get("io-errno")
    assert obj["status"]["experiment"]["phase"] == "Paused"
    assert obj["metadata"].get("finalizers", []) == []  # the API server drops an empty list
    assert not any(injected(d) for d in daemons.values())
    assert read_errno(d0) == 0
    run(h.on_timer(namespace=kube.ns, name="io-errno"))  # a tick while paused injects nothing
    assert not any(injected(d) for d in daemons.values())
    kube.annotate("io-errno", "experiment.chaos-mesh.org/pause", None)
    run(h.on_event(namespace=kube.ns, name="io-errno"))
    assert all(injected(d) for d in daemons.values())
    assert kube.get("io-errno")["status"]["experiment"]["phase"] == "Running"

    # deletion recovers every pod first, then the finalizers let the object go
    kube.delete("io-errno")
    assert kube.get("io-errno") is not None  # held by the pod finalizers
    run(h.on_delete(namespace=kube.ns, name="io-errno"))
    assert kube.get("io-errno") is None
    assert not any(injected(d) for d in daemons.values())
    assert all(read_errno(d) == 0 for d in daemons.values())
    assert kube.reasons().count("ChaosRecovered") >= 2


def test_fixed_mode_hits_exactly_value_pods_with_setfaultall_delay(world) -> None:
    kube, h, clock, daemons = world
    kube.create("io-delay", {"action": "delay", "delay": "300ms", "mode": "fixed", "value": "2",
                             "layer": "fs", "selector": {"namespaces": [kube.ns],
                                                         "labelSelectors": {"app": "etcd"}}})
    run(h.on_event(namespace=kube.ns, name="io-delay"))
    hit = [n for n, d in daemons.items() if injected(d)]
    assert len(hit) == 2
    obj = kube.get("io-delay")
    assert sorted(obj["metadata"]["finalizers"]) == sorted(f"{kube.ns}/{n}" for n in hit)
    import time
    t = time.monotonic()
    os.stat(daemons[hit[0]].mountpoint / "data.txt")  # SetFaultAll: getattr is delayed too
    assert time.monotonic() - t >= 0.25
    kube.delete("io-delay")
    run(h.on_delete(namespace=kube.ns, name="io-delay"))
    assert not any(injected(d) for d in daemons.values())


def test_scheduled_injects_at_creation_recovers_after_duration_and_again_at_tick(world) -> None:
    kube, h, clock, daemons = world
    kube.create("io-cron", {**errno_spec(kube.ns), "mode": "one", "duration": "30s",
                            "scheduler": {"cron": "@every 1m"}})
    run(h.on_event(namespace=kube.ns, name="io-cron"))
    st = kube.get("io-cron")["status"]
    assert st["scheduler"] == {"nextStart": "2024-03-01T10:01:00Z",
                               "nextRecover": "2024-03-01T10:00:30Z"}
    assert st["experiment"]["phase"] == "Running"
    assert sum(injected(d) for d in daemons.values()) == 1

    clock.advance(31)
    run(h.on_event(namespace=kube.ns, name="io-cron"))
    st = kube.get("io-cron")["status"]
    assert st["experiment"]["phase"] == "Waiting" and st["experiment"]["duration"] == "31s"
    assert st["experiment"]["endTime"] == "2024-03-01T10:00:31Z"
    assert not any(injected(d) for d in daemons.values())
    assert kube.get("io-cron")["metadata"].get("finalizers", []) == []

    clock.advance(20)  # 10:00:51, before the next start: nothing happens
    run(h.on_event(namespace=kube.ns, name="io-cron"))
    assert not any(injected(d) for d in daemons.values())

    clock.advance(10)  # 10:01:01: the tick
    run(h.on_event(namespace=kube.ns, name="io-cron"))
    st = kube.get("io-cron")["status"]
    assert st["experiment"]["phase"] == "Running"
    assert st["scheduler"]["nextStart"] == "2024-03-01T10:02:01Z"
    assert sum(injected(d) for d in daemons.values()) == 1
    kube.delete("io-cron")
    run(h.on_delete(namespace=kube.ns, name="io-cron"))
    assert kube.get("io-cron") is None
    assert not any(injected(d) for d in daemons.values())


def test_invalid_spec_is_reported_and_nothing_is_injected(world) -> None:
    kube, h, clock, daemons = world
    kube.create("bad", {**errno_spec(kube.ns), "duration": "30s"})
    run(h.on_event(namespace=kube.ns, name="bad"))
    obj = kube.get("bad")
    assert obj["status"]["phase"] == "Abnormal"
    assert obj["status"]["reason"] == "spec.duration: set without spec.scheduler (both or neither)"
    assert obj["status"]["experiment"]["phase"] == "Failed"
    assert kube.events == [("Warning", "InvalidSpec", obj["status"]["reason"])]
    run(h.on_event(namespace=kube.ns, name="bad"))
    assert len(kube.events) == 1  # reported once, not on every look
    assert not obj["metadata"].get("finalizers") and not any(injected(d) for d in daemons.values())
    kube.delete("bad")
    assert kube.get("bad") is None  # nothing held it


def test_spec_edit_while_running_reinjects_with_the_new_spec(world) -> None:
    kube, h, clock, daemons = world
    kube.create("edit", {**errno_spec(kube.ns), "selector": {"pods": {kube.ns: ["etcd-1"]}}})
    run(h.on_event(namespace=kube.ns, name="edit"))
    d1 = daemons["etcd-1"]
    assert read_errno(d1) == errno.EIO
    spec = kube.get("edit")["spec"]
    spec["errno"] = "28"
    kube.edit_spec("edit", spec)  # the API server makes it generation 2
    run(h.on_event(namespace=kube.ns, name="edit"))
    assert read_errno(d1) == errno.ENOSPC
    assert kube.get("edit")["status"]["observedGeneration"] == 2


def test_unreachable_sidecar_is_reported_not_retried_forever(world) -> None:
    kube, h, clock, daemons = world
    kube.create("lost", {**errno_spec(kube.ns), "selector": {"pods": {kube.ns: ["etcd-2"]}}})
    run(h.on_event(namespace=kube.ns, name="lost"))
    d2 = daemons["etcd-2"]
    d2.stop()
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace=kube.ns, name="lost"))
    rec = kube.get("lost")["status"]["experiment"]["podRecords"][0]
    assert rec["message"].startswith("sidecar unreachable")
    assert kube.reasons().count("SidecarUnreachable") == 1
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace=kube.ns, name="lost"))
    assert kube.reasons().count("SidecarUnreachable") == 1  # one report per change
    # deletion does not hang on it: the faults died with the daemon
    kube.delete("lost")
    run(h.on_delete(namespace=kube.ns, name="lost"))
    assert kube.get("lost") is None
    d2.start()


# ------------------------------------------------------------------ spec.chaosfs (v1 rules)
def v1_client(d):
    import grpc
    from chaosfs.proto import faults_pb2_grpc
    ch = grpc.insecure_channel(d.addr)
    return ch, faults_pb2_grpc.FaultsStub(ch)


def rules_of(d) -> dict[str, str]:
    """The daemon's rules: id -> origin."""
    from chaosfs.proto import faults_pb2
    ch, stub = v1_client(d)
    try:
        return {r.id: r.origin for r in stub.ListRules(faults_pb2.ListRulesRequest(),
                                                       timeout=5).rules}
    finally:
        ch.close()


def add_foreign_rule(d) -> None:
    """What someone with chaosfs-ctl adds beside the experiment: it must survive recovery."""
    from chaosfs.proto import faults_pb2
    ch, stub = v1_client(d)
    try:
        stub.AddRule(faults_pb2.AddRuleRequest(rule=faults_pb2.Rule(
            id="by-hand", methods=["write"], path="^elsewhere$", errno=faults_pb2.ErrnoAction(
                code=errno.ENOSPC))), timeout=5)
    finally:
        ch.close()


BLOB = bytes(range(256)) * 64  # 16 KiB with no zero run longer than one byte


def read_bytes(d, rel: str) -> bytes | int:
    try:
        with open(d.mountpoint / rel, "rb") as f:
            return f.read()
    except OSError as exc:
        return exc.errno


def v1_spec(ns: str) -> dict:
    return {"mode": "all", "layer": "fs", "selector": {"pods": {ns: ["etcd-0", "etcd-1"]}},
            "chaosfs": {"rules": [
                {"name": "eio", "methods": ["read"], "glob": "data.txt", "errno": "EIO"},
                {"name": "rot", "methods": ["read"], "glob": "*.bin",
                 "corrupt": {"mode": "zero", "length": 64}}]}}


def test_v1_rules_injected_seen_through_the_mount_and_only_they_recovered(world) -> None:
    kube, h, clock, daemons = world
    for d in daemons.values():
        (d.original / "blob.bin").write_bytes(BLOB)
    d0, d1, d2 = daemons["etcd-0"], daemons["etcd-1"], daemons["etcd-2"]
    add_foreign_rule(d0)
    kube.create("io-v1", v1_spec(kube.ns))
    run(h.on_event(namespace=kube.ns, name="io-v1"))

    obj = kube.get("io-v1")
    exp = obj["status"]["experiment"]
    assert exp["phase"] == "Running" and obj["status"]["phase"] == "Normal"
    assert sorted(obj["metadata"]["finalizers"]) == [f"{kube.ns}/etcd-0", f"{kube.ns}/etcd-1"]
    assert all(r["action"] == "chaosfs" for r in exp["podRecords"])
    (msg,) = [m for _, r, m in kube.events if r == "ChaosInjected"]
    head, _, pods = msg.partition(": ")
    assert head == "2 chaosfs rule(s) set on 2 pod(s)"
    assert sorted(pods.split(", ")) == [f"{kube.ns}/etcd-0", f"{kube.ns}/etcd-1"]
    ours = {f"iochaos/{kube.ns}/io-v1/eio": "v1", f"iochaos/{kube.ns}/io-v1/rot": "v1"}
    assert rules_of(d0) == {**ours, "by-hand": "v1"} and rules_of(d1) == ours
    assert rules_of(d2) == {}
    for d in (d0, d1):
        assert read_bytes(d, "data.txt") == errno.EIO          # the errno rule, by glob
        got = read_bytes(d, "blob.bin")                          # the corrupt rule
        assert isinstance(got, bytes) and len(got) == len(BLOB) and got != BLOB
        assert bytes(64) in got and got.replace(bytes(64), b"", 1) != BLOB.replace(bytes(64), b"")
    assert read_bytes(d2, "data.txt") == b"hello\n" and read_bytes(d2, "blob.bin") == BLOB

    # a restarted sidecar has lost the rules: the resync adds them again
    d1.stop()
    d1.start()
    assert rules_of(d1) == {}
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace=kube.ns, name="io-v1"))
    assert rules_of(d1) == ours and read_bytes(d1, "data.txt") == errno.EIO
    (msg,) = [m for _, r, m in kube.events if r == "ChaosReinjected"]
    assert msg == (f"{kube.ns}/etcd-1: the sidecar had lost iochaos/{kube.ns}/io-v1/eio, "
                   f"iochaos/{kube.ns}/io-v1/rot; set again")
    run(h.on_timer(namespace=kube.ns, name="io-v1"))  # nothing lost: nothing set again
    assert kube.reasons().count("ChaosReinjected") == 1

    # deletion removes exactly the experiment's rules: the hand-made one stays
    kube.delete("io-v1")
    run(h.on_delete(namespace=kube.ns, name="io-v1"))
    assert kube.get("io-v1") is None
    assert rules_of(d0) == {"by-hand": "v1"} and rules_of(d1) == {}
    for d in (d0, d1):
        assert read_bytes(d, "data.txt") == b"hello\n" and read_bytes(d, "blob.bin") == BLOB


def test_v1_budgets_are_the_daemons_and_not_granted_twice(world) -> None:
    import time
    kube, h, clock, daemons = world
    d0 = daemons["etcd-0"]
    (d0.original / "brief.txt").write_bytes(b"soon\n")
    kube.create("io-budget", {**v1_spec(kube.ns), "selector": {"pods": {kube.ns: ["etcd-0"]}},
                              "chaosfs": {"rules": [
                                  {"name": "twice", "methods": ["read"], "glob": "data.txt",
                                   "errno": 28, "maxHits": 2},
                                  {"name": "brief", "methods": ["read"], "glob": "brief.txt",
                                   "errno": "EACCES", "ttl": "700ms"}]}})
    t0 = time.monotonic()
    run(h.on_event(namespace=kube.ns, name="io-budget"))
    assert read_bytes(d0, "brief.txt") == errno.EACCES                 # ttl not over yet
    assert [read_bytes(d0, "data.txt") for _ in range(3)] == [errno.ENOSPC, errno.ENOSPC,
                                                              b"hello\n"]   # maxHits 2
    time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
    assert read_bytes(d0, "brief.txt") == b"soon\n"                    # the ttl ran out
    deadline = time.monotonic() + 5
    while rules_of(d0) and time.monotonic() < deadline:   # the daemon's reaper removes both
        time.sleep(0.05)
    assert rules_of(d0) == {}
    # the experiment still runs, and its spent rules are not added again
    run(h.on_timer(namespace=kube.ns, name="io-budget"))
    assert rules_of(d0) == {} and read_bytes(d0, "data.txt") == b"hello\n"
    assert "ChaosReinjected" not in kube.reasons()
    assert kube.get("io-budget")["status"]["experiment"]["phase"] == "Running"
    kube.delete("io-budget")
    run(h.on_delete(namespace=kube.ns, name="io-budget"))
    assert kube.get("io-budget") is None


def test_spec_edit_between_0_9_fault_and_v1_rules_recovers_what_was_set(world) -> None:
    kube, h, clock, daemons = world
    d1 = daemons["etcd-1"]
    kube.create("switch", {**errno_spec(kube.ns), "selector": {"pods": {kube.ns: ["etcd-1"]}}})
    run(h.on_event(namespace=kube.ns, name="switch"))
    assert read_bytes(d1, "data.txt") == errno.EIO
    assert set(rules_of(d1).values()) == {"injure"}
    # 0.9 fault -> v1 rules: the 0.9 fault goes (RecoverAll, from the podRecord's action)
    kube.edit_spec("switch", {
        "mode": "all", "layer": "fs", "selector": {"pods": {kube.ns: ["etcd-1"]}},
        "chaosfs": {"rules": [{"methods": ["read"], "path": "data", "errno": 28}]}})
    run(h.on_event(namespace=kube.ns, name="switch"))
    assert rules_of(d1) == {f"iochaos/{kube.ns}/switch/0": "v1"}
    assert read_bytes(d1, "data.txt") == errno.ENOSPC
    # v1 rules -> 0.9 fault: the v1 rules go, and only they (not RecoverAll)
    add_foreign_rule(d1)
    kube.edit_spec("switch", {**errno_spec(kube.ns), "errno": "13",
                              "selector": {"pods": {kube.ns: ["etcd-1"]}}})
    run(h.on_event(namespace=kube.ns, name="switch"))
    held = rules_of(d1)
    assert held.pop("by-hand") == "v1" and set(held.values()) == {"injure"}
    assert read_bytes(d1, "data.txt") == errno.EACCES
    kube.delete("switch")
    run(h.on_delete(namespace=kube.ns, name="switch"))
    assert rules_of(d1) == {}  # 0.9's RecoverAll, as 0.9 did: the whole table


def test_scheduled_v1_rules_get_a_fresh_budget_each_window(world) -> None:
    kube, h, clock, daemons = world
    d2 = daemons["etcd-2"]
    kube.create("io-v1-cron", {"mode": "all", "layer": "fs", "duration": "30s",
                               "scheduler": {"cron": "@every 1m"},
                               "selector": {"pods": {kube.ns: ["etcd-2"]}},
                               "chaosfs": {"rules": [{"name": "once", "methods": ["read"],
                                                      "glob": "data.txt", "errno": "EIO",
                                                      "maxHits": 1}]}})
    run(h.on_event(namespace=kube.ns, name="io-v1-cron"))
    assert [read_bytes(d2, "data.txt") for _ in range(2)] == [errno.EIO, b"hello\n"]
    clock.advance(31)   # the window ends: recovered (nothing left to remove is fine)
    run(h.on_event(namespace=kube.ns, name="io-v1-cron"))
    st = kube.get("io-v1-cron")["status"]
    assert st["experiment"]["phase"] == "Waiting" and rules_of(d2) == {}
    clock.advance(30)   # the next tick: the rule again, with its budget afresh
    run(h.on_event(namespace=kube.ns, name="io-v1-cron"))
    assert rules_of(d2) == {f"iochaos/{kube.ns}/io-v1-cron/once": "v1"}
    assert [read_bytes(d2, "data.txt") for _ in range(2)] == [errno.EIO, b"hello\n"]
    kube.delete("io-v1-cron")
    run(h.on_delete(namespace=kube.ns, name="io-v1-cron"))
    assert kube.get("io-v1-cron") is None


# ------------------------------------------------------------------ spec.chaosfs.powerCut
def power_of(d):
    """The daemon's PowerLossStatus."""
    import grpc
    from chaosfs.proto import powerloss_pb2, powerloss_pb2_grpc
    with grpc.insecure_channel(d.addr) as ch:
        return powerloss_pb2_grpc.PowerLossStub(ch).Status(powerloss_pb2.StatusRequest(), timeout=5)


def power_spec(ns: str, after: str) -> dict:
    return {"mode": "all", "layer": "fs", "selector": {"pods": {ns: ["etcd-0", "etcd-1"]}},
            "chaosfs": {"powerCut": {"after": after}}}


def write_durably(path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # the new name is durable only once its directory is
    finally:
        os.close(dfd)


def test_power_cut_arms_cuts_after_its_time_loses_only_the_unsynced_and_disarms(world) -> None:
    import time
    kube, h, clock, daemons = world
    d0, d1, d2 = daemons["etcd-0"], daemons["etcd-1"], daemons["etcd-2"]
    kube.create("io-pc", power_spec(kube.ns, "1s"))
    run(h.on_event(namespace=kube.ns, name="io-pc"))
    obj = kube.get("io-pc")
    assert sorted(obj["metadata"]["finalizers"]) == [f"{kube.ns}/etcd-0", f"{kube.ns}/etcd-1"]
    recs = obj["status"]["experiment"]["podRecords"]
    assert [r["powerCut"] for r in recs] == ["armed", "armed"]
    assert all(r["message"] == "power loss armed: the cut comes 1s after arming" for r in recs)
    assert power_of(d0).armed and power_of(d1).armed and not power_of(d2).armed
    (msg,) = [m for _, r, m in kube.events if r == "ChaosInjected"]
    assert msg.startswith("power loss armed (cut in 1s) set on 2 pod(s)")

    m = d0.mountpoint
    write_durably(m / "kept.txt", b"synced\n")
    (m / "lost.txt").write_bytes(b"never synced\n")        # name and data never durable
    with open(m / "data.txt", "r+b") as f:                  # existed before arming
        f.write(b"HELLO")
    run(h.on_timer(namespace=kube.ns, name="io-pc"))          # before its time: no cut
    assert power_of(d0).armed and "PowerCut" not in kube.reasons()
    assert (m / "lost.txt").exists()

    time.sleep(1.1)
    run(h.on_timer(namespace=kube.ns, name="io-pc"))
    assert sorted(os.listdir(m)) == ["data.txt", "kept.txt"]
    assert (m / "kept.txt").read_bytes() == b"synced\n"
    assert (m / "data.txt").read_bytes() == b"hello\n"
    for d in (d0, d1):
        st = power_of(d)
        assert not st.armed and st.totals.cuts == 1, st
    assert power_of(d2).totals.cuts == 0
    recs = {r["name"]: r for r in kube.get("io-pc")["status"]["experiment"]["podRecords"]}
    assert recs["etcd-0"]["powerCut"] not in ("", "armed")
    assert recs["etcd-0"]["message"].startswith("power cut after 1.")
    # lost.txt's 13 bytes and data.txt's 5 (lost.txt's name goes too)
    assert "2 file(s) rolled back, 18 unsynced byte(s) dropped" in recs["etcd-0"]["message"], \
        recs["etcd-0"]["message"]
    assert "1 directory entry undone" in recs["etcd-0"]["message"], recs["etcd-0"]["message"]
    assert "0 file(s) rolled back" in recs["etcd-1"]["message"]
    cuts = sorted(m_ for _, r, m_ in kube.events if r == "PowerCut")
    assert len(cuts) == 2 and cuts[0].startswith(f"{kube.ns}/etcd-0: power cut after")

    run(h.on_timer(namespace=kube.ns, name="io-pc"))          # cut once, not again
    assert power_of(d0).totals.cuts == 1 and kube.reasons().count("PowerCut") == 2
    kube.delete("io-pc")
    run(h.on_delete(namespace=kube.ns, name="io-pc"))
    assert kube.get("io-pc") is None
    assert power_of(d0).totals.cuts == 1 and not power_of(d0).armed


def test_power_cut_rearms_a_restarted_sidecar_and_deletion_before_the_cut_only_disarms(world) -> None:
    kube, h, clock, daemons = world
    d0, d1 = daemons["etcd-0"], daemons["etcd-1"]
    kube.create("io-pc", power_spec(kube.ns, "1h"))
    run(h.on_event(namespace=kube.ns, name="io-pc"))
    (d0.mountpoint / "unsynced.txt").write_bytes(b"x")
    d1.stop()
    d1.start()
    assert not power_of(d1).armed
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace=kube.ns, name="io-pc"))
    assert power_of(d1).armed
    (msg,) = [m for _, r, m in kube.events if r == "ChaosReinjected"]
    assert msg == f"{kube.ns}/etcd-1: the sidecar was no longer armed; power loss armed again"
    recs = {r["name"]: r for r in kube.get("io-pc")["status"]["experiment"]["podRecords"]}
    assert recs["etcd-1"]["message"].endswith("(armed again: the sidecar had lost it)")
    assert recs["etcd-1"]["powerCut"] == "armed"

    kube.delete("io-pc")
    run(h.on_delete(namespace=kube.ns, name="io-pc"))
    assert kube.get("io-pc") is None
    for d in (d0, d1):
        st = power_of(d)
        assert not st.armed and st.totals.cuts == 0
    assert (d0.mountpoint / "unsynced.txt").read_bytes() == b"x"  # disarmed, nothing lost
