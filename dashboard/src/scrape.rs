//! `/metrics` on its own, for a process that serves nothing else (`spacepulse ingest
//! --metrics-listen`, split from `run`): the same text format and the same tokens as the
//! dashboard's, an operator's or a scraper's, checked against the lake's registry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lake::registry::{Registry, Role};

use crate::ApiError;
use crate::metrics::ExtraMetrics;

#[derive(Clone)]
struct Scrape {
    registry: PathBuf,
    metrics: Arc<dyn ExtraMetrics>,
}

/// Serves `GET /metrics` (an operator's or a scraper's token) and `GET /healthz` on `listen`
/// until `shutdown`; `ready` gets the bound address.
pub async fn serve_metrics(
    registry: PathBuf,
    metrics: Arc<dyn ExtraMetrics>,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ApiError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ApiError::internal(format!("--metrics-listen {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { ApiError::not_found("this endpoint serves /metrics and /healthz") })
        .with_state(Scrape { registry, metrics });
    ready(addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn scrape(AxState(s): AxState<Scrape>, headers: HeaderMap) -> Result<Response, ApiError> {
    let secret = crate::auth::bearer(&headers).ok_or_else(|| {
        ApiError::unauthorized("a token is required: send Authorization: Bearer <token>")
    })?;
    let path = s.registry.clone();
    let found = tokio::task::spawn_blocking(move || {
        Registry::open(&path).and_then(|r| r.authenticate(&secret))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let (token, _) = found.ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
    if !matches!(token.role, Role::Operator | Role::Scraper) {
        return Err(ApiError::forbidden(format!(
            "this needs a token of role operator or scraper; yours is {}",
            token.role
        )));
    }
    let mut out = String::new();
    s.metrics.render(&mut out);
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response())
}
