"""controller/: the IoChaos spec, Go durations, robfig cron, 0.9's selection and modes, and the
injure request a spec becomes. Plain values against 0.9.1's rules."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import pytest

from controller.cron import CronError, parse_cron
from controller.duration import DurationError, format_duration, parse_duration
from controller.selection import SelectionError, filter_by_mode, mode_count, select_pods
from controller.sidecar import build_request, set_rpc_name, sidecar_addr, sidecar_port
from controller.spec import SpecError, parse_selector, parse_spec

UTC = dt.timezone.utc


def spec(**kw) -> dict:
    base = {"action": "delay", "mode": "one", "delay": "100ms", "layer": "fs",
            "selector": {"labelSelectors": {"app": "etcd"}}}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


# --------------------------------------------------------------------------- durations
@pytest.mark.parametrize("text,ns", [
    ("100ms", 100_000_000), ("400s", 400 * 10**9), ("10m", 600 * 10**9), ("0", 0),
    ("1h2m3.5s", 3723_500_000_000), (".5s", 500_000_000), ("1.s", 10**9), ("+2us", 2000),
    ("3µs", 3000), ("3μs", 3000), ("-1.5s", -1_500_000_000), ("1.0000000001h", 3600_000_000_360),
])
def test_go_durations_parse_as_go_does(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "1", "10x", ".s", "--1s", "1s2", "1 s", "s",
                                  "9223372036854775808ns", "1e3s"])
def test_bad_go_durations_are_refused(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize("ns,text", [(0, "0s"), (100_000_000, "100ms"), (1500, "1.5µs"),
                                     (9900 * 10**9, "2h45m0s"), (-1_500_000_000, "-1.5s"),
                                     (3723_500_000_000, "1h2m3.5s"), (999, "999ns")])
def test_go_duration_string(ns: int, text: str) -> None:
    assert format_duration(ns) == text


# --------------------------------------------------------------------------------- spec
def test_defaults_of_the_0_9_delay_example() -> None:
    s = parse_spec(spec(duration="400s", scheduler={"cron": "@every 10m"}))
    assert (s.percent, s.errno, s.methods, s.addr, s.path) == (100, None, (), "", "")
    assert s.delay_us == 100_000 and s.duration_ns == 400 * 10**9 and s.scheduled
    assert s.selector.label_selectors == {"app": "etcd"}


def test_errno_example_is_random_errno_on_every_method() -> None:
    s = parse_spec(spec(action="errno", delay=None, percent="50"))
    req = build_request(s)
    assert (req.random, req.errno, req.pct, req.delay, list(req.methods)) == (True, 0, 50, 0, [])
    assert set_rpc_name(s) == "SetFaultAll"


def test_mixed_with_errno_and_methods_is_setfault() -> None:
    s = parse_spec(spec(action="mixed", errno="5", methods=["read", "write"], path="^db/"))
    req = build_request(s)
    assert (req.random, req.errno, req.delay, req.path) == (False, 5, 100_000, "^db/")
    assert list(req.methods) == ["read", "write"] and set_rpc_name(s) == "SetFault"


def test_delay_action_ignores_errno_as_0_9_did() -> None:
    req = build_request(parse_spec(spec(errno="not-checked-for-delay")))
    assert (req.random, req.errno, req.delay) == (False, 0, 100_000)


@pytest.mark.parametrize("changes,message", [
    ({"action": None}, "spec.action: required"),
    ({"action": "corrupt"}, "spec.action: unknown action 'corrupt'"),
    ({"mode": None}, "spec.mode: required"),
    ({"mode": "some"}, "spec.mode: unknown mode 'some'"),
    ({"mode": "fixed"}, "spec.value: required with mode fixed"),
    ({"mode": "fixed", "value": "0"}, "spec.value: must be greater than 0"),
    ({"mode": "fixed", "value": "two"}, "spec.value: 'two' is not an integer"),
    ({"mode": "fixed-percent", "value": "101"}, "spec.value: a percentage in 1..100"),
    ({"mode": "random-max-percent", "value": "0"}, "spec.value: a percentage in 1..100"),
    ({"delay": None}, "spec.delay: required"),
    ({"delay": "10x"}, 'spec.delay: unknown unit "x"'),
    ({"delay": "-1s"}, "spec.delay: must not be negative"),
    ({"delay": "72m"}, "spec.delay: '72m' exceeds the protocol's limit"),
    ({"action": "errno", "errno": "EIO"}, "spec.errno: 'EIO' is not an integer"),
    ({"action": "errno", "errno": "512"}, "spec.errno: must be in 1..511"),
    ({"action": "errno", "errno": "0"}, "spec.errno: must be in 1..511"),
    ({"percent": "0"}, "spec.percent: must be in 1..100"),
    ({"percent": "101"}, "spec.percent: must be in 1..100"),
    ({"percent": "50%"}, "spec.percent: '50%' is not an integer"),
    ({"percent": 50}, "spec.percent: must be a string"),
    ({"duration": "10s"}, "spec.duration: set without spec.scheduler"),
    ({"scheduler": {"cron": "@every 1m"}}, "spec.scheduler: set without spec.duration"),
    ({"scheduler": {"cron": "@every 1m"}, "duration": "0s"}, "spec.duration: must be positive"),
    ({"scheduler": {"cron": "@every 1m"}, "duration": "soon"}, "spec.duration: invalid duration"),
    ({"scheduler": {"cron": "* * * * * *"}, "duration": "1s"}, "spec.scheduler.cron: expected exactly 5"),
    ({"scheduler": {}, "duration": "1s"}, "spec.scheduler.cron: required"),
    ({"layer": None}, "spec.layer: required"),
    ({"layer": "block"}, "spec.layer: must be fs"),
    ({"addr": "65533"}, "spec.addr: must be :PORT"),
    ({"addr": "10.0.0.1:65533"}, "spec.addr: must be :PORT"),
    ({"path": "db/(unclosed"}, "spec.path: invalid RE2 regex"),
    ({"methods": "read"}, "spec.methods: must be a list of strings"),
    ({"selector": {"labelSelectors": {"app": 1}}}, "spec.selector.labelSelectors: must be a map"),
    ({"selector": {"pods": {"demo": "web-0"}}}, "spec.selector.pods.demo: must be a list"),
])
def test_invalid_specs_name_the_field_in_one_line(changes: dict, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec(**changes))
    text = str(exc.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_unknown_method_is_a_warning_not_an_error() -> None:
    s = parse_spec(spec(methods=["read", "typo"]))
    assert s.methods == ("read", "typo")
    assert s.warnings == ("spec.methods: 'typo' is not a 0.9 method name; the sidecar ignores it",)


def test_go_atoi_forms_of_value_and_percent() -> None:
    assert parse_spec(spec(mode="fixed", value="+2", percent="050")).percent == 50
    with pytest.raises(SpecError):
        parse_spec(spec(mode="fixed", value=" 2"))
    with pytest.raises(SpecError):
        parse_spec(spec(mode="fixed", value="1_0"))


# --------------------------------------------------------------------------------- cron
T0 = dt.datetime(2024, 3, 1, 10, 7, 30, 500000, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize("expr,after,expected", [
    ("@every 10m", T0, dt.datetime(2024, 3, 1, 10, 17, 30, tzinfo=UTC)),
    ("@every 1.5s", T0, dt.datetime(2024, 3, 1, 10, 7, 31, tzinfo=UTC)),   # whole seconds
    ("@every 100ms", T0, dt.datetime(2024, 3, 1, 10, 7, 31, tzinfo=UTC)),  # at least 1 s
    ("@hourly", T0, dt.datetime(2024, 3, 1, 11, 0, tzinfo=UTC)),
    ("@daily", T0, dt.datetime(2024, 3, 2, 0, 0, tzinfo=UTC)),
    ("@midnight", T0, dt.datetime(2024, 3, 2, 0, 0, tzinfo=UTC)),
    ("@weekly", T0, dt.datetime(2024, 3, 3, 0, 0, tzinfo=UTC)),
    ("@monthly", T0, dt.datetime(2024, 4, 1, 0, 0, tzinfo=UTC)),
    ("@yearly", T0, dt.datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
    ("@annually", T0, dt.datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
    ("*/15 * * * *", T0, dt.datetime(2024, 3, 1, 10, 15, tzinfo=UTC)),
    ("5/20 * * * *", T0, dt.datetime(2024, 3, 1, 10, 25, tzinfo=UTC)),     # N/step = N-59/step
    ("0 0 * * mon", T0, dt.datetime(2024, 3, 4, 0, 0, tzinfo=UTC)),
    ("0 0 ? JAN-mar SUN", T0, dt.datetime(2024, 3, 3, 0, 0, tzinfo=UTC)),
    # day-of-month and day-of-week both restricted: either matches (robfig, Vixie cron)
    ("0 0 13 * 5", T0, dt.datetime(2024, 3, 8, 0, 0, tzinfo=UTC)),
    ("0 0 1 * 1", T0, dt.datetime(2024, 3, 4, 0, 0, tzinfo=UTC)),
    # robfig: "*/2" is no star (step > 1), so odd days OR Mondays (AND would give the 11th)
    ("0 0 */2 * 1", T0, dt.datetime(2024, 3, 3, 0, 0, tzinfo=UTC)),
    # a star day-of-week leaves day-of-month alone
    ("0 0 1 * *", T0, dt.datetime(2024, 4, 1, 0, 0, tzinfo=UTC)),
    ("TZ=Europe/Berlin 0 9 * * *", T0, dt.datetime(2024, 3, 2, 8, 0, tzinfo=UTC)),
])
def test_cron_next_as_robfig(expr: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert parse_cron(expr).next(after) == expected


@pytest.mark.parametrize("expr,message", [
    ("* * * * * *", "expected exactly 5 fields, found 6"),   # 0.9 used no seconds field
    ("* * * *", "expected exactly 5 fields, found 4"),
    ("0 0 * * 7", "day-of-week field: end of range (7) above maximum (6)"),
    ("60 * * * *", "minute field: end of range (60) above maximum (59)"),
    ("0 0 0 * *", "day-of-month field: beginning of range (0) below minimum (1)"),
    ("5-1 * * * *", "minute field: beginning of range (5) beyond end of range (1)"),
    ("*/0 * * * *", "minute field: step of range should be a positive number"),
    ("1-2-3 * * * *", "minute field: too many hyphens"),
    ("1/2/3 * * * *", "minute field: too many slashes"),
    ("x * * * *", "minute field: failed to parse int from x"),
    ("@Hourly", "unrecognized descriptor: @Hourly"),
    ("@every", "unrecognized descriptor: @every"),
    ("@every 10", "failed to parse duration @every 10"),
    ("TZ=Nowhere/City * * * * *", "provided bad location Nowhere/City"),
    ("0 0 30 2 *", "'0 0 30 2 *' never fires"),
    ("", "empty spec string"),
])
def test_cron_rejects_what_robfig_rejected(expr: str, message: str) -> None:
    with pytest.raises(CronError) as exc:
        parse_cron(expr)
    assert message in str(exc.value)


# ---------------------------------------------------------------------------- selection
def pod(ns: str, name: str, labels=None, node="n1", phase="Running", ann=None, ip="10.0.0.1"):
    return {"metadata": {"namespace": ns, "name": name, "labels": labels or {},
                         "annotations": ann or {}},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "podIP": ip, "hostIP": "192.0.2.1"}}


class Pods:
    """A PodSource over a list (label and field selectors by equality, as 0.9 sent them)."""

    FIELDS = {"metadata.name": lambda p: p["metadata"]["name"],
              "metadata.namespace": lambda p: p["metadata"]["namespace"],
              "spec.nodeName": lambda p: p["spec"]["nodeName"],
              "status.phase": lambda p: p["status"]["phase"]}

    def __init__(self, pods, nodes=()):
        self.pods, self.nodes = list(pods), list(nodes)

    def get_pod(self, ns, name):
        return next((p for p in self.pods if p["metadata"]["namespace"] == ns
                     and p["metadata"]["name"] == name), None)

    def list_pods(self, labels, fields):
        return [p for p in self.pods
                if all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())
                and all(self.FIELDS[k](p) == v for k, v in fields.items())]

    def get_node(self, name):
        return next((n for n in self.nodes if n["metadata"]["name"] == name), None)

    def list_nodes(self, labels):
        return [n for n in self.nodes
                if all(n["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())]


CLUSTER = Pods([
    pod("demo", "etcd-0", {"app": "etcd"}, node="n1"),
    pod("demo", "etcd-1", {"app": "etcd"}, node="n2", ann={"chaos": "yes"}),
    pod("demo", "etcd-2", {"app": "etcd"}, node="n3", phase="Pending"),
    pod("prod", "etcd-0", {"app": "etcd"}, node="n1"),
    pod("demo", "web-0", {"app": "web"}, node="n1"),
], nodes=[{"metadata": {"name": "n1", "labels": {"zone": "a"}}},
          {"metadata": {"name": "n2", "labels": {"zone": "b"}}},
          {"metadata": {"name": "n3", "labels": {"zone": "b"}}}])


def names(pods) -> list[str]:
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]


@pytest.mark.parametrize("selector,expected", [
    ({"labelSelectors": {"app": "etcd"}}, ["demo/etcd-0", "demo/etcd-1", "demo/etcd-2", "prod/etcd-0"]),
    ({"labelSelectors": {"app": "etcd"}, "namespaces": ["demo"]},
     ["demo/etcd-0", "demo/etcd-1", "demo/etcd-2"]),
    ({"labelSelectors": {"app": "etcd"}, "namespaces": ["!demo"]}, ["prod/etcd-0"]),
    ({"labelSelectors": {"app": "etcd"}, "podPhaseSelectors": ["Running"]},
     ["demo/etcd-0", "demo/etcd-1", "prod/etcd-0"]),
    ({"labelSelectors": {"app": "etcd"}, "podPhaseSelectors": ["!Running"]}, ["demo/etcd-2"]),
    ({"labelSelectors": {"app": "etcd"}, "annotationSelectors": {"chaos": "yes"}}, ["demo/etcd-1"]),
    ({"labelSelectors": {"app": "etcd"}, "nodes": ["n1"]}, ["demo/etcd-0", "prod/etcd-0"]),
    ({"labelSelectors": {"app": "etcd"}, "nodeSelectors": {"zone": "b"}}, ["demo/etcd-1", "demo/etcd-2"]),
    ({"labelSelectors": {"app": "etcd"}, "nodes": ["n1"], "nodeSelectors": {"zone": "b"}},
     ["demo/etcd-0", "demo/etcd-1", "demo/etcd-2", "prod/etcd-0"]),
    ({"fieldSelectors": {"metadata.name": "etcd-0"}}, ["demo/etcd-0", "prod/etcd-0"]),
    # pods: exactly those (missing skipped), no other filter applies
    ({"pods": {"demo": ["web-0", "nope"]}, "labelSelectors": {"app": "etcd"},
      "namespaces": ["prod"]}, ["demo/web-0"]),
])
def test_selection_as_0_9(selector: dict, expected: list[str]) -> None:
    assert names(select_pods(parse_selector(selector), CLUSTER)) == expected


@pytest.mark.parametrize("selector,message", [
    ({"labelSelectors": {"app": "nothing"}}, "no pod is selected"),
    ({"pods": {"demo": ["nope"]}}, "no pod is selected"),
    ({"nodes": ["n9"]}, "selector.nodes: node 'n9' not found"),
    ({"namespaces": ["a=b"]}, "selector.namespaces: unsupported operator"),
])
def test_selection_errors(selector: dict, message: str) -> None:
    with pytest.raises(SelectionError) as exc:
        select_pods(parse_selector(selector), CLUSTER)
    assert message in str(exc.value)


@pytest.mark.parametrize("mode,value,n,count", [
    ("one", "", 7, 1), ("all", "", 7, 7), ("fixed", "2", 7, 2), ("fixed", "9", 7, 7),
    ("fixed-percent", "50", 7, 3),   # floor(3.5)
    ("fixed-percent", "10", 3, 0),   # floor(0.3): nobody, not an error (0.9)
    ("fixed-percent", "100", 7, 7), ("fixed-percent", "34", 3, 1),
])
def test_mode_arithmetic(mode: str, value: str, n: int, count: int) -> None:
    assert mode_count(mode, value, n, random.Random(1)) == count
    picked = filter_by_mode([pod("d", f"p{i}") for i in range(n)], mode, value, random.Random(1))
    assert len(picked) == count and len({p["metadata"]["name"] for p in picked}) == count


def test_random_max_percent_draws_0_to_max_inclusive() -> None:
    rng = random.Random(7)
    counts = Counter(mode_count("random-max-percent", "50", 10, rng) for _ in range(3000))
    # p uniform over 0..50 -> floor(10p/100) in 0..5, 5 only at p == 50 (1 in 51)
    assert set(counts) == {0, 1, 2, 3, 4, 5}
    assert 20 < counts[5] < 110 and counts[0] > 250


@pytest.mark.parametrize("mode,value,message", [
    ("fixed", "0", "below or equal 0"), ("fixed-percent", "0", "below or equal 0"),
    ("random-max-percent", "101", "invalid"), ("fixed", "x", "not an integer"),
    ("some", "", "not supported")])
def test_mode_errors(mode: str, value: str, message: str) -> None:
    with pytest.raises(SelectionError) as exc:
        mode_count(mode, value, 3, random.Random())
    assert message in str(exc.value)


def test_one_mode_picks_every_pod_eventually() -> None:
    pods = [pod("d", f"p{i}") for i in range(4)]
    rng = random.Random(3)
    seen = {filter_by_mode(pods, "one", "", rng)[0]["metadata"]["name"] for _ in range(200)}
    assert seen == {"p0", "p1", "p2", "p3"}


# ------------------------------------------------------------------- sidecar address
def with_containers(*containers, ip="10.1.2.3", init=()) -> dict:
    p = pod("demo", "etcd-0", ip=ip)
    p["spec"]["containers"] = list(containers)
    p["spec"]["initContainers"] = list(init)
    return p


SEED_SIDECAR = {"name": "chaosfs", "ports": [{"containerPort": 65533}],
                "command": ["/usr/local/bin/chaosfs", "-addr=:65533", "-pidfile=/tmp/fuse/pid"]}


@pytest.mark.parametrize("containers,port,how", [
    ([{"name": "etcd"}, SEED_SIDECAR], 65533, "-addr=:65533"),
    ([{"name": "x", "command": ["chaosfs"], "args": ["-addr", "127.0.0.1:7000"]}], 7000, "-addr=127.0.0.1:7000"),
    ([{"name": "x", "command": ["sh", "-c", "exec /bin/chaosfs --addr=[::]:7001 -pidfile=p"]}], 7001, "-addr"),
    ([{"name": "chaosfs", "image": "i", "ports": [{"containerPort": 7002}]}], 7002, "containerPort"),
    ([{"name": "chaosfs", "command": ["/usr/local/bin/chaosfs", "-pidfile=p"]}], 65534, "default"),
])
def test_sidecar_port_from_the_pod(containers, port, how) -> None:
    found = sidecar_port(with_containers(*containers))
    assert found is not None and found[0] == port and how in found[1]


def test_sidecar_addr_rules() -> None:
    seed = with_containers({"name": "etcd"}, SEED_SIDECAR)
    assert sidecar_addr(seed, "") == "10.1.2.3:65533"              # found in the pod
    assert sidecar_addr(seed, ":65534") == "10.1.2.3:65534"        # spec.addr wins (0.9)
    assert sidecar_addr(with_containers(SEED_SIDECAR, ip="fd00::5"), "") == "[fd00::5]:65533"
    native = with_containers({"name": "etcd"}, init=[{**SEED_SIDECAR, "restartPolicy": "Always"}])
    assert sidecar_addr(native, "") == "10.1.2.3:65533"
    from controller.sidecar import SidecarError
    with pytest.raises(SidecarError, match="has no chaosfs container"):
        sidecar_addr(with_containers({"name": "etcd"}), "")
    with pytest.raises(SidecarError, match="has no IP yet"):
        sidecar_addr(with_containers(SEED_SIDECAR, ip=""), "")


# ------------------------------------------------------------------ spec.chaosfs (v1 rules)
from controller.extension import rule_prefix  # noqa: E402
from controller.sidecar import rule_pb  # noqa: E402


def v1spec(*rules: dict, **kw) -> dict:
    base = {"mode": "one", "layer": "fs", "selector": {"labelSelectors": {"app": "etcd"}},
            "chaosfs": {"rules": list(rules)}}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def test_v1_rules_parse_to_the_sidecars_units_and_messages() -> None:
    s = parse_spec(v1spec(
        {"name": "sst-rot", "methods": ["read"], "glob": "**/*.sst", "probability": 2.5,
         "corrupt": {"mode": "bitflip", "length": 4, "occurrences": 2}, "maxHits": 10},
        {"methods": ["write", "fsync"], "path": "^wal/", "errno": "ENOSPC", "delay": "20ms",
         "jitter": "1.5ms", "ttl": "10m"},
        {"methods": ["read"], "short": {"fraction": 0.25}},
        duration="1m", scheduler={"cron": "@every 5m"}))
    assert s.v1 and s.fault == "chaosfs" and s.action == "" and s.scheduled
    a, b, c = s.rules
    assert (a.name, a.glob, a.path, a.probability, a.max_hits, a.budgeted) == \
        ("sst-rot", True, "**/*.sst", 2.5, 10, True)
    assert (a.corrupt.mode, a.corrupt.length, a.corrupt.occurrences) == ("bitflip", 4, 2)
    assert (b.name, b.errno, b.delay_us, b.jitter_us, b.ttl_seconds, b.glob) == \
        ("1", 28, 20_000, 1_500, 600.0, False)
    assert (c.name, c.short, c.budgeted, c.actions()) == ("2", 0.25, False, ["short"])
    # the AddRule message the sidecar gets
    pb = rule_pb("iochaos/demo/x/sst-rot", a)
    assert (pb.id, list(pb.methods), pb.path, pb.path_kind, pb.probability, pb.max_hits) == \
        ("iochaos/demo/x/sst-rot", ["read"], "**/*.sst", 1, 2.5, 10)
    assert (pb.corrupt.mode, pb.corrupt.length, pb.corrupt.occurrences) == (2, 4, 2)
    assert not pb.HasField("errno") and not pb.HasField("delay") and not pb.HasField("short")
    pb = rule_pb("id", b)
    assert (pb.errno.code, pb.errno.random, pb.delay.fixed_us, pb.delay.jitter_us,
            pb.ttl_seconds, pb.path_kind) == (28, False, 20_000, 1_500, 600.0, 0)
    assert rule_pb("id", c).short.fraction == 0.25
    (t,) = parse_spec(v1spec({"methods": ["write"], "torn": {"sector": 4096}})).rules
    assert (t.torn, t.actions(), rule_pb("id", t).torn.sector) == (4096, ["torn"], 4096)


@pytest.mark.parametrize("value,code,random_", [
    (5, 5, False), ("5", 5, False), ("EIO", 5, False), ("EDQUOT", 122, False),
    ("random", 0, True)])
def test_v1_errno_forms(value, code: int, random_: bool) -> None:
    (r,) = parse_spec(v1spec({"errno": value})).rules
    assert (r.errno, r.random_errno) == (code, random_)
    pb = rule_pb("x", r)
    assert (pb.errno.code, pb.errno.random) == (code, random_)


R0 = "spec.chaosfs.rules[0]"


@pytest.mark.parametrize("spec_,message", [
    # 0.9's fault and the rules are alternatives
    (v1spec({"errno": 5}, action="errno"), "spec.action: part of 0.9's fault, not allowed "
                                           "with spec.chaosfs"),
    (v1spec({"errno": 5}, percent="50"), "spec.percent: part of 0.9's fault"),
    (v1spec({"errno": 5}, path="db"), "spec.path: part of 0.9's fault"),
    (v1spec({"errno": 5}, methods=["read"]), "spec.methods: part of 0.9's fault"),
    ({"mode": "one", "layer": "fs"}, "spec.action: required, one of delay, errno, mixed (or "
                                     "spec.chaosfs.rules)"),
    # the shared fields keep their rules
    (v1spec({"errno": 5}, mode="fixed"), "spec.value: required with mode fixed"),
    (v1spec({"errno": 5}, duration="1m"), "spec.duration: set without spec.scheduler"),
    # the block and each rule
    (v1spec(), "spec.chaosfs.rules: required, a list of 1..64 rules"),
    ({**v1spec(), "chaosfs": {"rule": []}}, "spec.chaosfs.rule: unknown field"),
    ({**v1spec(), "chaosfs": "errno"}, "spec.chaosfs: must be an object"),
    (v1spec(*[{"errno": 5}] * 65), "spec.chaosfs.rules: 65 rules, at most 64"),
    (v1spec({}), f"{R0}: a rule needs at least one of errno, delay, corrupt, short"),
    (v1spec({"errno": 5, "maxHit": 3}), f"{R0}.maxHit: unknown field (known: name, "),
    (v1spec({"errno": "EFOO"}), f"{R0}.errno: unknown errno 'EFOO'"),
    (v1spec({"errno": 512}), f"{R0}.errno: 512 is outside 1..511"),
    (v1spec({"errno": 0}), f"{R0}.errno: must be in 1..511"),
    (v1spec({"errno": True}), f"{R0}.errno: must be a number, a name such as EIO, or random"),
    (v1spec({"errno": "ENOSYS"}), f"{R0}.errno: ENOSYS on 'open' would make the kernel"),
    (v1spec({"errno": 5, "methods": ["read", "reed"]}), f"{R0}.methods[1]: unknown method 'reed'"),
    (v1spec({"errno": 5, "methods": "read"}), f"{R0}.methods: must be a list of strings"),
    (v1spec({"errno": 5, "path": "db/(", }), f"{R0}.path: invalid regex 'db/('"),
    (v1spec({"errno": 5, "glob": "db/[a"}), f"{R0}.glob: unterminated '[' in glob"),
    (v1spec({"errno": 5, "glob": "*.sst", "path": "sst"}), f"{R0}.glob: give path (an RE2 "
                                                          "regex) or glob, not both"),
    (v1spec({"errno": 5, "probability": 100.5}), f"{R0}.probability: 100.5 is outside 0..100"),
    (v1spec({"errno": 5, "probability": "50"}), f"{R0}.probability: must be a number"),
    (v1spec({"delay": "10x"}), f'{R0}.delay: unknown unit "x"'),
    (v1spec({"delay": "-1s"}), f"{R0}.delay: must be at least 0"),
    (v1spec({"delay": "72m"}), f"{R0}.delay: must be between 0 and 4294967295 µs"),
    (v1spec({"delay": 100}), f"{R0}.delay: must be a Go duration string"),
    (v1spec({"delay": "1ms", "jitter": "2h"}), f"{R0}.jitter: must be between 0 and"),
    (v1spec({"errno": 5, "ttl": "0s"}), f"{R0}.ttl: must be positive"),
    (v1spec({"errno": 5, "ttl": "169h"}), f"{R0}.ttl: must be between 0 and 604800 seconds"),
    (v1spec({"errno": 5, "maxHits": 0}), f"{R0}.maxHits: must be in 1..9223372036854775807"),
    (v1spec({"errno": 5, "maxHits": 2**64}), f"{R0}.maxHits: must be in 1..9223372036854775807"),
    (v1spec({"errno": 5, "maxHits": 1.5}), f"{R0}.maxHits: must be an integer"),
    (v1spec({"corrupt": {"mode": "shred"}}), f"{R0}.corrupt.mode: unknown mode 'shred'"),
    (v1spec({"corrupt": {"length": 0}}), f"{R0}.corrupt.length: must be 1..1048576 bytes"),
    (v1spec({"corrupt": {"occurrences": 2000}}), f"{R0}.corrupt.occurrences: must be 1..1024"),
    (v1spec({"corrupt": {}, "methods": ["fsync"]}), f"{R0}.methods: corrupt and short act on "
                                                    "read/write"),
    (v1spec({"short": {}}), f"{R0}.short.fraction: required"),
    (v1spec({"torn": {"sector": 1024}}), f"{R0}.torn.sector: must be 512 or 4096"),
    (v1spec({"torn": {"sector": 0}}), f"{R0}.torn.sector: must be 512 or 4096"),
    (v1spec({"torn": {}}), f"{R0}.torn.sector: required (512 or 4096)"),
    (v1spec({"torn": {"sector": 512}, "methods": ["read"]}), f"{R0}.methods: torn acts on "
                                                             "write"),
    (v1spec({"short": {"fraction": 1}}), f"{R0}.short.fraction: must be in (0, 1), got 1"),
    (v1spec({"errno": 5, "name": "Wal"}), f"{R0}.name: must be a DNS label"),
    (v1spec({"errno": 5, "name": "a/b"}), f"{R0}.name: must be a DNS label"),
    (v1spec({"errno": 5, "name": "1"}, {"errno": 5}), "spec.chaosfs.rules[1].name: '1' is "
                                                      "also rule [0]'s name"),
])
def test_invalid_v1_specs_name_the_field_in_one_line(spec_: dict, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec_)
    text = str(exc.value)
    assert text.startswith(message), text
    assert "\n" not in text


def power_spec(pc: dict, **kw) -> dict:
    base = v1spec(**kw)
    base["chaosfs"] = {"powerCut": pc}
    return base


def test_power_cut_parses_to_the_sidecars_units() -> None:
    s = parse_spec(power_spec({"after": "90s", "maxUndo": "512Mi", "keepProbability": 0.25,
                               "torn": {}, "block": True, "hold": "1.5s", "seed": 7}))
    pc = s.power_cut
    assert s.v1 and s.rules == () and s.fault == "chaosfs"
    assert (pc.after_us, pc.max_undo, pc.model, pc.keep_probability, pc.torn_sector, pc.block,
            pc.hold_us, pc.seed) == (90_000_000, 512 << 20, "posix", 0.25, 512, True, 1_500_000, 7)
    pc = parse_spec(power_spec({"after": "1m", "maxUndo": 4096})).power_cut
    assert (pc.max_undo, pc.keep_probability, pc.torn_sector, pc.block, pc.hold_us, pc.seed) == \
        (4096, 0.0, 0, False, 0, None)
    assert parse_spec(power_spec({"after": "1m", "maxUndo": "2G"})).power_cut.max_undo == 2 * 10**9
    both = parse_spec({**v1spec({"errno": 5}), "chaosfs": {"rules": [{"errno": 5}],
                                                          "powerCut": {"after": "1s"}}})
    assert len(both.rules) == 1 and both.power_cut.after_us == 1_000_000


PC = "spec.chaosfs.powerCut"


@pytest.mark.parametrize("spec_,message", [
    (power_spec({}), f"{PC}.after: required"),
    (power_spec({"after": "0s"}), f"{PC}.after: must be positive"),
    (power_spec({"after": 30}), f"{PC}.after: must be a Go duration string"),
    (power_spec({"after": "1s", "model": "ext4"}), f"{PC}.model: unknown model 'ext4'"),
    (power_spec({"after": "1s", "maxUndo": "1.5Gi"}), f"{PC}.maxUndo: must be bytes or a quantity"),
    (power_spec({"after": "1s", "maxUndo": 0}), f"{PC}.maxUndo: must be more than 0 bytes"),
    (power_spec({"after": "1s", "keepProbability": 1.5}), f"{PC}.keepProbability: must be within 0..1"),
    (power_spec({"after": "1s", "torn": {"sector": 1000}}), f"{PC}.torn.sector: must be 512 or 4096"),
    (power_spec({"after": "1s", "block": "yes"}), f"{PC}.block: must be true or false"),
    (power_spec({"after": "1s", "hold": "2h"}), f"{PC}.hold: at most 1h"),
    (power_spec({"after": "1s", "seed": -1}), f"{PC}.seed: must be in 0.."),
    (power_spec({"after": "1s", "cut": 1}), f"{PC}.cut: unknown field"),
    (power_spec({"after": "10m"}, duration="5m", scheduler={"cron": "@every 1h"}),
     f"{PC}.after: longer than spec.duration"),
])
def test_invalid_power_cuts_name_the_field_in_one_line(spec_: dict, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec_)
    assert str(exc.value).startswith(message), str(exc.value)


def test_rule_ids_are_the_experiments_own_and_fit_the_daemon() -> None:
    assert rule_prefix({"namespace": "demo", "name": "io-wal", "uid": "u"}) == \
        "iochaos/demo/io-wal/"
    uid = "7c1f3c52-4b0e-4f43-9d1e-2f6f6f0c7a11"
    long = {"namespace": "n" * 63, "name": "x" * 200, "uid": uid}
    assert rule_prefix(long) == f"iochaos/{uid}/"
    # the longest rule name still makes an id the daemon takes (1..128 characters)
    assert len(rule_prefix(long) + "r" * 63) <= 128
    assert len(rule_prefix({"namespace": "n" * 25, "name": "x" * 31}) + "r" * 63) <= 128
