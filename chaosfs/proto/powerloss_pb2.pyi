from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DurabilityModel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POSIX: _ClassVar[DurabilityModel]
    JOURNAL: _ClassVar[DurabilityModel]
POSIX: DurabilityModel
JOURNAL: DurabilityModel

class ArmRequest(_message.Message):
    __slots__ = ("max_undo_bytes", "model")
    MAX_UNDO_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    max_undo_bytes: int
    model: DurabilityModel
    def __init__(self, max_undo_bytes: _Optional[int] = ..., model: _Optional[_Union[DurabilityModel, str]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Tracked(_message.Message):
    __slots__ = ("files", "unsynced_bytes", "data_ops", "undo_bytes", "max_undo_bytes", "undo_overflow_bytes", "dir_entries", "armed_seconds", "model")
    FILES_FIELD_NUMBER: _ClassVar[int]
    UNSYNCED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_OPS_FIELD_NUMBER: _ClassVar[int]
    UNDO_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_UNDO_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNDO_OVERFLOW_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIR_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ARMED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    files: int
    unsynced_bytes: int
    data_ops: int
    undo_bytes: int
    max_undo_bytes: int
    undo_overflow_bytes: int
    dir_entries: int
    armed_seconds: float
    model: str
    def __init__(self, files: _Optional[int] = ..., unsynced_bytes: _Optional[int] = ..., data_ops: _Optional[int] = ..., undo_bytes: _Optional[int] = ..., max_undo_bytes: _Optional[int] = ..., undo_overflow_bytes: _Optional[int] = ..., dir_entries: _Optional[int] = ..., armed_seconds: _Optional[float] = ..., model: _Optional[str] = ...) -> None: ...

class CutResult(_message.Message):
    __slots__ = ("files", "bytes_dropped", "ops_dropped", "ops_kept", "torn", "entries", "inexact", "rollback_seconds", "seconds")
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    OPS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    OPS_KEPT_FIELD_NUMBER: _ClassVar[int]
    TORN_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    INEXACT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedScalarFieldContainer[str]
    bytes_dropped: int
    ops_dropped: int
    ops_kept: int
    torn: _containers.RepeatedScalarFieldContainer[str]
    entries: _containers.RepeatedScalarFieldContainer[str]
    inexact: _containers.RepeatedScalarFieldContainer[str]
    rollback_seconds: float
    seconds: float
    def __init__(self, files: _Optional[_Iterable[str]] = ..., bytes_dropped: _Optional[int] = ..., ops_dropped: _Optional[int] = ..., ops_kept: _Optional[int] = ..., torn: _Optional[_Iterable[str]] = ..., entries: _Optional[_Iterable[str]] = ..., inexact: _Optional[_Iterable[str]] = ..., rollback_seconds: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class Totals(_message.Message):
    __slots__ = ("cuts", "bytes_dropped", "files_rolled_back", "entries_undone", "ops_kept")
    CUTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FILES_ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_UNDONE_FIELD_NUMBER: _ClassVar[int]
    OPS_KEPT_FIELD_NUMBER: _ClassVar[int]
    cuts: int
    bytes_dropped: int
    files_rolled_back: int
    entries_undone: int
    ops_kept: int
    def __init__(self, cuts: _Optional[int] = ..., bytes_dropped: _Optional[int] = ..., files_rolled_back: _Optional[int] = ..., entries_undone: _Optional[int] = ..., ops_kept: _Optional[int] = ...) -> None: ...

class PowerLossStatus(_message.Message):
    __slots__ = ("armed", "cutting", "tracked", "totals", "last_cut", "workdir")
    ARMED_FIELD_NUMBER: _ClassVar[int]
    CUTTING_FIELD_NUMBER: _ClassVar[int]
    TRACKED_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    LAST_CUT_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    armed: bool
    cutting: bool
    tracked: Tracked
    totals: Totals
    last_cut: CutResult
    workdir: str
    def __init__(self, armed: _Optional[bool] = ..., cutting: _Optional[bool] = ..., tracked: _Optional[_Union[Tracked, _Mapping]] = ..., totals: _Optional[_Union[Totals, _Mapping]] = ..., last_cut: _Optional[_Union[CutResult, _Mapping]] = ..., workdir: _Optional[str] = ...) -> None: ...

class CutRequest(_message.Message):
    __slots__ = ("keep_probability", "torn", "sector", "block", "hold_seconds", "seed")
    KEEP_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    TORN_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    HOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    keep_probability: float
    torn: bool
    sector: int
    block: bool
    hold_seconds: float
    seed: int
    def __init__(self, keep_probability: _Optional[float] = ..., torn: _Optional[bool] = ..., sector: _Optional[int] = ..., block: _Optional[bool] = ..., hold_seconds: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class CutResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: CutResult
    def __init__(self, result: _Optional[_Union[CutResult, _Mapping]] = ...) -> None: ...

class DisarmRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DisarmResponse(_message.Message):
    __slots__ = ("was_armed",)
    WAS_ARMED_FIELD_NUMBER: _ClassVar[int]
    was_armed: bool
    def __init__(self, was_armed: _Optional[bool] = ...) -> None: ...
