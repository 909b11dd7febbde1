"""Chaos Mesh 0.9's etcd example on the real node: the manifests in deploy/examples/etcd
(the etcd Deployment, its `chaosfs-etcd` injection ConfigMap, the `io-delay-etcd` IoChaos)
against the template ConfigMap the run already applied, with etcd from Debian's
etcd-server (Dockerfile target e2e-etcd).

The latency is what etcd's own client sees: `etcdctl put`, timed in the etcd container
(kubectl exec), before, during and after the experiment. The node has no
controller-manager, so the Deployment's pod template is created as a pod bound to the node.
Called by iochaos.IoChaosFlow once the controller runs; every check line names IoChaos.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import time

import yaml

from node import NODE_NAME, run

NS = "etcd"
POD = "etcd-0"
DATA = "/var/run/etcd/default.etcd"
DELAY_MS = 100
# The example's window is 400 s every 10 minutes; the run keeps the cron and shortens the
# window so that it also sees the window close.
WINDOW = "20s"


class EtcdFlow:
    def __init__(self, io) -> None:
        self.io = io            # iochaos.IoChaosFlow: kubectl helpers, results, waits
        self.f, self.n, self.r = io.f, io.n, io.r
        self.dir = io.root / "deploy" / "examples" / "etcd"
        self.ip = ""

    # ------------------------------------------------------------------ helpers
    def docs(self, name: str) -> list[dict]:
        return [d for d in yaml.safe_load_all((self.dir / name).read_text()) if d]

    def iochaos(self, name: str) -> dict | None:
        out = self.n.kubectl("-n", NS, "get", "iochaos", name, "-o", "json", check=False)
        return json.loads(out) if out.strip() else None

    def exec(self, script: str, timeout: float = 60) -> str:
        try:
            cp = run([str(self.n.bin / "kubectl"), "-n", NS, "exec", POD, "-c", "etcd", "--",
                      "sh", "-c", script], env=self.n.env(), check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"ERR timed out after {timeout:.0f} s"
        return cp.stdout if cp.returncode == 0 else f"ERR {cp.returncode}: {cp.stderr.strip()[-300:]}"

    def put_ms(self, n: int = 7) -> float:
        """The median wall time of `n` etcdctl puts in the etcd container, in ms (inf when
        one failed: a fault is never mistaken for speed)."""
        out = self.exec(
            f"for i in $(seq {n}); do s=$(date +%s%N); "
            "etcdctl --endpoints=http://127.0.0.1:2379 put e2e-key value$i >/dev/null || echo FAIL; "
            "e=$(date +%s%N); echo $(( (e - s) / 1000000 )); done")
        vals = out.split()
        if len(vals) != n or not all(v.isdigit() for v in vals):
            return float("inf")
        return statistics.median(int(v) for v in vals)

    def rules(self) -> object:
        cp = run([str(self.io.root / ".venv" / "bin" / "chaosfs-ctl"), "--timeout", "5", "--addr",
                  f"{self.ip}:65533", "--json", "rules"], check=False)
        try:
            return [r["id"] for r in json.loads(cp.stdout)]
        except (ValueError, TypeError, KeyError):
            return f"unreadable: {cp.stdout.strip()[:80]} {cp.stderr.strip()[:120]}"

    def phase(self, name: str) -> str:
        return ((self.iochaos(name) or {}).get("status", {}).get("experiment", {})
                .get("phase", ""))

    # ------------------------------------------------------------------ the flow
    def start(self) -> None:
        from harness import TAG
        ns, deploy = self.docs("etcd.yaml")
        self.f.apply(ns)
        self.f.apply(self.docs("chaosfs-etcd.yaml")[0])
        tpl = deploy["spec"]["template"]
        spec = dict(tpl["spec"], nodeName=NODE_NAME, terminationGracePeriodSeconds=5)
        for c in spec["containers"]:
            c["image"], c["imagePullPolicy"] = f"localhost/e2e-etcd:{TAG}", "IfNotPresent"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": POD, "namespace": NS, **tpl["metadata"]}, "spec": spec}

        # the injector learns of the new injection config after its watch debounce
        def injected() -> bool:
            out = self.n.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                 input=json.dumps(pod), check=False)
            return bool(out.strip()) and bool(json.loads(out)["spec"].get("initContainers"))
        ok = self.io.wait(injected, 40, 1.0)
        self.r.require("IoChaos etcd example: the webhook injects the pod of examples/etcd's "
                       "Deployment by its chaosfs-etcd injection config", bool(ok))
        self.f.apply(pod)

        def ready() -> dict | None:
            p = self.f.get("pod", POD, NS)
            cs = p.get("status", {}).get("containerStatuses", [])
            return p if cs and all(c.get("ready") for c in cs) else None
        p = self.io.wait(ready, 120, 1.0)
        if p is None:
            p = self.f.get("pod", POD, NS)
            self.r.require("IoChaos etcd example pod running and ready", False,
                           json.dumps(p.get("status", {}).get("containerStatuses"))[:800])
        self.ip = p["status"]["podIP"]
        # mountinfo names it with /var/run resolved (a symlink to /run in the image)
        parent, base = DATA.rsplit("/", 1)
        mounts = self.exec(f"p=$(readlink -f {parent})/{base}; "
                           "awk -v p=\"$p\" '$5 == p' /proc/self/mountinfo")
        self.r.check("IoChaos etcd example pod ready: etcd serves with its data dir on the "
                     "chaosfs FUSE mount", " - fuse" in mounts and "ERR" not in mounts,
                     mounts.strip()[-200:])

    def delay_window(self, base: float) -> None:
        """0.9's io-delay-etcd (one window, shortened): slower puts while it runs, back to
        normal when the window closes."""
        obj = self.docs("io-delay-etcd.yaml")[0]
        name = obj["metadata"]["name"]
        obj["spec"]["duration"] = WINDOW
        self.f.apply(obj)
        t0 = time.monotonic()
        o = self.io.wait(lambda: (x := self.iochaos(name)) and self.phase(name) == "Running"
                         and len(x["status"]["experiment"].get("podRecords") or []) == 1 and x, 30)
        during = self.put_ms()
        self.r.check(f"IoChaos etcd delay {DELAY_MS}ms (0.9's io-delay-etcd: mode one, all "
                     f"methods, @every 10m, duration {WINDOW}): Running on the etcd pod, etcdctl "
                     f"put in the pod at least {DELAY_MS} ms slower",
                     o is not None and during >= base + DELAY_MS,
                     f"put {base:.0f} ms -> {during:.0f} ms" + ("" if o else " status " + json.dumps(
                         (self.iochaos(name) or {}).get("status"))[:400]))
        # the window closes after `duration` (counted from the injection)
        closed = self.io.wait(lambda: self.phase(name) == "Waiting", 45, 1.0)
        after = self.put_ms()
        st = (self.iochaos(name) or {}).get("status", {})
        self.r.check("IoChaos etcd delay window closes after its duration: phase Waiting, next "
                     "start scheduled, no rule left on the sidecar, put latency back",
                     bool(closed) and bool(st.get("scheduler", {}).get("nextStart"))
                     and self.rules() == [] and after <= base + DELAY_MS / 2,
                     f"closed after {time.monotonic() - t0:.1f} s, put {after:.0f} ms (before "
                     f"{base:.0f} ms), scheduler {st.get('scheduler')}")
        self.n.kubectl("-n", NS, "delete", "iochaos", name, "--wait=false", check=False)
        self.io.wait(lambda: self.iochaos(name) is None, 60)

    def delay_until_deleted(self, base: float) -> None:
        """The same fault with neither duration nor scheduler: kept until the object goes."""
        obj = self.docs("io-delay-etcd.yaml")[0]
        name = "io-delay-etcd-held"
        obj["metadata"]["name"] = name
        del obj["spec"]["duration"], obj["spec"]["scheduler"]
        self.f.apply(obj)
        o = self.io.wait(lambda: self.phase(name) == "Running" and self.iochaos(name), 30)
        during = self.put_ms()
        t0 = time.monotonic()
        self.n.kubectl("-n", NS, "delete", "iochaos", name, "--wait=false", check=False)
        gone = self.io.wait(lambda: self.iochaos(name) is None, 60)
        secs = time.monotonic() - t0
        after = self.put_ms()
        left = self.rules()
        events = self.n.kubectl("-n", NS, "get", "events", "-o", "json",
                                "--field-selector", f"involvedObject.name={name}", check=False)
        reasons = {e.get("reason") for e in json.loads(events or '{"items": []}')["items"]}
        self.r.check("IoChaos etcd delay without duration: put slower until the object is "
                     "deleted; deletion recovers (ChaosRecovered), leaves no rule and no object, "
                     "put latency back",
                     o is not None and during >= base + DELAY_MS and gone is not None
                     and left == [] and after <= base + DELAY_MS / 2
                     and {"ChaosInjected", "ChaosRecovered"} <= reasons,
                     f"put {base:.0f} -> {during:.0f} -> {after:.0f} ms, deleted in {secs:.1f} s, "
                     f"rules {left}, events {sorted(r for r in reasons if r)}")

    def cleanup(self) -> None:
        # (no namespace deletion: that needs the controller-manager's namespace controller)
        self.n.kubectl("-n", NS, "delete", "pod", POD, "--wait=false", check=False)
        self.io.wait(lambda: not self.n.kubectl("-n", NS, "get", "pod", POD, "--ignore-not-found",
                                                check=False).strip(), 60, 1.0)

    def run(self) -> None:
        try:
            self.start()
            base = self.put_ms()
            if base == float("inf"):
                self.r.require("IoChaos etcd example: etcdctl put works in the pod", False,
                               self.exec("etcdctl --endpoints=http://127.0.0.1:2379 put k v"))
            self.delay_window(base)
            self.delay_until_deleted(base)
        finally:
            self.cleanup()
