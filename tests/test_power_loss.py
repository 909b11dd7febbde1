"""Power loss through a real mount: arm, change the tree, cut, and find exactly the durable
state in the backing directory (and through the mount)."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from chaosfs.proto import faults_pb2, faults_pb2_grpc, powerloss_pb2 as pb, powerloss_pb2_grpc as pbg
from tests.conftest import CHAOSFS_CTL, TRANSPORTS, errno_of

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


class PL:
    """A daemon with the PowerLoss stub attached."""

    def __init__(self, d) -> None:
        self.d = d
        self.m = d.mountpoint
        self.o = d.original
        self.ch = grpc.insecure_channel(d.addr)
        self.stub = pbg.PowerLossStub(self.ch)
        self.faults = faults_pb2_grpc.FaultsStub(self.ch)

    def arm(self, **kw):
        return self.stub.Arm(pb.ArmRequest(**kw), timeout=10)

    def status(self):
        return self.stub.Status(pb.StatusRequest(), timeout=10)

    def cut(self, **kw):
        return self.stub.Cut(pb.CutRequest(**kw), timeout=60).result

    def disarm(self):
        return self.stub.Disarm(pb.DisarmRequest(), timeout=10).was_armed


@pytest.fixture(params=TRANSPORTS)
def pl(request, daemon_factory):
    d = daemon_factory(f"-transport={request.param}")
    p = PL(d)
    p.transport = request.param
    yield p
    p.ch.close()


def write(path: Path, data: bytes, *, sync: bool = False, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tree(root: Path) -> dict:
    """{relative path: bytes, or 'dir'} of everything under root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for n in dirs:
            out[os.path.normpath(os.path.join(rel, n))] = "dir"
        for n in files:
            out[os.path.normpath(os.path.join(rel, n))] = Path(dirpath, n).read_bytes()
    return out


def setup_durable(p: PL, files: dict) -> None:
    """Files made before arming: durable by definition (written directly, then synced)."""
    for rel, data in files.items():
        (p.o / rel).parent.mkdir(parents=True, exist_ok=True)
        write(p.o / rel, data, sync=True)


# ---- data -----------------------------------------------------------------------------------

def test_unsynced_overwrite_and_append_dropped_synced_kept(pl):
    setup_durable(pl, {"a": b"A" * 10000, "b": b"B" * 100})
    pl.arm()
    with open(pl.m / "a", "r+b") as f:
        f.seek(4000)
        f.write(b"x" * 3000)           # overwrite, never synced
        f.seek(0, 2)
        f.write(b"tail")               # extend, never synced
    with open(pl.m / "b", "r+b") as f:
        f.seek(50)
        f.write(b"y" * 100)            # overwrite + extend, then fsynced
        f.flush()
        os.fsync(f.fileno())
        f.write(b"after-sync")         # lost
    st = pl.status().tracked
    assert st.files == 2 and st.unsynced_bytes == 3000 + 4 + 10 and st.undo_bytes == 3000
    r = pl.cut()
    assert (pl.o / "a").read_bytes() == b"A" * 10000
    assert (pl.o / "b").read_bytes() == b"B" * 50 + b"y" * 100
    assert (pl.m / "a").read_bytes() == b"A" * 10000  # the kernel's cached pages went too
    assert sorted(r.files) == ["a", "b"] and r.bytes_dropped == 3014 and not r.inexact


def test_truncate_fallocate_and_o_trunc_rolled_back(pl):
    setup_durable(pl, {"t": bytes(range(256)) * 40, "p": b"P" * 8192, "o": b"O" * 5000})
    pl.arm()
    os.truncate(pl.m / "t", 100)
    os.truncate(pl.m / "t", 20000)     # grows with zeros
    fd = os.open(pl.m / "p", os.O_RDWR)
    try:
        os.posix_fallocate(fd, 8192, 4096)  # grows (glibc writes zeros where FUSE lacks it)
        # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE over the first 4 KiB; pyfuse3 (libfuse
        # 3.14) has no FALLOCATE, the /dev/fuse transport serves every mode
        rc = libc.fallocate(fd, 3, ctypes.c_long(0), ctypes.c_long(4096))
        assert rc == 0 if pl.transport == "cython" else ctypes.get_errno() == errno.EOPNOTSUPP
    finally:
        os.close(fd)
    if pl.transport == "cython":
        assert (pl.m / "p").read_bytes()[:10] == b"\0" * 10
    write(pl.m / "o", b"new")          # O_TRUNC open, then a write
    pl.cut()
    assert (pl.o / "t").read_bytes() == bytes(range(256)) * 40
    assert (pl.o / "p").read_bytes() == b"P" * 8192
    assert (pl.o / "o").read_bytes() == b"O" * 5000


def test_keep_probability_one_keeps_every_data_op_and_torn_keeps_a_sector_prefix(pl):
    setup_durable(pl, {"k": b"K" * 4096, "w": b"W" * 8192})
    pl.arm()
    with open(pl.m / "k", "r+b") as f:
        f.write(b"1" * 100)
        f.seek(200)
        f.write(b"2" * 100)
    r = pl.cut(keep_probability=1.0)
    assert (pl.o / "k").read_bytes() == b"1" * 100 + b"K" * 100 + b"2" * 100 + b"K" * 3796
    assert r.ops_kept == 2 and r.bytes_dropped == 0
    # still armed after a cut, with a fresh history
    assert pl.status().armed and pl.status().tracked.data_ops == 0
    with open(pl.m / "w", "r+b") as f:
        f.seek(100)
        f.write(b"z" * 3000)           # crosses the 512 B boundaries at 512 .. 3072
    r = pl.cut(torn=True, seed=7)
    data = (pl.o / "w").read_bytes()
    new = [i for i in range(len(data)) if data[i:i + 1] == b"z"]
    assert new, "a torn write keeps a non-empty prefix here (boundaries exist inside it)"
    end = new[-1] + 1
    assert new[0] == 100 and end % 512 == 0 and end < 3100, (new[0], end)
    assert data[end:] == b"W" * (8192 - end) and len(r.torn) == 1 and r.torn[0].startswith("w@100+")


def test_copy_file_range_destination_rolled_back(pl):
    setup_durable(pl, {"src": b"S" * 5000, "dst": b"D" * 5000})
    pl.arm()
    si, do = os.open(pl.m / "src", os.O_RDONLY), os.open(pl.m / "dst", os.O_WRONLY)
    try:
        n = os.copy_file_range(si, do, 3000, 0, 1000)
    finally:
        os.close(si)
        os.close(do)
    assert n > 0 and (pl.m / "dst").read_bytes()[1000:1001] == b"S"
    pl.cut()
    assert (pl.o / "dst").read_bytes() == b"D" * 5000


# ---- directory entries ----------------------------------------------------------------------

def test_create_kept_only_after_its_directory_is_fsynced(pl):
    (pl.o / "sub").mkdir()
    pl.arm()
    write(pl.m / "lost.txt", b"data", sync=True)    # file synced, directory not
    write(pl.m / "sub" / "kept.txt", b"data", sync=True)
    fsync_dir(pl.m / "sub")
    (pl.m / "newdir").mkdir()
    write(pl.m / "newdir" / "inner", b"x", sync=True)
    fsync_dir(pl.m / "newdir")                      # but newdir's own entry is not durable
    r = pl.cut()
    assert tree(pl.o) == {"sub": "dir", "sub/kept.txt": b"data"}
    assert tree(pl.m) == tree(pl.o)
    assert "removed lost.txt" in r.entries and "removed newdir" in r.entries


def test_naive_rename_over_config_is_lost_dir_fsync_keeps_it(pl):
    """The classic: write a temp file, rename it over the config. Without an fsync of the
    directory the rename may not survive; with one it does."""
    setup_durable(pl, {"naive.conf": b"v1", "careful.conf": b"v1"})
    pl.arm()
    for name, careful in (("naive.conf", False), ("careful.conf", True)):
        tmp = pl.m / f"{name}.tmp"
        write(tmp, b"v2", sync=True)
        os.rename(tmp, pl.m / name)
        if careful:
            fsync_dir(pl.m)
            break
    # the careful writer's dir fsync also made the naive rename (same directory, earlier)
    # durable: run the naive one again, after it
    write(pl.m / "naive.conf.tmp", b"v3", sync=True)
    os.rename(pl.m / "naive.conf.tmp", pl.m / "naive.conf")
    r = pl.cut()
    assert (pl.o / "careful.conf").read_bytes() == b"v2"
    assert (pl.o / "naive.conf").read_bytes() == b"v2"  # v3's rename was lost
    assert not (pl.o / "naive.conf.tmp").exists()       # and its create with it
    assert (pl.m / "naive.conf").read_bytes() == b"v2"
    assert any(e.startswith("renamed back naive.conf") for e in r.entries)


def test_unlink_rmdir_and_rename_over_restored(pl):
    setup_durable(pl, {"gone": b"G" * 3000, "d/x": b"X", "victim": b"V", "mover": b"M"})
    pl.arm()
    os.unlink(pl.m / "gone")
    os.unlink(pl.m / "d" / "x")
    os.rmdir(pl.m / "d")
    os.rename(pl.m / "mover", pl.m / "victim")      # frees the old victim inode
    assert sorted(os.listdir(pl.m)) == ["victim"]
    st = pl.status().tracked
    assert st.dir_entries == 4
    pl.cut()
    assert tree(pl.o) == {"gone": b"G" * 3000, "d": "dir", "d/x": b"X", "victim": b"V", "mover": b"M"}
    assert tree(pl.m) == tree(pl.o)
    assert os.listdir(pl.d.original.parent / ".chaosfs-power-loss.original" / "stash") == []


def test_cross_directory_rename_needs_both_directories_synced(pl):
    setup_durable(pl, {"a/f": b"F", "b/.keep": b""})
    pl.arm()
    os.rename(pl.m / "a" / "f", pl.m / "b" / "f")
    fsync_dir(pl.m / "b")                           # only the destination
    pl.cut()
    assert (pl.o / "a" / "f").read_bytes() == b"F" and not (pl.o / "b" / "f").exists()
    os.rename(pl.m / "a" / "f", pl.m / "b" / "f")
    fsync_dir(pl.m / "b")
    fsync_dir(pl.m / "a")
    pl.cut()
    assert (pl.o / "b" / "f").read_bytes() == b"F" and not (pl.o / "a" / "f").exists()


def test_journal_model_commits_entries_with_any_fsync(pl):
    pl.arm(model=pb.JOURNAL)
    write(pl.m / "created", b"c")                   # no fsync of it, nor of the directory
    write(pl.m / "other", b"o", sync=True)          # an fsync commits every earlier entry
    write(pl.m / "late", b"l")
    r = pl.cut()
    assert sorted(os.listdir(pl.o)) == ["created", "other"]
    assert (pl.o / "created").read_bytes() == b"" and (pl.o / "other").read_bytes() == b"o"
    assert r.entries == ["removed late"]


# ---- the cut itself and the API -------------------------------------------------------------

def test_requests_fail_with_eio_during_the_cut_and_serve_after(pl):
    setup_durable(pl, {"f": b"F" * 100})
    pl.arm()
    errs: list[int] = []
    t = threading.Thread(target=lambda: pl.cut(hold_seconds=1.5))
    t.start()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and not errs:
        e = errno_of(lambda: (pl.m / "f").read_bytes())
        if e:
            errs.append(e)
        time.sleep(0.02)
    t.join()
    assert errs and errs[0] == errno.EIO
    assert (pl.m / "f").read_bytes() == b"F" * 100
    assert pl.faults.ListRules(faults_pb2.ListRulesRequest(), timeout=5).rules == []


def test_block_mode_holds_requests_until_the_power_is_back(pl):
    """--block: a read made during the cut waits, then returns the rolled-back data."""
    setup_durable(pl, {"f": b"old" * 100})
    pl.arm()
    with open(pl.m / "f", "r+b") as f:
        f.write(b"NEW")
    t = threading.Thread(target=lambda: pl.cut(block=True, hold_seconds=1.0))
    t.start()
    deadline = time.monotonic() + 5
    while not pl.status().cutting and time.monotonic() < deadline:
        time.sleep(0.005)
    t0 = time.monotonic()
    data = (pl.m / "f").read_bytes()              # no EIO: it waited
    waited = time.monotonic() - t0
    t.join()
    assert data == b"old" * 100 and 0.3 < waited < 5, waited
    assert pl.faults.ListRules(faults_pb2.ListRulesRequest(), timeout=5).rules == []


def test_api_errors_are_statuses_and_change_nothing(pl):
    def code(fn, *a, **kw):
        with pytest.raises(grpc.RpcError) as ei:
            fn(*a, **kw)
        return ei.value.code(), ei.value.details()
    c, msg = code(pl.cut)
    assert c == grpc.StatusCode.FAILED_PRECONDITION and "not armed" in msg
    pl.arm()
    c, msg = code(pl.arm)
    assert c == grpc.StatusCode.FAILED_PRECONDITION and "already armed" in msg
    for kw, field in (({"keep_probability": 1.5}, "keep_probability"), ({"sector": 1000}, "sector"),
                      ({"hold_seconds": -1}, "hold")):
        c, msg = code(pl.cut, **kw)
        assert c == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith(field), msg
    write(pl.m / "f", b"x")
    assert pl.status().tracked.dir_entries == 1  # the refused cuts dropped nothing
    assert pl.disarm() is True and pl.disarm() is False
    write(pl.m / "g", b"y")
    assert not pl.status().armed
    assert not (pl.d.original.parent / ".chaosfs-power-loss.original").exists()


def test_undo_bound_overflow_is_reported_not_silent(pl):
    setup_durable(pl, {"big": b"B" * 200_000})
    pl.arm(max_undo_bytes=50_000)
    with open(pl.m / "big", "r+b") as f:
        f.write(b"n" * 100_000)
    st = pl.status().tracked
    assert st.undo_overflow_bytes > 0 and st.undo_bytes <= 50_000
    r = pl.cut()
    assert r.inexact and "undo bound" in r.inexact[0]


def test_ctl_power_loss_commands(pl):
    def ctl(*args):
        return subprocess.run([CHAOSFS_CTL, "--addr", pl.d.addr, *args], capture_output=True, text=True)
    cp = ctl("power-loss", "arm", "--max-undo", "64MiB")
    assert cp.returncode == 0 and "armed (posix model, undo bound 67108864 bytes" in cp.stdout, cp.stderr
    write(pl.m / "n", b"data")
    cp = ctl("--json", "power-loss", "status")
    st = json.loads(cp.stdout)
    assert st["armed"] is True and st["tracked"]["dir_entries"] == 1
    cp = ctl("power-loss", "cut", "--seed", "3")
    assert cp.returncode == 0 and "entry    removed n" in cp.stdout, cp.stdout
    cp = ctl("power-loss", "cut", "--sector", "100")
    assert cp.returncode == 2 and "--sector" in cp.stderr
    cp = ctl("power-loss", "disarm")
    assert cp.returncode == 0 and cp.stdout.strip() == "disarmed"
    cp = ctl("power-loss", "cut")
    assert cp.returncode == 1 and cp.stderr.strip().startswith("chaosfs-ctl: refused: not armed")


def test_faults_stats_report_what_is_tracked_and_what_cuts_dropped(pl):
    from chaosfs.proto import faults_pb2
    st = pl.faults.Stats(faults_pb2.StatsRequest(), timeout=10)
    assert st.HasField("power_loss") and not st.power_loss.armed and st.power_loss.totals.cuts == 0
    pl.arm()
    write(pl.m / "a", b"x" * 100)
    st = pl.faults.Stats(faults_pb2.StatsRequest(), timeout=10).power_loss
    assert st.armed and st.tracked.files == 1 and st.tracked.unsynced_bytes == 100
    assert st.tracked.dir_entries == 1
    pl.cut()
    st = pl.faults.Stats(faults_pb2.StatsRequest(), timeout=10).power_loss
    assert (st.totals.cuts, st.totals.bytes_dropped, st.totals.entries_undone) == (1, 100, 1)
    assert list(st.last_cut.entries) == ["removed a"], st.last_cut
    cp = subprocess.run([CHAOSFS_CTL, "--addr", pl.d.addr, "stats"], capture_output=True, text=True)
    assert cp.returncode == 0 and "power loss: armed (posix model" in cp.stdout, cp.stdout
    assert "1 cut(s) so far: 100 bytes dropped, 1 file(s) rolled back, 1 entr(ies) undone" in cp.stdout


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_passthrough_open_refuses_arming_and_armed_opens_are_not_passed_through(daemon_factory, transport):
    """-passthrough=unmatched: the kernel writes such files itself, past chaosfs, so their
    writes could not be rolled back. Arming is refused while one is open; while armed no
    open gets passthrough, so every write is seen."""
    d = daemon_factory("-passthrough=unmatched", f"-transport={transport}")
    assert "kernel passthrough for unmatched files" in d.wait_log("FUSE connection")
    p = PL(d)
    try:
        setup_durable(p, {"f": b"F" * 100})
        with open(p.m / "f", "r+b") as held:
            held.read(1)
            with pytest.raises(grpc.RpcError) as ei:
                p.arm()
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "kernel passthrough" in ei.value.details() and ": f;" in ei.value.details()
        assert not p.status().armed
        p.arm()
        with open(p.m / "f", "r+b") as f:
            f.write(b"new")
        assert p.status().tracked.unsynced_bytes == 3  # the write reached chaosfs
        p.cut()
        assert (p.o / "f").read_bytes() == b"F" * 100
    finally:
        p.ch.close()


def test_metrics_report_tracking_and_cuts(daemon_factory):
    from tests.conftest import free_port
    from tests.test_metrics import scrape, value
    mport = free_port()
    d = daemon_factory("-transport=cython", f"-metrics-addr=127.0.0.1:{mport}")
    p = PL(d)
    try:
        assert value(scrape(mport), "chaosfs_power_loss_armed") == 0
        p.arm()
        write(p.m / "f", b"x" * 1000)
        m = scrape(mport)
        assert value(m, "chaosfs_power_loss_armed") == 1
        assert value(m, "chaosfs_power_loss_tracked_unsynced_bytes") == 1000
        assert value(m, "chaosfs_power_loss_tracked_dir_entries") == 1
        p.cut()
        m = scrape(mport)
        assert value(m, "chaosfs_power_loss_cuts_total") == 1
        assert value(m, "chaosfs_power_loss_dropped_bytes_total") == 1000
        assert value(m, "chaosfs_power_loss_undone_entries_total") == 1
        assert value(m, "chaosfs_power_loss_tracked_unsynced_bytes") == 0
    finally:
        p.ch.close()


def test_torn_write_rule_reports_success_and_lands_a_sector_prefix(pl):
    setup_durable(pl, {"db/wal": b"W" * 8192, "other": b"O" * 100})
    pl.faults.AddRule(faults_pb2.AddRuleRequest(rule=faults_pb2.Rule(
        methods=["write"], path="db/", torn=faults_pb2.TornAction(sector=512))), timeout=10)
    ends = set()
    for i in range(8):
        fd = os.open(pl.m / "db" / "wal", os.O_WRONLY)
        try:
            assert os.pwrite(fd, bytes([65 + i]) * 3000, 100) == 3000  # success, all of it
        finally:
            os.close(fd)
        data = (pl.o / "db" / "wal").read_bytes()
        landed = data[100:3100]
        n = len(landed) - len(landed.lstrip(bytes([65 + i])))
        assert (100 + n) % 512 == 0 and n < 3000, n     # stops at a sector boundary inside it
        ends.add(n)
    assert len(ends) > 1                                 # at a random one
    write(pl.m / "other", b"untouched")                  # the rule's path only
    assert (pl.o / "other").read_bytes() == b"untouched"
    rules = pl.faults.ListRules(faults_pb2.ListRulesRequest(), timeout=5).rules
    assert rules[0].torn.sector == 512 and rules[0].hits == 8
    cp = subprocess.run([CHAOSFS_CTL, "--addr", pl.d.addr, "rules"], capture_output=True, text=True)
    assert "torn=512" in cp.stdout, cp.stdout
    cp = subprocess.run([CHAOSFS_CTL, "--addr", pl.d.addr, "add", "-m", "write", "--torn", "4096"],
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    with pytest.raises(grpc.RpcError) as ei:
        pl.faults.AddRule(faults_pb2.AddRuleRequest(rule=faults_pb2.Rule(
            methods=["read"], torn=faults_pb2.TornAction(sector=512))), timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "write" in ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        pl.faults.AddRule(faults_pb2.AddRuleRequest(rule=faults_pb2.Rule(
            torn=faults_pb2.TornAction(sector=1000))), timeout=10)
    assert ei.value.details().startswith("torn.sector")


def test_power_loss_dir_inside_original_is_refused_at_start(tmp_path):
    from tests.conftest import CHAOSFS
    (tmp_path / "o").mkdir()
    (tmp_path / "m").mkdir()
    cp = subprocess.run([CHAOSFS, f"-original={tmp_path}/o", f"-mountpoint={tmp_path}/m",
                         f"-pidfile={tmp_path}/p", f"-power-loss-dir={tmp_path}/o/pl"],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1
    assert "-power-loss-dir" in cp.stderr and "inside -original" in cp.stderr


def test_power_loss_dir_on_another_file_system_refuses_arming(daemon_factory, tmp_path):
    other = Path("/dev/shm") / f"chaosfs-pl-{os.getpid()}"
    d = daemon_factory("-transport=cython", f"-power-loss-dir={other}")
    p = PL(d)
    try:
        with pytest.raises(grpc.RpcError) as ei:
            p.arm()
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not on -original's file system" in ei.value.details()
        assert not p.status().armed and not other.exists()
        write(p.m / "f", b"x")  # the daemon serves on as before
        assert (p.o / "f").read_bytes() == b"x"
    finally:
        p.ch.close()


def test_an_fsync_that_ends_after_a_concurrent_one_keeps_later_writes_unsynced(tmp_path):
    """Two fsyncs of one file overlap (two threads): the later-started one makes the file
    wholly durable and its track goes; a write then starts a new track. The earlier fsync
    finishing last must not count that write as synced (its mark names the old track)."""
    from chaosfs.fs.durability import WRITE, CutOptions, Durability
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"a" * 8192)
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    ffd = os.open(root / "f", os.O_RDWR)
    d = Durability(rfd, str(tmp_path / "pl"), 1 << 20)
    try:
        st = os.fstat(ffd)
        key = (st.st_dev, st.st_ino)
        for off in (0, 4096):
            d.data_op(key, ffd, WRITE, off, 4096)
            os.pwrite(ffd, b"b" * 4096, off)
        first = d.sync_mark(key)   # the earlier fsync starts...
        second = d.sync_mark(key)  # ...a concurrent one starts and ends first
        d.file_synced(key, second)
        assert d.status()["data_ops"] == 0
        d.data_op(key, ffd, WRITE, 0, 4096)  # after both marks: not synced by either
        os.pwrite(ffd, b"c" * 4096, 0)
        d.file_synced(key, first)
        assert d.status()["data_ops"] == 1
        d.rollback(CutOptions())
        assert os.pread(ffd, 8192, 0) == b"b" * 8192  # the unsynced write is undone
    finally:
        d.close()
        os.close(ffd)
        os.close(rfd)
