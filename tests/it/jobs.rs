//! The metric jobs through the binary: golden fixtures worked out by hand, an oracle over
//! generated data (a plain HashSet pass over the NDJSON and the generator's manifest),
//! incremental runs against a full recompute, and the SQL functions over the same data.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, FixedOffset};
use datasets::generate::{IdSpace, NdjsonSink, Options, generate};
use serde_json::Value;
use spacepulse_tests::{add_launch, http, ndjson, ok, query, session, snapshot, spacepulse};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../datasets/fixtures");

fn fixture(name: &str) -> (String, Value) {
    let events = format!("{FIXTURES}/{name}.ndjson");
    let expected =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURES}/{name}.expected.json")).unwrap())
            .unwrap();
    (events, expected)
}

/// `spacepulse campaigns add ID` for the account `acme`, a 24 h window and `mode`.
fn add_campaign(lake: &str, id: &str, start: &str, mode: &str) -> String {
    ok(&[
        "campaigns",
        "add",
        id,
        "--lake",
        lake,
        "--account",
        "acme",
        "--start",
        start,
        "--window",
        "24h",
        "--mode",
        mode,
    ])
}

fn ingest(lake: &str, file: &str) {
    ok(&["ingest", "--from-file", file, "--lake", lake]);
}

fn jobs(lake: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["jobs", "run", "--json", "--lake", lake];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).expect("summary JSON")
}

/// The activity report's total rows, day by day.
const ACTIVITY_TOTALS: &str = "SELECT CAST(day AS VARCHAR) AS day, dau, new_users, wau, mau, \
     dau_approx, hll_relative_error FROM activity WHERE breakdown = 'total' ORDER BY day";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shanghai_days_duplicates_and_a_late_event_match_the_hand_worked_figures() {
    let (file, expected) = fixture("shanghai_midnight");
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap();
    // Everything but the late event first, then the late event (the last line) on its own.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (early, late) = lines.split_at(lines.len() - 1);
    let first = dir.path().join("early.ndjson");
    let second = dir.path().join("late.ndjson");
    std::fs::write(&first, early.join("\n") + "\n").unwrap();
    std::fs::write(&second, late.join("\n") + "\n").unwrap();
    ingest(lake, first.to_str().unwrap());
    let run = jobs(lake, &[]);
    assert!(run.iter().all(|j| j["up_to_date"] == false), "{run:?}");
    ingest(lake, second.to_str().unwrap());
    // The late event changes one report day (2015-04-27 in Shanghai): only it is recomputed.
    let run = jobs(lake, &[]);
    for j in run.iter().filter(|j| j["job"] != "campaigns") {
        assert_eq!(j["days"], 1, "{j}");
    }
    let again = jobs(lake, &[]);
    assert!(again.iter().all(|j| j["up_to_date"] == true), "{again:?}");

    let ctx = session(&lake_dir).await;
    let activity = query(&ctx, ACTIVITY_TOTALS).await;
    let uploads = query(
        &ctx,
        "SELECT CAST(day AS VARCHAR) AS day, uploads, photos FROM uploads_daily ORDER BY day",
    )
    .await;
    let days = expected["days"].as_array().unwrap();
    assert_eq!(activity.len(), days.len());
    for (got, want) in activity.iter().zip(days) {
        assert_eq!(got["day"], want["day"]);
        assert_eq!(got["dau"], want["dau"], "{}", want["day"]);
        assert_eq!(got["new_users"], want["new_users"], "{}", want["day"]);
        // Tiny sets are counted exactly by the sketch's sparse form.
        assert_eq!(
            got["dau_approx"].as_f64().unwrap().round() as i64,
            want["dau"].as_i64().unwrap()
        );
    }
    let last = activity.last().unwrap();
    assert_eq!(last["wau"], expected["wau_2015-04-29"]);
    assert_eq!(last["mau"], expected["mau_2015-04-29"]);
    let with_uploads: Vec<&Value> = days.iter().filter(|d| d["uploads"] != 0).collect();
    assert_eq!(uploads.len(), with_uploads.len());
    for (got, want) in uploads.iter().zip(with_uploads) {
        assert_eq!(got["day"], want["day"]);
        assert_eq!(got["uploads"], want["uploads"], "{}", want["day"]);
        assert_eq!(got["photos"], want["photos"], "{}", want["day"]);
    }

    // The user dictionary deleted: `jobs users` asks for a run first, and a run limited to
    // one day recomputes every day (the stored bitmaps hold the lost dictionary's codes),
    // to the same figures.
    std::fs::remove_dir_all(lake_dir.join("metrics").join("user_codes")).unwrap();
    let (first_day, last_day) = (
        days[0]["day"].as_str().unwrap(),
        days[days.len() - 1]["day"].as_str().unwrap(),
    );
    let range = ["--from", first_day, "--to", last_day];
    let users = |lake: &str| {
        let mut args = vec!["jobs", "users", "--json", "--lake", lake];
        args.extend(range);
        spacepulse(&args)
    };
    let (code, _, err) = users(lake);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("user_codes") && err.contains("jobs run"),
        "{err}"
    );
    let rerun = jobs(lake, &["--from", first_day, "--to", first_day, "activity"]);
    assert_eq!(
        rerun[0]["days"].as_u64().unwrap() as usize,
        days.len(),
        "{rerun:?}"
    );
    let ctx = session(&lake_dir).await;
    let recomputed = query(&ctx, ACTIVITY_TOTALS).await;
    assert_eq!(recomputed, activity);
    let (code, out, err) = users(lake);
    assert_eq!(code, 0, "{err}");
    let all: Value = serde_json::from_str(&out).unwrap();
    // The fixture spans less than 30 days: its last MAU is every user.
    assert_eq!(all["exact"], expected["mau_2015-04-29"], "{all}");

    // Another report time zone recomputes every table in it: in UTC, 2015-04-27 holds m7
    // (12:00Z) and m1, m3 (15:59Z); retries still count once.
    let utc = jobs(lake, &["--tz", "UTC", "peaks"]);
    assert!(utc[0]["days"].as_u64().unwrap() >= 2, "{utc:?}");
    let ctx = session(&lake_dir).await;
    let utc_uploads = query(
        &ctx,
        "SELECT CAST(day AS VARCHAR) AS day, uploads, photos FROM uploads_daily ORDER BY day",
    )
    .await;
    let total: i64 = utc_uploads
        .iter()
        .map(|r| r["photos"].as_i64().unwrap())
        .sum();
    let want: i64 = days.iter().map(|d| d["photos"].as_i64().unwrap()).sum();
    assert_eq!(total, want);
    assert_eq!(utc_uploads[0]["day"], "2015-04-27");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnels_and_launch_curves_match_the_hand_worked_figures() {
    let (file, expected) = fixture("funnel_edges");
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap();
    ingest(lake, &file);
    let c = &expected["campaign"];
    let start_ms = c["start_ms"].as_i64().unwrap();
    let start = DateTime::from_timestamp_millis(start_ms)
        .unwrap()
        .with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339();
    let add = |mode: &str| add_campaign(lake, "c1", &start, mode);
    add("furthest");
    let listed: Value =
        serde_json::from_str(&ok(&["campaigns", "list", "--json", "--lake", lake])).unwrap();
    assert_eq!(listed[0]["start_ms"], start_ms);
    assert_eq!(listed[0]["window_ms"], c["window_ms"]);
    jobs(lake, &[]);

    let users_per_step = |ctx, campaign: &'static str| async move {
        query(
            ctx,
            &format!(
                "SELECT users FROM funnels WHERE campaign_id = '{campaign}' AND breakdown = 'total' ORDER BY step"
            ),
        )
        .await
        .iter()
        .map(|r| r["users"].clone())
        .collect::<Vec<Value>>()
    };
    let ctx = session(&lake_dir).await;
    assert_eq!(
        Value::from(users_per_step(&ctx, "c1").await),
        expected["users_per_step_furthest"]
    );
    assert_eq!(
        Value::from(users_per_step(&ctx, "c-unreg").await),
        expected["unregistered"]["c-unreg"]["users_per_step"]
    );
    let unreg_start = query(
        &ctx,
        "SELECT DISTINCT CAST(start AS BIGINT) / 1000 AS ms, registered FROM funnels WHERE campaign_id = 'c-unreg'",
    )
    .await;
    assert_eq!(
        unreg_start[0]["ms"],
        expected["unregistered"]["c-unreg"]["start_ms"]
    );
    assert_eq!(unreg_start[0]["registered"], false);
    // By platform: the segments add up to the total at every step.
    let by_platform = query(
        &ctx,
        "SELECT step, sum(users) AS users FROM funnels WHERE campaign_id = 'c1' AND breakdown = 'platform' GROUP BY step ORDER BY step",
    )
    .await;
    let sums: Vec<Value> = by_platform.iter().map(|r| r["users"].clone()).collect();
    assert_eq!(Value::from(sums), expected["users_per_step_furthest"]);
    // By hour of the first view (in the report time zone), and why users dropped.
    let by_hour = query(
        &ctx,
        "SELECT segment, users FROM funnels WHERE campaign_id = 'c1' AND breakdown = 'hour' AND step = 1",
    )
    .await;
    assert_eq!(by_hour.len(), 1, "{by_hour:?}");
    assert_eq!(
        by_hour[0]["users"],
        expected["first_view_hour"][by_hour[0]["segment"].as_str().unwrap()]
    );
    assert_drop_reasons(&ctx, &expected["drop_reasons_furthest"]).await;
    let times = query(
        &ctx,
        "SELECT step, from_seconds, users FROM funnel_times WHERE campaign_id = 'c1' ORDER BY step, from_seconds",
    )
    .await;
    let bounds = expected["time_to_convert_buckets_from_seconds"]
        .as_array()
        .unwrap();
    for step in ["2", "3"] {
        let got: Vec<_> = times
            .iter()
            .filter(|r| r["step"].as_i64() == step.parse().ok())
            .collect();
        let from: Vec<Value> = got.iter().map(|r| r["from_seconds"].clone()).collect();
        assert_eq!(&from, bounds, "step {step}");
        let users: Vec<Value> = got.iter().map(|r| r["users"].clone()).collect();
        assert_eq!(
            Value::from(users),
            expected["time_to_convert_furthest"][step],
            "step {step}"
        );
    }

    let milestones = query(
        &ctx,
        "SELECT after_seconds, users FROM launch_milestones WHERE campaign_id = 'c1' ORDER BY after_seconds",
    )
    .await;
    let want = expected["launch_curve"]["milestones"].as_object().unwrap();
    assert_eq!(milestones.len(), want.len());
    for m in &milestones {
        let key = m["after_seconds"].to_string();
        assert_eq!(m["users"], want[&key], "milestone +{key} s");
    }
    let curve = query(
        &ctx,
        "SELECT max(users) AS users, count(*) AS seconds FROM launch_curve WHERE campaign_id = 'c1'",
    )
    .await;
    assert_eq!(curve[0]["users"], want["3600"]);
    assert_eq!(curve[0]["seconds"], 3600);

    // window_funnel in SQL gives every user's level, in both modes.
    let filter = format!("campaign_id = 'c1' AND ts >= to_timestamp_millis({start_ms})");
    assert_sql_levels(&ctx, &filter, &expected).await;

    // Changing the registry alone recomputes the campaigns: mode first.
    ok(&["campaigns", "remove", "c1", "--lake", lake]);
    add("first");
    let run = jobs(lake, &["campaigns"]);
    assert_eq!(run[0]["up_to_date"], false);
    let ctx = session(&lake_dir).await;
    assert_eq!(
        Value::from(users_per_step(&ctx, "c1").await),
        expected["users_per_step_first"]
    );
    assert_drop_reasons(&ctx, &expected["drop_reasons_first"]).await;
    // Bad input to the registry is a usage error naming the field.
    let (code, _, err) = spacepulse(&[
        "campaigns",
        "add",
        "c2",
        "--lake",
        lake,
        "--account",
        "acme",
        "--start",
        &start,
        "--steps",
        "page_view,Reserve",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("steps"), "{err}");
    let (code, _, err) = spacepulse(&["jobs", "run", "--lake", lake, "--tz", "Mars/Base"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tz") && err.contains("Mars/Base"), "{err}");
}

/// The split of each step's drop-off of campaign c1 into window-closed and never-came-back.
async fn assert_drop_reasons(ctx: &deltalake::datafusion::prelude::SessionContext, want: &Value) {
    let rows = query(
        ctx,
        "SELECT step, drop_off, dropped_window_closed, dropped_never_came_back FROM funnels \
         WHERE campaign_id = 'c1' AND breakdown = 'total' AND step > 1 ORDER BY step",
    )
    .await;
    assert_eq!(rows.len(), want.as_object().unwrap().len());
    for r in &rows {
        let w = &want[r["step"].to_string()];
        assert_eq!(r["dropped_window_closed"], w["window_closed"], "{r:?}");
        assert_eq!(r["dropped_never_came_back"], w["never_came_back"], "{r:?}");
        assert_eq!(
            r["drop_off"].as_i64(),
            Some(w["window_closed"].as_i64().unwrap() + w["never_came_back"].as_i64().unwrap())
        );
    }
}

/// Every funnel fixture (a launch's funnel takes the campaign's events before its start:
/// teasers, a page view a second before the doors open): the job, `window_funnel` in SQL and
/// the hand-worked figures agree in both modes, and the launch curve counts first
/// reservations from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_funnel_fixture_matches_its_hand_worked_figures() {
    for (name, file, expected) in spacepulse_tests::fixtures("campaign") {
        let dir = tempfile::tempdir().unwrap();
        let lake_dir = dir.path().join("lake");
        let lake = lake_dir.to_str().unwrap();
        ingest(lake, file.to_str().unwrap());
        let c = &expected["campaign"];
        let id = c["id"].as_str().unwrap();
        let start = DateTime::from_timestamp_millis(c["start_ms"].as_i64().unwrap())
            .unwrap()
            .with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap())
            .to_rfc3339();
        let steps: Vec<&str> = c["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let steps = steps.join(",");
        let window = format!("{}ms", c["window_ms"].as_i64().unwrap());
        let mut per_mode = Vec::new();
        for mode in ["furthest", "first"] {
            let _ = spacepulse(&["campaigns", "remove", id, "--lake", lake]);
            ok(&[
                "campaigns",
                "add",
                id,
                "--lake",
                lake,
                "--account",
                c["account_id"].as_str().unwrap(),
                "--start",
                &start,
                "--window",
                &window,
                "--steps",
                &steps,
                "--mode",
                mode,
            ]);
            jobs(lake, &["campaigns"]);
            let ctx = session(&lake_dir).await;
            let users: Vec<Value> = query(
                &ctx,
                &format!(
                    "SELECT users FROM funnels WHERE campaign_id = '{id}' AND breakdown = 'total' ORDER BY step"
                ),
            )
            .await
            .iter()
            .map(|r| r["users"].clone())
            .collect();
            assert_eq!(
                Value::from(users.clone()),
                expected[format!("users_per_step_{mode}")],
                "{name}, mode {mode}"
            );
            per_mode.push(users);
            let milestones = query(
                &ctx,
                &format!(
                    "SELECT after_seconds, users FROM launch_milestones WHERE campaign_id = '{id}' ORDER BY after_seconds"
                ),
            )
            .await;
            let want = expected["launch_curve"]["milestones"].as_object().unwrap();
            assert_eq!(milestones.len(), want.len(), "{name}");
            for m in &milestones {
                let key = m["after_seconds"].to_string();
                assert_eq!(
                    m["users"], want[&key],
                    "{name}: milestone +{key} s, mode {mode}"
                );
            }
        }
        // The modes differ where the hand-worked figures say they do.
        assert_eq!(
            per_mode[0] == per_mode[1],
            expected["users_per_step_furthest"] == expected["users_per_step_first"],
            "{name}"
        );
        // The SQL aggregate over all of the campaign's events gives every user's level.
        let ctx = session(&lake_dir).await;
        assert_sql_levels(&ctx, &format!("campaign_id = '{id}'"), &expected).await;
    }
}

/// `window_funnel` and `window_funnel_first` over the events that `filter` selects give each
/// user the level of `expected`'s `levels_furthest` and `levels_first`.
async fn assert_sql_levels(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    filter: &str,
    expected: &Value,
) {
    let c = &expected["campaign"];
    let steps: Vec<String> = c["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("type = '{}'", s.as_str().unwrap()))
        .collect();
    let (window, steps) = (c["window_ms"].as_i64().unwrap(), steps.join(", "));
    for (func, key) in [
        ("window_funnel", "levels_furthest"),
        ("window_funnel_first", "levels_first"),
    ] {
        let rows = query(
            ctx,
            &format!(
                "SELECT user_id, {func}({window}, ts, {steps}) AS level \
                 FROM events WHERE {filter} GROUP BY user_id"
            ),
        )
        .await;
        let got: BTreeMap<String, Value> = rows
            .iter()
            .map(|r| (r["user_id"].to_string(), r["level"].clone()))
            .collect();
        let want: BTreeMap<String, Value> = expected[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(got, want, "{func}");
    }
}

/// One valid event of the generated data, the fields the oracle needs.
struct Ev {
    id: String,
    ts_ms: i64,
    user: u64,
    ty: String,
    platform: &'static str,
    photos: i64,
    account: Option<String>,
    advertiser: Option<String>,
    ad: Option<String>,
    amount: i64,
    campaign: Option<String>,
}

fn parse_all(bytes: &[u8]) -> Vec<Ev> {
    let now = chrono::Utc::now().timestamp_millis();
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| lake::decode::parse(l, now).ok())
        .map(|e| Ev {
            id: e.event_id.to_string(),
            ts_ms: e.ts_ms,
            user: e.user_id,
            ty: e.event_type.to_string(),
            platform: e.platform,
            photos: e.photos.map(i64::from).unwrap_or(1),
            account: e.account_id.map(|s| s.to_string()),
            advertiser: e.advertiser_id.map(|s| s.to_string()),
            ad: e.ad_id.map(|s| s.to_string()),
            amount: e.amount_cents.unwrap_or(0),
            campaign: e.campaign_id.map(|s| s.to_string()),
        })
        .collect()
}

/// The Shanghai day of an instant as YYYY-MM-DD (UTC+8, no DST since 1991).
fn shanghai_day(ts_ms: i64) -> String {
    DateTime::from_timestamp_millis(ts_ms + 8 * 3600 * 1000)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_agrees_with_a_plain_oracle_and_incremental_equals_full() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    // Hashed ids over 63 bits: each in its own bucket of a 64-bit roaring bitmap, which the
    // activity bitmaps avoid by coding users densely.
    let options = Options {
        days: 9,
        scale: 0.0004,
        dirty: true,
        id_space: IdSpace::U64,
        ..Options::default()
    };
    let mut sink = NdjsonSink(Vec::new());
    let manifest = generate(&options, &mut sink).unwrap();
    let bytes = sink.0;
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap();
    // Two halves with a run between: the second half has late events for old days.
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let half = lines.len() / 2;
    for (i, part) in [&lines[..half], &lines[half..]].iter().enumerate() {
        let path = dir.path().join(format!("part{i}.ndjson"));
        std::fs::write(&path, ndjson(part)).unwrap();
        ingest(lake, path.to_str().unwrap());
        if i == 0 {
            add_launch(lake, &manifest.launch.start);
        }
        jobs(lake, &[]);
    }
    let incremental = snapshot(&lake_dir).await;
    // Compaction rewrites files without changing content: a new version, nothing to recompute.
    let before = jobs(lake, &[]);
    assert!(before.iter().all(|j| j["up_to_date"] == true), "{before:?}");
    let compacted = ok(&["lake", "compact", "--lake", lake]);
    let after = jobs(lake, &[]);
    assert!(
        after.iter().all(|j| j["up_to_date"] == true),
        "{compacted}\n{after:?}"
    );
    assert!(
        after[0]["events_version"].as_i64() > before[0]["events_version"].as_i64(),
        "compaction made no commit: {compacted}"
    );
    jobs(lake, &["--full"]);
    let full = snapshot(&lake_dir).await;
    assert_eq!(incremental.len(), lake::tables::METRIC_TABLES.len());
    for (name, rows) in &full {
        assert!(
            incremental[name] == *rows,
            "{name}: incremental runs differ from a full recompute"
        );
    }

    // The oracle: each event_id once, days in Shanghai, HashSets all the way.
    let events = parse_all(&bytes);
    let mut seen = HashSet::new();
    let distinct: Vec<&Ev> = events
        .iter()
        .filter(|e| seen.insert(e.id.clone()))
        .collect();
    let mut users: BTreeMap<String, HashSet<u64>> = BTreeMap::new();
    let mut platform_users: HashMap<(String, &str), HashSet<u64>> = HashMap::new();
    let mut photos: BTreeMap<String, i64> = BTreeMap::new();
    let mut per_second: HashMap<(String, i64), i64> = HashMap::new();
    let mut follows: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    // (day, advertiser, ad) -> (impressions, clicks, conversions, spend)
    type AdKey = (String, String, String);
    let mut ads: BTreeMap<AdKey, (i64, i64, i64, i64)> = BTreeMap::new();
    let mut reservers: HashMap<u64, i64> = HashMap::new();
    // (advertiser, ad) -> users with an impression, every day (the exact reach of the range)
    let mut reached: BTreeMap<(String, String), HashSet<u64>> = BTreeMap::new();
    // (campaign, day) -> users with an event of the campaign's (default) steps that day.
    let mut campaign_days: BTreeMap<(String, String), HashSet<u64>> = BTreeMap::new();
    for e in &distinct {
        let day = shanghai_day(e.ts_ms);
        users.entry(day.clone()).or_default().insert(e.user);
        if let Some(c) = &e.campaign
            && lake::registry::DEFAULT_STEPS.contains(&e.ty.as_str())
        {
            campaign_days
                .entry((c.clone(), day.clone()))
                .or_default()
                .insert(e.user);
        }
        platform_users
            .entry((day.clone(), e.platform))
            .or_default()
            .insert(e.user);
        match e.ty.as_str() {
            "photo_upload" => {
                *photos.entry(day.clone()).or_default() += e.photos;
                *per_second
                    .entry((day.clone(), e.ts_ms.div_euclid(1000)))
                    .or_default() += e.photos;
            }
            "follow" | "unfollow" => {
                let f = follows
                    .entry((day.clone(), e.account.clone().unwrap()))
                    .or_default();
                if e.ty == "follow" { f.0 += 1 } else { f.1 += 1 }
            }
            "ad_impression" | "ad_click" | "ad_conversion" => {
                let a = ads
                    .entry((
                        day.clone(),
                        e.advertiser.clone().unwrap(),
                        e.ad.clone().unwrap(),
                    ))
                    .or_default();
                match e.ty.as_str() {
                    "ad_impression" => {
                        a.0 += 1;
                        a.3 += e.amount;
                        reached
                            .entry((e.advertiser.clone().unwrap(), e.ad.clone().unwrap()))
                            .or_default()
                            .insert(e.user);
                    }
                    "ad_click" => {
                        a.1 += 1;
                        a.3 += e.amount
                    }
                    _ => a.2 += 1,
                }
            }
            "reserve" if e.campaign.as_deref() == Some("redmi-launch") => {
                let t = reservers.entry(e.user).or_insert(e.ts_ms);
                *t = (*t).min(e.ts_ms);
            }
            _ => {}
        }
    }

    let ctx = session(&lake_dir).await;
    let activity = query(
        &ctx,
        "SELECT CAST(day AS VARCHAR) AS day, breakdown, segment, dau, wau, mau, dau_approx, wau_approx, mau_approx, hll_relative_error AS rse FROM activity",
    )
    .await;
    let days: Vec<String> = users.keys().cloned().collect();
    let mut checked_hll = 0;
    for r in &activity {
        let day = r["day"].as_str().unwrap().to_string();
        let seg = r["segment"].as_str().unwrap();
        let want = match r["breakdown"].as_str().unwrap() {
            "total" => users.get(&day).map_or(0, |u| u.len()),
            "platform" => platform_users
                .get(&(day.clone(), seg))
                .map_or(0, |u| u.len()),
            _ => match seg {
                "mobile" => ["android", "ios"]
                    .iter()
                    .flat_map(|p| platform_users.get(&(day.clone(), *p)).into_iter().flatten())
                    .collect::<HashSet<_>>()
                    .len(),
                p => platform_users.get(&(day.clone(), p)).map_or(0, |u| u.len()),
            },
        };
        assert_eq!(r["dau"].as_u64().unwrap() as usize, want, "dau {day} {seg}");
        if r["breakdown"] == "total" {
            let window = |n: usize| {
                let i = days.iter().position(|d| *d == day).unwrap();
                days[i.saturating_sub(n - 1)..=i]
                    .iter()
                    .flat_map(|d| users[d].iter())
                    .collect::<HashSet<_>>()
                    .len()
            };
            assert_eq!(r["wau"].as_u64().unwrap() as usize, window(7), "wau {day}");
            assert_eq!(r["mau"].as_u64().unwrap() as usize, window(30), "mau {day}");
            for (exact, approx) in [
                ("dau", "dau_approx"),
                ("wau", "wau_approx"),
                ("mau", "mau_approx"),
            ] {
                let x = r[exact].as_f64().unwrap();
                let est = r[approx].as_f64().unwrap();
                let se = r["rse"].as_f64().unwrap() * x;
                assert!(
                    (est - x).abs() <= 3.0 * se.max(1.0),
                    "{approx} {day}: {est} vs {x}"
                );
                checked_hll += 1;
            }
        }
    }
    assert!(checked_hll >= 27);
    // The manifest agrees on distinct users per day.
    for d in &manifest.days {
        if let Some(u) = users.get(&d.day) {
            assert_eq!(u.len() as u64, d.distinct_users, "manifest {}", d.day);
        }
    }

    let uploads = query(
        &ctx,
        "SELECT CAST(day AS VARCHAR) AS day, photos, CAST(peak_second AS BIGINT) / 1000000 AS peak, peak_second_photos FROM uploads_daily",
    )
    .await;
    assert_eq!(uploads.len(), photos.len());
    for r in &uploads {
        let day = r["day"].as_str().unwrap().to_string();
        assert_eq!(r["photos"].as_i64().unwrap(), photos[&day], "photos {day}");
        let best = per_second
            .iter()
            .filter(|((d, _), _)| *d == day)
            .map(|((_, s), n)| (*n, -s))
            .max()
            .unwrap();
        assert_eq!(
            (
                r["peak_second_photos"].as_i64().unwrap(),
                -r["peak"].as_i64().unwrap()
            ),
            best,
            "peak second {day}"
        );
    }
    let per_minute_sum = query(&ctx, "SELECT sum(photos) AS p FROM uploads_by_minute").await;
    assert_eq!(
        per_minute_sum[0]["p"].as_i64().unwrap(),
        photos.values().sum::<i64>()
    );

    let accounts = query(
        &ctx,
        "SELECT CAST(day AS VARCHAR) AS day, account_id, follows, unfollows, followers FROM accounts_daily WHERE follows + unfollows > 0",
    )
    .await;
    assert_eq!(accounts.len(), follows.len());
    let mut running: HashMap<String, i64> = HashMap::new();
    let mut want_followers = BTreeMap::new();
    for ((day, account), (f, u)) in &follows {
        let t = running.entry(account.clone()).or_default();
        *t += f - u;
        want_followers.insert((day.clone(), account.clone()), (*f, *u, *t));
    }
    for r in &accounts {
        let key = (
            r["day"].as_str().unwrap().to_string(),
            r["account_id"].as_str().unwrap().to_string(),
        );
        let got = (
            r["follows"].as_i64().unwrap(),
            r["unfollows"].as_i64().unwrap(),
            r["followers"].as_i64().unwrap(),
        );
        assert_eq!(got, want_followers[&key], "{key:?}");
    }

    let adv = query(
        &ctx,
        "SELECT CAST(day AS VARCHAR) AS day, advertiser_id, ad_id, impressions, clicks, conversions, spend_cents FROM advertisers_daily",
    )
    .await;
    assert_eq!(adv.len(), ads.len());
    for r in &adv {
        let key = (
            r["day"].as_str().unwrap().to_string(),
            r["advertiser_id"].as_str().unwrap().to_string(),
            r["ad_id"].as_str().unwrap().to_string(),
        );
        let got = (
            r["impressions"].as_i64().unwrap(),
            r["clicks"].as_i64().unwrap(),
            r["conversions"].as_i64().unwrap(),
            r["spend_cents"].as_i64().unwrap(),
        );
        assert_eq!(got, ads[&key], "{key:?}");
    }
    // Unique reach over the whole range, per ad and per advertiser: the daily bitmaps' union
    // equals the distinct users, though users come back on several days.
    let per_ad = query(
        &ctx,
        "SELECT advertiser_id, ad_id, bitmap_count(bitmap_union(reach_bitmap)) AS reach, \
         sum(reach) AS daily_sum FROM advertisers_daily GROUP BY advertiser_id, ad_id",
    )
    .await;
    assert_eq!(per_ad.len(), reached.len());
    let mut returning = false;
    for r in &per_ad {
        let key = (
            r["advertiser_id"].as_str().unwrap().to_string(),
            r["ad_id"].as_str().unwrap().to_string(),
        );
        let want = reached[&key].len() as i64;
        assert_eq!(r["reach"].as_i64().unwrap(), want, "{key:?}");
        returning |= r["daily_sum"].as_i64().unwrap() > want;
    }
    assert!(returning, "some user saw an ad on two days");
    let per_advertiser = query(
        &ctx,
        "SELECT advertiser_id, bitmap_count(bitmap_union(reach_bitmap)) AS reach \
         FROM advertisers_daily GROUP BY advertiser_id",
    )
    .await;
    for r in &per_advertiser {
        let id = r["advertiser_id"].as_str().unwrap();
        let want: HashSet<u64> = reached
            .iter()
            .filter(|((a, _), _)| a == id)
            .flat_map(|(_, u)| u.iter().copied())
            .collect();
        assert_eq!(r["reach"].as_i64().unwrap(), want.len() as i64, "{id}");
    }

    // A campaign's reach per day, and over every day: the days' bitmaps unioned equal the
    // distinct users, though users come back on several days; new users add up to them.
    let campaign_rows = query(
        &ctx,
        "SELECT campaign_id, CAST(day AS VARCHAR) AS day, reach, new_users, reach_approx, \
         hll_relative_error AS rse FROM campaigns_daily",
    )
    .await;
    assert_eq!(campaign_rows.len(), campaign_days.len());
    for r in &campaign_rows {
        let key = (
            r["campaign_id"].as_str().unwrap().to_string(),
            r["day"].as_str().unwrap().to_string(),
        );
        let want = campaign_days[&key].len() as f64;
        assert_eq!(r["reach"].as_f64().unwrap(), want, "{key:?}");
        let est = r["reach_approx"].as_f64().unwrap();
        let se = r["rse"].as_f64().unwrap() * want;
        assert!((est - want).abs() <= 3.0 * se.max(1.0), "{key:?}: {est}");
    }
    let over_range = query(
        &ctx,
        "SELECT campaign_id, bitmap_count(bitmap_union(reach_bitmap)) AS reach, \
         sum(reach) AS daily_sum, sum(new_users) AS new_users FROM campaigns_daily \
         GROUP BY campaign_id",
    )
    .await;
    let mut came_back = false;
    for r in &over_range {
        let id = r["campaign_id"].as_str().unwrap();
        let want: HashSet<u64> = campaign_days
            .iter()
            .filter(|((c, _), _)| c == id)
            .flat_map(|(_, u)| u.iter().copied())
            .collect();
        assert_eq!(r["reach"].as_i64().unwrap(), want.len() as i64, "{id}");
        assert_eq!(r["new_users"].as_i64().unwrap(), want.len() as i64, "{id}");
        came_back |= r["daily_sum"].as_i64().unwrap() > want.len() as i64;
    }
    assert!(
        came_back,
        "some user came back to a campaign on another day"
    );
    // The funnel by the day of the first view adds up to the whole funnel at every step.
    let by_day = query(
        &ctx,
        "SELECT t.step, t.users, sum(d.users) AS by_day FROM funnels t JOIN funnels d \
         ON t.campaign_id = d.campaign_id AND t.step = d.step \
         WHERE t.campaign_id = 'redmi-launch' AND t.breakdown = 'total' AND d.breakdown = 'day' \
         GROUP BY t.step, t.users ORDER BY t.step",
    )
    .await;
    assert_eq!(by_day.len(), 3, "{by_day:?}");
    for r in &by_day {
        assert_eq!(r["users"], r["by_day"], "{r:?}");
    }

    // The launch: milestones equal the manifest's and the oracle's.
    let milestones = query(
        &ctx,
        "SELECT after_seconds, users FROM launch_milestones WHERE campaign_id = 'redmi-launch' ORDER BY after_seconds",
    )
    .await;
    let start = manifest.launch.start_ms;
    for m in &manifest.launch.milestones {
        let row = milestones
            .iter()
            .find(|r| r["after_seconds"] == m.after_seconds)
            .unwrap_or_else(|| panic!("milestone {}", m.after_seconds));
        assert_eq!(
            row["users"].as_u64().unwrap(),
            m.distinct_reservers,
            "+{} s",
            m.after_seconds
        );
        let oracle = reservers
            .values()
            .filter(|t| **t >= start && **t < start + m.after_seconds * 1000)
            .count() as u64;
        assert_eq!(oracle, m.distinct_reservers);
    }

    // The funnel (furthest, the campaign as registered): the job's equals the manifest's and
    // window_funnel() in SQL over every event of the campaign, teasers before the start too.
    let funnel: Vec<u64> = query(
        &ctx,
        "SELECT users FROM funnels WHERE campaign_id = 'redmi-launch' AND breakdown = 'total' ORDER BY step",
    )
    .await
    .iter()
    .map(|r| r["users"].as_u64().unwrap())
    .collect();
    assert_eq!(funnel, manifest.funnel.furthest, "funnel vs the manifest");
    assert_ne!(
        manifest.funnel.furthest, manifest.funnel.first,
        "the generated launch makes first and furthest differ"
    );
    let levels = query(
        &ctx,
        "SELECT level, count(*) AS n FROM (SELECT user_id, window_funnel(86400000, ts, type = 'page_view', \
         type = 'reserve', type = 'preorder') AS level FROM events_dedup WHERE campaign_id = 'redmi-launch' \
         GROUP BY user_id) GROUP BY level",
    )
    .await;
    let at_least = |k: u64| -> u64 {
        levels
            .iter()
            .filter(|r| r["level"].as_u64().unwrap() >= k)
            .map(|r| r["n"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        vec![at_least(1), at_least(2), at_least(3)],
        funnel,
        "window_funnel() in SQL"
    );

    // Any range's distinct users from the stored bitmaps and sketches, in SQL.
    let range = query(
        &ctx,
        "SELECT bitmap_count(bitmap_union(users_bitmap)) AS exact, hll_count(hll_merge(users_hll)) AS approx \
         FROM activity WHERE breakdown = 'total'",
    )
    .await;
    let all_users: HashSet<u64> = distinct.iter().map(|e| e.user).collect();
    assert_eq!(
        range[0]["exact"].as_u64().unwrap() as usize,
        all_users.len()
    );
    // The user dictionary: every user once, coded 0 to n - 1; the bitmaps hold codes.
    let dict = query(
        &ctx,
        "SELECT count(*) AS n, count(DISTINCT user_id) AS ids, count(DISTINCT code) AS codes, \
         min(code) AS lo, max(code) AS hi FROM user_codes",
    )
    .await;
    let n = all_users.len() as u64;
    assert_eq!(
        [
            &dict[0]["n"],
            &dict[0]["ids"],
            &dict[0]["codes"],
            &dict[0]["lo"],
            &dict[0]["hi"]
        ]
        .map(|v| v.as_u64().unwrap()),
        [n, n, n, 0, n - 1],
        "{dict:?}"
    );
    let coded = query(
        &ctx,
        "SELECT count(*) AS n FROM (SELECT DISTINCT user_id FROM events_dedup) e \
         JOIN user_codes c ON e.user_id = c.user_id",
    )
    .await;
    assert_eq!(
        coded[0]["n"].as_u64().unwrap(),
        n,
        "every event's user has a code"
    );
    // `jobs users`: the same exact count over the whole range, and a week's against the oracle.
    let first = days.first().unwrap();
    let last = days.last().unwrap();
    let whole: Value = serde_json::from_str(&ok(&[
        "jobs", "users", "--json", "--lake", lake, "--from", first, "--to", last,
    ]))
    .unwrap();
    assert_eq!(whole["exact"].as_u64().unwrap(), n, "{whole}");
    let week: Value = serde_json::from_str(&ok(&[
        "jobs",
        "users",
        "--json",
        "--lake",
        lake,
        "--from",
        &days[1],
        "--to",
        &days[7],
        "--breakdown",
        "platform",
        "--segment",
        "ios",
    ]))
    .unwrap();
    let want: HashSet<u64> = days[1..=7]
        .iter()
        .flat_map(|d| {
            platform_users
                .get(&(d.clone(), "ios"))
                .into_iter()
                .flatten()
        })
        .copied()
        .collect();
    assert_eq!(week["exact"].as_u64().unwrap(), want.len() as u64, "{week}");
    let approx = range[0]["approx"].as_f64().unwrap();
    let n = all_users.len() as f64;
    assert!((approx - n).abs() <= 3.0 * query::sketch::hll_relative_error() * n);
    let direct = query(
        &ctx,
        "SELECT hll_count(hll_sketch(user_id)) AS a FROM events",
    )
    .await;
    let direct = direct[0]["a"].as_f64().unwrap();
    assert!(
        (direct - n).abs() <= 3.0 * query::sketch::hll_relative_error() * n,
        "{direct} vs {n}"
    );

    // A zone whose days start at half past a UTC hour (UTC+5:30): the hours that straddle two
    // days are cut by each event's `ts`, the others by their folder alone.
    jobs(lake, &["--tz", "Asia/Kolkata", "activity", "peaks"]);
    let mut kolkata: BTreeMap<String, HashSet<u64>> = BTreeMap::new();
    let mut kolkata_photos: BTreeMap<String, i64> = BTreeMap::new();
    for e in &distinct {
        let day = DateTime::from_timestamp_millis(e.ts_ms + 330 * 60 * 1000)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        if e.ty == "photo_upload" {
            *kolkata_photos.entry(day.clone()).or_default() += e.photos;
        }
        kolkata.entry(day).or_default().insert(e.user);
    }
    let ctx = session(&lake_dir).await;
    let dau = "SELECT CAST(day AS VARCHAR) AS day, dau AS n FROM activity WHERE segment = 'all'";
    let got = per_day(&ctx, dau).await;
    let want: BTreeMap<String, i64> = kolkata
        .iter()
        .map(|(d, u)| (d.clone(), u.len() as i64))
        .collect();
    assert_eq!(got, want, "DAU per Kolkata day");
    assert_ne!(
        got.values().copied().collect::<Vec<_>>(),
        users.values().map(|u| u.len() as i64).collect::<Vec<_>>(),
        "the Kolkata days are cut differently from Shanghai's"
    );
    let got = per_day(
        &ctx,
        "SELECT CAST(day AS VARCHAR) AS day, photos AS n FROM uploads_daily",
    )
    .await;
    assert_eq!(got, kolkata_photos, "photos per Kolkata day");

    // Every run replaced the metric tables' files; a vacuum deletes the replaced ones and the
    // tables read as before.
    let before = per_day(&ctx, dau).await;
    let out = ok(&["lake", "vacuum", "--lake", lake, "--retain", "0s"]);
    let deleted = |table: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{table}: deleted ")))
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no line for {table} in {out}"))
    };
    assert!(deleted("metrics/activity") > 0, "{out}");
    assert!(deleted("metrics/uploads_daily") > 0, "{out}");
    // A replaced file's tombstone is kept an hour (the vacuum's default), not Delta's week.
    let created = std::fs::read_to_string(
        lake_dir.join("metrics/activity/_delta_log/00000000000000000000.json"),
    )
    .unwrap();
    let retention = created
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|a| {
            a["metaData"]["configuration"]["delta.deletedFileRetentionDuration"]
                .as_str()
                .map(str::to_string)
        });
    assert_eq!(retention.as_deref(), Some("interval 1 hours"));
    let ctx = session(&lake_dir).await;
    assert_eq!(per_day(&ctx, dau).await, before);
}

/// The campaigns, activity, peaks and accounts jobs as `spacepulse run` runs them, keeping the
/// campaign events (and each user's contribution), and the newest days' users, uploads,
/// reservations and account events hour by hour in memory between runs and reading only the files
/// committed since: over many small commits (with producer
/// retries and late events), a campaign registered part way, and a compaction that rewrites
/// the folded files, their tables equal a full recompute's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_kept_in_memory_between_runs_equal_a_full_recompute() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let options = Options {
        days: 3,
        scale: 0.0002,
        dirty: true,
        ..Options::default()
    };
    let mut sink = NdjsonSink(Vec::new());
    let manifest = generate(&options, &mut sink).unwrap();
    let lines: Vec<&[u8]> = sink
        .0
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap();
    let memory = std::sync::Arc::new(jobs::Memory::default());
    let opts = jobs::Options {
        lake: lake::tables::Lake::new(lake).unwrap(),
        registry: None,
        tz: "Asia/Shanghai".parse().unwrap(),
        from: None,
        to: None,
        full: false,
        jobs: vec![
            jobs::Job::Campaigns,
            jobs::Job::Activity,
            jobs::Job::Peaks,
            jobs::Job::Accounts,
        ],
        memory: Some(memory.clone()),
    };
    let parts = 6;
    let size = lines.len().div_ceil(parts);
    let mut kept = Vec::new();
    for (i, part) in lines.chunks(size).enumerate() {
        let path = dir.path().join(format!("part{i}.ndjson"));
        std::fs::write(&path, ndjson(part)).unwrap();
        ingest(lake, path.to_str().unwrap());
        if i == 1 {
            add_launch(lake, &manifest.launch.start);
        }
        if i == 3 {
            ok(&["lake", "compact", "--lake", lake]);
        }
        jobs::run(&opts, &jobs::Quiet).await.unwrap();
        kept.push((
            memory.campaigns.files(),
            memory.activity.hours(),
            memory.peaks.hours(),
            memory.accounts.hours(),
        ));
    }
    // The memory was used: every run left the files it had folded and the hours it read,
    // the closed hours merged (at most two open hours and a closed part for each of two days).
    assert!(
        kept.iter()
            .all(|(f, h, p, a)| *f > 0 && (1..=4).contains(h) && *p > 0 && *a > 0),
        "{kept:?}"
    );
    let campaign_tables = |snap: BTreeMap<String, Vec<String>>| -> BTreeMap<String, Vec<String>> {
        snap.into_iter()
            .filter(|(name, _)| {
                name.contains("funnel")
                    || name.contains("launch")
                    || name == "campaigns_daily"
                    || name == "activity"
                    || name.starts_with("uploads_")
                    || name == "campaign_peaks"
                    || name == "accounts_daily"
            })
            .collect()
    };
    let incremental = campaign_tables(snapshot(&lake_dir).await);
    assert_eq!(incremental.len(), 12, "{:?}", incremental.keys());
    assert!(incremental.values().all(|rows| !rows.is_empty()));
    jobs(
        lake,
        &["--full", "campaigns", "activity", "peaks", "accounts"],
    );
    let full = campaign_tables(snapshot(&lake_dir).await);
    for (name, rows) in &full {
        assert!(
            incremental[name] == *rows,
            "{name}: runs kept in memory differ from a full recompute"
        );
    }
}

/// Column `n` per `day` of a query's rows.
async fn per_day(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    sql: &str,
) -> BTreeMap<String, i64> {
    query(ctx, sql)
        .await
        .iter()
        .map(|r| {
            (
                r["day"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn sql_over_the_lake_in_every_format() {
    let (file, expected) = fixture("shanghai_midnight");
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    ingest(lake, &file);
    ok(&[
        "campaigns",
        "add",
        "c1",
        "--lake",
        lake,
        "--account",
        "acme",
        "--start",
        "2015-04-28T10:00:00+08:00",
    ]);
    jobs(lake, &[]);
    let q = "SELECT (SELECT count(*) FROM events) AS messages, (SELECT count(*) FROM events_dedup) AS distinct_events";
    let json: Value =
        serde_json::from_str(&ok(&["sql", "--lake", lake, "--format", "json", q])).unwrap();
    assert_eq!(json[0]["messages"], expected["messages"]);
    assert_eq!(json[0]["distinct_events"], expected["distinct_events"]);
    let csv = ok(&["sql", "--lake", lake, "--format", "csv", q]);
    let want = format!(
        "messages,distinct_events\n{},{}\n",
        expected["messages"], expected["distinct_events"]
    );
    assert_eq!(csv, want);
    let table = ok(&[
        "sql",
        "--lake",
        lake,
        "SELECT campaign_id, account_id FROM campaigns",
    ]);
    assert!(table.contains("| c1 ") && table.contains("acme"), "{table}");
    let out = dir.path().join("dau.ndjson");
    ok(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "ndjson",
        "--output",
        out.to_str().unwrap(),
        "SELECT CAST(day AS VARCHAR) AS day, dau FROM activity WHERE breakdown = 'total' ORDER BY day",
    ]);
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let days = expected["days"].as_array().unwrap();
    assert_eq!(lines.len(), days.len());
    for (got, want) in lines.iter().zip(days) {
        assert_eq!((&got["day"], &got["dau"]), (&want["day"], &want["dau"]));
    }
    let (code, _, err) = spacepulse(&["sql", "--lake", lake, "SELECT * FROM evnts"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean \"events\""), "{err}");
    let (code, _, err) = spacepulse(&["sql", "--lake", lake, "SELECT nope FROM events"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");
    // Read-only: the lake is written by ingest and the jobs alone.
    let (code, _, err) = spacepulse(&["sql", "--lake", lake, "DELETE FROM events"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DELETE is not allowed"), "{err}");

    // Parquet, read back by DuckDB's peer here: the parquet crate's own reader.
    let pq = dir.path().join("dau.parquet");
    ok(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "parquet",
        "--output",
        pq.to_str().unwrap(),
        "SELECT day, dau FROM activity WHERE breakdown = 'total' ORDER BY day",
    ]);
    let file = std::fs::File::open(&pq).unwrap();
    let rows: usize =
        deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
    assert_eq!(rows, days.len());

    // The shell, fed a script: statements over several lines, a backslash command, an error
    // that does not stop the statements after it, and the exit status of a failed script.
    let script = "\\f csv\nSELECT count(*) AS n\n  FROM events_dedup;\nSELECT nope FROM events;\nSELECT 41 + 1 AS answer\n";
    let mut child = std::process::Command::new(spacepulse_tests::spacepulse_bin())
        .args(["sql", "--lake", lake])
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        stdout,
        format!("n\n{}\nanswer\n42\n", expected["distinct_events"]),
        "{stderr}"
    );
    assert!(stderr.contains("No field named nope"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(dir.path().join(".spacepulse_history").exists());
}

#[test]
fn serve_answers_tokens_over_http() {
    let (file, expected) = fixture("shanghai_midnight");
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    ingest(lake, &file);
    jobs(lake, &[]);
    let token = spacepulse_tests::staff_token(lake, "analyst");
    let token = token.as_str();
    assert!(token.starts_with("spt_") && token.len() == 68, "{token}");
    let (code, _, err) = spacepulse(&[
        "tokens",
        "issue",
        "--role",
        "king",
        "--account",
        "bi",
        "--lake",
        lake,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--role") && err.contains("operator, analyst"),
        "{err}"
    );
    let (code, _, err) = spacepulse(&[
        "accounts", "verify", "nobody", "--reason", "x", "--lake", lake,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no account"), "{err}");
    let listed = ok(&["tokens", "list", "--lake", lake]);
    assert!(
        listed.contains("analyst") && !listed.contains(token),
        "{listed}"
    );

    let server = spacepulse_tests::Server::start(&["--lake", lake]);
    let addr = server.addr.clone();
    let (status, body) = http(&addr, "GET", "/api/v1/platform/activity", None, "");
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(&addr, "GET", "/api/v1/platform/activity", Some(token), "");
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let totals: Vec<(&str, i64)> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["breakdown"] == "total")
        .map(|r| (r["day"].as_str().unwrap(), r["dau"].as_i64().unwrap()))
        .collect();
    let want: Vec<(&str, i64)> = expected["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["day"].as_str().unwrap(), d["dau"].as_i64().unwrap()))
        .collect();
    assert_eq!(totals, want);
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/sql",
        Some(token),
        "SELECT count(*) AS n FROM events_dedup",
    );
    assert_eq!(status, 200, "{body}");
    let row: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(row["n"], expected["distinct_events"]);

    // Requests that aborted the server: each answers 4xx with a JSON error, and the same
    // server answers the next request.
    let alive = || {
        let (status, body) = http(&addr, "GET", "/healthz", None, "");
        assert_eq!(status, 200, "the server stopped answering: {body}");
    };
    let refused = |sql: &str, what: &str| {
        let (status, body) = http(&addr, "POST", "/api/v1/sql", Some(token), sql);
        assert_eq!(status, 400, "{what}: {}", &body[..body.len().min(300)]);
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(error["error"].is_string(), "{error}");
        alive();
    };
    let chain = |terms: usize| format!("SELECT 1{}", "+1".repeat(terms - 1));
    refused(&chain(200_000), "a 400 KB chain of +");
    refused(&chain(120_000), "a chain of + 120,000 deep");
    // A stored sketch that claims more than it holds, and with single bytes changed.
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/sql",
        Some(token),
        "SELECT encode(users_hll, 'hex') AS h FROM activity WHERE breakdown = 'total' LIMIT 1",
    );
    assert_eq!(status, 200, "{body}");
    let hex: Value = serde_json::from_str(body.trim()).unwrap();
    let good = hex["h"].as_str().unwrap().to_string();
    // "SPH2", the precision, 0 (sparse), then the number of codes as a little-endian u32.
    assert_eq!(&good[..12], "535048320e00", "the sketch layout changed");
    // A sparse list that claims 2^32 - 1 codes; a legacy ("SPH1") sketch of 2^60 registers
    // (eight varint bytes of seven zero bits, then 0x10).
    let huge = format!("{}ffffffff{}", &good[..12], &good[20..]);
    let legacy = format!("535048310e{}10808001{}", "80".repeat(8), "00".repeat(16));
    for sql in [
        format!("SELECT hll_count(X'{huge}')"),
        format!("SELECT hll_count(hll_merge(s)) FROM (VALUES (X'{huge}'), (X'{good}')) AS t(s)"),
        format!("SELECT hll_count(X'{legacy}')"),
        format!("SELECT hll_count(hll_merge(s)) FROM (VALUES (X'{legacy}'), (X'{good}')) AS t(s)"),
    ] {
        refused(&sql, "a sketch claiming more than it holds");
    }
    let mut rng = spacepulse_tests::Rng(7);
    for _ in 0..40 {
        let at = 8 + rng.below(good.len() as u64 / 2 - 4) as usize * 2;
        let byte = format!("{:02x}", rng.next_u64() as u8);
        let bad = format!("{}{byte}{}", &good[..at], &good[at + 2..]);
        let sql =
            format!("SELECT hll_count(hll_merge(s)) FROM (VALUES (X'{bad}'), (X'{good}')) AS t(s)");
        let (status, body) = http(&addr, "POST", "/api/v1/sql", Some(token), &sql);
        assert!(status == 200 || status == 400, "{status}: {body}");
        alive();
    }
    // SIGTERM: a graceful stop, exit 0.
    assert_eq!(server.stop().code(), Some(0));
}

/// Follower baselines from the platform's records: a CSV baseline in the middle of a day counts
/// only the follows after its instant; a Parquet baseline on a day the account did nothing
/// shows on that day and restarts the running figure; importing the same file again changes
/// nothing; an incremental run on late events carries the baseline's figure forward; a bad
/// file names its row and column and imports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_baselines_restart_the_running_figure_from_csv_and_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap();
    // 00:00 Shanghai time on 2015-04-28, 04-29, 04-30, 05-01.
    let day = |d: i64, hours: f64| 1_430_150_400_000 + d * 86_400_000 + (hours * 3.6e6) as i64;
    let event = |id: &str, ts: i64, user: u64, ty: &str| {
        format!(
            r#"{{"event_id":"{id}","ts":{ts},"user_id":{user},"type":"{ty}","platform":"ios","account_id":"brand"}}"#
        )
    };
    let mut lines = vec![
        event("f1", day(0, 1.0), 1, "follow"),
        event("f2", day(0, 2.0), 2, "follow"),
        event("f3", day(0, 3.0), 3, "follow"),
        event("f3", day(0, 3.0), 3, "follow"), // a retry: counted once
        event("f4", day(1, 1.0), 4, "follow"),
        event("f5", day(1, 5.0), 5, "follow"),
        event("u1", day(1, 6.0), 1, "unfollow"),
        // Nothing on 04-30.
    ];
    for u in 7..=10 {
        lines.push(event(&format!("f{u}"), day(3, 1.0), u, "follow"));
    }
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, ndjson(&lines)).unwrap();
    ingest(lake, events.to_str().unwrap());
    ok(&[
        "accounts", "add", "brand", "--kind", "official", "--lake", lake,
    ]);
    let followers = || async {
        let ctx = session(&lake_dir).await;
        query(
            &ctx,
            "SELECT CAST(day AS VARCHAR) AS day, follows, followers, baseline_followers, \
             CAST(baseline_as_of AS BIGINT) / 1000 AS as_of_ms FROM accounts_daily \
             WHERE account_id = 'brand' ORDER BY day",
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r["day"].as_str().unwrap().to_string(),
                r["followers"].as_i64().unwrap(),
                r.get("baseline_followers").and_then(Value::as_i64),
                r.get("as_of_ms").and_then(Value::as_i64),
            )
        })
        .collect::<Vec<_>>()
    };
    let row =
        |d: &str, f: i64, b: Option<(i64, i64)>| (d.to_string(), f, b.map(|b| b.0), b.map(|b| b.1));
    // What the runs revised in complete days (those ending before the newest event, 05-01
    // 01:00): (day, metric, before, after, reason), in the order recorded.
    let revisions =
        || async {
            let ctx = session(&lake_dir).await;
            if !ctx.table_exist("revisions").unwrap() {
                return Vec::new();
            }
            query(
            &ctx,
            "SELECT CAST(revised_day AS VARCHAR) AS day, metric, before, after, change, reason, \
             table_name, entity_kind, entity_id FROM revisions \
             ORDER BY recorded_at, table_version, revised_day, metric",
        )
        .await
        .into_iter()
        .map(|r| {
            assert_eq!(r["table_name"], "accounts_daily", "{r:?}");
            assert_eq!(r["entity_kind"], "account", "{r:?}");
            assert_eq!(r["entity_id"], "brand", "{r:?}");
            // The JSON rows leave out nulls: a figure with no value before has no `before`.
            let (b, a) = (
                r.get("before").and_then(Value::as_f64),
                r.get("after").and_then(Value::as_f64),
            );
            assert_eq!(r["change"].as_f64(), Some(a.unwrap_or(0.0) - b.unwrap_or(0.0)));
            (
                r["day"].as_str().unwrap().to_string(),
                r["metric"].as_str().unwrap().to_string(),
                b,
                a,
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect::<Vec<_>>()
        };
    let rev = |d: &str, m: &str, b: Option<f64>, a: f64, why: &str| {
        (d.to_string(), m.to_string(), b, Some(a), why.to_string())
    };
    jobs(lake, &["accounts"]);
    // The first run publishes; nothing was complete before it.
    assert_eq!(revisions().await, vec![]);
    assert_eq!(
        followers().await,
        vec![
            row("2015-04-28", 3, None),
            row("2015-04-29", 4, None),
            row("2015-05-01", 8, None),
        ]
    );

    // 1,000 followers at 03:00 on 04-29: the follow at 05:00 and the unfollow at 06:00 count.
    let csv = dir.path().join("followers.csv");
    std::fs::write(
        &csv,
        "as_of,account_id,followers\n2015-04-29T03:00:00+08:00,brand,1000\n",
    )
    .unwrap();
    let out = ok(&[
        "accounts",
        "import-followers",
        csv.to_str().unwrap(),
        "--lake",
        lake,
    ]);
    assert!(
        out.contains("imported 1 follower baselines of 1 accounts"),
        "{out}"
    );
    jobs(lake, &["accounts"]);
    let csv_at = day(1, 3.0);
    assert_eq!(
        followers().await,
        vec![
            row("2015-04-28", 3, None),
            row("2015-04-29", 1000, Some((1000, csv_at))),
            row("2015-05-01", 1004, Some((1000, csv_at))),
        ]
    );
    // 04-29 is complete and its figure moved; 05-01 moved too but is not complete.
    let baseline = "a follower baseline was imported";
    let mut want_revisions = vec![rev("2015-04-29", "followers", Some(4.0), 1000.0, baseline)];
    assert_eq!(revisions().await, want_revisions);
    let again = ok(&[
        "accounts",
        "import-followers",
        csv.to_str().unwrap(),
        "--lake",
        lake,
    ]);
    assert!(again.contains("nothing changed"), "{again}");

    // 5,000 at noon on 04-30, a day the account did nothing, from Parquet with a timestamp.
    let parquet = dir.path().join("followers.parquet");
    {
        use std::sync::Arc;
        let pq_at = day(2, 12.0);
        let batch = arrow::array::RecordBatch::try_from_iter(vec![
            (
                "account_id",
                Arc::new(arrow::array::StringArray::from(vec!["brand"])) as arrow::array::ArrayRef,
            ),
            (
                "as_of",
                Arc::new(
                    arrow::array::TimestampMillisecondArray::from(vec![pq_at]).with_timezone("UTC"),
                ),
            ),
            (
                "followers",
                Arc::new(arrow::array::Int32Array::from(vec![5000])),
            ),
        ])
        .unwrap();
        let file = std::fs::File::create(&parquet).unwrap();
        let mut w =
            deltalake::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    ok(&[
        "accounts",
        "import-followers",
        parquet.to_str().unwrap(),
        "--lake",
        lake,
    ]);
    jobs(lake, &["accounts"]);
    let pq_at = day(2, 12.0);
    let want = vec![
        row("2015-04-28", 3, None),
        row("2015-04-29", 1000, Some((1000, csv_at))),
        row("2015-04-30", 5000, Some((5000, pq_at))),
        row("2015-05-01", 5004, Some((5000, pq_at))),
    ];
    assert_eq!(followers().await, want);
    // A day that had no row gains one: its figure had no value before.
    want_revisions.push(rev("2015-04-30", "followers", None, 5000.0, baseline));
    assert_eq!(revisions().await, want_revisions);

    // Late events: an unfollow on 04-28 changes that day only; a follow late on 04-30 (after
    // the baseline) counts on top of it. The run is incremental and agrees with a full one.
    let late = dir.path().join("late.ndjson");
    std::fs::write(
        &late,
        ndjson(&[
            event("u2", day(0, 4.0), 2, "unfollow"),
            event("f11", day(2, 20.0), 11, "follow"),
        ]),
    )
    .unwrap();
    ingest(lake, late.to_str().unwrap());
    jobs(lake, &["accounts"]);
    let want = vec![
        row("2015-04-28", 2, None),
        row("2015-04-29", 1000, Some((1000, csv_at))),
        row("2015-04-30", 5001, Some((5000, pq_at))),
        row("2015-05-01", 5005, Some((5000, pq_at))),
    ];
    assert_eq!(followers().await, want);
    want_revisions.extend([
        rev("2015-04-28", "followers", Some(3.0), 2.0, "late events"),
        rev("2015-04-28", "unfollows", Some(0.0), 1.0, "late events"),
        rev(
            "2015-04-30",
            "followers",
            Some(5000.0),
            5001.0,
            "late events",
        ),
        rev("2015-04-30", "follows", Some(0.0), 1.0, "late events"),
    ]);
    assert_eq!(revisions().await, want_revisions);
    jobs(lake, &["--full", "accounts"]);
    assert_eq!(followers().await, want);
    // A full recompute that changes nothing revises nothing.
    assert_eq!(revisions().await, want_revisions);

    // A bad file: its row and column named, exit 2, nothing imported.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "account_id,as_of,followers\nbrand,2015-05-01T00:00:00Z,7\nbrand,yesterday,9\n",
    )
    .unwrap();
    let (code, _, err) = spacepulse(&[
        "accounts",
        "import-followers",
        bad.to_str().unwrap(),
        "--lake",
        lake,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("row 2: as_of: expected an RFC 3339 instant"),
        "{err}"
    );
    let listed: Value =
        serde_json::from_str(&ok(&["accounts", "baselines", "--json", "--lake", lake])).unwrap();
    assert_eq!(listed["imports"].as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed["baselines"].as_array().unwrap().len(), 2, "{listed}");
}
