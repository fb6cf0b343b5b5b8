//! `GET /api/v1/status` (operators): where the pipeline stands, from the lake itself. Per
//! source partition: the offset the events table covers, the events and rejected messages
//! and commits it became, the last commit's time, its event-time watermark and (under `spacepulse
//! run`) its lag; per job: the `events` version its tables last recorded beside the newest,
//! their last commit's time, how complete they are, and (under `run`) the last run, its
//! duration and the next; the live consumer's lag when it runs.

use axum::Json;
use axum::extract::State as AxState;
use futures::StreamExt;
use lake::ledger::Ledger;
use lake::registry::Role;
use serde::Serialize;

use crate::State;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics::JobRuns;

fn instant(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339())
}

/// Where the pipeline stands.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The newest version of the events table.
    pub events_version: Option<i64>,
    pub tz: String,
    pub partitions: Vec<PartitionStatus>,
    pub jobs: Vec<JobStatus>,
    /// The live consumer's lag, when it runs.
    pub live_lag: Option<i64>,
}

/// A source partition: what the lake covers of it.
#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    pub source: String,
    pub partition: i32,
    pub covered_offset: Option<i64>,
    pub events: u64,
    pub rejected: u64,
    pub commits: u64,
    pub last_commit_at: Option<String>,
    pub watermark: Option<String>,
    /// Messages behind the broker's high watermark (under `spacepulse run`).
    pub lag: Option<i64>,
}

impl PartitionStatus {
    /// The broker's high watermark: the covered offset plus the lag.
    pub fn broker_high_watermark(&self) -> Option<i64> {
        self.covered_offset.zip(self.lag).map(|(c, l)| c + l)
    }
}

/// A job's table: the events version it has seen, how complete it is, and its runs.
#[derive(Debug, Serialize)]
pub struct JobStatus {
    pub job: &'static str,
    pub table: &'static str,
    pub events_version_seen: Option<i64>,
    pub versions_behind: Option<i64>,
    pub last_commit_at: Option<String>,
    pub watermark: Option<String>,
    pub complete_up_to: Option<String>,
    /// Its runs under `spacepulse run` (else each field null).
    #[serde(flatten)]
    pub runs: Runs,
}

/// A job's runs as `/status` shows them: every field null outside `spacepulse run`.
#[derive(Debug, Default, Serialize)]
pub struct Runs {
    pub runs_ok: Option<u64>,
    pub runs_failed: Option<u64>,
    pub last_run: Option<String>,
    pub duration_seconds: Option<f64>,
    pub next_run: Option<String>,
    pub running_since: Option<String>,
}

impl From<Option<&JobRuns>> for Runs {
    fn from(r: Option<&JobRuns>) -> Self {
        r.map_or_else(Self::default, |r| Self {
            runs_ok: Some(r.runs_ok),
            runs_failed: Some(r.runs_failed),
            last_run: r.last_run.clone(),
            duration_seconds: Some(r.duration_seconds),
            next_run: r.next_run.clone(),
            running_since: r.running_since.clone(),
        })
    }
}

#[utoipa::path(get, path = "/status", tag = "operations", responses((status = 200, description = "{events_version, partitions: [{source, partition, covered_offset, events, rejected, commits, last_commit_at, watermark, lag}], jobs: [{job, table, events_version_seen, versions_behind, last_commit_at, watermark, complete_up_to, runs_ok, runs_failed, last_run, duration_seconds, next_run, running_since}], live_lag}"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not an operator")), security(("bearer" = []), ("cookie" = [])))]
pub async fn status(
    caller: Caller,
    AxState(state): AxState<State>,
) -> Result<Json<Status>, ApiError> {
    caller.require(&[Role::Operator])?;
    Ok(Json(status_of(&state).await?))
}

/// Where the pipeline stands (the body of `GET /status`).
pub(crate) async fn status_of(state: &State) -> Result<Status, ApiError> {
    let lake = &state.options.lake;
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(e.to_string());
    let ledger = Ledger::read(lake).await?;
    let events = lake.open("events").await?;
    let events_version = events.as_ref().and_then(|t| t.version().map(|v| v as i64));
    let watermarks = match &events {
        Some(t) => lake::txns::app_versions(t, lake::tables::WATERMARK_PREFIX).await?,
        None => Default::default(),
    };
    let process = state
        .options
        .extra_metrics
        .as_ref()
        .map(|e| e.status())
        .unwrap_or_default();
    let partitions = ledger
        .partitions
        .iter()
        .map(|p| {
            let last = ledger
                .commits
                .iter()
                .filter(|c| {
                    c.ranges
                        .iter()
                        .any(|r| r.source == p.source && r.partition == p.partition)
                })
                .filter_map(|c| c.timestamp_ms)
                .max();
            PartitionStatus {
                source: p.source.clone(),
                partition: p.partition,
                covered_offset: p.events_covered,
                events: p.events,
                rejected: p.rejected,
                commits: p.commits,
                last_commit_at: instant(last),
                watermark: instant(
                    watermarks
                        .get(&lake::tables::watermark_app_id(&p.source, p.partition))
                        .copied(),
                ),
                lag: process
                    .lag
                    .get(&p.source)
                    .and_then(|each| each.get(&p.partition))
                    .copied(),
            }
        })
        .collect();
    let mut jobs = Vec::new();
    for job in jobs::Job::ALL {
        let app = jobs::app_id(job, state.options.tz);
        let runs = process.jobs.get(job.name());
        for name in job.tables() {
            let Some(table) = lake.open(&jobs::publish::table_name(name)).await? else {
                jobs.push(JobStatus {
                    job: job.name(),
                    table: name,
                    events_version_seen: None,
                    versions_behind: None,
                    last_commit_at: None,
                    watermark: None,
                    complete_up_to: None,
                    runs: runs.into(),
                });
                continue;
            };
            let seen = lake::tables::covered(&table, &app).await?;
            let last = match table.history(Some(1)).next().await {
                Some(c) => c.map_err(|e| internal(&e))?.timestamp,
                None => None,
            };
            let watermark =
                lake::tables::covered(&table, &jobs::watermark_app_id(job, state.options.tz))
                    .await?;
            let lateness = state.options.allowed_lateness.as_millis() as i64;
            jobs.push(JobStatus {
                job: job.name(),
                table: name,
                events_version_seen: seen,
                versions_behind: events_version.zip(seen).map(|(e, s)| e - s),
                last_commit_at: instant(last),
                watermark: instant(watermark),
                complete_up_to: instant(watermark.map(|w| w - lateness)),
                runs: runs.into(),
            });
        }
    }
    Ok(Status {
        events_version,
        tz: state.options.tz.name().to_string(),
        partitions,
        jobs,
        live_lag: state.live.as_ref().and_then(|l| l.lag()),
    })
}
