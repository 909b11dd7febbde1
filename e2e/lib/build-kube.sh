#!/usr/bin/env bash
# Builds kube-apiserver, kubelet and kubectl (all v1.20.2) from Debian's `kubernetes` source
# package, offline, into $CACHE/kube/bin. No registry ships these binaries and the Go module
# proxy is out of reach, but Debian's source package carries upstream's whole vendor/ tree.
# Skips everything when the binaries are already cached. Takes ~9-10 min on 2 cores, ~1.3 GB RSS.
set -euo pipefail
CACHE=${CHAOSFS_E2E_CACHE:-/var/cache/chaosfs-e2e}
OUT=$CACHE/kube/bin
WANT=(kube-apiserver kubelet kubectl)

have_all() { local b; for b in "${WANT[@]}"; do [[ -x $OUT/$b ]] || return 1; done; }
if have_all; then echo "build-kube: cached in $OUT"; exit 0; fi
# Two callers (e2e/run and the pytest suite's API-server fixture) may meet on one machine:
# the second waits for the first's build and then finds it cached.
mkdir -p "$CACHE/kube"
exec 9>"$CACHE/kube/build.lock"
if ! flock -n 9; then
    echo "build-kube: another build holds $CACHE/kube/build.lock; waiting"
    flock 9
fi
if have_all; then echo "build-kube: cached in $OUT"; exit 0; fi

for p in golang-go golang-github-modern-go-reflect2-dev make gcc rsync; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || { echo "build-kube: missing Debian package $p" >&2; exit 1; }
done

W=$CACHE/kube/work
mkdir -p "$W/aptsrc/lists/partial" "$W/aptsrc/cache/archives/partial" "$W/home" "$OUT"
# The machine's own mirror, never a hard-coded host.
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[[ -n $MIRROR ]] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n $MIRROR ]] || { echo "build-kube: cannot find the Debian mirror in the apt configuration" >&2; exit 1; }
CODENAME=$(. /etc/os-release && echo "$VERSION_CODENAME")

# A private apt configuration for deb-src: the system's sources stay untouched.
printf 'deb-src %s %s main\n' "$MIRROR" "$CODENAME" > "$W/aptsrc/sources.list"
APTO=(-o "Dir::Etc::SourceList=$W/aptsrc/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o "Dir::State::Lists=$W/aptsrc/lists" -o "Dir::Cache=$W/aptsrc/cache" -o Debug::NoLocking=1)
if ! ls "$W"/kubernetes_*.orig.tar.* >/dev/null 2>&1; then
    echo "build-kube: fetching the kubernetes source package"
    apt-get "${APTO[@]}" -qq update
    (cd "$W" && apt-get "${APTO[@]}" -qq source --download-only kubernetes)
fi
ORIG=$(ls "$W"/kubernetes_*.orig.tar.* | head -1)
SRC=$W/src
if [[ ! -f $SRC/.unpacked ]]; then
    rm -rf "$SRC"; mkdir -p "$SRC"
    tar -xf "$ORIG" -C "$SRC" --strip-components=1
    # Go >= 1.18 breaks the vendored reflect2 1.0.1 (kube-apiserver faults on the first pod
    # create in UnsafeMapType.UnsafeIterate); Debian's reflect2 1.0.2 is API-compatible.
    R=$SRC/vendor/github.com/modern-go/reflect2
    rm -f "$R"/*.go "$R"/*.s
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
       /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R"/
    # pause is built from the same tree (the sandbox image), statically.
    touch "$SRC/.unpacked"
fi

echo "build-kube: compiling ${WANT[*]} (several minutes)"
start=$(date +%s)
(cd "$SRC" && HOME=$W/home GOFLAGS= GOPROXY=off GO111MODULE= \
    make WHAT="cmd/kube-apiserver cmd/kubelet cmd/kubectl" >"$W/make.log" 2>&1) \
    || { tail -30 "$W/make.log" >&2; echo "build-kube: make failed (log: $W/make.log)" >&2; exit 1; }
for b in "${WANT[@]}"; do install -m 0755 "$SRC/_output/bin/$b" "$OUT/$b"; done
gcc -Os -static -o "$OUT/pause" "$SRC/build/pause/linux/pause.c"
echo "build-kube: done in $(( $(date +%s) - start )) s"
# The tree and Go's build cache are ~2-3 GB and no longer needed.
rm -rf "$SRC" "$W/home"
