//! The spacepulse server: a JSON API under `/api/v1` for the roles (operator, analyst,
//! official account, advertiser, and a scraper that reads only `/metrics`), analysts' SQL, account and token administration, the web
//! pages, live peaks and Prometheus metrics, from one binary.
//!
//! Reports read the jobs' metric tables through the query crate's session. The session is
//! reopened when a table's Delta log changes (the jobs published), and report responses are
//! cached until then; the pages render the same reports with server-drawn SVG charts. With
//! `--brokers`, a live consumer ([`live`]) reads the events topic from its newest offsets and
//! feeds per-second counters that the operators' live page receives once a second (SSE).

mod auth;
mod charts;
mod error;
pub mod live;
mod live_api;
pub mod metrics;
mod model;
mod pages;
mod reports;
mod revisions;
mod rows;
pub mod scrape;
mod shares;
mod sql;
mod status;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use lake::registry::Registry;
use lake::tables::Lake;
use query::guard::Limits;
use query::tz::ReportTz;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use reports::check_report_query;

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
    /// Live peaks: the topic to read (`--brokers`), or none.
    pub live: Option<live::LiveOptions>,
    /// The server's origin as browsers reach it (`https://dash.example.com`), when it is
    /// behind a proxy or on https: login cookies are then `Secure` and `__Host-` prefixed,
    /// and requests must come from it.
    pub public_url: Option<String>,
    /// Believe a proxy's `X-Forwarded-Proto: https`.
    pub trust_forwarded_proto: bool,
    /// A login session ends after this long unused, and at the latest after `session_max`.
    pub session_idle: Duration,
    pub session_max: Duration,
    /// More metrics for `/metrics` (the pipeline's, under `spacepulse run`).
    pub extra_metrics: Option<Arc<dyn metrics::ExtraMetrics>>,
    /// How late an event may arrive after the partition watermark has passed its time:
    /// reports are complete up to the watermark less this.
    pub allowed_lateness: Duration,
}

impl Options {
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            registry: None,
            tz: ReportTz::default(),
            sql_limits: Limits::default(),
            request_timeout: Duration::from_secs(60),
            live: None,
            public_url: None,
            trust_forwarded_proto: false,
            session_idle: Duration::from_secs(2 * 3600),
            session_max: Duration::from_secs(12 * 3600),
            extra_metrics: None,
            allowed_lateness: Duration::from_secs(60),
        }
    }
}

/// The registry as handlers call it: on the runtime's blocking pool, one call at a time.
/// SQLite blocks (up to its busy timeout while another process writes), and the async
/// threads that serve every other request must not.
pub struct RegistryHandle(Arc<Mutex<Registry>>);

impl RegistryHandle {
    pub fn new(registry: Registry) -> Self {
        Self(Arc::new(Mutex::new(registry)))
    }

    /// Runs `f` with the registry off the async threads.
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Registry) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Into<ApiError> + Send + 'static,
    {
        let registry = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            // A call that panicked left no half-done state behind: SQLite's transactions
            // are whole or absent.
            let r = registry.lock().unwrap_or_else(|e| e.into_inner());
            f(&r)
        })
        .await
        .map_err(|e| ApiError::internal(format!("a registry call ended: {e}")))?
        .map_err(Into::into)
    }
}

/// What every handler shares.
pub struct AppState {
    pub options: Options,
    pub registry: RegistryHandle,
    pub view: view::LakeView,
    /// The live counters when `--brokers` was given.
    pub live: Option<Arc<live::Live>>,
    pub http_metrics: metrics::HttpMetrics,
    /// Set when the server shuts down: endless responses (the live stream) end with it, so
    /// a graceful shutdown does not wait on an open browser tab.
    pub closing: tokio::sync::watch::Sender<bool>,
}

pub type State = Arc<AppState>;

/// Opens the registry and the lake's tables.
pub async fn state(options: Options) -> Result<State, ApiError> {
    let path = Registry::path_for(&options.lake, options.registry.as_deref())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let registry = Registry::open(&path).map_err(|e| ApiError::internal(e.to_string()))?;
    let view = view::LakeView::open(options.lake.clone(), options.sql_limits, options.tz).await?;
    let live = options.live.clone().map(|o| live::Live::new(o, options.tz));
    Ok(Arc::new(AppState {
        options,
        registry: RegistryHandle::new(registry),
        view,
        live,
        http_metrics: metrics::HttpMetrics::default(),
        closing: tokio::sync::watch::channel(false).0,
    }))
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "spacepulse",
        description = "Reports for official accounts, advertisers, analysts and operators; \
                       analysts' SQL; live peaks; accounts and tokens. Errors are JSON \
                       {\"error\", \"code\"} with a 4xx or 5xx status."
    ),
    modifiers(&Security)
)]
struct ApiDoc;

/// The API's routes with their OpenAPI description: both come from the same handlers, so
/// the description matches the routes.
fn api() -> (Router<State>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(auth::me))
        .routes(routes!(sql::sql))
        .routes(routes!(sql::audit_log))
        .routes(routes!(status::status))
        .routes(routes!(reports::activity))
        .routes(routes!(reports::uploads))
        .routes(routes!(auth::list_accounts, auth::add_account))
        .routes(routes!(auth::get_account))
        .routes(routes!(auth::set_state))
        .routes(routes!(reports::followers))
        .routes(routes!(reports::campaigns))
        .routes(routes!(reports::funnel))
        .routes(routes!(reports::launch))
        .routes(routes!(reports::advertiser))
        .routes(routes!(revisions::platform))
        .routes(routes!(revisions::account))
        .routes(routes!(revisions::campaign))
        .routes(routes!(revisions::advertiser))
        .routes(routes!(auth::list_tokens, auth::issue_token))
        .routes(routes!(auth::revoke_token))
        .routes(routes!(shares::create, shares::list))
        .routes(routes!(shares::get, shares::revoke))
        .routes(routes!(live_api::snapshot))
        .routes(routes!(live_api::stream))
        .routes(routes!(live_api::series))
        .routes(routes!(live_api::launch));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .routes(routes!(metrics::metrics))
        .routes(routes!(healthz))
        .split_for_parts()
}

/// Liveness: no token needed.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "{\"status\": \"ok\"}")))]
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// The OpenAPI description (any valid token).
async fn openapi(_: auth::Caller, spec: Arc<serde_json::Value>) -> axum::Json<serde_json::Value> {
    axum::Json((*spec).clone())
}

/// Every route.
pub fn router(state: State) -> Router {
    let timeout = state.options.request_timeout;
    let (api, spec) = api();
    let spec = Arc::new(serde_json::to_value(&spec).expect("the OpenAPI description is JSON"));
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/assets/{file}", get(pages::assets))
        .route("/platform", get(pages::platform))
        .route("/accounts/{id}", get(pages::account))
        .route("/campaigns/{id}", get(pages::campaign))
        .route("/advertisers/{id}", get(pages::advertiser))
        .route("/admin/accounts", get(pages::admin_accounts))
        .route("/admin/pipeline", get(pages::admin_pipeline))
        .route("/admin/accounts/{id}/state", post(pages::admin_set_state))
        .route("/shares", get(shares::page).post(shares::page_create))
        .route("/shares/{id}/revoke", post(shares::page_revoke))
        .route(
            "/s/{secret}",
            get(shares::open).post(shares::open_with_password),
        )
        .route("/live", get(pages::live))
        .route("/live/hour.svg", get(pages::live_hour))
        .route("/live/launch.svg", get(pages::live_launch));
    api.merge(pages)
        .route(
            "/api/v1/openapi.json",
            get(move |caller: auth::Caller| openapi(caller, spec.clone())),
        )
        .route_layer(axum::middleware::from_fn(error::catch_panic))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::same_origin,
        ))
        .layer(axum::middleware::from_fn(auth::no_store))
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(axum::middleware::from_fn(move |req, next| {
            error::with_timeout(timeout, req, next)
        }))
        .layer(axum::middleware::from_fn(error::with_request_id))
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
    // The live consumer connects first: a wrong --brokers or --topic stops the start.
    let live = match state.live.clone() {
        Some(live) => {
            let connected = live::connect(live).await.map_err(ApiError::internal)?;
            let mut closing = state.closing.subscribe();
            Some(tokio::spawn(connected.run(async move {
                let _ = closing.wait_for(|c| *c).await;
            })))
        }
        None => None,
    };
    let closing = state.clone();
    ready(addr);
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.closing.send_replace(true);
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()));
    if let Some(live) = live {
        let _ = live.await;
    }
    result
}
