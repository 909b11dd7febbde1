"""Configuration model of the injector: template ConfigMaps, injection configs, settings.

Two kinds of ConfigMap drive injection (Chaos Mesh 0.9 compatible):

* template ConfigMaps (label ``app.kubernetes.io/component=template`` by default) in the
  injector's namespace; the ConfigMap's name names the template, its data key ``data`` holds
  the Go template text;
* injection-config ConfigMaps (label ``app.kubernetes.io/component=webhook``) in application
  namespaces; every data entry is one YAML document with ``name``, ``template``,
  ``arguments`` and an optional pod ``selector``.

A broken ConfigMap never stops the others: :func:`build_config_set` collects one
:class:`ConfigProblem` per bad entry and keeps everything valid.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from injector import keys

STATUS_ANNOTATION = "admission-webhook.chaos-mesh.org/status"
REQUEST_ANNOTATION = "admission-webhook.chaos-mesh.org/request"
INIT_REQUEST_ANNOTATION = "admission-webhook.chaos-mesh.org/init-request"
# Before mid-2020 Chaos Mesh used this prefix; pods and namespaces annotated that way still work.
LEGACY_PREFIX = "admission-webhook.pingcap.com"
CURRENT_PREFIX = "admission-webhook.chaos-mesh.org"
STATUS_INJECTED = "injected"

DEFAULT_TEMPLATE_LABELS = "app.kubernetes.io/component=template"
DEFAULT_CONFIGMAP_LABELS = "app.kubernetes.io/component=webhook"
TEMPLATE_DATA_KEY = "data"
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

SIDECAR_MODES = ("ordered", "native", "as-template")
MISSING_VOLUME_POLICIES = ("error", "emptyDir")


class ConfigError(ValueError):
    """A configuration value is unusable; str() is one line naming the problem."""


def annotation(meta_annotations: Mapping[str, str] | None, suffix: str) -> str | None:
    """Value of ``<prefix>/<suffix>`` under the current prefix, else under the legacy one."""
    ann = meta_annotations or {}
    for prefix in (CURRENT_PREFIX, LEGACY_PREFIX):
        value = ann.get(f"{prefix}/{suffix}")
        if value is not None:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# label selectors

_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_label_key(key: str, text: str) -> None:
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name) or (
        prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix))
    ):
        raise ConfigError(f"invalid label key {key!r} in selector {text!r}")


def _check_label_value(value: str, text: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise ConfigError(f"invalid label value {value!r} in selector {text!r}")


def parse_label_selector(text: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (also ``k==v``) or 0.9's ``k:v`` pairs into an equality selector.

    The two separators may be mixed; an empty string selects everything.
    """
    result: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        if "=" in part:
            key, _, value = part.partition("==") if "==" in part else part.partition("=")
        else:
            # 0.9's env format `key:value`; a label key never contains ':'
            key, sep, value = part.partition(":")
            if not sep:
                raise ConfigError(f"label selector {text!r}: {part!r} is not key=value or key:value")
        key, value = key.strip(), value.strip()
        _check_label_key(key, text)
        _check_label_value(value, text)
        if key in result and result[key] != value:
            raise ConfigError(f"label selector {text!r}: key {key!r} given twice")
        result[key] = value
    return result


def selector_string(selector: Mapping[str, str]) -> str:
    """The API server's ``labelSelector`` query form."""
    return ",".join(f"{k}={v}" for k, v in selector.items())


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------------------------
# ConfigMap access: plain dicts (manifests) and kubernetes.client.V1ConfigMap alike


@dataclass(frozen=True)
class ConfigMapView:
    namespace: str
    name: str
    labels: Mapping[str, str]
    data: Mapping[str, str]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def configmap_view(obj: Any, default_namespace: str = "") -> ConfigMapView:
    """Read namespace/name/labels/data of a ConfigMap dict or V1ConfigMap."""
    if isinstance(obj, Mapping):
        if obj.get("kind", "ConfigMap") != "ConfigMap":
            raise ConfigError(f"expected a ConfigMap, got kind {obj.get('kind')!r}")
        meta = obj.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise ConfigError("ConfigMap metadata is not a mapping")
        data = obj.get("data") or {}
        name, ns, labels = meta.get("name"), meta.get("namespace"), meta.get("labels") or {}
    else:
        meta = getattr(obj, "metadata", None)
        data = getattr(obj, "data", None) or {}
        name = getattr(meta, "name", None)
        ns = getattr(meta, "namespace", None)
        labels = getattr(meta, "labels", None) or {}
    if not name or not isinstance(name, str):
        raise ConfigError("ConfigMap has no metadata.name")
    if not isinstance(data, Mapping) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"ConfigMap {name}: data must map keys to strings")
    return ConfigMapView(ns or default_namespace, name, dict(labels), dict(data))


# ---------------------------------------------------------------------------------------------
# templates and injection configs


@dataclass(frozen=True)
class SidecarTemplate:
    """One template ConfigMap: its name identifies it."""

    name: str
    text: str
    source: str = ""
    parsed: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_text(cls, name: str, text: str, source: str = "") -> "SidecarTemplate":
        from injector import template as gotemplate

        try:
            parsed = gotemplate.parse(text, name=name)
        except gotemplate.TemplateError as exc:
            raise ConfigError(str(exc)) from None
        return cls(name, text, source or name, parsed)

    @classmethod
    def from_configmap(cls, obj: Any, default_namespace: str = "") -> "SidecarTemplate":
        view = configmap_view(obj, default_namespace)
        if TEMPLATE_DATA_KEY not in view.data:
            raise ConfigError(
                f"template ConfigMap {view.ref} has no data key {TEMPLATE_DATA_KEY!r}"
                f" (keys: {', '.join(sorted(view.data)) or 'none'})"
            )
        return cls.from_text(view.name, view.data[TEMPLATE_DATA_KEY], view.ref)

    def render(self, arguments: Mapping[str, str]) -> str:
        """Render with ``missingkey=error``; a TemplateError names template, line and column."""
        from injector import template as gotemplate

        try:
            return self.parsed.render(dict(arguments))
        except gotemplate.TemplateError as exc:
            raise ConfigError(str(exc)) from None


# Pods are admitted before they are scheduled, so a node has not been chosen yet; 0.9.1's
# CheckPodMeetSelector (pkg/utils/selector.go) never looked at these keys and injected as if
# they were absent. So does chaos-injector, with a warning instead of silence.
_IGNORED_SELECTOR_KEYS = {
    "nodes": "pods are admitted before they are scheduled to a node",
    "nodeSelectors": "pods are admitted before they are scheduled to a node",
    "fieldSelectors": "Chaos Mesh 0.9 never checked field selectors at admission",
}


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"{where}: selector.{key} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class PodSelector:
    """An injection config's ``selector`` (0.9's SelectorSpec), checked at admission."""

    namespaces: tuple[str, ...] = ()
    label_selectors: Mapping[str, str] = field(default_factory=dict)
    annotation_selectors: Mapping[str, str] = field(default_factory=dict)
    pods: Mapping[str, tuple[str, ...]] | None = None  # namespace -> pod names
    pod_phases: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, raw: Any, where: str, namespace: str = "") -> "PodSelector":
        """``raw`` as :func:`injector.keys.read_injection_config` left it; ``namespace``: the
        injection config's, whose pods are the only ones it can ever apply to."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: selector must be a mapping")
        warnings = []
        for key, why in _IGNORED_SELECTOR_KEYS.items():
            if raw.get(key):
                warnings.append(f"{where}: selector.{key} ignored ({why}), as Chaos Mesh 0.9 did")
        unknown = set(raw) - set(keys.SELECTOR["properties"])
        if unknown:  # a selector given as a plain dict (not read by keys.read_injection_config)
            raise ConfigError(
                f"{where}: unsupported selector key(s) {', '.join(sorted(map(str, unknown)))}")
        maps = {}
        for key in ("labelSelectors", "annotationSelectors"):
            value = raw.get(key) or {}
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ConfigError(f"{where}: selector.{key} must map strings to strings")
            maps[key] = dict(value)
        pods = None
        if raw.get("pods"):
            if not isinstance(raw["pods"], Mapping):
                raise ConfigError(f"{where}: selector.pods must map namespaces to pod names")
            pods = {str(ns): _strings(names or [], where, f"pods.{ns}")
                    for ns, names in raw["pods"].items()}
            if namespace and not pods.get(namespace):
                warnings.append(f"{where}: selector.pods names no pod of namespace {namespace}, "
                                "so this config selects no pod")
        phases = _strings(raw.get("podPhaseSelectors") or [], where, "podPhaseSelectors")
        return cls(_strings(raw.get("namespaces") or [], where, "namespaces"),
                   maps["labelSelectors"], maps["annotationSelectors"], pods, phases,
                   tuple(warnings))

    def matches(self, namespace: str, labels: Mapping[str, str] | None,
                annotations: Mapping[str, str] | None, name: str = "", phase: str = "") -> bool:
        """``name``: the pod's (empty for generateName pods, which no ``pods`` list can name);
        ``phase``: its status.phase, which at admission is still empty."""
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.pods is not None and name not in self.pods.get(namespace, ()):
            return False
        if self.pod_phases:
            wanted = [p for p in self.pod_phases if not p.startswith("!")]
            unwanted = [p[1:] for p in self.pod_phases if p.startswith("!")]
            if (wanted and phase not in wanted) or phase in unwanted:
                return False
        return labels_match(self.label_selectors, labels) and labels_match(
            self.annotation_selectors, annotations)


@dataclass(frozen=True)
class InjectionConfig:
    name: str
    template: str
    arguments: Mapping[str, str]
    namespace: str = ""
    selector: PodSelector | None = None
    missing_volumes: str | None = None  # overrides the template's choice when set
    source: str = ""
    # what reading the document dropped or reinterpreted; repeated with every injection
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, raw: Any, namespace: str = "", source: str = "") -> "InjectionConfig":
        where = source or "injection config"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected a mapping with name, template, arguments")
        # keys as 0.9 read them: case-insensitive, unknown ones dropped (with a warning), numbers
        # where strings belong turned into strings
        raw, warnings = keys.read_injection_config(raw, where)
        for key in ("name", "template"):
            if not isinstance(raw.get(key), str) or not raw.get(key):
                raise ConfigError(f"{where}: {key!r} is required and must be a string")
        args = raw.get("arguments") or {}
        if not isinstance(args, Mapping):
            raise ConfigError(f"{where}: arguments must be a mapping of string to string")
        bad = [k for k, v in args.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ConfigError(
                f"{where}: argument {bad[0]!r} must be a string (quote numbers and booleans)")
        selector = None
        if raw.get("selector") is not None:
            selector = PodSelector.parse(raw["selector"], where, namespace)
            warnings.extend(selector.warnings)
        missing = raw.get("missingVolumes")
        if missing is not None and missing not in MISSING_VOLUME_POLICIES:
            raise ConfigError(
                f"{where}: missingVolumes must be one of {', '.join(MISSING_VOLUME_POLICIES)}")
        return cls(raw["name"], raw["template"], dict(args), namespace, selector, missing,
                   source or raw["name"], tuple(warnings))

    def with_arguments(self, extra: Mapping[str, str]) -> "InjectionConfig":
        merged = {**self.arguments, **extra}
        return dataclasses.replace(self, arguments=merged)


def injection_configs_from_configmap(obj: Any, default_namespace: str = ""
                                     ) -> tuple[list[InjectionConfig], list["ConfigProblem"]]:
    """Every data entry of an injection-config ConfigMap; bad entries become problems."""
    view = configmap_view(obj, default_namespace)
    configs: list[InjectionConfig] = []
    problems: list[ConfigProblem] = []
    for key in sorted(view.data):
        where = f"configmap {view.ref} key {key}"
        try:
            try:
                raw = yaml.safe_load(view.data[key])
            except yaml.YAMLError as exc:
                raise ConfigError(f"{where}: invalid YAML: {_yaml_reason(exc)}") from None
            configs.append(InjectionConfig.parse(raw, view.namespace, where))
        except ConfigError as exc:
            problems.append(ConfigProblem(view.ref, str(exc)))
    return configs, problems


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1} column {mark.column + 1}"
    return problem


@dataclass(frozen=True)
class ConfigProblem:
    source: str  # namespace/name of the ConfigMap
    message: str


@dataclass(frozen=True)
class ConfigSet:
    """An immutable snapshot: readers hold a reference while writers build a new one."""

    templates: Mapping[str, SidecarTemplate] = field(default_factory=dict)
    configs: Mapping[tuple[str, str], InjectionConfig] = field(default_factory=dict)
    problems: tuple[ConfigProblem, ...] = ()

    def lookup(self, namespace: str, name: str) -> InjectionConfig | None:
        return self.configs.get((namespace, name))


def build_config_set(template_configmaps: Iterable[Any], injection_configmaps: Iterable[Any],
                     template_namespace: str = "") -> ConfigSet:
    """Turn listed ConfigMaps into a ConfigSet, keeping every valid entry.

    Templates outside ``template_namespace`` (when given) are ignored; an injection config
    naming a template that does not exist is reported but kept, so the webhook can say why
    it did not inject.
    """
    templates: dict[str, SidecarTemplate] = {}
    problems: list[ConfigProblem] = []
    for obj in template_configmaps:
        try:
            view = configmap_view(obj, template_namespace)
            if template_namespace and view.namespace != template_namespace:
                continue
            tpl = SidecarTemplate.from_configmap(obj, template_namespace)
        except ConfigError as exc:
            problems.append(ConfigProblem(_ref_of(obj), str(exc)))
            continue
        templates[tpl.name] = tpl
    configs: dict[tuple[str, str], InjectionConfig] = {}
    for obj in injection_configmaps:
        try:
            found, bad = injection_configs_from_configmap(obj)
        except ConfigError as exc:
            problems.append(ConfigProblem(_ref_of(obj), str(exc)))
            continue
        problems.extend(bad)
        for cfg in found:
            key = (cfg.namespace, cfg.name)
            if key in configs:
                problems.append(ConfigProblem(
                    cfg.source, f"{cfg.source}: injection config {cfg.name!r} already defined by "
                                f"{configs[key].source}; keeping the first"))
                continue
            if cfg.template not in templates:
                problems.append(ConfigProblem(
                    cfg.source, f"{cfg.source}: template {cfg.template!r} not found"))
            configs[key] = cfg
    return ConfigSet(templates, configs, tuple(problems))


def _ref_of(obj: Any) -> str:
    try:
        if isinstance(obj, Mapping):
            meta = obj.get("metadata") or {}
            ns, name = meta.get("namespace"), meta.get("name")
        else:
            ns, name = obj.metadata.namespace, obj.metadata.name
        return f"{ns}/{name}" if ns else str(name)
    except Exception:  # noqa: BLE001 - only used to label a problem
        return "<unnamed>"


# ---------------------------------------------------------------------------------------------
# settings: flag, then environment, then default


def own_namespace(path: str = SERVICE_ACCOUNT_NAMESPACE_FILE, fallback: str = "default") -> str:
    """The pod's namespace from the service-account mount; ``fallback`` outside a cluster."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError:
        return fallback
    return value or fallback


@dataclass(frozen=True)
class Settings:
    template_namespace: str
    template_labels: Mapping[str, str]
    configmap_labels: Mapping[str, str]

    @classmethod
    def resolve(cls, template_namespace: str | None = None, template_labels: str | None = None,
                configmap_labels: str | None = None,
                environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ

        def pick(flag: str | None, var: str) -> str | None:
            if flag is not None:
                return flag
            value = env.get(var)
            return value if value else None

        ns = pick(template_namespace, "TEMPLATE_NAMESPACE") or own_namespace()
        tl = pick(template_labels, "TEMPLATE_LABELS") or DEFAULT_TEMPLATE_LABELS
        cl = pick(configmap_labels, "CONFIGMAP_LABELS") or DEFAULT_CONFIGMAP_LABELS
        tsel, csel = parse_label_selector(tl), parse_label_selector(cl)
        if not tsel:
            raise ConfigError("template labels must select something (e.g. "
                              f"{DEFAULT_TEMPLATE_LABELS})")
        if not csel:
            raise ConfigError("configmap labels must select something (e.g. "
                              f"{DEFAULT_CONFIGMAP_LABELS})")
        return cls(ns, tsel, csel)


class ConfigStore:
    """Holds the current ConfigSet; a swap replaces it atomically for every later reader."""

    def __init__(self, initial: ConfigSet | None = None) -> None:
        self._lock = threading.Lock()
        self._current = initial if initial is not None else ConfigSet()
        self._loaded = threading.Event()
        self.generation = 0
        if initial is not None:
            self._loaded.set()

    @property
    def current(self) -> ConfigSet:
        return self._current  # a single reference read: never a half-built set

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    def swap(self, new: ConfigSet) -> ConfigSet:
        with self._lock:
            old, self._current = self._current, new
            self.generation += 1
        self._loaded.set()
        return old
