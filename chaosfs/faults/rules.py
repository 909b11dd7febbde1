"""Fault rules: what one rule is, its validation, its path pattern, and the rules 0.9's
requests become. Paths are RE2 regexes (like Go's regexp in 0.9), searched unanchored in the
mount-relative path; globs are translated to anchored RE2. The table that holds the rules
is engine.py.
"""
from __future__ import annotations

import errno as E
import functools
import logging
import os
import random
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional

from chaosfs.faults.methods import (ALL_METHODS, ENOSYS_STANDIN, ENOSYS_STICKY, MAX_REPLY_ERRNO,
                             METHOD_ID, NEVER_FIRE)

log = logging.getLogger("chaosfs.faults")

MAX_ERRNO = MAX_REPLY_ERRNO  # 512 and up: the kernel refuses the reply, the app hangs
MAX_DELAY_US = (1 << 32) - 1  # 0.9's uint32 µs: ~71.6 minutes
MAX_PATTERN = 4096
MAX_CORRUPT_LEN = 1 << 20
MAX_OCCURRENCES = 1024
MAX_TTL = 7 * 24 * 3600.0
COMPAT_RANDOM_ERRNOS = tuple(range(7, 54))  # 0.9: uniform over 7..53
# The same draw where ENOSYS (38, inside 7..53) would switch the operation off for the mount.
COMPAT_RANDOM_SAFE = tuple(e for e in COMPAT_RANDOM_ERRNOS if e != E.ENOSYS)

# Realistic errors per operation, for `errno.random` in chaosfs.v1 (what the syscall's man
# page says a sick disk or a full fs returns).
_REALISTIC: dict[str, tuple[int, ...]] = {
    "read": (E.EIO, E.EINTR, E.EAGAIN, E.EBADMSG),
    "write": (E.EIO, E.ENOSPC, E.EDQUOT, E.EFBIG, E.EINTR),
    "open": (E.EACCES, E.EMFILE, E.ENFILE, E.ENOENT, E.EIO, E.EPERM),
    "create": (E.EACCES, E.ENOSPC, E.EDQUOT, E.EMFILE, E.ENFILE, E.EIO),
    "fsync": (E.EIO, E.ENOSPC, E.EDQUOT),
    "fsyncdir": (E.EIO, E.ENOSPC),
    "flush": (E.EIO, E.ENOSPC, E.EDQUOT, E.EINTR),
    "getattr": (E.EIO, E.EACCES, E.ENOENT),
    "lookup": (E.ENOENT, E.EACCES, E.EIO, E.ENAMETOOLONG),
    "access": (E.EACCES, E.ENOENT, E.EIO),
    "mkdir": (E.ENOSPC, E.EDQUOT, E.EACCES, E.EMLINK, E.EIO),
    "mknod": (E.ENOSPC, E.EDQUOT, E.EACCES, E.EIO),
    "symlink": (E.ENOSPC, E.EDQUOT, E.EACCES, E.EIO),
    "link": (E.EMLINK, E.ENOSPC, E.EDQUOT, E.EACCES, E.EIO),
    "unlink": (E.EACCES, E.EBUSY, E.EPERM, E.EIO),
    "rmdir": (E.EACCES, E.EBUSY, E.ENOTEMPTY, E.EIO),
    "rename": (E.EXDEV, E.EBUSY, E.EACCES, E.ENOSPC, E.EIO),
    "truncate": (E.EIO, E.EFBIG, E.EPERM, E.EACCES),
    "readdir": (E.EIO, E.ENOMEM, E.EACCES),
    "opendir": (E.EACCES, E.EMFILE, E.ENFILE, E.EIO),
    "statfs": (E.EIO, E.ENOSYS),
    "getxattr": (E.ENODATA, E.ENOTSUP, E.EIO),
    "setxattr": (E.ENOSPC, E.EDQUOT, E.ENOTSUP, E.EIO),
}
_DEFAULT_REALISTIC = (E.EIO,)


def realistic_errnos(method: str) -> tuple[int, ...]:
    return _REALISTIC.get(method, _DEFAULT_REALISTIC)


class RuleError(ValueError):
    """A rule or request that cannot be applied; `field` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


# ---- paths -------------------------------------------------------------------------------

# re2 is imported with the first path pattern, not at start: a daemon with no rule (the idle
# sidecar) never matches a path, and the extension is ~1 MB of its RSS and ~4 ms of its
# start-up. The later `import re2`s are a sys.modules lookup per rule validated or table
# built, never per request (a compiled pattern holds what it needs).
@functools.cache
def re2_options(max_mem: int = 8 << 20):
    """Quiet re2 options with a memory cap: one path pattern's (the default) or a rule set's."""
    import re2
    opts = re2.Options()
    opts.log_errors = False
    opts.max_mem = max_mem
    return opts


def glob_to_re2(glob: str) -> str:
    """`*` one path segment's worth, `**` any depth, `?` one char, `[...]` a class; anchored."""
    import re2  # (lazily: see re2_options)
    out, i, n = ["^"], 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                i += 2
                if glob.startswith("/", i):
                    out.append("(?:.*/)?")  # `a/**/b` also matches `a/b`
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = glob.find("]", i + 2 if glob.startswith("[!", i) or glob.startswith("[^", i) else i + 1)
            if j < 0:
                raise RuleError("path", f"unterminated '[' in glob {glob!r}")
            body = glob[i + 1:j]
            neg = body[:1] in ("!", "^")
            body = body[1:] if neg else body
            body = body.replace("\\", "\\\\").replace("]", "\\]")
            out.append(f"[{'^' if neg else ''}{body}]")
            i = j
        else:
            out.append(re2.escape(c) if c not in "/" else "/")
        i += 1
    out.append("$")
    return "".join(out)


def compile_path(pattern: str, kind: str = "regex"):
    if len(pattern) > MAX_PATTERN:
        raise RuleError("path", f"pattern longer than {MAX_PATTERN} characters")
    if kind == "glob":
        source = glob_to_re2(pattern.lstrip("/"))
    elif kind == "regex":
        source = pattern
    else:
        raise RuleError("path_kind", f"unknown kind {kind!r} (regex or glob)")
    if source == "":
        return None
    import re2  # (lazily: see re2_options)
    try:
        return re2.compile(source, re2_options())
    except re2.error as e:
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise RuleError("path", f"invalid {kind} {pattern!r}: {msg}") from None


# ---- rules -------------------------------------------------------------------------------

CORRUPT_MODES = ("zero", "random", "bitflip")


@dataclass(frozen=True)
class Corrupt:
    mode: str = "random"
    length: int = 1
    occurrences: int = 1

    def apply(self, data: bytes) -> bytes:
        if not data:
            return data
        buf = bytearray(data)
        for _ in range(self.occurrences):
            n = min(self.length, len(buf))
            start = random.randrange(0, len(buf) - n + 1)
            if self.mode == "zero":
                buf[start:start + n] = bytes(n)
            elif self.mode == "random":
                # never a no-op: make sure the bytes really change
                new = bytearray(os.urandom(n))
                for k in range(n):
                    if new[k] == buf[start + k]:
                        new[k] ^= 0xFF
                buf[start:start + n] = new
            else:
                for k in range(start, start + n):
                    buf[k] ^= 1 << random.randrange(8)
        return bytes(buf)


@dataclass
class Rule:
    id: str
    methods: Optional[frozenset[int]] = None  # None: every method
    path: str = ""
    path_kind: str = "regex"
    probability: float = 100.0
    errno: int = 0
    random_errno: bool = False
    errno_choices: Optional[tuple[int, ...]] = None  # fixed set (compat); else realistic
    delay_us: int = 0
    jitter_us: int = 0
    corrupt: Optional[Corrupt] = None
    short: float = 0.0  # keep this fraction of a read/write (0 = off)
    torn: int = 0       # sector size of a torn write (0 = off)
    block: bool = False  # wait for the end of a blocking power cut (internal, chaosfs.fs.power)
    ttl: float = 0.0
    max_hits: int = 0
    origin: str = "v1"
    created: float = field(default_factory=time.time)
    expires_at: float = 0.0  # monotonic; 0 = never
    hits: int = 0  # fired on the Python path; engine.hits() adds the C workers'
    slot: int = 0  # its hit counter in the gate (the engine assigns one per published rule)
    regex: object = None

    def matches_path(self, path: str) -> bool:
        return self.regex is None or self.regex.search(path) is not None

    def applies(self, method: int) -> bool:
        return self.methods is None or method in self.methods

    def touches(self, method_ids: Iterable[int]) -> bool:
        return self.methods is None or not self.methods.isdisjoint(method_ids)

    def live(self, now: float) -> bool:
        return (not self.expires_at or now < self.expires_at) and (
            not self.max_hits or self.hits < self.max_hits)

    def errno_pool(self, method: int) -> tuple[int, ...]:
        """What a random errno is drawn from for this method."""
        return self.errno_choices or realistic_errnos(ALL_METHODS[method])

    def pick_errno(self, method: int) -> int:
        if self.random_errno:
            return random.choice(self.errno_pool(method))
        return self.errno

    def describe_methods(self) -> list[str]:
        return [] if self.methods is None else sorted(ALL_METHODS[m] for m in self.methods)


def actions_of(r: object) -> list[str]:
    """The action names a rule (or anything shaped like one: the controller's spec.chaosfs
    rules) carries, in the order the v1 API lists them."""
    acts = []
    if r.errno or r.random_errno:
        acts.append("errno")
    if r.delay_us or r.jitter_us:
        acts.append("delay")
    if r.corrupt is not None:
        acts.append("corrupt")
    if r.short:
        acts.append("short")
    if r.torn:
        acts.append("torn")
    return acts


def method_ids(names: Iterable[str], field_name: str = "methods",
               allowed: tuple[str, ...] = ALL_METHODS) -> Optional[frozenset[int]]:
    names = list(names)
    if not names:
        return None
    bad = [n for n in names if n not in allowed]
    if bad:
        raise RuleError(field_name, f"unknown method {bad[0]!r}")
    return frozenset(METHOD_ID[n] for n in names)


def validate_rule(rule: Rule) -> Rule:
    """Check every field; returns the rule with its regex compiled. Raises RuleError."""
    if not (0.0 <= rule.probability <= 100.0) or rule.probability != rule.probability:
        raise RuleError("probability", f"{rule.probability} is outside 0..100")
    if rule.errno < 0 or rule.errno > MAX_ERRNO:
        raise RuleError("errno", f"{rule.errno} is outside 1..{MAX_ERRNO} (the kernel refuses "
                        "a reply error of 512 or more and the app's call would hang)")
    if rule.errno == E.ENOSYS:
        sticky = sorted(ENOSYS_STICKY) if rule.methods is None else sorted(rule.methods & ENOSYS_STICKY)
        if sticky:
            name = ALL_METHODS[sticky[0]]
            raise RuleError("errno", f"ENOSYS on {name!r} would make the kernel switch {name!r} "
                            f"off for the whole mount until remount; use EOPNOTSUPP ({ENOSYS_STANDIN}) "
                            "or name methods without it")
    if rule.random_errno and rule.errno:
        raise RuleError("errno", "give a fixed errno or random, not both")
    if not (0 <= rule.delay_us <= MAX_DELAY_US):
        raise RuleError("delay", f"must be between 0 and {MAX_DELAY_US} µs (~71 minutes)")
    if not (0 <= rule.jitter_us <= MAX_DELAY_US):
        raise RuleError("delay.jitter", f"must be between 0 and {MAX_DELAY_US} µs (~71 minutes)")
    if rule.corrupt is not None:
        c = rule.corrupt
        if c.mode not in CORRUPT_MODES:
            raise RuleError("corrupt.mode", f"unknown mode {c.mode!r}")
        if not (1 <= c.length <= MAX_CORRUPT_LEN):
            raise RuleError("corrupt.length", f"must be 1..{MAX_CORRUPT_LEN} bytes")
        if not (1 <= c.occurrences <= MAX_OCCURRENCES):
            raise RuleError("corrupt.occurrences", f"must be 1..{MAX_OCCURRENCES}")
    if not (0.0 <= rule.short < 1.0) or rule.short != rule.short:
        raise RuleError("short.fraction", "must be in [0, 1): the part of the data kept")
    if not (0.0 <= rule.ttl <= MAX_TTL) or rule.ttl != rule.ttl:
        raise RuleError("ttl", f"must be between 0 and {MAX_TTL:.0f} seconds")
    if rule.max_hits < 0:
        raise RuleError("max_hits", "must not be negative")
    data_only = (rule.corrupt is not None) or rule.short
    if data_only and rule.methods is not None and not rule.methods & {METHOD_ID["read"], METHOD_ID["write"]}:
        raise RuleError("methods", "corrupt and short act on read/write: include one of them")
    if rule.torn not in (0, 512, 4096):
        raise RuleError("torn.sector", "must be 512 or 4096")
    if rule.torn and rule.methods is not None and METHOD_ID["write"] not in rule.methods:
        raise RuleError("methods", "torn acts on write: include it")
    if rule.origin != "injure" and not (rule.errno or rule.random_errno or rule.delay_us
                                        or rule.jitter_us or data_only or rule.torn or rule.block):
        raise RuleError("action", "a rule needs at least one of errno, delay, corrupt, short, torn")
    if not rule.id or len(rule.id) > 128:
        raise RuleError("id", "must be 1..128 characters")
    regex = compile_path(rule.path, rule.path_kind)
    expires = time.monotonic() + rule.ttl if rule.ttl else 0.0
    return replace(rule, regex=regex, expires_at=expires, hits=0)


def compat_probability(pct: int) -> float:
    """0.9 fires when rand.Intn(99) < pct: min(pct, 99)/99, so always from 99 on."""
    return 100.0 if pct >= 99 else pct * 100.0 / 99.0


def compat_rule(method: str, *, errno: int, random_errno: bool, pct: int, path: str, delay_us: int) -> Rule:
    """0.9's SetFault for one method, as a rule with a well-known id (one per method).

    ENOSYS is never sent where the kernel would take it as "not implemented" (ENOSYS_STICKY):
    the random draw skips it there and an explicit one becomes EOPNOTSUPP."""
    mid = METHOD_ID[method]
    sticky = mid in ENOSYS_STICKY
    if errno == E.ENOSYS and sticky:
        errno = ENOSYS_STANDIN
    return Rule(
        id=f"injure:{method}", methods=frozenset({mid}), path=path,
        probability=compat_probability(pct), errno=errno if errno else 0,
        random_errno=bool(random_errno and not errno),
        errno_choices=COMPAT_RANDOM_SAFE if sticky else COMPAT_RANDOM_ERRNOS,
        delay_us=delay_us, origin="injure",
    )


def never_firing(rule: Rule, idle: frozenset = NEVER_FIRE) -> list[str]:
    """The methods of a rule that names only methods that never reach chaosfs (else [])."""
    if rule.methods is None or not rule.methods <= idle:
        return []
    return sorted(ALL_METHODS[m] for m in rule.methods)
