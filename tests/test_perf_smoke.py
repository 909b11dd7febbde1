"""perf/run --quick runs end to end against real mounts and writes its results (no timing
assertions: the numbers are reported, never judged, on a shared machine)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK_VARIANTS = ("native", "ceiling", "chaosfs", "devfuse", "passthrough_ll-s", "gofuse")


@pytest.fixture
def workdir():
    # PostgreSQL runs as the postgres user, which must reach the mounts: pytest's own
    # tmp_path sits under a 0700 directory, so the work dir goes under /var/tmp.
    d = Path(tempfile.mkdtemp(prefix="chaosfs-perf-test-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_quick_run_writes_results_and_table(tmp_path, workdir):
    out = tmp_path / "results"
    p = subprocess.run([str(ROOT / "perf" / "run"), "--quick", "--runtime", "1",
                        "--out", str(out), "--workdir", str(workdir)],
                       capture_output=True, text=True, timeout=420)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert set(QUICK_VARIANTS) <= set(res["variants"])
    # the references were built here, not found somewhere
    for ref in ("passthrough_ll-s", "gofuse"):
        assert "error" not in res["variants"][ref], res["variants"][ref]
        assert res["variants"][ref]["kind"] == "ref"
    for job in ("seqread-1m", "randread-4k-pin", "randwrite-4k-fsync", "metadata", "sqlite"):
        for variant in ("native", "chaosfs", "devfuse", "passthrough_ll-s"):
            samples = res["samples"][job][variant]
            assert samples and "error" not in samples[0], (job, variant, samples)
    for variant in ("native", "chaosfs", "devfuse", "passthrough_ll-s"):
        s = res["samples"]["pgbench"][variant]
        assert s and "error" not in s[0] and s[0]["tps"] > 0, (variant, s)
    # no database on the flat ceiling file system
    assert "ceiling" not in res["samples"]["pgbench"]
    assert res["summary"]["randread-4k-pin"]["iops"]["chaosfs"]["median"] > 0
    assert res["variants"]["chaosfs"]["startup_ms"] > 0
    assert res["variants"]["chaosfs"]["idle_rss_mb"] > 0
    for transport in ("chaosfs", "devfuse"):  # the probe runs on both
        fl = res["fault_latency"][transport]
        assert "error" not in fl and fl["fault_visible_p50_us"] >= fl["setfault_rpc_p50_us"] > 0, fl
    table = (out / "table.md").read_text()
    assert "| rand read 4 KiB, pinned |" in table and "pyfuse3 ceiling" in table
    assert "×native / ×passthrough_ll -s / ×go-fuse / ×chaosfs(no rules)" in table
    assert "| pgbench TPC-B -s 1 -c 4 -j 2 -T 3 | TPS |" in table
    assert "passthrough_ll -f -s -o source={original}" in table
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing left mounted, running or lying around
    assert not list(workdir.iterdir())
    assert str(workdir) not in Path("/proc/self/mountinfo").read_text()
    assert subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True).returncode == 1


def test_delay_variant_keeps_reads_stalled_while_jobs_run(tmp_path, workdir):
    """devfuse-delay500: a 500 ms read delay under faulty/ and 64 reads held there while the
    jobs run elsewhere; the run reports the stalled reads, and they did wait."""
    out = tmp_path / "results"
    p = subprocess.run([str(ROOT / "perf" / "run"), "--variants", "devfuse,devfuse-delay500",
                        "--jobs", "randread-4k-pin", "--rounds", "1", "--runtime", "2",
                        "--fault-rounds", "5", "--out", str(out), "--workdir", str(workdir)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    st = res["variants"]["devfuse-delay500"]["stall"]
    assert st["threads"] == 64 and st["errors"] == [], st
    assert st["reads"] > 0 and st["lat_min_ms"] >= 450, st  # every one of them was delayed
    assert "stall" not in res["variants"]["devfuse"]
    assert res["samples"]["randread-4k-pin"]["devfuse-delay500"][0]["iops"] > 0
    assert "| chaosfs -transport=cython, 500 ms delay on other path, 64 reads stalled | 64 |" in \
        (out / "table.md").read_text()
    assert not list(workdir.iterdir())


def test_bad_arguments_get_one_line(tmp_path):
    p = subprocess.run([str(ROOT / "perf" / "run"), "--variants", "nosuch", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip() == "perf/run: unknown variant nosuch (known: ceiling, ceiling-io, " \
                               "chaosfs, chaosfs-armed, chaosfs-py, chaosfs-splice, delay500, devfuse, devfuse-armed, " \
                               "devfuse-delay500, devfuse-eio30, devfuse-passthrough, devfuse-rules1000, devfuse-uring, eio30, fsync-inline, " \
                               "gofuse, native, passthrough, passthrough_ll-mt, passthrough_ll-s, " \
                               "rules1000)"
    p = subprocess.run([str(ROOT / "perf" / "run"), "--no-such-flag"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = subprocess.run([str(ROOT / "perf" / "run"), "--jobs", "pgbench,nosuch"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("perf/run: unknown job nosuch (known: "), p.stderr
