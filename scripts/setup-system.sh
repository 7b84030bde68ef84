#!/usr/bin/env bash
# Installs the system packages the tests (default) or only the demo (`setup-system.sh demo`)
# need, when they are missing (Debian's apt-get; nothing is installed when all is there):
#   pkg-config, libssl-dev                         building openssl-sys         (tests, demo)
#   npm, unzip                                     scripts/setup-helm.sh        (tests, demo)
#   git                                            fleet repos                  (tests, demo)
#   git with `git daemon` and `git http-backend`   git servers of the e2e tests (tests)
#   python3 with venv                              .venv/ (check-jsonschema),
#                                                  http.server in the e2e tests (tests)
#   openssh-server (sshd, ssh-keygen)              git over ssh:// in the tests (tests)
#   openssl                                        CA and certificates of the TLS tests (tests)
#   docker-registry, apache2-utils (htpasswd)      the OCI registry of the private-chart
#                                                  tests (tests)
#   buildah, debootstrap                           the image test builds the Dockerfile
#                                                  from local bases (scripts/setup-image.sh) (tests)
#   binutils (strip)                               the image test's stripped binary
#                                                  (scripts/build-prebuilt.sh) (tests)
#   g++                                            libFuzzer, which cargo-fuzz builds
#                                                  (scripts/fuzz.sh --ci) (tests)
# The tests need kubectl too, which is not a Debian package: it is checked, not installed.
#
# Runs apt-get directly as root, through sudo otherwise (when sudo exists); without either it
# names what is missing and stops.
set -euo pipefail

log() { printf 'setup-system: %s\n' "$*" >&2; }

for_what="${1:-tests}"
case "$for_what" in
tests | demo) ;;
*)
    log "usage: setup-system.sh [tests|demo]"
    exit 2
    ;;
esac

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
command -v git >/dev/null 2>&1 || need+=(git)
if [[ "$for_what" == tests ]]; then
    if command -v git >/dev/null 2>&1; then
        [[ -x "$(git --exec-path)/git-daemon" ]] || need+=(git-daemon-sysvinit)
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        need+=(python3 python3-venv)
    elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        need+=(python3-venv)
    fi
    { [[ -x /usr/sbin/sshd ]] && command -v ssh-keygen >/dev/null 2>&1; } || need+=(openssh-server)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
    command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
    command -v buildah >/dev/null 2>&1 || need+=(buildah)
    command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
    command -v strip >/dev/null 2>&1 || need+=(binutils)
    command -v g++ >/dev/null 2>&1 || need+=(g++)
fi

if [[ "${#need[@]}" -gt 0 ]]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing: ${need[*]} (Debian package names); this machine has no apt-get: install them by hand"
        exit 1
    fi
    if [[ "$EUID" -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        log "missing: ${need[*]}; installing them needs root (no sudo here): apt-get install ${need[*]}"
        exit 1
    fi
    log "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if [[ "$for_what" == tests ]] && ! command -v kubectl >/dev/null 2>&1; then
    log "kubectl is missing: the e2e tests use it as an independent client (any v1.2x; it is not a Debian package)"
    exit 1
fi
