"""A rule's actions as v1 Rule message fields, with nothing but the proto imported: the
daemon (server.py) and the IoChaos controller's image (no trio, no FUSE) both use it."""
from __future__ import annotations

from typing import Any

from chaosfs.proto import faults_pb2

CORRUPT_ENUM = {"random": faults_pb2.RANDOM, "zero": faults_pb2.ZERO, "bitflip": faults_pb2.BITFLIP}


def set_actions(pb: Any, r: Any) -> Any:
    """The action fields of a v1 Rule message from anything shaped like a Rule (errno,
    random_errno, delay_us, jitter_us, corrupt, short, torn): the daemon's own rules and
    the IoChaos controller's spec.chaosfs rules."""
    if r.errno or r.random_errno:
        pb.errno.code = r.errno
        pb.errno.random = r.random_errno
    if r.delay_us or r.jitter_us:
        pb.delay.fixed_us = r.delay_us
        pb.delay.jitter_us = r.jitter_us
    if r.corrupt is not None:
        pb.corrupt.mode = CORRUPT_ENUM[r.corrupt.mode]
        pb.corrupt.length = r.corrupt.length
        pb.corrupt.occurrences = r.corrupt.occurrences
    if r.short:
        pb.short.fraction = r.short
    if r.torn:
        pb.torn.sector = r.torn
    return pb
