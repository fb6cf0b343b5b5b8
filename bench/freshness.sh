#!/usr/bin/env bash
# Freshness benchmark (issue #21): how long a launch's reservation takes to show in the brand's
# launch report under `spacepulse run`, with the broker (Tansu 0.6, in-memory engine, 8
# partitions) on this machine.
#   - background: the generator's events (the platform's shape) produced at BACKGROUND events/s
#     (default 100,000) by `spacepulse datasets produce --rate`, from before the launch to the end;
#   - the launch: bench/freshness.py replays reservations at SCALE x the seeds' pace (50,000 in
#     the first second, 300,000 in the first minute, 600,000 in ten at scale 1), each by a new
#     user and with two page views (one by a visitor who does not reserve), for SECONDS, and
#     polls GET /api/v1/campaigns/{id}/launch with the brand's token back to back.
# Prints the latency distribution (p50, p95, p99, max) over every reservation, whether the
# report ended with every reservation counted, and the ingest rate `run` kept.
# Usage: bench/freshness.sh [SCALE]   (default 1)
#   SECS=S seconds of launch (default 120), BACKGROUND=R (default 100000), PROFILE=release|dev (default release),
#   BG_SCALE=S the background generator's --scale (default 0.001: a pool of 600,000 users),
#   RUN_LOG=FILE keep `spacepulse run`'s log (SPACEPULSE_LOG=warn,jobs=debug shows each job's phases),
#   BIN=PATH a spacepulse binary built before (to compare two builds on one machine)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-1}"
SECS="${SECS:-120}"
BACKGROUND="${BACKGROUND:-100000}"
PROFILE="${PROFILE:-release}"
CMD="bench/freshness.sh ${1:-}"
for v in SECS BACKGROUND PROFILE BG_SCALE; do
  if [ -n "${!v:-}" ]; then CMD="$v=${!v} $CMD"; fi
done
CACHE="$HOME/.cache/spacepulse"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
if [ -n "${BIN:-}" ]; then
  [ -x "$BIN" ] || { echo "BIN=$BIN: not an executable" >&2; exit 2; }
elif [ "$PROFILE" = release ]; then
  cargo build --release --bin spacepulse >&2
  BIN="$CARGO_TARGET_DIR/release/spacepulse"
else
  cargo build --bin spacepulse >&2
  BIN="$CARGO_TARGET_DIR/debug/spacepulse"
fi
PY="$CACHE/venv/bin/python"
[ -x "$PY" ] || { echo "run scripts/test once first: it makes the Python venv" >&2; exit 1; }
"$PY" -c 'import confluent_kafka' 2>/dev/null ||
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check 'confluent-kafka>=2.6,<3' >&2
TANSU="${TANSU:-$CACHE/tansu/bin/tansu}"
WORK="$(mktemp -d)"
cleanup() {
  kill ${PRODUCER:-} ${RUN_PID:-} 2>/dev/null || true
  wait ${RUN_PID:-} 2>/dev/null || true
  kill ${TANSU_PID:-} 2>/dev/null || true
  if [ -n "${RUN_LOG:-}" ]; then cp "$WORK/run.log" "$RUN_LOG" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The background: enough of the generator's events for the whole run at BACKGROUND/s.
ROWS=$(( BACKGROUND * (SECS + 60) ))
"$BIN" datasets generate --days 1 --rows "$ROWS" --scale "${BG_SCALE:-0.001}" --out "$WORK/bg" >&2

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine "memory://tansu/" >"$WORK/tansu.log" 2>&1) &
TANSU_PID=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
"$TANSU" topic create events --broker "tcp://127.0.0.1:$PORT" --partitions 8 >&2
BROKERS="127.0.0.1:$PORT"

LAKE="$WORK/lake"
"$BIN" accounts add brand --kind official --lake "$LAKE" >&2
"$BIN" accounts verify brand --reason bench --lake "$LAKE" >&2
"$BIN" accounts add ops --kind staff --lake "$LAKE" >&2
BRAND=$("$BIN" tokens issue --role official --account brand --lake "$LAKE")
SCRAPER=$("$BIN" tokens issue --role scraper --account ops --lake "$LAKE")
# The launch starts 30 s after the pipeline: the background is flowing by then.
START_MS=$(( $(date +%s) * 1000 + 30000 ))
START=$(date -u -d "@$(( START_MS / 1000 ))" +%Y-%m-%dT%H:%M:%S+00:00)
"$BIN" campaigns add bench-launch --account brand --start "$START" --window 24h --lake "$LAKE" >&2

DPORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SPACEPULSE_LOG="${SPACEPULSE_LOG:-warn}" "$BIN" run --brokers "$BROKERS" --lake "$LAKE" --listen "127.0.0.1:$DPORT" \
  --jobs-every 5s >"$WORK/run.log" 2>&1 &
RUN_PID=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$DPORT/healthz" >/dev/null && break; sleep 0.1; done
"$BIN" datasets produce --brokers "$BROKERS" --input "$WORK/bg/events.ndjson" --rate "$BACKGROUND" \
  >"$WORK/produce.log" 2>&1 &
PRODUCER=$!
accepted() {
  curl -sf -H "Authorization: Bearer $SCRAPER" "http://127.0.0.1:$DPORT/metrics" |
    sed -n 's/^spacepulse_ingest_messages_total{outcome="accepted"} //p'
}
T0=$(date +%s.%N); A0=$(accepted)
RESULT=$("$PY" bench/freshness.py "$BROKERS" events "127.0.0.1:$DPORT" "$BRAND" bench-launch \
  "$START_MS" "$SCALE" "$SECS")
T1=$(date +%s.%N); A1=$(accepted)
kill "$PRODUCER" 2>/dev/null || true
# Where the time went: each job's runs and mean run time, the ingester's commits and their mean
# latency, from `run`'s own /metrics.
METRICS=$(curl -sf -H "Authorization: Bearer $SCRAPER" "http://127.0.0.1:$DPORT/metrics")
RATE=$(echo "($A1 - $A0) / ($T1 - $T0)" | bc -l)

echo "command: $CMD"
echo "machine: $(nproc) cores; spacepulse run ($PROFILE build) --jobs-every 5s, Tansu 0.6 in-memory engine, 8 partitions"
echo "launch: $RESULT"
printf "ingest under run: %.0f events/s accepted from the launch's start to the end (background offered: %d/s)\n" "$RATE" "$BACKGROUND"
"$PY" - "$RESULT" "$METRICS" <<'PY'
import json, re, sys
r = json.loads(sys.argv[1])
m = {}
for line in sys.argv[2].splitlines():
    if not line.startswith("#") and " " in line:
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
def get(name):
    return m.get(name, 0.0)
parts = []
for job in sorted({re.sub(r'.*job="([^"]+)".*', r"\1", k) for k in m if k.startswith("spacepulse_jobs_runs_total{")}):
    runs = get(f'spacepulse_jobs_runs_total{{job="{job}",outcome="ok"}}')
    secs = get(f'spacepulse_jobs_run_seconds_total{{job="{job}"}}')
    if runs:
        parts.append(f"{job} {runs:.0f} runs, mean {secs / runs:.2f} s")
commits = get("spacepulse_ingest_commit_duration_seconds_count")
if commits:
    parts.append(f"ingest {commits:.0f} commits, mean {get('spacepulse_ingest_commit_duration_seconds_sum') / commits:.2f} s")
print("under run: " + "; ".join(parts))
ok = r["shown"] == r["reservations"] and r["final_count"] == r["reservations"] and r["undelivered"] == 0
print(f"every reservation shown and counted once: {'yes' if ok else 'NO'}")
print(f"latency, produced -> in the launch report: p50 {r['p50']} s, p95 {r['p95']} s, p99 {r['p99']} s, max {r['max']} s "
      f"(target p95 <= 5 s, p99 <= 10 s: {'met' if ok and r['p95'] <= 5 and r['p99'] <= 10 else 'NOT met'})")
sys.exit(0 if ok else 1)
PY
