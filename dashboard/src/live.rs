//! Live peaks for operators: with `--brokers`, the server reads the events topic from its
//! newest offsets and keeps per-second counters for the last 24 hours in memory: events,
//! photos, reservations per campaign (the running launch curve), and active users over the
//! last minute and hour (HyperLogLog++). Once a second a snapshot goes to every browser on
//! `GET /api/v1/live/stream` (Server-Sent Events).
//!
//! Time is the stream's: the clock is the newest event time seen, so a replay at high speed
//! (the demo's) shows its launch as it happened, and a late event lands in its own second if
//! that second is still within the 24 hours. Each `event_id` counts once within a window of
//! 5 to 10 minutes (a producer's retry comes within seconds); the jobs' tables, which
//! deduplicate over all time, remain the numbers of record.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use query::sketch::{Hll, StableHash};
use query::tz::{LocalClock, ReportTz};
use serde::Serialize;
use tokio::sync::watch;

/// Seconds of history kept: 24 hours.
pub const HISTORY: i64 = 86_400;
/// Active users are sketched in buckets of this many seconds.
const BUCKET: i64 = 10;
const BUCKETS: usize = 360;
/// A launch curve is followed for 24 hours from its first reservation.
const LAUNCH_SPAN: i64 = 86_400;
/// Each half of the event-id window, in seconds of stream time.
const DEDUP_HALF: i64 = 300;
/// An event stamped further ahead of this server's clock is not counted: one event with a
/// wrong clock would move the stream clock and blank "now" (the ingester still takes events
/// up to 24 h ahead).
pub const MAX_AHEAD_SECONDS: i64 = 300;
/// Campaigns followed at once; reservations for more are tallied, not followed (any event
/// may carry any campaign id).
pub const MAX_LAUNCHES: usize = 1_000;
/// Launches in a snapshot: the newest.
pub const SNAPSHOT_LAUNCHES: usize = 20;

/// The launch milestones: seconds after the first reservation (the jobs' too).
pub const MILESTONES: [i64; 7] = lake::registry::LAUNCH_MILESTONES;

#[derive(Clone, Copy, Default)]
struct Second {
    at: i64,
    events: u64,
    photos: u64,
}

struct Bucket {
    at: i64,
    users: Hll,
}

struct Launch {
    start: i64,
    last: i64,
    users: HashSet<u64>,
    /// New reservers per second since `start`.
    new_users: Vec<u64>,
}

/// The counters; no I/O, so they are tested without a broker.
pub struct Counters {
    tz: ReportTz,
    cutter: LocalClock,
    clock: Option<i64>,
    seconds: Vec<Second>,
    buckets: Vec<Bucket>,
    launches: HashMap<String, Launch>,
    seen: [HashSet<u64>; 2],
    seen_since: i64,
    total_events: u64,
    duplicates: u64,
    too_old: u64,
    too_new: u64,
    launches_dropped: u64,
}

/// One event, as the counters need it.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    pub event_id: &'a str,
    pub ts_ms: i64,
    pub user_id: u64,
    pub event_type: &'a str,
    pub photos: Option<u32>,
    pub campaign_id: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Peak {
    /// The second or minute's start, RFC 3339 in the report time zone.
    pub at: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Milestone {
    pub after_seconds: i64,
    pub users: u64,
    /// Whether the stream clock has passed this milestone.
    pub reached: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LaunchNow {
    pub campaign_id: String,
    pub started_at: String,
    pub seconds_since_start: i64,
    pub users: u64,
    pub milestones: Vec<Milestone>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TodayPeaks {
    pub day: String,
    pub events: u64,
    pub photos: u64,
    pub peak_second_events: Option<Peak>,
    pub peak_minute_events: Option<Peak>,
    pub peak_second_photos: Option<Peak>,
    pub peak_minute_photos: Option<Peak>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActiveUsers {
    pub last_minute: u64,
    pub last_hour: u64,
    pub estimator: &'static str,
    pub relative_error: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsumerState {
    pub brokers: String,
    pub topic: String,
    pub consumed: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub too_old: u64,
    /// Events stamped more than [`MAX_AHEAD_SECONDS`] ahead of the server's clock.
    pub too_new: u64,
    /// Reservations for campaigns past the [`MAX_LAUNCHES`] followed.
    pub launches_dropped: u64,
    /// Messages on the broker not yet read (librdkafka's statistics); `null` until known.
    pub lag: Option<i64>,
}

/// What the browser gets each second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    pub tz: &'static str,
    /// The stream clock: the newest event second seen; `null` before the first event.
    pub clock: Option<String>,
    /// Events and photos in the last complete second.
    pub events_per_second: u64,
    pub photos_per_second: u64,
    pub events_total: u64,
    pub today: Option<TodayPeaks>,
    pub active_users: ActiveUsers,
    /// Campaigns with a reservation within the last 24 hours, newest first (at most
    /// [`SNAPSHOT_LAUNCHES`]).
    pub launches: Vec<LaunchNow>,
    pub consumer: ConsumerState,
}

fn hash_id(id: &str) -> u64 {
    let mut h = StableHash.build_hasher();
    h.write(id.as_bytes());
    h.finish()
}

impl Counters {
    pub fn new(tz: ReportTz) -> Self {
        Self {
            tz,
            cutter: LocalClock::new(tz),
            clock: None,
            seconds: vec![Second::default(); HISTORY as usize],
            buckets: (0..BUCKETS)
                .map(|_| Bucket {
                    at: i64::MIN,
                    users: Hll::new(),
                })
                .collect(),
            launches: HashMap::new(),
            seen: [HashSet::new(), HashSet::new()],
            seen_since: i64::MIN,
            total_events: 0,
            duplicates: 0,
            too_old: 0,
            too_new: 0,
            launches_dropped: 0,
        }
    }

    /// Counts one event; `false` when it was a duplicate, older than the window or too far
    /// ahead of this server's clock.
    pub fn add(&mut self, e: Tick<'_>) -> bool {
        self.add_at(e, chrono::Utc::now().timestamp())
    }

    /// [`Counters::add`] with the server's clock at `wall` (seconds).
    fn add_at(&mut self, e: Tick<'_>, wall: i64) -> bool {
        let sec = e.ts_ms.div_euclid(1000);
        if sec > wall.saturating_add(MAX_AHEAD_SECONDS) {
            self.too_new += 1;
            return false;
        }
        let clock = *self.clock.get_or_insert(sec);
        if sec <= clock - HISTORY {
            self.too_old += 1;
            return false;
        }
        if sec > clock {
            self.clock = Some(sec);
        }
        let clock = sec.max(clock);
        // Rotate the event-id window: the older half goes when the newer one is full.
        if self.seen_since == i64::MIN {
            self.seen_since = clock;
        }
        if clock - self.seen_since >= DEDUP_HALF {
            self.seen.swap(0, 1);
            self.seen[0].clear();
            self.seen_since = clock;
        }
        let id = hash_id(e.event_id);
        if self.seen[1].contains(&id) || !self.seen[0].insert(id) {
            self.duplicates += 1;
            return false;
        }
        self.total_events += 1;
        let photos = match e.event_type {
            "photo_upload" => u64::from(e.photos.unwrap_or(1)),
            _ => 0,
        };
        let slot = &mut self.seconds[sec.rem_euclid(HISTORY) as usize];
        if slot.at != sec {
            *slot = Second {
                at: sec,
                ..Second::default()
            };
        }
        slot.events += 1;
        slot.photos += photos;

        let b = sec.div_euclid(BUCKET);
        let bucket = &mut self.buckets[b.rem_euclid(BUCKETS as i64) as usize];
        if bucket.at != b {
            bucket.at = b;
            bucket.users = Hll::new();
        }
        bucket.users.insert(e.user_id);

        if e.event_type == "reserve"
            && let Some(c) = e.campaign_id
        {
            if !self.launches.contains_key(c) && self.launches.len() >= MAX_LAUNCHES {
                self.launches_dropped += 1;
                return true;
            }
            let launch = self
                .launches
                .entry(c.to_string())
                .or_insert_with(|| Launch {
                    start: sec,
                    last: sec,
                    users: HashSet::new(),
                    new_users: Vec::new(),
                });
            let offset = sec - launch.start;
            if (0..LAUNCH_SPAN).contains(&offset) && launch.users.insert(e.user_id) {
                let offset = offset as usize;
                if launch.new_users.len() <= offset {
                    launch.new_users.resize(offset + 1, 0);
                }
                launch.new_users[offset] += 1;
            }
            launch.last = launch.last.max(sec);
        }
        true
    }

    fn second(&self, sec: i64) -> Second {
        let s = self.seconds[sec.rem_euclid(HISTORY) as usize];
        if s.at == sec {
            s
        } else {
            Second {
                at: sec,
                ..Second::default()
            }
        }
    }

    fn stamp(&mut self, sec: i64) -> String {
        let local = sec * 1_000_000 + self.cutter.offset_us(sec * 1_000_000);
        let offset_s = (local - sec * 1_000_000) / 1_000_000;
        let tz = chrono::FixedOffset::east_opt(offset_s as i32).expect("offset within a day");
        chrono::DateTime::from_timestamp(sec, 0)
            .expect("in range")
            .with_timezone(&tz)
            .to_rfc3339()
    }

    /// Events and photos per second over the `span` seconds up to the clock, oldest first.
    pub fn series(&self, span: i64) -> Vec<(i64, u64, u64)> {
        let Some(clock) = self.clock else {
            return Vec::new();
        };
        let span = span.clamp(1, HISTORY);
        (clock - span + 1..=clock)
            .map(|s| {
                let x = self.second(s);
                (s, x.events, x.photos)
            })
            .collect()
    }

    /// A launch's users per second since its start (cumulative), up to the clock or 24 h.
    pub fn launch_curve(&self, campaign: &str) -> Option<(i64, Vec<u64>)> {
        let l = self.launches.get(campaign)?;
        let mut total = 0u64;
        let curve = l
            .new_users
            .iter()
            .map(|n| {
                total += *n;
                total
            })
            .collect();
        Some((l.start, curve))
    }

    pub fn snapshot(&mut self, consumer: ConsumerState) -> Snapshot {
        let active_empty = ActiveUsers {
            last_minute: 0,
            last_hour: 0,
            estimator: query::sketch::HLL_ESTIMATOR,
            relative_error: query::sketch::hll_relative_error(),
        };
        let Some(clock) = self.clock else {
            return Snapshot {
                tz: self.tz.name(),
                clock: None,
                events_per_second: 0,
                photos_per_second: 0,
                events_total: 0,
                today: None,
                active_users: active_empty,
                launches: Vec::new(),
                consumer,
            };
        };
        // The last complete second is the one before the clock's.
        let last = self.second(clock - 1);

        // Today: from the report day's start (or 24 h back) to the clock.
        let day = self.cutter.day(clock * 1_000_000);
        let day_start = self.tz.day_start_us(day).div_euclid(1_000_000);
        let from = day_start.max(clock - HISTORY + 1);
        let mut today = TodayPeaks {
            day: query::tz::format_day(day),
            events: 0,
            photos: 0,
            peak_second_events: None,
            peak_minute_events: None,
            peak_second_photos: None,
            peak_minute_photos: None,
        };
        let (mut ps_e, mut ps_p) = ((0u64, 0i64), (0u64, 0i64));
        let (mut pm_e, mut pm_p) = ((0u64, 0i64), (0u64, 0i64));
        let (mut minute, mut m_e, mut m_p) = (from.div_euclid(60), 0u64, 0u64);
        for s in from..=clock {
            let x = self.second(s);
            let (e, p) = (x.events, x.photos);
            if s.div_euclid(60) != minute {
                minute = s.div_euclid(60);
                (m_e, m_p) = (0, 0);
            }
            m_e += e;
            m_p += p;
            today.events += e;
            today.photos += p;
            if e > ps_e.0 {
                ps_e = (e, s);
            }
            if p > ps_p.0 {
                ps_p = (p, s);
            }
            if m_e > pm_e.0 {
                pm_e = (m_e, minute * 60);
            }
            if m_p > pm_p.0 {
                pm_p = (m_p, minute * 60);
            }
        }
        let mut peak = |(count, at): (u64, i64)| {
            (count > 0).then(|| Peak {
                at: self.stamp(at),
                count,
            })
        };
        today.peak_second_events = peak(ps_e);
        today.peak_minute_events = peak(pm_e);
        today.peak_second_photos = peak(ps_p);
        today.peak_minute_photos = peak(pm_p);

        // Active users: the buckets within the last minute and hour.
        let now_bucket = clock.div_euclid(BUCKET);
        let mut minute_hll = Hll::new();
        let mut hour_hll = Hll::new();
        for b in self.buckets.iter().filter(|b| b.at != i64::MIN) {
            let age = now_bucket - b.at;
            if (0..(3600 / BUCKET)).contains(&age) {
                hour_hll.merge(&b.users).expect("same precision");
                if age < 60 / BUCKET {
                    minute_hll.merge(&b.users).expect("same precision");
                }
            }
        }

        // Launches within the last 24 hours, newest first; forget older ones.
        self.launches.retain(|_, l| l.last > clock - HISTORY);
        let mut launches: Vec<(&String, &Launch)> = self.launches.iter().collect();
        launches.sort_by_key(|(id, l)| (std::cmp::Reverse(l.start), (*id).clone()));
        let launches: Vec<(String, i64, Vec<Milestone>, u64)> = launches
            .into_iter()
            .take(SNAPSHOT_LAUNCHES)
            .map(|(id, l)| {
                let mut total = 0u64;
                let mut cumulative = Vec::with_capacity(l.new_users.len());
                for n in &l.new_users {
                    total += *n;
                    cumulative.push(total);
                }
                let milestones = MILESTONES
                    .iter()
                    .map(|&after| {
                        // Users within the first `after` seconds: offsets 0..after.
                        let idx = (after as usize).min(cumulative.len());
                        Milestone {
                            after_seconds: after,
                            users: if idx == 0 { 0 } else { cumulative[idx - 1] },
                            reached: clock - l.start >= after,
                        }
                    })
                    .collect();
                (id.clone(), l.start, milestones, total)
            })
            .collect();
        let launches = launches
            .into_iter()
            .map(|(campaign_id, start, milestones, users)| LaunchNow {
                started_at: self.stamp(start),
                seconds_since_start: clock - start,
                campaign_id,
                users,
                milestones,
            })
            .collect();

        Snapshot {
            tz: self.tz.name(),
            clock: Some(self.stamp(clock)),
            events_per_second: last.events,
            photos_per_second: last.photos,
            events_total: self.total_events,
            today: Some(today),
            active_users: ActiveUsers {
                last_minute: minute_hll.estimate().round() as u64,
                last_hour: hour_hll.estimate().round() as u64,
                ..active_empty
            },
            launches,
            consumer: ConsumerState {
                duplicates: self.duplicates,
                too_old: self.too_old,
                too_new: self.too_new,
                launches_dropped: self.launches_dropped,
                ..consumer
            },
        }
    }
}

/// Where the live consumer reads.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub brokers: String,
    pub topic: String,
    /// Its own consumer group (it never commits offsets: it starts from the newest each time).
    pub group: String,
    /// librdkafka settings `key=value` passed through.
    pub overrides: Vec<(String, String)>,
}

/// The running live view: counters fed by the consumer, a snapshot each second.
pub struct Live {
    pub options: LiveOptions,
    counters: Mutex<Counters>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    consumed: AtomicU64,
    rejected: AtomicU64,
    lag: AtomicI64,
}

impl Live {
    pub fn new(options: LiveOptions, tz: ReportTz) -> Arc<Self> {
        let mut counters = Counters::new(tz);
        let first = counters.snapshot(ConsumerState {
            brokers: options.brokers.clone(),
            topic: options.topic.clone(),
            consumed: 0,
            rejected: 0,
            duplicates: 0,
            too_old: 0,
            too_new: 0,
            launches_dropped: 0,
            lag: None,
        });
        Arc::new(Self {
            options,
            counters: Mutex::new(counters),
            snapshots: watch::channel(Arc::new(first)).0,
            consumed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            lag: AtomicI64::new(-1),
        })
    }

    /// Counts one Kafka message: a valid event is counted, anything else is tallied as
    /// rejected (the ingester, not the live view, keeps rejected bytes).
    pub fn message(&self, payload: &[u8]) {
        self.consumed.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now().timestamp_millis();
        match lake::decode::parse(payload, now) {
            Ok(e) => {
                let tick = Tick {
                    event_id: &e.event_id,
                    ts_ms: e.ts_ms,
                    user_id: e.user_id,
                    event_type: &e.event_type,
                    photos: e.photos,
                    campaign_id: e.campaign_id.as_deref(),
                };
                // The clock the decoder was given, not a second reading of it.
                self.counters
                    .lock()
                    .expect("not poisoned")
                    .add_at(tick, now.div_euclid(1000));
            }
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Messages on the broker the live consumer has not read, when known.
    pub fn lag(&self) -> Option<i64> {
        Some(self.lag.load(Ordering::Relaxed)).filter(|l| *l >= 0)
    }

    /// Takes a snapshot now and sends it to every subscriber.
    pub fn publish(&self) -> Arc<Snapshot> {
        let consumer = ConsumerState {
            brokers: self.options.brokers.clone(),
            topic: self.options.topic.clone(),
            consumed: self.consumed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            duplicates: 0,
            too_old: 0,
            too_new: 0,
            launches_dropped: 0,
            lag: self.lag(),
        };
        let snap = Arc::new(
            self.counters
                .lock()
                .expect("not poisoned")
                .snapshot(consumer),
        );
        self.snapshots.send_replace(snap.clone());
        snap
    }

    pub fn latest(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    pub fn series(&self, span: i64) -> Vec<(i64, u64, u64)> {
        self.counters.lock().expect("not poisoned").series(span)
    }

    pub fn launch_curve(&self, campaign: &str) -> Option<(i64, Vec<u64>)> {
        self.counters
            .lock()
            .expect("not poisoned")
            .launch_curve(campaign)
    }

    pub fn stamp(&self, sec: i64) -> String {
        self.counters.lock().expect("not poisoned").stamp(sec)
    }
}

pub use consumer::{Connected, connect};

mod consumer {
    use super::*;
    use futures::StreamExt;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::statistics::Statistics;
    use rdkafka::{ClientContext, Offset, TopicPartitionList};

    struct Ctx {
        topic: String,
        lag: Arc<Live>,
    }

    impl ClientContext for Ctx {
        fn stats(&self, statistics: Statistics) {
            let Some(topic) = statistics.topics.get(&self.topic) else {
                return;
            };
            let lags: Vec<i64> = topic
                .partitions
                .values()
                .filter(|p| p.partition >= 0)
                .map(|p| p.consumer_lag)
                .collect();
            // A partition not fetched from yet reports -1: the known ones are the lag.
            if lags.iter().any(|l| *l >= 0) {
                let known: i64 = lags.iter().filter(|l| **l >= 0).sum();
                self.lag.lag.store(known, Ordering::Relaxed);
            }
        }
    }
    impl ConsumerContext for Ctx {}

    /// A consumer assigned every partition of the topic at its newest offset.
    pub struct Connected {
        live: Arc<Live>,
        consumer: StreamConsumer<Ctx>,
    }

    /// Connects to the brokers and assigns the topic's partitions: an unreachable broker or
    /// an unknown topic is an error here, before the server starts.
    pub async fn connect(live: Arc<Live>) -> Result<Connected, String> {
        let o = &live.options;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &o.brokers)
            .set("group.id", &o.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("statistics.interval.ms", "1000");
        for (k, v) in &o.overrides {
            config.set(k, v);
        }
        let consumer: StreamConsumer<Ctx> = config
            .create_with_context(Ctx {
                topic: o.topic.clone(),
                lag: live.clone(),
            })
            .map_err(|e| format!("--brokers {}: {e}", o.brokers))?;
        // Every partition, assigned rather than subscribed: each server sees the whole
        // topic, and no group coordinator is involved (so a restart never waits on one).
        let (consumer, metadata) = {
            let topic = o.topic.clone();
            let brokers = o.brokers.clone();
            tokio::task::spawn_blocking(move || {
                let m = consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
                    .map_err(|e| format!("--brokers {brokers}: topic {topic:?}: {e}"))?;
                Ok::<_, String>((consumer, m))
            })
            .await
            .map_err(|e| e.to_string())??
        };
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            if let Some(err) = t.error() {
                return Err(format!("topic {:?}: {err:?}", t.name()));
            }
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::End)
                    .map_err(|e| e.to_string())?;
            }
        }
        if tpl.count() == 0 {
            return Err(format!("topic {:?} has no partitions", o.topic));
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        tracing::info!(
            brokers = %o.brokers, topic = %o.topic, partitions = tpl.count(),
            "live peaks: reading from the newest offsets"
        );
        Ok(Connected {
            live: live.clone(),
            consumer,
        })
    }

    impl Connected {
        /// Counts messages and publishes a snapshot each second until `shutdown` resolves.
        pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
            let Connected { live, consumer } = self;

            let ticker = {
                let live = live.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_secs(1));
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    loop {
                        every.tick().await;
                        live.publish();
                    }
                })
            };
            let mut stream = consumer.stream();
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    m = stream.next() => match m {
                        Some(Ok(m)) => {
                            if let Some(payload) = m.payload() {
                                live.message(payload);
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "live peaks: consumer error"),
                        None => break,
                    }
                }
            }
            ticker.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick<'a>(id: &'a str, sec: i64, user: u64, t: &'a str) -> Tick<'a> {
        Tick {
            event_id: id,
            ts_ms: sec * 1000 + 500,
            user_id: user,
            event_type: t,
            photos: None,
            campaign_id: Some("c1"),
        }
    }

    fn consumer() -> ConsumerState {
        ConsumerState {
            brokers: String::new(),
            topic: String::new(),
            consumed: 0,
            rejected: 0,
            duplicates: 0,
            too_old: 0,
            too_new: 0,
            launches_dropped: 0,
            lag: None,
        }
    }

    #[test]
    fn counts_once_per_event_id_and_finds_peaks() {
        let tz = ReportTz::default();
        let mut c = Counters::new(tz);
        // 2026-01-01 16:00:00 UTC is the start of 2026-01-02 in Asia/Shanghai.
        let day0 = 1_767_283_200;
        let mut n = 0;
        let mut expected_peak = 0u64;
        for s in 0..120 {
            let per = if s == 70 { 9 } else { 1 + s % 3 };
            if s == 70 {
                expected_peak = per as u64;
            }
            for k in 0..per {
                n += 1;
                let id = format!("e{n}");
                assert!(c.add(tick(&id, day0 + s, k as u64, "app_open")));
                // A producer retry: the same id again.
                assert!(!c.add(tick(&id, day0 + s, k as u64, "app_open")));
            }
        }
        let snap = c.snapshot(consumer());
        assert_eq!(snap.events_total, n);
        assert_eq!(snap.consumer.duplicates, n);
        let today = snap.today.expect("today");
        assert_eq!(today.day, "2026-01-02");
        assert_eq!(today.events, n);
        let ps = today.peak_second_events.expect("peak");
        assert_eq!(ps.count, expected_peak);
        assert_eq!(ps.at, "2026-01-02T00:01:10+08:00");
        // Minute 1 (seconds 60..120) holds the 9.
        let pm = today.peak_minute_events.expect("minute");
        assert_eq!(pm.at, "2026-01-02T00:01:00+08:00");
        assert_eq!(snap.events_per_second, 1 + 118 % 3);
        assert_eq!(snap.active_users.last_minute, 9);
    }

    #[test]
    fn yesterday_is_not_today_and_old_events_are_dropped() {
        let mut c = Counters::new(ReportTz::default());
        let day0 = 1_767_283_200;
        assert!(c.add(tick("a", day0 - 1, 1, "app_open")));
        assert!(c.add(tick("b", day0 + 5, 2, "app_open")));
        assert!(!c.add(tick("c", day0 + 5 - HISTORY, 3, "app_open")));
        let snap = c.snapshot(consumer());
        assert_eq!(snap.today.expect("today").events, 1);
        assert_eq!(snap.consumer.too_old, 1);
        assert_eq!(snap.events_total, 2);
    }

    /// One event stamped an hour ahead of the server's clock neither counts nor moves the
    /// stream clock; campaigns past the cap are tallied, not followed; a snapshot carries
    /// the newest launches only.
    #[test]
    fn the_clock_and_the_launches_are_bounded() {
        let mut c = Counters::new(ReportTz::default());
        let wall = 1_767_283_200;
        assert!(c.add_at(tick("a", wall - 10, 1, "app_open"), wall));
        assert!(!c.add_at(tick("b", wall + 3_600, 2, "app_open"), wall));
        assert!(c.add_at(tick("c", wall + MAX_AHEAD_SECONDS, 3, "app_open"), wall));
        let snap = c.snapshot(consumer());
        assert_eq!(snap.consumer.too_new, 1);
        assert_eq!(snap.events_total, 2);
        let clock = snap.clock.unwrap();
        assert!(clock.ends_with("00:05:00+08:00"), "{clock}");
        for k in 0..MAX_LAUNCHES + 5 {
            let (id, campaign) = (format!("r{k}"), format!("c{k}"));
            let mut t = tick(&id, wall - 5 + (k % 3) as i64, k as u64, "reserve");
            t.campaign_id = Some(&campaign);
            assert!(c.add_at(t, wall));
        }
        assert_eq!(c.launches.len(), MAX_LAUNCHES);
        let snap = c.snapshot(consumer());
        assert_eq!(snap.consumer.launches_dropped, 5);
        assert_eq!(snap.launches.len(), SNAPSHOT_LAUNCHES);
        assert!(
            snap.launches
                .windows(2)
                .all(|w| w[0].started_at >= w[1].started_at)
        );
    }

    #[test]
    fn launch_milestones_count_distinct_reservers() {
        let mut c = Counters::new(ReportTz::default());
        let t0 = 1_767_283_200;
        let mut n = 0;
        // 5 users in the first second (one twice), 3 more by +30 s, 2 more at +90 s.
        for (s, u) in [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 1)]
            .into_iter()
            .chain([(10, 6), (20, 7), (30, 8), (90, 9), (90, 10)])
        {
            n += 1;
            let id = format!("r{n}");
            c.add(tick(&id, t0 + s, u, "reserve"));
        }
        let snap = c.snapshot(consumer());
        let l = &snap.launches[0];
        assert_eq!(l.campaign_id, "c1");
        assert_eq!(l.users, 10);
        let m: Vec<(i64, u64, bool)> = l
            .milestones
            .iter()
            .map(|m| (m.after_seconds, m.users, m.reached))
            .collect();
        assert_eq!(
            m,
            vec![
                (1, 5, true),
                (10, 5, true),
                (60, 8, true),
                (600, 10, false),
                (1800, 10, false),
                (3600, 10, false),
                (86400, 10, false)
            ]
        );
        let (start, curve) = c.launch_curve("c1").expect("curve");
        assert_eq!(start, t0);
        assert_eq!(curve.last(), Some(&10));
    }
}
