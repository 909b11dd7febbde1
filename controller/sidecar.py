"""Talking to one pod's chaosfs sidecar with 0.9's ``injure.Injure`` protocol.

- :func:`build_request`: 0.9's ``genChaosfsRequest``: ``pct`` from percent, ``path``,
  ``methods``; delay/mixed set ``delay`` in µs; errno/mixed set ``random`` unless an errno is
  given. :func:`set_rpc_name`: ``SetFault`` when methods are listed, else ``SetFaultAll``.
- :func:`sidecar_addr`: where to dial. ``spec.addr`` (``:PORT``) wins, as in 0.9; when it is
  empty 0.9 dialled ``:65534`` although its own documented template listens on ``:65533``, so
  the example experiment could not work. We read the port from the pod instead: the chaosfs
  container's ``-addr`` flag, else its single containerPort, else chaosfs's default 65534.
- :class:`Sidecar`: a short-lived client. Connection errors are retried every 2 s up to a
  deadline (0.9: 2 minutes); any other status fails at once, as 0.9 did.
- spec.chaosfs (controller/extension.py) goes through ``chaosfs.v1.Faults`` instead: each rule
  is added with an id of the experiment's own (``iochaos/<ns>/<name>/<rule>``), so recovery
  removes exactly those ids and nothing another experiment, ``chaosfs-ctl`` or a 0.9 client
  set (0.9's RecoverAll clears the whole table, which is why 0.9 experiments keep it).
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from dataclasses import dataclass
from typing import Any, Mapping

import grpc
from google.protobuf import empty_pb2

from chaosfs.control.rule_pb import set_actions
from chaosfs.proto import (faults_pb2, faults_pb2_grpc, injure_pb2, injure_pb2_grpc,
                           powerloss_pb2, powerloss_pb2_grpc)
from controller.extension import PowerCutSpec, RuleSpec, with_names
from controller.spec import IoChaosSpec

CHAOSFS_DEFAULT_PORT = 65534
RETRY_INTERVAL = 2.0
RPC_TIMEOUT = 10.0


class SidecarError(RuntimeError):
    """The sidecar could not be reached or refused the request (one line)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


def rule_pb(rule_id: str, r: RuleSpec) -> faults_pb2.Rule:
    """The chaosfs.v1 AddRule rule for one spec.chaosfs rule."""
    pb = faults_pb2.Rule(id=rule_id, methods=list(r.methods), path=r.path,
                         path_kind=faults_pb2.GLOB if r.glob else faults_pb2.REGEX,
                         probability=r.probability, ttl_seconds=r.ttl_seconds,
                         max_hits=r.max_hits)
    return set_actions(pb, r)


def build_request(spec: IoChaosSpec) -> injure_pb2.Request:
    req = injure_pb2.Request(pct=spec.percent, path=spec.path, methods=list(spec.methods))
    if spec.action in ("delay", "mixed"):
        req.delay = spec.delay_us
    if spec.action in ("errno", "mixed"):
        if spec.errno is None:
            req.random = True
        else:
            req.errno = spec.errno
    return req


def set_rpc_name(spec: IoChaosSpec) -> str:
    return "SetFault" if spec.methods else "SetFaultAll"


def _flag_value(argv: list[str], name: str) -> str | None:
    """A Go-style flag's value (``-f=v``, ``--f=v``, ``-f v``); Go stops at ``--`` or the
    first non-flag argument, so do we; the last occurrence wins, as in Go."""
    found = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--" or not a.startswith("-") or a == "-":
            break
        key, eq, val = a.lstrip("-").partition("=")
        if key == name:
            if eq:
                found = val
            elif i + 1 < len(argv):
                found = argv[i + 1]
                i += 1
        i += 1
    return found


def _port_of_addr(addr: str) -> int | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    n = int(port)
    return n if 0 < n < 65536 else None


def _argv(container: Mapping[str, Any]) -> list[str]:
    argv = [str(x) for x in (container.get("command") or []) + (container.get("args") or [])]
    # `sh -c "exec chaosfs -addr=..."`: look inside the script too
    if len(argv) >= 3 and argv[0].rsplit("/", 1)[-1] in ("sh", "bash") and argv[1] == "-c":
        try:
            argv = shlex.split(argv[2])
        except ValueError:
            pass
    return argv


def _chaosfs_argv(argv: list[str]) -> list[str] | None:
    for i, a in enumerate(argv):
        if a.rsplit("/", 1)[-1] == "chaosfs":
            return argv[i + 1:]
    return None


def sidecar_port(pod: Mapping[str, Any]) -> tuple[int, str] | None:
    """The chaosfs sidecar's gRPC port and how it was found, or None if the pod has none."""
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    for c in containers:
        argv = _argv(c)
        flags = _chaosfs_argv(argv)
        if flags is None and c.get("name") == "chaosfs":
            flags = argv[1:] if argv else []
        if flags is None:
            continue
        addr = _flag_value(flags, "addr")
        if addr is not None:
            port = _port_of_addr(addr)
            if port:
                return port, f"container {c.get('name')} -addr={addr}"
        ports = [p.get("containerPort") for p in (c.get("ports") or []) if p.get("containerPort")]
        if len(ports) == 1:
            return int(ports[0]), f"container {c.get('name')} containerPort"
        return CHAOSFS_DEFAULT_PORT, f"container {c.get('name')} (chaosfs default port)"
    return None


def sidecar_addr(pod: Mapping[str, Any], spec_addr: str) -> str:
    """``host:port`` to dial for this pod; raises SidecarError when there is nothing to dial."""
    meta = pod.get("metadata") or {}
    ip = (pod.get("status") or {}).get("podIP") or ""
    if not ip:
        raise SidecarError(f"pod {meta.get('namespace')}/{meta.get('name')} has no IP yet")
    if spec_addr:
        port = int(spec_addr[1:])
    else:
        found = sidecar_port(pod)
        if found is None:
            raise SidecarError(f"pod {meta.get('namespace')}/{meta.get('name')} has no chaosfs "
                               "container (set spec.addr to dial a port anyway)")
        port = found[0]
    try:
        if ipaddress.ip_address(ip).version == 6:
            return f"[{ip}]:{port}"
    except ValueError:
        pass
    return f"{ip}:{port}"


@dataclass
class Sidecar:
    addr: str
    dial_timeout: float = 120.0   # how long connection errors are retried (0.9: 2 min)
    rpc_timeout: float = RPC_TIMEOUT

    def _call(self, name: str, request: Any, stub_class: Any = injure_pb2_grpc.InjureStub,
              timeout: float | None = None) -> Any:
        deadline = time.monotonic() + self.dial_timeout
        while True:
            with grpc.insecure_channel(self.addr) as ch:
                stub = stub_class(ch)
                try:
                    return getattr(stub, name)(request, timeout=timeout or self.rpc_timeout)
                except grpc.RpcError as exc:
                    code = exc.code()
                    detail = (exc.details() or "").splitlines()[0:1]
                    msg = f"{name} to {self.addr}: {code.name}" + (f": {detail[0]}" if detail else "")
                    if code == grpc.StatusCode.UNIMPLEMENTED and stub_class is not \
                            injure_pb2_grpc.InjureStub:
                        msg += " (spec.chaosfs needs a chaosfs sidecar with chaosfs.v1)"
                    if code != grpc.StatusCode.UNAVAILABLE:
                        raise SidecarError(msg, code) from None
                    if time.monotonic() + RETRY_INTERVAL > deadline:
                        raise SidecarError(msg, code) from None
            time.sleep(RETRY_INTERVAL)

    def _v1(self, name: str, request: Any) -> Any:
        return self._call(name, request, faults_pb2_grpc.FaultsStub)

    # ---- 0.9's fault (injure.Injure)
    def set_fault(self, spec: IoChaosSpec) -> None:
        self._call(set_rpc_name(spec), build_request(spec))

    def recover_all(self) -> None:
        self._call("RecoverAll", empty_pb2.Empty())

    def injected(self) -> bool:
        return bool(self._call("Injected", empty_pb2.Empty()).injected)

    # ---- spec.chaosfs (chaosfs.v1.Faults), rules by id
    def rule_ids(self, prefix: str) -> set[str]:
        """Ids of the rules the sidecar holds under an experiment's prefix."""
        rules = self._v1("ListRules", faults_pb2.ListRulesRequest()).rules
        return {r.id for r in rules if r.id.startswith(prefix)}

    def add_rules(self, rules: list[tuple[str, RuleSpec]]) -> None:
        """AddRule each; all or nothing (as 0.9's one SetFault was): on a refusal the ones
        already added are taken back before the error is raised."""
        added: list[str] = []
        try:
            for rule_id, rule in rules:
                self._v1("AddRule", faults_pb2.AddRuleRequest(rule=rule_pb(rule_id, rule)))
                added.append(rule_id)
        except SidecarError:
            if added:
                try:
                    self._v1("RemoveRule", faults_pb2.RemoveRuleRequest(ids=added))
                except SidecarError:
                    pass  # a budget ran out meanwhile (NOT_FOUND) or the sidecar went away
            raise

    def remove_rules(self, prefix: str) -> int:
        """Remove every rule under the prefix; the count removed. RemoveRule is all or
        nothing and a rule may expire (ttl, maxHits) between ListRules and it, so a NOT_FOUND
        lists again."""
        for _ in range(5):
            ids = self.rule_ids(prefix)
            if not ids:
                return 0
            try:
                return self._v1("RemoveRule", faults_pb2.RemoveRuleRequest(
                    ids=sorted(ids))).removed
            except SidecarError as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    raise
        raise SidecarError(f"RemoveRule to {self.addr}: rules under {prefix} kept changing")

    # ---- spec.chaosfs.powerCut (chaosfs.v1.PowerLoss)
    def _power(self, name: str, request: Any, timeout: float | None = None) -> Any:
        return self._call(name, request, powerloss_pb2_grpc.PowerLossStub, timeout)

    def power_status(self) -> Any:
        return self._power("Status", powerloss_pb2.StatusRequest())

    def arm(self, pc: PowerCutSpec) -> bool:
        """Arm the sidecar's power-loss model; False if it was armed already (it keeps what
        it tracked: a tick inside a running window, or a controller restart)."""
        try:
            self._power("Arm", powerloss_pb2.ArmRequest(
                max_undo_bytes=pc.max_undo,
                model=powerloss_pb2.DurabilityModel.Value(pc.model.upper())))
            return True
        except SidecarError as exc:
            if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
                return False
            raise

    def cut(self, pc: PowerCutSpec) -> Any:
        """Cut the power (the sidecar rolls back what was never durable), then disarm; the
        CutResult. The call lasts the rollback plus ``hold``."""
        req = powerloss_pb2.CutRequest(keep_probability=pc.keep_probability,
                                       torn=bool(pc.torn_sector), sector=pc.torn_sector or 512,
                                       block=pc.block, hold_seconds=pc.hold_us / 1e6)
        if pc.seed is not None:
            req.seed = pc.seed
        result = self._power("Cut", req, timeout=self.rpc_timeout + pc.hold_us / 1e6 + 60).result
        self.disarm()
        return result

    def disarm(self) -> bool:
        return bool(self._power("Disarm", powerloss_pb2.DisarmRequest()).was_armed)

    # ---- what the engine asks, whichever the kind
    def inject(self, spec: IoChaosSpec, prefix: str) -> None:
        """Set the experiment's faults. Its v1 rules are replaced, not kept: a new window or a
        resume starts their ttl and maxHits budgets afresh, as 0.9's SetFault replaced."""
        if not spec.v1:
            self.set_fault(spec)
            return
        if spec.power_cut is not None:
            self.arm(spec.power_cut)
        self.remove_rules(prefix)
        try:
            self.add_rules(with_names(spec.rules, prefix))
        except SidecarError:
            if spec.power_cut is not None:
                self.disarm()  # all or nothing
            raise

    def restore(self, spec: IoChaosSpec, prefix: str) -> list[str]:
        """Set again what the sidecar lost (a restart, a RecoverAll or Clear by someone else):
        what was set, empty if it held everything. A v1 rule with a ttl or maxHits is not set
        again: the daemon removing it is its budget running out, which a restart cannot be
        told from, and the budget should not be granted twice."""
        if not spec.v1:
            if self.injected():
                return []
            self.set_fault(spec)
            return ["the 0.9 fault"]
        held = self.rule_ids(prefix)
        lost = [(i, r) for i, r in with_names(spec.rules, prefix)
                if i not in held and not r.budgeted]
        self.add_rules(lost)
        return [i for i, _ in lost]

    def recover(self, v1: bool, prefix: str, power: bool = False) -> None:
        """Take the experiment's faults away: its own v1 rules, or 0.9's RecoverAll, and
        its power-loss tracking (without a cut). A sidecar without chaosfs.v1 (0.9's own)
        cannot hold v1 rules nor be armed: nothing to remove there."""
        if not v1:
            self.recover_all()
            return
        try:
            self.remove_rules(prefix)
            if power:
                self.disarm()
        except SidecarError as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
