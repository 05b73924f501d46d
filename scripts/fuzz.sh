#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after another, and prints
# libFuzzer's final stats per target. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# SECONDS defaults to 600; SANITIZER (address, none, ...) defaults to address.
# Needs `cargo install cargo-fuzz`; RUSTC_BOOTSTRAP lets a stable toolchain take -Zsanitizer.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-600}
shift $(($# > 0 ? 1 : 0))
SANITIZER=${SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

cd "$ROOT"
if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi
if (($# > 0)); then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi
LOGS=fuzz/target/logs
mkdir -p "$LOGS"

cargo fuzz build --sanitizer "$SANITIZER"

failed=()
for target in "${TARGETS[@]}"; do
    log="$LOGS/$target.log"
    printf '\n==> %s: %ss, log in %s\n' "$target" "$SECONDS_EACH" "$log"
    # One process (no -jobs): the machine is shared. New inputs go to fuzz/corpus/TARGET,
    # crashes to fuzz/artifacts/TARGET.
    status=0
    cargo fuzz run --sanitizer "$SANITIZER" "$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|slowest_unit_time_sec|peak_rss_mb)' "$log" || true
    if ((status != 0)); then
        failed+=("$target")
        echo "FAILED (exit $status):"
        grep -E '^error|panicked at|ERROR: |SUMMARY: |Test unit written to' "$log" | head -n 10 || true
    fi
done

printf '\n'
if ((${#failed[@]} > 0)); then
    echo "targets that failed: ${failed[*]}"
    exit 1
fi
echo "all targets ran ${SECONDS_EACH}s without a crash, hang or leak"
