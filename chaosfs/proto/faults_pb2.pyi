from chaosfs.proto import powerloss_pb2 as _powerloss_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PathKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGEX: _ClassVar[PathKind]
    GLOB: _ClassVar[PathKind]

class CorruptMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RANDOM: _ClassVar[CorruptMode]
    ZERO: _ClassVar[CorruptMode]
    BITFLIP: _ClassVar[CorruptMode]
REGEX: PathKind
GLOB: PathKind
RANDOM: CorruptMode
ZERO: CorruptMode
BITFLIP: CorruptMode

class ErrnoAction(_message.Message):
    __slots__ = ("code", "random")
    CODE_FIELD_NUMBER: _ClassVar[int]
    RANDOM_FIELD_NUMBER: _ClassVar[int]
    code: int
    random: bool
    def __init__(self, code: _Optional[int] = ..., random: _Optional[bool] = ...) -> None: ...

class DelayAction(_message.Message):
    __slots__ = ("fixed_us", "jitter_us")
    FIXED_US_FIELD_NUMBER: _ClassVar[int]
    JITTER_US_FIELD_NUMBER: _ClassVar[int]
    fixed_us: int
    jitter_us: int
    def __init__(self, fixed_us: _Optional[int] = ..., jitter_us: _Optional[int] = ...) -> None: ...

class CorruptAction(_message.Message):
    __slots__ = ("mode", "length", "occurrences")
    MODE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    OCCURRENCES_FIELD_NUMBER: _ClassVar[int]
    mode: CorruptMode
    length: int
    occurrences: int
    def __init__(self, mode: _Optional[_Union[CorruptMode, str]] = ..., length: _Optional[int] = ..., occurrences: _Optional[int] = ...) -> None: ...

class ShortAction(_message.Message):
    __slots__ = ("fraction",)
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    def __init__(self, fraction: _Optional[float] = ...) -> None: ...

class TornAction(_message.Message):
    __slots__ = ("sector",)
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    sector: int
    def __init__(self, sector: _Optional[int] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("id", "methods", "path", "path_kind", "probability", "errno", "delay", "corrupt", "short", "ttl_seconds", "max_hits", "hits", "origin", "expires_in", "torn")
    ID_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PATH_KIND_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    ERRNO_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FIELD_NUMBER: _ClassVar[int]
    SHORT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_HITS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    TORN_FIELD_NUMBER: _ClassVar[int]
    id: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    path: str
    path_kind: PathKind
    probability: float
    errno: ErrnoAction
    delay: DelayAction
    corrupt: CorruptAction
    short: ShortAction
    ttl_seconds: float
    max_hits: int
    hits: int
    origin: str
    expires_in: float
    torn: TornAction
    def __init__(self, id: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., path: _Optional[str] = ..., path_kind: _Optional[_Union[PathKind, str]] = ..., probability: _Optional[float] = ..., errno: _Optional[_Union[ErrnoAction, _Mapping]] = ..., delay: _Optional[_Union[DelayAction, _Mapping]] = ..., corrupt: _Optional[_Union[CorruptAction, _Mapping]] = ..., short: _Optional[_Union[ShortAction, _Mapping]] = ..., ttl_seconds: _Optional[float] = ..., max_hits: _Optional[int] = ..., hits: _Optional[int] = ..., origin: _Optional[str] = ..., expires_in: _Optional[float] = ..., torn: _Optional[_Union[TornAction, _Mapping]] = ...) -> None: ...

class AddRuleRequest(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: Rule
    def __init__(self, rule: _Optional[_Union[Rule, _Mapping]] = ...) -> None: ...

class AddRuleResponse(_message.Message):
    __slots__ = ("id", "bypassed_paths")
    ID_FIELD_NUMBER: _ClassVar[int]
    BYPASSED_PATHS_FIELD_NUMBER: _ClassVar[int]
    id: str
    bypassed_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., bypassed_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveRuleRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveRuleResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class ListRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRulesResponse(_message.Message):
    __slots__ = ("rules",)
    RULES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    def __init__(self, rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ...) -> None: ...

class ClearRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClearResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("reset",)
    RESET_FIELD_NUMBER: _ClassVar[int]
    reset: bool
    def __init__(self, reset: _Optional[bool] = ...) -> None: ...

class RuleStats(_message.Message):
    __slots__ = ("id", "hits")
    ID_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    id: str
    hits: int
    def __init__(self, id: _Optional[str] = ..., hits: _Optional[int] = ...) -> None: ...

class MethodStats(_message.Message):
    __slots__ = ("method", "count", "errors", "histogram", "p50_us", "p99_us", "injected_errors", "backing_errors")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    P50_US_FIELD_NUMBER: _ClassVar[int]
    P99_US_FIELD_NUMBER: _ClassVar[int]
    INJECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    BACKING_ERRORS_FIELD_NUMBER: _ClassVar[int]
    method: str
    count: int
    errors: int
    histogram: _containers.RepeatedScalarFieldContainer[int]
    p50_us: float
    p99_us: float
    injected_errors: int
    backing_errors: int
    def __init__(self, method: _Optional[str] = ..., count: _Optional[int] = ..., errors: _Optional[int] = ..., histogram: _Optional[_Iterable[int]] = ..., p50_us: _Optional[float] = ..., p99_us: _Optional[float] = ..., injected_errors: _Optional[int] = ..., backing_errors: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("rules", "methods", "power_loss")
    RULES_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    POWER_LOSS_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[RuleStats]
    methods: _containers.RepeatedCompositeFieldContainer[MethodStats]
    power_loss: _powerloss_pb2.PowerLossStatus
    def __init__(self, rules: _Optional[_Iterable[_Union[RuleStats, _Mapping]]] = ..., methods: _Optional[_Iterable[_Union[MethodStats, _Mapping]]] = ..., power_loss: _Optional[_Union[_powerloss_pb2.PowerLossStatus, _Mapping]] = ...) -> None: ...
