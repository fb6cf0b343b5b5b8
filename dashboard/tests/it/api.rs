//! The API through the router (`tower::ServiceExt::oneshot`) over a lake the ingester and
//! the jobs made: every role and tenant against every endpoint, the reports' numbers, the
//! operators' administration, analysts' SQL.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::fixture::fixture;

const REPORTS: &[&str] = &[
    "/api/v1/platform/activity",
    "/api/v1/platform/uploads",
    "/api/v1/accounts/xiaomi/followers",
    "/api/v1/accounts/xiaomi/campaigns",
    "/api/v1/campaigns/redmi-launch/funnel",
    "/api/v1/campaigns/redmi-launch/launch",
    "/api/v1/advertisers/adv1/report",
    "/api/v1/accounts",
    "/api/v1/tokens",
];

/// Who may read each report: everyone else gets 403 or 404 and no data.
fn allowed(uri: &str, who: &str) -> bool {
    match who {
        "operator" => true,
        "analyst" => uri.contains("/platform/"),
        "xiaomi" => uri.contains("xiaomi") || uri.contains("redmi-launch"),
        "adv1" => uri.contains("adv1"),
        _ => false,
    }
}

#[tokio::test]
async fn every_role_and_tenant_sees_only_its_own() {
    let f = fixture().await;
    for uri in REPORTS {
        for who in [
            "operator", "analyst", "xiaomi", "huawei", "pending", "adv1", "adv2",
        ] {
            let (status, body) = f.json(uri, who).await;
            // A tenant's page (an account, campaign or advertiser in the path) is not found
            // by whoever may not see it, exactly as one that does not exist; the pending
            // owner of its own is told why.
            let tenant = ["/accounts/", "/campaigns/", "/advertisers/"]
                .iter()
                .any(|t| uri.contains(t));
            if allowed(uri, who) {
                assert_eq!(status, StatusCode::OK, "{who} {uri}: {body}");
            } else if tenant && who != "pending" {
                assert_eq!(status, StatusCode::NOT_FOUND, "{who} {uri}: {body}");
                let unknown = uri
                    .replace("xiaomi", "nobody")
                    .replace("redmi-launch", "no-launch")
                    .replace("adv1", "nobody");
                let (s, b) = f.json(&unknown, who).await;
                assert_eq!(
                    (s, &b["code"]),
                    (status, &body["code"]),
                    "{who} {unknown}: {b}"
                );
            } else {
                assert!(
                    status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                    "{who} {uri}: {status} {body}"
                );
                let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
                assert_eq!(
                    keys,
                    ["code", "error"],
                    "{who} {uri}: data in a refusal: {body}"
                );
            }
        }
        // No token, a made-up token.
        let (status, _, body) = f.call("GET", uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    }
    let (status, body) = f
        .json("/api/v1/accounts/newbrand/followers", "pending")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"].as_str().unwrap().contains("pending"),
        "{body}"
    );
    // Another tenant's data is not found, exactly as a tenant that does not exist.
    let (s1, b1) = f.json("/api/v1/accounts/huawei/followers", "xiaomi").await;
    let (s2, _) = f.json("/api/v1/accounts/nobody/followers", "xiaomi").await;
    assert_eq!(
        (s1, s2),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND),
        "{b1}"
    );
    let (s, _) = f.json("/api/v1/campaigns/p-launch/launch", "xiaomi").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = f.json("/api/v1/nothing-here", "operator").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

/// Operators see where the pipeline stands: every source partition the lake covers, and every
/// job's tables caught up with the events table the fixture's jobs ran over.
#[tokio::test]
async fn the_status_shows_partitions_and_jobs_caught_up() {
    let f = fixture().await;
    let (s, status) = f.json("/api/v1/status", "operator").await;
    assert_eq!(s, StatusCode::OK, "{status}");
    let version = status["events_version"].as_i64().unwrap();
    let partitions = status["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 1, "{status}");
    let p = &partitions[0];
    assert!(p["source"].as_str().unwrap().starts_with("file/"), "{p}");
    let lines = std::fs::read_to_string(f.dir.path().join("events.ndjson"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(
        p["events"].as_u64().unwrap() + p["rejected"].as_u64().unwrap(),
        lines,
        "{p}"
    );
    assert_eq!(p["covered_offset"].as_u64(), Some(lines - 1), "{p}");
    assert!(p["last_commit_at"].is_string(), "{p}");
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(
        jobs.len(),
        lake::tables::METRIC_TABLES.len() - 1,
        "{status}"
    );
    for j in jobs {
        assert_eq!(j["events_version_seen"].as_i64(), Some(version), "{j}");
        assert_eq!(j["versions_behind"], 0, "{j}");
        assert!(j["last_commit_at"].is_string(), "{j}");
    }
    let (s, _) = f.json("/api/v1/status", "analyst").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// Authenticated answers are never stored by a cache; CSV cells a spreadsheet would evaluate
/// are text.
#[tokio::test]
async fn reports_are_not_cached_and_csv_cells_are_not_formulas() {
    let f = fixture().await;
    for uri in REPORTS {
        let req = Request::get(*uri)
            .header("authorization", format!("Bearer {}", f.tokens["operator"]))
            .body(Body::empty())
            .unwrap();
        let res = f.app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.headers()["cache-control"], "no-store", "{uri}");
    }
    let (s, ct, body) = f
        .call(
            "GET",
            "/api/v1/advertisers/adv2/report?format=csv",
            Some("adv2"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let csv = String::from_utf8(body).unwrap();
    assert!(csv.contains("'=HYPERLINK"), "{csv}");
    assert!(
        !csv.lines().any(|l| l
            .split(',')
            .any(|c| c.trim_start_matches('"').starts_with('='))),
        "{csv}"
    );
}

#[tokio::test]
async fn reports_carry_the_jobs_numbers() {
    let f = fixture().await;
    let (_, launch) = f
        .json("/api/v1/campaigns/redmi-launch/launch", "xiaomi")
        .await;
    let milestones: Vec<(i64, i64)> = launch["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["after_seconds"].as_i64().unwrap(),
                m["users"].as_i64().unwrap(),
            )
        })
        .collect();
    // First reservations at +0.5 s, +5 s, +30 s, +2 h.
    assert_eq!(
        milestones,
        [
            (1, 1),
            (10, 2),
            (60, 3),
            (600, 3),
            (1800, 3),
            (3600, 3),
            (86400, 4)
        ]
    );
    assert_eq!(launch["curve"].as_array().unwrap().len(), 3600);
    // Complete up to the newest event (the lake came from a file: whole once committed, no
    // stream watermark), 12:00 in Shanghai, less the allowed minute of lateness: the first
    // hour's milestones are final, +24 h is provisional.
    assert_eq!(launch["complete_up_to"], "2015-04-28T11:59:00+08:00");
    assert_eq!(launch["allowed_lateness_seconds"], 60);
    let provisional: Vec<bool> = launch["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["provisional"].as_bool().unwrap())
        .collect();
    assert_eq!(
        provisional,
        [false, false, false, false, false, false, true]
    );
    assert_eq!(launch["provisional_from_second"], 3600);
    // +24 h is still open: a forecast from the complete first hour, its interval around it.
    let fc = &launch["forecast"];
    assert_eq!(fc["from_second"], 3600, "{fc}");
    assert_eq!(fc["observed"], 3, "{fc}");
    let (low, point, high) = (
        fc["low"].as_f64().unwrap(),
        fc["users_24h"].as_f64().unwrap(),
        fc["high"].as_f64().unwrap(),
    );
    assert!(3.0 <= low && low <= point && point <= high, "{fc}");
    assert_eq!(fc["interval"], "80 %");
    let (_, funnel) = f
        .json("/api/v1/campaigns/redmi-launch/funnel", "xiaomi")
        .await;
    let total: Vec<i64> = funnel["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["breakdown"] == "total")
        .map(|r| r["users"].as_i64().unwrap())
        .collect();
    assert_eq!(total, [5, 4, 1]);
    let (_, followers) = f
        .json("/api/v1/accounts/xiaomi/followers?range=7d", "xiaomi")
        .await;
    assert_eq!(followers["tz"], "Asia/Shanghai");
    assert_eq!(followers["newest_day"], "2015-04-28");
    assert_eq!(followers["complete_up_to"], "2015-04-28T11:59:00+08:00");
    let row = &followers["rows"][0];
    // The day ends after the report is complete: it may still change.
    assert_eq!(row["provisional"], true);
    assert_eq!(
        (
            row["follows"].as_i64(),
            row["unfollows"].as_i64(),
            row["followers"].as_i64()
        ),
        (Some(3), Some(1), Some(2))
    );
    let (_, ads) = f.json("/api/v1/advertisers/adv1/report", "adv1").await;
    assert_eq!(ads["totals"]["impressions"], 3);
    assert_eq!(ads["totals"]["clicks"], 1);
    assert_eq!(ads["totals"]["unique_reach_approx"], 2.0);
    // Exact beside the estimate; frequency from the exact reach; money in units.
    assert_eq!(ads["totals"]["unique_reach"], 2);
    assert_eq!(ads["totals"]["frequency"], 1.5);
    assert_eq!(ads["totals"]["currency"], "CNY");
    assert_eq!(
        (ads["totals"]["spend"].as_f64().unwrap() * 100.0).round(),
        ads["totals"]["spend_cents"].as_f64().unwrap()
    );
    assert_eq!(ads["ads"][0]["ad_id"], "a1");
    assert_eq!(ads["ads"][0]["unique_reach"], 2);
    assert!(
        ads["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ad_id"] == "a1")
    );
    // CSV export of the same report.
    let (s, ct, csv) = f
        .call(
            "GET",
            "/api/v1/accounts/xiaomi/followers?format=csv",
            Some("xiaomi"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/csv"));
    let csv = String::from_utf8(csv).unwrap();
    assert!(
        csv.starts_with("day,follows,unfollows,net,followers"),
        "{csv}"
    );
    assert!(csv.contains("2015-04-28,3,1,2,2"), "{csv}");
    // Bad parameters are named.
    let (s, b) = f
        .json("/api/v1/platform/activity?range=year", "analyst")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("range"), "{b}");
    let (s, b) = f
        .json("/api/v1/platform/activity?from=28-04-2015", "analyst")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("from"), "{b}");
}

#[tokio::test]
async fn operators_verify_accounts_and_manage_tokens() {
    let f = fixture().await;
    let (s, _) = f
        .json("/api/v1/accounts/newbrand/followers", "pending")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, b) = f
        .call(
            "POST",
            "/api/v1/accounts/newbrand/state",
            Some("operator"),
            Some((
                "application/json",
                json!({"state": "verified", "reason": "papers"}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (s, _) = f
        .json("/api/v1/accounts/newbrand/followers", "pending")
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, acct) = f.json("/api/v1/accounts/newbrand", "operator").await;
    let audit = acct["audit"].as_array().unwrap();
    assert_eq!(audit.last().unwrap()["reason"], "papers");
    assert!(
        audit.last().unwrap()["actor"]
            .as_str()
            .unwrap()
            .starts_with("ops")
    );
    // A tenant cannot verify itself.
    let (s, _, _) = f
        .call(
            "POST",
            "/api/v1/accounts/xiaomi/state",
            Some("xiaomi"),
            Some((
                "application/json",
                json!({"state": "verified", "reason": "me"}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Issue a token over the API, use it, revoke it.
    let (s, _, b) = f
        .call(
            "POST",
            "/api/v1/tokens",
            Some("operator"),
            Some((
                "application/json",
                json!({"role": "analyst", "account_id": "bi"}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let issued: Value = serde_json::from_slice(&b).unwrap();
    let secret = issued["token"].as_str().unwrap().to_string();
    let call = |secret: String| {
        let app = f.app.clone();
        async move {
            let req = Request::get("/api/v1/me")
                .header("authorization", format!("Bearer {secret}"))
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };
    assert_eq!(call(secret.clone()).await, StatusCode::OK);
    let (_, list, _) = f
        .call("GET", "/api/v1/tokens", Some("operator"), None)
        .await;
    assert_eq!(list, "application/json");
    let (s, _, _) = f
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{}", issued["info"]["id"].as_str().unwrap()),
            Some("operator"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(call(secret).await, StatusCode::UNAUTHORIZED);
    // Bad bodies get JSON errors naming the problem.
    let (s, ct, b) = f
        .call(
            "POST",
            "/api/v1/accounts",
            Some("operator"),
            Some(("application/json", "{\"id\": 1}".into())),
        )
        .await;
    assert_eq!(
        (s, ct.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "application/json")
    );
    assert!(String::from_utf8_lossy(&b).contains("id"));
    let (s, _, b) = f
        .call(
            "POST",
            "/api/v1/accounts",
            Some("operator"),
            Some((
                "application/json",
                json!({"id": "x", "kind": "brand"}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("official, advertiser, staff"));
    // The registry's refusals by who must act: one mapping from its class to the status.
    for (method, uri, body, status, code) in [
        (
            "POST",
            "/api/v1/accounts",
            json!({"id": "xiaomi", "kind": "official"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "POST",
            "/api/v1/accounts/xiaomi/state",
            json!({"state": "verified", "reason": "again"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "POST",
            "/api/v1/accounts/nobody/state",
            json!({"state": "verified", "reason": "checked"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/tokens",
            json!({"role": "official", "account_id": "nobody"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/tokens",
            json!({"role": "official", "account_id": "adv1"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (s, _, b) = f
            .call(
                method,
                uri,
                Some("operator"),
                Some(("application/json", body.to_string())),
            )
            .await;
        let b: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!((s, b["code"].as_str()), (status, Some(code)), "{uri} {b}");
    }
}

#[tokio::test]
async fn analysts_sql_in_every_format_and_refusals() {
    let f = fixture().await;
    let q = "SELECT event_id, user_id FROM events_dedup WHERE type = 'reserve' ORDER BY event_id";
    let (s, ct, nd) = f
        .call(
            "POST",
            "/api/v1/sql",
            Some("analyst"),
            Some(("text/plain", q.into())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&nd));
    assert_eq!(ct, "application/x-ndjson");
    let rows: Vec<Value> = String::from_utf8(nd)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    let (_, _, j) = f
        .call(
            "POST",
            "/api/v1/sql",
            Some("operator"),
            Some((
                "application/json",
                json!({"sql": q, "format": "json"}).to_string(),
            )),
        )
        .await;
    let j: Vec<Value> = serde_json::from_slice(&j).unwrap();
    assert_eq!(j, rows);
    let (_, ct, csv) = f
        .call(
            "POST",
            "/api/v1/sql?format=csv",
            Some("analyst"),
            Some(("text/plain", q.into())),
        )
        .await;
    assert!(ct.starts_with("text/csv"));
    let csv = String::from_utf8(csv).unwrap();
    let ids: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let want: Vec<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, want);
    let (_, ct, ipc) = f
        .call(
            "POST",
            "/api/v1/sql?format=arrow",
            Some("analyst"),
            Some(("text/plain", q.into())),
        )
        .await;
    assert_eq!(ct, "application/vnd.apache.arrow.stream");
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 5);
    // Tenants have no SQL.
    for who in ["xiaomi", "adv1"] {
        let (s, _, _) = f
            .call(
                "POST",
                "/api/v1/sql",
                Some(who),
                Some(("text/plain", q.into())),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    for bad in [
        "DROP TABLE events",
        "SELECT 1; DELETE FROM events",
        "COPY events TO '/tmp/x'",
        "WITH a AS (SELECT 1) INSERT INTO events SELECT * FROM events",
    ] {
        let (s, ct, b) = f
            .call(
                "POST",
                "/api/v1/sql",
                Some("analyst"),
                Some(("text/plain", bad.into())),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{bad}");
        assert_eq!(ct, "application/json");
        let b: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(b["code"], "forbidden_statement", "{b}");
    }
    let (s, _, b) = f
        .call(
            "POST",
            "/api/v1/sql",
            Some("analyst"),
            Some(("text/plain", "SELECT * FROM range(200000)".into())),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8_lossy(&b).contains("row limit"));
    let (s, _, b) = f
        .call(
            "POST",
            "/api/v1/sql",
            Some("analyst"),
            Some(("text/plain", "SELECT nope FROM events".into())),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("nope"));

    // Every query left an audit record, newest first, which operators (only) list.
    let (s, _) = f.json("/api/v1/sql/audit", "analyst").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, me) = f.json("/api/v1/me", "analyst").await;
    let token = me["token_id"].as_str().unwrap();
    let (s, log) = f
        .json(
            &format!("/api/v1/sql/audit?token={token}&limit=3"),
            "operator",
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let records = log["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{log}");
    let newest = &records[0];
    assert_eq!(newest["sql_text"], "SELECT nope FROM events");
    assert_eq!(newest["outcome"], "invalid_query");
    assert_eq!(newest["rows"], Value::Null);
    assert_eq!(newest["account_id"], "bi");
    assert_eq!(newest["role"], "analyst");
    assert_eq!(newest["sql_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(records[1]["outcome"], "row_limit");
    assert!(records.iter().all(|r| r["token_id"] == token));
    let (_, all) = f.json("/api/v1/sql/audit", "operator").await;
    let ok = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["sql_text"] == q)
        .unwrap_or_else(|| panic!("no record of {q}: {all}"));
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["rows"], 5);
    let (s, _) = f.json("/api/v1/sql/audit?limit=0", "operator").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// Which callers may get a 2xx from `path` (an OpenAPI template) with `id` filled in:
/// `own` when the id is the caller's own account, campaign or advertiser.
fn may_call(method: &str, path: &str, who: &str, own: bool) -> bool {
    let staff = who == "operator" || who == "analyst";
    if path == "/healthz" {
        return true;
    }
    if path == "/api/v1/me" {
        return true;
    }
    if who == "operator" {
        return true;
    }
    if path.starts_with("/api/v1/platform/") || path == "/api/v1/sql" {
        return staff;
    }
    // A verified tenant lists its own share links (a link id no one made is a 404 to all).
    if path == "/api/v1/shares" {
        return ["xiaomi", "huawei", "adv1", "adv2"].contains(&who);
    }
    // A verified tenant's own reports; the pending brand's are refused with 403 (it is told
    // why), never answered.
    let report = path.ends_with("/followers")
        || path.ends_with("/campaigns")
        || path.ends_with("/funnel")
        || path.ends_with("/launch")
        || path.ends_with("/report")
        || path.ends_with("/revisions");
    let tenant = match path.split('/').nth(3) {
        Some("accounts" | "campaigns") => who == "xiaomi" || who == "huawei",
        Some("advertisers") => who == "adv1" || who == "adv2",
        _ => false,
    };
    // A tenant's own record and its audit log.
    let record = path == "/api/v1/accounts/{id}" && method == "GET";
    (report || record) && tenant && own
}

/// Every route in the OpenAPI description × no token and every role × the tenant's own id,
/// another tenant's and an unknown one: never a 5xx, nothing without a token (but
/// `/healthz`), no 2xx to a caller who may not see it, every refusal a JSON error without
/// data. A route added to the API is covered the day it is described.
#[tokio::test]
async fn every_described_route_refuses_whoever_may_not_call_it() {
    let f = fixture().await;
    let (_, spec) = f.json("/api/v1/openapi.json", "operator").await;
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            for fill in [
                ["xiaomi", "redmi-launch", "adv1"],
                ["huawei", "p-launch", "adv2"],
                ["nobody", "no-launch", "nobody"],
            ] {
                // The tenant the path's id belongs to.
                let owner = match (path.split('/').nth(3), fill[1]) {
                    (Some("campaigns"), "redmi-launch") => "xiaomi",
                    (Some("campaigns"), "p-launch") => "huawei",
                    (Some("campaigns"), _) => "",
                    (Some("advertisers"), _) => fill[2],
                    _ => fill[0],
                };
                let uri = match path.split('/').nth(3) {
                    Some("campaigns") => path.replace("{id}", fill[1]),
                    Some("advertisers") => path.replace("{id}", fill[2]),
                    Some("tokens") => path.replace("{id}", "tok_nonexistent"),
                    Some("shares") => path.replace("{id}", "shr_nonexistent"),
                    _ => path.replace("{id}", fill[0]),
                }
                .replace("{campaign}", fill[1]);
                let body = match (method.as_str(), path.as_str()) {
                    ("GET" | "DELETE", _) => None,
                    (_, "/api/v1/sql") => Some(("text/plain", "SELECT 1 AS one".to_string())),
                    _ => Some(("application/json", "{}".to_string())),
                };
                for who in [
                    None,
                    Some("operator"),
                    Some("analyst"),
                    Some("xiaomi"),
                    Some("huawei"),
                    Some("pending"),
                    Some("adv1"),
                    Some("adv2"),
                ] {
                    let (status, ct, bytes) = f.call(&method, &uri, who, body.clone()).await;
                    let what = format!("{method} {uri} as {who:?}: {status}");
                    checked += 1;
                    assert!(
                        !status.is_server_error(),
                        "{what}: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                    let Some(who) = who else {
                        if path != "/healthz" {
                            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                        }
                        continue;
                    };
                    let known = fill[0] != "nobody";
                    if method == "GET"
                        && known
                        && !path.contains("/live")
                        && !path.contains("/shares/")
                        && may_call(&method, path, who, owner == who)
                    {
                        assert!(status.is_success(), "{what}: refused");
                    }
                    if status.is_success() {
                        assert!(
                            may_call(&method, path, who, owner == who),
                            "{what}: answered"
                        );
                    } else if !may_call(&method, path, who, owner == who) {
                        assert!(
                            [StatusCode::FORBIDDEN, StatusCode::NOT_FOUND].contains(&status),
                            "{what}"
                        );
                        assert!(ct.starts_with("application/json"), "{what}: {ct}");
                        let e: Value = serde_json::from_slice(&bytes).unwrap();
                        let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
                        assert_eq!(keys, ["code", "error"], "{what}: data in a refusal: {e}");
                    }
                }
            }
        }
    }
    assert!(checked > 500, "{checked}");
    let (s, _, _) = f.call("GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
}

/// A late reservation for a launch whose first hour was already complete: the next job run
/// records each complete milestone it moved (not +24 h, still open) with the figures before
/// and after and why; the campaign's owner reads them in the API and on the page (and in its
/// account's revisions), another brand gets a 404, CSV has the same rows, a bad limit is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_revise_complete_figures_and_say_why() {
    use crate::fixture::{LAUNCH_MS, line};
    let f = fixture().await;
    let (s, none) = f
        .json("/api/v1/campaigns/redmi-launch/revisions", "xiaomi")
        .await;
    assert_eq!(s, StatusCode::OK, "{none}");
    assert_eq!(none["revisions"], json!([]), "{none}");

    let lake = lake::tables::Lake::new(&f.dir.path().join("lake").to_string_lossy()).unwrap();
    let late = f.dir.path().join("late.ndjson");
    std::fs::write(
        &late,
        line(
            "late-1",
            LAUNCH_MS + 3_000,
            6,
            "reserve",
            json!({"campaign_id": "redmi-launch"}),
        ) + "\n",
    )
    .unwrap();
    crate::fixture::ingest_file(&lake, &late).await;
    crate::fixture::run_jobs(&lake).await;

    // The server looks at the lake's logs at most every 250 ms (dashboard::view): asked again
    // until its view has moved on to the run's commits, for at most 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (s, got) = loop {
        let (s, got) = f
            .json("/api/v1/campaigns/redmi-launch/revisions", "xiaomi")
            .await;
        if got["revisions"] != json!([]) || std::time::Instant::now() > deadline {
            break (s, got);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(s, StatusCode::OK, "{got}");
    let mut seen: Vec<(i64, f64, f64, String)> = got["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["table_name"], "launch_milestones", "{r}");
            assert_eq!(r["metric"], "users", "{r}");
            assert_eq!(r["reason"], "late events", "{r}");
            assert_eq!(r["day"], Value::Null, "{r}");
            (
                r["key"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("after_seconds=")
                    .unwrap()
                    .parse()
                    .unwrap(),
                r["before"].as_f64().unwrap(),
                r["after"].as_f64().unwrap(),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort_by_key(|r| r.0);
    // The reservation at +3 s moves every milestone from +10 s on; +1 s stays, +24 h is
    // provisional and not a revision.
    let want: Vec<(i64, f64, f64, String)> =
        [(10, 2.0), (60, 3.0), (600, 3.0), (1800, 3.0), (3600, 3.0)]
            .into_iter()
            .map(|(a, b)| {
                (
                    a,
                    b,
                    b + 1.0,
                    format!(
                        "+1 user at {} into campaign redmi-launch after late events",
                        match a {
                            10 => "+10 s",
                            60 => "+1 min",
                            600 => "+10 min",
                            1800 => "+30 min",
                            _ => "+1 h",
                        }
                    ),
                )
            })
            .collect();
    assert_eq!(seen, want, "{got}");

    // The brand's own account lists its campaigns' revisions; another brand sees none of them.
    let (_, account) = f.json("/api/v1/accounts/xiaomi/revisions", "xiaomi").await;
    assert_eq!(
        account["revisions"].as_array().unwrap().len(),
        5,
        "{account}"
    );
    let (s, _) = f
        .json("/api/v1/campaigns/redmi-launch/revisions", "huawei")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, theirs) = f.json("/api/v1/accounts/huawei/revisions", "huawei").await;
    assert_eq!(theirs["revisions"], json!([]), "{theirs}");
    let (_, limited) = f
        .json(
            "/api/v1/campaigns/redmi-launch/revisions?limit=2",
            "operator",
        )
        .await;
    assert_eq!(limited["revisions"].as_array().unwrap().len(), 2);
    let (s, bad) = f
        .json("/api/v1/campaigns/redmi-launch/revisions?limit=0", "xiaomi")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("limit"), "{bad}");

    let (s, ct, csv) = f
        .call(
            "GET",
            "/api/v1/campaigns/redmi-launch/revisions?format=csv",
            Some("xiaomi"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(
        csv.lines().next().unwrap().contains("before,after"),
        "{csv}"
    );

    // The page, as the brand's browser opens it.
    let login = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={}", f.tokens["xiaomi"])))
        .unwrap();
    let res = f.app.clone().oneshot(login).await.unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let req = Request::get("/campaigns/redmi-launch")
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    let res = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("+1 user at +10 min into campaign redmi-launch after late events"),
        "{page}"
    );
}

/// The campaign report over a range: the funnel of the users who came in it (the `day`
/// breakdown summed, rates recomputed), the campaign's exact reach over the range (daily
/// bitmaps unioned) with its HLL++ estimate and error, reach per day; a range with no days is
/// empty, a bad one a 400; the page has the range presets and the reach.
#[tokio::test]
async fn the_campaign_report_takes_a_range() {
    let f = fixture().await;
    let (s, all) = f
        .json("/api/v1/campaigns/redmi-launch/funnel", "xiaomi")
        .await;
    assert_eq!(s, StatusCode::OK, "{all}");
    // Users 1-5 viewed the page on 2015-04-28 (Shanghai): the campaign's reach.
    assert_eq!(all["reach"]["reach"], 5, "{all}");
    assert_eq!(all["reach"]["reach_approx"], 5.0, "{all}");
    assert!(
        all["reach"]["estimator"]
            .as_str()
            .unwrap()
            .starts_with("HyperLogLog++"),
        "{all}"
    );
    assert_eq!(
        all["daily"],
        json!([{"day": "2015-04-28", "reach": 5, "new_users": 5, "provisional": true}]),
        "{all}"
    );
    assert_eq!(all["range_rows"], Value::Null);
    let total: Vec<(i64, i64)> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["breakdown"] == "total")
        .map(|r| (r["step"].as_i64().unwrap(), r["users"].as_i64().unwrap()))
        .collect();
    assert_eq!(total.len(), 3);

    let (s, week) = f
        .json("/api/v1/campaigns/redmi-launch/funnel?range=7d", "xiaomi")
        .await;
    assert_eq!(s, StatusCode::OK, "{week}");
    assert_eq!(
        (&week["from"], &week["to"]),
        (&json!("2015-04-22"), &json!("2015-04-28"))
    );
    let ranged: Vec<(i64, i64)> = week["range_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["step"].as_i64().unwrap(), r["users"].as_i64().unwrap()))
        .collect();
    assert_eq!(ranged, total, "{week}");
    let second = &week["range_rows"][1];
    assert_eq!(
        second["conversion_from_previous"].as_f64().unwrap(),
        total[1].1 as f64 / total[0].1 as f64
    );
    assert_eq!(
        second["drop_off"].as_i64().unwrap(),
        total[0].1 - total[1].1
    );
    assert_eq!(week["reach"]["reach"], 5);

    let (s, none) = f
        .json(
            "/api/v1/campaigns/redmi-launch/funnel?from=2015-04-29&to=2015-05-03",
            "xiaomi",
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{none}");
    assert_eq!(none["range_rows"], json!([]), "{none}");
    assert_eq!(none["reach"]["reach"], 0, "{none}");
    assert_eq!(none["daily"], json!([]), "{none}");
    for bad in [
        "range=9d",
        "from=2015-04-30&to=2015-04-28",
        "from=yesterday",
    ] {
        let (s, e) = f
            .json(
                &format!("/api/v1/campaigns/redmi-launch/funnel?{bad}"),
                "xiaomi",
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
    let (s, ct, csv) = f
        .call(
            "GET",
            "/api/v1/campaigns/redmi-launch/funnel?range=30d&format=csv",
            Some("xiaomi"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/csv"));
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("step,step_type,users,conversion_from_previous"),
        "{csv}"
    );
    assert_eq!(lines.len(), 4, "{csv}");
}
