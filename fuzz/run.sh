#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds (default 60) over its committed seeds; prints the
# executions and whether a crash was found. Needs `cargo install cargo-fuzz`; on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags. No sanitizer (ASan needs
# nightly std); panics, assertion failures and (with --debug-assertions) integer overflows are
# what the targets catch.
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=${*:-batch_decoder legacy_decoder proc_parsers line_protocol config_loader}
export RUSTC_BOOTSTRAP=1
for t in $targets; do
  mkdir -p "corpus/$t"
  log="target/fuzz-$t.log"
  mkdir -p target
  cargo fuzz run --sanitizer none -O --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1
  rc=$?
  runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' | tail -1)
  echo "$t: rc=$rc runs=${runs:-?} secs=$secs crash=$([ $rc -eq 0 ] && echo no || echo yes, see $log)"
done
