//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4): requests by method,
//! route and status with a latency histogram, and the live consumer's lag and counts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State as AxState};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lake::registry::Role;

use crate::State;
use crate::auth::Caller;
use crate::error::ApiError;

/// Metrics of another part of the process (the ingester's and the jobs', under `spacepulse
/// run`), appended to `/metrics` in the text exposition format.
pub trait ExtraMetrics: Send + Sync + std::fmt::Debug {
    fn render(&self, out: &mut String);

    /// What the process knows beyond the lake, for `GET /api/v1/status`.
    fn status(&self) -> ProcessStatus {
        ProcessStatus::default()
    }
}

/// What a process knows beyond the lake: the consumer's lag and the jobs' runs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcessStatus {
    /// Per topic, per partition: messages behind the broker's high watermark.
    pub lag: std::collections::BTreeMap<String, std::collections::BTreeMap<i32, i64>>,
    /// Per job, its runs.
    pub jobs: std::collections::BTreeMap<String, JobRuns>,
}

/// A job's runs under `spacepulse run`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobRuns {
    pub runs_ok: u64,
    pub runs_failed: u64,
    /// When it last ran to the end (RFC 3339).
    pub last_run: Option<String>,
    /// How long its last run took.
    pub duration_seconds: f64,
    /// When it runs next at the latest.
    pub next_run: Option<String>,
    /// When the run in progress started.
    pub running_since: Option<String>,
}

/// Latency buckets, seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Route {
    count: u64,
    sum: f64,
    /// Non-cumulative counts per bucket, plus one for +Inf.
    buckets: [u64; BUCKETS.len() + 1],
}

/// Request counters, keyed by (method, route template, status).
#[derive(Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<(String, String, u16), Route>>,
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut routes = self.routes.lock().expect("not poisoned");
        let key = (method.to_string(), route.to_string(), status);
        let r = routes.entry(key).or_default();
        r.count += 1;
        r.sum += seconds;
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        r.buckets[i] += 1;
    }

    fn render(&self, out: &mut String) {
        let routes = self.routes.lock().expect("not poisoned");
        out.push_str(
            "# HELP spacepulse_http_requests_total HTTP requests answered.\n\
             # TYPE spacepulse_http_requests_total counter\n",
        );
        for ((m, r, s), v) in routes.iter() {
            let _ = writeln!(
                out,
                "spacepulse_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {}",
                label(r),
                v.count
            );
        }
        out.push_str(
            "# HELP spacepulse_http_request_duration_seconds Time to answer, by route.\n\
             # TYPE spacepulse_http_request_duration_seconds histogram\n",
        );
        // The histogram is per method and route, across statuses.
        let mut by_route: BTreeMap<(&str, &str), Route> = BTreeMap::new();
        for ((m, r, _), v) in routes.iter() {
            let e = by_route.entry((m, r)).or_default();
            e.count += v.count;
            e.sum += v.sum;
            for (a, b) in e.buckets.iter_mut().zip(v.buckets.iter()) {
                *a += b;
            }
        }
        for ((m, r), v) in by_route {
            let r = label(r);
            let mut cumulative = 0;
            for (i, le) in BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_string()])
                .enumerate()
            {
                cumulative += v.buckets[i];
                let _ = writeln!(
                    out,
                    "spacepulse_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "spacepulse_http_request_duration_seconds_sum{{method=\"{m}\",route=\"{r}\"}} {}\n\
                 spacepulse_http_request_duration_seconds_count{{method=\"{m}\",route=\"{r}\"}} {}",
                v.sum, v.count
            );
        }
    }
}

use lake::prometheus_label as label;

/// Times every request; the route is the matched template (`/api/v1/accounts/{id}`), so
/// ids never become labels; unmatched paths count as `unmatched`.
pub async fn track(AxState(state): AxState<State>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(req).await;
    state.http_metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics` (operator or scraper tokens: Prometheus's `authorization` scrape setting).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn metrics(caller: Caller, AxState(state): AxState<State>) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator, Role::Scraper])?;
    let mut out = String::new();
    state.http_metrics.render(&mut out);
    out.push_str(
        "# HELP spacepulse_live_enabled Whether the live consumer runs (--brokers).\n\
         # TYPE spacepulse_live_enabled gauge\n",
    );
    let _ = writeln!(
        out,
        "spacepulse_live_enabled {}",
        u8::from(state.live.is_some())
    );
    if let Some(live) = &state.live {
        let snap = live.latest();
        let c = &snap.consumer;
        let _ = write!(
            out,
            "# HELP spacepulse_live_consumer_lag_messages Messages on the broker the live consumer has not read.\n\
             # TYPE spacepulse_live_consumer_lag_messages gauge\n\
             spacepulse_live_consumer_lag_messages {}\n\
             # HELP spacepulse_live_messages_total Messages the live consumer read.\n\
             # TYPE spacepulse_live_messages_total counter\n\
             spacepulse_live_messages_total {}\n\
             # HELP spacepulse_live_rejected_total Messages that were not valid events.\n\
             # TYPE spacepulse_live_rejected_total counter\n\
             spacepulse_live_rejected_total {}\n\
             # HELP spacepulse_live_duplicates_total Events whose event_id was already counted.\n\
             # TYPE spacepulse_live_duplicates_total counter\n\
             spacepulse_live_duplicates_total {}\n\
             # HELP spacepulse_live_events_per_second Events in the last complete second of stream time.\n\
             # TYPE spacepulse_live_events_per_second gauge\n\
             spacepulse_live_events_per_second {}\n",
            c.lag.map(|l| l.to_string()).unwrap_or_else(|| "NaN".into()),
            c.consumed,
            c.rejected,
            c.duplicates,
            snap.events_per_second,
        );
    }
    if let Some(extra) = &state.options.extra_metrics {
        extra.render(&mut out);
    }
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response())
}
