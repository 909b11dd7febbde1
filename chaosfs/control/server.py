"""The gRPC control plane: injure.Injure (Chaos Mesh 0.9) and chaosfs.v1.Faults on one port,
plus grpc.health.v1 and server reflection.

grpcio runs handlers on its own thread pool. They only validate, build a new rule table and
swap it in (microseconds under the GIL), then drop kernel caches from that same thread, so
the FUSE loop never waits on the control plane.
"""
from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import time
import socket
from concurrent import futures
from typing import Any, Callable, Optional

import grpc
from google.protobuf import empty_pb2, message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chaosfs.faults import rules as faults
from chaosfs.faults.engine import FaultEngine
from chaosfs.faults.rules import Rule, RuleError
from chaosfs.faults.methods import ALL_METHODS, COMPAT_METHODS, ENOSYS_STICKY, METHOD_ID
from chaosfs.control.rule_pb import set_actions
from chaosfs.proto import faults_pb2, faults_pb2_grpc, injure_pb2, injure_pb2_grpc

log = logging.getLogger("chaosfs.server")

N_BUCKETS = 32
_CORRUPT_MODE = {faults_pb2.RANDOM: "random", faults_pb2.ZERO: "zero", faults_pb2.BITFLIP: "bitflip"}


def _invalid(context: grpc.ServicerContext, e: Exception) -> None:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))


class InjureService(injure_pb2_grpc.InjureServicer):
    def __init__(self, engine: FaultEngine) -> None:
        self.engine = engine
        self._warned_unknown: set[str] = set()
        self._warned_enosys: set[str] = set()

    def Methods(self, request: Any, context: Any) -> Any:
        return injure_pb2.Response(methods=list(COMPAT_METHODS))

    def Injected(self, request: Any, context: Any) -> Any:
        return injure_pb2.InjectedResponse(injected=self.engine.injected())

    def RecoverAll(self, request: Any, context: Any) -> Any:
        n = self.engine.clear()
        log.info("RecoverAll: %d rule(s) removed", n)
        return empty_pb2.Empty()

    def RecoverMethod(self, request: Any, context: Any) -> Any:
        known = self._known(request.methods, "RecoverMethod")
        n = self.engine.remove([f"injure:{m}" for m in known], missing_ok=True)
        log.info("RecoverMethod %s: %d rule(s) removed", known, n)
        return empty_pb2.Empty()

    def _known(self, methods: Any, rpc: str) -> list[str]:
        """0.9 answered OK to names it did not know and acted on the rest; so do we, saying
        once per name what was left out (its controller does not retry an error status)."""
        names = list(dict.fromkeys(methods))
        unknown = [m for m in names if m not in COMPAT_METHODS]
        new = [m for m in unknown if m not in self._warned_unknown]
        if new:
            self._warned_unknown.update(new)
            log.warning("%s: unknown method(s) %s ignored (known: injure.Injure/Methods)",
                        rpc, ", ".join(repr(m) for m in new))
        return [m for m in names if m in COMPAT_METHODS]

    def _set(self, methods: list[str], request: Any, context: Any, rpc: str) -> Any:
        try:
            if request.errno > faults.MAX_ERRNO:
                raise RuleError("errno", f"{request.errno} is outside 1..{faults.MAX_ERRNO} (the "
                                "kernel refuses a reply error of 512 or more and the app's call "
                                "would hang)")
            faults.compile_path(request.path)  # also when no method is left to carry it
            rules = [faults.compat_rule(m, errno=request.errno, random_errno=request.random,
                                        pct=request.pct, path=request.path, delay_us=request.delay)
                     for m in methods]
            self.engine.put_many(rules)
        except RuleError as e:
            _invalid(context, e)
        if request.errno == errno.ENOSYS:
            swapped = [m for m in methods if METHOD_ID[m] in ENOSYS_STICKY and m not in self._warned_enosys]
            if swapped:
                self._warned_enosys.update(swapped)
                log.warning("%s: ENOSYS on %s is sent as EOPNOTSUPP: the kernel would switch "
                            "these operations off for the whole mount", rpc, ", ".join(swapped))
        if methods and all(METHOD_ID[m] in self.engine.never_fire for m in methods):
            log.warning("%s: the kernel never sends %s to chaosfs (it handles them itself): "
                        "this fault will not fire", rpc, ", ".join(methods))
        log.info("%s %s errno=%d random=%s pct=%d path=%r delay=%dus", rpc, methods,
                 request.errno, request.random, request.pct, request.path, request.delay)
        return empty_pb2.Empty()

    def SetFault(self, request: Any, context: Any) -> Any:
        methods = self._known(request.methods, "SetFault")
        if not methods:
            # 0.9: OK and nothing set. Still checked, so a bad request is reported all the same.
            self._set([], request, context, "SetFault")
            log.warning("SetFault with no known method: nothing injected")
            return empty_pb2.Empty()
        return self._set(methods, request, context, "SetFault")

    def SetFaultAll(self, request: Any, context: Any) -> Any:
        return self._set(list(COMPAT_METHODS), request, context, "SetFaultAll")


def rule_from_pb(pb: Any, engine: FaultEngine) -> Rule:
    corrupt = None
    if pb.HasField("corrupt"):
        c = pb.corrupt
        corrupt = faults.Corrupt(mode=_CORRUPT_MODE.get(c.mode, f"#{c.mode}"),
                                 length=c.length or 1, occurrences=c.occurrences or 1)
    return Rule(
        id=pb.id,  # empty: FaultEngine.add assigns a free one
        methods=faults.method_ids(pb.methods),
        path=pb.path,
        path_kind={faults_pb2.REGEX: "regex", faults_pb2.GLOB: "glob"}.get(pb.path_kind, f"#{pb.path_kind}"),
        probability=pb.probability if pb.HasField("probability") else 100.0,
        errno=pb.errno.code, random_errno=pb.errno.random,
        delay_us=pb.delay.fixed_us, jitter_us=pb.delay.jitter_us,
        corrupt=corrupt,
        short=pb.short.fraction if pb.HasField("short") else 0.0,
        torn=pb.torn.sector if pb.HasField("torn") else 0,
        ttl=pb.ttl_seconds, max_hits=pb.max_hits, origin="v1",
    )


def rule_to_pb(r: Rule, now: float, hits: int) -> Any:
    pb = faults_pb2.Rule(
        id=r.id, methods=r.describe_methods(), path=r.path,
        path_kind=faults_pb2.GLOB if r.path_kind == "glob" else faults_pb2.REGEX,
        probability=r.probability, ttl_seconds=r.ttl, max_hits=r.max_hits,
        hits=hits, origin=r.origin,
        expires_in=max(0.0, r.expires_at - now) if r.expires_at else 0.0,
    )
    return set_actions(pb, r)



def percentile_us(hist: list[int], q: float) -> float:
    """Upper bound (µs) of the histogram bucket holding quantile q."""
    total = sum(hist)
    if not total:
        return 0.0
    need, seen = q * total, 0
    for b, n in enumerate(hist):
        seen += n
        if seen >= need:
            return float(1 << b)
    return float(1 << (len(hist) - 1))


class FaultsService(faults_pb2_grpc.FaultsServicer):
    def __init__(self, engine: FaultEngine, power: Any = None) -> None:
        self.power = power
        self.engine = engine

    def AddRule(self, request: Any, context: Any) -> Any:
        try:
            rid = self.engine.add(rule_from_pb(request.rule, self.engine))
        except RuleError as e:
            code = grpc.StatusCode.ALREADY_EXISTS if "already exists" in str(e) else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(e))
        log.info("AddRule %s", rid)
        return faults_pb2.AddRuleResponse(id=rid, bypassed_paths=self.engine.bypassed(rid))

    def RemoveRule(self, request: Any, context: Any) -> Any:
        if not request.ids:
            _invalid(context, RuleError("ids", "empty"))
        try:
            n = self.engine.remove(list(request.ids))
        except KeyError as e:
            context.abort(grpc.StatusCode.NOT_FOUND, f"ids: no rule {e.args[0]!r}")
        return faults_pb2.RemoveRuleResponse(removed=n)

    def ListRules(self, request: Any, context: Any) -> Any:
        now = time.monotonic()
        return faults_pb2.ListRulesResponse(rules=[rule_to_pb(r, now, self.engine.hits(r)) for r in self.engine.rules()])

    def Clear(self, request: Any, context: Any) -> Any:
        return faults_pb2.ClearResponse(removed=self.engine.clear())

    def Stats(self, request: Any, context: Any) -> Any:
        resp = faults_pb2.StatsResponse(
            rules=[faults_pb2.RuleStats(id=r.id, hits=self.engine.hits(r)) for r in self.engine.rules()])
        for mid, (count, errors, injected, hist) in sorted(self.engine.gate.stats().items()):
            if mid >= len(ALL_METHODS):
                continue
            resp.methods.append(faults_pb2.MethodStats(
                method=ALL_METHODS[mid], count=count, errors=errors, histogram=hist,
                p50_us=percentile_us(hist, 0.50), p99_us=percentile_us(hist, 0.99),
                injected_errors=injected, backing_errors=errors - injected))
        if self.power is not None:
            from chaosfs.control.powerloss import status_pb
            resp.power_loss.CopyFrom(status_pb(self.power.status()))
        if request.reset:
            self.engine.gate.reset_stats()
        return resp


class TokenAuth(grpc.ServerInterceptor):
    """Bearer token on every RPC except health checks (kubelet probes carry no token)."""

    def __init__(self, token: str) -> None:
        self.token = token.encode()

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or bad bearer token")
        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)
        self._deny_bidi = grpc.stream_stream_rpc_method_handler(lambda it, ctx: deny(None, ctx))

    def intercept_service(self, continuation: Callable, details: Any) -> Any:
        if details.method.startswith("/grpc.health.v1.Health/"):
            return continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                if hmac.compare_digest(value[7:].strip().encode(), self.token):
                    return continuation(details)
        handler = continuation(details)
        if handler is not None and handler.request_streaming and handler.response_streaming:
            return self._deny_bidi
        if handler is not None and handler.response_streaming:
            return self._deny_stream
        return self._deny


def check_bindable(host: str, port: int) -> None:
    """Bind a plain socket first: grpc's own failure is a logged C++ line plus a vague
    "Failed to bind"; this gives the errno ("Address already in use") in one line."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does
            s.bind((host, port))
    except socket.gaierror as e:
        raise OSError(f"cannot resolve {host!r}: {e.strerror}") from None
    except OSError as e:
        raise OSError(f"cannot listen on port {port}: {e.strerror}") from None


def _decoding(method: Callable, request_type: Any) -> Callable:
    def handler(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            request = request_type.FromString(raw)
        except DecodeError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"request: not a valid {request_type.DESCRIPTOR.full_name} message ({e})")
        return method(request, context)
    return handler


def add_service(server: grpc.Server, servicer: Any, file_descriptor: Any, name: str) -> None:
    """What the generated add_*Servicer_to_server does, except that a body that is not the
    request message is the caller's error (INVALID_ARGUMENT), not grpc's INTERNAL."""
    service = file_descriptor.services_by_name[name]
    handlers = {}
    for m in service.methods:
        handlers[m.name] = grpc.unary_unary_rpc_method_handler(
            _decoding(getattr(servicer, m.name), message_factory.GetMessageClass(m.input_type)),
            request_deserializer=None, response_serializer=lambda msg: msg.SerializeToString())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ControlPlane:
    """Owns the grpc.Server; `start` binds (raising on a busy port) before we mount."""

    def __init__(self, engine: FaultEngine, host: str, port: int, *, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, tls_client_ca: Optional[str] = None,
                 token_file: Optional[str] = None, workers: int = 4, power: Any = None) -> None:
        self.engine = engine
        interceptors = []
        if token_file:
            with open(token_file) as f:
                token = f.read().strip()
            if not token:
                raise ValueError(f"-token-file {token_file} is empty")
            interceptors.append(TokenAuth(token))
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                                  interceptors=interceptors,
                                  options=[("grpc.so_reuseport", 0)])
        add_service(self.server, InjureService(engine), injure_pb2.DESCRIPTOR, "Injure")
        add_service(self.server, FaultsService(engine, power), faults_pb2.DESCRIPTOR, "Faults")
        services = ["injure.Injure", "chaosfs.v1.Faults"]
        if power is not None:
            from chaosfs.control.powerloss import PowerLossService
            from chaosfs.proto import powerloss_pb2
            add_service(self.server, PowerLossService(power), powerloss_pb2.DESCRIPTOR, "PowerLoss")
            services.append("chaosfs.v1.PowerLoss")
        self.services = services
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        check_bindable(host, port)
        try:
            if tls_cert:
                with open(tls_key, "rb") as f:
                    key = f.read()
                with open(tls_cert, "rb") as f:
                    cert = f.read()
                ca = None
                if tls_client_ca:
                    with open(tls_client_ca, "rb") as f:
                        ca = f.read()
                creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                                    require_client_auth=ca is not None)
                self.port = self.server.add_secure_port(bind, creds)
            else:
                self.port = self.server.add_insecure_port(bind)
        except RuntimeError as e:
            raise OSError(f"cannot listen on {bind}: {e}") from None
        if not self.port:
            raise OSError(f"cannot listen on {bind}: address in use or not available")
        if not tls_cert and not token_file and not _is_loopback(host):
            log.warning("gRPC control plane on %s has no TLS and no token: anyone who can reach "
                        "this port can inject faults (see -tls-cert, -token-file)", bind)
        self.bind = bind

    def _set_health(self, status: Any) -> None:
        self.health.set("", status)
        for svc in self.services:
            self.health.set(svc, status)

    def start(self) -> None:
        self.server.start()
        log.info("gRPC control plane listening on %s (port %d)", self.bind, self.port)

    def serving(self) -> None:
        self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = 1.0) -> None:
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait(grace + 1)
