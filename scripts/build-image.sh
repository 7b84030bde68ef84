#!/usr/bin/env bash
# Builds the image from the Dockerfile *with* its Rust stage (`cargo build --release` inside
# the builder), here where no registry is reachable: the builder base is the local Debian
# rootfs of scripts/setup-image.sh with gcc, pkg-config and libssl-dev from Debian and this
# machine's Rust toolchain copied in; crates come from crates.io. Prints the time and the
# image's size. CI does not run this (it takes minutes on two cores); the image test
# (tests/tests/image.rs) builds the same Dockerfile with a prebuilt binary instead.
#
#   scripts/build-image.sh [TAG]        default localhost/tidemark:dev, in .tools/image/storage
#
# Intermediate layers are not kept: buildah's vfs store copies each one in full (with the
# toolchain and cargo's target directory, a layered build filled 15 GB here). With
# TIDEMARK_IMAGE_LAYERS=true they are, and a second run after a change of the sources
# reuses the dependency layer, as BuildKit does.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/image"
tag="${1:-localhost/tidemark:dev}"
rust_image=localhost/tidemark-test/rust:bookworm

log() { printf 'build-image: %s\n' "$*" >&2; }

"$root/scripts/setup-image.sh"
buildah=(buildah --root "$dir/storage" --runroot "$dir/run" --storage-driver vfs)

if ! "${buildah[@]}" inspect --type image "$rust_image" >/dev/null 2>&1; then
    toolchain="$(rustc --print sysroot)"
    log "making $rust_image: Debian's gcc, pkg-config, libssl-dev; the Rust toolchain at $toolchain"
    ctr="$("${buildah[@]}" from --pull=never localhost/tidemark-test/builder:bookworm)"
    "${buildah[@]}" run --isolation chroot "$ctr" -- apt-get update -qq
    "${buildah[@]}" run --isolation chroot --env DEBIAN_FRONTEND=noninteractive "$ctr" -- \
        apt-get install -y -qq --no-install-recommends gcc libc6-dev make pkg-config libssl-dev zlib1g-dev >/dev/null
    tar -C "$toolchain" --exclude=./share/doc -cf "$dir/toolchain.tar" .
    "${buildah[@]}" add "$ctr" "$dir/toolchain.tar" /usr/local/rust >/dev/null
    rm -f "$dir/toolchain.tar"
    "${buildah[@]}" config \
        --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env CARGO_HOME=/usr/local/cargo "$ctr"
    "${buildah[@]}" commit --quiet --rm "$ctr" "$rust_image" >/dev/null
fi

archive="helm-v4.1.4-linux-amd64.tar.gz"
(cd "$dir" && exec python3 -m http.server 0 --bind 127.0.0.1) >"$dir/http.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
port=""
for _ in $(seq 50); do
    port="$(grep -o 'port [0-9]*' "$dir/http.log" | grep -o '[0-9]*' || true)"
    [[ -z "$port" ]] || break
    sleep 0.1
done
[[ -n "$port" ]] || { log "the local HTTP server for the helm archive did not start"; exit 1; }

# The builder's RUN steps see this machine's CA bundle: cargo reaches crates.io through
# whatever TLS interception the machine's network has.
trust=()
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    trust=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi

log "building $tag with cargo inside the builder (this takes minutes)"
start=$(date +%s)
"${buildah[@]}" build --isolation chroot --pull=never --layers="${TIDEMARK_IMAGE_LAYERS:-false}" "${trust[@]}" -f "$root/Dockerfile" -t "$tag" \
    --build-arg "RUST_IMAGE=$rust_image" \
    --build-arg "RUNTIME_IMAGE=localhost/tidemark-test/runtime:bookworm" \
    --build-arg "HELM_URL=http://127.0.0.1:$port/$archive" \
    --build-arg "HELM_SHA256_AMD64=$(cat "$dir/$archive.sha256")" \
    --build-arg "REVISION=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)" \
    "$root" >&2
end=$(date +%s)
log "built $tag in $((end - start)) s"
"${buildah[@]}" images "$tag" >&2
ctr="$("${buildah[@]}" from --pull=never "$tag")"
mnt="$("${buildah[@]}" mount "$ctr")"
log "tidemark: $(du -h "$mnt/usr/local/bin/tidemark" | cut -f1), helm: $(du -h "$mnt/usr/local/bin/helm" | cut -f1), runtime base: $("${buildah[@]}" images --format '{{.Size}}' localhost/tidemark-test/runtime:bookworm)"
"${buildah[@]}" run --isolation chroot "$ctr" -- tidemark --version >&2
"${buildah[@]}" rm "$ctr" >/dev/null
