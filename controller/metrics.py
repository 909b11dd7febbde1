"""The controller's Prometheus metrics: experiments by phase, per-pod injections and
recoveries, and failures (every Warning Event, by reason).

Counted where the engine acts, so they say what this controller process did since it
started; the phase gauge is what the objects' status said when last read or written (every
object is read at least once a second by the kopf timer, so a restarted controller knows
them all within a second).
"""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

PHASES = ("Running", "Waiting", "Paused", "Failed", "Finished")


class _Phases(Collector):
    def __init__(self, m: "ControllerMetrics") -> None:
        self.m = m

    def collect(self):
        g = GaugeMetricFamily("chaosfs_controller_experiments",
                              "IoChaos objects by status.experiment.phase", labels=["phase"])
        with self.m._lock:
            phases = list(self.m._phase.values())
        for p in PHASES + tuple(sorted(set(phases) - set(PHASES))):
            g.add_metric([p or "None"], phases.count(p))
        yield g


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.injections = Counter("chaosfs_controller_injections",
                                  "SetFault/SetFaultAll sent to a pod's sidecar, by result",
                                  ["result"], registry=r)
        self.reinjections = Counter("chaosfs_controller_reinjections",
                                    "faults set again on a sidecar that had lost them",
                                    registry=r)
        self.recoveries = Counter("chaosfs_controller_recoveries",
                                  "pods recovered (RecoverAll, or nothing left to recover), "
                                  "by result", ["result"], registry=r)
        self.power_cuts = Counter("chaosfs_controller_power_cuts",
                                  "power cuts made on a pod's sidecar (spec.chaosfs.powerCut)",
                                  registry=r)
        self.failures = Counter("chaosfs_controller_failures",
                                "Warning Events the controller recorded, by reason",
                                ["reason"], registry=r)
        for res in ("ok", "failed"):  # present from the first scrape, at 0
            self.injections.labels(res)
            self.recoveries.labels(res)
        self._lock = threading.Lock()
        self._phase: dict[tuple[str, str], str] = {}
        r.register(_Phases(self))

    def phase(self, namespace: str, name: str, phase: str | None) -> None:
        with self._lock:
            self._phase[(namespace, name)] = phase or ""

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phase.pop((namespace, name), None)


class MetricsServer:
    """/metrics on its own thread; binds in __init__ (OSError on a busy port)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.httpd = ThreadingHTTPServer((host, port), MetricsHandler.factory(registry))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True).start()
