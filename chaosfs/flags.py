"""Go `flag`-package style command lines: `-f=v`, `-f v`, `--f v`, bool flags `-b`/`-b=false`.

The Chaos Mesh 0.9 sidecar command line must work verbatim, and argparse cannot parse
single-dash long options with `=` the way Go does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional


class FlagError(Exception):
    """Bad command line; str() is the one-line message."""


@dataclass
class Flag:
    name: str
    help: str
    default: Any = None
    kind: Callable[[str], Any] = str
    is_bool: bool = False
    env: Optional[str] = None
    metavar: str = "value"


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}")


@dataclass
class FlagSet:
    prog: str
    flags: dict[str, Flag] = field(default_factory=dict)

    def add(self, flag: Flag) -> None:
        self.flags[flag.name] = flag

    def usage(self) -> str:
        lines = [f"Usage of {self.prog}:"]
        for f in sorted(self.flags.values(), key=lambda f: f.name):
            head = f"  -{f.name}" + ("" if f.is_bool else f" {f.metavar}")
            extra = []
            if f.default not in (None, False, ""):
                extra.append(f"default {f.default!r}" if isinstance(f.default, str) else f"default {f.default}")
            if f.env:
                extra.append(f"env {f.env}")
            tail = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"{head}\n    \t{f.help}{tail}")
        return "\n".join(lines)

    def parse(self, argv: list[str], environ: dict[str, str]) -> dict[str, Any]:
        """Values for every flag (default, then env, then command line). Raises FlagError;
        `-h`/`-help` raise HelpRequested."""
        values: dict[str, Any] = {}
        for f in self.flags.values():
            values[f.name] = f.default
            if f.env and environ.get(f.env):
                values[f.name] = self._convert(f, environ[f.env], source=f"${f.env}")
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                rest = argv[i:]
                if rest:
                    raise FlagError(f"unexpected argument {rest[0]!r}")
                break
            if not arg.startswith("-") or arg == "-":
                raise FlagError(f"unexpected argument {arg!r}")
            body = arg[2:] if arg.startswith("--") else arg[1:]
            if not body or body.startswith("-") or body.startswith("="):
                raise FlagError(f"bad flag syntax: {arg}")
            name, eq, val = body.partition("=")
            if name in ("h", "help"):
                raise HelpRequested()
            f = self.flags.get(name)
            if f is None:
                raise FlagError(f"flag provided but not defined: -{name}")
            if f.is_bool:
                values[name] = self._convert(f, val, source=f"-{name}") if eq else True
                continue
            if not eq:
                if i >= len(argv):
                    raise FlagError(f"flag needs an argument: -{name}")
                val = argv[i]
                i += 1
            values[name] = self._convert(f, val, source=f"-{name}")
        return values

    @staticmethod
    def _convert(f: Flag, text: str, source: str) -> Any:
        try:
            return parse_bool(text) if f.is_bool else f.kind(text)
        except ValueError as e:
            raise FlagError(f"invalid value {text!r} for {source}: {e}") from None


class HelpRequested(Exception):
    pass
