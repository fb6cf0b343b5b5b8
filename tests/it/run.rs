//! `spacepulse run` against Tansu: one process ingests, runs the jobs as events land and serves
//! reports that follow the topic; it outlives its broker going away and coming back, and
//! stops on SIGTERM.

use std::time::Duration;

use serde_json::Value;
use spacepulse_tests::{
    Broker, HEAVY, Server, add_launch, create_topic, http, issue_token, ndjson, ok, produce,
    staff_token, test_dir, valid_events, wait_for,
};

/// One row of SQL over HTTP as JSON; `None` until the tables exist.
fn sql_row(addr: &str, token: &str, sql: &str) -> Option<Value> {
    let (status, body) = http(addr, "POST", "/api/v1/sql", Some(token), sql);
    if status == 400 && body.contains("not found") {
        return None;
    }
    assert_eq!(status, 200, "{sql}: {body}");
    Some(serde_json::from_str(body.lines().next().unwrap_or("{}")).unwrap())
}

/// Distinct users per day from the events, summed, beside the activity report's DAU summed:
/// equal once the jobs have seen every event.
fn dau_sums(addr: &str, token: &str) -> (i64, i64) {
    let from_events = sql_row(
        addr,
        token,
        "SELECT coalesce(sum(n), 0) AS n FROM (SELECT local_date(ts, 'Asia/Shanghai') AS d, \
         count(DISTINCT user_id) AS n FROM events_dedup GROUP BY 1)",
    )
    .expect("the events table");
    let (status, body) = http(addr, "GET", "/api/v1/platform/activity", Some(token), "");
    if status != 200 {
        return (from_events["n"].as_i64().unwrap(), -1);
    }
    let report: Value = serde_json::from_str(&body).unwrap();
    let dau: i64 = report["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["breakdown"] == "total")
        .map(|r| r["dau"].as_i64().unwrap())
        .sum();
    (from_events["n"].as_i64().unwrap(), dau)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "needs Tansu and Prometheus's promtool: scripts/test installs them and runs this tier"
)]
async fn one_process_keeps_the_reports_following_the_topic() {
    let _turn = HEAVY.lock().await;
    let dir = test_dir();
    let mut broker = Broker::start(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 3).await;
    create_topic(&brokers, "produced", 1).await;
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let token = staff_token(lake, "analyst");
    let token = token.as_str();
    // A brand with a launch: its report follows the reservations as they land.
    ok(&[
        "accounts", "add", "acme", "--kind", "official", "--lake", lake,
    ]);
    ok(&[
        "accounts", "verify", "acme", "--reason", "checked", "--lake", lake,
    ]);
    ok(&[
        "campaigns",
        "add",
        "run-launch",
        "--lake",
        lake,
        "--account",
        "acme",
        "--start",
        "2015-04-28T00:00:00+08:00",
        "--window",
        "24h",
    ]);
    let brand = issue_token(lake, "official", "acme");
    let server = Server::start_command(&[
        "run",
        "--brokers",
        &brokers,
        "--lake",
        lake,
        "--jobs-every",
        "500ms",
        "--flush-secs",
        "0.5",
    ]);
    let addr = server.addr.clone();

    // Events produced: ingested, then the report follows, without any other command.
    let first = valid_events("run-a", 3000, 11);
    assert_eq!(produce(&brokers, "events", &first).await, 3000);
    let caught_up = |n: i64| {
        let addr = addr.clone();
        let token = token.to_string();
        move || {
            let count = sql_row(&addr, &token, "SELECT count(*) AS n FROM events_dedup");
            if count.and_then(|c| c["n"].as_i64()) != Some(n) {
                return false;
            }
            let (events, report) = dau_sums(&addr, &token);
            events == report
        }
    };
    wait_for(
        Duration::from_secs(90),
        "the report to show the first events",
        caught_up(3000),
    );

    // The broker goes away and comes back; the ingester starts again and the report follows.
    broker.restart();
    let second = valid_events("run-b", 2000, 12);
    assert_eq!(produce(&brokers, "events", &second).await, 2000);
    wait_for(
        Duration::from_secs(120),
        "the report to show the second events",
        caught_up(5000),
    );
    let (events, report) = dau_sums(&addr, token);
    assert!(events > 0 && events == report, "{events} vs {report}");

    // A launch: reservations by distinct users, in batches; after each batch the brand's
    // launch report counts every reserver so far, with no command run and no restart.
    let launch_ms: i64 = 1_430_150_400_000; // 2015-04-28T00:00:00+08:00
    let reserved = |batch: usize| {
        let addr = addr.clone();
        let brand = brand.clone();
        move || {
            let (status, body) = http(
                &addr,
                "GET",
                "/api/v1/campaigns/run-launch/launch",
                Some(&brand),
                "",
            );
            if status != 200 {
                return false;
            }
            let report: Value = serde_json::from_str(&body).unwrap();
            let users = report["milestones"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["users"].as_i64())
                .max();
            users == Some(batch as i64 * 200)
        }
    };
    for batch in 1..=3usize {
        let lines: Vec<String> = (0..200)
            .map(|i| {
                let n = (batch - 1) * 200 + i;
                format!(
                    r#"{{"event_id":"run-r-{n}","ts":{},"user_id":{},"type":"reserve","platform":"ios","campaign_id":"run-launch"}}"#,
                    launch_ms + n as i64 * 50,
                    900_000 + n
                )
            })
            .collect();
        assert_eq!(produce(&brokers, "events", &lines).await, 200);
        wait_for(
            Duration::from_secs(60),
            "the launch report to count the batch's reservations",
            reserved(batch),
        );
    }

    // Status: per partition its watermark (the newest event time consumed, here 2015) and
    // lag (nothing left); per job its last run and how complete it is.
    let operator = staff_token(lake, "operator");
    let (status, body) = http(&addr, "GET", "/api/v1/status", Some(&operator), "");
    assert_eq!(status, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    let parts = st["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{st}");
    for p in parts {
        assert!(
            p["watermark"]
                .as_str()
                .is_some_and(|w| w.starts_with("2015-04-2")),
            "{p}"
        );
        assert_eq!(p["lag"], 0, "{p}");
    }
    let campaigns = st["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "campaigns")
        .unwrap();
    assert!(campaigns["last_run"].is_string(), "{campaigns}");
    assert!(campaigns["complete_up_to"].is_string(), "{campaigns}");

    // The pipeline's metrics beside the server's, valid for Prometheus (promtool).
    let (status, text) = http(&addr, "GET", "/metrics", Some(&operator), "");
    assert_eq!(status, 200, "{text}");
    for (line, want) in [
        (
            "spacepulse_ingest_messages_total{outcome=\"accepted\"} ",
            5600.0,
        ),
        (
            "spacepulse_jobs_events_version_lag{job=\"campaigns\"} ",
            0.0,
        ),
    ] {
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
            .parse()
            .unwrap();
        assert_eq!(value, want, "{line}");
    }
    for name in [
        "spacepulse_ingest_commits_total",
        "spacepulse_ingest_lag_messages",
        "spacepulse_jobs_runs_total{job=\"activity\",outcome=\"ok\"}",
        "spacepulse_jobs_last_run_timestamp_seconds{job=\"campaigns\"}",
        "spacepulse_jobs_rows_total",
        "spacepulse_http_requests_total",
        "spacepulse_live_messages_total",
    ] {
        assert!(text.contains(name), "no {name} in\n{text}");
    }
    promtool_accepts(&text);

    // Every job has seen the newest events (the daily loop runs on its own clock, so a
    // stop could otherwise land in the middle of its run, which it drops, as it should).
    wait_for(
        Duration::from_secs(60),
        "every job to have seen the newest events version",
        || {
            let (status, body) = http(&addr, "GET", "/api/v1/status", Some(&operator), "");
            let st: Value = serde_json::from_str(&body).unwrap_or_default();
            status == 200
                && st["jobs"]
                    .as_array()
                    .is_some_and(|j| j.iter().all(|j| j["versions_behind"] == 0))
        },
    );
    // SIGTERM: everything stops, exit 0.
    assert_eq!(server.stop().code(), Some(0));
    // What it committed is whole: a plain `jobs run` finds nothing left to do.
    let after: Value =
        serde_json::from_str(&ok(&["jobs", "run", "--json", "--lake", lake])).unwrap();
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["up_to_date"] == true),
        "{after}"
    );
}

/// `promtool check metrics` (Prometheus's own linter, Debian's `prometheus` package, which
/// scripts/test installs) passes on `text`.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let tool = std::env::var("SPACEPULSE_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = std::process::Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e} (scripts/test installs Debian's prometheus)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `line` (its name and labels, then a space) in metrics `text`.
fn sample(text: &str, line: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
}

/// The roles split across processes: `ingest --metrics-listen` serves the ingester's metrics
/// (messages, rejects by field, commits and their latency, lag and watermark per partition)
/// to a scraper's token and no one else's; `jobs run --metrics-file` writes the jobs' for
/// node_exporter's textfile collector; `serve` lets the scraper read `/metrics` and nothing
/// more. promtool accepts each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "needs Tansu and Prometheus's promtool: scripts/test installs them and runs this tier"
)]
async fn split_roles_export_their_metrics_to_a_scrape_only_token() {
    let _turn = HEAVY.lock().await;
    let dir = test_dir();
    let broker = Broker::start(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 2).await;
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let analyst = staff_token(lake, "analyst");
    let scraper = issue_token(lake, "scraper", "bi");

    let mut lines = valid_events("split", 1000, 21);
    lines.push(
        r#"{"event_id":"bad-1","ts":1430150400000,"user_id":-5,"type":"like","platform":"ios"}"#
            .into(),
    );
    lines.push(
        r#"{"event_id":"bad-2","ts":1430150400000,"user_id":1,"type":"like","platform":"symbian"}"#
            .into(),
    );
    lines.push("this is not JSON".into());
    assert_eq!(produce(&brokers, "events", &lines).await, 1003);

    let ingester = Server::start_listening(
        &[
            "ingest",
            "--brokers",
            &brokers,
            "--lake",
            lake,
            "--flush-secs",
            "0.2",
        ],
        "--metrics-listen",
    );
    let addr = ingester.addr.clone();
    let scrape = |token: Option<&str>| http(&addr, "GET", "/metrics", token, "");
    wait_for(
        Duration::from_secs(60),
        "the ingester's metrics to count every message",
        || {
            let (status, text) = scrape(Some(&scraper));
            status == 200
                && sample(
                    &text,
                    "spacepulse_ingest_messages_total{outcome=\"accepted\"} ",
                ) == Some(1000.0)
                && sample(&text, "spacepulse_ingest_lag_messages ") == Some(0.0)
                // Counted as decoded; the watermark moves when a commit lands.
                && ["0", "1"].iter().all(|p| {
                    sample(
                        &text,
                        &format!("spacepulse_ingest_watermark_timestamp_seconds{{topic=\"events\",partition=\"{p}\"}} "),
                    )
                    .is_some()
                })
        },
    );
    let (_, text) = scrape(Some(&scraper));
    for (line, want) in [
        (
            "spacepulse_ingest_messages_total{outcome=\"rejected\"} ",
            3.0,
        ),
        ("spacepulse_ingest_rejected_total{field=\"user_id\"} ", 1.0),
        ("spacepulse_ingest_rejected_total{field=\"platform\"} ", 1.0),
        ("spacepulse_ingest_rejected_total{field=\"message\"} ", 1.0),
        (
            "spacepulse_ingest_partition_lag_messages{topic=\"events\",partition=\"0\"} ",
            0.0,
        ),
        (
            "spacepulse_ingest_partition_lag_messages{topic=\"events\",partition=\"1\"} ",
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, line), Some(want), "{line} in\n{text}");
    }
    let commits = sample(&text, "spacepulse_ingest_commits_total ").unwrap();
    assert!(commits >= 1.0, "{text}");
    assert!(
        sample(&text, "spacepulse_ingest_commit_duration_seconds_count ").unwrap() >= 1.0,
        "{text}"
    );
    // The watermark: the newest event time consumed (valid_events are of 2015-04-28).
    for p in ["0", "1"] {
        let w = sample(
            &text,
            &format!("spacepulse_ingest_watermark_timestamp_seconds{{topic=\"events\",partition=\"{p}\"}} "),
        )
        .unwrap_or_else(|| panic!("no watermark for partition {p} in\n{text}"));
        assert!((1_430_150_400.0..1_430_236_800.0).contains(&w), "{w}");
    }
    promtool_accepts(&text);
    // Only a scraper's or an operator's token reads it.
    assert_eq!(scrape(None).0, 401);
    assert_eq!(scrape(Some("spt_0000")).0, 401);
    let (status, body) = scrape(Some(&analyst));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("scraper"), "{body}");
    assert_eq!(http(&addr, "GET", "/nothing", None, "").0, 404);
    assert_eq!(ingester.stop().code(), Some(0));

    // The jobs' run, as a textfile for node_exporter.
    let file = dir.path().join("jobs.prom");
    let run_jobs = || {
        ok(&[
            "jobs",
            "run",
            "--lake",
            lake,
            "--metrics-file",
            file.to_str().unwrap(),
        ])
    };
    run_jobs();
    let text = std::fs::read_to_string(&file).unwrap();
    for job in ["activity", "peaks", "campaigns", "accounts", "advertisers"] {
        assert_eq!(
            sample(
                &text,
                &format!("spacepulse_jobs_runs_total{{job=\"{job}\",outcome=\"ok\"}} ")
            ),
            Some(1.0),
            "{job} in\n{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("spacepulse_jobs_events_version_lag{{job=\"{job}\"}} ")
            ),
            Some(0.0),
            "{job} in\n{text}"
        );
    }
    let rows = sample(&text, "spacepulse_jobs_rows_total{job=\"activity\"} ").unwrap();
    assert!(rows > 0.0, "{text}");
    promtool_accepts(&text);
    // The next run's file goes on counting from this one's (counters never go back).
    run_jobs();
    let again = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        sample(
            &again,
            "spacepulse_jobs_runs_total{job=\"activity\",outcome=\"ok\"} "
        ),
        Some(2.0),
        "{again}"
    );
    assert_eq!(
        sample(&again, "spacepulse_jobs_rows_total{job=\"activity\"} "),
        Some(rows),
        "{again}"
    );
    promtool_accepts(&again);

    // The dashboard: the scraper reads /metrics, and not a report.
    let server = Server::start(&["--lake", lake]);
    let (status, text) = http(&server.addr, "GET", "/metrics", Some(&scraper), "");
    assert_eq!(status, 200, "{text}");
    promtool_accepts(&text);
    let (status, body) = http(
        &server.addr,
        "GET",
        "/api/v1/platform/activity",
        Some(&scraper),
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(server.stop().code(), Some(0));
}

/// `run` killed with SIGKILL at five random moments while a launch streams in (the generator's
/// data: teasers, view-only visitors, producer retries, late events, malformed messages), each
/// time started again over the same lake. Then: every message is in the lake exactly once (an
/// event or a rejection), and every metric table, published by runs that were killed part
/// way, equals a full recompute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "needs Tansu and Prometheus's promtool: scripts/test installs them and runs this tier"
)]
async fn kill_9_during_a_launch_loses_and_doubles_nothing_and_reports_equal_a_full_recompute() {
    use datasets::generate::{NdjsonSink, Options, generate};
    let _turn = HEAVY.lock().await;
    let dir = test_dir();
    // One message per batch: Tansu's in-memory engine serves a fetch from the first batch
    // starting at or after the offset asked (tests/it/tansu.rs).
    let broker = Broker::in_memory(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 3).await;
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap();
    let options = Options {
        days: 2,
        scale: 0.00004,
        dirty: true,
        oversized: false,
        ..Options::default()
    };
    let mut sink = NdjsonSink(Vec::new());
    let manifest = generate(&options, &mut sink).unwrap();
    // Messages as bytes: the dirty ones include invalid UTF-8.
    let lines: Vec<Vec<u8>> = sink
        .0
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    add_launch(lake, &manifest.launch.start);
    let analyst = staff_token(lake, "analyst");
    let operator = staff_token(lake, "operator");

    let producer = {
        let (brokers, lines) = (brokers.clone(), lines.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            let chunks = lines.chunks(lines.len().div_ceil(20));
            for chunk in chunks {
                sent += spacepulse_tests::produce_bytes(
                    &brokers,
                    "events",
                    &[("batch.num.messages", "1")],
                    ndjson(chunk),
                )
                .await;
                // A stream, not a bulk load.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            sent
        })
    };
    // Each start in a fresh consumer group: Tansu keeps a member killed soon after joining
    // for good (DESIGN.md); the lake, not the group, holds the offsets.
    let start = |i: usize| {
        Server::start_command(&[
            "run",
            "--brokers",
            &brokers,
            "--lake",
            lake,
            "--group",
            &format!("kill-{i}"),
            "--jobs-every",
            "200ms",
            "--flush-secs",
            "0.3",
        ])
    };
    let mut rng = spacepulse_tests::Rng(21);
    for i in 0..5 {
        let server = start(i);
        // A random moment: ingesting, committing, running or publishing a job.
        tokio::time::sleep(Duration::from_millis(1000 + rng.below(3000))).await;
        server.kill();
    }
    assert_eq!(producer.await.unwrap(), lines.len() as u64);

    // Started once more, it catches up: every message in the lake, every job up to date.
    let server = start(5);
    let addr = server.addr.clone();
    let messages = lines.len() as i64;
    // What it waits on, printed when it changes (a timeout then says why).
    let mut last = String::new();
    let mut report = |state: String| {
        if state != last {
            eprintln!("waiting: {state}");
            last = state;
        }
    };
    wait_for(
        Duration::from_secs(180),
        "run to take in every message and bring every job up to date",
        || {
            let stored = ["events", "rejected"]
                .iter()
                .map(|t| {
                    sql_row(&addr, &analyst, &format!("SELECT count(*) AS n FROM {t}"))
                        .and_then(|r| r["n"].as_i64())
                        .unwrap_or(0)
                })
                .sum::<i64>();
            if stored != messages {
                report(format!("{stored} of {messages} messages stored"));
                return false;
            }
            let (status, body) = http(&addr, "GET", "/api/v1/status", Some(&operator), "");
            let st: Value = serde_json::from_str(&body).unwrap_or_default();
            let done = status == 200
                && st["jobs"]
                    .as_array()
                    .is_some_and(|j| !j.is_empty() && j.iter().all(|j| j["versions_behind"] == 0));
            if !done {
                report(format!("jobs behind: {status} {}", st["jobs"]));
            }
            done
        },
    );
    assert_eq!(server.stop().code(), Some(0));

    // Nothing doubled: each offset once, across both tables.
    let ctx = spacepulse_tests::session(&lake_dir).await;
    let offsets = spacepulse_tests::query(
        &ctx,
        "SELECT count(*) AS n, count(DISTINCT (source_partition, source_offset)) AS d FROM \
         (SELECT source_partition, source_offset FROM events \
          UNION ALL SELECT source_partition, source_offset FROM rejected)",
    )
    .await;
    assert_eq!(offsets[0]["n"].as_i64(), Some(messages));
    assert_eq!(offsets[0]["d"].as_i64(), Some(messages));

    // What the killed and restarted runs published equals a full recompute.
    let published = spacepulse_tests::snapshot(&lake_dir).await;
    ok(&["jobs", "run", "--full", "--lake", lake]);
    let full = spacepulse_tests::snapshot(&lake_dir).await;
    assert_eq!(
        published.keys().collect::<Vec<_>>(),
        full.keys().collect::<Vec<_>>()
    );
    for name in ["activity", "funnels", "launch_curve", "launch_milestones"] {
        assert!(!full[name].is_empty(), "{name} is empty");
    }
    for (name, rows) in &full {
        assert!(
            published.get(name) == Some(rows),
            "{name}: what run published differs from a full recompute"
        );
    }
}

/// The accepted-messages counter of a `/metrics` text.
fn accepted(text: &str) -> f64 {
    sample(
        text,
        "spacepulse_ingest_messages_total{outcome=\"accepted\"} ",
    )
    .unwrap_or(0.0)
}

/// SIGINT and SIGTERM stop `run` (while it ingests, and while a job runs), `ingest` (while
/// it ingests) and `serve` (with a live stream open) within 10 s, exit 0, and lose nothing:
/// after them all, an ingest to the end holds every produced message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "needs Tansu and Prometheus's promtool: scripts/test installs them and runs this tier"
)]
async fn signals_stop_run_ingest_and_serve_in_every_phase() {
    let _turn = HEAVY.lock().await;
    let dir = test_dir();
    let broker = Broker::in_memory(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 3).await;
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let operator = staff_token(lake, "operator");
    let limit = Duration::from_secs(10);

    // A stream of events for the whole test.
    let streaming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let producer = {
        let (brokers, streaming) = (brokers.clone(), streaming.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            let mut round = 0;
            while streaming.load(std::sync::atomic::Ordering::Relaxed) {
                let lines = valid_events(&format!("sig{round}"), 500, round);
                sent += spacepulse_tests::produce_with(
                    &brokers,
                    "events",
                    &[("batch.num.messages", "1")],
                    &lines,
                )
                .await;
                round += 1;
            }
            sent
        })
    };
    let metrics = |addr: &str| http(addr, "GET", "/metrics", Some(&operator), "").1;
    // Ingesting: the accepted count moves between two scrapes.
    let ingesting = |addr: &str| {
        let before = accepted(&metrics(addr));
        wait_for(
            Duration::from_secs(60),
            "the ingester to take in events",
            || accepted(&metrics(addr)) > before,
        );
    };
    let run = || {
        Server::start_command(&[
            "run",
            "--brokers",
            &brokers,
            "--lake",
            lake,
            "--jobs-every",
            "100ms",
            "--flush-secs",
            "0.2",
        ])
    };

    for signal in ["-INT", "-TERM"] {
        // run, ingesting.
        let server = run();
        ingesting(&server.addr);
        assert_eq!(server.signal(signal, limit).code(), Some(0), "run {signal}");

        // run, a job running.
        let server = run();
        let addr = server.addr.clone();
        wait_for(Duration::from_secs(60), "a job to be running", || {
            let (_, body) = http(&addr, "GET", "/api/v1/status", Some(&operator), "");
            serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|s| {
                    s["jobs"]
                        .as_array()
                        .map(|j| j.iter().any(|j| j["running_since"].is_string()))
                })
                .unwrap_or(false)
        });
        assert_eq!(
            server.signal(signal, limit).code(),
            Some(0),
            "run {signal} (jobs)"
        );

        // ingest, ingesting.
        let ingester = Server::start_listening(
            &[
                "ingest",
                "--brokers",
                &brokers,
                "--lake",
                lake,
                "--flush-secs",
                "0.2",
            ],
            "--metrics-listen",
        );
        ingesting(&ingester.addr);
        assert_eq!(
            ingester.signal(signal, limit).code(),
            Some(0),
            "ingest {signal}"
        );

        // serve, a live stream open.
        let server = Server::start(&["--lake", lake, "--brokers", &brokers]);
        let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
        std::io::Write::write_all(
            &mut stream,
            format!(
                "GET /api/v1/live/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {operator}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut first = [0u8; 64];
        let n = std::io::Read::read(&mut stream, &mut first).unwrap();
        assert!(
            String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&first[..n])
        );
        assert_eq!(
            server.signal(signal, limit).code(),
            Some(0),
            "serve {signal}"
        );

        // datasets produce: waiting for standard input (a pipe that stays open), and
        // between two messages of a slow pace (one message every 100 s).
        for paced in [false, true] {
            let mut args = vec![
                "datasets",
                "produce",
                "--brokers",
                &brokers,
                "--topic",
                "produced",
                "--input",
                "-",
            ];
            if paced {
                args.extend(["--rate", "0.01"]);
            }
            let mut child = std::process::Command::new(spacepulse_tests::spacepulse_bin())
                .args(&args)
                .env("SPACEPULSE_LOG", "warn")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut input = child.stdin.take().unwrap();
            if paced {
                let lines = valid_events("paced", 2, 1).join("\n") + "\n";
                std::io::Write::write_all(&mut input, lines.as_bytes()).unwrap();
            }
            // The first line on standard error says it is producing; the rest is drained
            // on a thread, so the command never writes to a closed pipe.
            let (said_tx, said_rx) = std::sync::mpsc::channel();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
                let _ = said_tx.send(lines.next());
                for _ in lines {}
            });
            let said = said_rx
                .recv_timeout(limit)
                .expect("datasets produce said nothing")
                .and_then(Result::ok)
                .unwrap_or_default();
            assert!(said.starts_with("producing"), "{said}");
            // A paced producer sees the stop between two messages at once; one reading
            // standard input is left behind.
            let within = if paced { Duration::from_secs(3) } else { limit };
            assert_eq!(
                Server::process(child).signal(signal, within).code(),
                Some(0),
                "datasets produce {signal} (paced: {paced})"
            );
            drop(input);
        }
    }

    // Nothing lost or doubled by any of the stops.
    streaming.store(false, std::sync::atomic::Ordering::Relaxed);
    let produced = producer.await.unwrap() as i64;
    ok(&[
        "ingest",
        "--brokers",
        &brokers,
        "--lake",
        lake,
        "--until-caught-up",
    ]);
    let ctx = spacepulse_tests::session(std::path::Path::new(lake)).await;
    let r = spacepulse_tests::query(
        &ctx,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events",
    )
    .await;
    assert_eq!(r[0]["n"].as_i64(), Some(produced));
    assert_eq!(r[0]["d"].as_i64(), Some(produced));
}
