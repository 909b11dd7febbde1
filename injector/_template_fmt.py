"""Go value model and Go ``fmt`` printing for injector.template.

Template data arrives as plain Python values (from YAML/JSON).  They map onto
the Go types a ``map[string]interface{}`` decoded from JSON would hold:

    str -> string, bool -> bool, int -> int, float -> float64,
    complex -> complex128, dict -> map[string]interface {},
    list/tuple -> []interface {}, None -> nil.

Two extra markers reproduce reflect.Value distinctions that change Go's
output or error text:

* ``INVALID`` is the zero reflect.Value (what a nil pipeline result becomes),
  printed by an action as ``<no value>``.
* ``Boxed(v)`` is a value still wrapped in its ``interface{}`` element type, as
  map and slice elements are until a pipeline stage unwraps them; Go names its
  type ``interface {}`` in errors and a boxed nil is a "nil pointer".

``GoUint8`` is the byte that indexing a string yields.
"""

from __future__ import annotations

import math
import struct
from typing import Any

__all__ = [
    "INVALID",
    "MISSING",
    "Boxed",
    "GoUint8",
    "UnsupportedFormat",
    "go_type_name",
    "sort_map_keys",
    "sprint",
    "sprintf",
    "sprintln",
    "quote",
    "utf8_bytes",
]


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


INVALID: Any = _Marker("INVALID")
# "No value was piped into this command" (Go's missingVal).
MISSING: Any = _Marker("MISSING")


class Boxed:
    """A value still wrapped in the interface{} element type of its container."""

    __slots__ = ("v",)

    def __init__(self, v: object) -> None:
        self.v = v

    def __repr__(self) -> str:
        return f"Boxed({self.v!r})"


class GoUint8(int):
    """A Go byte (uint8), as produced by ``index "str" 0``."""

    __slots__ = ()


class UnsupportedFormat(ValueError):
    """A printf feature this implementation deliberately does not emulate."""


def utf8_bytes(s: str) -> bytes:
    # Lone surrogates stand for raw bytes from "\xNN" escapes (surrogateescape).
    return s.encode("utf-8", "surrogateescape")


def go_type_name(v: object) -> str:
    """Go's reflect type string of a value of the data model."""
    if isinstance(v, Boxed):
        return "interface {}"
    if v is None or v is INVALID:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, GoUint8):
        return "uint8"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, complex):
        return "complex128"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "map[string]interface {}"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    return type(v).__name__


def _key_rank(k: object) -> tuple:
    # Go sorts string keys bytewise and numbers numerically; mixed key types
    # cannot occur in a map[string]interface{}, so any stable order will do.
    if isinstance(k, str):
        return (0, utf8_bytes(k))
    if isinstance(k, bool):
        return (1, int(k))
    if isinstance(k, (int, float)):
        return (2, k)
    return (3, str(k))


def sort_map_keys(d: dict) -> list:
    return sorted(d.keys(), key=_key_rank)


# ---------------------------------------------------------------- numbers


def _shortest_digits(f: float) -> tuple[str, int]:
    """Shortest round-tripping decimal digits of abs(f) and the decimal point
    position (value = 0.DIGITS * 10**dp), like strconv's shortest mode."""
    r = repr(abs(f))
    if "e" in r:
        mant, exp_s = r.split("e")
        exp = int(exp_s)
    else:
        mant, exp = r, 0
    if "." in mant:
        ip, fp = mant.split(".")
    else:
        ip, fp = mant, ""
    digits = (ip + fp).lstrip("0")
    lead_zeros = len(ip + fp) - len((ip + fp).lstrip("0"))
    dp = len(ip) + exp - lead_zeros
    digits = digits.rstrip("0")
    if not digits:
        return "0", 1
    return digits, dp


def _fmt_e(neg: bool, digits: str, dp: int, prec: int, e: str) -> str:
    # digits already rounded to prec+1 significant digits (or fewer, shortest)
    first = digits[0]
    rest = digits[1:]
    if prec >= 0:
        rest = (rest + "0" * prec)[:prec]
    s = first + ("." + rest if rest else "")
    exp = dp - 1 if digits != "0" else 0
    sign = "+" if exp >= 0 else "-"
    exp = abs(exp)
    return ("-" if neg else "") + s + e + sign + (f"{exp:02d}")


def _fmt_f(neg: bool, digits: str, dp: int, prec: int) -> str:
    if dp > 0:
        ip = (digits[:dp] + "0" * max(0, dp - len(digits)))
        fp = digits[dp:]
    else:
        ip = "0"
        fp = "0" * (-dp) + digits
    if prec >= 0:
        fp = (fp + "0" * prec)[:prec]
    s = ip + ("." + fp if fp else "")
    return ("-" if neg else "") + s


def _sharp_float(num: str, verb: str, prec: int) -> str:
    """fmt's # flag on floats: keep the decimal point and trailing zeros."""
    digits = 0
    if verb in "vgGx":
        digits = 6 if prec == -1 else prec
    tail = ""
    has_point = False
    saw_nonzero = False
    body = num
    i = 1
    while i < len(body):
        c = body[i]
        if c == ".":
            has_point = True
        elif c in "pP":
            tail = body[i:] + tail
            body = body[:i]
            break
        elif c in "eE" and verb not in "xX":
            tail = body[i:] + tail
            body = body[:i]
            break
        else:
            if c != "0":
                saw_nonzero = True
            if saw_nonzero:
                digits -= 1
        i += 1
    if not has_point:
        if len(body) == 2 and body[1] == "0":
            digits -= 1
        body += "."
    if digits > 0:
        body += "0" * digits
    return body + tail


def _float_bits(f: float) -> tuple[bool, int, int]:
    """(negative, mantissa with implicit bit, unbiased exponent) like strconv."""
    bits = struct.unpack(">Q", struct.pack(">d", f))[0]
    neg = bool(bits >> 63)
    exp = (bits >> 52) & 0x7FF
    mant = bits & ((1 << 52) - 1)
    if exp == 0:
        exp += 1
    else:
        mant |= 1 << 52
    return neg, mant, exp - 1023


def _fmt_b(f: float) -> str:
    neg, mant, exp = _float_bits(f)
    exp -= 52
    return ("-" if neg else "") + f"{mant}p" + ("+" if exp >= 0 else "-") + str(abs(exp))


def _fmt_x(f: float, prec: int, fmt: str) -> str:
    neg, mant, exp = _float_bits(f)
    if mant == 0:
        exp = 0
    mant <<= 60 - 52
    while mant != 0 and mant & (1 << 60) == 0:
        mant <<= 1
        exp -= 1
    if 0 <= prec < 15:
        shift = prec * 4
        extra = (mant << shift) & ((1 << 60) - 1)
        mant >>= 60 - shift
        if extra | (mant & 1) > 1 << 59:
            mant += 1
        mant <<= 60 - shift
        if mant & (1 << 61):
            mant >>= 1
            exp += 1
    hexd = "0123456789abcdef" if fmt == "x" else "0123456789ABCDEF"
    out = ["-" if neg else "", "0", fmt, str((mant >> 60) & 1)]
    mant = (mant << 4) & ((1 << 64) - 1)
    if prec < 0 and mant != 0:
        out.append(".")
        while mant != 0:
            out.append(hexd[(mant >> 60) & 15])
            mant = (mant << 4) & ((1 << 64) - 1)
    elif prec > 0:
        out.append(".")
        for _ in range(prec):
            out.append(hexd[(mant >> 60) & 15])
            mant = (mant << 4) & ((1 << 64) - 1)
    out.append("p" if fmt == "x" else "P")
    out.append("-" if exp < 0 else "+")
    exp = abs(exp)
    out.append(f"{exp:02d}")
    return "".join(out)


def format_float(f: float, fmt: str, prec: int) -> str:
    """strconv.FormatFloat(f, fmt, prec, 64) for fmt in b e E f F g G x X."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if fmt == "b":
        return _fmt_b(f)
    if fmt in "xX":
        return _fmt_x(f, prec, fmt)
    neg = math.copysign(1.0, f) < 0
    a = abs(f)
    lower = fmt.lower()
    if prec < 0:
        digits, dp = _shortest_digits(a)
        if lower == "e":
            return _fmt_e(neg, digits, dp, len(digits) - 1, "e" if fmt == "e" else "E")
        if lower == "f":
            return _fmt_f(neg, digits, dp, max(len(digits) - dp, 0))
        # shortest %g: exponent form when the exponent is < -4 or >= 6
        exp = dp - 1
        if exp < -4 or exp >= 6:
            return _fmt_e(neg, digits, dp, len(digits) - 1, "e" if fmt == "g" else "E")
        return _fmt_f(neg, digits, dp, max(len(digits) - dp, 0))
    if lower == "e":
        s = f"{a:.{prec}e}"
        mant, exp_s = s.split("e")
        exp = int(exp_s)
        return ("-" if neg else "") + mant + ("e" if fmt == "e" else "E") + ("+" if exp >= 0 else "-") + f"{abs(exp):02d}"
    if lower == "f":
        return ("-" if neg else "") + f"{a:.{prec}f}"
    # %g with precision: Python's rules for choosing the exponent form and
    # dropping trailing zeros coincide with strconv's.
    p = prec if prec > 0 else 1
    s = f"{a:.{p}g}"
    if "e" in s:
        mant, exp_s = s.split("e")
        exp = int(exp_s)
        s = mant + ("e" if fmt == "g" else "E") + ("+" if exp >= 0 else "-") + f"{abs(exp):02d}"
    return ("-" if neg else "") + s


# ---------------------------------------------------------------- quoting

_ESC = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


def _is_print(ch: str) -> bool:
    return ch == " " or (ch.isprintable() and not ch.isspace())


def _quote_char(ch: str, q: str, ascii_only: bool) -> str:
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:  # raw byte from surrogateescape
        return f"\\x{o - 0xDC00:02x}"
    if ch == q or ch == "\\":
        return "\\" + ch
    if ascii_only:
        if o < 0x80 and _is_print(ch):
            return ch
    elif _is_print(ch):
        return ch
    if o in _ESC:
        return _ESC[o]
    if o < 0x20 or o == 0x7F:
        return f"\\x{o:02x}"
    if 0xD800 <= o <= 0xDFFF:
        return "\\ufffd"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def quote(s: str, ascii_only: bool = False) -> str:
    """strconv.Quote / QuoteToASCII."""
    return '"' + "".join(_quote_char(c, '"', ascii_only) for c in s) + '"'


def quote_rune(r: int, ascii_only: bool = False) -> str:
    if r > 0x10FFFF or 0xD800 <= r <= 0xDFFF or r < 0:
        r = 0xFFFD
    return "'" + _quote_char(chr(r), "'", ascii_only) + "'"


def _can_backquote(s: str) -> bool:
    for c in s:
        o = ord(c)
        if c == "`" or o == 0xFFFD or 0xDC80 <= o <= 0xDCFF:
            return False
        if (o < 0x20 and c != "\t") or o == 0x7F:
            return False
    return True


# ---------------------------------------------------------------- printer


class _Printer:
    """One fmt.Sprint*/Sprintf call (Go's pp + fmt state)."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.clear_flags()

    def clear_flags(self) -> None:
        self.wid = 0
        self.wid_present = False
        self.prec = 0
        self.prec_present = False
        self.minus = self.plus = self.sharp = self.space = self.zero = False
        self.plus_v = self.sharp_v = False

    # --- padding
    def _padding(self, n: int) -> str:
        if n <= 0:
            return ""
        return ("0" if self.zero else " ") * n

    def pad(self, s: str) -> None:
        if not self.wid_present or self.wid == 0:
            self.buf.append(s)
            return
        width = self.wid - len(s)
        if not self.minus:
            self.buf.append(self._padding(width))
            self.buf.append(s)
        else:
            self.buf.append(s)
            self.buf.append(self._padding(width))

    # --- errors
    def bad_verb(self, verb: str, arg: object) -> None:
        self.buf.append("%!" + verb + "(")
        if arg is None or arg is INVALID:
            self.buf.append("<nil>")
        else:
            self.buf.append(go_type_name(arg) + "=")
            self.print_arg(arg, "v")
        self.buf.append(")")

    # --- entry
    def print_arg(self, arg: object, verb: str, depth: int = 0) -> None:
        if isinstance(arg, Boxed):
            arg = arg.v
        if arg is INVALID:
            arg = None
        if arg is None:
            if depth > 0:
                # fmt writes a nil interface element without padding
                self.buf.append("interface {}(nil)" if self.sharp_v else "<nil>")
            elif verb in "vT":
                self.pad("<nil>")
            else:
                self.bad_verb(verb, None)
            return
        if verb == "T":
            self.fmt_s(go_type_name(arg))
            return
        if verb == "p":
            # Go would print memory addresses, which no template should depend on.
            raise UnsupportedFormat("printf verb %p is not supported")
        if isinstance(arg, bool):
            if verb in "tv":
                self.pad("true" if arg else "false")
            else:
                self.bad_verb(verb, arg)
        elif isinstance(arg, int):
            self.fmt_integer(arg, not isinstance(arg, GoUint8), verb)
        elif isinstance(arg, float):
            self.fmt_float_verb(arg, verb)
        elif isinstance(arg, complex):
            self.fmt_complex(arg, verb)
        elif isinstance(arg, str):
            self.fmt_string(arg, verb)
        elif isinstance(arg, dict):
            self.buf.append("map[string]interface {}{" if self.sharp_v else "map[")
            for i, k in enumerate(sort_map_keys(arg)):
                if i:
                    self.buf.append(", " if self.sharp_v else " ")
                self.print_arg(k, verb, depth + 1)
                self.buf.append(":")
                self.print_arg(arg[k], verb, depth + 1)
            self.buf.append("}" if self.sharp_v else "]")
        elif isinstance(arg, (list, tuple)):
            self.buf.append("[]interface {}{" if self.sharp_v else "[")
            for i, e in enumerate(arg):
                if i:
                    self.buf.append(", " if self.sharp_v else " ")
                self.print_arg(e, verb, depth + 1)
            self.buf.append("}" if self.sharp_v else "]")
        else:
            raise UnsupportedFormat(f"cannot print a value of Python type {type(arg).__name__}")

    # --- strings
    def _truncate(self, s: str) -> str:
        if self.prec_present:
            return s[: self.prec]
        return s

    def fmt_s(self, s: str) -> None:
        self.pad(self._truncate(s))

    def fmt_string(self, s: str, verb: str) -> None:
        if verb == "v" and self.sharp_v:
            self.fmt_q(s)
        elif verb in "vs":
            self.fmt_s(s)
        elif verb in "xX":
            self.fmt_sx(utf8_bytes(s), "0123456789abcdefx" if verb == "x" else "0123456789ABCDEFX")
        elif verb == "q":
            self.fmt_q(s)
        else:
            self.bad_verb(verb, s)

    def fmt_q(self, s: str) -> None:
        s = self._truncate(s)
        if self.sharp and _can_backquote(s):
            self.pad("`" + s + "`")
        else:
            self.pad(quote(s, self.plus))

    def fmt_sx(self, b: bytes, digits: str) -> None:
        length = len(b)
        if self.prec_present and self.prec < length:
            length = self.prec
        width = 2 * length
        if width > 0:
            if self.space:
                if self.sharp:
                    width *= 2
                width += length - 1
            elif self.sharp:
                width += 2
        else:
            if self.wid_present:
                self.buf.append(self._padding(self.wid))
            return
        if self.wid_present and self.wid > width and not self.minus:
            self.buf.append(self._padding(self.wid - width))
        out = []
        if self.sharp:
            out.append("0" + digits[16])
        for i in range(length):
            if self.space and i > 0:
                out.append(" ")
                if self.sharp:
                    out.append("0" + digits[16])
            c = b[i]
            out.append(digits[c >> 4] + digits[c & 0xF])
        self.buf.append("".join(out))
        if self.wid_present and self.wid > width and self.minus:
            self.buf.append(self._padding(self.wid - width))

    # --- integers
    def fmt_integer(self, v: int, signed: bool, verb: str) -> None:
        if verb == "v" and self.sharp_v and not signed:
            old = self.sharp
            self.sharp = True
            self._fmt_int(v, 16, verb, "0123456789abcdefx")
            self.sharp = old
        elif verb in "vd":
            self._fmt_int(v, 10, verb, "0123456789abcdefx")
        elif verb == "b":
            self._fmt_int(v, 2, verb, "0123456789abcdefx")
        elif verb in "oO":
            self._fmt_int(v, 8, verb, "0123456789abcdefx")
        elif verb == "x":
            self._fmt_int(v, 16, verb, "0123456789abcdefx")
        elif verb == "X":
            self._fmt_int(v, 16, verb, "0123456789ABCDEFX")
        elif verb == "c":
            r = v if 0 <= v <= 0x10FFFF and not (0xD800 <= v <= 0xDFFF) else 0xFFFD
            self.pad(chr(r))
        elif verb == "q":
            self.pad(quote_rune(v if 0 <= v <= 0x10FFFF else 0xFFFD, self.plus))
        elif verb == "U":
            self._fmt_unicode(v)
        else:
            self.bad_verb(verb, v)

    def _fmt_int(self, v: int, base: int, verb: str, digits: str) -> None:
        negative = v < 0
        u = -v if negative else v
        prec = 0
        if self.prec_present:
            prec = self.prec
            if prec == 0 and u == 0:
                old = self.zero
                self.zero = False
                self.buf.append(self._padding(self.wid))
                self.zero = old
                return
        elif self.zero and self.wid_present:
            prec = self.wid
            if negative or self.plus or self.space:
                prec -= 1
        s = ""
        while True:
            s = digits[u % base] + s
            u //= base
            if u == 0:
                break
        if len(s) < prec:
            s = "0" * (prec - len(s)) + s
        if self.sharp:
            if base == 2:
                s = "0b" + s
            elif base == 8:
                if s[0] != "0":
                    s = "0" + s
            elif base == 16:
                s = "0" + digits[16] + s
        if verb == "O":
            s = "0o" + s
        if negative:
            s = "-" + s
        elif self.plus:
            s = "+" + s
        elif self.space:
            s = " " + s
        old = self.zero
        self.zero = False
        self.pad(s)
        self.zero = old

    def _fmt_unicode(self, v: int) -> None:
        u = v & 0xFFFFFFFFFFFFFFFF
        prec = 4
        if self.prec_present and self.prec > 4:
            prec = self.prec
        s = f"{u:X}"
        if len(s) < prec:
            s = "0" * (prec - len(s)) + s
        s = "U+" + s
        if self.sharp and u <= 0x10FFFF and _is_print(chr(u)) and not (0xD800 <= u <= 0xDFFF):
            s += " '" + chr(u) + "'"
        old = self.zero
        self.zero = False
        self.pad(s)
        self.zero = old

    # --- floats
    def fmt_float_verb(self, v: float, verb: str) -> None:
        if verb == "v":
            self._fmt_float(v, "g", -1)
        elif verb in "gGbxX":
            self._fmt_float(v, verb, -1)
        elif verb in "feEF":
            self._fmt_float(v, "f" if verb == "F" else verb, 6)
        else:
            self.bad_verb(verb, v)

    def _float_str(self, v: float, verb: str, prec: int) -> str:
        if self.prec_present:
            prec = self.prec
        num = format_float(v, verb, prec)
        if num[0] not in "+-":
            num = "+" + num
        if self.space and num[0] == "+" and not self.plus:
            num = " " + num[1:]
        if self.sharp and verb != "b" and num[1] not in "IN":
            num = _sharp_float(num, verb, prec)
        return num

    def _fmt_float(self, v: float, verb: str, prec: int) -> None:
        num = self._float_str(v, verb, prec)
        if num[1] in "IN":
            old = self.zero
            self.zero = False
            if num[1] == "N" and not self.space and not self.plus:
                num = num[1:]
            self.pad(num)
            self.zero = old
            return
        if self.plus or num[0] != "+":
            if self.zero and self.wid_present and self.wid > len(num):
                self.buf.append(num[0])
                self.buf.append(self._padding(self.wid - len(num)))
                self.buf.append(num[1:])
                return
            self.pad(num)
            return
        self.pad(num[1:])

    def fmt_complex(self, v: complex, verb: str) -> None:
        if verb not in "vbgGxXfFeE":
            self.bad_verb(verb, v)
            return
        old_plus = self.plus
        self.buf.append("(")
        self.fmt_float_verb(v.real, verb)
        self.plus = True
        self.fmt_float_verb(v.imag, verb)
        self.buf.append("i)")
        self.plus = old_plus


def sprint(args: list) -> str:
    p = _Printer()
    prev_string = False
    for i, a in enumerate(args):
        if isinstance(a, Boxed):
            a = a.v
        is_string = isinstance(a, str)
        if i > 0 and not is_string and not prev_string:
            p.buf.append(" ")
        p.print_arg(a, "v")
        prev_string = is_string
    return "".join(p.buf)


def sprintln(args: list) -> str:
    p = _Printer()
    for i, a in enumerate(args):
        if i > 0:
            p.buf.append(" ")
        p.print_arg(a, "v")
    p.buf.append("\n")
    return "".join(p.buf)


def _too_large(n: int) -> bool:
    return n > 1_000_000 or n < -1_000_000


def _parsenum(s: str, start: int, end: int) -> tuple[int, bool, int]:
    if start >= end:
        return 0, False, end
    num = 0
    isnum = False
    i = start
    while i < end and "0" <= s[i] <= "9":
        if _too_large(num):
            return 0, False, end
        num = num * 10 + ord(s[i]) - 48
        isnum = True
        i += 1
    return num, isnum, i


def _int_from_arg(a: list, n: int) -> tuple[int, bool, int]:
    if n < len(a):
        v = a[n]
        if isinstance(v, Boxed):
            v = v.v
        if isinstance(v, int) and not isinstance(v, bool):
            if _too_large(v):
                return 0, False, n + 1
            return v, True, n + 1
        return 0, False, n + 1
    return 0, False, n


def sprintf(fmt: str, a: list) -> str:
    """fmt.Sprintf(fmt, a...) for the data model."""
    p = _Printer()
    end = len(fmt)
    arg_num = 0
    after_index = False
    reordered = False
    i = 0

    def arg_number(arg_num: int, i: int) -> tuple[int, int, bool]:
        nonlocal reordered, good_arg_num
        if i >= end or fmt[i] != "[":
            return arg_num, i, False
        reordered = True
        # parseArgNumber
        index, wid, ok = 0, 1, False
        if end - i >= 3:
            for j in range(i + 1, end):
                if fmt[j] == "]":
                    width, isnum, newi = _parsenum(fmt, i + 1, j)
                    if not isnum or newi != j:
                        index, wid, ok = 0, j - i + 1, False
                    else:
                        index, wid, ok = width - 1, j - i + 1, True
                    break
        if ok and 0 <= index < len(a):
            return index, i + wid, True
        good_arg_num = False
        return arg_num, i + wid, ok

    while i < end:
        good_arg_num = True
        lasti = i
        while i < end and fmt[i] != "%":
            i += 1
        if i > lasti:
            p.buf.append(fmt[lasti:i])
        if i >= end:
            break
        i += 1
        p.clear_flags()
        simple_done = False
        while i < end:
            c = fmt[i]
            if c == "#":
                p.sharp = True
            elif c == "0":
                p.zero = not p.minus
            elif c == "+":
                p.plus = True
            elif c == "-":
                p.minus = True
                p.zero = False
            elif c == " ":
                p.space = True
            else:
                if "a" <= c <= "z" and arg_num < len(a):
                    if c == "v":
                        p.sharp_v = p.sharp
                        p.sharp = False
                        p.plus_v = p.plus
                        p.plus = False
                    p.print_arg(a[arg_num], c)
                    arg_num += 1
                    i += 1
                    simple_done = True
                break
            i += 1
        if simple_done:
            continue

        arg_num, i, after_index = arg_number(arg_num, i)

        if i < end and fmt[i] == "*":
            i += 1
            p.wid, p.wid_present, arg_num = _int_from_arg(a, arg_num)
            if not p.wid_present:
                p.buf.append("%!(BADWIDTH)")
            if p.wid < 0:
                p.wid = -p.wid
                p.minus = True
                p.zero = False
            after_index = False
        else:
            p.wid, p.wid_present, i = _parsenum(fmt, i, end)
            if after_index and p.wid_present:
                good_arg_num = False

        if i + 1 < end and fmt[i] == ".":
            i += 1
            if after_index:
                good_arg_num = False
            arg_num, i, after_index = arg_number(arg_num, i)
            if i < end and fmt[i] == "*":
                i += 1
                p.prec, p.prec_present, arg_num = _int_from_arg(a, arg_num)
                if p.prec < 0:
                    p.prec = 0
                    p.prec_present = False
                if not p.prec_present:
                    p.buf.append("%!(BADPREC)")
                after_index = False
            else:
                p.prec, p.prec_present, i = _parsenum(fmt, i, end)
                if not p.prec_present:
                    p.prec = 0
                    p.prec_present = True

        if not after_index:
            arg_num, i, after_index = arg_number(arg_num, i)

        if i >= end:
            p.buf.append("%!(NOVERB)")
            break

        verb = fmt[i]
        i += 1
        if verb == "%":
            p.buf.append("%")
        elif not good_arg_num:
            p.buf.append("%!" + verb + "(BADINDEX)")
        elif arg_num >= len(a):
            p.buf.append("%!" + verb + "(MISSING)")
        else:
            if verb == "v":
                p.sharp_v = p.sharp
                p.sharp = False
                p.plus_v = p.plus
                p.plus = False
            p.print_arg(a[arg_num], verb)
            arg_num += 1

    if not reordered and arg_num < len(a):
        p.clear_flags()
        p.buf.append("%!(EXTRA ")
        for k, arg in enumerate(a[arg_num:]):
            if k:
                p.buf.append(", ")
            if isinstance(arg, Boxed):
                arg = arg.v
            if arg is None or arg is INVALID:
                p.buf.append("<nil>")
            else:
                p.buf.append(go_type_name(arg) + "=")
                p.print_arg(arg, "v")
        p.buf.append(")")
    return "".join(p.buf)
