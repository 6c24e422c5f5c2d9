#!/usr/bin/env bash
# CI's bounded fuzzing: runs each libFuzzer target of the sanitized tree (built by
# tests/sanitized/build.sh: clang, ASan + UBSan everywhere) from the committed seeds for SECONDS
# seconds. Any crash, leak, sanitizer report or timeout fails it, and the input that did it is
# printed.
# Usage: smoke.sh <source dir> <work dir> [seconds]
set -euo pipefail
src=$1 work=$2 seconds=${3:-30}
status=0
for t in manifest replicate record image; do
  corpus="$work/corpus-$t"
  rm -rf "$corpus" && mkdir -p "$corpus"
  if "$work/build/bin/fuzz_$t" "$corpus" "$src/tests/fuzz/corpus/$t" -max_total_time="$seconds" \
       -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/$t-" \
       > "$work/$t.log" 2>&1; then
    echo "fuzz_$t: $(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/$t.log" | cut -d' ' -f2) runs, no crash"
  else
    echo "fuzz_$t FAILED:"; tail -n 60 "$work/$t.log"; status=1
  fi
done
exit $status
