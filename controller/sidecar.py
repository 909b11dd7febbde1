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
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from dataclasses import dataclass
from typing import Any, Mapping

import grpc
from google.protobuf import empty_pb2

from chaosfs.proto import injure_pb2, injure_pb2_grpc
from controller.spec import IoChaosSpec

CHAOSFS_DEFAULT_PORT = 65534
RETRY_INTERVAL = 2.0
RPC_TIMEOUT = 10.0


class SidecarError(RuntimeError):
    """The sidecar could not be reached or refused the request (one line)."""


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

    def _call(self, name: str, request: Any) -> Any:
        deadline = time.monotonic() + self.dial_timeout
        while True:
            with grpc.insecure_channel(self.addr) as ch:
                stub = injure_pb2_grpc.InjureStub(ch)
                try:
                    return getattr(stub, name)(request, timeout=self.rpc_timeout)
                except grpc.RpcError as exc:
                    code = exc.code()
                    detail = (exc.details() or "").splitlines()[0:1]
                    msg = f"{name} to {self.addr}: {code.name}" + (f": {detail[0]}" if detail else "")
                    if code != grpc.StatusCode.UNAVAILABLE:
                        raise SidecarError(msg) from None
                    if time.monotonic() + RETRY_INTERVAL > deadline:
                        raise SidecarError(msg) from None
            time.sleep(RETRY_INTERVAL)

    def set_fault(self, spec: IoChaosSpec) -> None:
        self._call(set_rpc_name(spec), build_request(spec))

    def recover_all(self) -> None:
        self._call("RecoverAll", empty_pb2.Empty())

    def injected(self) -> bool:
        return bool(self._call("Injected", empty_pb2.Empty()).injected)
