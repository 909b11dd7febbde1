"""init.sh: the chaos-scripts init container's preparation step.

Copies the shipped scripts into the pod's shared scripts emptyDir (so the application container
can run wait-fuse.sh without Python or a shell of its own), creates the data directory and the
fuse (original) directory, and removes a pid file a previous run of the pod left behind, so a
restarted chaosfs sidecar never refuses to start.
"""
from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from typing import Sequence

from scripts.options import Program, UsageError, echo, getopts, own_path

DEFAULT_SCRIPTS_DIR = "/tmp/scripts"
DEFAULT_PID_FILE = "/tmp/fuse/pid"
IMAGE_SCRIPTS_DIR = "/scripts"
MARKER = "wait-fuse.sh"  # a directory holding this is a set of shipped scripts


def usage(prog: str) -> str:
    return (
        f"USAGE: {prog} [-d data directory] [-f fuse directory]\n"
        "Used to do some preparation\n"
        "OPTIONS:\n"
        "-h Show this message\n"
        "-d <data directory> Data directory of the application\n"
        "-f <fuse directory> Data directory of the fuse original directory\n"
        "-s <scripts directory> Scripts directory\n"
        "-p <pid file> Stale fuse server pid file to remove\n"
        "EXAMPLES:\n"
        "init.sh -d /var/lib/tikv/data -f /var/lib/tikv/fuse-data\n"
    )


@dataclass(frozen=True)
class InitConfig:
    data_dir: str
    fuse_dir: str
    scripts_dir: str = DEFAULT_SCRIPTS_DIR
    pid_file: str = DEFAULT_PID_FILE


class InitError(Exception):
    """A step failed; the message is one line naming the path and the cause."""


def parse_args(args: Sequence[str]) -> InitConfig | None:
    """The configuration, or None when -h asked for the usage text."""
    options, operands = getopts(args, "hd:f:s:p:")
    values = {"d": "", "f": "", "s": DEFAULT_SCRIPTS_DIR, "p": DEFAULT_PID_FILE}
    for letter, value in options:
        if letter == "h":
            return None
        values[letter] = value or ""
    if operands:
        raise UsageError(f"unexpected argument: {operands[0]!r}")
    if not values["d"]:
        raise UsageError("data directory is required")
    if not values["f"]:
        raise UsageError("fuse directory is required")
    if not values["s"]:
        raise UsageError("scripts directory must not be empty")
    if not values["p"]:
        raise UsageError("pid file must not be empty")
    config = InitConfig(values["d"], values["f"], values["s"], values["p"])
    check_layout(config)
    return config


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_layout(config: InitConfig) -> None:
    """chaosfs mounts the fuse dir's content over the data dir; if one contains the other the
    mount would serve itself and every access through it would loop back into the daemon."""
    data = os.path.realpath(config.data_dir)
    fuse = os.path.realpath(config.fuse_dir)
    if _inside(fuse, data):
        raise UsageError(
            f"fuse directory {config.fuse_dir} must not be the data directory or inside it"
        )
    if _inside(data, fuse):
        raise UsageError(
            f"data directory {config.data_dir} must not be inside the fuse directory"
            f" {config.fuse_dir}"
        )


def scripts_source() -> str:
    """The directory beside this program when it holds the shipped scripts, else /scripts."""
    beside = os.path.dirname(os.path.abspath(own_path()))
    for candidate in (beside, IMAGE_SCRIPTS_DIR):
        if os.path.isfile(os.path.join(candidate, MARKER)):
            return candidate
    raise InitError(f"no scripts to copy: {MARKER} is neither in {beside} nor in {IMAGE_SCRIPTS_DIR}")


def _copy_file(source: str, target_dir: str) -> str:
    """Copy keeping the permission bits. The copy goes to a temp name first and is renamed
    over the old file: writing into a binary a running container executes fails with ETXTBSY,
    and a reader never sees half a file."""
    name = os.path.basename(source)
    target = os.path.join(target_dir, name)
    partial = os.path.join(target_dir, f".{name}.{os.getpid()}.partial")
    mode = stat.S_IMODE(os.stat(source).st_mode)
    try:
        with open(source, "rb") as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.chmod(partial, mode)
        os.replace(partial, target)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    return target


def copy_scripts(target_dir: str) -> list[str]:
    source_dir = scripts_source()
    echo(f"copy scripts from {source_dir} to {target_dir}")
    try:
        os.makedirs(target_dir, exist_ok=True)
        if os.path.samefile(source_dir, target_dir):
            return []
        copied = []
        for entry in sorted(os.scandir(source_dir), key=lambda e: e.name):
            if entry.is_file() and not entry.name.startswith("."):
                copied.append(_copy_file(entry.path, target_dir))
                echo(f"copied {copied[-1]}")
        return copied
    except OSError as error:
        raise InitError(f"cannot copy scripts to {target_dir}: {_describe(error)}") from None


def make_dir(kind: str, path: str) -> None:
    echo(f"create {kind} directory {path}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise InitError(f"cannot create {kind} directory {path}: {error.strerror}") from None
    if not os.path.isdir(path):
        raise InitError(f"cannot create {kind} directory {path}: not a directory")


def remove_stale_pid_file(path: str) -> bool:
    """True when a pid file was there and is gone now."""
    if not os.path.lexists(path):
        echo(f"no stale pid file at {path}")
        return False
    echo(f"remove stale pid file {path}")
    try:
        os.unlink(path)
    except OSError as error:
        raise InitError(f"cannot remove stale pid file {path}: {error.strerror}") from None
    return True


def _describe(error: OSError) -> str:
    # Copy errors can concern the source, the target or the temp file: name the one.
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}"


def run(config: InitConfig) -> None:
    copy_scripts(config.scripts_dir)
    make_dir("data", config.data_dir)
    make_dir("fuse", config.fuse_dir)
    remove_stale_pid_file(config.pid_file)


def main(argv: Sequence[str] | None = None) -> int:
    config = Program(own_path(), usage).parse(parse_args, argv)
    if config is None:
        return 0
    try:
        run(config)
    except InitError as error:
        sys.stderr.write(f"{error}\n")
        return 1
    echo("init done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
