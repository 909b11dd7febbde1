"""`chaosfs`: the sidecar daemon's command line (Chaos Mesh 0.9 flags, plus our own)."""
from __future__ import annotations

import ipaddress
import logging
import os
import sys
from dataclasses import dataclass
from typing import Optional

from chaosfs import __version__
from chaosfs.flags import Flag, FlagError, FlagSet, HelpRequested

EXIT_USAGE = 2


class ConfigError(Exception):
    """A bad setting found before anything was mounted; str() is the one-line message."""


@dataclass
class Config:
    host: str
    port: int
    pidfile: str
    original: str
    mountpoint: str
    log_level: str = "info"
    hot: str = "cython"
    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    keep_cache: bool = True
    fsync: str = "thread"
    passthrough: str = "off"
    fuse_hooks: bool = True
    killpriv_v2: bool = True
    workers: int = 128
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_client_ca: Optional[str] = None
    token_file: Optional[str] = None

    @property
    def addr(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_addr(text: str) -> tuple[str, int]:
    """Go's net.Listen address: `:PORT` (all interfaces), `HOST:PORT`, `[V6]:PORT`."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [IPv6]:PORT")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError("missing port (use HOST:PORT or :PORT)")
        if ":" in host:
            raise ValueError("IPv6 hosts need brackets: [ADDR]:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port {port!r}")
    if host and not _valid_host(host):
        raise ValueError(f"bad host {host!r}")
    return (host or "0.0.0.0"), int(port)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        labels = host.split(".")
        return all(l and len(l) <= 63 and all(c.isalnum() or c == "-" for c in l) for l in labels)


def _positive(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 3600:
        raise ValueError("must be between 0 and 3600 seconds")
    return v


def _workers(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError("expected a whole number")
    v = int(text)
    if not 1 <= v <= 1024:
        raise ValueError("must be between 1 and 1024")
    return v


def _level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError("expected debug, info, warning or error")
    return text.lower()


def _fsync(text: str) -> str:
    if text not in ("thread", "inline"):
        raise ValueError("expected thread or inline")
    return text


def _passthrough(text: str) -> str:
    if text not in ("off", "unmatched"):
        raise ValueError("expected off or unmatched")
    return text


def _hot(text: str) -> str:
    if text not in ("cython", "python"):
        raise ValueError("expected cython or python")
    return text


def flagset() -> FlagSet:
    fs = FlagSet("chaosfs")
    for f in (
        Flag("addr", "address of the gRPC fault server (:PORT listens on all interfaces)", ":65534"),
        Flag("pidfile", "pid file, written once the mount is live and removed on exit (required)"),
        Flag("original", "backing directory holding the real data (required)"),
        Flag("mountpoint", "where the FUSE file system is mounted: the app's data dir (required)"),
        Flag("version", "print the version and exit", False, is_bool=True),
        Flag("log-level", "debug, info, warning or error", "info", _level, env="CHAOSFS_LOG_LEVEL"),
        Flag("hot", "hot-path implementation: cython or python", "cython", _hot, env="CHAOSFS_HOT"),
        Flag("attr-timeout", "kernel attribute cache, seconds, while no rule exists", 1.0, _positive, env="CHAOSFS_ATTR_TIMEOUT"),
        Flag("entry-timeout", "kernel name cache, seconds, while no rule exists", 1.0, _positive, env="CHAOSFS_ENTRY_TIMEOUT"),
        Flag("keep-cache", "keep file pages cached across opens while no rule exists", True, is_bool=True, env="CHAOSFS_KEEP_CACHE"),
        Flag("fsync", "thread: fsync in a worker thread, other files served meanwhile; inline: no thread hop, nothing else served while the disk syncs", "thread", _fsync, env="CHAOSFS_FSYNC"),
        Flag("passthrough", "off: every read/write reaches chaosfs; unmatched: files no read/write rule matches when opened are served by the kernel from the backing file (Linux >= 6.9; a rule added later misses fds already open)", "off", _passthrough, env="CHAOSFS_PASSTHROUGH"),
        Flag("fuse-hooks", "read FUSE requests without splice and negotiate what libfuse 3.14 cannot (chaosfs/_fuseconn.c)", True, is_bool=True, env="CHAOSFS_FUSE_HOOKS"),
        Flag("killpriv-v2", "negotiate FUSE_HANDLE_KILLPRIV_V2 (the kernel says which writes must clear set-id bits)", True, is_bool=True, env="CHAOSFS_KILLPRIV_V2"),
        Flag("workers", "maximum concurrent FUSE requests (delayed ones count)", 128, _workers, env="CHAOSFS_WORKERS"),
        Flag("tls-cert", "serve gRPC over TLS with this certificate (PEM)"),
        Flag("tls-key", "private key for -tls-cert (PEM)"),
        Flag("tls-client-ca", "require client certificates signed by this CA (mTLS)"),
        Flag("token-file", "require `authorization: Bearer <token>` on every RPC but health"),
    ):
        fs.add(f)
    return fs


def _check_dir(flag: str, path: str) -> str:
    try:
        if not os.path.isdir(path):
            if os.path.exists(path):
                raise ConfigError(f"-{flag} {path}: not a directory")
            raise ConfigError(f"-{flag} {path}: no such directory")
    except OSError as e:
        raise ConfigError(f"-{flag} {path}: {e.strerror}") from None
    return os.path.realpath(path)


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/")


def validate(values: dict) -> Config:
    for name in ("pidfile", "original", "mountpoint"):
        if not values.get(name):
            raise ConfigError(f"-{name} is required")
    try:
        host, port = parse_addr(values["addr"])
    except ValueError as e:
        raise ConfigError(f"-addr {values['addr']!r}: {e}") from None
    from chaosfs.mounts import clear_dead_mount
    clear_dead_mount(values["mountpoint"])
    original = _check_dir("original", values["original"])
    mountpoint = _check_dir("mountpoint", values["mountpoint"])
    if original == mountpoint:
        raise ConfigError(f"-mountpoint {mountpoint} is the same directory as -original")
    if _nested(mountpoint, original):
        raise ConfigError(f"-mountpoint {mountpoint} is inside -original {original}")
    if _nested(original, mountpoint):
        raise ConfigError(f"-original {original} is inside -mountpoint {mountpoint}")
    piddir = os.path.dirname(os.path.abspath(values["pidfile"]))
    try:
        os.makedirs(piddir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"-pidfile {values['pidfile']}: cannot create {piddir}: {e.strerror}") from None
    if not os.access(piddir, os.W_OK):
        raise ConfigError(f"-pidfile {values['pidfile']}: {piddir} is not writable")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        raise ConfigError(f"/dev/fuse unusable: {e.strerror} (privileged container or --device /dev/fuse needed)") from None
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("-tls-cert and -tls-key go together")
    if values["passthrough"] != "off" and not values["fuse_hooks"]:
        raise ConfigError("-passthrough needs -fuse-hooks (the default)")
    if values["tls_client_ca"] and not values["tls_cert"]:
        raise ConfigError("-tls-client-ca needs -tls-cert and -tls-key")
    for name in ("tls_cert", "tls_key", "tls_client_ca", "token_file"):
        p = values[name]
        if p and not os.path.isfile(p):
            raise ConfigError(f"-{name.replace('_', '-')} {p}: no such file")
    return Config(
        host=host, port=port, pidfile=os.path.abspath(values["pidfile"]),
        original=original, mountpoint=mountpoint, log_level=values["log_level"],
        hot=values["hot"], attr_timeout=values["attr_timeout"],
        entry_timeout=values["entry_timeout"], keep_cache=values["keep_cache"],
        fsync=values["fsync"], passthrough=values["passthrough"], fuse_hooks=values["fuse_hooks"], killpriv_v2=values["killpriv_v2"], workers=values["workers"], tls_cert=values["tls_cert"], tls_key=values["tls_key"],
        tls_client_ca=values["tls_client_ca"], token_file=values["token_file"],
    )


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
