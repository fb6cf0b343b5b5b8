//! Browser logins (issue #20): the cookie holds a server-side session, never the token; a
//! session ends with logout, its token or its account; cookies are `Secure` and `__Host-` on
//! https; state-changing requests from another origin are refused.

use serde_json::Value;
use spacepulse_tests::{Response, Server, issue_token, ok, request, spacepulse, test_dir};

/// A browser-like client of one server: its Host and Origin.
struct Browser<'a> {
    addr: &'a str,
    host: String,
}

impl Browser<'_> {
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        let mut all = vec![("Host", self.host.as_str())];
        all.extend_from_slice(headers);
        request(self.addr, method, path, &all, body)
    }

    /// `POST /login` with the token in the form, from `origin`.
    fn login(&self, token: &str, origin: &str, extra: &[(&str, &str)]) -> Response {
        let mut headers = vec![
            ("Origin", origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        headers.extend_from_slice(extra);
        self.send("POST", "/login", &headers, &format!("token={token}"))
    }

    fn me(&self, cookie: &str) -> u16 {
        self.send("GET", "/api/v1/me", &[("Cookie", cookie)], "")
            .status
    }
}

/// The login cookie a response sets: `name=value` and its attributes.
fn session_cookie(r: &Response) -> (String, String) {
    let set = r
        .all("set-cookie")
        .into_iter()
        .find(|c| c.contains("session=sps_"))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", r.headers));
    let (pair, attributes) = set.split_once(';').unwrap();
    (pair.to_string(), attributes.to_string())
}

fn refused_cross_site(r: &Response, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.body);
    let e: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(e["code"], "cross_site", "{what}: {e}");
}

#[test]
fn logins_are_sessions_that_end_and_other_sites_cannot_post() {
    let dir = test_dir();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    ok(&["accounts", "add", "bi", "--kind", "staff", "--lake", lake]);
    ok(&[
        "accounts", "add", "xiaomi", "--kind", "official", "--lake", lake,
    ]);
    ok(&[
        "accounts", "verify", "xiaomi", "--reason", "checked", "--lake", lake,
    ]);
    let analyst = issue_token(lake, "analyst", "bi");
    let brand = issue_token(lake, "official", "xiaomi");

    let server = Server::start(&["--lake", lake]);
    let b = Browser {
        addr: &server.addr,
        host: server.addr.clone(),
    };
    let ours = format!("http://{}", server.addr);
    let r = b.login(&analyst, &ours, &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    let (cookie, attributes) = session_cookie(&r);
    assert!(cookie.starts_with("spacepulse_session=sps_"), "{cookie}");
    assert!(!cookie.contains(&analyst), "the cookie holds the token");
    for a in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(a), "{a}: {attributes}");
    }
    assert!(!attributes.contains("Secure"), "plain http: {attributes}");
    assert_eq!(b.me(&cookie), 200);
    // The token itself in a cookie (what the login used to set) is no login.
    assert_eq!(b.me(&format!("spacepulse_token={analyst}")), 401);
    assert_eq!(b.me("spacepulse_session=sps_forged"), 401);

    // Another site's forms and scripts: refused whether or not a cookie rides along.
    for origin in ["http://evil.example", "null", "https://127.0.0.1"] {
        refused_cross_site(&b.login(&analyst, origin, &[]), origin);
    }
    let sql = |headers: &[(&str, &str)]| {
        let mut all = vec![("Content-Type", "text/plain")];
        all.extend_from_slice(headers);
        b.send("POST", "/api/v1/sql", &all, "SELECT 1 AS one")
    };
    refused_cross_site(
        &sql(&[("Cookie", &cookie), ("Origin", "http://evil.example")]),
        "SQL with the cookie from another origin",
    );
    refused_cross_site(
        &sql(&[("Cookie", &cookie), ("Referer", "http://evil.example/page")]),
        "SQL with the cookie and another site's Referer",
    );
    refused_cross_site(
        &sql(&[("Cookie", &cookie)]),
        "SQL with the cookie, no origin",
    );
    let r = sql(&[("Cookie", &cookie), ("Origin", &ours)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = sql(&[
        ("Cookie", &cookie),
        ("Referer", &format!("{ours}/platform")),
    ]);
    assert_eq!(r.status, 200, "{}", r.body);
    // An API client's bearer token is no ambient credential: its Origin does not matter.
    let bearer = format!("Bearer {analyst}");
    let r = sql(&[
        ("Authorization", &bearer),
        ("Origin", "http://evil.example"),
    ]);
    assert_eq!(r.status, 200, "{}", r.body);
    refused_cross_site(
        &b.send(
            "POST",
            "/logout",
            &[("Cookie", &cookie), ("Origin", "http://evil.example")],
            "",
        ),
        "logout from another site",
    );
    assert_eq!(b.me(&cookie), 200, "a refused logout ends nothing");

    // Logout ends the session on the server: a copy of the cookie is worth nothing.
    let r = b.send(
        "POST",
        "/logout",
        &[("Cookie", &cookie), ("Origin", &ours)],
        "",
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.all("set-cookie")
            .iter()
            .any(|c| c.starts_with("spacepulse_session=;") && c.contains("Max-Age=0")),
        "{:?}",
        r.headers
    );
    assert_eq!(b.me(&cookie), 401);

    // Revoking the token ends its sessions; so does revoking the account.
    let (cookie, _) = session_cookie(&b.login(&analyst, &ours, &[]));
    assert_eq!(b.me(&cookie), 200);
    let me = request(
        &server.addr,
        "GET",
        "/api/v1/me",
        &[("Authorization", &bearer)],
        "",
    );
    let id = serde_json::from_str::<Value>(&me.body).unwrap()["token_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no token id in {}", me.body))
        .to_string();
    ok(&["tokens", "revoke", &id, "--lake", lake]);
    assert_eq!(b.me(&cookie), 401);
    let (cookie, _) = session_cookie(&b.login(&brand, &ours, &[]));
    assert_eq!(b.me(&cookie), 200);
    ok(&[
        "accounts", "revoke", "xiaomi", "--reason", "fraud", "--lake", lake,
    ]);
    assert_eq!(b.me(&cookie), 401);
    // A proxy's X-Forwarded-Proto is not believed without --trust-forwarded-proto.
    let analyst = issue_token(lake, "analyst", "bi");
    let r = b.login(&analyst, &ours, &[("X-Forwarded-Proto", "https")]);
    assert!(session_cookie(&r).0.starts_with("spacepulse_session="));
    drop(server);

    // On https (its public URL): `__Host-`, `Secure`; requests must come from that origin.
    let server = Server::start(&["--lake", lake, "--public-url", "https://Dash.Example.com/"]);
    let b = Browser {
        addr: &server.addr,
        host: "dash.example.com".into(),
    };
    let r = b.login(&analyst, "https://dash.example.com", &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    let (cookie, attributes) = session_cookie(&r);
    assert!(
        cookie.starts_with("__Host-spacepulse_session=sps_"),
        "{cookie}"
    );
    for a in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(a), "{a}: {attributes}");
    }
    assert!(!attributes.contains("Domain"), "{attributes}");
    assert_eq!(b.me(&cookie), 200);
    refused_cross_site(
        &b.login(&analyst, "http://dash.example.com", &[]),
        "the same host over plain http",
    );
    drop(server);

    // Behind a proxy that terminates TLS and says so.
    let server = Server::start(&["--lake", lake, "--trust-forwarded-proto"]);
    let b = Browser {
        addr: &server.addr,
        host: "stats.example.org".into(),
    };
    let r = b.login(
        &analyst,
        "https://stats.example.org",
        &[("X-Forwarded-Proto", "https")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        session_cookie(&r)
            .0
            .starts_with("__Host-spacepulse_session=")
    );
    drop(server);

    let (code, _, err) = spacepulse(&["serve", "--lake", lake, "--public-url", "ftp://x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--public-url"), "{err}");
}
