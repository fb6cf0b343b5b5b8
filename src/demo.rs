//! `spacepulse demo`: the whole pipeline in one command.
//!
//! 1. A broker: librdkafka's mock cluster in process, unless `--brokers` names a real one.
//! 2. The registry: the verified official account `xiaomi` with its `redmi-launch` campaign,
//!    an official account still pending verification, an advertiser, an analyst and an
//!    operator, each with a token (printed, and kept in `<dir>/tokens.json`).
//! 3. The dashboard, live peaks included, so the URL is open while the data arrives.
//! 4. A generated week with the launch and upload peaks (`datasets generate`), produced
//!    through the real producer: the days before the launch at full speed, then the launch
//!    day replayed at `--speed` times real time so the live page shows the launch happening.
//! 5. The ingester until it has caught up and the metric jobs, exactly as `spacepulse ingest`
//!    and `spacepulse jobs run` do; the reports appear when the jobs publish.
//!
//! Ctrl-C stops everything; with `--headless`, the demo also stops when its standard input
//! ends (so `spacepulse demo --headless </dev/null` exits after setup, and a test that holds
//! its stdin open can use the printed URL and tokens first). A second run reuses the demo
//! directory (serving what is there) unless `--reset` starts over.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ingest::kafka::KafkaOptions;
use ingest::writer::{LakeWriter, WriterOptions};
use lake::registry::{AccountKind, Campaign, Registry, Role, VerificationState};
use lake::tables::Lake;
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};

use crate::UsageError;
use crate::cli::DemoArgs;
use crate::commands::{Progress, shutdown_signal};

const TOPIC: &str = "events";
/// The demo's accounts: (id, kind, name, role, verified).
const ACCOUNTS: &[(&str, AccountKind, &str, Role, bool)] = &[
    (
        "xiaomi",
        AccountKind::Official,
        "Xiaomi",
        Role::Official,
        true,
    ),
    (
        "meizu",
        AccountKind::Official,
        "Meizu (pending)",
        Role::Official,
        false,
    ),
    (
        "adv-1",
        AccountKind::Advertiser,
        "Advertiser 1",
        Role::Advertiser,
        true,
    ),
    (
        "analyst",
        AccountKind::Staff,
        "An analyst",
        Role::Analyst,
        true,
    ),
    (
        "ops",
        AccountKind::Staff,
        "An operator",
        Role::Operator,
        true,
    ),
];

pub async fn run(args: DemoArgs) -> Result<()> {
    if !(args.scale.is_finite() && args.scale > 0.0 && args.scale <= 0.1) {
        return Err(UsageError(format!(
            "--scale: expected a number above 0 and at most 0.1, got {}",
            args.scale
        ))
        .into());
    }
    if !(args.speed.is_finite() && args.speed >= 0.0) {
        return Err(UsageError(format!(
            "--speed: expected a non-negative factor (0: no pacing), got {}",
            args.speed
        ))
        .into());
    }
    if args.reset && args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("removing {}", args.dir.display()))?;
    }
    let lake_dir = args.dir.join("lake");
    let reuse = lake_dir.join("events").join("_delta_log").exists();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let lake = Lake::new(&lake_dir.to_string_lossy())?;

    // The broker.
    let mock;
    let brokers = match &args.brokers {
        Some(b) => {
            ensure_topic(b).await?;
            b.clone()
        }
        None => {
            mock = MockCluster::new(1).context("starting the embedded Kafka broker")?;
            // The mock keeps only the last 5 MiB of (compressed) batches per partition:
            // enough partitions hold the default week (checked after producing).
            mock.create_topic(TOPIC, EMBEDDED_PARTITIONS, 1)
                .context("creating the events topic")?;
            outln!(
                "embedded Kafka broker (librdkafka's mock cluster) at {}",
                mock.bootstrap_servers()
            );
            mock.bootstrap_servers()
        }
    };

    // The registry: accounts, the campaign, tokens.
    let launch_ms = launch_ms(&args)?;
    let tokens = if reuse {
        read_tokens(&args.dir)?
    } else {
        register(&lake, &args.dir, launch_ms)?
    };

    // The dashboard, with live peaks from the same topic.
    let mut options = dashboard::Options::new(lake.clone());
    options.live = Some(dashboard::live::LiveOptions {
        brokers: brokers.clone(),
        topic: TOPIC.into(),
        group: "spacepulse-demo-live".into(),
        overrides: Vec::new(),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (server, addr) = crate::run::start_dashboard(options, args.listen, async move {
        let _ = stop_rx.await;
    })
    .await?;
    let url = format!("http://{addr}");
    print_tokens(&url, &tokens);

    if reuse {
        outln!(
            "reusing {} (its lake and tokens); --reset starts over",
            args.dir.display()
        );
    } else {
        // Only Ctrl-C interrupts the setup; a headless demo's stdin counts after it.
        tokio::select! {
            r = setup(&args, &lake, &brokers, launch_ms) => r?,
            _ = shutdown_signal() => {
                outln!("stopped during setup; run again with --reset to start over");
                let _ = stop_tx.send(());
                let _ = server.await;
                return Ok(());
            }
        }
    }
    // Caught before "ready" is said: a signal sent as soon as it is read is not lost (tokio
    // tells a signal only to the listeners that existed when it came).
    let signal = shutdown_signal();
    outln!("\nready: open {url}/login and paste a token above (Ctrl-C stops)");
    if args.headless {
        outln!("(--headless: stops when standard input ends)");
        tokio::select! {
            _ = signal => {}
            _ = stdin_closed() => {}
        }
    } else {
        signal.await;
    }
    let _ = stop_tx.send(());
    server.await?.map_err(|e| anyhow::anyhow!(e.to_string()))?;
    outln!("stopped");
    Ok(())
}

/// The launch: 10:00 Shanghai time on the last generated day.
fn launch_ms(args: &DemoArgs) -> Result<i64> {
    let start = chrono::NaiveDate::from_ymd_opt(2015, 4, 28).expect("valid date");
    let last = start + chrono::Duration::days(i64::from(args.days.max(1)) - 1);
    let at = chrono::DateTime::parse_from_rfc3339(&format!("{last}T10:00:00+08:00"))?;
    Ok(at.timestamp_millis())
}

async fn ensure_topic(brokers: &str) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .with_context(|| format!("--brokers {brokers}"))?;
    let topic = NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .with_context(|| format!("--brokers {brokers}: creating topic {TOPIC:?}"))?;
    for r in results {
        match r {
            Ok(_) => outln!("created topic {TOPIC:?} on {brokers}"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                outln!("using topic {TOPIC:?} on {brokers}")
            }
            Err((t, e)) => bail!("--brokers {brokers}: creating topic {t:?}: {e}"),
        }
    }
    Ok(())
}

/// Registers the demo's accounts, campaign and tokens; the tokens go to `<dir>/tokens.json`.
fn register(lake: &Lake, dir: &Path, launch_ms: i64) -> Result<Vec<(String, Role, String)>> {
    let registry = Registry::open(&Registry::path_for(lake, None)?)?;
    let mut tokens = Vec::new();
    for (id, kind, name, role, verified) in ACCOUNTS {
        registry.add_account(id, *kind, name, "demo")?;
        if *verified && *kind != AccountKind::Staff {
            registry.set_state(
                id,
                VerificationState::Verified,
                "demo",
                "the demo's verified account",
            )?;
        }
        let t = registry.issue_token(*role, id, "demo")?;
        tokens.push((id.to_string(), *role, t.secret));
    }
    registry.add_campaign(&Campaign::with_defaults(
        datasets::generate::CAMPAIGN_ID,
        datasets::generate::ACCOUNT_ID,
        launch_ms,
    ))?;
    let path = dir.join("tokens.json");
    let body: Vec<Value> = tokens
        .iter()
        .map(|(id, role, secret)| json!({"account": id, "role": role.as_str(), "token": secret}))
        .collect();
    std::fs::write(&path, serde_json::to_vec_pretty(&body)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(tokens)
}

fn read_tokens(dir: &Path) -> Result<Vec<(String, Role, String)>> {
    let path = dir.join("tokens.json");
    let body: Vec<Value> = serde_json::from_slice(
        &std::fs::read(&path)
            .with_context(|| format!("{} (--reset starts over)", path.display()))?,
    )?;
    body.iter()
        .map(|t| {
            let role: Role = t["role"].as_str().unwrap_or("").parse()?;
            Ok((
                t["account"].as_str().unwrap_or("").to_string(),
                role,
                t["token"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

fn print_tokens(url: &str, tokens: &[(String, Role, String)]) {
    outln!("\ndashboard: {url}/  (API: {url}/api/v1, OpenAPI: {url}/api/v1/openapi.json)");
    outln!("tokens (log in at {url}/login, or send Authorization: Bearer TOKEN):");
    for (id, role, secret) in tokens {
        let note = match (id.as_str(), role) {
            ("meizu", _) => " (pending verification: its reports answer 403)",
            (_, Role::Official) => " (verified; campaign redmi-launch)",
            _ => "",
        };
        outln!("  {:<10} {:<8} {secret}{note}", role.as_str(), id);
    }
    outln!();
}

/// Resolves when standard input reaches its end. The read blocks on a thread of its own, not
/// the runtime's blocking pool: the runtime's shutdown waits for that pool, and a signal must
/// not wait for standard input to end.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let mut stdin = std::io::stdin().lock();
        loop {
            sink.clear();
            match stdin.read_until(b'\n', &mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = tx.send(());
    });
    let _ = rx.await;
}

async fn setup(args: &DemoArgs, lake: &Lake, brokers: &str, launch_ms: i64) -> Result<()> {
    // Generate.
    let data = args.dir.join("data");
    std::fs::create_dir_all(&data)?;
    let options = datasets::generate::Options {
        days: args.days,
        scale: args.scale,
        launch_at_ms: Some(launch_ms),
        // A default Kafka broker refuses messages over 1 MiB.
        oversized: false,
        dirty: true,
        ..Default::default()
    };
    options.check().map_err(|e| UsageError(e.0))?;
    let started = Instant::now();
    let file = data.join("events.ndjson");
    let manifest = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || -> Result<datasets::generate::Manifest> {
            let mut sink = datasets::generate::NdjsonSink(std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&file)?,
            ));
            let m = datasets::generate::generate(&options, &mut sink)?;
            std::io::Write::flush(&mut sink.0)?;
            Ok(m)
        })
        .await??
    };
    std::fs::write(
        data.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    outln!(
        "generated {} messages over {} days ({} distinct events, {} retries, malformed ones too) in {:.1}s: {}",
        manifest.rows,
        args.days,
        manifest.distinct_events,
        manifest.duplicates,
        started.elapsed().as_secs_f64(),
        file.display()
    );

    // Produce: the days before the launch's at full speed, then the launch day paced.
    let started = Instant::now();
    let day_start = launch_ms - 10 * 3_600_000; // 00:00 Shanghai time on the launch day
    let speed = args.speed;
    let brokers_owned = brokers.to_string();
    // Set when this future is dropped (Ctrl-C during the setup): the replay stops between two
    // sleeps and while it waits on the broker's queue (a broker that is gone never drains
    // it), since a blocking thread that never returns would keep the process alive.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let sent =
        tokio::task::spawn_blocking(move || replay(&brokers_owned, &file, day_start, speed, &stop))
            .await??;
    outln!(
        "produced {sent} messages to {TOPIC:?} in {:.1}s",
        started.elapsed().as_secs_f64(),
    );
    if args.brokers.is_none() {
        all_retained(brokers).await?;
    }

    // Ingest, exactly as `spacepulse ingest --until-caught-up`.
    let writer = LakeWriter::open(lake, WriterOptions::default()).await?;
    let options = KafkaOptions {
        brokers: brokers.to_string(),
        topic: TOPIC.to_string(),
        group: "spacepulse-demo".to_string(),
        overrides: Vec::new(),
        until_caught_up: true,
    };
    let mut progress = Progress::new();
    let stats = ingest::kafka::run(writer, &options, std::future::pending(), |s| {
        progress.update(s)
    })
    .await?;
    progress.finish();
    outln!("ingested {}", stats.line());

    // The jobs, exactly as `spacepulse jobs run`.
    let opts = jobs::Options {
        lake: lake.clone(),
        registry: None,
        tz: query::tz::ReportTz::default(),
        from: None,
        to: None,
        full: false,
        jobs: Vec::new(),
        memory: None,
    };
    let summaries = jobs::run(&opts, &jobs::Quiet).await?;
    crate::metrics::print_summaries(&summaries, opts.tz);
    let l = &manifest.launch;
    let ms: Vec<String> = l
        .milestones
        .iter()
        .map(|m| format!("+{}s {}", m.after_seconds, m.distinct_reservers))
        .collect();
    outln!(
        "the launch of {} by {} at {}: {}",
        l.campaign_id,
        l.account_id,
        l.start,
        ms.join(", ")
    );
    Ok(())
}

/// Partitions of the embedded broker's topic.
const EMBEDDED_PARTITIONS: i32 = 32;

/// Fails when the embedded broker dropped messages before they were consumed: librdkafka's
/// mock cluster keeps only the newest 5 MiB of each partition, so a large `--scale` needs a
/// real broker.
async fn all_retained(brokers: &str) -> Result<()> {
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()?;
        for p in 0..EMBEDDED_PARTITIONS {
            let (low, _) = rdkafka::consumer::Consumer::fetch_watermarks(
                &consumer,
                TOPIC,
                p,
                Duration::from_secs(10),
            )?;
            if low > 0 {
                bail!(
                    "--scale: the embedded broker keeps 5 MiB per partition and dropped the \
                     first {low} messages of partition {p}; use a smaller --scale or --days, \
                     or a real broker with --brokers"
                );
            }
        }
        Ok(())
    })
    .await?
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Produces the file: the day from `paced_from` (epoch ms) in event-time order at `speed`
/// times real time, every other line at once (all of them with `speed` 0). Stops when `stop`
/// is set. Returns the messages sent.
fn replay(
    brokers: &str,
    file: &PathBuf,
    paced_from: i64,
    speed: f64,
    stop: &Arc<AtomicBool>,
) -> Result<u64> {
    use datasets::produce::{KafkaSink, key_of, producer_config};
    let mut sink = KafkaSink::new(&producer_config(brokers, &[]), TOPIC)?.stop_when(stop.clone());
    let mut later: Vec<(i64, Vec<u8>)> = Vec::new();
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match ts_of(&line) {
            // Only the launch day is paced: a malformed far-future `ts` goes at once.
            Some(ts) if speed > 0.0 && (paced_from..paced_from + 86_400_000).contains(&ts) => {
                later.push((ts, line))
            }
            _ => sink.send(key_of(&line), &line)?,
        }
    }
    later.sort_by_key(|(ts, _)| *ts);
    let Some(first) = later.first().map(|(ts, _)| *ts) else {
        return Ok(sink.finish()?);
    };
    let last = later.last().map_or(first, |(ts, _)| *ts);
    outln!(
        "replaying the launch day: {} messages at {speed}× real time, about {:.0}s (see /live)",
        later.len(),
        (last - first) as f64 / 1000.0 / speed,
    );
    let began = Instant::now();
    for (ts, line) in &later {
        // The replay clock: this event's moment, compressed by `speed`.
        let due = Duration::from_secs_f64((ts - first) as f64 / 1000.0 / speed);
        while let Some(wait) = due.checked_sub(began.elapsed())
            && wait > Duration::from_millis(20)
        {
            if stop.load(Ordering::Relaxed) {
                bail!("the replay was stopped");
            }
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
        sink.send(key_of(line), line)?;
    }
    Ok(sink.finish()?)
}

/// A line's `ts` as epoch ms, when it has a readable one (malformed lines go at once).
fn ts_of(line: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Ts<'a> {
        #[serde(borrow)]
        ts: Option<&'a serde_json::value::RawValue>,
    }
    let t: Ts<'_> = serde_json::from_slice(line).ok()?;
    let raw = t.ts?.get();
    if let Ok(ms) = raw.parse::<i64>() {
        return Some(ms);
    }
    let s: String = serde_json::from_str(raw).ok()?;
    chrono::DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|d| d.timestamp_millis())
}
