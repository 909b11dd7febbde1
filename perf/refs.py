"""The reference file systems, built at run time from what Debian ships, never assumed:

- libfuse's `passthrough_ll` (the example `libfuse3-dev` installs under
  /usr/share/doc/libfuse3-dev/examples/, compiled with gcc against fuse3);
- go-fuse's `loopback` (the example `golang-github-hanwen-go-fuse-dev` installs, built in
  GOPATH mode, `GO111MODULE=off`, against /usr/share/gocode): the engine family of Chaos
  Mesh 0.9's chaosfs.

Both are built into the run's work dir (nothing of theirs is kept or committed). A build that
fails raises VariantError with a one-line reason, which the run reports for that variant.
"""
from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
from pathlib import Path

from perf.variants import VariantError

LIBFUSE_EXAMPLES = Path("/usr/share/doc/libfuse3-dev/examples")
GOFUSE_DOC_EXAMPLES = Path("/usr/share/doc/golang-github-hanwen-go-fuse-dev/examples")
GOPATH_SYSTEM = Path("/usr/share/gocode")
GOFUSE_SRC = GOPATH_SYSTEM / "src/github.com/hanwen/go-fuse"

# How each reference is started. chaosfs's defaults, which these match: entry and attribute
# timeouts 1 s, file pages kept across opens (keep_cache), allow_other, foreground.
# passthrough_ll: `cache=always` is the only mode that sets keep_cache (it also caches
# readdir); `timeout=1` brings its 86400 s back to chaosfs's 1 s. No default_permissions:
# passthrough_ll creates files with its own (root) credentials, so with kernel permission
# checks a non-root application (PostgreSQL) could not reopen its own files.
# go-fuse loopback: its main() sets 1 s entry/attr timeouts; `-allow-other` also adds
# default_permissions (as chaosfs has), and as root it chowns new files to the caller.
PASSTHROUGH_LL_OPTS = "-o source={original} -o allow_other -o cache=always -o timeout=1"
GOFUSE_OPTS = "-allow-other -q"


def _tail(text: str) -> str:
    """The compiler's first error line, else its last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error" in ln or "cannot" in ln or "not found" in ln), None)
    return first or (lines[-1] if lines else "(no output)")


def _find_example(base: Path, name: str) -> Path:
    """`name` from `base`, gunzipped if Debian compressed it."""
    for cand in (base / name, base / (name + ".gz")):
        if cand.exists():
            return cand
    raise VariantError(f"{base / name} not found (Debian: apt-get install libfuse3-dev)")


def _materialize(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name.removesuffix(".gz")
    if src.suffix == ".gz":
        with gzip.open(src, "rb") as f:
            dst.write_bytes(f.read())
    else:
        shutil.copyfile(src, dst)
    return dst


_built: dict[str, Path | VariantError] = {}


def _once(key: str, fn, out: Path) -> Path:
    """Build once per run; both passthrough_ll variants share one binary."""
    if key not in _built:
        try:
            _built[key] = fn(out)
        except VariantError as e:
            _built[key] = e
    r = _built[key]
    if isinstance(r, VariantError):
        raise VariantError(str(r))
    return r


def reset() -> None:
    _built.clear()


def _build_passthrough_ll(out: Path) -> Path:
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        raise VariantError("gcc or pkg-config not found (Debian: apt-get install gcc pkg-config)")
    src_dir = out / "libfuse-src"
    src_dir.mkdir(parents=True, exist_ok=True)
    c = _materialize(_find_example(LIBFUSE_EXAMPLES, "passthrough_ll.c"), src_dir)
    for helper in ("passthrough_helpers.h",):  # its local include, if shipped
        try:
            _materialize(_find_example(LIBFUSE_EXAMPLES, helper), src_dir)
        except VariantError:
            pass
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True)
    if flags.returncode:
        raise VariantError(f"pkg-config fuse3: {_tail(flags.stderr)}")
    binary = out / "passthrough_ll"
    r = subprocess.run(["gcc", "-O2", "-Wall", f"-I{src_dir}", "-o", str(binary), str(c),
                        *flags.stdout.split()], capture_output=True, text=True)
    if r.returncode:
        raise VariantError(f"gcc passthrough_ll.c: {_tail(r.stderr)}")
    return binary


def _build_gofuse_loopback(out: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        raise VariantError("go not found (Debian: apt-get install golang-go)")
    if not (GOFUSE_SRC / "fs").is_dir():
        raise VariantError(f"{GOFUSE_SRC} missing (Debian: apt-get install golang-github-hanwen-go-fuse-dev)")
    mains = sorted(glob.glob(str(GOFUSE_DOC_EXAMPLES / "loopback" / "main.go*"))) + sorted(
        glob.glob(str(GOFUSE_SRC / "example" / "loopback" / "main.go*")))
    if not mains:
        raise VariantError(f"go-fuse's loopback example not found under {GOFUSE_DOC_EXAMPLES} or {GOFUSE_SRC}")
    # GOPATH mode with the example as its own package. The example imports
    # github.com/hanwen/go-fuse/v2/fs while Debian installs the tree without the /v2
    # element; GOPATH mode only maps /v2 away for importers inside the same GOPATH root, so
    # a vendor/ symlink gives the import its exact path. Dependencies (golang.org/x/sys)
    # come from /usr/share/gocode.
    gopath = out / "gopath"
    pkg = gopath / "src" / "gofuse-loopback"
    (pkg / "vendor" / "github.com" / "hanwen" / "go-fuse").mkdir(parents=True, exist_ok=True)
    _materialize(Path(mains[0]), pkg)
    link = pkg / "vendor" / "github.com" / "hanwen" / "go-fuse" / "v2"
    if not link.exists():
        link.symlink_to(GOFUSE_SRC)
    binary = out / "gofuse-loopback"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{GOPATH_SYSTEM}",
           "GOCACHE": str(out / "gocache"), "GOFLAGS": "", "CGO_ENABLED": "0", "HOME": str(out)}
    r = subprocess.run([go, "build", "-o", str(binary), "."], cwd=pkg, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise VariantError(f"go build loopback: {_tail(r.stderr)}")
    return binary


def passthrough_ll(out: Path, single: bool) -> str:
    """The command template for passthrough_ll (`-s`: one thread)."""
    binary = _once("passthrough_ll", _build_passthrough_ll, out)
    return f"{binary} -f {'-s ' if single else ''}{PASSTHROUGH_LL_OPTS} {{mountpoint}}"


def gofuse_loopback(out: Path) -> str:
    binary = _once("gofuse", _build_gofuse_loopback, out)
    return f"{binary} {GOFUSE_OPTS} {{mountpoint}} {{original}}"
