#!/usr/bin/env bash
# Build the self-contained chaos-scripts executables `init.sh` and `wait-fuse.sh`.
#
# Usage:  scripts/build.sh [OUTPUT_DIR]          (default: <repo>/build/scripts)
#
# Output: OUTPUT_DIR/init.sh and OUTPUT_DIR/wait-fuse.sh, static x86-64 ELF executables (mode
# 0755) that need no Python, no shell and no libc in the container that runs them; they only
# need a writable temp dir ($TMPDIR, else /tmp) to unpack themselves. Copy both into the
# chaos-scripts image as /scripts/init.sh and /scripts/wait-fuse.sh.
#
# How: PyInstaller --onefile bundles scripts/init.py / scripts/wait_fuse.py with Debian's
# /usr/bin/python3 (a pyenv or other RUNPATH-linked Python is rejected by staticx), then staticx
# adds the C library and loader so the result runs in a scratch image.
#
# Needs: Debian/Ubuntu, root or write access to the build cache, and these apt packages (the
# script installs the missing ones when it runs as root):
#     python3 python3-venv libpython3.X binutils patchelf
# plus PyPI access for the pinned pyinstaller and staticx, installed into a build venv at
# $CHAOSFS_SCRIPTS_BUILD_CACHE/venv (default /var/cache/chaosfs-scripts-build/venv), which is
# reused by later builds. Prints the size of each executable on success.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$REPO/build/scripts}
CACHE=${CHAOSFS_SCRIPTS_BUILD_CACHE:-/var/cache/chaosfs-scripts-build}
PYTHON=/usr/bin/python3
BUILD_REQUIREMENTS=(pyinstaller==6.22.3 staticx==0.14.2)

# Extension modules the scripts never use (and the pure modules that only wrap them); leaving
# them out drops libcrypto, liblzma, libbz2 and the CJK codecs, which would otherwise be most of
# each executable. Pure-Python modules cost little and PyInstaller's runtime hooks need some
# (inspect's hook imports zipfile), so they stay.
EXCLUDES=(
    _bz2 bz2 _lzma lzma _hashlib hashlib _ssl ssl _decimal decimal _pydecimal
    _multibytecodec _codecs_cn _codecs_hk _codecs_iso2022 _codecs_jp _codecs_kr _codecs_tw
    resource _ctypes ctypes _sqlite3 sqlite3 _curses curses readline _tkinter tkinter
    _asyncio asyncio _multiprocessing multiprocessing _posixshmem _queue _uuid uuid
    _json json _zoneinfo zoneinfo pyexpat xml
)

say() { echo "build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

ensure_apt_packages() {
    local pyver
    pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
    local wanted=(python3 python3-venv binutils patchelf)
    [[ -n $pyver ]] && wanted+=("libpython$pyver")
    local missing=()
    for p in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing Debian packages: ${missing[*]} (run as root or install them)"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ -z $pyver ]]; then  # python3 was missing: libpython's version is only known now
        ensure_apt_packages
    fi
}

ensure_build_venv() {
    local venv=$CACHE/venv stamp=$CACHE/venv/.chaosfs-build-stamp
    local want="${BUILD_REQUIREMENTS[*]} $("$PYTHON" -c 'import sys; print(sys.version)' | head -1)"
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        return 0
    fi
    say "creating build venv $venv"
    rm -rf "$venv"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${BUILD_REQUIREMENTS[@]}"
    echo "$want" > "$stamp"
}

build_one() {  # build_one <module> <executable name>
    local module=$1 name=$2 work=$3
    local entry=$work/entry_${module}.py
    printf 'import sys\nfrom scripts.%s import main\nsys.exit(main())\n' "$module" > "$entry"
    local excludes=()
    for m in "${EXCLUDES[@]}"; do excludes+=(--exclude-module "$m"); done
    "$CACHE/venv/bin/pyinstaller" --onefile --strip --noconfirm --clean --log-level WARN \
        --optimize 2 --paths "$REPO" --name "$name.dyn" \
        --distpath "$work/dist" --workpath "$work/pyi" --specpath "$work" \
        "${excludes[@]}" "$entry" >"$work/$name.pyinstaller.log" 2>&1 \
        || { cat "$work/$name.pyinstaller.log" >&2; die "pyinstaller failed for $name"; }
    "$CACHE/venv/bin/staticx" --strip "$work/dist/$name.dyn" "$work/$name" \
        >"$work/$name.staticx.log" 2>&1 \
        || { cat "$work/$name.staticx.log" >&2; die "staticx failed for $name"; }
    chmod 0755 "$work/$name"
    # Rename into place so a concurrent reader never sees a half-written executable.
    cp "$work/$name" "$OUT/.$name.partial"
    mv -f "$OUT/.$name.partial" "$OUT/$name"
}

work=
main() {
    ensure_apt_packages
    ensure_build_venv
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    work=$(mktemp -d "${TMPDIR:-/tmp}/chaosfs-scripts-build.XXXXXX")
    trap '[[ -n $work ]] && rm -rf "$work"' EXIT
    # PyInstaller and staticx would otherwise read this repo's build/ and cache dirs.
    cd "$work"
    build_one init init.sh "$work"
    build_one wait_fuse wait-fuse.sh "$work"
    for name in init.sh wait-fuse.sh; do
        say "$OUT/$name: $(stat -c %s "$OUT/$name") bytes"
    done
}

main
