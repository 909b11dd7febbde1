"""chaos-scripts: init.sh and wait-fuse.sh, as console scripts and as the static executables
that scripts/build.sh makes (run there in an otherwise empty root, like a scratch app image)."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.wait_fuse import mount_type_at

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INIT = str(BIN / "chaosfs-init")
WAIT = str(BIN / "chaosfs-wait-fuse")
# the usage texts of the seed page, kept in the repo so a plain clone runs these tests
SEED = ROOT / "tests" / "data" / "chaos-scripts-usage-0.9.1.txt"
SEED_PAGE = ROOT.parent / "shared" / "seed" / "sidecar-template-0.9.1.txt"
BUILD_CACHE = Path(os.environ.get("CHAOSFS_SCRIPTS_BUILD_CACHE", "/var/cache/chaosfs-scripts-build"))
MAX_EXECUTABLE_SIZE = 10 * 1024 * 1024


def run(*argv: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)


def timed(*argv: str, **kw) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = run(*argv, **kw)
    return result, time.monotonic() - start


def seed_block(command: str, page: Path = SEED) -> list[str]:
    """The 'Expected output' lines the seed page shows for `$ ./scripts/<command> -h`."""
    lines = page.read_text().splitlines()
    start = lines.index(f"$ ./scripts/{command} -h")
    start = lines.index("Expected output:", start) + 2
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return [line for line in lines[start:end] if line.strip()]


# ---- usage, options, messages -----------------------------------------------------------

def test_expected_usage_texts_live_in_the_repo():
    assert SEED.is_relative_to(ROOT) and SEED.is_file()
    if SEED_PAGE.is_file():  # next to the shared seed: the copy must still say the same
        for command in ("init.sh", "wait-fuse.sh"):
            assert seed_block(command) == seed_block(command, SEED_PAGE)


def test_init_usage_is_the_seed_text_plus_the_pid_file_option():
    expected = seed_block("init.sh")
    expected = [line.replace("./scripts/init.sh", INIT) for line in expected]
    expected.insert(expected.index("EXAMPLES:"), "-p <pid file> Stale fuse server pid file to remove")
    result = run(INIT, "-h")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == expected


def test_wait_fuse_usage_is_the_seed_text_with_the_09_bugs_fixed():
    seed = seed_block("wait-fuse.sh")
    # 0.9: "-h" demanded an argument and the usage named stale options (-a <host> -p <port>,
    # -f <host>); everything else stays word for word.
    assert seed[0] == "./scripts/wait-fuse.sh: option requires an argument -- h"
    expected = seed[1:]
    expected[0] = f"USAGE: {WAIT} [-f <file>] [-d <delay>] [-r <retry>] [-m <mountpoint>]"
    expected[expected.index("-f <host> Set the target file")] = "-f <file> Set the target file"
    expected.insert(expected.index("EXAMPLES:"),
                    "-m <mountpoint> Also wait for a fuse.chaosfs mount at this path")
    result = run(WAIT, "-h")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == expected


@pytest.mark.parametrize("prog", [INIT, WAIT])
def test_help_wins_when_it_comes_first_even_among_other_options(prog):
    result = run(prog, "-h", "-d", "5", "-x")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"USAGE: {prog} ")


@pytest.mark.parametrize("prog", [INIT, WAIT])
@pytest.mark.parametrize("argv,message", [
    (["-x"], "illegal option -- x"),
    (["-dx", "-q"], "illegal option -- q"),
    (["-d"], "option requires an argument -- d"),
    (["-f"], "option requires an argument -- f"),
])
def test_bad_option_prints_one_line_then_usage_on_stderr_and_exits_1(prog, argv, message):
    result = run(prog, *argv)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{prog}: {message}"
    assert lines[1].startswith(f"USAGE: {prog} ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv,message", [
    ([], "data directory is required"),
    (["-f", "/x/fuse"], "data directory is required"),
    (["-d", "/x/data"], "fuse directory is required"),
    (["-d", "", "-f", "/x/fuse"], "data directory is required"),
    (["-d", "/x/data", "-f", "/x/data"],
     "fuse directory /x/data must not be the data directory or inside it"),
    (["-d", "/x/data", "-f", "/x/data/fuse-data"],
     "fuse directory /x/data/fuse-data must not be the data directory or inside it"),
    (["-d", "/x/data/", "-f", "/x//data"],
     "fuse directory /x//data must not be the data directory or inside it"),
    (["-d", "/x/fuse/data", "-f", "/x/fuse"],
     "data directory /x/fuse/data must not be inside the fuse directory /x/fuse"),
    (["-d", "/x/data", "-f", "/x/fuse", "extra"], "unexpected argument: 'extra'"),
    (["-d", "/x/data", "-f", "/x/fuse", "-s", ""], "scripts directory must not be empty"),
    (["-d", "/x/data", "-f", "/x/fuse", "-p", ""], "pid file must not be empty"),
])
def test_init_rejects_bad_input_with_one_line_and_exit_1(tmp_path, argv, message):
    result = run(INIT, *argv, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == message + "\n"
    assert list(tmp_path.iterdir()) == []  # nothing was done before the check


@pytest.mark.parametrize("argv,message", [
    (["-d", "abc"], "invalid delay: 'abc' (want seconds >= 0, fractions allowed)"),
    (["-d", "-1"], "invalid delay: '-1' (want seconds >= 0, fractions allowed)"),
    (["-d", "nan"], "invalid delay: 'nan' (want seconds >= 0, fractions allowed)"),
    (["-d", "inf"], "invalid delay: 'inf' (want seconds >= 0, fractions allowed)"),
    (["-r", "1.5"], "invalid retry count: '1.5' (want an integer >= 0)"),
    (["-r", "-1"], "invalid retry count: '-1' (want an integer >= 0)"),
    (["-r", " 3"], "invalid retry count: ' 3' (want an integer >= 0)"),
    (["-f", ""], "pid file must not be empty"),
    (["-m", ""], "mountpoint must not be empty"),
    (["-r", "1", "now"], "unexpected argument: 'now'"),
])
def test_wait_fuse_rejects_bad_values_with_one_line_and_exit_1(argv, message):
    result = run(WAIT, *argv)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == message + "\n"


# ---- wait-fuse behaviour ------------------------------------------------------------------

def test_timeout_really_happens_after_delay_times_retry(tmp_path):
    pid = tmp_path / "pid"
    result, elapsed = timed(WAIT, "-f", str(pid), "-d", "0.25", "-r", "4")
    assert result.returncode == 1
    assert result.stdout.splitlines() == (
        [f"fuse server not running, {pid} not found, retry..."] * 4
        + ["waiting for fuse server ready timeout"])
    assert 1.0 <= elapsed < 3.0


def test_zero_retries_checks_once_and_gives_up_without_sleeping(tmp_path):
    result, elapsed = timed(WAIT, "-f", str(tmp_path / "pid"), "-r", "0", "-d", "30")
    assert (result.returncode, result.stdout) == (1, "waiting for fuse server ready timeout\n")
    assert elapsed < 5


def test_pid_file_appearing_mid_wait_means_started(tmp_path):
    pid = tmp_path / "fuse" / "pid"
    proc = subprocess.Popen([WAIT, "-f", str(pid), "-d", "0.1", "-r", "100"],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.6)
    assert proc.poll() is None
    pid.parent.mkdir()
    pid.write_text("1\n")
    out, _ = proc.communicate(timeout=10)
    lines = out.splitlines()
    assert proc.returncode == 0
    assert lines[-1] == "fuse server is started"
    assert len(lines) >= 3
    assert set(lines[:-1]) == {f"fuse server not running, {pid} not found, retry..."}


def test_options_may_be_clustered_and_attached(tmp_path):
    pid = tmp_path / "pid"
    result, elapsed = timed(WAIT, f"-f{pid}", "-r2", "-d", ".1")
    assert result.returncode == 1
    assert result.stdout.count("retry...") == 2
    result = run(WAIT, "-hr", "x")
    assert result.returncode == 0


def test_a_reader_that_goes_away_does_not_end_the_wait_in_a_traceback(tmp_path):
    proc = subprocess.Popen([WAIT, "-f", str(tmp_path / "pid"), "-d", "0.001", "-r", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("fuse server not running")
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (1, "")


def tmpfs_on_tmp() -> str:
    """Shell lines putting a fresh tmpfs on /tmp while keeping this checkout and its venv
    visible at their paths (CI may clone under /tmp)."""
    keep = sorted({p for p in (str(ROOT), sys.prefix) if p.startswith("/tmp/")})
    lines = []
    if keep:
        lines += ["mkdir -p /run/chaosfs-oldtmp", "mount --bind /tmp /run/chaosfs-oldtmp"]
    lines.append("mount -t tmpfs tmpfs /tmp")
    for p in keep:
        lines += [f"mkdir -p '{p}'", f"mount --bind '/run/chaosfs-oldtmp{p[len('/tmp'):]}' '{p}'"]
    return "\n".join(lines) + "\n"


def in_private_tmp(script: str, carry: Path | None = None) -> subprocess.CompletedProcess:
    """Run a shell snippet with a fresh tmpfs on /tmp in a private mount namespace, so the
    defaults (/tmp/fuse/pid, /tmp/scripts) can be exercised without touching the host.
    `carry` (usually under the hidden /tmp) is bind-mounted at /mnt first."""
    setup = f"mount --bind '{carry}' /mnt\n" if carry else ""
    return run("unshare", "--mount", "--propagation", "private", "sh", "-ec",
               setup + tmpfs_on_tmp() + script)


def test_wait_fuse_defaults_pid_file_delay_and_retry_count():
    result, elapsed = timed("unshare", "--mount", "--propagation", "private", "sh", "-ec",
                            f"{tmpfs_on_tmp()}{WAIT} -r 1")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "fuse server not running, /tmp/fuse/pid not found, retry...",
        "waiting for fuse server ready timeout"]
    assert 4.9 <= elapsed < 9, "default delay is 5 s"

    result = in_private_tmp(f"{WAIT} -d 0 || echo rc=$?")
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["waiting for fuse server ready timeout", "rc=1"]
    assert lines.count("fuse server not running, /tmp/fuse/pid not found, retry...") == 60

    result = in_private_tmp(f"mkdir /tmp/fuse; touch /tmp/fuse/pid; {WAIT}")
    assert (result.returncode, result.stdout) == (0, "fuse server is started\n")


def test_mountinfo_paths_are_unescaped_and_the_topmost_mount_counts():
    table = (b"22 1 0:5 / /proc rw - proc proc rw\n"
             b"40 22 0:50 / /data\\040dir rw,nosuid shared:7 - fuse.chaosfs chaosfs rw\n"
             b"41 40 0:51 / /data\\040dir rw - tmpfs tmpfs rw\n"
             b"42 22 0:52 / /other rw master:1 shared:2 - fuse.chaosfs chaosfs rw\n")
    assert mount_type_at("/data dir", table) == "tmpfs"
    assert mount_type_at("/other", table) == "fuse.chaosfs"
    assert mount_type_at("/data\\040dir", table) is None
    assert mount_type_at("/missing", table) is None


def test_mount_check_rejects_a_mount_of_another_type(tmp_path):
    pid = tmp_path / "pid"
    pid.write_text("1\n")
    result = run(WAIT, "-f", str(pid), "-m", "/proc", "-d", "0", "-r", "1")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "fuse server not running, /proc is not a fuse.chaosfs mount, retry...",
        "waiting for fuse server ready timeout"]


# ---- against the real chaosfs daemon ------------------------------------------------------

def launch(daemon) -> None:
    """Start chaosfs without waiting for it: wait-fuse is the one that waits here."""
    with open(daemon.log, "ab") as log:
        daemon.proc = subprocess.Popen(daemon.argv(), stdout=log, stderr=log)


def lazy_unmount(path: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", "-q", str(path)], capture_output=True)


def test_ready_only_once_the_real_chaosfs_mount_is_live(daemon_factory, tmp_path):
    daemon = daemon_factory(start=False, name="ready")
    mountpoint = daemon.mountpoint.parent / "data dir"  # mountinfo escapes the space
    mountpoint.mkdir()
    daemon.mountpoint = mountpoint
    daemon.pidfile = daemon.mountpoint.parent / "fuse" / "pid"
    daemon.pidfile.parent.mkdir()
    waiter = subprocess.Popen([WAIT, "-f", str(daemon.pidfile), "-m", str(mountpoint),
                               "-d", "0.05", "-r", "600"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        assert waiter.poll() is None
        launch(daemon)
        out, _ = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, daemon.log_text()
        lines = out.splitlines()
        assert lines[-1] == "fuse server is started"
        assert f"fuse server not running, {daemon.pidfile} not found, retry..." in lines[:-1]
        table = Path("/proc/self/mountinfo").read_bytes()
        assert mount_type_at(str(mountpoint), table) == "fuse.chaosfs"
        (mountpoint / "hello").write_text("through fuse")
        assert (daemon.original / "hello").read_text() == "through fuse"

        # SIGTERM: chaosfs unmounts and removes its pid file, so nobody is told it is ready.
        assert daemon.stop() == 0
        result = run(WAIT, "-f", str(daemon.pidfile), "-m", str(mountpoint), "-r", "0")
        assert (result.returncode, result.stdout) == (1, "waiting for fuse server ready timeout\n")
    finally:
        waiter.kill()
        lazy_unmount(mountpoint)  # the fixture's own check does not unescape the space


def test_a_mount_point_below_a_symlink_is_found_and_cleaned_up(daemon_factory):
    """Images make /var/run a symlink to /run: the etcd example's data dir
    /var/run/etcd/default.etcd is mounted, and listed in mountinfo, as /run/etcd/...; both
    wait-fuse's check and the daemon's own unmount at exit must see through that."""
    daemon = daemon_factory(start=False, name="linked")
    real = daemon.mountpoint
    link = real.parent / "var-run"
    link.symlink_to(real.parent, target_is_directory=True)
    daemon.mountpoint = link / real.name
    daemon.start()
    result = run(WAIT, "-f", str(daemon.pidfile), "-m", str(daemon.mountpoint), "-r", "0")
    assert (result.returncode, result.stdout) == (0, "fuse server is started\n"), daemon.log_text()
    assert daemon.stop() == 0
    assert mount_type_at(str(real), Path("/proc/self/mountinfo").read_bytes()) is None


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_pid_file_fools_only_the_plain_check_and_the_mount_check_waits(daemon_factory):
    daemon = daemon_factory(start=False, name="stale")
    daemon.pidfile.parent.mkdir(parents=True, exist_ok=True)
    daemon.pidfile.write_text(f"{dead_pid()}\n")  # left by the pod's previous run

    plain = run(WAIT, "-f", str(daemon.pidfile), "-r", "0")
    assert (plain.returncode, plain.stdout) == (0, "fuse server is started\n")

    waiter = subprocess.Popen([WAIT, "-f", str(daemon.pidfile), "-m", str(daemon.mountpoint),
                               "-d", "0.05", "-r", "600"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)
    assert waiter.poll() is None
    daemon.start()  # chaosfs replaces the stale pid file once it has mounted
    out, _ = waiter.communicate(timeout=30)
    lines = out.splitlines()
    assert waiter.returncode == 0
    assert lines[0] == f"fuse server not running, {daemon.mountpoint} is not a fuse.chaosfs mount, retry..."
    assert lines[-1] == "fuse server is started"


def test_pid_file_never_exists_without_the_mount_during_startup(daemon_factory):
    daemon = daemon_factory(start=False, name="order")
    daemon.pidfile.parent.mkdir(parents=True, exist_ok=True)
    launch(daemon)
    deadline = time.monotonic() + 20
    while not daemon.pidfile.exists():
        assert daemon.proc.poll() is None, daemon.log_text()
        assert time.monotonic() < deadline, "chaosfs never wrote its pid file"
        time.sleep(0.002)
    table = Path("/proc/self/mountinfo").read_bytes()
    assert mount_type_at(str(daemon.mountpoint), table) == "fuse.chaosfs"


# ---- init.sh behaviour --------------------------------------------------------------------

def make_dev_scripts(directory: Path) -> Path:
    """A scripts dir like the image's /scripts, holding Python stand-ins for the executables."""
    directory.mkdir(parents=True)
    for name, module in (("init.sh", "init"), ("wait-fuse.sh", "wait_fuse")):
        path = directory / name
        path.write_text(f"#!{sys.executable}\nimport sys\nfrom scripts.{module} import main\n"
                        "sys.exit(main())\n")
        path.chmod(0o750)
    return directory


def test_init_copies_scripts_makes_dirs_and_removes_the_stale_pid_file(tmp_path):
    image = make_dev_scripts(tmp_path / "image")
    shared = tmp_path / "shared-scripts"
    data = tmp_path / "vol" / "data"
    fuse = tmp_path / "vol" / "fuse-data"
    pid = tmp_path / "fuse" / "pid"
    pid.parent.mkdir()
    pid.write_text("1\n")
    result = run(str(image / "init.sh"), "-d", str(data), "-f", str(fuse), "-s", str(shared),
                 "-p", str(pid))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"copy scripts from {image} to {shared}",
        f"copied {shared}/init.sh",
        f"copied {shared}/wait-fuse.sh",
        f"create data directory {data}",
        f"create fuse directory {fuse}",
        f"remove stale pid file {pid}",
        "init done",
    ]
    assert data.is_dir() and fuse.is_dir() and not pid.exists()
    assert sorted(p.name for p in shared.iterdir()) == ["init.sh", "wait-fuse.sh"]
    for name in ("init.sh", "wait-fuse.sh"):
        assert stat.S_IMODE((shared / name).stat().st_mode) == 0o750
        assert (shared / name).read_bytes() == (image / name).read_bytes()
    copied = run(str(shared / "wait-fuse.sh"), "-f", str(pid), "-r", "0")
    assert copied.stdout == "waiting for fuse server ready timeout\n"

    # A restarted pod runs init again: same result, nothing to remove this time.
    (data / "keep").write_text("app data")
    again = run(str(image / "init.sh"), "-d", str(data), "-f", str(fuse), "-s", str(shared),
                "-p", str(pid))
    assert again.returncode == 0
    assert f"no stale pid file at {pid}" in again.stdout.splitlines()
    assert (data / "keep").read_text() == "app data"


def test_init_replaces_a_script_that_is_running(tmp_path):
    image = make_dev_scripts(tmp_path / "image")
    shared = tmp_path / "shared"
    shared.mkdir()
    busy = shared / "wait-fuse.sh"
    shutil.copy(shutil.which("sleep"), busy)  # an executable that is running during the copy
    sleeper = subprocess.Popen([str(busy), "30"])
    try:
        result = run(str(image / "init.sh"), "-d", str(tmp_path / "d"), "-f", str(tmp_path / "f"),
                     "-s", str(shared), "-p", str(tmp_path / "pid"))
        assert result.returncode == 0, result.stderr
        assert busy.read_bytes() == (image / "wait-fuse.sh").read_bytes()
        assert [p.name for p in shared.iterdir() if p.name.startswith(".")] == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_init_uses_tmp_defaults_for_scripts_and_pid_file(tmp_path):
    image = make_dev_scripts(tmp_path / "image")
    result = in_private_tmp(
        "mkdir -p /tmp/fuse; echo 4242 > /tmp/fuse/pid\n"
        "/mnt/init.sh -d /tmp/app/data -f /tmp/app/fuse-data\n"
        "test ! -e /tmp/fuse/pid; test -x /tmp/scripts/wait-fuse.sh; test -d /tmp/app/fuse-data\n"
        "echo checked", carry=image)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "remove stale pid file /tmp/fuse/pid" in lines
    assert "copy scripts from /mnt to /tmp/scripts" in lines
    assert lines[-1] == "checked"


def test_init_fails_with_one_line_when_a_directory_cannot_be_made(tmp_path):
    image = make_dev_scripts(tmp_path / "image")
    (tmp_path / "file").write_text("")
    result = run(str(image / "init.sh"), "-d", str(tmp_path / "file" / "data"),
                 "-f", str(tmp_path / "fuse"), "-s", str(tmp_path / "s"), "-p", str(tmp_path / "p"))
    assert result.returncode == 1
    assert result.stderr == f"cannot create data directory {tmp_path}/file/data: Not a directory\n"


def test_init_refuses_a_pid_file_that_is_a_directory(tmp_path):
    image = make_dev_scripts(tmp_path / "image")
    (tmp_path / "pid").mkdir()
    result = run(str(image / "init.sh"), "-d", str(tmp_path / "d"), "-f", str(tmp_path / "f"),
                 "-s", str(tmp_path / "s"), "-p", str(tmp_path / "pid"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"cannot remove stale pid file {tmp_path}/pid: ")
    assert len(result.stderr.splitlines()) == 1


def test_init_without_shipped_scripts_says_where_it_looked(tmp_path):
    lonely = tmp_path / "bin"
    lonely.mkdir()
    init = lonely / "init.sh"
    init.write_text(f"#!{sys.executable}\nimport sys\nfrom scripts.init import main\nsys.exit(main())\n")
    init.chmod(0o755)
    result = in_private_tmp(
        "[ ! -e /scripts/wait-fuse.sh ] || mount -t tmpfs tmpfs /scripts\n"
        "/mnt/init.sh -d /tmp/d -f /tmp/f", carry=lonely)
    assert result.returncode == 1
    assert result.stderr == "no scripts to copy: wait-fuse.sh is neither in /mnt nor in /scripts\n"


# ---- the static executables ---------------------------------------------------------------

def scripts_source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "scripts").iterdir()):
        if path.suffix in (".py", ".sh"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def built_scripts() -> Path:
    """init.sh and wait-fuse.sh from scripts/build.sh, cached outside the checkout by a hash
    of the sources so a fresh machine (CI) exercises the build once."""
    out = BUILD_CACHE / "out" / scripts_source_hash()
    if not (out / "init.sh").exists() or not (out / "wait-fuse.sh").exists():
        staging = out.with_name(out.name + f".{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(["bash", str(ROOT / "scripts" / "build.sh"), str(staging)],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout + result.stderr
        if not (out / "wait-fuse.sh").exists():
            shutil.rmtree(out, ignore_errors=True)  # an interrupted earlier build
        try:
            staging.rename(out)
        except OSError:  # a concurrent session finished the same build first
            assert (out / "wait-fuse.sh").exists()
            shutil.rmtree(staging, ignore_errors=True)
        for old in out.parent.iterdir():  # builds of older sources, unused for a day
            if old != out and time.time() - old.stat().st_mtime > 86400:
                shutil.rmtree(old, ignore_errors=True)
    return out


def test_built_executables_are_small_static_and_runnable(built_scripts):
    for name in ("init.sh", "wait-fuse.sh"):
        path = built_scripts / name
        assert path.stat().st_size < MAX_EXECUTABLE_SIZE, f"{name}: {path.stat().st_size} bytes"
        assert path.stat().st_mode & 0o111 == 0o111
        result = run(str(path), "-h")
        assert result.returncode == 0
        assert result.stdout.startswith(f"USAGE: {path} ")


class EmptyRoot:
    """A directory holding nothing but what is added, entered through a private mount
    namespace with /proc mounted and chroot: what a scratch or distroless app image offers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        for d in ("proc", "tmp/fuse", "tmp/scripts"):
            (path / d).mkdir(parents=True)

    def add(self, source: Path, target: str) -> None:
        dest = self.path / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)

    def run(self, *argv: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
        script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
        return timed("unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                     str(self.path), *argv, timeout=timeout)

    def leftovers(self) -> list[str]:
        """Files the executables unpacked into /tmp and did not clean up."""
        return sorted(p.name for p in (self.path / "tmp").iterdir()
                      if p.name not in ("fuse", "scripts"))


def test_static_wait_fuse_times_out_in_an_empty_root(built_scripts, tmp_path):
    root = EmptyRoot(tmp_path / "root")
    root.add(built_scripts / "wait-fuse.sh", "/tmp/scripts/wait-fuse.sh")
    result, elapsed = root.run("/tmp/scripts/wait-fuse.sh", "-d", "0.3", "-r", "3")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == (
        ["fuse server not running, /tmp/fuse/pid not found, retry..."] * 3
        + ["waiting for fuse server ready timeout"])
    assert 0.9 <= elapsed < 5
    assert root.leftovers() == []


def test_static_wait_fuse_sees_the_real_chaosfs_mount_in_an_empty_root(
        built_scripts, daemon_factory, tmp_path):
    root = EmptyRoot(tmp_path / "root")
    root.add(built_scripts / "wait-fuse.sh", "/tmp/scripts/wait-fuse.sh")
    (root.path / "data").mkdir()
    daemon = daemon_factory(start=False, name="chroot")
    daemon.mountpoint = root.path / "data"
    daemon.pidfile = root.path / "tmp" / "fuse" / "pid"

    # Before chaosfs runs: the app container would wait, then give up.
    result, _ = root.run("/tmp/scripts/wait-fuse.sh", "-m", "/data", "-d", "0.1", "-r", "1")
    assert result.returncode == 1
    daemon.start()
    result, _ = root.run("/tmp/scripts/wait-fuse.sh", "-m", "/data", "-d", "0.1", "-r", "50")
    assert (result.returncode, result.stdout) == (0, "fuse server is started\n"), result.stderr
    result, _ = root.run("/tmp/scripts/wait-fuse.sh", "-m", "/elsewhere", "-d", "0", "-r", "0")
    assert (result.returncode, result.stdout) == (1, "waiting for fuse server ready timeout\n")
    assert root.leftovers() == []


def test_static_init_copies_from_slash_scripts_in_an_empty_root(built_scripts, tmp_path):
    root = EmptyRoot(tmp_path / "root")
    # The image layout: both executables in /scripts; init is started from there.
    root.add(built_scripts / "init.sh", "/scripts/init.sh")
    root.add(built_scripts / "wait-fuse.sh", "/scripts/wait-fuse.sh")
    (root.path / "tmp" / "fuse" / "pid").write_text("7\n")
    result, _ = root.run("/scripts/init.sh", "-d", "/var/lib/app/data",
                         "-f", "/var/lib/app/fuse-data")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "copy scripts from /scripts to /tmp/scripts"
    assert "remove stale pid file /tmp/fuse/pid" in result.stdout.splitlines()
    assert (root.path / "var/lib/app/data").is_dir()
    assert (root.path / "var/lib/app/fuse-data").is_dir()
    assert not (root.path / "tmp/fuse/pid").exists()
    copied = root.path / "tmp/scripts/wait-fuse.sh"
    assert copied.read_bytes() == (built_scripts / "wait-fuse.sh").read_bytes()
    assert copied.stat().st_mode & 0o111 == 0o111
    # And the copy works for the app container.
    result, _ = root.run("/tmp/scripts/wait-fuse.sh", "-r", "0")
    assert (result.returncode, result.stdout) == (1, "waiting for fuse server ready timeout\n")
    assert root.leftovers() == []
