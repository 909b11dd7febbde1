"""Helpers shared by the reliability, fuzz and load suites: fio runs, tree snapshots, figures
written to a JSON file so a CI log (and docs/reliability.md) can quote them."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

FIGURES = Path(os.environ.get("CHAOSFS_FIGURES", "/tmp/chaosfs-reliability.json"))


def record(section: str, **values) -> None:
    """Merge figures into FIGURES (one JSON object, a key per section) and print them."""
    try:
        data = json.loads(FIGURES.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault(section, {}).update(values)
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\n[figures] {section}: {json.dumps(values, sort_keys=True)}")


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def fio(*args: str, timeout: float = 120, check: bool = True) -> dict:
    """Run fio with JSON output; returns the parsed report (plus 'rc' and 'stderr')."""
    # cwd: fio drops verify-state files in its working directory
    p = subprocess.run(["fio", "--output-format=json", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=tempfile.gettempdir())
    try:
        out = json.loads(p.stdout[p.stdout.find("{"):]) if "{" in p.stdout else {}
    except ValueError:
        out = {}
    out["rc"], out["stderr"] = p.returncode, p.stderr
    if check and p.returncode != 0:
        raise AssertionError(f"fio {' '.join(args)} failed rc={p.returncode}:\n{p.stderr[-2000:]}")
    return out


def job_errors(report: dict) -> list[int]:
    return [j.get("error", 0) for j in report.get("jobs", [])]


def snapshot(root: Path, hashes: bool = True) -> dict[str, tuple]:
    """names -> (type, size, mode, uid, gid, sha256 or link target) for every entry below root."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISREG(st.st_mode):
                digest = ""
                if hashes:
                    with open(p, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("f", st.st_size, st.st_mode, st.st_uid, st.st_gid, digest)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0, st.st_mode, st.st_uid, st.st_gid, os.readlink(p))
            else:
                out[rel] = ("d" if stat.S_ISDIR(st.st_mode) else "o", 0, st.st_mode, st.st_uid,
                            st.st_gid, "")
    return out


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def wait_until(pred, timeout: float, step: float = 0.005) -> Optional[float]:
    """Seconds until pred() was true, or None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if pred():
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(step)
    return None
