"""How fast a fault takes effect: the 0.9 SetFault round trip over gRPC, and the time until
the next read of an already-open file fails with it (page cache invalidation included),
counted both from the call and from its return. A rule is published before SetFault returns,
so no read that starts after the return may still succeed: each round counts those."""
from __future__ import annotations

import errno
import os
import statistics
import time
from pathlib import Path


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def measure(addr: str, mount: Path, rel: str, rounds: int) -> dict:
    import grpc
    from google.protobuf import empty_pb2
    from chaosfs.proto import injure_pb2, injure_pb2_grpc

    ch = grpc.insecure_channel(addr)
    grpc.channel_ready_future(ch).result(timeout=10)
    stub = injure_pb2_grpc.InjureStub(ch)
    rpc_us: list[float] = []
    visible_us: list[float] = []
    after_us: list[float] = []
    late_ok = 0  # reads that succeeded after SetFault had returned
    fd = os.open(mount / rel, os.O_RDONLY)
    try:
        os.pread(fd, 4096, 0)  # warm: the page is cached, so the fault must invalidate it
        for _ in range(rounds):
            t0 = time.perf_counter()
            stub.SetFault(injure_pb2.Request(methods=["read"], errno=errno.EIO, pct=100,
                                             path=rel), timeout=10)
            t1 = time.perf_counter()
            deadline = t0 + 5
            while True:
                try:
                    os.pread(fd, 4096, 0)
                except OSError as e:
                    if e.errno == errno.EIO:
                        break
                    raise
                late_ok += 1
                if time.perf_counter() > deadline:
                    raise RuntimeError("fault never became visible within 5 s")
            t2 = time.perf_counter()
            rpc_us.append((t1 - t0) * 1e6)
            visible_us.append((t2 - t0) * 1e6)
            after_us.append((t2 - t1) * 1e6)
            stub.RecoverAll(empty_pb2.Empty(), timeout=10)
            while True:
                try:
                    os.pread(fd, 4096, 0)
                    break
                except OSError:
                    if time.perf_counter() > deadline + 5:
                        raise RuntimeError("fault not recovered within 5 s") from None
    finally:
        os.close(fd)
        ch.close()
    return {
        "rounds": rounds,
        "setfault_rpc_p50_us": statistics.median(rpc_us),
        "setfault_rpc_p99_us": _pct(rpc_us, 0.99),
        "fault_visible_p50_us": statistics.median(visible_us),
        "fault_visible_p99_us": _pct(visible_us, 0.99),
        "after_return_p50_us": statistics.median(after_us),
        "after_return_p99_us": _pct(after_us, 0.99),
        "reads_ok_after_return": late_ok,
    }
