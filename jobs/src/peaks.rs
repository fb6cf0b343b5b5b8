//! Peaks: photos uploaded per second, minute, (local) hour and day, each day's total and its
//! peak second, minute and hour; reservations per campaign per day with their peak second
//! and minute. Counts of events, so each `event_id` is counted once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use query::tz::{LocalClock, MIN_US, ReportTz, SEC_US};

use crate::changes::Hour;
use crate::hours::{self, Kept, Live, Reading, RowSlots, Slot, SlotOf};
use crate::publish::{publish, schema};
use crate::scan::{EventFile, event_key, files_of_days, fold_files, ints, par_map, strs, times};
use crate::{Ctx, Job, Result};

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

pub fn series_schema(bucket: &str) -> SchemaRef {
    schema(vec![
        Field::new("day", DataType::Date32, false),
        ts_field(bucket),
        Field::new("uploads", DataType::Int64, false),
        Field::new("photos", DataType::Int64, false),
    ])
}

pub fn daily_schema() -> SchemaRef {
    schema(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("uploads", DataType::Int64, false),
        Field::new("photos", DataType::Int64, false),
        ts_field("peak_second"),
        Field::new("peak_second_photos", DataType::Int64, false),
        ts_field("peak_minute"),
        Field::new("peak_minute_photos", DataType::Int64, false),
        ts_field("peak_hour"),
        Field::new("peak_hour_photos", DataType::Int64, false),
    ])
}

pub fn campaign_schema() -> SchemaRef {
    schema(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("reservations", DataType::Int64, false),
        ts_field("peak_second"),
        Field::new("peak_second_reservations", DataType::Int64, false),
        ts_field("peak_minute"),
        Field::new("peak_minute_reservations", DataType::Int64, false),
    ])
}

/// One bucket of a series: its start (UTC µs), events and the sum of their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub events: i64,
    pub sum: i64,
}

/// Buckets of `(ts, weight)` items sorted by `ts`; `start_of` maps a ts to its bucket's start
/// and must be monotonic.
pub fn buckets(items: &[(i64, i64)], mut start_of: impl FnMut(i64) -> i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for &(ts, w) in items {
        let start = start_of(ts);
        match out.last_mut() {
            Some(b) if b.start == start => {
                b.events += 1;
                b.sum += w;
            }
            _ => out.push(Bucket {
                start,
                events: 1,
                sum: w,
            }),
        }
    }
    out
}

/// The earliest bucket with the largest sum.
pub fn peak(buckets: &[Bucket]) -> Option<Bucket> {
    buckets
        .iter()
        .copied()
        .reduce(|best, b| if b.sum > best.sum { b } else { best })
}

/// Deduplicated `(ts, weight)` items sorted by time, from `(key, ts, weight)`.
fn dedup(parts: Vec<Keyed>) -> Vec<(i64, i64)> {
    let mut all: Vec<(u128, i64, i64)> = parts.into_iter().flatten().collect();
    all.sort_unstable_by_key(|e| e.0);
    all.dedup_by_key(|e| e.0);
    let mut items: Vec<(i64, i64)> = all.into_iter().map(|(_, t, w)| (t, w)).collect();
    items.sort_unstable();
    items
}

struct Uploads {
    second: Vec<(i32, Bucket)>,
    minute: Vec<(i32, Bucket)>,
    hour: Vec<(i32, Bucket)>,
    daily: Vec<(i32, i64, i64, Bucket, Bucket, Bucket)>,
}

/// One report day's uploads (`(key, ts, photos)`) and reservations (`(key, ts, campaign)`,
/// the campaign an index into the worker's names), as one worker read them.
#[derive(Default)]
struct DayRows {
    uploads: Keyed,
    reserves: Keyed,
}

/// `(event key, ts, weight)` rows, before deduplication.
type Keyed = Vec<(u128, i64, i64)>;

/// What one worker gathered: its campaign names and each slot's rows.
struct Gathered {
    clock: LocalClock,
    names: Vec<String>,
    index: HashMap<String, i64>,
    days: BTreeMap<Slot, DayRows>,
}

/// One slot's rows before deduplication: uploads, and reservations by campaign.
#[derive(Default)]
struct SlotRows {
    uploads: Keyed,
    reserves: HashMap<String, Keyed>,
}

/// Every upload and reservation of `files` that `slot_of` places, from one pass over the
/// files (not a query per day), by slot.
async fn gather(
    ctx: &Ctx<'_>,
    files: Vec<EventFile>,
    slot_of: SlotOf,
) -> Result<BTreeMap<Slot, SlotRows>> {
    let tz = ctx.opts.tz;
    let fold = move |acc: &mut Gathered, file: &EventFile, batch: &RecordBatch| -> Result<()> {
        let types = strs(batch, "type")?;
        let ids = strs(batch, "event_id")?;
        let ts = times(batch, "ts")?;
        let photos = ints(batch, "photos")?;
        let campaigns = strs(batch, "campaign_id")?;
        let mut slots = RowSlots::new(file, &slot_of);
        for i in 0..batch.num_rows() {
            let upload = match types.get(i) {
                Some("photo_upload") => true,
                Some("reserve") => false,
                _ => continue,
            };
            let campaign = if upload {
                None
            } else {
                match campaigns.get(i) {
                    Some(c) => Some(c),
                    None => continue,
                }
            };
            let t = ts.value(i);
            let Some(slot) = slots.of(&mut acc.clock, t) else {
                continue;
            };
            let key = event_key(ids.get(i).unwrap_or(""));
            let weight = match campaign {
                None if photos.is_null(i) => 1,
                None => photos.value(i),
                Some(c) => match acc.index.get(c) {
                    Some(&n) => n,
                    None => {
                        let n = acc.names.len() as i64;
                        acc.names.push(c.to_string());
                        acc.index.insert(c.to_string(), n);
                        n
                    }
                },
            };
            let rows = acc.days.entry(slot).or_default();
            if upload {
                rows.uploads.push((key, t, weight));
            } else {
                rows.reserves.push((key, t, weight));
            }
        }
        Ok(())
    };
    let parts = fold_files(
        &ctx.events,
        files,
        |_: &EventFile| -> &'static [&'static str] {
            &["event_id", "ts", "type", "photos", "campaign_id"]
        },
        move || Gathered {
            clock: LocalClock::new(tz),
            names: Vec::new(),
            index: HashMap::new(),
            days: BTreeMap::new(),
        },
        fold,
    )
    .await?;
    // Per slot, the workers' rows; reservations keyed by campaign name.
    let mut by_slot: BTreeMap<Slot, SlotRows> = BTreeMap::new();
    for part in parts {
        for (slot, rows) in part.days {
            let entry = by_slot.entry(slot).or_default();
            entry.uploads.extend(rows.uploads);
            for (k, t, c) in rows.reserves {
                entry
                    .reserves
                    .entry(part.names[c as usize].clone())
                    .or_default()
                    .push((k, t, 1));
            }
        }
    }
    Ok(by_slot)
}

/// A day's (or hour's) rows deduplicated and counted per second.
fn seconds_of(rows: SlotRows) -> DaySeconds {
    let mut reserves: Vec<(String, Vec<Bucket>)> = rows
        .reserves
        .into_iter()
        .map(|(c, rows)| (c, per_second(&dedup(vec![rows]))))
        .collect();
    reserves.sort_by(|a, b| a.0.cmp(&b.0));
    DaySeconds {
        uploads: per_second(&dedup(vec![rows.uploads])),
        reserves,
    }
}

/// Per-second buckets of `(ts, weight)` items sorted by time.
fn per_second(items: &[(i64, i64)]) -> Vec<Bucket> {
    buckets(items, |t| t.div_euclid(SEC_US) * SEC_US)
}

/// Buckets of finer buckets (sorted by start), each counted in the bucket `start_of` maps its
/// start to (monotonic).
fn regroup(finer: &[Bucket], mut start_of: impl FnMut(i64) -> i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for b in finer {
        let start = start_of(b.start);
        match out.last_mut() {
            Some(o) if o.start == start => {
                o.events += b.events;
                o.sum += b.sum;
            }
            _ => out.push(Bucket { start, ..*b }),
        }
    }
    out
}

/// One day's uploads per second (weight: photos) and each campaign's reservations per second,
/// by campaign.
#[derive(Default)]
struct DaySeconds {
    uploads: Vec<Bucket>,
    reserves: Vec<(String, Vec<Bucket>)>,
}

fn upload_day(tz: ReportTz, day: i32, seconds: Vec<Bucket>, out: &mut Uploads) {
    if seconds.is_empty() {
        return;
    }
    let mut clock = LocalClock::new(tz);
    let minutes = regroup(&seconds, |t| {
        clock.local_us(t).div_euclid(MIN_US) * MIN_US - clock.offset_us(t)
    });
    let hours = regroup(&seconds, |t| clock.hour_start_us(t));
    let uploads: i64 = seconds.iter().map(|b| b.events).sum();
    let photos: i64 = seconds.iter().map(|b| b.sum).sum();
    let (ps, pm, ph) = (peak(&seconds), peak(&minutes), peak(&hours));
    if let (Some(ps), Some(pm), Some(ph)) = (ps, pm, ph) {
        out.daily.push((day, uploads, photos, ps, pm, ph));
    }
    out.second.extend(seconds.into_iter().map(|b| (day, b)));
    out.minute.extend(minutes.into_iter().map(|b| (day, b)));
    out.hour.extend(hours.into_iter().map(|b| (day, b)));
}

/// Each campaign's reservations on one day: (campaign, total, peak second, peak minute).
fn campaign_day(reserves: &[(String, Vec<Bucket>)]) -> Vec<(String, i64, Bucket, Bucket)> {
    let mut out = Vec::new();
    for (campaign, seconds) in reserves {
        let minutes = regroup(seconds, |t| t.div_euclid(MIN_US) * MIN_US);
        let total = seconds.iter().map(|b| b.events).sum();
        if let (Some(s), Some(m)) = (peak(seconds), peak(&minutes)) {
            out.push((campaign.clone(), total, s, m));
        }
    }
    out
}

fn series_batch(bucket: &str, rows: &[(i32, Bucket)]) -> Result<RecordBatch> {
    let mut day = Date32Builder::new();
    let mut start = ts_builder();
    let mut events = Int64Builder::new();
    let mut sum = Int64Builder::new();
    for (d, b) in rows {
        day.append_value(*d);
        start.append_value(b.start);
        events.append_value(b.events);
        sum.append_value(b.sum);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(day.finish()),
        Arc::new(start.finish()),
        Arc::new(events.finish()),
        Arc::new(sum.finish()),
    ];
    Ok(RecordBatch::try_new(series_schema(bucket), cols)?)
}

fn daily_batch(rows: &[(i32, i64, i64, Bucket, Bucket, Bucket)]) -> Result<RecordBatch> {
    let mut day = Date32Builder::new();
    let mut uploads = Int64Builder::new();
    let mut photos = Int64Builder::new();
    let mut peaks: Vec<(TimestampMicrosecondBuilder, Int64Builder)> = (0..3)
        .map(|_| (ts_builder(), Int64Builder::new()))
        .collect();
    for (d, u, p, s, m, h) in rows {
        day.append_value(*d);
        uploads.append_value(*u);
        photos.append_value(*p);
        for (b, (t, n)) in [s, m, h].into_iter().zip(peaks.iter_mut()) {
            t.append_value(b.start);
            n.append_value(b.sum);
        }
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(day.finish()),
        Arc::new(uploads.finish()),
        Arc::new(photos.finish()),
    ];
    for (mut t, mut n) in peaks {
        cols.push(Arc::new(t.finish()));
        cols.push(Arc::new(n.finish()));
    }
    Ok(RecordBatch::try_new(daily_schema(), cols)?)
}

pub async fn run(ctx: &Ctx<'_>) -> Result<(usize, u64, bool)> {
    let plan = ctx.plan(Job::Peaks).await?;
    if plan.up_to_date {
        return Ok((0, 0, true));
    }
    ctx.progress
        .start(Job::Peaks.name(), plan.days.len() as u64);
    let mut up = Uploads {
        second: Vec::new(),
        minute: Vec::new(),
        hour: Vec::new(),
        daily: Vec::new(),
    };
    let mut day_b = Date32Builder::new();
    let mut camp_b = StringBuilder::new();
    let mut res_b = Int64Builder::new();
    let mut ps_t = ts_builder();
    let mut ps_n = Int64Builder::new();
    let mut pm_t = ts_builder();
    let mut pm_n = Int64Builder::new();
    let files = files_of_days(&ctx.events, ctx.opts.tz, &plan.days)?;
    // Under `spacepulse run` the newest days are gathered hour by hour, and only the files
    // committed since the last run are read: a day is the merge of its hours.
    let mut hours = match &ctx.opts.memory {
        Some(m) => Some(m.peaks.take(ctx, &plan.days, &files)?),
        None => None,
    };
    let (slot_of, files) = match &hours {
        Some(h) => (
            h.reading.slot_of(&plan.days),
            h.reading.to_read(files, &plan.days),
        ),
        None => (hours::whole_days(&plan.days), files),
    };
    let gathered = gather(ctx, files, slot_of).await?;
    let mut whole = Vec::new();
    let mut by_hour = Vec::new();
    for (slot, rows) in gathered {
        match slot {
            (day, None) => whole.push((day, rows)),
            (day, Some(hour)) => by_hour.push(((day, hour), rows)),
        }
    }
    let mut per_day: BTreeMap<i32, DaySeconds> =
        par_map(whole, |(day, rows)| (day, seconds_of(rows)))
            .into_iter()
            .collect();
    if let Some(h) = hours.as_mut() {
        per_day.extend(h.merge(by_hour)?);
    }
    for (day, seconds) in per_day {
        upload_day(ctx.opts.tz, day, seconds.uploads, &mut up);
        for (c, n, s, m) in campaign_day(&seconds.reserves) {
            day_b.append_value(day);
            camp_b.append_value(c);
            res_b.append_value(n);
            ps_t.append_value(s.start);
            ps_n.append_value(s.sum);
            pm_t.append_value(m.start);
            pm_n.append_value(m.sum);
        }
    }
    for _ in &plan.days {
        ctx.progress.advance(Job::Peaks.name());
    }
    let campaigns = RecordBatch::try_new(
        campaign_schema(),
        vec![
            Arc::new(day_b.finish()),
            Arc::new(camp_b.finish()),
            Arc::new(res_b.finish()),
            Arc::new(ps_t.finish()),
            Arc::new(ps_n.finish()),
            Arc::new(pm_t.finish()),
            Arc::new(pm_n.finish()),
        ],
    )?;
    let outputs = [
        ("uploads_daily", daily_schema(), daily_batch(&up.daily)?),
        (
            "uploads_by_second",
            series_schema("second"),
            series_batch("second", &up.second)?,
        ),
        (
            "uploads_by_minute",
            series_schema("minute"),
            series_batch("minute", &up.minute)?,
        ),
        (
            "uploads_by_hour",
            series_schema("hour"),
            series_batch("hour", &up.hour)?,
        ),
        ("campaign_peaks", campaign_schema(), campaigns),
    ];
    let mut rows = 0;
    for (name, schema, batch) in outputs {
        rows += batch.num_rows() as u64;
        publish(
            &ctx.opts.lake,
            name,
            schema,
            vec![batch],
            &plan.scope,
            &plan.txns,
        )
        .await?;
    }
    if let (Some(m), Some(h)) = (&ctx.opts.memory, hours) {
        m.peaks.0.keep(h);
    }
    Ok((plan.days.len(), rows, false))
}

/// What `spacepulse run` keeps of the peaks job between runs, so that a commit into the
/// current hour reads only its own files (see [`crate::hours`]): the newest report days hour
/// by hour (per UTC hour, the files read and, while the hour is open, its rows deduplicated by
/// `event_id`; once closed, only its counts per second), a day being the merge of its hours.
/// A file that arrives in a closed hour, or one read that is no longer live (a compaction
/// rewrote it), has the whole hour read again, so a retry of an event counted before is still
/// counted once; everything is read again when the events table was replaced or the report
/// time zone changed.
#[derive(Debug, Default)]
pub struct Memory(Kept<Hours>);

struct Hours {
    table_id: String,
    tz: ReportTz,
    parts: BTreeMap<(i32, Hour), Part>,
    reading: Reading,
}

struct Part {
    files: std::collections::HashSet<deltalake::Path>,
    rows: PartRows,
}

enum PartRows {
    /// An open hour's rows, deduplicated (sorted by key), for the rows read later to be
    /// deduplicated against.
    Open {
        uploads: Keyed,
        reserves: HashMap<String, Keyed>,
    },
    /// A closed hour: its counts per second.
    Closed(DaySeconds),
}

/// Sorts rows by key and keeps one of each key.
fn dedup_keyed(rows: &mut Keyed) {
    rows.sort_unstable_by_key(|e| e.0);
    rows.dedup_by_key(|e| e.0);
}

impl PartRows {
    fn seconds(&self) -> DaySeconds {
        match self {
            PartRows::Closed(s) => DaySeconds {
                uploads: s.uploads.clone(),
                reserves: s.reserves.clone(),
            },
            PartRows::Open { uploads, reserves } => {
                let items = |rows: &Keyed| {
                    let mut items: Vec<(i64, i64)> = rows.iter().map(|r| (r.1, r.2)).collect();
                    items.sort_unstable();
                    per_second(&items)
                };
                let mut reserves: Vec<(String, Vec<Bucket>)> = reserves
                    .iter()
                    .map(|(c, r)| (c.clone(), items(r)))
                    .collect();
                reserves.sort_by(|a, b| a.0.cmp(&b.0));
                DaySeconds {
                    uploads: items(uploads),
                    reserves,
                }
            }
        }
    }
}

impl Memory {
    /// The hours kept, checked against this run's live `files` of the changed `days`.
    fn take(&self, ctx: &Ctx<'_>, days: &BTreeSet<i32>, files: &[EventFile]) -> Result<Hours> {
        let table_id = hours::table_id(ctx)?;
        let tz = ctx.opts.tz;
        let kept = self
            .0
            .take()
            .filter(|h| h.table_id == table_id && h.tz == tz);
        let mut parts = kept.map(|h| h.parts).unwrap_or_default();
        let live = Live::of(days, files);
        parts.retain(|key, part| {
            live.keeps_hour(key, &part.files, matches!(part.rows, PartRows::Open { .. }))
        });
        let reading = live.reading(|day, hour, p| {
            parts
                .get(&(day, hour))
                .is_some_and(|part| part.files.contains(p))
        });
        Ok(Hours {
            table_id,
            tz,
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
    /// Adds the rows read from each hour's unread files to the hour, closes the hours older
    /// than the newest two, and gives each day gathered hour by hour as the merge of its
    /// hours.
    fn merge(&mut self, read: Vec<((i32, Hour), SlotRows)>) -> Result<Vec<(i32, DaySeconds)>> {
        let mut read: BTreeMap<(i32, Hour), SlotRows> = read.into_iter().collect();
        for (key, paths) in std::mem::take(&mut self.reading.new_files) {
            let mut rows = read.remove(&key).unwrap_or_default();
            match self.parts.get_mut(&key) {
                Some(Part {
                    files,
                    rows: PartRows::Open { uploads, reserves },
                }) => {
                    uploads.append(&mut rows.uploads);
                    dedup_keyed(uploads);
                    for (c, mut r) in rows.reserves {
                        let into = reserves.entry(c).or_default();
                        into.append(&mut r);
                        dedup_keyed(into);
                    }
                    files.extend(paths);
                }
                Some(_) => {
                    return Err(crate::Error::Internal(
                        "peaks: a new file for a closed hour that was not read again".into(),
                    ));
                }
                None => {
                    dedup_keyed(&mut rows.uploads);
                    for r in rows.reserves.values_mut() {
                        dedup_keyed(r);
                    }
                    let part = Part {
                        files: paths.into_iter().collect(),
                        rows: PartRows::Open {
                            uploads: rows.uploads,
                            reserves: rows.reserves,
                        },
                    };
                    self.parts.insert(key, part);
                }
            }
        }
        if let Some((day, hour)) = read.keys().next() {
            return Err(crate::Error::Internal(format!(
                "peaks: rows read for day {day}, hour {hour:?}, which had no file to read"
            )));
        }
        self.close_hours();
        let mut out = Vec::new();
        for &day in self.reading.days.iter() {
            let mut merged = DaySeconds::default();
            let mut reserves: BTreeMap<String, Vec<Bucket>> = BTreeMap::new();
            let mut any = false;
            for (_, part) in self.parts.iter().filter(|(k, _)| k.0 == day) {
                any = true;
                let s = part.rows.seconds();
                merged.uploads.extend(s.uploads);
                for (c, b) in s.reserves {
                    reserves.entry(c).or_default().extend(b);
                }
            }
            if any {
                merged.reserves = reserves.into_iter().collect();
                out.push((day, merged));
            }
        }
        Ok(out)
    }

    /// Keeps only the counts per second of each hour older than the newest by more than
    /// `OPEN_HOURS`.
    fn close_hours(&mut self) {
        let Some(newest) = hours::newest(self.parts.keys().map(|k| &k.1)) else {
            return;
        };
        for (key, part) in self.parts.iter_mut() {
            if hours::closed(&key.1, newest) && matches!(part.rows, PartRows::Open { .. }) {
                part.rows = PartRows::Closed(part.rows.seconds());
            }
        }
    }
}
