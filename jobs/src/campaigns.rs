//! Campaigns: each campaign's funnel (users per step, conversion, drop-off, time to convert,
//! by platform and region) and launch curve (distinct reserving users at milestones after the
//! start, and per second through the first hour) and reach per report day.
//!
//! Campaigns come from the registry; campaign ids seen in events but not registered get the
//! default funnel starting at their first reservation (their first event without one). A
//! funnel takes every event carrying the campaign's id, before its start too (ClickHouse's
//! `windowFunnel`: the window alone decides); the start is where the launch curve begins. A
//! funnel spans every day, so the job recomputes all campaigns when events changed or the
//! registry did (the tables then record both versions) and replaces its tables whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use lake::registry::{Campaign, DEFAULT_MODE, DEFAULT_STEPS, DEFAULT_WINDOW_MS, Registry};
use query::funnel::{FunnelMode, MAX_STEPS, Reached, quantile_unsorted, reach};
use query::sketch::{HLL_ESTIMATOR, HLL_PRECISION, Hll, bitmap_to_bytes, hll_relative_error};
use query::tz::{HOUR_US, LocalClock, SEC_US};

use crate::publish::{Scope, publish, schema};
use crate::scan::{EventFile, Source, files_with, fold_sources, ints, strs, times};
use crate::{Ctx, Error, Job, Result};

/// Launch milestones, in seconds after the start.
pub const MILESTONES: [i64; 7] = lake::registry::LAUNCH_MILESTONES;
/// Each campaign's reach per report day.
pub const DAILY_TABLE: &str = "campaigns_daily";
/// The per-second launch curve covers the first hour.
pub const CURVE_SECONDS: i64 = 3600;

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

pub fn funnels_schema() -> SchemaRef {
    schema(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("account_id", DataType::Utf8, true),
        Field::new("registered", DataType::Boolean, false),
        ts_field("start", false),
        Field::new("window_ms", DataType::Int64, false),
        Field::new("mode", DataType::Utf8, false),
        Field::new("breakdown", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("step", DataType::Int32, false),
        Field::new("step_type", DataType::Utf8, false),
        Field::new("users", DataType::Int64, false),
        Field::new("conversion_from_previous", DataType::Float64, true),
        Field::new("conversion_overall", DataType::Float64, true),
        Field::new("drop_off", DataType::Int64, true),
        Field::new("dropped_window_closed", DataType::Int64, true),
        Field::new("dropped_never_came_back", DataType::Int64, true),
        Field::new("median_seconds_from_previous", DataType::Float64, true),
        Field::new("p90_seconds_from_previous", DataType::Float64, true),
    ])
}

/// The campaign's reach per report day: distinct users with an event of the campaign's steps
/// that day, those of them whose first such event it was, and the users themselves (a
/// serialized RoaringTreemap that unions exactly over any range, and an HLL++ sketch).
pub fn daily_schema() -> SchemaRef {
    schema(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("account_id", DataType::Utf8, true),
        Field::new("reach", DataType::Int64, false),
        Field::new("new_users", DataType::Int64, false),
        Field::new("reach_approx", DataType::Float64, false),
        Field::new("estimator", DataType::Utf8, false),
        Field::new("hll_precision", DataType::Int32, false),
        Field::new("hll_relative_error", DataType::Float64, false),
        Field::new("reach_hll", DataType::Binary, false),
        Field::new("reach_bitmap", DataType::Binary, false),
    ])
}

/// The time-to-convert distribution: per campaign and step (from the second), how many users
/// took `[from_seconds, to_seconds)` from the previous step to this one.
pub fn funnel_times_schema() -> SchemaRef {
    schema(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("step", DataType::Int32, false),
        Field::new("step_type", DataType::Utf8, false),
        Field::new("from_seconds", DataType::Int64, false),
        Field::new("to_seconds", DataType::Int64, true),
        Field::new("users", DataType::Int64, false),
    ])
}

/// The lower bounds (seconds) of the time-to-convert buckets; the last is open.
pub const TIME_BUCKETS: [i64; 8] = [0, 10, 60, 600, 3600, 6 * 3600, 86_400, 7 * 86_400];

/// The bucket of a time to convert (µs).
fn time_bucket(us: i64) -> usize {
    TIME_BUCKETS
        .partition_point(|b| *b * SEC_US <= us)
        .saturating_sub(1)
}

pub fn milestones_schema() -> SchemaRef {
    schema(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("account_id", DataType::Utf8, true),
        ts_field("start", false),
        Field::new("after_seconds", DataType::Int64, false),
        Field::new("users", DataType::Int64, false),
    ])
}

pub fn curve_schema() -> SchemaRef {
    schema(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        ts_field("start", false),
        Field::new("second", DataType::Int32, false),
        Field::new("new_users", DataType::Int64, false),
        Field::new("users", DataType::Int64, false),
    ])
}

/// One user's events in one campaign.
#[derive(Default)]
struct UserEvents {
    /// (ts µs, index of the event type in the scan's type list)
    events: Vec<(i64, u8)>,
    /// Platform and region of the user's earliest event in the campaign.
    first: Option<(i64, String, String)>,
}

type PerCampaign = HashMap<String, HashMap<u64, UserEvents>>;

/// What a long-running process (`spacepulse run`) keeps of the campaign events between runs
/// of the job, so that a run at launch pace reads only the files committed since the last
/// one instead of every campaign event again. The memory is dropped, and the next run reads
/// everything, when the events table was replaced, a folded file is no longer live (a
/// compaction rewrote it), the step types changed, or a run failed or was stopped part way
/// (the memory is taken out for the run and put back only at its end).
#[derive(Default)]
pub struct Memory {
    folded: std::sync::Mutex<Option<Folded>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").finish_non_exhaustive()
    }
}

impl Memory {
    fn take(&self) -> Option<Folded> {
        self.folded.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn keep(&self, f: Folded) {
        *self.folded.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    /// The files folded so far (0 with nothing kept).
    pub fn files(&self) -> usize {
        self.folded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |f| f.files.len())
    }
}

/// The campaign events of `files`, by campaign and user.
struct Folded {
    /// The events table's id (a table deleted and created again has another).
    table_id: String,
    /// The event types the fold kept, in the order of their indexes.
    names: Arc<Vec<String>>,
    files: std::collections::HashSet<deltalake::Path>,
    per: BTreeMap<String, CampaignUsers>,
}

/// One campaign's users: their events, and what each adds to the campaign's figures.
#[derive(Default)]
struct CampaignUsers {
    users: HashMap<u64, UserEvents>,
    /// The users with events folded since their contribution was last computed.
    changed: Vec<u64>,
    figures: Option<Figures>,
}

impl CampaignUsers {
    /// The figures of campaign `c`: the contributions of the users with new events computed
    /// again, or every user's when the funnel's definition is not the one they were computed
    /// for.
    fn figures(
        &mut self,
        c: &Campaign,
        names: &[String],
        reserve: u8,
        tz: query::tz::ReportTz,
    ) -> Result<&mut Figures> {
        let mode: FunnelMode = c.mode.parse().map_err(Error::Usage)?;
        let def = Definition {
            masks: names
                .iter()
                .map(|n| {
                    c.steps
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| *s == n)
                        .fold(0u64, |m, (k, _)| m | (1 << k))
                })
                .collect(),
            steps: c.steps.len(),
            window_us: c.window_ms * 1000,
            mode,
            tz,
            reserve,
        };
        let mut changed = std::mem::take(&mut self.changed);
        let figures = match self.figures.take() {
            Some(f) if f.def == def => f,
            _ => {
                changed = self.users.keys().copied().collect();
                Figures::new(def)
            }
        };
        changed.sort_unstable();
        changed.dedup();
        let figures = self.figures.insert(figures);
        let mut clock = LocalClock::new(tz);
        let mut scratch = Scratch::default();
        for uid in changed {
            if let Some(u) = self.users.get(&uid) {
                let c = figures.contribution(u, &mut clock, &mut scratch);
                figures.set(uid, c);
            }
        }
        if figures.days_stale {
            figures.rebuild_days();
        }
        Ok(figures)
    }
}

/// What a user's contribution depends on besides their events.
#[derive(PartialEq)]
struct Definition {
    /// Per event type (by index in the fold's list), the steps it satisfies.
    masks: Vec<u64>,
    steps: usize,
    window_us: i64,
    mode: FunnelMode,
    tz: query::tz::ReportTz,
    /// The index of `reserve`, whose first event puts a user on the launch curve.
    reserve: u8,
}

/// What one user adds to a campaign's figures.
struct Contribution {
    /// The furthest step reached (0: none).
    level: u8,
    /// Stopped short of the last step because the window closed (see `window_closed`).
    closed: bool,
    /// The segments (by index in `Figures::segments`) of platform, region, hour and day.
    segments: [u32; 4],
    /// µs between consecutive steps of the counted chain (`level - 1` of them).
    gaps: Box<[i64]>,
    first_reserve: Option<i64>,
    /// The report days with an event of one of the campaign's steps, in order.
    days: Box<[i32]>,
}

/// One report day's reach.
#[derive(Default)]
struct DayReach {
    users: roaring::RoaringTreemap,
    hll: Hll,
    /// Users whose first step event was that day.
    new_users: i64,
}

/// The breakdowns of a funnel, in the order of `Contribution::segments` after the total.
const BREAKDOWNS: [&str; 4] = ["platform", "region", "hour", "day"];

/// A campaign's figures, kept up to date user by user: each user's contribution, and the
/// per-day reach (which only grows as events are added; a user leaving a day, possible only
/// if events went away, rebuilds it).
struct Figures {
    def: Definition,
    users: HashMap<u64, Contribution>,
    /// `(breakdown, segment)` by index; 0 is the total.
    segments: Vec<(&'static str, String)>,
    /// Per breakdown, each segment's index.
    segment_ids: [HashMap<String, u32>; 4],
    days: BTreeMap<i32, DayReach>,
    days_stale: bool,
    /// The earliest reservation, and the earliest event, over the users.
    first_reserve: Option<i64>,
    first_event: Option<i64>,
}

/// Buffers reused from one user to the next.
#[derive(Default)]
struct Scratch {
    events: Vec<(i64, u64)>,
    days: Vec<i32>,
    day: String,
}

impl Figures {
    fn new(def: Definition) -> Self {
        Self {
            def,
            users: HashMap::new(),
            segments: vec![("total", "all".to_string())],
            segment_ids: Default::default(),
            days: BTreeMap::new(),
            days_stale: false,
            first_reserve: None,
            first_event: None,
        }
    }

    fn segment(&mut self, breakdown: usize, name: &str) -> u32 {
        if let Some(i) = self.segment_ids[breakdown].get(name) {
            return *i;
        }
        let i = self.segments.len() as u32;
        self.segments
            .push((BREAKDOWNS[breakdown], name.to_string()));
        self.segment_ids[breakdown].insert(name.to_string(), i);
        i
    }

    fn contribution(
        &mut self,
        u: &UserEvents,
        clock: &mut LocalClock,
        scratch: &mut Scratch,
    ) -> Contribution {
        if let Some(f) = &u.first {
            self.first_event = Some(self.first_event.map_or(f.0, |e| e.min(f.0)));
        }
        let masks = &self.def.masks;
        let days = &mut scratch.days;
        days.clear();
        days.extend(
            u.events
                .iter()
                .filter(|(_, t)| masks[*t as usize] != 0)
                .map(|(ts, _)| clock.day(*ts)),
        );
        days.sort_unstable();
        days.dedup();
        let evs = &mut scratch.events;
        evs.clear();
        evs.extend(
            u.events
                .iter()
                .filter(|(_, t)| masks[*t as usize] != 0)
                .map(|(ts, t)| (*ts, masks[*t as usize])),
        );
        let first_reserve = u
            .events
            .iter()
            .filter(|e| e.1 == self.def.reserve)
            .map(|e| e.0)
            .min();
        let r = reach(evs, self.def.steps, self.def.window_us, self.def.mode);
        let mut c = Contribution {
            level: r.level as u8,
            closed: false,
            segments: [0; 4],
            gaps: Box::default(),
            first_reserve,
            days: days.as_slice().into(),
        };
        if r.level == 0 {
            return c;
        }
        c.closed = r.level < self.def.steps.min(MAX_STEPS) && window_closed(evs, &r);
        c.gaps = r.times.windows(2).map(|w| w[1] - w[0]).collect();
        let (platform, region, hour, day) = match &u.first {
            Some((ts, platform, region)) => {
                let hour = clock.local_us(*ts).div_euclid(HOUR_US).rem_euclid(24) as usize;
                let day = clock.day(*ts);
                (platform.as_str(), region.as_str(), hour, Some(day))
            }
            None => ("other", "unknown", 0, None),
        };
        scratch.day.clear();
        match day {
            Some(d) => scratch.day.push_str(&query::tz::format_day(d)),
            None => scratch.day.push_str("unknown"),
        }
        c.segments = [
            self.segment(0, platform),
            self.segment(1, region),
            self.segment(2, HOURS[hour]),
            self.segment(3, &scratch.day),
        ];
        c
    }

    /// Puts `c` in place of the user's previous contribution.
    fn set(&mut self, uid: u64, c: Contribution) {
        self.first_reserve = self.first_reserve.into_iter().chain(c.first_reserve).min();
        // The new days are added; a day left (impossible while events are only added)
        // rebuilds the days.
        let old: &[i32] = self.users.get(&uid).map_or(&[], |o| &o.days);
        if !self.days_stale {
            for d in c.days.iter() {
                if old.binary_search(d).is_err() {
                    let r = self.days.entry(*d).or_default();
                    r.users.insert(uid);
                    r.hll.insert(uid);
                }
            }
            if old.iter().any(|d| c.days.binary_search(d).is_err()) {
                self.days_stale = true;
            } else if old.first() != c.days.first() {
                if let Some(r) = old.first().and_then(|d| self.days.get_mut(d)) {
                    r.new_users -= 1;
                }
                if let Some(r) = c.days.first().and_then(|d| self.days.get_mut(d)) {
                    r.new_users += 1;
                }
            }
        }
        self.users.insert(uid, c);
    }

    fn rebuild_days(&mut self) {
        self.days.clear();
        for (uid, c) in &self.users {
            for (i, d) in c.days.iter().enumerate() {
                let r = self.days.entry(*d).or_default();
                r.users.insert(*uid);
                r.hll.insert(*uid);
                r.new_users += i64::from(i == 0);
            }
        }
        self.days_stale = false;
    }
}

/// The local hours' segment names.
const HOURS: [&str; 24] = [
    "00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15",
    "16", "17", "18", "19", "20", "21", "22", "23",
];

/// The registry, or none for a lake without a local registry.
pub fn registry(ctx: &Ctx<'_>) -> Result<Option<Registry>> {
    let path = match Registry::path_for(&ctx.opts.lake, ctx.opts.registry.as_deref()) {
        Ok(p) => p,
        Err(_) => return Ok(None),
    };
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Registry::open(&path)?))
}

/// The registry's campaigns, or none for a lake without a local registry.
pub fn registered(ctx: &Ctx<'_>) -> Result<Vec<Campaign>> {
    match registry(ctx)? {
        Some(r) => Ok(r.campaigns()?),
        None => Ok(Vec::new()),
    }
}

fn fingerprint(campaigns: &[Campaign]) -> i64 {
    let json = serde_json::to_vec(campaigns).unwrap_or_default();
    (xxhash_rust::xxh64::xxh64(&json, 0) & (i64::MAX as u64)) as i64
}

pub async fn run(ctx: &Ctx<'_>) -> Result<(usize, u64, bool)> {
    let phase = std::time::Instant::now();
    let campaigns = registered(ctx)?;
    let registry_app = format!("jobs/{}/registry", Job::Campaigns.name());
    let print = fingerprint(&campaigns);
    let plan = ctx.plan(Job::Campaigns).await?;
    let mut registry_seen = true;
    for t in Job::Campaigns.tables() {
        registry_seen &= ctx.seen(t, &registry_app).await? == Some(print);
    }
    // A table written before its columns changed is rewritten.
    let current = ctx.has_columns("funnels", &funnels_schema()).await?;
    if plan.up_to_date && registry_seen && current && !ctx.opts.full {
        return Ok((0, 0, true));
    }

    let mut type_names: Vec<String> = DEFAULT_STEPS.iter().map(|s| s.to_string()).collect();
    for c in &campaigns {
        for s in &c.steps {
            if !type_names.contains(s) {
                type_names.push(s.clone());
            }
        }
    }
    if type_names.len() > 255 {
        return Err(Error::Usage(
            "campaigns: more than 255 distinct step types".into(),
        ));
    }
    let reserve = type_names
        .iter()
        .position(|t| t == "reserve")
        .expect("default step") as u8;
    let names: Arc<Vec<String>> = Arc::new(type_names);
    let fold_names = names.clone();
    let fold = move |acc: &mut PerCampaign, batch: &RecordBatch| -> Result<()> {
        let campaign = strs(batch, "campaign_id")?;
        let users = ints(batch, "user_id")?;
        let ts = times(batch, "ts")?;
        let ty = strs(batch, "type")?;
        let platform = strs(batch, "platform")?;
        let region = strs(batch, "region")?;
        for i in 0..batch.num_rows() {
            let Some(c) = campaign.get(i) else { continue };
            let t = ty.get(i).unwrap_or("");
            let Some(ti) = fold_names.iter().position(|n| n == t) else {
                continue;
            };
            let per_user = match acc.get_mut(c) {
                Some(m) => m,
                None => acc.entry(c.to_string()).or_default(),
            };
            let u = per_user.entry(users.value(i) as u64).or_default();
            let when = ts.value(i);
            u.events.push((when, ti as u8));
            if u.first.as_ref().is_none_or(|f| when < f.0) {
                u.first = Some((
                    when,
                    platform.get(i).unwrap_or("other").to_string(),
                    region.get(i).unwrap_or("unknown").to_string(),
                ));
            }
        }
        Ok(())
    };
    // The files with campaign events (by the log's statistics), and in them only the rows
    // with a campaign: the other columns are decoded around those rows alone. A process that
    // keeps a memory between runs reads only the files committed since its last run.
    const COLUMNS: [&str; 6] = ["campaign_id", "user_id", "ts", "type", "platform", "region"];
    tracing::debug!(secs = phase.elapsed().as_secs_f64(), "campaigns: plan");
    let phase = std::time::Instant::now();
    let files = files_with(&ctx.events, ctx.opts.tz, "campaign_id")?;
    let table_id = ctx.events.snapshot()?.metadata().id().to_string();
    let kept = ctx
        .opts
        .memory
        .as_ref()
        .and_then(|m| m.campaigns.take())
        .filter(|f| f.table_id == table_id && *f.names == *names);
    let mut folded = match kept {
        // Every file folded before is still live (no compaction rewrote them).
        Some(f)
            if f.files.len() <= files.len() && {
                let live: std::collections::HashSet<&deltalake::Path> =
                    files.iter().map(|f| &f.path).collect();
                f.files.iter().all(|p| live.contains(p))
            } =>
        {
            f
        }
        _ => Folded {
            table_id,
            names: names.clone(),
            files: Default::default(),
            per: BTreeMap::new(),
        },
    };
    let new_files: Vec<EventFile> = files
        .into_iter()
        .filter(|f| !folded.files.contains(&f.path))
        .collect();
    let new_paths: Vec<deltalake::Path> = new_files.iter().map(|f| f.path.clone()).collect();
    let parts = fold_sources(
        &ctx.events,
        new_files,
        PerCampaign::new,
        move |acc: &mut PerCampaign, _file: &EventFile, source: &mut Source| -> Result<()> {
            for batch in source.batches_where_not_null(&COLUMNS, "campaign_id")? {
                fold(acc, &batch?)?;
            }
            Ok(())
        },
    )
    .await?;
    tracing::debug!(
        secs = phase.elapsed().as_secs_f64(),
        files = new_paths.len(),
        "campaigns: fold"
    );
    let phase = std::time::Instant::now();
    folded.files.extend(new_paths);
    let merged = &mut folded.per;
    for part in parts {
        for (c, users) in part {
            let into = merged.entry(c).or_default();
            into.changed.reserve(users.len());
            for (u, ev) in users {
                into.changed.push(u);
                let e = into.users.entry(u).or_default();
                e.events.extend(ev.events);
                if let Some(f) = ev.first
                    && e.first.as_ref().is_none_or(|g| f.0 < g.0)
                {
                    e.first = Some(f);
                }
            }
        }
    }
    // Registered campaigns without events still get their (empty) funnel.
    let mut ids: std::collections::BTreeSet<String> = merged.keys().cloned().collect();
    ids.extend(campaigns.iter().map(|c| c.id.clone()));

    ctx.progress.start(Job::Campaigns.name(), ids.len() as u64);
    let mut out = Outputs::default();
    for id in &ids {
        let reg = campaigns.iter().find(|c| &c.id == id);
        let mut def = Campaign {
            id: id.clone(),
            account_id: String::new(),
            start_ms: 0,
            steps: DEFAULT_STEPS.iter().map(|s| s.to_string()).collect(),
            window_ms: DEFAULT_WINDOW_MS,
            mode: DEFAULT_MODE.to_string(),
        };
        let mut no_events = CampaignUsers::default();
        let users = merged.get_mut(id).unwrap_or(&mut no_events);
        let figures = users.figures(reg.unwrap_or(&def), &names, reserve, ctx.opts.tz)?;
        if reg.is_none() {
            // The first reservation, where a launch curve begins (teaser views may come days
            // earlier); the first event for a campaign without reservations.
            def.start_ms = figures
                .first_reserve
                .or(figures.first_event)
                .unwrap_or(0)
                .div_euclid(1000);
        }
        out.campaign(reg.unwrap_or(&def), reg.is_some(), figures);
        ctx.progress.advance(Job::Campaigns.name());
    }
    let campaigns_out = ids.len();
    drop(ids);
    if let Some(m) = &ctx.opts.memory {
        m.campaigns.keep(folded);
    }
    tracing::debug!(secs = phase.elapsed().as_secs_f64(), "campaigns: figures");
    let phase = std::time::Instant::now();
    let mut txns = plan.txns.clone();
    txns.push((registry_app, print));
    let [f, t, m, c, d] = out.finish()?;
    let rows = [&f, &t, &m, &c, &d]
        .iter()
        .map(|b| b.num_rows() as u64)
        .sum();
    // Five tables, five independent commits: written side by side, so one table's file
    // writes and log reads overlap another's. Each runs to its end (none is dropped halfway
    // because another failed); the first error is the run's.
    let txns = &txns;
    let published = futures::future::join_all(
        [
            ("funnels", funnels_schema(), f),
            ("funnel_times", funnel_times_schema(), t),
            ("launch_milestones", milestones_schema(), m),
            ("launch_curve", curve_schema(), c),
            (DAILY_TABLE, daily_schema(), d),
        ]
        .map(|(name, schema, batch)| {
            publish(&ctx.opts.lake, name, schema, vec![batch], &Scope::All, txns)
        }),
    )
    .await;
    for p in published {
        p?;
    }
    tracing::debug!(secs = phase.elapsed().as_secs_f64(), "campaigns: publish");
    Ok((campaigns_out, rows, false))
}

#[derive(Default)]
struct Outputs {
    f_campaign: StringBuilder,
    f_account: StringBuilder,
    f_registered: BooleanBuilder,
    f_start: TimestampMicrosecondBuilder,
    f_window: Int64Builder,
    f_mode: StringBuilder,
    f_breakdown: StringBuilder,
    f_segment: StringBuilder,
    f_step: Int32Builder,
    f_step_type: StringBuilder,
    f_users: Int64Builder,
    f_conv_prev: Float64Builder,
    f_conv_all: Float64Builder,
    f_drop: Int64Builder,
    f_window_closed: Int64Builder,
    f_never: Int64Builder,
    f_median: Float64Builder,
    f_p90: Float64Builder,
    t_campaign: StringBuilder,
    t_step: Int32Builder,
    t_step_type: StringBuilder,
    t_from: Int64Builder,
    t_to: Int64Builder,
    t_users: Int64Builder,
    m_campaign: StringBuilder,
    m_account: StringBuilder,
    m_start: TimestampMicrosecondBuilder,
    m_after: Int64Builder,
    m_users: Int64Builder,
    d_day: Date32Builder,
    d_campaign: StringBuilder,
    d_account: StringBuilder,
    d_reach: Int64Builder,
    d_new: Int64Builder,
    d_approx: Float64Builder,
    d_estimator: StringBuilder,
    d_precision: Int32Builder,
    d_rse: Float64Builder,
    d_hll: BinaryBuilder,
    d_bitmap: BinaryBuilder,
    c_campaign: StringBuilder,
    c_start: TimestampMicrosecondBuilder,
    c_second: Int32Builder,
    c_new: Int64Builder,
    c_users: Int64Builder,
}

/// Users reaching each step and the seconds between consecutive steps, for one segment.
#[derive(Default)]
struct StepStats {
    users: Vec<i64>,
    seconds: Vec<Vec<i64>>,
    /// `[k]`: users who reached step `k` (0-based) but not `k + 1` and did step `k + 1`'s
    /// event after their step `k`, too late for the window.
    window_closed: Vec<i64>,
}

impl StepStats {
    fn sized(&mut self, steps: usize) -> &mut Self {
        if self.users.is_empty() {
            self.users = vec![0; steps];
            self.seconds = vec![Vec::new(); steps];
            self.window_closed = vec![0; steps];
        }
        self
    }
}

/// Whether a user who stopped at `r.level` (of more steps) did the next step's event at or
/// after their last counted step, only past the window: the window closed on them, where a
/// user without such an event never came back for the next step.
fn window_closed(evs: &[(i64, u64)], r: &Reached) -> bool {
    let (Some(&last), next) = (r.times.last(), 1u64 << r.level) else {
        return false;
    };
    evs.iter().any(|&(ts, mask)| mask & next != 0 && ts >= last)
}

impl Outputs {
    fn campaign(&mut self, c: &Campaign, registered: bool, figures: &mut Figures) {
        let steps = c.steps.len();
        let start_us = c.start_ms * 1000;
        let mut stats: Vec<StepStats> = figures
            .segments
            .iter()
            .map(|_| {
                let mut s = StepStats::default();
                s.sized(steps);
                s
            })
            .collect();
        // The launch curve: users whose first reservation is in [start, start + s), per
        // second of the first hour and at the milestones.
        let mut per_second = vec![0i64; CURVE_SECONDS as usize];
        let mut milestones = [0i64; MILESTONES.len()];
        for u in figures.users.values() {
            if let Some(after) = u.first_reserve.map(|t| t - start_us)
                && after >= 0
            {
                for (m, at) in milestones.iter_mut().zip(MILESTONES) {
                    *m += i64::from(after < at * SEC_US);
                }
                if let Some(n) = per_second.get_mut((after / SEC_US) as usize) {
                    *n += 1;
                }
            }
            let level = usize::from(u.level);
            if level == 0 {
                continue;
            }
            for s in std::iter::once(0).chain(u.segments) {
                let s = &mut stats[s as usize];
                for k in 0..level {
                    s.users[k] += 1;
                }
                for k in 1..level {
                    s.seconds[k].push(u.gaps[k - 1]);
                }
                if u.closed {
                    s.window_closed[level - 1] += 1;
                }
            }
        }
        // Segments in the order of (breakdown, segment); one without users is left out, the
        // total never.
        let mut order: Vec<usize> = (0..stats.len())
            .filter(|i| *i == 0 || stats[*i].users.first().is_some_and(|n| *n > 0))
            .collect();
        order.sort_by(|a, b| {
            let (a, b) = (&figures.segments[*a], &figures.segments[*b]);
            (a.0, &a.1).cmp(&(b.0, &b.1))
        });
        for i in order {
            let (breakdown, segment) = &figures.segments[i];
            let s = &mut stats[i];
            if i == 0 {
                self.times(c, s);
            }
            for k in 0..steps {
                self.f_campaign.append_value(&c.id);
                self.f_account
                    .append_option(registered.then_some(c.account_id.as_str()));
                self.f_registered.append_value(registered);
                self.f_start.append_value(start_us);
                self.f_window.append_value(c.window_ms);
                self.f_mode.append_value(&c.mode);
                self.f_breakdown.append_value(breakdown);
                self.f_segment.append_value(segment);
                self.f_step.append_value(k as i32 + 1);
                self.f_step_type.append_value(&c.steps[k]);
                let users = s.users[k];
                self.f_users.append_value(users);
                let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
                if k == 0 {
                    self.f_conv_prev.append_null();
                    self.f_drop.append_null();
                    self.f_window_closed.append_null();
                    self.f_never.append_null();
                    self.f_median.append_null();
                    self.f_p90.append_null();
                } else {
                    self.f_conv_prev.append_option(ratio(users, s.users[k - 1]));
                    let dropped = s.users[k - 1] - users;
                    self.f_drop.append_value(dropped);
                    self.f_window_closed.append_value(s.window_closed[k - 1]);
                    self.f_never.append_value(dropped - s.window_closed[k - 1]);
                    let times = &mut s.seconds[k];
                    let mut secs =
                        |q| quantile_unsorted(times, q).map(|us| us as f64 / SEC_US as f64);
                    self.f_median.append_option(secs(0.5));
                    self.f_p90.append_option(secs(0.9));
                }
                self.f_conv_all.append_option(ratio(users, s.users[0]));
            }
        }
        for (day, r) in figures.days.iter_mut() {
            if r.users.is_empty() {
                continue;
            }
            self.d_day.append_value(*day);
            self.d_campaign.append_value(&c.id);
            self.d_account
                .append_option(registered.then_some(c.account_id.as_str()));
            self.d_reach.append_value(r.users.len() as i64);
            self.d_new.append_value(r.new_users);
            self.d_approx.append_value(r.hll.estimate());
            self.d_estimator.append_value(HLL_ESTIMATOR);
            self.d_precision.append_value(HLL_PRECISION as i32);
            self.d_rse.append_value(hll_relative_error());
            self.d_hll.append_value(r.hll.to_bytes());
            self.d_bitmap.append_value(bitmap_to_bytes(&r.users));
        }
        for (after, users) in MILESTONES.iter().zip(milestones) {
            self.m_campaign.append_value(&c.id);
            self.m_account
                .append_option(registered.then_some(c.account_id.as_str()));
            self.m_start.append_value(start_us);
            self.m_after.append_value(*after);
            self.m_users.append_value(users);
        }
        let mut users = 0;
        for (second, new_users) in per_second.into_iter().enumerate() {
            users += new_users;
            self.c_campaign.append_value(&c.id);
            self.c_start.append_value(start_us);
            self.c_second.append_value(second as i32);
            self.c_new.append_value(new_users);
            self.c_users.append_value(users);
        }
    }

    /// The time-to-convert distribution of each step after the first.
    fn times(&mut self, c: &Campaign, s: &StepStats) {
        for k in 1..s.seconds.len() {
            let mut counts = [0i64; TIME_BUCKETS.len()];
            for us in &s.seconds[k] {
                counts[time_bucket(*us)] += 1;
            }
            for (b, n) in counts.iter().enumerate() {
                self.t_campaign.append_value(&c.id);
                self.t_step.append_value(k as i32 + 1);
                self.t_step_type.append_value(&c.steps[k]);
                self.t_from.append_value(TIME_BUCKETS[b]);
                self.t_to.append_option(TIME_BUCKETS.get(b + 1).copied());
                self.t_users.append_value(*n);
            }
        }
    }

    fn finish(mut self) -> Result<[RecordBatch; 5]> {
        let utc = |b: &mut TimestampMicrosecondBuilder| -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        };
        let f: Vec<ArrayRef> = vec![
            Arc::new(self.f_campaign.finish()),
            Arc::new(self.f_account.finish()),
            Arc::new(self.f_registered.finish()),
            utc(&mut self.f_start),
            Arc::new(self.f_window.finish()),
            Arc::new(self.f_mode.finish()),
            Arc::new(self.f_breakdown.finish()),
            Arc::new(self.f_segment.finish()),
            Arc::new(self.f_step.finish()),
            Arc::new(self.f_step_type.finish()),
            Arc::new(self.f_users.finish()),
            Arc::new(self.f_conv_prev.finish()),
            Arc::new(self.f_conv_all.finish()),
            Arc::new(self.f_drop.finish()),
            Arc::new(self.f_window_closed.finish()),
            Arc::new(self.f_never.finish()),
            Arc::new(self.f_median.finish()),
            Arc::new(self.f_p90.finish()),
        ];
        let t: Vec<ArrayRef> = vec![
            Arc::new(self.t_campaign.finish()),
            Arc::new(self.t_step.finish()),
            Arc::new(self.t_step_type.finish()),
            Arc::new(self.t_from.finish()),
            Arc::new(self.t_to.finish()),
            Arc::new(self.t_users.finish()),
        ];
        let m: Vec<ArrayRef> = vec![
            Arc::new(self.m_campaign.finish()),
            Arc::new(self.m_account.finish()),
            utc(&mut self.m_start),
            Arc::new(self.m_after.finish()),
            Arc::new(self.m_users.finish()),
        ];
        let c: Vec<ArrayRef> = vec![
            Arc::new(self.c_campaign.finish()),
            utc(&mut self.c_start),
            Arc::new(self.c_second.finish()),
            Arc::new(self.c_new.finish()),
            Arc::new(self.c_users.finish()),
        ];
        let d: Vec<ArrayRef> = vec![
            Arc::new(self.d_day.finish()),
            Arc::new(self.d_campaign.finish()),
            Arc::new(self.d_account.finish()),
            Arc::new(self.d_reach.finish()),
            Arc::new(self.d_new.finish()),
            Arc::new(self.d_approx.finish()),
            Arc::new(self.d_estimator.finish()),
            Arc::new(self.d_precision.finish()),
            Arc::new(self.d_rse.finish()),
            Arc::new(self.d_hll.finish()),
            Arc::new(self.d_bitmap.finish()),
        ];
        Ok([
            RecordBatch::try_new(funnels_schema(), f)?,
            RecordBatch::try_new(funnel_times_schema(), t)?,
            RecordBatch::try_new(milestones_schema(), m)?,
            RecordBatch::try_new(curve_schema(), c)?,
            RecordBatch::try_new(daily_schema(), d)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_buckets_are_half_open() {
        assert_eq!(time_bucket(0), 0);
        assert_eq!(time_bucket(10 * SEC_US - 1), 0);
        assert_eq!(time_bucket(10 * SEC_US), 1);
        assert_eq!(time_bucket(3600 * SEC_US), 4);
        assert_eq!(time_bucket(30 * 86_400 * SEC_US), TIME_BUCKETS.len() - 1);
    }

    /// Adds an event as the fold and its merge do.
    fn add(to: &mut CampaignUsers, uid: u64, ts: i64, ty: u8, platform: &str, region: &str) {
        to.changed.push(uid);
        let u = to.users.entry(uid).or_default();
        u.events.push((ts, ty));
        if u.first.as_ref().is_none_or(|f| ts < f.0) {
            u.first = Some((ts, platform.into(), region.into()));
        }
    }

    fn tables(to: &mut CampaignUsers, c: &Campaign, names: &[String]) -> [RecordBatch; 5] {
        let figures = to.figures(c, names, 1, Default::default()).unwrap();
        let mut out = Outputs::default();
        out.campaign(c, true, figures);
        out.finish().unwrap()
    }

    /// Figures kept between runs, with only the users with new events computed again, equal
    /// those computed afresh from the same events: with late events earlier than a user's
    /// first (moving their first day and segments), `first` mode (where a late step-1 event
    /// can lower a user's level), repeated events, and a change of the funnel's definition.
    #[test]
    fn figures_kept_between_runs_equal_a_fresh_computation() {
        let names: Vec<String> = ["page_view", "reserve", "preorder", "like"]
            .map(String::from)
            .to_vec();
        let start = 1_780_000_000_000_000i64;
        let mut c = Campaign {
            id: "c1".into(),
            account_id: "a1".into(),
            start_ms: start / 1000,
            steps: DEFAULT_STEPS.map(String::from).to_vec(),
            window_ms: 3_600_000,
            mode: "first".into(),
        };
        let mut kept = CampaignUsers::default();
        let mut all: Vec<(u64, i64, u8, &str, &str)> = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..12 {
            for _ in 0..400 {
                let uid = 10_000 + next(300);
                // Mostly near the start, some days before (teasers) or after.
                let ts = start + (next(7_200) as i64 - 1_800) * SEC_US
                    - if next(10) == 0 {
                        next(4) as i64 * 86_400 * SEC_US
                    } else {
                        0
                    };
                let ty = next(4) as u8;
                let platform = ["ios", "android", "web"][next(3) as usize];
                let region = ["north", "south"][next(2) as usize];
                add(&mut kept, uid, ts, ty, platform, region);
                all.push((uid, ts, ty, platform, region));
            }
            if round == 8 {
                c.mode = "furthest".into();
            }
            if round == 10 {
                c.window_ms = 600_000;
            }
            let mut fresh = CampaignUsers::default();
            for (uid, ts, ty, platform, region) in &all {
                add(&mut fresh, *uid, *ts, *ty, platform, region);
            }
            let incremental = tables(&mut kept, &c, &names);
            assert_eq!(incremental, tables(&mut fresh, &c, &names), "round {round}");
            assert!(incremental[0].num_rows() > 3 && incremental[4].num_rows() > 1);
        }
    }

    #[test]
    fn a_late_next_step_is_the_window_closing() {
        let window = 100;
        // Viewed at 0, reserved at 150: past the window.
        let mut late = vec![(0, 0b01), (150, 0b10)];
        let r = reach(&mut late, 2, window, FunnelMode::Furthest);
        assert_eq!(r.level, 1);
        assert!(window_closed(&late, &r));
        // Reserved before viewing, never after: never came back.
        let mut before = vec![(10, 0b01), (5, 0b10)];
        let r = reach(&mut before, 2, window, FunnelMode::Furthest);
        assert_eq!(r.level, 1);
        assert!(!window_closed(&before, &r));
        // Only viewed.
        let mut only = vec![(0, 0b01)];
        let r = reach(&mut only, 2, window, FunnelMode::Furthest);
        assert!(!window_closed(&only, &r));
    }
}
