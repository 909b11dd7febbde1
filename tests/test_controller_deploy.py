"""deploy/iochaos-crd.yaml: a valid CRD whose schema takes 0.9's example experiments and refuses
what a schema can see is wrong; whatever the schema lets through, the controller's own check
(controller/spec.py) agrees with or refuses with a field-named message."""

from __future__ import annotations

import copy
import re
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
V1_EXAMPLE = yaml.safe_load((ROOT / "deploy" / "examples" / "io-chaosfs-example.yaml").read_text())
POWER_EXAMPLE = yaml.safe_load((ROOT / "deploy" / "examples" / "io-power-cut-example.yaml").read_text())


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


def test_power_cut_example_passes_schema_and_controller() -> None:
    assert schema_errors(POWER_EXAMPLE) == []
    pc = parse_spec(POWER_EXAMPLE["spec"]).power_cut
    assert (pc.after_us, pc.max_undo, pc.model, pc.keep_probability, pc.torn_sector,
            pc.hold_us) == (180_000_000, 2 << 30, "journal", 0.2, 4096, 10_000_000)
    for change, field in [({"after": "soon"}, "after"), ({"model": "ext4"}, "model"),
                          ({"keepProbability": 2}, "keepProbability"),
                          ({"torn": {"sector": 1024}}, "torn.sector"), ({"block": "yes"}, "block")]:
        spec = copy.deepcopy(POWER_EXAMPLE["spec"])
        spec["chaosfs"]["powerCut"].update(change)
        errs = schema_errors({**POWER_EXAMPLE, "spec": spec})
        assert errs and all(e.startswith("spec.chaosfs.powerCut." + field) for e in errs), errs
        with pytest.raises(SpecError, match=r"^spec\.chaosfs\.powerCut\." + field.split(".")[0]):
            parse_spec(spec)
    spec = copy.deepcopy(POWER_EXAMPLE["spec"])
    del spec["chaosfs"]["powerCut"]["after"]
    assert schema_errors({**POWER_EXAMPLE, "spec": spec})
    with pytest.raises(SpecError, match="powerCut.after: required"):
        parse_spec(spec)


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


# ------------------------------------------------------------------ spec.chaosfs
def v1(spec_change: dict | None = None, **rule_change) -> dict:
    obj = copy.deepcopy(V1_EXAMPLE)
    rule = obj["spec"]["chaosfs"]["rules"][0]
    for k, v in rule_change.items():
        if v is None:
            rule.pop(k, None)
        else:
            rule[k] = v
    for k, v in (spec_change or {}).items():
        if v is None:
            obj["spec"].pop(k, None)
        else:
            obj["spec"][k] = v
    return obj


def test_v1_example_passes_schema_and_controller() -> None:
    assert schema_errors(V1_EXAMPLE) == []
    spec = parse_spec(V1_EXAMPLE["spec"])
    assert [r.name for r in spec.rules] == ["snap-rot", "wal-slow", "wal-full"]


def test_schema_and_controller_know_the_same_rule_fields() -> None:
    from chaosfs.faults.methods import ALL_METHODS
    from controller.extension import MAX_RULES, RULE_FIELDS
    rules = SCHEMA["properties"]["spec"]["properties"]["chaosfs"]["properties"]["rules"]
    assert rules["maxItems"] == MAX_RULES and rules["minItems"] == 1
    assert tuple(rules["items"]["properties"]) == RULE_FIELDS
    assert rules["items"]["properties"]["methods"]["items"]["enum"] == list(ALL_METHODS)


@pytest.mark.parametrize("obj,field", [
    (v1({"action": "errno"}), "spec"),                 # both kinds of fault (oneOf)
    (v1({"chaosfs": None}), "spec"),                   # neither
    (v1({"chaosfs": {"rules": []}}), "spec.chaosfs.rules"),
    (v1({"chaosfs": {}}), "spec.chaosfs"),
    (v1(methods=["reed"]), "spec.chaosfs.rules.0.methods.0"),
    (v1(probability=150), "spec.chaosfs.rules.0.probability"),
    (v1(probability="1.5"), "spec.chaosfs.rules.0.probability"),
    (v1(maxHits=0), "spec.chaosfs.rules.0.maxHits"),
    (v1(corrupt={"mode": "shred"}), "spec.chaosfs.rules.0.corrupt.mode"),
    (v1(corrupt={"length": 0}), "spec.chaosfs.rules.0.corrupt.length"),
    (v1(delay="soon"), "spec.chaosfs.rules.0.delay"),
    (v1(ttl="0"), "spec.chaosfs.rules.0.ttl"),
    (v1(name="Snap_Rot"), "spec.chaosfs.rules.0.name"),
    (v1(short={"fraction": 2}), "spec.chaosfs.rules.0.short.fraction"),
    (v1(short={}), "spec.chaosfs.rules.0.short"),
    (v1(torn={"sector": 1024}), "spec.chaosfs.rules.0.torn.sector"),
])
def test_schema_refuses_v1_and_controller_agrees(obj: dict, field: str) -> None:
    errs = schema_errors(obj)
    assert errs and all(e.startswith(field) for e in errs), errs
    if field == "spec":  # the oneOf itself, not some field under spec
        assert errs == ["spec"], errs
    with pytest.raises(SpecError):
        parse_spec(obj["spec"])


@pytest.mark.parametrize("obj,message", [
    (v1({"percent": "50"}), "spec.percent: part of 0.9's fault, not allowed with spec.chaosfs"),
    (v1({"path": "wal"}), "spec.path: part of 0.9's fault"),
    (v1(errno="EFOO"), "spec.chaosfs.rules[0].errno: unknown errno 'EFOO'"),
    (v1(errno=38, methods=["fsync"]), "spec.chaosfs.rules[0].errno: ENOSYS on 'fsync'"),
    (v1(glob="member/[snap"), "spec.chaosfs.rules[0].glob: unterminated '['"),
    (v1(glob=None, path="snap/("), "spec.chaosfs.rules[0].path: invalid regex"),
    (v1(methods=["fsync"]), "spec.chaosfs.rules[0].methods: corrupt and short act on read/write"),
    (v1(ttl="200h"), "spec.chaosfs.rules[0].ttl: must be between 0 and 604800 seconds"),
    (v1(delay="72m"), "spec.chaosfs.rules[0].delay: must be between 0 and 4294967295"),
    (v1(name="wal-slow"), "spec.chaosfs.rules[1].name: 'wal-slow' is also rule [0]'s name"),
])
def test_what_only_the_controller_sees_in_v1_rules(obj: dict, message: str) -> None:
    assert schema_errors(obj) == []
    with pytest.raises(SpecError, match="^" + re.escape(message)):
        parse_spec(obj["spec"])


def test_controller_imports_without_the_daemons_runtime():
    """The controller runs in the injector's image: no trio, no pyfuse3 (a shared helper
    that pulled in the daemon's engine once crash-looped it on the e2e node)."""
    import subprocess
    import sys
    code = ("import sys\n"
            "for m in ('trio', 'pyfuse3'): sys.modules[m] = None\n"
            "import controller.engine, controller.operator, controller.sidecar\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr[-2000:]
