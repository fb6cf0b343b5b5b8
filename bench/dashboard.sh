#!/usr/bin/env bash
# Dashboard benchmark: report endpoints under load from a separate process (wrk, 64
# connections, 30 s each) against `spacepulse serve` over the demo's lake, with an official
# account's and an analyst's token. Prints wrk's requests/s and latency percentiles per route.
# Usage: bench/dashboard.sh [PROFILE]   (release by default; `dev` for a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${1:-release}"
CACHE="$HOME/.cache/spacepulse"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
if [ "$PROFILE" = release ]; then
  cargo build --release --bin spacepulse >&2
  BIN="$CARGO_TARGET_DIR/release/spacepulse"
else
  cargo build --bin spacepulse >&2
  BIN="$CARGO_TARGET_DIR/debug/spacepulse"
fi
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
WORK="${BENCH_DIR:-$(mktemp -d)}"
# The demo's lake and tokens (a headless run exits after the setup).
"$BIN" demo --dir "$WORK/demo" --headless --speed 0 --listen 127.0.0.1:0 </dev/null >"$WORK/demo.log"
token() { python3 -c 'import json,sys; print([t["token"] for t in json.load(open(sys.argv[1])) if t["account"]==sys.argv[2]][0])' "$WORK/demo/tokens.json" "$1"; }
OFFICIAL=$(token xiaomi)
ANALYST=$(token analyst)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SPACEPULSE_LOG=warn "$BIN" serve --lake "$WORK/demo/lake" --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done
echo "spacepulse serve ($PROFILE build), wrk -t2 -c64 -d30s --latency, $(nproc) cores"
run() {
  local route="$1" tok="$2"
  # One request first, so the response is cached as it is after the first visitor.
  curl -sf -H "Authorization: Bearer $tok" "http://127.0.0.1:$PORT$route" >/dev/null
  echo "== GET $route"
  wrk -t2 -c64 -d30s --latency -H "Authorization: Bearer $tok" "http://127.0.0.1:$PORT$route" |
    grep -E "Requests/sec|Latency  |  50%|  99%|Non-2xx|Socket errors|requests in"
}
run /api/v1/campaigns/redmi-launch/launch "$OFFICIAL"
run "/api/v1/accounts/xiaomi/followers?range=7d" "$OFFICIAL"
run "/api/v1/platform/activity?range=30d" "$ANALYST"
