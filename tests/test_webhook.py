"""The admission webhook over real HTTPS on loopback (certificates from trustme), with real
AdmissionReview bodies; and the ConfigMap watch's decision, debounce and swap logic."""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import http.client
import json
import os
import ssl
import threading
import time
import uuid
from pathlib import Path

import jsonpatch
import pytest
import trustme
import yaml
from kubernetes.client import V1ConfigMap, V1ObjectMeta

from injector.config import ConfigSet, ConfigStore, Settings, build_config_set
from injector.manifests import validate_object
from injector.watch import Debouncer, backoff_delays, event_action, load_config_dir
from injector.webhook import CertReloader, Webhook, WebhookOptions, WebhookServer

ROOT = Path(__file__).resolve().parent.parent
SEED_CM = yaml.safe_load((ROOT / "deploy" / "chaosfs-sidecar-template.yaml").read_text())
EXAMPLE_CFG = yaml.safe_load((ROOT / "deploy" / "examples" / "injection-config.yaml").read_text())
POD = yaml.safe_load((ROOT / "tests" / "data" / "injector" / "tikv-pod.yaml").read_text())


def bad_template_cm() -> dict:
    cm = copy.deepcopy(SEED_CM)
    cm["metadata"]["name"] = "broken-output"
    cm["data"]["data"] = cm["data"]["data"].replace("containerPort: 65533", "containerPort: high")
    return cm


SEED_ARGS = ("  ContainerName: tikv\n  DataPath: /var/lib/tikv/data\n  MountPath: /var/lib/tikv\n"
             "  VolumeName: tikv\n")


def seed_page_template_cm() -> dict:
    """The template as the seed page writes it: imagePullpolicy (0.9 read imagePullPolicy)."""
    cm = copy.deepcopy(SEED_CM)
    cm["metadata"]["name"] = "seed-page"
    cm["data"]["data"] = cm["data"]["data"].replace("imagePullPolicy", "imagePullpolicy")
    return cm


def configs() -> ConfigSet:
    extra = {
        "missing-arg.yaml": "name: missing-arg\ntemplate: chaosfs-sidecar\narguments: {}\n",
        "no-template.yaml": "name: no-template\ntemplate: nope\n",
        "selective.yaml": ("name: selective\ntemplate: chaosfs-sidecar\narguments:\n"
                           "  ContainerName: tikv\n  DataPath: /var/lib/tikv/data\n"
                           "  MountPath: /var/lib/tikv\n  VolumeName: tikv\n"
                           "selector:\n  labelSelectors:\n    app: pd\n"),
        "broken.yaml": ("name: broken\ntemplate: broken-output\narguments:\n"
                        "  ContainerName: tikv\n  DataPath: /d\n  MountPath: /var/lib/tikv\n"
                        "  VolumeName: tikv\n"),
        "by-pod.yaml": ("name: by-pod\ntemplate: chaosfs-sidecar\narguments:\n" + SEED_ARGS
                        + "selector:\n  pods:\n    tikv: [tikv-0]\n"),
        "on-nodes.yaml": ("name: on-nodes\ntemplate: chaosfs-sidecar\narguments:\n" + SEED_ARGS
                          + "selector:\n  nodes: [node-a]\n  nodeSelectors: {disk: ssd}\n"),
        "upper.yaml": "name: ChaosFS-Upper\ntemplate: chaosfs-sidecar\narguments:\n" + SEED_ARGS,
        "seed-page.yaml": ("name: seed-page\ntemplate: seed-page\narguments:\n"
                           "  ContainerName: tikv\n  DataPath: /var/lib/tikv/data\n"
                           "  MountPath: /var/lib/tikv\n  VolumeName: tikv\n"),
    }
    cfg2 = copy.deepcopy(EXAMPLE_CFG)
    cfg2["metadata"]["name"] = "more"
    cfg2["data"] = extra
    return build_config_set([SEED_CM, bad_template_cm(), seed_page_template_cm()],
                            [EXAMPLE_CFG, cfg2], "chaos-testing")


NAMESPACES = {"tikv": {}, "init-ns": {"admission-webhook.chaos-mesh.org/init-request":
                                      "chaosfs-tikv"}}


def review(pod: dict, namespace: str = "tikv", version: str = "v1", kind: str = "Pod",
           operation: str = "CREATE", uid: str | None = None) -> dict:
    return {
        "apiVersion": f"admission.k8s.io/{version}",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1",
                         "resource": "pods" if kind == "Pod" else kind.lower() + "s"},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "name": "", "namespace": namespace, "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def tikv_pod(namespace: str = "tikv", **annotations: str) -> dict:
    p = copy.deepcopy(POD)
    p["metadata"]["namespace"] = namespace
    p["metadata"]["annotations"].update(annotations)
    return p


class Client:
    def __init__(self, port: int, ca: trustme.CA, hostname: str = "localhost") -> None:
        self.port = port
        self.ctx = ssl.create_default_context()
        ca.configure_trust(self.ctx)
        self.hostname = hostname

    def connect(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=20)
        # verify the certificate against the name, while connecting to loopback
        sock = self.ctx.wrap_socket(
            __import__("socket").create_connection(("127.0.0.1", self.port), timeout=20),
            server_hostname=self.hostname)
        conn.sock = sock
        return conn

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, conn: http.client.HTTPSConnection | None = None
                ) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or self.connect()
        try:
            hdrs = {"Content-Type": "application/json"}
            hdrs.update(headers or {})
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()

    def admit(self, doc: dict, conn: http.client.HTTPSConnection | None = None) -> dict:
        status, body = self.request("POST", "/inject", json.dumps(doc).encode(), conn=conn)
        assert status == 200, body
        return json.loads(body)


@pytest.fixture()
def ca() -> trustme.CA:
    return trustme.CA()


def write_certs(ca: trustme.CA, directory: Path) -> tuple[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1", "chaos-injector.chaos-testing.svc")
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    return str(cert_file), str(key_file)


@pytest.fixture()
def server(ca: trustme.CA, tmp_path: Path):
    cert_file, key_file = write_certs(ca, tmp_path)
    store = ConfigStore()
    hook = Webhook(store, WebhookOptions(), NAMESPACES.get)
    srv = WebhookServer(("127.0.0.1", 0), hook, CertReloader(cert_file, key_file),
                        max_body=256 * 1024)
    srv.start()
    yield srv, Client(srv.port, ca), store
    srv.shutdown()
    srv.server_close()


def decode_patch(resp: dict) -> list[dict]:
    assert resp["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(resp["patch"]))


# --------------------------------------------------------------------------------------------


def test_readiness_follows_config_loading_and_injection_works(server) -> None:
    srv, client, store = server
    assert client.request("GET", "/healthz") == (200, b"ok\n")
    assert client.request("GET", "/readyz")[0] == 503
    # before configs are loaded a request is still answered: allowed, with a warning
    doc = review(tikv_pod())
    out = client.admit(doc)["response"]
    assert out["allowed"] is True and "patch" not in out
    assert "not loaded yet" in out["warnings"][0]

    store.swap(configs())
    assert client.request("GET", "/readyz") == (200, b"ok\n")
    answer = client.admit(doc)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    out = answer["response"]
    assert out["uid"] == doc["request"]["uid"] and out["allowed"] is True
    assert "warnings" not in out
    patched = jsonpatch.apply_patch(doc["request"]["object"], decode_patch(out))
    validate_object(patched, "1.29")
    assert [c["name"] for c in patched["spec"]["containers"]] == ["chaosfs", "tikv", "log-shipper"]
    assert patched["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert patched["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/status"] == \
        "injected"

    # the injected pod comes back (reinvocation, a retried create): no second injection
    again = client.admit(review(patched))["response"]
    assert "patch" not in again and "warnings" not in again


def test_v1beta1_and_legacy_prefix(server) -> None:
    _, client, store = server
    store.swap(configs())
    p = tikv_pod()
    del p["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"]
    p["metadata"]["annotations"]["admission-webhook.pingcap.com/request"] = "chaosfs-tikv"
    answer = client.admit(review(p, version="v1beta1"))
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"
    ops = decode_patch(answer["response"])
    assert any(op["path"] == "/metadata/annotations/admission-webhook.chaos-mesh.org~1status"
               for op in ops)


def test_namespace_init_request(server) -> None:
    _, client, store = server
    store.swap(configs())
    p = tikv_pod("init-ns")
    del p["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"]
    out = client.admit(review(p, "init-ns"))["response"]
    # the config lives in namespace tikv, not init-ns: found nowhere, said so
    assert "'chaosfs-tikv' not found in namespace init-ns" in out["warnings"][0]
    srv_ns = dict(NAMESPACES)
    srv_ns["tikv"] = {"admission-webhook.pingcap.com/init-request": "chaosfs-tikv"}
    hook = Webhook(store, WebhookOptions(), srv_ns.get)
    p2 = tikv_pod()
    del p2["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"]
    code, doc, decision = hook.review(json.dumps(review(p2)).encode())
    assert code == 200 and decision.result == "injected" and doc["response"]["patch"]


@pytest.mark.parametrize("pod_ns,annotations,options,reason", [
    ("kube-system", {}, WebhookOptions(), "never injected"),
    ("kube-public", {}, WebhookOptions(), "never injected"),
    ("tikv", {"admission-webhook.chaos-mesh.org/status": "injected"}, WebhookOptions(),
     "already injected"),
    ("tikv", {}, WebhookOptions(allowed_namespaces=("prod-.*",)), "not allowed"),
    ("tikv", {}, WebhookOptions(ignored_namespaces=("ti.*",)), "is ignored"),
])
def test_decision_order_skips(pod_ns, annotations, options, reason) -> None:
    store = ConfigStore(configs())
    hook = Webhook(store, options, NAMESPACES.get)
    code, doc, decision = hook.review(json.dumps(review(tikv_pod(pod_ns, **annotations),
                                                        pod_ns)).encode())
    assert code == 200 and decision.result == "skipped" and reason in decision.reason
    assert doc["response"] == {"uid": doc["response"]["uid"], "allowed": True}


def test_no_request_no_injection_and_other_kinds(server) -> None:
    _, client, store = server
    store.swap(configs())
    p = tikv_pod()
    del p["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"]
    out = client.admit(review(p))["response"]
    assert out == {"uid": out["uid"], "allowed": True}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}
    out = client.admit(review(svc, kind="Service"))["response"]
    assert out["allowed"] is True and "patch" not in out
    out = client.admit(review(tikv_pod(), operation="UPDATE"))["response"]
    assert out["allowed"] is True and "patch" not in out


@pytest.mark.parametrize("config,needle", [
    ("missing-arg", 'map has no entry for key'),
    ("no-template", "template 'nope'"),
    ("absent", "'absent' not found in namespace tikv"),
    ("selective", "does not match the selector"),
    ("broken", "invalid field spec.containers[0].ports[0].containerPort"),
])
def test_failures_allow_the_pod_unpatched_with_a_warning(server, config, needle) -> None:
    srv, client, store = server
    store.swap(configs())
    p = tikv_pod(**{"admission-webhook.chaos-mesh.org/request": config})
    out = client.admit(review(p))["response"]
    assert out["allowed"] is True and "patch" not in out
    assert len(out["warnings"]) == 1 and needle in out["warnings"][0], out["warnings"]
    status, metrics = client.request("GET", "/metrics")
    assert status == 200
    if config != "selective":
        assert f'chaos_injector_injection_failures_total{{config="tikv/{config}"'.encode() \
            in metrics


def test_seed_page_template_is_injected_with_admission_warnings(server) -> None:
    _, client, store = server
    store.swap(configs())
    doc = review(tikv_pod(**{"admission-webhook.chaos-mesh.org/request": "seed-page"}))
    out = client.admit(doc)["response"]
    patched = jsonpatch.apply_patch(doc["request"]["object"], decode_patch(out))
    validate_object(patched, "1.29")
    assert patched["spec"]["initContainers"][1]["imagePullPolicy"] == "Always"
    assert patched["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert out["warnings"] == [
        f"chaos-injector: template seed-page: {c}[0].imagePullpolicy read as imagePullPolicy "
        "(keys match case-insensitively, as in Chaos Mesh 0.9)"
        for c in ("initContainers", "containers")]


def test_pod_volume_clashing_with_the_template_is_allowed_unpatched() -> None:
    hook = Webhook(ConfigStore(configs()), WebhookOptions(), NAMESPACES.get)
    p = tikv_pod()
    p["spec"]["volumes"].append({"name": "fuse", "hostPath": {"path": "/mnt/fuse"}})
    code, doc, decision = hook.review(json.dumps(review(p)).encode())
    out = doc["response"]
    assert code == 200 and out["allowed"] is True and "patch" not in out
    assert decision.result == "error"
    assert out["warnings"] == [
        "chaos-injector: not injected: Pod tikv-0: the pod already has a volume named 'fuse' "
        "(hostPath), different from the template's (emptyDir); rename one of them"]


def admit(hook: Webhook, pod: dict, namespace: str = "tikv"):
    code, doc, decision = hook.review(json.dumps(review(pod, namespace)).encode())
    assert code == 200 and doc["response"]["allowed"] is True
    return decision, doc["response"].get("warnings", [])


def test_injection_decisions_as_0_9_inject_required() -> None:
    namespaces = {"tikv": {"admission-webhook.chaos-mesh.org/request-tikv-0": "By-Pod",
                           "admission-webhook.chaos-mesh.org/init-request": "chaosfs-tikv"}}
    hook = Webhook(ConfigStore(configs()), WebhookOptions(), namespaces.get)
    # the name asked for is lower-cased; the status compares case-insensitively
    decision, _ = admit(hook, tikv_pod(**{"admission-webhook.chaos-mesh.org/request":
                                          "ChaosFS-TiKV"}))
    assert (decision.result, decision.config) == ("injected", "tikv/chaosfs-tikv")
    decision, _ = admit(hook, tikv_pod(**{"admission-webhook.chaos-mesh.org/status": "Injected"}))
    assert (decision.result, decision.reason) == ("skipped", "already injected")
    # no pod request: the namespace's request for this pod by name, before its init-request
    p = tikv_pod()
    del p["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"]
    decision, _ = admit(hook, p)
    assert (decision.result, decision.config) == ("injected", "tikv/by-pod")
    p["metadata"]["name"] = "tikv-1"
    decision, _ = admit(hook, p)
    assert (decision.result, decision.config) == ("injected", "tikv/chaosfs-tikv")
    # selector.pods is honoured: tikv-1 is not listed in by-pod's
    p["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"] = "by-pod"
    decision, warnings = admit(hook, p)
    assert decision.result == "skipped" and "does not match the selector" in warnings[-1]
    # node keys are ignored (nothing is scheduled at admission), with a warning, not an
    # invalid config
    p["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"] = "on-nodes"
    decision, warnings = admit(hook, p)
    assert decision.result == "injected"
    assert [w.split(" ignored")[0] for w in warnings] == [
        "chaos-injector: configmap tikv/more key on-nodes.yaml: selector.nodes",
        "chaos-injector: configmap tikv/more key on-nodes.yaml: selector.nodeSelectors"]
    # a config whose name has upper-case letters cannot be asked for, and the warning says so
    p["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"] = "ChaosFS-Upper"
    decision, warnings = admit(hook, p)
    assert decision.result == "error" and "'ChaosFS-Upper' can never be requested" in warnings[0]
    # kube-system and kube-public are never injected, whatever they ask for
    for ns in ("kube-system", "kube-public"):
        decision, _ = admit(hook, tikv_pod(ns), ns)
        assert decision.result == "skipped" and "never injected" in decision.reason


def test_namespace_lookup_error_is_a_warning() -> None:
    def broken(ns: str):
        raise ConnectionError("API server unreachable")

    hook = Webhook(ConfigStore(configs()), WebhookOptions(), broken)
    p = tikv_pod()
    del p["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"]
    code, doc, _ = hook.review(json.dumps(review(p)).encode())
    assert code == 200 and doc["response"]["allowed"] is True
    assert "API server unreachable" in doc["response"]["warnings"][0]


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "body is not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(), "expected an AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
     "no request.uid"),
    (b"\xff\xfe", "body is not JSON"),
])
def test_bad_bodies_get_a_clear_400(server, body, needle) -> None:
    _, client, _ = server
    status, out = client.request("POST", "/inject", body)
    assert status == 400 and needle in json.loads(out)["error"]


def test_garbage_object_inside_a_valid_review_is_allowed(server) -> None:
    _, client, store = server
    store.swap(configs())
    for obj in ("a string", {"metadata": "not a map", "spec": 3},
                {"metadata": {"annotations": {"admission-webhook.chaos-mesh.org/request":
                                              "chaosfs-tikv"}}, "spec": {"containers": "x"}}):
        out = client.admit(review(obj))["response"]
        assert out["allowed"] is True and "patch" not in out and out["warnings"], obj


def test_body_limit_and_http_errors(server) -> None:
    srv, client, store = server
    status, body = client.request("POST", "/inject", b"x" * (256 * 1024 + 1))
    assert status == 413 and b"exceeds the limit" in body
    assert client.request("GET", "/nope")[0] == 404
    assert client.request("POST", "/elsewhere", b"{}")[0] == 404
    status, _ = client.request("POST", "/inject", b"{}", headers={"Content-Type": "text/html"})
    assert status == 415
    # the server is still fine afterwards
    assert client.request("GET", "/healthz") == (200, b"ok\n")


def test_concurrent_requests_on_many_connections(server) -> None:
    _, client, store = server
    store.swap(configs())

    def one(i: int) -> tuple[str, str, int]:
        doc = review(tikv_pod(), uid=f"uid-{i}")
        conn = client.connect()
        try:
            results = []
            for _ in range(3):  # keep-alive: several reviews on one connection
                out = client.admit(doc, conn)["response"]
                results.append(len(decode_patch(out)))
            assert len(set(results)) == 1
            return doc["request"]["uid"], out["uid"], results[0]
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(48)))
    assert all(sent == got for sent, got, _ in answers)
    assert len({n for _, _, n in answers}) == 1 and answers[0][2] > 0
    _, metrics = client.request("GET", "/metrics")
    assert b'chaos_injector_injections_total{config="tikv/chaosfs-tikv"} 144.0' in metrics
    assert b'chaos_injector_admission_requests_total{result="injected"} 144.0' in metrics
    assert b"chaos_injector_configs{kind=\"template\"} 3.0" in metrics


def test_certificate_rotation(tmp_path: Path) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    cert_file, key_file = write_certs(old_ca, tmp_path)
    reloader = CertReloader(cert_file, key_file)
    srv = WebhookServer(("127.0.0.1", 0), Webhook(ConfigStore(configs())), reloader)
    srv.start()
    try:
        old_client, new_client = Client(srv.port, old_ca), Client(srv.port, new_ca)
        kept = old_client.connect()
        assert old_client.request("GET", "/healthz", conn=kept)[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            new_client.request("GET", "/healthz")

        # rotate the way a Secret volume does: new files, renamed into place
        staging = tmp_path / "new"
        staging.mkdir()
        new_cert, new_key = write_certs(new_ca, staging)
        os.replace(new_key, key_file)
        os.replace(new_cert, cert_file)
        assert new_client.request("GET", "/healthz")[0] == 200
        assert reloader.loads == 2
        with pytest.raises(ssl.SSLCertVerificationError):
            old_client.request("GET", "/healthz")
        # a connection opened before the rotation keeps working
        assert old_client.request("GET", "/readyz", conn=kept)[0] == 200
        kept.close()

        # a half-written rotation keeps the current certificate
        Path(cert_file).write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
        assert new_client.request("GET", "/healthz")[0] == 200
        assert reloader.loads == 2
    finally:
        srv.shutdown()
        srv.server_close()


def test_plain_http_and_tls_garbage_do_not_hurt(server) -> None:
    import socket

    srv, client, _ = server
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            s.recv(100)
        except OSError:
            pass
    assert client.request("GET", "/healthz") == (200, b"ok\n")


# --------------------------------------------------------------------------------------------
# ConfigMap watch: decisions on real ConfigMap objects, debounce, swap


def cm_obj(name: str, ns: str, labels: dict, data: dict | None = None) -> V1ConfigMap:
    return V1ConfigMap(metadata=V1ObjectMeta(name=name, namespace=ns, labels=labels,
                                             resource_version="7"), data=data or {})


TPL = {"app.kubernetes.io/component": "template"}


def test_event_actions() -> None:
    tpl = cm_obj("chaosfs-sidecar", "chaos-testing", TPL)
    assert event_action({"type": "ADDED", "object": tpl}, TPL, "chaos-testing").kind == "reload"
    assert event_action({"type": "MODIFIED", "object": tpl}, TPL, "chaos-testing").kind == \
        "reload"
    other_ns = cm_obj("chaosfs-sidecar", "default", TPL)
    assert event_action({"type": "ADDED", "object": other_ns}, TPL, "chaos-testing").kind == \
        "ignore"
    relabelled = cm_obj("chaosfs-sidecar", "chaos-testing", {"x": "y"})
    assert event_action({"type": "MODIFIED", "object": relabelled}, TPL).kind == "ignore"
    # a deletion always matters (the object may have been in the set)
    assert event_action({"type": "DELETED", "object": relabelled}, TPL).kind == "reload"
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"},
            "raw_object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    assert event_action(gone, TPL).kind == "relist"
    forbidden = {"type": "ERROR", "object": {"kind": "Status", "code": 403}}
    assert event_action(forbidden, TPL).kind == "backoff"
    assert event_action({"type": "BOOKMARK", "object": {"metadata": {}}}, TPL).kind == "ignore"


def test_debounce_coalesces_a_burst_into_one_reload() -> None:
    fired: list[float] = []
    deb = Debouncer(lambda: fired.append(time.monotonic()), delay=0.3)
    try:
        start = time.monotonic()
        for _ in range(6):
            deb.notify()
            last = time.monotonic()
            time.sleep(0.05)
        time.sleep(0.15)
        assert fired == [], "fired before the quiet period"
        deadline = time.monotonic() + 3
        while not fired and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(fired) == 1 and fired[0] - last >= 0.28 and fired[0] - start >= 0.5
        deb.notify()
        deadline = time.monotonic() + 3
        while len(fired) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(fired) == 2
    finally:
        deb.stop()


def test_watch_events_to_swapped_config_sets() -> None:
    """A real event source feeds event_action -> Debouncer -> rebuild -> swap, while readers
    keep reading: every reader sees a whole set, never a mix."""
    store = ConfigStore()
    cluster: dict[str, V1ConfigMap] = {}
    lock = threading.Lock()

    def relist() -> None:
        with lock:
            items = list(cluster.values())
        tpls = [c for c in items if (c.metadata.labels or {}) == TPL]
        cfgs = [c for c in items if (c.metadata.labels or {}) != TPL]
        store.swap(build_config_set(tpls, cfgs, "chaos-testing"))

    deb = Debouncer(relist, delay=0.2)
    stop = threading.Event()
    seen: list[tuple[int, int]] = []

    def reader() -> None:
        while not stop.is_set():
            cs = store.current
            seen.append((len(cs.templates), len(cs.configs)))

    t = threading.Thread(target=reader)
    t.start()
    try:
        seed_text = SEED_CM["data"]["data"]
        events = []
        for i in range(5):
            tpl = cm_obj(f"tpl-{i}", "chaos-testing", TPL, {"data": seed_text})
            cfg = cm_obj(f"cfg-{i}", "tikv", {"app.kubernetes.io/component": "webhook"},
                         {"c": f"name: c{i}\ntemplate: tpl-{i}\n"})
            events += [{"type": "ADDED", "object": tpl}, {"type": "ADDED", "object": cfg}]
        for ev in events:
            with lock:
                cluster[ev["object"].metadata.name] = ev["object"]
            if event_action(ev, TPL if ev["object"].metadata.name.startswith("tpl") else
                            {"app.kubernetes.io/component": "webhook"}).kind == "reload":
                deb.notify()
        deadline = time.monotonic() + 5
        while store.generation < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.generation == 1, "a burst of 10 events must cost one re-list"
        assert len(store.current.templates) == 5 and len(store.current.configs) == 5
        assert store.current.problems == ()
    finally:
        stop.set()
        t.join()
        deb.stop()
    assert set(seen) <= {(0, 0), (5, 5)}


def test_backoff_grows_and_is_capped() -> None:
    gen = backoff_delays(1.0, 8.0)
    delays = [next(gen) for _ in range(8)]
    assert 0.5 <= delays[0] <= 1.0 and 4.0 <= delays[-1] <= 8.0
    assert all(d <= 8.0 for d in delays)


def test_config_dir_loading(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(yaml.safe_dump(SEED_CM))
    (tmp_path / "configs.yaml").write_text(yaml.safe_dump_all([EXAMPLE_CFG, {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tikv"}}]))
    (tmp_path / "broken.yaml").write_text("kind: [")
    (tmp_path / "notes.txt").write_text("ignored")
    settings = Settings.resolve("chaos-testing", None, None, environ={})
    cs = load_config_dir(str(tmp_path), settings)
    assert list(cs.templates) == ["chaosfs-sidecar"]
    assert list(cs.configs) == [("tikv", "chaosfs-tikv")]
    assert len(cs.problems) == 1 and "broken.yaml: invalid YAML" in cs.problems[0].message
