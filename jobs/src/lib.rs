//! The jobs: the lake's events into the metric tables that the dashboard serves and analysts
//! query (docs/metrics.md).
//!
//! A run reads which UTC hour partitions of `events` changed since the version each metric
//! table last recorded ([`changes`], from the Delta log), turns them into report-time-zone
//! days, scans only those days ([`scan`]) with native folds over Arrow arrays, and replaces
//! those days of each table in one commit that records the `events` version it saw
//! ([`publish`]). Jobs: [`activity`] (DAU/WAU/MAU exact from roaring bitmaps and approximate
//! from HLL++ sketches, new users), [`peaks`] (photo uploads per second, minute, hour and day
//! with the day's peaks; reservations per campaign), [`campaigns`] (funnels and launch curves),
//! [`accounts`] (official accounts' followers, reach, engagement), [`advertisers`].

pub mod accounts;
pub mod activity;
pub mod advertisers;
pub mod background;
pub mod campaigns;
pub mod changes;
pub mod codes;
pub mod hours;
pub mod pages;
pub mod peaks;
pub mod publish;
pub mod revisions;
pub mod scan;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use lake::tables::Lake;
use query::tz::ReportTz;

/// What went wrong in a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the user can fix: no events yet, a bad range, a bad registry.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Lake(#[from] lake::Error),
    #[error(transparent)]
    Query(#[from] query::Error),
    #[error(transparent)]
    Delta(#[from] deltalake::DeltaTableError),
    #[error(transparent)]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Another run changed a table this one read: running again succeeds.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl lake::Classify for Error {
    fn class(&self) -> lake::Class {
        use lake::Class;
        match self {
            Error::Usage(_) => Class::BadInput,
            Error::Lake(e) => e.class(),
            Error::Query(e) => e.class(),
            Error::Delta(e) => lake::error::delta_class(e),
            Error::DataFusion(e) => query::datafusion_class(e),
            Error::ObjectStore(e) => lake::error::object_store_class(e),
            Error::Io(e) => lake::error::io_class(e),
            Error::Conflict(_) => Class::Conflict,
            Error::Arrow(_) | Error::Parquet(_) | Error::Internal(_) => Class::Internal,
        }
    }
}

/// The jobs, in the order a run takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Job {
    Activity,
    Peaks,
    Campaigns,
    Accounts,
    Advertisers,
}

impl Job {
    pub const ALL: [Job; 5] = [
        Job::Activity,
        Job::Peaks,
        Job::Campaigns,
        Job::Accounts,
        Job::Advertisers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Job::Activity => "activity",
            Job::Peaks => "peaks",
            Job::Campaigns => "campaigns",
            Job::Accounts => "accounts",
            Job::Advertisers => "advertisers",
        }
    }

    /// The metric tables the job writes.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Job::Activity => &["activity"],
            Job::Peaks => &[
                "uploads_daily",
                "uploads_by_second",
                "uploads_by_minute",
                "uploads_by_hour",
                "campaign_peaks",
            ],
            Job::Campaigns => &[
                "funnels",
                "funnel_times",
                "launch_milestones",
                "launch_curve",
                campaigns::DAILY_TABLE,
            ],
            Job::Accounts => &["accounts_daily"],
            Job::Advertisers => &["advertisers_daily"],
        }
    }
}

/// The `txn` application id under which `job`'s tables record the `events` version they
/// were computed from, in report time zone `tz`.
pub fn app_id(job: Job, tz: ReportTz) -> String {
    format!("jobs/{}/{}", job.name(), tz)
}

/// The `txn` application id under which `job`'s tables record how complete the events they
/// were computed from are: the epoch ms up to which every streamed partition's events had
/// arrived (the smallest partition watermark), or with no streamed partition the newest event
/// time (files are whole once committed).
pub fn watermark_app_id(job: Job, tz: ReportTz) -> String {
    format!("{}/watermark", app_id(job, tz))
}

/// Every metric table's path in the lake, the user dictionary's too.
pub fn metric_tables() -> Vec<String> {
    Job::ALL
        .iter()
        .flat_map(|j| j.tables())
        .chain(&[codes::TABLE, revisions::TABLE])
        .map(|t| publish::table_name(t))
        .collect()
}

impl std::str::FromStr for Job {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Job::ALL.into_iter().find(|j| j.name() == s).ok_or_else(|| {
            let names: Vec<_> = Job::ALL.iter().map(|j| j.name()).collect();
            format!("unknown job {s:?}: expected one of {}", names.join(", "))
        })
    }
}

/// A run's options.
#[derive(Debug, Clone)]
pub struct Options {
    pub lake: Lake,
    /// The registry file; `<lake>/_registry.sqlite` when `None`.
    pub registry: Option<PathBuf>,
    pub tz: ReportTz,
    /// Only days in this range (Date32, inclusive) are recomputed.
    pub from: Option<i32>,
    pub to: Option<i32>,
    /// Recompute every day, not only the changed ones.
    pub full: bool,
    /// The jobs to run; every job when empty.
    pub jobs: Vec<Job>,
    /// What a long-running process keeps between runs (`None`: every run reads what it
    /// needs from the lake).
    pub memory: Option<std::sync::Arc<Memory>>,
}

/// What a long-running process keeps between runs so that runs at launch pace read only
/// what was committed since the last one.
#[derive(Debug, Default)]
pub struct Memory {
    pub campaigns: campaigns::Memory,
    pub activity: activity::Memory,
    pub peaks: peaks::Memory,
    pub accounts: accounts::Memory,
}

/// How a job went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub job: &'static str,
    /// Days recomputed (for campaigns: campaigns).
    pub days: usize,
    pub rows: u64,
    pub seconds: f64,
    /// The version of `events` the tables now reflect.
    pub events_version: i64,
    /// True when nothing had changed since the last run.
    pub up_to_date: bool,
}

/// Told about a job's progress (a progress bar on a terminal).
pub trait Progress: Send + Sync {
    fn start(&self, job: &'static str, units: u64);
    fn advance(&self, job: &'static str);
    fn finish(&self, summary: &Summary);
}

/// No progress shown.
pub struct Quiet;
impl Progress for Quiet {
    fn start(&self, _: &'static str, _: u64) {}
    fn advance(&self, _: &'static str) {}
    fn finish(&self, _: &Summary) {}
}

/// Where a run stands before the jobs start: the events table and its version.
pub struct Ctx<'a> {
    pub opts: &'a Options,
    pub events: deltalake::DeltaTable,
    pub events_version: i64,
    /// How complete the events at `events_version` are (see [`watermark_app_id`]).
    pub watermark: Option<i64>,
    pub scan: scan::Scan,
    pub progress: &'a dyn Progress,
    /// The metric tables the running job has looked at, each opened once ([`Ctx::table`]);
    /// emptied before each job, whose looks all come before its commits.
    tables: std::sync::Mutex<std::collections::HashMap<String, Option<deltalake::DeltaTable>>>,
    /// Those tables' `txn` application versions, read once per job ([`Ctx::seen`]).
    txns: std::sync::Mutex<std::collections::HashMap<String, Txns>>,
}

/// A table's `txn` application versions, by application id.
type Txns = std::sync::Arc<std::collections::BTreeMap<String, i64>>;

impl Ctx<'_> {
    /// The `txn` application id a job's tables record their `events` version under; the
    /// time zone is part of it, so a run in another zone recomputes everything.
    pub fn app(&self, job: Job) -> String {
        app_id(job, self.opts.tz)
    }

    /// Metric table `name` (`None` if it does not exist yet), opened once per job.
    pub async fn table(&self, name: &str) -> Result<Option<deltalake::DeltaTable>> {
        let cached = self.cached_tables().get(name).cloned();
        if let Some(t) = cached {
            return Ok(t);
        }
        let t = self.opts.lake.open(&publish::table_name(name)).await?;
        self.cached_tables().insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// The last version of `app` that metric table `name` has seen; `None` if the table does
    /// not exist or never recorded `app`. The table's `txn` actions are read once per job,
    /// all at once, rather than in a log replay per application.
    pub async fn seen(&self, name: &str, app: &str) -> Result<Option<i64>> {
        let cached = self.cached_txns().get(name).cloned();
        let txns = match cached {
            Some(t) => t,
            None => {
                let t = match self.table(name).await? {
                    Some(t) => std::sync::Arc::new(lake::txns::app_versions(&t, "").await?),
                    None => Default::default(),
                };
                self.cached_txns().insert(name.to_string(), t.clone());
                t
            }
        };
        Ok(txns.get(app).copied())
    }

    /// Whether metric table `name` is missing or has `schema`'s columns
    /// ([`publish::same_columns`]).
    pub async fn has_columns(
        &self,
        name: &str,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<bool> {
        match self.table(name).await? {
            Some(t) => publish::same_columns(&t, schema),
            None => Ok(true),
        }
    }

    fn cached_tables(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Option<deltalake::DeltaTable>>>
    {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached_txns(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Txns>> {
        self.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn in_range(&self, day: i32) -> bool {
        self.opts.from.is_none_or(|f| day >= f) && self.opts.to.is_none_or(|t| day <= t)
    }

    /// The days a daily job must recompute, whether that is every day (the tables are then
    /// replaced whole unless a range is given), and whether the run covers every change (only
    /// then do the tables record the new `events` version).
    pub async fn plan(&self, job: Job) -> Result<Plan> {
        self.plan_with(job, false).await
    }

    /// The plan of a full recompute of every day, whatever the options ask: for tables
    /// whose stored rows cannot be built on.
    pub async fn plan_everything(&self, job: Job) -> Result<Plan> {
        self.plan_with(job, true).await
    }

    async fn plan_with(&self, job: Job, everything: bool) -> Result<Plan> {
        let app = self.app(job);
        let full = self.opts.full || everything;
        let mut since: Option<i64> = Some(i64::MAX);
        // A full recompute needs no record of what the tables have seen.
        for t in job.tables().iter().filter(|_| !full) {
            let v = self.seen(t, &app).await?;
            since = match (since, v) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
        let (changed, full) = match since {
            Some(v) if !full => match changes::hours_since(&self.events, v).await? {
                Some(h) => (changes::days_of(&h, self.opts.tz), false),
                None => (
                    changes::days_of(&changes::all_hours(&self.events)?, self.opts.tz),
                    true,
                ),
            },
            _ => (
                changes::days_of(&changes::all_hours(&self.events)?, self.opts.tz),
                true,
            ),
        };
        let days: BTreeSet<i32> = changed
            .iter()
            .copied()
            .filter(|d| everything || self.in_range(*d))
            .collect();
        let complete = days.len() == changed.len();
        let ranged = !everything && (self.opts.from.is_some() || self.opts.to.is_some());
        Ok(Plan {
            scope: if full && !ranged {
                publish::Scope::All
            } else {
                publish::Scope::Days(days.clone())
            },
            days,
            txns: if complete {
                let mut t = vec![(app, self.events_version)];
                if let Some(w) = self.watermark {
                    t.push((watermark_app_id(job, self.opts.tz), w));
                }
                t
            } else {
                Vec::new()
            },
            up_to_date: changed.is_empty() && !full,
        })
    }
}

/// What a daily job does in a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub days: BTreeSet<i32>,
    pub scope: publish::Scope,
    pub txns: Vec<(String, i64)>,
    pub up_to_date: bool,
}

impl Plan {
    /// The scope of a commit that also rewrites `days` beyond the recomputed ones (later
    /// days whose running figures the recomputed days change): the whole table stays whole.
    pub fn widened(&self, days: BTreeSet<i32>) -> publish::Scope {
        match self.scope {
            publish::Scope::All => publish::Scope::All,
            publish::Scope::Days(_) | publish::Scope::Append => publish::Scope::Days(days),
        }
    }
}

/// Runs the jobs over the lake.
pub async fn run(opts: &Options, progress: &dyn Progress) -> Result<Vec<Summary>> {
    if let (Some(f), Some(t)) = (opts.from, opts.to)
        && f > t
    {
        return Err(Error::Usage("--from is after --to".into()));
    }
    let setup = Instant::now();
    let Some(events) = opts.lake.open("events").await? else {
        return Err(Error::Usage(format!(
            "the lake {} has no events table yet: ingest some events first (spacepulse ingest)",
            opts.lake.url()
        )));
    };
    let events_version = events.version().unwrap_or(0) as i64;
    let session = query::session::context();
    query::session::register(&session, "events", &events).await?;
    let watermark = changes::watermark(&events).await?;
    tracing::debug!(secs = setup.elapsed().as_secs_f64(), "jobs: events opened");
    let ctx = Ctx {
        opts,
        events,
        events_version,
        watermark,
        scan: scan::Scan::new(session, opts.tz),
        progress,
        tables: Default::default(),
        txns: Default::default(),
    };
    let mut jobs = if opts.jobs.is_empty() {
        Job::ALL.to_vec()
    } else {
        opts.jobs.clone()
    };
    jobs.sort();
    jobs.dedup();
    let mut out = Vec::new();
    for job in jobs {
        let started = Instant::now();
        ctx.cached_tables().clear();
        ctx.cached_txns().clear();
        let was = revisions::before(&opts.lake, job, opts.tz).await?;
        tracing::debug!(
            job = job.name(),
            secs = started.elapsed().as_secs_f64(),
            "revisions: before"
        );
        let (days, rows, up_to_date) = match job {
            Job::Activity => activity::run(&ctx).await?,
            Job::Peaks => peaks::run(&ctx).await?,
            Job::Campaigns => campaigns::run(&ctx).await?,
            Job::Accounts => accounts::run(&ctx).await?,
            Job::Advertisers => advertisers::run(&ctx).await?,
        };
        // The job's figures are committed: a revision record that fails is logged, and the
        // run goes on.
        if !up_to_date {
            let t = Instant::now();
            match revisions::record(&opts.lake, job, opts.tz, opts.full, was).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(job = job.name(), revisions = n, "complete figures revised")
                }
                Err(e) => tracing::warn!(job = job.name(), error = %e, "revisions not recorded"),
            }
            tracing::debug!(
                job = job.name(),
                secs = t.elapsed().as_secs_f64(),
                "revisions: record"
            );
        }
        let s = Summary {
            job: job.name(),
            days,
            rows,
            seconds: started.elapsed().as_secs_f64(),
            events_version,
            up_to_date,
        };
        progress.finish(&s);
        out.push(s);
    }
    Ok(out)
}
