#!/usr/bin/env bash
# Jobs benchmark (release build) on data of the platform's shape (issue #19): a user pool of
# scale x 600 million with heavy-tailed activity (DAU/MAU 0.2-0.5), QQ-style ids, 30 days.
# The wall time of each whole `spacepulse jobs run --full JOB` process (best of two) and, in the same run,
# the same metric computed by DuckDB and by chDB (Python packages, best of two) over the same
# Parquet files of the lake's events table, read with explicit types:
#   exact DAU per day; exact MAU (30-day window) for every day; upload peaks per day (second,
#   minute, hour); the launch campaign's funnel in mode furthest and in mode first (the
#   campaigns job runs once per mode); the launch milestones.
# Every answer is checked in the same run: DuckDB's must equal chDB's, spacepulse's tables
# (read back with `spacepulse sql --format csv`) and the generator's manifest where it has the
# figure (DAU per day, the range's distinct users = the last day's MAU, uploads and photos per
# day, the funnel in both modes, the milestones). A disagreement prints a MISMATCH line and
# the script exits 1. Then any range's MAU from the stored bitmaps and sketches (`jobs users`).
# Usage: bench/jobs.sh [ROWS]   (default 10000000)
#   SCALE=S       the generator's --scale; default ROWS / 20,000,000 x 0.001 (10 M: 0.0005,
#                 30 M: 0.0015, 100 M: 0.005): the generator needs about 11 million rows per
#                 0.001 of scale over 30 days, the background fills the rest
#   USERS=N       the user pool (--users; default scale x 600 million)
#   ID_SPACE=u64  hashed 63-bit ids (--id-space; default qq, 5-10 digit ids)
#   BENCH_DIR=D   keep the data and the lake in D; a D that has a lake is reused as it is
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-10000000}"
CMD="bench/jobs.sh $ROWS"
for v in ID_SPACE USERS SCALE BENCH_DIR; do
  if [ -n "${!v:-}" ]; then CMD="$v=${!v} $CMD"; fi
done
SCALE="${SCALE:-$(awk -v r="$ROWS" 'BEGIN { printf "%.6g", r / 20000000 * 0.001 }')}"
CACHE="$HOME/.cache/spacepulse"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
cargo build --release --bin spacepulse >&2
BIN="$CARGO_TARGET_DIR/release/spacepulse"
PY="$CACHE/venv/bin/python"
[ -x "$PY" ] || { echo "run scripts/test once first: it makes the Python venv with DuckDB" >&2; exit 1; }
"$PY" -c "import chdb, pytz, deltalake" 2>/dev/null || "$CACHE/venv/bin/pip" install -q chdb pytz -r scripts/requirements-test.txt >&2
WORK="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"
LAKE="$WORK/lake"

GEN=(datasets generate --rows "$ROWS" --days 30 --scale "$SCALE")
if [ -n "${USERS:-}" ]; then GEN+=(--users "$USERS"); fi
if [ -n "${ID_SPACE:-}" ]; then GEN+=(--id-space "$ID_SPACE"); fi
GEN+=(--out "$WORK/data")
if [ ! -d "$LAKE/events" ]; then
  echo "spacepulse ${GEN[*]}" > "$WORK/generated-with"
  "$BIN" "${GEN[@]}" >&2
  t0=$(date +%s.%N)
  "$BIN" ingest --from-file "$WORK/data/events.ndjson" --lake "$LAKE" >&2
  t1=$(date +%s.%N)
  echo "$t0 $t1" > "$WORK/ingest-times"
  rm -f "$WORK/data/events.ndjson"
fi
"$PY" -c 'import json, sys; m = json.load(open(sys.argv[1])); m["funnel"]["furthest"]; m["user_pool"]' "$WORK/data/manifest.json" 2>/dev/null || {
  echo "$WORK holds data of the generator before issue #19 (no funnel or user_pool in its manifest): use another BENCH_DIR" >&2; exit 1; }
# The launch campaign as the manifest describes it: id, account, start, steps, window.
read -r EVENTS CAMPAIGN ACCOUNT START STEPS WINDOW_MS < <("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1])); l, f = m["launch"], m["funnel"]
print(m["rows"], f["campaign_id"], l.get("account_id", "xiaomi"), l["start"], ",".join(f["steps"]), f["window_ms"])' "$WORK/data/manifest.json")
echo "command: $CMD"
echo "input: $EVENTS events over 30 days ($(cat "$WORK/generated-with" 2>/dev/null || echo "generator command not recorded")), in $LAKE"
if [ -f "$WORK/ingest-times" ]; then
  read -r t0 t1 < "$WORK/ingest-times"
  printf "ingested with spacepulse ingest --from-file: %.1f s = %.0f events/s\n" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$EVENTS / ($t1 - $t0)" | bc -l)"
fi

register() { # MODE: the launch campaign registered (again) with the manifest's funnel in MODE
  "$BIN" campaigns remove "$CAMPAIGN" --lake "$LAKE" >/dev/null 2>&1 || true
  "$BIN" campaigns add "$CAMPAIGN" --lake "$LAKE" --account "$ACCOUNT" --start "$START" \
    --steps "$STEPS" --window "${WINDOW_MS}ms" --mode "$1" >&2
}
best_of_two() { # JOB: the whole `spacepulse jobs run --full JOB` process's wall time, the best of two
  local runs="" t0 t1
  for _ in 1 2; do
    t0=$(date +%s.%N)
    "$BIN" jobs run --lake "$LAKE" --full --json "$1" >/dev/null
    t1=$(date +%s.%N)
    runs+="$(echo "$t1 - $t0" | bc -l) "
  done
  "$PY" -c 'import sys; print(min(map(float, sys.argv[1:])))' $runs
}
OURS="$WORK/ours"
mkdir -p "$OURS"
read_back() { # NAME QUERY: a spacepulse table read back as CSV into $OURS/NAME.csv
  "$BIN" sql --lake "$LAKE" --format csv "$2" > "$OURS/$1.csv"
}
funnel_sql() { # MODE
  echo "SELECT step, users FROM funnels WHERE campaign_id = '$CAMPAIGN' AND breakdown = 'total' AND segment = 'all' AND mode = '$1' ORDER BY step"
}

# Every bench run starts from no metric tables (a reused BENCH_DIR would otherwise time tables
# carrying the history of every earlier run): the first run of each job creates its tables,
# the second replaces every day in them.
rm -rf "$LAKE/metrics"
register furthest
T_ACTIVITY=$(best_of_two activity)
T_PEAKS=$(best_of_two peaks)
T_FURTHEST=$(best_of_two campaigns)
read_back activity "SELECT CAST(day AS VARCHAR) AS day, dau, mau FROM activity WHERE breakdown = 'total' AND segment = 'all' ORDER BY day"
read_back uploads_daily "SELECT CAST(day AS VARCHAR) AS day, uploads, photos,
  CAST(peak_second AS BIGINT) / 1000 AS peak_second_ms, peak_second_photos,
  CAST(peak_minute AS BIGINT) / 1000 AS peak_minute_ms, peak_minute_photos,
  CAST(peak_hour AS BIGINT) / 1000 AS peak_hour_ms, peak_hour_photos
  FROM uploads_daily ORDER BY day"
read_back funnel_furthest "$(funnel_sql furthest)"
read_back milestones "SELECT after_seconds, users FROM launch_milestones WHERE campaign_id = '$CAMPAIGN' ORDER BY after_seconds"
register first
T_FIRST=$(best_of_two campaigns)
read_back funnel_first "$(funnel_sql first)"
register furthest

status=0
"$PY" - "$LAKE/events" "$WORK/data/manifest.json" "$OURS" "$T_ACTIVITY" "$T_PEAKS" "$T_FURTHEST" "$T_FIRST" <<'PY' || status=$?
import csv, glob, json, os, sys, time
import chdb, duckdb
from deltalake import DeltaTable

events, manifest_path, ours_dir = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
ours_s = dict(zip(("activity", "peaks", "campaigns furthest", "campaigns first"), map(float, sys.argv[4:8])))
man = json.load(open(manifest_path))
fun = man["funnel"]
C, W = fun["campaign_id"], int(fun["window_ms"])
P1, P2, P3 = fun["steps"]
S = int(man["launch"]["start_ms"])
MILESTONES = [1, 10, 60, 600, 1800, 3600, 86400]

# The peers read the events table's Parquet files, exactly those of its current version: a
# compacted lake also holds the files compaction replaced, which a glob would count twice.
glob_path = f"{events}/*/*/*.parquet"
files = sorted(glob.glob(glob_path))
live = sorted(u.removeprefix("file://") for u in DeltaTable(events).file_uris())
if files != live:
    print(f"MISMATCH input: {glob_path} holds {len(files)} files, the events table {len(live)} "
          "(a compacted lake?): use a fresh BENCH_DIR")
    sys.exit(1)

# Explicit types. DuckDB takes each column's type from the Parquet schema (the lake's: ts a UTC
# timestamp in µs, user_id INT64, ...); the view names them anyway. ts is a TIMESTAMPTZ, whose
# casts and truncations follow the session's TimeZone, so that is UTC and a report day is
# CAST(timezone('Asia/Shanghai', ts) AS DATE); the date=/hour= directories are not columns
# (hive_partitioning = false). chDB gets the table's structure instead of inferring one.
duck = duckdb.connect()
duck.execute("SET TimeZone = 'UTC'")
duck.execute(f"""CREATE VIEW events AS SELECT
    CAST(event_id AS VARCHAR) AS event_id, CAST(ts AS TIMESTAMPTZ) AS ts, CAST(user_id AS BIGINT) AS user_id,
    CAST(type AS VARCHAR) AS type, CAST(campaign_id AS VARCHAR) AS campaign_id, CAST(photos AS BIGINT) AS photos
  FROM read_parquet({files!r}, hive_partitioning = false)""")
STRUCTURE = ("event_id String, ts DateTime64(6, 'UTC'), user_id Int64, type String, platform String, "
             "account_id Nullable(String), campaign_id Nullable(String), advertiser_id Nullable(String), "
             "ad_id Nullable(String), photos Nullable(Int64), amount_cents Nullable(Int64), "
             "region Nullable(String), props Nullable(String), source String, source_partition Int32, "
             "source_offset Int64, ingested_at DateTime64(6, 'UTC')")
ch = chdb.session.Session()
ch.query(f"""CREATE VIEW events AS SELECT * FROM file('{glob_path}', Parquet, '{STRUCTURE.replace("'", "''")}')""")

# Each peer's SQL computes the job's figure; report days in Asia/Shanghai (UTC+8). Results are
# rows of plain values: a key (day 'YYYY-MM-DD', step, seconds) and integers, instants as
# epoch milliseconds.
FUNNEL_E = f"campaign_id = '{C}' AND type IN ('{P1}', '{P2}', '{P3}')"
def duck_funnel(anchor):
    # A chain's steps in order, each at or after the previous one (ties chain), the last at
    # most W after the first. From a page view p, the best chain takes the earliest reserve r
    # at or after p (ASOF), then the earliest preorder at or after r: level 3 if it is within
    # W of p, 2 if only r is. `furthest` is the best level over every page view of the user
    # (a later one may reach further), `first` that of the user's first page view.
    p = (f"SELECT DISTINCT user_id, t FROM e WHERE type = '{P1}'" if anchor == "every"
         else f"SELECT user_id, min(t) AS t FROM e WHERE type = '{P1}' GROUP BY user_id")
    return f"""WITH e AS MATERIALIZED (SELECT user_id, epoch_ms(ts) AS t, type FROM events WHERE {FUNNEL_E}),
       p AS ({p}),
       r AS (SELECT DISTINCT user_id, t FROM e WHERE type = '{P2}'),
       q AS (SELECT DISTINCT user_id, t FROM e WHERE type = '{P3}'),
       pr AS (SELECT p.user_id, p.t AS tp, CASE WHEN r.t <= p.t + {W} THEN r.t END AS tr
              FROM p ASOF LEFT JOIN r ON p.user_id = r.user_id AND r.t >= p.t),
       lv AS (SELECT pr.user_id, max(CASE WHEN tr IS NULL THEN 1 WHEN q.t <= tp + {W} THEN 3 ELSE 2 END) AS level
              FROM pr ASOF LEFT JOIN q ON pr.user_id = q.user_id AND q.t >= pr.tr GROUP BY pr.user_id)
       SELECT k, count(*) FILTER (WHERE level >= k) FROM lv, (VALUES (1), (2), (3)) s(k) GROUP BY k"""
CH_E = f"SELECT user_id, toUInt64(toUnixTimestamp64Milli(ts)) AS t, type FROM events WHERE {FUNNEL_E}"
peers = {
  "DAU per day (exact)": ("activity",
    "SELECT CAST(CAST(timezone('Asia/Shanghai', ts) AS DATE) AS VARCHAR) AS d, count(DISTINCT user_id) FROM events GROUP BY d",
    "SELECT toString(toDate(ts, 'Asia/Shanghai')) AS d, uniqExact(user_id) FROM events GROUP BY d"),
  # A user is in day D's MAU when active on a day of [D - 29, D]. An active day d puts the user
  # in the MAU of the days from d to the next active day or d + 30, whichever comes first,
  # spans that never overlap: MAU(D) = the running sum of +1 at each active day and -1 at
  # its span's end (exact, one pass, no 30-fold join).
  "MAU for every day (exact)": ("activity",
    """WITH u AS (SELECT DISTINCT user_id, CAST(timezone('Asia/Shanghai', ts) AS DATE) AS d FROM events),
       g AS MATERIALIZED (SELECT d, least(coalesce(lead(d) OVER (PARTITION BY user_id ORDER BY d), d + 30), d + 30) AS e FROM u),
       x AS (SELECT x, sum(c) AS c, max(a) AS active FROM (SELECT d AS x, 1 AS c, 1 AS a FROM g UNION ALL SELECT e, -1, 0 FROM g) GROUP BY x)
       SELECT CAST(x AS VARCHAR), m FROM (SELECT x, active, sum(c) OVER (ORDER BY x) AS m FROM x) WHERE active = 1""",
    # (chDB: each user's sorted active days as an array, about twice as fast here as a window
    # function over DISTINCT (user, day) rows.)
    """WITH g AS (SELECT arraySort(groupUniqArray(toDate(ts, 'Asia/Shanghai'))) AS ds FROM events GROUP BY user_id),
       x AS (SELECT p.1 AS x, sum(p.2) AS c, max(p.3) AS active
             FROM (SELECT arrayJoin(arrayFlatten(arrayMap((d, i) -> [(d, 1, 1), (least(if(i < length(ds), ds[i + 1], d + 30), d + 30), -1, 0)],
                                                          ds, arrayEnumerate(ds)))) AS p FROM g)
             GROUP BY x)
       SELECT toString(x), m FROM (SELECT x, active, sum(c) OVER (ORDER BY x ROWS UNBOUNDED PRECEDING) AS m FROM x) WHERE active = 1"""),
  # Each event_id once; an upload without photos counts 1. Per day: uploads, photos, and the
  # second, minute and hour with the most photos (the earliest on a tie) with their photos.
  "upload peaks per day": ("peaks",
    """WITH e AS (SELECT DISTINCT event_id, ts, coalesce(photos, 1) AS p FROM events WHERE type = 'photo_upload'),
       s AS MATERIALIZED (SELECT date_trunc('second', ts) AS b, count(*) AS n, sum(p) AS p FROM e GROUP BY b),
       m AS (SELECT date_trunc('minute', b) AS b, sum(p) AS p FROM s GROUP BY 1),
       h AS (SELECT date_trunc('hour', b) AS b, sum(p) AS p FROM s GROUP BY 1)
       SELECT * FROM
         (SELECT CAST(CAST(timezone('Asia/Shanghai', b) AS DATE) AS VARCHAR) AS d, sum(n), sum(p),
                 epoch_ms(first(b ORDER BY p DESC, b)), max(p) FROM s GROUP BY d)
       JOIN (SELECT CAST(CAST(timezone('Asia/Shanghai', b) AS DATE) AS VARCHAR) AS d,
                 epoch_ms(first(b ORDER BY p DESC, b)), max(p) FROM m GROUP BY d) USING (d)
       JOIN (SELECT CAST(CAST(timezone('Asia/Shanghai', b) AS DATE) AS VARCHAR) AS d,
                 epoch_ms(first(b ORDER BY p DESC, b)), max(p) FROM h GROUP BY d) USING (d)""",
    # One pass: per day the seconds' sums, and the minutes' and hours' as sorted maps (the
    # first index of the largest value is the earliest bucket).
    """SELECT day, uploads, photos, sec, sec_photos,
              mm.1[indexOf(mm.2, arrayMax(mm.2))] * 1000, arrayMax(mm.2),
              hh.1[indexOf(hh.2, arrayMax(hh.2))] * 1000, arrayMax(hh.2)
       FROM (SELECT toString(toDate(b, 'Asia/Shanghai')) AS day, sum(n) AS uploads, sum(p) AS photos,
                    toUnixTimestamp64Milli(argMin(b, (-p, b))) AS sec, max(p) AS sec_photos,
                    sumMap([toUInt64(toUnixTimestamp(toStartOfMinute(b)))], [p]) AS mm,
                    sumMap([toUInt64(toUnixTimestamp(toStartOfHour(b)))], [p]) AS hh
             FROM (SELECT toStartOfSecond(ts) AS b, count() AS n, sum(p) AS p
                   FROM (SELECT event_id, any(ts) AS ts, any(coalesce(photos, 1)) AS p FROM events
                         WHERE type = 'photo_upload' GROUP BY event_id)
                   GROUP BY b)
             GROUP BY day)"""),
  # Every event carrying the campaign id, before its start too; the window alone decides.
  f"{C} funnel, furthest": ("campaigns furthest",
    duck_funnel("every"),
    f"""SELECT k, countIf(level >= k) FROM (
         SELECT user_id, windowFunnel({W})(t, type = '{P1}', type = '{P2}', type = '{P3}') AS level
         FROM ({CH_E}) GROUP BY user_id) ARRAY JOIN [1, 2, 3] AS k GROUP BY k"""),
  # windowFunnel with the first step restricted to the user's first page view.
  f"{C} funnel, first": ("campaigns first",
    duck_funnel("first"),
    f"""SELECT k, countIf(level >= k) FROM (
         SELECT user_id, windowFunnel({W})(t, type = '{P1}' AND t = t1, type = '{P2}', type = '{P3}') AS level
         FROM (SELECT *, minIf(t, type = '{P1}') OVER (PARTITION BY user_id) AS t1 FROM ({CH_E}))
         GROUP BY user_id) ARRAY JOIN [1, 2, 3] AS k GROUP BY k"""),
  # Distinct users whose first reservation of the campaign is in [start, start + s).
  f"{C} launch milestones": ("campaigns furthest",
    f"""WITH f AS (SELECT user_id, min(epoch_ms(ts)) AS t FROM events WHERE campaign_id = '{C}' AND type = 'reserve' GROUP BY user_id)
       SELECT s, count(*) FILTER (WHERE t >= {S} AND t < {S} + s * 1000) FROM f, (VALUES {", ".join(f"({s})" for s in MILESTONES)}) v(s) GROUP BY s""",
    f"""WITH f AS (SELECT user_id, min(toUnixTimestamp64Milli(ts)) AS t FROM events WHERE campaign_id = '{C}' AND type = 'reserve' GROUP BY user_id)
       SELECT s, countIf(t >= {S} AND t < {S} + s * 1000) FROM f ARRAY JOIN {MILESTONES} AS s GROUP BY s"""),
}

def rows_of(values):
    # {key: (ints...)}; a one-value row maps to the value.
    out = {}
    for r in values:
        vals = tuple(int(v) for v in r[1:])
        out[str(r[0])] = vals[0] if len(vals) == 1 else vals
    return out

def run_duck(sql):
    return rows_of(duck.execute(sql).fetchall())

def run_ch(sql):
    return rows_of(csv.reader(ch.query(sql, "CSV").bytes().decode().splitlines()))

def best(run, sql, n=2):
    times = []
    for _ in range(n):
        t = time.perf_counter(); res = run(sql); times.append(time.perf_counter() - t)
    return min(times), res

def ours_csv(name, cols):
    with open(f"{ours_dir}/{name}.csv") as f:
        rows = list(csv.DictReader(f))
    return rows_of([[r[c] for c in cols] for r in rows])

u = ["uploads", "photos", "peak_second_ms", "peak_second_photos", "peak_minute_ms", "peak_minute_photos", "peak_hour_ms", "peak_hour_photos"]
ours = {
  "DAU per day (exact)": ours_csv("activity", ["day", "dau"]),
  "MAU for every day (exact)": ours_csv("activity", ["day", "mau"]),
  "upload peaks per day": ours_csv("uploads_daily", ["day"] + u),
  f"{C} funnel, furthest": ours_csv("funnel_furthest", ["step", "users"]),
  f"{C} funnel, first": ours_csv("funnel_first", ["step", "users"]),
  f"{C} launch milestones": ours_csv("milestones", ["after_seconds", "users"]),
}
# The manifest's own figures, where it has them: (figures, what of a peer's row they are).
days = man["days"]
manifest = {
  "DAU per day (exact)": ({d["day"]: d["distinct_users"] for d in days}, lambda v: v),
  # The last day's MAU spans the whole range when it is 30 days or fewer.
  "MAU for every day (exact)": ({days[-1]["day"]: man["distinct_users"]} if len(days) <= 30 else {}, lambda v: v),
  "upload peaks per day": ({d["day"]: (d["uploads"], d["photos"]) for d in days if d["uploads"]}, lambda v: v and v[:2]),
  f"{C} funnel, furthest": ({str(k + 1): v for k, v in enumerate(fun["furthest"])}, lambda v: v),
  f"{C} funnel, first": ({str(k + 1): v for k, v in enumerate(fun["first"])}, lambda v: v),
  f"{C} launch milestones": ({str(m["after_seconds"]): m["distinct_reservers"] for m in man["launch"]["milestones"]}, lambda v: v),
}

def differences(name, answers, expected):
    out = []
    ref_name, ref = next(iter(answers.items()))
    for who, got in list(answers.items())[1:]:
        for k in sorted(set(ref) | set(got)):
            if ref.get(k) != got.get(k):
                out.append(f"{k}: {ref_name} {ref.get(k)}, {who} {got.get(k)}")
    figures, part = expected
    for k, v in sorted(figures.items()):
        if part(ref.get(k)) != v:
            out.append(f"{k}: {ref_name} {part(ref.get(k))}, manifest {v}")
    return out

table, bad = [], 0
for name, (job, dsql, csql) in peers.items():
    d, dres = best(run_duck, dsql)
    c, cres = best(run_ch, csql)
    o = ours_s[job]
    diffs = differences(name, {"DuckDB": dres, "chDB": cres, "spacepulse": ours[name]}, manifest[name])
    has_manifest = " = manifest" if manifest[name][0] else ""
    if diffs:
        bad += 1
        print(f"MISMATCH {name}: {len(diffs)} difference(s); " + "; ".join(diffs[:5]))
    else:
        print(f"OK {name}: {len(dres)} rows, DuckDB = chDB = spacepulse{has_manifest}")
    shown = job.replace(" ", "` (mode ") + ")" if " " in job else job + "`"
    table.append(f"| {name} | `{shown} {o:.2f} s | {d:.2f} s | {c:.2f} s | {min(d, c) / o:.2f}x |")
    if name == "MAU for every day (exact)":
        mau = dres
    if name == "DAU per day (exact)":
        dau = dres

last = max(mau)
print(f"shape: {man['distinct_users']:,} distinct users over {len(days)} days (pool {man.get('user_pool', 0):,}); "
      f"DAU {min(dau.values()):,}-{max(dau.values()):,}; on {last}: DAU/MAU {dau.get(last, 0) / mau[last]:.2f}")
print("| metric | spacepulse | DuckDB | chDB | faster peer / spacepulse |")
print("|---|---|---|---|---|")
print("\n".join(table))
if bad:
    print(f"MISMATCH: {bad} metric(s) disagree")
    sys.exit(1)
PY
echo "(jobs: activity = DAU, WAU, MAU, new users, exact and HLL++, 10 segments; peaks = uploads per second/minute/hour/day with peaks + campaign reservation peaks; campaigns = every campaign's funnel by platform and region + launch milestones and curve, run once per funnel mode)"
for range in "2015-05-01 2015-05-30" "2015-04-28 2015-05-27"; do
  set -- $range
  "$BIN" jobs users --lake "$LAKE" --from "$1" --to "$2"
done
exit "$status"
