//! The generator: a deterministic synthetic event stream with the platform's shapes.
//!
//! Time runs hour by hour (UTC) over `--days` report days in Asia/Shanghai (UTC+8, no daylight
//! saving). Every component draws from its own random stream keyed by (seed, component, hour),
//! so the output depends only on the options. Each hour's events are sorted by arrival time
//! and written; late events and producer retries arrive in later hours. The [`Manifest`] is
//! bookkept from the events actually written. `docs/datasets.md` gives the numbers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use chrono::{NaiveDate, TimeZone};
use serde::Serialize;

use crate::rng::Rng;

/// Shanghai is UTC+8 all year.
const TZ_OFFSET_MS: i64 = 8 * 3_600_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Relative activity per hour of the day in China time: quiet at 04:00, busiest at 21:00.
pub const HOUR_WEIGHTS: [u64; 24] = [
    30, 18, 10, 6, 4, 5, 10, 22, 40, 52, 58, 62, 66, 60, 58, 60, 62, 66, 72, 82, 92, 100, 88, 56,
];

/// Full-size figures, multiplied by `--scale`.
pub mod full {
    /// Distinct users in the pool.
    pub const USERS: f64 = 6_000_000.0;
    /// Photos uploaded on an ordinary day, the busiest ordinary day (April 30), May 2 and May 1.
    pub const PHOTOS_ORDINARY: f64 = 200_000_000.0;
    pub const PHOTOS_PEAK_DAY: f64 = 360_000_000.0;
    pub const PHOTOS_MAY_2: f64 = 510_000_000.0;
    pub const PHOTOS_MAY_1: f64 = 650_000_000.0;
    /// Distinct reserving users at +1 s, +1 min, +10 min, +30 min and +24 h of the launch.
    pub const LAUNCH: [(i64, f64); 5] = [
        (1, 50_000.0),
        (60, 300_000.0),
        (600, 600_000.0),
        (1800, 1_000_000.0),
        (86_400, 3_500_000.0),
    ];
    /// Ad impressions per day over all advertisers.
    pub const AD_IMPRESSIONS: f64 = 50_000_000.0;
    /// Follows of the official account per ordinary day.
    pub const FOLLOWS: f64 = 20_000.0;
    /// Background events (app opens, likes, comments, posts, page views) per day.
    pub const BACKGROUND: f64 = 100_000_000.0;
}

pub const CAMPAIGN_ID: &str = "redmi-launch";
pub const ACCOUNT_ID: &str = "xiaomi";
const OTHER_ACCOUNTS: [&str; 3] = ["meizu", "huawei", "oppo"];
const ADVERTISERS: [(&str, [&str; 2]); 3] = [
    ("adv-1", ["ad-11", "ad-12"]),
    ("adv-2", ["ad-21", "ad-22"]),
    ("adv-3", ["ad-31", "ad-32"]),
];
const REGIONS: [&str; 12] = [
    "11", "12", "31", "32", "33", "35", "37", "41", "42", "44", "50", "51",
];

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// About this many lines: background activity fills what the shaped parts leave.
    pub rows: Option<u64>,
    pub days: u32,
    /// The first report day (Asia/Shanghai).
    pub start: NaiveDate,
    pub seed: u64,
    pub scale: f64,
    pub dirty: bool,
    /// The launch's first second, epoch ms; default 10:00:00 Shanghai time on the first day.
    pub launch_at_ms: Option<i64>,
    /// With `dirty`, also one message over 1 MiB (a default Kafka broker refuses those, so
    /// the Kafka output leaves it out).
    pub oversized: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rows: None,
            days: 7,
            start: NaiveDate::from_ymd_opt(2015, 4, 28).expect("valid date"),
            seed: 1,
            scale: 0.001,
            dirty: false,
            launch_at_ms: None,
            oversized: true,
        }
    }
}

/// A mistake in the options, naming the flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

/// Where generated lines go.
pub trait Sink {
    /// One message: its Kafka key (the user id, when it has one) and its bytes.
    fn line(&mut self, key: Option<u64>, bytes: &[u8]) -> std::io::Result<()>;
}

/// NDJSON into any writer.
pub struct NdjsonSink<W: Write>(pub W);

impl<W: Write> Sink for NdjsonSink<W> {
    fn line(&mut self, _key: Option<u64>, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)?;
        self.0.write_all(b"\n")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    NotUtf8,
    NotJson,
    NotAnObject,
    MissingTs,
    UserIdNotANumber,
    UnknownPlatform,
    BadTypeName,
    TsBefore2000,
    TsFarFuture,
    FollowWithoutAccount,
    TooLarge,
}

impl Malformed {
    /// The kinds drawn at random (one `TooLarge` is written per dirty dataset besides).
    const DRAWN: [Malformed; 10] = [
        Malformed::NotUtf8,
        Malformed::NotJson,
        Malformed::NotAnObject,
        Malformed::MissingTs,
        Malformed::UserIdNotANumber,
        Malformed::UnknownPlatform,
        Malformed::BadTypeName,
        Malformed::TsBefore2000,
        Malformed::TsFarFuture,
        Malformed::FollowWithoutAccount,
    ];

    /// The field the ingest's reason names for this kind (`message` for the whole message).
    pub fn field(self) -> &'static str {
        match self {
            Malformed::NotUtf8
            | Malformed::NotJson
            | Malformed::NotAnObject
            | Malformed::TooLarge => "message",
            Malformed::MissingTs | Malformed::TsBefore2000 | Malformed::TsFarFuture => "ts",
            Malformed::UserIdNotANumber => "user_id",
            Malformed::UnknownPlatform => "platform",
            Malformed::BadTypeName => "type",
            Malformed::FollowWithoutAccount => "account_id",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AppOpen,
    PhotoUpload,
    Post,
    Comment,
    Like,
    Follow,
    Unfollow,
    PageView,
    Reserve,
    Preorder,
    AdImpression,
    AdClick,
    AdConversion,
    Bad(Malformed),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AppOpen => "app_open",
            Kind::PhotoUpload => "photo_upload",
            Kind::Post => "post",
            Kind::Comment => "comment",
            Kind::Like => "like",
            Kind::Follow => "follow",
            Kind::Unfollow => "unfollow",
            Kind::PageView => "page_view",
            Kind::Reserve => "reserve",
            Kind::Preorder => "preorder",
            Kind::AdImpression => "ad_impression",
            Kind::AdClick => "ad_click",
            Kind::AdConversion => "ad_conversion",
            Kind::Bad(_) => "like",
        }
    }
}

/// One event before it is written: compact, formatted only when emitted.
#[derive(Debug, Clone, Copy)]
struct Item {
    arrival_ms: i64,
    ts_ms: i64,
    seq: u64,
    kind: Kind,
    user: u64,
    /// photos, amount_cents, or an index (account, ad).
    a: i64,
    b: i64,
    /// 0: campaign page view etc., see `format`.
    flags: u8,
}

const F_CAMPAIGN: u8 = 1;
const F_STRING_FORMS: u8 = 2;
const F_PROPS: u8 = 4;
const F_DUPLICATE: u8 = 8;
const F_LATE: u8 = 16;

/// Figures of one report day, bookkept from the valid events written.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DayFigures {
    pub day: String,
    /// Events with distinct `event_id`s whose `ts` falls on this day.
    pub events: u64,
    pub distinct_users: u64,
    pub uploads: u64,
    pub photos: u64,
    pub follows: u64,
    pub unfollows: u64,
    pub ad_impressions: u64,
    pub ad_clicks: u64,
    pub ad_conversions: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Milestone {
    pub after_seconds: i64,
    /// Distinct users whose first reservation is in `[start, start + after_seconds)`.
    pub distinct_reservers: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LaunchFigures {
    pub campaign_id: &'static str,
    pub account_id: &'static str,
    pub start_ms: i64,
    pub start: String,
    pub milestones: Vec<Milestone>,
    pub reserve_events: u64,
    pub page_views: u64,
    pub preorders: u64,
}

/// What a generated dataset holds, known exactly from the generator's bookkeeping.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub generator: &'static str,
    pub options: Options,
    pub time_zone: &'static str,
    /// Lines (messages) written, malformed ones and retries included.
    pub rows: u64,
    /// Valid messages (retries included) and distinct `event_id`s among them.
    pub valid_messages: u64,
    pub distinct_events: u64,
    pub duplicates: u64,
    pub late: u64,
    pub malformed: BTreeMap<Malformed, u64>,
    pub user_pool: u64,
    pub distinct_users: u64,
    pub days: Vec<DayFigures>,
    pub launch: LaunchFigures,
}

/// The planned magnitudes for the options.
struct Plan {
    users: u64,
    start_utc_ms: i64,
    end_utc_ms: i64,
    photos_per_day: Vec<u64>,
    impressions_per_day: u64,
    follows_per_day: u64,
    background_per_day: Vec<u64>,
    launch_ms: i64,
    launch_targets: Vec<(i64, u64)>,
}

fn scaled(x: f64, scale: f64) -> u64 {
    (x * scale).round().max(0.0) as u64
}

/// Splits `total` over `weights` by largest remainder: the parts sum to `total` exactly.
pub fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    let mut parts: Vec<u64> = weights
        .iter()
        .map(|w| (total as u128 * *w as u128 / sum as u128) as u64)
        .collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse((
            total as u128 * weights[i] as u128 % sum as u128,
            usize::MAX - i,
        ))
    });
    let short = total - parts.iter().sum::<u64>();
    for &i in order.iter().take(short as usize) {
        parts[i] += 1;
    }
    parts
}

fn photos_target(day: NaiveDate, scale: f64) -> u64 {
    use chrono::Datelike;
    let x = match (day.month(), day.day()) {
        (5, 1) => full::PHOTOS_MAY_1,
        (5, 2) => full::PHOTOS_MAY_2,
        (4, 30) => full::PHOTOS_PEAK_DAY,
        _ => full::PHOTOS_ORDINARY,
    };
    scaled(x, scale)
}

/// Expected events per day of the shaped parts, to size the background for `--rows`.
fn shaped_estimate(plan: &Plan) -> u64 {
    let uploads: u64 = plan.photos_per_day.iter().map(|p| p * 10 / 19).sum();
    let ads = plan.impressions_per_day * plan.photos_per_day.len() as u64 * 1_015 / 1_000;
    let reservers = plan.launch_targets.last().map_or(0, |t| t.1);
    let launch = reservers * 2 + reservers / 10 * 2 + reservers * 3 / 10;
    let follows = plan.follows_per_day * plan.photos_per_day.len() as u64 * 21 / 20;
    uploads + ads + launch + follows
}

impl Plan {
    fn new(o: &Options) -> Result<Self, OptionsError> {
        if o.days == 0 || o.days > 3660 {
            return Err(OptionsError(format!(
                "--days: expected 1 to 3660, got {}",
                o.days
            )));
        }
        if !(o.scale.is_finite() && o.scale > 0.0 && o.scale <= 10.0) {
            return Err(OptionsError(format!(
                "--scale: expected a number in (0, 10], got {}",
                o.scale
            )));
        }
        let start_utc_ms = o
            .start
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis()
            - TZ_OFFSET_MS;
        let end_utc_ms = start_utc_ms + o.days as i64 * DAY_MS;
        let launch_ms = o.launch_at_ms.unwrap_or(start_utc_ms + 10 * HOUR_MS);
        if launch_ms < start_utc_ms || launch_ms >= end_utc_ms {
            return Err(OptionsError(
                "--launch-at: must fall inside the generated days".into(),
            ));
        }
        let launch_targets: Vec<(i64, u64)> = full::LAUNCH
            .iter()
            .map(|(s, n)| (*s, scaled(*n, o.scale)))
            .collect();
        let users = scaled(full::USERS, o.scale)
            .max(1_000)
            .max(launch_targets[4].1 * 6 / 5);
        let photos_per_day = (0..o.days)
            .map(|d| photos_target(o.start + chrono::Days::new(d as u64), o.scale))
            .collect();
        let mut plan = Self {
            users,
            start_utc_ms,
            end_utc_ms,
            photos_per_day,
            impressions_per_day: scaled(full::AD_IMPRESSIONS, o.scale),
            follows_per_day: scaled(full::FOLLOWS, o.scale),
            background_per_day: vec![scaled(full::BACKGROUND, o.scale); o.days as usize],
            launch_ms,
            launch_targets,
        };
        if let Some(rows) = o.rows {
            let shaped = shaped_estimate(&plan);
            // Leave room for retries, late copies and malformed lines in a dirty dataset.
            let shaped = if o.dirty {
                shaped * 1_010 / 1_000
            } else {
                shaped
            };
            if rows < shaped {
                return Err(OptionsError(format!(
                    "--rows {rows} is too small for --scale {}: the uploads, launch, ads and follows alone take about {shaped}; raise --rows or lower --scale",
                    o.scale
                )));
            }
            let weights = vec![1; o.days as usize];
            plan.background_per_day = apportion(rows - shaped, &weights);
        }
        Ok(plan)
    }
}

/// A bijection from a rank to a user id below 2^62 (never 0): ranks stay dense for the
/// generator, ids look arbitrary to the pipeline.
fn user_id(rank: u64) -> u64 {
    (rank + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1 << 62) - 1)
}

fn platform_of(user: u64, rng: &mut Rng) -> &'static str {
    // A user mostly stays on one platform.
    let h = if rng.chance(100_000) {
        rng.next_u64()
    } else {
        user.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 40
    };
    match h % 100 {
        0..=49 => "android",
        50..=79 => "ios",
        80..=91 => "pc",
        92..=98 => "web",
        _ => "other",
    }
}

struct Emitter<'a> {
    seed: u64,
    buf: Vec<u8>,
    sink: &'a mut dyn Sink,
    rows: u64,
}

fn rfc3339(ms: i64) -> String {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset");
    offset
        .timestamp_millis_opt(ms)
        .single()
        .expect("in range")
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

impl Emitter<'_> {
    fn event_id(&self, seq: u64) -> String {
        format!("{:x}-{:x}", self.seed, seq)
    }

    fn write(&mut self, item: &Item) -> std::io::Result<()> {
        if let Kind::Bad(kind) = item.kind {
            return self.write_bad(kind, item);
        }
        self.buf.clear();
        let b = &mut self.buf;
        let mut int = itoa::Buffer::new();
        b.extend_from_slice(b"{\"event_id\":\"");
        b.extend_from_slice(format!("{:x}-{:x}", self.seed, item.seq).as_bytes());
        b.extend_from_slice(b"\",\"ts\":");
        if item.flags & F_STRING_FORMS != 0 {
            b.push(b'"');
            b.extend_from_slice(rfc3339(item.ts_ms).as_bytes());
            b.push(b'"');
        } else {
            b.extend_from_slice(int.format(item.ts_ms).as_bytes());
        }
        b.extend_from_slice(b",\"user_id\":");
        if item.flags & F_STRING_FORMS != 0 {
            b.push(b'"');
            b.extend_from_slice(int.format(item.user).as_bytes());
            b.push(b'"');
        } else {
            b.extend_from_slice(int.format(item.user).as_bytes());
        }
        b.extend_from_slice(b",\"type\":\"");
        b.extend_from_slice(item.kind.name().as_bytes());
        b.extend_from_slice(b"\",\"platform\":\"");
        let mut prng = Rng::derive(self.seed, 99, item.seq);
        b.extend_from_slice(platform_of(item.user, &mut prng).as_bytes());
        b.push(b'"');
        let text = |b: &mut Vec<u8>, k: &str, v: &str| {
            b.extend_from_slice(b",\"");
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(b"\":\"");
            b.extend_from_slice(v.as_bytes());
            b.push(b'"');
        };
        match item.kind {
            Kind::PhotoUpload => {
                b.extend_from_slice(b",\"photos\":");
                b.extend_from_slice(int.format(item.a).as_bytes());
            }
            Kind::Follow | Kind::Unfollow => {
                let account = if item.a < 0 {
                    OTHER_ACCOUNTS[(-item.a - 1) as usize % 3]
                } else {
                    ACCOUNT_ID
                };
                text(b, "account_id", account);
            }
            Kind::Like | Kind::Comment if item.flags & F_CAMPAIGN != 0 => {
                text(b, "account_id", ACCOUNT_ID);
            }
            Kind::PageView if item.flags & F_CAMPAIGN != 0 => {
                text(b, "account_id", ACCOUNT_ID);
                text(b, "campaign_id", CAMPAIGN_ID);
            }
            Kind::Reserve | Kind::Preorder => {
                text(b, "account_id", ACCOUNT_ID);
                text(b, "campaign_id", CAMPAIGN_ID);
                if item.kind == Kind::Preorder {
                    b.extend_from_slice(b",\"amount_cents\":");
                    b.extend_from_slice(int.format(item.a).as_bytes());
                }
            }
            Kind::AdImpression | Kind::AdClick | Kind::AdConversion => {
                let (adv, ads) = ADVERTISERS[(item.b / 2) as usize % 3];
                text(b, "advertiser_id", adv);
                text(b, "ad_id", ads[(item.b % 2) as usize]);
                b.extend_from_slice(b",\"amount_cents\":");
                b.extend_from_slice(int.format(item.a).as_bytes());
            }
            _ => {}
        }
        if item.kind != Kind::AdImpression {
            text(
                b,
                "region",
                REGIONS[(item.user % REGIONS.len() as u64) as usize],
            );
        }
        if item.flags & F_PROPS != 0 {
            b.extend_from_slice(b",\"props\":{\"app_version\":\"5.2.0\",\"network\":\"wifi\"}");
        }
        b.push(b'}');
        self.rows += 1;
        self.sink.line(Some(item.user), &self.buf)
    }

    fn write_bad(&mut self, kind: Malformed, item: &Item) -> std::io::Result<()> {
        let id = self.event_id(item.seq);
        let ts = item.ts_ms;
        let u = item.user;
        let line: Vec<u8> = match kind {
            Malformed::NotUtf8 => {
                let mut v = format!(r#"{{"event_id":"{id}","ts":{ts},"user_id":{u},"type":"like","platform":"ios","region":""#).into_bytes();
                v.extend_from_slice(b"\xff\xfe\"}");
                v
            }
            Malformed::NotJson => format!(r#"{{"event_id":"{id}","ts":{ts},"user_id":{u},"type":"like""#).into_bytes(),
            Malformed::NotAnObject => format!(r#"["{id}",{ts},{u}]"#).into_bytes(),
            Malformed::MissingTs => format!(r#"{{"event_id":"{id}","user_id":{u},"type":"like","platform":"ios"}}"#).into_bytes(),
            Malformed::UserIdNotANumber => format!(r#"{{"event_id":"{id}","ts":{ts},"user_id":"u{u}","type":"like","platform":"ios"}}"#).into_bytes(),
            Malformed::UnknownPlatform => format!(r#"{{"event_id":"{id}","ts":{ts},"user_id":{u},"type":"like","platform":"symbian"}}"#).into_bytes(),
            Malformed::BadTypeName => format!(r#"{{"event_id":"{id}","ts":{ts},"user_id":{u},"type":"Photo-Upload","platform":"ios"}}"#).into_bytes(),
            Malformed::TsBefore2000 => format!(r#"{{"event_id":"{id}","ts":915148800000,"user_id":{u},"type":"like","platform":"ios"}}"#).into_bytes(),
            Malformed::TsFarFuture => format!(r#"{{"event_id":"{id}","ts":4102444800000,"user_id":{u},"type":"like","platform":"ios"}}"#).into_bytes(),
            Malformed::FollowWithoutAccount => format!(r#"{{"event_id":"{id}","ts":{ts},"user_id":{u},"type":"follow","platform":"ios"}}"#).into_bytes(),
            Malformed::TooLarge => {
                let pad = "x".repeat((1 << 20) + 100);
                format!(r#"{{"event_id":"{id}","ts":{ts},"user_id":{u},"type":"post","platform":"ios","props":{{"text":"{pad}"}}}}"#).into_bytes()
            }
        };
        self.rows += 1;
        self.sink.line(Some(u), &line)
    }
}

/// Bookkeeping of what was written.
#[derive(Default)]
struct Books {
    day_users: Vec<HashSet<u64>>,
    days: Vec<DayFigures>,
    all_users: HashSet<u64>,
    first_reserve: HashMap<u64, i64>,
    reserve_events: u64,
    page_views: u64,
    preorders: u64,
    valid: u64,
    distinct: u64,
    duplicates: u64,
    late: u64,
    malformed: BTreeMap<Malformed, u64>,
}

impl Books {
    fn record(&mut self, item: &Item, start_utc_ms: i64) {
        if let Kind::Bad(kind) = item.kind {
            *self.malformed.entry(kind).or_default() += 1;
            return;
        }
        self.valid += 1;
        if item.flags & F_DUPLICATE != 0 {
            self.duplicates += 1;
            return;
        }
        if item.flags & F_LATE != 0 {
            self.late += 1;
        }
        self.distinct += 1;
        let d = ((item.ts_ms - start_utc_ms) / DAY_MS) as usize;
        let day = &mut self.days[d];
        day.events += 1;
        self.day_users[d].insert(item.user);
        self.all_users.insert(item.user);
        match item.kind {
            Kind::PhotoUpload => {
                day.uploads += 1;
                day.photos += item.a as u64;
            }
            Kind::Follow if item.a >= 0 => day.follows += 1,
            Kind::Unfollow if item.a >= 0 => day.unfollows += 1,
            Kind::AdImpression => day.ad_impressions += 1,
            Kind::AdClick => day.ad_clicks += 1,
            Kind::AdConversion => day.ad_conversions += 1,
            Kind::Reserve => {
                self.reserve_events += 1;
                let first = self.first_reserve.entry(item.user).or_insert(item.ts_ms);
                *first = (*first).min(item.ts_ms);
            }
            Kind::PageView if item.flags & F_CAMPAIGN != 0 => self.page_views += 1,
            Kind::Preorder => self.preorders += 1,
            _ => {}
        }
    }
}

/// Generates the dataset into `sink` and returns its manifest.
impl Options {
    /// Checks the options as [`generate`] does, before any output exists.
    pub fn check(&self) -> Result<(), OptionsError> {
        Plan::new(self).map(|_| ())
    }
}

pub fn generate(options: &Options, sink: &mut dyn Sink) -> Result<Manifest, GenerateError> {
    let plan = Plan::new(options)?;
    let seed = options.seed;
    let hours = (plan.end_utc_ms - plan.start_utc_ms) / HOUR_MS;
    let mut seq: u64 = 0;
    let mut next_seq = || {
        seq += 1;
        seq
    };
    // Items by arrival hour (index from the start); launch items are planned up front.
    let mut pending: BTreeMap<i64, Vec<Item>> = BTreeMap::new();
    let hour_of = |ms: i64| (ms - plan.start_utc_ms).div_euclid(HOUR_MS);
    let in_range = |ms: i64| ms >= plan.start_utc_ms && ms < plan.end_utc_ms;
    let push = |pending: &mut BTreeMap<i64, Vec<Item>>, item: Item| {
        if in_range(item.ts_ms) {
            pending
                .entry(hour_of(item.arrival_ms).max(0))
                .or_default()
                .push(item);
        }
    };

    // The launch: reservers in milestone segments, each after a page view; some retry, some
    // preorder, some follow the account.
    let mut rng = Rng::derive(seed, 1, 0);
    let mut segment_start = 0i64;
    let mut done = 0u64;
    let stride = coprime_stride(plan.users);
    for (seconds, target) in &plan.launch_targets {
        let count = target.saturating_sub(done);
        let span = seconds * 1000 - segment_start;
        for i in 0..count {
            let k = done + i;
            let user = user_id((k * stride) % plan.users);
            let at = plan.launch_ms
                + segment_start
                + (span * i as i64) / count.max(1) as i64
                + rng.below((span / count.max(1) as i64).max(1) as u64) as i64;
            let at = at.min(plan.launch_ms + seconds * 1000 - 1);
            let view = at - 1_000 - rng.below(120_000) as i64;
            let flags = if rng.chance(10_000) {
                F_STRING_FORMS
            } else {
                0
            };
            push(
                &mut pending,
                Item {
                    arrival_ms: view,
                    ts_ms: view,
                    seq: next_seq(),
                    kind: Kind::PageView,
                    user,
                    a: 0,
                    b: 0,
                    flags: F_CAMPAIGN,
                },
            );
            push(
                &mut pending,
                Item {
                    arrival_ms: at,
                    ts_ms: at,
                    seq: next_seq(),
                    kind: Kind::Reserve,
                    user,
                    a: 0,
                    b: 0,
                    flags,
                },
            );
            if rng.chance(100_000) {
                let again = at + 1_000 + rng.below(3_600_000) as i64;
                push(
                    &mut pending,
                    Item {
                        arrival_ms: again,
                        ts_ms: again,
                        seq: next_seq(),
                        kind: Kind::Reserve,
                        user,
                        a: 0,
                        b: 0,
                        flags: 0,
                    },
                );
            }
            if rng.chance(300_000) {
                // Inside the 24 h funnel window that opens at the page view.
                let room = (view + DAY_MS - 1 - at - 60_000).max(1) as u64;
                let when = at + 60_000 + rng.below(room) as i64;
                let amount = if rng.chance(500_000) { 79_900 } else { 99_900 };
                push(
                    &mut pending,
                    Item {
                        arrival_ms: when,
                        ts_ms: when,
                        seq: next_seq(),
                        kind: Kind::Preorder,
                        user,
                        a: amount,
                        b: 0,
                        flags: 0,
                    },
                );
            }
            if rng.chance(100_000) {
                let when = at + 1_000 + rng.below(3_600_000) as i64;
                push(
                    &mut pending,
                    Item {
                        arrival_ms: when,
                        ts_ms: when,
                        seq: next_seq(),
                        kind: Kind::Follow,
                        user,
                        a: 0,
                        b: 0,
                        flags: 0,
                    },
                );
            }
        }
        done = done.max(*target);
        segment_start = seconds * 1000;
    }

    let mut books = Books {
        day_users: vec![HashSet::new(); options.days as usize],
        days: (0..options.days)
            .map(|d| DayFigures {
                day: (options.start + chrono::Days::new(d as u64)).to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut emitter = Emitter {
        seed,
        buf: Vec::with_capacity(512),
        sink,
        rows: 0,
    };

    for h in 0..hours {
        let hour_start = plan.start_utc_ms + h * HOUR_MS;
        let day = (h / 24) as usize;
        // Hour 0 is midnight in Shanghai: the days are report days.
        let china_hour = (h % 24) as usize;
        let share = |total: u64| apportion(total, &HOUR_WEIGHTS)[china_hour];
        let mut rng = Rng::derive(seed, 2, h as u64);
        let mut items: Vec<Item> = pending.remove(&h).unwrap_or_default();

        // Photo uploads: the hour's share of the day's photos, exactly.
        let mut photos = share(plan.photos_per_day[day]);
        while photos > 0 {
            let roll = rng.below(100);
            let n = match roll {
                0..=69 => 1,
                70..=89 => 2 + rng.below(3),
                _ => 5 + rng.below(5),
            }
            .min(photos);
            photos -= n;
            let ts = hour_start + rng.below(HOUR_MS as u64) as i64;
            let user = user_id(rng.skewed(plan.users));
            let flags = if rng.chance(10_000) {
                F_STRING_FORMS
            } else {
                0
            };
            items.push(Item {
                arrival_ms: ts,
                ts_ms: ts,
                seq: next_seq(),
                kind: Kind::PhotoUpload,
                user,
                a: n as i64,
                b: 0,
                flags,
            });
        }

        // Ads: impressions follow the daily cycle; ~1% are clicked, ~5% of clicks convert.
        for _ in 0..share(plan.impressions_per_day) {
            let ts = hour_start + rng.below(HOUR_MS as u64) as i64;
            let user = user_id(rng.skewed(plan.users));
            let ad = rng.below(6) as i64;
            items.push(Item {
                arrival_ms: ts,
                ts_ms: ts,
                seq: next_seq(),
                kind: Kind::AdImpression,
                user,
                a: 1,
                b: ad,
                flags: 0,
            });
            if rng.chance(10_000) {
                let click = ts + 1_000 + rng.below(30_000) as i64;
                push(
                    &mut pending,
                    Item {
                        arrival_ms: click,
                        ts_ms: click,
                        seq: next_seq(),
                        kind: Kind::AdClick,
                        user,
                        a: 30,
                        b: ad,
                        flags: 0,
                    },
                );
                if rng.chance(50_000) {
                    let conv = click + 1_000 + rng.below(600_000) as i64;
                    push(
                        &mut pending,
                        Item {
                            arrival_ms: conv,
                            ts_ms: conv,
                            seq: next_seq(),
                            kind: Kind::AdConversion,
                            user,
                            a: 9_900,
                            b: ad,
                            flags: 0,
                        },
                    );
                }
            }
        }

        // Follows of the official account (and a few others); ~5% unfollow a day or two later.
        for _ in 0..share(plan.follows_per_day) {
            let ts = hour_start + rng.below(HOUR_MS as u64) as i64;
            let user = user_id(rng.skewed(plan.users));
            let account = if rng.chance(250_000) {
                -(1 + rng.below(3) as i64)
            } else {
                0
            };
            items.push(Item {
                arrival_ms: ts,
                ts_ms: ts,
                seq: next_seq(),
                kind: Kind::Follow,
                user,
                a: account,
                b: 0,
                flags: 0,
            });
            if rng.chance(50_000) {
                let when = ts + DAY_MS + rng.below(DAY_MS as u64) as i64;
                push(
                    &mut pending,
                    Item {
                        arrival_ms: when,
                        ts_ms: when,
                        seq: next_seq(),
                        kind: Kind::Unfollow,
                        user,
                        a: account,
                        b: 0,
                        flags: 0,
                    },
                );
            }
        }

        // Background activity.
        for _ in 0..share(plan.background_per_day[day]) {
            let ts = hour_start + rng.below(HOUR_MS as u64) as i64;
            let user = user_id(rng.skewed(plan.users));
            let kind = match rng.below(100) {
                0..=39 => Kind::AppOpen,
                40..=64 => Kind::Like,
                65..=74 => Kind::Comment,
                75..=79 => Kind::Post,
                _ => Kind::PageView,
            };
            let mut flags = if rng.chance(20_000) {
                F_STRING_FORMS
            } else {
                0
            };
            if matches!(kind, Kind::Like | Kind::Comment) && rng.chance(50_000) {
                flags |= F_CAMPAIGN;
            }
            if rng.chance(5_000) {
                flags |= F_PROPS;
            }
            items.push(Item {
                arrival_ms: ts,
                ts_ms: ts,
                seq: next_seq(),
                kind,
                user,
                a: 0,
                b: 0,
                flags,
            });
        }

        // Mess: producer retries (same bytes, a moment later), late arrivals, malformed lines.
        if options.dirty {
            let mut extra = Vec::new();
            for item in items.iter_mut() {
                if item.arrival_ms < hour_start {
                    continue;
                }
                if rng.chance(2_000) && item.flags & F_LATE == 0 {
                    item.flags |= F_LATE;
                    item.arrival_ms =
                        item.ts_ms + 2 * HOUR_MS + rng.below(4 * HOUR_MS as u64) as i64;
                } else if rng.chance(5_000) {
                    let mut copy = *item;
                    copy.flags |= F_DUPLICATE;
                    copy.arrival_ms = item.arrival_ms + 1 + rng.below(5_000) as i64;
                    extra.push(copy);
                }
                if rng.chance(500) {
                    let kind = Malformed::DRAWN[rng.below(Malformed::DRAWN.len() as u64) as usize];
                    extra.push(Item {
                        kind: Kind::Bad(kind),
                        seq: next_seq(),
                        flags: 0,
                        ..*item
                    });
                }
            }
            if h == 0 && options.oversized {
                let ts = hour_start + 1;
                extra.push(Item {
                    arrival_ms: ts,
                    ts_ms: ts,
                    seq: next_seq(),
                    kind: Kind::Bad(Malformed::TooLarge),
                    user: 1,
                    a: 0,
                    b: 0,
                    flags: 0,
                });
            }
            let (now, later): (Vec<Item>, Vec<Item>) = items
                .into_iter()
                .chain(extra)
                .partition(|i| hour_of(i.arrival_ms) <= h);
            items = now;
            for item in later {
                pending
                    .entry(hour_of(item.arrival_ms))
                    .or_default()
                    .push(item);
            }
        }

        items.sort_unstable_by_key(|i| (i.arrival_ms, i.seq));
        for item in &items {
            emitter.write(item).map_err(GenerateError::Io)?;
            books.record(item, plan.start_utc_ms);
        }
    }
    // What arrives after the last hour (late events, retries) is written at the end.
    for (_, mut items) in std::mem::take(&mut pending) {
        items.sort_unstable_by_key(|i| (i.arrival_ms, i.seq));
        for item in &items {
            emitter.write(item).map_err(GenerateError::Io)?;
            books.record(item, plan.start_utc_ms);
        }
    }

    for (d, users) in books.day_users.iter().enumerate() {
        books.days[d].distinct_users = users.len() as u64;
    }
    let milestones = plan
        .launch_targets
        .iter()
        .map(|(s, _)| Milestone {
            after_seconds: *s,
            distinct_reservers: books
                .first_reserve
                .values()
                .filter(|t| **t >= plan.launch_ms && **t < plan.launch_ms + s * 1000)
                .count() as u64,
        })
        .collect();
    Ok(Manifest {
        generator: concat!("spacepulse-datasets ", env!("CARGO_PKG_VERSION")),
        options: options.clone(),
        time_zone: "Asia/Shanghai",
        rows: emitter.rows,
        valid_messages: books.valid,
        distinct_events: books.distinct,
        duplicates: books.duplicates,
        late: books.late,
        malformed: books.malformed,
        user_pool: plan.users,
        distinct_users: books.all_users.len() as u64,
        days: books.days,
        launch: LaunchFigures {
            campaign_id: CAMPAIGN_ID,
            account_id: ACCOUNT_ID,
            start_ms: plan.launch_ms,
            start: rfc3339(plan.launch_ms),
            milestones,
            reserve_events: books.reserve_events,
            page_views: books.page_views,
            preorders: books.preorders,
        },
    })
}

/// A stride coprime with `n`, so `k * stride mod n` visits distinct ranks.
fn coprime_stride(n: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut s = (n / 2 + 1) | 1;
    while gcd(s, n) != 1 {
        s += 2;
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("writing the dataset: {0}")]
    Io(std::io::Error),
}
