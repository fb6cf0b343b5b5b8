#!/usr/bin/env bash
# Ingest benchmark (release build): prints events/s for
#   (a) an NDJSON file -> the lake's Parquet (decode + encode), beside DuckDB's
#       COPY (SELECT * FROM read_json(FILE, sample_size=-1)) TO OUT (FORMAT parquet) on the same file
#       (the whole file sampled: the events' optional fields appear late), and the ratio;
#   (b) Kafka -> the lake end to end, every event, the broker (Tansu) on this machine in its
#       own process, on its in-memory engine (its SQLite engine reads a partition's whole
#       remaining log on every fetch, docs/ingest.md). The ingester's peak memory (RSS) is
#       printed beside. (librdkafka's mock cluster, examples/mock_broker.rs, cannot hold the
#       file: it drops a partition's oldest batches beyond a few MiB.)
# Usage: bench/ingest.sh [SCALE]   (default 0.002: about 4.5 million events)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-0.002}"
CACHE="$HOME/.cache/spacepulse"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
cargo build --release --bin spacepulse >&2
BIN="$CARGO_TARGET_DIR/release/spacepulse"
PY="$CACHE/venv/bin/python"
[ -x "$PY" ] || { echo "run scripts/test once first: it makes the Python venv with DuckDB" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"; kill ${TANSU_PID:-} 2>/dev/null || true' EXIT

"$BIN" datasets generate --scale "$SCALE" --days 7 --out "$WORK/data" >&2
FILE="$WORK/data/events.ndjson"
ROWS=$(wc -l < "$FILE")
MB=$(( $(stat -c %s "$FILE") / 1000000 ))
echo "input: $ROWS events, $MB MB of NDJSON (spacepulse datasets generate --scale $SCALE --days 7)"

t0=$(date +%s.%N)
"$BIN" ingest --from-file "$FILE" --lake "$WORK/lake-a" >&2
t1=$(date +%s.%N)
OURS=$(echo "$t1 - $t0" | bc -l)

DUCK=$("$PY" - "$FILE" "$WORK/duck.parquet" <<'PY'
import sys, time, duckdb
con = duckdb.connect()
t = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_json('{sys.argv[1]}', sample_size=-1)) TO '{sys.argv[2]}' (FORMAT parquet)")
print(time.perf_counter() - t)
PY
)
printf "(a) NDJSON -> Parquet: spacepulse %.2f s = %.0f events/s; DuckDB %.2f s = %.0f events/s; spacepulse is %.2fx DuckDB's speed\n" \
  "$OURS" "$(echo "$ROWS / $OURS" | bc -l)" "$DUCK" "$(echo "$ROWS / $DUCK" | bc -l)" "$(echo "$DUCK / $OURS" | bc -l)"

TANSU="${TANSU:-$CACHE/tansu/bin/tansu}"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine "memory://tansu/" >"$WORK/tansu.log" 2>&1) &
TANSU_PID=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
"$TANSU" topic create events --broker "tcp://127.0.0.1:$PORT" --partitions 8 >&2
"$BIN" datasets produce --brokers "127.0.0.1:$PORT" --topic events --input "$FILE" >&2
ingest_kafka() { # BROKERS LAKE NAME: ingests to the end, checks the count, prints the rate
  local t0 t1 summary got secs
  t0=$(date +%s.%N)
  summary=$(/usr/bin/time -f "peak RSS %M KB" "$BIN" ingest --brokers "$1" --topic events --lake "$2" --until-caught-up 2>"$WORK/time.txt")
  t1=$(date +%s.%N)
  echo "$summary" >&2
  got=$(echo "$summary" | sed -n 's/^ingested \([0-9]*\) events.*, \([0-9]*\) rejected.*/\1 + \2/p' | bc)
  # A short count is no measurement.
  [ "$got" = "$ROWS" ] || { echo "(b) $3: the lake got $got of $ROWS events" >&2; exit 1; }
  secs=$(echo "$t1 - $t0" | bc -l)
  printf "(b) Kafka (%s) -> Parquet: %d events in %.2f s = %.0f events/s end to end, %s\n" \
    "$3" "$ROWS" "$secs" "$(echo "$ROWS / $secs" | bc -l)" "$(tail -n1 "$WORK/time.txt")"
}
ingest_kafka "127.0.0.1:$PORT" "$WORK/lake-b" "Tansu 0.6, in-memory engine, 8 partitions"
