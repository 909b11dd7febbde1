"""Shell-`getopts`-style option parsing shared by init.sh and wait-fuse.sh.

argparse is avoided on purpose: its messages, `--help` handling and exit code 2 differ from
the shell scripts of Chaos Mesh 0.9 that these programs replace, and users grep for those
messages. The parser follows POSIX getopts: clustered flags (`-hd x`), attached values
(`-d5`), `--` ends the options, the first operand stops parsing.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Sequence


class UsageError(Exception):
    """Bad command line. The message is one line; it is printed as is, like the 0.9
    scripts' `echo "data directory is required"`."""


class GetoptsError(UsageError):
    """A syntax error found by getopts: printed as `$0: message` followed by the usage,
    the way the shell's getopts reports it."""


def getopts(
    args: Sequence[str], spec: str, stop: str = "h"
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Parse `args` against a getopts spec such as "hd:f:".

    Returns the (letter, value) pairs in command-line order and the remaining operands.
    A letter followed by ':' in `spec` takes a value. A letter in `stop` ends parsing at once
    (a shell `while getopts` loop exits on -h before it sees the options after it).
    """
    takes_value = {c: spec[i + 1 : i + 2] == ":" for i, c in enumerate(spec) if c != ":"}
    parsed: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            if letter not in takes_value:
                raise GetoptsError(f"illegal option -- {letter}")
            if not takes_value[letter]:
                parsed.append((letter, None))
                if letter in stop:
                    return parsed, []
                pos += 1
                continue
            if pos + 1 < len(arg):
                parsed.append((letter, arg[pos + 1 :]))
            elif i + 1 < len(args):
                i += 1
                parsed.append((letter, args[i]))
            else:
                raise GetoptsError(f"option requires an argument -- {letter}")
            break
        i += 1
    return parsed, list(args[i:])


@dataclass(frozen=True)
class Program:
    """What a script needs to report usage problems the way the 0.9 scripts did."""

    name: str  # $0: the path the program was invoked as
    usage: Callable[[str], str]  # builds the usage text for a given $0

    def print_usage(self) -> None:
        sys.stdout.write(self.usage(self.name))
        sys.stdout.flush()

    def parse(self, parse_args: Callable[[Sequence[str]], Any], argv: Sequence[str] | None) -> Any:
        """The parsed options; None once `-h` has printed the usage (the caller exits 0).
        A bad option ends the program here (one line, usage, exit 1)."""
        try:
            config = parse_args(sys.argv[1:] if argv is None else argv)
        except UsageError as error:
            self.fail(error)
        if config is None:
            self.print_usage()
        return config

    def fail(self, error: UsageError) -> NoReturn:
        """One-line message on stderr (usage after it for syntax errors), exit 1."""
        if isinstance(error, GetoptsError):
            sys.stderr.write(f"{self.name}: {error}\n")
            sys.stderr.write(self.usage(self.name))
        else:
            sys.stderr.write(f"{error}\n")
        sys.stderr.flush()
        raise SystemExit(1)


def own_path() -> str:
    """The path this program was started as ($0). A static build runs the real program from
    a temp dir under a different argv[0]; staticx records the original executable's
    (symlink-resolved) path in STATICX_PROG_PATH. The variable is only trusted when frozen, as
    an unfrozen child of a static program inherits it."""
    if getattr(sys, "frozen", False):
        return os.environ.get("STATICX_PROG_PATH") or sys.executable
    return sys.argv[0] if sys.argv and sys.argv[0] else "script"


def echo(message: str) -> None:
    """Print one progress line and flush it, so pod logs show steps as they happen. A reader
    that went away must not stop the work (or end it in a traceback): output then goes to
    /dev/null."""
    try:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
