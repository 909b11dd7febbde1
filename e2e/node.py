"""A one-node Kubernetes 1.20 cluster made of real processes: etcd, kube-apiserver, containerd
(+ runc, CNI bridge) and kubelet, all private to one work directory, and torn down by pid.

Everything listens on loopback or on the node's own bridge (cfse2e0, 10.213.77.0/24), which
exists only while the node is up. There is no controller-manager, scheduler or kube-proxy:
pods are created with spec.nodeName, and `Node` offers the few controller duties the e2e
needs (service-account token, endpoints) as explicit helpers. etcd and kube-apiserver are
e2e/control_plane.py's, started on the bridge's address.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from control_plane import ControlPlane, ControlPlaneError, free_port, run

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = "cfse2e0"
SUBNET = "10.213.77.0/24"
GATEWAY = "10.213.77.1"
NODE_NAME = "e2e-node"

# the name e2e/harness.py catches; the control plane raises the same class
NodeError = ControlPlaneError


@dataclass
class Node(ControlPlane):
    host: str = GATEWAY
    netns_before: set[str] = field(default_factory=set)
    bridge_made: bool = False
    shared_mount: bool = False

    # ------------------------------------------------------------------ paths and config
    @property
    def kubelet_root(self) -> Path:
        return self.work / "kubelet"

    @property
    def containerd_sock(self) -> Path:
        return self.work / "containerd" / "containerd.sock"

    def ctr(self, *args: str, check: bool = True) -> str:
        cp = run(["ctr", "-a", str(self.containerd_sock), "-n", "k8s.io", *args], check=False)
        if check and cp.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {cp.stderr.strip()}")
        return cp.stdout

    # ----------------------------------------------------------------------------- up
    def up(self) -> None:
        for d in ("containerd", "cni", "kubelet"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        self.netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        self.ports["kubelet"] = free_port()
        self.prepare()
        self._bridge()
        self.start_etcd_and_apiserver()
        self._containerd()
        self._kubelet()

    def apiserver_flags(self) -> list[str]:
        return super().apiserver_flags() + [
            # webhooks behind a Service are dialled at the Endpoints' address (no kube-proxy)
            "--enable-aggregator-routing=true",
            # the node's name resolves nowhere: dial the kubelet (port-forward) at its IP
            "--kubelet-preferred-address-types=InternalIP"]

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
        """Import an oci-archive and make sure it answers to `name` (what pod specs use).
        A refused import is retried once if the archive itself is whole (every blob there,
        with its digest): then the fault was containerd's, and the error says so."""
        args = ("images", "import", "--base-name", name.rsplit(":", 1)[0], "--index-name", name,
                str(archive))
        try:
            out = self.ctr(*args)
        except NodeError as first:
            check = run([sys.executable, str(ROOT / "images" / "oci_archive.py"), str(archive)],
                        check=False)
            if check.returncode != 0:
                raise NodeError(f"{first}; the archive is broken: {check.stdout.strip()} "
                                f"(remove it and its .id to have images/build.sh save it again)") from None
            try:
                out = self.ctr(*args)
            except NodeError as second:
                raise NodeError(f"{second} (twice; the archive itself is whole)") from None
            print(f"node: ctr import of {archive.name} failed once with a whole archive "
                  f"({first}); the second try worked", file=sys.stderr, flush=True)
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
            self.stop(names["kubelet"], problems)
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
        problems += super().down()
        self._reap_shims(problems)
        self._unmount_all(problems)
        self._remove_netns(problems)
        if self.bridge_made:
            if run(["ip", "link", "del", BRIDGE], check=False).returncode != 0:
                problems.append(f"could not delete bridge {BRIDGE}")
            self.bridge_made = False
        self._remove_pod_logs()
        return problems

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
