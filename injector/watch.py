"""Keep the ConfigSet in step with the cluster: list + watch both ConfigMap selectors, debounce
(3 s), re-list everything, swap atomically. Watch expiry (410), API server restarts and RBAC
errors are survived with backoff; the previous ConfigSet keeps serving meanwhile.

The decision logic (:func:`event_action`, :class:`Debouncer`, :func:`load_config_dir`) is plain
Python on real ConfigMap objects so it can be exercised without an API server.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from injector.config import (
    ConfigProblem,
    ConfigSet,
    ConfigStore,
    Settings,
    build_config_set,
    configmap_view,
    labels_match,
    selector_string,
)
from injector.manifests import ManifestError, iter_objects, load_stream

log = logging.getLogger("chaos-injector.watch")

DEBOUNCE_SECONDS = 3.0
WATCH_TIMEOUT_SECONDS = 300


# ---------------------------------------------------------------------------------------------
# decisions


@dataclass(frozen=True)
class Action:
    kind: str  # "reload" | "relist" | "ignore" | "backoff"
    reason: str = ""


def event_action(event: Mapping[str, Any], selector: Mapping[str, str],
                 namespace: str | None = None) -> Action:
    """What a watch event means for the config set.

    ``event`` is what ``kubernetes.watch.Watch.stream`` yields: ``type`` and ``object``
    (a V1ConfigMap, or the raw Status dict for ERROR events).
    """
    etype = event.get("type")
    obj = event.get("object")
    if etype == "BOOKMARK":
        return Action("ignore", "bookmark")
    if etype == "ERROR":
        raw = event.get("raw_object") or obj
        code = raw.get("code") if isinstance(raw, Mapping) else getattr(raw, "code", None)
        if code == 410:
            return Action("relist", "watch expired (410 Gone)")
        return Action("backoff", f"watch error {code}")
    if etype not in ("ADDED", "MODIFIED", "DELETED"):
        return Action("ignore", f"unknown event type {etype}")
    try:
        view = configmap_view(obj)
    except Exception:  # noqa: BLE001 - a ConfigMap with no name still means "something changed"
        return Action("reload", f"{etype} unreadable ConfigMap")
    if namespace and view.namespace != namespace:
        return Action("ignore", f"{view.ref} outside {namespace}")
    # DELETED of an object whose labels no longer match still matters: it was in the set
    if etype != "DELETED" and not labels_match(selector, view.labels):
        return Action("ignore", f"{view.ref} does not match {selector_string(selector)}")
    return Action("reload", f"{etype} {view.ref}")


def backoff_delays(base: float = 1.0, cap: float = 30.0) -> Iterator[float]:
    """Exponential backoff with jitter: 1, 2, 4, ... capped, each scaled by 0.5-1.0."""
    delay = base
    while True:
        yield delay * (0.5 + random.random() / 2)
        delay = min(cap, delay * 2)


class Debouncer:
    """Calls ``action`` once events have stopped arriving for ``delay`` seconds.

    A burst of ConfigMap edits (``kubectl apply -f dir/``) costs one re-list, not one per edit.
    """

    def __init__(self, action: Callable[[], None], delay: float = DEBOUNCE_SECONDS) -> None:
        self.action = action
        self.delay = delay
        self._cond = threading.Condition()
        self._due: float | None = None
        self._stopped = False
        self.fired = 0
        self._thread = threading.Thread(target=self._run, name="debounce", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        with self._cond:
            self._due = time.monotonic() + self.delay
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (self._due is None or time.monotonic() < self._due):
                    timeout = None if self._due is None else self._due - time.monotonic()
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                self._due = None
            try:
                self.action()
            except Exception:  # noqa: BLE001 - a failed reload is retried by the caller
                log.exception("debounced action failed")
            self.fired += 1


# ---------------------------------------------------------------------------------------------
# offline source: a directory of ConfigMap manifests (for `webhook --config-dir` and tests)


def manifest_files(path: str) -> list[str]:
    """``path`` itself when it is a file, else every *.yaml/*.yml/*.json file under it."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files)
                     if f.endswith((".yaml", ".yml", ".json")))
    return found


def load_config_dir(path: str, settings: Settings) -> ConfigSet:
    """Read the manifests in ``path`` (a directory or one file); sort ConfigMaps by the
    selectors. Unreadable files become problems, like invalid ConfigMaps."""
    templates, injections = [], []
    extra_problems = []
    for full in manifest_files(path):
        try:
            with open(full, encoding="utf-8") as f:
                stream = load_stream(f.read(), full)
        except (OSError, ManifestError) as exc:
            extra_problems.append(str(exc))
            continue
        for doc in stream.docs:
            for obj in iter_objects(doc):
                if not isinstance(obj, dict) or obj.get("kind") != "ConfigMap":
                    continue
                labels = (obj.get("metadata") or {}).get("labels") or {}
                if labels_match(settings.template_labels, labels):
                    templates.append(obj)
                elif labels_match(settings.configmap_labels, labels):
                    injections.append(obj)
    # a template manifest without a namespace belongs to the injector's namespace
    cs = build_config_set(templates, injections, settings.template_namespace)
    if extra_problems:
        cs = ConfigSet(cs.templates, cs.configs,
                       cs.problems + tuple(ConfigProblem(path, p) for p in extra_problems))
    return cs


# ---------------------------------------------------------------------------------------------
# the Kubernetes client side


def load_kube_config(kubeconfig: str | None) -> Any:
    """An ApiClient from ``--kubeconfig``, else in-cluster config, else ~/.kube/config."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


def describe_api_error(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status == 403:
        return f"forbidden (RBAC): {getattr(exc, 'reason', '')}; the injector's ServiceAccount " \
               "needs get/list/watch on configmaps and namespaces"
    if status == 401:
        return "unauthorized: the injector's credentials were rejected"
    if status is not None:
        return f"API error {status}: {getattr(exc, 'reason', '')}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class ConfigMapWatcher:
    """Two watch loops (templates in one namespace, injection configs everywhere) feeding a
    debounced re-list that swaps the ConfigStore."""

    def __init__(self, api_client: Any, settings: Settings, store: ConfigStore,
                 debounce: float = DEBOUNCE_SECONDS,
                 on_reload: Callable[[ConfigSet | None, str], None] | None = None) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.settings = settings
        self.store = store
        self.on_reload = on_reload or (lambda cs, err: None)
        self._stop = threading.Event()
        self._debouncer = Debouncer(self._reload_with_retry, debounce)
        self._threads: list[threading.Thread] = []
        self._watches: list[Any] = []

    # listing ----------------------------------------------------------------------------------

    def _list_templates(self, **kw: Any) -> Any:
        return self.core.list_namespaced_config_map(
            self.settings.template_namespace,
            label_selector=selector_string(self.settings.template_labels), **kw)

    def _list_injection_configs(self, **kw: Any) -> Any:
        return self.core.list_config_map_for_all_namespaces(
            label_selector=selector_string(self.settings.configmap_labels), **kw)

    def reload(self) -> ConfigSet:
        templates = self._list_templates().items
        injections = self._list_injection_configs().items
        cs = build_config_set(templates, injections, self.settings.template_namespace)
        self.store.swap(cs)
        for p in cs.problems:
            log.warning("invalid config %s: %s", p.source, p.message)
        log.info("loaded %d template(s), %d injection config(s), %d problem(s)",
                 len(cs.templates), len(cs.configs), len(cs.problems))
        self.on_reload(cs, "")
        return cs

    def _reload_with_retry(self) -> None:
        for delay in backoff_delays():
            if self._stop.is_set():
                return
            try:
                self.reload()
                return
            except Exception as exc:  # noqa: BLE001 - keep the previous set, try again
                msg = describe_api_error(exc)
                log.warning("re-list failed, keeping the previous configs: %s", msg)
                self.on_reload(None, msg)
            if self._stop.wait(delay):
                return

    # watching ---------------------------------------------------------------------------------

    def _watch_loop(self, list_fn: Callable[..., Any], selector: Mapping[str, str],
                    namespace: str | None) -> None:
        from kubernetes import watch

        delays = backoff_delays()
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = list_fn().metadata.resource_version
                w = watch.Watch()
                self._watches.append(w)
                for event in w.stream(list_fn, resource_version=resource_version,
                                      timeout_seconds=WATCH_TIMEOUT_SECONDS,
                                      allow_watch_bookmarks=True):
                    if self._stop.is_set():
                        break
                    action = event_action(event, selector, namespace)
                    if action.kind == "reload":
                        log.debug("change: %s", action.reason)
                        self._debouncer.notify()
                    elif action.kind in ("relist", "backoff"):
                        raise _Restart(action.reason)
                resource_version = w.resource_version or resource_version
                delays = backoff_delays()  # a clean timeout: the connection was healthy
            except _Restart as exc:
                log.info("re-listing: %s", exc)
                resource_version = None
                self._debouncer.notify()
            except Exception as exc:  # noqa: BLE001 - 410, API restarts, RBAC: all retried
                if getattr(exc, "status", None) == 410:
                    log.info("watch expired, re-listing")
                    resource_version = None
                    self._debouncer.notify()
                    continue
                log.warning("watch failed: %s", describe_api_error(exc))
                resource_version = None
                if self._stop.wait(next(delays)):
                    return
                self._debouncer.notify()  # something may have changed while we were blind

    def start(self) -> None:
        threading.Thread(target=self._reload_with_retry, name="initial-list", daemon=True).start()
        loops = [
            (self._list_templates, self.settings.template_labels,
             self.settings.template_namespace),
            (self._list_injection_configs, self.settings.configmap_labels, None),
        ]
        for fn, sel, ns in loops:
            t = threading.Thread(target=self._watch_loop, args=(fn, sel, ns),
                                 name=f"watch-{selector_string(sel)}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for w in self._watches:
            try:
                w.stop()
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
        self._debouncer.stop()


class _Restart(Exception):
    pass


class NamespaceAnnotationCache:
    """Namespace annotations for the ``init-request`` check, cached for ``ttl`` seconds."""

    def __init__(self, api_client: Any, ttl: float = 10.0) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Mapping[str, str]]] = {}
        self._lock = threading.Lock()

    def __call__(self, namespace: str) -> Mapping[str, str]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(namespace)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        ns = self.core.read_namespace(namespace, _request_timeout=5)
        annotations = dict(ns.metadata.annotations or {})
        with self._lock:
            self._cache[namespace] = (now, annotations)
        return annotations
