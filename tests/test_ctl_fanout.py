"""`chaosfs-ctl -n/-l` as a real process where no API server is needed to judge it: the
command line, and every way the cluster can be out of reach gives one line and exit 1.
The fan-out itself (real pods behind a real kube-apiserver, one of them failing) is checked
by e2e/run (tests/test_e2e.py), in its `chaosfs-ctl -n/-l fan-out` lines."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CHAOSFS_CTL

ROOT = Path(__file__).resolve().parent.parent


def ctl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    e.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run([CHAOSFS_CTL, *args], capture_output=True, text=True, timeout=60, env=e)


def one_line(p: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("chaosfs-ctl: ") and needle in line, line
    assert "Traceback" not in p.stderr and p.stdout == ""


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "x"}}]}))
    return path


def test_all_namespaces_and_namespace_exclude_each_other() -> None:
    one_line(ctl("-A", "-n", "x", "rules"), 2, "-A and -n exclude each other")


def test_no_kubeconfig_and_not_in_a_cluster(tmp_path: Path) -> None:
    p = ctl("-l", "app=x", "rules", env={"KUBECONFIG": str(tmp_path / "absent"), "HOME": str(tmp_path)})
    one_line(p, 1, "no Kubernetes configuration")


def test_api_server_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = ctl("--kubeconfig", str(kubeconfig(tmp_path, f"https://127.0.0.1:{port}")), "-l", "app=x",
            "recover")
    one_line(p, 1, "listing pods:")


def test_unparsable_kubeconfig(tmp_path: Path) -> None:
    bad = tmp_path / "kc"
    bad.write_text("clusters: [")
    one_line(ctl("--kubeconfig", str(bad), "-n", "x", "stats"), 1, "no Kubernetes configuration")


@pytest.mark.parametrize("cmd", [["rules"], ["set", "read", "--errno", "5"]])
def test_without_selection_flags_addr_is_used_as_before(cmd: list[str]) -> None:
    # nothing listens on port 1: the classic error, no API server consulted
    p = ctl("--addr", "127.0.0.1:1", "--timeout", "2", *cmd,
            env={"KUBECONFIG": "/nonexistent"})
    one_line(p, 1, "cannot reach chaosfs at 127.0.0.1:1")
