"""Prometheus metrics of one chaosfs daemon (`-metrics-addr`), read at scrape time.

Nothing here runs per FUSE request: the collector reads what the gate and the rule table
already keep (the same numbers as the `Stats` RPC) when Prometheus asks, so turning metrics
on costs the I/O path nothing.

What the gate keeps, and so what can be exported:
- per method: operations, failed operations, the part of those a fault injected, and a
  latency histogram of 32 log2 µs buckets (bucket b: below 2**b µs). It keeps no latency
  sum, so the histogram has no `_sum`/`_count` (`chaosfs_operations_total` is the count);
  quantiles work from the buckets.
- Failed operations are exported three ways: `chaosfs_operation_errors_total` is all of
  them (as before the split, so existing dashboards keep their meaning);
  `chaosfs_injected_errors_total` the errors a fault gave (an errno rule, on whichever path
  decided it: a Python handler raising `engine.InjectedError`, or a `-transport=cython` C
  worker; also the EIO a power cut gives the requests it catches); and
  `chaosfs_backing_errors_total` the rest, what the backing file system or chaosfs itself
  (a file handle it never issued, a stale inode) answered with. injected + backing = errors.
- per rule: how often it fired. A rule's hits are the faults it injected; they are exported
  once per action the rule carries (a rule with errno and delay adds one hit to both), so
  `chaosfs_injected_faults_total{action="errno"}` summed over rules can exceed
  `chaosfs_injected_errors_total` when rules overlap (the first errno wins, one error).
- Requests the `-transport=cython` C workers answer themselves are counted too (the gate's
  arrays are shared with them); the no-rule path never touches the injected counter.
"""
from __future__ import annotations

import logging
import threading
from http.server import ThreadingHTTPServer
from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from chaosfs import __version__
from chaosfs.faults.engine import FaultEngine
from chaosfs.faults.methods import ALL_METHODS
from chaosfs.faults.rules import Rule, actions_of

log = logging.getLogger("chaosfs.metrics")

N_BUCKETS = 32
# Upper bounds of the gate's buckets in seconds; the last bucket also takes everything
# longer (the gate stops counting up there), so it becomes +Inf.
BUCKET_BOUNDS = [str((1 << b) / 1e6) for b in range(N_BUCKETS - 1)] + ["+Inf"]


def rule_actions(r: Rule) -> list[str]:
    return actions_of(r) or ["none"]


class SidecarCollector(Collector):
    def __init__(self, engine: FaultEngine, transport: str = "", power: object = None) -> None:
        self.engine = engine
        self.transport = transport
        self.power = power

    def collect(self) -> Iterator:
        info = GaugeMetricFamily("chaosfs_info", "chaosfs version and FUSE transport (always 1)",
                                 labels=["version", "transport"])
        info.add_metric([__version__, self.transport], 1)
        yield info

        ops = CounterMetricFamily("chaosfs_operations", "FUSE operations served, per method",
                                  labels=["method"])
        errs = CounterMetricFamily("chaosfs_operation_errors",
                                   "operations answered with an error, per method (injected "
                                   "and backing-fs errors together)", labels=["method"])
        injected = CounterMetricFamily("chaosfs_injected_errors",
                                       "operations answered with an error a fault injected "
                                       "(errno rule, power cut), per method", labels=["method"])
        backing = CounterMetricFamily("chaosfs_backing_errors",
                                      "operations answered with an error no fault injected "
                                      "(the backing file system's or chaosfs's own), per "
                                      "method", labels=["method"])
        lat = HistogramMetricFamily("chaosfs_operation_duration_seconds",
                                    "operation latency as chaosfs served it (fault delays "
                                    "included), per method", labels=["method"])
        for mid, (count, errors, inj, hist) in sorted(self.engine.gate.stats().items()):
            if mid >= len(ALL_METHODS):
                continue
            name = ALL_METHODS[mid]
            ops.add_metric([name], count)
            errs.add_metric([name], errors)
            injected.add_metric([name], inj)
            backing.add_metric([name], errors - inj)
            cum, buckets = 0, []
            for bound, n in zip(BUCKET_BOUNDS, hist):
                cum += n
                buckets.append((bound, cum))
            lat.add_metric([name], buckets, None)
        yield ops
        yield errs
        yield injected
        yield backing
        yield lat

        rules = self.engine.rules()
        hits = CounterMetricFamily("chaosfs_injected_faults",
                                   "faults injected, per rule and action (a series lives as "
                                   "long as its rule)", labels=["rule", "action", "origin"])
        active = GaugeMetricFamily("chaosfs_active_rules", "rules in the table, per API",
                                   labels=["origin"])
        per_origin: dict[str, int] = {"injure": 0, "v1": 0}
        for r in rules:
            n = self.engine.hits(r)
            for act in rule_actions(r):
                hits.add_metric([r.id, act, r.origin], n)
            per_origin[r.origin] = per_origin.get(r.origin, 0) + 1
        for origin, n in sorted(per_origin.items()):
            active.add_metric([origin], n)
        yield hits
        yield active
        if self.power is not None:
            yield from self._power()

    def _power(self) -> Iterator:
        """Power-loss tracking and cuts (chaosfs.fs.power)."""
        try:
            st = self.power.status()
        except Exception as e:  # noqa: BLE001 - not serving yet, shutting down
            log.debug("power-loss status unavailable: %s", e)
            return
        tracked = st["tracked"] or {}
        armed = GaugeMetricFamily("chaosfs_power_loss_armed", "1 while a power-loss experiment "
                                  "tracks unsynced changes")
        armed.add_metric([], 1 if st["armed"] else 0)
        yield armed
        for key, help_ in (("files", "files with changes not yet fsynced"),
                           ("unsynced_bytes", "bytes written since their file's last fsync"),
                           ("undo_bytes", "old data kept to undo unsynced overwrites"),
                           ("undo_overflow_bytes", "old data not kept (undo bound reached): a cut is inexact"),
                           ("dir_entries", "directory entry changes not yet durable")):
            g = GaugeMetricFamily(f"chaosfs_power_loss_tracked_{key}", help_)
            g.add_metric([], tracked.get(key, 0))
            yield g
        tot = st["totals"]
        for key, name, help_ in (("cuts", "cuts", "power cuts"),
                                 ("bytes_dropped", "dropped_bytes", "unsynced bytes cuts dropped"),
                                 ("files_rolled_back", "rolled_back_files", "files cuts rolled back"),
                                 ("entries_undone", "undone_entries", "directory entries cuts undid")):
            c = CounterMetricFamily(f"chaosfs_power_loss_{name}", help_)
            c.add_metric([], tot[key])
            yield c


class MetricsServer:
    """`/metrics` over HTTP on its own thread. `__init__` binds (raising OSError with the
    errno's text), so a busy port is refused before anything is mounted."""

    def __init__(self, engine: FaultEngine, host: str, port: int, transport: str = "",
                 power: object = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SidecarCollector(engine, transport, power))
        handler = MetricsHandler.factory(self.registry)
        server_cls = ThreadingHTTPServer
        if ":" in host:
            import socket

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6
            server_cls = V6
        try:
            self.httpd = server_cls((host, port), handler)
        except OSError as e:
            raise OSError(f"cannot listen on port {port}: {e.strerror}") from None
        self.httpd.daemon_threads = True  # a slow scraper never holds up the exit
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.httpd.server_address[0], self.port)

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(2)
            self._thread = None
        self.httpd.server_close()
