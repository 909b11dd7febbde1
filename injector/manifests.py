"""Reading and writing manifest streams (multi-document YAML, JSON, ``kind: List``) and
validating objects against the Kubernetes OpenAPI schema (``kubernetes-validate``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import yaml

DEFAULT_KUBE_VERSION = "1.29"


class ManifestError(ValueError):
    """Unreadable or invalid manifest; str() is one line."""


@dataclass(frozen=True)
class Stream:
    docs: list[Any]
    fmt: str  # "json" or "yaml"


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # templates and scripts stay readable: multi-line strings as literal blocks
    if "\n" in value and not any(ch in value for ch in "\t\r") and \
            not value.endswith((" ", "\n\n")) and " \n" not in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1} column {mark.column + 1}"
    return problem


def load_stream(text: str, source: str = "input") -> Stream:
    """Parse JSON (one value) or YAML (any number of documents); empty documents dropped."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{source}: invalid JSON: {exc.msg} at line {exc.lineno} "
                                f"column {exc.colno}") from None
        docs = value if isinstance(value, list) else [value]
        return Stream(docs, "json")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: invalid YAML: {_yaml_where(exc)}") from None
    return Stream(docs, "yaml")


def dump_stream(docs: list[Any], fmt: str) -> str:
    if fmt == "json":
        if len(docs) == 1:
            return json.dumps(docs[0], indent=2) + "\n"
        return json.dumps(docs, indent=2) + "\n"
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         explicit_start=len(docs) > 1, allow_unicode=True)


def map_objects(doc: Any, fn: Callable[[dict], dict]) -> Any:
    """Apply ``fn`` to every object of a document, descending into ``kind: *List`` items."""
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") \
            and isinstance(doc.get("items"), list):
        out = dict(doc)
        out["items"] = [map_objects(item, fn) for item in doc["items"]]
        return out
    return fn(doc)


def iter_objects(doc: Any) -> Iterable[Any]:
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") \
            and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from iter_objects(item)
    else:
        yield doc


def describe(obj: Any) -> str:
    if not isinstance(obj, dict):
        return "document"
    meta = obj.get("metadata") or {}
    name = "<unnamed>"
    if isinstance(meta, dict):
        name = meta.get("name") or meta.get("generateName") or name
    return f"{obj.get('kind', '<no kind>')} {name}"


def _path_text(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate_object(obj: Any, kube_version: str = DEFAULT_KUBE_VERSION, strict: bool = True) -> None:
    """Validate one object (a List's items one by one) against the OpenAPI schema.

    ``strict`` also rejects unknown fields, the usual symptom of a typo in a template.
    Raises ManifestError naming the object and the field.
    """
    import kubernetes_validate  # imported lazily: loading it costs ~0.2 s

    for item in iter_objects(obj):
        if not isinstance(item, dict) or not item.get("apiVersion") or not item.get("kind"):
            raise ManifestError(f"{describe(item)}: not a Kubernetes object "
                                "(apiVersion and kind are required)")
        try:
            kubernetes_validate.validate(item, kube_version, strict)
        except kubernetes_validate.ValidationError as exc:
            field = _path_text(exc.absolute_path)
            message = exc.message.splitlines()[0]
            if len(message) > 200:
                message = message[:200] + "..."
            raise ManifestError(f"{describe(item)}: invalid field {field}: {message}") from None
        except kubernetes_validate.SchemaNotFoundError:
            # CRDs and kinds unknown to this schema version pass through untouched
            continue
        except Exception as exc:  # VersionNotSupportedError and friends
            raise ManifestError(f"cannot validate against Kubernetes {kube_version}: "
                                f"{str(exc).splitlines()[0]}") from None
