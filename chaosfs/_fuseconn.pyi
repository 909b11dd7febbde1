from typing import TypedDict

class Status(TypedDict):
    enabled: bool
    hooked: bool
    io_installed: bool
    init_seen: bool
    kernel_minor: int
    kernel_flags: int
    reply_flags: int
    killpriv_v2: bool
    kills_write: int
    kills_queued: int

def enable(killpriv_v2: bool = ...) -> None: ...
def status() -> Status: ...
def take_kill(inode: int) -> bool: ...
