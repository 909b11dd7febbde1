"""``spec.chaosfs``: what Chaos Mesh 0.9's IoChaos could not say, as chaosfs.v1 rules.

An optional block of the same IoChaos resource, so every 0.9 experiment stays valid and means
what it meant, and selection, modes, scheduling, pause, status and finalizers are shared::

    spec:
      mode: one
      layer: fs
      selector: {labelSelectors: {app: etcd}}
      chaosfs:
        rules:
        - name: sst-rot                    # optional; the rule's id on the sidecar ends in it
          methods: [read]
          glob: "**/*.sst"                 # or path: an RE2 regex as in 0.9
          corrupt: {mode: bitflip, length: 4, occurrences: 1}
          probability: 2.5                 # percent, decimals allowed; default 100
          maxHits: 10
        - methods: [write, fsync]
          path: "^wal/"
          errno: ENOSPC                    # a number 1..511, a name, or random
          delay: 20ms
          jitter: 30ms
          ttl: 10m
        - methods: [write]
          glob: "**/*.log"
          torn: {sector: 4096}             # reports success, keeps a sector-aligned prefix
          maxHits: 1

A power-loss experiment (issue 15's power cut), with or without rules::

      chaosfs:
        powerCut:
          after: 30s              # required: the cut comes this long after the sidecar is armed
          maxUndo: 1Gi            # bound on the old data kept (a quantity or bytes; 1Gi)
          model: posix            # or journal: when a directory entry counts as durable
          keepProbability: 0.3    # each unsynced write survives with this chance (0)
          torn: {sector: 4096}    # the last unsynced write of a file keeps a sector prefix
          block: false            # requests during the cut wait instead of failing with EIO
          hold: 5s                # stay cut this long after the rollback (0)
          seed: 7                 # the same seed, the same survivors

At each injection the controller arms the sidecar's power-loss model
(``chaosfs.v1.PowerLoss/Arm``); ``after`` later it cuts the power there (``Cut``: the backing
directory loses what the app never made durable) and disarms. The end of the window, a pause
or the deletion before ``after`` disarms without a cut. A scheduled experiment arms and cuts
once per window, so ``after`` must fit in ``duration``.

The block replaces 0.9's fault: with it, ``action``, ``delay``, ``errno``, ``percent``,
``path`` and ``methods`` must be left out (each rule says what it injects). Each rule is
checked here by the daemon's own rule validation (:func:`chaosfs.faults.rules.validate_rule`,
the code AddRule runs), so the limits (errno 1..511, no ENOSYS where the kernel would switch an
operation off, corrupt/short only on read/write, torn only on write, ttl at most 7 days, RE2
and glob syntax) are
the sidecar's, and an error names the rule's field: ``spec.chaosfs.rules[1].errno: ...``.

The sidecar gets the rules through ``chaosfs.v1.Faults/AddRule`` with ids of their own
(:func:`rule_prefix` + name), so recovery removes exactly this experiment's rules and leaves
other experiments', ``chaosfs-ctl``'s and 0.9's alone (controller/sidecar.py).
"""

from __future__ import annotations

import errno as errno_names
import re
from dataclasses import dataclass
from typing import Any, Mapping

from chaosfs.faults import rules as daemon_rules
from chaosfs.faults.methods import ALL_METHODS
from controller.duration import MICROSECOND, SECOND, DurationError, parse_duration

KEY = "chaosfs"
MAX_RULES = 64
RULE_FIELDS = ("name", "methods", "path", "glob", "probability", "errno", "delay", "jitter",
               "corrupt", "short", "torn", "ttl", "maxHits")
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS label: no "/" inside
MAX_ID = 128  # the daemon's limit on a rule id
MAX_HITS = (1 << 63) - 1  # an int64, as a Kubernetes integer field is (the wire's is uint64)

# The daemon's RuleError field -> the rule's field in the spec.
_FIELD = {"delay.jitter": "jitter", "max_hits": "maxHits", "id": "name",
          "path_kind": "glob"}


class ExtensionError(ValueError):
    """A bad ``spec.chaosfs`` (spec.py turns it into a SpecError); one line, field first."""


@dataclass(frozen=True)
class RuleSpec:
    """One checked rule, in the sidecar's units."""

    name: str
    methods: tuple[str, ...] = ()    # empty: every operation
    path: str = ""
    glob: bool = False
    probability: float = 100.0
    errno: int = 0
    random_errno: bool = False
    delay_us: int = 0
    jitter_us: int = 0
    corrupt: daemon_rules.Corrupt | None = None
    short: float = 0.0
    torn: int = 0                    # sector size of a torn write; 0: none
    ttl_seconds: float = 0.0
    max_hits: int = 0

    @property
    def budgeted(self) -> bool:
        """True if the daemon removes the rule by itself (ttl or maxHits): once gone, it is
        spent, and is not added again while the experiment runs."""
        return bool(self.ttl_seconds or self.max_hits)

    def actions(self) -> list[str]:
        return daemon_rules.actions_of(self)


def rule_prefix(meta: Mapping[str, Any]) -> str:
    """The id prefix of an experiment's rules on a sidecar: ``iochaos/<ns>/<name>/`` (readable
    in ``chaosfs-ctl rules`` and the sidecar's metrics), or ``iochaos/<uid>/`` when a long
    namespace and name would push an id past the daemon's 128 characters. Names and
    namespaces hold no "/", so no experiment's prefix is another's."""
    readable = f"iochaos/{meta.get('namespace', '')}/{meta.get('name', '')}/"
    if len(readable) + 63 <= MAX_ID:
        return readable
    return f"iochaos/{meta.get('uid', '')}/"


def _duration_us(raw: Any, where: str, *, positive: bool = False) -> int:
    if not isinstance(raw, str):
        raise ExtensionError(f"{where}: must be a Go duration string such as 100ms, got {raw!r}")
    try:
        ns = parse_duration(raw)
    except DurationError as exc:
        raise ExtensionError(f"{where}: {exc}") from None
    if ns < 0 or (positive and ns == 0):
        raise ExtensionError(f"{where}: must be {'positive' if positive else 'at least 0'}, "
                             f"got {raw!r}")
    return ns // MICROSECOND


def _errno(raw: Any, where: str) -> tuple[int, bool]:
    """(code, random) of ``errno:``: an integer, a decimal string, a name (EIO), or random."""
    if isinstance(raw, bool):
        raise ExtensionError(f"{where}: must be a number, a name such as EIO, or random")
    if isinstance(raw, int):
        return raw, False
    if isinstance(raw, str):
        if raw == "random":
            return 0, True
        if raw.isascii() and raw.isdigit():
            return int(raw), False
        code = getattr(errno_names, raw, None) if raw.isupper() else None
        if isinstance(code, int) and errno_names.errorcode.get(code):
            return code, False
        raise ExtensionError(f"{where}: unknown errno {raw!r} (a number 1..511, a name such "
                             "as EIO or ENOSPC, or random)")
    raise ExtensionError(f"{where}: must be a number, a name such as EIO, or random")


def _count(raw: Any, where: str, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ExtensionError(f"{where}: must be an integer, got {raw!r}")
    return raw


def _number(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ExtensionError(f"{where}: must be a number, got {raw!r}")
    return float(raw)


def _block(raw: Any, where: str, fields: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ExtensionError(f"{where}: must be an object")
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise ExtensionError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(fields)})")
    return raw


def parse_rule(raw: Any, where: str, default_name: str) -> RuleSpec:
    r = _block(raw, where, RULE_FIELDS)
    name = r.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ExtensionError(f"{where}.name: must be a DNS label (lower-case letters, digits "
                             f"and '-', at most 63), got {name!r}")
    methods = r.get("methods") or []
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ExtensionError(f"{where}.methods: must be a list of strings")
    for i, m in enumerate(methods):
        if m not in ALL_METHODS:
            raise ExtensionError(f"{where}.methods[{i}]: unknown method {m!r} (the sidecar's "
                                 "v1 names: the 0.9 ones plus lookup, readdir, releasedir, "
                                 "fsyncdir, lseek, copy_file_range)")
    if "path" in r and "glob" in r:
        raise ExtensionError(f"{where}.glob: give path (an RE2 regex) or glob, not both")
    is_glob = "glob" in r
    pattern = r.get("glob" if is_glob else "path", "")
    if not isinstance(pattern, str):
        raise ExtensionError(f"{where}.{'glob' if is_glob else 'path'}: must be a string")
    code, random_errno = _errno(r["errno"], f"{where}.errno") if "errno" in r else (0, False)
    if "errno" in r and not random_errno and code == 0:
        raise ExtensionError(f"{where}.errno: must be in 1..{daemon_rules.MAX_ERRNO} (0 is no "
                             "error; leave errno out)")
    corrupt = None
    if "corrupt" in r:
        c = _block(r["corrupt"], f"{where}.corrupt", ("mode", "length", "occurrences"))
        mode = c.get("mode", "random")
        if mode not in daemon_rules.CORRUPT_MODES:
            raise ExtensionError(f"{where}.corrupt.mode: unknown mode {mode!r}, expected one of "
                                 f"{', '.join(daemon_rules.CORRUPT_MODES)}")
        corrupt = daemon_rules.Corrupt(
            mode=mode, length=_count(c.get("length"), f"{where}.corrupt.length", 1),
            occurrences=_count(c.get("occurrences"), f"{where}.corrupt.occurrences", 1))
    short = 0.0
    if "short" in r:
        s = _block(r["short"], f"{where}.short", ("fraction",))
        if "fraction" not in s:
            raise ExtensionError(f"{where}.short.fraction: required (the part of each read or "
                                 "write kept, in (0, 1))")
        short = _number(s["fraction"], f"{where}.short.fraction")
        if not 0.0 < short < 1.0:
            raise ExtensionError(f"{where}.short.fraction: must be in (0, 1), got {short:g}")
    torn = 0
    if "torn" in r:
        t = _block(r["torn"], f"{where}.torn", ("sector",))
        if "sector" not in t:
            raise ExtensionError(f"{where}.torn.sector: required (512 or 4096)")
        torn = _count(t["sector"], f"{where}.torn.sector", 0)
        if torn == 0:  # 0 is "no torn write" to the daemon: an explicit block means one
            raise ExtensionError(f"{where}.torn.sector: must be 512 or 4096")
    max_hits = _count(r.get("maxHits"), f"{where}.maxHits", 0)
    if "maxHits" in r and not 1 <= max_hits <= MAX_HITS:
        raise ExtensionError(f"{where}.maxHits: must be in 1..{MAX_HITS} (leave it out for no "
                             "limit)")
    spec = RuleSpec(
        name=name, methods=tuple(methods), path=pattern, glob=is_glob,
        probability=_number(r["probability"], f"{where}.probability")
        if "probability" in r else 100.0,
        errno=code, random_errno=random_errno,
        delay_us=_duration_us(r["delay"], f"{where}.delay") if "delay" in r else 0,
        jitter_us=_duration_us(r["jitter"], f"{where}.jitter") if "jitter" in r else 0,
        corrupt=corrupt, short=short, torn=torn,
        ttl_seconds=_duration_us(r["ttl"], f"{where}.ttl", positive=True) * MICROSECOND / SECOND
        if "ttl" in r else 0.0,
        max_hits=max_hits)
    _daemon_check(spec, where)
    return spec


def daemon_rule(spec: RuleSpec, rule_id: str) -> daemon_rules.Rule:
    """The daemon's own Rule for this spec (what AddRule would build from the request)."""
    return daemon_rules.Rule(
        id=rule_id, methods=daemon_rules.method_ids(spec.methods), path=spec.path,
        path_kind="glob" if spec.glob else "regex", probability=spec.probability,
        errno=spec.errno, random_errno=spec.random_errno, delay_us=spec.delay_us,
        jitter_us=spec.jitter_us, corrupt=spec.corrupt, short=spec.short, torn=spec.torn,
        ttl=spec.ttl_seconds, max_hits=spec.max_hits, origin="v1")


def _daemon_check(spec: RuleSpec, where: str) -> None:
    try:
        daemon_rules.validate_rule(daemon_rule(spec, "x" * MAX_ID))
    except daemon_rules.RuleError as exc:
        text = str(exc)[len(exc.field) + 2:]
        if exc.field == "action":
            raise ExtensionError(f"{where}: {text}") from None
        field = _FIELD.get(exc.field, exc.field)
        if field == "path" and spec.glob:
            field = "glob"
        raise ExtensionError(f"{where}.{field}: {text}") from None


POWER_CUT_FIELDS = ("after", "maxUndo", "model", "keepProbability", "torn", "block", "hold",
                    "seed")
MODELS = ("posix", "journal")
DEFAULT_MAX_UNDO = 1 << 30
MAX_HOLD_US = 3600 * SECOND // MICROSECOND  # the sidecar's limit on hold
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_QUANTITY_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
                   "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@dataclass(frozen=True)
class PowerCutSpec:
    """``spec.chaosfs.powerCut``, checked, in the sidecar's units."""

    after_us: int
    max_undo: int = DEFAULT_MAX_UNDO
    model: str = "posix"
    keep_probability: float = 0.0
    torn_sector: int = 0        # 0: no torn write
    block: bool = False
    hold_us: int = 0
    seed: int | None = None


def _quantity(raw: Any, where: str) -> int:
    """Bytes from an integer or a Kubernetes quantity without fractions (512Mi, 2G)."""
    if isinstance(raw, bool):
        raise ExtensionError(f"{where}: must be bytes or a quantity such as 512Mi")
    if isinstance(raw, int):
        n = raw
    elif isinstance(raw, str) and _QUANTITY.match(raw):
        m = _QUANTITY.match(raw)
        n = int(m.group(1)) * _QUANTITY_UNITS[m.group(2)]
    else:
        raise ExtensionError(f"{where}: must be bytes or a quantity such as 512Mi, got {raw!r}")
    if not 0 < n < 1 << 63:
        raise ExtensionError(f"{where}: must be more than 0 bytes, got {raw!r}")
    return n


def parse_power_cut(raw: Any, where: str) -> PowerCutSpec:
    b = _block(raw, where, POWER_CUT_FIELDS)
    if "after" not in b:
        raise ExtensionError(f"{where}.after: required (how long after arming the power is "
                             "cut, e.g. 30s)")
    model = b.get("model", "posix")
    if model not in MODELS:
        raise ExtensionError(f"{where}.model: unknown model {model!r}, expected posix or journal")
    keep = _number(b["keepProbability"], f"{where}.keepProbability") \
        if "keepProbability" in b else 0.0
    if not 0.0 <= keep <= 1.0:
        raise ExtensionError(f"{where}.keepProbability: must be within 0..1, got {keep:g}")
    sector = 0
    if "torn" in b:
        t = _block(b["torn"], f"{where}.torn", ("sector",))
        sector = _count(t.get("sector"), f"{where}.torn.sector", 512)
        if sector not in (512, 4096):
            raise ExtensionError(f"{where}.torn.sector: must be 512 or 4096, got {sector}")
    block = b.get("block", False)
    if not isinstance(block, bool):
        raise ExtensionError(f"{where}.block: must be true or false, got {block!r}")
    hold = _duration_us(b["hold"], f"{where}.hold") if "hold" in b else 0
    if hold > MAX_HOLD_US:
        raise ExtensionError(f"{where}.hold: at most 1h (the mount stays cut meanwhile)")
    seed = None
    if "seed" in b:
        seed = _count(b["seed"], f"{where}.seed", 0)
        if not 0 <= seed < 1 << 63:
            raise ExtensionError(f"{where}.seed: must be in 0..{(1 << 63) - 1}")
    return PowerCutSpec(
        after_us=_duration_us(b["after"], f"{where}.after", positive=True),
        max_undo=_quantity(b["maxUndo"], f"{where}.maxUndo") if "maxUndo" in b
        else DEFAULT_MAX_UNDO,
        model=model, keep_probability=keep, torn_sector=sector, block=block, hold_us=hold,
        seed=seed)


def parse_extension(raw: Any, where: str = f"spec.{KEY}"
                    ) -> tuple[tuple[RuleSpec, ...], PowerCutSpec | None]:
    """(rules, power cut) of ``spec.chaosfs``; at least one of them."""
    block = _block(raw, where, ("rules", "powerCut"))
    power = parse_power_cut(block["powerCut"], f"{where}.powerCut") \
        if block.get("powerCut") is not None else None
    rules = block.get("rules")
    if power is not None and rules is None:
        return (), power
    if not isinstance(rules, list) or not rules:
        raise ExtensionError(f"{where}.rules: required, a list of 1..{MAX_RULES} rules "
                             "(or powerCut)")
    if len(rules) > MAX_RULES:
        raise ExtensionError(f"{where}.rules: {len(rules)} rules, at most {MAX_RULES}")
    out: list[RuleSpec] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(rules):
        rule = parse_rule(r, f"{where}.rules[{i}]", str(i))
        if rule.name in seen:
            raise ExtensionError(f"{where}.rules[{i}].name: {rule.name!r} is also rule "
                                 f"[{seen[rule.name]}]'s name")
        seen[rule.name] = i
        out.append(rule)
    return tuple(out), power


def with_names(rules: tuple[RuleSpec, ...], prefix: str) -> list[tuple[str, RuleSpec]]:
    """(rule id on the sidecar, rule) for each rule of an experiment."""
    return [(prefix + r.name, r) for r in rules]

