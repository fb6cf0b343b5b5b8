//! The spacepulse server: a JSON API under `/api/v1` for the four roles (operator, analyst,
//! official account, advertiser), analysts' SQL, and account and token administration.
//!
//! Reports read the jobs' metric tables through the query crate's session. The session is
//! reopened when a table's Delta log changes (the jobs published), and report responses are
//! cached until then.

mod auth;
mod error;
mod reports;
mod sql;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use lake::registry::Registry;
use lake::tables::Lake;
use query::guard::Limits;
use query::tz::ReportTz;

pub use error::ApiError;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub lake: Lake,
    /// The registry file; `<lake>/_registry.sqlite` when `None`.
    pub registry: Option<PathBuf>,
    /// The report time zone (the one the jobs ran in).
    pub tz: ReportTz,
    /// Analysts' SQL limits.
    pub sql_limits: Limits,
    /// The longest any request may take before a 503.
    pub request_timeout: Duration,
}

impl Options {
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            registry: None,
            tz: ReportTz::default(),
            sql_limits: Limits::default(),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// What every handler shares.
pub struct AppState {
    pub options: Options,
    pub registry: Mutex<Registry>,
    pub view: view::LakeView,
}

pub type State = Arc<AppState>;

/// Opens the registry and the lake's tables.
pub async fn state(options: Options) -> Result<State, ApiError> {
    let path = Registry::path_for(&options.lake, options.registry.as_deref())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let registry = Registry::open(&path).map_err(|e| ApiError::internal(e.to_string()))?;
    let view = view::LakeView::open(options.lake.clone(), options.sql_limits).await?;
    Ok(Arc::new(AppState {
        options,
        registry: Mutex::new(registry),
        view,
    }))
}

/// Every route.
pub fn router(state: State) -> Router {
    let timeout = state.options.request_timeout;
    let api = Router::new()
        .route("/me", get(auth::me))
        .route("/sql", post(sql::sql))
        .route("/platform/activity", get(reports::activity))
        .route("/platform/uploads", get(reports::uploads))
        .route(
            "/accounts",
            get(auth::list_accounts).post(auth::add_account),
        )
        .route("/accounts/{id}", get(auth::get_account))
        .route("/accounts/{id}/state", post(auth::set_state))
        .route("/accounts/{id}/followers", get(reports::followers))
        .route("/accounts/{id}/campaigns", get(reports::campaigns))
        .route("/campaigns/{id}/funnel", get(reports::funnel))
        .route("/campaigns/{id}/launch", get(reports::launch))
        .route("/advertisers/{id}/report", get(reports::advertiser))
        .route("/tokens", get(auth::list_tokens).post(auth::issue_token))
        .route("/tokens/{id}", delete(auth::revoke_token))
        .fallback(error::not_found);
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .nest("/api/v1", api)
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(axum::middleware::from_fn(move |req, next| {
            error::with_timeout(timeout, req, next)
        }))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    options: Options,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ApiError> {
    let state = state(options).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ApiError::internal(format!("--listen {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    ready(addr);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}
