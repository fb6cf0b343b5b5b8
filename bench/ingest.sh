#!/usr/bin/env bash
# Ingest benchmark (release build): prints events/s for
#   (a) an NDJSON file -> the lake's Parquet (decode + encode), beside DuckDB's
#       COPY (SELECT * FROM read_json(FILE, sample_size=-1)) TO OUT (FORMAT parquet) on the same file
#       (the whole file sampled: the events' optional fields appear late), and the ratio;
#   (b) Kafka -> the lake end to end, the broker on this machine in its own process: Tansu
#       (its SQLite engine; the first KAFKA_ROWS events) and librdkafka's mock cluster
#       (examples/mock_broker.rs, in memory; every event), which shows the ingester's own rate.
# Usage: bench/ingest.sh [SCALE]   (default 0.002: about 4.5 million events)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-0.002}"
CACHE="$HOME/.cache/spacepulse"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
cargo build --release --bin spacepulse --example mock_broker >&2
BIN="$CARGO_TARGET_DIR/release/spacepulse"
PY="$CACHE/venv/bin/python"
[ -x "$PY" ] || { echo "run scripts/test once first: it makes the Python venv with DuckDB" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"; kill ${TANSU_PID:-} ${MOCK_PID:-} 2>/dev/null || true' EXIT

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
  --storage-engine "sqlite://tansu.db" >"$WORK/tansu.log" 2>&1) &
TANSU_PID=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
"$TANSU" topic create events --broker "tcp://127.0.0.1:$PORT" --partitions 32 >&2
# Tansu 0.6's SQLite engine serves consumers a few thousand messages a second at best
# (docs/ingest.md), so (b) takes the first KAFKA_ROWS events (default 50,000; 32 partitions, since each of its fetches reads a partition's whole remaining log).
head -n "${KAFKA_ROWS:-50000}" "$FILE" > "$WORK/kafka.ndjson"
KROWS=$(wc -l < "$WORK/kafka.ndjson")
"$BIN" datasets produce --brokers "127.0.0.1:$PORT" --topic events --input "$WORK/kafka.ndjson" >&2
t0=$(date +%s.%N)
"$BIN" ingest --brokers "127.0.0.1:$PORT" --topic events --lake "$WORK/lake-b" --until-caught-up >&2
t1=$(date +%s.%N)
KAFKA=$(echo "$t1 - $t0" | bc -l)
printf "(b) Kafka (Tansu, SQLite engine) -> Parquet: %d events in %.2f s = %.0f events/s end to end\n" "$KROWS" "$KAFKA" "$(echo "$KROWS / $KAFKA" | bc -l)"

kill "$TANSU_PID"; unset TANSU_PID
"$CARGO_TARGET_DIR/release/examples/mock_broker" 128 >"$WORK/mock.addr" &
MOCK_PID=$!
for _ in $(seq 100); do [ -s "$WORK/mock.addr" ] && break; sleep 0.1; done
MOCK=$(head -n1 "$WORK/mock.addr")
"$BIN" datasets produce --brokers "$MOCK" --topic events --input "$FILE" >&2
t0=$(date +%s.%N)
SUMMARY=$("$BIN" ingest --brokers "$MOCK" --topic events --lake "$WORK/lake-c" --until-caught-up)
t1=$(date +%s.%N)
echo "$SUMMARY" >&2
GOT=$(echo "$SUMMARY" | sed -n 's/^ingested \([0-9]*\) events.*, \([0-9]*\) rejected.*/\1 + \2/p' | bc)
# The mock drops a partition's oldest batches beyond 5 MiB: a short count is no measurement.
[ "$GOT" = "$ROWS" ] || { echo "(b) mock: the lake got $GOT of $ROWS events (the mock's retention): use more partitions" >&2; exit 1; }
MOCKS=$(echo "$t1 - $t0" | bc -l)
printf "(b) Kafka (librdkafka's mock cluster, another process) -> Parquet: %d events in %.2f s = %.0f events/s end to end\n" "$ROWS" "$MOCKS" "$(echo "$ROWS / $MOCKS" | bc -l)"
