"""The e2e steps: bring up the node (e2e/node.py), deploy the injector from deploy/, run the
seed flow and check each promise against the real system, tear everything down, and print
`N passed, N failed`. Started by e2e/run once images and kube binaries exist."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from node import GATEWAY, NODE_NAME, Node, NodeError, run  # noqa: E402

APP_NS = "chaosfs-e2e"
INJECTOR_NS = "chaos-testing"
TAG = "e2e"
ANNOTATION = "admission-webhook.chaos-mesh.org/request"
CTL_PORT = 65533  # the seed template's -addr=:65533
DATA = "/var/lib/app/data"


class StepFailed(Exception):
    """A check the later steps depend on failed."""


class Results:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.t0 = time.monotonic()

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        stamp = f"{time.monotonic() - self.t0:6.1f}s"
        line = f"{'PASS' if ok else 'FAIL'} {stamp} {name}"
        if detail not in ("", None):
            line += f" -- {detail}"
        print(line, flush=True)
        (self.passed if ok else self.failed).append(name)
        return ok

    def require(self, name: str, ok: bool, detail: object = "") -> None:
        if not self.check(name, ok, detail):
            raise StepFailed(name)


def wait_until(fn, timeout: float, interval: float = 0.5):
    """fn's first truthy result, or None at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception:  # noqa: BLE001 - polling through transient API errors
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


class Flow:
    def __init__(self, node: Node, r: Results) -> None:
        self.n = node
        self.r = r
        self.app_uid = ""
        self.pod_ip = ""

    # ---------------------------------------------------------------- small helpers
    def get(self, kind: str, name: str, ns: str | None = None) -> dict:
        args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
        return json.loads(self.n.kubectl(*args))

    def apply(self, obj: dict | str) -> str:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        return self.n.kubectl("apply", "-f", "-", input=text)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return run([str(ROOT / ".venv" / "bin" / "chaosfs-ctl"), "--addr",
                    f"{self.pod_ip}:{CTL_PORT}", *args], check=False)

    def emptydir(self, uid: str, volume: str) -> Path:
        return self.n.kubelet_root / "pods" / uid / "volumes" / "kubernetes.io~empty-dir" / volume

    def events(self, since: float) -> list[dict]:
        return self.events_of(self.app_uid, since)

    def events_of(self, uid: str, since: float) -> list[dict]:
        """The app's report lines (pod `uid`) from time `since` on."""
        path = self.emptydir(uid, "report") / "events.jsonl"
        out = []
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue  # the line being written
            if e.get("t", 0) >= since:
                out.append(e)
        return out

    def window(self, settle: float = 0.4, length: float = 1.6) -> dict[tuple[str, str], list[dict]]:
        """App events of the next `length` seconds, after `settle` seconds, by (file, op)."""
        time.sleep(settle)
        t = time.time()
        time.sleep(length)
        by: dict[tuple[str, str], list[dict]] = {}
        for e in self.events(t):
            if "op" in e:
                by.setdefault((e["file"], e["op"]), []).append(e)
        return by

    def errnos(self, evs: list[dict]) -> list[int]:
        return sorted({e["errno"] for e in evs})

    # ------------------------------------------------------------------------ steps
    def deploy_injector(self) -> None:
        n = self.n
        n.tag_image(f"localhost/chaos-injector:{TAG}", "localhost/chaos-injector:latest")
        out = n.kubectl("apply", "-k", str(ROOT / "deploy"), check=False)
        self.r.require("kubectl apply -k deploy/", "configured" in out or "created" in out,
                       out.strip().replace("\n", "; ")[:300])
        env = n.env()
        cp = subprocess.run(["bash", str(ROOT / "deploy" / "gen-certs.sh")], env=env,
                            capture_output=True, text=True)
        self.r.require("deploy/gen-certs.sh creates the Secret and fills caBundle",
                       cp.returncode == 0, cp.stderr.strip()[-300:])
        mwc = self.get("mutatingwebhookconfiguration", "chaos-injector")
        self.r.require("MutatingWebhookConfiguration registered with a caBundle",
                       all(w["clientConfig"].get("caBundle") for w in mwc["webhooks"]))
        # the IoChaos check (deploy/validating-webhook.yaml) on the same Service and CA
        vwc = self.get("validatingwebhookconfiguration", "chaos-injector")
        self.r.require("ValidatingWebhookConfiguration (IoChaos) registered with a caBundle",
                       all(w["clientConfig"].get("caBundle") for w in vwc["webhooks"]))

        # Deployment controller stand-in: one pod from the Deployment's template, with what
        # ServiceAccount admission would add; the API server address replaces the Service
        # ClusterIP that kube-proxy would route.
        dep = self.get("deployment", "chaos-injector", INJECTOR_NS)
        tpl = dep["spec"]["template"]
        spec = tpl["spec"]
        spec["nodeName"] = NODE_NAME
        vol, mount = n.service_account_volume(INJECTOR_NS, spec.get("serviceAccountName", "default"))
        spec.setdefault("volumes", []).append(vol)
        for c in spec["containers"]:
            c.setdefault("volumeMounts", []).append(mount)
            c.setdefault("env", []).extend([
                {"name": "KUBERNETES_SERVICE_HOST", "value": GATEWAY},
                {"name": "KUBERNETES_SERVICE_PORT", "value": str(n.ports["apiserver"])}])
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "chaos-injector-e2e", "namespace": INJECTOR_NS,
                            "labels": tpl["metadata"].get("labels", {})},
               "spec": spec}
        self.apply(pod)

        def ready() -> dict | None:
            p = self.get("pod", "chaos-injector-e2e", INJECTOR_NS)
            st = p.get("status", {})
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
            return p if ok else None
        p = wait_until(ready, 60)
        if p is None:
            p = self.get("pod", "chaos-injector-e2e", INJECTOR_NS)
            self.r.require("injector pod (deploy/injector.yaml template) Ready", False,
                           json.dumps(p.get("status", {}).get("containerStatuses"))[:600])
        self.r.check("injector pod (deploy/injector.yaml template) Ready", True, p["status"]["podIP"])
        # Endpoints controller stand-in.
        svc = self.get("service", "chaos-injector", INJECTOR_NS)
        port = svc["spec"]["ports"][0]
        self.apply({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": "chaos-injector", "namespace": INJECTOR_NS},
                    "subsets": [{"addresses": [{"ip": p["status"]["podIP"]}],
                                 "ports": [{"name": port.get("name", "https"), "port": 9443}]}]})

    def seed_configs(self) -> None:
        n = self.n
        text = (ROOT / "deploy" / "chaosfs-sidecar-template.yaml").read_text()
        # Only the image names and pull policy change: this node has no registry.
        local = (text.replace("pingcap/chaos-scripts:latest", f"localhost/chaos-scripts:{TAG}")
                     .replace("pingcap/chaos-fs:latest", f"localhost/chaos-fs:{TAG}")
                     .replace("imagePullPolicy: Always", "imagePullPolicy: IfNotPresent"))
        self.apply(local)
        n.kubectl("create", "namespace", APP_NS)
        n.kubectl("label", "namespace", APP_NS, "admission-webhook=enabled")
        cfg = {"name": "chaosfs-app", "template": "chaosfs-sidecar",
               "arguments": {"ContainerName": "app", "DataPath": DATA,
                             "MountPath": "/var/lib/app", "VolumeName": "data"}}
        self.apply({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "chaosfs-app", "namespace": APP_NS,
                                 "labels": {"app.kubernetes.io/component": "webhook"}},
                    "data": {"chaosfs-app.yaml": json.dumps(cfg)}})

    def app_pod(self, name: str, annotated: bool) -> dict:
        meta: dict = {"name": name, "namespace": APP_NS, "labels": {"app": "chaosfs-e2e"}}
        if annotated:
            meta["annotations"] = {ANNOTATION: "chaosfs-app"}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {
            "nodeName": NODE_NAME, "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "app", "image": f"localhost/e2e-app:{TAG}",
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "/app.py", "--data", DATA, "--report", "/report"],
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/app"},
                                 {"name": "report", "mountPath": "/report"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "report", "emptyDir": {}}]}}

    def wait_injection_ready(self) -> None:
        # ConfigMap changes reach the injector after its watch debounce: ask with server-side
        # dry runs (they pass through the webhook) until one comes back injected.
        probe = self.app_pod("probe", annotated=True)

        def injected() -> bool:
            out = self.n.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                 input=json.dumps(probe))
            return bool(json.loads(out)["spec"].get("initContainers"))
        ok = wait_until(injected, 40, 1.0)
        self.r.require("webhook injects (server-side dry run) after the ConfigMaps are created",
                       bool(ok))

    def create_and_check_stored_pod(self) -> dict:
        self.apply(self.app_pod("app", annotated=True))
        pod = self.get("pod", "app", APP_NS)
        self.app_uid = pod["metadata"]["uid"]
        spec = pod["spec"]
        inits = {c["name"]: c for c in spec.get("initContainers", [])}
        conts = {c["name"]: c for c in spec["containers"]}
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        init = inits.get("inject-scripts", {})
        self.r.check("stored pod: init container inject-scripts runs init.sh",
                     init.get("image") == f"localhost/chaos-scripts:{TAG}"
                     and "/scripts/init.sh -d /var/lib/app/data -f /var/lib/app/fuse-data"
                     in " ".join(init.get("command", [])), init.get("command"))
        side = conts.get("chaosfs", {})
        side_mounts = {m["name"]: m for m in side.get("volumeMounts", [])}
        self.r.check("stored pod: privileged chaosfs sidecar with Bidirectional data mount",
                     side.get("securityContext", {}).get("privileged") is True
                     and side_mounts.get("data", {}).get("mountPropagation") == "Bidirectional"
                     and f"-mountpoint={DATA}" in side.get("command", []), side.get("command"))
        app_mounts = {m["name"]: m for m in conts.get("app", {}).get("volumeMounts", [])}
        self.r.check("stored pod: app mounts data HostToContainer, scripts and fuse",
                     app_mounts.get("data", {}).get("mountPropagation") == "HostToContainer"
                     and app_mounts.get("scripts", {}).get("mountPath") == "/tmp/scripts"
                     and app_mounts.get("fuse", {}).get("mountPath") == "/tmp/fuse", app_mounts)
        self.r.check("stored pod: scripts and fuse emptyDir volumes, data volume kept",
                     {"scripts", "fuse", "data", "report"} <= set(vols)
                     and "emptyDir" in vols.get("scripts", {}), sorted(vols))
        post = conts.get("app", {}).get("lifecycle", {}).get("postStart", {}).get("exec", {})
        self.r.check("stored pod: app has the postStart wait-fuse.sh hook",
                     "/tmp/scripts/wait-fuse.sh" in post.get("command", []), post)
        self.r.check("stored pod: marked injected",
                     pod["metadata"].get("annotations", {}).get(
                         "admission-webhook.chaos-mesh.org/status") == "injected",
                     pod["metadata"].get("annotations", {}).get(
                         "admission-webhook.chaos-mesh.org/status"))
        return pod

    def wait_running(self) -> dict:
        def running() -> dict | None:
            p = self.get("pod", "app", APP_NS)
            cs = p.get("status", {}).get("containerStatuses", [])
            if cs and all(c.get("state", {}).get("running") and c.get("ready") for c in cs):
                return p
            return None
        p = wait_until(running, 120)
        if p is None:
            p = self.get("pod", "app", APP_NS)
            st = p.get("status", {})
            self.r.require("kubelet ran init container, sidecar and app", False,
                           json.dumps({"init": st.get("initContainerStatuses"),
                                       "containers": st.get("containerStatuses")})[:900])
        st = p["status"]
        init = {c["name"]: c for c in st.get("initContainerStatuses", [])}
        term = init.get("inject-scripts", {}).get("state", {}).get("terminated", {})
        self.r.require("kubelet ran init container (exit 0), sidecar and app (running)",
                       term.get("exitCode") == 0,
                       f"init {term.get('reason')}, containers "
                       f"{[c['name'] for c in st['containerStatuses']]}")
        self.pod_ip = st["podIP"]
        return p

    def check_mount(self, pod: dict) -> None:
        evs = wait_until(lambda: [e for e in self.events(0) if e.get("event") == "start"], 20)
        start = (evs or [{}])[0]
        self.r.check("app did not start before the mount was live (its first look at the "
                     "data dir saw fuse.chaosfs)", start.get("fstype") == "fuse.chaosfs", start)
        # The app container's mount table, read from the host through the container's pid.
        cid = next(c["containerID"] for c in pod["status"]["containerStatuses"]
                   if c["name"] == "app").split("://", 1)[1]
        pid = next((ln.split()[1] for ln in self.n.ctr("tasks", "ls").splitlines()
                    if ln.startswith(cid)), None)
        fstype = None
        if pid:
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
                left, _, right = line.partition(" - ")
                if left.split()[4] == DATA:
                    fstype = right.split()[0]
        self.r.check("app container's mountinfo: data dir is a fuse.chaosfs mount",
                     fstype == "fuse.chaosfs", f"pid {pid}: {fstype}")
        backing = self.emptydir(self.app_uid, "data") / "fuse-data"
        ok = wait_until(lambda: (backing / "victim.dat").stat().st_size == 4096
                        and (backing / "other.dat").stat().st_size == 4096, 10)
        self.r.check("files the app writes land in fuse-data on the volume", bool(ok),
                     sorted(os.listdir(backing)) if backing.is_dir() else "no fuse-data")

    def check_faults_ctl(self) -> None:
        cp = self.ctl("set", "read", "--errno", "5", "--path", "victim")
        self.r.require("chaosfs-ctl set read --errno 5 --path victim (pod IP)",
                       cp.returncode == 0, (cp.stdout + cp.stderr).strip())
        w = self.window()
        vr, orr = w.get(("victim.dat", "read"), []), w.get(("other.dat", "read"), [])
        self.r.check("EIO fault: the app's reads of victim.dat fail with EIO",
                     len(vr) >= 3 and self.errnos(vr) == [5], f"{len(vr)} reads, errnos {self.errnos(vr)}")
        self.r.check("EIO fault: other.dat reads and all writes keep working",
                     len(orr) >= 3 and self.errnos(orr) == [0]
                     and self.errnos(w.get(("victim.dat", "write"), [])) == [0],
                     f"other reads errnos {self.errnos(orr)}")
        cp = self.ctl("recover")
        w = self.window()
        reads = w.get(("victim.dat", "read"), []) + w.get(("other.dat", "read"), [])
        self.r.check("chaosfs-ctl recover: every read succeeds again",
                     cp.returncode == 0 and len(reads) >= 6 and self.errnos(reads) == [0],
                     f"errnos {self.errnos(reads)}")

        cp = self.ctl("set", "read", "--delay", "200ms", "--path", "victim")
        w = self.window(length=2.5)
        vms = [e["ms"] for e in w.get(("victim.dat", "read"), []) if e["errno"] == 0]
        oms = [e["ms"] for e in w.get(("other.dat", "read"), []) if e["errno"] == 0]
        self.r.check("200 ms delay shows in the app's measured read latency of victim.dat",
                     cp.returncode == 0 and len(vms) >= 3 and min(vms) >= 195,
                     f"victim ms {sorted(vms)[:3]}.., other median {statistics.median(oms) if oms else None}")
        self.r.check("delay on victim.dat leaves other.dat fast (median < 50 ms)",
                     len(oms) >= 3 and statistics.median(oms) < 50,
                     f"median {statistics.median(oms) if oms else None}")
        cp = self.ctl("recover")
        w = self.window()
        vms = [e["ms"] for e in w.get(("victim.dat", "read"), [])]
        self.r.check("after recover victim.dat reads are fast again",
                     cp.returncode == 0 and len(vms) >= 3 and statistics.median(vms) < 50,
                     f"median {statistics.median(vms) if vms else None}")

    def check_faults_09(self) -> None:
        # The 0.9 client the unit tests use: built from tests/data/injure-0.9.proto alone, in
        # a private descriptor pool, so it shares nothing with the daemon's generated code.
        sys.path.insert(0, str(ROOT))
        from tests.compat09 import Injure09
        c = Injure09(f"{self.pod_ip}:{CTL_PORT}")
        try:
            c.SetFault(c.request(methods=["read"], errno=5, pct=100, path="victim"), timeout=10)
            inj = c.Injected(c.empty(), timeout=10).injected
            w = self.window()
            vr, orr = w.get(("victim.dat", "read"), []), w.get(("other.dat", "read"), [])
            self.r.check("0.9 client SetFault(read, errno 5, path victim): victim reads EIO, "
                         "other reads fine, Injected() true",
                         inj and len(vr) >= 3 and self.errnos(vr) == [5] and self.errnos(orr) == [0],
                         f"injected {inj}, victim {self.errnos(vr)}, other {self.errnos(orr)}")
            c.RecoverAll(c.empty(), timeout=10)
            inj = c.Injected(c.empty(), timeout=10).injected
            w = self.window()
            reads = w.get(("victim.dat", "read"), []) + w.get(("other.dat", "read"), [])
            self.r.check("0.9 client RecoverAll: reads clean, Injected() false",
                         not inj and len(reads) >= 6 and self.errnos(reads) == [0],
                         f"injected {inj}, errnos {self.errnos(reads)}")
        finally:
            c.close()

    def check_untouched(self) -> None:
        self.apply(self.app_pod("plain", annotated=False))
        p = self.get("pod", "plain", APP_NS)
        spec = p["spec"]
        self.r.check("pod without the annotation is stored untouched",
                     not spec.get("initContainers") and [c["name"] for c in spec["containers"]] == ["app"]
                     and {v["name"] for v in spec["volumes"]} == {"data", "report"}
                     and "admission-webhook.chaos-mesh.org/status" not in p["metadata"].get("annotations", {}),
                     [c["name"] for c in spec["containers"]])
        self.n.kubectl("-n", APP_NS, "delete", "pod", "plain", "--grace-period=0", "--force",
                       "--wait=false", check=False)

    def check_delete(self) -> None:
        t = time.monotonic()
        self.n.kubectl("-n", APP_NS, "delete", "pod", "app", "--wait=false")
        seen = self.TerminationWatch(self.app_uid, t)

        def gone() -> bool:
            out = self.n.kubectl("-n", APP_NS, "get", "pod", "app", "-o", "json", check=False)
            if out.strip():
                seen.note(json.loads(out))
            else:
                seen.note(None)
            return out.strip() == ""
        ok = wait_until(gone, 60)
        secs = time.monotonic() - t
        # The app exits on SIGTERM at once, so anything near the 30 s grace period means a
        # container (the sidecar) did not stop cleanly: then say which one, and how it ended.
        self.r.check("deleting the pod completes promptly (no hang in Terminating)",
                     bool(ok) and secs < 20,
                     f"{secs:.1f} s" + ("" if ok and secs < 20 else f"; {seen.report()}"))
        # (other chaosfs mounts on the machine belong to other test runs: only ours count)
        left = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                if self.app_uid in ln or (ln.split()[4].startswith(str(self.n.work))
                                          and "fuse.chaosfs" in ln.split(" - ")[-1])]
        self.r.check("no mount of the pod left behind", not left, left[:3])

    class TerminationWatch:
        """What a pod's containers did while it was deleted: each one's terminated state as
        the API last showed it, and the tail of its kubelet log file (read while it still
        exists: the kubelet removes it with the pod)."""

        def __init__(self, uid: str, t0: float) -> None:
            self.uid, self.t0 = uid, t0
            self.states: dict[str, str] = {}
            self.tails: dict[str, list[str]] = {}

        def note(self, pod: dict | None) -> None:
            import glob
            for st in (pod or {}).get("status", {}).get("containerStatuses", []):
                term = st.get("state", {}).get("terminated")
                if term and st["name"] not in self.states:
                    self.states[st["name"]] = (
                        f"exit {term.get('exitCode')} {term.get('reason', '')} at "
                        f"+{time.monotonic() - self.t0:.0f} s")
            for f in glob.glob(f"/var/log/pods/{APP_NS}_app_{self.uid}/*/*.log"):
                try:
                    lines = Path(f).read_text(errors="replace").splitlines()
                except OSError:
                    continue
                self.tails[Path(f).parent.name] = [ln.split(" ", 3)[-1] for ln in lines[-6:]]

        def report(self) -> str:
            return (f"terminated {self.states or 'never seen'}; log tails "
                    f"{ {k: v for k, v in self.tails.items() if k != 'app'} }")

    def run(self) -> None:
        self.deploy_injector()
        self.seed_configs()
        self.wait_injection_ready()
        pod = self.create_and_check_stored_pod()
        pod = self.wait_running()
        self.check_mount(pod)
        self.check_faults_ctl()
        self.check_faults_09()
        from iochaos import IoChaosFlow
        IoChaosFlow(self, ROOT).run()
        self.check_untouched()
        self.check_delete()


def load_images(node: Node, cache: Path, r: Results) -> None:
    imgs = cache / "images"
    node.import_image(imgs / "pause.oci.tar", "localhost/pause:3.2")
    for t, name in (("chaos-fs", "chaos-fs"), ("chaos-scripts", "chaos-scripts"),
                    ("chaos-injector", "chaos-injector"), ("e2e-app", "e2e-app"),
                    ("e2e-etcd", "e2e-etcd")):
        node.import_image(imgs / f"{t}.oci.tar", f"localhost/{name}:{TAG}")
    r.check("images imported into containerd", True)


def main() -> int:
    ap = argparse.ArgumentParser(prog="e2e/run")
    ap.add_argument("--keep-on-failure", action="store_true")
    args = ap.parse_args()
    cache = Path(os.environ.get("CHAOSFS_E2E_CACHE", "/var/cache/chaosfs-e2e"))
    work = Path(tempfile.mkdtemp(prefix="chaosfs-e2e.", dir="/var/tmp"))
    r = Results()
    node = Node(cache, work)

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        t = time.monotonic()
        node.up()
        r.check("node up: etcd, kube-apiserver, containerd, kubelet Ready", True,
                f"{time.monotonic() - t:.1f} s")
        load_images(node, cache, r)
        Flow(node, r).run()
    except StepFailed as e:
        if str(e) not in r.failed:
            r.check("cluster operations", False, str(e))
        print(f"e2e: stopping after failed step: {e}", flush=True)
    except NodeError as e:
        r.check("node and cluster operations", False, str(e)[:1500])
    except KeyboardInterrupt as e:
        r.check("run not interrupted", False, str(e))
    except Exception as e:  # noqa: BLE001 - reported as a failed check, teardown follows
        r.check("no unexpected error", False, f"{type(e).__name__}: {e}")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        problems = node.down()
        r.check("teardown: processes, mounts, netns and bridge gone", not problems, problems)
        still_mounted = str(work) in Path("/proc/self/mountinfo").read_text()
        if still_mounted or (r.failed and args.keep_on_failure):
            print(f"e2e: work dir kept: {work} (logs in {work}/logs)", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"e2e: {len(r.passed) + len(r.failed)} checks in {time.monotonic() - r.t0:.0f} s", flush=True)
    print(f"{len(r.passed)} passed, {len(r.failed)} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
