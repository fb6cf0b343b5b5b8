//! The live peaks over HTTP (operators): the snapshot, a Server-Sent Events stream of it
//! (one message a second), and the per-second series.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State as AxState};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use lake::registry::Role;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::wrappers::WatchStream;

use crate::State;
use crate::auth::Caller;
use crate::error::{ApiError, QueryParams};
use crate::live::Live;

/// The live view, or a 404 that says how to turn it on.
pub fn live_of(state: &State) -> Result<&Arc<Live>, ApiError> {
    state.live.as_ref().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "live_off",
            "live peaks are off: start the server with --brokers HOST:PORT --topic NAME",
        )
    })
}

/// The current snapshot.
#[utoipa::path(get, path = "/live", tag = "live",
    responses((status = 200, description = "Counters of the last second, today's peaks, active users, launches in progress"),
        (status = 404, description = "The server runs without --brokers")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn snapshot(
    caller: Caller,
    AxState(state): AxState<State>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Operator])?;
    let live = live_of(&state)?;
    Ok(Json(serde_json::to_value(&*live.latest()).expect("json")))
}

/// The snapshot once a second as Server-Sent Events (`data:` is the snapshot's JSON).
#[utoipa::path(get, path = "/live/stream", tag = "live",
    responses((status = 200, description = "text/event-stream: one snapshot a second", content_type = "text/event-stream"),
        (status = 404, description = "The server runs without --brokers")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn stream(
    caller: Caller,
    AxState(state): AxState<State>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(&[Role::Operator])?;
    let live = live_of(&state)?;
    // The stream ends when the server shuts down, so a graceful shutdown never waits on an
    // open tab.
    let mut closing = state.closing.subscribe();
    let shutdown = Box::pin(async move {
        let _ = closing.wait_for(|c| *c).await;
    });
    // It also ends within a second of its token, account or login session being revoked.
    let state = state.clone();
    let revoked = Box::pin(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if !caller.is_live(&state).await {
                break;
            }
        }
    });
    let events = WatchStream::new(live.subscribe())
        .map(|snap| Ok(Event::default().data(serde_json::to_string(&*snap).expect("json"))))
        .take_until(futures::future::select(shutdown, revoked));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// Seconds of history up to the stream clock (1 to 86400; default 3600).
    seconds: Option<i64>,
}

/// Events and photos per second up to the stream clock.
#[utoipa::path(get, path = "/live/series", tag = "live", params(SeriesParams),
    responses((status = 200, description = "[{second, at, events, photos}], oldest first"),
        (status = 400, description = "A bad parameter"),
        (status = 404, description = "The server runs without --brokers")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn series(
    caller: Caller,
    AxState(state): AxState<State>,
    QueryParams(p): QueryParams<SeriesParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Operator])?;
    let live = live_of(&state)?;
    let seconds = p.seconds.unwrap_or(3600);
    if !(1..=crate::live::HISTORY).contains(&seconds) {
        return Err(ApiError::bad_request(format!(
            "seconds: expected 1 to {}, got {seconds}",
            crate::live::HISTORY
        )));
    }
    let rows: Vec<Value> = live
        .series(seconds)
        .into_iter()
        .map(|(s, e, p)| json!({"second": s, "at": live.stamp(s), "events": e, "photos": p}))
        .collect();
    Ok(Json(json!({"series": rows})))
}

/// A running launch: users who reserved, cumulative, per second since the first reservation.
#[utoipa::path(get, path = "/live/launches/{campaign}", tag = "live",
    params(("campaign" = String, Path, description = "The campaign id")),
    responses((status = 200, description = "{campaign_id, started_at, curve: [users at +0 s, +1 s, ...]}"),
        (status = 404, description = "No reservations for it in the last 24 hours, or live peaks are off")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn launch(
    caller: Caller,
    AxState(state): AxState<State>,
    Path(campaign): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Operator])?;
    let live = live_of(&state)?;
    let Some((start, curve)) = live.launch_curve(&campaign) else {
        return Err(ApiError::not_found(format!(
            "no reservations for campaign {campaign:?} in the last 24 hours"
        )));
    };
    Ok(Json(
        json!({"campaign_id": campaign, "started_at": live.stamp(start), "curve": curve}),
    ))
}
