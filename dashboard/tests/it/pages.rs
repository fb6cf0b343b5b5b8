//! The web pages through the router: login sets the cookie, pages follow the API's tenancy,
//! the numbers on a page are the API's; the OpenAPI description matches the routes; the
//! Prometheus metrics count what was served.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::fixture::{Fixture, fixture};

struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(f: &Fixture, req: Request<Body>) -> Page {
    let res = f.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Logs in through the form; the cookie the browser would keep.
async fn login(f: &Fixture, who: &str) -> String {
    let req = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={}", f.tokens[who])))
        .unwrap();
    let p = send(f, req).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let cookie = p.headers["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    // A session, not the token.
    assert!(
        cookie.starts_with("spacepulse_session=sps_") && !cookie.contains(&f.tokens[who]),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

async fn get(f: &Fixture, uri: &str, cookie: Option<&str>) -> Page {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    send(f, req.body(Body::empty()).unwrap()).await
}

/// The text of every `<td data-col="col">` in the table with `id`.
fn column(html: &str, table: &str, col: &str) -> Vec<String> {
    let start = html
        .find(&format!("<table id=\"{table}\""))
        .unwrap_or_else(|| panic!("no table {table} in {html}"));
    let end = start + html[start..].find("</table>").unwrap();
    let marker = format!("<td data-col=\"{col}\">");
    html[start..end]
        .split(&marker)
        .skip(1)
        .map(|s| s[..s.find("</td>").unwrap()].to_string())
        .collect()
}

const PAGES: &[&str] = &[
    "/platform",
    "/accounts/xiaomi",
    "/campaigns/redmi-launch",
    "/advertisers/adv1",
    "/admin/accounts",
    "/live",
];

fn allowed(uri: &str, who: &str) -> bool {
    match who {
        "operator" => true,
        "analyst" => uri == "/platform",
        "xiaomi" => uri.contains("xiaomi") || uri.contains("redmi-launch"),
        "adv1" => uri.contains("adv1"),
        _ => false,
    }
}

#[tokio::test]
async fn pages_need_the_login_cookie_and_keep_tenants_apart() {
    let f = fixture().await;
    // No cookie: to the login page, which needs none.
    for uri in PAGES.iter().chain(&["/"]) {
        let p = get(&f, uri, None).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(p.headers["location"], "/login", "{uri}");
    }
    let p = get(&f, "/login", None).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("name=\"token\""), "{}", p.body);
    assert!(
        p.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    // A wrong token is refused on the form, with no cookie.
    let req = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("token=spt_0000"))
        .unwrap();
    let p = send(&f, req).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.headers.get("set-cookie").is_none());
    assert!(p.body.contains("Unknown or revoked token"), "{}", p.body);

    for who in [
        "operator", "analyst", "xiaomi", "huawei", "pending", "adv1", "adv2",
    ] {
        let cookie = login(&f, who).await;
        let home = get(&f, "/", Some(&cookie)).await;
        assert_eq!(home.status, StatusCode::SEE_OTHER, "{who}");
        for uri in PAGES {
            let p = get(&f, uri, Some(&cookie)).await;
            if allowed(uri, who) {
                assert_eq!(p.status, StatusCode::OK, "{who} {uri}: {}", p.body);
                assert!(p.body.contains("<main>"), "{who} {uri}");
            } else {
                assert!(
                    p.status == StatusCode::FORBIDDEN || p.status == StatusCode::NOT_FOUND,
                    "{who} {uri}: {}",
                    p.status
                );
                assert!(
                    !p.body.contains("<table") && !p.body.contains("<svg"),
                    "{who} {uri}: data on a refusal page"
                );
            }
        }
    }
    // The pending account is told why.
    let cookie = login(&f, "pending").await;
    let p = get(&f, "/accounts/newbrand", Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(p.body.contains("pending"), "{}", p.body);
    // Logging out (from the server's own origin) clears the cookie and ends the session.
    let req = Request::post("/logout")
        .header("cookie", &cookie)
        .header("host", "dash.test")
        .header("origin", "http://dash.test")
        .body(Body::empty())
        .unwrap();
    let p = send(&f, req).await;
    assert!(
        p.headers
            .get_all("set-cookie")
            .iter()
            .all(|c| c.to_str().unwrap().contains("Max-Age=0"))
    );
    let p = get(&f, "/accounts/newbrand", Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "the session ended");
}

#[tokio::test]
async fn the_campaign_page_shows_the_apis_numbers_and_charts() {
    let f = fixture().await;
    let cookie = login(&f, "xiaomi").await;
    let p = get(&f, "/campaigns/redmi-launch", Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::OK);
    let (_, launch) = f
        .json("/api/v1/campaigns/redmi-launch/launch", "xiaomi")
        .await;
    let api: Vec<String> = launch["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["users"].to_string())
        .collect();
    let page = column(&p.body, "milestones", "users");
    assert_eq!(page, api);
    assert_eq!(
        column(&p.body, "milestones", "after"),
        [
            "+1 s", "+10 s", "+1 min", "+10 min", "+30 min", "+1 h", "+24 h"
        ]
    );
    // The fixture's reservations at +0.5 s, +5 s, +30 s and +2 h.
    assert_eq!(page, ["1", "2", "3", "3", "3", "3", "4"]);
    // How fresh, and which milestone may still grow (+24 h: past the newest event).
    assert!(p.body.contains(&format!(
        "id=\"complete-up-to\">{}<",
        launch["complete_up_to"].as_str().unwrap()
    )));
    // +24 h, and the day of the campaign's reach (it ends after the newest event).
    assert_eq!(p.body.matches("<tr class=\"provisional\"").count(), 2);
    assert_eq!(column(&p.body, "campaign-daily", "reach"), ["5"]);
    assert!(
        p.body.contains("<b data-total=\"reach\">5</b>"),
        "the campaign's exact reach"
    );
    // The range presets, and a range's funnel: the users who came in it.
    for preset in ["today", "7d", "30d"] {
        assert!(
            p.body
                .contains(&format!("href=\"/campaigns/redmi-launch?range={preset}\"")),
            "{preset}"
        );
    }
    let week = get(&f, "/campaigns/redmi-launch?range=7d", Some(&cookie)).await;
    assert_eq!(week.status, StatusCode::OK);
    assert!(
        week.body
            .contains("first event in the campaign fell from 2015-04-22 to 2015-04-28"),
        "{}",
        week.body
    );
    let empty = get(
        &f,
        "/campaigns/redmi-launch?from=2015-05-01&to=2015-05-02",
        Some(&cookie),
    )
    .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("<b data-total=\"reach\">0</b>"));
    let (_, funnel) = f
        .json("/api/v1/campaigns/redmi-launch/funnel", "xiaomi")
        .await;
    let total: Vec<String> = funnel["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["breakdown"] == "total")
        .map(|r| r["users"].to_string())
        .collect();
    assert_eq!(column(&p.body, "funnel", "users"), total);
    for chart in ["launch-chart", "funnel-chart"] {
        let at = p.body.find(&format!("id=\"{chart}\"")).unwrap();
        assert!(
            p.body[at..].starts_with(&format!("id=\"{chart}\"><svg")),
            "{chart}"
        );
    }

    // The platform page: the API's DAU per day, and a CSV link that works with the cookie.
    let cookie = login(&f, "analyst").await;
    let p = get(&f, "/platform?range=30d", Some(&cookie)).await;
    let (_, activity) = f
        .json("/api/v1/platform/activity?range=30d", "analyst")
        .await;
    let dau: Vec<String> = activity["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dau"].to_string())
        .collect();
    assert!(!dau.is_empty());
    assert_eq!(column(&p.body, "activity", "dau"), dau);
    assert!(p.body.contains("Asia/Shanghai"));
    assert!(p.body.contains(&format!(
        "id=\"complete-up-to\">{}<",
        activity["complete_up_to"].as_str().unwrap()
    )));
    let csv = get(
        &f,
        "/api/v1/platform/activity?format=csv&range=30d",
        Some(&cookie),
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.body.starts_with("day,"), "{}", csv.body);
    // A bad range on a page is a 400 page, not a panic or an empty report.
    let p = get(&f, "/platform?range=1y", Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("range"), "{}", p.body);
}

#[tokio::test]
async fn operators_verify_accounts_from_the_page() {
    let f = fixture().await;
    let cookie = login(&f, "operator").await;
    let form = |cookie: &str, origin: &str, body: &'static str| {
        Request::post("/admin/accounts/newbrand/state")
            .header("cookie", cookie)
            .header("host", "dash.test")
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    // The same form posted from another site (the operator's cookie rides along): refused.
    let p = send(
        &f,
        form(&cookie, "https://evil.test", "state=verified&reason=forged"),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    let (_, acct) = f.json("/api/v1/accounts/newbrand", "operator").await;
    assert_eq!(acct["account"]["state"], "pending");
    let p = send(
        &f,
        form(
            &cookie,
            "http://dash.test",
            "state=verified&reason=papers+checked",
        ),
    )
    .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let (_, acct) = f.json("/api/v1/accounts/newbrand", "operator").await;
    assert_eq!(acct["account"]["state"], "verified");
    assert_eq!(
        acct["audit"].as_array().unwrap().last().unwrap()["reason"],
        "papers checked"
    );
    // Analysts may not.
    let cookie = login(&f, "analyst").await;
    let p = send(
        &f,
        form(&cookie, "http://dash.test", "state=revoked&reason=x"),
    )
    .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(!p.body.contains("cross-site"), "{}", p.body);
}

/// A concrete request for an OpenAPI path: its parameters filled with the fixture's ids.
fn concrete(path: &str) -> String {
    path.replace("/accounts/{id}", "/accounts/xiaomi")
        .replace("/campaigns/{id}", "/campaigns/redmi-launch")
        .replace("/advertisers/{id}", "/advertisers/adv1")
        .replace("/tokens/{id}", "/tokens/tok_nonexistent")
        .replace("{campaign}", "redmi-launch")
}

#[tokio::test]
async fn the_openapi_description_matches_the_routes() {
    let f = fixture().await;
    let (s, _, _) = f.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, spec) = f.json("/api/v1/openapi.json", "analyst").await;
    assert_eq!(s, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            // Every described operation is routed: the answer is never the router's
            // "no route" fallback.
            let (status, _, body) = f
                .call(
                    &method.to_uppercase(),
                    &concrete(path),
                    Some("operator"),
                    None,
                )
                .await;
            let body = String::from_utf8_lossy(&body);
            assert!(
                !(status == StatusCode::NOT_FOUND && body.contains("no route")),
                "{method} {path}: described but not routed"
            );
        }
    }
    assert!(operations >= 22, "{operations} operations");
    // And what is routed is described: each API route the tests above call is in the spec.
    for path in [
        "/api/v1/me",
        "/api/v1/sql",
        "/api/v1/platform/activity",
        "/api/v1/platform/uploads",
        "/api/v1/accounts",
        "/api/v1/accounts/{id}",
        "/api/v1/accounts/{id}/state",
        "/api/v1/accounts/{id}/followers",
        "/api/v1/accounts/{id}/campaigns",
        "/api/v1/campaigns/{id}/funnel",
        "/api/v1/campaigns/{id}/launch",
        "/api/v1/advertisers/{id}/report",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
        "/api/v1/live",
        "/api/v1/live/stream",
        "/api/v1/live/series",
        "/api/v1/live/launches/{campaign}",
        "/api/v1/sql/audit",
        "/api/v1/status",
        "/metrics",
        "/healthz",
    ] {
        assert!(paths.contains_key(path), "{path} is not described");
    }
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["cookie"]["name"], "spacepulse_session");
    // Request bodies have their schemas.
    assert!(
        spec["components"]["schemas"]["NewToken"].is_object(),
        "{spec}"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let f = fixture().await;
    for _ in 0..3 {
        let (s, _) = f.json("/api/v1/accounts/xiaomi/followers", "xiaomi").await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _) = f.json("/api/v1/accounts/huawei/followers", "xiaomi").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = f.call("GET", "/metrics", Some("analyst"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, ct, body) = f.call("GET", "/metrics", Some("operator"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = String::from_utf8(body).unwrap();
    let route = "route=\"/api/v1/accounts/{id}/followers\"";
    assert!(
        text.contains(&format!(
            "spacepulse_http_requests_total{{method=\"GET\",{route},status=\"200\"}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "spacepulse_http_requests_total{{method=\"GET\",{route},status=\"404\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "spacepulse_http_request_duration_seconds_count{{method=\"GET\",{route}}} 4"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "spacepulse_http_request_duration_seconds_bucket{{method=\"GET\",{route},le=\"+Inf\"}} 4"
    )));
    assert!(text.contains("spacepulse_live_enabled 0"), "{text}");
    // No token or secret is a label.
    assert!(!text.contains("spt_"), "{text}");
}

/// The advertiser's page: money in its currency's units, rates as percentages, the exact
/// unique reach beside the HLL++ estimate, each figure saying what it counts, and each ad over
/// the range; the account's page says what its followers stand on.
#[tokio::test]
async fn the_advertiser_page_reads_as_money_and_percentages() {
    let f = fixture().await;
    let cookie = login(&f, "adv1").await;
    let p = get(&f, "/advertisers/adv1", Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    // 3 impressions at 10 cents and a click at 50: CNY 0.80.
    assert!(
        p.body.contains("<b data-total=\"spend\">CNY 0.80</b>"),
        "{}",
        p.body
    );
    assert!(
        p.body.contains("<b data-total=\"ctr\">33.33 %</b>"),
        "{}",
        p.body
    );
    assert!(
        p.body.contains("<b data-total=\"unique_reach\">2</b>"),
        "{}",
        p.body
    );
    assert!(
        p.body.contains("<b data-total=\"frequency\">1.50</b>"),
        "{}",
        p.body
    );
    assert!(
        p.body.contains("impressions ÷ exact unique reach"),
        "{}",
        p.body
    );
    assert_eq!(column(&p.body, "ads-range", "ad_id"), ["a1"]);
    assert_eq!(column(&p.body, "ads-range", "unique_reach"), ["2"]);
    assert_eq!(column(&p.body, "ads", "spend"), ["CNY 0.80"]);

    let cookie = login(&f, "xiaomi").await;
    let p = get(&f, "/accounts/xiaomi", Some(&cookie)).await;
    assert!(
        p.body
            .contains("no follower baseline was imported for this account"),
        "{}",
        p.body
    );
    assert!(p.body.contains("id=\"followers-counts\""), "{}", p.body);
}

/// The campaign page: the curve's axis in one unit (minutes:seconds after the launch), CSV of
/// the funnel and of the curve, and the funnel by platform and by region as charts.
#[tokio::test]
async fn the_campaign_page_has_its_csv_and_segment_charts() {
    let f = fixture().await;
    let cookie = login(&f, "xiaomi").await;
    let p = get(&f, "/campaigns/redmi-launch", Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    for id in [
        "id=\"funnel-csv\"",
        "id=\"curve-csv\"",
        "id=\"funnel-platform-chart\"",
        "id=\"funnel-region-chart\"",
        "id=\"funnel-hour-chart\"",
        "id=\"time-to-convert-2\"",
        "id=\"forecast\"",
    ] {
        assert!(p.body.contains(id), "{id}: {}", p.body);
    }
    assert!(!p.body.contains("+1000 s"), "{}", p.body);

    let (s, ct, csv) = f
        .call(
            "GET",
            "/api/v1/campaigns/redmi-launch/funnel?format=csv",
            Some("xiaomi"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let csv = String::from_utf8(csv).unwrap();
    assert!(
        csv.starts_with("breakdown,segment,step,step_type,users"),
        "{csv}"
    );
    let (_, json) = f
        .json("/api/v1/campaigns/redmi-launch/funnel", "xiaomi")
        .await;
    assert_eq!(
        csv.lines().count() - 1,
        json["rows"].as_array().unwrap().len()
    );
    let (s, _, curve) = f
        .call(
            "GET",
            "/api/v1/campaigns/redmi-launch/launch?format=csv",
            Some("xiaomi"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let curve = String::from_utf8(curve).unwrap();
    assert!(curve.starts_with("second,new_users,users\n"), "{curve}");
    assert_eq!(curve.lines().count(), 1 + 3600);
    let (s, _, body) = f
        .call(
            "GET",
            "/api/v1/campaigns/redmi-launch/launch?format=xml",
            Some("xiaomi"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("format"));
    // Another tenant gets no CSV either.
    let (s, _, _) = f
        .call(
            "GET",
            "/api/v1/campaigns/redmi-launch/funnel?format=csv",
            Some("adv1"),
            None,
        )
        .await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND,
        "{s}"
    );
}

/// The funnel explains itself: each step's time-to-convert distribution counts its users,
/// each drop-off splits into window-closed and never-came-back, and the segments by hour of
/// the first view add up to the total.
#[tokio::test]
async fn the_funnel_explains_its_drop_off() {
    let f = fixture().await;
    let (_, funnel) = f
        .json("/api/v1/campaigns/redmi-launch/funnel", "xiaomi")
        .await;
    let rows = funnel["rows"].as_array().unwrap();
    let total: Vec<&Value> = rows.iter().filter(|r| r["breakdown"] == "total").collect();
    assert!(total.len() >= 2, "{funnel}");
    let times = funnel["time_to_convert"].as_array().unwrap();
    let mut dropped = 0;
    for r in &total[1..] {
        let step = r["step"].as_i64().unwrap();
        let bucketed: i64 = times
            .iter()
            .filter(|t| t["step"].as_i64() == Some(step))
            .map(|t| t["users"].as_i64().unwrap())
            .sum();
        assert_eq!(Some(bucketed), r["users"].as_i64(), "step {step}: {funnel}");
        let split = r["dropped_window_closed"].as_i64().unwrap()
            + r["dropped_never_came_back"].as_i64().unwrap();
        assert_eq!(Some(split), r["drop_off"].as_i64(), "{r}");
        dropped += split;
    }
    assert!(dropped > 0, "the fixture's launch loses users: {funnel}");
    for step in 1..=total.len() as i64 {
        let by_hour: i64 = rows
            .iter()
            .filter(|r| r["breakdown"] == "hour" && r["step"].as_i64() == Some(step))
            .map(|r| r["users"].as_i64().unwrap())
            .sum();
        assert_eq!(by_hour, total[step as usize - 1]["users"].as_i64().unwrap());
    }
    assert_eq!(funnel["time_zone"], "Asia/Shanghai");
}

/// Share links, tried from every role and from no login: a tenant links its own report only,
/// the link opens without a login and shows that report alone (no navigation, no other
/// account's data), a password link asks for it and refuses a wrong one, the audit log
/// records it all, and a revoked link opens no more.
#[tokio::test]
async fn a_share_link_opens_one_report_without_a_login_until_revoked() {
    let f = fixture().await;
    let post = |who: &'static str, body: Value| {
        let f = &f;
        async move {
            let (s, _, b) = f
                .call(
                    "POST",
                    "/api/v1/shares",
                    Some(who),
                    Some(("application/json", body.to_string())),
                )
                .await;
            (
                s,
                serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
            )
        }
    };
    let followers = serde_json::json!({"report": "followers", "id": "xiaomi", "range": "7d"});
    // Only the verified tenant whose report it is.
    for (who, want) in [
        ("operator", StatusCode::FORBIDDEN),
        ("analyst", StatusCode::FORBIDDEN),
        ("pending", StatusCode::FORBIDDEN),
        ("huawei", StatusCode::NOT_FOUND),
        ("adv1", StatusCode::NOT_FOUND),
    ] {
        let (s, body) = post(who, followers.clone()).await;
        assert_eq!(s, want, "{who}: {body}");
        assert!(body["error"].is_string(), "{who}: {body}");
    }
    let (s, _, _) = f
        .call(
            "POST",
            "/api/v1/shares",
            None,
            Some(("application/json", followers.to_string())),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for bad in [
        serde_json::json!({"report": "everything", "id": "xiaomi"}),
        serde_json::json!({"report": "followers", "id": "xiaomi", "range": "1y"}),
        serde_json::json!({"report": "followers", "id": "xiaomi", "expires_in_hours": 100000}),
        serde_json::json!({"report": "followers", "id": "xiaomi", "password": "short"}),
    ] {
        let (s, body) = post("xiaomi", bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    let (s, made) = post("xiaomi", followers.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let url = made["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("/s/spl_") && url.len() == "/s/spl_".len() + 64,
        "{url}"
    );
    let p = get(&f, &url, None).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("shared by <b>xiaomi</b>"), "{}", p.body);
    assert!(p.body.contains("id=\"shared-range\""), "{}", p.body);
    assert_eq!(column(&p.body, "followers", "follows"), ["3"]);
    // The report alone: no navigation, no campaigns list, no range picker, no logout.
    for absent in [
        "<nav>",
        "id=\"campaigns\"",
        "type=\"date\"",
        "/logout",
        "huawei",
    ] {
        assert!(!p.body.contains(absent), "{absent}: {}", p.body);
    }
    assert_eq!(p.headers["x-robots-tag"], "noindex, nofollow");
    assert_eq!(p.headers["cache-control"], "no-store");
    // A made-up secret finds nothing.
    let p = get(&f, &format!("/s/spl_{}", "0".repeat(64)), None).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);

    // A campaign behind a password.
    let (s, made) = post(
        "xiaomi",
        serde_json::json!({"report": "campaign", "id": "redmi-launch", "password": "board meeting"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let locked = made["url"].as_str().unwrap().to_string();
    let p = get(&f, &locked, None).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("type=\"password\""), "{}", p.body);
    assert!(!p.body.contains("<table"), "{}", p.body);
    let try_password = |pw: &str| {
        Request::post(locked.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("password={}", pw.replace(' ', "+"))))
            .unwrap()
    };
    let p = send(&f, try_password("board")).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("Wrong password") && !p.body.contains("<table"));
    let p = send(&f, try_password("board meeting")).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(
        column(&p.body, "milestones", "after").len(),
        7,
        "{}",
        p.body
    );
    assert!(!p.body.contains("format=csv"), "{}", p.body);

    // Lists: each tenant its own, operators all; the audit log of the password link.
    let (_, mine) = f.json("/api/v1/shares", "xiaomi").await;
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");
    assert!(
        mine.to_string().find("spl_").is_none(),
        "no secret in a list: {mine}"
    );
    let (_, theirs) = f.json("/api/v1/shares", "adv1").await;
    assert_eq!(theirs.as_array().unwrap().len(), 0);
    let (_, all) = f.json("/api/v1/shares", "operator").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (s, _) = f.json("/api/v1/shares", "analyst").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let locked_id = made["link"]["id"].as_str().unwrap().to_string();
    let (_, detail) = f
        .json(&format!("/api/v1/shares/{locked_id}"), "xiaomi")
        .await;
    let actions: Vec<&str> = detail["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "wrong password", "opened"]);
    let (s, _) = f
        .json(&format!("/api/v1/shares/{locked_id}"), "huawei")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Guessing: after ten wrong passwords the link checks none, the right one included, and
    // says when to come back.
    for _ in 1..lake::registry::LOCKOUT_AFTER {
        let p = send(&f, try_password("guess")).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    }
    let p = send(&f, try_password("board meeting")).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
    assert!(!p.body.contains("<table"), "{}", p.body);
    assert!(p.body.contains("Too many wrong passwords"), "{}", p.body);
    let retry: i64 = p.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");

    // Revoked: another tenant cannot, the owner can; the link opens no more.
    let link_id = all
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["report"] == "followers")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let uri = format!("/api/v1/shares/{link_id}");
    let (s, _, _) = f.call("DELETE", &uri, Some("adv1"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = f.call("DELETE", &uri, Some("xiaomi"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = f.call("DELETE", &uri, Some("xiaomi"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let p = get(&f, &url, None).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    assert!(p.body.contains("not valid"), "{}", p.body);
}

/// The operators' reconciliation page: every source partition with the lake's covered offset,
/// every metric table with the events version it has seen; refused to anyone else.
#[tokio::test]
async fn the_pipeline_page_reconciles_partitions_and_tables() {
    let f = fixture().await;
    let cookie = login(&f, "operator").await;
    let p = get(&f, "/admin/pipeline", Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let (_, status) = f.json("/api/v1/status", "operator").await;
    let partitions = status["partitions"].as_array().unwrap();
    assert!(!partitions.is_empty());
    assert_eq!(
        column(&p.body, "partitions", "covered_offset"),
        partitions
            .iter()
            .map(|x| x["covered_offset"].to_string())
            .collect::<Vec<_>>()
    );
    let tables = column(&p.body, "tables", "table");
    assert_eq!(tables.len(), status["jobs"].as_array().unwrap().len());
    // The fixture ran every job on the newest events: no table is behind.
    assert!(
        column(&p.body, "tables", "versions_behind")
            .iter()
            .all(|v| v == "0")
    );
    assert!(!p.body.contains("class=\"gap\""), "{}", p.body);
    for who in ["analyst", "xiaomi", "adv1"] {
        let cookie = login(&f, who).await;
        let p = get(&f, "/admin/pipeline", Some(&cookie)).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{who}");
    }
}
