//! The generator: a deterministic synthetic event stream with the platform's shapes.
//!
//! Time runs hour by hour (UTC) over `--days` report days in Asia/Shanghai (UTC+8, no daylight
//! saving). Every component draws from its own random stream keyed by (seed, component, hour),
//! so the output depends only on the options. Each hour's events are sorted by arrival time
//! and written; late events and producer retries arrive in later hours. The [`Manifest`] is
//! bookkept from the events actually written. `docs/datasets.md` gives the numbers.
//!
//! Users are ranks in a pool (`--scale` × 600 million, or `--users`); a rank's chance of being
//! active on a day falls with the rank (heavy users nearly every day, the tail a few days a
//! month), every active user opens the app, and the day's other events go to its active users
//! with a heavy tail. Ranks become ids only when written ([`Ids`]).

use std::collections::{BTreeMap, HashMap};
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
    /// Users in the pool (the platform's monthly active users).
    pub const USERS: f64 = 600_000_000.0;
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

/// How user ids look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdSpace {
    /// QQ numbers: 5 to 10 decimal digits (10,000 to 9,999,999,999).
    #[default]
    Qq,
    /// Hashed ids spread over 63 bits.
    U64,
}

impl std::str::FromStr for IdSpace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "qq" => Ok(Self::Qq),
            "u64" => Ok(Self::U64),
            _ => Err(format!("expected qq or u64, got {s:?}")),
        }
    }
}

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
    /// The user pool; default `scale` × 600 million.
    pub users: Option<u64>,
    pub id_space: IdSpace,
    pub dirty: bool,
    /// The launch's first second, epoch ms; default 10:00:00 Shanghai time on the sixth day
    /// (the last, for fewer days), so teasers and preorders fall inside the data.
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
            users: None,
            id_space: IdSpace::Qq,
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
    /// Distinct users with a campaign page view and no reservation.
    pub view_only_users: u64,
}

/// The launch's funnel as the campaigns job computes it for the campaign registered with the
/// default steps and window: every event carrying the campaign id counts, before the start
/// too; `furthest` (ClickHouse's `windowFunnel`) and `first` (anchored at the user's first
/// page view) give the distinct users reaching at least each step.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FunnelFigures {
    pub campaign_id: &'static str,
    pub steps: [&'static str; 3],
    pub window_ms: i64,
    pub furthest: Vec<u64>,
    pub first: Vec<u64>,
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
    pub id_space: IdSpace,
    /// Distinct users over the whole range (each day's are in `days`).
    pub distinct_users: u64,
    pub days: Vec<DayFigures>,
    pub launch: LaunchFigures,
    pub funnel: FunnelFigures,
}

/// The planned magnitudes for the options.
struct Plan {
    users: u64,
    ids: Ids,
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
    let days = plan.photos_per_day.len() as u64;
    let uploads: u64 = plan.photos_per_day.iter().map(|p| p * 10 / 19).sum();
    let ads = plan.impressions_per_day * days * 1_015 / 1_000;
    let reservers = plan.launch_targets.last().map_or(0, |t| t.1);
    // A view and a reserve each; retries, follows, preorders, teasers; the view-only visitors.
    let launch = reservers * 2 + reservers * 55 / 100 + view_only(reservers);
    let follows = plan.follows_per_day * days * 21 / 20;
    // Every active user opens the app: about 35% of the pool a day.
    let app_opens = plan.users * 35 / 100 * days;
    uploads + ads + launch + follows + app_opens
}

/// View-only visitors of the launch page: 60% of the reservers' number.
fn view_only(reservers: u64) -> u64 {
    reservers * 6 / 10
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
        let launch_day = (o.days as i64 - 1).min(5);
        let launch_ms = o
            .launch_at_ms
            .unwrap_or(start_utc_ms + launch_day * DAY_MS + 10 * HOUR_MS);
        if launch_ms < start_utc_ms || launch_ms >= end_utc_ms {
            return Err(OptionsError(
                "--launch-at: must fall inside the generated days".into(),
            ));
        }
        let launch_targets: Vec<(i64, u64)> = full::LAUNCH
            .iter()
            .map(|(s, n)| (*s, scaled(*n, o.scale)))
            .collect();
        let launch_users = launch_targets[4].1 + view_only(launch_targets[4].1);
        let users = match o.users {
            Some(n) if n < launch_users.max(1_000) => {
                return Err(OptionsError(format!(
                    "--users: {n} is too few: the launch at --scale {} alone has {launch_users} distinct reservers and visitors (at least {} users)",
                    o.scale,
                    launch_users.max(1_000)
                )));
            }
            Some(n) if n > MAX_USERS => {
                return Err(OptionsError(format!(
                    "--users: {n} is more than the generator's {MAX_USERS} (ten billion)"
                )));
            }
            Some(n) => n,
            None => scaled(full::USERS, o.scale).max(1_000).max(launch_users),
        };
        let ids = Ids::new(o.id_space, users)?;
        let photos_per_day = (0..o.days)
            .map(|d| photos_target(o.start + chrono::Days::new(d as u64), o.scale))
            .collect();
        let mut plan = Self {
            users,
            ids,
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
                    "--rows {rows} is too small for --scale {}: the active users' app opens, uploads, launch, ads and follows alone take about {shaped}; raise --rows or lower --scale (or --users)",
                    o.scale
                )));
            }
            let weights = vec![1; o.days as usize];
            plan.background_per_day = apportion(rows - shaped, &weights);
        }
        Ok(plan)
    }
}

/// Ranks to user ids, a bijection: ranks stay dense for the generator, ids look like the
/// platform's to the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    space: IdSpace,
    /// QQ: id = 10,000 + (a · rank + b) mod (10^10 - 10^4), `a` coprime with the modulus.
    a: u64,
}

/// The largest pool: its day sets take a bit per user and day.
const MAX_USERS: u64 = 10_000_000_000;

/// QQ numbers have 5 to 10 digits.
const QQ_FIRST: u64 = 10_000;
const QQ_SPAN: u64 = 10_000_000_000 - QQ_FIRST;
const MASK63: u64 = (1 << 63) - 1;

impl Ids {
    pub fn new(space: IdSpace, users: u64) -> Result<Self, OptionsError> {
        if space == IdSpace::Qq && users > QQ_SPAN {
            return Err(OptionsError(format!(
                "--users: {users} users do not fit QQ numbers (5 to 10 digits); use --id-space u64"
            )));
        }
        Ok(Self {
            space,
            a: coprime_from(2_654_435_761, QQ_SPAN),
        })
    }

    pub fn id(&self, rank: u64) -> u64 {
        match self.space {
            IdSpace::Qq => {
                let x = (self.a as u128 * rank as u128 + 1_234_567) % QQ_SPAN as u128;
                QQ_FIRST + x as u64
            }
            IdSpace::U64 => {
                // Odd multiplications and xor-shifts are bijections of [0, 2^63); 0 maps to 0,
                // so rank + 1 never becomes the id 0.
                let mut x = (rank + 1) & MASK63;
                x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) & MASK63;
                x ^= x >> 29;
                x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9) & MASK63;
                x ^ (x >> 32)
            }
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A rank's chance of being active on a day, in units of 2^-32: 5% + 90% · (1 - rank/n)^2, so
/// about 35% of the pool is active on a day and nearly all of it within a month.
fn active_threshold(rank: u64, n: u64) -> u64 {
    let q = (n - rank) as u128;
    let n = n as u128;
    const ONE: u128 = 1 << 32;
    (ONE * 5 / 100 + ONE * 90 / 100 * q * q / (n * n)) as u64
}

fn platform_of(user: u64, rng: &mut Rng) -> &'static str {
    // A user mostly stays on one platform.
    let h = if rng.chance(100_000) {
        rng.next_u64()
    } else {
        user.wrapping_add(7).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 40
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
    ids: Ids,
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
        let id = self.ids.id(item.user);
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
            b.extend_from_slice(int.format(id).as_bytes());
            b.push(b'"');
        } else {
            b.extend_from_slice(int.format(id).as_bytes());
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
                REGIONS
                    [((item.user.wrapping_mul(0x9E37_79B9) >> 16) % REGIONS.len() as u64) as usize],
            );
        }
        if item.flags & F_PROPS != 0 {
            b.extend_from_slice(b",\"props\":{\"app_version\":\"5.2.0\",\"network\":\"wifi\"}");
        }
        b.push(b'}');
        self.rows += 1;
        self.sink.line(Some(id), &self.buf)
    }

    fn write_bad(&mut self, kind: Malformed, item: &Item) -> std::io::Result<()> {
        let id = self.event_id(item.seq);
        let ts = item.ts_ms;
        let u = self.ids.id(item.user);
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

/// A set of ranks below a bound, one bit each.
#[derive(Clone, Default)]
struct RankSet(Vec<u64>);

impl RankSet {
    fn with_bound(n: u64) -> Self {
        Self(vec![0; n.div_ceil(64) as usize])
    }
    fn insert(&mut self, rank: u64) {
        self.0[(rank / 64) as usize] |= 1 << (rank % 64);
    }
    fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    fn union(&mut self, other: &RankSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// Funnel steps of the launch's campaign events.
const STEP_VIEW: u8 = 0;
const STEP_RESERVE: u8 = 1;
const STEP_PREORDER: u8 = 2;

/// Bookkeeping of what was written.
#[derive(Default)]
struct Books {
    day_users: Vec<RankSet>,
    days: Vec<DayFigures>,
    first_reserve: HashMap<u64, i64>,
    /// Each user's campaign events (ts, step), for the funnel.
    campaign: HashMap<u64, Vec<(i64, u8)>>,
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
        let step = match item.kind {
            Kind::PageView if item.flags & F_CAMPAIGN != 0 => Some(STEP_VIEW),
            Kind::Reserve => Some(STEP_RESERVE),
            Kind::Preorder => Some(STEP_PREORDER),
            _ => None,
        };
        if let Some(step) = step {
            self.campaign
                .entry(item.user)
                .or_default()
                .push((item.ts_ms, step));
        }
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

/// How far one user's campaign events `(ts, step)` reach through view → reserve → preorder
/// inside `window` ms: each step at or after the previous, the last at most `window` after the
/// chain's view. With `first_only`, only the chain from the user's first view counts. Written
/// apart from the pipeline's funnel (a greedy walk per view), so each checks the other.
fn funnel_level(events: &mut [(i64, u8)], window: i64, first_only: bool) -> usize {
    events.sort_unstable();
    let mut best = 0;
    for (i, &(t0, step)) in events.iter().enumerate() {
        if step != STEP_VIEW {
            continue;
        }
        let mut level = 1;
        let mut at = i;
        for next in [STEP_RESERVE, STEP_PREORDER] {
            // The earliest event of the next step after the chain's last one, in the window.
            match events[at + 1..]
                .iter()
                .position(|&(t, s)| s == next && t <= t0 + window)
            {
                Some(k) => {
                    at += 1 + k;
                    level += 1;
                }
                None => break,
            }
        }
        best = best.max(level);
        if first_only || best == 3 {
            break;
        }
    }
    best
}

impl Options {
    /// Checks the options as [`generate`] does, before any output exists.
    pub fn check(&self) -> Result<(), OptionsError> {
        Plan::new(self).map(|_| ())
    }
}

/// Generates the dataset into `sink` and returns its manifest.
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

    // The launch: reservers in milestone segments, each after a page view (some of them
    // before the start); some saw a teaser days ahead, retry, preorder (up to 48 h later,
    // not always inside the funnel's window) or follow the account. View-only visitors
    // come as the reservers do.
    let mut rng = Rng::derive(seed, 1, 0);
    let mut segment_start = 0i64;
    let mut done = 0u64;
    let stride = coprime_stride(plan.users);
    let launch_rank = |k: u64| ((k as u128 * stride as u128) % plan.users as u128) as u64;
    let campaign_item = |at: i64, seq: u64, kind: Kind, user: u64, a: i64, flags: u8| Item {
        arrival_ms: at,
        ts_ms: at,
        seq,
        kind,
        user,
        a,
        b: 0,
        flags,
    };
    let mut reserve_times = Vec::new();
    for (seconds, target) in &plan.launch_targets {
        let count = target.saturating_sub(done);
        let span = seconds * 1000 - segment_start;
        for i in 0..count {
            let user = launch_rank(done + i);
            let at = plan.launch_ms
                + segment_start
                + (span * i as i64) / count.max(1) as i64
                + rng.below((span / count.max(1) as i64).max(1) as u64) as i64;
            let at = at.min(plan.launch_ms + seconds * 1000 - 1);
            reserve_times.push(at);
            let view = at - 1_000 - rng.below(120_000) as i64;
            let flags = if rng.chance(10_000) {
                F_STRING_FORMS
            } else {
                0
            };
            if rng.chance(50_000) {
                // A teaser view 1 to 5 days before the start.
                let teaser = plan.launch_ms - DAY_MS - rng.below(4 * DAY_MS as u64) as i64;
                let item = campaign_item(teaser, next_seq(), Kind::PageView, user, 0, F_CAMPAIGN);
                push(&mut pending, item);
            }
            let item = campaign_item(view, next_seq(), Kind::PageView, user, 0, F_CAMPAIGN);
            push(&mut pending, item);
            let item = campaign_item(at, next_seq(), Kind::Reserve, user, 0, flags);
            push(&mut pending, item);
            if rng.chance(100_000) {
                let again = at + 1_000 + rng.below(3_600_000) as i64;
                let item = campaign_item(again, next_seq(), Kind::Reserve, user, 0, 0);
                push(&mut pending, item);
            }
            if rng.chance(300_000) {
                // Seven in ten inside the 24 h window that opens at the page view, the rest
                // after it, up to 48 h after the reservation.
                let inside = (view + DAY_MS - 1 - at - 60_000).max(1) as u64;
                let when = if rng.chance(700_000) {
                    at + 60_000 + rng.below(inside) as i64
                } else {
                    let from = view + DAY_MS + 1;
                    from + rng.below((at + 2 * DAY_MS - from).max(1) as u64) as i64
                };
                let amount = if rng.chance(500_000) { 79_900 } else { 99_900 };
                let item = campaign_item(when, next_seq(), Kind::Preorder, user, amount, 0);
                push(&mut pending, item);
            }
            if rng.chance(100_000) {
                let when = at + 1_000 + rng.below(3_600_000) as i64;
                let item = campaign_item(when, next_seq(), Kind::Follow, user, 0, 0);
                push(&mut pending, item);
            }
        }
        done = done.max(*target);
        segment_start = seconds * 1000;
    }
    let visitors = view_only(done);
    for j in 0..visitors {
        let user = launch_rank(done + j);
        let when = if rng.chance(100_000) || reserve_times.is_empty() {
            plan.launch_ms - DAY_MS - rng.below(4 * DAY_MS as u64) as i64
        } else {
            let like = reserve_times[rng.below(reserve_times.len() as u64) as usize];
            like - 1_000 - rng.below(300_000) as i64
        };
        let item = campaign_item(when, next_seq(), Kind::PageView, user, 0, F_CAMPAIGN);
        push(&mut pending, item);
    }
    drop(reserve_times);

    let mut books = Books {
        day_users: vec![RankSet::with_bound(plan.users); options.days as usize],
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
        ids: plan.ids,
        buf: Vec::with_capacity(512),
        sink,
        rows: 0,
    };

    let mut active = Active::default();
    for h in 0..hours {
        let hour_start = plan.start_utc_ms + h * HOUR_MS;
        let day = (h / 24) as usize;
        // Hour 0 is midnight in Shanghai: the days are report days.
        let china_hour = (h % 24) as usize;
        let share = |total: u64| apportion(total, &HOUR_WEIGHTS)[china_hour];
        if china_hour == 0 {
            active.plan_day(seed, day as u64, plan.users);
        }
        let mut rng = Rng::derive(seed, 2, h as u64);
        let mut items: Vec<Item> = pending.remove(&h).unwrap_or_default();

        // Every active user opens the app at least once a day, at an hour of the daily cycle.
        for &user in &active.opens[china_hour] {
            let ts = hour_start + rng.below(HOUR_MS as u64) as i64;
            items.push(Item {
                arrival_ms: ts,
                ts_ms: ts,
                seq: next_seq(),
                kind: Kind::AppOpen,
                user,
                a: 0,
                b: 0,
                flags: 0,
            });
        }

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
            let user = active.pick(&mut rng);
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
            let user = active.pick(&mut rng);
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
            let user = active.pick(&mut rng);
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
            let user = active.pick(&mut rng);
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

    let mut all_users = RankSet::with_bound(plan.users);
    for (d, users) in books.day_users.iter().enumerate() {
        books.days[d].distinct_users = users.len();
        all_users.union(users);
    }
    let mut furthest = vec![0u64; 3];
    let mut first = vec![0u64; 3];
    let mut view_only_users = 0;
    for events in books.campaign.values_mut() {
        for (counts, first_only) in [(&mut furthest, false), (&mut first, true)] {
            for c in counts
                .iter_mut()
                .take(funnel_level(events, DAY_MS, first_only))
            {
                *c += 1;
            }
        }
        let viewed = events.iter().any(|e| e.1 == STEP_VIEW);
        view_only_users += u64::from(viewed && events.iter().all(|e| e.1 != STEP_RESERVE));
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
        id_space: options.id_space,
        distinct_users: all_users.len(),
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
            view_only_users,
        },
        funnel: FunnelFigures {
            campaign_id: CAMPAIGN_ID,
            steps: ["page_view", "reserve", "preorder"],
            window_ms: DAY_MS,
            furthest,
            first,
        },
    })
}

/// A day's active users: every one opens the app; the day's other events go to them with a
/// heavy tail (the lowest ranks, the heaviest users, most often).
#[derive(Default)]
struct Active {
    /// The day's active ranks, ascending.
    ranks: Vec<u64>,
    /// The ranks that open the app in each China hour of the day.
    opens: [Vec<u64>; 24],
}

impl Active {
    fn plan_day(&mut self, seed: u64, day: u64, n: u64) {
        self.ranks.clear();
        self.opens.iter_mut().for_each(Vec::clear);
        let mut cumulative = [0u64; 24];
        let mut sum = 0;
        for (c, w) in cumulative.iter_mut().zip(HOUR_WEIGHTS) {
            sum += w;
            *c = sum;
        }
        let mut rng = Rng::derive(seed, 3, day);
        for rank in 0..n {
            let x = rng.next_u64();
            if x >> 32 < active_threshold(rank, n) {
                self.ranks.push(rank);
                let w = ((x & 0xFFFF_FFFF) * sum) >> 32;
                self.opens[cumulative.partition_point(|c| *c <= w)].push(rank);
            }
        }
    }

    fn pick(&self, rng: &mut Rng) -> u64 {
        match self.ranks.len() {
            0 => 0,
            n => self.ranks[rng.skewed(n as u64) as usize],
        }
    }
}

/// A stride coprime with `n`, so `k * stride mod n` visits distinct ranks.
fn coprime_stride(n: u64) -> u64 {
    coprime_from((n / 2 + 1) | 1, n)
}

/// The first odd number from `start` (odd, below `n`) that is coprime with `n`.
fn coprime_from(mut start: u64, n: u64) -> u64 {
    while gcd(start, n) != 1 {
        start += 2;
    }
    start
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("writing the dataset: {0}")]
    Io(std::io::Error),
}
