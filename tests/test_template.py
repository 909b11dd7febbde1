"""injector.template against Go's own text/template.

The reference is tests/gotemplate/main.go, built once with the system Go
toolchain (Debian's golang-go) into a cache directory outside the checkout,
keyed by the source hash, and kept running for the whole module: each case is
one JSON line in, one JSON line out.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from injector import template as T
from injector.template import TemplateError, parse, render

HERE = Path(__file__).resolve().parent
GO_SRC = HERE / "gotemplate" / "main.go"
SEED = HERE / "data" / "seed-template.yaml"
SEED_ARGS = {  # the example on the seed's page (TiKV)
    "DataPath": "/var/lib/tikv/data",
    "MountPath": "/var/lib/tikv",
    "VolumeName": "tikv",
    "ContainerName": "tikv",
}


# --------------------------------------------------------------------------- Go reference


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chaosfs" / "gotemplate"


def _build_reference() -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain is required for the differential tests: apt-get install golang-go")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout.strip()
    key = hashlib.sha256(GO_SRC.read_bytes() + version.encode()).hexdigest()[:16]
    exe = _cache_dir() / key / "gotemplate"
    if exe.exists():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_name(f"gotemplate.{os.getpid()}")
    env = dict(os.environ, GO111MODULE="off", CGO_ENABLED="0")
    env.setdefault("GOCACHE", str(_cache_dir() / "go-build"))
    res = subprocess.run([go, "build", "-o", str(tmp), str(GO_SRC)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        pytest.fail(f"building the Go reference failed: {res.stderr.strip()}")
    os.replace(tmp, exe)  # atomic, so concurrent test runs never see half a binary
    return exe


class GoReference:
    def __init__(self, exe: Path) -> None:
        self.proc = subprocess.Popen(
            [str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
        )

    def run(self, text: str, data: object, name: str = "t") -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"name": name, "text": text, "data": data}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "Go reference process died"
        r = json.loads(line)
        if r.get("ok"):
            r["out"] = base64.b64decode(r.get("out", "")).decode("utf-8", "surrogateescape")
        return r

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def go() -> GoReference:
    ref = GoReference(_build_reference())
    yield ref
    ref.close()


_GO_PARSE_ERR = re.compile(r"^template: (?P<name>.*?):(?P<line>\d+): (?P<msg>.*)$", re.S)
_GO_EXEC_ERR = re.compile(r"^template: (?P<name>.*?):(?P<line>\d+):(?P<col>\d+): (?P<msg>.*)$", re.S)


def python_side(text: str, data: object, name: str = "t") -> dict:
    """The same result record the Go program produces, from injector.template."""
    try:
        tmpl = parse(text, name)
    except TemplateError as e:
        return {"ok": False, "phase": "parse", "error": e}
    try:
        return {"ok": True, "out": tmpl.render(data)}
    except TemplateError as e:
        return {"ok": False, "phase": "exec", "error": e}


def _calls_itself(tmpl: "T.Template") -> bool:
    """Whether some template reaches a {{template}} of itself (Go would then
    recurse 100000 deep, possibly exponentially often, before failing)."""
    calls: dict[str, set] = {}

    def collect(node, out: set) -> None:
        if isinstance(node, T.TemplateNode):
            out.add(node.name)
        for attr in ("nodes", "list", "else_list"):
            sub = getattr(node, attr, None)
            if isinstance(sub, list):
                for n in sub:
                    collect(n, out)
            elif sub is not None:
                collect(sub, out)

    for name, tree in tmpl._trees.items():
        calls[name] = set()
        collect(tree.root, calls[name])
    for start in calls:
        seen, todo = set(), list(calls[start])
        while todo:
            n = todo.pop()
            if n == start:
                return True
            if n not in seen:
                seen.add(n)
                todo.extend(calls.get(n, ()))
    return False


def assert_same(go: GoReference, text: str, data: object, name: str = "t", *, in_hypothesis: bool = False) -> dict:
    p = python_side(text, data, name)
    if in_hypothesis and p.get("phase") != "parse":
        assume(not _calls_itself(parse(text, name)))
    g = go.run(text, data, name)
    ctx = f"template {text!r} data {json.dumps(data)}"
    assert g.get("phase") != "panic", f"Go panicked: {g['err']} for {ctx}"
    if g["ok"]:
        assert p["ok"], f"Go rendered {g['out']!r} but Python failed: {p['error']} for {ctx}"
        assert p["out"] == g["out"], ctx
        return p
    assert not p["ok"], f"Go failed ({g['err']}) but Python rendered {p['out']!r} for {ctx}"
    assert p["phase"] == g["phase"], f"Go {g['phase']} error {g['err']!r} vs Python {p['phase']} {p['error']} ({ctx})"
    e: TemplateError = p["error"]
    if g["phase"] == "exec":
        m = _GO_EXEC_ERR.match(g["err"])
        assert m, g["err"]
        assert str(e) == g["err"][len("template: "):], ctx
        assert (e.name, e.line, e.col) == (m["name"], int(m["line"]), int(m["col"]))
    else:
        m = _GO_PARSE_ERR.match(g["err"])
        assert m, g["err"]
        # Go's parse errors carry no column; everything else must agree.
        assert (e.name, e.line, e.message) == (m["name"], int(m["line"]), m["msg"]), f"{g['err']!r} vs {str(e)!r}"
    return p


# --------------------------------------------------------------------------- seed template


def seed_text() -> str:
    docs = list(yaml.safe_load_all(SEED.read_text()))
    assert len(docs) == 1 and docs[0]["kind"] == "ConfigMap"
    return docs[0]["data"]["data"]


def test_seed_template_renders_like_go(go: GoReference) -> None:
    out = assert_same(go, seed_text(), SEED_ARGS, name="chaosfs-sidecar")["out"]
    rendered = yaml.safe_load(out)
    assert rendered["initContainers"][0]["command"][2] == (
        "/scripts/init.sh -d /var/lib/tikv/data -f /var/lib/tikv/fuse-data"
    )
    assert rendered["containers"][0]["command"][3:] == [
        "-original=/var/lib/tikv/fuse-data",
        "-mountpoint=/var/lib/tikv/data",
    ]
    assert rendered["postStart"] == {"tikv": {"command": ["/tmp/scripts/wait-fuse.sh"]}}
    assert "{{" not in out


def test_seed_template_html_characters_are_not_escaped(go: GoReference) -> None:
    args = dict(SEED_ARGS, DataPath="/data/<a&b>'\"")
    out = assert_same(go, seed_text(), args)["out"]
    assert "-mountpoint=/data/<a&b>'\"" in out


@pytest.mark.parametrize("missing", sorted(SEED_ARGS))
def test_seed_template_missing_argument_is_named(go: GoReference, missing: str) -> None:
    args = {k: v for k, v in SEED_ARGS.items() if k != missing}
    assert_same(go, seed_text(), args, name="chaosfs-sidecar")
    with pytest.raises(TemplateError) as ei:
        render(seed_text(), args, name="chaosfs-sidecar")
    assert f'map has no entry for key "{missing}"' in str(ei.value)
    assert str(ei.value).startswith("chaosfs-sidecar:")
    assert "\n" not in str(ei.value)


def test_seed_template_extra_arguments_are_ignored(go: GoReference) -> None:
    assert_same(go, seed_text(), dict(SEED_ARGS, Unused="x"))


# --------------------------------------------------------------------------- constructs

DATA = {
    "a": 1,
    "b": "str",
    "f": 1.5,
    "l": [1, "x", None, 2.5],
    "m": {"k": "v", "n": None, "z": 3},
    "n": None,
    "t": True,
    "e": "",
    "el": [],
    "em": {},
    "big": 1e21,
    "neg": -3,
    "u": "héllo",
}

CONSTRUCTS = {
    "field": ["{{.a}}", "{{ .a }}", "{{   .b\t}}", "{{\n.m.k\n}}", "{{.m.k}}", "{{$.a}}", "{{.}}", "{{.l}}", "{{.m}}", "{{.f}}",
              "{{.big}}", "{{.n}}", "{{.t}}", "{{.u}}"],
    "trim": ["a  {{- .a -}}  b", "a {{- .a}} b", "a {{.a -}} b", "x\n  {{- /* c */ -}}\n  y", "{{- .a -}}", "{{.a -}}\n\n",
             "a {{-.a}}", "{{3 -}} 1", "{{-3}}", "{{ -3 }}"],
    "comment": ["{{/* c */}}x", "a{{/* multi\nline */}}b", "{{- /* c */}} x", "{{/* c */ -}} x"],
    "if": ["{{if .t}}y{{else}}n{{end}}", "{{if .e}}y{{else if .a}}a{{else}}n{{end}}", "{{if .el}}y{{end}}",
           "{{if .em}}y{{else}}n{{end}}", "{{if .n}}y{{else}}n{{end}}", "{{if 0.0}}y{{else}}n{{end}}",
           "{{if and .a .b}}y{{end}}", "{{if $x := .b}}{{$x}}{{end}}", "{{if .m.n}}y{{else}}n{{end}}"],
    "range": ["{{range .l}}[{{.}}]{{end}}", "{{range $i, $v := .l}}{{$i}}={{$v}},{{end}}",
              "{{range $k, $v := .m}}{{$k}}={{$v}};{{end}}", "{{range $v := .m}}{{$v}};{{end}}",
              "{{range .el}}x{{else}}empty{{end}}", "{{range .n}}x{{else}}nil{{end}}",
              "{{range .l}}{{if eq . 2.5}}{{break}}{{end}}{{.}}{{end}}",
              "{{range .l}}{{if not .}}{{continue}}{{end}}{{.}}{{end}}", "{{range $x := .el}}{{else}}{{$x}}{{end}}",
              "{{range .l}}{{$.b}}{{end}}", "{{range .a}}x{{end}}", "{{range .b}}x{{end}}",
              "{{range .m}}{{.}}{{end}}", "{{range $i, $e := .l}}{{$y := $i}}{{$y}}{{end}}"],
    "with": ["{{with .m}}{{.k}}{{end}}", "{{with .e}}x{{else}}no{{end}}", "{{with .n}}x{{else}}{{.a}}{{end}}",
             "{{with $x := .m.k}}{{$x}}{{.}}{{end}}"],
    "variables": ["{{$x := .a}}{{$x}}{{$x = 5}}{{$x}}", "{{$}}", "{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}",
                  "{{$x := .m}}{{$x.k}}", "{{$x := 1}}{{$x.y}}", "{{$x := .n}}{{$x.y}}"],
    "pipelines": ["{{.a | printf \"%05d\"}}", "{{.b | len}}", "{{\"x\" | printf \"%s-%s\" \"y\"}}", "{{(.m).k}}",
                  "{{(index .l 1) | printf \"%q\"}}", "{{1 | not}}", "{{.a | eq 1}}", "{{.l | index .l 0 | print}}", "{{.a|}}"],
    "literals": ["{{1.5}}", "{{0x10}}", "{{'a'}}", "{{'\\n'}}", "{{1e3}}", "{{-0}}", "{{`raw\\n`}}",
                 "{{\"q\\t\\x41\\u00e9\\101\"}}", "{{true}}", "{{false}}", "{{0o17}}", "{{0b101}}", "{{017}}", "{{+5}}",
                 "{{1_000}}", "{{0x1p4}}", "{{.5}}", "{{1.}}", "{{2i}}", "{{1+2i}}", "{{\"\\xff\"}}", "{{9223372036854775807}}",
                 "{{18446744073709551615}}", "{{99999999999999999999}}", "{{1e400}}"],
    "printf": ["{{printf \"%s|%d|%v|%q|%x|%5d|%-5s|%%\" .b .a .m .b .b .a .b}}", "{{printf \"%d\" .b}}",
               "{{printf \"%d %d\" 1}}", "{{printf \"%d\" 1 2}}", "{{printf \"%v\" .l}}", "{{printf \"%d\" .l}}",
               "{{printf \"%s\" .m}}", "{{printf \"%6.2f|%e|%g|%.3g|%+d|% d|%x|%X|%o|%b|%c|%U|%q\" .f .f .big .f .a .a 255 255 8 5 65 65 65}}",
               "{{printf \"%t %v\" .t .t}}", "{{printf \"%s\" nil}}", "{{printf \"%v\" nil}}",
               "{{printf \"%*d|%-*d|%.*f\" 5 1 4 2 2 3.14159}}", "{{printf \"%[2]d %[1]d\" 1 2}}", "{{printf \"%!\" 1}}",
               "{{printf \"%\" 1}}", "{{printf \"%z\" 1}}", "{{printf \"%v|%x|%05d\" .neg .neg .neg}}",
               "{{printf \"%08.3f|%-8.3f|\" .f .f}}", "{{printf 3}}", "{{printf .a}}", "{{printf .b}}",
               "{{printf \"%#v|%#v|%#v|%#v|%#v\" .m .l .b .a .f}}", "{{printf \"%x|%X|%b|%#g|%#.3x\" .f .big .f .f .f}}",
               "{{printf \"%5v|%-4v|\" .l .m}}", "{{printf \"%#x %#o %#b %#q %+q %x\" 255 8 5 .b \"é\" .u}}",
               "{{printf \"%.0d|%5.0d|%.3d|%8.3d|%-08d|%+.2e\" 0 0 7 -7 5 12345.678}}", "{{printf \"%T %T %T %T %T\" .a .f .m nil .l}}",
               "{{printf \"%.2s|%5.1s|%x|% x|%#X\" .u .u .u .u .b}}", "{{printf \"%q\" \"\\x01\\u2028\\U0001F600\"}}",
               "{{printf \"%v %.3v %10.4v\" 1e-7 3.14159 2.0}}", "{{printf \"%c|%q|%U|%#U\" 0x1F600 0x1F600 0x1F600 0x1F600}}"],
    "print": ["{{print 1 2 \"a\" 3 nil}}", "{{println .a .b}}", "{{print}}", "{{print .l .m}}", "{{print \"a\" \"b\"}}"],
    "len/index/slice": ["{{len .l}}", "{{len .b}}", "{{len .u}}", "{{len .a}}", "{{len .n}}", "{{len nil}}", "{{len .m}}",
                        "{{index .l 1}}", "{{index .l 9}}", "{{index .l 4}}", "{{index .m \"k\"}}", "{{index .m \"qq\"}}",
                        "{{index .b 1}}", "{{index .m 1}}", "{{index .n 1}}", "{{index .l 0 1}}", "{{index .m \"k\" 0}}",
                        "{{index .l}}", "{{index .l -1}}", "{{index .l .a}}", "{{slice .l 1 3}}", "{{slice .b 1 2}}",
                        "{{slice .l 3 1}}", "{{slice .l}}", "{{slice .u 2}}", "{{slice .l .a}}", "{{slice .l 0 1 2}}"],
    "comparison": ["{{eq .a 1}}", "{{eq .a 1.0}}", "{{eq .b \"str\"}}", "{{eq .a 2 3 1}}", "{{ne .a 1}}", "{{lt .a 2}}",
                   "{{lt .b \"z\"}}", "{{lt .t .t}}", "{{eq .n nil}}", "{{eq .l .l}}", "{{eq .m .l}}", "{{eq .n 1}}",
                   "{{le 2 2}}", "{{gt .f 1.0}}", "{{ge \"a\" \"b\"}}", "{{eq (index .b 0) 115}}", "{{lt (index .b 0) -1}}",
                   "{{eq}}", "{{eq .a}}", "{{lt 1}}", "{{eq .m.n nil}}"],
    "logic": ["{{and 1 0 2}}", "{{or 0 \"\" .b}}", "{{not .e}}", "{{and}}", "{{or 0}}", "{{and .a .x}}", "{{or .a .x}}",
              "{{not 1 2}}", "{{and .l .m}}", "{{or .n .el}}"],
    "escapers": ["{{html \"<a&b>\\\"'\"}}", "{{js \"a'b\\\"c<\\n\\u2028\"}}", "{{urlquery \"a b&c/é\"}}", "{{html nil}}",
                 "{{html 1 2}}", "{{call .a}}", "{{call nil}}"],
    "templates": ["{{define \"T\"}}[{{.}}]{{end}}{{template \"T\" .a}}", "{{block \"B\" .b}}<{{.}}>{{end}}",
                  "{{template \"nope\"}}", "{{define \"T\"}}{{.x}}{{end}}{{template \"T\" .m}}",
                  "{{define \"t\"}}defined{{end}}", "{{define \"T\"}}{{$}}{{end}}{{template \"T\"}}",
                  "{{define \"T\"}}a{{end}}{{define \"T\"}}b{{end}}"],
}


@pytest.mark.parametrize(
    "text", [pytest.param(t, id=f"{k}-{i}") for k, ts in CONSTRUCTS.items() for i, t in enumerate(ts)]
)
def test_construct_matches_go(go: GoReference, text: str) -> None:
    assert_same(go, text, DATA)


SYNTAX_ERRORS = [
    "{{if}}", "{{end}}", "{{range}}", "{{.a", "{{.a}", "{{foo}}", "{{$u}}", "{{if .a}}", "{{else}}",
    "{{with $x := .a}}{{$x}}{{end}}{{$x}}", "line1\n{{.x", "{{/* unclosed", "{{\"abc}}", "{{'ab'}}", "{{3x}}",
    "{{|.a}}", "{{.a | 1}}", "{{(.a}}", "{{.a)}}", "{{break}}", "{{range .l}}{{end}}{{continue}}", "{{$x := 1 2 := 3}}",
    "{{range $a, $b, $c := .l}}{{end}}", "{{if .a}}{{else}}{{else}}{{end}}", "{{define \"x\"}}", "{{template .a}}",
    "{{1.a}}", "{{\"\\q\"}}", "{{'\\400'}}", "{{.a.}}", "{{$x := }}", "{{nil.a}}", "{{08}}", "{{0x}}", "{{1e}}",
    "{{ .a -}", "a\nb\n{{ if .x }}\n{{ else }}\n", "{{/* a */ .a}}", "{{\u00e9}}", "{{.a\u00e9}}", "{{%}}",
    "{{range .l}}{{else if .a}}{{end}}", "{{with .a}}{{break}}{{end}}", "x\n\n{{.a\n\n.b}}", "{{\"a\nb\"}}",
]


@pytest.mark.parametrize("text", SYNTAX_ERRORS)
def test_syntax_error_matches_go(go: GoReference, text: str) -> None:
    p = assert_same(go, text, DATA)
    assert not p["ok"]


# --------------------------------------------------------------------------- error positions and API


def test_exec_error_carries_name_line_and_column() -> None:
    text = "a: 1\nb: {{ .Missing }}\n"
    with pytest.raises(TemplateError) as ei:
        render(text, {}, name="tmpl")
    e = ei.value
    assert (e.name, e.line, e.col) == ("tmpl", 2, 6)
    assert str(e) == 'tmpl:2:6: executing "tmpl" at <.Missing>: map has no entry for key "Missing"'
    assert isinstance(e, ValueError)


def test_exec_error_column_counts_bytes_like_go() -> None:
    with pytest.raises(TemplateError) as ei:
        render("é€ {{.x}}", {})
    assert (ei.value.line, ei.value.col) == (1, 8)


def test_parse_error_carries_name_line_and_column() -> None:
    with pytest.raises(TemplateError) as ei:
        parse("ok\n  {{ if .A }}", name="cm")
    e = ei.value
    assert (e.name, e.line, e.col) == ("cm", 2, 13)
    assert e.message == "unexpected EOF"
    assert str(e) == "cm:2:13: unexpected EOF"
    with pytest.raises(TemplateError) as ei:
        parse("x\n\n   {{ .A | nofunc }}", name="cm")
    assert (ei.value.line, ei.value.col, ei.value.message) == (3, 11, 'function "nofunc" not defined')


def test_missing_key_inside_nested_structure_names_key() -> None:
    with pytest.raises(TemplateError, match=r'map has no entry for key "Port"'):
        render("{{range .Containers}}{{.Port}}{{end}}", {"Containers": [{"Name": "a"}]})


def test_template_object_is_reusable() -> None:
    t = parse("{{.X}}-{{len .Y}}")
    assert t.render({"X": 1, "Y": [1, 2]}) == "1-2"
    assert t.render({"X": "a", "Y": "abc"}) == "a-3"
    with pytest.raises(TemplateError):
        t.render({"Y": []})


def test_module_level_render_and_default_name() -> None:
    assert render("{{.A}}", {"A": "x"}) == "x"
    with pytest.raises(TemplateError, match=r"^template:1:2: "):
        render("{{.A}}", {})
    assert T.__all__ == ["TemplateError", "Template", "parse", "render"]


def test_no_html_escaping_and_no_empty_string_for_missing() -> None:
    assert render("{{.A}}", {"A": "<&>'\""}) == "<&>'\""
    with pytest.raises(TemplateError):
        render("{{.A}}", {"B": 1})


def test_printf_pointer_verb_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match=r"%p is not supported"):
        render('{{printf "%p" .}}', {"a": 1})


@pytest.mark.parametrize("value", [datetime.date(2020, 1, 1), b"xy", {1, 2}, object()])
@pytest.mark.parametrize("text", ["{{.A}}", '{{printf "%v" .A}}', "{{len .A}}", "{{range .A}}{{.}}{{end}}",
                                  "{{.A.x}}", "{{index .A 1}}", "{{eq .A .A}}"])
def test_values_outside_the_yaml_json_model_give_one_line_errors(text: str, value: object) -> None:
    with pytest.raises(TemplateError) as ei:
        render(text, {"A": value}, name="cm")
    assert str(ei.value).startswith("cm:1:")
    assert "\n" not in str(ei.value)


def test_deep_template_recursion_is_an_error_not_a_crash() -> None:
    with pytest.raises(TemplateError, match="maximum template depth"):
        render('{{define "r"}}{{template "r" .}}{{end}}{{template "r" .}}', {})


# --------------------------------------------------------------------------- generated differential

FIELDS = ["A", "B", "C", "Data", "x"]
VARS = ["$v", "$w", "$i"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    # Code points above 1000 are left out: %q/%c ask "is it printable?", and Go
    # 1.19 (Unicode 13) and Python 3.11 (Unicode 14) disagree for new characters.
    st.integers(-(2**63), 2**63 - 1).filter(lambda i: not 1000 < i <= 0x10FFFF),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 0.1, 1e21, 1e20, 123456.0, 1234567.0, 1e-5, 5e-324, 2.5]),
    st.text(alphabet=st.sampled_from(list("ab Z0-_/.:'\"\\<>&\n\té€\x01\U0001F600")), max_size=6),
)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(FIELDS + ["k", "é"]), c, max_size=3),
    max_leaves=8,
)
data_strategy = (
    st.fixed_dictionaries({f: values for f in FIELDS})
    | st.fixed_dictionaries({f: values for f in FIELDS})
    | st.dictionaries(st.sampled_from(FIELDS), values, max_size=len(FIELDS))
    | values
)

FORMAT_PARTS = ["%v", "%s", "%d", "%q", "%x", "%X", "%5d", "%-5s", "%05d", "%.2f", "%e", "%g", "%t", "%c", "%%",
                "%+d", "% d", "%#x", "%o", "%b", "%U", "%5.1f", "%T", "%[1]v", "%*d", "%.3s", "%8.3e", "%-8v|",
                "%!", "%z", "lit ", "-", "%#v", "%6.2v", "%+q", "%#q", "%x", "% x", "%010.3f", "%-+5d"]


class Gen:
    """Draws template text from a grammar of the supported constructs."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.defined: list[str] = []

    def pick(self, seq):
        return self.draw(st.sampled_from(seq))

    def chance(self, p: float) -> bool:
        return self.draw(st.integers(0, 999)) < p * 1000

    def text(self) -> str:
        return "".join(self.draw(st.lists(st.sampled_from(["", " ", "\n", "  ", "a", "b-c", "x:", "- ", "}", "\t", "é", "z"]),
                                          max_size=3)))

    def literal(self) -> str:
        return self.pick([
            "1", "0", "-2", "3.5", "1e3", "0x1F", "'a'", "'\\n'", "true", "false", '"s"', '""', '"a\\tb"', "`r\\n`",
            '"<&>"', "2", "-0.5", "1000000", '"A"', "0.1", '"\\x41\\u00e9\\101"', "1_000", "0x1p-2", "0o17",
            "'\\u00e9'", "1i", "017", ".5", "1e-7", "'\\''", '"\\""', "`a\"b`", "-0", "+3",
        ])

    def field(self) -> str:
        n = self.pick([1, 1, 1, 2, 2, 3])
        return "".join("." + self.pick(FIELDS + ["k"]) for _ in range(n))

    def operand(self, scope: list[str], depth: int) -> str:
        kind = self.draw(st.integers(0, 9 if depth < 2 else 6))
        if kind <= 2:
            return self.field()
        if kind == 3:
            return "."
        if kind == 4:
            v = self.pick(scope)
            return v + (self.field() if self.chance(0.3) else "")
        if kind in (5, 6):
            return self.literal()
        if kind == 7:
            return "nil" if self.chance(0.2) else self.literal()
        return "(" + self.pipeline(scope, depth + 1, allow_decl=False) + ")" + (self.field() if self.chance(0.15) else "")

    def command(self, scope: list[str], depth: int, first: bool) -> str:
        kind = self.draw(st.integers(0, 5))
        if kind == 0 and first:
            return self.operand(scope, depth)
        fn = self.pick(["printf", "print", "println", "len", "index", "slice", "eq", "ne", "lt", "le", "gt", "ge",
                        "and", "or", "not", "html", "js", "urlquery"])
        nargs = {"len": 1, "not": 1, "index": 2, "slice": 2, "eq": 2, "ne": 2, "lt": 2, "le": 2, "gt": 2, "ge": 2}.get(fn, 2)
        if not first:
            nargs -= 1
        if self.chance(0.05):
            nargs += self.pick([-1, 1])
        args = [self.operand(scope, depth) for _ in range(max(nargs, 0))]
        if fn == "printf":
            fmt = "".join(self.draw(st.lists(st.sampled_from(FORMAT_PARTS), min_size=1, max_size=3)))
            args = [json.dumps(fmt)] + args
        return " ".join([fn] + args)

    def pipeline(self, scope: list[str], depth: int, allow_decl: bool = True, declared: Optional[list] = None) -> str:
        s = ""
        if allow_decl and self.chance(0.2):
            v = self.pick(VARS)
            if v in scope and self.chance(0.5):
                s = f"{v} = "
            else:
                s = f"{v} := "
                if declared is not None:
                    declared.append(v)
        cmds = [self.command(scope, depth, True)]
        while depth < 2 and self.chance(0.25) and len(cmds) < 3:
            cmds.append(self.command(scope, depth, False))
        return s + self.pick([" | ", "|"]).join(cmds)

    def action(self, inner: str) -> str:
        left = self.pick(["{{", "{{", "{{- ", "{{-\n"])
        right = self.pick(["}}", "}}", " -}}", "\n-}}"])
        sp1 = self.pick(["", " ", "  "]) if left == "{{" else ""
        sp2 = self.pick(["", " "]) if right == "}}" else ""
        return left + sp1 + inner + sp2 + right

    def body(self, scope: list[str], depth: int, in_range: bool) -> str:
        out = []
        scope = list(scope)
        for _ in range(self.draw(st.integers(0, 4 if depth == 0 else 3))):
            kind = self.draw(st.integers(0, 11))
            if kind <= 2:
                out.append(self.text())
            elif kind <= 5:
                declared: list = []
                out.append(self.action(self.pipeline(scope, 0, declared=declared)))
                scope += declared
            elif kind == 6:
                out.append(self.pick(["{{/* c */}}", "{{- /* c */ -}}", "{{- /* a\nb */}}", "{{/* x */ -}}",
                                      "{{/**/}}"]))
            elif kind == 7 and in_range:
                out.append(self.action(self.pick(["break", "continue"])))
            elif kind == 8 and self.defined:
                out.append(self.action(f'template "{self.pick(self.defined)}" ' + self.pipeline(scope, 1, allow_decl=False)))
            elif depth < 3:
                out.append(self.control(scope, depth, in_range))
        return "".join(out)

    def control(self, scope: list[str], depth: int, in_range: bool) -> str:
        word = self.pick(["if", "if", "range", "range", "with"])
        inner_scope = list(scope)
        if word == "range" and self.chance(0.6):
            decl = self.pick(["$i, $v := ", "$v := ", "$w, $i := "])
            inner_scope += [d.strip() for d in decl.replace(":=", "").split(",")]
            head = "range " + decl + self.pipeline(scope, 1, allow_decl=False)
        else:
            declared: list = []
            head = word + " " + self.pipeline(scope, 1, declared=declared)
            inner_scope += declared
        body_in_range = in_range or word == "range"
        s = self.action(head) + self.body(inner_scope, depth + 1, body_in_range)
        if word == "if" and self.chance(0.3):
            declared = []
            s += self.action("else if " + self.pipeline(inner_scope, 1, declared=declared))
            s += self.body(inner_scope + declared, depth + 1, in_range)
        if self.chance(0.4):
            s += self.action("else") + self.body(inner_scope, depth + 1, in_range)
        return s + self.action("end")

    def template(self) -> str:
        defs = ""
        if self.chance(0.2):
            name = self.pick(["T1", "T2"])
            kw = self.pick(["define", "block"])
            if kw == "define":
                defs = self.action(f'define "{name}"') + self.body(["$"], 1, False) + self.action("end")
            else:
                defs = (self.action(f'block "{name}" ' + self.pipeline(["$"], 1, allow_decl=False))
                        + self.body(["$"], 1, False) + self.action("end"))
            self.defined.append(name)
        return defs + self.body(["$"], 0, False)


@st.composite
def templates(draw) -> str:
    return Gen(draw).template()


@st.composite
def mutated_templates(draw) -> str:
    """Valid-looking templates with one random edit, to exercise syntax errors."""
    text = draw(templates())
    if not text:
        return "{{"
    i = draw(st.integers(0, len(text)))
    op = draw(st.sampled_from(["insert", "delete", "replace"]))
    ch = draw(st.sampled_from(list("{}()|$.-\"'`:= ,\n\\x1") + ["{{", "}}", "{{end}}", "{{else}}", "/*"]))
    if op == "insert":
        return text[:i] + ch + text[i:]
    if op == "delete":
        return text[:i] + text[i + 1 :]
    return text[:i] + ch + text[i + 1 :]


DIFF_SETTINGS = settings(
    max_examples=int(os.environ.get("CHAOSFS_TEMPLATE_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    derandomize=os.environ.get("CHAOSFS_TEMPLATE_RANDOM") != "1",
)


@DIFF_SETTINGS
@given(text=templates(), data=data_strategy)
def test_generated_templates_match_go(go: GoReference, text: str, data: object) -> None:
    assert_same(go, text, data, in_hypothesis=True)


@DIFF_SETTINGS
@given(text=mutated_templates(), data=data_strategy)
def test_generated_broken_templates_fail_like_go(go: GoReference, text: str, data: object) -> None:
    assert_same(go, text, data, in_hypothesis=True)


@DIFF_SETTINGS
@given(fmt=st.lists(st.sampled_from(FORMAT_PARTS), min_size=1, max_size=4).map("".join),
       args=st.lists(values, max_size=3))
def test_generated_printf_matches_go(go: GoReference, fmt: str, args: list) -> None:
    data = {"F": fmt, "A": args}
    call = "{{printf .F" + "".join(f" (index .A {i})" for i in range(len(args))) + "}}"
    assert_same(go, call, data)


@DIFF_SETTINGS
@given(data=data_strategy)
def test_generated_data_prints_like_go(go: GoReference, data: object) -> None:
    assert_same(go, "{{.}}|{{print .}}|{{printf \"%v|%s|%d|%q|%x|%5v|%T\" . . . . . . .}}|{{len .}}", data)
