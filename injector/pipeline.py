"""The one injection pipeline: select -> render -> read the template as 0.9 did -> inject ->
validate. ``chaos-injector inject``, the webhook and the tests all call :func:`run`, so a rule
changed here holds everywhere.

:func:`injector.inject.inject` stays the pure core (pod + sidecar config -> pod); this module
adds what surrounds it: the injection config's selector and arguments, rendering the template,
reading it the way Chaos Mesh 0.9 read it (keys matched case-insensitively, unknown keys dropped
with a warning), the missing-volume policy, and the schema check of the result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from injector.config import ConfigError, ConfigSet, InjectionConfig, PodSelector, SidecarTemplate
from injector.inject import (
    InjectionError,
    InjectOptions,
    SidecarConfig,
    inject,
    parse_sidecar_config,
    pod_template_of,
)
from injector.manifests import DEFAULT_KUBE_VERSION, ManifestError, validate_object


class PipelineError(ValueError):
    """Injection failed; ``reason`` is a short metric label, str() one line for the user."""

    def __init__(self, reason: str, message: str, warnings: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.warnings = warnings  # what reading the configs said before it failed


@dataclass(frozen=True)
class PipelineOptions:
    inject: InjectOptions = field(default_factory=InjectOptions)
    kube_version: str = DEFAULT_KUBE_VERSION
    validate: bool = True


@dataclass(frozen=True)
class Plan:
    """What to inject: a template, its arguments and the injection config's extras.

    The rendered sidecar config is computed once per Kubernetes version and kept, so a CLI run
    over many documents renders once.
    """

    template: SidecarTemplate | None  # None: not found, and ``problem`` says why
    arguments: Mapping[str, str]
    selector: PodSelector | None = None
    missing_volumes: str | None = None  # the injection config's policy, if it sets one
    ref: str = ""  # namespace/name of the injection config, for messages and metrics
    warnings: tuple[str, ...] = ()  # from reading the injection config
    problem: str = ""
    _rendered: dict = field(default_factory=dict, compare=False, repr=False)

    def sidecar(self, kube_version: str = DEFAULT_KUBE_VERSION) -> SidecarConfig:
        if self.template is None:
            raise PipelineError("template_not_found", self.problem)
        if kube_version not in self._rendered:
            try:
                text = self.template.render(self.arguments)
                self._rendered[kube_version] = parse_sidecar_config(
                    text, f"template {self.template.name}", kube_version)
            except (ConfigError, InjectionError) as exc:
                raise PipelineError("render", str(exc)) from None
        return self._rendered[kube_version]


def plan_for(cfg: InjectionConfig, configs: ConfigSet,
             arguments: Mapping[str, str] | None = None) -> Plan:
    """The plan of an injection config; ``arguments`` override the config's (``--set``).

    A missing template is reported when the plan is used, after the selector has had its say.
    """
    ref = f"{cfg.namespace}/{cfg.name}" if cfg.namespace else cfg.name
    tpl = configs.templates.get(cfg.template)
    problem = ""
    if tpl is None:
        # a template that exists but does not parse is "not found" too: say why
        problem = next((p.message for p in configs.problems
                        if p.source.rsplit("/", 1)[-1] == cfg.template),
                       f"template {cfg.template!r} (used by {ref}) not found")
    return Plan(tpl, {**cfg.arguments, **(arguments or {})}, cfg.selector, cfg.missing_volumes,
                ref, tuple(cfg.warnings), problem)


@dataclass(frozen=True)
class Outcome:
    obj: dict
    patch: list[dict]
    injected: bool
    reason: str = ""  # why nothing was done, when injected is False
    warnings: tuple[str, ...] = ()
    selected: bool = True  # False: the injection config's selector left this pod out


def _unique(items: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def run(obj: Mapping[str, Any], plan: Plan, options: PipelineOptions = PipelineOptions(),
        namespace: str | None = None) -> Outcome:
    """Inject ``plan`` into ``obj`` (a Pod or a workload), or say why not.

    ``namespace`` is where the pod is created (the AdmissionRequest's); default: the object's
    own, else ``default``. Raises PipelineError for everything that keeps the pod from being
    injected except the selector, whose verdict is an Outcome with ``selected=False``.
    """
    if not isinstance(obj, Mapping):
        raise PipelineError("bad_request", "the object is not a mapping")
    warnings = list(plan.warnings)
    pod = pod_template_of(obj)
    if pod is not None and plan.selector is not None:
        meta = pod.get("metadata") or {}
        ns = namespace or (obj.get("metadata") or {}).get("namespace") or "default"
        if not plan.selector.matches(ns, meta.get("labels"), meta.get("annotations"),
                                     meta.get("name") or "",
                                     (pod.get("status") or {}).get("phase") or ""):
            return Outcome(dict(obj), [], False, f"pod does not match the selector of {plan.ref}",
                           _unique(warnings), selected=False)
    try:
        sidecar = plan.sidecar(options.kube_version)
    except PipelineError as exc:
        raise PipelineError(exc.reason, str(exc), _unique(warnings)) from None
    warnings.extend(sidecar.warnings)
    opts = options.inject
    if opts.missing_volumes is None and plan.missing_volumes:
        opts = dataclasses.replace(opts, missing_volumes=plan.missing_volumes)
    try:
        result = inject(obj, sidecar, opts)
    except InjectionError as exc:
        raise PipelineError("inject", str(exc), _unique(warnings)) from None
    if options.validate:
        try:
            validate_object(result.obj, options.kube_version)
        except ManifestError as exc:
            raise PipelineError("invalid_output", str(exc), _unique(warnings)) from None
    return Outcome(result.obj, result.patch, result.injected, result.reason, _unique(warnings))
