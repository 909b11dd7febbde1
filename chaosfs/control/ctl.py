"""`chaosfs-ctl`: set, list and clear faults on a running chaosfs over gRPC."""
from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable, Optional

import click
import grpc
from google.protobuf import empty_pb2, json_format

from chaosfs.faults.methods import ALL_METHODS, COMPAT_METHODS
from chaosfs.proto import (faults_pb2, faults_pb2_grpc, injure_pb2, injure_pb2_grpc, powerloss_pb2,
                           powerloss_pb2_grpc)

_UNITS = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


def parse_duration_us(text: str) -> int:
    """'200ms', '1.5s', '750us'; a bare number is microseconds (0.9's unit)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(us|µs|ms|s|m|h)?\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 200ms, 1.5s, 750us)")
    return int(round(float(m.group(1)) * _UNITS[m.group(2) or "us"]))


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration_us(value)
        except click.BadParameter as e:
            self.fail(e.message, param, ctx)


class Client:
    def __init__(self, addr: str, timeout: float, token: Optional[str], ca: Optional[str],
                 cert: Optional[str], key: Optional[str]) -> None:
        self.addr = addr
        self.timeout = timeout
        self.metadata = [("authorization", f"Bearer {token}")] if token else None
        if ca or cert:
            read = lambda p: open(p, "rb").read() if p else None  # noqa: E731
            creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
            self.channel = grpc.secure_channel(addr, creds)
        else:
            self.channel = grpc.insecure_channel(addr)
        self.injure = injure_pb2_grpc.InjureStub(self.channel)
        self.faults = faults_pb2_grpc.FaultsStub(self.channel)
        self.power = powerloss_pb2_grpc.PowerLossStub(self.channel)

    def call(self, fn: Callable, request: Any, timeout: Optional[float] = None) -> Any:
        try:
            return fn(request, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                msg = f"cannot reach chaosfs at {self.addr}: {code.name.lower()}"
            elif code == grpc.StatusCode.INVALID_ARGUMENT:
                msg = f"rejected: {e.details()}"
            elif code == grpc.StatusCode.FAILED_PRECONDITION:
                msg = f"refused: {e.details()}"
            else:
                msg = f"{code.name}: {e.details()}"
            raise click.ClickException(msg) from None


class Result:
    """What one command did on one sidecar: `text` for people, `data` for --json (None: the
    command prints its text under --json too, as it always did), `summary` for a fan-out
    row (default: the text), `warning` for stderr."""

    def __init__(self, text: str, data: Any = None, summary: str = "", warning: str = "") -> None:
        self.text, self.data, self.summary, self.warning = text, data, summary or text, warning


def _do(ctx: click.Context, op: Callable[[Client], Result]) -> None:
    """Run `op` on the one --addr client, or on every selected pod's sidecar (-n/-l)."""
    target = ctx.find_root().obj
    as_json = bool(ctx.find_root().params.get("as_json"))
    if not isinstance(target, Client):
        from chaosfs.control.fanout import run_fanout
        ctx.exit(run_fanout(target, op, as_json))
    res = op(target)
    if as_json and res.data is not None:
        click.echo(json.dumps(res.data, indent=2, sort_keys=True))
    else:
        click.echo(res.text)
    if res.warning:
        click.echo(res.warning, err=True)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [header] + rows)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--addr", envvar="CHAOSFS_ADDR", default="127.0.0.1:65534", show_default=True,
              help="chaosfs gRPC address HOST:PORT (env CHAOSFS_ADDR)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--timeout", default=10.0, show_default=True, help="seconds per RPC")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), envvar="CHAOSFS_TOKEN_FILE",
              help="send `authorization: Bearer <token>`")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), help="verify the server with this CA")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="client certificate (mTLS)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="client key (mTLS)")
@click.option("-n", "--namespace", default=None,
              help="fan out: the sidecars of the pods in NAMESPACE (with -l: those matching)")
@click.option("-l", "--selector", default=None,
              help="fan out: pods matching this label selector (kubectl syntax: app=etcd,tier!=x)")
@click.option("-A", "--all-namespaces", is_flag=True, help="fan out: -l across every namespace")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG",
              help="fan out: kubeconfig (default $KUBECONFIG, ~/.kube/config, else in-cluster)")
@click.option("--port-forward", is_flag=True,
              help="fan out: reach each sidecar through the API server's port-forward (from "
                   "outside the pod network; needs pods/portforward), not at the pod IP")
@click.pass_context
def cli(ctx: click.Context, addr: str, as_json: bool, timeout: float, token_file: Optional[str],
        tls_ca: Optional[str], tls_cert: Optional[str], tls_key: Optional[str],
        namespace: Optional[str], selector: Optional[str], all_namespaces: bool,
        kubeconfig: Optional[str], port_forward: bool) -> None:
    """Control a running chaosfs: 0.9-style faults (set/set-all/recover) and rules (add/rm/rules).

    With -n/-l/-A, every selected pod's chaosfs sidecar (pod IP, the port its -addr names)
    gets the command; one row per pod, exit 1 if any failed."""
    token = open(token_file).read().strip() if token_file else None
    if namespace is None and selector is None and not all_namespaces:
        if port_forward:
            raise click.UsageError("--port-forward goes with -n/-l/-A (a fan-out)")
        ctx.obj = Client(addr, timeout, token, tls_ca, tls_cert, tls_key)
        return
    if all_namespaces and namespace is not None:
        raise click.UsageError("-A and -n exclude each other")
    from chaosfs.control.fanout import Target
    ctx.obj = Target(namespace=namespace, selector=selector or "", all_namespaces=all_namespaces,
                     kubeconfig=kubeconfig, port_forward=port_forward,
                     client=lambda a: Client(a, timeout, token, tls_ca, tls_cert, tls_key))


# ---- Chaos Mesh 0.9 commands (injure.Injure) ---------------------------------------------

@cli.command()
@click.pass_context
def methods(ctx: click.Context) -> None:
    """Method names a 0.9 fault can target (access never fires; allocate and the lock
    methods only with -transport=cython)."""
    note = {"access": "(never fires: the kernel checks access(2) itself)",
            "allocate": "(fires with -transport=cython only: pyfuse3 has no fallocate)"}
    for n in ("getlk", "setlk", "setlkw"):
        note[n] = "(fires with -transport=cython only: under pyfuse3 the kernel keeps locks)"

    def op(c: Client) -> Result:
        names = list(c.call(c.injure.Methods, empty_pb2.Empty()).methods)
        return Result("\n".join(f"{n}\t{note[n]}" if n in note else n for n in names), names,
                      summary=f"{len(names)} methods")
    _do(ctx, op)


def _fault_options(fn: Callable) -> Callable:
    for opt in reversed([
        click.option("--errno", "errno_", type=click.IntRange(0, 511), default=0, help="errno to return, 1..511 (e.g. 5 = EIO)"),
        click.option("--random", "random_", is_flag=True, help="random errno 7..53 (0.9 behaviour)"),
        click.option("--pct", type=click.IntRange(0, 100), default=100, show_default=True, help="percent of matching operations"),
        click.option("--path", default="", help="RE2 regex searched in the mount-relative path"),
        click.option("--delay", type=Duration(), default="0", help="delay before the op (200ms, 1s; bare number = µs)"),
    ]):
        fn = opt(fn)
    return fn


def _request(methods: tuple, errno_: int, random_: bool, pct: int, path: str, delay: int) -> Any:
    if delay > 0xFFFFFFFF:
        raise click.BadParameter("delay too large for the 0.9 protocol (uint32 µs)", param_hint="--delay")
    return injure_pb2.Request(methods=list(methods), errno=errno_, random=random_, pct=pct,
                              path=path, delay=delay)


@cli.command("set")
@click.argument("methods", nargs=-1, required=True, type=click.Choice(COMPAT_METHODS), metavar="METHOD...")
@_fault_options
@click.pass_context
def set_(ctx: click.Context, methods: tuple, errno_: int, random_: bool, pct: int, path: str,
         delay: int) -> None:
    """Set a 0.9 fault on METHODS (SetFault): `set read --errno 5 --path 'db/.*'`."""
    req = _request(methods, errno_, random_, pct, path, delay)

    def op(c: Client) -> Result:
        c.call(c.injure.SetFault, req)
        return Result(f"fault set on {', '.join(methods)}")
    _do(ctx, op)


@cli.command("set-all")
@_fault_options
@click.pass_context
def set_all(ctx: click.Context, errno_: int, random_: bool, pct: int, path: str, delay: int) -> None:
    """Set a 0.9 fault on every method (SetFaultAll)."""
    req = _request((), errno_, random_, pct, path, delay)

    def op(c: Client) -> Result:
        c.call(c.injure.SetFaultAll, req)
        return Result("fault set on all methods")
    _do(ctx, op)


@cli.command()
@click.argument("methods", nargs=-1, type=click.Choice(COMPAT_METHODS), metavar="[METHOD...]")
@click.pass_context
def recover(ctx: click.Context, methods: tuple) -> None:
    """Clear 0.9 faults of METHODS (RecoverMethod), or everything (RecoverAll)."""
    def op(c: Client) -> Result:
        if methods:
            c.call(c.injure.RecoverMethod, injure_pb2.Request(methods=list(methods)))
            return Result(f"recovered {', '.join(methods)}")
        c.call(c.injure.RecoverAll, empty_pb2.Empty())
        return Result("recovered all")
    _do(ctx, op)


@cli.command()
@click.pass_context
def injected(ctx: click.Context) -> None:
    """Whether any fault is set (exit 0 either way)."""
    def op(c: Client) -> Result:
        v = c.call(c.injure.Injected, empty_pb2.Empty()).injected
        return Result("injected" if v else "clean", {"injected": v})
    _do(ctx, op)


# ---- chaosfs.v1 rules --------------------------------------------------------------------

def _fmt_us(us: float) -> str:
    if us >= 1_000_000:
        return f"{us / 1e6:g}s"
    if us >= 1000:
        return f"{us / 1e3:g}ms"
    return f"{us:g}us"


def _describe(r: Any) -> str:
    acts = []
    if r.HasField("errno"):
        acts.append("errno=random" if r.errno.random else f"errno={r.errno.code}")
    if r.HasField("delay"):
        d = _fmt_us(r.delay.fixed_us)
        acts.append(f"delay={d}" + (f"+{_fmt_us(r.delay.jitter_us)}" if r.delay.jitter_us else ""))
    if r.HasField("corrupt"):
        acts.append(f"corrupt={faults_pb2.CorruptMode.Name(r.corrupt.mode).lower()}"
                    f"x{r.corrupt.occurrences}/{r.corrupt.length}B")
    if r.HasField("short"):
        acts.append(f"short={r.short.fraction:g}")
    if r.HasField("torn"):
        acts.append(f"torn={r.torn.sector}")
    return " ".join(acts) or "-"


@cli.command()
@click.pass_context
def rules(ctx: click.Context) -> None:
    """List every rule (both APIs)."""
    def op(c: Client) -> Result:
        resp = c.call(c.faults.ListRules, faults_pb2.ListRulesRequest())
        data = [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in resp.rules]
        if not resp.rules:
            return Result("no rules", data)
        text = _table([[r.id, ",".join(r.methods) or "*",
                        (r.path or "*") + (" (glob)" if r.path_kind else ""),
                        f"{r.probability:g}%", _describe(r), str(r.hits),
                        f"{r.expires_in:.1f}s" if r.expires_in else "-"] for r in resp.rules],
                      ["ID", "METHODS", "PATH", "PROB", "ACTIONS", "HITS", "TTL"])
        summary = f"{len(resp.rules)} rule(s): " + ", ".join(
            f"{r.id} [{_describe(r)}] hits {r.hits}" for r in resp.rules)
        return Result(text, data, summary=summary)
    _do(ctx, op)


@cli.command()
@click.option("--id", "rule_id", default="", help="rule id (default: assigned)")
@click.option("-m", "--method", "methods", multiple=True, type=click.Choice(ALL_METHODS),
              help="operation (repeatable; none = every operation)")
@click.option("--path", default="", help="RE2 regex searched in the mount-relative path")
@click.option("--glob", "glob_", is_flag=True, help="--path is an anchored glob (*, **, ?)")
@click.option("--probability", type=float, default=100.0, show_default=True, help="percent, fractional")
@click.option("--errno", "errno_", type=int, default=0, help="errno to return")
@click.option("--random-errno", is_flag=True, help="a realistic errno for each operation")
@click.option("--delay", type=Duration(), default="0", help="fixed delay (200ms, 1s)")
@click.option("--jitter", type=Duration(), default="0", help="plus uniform random delay up to this")
@click.option("--corrupt", type=click.Choice(["random", "zero", "bitflip"]), help="corrupt read/written bytes")
@click.option("--corrupt-length", type=int, default=1, show_default=True, help="bytes per corrupted region")
@click.option("--corrupt-occurrences", type=int, default=1, show_default=True, help="regions per operation")
@click.option("--short", type=float, default=0.0, help="read/write only this fraction of the request")
@click.option("--torn", type=click.Choice(["512", "4096"]), default=None,
              help="writes report success but stop at a random sector boundary of this size")
@click.option("--ttl", type=float, default=0.0, help="remove the rule after SECONDS")
@click.option("--max-hits", type=int, default=0, help="remove the rule after firing N times")
@click.pass_context
def add(ctx: click.Context, rule_id: str, methods: tuple, path: str, glob_: bool,
        probability: float, errno_: int, random_errno: bool, delay: int, jitter: int,
        corrupt: Optional[str], corrupt_length: int, corrupt_occurrences: int, short: float,
        torn: Optional[str], ttl: float, max_hits: int) -> None:
    """Add a rule: `add -m read --path 'db/.*' --errno 5 --probability 30 --ttl 60`."""
    if errno_ < 0 or max_hits < 0 or corrupt_length < 0 or corrupt_occurrences < 0:
        raise click.BadParameter("negative values are not allowed")
    rule = faults_pb2.Rule(id=rule_id, methods=list(methods), path=path,
                           path_kind=faults_pb2.GLOB if glob_ else faults_pb2.REGEX,
                           probability=probability, ttl_seconds=ttl, max_hits=max_hits)
    if errno_ or random_errno:
        rule.errno.code = errno_
        rule.errno.random = random_errno
    if delay or jitter:
        rule.delay.fixed_us = delay
        rule.delay.jitter_us = jitter
    if corrupt:
        rule.corrupt.mode = {"random": faults_pb2.RANDOM, "zero": faults_pb2.ZERO,
                             "bitflip": faults_pb2.BITFLIP}[corrupt]
        rule.corrupt.length = corrupt_length
        rule.corrupt.occurrences = corrupt_occurrences
    if short:
        rule.short.fraction = short
    if torn:
        rule.torn.sector = int(torn)
    def op(c: Client) -> Result:
        resp = c.call(c.faults.AddRule, faults_pb2.AddRuleRequest(rule=rule))
        bypassed = list(resp.bypassed_paths)
        warning = (f"warning: {len(bypassed)} open file(s) bypass this rule until reopened "
                   f"(kernel passthrough): {', '.join(bypassed)}") if bypassed else ""
        return Result(resp.id, {"id": resp.id, "bypassed_paths": bypassed},
                      summary=f"rule {resp.id} added" + (f" ({warning})" if warning else ""),
                      warning=warning)
    _do(ctx, op)


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, ids: tuple) -> None:
    """Remove rules by id (all or none)."""
    def op(c: Client) -> Result:
        n = c.call(c.faults.RemoveRule, faults_pb2.RemoveRuleRequest(ids=list(ids))).removed
        return Result(f"removed {n}")
    _do(ctx, op)


@cli.command()
@click.pass_context
def clear(ctx: click.Context) -> None:
    """Remove every rule (same as `recover`)."""
    def op(c: Client) -> Result:
        n = c.call(c.faults.Clear, faults_pb2.ClearRequest()).removed
        return Result(f"removed {n}")
    _do(ctx, op)


@cli.command()
@click.option("--reset", is_flag=True, help="zero the operation counters after reading")
@click.pass_context
def stats(ctx: click.Context, reset: bool) -> None:
    """Rule hit counts and per-operation counts and latencies."""
    def op(c: Client) -> Result:
        resp = c.call(c.faults.Stats, faults_pb2.StatsRequest(reset=reset))
        data = json_format.MessageToDict(resp, preserving_proto_field_name=True)
        text = ""
        if resp.rules:
            text = _table([[r.id, str(r.hits)] for r in resp.rules], ["RULE", "HITS"]) + "\n\n"
        # ERRORS is every failed operation; INJECTED/BACKING splits it: the errors a fault
        # gave, and the backing file system's (or chaosfs's own)
        text += _table([[m.method, str(m.count), str(m.errors),
                         f"{m.injected_errors}/{m.backing_errors}", f"<{_fmt_us(m.p50_us)}",
                         f"<{_fmt_us(m.p99_us)}"] for m in resp.methods],
                       ["METHOD", "OPS", "ERRORS", "INJECTED/BACKING", "P50", "P99"])
        summary = (f"{sum(m.count for m in resp.methods)} ops, "
                   f"{sum(m.errors for m in resp.methods)} errors "
                   f"({sum(m.injected_errors for m in resp.methods)} injected, "
                   f"{sum(m.backing_errors for m in resp.methods)} backing); rule hits: "
                   + (", ".join(f"{r.id} {r.hits}" for r in resp.rules) or "none"))
        if resp.HasField("power_loss") and (resp.power_loss.armed or resp.power_loss.totals.cuts):
            pl_text, pl_summary = _status_text(resp.power_loss)
            text += "\n\npower loss: " + pl_text
            summary += "; power loss " + pl_summary
        return Result(text, data, summary=summary)
    _do(ctx, op)


# ---- power loss (chaosfs.v1.PowerLoss) -----------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6,
               "mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


class Size(click.ParamType):
    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _SIZE_UNITS or float(m.group(1)) <= 0:
            self.fail(f"{value!r} is not a size (e.g. 512MiB, 2G, 1048576)", param, ctx)
        return int(float(m.group(1)) * _SIZE_UNITS[unit])


def _status_text(st: Any) -> tuple[str, str]:
    if not st.armed:
        text = "not armed"
    else:
        t = st.tracked
        text = (f"armed ({t.model} model, {t.armed_seconds:.0f} s): {t.files} file(s) with "
                f"{t.unsynced_bytes} unsynced byte(s) in {t.data_ops} op(s), {t.dir_entries} "
                f"directory entr{'y' if t.dir_entries == 1 else 'ies'} not durable; undo "
                f"{t.undo_bytes}/{t.max_undo_bytes} bytes")
        if t.undo_overflow_bytes:
            text += f"; OVERFLOW: {t.undo_overflow_bytes} bytes of old data not kept (a cut will be inexact)"
    tot = st.totals
    if tot.cuts:
        text += (f"\n{tot.cuts} cut(s) so far: {tot.bytes_dropped} bytes dropped, "
                 f"{tot.files_rolled_back} file(s) rolled back, {tot.entries_undone} entr(ies) undone")
    return text, text.splitlines()[0]


def _cut_text(r: Any) -> str:
    lines = [f"power cut: {len(r.files)} file(s) rolled back, {r.bytes_dropped} unsynced byte(s) "
             f"dropped ({r.ops_dropped} op(s) dropped, {r.ops_kept} kept), {len(r.entries)} "
             f"directory entr{'y' if len(r.entries) == 1 else 'ies'} undone, in {r.seconds:.3f} s"]
    lines += [f"  data     {p}" for p in r.files]
    lines += [f"  torn     {p}" for p in r.torn]
    lines += [f"  entry    {e}" for e in r.entries]
    lines += [f"  INEXACT  {e}" for e in r.inexact]
    return "\n".join(lines)


def _pb_dict(msg: Any) -> dict:
    """A message as JSON-able values, 64-bit counters as numbers (protobuf's JSON mapping
    would quote them), every field present."""
    out: dict = {}
    for f in msg.DESCRIPTOR.fields:
        v = getattr(msg, f.name)
        if f.message_type is not None:
            if f.is_repeated:
                out[f.name] = [_pb_dict(x) for x in v]
            else:
                out[f.name] = _pb_dict(v) if msg.HasField(f.name) else None
        else:
            out[f.name] = list(v) if f.is_repeated else v
    return out


@cli.group("power-loss")
def power_loss() -> None:
    """Power-loss experiments: arm, run the app, cut (lose what was never synced), disarm."""


@power_loss.command("arm")
@click.option("--max-undo", type=Size(), default="1GiB", show_default=True,
              help="bound on the old data kept to undo unsynced overwrites")
@click.option("--model", type=click.Choice(["posix", "journal"]), default="posix", show_default=True,
              help="posix: an entry is durable once its directory is fsynced; journal: once any fsync follows it (ext4/xfs-like)")
@click.pass_context
def pl_arm(ctx: click.Context, max_undo: int, model: str) -> None:
    """Start tracking what a page cache would still hold unsynced."""
    req = powerloss_pb2.ArmRequest(max_undo_bytes=max_undo, model=powerloss_pb2.DurabilityModel.Value(model.upper()))

    def op(c: Client) -> Result:
        st = c.call(c.power.Arm, req)
        return Result(f"armed ({model} model, undo bound {max_undo} bytes, in {st.workdir})", _pb_dict(st))
    _do(ctx, op)


@power_loss.command("status")
@click.pass_context
def pl_status(ctx: click.Context) -> None:
    """What is tracked (files, bytes, directory entries) and what cuts dropped."""
    def op(c: Client) -> Result:
        st = c.call(c.power.Status, powerloss_pb2.StatusRequest())
        text, summary = _status_text(st)
        return Result(text, _pb_dict(st), summary=summary)
    _do(ctx, op)


@power_loss.command("cut")
@click.option("--keep-probability", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="each unsynced write/truncate/fallocate survives with this probability (a disk cache reorders)")
@click.option("--torn", is_flag=True, help="the last unsynced write of each file survives up to a random sector boundary")
@click.option("--sector", type=click.Choice(["512", "4096"]), default="512", show_default=True, help="sector size for --torn")
@click.option("--block", is_flag=True, help="requests during the cut wait instead of failing with EIO")
@click.option("--hold", type=click.FloatRange(0.0, 3600.0), default=0.0, show_default=True,
              help="seconds the mount stays cut after the rollback")
@click.option("--seed", type=click.IntRange(0), default=None, help="same seed, same survivors")
@click.pass_context
def pl_cut(ctx: click.Context, keep_probability: float, torn: bool, sector: str, block: bool,
           hold: float, seed: Optional[int]) -> None:
    """Cut the power: roll the backing directory back to its last durable state."""
    req = powerloss_pb2.CutRequest(keep_probability=keep_probability, torn=torn, sector=int(sector),
                                   block=block, hold_seconds=hold)
    if seed is not None:
        req.seed = seed

    def op(c: Client) -> Result:
        r = c.call(c.power.Cut, req, timeout=max(c.timeout, hold + 60)).result
        text = _cut_text(r)
        return Result(text, _pb_dict(r), summary=text.splitlines()[0])
    _do(ctx, op)


@power_loss.command("disarm")
@click.pass_context
def pl_disarm(ctx: click.Context) -> None:
    """Stop tracking; the undo data is removed."""
    def op(c: Client) -> Result:
        was = c.call(c.power.Disarm, powerloss_pb2.DisarmRequest()).was_armed
        return Result("disarmed" if was else "was not armed", {"was_armed": was})
    _do(ctx, op)


def main() -> None:
    try:
        rc = cli.main(prog_name="chaosfs-ctl", standalone_mode=False)
        if isinstance(rc, int) and rc:  # ctx.exit(n) under standalone_mode=False
            sys.exit(rc)
    except click.UsageError as e:
        click.echo(f"chaosfs-ctl: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"chaosfs-ctl: {e.format_message()}", err=True)
        sys.exit(1)
    except click.Abort:
        sys.exit(1)


if __name__ == "__main__":
    main()
