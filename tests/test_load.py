"""Control-plane load beside data-plane load (issue 7 "Load"), and what grpcio's threads cost
the trio FUSE loop (they share one GIL): fio randrw IOPS without and with 1,000 mixed
RPC/s, RPC latency percentiles, daemon RSS; and 200 concurrent AdmissionReviews."""
from __future__ import annotations

import concurrent.futures
import errno
import os
import random
import statistics
import threading
import time

import grpc
import pytest

from chaosfs.proto import faults_pb2 as fpb, faults_pb2_grpc
from tests.compat09 import Injure09
from tests.reliability_util import drop_caches, fio, job_errors, percentile, record, rss_kib

RPC_RATE = int(os.environ.get("CHAOSFS_LOAD_RPS", "1000"))
LOAD_SECONDS = int(os.environ.get("CHAOSFS_LOAD_SECONDS", "60"))
BASELINE_SECONDS = int(os.environ.get("CHAOSFS_BASELINE_SECONDS", "5"))
RULE_ERRNO = errno.EIO
TARGET = "chaos-target"  # the only place rules point at; fio works elsewhere


def fio_randrw(directory, seconds: int) -> list[str]:
    return ["--name=rw", f"--directory={directory}", "--rw=randrw", "--bs=4k", "--size=32M",
            "--ioengine=psync", "--direct=1", "--time_based", f"--runtime={seconds}",
            "--randrepeat=0"]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the daemon's main thread (the trio FUSE loop) and of all its other
    threads (grpcio's pollers and handler pool, trio's to_thread workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"fuse-loop": 0.0, "other-threads": 0.0}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out["fuse-loop" if int(task) == pid else "other-threads"] += cpu
    return out


def iops(report: dict) -> float:
    return sum(j["read"]["iops"] + j["write"]["iops"] for j in report["jobs"])


class RpcLoad:
    """`threads` paced clients sharing RPC_RATE calls/s of SetFault / RecoverAll / AddRule /
    RemoveRule / Stats, every rule aimed at TARGET/ only."""

    MIXED = (20, 2, 33, 25, 20)
    STATS_ONLY = (0, 0, 0, 0, 1)

    def __init__(self, addr: str, rate: int, threads: int = 4, weights: tuple = MIXED) -> None:
        self.addr, self.rate, self.threads, self.weights = addr, rate, threads, weights
        self.latencies: list[float] = []
        self.codes: dict[str, int] = {}
        self.unexpected: list[str] = []
        self.max_hits_seen = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _worker(self, n: int) -> None:
        ch = grpc.insecure_channel(self.addr)
        stub = faults_pb2_grpc.FaultsStub(ch)
        inj = Injure09(self.addr)
        rng = random.Random(n)
        mine: list[str] = []
        period = self.threads / self.rate
        nxt = time.monotonic()
        lat: list[float] = []
        codes: dict[str, int] = {}
        k = 0
        while not self.stop.is_set():
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            op = rng.choices(("SetFault", "RecoverAll", "AddRule", "RemoveRule", "Stats"),
                             self.weights)[0]
            t0 = time.perf_counter()
            try:
                if op == "SetFault":
                    inj.SetFault(inj.request(methods=rng.sample(["open", "read", "getattr"], 2),
                                             errno=RULE_ERRNO, pct=rng.choice((10, 50, 100)),
                                             path=f"^{TARGET}/", delay=rng.choice((0, 200))), timeout=10)
                elif op == "RecoverAll":
                    inj.RecoverAll(inj.empty(), timeout=10)
                elif op == "AddRule":
                    k += 1
                    rid = f"t{n}-{k}"
                    stub.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
                        id=rid, methods=["read", "open"], path=f"{TARGET}/**", path_kind=fpb.GLOB,
                        probability=rng.choice((5.0, 30.0)), errno=fpb.ErrnoAction(code=RULE_ERRNO))), timeout=10)
                    mine.append(rid)
                elif op == "RemoveRule" and mine:
                    stub.RemoveRule(fpb.RemoveRuleRequest(ids=[mine.pop(0)]), timeout=10)
                else:
                    op = "Stats"
                    st = stub.Stats(fpb.StatsRequest(), timeout=10)
                    hits = sum(r.hits for r in st.rules)
                    self.max_hits_seen = max(self.max_hits_seen, hits)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
                if not (op == "RemoveRule" and e.code() == grpc.StatusCode.NOT_FOUND):  # after RecoverAll
                    with self._lock:
                        self.unexpected.append(f"{op}: {code} {e.details()}")
            lat.append(time.perf_counter() - t0)
            codes[f"{op}:{code}"] = codes.get(f"{op}:{code}", 0) + 1
        with self._lock:
            self.latencies += lat
            for c, v in codes.items():
                self.codes[c] = self.codes.get(c, 0) + v
        inj.close()
        ch.close()

    def __enter__(self) -> "RpcLoad":
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.threads)]
        self.t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        self.elapsed = time.monotonic() - self.t0


class TargetReader:
    """Reads TARGET/ files while the rules come and go; every error must be one they give."""

    def __init__(self, mount) -> None:
        self.dir = mount / TARGET
        self.errors: dict[int, int] = {}
        self.ops = 0
        self.stop = threading.Event()

    def run(self) -> None:
        files = [self.dir / f"f{i}" for i in range(4)]
        while not self.stop.is_set():
            for f in files:
                try:
                    with open(f, "rb") as fh:
                        fh.read()
                except OSError as e:
                    self.errors[e.errno] = self.errors.get(e.errno, 0) + 1
                self.ops += 1
            time.sleep(0.002)


@pytest.mark.slow
def test_rpc_load_beside_fio_randrw(daemon_factory):
    d = daemon_factory()
    other = daemon_factory()  # same RPC load on a second daemon: machine-wide CPU contention only
    (d.original / TARGET).mkdir()
    for i in range(4):
        (d.original / TARGET / f"f{i}").write_bytes(os.urandom(8192))
    # Lay the fio file out first, so every run measures the same steady state.
    fio("--name=rw", f"--directory={d.mountpoint}", "--rw=write", "--bs=1M", "--size=32M", "--end_fsync=1")
    drop_caches()
    # The box is shared: interleave short runs and take medians.
    short = BASELINE_SECONDS
    runs: dict[str, list[float]] = {"none": [], "other_daemon": [], "same_daemon_stats_only": []}
    p99s: list[float] = []
    for _ in range(3):
        for label in runs:
            if label == "none":
                r = fio(*fio_randrw(d.mountpoint, short), timeout=short + 60)
            else:
                target = other.addr if label == "other_daemon" else d.addr
                weights = RpcLoad.MIXED if label == "other_daemon" else RpcLoad.STATS_ONLY
                with RpcLoad(target, RPC_RATE, threads=8, weights=weights) as side:
                    r = fio(*fio_randrw(d.mountpoint, short), timeout=short + 60)
                assert not side.unexpected, side.unexpected[:3]
                if label != "other_daemon":
                    p99s.append(percentile(side.latencies, 0.99))
            assert job_errors(r) == [0]
            runs[label].append(iops(r))
    med = {k: round(statistics.median(v), 1) for k, v in runs.items()}
    record("gil", **{f"fio_iops_{k}": v for k, v in med.items()}, runs=runs, seconds_each=short,
           stats_only_rpc_p99_ms=round(max(p99s) * 1e3, 3))
    base = {"jobs": [{"read": {"iops": med["none"]}, "write": {"iops": 0}}]}
    cpu_start = thread_cpu(d.proc.pid)
    rss_start = rss_kib(d.proc.pid)
    reader = TargetReader(d.mountpoint)
    rt = threading.Thread(target=reader.run, daemon=True)
    rt.start()
    # 8 paced clients: the rate holds while a few RPCs wait on the FUSE loop (4 fell to 87 %).
    with RpcLoad(d.addr, RPC_RATE, threads=8) as load:
        loaded = fio(*fio_randrw(d.mountpoint, LOAD_SECONDS), timeout=LOAD_SECONDS + 120, check=False)
    reader.stop.set()
    rt.join(10)
    rss_end = rss_kib(d.proc.pid)
    cpu_end = thread_cpu(d.proc.pid)
    fuse_cpu = cpu_end["fuse-loop"] - cpu_start["fuse-loop"]
    other_cpu = cpu_end["other-threads"] - cpu_start["other-threads"]
    assert d.proc.poll() is None
    stats = faults_pb2_grpc.FaultsStub(grpc.insecure_channel(d.addr)).Stats(fpb.StatsRequest(), timeout=10)
    by_method = {m.method: m for m in stats.methods}
    rate = len(load.latencies) / load.elapsed
    figures = dict(
        rpc_target_per_s=RPC_RATE, rpc_achieved_per_s=round(rate, 1), rpc_total=len(load.latencies),
        rpc_p50_ms=round(percentile(load.latencies, 0.50) * 1e3, 3),
        rpc_p99_ms=round(percentile(load.latencies, 0.99) * 1e3, 3),
        rpc_max_ms=round(max(load.latencies) * 1e3, 3), rpc_codes=load.codes,
        fio_iops_baseline=round(iops(base), 1), fio_iops_under_rpc_load=round(iops(loaded), 1),
        fio_errors=job_errors(loaded), rss_kib_start=rss_start, rss_kib_end=rss_end,
        target_reads=reader.ops, target_errors=reader.errors,
        max_rule_hits_in_one_stats=load.max_hits_seen,
        daemon_cpu_s_fuse_loop_thread=round(fuse_cpu, 2), daemon_cpu_s_grpc_and_other_threads=round(other_cpu, 2),
        daemon_cpu_us_per_rpc=round(other_cpu / max(1, len(load.latencies)) * 1e6, 1),
        daemon_errors={m: by_method[m].errors for m in ("open", "read", "getattr") if m in by_method},
    )
    figures["iops_ratio"] = round(figures["fio_iops_under_rpc_load"] / max(1.0, figures["fio_iops_baseline"]), 3)
    record("load", **figures)
    assert job_errors(loaded) == [0], loaded["stderr"][-1000:]  # no rule touches fio's files
    assert loaded["rc"] == 0
    assert not load.unexpected, load.unexpected[:5]
    # Throughput is the benchmark's business (recorded above and in docs/reliability.md; it
    # moves with the machine: 871-1000 RPC/s on one day, 521 on another with the same code).
    # What the test guards is that the control plane is never starved by the data plane:
    # a stall behind the FUSE loop shows as a collapsed rate or multi-second latencies.
    assert rate >= 0.25 * RPC_RATE, f"only {rate:.0f} RPC/s: the control plane starves"
    assert percentile(load.latencies, 0.99) < 2.0, figures["rpc_p99_ms"]
    # Errors the app saw on TARGET/ are exactly the ones the rules give, and they happened.
    assert set(reader.errors) <= {RULE_ERRNO}, reader.errors
    assert reader.errors.get(RULE_ERRNO, 0) > 0 and load.max_hits_seen > 0
    # ...and each of them is one the daemon counted as a failed operation.
    assert reader.errors.get(RULE_ERRNO, 0) <= sum(figures["daemon_errors"].values())
    assert rss_end - rss_start < 64 * 1024, (rss_start, rss_end)


@pytest.mark.slow
def test_webhook_200_concurrent_reviews(tmp_path):
    import trustme
    from injector.config import ConfigStore
    from injector.webhook import CertReloader, Webhook, WebhookOptions, WebhookServer
    from tests.test_webhook import NAMESPACES, Client, configs, decode_patch, review, tikv_pod, write_certs
    ca = trustme.CA()
    cert, key = write_certs(ca, tmp_path)
    srv = WebhookServer(("127.0.0.1", 0), Webhook(ConfigStore(configs()), WebhookOptions(), NAMESPACES.get),
                        CertReloader(cert, key))
    srv.start()
    try:
        client = Client(srv.port, ca)
        n = 200
        gate = threading.Barrier(n)

        def one(i: int) -> tuple[float, str, dict]:
            doc = review(tikv_pod(), uid=f"load-{i}")
            gate.wait(30)
            t0 = time.perf_counter()
            out = client.admit(doc)
            return time.perf_counter() - t0, doc["request"]["uid"], out["response"]

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(one, range(n)))
        lat = [r[0] for r in results]
        for _, uid, resp in results:
            assert resp["uid"] == uid and resp["allowed"] is True
            assert any(op["op"] == "add" for op in decode_patch(resp))
        record("webhook_load", concurrent=n, p50_ms=round(percentile(lat, 0.5) * 1e3, 1),
               p99_ms=round(percentile(lat, 0.99) * 1e3, 1), max_ms=round(max(lat) * 1e3, 1))
        assert percentile(lat, 0.99) < 20
    finally:
        srv.shutdown()
        srv.server_close()
