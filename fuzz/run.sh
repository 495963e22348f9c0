#!/usr/bin/env bash
# Runs every fuzz target from its seed corpus (fuzz/corpus/TARGET) with the libFuzzer options given,
# e.g. `bash fuzz/run.sh -max_total_time=30` or `bash fuzz/run.sh -runs=10000000`; one target with
# FUZZ_TARGETS=request. Inputs found along the way go to target/fuzz-corpus, crashes to
# target/fuzz-artifacts; a crash or a hang fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# Without a sanitizer, cargo fuzz needs no nightly flags: the stable toolchain builds the targets.
read -r -a targets <<<"${FUZZ_TARGETS:-request payment_header eip712 config body_override mcp}"
for target in "${targets[@]}"; do
  mkdir -p "target/fuzz-corpus/$target" "target/fuzz-artifacts/$target"
  echo "-- fuzz target $target"
  cargo fuzz run --sanitizer none --target-dir target/fuzz "$target" \
    "target/fuzz-corpus/$target" "fuzz/corpus/$target" -- \
    -artifact_prefix="target/fuzz-artifacts/$target/" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"
done
