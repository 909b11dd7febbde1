"""The /dev/fuse prototypes, built at run time and measured in the same run as the suite:

- kpass (C): kernel FUSE passthrough (FOPEN_PASSTHROUGH + FUSE_DEV_IOC_BACKING_OPEN);
- kpass userspace (C): the same server answering READ/WRITE itself (C's userspace ceiling);
- cyloop (Cython): hot opcodes in C with the GIL released, the rest in Python;
- chaosfs: the real daemon over the same tmpfs file, for scale.

Also demonstrates what a rule added after a passthrough open does (see `stale_passthrough`).
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf import jobs as J
from perf.variants import Variant, VariantError, all_cpus, set_affinity

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


def build(out: Path) -> dict[str, str]:
    """Compile kpass and cyloop into `out`; returns {name: error} for what failed."""
    out.mkdir(parents=True, exist_ok=True)
    errors = {}
    r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out / "kpass"), str(HERE / "kpass.c")],
                       capture_output=True, text=True)
    if r.returncode:
        errors["kpass"] = r.stderr.strip().splitlines()[-1:]
    import sysconfig
    cython = Path(sys.executable).parent / "cython"
    so = out / ("cyloop" + sysconfig.get_config_var("EXT_SUFFIX"))
    r = subprocess.run([str(cython), "-3", str(HERE / "cyloop.pyx"), "-o", str(out / "cyloop.c")],
                       capture_output=True, text=True)
    if r.returncode == 0:
        r = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                            f"-I{HERE}", str(out / "cyloop.c"), "-o", str(so)],
                           capture_output=True, text=True)
    if r.returncode:
        errors["cyloop"] = r.stderr.strip().splitlines()[-1:]
    return errors


def stale_passthrough(kpass: Path, backing: Path, mnt: Path) -> dict:
    """A rule arriving while a file is open in passthrough mode: the open fd keeps reading
    the backing file (the kernel never asks us); a new open sees the rule."""
    mnt.mkdir(exist_ok=True)
    p = subprocess.Popen([str(kpass), str(backing), str(mnt)], stderr=subprocess.PIPE)
    try:
        for _ in range(500):
            if os.path.ismount(mnt):
                break
            time.sleep(0.01)
        fd1 = os.open(mnt / "f", os.O_RDONLY)
        before = len(os.pread(fd1, 4096, 0))
        p.send_signal(signal.SIGUSR1)  # the rule: EIO on every read of /f
        time.sleep(0.05)
        try:
            old_fd = f"read ok ({len(os.pread(fd1, 4096, MiB))} bytes): bypasses the rule"
        except OSError as e:
            old_fd = f"fails with {errno.errorcode.get(e.errno, e.errno)}"
        fd2 = os.open(mnt / "f", os.O_RDONLY)
        try:
            new_fd = f"read ok ({len(os.pread(fd2, 4096, 2 * MiB))} bytes)"
        except OSError as e:
            new_fd = f"fails with {errno.errorcode.get(e.errno, e.errno)}: the rule applies"
        os.close(fd1)
        os.close(fd2)
        return {"first_read": before, "fd_opened_before_rule": old_fd, "fd_opened_after_rule": new_fd}
    finally:
        p.terminate()
        p.wait(5)
        subprocess.run(["umount", "-l", str(mnt)], stderr=subprocess.DEVNULL)


def run(work: Path, args, pin_cpu: str) -> dict:
    out = work / "proto-build"
    errors = build(out)
    shm = Path("/dev/shm") if os.path.isdir("/dev/shm") else work
    base = Path(tempfile.mkdtemp(prefix="chaosfs-proto-", dir=shm))
    result: dict = {"variants": {}, "samples": {}, "build_errors": errors, "notes": []}
    started: list[Variant] = []
    try:
        backing = base / "backing"
        backing.mkdir()
        size = args.proto_size_mib * MiB
        with open(backing / "f", "wb") as f:
            chunk = os.urandom(MiB)
            for _ in range(size // MiB):
                f.write(chunk)
        py = sys.executable
        vs = [Variant("native", "native (tmpfs)", "native")]
        if "kpass" not in errors:
            vs.append(Variant("kpass", "C, kernel passthrough", "compare",
                              command=f"{out / 'kpass'} {{original}}/f {{mountpoint}}"))
            vs.append(Variant("cuser", "C, READ/WRITE in userspace", "compare",
                              command=f"{out / 'kpass'} {{original}}/f {{mountpoint}} userspace"))
        if "cyloop" not in errors:
            launch = "import sys; sys.path.insert(0, sys.argv[1]); import cyloop; sys.argv = sys.argv[1:]; sys.exit(cyloop.main())"
            vs.append(Variant("cyloop", "Cython /dev/fuse loop", "compare",
                              command=f"{py} -c '{launch}' {out} {{original}}/f {{mountpoint}}"))
        vs.append(Variant("chaosfs", "chaosfs (pyfuse3)", "chaosfs"))
        vs.append(Variant("ceiling", "pyfuse3 ceiling", "ceiling"))
        for v in vs:
            try:
                v.start(base, backing)
            except VariantError as e:
                result["variants"][v.name] = v.label
                result["notes"].append(f"{v.name}: {e}")
                continue
            started.append(v)
            result["variants"][v.name] = v.label
        runtime = min(args.runtime, 3.0)  # a pass over the file must outlast the job
        jobs = [J.Job("randread-4k", "rand read 4 KiB, pinned", {"rw": "randread", "bs": "4k"}, file="f", size=size),
                J.Job("randwrite-4k", "rand write 4 KiB, pinned", {"rw": "randwrite", "bs": "4k"}, file="f", size=size),
                J.Job("seqread-1m", "seq read 1 MiB, pinned", {"rw": "read", "bs": "1m"}, file="f", size=size)]
        for rnd in range(args.rounds):
            for job in jobs:
                k = rnd % len(started)
                for v in started[k:] + started[:k]:
                    pid = v.pid
                    if pid:
                        set_affinity(pid, pin_cpu)
                    J.drop_caches()
                    print(f"proto round {rnd + 1}/{args.rounds}  {job.name:<14} {v.name:<10}", end=" ", flush=True)
                    r = J.run_fio(job, v.root, runtime, pin_cpu)
                    if pid:
                        set_affinity(pid, all_cpus())
                    print(r.get("error") or f"{r['iops']:.0f} IOPS {r['bw_mibs']:.0f} MiB/s", flush=True)
                    result["samples"].setdefault(job.name, {}).setdefault(v.name, []).append(r)
        result["jobs"] = {j.name: j.title for j in jobs}
        for v in started:
            v.stop()
        started = []
        if "kpass" not in errors:
            try:
                sp = stale_passthrough(out / "kpass", backing / "f", base / "mnt-stale")
                result["stale_passthrough"] = sp
                result["notes"].append(
                    "Rule added while /f is open in passthrough mode: the fd opened before the rule "
                    f"{sp['fd_opened_before_rule']}; an fd opened after it {sp['fd_opened_after_rule']}.")
            except Exception as e:
                result["notes"].append(f"stale-passthrough check failed: {type(e).__name__}: {e}")
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        for v in started:
            v.stop()
        shutil.rmtree(base, ignore_errors=True)
    return result
