"""deploy/: every manifest valid against the Kubernetes schema, least privilege, and
gen-certs.sh making a certificate the webhook serves and the caBundle verifies."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import yaml

from injector.config import ConfigStore, SidecarTemplate, build_config_set
from injector.inject import inject, parse_sidecar_config
from injector.manifests import iter_objects, load_stream, validate_object
from injector.webhook import VALIDATE_IOCHAOS_PATH, CertReloader, Webhook, WebhookServer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def objects(path: Path) -> list[dict]:
    return [o for d in load_stream(path.read_text(), str(path)).docs for o in iter_objects(d)]


def all_objects(examples: bool = True) -> list[dict]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name != "kustomization.yaml" and (examples or "examples" not in path.parts):
            out.extend(objects(path))
    return out


def by_kind(kind: str, examples: bool = True) -> list[dict]:
    return [o for o in all_objects(examples) if o["kind"] == kind]


@pytest.mark.parametrize("version", ["1.25", "1.29", "1.33"])
def test_every_manifest_is_schema_valid(version: str) -> None:
    objs = all_objects()
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
            "Service", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
            "ConfigMap", "CustomResourceDefinition"} <= kinds
    for obj in objs:
        validate_object(obj, version)


def test_kustomization_lists_every_base_file() -> None:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


# Exactly these rights and no more, per ServiceAccount: (apiGroup, resource) -> verbs.
# The injector only reads ConfigMaps (templates, injection configs) and Namespaces (the
# init-request annotation); the controller reads pods and nodes (selection, sidecar
# address), writes Events, and edits IoChaos (finalizers, kopf's annotations) and its status.
RIGHTS = {
    "chaos-injector": {("", "configmaps"): {"get", "list", "watch"},
                       ("", "namespaces"): {"get", "list", "watch"}},
    "chaosfs-controller": {("", "pods"): {"get", "list"}, ("", "nodes"): {"get", "list"},
                           ("", "events"): {"create"},
                           ("chaos-mesh.org", "iochaos"): {"get", "list", "watch", "patch"},
                           ("chaos-mesh.org", "iochaos/status"): {"patch"}},
}


def granted(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                assert "*" not in (g, r) and "*" not in rule["verbs"], rule
                out.setdefault((g, r), set()).update(rule["verbs"])
    return out


def test_rbac_is_least_privilege_per_service_account() -> None:
    assert by_kind("Role") == [] and by_kind("RoleBinding") == []
    roles = {r["metadata"]["name"]: r for r in by_kind("ClusterRole")}
    bindings = by_kind("ClusterRoleBinding")
    sas = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in by_kind("ServiceAccount")}
    assert {name for _, name in sas} == set(RIGHTS) and len(sas) == len(RIGHTS)
    assert len(bindings) == len(RIGHTS)
    seen = set()
    for b in bindings:
        (subject,) = b["subjects"]
        assert subject["kind"] == "ServiceAccount"
        assert (subject["namespace"], subject["name"]) in sas
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": b["roleRef"]["name"]}
        role = roles[b["roleRef"]["name"]]
        assert granted(role) == RIGHTS[subject["name"]], subject["name"]
        seen.add(subject["name"])
    assert seen == set(RIGHTS) and set(roles) == set(RIGHTS)


def test_each_deployment_runs_as_its_own_service_account() -> None:
    # (examples/etcd's Deployment is the app under test, not ours)
    deps = {d["metadata"]["name"]: d for d in by_kind("Deployment", examples=False)}
    assert set(deps) == {"chaos-injector", "chaosfs-controller"}
    for name, dep in deps.items():
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == name


def test_controller_deployment_is_one_non_root_replica_with_metrics() -> None:
    (dep,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "chaosfs-controller"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["command"] == ["/opt/chaosfs/bin/chaosfs-controller"] and c["args"][0] == "run"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert f"--metrics-addr=:{ports['metrics']}" in c["args"]
    assert f"--health-addr=:{ports['health']}" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == ports["metrics"]
    # the injector's image carries the controller (the full venv)
    (inj,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "chaos-injector"]
    assert c["image"] == inj["spec"]["template"]["spec"]["containers"][0]["image"]


def test_sidecar_template_serves_metrics_on_its_named_port() -> None:
    (tpl_cm,) = objects(DEPLOY / "chaosfs-sidecar-template.yaml")
    cs = build_config_set([tpl_cm], [], tpl_cm["metadata"]["namespace"])
    tpl: SidecarTemplate = cs.templates["chaosfs-sidecar"]
    rendered = yaml.safe_load(tpl.render({"ContainerName": "app", "DataPath": "/d/data",
                                          "MountPath": "/d", "VolumeName": "v"}))
    (side,) = [c for c in rendered["containers"] if c["name"] == "chaosfs"]
    ports = {p.get("name"): p["containerPort"] for p in side["ports"]}
    assert f"-metrics-addr=:{ports['chaosfs-metrics']}" in side["command"]
    assert "-addr=:65533" in side["command"] and ports[None] == 65533
    monitors = objects(DEPLOY / "examples" / "chaosfs-podmonitor.yaml")
    assert {e["port"] for m in monitors for e in m["spec"]["podMetricsEndpoints"]} == \
        {"chaosfs-metrics", "metrics"}


def test_deployment_is_non_root_read_only_and_wired_to_its_service() -> None:
    (dep,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "chaos-injector"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["args"][0] == "webhook"
    (svc,) = by_kind("Service")
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    (mwc,) = by_kind("MutatingWebhookConfiguration")
    (hook,) = mwc["webhooks"]
    assert hook["clientConfig"]["service"]["name"] == svc["metadata"]["name"]
    assert hook["clientConfig"]["service"]["namespace"] == svc["metadata"]["namespace"]
    assert hook["clientConfig"]["service"]["path"] == "/inject"
    assert hook["failurePolicy"] == "Ignore" and 1 <= hook["timeoutSeconds"] <= 10
    assert hook["namespaceSelector"] == {"matchLabels": {"admission-webhook": "enabled"}}
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert pod["serviceAccountName"] == "chaos-injector"


def test_iochaos_validating_webhook_is_scoped_to_iochaos_on_the_injector_service() -> None:
    (svc,) = by_kind("Service")
    (vwc,) = by_kind("ValidatingWebhookConfiguration")
    (mwc,) = by_kind("MutatingWebhookConfiguration")
    # one name for both: gen-certs.sh --webhook NAME fills the caBundle of each
    assert vwc["metadata"]["name"] == mwc["metadata"]["name"]
    (hook,) = vwc["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": svc["metadata"]["name"], "namespace": svc["metadata"]["namespace"],
        "path": VALIDATE_IOCHAOS_PATH, "port": svc["spec"]["ports"][0]["port"]}
    assert hook["admissionReviewVersions"] == ["v1", "v1beta1"] and hook["sideEffects"] == "None"
    # Ignore: the controller checks again; Fail would block its own finalizer patches while
    # the injector is down (deploy/validating-webhook.yaml says why)
    assert hook["failurePolicy"] == "Ignore" and 1 <= hook["timeoutSeconds"] <= 10
    (crd,) = by_kind("CustomResourceDefinition")
    assert hook["rules"] == [{"operations": ["CREATE", "UPDATE"],
                              "apiGroups": [crd["spec"]["group"]],
                              "apiVersions": [v["name"] for v in crd["spec"]["versions"]],
                              "resources": [crd["spec"]["names"]["plural"]],
                              "scope": "Namespaced"}]
    assert "namespaceSelector" not in hook and "objectSelector" not in hook


def test_example_config_injects_the_seed_template_into_an_example_pod() -> None:
    (tpl_cm,) = objects(DEPLOY / "chaosfs-sidecar-template.yaml")
    (cfg_cm,) = objects(DEPLOY / "examples" / "injection-config.yaml")
    cs = build_config_set([tpl_cm], [cfg_cm], tpl_cm["metadata"]["namespace"])
    assert cs.problems == ()
    cfg = cs.lookup("tikv", "chaosfs-tikv")
    tpl: SidecarTemplate = cs.templates[cfg.template]
    pod = objects(ROOT / "tests" / "data" / "injector" / "tikv-pod.yaml")[0]
    new = inject(pod, parse_sidecar_config(tpl.render(cfg.arguments))).obj
    validate_object(new, "1.29")


def test_gen_certs_makes_a_certificate_the_webhook_serves(tmp_path: Path) -> None:
    mwc = tmp_path / "mutating-webhook.yaml"
    mwc.write_text((DEPLOY / "mutating-webhook.yaml").read_text())
    vwc = tmp_path / "validating-webhook.yaml"
    vwc.write_text((DEPLOY / "validating-webhook.yaml").read_text())
    out = tmp_path / "certs"
    proc = subprocess.run([str(DEPLOY / "gen-certs.sh"), "--no-kubectl", "--out", str(out),
                           "--patch-file", str(mwc), "--patch-file", str(vwc)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for path in (mwc, vwc):
        patched = yaml.safe_load(path.read_text())
        validate_object(patched, "1.29")
        ca_pem = base64.b64decode(patched["webhooks"][0]["clientConfig"]["caBundle"])
        assert ca_pem == (out / "ca.crt").read_bytes(), path.name
    san = subprocess.run(["openssl", "x509", "-in", str(out / "tls.crt"), "-noout", "-ext",
                          "subjectAltName"], capture_output=True, text=True, check=True).stdout
    for name in ["chaos-injector", "chaos-injector.chaos-testing",
                 "chaos-injector.chaos-testing.svc",
                 "chaos-injector.chaos-testing.svc.cluster.local"]:
        assert f"DNS:{name}," in san.strip() + ","
    # running it again (re-apply) replaces the caBundle instead of adding a second one
    proc = subprocess.run([str(DEPLOY / "gen-certs.sh"), "--no-kubectl", "--out", str(out),
                           "--patch-file", str(mwc), "--patch-file", str(vwc)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert mwc.read_text().count("caBundle:") == 1 and vwc.read_text().count("caBundle:") == 1

    # the API server's view: trust only the caBundle, check the Service's DNS name
    srv = WebhookServer(("127.0.0.1", 0), Webhook(ConfigStore(build_config_set([], []))),
                        CertReloader(str(out / "tls.crt"), str(out / "tls.key")))
    srv.start()
    try:
        ctx = ssl.create_default_context(cadata=base64.b64decode(
            yaml.safe_load(mwc.read_text())["webhooks"][0]["clientConfig"]["caBundle"]).decode())
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        conn = http.client.HTTPSConnection("x", srv.port)
        conn.sock = ctx.wrap_socket(raw, server_hostname="chaos-injector.chaos-testing.svc")
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        # the validating path on the same certificate, trusted through its own caBundle
        ctx = ssl.create_default_context(cadata=base64.b64decode(
            yaml.safe_load(vwc.read_text())["webhooks"][0]["clientConfig"]["caBundle"]).decode())
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u1", "operation": "CREATE",
            "kind": {"group": "chaos-mesh.org", "version": "v1alpha1", "kind": "IoChaos"},
            "object": {"spec": {"action": "errno", "mode": "fixed", "layer": "fs"}}}}
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        conn = http.client.HTTPSConnection("x", srv.port)
        conn.sock = ctx.wrap_socket(raw, server_hostname="chaos-injector.chaos-testing.svc")
        conn.request("POST", VALIDATE_IOCHAOS_PATH, body=json.dumps(review),
                     headers={"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())["response"]
        assert answer["allowed"] is False
        assert answer["status"]["message"] == "spec.value: required with mode fixed"
        conn.close()
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="other.example.com")
        raw.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_gen_certs_help_is_its_header_comment() -> None:
    proc = subprocess.run([str(DEPLOY / "gen-certs.sh"), "--help"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0
    assert "ValidatingWebhookConfiguration" in proc.stdout and "[--patch-file FILE]..." in proc.stdout
    assert "set -euo" not in proc.stdout and "#" not in proc.stdout


def test_gen_certs_rejects_unknown_options() -> None:
    proc = subprocess.run([str(DEPLOY / "gen-certs.sh"), "--bogus"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
