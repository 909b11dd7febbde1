"""The daemon's settings: what the command line (cli.py) produces and daemon.run takes.

Only checks of the values themselves live here; nothing on the host is touched.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Optional


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
    transport: str = "pyfuse3"
    fuse_threads: int = 2
    fuse_uring: str = "off"
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_client_ca: Optional[str] = None
    token_file: Optional[str] = None
    # Prometheus /metrics listener; None = off (0.9's command line serves none)
    metrics_host: Optional[str] = None
    metrics_port: int = 0
    power_loss_dir: str = ""  # "" = beside -original (chaosfs.fs.power)

    @property
    def addr(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def metrics_addr(self) -> str:
        host = f"[{self.metrics_host}]" if ":" in (self.metrics_host or "") else self.metrics_host
        return f"{host}:{self.metrics_port}"


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


def parse_seconds(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 3600:
        raise ValueError("must be between 0 and 3600 seconds")
    return v


def parse_workers(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError("expected a whole number")
    v = int(text)
    if not 1 <= v <= 1024:
        raise ValueError("must be between 1 and 1024")
    return v


def parse_level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError("expected debug, info, warning or error")
    return text.lower()


def parse_fsync(text: str) -> str:
    if text not in ("thread", "inline"):
        raise ValueError("expected thread or inline")
    return text


def parse_passthrough(text: str) -> str:
    if text not in ("off", "unmatched"):
        raise ValueError("expected off or unmatched")
    return text


def parse_transport(text: str) -> str:
    if text not in ("cython", "pyfuse3"):
        raise ValueError("expected cython or pyfuse3")
    return text


def parse_uring(text: str) -> str:
    if text not in ("auto", "on", "off"):
        raise ValueError("expected auto, on or off")
    return text


def parse_threads(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 64:
        raise ValueError("expected a whole number from 1 to 64")
    return int(text)


def parse_hot(text: str) -> str:
    if text not in ("cython", "python"):
        raise ValueError("expected cython or python")
    return text


def _inside(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/")


def validate(values: dict) -> Config:
    """Check the flags' values against each other; touches nothing on the host (the
    directories, the pidfile's directory and /dev/fuse are checked by daemon.prepare)."""
    for name in ("pidfile", "original", "mountpoint"):
        if not values.get(name):
            raise ConfigError(f"-{name} is required")
    try:
        host, port = parse_addr(values["addr"])
    except ValueError as e:
        raise ConfigError(f"-addr {values['addr']!r}: {e}") from None
    metrics_host, metrics_port = None, 0
    if values.get("metrics_addr"):
        try:
            metrics_host, metrics_port = parse_addr(values["metrics_addr"])
        except ValueError as e:
            raise ConfigError(f"-metrics-addr {values['metrics_addr']!r}: {e}") from None
        # both on one port would fail at bind with a vaguer message; say which flags clash
        if metrics_port and metrics_port == port and (
                metrics_host == host or "0.0.0.0" in (host, metrics_host)):
            raise ConfigError(f"-metrics-addr {values['metrics_addr']!r}: port {port} is the gRPC port (-addr)")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("-tls-cert and -tls-key go together")
    if values["passthrough"] != "off" and not values["fuse_hooks"] and values["transport"] == "pyfuse3":
        raise ConfigError("-passthrough needs -fuse-hooks (the default)")
    if values["fuse_uring"] == "on" and values["transport"] != "cython":
        raise ConfigError("-fuse-uring=on needs -transport=cython")
    pl = values.get("power_loss_dir") or ""
    if pl and _inside(os.path.abspath(pl), os.path.abspath(values["original"])):
        raise ConfigError(f"-power-loss-dir {pl}: inside -original (the app would see it)")
    if values["tls_client_ca"] and not values["tls_cert"]:
        raise ConfigError("-tls-client-ca needs -tls-cert and -tls-key")
    for name in ("tls_cert", "tls_key", "tls_client_ca", "token_file"):
        p = values[name]
        if p and not os.path.isfile(p):
            raise ConfigError(f"-{name.replace('_', '-')} {p}: no such file")
    return Config(
        host=host, port=port, pidfile=os.path.abspath(values["pidfile"]),
        original=os.path.abspath(values["original"]), mountpoint=os.path.abspath(values["mountpoint"]),
        log_level=values["log_level"], hot=values["hot"], attr_timeout=values["attr_timeout"],
        entry_timeout=values["entry_timeout"], keep_cache=values["keep_cache"],
        fsync=values["fsync"], passthrough=values["passthrough"], fuse_hooks=values["fuse_hooks"],
        killpriv_v2=values["killpriv_v2"], workers=values["workers"], transport=values["transport"],
        fuse_threads=values["fuse_threads"], fuse_uring=values["fuse_uring"], tls_cert=values["tls_cert"],
        tls_key=values["tls_key"], tls_client_ca=values["tls_client_ca"], token_file=values["token_file"],
        metrics_host=metrics_host, metrics_port=metrics_port,
        power_loss_dir=os.path.abspath(values["power_loss_dir"]) if values.get("power_loss_dir") else "",
    )
