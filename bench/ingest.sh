#!/usr/bin/env bash
# Ingest benchmark (release build) on data of the platform's shape (issue #19: a user pool of
# scale x 600 million, heavy-tailed activity, QQ-style ids), prints events/s for
#   (a) an NDJSON file -> the lake's Parquet (validate, decode, encode), beside DuckDB's
#       COPY (SELECT ... FROM read_json(FILE, format = 'newline_delimited', columns = {...}))
#       TO OUT (FORMAT parquet) on the same file, every field of the contract with an explicit
#       type (no sampling, no inference), and the ratio; then the bytes on disk of the lake's
#       events table beside DuckDB's Parquet file;
#   (b) Kafka -> the lake end to end, every event, the broker (Tansu) on this machine in its
#       own process, on its in-memory engine (its SQLite engine reads a partition's whole
#       remaining log on every fetch, docs/ingest.md). The ingester's peak memory (RSS) is
#       printed beside. (librdkafka's mock cluster, examples/mock_broker.rs, cannot hold the
#       file: it drops a partition's oldest batches beyond a few MiB.)
# Usage: bench/ingest.sh [SCALE | ROWS]   (default scale 0.002: about 6.9 million events)
#   An argument of 1000 or more is ROWS, lines of NDJSON: the scale is then ROWS / (20,000,000 x
#   DAYS / 30) x 0.001, so that the shaped parts leave room for the background (the generator
#   needs about 11 million lines per 0.001 of scale over 30 days); SCALE=S overrides it.
#   DAYS=D report days (default 7).
set -euo pipefail
cd "$(dirname "$0")/.."
ARG="${1:-0.002}"
CMD="bench/ingest.sh ${1:-}"
for v in DAYS SCALE; do
  if [ -n "${!v:-}" ]; then CMD="$v=${!v} $CMD"; fi
done
DAYS="${DAYS:-7}"
GEN=(datasets generate --days "$DAYS")
if [[ "$ARG" =~ ^[0-9]+$ ]] && [ "$ARG" -ge 1000 ]; then
  SCALE="${SCALE:-$(awk -v r="$ARG" -v d="$DAYS" 'BEGIN { printf "%.6g", r / (20000000 * d / 30) * 0.001 }')}"
  GEN+=(--rows "$ARG" --scale "$SCALE")
else
  GEN+=(--scale "${SCALE:-$ARG}")
fi
CACHE="$HOME/.cache/spacepulse"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
cargo build --release --bin spacepulse >&2
BIN="$CARGO_TARGET_DIR/release/spacepulse"
PY="$CACHE/venv/bin/python"
[ -x "$PY" ] || { echo "run scripts/test once first: it makes the Python venv with DuckDB" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"; kill ${TANSU_PID:-} 2>/dev/null || true' EXIT

GEN+=(--out "$WORK/data")
"$BIN" "${GEN[@]}" >&2
FILE="$WORK/data/events.ndjson"
ROWS=$(wc -l < "$FILE")
MB=$(( $(stat -c %s "$FILE") / 1000000 ))
echo "command: $CMD"
echo "input: $ROWS events, $MB MB of NDJSON (spacepulse ${GEN[*]/#$WORK/DIR})"

t0=$(date +%s.%N)
"$BIN" ingest --from-file "$FILE" --lake "$WORK/lake-a" >&2
t1=$(date +%s.%N)
OURS=$(echo "$t1 - $t0" | bc -l)

DUCK=$("$PY" - "$FILE" "$WORK/duck.parquet" <<'PY'
import sys, time, duckdb
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
# Every field of the contract (docs/events.md, lake::event) with its type, so DuckDB neither
# samples nor guesses. Two fields come in two forms: `ts` is integer epoch milliseconds or an
# RFC 3339 string with an offset, `user_id` a number or a decimal string (the generator writes
# the string forms in a few rows). `ts` is therefore read as VARCHAR (a JSON number reads as
# its digits) and converted per row; UBIGINT, the contract's type of `user_id`, takes both of
# its forms. `props`, any JSON object, stays JSON text. Other fields are ignored, as the
# ingest ignores them. DuckDB only parses and converts: it validates nothing (required
# fields, platforms, type names, the range of ts), would keep an upload without `photos` as
# null where the lake stores 1, and adds no source columns.
COLUMNS = """{event_id: 'VARCHAR', ts: 'VARCHAR', user_id: 'UBIGINT', type: 'VARCHAR', platform: 'VARCHAR',
  account_id: 'VARCHAR', campaign_id: 'VARCHAR', advertiser_id: 'VARCHAR', ad_id: 'VARCHAR',
  photos: 'UINTEGER', amount_cents: 'BIGINT', region: 'VARCHAR', props: 'JSON'}"""
TS = ("CASE WHEN TRY_CAST(ts AS BIGINT) IS NOT NULL THEN make_timestamptz(CAST(ts AS BIGINT) * 1000) "
      "ELSE CAST(ts AS TIMESTAMPTZ) END")
t = time.perf_counter()
con.execute(f"""COPY (SELECT event_id, {TS} AS ts, user_id, type, platform, account_id, campaign_id,
                             advertiser_id, ad_id, photos, amount_cents, region, props
                      FROM read_json('{sys.argv[1]}', format = 'newline_delimited', columns = {COLUMNS}))
                TO '{sys.argv[2]}' (FORMAT parquet)""")
print(time.perf_counter() - t)
PY
)
printf "(a) NDJSON -> Parquet: spacepulse %.2f s = %.0f events/s; DuckDB %.2f s = %.0f events/s; spacepulse is %.2fx DuckDB's speed\n" \
  "$OURS" "$(echo "$ROWS / $OURS" | bc -l)" "$DUCK" "$(echo "$ROWS / $DUCK" | bc -l)" "$(echo "$DUCK / $OURS" | bc -l)"
bytes_of() { find "$@" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
LAKE_DATA=$(bytes_of "$WORK/lake-a/events" -name '*.parquet' -not -path '*/_delta_log/*')
LAKE_FILES=$(find "$WORK/lake-a/events" -name '*.parquet' -not -path '*/_delta_log/*' | wc -l)
LAKE_LOG=$(bytes_of "$WORK/lake-a/events/_delta_log")
DUCK_BYTES=$(stat -c %s "$WORK/duck.parquet")
read -r DUCK_ROWS DUCK_CODEC LAKE_CODEC < <("$PY" -c "
import duckdb, sys
duck, lake = sys.argv[1:]
codecs = lambda f: ','.join(c for (c,) in duckdb.sql(f\"SELECT DISTINCT compression FROM parquet_metadata({f!r}) ORDER BY 1\").fetchall())
print(duckdb.sql(f\"SELECT count(*) FROM read_parquet('{duck}')\").fetchone()[0], codecs(duck), codecs(lake))" \
  "$WORK/duck.parquet" "$WORK/lake-a/events/*/*/*.parquet")
# A short count is no measurement.
[ "$DUCK_ROWS" = "$ROWS" ] || { echo "MISMATCH (a): DuckDB's Parquet holds $DUCK_ROWS of $ROWS events" >&2; exit 1; }
printf "(a) bytes on disk: the lake's events table %.1f MB in %d files (%s; %.2f bytes/event; its Delta log %.1f MB besides), DuckDB's Parquet %.1f MB in one file (%s, DuckDB's default; %.2f bytes/event): the lake takes %.2fx DuckDB's bytes\n" \
  "$(echo "$LAKE_DATA / 1000000" | bc -l)" "$LAKE_FILES" "$LAKE_CODEC" "$(echo "$LAKE_DATA / $ROWS" | bc -l)" "$(echo "$LAKE_LOG / 1000000" | bc -l)" \
  "$(echo "$DUCK_BYTES / 1000000" | bc -l)" "$DUCK_CODEC" "$(echo "$DUCK_BYTES / $ROWS" | bc -l)" "$(echo "$LAKE_DATA / $DUCK_BYTES" | bc -l)"
rm -f "$WORK/duck.parquet"
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
