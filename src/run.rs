//! `spacepulse run`: the pipeline in one process. Three parts share one stop signal:
//! - the ingester consumes the topic into the lake continuously (exactly as `spacepulse
//!   ingest`), and starts again with a backoff when it fails (a broker away, a commit that
//!   lost a race);
//! - the jobs run every `--jobs-every` once the events table has a newer version than the
//!   last run saw (incrementally, as `spacepulse jobs run`), and again after a failure;
//! - the dashboard serves the reports and, from the same topic, live peaks.
//!
//! SIGINT or SIGTERM stops all three: the ingester commits what it holds, a running job
//! finishes or is dropped before its commit (the tables stay whole), the server finishes the
//! requests in flight. Only a part that cannot go on at all (the dashboard cannot listen)
//! ends the process with an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use ingest::kafka::KafkaOptions;
use ingest::writer::{LakeWriter, WriterOptions};
use lake::tables::Lake;
use tokio::sync::watch;

use crate::UsageError;
use crate::cli::RunArgs;

/// The ingester's and the jobs' counters, rendered at the dashboard's `/metrics`.
#[derive(Debug, Default)]
struct Pipeline {
    /// The ingest runs that ended, summed; and the one running.
    ingest: std::sync::Mutex<(Ingested, Ingested)>,
    ingest_restarts: AtomicU64,
    jobs_ok: AtomicU64,
    jobs_failed: AtomicU64,
    jobs_millis: AtomicU64,
    jobs_rows: AtomicU64,
    /// The events version the jobs last saw, and the newest one found (-1: none yet).
    events_seen: AtomicI64,
    events_latest: AtomicI64,
    jobs_last_run: AtomicI64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Ingested {
    accepted: u64,
    rejected: u64,
    skipped: u64,
    commits: u64,
    files: u64,
    fenced: u64,
    lag: Option<i64>,
}

impl Ingested {
    fn of(s: &ingest::stats::Stats) -> Self {
        Self {
            accepted: s.accepted,
            rejected: s.rejected,
            skipped: s.skipped,
            commits: s.commits,
            files: s.files,
            fenced: s.fenced,
            lag: s.lag,
        }
    }

    fn plus(self, o: Self) -> Self {
        Self {
            accepted: self.accepted + o.accepted,
            rejected: self.rejected + o.rejected,
            skipped: self.skipped + o.skipped,
            commits: self.commits + o.commits,
            files: self.files + o.files,
            fenced: self.fenced + o.fenced,
            lag: o.lag,
        }
    }
}

impl Pipeline {
    fn new() -> Self {
        let p = Self::default();
        p.events_seen.store(-1, Ordering::Relaxed);
        p.events_latest.store(-1, Ordering::Relaxed);
        p
    }

    /// The running ingest's totals so far.
    fn ingesting(&self, s: &ingest::stats::Stats) {
        self.ingest.lock().unwrap_or_else(|e| e.into_inner()).1 = Ingested::of(s);
    }

    /// The running ingest ended: its totals join the ended ones'.
    fn ingest_ended(&self) {
        let mut i = self.ingest.lock().unwrap_or_else(|e| e.into_inner());
        i.0 = i.0.plus(i.1);
        i.1 = Ingested {
            lag: i.1.lag,
            ..Ingested::default()
        };
    }
}

impl dashboard::metrics::ExtraMetrics for Pipeline {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let (done, now) = *self.ingest.lock().unwrap_or_else(|e| e.into_inner());
        let t = done.plus(now);
        let gauge = |v: i64| {
            if v < 0 {
                "NaN".to_string()
            } else {
                v.to_string()
            }
        };
        let seen = self.events_seen.load(Ordering::Relaxed);
        let latest = self.events_latest.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP spacepulse_ingest_messages_total Messages the ingester read, by what became of them.\n\
             # TYPE spacepulse_ingest_messages_total counter\n\
             spacepulse_ingest_messages_total{{outcome=\"accepted\"}} {}\n\
             spacepulse_ingest_messages_total{{outcome=\"rejected\"}} {}\n\
             spacepulse_ingest_messages_total{{outcome=\"skipped\"}} {}\n\
             # HELP spacepulse_ingest_commits_total Delta commits of the events and rejected tables.\n\
             # TYPE spacepulse_ingest_commits_total counter\n\
             spacepulse_ingest_commits_total {}\n\
             # HELP spacepulse_ingest_files_total Parquet files the commits added.\n\
             # TYPE spacepulse_ingest_files_total counter\n\
             spacepulse_ingest_files_total {}\n\
             # HELP spacepulse_ingest_fenced_total Buffers dropped because another writer had committed their partitions.\n\
             # TYPE spacepulse_ingest_fenced_total counter\n\
             spacepulse_ingest_fenced_total {}\n\
             # HELP spacepulse_ingest_restarts_total Times the ingester failed and started again.\n\
             # TYPE spacepulse_ingest_restarts_total counter\n\
             spacepulse_ingest_restarts_total {}\n\
             # HELP spacepulse_ingest_lag_messages Messages behind the partitions' high watermarks.\n\
             # TYPE spacepulse_ingest_lag_messages gauge\n\
             spacepulse_ingest_lag_messages {}\n\
             # HELP spacepulse_jobs_runs_total Runs of the jobs, by outcome.\n\
             # TYPE spacepulse_jobs_runs_total counter\n\
             spacepulse_jobs_runs_total{{outcome=\"ok\"}} {}\n\
             spacepulse_jobs_runs_total{{outcome=\"failed\"}} {}\n\
             # HELP spacepulse_jobs_run_seconds_total Time spent running the jobs.\n\
             # TYPE spacepulse_jobs_run_seconds_total counter\n\
             spacepulse_jobs_run_seconds_total {}\n\
             # HELP spacepulse_jobs_rows_total Rows the jobs wrote to the metric tables.\n\
             # TYPE spacepulse_jobs_rows_total counter\n\
             spacepulse_jobs_rows_total {}\n\
             # HELP spacepulse_jobs_events_version The events table version the jobs last saw.\n\
             # TYPE spacepulse_jobs_events_version gauge\n\
             spacepulse_jobs_events_version {}\n\
             # HELP spacepulse_jobs_events_version_lag Versions of the events table the jobs have not seen.\n\
             # TYPE spacepulse_jobs_events_version_lag gauge\n\
             spacepulse_jobs_events_version_lag {}\n\
             # HELP spacepulse_jobs_last_run_timestamp_seconds When the jobs last ran to the end.\n\
             # TYPE spacepulse_jobs_last_run_timestamp_seconds gauge\n\
             spacepulse_jobs_last_run_timestamp_seconds {}\n",
            t.accepted,
            t.rejected,
            t.skipped,
            t.commits,
            t.files,
            t.fenced,
            self.ingest_restarts.load(Ordering::Relaxed),
            t.lag.map_or_else(|| "NaN".to_string(), |l| l.to_string()),
            self.jobs_ok.load(Ordering::Relaxed),
            self.jobs_failed.load(Ordering::Relaxed),
            self.jobs_millis.load(Ordering::Relaxed) as f64 / 1000.0,
            self.jobs_rows.load(Ordering::Relaxed),
            gauge(seen),
            if seen < 0 || latest < 0 {
                "NaN".to_string()
            } else {
                (latest - seen).to_string()
            },
            gauge(self.jobs_last_run.load(Ordering::Relaxed)),
        );
    }
}

/// Waits before a failed part starts again: 1 s, doubling to 30 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_secs(1))
    }

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
        wait
    }

    fn reset(&mut self) {
        self.0 = Duration::from_secs(1);
    }
}

/// Resolves once `stop` is set.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps `d` unless `stop` is set first; true when stopped.
async fn sleep_or_stop(d: Duration, stop: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(stop.clone()) => true,
    }
}

pub async fn run(args: RunArgs) -> Result<()> {
    let tz: query::tz::ReportTz = args
        .tz
        .parse()
        .map_err(|e: String| UsageError(format!("--tz: {e}")))?;
    if args.jobs_every < Duration::from_millis(100) {
        return Err(UsageError("--jobs-every: at least 100ms".into()).into());
    }
    if !(args.flush_secs.is_finite() && args.flush_secs > 0.0) {
        return Err(UsageError(format!(
            "--flush-secs: expected a positive number of seconds, got {}",
            args.flush_secs
        ))
        .into());
    }
    let lake = Lake::new(&args.lake.lake)?;
    let (stop_tx, stop) = watch::channel(false);

    let pipeline = Arc::new(Pipeline::new());
    let mut options = dashboard::Options::new(lake.clone());
    options.extra_metrics = Some(pipeline.clone());
    options.registry = args.registry.registry.clone();
    options.tz = tz;
    options.live = Some(dashboard::live::LiveOptions {
        brokers: args.brokers.clone(),
        topic: args.topic.topic.clone(),
        group: "spacepulse-live".into(),
        overrides: args.topic.kafka.clone(),
    });
    let (mut server, addr) = start_dashboard(options, args.listen, stopped(stop.clone())).await?;
    println!(
        "serving http://{addr}/ (API under /api/v1); ingesting {:?} from {} into {}; jobs every {:?}; Ctrl-C stops",
        args.topic.topic,
        args.brokers,
        lake.url(),
        args.jobs_every
    );

    let kafka = KafkaOptions {
        brokers: args.brokers.clone(),
        topic: args.topic.topic.clone(),
        group: args.topic.group.clone(),
        overrides: args.topic.kafka.clone(),
        until_caught_up: false,
    };
    let writer_options = WriterOptions {
        max_age: Duration::from_secs_f64(args.flush_secs),
        ..WriterOptions::default()
    };
    let ingester = tokio::spawn(ingest_loop(
        lake.clone(),
        kafka,
        writer_options,
        stop.clone(),
        pipeline.clone(),
    ));
    let jobs = tokio::spawn(jobs_loop(
        jobs::Options {
            lake: lake.clone(),
            registry: args.registry.registry.clone(),
            tz,
            from: None,
            to: None,
            full: false,
            jobs: Vec::new(),
        },
        args.jobs_every,
        stop.clone(),
        pipeline.clone(),
    ));

    // Runs until a signal, or until the dashboard stops on its own (it cannot go on).
    let served = tokio::select! {
        _ = crate::commands::shutdown_signal() => None,
        r = &mut server => Some(r),
    };
    tracing::info!("stopping: the ingester commits what it holds, the jobs and the server finish");
    stop_tx.send_replace(true);
    let (ingested, ran) = tokio::join!(ingester, jobs);
    ingested.context("the ingester")?;
    ran.context("the jobs")?;
    let served = match served {
        Some(r) => r,
        None => server.await,
    };
    served?.map_err(|e| anyhow::anyhow!("the dashboard: {e}"))?;
    println!("stopped");
    Ok(())
}

/// The dashboard, serving until `shutdown` resolves: its task and its address once it
/// listens, or why it did not start.
pub async fn start_dashboard(
    options: dashboard::Options,
    listen: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(
    tokio::task::JoinHandle<Result<(), dashboard::ApiError>>,
    std::net::SocketAddr,
)> {
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(dashboard::serve(options, listen, shutdown, move |addr| {
        let _ = addr_tx.send(addr);
    }));
    match addr_rx.await {
        Ok(addr) => Ok((server, addr)),
        Err(_) => {
            let why = server
                .await?
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            Err(anyhow::anyhow!("the dashboard did not start: {why}"))
        }
    }
}

/// The ingester, started again (after a backoff) whenever it fails, until `stop`.
async fn ingest_loop(
    lake: Lake,
    kafka: KafkaOptions,
    writer_options: WriterOptions,
    stop: watch::Receiver<bool>,
    pipeline: Arc<Pipeline>,
) {
    let mut backoff = Backoff::new();
    while !*stop.borrow() {
        let started = std::time::Instant::now();
        let result = async {
            let writer = LakeWriter::open(&lake, writer_options.clone()).await?;
            ingest::kafka::run(writer, &kafka, stopped(stop.clone()), |s| {
                pipeline.ingesting(s)
            })
            .await
        }
        .await;
        pipeline.ingest_ended();
        match result {
            Ok(stats) => {
                tracing::info!(ingested = %stats.line(), "ingester stopped");
                if *stop.borrow() {
                    return;
                }
            }
            Err(e) => {
                pipeline.ingest_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "ingester failed; starting it again")
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        if sleep_or_stop(backoff.next(), &stop).await {
            return;
        }
    }
}

/// The jobs, every `every` while the events table has a version they have not seen, until
/// `stop`; a failed run is tried again after a backoff.
async fn jobs_loop(
    opts: jobs::Options,
    every: Duration,
    stop: watch::Receiver<bool>,
    pipeline: Arc<Pipeline>,
) {
    let mut seen: Option<u64> = None;
    let mut backoff = Backoff::new();
    loop {
        if sleep_or_stop(every, &stop).await {
            return;
        }
        let version = match opts.lake.open("events").await {
            Ok(Some(t)) => t.version().unwrap_or(0),
            // Nothing ingested yet.
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "jobs: cannot open the events table");
                continue;
            }
        };
        pipeline
            .events_latest
            .store(version as i64, Ordering::Relaxed);
        if seen == Some(version) {
            continue;
        }
        let started = std::time::Instant::now();
        let run = jobs::run(&opts, &jobs::Quiet);
        let result = tokio::select! {
            r = run => r,
            // A job dropped before its commit leaves its tables as they were.
            _ = stopped(stop.clone()) => return,
        };
        pipeline
            .jobs_millis
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match result {
            Ok(summaries) => {
                backoff.reset();
                seen = Some(version);
                pipeline.jobs_ok.fetch_add(1, Ordering::Relaxed);
                pipeline
                    .jobs_rows
                    .fetch_add(summaries.iter().map(|s| s.rows).sum(), Ordering::Relaxed);
                pipeline
                    .events_seen
                    .store(version as i64, Ordering::Relaxed);
                pipeline
                    .jobs_last_run
                    .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
                let changed: Vec<String> = summaries
                    .iter()
                    .filter(|s| !s.up_to_date)
                    .map(|s| format!("{} {} days {:.2}s", s.job, s.days, s.seconds))
                    .collect();
                if !changed.is_empty() {
                    tracing::info!(events_version = version, jobs = %changed.join(", "), "jobs ran");
                }
            }
            Err(e) => {
                pipeline.jobs_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "jobs failed; trying again");
                if sleep_or_stop(backoff.next(), &stop).await {
                    return;
                }
            }
        }
    }
}
