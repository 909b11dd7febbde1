"""`chaos-injector` as a real process: render, inject (pipeable output, golden files, errors)
and the webhook subcommand serving HTTPS from a --config-dir."""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trustme
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "injector"
SEED = ROOT / "deploy" / "chaosfs-sidecar-template.yaml"
EXAMPLE = ROOT / "deploy" / "examples" / "injection-config.yaml"
EXE = Path(sys.executable).with_name("chaos-injector")
ARGS = ["--set", "ContainerName=tikv", "--set", "DataPath=/var/lib/tikv/data",
        "--set", "MountPath=/var/lib/tikv", "--set", "VolumeName=tikv"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "injector.cli"]
    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def one_line_error(proc: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == "", "nothing may be printed on failure"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_render_from_configmap_and_raw_template(tmp_path: Path) -> None:
    proc = run("render", "--template-configmap", str(SEED), *ARGS)
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    assert rendered["containers"][0]["command"][-1] == "-mountpoint=/var/lib/tikv/data"
    assert rendered["postStart"] == {"tikv": {"command": ["/tmp/scripts/wait-fuse.sh"]}}
    raw = tmp_path / "sidecar.tmpl"
    raw.write_text(yaml.safe_load(SEED.read_text())["data"]["data"])
    proc2 = run("render", "--template", str(raw), *ARGS)
    assert proc2.returncode == 0 and proc2.stdout == proc.stdout


def test_render_errors(tmp_path: Path) -> None:
    one_line_error(run("render", "--template-configmap", str(SEED), "--set", "ContainerName=x"),
                   1, "DataPath")
    one_line_error(run("render", "--template", str(tmp_path / "absent")), 1,
                   "cannot read template")
    bad = tmp_path / "bad.tmpl"
    bad.write_text("containers:\n- name: {{ .Name \n")
    one_line_error(run("render", "--template", str(bad), "--set", "Name=x"), 1, "bad")
    notyaml = tmp_path / "notyaml.tmpl"
    notyaml.write_text("containers: [{{.X}}\n")
    one_line_error(run("render", "--template", str(notyaml), "--set", "X=1"), 1,
                   "not valid YAML")
    proc = run("render", *ARGS)
    assert proc.returncode == 2 and "exactly one of" in proc.stderr
    proc = run("render", "--template", str(bad), "--set", "novalue")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr


@pytest.mark.parametrize("source,mode", [
    ("tikv-pod.yaml", "ordered"),
    ("tikv-pod.yaml", "native"),
    ("tikv-statefulset.yaml", "ordered"),
    ("app-deployment.json", "ordered"),
    ("mixed.yaml", "ordered"),
])
def test_inject_matches_golden(source: str, mode: str) -> None:
    proc = run("inject", "-f", str(DATA / source), "--template-configmap", str(SEED), *ARGS,
               "--sidecar-mode", mode)
    assert proc.returncode == 0, proc.stderr
    stem, ext = source.rsplit(".", 1)
    assert proc.stdout == (DATA / f"{stem}.{mode}.golden.{ext}").read_text()


def test_inject_from_stdin_with_config_and_templates_dir() -> None:
    text = (DATA / "tikv-pod.yaml").read_text()
    proc = run("inject", "-f", "-", "--config", str(EXAMPLE), "--templates",
               str(ROOT / "deploy"), stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (DATA / "tikv-pod.ordered.golden.yaml").read_text()
    # idempotent: the output injected again is unchanged
    again = run("inject", "-f", "-", "--config", str(EXAMPLE), "--templates",
                str(ROOT / "deploy"), stdin=proc.stdout)
    assert again.returncode == 0 and again.stdout == proc.stdout


def test_config_selector_limits_what_is_injected(tmp_path: Path) -> None:
    cfg = {"name": "only-pd", "template": "chaosfs-sidecar",
           "arguments": {"ContainerName": "tikv", "DataPath": "/var/lib/tikv/data",
                         "MountPath": "/var/lib/tikv", "VolumeName": "tikv"},
           "selector": {"labelSelectors": {"app": "pd"}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run("inject", "-f", str(DATA / "tikv-pod.yaml"), "--config", str(path),
               "--templates", str(SEED))
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout) == yaml.safe_load((DATA / "tikv-pod.yaml").read_text())


def test_cli_and_webhook_run_one_pipeline(tmp_path: Path) -> None:
    from injector.config import ConfigStore, Settings
    from injector.watch import load_config_dir
    from injector.webhook import Webhook

    confdir = tmp_path / "configs"
    confdir.mkdir()
    (confdir / "template.yaml").write_text(SEED.read_text())
    (confdir / "config.yaml").write_text(EXAMPLE.read_text())
    # an unrelated broken file is a problem of that file, for the CLI as for the webhook
    (confdir / "notes.yaml").write_text("key: [unclosed\n")
    pod_text = (DATA / "tikv-pod.yaml").read_text()
    proc = run("inject", "-f", "-", "--config", str(EXAMPLE), "--templates", str(confdir),
               stdin=pod_text)
    assert proc.returncode == 0, proc.stderr
    settings = Settings("chaos-testing", {"app.kubernetes.io/component": "template"},
                        {"app.kubernetes.io/component": "webhook"})
    hook = Webhook(ConfigStore(load_config_dir(str(confdir), settings)))
    pod = yaml.safe_load(pod_text)
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"kind": "Pod"}, "resource": {"resource": "pods"},
                        "namespace": "tikv", "operation": "CREATE", "object": pod}}
    code, doc, decision = hook.review(json.dumps(body).encode())
    assert code == 200 and decision.result == "injected", decision
    patch = json.loads(base64.b64decode(doc["response"]["patch"]))
    import jsonpatch
    assert jsonpatch.apply_patch(pod, patch) == yaml.safe_load(proc.stdout)
    # a template is found the way the webhook finds it: by its label
    unlabelled = yaml.safe_load(SEED.read_text())
    del unlabelled["metadata"]["labels"]
    (confdir / "template.yaml").write_text(yaml.safe_dump(unlabelled))
    one_line_error(run("inject", "-f", "-", "--config", str(EXAMPLE), "--templates",
                       str(confdir), stdin=pod_text), 1,
                   "a template ConfigMap carries the label app.kubernetes.io/component=template")


def test_seed_page_spelling_is_injected_with_a_warning(tmp_path: Path) -> None:
    page = tmp_path / "seed-page.yaml"
    page.write_text(SEED.read_text().replace("imagePullPolicy: Always", "imagePullpolicy: Always")
                    .replace("    postStart:", "    hostAliasez: []\n    postStart:"))
    proc = run("inject", "-f", str(DATA / "tikv-pod.yaml"), "--template-configmap", str(page),
               *ARGS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (DATA / "tikv-pod.ordered.golden.yaml").read_text()
    lines = proc.stderr.splitlines()
    assert len(lines) == 3, proc.stderr
    assert lines[0] == ("chaos-injector: warning: template chaosfs-sidecar: "
                        "initContainers[0].imagePullpolicy read as imagePullPolicy (keys match "
                        "case-insensitively, as in Chaos Mesh 0.9)")
    assert "containers[0].imagePullpolicy read as imagePullPolicy" in lines[1]
    assert "hostAliasez is not a field of the template; ignored, as Chaos Mesh 0.9 did" in lines[2]
    rendered = run("render", "--template-configmap", str(page), *ARGS)
    assert rendered.returncode == 0 and rendered.stderr.splitlines() == lines


def test_inject_errors(tmp_path: Path) -> None:
    pod = str(DATA / "tikv-pod.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("apiVersion: v1\nkind: Pod\nmetadata: [\n")
    one_line_error(run("inject", "-f", str(bad_yaml), "--template-configmap", str(SEED), *ARGS),
                   1, "invalid YAML")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"kind": ')
    one_line_error(run("inject", "-f", str(bad_json), "--template-configmap", str(SEED), *ARGS),
                   1, "invalid JSON")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: x\ntemplate: does-not-exist\n")
    one_line_error(run("inject", "-f", pod, "--config", str(cfg), "--templates",
                       str(ROOT / "deploy")), 1, "template 'does-not-exist' not found")
    one_line_error(run("inject", "-f", pod, "--template-configmap", str(SEED),
                       "--set", "ContainerName=tikv"), 1, "map has no entry for key")
    one_line_error(run("inject", "-f", pod, "--template-configmap", str(SEED), *ARGS,
                       "--set", "VolumeName=data"), 1, "volume 'data'")
    # output that would not pass the schema is an error naming the field, not printed YAML
    typo = tmp_path / "typo.yaml"
    typo.write_text(SEED.read_text().replace("imagePullPolicy: Always", "imagePullPolicy: [x]", 1))
    one_line_error(run("inject", "-f", pod, "--template-configmap", str(typo), *ARGS), 1,
                   "invalid field spec.initContainers[1].imagePullPolicy")
    # input that is itself invalid is caught the same way
    broken = tmp_path / "broken-pod.yaml"
    broken.write_text((DATA / "tikv-pod.yaml").read_text().replace("pingcap/tikv:v4.0.0", "[1]"))
    one_line_error(run("inject", "-f", str(broken), "--template-configmap", str(SEED), *ARGS), 1,
                   "spec.containers[1].image")
    proc = run("inject", "-f", pod, "--template-configmap", str(SEED), *ARGS,
               "--sidecar-mode", "native", "--kube-version", "1.28")
    assert proc.returncode == 2 and "native sidecars need Kubernetes >= 1.29" in proc.stderr
    proc = run("inject", "-f", pod, "--config", str(EXAMPLE))
    assert proc.returncode == 2 and "--templates" in proc.stderr


def wait_ready(port: int, ctx: ssl.SSLContext, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            with urllib.request.urlopen(f"https://localhost:{port}/readyz", context=ctx,
                                        timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("webhook did not become ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webhook_process_from_config_dir(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    confdir = tmp_path / "configs"
    confdir.mkdir()
    (confdir / "template.yaml").write_text(SEED.read_text())
    (confdir / "config.yaml").write_text(EXAMPLE.read_text())
    (confdir / "ns.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "tikv", "annotations": {
             "admission-webhook.chaos-mesh.org/init-request": "chaosfs-tikv"}}}))
    port = free_port()
    cmd = [str(EXE), "webhook", "--cert-file", str(tmp_path / "tls.crt"),
           "--key-file", str(tmp_path / "tls.key"), "--address", "127.0.0.1",
           "--port", str(port), "--config-dir", str(confdir), "--template-namespace",
           "chaos-testing"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        wait_ready(port, ctx, proc)
        pod = yaml.safe_load((DATA / "tikv-pod.yaml").read_text())
        del pod["metadata"]["annotations"]["admission-webhook.chaos-mesh.org/request"]
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "request": {"uid": "u-1", "kind": {"kind": "Pod"},
                                       "resource": {"resource": "pods"}, "namespace": "tikv",
                                       "operation": "CREATE", "object": pod}}).encode()
        req = urllib.request.Request(f"https://localhost:{port}/inject", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            out = json.load(r)["response"]
        assert out["uid"] == "u-1" and out["allowed"] is True
        patch = json.loads(base64.b64decode(out["patch"]))
        assert any(op["path"] == "/spec/initContainers/1" or op["path"] == "/spec/initContainers"
                   or op["path"].startswith("/spec/initContainers") for op in patch)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0
    assert "listening on https://127.0.0.1" in proc.stderr.read()


def test_webhook_bad_setup_is_one_line(tmp_path: Path) -> None:
    proc = run("webhook", "--cert-file", str(tmp_path / "no.crt"), "--key-file",
               str(tmp_path / "no.key"), "--config-dir", str(tmp_path))
    one_line_error(proc, 1, "cannot load the serving certificate")
    proc = run("webhook", "--cert-file", "x", "--key-file", "y", "--template-labels", "junk",
               "--template-namespace", "ns")
    assert proc.returncode == 2 and "not key=value" in proc.stderr
