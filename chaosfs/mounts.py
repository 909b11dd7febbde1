"""Mount-table helpers: find, clear and lazily unmount FUSE mounts."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from typing import Optional

log = logging.getLogger("chaosfs.mounts")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, fstype) in mount order; [] if the table can't be read."""
    out = []
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) >= 5 and right:
                    out.append((_unescape(fields[4]), right.split()[0]))
    except OSError:
        return []
    return out


def mount_point_path(path: str) -> str:
    """How mountinfo names a mount at `path`: the directories above it with symlinks
    resolved (/var/run -> /run in most images), the last component as given, since
    resolving it would stat what may be a dead or hung FUSE mount."""
    path = os.path.abspath(path)
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head), tail) if tail else path


def mount_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """fstype of the topmost mount exactly at `path` (e.g. 'fuse.chaosfs'), else None."""
    path = mount_point_path(path)
    found = None
    for mp, fstype in _mounts(mountinfo):
        if mp == path:
            found = fstype
    return found


def fs_type_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """fstype of the mount holding `path` (the deepest, topmost mount point above it)."""
    path = os.path.realpath(path)
    best, found = -1, None
    for mp, fstype in _mounts(mountinfo):
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= best:
            best, found = len(mp), fstype
    return found


def lazy_unmount(path: str) -> bool:
    """Detach a mount even if busy or dead; True if something was unmounted."""
    fm = shutil.which("fusermount3") or shutil.which("fusermount")
    for cmd in ([fm, "-u", "-z", "-q", path] if fm else None, ["umount", "-l", path]):
        if cmd is None:
            continue
        try:
            if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=10).returncode == 0:
                return True
        except (OSError, subprocess.TimeoutExpired):
            continue
    return False


def clear_dead_mount(path: str) -> None:
    """A crashed daemon leaves 'Transport endpoint is not connected' behind: detach it so
    we can mount again (also lets -mountpoint's directory checks see the real dir)."""
    try:
        os.stat(path)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
            return
    log.warning("%s holds a dead FUSE mount; detaching it", path)
    lazy_unmount(path)
