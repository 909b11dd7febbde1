"""A one-node Kubernetes 1.20 cluster made of real processes: etcd, kube-apiserver, containerd
(+ runc, CNI bridge) and kubelet, all private to one work directory, and torn down by pid.

Everything listens on loopback or on the node's own bridge (cfse2e0, 10.213.77.0/24), which
exists only while the node is up. There is no controller-manager, scheduler or kube-proxy:
pods are created with spec.nodeName, and `Node` offers the few controller duties the e2e
needs (service-account token, endpoints) as explicit helpers.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BRIDGE = "cfse2e0"
SUBNET = "10.213.77.0/24"
GATEWAY = "10.213.77.1"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
NODE_NAME = "e2e-node"
ADMIN_TOKEN = "e2e-admin-token"


class NodeError(RuntimeError):
    """The node could not be brought up (message names the component and its log)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class Node:
    cache: Path
    work: Path
    procs: list[Proc] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    netns_before: set[str] = field(default_factory=set)
    bridge_made: bool = False
    shared_mount: bool = False

    # ------------------------------------------------------------------ paths and config
    @property
    def bin(self) -> Path:
        return self.cache / "kube" / "bin"

    @property
    def kubeconfig(self) -> Path:
        return self.work / "kubeconfig"

    @property
    def kubelet_root(self) -> Path:
        return self.work / "kubelet"

    @property
    def containerd_sock(self) -> Path:
        return self.work / "containerd" / "containerd.sock"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e["KUBECONFIG"] = str(self.kubeconfig)
        e["PATH"] = f"{self.bin}:{e.get('PATH', '/usr/bin:/bin')}"
        return e

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        cp = run([str(self.bin / "kubectl"), *args], input=input, env=self.env(), check=False)
        if check and cp.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)}: {cp.stderr.strip() or cp.stdout.strip()}")
        return cp.stdout

    def ctr(self, *args: str, check: bool = True) -> str:
        cp = run(["ctr", "-a", str(self.containerd_sock), "-n", "k8s.io", *args], check=False)
        if check and cp.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {cp.stderr.strip()}")
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
                raise NodeError(f"{proc.name} exited ({proc.popen.returncode}) while waiting for "
                                f"{what}; log {proc.log}:\n{tail}")
            try:
                if ok():
                    return
            except Exception:
                pass
            time.sleep(0.3)
        where = f"; log {proc.log}" if proc else ""
        raise NodeError(f"timed out after {timeout:.0f} s waiting for {what}{where}")

    # ----------------------------------------------------------------------------- up
    def up(self) -> None:
        for d in ("etcd", "certs", "containerd", "cni", "kubelet", "logs"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        self.netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        self.ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "kubelet")}
        self._certs()
        self._bridge()
        self._etcd_and_apiserver()
        self._containerd()
        self._kubelet()

    def _certs(self) -> None:
        c = self.work / "certs"
        ossl = lambda *a: run(["openssl", *a])  # noqa: E731
        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=e2e-ca",
             "-keyout", str(c / "ca.key"), "-out", str(c / "ca.crt"),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", str(c / "apiserver.key"), "-out", str(c / "apiserver.csr"))
        (c / "ext.cnf").write_text(
            "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
            f"subjectAltName=IP:127.0.0.1,IP:{GATEWAY},IP:{SERVICE_IP},DNS:localhost,"
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
                "server": f"https://{GATEWAY}:{self.ports['apiserver']}",
                "certificate-authority": str(c / "ca.crt")}}],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        }))

    def _bridge(self) -> None:
        # Made before the first pod so the API server can listen on the gateway address that
        # pods reach (there is no kube-proxy behind the kubernetes Service's ClusterIP).
        if run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
            raise NodeError(f"bridge {BRIDGE} already exists: another e2e run is active "
                            f"(or a crashed one left it: `ip link del {BRIDGE}`)")
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        self.bridge_made = True
        run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])

    def _etcd_and_apiserver(self) -> None:
        p = self.ports
        etcd = self.start("etcd", [
            "etcd", "--data-dir", str(self.work / "etcd"), "--name", "e2e",
            "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
            "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
            "--listen-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{p['etcd_peer']}",
            "--listen-metrics-urls", "", "--log-level", "warn"])
        c = self.work / "certs"
        api = self.start("kube-apiserver", [
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            f"--bind-address={GATEWAY}", f"--secure-port={p['apiserver']}",
            f"--advertise-address={GATEWAY}", "--insecure-port=0",
            f"--tls-cert-file={c / 'apiserver.crt'}", f"--tls-private-key-file={c / 'apiserver.key'}",
            f"--client-ca-file={c / 'ca.crt'}", f"--token-auth-file={c / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={c / 'sa.pub'}",
            f"--service-account-signing-key-file={c / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
            "--enable-admission-plugins=NamespaceLifecycle,MutatingAdmissionWebhook,"
            "ValidatingAdmissionWebhook",
            "--disable-admission-plugins=ServiceAccount",
            # webhooks behind a Service are dialled at the Endpoints' address (no kube-proxy)
            "--enable-aggregator-routing=true",
            # the node's name resolves nowhere: dial the kubelet (port-forward) at its IP
            "--kubelet-preferred-address-types=InternalIP",
            f"--cert-dir={c}", "--v=1"])
        self.wait_for("etcd", etcd, lambda: socket.create_connection(
            ("127.0.0.1", p["etcd"]), 0.5).close() is None, 30)
        self.wait_for("kube-apiserver /readyz", api,
                      lambda: self.kubectl("get", "--raw", "/readyz", check=False).strip() == "ok", 90)

    def _containerd(self) -> None:
        d = self.work / "containerd"
        cfg = run(["containerd", "config", "default"]).stdout
        subs = [
            (r'(?m)^root = .*$', f'root = "{d / "root"}"'),
            (r'(?m)^state = .*$', f'state = "{d / "state"}"'),
            (r'(?m)^(\s*)address = "/run/containerd/containerd.sock"', rf'\1address = "{self.containerd_sock}"'),
            (r'(?m)^(\s*)sandbox_image = .*$', r'\1sandbox_image = "localhost/pause:3.2"'),
            # without it runc fails: "can't get final child's PID from pipe: EOF"
            (r'(?m)^(\s*)restrict_oom_score_adj = .*$', r'\1restrict_oom_score_adj = true'),
            (r'(?m)^(\s*)bin_dir = .*$', r'\1bin_dir = "/usr/lib/cni"'),
            (r'(?m)^(\s*)conf_dir = .*$', rf'\1conf_dir = "{self.work / "cni"}"'),
            (r'(?m)^(\s*)path = "/opt/containerd"', rf'\1path = "{d / "opt"}"'),
            (r'(?m)^(\s*)disable_apparmor = .*$', r'\1disable_apparmor = true'),
        ]
        for pat, rep in subs:
            cfg, n = re.subn(pat, rep, cfg)
            if n == 0:
                raise NodeError(f"containerd config default has no line for {pat!r}")
        # runc's state of these containers stays in the work dir too
        cfg, n = re.subn(r'(runtimes\.runc\.options\]\n(?:[ \t]+\w+ = .*\n)*?[ \t]+)Root = ""',
                         lambda m: f'{m.group(1)}Root = "{d / "runc"}"', cfg, count=1)
        if n == 0:
            raise NodeError("containerd config default has no runc options Root line")
        (d / "config.toml").write_text(cfg)
        (self.work / "cni" / "10-e2e.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "e2e",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "subnet": SUBNET, "gateway": GATEWAY,
                          "dataDir": str(self.work / "cni" / "ipam"),
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "loopback"},
            ]}))
        proc = self.start("containerd", ["containerd", "--config", str(d / "config.toml")])
        self.wait_for("containerd", proc, lambda: run(
            ["ctr", "-a", str(self.containerd_sock), "version"], check=False).returncode == 0, 30)

    def import_image(self, archive: Path, name: str) -> None:
        """Import an oci-archive and make sure it answers to `name` (what pod specs use)."""
        out = self.ctr("images", "import", "--base-name", name.rsplit(":", 1)[0],
                       "--index-name", name, str(archive))
        if name not in self.ctr("images", "ls", "-q"):
            raise NodeError(f"imported {archive} but containerd has no image {name}: {out}")

    def tag_image(self, src: str, dst: str) -> None:
        self.ctr("images", "tag", "--force", src, dst)

    def _kubelet(self) -> None:
        root = self.kubelet_root
        # Bidirectional / HostToContainer propagation need the pods' volumes on a shared
        # mount, and / is private on these machines.
        run(["mount", "--bind", str(root), str(root)])
        self.shared_mount = True
        run(["mount", "--make-rshared", str(root)])
        cfg = self.work / "kubelet-config.yaml"
        cfg.write_text(json.dumps({
            "kind": "KubeletConfiguration", "apiVersion": "kubelet.config.k8s.io/v1beta1",
            # on the bridge's address, which the Node reports (a loopback node IP leaves the
            # Node without addresses): the API server reaches it there for port-forward
            "address": GATEWAY, "port": self.ports["kubelet"], "readOnlyPort": 0,
            "healthzPort": 0, "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [], "failSwapOn": False, "makeIPTablesUtilChains": False,
            "oomScoreAdj": 0, "authorization": {"mode": "AlwaysAllow"},
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                             "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
            # the test images exist only locally: never garbage-collect them
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "syncFrequency": "5s",
            "fileCheckFrequency": "5s", "nodeStatusUpdateFrequency": "5s",
        }))
        proc = self.start("kubelet", [
            str(self.bin / "kubelet"), "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.containerd_sock}",
            f"--root-dir={root}", f"--hostname-override={NODE_NAME}", f"--node-ip={GATEWAY}",
            f"--config={cfg}", f"--kubeconfig={self.kubeconfig}",
            "--pod-infra-container-image=localhost/pause:3.2", "--v=1"])

        def ready() -> bool:
            node = json.loads(self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False) or "{}")
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            return conds.get("Ready") == "True"
        self.wait_for(f"node {NODE_NAME} Ready", proc, ready, 60)

    # --------------------------------------------------------- controller stand-ins
    def service_account_volume(self, namespace: str, sa: str) -> tuple[dict, dict]:
        """What ServiceAccount admission + the token controller would add to a pod: a token
        (TokenRequest API) with the cluster CA and namespace, as a Secret volume and mount."""
        req = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                          "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"],
                                   "expirationSeconds": 7200}})
        raw = self.kubectl("create", "--raw",
                           f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token", "-f", "-",
                           input=req)
        token = json.loads(raw)["status"]["token"]
        secret = f"{sa}-e2e-token"
        self.kubectl("-n", namespace, "create", "secret", "generic", secret,
                     f"--from-literal=token={token}",
                     f"--from-file=ca.crt={self.work / 'certs' / 'ca.crt'}",
                     f"--from-literal=namespace={namespace}")
        return ({"name": "e2e-sa-token", "secret": {"secretName": secret}},
                {"name": "e2e-sa-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                 "readOnly": True})

    # ---------------------------------------------------------------------------- down
    def down(self) -> list[str]:
        """Stop everything this node started and undo its mounts, netns and bridge.
        Returns the problems met (teardown goes on past each one)."""
        problems: list[str] = []
        names = {p.name: p for p in self.procs}
        if "kubelet" in names and "containerd" in names and names["containerd"].popen.poll() is None:
            # Let the kubelet stop what it can, then make sure no container outlives the node.
            self._stop(names["kubelet"], problems)
            try:
                for cid in self.ctr("tasks", "ls", "-q", check=False).split():
                    self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", cid, check=False)
                deadline = time.monotonic() + 15
                while self.ctr("tasks", "ls", "-q", check=False).split() and time.monotonic() < deadline:
                    time.sleep(0.3)
                for cid in self.ctr("tasks", "ls", "-q", check=False).split():
                    self.ctr("tasks", "delete", "-f", cid, check=False)
            except Exception as e:  # noqa: BLE001 - teardown keeps going
                problems.append(f"stopping containers: {e}")
        for p in reversed(self.procs):
            self._stop(p, problems)
        self._reap_shims(problems)
        self._unmount_all(problems)
        self._remove_netns(problems)
        if self.bridge_made:
            if run(["ip", "link", "del", BRIDGE], check=False).returncode != 0:
                problems.append(f"could not delete bridge {BRIDGE}")
            self.bridge_made = False
        self._remove_pod_logs()
        return problems

    def _stop(self, p: Proc, problems: list[str]) -> None:
        if p.popen.poll() is not None:
            return
        p.popen.send_signal(signal.SIGTERM)
        try:
            p.popen.wait(15)
        except subprocess.TimeoutExpired:
            problems.append(f"{p.name} (pid {p.popen.pid}) ignored SIGTERM, killed")
            p.popen.kill()
            p.popen.wait(5)

    def _reap_shims(self, problems: list[str]) -> None:
        # containerd's shims are our processes too; they name our socket on their command line.
        sock = str(self.containerd_sock).encode()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmd and sock in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _unmount_all(self, problems: list[str]) -> None:
        prefix = str(self.work) + "/"
        for _ in range(5):
            mounts = []
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    mp = line.split()[4].replace("\\040", " ")
                    if mp.startswith(prefix) or mp == str(self.work):
                        mounts.append(mp)
            if not mounts:
                return
            for mp in sorted(set(mounts), key=len, reverse=True):
                run(["umount", "-l", mp], check=False)
        problems.append(f"mounts left under {self.work}")

    def _remove_netns(self, problems: list[str]) -> None:
        if not os.path.isdir("/run/netns"):
            return
        for ns in set(os.listdir("/run/netns")) - self.netns_before:
            if ns.startswith("cni-"):
                run(["umount", "-l", f"/run/netns/{ns}"], check=False)
                try:
                    os.unlink(f"/run/netns/{ns}")
                except OSError as e:
                    problems.append(f"netns {ns}: {e}")

    def _remove_pod_logs(self) -> None:
        # The kubelet keeps container logs in /var/log/pods (NS_POD_UID) and symlinks in
        # /var/log/containers; remove only those of this node's pods.
        uids = set()
        pods_dir = self.kubelet_root / "pods"
        if pods_dir.is_dir():
            uids = set(os.listdir(pods_dir))
        for d in ("/var/log/pods", "/var/log/containers"):
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                path = os.path.join(d, name)
                target = os.readlink(path) if os.path.islink(path) else path
                if any(u in target for u in uids):
                    if os.path.islink(path) or os.path.isfile(path):
                        os.unlink(path)
                    else:
                        shutil.rmtree(path, ignore_errors=True)
