#!/usr/bin/env bash
# Provisions what the image test (tests/tests/image.rs) builds the Dockerfile from, here,
# where no container registry and no download site is reachable: everything is made
# locally and reaches the Dockerfile only through its build arguments.
#
#   .tools/image/rootfs/            Debian bookworm, `debootstrap --variant=minbase` (from
#                                   the Debian mirror; TIDEMARK_DEBIAN_MIRROR overrides)
#   localhost/tidemark-test/builder:bookworm
#                                   that rootfs as an image: RUST_IMAGE of the prebuilt
#                                   build (it runs no cargo: sh, coreutils, tar, gzip)
#   localhost/tidemark-test/runtime:bookworm
#                                   RUNTIME_IMAGE, made like distroless/cc: the shared
#                                   libraries, CA certificates, /etc/passwd with `nonroot`
#                                   (65532), /tmp; no shell, no package manager
#   .tools/image/helm-v4.1.4-linux-amd64.tar.gz
#                                   the provisioned official helm 4.1.4 (scripts/setup-helm.sh)
#                                   packed as get.helm.sh packs it; its sha256 beside it
#
# Images live in a buildah store of their own (.tools/image/storage, vfs driver), not in
# the machine's. Cached: a second run does nothing. Needs root, buildah and debootstrap
# (scripts/setup-system.sh installs them). Progress on stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/image"
mirror="${TIDEMARK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
builder_image=localhost/tidemark-test/builder:bookworm
runtime_image=localhost/tidemark-test/runtime:bookworm
helm_version=v4.1.4

log() { printf 'setup-image: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

for tool in buildah debootstrap tar sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run scripts/setup-system.sh tests"
done
[[ "$EUID" -eq 0 ]] || die "debootstrap and buildah's vfs store need root"
[[ "$(dpkg --print-architecture 2>/dev/null || echo unknown)" == amd64 ]] \
    || die "the image test is set up for linux/amd64 (the provisioned helm is amd64)"

buildah=(buildah --root "$dir/storage" --runroot "$dir/run" --storage-driver vfs)
mkdir -p "$dir"

# ---- the Debian rootfs -------------------------------------------------------------------
rootfs="$dir/rootfs"
if [[ ! -f "$dir/rootfs.done" ]]; then
    rm -rf "$rootfs"
    log "debootstrap --variant=minbase $suite from $mirror (about a minute)"
    debootstrap --variant=minbase --include=ca-certificates,libssl3 "$suite" "$rootfs" "$mirror" \
        >"$dir/debootstrap.log" 2>&1 || die "debootstrap failed; see $dir/debootstrap.log"
    touch "$dir/rootfs.done"
fi

has_image() { "${buildah[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# ---- builder base: the whole rootfs --------------------------------------------------------
if ! has_image "$builder_image"; then
    log "importing the rootfs as $builder_image"
    tar -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        --exclude='./var/cache/apt/archives/*.deb' -cf "$dir/rootfs.tar" .
    ctr="$("${buildah[@]}" from scratch)"
    "${buildah[@]}" add "$ctr" "$dir/rootfs.tar" / >/dev/null
    "${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    "${buildah[@]}" commit --quiet --rm "$ctr" "$builder_image" >/dev/null
    rm -f "$dir/rootfs.tar"
fi

# ---- runtime base: distroless-like ---------------------------------------------------------
if ! has_image "$runtime_image"; then
    log "making $runtime_image (libraries, CA certificates, passwd; no shell)"
    stage="$dir/runtime-rootfs"
    rm -rf "$stage"
    mkdir -p "$stage/usr/lib" "$stage/etc/ssl" "$stage/tmp" "$stage/var/cache" \
        "$stage/home/nonroot" "$stage/usr/local/bin"
    cp -a "$rootfs/usr/lib/x86_64-linux-gnu" "$stage/usr/lib/"
    cp -a "$rootfs/usr/lib64" "$stage/usr/"
    ln -s usr/lib "$stage/lib"
    ln -s usr/lib64 "$stage/lib64"
    cp -a "$rootfs/etc/ssl/certs" "$stage/etc/ssl/"
    mkdir -p "$stage/usr/share"
    for share in ca-certificates zoneinfo; do
        [[ ! -d "$rootfs/usr/share/$share" ]] || cp -a "$rootfs/usr/share/$share" "$stage/usr/share/"
    done
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        >"$stage/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$stage/etc/group"
    chown 65532:65532 "$stage/home/nonroot"
    chmod 1777 "$stage/tmp"
    # Nothing that runs a shell may be left: the Dockerfile's runtime stage must not need one.
    if find "$stage" \( -name sh -o -name bash -o -name dash \) \( -type f -o -type l \) | grep -q .; then
        die "the runtime base must not contain a shell"
    fi
    tar -C "$stage" -cf "$dir/runtime.tar" .
    ctr="$("${buildah[@]}" from scratch)"
    "${buildah[@]}" add "$ctr" "$dir/runtime.tar" / >/dev/null
    "${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --user 65532:65532 --workingdir /home/nonroot "$ctr"
    "${buildah[@]}" commit --quiet --rm "$ctr" "$runtime_image" >/dev/null
    rm -rf "$dir/runtime.tar" "$stage"
fi

# ---- the helm archive --------------------------------------------------------------------
archive="$dir/helm-$helm_version-linux-amd64.tar.gz"
if [[ ! -f "$archive.sha256" ]]; then
    helm="$root/.tools/helm/$helm_version/helm"
    [[ -x "$helm" ]] || die "$helm is missing: run scripts/setup-helm.sh"
    work="$(mktemp -d)"
    mkdir -p "$work/linux-amd64"
    cp "$helm" "$work/linux-amd64/helm"
    tar -C "$work" --owner=0 --group=0 -czf "$archive" linux-amd64
    rm -rf "$work"
    sha256sum "$archive" | cut -d' ' -f1 >"$archive.sha256"
fi
log "ready: $builder_image, $runtime_image, $(basename "$archive")"
