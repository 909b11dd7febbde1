from typing import Any, Callable, Optional

def monotonic() -> float: ...

class Node:
    ino: int
    dev: int
    bino: int
    lookups: int
    fd: int
    is_dir: bool
    is_link: bool
    parent: Optional["Node"]
    name: bytes
    match_epoch: int
    matched: tuple[Any, ...]
    cached_opens: int
    pt_opens: int
    backing_id: int

class FaultGate:
    active: bool
    epoch: int
    path_of: Callable[[Node], str]
    verdict_of: Callable[[int, tuple[Any, ...]], Any]
    def match(self, node: Node) -> tuple[Any, ...]: ...
    def check(self, method: int, node: Node) -> Any: ...
    def check_path(self, method: int, path: str) -> Any: ...
    path_check: Callable[[int, str], Any]
    matcher: Callable[[str], tuple[Any, ...]]
    def note(self, method: int, t0: float, failed: bool = ..., injected: bool = ...) -> None: ...
    def stats(self) -> dict[int, tuple[int, int, int, list[int]]]: ...
    def c_hits_of(self, slot: int) -> int: ...
    def reset_hits(self, slot: int) -> None: ...
    def reset_stats(self) -> None: ...
