//! `spacepulse run` against Tansu: one process ingests, runs the jobs as events land and serves
//! reports that follow the topic; it outlives its broker going away and coming back, and
//! stops on SIGTERM.

use std::time::Duration;

use serde_json::Value;
use spacepulse_tests::{
    Broker, HEAVY, Server, create_topic, http, produce, spacepulse, staff_token, test_dir,
    valid_events, wait_for,
};

fn ok(args: &[&str]) -> String {
    let (code, out, err) = spacepulse(args);
    assert_eq!(code, 0, "spacepulse {args:?}: {err}");
    out
}

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
async fn one_process_keeps_the_reports_following_the_topic() {
    let _turn = HEAVY.lock().await;
    let dir = test_dir();
    let mut broker = Broker::start(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 3).await;
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let token = staff_token(lake, "analyst");
    let token = token.as_str();
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

    // The pipeline's metrics beside the server's, valid for Prometheus (promtool).
    let operator = staff_token(lake, "operator");
    let (status, text) = http(&addr, "GET", "/metrics", Some(&operator), "");
    assert_eq!(status, 200, "{text}");
    for (line, want) in [
        (
            "spacepulse_ingest_messages_total{outcome=\"accepted\"} ",
            5000.0,
        ),
        ("spacepulse_jobs_events_version_lag ", 0.0),
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
        "spacepulse_jobs_runs_total{outcome=\"ok\"}",
        "spacepulse_jobs_rows_total",
        "spacepulse_http_requests_total",
        "spacepulse_live_messages_total",
    ] {
        assert!(text.contains(name), "no {name} in\n{text}");
    }
    promtool_accepts(&text);

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
