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
use serde_json::{Value, json};

use crate::State;
use crate::auth::Caller;
use crate::error::ApiError;

fn instant(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

#[utoipa::path(get, path = "/status", tag = "operations", responses((status = 200, description = "{events_version, partitions: [{source, partition, covered_offset, events, rejected, commits, last_commit_at, watermark, lag}], jobs: [{job, table, events_version_seen, versions_behind, last_commit_at, watermark, complete_up_to, last_run, duration_seconds, next_run, running_since}], live_lag}"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not an operator")), security(("bearer" = []), ("cookie" = [])))]
pub async fn status(
    caller: Caller,
    AxState(state): AxState<State>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Operator])?;
    Ok(Json(status_value(&state).await?))
}

/// Where the pipeline stands (the body of `GET /status`).
pub(crate) async fn status_value(state: &State) -> Result<Value, ApiError> {
    let lake = &state.options.lake;
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(e.to_string());
    let ledger = Ledger::read(lake).await?;
    let events = lake.open("events").await?;
    let events_version = events.as_ref().and_then(|t| t.version().map(|v| v as i64));
    let watermarks = match &events {
        Some(t) => lake::txns::app_versions(t, lake::tables::WATERMARK_PREFIX).await?,
        None => Default::default(),
    };
    let extra = state
        .options
        .extra_metrics
        .as_ref()
        .map(|e| e.status())
        .unwrap_or(Value::Null);
    let partitions: Vec<Value> = ledger
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
            json!({
                "source": p.source,
                "partition": p.partition,
                "covered_offset": p.events_covered,
                "events": p.events,
                "rejected": p.rejected,
                "commits": p.commits,
                "last_commit_at": instant(last),
                "watermark": instant(
                    watermarks
                        .get(&lake::tables::watermark_app_id(&p.source, p.partition))
                        .copied()
                ),
                "lag": extra["lag"][&p.source]
                    .get(p.partition.to_string())
                    .cloned()
                    .unwrap_or(Value::Null),
            })
        })
        .collect();
    let mut jobs = Vec::new();
    for job in jobs::Job::ALL {
        let app = jobs::app_id(job, state.options.tz);
        for name in job.tables() {
            let Some(table) = lake.open(&jobs::publish::table_name(name)).await? else {
                jobs.push(
                    json!({"job": job.name(), "table": name, "events_version_seen": null,
                    "versions_behind": null, "last_commit_at": null, "watermark": null,
                    "complete_up_to": null}),
                );
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
            let run = &extra["jobs"][job.name()];
            jobs.push(json!({
                "job": job.name(),
                "table": name,
                "events_version_seen": seen,
                "versions_behind": events_version.zip(seen).map(|(e, s)| e - s),
                "last_commit_at": instant(last),
                "watermark": instant(watermark),
                "complete_up_to": instant(watermark.map(|w| w - lateness)),
                "last_run": run["last_run"],
                "duration_seconds": run["duration_seconds"],
                "next_run": run["next_run"],
                "running_since": run["running_since"],
            }));
        }
    }
    Ok(json!({
        "events_version": events_version,
        "tz": state.options.tz.name(),
        "partitions": partitions,
        "jobs": jobs,
        "live_lag": state.live.as_ref().and_then(|l| l.lag()),
    }))
}
