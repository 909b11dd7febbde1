"""A real kube-apiserver and etcd for the test session, and each test's own namespace in it.

`control_plane()` starts e2e/control_plane.py's etcd + kube-apiserver 1.20 on free loopback
ports in a temp dir of its own, applies deploy/iochaos-crd.yaml and waits until it is
Established; the processes and the dir go when the block ends, however it ends (SIGTERM
included). When kube-apiserver is not in e2e/run's cache it is built first, with the same
script e2e/run uses, so the e2e later finds it there.

`Namespace` is one test's namespace: pods as a kubelet would report them (there is none: no
scheduler either, so spec.nodeName is set and status written through the status
subresource), and the few kubectl verbs the tests use, all on the real API. The engine under
test gets `Namespace.cluster`, the deployed controller's own `controller.kube.KubeCluster`.
"""
from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from controller.kube import KubeCluster
from controller.spec import GROUP, KIND, PLURAL, VERSION
from e2e.control_plane import ControlPlane, ControlPlaneError, cache_dir, ensure_binaries

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "deploy" / "iochaos-crd.yaml"
NODE_NAME = "chaosfs-test-node"  # no Node object: the API server does not check the name


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job cancelled) as KeyboardInterrupt, which pytest answers by tearing
    the session's fixtures down: the default action would leave etcd and kube-apiserver
    running (they are in sessions of their own)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def control_plane(say: Callable[[str], None] = print) -> Iterator[Any]:
    """An ApiClient of a fresh control plane with the IoChaos CRD Established."""
    from kubernetes import config

    cache = cache_dir()
    ensure_binaries(cache, say)
    api = None
    with _sigterm_as_interrupt():
        work = Path(tempfile.mkdtemp(prefix="chaosfs-kapi-", dir="/tmp"))
        plane = ControlPlane(cache, work)
        try:
            t0 = time.monotonic()
            plane.up()
            # the kubeconfig loader the controller uses outside a cluster, into a client of
            # its own rather than the process-wide default
            api = config.new_client_from_config(config_file=str(plane.kubeconfig))
            establish_crd(api)
            say(f"kube-apiserver + etcd up at {plane.server} in {time.monotonic() - t0:.1f} s")
            yield api
        finally:
            if api is not None:
                api.close()
            problems = plane.down()
            shutil.rmtree(work, ignore_errors=True)
    if problems:
        raise ControlPlaneError(f"control plane teardown: {'; '.join(problems)}")


def establish_crd(api: Any, timeout: float = 30.0) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    body = yaml.safe_load(CRD.read_text())
    ext.create_custom_resource_definition(body)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(body["metadata"]["name"])
        conds = {c.type: c for c in (crd.status.conditions or [])}
        if "Established" in conds and conds["Established"].status == "True":
            return
        time.sleep(0.1)
    raise ControlPlaneError(f"CRD {body['metadata']['name']} not Established after "
                            f"{timeout:.0f} s: {[(c.type, c.status, c.message) for c in conds.values()]}")


_serial = itertools.count(1)


def namespace_name(test_name: str) -> str:
    """A DNS label from the test's name, short: the rule ids the controller derives from
    namespace and experiment name must fit the sidecar's 128 characters readably."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-")
    return f"t{next(_serial)}-{slug[:24].rstrip('-')}"


class Namespace:
    """One test's namespace on the real API server."""

    def __init__(self, api: Any, name: str) -> None:
        from kubernetes import client

        self.ns = name
        self.cluster = KubeCluster(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.core.create_namespace({"metadata": {"name": name}})

    # ------------------------------------------------------------------ pods
    def add_pod(self, name: str, labels: dict[str, str], sidecar_port: int) -> None:
        """A running pod whose chaosfs container names a daemon on loopback, as the
        injector's template does (`-addr=`), so the controller finds the port itself."""
        self.core.create_namespaced_pod(self.ns, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": NODE_NAME, "containers": [
                {"name": "etcd", "image": "localhost/etcd:test"},
                {"name": "chaosfs", "image": "localhost/chaos-fs:test",
                 "command": ["/usr/local/bin/chaosfs", f"-addr=127.0.0.1:{sidecar_port}",
                             "-pidfile=/tmp/fuse/pid"]}]}})
        self.core.patch_namespaced_pod_status(name, self.ns, {"status": {
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "hostIP": "127.0.0.1"}})

    # ------------------------------------------------------------------ IoChaos
    def create(self, name: str, spec: dict) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name}, "spec": spec})

    def get(self, name: str) -> dict | None:
        return self.cluster.get_iochaos(self.ns, name)

    def edit_spec(self, name: str, spec: dict) -> None:
        """`kubectl edit`: the whole spec replaced; the API server bumps the generation."""
        obj = self.get(name)
        obj["spec"] = spec
        self.custom.replace_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, obj)

    def annotate(self, name: str, key: str, value: str | None) -> None:
        """`kubectl annotate` (value None: `key-`)."""
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, {"metadata": {"annotations": {key: value}}})

    def delete(self, name: str) -> None:
        """`kubectl delete --wait=false`: gone at once without finalizers, else marked."""
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    # ------------------------------------------------------------------ events
    @property
    def events(self) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about this namespace's IoChaos objects,
        oldest first."""
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.kind={KIND}").items
        # the API lists by name, and the names are random (generateName); a resourceVersion
        # is etcd's revision at the write, so it orders creations
        items.sort(key=lambda e: int(e.metadata.resource_version))
        return [(e.type, e.reason, e.message) for e in items]

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]
