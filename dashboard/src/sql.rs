//! `POST /api/v1/sql`: analysts' and operators' read-only SQL under limits (query::guard).
//!
//! The body is the query as text, or JSON `{"sql": "...", "format": "ndjson"}`; the format
//! (`ndjson`, the default, `csv`, `json` or `arrow`) may also come as `?format=`. The result
//! is checked against every limit before the first byte is sent, then streamed batch by
//! batch in the format asked for.

use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use lake::registry::{QueryRun, Role};
use query::output::{Encoder, Format};
use serde::Deserialize;

use crate::State;
use crate::auth::Caller;
use crate::error::{ApiError, QueryParams};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SqlParams {
    /// `ndjson` (default), `csv`, `json` or `arrow`.
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SqlBody {
    sql: String,
    format: Option<String>,
}

#[utoipa::path(post, path = "/sql", tag = "sql", params(SqlParams), request_body(content = String, description = "The query, or JSON {\"sql\", \"format\"}", content_type = "text/plain"), responses((status = 200, description = "The result as ndjson (default), csv, json or arrow"), (status = 400, description = "Not valid SQL, an unknown table or column"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not a query (DDL, DML, SET, COPY ...), or the role may not run SQL"), (status = 408, description = "The time limit"), (status = 422, description = "The memory or row limit")), security(("bearer" = []), ("cookie" = [])))]
pub async fn sql(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(params): QueryParams<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Analyst, Role::Operator])?;
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (text, body_format) = if is_json {
        let b: SqlBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("body: expected {{\"sql\": \"...\"}}: {e}"))
        })?;
        (b.sql, b.format)
    } else {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("body: the query is not UTF-8"))?;
        (text, None)
    };
    let name = body_format
        .or(params.format)
        .unwrap_or_else(|| "ndjson".into());
    let format = Format::parse(&name)
        .filter(|f| {
            matches!(
                f,
                Format::Ndjson | Format::Csv | Format::Json | Format::Arrow
            )
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "format: expected ndjson, csv, json or arrow, got {name:?}"
            ))
        })?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "body: no query; send the SQL as the body",
        ));
    }
    let view = state.view.current().await?;
    let started = std::time::Instant::now();
    let result = view.sql.run_as(&caller.token.id, &text).await;
    audit(&state, &caller, &text, started.elapsed(), &result).await;
    let answer = result?;
    tracing::info!(
        role = %caller.role(),
        account = %caller.account.id,
        rows = answer.rows,
        ms = answer.elapsed.as_millis() as u64,
        "sql"
    );
    let encoder = Encoder::new(format, answer.schema.clone())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // One chunk per batch, encoded as the body is sent, then the closing bytes.
    let batches = answer.batches.into_iter().map(Some).chain([None]);
    let stream = futures::stream::iter(batches).scan(Some(encoder), |encoder, batch| {
        let chunk = match (batch, encoder.as_mut()) {
            (Some(b), Some(e)) => e.batch(&b),
            _ => encoder.take().map_or(Ok(Vec::new()), Encoder::finish),
        };
        std::future::ready(Some(chunk.map(Bytes::from).map_err(std::io::Error::other)))
    });
    Ok((
        [
            (CONTENT_TYPE, format.content_type().to_string()),
            (
                axum::http::HeaderName::from_static("x-spacepulse-rows"),
                answer.rows.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Writes the query's audit record; a registry that cannot take it is logged, not the
/// caller's failure.
async fn audit(
    state: &State,
    caller: &Caller,
    text: &str,
    took: std::time::Duration,
    result: &Result<query::guard::Answer, query::guard::QueryError>,
) {
    let (token_id, account_id, role, sql) = (
        caller.token.id.clone(),
        caller.account.id.clone(),
        caller.role().to_string(),
        text.to_string(),
    );
    let rows = result.as_ref().ok().map(|a| a.rows as i64);
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    let request_id = crate::error::request_id();
    let recorded = state
        .registry
        .call(move |r| {
            r.record_query(&QueryRun {
                token_id: &token_id,
                account_id: &account_id,
                role: &role,
                sql: &sql,
                duration_ms: took.as_millis() as i64,
                rows,
                outcome,
                request_id,
            })
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "the SQL audit log did not take a record");
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Records to return, newest first (1 to 1000; default 100).
    pub limit: Option<usize>,
    /// Only this token's queries (`tok_...`).
    pub token: Option<String>,
}

/// The SQL audit log (operators): who ran what, how long, how many rows, how it ended.
#[utoipa::path(get, path = "/sql/audit", tag = "sql", params(AuditParams), responses((status = 200, description = "{records: [{seq, at_ms, token_id, account_id, role, sql_sha256, sql_text, sql_bytes, duration_ms, rows, outcome, request_id}]}, newest first"), (status = 400, description = "A bad parameter"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not an operator")), security(("bearer" = []), ("cookie" = [])))]
pub async fn audit_log(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(p): QueryParams<AuditParams>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Operator])?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: expected 1 to 1000, got {limit}"
        )));
    }
    let records = state
        .registry
        .call(move |r| r.queries(p.token.as_deref(), limit))
        .await?;
    Ok(axum::Json(serde_json::json!({ "records": records })))
}
