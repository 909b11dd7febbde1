"""``spec.scheduler.cron`` as 0.9.1 read it: robfig/cron's ``ParseStandard``.

That is five fields (minute hour day-of-month month day-of-week, *no seconds*), the
descriptors ``@yearly @annually @monthly @weekly @daily @midnight @hourly``, ``@every <Go
duration>``, and an optional ``TZ=Zone`` / ``CRON_TZ=Zone`` prefix.

Why two halves: the *grammar* is checked here, field by field, with robfig's bounds and quirks
(day-of-week is 0-6, so ``7`` is an error where croniter would take it as Sunday; ``?`` means
``*`` in any field; ``N/step`` means ``N-max/step``; names are case-insensitive), because a
spec 0.9 rejected must be rejected and one it took must be taken. The *calendar arithmetic*
(month lengths, day-of-month OR day-of-week, DST) is croniter's, fed a normalised expression
of explicit value lists, which leaves it nothing to interpret differently. ``@every`` is not a
calendar rule at all (robfig: a constant delay, rounded down to whole seconds, at least 1 s,
counted from the previous run) and croniter does not know it, so it is computed here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller.duration import SECOND, DurationError, parse_duration


class CronError(ValueError):
    """Not a schedule robfig/cron's standard parser accepts; the message says which part."""


# (min, max, names) per field, robfig's bounds
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DOWS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DOWS),
)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _atoi(text: str, expr: str) -> int:
    # robfig's mustParseInt: strconv.Atoi (an optional sign, ASCII digits), then no negatives
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        raise CronError(f"failed to parse int from {text}: {expr}")
    n = int(text)
    if n < 0:
        raise CronError(f"negative number ({n}) not allowed: {text}")
    return n


def _int_or_name(text: str, names: dict[str, int], expr: str) -> int:
    if names and text.lower() in names:
        return names[text.lower()]
    return _atoi(text, expr)


def _parse_field(text: str, lo: int, hi: int, names: dict[str, int]) -> tuple[set[int], bool]:
    """The values a field allows and whether robfig marks it as a star (which decides whether
    day-of-month and day-of-week combine with AND or OR)."""
    values: set[int] = set()
    star = False
    # strings.FieldsFunc: empty items between commas vanish
    for expr in (p for p in text.split(",") if p):
        range_step = expr.split("/")
        low_high = range_step[0].split("-")
        extra_star = False
        if low_high[0] in ("*", "?"):
            start, end, extra_star = lo, hi, True
            if len(low_high) > 1:
                raise CronError(f"too many hyphens: {expr}")
        else:
            start = _int_or_name(low_high[0], names, expr)
            if len(low_high) == 1:
                end = start
            elif len(low_high) == 2:
                end = _int_or_name(low_high[1], names, expr)
            else:
                raise CronError(f"too many hyphens: {expr}")
        if len(range_step) == 1:
            step = 1
        elif len(range_step) == 2:
            step = _atoi(range_step[1], expr)
            if len(low_high) == 1:  # "N/step" means "N-max/step"
                end = hi
            if step > 1:
                extra_star = False
        else:
            raise CronError(f"too many slashes: {expr}")
        if start < lo:
            raise CronError(f"beginning of range ({start}) below minimum ({lo}): {expr}")
        if end > hi:
            raise CronError(f"end of range ({end}) above maximum ({hi}): {expr}")
        if start > end:
            raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
        if step == 0:
            raise CronError(f"step of range should be a positive number: {expr}")
        values.update(range(start, end + 1, step))
        star = star or extra_star
    return values, star


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; ``next(t)`` is the first activation strictly after ``t``."""

    text: str
    every_ns: int = 0          # @every: the constant delay (whole seconds, >= 1 s)
    croniter_expr: str = ""    # otherwise: the normalised 5-field expression for croniter
    tz: dt.tzinfo | None = None  # TZ=/CRON_TZ= prefix; None = the time's own zone

    def next(self, after: dt.datetime) -> dt.datetime:
        if after.tzinfo is None:
            raise ValueError("Schedule.next needs an aware datetime")
        if self.every_ns:
            # robfig's ConstantDelaySchedule: t + delay, sub-second part of t dropped
            base = after.replace(microsecond=0)
            return base + dt.timedelta(microseconds=self.every_ns // 1000)
        from croniter import croniter  # imported here: only calendar schedules need it

        local = after.astimezone(self.tz) if self.tz else after
        nxt = croniter(self.croniter_expr, local).get_next(dt.datetime)
        return nxt.astimezone(after.tzinfo)


def parse_cron(text: str) -> Schedule:
    """robfig/cron ``ParseStandard``, plus one check 0.9 lacked: a calendar rule that can never
    fire (``0 0 30 2 *``) is an error instead of a schedule whose next start is year 1."""
    if not isinstance(text, str) or not text.strip():
        raise CronError("empty spec string")
    spec = text.strip()
    tz = None
    if spec.startswith("TZ=") or spec.startswith("CRON_TZ="):
        eq = spec.index("=")
        sp = spec.find(" ")
        if sp < 0:
            raise CronError(f"missing schedule after time zone: {spec}")
        zone = spec[eq + 1:sp]
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"provided bad location {zone}") from None
        spec = spec[sp:].strip()
    if spec.startswith("@"):
        if spec.startswith("@every "):
            try:
                ns = parse_duration(spec[len("@every "):])
            except DurationError as exc:
                raise CronError(f"failed to parse duration {spec}: {exc}") from None
            ns = max(ns, SECOND)
            return Schedule(text=text, every_ns=ns - ns % SECOND, tz=tz)
        if spec not in _DESCRIPTORS:  # robfig compares descriptors case-sensitively
            raise CronError(f"unrecognized descriptor: {spec}")
        spec = _DESCRIPTORS[spec]
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {spec}")
    out = []
    for raw, (name, lo, hi, names) in zip(fields, _FIELDS):
        try:
            values, star = _parse_field(raw, lo, hi, names)
        except CronError as exc:
            raise CronError(f"{name} field: {exc}") from None
        if not values:
            raise CronError(f"{name} field {raw!r} allows no value")
        # A star keeps its "*" (croniter's day-of-month/day-of-week OR applies only when
        # neither is a star, as in robfig); anything else becomes an explicit list.
        full = values == set(range(lo, hi + 1))
        out.append("*" if star and full else ",".join(str(v) for v in sorted(values)))
    sched = Schedule(text=text, croniter_expr=" ".join(out), tz=tz)
    try:
        sched.next(dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc))
    except Exception:  # croniter gives up on dates that do not exist (Feb 30)
        raise CronError(f"{text!r} never fires") from None
    return sched
