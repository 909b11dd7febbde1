"""The IoChaos reconciler: from an object and the time to the faults its pods should hold.

Level-triggered: :meth:`Engine.reconcile` reads the object fresh, decides from its spec,
annotations, finalizers and status alone, acts, writes status, and says when it wants to be
called again. kopf (:mod:`controller.operator`) calls it on every event and on a timer;
nothing is kept in memory between calls, so a restarted controller carries on.

The record of which pods hold a fault is the object's finalizers, one ``namespace/podName``
per injected pod, as 0.9 wrote them: added *before* SetFault (the API server refuses new
finalizers on an object being deleted, so a deletion can never overtake an injection and leak
a fault), removed after RecoverAll. Only finalizers whose prefix has no dot are ours (a
namespace is a DNS label; other controllers' finalizers carry a domain). 0.9 took every
finalizer for a pod key and dropped foreign ones.

Paths (0.9's two reconcilers):
- one-shot (no duration, no scheduler): inject once, keep until deletion;
- scheduled: inject at creation and at each cron tick, recover ``duration`` later;
- ``experiment.chaos-mesh.org/pause: "true"``: recover and wait; removing it resumes (a
  scheduled experiment resumes within its current window, else waits for the next tick).
Better than 0.9: while an experiment runs, every resync asks each injected pod's sidecar
``Injected``; one that lost its faults (sidecar restarted, pod recreated under its name) gets
them again; one that cannot be reached is reported in its podRecord and an Event, not
retried in a loop. A changed spec (generation) re-injects with the new spec (0.9 ignored
edits of a running experiment).

Power cuts (``spec.chaosfs.powerCut``): injection arms each pod's sidecar and its podRecord
says ``powerCut: armed``; the level check asks each armed sidecar how long it has been
armed and, once ``after`` has passed, cuts the power there, disarms, and writes the cut's
time into ``powerCut`` and what was lost into the message (and an Event). A sidecar that
lost its arming before the cut (restarted) is armed again and the wait starts over.
Recovery disarms what is still armed, without a cut.

Two kinds of fault, one path: 0.9's (SetFault, recovered with RecoverAll) and spec.chaosfs's
v1 rules (AddRule with the experiment's own ids, recovered by removing exactly those; see
controller/sidecar.py). Which kind a pod holds is read from its podRecord's ``action``
(``chaosfs`` for v1), so an edit from one kind to the other recovers what was really set.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any, Callable, Mapping

from controller.duration import format_duration
from controller.extension import KEY as EXTENSION_KEY
from controller.extension import rule_prefix
from controller.kube import Cluster, Conflict
from controller.metrics import ControllerMetrics
from controller.selection import SelectionError, filter_by_mode, pod_key, select_pods
from controller.sidecar import Sidecar, SidecarError, sidecar_addr, sidecar_port
from controller.spec import PAUSE_ANNOTATION, IoChaosSpec, SpecError, parse_spec

log = logging.getLogger("chaosfs-controller")

RESYNC_SECONDS = 10.0

# Event reasons: 0.9's two, and ours for what 0.9 only logged
INJECTED, RECOVERED = "ChaosInjected", "ChaosRecovered"
INJECT_FAILED, RECOVER_FAILED = "ChaosInjectFailed", "ChaosRecoverFailed"
INVALID, REINJECTED, SIDECAR_LOST = "InvalidSpec", "ChaosReinjected", "SidecarUnreachable"
POWER_CUT, POWER_CUT_FAILED = "PowerCut", "PowerCutFailed"
ARMED = "armed"  # podRecord powerCut before the cut; after it, the cut's time


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_pod_finalizer(f: str) -> bool:
    ns, sep, name = f.partition("/")
    return bool(sep and ns and name and "." not in ns)


class Engine:
    def __init__(self, cluster: Cluster, *, dial_timeout: float = 120.0,
                 probe_timeout: float = 3.0, resync: float = RESYNC_SECONDS,
                 clock: Callable[[], dt.datetime] = utcnow,
                 rng: random.Random | None = None,
                 metrics: ControllerMetrics | None = None) -> None:
        self.cluster = cluster
        self.metrics = metrics or ControllerMetrics()
        self.dial_timeout = dial_timeout
        self.probe_timeout = probe_timeout
        self.resync = resync
        self.clock = clock
        self.rng = rng or random.Random()

    # ------------------------------------------------------------------ entry point
    def reconcile(self, namespace: str, name: str) -> float | None:
        """Bring one IoChaos in line; the seconds until it wants another look (None: only on
        the next event), or raises when a deletion must be retried."""
        obj = self.cluster.get_iochaos(namespace, name)
        if obj is None:
            self.metrics.forget(namespace, name)
            return None
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            self.finish(obj)
            self.metrics.forget(namespace, name)
            return None
        now = self.clock()
        status = obj.get("status") or {}
        exp = status.get("experiment") or {}
        self.metrics.phase(namespace, name, exp.get("phase"))
        try:
            spec = parse_spec(obj.get("spec"))
        except SpecError as exc:
            return self._invalid(obj, str(exc))
        for w in spec.warnings:
            log.info("%s/%s: %s", namespace, name, w)

        if (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "true":
            if self.injected_keys(obj):
                obj = self._recover_all(obj, why="paused")
            if exp.get("phase") != "Paused":
                self._patch_status(obj, {"phase": "Normal", "reason": "",
                                         "experiment": {"phase": "Paused", "endTime": rfc3339(now)}})
            return None

        gen = meta.get("generation")
        if status.get("observedGeneration") not in (None, gen) and self.injected_keys(obj):
            obj = self._recover_all(obj, why="spec changed")
            exp = {}
            status = {}
        elif status.get("observedGeneration") not in (None, gen):
            exp, status = {}, {}

        if not spec.scheduled:
            if exp.get("phase") == "Running":
                return min(self.level_check(obj, spec), self.resync)
            return self._apply(obj, spec, now, {})

        sched = status.get("scheduler") or {}
        next_start = parse_time(sched.get("nextStart"))
        next_recover = parse_time(sched.get("nextRecover"))
        if exp.get("phase") == "Running":
            if next_start and now >= next_start:
                pass  # a tick inside the window (duration >= interval): inject again, extend
            elif next_recover and now >= next_recover:
                obj = self._recover_all(obj, why="duration over")
                start = parse_time(exp.get("startTime"))
                self._patch_status(obj, {"experiment": {
                    "phase": "Waiting", "endTime": rfc3339(now),
                    "duration": format_duration(int((now - start).total_seconds() * 1e9))
                    if start else ""}})
                return self._until(now, next_start)
            else:
                wake = self.level_check(obj, spec)
                return self._until(now, next_recover, cap=min(wake, self.resync))
        elif exp.get("phase") == "Paused" and next_recover and now < next_recover:
            # resumed inside the current window: the rest of it, the same next start
            return self._apply(obj, spec, now, {"nextStart": sched.get("nextStart"),
                                                "nextRecover": sched.get("nextRecover")})
        elif next_start and now < next_start:
            return self._until(now, next_start)
        # 0.9 started at creation (its nextStart was the zero time) and then at each tick
        nxt = spec.schedule.next(now)
        return self._apply(obj, spec, now, {
            "nextStart": rfc3339(nxt),
            "nextRecover": rfc3339(now + dt.timedelta(microseconds=spec.duration_ns // 1000))})

    def _until(self, now: dt.datetime, *times: dt.datetime | None, cap: float | None = None
               ) -> float:
        waits = [max((t - now).total_seconds(), 0.05) for t in times if t]
        if cap is not None:
            waits.append(cap)
        return min(waits) if waits else self.resync

    # ------------------------------------------------------------------ status, events
    def _patch_status(self, obj: Mapping[str, Any], change: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        change = dict(change)
        change.setdefault("observedGeneration", meta.get("generation"))
        self.cluster.patch_status(meta["namespace"], meta["name"], change)
        phase = (change.get("experiment") or {}).get("phase")
        if phase:
            self.metrics.phase(meta["namespace"], meta["name"], phase)

    def _event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        if type_ == "Warning":
            self.metrics.failures.labels(reason).inc()
        try:
            self.cluster.event(obj, type_, reason, message)
        except Exception as exc:  # noqa: BLE001 - an Event is a report; never fail on it
            log.warning("event %s for %s not recorded: %s", reason, obj["metadata"]["name"], exc)

    def _invalid(self, obj: Mapping[str, Any], message: str) -> None:
        status = obj.get("status") or {}
        if self.injected_keys(obj):
            obj = self._recover_all(obj, why="spec became invalid")
        if status.get("reason") != message:
            self._patch_status(obj, {"phase": "Abnormal", "reason": message,
                                     "experiment": {"phase": "Failed", "reason": message}})
            self._event(obj, "Warning", INVALID, message)
        return None

    # ------------------------------------------------------------------ finalizers
    def injected_keys(self, obj: Mapping[str, Any]) -> list[str]:
        return [f for f in (obj.get("metadata") or {}).get("finalizers") or []
                if is_pod_finalizer(f)]

    def _edit_finalizers(self, obj: Mapping[str, Any], add: list[str] = (),
                         remove: list[str] = ()) -> dict:
        """Add/remove pod keys with optimistic locking; re-read and retry on a conflict."""
        for _ in range(5):
            current = list(obj["metadata"].get("finalizers") or [])
            new = [f for f in current if f not in remove] + [f for f in add if f not in current]
            if new == current:
                return dict(obj)
            try:
                return self.cluster.set_finalizers(obj, new)
            except Conflict:
                fresh = self.cluster.get_iochaos(obj["metadata"]["namespace"],
                                                 obj["metadata"]["name"])
                if fresh is None:
                    raise
                if add and fresh["metadata"].get("deletionTimestamp"):
                    raise
                obj = fresh
        raise Conflict(f"IoChaos {obj['metadata']['name']}: finalizers kept changing")

    # ------------------------------------------------------------------ inject
    def _record(self, pod: Mapping[str, Any], spec: IoChaosSpec | None, message: str,
                power_cut: str = "") -> dict:
        m, st = pod.get("metadata") or {}, pod.get("status") or {}
        rec = {"namespace": m.get("namespace", ""), "name": m.get("name", ""),
               "hostIP": st.get("hostIP", ""), "podIP": st.get("podIP", ""),
               "action": spec.fault if spec else "", "message": message}
        if power_cut:
            rec["powerCut"] = power_cut
        return rec

    def _apply(self, obj: dict, spec: IoChaosSpec, now: dt.datetime,
               scheduler: Mapping[str, Any]) -> float:
        try:
            pods = filter_by_mode(select_pods(spec.selector, self.cluster), spec.mode,
                                  spec.value, self.rng)
        except SelectionError as exc:
            msg = f"selecting pods: {exc}"
            if (obj.get("status") or {}).get("reason") != msg:
                self._patch_status(obj, {"phase": "Abnormal", "reason": msg,
                                         "experiment": {"phase": "Failed", "reason": msg}})
                self._event(obj, "Warning", INJECT_FAILED, msg)
            return self.resync
        try:
            obj = self._edit_finalizers(obj, add=[pod_key(p) for p in pods])
        except Conflict:
            return None  # being deleted: the deletion path takes over
        records, failed = [], []
        prefix = rule_prefix(obj["metadata"])
        for pod in pods:
            try:
                Sidecar(sidecar_addr(pod, spec.addr), self.dial_timeout).inject(spec, prefix)
                records.append(self._record(pod, spec, self._ok_message(spec),
                                            ARMED if spec.power_cut else ""))
                self.metrics.injections.labels("ok").inc()
            except SidecarError as exc:
                self.metrics.injections.labels("failed").inc()
                failed.append(pod_key(pod))
                records.append(self._record(pod, spec, f"inject failed: {exc}"))
                self._event(obj, "Warning", INJECT_FAILED, f"{pod_key(pod)}: {exc}")
        ok = len(pods) - len(failed)
        reason = f"injection failed on {', '.join(failed)}" if failed else ""
        exp = {"phase": "Running" if ok or not pods else "Failed", "reason": reason,
               "startTime": rfc3339(now), "endTime": None, "duration": "",
               "podRecords": records}
        self._patch_status(obj, {"phase": "Abnormal" if failed else "Normal", "reason": reason,
                                 "experiment": exp, "scheduler": dict(scheduler) or None})
        if ok:
            what = f"{len(spec.rules)} chaosfs rule(s)" if spec.v1 else f"{spec.action} fault"
            if spec.power_cut:
                what = ("power loss armed" + (f" and {what}" if spec.rules else "")
                        + f" (cut in {format_duration(spec.power_cut.after_us * 1000)})")
            self._event(obj, "Normal", INJECTED,
                        f"{what} set on {ok} pod(s): "
                        + ", ".join(r["namespace"] + "/" + r["name"] for r in records
                                    if not r["message"].startswith("inject failed")))
        elif not pods:
            self._event(obj, "Normal", INJECTED, f"mode {spec.mode} {spec.value} picked no pod")
        cap = self.resync
        if spec.power_cut and ok:
            cap = min(cap, spec.power_cut.after_us / 1e6)
        if spec.scheduled:
            return self._until(now, parse_time(scheduler.get("nextRecover")),
                               parse_time(scheduler.get("nextStart")), cap=cap)
        return cap

    def _ok_message(self, spec: IoChaosSpec) -> str:
        if spec.power_cut:
            return (f"power loss armed: the cut comes "
                    f"{format_duration(spec.power_cut.after_us * 1000)} after arming")
        if spec.duration_ns:
            return f"fault set for {format_duration(spec.duration_ns)}"
        return "fault set until the experiment is deleted"

    # ------------------------------------------------------------------ level check
    def level_check(self, obj: dict, spec: IoChaosSpec) -> float:
        """Re-inject pods whose sidecar lost the faults; report those that cannot be reached;
        cut the power where its time has come. The probe never waits out the 2-minute dial
        window: the next resync asks again. The seconds until the next cut is due (inf:
        none)."""
        records = {(r.get("namespace"), r.get("name")): r for r in
                   ((obj.get("status") or {}).get("experiment") or {}).get("podRecords") or []}
        changed = False
        wake = float("inf")
        prefix = rule_prefix(obj["metadata"])
        for key in self.injected_keys(obj):
            ns, _, name = key.partition("/")
            old = records.get((ns, name)) or {"namespace": ns, "name": name}
            pod = self.cluster.get_pod(ns, name)
            if pod is None:
                msg, new = "pod is gone", {**old, "message": "pod is gone"}
            else:
                new = self._record(pod, spec, old.get("message", ""), old.get("powerCut", ""))
                try:
                    side = Sidecar(sidecar_addr(pod, spec.addr), dial_timeout=0,
                                   rpc_timeout=self.probe_timeout)
                    restored = side.restore(spec, prefix)
                    power_msg = None
                    if spec.power_cut and new.get("powerCut", ARMED) == ARMED:
                        power_msg, due = self._power_check(obj, key, side, spec, new)
                        wake = min(wake, due)
                    if power_msg is not None:
                        msg = power_msg
                    elif not restored:
                        msg = new["message"] if not new["message"].startswith("sidecar") \
                            else self._ok_message(spec)
                    else:
                        self.metrics.reinjections.inc()
                        msg = self._ok_message(spec) + " (re-injected: the sidecar had lost it)"
                        self._event(obj, "Normal", REINJECTED,
                                    f"{key}: the sidecar had lost {', '.join(restored)}; "
                                    "set again")
                except SidecarError as exc:
                    msg = f"sidecar unreachable: {exc}"
                    if old.get("message") != msg:
                        self._event(obj, "Warning", SIDECAR_LOST, f"{key}: {exc}")
                new["message"] = msg
            # the API server keeps no empty strings (kube.no_empty_strings): compare without
            if {k: v for k, v in new.items() if v != ""} != {k: v for k, v in old.items() if v != ""}:
                records[(ns, name)] = new
                changed = True
        if changed:
            self._patch_status(obj, {"experiment": {"podRecords": list(records.values())}})
        return wake

    def _power_check(self, obj: dict, key: str, side: Sidecar, spec: IoChaosSpec,
                     record: dict) -> tuple[str | None, float]:
        """One armed pod of a power-cut experiment: (new message or None, seconds until its
        cut is due). Sets ``record["powerCut"]``."""
        pc = spec.power_cut
        after = pc.after_us / 1e6
        st = side.power_status()
        if not st.armed:
            # the sidecar lost its tracking (restarted): what it held is gone with it, so
            # a cut now would show nothing; arm again and wait the whole time again
            side.arm(pc)
            record["powerCut"] = ARMED
            self.metrics.reinjections.inc()
            self._event(obj, "Normal", REINJECTED,
                        f"{key}: the sidecar was no longer armed; power loss armed again")
            return (self._ok_message(spec) + " (armed again: the sidecar had lost it)", after)
        armed_for = st.tracked.armed_seconds
        if armed_for < after:
            return None, after - armed_for
        try:
            res = side.cut(pc)
        except SidecarError as exc:
            self._event(obj, "Warning", POWER_CUT_FAILED, f"{key}: {exc}")
            return f"power cut failed: {exc}", self.resync
        now = self.clock()
        record["powerCut"] = rfc3339(now)
        msg = (f"power cut after {format_duration(int(armed_for * 1e9))} armed: "
               f"{len(res.files)} file(s) rolled back, {res.bytes_dropped} unsynced byte(s) "
               f"dropped, {res.ops_kept} write(s) kept, {len(res.entries)} directory "
               f"entr{'y' if len(res.entries) == 1 else 'ies'} undone"
               + (f"; INEXACT: {'; '.join(res.inexact)}" if res.inexact else ""))
        self.metrics.power_cuts.inc()
        self._event(obj, "Warning" if res.inexact else "Normal", POWER_CUT, f"{key}: {msg}")
        return msg, float("inf")

    # ------------------------------------------------------------------ recover
    def _recover_pod(self, key: str, spec_addr: str, v1: bool, prefix: str,
                     power: bool = False) -> tuple[bool, str]:
        """(finalizer can go, message)."""
        ns, _, name = key.partition("/")
        pod = self.cluster.get_pod(ns, name)
        if pod is None:
            return True, "pod is gone"
        if not spec_addr and sidecar_port(pod) is None:
            return True, "pod has no chaosfs container"
        try:
            Sidecar(sidecar_addr(pod, spec_addr), self.dial_timeout).recover(v1, prefix, power)
            return True, "recovered"
        except SidecarError as exc:
            if "UNAVAILABLE" in str(exc):
                # the faults lived in that daemon's memory: unreachable after the whole dial
                # window means it is not running, and a restarted one starts with none
                return True, f"sidecar unreachable, no fault left to recover: {exc}"
            return False, str(exc)

    def _recover_all(self, obj: dict, why: str) -> dict:
        addr = ""
        raw = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
        if isinstance(raw.get("addr"), str):
            addr = raw["addr"] if raw["addr"].startswith(":") else ""
        # what each pod got, from its record (the spec may have changed kind since); a pod
        # without one (the controller stopped between SetFault and the status write) got
        # what the spec says now
        recorded = {f"{r.get('namespace')}/{r.get('name')}": r for r in
                    ((obj.get("status") or {}).get("experiment") or {}).get("podRecords") or []
                    if isinstance(r, Mapping)}
        default_v1 = raw.get(EXTENSION_KEY) is not None
        ext = raw.get(EXTENSION_KEY)
        default_power = isinstance(ext, Mapping) and ext.get("powerCut") is not None
        prefix = rule_prefix(obj["metadata"])
        done, failed = [], []
        for key in self.injected_keys(obj):
            rec = recorded.get(key) or {}
            action = rec.get("action")
            v1 = action == EXTENSION_KEY if action else default_v1
            # disarm what is still armed; a pod whose cut happened is disarmed already
            power = rec.get("powerCut") == ARMED if rec else default_power
            gone, msg = self._recover_pod(key, addr, v1, prefix, power)
            (done if gone else failed).append(key)
            self.metrics.recoveries.labels("ok" if gone else "failed").inc()
            if not gone:
                self._event(obj, "Warning", RECOVER_FAILED, f"{key}: {msg}")
            elif msg != "recovered":
                log.info("%s: %s", key, msg)
        if done:
            obj = self._edit_finalizers(obj, remove=done)
            self._event(obj, "Normal", RECOVERED, f"{why}: recovered {', '.join(done)}")
        if failed:
            raise RecoverPending(f"recovery pending on {', '.join(failed)}")
        return obj

    def finish(self, obj: dict) -> None:
        """Deletion: recover every injected pod, then let the object go."""
        obj = self._recover_all(obj, why="deleted")
        try:
            self._patch_status(obj, {"experiment": {"phase": "Finished",
                                                    "endTime": rfc3339(self.clock())}})
        except Exception:  # noqa: BLE001 - the object may already be gone
            pass


class RecoverPending(RuntimeError):
    """Some pods could not be recovered yet; the caller retries (their finalizers stay)."""
