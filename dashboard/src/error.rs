//! Errors as JSON bodies: `{"error": "...", "code": "..."}` with a 4xx or 5xx status.

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if !self.status.is_server_error() {
            let body = serde_json::json!({"error": self.message, "code": self.code});
            return (self.status, axum::Json(body)).into_response();
        }
        // A server error's detail (a query, a path, a library's message) goes to the log
        // only; the body says where to find it.
        let id = log_server_error(self.status, &self.message);
        let message = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            format!("internal error: the server's log has the details under request id {id}")
        } else {
            self.message
        };
        let body = serde_json::json!({"error": message, "code": self.code, "request_id": id});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Logs a server error's detail under the request's id, which it returns: the only thing of
/// it a caller is shown.
pub(crate) fn log_server_error(status: StatusCode, detail: &str) -> String {
    let id = request_id().unwrap_or_else(|| "-".into());
    tracing::error!(status = %status, request_id = %id, error = %detail, "request failed");
    id
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request this task answers, if it is one.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(String::clone).ok()
}

/// A fresh request id: 16 hex digits, distinct within the process and unlikely to repeat
/// across processes.
fn new_request_id() -> String {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seed = *SEED.get_or_init(|| {
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:016x}", seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The 500 for a request whose handler panicked (logged with what the panic said).
fn panicked(panic: &(dyn std::any::Any + Send)) -> Response {
    let what = query::guard::panic_text(panic);
    ApiError::internal(format!("the handler panicked: {what}")).into_response()
}

/// A panic in a route's handler answers 500, beneath the request metrics (which then count
/// it); [`with_request_id`] is the backstop for the layers above.
pub async fn catch_panic(req: Request, next: Next) -> Response {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| panicked(&*panic))
}

/// Gives each request an id (a proxy's `x-request-id` if it is a plain token of at most 64
/// characters, else a fresh one): the response's `x-request-id`, the log lines' `request_id`
/// and the body of any 5xx. A panic in the request's handler answers 500 for it alone, logged
/// under that id; the server goes on serving.
pub async fn with_request_id(req: Request, next: Next) -> Response {
    use futures::FutureExt;
    use tracing::Instrument;
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(new_request_id, str::to_string);
    let span = tracing::info_span!("request", request_id = %id);
    let answer = REQUEST_ID
        .scope(
            id.clone(),
            std::panic::AssertUnwindSafe(next.run(req)).catch_unwind(),
        )
        .instrument(span)
        .await;
    let mut response = match answer {
        Ok(r) => r,
        Err(panic) => REQUEST_ID.sync_scope(id.clone(), || panicked(&*panic)),
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

impl ApiError {
    /// The one mapping from an error's class to a status: an internal error is a 500 (its
    /// detail logged, never shown), whatever it says.
    pub fn classed(class: lake::Class, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(class.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, class.code(), message)
    }
}

impl From<lake::Error> for ApiError {
    fn from(e: lake::Error) -> Self {
        use lake::Classify;
        match e {
            // The registry's messages are written for the caller.
            lake::Error::Registry { class, message } => ApiError::classed(class, message),
            other => ApiError::classed(other.class(), other.to_string()),
        }
    }
}

impl From<query::guard::QueryError> for ApiError {
    fn from(e: query::guard::QueryError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError::new(status, e.code(), e.to_string())
    }
}

pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

/// Answers 503 when a request takes longer than `limit`.
pub async fn with_timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {limit:?}"),
        )
        .into_response(),
    }
}

/// `axum::Json` whose rejections are JSON errors too.
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(ApiError::new(e.status(), "bad_request", e.body_text())),
        }
    }
}

/// `axum::extract::Query` whose rejections are JSON errors too.
pub struct QueryParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(ApiError::new(e.status(), "bad_request", e.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn answer(app: &axum::Router, req: Request) -> (StatusCode, String, serde_json::Value) {
        let r = app.clone().oneshot(req).await.unwrap();
        let id = r.headers()[REQUEST_ID_HEADER].to_str().unwrap().to_string();
        let status = r.status();
        let bytes = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        (
            status,
            id,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn a_panic_answers_500_for_its_request_alone_and_5xx_bodies_are_opaque() {
        let app = axum::Router::new()
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("crafted input reached an index");
                    }
                    "unreachable"
                }),
            )
            .route(
                "/fail",
                get(|| async { ApiError::internal("SELECT secret FROM t: the planner said no") }),
            )
            .route(
                "/ok",
                get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
            )
            .route_layer(axum::middleware::from_fn(catch_panic))
            .layer(axum::middleware::from_fn(with_request_id));
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let (status, id, body) = answer(&app, get("/boom")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["request_id"], id.as_str());
        assert!(!body.to_string().contains("crafted"), "{body}");
        let (status, id2, body) = answer(&app, get("/fail")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_ne!(id, id2, "each request its own id");
        assert!(body["error"].as_str().unwrap().contains(&id2), "{body}");
        assert!(!body.to_string().contains("secret"), "{body}");
        // The server goes on; a proxy's id is kept, a strange one replaced.
        let mut req = get("/ok");
        req.headers_mut()
            .insert(REQUEST_ID_HEADER, "proxy-1.a_b".parse().unwrap());
        let (status, id, body) = answer(&app, req).await;
        assert_eq!((status, id.as_str()), (StatusCode::OK, "proxy-1.a_b"));
        assert_eq!(body["ok"], true);
        let mut req = get("/ok");
        req.headers_mut()
            .insert(REQUEST_ID_HEADER, "a b<script>".parse().unwrap());
        let (_, id, _) = answer(&app, req).await;
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
}
