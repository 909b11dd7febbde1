"""No injected reply may change the FUSE connection itself (issue 12, section 1).

The kernel takes ENOSYS on OPEN, OPENDIR, CREATE, FLUSH, FSYNC, FSYNCDIR, ACCESS, the xattr
opcodes, RENAME2 and FALLOCATE as "this server has no such operation" and switches it off
for the whole mount (an OPEN then "succeeds" with fh 0, fsync silently succeeds forever),
and it refuses a reply error of 512 or more (the app's syscall hangs). Real daemon, real
mount, real gRPC; the 0.9 client is built from the 0.9 proto alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import random
import subprocess
from pathlib import Path

import grpc
import pytest
import trio

from chaosfs.proto import faults_pb2 as fpb
from tests.conftest import errno_of

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
AT_FDCWD, RENAME_NOREPLACE = -100, 1

ALL = ("open read write mkdir rmdir opendir fsync flush release truncate getattr chown chmod "
       "utimens allocate getlk setlk setlkw statfs readlink symlink create access link mknod "
       "rename unlink getxattr listxattr removexattr setxattr lookup readdir releasedir "
       "fsyncdir lseek copy_file_range").split()
COMPAT = ALL[:31]
# From fs/fuse (Linux 6.x): opcodes whose ENOSYS reply sets a connection-wide no_* flag.
STICKY = set("open opendir create flush fsync fsyncdir access getxattr setxattr listxattr "
             "removexattr rename allocate lseek copy_file_range".split())


@pytest.fixture
def fs(fault_daemon):
    return fault_daemon({"dir/file": b"file-bytes" * 100, "top": b"top-bytes" * 50})


def rules(d) -> dict:
    return {r.id: r for r in d.faults.ListRules(fpb.ListRulesRequest()).rules}


def rename_noreplace(src: Path, dst: Path) -> None:
    if libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_every_method_with_enosys_511_512_through_both_apis(fs):
    inj = fs.injure
    for m in ALL:
        add = lambda code: fs.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(  # noqa: E731
            id=f"t-{m}-{code}", methods=[m], errno=fpb.ErrnoAction(code=code))))
        # v1: ENOSYS is refused, naming the method, exactly where the kernel would make it stick
        if m in STICKY:
            with pytest.raises(grpc.RpcError) as ei:
                add(errno.ENOSYS)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert ei.value.details().startswith("errno") and repr(m) in ei.value.details()
        else:
            add(errno.ENOSYS)
        add(511)
        with pytest.raises(grpc.RpcError) as ei:
            add(512)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "512" in ei.value.details()
        if m not in COMPAT:
            continue
        # 0.9: accepted as 0.9 did; ENOSYS on a sticky method is sent as EOPNOTSUPP
        inj.SetFault(inj.request(methods=[m], errno=errno.ENOSYS, pct=100))
        want = errno.EOPNOTSUPP if m in STICKY else errno.ENOSYS
        assert rules(fs)[f"injure:{m}"].errno.code == want, m
        inj.SetFault(inj.request(methods=[m], errno=511, pct=100))
        assert rules(fs)[f"injure:{m}"].errno.code == 511
        with pytest.raises(grpc.RpcError) as ei:
            inj.SetFault(inj.request(methods=[m], errno=512, pct=100))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rules(fs)[f"injure:{m}"].errno.code == 511  # the refused request changed nothing
    with pytest.raises(grpc.RpcError) as ei:  # a rule on every method includes the sticky ones
        fs.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(errno=fpb.ErrnoAction(code=38))))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    inj.SetFaultAll(inj.request(errno=errno.ENOSYS, pct=100))
    codes = {k: r.errno.code for k, r in rules(fs).items() if k.startswith("injure:")}
    assert codes == {f"injure:{m}": (95 if m in STICKY else 38) for m in COMPAT}
    assert "sent as EOPNOTSUPP" in fs.wait_log("sent as EOPNOTSUPP")


def battery(m: Path) -> dict:
    """One of every operation the kernel could have switched off; outcome per step."""
    out = {}
    out["cat"] = (m / "dir" / "file").read_bytes()
    out["create"] = errno_of(lambda: (m / "new").write_bytes(b"new"))
    fd = os.open(m / "new", os.O_RDWR)
    out["append"] = os.pwrite(fd, b"+more", 3)
    out["fsync"] = errno_of(os.fsync, fd)
    out["fdatasync"] = errno_of(os.fdatasync, fd)
    out["close"] = errno_of(os.close, fd)
    out["listdir"] = sorted(os.listdir(m / "dir"))
    dfd = os.open(m / "dir", os.O_RDONLY | os.O_DIRECTORY)
    out["fsyncdir"] = errno_of(os.fsync, dfd)
    os.close(dfd)
    out["setxattr"] = errno_of(os.setxattr, m / "new", "user.k", b"v")
    out["getxattr"] = os.getxattr(m / "new", "user.k")
    out["listxattr"] = os.listxattr(m / "new")
    out["removexattr"] = errno_of(os.removexattr, m / "new", "user.k")
    out["access"] = os.access(m / "new", os.R_OK)
    out["rename2"] = errno_of(rename_noreplace, m / "new", m / "new2")
    out["rename2-exists"] = errno_of(rename_noreplace, m / "new2", m / "top")
    out["read-back"] = (m / "new2").read_bytes()
    os.unlink(m / "new2")
    return out


# Requests each battery must get through to the daemon: none of them may have been switched off.
REACHES = ("open", "create", "flush", "fsync", "opendir", "fsyncdir", "setxattr", "getxattr",
           "listxattr", "removexattr", "rename", "read", "write")


@pytest.mark.parametrize("api", ["injure", "v1"])
def test_after_an_enosys_fault_and_recover_the_mount_is_as_good_as_new(fs, daemon_factory, transport, api):
    m, inj = fs.mountpoint, fs.injure
    for method in sorted(STICKY | {"read", "write", "getattr"}):
        if api == "injure":
            inj.SetFault(inj.request(methods=[method], errno=errno.ENOSYS, pct=100))
        elif method not in STICKY:
            fs.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
                methods=[method], errno=fpb.ErrnoAction(code=errno.ENOSYS))))
        try:
            battery(m)
        except OSError as e:  # the fault fired: never as ENOSYS where it would stick
            assert e.errno != errno.ENOSYS or method not in STICKY, (method, e)
        inj.RecoverAll(inj.empty())
        for leftover in ("new", "new2"):  # through the mount: its caches must stay true
            if (m / leftover).exists():
                (m / leftover).unlink()
    fs.faults.Stats(fpb.StatsRequest(reset=True))
    got = battery(m)
    counts = fs.method_counts()
    fresh = daemon_factory(f"-transport={transport}")
    (fresh.original / "dir").mkdir()
    (fresh.original / "dir" / "file").write_bytes(b"file-bytes" * 100)
    (fresh.original / "top").write_bytes(b"top-bytes" * 50)
    assert got == battery(fresh.mountpoint)
    assert got["cat"] == b"file-bytes" * 100 and got["read-back"] == b"new+more"
    for op in REACHES:
        assert counts.get(op, 0) > 0, f"{op} no longer reaches the daemon: {counts}"
    assert "Traceback" not in fs.log_text() and "KeyError" not in fs.log_text()


def test_511_reaches_the_app_and_512_never_hangs_it(fs):
    fs.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
        methods=["read"], path="^top$", errno=fpb.ErrnoAction(code=511))))
    assert errno_of(lambda: (fs.mountpoint / "top").read_bytes()) == 511
    for api_call in (
        lambda: fs.faults.AddRule(fpb.AddRuleRequest(rule=fpb.Rule(
            methods=["read"], path="^top$", errno=fpb.ErrnoAction(code=512)))),
        lambda: fs.injure.SetFault(fs.injure.request(methods=["read"], errno=512, pct=100)),
    ):
        with pytest.raises(grpc.RpcError) as ei:
            api_call()
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fs.faults.Clear(fpb.ClearRequest())
    # a child, so a hang would show as a timeout and not as a stuck test process
    r = subprocess.run(["cat", str(fs.mountpoint / "top")], capture_output=True, timeout=10)
    assert r.returncode == 0 and r.stdout == b"top-bytes" * 50


def tree(root: Path) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel] = sorted(dirs)
        for f in files:
            out[os.path.join(rel, f)] = (Path(dirpath) / f).read_bytes()
    return out


def test_09_random_errno_at_50_percent_for_2000_operations_then_recover(fs):
    """0.9's io-errno-example (SetFaultAll, random errno 7..53, pct 50): ENOSYS is among the
    draws; afterwards nothing may be lost, switched off or served from the wrong file."""
    m, o, inj = fs.mountpoint, fs.original, fs.injure
    rnd = random.Random(12)
    expect: dict[str, bytes] = {}
    for i in range(20):
        data = os.urandom(rnd.randrange(1, 5000))
        (o / f"f{i}").write_bytes(data)
        expect[f"f{i}"] = data
    inj.SetFaultAll(inj.request(random=True, pct=50))
    seen_errnos = set()
    for n in range(2000):
        name = f"f{rnd.randrange(20)}"
        op = rnd.randrange(8)
        try:
            if op == 0:
                with open(m / name, "rb") as f:
                    f.read()
            elif op == 1:
                data = os.urandom(rnd.randrange(1, 3000))
                with open(m / name, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            elif op == 2:
                os.stat(m / name)
            elif op == 3:
                os.listdir(m)
            elif op == 4:
                os.setxattr(m / name, "user.n", str(n).encode())
            elif op == 5:
                os.getxattr(m / name, "user.n")
            elif op == 6:
                os.rename(m / name, m / f"{name}.tmp")
                os.rename(m / f"{name}.tmp", m / name)
            else:
                os.access(m / name, os.W_OK)
        except OSError as e:
            seen_errnos.add(e.errno)
    inj.RecoverAll(inj.empty())
    assert seen_errnos, "a 50 % fault on every method never fired"
    # The tree and every file's bytes through the mount equal the backing dir's.
    assert tree(m) == tree(o)
    names = sorted(n for n in os.listdir(o) if n.startswith("f"))
    # A fresh open/read/fsync/xattr round, each really reaching the daemon.
    fs.faults.Stats(fpb.StatsRequest(reset=True))
    target = next(n for n in names if not n.endswith(".tmp"))
    fd = os.open(m / target, os.O_RDONLY | os.O_DIRECT)  # the read must reach the daemon
    assert os.read(fd, 1 << 20) == (o / target).read_bytes()
    os.close(fd)
    with open(m / target, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(b"tail")
        f.flush()
        os.fsync(f.fileno())
    os.setxattr(m / target, "user.after", b"1")
    assert os.getxattr(m / target, "user.after") == b"1"
    assert (o / target).read_bytes().endswith(b"tail")
    counts = fs.method_counts()
    for op in ("open", "read", "write", "fsync", "flush", "setxattr", "getxattr"):
        assert counts.get(op, 0) >= 1, (op, counts)
    assert "Traceback" not in fs.log_text()


def test_file_handles_never_issued_are_ebadf(tmp_path):
    """fh 0 (what a kernel that set no_open sends) or any fh we never issued: EBADF from
    every handler, never the data of whatever fd has that number."""
    from chaosfs.fs.operations import make_operations
    from chaosfs.transport import make_transport
    from pyfuse3 import FUSEError
    (tmp_path / "f").write_bytes(b"secret")
    other = os.open(tmp_path / "f", os.O_RDONLY)  # an fd the handlers must not touch
    for hot in ("cython", "python"):
        ops = make_operations(str(tmp_path), make_transport("pyfuse3"), hot=hot)
        for fh in (0, other):
            for call in (lambda: ops.read(fh, 0, 6), lambda: ops.write(fh, 0, b"x"),
                         lambda: ops.fsync(fh, False), lambda: ops.flush(fh),
                         lambda: ops.readdir(fh, 0, None), lambda: ops.fsyncdir(fh, False)):
                with pytest.raises(FUSEError) as ei:
                    trio.run(call)
                assert ei.value.errno == errno.EBADF, (hot, fh)
            trio.run(ops.release, fh)  # must not close the fd behind that number
        assert os.pread(other, 6, 0) == b"secret"
        os.fstat(0)
        stats = ops.gate.stats()
        assert sum(errs for _, errs, _, _ in stats.values()) >= 12
        assert sum(inj for _, _, inj, _ in stats.values()) == 0  # EBADF is chaosfs's own answer
    os.close(other)
