//! The demo and the dashboard as a user meets them: `spacepulse demo --headless` sets
//! everything up and prints a URL and tokens that work; against Tansu, a real Chromium logs in
//! as the official account and as an operator and finds the launch's milestones and the live
//! counter rising (screenshots kept as artifacts).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use spacepulse_tests::{Broker, HEAVY, http, spacepulse_bin, test_dir};

/// A running demo: its URL, its printed tokens (account → token), its stdin (closing it stops
/// the demo) and everything it printed.
struct Demo {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: String,
    tokens: std::collections::HashMap<String, String>,
    printed: String,
}

/// `spacepulse demo --headless` on two small days, with stdin and stdout piped.
fn spawn_demo(dir: &Path, extra: &[&str]) -> Child {
    spawn_demo_sized(dir, "0.0001", "2", extra)
}

fn spawn_demo_sized(dir: &Path, scale: &str, days: &str, extra: &[&str]) -> Child {
    Command::new(spacepulse_bin())
        .args(["demo", "--dir", dir.to_str().unwrap(), "--headless"])
        .args(["--listen", "127.0.0.1:0", "--scale", scale, "--days", days])
        .args(extra)
        .env("SPACEPULSE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

impl Demo {
    fn start(dir: &Path, extra: &[&str]) -> Demo {
        let mut child = spawn_demo(dir, extra);
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // The demo's output up to "ready", read on a thread of its own so that a demo which
        // never gets ready (a broker that stopped answering) fails the test within its limit
        // instead of holding the suite.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut line = String::new();
                let n = out.read_line(&mut line).unwrap_or(0);
                let ready = line.starts_with("ready: open http://");
                if tx.send((n, line)).is_err() || n == 0 {
                    return;
                }
                if ready {
                    break;
                }
            }
            // Keep draining stdout so the demo never blocks on a full pipe.
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        });
        let limit = Instant::now() + Duration::from_secs(600);
        let mut printed = String::new();
        let mut addr = None;
        let mut tokens = std::collections::HashMap::new();
        loop {
            let wait = limit.saturating_duration_since(Instant::now());
            let Ok((n, line)) = rx.recv_timeout(wait) else {
                let _ = child.kill();
                panic!("the demo was not ready within 10 minutes:\n{printed}");
            };
            assert!(n > 0, "the demo ended before it was ready:\n{printed}");
            printed.push_str(&line);
            if let Some(url) = line.strip_prefix("dashboard: http://") {
                addr = Some(url.split('/').next().unwrap().to_string());
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() >= 3 && words[2].starts_with("spt_") {
                tokens.insert(words[1].to_string(), words[2].to_string());
            }
            if line.starts_with("ready: open http://") {
                break;
            }
        }
        Demo {
            child,
            stdin,
            addr: addr.unwrap_or_else(|| panic!("no dashboard line in:\n{printed}")),
            tokens,
            printed,
        }
    }

    /// Closes stdin: a headless demo stops cleanly.
    fn stop(mut self) -> i32 {
        drop(self.stdin.take());
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    fn get(&self, path: &str, who: &str) -> (u16, Value) {
        let (status, body) = http(&self.addr, "GET", path, Some(&self.tokens[who]), "");
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The generator's launch milestones from the demo's manifest: users by +1 s ... +24 h.
fn manifest_milestones(dir: &Path) -> Vec<(i64, u64)> {
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("data/manifest.json")).unwrap()).unwrap();
    m["launch"]["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["after_seconds"].as_i64().unwrap(),
                x["distinct_reservers"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn milestone_name(seconds: i64) -> String {
    match seconds {
        s if s % 3600 == 0 => format!("+{} h", s / 3600),
        s if s % 60 == 0 => format!("+{} min", s / 60),
        s => format!("+{s} s"),
    }
}

fn check_demo(demo: &Demo, dir: &Path) {
    for who in ["xiaomi", "meizu", "adv-1", "analyst", "ops"] {
        assert!(
            demo.tokens.contains_key(who),
            "no token for {who}:\n{}",
            demo.printed
        );
        let (s, me) = demo.get("/api/v1/me", who);
        assert_eq!(s, 200, "{who}: {me}");
        assert_eq!(me["account"]["id"], who);
    }
    let (s, launch) = demo.get("/api/v1/campaigns/redmi-launch/launch", "xiaomi");
    assert_eq!(s, 200, "{launch}");
    let shown: Vec<(i64, u64)> = launch["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["after_seconds"].as_i64().unwrap(),
                m["users"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = manifest_milestones(dir);
    assert_eq!(want.len(), 5);
    // The jobs report more milestones than the generator plans; each planned one agrees.
    let shown: Vec<(i64, u64)> = shown
        .into_iter()
        .filter(|(after, _)| want.iter().any(|w| w.0 == *after))
        .collect();
    assert!(want[4].1 > want[0].1, "{want:?}");
    assert_eq!(shown, want);
    // The pending account is told so; the advertiser sees its own report, not others'.
    let (s, body) = demo.get("/api/v1/accounts/meizu/followers", "meizu");
    assert_eq!(s, 403, "{body}");
    let (s, body) = demo.get("/api/v1/advertisers/adv-1/report", "adv-1");
    assert_eq!(s, 200, "{body}");
    assert!(
        body["totals"]["impressions"].as_u64().unwrap() > 0,
        "{body}"
    );
    let (s, _) = demo.get("/api/v1/advertisers/adv-2/report", "adv-1");
    assert_eq!(s, 404);
    let (s, activity) = demo.get("/api/v1/platform/activity", "analyst");
    assert_eq!(s, 200);
    assert!(!activity["rows"].as_array().unwrap().is_empty());
}

#[test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "the demo starts Tansu (and the browser test Chromium): scripts/test installs them and runs this tier"
)]
fn the_demo_prints_a_url_and_tokens_that_work_and_the_generators_milestones() {
    let dir = test_dir();
    let demo_dir = dir.path().join("demo");
    let demo = Demo::start(&demo_dir, &["--speed", "0"]);
    assert!(
        demo.printed.contains("embedded Kafka broker"),
        "{}",
        demo.printed
    );
    check_demo(&demo, &demo_dir);
    assert_eq!(demo.stop(), 0);

    // A second run reuses the directory and its tokens; --reset starts over.
    let again = Demo::start(&demo_dir, &[]);
    assert!(again.printed.contains("reusing"), "{}", again.printed);
    check_demo(&again, &demo_dir);
    assert_eq!(again.stop(), 0);
    // As CI runs it: stdin at its end from the start, so the demo exits after the setup.
    let (code, out, err) = spacepulse_tests::spacepulse(&[
        "demo",
        "--dir",
        demo_dir.to_str().unwrap(),
        "--reset",
        "--headless",
        "--scale",
        "0.0001",
        "--days",
        "2",
        "--speed",
        "50000",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    // This run paces the launch day (the dirty data's far-future `ts` must not stall it).
    assert!(
        out.contains("replaying the launch day: ")
            && out.contains("ingested")
            && out.contains("ready: open http://"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("stopped"), "{out}");
    // Every message produced reached the lake, accepted or rejected (none dropped by the
    // embedded broker's retention).
    let number_after = |prefix: &str, unit: &str| -> u64 {
        let rest = &out[out
            .find(prefix)
            .unwrap_or_else(|| panic!("{prefix}: {out}"))
            + prefix.len()..];
        let line = rest.lines().next().unwrap();
        let at = line.find(unit).unwrap_or_else(|| panic!("{unit}: {line}"));
        line[..at]
            .trim()
            .rsplit([' ', '('])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let produced = number_after("produced ", " messages");
    let ingested = number_after("ingested ", " events");
    let rejected = number_after("ingested ", " rejected");
    assert!(rejected > 0, "{out}");
    assert_eq!(ingested + rejected, produced, "{out}");
    let (code, _, err) = spacepulse_tests::spacepulse(&["demo", "--scale", "2", "--headless"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--scale"), "{err}");
}

#[test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "the demo starts Tansu (and the browser test Chromium): scripts/test installs them and runs this tier"
)]
fn a_signal_during_the_paced_replay_stops_the_demo_at_once() {
    let dir = test_dir();
    let demo_dir = dir.path().join("demo");
    // At real speed the launch day would take a day to replay.
    let mut child = spawn_demo(&demo_dir, &["--speed", "1"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = read_until(&mut out, "replaying the launch day: ");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The replay's sleep is cut short: the demo ends well before its day is over.
    let status = exits_within(
        &mut child,
        Duration::from_secs(60),
        "SIGTERM during the replay",
    );
    std::io::Read::read_to_string(&mut out, &mut printed).unwrap();
    assert_eq!(status.code(), Some(0), "{printed}");
    assert!(printed.contains("stopped during setup"), "{printed}");
}

/// Reads the child's standard output until a line starting with `prefix`; what it printed.
fn read_until(out: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut printed = String::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "the demo ended before {prefix:?}:\n{printed}");
        printed.push_str(&line);
        if line.starts_with(prefix) {
            return printed;
        }
    }
}

/// Waits for the child to exit within `limit`; its status.
fn exits_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{what}: still running {limit:?} later");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The broker gone while the demo produces (its queue fills and never drains), then SIGINT:
/// the demo stops at once instead of waiting on the queue for good. Then a headless demo
/// that is ready stops on SIGTERM though its standard input stays open.
#[test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "the demo starts Tansu (and the browser test Chromium): scripts/test installs them and runs this tier"
)]
fn signals_stop_the_demo_with_its_broker_gone_and_when_headless() {
    let dir = test_dir();
    let mut broker = Broker::in_memory(dir.path());
    let demo_dir = dir.path().join("demo");
    // Enough messages to fill librdkafka's queue (100,000) once nothing drains it.
    let brokers = broker.brokers();
    let mut child = spawn_demo_sized(
        &demo_dir,
        "0.002",
        "3",
        &["--brokers", &brokers, "--speed", "0"],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = read_until(&mut out, "generated ");
    broker.stop();
    let signal = |child: &Child, sig: &str| {
        let sent = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal(&child, "-INT");
    let status = exits_within(
        &mut child,
        Duration::from_secs(30),
        "SIGINT, the broker gone",
    );
    std::io::Read::read_to_string(&mut out, &mut printed).unwrap();
    assert_eq!(status.code(), Some(0), "{printed}");
    assert!(printed.contains("stopped during setup"), "{printed}");

    // Headless and ready, its standard input open (the test holds it): SIGTERM stops it.
    let mut child = spawn_demo(&dir.path().join("demo2"), &["--speed", "0"]);
    let _stdin = child.stdin.take();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let printed = read_until(&mut out, "ready: ");
    signal(&child, "-TERM");
    let status = exits_within(&mut child, Duration::from_secs(30), "SIGTERM, headless");
    assert_eq!(status.code(), Some(0), "{printed}");
}

/// Produces events with the current time to the broker until `stop`.
fn producing(brokers: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let config = datasets::produce::producer_config(&brokers, &[]);
        let mut sent = 0u64;
        let mut batch = 0u64;
        while !stop.load(Ordering::Relaxed) {
            batch += 1;
            let now = chrono::Utc::now().timestamp_millis();
            let lines: String = (0..200)
                .map(|i| {
                    format!(
                        "{{\"event_id\":\"live-{batch}-{i}\",\"ts\":{now},\"user_id\":{},\"type\":\"photo_upload\",\"platform\":\"ios\",\"photos\":2}}\n",
                        1000 + i
                    )
                })
                .collect();
            sent +=
                datasets::produce::produce_blocking(&config, "events", lines.as_bytes()).unwrap();
            // Pacing the load, not waiting for a result: the browser waits on the page.
            std::thread::sleep(Duration::from_millis(200));
        }
        sent
    })
}

fn node_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with scripts/test, which installs Chromium and playwright-core")
    })
}

/// Where screenshots go: `$SPACEPULSE_ARTIFACTS` or `target/test-artifacts`.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("SPACEPULSE_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| spacepulse_bin().parent().unwrap().join("test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "the demo starts Tansu (and the browser test Chromium): scripts/test installs them and runs this tier"
)]
async fn a_browser_logs_in_sees_the_launch_and_the_live_counter_rise_against_tansu() {
    let _heavy = HEAVY.lock().await;
    let dir = test_dir();
    // The in-memory engine: Tansu's SQLite engine, fetched from by two consumer groups while
    // the demo produces, stopped answering produce requests (REQTMOUT) in CI.
    let broker = Broker::in_memory(dir.path());
    let brokers = broker.brokers();
    let demo_dir = dir.path().join("demo");
    let demo = tokio::task::spawn_blocking({
        let demo_dir = demo_dir.clone();
        let brokers = brokers.clone();
        move || Demo::start(&demo_dir, &["--brokers", &brokers, "--speed", "0"])
    })
    .await
    .unwrap();
    check_demo(&demo, &demo_dir);

    // The generator's milestones by the names the page gives them.
    let want: serde_json::Map<String, Value> = manifest_milestones(&demo_dir)
        .iter()
        .map(|(after, users)| (milestone_name(*after), Value::from(*users)))
        .collect();
    let shots = artifacts();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = producing(brokers.clone(), stop.clone());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.cjs");
    let out = tokio::task::spawn_blocking({
        let addr = demo.addr.clone();
        let official = demo.tokens["xiaomi"].clone();
        let operator = demo.tokens["ops"].clone();
        let advertiser = demo.tokens["adv-1"].clone();
        let analyst = demo.tokens["analyst"].clone();
        let shots = shots.clone();
        move || {
            Command::new("node")
                .arg(script)
                .env("SPACEPULSE_URL", format!("http://{addr}"))
                .env("SPACEPULSE_OFFICIAL_TOKEN", official)
                .env("SPACEPULSE_OPERATOR_TOKEN", operator)
                .env("SPACEPULSE_ADVERTISER_TOKEN", advertiser)
                .env("SPACEPULSE_ADVERTISER", "adv-1")
                .env("SPACEPULSE_ANALYST_TOKEN", analyst)
                .env("SPACEPULSE_ACCOUNT", "xiaomi")
                .env("SPACEPULSE_CAMPAIGN", "redmi-launch")
                .env(
                    "SPACEPULSE_MILESTONES",
                    serde_json::to_string(&want).unwrap(),
                )
                .env("SPACEPULSE_SCREENSHOTS", &shots)
                .env(
                    "SPACEPULSE_NODE_MODULES",
                    node_env("SPACEPULSE_NODE_MODULES"),
                )
                .env("SPACEPULSE_CHROMIUM", node_env("SPACEPULSE_CHROMIUM"))
                .output()
                .expect("run node (scripts/test installs it)")
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    let found: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        found["live_then"].as_u64().unwrap() > found["live_first"].as_u64().unwrap() + 100,
        "{found}"
    );
    assert!(sent > 100);
    assert_eq!(found["milestone_names"][6], "+24 h", "{found}");
    assert_eq!(found["shared_milestones"], found["milestones"], "{found}");
    assert_eq!(found["adv_other_status"], 404, "{found}");
    assert!(found["analyst_days"].as_u64() > Some(0), "{found}");
    for shot in ["launch.png", "launch-phone.png", "shared.png", "live.png"] {
        let meta = std::fs::metadata(shots.join(shot)).unwrap();
        assert!(meta.len() > 10_000, "{shot} is {} bytes", meta.len());
    }
    let _ = std::io::stdout().flush();
    assert_eq!(demo.stop(), 0);
    drop(broker);
}
