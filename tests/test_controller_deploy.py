"""deploy/iochaos-crd.yaml: a valid CRD whose schema takes 0.9's example experiments and refuses
what a schema can see is wrong; whatever the schema lets through, the controller's own check
(controller/spec.py) agrees with or refuses with a field-named message."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from controller.spec import SpecError, parse_spec
from injector.manifests import validate_object

ROOT = Path(__file__).resolve().parent.parent
CRD = yaml.safe_load((ROOT / "deploy" / "iochaos-crd.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLE = yaml.safe_load((ROOT / "deploy" / "examples" / "io-delay-example.yaml").read_text())


def schema_errors(obj: dict) -> list[str]:
    v = jsonschema.Draft7Validator(SCHEMA)
    return [".".join(str(p) for p in e.absolute_path) for e in v.iter_errors(obj)]


def test_crd_is_a_valid_v1_crd_for_0_9_group_and_kind() -> None:
    validate_object(CRD, "1.29")
    assert CRD["metadata"]["name"] == "iochaos.chaos-mesh.org"
    assert (CRD["spec"]["group"], CRD["spec"]["names"]["kind"], CRD["spec"]["scope"]) == \
        ("chaos-mesh.org", "IoChaos", "Namespaced")
    assert CRD["spec"]["versions"][0]["name"] == "v1alpha1"
    assert CRD["spec"]["versions"][0]["subresources"] == {"status": {}}
    kust = yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
    assert "iochaos-crd.yaml" in kust["resources"]


ERRNO_EXAMPLE = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "IoChaos",
                 "metadata": {"name": "io-errno-example"},
                 "spec": {"action": "errno", "mode": "one", "percent": "50", "layer": "fs",
                          "duration": "400s", "scheduler": {"cron": "@every 10m"},
                          "selector": {"labelSelectors": {"app": "etcd"}}}}


@pytest.mark.parametrize("obj", [EXAMPLE, ERRNO_EXAMPLE])
def test_0_9_examples_pass_schema_and_controller(obj: dict) -> None:
    assert schema_errors(obj) == []
    parse_spec(obj["spec"])


@pytest.mark.parametrize("change,field", [
    ({"action": "corrupt"}, "spec.action"), ({"mode": "some"}, "spec.mode"),
    ({"delay": "10x"}, "spec.delay"), ({"delay": "-1s"}, "spec.delay"),
    ({"errno": "EIO"}, "spec.errno"), ({"errno": "512"}, "spec.errno"), ({"errno": "0"}, "spec.errno"),
    ({"percent": "0"}, "spec.percent"), ({"percent": "101"}, "spec.percent"),
    ({"percent": 50}, "spec.percent"),
    ({"layer": "block"}, "spec.layer"), ({"addr": "10.0.0.1:1"}, "spec.addr"),
    ({"duration": "soon"}, "spec.duration"), ({"scheduler": {}}, "spec.scheduler"),
    ({"selector": {"labelSelectors": {"app": 1}}}, "spec.selector.labelSelectors.app"),
])
def test_schema_refuses_and_controller_agrees(change: dict, field: str) -> None:
    obj = {**EXAMPLE, "spec": {**EXAMPLE["spec"], **change}}
    errs = schema_errors(obj)
    assert errs and all(e.startswith(field) for e in errs), errs
    with pytest.raises(SpecError):
        spec = dict(obj["spec"])
        if field == "spec.errno":
            spec["action"] = "errno"
        parse_spec(spec)


@pytest.mark.parametrize("change,message", [
    ({"duration": None}, "spec.scheduler: set without spec.duration"),
    ({"scheduler": None}, "spec.duration: set without spec.scheduler"),
    ({"mode": "fixed"}, "spec.value: required with mode fixed"),
    ({"mode": "fixed", "value": "two"}, "spec.value: 'two' is not an integer"),
    ({"delay": "72m"}, "spec.delay: '72m' exceeds"),
    ({"scheduler": {"cron": "0 0 * * 7"}}, "spec.scheduler.cron: day-of-week field"),
])
def test_what_only_the_controller_sees(change: dict, message: str) -> None:
    spec = {k: v for k, v in {**EXAMPLE["spec"], **change}.items() if v is not None}
    assert schema_errors({**EXAMPLE, "spec": spec}) == []
    with pytest.raises(SpecError, match="^" + message.replace("(", r"\(")):
        parse_spec(spec)


def test_status_patch_carries_no_empty_strings() -> None:
    # kube-apiserver 1.20 (e2e/run) refuses a merge patch with `"reason": ""` as null; an
    # empty key is deleted instead (null), and left out inside podRecords items
    from controller.kube import no_empty_strings
    rec = {"namespace": "ns", "name": "p", "hostIP": "", "podIP": "10.0.0.2", "message": "ok"}
    patch = no_empty_strings({"phase": "Normal", "reason": "", "experiment": {
        "phase": "Running", "reason": "", "duration": "", "endTime": None, "podRecords": [rec]}})
    assert patch == {"phase": "Normal", "reason": None, "experiment": {
        "phase": "Running", "reason": None, "duration": None, "endTime": None,
        "podRecords": [{"namespace": "ns", "name": "p", "podIP": "10.0.0.2", "message": "ok"}]}}
    assert rec["hostIP"] == ""  # the caller's dict is left alone
