"""Go text/template rendering for sidecar templates.

Chaos Mesh sidecar templates are Go templates (``{{.DataPath}}``).  This
module renders them with the output Go 1.19's ``text/template`` produces under
``Option("missingkey=error")``: no HTML escaping, and a missing map key is an
error naming the key instead of an empty string.

Supported: actions with any spacing, ``{{- -}}`` trimming, comments,
``if``/``else if``/``else``, ``range`` (lists and maps, ``$i, $v :=``,
``else``, ``break``/``continue``), ``with``/``else``, variables (``:=``,
``=``, ``$``), pipelines and parenthesised pipelines, ``define``/``template``/
``block`` and the built-ins ``and or not len index slice eq ne lt le gt ge
print printf println html js urlquery call``.

Data is what YAML or JSON yields: dicts (maps with string keys), lists, str,
int, float, bool and None.

    >>> render("{{.Name}} has {{len .Items}} items", {"Name": "x", "Items": [1, 2]})
    'x has 2 items'
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from ._template_fmt import (
    INVALID,
    MISSING,
    Boxed,
    GoUint8,
    UnsupportedFormat,
    go_type_name,
    quote,
    sort_map_keys,
    sprint,
    sprintf,
    sprintln,
    utf8_bytes,
)
from ._template_parse import (
    ActionNode,
    BoolNode,
    BreakNode,
    ChainNode,
    CommandNode,
    CommentNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    IfNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    RangeNode,
    StringNode,
    TemplateError,
    TemplateNode,
    TextNode,
    Tree,
    VariableNode,
    WithNode,
    parse_trees,
    position_of,
)

__all__ = ["TemplateError", "Template", "parse", "render"]

# Go's limit is 100000 nested {{template}} calls; Python's stack is smaller.
_MAX_EXEC_DEPTH = 150


class Template:
    """A parsed template; render() may be called any number of times."""

    def __init__(self, name: str, text: str, trees: dict[str, Tree]) -> None:
        self.name = name
        self.text = text
        self._trees = trees

    def render(self, data: object) -> str:
        """Execute the template with data as dot; raise TemplateError on failure."""
        ex = _Exec(self._trees, self.text, self.name)
        try:
            ex.run(self.name, data)
        except _ExecFailure as f:
            raise f.error from None
        except RecursionError:
            raise TemplateError(self.name, 1, 0, "template execution nested too deep") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
            # Unexpected data shapes must still end in a one-line error.
            raise TemplateError(self.name, 1, 0, f"cannot render: {type(e).__name__}: {e}") from e
        # Re-decode so byte sequences assembled from "\xNN" escapes that form
        # valid UTF-8 become the characters Go's bytes would show.
        return utf8_bytes("".join(ex.out)).decode("utf-8", "surrogateescape")

    def __repr__(self) -> str:
        return f"Template({self.name!r})"


def parse(text: str, name: str = "template") -> Template:
    """Parse Go template text; raise TemplateError on a syntax error."""
    if not isinstance(text, str):
        raise TypeError("template text must be str")
    return Template(name, text, parse_trees(text, name))


def render(text: str, data: object, name: str = "template") -> str:
    """Parse and execute in one step."""
    return parse(text, name).render(data)


# --------------------------------------------------------------------------- exec


class _ExecFailure(Exception):
    def __init__(self, error: TemplateError) -> None:
        super().__init__(str(error))
        self.error = error


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _FuncError(Exception):
    """An error returned by a built-in function (Go: the func's error result)."""


def _unbox(v: object) -> object:
    """indirectInterface: unwrap an interface-typed value (nil -> INVALID)."""
    if isinstance(v, Boxed):
        return INVALID if v.v is None else v.v
    return v


def _is_true(v: object) -> tuple[bool, bool]:
    """Go's isTrue on an unwrapped value: (truth, ok)."""
    if v is INVALID or v is None:
        return False, True
    if isinstance(v, bool):
        return v, True
    if isinstance(v, (int, float, complex)):
        return v != 0, True
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) > 0, True
    return True, True


def _go_len(v: object) -> int:
    if isinstance(v, str):
        return len(utf8_bytes(v))
    return len(v)  # type: ignore[arg-type]


# Parameter kinds of the built-ins, as Go's reflect sees them.
_VALUE = "reflect.Value"
_ANY = "interface {}"
_STRING = "string"


class _Func:
    def __init__(self, name: str, fixed: list[str], variadic: Optional[str], fn: Callable) -> None:
        self.name = name
        self.fixed = fixed
        self.variadic = variadic
        self.fn = fn

    @property
    def num_in(self) -> int:
        return len(self.fixed) + (1 if self.variadic else 0)


def _basic_kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, GoUint8):
        return "uint"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, complex):
        return "complex"
    if isinstance(v, str):
        return "string"
    return "invalid"


_ERR_BAD_TYPE = "invalid type for comparison"
_ERR_BAD_CMP = "incompatible types for comparison"


def _go_str_value(v: object) -> str:
    return sprintf("%s", [v])


def _f_eq(arg1: object, *args: object) -> bool:
    a1 = _unbox(arg1)
    if not args:
        raise _FuncError("missing argument for comparison")
    k1 = _basic_kind(a1)
    for arg in args:
        a = _unbox(arg)
        k2 = _basic_kind(a)
        truth = False
        if k1 != k2:
            if {k1, k2} == {"int", "uint"}:
                truth = int(a1) == int(a)  # type: ignore[call-overload]
            elif a1 is not INVALID and a is not INVALID:
                raise _FuncError(_ERR_BAD_CMP)
        elif k1 == "string":
            truth = utf8_bytes(a1) == utf8_bytes(a)  # type: ignore[arg-type]
        elif k1 != "invalid":
            truth = a1 == a
        else:
            # Both non-basic: nil compares with nil; maps and slices are not comparable.
            n1 = a1 is INVALID
            n2 = a is INVALID
            t1 = type(a1)
            t2 = type(a)
            if not n1 and not n2 and t1 is not t2 and not (
                isinstance(a1, (list, tuple)) and isinstance(a, (list, tuple))
            ):
                raise _FuncError(
                    f"non-comparable types {_go_str_value(a1)}: {go_type_name(a1)}, "
                    f"{go_type_name(a)}: {sprint([a])}"
                )
            if n1 or n2:
                truth = n1 == n2
            else:
                raise _FuncError(f"non-comparable type {_go_str_value(a)}: {go_type_name(a)}")
        if truth:
            return True
    return False


def _f_ne(arg1: object, arg2: object) -> bool:
    return not _f_eq(arg1, arg2)


def _f_lt(arg1: object, arg2: object) -> bool:
    a1 = _unbox(arg1)
    k1 = _basic_kind(a1)
    if k1 == "invalid":
        raise _FuncError(_ERR_BAD_TYPE)
    a2 = _unbox(arg2)
    k2 = _basic_kind(a2)
    if k2 == "invalid":
        raise _FuncError(_ERR_BAD_TYPE)
    if k1 != k2:
        if {k1, k2} == {"int", "uint"}:
            return int(a1) < int(a2)  # type: ignore[call-overload]
        raise _FuncError(_ERR_BAD_CMP)
    if k1 in ("bool", "complex"):
        raise _FuncError(_ERR_BAD_TYPE)
    if k1 == "string":
        return utf8_bytes(a1) < utf8_bytes(a2)  # type: ignore[arg-type]
    return a1 < a2  # type: ignore[operator]


def _f_le(arg1: object, arg2: object) -> bool:
    if _f_lt(arg1, arg2):
        return True
    return _f_eq(arg1, arg2)


def _f_gt(arg1: object, arg2: object) -> bool:
    return not _f_le(arg1, arg2)


def _f_ge(arg1: object, arg2: object) -> bool:
    return not _f_lt(arg1, arg2)


def _f_not(arg: object) -> bool:
    return not _is_true(_unbox(arg))[0]


def _indirect(v: object) -> tuple[object, bool]:
    """Go's indirect(): unwrap interfaces; (value, is_nil)."""
    if isinstance(v, Boxed):
        if v.v is None:
            return v, True
        return v.v, False
    return v, False


def _f_len(item: object) -> int:
    v, is_nil = _indirect(item)
    if is_nil:
        raise _FuncError("len of nil pointer")
    if v is INVALID:
        raise _FuncError("reflect: call of reflect.Value.Type on zero Value")
    if isinstance(v, (str, list, tuple, dict)):
        return _go_len(v)
    raise _FuncError(f"len of type {go_type_name(v)}")


def _index_arg(index: object, cap: int) -> int:
    if isinstance(index, int) and not isinstance(index, bool):
        x = int(index)
    elif index is INVALID:
        raise _FuncError("cannot index slice/array with nil")
    else:
        raise _FuncError(f"cannot index slice/array with type {go_type_name(index)}")
    if x < 0 or x > cap:
        raise _FuncError(f"index out of range: {x}")
    return x


def _f_index(item: object, *indexes: object) -> object:
    item = _unbox(item)
    if item is INVALID:
        raise _FuncError("index of untyped nil")
    for index in indexes:
        index = _unbox(index)
        item, is_nil = _indirect(item)
        if is_nil:
            raise _FuncError("index of nil pointer")
        if isinstance(item, str):
            b = utf8_bytes(item)
            x = _index_arg(index, len(b))
            if x == len(b):
                raise _FuncError(f"reflect: string index out of range")
            item = GoUint8(b[x])
        elif isinstance(item, (list, tuple)):
            x = _index_arg(index, len(item))
            if x == len(item):
                raise _FuncError("reflect: slice index out of range")
            item = Boxed(item[x])
        elif isinstance(item, dict):
            if index is INVALID:
                raise _FuncError("value is nil; should be of type string")
            if not isinstance(index, str):
                raise _FuncError(f"value has type {go_type_name(index)}; should be string")
            item = Boxed(item.get(index)) if index in item else Boxed(None)
        else:
            raise _FuncError(f"can't index item of type {go_type_name(item)}")
    return item


def _f_slice(item: object, *indexes: object) -> object:
    item = _unbox(item)
    if item is INVALID:
        raise _FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise _FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise _FuncError("cannot 3-index slice a string")
        b = utf8_bytes(item)
        cap = len(b)
    elif isinstance(item, (list, tuple)):
        cap = len(item)
    else:
        raise _FuncError(f"can't slice item of type {go_type_name(item)}")
    idx = [0, cap, 0]
    for i, index in enumerate(indexes):
        # Go 1.19 does not unwrap interface-typed indexes here.
        idx[i] = _index_arg(index, cap)
    if idx[0] > idx[1]:
        raise _FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise _FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    if isinstance(item, str):
        return b[idx[0] : idx[1]].decode("utf-8", "surrogateescape")
    return list(item[idx[0] : idx[1]])


def _f_call(fn: object, *args: object) -> object:
    fn = _unbox(fn)
    if fn is INVALID:
        raise _FuncError("call of nil")
    raise _FuncError(f"non-function of type {go_type_name(fn)}")


def _eval_args_string(args: tuple) -> str:
    # html/js/urlquery: a single string argument is used as is, else Sprint.
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if a is None else a for a in args])


def _f_html(*args: object) -> str:
    s = _eval_args_string(args)
    out = []
    for c in s:
        out.append(
            {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}.get(c, c)
        )
    return "".join(out)


def _f_js(*args: object) -> str:
    s = _eval_args_string(args)
    out = []
    for c in s:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif c == "'":
            out.append("\\'")
        elif c == '"':
            out.append('\\"')
        elif c == "<":
            out.append("\\u003C")
        elif c == ">":
            out.append("\\u003E")
        elif c == "&":
            out.append("\\u0026")
        elif c == "=":
            out.append("\\u003D")
        elif o < 0x20:
            out.append(f"\\u{o:04X}")
        elif o >= 0x80 and not (c.isprintable() and not c.isspace()):
            out.append(f"\\u{o:04X}")
        else:
            out.append(c)
    return "".join(out)


def _f_urlquery(*args: object) -> str:
    s = _eval_args_string(args)
    out = []
    for b in utf8_bytes(s):
        c = chr(b)
        if c.isalnum() and b < 0x80 or c in "-_.~":
            out.append(c)
        elif c == " ":
            out.append("+")
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


_BUILTINS: dict[str, _Func] = {
    f.name: f
    for f in [
        _Func("and", [_VALUE], _VALUE, lambda *a: None),
        _Func("or", [_VALUE], _VALUE, lambda *a: None),
        _Func("not", [_VALUE], None, _f_not),
        _Func("len", [_VALUE], None, _f_len),
        _Func("index", [_VALUE], _VALUE, _f_index),
        _Func("slice", [_VALUE], _VALUE, _f_slice),
        _Func("call", [_VALUE], _VALUE, _f_call),
        _Func("eq", [_VALUE], _VALUE, _f_eq),
        _Func("ne", [_VALUE, _VALUE], None, _f_ne),
        _Func("lt", [_VALUE, _VALUE], None, _f_lt),
        _Func("le", [_VALUE, _VALUE], None, _f_le),
        _Func("gt", [_VALUE, _VALUE], None, _f_gt),
        _Func("ge", [_VALUE, _VALUE], None, _f_ge),
        _Func("print", [], _ANY, lambda *a: sprint(list(a))),
        _Func("printf", [_STRING], _ANY, lambda f, *a: sprintf(f, list(a))),
        _Func("println", [], _ANY, lambda *a: sprintln(list(a))),
        _Func("html", [], _ANY, _f_html),
        _Func("js", [], _ANY, _f_js),
        _Func("urlquery", [], _ANY, _f_urlquery),
    ]
}


def _go_type_of_param(kind: str) -> str:
    return {"reflect.Value": "reflect.Value", "interface {}": "interface {}", "string": "string"}[kind]


class _Exec:
    """Go's exec state: output, variable stack, current node for errors."""

    def __init__(self, trees: dict[str, Tree], text: str, parse_name: str) -> None:
        self.trees = trees
        self.parse_name = parse_name
        self.text = text
        self.out: list[str] = []
        self.vars: list[list] = []
        self.node: Optional[Node] = None
        self.tmpl_name = ""
        self.depth = 0

    # errors ------------------------------------------------------------------
    def errorf(self, msg: str) -> None:
        name = self.tmpl_name
        if self.node is None:
            raise _ExecFailure(TemplateError(self.parse_name, 1, 0, msg))
        line, col = position_of(self.text, self.node.pos)
        context = self.node.go_string()
        err = TemplateError(self.parse_name, line, col, f"executing {quote(name)} at <{context}>: {msg}")
        raise _ExecFailure(err)

    def at(self, node: Node) -> None:
        self.node = node

    # variables -----------------------------------------------------------------
    def mark(self) -> int:
        return len(self.vars)

    def pop(self, mark: int) -> None:
        del self.vars[mark:]

    def push(self, name: str, value: object) -> None:
        self.vars.append([name, value])

    def set_var(self, name: str, value: object) -> None:
        for v in reversed(self.vars):
            if v[0] == name:
                v[1] = value
                return
        self.errorf(f"undefined variable: {name}")

    def var_value(self, name: str) -> object:
        for v in reversed(self.vars):
            if v[0] == name:
                return v[1]
        self.errorf(f"undefined variable: {name}")
        raise AssertionError

    # walk ----------------------------------------------------------------------
    def run(self, name: str, data: object) -> None:
        tree = self.trees.get(name)
        self.tmpl_name = name
        dot = INVALID if data is None else data
        self.vars = [["$", dot]]
        if tree is None or tree.root is None:
            self.errorf(f"{quote(name)} is an incomplete or empty template")
        self.walk(dot, tree.root)  # type: ignore[union-attr]

    def walk(self, dot: object, node: Node) -> None:
        self.at(node)
        if isinstance(node, ActionNode):
            val = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.print_value(node, val)
        elif isinstance(node, TextNode):
            self.out.append(node.text)
        elif isinstance(node, ListNode):
            for n in node.nodes:
                self.walk(dot, n)
        elif isinstance(node, IfNode):
            self.walk_if_or_with(False, dot, node)
        elif isinstance(node, WithNode):
            self.walk_if_or_with(True, dot, node)
        elif isinstance(node, RangeNode):
            self.walk_range(dot, node)
        elif isinstance(node, TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, BreakNode):
            raise _Break()
        elif isinstance(node, ContinueNode):
            raise _Continue()
        elif isinstance(node, CommentNode):
            pass
        else:
            self.errorf(f"unknown node: {node.go_string()}")

    def walk_if_or_with(self, is_with: bool, dot: object, node) -> None:
        mark = self.mark()
        try:
            val = self.eval_pipeline(dot, node.pipe)
            truth, ok = _is_true(_unbox(val))
            if truth:
                self.walk(val if is_with else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            self.pop(mark)

    def walk_range(self, dot: object, r: RangeNode) -> None:
        self.at(r)
        outer = self.mark()
        try:
            val, _ = _indirect(self.eval_pipeline(dot, r.pipe))
            mark = self.mark()

            def one(index: object, elem: object) -> None:
                if r.pipe.decl:
                    self.vars[-1][1] = elem
                if len(r.pipe.decl) > 1:
                    self.vars[-2][1] = index
                try:
                    self.walk(elem, r.list)
                except _Continue:
                    pass
                finally:
                    self.pop(mark)

            try:
                if isinstance(val, (list, tuple)):
                    if len(val):
                        for i, e in enumerate(val):
                            one(i, Boxed(e))
                        return
                elif isinstance(val, dict):
                    if len(val):
                        for k in sort_map_keys(val):
                            one(k, Boxed(val[k]))
                        return
                elif val is INVALID or (isinstance(val, Boxed) and val.v is None):
                    pass
                else:
                    try:
                        shown = sprint([val])
                    except UnsupportedFormat:
                        shown = f"a value of Python type {type(val).__name__}"
                    self.errorf(f"range can't iterate over {shown}")
            except _Break:
                return
            if r.else_list is not None:
                self.walk(dot, r.else_list)
        finally:
            self.pop(outer)

    def walk_template(self, dot: object, t: TemplateNode) -> None:
        self.at(t)
        tree = self.trees.get(t.name)
        if tree is None:
            self.errorf(f"template {quote(t.name)} not defined")
        if self.depth >= _MAX_EXEC_DEPTH:
            self.errorf(f"exceeded maximum template depth ({_MAX_EXEC_DEPTH})")
        dot = self.eval_pipeline(dot, t.pipe)
        saved = (self.vars, self.tmpl_name, self.depth)
        self.vars = [["$", dot]]
        self.tmpl_name = t.name
        self.depth += 1
        try:
            self.walk(dot, tree.root)  # type: ignore[union-attr]
        finally:
            self.vars, self.tmpl_name, self.depth = saved

    # evaluation -------------------------------------------------------------
    def eval_pipeline(self, dot: object, pipe: Optional[PipeNode]) -> object:
        if pipe is None:
            return INVALID
        self.at(pipe)
        value = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
            if isinstance(value, Boxed):
                value = INVALID if value.v is None else value.v
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var.ident[0], value)
            else:
                self.push(var.ident[0], value)
        return value

    def not_a_function(self, args: list, final: object) -> None:
        if (args is not None and len(args) > 1) or final is not MISSING:
            self.errorf(f"can't give argument to non-function {args[0].go_string()}")

    def eval_command(self, dot: object, cmd: CommandNode, final: object) -> object:
        first = cmd.args[0]
        if isinstance(first, FieldNode):
            return self.eval_field_node(dot, first, cmd.args, final)
        if isinstance(first, ChainNode):
            return self.eval_chain_node(dot, first, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, PipeNode):
            self.not_a_function(cmd.args, final)
            return self.eval_pipeline(dot, first)
        if isinstance(first, VariableNode):
            return self.eval_variable_node(dot, first, cmd.args, final)
        self.at(first)
        self.not_a_function(cmd.args, final)
        if isinstance(first, BoolNode):
            return first.true
        if isinstance(first, DotNode):
            return dot
        if isinstance(first, NilNode):
            self.errorf("nil is not a command")
        if isinstance(first, NumberNode):
            return self.ideal_constant(first)
        if isinstance(first, StringNode):
            return first.text
        self.errorf(f"can't evaluate command {quote(first.go_string())}")
        raise AssertionError

    def ideal_constant(self, c: NumberNode) -> object:
        self.at(c)
        t = c.text
        is_hex_int = len(t) > 2 and t[0] == "0" and t[1] in "xX" and not any(ch in t for ch in "pP")
        is_rune = t.startswith("'")
        if c.is_complex:
            return c.complex128
        if c.is_float and not is_hex_int and not is_rune and any(ch in t for ch in ".eEpP"):
            return c.float64
        if c.is_int:
            return c.int64
        if c.is_uint:
            self.errorf(f"{t} overflows int")
        return INVALID

    def eval_field_node(self, dot: object, field: FieldNode, args: list, final: object) -> object:
        self.at(field)
        return self.eval_field_chain(dot, dot, field, field.ident, args, final)

    def eval_chain_node(self, dot: object, chain: ChainNode, args: list, final: object) -> object:
        self.at(chain)
        if isinstance(chain.node, NilNode):
            self.errorf(f"indirection through explicit nil in {chain.go_string()}")
        pipe = self.eval_arg(dot, None, chain.node)
        return self.eval_field_chain(dot, pipe, chain, chain.fields, args, final)

    def eval_variable_node(self, dot: object, var: VariableNode, args: list, final: object) -> object:
        self.at(var)
        value = self.var_value(var.ident[0])
        if len(var.ident) == 1:
            self.not_a_function(args, final)
            return value
        return self.eval_field_chain(dot, value, var, var.ident[1:], args, final)

    def eval_field_chain(self, dot: object, receiver: object, node: Node, ident: list, args: list,
                         final: object) -> object:
        for name in ident[:-1]:
            receiver = self.eval_field(dot, name, node, None, MISSING, receiver)
        return self.eval_field(dot, ident[-1], node, args, final, receiver)

    def eval_function(self, dot: object, node: IdentifierNode, cmd: Node, args: Optional[list],
                      final: object) -> object:
        self.at(node)
        fn = _BUILTINS.get(node.ident)
        if fn is None:
            self.errorf(f"{quote(node.ident)} is not a defined function")
        return self.eval_call(dot, fn, cmd, node.ident, args, final)  # type: ignore[arg-type]

    def eval_field(self, dot: object, name: str, node: Node, args: Optional[list], final: object,
                   receiver: object) -> object:
        if receiver is INVALID:
            self.errorf(f"nil data; no entry for key {quote(name)}")
        typ = go_type_name(receiver)
        recv, is_nil = _indirect(receiver)
        if is_nil:
            self.errorf(f"nil pointer evaluating {typ}.{name}")
        has_args = (args is not None and len(args) > 1) or final is not MISSING
        if isinstance(recv, dict):
            if has_args:
                self.errorf(f"{name} is not a method but has arguments")
            if name in recv:
                return Boxed(recv[name])
            self.errorf(f"map has no entry for key {quote(name)}")
        self.errorf(f"can't evaluate field {name} in type {typ}")
        raise AssertionError

    def eval_call(self, dot: object, fn: _Func, node: Node, name: str, args: Optional[list],
                  final: object) -> object:
        argn = args[1:] if args is not None else []
        num_in = len(argn) + (1 if final is not MISSING else 0)
        num_fixed = len(argn)
        if fn.variadic:
            num_fixed = len(fn.fixed)
            if num_in < num_fixed:
                self.errorf(f"wrong number of args for {name}: want at least {num_fixed} got {len(argn)}")
        elif num_in != fn.num_in:
            self.errorf(f"wrong number of args for {name}: want {fn.num_in} got {num_in}")

        if name in ("and", "or"):
            v: object = INVALID
            for a in argn:
                v = self.eval_arg(dot, _VALUE, a)
                if _is_true(_unbox(v))[0] == (name == "or"):
                    return v
            if final is not MISSING:
                v = final
            return v

        argv: list = []
        i = 0
        while i < num_fixed and i < len(argn):
            argv.append(self.eval_arg(dot, fn.fixed[i], argn[i]))
            i += 1
        if fn.variadic:
            while i < len(argn):
                argv.append(self.eval_arg(dot, fn.variadic, argn[i]))
                i += 1
        if final is not MISSING:
            if fn.variadic and num_in - 1 >= num_fixed:
                t = fn.variadic
            else:
                t = (fn.fixed + [fn.variadic or ""])[num_in - 1]
            argv.append(self.validate_type(final, t))
        try:
            # interface{} parameters see the dynamic value, not the box
            result = fn.fn(*argv)
        except _FuncError as e:
            self.at(node)
            self.errorf(f"error calling {name}: {e}")
        except UnsupportedFormat as e:
            self.at(node)
            self.errorf(f"error calling {name}: {e}")
        return result

    def validate_type(self, value: object, typ: Optional[str]) -> object:
        if value is INVALID:
            if typ is None or typ == _VALUE:
                return INVALID
            if typ == _ANY:
                return None
            self.errorf(f"invalid value; expected {typ}")
        if typ == _VALUE or typ is None:
            return value
        if typ == _ANY:
            return value.v if isinstance(value, Boxed) else value
        # string parameter
        if isinstance(value, str):
            return value
        if isinstance(value, Boxed) and value.v is not None:
            value = value.v
            if isinstance(value, str):
                return value
        self.errorf(f"wrong type for value; expected {typ}; got {go_type_name(value)}")
        raise AssertionError

    def eval_arg(self, dot: object, typ: Optional[str], n: Node) -> object:
        self.at(n)
        if isinstance(n, DotNode):
            return self.validate_type(dot, typ)
        if isinstance(n, NilNode):
            if typ in (_VALUE, _ANY):
                return INVALID if typ == _VALUE else None
            if typ is None:
                return INVALID
            self.errorf(f"cannot assign nil to {typ}")
        if isinstance(n, FieldNode):
            return self.validate_type(self.eval_field_node(dot, n, [n], MISSING), typ)
        if isinstance(n, VariableNode):
            return self.validate_type(self.eval_variable_node(dot, n, None, MISSING), typ)
        if isinstance(n, PipeNode):
            return self.validate_type(self.eval_pipeline(dot, n), typ)
        if isinstance(n, IdentifierNode):
            return self.validate_type(self.eval_function(dot, n, n, None, MISSING), typ)
        if isinstance(n, ChainNode):
            return self.validate_type(self.eval_chain_node(dot, n, None, MISSING), typ)
        if typ == _STRING:
            self.at(n)
            if isinstance(n, StringNode):
                return n.text
            self.errorf(f"expected string; found {n.go_string()}")
        if typ in (_ANY, _VALUE) or typ is None:
            return self.eval_empty_interface(dot, n)
        self.errorf(f"can't handle {n.go_string()} for arg of type {typ}")
        raise AssertionError

    def eval_empty_interface(self, dot: object, n: Node) -> object:
        self.at(n)
        if isinstance(n, BoolNode):
            return n.true
        if isinstance(n, NumberNode):
            return self.ideal_constant(n)
        if isinstance(n, StringNode):
            return n.text
        self.errorf(f"can't handle assignment of {n.go_string()} to empty interface argument")
        raise AssertionError

    def print_value(self, node: Node, v: object) -> None:
        self.at(node)
        if v is INVALID:
            self.out.append("<no value>")
            return
        try:
            self.out.append(sprint([v]))
        except UnsupportedFormat as e:
            self.errorf(str(e))
