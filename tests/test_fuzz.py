"""Hypothesis fuzzing of both gRPC APIs (structured and raw-byte requests) against one real
daemon, checked against a model of the rule table; and of the admission webhook over HTTPS.

The model only follows calls the daemon accepted, and an oracle of "certainly invalid"
values (unknown methods, probability outside 0..100 or NaN, errno > 511, delay > 2^32 µs, ...)
checks that those were refused. Regex validity is left to RE2: a refused path must say
`path` in the error."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Optional

import grpc
import re2
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings, strategies as st

from chaosfs.faults.methods import ALL_METHODS, COMPAT_METHODS
from chaosfs.proto import faults_pb2 as fpb
from tests.compat09 import Injure09
from tests.conftest import make_daemon
from tests.reliability_util import record

MAX_DELAY_US = (1 << 32) - 1  # 0.9's uint32 µs
MAX_ERRNO = 511  # 512 and up: the kernel refuses the reply
STICKY = {"open", "opendir", "create", "flush", "fsync", "fsyncdir", "access", "getxattr",
          "setxattr", "listxattr", "removexattr", "rename", "allocate", "lseek", "copy_file_range"}
OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
COUNTS: dict[str, int] = {}


def count(name: str, n: int = 1) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + n


@pytest.fixture(scope="module")
def fz(tmp_path_factory):
    d = make_daemon(tmp_path_factory.mktemp("fuzz"))
    try:
        d.start()
        d.channel = grpc.insecure_channel(d.addr)
        d.inj = Injure09(d.addr)
        yield d
        assert d.proc.poll() is None, "the daemon died during fuzzing"
        h = health_pb2_grpc.HealthStub(d.channel)
        assert h.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        # Fuzzing leaves arbitrary rules behind; the mount must work once they are cleared.
        d.inj.RecoverAll(d.inj.empty(), timeout=10)
        (d.mountpoint / "still-works").write_bytes(b"ok")
        assert (d.original / "still-works").read_bytes() == b"ok"
        d.inj.close()
        d.channel.close()
        record("fuzz", **COUNTS)
    finally:
        d.cleanup()  # also when an assertion above fails: no mount left behind


def raw(d, method: str, body: bytes, timeout: float = 20) -> tuple[grpc.StatusCode, bytes, str]:
    call = d.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        return OK, call(body, timeout=timeout), ""
    except grpc.RpcError as e:
        return e.code(), b"", e.details() or ""


# ---- the model --------------------------------------------------------------------------

def v1_key(r: Any) -> tuple:
    corrupt = None
    if r.HasField("corrupt"):
        corrupt = (r.corrupt.mode, r.corrupt.length or 1, r.corrupt.occurrences or 1)
    return (tuple(sorted(set(r.methods))), r.path, r.path_kind,  # duplicates collapse
            r.probability if r.HasField("probability") else 100.0,
            r.errno.code, r.errno.random, r.delay.fixed_us, r.delay.jitter_us, corrupt,
            r.short.fraction if r.HasField("short") else 0.0, r.ttl_seconds, r.max_hits)


def listed_key(r: Any) -> tuple:
    corrupt = (r.corrupt.mode, r.corrupt.length, r.corrupt.occurrences) if r.HasField("corrupt") else None
    return (tuple(r.methods), r.path, r.path_kind, r.probability, r.errno.code, r.errno.random,
            r.delay.fixed_us, r.delay.jitter_us, corrupt,
            r.short.fraction if r.HasField("short") else 0.0, r.ttl_seconds, r.max_hits)


def compat_key(m: str, req: Any) -> tuple:
    # 0.9: fires when rand.Intn(99) < pct; ENOSYS where the kernel would switch m off: EOPNOTSUPP
    prob = 100.0 if req.pct >= 99 else req.pct * 100.0 / 99.0
    code = 95 if req.errno == 38 and m in STICKY else req.errno
    return ((m,), req.path, fpb.REGEX, prob, code,
            bool(req.random and not req.errno), req.delay, 0, None, 0.0, 0.0, 0)


def nan_or_outside(x: float, lo: float, hi: float) -> bool:
    return x != x or not lo <= x <= hi


def v1_certainly_invalid(r: Any) -> Optional[str]:
    """The field the daemon must name when refusing this rule, if it surely must."""
    if any(m not in ALL_METHODS for m in r.methods):
        return "methods"
    if r.HasField("probability") and nan_or_outside(r.probability, 0, 100):
        return "probability"
    if r.errno.code > MAX_ERRNO or (r.errno.code and r.errno.random):
        return "errno"
    if r.errno.code == 38 and (not r.methods or STICKY & set(r.methods)):
        return "errno"
    if r.delay.fixed_us > MAX_DELAY_US:
        return "delay"
    if r.delay.jitter_us > MAX_DELAY_US:
        return "delay.jitter"
    if r.HasField("corrupt"):
        if r.corrupt.mode not in (0, 1, 2):
            return "corrupt.mode"
        if r.corrupt.length > 1 << 20:
            return "corrupt.length"
        if r.corrupt.occurrences > 1024:
            return "corrupt.occurrences"
    short = r.short.fraction if r.HasField("short") else 0.0
    if short != short or not 0 <= short < 1:
        return "short.fraction"
    if nan_or_outside(r.ttl_seconds, 0, 7 * 24 * 3600):
        return "ttl"
    data = r.HasField("corrupt") or short
    if data and r.methods and not {"read", "write"} & set(r.methods):
        return "methods"
    if not (r.errno.code or r.errno.random or r.delay.fixed_us or r.delay.jitter_us or data):
        return "action"
    if len(r.id) > 128:
        return "id"
    if r.path_kind not in (0, 1):
        return "path_kind"
    if len(r.path) > 4096:
        return "path"
    if r.path_kind == 0 and not re2_compiles(r.path):
        return "path"
    return None


def re2_compiles(pattern: str) -> bool:
    """The model's own RE2 check (the daemon must agree: 0.9 used Go's RE2 semantics)."""
    opts = re2.Options()
    opts.log_errors = False
    try:
        re2.compile(pattern, opts)
        return True
    except re2.error:
        return False


class Model:
    def __init__(self) -> None:
        self.rules: dict[str, tuple] = {}

    def apply(self, method: str, req: Any, code: grpc.StatusCode, details: str, resp: Optional[bytes]) -> None:
        """Check the outcome of one call against the model, then follow it if accepted."""
        name = method.rsplit("/", 1)[1]
        count(f"{name}:{code.name}")
        if code == INVALID:
            count(f"invalid-field:{details.split(':')[0]}")
        if method.startswith("/chaosfs.v1.Faults/"):
            self._v1(name, req, code, details, resp)
        else:
            self._compat(name, req, code, details)

    def _v1(self, name: str, req: Any, code, details: str, resp: Optional[bytes]) -> None:
        if name == "AddRule":
            bad = v1_certainly_invalid(req.rule)
            if bad:
                assert code == INVALID and details.startswith(bad), (bad, code, details, req)
                return
            if req.rule.id and req.rule.id in self.rules:
                assert code == grpc.StatusCode.ALREADY_EXISTS, (code, details)
                return
            if code == INVALID:
                assert details.startswith("path"), details  # RE2 refused the pattern
                return
            assert code == OK, (code, details, req)
            rid = fpb.AddRuleResponse.FromString(resp).id
            assert rid and (rid == req.rule.id or not req.rule.id) and rid not in self.rules
            self.rules[rid] = v1_key(req.rule)
        elif name == "RemoveRule":
            if not req.ids:
                assert code == INVALID
            elif any(i not in self.rules for i in req.ids):
                assert code == grpc.StatusCode.NOT_FOUND, (code, details)
            else:
                assert code == OK, (code, details)
                assert fpb.RemoveRuleResponse.FromString(resp).removed == len(set(req.ids))
                for i in req.ids:
                    self.rules.pop(i, None)
        elif name == "Clear":
            assert code == OK
            assert fpb.ClearResponse.FromString(resp).removed == len(self.rules)
            self.rules.clear()
        else:  # ListRules, Stats: read-only
            assert code == OK, (name, code, details)

    def _compat(self, name: str, req: Any, code, details: str) -> None:
        if name in ("Methods", "Injected"):
            assert code == OK
        elif name == "RecoverAll":
            assert code == OK
            self.rules.clear()
        elif name == "RecoverMethod":
            assert code == OK, details  # 0.9: unknown names are ignored
            for m in req.methods:
                self.rules.pop(f"injure:{m}", None)
        else:  # SetFault / SetFaultAll
            methods = list(dict.fromkeys(req.methods)) if name == "SetFault" else list(COMPAT_METHODS)
            methods = [m for m in methods if m in COMPAT_METHODS]  # 0.9 ignored unknown names
            if req.errno > MAX_ERRNO:
                assert code == INVALID and details.startswith("errno"), details
                return
            if req.delay > MAX_DELAY_US:
                assert code == INVALID and details.startswith("delay"), details
                return
            if code == INVALID:
                assert details.startswith("path"), details
                return
            assert code == OK, (code, details)
            for m in methods:
                self.rules[f"injure:{m}"] = compat_key(m, req)

    def check(self, d) -> None:
        code, body, details = raw(d, "/chaosfs.v1.Faults/ListRules", b"")
        assert code == OK, details
        listed = {r.id: listed_key(r) for r in fpb.ListRulesResponse.FromString(body).rules}
        assert listed.keys() == self.rules.keys()
        for k, want in self.rules.items():
            got = listed[k]
            # floats travel as doubles both ways: compare exactly, NaN never gets in
            assert got == want, (k, got, want)
        injected = d.inj.Injected(d.inj.empty(), timeout=10).injected
        assert injected == bool(self.rules)


# ---- strategies -------------------------------------------------------------------------

PATHOLOGICAL = [
    "(a*)*b", "(a|aa)*$", "((a+)+)+c", "(x+x+)+y", "(?:x{1000}){1000}", "a{1001}", "(", "[",
    "\\", "(?P<n>x)", "(?=x)", "(a)\\1", ".*" * 400, "x" * 4097, "[[:alpha:]]+", "\\p{Greek}",
    "(?i)DB/.*", "^$", "", "db/**", "[!a-z]*.sst", "[", "**/x/**", "\x00", "é/ü/日本",
]
def mostly(good, bad):
    """`good` about four times in five: enough accepted calls to exercise the model."""
    return st.one_of(good, good, good, good, bad)


methods_st = mostly(st.lists(st.sampled_from(ALL_METHODS), max_size=3),
                    st.lists(st.sampled_from(ALL_METHODS) | st.sampled_from(["", "READ", "read ", "lookupp"])
                             | st.text(max_size=8), max_size=4))
compat_methods_st = mostly(st.lists(st.sampled_from(COMPAT_METHODS), min_size=1, max_size=3),
                           st.lists(st.sampled_from(COMPAT_METHODS) | st.sampled_from(["lookup", "readdir", "bogus", ""]),
                                    max_size=4))
path_st = mostly(st.from_regex(r"[a-z]{0,6}/?[a-z0-9]{0,6}\.?\*?", fullmatch=True),
                 st.sampled_from(PATHOLOGICAL) | st.text(max_size=30))
float_st = mostly(st.floats(0, 100), st.floats() | st.sampled_from([100.00000001, -0.0, -1e-9, 1e300]))
u64_st = mostly(st.integers(0, 2_000_000), st.integers(0, 2**64 - 1) | st.sampled_from([MAX_DELAY_US, MAX_DELAY_US + 1]))
u32_st = mostly(st.integers(0, 200), st.integers(0, 2**32 - 1) | st.sampled_from([38, 511, 512, 4095, 4096]))
id_st = st.sampled_from(["", "", "", "a", "b", "injure:read", "r1", "r2", "r3", "r4", "r5", "r6", "x" * 129]) | st.text(max_size=6)


@st.composite
def v1_rules(draw) -> Any:
    r = fpb.Rule(id=draw(id_st), methods=draw(methods_st), path=draw(path_st),
                 path_kind=draw(st.sampled_from([0, 0, 0, 1, 1, 7])))
    if draw(st.booleans()):
        r.probability = draw(float_st)
    if draw(st.booleans()):
        if draw(st.integers(0, 4)):
            r.errno.code, r.errno.random = draw(u32_st), False
        else:
            r.errno.code, r.errno.random = draw(st.sampled_from([0, 0, 5])), True
    if draw(st.booleans()):
        r.delay.fixed_us = draw(u64_st)
        r.delay.jitter_us = draw(st.sampled_from([0, 0, 0, 5, MAX_DELAY_US + 1]))
    if draw(st.integers(0, 3)) == 0:
        r.corrupt.mode = draw(st.sampled_from([0, 1, 2, 9]))
        r.corrupt.length = draw(st.sampled_from([0, 1, 4096, (1 << 20) + 1]) | st.integers(0, 2**32 - 1))
        r.corrupt.occurrences = draw(st.sampled_from([0, 1, 1, 1024, 1025]))
    if draw(st.integers(0, 3)) == 0:
        r.short.fraction = draw(mostly(st.floats(0, 0.99), float_st))
    r.ttl_seconds = draw(st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3600.0, 7 * 86400.0, 7 * 86400.0 + 1, -1.0,
                                          math.nan, math.inf]))
    r.max_hits = draw(st.sampled_from([0, 0, 0, 1, 2**64 - 1]))
    return r


valid_v1 = st.builds(
    lambda i, ms, p, kind, code, dl, prob: fpb.AddRuleRequest(rule=fpb.Rule(
        id=i, methods=ms, path=p, path_kind=kind, errno=fpb.ErrnoAction(code=code),
        delay=fpb.DelayAction(fixed_us=dl), **({"probability": prob} if prob is not None else {}))),
    id_st, st.lists(st.sampled_from(ALL_METHODS), max_size=3, unique=True),
    st.sampled_from(["", "db/", "^x$", "a.*b", "wal/[0-9]+"]), st.sampled_from([0, 1]),
    st.integers(1, 511), st.integers(0, 10**6), st.none() | st.floats(0, 100))


def calls(inj: Injure09):
    compat_req = st.builds(lambda m, e, r, p, path, dl: inj.request(methods=m, errno=e, random=r, pct=p, path=path, delay=dl),
                           compat_methods_st, u32_st, st.booleans(), u32_st | st.sampled_from([0, 30, 100, 101]),
                           path_st, u32_st | st.sampled_from([0, 10, MAX_DELAY_US]))  # uint32: 0.9 takes it all
    valid_compat = st.builds(
        lambda m, e, r, p, path, dl: inj.request(methods=m, errno=e, random=r, pct=p, path=path, delay=dl),
        st.lists(st.sampled_from(COMPAT_METHODS), min_size=1, max_size=3), st.integers(0, 511),
        st.booleans(), st.integers(0, 150), st.sampled_from(["", "db/", "^x$", "wal/[0-9]+"]),
        st.integers(0, 10**6))
    return st.one_of(
        st.tuples(st.just("/chaosfs.v1.Faults/AddRule"), valid_v1),
        st.tuples(st.sampled_from(["/injure.Injure/SetFault", "/injure.Injure/SetFaultAll"]), valid_compat),
        st.tuples(st.just("/chaosfs.v1.Faults/AddRule"), v1_rules().map(lambda r: fpb.AddRuleRequest(rule=r))),
        st.tuples(st.just("/chaosfs.v1.Faults/RemoveRule"),
                  st.lists(id_st, max_size=3).map(lambda ids: fpb.RemoveRuleRequest(ids=ids))),
        st.tuples(st.just("/chaosfs.v1.Faults/Clear"), st.just(fpb.ClearRequest())),
        st.tuples(st.just("/chaosfs.v1.Faults/Stats"), st.booleans().map(lambda b: fpb.StatsRequest(reset=b))),
        st.tuples(st.just("/chaosfs.v1.Faults/ListRules"), st.just(fpb.ListRulesRequest())),
        st.tuples(st.sampled_from(["/injure.Injure/SetFault", "/injure.Injure/SetFaultAll",
                                   "/injure.Injure/RecoverMethod"]), compat_req),
        st.tuples(st.sampled_from(["/injure.Injure/RecoverAll", "/injure.Injure/Injected",
                                   "/injure.Injure/Methods"]), st.just(inj.empty())),
    )


def run_sequence(fz, seq) -> None:
    model = Model()
    raw(fz, "/chaosfs.v1.Faults/Clear", b"")
    for method, req in seq:
        t0 = time.monotonic()
        code, resp, details = raw(fz, method, req.SerializeToString())
        assert time.monotonic() - t0 < 5, f"{method} took {time.monotonic() - t0:.1f}s"
        model.apply(method, req, code, details, resp)
        model.check(fz)
    assert fz.proc.poll() is None


FUZZ_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                           HealthCheck.too_slow, HealthCheck.data_too_large],
                     database=None)


@settings(max_examples=int(os.environ.get("CHAOSFS_FUZZ_EXAMPLES", "150")), **FUZZ_SETTINGS)
@given(data=st.data())
def test_structured_calls_match_the_model(fz, data):
    seq = data.draw(st.lists(calls(fz.inj), min_size=1, max_size=12))
    count("examples:structured")
    count("calls:structured", len(seq))
    run_sequence(fz, seq)


# Raw bytes: decoded here with the same message types; undecodable ones must be refused
# without any change, decodable ones must behave exactly as the structured calls.
RPC_TYPES = {
    "/chaosfs.v1.Faults/AddRule": fpb.AddRuleRequest, "/chaosfs.v1.Faults/RemoveRule": fpb.RemoveRuleRequest,
    "/chaosfs.v1.Faults/ListRules": fpb.ListRulesRequest, "/chaosfs.v1.Faults/Clear": fpb.ClearRequest,
    "/chaosfs.v1.Faults/Stats": fpb.StatsRequest,
    "/injure.Injure/SetFault": "Request", "/injure.Injure/SetFaultAll": "Request",
    "/injure.Injure/RecoverMethod": "Request", "/injure.Injure/RecoverAll": "Empty",
    "/injure.Injure/Injected": "Empty", "/injure.Injure/Methods": "Empty",
}


def mutated(valid: bytes, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(valid)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


@settings(max_examples=int(os.environ.get("CHAOSFS_FUZZ_EXAMPLES", "150")), **FUZZ_SETTINGS)
@given(data=st.data())
def test_raw_bytes_and_random_method_names(fz, data):
    model = Model()
    raw(fz, "/chaosfs.v1.Faults/Clear", b"")
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.integers(0, 9))
        if kind == 0:  # a method nobody serves
            method = data.draw(st.from_regex(r"/[A-Za-z0-9_.]{0,16}/[A-Za-z0-9_]{0,16}", fullmatch=True))
            if method in RPC_TYPES:
                continue
            code, _, _ = raw(fz, method, data.draw(st.binary(max_size=64)))
            assert code == grpc.StatusCode.UNIMPLEMENTED, (method, code)
            count("raw:unknown-method")
            continue
        method = data.draw(st.sampled_from(sorted(RPC_TYPES)))
        if kind < 5:
            body = data.draw(st.binary(max_size=512))
        else:  # a valid message with a few bytes changed
            _, other = data.draw(calls(fz.inj))  # often another RPC's message: fine too
            body = mutated(other.SerializeToString(), data.draw(st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=3)))
        t = RPC_TYPES[method]
        cls = fz.inj.m[t] if isinstance(t, str) else t
        try:
            req = cls.FromString(body)
        except DecodeError:
            req = None
        code, resp, details = raw(fz, method, body)
        count("raw:calls")
        if req is None:
            assert code == INVALID and details.startswith("request:"), (method, code, details)
            count("raw:undecodable")
        else:
            model.apply(method, req, code, details, resp)
        model.check(fz)
    assert fz.proc.poll() is None


def test_huge_messages(fz):
    raw(fz, "/chaosfs.v1.Faults/Clear", b"")
    big_path = fpb.AddRuleRequest(rule=fpb.Rule(id="big", path="a" * (1 << 20), errno=fpb.ErrnoAction(code=5)))
    code, _, details = raw(fz, "/chaosfs.v1.Faults/AddRule", big_path.SerializeToString())
    assert code == INVALID and details.startswith("path")
    many = fpb.RemoveRuleRequest(ids=["x" * 100] * 30000)  # ~3 MB
    code, _, _ = raw(fz, "/chaosfs.v1.Faults/RemoveRule", many.SerializeToString())
    assert code == grpc.StatusCode.NOT_FOUND
    over = b"\x0a" + b"\x80\x80\x80\x03" + b"z" * (6 << 20)  # beyond grpc's 4 MiB receive limit
    code, _, _ = raw(fz, "/chaosfs.v1.Faults/AddRule", over, timeout=30)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    compat = fz.inj.request(methods=list(COMPAT_METHODS) * 1000, errno=5, path="(" * 3000)
    code, _, details = raw(fz, "/injure.Injure/SetFault", compat.SerializeToString())
    assert code == INVALID and details.startswith("path")
    assert [r for r in fpb.ListRulesResponse.FromString(raw(fz, "/chaosfs.v1.Faults/ListRules", b"")[1]).rules] == []
    assert fz.proc.poll() is None


# ---- the webhook --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@pytest.fixture(scope="module")
def hook(tmp_path_factory):
    import trustme
    from injector.config import ConfigStore
    from injector.webhook import CertReloader, Webhook, WebhookOptions, WebhookServer
    from tests.test_webhook import NAMESPACES, Client, configs, write_certs
    ca = trustme.CA()
    cert, key = write_certs(ca, tmp_path_factory.mktemp("hook"))
    srv = WebhookServer(("127.0.0.1", 0), Webhook(ConfigStore(configs()), WebhookOptions(), NAMESPACES.get),
                        CertReloader(cert, key), max_body=256 * 1024)
    srv.start()
    yield Client(srv.port, ca)
    srv.shutdown()
    srv.server_close()


@st.composite
def reviews(draw) -> bytes:
    from tests.test_webhook import review, tikv_pod
    choice = draw(st.integers(0, 6))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return json.dumps(draw(json_values)).encode()
    doc = review(tikv_pod(), version=draw(st.sampled_from(["v1", "v1beta1"])))
    if choice == 2:
        doc["apiVersion"] = draw(st.sampled_from(["admission.k8s.io/v2", "admission.k8s.io/v1alpha1", "v1", "", None, 3]))
    elif choice == 3:
        doc["kind"] = draw(st.sampled_from(["Pod", "AdmissionResponse", "admissionreview", None, 7]))
    elif choice == 4:
        doc["request"]["kind"] = draw(json_values | st.sampled_from([{"kind": "Deployment"}, "Pod"]))
        doc["request"]["object"] = draw(json_values)
    elif choice == 5:
        doc["request"] = draw(json_values)
    else:
        doc["request"]["uid"] = draw(st.sampled_from(["", None, 5, "x" * 1000]) | st.text(max_size=10))
        doc["request"]["namespace"] = draw(json_values)
    return json.dumps(doc).encode()


@settings(max_examples=int(os.environ.get("CHAOSFS_FUZZ_EXAMPLES", "150")), **FUZZ_SETTINGS)
@given(body=reviews())
def test_webhook_never_crashes_and_always_allows(hook, body):
    count("webhook:examples")
    status, out = hook.request("POST", "/inject", body)
    assert status in (200, 400), (status, out[:300])
    doc = json.loads(out)
    if status == 400:
        assert isinstance(doc.get("error"), str) and doc["error"]
        count("webhook:400")
        return
    sent = json.loads(body)
    assert doc["kind"] == "AdmissionReview" and doc["apiVersion"] == sent["apiVersion"]
    assert doc["response"]["uid"] == sent["request"]["uid"]
    assert doc["response"]["allowed"] is True
    count("webhook:200")


def test_webhook_huge_and_wrong_bodies(hook):
    status, _ = hook.request("POST", "/inject", b"{" * (300 * 1024))
    assert status == 413
    status, _ = hook.request("POST", "/inject", b"[" * 100_000 + b"]" * 100_000)  # deep nesting
    assert status == 400
    status, _ = hook.request("POST", "/inject", json.dumps({"apiVersion": "admission.k8s.io/v1",
                                                            "kind": "AdmissionReview",
                                                            "request": {"uid": "u", "object": "x" * 200_000}}).encode())
    assert status == 200
    assert hook.request("GET", "/healthz") == (200, b"ok\n")


def test_assigned_ids_never_collide_with_chosen_ones(fz):
    raw(fz, "/chaosfs.v1.Faults/Clear", b"")

    def add(rule_id: str) -> tuple[grpc.StatusCode, str]:
        req = fpb.AddRuleRequest(rule=fpb.Rule(id=rule_id, methods=["read"], path="^none$",
                                               errno=fpb.ErrnoAction(code=5)))
        code, resp, details = raw(fz, "/chaosfs.v1.Faults/AddRule", req.SerializeToString())
        return code, fpb.AddRuleResponse.FromString(resp).id if code == OK else details
    code, first = add("")
    assert code == OK and first.startswith("r")
    n = int(first[1:])
    for k in range(1, 4):
        assert add(f"r{n + k}") == (OK, f"r{n + k}")  # a caller picks the next assigned names
    code, assigned = add("")
    assert code == OK and assigned not in {first, *(f"r{n + k}" for k in range(1, 4))}, (code, assigned)
