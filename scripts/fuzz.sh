#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for SECONDS each (default 60) on the nightly
# toolchain, growing fuzz/corpus/<target>/, and prints executions and crashes per target.
# Crashing inputs land in fuzz/artifacts/<target>/; copy one into fuzz/corpus/<target>/
# (named seed-*) once fixed, and the test suite replays it for ever.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs: rustup's nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`),
# both installed here on first use.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# No sanitizer: the code under test is safe Rust; a panic is what a crash is here.
cargo +nightly fuzz build -s none -O
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
status=0
for t in "${targets[@]}"; do
  log="$(mktemp)"
  if cargo +nightly fuzz run -s none -O "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    result="no crash"
  else
    result="CRASH (see fuzz/artifacts/$t/)"
    status=1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  printf '%-16s %12s executions in %ss  %s\n' "$t" "$runs" "$seconds" "$result"
  [ "$status" -eq 0 ] || tail -30 "$log"
  rm -f "$log"
done
exit "$status"
