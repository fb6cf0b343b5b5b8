//! The reports: platform activity and upload peaks (operators, analysts), an official
//! account's followers and campaigns (funnel, launch curve), an advertiser's ads. JSON by
//! default, CSV with `?format=csv`; a range preset (`?range=today|7d|30d`, ending on the
//! newest day with data) or `?from=&to=` (YYYY-MM-DD in the report time zone).

use axum::extract::{Path, State as AxState};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use lake::registry::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::auth::Caller;
use crate::error::{ApiError, QueryParams};
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

/// The newest day of `table` matching `filter` (a `WHERE` condition).
async fn latest(view: &View, table: &str, filter: &str) -> Result<Option<i32>, ApiError> {
    let rows = view
        .rows(
            &format!("SELECT CAST(max(day) AS VARCHAR) AS d FROM {table} WHERE {filter}"),
            &[table],
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r["d"].as_str())
        .and_then(|d| query::tz::parse_day(d).ok()))
}

/// One daily report over a metric table.
pub(crate) struct Daily<'a> {
    name: &'a str,
    table: &'a str,
    columns: &'a str,
    /// A `WHERE` condition: the tenant's rows, or all.
    filter: String,
    order: &'a str,
    /// Fields of the JSON report over the whole range (see [`Extra`]).
    totals: Vec<Extra<'a>>,
}

/// A field of a JSON report over the whole range: the query (without its day filter) that
/// fills it, one object, or an array of rows with `GROUP BY group`.
pub(crate) struct Extra<'a> {
    field: &'a str,
    sql: String,
    group: Option<&'a str>,
}

/// The rows of `SELECT columns FROM table WHERE filter AND <days> ORDER BY order`, with the
/// report's range, time zone and freshness; cached until the lake changes.
async fn daily(state: &State, report: Daily<'_>, params: Params) -> Result<Response, ApiError> {
    let body = daily_body(state, report, params).await?;
    Ok(([(CONTENT_TYPE, body.0.clone())], body.1.clone()).into_response())
}

/// A daily report as JSON (for the pages), from the same cache as the API's.
pub(crate) async fn daily_value(
    state: &State,
    report: Daily<'_>,
    mut params: Params,
) -> Result<Value, ApiError> {
    params.format = None;
    let body = daily_body(state, report, params).await?;
    serde_json::from_slice(&body.1).map_err(|e| ApiError::internal(e.to_string()))
}

async fn daily_body(
    state: &State,
    report: Daily<'_>,
    params: Params,
) -> Result<crate::view::Cached, ApiError> {
    let Daily {
        name,
        table,
        columns,
        filter,
        order,
        totals: extra,
    } = report;
    let filter = filter.as_str();
    let format = out(&params)?;
    // The queries themselves are in the key: one report's queries differ by tenant and by the
    // tenant's settings (an advertiser's currency).
    let extras: String = extra.iter().map(|e| e.sql.as_str()).collect();
    let key = format!(
        "{name}|{filter}|{columns}|{extras}|{:?}|{:?}|{:?}|{:?}",
        params.range, params.from, params.to, params.format
    );
    let view = state.view.current().await?;
    let body = view
        .cached(key, || async {
            let newest = latest(&view, table, filter).await?;
            let (from, to) = days(&params, newest)?;
            let sql = format!(
                "SELECT {columns} FROM {table} WHERE {filter}{} ORDER BY {order}",
                day_filter(from, to)
            );
            match format {
                Out::Csv => Ok((
                    "text/csv; charset=utf-8".into(),
                    csv(&view, &sql, table).await?,
                )),
                Out::Json => {
                    let mut rows = view.rows(&sql, &[table]).await?;
                    let fresh = view
                        .freshness(table, state.options.allowed_lateness)
                        .await?;
                    fresh.mark_rows(&mut rows);
                    let mut report = json!({
                        "report": name,
                        "tz": state.options.tz.name(),
                        "from": from.map(query::tz::format_day),
                        "to": to.map(query::tz::format_day),
                        "newest_day": newest.map(query::tz::format_day),
                        "complete_up_to": fresh.instant(),
                        "allowed_lateness_seconds": state.options.allowed_lateness.as_secs(),
                        "rows": rows,
                    });
                    for e in &extra {
                        let sql = format!("{}{}", e.sql, day_filter(from, to));
                        report[e.field] = match e.group {
                            Some(g) => {
                                let sql = format!("{sql} GROUP BY {g} ORDER BY {g}");
                                Value::Array(view.rows(&sql, &[table]).await?)
                            }
                            None => view
                                .rows(&sql, &[table])
                                .await?
                                .into_iter()
                                .next()
                                .unwrap_or(Value::Null),
                        };
                    }
                    Ok((
                        "application/json".into(),
                        serde_json::to_vec(&report).expect("json"),
                    ))
                }
            }
        })
        .await?;
    Ok(body)
}

/// The rows of `sql` over `table` as CSV (none when the table does not exist yet). Cells a
/// spreadsheet would evaluate (ad ids and segments come from events) are written as text.
pub(crate) async fn csv(
    view: &crate::view::View,
    sql: &str,
    table: &str,
) -> Result<Vec<u8>, ApiError> {
    if !view.ctx.table_exist(table).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let df = view
        .ctx
        .sql(sql)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .collect()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let batches = batches
        .iter()
        .map(query::output::spreadsheet_safe)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    query::output::encode(query::output::Format::Csv, schema, &batches)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A campaign report as CSV, cached until the lake changes.
async fn cached_csv(
    state: &State,
    key: String,
    sql: String,
    table: &'static str,
) -> Result<Response, ApiError> {
    let view = state.view.current().await?;
    let body = view
        .cached(key, || async {
            Ok((
                "text/csv; charset=utf-8".into(),
                csv(&view, &sql, table).await?,
            ))
        })
        .await?;
    Ok(([(CONTENT_TYPE, body.0.clone())], body.1.clone()).into_response())
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
        totals: Vec::new(),
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
        totals: Vec::new(),
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
        totals: Vec::new(),
    }
}

/// An advertiser's ads per day, with totals and each ad's over the range: unique reach exact
/// (the union of the daily reach bitmaps) with its HLL++ estimate beside it, frequency as
/// impressions per exactly reached user.
pub(crate) fn advertiser_report(id: &str, currency: &str) -> Daily<'static> {
    let filter = format!("advertiser_id = {}", lit(id));
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
        cur = lit(currency),
        est = lit(query::sketch::HLL_ESTIMATOR),
        rse = query::sketch::hll_relative_error(),
    );
    Daily {
        name: "advertiser",
        table: "advertisers_daily",
        columns: "CAST(day AS VARCHAR) AS day, ad_id, impressions, clicks, ctr, conversions, \
         conversion_rate, spend_cents, CAST(spend_cents AS DOUBLE) / 100 AS spend, \
         conversion_value_cents, CAST(conversion_value_cents AS DOUBLE) / 100 AS conversion_value, \
         reach, reach_approx, frequency",
        totals: vec![
            Extra {
                field: "totals",
                sql: format!("SELECT {figures} FROM advertisers_daily WHERE {filter}"),
                group: None,
            },
            Extra {
                field: "ads",
                sql: format!("SELECT ad_id, {figures} FROM advertisers_daily WHERE {filter}"),
                group: Some("ad_id"),
            },
        ],
        filter,
        order: "day, ad_id",
    }
}

#[utoipa::path(get, path = "/platform/activity", tag = "reports", params(Params), responses((status = 200, description = "DAU, WAU, MAU, DAU/MAU, new users per day, total and by platform group (JSON or CSV)"), (status = 400, description = "A bad range"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn activity(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator, Role::Analyst])?;
    daily(&state, activity_report(), params).await
}

#[utoipa::path(get, path = "/platform/uploads", tag = "reports", params(Params), responses((status = 200, description = "Photos per day with the peak second, minute and hour (JSON or CSV)"), (status = 400, description = "A bad range"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn uploads(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator, Role::Analyst])?;
    daily(&state, uploads_report(), params).await
}

#[utoipa::path(get, path = "/accounts/{id}/followers", tag = "reports", params(("id" = String, Path, description = "Official account id"), Params), responses((status = 200, description = "Follows, unfollows, net, followers, reach, engagement per day (JSON or CSV)"), (status = 400, description = "A bad range"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not the right role, or the account is not verified"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn followers(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    caller.tenant(Role::Official, &id)?;
    daily(&state, followers_report(&id), params).await
}

#[utoipa::path(get, path = "/advertisers/{id}/report", tag = "reports", params(("id" = String, Path, description = "Advertiser id"), Params), responses((status = 200, description = "Impressions, clicks, CTR, conversions, spend, value, reach, frequency per day and ad, with totals (JSON or CSV)"), (status = 400, description = "A bad range"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not the right role, or the account is not verified"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn advertiser(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Result<Response, ApiError> {
    caller.tenant(Role::Advertiser, &id)?;
    let currency = currency_of(&state, &id).await?;
    daily(&state, advertiser_report(&id, &currency), params).await
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
) -> Result<axum::Json<Value>, ApiError> {
    caller.tenant(Role::Official, &id)?;
    Ok(axum::Json(campaigns_value(&state, &id).await?))
}

pub(crate) async fn campaigns_value(state: &State, id: &str) -> Result<Value, ApiError> {
    let all = state.registry.call(|r| r.campaigns()).await?;
    let own: Vec<_> = all.into_iter().filter(|c| c.account_id == id).collect();
    Ok(json!({"account_id": id, "campaigns": own}))
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
    if let Out::Csv = out(&params)? {
        let view = state.view.current().await?;
        let newest = latest(&view, CAMPAIGN_DAYS, &format!("campaign_id = {}", lit(&id))).await?;
        let sql = match ranged(&params) {
            true => {
                let (from, to) = days(&params, newest)?;
                range_funnel_sql(&id, from, to)
            }
            false => funnel_sql(&id),
        };
        return cached_csv(
            &state,
            format!("funnel.csv|{id}|{params:?}"),
            sql,
            "funnels",
        )
        .await;
    }
    cached_json(&state, format!("funnel|{id}|{params:?}"), || {
        funnel_value(&state, &id, &params)
    })
    .await
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

/// A JSON report, cached until the lake changes (as the daily reports are).
async fn cached_json<F, Fut>(state: &State, key: String, make: F) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    let view = state.view.current().await?;
    let body = view
        .cached(key, || async {
            let v = make().await?;
            Ok((
                "application/json".into(),
                serde_json::to_vec(&v).expect("json"),
            ))
        })
        .await?;
    Ok(([(CONTENT_TYPE, body.0.clone())], body.1.clone()).into_response())
}

pub(crate) async fn funnel_value(
    state: &State,
    id: &str,
    params: &Params,
) -> Result<Value, ApiError> {
    let view = state.view.current().await?;
    let rows = view.rows(&funnel_sql(id), &["funnels"]).await?;
    let times = view
        .rows(
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
    let newest = latest(&view, CAMPAIGN_DAYS, &campaign).await?;
    let (from, to) = days(params, newest)?;
    // A preset over a campaign with no days yet covers nothing (not every day).
    let nothing = params.range.is_some() && newest.is_none();
    let range = if nothing {
        " AND FALSE".to_string()
    } else {
        day_filter(from, to)
    };
    let mut daily = view
        .rows(
            &format!(
                "SELECT CAST(day AS VARCHAR) AS day, reach, new_users FROM {CAMPAIGN_DAYS} \
                 WHERE {campaign}{range} ORDER BY day"
            ),
            &[CAMPAIGN_DAYS],
        )
        .await?;
    fresh.mark_rows(&mut daily);
    // Reach over the range: the days' users unioned (exact), and their HLL++ sketches merged.
    let reach = view
        .rows(
            &format!(
                "SELECT COALESCE(bitmap_count(bitmap_union(reach_bitmap)), 0) AS reach, \
                 COALESCE(round(hll_count(hll_merge(reach_hll))), 0) AS reach_approx \
                 FROM {CAMPAIGN_DAYS} WHERE {campaign}{range}"
            ),
            &[CAMPAIGN_DAYS],
        )
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| json!({"reach": 0, "reach_approx": 0.0}));
    let mut reach = reach;
    reach["estimator"] = json!(query::sketch::HLL_ESTIMATOR);
    reach["hll_relative_error"] = json!(query::sketch::hll_relative_error());
    let range_rows = if nothing {
        Value::Array(Vec::new())
    } else if ranged(params) {
        Value::Array(
            view.rows(&range_funnel_sql(id, from, to), &["funnels"])
                .await?,
        )
    } else {
        Value::Null
    };
    Ok(json!({
        "campaign_id": id,
        "complete_up_to": fresh.instant(),
        "allowed_lateness_seconds": state.options.allowed_lateness.as_secs(),
        "time_zone": state.options.tz.name(),
        "tz": state.options.tz.name(),
        "from": from.map(query::tz::format_day),
        "to": to.map(query::tz::format_day),
        "newest_day": newest.map(query::tz::format_day),
        "rows": rows,
        "range_rows": range_rows,
        "reach": reach,
        "daily": daily,
        "time_to_convert": times,
    }))
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
    if let Out::Csv = out(&format)? {
        return cached_csv(
            &state,
            format!("curve.csv|{id}"),
            curve_sql(&id),
            "launch_curve",
        )
        .await;
    }
    cached_json(&state, format!("launch|{id}"), || launch_value(&state, &id)).await
}

pub(crate) async fn launch_value(state: &State, id: &str) -> Result<Value, ApiError> {
    let view = state.view.current().await?;
    let mut milestones = view
        .rows(
            &format!(
                "SELECT after_seconds, users, CAST(start AS BIGINT) AS start_us \
                 FROM launch_milestones WHERE campaign_id = {} ORDER BY after_seconds",
                lit(id)
            ),
            &["launch_milestones"],
        )
        .await?;
    let curve = view.rows(&curve_sql(id), &["launch_curve"]).await?;
    // A milestone still open (its instant after `complete_up_to`) may grow.
    let fresh = view
        .freshness("launch_milestones", state.options.allowed_lateness)
        .await?;
    let mut start_ms = None;
    for m in &mut milestones {
        let start = m["start_us"].as_i64().map(|us| us.div_euclid(1000));
        start_ms = start_ms.or(start);
        let at = start
            .zip(m["after_seconds"].as_i64())
            .map(|(s, a)| s + a * 1000);
        if let Some(o) = m.as_object_mut() {
            o.remove("start_us");
            o.insert(
                "provisional".into(),
                Value::Bool(
                    fresh
                        .complete_up_to
                        .is_none_or(|c| at.is_none_or(|at| at > c)),
                ),
            );
        }
    }
    // The first second of the curve that may still grow.
    let provisional_from_second = match (start_ms, fresh.complete_up_to) {
        (Some(s), Some(c)) => ((c - s).div_euclid(1000)).clamp(0, jobs::campaigns::CURVE_SECONDS),
        _ => 0,
    };
    // The +24 h forecast from the complete seconds of the curve (a curve point's users are
    // those by the end of its second); once +24 h is complete, the figure itself.
    let day = milestones
        .iter()
        .find(|m| m["after_seconds"].as_i64() == Some(86_400))
        .filter(|m| m["provisional"] == Value::Bool(false))
        .and_then(|m| m["users"].as_u64());
    let points: Vec<(i64, u64)> = curve
        .iter()
        .filter_map(|p| Some((p["second"].as_i64()? + 1, p["users"].as_u64()?)))
        .collect();
    let forecast = match day {
        Some(users) => query::forecast::forecast(&[(86_400, users)], 86_400),
        None => query::forecast::forecast(
            &points,
            provisional_from_second.min(jobs::campaigns::CURVE_SECONDS),
        ),
    }
    .map(|f| {
        json!({
            "from_second": f.from_second,
            "observed": f.observed,
            "users_24h": f.users_24h.round(),
            "low": f.low.round(),
            "high": f.high.round(),
            "interval": "80 %",
            "stretch": f.stretch,
            "method": f.method,
        })
    });
    Ok(json!({
        "campaign_id": id,
        "forecast": forecast,
        "start": start_ms.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339()),
        "complete_up_to": fresh.instant(),
        "allowed_lateness_seconds": state.options.allowed_lateness.as_secs(),
        "provisional_from_second": provisional_from_second,
        "milestones": milestones,
        "curve": curve,
    }))
}
