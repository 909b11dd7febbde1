"""The fault table: one table serves both control APIs (Chaos Mesh 0.9's `injure.Injure` and
`chaosfs.v1.Faults`), and what a firing rule does to one operation.

The table is copy-on-write: a change builds a new rule tuple and swaps it into the FaultGate
in one step, so a request never sees half a change, and a bad request changes nothing.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import random
import threading
import time
from dataclasses import replace
from contextvars import ContextVar
from typing import Any, Callable, Optional

import trio
from pyfuse3 import FUSEError

from chaosfs.faults._gate import FaultGate
from chaosfs.faults.rules import Corrupt, Rule, RuleError, never_firing, re2_options, validate_rule
from chaosfs.faults.methods import DELAY_ONLY, METHOD_ID, NEVER_FIRE

log = logging.getLogger("chaosfs.faults")


# ---- what a firing rule does to one operation ------------------------------------------

class InjectedError(FUSEError):
    """An error a fault gave the operation (an errno rule, a power cut's EIO), not the
    backing file system: pyfuse3 and the cython transport answer it as any FUSEError with
    its errno; the stats count it apart (FaultGate.record_failed, `chaosfs_injected_errors_total`)."""


class RequestSlot:
    """A request's place in its transport's concurrency limit (-workers), given up while a
    fault delay sleeps: a thousand delayed requests then wait on trio timers and stall no
    other file's requests. The transport releases it when the request ends if `held`.

    `limit` None: the request runs on the transport's reading task itself (the cython
    transport does that while no rule can make a request wait, `FaultGate.may_wait`), so it
    must never wait: a rule with a delay published meanwhile (on a gRPC thread) is one the
    request was dispatched before, and its delay is not applied."""

    __slots__ = ("limit", "held")

    def __init__(self, limit: Optional[trio.Semaphore]) -> None:
        self.limit = limit
        self.held = limit is not None


request_slot: ContextVar[Optional[RequestSlot]] = ContextVar("chaosfs_request_slot", default=None)

# The slot of a request a transport's worker thread serves outside trio (the cython
# transport's py_take). It cannot sleep there: a rule that would make it wait raises
# MustWait instead, and the request is served again from the start on the trio thread.
WORKER_SLOT = RequestSlot(None)


class MustWait(BaseException):
    """A rule would make this request wait, and it runs where nothing may (WORKER_SLOT).
    Raised by verdict_of before any rule is rolled or counted, and so before the handler
    has done anything (every handler served on a worker checks its rules first): the
    request can be handed on untouched. A BaseException, so no handler's error mapping
    turns it into an errno."""


async def fault_sleep(seconds: float) -> None:
    slot = request_slot.get()
    if slot is not None and slot.limit is None:
        return  # on the reading task: see RequestSlot
    if slot is None or not slot.held:
        await trio.sleep(seconds)
        return
    slot.held = False
    slot.limit.release()
    try:
        await trio.sleep(seconds)
    finally:
        await slot.limit.acquire()  # back in line behind whoever came meanwhile
        slot.held = True


class Blackout:
    """What requests under a blocking power cut wait for (chaosfs.fs.power): one trio Event
    per cut, made and set on the loop's thread."""

    def __init__(self) -> None:
        self.event: Optional[trio.Event] = None

    def begin(self) -> None:
        self.event = trio.Event()

    def end(self) -> None:
        if self.event is not None:
            self.event.set()
        self.event = None

    async def wait(self) -> None:
        ev = self.event
        if ev is None:
            return
        slot = request_slot.get()
        if slot is not None and slot.limit is None:
            # On the reading task (see RequestSlot), dispatched as the cut began: it must
            # not wait there, nor reach the backing files the cut is rolling back.
            raise InjectedError(errno.EIO)
        if slot is None or not slot.held:
            await ev.wait()
            return
        slot.held = False  # a blocked request holds no -workers slot, as in fault_sleep
        slot.limit.release()
        try:
            await ev.wait()
        finally:
            await slot.limit.acquire()
            slot.held = True


blackout = Blackout()


class Verdict:
    __slots__ = ("delay", "errno", "corrupt", "short", "torn", "block")

    def __init__(self) -> None:
        self.delay = 0.0
        self.errno = 0
        self.corrupt: Optional[Corrupt] = None
        self.short = 0.0
        self.torn = 0
        self.block = False

    async def apply_delay_only(self) -> None:
        if self.block:
            await blackout.wait()
        if self.delay > 0:
            await fault_sleep(self.delay)

    async def apply_plain(self) -> None:
        if self.block:
            await blackout.wait()
        if self.delay > 0:
            await fault_sleep(self.delay)
        if self.errno:
            raise InjectedError(self.errno)

    async def apply_read(self, fd: int, off: int, size: int, pread: Callable) -> bytes:
        await self.apply_plain()
        if self.short and size > 1:
            size = max(1, int(size * self.short))
        data = pread(fd, off, size)
        if self.corrupt is not None:
            data = self.corrupt.apply(data)
        return data

    async def apply_write(self, fd: int, off: int, buf: bytes, pwrite: Callable) -> int:
        await self.apply_plain()
        if self.corrupt is not None:
            buf = self.corrupt.apply(buf)
        if self.short and len(buf) > 1:
            buf = buf[:max(1, int(len(buf) * self.short))]
        if self.torn:
            # success is reported for all of it; only the part before a random sector
            # boundary inside it lands (none, if it sits within one sector)
            s = self.torn
            first = (off // s + 1) * s
            ends = range(first, off + len(buf), s)
            keep = (random.choice(ends) - off) if len(ends) else 0
            if keep:
                pwrite(fd, off, buf[:keep])
            return len(buf)
        return pwrite(fd, off, buf)


_READ, _WRITE = METHOD_ID["read"], METHOD_ID["write"]
ALL_RULED = (1 << 64) - 1  # FaultGate.ruled of a rule on every method
assert max(METHOD_ID.values()) < 64


def hand_on(method: int, rules: tuple, any_rule: bool = False) -> None:
    """On a worker (WORKER_SLOT): MustWait if one of `rules`, live and applying to `method`,
    would make the request wait, or, with `any_rule`, if one applies at all (for a handler
    whose fault path must await). Nothing is rolled or counted. Elsewhere: nothing."""
    if request_slot.get() is not WORKER_SLOT:
        return
    now = time.monotonic()
    for r in rules:
        if r.applies(method) and r.live(now) and (any_rule or r.delay_us or r.jitter_us or r.block):
            raise MustWait()


def verdict_of(method: int, rules: tuple) -> Optional[Verdict]:
    """Roll every rule matching this op; combine the ones that fire (delays add up, the
    first errno wins, data actions only on read/write). None when nothing fires."""
    v: Optional[Verdict] = None
    hand_on(method, rules)
    now = time.monotonic()
    for r in rules:
        if not r.applies(method) or not r.live(now):
            continue
        if r.probability < 100.0 and random.random() * 100.0 >= r.probability:
            continue
        r.hits += 1
        if v is None:
            v = Verdict()
        if r.block:
            v.block = True
        if r.delay_us or r.jitter_us:
            v.delay += (r.delay_us + (random.randint(0, r.jitter_us) if r.jitter_us else 0)) / 1e6
        if method in DELAY_ONLY:
            continue
        if not v.errno and (r.errno or r.random_errno):
            v.errno = r.pick_errno(method)
        if method == _READ or method == _WRITE:
            if r.corrupt is not None and v.corrupt is None:
                v.corrupt = r.corrupt
            if r.short and not v.short:
                v.short = r.short
            if r.torn and method == _WRITE and not v.torn:
                v.torn = r.torn
    return v


# ---- the table ---------------------------------------------------------------------------

def build_matcher(rules: tuple) -> Callable[[str], tuple]:
    """path -> the rules (in table order) whose pattern matches it, with one RE2 set search
    for all patterned rules, so 1,000 rules cost about what one does."""
    if not rules:
        return lambda path: ()
    always = [i for i, r in enumerate(rules) if r.regex is None]
    patterned = [i for i, r in enumerate(rules) if r.regex is not None]
    if not patterned:
        return lambda path: rules
    import re2  # loaded by the patterns' compile_path already
    rset = re2.Set.SearchSet(re2_options(256 << 20))
    for i in patterned:
        rset.Add(rules[i].regex.pattern)
    try:
        rset.Compile()
    except re2.error:
        # Too big for one automaton: one search per rule (correct, just slower).
        return lambda path: tuple(r for r in rules if r.matches_path(path))
    if not always:
        def match(path: str) -> tuple:
            hit = rset.Match(path)
            if not hit:
                return ()
            return tuple(rules[patterned[k]] for k in sorted(hit))
        return match

    def match_with_always(path: str) -> tuple:
        hit = rset.Match(path)
        if not hit:
            return tuple(rules[i] for i in always)
        return tuple(rules[i] for i in sorted(always + [patterned[k] for k in hit]))
    return match_with_always

class FaultEngine:
    """Owns the rule table; every change is validated first, then published at once.

    Mutations come from gRPC worker threads (and the TTL reaper); the FUSE loop only reads
    the published tuple, so a lock is held by writers alone and never on the I/O path.
    """

    def __init__(self, gate: FaultGate,
                 on_change: Optional[Callable[[list[Rule], list[Rule]], dict[str, list[str]]]] = None) -> None:
        self.gate = gate
        self._lock = threading.Lock()
        self._rules: dict[str, Rule] = {}
        self._ids = itertools.count(1)
        self._slots = itertools.count(1)
        # The file system's walk after a change (FsOperations.rules_changed): drops the
        # kernel's caches the changed rules make stale and reports, per added rule, files
        # open in kernel passthrough that it cannot reach.
        self._on_change = on_change
        self._bypassed: dict[str, list[str]] = {}
        self.never_fire = NEVER_FIRE  # per transport; the daemon sets its transport's
        # An armed power-loss model needs every write to reach its Python hooks: the gate
        # stays active (so the C workers consult their views) while it is held.
        self._held_active = False
        # Taken around every publication of a rule table (inside self._lock): a transport
        # whose workers run handlers themselves (DevFuseTransport.handlers_lock) then never
        # has one see a table change halfway, or meet a rule that would make it wait.
        self.handlers_lock: Any = contextlib.nullcontext()
        gate.verdict_of = verdict_of
        gate.hand_on_rules = hand_on
        gate.path_check = self.check_path
        gate.matcher = build_matcher(())

    # reads
    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def hits(self, rule: Rule) -> int:
        """Times the rule fired, on either path (Python handlers, the C workers)."""
        return rule.hits + (self.gate.c_hits_of(rule.slot) if rule.slot else 0)

    def injected(self) -> bool:
        return bool(self._rules)

    def check_path(self, method: int, path: str) -> Optional[Verdict]:
        matching = self.gate.matcher(path)
        return verdict_of(method, matching) if matching else None

    def new_id(self) -> str:
        return f"r{next(self._ids)}"

    # writes: each takes a function that edits a copy of the table
    def change(self, edit: Callable[[dict[str, Rule]], object]) -> object:
        with self._lock:
            table = dict(self._rules)
            result = edit(table)  # raises -> nothing changed
            before = self._rules
            self._publish(table)
            changed = [r for k, r in before.items() if table.get(k) is not r]
            changed += [r for k, r in table.items() if before.get(k) is not r]
        if not changed or self._on_change is None:
            return result
        added = [r for r in changed if table.get(r.id) is r]
        # Outside the lock, and never on the FUSE thread (see rules_changed).
        try:
            found = self._on_change(changed, added)
        except Exception:
            log.exception("cache invalidation after a rule change failed")
            return result
        for rid, paths in found.items():
            log.warning("rule %s: %d file(s) open in kernel passthrough keep bypassing its "
                        "read/write faults until reopened: %s", rid, len(paths),
                        ", ".join(sorted(paths)[:10]) + (" ..." if len(paths) > 10 else ""))
        if found:
            with self._lock:
                self._bypassed.update(found)
                for rid in [k for k in self._bypassed if k not in self._rules]:
                    del self._bypassed[rid]  # removed before anyone asked
        return result

    def bypassed(self, rule_id: str) -> list[str]:
        """Paths the rule could not reach when it was added (open in kernel passthrough)."""
        with self._lock:
            return sorted(self._bypassed.pop(rule_id, []))

    def _publish(self, table: dict[str, Rule]) -> None:
        """Swap the table in (under self._lock). The matcher is compiled first, outside
        handlers_lock, which is held only for the swap itself."""
        g = self.gate
        rules = tuple(table.values())
        idle = not rules and not self._held_active
        matcher = build_matcher(() if idle else rules)
        waits = any(r.delay_us or r.jitter_us or r.block for r in rules)
        ruled = 0
        for r in rules:
            ruled |= ALL_RULED if r.methods is None else sum(1 << m for m in r.methods)
        with self.handlers_lock:
            self._rules = table
            for r in rules:
                if not r.slot:  # a rule new to the table: a fresh counter for the C workers
                    r.slot = next(self._slots)
                    g.reset_hits(r.slot)
            if waits:
                g.set_may_wait(True)  # before any request can see the rule
            if idle:
                g.set_active(False)  # first: the hot path stops looking before the table empties
            g.matcher = matcher
            g.set_ruled(ruled)
            g.next_epoch()
            if not idle:
                g.set_active(True)  # last: the hot path looks once the table is whole
            g.set_may_wait(waits)

    def hold_active(self, on: bool) -> None:
        """Keep the gate active without rules (power-loss tracking), or stop doing so."""
        with self._lock:
            self._held_active = on
            self._publish(self._rules)

    def add(self, rule: Rule) -> str:
        """Insert a new rule; an empty id gets a fresh `rN` that no caller-chosen id holds."""
        auto = not rule.id
        checked = validate_rule(replace(rule, id="r0") if auto else rule)
        idle = never_firing(checked, self.never_fire)
        if idle:
            log.warning("rule %s: the kernel never sends %s to chaosfs (it handles them "
                        "itself): it will not fire", rule.id or "(new)", ", ".join(idle))

        def edit(t: dict[str, Rule]) -> str:
            r = checked
            if auto:
                rid = self.new_id()
                while rid in t:  # under the lock: the id is free when we publish
                    rid = self.new_id()
                r = replace(checked, id=rid)
            elif r.id in t:
                raise RuleError("id", f"rule {r.id!r} already exists")
            t[r.id] = r
            return r.id
        return self.change(edit)  # type: ignore[return-value]

    def put_many(self, rules: list[Rule]) -> None:
        """Insert or replace (0.9's SetFault: one fault per method)."""
        checked = [validate_rule(r) for r in rules]

        def edit(t: dict[str, Rule]) -> None:
            for r in checked:
                t[r.id] = r
        self.change(edit)

    def remove(self, ids: list[str], missing_ok: bool = False) -> int:
        def edit(t: dict[str, Rule]) -> int:
            if not missing_ok:
                for i in ids:
                    if i not in t:
                        raise KeyError(i)
            return sum(1 for i in ids if t.pop(i, None) is not None)
        return self.change(edit)  # type: ignore[return-value]

    def clear(self) -> int:
        def edit(t: dict[str, Rule]) -> int:
            n = len(t)
            t.clear()
            return n
        return self.change(edit)  # type: ignore[return-value]

    def reaping(self) -> bool:
        """Whether a rule can die (a TTL or max_hits), so the reaper must look often."""
        return any(r.expires_at or r.max_hits for r in self._rules.values())

    def dead_ids(self) -> list[str]:
        """Rules past their TTL or max_hits (a scan of the published table, no lock)."""
        now = time.monotonic()
        return [r.id for r in self._rules.values() if not r.live(now)]
