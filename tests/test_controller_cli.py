"""`chaosfs-controller run` as a real process: bad listener flags give one line and exit 2
before anything talks to a cluster; a busy metrics port too."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KUBECONFIG": "/nonexistent"}
    return subprocess.run([sys.executable, "-m", "controller.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=ROOT)


@pytest.mark.parametrize("args, needle", [
    (["--metrics-addr", "nope"], "--metrics-addr 'nope': missing port"),
    (["--metrics-addr", ":99999"], "--metrics-addr ':99999': bad port"),
    (["--health-addr", "[::1:80"], "--health-addr"),
])
def test_bad_listener_flags(args: list[str], needle: str) -> None:
    p = run("run", *args)
    assert p.returncode == 2, p.stderr
    (line,) = p.stderr.splitlines()
    assert needle in line and "Traceback" not in p.stderr


def test_busy_metrics_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        p = run("run", f"--metrics-addr=127.0.0.1:{s.getsockname()[1]}")
    assert p.returncode == 2, p.stderr
    (line,) = p.stderr.splitlines()
    assert "--metrics-addr" in line and "in use" in line


def test_no_cluster_config_is_one_line() -> None:
    p = run("run")
    assert p.returncode == 1, p.stderr
    (line,) = p.stderr.splitlines()
    assert "no Kubernetes configuration" in line


def test_check_takes_the_v1_example_and_names_the_field_of_a_bad_rule(tmp_path: Path) -> None:
    example = ROOT / "deploy" / "examples" / "io-chaosfs-example.yaml"
    p = run("check", str(example))
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{example}: IoChaos io-chaosfs-example: ok\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(example.read_text().replace("errno: ENOSPC", "errno: ENOSPACE"))
    p = run("check", str(bad))
    assert p.returncode == 1
    assert p.stdout == (f"{bad}: IoChaos io-chaosfs-example: spec.chaosfs.rules[2].errno: "
                        "unknown errno 'ENOSPACE' (a number 1..511, a name such as EIO or "
                        "ENOSPC, or random)\n")
