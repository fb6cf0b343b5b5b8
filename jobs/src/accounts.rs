//! Official accounts: per account and report day, follows, unfollows, net, cumulative
//! followers, reach (distinct users who viewed the account's pages or its campaigns' pages:
//! exact for the day, and an HLL++ sketch that merges over ranges) and engagement (likes and
//! comments carrying the account). Cumulative followers of later days are carried forward from
//! the stored rows when an earlier day changes.
//!
//! Followers stand on the account's latest follower baseline (imported into the registry with
//! `spacepulse accounts import-followers`) when it has one: the baseline's figure plus the net
//! follows after its instant; before any baseline, on the net follows since the lake's first
//! day. Each row names the baseline it stands on. A baseline restarts the running figure, so a
//! change to the baselines recomputes every day.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Date32Builder, Float64Builder, Int32Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Field, Int64Type, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use query::sketch::{HLL_ESTIMATOR, HLL_PRECISION, Hll, bitmap_of, hll_relative_error};

use crate::changes::Hour;
use crate::hours::{self, Kept, Live, Reading, RowSlots, SlotOf};
use crate::publish::{Scope, publish, schema, table_name};
use crate::scan::{
    EventFile, distinct, event_key, files_of_days, fold_files, ints, strs, times, types,
};
use crate::{Ctx, Job, Result};
use lake::registry::Baseline;

pub const TABLE: &str = "accounts_daily";

pub fn table_schema() -> SchemaRef {
    schema(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("account_id", DataType::Utf8, false),
        Field::new("follows", DataType::Int64, false),
        Field::new("unfollows", DataType::Int64, false),
        Field::new("net", DataType::Int64, false),
        Field::new("followers", DataType::Int64, false),
        Field::new("reach", DataType::Int64, false),
        Field::new("reach_approx", DataType::Float64, false),
        Field::new("likes", DataType::Int64, false),
        Field::new("comments", DataType::Int64, false),
        Field::new("engagement", DataType::Int64, false),
        Field::new("estimator", DataType::Utf8, false),
        Field::new("hll_precision", DataType::Int32, false),
        Field::new("hll_relative_error", DataType::Float64, false),
        Field::new("reach_hll", DataType::Binary, false),
        // The follower baseline `followers` stands on: none before the account's first one.
        Field::new("baseline_followers", DataType::Int64, true),
        Field::new(
            "baseline_as_of",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ])
}

/// One output row before followers are carried forward.
#[derive(Debug, Clone)]
struct Row {
    follows: i64,
    unfollows: i64,
    reach: i64,
    reach_approx: f64,
    likes: i64,
    comments: i64,
    hll: Vec<u8>,
    /// Net follows after the cutoff of the day's follower baseline (see [`Cutoffs`]), when the
    /// day is recomputed; a stored row's figure carries it in `followers`.
    after: Option<i64>,
    /// A stored row's `followers` and baseline instant.
    stored: Option<(i64, Option<i64>)>,
}

/// Per account, the instant (epoch µs) of its latest follower baseline within a day.
type Cutoffs = HashMap<String, i64>;

#[derive(Default, Clone)]
struct Acct {
    follows: Vec<(u128, i64)>,
    unfollows: Vec<(u128, i64)>,
    likes: Vec<(u128, i64)>,
    comments: Vec<(u128, i64)>,
    viewers: Vec<u64>,
}

type Acc = HashMap<String, Acct>;

/// Adds one event to `acc`: a page view's viewer to its account and to its campaign's owner;
/// a follow, unfollow, like or comment keyed by its event (a follow or unfollow after the day's
/// baseline instant counts on top of it). Other types are left out.
#[allow(clippy::too_many_arguments)]
fn fold_row(
    acc: &mut Acc,
    owners: &HashMap<String, String>,
    cutoffs: &Cutoffs,
    t: &str,
    a: Option<&str>,
    campaign: Option<&str>,
    user: u64,
    id: &str,
    ts: i64,
) {
    if t == "page_view" {
        let owner = campaign.and_then(|c| owners.get(c));
        if let Some(a) = a {
            acc.entry(a.to_string()).or_default().viewers.push(user);
        }
        if let Some(o) = owner
            && Some(o.as_str()) != a
        {
            acc.entry(o.clone()).or_default().viewers.push(user);
        }
        return;
    }
    let Some(a) = a else { return };
    if !matches!(t, "follow" | "unfollow" | "like" | "comment") {
        return;
    }
    let after = cutoffs.get(a).is_some_and(|cut| ts > *cut);
    let entry = acc.entry(a.to_string()).or_default();
    let item = (event_key(id), i64::from(after));
    match t {
        "follow" => entry.follows.push(item),
        "unfollow" => entry.unfollows.push(item),
        "like" => entry.likes.push(item),
        _ => entry.comments.push(item),
    }
}

/// The columns `fold_row` reads.
const COLUMNS: [&str; 6] = [
    "event_id",
    "user_id",
    "type",
    "account_id",
    "campaign_id",
    "ts",
];

/// The event types `fold_row` counts.
const TYPES: [&str; 5] = ["follow", "unfollow", "like", "comment", "page_view"];

async fn day_rows(
    ctx: &Ctx<'_>,
    day: i32,
    owners: Arc<HashMap<String, String>>,
    cutoffs: Arc<Cutoffs>,
) -> Result<BTreeMap<String, Row>> {
    let fold_cutoffs = cutoffs.clone();
    let parts = ctx
        .scan
        .fold(
            ctx.scan.day_filter(day).and(types(&TYPES)),
            &COLUMNS,
            Acc::new,
            move |acc: &mut Acc, batch| {
                let ids = strs(batch, "event_id")?;
                let users = ints(batch, "user_id")?;
                let ty = strs(batch, "type")?;
                let account = strs(batch, "account_id")?;
                let campaign = strs(batch, "campaign_id")?;
                let ts = times(batch, "ts")?;
                for i in 0..batch.num_rows() {
                    fold_row(
                        acc,
                        &owners,
                        &fold_cutoffs,
                        ty.get(i).unwrap_or(""),
                        account.get(i),
                        campaign.get(i),
                        users.value(i) as u64,
                        ids.get(i).unwrap_or(""),
                        ts.value(i),
                    );
                }
                Ok(())
            },
        )
        .await?;
    let mut merged: HashMap<String, Acct> = HashMap::new();
    for part in parts {
        merge_acc(&mut merged, part);
    }
    let totals = merged
        .into_iter()
        .map(|(k, a)| (k, Totals::of(a)))
        .collect();
    Ok(rows_of(totals, &cutoffs))
}

/// Adds `from`'s events to `into`'s, account by account.
fn merge_acc(into: &mut Acc, from: Acc) {
    for (k, a) in from {
        let m = into.entry(k).or_default();
        m.follows.extend(a.follows);
        m.unfollows.extend(a.unfollows);
        m.likes.extend(a.likes);
        m.comments.extend(a.comments);
        m.viewers.extend(a.viewers);
    }
}

/// An account's figures over a day (or an hour): distinct events counted, and the viewers.
#[derive(Default, Clone)]
struct Totals {
    follows: i64,
    follows_after: i64,
    unfollows: i64,
    unfollows_after: i64,
    likes: i64,
    comments: i64,
    viewers: roaring::RoaringTreemap,
}

impl Totals {
    fn of(mut a: Acct) -> Self {
        let (follows, follows_after) = distinct(&mut a.follows);
        let (unfollows, unfollows_after) = distinct(&mut a.unfollows);
        Totals {
            follows,
            follows_after,
            unfollows,
            unfollows_after,
            likes: distinct(&mut a.likes).0,
            comments: distinct(&mut a.comments).0,
            viewers: bitmap_of(a.viewers),
        }
    }

    fn add(&mut self, o: &Totals) {
        self.follows += o.follows;
        self.follows_after += o.follows_after;
        self.unfollows += o.unfollows;
        self.unfollows_after += o.unfollows_after;
        self.likes += o.likes;
        self.comments += o.comments;
        self.viewers |= &o.viewers;
    }
}

/// A day's rows from each account's totals, and a row for each account whose baseline lands
/// on the day though it did nothing.
fn rows_of(totals: HashMap<String, Totals>, cutoffs: &Cutoffs) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    for (account, t) in totals {
        let mut hll = Hll::new();
        for u in t.viewers.iter() {
            hll.insert(u);
        }
        let after = cutoffs
            .contains_key(&account)
            .then_some(t.follows_after - t.unfollows_after);
        out.insert(
            account,
            Row {
                follows: t.follows,
                unfollows: t.unfollows,
                reach: t.viewers.len() as i64,
                reach_approx: hll.estimate(),
                likes: t.likes,
                comments: t.comments,
                hll: hll.to_bytes(),
                after,
                stored: None,
            },
        );
    }
    // A day a baseline lands on shows it, though the account did nothing that day.
    for account in cutoffs.keys() {
        out.entry(account.clone()).or_insert_with(|| Row {
            follows: 0,
            unfollows: 0,
            reach: 0,
            reach_approx: 0.0,
            likes: 0,
            comments: 0,
            hll: Hll::new().to_bytes(),
            after: Some(0),
            stored: None,
        });
    }
    out
}

/// The rows of the hours `slot_of` places (days gathered hour by hour) from one pass over
/// `files`, per (day, hour).
async fn gather(
    ctx: &Ctx<'_>,
    files: Vec<EventFile>,
    slot_of: SlotOf,
    owners: Arc<HashMap<String, String>>,
    cutoffs: Arc<HashMap<i32, Cutoffs>>,
) -> Result<BTreeMap<(i32, Hour), Acc>> {
    let tz = ctx.opts.tz;
    type Slots = (query::tz::LocalClock, BTreeMap<(i32, Hour), Acc>);
    let parts = fold_files(
        &ctx.events,
        files,
        |_: &EventFile| -> &'static [&'static str] { &COLUMNS },
        move || (query::tz::LocalClock::new(tz), BTreeMap::new()),
        move |acc: &mut Slots, file: &EventFile, batch: &RecordBatch| -> Result<()> {
            let ids = strs(batch, "event_id")?;
            let users = ints(batch, "user_id")?;
            let ty = strs(batch, "type")?;
            let account = strs(batch, "account_id")?;
            let campaign = strs(batch, "campaign_id")?;
            let ts = times(batch, "ts")?;
            let mut slots = RowSlots::new(file, &slot_of);
            for i in 0..batch.num_rows() {
                let t = ty.get(i).unwrap_or("");
                if !TYPES.contains(&t) {
                    continue;
                }
                let at = ts.value(i);
                let Some((day, Some(hour))) = slots.of(&mut acc.0, at) else {
                    continue;
                };
                let Some(cut) = cutoffs.get(&day) else {
                    continue;
                };
                fold_row(
                    acc.1.entry((day, hour)).or_default(),
                    &owners,
                    cut,
                    t,
                    account.get(i),
                    campaign.get(i),
                    users.value(i) as u64,
                    ids.get(i).unwrap_or(""),
                    at,
                );
            }
            Ok(())
        },
    )
    .await?;
    let mut out: BTreeMap<(i32, Hour), Acc> = BTreeMap::new();
    for (_, slots) in parts {
        for (key, acc) in slots {
            merge_acc(out.entry(key).or_default(), acc);
        }
    }
    Ok(out)
}

/// A fingerprint of which account owns which campaign (a page view of a campaign's page
/// reaches its owner).
fn owners_print(owners: &HashMap<String, String>) -> i64 {
    let mut pairs: Vec<(&String, &String)> = owners.iter().collect();
    pairs.sort();
    let json = serde_json::to_vec(&pairs).unwrap_or_default();
    (xxhash_rust::xxh64::xxh64(&json, 0) & (i64::MAX as u64)) as i64
}

/// Sorts an account's events by key keeping one of each, and its viewers keeping each once.
fn dedup_acct(a: &mut Acct) {
    for v in [
        &mut a.follows,
        &mut a.unfollows,
        &mut a.likes,
        &mut a.comments,
    ] {
        v.sort_unstable_by_key(|e| e.0);
        v.dedup_by_key(|e| e.0);
    }
    a.viewers.sort_unstable();
    a.viewers.dedup();
}

/// What `spacepulse run` keeps of the accounts job between runs, so that a commit into the
/// current hour reads only its own files (see [`crate::hours`]): the newest report days hour
/// by hour (per UTC hour, the files read and, while the hour is open, its events keyed by
/// `event_id` and its viewers; once closed, each account's counts and viewers' bitmap), a
/// day being the merge of its hours. A file that arrives in a closed hour, or one read that is
/// no longer live (a compaction rewrote it), has the whole hour read again, so a retry is
/// still counted once; everything is read again when the events table was replaced, the
/// report time zone, the follower baselines or the campaigns' owners changed.
#[derive(Debug, Default)]
pub struct Memory(Kept<Hours>);

struct Hours {
    table_id: String,
    tz: query::tz::ReportTz,
    /// The follower baselines' and the campaigns' owners' fingerprints.
    key: (i64, i64),
    parts: BTreeMap<(i32, Hour), Part>,
    reading: Reading,
}

struct Part {
    files: std::collections::HashSet<deltalake::Path>,
    rows: PartRows,
}

enum PartRows {
    /// An open hour's events, deduplicated, for those read later to be deduplicated against.
    Open(Acc),
    /// A closed hour: each account's totals.
    Closed(HashMap<String, Totals>),
}

impl PartRows {
    fn totals(&self) -> HashMap<String, Totals> {
        match self {
            PartRows::Open(acc) => acc
                .iter()
                .map(|(k, a)| (k.clone(), Totals::of(a.clone())))
                .collect(),
            PartRows::Closed(t) => t.clone(),
        }
    }
}

impl Memory {
    /// The hours kept, checked against this run's live `files` of the changed `days`.
    fn take(
        &self,
        ctx: &Ctx<'_>,
        key: (i64, i64),
        days: &BTreeSet<i32>,
        files: &[EventFile],
    ) -> Result<Hours> {
        let table_id = hours::table_id(ctx)?;
        let tz = ctx.opts.tz;
        let kept = self
            .0
            .take()
            .filter(|h| h.table_id == table_id && h.tz == tz && h.key == key);
        let mut parts = kept.map(|h| h.parts).unwrap_or_default();
        let live = Live::of(days, files);
        parts.retain(|k, part| {
            live.keeps_hour(k, &part.files, matches!(part.rows, PartRows::Open(_)))
        });
        let reading = live.reading(|day, hour, p| {
            parts
                .get(&(day, hour))
                .is_some_and(|part| part.files.contains(p))
        });
        Ok(Hours {
            table_id,
            tz,
            key,
            parts,
            reading,
        })
    }

    /// The hours kept, open and closed (0 with nothing kept).
    pub fn hours(&self) -> usize {
        self.0.peek(|h| h.parts.len()).unwrap_or(0)
    }
}

impl Hours {
    /// Adds the events read from each hour's unread files to the hour, closes the older
    /// hours, and gives each day gathered hour by hour as its accounts' totals.
    fn merge(
        &mut self,
        mut read: BTreeMap<(i32, Hour), Acc>,
    ) -> Result<BTreeMap<i32, HashMap<String, Totals>>> {
        for (key, paths) in std::mem::take(&mut self.reading.new_files) {
            let rows = read.remove(&key).unwrap_or_default();
            match self.parts.get_mut(&key) {
                Some(Part {
                    files,
                    rows: PartRows::Open(acc),
                }) => {
                    let touched: Vec<String> = rows.keys().cloned().collect();
                    merge_acc(acc, rows);
                    for k in touched {
                        if let Some(a) = acc.get_mut(&k) {
                            dedup_acct(a);
                        }
                    }
                    files.extend(paths);
                }
                Some(_) => {
                    return Err(crate::Error::Internal(
                        "accounts: a new file for a closed hour that was not read again".into(),
                    ));
                }
                None => {
                    let mut rows = rows;
                    rows.values_mut().for_each(dedup_acct);
                    let part = Part {
                        files: paths.into_iter().collect(),
                        rows: PartRows::Open(rows),
                    };
                    self.parts.insert(key, part);
                }
            }
        }
        if let Some((day, hour)) = read.keys().next() {
            return Err(crate::Error::Internal(format!(
                "accounts: events read for day {day}, hour {hour:?}, which had no file to read"
            )));
        }
        if let Some(newest) = hours::newest(self.parts.keys().map(|k| &k.1)) {
            for (key, part) in self.parts.iter_mut() {
                if hours::closed(&key.1, newest) && matches!(part.rows, PartRows::Open(_)) {
                    part.rows = PartRows::Closed(part.rows.totals());
                }
            }
        }
        let mut out: BTreeMap<i32, HashMap<String, Totals>> = BTreeMap::new();
        for (key, part) in &self.parts {
            if !self.reading.days.contains(&key.0) {
                continue;
            }
            let day = out.entry(key.0).or_default();
            for (account, t) in part.rows.totals() {
                day.entry(account).or_default().add(&t);
            }
        }
        Ok(out)
    }
}

/// Where an account's running followers stand: the figure and the instant (epoch µs) of the
/// baseline it stands on.
type Standing = (i64, Option<i64>);

/// Stored rows of days from `first` on that are not being recomputed, and where each
/// account's followers stood at its last row before `first`.
async fn stored(
    ctx: &Ctx<'_>,
    first: i32,
    skip: &BTreeSet<i32>,
) -> Result<(BTreeMap<(i32, String), Row>, HashMap<String, Standing>)> {
    let mut rows = BTreeMap::new();
    let mut base: HashMap<String, (i32, Standing)> = HashMap::new();
    let Some(table) = ctx.opts.lake.open(&table_name(TABLE)).await? else {
        return Ok((rows, HashMap::new()));
    };
    let session = query::session::context();
    query::session::register(&session, TABLE, &table).await?;
    let mut stream = session
        .sql(&format!(
            "SELECT day, account_id, follows, unfollows, reach, reach_approx, likes, comments, \
             reach_hll, followers, CAST(baseline_as_of AS BIGINT) FROM {TABLE}"
        ))
        .await?
        .execute_stream()
        .await?;
    while let Some(batch) = stream.try_next().await? {
        let days = batch.column(0).as_primitive::<Date32Type>();
        let accounts = strs(&batch, "account_id")?;
        let col = |i: usize| batch.column(i).as_primitive::<Int64Type>();
        let approx = batch
            .column(5)
            .as_primitive::<arrow::datatypes::Float64Type>();
        let hll = arrow::compute::cast(batch.column(8), &DataType::Binary)?;
        let hll = hll.as_binary::<i32>();
        let as_of = col(10);
        for i in 0..batch.num_rows() {
            let day = days.value(i);
            let account = accounts.get(i).unwrap_or("").to_string();
            let standing = (col(9).value(i), (!as_of.is_null(i)).then(|| as_of.value(i)));
            if day < first {
                let last = base.entry(account).or_insert((day, standing));
                if day >= last.0 {
                    *last = (day, standing);
                }
                continue;
            }
            if skip.contains(&day) {
                continue;
            }
            rows.insert(
                (day, account),
                Row {
                    follows: col(2).value(i),
                    unfollows: col(3).value(i),
                    reach: col(4).value(i),
                    reach_approx: approx.value(i),
                    likes: col(6).value(i),
                    comments: col(7).value(i),
                    hll: hll.value(i).to_vec(),
                    after: None,
                    stored: Some(standing),
                },
            );
        }
    }
    Ok((rows, base.into_iter().map(|(a, (_, s))| (a, s)).collect()))
}

/// The registry's follower baselines, or none for a lake without a local registry.
fn baselines(ctx: &Ctx<'_>) -> Result<Vec<Baseline>> {
    match crate::campaigns::registry(ctx)? {
        Some(r) => Ok(r.baselines()?),
        None => Ok(Vec::new()),
    }
}

fn fingerprint(baselines: &[Baseline]) -> i64 {
    let json = serde_json::to_vec(baselines).unwrap_or_default();
    (xxhash_rust::xxh64::xxh64(&json, 0) & (i64::MAX as u64)) as i64
}

/// Per account, its baselines' instants (epoch µs) and figures, in time order.
type Baselines = HashMap<String, Vec<(i64, i64)>>;

/// The cutoffs of `day`: each account's latest baseline instant within it.
fn cutoffs_of(all: &Baselines, tz: query::tz::ReportTz, day: i32) -> Cutoffs {
    let (start, end) = (tz.day_start_us(day), tz.day_start_us(day + 1));
    all.iter()
        .filter_map(|(account, list)| {
            list.iter()
                .rev()
                .find(|(at, _)| (start..end).contains(at))
                .map(|(at, _)| (account.clone(), *at))
        })
        .collect()
}

pub async fn run(ctx: &Ctx<'_>) -> Result<(usize, u64, bool)> {
    let all_baselines = baselines(ctx)?;
    let baselines_app = format!("jobs/{}/baselines", Job::Accounts.name());
    let print = fingerprint(&all_baselines);
    // New baselines restart running figures anywhere, and a table written before the
    // baseline columns existed is rewritten whole.
    let current = ctx.has_columns(TABLE, &table_schema()).await?
        && ctx.seen(TABLE, &baselines_app).await? == Some(print);
    let plan = if current {
        ctx.plan(Job::Accounts).await?
    } else {
        ctx.plan_everything(Job::Accounts).await?
    };
    if plan.up_to_date && current {
        return Ok((0, 0, true));
    }
    ctx.progress
        .start(Job::Accounts.name(), plan.days.len() as u64);
    let owners: Arc<HashMap<String, String>> = Arc::new(
        crate::campaigns::registered(ctx)?
            .into_iter()
            .map(|c| (c.id, c.account_id))
            .collect(),
    );
    let mut by_account: Baselines = HashMap::new();
    for b in &all_baselines {
        by_account
            .entry(b.account_id.clone())
            .or_default()
            .push((b.as_of_ms.saturating_mul(1000), b.followers));
    }
    let first = plan.days.first().copied().unwrap_or(i32::MAX);
    let (mut rows, base) = match plan.scope {
        Scope::All => Default::default(),
        Scope::Days(_) | Scope::Append => stored(ctx, first, &plan.days).await?,
    };
    // A full run also shows each baseline on its day, within the lake's days, though the
    // account did nothing that day (an incremental run keeps those rows).
    let mut days = plan.days.clone();
    if let (Scope::All, Some(&lo), Some(&hi)) = (&plan.scope, plan.days.first(), plan.days.last()) {
        let mut tz = query::tz::LocalClock::new(ctx.opts.tz);
        days.extend(
            by_account
                .values()
                .flatten()
                .map(|(at, _)| tz.day(*at))
                .filter(|d| (lo..=hi).contains(d)),
        );
    }
    // Under `spacepulse run` the newest days are gathered hour by hour, and only the files
    // committed since the last run are read: a day is the merge of its hours.
    let mut kept = None;
    let mut by_hours: BTreeMap<i32, HashMap<String, Totals>> = BTreeMap::new();
    if let Some(m) = &ctx.opts.memory {
        let files = files_of_days(&ctx.events, ctx.opts.tz, &plan.days)?;
        let key = (print, owners_print(&owners));
        let mut h = m.accounts.take(ctx, key, &plan.days, &files)?;
        let cutoffs: HashMap<i32, Cutoffs> = h
            .reading
            .days
            .iter()
            .map(|d| (*d, cutoffs_of(&by_account, ctx.opts.tz, *d)))
            .collect();
        let none = BTreeSet::new();
        let read = gather(
            ctx,
            h.reading.to_read(files, &none),
            h.reading.slot_of(&none),
            owners.clone(),
            Arc::new(cutoffs),
        )
        .await?;
        by_hours = h.merge(read)?;
        for d in h.reading.days.iter() {
            by_hours.entry(*d).or_default();
        }
        kept = Some(h);
    }
    for &day in &days {
        let cutoffs = Arc::new(cutoffs_of(&by_account, ctx.opts.tz, day));
        let day_rows = match by_hours.remove(&day) {
            Some(totals) => rows_of(totals, &cutoffs),
            None => day_rows(ctx, day, owners.clone(), cutoffs).await?,
        };
        for (account, row) in day_rows {
            rows.insert((day, account), row);
        }
        ctx.progress.advance(Job::Accounts.name());
    }
    let write_days: BTreeSet<i32> = rows
        .keys()
        .map(|k| k.0)
        .chain(days.iter().copied())
        .collect();
    // Followers carried forward in day order, restarting at each baseline.
    let mut standing: HashMap<String, Standing> = base;
    let mut ordered: Vec<(&(i32, String), &Row)> = rows.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(b.0));
    let mut b = (
        Date32Builder::new(),
        StringBuilder::new(),
        (0..8).map(|_| Int64Builder::new()).collect::<Vec<_>>(),
        Float64Builder::new(),
        StringBuilder::new(),
        Int32Builder::new(),
        Float64Builder::new(),
        BinaryBuilder::new(),
        Int64Builder::new(),
        TimestampMicrosecondBuilder::new().with_timezone("UTC"),
    );
    for ((day, account), r) in ordered {
        let net = r.follows - r.unfollows;
        let (total, on) = standing.entry(account.clone()).or_insert((0, None));
        // The latest baseline before the day ends, and whether it lands within the day.
        let end = ctx.opts.tz.day_start_us(day + 1);
        let latest = by_account
            .get(account)
            .and_then(|list| list.iter().rev().find(|(at, _)| *at < end));
        match latest {
            Some(&(at, figure)) if *on != Some(at) => {
                *total = match (r.stored, r.after) {
                    // A stored row of the day it landed on: its figure stands.
                    (Some((f, _)), _) => f,
                    (None, Some(after)) if at >= ctx.opts.tz.day_start_us(*day) => figure + after,
                    // Landed on an earlier day the account did nothing on.
                    _ => figure + net,
                };
                *on = Some(at);
            }
            _ => *total += net,
        }
        let (total, on) = (*total, *on);
        let figure = on.and_then(|at| {
            by_account
                .get(account)
                .and_then(|list| list.iter().find(|(t, _)| *t == at))
                .map(|(_, f)| *f)
        });
        b.0.append_value(*day);
        b.1.append_value(account);
        for (builder, v) in b.2.iter_mut().zip([
            r.follows,
            r.unfollows,
            net,
            total,
            r.reach,
            r.likes,
            r.comments,
            r.likes + r.comments,
        ]) {
            builder.append_value(v);
        }
        b.3.append_value(r.reach_approx);
        b.4.append_value(HLL_ESTIMATOR);
        b.5.append_value(HLL_PRECISION as i32);
        b.6.append_value(hll_relative_error());
        b.7.append_value(&r.hll);
        b.8.append_option(figure);
        b.9.append_option(on);
    }
    let mut ints =
        b.2.into_iter()
            .map(|mut x| Arc::new(x.finish()) as ArrayRef);
    let mut next = || ints.next().expect("eight columns");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(b.0.finish()),
        Arc::new(b.1.finish()),
        next(),
        next(),
        next(),
        next(),
        next(),
        Arc::new(b.3.finish()),
        next(),
        next(),
        next(),
        Arc::new(b.4.finish()),
        Arc::new(b.5.finish()),
        Arc::new(b.6.finish()),
        Arc::new(b.7.finish()),
        Arc::new(b.8.finish()),
        Arc::new(b.9.finish()),
    ];
    let batch = RecordBatch::try_new(table_schema(), cols)?;
    let n = batch.num_rows() as u64;
    let scope = plan.widened(write_days);
    let mut txns = plan.txns.clone();
    txns.push((baselines_app, print));
    publish(
        &ctx.opts.lake,
        TABLE,
        table_schema(),
        vec![batch],
        &scope,
        &txns,
    )
    .await?;
    if let (Some(m), Some(h)) = (&ctx.opts.memory, kept) {
        m.accounts.0.keep(h);
    }
    Ok((plan.days.len(), n, false))
}
