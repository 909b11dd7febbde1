"""Sidecar injection as one pure function, shared by the CLI, the webhook and the tests.

``inject(obj, sidecar, options) -> InjectResult(new object, RFC 6902 patch)``; ``obj`` is a
Pod or a workload holding a pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job, CronJob). The input is never modified.

Field meanings follow Chaos Mesh 0.9's template (``initContainers``, ``containers``,
``volumeMounts``, ``volumes``, ``postStart``, ``env``, ``hostAliases``,
``shareProcessNamespace``), without 0.9's bugs: existing annotations, containers and mounts
keep their order; ``shareProcessNamespace`` is only set when the template says so; the app's
command is never rewritten; a second injection is a no-op; a mount naming a volume the pod does
not have is an error (or an emptyDir when the template or config opts in).
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

import jsonpatch
import yaml

from injector import keys
from injector.manifests import DEFAULT_KUBE_VERSION

from injector.config import (
    MISSING_VOLUME_POLICIES,
    SIDECAR_MODES,
    STATUS_ANNOTATION,
    STATUS_INJECTED,
    annotation,
)


class InjectionError(ValueError):
    """Injection is impossible for this object; str() is one line naming the problem."""


# ---------------------------------------------------------------------------------------------
# the rendered template

@dataclass(frozen=True)
class SidecarConfig:
    init_containers: tuple[dict, ...] = ()
    containers: tuple[dict, ...] = ()
    volume_mounts: tuple[dict, ...] = ()
    volumes: tuple[dict, ...] = ()
    post_start: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    env: tuple[dict, ...] = ()
    host_aliases: tuple[dict, ...] = ()
    share_process_namespace: bool | None = None
    missing_volumes: str = "error"
    # what reading the template dropped or reinterpreted (unknown keys, case-folded keys)
    warnings: tuple[str, ...] = ()


def _named_list(raw: Any, key: str, where: str, required: tuple[str, ...] = ("name",)) -> tuple:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InjectionError(f"{where}: {key} must be a list")
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InjectionError(f"{where}: {key}[{i}] must be a mapping")
        for req in required:
            if not isinstance(item.get(req), str) or not item[req]:
                raise InjectionError(f"{where}: {key}[{i}] has no {req}")
        name = item.get("name")
        if isinstance(name, str) and key != "volumeMounts":
            if name in seen:
                raise InjectionError(f"{where}: {key} names {name!r} twice")
            seen.add(name)
    return tuple(copy.deepcopy(raw))


def parse_sidecar_config(rendered: str | Mapping[str, Any] | None,
                         where: str = "rendered template",
                         kube_version: str = DEFAULT_KUBE_VERSION) -> SidecarConfig:
    """Parse and check the rendered template text (or its already-loaded YAML)."""
    if isinstance(rendered, str):
        try:
            raw = yaml.safe_load(rendered)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise InjectionError(f"{where} is not valid YAML: {problem}{at}") from None
    else:
        raw = rendered
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InjectionError(f"{where} must be a YAML mapping, got {type(raw).__name__}")
    # keys as 0.9 read them: case-insensitive, unknown ones dropped (with a warning)
    raw, warnings = keys.read_template(raw, kube_version, where)
    post_start: dict[str, tuple[str, ...]] = {}
    ps = raw.get("postStart") or {}
    if not isinstance(ps, Mapping):
        raise InjectionError(f"{where}: postStart must map container names to {{command: [...]}}")
    for cname, handler in ps.items():
        cmd = handler.get("command") if isinstance(handler, Mapping) else handler
        if isinstance(cmd, str):
            cmd = [cmd]
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise InjectionError(f"{where}: postStart.{cname}.command must be a non-empty list "
                                 "of strings")
        post_start[str(cname)] = tuple(cmd)
    spn = raw.get("shareProcessNamespace")
    if spn is not None and not isinstance(spn, bool):
        raise InjectionError(f"{where}: shareProcessNamespace must be true or false")
    missing = raw.get("missingVolumes", "error")
    if missing not in MISSING_VOLUME_POLICIES:
        raise InjectionError(
            f"{where}: missingVolumes must be one of {', '.join(MISSING_VOLUME_POLICIES)}")
    host_aliases = raw.get("hostAliases") or []
    if not isinstance(host_aliases, list) or not all(isinstance(h, dict) for h in host_aliases):
        raise InjectionError(f"{where}: hostAliases must be a list of mappings")
    return SidecarConfig(
        init_containers=_named_list(raw.get("initContainers"), "initContainers", where),
        containers=_named_list(raw.get("containers"), "containers", where),
        volume_mounts=_named_list(raw.get("volumeMounts"), "volumeMounts", where,
                                  ("name", "mountPath")),
        volumes=_named_list(raw.get("volumes"), "volumes", where),
        post_start=post_start,
        env=_named_list(raw.get("env"), "env", where),
        host_aliases=tuple(copy.deepcopy(host_aliases)),
        share_process_namespace=spn,
        missing_volumes=missing,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------------------------------------
# options and results


@dataclass(frozen=True)
class InjectOptions:
    sidecar_mode: str = "ordered"
    # None: the template's `missingVolumes` decides (default "error")
    missing_volumes: str | None = None
    # the readiness check the sidecar's postStart / startupProbe runs (chaos-scripts' wait-fuse)
    wait_script: str = "/tmp/scripts/wait-fuse.sh"
    wait_delay: str = "0.5"
    wait_retries: str = "240"

    def __post_init__(self) -> None:
        if self.sidecar_mode not in SIDECAR_MODES:
            raise InjectionError(
                f"sidecar mode {self.sidecar_mode!r} is not one of {', '.join(SIDECAR_MODES)}")
        if self.missing_volumes is not None and self.missing_volumes not in MISSING_VOLUME_POLICIES:
            raise InjectionError(f"missing-volumes policy {self.missing_volumes!r} is not one of "
                                 f"{', '.join(MISSING_VOLUME_POLICIES)}")


@dataclass(frozen=True)
class InjectResult:
    obj: dict
    patch: list[dict]
    injected: bool
    reason: str = ""  # why nothing was done, when injected is False


# kind -> path of the pod template inside the object ([] = the object is the pod)
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def pod_template_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Pod (or pod template) inside ``obj``; None for kinds that hold no pod."""
    path = POD_TEMPLATE_PATHS.get(obj.get("kind", "")) if isinstance(obj, Mapping) else None
    if path is None:
        return None
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def is_injected(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    # 0.9 compared the status lower-cased: "Injected" counts
    return (annotation(meta.get("annotations"), "status") or "").lower() == STATUS_INJECTED


def inject(obj: Mapping[str, Any], sidecar: SidecarConfig,
           options: InjectOptions = InjectOptions()) -> InjectResult:
    """Inject ``sidecar`` into the pod (template) of ``obj``.

    Kinds without a pod template come back unchanged with ``injected=False``; an object that
    already carries the status annotation too (so injecting twice equals injecting once).
    Raises InjectionError when the result would be an invalid or surprising pod.
    """
    if not isinstance(obj, Mapping):
        raise InjectionError("object is not a mapping")
    kind = obj.get("kind")
    path = POD_TEMPLATE_PATHS.get(kind or "")
    if path is None:
        return InjectResult(copy.deepcopy(dict(obj)), [], False, f"kind {kind} holds no pod")
    new = copy.deepcopy(dict(obj))
    node: Any = new
    where = kind
    for key in path:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            raise InjectionError(f"{kind} has no {'.'.join(path)}")
        node = child
    pod: dict = node
    if is_injected(pod):
        return InjectResult(new, [], False, "already injected")
    extra_volumes: set[str] = set()
    if kind == "StatefulSet":
        for claim in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
            name = (claim.get("metadata") or {}).get("name") if isinstance(claim, dict) else None
            if name:
                extra_volumes.add(name)
    _inject_pod(pod, sidecar, options, extra_volumes, where=f"{kind} {_name_of(obj)}")
    patch = jsonpatch.make_patch(dict(obj), new).patch
    return InjectResult(new, patch, True)


def _name_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("name") or meta.get("generateName") or "<unnamed>"


def _inject_pod(pod: dict, sc: SidecarConfig, opts: InjectOptions, extra_volumes: set[str],
                where: str) -> None:
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) \
            or not spec["containers"]:
        raise InjectionError(f"{where}: pod spec has no containers")
    app_containers: list[dict] = spec["containers"]
    app_inits: list[dict] = spec.get("initContainers") or []
    for c in app_containers + app_inits:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise InjectionError(f"{where}: every container needs a name")

    taken = {c["name"] for c in app_containers + app_inits}
    for c in sc.init_containers + sc.containers:
        if c["name"] in taken:
            raise InjectionError(f"{where}: the pod already has a container named {c['name']!r}")
        taken.add(c["name"])

    # volumes: appended. 0.9 appended a same-named one too, and the API server rejected the
    # pod; replacing the pod's volume instead would swap the user's data for the template's.
    volumes: list[dict] = list(spec.get("volumes") or [])
    pod_volume_names = {v.get("name") for v in volumes if isinstance(v, dict)} | extra_volumes
    index = {v.get("name"): i for i, v in enumerate(volumes) if isinstance(v, dict)}
    for vol in sc.volumes:
        if vol["name"] not in index:
            index[vol["name"]] = len(volumes)
            volumes.append(copy.deepcopy(vol))
        elif volumes[index[vol["name"]]] != vol:
            raise InjectionError(
                f"{where}: the pod already has a volume named {vol['name']!r} "
                f"({_volume_source(volumes[index[vol['name']]])}), different from the "
                f"template's ({_volume_source(vol)}); rename one of them")

    # every mount the template introduces must name a volume of the pod
    available = set(index) | extra_volumes
    missing_policy = opts.missing_volumes or sc.missing_volumes
    introduced = list(sc.volume_mounts) + [m for c in sc.init_containers + sc.containers
                                           for m in c.get("volumeMounts") or []]
    for m in introduced:
        name = m.get("name")
        if name in available:
            continue
        if missing_policy == "emptyDir":
            volumes.append({"name": name, "emptyDir": {}})
            index[name] = len(volumes) - 1
            available.add(name)
            continue
        have = ", ".join(sorted(n for n in pod_volume_names if n)) or "none"
        raise InjectionError(
            f"{where}: the template mounts volume {name!r} (VolumeName?) but the pod has no "
            f"such volume (pod volumes: {have}); set VolumeName to one of them or opt in to "
            "an emptyDir with missingVolumes: emptyDir")

    # mounts of the app's containers: overwrite the same-named mount in place, else append
    for c in app_containers:
        mounts = list(c.get("volumeMounts") or [])
        for vm in sc.volume_mounts:
            same = next((i for i, m in enumerate(mounts) if m.get("name") == vm["name"]), None)
            clash = next((m for i, m in enumerate(mounts)
                          if m.get("mountPath") == vm["mountPath"] and i != same), None)
            if clash is not None:
                raise InjectionError(
                    f"{where}: container {c['name']!r} already mounts volume {clash.get('name')!r}"
                    f" at {vm['mountPath']}, where the template mounts {vm['name']!r}")
            if same is not None:
                mounts[same] = copy.deepcopy(vm)
            else:
                mounts.append(copy.deepcopy(vm))
        c["volumeMounts"] = mounts
        _merge_env(c, sc.env)

    # injected containers keep their own mounts and env and gain the template's (0.9's
    # mergeVolumeMounts / mergeEnvVars)
    injected_inits = [copy.deepcopy(c) for c in sc.init_containers]
    sidecars = [copy.deepcopy(c) for c in sc.containers]
    for c in injected_inits + sidecars:
        _merge_env(c, sc.env)
        mounts = list(c.get("volumeMounts") or [])
        for vm in sc.volume_mounts:
            if not any(m.get("name") == vm["name"] or m.get("mountPath") == vm["mountPath"]
                       for m in mounts):
                mounts.append(copy.deepcopy(vm))
        if mounts:
            c["volumeMounts"] = mounts

    # postStart hooks of the named containers: lifecycle.postStart.exec.command
    all_by_name = {c["name"]: c for c in app_containers + sidecars}
    for cname, cmd in sc.post_start.items():
        target = all_by_name.get(cname)
        if target is None:
            raise InjectionError(
                f"{where}: postStart names container {cname!r}, which the pod does not have "
                f"(containers: {', '.join(c['name'] for c in app_containers)})")
        _set_post_start(target, list(cmd), where)

    # placement decides the start order
    if opts.sidecar_mode == "as-template":
        spec["containers"] = app_containers + sidecars
        new_inits = app_inits + injected_inits
    elif opts.sidecar_mode == "ordered":
        _require_ready_check(sidecars, opts, where)
        for c in sidecars:
            check = _ready_command(c, opts, probe=False)
            if check is not None and not (c.get("lifecycle") or {}).get("postStart"):
                _set_post_start(c, check, where)
        spec["containers"] = sidecars + app_containers
        new_inits = app_inits + injected_inits
    else:  # native sidecars (Kubernetes >= 1.29)
        _require_ready_check(sidecars, opts, where)
        for c in sidecars:
            c["restartPolicy"] = "Always"
            check = _ready_command(c, opts, probe=True)
            if check is not None and "startupProbe" not in c:
                c["startupProbe"] = {
                    "exec": {"command": check},
                    "periodSeconds": 1,
                    "timeoutSeconds": 5,
                    "failureThreshold": 300,
                }
        spec["containers"] = app_containers
        new_inits = app_inits + injected_inits + sidecars
    if new_inits:
        spec["initContainers"] = new_inits
    if volumes:
        spec["volumes"] = volumes
    if sc.host_aliases:
        aliases = spec.setdefault("hostAliases", [])
        for alias in sc.host_aliases:
            if alias not in aliases:
                aliases.append(copy.deepcopy(alias))
    if sc.share_process_namespace is not None:
        spec["shareProcessNamespace"] = sc.share_process_namespace

    meta = pod.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise InjectionError(f"{where}: metadata is not a mapping")
    annotations = meta.get("annotations")
    if annotations is None:
        annotations = meta["annotations"] = {}
    annotations[STATUS_ANNOTATION] = STATUS_INJECTED


def _volume_source(volume: dict) -> str:
    return ", ".join(k for k in volume if k != "name") or "no source"


def _merge_env(container: dict, env: tuple[dict, ...]) -> None:
    """Append the template's env vars whose names the container does not set yet."""
    if not env:
        return
    current = container.get("env") or []
    names = {e.get("name") for e in current if isinstance(e, dict)}
    added = [copy.deepcopy(e) for e in env if e["name"] not in names]
    if added:
        container["env"] = current + added


def _set_post_start(container: dict, command: list[str], where: str) -> None:
    lifecycle = container.setdefault("lifecycle", {})
    existing = lifecycle.get("postStart")
    hook = {"exec": {"command": command}}
    if existing and existing != hook:
        raise InjectionError(
            f"{where}: container {container['name']!r} already has a postStart hook; "
            "refusing to replace it")
    lifecycle["postStart"] = hook


def _flag_value(tokens: list[str], flag: str) -> str | None:
    for i, tok in enumerate(tokens):
        for dash in ("-", "--"):
            if tok == dash + flag and i + 1 < len(tokens):
                return tokens[i + 1]
            if tok.startswith(f"{dash}{flag}="):
                return tok.split("=", 1)[1]
    return None


def _ready_command(container: dict, opts: InjectOptions, probe: bool) -> list[str] | None:
    """The wait-fuse invocation that succeeds once this chaosfs sidecar has mounted."""
    tokens: list[str] = []
    for item in list(container.get("command") or []) + list(container.get("args") or []):
        if not isinstance(item, str):
            continue
        try:
            tokens.extend(shlex.split(item) if any(ch.isspace() for ch in item) else [item])
        except ValueError:
            tokens.append(item)
    pidfile = _flag_value(tokens, "pidfile")
    mountpoint = _flag_value(tokens, "mountpoint")
    if pidfile is None and mountpoint is None:
        return None
    cmd = [opts.wait_script]
    if pidfile:
        cmd += ["-f", pidfile]
    if mountpoint:
        cmd += ["-m", mountpoint]
    if probe:
        cmd += ["-d", "0", "-r", "1"]
    else:
        cmd += ["-d", opts.wait_delay, "-r", opts.wait_retries]
    return cmd


def _require_ready_check(sidecars: list[dict], opts: InjectOptions, where: str) -> None:
    if not sidecars:
        return
    ready = [c for c in sidecars if _ready_command(c, opts, probe=False) is not None]
    if not ready:
        raise InjectionError(
            f"{where}: sidecar mode {opts.sidecar_mode} needs a chaosfs sidecar whose command "
            f"has -pidfile or -mountpoint (found: {', '.join(c['name'] for c in sidecars)}); "
            "use --sidecar-mode=as-template")
    script_dir = opts.wait_script.rsplit("/", 1)[0] or "/"
    for c in ready:
        if not any(_under(script_dir, m.get("mountPath", "")) for m in c.get("volumeMounts") or []):
            raise InjectionError(
                f"{where}: sidecar {c['name']!r} must mount the scripts volume at {script_dir} "
                f"to run {opts.wait_script} (add it to the template's volumeMounts)")


def _under(path: str, mount_path: str) -> bool:
    mount_path = mount_path.rstrip("/") or "/"
    return mount_path == "/" or path == mount_path or path.startswith(mount_path + "/")
