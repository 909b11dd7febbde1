from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Request(_message.Message):
    __slots__ = ("methods", "errno", "random", "pct", "path", "delay")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    ERRNO_FIELD_NUMBER: _ClassVar[int]
    RANDOM_FIELD_NUMBER: _ClassVar[int]
    PCT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    errno: int
    random: bool
    pct: int
    path: str
    delay: int
    def __init__(self, methods: _Optional[_Iterable[str]] = ..., errno: _Optional[int] = ..., random: _Optional[bool] = ..., pct: _Optional[int] = ..., path: _Optional[str] = ..., delay: _Optional[int] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("methods",)
    METHODS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, methods: _Optional[_Iterable[str]] = ...) -> None: ...

class InjectedResponse(_message.Message):
    __slots__ = ("injected",)
    INJECTED_FIELD_NUMBER: _ClassVar[int]
    injected: bool
    def __init__(self, injected: _Optional[bool] = ...) -> None: ...
