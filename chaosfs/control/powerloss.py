"""chaosfs.v1.PowerLoss over gRPC: arm, status, cut, disarm (chaosfs.fs.power does the work)."""
from __future__ import annotations

import logging
from typing import Any

import grpc

from chaosfs.fs.durability import CutOptions, PowerLossArgError, PowerLossError
from chaosfs.fs.power import DEFAULT_MAX_UNDO, PowerLoss
from chaosfs.proto import powerloss_pb2

log = logging.getLogger("chaosfs.server")

_MODEL = {powerloss_pb2.POSIX: "posix", powerloss_pb2.JOURNAL: "journal"}


def cut_result_pb(c: dict) -> Any:
    return powerloss_pb2.CutResult(
        files=c["files"], bytes_dropped=c["bytes_dropped"], ops_dropped=c["ops_dropped"],
        ops_kept=c["ops_kept"], torn=c["torn"], entries=c["entries"], inexact=c["inexact"],
        rollback_seconds=c["rollback_seconds"], seconds=c["seconds"])


def status_pb(st: dict) -> Any:
    out = powerloss_pb2.PowerLossStatus(armed=st["armed"], cutting=st["cutting"],
                                        workdir=st["workdir"], totals=powerloss_pb2.Totals(**st["totals"]))
    if st["tracked"]:
        out.tracked.CopyFrom(powerloss_pb2.Tracked(**st["tracked"]))
    if st["last_cut"] is not None:
        out.last_cut.CopyFrom(cut_result_pb(st["last_cut"]))
    return out


class PowerLossService:
    """Handlers for add_service (chaosfs.control.server): one per RPC of powerloss.proto."""

    def __init__(self, power: PowerLoss) -> None:
        self.power = power

    def _run(self, context: grpc.ServicerContext, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except PowerLossArgError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except PowerLossError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))

    def Arm(self, request: Any, context: Any) -> Any:
        model = _MODEL.get(request.model)
        if model is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"model: unknown value {request.model}")
        self._run(context, self.power.arm, request.max_undo_bytes or DEFAULT_MAX_UNDO, model)
        return status_pb(self.power.status())

    def Status(self, request: Any, context: Any) -> Any:
        return status_pb(self._run(context, self.power.status))

    def Cut(self, request: Any, context: Any) -> Any:
        opts = CutOptions(keep_probability=request.keep_probability, torn=request.torn,
                          sector=request.sector or 512,
                          seed=request.seed if request.HasField("seed") else None)
        res = self._run(context, self.power.cut, opts, request.block, request.hold_seconds)
        return powerloss_pb2.CutResponse(result=cut_result_pb(res))

    def Disarm(self, request: Any, context: Any) -> Any:
        return powerloss_pb2.DisarmResponse(was_armed=self._run(context, self.power.disarm))
