//! Against a real Kafka-compatible broker (Tansu) in its own process, with the ingester as a
//! separate process: kill -9, two ingesters in one group, a broker restart.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lake::ledger::Ledger;
use lake::tables::Lake;
use spacepulse_tests::{
    Broker, Rng, create_topic, event_id_counts, produce, produce_with, spacepulse, spacepulse_bin,
    valid_events,
};

/// An ingester process, killed if the test ends (or fails) while it still runs.
struct Ingester(Option<Child>);

impl Ingester {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
    fn take(mut self) -> Child {
        self.0.take().expect("running")
    }
}

impl Drop for Ingester {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ingester(brokers: &str, lake: &Path, group: &str, extra: &[&str]) -> Ingester {
    Ingester(Some(
        Command::new(spacepulse_bin())
            .args([
                "ingest",
                "--brokers",
                brokers,
                "--topic",
                "events",
                "--group",
                group,
            ])
            .args([
                "--lake",
                lake.to_str().unwrap(),
                "--flush-rows",
                "15000",
                "--flush-secs",
                "1",
            ])
            .args(["-X", "session.timeout.ms=6000"])
            .args(extra)
            .env(
                "SPACEPULSE_LOG",
                std::env::var("SPACEPULSE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the ingester"),
    ))
}

/// Waits for a process to exit; returns its exit code and stdout+stderr.
fn finish(ingester: Ingester, limit: Duration) -> (i32, String) {
    let mut child = ingester.take();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.code().unwrap_or(-1), text);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ingester did not finish in {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn terminate(ingester: &mut Ingester) {
    let child = ingester.child();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM");
}

/// Messages the lake's events table covers, summed over the topic's partitions.
async fn covered(lake: &Path) -> i64 {
    let Ok(lake) = Lake::new(&lake.to_string_lossy()) else {
        return 0;
    };
    match Ledger::read(&lake).await {
        Ok(l) => l
            .partitions
            .iter()
            .filter(|p| p.source == "events")
            .map(|p| p.events_covered.map_or(0, |c| c + 1))
            .sum(),
        Err(_) => 0,
    }
}

async fn wait_covered(lake: &Path, n: i64, limit: Duration) {
    let start = Instant::now();
    loop {
        let c = covered(lake).await;
        if c >= n {
            assert_eq!(c, n, "the lake covers more offsets than were produced");
            return;
        }
        assert!(
            start.elapsed() < limit,
            "the lake covers {c} of {n} offsets after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts the lake holds exactly `expected` event ids, each once.
async fn assert_exactly(lake: &Path, expected: &[String]) {
    let (total, ids) = event_id_counts(lake).await;
    let now = chrono::Utc::now().timestamp_millis();
    // The valid events among what was produced.
    let want: HashSet<String> = expected
        .iter()
        .filter_map(|l| lake::decode::parse(l.as_bytes(), now).ok())
        .map(|e| e.event_id.into_owned())
        .collect();
    let dups: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicated in the lake: {dups:?}");
    let missing: Vec<_> = want
        .iter()
        .filter(|id| !ids.contains_key(*id))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "missing from the lake: {missing:?}");
    assert_eq!(
        ids.len(),
        want.len(),
        "ids in the lake that were never produced"
    );
    assert_eq!(total as usize, want.len());
}

/// Produces `n` events (and a bad message every 10,000) in waves while the ingester is
/// killed with SIGKILL at five random moments and restarted, each time in a fresh group (the
/// lake, not the group, holds the positions); then checks that the lake holds every event
/// exactly once, every rejection once, and (the last ingester having vacuumed at its start)
/// no file the log does not reference. `producer` is librdkafka properties for the producer.
async fn kill_9_scenario(
    brokers: &str,
    dir: &Path,
    n: usize,
    pace: Duration,
    producer: &'static [(&'static str, &'static str)],
) {
    let mut lines = valid_events("k", n, 42);
    for i in 0..n / 10_000 {
        lines.insert(i * 10_000 + 5, format!(r#"{{"event_id":"bad-{i}","ts":1430150400000,"user_id":"x{i}","type":"like","platform":"ios"}}"#));
    }
    let bad = n / 10_000;
    let lake = dir.join("lake");
    let producer = {
        let (brokers, lines) = (brokers.to_string(), lines.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            for chunk in lines.chunks(5_000) {
                sent += produce_with(&brokers, "events", producer, chunk).await;
                // A stream, not a bulk load.
                tokio::time::sleep(pace).await;
            }
            sent
        })
    };
    let mut rng = Rng(7);
    for round in 0..5 {
        let mut child = ingester(brokers, &lake, &format!("kill-{round}"), &[]);
        // A random moment: anywhere from start-up to mid-commit.
        tokio::time::sleep(Duration::from_millis(1500 + rng.below(3500))).await;
        child.child().kill().unwrap(); // SIGKILL
        child.child().wait().unwrap();
    }
    assert_eq!(producer.await.unwrap(), lines.len() as u64);
    let partial = covered(&lake).await;
    // Whatever the kills left behind, one unpublished file for certain.
    let stray = lake.join("events/date=2015-04-28/hour=00/unpublished-by-a-killed-run.parquet");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"PAR1 never committed").unwrap();
    let (code, out) = finish(
        // Alone on the lake now, it may remove every unpublished file at its start.
        ingester(
            brokers,
            &lake,
            "final",
            &["--until-caught-up", "--vacuum-retain", "0s"],
        ),
        Duration::from_secs(600),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        covered(&lake).await,
        lines.len() as i64,
        "covered {partial} before the final run"
    );
    assert_exactly(&lake, &lines).await;
    let ctx = spacepulse_tests::session(&lake).await;
    let r = spacepulse_tests::query(
        &ctx,
        "SELECT count(*) AS n, count(DISTINCT raw) AS d FROM rejected",
    )
    .await;
    assert_eq!(
        (r[0]["n"].as_i64(), r[0]["d"].as_i64()),
        (Some(bad as i64), Some(bad as i64))
    );

    // The final ingester removed what the killed ones wrote but never committed: every
    // Parquet file on disk is one the log references, and a vacuum finds nothing left.
    let ledger = Ledger::read(&Lake::new(&lake.to_string_lossy()).unwrap())
        .await
        .unwrap();
    let on_disk = parquet_files(&lake.join("events"));
    assert_eq!(
        on_disk as u64, ledger.events_files,
        "unpublished files left after the final ingester's start"
    );
    assert!(!stray.exists(), "{} is still there", stray.display());
    let (code, out, err) = spacepulse(&[
        "lake",
        "vacuum",
        "--lake",
        lake.to_str().unwrap(),
        "--retain",
        "0s",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("events: deleted 0 unreferenced files"),
        "{out}"
    );
    assert_eq!(ledger.events_rows, n as u64);
}

/// The real broker in its own process, 200,000 events, on Tansu's in-memory engine: its
/// SQLite engine reads a partition's whole remaining log on every fetch, so 200,000 events
/// outlast any test (the broker-restart test below runs on SQLite). The in-memory engine
/// answers a fetch from the first batch *starting* at or after the offset asked, so a restart
/// that resumes inside a batch would never get the batch's rest (tansu-storage 0.6,
/// `dynostore.rs`; the ledger shows such a gap, the fencing tests count it): the producer here
/// sends one message per batch, which makes every offset a batch's start. The 20,000-event run
/// below covers resuming inside batches on SQLite, which serves them as Kafka does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "needs Tansu, the real broker: scripts/test installs it and runs this tier"
)]
async fn kill_9_at_random_moments_200k_events_against_tansu() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let dir = spacepulse_tests::test_dir();
    let broker = Broker::in_memory(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 4).await;
    kill_9_scenario(
        &brokers,
        dir.path(),
        200_000,
        Duration::from_millis(100),
        &[("batch.num.messages", "1")],
    )
    .await;
}

/// The same on Tansu's SQLite engine with the producer's default batches, 20,000 events.
/// Tansu answers watermark queries slowly once its log has grown, which is why the ingester
/// reads its lag from librdkafka's statistics: a query per partition and second starved the
/// loop here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "needs Tansu, the real broker: scripts/test installs it and runs this tier"
)]
async fn kill_9_at_random_moments_against_tansu_sqlite() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let dir = spacepulse_tests::test_dir();
    let broker = Broker::start(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 4).await;
    kill_9_scenario(
        &brokers,
        dir.path(),
        20_000,
        Duration::from_millis(1000),
        &[],
    )
    .await;
}

fn parquet_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "_delta_log" {
                n += parquet_files(&p);
            }
        } else if p.extension().is_some_and(|e| e == "parquet") {
            n += 1;
        }
    }
    n
}

fn accepted_in(summary: &str) -> u64 {
    summary
        .lines()
        .find_map(|l| l.strip_prefix("ingested "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in: {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "needs Tansu, the real broker: scripts/test installs it and runs this tier"
)]
async fn two_ingesters_in_one_group_split_the_partitions() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let dir = spacepulse_tests::test_dir();
    let broker = Broker::start(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 4).await;
    let lines = valid_events("g", 24_000, 3);
    let lake = dir.path().join("lake");
    let mut a = ingester(&brokers, &lake, "pair", &[]);
    let mut b = ingester(&brokers, &lake, "pair", &[]);
    // Produce in waves while both members join and the group rebalances.
    for (wave, chunk) in lines.chunks(4_000).enumerate() {
        assert_eq!(produce(&brokers, "events", chunk).await, 4_000);
        wait_covered(&lake, 4_000 * (wave as i64 + 1), Duration::from_secs(180)).await;
    }
    terminate(&mut a);
    terminate(&mut b);
    let (code_a, out_a) = finish(a, Duration::from_secs(60));
    let (code_b, out_b) = finish(b, Duration::from_secs(60));
    assert_eq!((code_a, code_b), (0, 0), "{out_a}\n{out_b}");
    let (na, nb) = (accepted_in(&out_a), accepted_in(&out_b));
    assert!(
        na > 0 && nb > 0,
        "both members ingest a share: {na} and {nb}"
    );
    assert_exactly(&lake, &lines).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "external"),
    ignore = "needs Tansu, the real broker: scripts/test installs it and runs this tier"
)]
async fn a_broker_restart_loses_nothing() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let dir = spacepulse_tests::test_dir();
    let mut broker = Broker::start(dir.path());
    let brokers = broker.brokers();
    create_topic(&brokers, "events", 2).await;
    let first = valid_events("r1", 30_000, 5);
    produce(&brokers, "events", &first).await;
    let lake = dir.path().join("lake");
    let mut child = ingester(&brokers, &lake, "restart", &[]);
    let start = Instant::now();
    while covered(&lake).await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress before the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.restart();
    let second = valid_events("r2", 30_000, 6);
    produce(&brokers, "events", &second).await;
    wait_covered(&lake, 60_000, Duration::from_secs(300)).await;
    terminate(&mut child);
    let (code, out) = finish(child, Duration::from_secs(60));
    assert_eq!(code, 0, "{out}");
    let all: Vec<String> = first.into_iter().chain(second).collect();
    assert_exactly(&lake, &all).await;
}
