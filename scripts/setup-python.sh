#!/usr/bin/env bash
# Creates (or refreshes) the repo's Python virtualenv, `.venv/` at the repository root, with
# check-jsonschema, which validates the fleet-repo-example manifests against the generated
# JSON Schema (schema/tests/validate.rs): an independent validator for our schema.
#
# Idempotent: when `.venv/` already holds exactly these requirements (a stamp file records
# their hash and the interpreter), it does nothing and only prints the venv's path.
# Needs CPython 3.11 (python3.11, or python3 if that is 3.11; override with PYTHON=...)
# and a reachable PyPI. Prints the venv path on stdout; progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.tidemark-requirements.sha256"

# Exact versions, verified together. Change them here only.
requirements="check-jsonschema==0.39.0"

log() { printf 'setup-python: %s\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.11 python3; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' \
            >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

python="$(find_python)" || {
    log "no CPython 3.11 with the venv and ensurepip modules found (tried: ${PYTHON:-} python3.11 python3)"
    log "install it (Debian: apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11"
    exit 1
}

# The stamp covers the requirements and the interpreter the venv was made from.
want="$(printf '%s\n%s\n' "$requirements" "$("$python" -c 'import sys; print(sys.version)')" \
    | sha256sum | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" \
    && -x "$venv/bin/check-jsonschema" ]]; then
    printf '%s\n' "$venv"
    exit 0
fi

# Made anew, so that it holds these requirements and nothing left over from older ones.
log "creating $venv with $python"
rm -rf "$venv"
"$python" -m venv "$venv"

rm -f "$stamp"
log "installing: $(echo "$requirements" | tr '\n' ' ')"
req_file="$(mktemp)"
trap 'rm -f "$req_file"' EXIT
printf '%s\n' "$requirements" >"$req_file"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req_file" >&2

# Fail here, not in a test, if an install is broken.
"$venv/bin/check-jsonschema" --version >/dev/null

printf '%s\n' "$want" >"$stamp"
log "ready"
printf '%s\n' "$venv"
