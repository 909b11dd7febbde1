"""``chaos-injector``: render a sidecar template, inject manifests offline, or run the webhook.

Exit codes: 0 success, 1 bad input data or impossible injection (one line on stderr naming
the problem, nothing printed on stdout), 2 bad command line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any, NoReturn

import click

from injector import pipeline
from injector.config import (
    DEFAULT_CONFIGMAP_LABELS,
    DEFAULT_TEMPLATE_LABELS,
    MISSING_VOLUME_POLICIES,
    SIDECAR_MODES,
    ConfigError,
    ConfigSet,
    ConfigStore,
    InjectionConfig,
    SidecarTemplate,
    Settings,
    injection_configs_from_configmap,
    parse_label_selector,
)
from injector.inject import InjectionError, InjectOptions, parse_sidecar_config
from injector.manifests import (
    DEFAULT_KUBE_VERSION,
    ManifestError,
    dump_stream,
    iter_objects,
    load_stream,
    map_objects,
)

PROG = "chaos-injector"


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(code)


def read_text(path: str, what: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}")


def parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        out[key] = value
    return out


def _configmaps_in(path: str, what: str) -> list[dict]:
    stream = _load(read_text(path, what), path)
    return [o for d in stream.docs for o in iter_objects(d)
            if isinstance(o, dict) and o.get("kind") == "ConfigMap"]


def _load(text: str, source: str) -> Any:
    try:
        return load_stream(text, source)
    except ManifestError as exc:
        fail(str(exc))


def template_from_configmap_file(path: str, name: str | None = None) -> SidecarTemplate:
    cms = _configmaps_in(path, "template ConfigMap")
    if name is not None:
        cms = [c for c in cms if (c.get("metadata") or {}).get("name") == name]
    if not cms:
        fail(f"{path}: no ConfigMap{f' named {name!r}' if name else ''} found")
    if len(cms) > 1:
        names = ", ".join(str((c.get("metadata") or {}).get("name")) for c in cms)
        fail(f"{path}: several ConfigMaps ({names}); keep one template per file")
    try:
        return SidecarTemplate.from_configmap(cms[0])
    except ConfigError as exc:
        fail(f"{path}: {exc}")


def template_from_file(path: str) -> SidecarTemplate:
    name = os.path.splitext(os.path.basename(path))[0] if path != "-" else "template"
    try:
        return SidecarTemplate.from_text(name, read_text(path, "template"), path)
    except ConfigError as exc:
        fail(str(exc))


def templates_in(path: str) -> ConfigSet:
    """The template ConfigMaps in ``path`` (directory or file), recognised as the webhook's
    ``--config-dir`` recognises them: by label (TEMPLATE_LABELS, default
    app.kubernetes.io/component=template), any namespace."""
    if not os.path.exists(path):
        fail(f"--templates {path}: no such file or directory")
    try:
        labels = parse_label_selector(os.environ.get("TEMPLATE_LABELS") or DEFAULT_TEMPLATE_LABELS)
    except ConfigError as exc:
        fail(str(exc))
    from injector.watch import load_config_dir

    return load_config_dir(path, Settings("", labels, parse_label_selector(DEFAULT_CONFIGMAP_LABELS)))


def injection_config_from_file(path: str, name: str | None) -> InjectionConfig:
    stream = _load(read_text(path, "injection config"), path)
    configs: list[InjectionConfig] = []
    for doc in stream.docs:
        for obj in iter_objects(doc):
            try:
                if isinstance(obj, dict) and obj.get("kind") == "ConfigMap":
                    found, problems = injection_configs_from_configmap(obj)
                    if problems and (name is None or not any(c.name == name for c in found)):
                        fail(problems[0].message)
                    configs.extend(found)
                else:
                    configs.append(InjectionConfig.parse(obj, source=path))
            except ConfigError as exc:
                fail(str(exc))
    if name is not None:
        configs = [c for c in configs if c.name == name]
    if not configs:
        fail(f"{path}: no injection config{f' named {name!r}' if name else ''}")
    if len(configs) > 1:
        fail(f"{path}: several injection configs ({', '.join(c.name for c in configs)}); "
             "pick one with --config-name")
    return configs[0]


def render_sidecar(tpl: SidecarTemplate, arguments: dict[str, str]) -> str:
    try:
        text = tpl.render(arguments)
        sidecar = parse_sidecar_config(text, f"template {tpl.name}")
    except (ConfigError, InjectionError) as exc:
        fail(str(exc))
    for w in sidecar.warnings:
        warn(w)
    return text


def warn(message: str) -> None:
    click.echo(f"{PROG}: warning: {message}", err=True)


def _check_version(kube_version: str, sidecar_mode: str) -> None:
    try:
        major, minor = (int(p) for p in kube_version.lstrip("v").split(".")[:2])
    except ValueError:
        raise click.BadParameter(f"{kube_version!r} is not MAJOR.MINOR",
                                 param_hint="--kube-version") from None
    if sidecar_mode == "native" and (major, minor) < (1, 29):
        raise click.BadParameter(
            f"native sidecars need Kubernetes >= 1.29, not {kube_version}; use ordered",
            param_hint="--sidecar-mode")


# ---------------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Render the chaosfs sidecar template and inject it into workloads."""


_template_options = [
    click.option("--template", "template_file", metavar="FILE",
                 help="Raw Go template text of the sidecar config."),
    click.option("--template-configmap", "template_cm", metavar="FILE",
                 help="A template ConfigMap manifest (template under data key 'data')."),
    click.option("--set", "sets", multiple=True, metavar="K=V",
                 help="Template argument, repeatable (overrides --config's arguments)."),
]


def template_options(fn: Any) -> Any:
    for opt in reversed(_template_options):
        fn = opt(fn)
    return fn


@main.command()
@template_options
def render(template_file: str | None, template_cm: str | None, sets: tuple[str, ...]) -> None:
    """Print the rendered sidecar config."""
    if bool(template_file) == bool(template_cm):
        raise click.UsageError("give exactly one of --template or --template-configmap")
    args = parse_sets(sets)
    tpl = template_from_file(template_file) if template_file else \
        template_from_configmap_file(template_cm)
    text = render_sidecar(tpl, args)
    click.echo(text, nl=not text.endswith("\n"))


@main.command("inject")
@click.option("-f", "--filename", "filename", required=True, metavar="FILE|-",
              help="Manifests to inject (YAML, multi-document, JSON or kind: List).")
@template_options
@click.option("--config", "config_file", metavar="FILE",
              help="Injection config (ConfigMap or bare document): name, template, arguments.")
@click.option("--config-name", metavar="NAME", help="Which config when --config holds several.")
@click.option("--templates", "templates_dir", metavar="DIR",
              help="Directory (or file) of template ConfigMaps; --config's template by name.")
@click.option("--sidecar-mode", type=click.Choice(SIDECAR_MODES), default="ordered",
              show_default=True, help="How the app is kept from starting before the mount.")
@click.option("--missing-volumes", type=click.Choice(MISSING_VOLUME_POLICIES), default=None,
              help="When a mount names no pod volume: fail, or add an emptyDir "
                   "(default: the template's missingVolumes, else error).")
@click.option("--kube-version", default=DEFAULT_KUBE_VERSION, show_default=True,
              help="Kubernetes version whose OpenAPI schema validates the output.")
def inject_cmd(filename: str, template_file: str | None, template_cm: str | None,
               sets: tuple[str, ...], config_file: str | None, config_name: str | None,
               templates_dir: str | None, sidecar_mode: str, missing_volumes: str | None,
               kube_version: str) -> None:
    """Print the manifests with the sidecar injected (pipe to kubectl apply -f -)."""
    sources = [s for s in (template_file, template_cm, config_file) if s]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of --template, --template-configmap or "
                               "--config (with --templates)")
    if config_file and not templates_dir:
        raise click.UsageError("--config needs --templates DIR to find its template")
    if templates_dir and not config_file:
        raise click.UsageError("--templates is only used with --config")
    _check_version(kube_version, sidecar_mode)
    args = parse_sets(sets)
    if config_file:
        cfg = injection_config_from_file(config_file, config_name)
        configs = templates_in(templates_dir)
        if cfg.template not in configs.templates:
            found = ", ".join(sorted(configs.templates)) or "none"
            fail(next((p.message for p in configs.problems
                       if p.source.rsplit("/", 1)[-1] == cfg.template),
                      f"template {cfg.template!r} not found in {templates_dir} (templates "
                      f"there: {found}; a template ConfigMap carries the label "
                      f"{DEFAULT_TEMPLATE_LABELS})"))
        plan = pipeline.plan_for(cfg, configs, args)
    elif template_file:
        plan = pipeline.Plan(template_from_file(template_file), args)
    else:
        plan = pipeline.Plan(template_from_configmap_file(template_cm), args)
    try:
        options = pipeline.PipelineOptions(
            InjectOptions(sidecar_mode=sidecar_mode, missing_volumes=missing_volumes),
            kube_version)
        plan.sidecar(kube_version)  # a broken template fails before any input is read
    except (InjectionError, pipeline.PipelineError) as exc:
        fail(str(exc))

    stream = _load(read_text(filename, "manifests"), filename)
    if not stream.docs:
        fail(f"{filename}: no objects")
    warnings: list[str] = []

    def one(obj: Any) -> Any:
        if not isinstance(obj, dict):
            fail(f"{filename}: a document is not a mapping")
        try:
            out = pipeline.run(obj, plan, options)
        except pipeline.PipelineError as exc:
            if exc.reason == "invalid_output":
                fail(f"output would be invalid: {exc}")
            fail(str(exc))
        warnings.extend(out.warnings)
        return out.obj

    out = [map_objects(doc, one) for doc in stream.docs]
    for w in dict.fromkeys(warnings):
        warn(w)
    click.echo(dump_stream(out, stream.fmt), nl=False)


# ---------------------------------------------------------------------------------------------


@main.command()
@click.option("--cert-file", required=True, envvar="CERT_FILE", metavar="FILE",
              help="Serving certificate (PEM); reloaded when it changes.")
@click.option("--key-file", required=True, envvar="KEY_FILE", metavar="FILE",
              help="Serving key (PEM); reloaded when it changes.")
@click.option("--address", default="0.0.0.0", show_default=True, help="Listen address.")
@click.option("--port", default=9443, show_default=True, type=click.IntRange(0, 65535))
@click.option("--template-namespace", default=None,
              help="Namespace of template ConfigMaps [env TEMPLATE_NAMESPACE; default: own].")
@click.option("--template-labels", default=None,
              help=f"Template ConfigMap selector, k=v,k2=v2 or k:v [env TEMPLATE_LABELS; "
                   f"default {DEFAULT_TEMPLATE_LABELS}].")
@click.option("--configmap-labels", default=None,
              help=f"Injection-config ConfigMap selector [env CONFIGMAP_LABELS; default "
                   f"{DEFAULT_CONFIGMAP_LABELS}].")
@click.option("--kubeconfig", default=None, envvar="KUBECONFIG", metavar="FILE",
              help="Kubeconfig; default in-cluster config.")
@click.option("--config-dir", default=None, metavar="DIR",
              help="Read ConfigMap (and Namespace) manifests from DIR instead of the API server.")
@click.option("--allowed-namespaces", multiple=True, metavar="REGEX",
              help="Only inject in namespaces matching one of these (repeatable).")
@click.option("--ignored-namespaces", multiple=True, metavar="REGEX",
              help="Never inject in namespaces matching these (repeatable).")
@click.option("--sidecar-mode", type=click.Choice(SIDECAR_MODES), default="ordered",
              show_default=True)
@click.option("--kube-version", default=DEFAULT_KUBE_VERSION, show_default=True,
              help="Schema version the patched pod is validated against.")
@click.option("--max-body-bytes", default=6 * 1024 * 1024, show_default=True,
              type=click.IntRange(1024))
@click.option("--debounce", default=3.0, show_default=True, type=click.FloatRange(0),
              help="Seconds of quiet before ConfigMap changes are re-listed.")
@click.option("--log-level", default="info", envvar="LOG_LEVEL", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def webhook(cert_file: str, key_file: str, address: str, port: int,
            template_namespace: str | None, template_labels: str | None,
            configmap_labels: str | None, kubeconfig: str | None, config_dir: str | None,
            allowed_namespaces: tuple[str, ...], ignored_namespaces: tuple[str, ...],
            sidecar_mode: str, kube_version: str, max_body_bytes: int, debounce: float,
            log_level: str) -> None:
    """Run the mutating admission webhook over HTTPS."""
    from injector.watch import (
        ConfigMapWatcher,
        NamespaceAnnotationCache,
        load_config_dir,
        load_kube_config,
    )
    from injector.webhook import CertReloader, Metrics, Webhook, WebhookOptions, WebhookServer

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _check_version(kube_version, sidecar_mode)
    try:
        settings = Settings.resolve(template_namespace, template_labels, configmap_labels)
        options = WebhookOptions(InjectOptions(sidecar_mode=sidecar_mode),
                                 allowed_namespaces, ignored_namespaces, kube_version)
    except (ConfigError, InjectionError) as exc:
        fail(str(exc), 2)
    try:
        certs = CertReloader(cert_file, key_file, min_interval=1.0)
    except (OSError, Exception) as exc:  # ssl.SSLError, FileNotFoundError
        fail(f"cannot load the serving certificate {cert_file} / {key_file}: {exc}")

    store = ConfigStore()
    metrics = Metrics()
    stop_watch = None
    if config_dir:
        if not os.path.isdir(config_dir):
            fail(f"--config-dir {config_dir}: not a directory", 2)
        cs = load_config_dir(config_dir, settings)
        for p in cs.problems:
            logging.getLogger(PROG).warning("invalid config %s: %s", p.source, p.message)
        store.swap(cs)
        namespaces = _namespace_annotations_in(config_dir)
        ns_lookup = namespaces.get
    else:
        try:
            api = load_kube_config(kubeconfig)
        except Exception as exc:  # noqa: BLE001 - kubeconfig errors have many types
            fail(f"cannot configure the Kubernetes client: {str(exc).splitlines()[0]}")

        def on_reload(cs: ConfigSet | None, err: str) -> None:
            metrics.reloads.labels("ok" if cs is not None else "error").inc()

        watcher = ConfigMapWatcher(api, settings, store, debounce, on_reload)
        watcher.start()
        stop_watch = watcher.stop
        ns_lookup = NamespaceAnnotationCache(api)

    hook = Webhook(store, options, ns_lookup, metrics)
    try:
        server = WebhookServer((address, port), hook, certs, max_body_bytes)
    except OSError as exc:
        fail(f"cannot listen on {address}:{port}: {exc.strerror or exc}")
    done = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    logging.getLogger(PROG).info("listening on https://%s:%d (templates in %s, %s mode)",
                                 address, server.port, settings.template_namespace, sidecar_mode)
    done.wait()
    server.shutdown()
    server.server_close()
    if stop_watch:
        stop_watch()


def _namespace_annotations_in(directory: str) -> dict[str, dict[str, str]]:
    from injector.watch import manifest_files

    out: dict[str, dict[str, str]] = {}
    for full in manifest_files(directory):
        try:
            with open(full, encoding="utf-8") as f:
                stream = load_stream(f.read(), full)
        except (OSError, ManifestError):
            continue  # already reported by load_config_dir
        for doc in stream.docs:
            for obj in iter_objects(doc):
                if isinstance(obj, dict) and obj.get("kind") == "Namespace":
                    meta = obj.get("metadata") or {}
                    if meta.get("name"):
                        out[meta["name"]] = dict(meta.get("annotations") or {})
    return out


if __name__ == "__main__":
    main()
