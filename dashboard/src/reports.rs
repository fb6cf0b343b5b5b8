//! The reports: platform activity and upload peaks (operators, analysts), an official
//! account's followers and campaigns (funnel, launch curve), an advertiser's ads. JSON by
//! default, CSV with `?format=csv`; a range preset (`?range=today|7d|30d`, ending on the
//! newest day with data) or `?from=&to=` (YYYY-MM-DD in the report time zone).

use axum::extract::{Path, State as AxState};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use lake::registry::Role;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::State;
use crate::auth::Caller;
use crate::error::{ApiError, QueryParams};
use crate::model::*;
use crate::row;
use crate::rows::FromBatch;
use crate::view::View;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// A preset ending on the newest day with data: `today`, `7d` or `30d`.
    pub range: Option<String>,
    /// The first day, YYYY-MM-DD in the report time zone (instead of `range`).
    pub from: Option<String>,
    /// The last day, YYYY-MM-DD in the report time zone (instead of `range`).
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A report's format alone (the campaign reports have no range).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Format {
    /// `json` (default) or `csv` (the funnel's rows; the launch curve second by second).
    pub format: Option<String>,
}

/// A string as a SQL literal.
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn day_lit(day: i32) -> String {
    format!("DATE '{}'", query::tz::format_day(day))
}

/// The days a report covers: `(from, to)` inclusive, either end open when unknown.
fn days(params: &Params, latest: Option<i32>) -> Result<(Option<i32>, Option<i32>), ApiError> {
    let parse = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| {
                query::tz::parse_day(s).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
            })
            .transpose()
    };
    let (from, to) = (parse("from", &params.from)?, parse("to", &params.to)?);
    if let Some(range) = &params.range {
        if from.is_some() || to.is_some() {
            return Err(ApiError::bad_request(
                "range: give a preset or from/to, not both",
            ));
        }
        let span = match range.as_str() {
            "today" => 1,
            "7d" => 7,
            "30d" => 30,
            other => {
                return Err(ApiError::bad_request(format!(
                    "range: expected today, 7d or 30d, got {other:?}"
                )));
            }
        };
        return Ok(match latest {
            Some(l) => (Some(l - span + 1), Some(l)),
            None => (None, None),
        });
    }
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request("from: is after to"));
    }
    Ok((from, to))
}

/// The reports' query string as a request's meets it (`?range=7d&format=csv`, `?from=...`):
/// parsed by the same extractor, checked by the same rules, with `newest` the newest day with
/// data. The error a caller would get, if any. For the fuzzer (`fuzz/`).
pub fn check_report_query(query: &str, newest: Option<i32>) -> Result<(), String> {
    let uri: axum::http::Uri = format!("/r?{query}")
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?;
    let axum::extract::Query(params) =
        axum::extract::Query::<Params>::try_from_uri(&uri).map_err(|e| e.body_text())?;
    days(&params, newest).map_err(|e| e.message)?;
    out(&params).map_err(|e| e.message)?;
    Ok(())
}

fn day_filter(from: Option<i32>, to: Option<i32>) -> String {
    let mut f = String::new();
    if let Some(d) = from {
        f.push_str(&format!(" AND day >= {}", day_lit(d)));
    }
    if let Some(d) = to {
        f.push_str(&format!(" AND day <= {}", day_lit(d)));
    }
    f
}

pub(crate) enum Out {
    Json,
    Csv,
}

pub(crate) fn out(params: &impl HasFormat) -> Result<Out, ApiError> {
    match params.format() {
        None | Some("json") => Ok(Out::Json),
        Some("csv") => Ok(Out::Csv),
        Some(other) => Err(ApiError::bad_request(format!(
            "format: expected json or csv, got {other:?}"
        ))),
    }
}

/// A query string with a `format`.
pub(crate) trait HasFormat {
    fn format(&self) -> Option<&str>;
}

impl HasFormat for Params {
    fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }
}

impl HasFormat for Format {
    fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }
}

row! {
    /// The newest day of a table.
    pub struct Newest {
        pub d: Option<String>,
    }
}

/// The newest day of `table` matching `filter` (a `WHERE` condition).
async fn latest(view: &View, table: &str, filter: &str) -> Result<Option<i32>, ApiError> {
    let rows: Vec<Newest> = view
        .typed(
            &format!("SELECT CAST(max(day) AS VARCHAR) AS d FROM {table} WHERE {filter}"),
            &[table],
        )
        .await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.d)
        .and_then(|d| query::tz::parse_day(&d).ok()))
}

/// One daily report over a metric table.
pub(crate) struct Daily<'a> {
    name: &'static str,
    table: &'a str,
    columns: &'a str,
    /// A `WHERE` condition: the tenant's rows, or all.
    filter: String,
    order: &'a str,
}

/// A row of a daily report: its day, and whether that day may still change.
pub(crate) trait DailyRow: FromBatch + Serialize + Clone {
    fn day(&self) -> &str;
    fn mark(&mut self, provisional: bool);
}

macro_rules! daily_rows {
    ($($t:ty),*) => {$(
        impl DailyRow for $t {
            fn day(&self) -> &str {
                &self.day
            }
            fn mark(&mut self, provisional: bool) {
                self.provisional = provisional;
            }
        }
    )*};
}
daily_rows!(ActivityRow, UploadsRow, FollowersRow, AdDayRow, CampaignDay);

/// The rows of `SELECT columns FROM table WHERE filter AND <days> ORDER BY order` with the
/// report's range, time zone and freshness; and the range's first and last day.
async fn daily_of<R: DailyRow>(
    state: &State,
    view: &View,
    report: &Daily<'_>,
    params: &Params,
) -> Result<(DailyReport<R>, Option<i32>, Option<i32>), ApiError> {
    let Daily {
        name,
        table,
        columns,
        filter,
        order,
    } = report;
    let newest = latest(view, table, filter).await?;
    let (from, to) = days(params, newest)?;
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE {filter}{} ORDER BY {order}",
        day_filter(from, to)
    );
    let mut rows: Vec<R> = view.typed(&sql, &[table]).await?;
    let fresh = view
        .freshness(table, state.options.allowed_lateness)
        .await?;
    for r in &mut rows {
        let provisional = fresh.provisional_text(r.day());
        r.mark(provisional);
    }
    let report = DailyReport {
        report: name,
        tz: state.options.tz.name().to_string(),
        from: from.map(query::tz::format_day),
        to: to.map(query::tz::format_day),
        newest_day: newest.map(query::tz::format_day),
        complete_up_to: fresh.instant(),
        allowed_lateness_seconds: state.options.allowed_lateness.as_secs(),
        rows,
    };
    Ok((report, from, to))
}

/// A range's part of a cache key.
fn range_key(params: &Params) -> String {
    format!("{:?}|{:?}|{:?}", params.range, params.from, params.to)
}

/// A daily report, typed, cached until the lake changes (the API's and the pages' alike).
pub(crate) async fn daily_report<R: DailyRow>(
    state: &State,
    report: Daily<'_>,
    params: &Params,
) -> Result<Arc<DailyReport<R>>, ApiError> {
    let key = format!(
        "{}|{}|{}|{}",
        report.name,
        report.filter,
        report.columns,
        range_key(params)
    );
    let view = state.view.current().await?;
    view.cached(key, || async {
        Ok(daily_of(state, &view, &report, params).await?.0)
    })
    .await
}

/// A report as the API answers it: JSON, or its rows as CSV.
fn answer<T: Serialize>(
    format: Out,
    report: &T,
    csv: impl FnOnce(&T) -> Result<Vec<u8>, ApiError>,
) -> Result<Response, ApiError> {
    Ok(match format {
        Out::Json => axum::Json(report).into_response(),
        Out::Csv => ([(CONTENT_TYPE, "text/csv; charset=utf-8")], csv(report)?).into_response(),
    })
}

/// A daily report's response.
async fn daily<R: DailyRow>(
    state: &State,
    report: Daily<'_>,
    params: Params,
) -> Result<Response, ApiError> {
    let format = out(&params)?;
    let report = daily_report::<R>(state, report, &params).await?;
    answer(format, &*report, |r| crate::rows::csv(&r.rows))
}

/// DAU, WAU, MAU, DAU/MAU and new users per day, overall and by platform group.
pub(crate) fn activity_report() -> Daily<'static> {
    Daily {
        name: "activity",
        table: "activity",
        columns: "CAST(day AS VARCHAR) AS day, breakdown, segment, dau, wau, mau, dau_mau, new_users, \
         dau_approx, wau_approx, mau_approx, estimator, hll_precision, hll_relative_error",
        filter: "breakdown IN ('total', 'platform_group')".into(),
        order: "day, breakdown DESC, segment",
    }
}

/// Photos uploaded per day with the peak second, minute and hour.
pub(crate) fn uploads_report() -> Daily<'static> {
    Daily {
        name: "uploads",
        table: "uploads_daily",
        columns: "CAST(day AS VARCHAR) AS day, uploads, photos, peak_second, peak_second_photos, \
         peak_minute, peak_minute_photos, peak_hour, peak_hour_photos",
        filter: "true".into(),
        order: "day",
    }
}

/// An official account's followers, reach and engagement per day.
pub(crate) fn followers_report(id: &str) -> Daily<'static> {
    Daily {
        name: "followers",
        table: "accounts_daily",
        columns: "CAST(day AS VARCHAR) AS day, follows, unfollows, net, followers, reach, reach_approx, \
         likes, comments, engagement, baseline_followers, \
         to_char(baseline_as_of, '%Y-%m-%dT%H:%M:%SZ') AS baseline_as_of",
        filter: format!("account_id = {}", lit(id)),
        order: "day",
    }
}

/// An advertiser's ads per day, with totals and each ad's over the range: unique reach exact
/// (the union of the daily reach bitmaps) with its HLL++ estimate beside it, frequency as
/// impressions per exactly reached user; cached until the lake changes.
pub(crate) async fn advertiser_report(
    state: &State,
    id: &str,
    params: &Params,
) -> Result<Arc<AdvertiserReport>, ApiError> {
    let currency = currency_of(state, id).await?;
    let filter = daily_filter(id);
    let figures = format!(
        "{cur} AS currency, sum(impressions) AS impressions, sum(clicks) AS clicks, \
         CAST(sum(clicks) AS DOUBLE) / NULLIF(sum(impressions), 0) AS ctr, \
         sum(conversions) AS conversions, \
         CAST(sum(conversions) AS DOUBLE) / NULLIF(sum(clicks), 0) AS conversion_rate, \
         sum(spend_cents) AS spend_cents, sum(conversion_value_cents) AS conversion_value_cents, \
         CAST(sum(spend_cents) AS DOUBLE) / 100 AS spend, \
         CAST(sum(conversion_value_cents) AS DOUBLE) / 100 AS conversion_value, \
         bitmap_count(bitmap_union(reach_bitmap)) AS unique_reach, \
         CAST(sum(impressions) AS DOUBLE) / NULLIF(bitmap_count(bitmap_union(reach_bitmap)), 0) \
         AS frequency, round(hll_count(hll_merge(reach_hll))) AS unique_reach_approx, \
         {est} AS unique_reach_estimator, \
         {rse} AS unique_reach_relative_error",
        cur = lit(&currency),
        est = lit(query::sketch::HLL_ESTIMATOR),
        rse = query::sketch::hll_relative_error(),
    );
    let daily = Daily {
        name: "advertiser",
        table: "advertisers_daily",
        columns: "CAST(day AS VARCHAR) AS day, ad_id, impressions, clicks, ctr, conversions, \
         conversion_rate, spend_cents, CAST(spend_cents AS DOUBLE) / 100 AS spend, \
         conversion_value_cents, CAST(conversion_value_cents AS DOUBLE) / 100 AS conversion_value, \
         reach, reach_approx, frequency",
        filter: filter.clone(),
        order: "day, ad_id",
    };
    let view = state.view.current().await?;
    let key = format!("advertiser|{id:?}|{currency:?}|{}", range_key(params));
    view.cached(key, || async {
        let (daily, from, to) = daily_of(state, &view, &daily, params).await?;
        let days = day_filter(from, to);
        let table = ["advertisers_daily"];
        let totals: Vec<AdFigures> = view
            .typed(
                &format!("SELECT {figures} FROM advertisers_daily WHERE {filter}{days}"),
                &table,
            )
            .await?;
        let ads = view
            .typed(
                &format!(
                    "SELECT ad_id, {figures} FROM advertisers_daily WHERE {filter}{days} \
                     GROUP BY ad_id ORDER BY ad_id"
                ),
                &table,
            )
            .await?;
        Ok(AdvertiserReport {
            daily,
            totals: totals.into_iter().next(),
            ads,
        })
    })
    .await
}

/// The advertiser's rows.
fn daily_filter(id: &str) -> String {
    format!("advertiser_id = {}", lit(id))
}

#[utoipa::path(get, path = "/platform/activity", tag = "reports", params(Params), responses((status = 200, description = "DAU, WAU, MAU, DAU/MAU, new users per day, total and by platform group (JSON or CSV)"), (status = 400, description = "A bad range"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn activity(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator, Role::Analyst])?;
    daily::<ActivityRow>(&state, activity_report(), params).await
}

#[utoipa::path(get, path = "/platform/uploads", tag = "reports", params(Params), responses((status = 200, description = "Photos per day with the peak second, minute and hour (JSON or CSV)"), (status = 400, description = "A bad range"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn uploads(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator, Role::Analyst])?;
    daily::<UploadsRow>(&state, uploads_report(), params).await
}

#[utoipa::path(get, path = "/accounts/{id}/followers", tag = "reports", params(("id" = String, Path, description = "Official account id"), Params), responses((status = 200, description = "Follows, unfollows, net, followers, reach, engagement per day (JSON or CSV)"), (status = 400, description = "A bad range"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not the right role, or the account is not verified"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn followers(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    caller.tenant(Role::Official, &id)?;
    daily::<FollowersRow>(&state, followers_report(&id), params).await
}

#[utoipa::path(get, path = "/advertisers/{id}/report", tag = "reports", params(("id" = String, Path, description = "Advertiser id"), Params), responses((status = 200, description = "Impressions, clicks, CTR, conversions, spend, value, reach, frequency per day and ad, with totals (JSON or CSV)"), (status = 400, description = "A bad range"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not the right role, or the account is not verified"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn advertiser(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    caller.tenant(Role::Advertiser, &id)?;
    let format = out(&params)?;
    let report = advertiser_report(&state, &id, &params).await?;
    answer(format, &*report, |r| crate::rows::csv(&r.daily.rows))
}

/// The currency an advertiser's money is reported in (the registry's; CNY for an advertiser
/// id only events name).
pub(crate) async fn currency_of(state: &State, id: &str) -> Result<String, ApiError> {
    let id = id.to_string();
    let account = state.registry.call(move |r| r.account(&id)).await?;
    Ok(account.map_or_else(
        || lake::registry::DEFAULT_CURRENCY.to_string(),
        |a| a.currency,
    ))
}

/// The campaigns an official account owns (the registry's).
#[utoipa::path(get, path = "/accounts/{id}/campaigns", tag = "reports", params(("id" = String, Path, description = "Official account id")), responses((status = 200, description = "The account's campaigns"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not the right role, or the account is not verified"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn campaigns(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<axum::Json<CampaignList>, ApiError> {
    caller.tenant(Role::Official, &id)?;
    Ok(axum::Json(campaign_list(&state, &id).await?))
}

pub(crate) async fn campaign_list(state: &State, id: &str) -> Result<CampaignList, ApiError> {
    let all = state.registry.call(|r| r.campaigns()).await?;
    let campaigns = all.into_iter().filter(|c| c.account_id == id).collect();
    Ok(CampaignList {
        account_id: id.to_string(),
        campaigns,
    })
}

/// The campaign's owner may see it (and operators); an unregistered campaign is operators'.
pub(crate) async fn campaign_access(
    caller: &Caller,
    state: &State,
    id: &str,
) -> Result<(), ApiError> {
    let owner = {
        let id = id.to_string();
        state.registry.call(move |r| r.campaign(&id)).await?
    }
    .map(|c| c.account_id);
    // Whoever may not see it gets the answer an unknown campaign gets; only its own
    // (unverified) owner is told why.
    let hidden = || ApiError::not_found(format!("no campaign {id:?}"));
    match owner {
        Some(account) => caller.tenant(Role::Official, &account).map_err(|e| {
            if caller.role() == Role::Official && caller.account.id == account {
                e
            } else {
                hidden()
            }
        }),
        None if caller.role() == Role::Operator => Ok(()),
        None => Err(hidden()),
    }
}

/// The funnel: users per step, conversion, drop-off and time to convert, overall and by
/// platform, region, hour and day of the first view; with a range, the funnel of the users
/// who came in those days and the campaign's exact reach over them.
#[utoipa::path(get, path = "/campaigns/{id}/funnel", tag = "reports", params(("id" = String, Path, description = "Campaign id"), Params), responses((status = 200, description = "Users per step, conversion, drop-off, time to convert; total, by platform, region, hour and day of the first view; with a range, the funnel of the users who came in it; reach per day and over the range, exact and HLL++ (JSON or CSV)"), (status = 400, description = "A bad range or format"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn funnel(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    campaign_access(&caller, &state, &id).await?;
    let format = out(&params)?;
    let report = funnel_report(&state, &id, &params).await?;
    answer(format, &*report, |r| match &r.range_rows {
        Some(rows) => crate::rows::csv(rows),
        None => crate::rows::csv(&r.rows),
    })
}

/// The campaigns' reach per day (the `campaigns` job's).
const CAMPAIGN_DAYS: &str = "campaigns_daily";

/// Whether a range was asked for (else the whole campaign).
fn ranged(params: &Params) -> bool {
    params.range.is_some() || params.from.is_some() || params.to.is_some()
}

fn funnel_sql(id: &str) -> String {
    format!(
        "SELECT breakdown, segment, step, step_type, users, conversion_from_previous, \
         conversion_overall, drop_off, dropped_window_closed, dropped_never_came_back, \
         median_seconds_from_previous, \
         p90_seconds_from_previous, window_ms, mode, registered \
         FROM funnels WHERE campaign_id = {} ORDER BY breakdown DESC, segment, step",
        lit(id)
    )
}

/// The funnel of the users whose first event in the campaign fell in `[from, to]`: the sums
/// of the `day` breakdown's segments (each user is in exactly one), rates recomputed.
fn range_funnel_sql(id: &str, from: Option<i32>, to: Option<i32>) -> String {
    let mut days = String::new();
    if let Some(f) = from {
        days.push_str(&format!(
            " AND segment >= {}",
            lit(&query::tz::format_day(f))
        ));
    }
    if let Some(t) = to {
        days.push_str(&format!(
            " AND segment <= {}",
            lit(&query::tz::format_day(t))
        ));
    }
    format!(
        "WITH s AS (SELECT step, step_type, sum(users) AS users, \
         sum(dropped_window_closed) AS closed, sum(dropped_never_came_back) AS never \
         FROM funnels WHERE campaign_id = {id} AND breakdown = 'day' \
         AND segment <> 'unknown'{days} GROUP BY step, step_type) \
         SELECT step, step_type, users, \
         CAST(users AS DOUBLE) / NULLIF(lag(users) OVER (ORDER BY step), 0) AS conversion_from_previous, \
         CAST(users AS DOUBLE) / NULLIF(first_value(users) OVER (ORDER BY step), 0) AS conversion_overall, \
         lag(users) OVER (ORDER BY step) - users AS drop_off, \
         closed AS dropped_window_closed, never AS dropped_never_came_back \
         FROM s ORDER BY step",
        id = lit(id)
    )
}

fn curve_sql(id: &str) -> String {
    format!(
        "SELECT second, new_users, users FROM launch_curve WHERE campaign_id = {} ORDER BY second",
        lit(id)
    )
}

/// The funnel report, cached until the lake changes.
pub(crate) async fn funnel_report(
    state: &State,
    id: &str,
    params: &Params,
) -> Result<Arc<FunnelReport>, ApiError> {
    let view = state.view.current().await?;
    let key = format!("funnel|{id:?}|{}", range_key(params));
    view.cached(key, || funnel_of(state, &view, id, params))
        .await
}

async fn funnel_of(
    state: &State,
    view: &View,
    id: &str,
    params: &Params,
) -> Result<FunnelReport, ApiError> {
    let rows = view.typed(&funnel_sql(id), &["funnels"]).await?;
    let times = view
        .typed(
            &format!(
                "SELECT step, step_type, from_seconds, to_seconds, users FROM funnel_times \
                 WHERE campaign_id = {} ORDER BY step, from_seconds",
                lit(id)
            ),
            &["funnel_times"],
        )
        .await?;
    let fresh = view
        .freshness("funnels", state.options.allowed_lateness)
        .await?;
    let campaign = format!("campaign_id = {}", lit(id));
    let newest = latest(view, CAMPAIGN_DAYS, &campaign).await?;
    let (from, to) = days(params, newest)?;
    // A preset over a campaign with no days yet covers nothing (not every day).
    let nothing = params.range.is_some() && newest.is_none();
    let range = if nothing {
        " AND FALSE".to_string()
    } else {
        day_filter(from, to)
    };
    let mut daily: Vec<CampaignDay> = view
        .typed(
            &format!(
                "SELECT CAST(day AS VARCHAR) AS day, reach, new_users FROM {CAMPAIGN_DAYS} \
                 WHERE {campaign}{range} ORDER BY day"
            ),
            &[CAMPAIGN_DAYS],
        )
        .await?;
    for d in &mut daily {
        d.provisional = fresh.provisional_text(&d.day);
    }
    // Reach over the range: the days' users unioned (exact), and their HLL++ sketches merged.
    let counts: Vec<ReachCounts> = view
        .typed(
            &format!(
                "SELECT COALESCE(bitmap_count(bitmap_union(reach_bitmap)), 0) AS reach, \
                 COALESCE(round(hll_count(hll_merge(reach_hll))), 0) AS reach_approx \
                 FROM {CAMPAIGN_DAYS} WHERE {campaign}{range}"
            ),
            &[CAMPAIGN_DAYS],
        )
        .await?;
    let counts = counts.into_iter().next().unwrap_or(ReachCounts {
        reach: 0,
        reach_approx: 0.0,
    });
    let range_rows = if nothing {
        Some(Vec::new())
    } else if ranged(params) {
        Some(
            view.typed(&range_funnel_sql(id, from, to), &["funnels"])
                .await?,
        )
    } else {
        None
    };
    let tz = state.options.tz.name().to_string();
    Ok(FunnelReport {
        campaign_id: id.to_string(),
        complete_up_to: fresh.instant(),
        allowed_lateness_seconds: state.options.allowed_lateness.as_secs(),
        time_zone: tz.clone(),
        tz,
        from: from.map(query::tz::format_day),
        to: to.map(query::tz::format_day),
        newest_day: newest.map(query::tz::format_day),
        rows,
        range_rows,
        reach: Reach {
            reach: counts.reach,
            reach_approx: counts.reach_approx,
            estimator: query::sketch::HLL_ESTIMATOR,
            hll_relative_error: query::sketch::hll_relative_error(),
        },
        daily,
        time_to_convert: times,
    })
}

/// The launch: the milestones (+1 s ... +24 h) and the first hour second by second.
#[utoipa::path(get, path = "/campaigns/{id}/launch", tag = "reports", params(("id" = String, Path, description = "Campaign id"), Format), responses((status = 200, description = "Milestones (+1 s ... +24 h) and the first hour second by second (JSON; CSV: the curve)"), (status = 400, description = "A bad format"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn launch(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(format): QueryParams<Format>,
) -> Result<Response, ApiError> {
    campaign_access(&caller, &state, &id).await?;
    let format = out(&format)?;
    let report = launch_report(&state, &id).await?;
    answer(format, &*report, |r| crate::rows::csv(&r.curve))
}

/// The launch report, cached until the lake changes.
pub(crate) async fn launch_report(state: &State, id: &str) -> Result<Arc<LaunchReport>, ApiError> {
    let view = state.view.current().await?;
    view.cached(format!("launch|{id:?}"), || launch_of(state, &view, id))
        .await
}

async fn launch_of(state: &State, view: &View, id: &str) -> Result<LaunchReport, ApiError> {
    let stored: Vec<MilestoneRow> = view
        .typed(
            &format!(
                "SELECT after_seconds, users, CAST(start AS BIGINT) AS start_us \
                 FROM launch_milestones WHERE campaign_id = {} ORDER BY after_seconds",
                lit(id)
            ),
            &["launch_milestones"],
        )
        .await?;
    let curve: Vec<CurvePoint> = view.typed(&curve_sql(id), &["launch_curve"]).await?;
    // A milestone still open (its instant after `complete_up_to`) may grow.
    let fresh = view
        .freshness("launch_milestones", state.options.allowed_lateness)
        .await?;
    let start_ms = stored.first().map(|m| m.start_us.div_euclid(1000));
    let milestones: Vec<Milestone> = stored
        .iter()
        .map(|m| {
            let at = m.start_us.div_euclid(1000) + m.after_seconds * 1000;
            Milestone {
                after_seconds: m.after_seconds,
                users: m.users,
                provisional: fresh.complete_up_to.is_none_or(|c| at > c),
            }
        })
        .collect();
    // The first second of the curve that may still grow.
    let provisional_from_second = match (start_ms, fresh.complete_up_to) {
        (Some(s), Some(c)) => ((c - s).div_euclid(1000)).clamp(0, jobs::campaigns::CURVE_SECONDS),
        _ => 0,
    };
    // The +24 h forecast from the complete seconds of the curve (a curve point's users are
    // those by the end of its second); once +24 h is complete, the figure itself.
    let day = milestones
        .iter()
        .find(|m| m.after_seconds == 86_400 && !m.provisional)
        .map(|m| m.users.max(0) as u64);
    let points: Vec<(i64, u64)> = curve
        .iter()
        .map(|p| (p.second + 1, p.users.max(0) as u64))
        .collect();
    let forecast = match day {
        Some(users) => query::forecast::forecast(&[(86_400, users)], 86_400),
        None => query::forecast::forecast(
            &points,
            provisional_from_second.min(jobs::campaigns::CURVE_SECONDS),
        ),
    }
    .map(|f| Forecast {
        from_second: f.from_second,
        observed: f.observed,
        users_24h: f.users_24h.round(),
        low: f.low.round(),
        high: f.high.round(),
        interval: "80 %",
        stretch: f.stretch,
        method: f.method,
    });
    Ok(LaunchReport {
        campaign_id: id.to_string(),
        forecast,
        start: start_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339()),
        complete_up_to: fresh.instant(),
        allowed_lateness_seconds: state.options.allowed_lateness.as_secs(),
        provisional_from_second,
        milestones,
        curve,
    })
}
