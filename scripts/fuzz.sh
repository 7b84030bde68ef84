#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for SECONDS each and prints executions and crashes per
# target; exits non-zero when any target crashed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]        long runs: optimised build, grows fuzz/corpus/
#   scripts/fuzz.sh --ci [SECONDS] [TARGET...]   the test command's brief run (default 15 s):
#                                                unoptimised build (builds in a third of the
#                                                time), corpus copied so the tree is untouched
#
# No sanitizer (`-s none`): the code under test is safe Rust, a panic is what a crash is here,
# and without a sanitizer cargo-fuzz works on the stable toolchain. Crashing inputs land in
# fuzz/artifacts/<target>/; copy one into fuzz/corpus/<target>/ (named seed-*) once fixed, and
# the test suite replays it for ever (tests/tests/fuzz_corpus.rs).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`), installed here on first use.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

ci=false
if [ "${1:-}" = "--ci" ]; then
  ci=true
  shift
fi
if $ci; then seconds="${1:-15}"; else seconds="${1:-60}"; fi
shift || true

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
if $ci; then profile=(--dev); else profile=(-O); fi
cargo fuzz build -s none "${profile[@]}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
status=0
for t in "${targets[@]}"; do
  log="$(mktemp)"
  corpus="corpus/$t"
  if $ci; then
    corpus="$(mktemp -d)"
    cp -r "corpus/$t/." "$corpus/"
  fi
  if cargo fuzz run -s none "${profile[@]}" "$t" "$corpus" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    result="no crash"
    crashed=false
  else
    result="CRASH (see fuzz/artifacts/$t/)"
    crashed=true
    status=1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  printf '%-16s %12s executions in %ss  %s\n' "$t" "$runs" "$seconds" "$result"
  if $crashed; then tail -30 "$log"; fi
  rm -f "$log"
  if $ci; then rm -rf "$corpus"; fi
done
exit "$status"
