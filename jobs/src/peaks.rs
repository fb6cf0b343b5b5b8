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

/// What one worker gathered: its campaign names and each day's rows.
struct Gathered {
    clock: LocalClock,
    names: Vec<String>,
    index: HashMap<String, i64>,
    days: BTreeMap<i32, DayRows>,
}

/// Every upload and reservation of `days`, from one pass over the hours' files (not a query
/// per day): per day, the uploads' items and each campaign's reservations, deduplicated.
async fn gather(ctx: &Ctx<'_>, days: &BTreeSet<i32>) -> Result<Vec<(i32, DayItems)>> {
    let tz = ctx.opts.tz;
    let wanted = days.clone();
    let fold = move |acc: &mut Gathered, file: &EventFile, batch: &RecordBatch| -> Result<()> {
        let types = strs(batch, "type")?;
        let ids = strs(batch, "event_id")?;
        let ts = times(batch, "ts")?;
        let photos = ints(batch, "photos")?;
        let campaigns = strs(batch, "campaign_id")?;
        let whole_day = match file.days.as_slice() {
            [d] => Some(*d),
            _ => None,
        };
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
            let day = whole_day.unwrap_or_else(|| acc.clock.day(t));
            if !wanted.contains(&day) {
                continue;
            }
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
            let rows = acc.days.entry(day).or_default();
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
        files_of_days(&ctx.events, tz, days)?,
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
    // Per day, the workers' rows; reservations keyed by campaign name.
    let mut by_day: BTreeMap<i32, (Vec<Keyed>, HashMap<String, Keyed>)> = BTreeMap::new();
    for part in parts {
        for (day, rows) in part.days {
            let entry = by_day.entry(day).or_default();
            entry.0.push(rows.uploads);
            for (k, t, c) in rows.reserves {
                entry
                    .1
                    .entry(part.names[c as usize].clone())
                    .or_default()
                    .push((k, t, 1));
            }
        }
    }
    Ok(par_map(
        by_day.into_iter().collect(),
        |(day, (uploads, campaigns))| {
            let mut reserves: Vec<(String, Vec<(i64, i64)>)> = campaigns
                .into_iter()
                .map(|(c, rows)| (c, dedup(vec![rows])))
                .collect();
            reserves.sort_by(|a, b| a.0.cmp(&b.0));
            (
                day,
                DayItems {
                    uploads: dedup(uploads),
                    reserves,
                },
            )
        },
    ))
}

/// One day's deduplicated `(ts, weight)` items, sorted by time: uploads (weight: photos) and
/// each campaign's reservations (weight 1), by campaign.
struct DayItems {
    uploads: Vec<(i64, i64)>,
    reserves: Vec<(String, Vec<(i64, i64)>)>,
}

fn upload_day(tz: ReportTz, day: i32, items: &[(i64, i64)], out: &mut Uploads) {
    if items.is_empty() {
        return;
    }
    let mut clock = LocalClock::new(tz);
    let seconds = buckets(items, |t| t.div_euclid(SEC_US) * SEC_US);
    let minutes = buckets(items, |t| {
        clock.local_us(t).div_euclid(MIN_US) * MIN_US - clock.offset_us(t)
    });
    let hours = buckets(items, |t| clock.hour_start_us(t));
    let photos: i64 = items.iter().map(|i| i.1).sum();
    let (ps, pm, ph) = (peak(&seconds), peak(&minutes), peak(&hours));
    if let (Some(ps), Some(pm), Some(ph)) = (ps, pm, ph) {
        out.daily
            .push((day, items.len() as i64, photos, ps, pm, ph));
    }
    out.second.extend(seconds.into_iter().map(|b| (day, b)));
    out.minute.extend(minutes.into_iter().map(|b| (day, b)));
    out.hour.extend(hours.into_iter().map(|b| (day, b)));
}

/// Each campaign's reservations on one day: (campaign, total, peak second, peak minute).
fn campaign_day(reserves: &[(String, Vec<(i64, i64)>)]) -> Vec<(String, i64, Bucket, Bucket)> {
    let mut out = Vec::new();
    for (campaign, items) in reserves {
        let seconds = buckets(items, |t| t.div_euclid(SEC_US) * SEC_US);
        let minutes = buckets(items, |t| t.div_euclid(MIN_US) * MIN_US);
        if let (Some(s), Some(m)) = (peak(&seconds), peak(&minutes)) {
            out.push((campaign.clone(), items.len() as i64, s, m));
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
    let days: BTreeSet<i32> = plan.days.iter().copied().collect();
    for (day, items) in gather(ctx, &days).await? {
        upload_day(ctx.opts.tz, day, &items.uploads, &mut up);
        for (c, n, s, m) in campaign_day(&items.reserves) {
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
    Ok((plan.days.len(), rows, false))
}
