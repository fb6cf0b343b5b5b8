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
use std::time::Duration;

use anyhow::{Context, Result};
use ingest::kafka::KafkaOptions;
use ingest::writer::{LakeWriter, WriterOptions};
use lake::tables::Lake;
use tokio::sync::watch;

use crate::UsageError;
use crate::cli::RunArgs;
use crate::pipeline::Pipeline;

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
    // Made before any part starts: a failure here stops `run` with nothing to wind down.
    let runtime = jobs::background::runtime().context("the daily jobs' runtime")?;
    let daily_jobs = runtime.handle().clone();
    let background = Background(Some(runtime));
    let (stop_tx, stop) = watch::channel(false);
    // Caught from here on: a signal sent once the "serving" line is out is never lost.
    let signal = crate::commands::shutdown_signal();

    let pipeline = Arc::new(Pipeline::default());
    let mut options = dashboard::Options::new(lake.clone());
    options.extra_metrics = Some(pipeline.clone());
    options.registry = args.registry.registry.clone();
    options.tz = tz;
    options.allowed_lateness = args.allowed_lateness;
    options.live = Some(dashboard::live::LiveOptions {
        brokers: args.brokers.clone(),
        topic: args.topic.topic.clone(),
        group: "spacepulse-live".into(),
        overrides: args.topic.kafka.clone(),
    });
    let (mut server, addr) = start_dashboard(options, args.listen, stopped(stop.clone())).await?;
    outln!(
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
    let (commits_tx, commits) = watch::channel(0u64);
    let ingester = tokio::spawn(ingest_loop(
        lake.clone(),
        kafka,
        writer_options,
        stop.clone(),
        pipeline.clone(),
        commits_tx,
    ));
    let jobs_options = |jobs: Vec<jobs::Job>, memory| jobs::Options {
        lake: lake.clone(),
        registry: args.registry.registry.clone(),
        tz,
        from: None,
        to: None,
        full: false,
        jobs,
        memory,
    };
    // Two loops: the campaigns job at launch pace, woken by each commit and reading only the
    // files committed since its last run (it keeps the campaign events in memory); the daily
    // jobs every --jobs-every (activity keeps the newest days' users hour by hour and reads
    // only the files committed since), so that a long recompute of a busy day never holds
    // back a launch's report. The daily jobs run on threads of lower priority (jobs::background):
    // when the cores are contended, the ingester, the campaigns job and the dashboard go
    // first.
    let launch = tokio::spawn(jobs_loop(
        JobsLoop {
            opts: jobs_options(
                vec![jobs::Job::Campaigns],
                Some(Arc::new(jobs::Memory::default())),
            ),
            every: args.jobs_every,
            commits: Some(commits),
            skip_seen: false,
        },
        stop.clone(),
        pipeline.clone(),
    ));
    let daily = daily_jobs.spawn(jobs_loop(
        JobsLoop {
            opts: jobs_options(
                jobs::Job::ALL
                    .into_iter()
                    .filter(|j| *j != jobs::Job::Campaigns)
                    .collect(),
                Some(Arc::new(jobs::Memory::default())),
            ),
            every: args.jobs_every,
            commits: None,
            skip_seen: true,
        },
        stop.clone(),
        pipeline.clone(),
    ));

    // Runs until a signal, or until the dashboard stops on its own (it cannot go on).
    let served = tokio::select! {
        _ = signal => None,
        r = &mut server => Some(r),
    };
    tracing::info!("stopping: the ingester commits what it holds, the jobs and the server finish");
    stop_tx.send_replace(true);
    let (ingested, launched, ran) = tokio::join!(ingester, launch, daily);
    ingested.context("the ingester")?;
    launched.context("the campaigns job")?;
    ran.context("the jobs")?;
    drop(background);
    let served = match served {
        Some(r) => r,
        None => server.await,
    };
    served?.map_err(|e| anyhow::anyhow!("the dashboard: {e}"))?;
    outln!("stopped");
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
    spawn_server(|ready| dashboard::serve(options, listen, shutdown, ready)).await
}

/// A server `start`ed on a task: the task and its address once it listens (`start` calls
/// `ready` with it), or why it did not start.
pub async fn spawn_server<F>(
    start: impl FnOnce(Box<dyn FnOnce(std::net::SocketAddr) + Send>) -> F,
) -> Result<(
    tokio::task::JoinHandle<Result<(), dashboard::ApiError>>,
    std::net::SocketAddr,
)>
where
    F: std::future::Future<Output = Result<(), dashboard::ApiError>> + Send + 'static,
{
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(start(Box::new(move |addr| {
        let _ = addr_tx.send(addr);
    })));
    match addr_rx.await {
        Ok(addr) => Ok((server, addr)),
        Err(_) => {
            let why = server
                .await?
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            Err(anyhow::anyhow!("the server did not start: {why}"))
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
    commits: watch::Sender<u64>,
) {
    let mut backoff = Backoff::new();
    while !*stop.borrow() {
        let mut told = 0;
        let started = std::time::Instant::now();
        let result = async {
            let writer = LakeWriter::open(&lake, writer_options.clone()).await?;
            ingest::kafka::run(writer, &kafka, stopped(stop.clone()), |s| {
                pipeline.ingester.ingesting(s);
                if s.commits != told {
                    told = s.commits;
                    commits.send_modify(|c| *c += 1);
                }
            })
            .await
        }
        .await;
        pipeline.ingester.ended(result.is_err());
        match result {
            Ok(stats) => {
                tracing::info!(ingested = %stats.line(), "ingester stopped");
                if *stop.borrow() {
                    return;
                }
            }
            Err(e) => {
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

/// The daily jobs' runtime, shut down without blocking however `run` ends (a runtime dropped
/// on an async thread panics).
struct Background(Option<tokio::runtime::Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// How long a running job may go on after a stop signal before it is dropped: well within
/// the 10 s a stop may take, and longer than a campaigns run at launch pace.
const JOB_GRACE: Duration = Duration::from_secs(3);

/// Which jobs a loop runs and what wakes it.
struct JobsLoop {
    opts: jobs::Options,
    /// Waits at most this long between looks at the events table.
    every: Duration,
    /// Woken at once when the in-process ingester commits.
    commits: Option<watch::Receiver<u64>>,
    /// Skip a run while the events version is the one the last run saw (the campaigns job
    /// runs anyway: it also follows the registry's campaigns, and checks both itself).
    skip_seen: bool,
}

impl JobsLoop {
    fn jobs(&self) -> Vec<jobs::Job> {
        if self.opts.jobs.is_empty() {
            jobs::Job::ALL.to_vec()
        } else {
            self.opts.jobs.clone()
        }
    }

    /// Resolves after `every`, at a commit, or at `stop` (true).
    async fn wait(&mut self, stop: &watch::Receiver<bool>) -> bool {
        let commit = async {
            match self.commits.as_mut() {
                Some(c) => {
                    if c.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(self.every) => false,
            _ = commit => false,
            _ = stopped(stop.clone()) => true,
        }
    }
}

/// Runs a loop's jobs whenever it wakes and the events table has moved on, until `stop`; a
/// failed run is tried again after a backoff.
async fn jobs_loop(mut l: JobsLoop, stop: watch::Receiver<bool>, pipeline: Arc<Pipeline>) {
    let names: Vec<&'static str> = l.jobs().iter().map(|j| j.name()).collect();
    pipeline.jobs.expect(&names);
    let mut seen: Option<u64> = None;
    let mut backoff = Backoff::new();
    loop {
        if l.wait(&stop).await {
            return;
        }
        let version = match l.opts.lake.open("events").await {
            Ok(Some(t)) => t.version().unwrap_or(0),
            // Nothing ingested yet.
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "jobs: cannot open the events table");
                continue;
            }
        };
        pipeline.jobs.found_version(version);
        if l.skip_seen && seen == Some(version) {
            continue;
        }
        let started = std::time::Instant::now();
        pipeline
            .jobs
            .starting(&names, chrono::Utc::now().timestamp());
        let run = jobs::run(&l.opts, &jobs::Quiet);
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => r,
            // A run near its end finishes and commits what it computed; one that is not is
            // dropped before its commit, which leaves its tables as they were.
            _ = stopped(stop.clone()) => match tokio::time::timeout(JOB_GRACE, run).await {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        let now = chrono::Utc::now().timestamp();
        match result {
            Ok(summaries) => {
                backoff.reset();
                seen = Some(version);
                pipeline.jobs.ran(&summaries, now, Some(l.every));
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
                pipeline.jobs.failed(&names, started.elapsed());
                tracing::warn!(error = %e, jobs = %names.join(","), "jobs failed; trying again");
                if sleep_or_stop(backoff.next(), &stop).await {
                    return;
                }
            }
        }
    }
}
