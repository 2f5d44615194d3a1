#!/usr/bin/env bash
# Fuzzes every decoder of device input (wire/fuzz: native, transistor, osmand, owntracks,
# overland, seed) for a short time each, with cargo fuzz (libFuzzer + AddressSanitizer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
#
# Installs cargo-fuzz from crates.io when it is missing. cargo fuzz passes nightly-only
# flags (-Z sanitizer, sancov) to rustc; RUSTC_BOOTSTRAP=1 lets the pinned stable toolchain
# take them, so CI needs no second toolchain.
#
# A crash, a leak, an allocation of 256 MB or more (-malloc_limit_mb) or a resident size
# above 512 MB (-rss_limit_mb) fails the run: a decoder must stay bounded whatever it reads.
# The failing input is left in wire/fuzz/artifacts/<target>/ (replay it with
# `cargo fuzz run <target> <file>` in wire/fuzz). Prints the executions run per target.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../wire/fuzz"

secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(native transistor osmand owntracks overland seed)
fi

export RUSTC_BOOTSTRAP=1
# The instrumented build (about 3 to 5 minutes from nothing) is kept outside the checkout,
# so CI's fresh clones on one machine build only what changed, like cargo's own registry.
target_dir="${LOCUS_FUZZ_TARGET_DIR:-$HOME/.cache/locus/fuzz-target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi

echo "[fuzz] cargo fuzz build (release, AddressSanitizer)"
started=$(date +%s)
cargo fuzz build --target-dir "$target_dir"
echo "[fuzz] built in $(($(date +%s) - started)) s"

summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log="$(mktemp)"
  echo "[fuzz] $t: ${secs} s"
  if cargo fuzz run --target-dir "$target_dir" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=256 -max_len=16384 \
    -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed=1
    tail -n 40 "$log" >&2
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  summary+=("$(printf '%-11s %10s executions  peak RSS %4s MB  %s' "$t" "${runs:-?}" "${rss:-?}" "$result")")
  rm -f "$log"
done

echo "[fuzz] summary (${secs} s per target)"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "[fuzz] FAILED: a decoder crashed or went over a memory bound (see wire/fuzz/artifacts/)" >&2
  exit 1
fi
