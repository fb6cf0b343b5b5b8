//! The web UI: pages rendered on the server from the same reports as the JSON API, charts as
//! inline SVG (plotters), one stylesheet and one script served by this binary, nothing from
//! another site. Login is a form that exchanges the token for a server-side session whose
//! secret an HttpOnly, SameSite=Strict cookie holds (`Secure` and `__Host-` on https); a page
//! without a live session redirects to the login page.

use axum::Form;
use axum::extract::{FromRequestParts, Path, State as AxState};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use lake::registry::{Role, VerificationState};
use serde::Deserialize;
use serde_json::Value;

use crate::State;
use crate::auth::Caller;
use crate::charts::{Series, bars, lines};
use crate::error::{ApiError, QueryParams};
use crate::reports::{self, Params};
use crate::revisions;

const CSS: &str = include_str!("../assets/app.css");
const LIVE_JS: &str = include_str!("../assets/live.js");

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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
        let body = format!(
            "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
            e.status.as_u16(),
            esc(&message)
        );
        (e.status, document("Error", None, &body)).into_response()
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

fn nav(c: &Caller) -> String {
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
    let items: String = links
        .iter()
        .map(|(href, text)| format!("<a href=\"{}\">{text}</a>", esc(href)))
        .collect();
    format!(
        "<nav>{items}<span class=\"who\">{} · {}</span>\
         <form method=\"post\" action=\"/logout\"><button>Log out</button></form></nav>",
        esc(&c.account.id),
        c.role()
    )
}

fn document(title: &str, caller: Option<&Caller>, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · spacepulse</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\
         <body><header><a class=\"brand\" href=\"/\">spacepulse</a>{}</header><main>{body}</main>\
         </body></html>",
        esc(title),
        caller.map(nav).unwrap_or_default()
    ))
}

/// A page for a visitor without a login (a shared report): no navigation.
pub(crate) fn standalone(title: &str, body: &str) -> Response {
    secure(document(title, None, body).into_response())
}

pub(crate) fn page(title: &str, caller: &Caller, body: &str) -> Page {
    Ok(secure(document(title, Some(caller), body).into_response()))
}

/// A cell's text: numbers compact where they are ratios, strings as they are.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => esc(s),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.abs() < 10.0 => format!("{f:.4}"),
            (None, Some(f)) => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => esc(&other.to_string()),
    }
}

/// A report row as people read it: money in currency units with the currency
/// (`spend`, `conversion_value`), rates as percentages (`ctr`, `conversion_rate`), frequency
/// with two decimals, counts with thousands separators.
fn shown(row: &Value, currency: &str) -> Value {
    let Some(fields) = row.as_object() else {
        return row.clone();
    };
    let mut out = fields.clone();
    for (k, v) in fields {
        let text = match (k.as_str(), v.as_f64()) {
            ("spend" | "conversion_value", Some(x)) => format!("{currency} {}", grouped(x, 2)),
            ("ctr" | "conversion_rate", Some(x)) => format!("{:.2} %", x * 100.0),
            ("frequency", Some(x)) => format!("{x:.2}"),
            (
                "impressions"
                | "clicks"
                | "conversions"
                | "unique_reach"
                | "unique_reach_approx"
                | "reach",
                Some(x),
            ) => grouped(x, 0),
            _ => continue,
        };
        out.insert(k.clone(), Value::String(text));
    }
    Value::Object(out)
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

/// The array of a JSON report field (none when absent).
fn rows_of(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// A table of `rows` (JSON objects) with the given columns `(key, heading)`.
fn table(id: &str, rows: &[Value], columns: &[(&str, &str)]) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">No data in this range yet.</p>".into();
    }
    let head: String = columns
        .iter()
        .map(|(_, h)| format!("<th>{}</th>", esc(h)))
        .collect();
    let body: String = rows
        .iter()
        .map(|r| {
            let cells: String = columns
                .iter()
                .map(|(k, _)| format!("<td data-col=\"{k}\">{}</td>", cell(&r[*k])))
                .collect();
            // A row past the report's `complete_up_to` may still change.
            if r["provisional"] == Value::Bool(true) {
                format!(
                    "<tr class=\"provisional\" title=\"provisional: may still change\">{cells}</tr>"
                )
            } else {
                format!("<tr>{cells}</tr>")
            }
        })
        .collect();
    let legend = if rows.iter().any(|r| r["provisional"] == Value::Bool(true)) {
        "<p class=\"meta\"><span class=\"provisional\">Rows in italics</span> are provisional: \
         they end after the report is complete and may still change.</p>"
    } else {
        ""
    };
    format!(
        "<div class=\"scroll\"><table id=\"{id}\"><thead><tr>{head}</tr></thead>\
         <tbody>{body}</tbody></table></div>{legend}"
    )
}

/// What each column of a table counts, one line each.
fn what_counts(id: &str, items: &[(&str, &str)]) -> String {
    let rows: String = items
        .iter()
        .map(|(term, what)| format!("<dt>{}</dt><dd>{}</dd>", esc(term), esc(what)))
        .collect();
    format!("<dl class=\"counts\" id=\"{id}-counts\">{rows}</dl>")
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Over a daily report: the range picker and CSV link of its page and API paths, or the fixed
/// range of a shared one.
fn report_bar(
    shared: bool,
    state: &State,
    report: &Value,
    params: &Params,
    (page, api): (&str, &str),
) -> String {
    if shared {
        shared_bar(report, state)
    } else {
        range_bar(page, report, params, &csv_link(api, params))
    }
}

/// A shared report's fixed range, time zone and freshness (no picker: the link fixes them).
fn shared_bar(report: &Value, state: &State) -> String {
    let day = |k: &str| esc(report[k].as_str().unwrap_or("…"));
    format!(
        "<p class=\"meta\" id=\"shared-range\">Days <b>{}</b> to <b>{}</b> in <b>{}</b> · \
         complete up to <b id=\"complete-up-to\">{}</b></p>",
        day("from"),
        day("to"),
        esc(state.options.tz.name()),
        esc(report["complete_up_to"].as_str().unwrap_or("no data yet"))
    )
}

/// The range picker, the time zone and the freshness line over a report.
fn range_bar(path: &str, report: &Value, params: &Params, csv: &str) -> String {
    let current = params.range.as_deref().unwrap_or(if params.from.is_some() {
        "custom"
    } else {
        "all"
    });
    let presets: String = [("today", "Today"), ("7d", "7 days"), ("30d", "30 days")]
        .iter()
        .map(|(v, t)| {
            let class = if *v == current { " class=\"on\"" } else { "" };
            format!("<a{class} href=\"{path}?range={v}\">{t}</a>")
        })
        .collect();
    let from = report["from"].as_str().unwrap_or("");
    let to = report["to"].as_str().unwrap_or("");
    format!(
        "<div class=\"range\">{presets}<form method=\"get\" action=\"{path}\">\
         <input type=\"date\" name=\"from\" value=\"{from}\" aria-label=\"from\">\
         <input type=\"date\" name=\"to\" value=\"{to}\" aria-label=\"to\">\
         <button>Custom</button></form></div>\
         <p class=\"meta\">Days in <b>{tz}</b> · complete up to <b id=\"complete-up-to\">{fresh}</b> · \
         <a href=\"{csv}\">CSV</a></p>",
        tz = esc(report["tz"].as_str().unwrap_or("")),
        fresh = esc(report["complete_up_to"].as_str().unwrap_or("no data yet")),
        csv = esc(csv),
    )
}

fn csv_link(api: &str, params: &Params) -> String {
    let mut q = vec!["format=csv".to_string()];
    for (k, v) in [
        ("range", &params.range),
        ("from", &params.from),
        ("to", &params.to),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", esc(v)));
        }
    }
    format!("{api}?{}", q.join("&"))
}

fn rows(v: &Value) -> Vec<Value> {
    v["rows"].as_array().cloned().unwrap_or_default()
}

/// `GET /login`
pub async fn login_form() -> Response {
    secure(document("Log in", None, &login_body(None)).into_response())
}

fn login_body(error: Option<&str>) -> String {
    format!(
        "<h1>Log in</h1>{}<form class=\"login\" method=\"post\" action=\"/login\">\
         <label for=\"token\">Token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required \
         placeholder=\"spt_…\"><button id=\"login\">Log in</button></form>\
         <p class=\"meta\">Paste the token an operator issued you (<code>spacepulse tokens issue</code>). \
         It starts a session kept in an HttpOnly cookie for this site only.</p>",
        error
            .map(|e| format!("<p class=\"error\">{}</p>", esc(e)))
            .unwrap_or_default()
    )
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
                    &login_body(Some("Unknown or revoked token.")),
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
    let activity = reports::daily_value(&state, reports::activity_report(), clone(&params)).await?;
    let uploads = reports::daily_value(&state, reports::uploads_report(), clone(&params)).await?;
    let total: Vec<Value> = rows(&activity)
        .into_iter()
        .filter(|r| r["breakdown"] == "total")
        .collect();
    let labels: Vec<String> = total
        .iter()
        .map(|r| r["day"].as_str().unwrap_or("").to_string())
        .collect();
    let pick = |k: &str| total.iter().map(|r| num(&r[k])).collect::<Vec<f64>>();
    let chart = lines(
        &labels,
        &[
            Series {
                name: "DAU",
                values: pick("dau"),
            },
            Series {
                name: "WAU",
                values: pick("wau"),
            },
            Series {
                name: "MAU",
                values: pick("mau"),
            },
        ],
    );
    let up = rows(&uploads);
    let up_labels: Vec<String> = up
        .iter()
        .map(|r| r["day"].as_str().unwrap_or("").to_string())
        .collect();
    let up_chart = lines(
        &up_labels,
        &[Series {
            name: "photos",
            values: up.iter().map(|r| num(&r["photos"])).collect(),
        }],
    );
    let body = format!(
        "<h1>Platform activity</h1>{bar}\
         <section><h2>Active users</h2><div class=\"chart\" id=\"activity-chart\">{chart}</div>{t1}{c1}\
         <p class=\"meta\">Exact counts from bitmaps; the <code>_approx</code> columns are \
         HyperLogLog++ (p=14, ±0.81% standard error).</p></section>\
         <section><h2>Photo uploads and peaks</h2><div class=\"chart\">{up_chart}</div>{t2}{c2}</section>",
        c1 = what_counts(
            "activity",
            &[
                ("DAU", "distinct users with any event that day, exact"),
                (
                    "WAU",
                    "distinct users with any event in the 7 days ending that day, exact"
                ),
                (
                    "MAU",
                    "distinct users with any event in the 30 days ending that day, exact"
                ),
                (
                    "DAU/MAU",
                    "DAU ÷ MAU: how many of the month's users came that day"
                ),
                (
                    "New users",
                    "users active that day and on no earlier day in the lake (in the segment)"
                ),
                (
                    "DAU (HLL)",
                    "DAU from HyperLogLog++ sketches, ±0.81 % (one standard error)"
                ),
                (
                    "Segment",
                    "all users, or a platform group (mobile, pc, web, other)"
                ),
            ],
        ),
        c2 = what_counts(
            "uploads",
            &[
                ("Uploads", "photo_upload events, each event id once"),
                ("Photos", "the photos those uploads carried"),
                (
                    "Peak second, minute, hour",
                    "the day's busiest second, minute and hour by photos, and their photos"
                ),
            ],
        ),
        bar = range_bar(
            "/platform",
            &activity,
            &params,
            &csv_link("/api/v1/platform/activity", &params)
        ),
        t1 = table(
            "activity",
            &rows(&activity),
            &[
                ("day", "Day"),
                ("segment", "Segment"),
                ("dau", "DAU"),
                ("wau", "WAU"),
                ("mau", "MAU"),
                ("dau_mau", "DAU/MAU"),
                ("new_users", "New users"),
                ("dau_approx", "DAU (HLL)"),
            ]
        ),
        t2 = table(
            "uploads",
            &up,
            &[
                ("day", "Day"),
                ("uploads", "Uploads"),
                ("photos", "Photos"),
                ("peak_second", "Peak second"),
                ("peak_second_photos", "Photos"),
                ("peak_minute", "Peak minute"),
                ("peak_minute_photos", "Photos"),
                ("peak_hour", "Peak hour"),
                ("peak_hour_photos", "Photos"),
            ]
        ),
    );
    let body = body + &revisions::section(&state, &revisions::Scope::Platform).await?;
    page("Platform", &c, &body)
}

fn clone(p: &Params) -> Params {
    Params {
        range: p.range.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
        format: None,
    }
}

/// `GET /accounts/{id}`: an official account's followers and its campaigns.
pub async fn account(
    Viewer(c): Viewer,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Page {
    c.tenant(Role::Official, &id)?;
    let mut body = account_body(&state, &id, params, false).await?;
    let scope = revisions::account_scope(&state, &id).await?;
    body.push_str(&revisions::section(&state, &scope).await?);
    page(&id, &c, &body)
}

/// An official account's followers (and, unless `shared`, its campaigns and the range bar).
pub(crate) async fn account_body(
    state: &State,
    id: &str,
    params: Params,
    shared: bool,
) -> Result<String, PageError> {
    let (state, id) = (state.clone(), id.to_string());
    let report =
        reports::daily_value(&state, reports::followers_report(&id), clone(&params)).await?;
    let r = rows(&report);
    let labels: Vec<String> = r
        .iter()
        .map(|x| x["day"].as_str().unwrap_or("").to_string())
        .collect();
    let chart = lines(
        &labels,
        &[Series {
            name: "followers",
            values: r.iter().map(|x| num(&x["followers"])).collect(),
        }],
    );
    let campaigns = reports::campaigns_value(&state, &id).await?;
    let list: String = campaigns["campaigns"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|x| {
            let cid = x["id"].as_str().unwrap_or("");
            format!(
                "<li><a href=\"/campaigns/{0}\">{0}</a> · steps {1}</li>",
                esc(cid),
                esc(&x["steps"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(" → ")
                    })
                    .unwrap_or_default())
            )
        })
        .collect();
    // What the followers figure stands on, as of the range's last day.
    let stands = match r.last() {
        Some(last) if last["baseline_followers"].is_i64() => format!(
            "Followers are the baseline of {} at {} (imported from the platform's records) plus \
             the net follows since.",
            last["baseline_followers"],
            esc(last["baseline_as_of"].as_str().unwrap_or(""))
        ),
        Some(_) => "Followers are the net follows since the lake's first day: no follower \
             baseline was imported for this account (spacepulse accounts import-followers)."
            .to_string(),
        None => String::new(),
    };
    let campaigns_section = if shared {
        String::new()
    } else {
        format!("<section><h2>Campaigns</h2><ul id=\"campaigns\">{list}</ul></section>")
    };
    let body = format!(
        "<h1>{name}</h1>{bar}<section><h2>Followers</h2><p id=\"baseline\">{stands}</p>\
         <div class=\"chart\">{chart}</div>{t}{counts}</section>{campaigns_section}",
        counts = what_counts(
            "followers",
            &[
                (
                    "Follows, unfollows",
                    "follow and unfollow events of the day, each event id once"
                ),
                ("Net", "follows − unfollows"),
                (
                    "Followers",
                    "at the day's end: the baseline it stands on plus the net follows since"
                ),
                (
                    "Baseline",
                    "the imported follower figure the day stands on (none: since the lake's first day)"
                ),
                (
                    "Reach",
                    "distinct users who viewed a page of the account or of its campaigns that day, exact",
                ),
                (
                    "Engagement",
                    "likes + comments carrying the account, each event id once"
                ),
            ],
        ),
        name = esc(&id),
        bar = report_bar(
            shared,
            &state,
            &report,
            &params,
            (
                &format!("/accounts/{}", esc(&id)),
                &format!("/api/v1/accounts/{id}/followers"),
            ),
        ),
        t = table(
            "followers",
            &r,
            &[
                ("day", "Day"),
                ("follows", "Follows"),
                ("unfollows", "Unfollows"),
                ("net", "Net"),
                ("followers", "Followers"),
                ("baseline_followers", "Baseline"),
                ("reach", "Reach"),
                ("likes", "Likes"),
                ("comments", "Comments"),
                ("engagement", "Engagement"),
            ]
        ),
    );
    Ok(body)
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
fn time_to_convert(funnel: &Value) -> String {
    let times = funnel["time_to_convert"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut steps: Vec<(i64, String)> = times
        .iter()
        .map(|t| {
            (
                t["step"].as_i64().unwrap_or(0),
                t["step_type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    steps.dedup();
    let charts: String = steps
        .iter()
        .map(|(step, ty)| {
            let buckets: Vec<&Value> = times
                .iter()
                .filter(|t| t["step"].as_i64() == Some(*step))
                .collect();
            let labels: Vec<String> = buckets
                .iter()
                .map(|b| match b["to_seconds"].as_i64() {
                    Some(to) => format!(
                        "{}–{}",
                        span(b["from_seconds"].as_i64().unwrap_or(0)),
                        span(to)
                    ),
                    None => format!("≥ {}", span(b["from_seconds"].as_i64().unwrap_or(0))),
                })
                .collect();
            format!(
                "<figure><figcaption>Step {step} ({ty}): users by the time from the step before\
                 </figcaption><div class=\"chart\" id=\"time-to-convert-{step}\">{}</div></figure>",
                bars(
                    &labels,
                    &buckets.iter().map(|b| num(&b["users"])).collect::<Vec<_>>()
                ),
                ty = esc(ty),
            )
        })
        .collect();
    if charts.is_empty() {
        return String::new();
    }
    format!("<h3>Time to convert</h3>{charts}")
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
    let mut body = campaign_body(&state, &id, params, false).await?;
    body.push_str(&revisions::section(&state, &revisions::Scope::Campaign(id.clone())).await?);
    page(&format!("Campaign {id}"), &c, &body)
}

/// A campaign's launch and funnel (with CSV links unless `shared`).
pub(crate) async fn campaign_body(
    state: &State,
    id: &str,
    params: Params,
    shared: bool,
) -> Result<String, PageError> {
    let (state, id) = (state.clone(), id.to_string());
    let funnel = reports::funnel_value(&state, &id, &params).await?;
    let launch = reports::launch_value(&state, &id).await?;
    // With a range, the funnel of the users who came in it; else the whole campaign's.
    let in_range = funnel["range_rows"].is_array();
    let steps: Vec<Value> = if in_range {
        rows_of(&funnel["range_rows"])
    } else {
        rows(&funnel)
            .into_iter()
            .filter(|r| r["breakdown"] == "total")
            .collect()
    };
    let funnel_of = if in_range {
        format!(
            "The users whose first event in the campaign fell from {} to {} (by platform, \
             region and hour below: the whole campaign)",
            esc(funnel["from"].as_str().unwrap_or("the first day")),
            esc(funnel["to"].as_str().unwrap_or("the newest day"))
        )
    } else {
        "Every user of the campaign".to_string()
    };
    let daily = rows_of(&funnel["daily"]);
    let reach_chart = lines(
        &daily
            .iter()
            .map(|r| r["day"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>(),
        &[Series {
            name: "reach",
            values: daily.iter().map(|r| num(&r["reach"])).collect(),
        }],
    );
    let reach = &funnel["reach"];
    let reach_cards = format!(
        "<div class=\"cards\" id=\"campaign-reach\">\
         <div class=\"card\"><span>Reach (exact)</span><b data-total=\"reach\">{}</b>\
         <small>distinct users with an event of the campaign's steps in the range: the days' \
         users unioned</small></div>\
         <div class=\"card\"><span>Reach (HLL++)</span><b data-total=\"reach_approx\">{}</b>\
         <small>the same from HyperLogLog++ sketches, ±{:.2} % (one standard error)</small></div></div>",
        grouped(num(&reach["reach"]), 0),
        grouped(num(&reach["reach_approx"]), 0),
        num(&reach["hll_relative_error"]) * 100.0,
    );
    let funnel_chart = bars(
        &steps
            .iter()
            .map(|r| r["step_type"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>(),
        &steps.iter().map(|r| num(&r["users"])).collect::<Vec<_>>(),
    );
    let curve = launch["curve"].as_array().cloned().unwrap_or_default();
    // One unit on the axis: minutes and seconds after the launch.
    let labels: Vec<String> = curve
        .iter()
        .map(|p| {
            let s = p["second"].as_i64().unwrap_or(0);
            format!("+{}:{:02}", s / 60, s % 60)
        })
        .collect();
    let launch_chart = lines(
        &labels,
        &[Series {
            name: "users",
            values: curve.iter().map(|p| num(&p["users"])).collect(),
        }],
    );
    let f = &launch["forecast"];
    let forecast = match f["method"].as_str() {
        Some("observed") => String::new(),
        Some(method) => format!(
            "<p class=\"meta\" id=\"forecast\">Forecast at +24 h from the first {}: \
             <b>{}</b> users (80 % interval {} to {}); {method}.</p>",
            {
                let s = f["from_second"].as_i64().unwrap_or(0);
                format!("{}:{:02}", s / 60, s % 60)
            },
            grouped(num(&f["users_24h"]), 0),
            grouped(num(&f["low"]), 0),
            grouped(num(&f["high"]), 0),
        ),
        None => String::new(),
    };
    let milestones: Vec<Value> = launch["milestones"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut m| {
            let s = m["after_seconds"].as_i64().unwrap_or(0);
            m["after"] = Value::String(after(s));
            m
        })
        .collect();
    // With a range, the day segments of its days only.
    let (first, last) = (funnel["from"].as_str(), funnel["to"].as_str());
    let by_segment: Vec<Value> = rows(&funnel)
        .into_iter()
        .filter(|r| r["breakdown"] != "total")
        .filter(|r| {
            r["breakdown"] != "day"
                || !in_range
                || r["segment"]
                    .as_str()
                    .is_some_and(|d| first.is_none_or(|f| d >= f) && last.is_none_or(|l| d <= l))
        })
        .collect();
    // Per platform and per region, each segment's conversion from the first step to the last
    // (the twelve largest segments).
    let last_step = steps.iter().filter_map(|r| r["step"].as_i64()).max();
    let segment_charts: String = ["platform", "region", "hour"]
        .iter()
        .map(|b| {
            let mut segs: Vec<(String, f64, f64)> = by_segment
                .iter()
                .filter(|r| r["breakdown"] == *b)
                .filter(|r| r["step"].as_i64() == Some(1))
                .map(|r| {
                    let seg = r["segment"].as_str().unwrap_or("").to_string();
                    let reached = by_segment
                        .iter()
                        .find(|x| {
                            x["breakdown"] == *b
                                && x["segment"] == r["segment"]
                                && x["step"].as_i64() == last_step
                        })
                        .map_or(0.0, |x| num(&x["conversion_overall"]) * 100.0);
                    (seg, num(&r["users"]), reached)
                })
                .collect();
            // Hours in order, all of them; other segments by size, the twelve largest.
            if *b == "hour" {
                segs.sort_by(|a, b| a.0.cmp(&b.0));
            } else {
                segs.sort_by(|a, b| b.1.total_cmp(&a.1));
                segs.truncate(12);
            }
            if segs.is_empty() {
                return String::new();
            }
            let by = if *b == "hour" {
                format!("hour of the first view ({})", state.options.tz.name())
            } else {
                b.to_string()
            };
            format!(
                "<figure><figcaption>By {}: % of the first step's users who reached the \
                 last</figcaption><div class=\"chart\" id=\"funnel-{b}-chart\">{}</div></figure>",
                esc(&by),
                bars(
                    &segs.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
                    &segs.iter().map(|x| x.2).collect::<Vec<_>>(),
                )
            )
        })
        .collect();
    let (funnel_csv, curve_csv) = if shared {
        (String::new(), String::new())
    } else {
        (
            format!(
                " · <a id=\"funnel-csv\" href=\"/api/v1/campaigns/{}/funnel?format=csv\">CSV</a>",
                esc(&id)
            ),
            format!(
                " · <a id=\"curve-csv\" href=\"/api/v1/campaigns/{}/launch?format=csv\">CSV</a>",
                esc(&id)
            ),
        )
    };
    let body = format!(
        "<h1>Campaign {name}</h1>{bar}\
         <section><h2>Reach</h2>{reach_cards}<div class=\"chart\" id=\"reach-chart\">{reach_chart}</div>{reach_table}</section>\
         <section><h2>Launch milestones</h2>{ms}{forecast}\
         <div class=\"chart\" id=\"launch-chart\">{launch_chart}</div>\
         <p class=\"meta\">Users who reserved, counted once each, by minutes and seconds after \
         the launch (the first hour, second by second){curve_csv}</p></section>\
         <section><h2>Funnel</h2><p class=\"meta\" id=\"funnel-of\">{funnel_of}</p>\
         <div class=\"chart\" id=\"funnel-chart\">{funnel_chart}</div>{ft}{funnel_counts}\
         <p class=\"meta\">Each user's furthest step within the campaign's window{funnel_csv}</p>\
         {segment_charts}{times}\
         <details><summary>By platform, region, hour and day of the first view</summary>{st}</details></section>",
        times = time_to_convert(&funnel),
        name = esc(&id),
        bar = report_bar(
            shared,
            &state,
            &funnel,
            &params,
            (
                &format!("/campaigns/{}", esc(&id)),
                &format!("/api/v1/campaigns/{id}/funnel"),
            ),
        ),
        reach_table = table(
            "campaign-daily",
            &daily,
            &[
                ("day", "Day"),
                ("reach", "Reach"),
                ("new_users", "New users")
            ]
        ),
        funnel_counts = what_counts(
            "funnel",
            &[
                (
                    "Users",
                    "distinct users who reached at least this step within the window"
                ),
                (
                    "From previous",
                    "users at this step ÷ users at the step before"
                ),
                ("Overall", "users at this step ÷ users at the first step"),
                ("Drop-off", "users lost since the previous step"),
                (
                    "Window closed",
                    "of those, users who did this step's event after the previous one, but past the window"
                ),
                (
                    "Never came back",
                    "of those, users who never did this step's event after the previous one"
                ),
                (
                    "Median s, p90 s",
                    "seconds between the previous step and this one in each user's counted chain"
                ),
            ],
        ),
        ms = table(
            "milestones",
            &milestones,
            &[("after", "After launch"), ("users", "Users")]
        ),
        ft = table(
            "funnel",
            &steps,
            &[
                ("step", "Step"),
                ("step_type", "Event"),
                ("users", "Users"),
                ("conversion_from_previous", "From previous"),
                ("conversion_overall", "Overall"),
                ("drop_off", "Drop-off"),
                ("dropped_window_closed", "Window closed"),
                ("dropped_never_came_back", "Never came back"),
                ("median_seconds_from_previous", "Median s"),
                ("p90_seconds_from_previous", "p90 s"),
            ]
        ),
        st = table(
            "funnel-segments",
            &by_segment,
            &[
                ("breakdown", "By"),
                ("segment", "Segment"),
                ("step", "Step"),
                ("step_type", "Event"),
                ("users", "Users"),
                ("conversion_overall", "Overall"),
                ("drop_off", "Drop-off"),
                ("dropped_window_closed", "Window closed"),
                ("dropped_never_came_back", "Never came back"),
            ]
        ),
    );
    Ok(body)
}

/// `GET /advertisers/{id}`: impressions, clicks, spend per day and ad, with totals.
pub async fn advertiser(
    Viewer(c): Viewer,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<Params>,
) -> Page {
    c.tenant(Role::Advertiser, &id)?;
    let mut body = advertiser_body(&state, &id, params, false).await?;
    let scope = revisions::advertiser_scope(&state, &id).await?;
    body.push_str(&revisions::section(&state, &scope).await?);
    page(&format!("Advertiser {id}"), &c, &body)
}

/// An advertiser's totals, ads over the range and days (with the range bar unless `shared`).
pub(crate) async fn advertiser_body(
    state: &State,
    id: &str,
    params: Params,
    shared: bool,
) -> Result<String, PageError> {
    let (state, id) = (state.clone(), id.to_string());
    let report = reports::daily_value(
        &state,
        reports::advertiser_report(&id, &reports::currency_of(&state, &id).await?),
        clone(&params),
    )
    .await?;
    let r = rows(&report);
    // Per day across ads, for the chart.
    let mut days: Vec<(String, f64, f64)> = Vec::new();
    for x in &r {
        let d = x["day"].as_str().unwrap_or("").to_string();
        match days.last_mut() {
            Some(last) if last.0 == d => {
                last.1 += num(&x["impressions"]);
                last.2 += num(&x["clicks"]);
            }
            _ => days.push((d, num(&x["impressions"]), num(&x["clicks"]))),
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
    let cur = report["totals"]["currency"]
        .as_str()
        .unwrap_or(lake::registry::DEFAULT_CURRENCY)
        .to_string();
    let shown = |v: &Value| shown(v, &cur);
    let t = shown(&report["totals"]);
    // Each figure with one line on what it counts.
    let totals = format!(
        "<div class=\"cards\" id=\"totals\">{}</div>",
        [
            (
                "impressions",
                "Impressions",
                "ad impressions, each event id once"
            ),
            ("clicks", "Clicks", "ad clicks, each event id once"),
            ("ctr", "CTR", "clicks ÷ impressions"),
            (
                "conversions",
                "Conversions",
                "conversions, each event id once"
            ),
            ("conversion_rate", "Conversion rate", "conversions ÷ clicks"),
            ("spend", "Spend", "the amount of impressions and clicks"),
            (
                "conversion_value",
                "Conversion value",
                "the amount of conversions"
            ),
            (
                "unique_reach",
                "Unique reach",
                "distinct users with an impression in the range, exact",
            ),
            (
                "unique_reach_approx",
                "Unique reach (HLL++)",
                "the same from HyperLogLog++ sketches, ±0.81 % (one standard error)",
            ),
            ("frequency", "Frequency", "impressions ÷ exact unique reach"),
        ]
        .iter()
        .map(|(k, h, what)| format!(
            "<div class=\"card\"><span>{h}</span><b data-total=\"{k}\">{}</b>\
             <small>{what}</small></div>",
            cell(&t[*k])
        ))
        .collect::<String>()
    );
    let ads: Vec<Value> = rows_of(&report["ads"]).iter().map(&shown).collect();
    let days: Vec<Value> = r.iter().map(&shown).collect();
    let body = format!(
        "<h1>Advertiser {name}</h1>{bar}{totals}\
         <section><h2>Ads over the range</h2>{per_ad}</section>\
         <section><h2>Per day</h2><div class=\"chart\">{chart}</div>{tbl}</section>",
        name = esc(&id),
        bar = report_bar(
            shared,
            &state,
            &report,
            &params,
            (
                &format!("/advertisers/{}", esc(&id)),
                &format!("/api/v1/advertisers/{id}/report"),
            ),
        ),
        per_ad = table(
            "ads-range",
            &ads,
            &[
                ("ad_id", "Ad"),
                ("impressions", "Impressions"),
                ("clicks", "Clicks"),
                ("ctr", "CTR"),
                ("conversions", "Conversions"),
                ("spend", "Spend"),
                ("conversion_value", "Value"),
                ("unique_reach", "Unique reach (exact)"),
                ("unique_reach_approx", "Unique reach (HLL++)"),
                ("frequency", "Frequency"),
            ]
        ),
        tbl = table(
            "ads",
            &days,
            &[
                ("day", "Day"),
                ("ad_id", "Ad"),
                ("impressions", "Impressions"),
                ("clicks", "Clicks"),
                ("ctr", "CTR"),
                ("conversions", "Conversions"),
                ("spend", "Spend"),
                ("conversion_value", "Value"),
                ("reach", "Reach"),
                ("frequency", "Frequency"),
            ]
        ),
    );
    Ok(body)
}

/// `GET /admin/accounts`: accounts with their state and buttons to change it (operators).
pub async fn admin_accounts(Viewer(c): Viewer, AxState(state): AxState<State>) -> Page {
    c.require(&[Role::Operator])?;
    let accounts = state.registry.call(|r| r.accounts()).await?;
    let rows: String = accounts
        .iter()
        .map(|a| {
            let buttons: String = [
                (VerificationState::Verified, "verify"),
                (VerificationState::Rejected, "reject"),
                (VerificationState::Revoked, "revoke"),
            ]
            .iter()
            .filter(|(s, _)| *s != a.state)
            .map(|(s, label)| {
                format!(
                    "<button name=\"state\" value=\"{}\">{label}</button>",
                    s.as_str()
                )
            })
            .collect();
            format!(
                "<tr><td>{id}</td><td>{kind}</td><td>{name}</td><td class=\"state\">{st}</td>\
                 <td><form method=\"post\" action=\"/admin/accounts/{id}/state\">\
                 <input name=\"reason\" placeholder=\"reason\" required>{buttons}</form></td></tr>",
                id = esc(&a.id),
                kind = a.kind.as_str(),
                name = esc(&a.name),
                st = a.state.as_str(),
            )
        })
        .collect();
    let body = format!(
        "<h1>Accounts</h1><p class=\"meta\">Only verified official accounts and advertisers get \
         reports. Every change is in the account's audit log with who, when and why.</p>\
         <div class=\"scroll\"><table id=\"accounts\"><thead><tr><th>Id</th><th>Kind</th>\
         <th>Name</th><th>State</th><th>Change</th></tr></thead><tbody>{rows}</tbody></table></div>"
    );
    page("Accounts", &c, &body)
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
    let status = crate::status::status_value(&state).await?;
    let text = |v: &Value| match v {
        Value::Null => "–".to_string(),
        Value::String(s) => esc(s),
        v => esc(&v.to_string()),
    };
    let partitions: String = status["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let lag = p["lag"].as_i64();
            let high = lag
                .zip(p["covered_offset"].as_i64())
                .map(|(l, c)| Value::from(c + l))
                .unwrap_or(Value::Null);
            let gap = lag.is_some_and(|l| l > 0);
            format!(
                "<tr{}><td data-col=\"source\">{}</td><td data-col=\"partition\">{}</td>\
                 <td data-col=\"broker_high_watermark\">{}</td><td data-col=\"covered_offset\">{}</td>\
                 <td data-col=\"lag\">{}</td><td data-col=\"events\">{}</td><td data-col=\"rejected\">{}</td>\
                 <td data-col=\"watermark\">{}</td></tr>",
                if gap { " class=\"gap\"" } else { "" },
                text(&p["source"]),
                text(&p["partition"]),
                text(&high),
                text(&p["covered_offset"]),
                text(&p["lag"]),
                text(&p["events"]),
                text(&p["rejected"]),
                text(&p["watermark"]),
            )
        })
        .collect();
    let jobs: String = status["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|j| {
            let behind = j["versions_behind"].as_i64();
            let gap = behind.is_none_or(|b| b > 0);
            format!(
                "<tr{}><td data-col=\"job\">{}</td><td data-col=\"table\">{}</td>\
                 <td data-col=\"events_version_seen\">{}</td><td data-col=\"versions_behind\">{}</td>\
                 <td data-col=\"complete_up_to\">{}</td><td data-col=\"last_commit_at\">{}</td></tr>",
                if gap { " class=\"gap\"" } else { "" },
                text(&j["job"]),
                text(&j["table"]),
                text(&j["events_version_seen"]),
                text(&j["versions_behind"]),
                text(&j["complete_up_to"]),
                text(&j["last_commit_at"]),
            )
        })
        .collect();
    let body = format!(
        "<h1>Pipeline</h1><p class=\"meta\">The lake's events table is at version \
         <b id=\"events-version\">{}</b>. Highlighted rows have a gap: messages the broker holds \
         that the lake does not cover yet, or a metric table that has not seen the newest events.</p>\
         <section><h2>Source partitions</h2><table id=\"partitions\"><thead><tr><th>Source</th>\
         <th>Partition</th><th>Broker high watermark</th><th>Lake covers up to</th><th>Lag</th>\
         <th>Events</th><th>Rejected</th><th>Event-time watermark</th></tr></thead>\
         <tbody>{partitions}</tbody></table></section>\
         <section><h2>Metric tables</h2><table id=\"tables\"><thead><tr><th>Job</th><th>Table</th>\
         <th>Events version seen</th><th>Versions behind</th><th>Complete up to</th>\
         <th>Last commit</th></tr></thead><tbody>{jobs}</tbody></table></section>",
        text(&status["events_version"]),
    );
    page("Pipeline", &c, &body)
}

/// `GET /live`: the operators' live page; the script fills it from the event stream.
pub async fn live(Viewer(c): Viewer, AxState(state): AxState<State>) -> Page {
    c.require(&[Role::Operator])?;
    let Some(live) = &state.live else {
        let body = "<h1>Live peaks</h1><p class=\"error\" id=\"live-off\">This server runs without \
                    <code>--brokers</code>: start it with <code>spacepulse serve --brokers HOST:PORT \
                    --topic events</code> to see events as they arrive.</p>";
        return page("Live", &c, body);
    };
    let o = &live.options;
    let cards: String = [
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
    ]
    .iter()
    .map(|(id, h)| format!("<div class=\"card\"><span>{h}</span><b id=\"{id}\">–</b></div>"))
    .collect();
    let body = format!(
        "<h1>Live peaks</h1><p class=\"meta\">Topic <b>{topic}</b> on <b>{brokers}</b> · stream clock \
         <b id=\"clock\">waiting for events</b> ({tz}) · <span id=\"status\">connecting</span></p>\
         <div class=\"cards\">{cards}</div>\
         <section><h2>The last hour, events per second</h2>\
         <div class=\"chart\"><img id=\"hour-chart\" alt=\"events per second, last hour\" \
         src=\"/live/hour.svg\"></div></section>\
         <section><h2>Launches in progress</h2><div id=\"launches\"><p class=\"empty\">No reservations \
         in the last 24 hours.</p></div></section><script src=\"/assets/live.js\"></script>",
        topic = esc(&o.topic),
        brokers = esc(&o.brokers),
        tz = state.options.tz.name(),
    );
    page("Live", &c, &body)
}

fn svg(body: String) -> Response {
    (
        [(CONTENT_TYPE, "image/svg+xml"), (CACHE_CONTROL, "no-store")],
        body,
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
        let row = serde_json::json!({
            "ad_id": "ad-1", "spend": 760.62, "ctr": 0.0123, "frequency": 2.0 / 3.0,
            "unique_reach": 12345, "conversion_rate": null
        });
        let s = shown(&row, "USD");
        assert_eq!(s["spend"], "USD 760.62");
        assert_eq!(s["ctr"], "1.23 %");
        assert_eq!(s["frequency"], "0.67");
        assert_eq!(s["unique_reach"], "12,345");
        assert_eq!(s["ad_id"], "ad-1");
        assert_eq!(s["conversion_rate"], Value::Null);
    }

    #[test]
    fn escapes_and_names_milestones() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(after(1), "+1 s");
        assert_eq!(after(600), "+10 min");
        assert_eq!(after(86_400), "+24 h");
        assert_eq!(crate::charts::short(0.5), "0.50");
    }
}
