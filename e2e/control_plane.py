"""A Kubernetes 1.20 control plane made of real processes: etcd and kube-apiserver, private to
one work directory, on free ports, and stopped by pid.

e2e/node.py's `Node` builds on it (adding a bridge, containerd and a kubelet); the pytest suite
starts it alone on loopback (tests/kubeapi.py), for tests that need real API objects but no
containers. The binaries come from e2e/lib/build-kube.sh (`ensure_binaries`).

Only the standard library is used: e2e/ scripts import this module by its file name (their
directory on sys.path) and the tests import it as `e2e.control_plane`.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
ADMIN_TOKEN = "e2e-admin-token"
DEFAULT_CACHE = "/var/cache/chaosfs-e2e"
BUILD_SCRIPT = Path(__file__).resolve().parent / "lib" / "build-kube.sh"


class ControlPlaneError(RuntimeError):
    """A component could not be brought up, or a command failed (the message names the
    component and its log)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def cache_dir() -> Path:
    """e2e/run's cache of heavy artefacts: CHAOSFS_E2E_CACHE, as e2e/run sets it."""
    return Path(os.environ.get("CHAOSFS_E2E_CACHE") or DEFAULT_CACHE)


def binaries_missing(cache: Path, names: tuple[str, ...] = ("kube-apiserver",)) -> list[str]:
    return [n for n in names if not os.access(cache / "kube" / "bin" / n, os.X_OK)]


def ensure_binaries(cache: Path, say: Callable[[str], None] = print) -> None:
    """Build the Kubernetes binaries with e2e/lib/build-kube.sh when kube-apiserver is
    missing. The script builds all of them into the cache, so a later e2e/run finds them
    there and builds nothing; it takes 8-19 min cold on 2 cores."""
    if not binaries_missing(cache):
        return
    log = cache / "build-kube.log"  # where e2e/run keeps the same script's output
    cache.mkdir(parents=True, exist_ok=True)
    say(f"kube-apiserver not in {cache / 'kube' / 'bin'}: building it with {BUILD_SCRIPT} "
        f"(8-19 min cold; log {log})")
    t0 = time.monotonic()
    with open(log, "w") as f:
        rc = subprocess.run([str(BUILD_SCRIPT)], stdout=f, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            env={**os.environ, "CHAOSFS_E2E_CACHE": str(cache)}).returncode
    tail = log.read_text(errors="replace")[-3000:]
    if rc != 0 or binaries_missing(cache):
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed (exit {rc}); log {log}:\n{tail}")
    say(f"kube binaries built in {time.monotonic() - t0:.0f} s")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class ControlPlane:
    cache: Path
    work: Path
    # where the API server listens; the certificate names it, the kubeconfig dials it
    host: str = "127.0.0.1"
    procs: list[Proc] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ paths and config
    @property
    def bin(self) -> Path:
        return self.cache / "kube" / "bin"

    @property
    def kubeconfig(self) -> Path:
        return self.work / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def certs(self) -> Path:
        return self.work / "certs"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.ports['apiserver']}"

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e["KUBECONFIG"] = str(self.kubeconfig)
        e["PATH"] = f"{self.bin}:{e.get('PATH', '/usr/bin:/bin')}"
        return e

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        cp = run([str(self.bin / "kubectl"), *args], input=input, env=self.env(), check=False)
        if check and cp.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: "
                                    f"{cp.stderr.strip() or cp.stdout.strip()}")
        return cp.stdout

    # ------------------------------------------------------------------------ processes
    def start(self, name: str, cmd: list[str]) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=self.env())
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def wait_for(self, what: str, proc: Proc | None, ok, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.popen.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-1500:]
                raise ControlPlaneError(f"{proc.name} exited ({proc.popen.returncode}) while "
                                        f"waiting for {what}; log {proc.log}:\n{tail}")
            try:
                if ok():
                    return
            except Exception:
                pass
            time.sleep(0.3)
        where = f"; log {proc.log}" if proc else ""
        raise ControlPlaneError(f"timed out after {timeout:.0f} s waiting for {what}{where}")

    # ----------------------------------------------------------------------------- up
    def up(self) -> None:
        self.prepare()
        self.start_etcd_and_apiserver()

    def prepare(self) -> None:
        """Work dirs, ports, certificates and kubeconfig: what must exist before anything
        listens."""
        for d in ("etcd", "certs", "logs"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        for k in ("etcd", "etcd_peer", "apiserver"):
            self.ports.setdefault(k, free_port())
        self._certs()

    def _certs(self) -> None:
        c = self.certs
        ossl = lambda *a: run(["openssl", *a])  # noqa: E731
        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=e2e-ca",
             "-keyout", str(c / "ca.key"), "-out", str(c / "ca.crt"),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", str(c / "apiserver.key"), "-out", str(c / "apiserver.csr"))
        ips = dict.fromkeys(["127.0.0.1", self.host, SERVICE_IP])  # Go wants SANs, not a CN
        (c / "ext.cnf").write_text(
            "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
            "subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips) + ",DNS:localhost,"
            "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local\n")
        ossl("x509", "-req", "-days", "2", "-in", str(c / "apiserver.csr"), "-CA", str(c / "ca.crt"),
             "-CAkey", str(c / "ca.key"), "-CAcreateserial", "-out", str(c / "apiserver.crt"),
             "-extfile", str(c / "ext.cnf"))
        ossl("genrsa", "-out", str(c / "sa.key"), "2048")
        ossl("rsa", "-in", str(c / "sa.key"), "-pubout", "-out", str(c / "sa.pub"))
        (c / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {
                "server": self.server, "certificate-authority": str(c / "ca.crt")}}],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        }))

    def apiserver_flags(self) -> list[str]:
        """Flags for what runs beside the API server (a subclass adds its own)."""
        if ipaddress.ip_address(self.host).is_loopback:
            # the kubernetes Service's Endpoints refuse a loopback address, so the reconciler
            # would log a failure every 10 s; nothing here dials that Service
            return ["--endpoint-reconciler-type=none"]
        return []

    def start_etcd_and_apiserver(self) -> None:
        p = self.ports
        etcd = self.start("etcd", [
            "etcd", "--data-dir", str(self.work / "etcd"), "--name", "e2e",
            "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
            "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
            "--listen-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{p['etcd_peer']}",
            "--listen-metrics-urls", "", "--log-level", "warn"])
        c = self.certs
        api = self.start("kube-apiserver", [
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            f"--bind-address={self.host}", f"--secure-port={p['apiserver']}",
            f"--advertise-address={self.host}", "--insecure-port=0",
            f"--tls-cert-file={c / 'apiserver.crt'}", f"--tls-private-key-file={c / 'apiserver.key'}",
            f"--client-ca-file={c / 'ca.crt'}", f"--token-auth-file={c / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={c / 'sa.pub'}",
            f"--service-account-signing-key-file={c / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
            "--enable-admission-plugins=NamespaceLifecycle,MutatingAdmissionWebhook,"
            "ValidatingAdmissionWebhook",
            # no controller-manager makes the default ServiceAccount this plugin waits for
            "--disable-admission-plugins=ServiceAccount",
            *self.apiserver_flags(),
            f"--cert-dir={c}", "--v=1"])
        self.wait_for("etcd", etcd, lambda: socket.create_connection(
            ("127.0.0.1", p["etcd"]), 0.5).close() is None, 30)
        self.wait_for("kube-apiserver /readyz", api, self._ready, 90)

    def _ready(self) -> bool:
        # urllib rather than kubectl: polled every 0.3 s, and a kubectl start costs more CPU
        # than the API server's answer on a busy 2-core machine
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        req = urllib.request.Request(f"{self.server}/readyz",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            return resp.read().strip() == b"ok"

    # ---------------------------------------------------------------------------- down
    def down(self) -> list[str]:
        """Stop every process started here, newest first. Returns the problems met
        (teardown goes on past each one)."""
        problems: list[str] = []
        for p in reversed(self.procs):
            self.stop(p, problems)
        return problems

    def stop(self, p: Proc, problems: list[str]) -> None:
        if p.popen.poll() is not None:
            return
        p.popen.send_signal(signal.SIGTERM)
        try:
            p.popen.wait(15)
        except subprocess.TimeoutExpired:
            problems.append(f"{p.name} (pid {p.popen.pid}) ignored SIGTERM, killed")
            p.popen.kill()
            p.popen.wait(5)
