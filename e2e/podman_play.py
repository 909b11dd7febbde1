"""The quicker e2e variant: no Kubernetes. `chaos-injector inject` renders the seed template
into the app pod offline, `podman kube play` runs the injected pod (init container, privileged
FUSE sidecar with Bidirectional propagation, app with HostToContainer), and the same fault
checks as the node run go through the pod's IP on a podman network of its own.

Not covered here (podman ignores lifecycle hooks): postStart, hence the start order (the app
may start before the mount is live, and wait-fuse.sh never runs in the app container), and
everything Kubernetes does: the webhook call, deploy/, the kubelet, pod deletion.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import DATA, ROOT, TAG, Flow, Results, StepFailed, wait_until  # noqa: E402
from node import run  # noqa: E402

NETWORK = "chaosfs-e2e-play"
SUBNET = "10.213.78.0/24"


class Podman:
    def __init__(self, cache: Path, work: Path) -> None:
        self.work = work
        self.conf = cache / "containers.conf"  # written by images/build.sh
        self.volumes = work / "storage" / "volumes"
        self.base = ["podman", "--root", str(work / "storage"), "--runroot", str(work / "run")]
        self.bind_made = False
        self.network_made = False

    def __call__(self, *args: str, check: bool = True) -> str:
        env = dict(os.environ, CONTAINERS_CONF=str(self.conf))
        cp = subprocess.run(self.base + list(args), capture_output=True, text=True, env=env)
        if check and cp.returncode != 0:
            raise StepFailed(f"podman {' '.join(args)}: {cp.stderr.strip()[-500:]}")
        return cp.stdout

    def setup(self) -> None:
        # Propagation from the sidecar to the app needs the volumes on a shared mount.
        self.volumes.mkdir(parents=True)
        run(["mount", "--bind", str(self.volumes), str(self.volumes)])
        self.bind_made = True
        run(["mount", "--make-rshared", str(self.volumes)])
        env = dict(os.environ, CONTAINERS_CONF=str(self.conf))
        if subprocess.run(self.base + ["network", "exists", NETWORK], env=env).returncode == 0:
            raise StepFailed(f"podman network {NETWORK} exists: another run is active "
                             f"(or a crashed one left it: podman network rm {NETWORK})")
        self("network", "create", "--subnet", SUBNET, NETWORK)
        self.network_made = True

    def teardown(self) -> list[str]:
        problems = []
        self("pod", "stop", "-a", "-t", "10", check=False)
        self("pod", "rm", "-a", "-f", check=False)
        self("volume", "rm", "-a", "-f", check=False)
        if self.network_made:
            self("network", "rm", "-f", NETWORK, check=False)
        prefix = str(self.work) + "/"
        for _ in range(3):
            mps = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                   if ln.split()[4].startswith(prefix)]
            if not mps:
                break
            for mp in sorted(mps, key=len, reverse=True):
                run(["umount", "-l", mp], check=False)
        else:
            problems.append(f"mounts left under {self.work}")
        return problems


class PlayFlow(Flow):
    def __init__(self, podman: Podman, r: Results) -> None:
        super().__init__(node=None, r=r)  # type: ignore[arg-type]
        self.p = podman

    def emptydir(self, uid: str, volume: str) -> Path:
        return self.p.volumes / volume / "_data"

    def run(self) -> None:
        cache = Path(os.environ.get("CHAOSFS_E2E_CACHE", "/var/cache/chaosfs-e2e"))
        for t in ("chaos-fs", "chaos-scripts", "e2e-app"):
            self.p("load", "-q", "-i", str(cache / "images" / f"{t}.oci.tar"))
        tmp = self.p.work
        tpl = (ROOT / "deploy" / "chaosfs-sidecar-template.yaml").read_text()
        (tmp / "template.yaml").write_text(
            tpl.replace("pingcap/chaos-scripts:latest", f"localhost/chaos-scripts:{TAG}")
               .replace("pingcap/chaos-fs:latest", f"localhost/chaos-fs:{TAG}")
               .replace("imagePullPolicy: Always", "imagePullPolicy: IfNotPresent"))
        (tmp / "app.json").write_text(json.dumps(self.app_pod("app", annotated=True)))
        cp = run([str(ROOT / ".venv" / "bin" / "chaos-injector"), "inject", "-f", str(tmp / "app.json"),
                  "--template-configmap", str(tmp / "template.yaml"),
                  "--set", "ContainerName=app", "--set", f"DataPath={DATA}",
                  "--set", "MountPath=/var/lib/app", "--set", "VolumeName=data"], check=False)
        self.r.require("chaos-injector inject renders the seed template into the pod",
                       cp.returncode == 0, cp.stderr.strip()[-300:])
        pod = json.loads(cp.stdout)
        names = [c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]
        self.r.check("injected manifest: inject-scripts, chaosfs, app", names == ["inject-scripts", "chaosfs", "app"], names)
        # podman 4.3: no nodeName, no annotations over 63 characters, and containerPort would be
        # published on the host: none of them matter to the pod itself.
        pod["spec"].pop("nodeName", None)
        # "always" keeps podman from removing the init container after it ran: podman 4.3
        # here does not notice its exit (it waits out a 20 s conmon timeout) and then fails
        # to remove a container it still believes is running.
        pod["metadata"] = {"name": "app", "annotations": {
            "io.podman.annotations.init.container.type": "always"}}
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            c.pop("ports", None)
        (tmp / "injected.json").write_text(json.dumps(pod))
        t = time.monotonic()
        self.p("kube", "play", "--network", NETWORK, str(tmp / "injected.json"))
        self.r.check("podman kube play ran the init container and started the pod", True,
                     f"{time.monotonic() - t:.1f} s")
        pid = self.p("inspect", "app-app", "--format", "{{.State.Pid}}").strip()

        def fstype() -> str | None:
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
                left, _, right = line.partition(" - ")
                if left.split()[4] == DATA and right.startswith("fuse.chaosfs"):
                    return "fuse.chaosfs"
            return None
        self.r.require("app container's mountinfo: data dir is a fuse.chaosfs mount "
                       "(propagated from the sidecar)", bool(wait_until(fstype, 30)))
        infra = self.p("pod", "inspect", "app", "--format", "{{.InfraContainerID}}").strip()
        self.pod_ip = self.p("inspect", infra, "--format",
                             "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}").strip()
        backing = self.emptydir("", "data") / "fuse-data"
        ok = wait_until(lambda: (backing / "victim.dat").stat().st_size == 4096, 10)
        self.r.check("files the app writes land in fuse-data on the volume", bool(ok))
        self.check_faults_ctl()
        self.check_faults_09()
        t = time.monotonic()
        self.p("pod", "stop", "-t", "20", "app")
        secs = time.monotonic() - t
        left = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                if "fuse.chaosfs" in ln.split(" - ")[-1] and str(self.p.work) in ln]
        self.r.check("podman pod stop: sidecar unmounts on SIGTERM, no mount left",
                     not left and secs < 15, f"{secs:.1f} s, left {left[:2]}")


def main() -> int:
    ap = argparse.ArgumentParser(prog="e2e/run --podman")
    ap.add_argument("--keep-on-failure", action="store_true")
    args = ap.parse_args()
    cache = Path(os.environ.get("CHAOSFS_E2E_CACHE", "/var/cache/chaosfs-e2e"))
    work = Path(tempfile.mkdtemp(prefix="chaosfs-e2e-play.", dir="/var/tmp"))
    r = Results()
    p = Podman(cache, work)

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        p.setup()
        PlayFlow(p, r).run()
    except StepFailed as e:
        if str(e) not in r.failed:
            r.check("podman operations", False, str(e))
        print(f"e2e: stopping after failed step: {e}", flush=True)
    except KeyboardInterrupt as e:
        r.check("run not interrupted", False, str(e))
    except Exception as e:  # noqa: BLE001 - reported as a failed check, teardown follows
        r.check("no unexpected error", False, f"{type(e).__name__}: {e}")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        problems = p.teardown()
        r.check("teardown: pod, volumes, network and mounts gone", not problems, problems)
        if str(work) in Path("/proc/self/mountinfo").read_text() or (r.failed and args.keep_on_failure):
            print(f"e2e: work dir kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"e2e (podman kube play): {len(r.passed) + len(r.failed)} checks in "
          f"{time.monotonic() - r.t0:.0f} s", flush=True)
    print(f"{len(r.passed)} passed, {len(r.failed)} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
