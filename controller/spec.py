"""The IoChaos spec (Chaos Mesh 0.9.1, ``chaos-mesh.org/v1alpha1``) as a checked Python value.

:func:`parse_spec` reads the ``spec`` of an IoChaos object and either returns an
:class:`IoChaosSpec` with 0.9's defaults filled in, or raises :class:`SpecError` whose message
is one line naming the field (``spec.delay: invalid duration "10x"``). It checks everything
0.9's validating webhook and 0.9's reconciler refused, plus what 0.9 let through only to fail
later or silently misbehave (each marked *deviation* below and in docs/controller.md):

- delay: a Go duration, *deviation*: not negative and at most 4294967295 µs (0.9 truncated it
  to a uint32 of microseconds, so "72m" became ~25 s);
- errno: decimal, empty = random; *deviation*: 1..511 (the sidecar refuses more, 0 meant no
  error at all);
- percent: decimal 1..100, empty = 100;
- mode one/all/fixed/fixed-percent/random-max-percent; value an integer where the mode needs
  one (fixed > 0, the percentages 1..100);
- duration and scheduler.cron: both or neither; each must parse (cron as robfig/cron's
  ParseStandard); *deviation*: duration > 0;
- layer must be ``fs``; addr empty or ``:PORT`` (0.9 dialled ``<podIP><addr>``);
- path: an RE2 regex (*deviation*: checked here, since the sidecar refuses an invalid one).

Unknown method names are kept and reported as warnings: the sidecar ignores them as 0.9 did.

Beyond 0.9: ``spec.chaosfs.rules`` (controller/extension.py), chaosfs.v1 rules instead of 0.9's
fault; with it the 0.9 fault fields (action, delay, errno, percent, path, methods) are refused
and everything else (selection, mode, layer, addr, duration and scheduler) means the same.

This is the one place the rules live: the controller runs it before it injects, ``chaosfs-
controller check`` offline, and the validating webhook (controller/admission.py) at apply time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from controller.cron import CronError, Schedule, parse_cron
from controller.duration import MICROSECOND, DurationError, parse_duration
from controller.extension import KEY as EXTENSION_KEY
from controller.extension import ExtensionError, PowerCutSpec, RuleSpec, parse_extension

GROUP = "chaos-mesh.org"
VERSION = "v1alpha1"
KIND = "IoChaos"
PLURAL = "iochaos"
PAUSE_ANNOTATION = "experiment.chaos-mesh.org/pause"
DEFAULT_ADDR = ":65534"  # 0.9's default (its own template listened on :65533; see sidecar.py)

ACTIONS = ("delay", "errno", "mixed")
# 0.9's fault, which spec.chaosfs.rules replaces
FAULT_FIELDS_09 = ("action", "delay", "errno", "percent", "path", "methods")
MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")
MAX_DELAY_US = (1 << 32) - 1
MAX_ERRNO = 511

# The 31 method names of 0.9's injure protocol (chaosfs/proto/injure.proto).
METHODS_09 = frozenset(
    "open read write mkdir rmdir opendir fsync flush release truncate getattr chown chmod "
    "utimens allocate getlk setlk setlkw statfs readlink symlink create access link mknod "
    "rename unlink getxattr listxattr removexattr setxattr".split())


class SpecError(ValueError):
    """An invalid IoChaos spec; ``str()`` is one line starting with the field path."""


def go_atoi(text: str) -> int:
    """Go's ``strconv.Atoi``: optional sign, ASCII digits only, no spaces or underscores."""
    if not isinstance(text, str):
        raise ValueError(text)
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        raise ValueError(text)
    n = int(text)
    if not -(1 << 63) <= n < (1 << 63):
        raise ValueError(text)
    return n


@dataclass(frozen=True)
class Selector:
    namespaces: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    pods: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    node_selectors: Mapping[str, str] = field(default_factory=dict)
    field_selectors: Mapping[str, str] = field(default_factory=dict)
    label_selectors: Mapping[str, str] = field(default_factory=dict)
    annotation_selectors: Mapping[str, str] = field(default_factory=dict)
    pod_phase_selectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class IoChaosSpec:
    selector: Selector
    mode: str
    value: str
    action: str
    delay_us: int            # 0 unless action is delay/mixed
    errno: int | None        # None = random (errno/mixed); unused for delay
    percent: int
    path: str
    methods: tuple[str, ...]
    layer: str
    addr: str                # "" = find the sidecar's port in the pod
    duration_ns: int | None
    schedule: Schedule | None
    warnings: tuple[str, ...] = ()
    rules: tuple[RuleSpec, ...] = ()  # spec.chaosfs.rules; empty: 0.9's fault (action ...)
    power_cut: PowerCutSpec | None = None  # spec.chaosfs.powerCut

    @property
    def scheduled(self) -> bool:
        return self.schedule is not None

    @property
    def v1(self) -> bool:
        """The faults are chaosfs.v1 rules (spec.chaosfs), not 0.9's SetFault."""
        return bool(self.rules) or self.power_cut is not None

    @property
    def fault(self) -> str:
        """What is injected, for podRecords and Events: 0.9's action, or "chaosfs"."""
        return self.action or EXTENSION_KEY


def _str(spec: Mapping[str, Any], key: str, path: str) -> str:
    v = spec.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise SpecError(f"{path}.{key}: must be a string, got {v!r}")
    return v


def _str_list(raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise SpecError(f"{path}: must be a list of strings")
    return tuple(raw)


def _str_map(raw: Any, path: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise SpecError(f"{path}: must be a map of strings to strings")
    return dict(raw)


def parse_selector(raw: Any, path: str = "spec.selector") -> Selector:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: must be an object")
    pods_raw = raw.get("pods")
    pods: dict[str, tuple[str, ...]] = {}
    if pods_raw is not None:
        if not isinstance(pods_raw, Mapping):
            raise SpecError(f"{path}.pods: must be a map of namespace to pod names")
        for ns, names in pods_raw.items():
            pods[str(ns)] = _str_list(names, f"{path}.pods.{ns}")
    return Selector(
        namespaces=_str_list(raw.get("namespaces"), f"{path}.namespaces"),
        nodes=_str_list(raw.get("nodes"), f"{path}.nodes"),
        pods=pods,
        node_selectors=_str_map(raw.get("nodeSelectors"), f"{path}.nodeSelectors"),
        field_selectors=_str_map(raw.get("fieldSelectors"), f"{path}.fieldSelectors"),
        label_selectors=_str_map(raw.get("labelSelectors"), f"{path}.labelSelectors"),
        annotation_selectors=_str_map(raw.get("annotationSelectors"),
                                      f"{path}.annotationSelectors"),
        pod_phase_selectors=_str_list(raw.get("podPhaseSelectors"), f"{path}.podPhaseSelectors"),
    )


def _check_mode(mode: str, value: str) -> None:
    if not mode:
        raise SpecError(f"spec.mode: required, one of {', '.join(MODES)}")
    if mode not in MODES:
        raise SpecError(f"spec.mode: unknown mode {mode!r}, expected one of {', '.join(MODES)}")
    if mode in ("one", "all"):
        return
    if value == "":
        raise SpecError(f"spec.value: required with mode {mode}")
    try:
        num = go_atoi(value)
    except ValueError:
        raise SpecError(f"spec.value: {value!r} is not an integer (mode {mode})") from None
    if mode == "fixed" and num <= 0:
        raise SpecError(f"spec.value: must be greater than 0 with mode fixed, got {num}")
    if mode != "fixed" and not 0 < num <= 100:
        raise SpecError(f"spec.value: a percentage in 1..100 with mode {mode}, got {num}")


def _parse_delay(text: str) -> int:
    if text == "":
        raise SpecError("spec.delay: required with this action (a Go duration such as 100ms)")
    try:
        ns = parse_duration(text)
    except DurationError as exc:
        raise SpecError(f"spec.delay: {exc}") from None
    if ns < 0:
        raise SpecError(f"spec.delay: must not be negative, got {text!r}")
    us = ns // MICROSECOND
    if us > MAX_DELAY_US:
        raise SpecError(f"spec.delay: {text!r} exceeds the protocol's limit of "
                        f"{MAX_DELAY_US} µs (~71m34s)")
    return us


def _parse_errno(text: str) -> int | None:
    if text == "":
        return None
    try:
        n = go_atoi(text)
    except ValueError:
        raise SpecError(f"spec.errno: {text!r} is not an integer") from None
    if not 1 <= n <= MAX_ERRNO:
        raise SpecError(f"spec.errno: must be in 1..{MAX_ERRNO} (empty = random), got {n}")
    return n


def _parse_percent(text: str) -> int:
    if text == "":
        return 100
    try:
        n = go_atoi(text)
    except ValueError:
        raise SpecError(f"spec.percent: {text!r} is not an integer") from None
    if not 1 <= n <= 100:
        raise SpecError(f"spec.percent: must be in 1..100, got {n}")
    return n


def _check_path(path: str) -> None:
    if not path:
        return
    import re2  # google-re2: the sidecar's own regex engine, so the same patterns pass

    try:
        re2.compile(path)
    except re2.error as exc:
        raise SpecError(f"spec.path: invalid RE2 regex {path!r}: {exc}") from None


def _check_addr(addr: str) -> None:
    if addr == "":
        return
    port = addr[1:]
    if not addr.startswith(":") or not port.isascii() or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise SpecError(f"spec.addr: must be :PORT (dialled as <podIP>:PORT), got {addr!r}")


def _one_line(text: str) -> str:
    """Control characters escaped: field names and values in a message come from the user
    (a map key may hold a newline), and the message is one line wherever it goes (status
    reason, Event, admission denial, `check` output)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parse_spec(spec: Any) -> IoChaosSpec:
    """The checked spec, or SpecError with one line naming the field."""
    try:
        return _parse_spec(spec)
    except SpecError as exc:
        raise SpecError(_one_line(str(exc))) from None


def _parse_spec(spec: Any) -> IoChaosSpec:
    if not isinstance(spec, Mapping):
        raise SpecError("spec: must be an object")
    extended = spec.get(EXTENSION_KEY) is not None
    if extended:
        for key in FAULT_FIELDS_09:
            if spec.get(key) is not None:
                raise SpecError(f"spec.{key}: part of 0.9's fault, not allowed with "
                                f"spec.{EXTENSION_KEY} (each rule says what it injects)")
        action = ""
    else:
        action = _str(spec, "action", "spec")
        if not action:
            raise SpecError(f"spec.action: required, one of {', '.join(ACTIONS)} (or "
                            f"spec.{EXTENSION_KEY}.rules)")
        if action not in ACTIONS:
            raise SpecError(f"spec.action: unknown action {action!r}, expected one of "
                            f"{', '.join(ACTIONS)}")
    mode = _str(spec, "mode", "spec")
    value = _str(spec, "value", "spec")
    _check_mode(mode, value)
    layer = _str(spec, "layer", "spec")
    if layer != "fs":
        raise SpecError(f"spec.layer: must be fs, got {layer!r}" if layer
                        else "spec.layer: required (fs)")
    delay_us = _parse_delay(_str(spec, "delay", "spec")) if action in ("delay", "mixed") else 0
    errno = _parse_errno(_str(spec, "errno", "spec")) if action in ("errno", "mixed") else None
    percent = _parse_percent(_str(spec, "percent", "spec"))
    path = _str(spec, "path", "spec")
    _check_path(path)
    addr = _str(spec, "addr", "spec")
    _check_addr(addr)
    methods = _str_list(spec.get("methods"), "spec.methods")
    warnings = tuple(f"spec.methods: {m!r} is not a 0.9 method name; the sidecar ignores it"
                     for m in methods if m not in METHODS_09)

    duration_text = spec.get("duration")
    sched_raw = spec.get("scheduler")
    if duration_text is not None and not isinstance(duration_text, str):
        raise SpecError(f"spec.duration: must be a string, got {duration_text!r}")
    if sched_raw is not None and not isinstance(sched_raw, Mapping):
        raise SpecError("spec.scheduler: must be an object with cron")
    # An empty duration string counts as absent, as 0.9's *string pointer nil check did not:
    # 0.9 then failed to parse "" at the first tick; refusing it here is the same verdict.
    has_duration = bool(duration_text)
    has_sched = sched_raw is not None
    if has_duration and not has_sched:
        raise SpecError("spec.duration: set without spec.scheduler (both or neither)")
    if has_sched and not has_duration:
        raise SpecError("spec.scheduler: set without spec.duration (both or neither)")
    duration_ns = schedule = None
    if has_sched:
        try:
            duration_ns = parse_duration(duration_text)
        except DurationError as exc:
            raise SpecError(f"spec.duration: {exc}") from None
        if duration_ns <= 0:
            raise SpecError(f"spec.duration: must be positive, got {duration_text!r}")
        cron = _str(sched_raw, "cron", "spec.scheduler")
        if not cron:
            raise SpecError("spec.scheduler.cron: required")
        try:
            schedule = parse_cron(cron)
        except CronError as exc:
            raise SpecError(f"spec.scheduler.cron: {exc}") from None

    rules: tuple[RuleSpec, ...] = ()
    power_cut = None
    if extended:
        try:
            rules, power_cut = parse_extension(spec[EXTENSION_KEY])
        except ExtensionError as exc:
            raise SpecError(str(exc)) from None
        if power_cut is not None and duration_ns is not None \
                and power_cut.after_us * 1000 > duration_ns:
            raise SpecError(f"spec.{EXTENSION_KEY}.powerCut.after: longer than spec.duration "
                            "(the window would end, disarmed, before the cut)")

    return IoChaosSpec(
        selector=parse_selector(spec.get("selector")), mode=mode, value=value, action=action,
        delay_us=delay_us, errno=errno, percent=percent, path=path, methods=methods,
        layer=layer, addr=addr, duration_ns=duration_ns, schedule=schedule, warnings=warnings,
        rules=rules, power_cut=power_cut)
