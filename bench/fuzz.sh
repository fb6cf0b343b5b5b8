#!/usr/bin/env bash
# Fuzzing benchmark (release build): each fuzz target (fuzz/src/lib.rs) RUNS times (default ten
# million) over its checked-in corpus (fuzz/corpus/TARGET/) and mutations of it, two targets at
# a time on the two cores. Prints each target's runs, time, accepted inputs, internal errors and
# crashes; a crash stops that target with exit 1 and its input in fuzz/artifacts/TARGET/.
# Usage: bench/fuzz.sh [RUNS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-10000000}"
SEED="${2:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spacepulse/target}"
cargo build --release --workspace --bins >&2
BIN="$CARGO_TARGET_DIR/release/spacepulse-fuzz"
echo "command: bench/fuzz.sh $RUNS $SEED"
status=0
pair() {
  "$BIN" "$1" --runs "$RUNS" --seed "$SEED" & local a=$!
  "$BIN" "$2" --runs "$RUNS" --seed "$SEED" & local b=$!
  wait "$a" || status=1
  wait "$b" || status=1
}
pair event_decoder sketch
pair sql report_query
exit $status
