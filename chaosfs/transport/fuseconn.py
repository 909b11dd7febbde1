"""FUSE connection tuning below pyfuse3 (see _fuseconn.c for the why).

Import this module before pyfuse3: the C part replaces libfuse's fuse_session_new and
fuse_session_mount for pyfuse3 by being loaded RTLD_GLOBAL first, so pyfuse3's references bind
to it. If pyfuse3 was loaded earlier, nothing is hooked and status() says so.
"""
from __future__ import annotations

import os
import sys

_flags = sys.getdlopenflags()
sys.setdlopenflags(_flags | os.RTLD_GLOBAL)
try:
    from chaosfs.transport import _fuseconn  # noqa: F401  (loaded here, RTLD_GLOBAL)
finally:
    sys.setdlopenflags(_flags)

from chaosfs.transport._fuseconn import (  # noqa: E402  (the API, re-exported)
    backing_close, backing_open, clear_setid, enable, passthrough_active, passthrough_reply,
    status, take_kill)

__all__ = ["backing_close", "backing_open", "clear_setid", "describe", "enable",
           "passthrough_active", "passthrough_reply", "status", "take_kill"]


def describe() -> str:
    """One log line: what the connection got beyond what libfuse 3.14 negotiates."""
    s = status()
    if not s["enabled"]:
        return "libfuse defaults (-fuse-hooks=false)"
    if not s["hooked"]:
        return "connection tuning unavailable (pyfuse3 was loaded before chaosfs.transport.fuseconn)"
    if not s["io_installed"]:
        return "connection tuning unavailable (libfuse refused custom I/O)"
    v2 = ("HANDLE_KILLPRIV_V2 negotiated" if s["killpriv_v2"]
          else f"HANDLE_KILLPRIV_V2 not negotiated (kernel protocol 7.{s['kernel_minor']})")
    pt = ""
    if s["passthrough"]:
        pt = "; kernel passthrough for unmatched files"
    elif s["passthrough_requested"]:
        pt = "; kernel passthrough NOT available (needs Linux >= 6.9 and CAP_SYS_ADMIN): every file is served by chaosfs"
    return f"requests read without splice; {v2}{pt}"
