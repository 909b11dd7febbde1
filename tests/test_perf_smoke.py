"""perf/run --quick runs end to end against real mounts and writes its results (no timing
assertions: the numbers are reported, never judged, on a shared machine)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_writes_results_and_table(tmp_path):
    out = tmp_path / "results"
    p = subprocess.run([str(ROOT / "perf" / "run"), "--quick", "--runtime", "1",
                        "--out", str(out), "--workdir", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert {"native", "ceiling", "chaosfs"} <= set(res["variants"])
    for job in ("seqread-1m", "randread-4k-pin", "randwrite-4k-fsync", "metadata"):
        for variant in ("native", "ceiling", "chaosfs"):
            samples = res["samples"][job][variant]
            assert samples and "error" not in samples[0], (job, variant, samples)
    assert res["summary"]["randread-4k-pin"]["iops"]["chaosfs"]["median"] > 0
    assert res["variants"]["chaosfs"]["startup_ms"] > 0
    assert res["variants"]["chaosfs"]["idle_rss_mb"] > 0
    fl = res["fault_latency"]
    assert "error" not in fl and fl["fault_visible_p50_us"] >= fl["setfault_rpc_p50_us"] > 0
    table = (out / "table.md").read_text()
    assert "| rand read 4 KiB, pinned |" in table and "pyfuse3 ceiling" in table
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing left mounted or lying around
    assert not list((tmp_path / "work").iterdir())


def test_bad_arguments_get_one_line(tmp_path):
    p = subprocess.run([str(ROOT / "perf" / "run"), "--variants", "nosuch", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip() == "perf/run: unknown variant nosuch (known: ceiling, ceiling-io, " \
                               "chaosfs, chaosfs-py, chaosfs-splice, devfuse, devfuse-rules1000, devfuse-uring, " \
                               "eio30, fsync-inline, native, passthrough, rules1000)"
