"""Go's ``time.ParseDuration`` and ``Duration.String``, because IoChaos specs carry Go
duration strings (``delay: "100ms"``, ``duration: "400s"``, ``@every 10m``) and a spec that
0.9's controller accepted must mean the same here, to the nanosecond.

Grammar (Go 1.14, what 0.9.1 was built with): ``[-+]?`` then one or more ``<number><unit>``,
number = digits with an optional fraction (``1.``, ``.5`` are fine, ``.`` is not), unit one of
ns us µs μs ms s m h; the lone string ``0`` needs no unit. The result must fit an int64 of
nanoseconds.
"""

from __future__ import annotations

NANOSECOND = 1
MICROSECOND = 1000
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # U+00B5 micro sign
    "\u03bcs": MICROSECOND,  # U+03BC Greek mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_INT64_MAX = (1 << 63) - 1


class DurationError(ValueError):
    """The text is not a Go duration; the message quotes it as Go's error did."""


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration string (negative allowed, as in Go)."""
    if not isinstance(text, str):
        raise DurationError(f"invalid duration {text!r}")
    orig = text
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DurationError(f'invalid duration "{orig}"')
    total = 0
    while s:
        if not (s[0].isascii() and (s[0].isdigit() or s[0] == ".")):
            raise DurationError(f'invalid duration "{orig}"')
        i = 0
        while i < len(s) and s[i].isascii() and s[i].isdigit():
            i += 1
        whole = s[:i]
        s = s[i:]
        frac = ""
        if s.startswith("."):
            s = s[1:]
            j = 0
            while j < len(s) and s[j].isascii() and s[j].isdigit():
                j += 1
            frac = s[:j]
            s = s[j:]
        if not whole and not frac:
            raise DurationError(f'invalid duration "{orig}"')
        k = 0
        while k < len(s) and s[k] != "." and not (s[k].isascii() and s[k].isdigit()):
            k += 1
        unit_text = s[:k]
        s = s[k:]
        if not unit_text:
            raise DurationError(f'missing unit in duration "{orig}"')
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise DurationError(f'unknown unit "{unit_text}" in duration "{orig}"')
        value = int(whole or "0") * unit
        if frac:
            value += _fraction(frac, unit)
        if value > _INT64_MAX:
            raise DurationError(f'invalid duration "{orig}"')
        total += value
        if total > _INT64_MAX:
            raise DurationError(f'invalid duration "{orig}"')
    return -total if neg else total


def _fraction(digits: str, unit: int) -> int:
    """Go's way with the fraction: digits past int64 precision are dropped, then a float64
    multiply truncated toward zero (so "1.0000000001h" rounds exactly as 0.9 rounded it)."""
    f, scale = 0, 1.0
    for ch in digits:
        if f > _INT64_MAX // 10:
            break
        f = f * 10 + int(ch)
        scale *= 10
    return int(float(f) * (float(unit) / scale))


def _fmt_frac(v: int, prec: int) -> tuple[str, int]:
    """Go's fmtFrac: the fraction digits of v/10**prec (trailing zeros dropped), and v's rest."""
    digits = ""
    printed = False
    for _ in range(prec):
        d = v % 10
        printed = printed or d != 0
        if printed:
            digits = str(d) + digits
        v //= 10
    return ("." + digits if printed else ""), v


def format_duration(ns: int) -> str:
    """Go's ``Duration.String``: ``1h2m3.5s``, ``400ms``, ``1.5µs``, ``0s``."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < SECOND:
        if u < MICROSECOND:
            out = f"{u}ns"
        elif u < MILLISECOND:
            frac, rest = _fmt_frac(u, 3)
            out = f"{rest}{frac}\u00b5s"
        else:
            frac, rest = _fmt_frac(u, 6)
            out = f"{rest}{frac}ms"
    else:
        frac, rest = _fmt_frac(u, 9)
        out = f"{rest % 60}{frac}s"
        rest //= 60
        if rest > 0:
            out = f"{rest % 60}m" + out
            rest //= 60
            if rest > 0:
                out = f"{rest}h" + out
    return "-" + out if neg else out
