"""`./dev demo`: mount chaosfs over scratch dirs, show the passthrough, inject faults, clean up."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def say(text: str) -> None:
    print(f"\n\033[1m# {text}\033[0m", flush=True)


def sh(cmd: str, check: bool = False) -> int:
    print(f"$ {cmd}", flush=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    rc = subprocess.run(cmd, shell=True, env=env).returncode
    if rc and not check:
        print(f"(exit status {rc})", flush=True)
    return rc


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="chaosfs-demo-"))
    orig, mnt, pid = base / "fuse-data", base / "data", base / "fuse" / "pid"
    orig.mkdir()
    mnt.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"127.0.0.1:{port}"
    ctl = f"chaosfs-ctl --addr {addr}"
    say("start the sidecar exactly as the Chaos Mesh 0.9 template does")
    argv = [str(BIN / "chaosfs"), f"-addr={addr}", f"-pidfile={pid}", f"-original={orig}", f"-mountpoint={mnt}"]
    print("$ " + " ".join(argv) + " &")
    proc = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 15
        while not pid.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                print("chaosfs did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
        sh(f"grep ' {mnt} ' /proc/self/mountinfo | sed 's/.* - /type: /'")
        say("a file written through the mount lands in the original dir")
        sh(f"mkdir -p {mnt}/db && echo 'hello from the app' > {mnt}/db/000012.sst && echo ok > {mnt}/other.txt")
        sh(f"cat {orig}/db/000012.sst")
        say("make reads under db/ fail with EIO (0.9 API: SetFault)")
        sh(f"{ctl} set read --errno 5 --path '^db/'")
        sh(f"cat {mnt}/db/000012.sst")
        sh(f"cat {mnt}/other.txt")
        say("add a 300 ms delay on getattr of other.txt (chaosfs.v1 rule with a TTL)")
        sh(f"{ctl} add -m getattr --path 'other\\.txt$' --delay 300ms --ttl 30")
        sh(f"time stat -c '%n %s bytes' {mnt}/other.txt")
        sh(f"{ctl} rules")
        say("recover everything")
        sh(f"{ctl} recover")
        sh(f"cat {mnt}/db/000012.sst")
        sh(f"{ctl} stats | head -12")
    finally:
        say("SIGTERM: chaosfs unmounts and removes its pidfile")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
        print(f"exit status {proc.returncode}; pidfile exists: {pid.exists()}; "
              f"still mounted: {str(mnt) in Path('/proc/self/mountinfo').read_text()}")
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
