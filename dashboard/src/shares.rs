//! Share links: an official account or an advertiser creates a read-only link to one of its
//! reports and a range (`POST /api/v1/shares`), lists and revokes its links; operators list
//! and revoke any. `GET /s/{secret}` opens the link without a login and shows that report
//! alone, behind a password form when the link has one (`POST /s/{secret}`).

use axum::Form;
use axum::Json;
use axum::extract::{FromRequestParts, Path, State as AxState};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lake::registry::{NewShare, Opened, Role, ShareLink, SharedReport};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::auth::Caller;
use crate::error::{ApiError, JsonBody};
use crate::pages;
use crate::reports::Params;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewShareBody {
    /// `followers` (an official account's), `advertiser` (an advertiser's report) or
    /// `campaign` (a campaign the account owns).
    pub report: String,
    /// The account or campaign id.
    pub id: String,
    /// A preset: `today`, `7d` or `30d`.
    pub range: Option<String>,
    /// The first day, YYYY-MM-DD (instead of `range`).
    pub from: Option<String>,
    /// The last day, YYYY-MM-DD (instead of `range`).
    pub to: Option<String>,
    /// How long the link lives, in hours: 168 (a week) unless given, at most 2160 (90 days).
    pub expires_in_hours: Option<f64>,
    /// A password the visitor must give (8 characters at least).
    pub password: Option<String>,
}

/// The tenant a share belongs to: an official account or an advertiser, verified.
fn tenant(caller: &Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Official, Role::Advertiser])?;
    caller.tenant(caller.role(), &caller.account.id)
}

/// A caller that passed [`tenant`], checked before the request's body is read: whoever may
/// not make a link learns that, not what was wrong with the body.
pub struct Tenant(pub Caller);

impl FromRequestParts<State> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &State,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        tenant(&caller)?;
        Ok(Tenant(caller))
    }
}

/// Whose links the caller sees: its own, or every link for operators.
fn scope(caller: &Caller) -> Result<Option<String>, ApiError> {
    if caller.role() == Role::Operator {
        return Ok(None);
    }
    tenant(caller)?;
    Ok(Some(caller.account.id.clone()))
}

/// Creates a read-only link to one of the caller's reports; the response is the only place
/// its secret (and so its URL) appears.
#[utoipa::path(post, path = "/shares", tag = "shares", request_body = NewShareBody, responses((status = 201, description = "{url, secret, link}: the link, shown this once"), (status = 400, description = "A bad report, range, expiry or password"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "Not an official account or advertiser, or not verified"), (status = 404, description = "No such report of the caller's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn create(
    Tenant(caller): Tenant,
    AxState(state): AxState<State>,
    JsonBody(body): JsonBody<NewShareBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let hours = body.expires_in_hours.unwrap_or(168.0);
    if !hours.is_finite() || hours <= 0.0 {
        return Err(ApiError::bad_request(
            "expires_in_hours: expected a positive number of hours",
        ));
    }
    let new = NewShare {
        account_id: caller.account.id.clone(),
        report: Some(body.report.parse()?),
        target: body.id,
        range: body.range,
        from: body.from,
        to: body.to,
        lifetime_ms: (hours * 3.6e6).min(i64::MAX as f64) as i64,
        password: body.password,
    };
    let actor = caller.actor();
    let made = state
        .registry
        .call(move |r| r.create_share(&new, &actor))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "url": format!("/s/{}", made.secret),
            "secret": made.secret,
            "link": made.link,
        })),
    ))
}

/// The caller's links (operators: every link), never a secret.
#[utoipa::path(get, path = "/shares", tag = "shares", responses((status = 200, description = "The links, newest first"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    caller: Caller,
    AxState(state): AxState<State>,
) -> Result<Json<Vec<ShareLink>>, ApiError> {
    let account = scope(&caller)?;
    Ok(Json(
        state
            .registry
            .call(move |r| r.shares(account.as_deref()))
            .await?,
    ))
}

/// A link with its audit log (created, opened, wrong password, revoked).
#[utoipa::path(get, path = "/shares/{id}", tag = "shares", params(("id" = String, Path, description = "Link id")), responses((status = 200, description = "{link, audit}"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such link of the caller's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn get(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let account = scope(&caller)?;
    let found = {
        let id = id.clone();
        state
            .registry
            .call(move |r| {
                Ok::<_, lake::Error>(match r.share(&id, account.as_deref())? {
                    Some(link) => Some((r.share_audit(&id)?, link)),
                    None => None,
                })
            })
            .await?
    };
    let Some((audit, link)) = found else {
        return Err(ApiError::not_found(format!("no share link {id:?}")));
    };
    Ok(Json(json!({"link": link, "audit": audit})))
}

/// Revokes a link: it opens no more.
#[utoipa::path(delete, path = "/shares/{id}", tag = "shares", params(("id" = String, Path, description = "Link id")), responses((status = 204, description = "Revoked"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No live link of the caller's with that id")), security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let account = scope(&caller)?;
    let actor = caller.actor();
    let revoked = {
        let id = id.clone();
        state
            .registry
            .call(move |r| r.revoke_share(&id, account.as_deref(), &actor))
            .await?
    };
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no live share link {id:?}")))
    }
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    password: String,
}

/// `GET /s/{secret}`: the shared report, or its password form.
pub async fn open(AxState(state): AxState<State>, Path(secret): Path<String>) -> Response {
    shared(&state, &secret, None).await
}

/// `POST /s/{secret}`: the shared report behind its password.
pub async fn open_with_password(
    AxState(state): AxState<State>,
    Path(secret): Path<String>,
    Form(form): Form<PasswordForm>,
) -> Response {
    shared(&state, &secret, Some(form.password)).await
}

async fn shared(state: &State, secret: &str, password: Option<String>) -> Response {
    let opened = {
        let secret = secret.to_string();
        state
            .registry
            .call(move |r| r.open_share(&secret, password.as_deref(), "link visitor"))
            .await
    };
    match opened {
        Ok(Opened::Open(link)) => match body(state, &link).await {
            Ok(body) => frame(StatusCode::OK, &title(&link), body, &link),
            Err(e) => e.into_response(),
        },
        Ok(Opened::NeedsPassword) => password_form(secret, StatusCode::OK, None),
        Ok(Opened::WrongPassword) => {
            password_form(secret, StatusCode::UNAUTHORIZED, Some("Wrong password."))
        }
        Ok(Opened::LockedOut { retry_after_s }) => {
            let wait = match (retry_after_s + 59) / 60 {
                1 => "a minute".to_string(),
                n => format!("{n} minutes"),
            };
            let mut r = password_form(
                secret,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many wrong passwords for this link: try again in {wait}."
                )),
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after_s.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            r
        }
        Ok(Opened::Gone) => plain(
            StatusCode::NOT_FOUND,
            "Link not valid",
            html! {
                h1 { "This link is not valid" }
                p { "It has expired, was revoked, or never existed. Ask whoever shared it for a new one." }
            },
        ),
        Err(e) => pages::PageError::from(e).into_response(),
    }
}

fn title(link: &ShareLink) -> String {
    match link.report {
        SharedReport::Followers => format!("{} · followers", link.target),
        SharedReport::Advertiser => format!("Advertiser {}", link.target),
        SharedReport::Campaign => format!("Campaign {}", link.target),
    }
}

/// The report the link shares, over its range.
async fn body(state: &State, link: &ShareLink) -> Result<Markup, pages::PageError> {
    let params = Params {
        range: link.range.clone(),
        from: link.from.clone(),
        to: link.to.clone(),
        format: None,
    };
    match link.report {
        SharedReport::Followers => pages::account_body(state, &link.target, params, true).await,
        SharedReport::Advertiser => pages::advertiser_body(state, &link.target, params, true).await,
        SharedReport::Campaign => pages::campaign_body(state, &link.target, params, true).await,
    }
}

fn password_form(secret: &str, status: StatusCode, error: Option<&str>) -> Response {
    plain(
        status,
        "Shared report",
        html! {
            h1 { "Shared report" }
            p { "This link needs the password its owner gave you." }
            @if let Some(e) = error { p.error { (e) } }
            form.login method="post" action=(format!("/s/{secret}")) {
                label {
                    "Password "
                    input type="password" name="password" autocomplete="off" required autofocus;
                }
                button { "Open" }
            }
        },
    )
}

/// An instant (epoch ms) as RFC 3339 in UTC, to the second.
fn utc_seconds(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A shared page: the report alone, no navigation, saying what it is and until when.
fn frame(status: StatusCode, title: &str, body: Markup, link: &ShareLink) -> Response {
    plain(
        status,
        title,
        html! {
            p.meta id="shared" {
                "A read-only report shared by " b { (link.account_id) } "; the link works until "
                b { (utc_seconds(link.expires_at_ms)) } "."
            }
            (body)
        },
    )
}

fn plain(status: StatusCode, title: &str, body: Markup) -> Response {
    let mut r = (status, pages::standalone(title, body)).into_response();
    // The secret is in the address: no index keeps it (and the pages' same-origin referrer
    // policy tells no other site; a shared page links nowhere else).
    r.headers_mut().insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    r
}

#[derive(Debug, Deserialize)]
pub struct ShareForm {
    /// `followers`, `advertiser` or `campaign:ID`.
    what: String,
    #[serde(default)]
    range: String,
    #[serde(default)]
    expires_in_hours: String,
    #[serde(default)]
    password: String,
}

/// `GET /shares`: the tenant's links, a form to make one, and revoke buttons.
pub async fn page(
    pages::Viewer(c): pages::Viewer,
    AxState(state): AxState<State>,
) -> Result<Response, pages::PageError> {
    tenant(&c)?;
    let body = links_page(&state, &c, None).await?;
    pages::page("Share links", &c, body)
}

/// `POST /shares`: makes a link; the page shows its address this once.
pub async fn page_create(
    pages::Viewer(c): pages::Viewer,
    AxState(state): AxState<State>,
    Form(form): Form<ShareForm>,
) -> Result<Response, pages::PageError> {
    tenant(&c)?;
    let (report, target) = match form.what.split_once(':') {
        Some(("campaign", id)) => ("campaign", id.to_string()),
        _ => (form.what.as_str(), c.account.id.clone()),
    };
    let hours: f64 = match form.expires_in_hours.trim() {
        "" => 168.0,
        h => h
            .parse()
            .map_err(|_| ApiError::bad_request(format!("expires: expected hours, got {h:?}")))?,
    };
    if !hours.is_finite() || hours <= 0.0 {
        return Err(ApiError::bad_request("expires: expected a positive number of hours").into());
    }
    let new = NewShare {
        account_id: c.account.id.clone(),
        report: Some(report.parse().map_err(ApiError::from)?),
        target,
        range: Some(form.range.clone()).filter(|r| !r.is_empty() && r != "all"),
        from: None,
        to: None,
        lifetime_ms: (hours * 3.6e6).min(i64::MAX as f64) as i64,
        password: Some(form.password.clone()).filter(|p| !p.is_empty()),
    };
    let actor = c.actor();
    let made = state
        .registry
        .call(move |r| r.create_share(&new, &actor))
        .await?;
    let url = format!("/s/{}", made.secret);
    let body = links_page(&state, &c, Some(&url)).await?;
    pages::page("Share links", &c, body)
}

/// `POST /shares/{id}/revoke`
pub async fn page_revoke(
    pages::Viewer(c): pages::Viewer,
    AxState(state): AxState<State>,
    Path(id): Path<String>,
) -> Result<Response, pages::PageError> {
    let account = scope(&c)?;
    let actor = c.actor();
    let revoked = state
        .registry
        .call(move |r| r.revoke_share(&id, account.as_deref(), &actor))
        .await?;
    if !revoked {
        return Err(ApiError::not_found("no live share link with that id").into());
    }
    Ok(axum::response::Redirect::to("/shares").into_response())
}

/// The tenant's links and the form to make one; `new` is a link just made, shown this once.
async fn links_page(
    state: &State,
    c: &Caller,
    new: Option<&str>,
) -> Result<Markup, pages::PageError> {
    let account = c.account.id.clone();
    let (links, campaigns) = state
        .registry
        .call(move |r| {
            let links = r.shares(Some(&account))?;
            let campaigns: Vec<String> = r
                .campaigns()?
                .into_iter()
                .filter(|x| x.account_id == account)
                .map(|x| x.id)
                .collect();
            Ok::<_, lake::Error>((links, campaigns))
        })
        .await?;
    let own = match c.role() {
        Role::Advertiser => ("advertiser", "My ads report"),
        _ => ("followers", "My followers"),
    };
    let options: Vec<(String, String)> = std::iter::once((own.0.to_string(), own.1.to_string()))
        .chain(
            campaigns
                .iter()
                .map(|id| (format!("campaign:{id}"), format!("Campaign {id}"))),
        )
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    let status = |l: &ShareLink| match l.revoked_at_ms {
        Some(_) => "revoked",
        None if l.expires_at_ms <= now => "expired",
        None => "live",
    };
    Ok(html! {
        h1 { "Share links" }
        @if let Some(url) = new {
            p.notice { "New link (shown this once; copy it now): " a id="new-link" href=(url) { (url) } }
        }
        p.meta {
            "A share link opens one of your reports, read-only, for anyone who has it, until it \
             expires or you revoke it. Keep it like a password."
        }
        form.login method="post" action="/shares" id="new-share" {
            label { "Report " select name="what" { @for (v, t) in &options { option value=(v) { (t) } } } }
            label {
                "Range "
                select name="range" {
                    option value="7d" { "Last 7 days" }
                    option value="30d" { "Last 30 days" }
                    option value="today" { "Today" }
                    option value="all" { "All days" }
                }
            }
            label { "Expires in hours " input name="expires_in_hours" value="168" inputmode="decimal"; }
            label {
                "Password (optional, 8+ characters) "
                input type="password" name="password" autocomplete="new-password";
            }
            button id="create-share" { "Create link" }
        }
        table id="shares" {
            thead { tr {
                th { "Link" } th { "Report" } th { "Range" } th { "Password" } th { "Expires" }
                th { "Status" } th {}
            } }
            tbody {
                @for l in &links {
                    tr {
                        td data-col="id" { (l.id) }
                        td data-col="report" { (l.report.as_str()) " " (l.target) }
                        td data-col="range" { (l.range.as_deref().unwrap_or("all days")) }
                        td data-col="password" { @if l.password { "yes" } @else { "no" } }
                        td data-col="expires" { (utc_seconds(l.expires_at_ms)) }
                        td data-col="status" { (status(l)) }
                        td {
                            @if status(l) == "live" {
                                form method="post" action=(format!("/shares/{}/revoke", l.id)) {
                                    button { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}
