//! The command line: flags (and their `SPACEPULSE_*` variables) parsed into typed options.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "spacepulse",
    version,
    about = "A social platform's event stream into the numbers brands, advertisers, analysts and operators act on"
)]
pub struct Cli {
    /// Log format: text (default) or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SPACEPULSE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// A TOML file of defaults: `lake`, `brokers`, `topic`, `group`, `registry`, `tz`,
    /// `log_format` (default: ./spacepulse.toml if present). Variables and flags override it.
    #[arg(long, global = true, env = "SPACEPULSE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume a Kafka topic (or backfill NDJSON and Parquet files) into the lake, exactly once.
    Ingest(IngestArgs),
    /// Inspect and maintain the lake.
    #[command(subcommand)]
    Lake(LakeCommand),
    /// Produce or generate data.
    #[command(subcommand)]
    Datasets(DatasetsCommand),
    /// Compute the metric tables from the lake's events (incrementally).
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Register, list and remove launch campaigns (the funnels' and launch curves' input).
    #[command(subcommand)]
    Campaigns(CampaignsCommand),
    /// SQL over the lake (read-only): one query, or an interactive shell without one.
    /// Tables: events, events_dedup, rejected, the metric tables, campaigns (docs/sql.md).
    Sql(SqlArgs),
    /// Run the pipeline end to end on an embedded Kafka broker and the shipped sample.
    Demo(DemoArgs),
    /// Serve the reports and analysts' SQL over HTTP (JSON API under /api/v1).
    Serve(ServeArgs),
    /// The whole pipeline in one process: ingest the topic continuously, run the jobs as new
    /// events land, serve the dashboard with live peaks; each part restarts on a transient error.
    Run(RunArgs),
    /// Official accounts, advertisers and staff: add, verify, reject, revoke, list.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Access tokens: issue (shown once), revoke, list.
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    #[command(flatten)]
    pub registry: RegistryArg,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SPACEPULSE_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// The report time zone: the one the jobs ran in.
    #[arg(long, default_value = query::tz::DEFAULT_TZ, env = "SPACEPULSE_TZ")]
    pub tz: String,
    /// Analysts' SQL: the time limit per query, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub sql_timeout: f64,
    /// Analysts' SQL: the memory pool per query, in MiB.
    #[arg(long, default_value_t = 512)]
    pub sql_memory_mib: usize,
    /// Analysts' SQL: the most rows a result may have.
    #[arg(long, default_value_t = 100_000)]
    pub sql_max_rows: usize,
    /// Analysts' SQL: queries running at once in all.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub sql_concurrent: u64,
    /// Analysts' SQL: queries one token runs at once (the rest of its queries wait).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub sql_per_token: u64,
    /// Analysts' SQL: queries of one token that may wait; more answer 429.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub sql_queue: u64,
    /// The server's origin as browsers reach it, e.g. https://dash.example.com: on https,
    /// login cookies are Secure and __Host- prefixed; state-changing requests must come from it.
    #[arg(long, env = "SPACEPULSE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Believe X-Forwarded-Proto from the proxy in front (only behind one that sets it).
    #[arg(long)]
    pub trust_forwarded_proto: bool,
    /// A login session ends after this many minutes unused.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_minutes: u64,
    /// A login session ends at the latest this many hours after login.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=720))]
    pub session_max_hours: u64,
    /// How late an event may arrive after its partition's watermark (the newest event time
    /// ingested from it) has passed it: reports are complete up to the smallest partition
    /// watermark less this; later days show as provisional (e.g. 30s, 5m).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub allowed_lateness: std::time::Duration,
    /// Live peaks: Kafka bootstrap servers to read the events topic from (its newest offsets).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Live peaks: the topic.
    #[arg(long, default_value = "events", requires = "brokers")]
    pub topic: String,
    /// Live peaks: the consumer's own group (it commits nothing).
    #[arg(long, default_value = "spacepulse-live", requires = "brokers")]
    pub group: String,
    /// Live peaks: a librdkafka property, KEY=VALUE (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value, requires = "brokers")]
    pub kafka: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SPACEPULSE_BROKERS")]
    pub brokers: String,
    #[command(flatten)]
    pub topic: TopicArgs,
    /// The address the dashboard listens on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SPACEPULSE_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// The report time zone.
    #[arg(long, default_value = query::tz::DEFAULT_TZ, env = "SPACEPULSE_TZ")]
    pub tz: String,
    /// Run the jobs this often when new events have landed (e.g. 5s, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub jobs_every: std::time::Duration,
    /// The ingester commits its buffer when its oldest message is this many seconds old.
    #[arg(long, default_value_t = 1.0)]
    pub flush_secs: f64,
    /// How late an event may arrive after its partition's watermark (the newest event time
    /// ingested from it) has passed it: reports are complete up to the smallest partition
    /// watermark less this; later days show as provisional (e.g. 30s, 5m).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub allowed_lateness: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an account: official and advertiser accounts start pending verification.
    Add {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        /// The account id (a-z, 0-9, -, _, .), as events carry it in account_id/advertiser_id.
        id: String,
        /// official, advertiser or staff.
        #[arg(long)]
        kind: String,
        /// A display name.
        #[arg(long, default_value = "")]
        name: String,
        /// The ISO 4217 currency an advertiser's money is reported in (amount_cents are its
        /// cents).
        #[arg(long, default_value = lake::registry::DEFAULT_CURRENCY)]
        currency: String,
    },
    /// Verify an account: it gets its reports.
    Verify(StateArgs),
    /// Reject an account's verification.
    Reject(StateArgs),
    /// Revoke a verified account: its reports are closed.
    Revoke(StateArgs),
    /// Import official accounts' follower baselines from a CSV (header account_id,as_of,
    /// followers) or Parquet file: followers are then the latest baseline plus the net follows
    /// since it. as_of is an RFC 3339 instant with its offset, or epoch milliseconds. A file
    /// already imported (the same bytes) changes nothing; run the accounts job afterwards.
    ImportFollowers {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        /// The file: .csv or .parquet.
        file: PathBuf,
    },
    /// List the follower baselines' imports (with --json, the baselines too).
    Baselines {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        #[arg(long)]
        json: bool,
    },
    /// List the accounts (with --audit ID, that account's audit log).
    List {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "ID")]
        audit: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    #[command(flatten)]
    pub registry: RegistryArg,
    pub id: String,
    /// Why (it goes in the audit log).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a token for an account; prints the secret once.
    Issue {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        /// operator, analyst, official, advertiser or scraper (reads /metrics only).
        #[arg(long)]
        role: String,
        /// The account the token belongs to.
        #[arg(long)]
        account: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id (tok_...).
    Revoke {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        id: String,
    },
    /// List the tokens (ids, roles, accounts; never secrets).
    List {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct LakeArg {
    /// The lake: a directory (created if missing) or a URL.
    #[arg(long, default_value = "./lake-data", env = "SPACEPULSE_LAKE")]
    pub lake: String,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        env = "SPACEPULSE_BROKERS",
        required_unless_present = "from_file",
        conflicts_with = "from_file"
    )]
    pub brokers: Option<String>,
    #[command(flatten)]
    pub topic: TopicArgs,
    /// Backfill from a file or a directory instead of Kafka: NDJSON (.ndjson, .jsonl, .json,
    /// optionally .gz or .zst) and Parquet (.parquet, one event per row).
    ///
    /// A line (or row) is known by its file's content and its place in it: a copy of an
    /// ingested file, renamed, compressed or re-encoded, adds nothing, and a file that begins
    /// with a whole ingested file adds only what follows.
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// Stop once the topic is consumed to its end and committed.
    #[arg(long)]
    pub until_caught_up: bool,
    /// Roll the buffer into files after this many messages.
    #[arg(long, default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_rows: u64,
    /// Roll the buffer into files after this many MiB of messages.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub flush_mib: u64,
    /// Roll the buffer into files when its oldest message is this many seconds old.
    #[arg(long, default_value_t = 5.0)]
    pub flush_secs: f64,
    /// On start, delete the lake's files that no commit references once older than this
    /// (e.g. 30s, 15m, 1h): what killed ingesters wrote but never published, as `lake vacuum
    /// --retain` does. It must outlast the longest time any ingester of this lake holds a
    /// written file before committing it (`--flush-secs` plus a commit).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub vacuum_retain: std::time::Duration,
    /// Serve the ingester's metrics at http://ADDR/metrics (Prometheus's text format; an
    /// operator's or a scraper's token from the lake's registry).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub registry: RegistryArg,
}

/// The topic an ingester consumes.
#[derive(Debug, Args)]
pub struct TopicArgs {
    /// The topic to consume.
    #[arg(long, default_value = "events", env = "SPACEPULSE_TOPIC")]
    pub topic: String,
    /// The ingester's consumer group; the lake, not the group, holds the positions.
    #[arg(long, default_value = "spacepulse-ingest", env = "SPACEPULSE_GROUP")]
    pub group: String,
    /// A librdkafka property, KEY=VALUE (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Per topic-partition: the offsets published, the commits, files and rows they became, the rejected messages.
    Ledger {
        #[command(flatten)]
        lake: LakeArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also list every commit.
        #[arg(long)]
        commits: bool,
    },
    /// Merge small files into large ones (one atomic commit per table, no change of content).
    Compact {
        #[command(flatten)]
        lake: LakeArg,
        /// Target file size in MiB.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        target_mib: u64,
    },
    /// Delete files no live commit references, older than --retain, from the ingest's tables
    /// and the metric tables (each job run replaces the files of the days it recomputes).
    Vacuum {
        #[command(flatten)]
        lake: LakeArg,
        /// Keep unreferenced files younger than this (e.g. 30s, 15m, 1h, 7d): a running
        /// ingester may be about to commit them.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        retain: std::time::Duration,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct RegistryArg {
    /// The registry file (default: _registry.sqlite in a local lake).
    #[arg(long, env = "SPACEPULSE_REGISTRY")]
    pub registry: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Recompute the days whose events changed since the last run, and publish them.
    Run(JobsRunArgs),
    /// Distinct users over a range of report days, exact and approximate, from the stored
    /// daily bitmaps and sketches (no event is rescanned).
    Users {
        #[command(flatten)]
        lake: LakeArg,
        /// The first report day, YYYY-MM-DD.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// The last report day (inclusive), YYYY-MM-DD.
        #[arg(long)]
        to: chrono::NaiveDate,
        /// total, platform or platform_group.
        #[arg(long, default_value = "total", value_parser = ["total", "platform", "platform_group"])]
        breakdown: String,
        /// all; pc, android, ios, web, other; mobile.
        #[arg(long, default_value = "all")]
        segment: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct JobsRunArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    #[command(flatten)]
    pub registry: RegistryArg,
    /// Only recompute report days from this one, YYYY-MM-DD.
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
    /// Only recompute report days up to this one (inclusive), YYYY-MM-DD.
    #[arg(long)]
    pub to: Option<chrono::NaiveDate>,
    /// The report time zone (IANA name): where a day starts.
    #[arg(long, default_value = query::tz::DEFAULT_TZ, env = "SPACEPULSE_TZ", value_parser = clap::value_parser!(query::tz::ReportTz))]
    pub tz: query::tz::ReportTz,
    /// Recompute every day, not only the changed ones.
    #[arg(long)]
    pub full: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// After the run, write its metrics to this file in Prometheus's text format (for
    /// node_exporter's textfile collector: runs, failures, duration, rows, version lag);
    /// written whole to a temporary file and renamed, so a scrape never reads half of it.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// The jobs to run (default: all): activity, peaks, campaigns, accounts, advertisers.
    #[arg(value_parser = clap::value_parser!(jobs::Job))]
    pub jobs: Vec<jobs::Job>,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub lake: LakeArg,
    /// The query (SELECT, EXPLAIN, SHOW, DESCRIBE); without one, an interactive shell.
    pub query: Option<String>,
    /// table, csv, json, ndjson, arrow (IPC stream) or parquet.
    #[arg(long, default_value = "table", value_parser = clap::builder::PossibleValuesParser::new(query::output::Format::NAMES)
        .map(|s| query::output::Format::parse(&s).expect("one of the names")))]
    pub format: query::output::Format,
    /// Write the result to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CampaignsCommand {
    /// Register a campaign.
    Add {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        /// The campaign id, as events carry it in campaign_id.
        id: String,
        /// The official account that owns it.
        #[arg(long)]
        account: String,
        /// When it starts, RFC 3339 (e.g. 2015-04-28T10:00:00+08:00).
        #[arg(long)]
        start: chrono::DateTime<chrono::FixedOffset>,
        /// The funnel's steps: event types, in order, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "page_view,reserve,preorder"
        )]
        steps: Vec<String>,
        /// How long after a chain's first step its last may come (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        window: std::time::Duration,
        /// furthest: each user's longest chain over all attempts; first: the chain from the
        /// user's first step-1 event only.
        #[arg(long, default_value = "furthest", value_parser = ["furthest", "first"])]
        mode: String,
    },
    /// List the registered campaigns.
    List {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a campaign.
    Remove {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        registry: RegistryArg,
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DatasetFormat {
    Ndjson,
    Parquet,
    Kafka,
}

#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Generate a deterministic dataset with the platform's launch and upload peaks.
    Generate {
        /// About this many lines: background activity fills what the shaped parts leave
        /// (default: the background of --scale).
        #[arg(long)]
        rows: Option<u64>,
        /// Report days (Asia/Shanghai) to cover.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// The first report day, YYYY-MM-DD.
        #[arg(long, default_value = "2015-04-28")]
        start: chrono::NaiveDate,
        /// The seed: the same options give byte-identical output.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Size relative to the full platform (1.0: 600 million users, about 35% of them active
        /// on a day, 200 million photos a day, a 3.5 million reserver launch).
        #[arg(long, default_value_t = 0.001)]
        scale: f64,
        /// The user pool (default: --scale × 600 million).
        #[arg(long)]
        users: Option<u64>,
        /// User ids: `qq` (QQ numbers, 5 to 10 digits) or `u64` (hashed 63-bit ids).
        #[arg(long, default_value = "qq")]
        id_space: datasets::generate::IdSpace,
        /// Add producer retries (~0.5%), late events (~0.2%) and malformed messages of every kind.
        #[arg(long)]
        dirty: bool,
        /// The launch's first second, RFC 3339 (default: 10:00:00+08:00 on the sixth day, or
        /// the last of fewer).
        #[arg(long)]
        launch_at: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Output directory: events.ndjson or events.parquet, and manifest.json.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = DatasetFormat::Ndjson)]
        format: DatasetFormat,
        /// Kafka bootstrap servers, with --format kafka.
        #[arg(long, env = "SPACEPULSE_BROKERS", required_if_eq("format", "kafka"))]
        brokers: Option<String>,
        #[arg(long, default_value = "events", env = "SPACEPULSE_TOPIC")]
        topic: String,
        /// A librdkafka property, KEY=VALUE (repeatable).
        #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        kafka: Vec<(String, String)>,
    },
    /// Produce NDJSON lines (a file or stdin) to a Kafka topic, keyed by user_id.
    Produce {
        /// Kafka bootstrap servers.
        #[arg(long, env = "SPACEPULSE_BROKERS")]
        brokers: String,
        #[arg(long, default_value = "events", env = "SPACEPULSE_TOPIC")]
        topic: String,
        /// The NDJSON file; `-` reads standard input.
        #[arg(long, default_value = "-")]
        input: PathBuf,
        /// At most this many messages a second, evenly (default: as fast as the broker takes
        /// them).
        #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
        rate: Option<f64>,
        /// A librdkafka property, KEY=VALUE (repeatable).
        #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        kafka: Vec<(String, String)>,
    },
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "expected a positive number of messages a second, got {s:?}"
        )),
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo's lake, data and tokens go; a second run reuses it.
    #[arg(long, default_value = "./demo")]
    pub dir: PathBuf,
    /// A real Kafka broker instead of the embedded one.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Start from an empty demo directory.
    #[arg(long)]
    pub reset: bool,
    /// The generated data's size relative to the full platform (0.0005: ~100,000 photos a
    /// day and a 1,750-reserver launch).
    #[arg(long, default_value_t = 0.0005)]
    pub scale: f64,
    /// Days of data, the launch on the last one.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=31))]
    pub days: u32,
    /// The launch day's replay speed, times real time (0: as fast as the broker takes it).
    #[arg(long, default_value_t = 3600.0)]
    pub speed: f64,
    /// Where the dashboard listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// No terminal needed: stop when standard input ends as well as on Ctrl-C (CI runs
    /// `spacepulse demo --headless </dev/null`, which exits after the setup).
    #[arg(long)]
    pub headless: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// A duration such as `500ms`, `30s`, `15m`, `1h` or `7d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a number and a unit (ms, s, m, h, d), got {s:?}"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}: use ms, s, m, h or d"
            ));
        }
    };
    Ok(std::time::Duration::from_millis(ms))
}
