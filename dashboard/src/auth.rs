//! Who is calling (a bearer token or the login cookie), what each role may see, and the
//! operators' account and token administration.

use axum::Json;
use axum::extract::{FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::request::Parts;
use lake::registry::{Account, AccountKind, Role, TokenInfo, VerificationState};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::error::{ApiError, JsonBody};

/// The login cookie over plain http (the demo on loopback): a session's secret, never a
/// token; HttpOnly, SameSite=Strict.
pub const SESSION_COOKIE: &str = "spacepulse_session";
/// The login cookie when the server is reached over https: `Secure` too, and the `__Host-`
/// prefix binds it to this host and path `/`.
pub const SECURE_SESSION_COOKIE: &str = "__Host-spacepulse_session";
/// The cookie of earlier versions, which held the token itself: cleared, never read.
const LEGACY_COOKIE: &str = "spacepulse_token";

/// The caller: a live token and its account.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenInfo,
    pub account: Account,
    /// The login session's secret when the caller came with the cookie.
    session: Option<String>,
}

/// What a request authenticates with.
enum Credential {
    /// `Authorization: Bearer <token>` (API clients).
    Token(String),
    /// The login cookie (browsers).
    Session(String),
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    match credential(headers)? {
        Credential::Token(t) => Some(t),
        Credential::Session(_) => None,
    }
}

fn credential(headers: &HeaderMap) -> Option<Credential> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        return v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(|t| Credential::Token(t.trim().to_string()));
    }
    session_secret(headers).map(Credential::Session)
}

/// The login cookie's session secret, if the request carries one.
pub fn session_secret(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all(axum::http::header::COOKIE) {
        for pair in v.to_str().ok()?.split(';') {
            if let Some((k, t)) = pair.trim().split_once('=')
                && (k == SESSION_COOKIE || k == SECURE_SESSION_COOKIE)
            {
                return Some(t.to_string());
            }
        }
    }
    None
}

impl FromRequestParts<State> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let (found, session) = match credential(&parts.headers) {
            None => {
                return Err(ApiError::unauthorized(
                    "a token is required: send Authorization: Bearer <token>",
                ));
            }
            Some(Credential::Token(secret)) => (
                state
                    .registry
                    .call(move |r| r.authenticate(&secret))
                    .await?,
                None,
            ),
            Some(Credential::Session(secret)) => {
                let idle = state.options.session_idle.as_millis() as i64;
                let found = {
                    let secret = secret.clone();
                    state
                        .registry
                        .call(move |r| r.session(&secret, idle))
                        .await?
                };
                match found {
                    Some(found) => (Some(found), Some(secret)),
                    None => {
                        return Err(ApiError::unauthorized(
                            "the login session has ended: log in again",
                        ));
                    }
                }
            }
        };
        match found {
            Some((token, account)) => Ok(Caller {
                token,
                account,
                session,
            }),
            None => Err(ApiError::unauthorized("unknown or revoked token")),
        }
    }
}

/// Whether the request reached the server over https: its public URL is https, or (with
/// `--trust-forwarded-proto`) the proxy in front says so in `X-Forwarded-Proto`.
pub fn is_https(options: &crate::Options, headers: &HeaderMap) -> bool {
    if let Some(url) = &options.public_url {
        return url.starts_with("https://");
    }
    options.trust_forwarded_proto
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The server's own origin as a browser names it: the public URL, or the scheme and the
/// request's `Host`.
fn own_origin(options: &crate::Options, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = &options.public_url {
        return Some(url.clone());
    }
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    let scheme = if is_https(options, headers) {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// The origin (scheme, host, port) of a URL as `Origin` writes it.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| {
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        )
    })
}

/// Refuses (403) a state-changing request that a browser may have sent from another site:
/// one without a bearer token whose `Origin` (or, without one, `Referer`) is not this
/// server's, or that carries the login cookie and names no origin at all. API clients that
/// send `Authorization: Bearer` are not browsers' ambient credentials and pass.
pub async fn same_origin(
    axum::extract::State(state): axum::extract::State<State>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    let headers = req.headers();
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || headers.contains_key(axum::http::header::AUTHORIZATION) {
        return next.run(req).await;
    }
    let named = headers
        .get(axum::http::header::ORIGIN)
        .or_else(|| headers.get(axum::http::header::REFERER))
        .map(|v| v.to_str().ok().and_then(origin_of));
    let refusal = match named {
        Some(Some(origin)) => (own_origin(&state.options, headers).as_deref() != Some(&origin))
            .then(|| format!("a request from {origin} is not this server's origin")),
        Some(None) => Some("a request from an opaque origin".to_string()),
        None => session_secret(headers)
            .is_some()
            .then(|| "a request with the login cookie and no Origin or Referer".to_string()),
    };
    match refusal {
        None => next.run(req).await,
        Some(why) => ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            format!("{why}: refused, as a cross-site request could be forged (CSRF)"),
        )
        .into_response(),
    }
}

/// `Cache-Control: no-store` on every response to a request with a token or the login
/// cookie: a shared cache or the browser's history keeps no tenant's report.
pub async fn no_store(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let authenticated = credential(req.headers()).is_some();
    let mut response = next.run(req).await;
    if authenticated {
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    response
}

/// The `Set-Cookie` values that log a browser in with session `secret` for `max`.
pub fn login_cookies(secure: bool, secret: &str, max: std::time::Duration) -> Vec<String> {
    let age = max.as_secs();
    vec![
        if secure {
            format!(
                "{SECURE_SESSION_COOKIE}={secret}; Secure; HttpOnly; SameSite=Strict; Path=/; \
                 Max-Age={age}"
            )
        } else {
            format!("{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={age}")
        },
        format!("{LEGACY_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    ]
}

/// The `Set-Cookie` values that clear every login cookie.
pub fn logout_cookies() -> Vec<String> {
    vec![
        format!("{LEGACY_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        format!("{SECURE_SESSION_COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    ]
}

/// A caller with an operator's token, checked before the request's body is read: whoever
/// else calls an operator's route is refused (403) without learning what the body should be.
pub struct Operator(pub Caller);

impl FromRequestParts<State> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(&[Role::Operator])?;
        Ok(Operator(caller))
    }
}

impl Caller {
    pub fn role(&self) -> Role {
        self.token.role
    }

    /// Whether the caller may still call: its token not revoked, its account not revoked or
    /// rejected, its login session (if it came with one) not ended. An error reading the
    /// registry counts as no.
    pub async fn is_live(&self, state: &State) -> bool {
        let idle = state.options.session_idle.as_millis() as i64;
        let (session, token) = (self.session.clone(), self.token.id.clone());
        state
            .registry
            .call(move |r| match &session {
                Some(secret) => r.session(secret, idle).map(|s| s.is_some()),
                None => r.token_in_force(&token).map(|t| t.is_some()),
            })
            .await
            .unwrap_or(false)
    }

    /// The caller's role must be one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role()) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::forbidden(format!(
            "this needs a token of role {}; yours is {}",
            names.join(" or "),
            self.role()
        )))
    }

    /// Access to tenant `id`'s reports (an official account's with `Role::Official`, an
    /// advertiser's with `Role::Advertiser`): operators see every tenant; a tenant sees only
    /// itself, once verified. Another tenant's id, or any id to a caller of another role,
    /// answers 404, as an unknown one does.
    pub fn tenant(&self, role: Role, id: &str) -> Result<(), ApiError> {
        match self.role() {
            Role::Operator => Ok(()),
            r if r == role => {
                if self.account.id != id {
                    return Err(ApiError::not_found(format!("no {role} account {id:?}")));
                }
                match self.account.state {
                    VerificationState::Verified => Ok(()),
                    s => Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "not_verified",
                        format!(
                            "account {id:?} is {s}: reports are for verified accounts \
                             (an operator verifies them)"
                        ),
                    )),
                }
            }
            // Another role's caller learns nothing about which accounts exist.
            _ => Err(ApiError::not_found(format!("no {role} account {id:?}"))),
        }
    }

    /// Who did it, for the audit log: the account and the token.
    pub fn actor(&self) -> String {
        format!("{} ({})", self.account.id, self.token.id)
    }
}

#[utoipa::path(get, path = "/me", tag = "tokens", responses((status = 200, description = "The caller: role, token id, account"), (status = 401, description = "No token, or an unknown or revoked one")), security(("bearer" = []), ("cookie" = [])))]
pub async fn me(caller: Caller) -> Json<Value> {
    Json(json!({
        "role": caller.role(),
        "token_id": caller.token.id,
        "account": caller.account,
    }))
}

#[utoipa::path(get, path = "/accounts", tag = "accounts", responses((status = 200, description = "Every account with its state"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn list_accounts(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
) -> Result<Json<Vec<Account>>, ApiError> {
    caller.require(&[Role::Operator])?;
    Ok(Json(state.registry.call(|r| r.accounts()).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewAccount {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// ISO 4217; CNY when absent.
    #[serde(default)]
    pub currency: Option<String>,
}

#[utoipa::path(post, path = "/accounts", tag = "accounts", request_body = NewAccount, responses((status = 201, description = "The new account, pending verification"), (status = 400, description = "A bad id or kind"), (status = 409, description = "The account exists"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn add_account(
    Operator(caller): Operator,
    axum::extract::State(state): axum::extract::State<State>,
    JsonBody(body): JsonBody<NewAccount>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    let kind: AccountKind = body.kind.parse()?;
    let actor = caller.actor();
    let account = state
        .registry
        .call(move |r| {
            if let Some(c) = &body.currency {
                // Checked before the account exists, so a bad code adds nothing.
                lake::registry::check_currency(c)?;
            }
            let a = r.add_account(&body.id, kind, &body.name, &actor)?;
            match &body.currency {
                Some(c) if *c != a.currency => r.set_currency(&body.id, c),
                _ => Ok(a),
            }
        })
        .await?;
    Ok((StatusCode::CREATED, Json(account)))
}

/// An account with its audit log: operators for any account, a tenant for its own.
#[utoipa::path(get, path = "/accounts/{id}", tag = "accounts", params(("id" = String, Path, description = "Account id")), responses((status = 200, description = "The account and its audit log"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn get_account(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // A tenant sees its own record; anyone else but operators finds none, whether or not
    // it exists.
    let own = caller.account.id == id && caller.role() != Role::Analyst;
    if !own && caller.role() != Role::Operator {
        return Err(ApiError::not_found(format!("no account {id:?}")));
    }
    let found = state
        .registry
        .call(move |r| -> Result<_, ApiError> {
            let Some(account) = r.account(&id)? else {
                return Err(ApiError::not_found(format!("no account {id:?}")));
            };
            Ok(json!({"account": account, "audit": r.audit(&id)?}))
        })
        .await?;
    Ok(Json(found))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewState {
    pub state: String,
    pub reason: String,
}

/// Verifies, rejects or revokes an account (operators).
#[utoipa::path(post, path = "/accounts/{id}/state", tag = "accounts", params(("id" = String, Path, description = "Account id")), request_body = NewState, responses((status = 200, description = "The account in its new state (audited)"), (status = 400, description = "A bad state or an empty reason"), (status = 409, description = "The account is in that state already"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn set_state(
    Operator(caller): Operator,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewState>,
) -> Result<Json<Account>, ApiError> {
    let to: VerificationState = body.state.parse()?;
    let actor = caller.actor();
    let account = state
        .registry
        .call(move |r| r.set_state(&id, to, &actor, &body.reason))
        .await?;
    Ok(Json(account))
}

#[utoipa::path(get, path = "/tokens", tag = "tokens", responses((status = 200, description = "Every token, never a secret"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn list_tokens(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(&[Role::Operator])?;
    Ok(Json(state.registry.call(|r| r.tokens()).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    pub role: String,
    pub account_id: String,
    #[serde(default)]
    pub label: String,
}

/// Issues a token (operators); the response is the only place its secret appears.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken, responses((status = 201, description = "{token, info}: the secret, shown this once"), (status = 400, description = "A bad role, or an account of another kind"), (status = 404, description = "No such account"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn issue_token(
    _: Operator,
    axum::extract::State(state): axum::extract::State<State>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role: Role = body.role.parse()?;
    let token = state
        .registry
        .call(move |r| r.issue_token(role, &body.account_id, &body.label))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token.secret, "info": token.info})),
    ))
}

#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "Token id")), responses((status = 204, description = "Revoked"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_token(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Operator])?;
    let revoked = {
        let id = id.clone();
        state.registry.call(move |r| r.revoke_token(&id)).await?
    };
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no live token {id:?}")))
    }
}
