"""wait-fuse.sh: block an application container until the chaosfs FUSE mount is ready.

Runs as the app container's postStart hook, so the kubelet holds the pod's later containers
until it exits. Ready means chaosfs's pid file exists (chaosfs writes it only after its mount
is live) and, with -m, that this process's mount table shows a fuse.chaosfs mount at the path.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Sequence

from scripts.options import Program, UsageError, echo, getopts, own_path

DEFAULT_PID_FILE = "/tmp/fuse/pid"
DEFAULT_DELAY = 5.0
DEFAULT_RETRY = 60
FUSE_TYPE = "fuse.chaosfs"
MOUNTINFO = "/proc/self/mountinfo"


def usage(prog: str) -> str:
    return (
        f"USAGE: {prog} [-f <file>] [-d <delay>] [-r <retry>] [-m <mountpoint>]\n"
        "Waiting for fuse server ready\n"
        "OPTIONS:\n"
        "-h Show this message\n"
        "-f <file> Set the target file\n"
        "-d <delay> Set the delay time\n"
        "-r <retry> Set the retry count\n"
        f"-m <mountpoint> Also wait for a {FUSE_TYPE} mount at this path\n"
        "EXAMPLES:\n"
        "wait-fuse.sh -f /tmp/fuse/pid -d 5 -r 60\n"
    )


@dataclass(frozen=True)
class WaitConfig:
    pid_file: str = DEFAULT_PID_FILE
    delay: float = DEFAULT_DELAY  # seconds between checks
    retry: int = DEFAULT_RETRY  # checks after the first one before giving up
    mountpoint: str | None = None


def parse_args(args: Sequence[str]) -> WaitConfig | None:
    """The configuration, or None when -h asked for the usage text."""
    options, operands = getopts(args, "hf:d:r:m:")
    values: dict[str, object] = {}
    for letter, value in options:
        if letter == "h":
            return None
        if letter == "f":
            if not value:
                raise UsageError("pid file must not be empty")
            values["pid_file"] = value
        elif letter == "d":
            values["delay"] = _parse_delay(value or "")
        elif letter == "r":
            values["retry"] = _parse_retry(value or "")
        elif letter == "m":
            if not value:
                raise UsageError("mountpoint must not be empty")
            # normpath, not realpath: resolving the path would stat a possibly hung FUSE mount.
            values["mountpoint"] = os.path.normpath(os.path.abspath(value))
    if operands:
        raise UsageError(f"unexpected argument: {operands[0]!r}")
    return WaitConfig(**values)  # type: ignore[arg-type]


def _parse_delay(text: str) -> float:
    try:
        delay = float(text)
    except ValueError:
        delay = math.nan
    if not math.isfinite(delay) or delay < 0:
        raise UsageError(f"invalid delay: {text!r} (want seconds >= 0, fractions allowed)")
    return delay


def _parse_retry(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise UsageError(f"invalid retry count: {text!r} (want an integer >= 0)")
    return int(text)


_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _unescape(field: bytes) -> str:
    # The kernel writes space, tab, newline and backslash in mountinfo paths as \ooo.
    raw = _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field)
    return os.fsdecode(raw)


def mount_type_at(path: str, mountinfo: bytes) -> str | None:
    """File system type of the topmost mount at `path` in a mountinfo table, or None."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        try:
            separator = fields.index(b"-", 6)
        except ValueError:
            continue
        if len(fields) <= separator + 1:
            continue
        if _unescape(fields[4]) == path:
            # Later lines are mounted later, so the last match is the one in view.
            found = os.fsdecode(fields[separator + 1])
    return found


class EnvironmentProblem(Exception):
    """Waiting cannot work here at all (e.g. no /proc); retrying would not help."""


def mount_point_path(path: str) -> str:
    """How mountinfo names a mount at `path`: symlinks above it resolved (images make
    /var/run a link to /run, so a volume at /var/run/etcd is mounted at /run/etcd), the
    last component left alone: resolving it would stat a possibly hung FUSE mount.
    (chaosfs.mounts has the daemon's twin; the scripts image carries no chaosfs package.)"""
    path = os.path.abspath(path)
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head), tail) if tail else path


def not_ready_reason(config: WaitConfig) -> str | None:
    """Why the fuse server is not ready yet, or None when it is."""
    if not os.path.isfile(config.pid_file):
        return f"{config.pid_file} not found"
    if config.mountpoint is not None:
        try:
            with open(MOUNTINFO, "rb") as table:
                mountinfo = table.read()
        except OSError as error:
            raise EnvironmentProblem(f"cannot read {MOUNTINFO}: {error.strerror}") from None
        if mount_type_at(mount_point_path(config.mountpoint), mountinfo) != FUSE_TYPE:
            return f"{config.mountpoint} is not a {FUSE_TYPE} mount"
    return None


def wait(config: WaitConfig) -> int:
    """Poll until ready (exit status 0) or until `retry` more checks failed (1)."""
    attempt = 0
    while True:
        reason = not_ready_reason(config)
        if reason is None:
            echo("fuse server is started")
            return 0
        if attempt >= config.retry:
            echo("waiting for fuse server ready timeout")
            return 1
        echo(f"fuse server not running, {reason}, retry...")
        attempt += 1
        time.sleep(config.delay)


def main(argv: Sequence[str] | None = None) -> int:
    config = Program(own_path(), usage).parse(parse_args, argv)
    if config is None:
        return 0
    try:
        return wait(config)
    except EnvironmentProblem as error:
        sys.stderr.write(f"{error}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
