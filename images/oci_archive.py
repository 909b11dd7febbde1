"""Check an oci-archive (what `podman save --format oci-archive` writes) before anything
imports it: index.json, every manifest it names, and every config and layer those name must
be in the tar with the size and sha256 the descriptors give.

    python images/oci_archive.py ARCHIVE...    (one line per problem; exit 1 if any)

images/build.sh runs it on each archive it saves, and the e2e node on an archive that
`ctr images import` refused, so a failed import says whether the archive or containerd
was at fault.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tarfile


def _blob_name(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def problems(path: str) -> list[str]:
    try:
        tar = tarfile.open(path)
    except (OSError, tarfile.TarError) as e:
        return [f"{path}: not a readable tar ({e})"]
    with tar:
        try:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError) as e:
            return [f"{path}: truncated or corrupt tar ({e})"]

        def blob(desc: dict, what: str) -> tuple[bytes | None, list[str]]:
            digest, size = desc.get("digest", ""), desc.get("size")
            m = members.get(_blob_name(digest))
            if m is None:
                return None, [f"{path}: {what} {digest} is not in the archive"]
            if size is not None and m.size != size:
                return None, [f"{path}: {what} {digest} is {m.size} bytes, its descriptor says {size}"]
            h = hashlib.sha256()
            f = tar.extractfile(m)
            data = bytearray()
            keep = desc.get("mediaType", "").endswith("+json")
            while chunk := f.read(1 << 20):
                h.update(chunk)
                if keep:
                    data += chunk
            if digest.startswith("sha256:") and "sha256:" + h.hexdigest() != digest:
                return None, [f"{path}: {what} {digest} has sha256:{h.hexdigest()}"]
            return bytes(data), []

        if "index.json" not in members:
            return [f"{path}: no index.json"]
        try:
            index = json.load(tar.extractfile(members["index.json"]))
        except ValueError as e:
            return [f"{path}: index.json is not JSON ({e})"]
        out: list[str] = []
        manifests = index.get("manifests") or []
        if not manifests:
            out.append(f"{path}: index.json lists no manifest")
        for desc in manifests:
            raw, bad = blob(desc, "manifest")
            out += bad
            if raw is None:
                continue
            try:
                manifest = json.loads(raw)
            except ValueError as e:
                out.append(f"{path}: manifest {desc.get('digest')} is not JSON ({e})")
                continue
            for i, d in enumerate([manifest.get("config") or {}] + list(manifest.get("layers") or [])):
                out += blob(d, "config" if i == 0 else f"layer {i}")[1]
        return out


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python images/oci_archive.py ARCHIVE...", file=sys.stderr)
        return 2
    found = [p for a in argv for p in problems(a)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
