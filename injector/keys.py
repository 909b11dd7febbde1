"""Read YAML documents the way Chaos Mesh 0.9 read them: ghodss/yaml (YAML -> JSON) then Go's
encoding/json into 0.9's structs (``InjectionConfig`` for a rendered template, ``TemplateArgs``
for an injection config), whose fields are Kubernetes types (Container, Volume, EnvVar, ...).

What that pipeline does, and this module therefore does too:

* a key names a field by exact match, else by case-insensitive match (so ``imagePullpolicy`` is
  ``imagePullPolicy``; the seed page and 0.9's own test template write it that way);
* a key that names no field is dropped (0.9 silently; here with a warning);
* when two keys name the same field the later one wins (encoding/json decodes both in order);
* a number or boolean where the field is a string becomes that string (ghodss/yaml's coercion:
  ``value: 1`` in an EnvVar is ``"1"``); Quantity and IntOrString fields are left alone, as
  their own JSON decoders are what ghodss defers to.

Map keys (labels, resource names, postStart's container names) are data, never folded. The
field names per type come from the Kubernetes JSON schemas bundled with kubernetes-validate, for
the Kubernetes version the output is validated against.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any, Mapping

_CORE = "#/$defs/io.k8s.api.core.v1."


def _ref(kind: str) -> dict:
    return {"$ref": _CORE + kind}


def _list_of(node: dict) -> dict:
    return {"type": ["array", "null"], "items": node}


_STRING = {"type": ["string", "null"]}
_STRINGS = _list_of(_STRING)
_STRING_MAP = {"type": ["object", "null"], "additionalProperties": _STRING}

# Field names are spelled as the documents spell them; where 0.9's Go field has no json tag its
# key is the Go name (Name), which case-insensitive matching makes the same as "name".

# 0.9's InjectionConfig (pkg/webhook/config/config.go); the watcher overwrites name and selector
# with the injection config's values.
TEMPLATE = {
    "title": "the template",
    "properties": {
        "name": {"x-ignored": "the injection config's name is used"},
        "selector": {"x-ignored": "the injection config's selector is used"},
        "containers": _list_of(_ref("Container")),
        "volumes": _list_of(_ref("Volume")),
        "env": _list_of(_ref("EnvVar")),
        "volumeMounts": _list_of(_ref("VolumeMount")),
        "hostAliases": _list_of(_ref("HostAlias")),
        "initContainers": _list_of(_ref("Container")),
        "shareProcessNamespace": {"type": ["boolean", "null"]},
        "postStart": {"type": ["object", "null"], "additionalProperties": _ref("ExecAction")},
        "missingVolumes": _STRING,  # chaos-injector's extension
    },
}

# 0.9's v1alpha1.SelectorSpec (api/v1alpha1/common_types.go)
SELECTOR = {
    "title": "selector",
    "properties": {
        "namespaces": _STRINGS,
        "nodes": _STRINGS,
        "pods": {"type": ["object", "null"], "additionalProperties": _STRINGS},
        "nodeSelectors": _STRING_MAP,
        "fieldSelectors": _STRING_MAP,
        "labelSelectors": _STRING_MAP,
        "annotationSelectors": _STRING_MAP,
        "podPhaseSelectors": _STRINGS,
    },
}

# 0.9's TemplateArgs (its yaml tags are never read: ghodss/yaml decodes through encoding/json);
# namespace is overwritten with the ConfigMap's namespace.
INJECTION_CONFIG = {
    "title": "the injection config",
    "properties": {
        "namespace": {"x-ignored": "the ConfigMap's namespace is used"},
        "name": _STRING,
        "template": _STRING,
        "arguments": _STRING_MAP,
        "selector": SELECTOR,
        "missingVolumes": _STRING,  # chaos-injector's extension
    },
}


@functools.lru_cache(maxsize=8)
def kubernetes_definitions(kube_version: str) -> Mapping[str, Any]:
    """The ``$defs`` of the bundled schema of the newest version not newer than ``kube_version``."""
    from kubernetes_validate import utils

    wanted = _version_key(kube_version)
    versions = [v for v in utils.all_versions() if _version_key(v) <= wanted]
    if not versions:
        return {}
    path = f"kubernetes-json-schema/v{versions[-1]}-local/_definitions.json"
    return utils.schema_contents(path, kube_version).get("$defs", {})


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.lstrip("v").split(".")[:2])
    except ValueError:
        return (0,)


def _fold_equal(a: str, b: str) -> bool:
    # encoding/json folds with simple (one rune to one rune) Unicode case folding, which also
    # maps the Kelvin sign to k and the long s to s; str.casefold would map ß to ss, Go does not
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x != y and not (_one(x.lower()) == _one(y.lower()) or _one(x.upper()) == _one(y.upper())):
            return False
    return True


def _one(s: str) -> str:
    return s if len(s) == 1 else "\0"


def field_for(key: str, fields: Mapping[str, Any]) -> str | None:
    """The field ``key`` decodes into: exact match first, else the first case-insensitive one."""
    if key in fields:
        return key
    return next((f for f in fields if _fold_equal(key, f)), None)


def _go_float32(value: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 32): how ghodss/yaml turns a float into a string."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    f32 = struct.unpack("f", struct.pack("f", value))[0]
    for prec in range(9):  # the shortest digits that read back as the same float32
        text = f"{f32:.{prec}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == f32:
            break
    mantissa, exp_text = text.split("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    exp = int(exp_text)
    if exp < -4 or exp >= 6:  # Go's %g switches to %e at these exponents for shortest output
        frac = f".{digits[1:]}" if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{frac}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    whole, frac = digits[:exp + 1].ljust(exp + 1, "0"), digits[exp + 1:]
    return f"{sign}{whole}{'.' + frac if frac else ''}"


class Reader:
    """One document's reading; ``warnings`` collects one line per dropped or folded key."""

    def __init__(self, where: str, definitions: Mapping[str, Any] | None = None) -> None:
        self.where = where
        self.defs = definitions or {}
        self.warnings: list[str] = []

    def _resolve(self, node: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
        name = ""
        while "$ref" in node:
            name = node["$ref"].rsplit(".", 1)[-1]
            node = self.defs.get(node["$ref"].split("/")[-1], {})
        return node, name or node.get("title", "")

    def read(self, value: Any, node: Mapping[str, Any], path: str = "") -> Any:
        node, type_name = self._resolve(node)
        if not node:  # a type this schema version does not know: keep the value as it is
            return value
        if isinstance(value, Mapping) and "properties" in node:
            return self._struct(value, node["properties"], type_name, path)
        if isinstance(value, list) and "items" in node:
            return [self.read(v, node["items"], f"{path}[{i}]") for i, v in enumerate(value)]
        extra = node.get("additionalProperties")
        if isinstance(value, Mapping) and isinstance(extra, Mapping):
            return {k: self.read(v, extra, f"{path}.{k}" if path else str(k))
                    for k, v in value.items()}
        types = node.get("type")
        if isinstance(types, list) and "string" in types and "oneOf" not in node:
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, int):
                return str(value)
            if isinstance(value, float):
                return _go_float32(value)
        return value

    def _struct(self, value: Mapping[str, Any], fields: Mapping[str, Any], type_name: str,
                path: str) -> dict:
        out: dict[str, Any] = {}
        source: dict[str, str] = {}
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            name = field_for(key, fields) if isinstance(key, str) else None
            if name is None:
                self.warnings.append(f"{self.where}: {here} is not a field of {type_name}; "
                                     "ignored, as Chaos Mesh 0.9 did")
                continue
            ignored = fields[name].get("x-ignored")
            if ignored:
                self.warnings.append(f"{self.where}: {here} ignored: {ignored}")
                continue
            if name != key:
                self.warnings.append(f"{self.where}: {here} read as {name} (keys match "
                                     "case-insensitively, as in Chaos Mesh 0.9)")
            if name in out:
                self.warnings.append(f"{self.where}: {source[name]} and {key} both set {name}"
                                     f"{' of ' + path if path else ''}; the later ({key}) wins")
            out[name] = self.read(item, fields[name], f"{path}.{name}" if path else name)
            source[name] = str(key)
        return out


def read_template(raw: Mapping[str, Any], kube_version: str, where: str) -> tuple[dict, list[str]]:
    reader = Reader(where, kubernetes_definitions(kube_version))
    return reader.read(raw, TEMPLATE), reader.warnings


def read_injection_config(raw: Mapping[str, Any], where: str) -> tuple[dict, list[str]]:
    reader = Reader(where)
    return reader.read(raw, INJECTION_CONFIG), reader.warnings
