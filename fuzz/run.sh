#!/usr/bin/env bash
# `make fuzz`: run every cargo-fuzz target for FUZZ_SECONDS (default 60) each, one after
# the other, and print the executions per target. Exits non-zero if any target found a
# crash (the input is kept in fuzz/artifacts/<target>/; reproduce it with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-...`).
#
#   fuzz/run.sh [target ...]          FUZZ_SECONDS=300 fuzz/run.sh sse usage
#
# Corpora grow in fuzz/corpus/<target> (not committed) from the seeds in fuzz/seeds.
# Built with debug assertions and overflow checks (-a) and without a sanitizer (-s none):
# the code is safe Rust, and what matters is that no input can panic.
set -u -o pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
ALL=(request_body sse usage config identity)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")

dict_for() {
  case "$1" in
    sse) echo fuzz/dict/sse.dict ;;
    identity) echo fuzz/dict/headers.dict ;;
    *) echo fuzz/dict/json.dict ;;
  esac
}

mkdir -p fuzz/logs
echo "building the fuzz targets (cargo +$TOOLCHAIN fuzz build -a -s none)"
cargo "+$TOOLCHAIN" fuzz build -a -s none || { echo "fuzz build failed"; exit 2; }
status=0
summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/logs/$t.log"
  echo "fuzzing $t for ${SECONDS_EACH}s (log: $log)"
  cargo "+$TOOLCHAIN" fuzz run -a -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -dict="$(dict_for "$t")" -print_final_stats=1 \
    -max_len=65536 -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  [ -n "$runs" ] || runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [ $rc -ne 0 ]; then
    status=1
    summary+=("$(printf '%-13s CRASH (exit %s) after %s runs: see %s and fuzz/artifacts/%s' "$t" "$rc" "${runs:-?}" "$log" "$t")")
    grep -m1 -A3 'panicked at\|ERROR: libFuzzer' "$log" | sed 's/^/    /'
  else
    summary+=("$(printf '%-13s ok  %12s runs in %ss, coverage %s, corpus %s' "$t" "${runs:-?}" "$SECONDS_EACH" "${cov:-?}" "$corpus")")
  fi
done
echo
echo "fuzz summary (FUZZ_SECONDS=$SECONDS_EACH):"
printf '  %s\n' "${summary[@]}"
exit $status
