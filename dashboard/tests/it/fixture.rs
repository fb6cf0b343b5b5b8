//! A lake the ingester and the jobs made from a small fixture, a registry with an account
//! and a token per role, and the router over them.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lake::registry::{AccountKind, Campaign, Registry, Role, VerificationState};
use lake::tables::Lake;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const LAUNCH_MS: i64 = 1_430_186_400_000; // 2015-04-28T02:00:00Z, 10:00 in Shanghai

pub fn line(id: &str, ts_ms: i64, user: u64, kind: &str, extra: Value) -> String {
    let mut e =
        json!({"event_id": id, "ts": ts_ms, "user_id": user, "type": kind, "platform": "android"});
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e.to_string()
}

/// Events for two official accounts, two campaigns and two advertisers.
fn events() -> String {
    let mut lines = Vec::new();
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("e{n}")
    };
    // Xiaomi's launch: 5 users view; 4 reserve at +0.5 s, +5 s, +30 s, +2 h; 1 preorders.
    for u in 1..=5u64 {
        lines.push(line(
            &id(),
            LAUNCH_MS,
            u,
            "page_view",
            json!({"campaign_id": "redmi-launch"}),
        ));
    }
    for (u, after) in [(1u64, 500i64), (2, 5_000), (3, 30_000), (4, 7_200_000)] {
        lines.push(line(
            &id(),
            LAUNCH_MS + after,
            u,
            "reserve",
            json!({"campaign_id": "redmi-launch"}),
        ));
    }
    lines.push(line(
        &id(),
        LAUNCH_MS + 60_000,
        1,
        "preorder",
        json!({"campaign_id": "redmi-launch", "amount_cents": 99900}),
    ));
    lines.push(line(
        &id(),
        LAUNCH_MS + 100,
        9,
        "reserve",
        json!({"campaign_id": "p-launch"}),
    ));
    // Followers: xiaomi gains 3 and loses 1, huawei gains 1.
    for u in [1u64, 2, 3] {
        lines.push(line(
            &id(),
            LAUNCH_MS,
            u,
            "follow",
            json!({"account_id": "xiaomi"}),
        ));
    }
    lines.push(line(
        &id(),
        LAUNCH_MS + 1000,
        3,
        "unfollow",
        json!({"account_id": "xiaomi"}),
    ));
    lines.push(line(
        &id(),
        LAUNCH_MS,
        7,
        "follow",
        json!({"account_id": "huawei"}),
    ));
    // Ads: adv1 shows 3 impressions to 2 users, 1 click; adv2 one impression.
    for u in [1u64, 1, 2] {
        lines.push(line(
            &id(),
            LAUNCH_MS,
            u,
            "ad_impression",
            json!({"advertiser_id": "adv1", "ad_id": "a1", "amount_cents": 10}),
        ));
    }
    lines.push(line(
        &id(),
        LAUNCH_MS + 5,
        1,
        "ad_click",
        json!({"advertiser_id": "adv1", "ad_id": "a1", "amount_cents": 50}),
    ));
    lines.push(line(
        &id(),
        LAUNCH_MS,
        8,
        "ad_impression",
        json!({"advertiser_id": "adv2", "ad_id": "b1", "amount_cents": 10}),
    ));
    // An ad id a spreadsheet would run as a formula (ids come from events).
    lines.push(line(
        &id(),
        LAUNCH_MS,
        8,
        "ad_impression",
        json!({"advertiser_id": "adv2", "ad_id": "=HYPERLINK(\"http://evil.test\")", "amount_cents": 10}),
    ));
    lines.join("\n") + "\n"
}

/// Backfills `file` into the lake.
pub async fn ingest_file(lake: &Lake, file: &std::path::Path) {
    let mut writer = ingest::writer::LakeWriter::open(lake, Default::default())
        .await
        .unwrap();
    ingest::backfill::run(&mut writer, file, |_| {})
        .await
        .unwrap();
}

/// Every job, incrementally, in the default time zone.
pub async fn run_jobs(lake: &Lake) {
    jobs::run(
        &jobs::Options {
            lake: lake.clone(),
            registry: None,
            tz: Default::default(),
            from: None,
            to: None,
            full: false,
            jobs: Vec::new(),
            memory: None,
        },
        &jobs::Quiet,
    )
    .await
    .unwrap();
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub app: axum::Router,
    pub tokens: std::collections::HashMap<&'static str, String>,
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(&dir.path().join("lake").to_string_lossy()).unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events()).unwrap();
    ingest_file(&lake, &file).await;
    let registry = Registry::open(&Registry::path_for(&lake, None).unwrap()).unwrap();
    for (id, owner) in [("redmi-launch", "xiaomi"), ("p-launch", "huawei")] {
        registry
            .add_campaign(&Campaign::with_defaults(id, owner, LAUNCH_MS))
            .unwrap();
    }
    let mut tokens = std::collections::HashMap::new();
    for (name, id, kind, role, verified) in [
        (
            "xiaomi",
            "xiaomi",
            AccountKind::Official,
            Role::Official,
            true,
        ),
        (
            "huawei",
            "huawei",
            AccountKind::Official,
            Role::Official,
            true,
        ),
        (
            "pending",
            "newbrand",
            AccountKind::Official,
            Role::Official,
            false,
        ),
        (
            "adv1",
            "adv1",
            AccountKind::Advertiser,
            Role::Advertiser,
            true,
        ),
        (
            "adv2",
            "adv2",
            AccountKind::Advertiser,
            Role::Advertiser,
            true,
        ),
        ("operator", "ops", AccountKind::Staff, Role::Operator, true),
        ("analyst", "bi", AccountKind::Staff, Role::Analyst, true),
    ] {
        registry.add_account(id, kind, "", "test").unwrap();
        if verified && kind != AccountKind::Staff {
            registry
                .set_state(id, VerificationState::Verified, "test", "checked")
                .unwrap();
        }
        tokens.insert(name, registry.issue_token(role, id, "").unwrap().secret);
    }
    drop(registry);
    run_jobs(&lake).await;
    let state = dashboard::state(dashboard::Options::new(lake))
        .await
        .unwrap();
    Fixture {
        dir,
        app: dashboard::router(state),
        tokens,
    }
}

impl Fixture {
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        who: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (StatusCode, String, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(w) = who {
            req = req.header("authorization", format!("Bearer {}", self.tokens[w]));
        }
        let req = match body {
            Some((ct, b)) => req.header("content-type", ct).body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, ct, bytes)
    }

    pub async fn json(&self, uri: &str, who: &str) -> (StatusCode, Value) {
        let (s, ct, b) = self.call("GET", uri, Some(who), None).await;
        assert!(ct.starts_with("application/json"), "{uri}: {ct}");
        (s, serde_json::from_slice(&b).unwrap())
    }
}
