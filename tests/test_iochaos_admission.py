"""The IoChaos validating webhook (/validate-iochaos) over real HTTPS on loopback: the injector's
WebhookServer with a trustme certificate, real AdmissionReview v1/v1beta1 bodies, and the
answer the API server would turn into `kubectl apply`'s error."""

from __future__ import annotations

import copy
import os
import json
import uuid
from pathlib import Path

import pytest
import trustme
import yaml

from controller.sidecar import rule_pb
from controller.spec import parse_spec
from injector.config import ConfigStore
from injector.webhook import CertReloader, Webhook, WebhookOptions, WebhookServer
from tests.test_webhook import Client, write_certs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = yaml.safe_load((ROOT / "deploy" / "examples" / "io-delay-example.yaml").read_text())
PATH = "/validate-iochaos"


def iochaos(**changes) -> dict:
    obj = copy.deepcopy(EXAMPLE)
    obj["metadata"]["namespace"] = "demo"
    for k, v in changes.items():
        if v is None:
            obj["spec"].pop(k, None)
        else:
            obj["spec"][k] = v
    return obj


def review(obj: dict | None, operation: str = "CREATE", version: str = "v1",
           old: dict | None = None, kind: str = "IoChaos") -> dict:
    group, resource = ("chaos-mesh.org", "iochaos") if kind == "IoChaos" else ("", "pods")
    named = obj if isinstance(obj, dict) else old or {}
    return {
        "apiVersion": f"admission.k8s.io/{version}", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": "v1alpha1", "kind": kind},
            "resource": {"group": group, "version": "v1alpha1", "resource": resource},
            "requestKind": {"group": group, "version": "v1alpha1", "kind": kind},
            "name": named.get("metadata", {}).get("name", ""),
            "namespace": "demo", "operation": operation,
            "userInfo": {"username": "alice"}, "object": obj, "oldObject": old,
            "dryRun": False,
        },
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ca = trustme.CA()
    cert_file, key_file = write_certs(ca, tmp_path_factory.mktemp("certs"))
    srv = WebhookServer(("127.0.0.1", 0), Webhook(ConfigStore(), WebhookOptions()),
                        CertReloader(cert_file, key_file))
    srv.start()
    yield srv, Client(srv.port, ca)
    srv.shutdown()
    srv.server_close()


def validate(client: Client, doc: dict) -> dict:
    status, body = client.request("POST", PATH, json.dumps(doc).encode())
    assert status == 200, body
    answer = json.loads(body)
    assert answer["apiVersion"] == doc["apiVersion"] and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == doc["request"]["uid"]
    return answer["response"]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_the_0_9_examples_are_allowed(server, version: str) -> None:
    _, client = server
    errno_example = iochaos(action="errno", delay=None, percent="50")
    for obj in (iochaos(), errno_example):
        out = validate(client, review(obj, version=version))
        assert out == {"uid": out["uid"], "allowed": True}


# Cross-field and value rules the CRD schema cannot express: each refusal names its field.
@pytest.mark.parametrize("changes,message", [
    ({"mode": "fixed"}, "spec.value: required with mode fixed"),
    ({"mode": "fixed-percent", "value": "150"}, "spec.value: a percentage in 1..100"),
    ({"mode": "fixed", "value": "two"}, "spec.value: 'two' is not an integer"),
    ({"scheduler": None}, "spec.duration: set without spec.scheduler"),
    ({"duration": None}, "spec.scheduler: set without spec.duration"),
    ({"delay": "10x"}, 'spec.delay: unknown unit "x"'),
    ({"delay": "72m"}, "spec.delay: '72m' exceeds the protocol's limit"),
    ({"delay": None}, "spec.delay: required with this action"),
    ({"action": "errno", "errno": "EIO"}, "spec.errno: 'EIO' is not an integer"),
    ({"action": "errno", "errno": "600"}, "spec.errno: must be in 1..511"),
    ({"percent": "0"}, "spec.percent: must be in 1..100"),
    ({"action": "explode"}, "spec.action: unknown action 'explode'"),
    ({"scheduler": {"cron": "61 * * * *"}}, "spec.scheduler.cron: "),
    ({"scheduler": {"cron": "0 0 30 2 *"}}, "spec.scheduler.cron: "),
    ({"duration": "0s"}, "spec.duration: must be positive"),
    ({"path": "db/(unclosed"}, "spec.path: invalid RE2 regex"),
    ({"layer": "block"}, "spec.layer: must be fs"),
    ({"addr": "65533"}, "spec.addr: must be :PORT"),
])
def test_invalid_specs_are_denied_with_the_field_named(server, changes: dict,
                                                       message: str) -> None:
    _, client = server
    out = validate(client, review(iochaos(**changes)))
    assert out["allowed"] is False
    status = out["status"]
    assert (status["code"], status["reason"], status["status"]) == (400, "BadRequest", "Failure")
    assert status["message"].startswith(message), status["message"]
    assert "\n" not in status["message"]


V1_EXAMPLE = yaml.safe_load((ROOT / "deploy" / "examples" / "io-chaosfs-example.yaml").read_text())
POWER_EXAMPLE = yaml.safe_load((ROOT / "deploy" / "examples" / "io-power-cut-example.yaml").read_text())


def v1(**rule_changes) -> dict:
    obj = copy.deepcopy(V1_EXAMPLE)
    obj["spec"]["chaosfs"]["rules"][0].update(rule_changes)
    return obj


@pytest.mark.parametrize("obj,message", [
    (v1(errno="ENOSPACE"), "spec.chaosfs.rules[0].errno: unknown errno 'ENOSPACE'"),
    (v1(methods=["fsync"]), "spec.chaosfs.rules[0].methods: corrupt and short act on read/write"),
    (v1(glob="snap/[x"), "spec.chaosfs.rules[0].glob: unterminated '['"),
    (v1(ttl="30d"), 'spec.chaosfs.rules[0].ttl: unknown unit "d"'),
    (v1(name="wal-full"), "spec.chaosfs.rules[2].name: 'wal-full' is also rule [0]'s name"),
    ({**V1_EXAMPLE, "spec": {**V1_EXAMPLE["spec"], "percent": "50"}},
     "spec.percent: part of 0.9's fault, not allowed with spec.chaosfs"),
])
def test_v1_rules_are_checked_too(server, obj: dict, message: str) -> None:
    _, client = server
    assert validate(client, review(V1_EXAMPLE))["allowed"] is True
    out = validate(client, review(obj))
    assert out["allowed"] is False and out["status"]["code"] == 400
    assert out["status"]["message"].startswith(message), out["status"]["message"]


def test_v1beta1_denial_has_the_same_shape(server) -> None:
    _, client = server
    out = validate(client, review(iochaos(mode="fixed"), version="v1beta1"))
    assert out["allowed"] is False
    assert out["status"]["message"] == "spec.value: required with mode fixed"


def test_unknown_method_is_allowed_with_a_warning(server) -> None:
    _, client = server
    out = validate(client, review(iochaos(methods=["read", "reed"])))
    assert out["allowed"] is True and "status" not in out
    assert out["warnings"] == ["spec.methods: 'reed' is not a 0.9 method name; the sidecar "
                               "ignores it"]


def test_updates_deletes_and_other_objects(server) -> None:
    _, client = server
    bad = iochaos(mode="fixed")
    # DELETE is never refused (object is null, oldObject the stored one)
    assert validate(client, review(None, "DELETE", old=bad))["allowed"] is True
    # an UPDATE leaving the spec alone passes (the controller's finalizer and annotation
    # edits of an object stored before the webhook was installed)
    finalized = copy.deepcopy(bad)
    finalized["metadata"]["finalizers"] = []
    assert validate(client, review(finalized, "UPDATE", old=bad))["allowed"] is True
    # an UPDATE that changes the spec is checked: a valid object made invalid is refused...
    out = validate(client, review(bad, "UPDATE", old=iochaos()))
    assert out["allowed"] is False and out["status"]["message"].startswith("spec.value")
    # ...and an invalid one fixed is let through
    assert validate(client, review(iochaos(mode="fixed", value="2"), "UPDATE",
                                   old=bad))["allowed"] is True
    # an object being deleted: its last edits (finalizers) must go through
    going = copy.deepcopy(bad)
    going["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert validate(client, review(going, "UPDATE", old=iochaos()))["allowed"] is True
    # a configuration scoped wider than IoChaos never blocks other kinds
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}
    assert validate(client, review(pod, kind="Pod"))["allowed"] is True


def test_object_that_is_not_an_iochaos_object_is_denied_as_a_bad_request(server) -> None:
    _, client = server
    for obj in (None, "a string", [1, 2]):
        out = validate(client, review(obj))  # type: ignore[arg-type]
        assert out["allowed"] is False
        assert (out["status"]["code"], out["status"]["reason"]) == (400, "BadRequest")
        assert out["status"]["message"] == "request.object: not an IoChaos object"
    out = validate(client, review({"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "IoChaos",
                                   "metadata": {"name": "x"}, "spec": "nope"}))
    assert out["allowed"] is False and out["status"]["message"] == "spec: must be an object"


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "body is not JSON"),
    (b"[]", "not a JSON object"),
    (b"\xff\xfe", "body is not JSON"),
    (b"[" * 100000, "body is not JSON"),
    (json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(), "expected an AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"uid": ""}}).encode(), "no request.uid"),
])
def test_malformed_reviews_get_a_one_line_400(server, body: bytes, needle: str) -> None:
    _, client = server
    status, out = client.request("POST", PATH, body)
    assert status == 400
    error = json.loads(out)["error"]
    assert needle in error and "\n" not in error and "Traceback" not in error


def test_outcomes_are_counted_in_metrics(server) -> None:
    srv, client = server
    before = {r: srv.webhook.metrics.iochaos_reviews.labels(r)._value.get()
              for r in ("allowed", "denied", "skipped", "bad_request")}
    validate(client, review(iochaos()))
    validate(client, review(iochaos(mode="fixed")))
    validate(client, review(None, "DELETE", old=iochaos()))
    client.request("POST", PATH, b"{")
    status, text = client.request("GET", "/metrics")
    assert status == 200
    for result in before:
        line = f'chaos_injector_iochaos_reviews_total{{result="{result}"}} ' \
               f'{before[result] + 1:.1f}'
        assert line.encode() in text, result


# ------------------------------------------------------------------ fuzz: never an internal error
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) |
                    st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_specs(draw):
    """A valid spec (0.9's example, the v1 example or the power-cut one) with one value
    anywhere replaced by arbitrary JSON, or one key dropped."""
    spec = copy.deepcopy(draw(st.sampled_from([EXAMPLE["spec"], V1_EXAMPLE["spec"],
                                               POWER_EXAMPLE["spec"]])))
    path = draw(st.sampled_from([p for p in _paths(spec) if p]))
    parent = spec
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) or not isinstance(parent, dict):
        parent[path[-1]] = draw(JSON)
    else:
        del parent[path[-1]]
    return spec


@settings(max_examples=int(os.environ.get("CHAOSFS_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=mutated_specs())
def test_any_spec_is_admitted_or_refused_with_one_line_never_an_internal_error(spec) -> None:
    hook = Webhook(ConfigStore(), WebhookOptions())
    doc = review({"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "IoChaos",
                  "metadata": {"name": "f", "namespace": "demo"}, "spec": spec})
    code, answer, result = hook.validate_iochaos(json.dumps(doc).encode())
    assert code == 200 and result in ("allowed", "denied"), (result, answer)
    out = answer["response"]
    if not out["allowed"]:
        message = out["status"]["message"]
        assert message.startswith("spec") and "\n" not in message and len(message) < 600, message
        return
    # what is admitted can be sent: every rule makes an AddRule message
    for rule in parse_spec(spec).rules:
        rule_pb("iochaos/demo/f/" + rule.name, rule).SerializeToString()
