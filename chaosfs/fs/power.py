"""Power-loss experiments: arm the durability model, cut, disarm (the chaosfs.v1.PowerLoss
RPCs and `chaosfs-ctl power-loss` end here).

While armed, the FsOperations hooks feed chaosfs.fs.durability; the hot write and fsync
handlers are replaced on the Operations instance (so an unarmed daemon pays nothing on its
hot path) and the C workers send writes and fsyncs to Python (the gate is held active and
every open's view drops them). Kernel passthrough (-passthrough=unmatched) writes bypass the
daemon, so arming is refused while a file is open in passthrough and no new open gets it
while armed.

A cut, called on a gRPC thread: a catch-all rule makes every request fail with EIO (or wait,
with `block`), which also drops the kernel's caches (dirty mmap pages included: their
write-back fails); the rollback runs on the FUSE loop's thread, between requests; the
kernel forgets the names and pages the rollback changed; after `hold` seconds the rule goes
and the mount serves the rolled-back tree. The model stays armed, with an empty history.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Any, Optional

import trio

from chaosfs.faults.engine import InjectedError, blackout
from chaosfs.faults.methods import ALL_METHODS, METHOD_ID
from chaosfs.faults.rules import Rule
from chaosfs.fs.durability import (MODELS, WRITE, CutOptions, CutReport, Durability, PowerLossArgError,
                                   PowerLossError)
from chaosfs.fs.hot_python import pwrite_fuse, write_through
from chaosfs.fs.inodes import IO_PASSTHROUGH

log = logging.getLogger("chaosfs.power")

CUT_RULE = "power-loss:cut"
CUT_WRITES = "power-loss:cut-writes"
M_WRITE = METHOD_ID["write"]
DEFAULT_MAX_UNDO = 1 << 30


class PowerLoss:
    def __init__(self, ops: Any, engine: Any, original: str, workdir: str = "") -> None:
        self.ops = ops
        self.engine = engine
        parent, base = os.path.split(os.path.realpath(original).rstrip("/"))
        # beside -original, so on its file system (stash hard links), never inside it
        self.workdir = workdir or os.path.join(parent, f".chaosfs-power-loss.{base}")
        self.token: Optional[trio.lowlevel.TrioToken] = None
        self._lock = threading.Lock()  # one arm/cut/disarm at a time
        self.gen = 0                   # moves at every cut and disarm
        self.totals = {"cuts": 0, "bytes_dropped": 0, "files_rolled_back": 0,
                       "entries_undone": 0, "ops_kept": 0}
        self.last_cut: Optional[dict] = None
        self.cutting = False

    # ---- on the FUSE loop's thread -----------------------------------------------------------

    def _on_loop(self, fn: Any, *args: Any) -> Any:
        if self.token is None:
            raise PowerLossError("the file system is not serving yet")
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self.token)
        except trio.RunFinishedError:
            raise PowerLossError("the file system is shutting down") from None

    def _arm_on_loop(self, max_undo: int, model: str) -> dict:
        ops = self.ops
        if ops.durable is not None:
            raise PowerLossError("already armed (disarm first, or cut)")
        open_pt = sorted({ops.inodes.path_of(h.node) or "/" for h in ops.handles.values()
                          if h.io == IO_PASSTHROUGH})
        if open_pt:
            raise PowerLossError(
                f"{len(open_pt)} file(s) are open in kernel passthrough (-passthrough): their "
                f"writes bypass chaosfs and could not be rolled back: {', '.join(open_pt[:5])}"
                + (" ..." if len(open_pt) > 5 else "") + "; close them (restart the app) and arm again")
        d = Durability(ops.root_fd, self.workdir, max_undo, model)
        ops.durable = d
        # instance attributes shadow the class's hot handlers until disarm
        ops.write = self._armed_write
        ops.fsync = self._armed_fsync
        return d.status()

    def _disarm_on_loop(self) -> bool:
        ops = self.ops
        d = ops.durable
        if d is None:
            return False
        ops.durable = None
        self.gen += 1
        for name in ("write", "fsync"):
            ops.__dict__.pop(name, None)
        d.close()
        return True

    def _rollback_on_loop(self, opts: CutOptions) -> tuple[CutReport, list, list]:
        d = self.ops.durable
        if d is None:
            raise PowerLossError("not armed")
        self.gen += 1  # a write or fsync caught mid-flight by the cut fails, never lands after it
        rep = d.rollback(opts)  # (it moves d.epoch, which fsyncdir checks)
        inodes = self.ops.inodes
        for key, pkey, name in rep.moved:  # the inode table learns the names put back
            node, parent = inodes.by_key.get(key), inodes.by_key.get(pkey)
            if node is not None and parent is not None:
                node.parent, node.name = parent, name
        self.ops.gate.next_epoch()
        entries = [(inodes.by_key[p].ino, n) for p, n in rep.slots if p in inodes.by_key]
        return rep, [n.ino for n in list(inodes.by_ino.values())], entries

    # ---- the armed hot handlers ----------------------------------------------------------------

    async def _armed_write(self, fh: int, off: int, buf: bytes) -> int:
        ops = self.ops
        gen = self.gen

        def pwrite(fd: int, at: int, data: bytes) -> int:
            if self.gen != gen:
                raise InjectedError(errno.EIO)  # the power went while this write waited
            h = ops.handles.get(fd)
            if ops.durable is not None and h is not None:
                ops.armed_data(h.node, fd, WRITE, at, len(data))
            return pwrite_fuse(fd, at, data)

        return await write_through(ops, fh, off, buf, pwrite)

    async def _armed_fsync(self, fh: int, datasync: bool) -> None:
        ops = self.ops
        h = ops.handles.get(fh)
        d = ops.durable
        gen = self.gen
        mark = d.sync_mark((h.node.dev, h.node.bino)) if d is not None and h is not None else 0
        await type(ops).fsync(ops, fh, datasync)
        if self.gen != gen:
            # The power went while the disk was syncing: what it synced may have been rolled
            # back meanwhile, so the app must not hear that it is durable.
            raise InjectedError(errno.EIO)
        if h is not None and d is not None:
            d.file_synced((h.node.dev, h.node.bino), mark)

    def close(self) -> None:
        """At daemon exit (the loop has ended): an armed model's directory goes."""
        d, self.ops.durable = self.ops.durable, None
        if d is not None:
            d.close()

    # ---- the RPCs (gRPC threads) ---------------------------------------------------------------

    def arm(self, max_undo: int = DEFAULT_MAX_UNDO, model: str = "posix") -> dict:
        if max_undo <= 0:
            raise PowerLossArgError("max_undo: must be more than 0 bytes")
        if model not in MODELS:
            raise PowerLossArgError(f"model: {model!r} is not one of {', '.join(MODELS)}")
        with self._lock:
            self.engine.hold_active(True)
            try:
                st = self._on_loop(self._arm_on_loop, max_undo, model)
            except BaseException:
                self.engine.hold_active(False)
                raise
            self.ops.rules_changed([], [])  # every open's view now sends writes to Python
        log.info("power-loss armed (model %s, undo bound %d bytes, in %s)", model, max_undo, self.workdir)
        return st

    def disarm(self) -> bool:
        with self._lock:
            was = self._on_loop(self._disarm_on_loop)
            self.engine.hold_active(False)
            self.ops.rules_changed([], [])
        if was:
            log.info("power-loss disarmed")
        return was

    def status(self) -> dict:
        d = self.ops.durable
        st = self._on_loop(d.status) if d is not None else {}
        return {"armed": d is not None, "cutting": self.cutting, "tracked": st,
                "totals": dict(self.totals), "last_cut": self.last_cut, "workdir": self.workdir}

    def cut(self, opts: CutOptions, block: bool = False, hold: float = 0.0) -> dict:
        if not (0.0 <= opts.keep_probability <= 1.0):
            raise PowerLossArgError("keep_probability: must be within 0..1")
        if opts.sector not in (512, 4096):
            raise PowerLossArgError("sector: must be 512 or 4096")
        if not (0.0 <= hold <= 3600.0):
            raise PowerLossArgError("hold: must be within 0..3600 seconds")
        with self._lock:
            if self.ops.durable is None:
                raise PowerLossError("not armed: arm first (nothing is tracked, nothing to lose)")
            self.cutting = True
            t0 = time.monotonic()
            # Blocked requests wait until the power is back, then see the rolled-back tree.
            # Writes fail even then: the kernel's write-back of dirty mmap pages, which our
            # own cache invalidation below triggers, must not wait for the cut to end.
            if block:
                rules = [Rule(id=CUT_RULE, origin="power-loss", block=True,
                              methods=frozenset(set(range(len(ALL_METHODS))) - {M_WRITE})),
                         Rule(id=CUT_WRITES, origin="power-loss", errno=errno.EIO,
                              methods=frozenset({M_WRITE}))]
                self._on_loop(blackout.begin)
            else:
                rules = [Rule(id=CUT_RULE, origin="power-loss", errno=errno.EIO)]
            try:
                self.engine.remove([CUT_RULE, CUT_WRITES], missing_ok=True)
                for r in rules:
                    self.engine.add(r)
                rep, inos, entries = self._on_loop(self._rollback_on_loop, opts)
                t = self.ops.transport
                for ino, name in entries:
                    try:
                        t.invalidate_entry(ino, name)
                    except OSError:
                        pass
                for ino in inos:
                    try:
                        t.invalidate_inode(ino, False)
                    except OSError:
                        pass
                if hold:
                    time.sleep(hold)
            finally:
                self.engine.remove([CUT_RULE, CUT_WRITES], missing_ok=True)
                if block:
                    self._on_loop(blackout.end)
                self.cutting = False
        out = {"files": rep.files, "bytes_dropped": rep.bytes_dropped,
               "ops_dropped": rep.ops_dropped, "ops_kept": rep.ops_kept, "torn": rep.torn,
               "entries": rep.entries, "inexact": rep.inexact,
               "rollback_seconds": round(rep.seconds, 4),
               "seconds": round(time.monotonic() - t0, 4)}
        self.totals["cuts"] += 1
        self.totals["bytes_dropped"] += rep.bytes_dropped
        self.totals["files_rolled_back"] += len(rep.files)
        self.totals["entries_undone"] += len(rep.entries)
        self.totals["ops_kept"] += rep.ops_kept
        self.last_cut = out
        log.warning("power cut: %d file(s) rolled back (%d unsynced bytes dropped, %d op(s) "
                    "kept), %d directory entr%s undone%s%s", len(rep.files), rep.bytes_dropped,
                    rep.ops_kept, len(rep.entries), "y" if len(rep.entries) == 1 else "ies",
                    (": " + "; ".join(rep.files + rep.entries)) if rep.files or rep.entries else "",
                    (f"; INEXACT: {'; '.join(rep.inexact)}") if rep.inexact else "")
        return out
