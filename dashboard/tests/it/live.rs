//! Live peaks from a broker (librdkafka's mock cluster here; the end-to-end tests use Tansu):
//! the consumer reads from the newest offsets, each event_id counts once, invalid messages
//! are tallied, and the browser's stream carries the counters.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use http_body_util::BodyExt;
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::fixture::{Fixture, fixture};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn produce(brokers: &str, lines: Vec<String>) {
    let text = lines.join("\n") + "\n";
    datasets::produce::produce_lines(brokers, "events", &[], std::io::Cursor::new(text))
        .await
        .unwrap();
}

async fn get(app: &axum::Router, uri: &str, token: &str) -> (StatusCode, Value) {
    let req = Request::get(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// The live stream's messages, as the browser reads them.
struct Frames {
    body: axum::body::BodyDataStream,
    buf: String,
}

impl Frames {
    async fn open(app: &axum::Router, token: &str) -> Self {
        let req = Request::get("/api/v1/live/stream")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Frames {
            body: res.into_body().into_data_stream(),
            buf: String::new(),
        }
    }

    /// The next snapshot (one a second); the bound only ends a failing test.
    async fn next(&mut self) -> Value {
        let read = async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let frame: String = self.buf.drain(..end + 2).collect();
                    if let Some(data) = frame.strip_prefix("data: ") {
                        return serde_json::from_str(data.trim()).unwrap();
                    }
                    continue;
                }
                let chunk = self.body.next().await.expect("the stream ended").unwrap();
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("no snapshot for 30 s")
    }

    async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..60 {
            let snap = self.next().await;
            if done(&snap) {
                return snap;
            }
        }
        panic!("60 snapshots and the live stream never showed it");
    }
}

/// The fixture's lake served with live peaks from `mock`'s `events` topic.
fn live_options(
    f: &Fixture,
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> dashboard::Options {
    let lake = lake::tables::Lake::new(&f.dir.path().join("lake").to_string_lossy()).unwrap();
    let mut options = dashboard::Options::new(lake);
    options.live = Some(dashboard::live::LiveOptions {
        brokers: mock.bootstrap_servers(),
        topic: "events".into(),
        group: "live-test".into(),
        overrides: Vec::new(),
    });
    options
}

async fn live_fixture() -> (
    Fixture,
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    axum::Router,
) {
    let f = fixture().await;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("events", 2, 1).unwrap();
    let options = live_options(&f, &mock);
    let state = dashboard::state(options).await.unwrap();
    let connected = dashboard::live::connect(state.live.clone().unwrap())
        .await
        .unwrap();
    tokio::spawn(connected.run(std::future::pending()));
    let app = dashboard::router(state);
    (f, mock, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_counts_what_arrives_once_per_event_id() {
    let (f, mock, app) = live_fixture().await;
    let brokers = mock.bootstrap_servers();
    let op = f.tokens["operator"].clone();

    // The consumer starts at the newest offsets: produce a marker each second until one is
    // seen, so what follows is certainly read.
    let mut frames = Frames::open(&app, &op).await;
    let mut n = 0;
    loop {
        let snap = frames.next().await;
        if snap["events_total"].as_u64().unwrap() > 0 {
            break;
        }
        n += 1;
        assert!(n < 60, "the live consumer never saw an event");
        let t = now_ms();
        produce(
            &brokers,
            vec![json!({"event_id": format!("warm{n}"), "ts": t, "user_id": 1, "type": "app_open", "platform": "ios"}).to_string()],
        )
        .await;
    }

    // 20 uploads of 3 photos each, every one sent twice (a producer retry), 10 reservers of
    // the launch (one reserves twice), and two messages that are not events.
    let t = now_ms();
    let mut lines = Vec::new();
    for i in 0..20 {
        let e = json!({"event_id": format!("up{i}"), "ts": t, "user_id": 100 + i, "type": "photo_upload", "platform": "android", "photos": 3}).to_string();
        lines.push(e.clone());
        lines.push(e);
    }
    for u in 0..10u64 {
        lines.push(json!({"event_id": format!("r{u}"), "ts": t + 10, "user_id": 500 + u, "type": "reserve", "platform": "ios", "campaign_id": "live-launch"}).to_string());
    }
    lines.push(json!({"event_id": "r-again", "ts": t + 20, "user_id": 500, "type": "reserve", "platform": "ios", "campaign_id": "live-launch"}).to_string());
    lines.push("not json".to_string());
    lines
        .push(json!({"event_id": "x", "ts": t, "type": "app_open", "platform": "ios"}).to_string());
    produce(&brokers, lines).await;

    let snap = frames
        .until(|s| {
            s["consumer"]["rejected"].as_u64() == Some(2)
                && s["launches"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x["campaign_id"] == "live-launch"))
        })
        .await;
    assert_eq!(snap["consumer"]["duplicates"], 20, "{snap}");
    let launch = snap["launches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["campaign_id"] == "live-launch")
        .unwrap();
    assert_eq!(launch["users"], 10, "{launch}");
    assert_eq!(launch["milestones"][0]["after_seconds"], 1);
    assert_eq!(launch["milestones"][0]["users"], 10, "{launch}");
    assert!(
        snap["active_users"]["last_minute"].as_u64().unwrap() >= 30,
        "{snap}"
    );

    // The series holds each upload's photos once.
    let (_, series) = get(&app, "/api/v1/live/series?seconds=600", &op).await;
    let photos: u64 = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["photos"].as_u64().unwrap())
        .sum();
    assert_eq!(photos, 60);
    let (s, curve) = get(&app, "/api/v1/live/launches/live-launch", &op).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(curve["curve"].as_array().unwrap().last().unwrap(), 10);
    let (s, _) = get(&app, "/api/v1/live/series?seconds=0", &op).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Tenants and analysts do not see the live view.
    for who in ["analyst", "xiaomi", "adv1"] {
        let (s, body) = get(&app, "/api/v1/live", &f.tokens[who]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who}: {body}");
    }
    // The metrics carry the consumer's counts.
    let req = Request::get("/metrics")
        .header("authorization", format!("Bearer {op}"))
        .body(Body::empty())
        .unwrap();
    let text = app
        .clone()
        .oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("spacepulse_live_enabled 1"), "{text}");
    assert!(text.contains("spacepulse_live_rejected_total 2"), "{text}");
    assert!(
        text.contains("spacepulse_live_duplicates_total 20"),
        "{text}"
    );
}

#[tokio::test]
async fn without_brokers_the_live_view_says_how_to_turn_it_on() {
    let f = fixture().await;
    let (s, body) = f.json("/api/v1/live", "operator").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "live_off");
    assert!(
        body["error"].as_str().unwrap().contains("--brokers"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_live_streams() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture().await;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("events", 1, 1).unwrap();
    let options = live_options(&f, &mock);
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashboard::serve(
        options,
        "127.0.0.1:0".parse().unwrap(),
        async move {
            let _ = stop_rx.await;
        },
        move |a| {
            let _ = addr_tx.send(a);
        },
    ));
    let addr = addr_rx.await.unwrap();
    let mut browser = tokio::net::TcpStream::connect(addr).await.unwrap();
    browser
        .write_all(
            format!(
                "GET /api/v1/live/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                f.tokens["operator"]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The stream is open: its headers and first snapshot arrive.
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("data: ") {
        let n = browser.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the first snapshot: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    // Shut down with the tab still open: the server stops and the stream ends.
    stop_tx.send(()).unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), browser.read_to_end(&mut rest))
        .await
        .expect("the stream did not end")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
}

/// A token revoked while its live stream is open: the stream ends within 2 s (and a new one
/// is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_its_open_stream() {
    let (f, _mock, app) = live_fixture().await;
    let op = f.tokens["operator"].clone();
    let mut frames = Frames::open(&app, &op).await;
    frames.next().await;
    let (_, me) = get(&app, "/api/v1/me", &op).await;
    let id = me["token_id"].as_str().unwrap().to_string();
    let lake = lake::tables::Lake::new(&f.dir.path().join("lake").to_string_lossy()).unwrap();
    let registry =
        lake::registry::Registry::open(&lake::registry::Registry::path_for(&lake, None).unwrap())
            .unwrap();
    assert!(registry.revoke_token(&id).unwrap());
    tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(chunk) = frames.body.next().await {
            chunk.unwrap();
        }
    })
    .await
    .expect("the stream outlived its revoked token by 2 s");
    let (status, _) = get(&app, "/api/v1/live", &op).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
