#!/usr/bin/env bash
# Scale benchmark (release build): one report day with at least 100 million distinct users.
# Generates one day of a pool of USERS users with hashed 63-bit ids (`datasets generate --days 1
# --id-space u64 --users USERS --format parquet`; about 35% of the pool is active on a day),
# ingests the Parquet file (`ingest --from-file`), runs `jobs run --full activity` under
# /usr/bin/time, and prints its time and peak RSS, the exact DAU of the activity table beside
# the manifest's days[0].distinct_users (a MISMATCH line and exit 1 when they differ), the bytes
# per distinct user of metrics/activity and of the user dictionary (metrics/user_codes) on disk,
# and a linear extrapolation to a day of 300 million distinct users.
#
# WARNING: this is big. At the default 300 million users (about 105 million active) expect
# roughly 200 million events: several GB for the generated Parquet file and as much again for
# the lake (the file is deleted once ingested unless KEEP=1), the user dictionary (about 9 bytes
# a user), and several GB of RAM in the activity job
# and the ingest; plan on 20+ GB free disk under the work directory and 12+ GB free RAM on a
# quiet machine, and tens of minutes. The script stops before generating when the disk looks
# too small (about 70 bytes per pool user; FORCE=1 goes on anyway) and warns about RAM. The
# work directory (BENCH_DIR, default a new one under /tmp) is deleted at the end unless
# BENCH_DIR was given.
# Usage: bench/scale.sh [USERS]   (default 300000000)
#   BENCH_DIR=D  work in D and keep it; KEEP=1 keeps the generated Parquet file; FORCE=1 skips
#   the disk check.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${1:-300000000}"
CMD="bench/scale.sh $USERS"
for v in FORCE KEEP BENCH_DIR; do
  if [ -n "${!v:-}" ]; then CMD="$v=${!v} $CMD"; fi
done
CACHE="$HOME/.cache/spacepulse"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
cargo build --release --bin spacepulse >&2
BIN="$CARGO_TARGET_DIR/release/spacepulse"
PY="$CACHE/venv/bin/python"
[ -x "$PY" ] || { echo "run scripts/test once first: it makes the Python venv" >&2; exit 1; }
if [ -n "${BENCH_DIR:-}" ]; then
  WORK="$BENCH_DIR"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi
LAKE="$WORK/lake"
echo "command: $CMD"

# Room: about 70 bytes per pool user on disk (the Parquet file, the lake, the metric tables),
# a rough estimate; RAM is only warned about.
NEED_GB=$(( USERS * 70 / 1000000000 + 1 ))
AVAIL_GB=$(( $(df -Pk "$WORK" | awk 'NR == 2 { print $4 }') / 1000000 ))
MEM_GB=$(( $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) / 1000000 ))
echo "room: $AVAIL_GB GB free under $WORK (about $NEED_GB GB needed), $MEM_GB GB of RAM available"
if [ "$AVAIL_GB" -lt "$NEED_GB" ] && [ -z "${FORCE:-}" ]; then
  echo "not enough disk under $WORK for $USERS users (set BENCH_DIR elsewhere, or FORCE=1)" >&2
  exit 1
fi
if [ "$MEM_GB" -lt $(( USERS * 40 / 1000000000 + 1 )) ]; then
  echo "warning: $MEM_GB GB of RAM available; the activity job may need more (about 40 bytes per pool user, a guess)" >&2
fi

timed() { # LABEL COMMAND...: runs it under /usr/bin/time, prints LABEL, seconds and peak RSS
  /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "${@:2}" >&2
  read -r secs kb < "$WORK/time.txt"
  printf "%s: %.1f s, peak RSS %.2f GB\n" "$1" "$secs" "$(echo "$kb / 1000000" | bc -l)"
}

GEN=(datasets generate --days 1 --id-space u64 --users "$USERS" --format parquet --out "$WORK/data")
if [ ! -d "$LAKE/events" ]; then
  timed "spacepulse ${GEN[*]/#$WORK/DIR}" "$BIN" "${GEN[@]}"
  FILE="$WORK/data/events.parquet"
  echo "input: $(stat -c %s "$FILE" | awk '{ printf "%.2f GB", $1 / 1e9 }') of Parquet"
  timed "spacepulse ingest --from-file DIR/data/events.parquet" "$BIN" ingest --from-file "$FILE" --lake "$LAKE"
  if [ -z "${KEEP:-}" ]; then rm -f "$FILE"; fi
fi
read -r EVENTS EXPECTED POOL < <("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(m["rows"], m["days"][0]["distinct_users"], m["user_pool"])' "$WORK/data/manifest.json")
echo "input (manifest): $EVENTS events, $EXPECTED distinct users on the day, of a pool of $POOL"
if [ "$EXPECTED" -lt 100000000 ]; then
  echo "warning: the day has fewer than 100 million distinct users: raise USERS" >&2
fi

rm -rf "$LAKE/metrics/activity" "$LAKE/metrics/user_codes"
/usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$BIN" jobs run --lake "$LAKE" --full --json activity > "$WORK/job.json"
read -r SECS KB < "$WORK/time.txt"
JOB_SECS=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["seconds"])' "$WORK/job.json")
DAU=$("$BIN" sql --lake "$LAKE" --format csv \
  "SELECT dau FROM activity WHERE breakdown = 'total' AND segment = 'all'" | tail -n +2)
# One live version: every data file of the table is the day's (the Delta log is counted apart).
TABLE=$(find "$LAKE/metrics/activity" -type f -name '*.parquet' -not -path '*/_delta_log/*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
LOG=$(find "$LAKE/metrics/activity" -type f -path '*/_delta_log/*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
CODES=$(find "$LAKE/metrics/user_codes" -type f -name '*.parquet' -not -path '*/_delta_log/*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
printf "jobs run --full activity: %.1f s (the job's own: %.1f s), peak RSS %.2f GB\n" "$SECS" "$JOB_SECS" "$(echo "$KB / 1000000" | bc -l)"
printf "exact DAU: activity %s, manifest %s\n" "$DAU" "$EXPECTED"
printf "metrics/activity on disk: %.2f GB (10 segments, bitmaps and sketches; log %.1f MB besides) = %.1f bytes per distinct user\n" \
  "$(echo "$TABLE / 1000000000" | bc -l)" "$(echo "$LOG / 1000000" | bc -l)" "$(echo "$TABLE / $DAU" | bc -l)"
printf "metrics/user_codes on disk: %.2f GB = %.1f bytes per coded user (once per user, not per day)\n" \
  "$(echo "$CODES / 1000000000" | bc -l)" "$(echo "$CODES / $DAU" | bc -l)"
F=$(echo "300000000 / $DAU" | bc -l)
printf "extrapolated linearly to a day of 300 million distinct users (x%.2f): about %.0f s, peak RSS %.1f GB, %.1f GB of metrics/activity for the day\n" \
  "$F" "$(echo "$SECS * $F" | bc -l)" "$(echo "$KB * $F / 1000000" | bc -l)" "$(echo "$TABLE * $F / 1000000000" | bc -l)"
if [ "$DAU" != "$EXPECTED" ]; then
  echo "MISMATCH: the activity table's DAU $DAU, the manifest's $EXPECTED"
  exit 1
fi
