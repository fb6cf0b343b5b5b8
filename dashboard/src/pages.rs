//! The web UI: pages rendered on the server from the same typed reports as the JSON API, by
//! maud templates (every value escaped unless a chart's SVG says otherwise), charts as inline
//! SVG (plotters), one stylesheet and one script served by this binary, nothing from another
//! site. Login is a form that exchanges the token for a server-side session whose secret an
//! HttpOnly, SameSite=Strict cookie holds (`Secure` and `__Host-` on https); a page without a
//! live session redirects to the login page.

use axum::Form;
use axum::extract::{FromRequestParts, Path, State as AxState};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use lake::registry::{Role, VerificationState};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::State;
use crate::auth::Caller;
use crate::charts::{Series, bars, lines};
use crate::error::{ApiError, QueryParams};
use crate::model::*;
use crate::reports::{self, Params};
use crate::revisions;

const CSS: &str = include_str!("../assets/app.css");
const LIVE_JS: &str = include_str!("../assets/live.js");

/// A page's error: the API's error, rendered as a page with its status.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<lake::Error> for PageError {
    fn from(e: lake::Error) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.status == StatusCode::UNAUTHORIZED {
            return Redirect::to("/login").into_response();
        }
        // A server error's detail goes to the log only, under the request's id.
        let message = if e.status.is_server_error() {
            let id = crate::error::log_server_error(e.status, &e.message);
            format!("Something went wrong on the server (request id {id}).")
        } else {
            e.message
        };
        let body = html! {
            h1 { (e.status.as_u16()) }
            p.error { (message) }
            p { a href="/" { "Back" } }
        };
        (e.status, document("Error", None, body)).into_response()
    }
}

/// The caller of a page: its cookie's token; none sends the browser to the login page.
pub struct Viewer(pub Caller);

impl FromRequestParts<State> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, PageError> {
        Ok(Viewer(Caller::from_request_parts(parts, state).await?))
    }
}

pub(crate) type Page = Result<Response, PageError>;

/// Security headers for every page.
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Not no-referrer: under it a browser sends `Origin: null` with our own forms, and the
    // cross-site check needs their origin.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn nav(c: &Caller) -> Markup {
    let mut links: Vec<(String, &str)> = Vec::new();
    match c.role() {
        Role::Operator => {
            links.push(("/platform".into(), "Platform"));
            links.push(("/live".into(), "Live"));
            links.push(("/admin/accounts".into(), "Accounts"));
            links.push(("/admin/pipeline".into(), "Pipeline"));
        }
        Role::Analyst => links.push(("/platform".into(), "Platform")),
        Role::Official => {
            links.push((format!("/accounts/{}", c.account.id), "My account"));
            links.push(("/shares".into(), "Share links"));
        }
        Role::Advertiser => {
            links.push((format!("/advertisers/{}", c.account.id), "My ads"));
            links.push(("/shares".into(), "Share links"));
        }
        Role::Scraper => links.push(("/metrics".into(), "Metrics")),
    }
    html! {
        nav {
            @for (href, text) in &links { a href=(href) { (text) } }
            span.who { (c.account.id) " · " (c.role()) }
            form method="post" action="/logout" { button { "Log out" } }
        }
    }
}

fn document(title: &str, caller: Option<&Caller>, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · spacepulse" }
                    link rel="stylesheet" href="/assets/app.css";
                }
                body {
                    header {
                        a.brand href="/" { "spacepulse" }
                        @if let Some(c) = caller { (nav(c)) }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page for a visitor without a login (a shared report): no navigation.
pub(crate) fn standalone(title: &str, body: Markup) -> Response {
    secure(document(title, None, body).into_response())
}

pub(crate) fn page(title: &str, caller: &Caller, body: Markup) -> Page {
    Ok(secure(document(title, Some(caller), body).into_response()))
}

/// A cell as a table shows it: integers as they are, ratios with four decimals, larger
/// fractions with one, text as it is, nothing as "–".
pub(crate) trait Shown {
    fn shown(&self) -> String;
}

impl Shown for i64 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for f64 {
    fn shown(&self) -> String {
        if self.abs() < 10.0 {
            format!("{self:.4}")
        } else {
            format!("{self:.1}")
        }
    }
}

impl Shown for String {
    fn shown(&self) -> String {
        self.clone()
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref().map_or_else(|| "–".into(), T::shown)
    }
}

/// Whether a row may still change (shown in italics).
pub(crate) trait Provisional {
    fn provisional(&self) -> bool {
        false
    }
}

macro_rules! provisional_rows {
    ($($t:ty),*) => {$(
        impl Provisional for $t {
            fn provisional(&self) -> bool {
                self.provisional
            }
        }
    )*};
}
provisional_rows!(
    ActivityRow,
    UploadsRow,
    FollowersRow,
    AdDayRow,
    CampaignDay,
    Milestone
);
impl Provisional for FunnelRow {}
impl Provisional for RangeFunnelRow {}
impl Provisional for AdOverRange {}

/// A table's column: its key (`data-col`), heading and text.
pub(crate) struct Col<'a, R> {
    key: &'static str,
    head: &'static str,
    text: Box<dyn Fn(&R) -> String + 'a>,
}

/// A column showing `f`'s value (see [`Shown`]).
fn col<'a, R, T: Shown>(
    key: &'static str,
    head: &'static str,
    f: impl Fn(&R) -> T + 'a,
) -> Col<'a, R> {
    Col {
        key,
        head,
        text: Box::new(move |r| f(r).shown()),
    }
}

/// A column with its own text.
fn text_col<'a, R>(
    key: &'static str,
    head: &'static str,
    f: impl Fn(&R) -> String + 'a,
) -> Col<'a, R> {
    Col {
        key,
        head,
        text: Box::new(f),
    }
}

/// A table of `rows` with the given columns.
fn table<R: Provisional>(id: &str, rows: &[R], columns: &[Col<'_, R>]) -> Markup {
    if rows.is_empty() {
        return html! { p.empty { "No data in this range yet." } };
    }
    let any_provisional = rows.iter().any(Provisional::provisional);
    html! {
        div.scroll {
            table id=(id) {
                thead { tr { @for c in columns { th { (c.head) } } } }
                tbody {
                    @for r in rows {
                        // A row past the report's `complete_up_to` may still change.
                        @if r.provisional() {
                            tr.provisional title="provisional: may still change" {
                                @for c in columns { td data-col=(c.key) { ((c.text)(r)) } }
                            }
                        } @else {
                            tr { @for c in columns { td data-col=(c.key) { ((c.text)(r)) } } }
                        }
                    }
                }
            }
        }
        @if any_provisional {
            p.meta {
                span.provisional { "Rows in italics" }
                " are provisional: they end after the report is complete and may still change."
            }
        }
    }
}

/// What each column of a table counts, one line each.
fn what_counts(id: &str, items: &[(&str, &str)]) -> Markup {
    html! {
        dl.counts id=(format!("{id}-counts")) {
            @for (term, what) in items { dt { (term) } dd { (what) } }
        }
    }
}

/// `x` with `decimals` places and a comma between thousands: 1,234,567.89.
pub(crate) fn grouped(x: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, x.abs());
    let (whole, frac) = s.split_once('.').map_or((s.as_str(), ""), |(w, f)| (w, f));
    let mut digits = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            digits.push(',');
        }
        digits.push(ch);
    }
    let sign = if x < 0.0 && !s.trim_matches(['0', '.']).is_empty() {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{digits}")
    } else {
        format!("{sign}{digits}.{frac}")
    }
}

/// Money in currency units with its currency: `USD 1,234.50`.
fn money(x: Option<f64>, currency: &str) -> String {
    x.map_or_else(|| "–".into(), |x| format!("{currency} {}", grouped(x, 2)))
}

/// A rate as a percentage: `1.23 %`.
fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |x| format!("{:.2} %", x * 100.0))
}

/// A count with thousands separators.
fn count(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |x| grouped(x, 0))
}

/// Two decimals.
fn two(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |x| format!("{x:.2}"))
}

/// What a report's header says: its range, time zone and freshness.
pub(crate) struct RangeOf<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub tz: &'a str,
    pub complete_up_to: Option<&'a str>,
}

impl<'a, R> From<&'a DailyReport<R>> for RangeOf<'a> {
    fn from(r: &'a DailyReport<R>) -> Self {
        Self {
            from: r.from.as_deref(),
            to: r.to.as_deref(),
            tz: &r.tz,
            complete_up_to: r.complete_up_to.as_deref(),
        }
    }
}

impl<'a> From<&'a FunnelReport> for RangeOf<'a> {
    fn from(r: &'a FunnelReport) -> Self {
        Self {
            from: r.from.as_deref(),
            to: r.to.as_deref(),
            tz: &r.tz,
            complete_up_to: r.complete_up_to.as_deref(),
        }
    }
}

/// Over a report: the range picker and CSV link of its page and API paths, or the fixed range
/// of a shared one.
fn report_bar(
    shared: bool,
    range: RangeOf<'_>,
    params: &Params,
    (page, api): (&str, &str),
) -> Markup {
    if shared {
        shared_bar(&range)
    } else {
        range_bar(page, &range, params, &csv_link(api, params))
    }
}

/// A shared report's fixed range, time zone and freshness (no picker: the link fixes them).
fn shared_bar(range: &RangeOf<'_>) -> Markup {
    html! {
        p.meta id="shared-range" {
            "Days " b { (range.from.unwrap_or("…")) } " to " b { (range.to.unwrap_or("…")) }
            " in " b { (range.tz) } " · complete up to "
            b id="complete-up-to" { (range.complete_up_to.unwrap_or("no data yet")) }
        }
    }
}

/// The range picker, the time zone and the freshness line over a report.
fn range_bar(path: &str, range: &RangeOf<'_>, params: &Params, csv: &str) -> Markup {
    let current = params.range.as_deref().unwrap_or(if params.from.is_some() {
        "custom"
    } else {
        "all"
    });
    html! {
        div.range {
            @for (v, t) in [("today", "Today"), ("7d", "7 days"), ("30d", "30 days")] {
                a.on[v == current] href=(format!("{path}?range={v}")) { (t) }
            }
            form method="get" action=(path) {
                input type="date" name="from" value=(range.from.unwrap_or("")) aria-label="from";
                input type="date" name="to" value=(range.to.unwrap_or("")) aria-label="to";
                button { "Custom" }
            }
        }
        p.meta {
            "Days in " b { (range.tz) } " · complete up to "
            b id="complete-up-to" { (range.complete_up_to.unwrap_or("no data yet")) }
            " · " a href=(csv) { "CSV" }
        }
    }
}

/// The API path of a report's CSV over the page's range.
fn csv_link(api: &str, params: &Params) -> String {
    let mut q = vec!["format=csv".to_string()];
    for (k, v) in [
        ("range", &params.range),
        ("from", &params.from),
        ("to", &params.to),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", url_escape(v)));
        }
    }
    format!("{api}?{}", q.join("&"))
}

/// A path segment or query value, percent-encoded (all but RFC 3986 unreserved bytes).
fn url_escape(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /login`
pub async fn login_form() -> Response {
    secure(document("Log in", None, login_body(None)).into_response())
}

fn login_body(error: Option<&str>) -> Markup {
    html! {
        h1 { "Log in" }
        @if let Some(e) = error { p.error { (e) } }
        form.login method="post" action="/login" {
            label for="token" { "Token" }
            input id="token" name="token" type="password" autocomplete="off" required
                placeholder="spt_…";
            button id="login" { "Log in" }
        }
        p.meta {
            "Paste the token an operator issued you (" code { "spacepulse tokens issue" }
            "). It starts a session kept in an HttpOnly cookie for this site only."
        }
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: checks the token and starts a session, whose secret (not the token) the
/// cookie holds.
pub async fn login(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    let (token, max) = (
        token.to_string(),
        state.options.session_max.as_millis() as i64,
    );
    let started = state
        .registry
        .call(move |r| {
            r.authenticate(&token).and_then(|found| match found {
                Some((t, _)) => r.start_session(&t.id, max).map(Some),
                None => Ok(None),
            })
        })
        .await;
    match started {
        Ok(Some(secret)) => {
            let mut r = Redirect::to("/").into_response();
            let https = crate::auth::is_https(&state.options, &headers);
            for c in crate::auth::login_cookies(https, &secret, state.options.session_max) {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    r.headers_mut().append(SET_COOKIE, v);
                }
            }
            secure(r)
        }
        Ok(None) => secure(
            (
                StatusCode::UNAUTHORIZED,
                document(
                    "Log in",
                    None,
                    login_body(Some("Unknown or revoked token.")),
                ),
            )
                .into_response(),
        ),
        Err(e) => PageError(e).into_response(),
    }
}

/// `POST /logout`: ends the session (a copy of the cookie is then worth nothing) and clears
/// the cookie.
pub async fn logout(AxState(state): AxState<State>, headers: HeaderMap) -> Response {
    if let Some(secret) = crate::auth::session_secret(&headers)
        && let Err(e) = state.registry.call(move |r| r.end_session(&secret)).await
    {
        return PageError(e).into_response();
    }
    let mut r = Redirect::to("/login").into_response();
    for c in crate::auth::logout_cookies() {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(SET_COOKIE, v);
        }
    }
    secure(r)
}

/// `GET /`: each role's home page.
pub async fn home(Viewer(c): Viewer) -> Response {
    let to = match c.role() {
        Role::Operator | Role::Analyst => "/platform".to_string(),
        Role::Official => format!("/accounts/{}", c.account.id),
        Role::Advertiser => format!("/advertisers/{}", c.account.id),
        Role::Scraper => "/metrics".to_string(),
    };
    Redirect::to(&to).into_response()
}

pub async fn assets(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "live.js" => (LIVE_JS, "text/javascript; charset=utf-8"),
        _ => return ApiError::not_found(format!("no asset {file:?}")).into_response(),
    };
    (
        [
            (CONTENT_TYPE, kind),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `GET /platform`: DAU/WAU/MAU, new users, upload peaks (operators, analysts).
pub async fn platform(
    Viewer(c): Viewer,
    AxState(state): AxState<State>,
    QueryParams(params): QueryParams<Params>,
) -> Page {
    c.require(&[Role::Operator, Role::Analyst])?;
    let activity: std::sync::Arc<DailyReport<ActivityRow>> =
        reports::daily_report(&state, reports::activity_report(), &params).await?;
    let uploads: std::sync::Arc<DailyReport<UploadsRow>> =
        reports::daily_report(&state, reports::uploads_report(), &params).await?;
    let total: Vec<&ActivityRow> = activity
        .rows
        .iter()
        .filter(|r| r.breakdown == "total")
        .collect();
    let labels: Vec<String> = total.iter().map(|r| r.day.clone()).collect();
    let pick = |f: fn(&ActivityRow) -> i64| total.iter().map(|r| f(r) as f64).collect();
    let chart = lines(
        &labels,
        &[
            Series {
                name: "DAU",
                values: pick(|r| r.dau),
            },
            Series {
                name: "WAU",
                values: pick(|r| r.wau),
            },
            Series {
                name: "MAU",
                values: pick(|r| r.mau),
            },
        ],
    );
    let up = &uploads.rows;
    let up_chart = lines(
        &up.iter().map(|r| r.day.clone()).collect::<Vec<_>>(),
        &[Series {
            name: "photos",
            values: up.iter().map(|r| r.photos as f64).collect(),
        }],
    );
    let error = query::sketch::hll_relative_error() * 100.0;
    let hll = format!("DAU from HyperLogLog++ sketches, ±{error:.2} % (one standard error)");
    let body = html! {
        h1 { "Platform activity" }
        (range_bar(
            "/platform",
            &RangeOf::from(&*activity),
            &params,
            &csv_link("/api/v1/platform/activity", &params),
        ))
        section {
            h2 { "Active users" }
            div.chart id="activity-chart" { (chart) }
            (table("activity", &activity.rows, &[
                col("day", "Day", |r: &ActivityRow| r.day.clone()),
                col("segment", "Segment", |r: &ActivityRow| r.segment.clone()),
                col("dau", "DAU", |r: &ActivityRow| r.dau),
                col("wau", "WAU", |r: &ActivityRow| r.wau),
                col("mau", "MAU", |r: &ActivityRow| r.mau),
                col("dau_mau", "DAU/MAU", |r: &ActivityRow| r.dau_mau),
                col("new_users", "New users", |r: &ActivityRow| r.new_users),
                col("dau_approx", "DAU (HLL)", |r: &ActivityRow| r.dau_approx),
            ]))
            (what_counts("activity", &[
                ("DAU", "distinct users with any event that day, exact"),
                ("WAU", "distinct users with any event in the 7 days ending that day, exact"),
                ("MAU", "distinct users with any event in the 30 days ending that day, exact"),
                ("DAU/MAU", "DAU ÷ MAU: how many of the month's users came that day"),
                ("New users", "users active that day and on no earlier day in the lake (in the segment)"),
                ("DAU (HLL)", &hll),
                ("Segment", "all users, or a platform group (mobile, pc, web, other)"),
            ]))
            p.meta {
                "Exact counts from bitmaps; the " code { "_approx" } " columns are "
                (query::sketch::HLL_ESTIMATOR) ", ±" (format!("{error:.2}")) "% standard error."
            }
        }
        section {
            h2 { "Photo uploads and peaks" }
            div.chart { (up_chart) }
            (table("uploads", up, &[
                col("day", "Day", |r: &UploadsRow| r.day.clone()),
                col("uploads", "Uploads", |r: &UploadsRow| r.uploads),
                col("photos", "Photos", |r: &UploadsRow| r.photos),
                col("peak_second", "Peak second", |r: &UploadsRow| r.peak_second.clone()),
                col("peak_second_photos", "Photos", |r: &UploadsRow| r.peak_second_photos),
                col("peak_minute", "Peak minute", |r: &UploadsRow| r.peak_minute.clone()),
                col("peak_minute_photos", "Photos", |r: &UploadsRow| r.peak_minute_photos),
                col("peak_hour", "Peak hour", |r: &UploadsRow| r.peak_hour.clone()),
                col("peak_hour_photos", "Photos", |r: &UploadsRow| r.peak_hour_photos),
            ]))
            (what_counts("uploads", &[
                ("Uploads", "photo_upload events, each event id once"),
                ("Photos", "the photos those uploads carried"),
                ("Peak second, minute, hour", "the day's busiest second, minute and hour by photos, and their photos"),
            ]))
        }
        (revisions::section(&state, &revisions::Scope::Platform).await?)
    };
    page("Platform", &c, body)
}

/// `GET /accounts/{id}`: an official account's followers and its campaigns.
pub async fn account(
    Viewer(c): Viewer,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Page {
    c.tenant(Role::Official, &id)?;
    let scope = revisions::account_scope(&state, &id).await?;
    let body = html! {
        (account_body(&state, &id, params, false).await?)
        (revisions::section(&state, &scope).await?)
    };
    page(&id, &c, body)
}

/// An official account's followers (and, unless `shared`, its campaigns and the range bar).
pub(crate) async fn account_body(
    state: &State,
    id: &str,
    params: Params,
    shared: bool,
) -> Result<Markup, PageError> {
    let report: std::sync::Arc<DailyReport<FollowersRow>> =
        reports::daily_report(state, reports::followers_report(id), &params).await?;
    let r = &report.rows;
    let chart = lines(
        &r.iter().map(|x| x.day.clone()).collect::<Vec<_>>(),
        &[Series {
            name: "followers",
            values: r.iter().map(|x| x.followers as f64).collect(),
        }],
    );
    let campaigns = if shared {
        None
    } else {
        Some(reports::campaign_list(state, id).await?)
    };
    // What the followers figure stands on, as of the range's last day.
    let stands = match r.last() {
        Some(FollowersRow {
            baseline_followers: Some(b),
            baseline_as_of,
            ..
        }) => format!(
            "Followers are the baseline of {b} at {} (imported from the platform's records) \
             plus the net follows since.",
            baseline_as_of.as_deref().unwrap_or("")
        ),
        Some(_) => "Followers are the net follows since the lake's first day: no follower \
             baseline was imported for this account (spacepulse accounts import-followers)."
            .to_string(),
        None => String::new(),
    };
    Ok(html! {
        h1 { (id) }
        (report_bar(
            shared,
            RangeOf::from(&*report),
            &params,
            (&format!("/accounts/{}", url_escape(id)), &format!("/api/v1/accounts/{}/followers", url_escape(id))),
        ))
        section {
            h2 { "Followers" }
            p id="baseline" { (stands) }
            div.chart { (chart) }
            (table("followers", r, &[
                col("day", "Day", |x: &FollowersRow| x.day.clone()),
                col("follows", "Follows", |x: &FollowersRow| x.follows),
                col("unfollows", "Unfollows", |x: &FollowersRow| x.unfollows),
                col("net", "Net", |x: &FollowersRow| x.net),
                col("followers", "Followers", |x: &FollowersRow| x.followers),
                col("baseline_followers", "Baseline", |x: &FollowersRow| x.baseline_followers),
                col("reach", "Reach", |x: &FollowersRow| x.reach),
                col("likes", "Likes", |x: &FollowersRow| x.likes),
                col("comments", "Comments", |x: &FollowersRow| x.comments),
                col("engagement", "Engagement", |x: &FollowersRow| x.engagement),
            ]))
            (what_counts("followers", &[
                ("Follows, unfollows", "follow and unfollow events of the day, each event id once"),
                ("Net", "follows − unfollows"),
                ("Followers", "at the day's end: the baseline it stands on plus the net follows since"),
                ("Baseline", "the imported follower figure the day stands on (none: since the lake's first day)"),
                ("Reach", "distinct users who viewed a page of the account or of its campaigns that day, exact"),
                ("Engagement", "likes + comments carrying the account, each event id once"),
            ]))
        }
        @if let Some(list) = campaigns {
            section {
                h2 { "Campaigns" }
                ul id="campaigns" {
                    @for x in &list.campaigns {
                        li {
                            a href=(format!("/campaigns/{}", url_escape(&x.id))) { (x.id) }
                            " · steps " (x.steps.join(" → "))
                        }
                    }
                }
            }
        }
    })
}

/// A duration in the largest whole unit: 10 s, 1 min, 6 h, 7 d.
fn span(seconds: i64) -> String {
    match seconds {
        s if s > 0 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The time-to-convert histograms, one per step after the first.
fn time_to_convert(times: &[TimeBucket]) -> Markup {
    let mut steps: Vec<(i64, &str)> = times
        .iter()
        .map(|t| (t.step, t.step_type.as_str()))
        .collect();
    steps.dedup();
    if steps.is_empty() {
        return html! {};
    }
    html! {
        h3 { "Time to convert" }
        @for (step, ty) in &steps {
            @let buckets: Vec<&TimeBucket> = times.iter().filter(|t| t.step == *step).collect();
            @let labels: Vec<String> = buckets.iter().map(|b| match b.to_seconds {
                Some(to) => format!("{}–{}", span(b.from_seconds), span(to)),
                None => format!("≥ {}", span(b.from_seconds)),
            }).collect();
            figure {
                figcaption { "Step " (step) " (" (ty) "): users by the time from the step before" }
                div.chart id=(format!("time-to-convert-{step}")) {
                    (bars(&labels, &buckets.iter().map(|b| b.users as f64).collect::<Vec<_>>()))
                }
            }
        }
    }
}

/// A milestone's name: +1 s, +1 min, +24 h.
pub fn after(seconds: i64) -> String {
    match seconds {
        0 => "0 s".into(),
        s if s % 3600 == 0 => format!("+{} h", s / 3600),
        s if s % 60 == 0 => format!("+{} min", s / 60),
        s => format!("+{s} s"),
    }
}

/// `GET /campaigns/{id}`: the funnel and the launch curve with its milestones.
pub async fn campaign(
    Viewer(c): Viewer,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Page {
    reports::campaign_access(&c, &state, &id).await?;
    let body = html! {
        (campaign_body(&state, &id, params, false).await?)
        (revisions::section(&state, &revisions::Scope::Campaign { id: id.clone() }).await?)
    };
    page(&format!("Campaign {id}"), &c, body)
}

/// A step of a funnel as the page's table shows it.
struct Step<'a> {
    step: i64,
    step_type: &'a str,
    users: i64,
    conversion_from_previous: Option<f64>,
    conversion_overall: Option<f64>,
    drop_off: Option<i64>,
    dropped_window_closed: Option<i64>,
    dropped_never_came_back: Option<i64>,
    median_seconds_from_previous: Option<f64>,
    p90_seconds_from_previous: Option<f64>,
}

impl Provisional for Step<'_> {}

impl<'a> From<&'a FunnelRow> for Step<'a> {
    fn from(r: &'a FunnelRow) -> Self {
        Self {
            step: r.step,
            step_type: &r.step_type,
            users: r.users,
            conversion_from_previous: r.conversion_from_previous,
            conversion_overall: r.conversion_overall,
            drop_off: r.drop_off,
            dropped_window_closed: r.dropped_window_closed,
            dropped_never_came_back: r.dropped_never_came_back,
            median_seconds_from_previous: r.median_seconds_from_previous,
            p90_seconds_from_previous: r.p90_seconds_from_previous,
        }
    }
}

impl<'a> From<&'a RangeFunnelRow> for Step<'a> {
    fn from(r: &'a RangeFunnelRow) -> Self {
        Self {
            step: r.step,
            step_type: &r.step_type,
            users: r.users,
            conversion_from_previous: r.conversion_from_previous,
            conversion_overall: r.conversion_overall,
            drop_off: r.drop_off,
            dropped_window_closed: r.dropped_window_closed,
            dropped_never_came_back: r.dropped_never_came_back,
            median_seconds_from_previous: None,
            p90_seconds_from_previous: None,
        }
    }
}

/// A campaign's launch and funnel (with CSV links unless `shared`).
pub(crate) async fn campaign_body(
    state: &State,
    id: &str,
    params: Params,
    shared: bool,
) -> Result<Markup, PageError> {
    let funnel = reports::funnel_report(state, id, &params).await?;
    let launch = reports::launch_report(state, id).await?;
    // With a range, the funnel of the users who came in it; else the whole campaign's.
    let steps: Vec<Step<'_>> = match &funnel.range_rows {
        Some(rows) => rows.iter().map(Step::from).collect(),
        None => funnel
            .rows
            .iter()
            .filter(|r| r.breakdown == "total")
            .map(Step::from)
            .collect(),
    };
    let in_range = funnel.range_rows.is_some();
    let daily = &funnel.daily;
    let reach_chart = lines(
        &daily.iter().map(|r| r.day.clone()).collect::<Vec<_>>(),
        &[Series {
            name: "reach",
            values: daily.iter().map(|r| r.reach as f64).collect(),
        }],
    );
    let funnel_chart = bars(
        &steps
            .iter()
            .map(|r| r.step_type.to_string())
            .collect::<Vec<_>>(),
        &steps.iter().map(|r| r.users as f64).collect::<Vec<_>>(),
    );
    // One unit on the axis: minutes and seconds after the launch.
    let curve = &launch.curve;
    let launch_chart = lines(
        &curve
            .iter()
            .map(|p| format!("+{}:{:02}", p.second / 60, p.second % 60))
            .collect::<Vec<_>>(),
        &[Series {
            name: "users",
            values: curve.iter().map(|p| p.users as f64).collect(),
        }],
    );
    // With a range, the day segments of its days only.
    let (first, last) = (funnel.from.as_deref(), funnel.to.as_deref());
    let by_segment: Vec<&FunnelRow> = funnel
        .rows
        .iter()
        .filter(|r| r.breakdown != "total")
        .filter(|r| {
            r.breakdown != "day"
                || !in_range
                || (first.is_none_or(|f| r.segment.as_str() >= f)
                    && last.is_none_or(|l| r.segment.as_str() <= l))
        })
        .collect();
    let segment_charts = segment_charts(state, &by_segment, steps.iter().map(|s| s.step).max());
    let funnel_of = if in_range {
        format!(
            "The users whose first event in the campaign fell from {} to {} (by platform, \
             region and hour below: the whole campaign)",
            first.unwrap_or("the first day"),
            last.unwrap_or("the newest day")
        )
    } else {
        "Every user of the campaign".to_string()
    };
    let api = format!("/api/v1/campaigns/{}", url_escape(id));
    let reach = &funnel.reach;
    Ok(html! {
        h1 { "Campaign " (id) }
        (report_bar(
            shared,
            RangeOf::from(&*funnel),
            &params,
            (&format!("/campaigns/{}", url_escape(id)), &format!("{api}/funnel")),
        ))
        section {
            h2 { "Reach" }
            div.cards id="campaign-reach" {
                div.card {
                    span { "Reach (exact)" }
                    b data-total="reach" { (grouped(reach.reach as f64, 0)) }
                    small { "distinct users with an event of the campaign's steps in the range: the days' users unioned" }
                }
                div.card {
                    span { "Reach (HLL++)" }
                    b data-total="reach_approx" { (grouped(reach.reach_approx, 0)) }
                    small {
                        "the same from HyperLogLog++ sketches, ±"
                        (format!("{:.2}", reach.hll_relative_error * 100.0)) " % (one standard error)"
                    }
                }
            }
            div.chart id="reach-chart" { (reach_chart) }
            (table("campaign-daily", daily, &[
                col("day", "Day", |r: &CampaignDay| r.day.clone()),
                col("reach", "Reach", |r: &CampaignDay| r.reach),
                col("new_users", "New users", |r: &CampaignDay| r.new_users),
            ]))
        }
        section {
            h2 { "Launch milestones" }
            (table("milestones", &launch.milestones, &[
                text_col("after", "After launch", |m: &Milestone| after(m.after_seconds)),
                col("users", "Users", |m: &Milestone| m.users),
            ]))
            @if let Some(f) = launch.forecast.as_ref().filter(|f| f.method != "observed") {
                p.meta id="forecast" {
                    "Forecast at +24 h from the first "
                    (format!("{}:{:02}", f.from_second / 60, f.from_second % 60)) ": "
                    b { (grouped(f.users_24h, 0)) } " users (80 % interval "
                    (grouped(f.low, 0)) " to " (grouped(f.high, 0)) "); " (f.method) "."
                }
            }
            div.chart id="launch-chart" { (launch_chart) }
            p.meta {
                "Users who reserved, counted once each, by minutes and seconds after the launch \
                 (the first hour, second by second)"
                @if !shared { " · " a id="curve-csv" href=(format!("{api}/launch?format=csv")) { "CSV" } }
            }
        }
        section {
            h2 { "Funnel" }
            p.meta id="funnel-of" { (funnel_of) }
            div.chart id="funnel-chart" { (funnel_chart) }
            (table("funnel", &steps, &[
                col("step", "Step", |r: &Step<'_>| r.step),
                col("step_type", "Event", |r: &Step<'_>| r.step_type.to_string()),
                col("users", "Users", |r: &Step<'_>| r.users),
                col("conversion_from_previous", "From previous", |r: &Step<'_>| r.conversion_from_previous),
                col("conversion_overall", "Overall", |r: &Step<'_>| r.conversion_overall),
                col("drop_off", "Drop-off", |r: &Step<'_>| r.drop_off),
                col("dropped_window_closed", "Window closed", |r: &Step<'_>| r.dropped_window_closed),
                col("dropped_never_came_back", "Never came back", |r: &Step<'_>| r.dropped_never_came_back),
                col("median_seconds_from_previous", "Median s", |r: &Step<'_>| r.median_seconds_from_previous),
                col("p90_seconds_from_previous", "p90 s", |r: &Step<'_>| r.p90_seconds_from_previous),
            ]))
            (what_counts("funnel", &[
                ("Users", "distinct users who reached at least this step within the window"),
                ("From previous", "users at this step ÷ users at the step before"),
                ("Overall", "users at this step ÷ users at the first step"),
                ("Drop-off", "users lost since the previous step"),
                ("Window closed", "of those, users who did this step's event after the previous one, but past the window"),
                ("Never came back", "of those, users who never did this step's event after the previous one"),
                ("Median s, p90 s", "seconds between the previous step and this one in each user's counted chain"),
            ]))
            p.meta {
                "Each user's furthest step within the campaign's window"
                @if !shared { " · " a id="funnel-csv" href=(format!("{api}/funnel?format=csv")) { "CSV" } }
            }
            (segment_charts)
            (time_to_convert(&funnel.time_to_convert))
            details {
                summary { "By platform, region, hour and day of the first view" }
                (table("funnel-segments", &by_segment, &[
                    col("breakdown", "By", |r: &&FunnelRow| r.breakdown.clone()),
                    col("segment", "Segment", |r: &&FunnelRow| r.segment.clone()),
                    col("step", "Step", |r: &&FunnelRow| r.step),
                    col("step_type", "Event", |r: &&FunnelRow| r.step_type.clone()),
                    col("users", "Users", |r: &&FunnelRow| r.users),
                    col("conversion_overall", "Overall", |r: &&FunnelRow| r.conversion_overall),
                    col("drop_off", "Drop-off", |r: &&FunnelRow| r.drop_off),
                    col("dropped_window_closed", "Window closed", |r: &&FunnelRow| r.dropped_window_closed),
                    col("dropped_never_came_back", "Never came back", |r: &&FunnelRow| r.dropped_never_came_back),
                ]))
            }
        }
    })
}

impl<T: Provisional> Provisional for &T {
    fn provisional(&self) -> bool {
        (*self).provisional()
    }
}

/// Per platform, region and hour of the first view, each segment's conversion from the first
/// step to `last_step` (of platforms and regions, the twelve largest segments).
fn segment_charts(state: &State, by_segment: &[&FunnelRow], last_step: Option<i64>) -> Markup {
    let mut charts = Vec::new();
    for b in ["platform", "region", "hour"] {
        let mut segs: Vec<(String, f64, f64)> = by_segment
            .iter()
            .filter(|r| r.breakdown == b && r.step == 1)
            .map(|r| {
                let reached = by_segment
                    .iter()
                    .find(|x| {
                        x.breakdown == b && x.segment == r.segment && Some(x.step) == last_step
                    })
                    .map_or(0.0, |x| x.conversion_overall.unwrap_or(0.0) * 100.0);
                (r.segment.clone(), r.users as f64, reached)
            })
            .collect();
        // Hours in order, all of them; other segments by size, the twelve largest.
        if b == "hour" {
            segs.sort_by(|a, b| a.0.cmp(&b.0));
        } else {
            segs.sort_by(|a, b| b.1.total_cmp(&a.1));
            segs.truncate(12);
        }
        if !segs.is_empty() {
            let by = match b {
                "hour" => format!("hour of the first view ({})", state.options.tz.name()),
                other => other.to_string(),
            };
            charts.push((b, by, segs));
        }
    }
    html! {
        @for (b, by, segs) in &charts {
            figure {
                figcaption { "By " (by) ": % of the first step's users who reached the last" }
                div.chart id=(format!("funnel-{b}-chart")) {
                    (bars(
                        &segs.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
                        &segs.iter().map(|x| x.2).collect::<Vec<_>>(),
                    ))
                }
            }
        }
    }
}

/// `GET /advertisers/{id}`: impressions, clicks, spend per day and ad, with totals.
pub async fn advertiser(
    Viewer(c): Viewer,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Page {
    c.tenant(Role::Advertiser, &id)?;
    let scope = revisions::advertiser_scope(&state, &id).await?;
    let body = html! {
        (advertiser_body(&state, &id, params, false).await?)
        (revisions::section(&state, &scope).await?)
    };
    page(&format!("Advertiser {id}"), &c, body)
}

/// An advertiser's totals, ads over the range and days (with the range bar unless `shared`).
pub(crate) async fn advertiser_body(
    state: &State,
    id: &str,
    params: Params,
    shared: bool,
) -> Result<Markup, PageError> {
    let report = reports::advertiser_report(state, id, &params).await?;
    let r = &report.daily.rows;
    // Per day across ads, for the chart.
    let mut days: Vec<(String, f64, f64)> = Vec::new();
    for x in r {
        match days.last_mut() {
            Some(last) if last.0 == x.day => {
                last.1 += x.impressions as f64;
                last.2 += x.clicks as f64;
            }
            _ => days.push((x.day.clone(), x.impressions as f64, x.clicks as f64)),
        }
    }
    let chart = lines(
        &days.iter().map(|d| d.0.clone()).collect::<Vec<_>>(),
        &[
            Series {
                name: "impressions",
                values: days.iter().map(|d| d.1).collect(),
            },
            Series {
                name: "clicks",
                values: days.iter().map(|d| d.2).collect(),
            },
        ],
    );
    let cur = report
        .totals
        .as_ref()
        .map_or(lake::registry::DEFAULT_CURRENCY, |t| t.currency.as_str());
    let int = |x: Option<i64>| x.map(|x| x as f64);
    let hll = format!(
        "the same from HyperLogLog++ sketches, ±{:.2} % (one standard error)",
        query::sketch::hll_relative_error() * 100.0
    );
    let t = report.totals.as_ref();
    // Each figure with one line on what it counts.
    let cards: Vec<(&str, &str, &str, String)> = vec![
        (
            "impressions",
            "Impressions",
            "ad impressions, each event id once",
            count(t.and_then(|t| int(t.impressions))),
        ),
        (
            "clicks",
            "Clicks",
            "ad clicks, each event id once",
            count(t.and_then(|t| int(t.clicks))),
        ),
        (
            "ctr",
            "CTR",
            "clicks ÷ impressions",
            percent(t.and_then(|t| t.ctr)),
        ),
        (
            "conversions",
            "Conversions",
            "conversions, each event id once",
            count(t.and_then(|t| int(t.conversions))),
        ),
        (
            "conversion_rate",
            "Conversion rate",
            "conversions ÷ clicks",
            percent(t.and_then(|t| t.conversion_rate)),
        ),
        (
            "spend",
            "Spend",
            "the amount of impressions and clicks",
            money(t.and_then(|t| t.spend), cur),
        ),
        (
            "conversion_value",
            "Conversion value",
            "the amount of conversions",
            money(t.and_then(|t| t.conversion_value), cur),
        ),
        (
            "unique_reach",
            "Unique reach",
            "distinct users with an impression in the range, exact",
            count(t.and_then(|t| int(t.unique_reach))),
        ),
        (
            "unique_reach_approx",
            "Unique reach (HLL++)",
            &hll,
            count(t.and_then(|t| t.unique_reach_approx)),
        ),
        (
            "frequency",
            "Frequency",
            "impressions ÷ exact unique reach",
            two(t.and_then(|t| t.frequency)),
        ),
    ];
    let path = format!("/advertisers/{}", url_escape(id));
    let api = format!("/api/v1/advertisers/{}/report", url_escape(id));
    Ok(html! {
        h1 { "Advertiser " (id) }
        (report_bar(shared, RangeOf::from(&report.daily), &params, (&path, &api)))
        div.cards id="totals" {
            @for (k, h, what, v) in &cards {
                div.card { span { (h) } b data-total=(k) { (v) } small { (what) } }
            }
        }
        section {
            h2 { "Ads over the range" }
            (table("ads-range", &report.ads, &[
                col("ad_id", "Ad", |a: &AdOverRange| a.ad_id.clone()),
                text_col("impressions", "Impressions", |a: &AdOverRange| count(int(a.figures.impressions))),
                text_col("clicks", "Clicks", |a: &AdOverRange| count(int(a.figures.clicks))),
                text_col("ctr", "CTR", |a: &AdOverRange| percent(a.figures.ctr)),
                text_col("conversions", "Conversions", |a: &AdOverRange| count(int(a.figures.conversions))),
                text_col("spend", "Spend", |a: &AdOverRange| money(a.figures.spend, cur)),
                text_col("conversion_value", "Value", |a: &AdOverRange| money(a.figures.conversion_value, cur)),
                text_col("unique_reach", "Unique reach (exact)", |a: &AdOverRange| count(int(a.figures.unique_reach))),
                text_col("unique_reach_approx", "Unique reach (HLL++)", |a: &AdOverRange| count(a.figures.unique_reach_approx)),
                text_col("frequency", "Frequency", |a: &AdOverRange| two(a.figures.frequency)),
            ]))
        }
        section {
            h2 { "Per day" }
            div.chart { (chart) }
            (table("ads", r, &[
                col("day", "Day", |a: &AdDayRow| a.day.clone()),
                col("ad_id", "Ad", |a: &AdDayRow| a.ad_id.clone()),
                text_col("impressions", "Impressions", |a: &AdDayRow| count(Some(a.impressions as f64))),
                text_col("clicks", "Clicks", |a: &AdDayRow| count(Some(a.clicks as f64))),
                text_col("ctr", "CTR", |a: &AdDayRow| percent(a.ctr)),
                text_col("conversions", "Conversions", |a: &AdDayRow| count(Some(a.conversions as f64))),
                text_col("spend", "Spend", |a: &AdDayRow| money(Some(a.spend), cur)),
                text_col("conversion_value", "Value", |a: &AdDayRow| money(Some(a.conversion_value), cur)),
                text_col("reach", "Reach", |a: &AdDayRow| count(Some(a.reach as f64))),
                text_col("frequency", "Frequency", |a: &AdDayRow| two(a.frequency)),
            ]))
        }
    })
}

/// `GET /admin/accounts`: accounts with their state and buttons to change it (operators).
pub async fn admin_accounts(Viewer(c): Viewer, AxState(state): AxState<State>) -> Page {
    c.require(&[Role::Operator])?;
    let accounts = state.registry.call(|r| r.accounts()).await?;
    let body = html! {
        h1 { "Accounts" }
        p.meta {
            "Only verified official accounts and advertisers get reports. Every change is in the \
             account's audit log with who, when and why."
        }
        div.scroll {
            table id="accounts" {
                thead { tr { th { "Id" } th { "Kind" } th { "Name" } th { "State" } th { "Change" } } }
                tbody {
                    @for a in &accounts {
                        tr {
                            td { (a.id) }
                            td { (a.kind.as_str()) }
                            td { (a.name) }
                            td.state { (a.state.as_str()) }
                            td {
                                form method="post" action=(format!("/admin/accounts/{}/state", url_escape(&a.id))) {
                                    input name="reason" placeholder="reason" required;
                                    @for (s, label) in [
                                        (VerificationState::Verified, "verify"),
                                        (VerificationState::Rejected, "reject"),
                                        (VerificationState::Revoked, "revoke"),
                                    ] {
                                        @if s != a.state {
                                            button name="state" value=(s.as_str()) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Accounts", &c, body)
}

#[derive(Deserialize)]
pub struct StateForm {
    state: String,
    reason: String,
}

/// `POST /admin/accounts/{id}/state` (the form above).
pub async fn admin_set_state(
    Viewer(c): Viewer,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    Form(form): Form<StateForm>,
) -> Page {
    c.require(&[Role::Operator])?;
    let to: VerificationState = form.state.parse().map_err(ApiError::from)?;
    let actor = c.actor();
    state
        .registry
        .call(move |r| r.set_state(&id, to, &actor, &form.reason))
        .await?;
    Ok(Redirect::to("/admin/accounts").into_response())
}

/// `GET /admin/pipeline`: the reconciliation ledger for operators. Per source partition the
/// broker's high watermark (under `spacepulse run`, which reads it) beside the offset the lake
/// covers; per metric table the `events` version it has seen beside the newest. A gap (a lag,
/// a table behind) is highlighted.
pub async fn admin_pipeline(Viewer(c): Viewer, AxState(state): AxState<State>) -> Page {
    c.require(&[Role::Operator])?;
    let status = crate::status::status_of(&state).await?;
    let text = |v: Option<String>| v.unwrap_or_else(|| "–".to_string());
    let num = |v: Option<i64>| text(v.map(|v| v.to_string()));
    let body = html! {
        h1 { "Pipeline" }
        p.meta {
            "The lake's events table is at version " b id="events-version" { (num(status.events_version)) }
            ". Highlighted rows have a gap: messages the broker holds that the lake does not cover \
             yet, or a metric table that has not seen the newest events."
        }
        section {
            h2 { "Source partitions" }
            table id="partitions" {
                thead { tr {
                    th { "Source" } th { "Partition" } th { "Broker high watermark" }
                    th { "Lake covers up to" } th { "Lag" } th { "Events" } th { "Rejected" }
                    th { "Event-time watermark" }
                } }
                tbody {
                    @for p in &status.partitions {
                        tr.gap[p.lag.is_some_and(|l| l > 0)] {
                            td data-col="source" { (p.source) }
                            td data-col="partition" { (p.partition) }
                            td data-col="broker_high_watermark" { (num(p.broker_high_watermark())) }
                            td data-col="covered_offset" { (num(p.covered_offset)) }
                            td data-col="lag" { (num(p.lag)) }
                            td data-col="events" { (p.events) }
                            td data-col="rejected" { (p.rejected) }
                            td data-col="watermark" { (text(p.watermark.clone())) }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Metric tables" }
            table id="tables" {
                thead { tr {
                    th { "Job" } th { "Table" } th { "Events version seen" } th { "Versions behind" }
                    th { "Complete up to" } th { "Last commit" }
                } }
                tbody {
                    @for j in &status.jobs {
                        tr.gap[j.versions_behind.is_none_or(|b| b > 0)] {
                            td data-col="job" { (j.job) }
                            td data-col="table" { (j.table) }
                            td data-col="events_version_seen" { (num(j.events_version_seen)) }
                            td data-col="versions_behind" { (num(j.versions_behind)) }
                            td data-col="complete_up_to" { (text(j.complete_up_to.clone())) }
                            td data-col="last_commit_at" { (text(j.last_commit_at.clone())) }
                        }
                    }
                }
            }
        }
    };
    page("Pipeline", &c, body)
}

/// `GET /live`: the operators' live page; the script fills it from the event stream.
pub async fn live(Viewer(c): Viewer, AxState(state): AxState<State>) -> Page {
    c.require(&[Role::Operator])?;
    let Some(live) = &state.live else {
        let body = html! {
            h1 { "Live peaks" }
            p.error id="live-off" {
                "This server runs without " code { "--brokers" } ": start it with "
                code { "spacepulse serve --brokers HOST:PORT --topic events" }
                " to see events as they arrive."
            }
        };
        return page("Live", &c, body);
    };
    let o = &live.options;
    let cards = [
        ("rate", "Events/s"),
        ("photos-rate", "Photos/s"),
        ("today-events", "Events today"),
        ("today-photos", "Photos today"),
        ("peak-second", "Peak second today"),
        ("peak-minute", "Peak minute today"),
        ("active-minute", "Active users, last minute"),
        ("active-hour", "Active users, last hour"),
        ("events-total", "Events since start"),
        ("lag", "Consumer lag"),
    ];
    let body = html! {
        h1 { "Live peaks" }
        p.meta {
            "Topic " b { (o.topic) } " on " b { (o.brokers) } " · stream clock "
            b id="clock" { "waiting for events" } " (" (state.options.tz.name()) ") · "
            span id="status" { "connecting" }
        }
        div.cards {
            @for (id, h) in cards { div.card { span { (h) } b id=(id) { "–" } } }
        }
        section {
            h2 { "The last hour, events per second" }
            div.chart { img id="hour-chart" alt="events per second, last hour" src="/live/hour.svg"; }
        }
        section {
            h2 { "Launches in progress" }
            div id="launches" { p.empty { "No reservations in the last 24 hours." } }
        }
        script src="/assets/live.js" {}
    };
    page("Live", &c, body)
}

fn svg(body: Markup) -> Response {
    (
        [(CONTENT_TYPE, "image/svg+xml"), (CACHE_CONTROL, "no-store")],
        body.into_string(),
    )
        .into_response()
}

/// `GET /live/hour.svg`: events and photos per second over the last hour of stream time.
pub async fn live_hour(
    caller: Caller,
    AxState(state): AxState<State>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator])?;
    let live = crate::live_api::live_of(&state)?;
    let series = live.series(3600);
    let labels: Vec<String> = series
        .iter()
        .map(|(s, _, _)| {
            let t = live.stamp(*s);
            t.get(11..19).unwrap_or(&t).to_string()
        })
        .collect();
    Ok(svg(lines(
        &labels,
        &[
            Series {
                name: "events/s",
                values: series.iter().map(|x| x.1 as f64).collect(),
            },
            Series {
                name: "photos/s",
                values: series.iter().map(|x| x.2 as f64).collect(),
            },
        ],
    )))
}

#[derive(Deserialize)]
pub struct CampaignParam {
    campaign: String,
}

/// `GET /live/launch.svg?campaign=ID`: a running launch curve (users since its start).
pub async fn live_launch(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(p): QueryParams<CampaignParam>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator])?;
    let live = crate::live_api::live_of(&state)?;
    let Some((_, curve)) = live.launch_curve(&p.campaign) else {
        return Err(ApiError::not_found(format!(
            "no reservations for campaign {:?} in the last 24 hours",
            p.campaign
        )));
    };
    let labels: Vec<String> = (0..curve.len() as i64).map(after).collect();
    Ok(svg(lines(
        &labels,
        &[Series {
            name: "users",
            values: curve.iter().map(|v| *v as f64).collect(),
        }],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_units_rates_as_percentages() {
        assert_eq!(grouped(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(grouped(999.0, 0), "999");
        assert_eq!(grouped(-1000.5, 2), "-1,000.50");
        assert_eq!(grouped(-0.001, 2), "0.00");
        assert_eq!(money(Some(760.62), "USD"), "USD 760.62");
        assert_eq!(percent(Some(0.0123)), "1.23 %");
        assert_eq!(two(Some(2.0 / 3.0)), "0.67");
        assert_eq!(count(Some(12345.0)), "12,345");
        assert_eq!(percent(None), "–");
    }

    #[test]
    fn every_value_is_escaped_and_milestones_named() {
        let rows = vec![FunnelRow {
            breakdown: "region".into(),
            segment: "<script>alert('x')</script>&\"".into(),
            step: 1,
            step_type: "page_view".into(),
            users: 3,
            conversion_from_previous: None,
            conversion_overall: Some(1.0),
            drop_off: None,
            dropped_window_closed: None,
            dropped_never_came_back: None,
            median_seconds_from_previous: None,
            p90_seconds_from_previous: None,
            window_ms: 1,
            mode: "furthest".into(),
            registered: true,
        }];
        let html = table(
            "t",
            &rows,
            &[col("segment", "Segment", |r: &FunnelRow| r.segment.clone())],
        )
        .into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert('x')&lt;/script&gt;&amp;&quot;"),
            "{html}"
        );
        assert_eq!(url_escape("a b/\"<"), "a%20b%2F%22%3C");
        assert_eq!(after(1), "+1 s");
        assert_eq!(after(600), "+10 min");
        assert_eq!(after(86_400), "+24 h");
        assert_eq!(crate::charts::short(0.5), "0.50");
    }
}
