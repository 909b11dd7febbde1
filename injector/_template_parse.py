"""Lexer, parse tree and parser for injector.template (Go text/template syntax).

The structure follows Go 1.19's text/template/parse closely on purpose: which
token the parser has looked at when it fails decides the line Go reports, so
matching Go's error positions means matching its lookahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

__all__ = ["TemplateError", "parse_trees", "Tree", "position_of"]


class TemplateError(ValueError):
    """A template syntax or execution error.

    ``str(e)`` is one line, ``"<name>:<line>:<col>: <message>"``; line is
    1-based, col is the byte offset within the line (0-based), as Go reports
    positions in execution errors.
    """

    def __init__(self, name: str, line: int, col: int, message: str) -> None:
        self.name = name
        self.line = line
        self.col = col
        self.message = message
        super().__init__(f"{name}:{line}:{col}: {message}")


# ------------------------------------------------------------------ tokens

ERROR = "error"
BOOL = "bool"
CHAR = "char"
CHARCONST = "charconst"
COMPLEX = "complex"
ASSIGN = "assign"
DECLARE = "declare"
EOF = "EOF"
FIELD = "field"
IDENT = "identifier"
LDELIM = "leftdelim"
LPAREN = "("
NUMBER = "number"
PIPE = "|"
RAWSTRING = "rawstring"
RDELIM = "rightdelim"
RPAREN = ")"
SPACE = "space"
STRING = "string"
TEXT = "text"
VARIABLE = "variable"
# keywords
K_BLOCK = "block"
K_BREAK = "break"
K_CONTINUE = "continue"
K_DOT = "."
K_DEFINE = "define"
K_ELSE = "else"
K_END = "end"
K_IF = "if"
K_NIL = "nil"
K_RANGE = "range"
K_TEMPLATE = "template"
K_WITH = "with"

KEYWORDS = {
    ".": K_DOT,
    "block": K_BLOCK,
    "break": K_BREAK,
    "continue": K_CONTINUE,
    "define": K_DEFINE,
    "else": K_ELSE,
    "end": K_END,
    "if": K_IF,
    "range": K_RANGE,
    "nil": K_NIL,
    "template": K_TEMPLATE,
    "with": K_WITH,
}
_KEYWORD_TYPES = set(KEYWORDS.values())

SPACE_CHARS = " \t\r\n"
LEFT_DELIM = "{{"
RIGHT_DELIM = "}}"
LEFT_COMMENT = "/*"
RIGHT_COMMENT = "*/"


def _go_quote_prec(s: str, n: int) -> str:
    from ._template_fmt import quote

    return quote(s[:n])


def go_char_desc(ch: str) -> str:
    """fmt's %#U of a rune: U+0041 'A'."""
    o = ord(ch)
    s = f"U+{o:04X}"
    if ch.isprintable() or ch == " ":
        s += f" '{ch}'"
    return s


@dataclass
class Token:
    typ: str
    pos: int
    val: str
    line: int

    def __str__(self) -> str:
        from ._template_fmt import quote

        if self.typ == EOF:
            return "EOF"
        if self.typ == ERROR:
            return self.val
        if self.typ in _KEYWORD_TYPES:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return _go_quote_prec(self.val, 10) + "..."
        return quote(self.val)


def _is_space(c: str) -> bool:
    return c in (" ", "\t", "\r", "\n") and c != ""


def _is_alnum(c: str) -> bool:
    return c == "_" or (c != "" and (c.isalpha() or c.isdecimal()))


def _has_left_trim(s: str, i: int) -> bool:
    return len(s) >= i + 2 and s[i] == "-" and s[i + 1] in SPACE_CHARS


def _has_right_trim(s: str, i: int) -> bool:
    return len(s) >= i + 2 and s[i] in SPACE_CHARS and s[i + 1] == "-"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.start = 0
        self.line = 1
        self.start_line = 1
        self.paren_depth = 0
        self.items: list[Token] = []
        self.at_eof = False

    # primitives -----------------------------------------------------------
    def next(self) -> str:
        if self.pos >= len(self.input):
            self.at_eof = True
            return ""
        c = self.input[self.pos]
        self.pos += 1
        if c == "\n":
            self.line += 1
        return c

    def peek(self) -> str:
        if self.pos >= len(self.input):
            return ""
        return self.input[self.pos]

    def backup(self) -> None:
        if not self.at_eof and self.pos > 0:
            self.pos -= 1
            if self.input[self.pos] == "\n":
                self.line -= 1

    def emit(self, typ: str) -> None:
        self.items.append(Token(typ, self.start, self.input[self.start : self.pos], self.start_line))
        self.start = self.pos
        self.start_line = self.line

    def ignore(self) -> None:
        self.line += self.input.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line

    def accept(self, valid: str) -> bool:
        c = self.next()
        if c != "" and c in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while True:
            c = self.next()
            if c == "" or c not in valid:
                break
        self.backup()

    def errorf(self, msg: str):
        self.items.append(Token(ERROR, self.start, msg, self.start_line))
        return None

    def run(self) -> list[Token]:
        state = self.lex_text
        while state is not None:
            state = state()
        return self.items

    # states ---------------------------------------------------------------
    def lex_text(self):
        x = self.input.find(LEFT_DELIM, self.pos)
        if x >= 0:
            self.pos = x
            trim = 0
            if _has_left_trim(self.input, self.pos + len(LEFT_DELIM)):
                seg = self.input[self.start : self.pos]
                trim = len(seg) - len(seg.rstrip(SPACE_CHARS))
            self.pos -= trim
            if self.pos > self.start:
                self.line += self.input.count("\n", self.start, self.pos)
                self.emit(TEXT)
            self.pos += trim
            self.ignore()
            return self.lex_left_delim
        self.pos = len(self.input)
        if self.pos > self.start:
            self.line += self.input.count("\n", self.start, self.pos)
            self.emit(TEXT)
        self.emit(EOF)
        return None

    def at_right_delim(self) -> tuple[bool, bool]:
        if _has_right_trim(self.input, self.pos) and self.input.startswith(RIGHT_DELIM, self.pos + 2):
            return True, True
        if self.input.startswith(RIGHT_DELIM, self.pos):
            return True, False
        return False, False

    def lex_left_delim(self):
        self.pos += len(LEFT_DELIM)
        trim = _has_left_trim(self.input, self.pos)
        after = 2 if trim else 0
        if self.input.startswith(LEFT_COMMENT, self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        self.emit(LDELIM)
        self.pos += after
        self.ignore()
        self.paren_depth = 0
        return self.lex_inside_action

    def lex_comment(self):
        self.pos += len(LEFT_COMMENT)
        i = self.input.find(RIGHT_COMMENT, self.pos)
        if i < 0:
            return self.errorf("unclosed comment")
        self.pos = i + len(RIGHT_COMMENT)
        delim, trim = self.at_right_delim()
        if not delim:
            return self.errorf("comment ends before closing delimiter")
        if trim:
            self.pos += 2
        self.pos += len(RIGHT_DELIM)
        if trim:
            rest = self.input[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(SPACE_CHARS))
        self.ignore()
        return self.lex_text

    def lex_right_delim(self):
        trim = _has_right_trim(self.input, self.pos)
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += len(RIGHT_DELIM)
        self.emit(RDELIM)
        if trim:
            rest = self.input[self.pos :]
            self.pos += len(rest) - len(rest.lstrip(SPACE_CHARS))
            self.ignore()
        return self.lex_text

    def lex_inside_action(self):
        delim, _ = self.at_right_delim()
        if delim:
            if self.paren_depth == 0:
                return self.lex_right_delim
            return self.errorf("unclosed left paren")
        r = self.next()
        if r == "":
            return self.errorf("unclosed action")
        if _is_space(r):
            self.backup()
            return self.lex_space
        if r == "=":
            self.emit(ASSIGN)
        elif r == ":":
            if self.next() != "=":
                return self.errorf("expected :=")
            self.emit(DECLARE)
        elif r == "|":
            self.emit(PIPE)
        elif r == '"':
            return self.lex_quote
        elif r == "`":
            return self.lex_raw_quote
        elif r == "$":
            return self.lex_variable
        elif r == "'":
            return self.lex_char
        elif r == "." and self.pos < len(self.input) and not ("0" <= self.input[self.pos] <= "9"):
            return self.lex_field
        elif r in ".+-" or "0" <= r <= "9":
            self.backup()
            return self.lex_number
        elif _is_alnum(r):
            self.backup()
            return self.lex_identifier
        elif r == "(":
            self.emit(LPAREN)
            self.paren_depth += 1
        elif r == ")":
            self.emit(RPAREN)
            self.paren_depth -= 1
            if self.paren_depth < 0:
                return self.errorf(f"unexpected right paren {go_char_desc(r)}")
        elif ord(r) < 0x80 and r.isprintable():
            self.emit(CHAR)
        else:
            return self.errorf(f"unrecognized character in action: {go_char_desc(r)}")
        return self.lex_inside_action

    def lex_space(self):
        n = 0
        while True:
            r = self.peek()
            if not _is_space(r):
                break
            self.next()
            n += 1
        if _has_right_trim(self.input, self.pos - 1) and self.input.startswith(RIGHT_DELIM, self.pos + 1):
            self.backup()
            if n == 1:
                return self.lex_right_delim
        self.emit(SPACE)
        return self.lex_inside_action

    def lex_identifier(self):
        while True:
            r = self.next()
            if _is_alnum(r):
                continue
            self.backup()
            word = self.input[self.start : self.pos]
            if not self.at_terminator():
                return self.errorf(f"bad character {go_char_desc(r)}")
            if word in KEYWORDS and KEYWORDS[word] != K_DOT:
                self.emit(KEYWORDS[word])
            elif word[0] == ".":
                self.emit(FIELD)
            elif word in ("true", "false"):
                self.emit(BOOL)
            else:
                self.emit(IDENT)
            return self.lex_inside_action

    def lex_field(self):
        return self._lex_field_or_variable(FIELD)

    def lex_variable(self):
        if self.at_terminator():
            self.emit(VARIABLE)
            return self.lex_inside_action
        return self._lex_field_or_variable(VARIABLE)

    def _lex_field_or_variable(self, typ: str):
        if self.at_terminator():
            self.emit(VARIABLE if typ == VARIABLE else K_DOT)
            return self.lex_inside_action
        while True:
            r = self.next()
            if not _is_alnum(r):
                self.backup()
                break
        if not self.at_terminator():
            return self.errorf(f"bad character {go_char_desc(r)}")
        self.emit(typ)
        return self.lex_inside_action

    def at_terminator(self) -> bool:
        r = self.peek()
        if r == "" or _is_space(r):
            return True
        return r in ".,|:)(" or self.input.startswith(RIGHT_DELIM, self.pos)

    def lex_char(self):
        while True:
            c = self.next()
            if c == "\\":
                c2 = self.next()
                if c2 != "" and c2 != "\n":
                    continue
                return self.errorf("unterminated character constant")
            if c == "" or c == "\n":
                return self.errorf("unterminated character constant")
            if c == "'":
                break
        self.emit(CHARCONST)
        return self.lex_inside_action

    def lex_number(self):
        if not self.scan_number():
            return self.errorf("bad number syntax: " + _go_quote_full(self.input[self.start : self.pos]))
        sign = self.peek()
        if sign in ("+", "-") and sign != "":
            if not self.scan_number() or self.input[self.pos - 1] != "i":
                return self.errorf("bad number syntax: " + _go_quote_full(self.input[self.start : self.pos]))
            self.emit(COMPLEX)
        else:
            self.emit(NUMBER)
        return self.lex_inside_action

    def scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if _is_alnum(self.peek()):
            self.next()
            return False
        return True

    def lex_quote(self):
        while True:
            c = self.next()
            if c == "\\":
                c2 = self.next()
                if c2 != "" and c2 != "\n":
                    continue
                return self.errorf("unterminated quoted string")
            if c == "" or c == "\n":
                return self.errorf("unterminated quoted string")
            if c == '"':
                break
        self.emit(STRING)
        return self.lex_inside_action

    def lex_raw_quote(self):
        while True:
            c = self.next()
            if c == "":
                return self.errorf("unterminated raw quoted string")
            if c == "`":
                break
        self.emit(RAWSTRING)
        return self.lex_inside_action


def _go_quote_full(s: str) -> str:
    from ._template_fmt import quote

    return quote(s)


# ------------------------------------------------------------------ Go literal syntax


class _Syntax(Exception):
    """strconv.ErrSyntax / ErrRange with Go's message."""


_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unquote_char(s: str, i: int, quote: str) -> tuple[Union[str, int], int, bool]:
    """One character of a quoted literal at s[i]: (value, next index, is_byte).

    A \\x or octal escape yields a byte (int), anything else a character."""
    c = s[i]
    if c == quote and quote in "'\"":
        raise _Syntax("invalid syntax")
    if c != "\\":
        return c, i + 1, False
    if i + 1 >= len(s):
        raise _Syntax("invalid syntax")
    c = s[i + 1]
    i += 2
    if c in _SIMPLE_ESC:
        return _SIMPLE_ESC[c], i, False
    if c in "xuU":
        n = {"x": 2, "u": 4, "U": 8}[c]
        h = s[i : i + n]
        if len(h) < n or any(ch not in "0123456789abcdefABCDEF" for ch in h):
            raise _Syntax("invalid syntax")
        v = int(h, 16)
        if c == "x":
            return v, i + n, True
        if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
            raise _Syntax("invalid syntax")
        return chr(v), i + n, False
    if "0" <= c <= "7":
        o = s[i - 1 : i + 2]
        if len(o) < 3 or any(ch not in "01234567" for ch in o):
            raise _Syntax("invalid syntax")
        v = int(o, 8)
        if v > 255:
            raise _Syntax("invalid syntax")
        return v, i + 2, True
    if c in "'\"":
        if c != quote:
            raise _Syntax("invalid syntax")
        return c, i, False
    raise _Syntax("invalid syntax")


def _byte_char(b: int) -> str:
    # Bytes that are not ASCII are kept as surrogateescape characters so the
    # output can carry exactly the bytes Go would write.
    return chr(b) if b < 0x80 else chr(0xDC00 + b)


def go_unquote(s: str) -> str:
    """strconv.Unquote for "..." and `...` literals."""
    if len(s) < 2 or s[0] != s[-1]:
        raise _Syntax("invalid syntax")
    q = s[0]
    body = s[1:-1]
    if q == "`":
        if "`" in body:
            raise _Syntax("invalid syntax")
        return body.replace("\r", "")
    if q != '"':
        raise _Syntax("invalid syntax")
    if "\n" in body:
        raise _Syntax("invalid syntax")
    out = []
    i = 0
    while i < len(body):
        v, i, is_byte = _unquote_char(body, i, q)
        out.append(_byte_char(v) if is_byte else v)  # type: ignore[arg-type]
    return "".join(out)


def go_unquote_char_const(text: str) -> int:
    """Value of a character constant like 'a' or '\\n'."""
    v, i, is_byte = _unquote_char(text, 1, "'")
    if text[i:] != "'":
        raise _Syntax(f"malformed character constant: {text}")
    return v if isinstance(v, int) else ord(v)


def _underscore_ok(s: str) -> bool:
    saw = "^"
    i = 0
    if s and s[0] in "+-":
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def _parse_uint(s: str) -> Optional[int]:
    """strconv.ParseUint(s, 0, 64), None on any error."""
    if not s or s[0] in "+-":
        return None
    base = 10
    body = s
    if s[0] == "0":
        if len(s) >= 3 and s[1] in "xX":
            base, body = 16, s[2:]
        elif len(s) >= 3 and s[1] in "oO":
            base, body = 8, s[2:]
        elif len(s) >= 3 and s[1] in "bB":
            base, body = 2, s[2:]
        else:
            base, body = 8, s[1:] or "0"
    if "_" in s:
        if not _underscore_ok(s):
            return None
        body = body.replace("_", "")
    if not body:
        return None
    valid = "0123456789abcdef"[:base]
    if any(c.lower() not in valid for c in body):
        return None
    v = int(body, base)
    if v >= 1 << 64:
        return None
    return v


def _parse_int(s: str) -> Optional[int]:
    neg = False
    t = s
    if t and t[0] in "+-":
        neg = t[0] == "-"
        t = t[1:]
    u = _parse_uint(t)
    if u is None:
        return None
    v = -u if neg else u
    if v < -(1 << 63) or v > (1 << 63) - 1:
        return None
    return v


def _parse_float(s: str) -> Optional[float]:
    """strconv.ParseFloat(s, 64) for the literal forms the lexer produces."""
    t = s
    sign = 1.0
    if t and t[0] in "+-":
        sign = -1.0 if t[0] == "-" else 1.0
        t = t[1:]
    if "_" in t:
        if not _underscore_ok(t):
            return None
        t = t.replace("_", "")
    if not t:
        return None
    try:
        if t[:2] in ("0x", "0X"):
            if "p" not in t.lower():
                # Hex mantissa without exponent is not a valid float literal.
                return None
            v = float.fromhex(t)
        else:
            low = t.lower()
            if any(c not in "0123456789.e+-" for c in low) or low.count(".") > 1:
                return None
            if low.startswith("e") or low.startswith("."*2):
                return None
            v = float(t)
    except (ValueError, OverflowError):
        return None
    if math.isinf(v):
        return None  # Go reports ErrRange
    return sign * v


# ------------------------------------------------------------------ nodes


class Node:
    pos: int

    def go_string(self) -> str:  # Go's Node.String()
        raise NotImplementedError


@dataclass(eq=False)
class ListNode(Node):
    pos: int
    nodes: list = field(default_factory=list)

    def go_string(self) -> str:
        return "".join(n.go_string() for n in self.nodes)


@dataclass(eq=False)
class TextNode(Node):
    pos: int
    text: str

    def go_string(self) -> str:
        from ._template_fmt import quote

        return quote(self.text)


@dataclass(eq=False)
class CommentNode(Node):
    pos: int
    text: str

    def go_string(self) -> str:
        return "{{" + self.text + "}}"


@dataclass(eq=False)
class VariableNode(Node):
    pos: int
    ident: list

    def go_string(self) -> str:
        return ".".join(self.ident)


@dataclass(eq=False)
class PipeNode(Node):
    pos: int
    line: int
    is_assign: bool = False
    decl: list = field(default_factory=list)
    cmds: list = field(default_factory=list)

    def go_string(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(v.go_string() for v in self.decl) + " := "
        return s + " | ".join(c.go_string() for c in self.cmds)


@dataclass(eq=False)
class ActionNode(Node):
    pos: int
    line: int
    pipe: PipeNode

    def go_string(self) -> str:
        return "{{" + self.pipe.go_string() + "}}"


@dataclass(eq=False)
class CommandNode(Node):
    pos: int
    args: list = field(default_factory=list)

    def go_string(self) -> str:
        parts = []
        for a in self.args:
            if isinstance(a, PipeNode):
                parts.append("(" + a.go_string() + ")")
            else:
                parts.append(a.go_string())
        return " ".join(parts)


@dataclass(eq=False)
class IdentifierNode(Node):
    pos: int
    ident: str

    def go_string(self) -> str:
        return self.ident


@dataclass(eq=False)
class DotNode(Node):
    pos: int

    def go_string(self) -> str:
        return "."


@dataclass(eq=False)
class NilNode(Node):
    pos: int

    def go_string(self) -> str:
        return "nil"


@dataclass(eq=False)
class FieldNode(Node):
    pos: int
    ident: list

    def go_string(self) -> str:
        return "".join("." + i for i in self.ident)


@dataclass(eq=False)
class ChainNode(Node):
    pos: int
    node: Node
    fields: list = field(default_factory=list)

    def go_string(self) -> str:
        if isinstance(self.node, PipeNode):
            s = "(" + self.node.go_string() + ")"
        else:
            s = self.node.go_string()
        return s + "".join("." + f for f in self.fields)


@dataclass(eq=False)
class BoolNode(Node):
    pos: int
    true: bool

    def go_string(self) -> str:
        return "true" if self.true else "false"


@dataclass(eq=False)
class NumberNode(Node):
    pos: int
    text: str
    is_int: bool = False
    is_uint: bool = False
    is_float: bool = False
    is_complex: bool = False
    int64: int = 0
    uint64: int = 0
    float64: float = 0.0
    complex128: complex = 0j

    def go_string(self) -> str:
        return self.text


@dataclass(eq=False)
class StringNode(Node):
    pos: int
    quoted: str
    text: str

    def go_string(self) -> str:
        return self.quoted


@dataclass(eq=False)
class _EndNode(Node):
    pos: int

    def go_string(self) -> str:
        return "{{end}}"


@dataclass(eq=False)
class _ElseNode(Node):
    pos: int
    line: int

    def go_string(self) -> str:
        return "{{else}}"


@dataclass(eq=False)
class BranchNode(Node):
    pos: int
    line: int
    pipe: PipeNode
    list: ListNode
    else_list: Optional[ListNode]
    keyword: str = ""

    def go_string(self) -> str:
        s = "{{" + self.keyword + " " + self.pipe.go_string() + "}}" + self.list.go_string()
        if self.else_list is not None:
            s += "{{else}}" + self.else_list.go_string()
        return s + "{{end}}"


class IfNode(BranchNode):
    pass


class RangeNode(BranchNode):
    pass


class WithNode(BranchNode):
    pass


@dataclass(eq=False)
class BreakNode(Node):
    pos: int
    line: int

    def go_string(self) -> str:
        return "{{break}}"


@dataclass(eq=False)
class ContinueNode(Node):
    pos: int
    line: int

    def go_string(self) -> str:
        return "{{continue}}"


@dataclass(eq=False)
class TemplateNode(Node):
    pos: int
    line: int
    name: str
    pipe: Optional[PipeNode]

    def go_string(self) -> str:
        from ._template_fmt import quote

        s = "{{template " + quote(self.name)
        if self.pipe is not None:
            s += " " + self.pipe.go_string()
        return s + "}}"


# ------------------------------------------------------------------ parser

BUILTIN_FUNCS = frozenset(
    "and call html index slice js len not or print printf println urlquery eq ge gt le lt ne".split()
)


def position_of(text: str, pos: int) -> tuple[int, int]:
    """(line, byte column) of character offset pos, the way Go counts them."""
    before = text[:pos]
    nl = before.rfind("\n")
    line_start = nl + 1
    col = len(before[line_start:].encode("utf-8", "surrogatepass"))
    return before.count("\n") + 1, col


class Tree:
    """One parsed template (the top-level text or a {{define}}d one)."""

    def __init__(self, name: str, parse_name: str, text: str) -> None:
        self.name = name
        self.parse_name = parse_name
        self.text = text
        self.root: Optional[ListNode] = None


class _ParseAbort(Exception):
    pass


_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _is_empty_tree(n: Optional[Node]) -> bool:
    if n is None or isinstance(n, CommentNode):
        return True
    if isinstance(n, ListNode):
        return all(_is_empty_tree(x) for x in n.nodes)
    if isinstance(n, TextNode):
        return n.text.strip(_GO_SPACE) == ""
    return False


class _Parser:
    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.tokens = _Lexer(text).run()
        self.i = 0  # index of the next token to hand out
        self.hi = 0  # highest token index fetched from the lexer so far
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.action_line = 0
        self.trees: dict[str, Tree] = {}

    # token stream -----------------------------------------------------------
    def _tok(self, idx: int) -> Token:
        if idx >= len(self.tokens):
            return self.tokens[-1]
        return self.tokens[idx]

    def next(self) -> Token:
        t = self._tok(self.i)
        if self.i > self.hi:
            self.hi = self.i
        self.i += 1
        return t

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> Token:
        t = self.next()
        self.backup()
        return t

    def next_non_space(self) -> Token:
        while True:
            t = self.next()
            if t.typ != SPACE:
                return t

    def peek_non_space(self) -> Token:
        t = self.next_non_space()
        self.backup()
        return t

    # errors -----------------------------------------------------------------
    def errorf(self, msg: str, tok: Optional[Token] = None, hi: Optional[int] = None) -> None:
        # Go reports the line of the most recently lexed token of the Tree
        # that reports the error.
        cur = self._tok(self.hi if hi is None else hi)
        t = tok or cur
        line = cur.line
        _, col = position_of(self.text, t.pos)
        if t.line != line:
            # Column belongs to another line than Go's; point at line start.
            col = 0
        raise TemplateError(self.name, line, col, msg)

    def unexpected(self, tok: Token, context: str) -> None:
        if tok.typ == ERROR:
            extra = ""
            if self.action_line != 0 and self.action_line != tok.line:
                extra = f" in action started at {self.name}:{self.action_line}"
                if tok.val.endswith(" action"):
                    extra = extra[len(" in action") :]
            self.errorf(f"{tok}{extra}", tok)
        self.errorf(f"unexpected {tok} in {context}", tok)

    def expect(self, typ: str, context: str) -> Token:
        t = self.next_non_space()
        if t.typ != typ:
            self.unexpected(t, context)
        return t

    # grammar ----------------------------------------------------------------
    def parse(self) -> dict[str, Tree]:
        top = Tree(self.name, self.name, self.text)
        top.root = ListNode(self.peek().pos)
        while self.peek().typ != EOF:
            if self.peek().typ == LDELIM:
                delim_i = self.i
                self.next()
                if self.next_non_space().typ == K_DEFINE:
                    self.parse_definition()
                    continue
                self.i = delim_i
            n = self.text_or_action()
            if isinstance(n, (_EndNode, _ElseNode)):
                self.errorf(f"unexpected {n.go_string()}")
            top.root.nodes.append(n)
        self.add(top)
        return self.trees

    def add(self, tree: Tree) -> None:
        old = self.trees.get(tree.name)
        if old is None or _is_empty_tree(old.root):
            self.trees[tree.name] = tree
            return
        if not _is_empty_tree(tree.root):
            self.errorf(f"template: multiple definition of template {_go_quote_full(tree.name)}")

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (STRING, RAWSTRING):
            self.unexpected(tok, context)
        try:
            name = go_unquote(tok.val)
        except _Syntax as e:
            self.errorf(str(e), tok)
        self.expect(RDELIM, context)
        self._parse_subtree(name, context, parent_reports=False)

    def _parse_subtree(self, name: str, context: str, parent_reports: bool) -> None:
        # A {{define}}/{{block}} body is parsed by a fresh Go Tree: its own
        # variable scope, range depth and action line, same token stream.
        # For {{block}} the enclosing Tree reports a bad end, with the line of
        # the last token it (not the block) read.
        parent_hi = self.hi
        saved = self.vars, self.range_depth, self.action_line
        self.vars, self.range_depth, self.action_line = ["$"], 0, 0
        tree = Tree(name, self.name, self.text)
        tree.root, end = self.item_list()
        if not isinstance(end, _EndNode):
            self.errorf(f"unexpected {end.go_string()} in {context}", hi=parent_hi if parent_reports else None)
        self.add(tree)
        self.vars, self.range_depth, self.action_line = saved

    def item_list(self) -> tuple[ListNode, Node]:
        lst = ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != EOF:
            n = self.text_or_action()
            if isinstance(n, (_EndNode, _ElseNode)):
                return lst, n
            lst.nodes.append(n)
        self.errorf("unexpected EOF")
        raise AssertionError

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.typ == TEXT:
            return TextNode(tok.pos, tok.val)
        if tok.typ == LDELIM:
            self.action_line = tok.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        self.unexpected(tok, "input")
        raise AssertionError

    def action(self) -> Node:
        tok = self.next_non_space()
        t = tok.typ
        if t == K_BLOCK:
            return self.block_control()
        if t == K_BREAK:
            return self.break_control(tok, "break")
        if t == K_CONTINUE:
            return self.break_control(tok, "continue")
        if t == K_ELSE:
            return self.else_control()
        if t == K_END:
            return _EndNode(self.expect(RDELIM, "end").pos)
        if t == K_IF:
            return self.control(IfNode, "if", True)
        if t == K_RANGE:
            return self.control(RangeNode, "range", False)
        if t == K_TEMPLATE:
            return self.template_control()
        if t == K_WITH:
            return self.control(WithNode, "with", False)
        self.backup()
        tok = self.peek()
        return ActionNode(tok.pos, tok.line, self.pipeline("command", RDELIM))

    def break_control(self, tok: Token, word: str) -> Node:
        t = self.next_non_space()
        if t.typ != RDELIM:
            self.unexpected(t, "{{" + word + "}}")
        if self.range_depth == 0:
            self.errorf("{{" + word + "}} outside {{range}}")
        return BreakNode(tok.pos, tok.line) if word == "break" else ContinueNode(tok.pos, tok.line)

    def pipeline(self, context: str, end: str) -> PipeNode:
        tok = self.peek_non_space()
        pipe = PipeNode(tok.pos, tok.line)
        while True:  # decls
            v = self.peek_non_space()
            if v.typ != VARIABLE:
                break
            self.next_non_space()
            var_i = self.i - 1
            token_after = self.peek()
            nxt = self.peek_non_space()
            if nxt.typ in (ASSIGN, DECLARE):
                pipe.is_assign = nxt.typ == ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, [v.val]))
                self.vars.append(v.val)
            elif nxt.typ == CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, [v.val]))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (VARIABLE, RDELIM, RPAREN):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            else:
                # Not a declaration: resume at the variable (Go's backup2/3).
                self.i = var_i
            break
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if tok.typ in (BOOL, CHARCONST, COMPLEX, K_DOT, FIELD, IDENT, NUMBER, K_NIL, RAWSTRING, STRING,
                           VARIABLE, LPAREN):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(tok, context)

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            self.errorf(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (BoolNode, DotNode, NilNode, NumberNode, StringNode)):
                self.errorf(f"non executable command in pipeline stage {i + 2}")

    def control(self, cls, context: str, allow_else_if: bool) -> Node:
        nvars = len(self.vars)
        try:
            pipe = self.pipeline(context, RDELIM)
            if context == "range":
                self.range_depth += 1
            lst, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list = None
            if isinstance(nxt, _ElseNode):
                if allow_else_if and self.peek().typ == K_IF:
                    self.next()
                    else_list = ListNode(nxt.pos)
                    else_list.nodes.append(self.control(IfNode, "if", True))
                else:
                    else_list, nxt = self.item_list()
                    if not isinstance(nxt, _EndNode):
                        self.errorf(f"expected end; found {nxt.go_string()}")
        finally:
            del self.vars[nvars:]
        return cls(pipe.pos, pipe.line, pipe, lst, else_list, context)

    def else_control(self) -> Node:
        peek = self.peek_non_space()
        if peek.typ == K_IF:
            return _ElseNode(peek.pos, peek.line)
        tok = self.expect(RDELIM, "else")
        return _ElseNode(tok.pos, tok.line)

    def _template_name(self, tok: Token, context: str) -> str:
        if tok.typ in (STRING, RAWSTRING):
            try:
                return go_unquote(tok.val)
            except _Syntax as e:
                self.errorf(str(e), tok)
        self.unexpected(tok, context)
        raise AssertionError

    def block_control(self) -> Node:
        context = "block clause"
        tok = self.next_non_space()
        name = self._template_name(tok, context)
        pipe = self.pipeline(context, RDELIM)
        self._parse_subtree(name, context, parent_reports=True)
        return TemplateNode(tok.pos, tok.line, name, pipe)

    def template_control(self) -> Node:
        context = "template clause"
        tok = self.next_non_space()
        name = self._template_name(tok, context)
        pipe = None
        if self.next_non_space().typ != RDELIM:
            self.backup()
            pipe = self.pipeline(context, RDELIM)
        return TemplateNode(tok.pos, tok.line, name, pipe)

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ == SPACE:
                continue
            if tok.typ in (RDELIM, RPAREN):
                self.backup()
            elif tok.typ == PIPE:
                pass
            else:
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.errorf("empty command")
        return cmd

    def operand(self) -> Optional[Node]:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == FIELD:
            chain = ChainNode(self.peek().pos, node)
            while self.peek().typ == FIELD:
                chain.fields.append(self.next().val[1:])
            if isinstance(node, FieldNode):
                node = FieldNode(chain.pos, list(node.ident) + chain.fields)
            elif isinstance(node, VariableNode):
                node = VariableNode(chain.pos, list(node.ident) + chain.fields)
            elif isinstance(node, (BoolNode, StringNode, NumberNode, NilNode, DotNode)):
                self.errorf(f"unexpected . after term {_go_quote_full(node.go_string())}")
            else:
                node = chain
        return node

    def term(self) -> Optional[Node]:
        tok = self.next_non_space()
        t = tok.typ
        if t == IDENT:
            if tok.val not in BUILTIN_FUNCS:
                self.errorf(f"function {_go_quote_full(tok.val)} not defined", tok)
            return IdentifierNode(tok.pos, tok.val)
        if t == K_DOT:
            return DotNode(tok.pos)
        if t == K_NIL:
            return NilNode(tok.pos)
        if t == VARIABLE:
            return self.use_var(tok)
        if t == FIELD:
            return FieldNode(tok.pos, tok.val[1:].split("."))
        if t == BOOL:
            return BoolNode(tok.pos, tok.val == "true")
        if t in (CHARCONST, COMPLEX, NUMBER):
            try:
                return new_number(tok.pos, tok.val, t)
            except _Syntax as e:
                self.errorf(str(e), tok)
        if t == LPAREN:
            return self.pipeline("parenthesized pipeline", RPAREN)
        if t in (STRING, RAWSTRING):
            try:
                return StringNode(tok.pos, tok.val, go_unquote(tok.val))
            except _Syntax as e:
                self.errorf(str(e), tok)
        self.backup()
        return None

    def use_var(self, tok: Token) -> Node:
        ident = tok.val.split(".")
        if ident[0] not in self.vars:
            self.errorf(f"undefined variable {_go_quote_full(ident[0])}", tok)
        return VariableNode(tok.pos, ident)


def new_number(pos: int, text: str, typ: str) -> NumberNode:
    n = NumberNode(pos, text)
    if typ == CHARCONST:
        r = go_unquote_char_const(text)
        n.int64 = n.uint64 = r
        n.float64 = float(r)
        n.is_int = n.is_uint = n.is_float = True
        return n
    if typ == COMPLEX:
        # "1+2i": real part then imaginary part, both Go float literals
        k = max(text.rfind("+", 1), text.rfind("-", 1))
        while k > 0 and text[k - 1] in "eEpP":
            k = max(text.rfind("+", 1, k - 1), text.rfind("-", 1, k - 1))
        re_s, im_s = text[:k], text[k:-1]
        re_v, im_v = _parse_float(re_s), _parse_float(im_s)
        if re_v is None or im_v is None:
            raise _Syntax(f"expected integer")
        n.is_complex = True
        n.complex128 = complex(re_v, im_v)
        _simplify_complex(n)
        return n
    if text.endswith("i"):
        f = _parse_float(text[:-1])
        if f is not None:
            n.is_complex = True
            n.complex128 = complex(0, f)
            _simplify_complex(n)
            return n
    u = _parse_uint(text)
    if u is not None:
        n.is_uint = True
        n.uint64 = u
    i = _parse_int(text)
    if i is not None:
        n.is_int = True
        n.int64 = i
        if i == 0:
            n.is_uint = True
            n.uint64 = u or 0
    if n.is_int:
        n.is_float = True
        n.float64 = float(n.int64)
    elif n.is_uint:
        n.is_float = True
        n.float64 = float(n.uint64)
    else:
        f = _parse_float(text)
        if f is not None:
            if not any(c in text for c in ".eEpP"):
                raise _Syntax(f"integer overflow: {_go_quote_full(text)}")
            n.is_float = True
            n.float64 = f
            if f == math.trunc(f) and -(2**63) <= f < 2**63:
                n.is_int = True
                n.int64 = int(f)
            if f == math.trunc(f) and 0 <= f < 2**64:
                n.is_uint = True
                n.uint64 = int(f)
    if not (n.is_int or n.is_uint or n.is_float):
        raise _Syntax(f"illegal number syntax: {_go_quote_full(text)}")
    return n


def _simplify_complex(n: NumberNode) -> None:
    n.is_float = n.complex128.imag == 0
    if n.is_float:
        f = n.complex128.real
        n.float64 = f
        n.is_int = f == math.trunc(f) and -(2**63) <= f < 2**63
        if n.is_int:
            n.int64 = int(f)
        n.is_uint = f == math.trunc(f) and 0 <= f < 2**64
        if n.is_uint:
            n.uint64 = int(f)


def parse_trees(text: str, name: str) -> dict[str, Tree]:
    """Parse text into its named trees (the top-level one is under name)."""
    try:
        return _Parser(name, text).parse()
    except RecursionError:
        raise TemplateError(name, 1, 0, "template nesting too deep") from None
