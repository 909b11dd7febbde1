"""The few API-server calls the engine makes, on the official ``kubernetes`` client.

Kept to one small surface (:class:`Cluster`) so the engine is plain synchronous Python; the
test suite runs the engine on this same class against a real kube-apiserver
(tests/kubeapi.py).
Finalizer edits carry the object's resourceVersion (optimistic locking): the finalizer list is
the experiment's record of which pods hold a fault, and two writers must not lose an entry.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Protocol

from controller.selection import PodSource
from controller.spec import GROUP, KIND, PLURAL, VERSION


class Conflict(RuntimeError):
    """The object changed since it was read (HTTP 409) or is being deleted (new finalizer)."""


class Cluster(PodSource, Protocol):
    def get_iochaos(self, namespace: str, name: str) -> dict | None: ...
    def set_finalizers(self, obj: Mapping[str, Any], finalizers: list[str]) -> dict: ...
    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


def _sel(m: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in m.items())


def no_empty_strings(value: Any, in_list: bool = False) -> Any:
    """A status merge patch without empty strings: an object key whose value is "" becomes
    null (a merge patch deletes it), and inside list items it is left out. Measured on
    kube-apiserver 1.20 (e2e/run): a merge patch carrying `"reason": ""` is refused with
    `status.reason in body must be of type string: "null"`, so the whole status write failed
    whenever a reason was empty. Readers treat a missing key as the empty string."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if v == "":
                if not in_list:
                    out[k] = None
                continue
            out[k] = no_empty_strings(v)
        return out
    if isinstance(value, list):
        return [no_empty_strings(v, in_list=True) for v in value]
    return value


class KubeCluster:
    """:class:`Cluster` on the kubernetes client (kubeconfig or in-cluster config)."""

    def __init__(self, api_client: Any = None, component: str = "chaosfs-controller") -> None:
        from kubernetes import client

        self._client = client
        self.api = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.component = component

    def _plain(self, obj: Any) -> dict:
        return self.api.sanitize_for_serialization(obj)

    def _not_found(self, exc: Exception) -> bool:
        return getattr(exc, "status", None) == 404

    def get_pod(self, namespace: str, name: str) -> dict | None:
        try:
            return self._plain(self.core.read_namespaced_pod(name, namespace))
        except self._client.ApiException as exc:
            if self._not_found(exc):
                return None
            raise

    def list_pods(self, labels: Mapping[str, str], fields: Mapping[str, str]) -> list[dict]:
        res = self.core.list_pod_for_all_namespaces(label_selector=_sel(labels),
                                                    field_selector=_sel(fields))
        return [self._plain(p) for p in res.items]

    def get_node(self, name: str) -> dict | None:
        try:
            return self._plain(self.core.read_node(name))
        except self._client.ApiException as exc:
            if self._not_found(exc):
                return None
            raise

    def list_nodes(self, labels: Mapping[str, str]) -> list[dict]:
        return [self._plain(n) for n in self.core.list_node(label_selector=_sel(labels)).items]

    def get_iochaos(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except self._client.ApiException as exc:
            if self._not_found(exc):
                return None
            raise

    def set_finalizers(self, obj: Mapping[str, Any], finalizers: list[str]) -> dict:
        meta = obj["metadata"]
        body = {"metadata": {"finalizers": finalizers,
                             "resourceVersion": meta["resourceVersion"]}}
        try:
            return self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body)
        except self._client.ApiException as exc:
            if exc.status in (409, 422):  # 422: no new finalizers while deleting
                raise Conflict(f"IoChaos {meta['namespace']}/{meta['name']} changed") from None
            raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": no_empty_strings(status)})

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = dt.datetime.now(dt.timezone.utc)
        c = self._client
        ev = c.CoreV1Event(
            metadata=c.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=c.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=KIND, name=meta["name"],
                namespace=meta["namespace"], uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion")),
            type=type_, reason=reason, message=message[:1024], count=1,
            first_timestamp=now, last_timestamp=now,
            source=c.V1EventSource(component=self.component))
        self.core.create_namespaced_event(meta["namespace"], ev)
