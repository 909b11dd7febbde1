"""Admission webhooks: AdmissionReview (admission.k8s.io/v1 and v1beta1) in, a response out.

- ``/inject`` (mutating): pods in, JSONPatch out. The webhook must never stand between a user
  and their pod: whatever goes wrong after the request has been understood, the pod is
  allowed unpatched, with a warning in the response and a failure counted in the metrics.
- ``/validate-iochaos`` (validating): IoChaos objects checked by the controller's own spec
  rules (:mod:`controller.admission`), refused with the field named. Served here rather than
  by the controller because this server already has what an admission endpoint needs (TLS
  with certificate reload, the Service and caBundle that gen-certs.sh wires, /metrics, a
  readiness probe) and the check is a pure function of the request: the controller stays a
  client of the API server with no listening TLS port and no Service.

On both paths only a body that is not an AdmissionReview at all gets an HTTP error (there is
no uid to answer to).
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from controller.admission import Verdict, decide
from injector import pipeline
from injector.config import ConfigError, ConfigStore, annotation
from injector.inject import InjectOptions, is_injected
from injector.manifests import DEFAULT_KUBE_VERSION

log = logging.getLogger("chaos-injector.webhook")

ADMISSION_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
ALWAYS_SKIPPED_NAMESPACES = ("kube-system", "kube-public")
DEFAULT_MAX_BODY = 6 * 1024 * 1024  # an AdmissionReview carries the object (<= ~1.5 MiB) twice
MUTATE_PATHS = ("/inject", "/mutate", "/inject-v1-pod")
VALIDATE_IOCHAOS_PATH = "/validate-iochaos"

NamespaceAnnotations = Callable[[str], "Mapping[str, str] | None"]


class BadReview(ValueError):
    pass


@dataclass
class WebhookOptions:
    inject: InjectOptions = field(default_factory=InjectOptions)
    allowed_namespaces: tuple[str, ...] = ()  # regexes; empty = all
    ignored_namespaces: tuple[str, ...] = ()  # regexes
    kube_version: str = DEFAULT_KUBE_VERSION
    validate: bool = True

    @property
    def pipeline(self) -> pipeline.PipelineOptions:
        return pipeline.PipelineOptions(self.inject, self.kube_version, self.validate)

    def __post_init__(self) -> None:
        for pattern in self.allowed_namespaces + self.ignored_namespaces:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"invalid namespace regex {pattern!r}: {exc}") from None


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("chaos_injector_admission_requests",
                                "AdmissionReview requests by outcome", ["result"], registry=r)
        self.injections = Counter("chaos_injector_injections",
                                  "Pods injected, per injection config", ["config"], registry=r)
        self.failures = Counter("chaos_injector_injection_failures",
                                "Injections that failed (pod allowed unpatched), per config",
                                ["config", "reason"], registry=r)
        self.latency = Histogram("chaos_injector_admission_seconds",
                                 "Time to answer an AdmissionReview", registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.config_problems = Gauge("chaos_injector_config_problems",
                                     "Invalid template/injection-config entries in the current set",
                                     registry=r)
        self.configs = Gauge("chaos_injector_configs", "Loaded items by kind", ["kind"], registry=r)
        self.reloads = Counter("chaos_injector_config_reloads", "ConfigMap re-lists by result",
                               ["result"], registry=r)
        self.iochaos_reviews = Counter("chaos_injector_iochaos_reviews",
                                       "IoChaos validation requests by outcome (allowed, denied, "
                                       "skipped, bad_request, error)", ["result"], registry=r)

    def observe_config_set(self, store: ConfigStore) -> None:
        cs = store.current
        self.config_problems.set(len(cs.problems))
        self.configs.labels("template").set(len(cs.templates))
        self.configs.labels("injection_config").set(len(cs.configs))


@dataclass
class Decision:
    """What happened to one request (returned alongside the response, for logs and tests)."""

    result: str  # injected | skipped | error
    reason: str = ""
    config: str = ""
    patch: list[dict] | None = None
    warnings: list[str] = field(default_factory=list)


class Webhook:
    """The admission logic, independent of HTTP."""

    def __init__(self, store: ConfigStore, options: WebhookOptions | None = None,
                 namespace_annotations: NamespaceAnnotations | None = None,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.options = options or WebhookOptions()
        self.namespace_annotations = namespace_annotations or (lambda ns: None)
        self.metrics = metrics or Metrics()
        self._allowed = [re.compile(p) for p in self.options.allowed_namespaces]
        self._ignored = [re.compile(p) for p in self.options.ignored_namespaces]

    # -- HTTP-independent entry point -----------------------------------------------------------

    def review(self, body: bytes) -> tuple[int, dict, Decision]:
        """Answer one AdmissionReview body: (HTTP status, JSON document, decision)."""
        start = time.monotonic()
        try:
            api_version, request = self._parse(body)
        except BadReview as exc:
            self.metrics.requests.labels("bad_request").inc()
            self.metrics.failures.labels("", "bad_request").inc()
            return 400, {"error": str(exc)}, Decision("error", str(exc))
        uid = request["uid"]
        try:
            decision = self._decide(request)
        except Exception as exc:  # noqa: BLE001 - the pod must get through whatever happens
            log.exception("internal error on request %s", uid)
            decision = Decision("error", f"internal error: {type(exc).__name__}: {exc}")
            decision.warnings.append(f"chaos-injector: not injected: {decision.reason}")
            self.metrics.failures.labels("", "internal").inc()
        response: dict[str, Any] = {"uid": uid, "allowed": True}
        if decision.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(
                json.dumps(decision.patch, separators=(",", ":")).encode()).decode()
        if decision.warnings:
            response["warnings"] = decision.warnings
        self.metrics.requests.labels(decision.result).inc()
        self.metrics.latency.observe(time.monotonic() - start)
        log.info("uid=%s result=%s config=%s %s", uid, decision.result, decision.config or "-",
                 decision.reason)
        return 200, {"apiVersion": api_version, "kind": "AdmissionReview",
                     "response": response}, decision

    def validate_iochaos(self, body: bytes) -> tuple[int, dict, str]:
        """Answer one IoChaos validation review: (HTTP status, JSON document, result)."""
        try:
            api_version, request = self._parse(body)
        except BadReview as exc:
            self.metrics.iochaos_reviews.labels("bad_request").inc()
            return 400, {"error": str(exc)}, "bad_request"
        uid = request["uid"]
        try:
            verdict = decide(request)
        except Exception as exc:  # noqa: BLE001 - a bug of ours must not block an apply
            log.exception("internal error validating IoChaos request %s", uid)
            verdict = Verdict(True, "error", warnings=[
                f"chaos-injector: IoChaos not validated (internal error: "
                f"{type(exc).__name__}); the controller checks it again"])
        self.metrics.iochaos_reviews.labels(verdict.result).inc()
        log.info("uid=%s IoChaos %s/%s %s %s %s", uid, request.get("namespace") or "-",
                 request.get("name") or "-", request.get("operation"), verdict.result,
                 verdict.message)
        return 200, {"apiVersion": api_version, "kind": "AdmissionReview",
                     "response": verdict.response(uid)}, verdict.result

    @staticmethod
    def _parse(body: bytes) -> tuple[str, dict]:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # deep nesting too
            raise BadReview(f"body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise BadReview("body is not a JSON object")
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if kind != "AdmissionReview" or api_version not in ADMISSION_VERSIONS:
            raise BadReview(f"expected an AdmissionReview of {' or '.join(ADMISSION_VERSIONS)}, "
                            f"got kind={kind!r} apiVersion={api_version!r}")
        request = doc.get("request")
        if not isinstance(request, dict) or not isinstance(request.get("uid"), str) \
                or not request["uid"]:
            raise BadReview("AdmissionReview has no request.uid")
        return api_version, request

    # -- the decision order of Chaos Mesh 0.9, with errors turned into warnings --------------------

    def _decide(self, request: dict) -> Decision:
        kind = (request.get("kind") or {}).get("kind")
        resource = (request.get("resource") or {}).get("resource")
        if kind != "Pod" or resource not in (None, "pods") or request.get("subResource"):
            return Decision("skipped", f"not a pod ({kind}/{resource})")
        if request.get("operation", "CREATE") != "CREATE":
            return Decision("skipped", f"operation {request.get('operation')}")
        pod = request.get("object")
        if not isinstance(pod, dict):
            return self._fail("", "bad_request", "request.object is not a Pod")
        meta = pod.get("metadata") or {}
        namespace = request.get("namespace") or meta.get("namespace") or "default"
        if namespace in ALWAYS_SKIPPED_NAMESPACES:
            return Decision("skipped", f"namespace {namespace} is never injected")
        if self._allowed and not any(p.fullmatch(namespace) for p in self._allowed):
            return Decision("skipped", f"namespace {namespace} is not allowed")
        if any(p.fullmatch(namespace) for p in self._ignored):
            return Decision("skipped", f"namespace {namespace} is ignored")
        if is_injected(pod):
            return Decision("skipped", "already injected")
        # 0.9's injectRequired: the pod's request, then the namespace's request for this pod
        # by name, then the namespace's init-request; the name asked for is lower-cased
        config_name = annotation(meta.get("annotations"), "request")
        if not config_name:
            try:
                ns_ann = self.namespace_annotations(namespace)
            except Exception as exc:  # noqa: BLE001 - an API hiccup must not block the pod
                return self._fail("", "namespace_lookup",
                                  f"cannot read namespace {namespace}: {exc}")
            pod_name = meta.get("name") or request.get("name")
            # a generateName pod has no name yet, so no per-pod annotation can name it
            if pod_name:
                config_name = annotation(ns_ann, f"request-{pod_name}")
            config_name = config_name or annotation(ns_ann, "init-request")
        if not config_name:
            return Decision("skipped", "no injection requested")
        config_name = str(config_name).lower()
        ref = f"{namespace}/{config_name}"
        configs = self.store.current
        cfg = configs.lookup(namespace, config_name)
        if cfg is None:
            why = "" if self.store.loaded else " (configs not loaded yet)"
            cased = [c.name for (ns, n), c in configs.configs.items()
                     if ns == namespace and n.lower() == config_name]
            if cased:
                why = (f" (requests are lower-cased, as in Chaos Mesh 0.9, so config "
                       f"{cased[0]!r} can never be requested: rename it)")
            return self._fail(ref, "config_not_found",
                              f"injection config {config_name!r} not found in namespace "
                              f"{namespace}{why}")
        try:
            plan = pipeline.plan_for(cfg, configs)
            obj = dict(pod)
            obj.setdefault("apiVersion", "v1")
            obj.setdefault("kind", "Pod")
            # The patch is computed against the object as received: kind/apiVersion added for
            # validation are in both, so not in the patch.
            out = pipeline.run(obj, plan, self.options.pipeline, namespace)
        except pipeline.PipelineError as exc:
            return self._fail(ref, exc.reason, str(exc), exc.warnings)
        for w in out.warnings:
            log.warning("%s: %s", ref, w)
        warnings = [f"chaos-injector: {w}" for w in out.warnings]
        if not out.selected:
            return Decision("skipped", out.reason, ref,
                            warnings=warnings + [f"chaos-injector: not injected: {out.reason}"])
        if not out.injected:
            return Decision("skipped", out.reason, ref, warnings=warnings)
        self.metrics.injections.labels(ref).inc()
        return Decision("injected", "", ref, out.patch, warnings)

    def _fail(self, config: str, reason: str, message: str,
              warnings: tuple[str, ...] = ()) -> Decision:
        self.metrics.failures.labels(config, reason).inc()
        log.warning("not injected (%s): %s", reason, message)
        return Decision("error", message, config,
                        warnings=[f"chaos-injector: {w}" for w in warnings]
                        + [f"chaos-injector: not injected: {message}"])


# ---------------------------------------------------------------------------------------------
# TLS with certificates reloaded when they change on disk


class CertReloader:
    """An SSLContext rebuilt whenever the cert or key file changes (Secret rotation)."""

    def __init__(self, cert_file: str, key_file: str, min_interval: float = 0.0) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._checked = 0.0
        self._signature = self._stat()
        self._context = self._load()  # fails loudly at start: no certs, no server
        self.loads = 1

    def _stat(self) -> tuple:
        sig = []
        for path in (self.cert_file, self.key_file):
            st = os.stat(path)
            sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < self.min_interval:
            return self._context
        with self._lock:
            self._checked = now
            try:
                sig = self._stat()
                if sig != self._signature:
                    ctx = self._load()
                    self._context, self._signature = ctx, sig
                    self.loads += 1
                    log.info("reloaded serving certificate from %s", self.cert_file)
            except (OSError, ssl.SSLError) as exc:
                # half-written files during a rotation: keep serving the old pair, retry later
                log.warning("keeping the previous certificate: %s", exc)
        return self._context


# ---------------------------------------------------------------------------------------------
# HTTP server


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chaos-injector"
    timeout = 30  # idle keep-alive connections must not pin threads forever
    server: "WebhookServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, json.dumps(doc).encode())

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/readyz":
            ready = self.server.webhook.store.loaded
            self._send(200 if ready else 503, b"ok\n" if ready else b"configs not loaded\n",
                       "text/plain")
        elif path == "/metrics":
            self.server.webhook.metrics.observe_config_set(self.server.webhook.store)
            self._send(200, generate_latest(self.server.webhook.metrics.registry),
                       CONTENT_TYPE_LATEST)
        else:
            self._json(404, {"error": f"no such path {path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length_text is None:
            self.close_connection = True
            self._json(411, {"error": "Content-Length required"})
            return
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._json(400, {"error": f"bad Content-Length {length_text!r}"})
            return
        if length > self.server.max_body:
            # Discard (not store) a moderately oversized body so the client can read our answer;
            # anything bigger is not read at all and the connection is dropped.
            self.close_connection = True
            if length <= 8 * self.server.max_body:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            self.server.webhook.metrics.failures.labels("", "too_large").inc()
            self._json(413, {"error": f"body of {length} bytes exceeds the limit of "
                                      f"{self.server.max_body}"})
            return
        body = self.rfile.read(length)
        if path not in MUTATE_PATHS and path != VALIDATE_IOCHAOS_PATH:
            self._json(404, {"error": f"no such path {path}; use {MUTATE_PATHS[0]} or "
                                      f"{VALIDATE_IOCHAOS_PATH}"})
            return
        if self.headers.get_content_type() not in ("application/json", "text/plain"):
            self._json(415, {"error": "Content-Type must be application/json"})
            return
        if path == VALIDATE_IOCHAOS_PATH:
            code, doc, _ = self.server.webhook.validate_iochaos(body)
        else:
            code, doc, _ = self.server.webhook.review(body)
        self._json(code, doc)


class WebhookServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of API-server calls (a Deployment scaled
    # up) overflowed it, and dropped SYNs cost the client seconds of retransmits.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], webhook: Webhook, certs: CertReloader,
                 max_body: int = DEFAULT_MAX_BODY) -> None:
        self.webhook = webhook
        self.certs = certs
        self.max_body = max_body
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # Wrap per connection with the current context so a rotated certificate applies to the
        # next connection; the handshake runs in the handler thread, not the accept loop.
        ctx = self.certs.context()
        return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # TLS handshake failures, resets, timeouts: the client's problem, never ours
        log.debug("connection from %s failed", client_address, exc_info=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, args=(0.1,), name="webhook-https",
                                  daemon=True)
        thread.start()
        return thread
