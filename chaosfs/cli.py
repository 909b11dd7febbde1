"""`chaosfs`: the sidecar daemon's command line (Chaos Mesh 0.9 flags, plus our own)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from chaosfs import __version__
from chaosfs.config import (ConfigError, parse_fsync, parse_hot, parse_level, parse_passthrough,
                            parse_seconds, parse_threads, parse_transport, parse_uring,
                            parse_workers,
                            validate)
from chaosfs.flags import Flag, FlagError, FlagSet, HelpRequested

EXIT_USAGE = 2


def flagset() -> FlagSet:
    fs = FlagSet("chaosfs")
    for f in (
        Flag("addr", "address of the gRPC fault server (:PORT listens on all interfaces)", ":65534"),
        Flag("pidfile", "pid file, written once the mount is live and removed on exit (required)"),
        Flag("original", "backing directory holding the real data (required)"),
        Flag("mountpoint", "where the FUSE file system is mounted: the app's data dir (required)"),
        Flag("version", "print the version and exit", False, is_bool=True),
        Flag("log-level", "debug, info, warning or error", "info", parse_level, env="CHAOSFS_LOG_LEVEL"),
        Flag("hot", "hot-path implementation: cython or python", "cython", parse_hot, env="CHAOSFS_HOT"),
        Flag("attr-timeout", "kernel attribute cache, seconds, while no rule exists", 1.0, parse_seconds, env="CHAOSFS_ATTR_TIMEOUT"),
        Flag("entry-timeout", "kernel name cache, seconds, while no rule exists", 1.0, parse_seconds, env="CHAOSFS_ENTRY_TIMEOUT"),
        Flag("keep-cache", "keep file pages cached across opens while no rule exists", True, is_bool=True, env="CHAOSFS_KEEP_CACHE"),
        Flag("fsync", "thread: fsync in a worker thread, other files served meanwhile; inline: no thread hop, nothing else served while the disk syncs", "thread", parse_fsync, env="CHAOSFS_FSYNC"),
        Flag("passthrough", "off: every read/write reaches chaosfs; unmatched: files no read/write rule matches when opened are served by the kernel from the backing file (Linux >= 6.9; a rule added later misses fds already open)", "off", parse_passthrough, env="CHAOSFS_PASSTHROUGH"),
        Flag("fuse-hooks", "read FUSE requests without splice and negotiate what libfuse 3.14 cannot (chaosfs/transport/_fuseconn.c)", True, is_bool=True, env="CHAOSFS_FUSE_HOOKS"),
        Flag("killpriv-v2", "negotiate FUSE_HANDLE_KILLPRIV_V2 (the kernel says which writes must clear set-id bits)", True, is_bool=True, env="CHAOSFS_KILLPRIV_V2"),
        Flag("transport", "pyfuse3: libfuse through pyfuse3; cython: chaosfs's own /dev/fuse session (hot requests answered by C threads while no rule exists)", "pyfuse3", parse_transport, env="CHAOSFS_TRANSPORT"),
        Flag("fuse-threads", "-transport=cython: threads reading /dev/fuse (each answers reads, writes, flushes and fsyncs itself)", 2, parse_threads, env="CHAOSFS_FUSE_THREADS"),
        Flag("fuse-uring", "-transport=cython: FUSE over io_uring (Linux >= 6.14, the fuse module's enable_uring on): auto uses it when the kernel offers it, else /dev/fuse reads; on fails at start without it; off", "off", parse_uring, env="CHAOSFS_FUSE_URING"),
        Flag("workers", "maximum concurrent FUSE requests (on -transport=cython a request sleeping in a fault delay does not count)", 128, parse_workers, env="CHAOSFS_WORKERS"),
        Flag("tls-cert", "serve gRPC over TLS with this certificate (PEM)"),
        Flag("tls-key", "private key for -tls-cert (PEM)"),
        Flag("tls-client-ca", "require client certificates signed by this CA (mTLS)"),
        Flag("token-file", "require `authorization: Bearer <token>` on every RPC but health"),
        Flag("power-loss-dir", "where an armed power-loss experiment keeps old data and removed files: on -original's file system, outside it (default: beside it, .chaosfs-power-loss.<name>)", "", env="CHAOSFS_POWER_LOSS_DIR"),
        Flag("metrics-addr", "serve Prometheus metrics at http://HOST:PORT/metrics (:PORT = all interfaces; default: off)", "", env="CHAOSFS_METRICS_ADDR"),
    ):
        fs.add(f)
    return fs


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fs = flagset()
    try:
        raw = fs.parse(argv, dict(os.environ))
    except HelpRequested:
        try:
            print(fs.usage(), flush=True)
        except BrokenPipeError:  # `chaosfs -h | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except FlagError as e:
        # One line: whoever reads a container's log sees the problem and the hint together.
        print(f"chaosfs: {e} (run 'chaosfs -h' for usage)", file=sys.stderr)
        return EXIT_USAGE
    if raw["version"]:
        print(f"chaosfs {__version__}")
        return 0
    values = {k.replace("-", "_"): v for k, v in raw.items()}
    try:
        cfg = validate(values)
    except ConfigError as e:
        print(f"chaosfs: {e}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from chaosfs.daemon import run
    rc = run(cfg)
    # Everything is cleaned up (mount, pidfile, gRPC); don't let interpreter teardown wait
    # on library threads: a sidecar must be gone well within its grace period.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
