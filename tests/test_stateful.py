"""Hypothesis stateful test: random sequences of file-system operations on the mount and on a
plain directory of the backing fs, compared after every step (results, errno names, and the
whole observable tree: types, modes, link counts, sizes, contents, link targets).

Names come from a tiny alphabet so that operations collide (same name, parent/child, hard
links, renames onto existing entries) far more often than random strings would."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, initialize, invariant,
                                 precondition, rule, run_state_machine_as_test)

from tests.conftest import make_daemon, mount_type

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
RENAME_FLAGS = st.sampled_from([0, 0, 0, 1, 2])  # plain, RENAME_NOREPLACE, RENAME_EXCHANGE

NAMES = st.sampled_from(["a", "b", "c"])
# Shallow names mostly: deep ones fail with ENOENT unless their parents happen to exist.
PATHS = st.one_of(NAMES, NAMES, NAMES, st.lists(NAMES, min_size=2, max_size=3).map("/".join))
MODES = st.sampled_from([0o644, 0o600, 0o755, 0o777, 0o400, 0o4755, 0o1777, 0o000])
DATA = st.binary(min_size=0, max_size=9000)
OFFSETS = st.one_of(st.integers(0, 10_000), st.sampled_from([4095, 4096, 65536, 1 << 20, 1 << 30]))
OPEN_FLAGS = st.sampled_from([os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_RDWR | os.O_APPEND,
                              os.O_WRONLY | os.O_TRUNC])


def renameat2(old: str, new: str, flags: int) -> None:
    if libc.renameat2(-100, old.encode(), -100, new.encode(), flags) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(s.st_mode):
                extra: Any = os.readlink(p)
            elif stat.S_ISREG(s.st_mode):
                # head and tail only: a write at 1 GiB leaves a sparse file that would
                # otherwise be read in full after every step
                with open(p, "rb") as f:
                    head = f.read(1 << 16)
                    f.seek(max(0, s.st_size - (1 << 16)))
                    tail = f.read()
                extra = (hash(head), hash(tail))
            else:
                extra = None
            size = None if stat.S_ISDIR(s.st_mode) else s.st_size
            out[rel] = (stat.filemode(s.st_mode), s.st_nlink, s.st_uid, size, extra)
    return out


class FsCompare(RuleBasedStateMachine):
    """Each rule runs on both roots; `both` asserts identical outcomes."""

    env: Any = None  # (daemon, native dir), set by the test
    counter = 0

    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        d, native = self.env
        FsCompare.counter += 1
        name = f"run{FsCompare.counter}"
        self.roots = [d.mountpoint / name, native / name]
        for r in self.roots:
            r.mkdir()
        self.open_fds: list[tuple[int, int]] = []
        self.known: list[str] = []  # entries that exist now, refreshed after every step

    def pick(self, data: Any, label: str) -> str:
        """An existing entry most of the time (else most operations just say ENOENT)."""
        if self.known and data.draw(st.integers(0, 9), label=f"{label}-fresh?") < 7:
            return data.draw(st.sampled_from(self.known), label=label)
        return data.draw(PATHS, label=label)

    def both(self, fn: Callable[[Path], Any]) -> Any:
        a, b = (outcome(lambda r=r: fn(r)) for r in self.roots)
        assert a == b, f"mount: {a!r}  native: {b!r}"
        return a

    # ---- namespace ------------------------------------------------------------------

    @initialize(content=DATA)
    def populate(self, content):
        # a small tree to start from, so early steps hit existing names
        def op(r):
            (r / "a").write_bytes(content)
            (r / "b").mkdir()
            (r / "b" / "c").write_bytes(content[:100])
            os.link(r / "a", r / "b" / "a")
        self.both(op)
        self.known = ["a", "b", "b/a", "b/c"]

    @rule(data=st.data(), mode=MODES, excl=st.booleans(), trunc=st.booleans())
    def create(self, mode, excl, trunc, data):
        path = self.pick(data, 'path')
        flags = os.O_CREAT | os.O_WRONLY | (os.O_EXCL if excl else 0) | (os.O_TRUNC if trunc else 0)
        self.both(lambda r: os.close(os.open(r / path, flags, mode)))

    @rule(data=st.data(), mode=MODES)
    def mkdir(self, mode, data):
        path = self.pick(data, 'path')
        self.both(lambda r: os.mkdir(r / path, mode))

    @rule(data=st.data())
    def rmdir(self, data):
        path = self.pick(data, 'path')
        self.both(lambda r: os.rmdir(r / path))

    @rule(data=st.data())
    def unlink(self, data):
        path = self.pick(data, 'path')
        self.both(lambda r: os.unlink(r / path))

    @rule(data=st.data(), flags=RENAME_FLAGS)
    def rename(self, flags, data):
        src = self.pick(data, 'src')
        dst = self.pick(data, 'dst')
        self.both(lambda r: renameat2(str(r / src), str(r / dst), flags))

    @rule(data=st.data())
    def link(self, data):
        src = self.pick(data, 'src')
        dst = self.pick(data, 'dst')
        self.both(lambda r: os.link(r / src, r / dst, follow_symlinks=False))

    @rule(dest=st.one_of(PATHS, st.just("../x"), st.just("/nonexistent")), data=st.data())
    def symlink(self, dest, data):
        path = self.pick(data, 'path')
        self.both(lambda r: os.symlink(dest, r / path))

    @rule(data=st.data())
    def readlink(self, data):
        path = self.pick(data, 'path')
        self.both(lambda r: os.readlink(r / path))

    @rule(data=st.data(), mode=MODES)
    def chmod(self, mode, data):
        path = self.pick(data, 'path')
        self.both(lambda r: os.chmod(r / path, mode))

    @rule(data=st.data(), uid=st.sampled_from([0, 1000, 65534]), gid=st.sampled_from([-1, 0, 1000]))
    def chown(self, uid, gid, data):
        path = self.pick(data, 'path')
        self.both(lambda r: os.chown(r / path, uid, gid, follow_symlinks=False))

    @rule(data=st.data())
    def listdir(self, data):
        path = self.pick(data, 'path')
        self.both(lambda r: sorted(os.listdir(r / path)))

    @rule(data=st.data())
    def stat(self, data):
        path = self.pick(data, 'path')
        def st_(r):
            s = os.stat(r / path)
            return stat.filemode(s.st_mode), s.st_nlink, None if stat.S_ISDIR(s.st_mode) else s.st_size
        self.both(st_)

    # ---- data through short-lived opens ----------------------------------------------

    @rule(data=st.data(), offset=OFFSETS, payload=DATA, append=st.booleans())
    def write(self, offset, payload, append, data):
        path = self.pick(data, 'path')

        def op(r):
            fd = os.open(r / path, os.O_WRONLY | (os.O_APPEND if append else 0))
            try:
                return os.pwrite(fd, payload, offset)
            finally:
                os.close(fd)
        self.both(op)

    @rule(data=st.data(), offset=OFFSETS, size=st.integers(0, 20000))
    def read(self, offset, size, data):
        path = self.pick(data, 'path')
        def op(r):
            fd = os.open(r / path, os.O_RDONLY)
            try:
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)
        self.both(op)

    @rule(data=st.data(), size=st.one_of(st.integers(0, 20000), st.just(-1)))
    def truncate(self, size, data):
        path = self.pick(data, 'path')
        self.both(lambda r: os.truncate(r / path, size))

    # ---- long-lived handles (survive renames and unlinks of their name) ---------------

    @precondition(lambda self: len(self.open_fds) < 4)
    @rule(data=st.data(), target=handles, flags=OPEN_FLAGS)
    def open(self, flags, data):
        path = self.pick(data, 'path')
        fds = []
        for r in self.roots:
            res = outcome(lambda: os.open(r / path, flags))
            fds.append(res)
        assert fds[0][0] == fds[1][0] and (fds[0][0] == "ok" or fds[0] == fds[1]), fds
        if fds[0][0] != "ok":
            return None
        pair = (fds[0][1], fds[1][1])
        self.open_fds.append(pair)
        return pair

    def _fd_op(self, pair, fn):
        if pair is None or pair not in self.open_fds:
            return
        a, b = outcome(lambda: fn(pair[0])), outcome(lambda: fn(pair[1]))
        assert a == b, f"mount: {a!r}  native: {b!r}"

    @rule(pair=handles, offset=OFFSETS, data=DATA)
    def fd_write(self, pair, offset, data):
        self._fd_op(pair, lambda fd: os.pwrite(fd, data, offset))

    @rule(pair=handles, offset=OFFSETS, size=st.integers(0, 20000))
    def fd_read(self, pair, offset, size):
        self._fd_op(pair, lambda fd: os.pread(fd, size, offset))

    @rule(pair=handles, size=st.integers(0, 20000))
    def fd_truncate(self, pair, size):
        self._fd_op(pair, lambda fd: os.ftruncate(fd, size))

    @rule(pair=handles)
    def fd_fstat(self, pair):
        def op(fd):
            s = os.fstat(fd)
            return stat.filemode(s.st_mode), s.st_nlink, s.st_size
        self._fd_op(pair, op)

    @rule(pair=handles)
    def fd_fsync(self, pair):
        self._fd_op(pair, os.fsync)

    @rule(pair=consumes(handles))
    def close(self, pair):
        if pair is None or pair not in self.open_fds:
            return
        self.open_fds.remove(pair)
        self._fd_op_close(pair)

    def _fd_op_close(self, pair):
        a, b = outcome(lambda: os.close(pair[0])), outcome(lambda: os.close(pair[1]))
        assert a == b

    # ---- after every step --------------------------------------------------------------

    @invariant()
    def trees_match(self):
        a, b = snapshot(self.roots[0]), snapshot(self.roots[1])
        self.known = sorted(a)
        assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}

    def teardown(self):
        for pair in self.open_fds:
            for fd in pair:
                os.close(fd)
        self.open_fds.clear()


CONFIGS = {"cython": ["-hot=cython"], "python": ["-hot=python"], "devfuse": ["-transport=cython"]}


@pytest.fixture(scope="module", params=list(CONFIGS))
def env(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"stateful-{request.param}")
    d = make_daemon(base, *CONFIGS[request.param])
    native = base / "native"
    native.mkdir()
    d.start()
    yield d, native, request.param
    d.cleanup()


def test_random_operations_match_native_dir(env):
    d, native, hot = env
    FsCompare.env = (d, native)
    run_state_machine_as_test(FsCompare, settings=settings(
        max_examples=100 if hot == "cython" else 40, stateful_step_count=40, deadline=None,
        database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    assert d.proc.poll() is None, d.log_text()
    assert mount_type(str(d.mountpoint)) == "fuse.chaosfs"
    assert "Traceback" not in d.log_text()
