"""The IoChaos reconciler through its kopf handlers, against real chaosfs daemons.

No API server binary can be started cheaply inside pytest on this machine (kube-apiserver is
built from Debian's source package by e2e/run, ~10 min on 2 cores, and is not cached here), so
the API side is `Store` below: an in-memory stand-in with the API-server rules the engine
relies on (resourceVersion conflicts, no new finalizers while deleting, the object goes when
its last finalizer does, merge-patched status). The sidecars are real: one chaosfs daemon per
"pod" on loopback, each pod's status.podIP 127.0.0.1 and its chaosfs container's `-addr` flag
the daemon's port, so port discovery, the 0.9 requests and their effect on file I/O are real.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import errno
import os
import random

import pytest

from controller.engine import Engine
from controller.kube import Conflict
from controller.operator import Handlers
from tests.compat09 import Injure09

UTC = dt.timezone.utc


def merge(dst: dict, patch: dict) -> dict:
    for k, v in patch.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


class Store:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict] = {}
        self.chaos: dict[tuple[str, str], dict] = {}
        self.events: list[tuple[str, str, str]] = []
        self._rv = 0

    def _bump(self, obj: dict) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    # PodSource
    def get_pod(self, ns, name):
        return copy.deepcopy(self.pods.get((ns, name)))

    def list_pods(self, labels, fields):
        assert not fields
        return [copy.deepcopy(p) for p in self.pods.values()
                if all(p["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())]

    def get_node(self, name):
        return None

    def list_nodes(self, labels):
        return []

    # Cluster
    def create(self, name: str, spec: dict, ns: str = "demo") -> None:
        obj = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "IoChaos",
               "metadata": {"namespace": ns, "name": name, "generation": 1, "uid": name},
               "spec": spec}
        self._bump(obj)
        self.chaos[(ns, name)] = obj

    def get_iochaos(self, ns, name):
        return copy.deepcopy(self.chaos.get((ns, name)))

    def set_finalizers(self, obj, finalizers):
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        cur = self.chaos.get(key)
        if cur is None or cur["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise Conflict("changed")
        if cur["metadata"].get("deletionTimestamp") and set(finalizers) - set(
                cur["metadata"].get("finalizers", [])):
            raise Conflict("no new finalizers while deleting")
        cur["metadata"]["finalizers"] = list(finalizers)
        self._bump(cur)
        if cur["metadata"].get("deletionTimestamp") and not finalizers:
            del self.chaos[key]
        return copy.deepcopy(cur)

    def patch_status(self, ns, name, status):
        cur = self.chaos.get((ns, name))
        if cur is None:
            raise KeyError(name)
        merge(cur.setdefault("status", {}), dict(status))
        self._bump(cur)

    def event(self, obj, type_, reason, message):
        self.events.append((type_, reason, message))

    # what kubectl would do
    def annotate(self, name, key, value, ns="demo"):
        ann = self.chaos[(ns, name)]["metadata"].setdefault("annotations", {})
        if value is None:
            ann.pop(key, None)
        else:
            ann[key] = value
        self._bump(self.chaos[(ns, name)])

    def delete(self, name, ns="demo"):
        obj = self.chaos[(ns, name)]
        if not obj["metadata"].get("finalizers"):
            del self.chaos[(ns, name)]
        else:
            obj["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
            self._bump(obj)

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def world(daemon_factory):
    """(store, handlers, clock, pods): three etcd "pods", each a real chaosfs daemon."""
    store, clock = Store(), Clock()
    daemons = {}
    for i in range(3):
        d = daemon_factory(name=f"etcd-{i}")
        (d.original / "data.txt").write_bytes(b"hello\n")
        daemons[f"etcd-{i}"] = d
        store.pods[("demo", f"etcd-{i}")] = {
            "metadata": {"namespace": "demo", "name": f"etcd-{i}", "labels": {"app": "etcd"}},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "etcd", "image": "etcd"},
                {"name": "chaosfs", "command": ["/usr/local/bin/chaosfs", f"-addr=127.0.0.1:{d.port}",
                                                "-pidfile=/tmp/fuse/pid"]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1"}}
    engine = Engine(store, dial_timeout=4.0, probe_timeout=2.0, resync=0.05, clock=clock,
                    rng=random.Random(5))
    yield store, Handlers(engine), clock, daemons
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


ERRNO_SPEC = {"action": "errno", "errno": "5", "methods": ["read"], "mode": "all", "layer": "fs",
              "selector": {"labelSelectors": {"app": "etcd"}}}


def test_one_shot_inject_reinject_pause_resume_delete(world) -> None:
    store, h, clock, daemons = world
    store.create("io-errno", ERRNO_SPEC)
    run(h.on_event(namespace="demo", name="io-errno"))

    obj = store.get_iochaos("demo", "io-errno")
    assert sorted(obj["metadata"]["finalizers"]) == ["demo/etcd-0", "demo/etcd-1", "demo/etcd-2"]
    exp = obj["status"]["experiment"]
    assert obj["status"]["phase"] == "Normal" and exp["phase"] == "Running"
    assert exp["startTime"] == "2024-03-01T10:00:00Z"
    assert {r["name"] for r in exp["podRecords"]} == set(daemons)
    assert all(r["action"] == "errno" and r["podIP"] == "127.0.0.1" for r in exp["podRecords"])
    assert "ChaosInjected" in store.reasons()
    for d in daemons.values():
        assert read_errno(d) == errno.EIO  # the 0.9 SetFault(read, errno 5) reached the mount

    # level-triggered: a restarted sidecar has no faults; the next tick sets them again
    d0 = daemons["etcd-0"]
    d0.stop()
    d0.start()
    assert read_errno(d0) == 0 and not injected(d0)
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace="demo", name="io-errno"))
    assert injected(d0) and read_errno(d0) == errno.EIO
    assert "ChaosReinjected" in store.reasons()
    rec = {r["name"]: r for r in store.get_iochaos("demo", "io-errno")["status"]["experiment"]["podRecords"]}
    assert "re-injected" in rec["etcd-0"]["message"]

    # pause recovers and waits; removing the annotation resumes
    store.annotate("io-errno", "experiment.chaos-mesh.org/pause", "true")
    run(h.on_event(namespace="demo", name="io-errno"))
    obj = store.get_iochaos("demo", "io-errno")
    assert obj["status"]["experiment"]["phase"] == "Paused"
    assert obj["metadata"].get("finalizers") == []
    assert not any(injected(d) for d in daemons.values())
    assert read_errno(d0) == 0
    run(h.on_timer(namespace="demo", name="io-errno"))  # a tick while paused injects nothing
    assert not any(injected(d) for d in daemons.values())
    store.annotate("io-errno", "experiment.chaos-mesh.org/pause", None)
    run(h.on_event(namespace="demo", name="io-errno"))
    assert all(injected(d) for d in daemons.values())
    assert store.get_iochaos("demo", "io-errno")["status"]["experiment"]["phase"] == "Running"

    # deletion recovers every pod first, then the finalizers let the object go
    store.delete("io-errno")
    assert store.get_iochaos("demo", "io-errno") is not None  # held by the pod finalizers
    run(h.on_delete(namespace="demo", name="io-errno"))
    assert store.get_iochaos("demo", "io-errno") is None
    assert not any(injected(d) for d in daemons.values())
    assert all(read_errno(d) == 0 for d in daemons.values())
    assert store.reasons().count("ChaosRecovered") >= 2


def test_fixed_mode_hits_exactly_value_pods_with_setfaultall_delay(world) -> None:
    store, h, clock, daemons = world
    store.create("io-delay", {"action": "delay", "delay": "300ms", "mode": "fixed", "value": "2",
                              "layer": "fs", "selector": {"labelSelectors": {"app": "etcd"}}})
    run(h.on_event(namespace="demo", name="io-delay"))
    hit = [n for n, d in daemons.items() if injected(d)]
    assert len(hit) == 2
    obj = store.get_iochaos("demo", "io-delay")
    assert sorted(obj["metadata"]["finalizers"]) == sorted(f"demo/{n}" for n in hit)
    import time
    t = time.monotonic()
    os.stat(daemons[hit[0]].mountpoint / "data.txt")  # SetFaultAll: getattr is delayed too
    assert time.monotonic() - t >= 0.25
    store.delete("io-delay")
    run(h.on_delete(namespace="demo", name="io-delay"))
    assert not any(injected(d) for d in daemons.values())


def test_scheduled_injects_at_creation_recovers_after_duration_and_again_at_tick(world) -> None:
    store, h, clock, daemons = world
    store.create("io-cron", {**ERRNO_SPEC, "mode": "one", "duration": "30s",
                             "scheduler": {"cron": "@every 1m"}})
    run(h.on_event(namespace="demo", name="io-cron"))
    st = store.get_iochaos("demo", "io-cron")["status"]
    assert st["scheduler"] == {"nextStart": "2024-03-01T10:01:00Z",
                               "nextRecover": "2024-03-01T10:00:30Z"}
    assert st["experiment"]["phase"] == "Running"
    assert sum(injected(d) for d in daemons.values()) == 1

    clock.advance(31)
    run(h.on_event(namespace="demo", name="io-cron"))
    st = store.get_iochaos("demo", "io-cron")["status"]
    assert st["experiment"]["phase"] == "Waiting" and st["experiment"]["duration"] == "31s"
    assert st["experiment"]["endTime"] == "2024-03-01T10:00:31Z"
    assert not any(injected(d) for d in daemons.values())
    assert store.get_iochaos("demo", "io-cron")["metadata"]["finalizers"] == []

    clock.advance(20)  # 10:00:51, before the next start: nothing happens
    run(h.on_event(namespace="demo", name="io-cron"))
    assert not any(injected(d) for d in daemons.values())

    clock.advance(10)  # 10:01:01: the tick
    run(h.on_event(namespace="demo", name="io-cron"))
    st = store.get_iochaos("demo", "io-cron")["status"]
    assert st["experiment"]["phase"] == "Running"
    assert st["scheduler"]["nextStart"] == "2024-03-01T10:02:01Z"
    assert sum(injected(d) for d in daemons.values()) == 1
    store.delete("io-cron")
    run(h.on_delete(namespace="demo", name="io-cron"))
    assert store.get_iochaos("demo", "io-cron") is None
    assert not any(injected(d) for d in daemons.values())


def test_invalid_spec_is_reported_and_nothing_is_injected(world) -> None:
    store, h, clock, daemons = world
    store.create("bad", {**ERRNO_SPEC, "duration": "30s"})
    run(h.on_event(namespace="demo", name="bad"))
    obj = store.get_iochaos("demo", "bad")
    assert obj["status"]["phase"] == "Abnormal"
    assert obj["status"]["reason"] == "spec.duration: set without spec.scheduler (both or neither)"
    assert obj["status"]["experiment"]["phase"] == "Failed"
    assert store.events == [("Warning", "InvalidSpec", obj["status"]["reason"])]
    run(h.on_event(namespace="demo", name="bad"))
    assert len(store.events) == 1  # reported once, not on every look
    assert not obj["metadata"].get("finalizers") and not any(injected(d) for d in daemons.values())
    store.delete("bad")
    assert store.get_iochaos("demo", "bad") is None  # nothing held it


def test_spec_edit_while_running_reinjects_with_the_new_spec(world) -> None:
    store, h, clock, daemons = world
    store.create("edit", {**ERRNO_SPEC, "selector": {"pods": {"demo": ["etcd-1"]}}})
    run(h.on_event(namespace="demo", name="edit"))
    d1 = daemons["etcd-1"]
    assert read_errno(d1) == errno.EIO
    obj = store.chaos[("demo", "edit")]
    obj["spec"]["errno"] = "28"
    obj["metadata"]["generation"] = 2
    run(h.on_event(namespace="demo", name="edit"))
    assert read_errno(d1) == errno.ENOSPC
    assert store.get_iochaos("demo", "edit")["status"]["observedGeneration"] == 2


def test_unreachable_sidecar_is_reported_not_retried_forever(world) -> None:
    store, h, clock, daemons = world
    store.create("lost", {**ERRNO_SPEC, "selector": {"pods": {"demo": ["etcd-2"]}}})
    run(h.on_event(namespace="demo", name="lost"))
    d2 = daemons["etcd-2"]
    d2.stop()
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace="demo", name="lost"))
    rec = store.get_iochaos("demo", "lost")["status"]["experiment"]["podRecords"][0]
    assert rec["message"].startswith("sidecar unreachable")
    assert store.reasons().count("SidecarUnreachable") == 1
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace="demo", name="lost"))
    assert store.reasons().count("SidecarUnreachable") == 1  # one report per change
    # deletion does not hang on it: the faults died with the daemon
    store.delete("lost")
    run(h.on_delete(namespace="demo", name="lost"))
    assert store.get_iochaos("demo", "lost") is None
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


V1_SPEC = {"mode": "all", "layer": "fs", "selector": {"pods": {"demo": ["etcd-0", "etcd-1"]}},
           "chaosfs": {"rules": [
               {"name": "eio", "methods": ["read"], "glob": "data.txt", "errno": "EIO"},
               {"name": "rot", "methods": ["read"], "glob": "*.bin",
                "corrupt": {"mode": "zero", "length": 64}}]}}


def test_v1_rules_injected_seen_through_the_mount_and_only_they_recovered(world) -> None:
    store, h, clock, daemons = world
    for d in daemons.values():
        (d.original / "blob.bin").write_bytes(BLOB)
    d0, d1, d2 = daemons["etcd-0"], daemons["etcd-1"], daemons["etcd-2"]
    add_foreign_rule(d0)
    store.create("io-v1", copy.deepcopy(V1_SPEC))
    run(h.on_event(namespace="demo", name="io-v1"))

    obj = store.get_iochaos("demo", "io-v1")
    exp = obj["status"]["experiment"]
    assert exp["phase"] == "Running" and obj["status"]["phase"] == "Normal"
    assert sorted(obj["metadata"]["finalizers"]) == ["demo/etcd-0", "demo/etcd-1"]
    assert all(r["action"] == "chaosfs" for r in exp["podRecords"])
    (msg,) = [m for _, r, m in store.events if r == "ChaosInjected"]
    head, _, pods = msg.partition(": ")
    assert head == "2 chaosfs rule(s) set on 2 pod(s)"
    assert sorted(pods.split(", ")) == ["demo/etcd-0", "demo/etcd-1"]
    ours = {"iochaos/demo/io-v1/eio": "v1", "iochaos/demo/io-v1/rot": "v1"}
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
    run(h.on_timer(namespace="demo", name="io-v1"))
    assert rules_of(d1) == ours and read_bytes(d1, "data.txt") == errno.EIO
    (msg,) = [m for _, r, m in store.events if r == "ChaosReinjected"]
    assert msg == ("demo/etcd-1: the sidecar had lost iochaos/demo/io-v1/eio, "
                   "iochaos/demo/io-v1/rot; set again")
    run(h.on_timer(namespace="demo", name="io-v1"))  # nothing lost: nothing set again
    assert store.reasons().count("ChaosReinjected") == 1

    # deletion removes exactly the experiment's rules: the hand-made one stays
    store.delete("io-v1")
    run(h.on_delete(namespace="demo", name="io-v1"))
    assert store.get_iochaos("demo", "io-v1") is None
    assert rules_of(d0) == {"by-hand": "v1"} and rules_of(d1) == {}
    for d in (d0, d1):
        assert read_bytes(d, "data.txt") == b"hello\n" and read_bytes(d, "blob.bin") == BLOB


def test_v1_budgets_are_the_daemons_and_not_granted_twice(world) -> None:
    import time
    store, h, clock, daemons = world
    d0 = daemons["etcd-0"]
    (d0.original / "brief.txt").write_bytes(b"soon\n")
    store.create("io-budget", {**V1_SPEC, "selector": {"pods": {"demo": ["etcd-0"]}},
                               "chaosfs": {"rules": [
                                   {"name": "twice", "methods": ["read"], "glob": "data.txt",
                                    "errno": 28, "maxHits": 2},
                                   {"name": "brief", "methods": ["read"], "glob": "brief.txt",
                                    "errno": "EACCES", "ttl": "700ms"}]}})
    t0 = time.monotonic()
    run(h.on_event(namespace="demo", name="io-budget"))
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
    run(h.on_timer(namespace="demo", name="io-budget"))
    assert rules_of(d0) == {} and read_bytes(d0, "data.txt") == b"hello\n"
    assert "ChaosReinjected" not in store.reasons()
    assert store.get_iochaos("demo", "io-budget")["status"]["experiment"]["phase"] == "Running"
    store.delete("io-budget")
    run(h.on_delete(namespace="demo", name="io-budget"))
    assert store.get_iochaos("demo", "io-budget") is None


def test_spec_edit_between_0_9_fault_and_v1_rules_recovers_what_was_set(world) -> None:
    store, h, clock, daemons = world
    d1 = daemons["etcd-1"]
    store.create("switch", {**ERRNO_SPEC, "selector": {"pods": {"demo": ["etcd-1"]}}})
    run(h.on_event(namespace="demo", name="switch"))
    assert read_bytes(d1, "data.txt") == errno.EIO
    assert set(rules_of(d1).values()) == {"injure"}
    # 0.9 fault -> v1 rules: the 0.9 fault goes (RecoverAll, from the podRecord's action)
    obj = store.chaos[("demo", "switch")]
    obj["spec"] = {"mode": "all", "layer": "fs", "selector": {"pods": {"demo": ["etcd-1"]}},
                   "chaosfs": {"rules": [{"methods": ["read"], "path": "data", "errno": 28}]}}
    obj["metadata"]["generation"] = 2
    run(h.on_event(namespace="demo", name="switch"))
    assert rules_of(d1) == {"iochaos/demo/switch/0": "v1"}
    assert read_bytes(d1, "data.txt") == errno.ENOSPC
    # v1 rules -> 0.9 fault: the v1 rules go, and only they (not RecoverAll)
    add_foreign_rule(d1)
    obj = store.chaos[("demo", "switch")]
    obj["spec"] = {**ERRNO_SPEC, "errno": "13", "selector": {"pods": {"demo": ["etcd-1"]}}}
    obj["metadata"]["generation"] = 3
    run(h.on_event(namespace="demo", name="switch"))
    held = rules_of(d1)
    assert held.pop("by-hand") == "v1" and set(held.values()) == {"injure"}
    assert read_bytes(d1, "data.txt") == errno.EACCES
    store.delete("switch")
    run(h.on_delete(namespace="demo", name="switch"))
    assert rules_of(d1) == {}  # 0.9's RecoverAll, as 0.9 did: the whole table


def test_scheduled_v1_rules_get_a_fresh_budget_each_window(world) -> None:
    store, h, clock, daemons = world
    d2 = daemons["etcd-2"]
    store.create("io-v1-cron", {"mode": "all", "layer": "fs", "duration": "30s",
                                "scheduler": {"cron": "@every 1m"},
                                "selector": {"pods": {"demo": ["etcd-2"]}},
                                "chaosfs": {"rules": [{"name": "once", "methods": ["read"],
                                                       "glob": "data.txt", "errno": "EIO",
                                                       "maxHits": 1}]}})
    run(h.on_event(namespace="demo", name="io-v1-cron"))
    assert [read_bytes(d2, "data.txt") for _ in range(2)] == [errno.EIO, b"hello\n"]
    clock.advance(31)   # the window ends: recovered (nothing left to remove is fine)
    run(h.on_event(namespace="demo", name="io-v1-cron"))
    st = store.get_iochaos("demo", "io-v1-cron")["status"]
    assert st["experiment"]["phase"] == "Waiting" and rules_of(d2) == {}
    clock.advance(30)   # the next tick: the rule again, with its budget afresh
    run(h.on_event(namespace="demo", name="io-v1-cron"))
    assert rules_of(d2) == {"iochaos/demo/io-v1-cron/once": "v1"}
    assert [read_bytes(d2, "data.txt") for _ in range(2)] == [errno.EIO, b"hello\n"]
    store.delete("io-v1-cron")
    run(h.on_delete(namespace="demo", name="io-v1-cron"))
    assert store.get_iochaos("demo", "io-v1-cron") is None


# ------------------------------------------------------------------ spec.chaosfs.powerCut
def power_of(d):
    """The daemon's PowerLossStatus."""
    import grpc
    from chaosfs.proto import powerloss_pb2, powerloss_pb2_grpc
    with grpc.insecure_channel(d.addr) as ch:
        return powerloss_pb2_grpc.PowerLossStub(ch).Status(powerloss_pb2.StatusRequest(), timeout=5)


def power_spec(after: str) -> dict:
    return {"mode": "all", "layer": "fs", "selector": {"pods": {"demo": ["etcd-0", "etcd-1"]}},
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
    store, h, clock, daemons = world
    d0, d1, d2 = daemons["etcd-0"], daemons["etcd-1"], daemons["etcd-2"]
    store.create("io-pc", power_spec("1s"))
    run(h.on_event(namespace="demo", name="io-pc"))
    obj = store.get_iochaos("demo", "io-pc")
    assert sorted(obj["metadata"]["finalizers"]) == ["demo/etcd-0", "demo/etcd-1"]
    recs = obj["status"]["experiment"]["podRecords"]
    assert [r["powerCut"] for r in recs] == ["armed", "armed"]
    assert all(r["message"] == "power loss armed: the cut comes 1s after arming" for r in recs)
    assert power_of(d0).armed and power_of(d1).armed and not power_of(d2).armed
    (msg,) = [m for _, r, m in store.events if r == "ChaosInjected"]
    assert msg.startswith("power loss armed (cut in 1s) set on 2 pod(s)")

    m = d0.mountpoint
    write_durably(m / "kept.txt", b"synced\n")
    (m / "lost.txt").write_bytes(b"never synced\n")        # name and data never durable
    with open(m / "data.txt", "r+b") as f:                  # existed before arming
        f.write(b"HELLO")
    run(h.on_timer(namespace="demo", name="io-pc"))          # before its time: no cut
    assert power_of(d0).armed and "PowerCut" not in store.reasons()
    assert (m / "lost.txt").exists()

    time.sleep(1.1)
    run(h.on_timer(namespace="demo", name="io-pc"))
    assert sorted(os.listdir(m)) == ["data.txt", "kept.txt"]
    assert (m / "kept.txt").read_bytes() == b"synced\n"
    assert (m / "data.txt").read_bytes() == b"hello\n"
    for d in (d0, d1):
        st = power_of(d)
        assert not st.armed and st.totals.cuts == 1, st
    assert power_of(d2).totals.cuts == 0
    recs = {r["name"]: r for r in store.get_iochaos("demo", "io-pc")["status"]["experiment"]["podRecords"]}
    assert recs["etcd-0"]["powerCut"] not in ("", "armed")
    assert recs["etcd-0"]["message"].startswith("power cut after 1.")
    # lost.txt's 13 bytes and data.txt's 5 (lost.txt's name goes too)
    assert "2 file(s) rolled back, 18 unsynced byte(s) dropped" in recs["etcd-0"]["message"], \
        recs["etcd-0"]["message"]
    assert "1 directory entry undone" in recs["etcd-0"]["message"], recs["etcd-0"]["message"]
    assert "0 file(s) rolled back" in recs["etcd-1"]["message"]
    cuts = sorted(m_ for _, r, m_ in store.events if r == "PowerCut")
    assert len(cuts) == 2 and cuts[0].startswith("demo/etcd-0: power cut after")

    run(h.on_timer(namespace="demo", name="io-pc"))          # cut once, not again
    assert power_of(d0).totals.cuts == 1 and store.reasons().count("PowerCut") == 2
    store.delete("io-pc")
    run(h.on_delete(namespace="demo", name="io-pc"))
    assert store.get_iochaos("demo", "io-pc") is None
    assert power_of(d0).totals.cuts == 1 and not power_of(d0).armed


def test_power_cut_rearms_a_restarted_sidecar_and_deletion_before_the_cut_only_disarms(world) -> None:
    store, h, clock, daemons = world
    d0, d1 = daemons["etcd-0"], daemons["etcd-1"]
    store.create("io-pc", power_spec("1h"))
    run(h.on_event(namespace="demo", name="io-pc"))
    (d0.mountpoint / "unsynced.txt").write_bytes(b"x")
    d1.stop()
    d1.start()
    assert not power_of(d1).armed
    run(asyncio.sleep(0.1))
    run(h.on_timer(namespace="demo", name="io-pc"))
    assert power_of(d1).armed
    (msg,) = [m for _, r, m in store.events if r == "ChaosReinjected"]
    assert msg == "demo/etcd-1: the sidecar was no longer armed; power loss armed again"
    recs = {r["name"]: r for r in store.get_iochaos("demo", "io-pc")["status"]["experiment"]["podRecords"]}
    assert recs["etcd-1"]["message"].endswith("(armed again: the sidecar had lost it)")
    assert recs["etcd-1"]["powerCut"] == "armed"

    store.delete("io-pc")
    run(h.on_delete(namespace="demo", name="io-pc"))
    assert store.get_iochaos("demo", "io-pc") is None
    for d in (d0, d1):
        st = power_of(d)
        assert not st.armed and st.totals.cuts == 0
    assert (d0.mountpoint / "unsynced.txt").read_bytes() == b"x"  # disarmed, nothing lost
