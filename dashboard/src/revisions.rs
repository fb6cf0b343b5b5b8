//! Revisions: what job runs changed in figures already published as complete, and why
//! (the jobs record them in `metrics/revisions`). Newest first, for a platform, an official
//! account (with its campaigns), a campaign or an advertiser, each to whom may see it.

use axum::extract::{Path, State as AxState};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use lake::registry::Role;
use lake::tables::REVISIONS_TABLE;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::auth::Caller;
use crate::error::{ApiError, QueryParams};
use crate::pages::grouped;
use crate::reports::{HasFormat, Out, campaign_access, currency_of, lit, out};

/// The most revisions one request returns.
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevisionParams {
    /// How many revisions, newest first: 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

impl HasFormat for RevisionParams {
    fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }
}

/// Whose revisions.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Platform-wide figures (activity, uploads).
    Platform,
    /// An official account's followers and its campaigns' launches.
    Account {
        id: String,
        campaigns: Vec<String>,
    },
    Campaign(String),
    /// An advertiser's ads, money in its currency.
    Advertiser {
        id: String,
        currency: String,
    },
}

impl Scope {
    fn filter(&self) -> String {
        let one = |kind: &str, id: &str| {
            format!("(entity_kind = {} AND entity_id = {})", lit(kind), lit(id))
        };
        match self {
            Scope::Platform => "entity_kind = 'platform'".into(),
            Scope::Account { id, campaigns } => {
                let mut parts = vec![one("account", id)];
                parts.extend(campaigns.iter().map(|c| one("campaign", c)));
                parts.join(" OR ")
            }
            Scope::Campaign(id) => one("campaign", id),
            Scope::Advertiser { id, .. } => one("advertiser", id),
        }
    }

    fn key(&self) -> String {
        format!("revisions|{self:?}")
    }

    fn currency(&self) -> Option<&str> {
        match self {
            Scope::Advertiser { currency, .. } => Some(currency),
            _ => None,
        }
    }
}

fn sql(scope: &Scope, limit: u32) -> String {
    format!(
        "SELECT CAST(recorded_at AS VARCHAR) AS recorded_at, table_name, table_version, \
         entity_kind, entity_id, CAST(revised_day AS VARCHAR) AS day, key, metric, before, \
         after, change, reason, events_version_before, events_version_after \
         FROM {REVISIONS_TABLE} WHERE {} \
         ORDER BY recorded_at DESC, table_version DESC, entity_id, revised_day, key, metric \
         LIMIT {limit}",
        scope.filter()
    )
}

fn limit(params: &RevisionParams) -> Result<u32, ApiError> {
    match params.limit {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit: {n} is out of range; give 1 to {MAX_LIMIT}"
        ))),
    }
}

/// A revision in one line: "+1,204 followers on 2015-04-28 after late events".
pub(crate) fn text(row: &Value, currency: Option<&str>) -> String {
    let change = row["change"].as_f64().unwrap_or(0.0);
    let sign = if change < 0.0 { "−" } else { "+" };
    let metric = row["metric"].as_str().unwrap_or("");
    let amount = match (metric, currency) {
        ("spend_cents" | "conversion_value_cents", c) => format!(
            "{sign}{} {}",
            grouped(change.abs() / 100.0, 2),
            c.unwrap_or(lake::registry::DEFAULT_CURRENCY)
        ),
        _ if change.fract() != 0.0 => format!("{sign}{}", grouped(change.abs(), 2)),
        _ => format!("{sign}{}", grouped(change.abs(), 0)),
    };
    let noun = match metric {
        "dau" => "DAU",
        "wau" => "WAU",
        "mau" => "MAU",
        "new_users" => "new users",
        "spend_cents" => "spend",
        "conversion_value_cents" => "conversion value",
        m => m,
    };
    // "+1 user", "+1 follower".
    let noun = match noun.strip_suffix('s') {
        Some(one) if change.abs() == 1.0 && noun.starts_with(char::is_lowercase) => one,
        _ => noun,
    };
    let mut of = Vec::new();
    let mut after_seconds = None;
    for part in row["key"].as_str().unwrap_or("").split(", ") {
        match part.split_once('=') {
            Some(("ad_id", ad)) => of.push(format!("ad {ad}")),
            Some(("breakdown", "total")) | Some(("segment", "all")) | None => {}
            Some(("breakdown", b)) => of.push(b.replace('_', " ")),
            Some(("segment", s)) => of.push(s.to_string()),
            Some(("after_seconds", s)) => after_seconds = s.parse::<i64>().ok(),
            Some((k, v)) => of.push(format!("{k} {v}")),
        }
    }
    let of = if of.is_empty() {
        String::new()
    } else {
        format!(" ({})", of.join(" "))
    };
    let when = match (after_seconds, row["day"].as_str()) {
        (Some(s), _) => format!(
            "at {} into campaign {}",
            crate::pages::after(s),
            row["entity_id"].as_str().unwrap_or("?")
        ),
        (None, Some(day)) => format!("on {day}"),
        (None, None) => String::new(),
    };
    let reason = row["reason"].as_str().unwrap_or("a recompute");
    format!("{amount} {noun}{of} {when} after {reason}")
}

/// The revisions of `scope`, newest first, each with its line of text.
async fn value(state: &State, scope: &Scope, limit: u32) -> Result<Value, ApiError> {
    let view = state.view.current().await?;
    let mut rows = view.rows(&sql(scope, limit), &[REVISIONS_TABLE]).await?;
    for r in &mut rows {
        let t = text(r, scope.currency());
        r["text"] = Value::String(t);
    }
    Ok(json!({
        "scope": match scope {
            Scope::Platform => json!({"kind": "platform"}),
            Scope::Account { id, campaigns } => json!({"kind": "account", "id": id, "campaigns": campaigns}),
            Scope::Campaign(id) => json!({"kind": "campaign", "id": id}),
            Scope::Advertiser { id, currency } => json!({"kind": "advertiser", "id": id, "currency": currency}),
        },
        "time_zone": state.options.tz.name(),
        "limit": limit,
        "revisions": rows,
    }))
}

async fn respond(
    state: &State,
    scope: Scope,
    params: RevisionParams,
) -> Result<Response, ApiError> {
    let n = limit(&params)?;
    let body = cached(state, &scope, n, matches!(out(&params)?, Out::Csv)).await?;
    Ok(([(CONTENT_TYPE, body.0.clone())], body.1.clone()).into_response())
}

/// The newest `n` revisions of `scope` as JSON or CSV, cached until the lake changes (for the
/// API and the pages alike).
async fn cached(
    state: &State,
    scope: &Scope,
    n: u32,
    csv: bool,
) -> Result<crate::view::Cached, ApiError> {
    let view = state.view.current().await?;
    let key = format!("{}|{n}|{csv}", scope.key());
    view.cached(key, || async {
        if csv {
            Ok((
                "text/csv; charset=utf-8".into(),
                crate::reports::csv(&view, &sql(scope, n), REVISIONS_TABLE).await?,
            ))
        } else {
            let v = value(state, scope, n).await?;
            Ok((
                "application/json".into(),
                serde_json::to_vec(&v).expect("json"),
            ))
        }
    })
    .await
}

/// An official account's scope: the account and the campaigns it owns.
pub(crate) async fn account_scope(state: &State, id: &str) -> Result<Scope, ApiError> {
    let own = {
        let id = id.to_string();
        state
            .registry
            .call(move |r| {
                r.campaigns().map(|all| {
                    all.into_iter()
                        .filter(|c| c.account_id == id)
                        .map(|c| c.id)
                        .collect::<Vec<_>>()
                })
            })
            .await?
    };
    Ok(Scope::Account {
        id: id.to_string(),
        campaigns: own,
    })
}

pub(crate) async fn advertiser_scope(state: &State, id: &str) -> Result<Scope, ApiError> {
    Ok(Scope::Advertiser {
        id: id.to_string(),
        currency: currency_of(state, id).await?,
    })
}

#[utoipa::path(get, path = "/platform/revisions", tag = "reports", params(RevisionParams), responses((status = 200, description = "What job runs changed in complete platform figures (activity, uploads) and why, newest first (JSON or CSV)"), (status = 400, description = "A bad limit or format"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn platform(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(params): QueryParams<RevisionParams>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator, Role::Analyst])?;
    respond(&state, Scope::Platform, params).await
}

#[utoipa::path(get, path = "/accounts/{id}/revisions", tag = "reports", params(("id" = String, Path, description = "Official account id"), RevisionParams), responses((status = 200, description = "What job runs changed in the account's complete figures and its campaigns' launch milestones, and why, newest first (JSON or CSV)"), (status = 400, description = "A bad limit or format"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not the right role, or the account is not verified"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn account(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<RevisionParams>,
) -> Result<Response, ApiError> {
    caller.tenant(Role::Official, &id)?;
    let scope = account_scope(&state, &id).await?;
    respond(&state, scope, params).await
}

#[utoipa::path(get, path = "/campaigns/{id}/revisions", tag = "reports", params(("id" = String, Path, description = "Campaign id"), RevisionParams), responses((status = 200, description = "What job runs changed in the campaign's complete launch milestones, and why, newest first (JSON or CSV)"), (status = 400, description = "A bad limit or format"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn campaign(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<RevisionParams>,
) -> Result<Response, ApiError> {
    campaign_access(&caller, &state, &id).await?;
    respond(&state, Scope::Campaign(id), params).await
}

#[utoipa::path(get, path = "/advertisers/{id}/revisions", tag = "reports", params(("id" = String, Path, description = "Advertiser id"), RevisionParams), responses((status = 200, description = "What job runs changed in the advertiser's complete daily figures, and why, newest first (JSON or CSV)"), (status = 400, description = "A bad limit or format"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not the right role, or the account is not verified"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn advertiser(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<RevisionParams>,
) -> Result<Response, ApiError> {
    caller.tenant(Role::Advertiser, &id)?;
    let scope = advertiser_scope(&state, &id).await?;
    respond(&state, scope, params).await
}

/// The page section: the newest revisions, each in one line.
pub(crate) async fn section(state: &State, scope: &Scope) -> Result<String, ApiError> {
    let body = cached(state, scope, 20, false).await?;
    let v: Value =
        serde_json::from_slice(&body.1).map_err(|e| ApiError::internal(e.to_string()))?;
    let rows = v["revisions"].as_array().cloned().unwrap_or_default();
    let body = if rows.is_empty() {
        "<p class=\"empty\">No complete figure has been revised.</p>".to_string()
    } else {
        let items: String = rows
            .iter()
            .map(|r| {
                format!(
                    "<li><b>{}</b> <span class=\"meta\">recorded {} · {} was {}, now {}</span></li>",
                    crate::pages::esc(r["text"].as_str().unwrap_or("")),
                    crate::pages::esc(r["recorded_at"].as_str().unwrap_or("")),
                    crate::pages::esc(r["metric"].as_str().unwrap_or("")),
                    shown(&r["before"]),
                    shown(&r["after"]),
                )
            })
            .collect();
        format!("<ul id=\"revisions\">{items}</ul>")
    };
    Ok(format!(
        "<section><h2>Revisions</h2><p class=\"meta\">Figures of complete days (and passed \
         launch milestones) that a later job run changed, newest first, with the reason.</p>\
         {body}</section>"
    ))
}

fn shown(v: &Value) -> String {
    v.as_f64().map_or("none".into(), |x| {
        grouped(x, if x.fract() == 0.0 { 0 } else { 2 })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_reads_as_a_sentence() {
        let r = json!({"change": 1204.0, "metric": "followers", "key": "", "day": "2015-04-28",
                       "reason": "late events", "entity_id": "xiaomi"});
        assert_eq!(
            text(&r, None),
            "+1,204 followers on 2015-04-28 after late events"
        );
        let r = json!({"change": -250.0, "metric": "spend_cents", "key": "ad_id=ad-7",
                       "day": "2015-05-04", "reason": "late events"});
        assert_eq!(
            text(&r, Some("USD")),
            "−2.50 USD spend (ad ad-7) on 2015-05-04 after late events"
        );
        let r = json!({"change": 3.0, "metric": "users", "key": "after_seconds=600",
                       "day": null, "entity_id": "launch-1",
                       "reason": "the campaign's definition changed"});
        assert_eq!(
            text(&r, None),
            "+3 users at +10 min into campaign launch-1 after the campaign's definition changed"
        );
        let r = json!({"change": -1.0, "metric": "followers", "key": "", "day": "2015-04-28",
                       "reason": "a follower baseline was imported"});
        assert_eq!(
            text(&r, None),
            "−1 follower on 2015-04-28 after a follower baseline was imported"
        );
        let r = json!({"change": 7.0, "metric": "dau", "key": "breakdown=platform_group, segment=mobile",
                       "day": "2015-04-29", "reason": "late events"});
        assert_eq!(
            text(&r, None),
            "+7 DAU (platform group mobile) on 2015-04-29 after late events"
        );
    }
}
