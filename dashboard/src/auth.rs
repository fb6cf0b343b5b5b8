//! Who is calling (a bearer token or the login cookie), what each role may see, and the
//! operators' account and token administration.

use axum::Json;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use lake::registry::{Account, AccountKind, Role, TokenInfo, VerificationState};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::State;
use crate::error::{ApiError, JsonBody};

/// The cookie the login page sets (HttpOnly, SameSite=Strict).
pub const COOKIE: &str = "spacepulse_token";

/// The caller: a live token and its account.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenInfo,
    pub account: Account,
}

fn bearer(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        return v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(|t| t.trim().to_string());
    }
    for v in parts.headers.get_all(axum::http::header::COOKIE) {
        for pair in v.to_str().ok()?.split(';') {
            if let Some((k, t)) = pair.trim().split_once('=')
                && k == COOKIE
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
        let Some(secret) = bearer(parts) else {
            return Err(ApiError::unauthorized(
                "a token is required: send Authorization: Bearer <token>",
            ));
        };
        let found = state
            .registry
            .lock()
            .expect("not poisoned")
            .authenticate(&secret)?;
        match found {
            Some((token, account)) => Ok(Caller { token, account }),
            None => Err(ApiError::unauthorized("unknown or revoked token")),
        }
    }
}

impl Caller {
    pub fn role(&self) -> Role {
        self.token.role
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
    /// itself, once verified. Another tenant's id answers 404, as an unknown one does.
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
            _ => Err(ApiError::forbidden(format!(
                "this is a report for a {role} account; your token's role is {}",
                self.role()
            ))),
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
    Ok(Json(
        state.registry.lock().expect("not poisoned").accounts()?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewAccount {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

#[utoipa::path(post, path = "/accounts", tag = "accounts", request_body = NewAccount, responses((status = 201, description = "The new account, pending verification"), (status = 400, description = "A bad id or kind, or the account exists"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn add_account(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
    JsonBody(body): JsonBody<NewAccount>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    caller.require(&[Role::Operator])?;
    let kind: AccountKind = body.kind.parse()?;
    let account = state.registry.lock().expect("not poisoned").add_account(
        &body.id,
        kind,
        &body.name,
        &caller.actor(),
    )?;
    Ok((StatusCode::CREATED, Json(account)))
}

/// An account with its audit log: operators for any account, a tenant for its own.
#[utoipa::path(get, path = "/accounts/{id}", tag = "accounts", params(("id" = String, Path, description = "Account id")), responses((status = 200, description = "The account and its audit log"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn get_account(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let own = caller.account.id == id && caller.role() != Role::Analyst;
    if !own {
        caller.require(&[Role::Operator])?;
    }
    let registry = state.registry.lock().expect("not poisoned");
    let Some(account) = registry.account(&id)? else {
        return Err(ApiError::not_found(format!("no account {id:?}")));
    };
    Ok(Json(
        json!({"account": account, "audit": registry.audit(&id)?}),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewState {
    pub state: String,
    pub reason: String,
}

/// Verifies, rejects or revokes an account (operators).
#[utoipa::path(post, path = "/accounts/{id}/state", tag = "accounts", params(("id" = String, Path, description = "Account id")), request_body = NewState, responses((status = 200, description = "The account in its new state (audited)"), (status = 400, description = "A bad state or an empty reason"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this"), (status = 404, description = "No such resource, or another tenant's")), security(("bearer" = []), ("cookie" = [])))]
pub async fn set_state(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewState>,
) -> Result<Json<Account>, ApiError> {
    caller.require(&[Role::Operator])?;
    let to: VerificationState = body.state.parse()?;
    let registry = state.registry.lock().expect("not poisoned");
    if registry.account(&id)?.is_none() {
        return Err(ApiError::not_found(format!("no account {id:?}")));
    }
    Ok(Json(registry.set_state(
        &id,
        to,
        &caller.actor(),
        &body.reason,
    )?))
}

#[utoipa::path(get, path = "/tokens", tag = "tokens", responses((status = 200, description = "Every token, never a secret"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn list_tokens(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(&[Role::Operator])?;
    Ok(Json(state.registry.lock().expect("not poisoned").tokens()?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    pub role: String,
    pub account_id: String,
    #[serde(default)]
    pub label: String,
}

/// Issues a token (operators); the response is the only place its secret appears.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken, responses((status = 201, description = "{token, info}: the secret, shown this once"), (status = 400, description = "A bad role or an unknown account"), (status = 401, description = "No token, or an unknown or revoked one"), (status = 403, description = "The token's role may not do this")), security(("bearer" = []), ("cookie" = [])))]
pub async fn issue_token(
    caller: Caller,
    axum::extract::State(state): axum::extract::State<State>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Operator])?;
    let role: Role = body.role.parse()?;
    let token = state.registry.lock().expect("not poisoned").issue_token(
        role,
        &body.account_id,
        &body.label,
    )?;
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
    if state
        .registry
        .lock()
        .expect("not poisoned")
        .revoke_token(&id)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no live token {id:?}")))
    }
}
