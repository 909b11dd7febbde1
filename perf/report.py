"""results.json -> a Markdown table of medians and ratios, and a PNG chart."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

from perf.jobs import METRICS, Job

# ratio columns, in this order, for those present in the run
REFS = ("native", "passthrough_ll-s", "gofuse", "chaosfs")
REF_NAMES = {"native": "native", "passthrough_ll-s": "passthrough_ll -s", "gofuse": "go-fuse",
             "chaosfs": "chaosfs(no rules)"}


def brief(job: Job, r: dict) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    if job.metadata:
        return (f"create {r['create_ops']:.0f}/s  stat {r['stat_ops']:.0f}/s  "
                f"unlink {r['unlink_ops']:.0f}/s  readdir {r['readdir_ms']:.1f} ms")
    if job.kind == "pgbench":
        return (f"{r['tps']:.0f} TPS  latency {r.get('pg_lat_ms', 0):.2f} ms"
                + (f"  (pgbench -i {r['init_s']:.1f} s)" if "init_s" in r else ""))
    if job.kind == "sqlite":
        return (f"{r['inserts_s']:.0f} inserts/s  mean {r['lat_mean_us']:.0f} µs  "
                f"p99 {r['lat_p99_us']:.0f} µs")
    return (f"{r['iops']:.0f} IOPS  {r['bw_mibs']:.0f} MiB/s  mean {r['lat_mean_us']:.1f} µs  "
            f"p99 {r['lat_p99_us']:.0f} µs")


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "–"
    if v >= 10_000:
        return f"{v / 1000:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def summarize(results: dict) -> dict:
    """{job: {metric: {variant: {median, min, max}}}} over the rounds that did not fail."""
    out: dict = {}
    for job, by_variant in results.get("samples", {}).items():
        for variant, samples in by_variant.items():
            ok = [s for s in samples if "error" not in s]
            for metric in METRICS:
                vals = [s[metric] for s in ok if s.get(metric) is not None]
                if vals:
                    out.setdefault(job, {}).setdefault(metric, {})[variant] = {
                        "median": statistics.median(vals), "min": min(vals), "max": max(vals),
                        "n": len(vals)}
    return out


def ratio(summary: dict, job: str, metric: str, variant: str, ref: str) -> Optional[float]:
    cells = summary.get(job, {}).get(metric, {})
    if variant not in cells or ref not in cells:
        return None
    a, b = cells[variant]["median"], cells[ref]["median"]
    if not a or not b:
        return None
    return a / b if METRICS[metric][1] == "higher" else b / a


def _job_metrics(results: dict, job: str) -> list[str]:
    if job == "metadata":
        return ["create_ops", "stat_ops", "unlink_ops", "readdir_ms"]
    head = results["jobs"][job]["headline"]
    if head == "tps":
        return ["tps", "pg_lat_ms", "init_s"]
    return [head, "lat_mean_us", "lat_p99_us"]


def _headline_metrics(results: dict, job: str) -> list[str]:
    """What the ratio table and the chart show: one metric per job, four for metadata."""
    return _job_metrics(results, job)[: 4 if job == "metadata" else 1]


def table(results: dict) -> str:
    summary = summarize(results)
    variants = [v for v in results["variants"] if "error" not in results["variants"][v]]
    labels = {v: results["variants"][v]["label"] for v in variants}
    s = results["settings"]
    lines = [f"Run {results['started']} · kernel {results['host']['kernel']} · "
             f"{results['host']['cpus']} CPUs · {s['rounds']} interleaved rounds · "
             f"{s['runtime']} s per fio job · {'all jobs pinned' if s['pin'] else 'pinned jobs: *-pin'}",
             "", "Medians (min–max). Ratios: > 1 is faster than the reference.", ""]
    head = "| job | metric | " + " | ".join(labels[v] for v in variants) + " |"
    lines += [head, "|" + "---|" * (len(variants) + 2)]
    for job in results["jobs"]:
        for metric in _job_metrics(results, job):
            cells = summary.get(job, {}).get(metric, {})
            row = [results["jobs"][job]["title"], METRICS[metric][0] if metric != "readdir_ms"
                   else "readdir ms"]
            if metric.endswith("_ops"):
                row[1] = metric.split("_")[0] + " ops/s"
            for v in variants:
                c = cells.get(v)
                row.append("–" if c is None else
                           f"{_fmt(c['median'])} ({_fmt(c['min'])}–{_fmt(c['max'])})"
                           if c["n"] > 1 else _fmt(c["median"]))
            lines.append("| " + " | ".join(row) + " |")
    refs = [r for r in REFS if r in variants]
    lines += ["", "Ratios of the headline metric: " + " / ".join(f"×{REF_NAMES[r]}" for r in refs), ""]
    lines += ["| job | " + " | ".join(labels[v] for v in variants) + " |",
              "|" + "---|" * (len(variants) + 1)]
    for job in results["jobs"]:
        for metric in _headline_metrics(results, job):
            row = [results["jobs"][job]["title"] + (f" ({metric.split('_')[0]})" if job == "metadata" else "")]
            for v in variants:
                rs = [ratio(summary, job, metric, v, ref) for ref in refs]
                row.append(" / ".join("–" if r is None else f"{r:.2f}" for r in rs))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Daemons", "", "| variant | start→ready ms | idle RSS MB | peak RSS MB (any job) "
              "| CPU % (median over jobs) |", "|---|---|---|---|---|"]
    for v in variants:
        info = results["variants"][v]
        peaks = [c["max"] for j in summary.values() for m, cs in j.items() if m == "peak_rss_mb"
                 for vv, c in cs.items() if vv == v]
        cpus = [c["median"] for j in summary.values() for m, cs in j.items() if m == "cpu_pct"
                for vv, c in cs.items() if vv == v]
        lines.append(f"| {labels[v]} | {_fmt(info.get('startup_ms'))} | {_fmt(info.get('idle_rss_mb'))} "
                     f"| {_fmt(max(peaks) if peaks else None)} "
                     f"| {_fmt(statistics.median(cpus) if cpus else None)} |")
    lines += _references(results)
    stalls = [(v, results["variants"][v]["stall"]) for v in variants if results["variants"][v].get("stall")]
    if stalls:
        lines += ["", "Stalled reads (perf/stall.py, under the delay rule while the jobs ran)", "",
                  "| variant | threads | reads finished | fastest ms | median ms | errors |",
                  "|---|---|---|---|---|---|"]
        for v, st in stalls:
            lines.append(f"| {labels[v]} | {st.get('threads', '–')} | {st.get('reads', '–')} "
                         f"| {_fmt(st.get('lat_min_ms'))} | {_fmt(st.get('lat_median_ms'))} "
                         f"| {'; '.join(st.get('errors') or []) or st.get('error', 'none')} |")
    fls = results.get("fault_latency")
    if fls and ("error" in fls or "setfault_rpc_p50_us" in fls):
        fls = {"chaosfs": fls}  # a run from before both transports were probed
    if fls:
        lines += ["", "Fault latency (0.9 SetFault over gRPC on loopback, "
                      "read of an already-open cached file)", "",
                  "| variant | SetFault round trip p50 / p99 µs | from the call until the next read "
                  "fails p50 / p99 µs | from the return p50 / p99 µs | reads still served after "
                  "the return |",
                  "|---|---|---|---|---|"]
        for v, fl in fls.items():
            name = labels.get(v, v)
            if "error" in fl:
                lines.append(f"| {name} | error: {fl['error']} | |")
            else:
                lines.append(f"| {name} | {_fmt(fl['setfault_rpc_p50_us'])} / {_fmt(fl['setfault_rpc_p99_us'])} "
                             f"| {_fmt(fl['fault_visible_p50_us'])} / {_fmt(fl['fault_visible_p99_us'])} "
                             f"| {_fmt(fl.get('after_return_p50_us'))} / {_fmt(fl.get('after_return_p99_us'))} "
                             f"| {fl.get('reads_ok_after_return', '–')} |")
    return "\n".join(lines) + "\n"


def _references(results: dict) -> list[str]:
    """How each reference was started, and every variant that could not be, with why."""
    lines: list[str] = []
    refs = {n: i for n, i in results["variants"].items() if i.get("kind") == "ref" and "error" not in i}
    if refs:
        lines += ["", "References (built at run time from Debian's packages), started as below "
                      "({original}: the backing dir). chaosfs for comparison: 1 s entry/attr "
                      "timeouts, keep_cache, allow_other, default_permissions", ""]
        for n, i in refs.items():
            cmd = i.get("command") or ""
            parts = cmd.split(" ", 1)
            shown = Path(parts[0]).name + (" " + parts[1] if len(parts) > 1 else "")
            lines.append(f"- {i['label']}: `{shown}`")
    bad = {n: i for n, i in results["variants"].items() if "error" in i}
    if bad:
        lines += ["", "**FAILED variants** (not measured)", ""]
        lines += [f"- {n} ({i['label']}): {i['error'].removeprefix(n + ': ')}" for n, i in bad.items()]
    errs = sorted({(j, v, "; ".join(s["error"]) if isinstance(s["error"], list) else str(s["error"]))
                   for j, by_v in results.get("samples", {}).items()
                   for v, ss in by_v.items() for s in ss if "error" in s})
    if errs:
        lines += ["", "**Failed samples**", ""]
        lines += [f"- {j} on {v}: {e}" for j, v, e in errs]
    return lines


def chart(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = summarize(results)
    variants = [v for v in results["variants"] if "error" not in results["variants"][v] and v != "native"]
    rows = []
    for job in results["jobs"]:
        for metric in _headline_metrics(results, job):
            rows.append((job, metric))
    if not rows or not variants:
        return False
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(rows)), 5))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ys = [ratio(summary, j, m, v, "native") or 0 for j, m in rows]
        ax.bar([k + i * width for k in range(len(rows))], ys, width,
               label=results["variants"][v]["label"])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(rows))])
    ax.set_xticklabels([j if j != "metadata" else m.split("_")[0] for j, m in rows],
                       rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("speed relative to native (median)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"chaosfs perf {results['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out: Path, results: dict) -> None:
    results["summary"] = summarize(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "table.md").write_text(table(results))
    chart(results, out / "chart.png")
