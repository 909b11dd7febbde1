"""Daemon lifecycle: bind the control plane, mount, announce readiness, serve, and clean up
(unmount, pidfile, gRPC) on every exit path."""
from __future__ import annotations

import faulthandler
import logging
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import replace

import trio

from chaosfs import mounts
from chaosfs.config import Config, ConfigError
from chaosfs.faults.engine import FaultEngine
from chaosfs.fs.operations import CacheConfig, make_operations
from chaosfs.transport import make_transport

log = logging.getLogger("chaosfs")

MOUNT_OPTIONS = ("fsname=chaosfs", "subtype=chaosfs", "allow_other", "default_permissions",
                 "dev", "suid")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


# ---- start-up checks on the host ---------------------------------------------------------

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


def prepare(cfg: Config) -> Config:
    """The host-side checks before anything is mounted: a dead mount left by a crash is
    cleared, the directories resolved and checked against each other, the pidfile's
    directory created, /dev/fuse opened once. Raises ConfigError (one line)."""
    mounts.clear_dead_mount(cfg.mountpoint)
    original = _check_dir("original", cfg.original)
    mountpoint = _check_dir("mountpoint", cfg.mountpoint)
    if original == mountpoint:
        raise ConfigError(f"-mountpoint {mountpoint} is the same directory as -original")
    if _nested(mountpoint, original):
        raise ConfigError(f"-mountpoint {mountpoint} is inside -original {original}")
    if _nested(original, mountpoint):
        raise ConfigError(f"-original {original} is inside -mountpoint {mountpoint}")
    piddir = os.path.dirname(cfg.pidfile)
    try:
        os.makedirs(piddir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"-pidfile {cfg.pidfile}: cannot create {piddir}: {e.strerror}") from None
    if not os.access(piddir, os.W_OK):
        raise ConfigError(f"-pidfile {cfg.pidfile}: {piddir} is not writable")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        raise ConfigError(f"/dev/fuse unusable: {e.strerror} (privileged container or --device /dev/fuse needed)") from None
    return replace(cfg, original=original, mountpoint=mountpoint)


# ---- pidfile -----------------------------------------------------------------------------

def _is_chaosfs(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"chaosfs" in f.read()
    except OSError:
        return False


def claim_pidfile(path: str) -> None:
    """Refuse only if a live chaosfs other than us owns it; anything else is stale (0.9 died
    forever on a restarted container where it was pid 1 again)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"-pidfile {path}: {e.strerror}") from None
    pid = int(text) if text.isdigit() else 0
    if pid and pid != os.getpid() and _is_chaosfs(pid):
        raise ConfigError(f"-pidfile {path}: chaosfs is already running as pid {pid}")
    log.info("replacing stale pidfile %s (pid %s)", path, text or "?")
    os.unlink(path)


def write_pidfile(path: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, path)


def remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return  # someone else's now
        os.unlink(path)
    except OSError:
        pass


# ---- run ---------------------------------------------------------------------------------

def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _reaper(engine: FaultEngine) -> None:
    """Removes rules past their TTL or max_hits, so a crashed controller can't leave a pod
    sick forever. Removal (and its cache invalidation) runs off the FUSE thread."""
    while True:
        # Rarely without a rule that can die: each wake-up takes the handlers lock, and the
        # requests that meet it then queue to the trio thread.
        await trio.sleep(0.05 if engine.reaping() else 0.5)
        dead = engine.dead_ids() if engine.injected() else None
        if dead:
            await trio.to_thread.run_sync(engine.remove, dead, True)


async def _serve(cfg: Config, engine: FaultEngine, plane, transport, stopping: list, power) -> None:
    power.token = trio.lowlevel.current_trio_token()
    async with trio.open_nursery() as nursery:
        async def fuse_loop() -> None:
            try:
                await transport.main(cfg.workers)
            finally:
                nursery.cancel_scope.cancel()
        nursery.start_soon(fuse_loop)
        nursery.start_soon(_reaper, engine)
        with trio.open_signal_receiver(*STOP_SIGNALS) as sigs:
            await trio.sleep(0)  # the FUSE loop is reading /dev/fuse from here on
            if not stopping:
                write_pidfile(cfg.pidfile)
                plane.serving()
                log.info("chaosfs ready: %s -> %s (pid %d)", cfg.original, cfg.mountpoint, os.getpid())
                nursery.start_soon(_after_start, transport)
                async for sig in sigs:
                    stopping.append(sig)
                    break
            log.info("%s: unmounting", signal.Signals(stopping[0]).name)
        nursery.cancel_scope.cancel()


def passthrough_depth(original: str) -> int:
    """FUSE's max_stack_depth for kernel passthrough: backing files must sit on a file system
    stacked less deep than ours, and overlayfs (a container's root) is one level itself."""
    return 2 if mounts.fs_type_of(original) == "overlay" else 1


async def _after_start(transport) -> None:
    """Log what the FUSE connection got."""
    # Under pyfuse3, INIT is answered by the loop's first iterations, a moment after "ready".
    for _ in range(50):
        if getattr(transport, "negotiated", lambda: True)():
            break
        await trio.sleep(0.02)
    log.info("FUSE connection: %s", transport.describe())


def run(cfg: Config) -> int:
    from chaosfs.control.server import ControlPlane
    from chaosfs.fs.power import PowerLoss
    try:
        cfg = prepare(cfg)
        claim_pidfile(cfg.pidfile)
    except ConfigError as e:
        print(f"chaosfs: {e}", file=sys.stderr)
        return 2
    _raise_nofile()
    os.umask(0)  # modes come from the caller (already masked by the kernel/ctx.umask)
    transport = make_transport(cfg.transport, hooks=cfg.fuse_hooks)
    ops = make_operations(cfg.original, hot=cfg.hot, cache=CacheConfig(
        cfg.attr_timeout, cfg.entry_timeout, cfg.keep_cache), fsync_inline=cfg.fsync == "inline",
        passthrough=cfg.passthrough != "off", transport=transport)
    engine = FaultEngine(ops.gate, ops.rules_changed)
    engine.never_fire = transport.never_fire
    engine.handlers_lock = transport.handlers_lock
    power = PowerLoss(ops, engine, cfg.original, cfg.power_loss_dir)
    try:
        plane = ControlPlane(engine, cfg.host, cfg.port, tls_cert=cfg.tls_cert, tls_key=cfg.tls_key,
                             tls_client_ca=cfg.tls_client_ca, token_file=cfg.token_file, power=power)
    except (OSError, ValueError) as e:
        print(f"chaosfs: -addr {cfg.addr}: {e}", file=sys.stderr)
        return 2
    metrics = None
    if cfg.metrics_host is not None:
        from chaosfs.control.metrics import MetricsServer
        try:
            # bound here, before the mount, so a busy port leaves nothing mounted
            metrics = MetricsServer(engine, cfg.metrics_host, cfg.metrics_port, cfg.transport, power)
        except OSError as e:
            plane.stop(0)
            print(f"chaosfs: -metrics-addr {cfg.metrics_addr}: {e}", file=sys.stderr)
            return 2
    # From the mount on, a stop signal must unmount: note it until trio takes the signals.
    stopping: list = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    plane.start()
    # -fuse-uring is the cython transport's (pyfuse3's libfuse 3.14 has no io_uring)
    extra = {"uring": cfg.fuse_uring} if cfg.transport == "cython" else {}
    if metrics is not None:
        metrics.start()
    try:
        transport.mount(ops, cfg.mountpoint, MOUNT_OPTIONS, killpriv_v2=cfg.killpriv_v2,
                        passthrough_depth=passthrough_depth(cfg.original) if cfg.passthrough != "off" else 0,
                        workers=cfg.fuse_threads, **extra)
    except OSError as e:
        plane.stop(0)
        if metrics is not None:
            metrics.stop()
        print(f"chaosfs: mounting {cfg.mountpoint} failed: {e}", file=sys.stderr)
        return 1
    rc = 0
    try:
        trio.run(_serve, cfg, engine, plane, transport, stopping, power)
        if not stopping:
            log.warning("the kernel ended the FUSE session (unmounted from outside?)")
    except BaseException:
        log.exception("FUSE loop failed")
        rc = 1
    finally:
        t0 = time.monotonic()
        watchdog = _shutdown_watchdog(cfg, SHUTDOWN_LIMIT)
        # The FUSE session goes first: closing /dev/fuse aborts whatever requests the app
        # still has in flight (they would otherwise wait for a loop that no longer runs).
        try:
            transport.close(unmount=True)
        except Exception:
            log.exception("closing the FUSE session failed")
        if mounts.mount_type(cfg.mountpoint) == "fuse.chaosfs":
            mounts.lazy_unmount(cfg.mountpoint)
        plane.stop(0.5)
        if metrics is not None:
            metrics.stop()
        power.close()
        remove_pidfile(cfg.pidfile)
        watchdog.cancel()
        log.info("stopped in %.2fs", time.monotonic() - t0)
    return rc


SHUTDOWN_LIMIT = 4.0


def _shutdown_watchdog(cfg: Config, seconds: float) -> threading.Timer:
    """If cleanup itself hangs, still leave no mount and no pidfile, and exit: a sidecar
    that outlives its grace period gets SIGKILLed and leaves the pod stuck Terminating."""

    def fire() -> None:
        log.error("shutdown took over %.0f s; forcing exit (stacks follow)", seconds)
        faulthandler.dump_traceback(all_threads=True)
        mounts.lazy_unmount(cfg.mountpoint)
        remove_pidfile(cfg.pidfile)
        os._exit(0)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer
