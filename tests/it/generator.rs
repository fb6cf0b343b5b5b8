//! The generator: deterministic, valid by the contract, shaped like the platform, and every
//! kind of mess rejected by the ingest with its reason.

use std::collections::{BTreeMap, HashMap, HashSet};

use datasets::generate::{Malformed, Manifest, NdjsonSink, Options, generate};
use ingest::writer::{LakeWriter, WriterOptions};
use lake::tables::Lake;
use spacepulse_tests::{query, session, spacepulse};

fn run(options: &Options) -> (Vec<u8>, Manifest) {
    let mut sink = NdjsonSink(Vec::new());
    let manifest = generate(options, &mut sink).unwrap();
    (sink.0, manifest)
}

fn small(days: u32, dirty: bool) -> Options {
    Options {
        days,
        scale: 0.0005,
        dirty,
        ..Options::default()
    }
}

#[test]
fn the_same_options_give_the_same_bytes() {
    let _turn = spacepulse_tests::HEAVY.blocking_lock();
    let a = run(&small(3, true)).0;
    let b = run(&small(3, true)).0;
    assert!(a.len() > 100_000);
    assert!(a == b, "two runs differ");
    let other = run(&Options {
        seed: 2,
        ..small(3, true)
    })
    .0;
    assert!(a != other, "another seed gives the same data");
    // Through the command line too.
    let dir = tempfile::tempdir().unwrap();
    for d in ["x", "y"] {
        let out = dir.path().join(d);
        let (code, o, e) = spacepulse(&[
            "datasets",
            "generate",
            "--days",
            "2",
            "--scale",
            "0.0002",
            "--dirty",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{o}{e}");
    }
    assert!(
        std::fs::read(dir.path().join("x/events.ndjson")).unwrap()
            == std::fs::read(dir.path().join("y/events.ndjson")).unwrap()
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("x/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["time_zone"], "Asia/Shanghai");
}

/// The Shanghai report day of an instant.
fn day_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

#[test]
fn clean_data_is_valid_and_has_the_platform_shapes() {
    let _turn = spacepulse_tests::HEAVY.blocking_lock();
    let options = Options {
        days: 7,
        scale: 0.001,
        ..Options::default()
    };
    let (bytes, manifest) = run(&options);
    let now = chrono::Utc::now().timestamp_millis();
    let mut photos: BTreeMap<String, u64> = BTreeMap::new();
    let mut users: BTreeMap<String, HashSet<u64>> = BTreeMap::new();
    let mut first_reserve: HashMap<u64, i64> = HashMap::new();
    let mut campaign: HashMap<u64, Vec<(i64, &'static str)>> = HashMap::new();
    let mut ids = HashSet::new();
    let mut platforms: HashMap<&'static str, u64> = HashMap::new();
    let mut per_user: HashMap<u64, u64> = HashMap::new();
    let mut lines = 0;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        lines += 1;
        // Every clean event passes the ingest's own validation.
        let ev = lake::decode::parse(line, now)
            .unwrap_or_else(|r| panic!("{r}: {}", String::from_utf8_lossy(line)));
        assert!(
            ids.insert(ev.event_id.to_string()),
            "duplicate event_id in clean data"
        );
        *per_user.entry(ev.user_id).or_default() += 1;
        let day = day_of(ev.ts_ms);
        users.entry(day.clone()).or_default().insert(ev.user_id);
        *platforms.entry(ev.platform).or_default() += 1;
        if ev.event_type == "photo_upload" {
            *photos.entry(day).or_default() += u64::from(ev.photos.unwrap());
        }
        if ev.event_type == "reserve" && ev.campaign_id.as_deref() == Some("redmi-launch") {
            let t = first_reserve.entry(ev.user_id).or_insert(ev.ts_ms);
            *t = (*t).min(ev.ts_ms);
        }
        if ev.campaign_id.as_deref() == Some("redmi-launch") {
            let step = match &*ev.event_type {
                "page_view" => "view",
                "reserve" => "reserve",
                _ => "preorder",
            };
            campaign
                .entry(ev.user_id)
                .or_default()
                .push((ev.ts_ms, step));
        }
        // QQ numbers: 5 to 10 digits.
        assert!(
            (10_000..10_000_000_000).contains(&ev.user_id),
            "user_id {} is no QQ number",
            ev.user_id
        );
    }
    // The platform's activity shape: a pool of scale x 600 million, about a third of it
    // active on a day, a different third each day, most of the pool active within the week.
    assert_eq!(manifest.user_pool, 600_000);
    let all: HashSet<u64> = users.values().flatten().copied().collect();
    assert_eq!(all.len() as u64, manifest.distinct_users);
    let mean_dau = users.values().map(|u| u.len() as f64).sum::<f64>() / users.len() as f64;
    let ratio = mean_dau / all.len() as f64;
    assert!(
        (0.2..=0.5).contains(&ratio),
        "DAU/MAU {ratio:.3} (mean DAU {mean_dau}, {} users in the week)",
        all.len()
    );
    let days: Vec<&HashSet<u64>> = users.values().collect();
    for pair in days.windows(2) {
        let both = pair[0].intersection(pair[1]).count() as f64;
        assert!(
            both < 0.8 * pair[0].len().min(pair[1].len()) as f64,
            "consecutive days share {both} of their users"
        );
    }
    // A heavy tail: the busiest 1% of the week's users make far more than 1% of the events.
    let mut counts: Vec<u64> = per_user.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top: u64 = counts[..counts.len() / 100].iter().sum();
    assert!(
        top as f64 > 0.05 * lines as f64,
        "the top 1% of users make {top} of {lines} events"
    );
    // The launch: teasers days ahead, views just before the start, view-only visitors,
    // preorders past the funnel's window.
    let start_ms = manifest.launch.start_ms;
    let reservers = first_reserve.len() as f64;
    let teased = campaign
        .values()
        .filter(|e| {
            e.iter()
                .any(|(t, s)| *s == "view" && *t <= start_ms - 86_400_000)
        })
        .count() as f64;
    assert!(
        teased > 0.03 * reservers && teased < 0.15 * reservers,
        "{teased} teaser viewers for {reservers} reservers"
    );
    let view_only = campaign
        .values()
        .filter(|e| e.iter().all(|(_, s)| *s == "view"))
        .count() as f64;
    assert!(
        (view_only / reservers - 0.6).abs() < 0.05,
        "{view_only} view-only visitors for {reservers} reservers"
    );
    assert_eq!(view_only as u64, manifest.launch.view_only_users);
    let early_viewers = first_reserve
        .iter()
        .filter(|(u, t)| {
            **t >= start_ms
                && campaign[*u]
                    .iter()
                    .any(|(v, s)| *s == "view" && *v < start_ms && *v > start_ms - 300_000)
        })
        .count();
    assert!(
        early_viewers > 0,
        "no reserver viewed just before the start"
    );
    let late_preorders = campaign
        .values()
        .filter(|e| {
            let first_view = e.iter().filter(|x| x.1 == "view").map(|x| x.0).max();
            e.iter()
                .any(|(t, s)| *s == "preorder" && first_view.is_some_and(|v| *t > v + 86_400_000))
        })
        .count();
    assert!(late_preorders > 0, "no preorder outside the 24 h window");
    // The manifest's funnel, by a plain walk over every pair of steps.
    let level = |events: &Vec<(i64, &str)>, first_only: bool| -> u64 {
        let mut views: Vec<i64> = events
            .iter()
            .filter(|e| e.1 == "view")
            .map(|e| e.0)
            .collect();
        views.sort_unstable();
        if first_only {
            views.truncate(1);
        }
        let mut best = 0;
        for v in views {
            let mut lv = 1;
            for r in events
                .iter()
                .filter(|e| e.1 == "reserve" && e.0 >= v && e.0 <= v + 86_400_000)
            {
                lv = lv.max(2);
                if events
                    .iter()
                    .any(|p| p.1 == "preorder" && p.0 >= r.0 && p.0 <= v + 86_400_000)
                {
                    lv = 3;
                }
            }
            best = best.max(lv);
        }
        best
    };
    for (first_only, want) in [
        (false, &manifest.funnel.furthest),
        (true, &manifest.funnel.first),
    ] {
        let levels: Vec<u64> = campaign.values().map(|e| level(e, first_only)).collect();
        let got: Vec<u64> = (1..=3)
            .map(|k| levels.iter().filter(|l| **l >= k).count() as u64)
            .collect();
        assert_eq!(&got, want, "funnel, first_only = {first_only}");
    }
    assert!(manifest.funnel.first[1] < manifest.funnel.furthest[1]);
    assert_eq!(lines, manifest.rows);
    // Upload-day ratios (2015: 200M a day, 360M on the peak day, 650M on May 1, 510M on May 2).
    let ordinary = photos["2015-04-28"] as f64;
    for (day, ratio) in [
        ("2015-04-29", 1.0),
        ("2015-04-30", 1.8),
        ("2015-05-01", 3.25),
        ("2015-05-02", 2.55),
        ("2015-05-03", 1.0),
    ] {
        let got = photos[day] as f64 / ordinary;
        assert!(
            (got / ratio - 1.0).abs() < 0.01,
            "{day}: {got:.4} times an ordinary day, want {ratio}"
        );
    }
    assert!(
        (ordinary / 200_000.0 - 1.0).abs() < 0.01,
        "an ordinary day has {ordinary} photos at scale 0.001"
    );
    // The launch curve, from the data: distinct reservers by their first reservation.
    let start = manifest.launch.start_ms;
    for (secs, target) in [
        (1, 50.0),
        (60, 300.0),
        (600, 600.0),
        (1800, 1000.0),
        (86_400, 3500.0),
    ] {
        let got = first_reserve
            .values()
            .filter(|t| **t >= start && **t < start + secs * 1000)
            .count() as f64;
        assert!(
            (got / target - 1.0).abs() < 0.01,
            "+{secs}s: {got} reservers, want {target}"
        );
    }
    // The manifest agrees with this independent pass.
    for d in &manifest.days {
        assert_eq!(
            d.photos,
            photos.get(&d.day).copied().unwrap_or(0),
            "{}",
            d.day
        );
        assert_eq!(
            d.distinct_users,
            users.get(&d.day).map_or(0, |u| u.len() as u64),
            "{}",
            d.day
        );
    }
    // Mostly mobile.
    let mobile = platforms["android"] + platforms["ios"];
    assert!(
        mobile as f64 > 0.7 * lines as f64,
        "mobile share {mobile} of {lines}"
    );
    // A daily cycle: 21:00 in Shanghai is far busier than 04:00.
    let hour_count = |h: i64| {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| lake::decode::parse(l, now).ok())
            .filter(|e| {
                (e.ts_ms + 8 * 3_600_000)
                    .div_euclid(3_600_000)
                    .rem_euclid(24)
                    == h
            })
            .count()
    };
    assert!(hour_count(21) > 10 * hour_count(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_mess_is_rejected_by_the_ingest_with_its_reason() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let (bytes, manifest) = run(&small(2, true));
    assert!(manifest.duplicates > 0 && manifest.late > 0);
    let expected: [(Malformed, &str); 11] = [
        (Malformed::NotUtf8, "message: not valid UTF-8"),
        (Malformed::NotJson, "message: not valid JSON"),
        (Malformed::NotAnObject, "message: expected a JSON object"),
        (Malformed::MissingTs, "ts: required field is missing"),
        (
            Malformed::UserIdNotANumber,
            "user_id: expected an unsigned integer",
        ),
        (Malformed::UnknownPlatform, "platform: unknown platform"),
        (Malformed::BadTypeName, "does not match ^[a-z]"),
        (Malformed::TsBefore2000, "is before 2000-01-01"),
        (Malformed::TsFarFuture, "more than 24 h ahead"),
        (
            Malformed::FollowWithoutAccount,
            "account_id: required for type follow",
        ),
        (Malformed::TooLarge, "larger than the 1 MiB limit"),
    ];
    for (kind, _) in &expected {
        assert!(
            manifest.malformed.get(kind).copied().unwrap_or(0) > 0,
            "{kind:?} never generated"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dirty.ndjson");
    std::fs::write(&file, &bytes).unwrap();
    let lake = Lake::new(&dir.path().join("lake").to_string_lossy()).unwrap();
    let mut writer = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    ingest::backfill::run(&mut writer, &file, |_| {})
        .await
        .unwrap();

    let ctx = session(&dir.path().join("lake")).await;
    for (kind, fragment) in &expected {
        let sql =
            format!("SELECT count(*) AS n FROM rejected WHERE strpos(reason, '{fragment}') > 0");
        let n = query(&ctx, &sql).await[0]["n"].as_u64().unwrap();
        assert_eq!(
            n, manifest.malformed[kind],
            "{kind:?}: rejections with {fragment:?}"
        );
        assert!(
            kind.field() == "message"
                || fragment.starts_with(kind.field())
                || fragment.contains("before")
                || fragment.contains("ahead")
                || fragment.contains("match")
        );
    }
    let total: u64 = manifest.malformed.values().sum();
    let r = query(&ctx, "SELECT count(*) AS n FROM rejected").await;
    assert_eq!(r[0]["n"].as_u64(), Some(total));
    let e = query(
        &ctx,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events",
    )
    .await;
    assert_eq!(e[0]["n"].as_u64(), Some(manifest.valid_messages));
    assert_eq!(e[0]["d"].as_u64(), Some(manifest.distinct_events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_output_holds_the_valid_events_in_the_lake_schema() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pq");
    let manifest = spacepulse_tests::generated_parquet(&out);
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    ctx.register_parquet(
        "g",
        out.join("events.parquet").to_str().unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let r = query(&ctx, "SELECT count(*) AS n, count(DISTINCT event_id) AS d, sum(CASE WHEN type = 'photo_upload' THEN photos END) AS p FROM g").await;
    assert_eq!(r[0]["n"].as_u64(), manifest["valid_messages"].as_u64());
    assert_eq!(r[0]["d"].as_u64(), manifest["distinct_events"].as_u64());
    assert_eq!(r[0]["p"].as_u64(), manifest["days"][0]["photos"].as_u64());
    // --dirty has no place in Parquet: a usage error naming the flag.
    let (code, _, e) = spacepulse(&[
        "datasets",
        "generate",
        "--dirty",
        "--format",
        "parquet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("--dirty"), "{e}");
}

/// A fixture's events, each valid by the contract.
fn parse_fixture(name: &str, path: &std::path::Path) -> Vec<lake::decode::Event<'static>> {
    let text: &'static str = Box::leak(std::fs::read_to_string(path).unwrap().into_boxed_str());
    let now = chrono::Utc::now().timestamp_millis();
    text.lines()
        .map(|l| {
            lake::decode::parse(l.as_bytes(), now).unwrap_or_else(|r| panic!("{name}: {r}: {l}"))
        })
        .collect()
}

/// Every activity fixture's events give its hand-worked days (events, users, uploads).
#[test]
fn every_activity_fixture_matches_its_hand_worked_figures() {
    let _turn = spacepulse_tests::HEAVY.blocking_lock();
    for (name, path, expected) in spacepulse_tests::fixtures("days") {
        let events = parse_fixture(&name, &path);
        assert_eq!(
            events.len() as u64,
            expected["messages"].as_u64().unwrap(),
            "{name}"
        );
        let mut seen = HashSet::new();
        let mut days: BTreeMap<String, (u64, HashSet<u64>, u64, u64)> = BTreeMap::new();
        for e in &events {
            if !seen.insert(e.event_id.to_string()) {
                continue;
            }
            let d = days.entry(day_of(e.ts_ms)).or_default();
            d.0 += 1;
            d.1.insert(e.user_id);
            if e.event_type == "photo_upload" {
                d.2 += 1;
                d.3 += u64::from(e.photos.unwrap());
            }
        }
        assert_eq!(
            seen.len() as u64,
            expected["distinct_events"].as_u64().unwrap(),
            "{name}"
        );
        for want in expected["days"].as_array().unwrap() {
            let d = &days[want["day"].as_str().unwrap()];
            assert_eq!(d.0, want["events"].as_u64().unwrap(), "{name}: {want}");
            assert_eq!(
                d.1.len() as u64,
                want["dau"].as_u64().unwrap(),
                "{name}: {want}"
            );
            assert_eq!(
                (d.2, d.3),
                (
                    want["uploads"].as_u64().unwrap(),
                    want["photos"].as_u64().unwrap()
                ),
                "{name}: {want}"
            );
        }
    }
}

/// Every funnel fixture's events give its launch curve: each reserver's first reservation
/// (where the fixture lists them) and the milestones, counted from the start.
#[test]
fn every_funnel_fixture_matches_its_launch_curve() {
    let _turn = spacepulse_tests::HEAVY.blocking_lock();
    for (name, path, expected) in spacepulse_tests::fixtures("campaign") {
        let events = parse_fixture(&name, &path);
        let id = expected["campaign"]["id"].as_str().unwrap();
        let start = expected["campaign"]["start_ms"].as_i64().unwrap();
        let mut first: HashMap<u64, i64> = HashMap::new();
        for e in events
            .iter()
            .filter(|e| e.event_type == "reserve" && e.campaign_id.as_deref() == Some(id))
        {
            let t = first.entry(e.user_id).or_insert(e.ts_ms);
            *t = (*t).min(e.ts_ms);
        }
        if let Some(offsets) = expected["launch_curve"]["first_reserve_offsets_ms"].as_object() {
            assert_eq!(first.len(), offsets.len(), "{name}");
            for (user, off) in offsets {
                assert_eq!(
                    first[&user.parse::<u64>().unwrap()] - start,
                    off.as_i64().unwrap(),
                    "{name}: user {user}"
                );
            }
        }
        for (secs, n) in expected["launch_curve"]["milestones"].as_object().unwrap() {
            let s: i64 = secs.parse().unwrap();
            let got = first
                .values()
                .filter(|t| **t >= start && **t < start + s * 1000)
                .count() as u64;
            assert_eq!(got, n.as_u64().unwrap(), "{name}: +{s}s");
        }
    }
}

#[test]
fn hashed_ids_and_the_user_pool_flags() {
    let _turn = spacepulse_tests::HEAVY.blocking_lock();
    let options = Options {
        days: 1,
        scale: 0.0002,
        users: Some(200_000),
        id_space: datasets::generate::IdSpace::U64,
        ..Options::default()
    };
    let (bytes, manifest) = run(&options);
    assert_eq!(manifest.user_pool, 200_000);
    let now = chrono::Utc::now().timestamp_millis();
    let mut users = HashSet::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let ev = lake::decode::parse(line, now).unwrap();
        assert!(ev.user_id > 0 && ev.user_id < 1 << 63, "{}", ev.user_id);
        users.insert(ev.user_id);
    }
    assert_eq!(users.len() as u64, manifest.distinct_users);
    // Hashed over 63 bits: nearly every id is far past any QQ number.
    let wide = users.iter().filter(|u| **u >= 10_000_000_000).count();
    assert!(
        wide as f64 > 0.99 * users.len() as f64,
        "{wide} of {}",
        users.len()
    );
    // The same ranks as QQ numbers: as many distinct users, another id space.
    let (_, qq) = run(&Options {
        id_space: datasets::generate::IdSpace::Qq,
        ..options.clone()
    });
    assert_eq!(qq.distinct_users, manifest.distinct_users);
    // Bad pool flags are usage errors naming the flag.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    for (args, flag) in [
        (vec!["--users", "10"], "--users"),
        (vec!["--users", "20000000000"], "--users"),
        (vec!["--id-space", "u128"], "--id-space"),
    ] {
        let mut all = vec!["datasets", "generate", "--out", out.to_str().unwrap()];
        all.extend(args);
        let (code, _, e) = spacepulse(&all);
        assert_eq!(code, 2, "{e}");
        assert!(e.contains(flag), "{e}");
    }
}
