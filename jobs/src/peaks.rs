//! Peaks: photos uploaded per second, minute, (local) hour and day, each day's total and its
//! peak second, minute and hour; reservations per campaign per day with their peak second
//! and minute. Counts of events, so each `event_id` is counted once.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use deltalake::datafusion::prelude::col;
use query::tz::{LocalClock, MIN_US, SEC_US};

use crate::publish::{publish, schema};
use crate::scan::{event_key, ints, strs, times, types};
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
fn dedup(parts: Vec<Vec<(u128, i64, i64)>>) -> Vec<(i64, i64)> {
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

async fn upload_day(ctx: &Ctx<'_>, day: i32, out: &mut Uploads) -> Result<()> {
    let parts = ctx
        .scan
        .fold(
            ctx.scan.day_filter(day).and(types(&["photo_upload"])),
            &["event_id", "ts", "photos"],
            Vec::new,
            |acc: &mut Vec<(u128, i64, i64)>, batch| {
                let ids = strs(batch, "event_id")?;
                let ts = times(batch, "ts")?;
                let photos = ints(batch, "photos")?;
                for i in 0..batch.num_rows() {
                    let n = if photos.is_null(i) {
                        1
                    } else {
                        photos.value(i)
                    };
                    acc.push((event_key(ids.get(i).unwrap_or("")), ts.value(i), n));
                }
                Ok(())
            },
        )
        .await?;
    let items = dedup(parts);
    if items.is_empty() {
        return Ok(());
    }
    let mut clock = LocalClock::new(ctx.opts.tz);
    let seconds = buckets(&items, |t| t.div_euclid(SEC_US) * SEC_US);
    let minutes = buckets(&items, |t| {
        clock.local_us(t).div_euclid(MIN_US) * MIN_US - clock.offset_us(t)
    });
    let hours = buckets(&items, |t| clock.hour_start_us(t));
    let photos: i64 = items.iter().map(|i| i.1).sum();
    let (ps, pm, ph) = (peak(&seconds), peak(&minutes), peak(&hours));
    if let (Some(ps), Some(pm), Some(ph)) = (ps, pm, ph) {
        out.daily
            .push((day, items.len() as i64, photos, ps, pm, ph));
    }
    out.second.extend(seconds.into_iter().map(|b| (day, b)));
    out.minute.extend(minutes.into_iter().map(|b| (day, b)));
    out.hour.extend(hours.into_iter().map(|b| (day, b)));
    Ok(())
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

/// Reservations of each campaign on one day: (campaign, total, peak second, peak minute).
async fn campaign_day(ctx: &Ctx<'_>, day: i32) -> Result<Vec<(String, i64, Bucket, Bucket)>> {
    type Acc = (HashMap<String, usize>, Vec<(u128, i64, i64)>);
    let parts = ctx
        .scan
        .fold(
            ctx.scan
                .day_filter(day)
                .and(types(&["reserve"]))
                .and(col("campaign_id").is_not_null()),
            &["event_id", "ts", "campaign_id"],
            Acc::default,
            |acc: &mut Acc, batch| {
                let ids = strs(batch, "event_id")?;
                let ts = times(batch, "ts")?;
                let campaigns = strs(batch, "campaign_id")?;
                for i in 0..batch.num_rows() {
                    let c = campaigns.get(i).unwrap_or("");
                    let next = acc.0.len();
                    let idx = *acc.0.entry(c.to_string()).or_insert(next);
                    acc.1
                        .push((event_key(ids.get(i).unwrap_or("")), ts.value(i), idx as i64));
                }
                Ok(())
            },
        )
        .await?;
    // Per campaign: (key, ts, 1) lists, keyed by name across partitions.
    let mut by_campaign: HashMap<String, Vec<(u128, i64, i64)>> = HashMap::new();
    for (names, rows) in parts {
        let mut names_by_idx = vec![String::new(); names.len()];
        for (n, i) in names {
            names_by_idx[i] = n;
        }
        for (k, t, idx) in rows {
            by_campaign
                .entry(names_by_idx[idx as usize].clone())
                .or_default()
                .push((k, t, 1));
        }
    }
    let mut out = Vec::new();
    for (campaign, rows) in by_campaign {
        let items = dedup(vec![rows]);
        let seconds = buckets(&items, |t| t.div_euclid(SEC_US) * SEC_US);
        let minutes = buckets(&items, |t| t.div_euclid(MIN_US) * MIN_US);
        if let (Some(s), Some(m)) = (peak(&seconds), peak(&minutes)) {
            out.push((campaign, items.len() as i64, s, m));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
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
    for &day in &plan.days {
        upload_day(ctx, day, &mut up).await?;
        for (c, n, s, m) in campaign_day(ctx, day).await? {
            day_b.append_value(day);
            camp_b.append_value(c);
            res_b.append_value(n);
            ps_t.append_value(s.start);
            ps_n.append_value(s.sum);
            pm_t.append_value(m.start);
            pm_n.append_value(m.sum);
        }
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
