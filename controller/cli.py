"""``chaosfs-controller``: run the IoChaos controller, or check an IoChaos manifest offline.

    chaosfs-controller run [--namespace NS ...] [--dial-timeout 120] [--resync 10]
                           [--metrics-addr :8080] [--health-addr :8081]
    chaosfs-controller check FILE...     # each IoChaos: "ok" or the one-line spec error

Exit codes: 0 success, 1 bad input (one line on stderr), 2 bad command line.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import NoReturn

import click

from controller.spec import KIND, SpecError, parse_spec

PROG = "chaosfs-controller"


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Chaos Mesh 0.9.1's IoChaos, reconciled against chaosfs sidecars."""


@main.command()
@click.argument("files", nargs=-1, required=True)
def check(files: tuple[str, ...]) -> None:
    """Validate the IoChaos objects in FILES as the controller would."""
    from injector.manifests import ManifestError, iter_objects, load_stream

    bad = 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                stream = load_stream(f.read(), path)
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}")
        except ManifestError as exc:
            fail(str(exc))
        for doc in stream.docs:
            for obj in iter_objects(doc):
                if not isinstance(obj, dict) or obj.get("kind") != KIND:
                    continue
                name = (obj.get("metadata") or {}).get("name", "?")
                try:
                    spec = parse_spec(obj.get("spec"))
                except SpecError as exc:
                    click.echo(f"{path}: IoChaos {name}: {exc}")
                    bad += 1
                    continue
                click.echo(f"{path}: IoChaos {name}: ok")
                for w in spec.warnings:
                    click.echo(f"{path}: IoChaos {name}: warning: {w}")
    sys.exit(1 if bad else 0)


@main.command()
@click.option("--namespace", "-n", "namespaces", multiple=True,
              help="Watch only these namespaces (default: the whole cluster).")
@click.option("--dial-timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="Seconds a sidecar connection error is retried (0.9: 120).")
@click.option("--resync", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds between checks that running pods' sidecars still hold the fault.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
@click.option("--metrics-addr", default="", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (:PORT = all "
                   "interfaces; default: off).")
@click.option("--health-addr", default="", metavar="HOST:PORT",
              help="Serve kopf's liveness probe at http://HOST:PORT/healthz (default: off).")
def run(namespaces: tuple[str, ...], dial_timeout: float, resync: float, log_level: str,
        metrics_addr: str, health_addr: str) -> None:
    """Reconcile IoChaos objects (kubeconfig, or in-cluster config)."""
    import kopf
    from kubernetes import config as kconfig

    from chaosfs.config import parse_addr
    from controller.engine import Engine
    from controller.kube import KubeCluster
    from controller.metrics import ControllerMetrics, MetricsServer
    from controller.operator import Handlers, registry_for

    addrs = {}
    for flag, text in (("--metrics-addr", metrics_addr), ("--health-addr", health_addr)):
        if text:
            try:
                addrs[flag] = parse_addr(text)
            except ValueError as exc:
                fail(f"{flag} {text!r}: {exc}", 2)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    metrics = ControllerMetrics()
    if "--metrics-addr" in addrs:
        try:
            MetricsServer(metrics.registry, *addrs["--metrics-addr"])
        except OSError as exc:
            fail(f"--metrics-addr {metrics_addr}: cannot listen: {exc.strerror}", 2)
    liveness = None
    if "--health-addr" in addrs:
        host, port = addrs["--health-addr"]
        liveness = f"http://{host}:{port}/healthz"
    try:
        try:
            kconfig.load_incluster_config()
        except kconfig.ConfigException:
            kconfig.load_kube_config()
    except Exception as exc:  # noqa: BLE001 - any config problem is one line for the user
        fail(f"no Kubernetes configuration: {str(exc).splitlines()[0]}")
    engine = Engine(KubeCluster(), dial_timeout=dial_timeout, resync=resync, metrics=metrics)
    registry = registry_for(Handlers(engine))
    # kopf names itself after the login user (getpass), which fails for a uid without a
    # passwd entry, as in the Deployment (runAsUser 65532): name it ourselves
    identity = f"{PROG}@{socket.gethostname()}/{os.getpid()}"
    settings = kopf.OperatorSettings()
    # kopf scans CRDs to notice resources appearing later; ours is fixed, and the scan needs
    # cluster-wide customresourcedefinitions list/watch (it retries ~45 s when refused)
    settings.scanning.disabled = True
    kopf.run(registry=registry, standalone=True, namespaces=list(namespaces),
             clusterwide=not namespaces, liveness_endpoint=liveness, identity=identity,
             settings=settings)


if __name__ == "__main__":
    main()
