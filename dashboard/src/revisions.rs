//! Revisions: what job runs changed in figures already published as complete, and why
//! (the jobs record them in `metrics/revisions`). Newest first, for a platform, an official
//! account (with its campaigns), a campaign or an advertiser, each to whom may see it.

use axum::extract::{Path, State as AxState};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use lake::registry::Role;
use lake::tables::REVISIONS_TABLE;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use crate::State;
use crate::auth::Caller;
use crate::error::{ApiError, QueryParams};
use crate::model::Revision;
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
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Scope {
    /// Platform-wide figures (activity, uploads).
    Platform,
    /// An official account's followers and its campaigns' launches.
    Account {
        id: String,
        campaigns: Vec<String>,
    },
    Campaign {
        id: String,
    },
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
            Scope::Campaign { id } => one("campaign", id),
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
pub(crate) fn text(row: &Revision, currency: Option<&str>) -> String {
    let change = row.change;
    let sign = if change < 0.0 { "−" } else { "+" };
    let metric = row.metric.as_str();
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
    for part in row.key.split(", ") {
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
    let when = match (after_seconds, row.day.as_deref()) {
        (Some(s), _) => format!(
            "at {} into campaign {}",
            crate::pages::after(s),
            row.entity_id.as_deref().unwrap_or("?")
        ),
        (None, Some(day)) => format!("on {day}"),
        (None, None) => String::new(),
    };
    format!("{amount} {noun}{of} {when} after {}", row.reason)
}

/// The revisions of a scope, newest first, each with its line of text.
#[derive(Debug, Serialize)]
pub(crate) struct RevisionsReport {
    pub scope: Scope,
    pub time_zone: String,
    pub limit: u32,
    pub revisions: Vec<Revision>,
}

async fn respond(
    state: &State,
    scope: Scope,
    params: RevisionParams,
) -> Result<Response, ApiError> {
    let n = limit(&params)?;
    let format = out(&params)?;
    let report = cached(state, &scope, n).await?;
    Ok(match format {
        Out::Json => axum::Json(&*report).into_response(),
        Out::Csv => (
            [(CONTENT_TYPE, "text/csv; charset=utf-8")],
            crate::rows::csv(&report.revisions)?,
        )
            .into_response(),
    })
}

/// The newest `n` revisions of `scope`, cached until the lake changes (for the API and the
/// pages alike).
async fn cached(
    state: &State,
    scope: &Scope,
    n: u32,
) -> Result<std::sync::Arc<RevisionsReport>, ApiError> {
    let view = state.view.current().await?;
    let key = format!("{}|{n}", scope.key());
    view.cached(key, || async {
        let mut revisions: Vec<Revision> = view.typed(&sql(scope, n), &[REVISIONS_TABLE]).await?;
        for r in &mut revisions {
            r.text = text(r, scope.currency());
        }
        Ok(RevisionsReport {
            scope: scope.clone(),
            time_zone: state.options.tz.name().to_string(),
            limit: n,
            revisions,
        })
    })
    .await
}

/// An official account's scope: the account and the campaigns it owns.
pub(crate) async fn account_scope(state: &State, id: &str) -> Result<Scope, ApiError> {
    let own = crate::reports::campaign_list(state, id).await?;
    Ok(Scope::Account {
        id: id.to_string(),
        campaigns: own.campaigns.into_iter().map(|c| c.id).collect(),
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
    respond(&state, Scope::Campaign { id }, params).await
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
pub(crate) async fn section(state: &State, scope: &Scope) -> Result<Markup, ApiError> {
    let report = cached(state, scope, 20).await?;
    let shown = |v: Option<f64>| {
        v.map_or("none".into(), |x| {
            grouped(x, if x.fract() == 0.0 { 0 } else { 2 })
        })
    };
    Ok(html! {
        section {
            h2 { "Revisions" }
            p.meta {
                "Figures of complete days (and passed launch milestones) that a later job run \
                 changed, newest first, with the reason."
            }
            @if report.revisions.is_empty() {
                p.empty { "No complete figure has been revised." }
            } @else {
                ul id="revisions" {
                    @for r in &report.revisions {
                        li {
                            b { (r.text) } " "
                            span.meta {
                                "recorded " (r.recorded_at) " · " (r.metric) " was "
                                (shown(r.before)) ", now " (shown(r.after))
                            }
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(change: f64, metric: &str, key: &str, day: Option<&str>, reason: &str) -> Revision {
        Revision {
            recorded_at: String::new(),
            table_name: String::new(),
            table_version: 1,
            entity_kind: "campaign".into(),
            entity_id: Some("launch-1".into()),
            day: day.map(str::to_string),
            key: key.into(),
            metric: metric.into(),
            before: None,
            after: None,
            change,
            reason: reason.into(),
            events_version_before: None,
            events_version_after: None,
            text: String::new(),
        }
    }

    #[test]
    fn a_revision_reads_as_a_sentence() {
        let r = rev(1204.0, "followers", "", Some("2015-04-28"), "late events");
        assert_eq!(
            text(&r, None),
            "+1,204 followers on 2015-04-28 after late events"
        );
        let r = rev(
            -250.0,
            "spend_cents",
            "ad_id=ad-7",
            Some("2015-05-04"),
            "late events",
        );
        assert_eq!(
            text(&r, Some("USD")),
            "−2.50 USD spend (ad ad-7) on 2015-05-04 after late events"
        );
        let r = rev(
            3.0,
            "users",
            "after_seconds=600",
            None,
            "the campaign's definition changed",
        );
        assert_eq!(
            text(&r, None),
            "+3 users at +10 min into campaign launch-1 after the campaign's definition changed"
        );
        let r = rev(
            -1.0,
            "followers",
            "",
            Some("2015-04-28"),
            "a follower baseline was imported",
        );
        assert_eq!(
            text(&r, None),
            "−1 follower on 2015-04-28 after a follower baseline was imported"
        );
        let r = rev(
            7.0,
            "dau",
            "breakdown=platform_group, segment=mobile",
            Some("2015-04-29"),
            "late events",
        );
        assert_eq!(
            text(&r, None),
            "+7 DAU (platform group mobile) on 2015-04-29 after late events"
        );
    }
}
