"""Which pods an experiment touches: 0.9.1's ``SelectPods`` and ``filterPodsByMode``.

Selection (`pkg/utils/select.go` in 0.9.1), in 0.9's order:
1. ``pods`` given: exactly those pods (a missing one is skipped) and nothing else, no other
   filter applies;
2. otherwise list pods (cluster-wide) by ``labelSelectors`` and ``fieldSelectors`` (both
   equality-only, server-side), then keep pods on the ``nodes`` named or on nodes matching
   ``nodeSelectors`` (if either is given), then filter by ``namespaces``, by
   ``annotationSelectors`` and by ``podPhaseSelectors``.
   ``namespaces`` and ``podPhaseSelectors`` are label-selector *existence* terms, as in 0.9
   (it borrowed chaoskube's filters): ``demo`` includes, ``!demo`` excludes; with only
   exclusions everything else is in.

No pod selected is an error (0.9: "no pod is selected"). The mode then picks from the
selection; a mode that picks zero pods (``fixed-percent`` 10 of 3 pods) is *not* an error, as
in 0.9: the experiment runs on nobody (chaosfs says so in an Event).

The API access is a small protocol (:class:`PodSource`) so the rules can be tested on plain
pod dicts and run against the API server through :mod:`controller.kube`.
"""

from __future__ import annotations

import math
import random
from typing import Any, Mapping, Protocol, Sequence

from controller.spec import Selector, go_atoi


class SelectionError(RuntimeError):
    """The selector could not be evaluated or selected nothing (one line, for status)."""


class PodSource(Protocol):
    def get_pod(self, namespace: str, name: str) -> dict | None: ...
    def list_pods(self, labels: Mapping[str, str], fields: Mapping[str, str]) -> list[dict]: ...
    def get_node(self, name: str) -> dict | None: ...
    def list_nodes(self, labels: Mapping[str, str]) -> list[dict]: ...


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def pod_key(pod: Mapping[str, Any]) -> str:
    """``namespace/name``: 0.9's finalizer and record key for a pod."""
    m = _meta(pod)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


def _existence_filter(values: Sequence[str], what: str) -> tuple[set[str], set[str]]:
    """0.9 joined the list with commas and parsed it as a label selector of bare keys."""
    incl, excl = set(), set()
    for raw in values:
        for item in str(raw).split(","):
            item = item.strip()
            if not item:
                continue
            if item.startswith("!"):
                key = item[1:].strip()
                if not key:
                    raise SelectionError(f"selector.{what}: {raw!r} names nothing after '!'")
                excl.add(key)
            elif any(op in item for op in ("=", " in ", " notin ")):
                # 0.9: "unsupported operator" from the existence-only filter
                raise SelectionError(f"selector.{what}: unsupported operator in {raw!r}")
            else:
                incl.add(item)
    return incl, excl


def _passes(value: str, incl: set[str], excl: set[str]) -> bool:
    ok = not incl or value in incl
    return ok and value not in excl


def select_pods(selector: Selector, source: PodSource) -> list[dict]:
    """The candidate pods, before the mode is applied, in the API server's order."""
    if selector.pods:
        out = []
        for ns, names in selector.pods.items():
            for name in names:
                pod = source.get_pod(ns, name)
                if pod is not None:
                    out.append(pod)
        if not out:
            raise SelectionError("no pod is selected")
        return out

    pods = source.list_pods(selector.label_selectors, selector.field_selectors)

    if selector.nodes or selector.node_selectors:
        node_names: set[str] = set()
        for name in selector.nodes:
            node = source.get_node(name)
            if node is None:  # 0.9 returned the Get error: the experiment fails
                raise SelectionError(f"selector.nodes: node {name!r} not found")
            node_names.add(_meta(node).get("name", name))
        if selector.node_selectors:
            node_names.update(_meta(n).get("name", "")
                              for n in source.list_nodes(selector.node_selectors))
        pods = [p for p in pods if (p.get("spec") or {}).get("nodeName") in node_names]

    ns_in, ns_out = _existence_filter(selector.namespaces, "namespaces")
    pods = [p for p in pods if _passes(_meta(p).get("namespace", ""), ns_in, ns_out)]

    if selector.annotation_selectors:
        want = selector.annotation_selectors
        pods = [p for p in pods
                if all((_meta(p).get("annotations") or {}).get(k) == v for k, v in want.items())]

    ph_in, ph_out = _existence_filter(selector.pod_phase_selectors, "podPhaseSelectors")
    pods = [p for p in pods if _passes((p.get("status") or {}).get("phase", ""), ph_in, ph_out)]

    if not pods:
        raise SelectionError("no pod is selected")
    return pods


def mode_count(mode: str, value: str, n: int, rng: random.Random) -> int:
    """How many of ``n`` candidates the mode takes (0.9's arithmetic).

    The value checks repeat :mod:`controller.spec`'s, since 0.9 checked here too and a spec
    read by an older controller may reach us unchecked."""
    if n <= 0:
        raise SelectionError("cannot generate pods from empty list")
    if mode == "one":
        return 1
    if mode == "all":
        return n
    if mode not in ("fixed", "fixed-percent", "random-max-percent"):
        raise SelectionError(f"mode {mode} not supported")
    try:
        num = go_atoi(value)
    except ValueError:
        raise SelectionError(f"mode {mode}: value {value!r} is not an integer") from None
    if mode == "fixed":
        if num <= 0:
            raise SelectionError("cannot select any pod as value below or equal 0")
        return min(num, n)
    if mode in ("fixed-percent", "random-max-percent"):
        if num == 0:
            raise SelectionError("cannot select any pod as value below or equal 0")
        if num < 0 or num > 100:
            raise SelectionError(f"percentage value of {num} is invalid, must be (0,100]")
        # random-max-percent: 0.9 drew rand.Intn(max+1), i.e. uniform over 0..max inclusive
        pct = num if mode == "fixed-percent" else rng.randint(0, num)
        return math.floor(n * pct / 100)
    raise SelectionError(f"mode {mode} not supported")


def filter_by_mode(pods: list[dict], mode: str, value: str,
                   rng: random.Random | None = None) -> list[dict]:
    """The pods the mode picks: a uniformly random subset of ``mode_count`` of them, kept in
    the candidates' order (0.9 picked random distinct indexes, order carries no meaning)."""
    rng = rng or random.Random()
    k = mode_count(mode, value, len(pods), rng)
    if k >= len(pods):
        return list(pods)
    chosen = sorted(rng.sample(range(len(pods)), k))
    return [pods[i] for i in chosen]
