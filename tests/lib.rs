//! The end-to-end test harness: a real Kafka-compatible broker (Tansu) in its own process, the
//! `spacepulse` binary, independent readers (Python `deltalake` and DuckDB), and reading the
//! lake back with DataFusion.
//!
//! Prerequisites are installed by `scripts/test` (the README's test command); a missing one
//! fails the test that needs it with a message saying what to run, never skips it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use deltalake::datafusion::prelude::SessionContext;
use lake::tables::Lake;

/// Tests that need this machine's two cores to themselves take turns on this lock: the broker
/// tests (a broker and ingester processes, with time limits that CPU contention would break)
/// and the CPU-heavy generator and jobs tests.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `spacepulse` binary next to this test binary (`cargo test --workspace` builds it).
pub fn spacepulse_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join("spacepulse");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test does), which builds it",
        bin.display()
    );
    bin
}

/// Runs `spacepulse ARGS` to completion and returns (exit code, stdout, stderr).
pub fn spacepulse(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(spacepulse_bin())
        .args(args)
        .env("SPACEPULSE_LOG", "warn")
        .output()
        .expect("run spacepulse");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The prerequisites' home: `$HOME/.cache/spacepulse`.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/spacepulse")
}

/// The Python of the test virtual environment (with `deltalake`, `duckdb` and its delta extension).
pub fn python() -> PathBuf {
    let p = std::env::var_os("SPACEPULSE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("venv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which makes the Python environment",
        p.display()
    );
    p
}

/// Runs a Python snippet in the test environment; returns its stdout parsed as JSON.
pub fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A Tansu broker in its own process, storing into SQLite in `dir` (so data survives a
/// restart) or in its memory, or the broker `KAFKA_BROKERS` names.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    engine: &'static str,
    external: Option<String>,
}

pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU") {
        return PathBuf::from(p);
    }
    let cached = cache_dir().join("tansu/bin/tansu");
    assert!(
        cached.exists(),
        "{} is missing: run scripts/test, which installs Tansu",
        cached.display()
    );
    cached
}

impl Broker {
    /// Tansu on its SQLite engine: what it stored survives [`Broker::restart`].
    pub fn start(dir: &Path) -> Self {
        Self::with_engine(dir, "sqlite://tansu.db")
    }

    /// Tansu on its in-memory engine, which serves fetches without the SQLite engine's cost
    /// (Tansu 0.6 sums the sizes of a partition's whole remaining log on every SQLite fetch,
    /// docs/ingest.md); what it stored is gone when it stops.
    pub fn in_memory(dir: &Path) -> Self {
        Self::with_engine(dir, "memory://tansu/")
    }

    fn with_engine(dir: &Path, engine: &'static str) -> Self {
        if let Ok(external) = std::env::var("KAFKA_BROKERS") {
            return Self {
                child: None,
                port: 0,
                dir: dir.to_path_buf(),
                engine,
                external: Some(external),
            };
        }
        let mut b = Self {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            engine,
            external: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .expect("log");
        let child = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", self.engine])
            // Tansu resolves the SQLite path against its working directory.
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_for(Duration::from_secs(30), "tansu to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    pub fn brokers(&self) -> String {
        self.external
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.port))
    }

    /// Stops the broker process (SIGKILL) and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        assert!(self.external.is_none(), "cannot restart an external broker");
        assert!(
            self.engine.starts_with("sqlite:"),
            "the in-memory engine forgets on restart"
        );
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `done` until it holds, failing after `limit` with what was awaited.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates a topic with `partitions` partitions through the Kafka admin API.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// SplitMix64: a tiny deterministic generator for test data and kill moments.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `spacepulse datasets generate --days 1 --scale 0.0002 --format parquet --out OUT`, which
/// must succeed; returns the manifest it wrote.
pub fn generated_parquet(out: &Path) -> serde_json::Value {
    let (code, o, e) = spacepulse(&[
        "datasets",
        "generate",
        "--days",
        "1",
        "--scale",
        "0.0002",
        "--format",
        "parquet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

/// `n` valid events as NDJSON lines with ids `{prefix}-{i}`, a few hours around 2015-04-28.
pub fn valid_events(prefix: &str, n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let base: i64 = 1_430_150_400_000; // 2015-04-27T16:00:00Z
    let platforms = ["android", "ios", "pc", "web"];
    (0..n)
        .map(|i| {
            let ts = base + (i as i64) * 37 + rng.below(1000) as i64;
            let user = rng.below(50_000);
            let platform = platforms[rng.below(4) as usize];
            if i % 3 == 0 {
                format!(r#"{{"event_id":"{prefix}-{i}","ts":{ts},"user_id":{user},"type":"photo_upload","platform":"{platform}","photos":{}}}"#, 1 + rng.below(9))
            } else {
                format!(r#"{{"event_id":"{prefix}-{i}","ts":{ts},"user_id":"{user}","type":"app_open","platform":"{platform}"}}"#)
            }
        })
        .collect()
}

/// Runs `spacepulse ARGS`, expecting success; its standard output.
pub fn ok(args: &[&str]) -> String {
    let (code, out, err) = spacepulse(args);
    assert_eq!(code, 0, "spacepulse {args:?}: {out}{err}");
    out
}

/// Registers the generator's launch, `redmi-launch` of the account `xiaomi`, starting at `start`.
pub fn add_launch(lake: &str, start: &str) {
    ok(&[
        "campaigns",
        "add",
        "redmi-launch",
        "--lake",
        lake,
        "--account",
        "xiaomi",
        "--start",
        start,
    ]);
}

/// Messages joined into newline-terminated bytes.
pub fn ndjson<T: AsRef<[u8]>>(lines: &[T]) -> Vec<u8> {
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l.as_ref());
        text.push(b'\n');
    }
    text
}

/// Produces lines to a topic with the real producer; returns how many were acknowledged.
pub async fn produce(brokers: &str, topic: &str, lines: &[String]) -> u64 {
    produce_with(brokers, topic, &[], lines).await
}

/// [`produce`] with librdkafka producer properties.
pub async fn produce_with(
    brokers: &str,
    topic: &str,
    config: &[(&str, &str)],
    lines: &[String],
) -> u64 {
    let mut text = lines.join("\n");
    text.push('\n');
    produce_bytes(brokers, topic, config, text.into_bytes()).await
}

/// [`produce_with`] of newline-separated messages given as bytes (not all of them UTF-8).
pub async fn produce_bytes(
    brokers: &str,
    topic: &str,
    config: &[(&str, &str)],
    text: Vec<u8>,
) -> u64 {
    let config: Vec<_> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    datasets::produce::produce_lines(brokers, topic, &config, std::io::Cursor::new(text))
        .await
        .expect("produce")
}

/// The query crate's session over the lake: `events`, `rejected`, every metric table, and the
/// spacepulse SQL functions.
pub async fn session(lake_dir: &Path) -> SessionContext {
    let lake = Lake::new(&lake_dir.to_string_lossy()).expect("lake");
    query::session::session(&lake).await.expect("session")
}

/// Every metric table's rows (sorted, bitmaps and sketches included) for comparisons.
pub async fn snapshot(lake: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let ctx = session(lake).await;
    let mut out = std::collections::BTreeMap::new();
    for name in lake::tables::METRIC_TABLES {
        if ctx.table_exist(*name).unwrap() {
            let rows = query(&ctx, &format!("SELECT * FROM {name}")).await;
            let mut rows: Vec<String> = rows
                .into_iter()
                .map(|r| serde_json::to_string(&r).unwrap())
                .collect();
            rows.sort();
            out.insert(name.to_string(), rows);
        }
    }
    out
}

/// Runs SQL and returns the rows as JSON objects.
pub async fn query(
    ctx: &SessionContext,
    sql: &str,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .expect("collect");
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<_> = batches.iter().collect();
    writer.write_batches(&refs).expect("json");
    writer.finish().expect("json");
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&bytes).expect("json rows")
}

/// Every `event_id` the events table holds with how often, and the total rows.
pub async fn event_id_counts(lake_dir: &Path) -> (u64, std::collections::HashMap<String, u64>) {
    let ctx = session(lake_dir).await;
    let rows = query(
        &ctx,
        "SELECT event_id, count(*) AS n FROM events GROUP BY event_id",
    )
    .await;
    let mut map = std::collections::HashMap::new();
    let mut total = 0;
    for r in rows {
        let n = r["n"].as_u64().expect("count");
        total += n;
        map.insert(r["event_id"].as_str().expect("id").to_string(), n);
    }
    (total, map)
}

/// A temporary directory for one test; kept (and its path printed) when `SPACEPULSE_TEST_KEEP`
/// is set, so that a failed run's broker log, lake and ingester output can be read afterwards.
pub fn test_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().expect("a temporary directory");
    if std::env::var_os("SPACEPULSE_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

/// One HTTP/1.1 request over a plain socket; returns the status and the (de-chunked) body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "text/plain")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let r = request(addr, method, path, &headers, body);
    (r.status, r.body)
}

/// An HTTP response: status, headers (names lowercase, in order), de-chunked body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// Every value of header `name` (lowercase).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One HTTP/1.1 request with these headers (`Host: test` unless given) over a plain socket.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("Host: test\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(
        s,
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        return Response {
            status,
            headers,
            body: rest.to_string(),
        };
    }
    let (mut out, mut rest) = (String::new(), rest);
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return Response {
                status,
                headers,
                body: out,
            };
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// A `spacepulse serve --listen 127.0.0.1:0` process with more arguments, killed when dropped
/// ([`Server::stop`] stops it with SIGTERM instead).
pub struct Server {
    child: std::process::Child,
    /// host:port it listens on.
    pub addr: String,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        Self::start_command(&all)
    }

    /// `spacepulse ARGS --listen 127.0.0.1:0` (`serve`, `run`): started once it prints its
    /// address.
    pub fn start_command(args: &[&str]) -> Server {
        Self::start_listening(args, "--listen")
    }

    /// `spacepulse ARGS FLAG 127.0.0.1:0`: started once it prints the address it listens on
    /// (`ingest --metrics-listen`).
    pub fn start_listening(args: &[&str], flag: &str) -> Server {
        let mut child = std::process::Command::new(spacepulse_bin())
            .args(args)
            .args([flag, "127.0.0.1:0"])
            .env("SPACEPULSE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut first,
        )
        .unwrap();
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        Server { child, addr }
    }

    /// A process started by other means, to be stopped as a server is.
    pub fn process(child: std::process::Child) -> Server {
        Server {
            child,
            addr: String::new(),
        }
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (`-INT`, `-TERM`) and waits at most `limit` for the process to end:
    /// its exit status, or a panic (after SIGKILL) if it outlived the limit.
    pub fn signal(mut self, signal: &str, limit: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(sent);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running {limit:?} after kill {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(sent);
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A staff account `bi` in the lake's registry (added if missing) and a token of `role`
/// (analyst or operator) for it: the secret.
pub fn staff_token(lake: &str, role: &str) -> String {
    let (code, _, err) = spacepulse(&["accounts", "add", "bi", "--kind", "staff", "--lake", lake]);
    assert!(code == 0 || err.contains("exists"), "accounts add: {err}");
    issue_token(lake, role, "bi")
}

/// A token of `role` for `account` (which exists): the secret.
pub fn issue_token(lake: &str, role: &str, account: &str) -> String {
    let (code, out, err) = spacepulse(&[
        "tokens",
        "issue",
        "--role",
        role,
        "--account",
        account,
        "--lake",
        lake,
    ]);
    assert_eq!(code, 0, "tokens issue: {err}");
    out.trim().to_string()
}

/// The hand-made fixtures (`datasets/fixtures/NAME.ndjson` beside `NAME.expected.json`), every
/// one found, sorted by name, whose expected figures have the key `kind` (`days` for activity
/// fixtures, `campaign` for funnel fixtures): a new case is two new files.
pub fn fixtures(kind: &str) -> Vec<(String, PathBuf, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/fixtures");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".expected.json"))
        else {
            continue;
        };
        let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let events = dir.join(format!("{name}.ndjson"));
        assert!(
            events.exists(),
            "{} has no {}",
            path.display(),
            events.display()
        );
        if expected.get(kind).is_some() {
            found.push((name.to_string(), events, expected));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!found.is_empty(), "no {kind} fixtures in {}", dir.display());
    found
}
