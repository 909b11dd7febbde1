"""The pure injection function and the configuration model, on real manifests.

Golden files in tests/data/injector/*.golden.* were reviewed by hand once; regenerate with
UPDATE_GOLDEN=1 after an intended change and review the diff.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonpatch
import pytest
import yaml
from kubernetes.client import V1ConfigMap, V1ObjectMeta

from injector.config import (
    ConfigError,
    ConfigStore,
    InjectionConfig,
    PodSelector,
    Settings,
    SidecarTemplate,
    build_config_set,
    own_namespace,
    parse_label_selector,
)
from injector.inject import (
    InjectionError,
    InjectOptions,
    inject,
    parse_sidecar_config,
)
from injector.manifests import (
    ManifestError,
    dump_stream,
    load_stream,
    map_objects,
    validate_object,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "injector"
SEED_CM = ROOT / "deploy" / "chaosfs-sidecar-template.yaml"
ARGS = {"ContainerName": "tikv", "DataPath": "/var/lib/tikv/data", "MountPath": "/var/lib/tikv",
        "VolumeName": "tikv"}
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def seed_template() -> SidecarTemplate:
    return SidecarTemplate.from_configmap(yaml.safe_load(SEED_CM.read_text()))


def seed_sidecar(**override: str):
    return parse_sidecar_config(seed_template().render({**ARGS, **override}))


def load(name: str):
    return load_stream((DATA / name).read_text(), name)


def pod() -> dict:
    return load("tikv-pod.yaml").docs[0]


def check_golden(name: str, text: str) -> None:
    path = DATA / name
    if UPDATE or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"output differs from {path}"


# --------------------------------------------------------------------------------------------
# golden outputs


@pytest.mark.parametrize("source,mode", [
    ("tikv-pod.yaml", "ordered"),
    ("tikv-pod.yaml", "native"),
    ("tikv-pod.yaml", "as-template"),
    ("tikv-statefulset.yaml", "ordered"),
    ("app-deployment.json", "ordered"),
    ("mixed.yaml", "ordered"),
])
def test_golden(source: str, mode: str) -> None:
    stream = load(source)
    sidecar = seed_sidecar()
    out = [map_objects(d, lambda o: inject(o, sidecar, InjectOptions(sidecar_mode=mode)).obj)
           for d in stream.docs]
    for doc in out:
        validate_object(doc, "1.29")
    stem, ext = source.rsplit(".", 1)
    check_golden(f"{stem}.{mode}.golden.{ext}", dump_stream(out, stream.fmt))


def test_output_format_follows_input() -> None:
    sidecar = seed_sidecar()
    js = load("app-deployment.json")
    assert js.fmt == "json"
    text = dump_stream([inject(js.docs[0], sidecar).obj], js.fmt)
    assert text.lstrip().startswith("{")
    assert load_stream(text).docs[0]["metadata"]["name"] == "app"
    multi = load("mixed.yaml")
    assert multi.fmt == "yaml" and len(multi.docs) == 3
    assert dump_stream(multi.docs, "yaml").count("\n---\n") == 2


# --------------------------------------------------------------------------------------------
# the rules of injection


def test_patch_reproduces_the_new_object_and_keeps_everything() -> None:
    original = pod()
    before = copy.deepcopy(original)
    result = inject(original, seed_sidecar())
    assert original == before, "the input must not be modified"
    assert jsonpatch.apply_patch(original, result.patch) == result.obj
    new = result.obj
    ann = new["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["admission-webhook.chaos-mesh.org/request"] == "chaosfs-tikv"
    assert ann["admission-webhook.chaos-mesh.org/status"] == "injected"
    spec = new["spec"]
    # ordered mode: sidecar first, then the app's containers in their original order
    assert [c["name"] for c in spec["containers"]] == ["chaosfs", "tikv", "log-shipper"]
    assert [c["name"] for c in spec["initContainers"]] == ["prepare", "inject-scripts"]
    tikv = spec["containers"][1]
    # the app's command is never rewritten
    assert tikv["command"] == ["/tikv-server"]
    assert tikv["args"] == ["--data-dir=/var/lib/tikv/data", "--addr=0.0.0.0:20160"]
    # the same-named mount is overwritten in place; order kept; new mounts appended
    assert [m["name"] for m in tikv["volumeMounts"]] == ["config", "tikv", "logs", "scripts",
                                                        "fuse"]
    assert tikv["volumeMounts"][1] == {"name": "tikv", "mountPath": "/var/lib/tikv",
                                       "mountPropagation": "HostToContainer"}
    assert tikv["lifecycle"]["postStart"]["exec"]["command"] == ["/tmp/scripts/wait-fuse.sh"]
    shipper = spec["containers"][2]
    assert shipper["args"] == ["tail", "-F", "/var/log/tikv/tikv.log"]
    assert "lifecycle" not in shipper
    assert [v["name"] for v in spec["volumes"]] == ["config", "tikv", "logs", "scripts", "fuse"]
    # the app's own init container is left alone
    assert spec["initContainers"][0] == before["spec"]["initContainers"][0]
    # shareProcessNamespace is the pod's own (false), never forced
    assert spec["shareProcessNamespace"] is False


def test_ordered_sidecar_waits_for_its_own_mount() -> None:
    new = inject(pod(), seed_sidecar()).obj
    sidecar = new["spec"]["containers"][0]
    assert sidecar["command"][0] == "/usr/local/bin/chaosfs"
    assert sidecar["lifecycle"]["postStart"]["exec"]["command"] == [
        "/tmp/scripts/wait-fuse.sh", "-f", "/tmp/fuse/pid", "-m", "/var/lib/tikv/data",
        "-d", "0.5", "-r", "240"]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    # its own Bidirectional mount is kept; the shared scripts/fuse dirs are added
    assert mounts["tikv"]["mountPropagation"] == "Bidirectional"
    assert mounts["scripts"]["mountPath"] == "/tmp/scripts"
    assert mounts["fuse"]["mountPath"] == "/tmp/fuse"


def test_native_sidecar_is_a_restartable_init_container_with_startup_probe() -> None:
    new = inject(pod(), seed_sidecar(), InjectOptions(sidecar_mode="native")).obj
    spec = new["spec"]
    assert [c["name"] for c in spec["containers"]] == ["tikv", "log-shipper"]
    assert [c["name"] for c in spec["initContainers"]] == ["prepare", "inject-scripts", "chaosfs"]
    sc = spec["initContainers"][-1]
    assert sc["restartPolicy"] == "Always"
    assert sc["startupProbe"]["exec"]["command"][:5] == [
        "/tmp/scripts/wait-fuse.sh", "-f", "/tmp/fuse/pid", "-m", "/var/lib/tikv/data"]
    assert "lifecycle" not in sc
    validate_object(new, "1.29")


def test_as_template_appends_like_0_9() -> None:
    new = inject(pod(), seed_sidecar(), InjectOptions(sidecar_mode="as-template")).obj
    assert [c["name"] for c in new["spec"]["containers"]] == ["tikv", "log-shipper", "chaosfs"]
    assert "lifecycle" not in new["spec"]["containers"][-1]


@pytest.mark.parametrize("mode", ["ordered", "native", "as-template"])
def test_injecting_twice_equals_once(mode: str) -> None:
    opts = InjectOptions(sidecar_mode=mode)
    once = inject(pod(), seed_sidecar(), opts)
    twice = inject(once.obj, seed_sidecar(), opts)
    assert twice.obj == once.obj
    assert twice.patch == [] and not twice.injected and twice.reason == "already injected"


def test_legacy_status_annotation_counts_as_injected() -> None:
    p = pod()
    p["metadata"]["annotations"]["admission-webhook.pingcap.com/status"] = "injected"
    r = inject(p, seed_sidecar())
    assert not r.injected and r.obj == p


def test_pod_without_annotations_gets_only_the_status() -> None:
    p = pod()
    del p["metadata"]["annotations"]
    new = inject(p, seed_sidecar()).obj
    assert new["metadata"]["annotations"] == {"admission-webhook.chaos-mesh.org/status": "injected"}


def test_share_process_namespace_only_when_the_template_says_so() -> None:
    p = pod()
    del p["spec"]["shareProcessNamespace"]
    assert "shareProcessNamespace" not in inject(p, seed_sidecar()).obj["spec"]
    text = seed_template().render(ARGS) + "shareProcessNamespace: true\n"
    assert inject(p, parse_sidecar_config(text)).obj["spec"]["shareProcessNamespace"] is True


def pod_without_data_volume() -> dict:
    p = pod()
    p["spec"]["volumes"] = [v for v in p["spec"]["volumes"] if v["name"] != "tikv"]
    for c in p["spec"]["containers"] + p["spec"]["initContainers"]:
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "tikv"]
    return p


def test_unknown_volume_name_is_a_clear_error() -> None:
    with pytest.raises(InjectionError) as exc:
        inject(pod(), seed_sidecar(VolumeName="data"))
    msg = str(exc.value)
    assert "volume 'data'" in msg and "config, logs, tikv" in msg and "\n" not in msg


def test_unknown_volume_name_becomes_empty_dir_when_opted_in() -> None:
    with pytest.raises(InjectionError, match="volume 'tikv'"):
        inject(pod_without_data_volume(), seed_sidecar())
    new = inject(pod_without_data_volume(), seed_sidecar(),
                 InjectOptions(missing_volumes="emptyDir")).obj
    assert {"name": "tikv", "emptyDir": {}} in new["spec"]["volumes"]
    validate_object(new)
    # the template can opt in too
    text = seed_template().render(ARGS) + "missingVolumes: emptyDir\n"
    new2 = inject(pod_without_data_volume(), parse_sidecar_config(text)).obj
    assert new2 == new


def test_app_mount_at_the_template_path_is_a_clear_error() -> None:
    with pytest.raises(InjectionError, match="already mounts volume 'tikv' at /var/lib/tikv"):
        inject(pod(), seed_sidecar(VolumeName="logs"))


def test_statefulset_claim_templates_count_as_volumes() -> None:
    sts = load("tikv-statefulset.yaml").docs[0]
    new = inject(sts, seed_sidecar()).obj
    names = [v["name"] for v in new["spec"]["template"]["spec"]["volumes"]]
    assert names == ["scripts", "fuse"]  # 'tikv' comes from the volumeClaimTemplate
    assert new["spec"]["template"]["metadata"]["annotations"] == {
        "admission-webhook.chaos-mesh.org/status": "injected"}
    assert "annotations" not in new["metadata"]


def test_pod_volume_named_like_a_template_volume_is_an_error_not_a_swap() -> None:
    p = pod()
    p["spec"]["volumes"].append({"name": "scripts", "hostPath": {"path": "/srv/scripts"}})
    with pytest.raises(InjectionError) as exc:
        inject(p, seed_sidecar())
    assert str(exc.value) == (
        "Pod tikv-0: the pod already has a volume named 'scripts' (hostPath), different from "
        "the template's (emptyDir); rename one of them")
    # the very volume the template would add: nothing to decide, it is kept once
    same = pod()
    same["spec"]["volumes"].append({"name": "fuse", "emptyDir": {}})
    new = inject(same, seed_sidecar()).obj
    assert [v["name"] for v in new["spec"]["volumes"]] == ["config", "tikv", "logs", "fuse",
                                                           "scripts"]
    validate_object(new, "1.29")


def test_post_start_for_a_missing_container_is_an_error() -> None:
    with pytest.raises(InjectionError, match="postStart names container 'tidb'"):
        inject(pod(), seed_sidecar(ContainerName="tidb"))


def test_existing_post_start_is_never_replaced() -> None:
    p = pod()
    p["spec"]["containers"][0]["lifecycle"] = {"postStart": {"exec": {"command": ["/warm"]}}}
    with pytest.raises(InjectionError, match="already has a postStart hook"):
        inject(p, seed_sidecar())


def test_container_name_clash_is_an_error() -> None:
    p = pod()
    p["spec"]["containers"][1]["name"] = "chaosfs"
    with pytest.raises(InjectionError, match="already has a container named 'chaosfs'"):
        inject(p, seed_sidecar())


def test_mount_path_clash_is_an_error() -> None:
    p = pod()
    p["spec"]["containers"][0]["volumeMounts"].append({"name": "logs", "mountPath": "/tmp/fuse"})
    with pytest.raises(InjectionError, match="at /tmp/fuse"):
        inject(p, seed_sidecar())


def test_ordered_mode_needs_a_recognisable_chaosfs_sidecar() -> None:
    text = "containers:\n- name: other\n  image: busybox\n"
    with pytest.raises(InjectionError, match="--sidecar-mode=as-template"):
        inject(pod(), parse_sidecar_config(text))
    new = inject(pod(), parse_sidecar_config(text), InjectOptions(sidecar_mode="as-template")).obj
    assert new["spec"]["containers"][-1]["name"] == "other"


def test_kinds_without_pods_pass_through() -> None:
    svc = load("mixed.yaml").docs[0]
    r = inject(svc, seed_sidecar())
    assert r.obj == svc and r.patch == [] and not r.injected


def test_env_and_host_aliases() -> None:
    text = seed_template().render(ARGS) + (
        "env:\n- name: CHAOS\n  value: '1'\n"
        "hostAliases:\n- ip: 10.0.0.1\n  hostnames: [chaos]\n")
    new = inject(pod(), parse_sidecar_config(text)).obj
    tikv = new["spec"]["containers"][1]
    assert tikv["env"] == [{"name": "CHAOS", "value": "1"}]
    assert new["spec"]["hostAliases"] == [{"ip": "10.0.0.1", "hostnames": ["chaos"]}]
    validate_object(new)


@pytest.mark.parametrize("mode", ["ordered", "native", "as-template"])
def test_template_env_reaches_the_injected_containers_too(mode: str) -> None:
    # 0.9's mergeEnvVars: every injected container and init container gets the template's
    # env; a name the container already sets keeps its value
    text = seed_template().render(ARGS).replace(
        "  image: pingcap/chaos-fs:latest\n",
        "  image: pingcap/chaos-fs:latest\n  env: [{name: RUST_LOG, value: debug}]\n")
    text += "env:\n- name: CHAOS\n  value: '1'\n- name: RUST_LOG\n  value: info\n"
    new = inject(pod(), parse_sidecar_config(text), InjectOptions(sidecar_mode=mode)).obj
    validate_object(new, "1.29")
    spec = new["spec"]
    by_name = {c["name"]: c for c in spec["containers"] + spec["initContainers"]}
    env = {name: [(e["name"], e["value"]) for e in c.get("env", [])]
           for name, c in by_name.items()}
    assert env["inject-scripts"] == [("CHAOS", "1"), ("RUST_LOG", "info")]
    assert env["chaosfs"] == [("RUST_LOG", "debug"), ("CHAOS", "1")]
    assert env["tikv"] == env["log-shipper"] == [("CHAOS", "1"), ("RUST_LOG", "info")]
    assert env["prepare"] == []  # the app's own init containers: untouched, as in 0.9


@pytest.mark.parametrize("text,needle", [
    ("containers: [", "not valid YAML"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("postStart:\n  tikv: {command: []}\n", "postStart.tikv.command"),
    ("containers:\n- image: x\n", "containers[0] has no name"),
    ("volumeMounts:\n- name: x\n", "volumeMounts[0] has no mountPath"),
    ("shareProcessNamespace: 'yes'\n", "shareProcessNamespace must be true or false"),
])
def test_bad_rendered_configs(text: str, needle: str) -> None:
    with pytest.raises(InjectionError) as exc:
        parse_sidecar_config(text)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_invalid_output_names_the_field() -> None:
    text = seed_template().render(ARGS).replace("imagePullPolicy: Always",
                                                "imagePullPolicy: [Always]", 1)
    new = inject(pod(), parse_sidecar_config(text)).obj
    with pytest.raises(ManifestError) as exc:
        validate_object(new, "1.29")
    assert "Pod tikv-0: invalid field spec.initContainers[1].imagePullPolicy" in str(exc.value)


def test_template_keys_are_read_as_0_9_read_them() -> None:
    # the seed page and 0.9's config_test.go write imagePullpolicy; encoding/json matched it
    text = seed_template().render(ARGS).replace("imagePullPolicy: Always",
                                                "imagePullpolicy: Always")
    text += ("Env:\n- NAME: CHAOS\n  value: 1\n- name: RATIO\n  value: 0.1\n"
             "containerz: []\n")
    sidecar = parse_sidecar_config(text, "template t")
    new = inject(pod(), sidecar).obj
    validate_object(new, "1.29")
    init, chaosfs = new["spec"]["initContainers"][1], new["spec"]["containers"][0]
    assert init["imagePullPolicy"] == chaosfs["imagePullPolicy"] == "Always"
    assert "imagePullpolicy" not in init
    # ghodss/yaml turned numbers into the strings an EnvVar value is
    assert [(e["name"], e["value"]) for e in sidecar.env] == [("CHAOS", "1"), ("RATIO", "0.1")]
    text_of = "\n".join(sidecar.warnings)
    assert "initContainers[0].imagePullpolicy read as imagePullPolicy" in text_of
    assert "Env read as env" in text_of and "env[0].NAME read as name" in text_of
    assert "t: containerz is not a field of the template; ignored" in text_of
    assert all("\n" not in w for w in sidecar.warnings)
    # only field names fold: map keys are data (postStart's container names, labels)
    bad = seed_template().render(ARGS).replace("  tikv:\n", "  TiKV:\n")
    with pytest.raises(InjectionError, match="postStart names container 'TiKV'"):
        inject(pod(), parse_sidecar_config(bad))
    # an unknown field inside a Kubernetes type is dropped too, by the type's own fields
    typo = seed_template().render(ARGS).replace("privileged: true", "privileged: true\n"
                                                "    priviledged: true")
    sc = parse_sidecar_config(typo)
    assert sc.containers[0]["securityContext"] == {"privileged": True}
    assert any("securityContext.priviledged is not a field of SecurityContext" in w
               for w in sc.warnings)


def test_injection_config_keys_are_read_as_0_9_read_them() -> None:
    cfg = InjectionConfig.parse({"Name": "a", "TEMPLATE": "t", "arguments": {"Port": 1, "On": True},
                                 "Selector": {"LabelSelectors": {"app": "x"}}, "extra": 1})
    assert (cfg.name, cfg.template, dict(cfg.arguments)) == ("a", "t", {"Port": "1", "On": "true"})
    assert cfg.selector.label_selectors == {"app": "x"}
    assert any("extra is not a field of the injection config" in w for w in cfg.warnings)


# --------------------------------------------------------------------------------------------
# templates and configuration


def test_missing_argument_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as exc:
        seed_template().render({k: v for k, v in ARGS.items() if k != "DataPath"})
    assert "DataPath" in str(exc.value) and "chaosfs-sidecar" in str(exc.value)


def test_arguments_are_not_html_escaped() -> None:
    text = seed_template().render({**ARGS, "DataPath": "/data/a&b<c>"})
    assert "-mountpoint=/data/a&b<c>" in text


@pytest.mark.parametrize("text,expected", [
    ("app.kubernetes.io/component=template", {"app.kubernetes.io/component": "template"}),
    ("app.kubernetes.io/component:template", {"app.kubernetes.io/component": "template"}),
    ("a=1, b:2,c==3", {"a": "1", "b": "2", "c": "3"}),
    ("", {}),
])
def test_label_selectors(text: str, expected: dict) -> None:
    assert parse_label_selector(text) == expected


@pytest.mark.parametrize("text", ["novalue", "a=b=c", "-bad=x", "a=1,a=2", "a=" + "x" * 64])
def test_bad_label_selectors(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_label_selector(text)
    assert repr(text) in str(exc.value)


def test_settings_flag_then_env_then_default(tmp_path: Path) -> None:
    env = {"TEMPLATE_NAMESPACE": "from-env", "TEMPLATE_LABELS": "tier:tpl",
           "CONFIGMAP_LABELS": "a=b,c=d"}
    s = Settings.resolve(environ=env)
    assert (s.template_namespace, dict(s.template_labels), dict(s.configmap_labels)) == (
        "from-env", {"tier": "tpl"}, {"a": "b", "c": "d"})
    s = Settings.resolve("flag-ns", "x=y", None, environ=env)
    assert s.template_namespace == "flag-ns" and dict(s.template_labels) == {"x": "y"}
    s = Settings.resolve(environ={"TEMPLATE_NAMESPACE": "ns"})
    assert dict(s.template_labels) == {"app.kubernetes.io/component": "template"}
    assert dict(s.configmap_labels) == {"app.kubernetes.io/component": "webhook"}
    sa = tmp_path / "namespace"
    sa.write_text("chaos-testing\n")
    assert own_namespace(str(sa)) == "chaos-testing"
    assert own_namespace(str(tmp_path / "absent")) == "default"
    with pytest.raises(ConfigError, match="not key=value"):
        Settings.resolve(environ={"TEMPLATE_NAMESPACE": "ns", "TEMPLATE_LABELS": "junk"})


def cm(name: str, ns: str, labels: dict, data: dict) -> V1ConfigMap:
    return V1ConfigMap(metadata=V1ObjectMeta(name=name, namespace=ns, labels=labels), data=data)


TPL = {"app.kubernetes.io/component": "template"}
WH = {"app.kubernetes.io/component": "webhook"}


def test_config_set_from_real_configmap_objects() -> None:
    seed_text = yaml.safe_load(SEED_CM.read_text())["data"]["data"]
    templates = [
        cm("chaosfs-sidecar", "chaos-testing", TPL, {"data": seed_text}),
        cm("broken", "chaos-testing", TPL, {"data": "{{ .X "}),
        cm("no-data-key", "chaos-testing", TPL, {"template": "x"}),
        cm("elsewhere", "other", TPL, {"data": "x"}),
    ]
    cfg = ("name: chaosfs-tikv\ntemplate: chaosfs-sidecar\narguments:\n"
           "  ContainerName: tikv\n  DataPath: /var/lib/tikv/data\n  MountPath: /var/lib/tikv\n"
           "  VolumeName: tikv\nselector:\n  labelSelectors:\n    app: tikv\n")
    injections = [
        cm("cfg", "tikv", WH, {"a.yaml": cfg, "b.yaml": "name: [", "c.yaml": "name: x\n"}),
        cm("cfg2", "tikv", WH, {"dup.yaml": cfg}),
        cm("cfg3", "tidb", WH, {"x": "name: tidb\ntemplate: missing\n"}),
        cm("cfg4", "tidb", WH, {"x": "name: n\ntemplate: t\narguments: {Port: [1]}\n"}),
    ]
    cs = build_config_set(templates, injections, "chaos-testing")
    assert sorted(cs.templates) == ["chaosfs-sidecar"]
    assert sorted(cs.configs) == [("tidb", "tidb"), ("tikv", "chaosfs-tikv")]
    got = cs.lookup("tikv", "chaosfs-tikv")
    assert got.arguments["VolumeName"] == "tikv" and got.selector.label_selectors == {"app": "tikv"}
    assert cs.lookup("default", "chaosfs-tikv") is None  # configs belong to their namespace
    text = "\n".join(f"{p.source}: {p.message}" for p in cs.problems)
    for needle in ["chaos-testing/broken", "no data key 'data'", "key b.yaml: invalid YAML",
                   "key c.yaml: 'template' is required", "already defined by",
                   "template 'missing' not found", "argument 'Port' must be a string"]:
        assert needle in text, needle
    assert all("\n" not in p.message for p in cs.problems)


def test_pod_selector() -> None:
    sel = PodSelector.parse({"namespaces": ["tikv"], "labelSelectors": {"app": "tikv"},
                             "annotationSelectors": {"chaos": "yes"}}, "cfg")
    assert sel.matches("tikv", {"app": "tikv", "x": "y"}, {"chaos": "yes"})
    assert not sel.matches("tidb", {"app": "tikv"}, {"chaos": "yes"})
    assert not sel.matches("tikv", {"app": "pd"}, {"chaos": "yes"})
    assert not sel.matches("tikv", {"app": "tikv"}, None)
    with pytest.raises(ConfigError, match="unsupported selector key"):
        PodSelector.parse({"podSelector": {}}, "cfg")


def test_pod_selector_pods_phases_and_node_keys_as_0_9() -> None:
    sel = PodSelector.parse({"pods": {"tikv": ["tikv-0", "tikv-1"]}}, "cfg", "tikv")
    assert sel.matches("tikv", {}, {}, "tikv-1")
    assert not sel.matches("tikv", {}, {}, "tikv-2")
    assert not sel.matches("tikv", {}, {}, "")  # a generateName pod has no name yet
    elsewhere = PodSelector.parse({"pods": {"tidb": ["tidb-0"]}}, "cfg", "tikv")
    assert not elsewhere.matches("tikv", {}, {}, "tidb-0")
    assert elsewhere.warnings == ("cfg: selector.pods names no pod of namespace tikv, so this "
                                  "config selects no pod",)
    # at admission a pod has no phase: only "not <phase>" entries can match it
    assert not PodSelector.parse({"podPhaseSelectors": ["Running"]}, "c").matches("ns", {}, {})
    assert PodSelector.parse({"podPhaseSelectors": ["!Running"]}, "c").matches("ns", {}, {})
    # no node is chosen before admission; 0.9.1 never checked these keys, neither do we
    nodes = PodSelector.parse({"nodes": ["n1"], "nodeSelectors": {"disk": "ssd"},
                               "fieldSelectors": {"spec.nodeName": "n1"},
                               "labelSelectors": {"app": "tikv"}}, "cfg")
    assert nodes.matches("tikv", {"app": "tikv"}, {}) and not nodes.matches("tikv", {}, {})
    assert [w.split(" ignored")[0] for w in nodes.warnings] == [
        "cfg: selector.nodes", "cfg: selector.nodeSelectors", "cfg: selector.fieldSelectors"]


def test_injection_config_overrides() -> None:
    cfg = InjectionConfig.parse({"name": "a", "template": "t", "arguments": {"X": "1"}})
    assert cfg.with_arguments({"Y": "2", "X": "3"}).arguments == {"X": "3", "Y": "2"}
    typo = InjectionConfig.parse({"name": "a", "template": "t", "argumentz": {}})
    assert typo.arguments == {} and "argumentz is not a field" in typo.warnings[0]


def test_config_store_swap_is_atomic() -> None:
    store = ConfigStore()
    assert not store.loaded and store.current.configs == {}
    cs = build_config_set([], [])
    old = store.swap(cs)
    assert store.loaded and store.current is cs and store.generation == 1 and old is not cs
