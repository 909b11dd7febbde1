"""`chaosfs-ctl -n NS -l SELECTOR ...`: one command on every selected pod's chaosfs sidecar.

Pods come from the API server (kubeconfig, else the in-cluster service account); each
sidecar is dialled at the pod IP and the port the controller would use
(`controller.sidecar.sidecar_port`: the chaosfs container's `-addr`, else its one
containerPort, else 65534), so the caller must reach the pod network (run it in a pod, on a
node, or through a VPN), or, with `--port-forward`, through the API server's port-forward
(chaosfs/control/portforward.py: what `kubectl port-forward` does, from anywhere the
kubeconfig reaches; the row's SIDECAR says `port-forward:PORT`). The calls run in parallel; every pod gets its row, a failure on
one hides nothing of the others, and the exit code is 1 if any pod failed.

Pods without a chaosfs container are listed as skipped and do not fail the run (`-n NS`
alone names every pod of the namespace, most of them usually without a sidecar); if no
selected pod has one, that is an error.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import click

PARALLEL = 16


@dataclass
class Target:
    namespace: Optional[str]
    selector: str
    all_namespaces: bool
    kubeconfig: Optional[str]
    client: Callable[[str], Any]  # address -> chaosfs.control.ctl.Client
    port_forward: bool = False
    api: Any = None  # CoreV1Api, once list_pods made it


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _api(kubeconfig: Optional[str]) -> tuple[Any, str]:
    """(CoreV1Api, the context's namespace)."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise click.ClickException("-n/-l/-A need the kubernetes Python client "
                                   "(pip install kubernetes); the sidecar image leaves it out") from None

    namespace = "default"
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig)
            _, ctx = config.list_kube_config_contexts(config_file=kubeconfig)
            namespace = (ctx or {}).get("context", {}).get("namespace") or namespace
        else:
            try:
                config.load_kube_config()
                _, ctx = config.list_kube_config_contexts()
                namespace = (ctx or {}).get("context", {}).get("namespace") or namespace
            except (config.ConfigException, FileNotFoundError, OSError):
                config.load_incluster_config()
                try:
                    with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                        namespace = f.read().strip() or namespace
                except OSError:
                    pass
    except Exception as exc:  # noqa: BLE001 - any configuration problem is one line
        raise click.ClickException(f"no Kubernetes configuration: {_first_line(exc)}") from None
    return client.CoreV1Api(), namespace


def list_pods(t: Target) -> list[dict]:
    from kubernetes.client import ApiException

    api, ctx_ns = _api(t.kubeconfig)
    t.api = api
    try:
        if t.all_namespaces:
            res = api.list_pod_for_all_namespaces(label_selector=t.selector, _request_timeout=30)
        else:
            res = api.list_namespaced_pod(t.namespace or ctx_ns, label_selector=t.selector,
                                          _request_timeout=30)
    except ApiException as exc:
        detail = exc.reason or ""
        try:
            detail = json.loads(exc.body).get("message") or detail
        except (TypeError, ValueError, AttributeError):
            pass
        raise click.ClickException(f"listing pods: {exc.status} {detail}") from None
    except Exception as exc:  # noqa: BLE001 - connection refused, TLS, DNS: one line
        raise click.ClickException(f"listing pods: {_first_line(exc)}") from None
    plain = api.api_client.sanitize_for_serialization
    pods = [plain(p) for p in res.items]
    return sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))


def _one(pod: dict, t: Target, op: Callable) -> dict:
    # the controller's rules for where a pod's sidecar listens, so both dial the same port
    from controller.sidecar import SidecarError, sidecar_addr, sidecar_port

    meta = pod["metadata"]
    row = {"namespace": meta["namespace"], "pod": meta["name"], "addr": "", "ok": False,
           "skipped": False, "result": None, "text": "", "error": ""}
    if sidecar_port(pod) is None:
        row.update(skipped=True, ok=True, text="skipped: no chaosfs sidecar")
        return row
    forward = None
    try:
        row["addr"] = sidecar_addr(pod, "")
    except SidecarError as exc:
        if not t.port_forward:  # through the API server a pod needs no IP of ours
            row["error"] = str(exc)
            return row
    if t.port_forward:
        from chaosfs.control.portforward import PortForward
        port = sidecar_port(pod)[0]
        forward = PortForward(t.api, meta["namespace"], meta["name"], port)
        row["addr"] = f"port-forward:{port}"
    c = t.client(forward.addr if forward else row["addr"])
    try:
        res = op(c)
        row.update(ok=True, result=res.data, text=res.summary)
        if res.data is None:
            row["result"] = res.text
    except click.ClickException as exc:
        row["error"] = exc.format_message()
    except Exception as exc:  # noqa: BLE001 - one pod's surprise is that pod's row
        row["error"] = _first_line(exc)
    finally:
        if forward is not None and forward.error and row["error"]:
            row["error"] = f"port-forward through the API server: {forward.error}"
        c.channel.close()
        if forward is not None:
            forward.close()
    return row


def run_fanout(t: Target, op: Callable, as_json: bool) -> int:
    pods = list_pods(t)
    import controller.sidecar  # noqa: F401 - once, before the threads
    where = "every namespace" if t.all_namespaces else f"namespace {t.namespace or '(context)'}"
    sel = f" matching {t.selector!r}" if t.selector else ""
    if not pods:
        raise click.ClickException(f"no pod in {where}{sel}")
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(pods))) as pool:
        rows = list(pool.map(lambda p: _one(p, t, op), pods))
    if all(r["skipped"] for r in rows):
        raise click.ClickException(f"no pod with a chaosfs sidecar in {where}{sel} "
                                   f"({len(rows)} pod(s) without one)")
    failed = [r for r in rows if not r["ok"]]
    if as_json:
        click.echo(json.dumps([{k: r[k] for k in ("namespace", "pod", "addr", "ok", "skipped",
                                                   "result", "error")} for r in rows],
                              indent=2, sort_keys=True))
    else:
        table = [[r["namespace"], r["pod"], r["addr"] or "-",
                  "ok" if r["ok"] and not r["skipped"] else ("-" if r["skipped"] else "FAILED"),
                  r["text"] if r["ok"] else r["error"]] for r in rows]
        header = ["NAMESPACE", "POD", "SIDECAR", "STATUS", "RESULT"]
        widths = [max(len(str(x[i])) for x in [header] + table) for i in range(4)]
        for line in [header] + table:
            click.echo("  ".join(str(c).ljust(w) for c, w in zip(line[:4], widths)) + "  " + line[4])
    if failed:
        click.echo(f"chaosfs-ctl: {len(failed)} of {len(rows)} pod(s) failed", err=True)
        return 1
    return 0
