#!/usr/bin/env bash
# Builds the three images (chaos-fs, chaos-scripts, chaos-injector) from ./Dockerfile with
# podman, offline as far as base images go: the base is a Debian rootfs made by debootstrap
# and imported as localhost/debian-minbase:<codename> (no registry pull). RUN steps still use
# the Debian and PyPI registries. Prints each image's size.
#
#   images/build.sh [--tag TAG] [--export DIR] [--no-base] [TARGET...]
#     TAG      image tag (default dev) -> localhost/chaos-fs:dev ...
#     --export write each image as DIR/<target>.oci.tar (oci-archive, for ctr/kube import)
#     --no-base use $BASE from the environment as given (e.g. a public image with docker)
# Env: CHAOSFS_E2E_CACHE (default /var/cache/chaosfs-e2e) holds the base rootfs tarball.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${CHAOSFS_E2E_CACHE:-/var/cache/chaosfs-e2e}
TAG=dev EXPORT= MAKE_BASE=1 TARGETS=()
while (($#)); do
    case $1 in
        --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
        --export) EXPORT=${2:?--export needs a directory}; shift 2 ;;
        --no-base) MAKE_BASE=0; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        chaos-fs|chaos-scripts|chaos-injector|e2e-app|e2e-etcd) TARGETS+=("$1"); shift ;;
        *) echo "images/build.sh: unknown argument '$1' (targets: chaos-fs chaos-scripts chaos-injector)" >&2; exit 2 ;;
    esac
done
((${#TARGETS[@]})) || TARGETS=(chaos-fs chaos-scripts chaos-injector)
[[ $(id -u) == 0 ]] || { echo "images/build.sh: run as root (podman storage, debootstrap)" >&2; exit 1; }

need=()
for p in podman runc debootstrap fuse-overlayfs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
    echo "images/build.sh: installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Podman's defaults fail on this kind of machine (crun: hybrid cgroups; ulimits above the hard
# limit), so a private containers.conf; /etc stays untouched.
CONF=$CACHE/containers.conf
mkdir -p "$CACHE"
cat > "$CONF.tmp" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
mv "$CONF.tmp" "$CONF"
export CONTAINERS_CONF=$CONF

CODENAME=$(. /etc/os-release && echo "$VERSION_CODENAME")
BASE_IMAGE=localhost/debian-minbase:$CODENAME
mirror() {
    local m
    m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $m ]] || m=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [[ -n $m ]] || { echo "images/build.sh: no Debian mirror in the apt configuration" >&2; exit 1; }
    echo "$m"
}
ensure_base() {
    podman image exists "$BASE_IMAGE" && return 0
    local tarball=$CACHE/base/debian-minbase-$CODENAME.tar
    if [[ ! -s $tarball ]]; then
        local t0 rootfs=$CACHE/base/rootfs
        t0=$(date +%s)
        echo "images/build.sh: debootstrap $CODENAME minbase (about a minute)"
        rm -rf "$rootfs"; mkdir -p "$rootfs"
        debootstrap --variant=minbase "$CODENAME" "$rootfs" "$(mirror)" >"$CACHE/base/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/base/debootstrap.log" >&2; exit 1; }
        # Same trimming as the public *-slim images: no docs, man pages or locales, now or
        # in later apt installs inside the image.
        cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
        printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
            > "$rootfs/etc/apt/apt.conf.d/90no-recommends"
        find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
        # glibc's iconv modules (8 MB): nothing in these images converts charsets through iconv.
        rm -rf "$rootfs"/usr/lib/*-linux-gnu/gconv
        rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* "$rootfs"/var/cache/apt/* \
               "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        echo "images/build.sh: base rootfs in $(( $(date +%s) - t0 )) s"
    fi
    podman import -q "$tarball" "$BASE_IMAGE" >/dev/null
}

if ((MAKE_BASE)); then
    ensure_base
    BASE=$BASE_IMAGE
fi
BASE=${BASE:?set BASE or drop --no-base}

# Python wheels come from the host's pip (which knows this machine's index and CA set-up),
# so nothing inside the build talks to PyPI. Refreshed only when pyproject.toml changes.
WHEELS=$ROOT/images/wheelhouse
BUILD_REQS=("setuptools>=77" wheel "cython>=3.0" "grpcio-tools>=1.60")
# scripts/build.sh pins its own tools; take the pins from there.
eval "$(grep -m1 '^BUILD_REQUIREMENTS=' "$ROOT/scripts/build.sh" || echo 'BUILD_REQUIREMENTS=()')"
BUILD_REQS+=("${BUILD_REQUIREMENTS[@]}")
fill_wheelhouse() {
    local py=$ROOT/.venv/bin/python stamp=$WHEELS/.stamp want
    [[ -x $py ]] || { echo "images/build.sh: no $ROOT/.venv (run ./dev setup first)" >&2; exit 1; }
    want=$( (cat "$ROOT/pyproject.toml"; printf '%s\n' "${BUILD_REQS[@]}") | sha256sum | cut -d' ' -f1)
    [[ -f $stamp && $(cat "$stamp") == "$want" ]] && return 0
    echo "images/build.sh: filling images/wheelhouse"
    "$py" -c "import tomllib; d = tomllib.load(open('$ROOT/pyproject.toml', 'rb')); print('\n'.join(d['project']['dependencies']))" \
        > "$WHEELS/.requirements.txt"
    "$py" -m pip wheel -q -w "$WHEELS" "${BUILD_REQS[@]}" -r "$WHEELS/.requirements.txt"
    echo "$want" > "$stamp"
}
fill_wheelhouse

[[ -z $EXPORT ]] || mkdir -p "$EXPORT"
printf '%-28s %10s %8s\n' IMAGE SIZE SECONDS > "$CACHE/sizes.txt.tmp"
for t in "${TARGETS[@]}"; do
    t0=$(date +%s)
    echo "images/build.sh: building $t on $BASE"
    podman build -q --network=host --build-arg "BASE=$BASE" --build-arg PIP_OFFLINE=1 --target "$t" \
        -t "localhost/$t:$TAG" -f "$ROOT/Dockerfile" "$ROOT" >/dev/null
    secs=$(( $(date +%s) - t0 ))
    size=$(podman image inspect --format '{{.Size}}' "localhost/$t:$TAG")
    printf '%-28s %7.1f MB %8s\n' "localhost/$t:$TAG" "$(awk -v s="$size" 'BEGIN{print s/1e6}')" "$secs" >> "$CACHE/sizes.txt.tmp"
    if [[ -n $EXPORT ]]; then
        id=$(podman image inspect --format '{{.Id}}' "localhost/$t:$TAG")
        # saving the injector image takes a while: only when the image changed
        if [[ ! -s $EXPORT/$t.oci.tar || $(cat "$EXPORT/$t.id" 2>/dev/null) != "$id" ]]; then
            rm -f "$EXPORT/$t.oci.tar" "$EXPORT/$t.id"
            # Checked before it replaces anything: an archive missing a blob would only show
            # up later, as a `content digest ... not found` from the node's ctr import.
            for try in 1 2; do
                podman save -q --format oci-archive -o "$EXPORT/$t.oci.tar.tmp" "localhost/$t:$TAG"
                bad=$("$ROOT/.venv/bin/python" "$ROOT/images/oci_archive.py" "$EXPORT/$t.oci.tar.tmp") && break
                echo "images/build.sh: podman save of $t gave a broken archive (try $try): $bad" >&2
                rm -f "$EXPORT/$t.oci.tar.tmp"
                ((try < 2)) || exit 1
            done
            mv "$EXPORT/$t.oci.tar.tmp" "$EXPORT/$t.oci.tar"
            echo "$id" > "$EXPORT/$t.id"
        fi
    fi
done
mv "$CACHE/sizes.txt.tmp" "$CACHE/sizes.txt"
cat "$CACHE/sizes.txt"
