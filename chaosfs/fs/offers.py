"""What the file-system logic lets the transport answer without it, and how it keeps that
honest: per open, which hot requests no rule touches and the rules the transport may apply
itself (set_hot); per inode, GETATTR from its O_PATH fd (attrs_offer); kernel passthrough
for files no rule reaches (-passthrough=unmatched); and the one walk over the known inodes
after a rule change that drops the kernel caches the change made stale.

A mixin of FsOperations (operations.py), which holds the state it reads."""
from __future__ import annotations

import logging
import os
import stat
from typing import Any

from chaosfs.faults._gate import Node
from chaosfs.faults.methods import DATA_METHODS, METHOD_ID
from chaosfs.fs.inodes import IO_CACHED, IO_PASSTHROUGH, IO_UNCOUNTED, Handle, proc_path

GETATTR_METHODS = frozenset({METHOD_ID["getattr"]})
LOOKUP_METHODS = frozenset({METHOD_ID["lookup"]})
# Transport.set_hot bits (devfuse_core.h's DF_HOT_*), by method id
HOT_BITS = ((METHOD_ID["read"], 1), (METHOD_ID["write"], 2), (METHOD_ID["flush"], 4),
            (METHOD_ID["fsync"], 8), (METHOD_ID["getlk"], 16), (METHOD_ID["setlk"], 16),
            (METHOD_ID["setlkw"], 16))
HOT_ALL = 31
ARMED_BITS = 2 | 8  # write, fsync

log = logging.getLogger("chaosfs.fs")


class TransportOffers:
    """The FsOperations methods behind what the transport answers on its own."""

    def _offer_attrs(self, node: Node, attr_timeout: float) -> None:
        """Let a transport that answers hot requests answer this inode's GETATTR itself
        while the rules stay as they are (the offer carries the epoch it was judged at)."""
        t = self.transport
        if node.fd < 0 or not t.answers_hot:
            return
        gate = self.gate
        epoch = gate.epoch  # before the match: a change meanwhile makes the offer stale
        if gate.active and gate.ruled_any(GETATTR_METHODS) and (
                self._rules_touch(node, GETATTR_METHODS) or node.match_epoch != epoch):
            # and withdraw an earlier offer: the inode may have been offered under another
            # of its names (a hard link) at this same epoch
            t.attrs_drop(node.ino)
            return
        t.attrs_offer(node.ino, node.fd, attr_timeout, epoch)

    def _publish_hot_all(self) -> None:
        if self.transport.answers_hot:
            for h in list(self.handles.values()):
                if not h.is_dir:
                    self._publish_hot(h)

    def _publish_hot(self, h: Handle) -> None:
        """Tell the transport which hot requests of this open no rule can touch, and which
        rules match its file (the cython transport applies those it can in C). Repeated
        if a rule change (on a gRPC thread) published a new table meanwhile, so a stale
        answer never outlives the change."""
        if not self.transport.answers_hot:
            return
        gate, node = self.gate, h.node
        while True:
            epoch = gate.epoch
            mask = 0
            if gate.active:
                if node.match_epoch != epoch:
                    gate.match(node)
                touched = 0  # a bit shared by several methods is free only if all are
                for mid, bit in HOT_BITS:
                    if any(r.applies(mid) for r in node.matched):
                        touched |= bit
                if self.durable is not None:
                    touched |= ARMED_BITS  # the power-loss hooks see every write and fsync
                mask = HOT_ALL & ~touched
            self.transport.set_hot(h.fd, mask, node.matched if gate.active else ())
            if gate.epoch == epoch:
                return

    def _passthrough(self, h: Handle) -> bool:
        """Answer this open with FOPEN_PASSTHROUGH (-passthrough). The inode's backing file is
        opened O_RDWR once and shared by all its passthrough opens (the kernel requires one
        backing file per inode; the app's fd keeps its own access mode)."""
        node = h.node
        if node.pt_opens == 0:
            if os.fstat(h.fd).st_mode & (stat.S_ISUID | stat.S_ISGID):
                # Writes through the kernel would run with our credentials and keep the bits
                # a writer without CAP_FSETID must clear; such files are served by us.
                return False
            try:
                bfd = os.open(proc_path(h.fd), os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                return False  # read-only file system, a running executable, not a file
            try:
                node.backing_id = self.transport.backing_open(bfd)
            except OSError as e:
                if not self.passthrough_warned:
                    self.passthrough_warned = True
                    log.warning("kernel passthrough refused for %s (%s): serving it ourselves",
                                self.inodes.path_of(node) or "/", os.strerror(e.errno or 0))
                return False
            finally:
                os.close(bfd)
        try:
            self.transport.offer_passthrough(h.fd, node.backing_id)
        except RuntimeError:  # more opens in flight than the hook's table holds (-workers)
            if node.pt_opens == 0:
                self.transport.backing_close(node.backing_id)
                node.backing_id = -1
            return False
        node.pt_opens += 1
        h.io = IO_PASSTHROUGH
        return True

    def release_io(self, h: Handle) -> None:
        node = h.node
        if h.io == IO_CACHED:
            node.cached_opens -= 1
        elif h.io == IO_PASSTHROUGH:
            node.pt_opens -= 1
            if node.pt_opens == 0:
                try:
                    self.transport.backing_close(node.backing_id)
                except OSError:
                    log.warning("closing backing id %d failed", node.backing_id)
                node.backing_id = -1
        h.io = IO_UNCOUNTED

    def rules_changed(self, changed: list[Any], added: list[Any]) -> dict[str, list[str]]:
        """One walk over the known inodes after a rule change (on a gRPC thread, never the
        FUSE loop's: the kernel may need a reply from us before it can drop its caches).

        Every inode a changed rule matches loses the kernel's cached attributes, its name
        (for lookup rules) and its pages (for read/write rules), so the next operation
        reaches the daemon and the rule. Returns, per added read/write rule, the paths of
        files open in kernel passthrough that it cannot reach until they are reopened."""
        bypassed: dict[str, list[str]] = {}
        data = any(r.touches(DATA_METHODS) for r in changed)
        names = any(r.touches(LOOKUP_METHODS) for r in changed)
        new_data = [r for r in added if r.touches(DATA_METHODS)] if self.passthrough else []
        t = self.transport
        stale: list[tuple[int, bool, Any, bytes]] = []
        # The walk and the views under the handlers' lock (no handler moves a name or reuses
        # an fd meanwhile, wherever it runs); the kernel notifications after it, as they may
        # wait for replies that a handler has to give.
        with t.handlers_lock:
            for node in list(self.inodes.by_ino.values()):
                if node.parent is None and node is not self.inodes.root:
                    continue  # forgotten meanwhile
                path = self.inodes.path_of(node)
                if not any(r.matches_path(path) for r in changed):
                    continue
                stale.append((node.ino, node.is_dir,
                              node.parent.ino if node.parent is not None else None, node.name))
                if node.pt_opens > 0:
                    for r in new_data:
                        if r.matches_path(path):
                            bypassed.setdefault(r.id, []).append(path)
            self._publish_hot_all()
        for ino, is_dir, parent_ino, name in stale:
            t.invalidate_inode(ino, not data or is_dir)
            if names and parent_ino is not None:
                t.invalidate_entry(parent_ino, name)
        return bypassed
