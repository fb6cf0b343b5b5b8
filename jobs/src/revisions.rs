//! Revisions: what a job run changed in figures that had already been published as complete.
//!
//! A day is complete once the events watermark its job recorded has passed its end (a launch
//! milestone once it has passed the milestone's instant). Before a job runs, its tables are
//! opened at their current versions; after it, every complete figure whose value the run
//! changed is appended to `metrics/revisions` with the figure before and after, the job's
//! versions and why it was recomputed (late events, a registry change, a follower baseline,
//! a full recompute). Of the daily tables the jobs rewrite by day, only the days the run
//! rewrote are compared, so a run every few seconds reads a few rows; the campaigns job
//! rewrites its tables whole, and all their complete rows are compared. The record is written after the job's own commit: a process killed
//! between the two loses that run's revisions, never a figure.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Date32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Field, Float64Type, SchemaRef, TimeUnit};
use deltalake::DeltaTable;
use lake::tables::{Lake, commit_actions};
use query::tz::{LocalClock, format_day};

use crate::publish::{Scope, publish, schema, table_name};
use crate::{Job, Result, app_id, watermark_app_id};

/// The revisions table, at `metrics/revisions`.
pub const TABLE: &str = lake::tables::REVISIONS_TABLE;

pub fn table_schema() -> SchemaRef {
    schema(vec![
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("table_version", DataType::Int64, false),
        Field::new("entity_kind", DataType::Utf8, false),
        Field::new("entity_id", DataType::Utf8, true),
        Field::new("revised_day", DataType::Date32, true),
        Field::new("key", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("before", DataType::Float64, true),
        Field::new("after", DataType::Float64, true),
        Field::new("change", DataType::Float64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("events_version_before", DataType::Int64, true),
        Field::new("events_version_after", DataType::Int64, true),
    ])
}

/// Which figures of a metric table are tracked, and how a row is named.
struct Spec {
    table: &'static str,
    job: Job,
    /// `account`, `advertiser`, `campaign` or `platform`.
    kind: &'static str,
    /// The column naming the entity (none: platform-wide).
    entity: Option<&'static str>,
    /// The other columns that name a row beside `day` and the entity.
    keys: &'static [&'static str],
    measures: &'static [&'static str],
    /// A daily table (complete by day) or launch milestones (complete by instant).
    daily: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        table: "activity",
        job: Job::Activity,
        kind: "platform",
        entity: None,
        keys: &["breakdown", "segment"],
        measures: &["dau", "wau", "mau", "new_users"],
        daily: true,
    },
    Spec {
        table: "uploads_daily",
        job: Job::Peaks,
        kind: "platform",
        entity: None,
        keys: &[],
        measures: &["uploads", "photos"],
        daily: true,
    },
    Spec {
        table: "accounts_daily",
        job: Job::Accounts,
        kind: "account",
        entity: Some("account_id"),
        keys: &[],
        measures: &[
            "follows",
            "unfollows",
            "followers",
            "reach",
            "likes",
            "comments",
        ],
        daily: true,
    },
    Spec {
        table: "advertisers_daily",
        job: Job::Advertisers,
        kind: "advertiser",
        entity: Some("advertiser_id"),
        keys: &["ad_id"],
        measures: &[
            "impressions",
            "clicks",
            "conversions",
            "spend_cents",
            "conversion_value_cents",
            "reach",
        ],
        daily: true,
    },
    Spec {
        table: "campaigns_daily",
        job: Job::Campaigns,
        kind: "campaign",
        entity: Some("campaign_id"),
        keys: &[],
        measures: &["reach", "new_users"],
        daily: true,
    },
    Spec {
        table: "launch_milestones",
        job: Job::Campaigns,
        kind: "campaign",
        entity: Some("campaign_id"),
        keys: &["after_seconds"],
        measures: &["users"],
        daily: false,
    },
];

/// A tracked table as it stood before a job ran.
pub struct Before {
    tables: Vec<(&'static Spec, DeltaTable, Versions)>,
}

/// What a table's last commit recorded it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Versions {
    events: Option<i64>,
    watermark: Option<i64>,
    registry: Option<i64>,
    baselines: Option<i64>,
}

async fn versions(table: &DeltaTable, job: Job, tz: query::tz::ReportTz) -> Result<Versions> {
    // Every application below is the job's: its `txn` actions read at once.
    let txns = lake::txns::app_versions(table, &format!("jobs/{}/", job.name())).await?;
    let get = |app: String| txns.get(&app).copied();
    Ok(Versions {
        events: get(app_id(job, tz)),
        watermark: get(watermark_app_id(job, tz)),
        registry: get(format!("jobs/{}/registry", job.name())),
        baselines: get(format!("jobs/{}/baselines", job.name())),
    })
}

/// Opens `job`'s tracked tables at their current versions.
pub async fn before(lake: &Lake, job: Job, tz: query::tz::ReportTz) -> Result<Before> {
    let mut tables = Vec::new();
    for spec in SPECS.iter().filter(|s| s.job == job) {
        if let Some(t) = lake.open(&table_name(spec.table)).await? {
            let v = versions(&t, job, tz).await?;
            tables.push((spec, t, v));
        }
    }
    Ok(Before { tables })
}

/// One figure's row: the entity, the day and the other keys.
type RowKey = (Option<String>, Option<i32>, String);

/// Compares `job`'s tracked tables with how they stood `before` the run and appends what
/// changed in complete figures; the number of revisions recorded.
pub async fn record(
    lake: &Lake,
    job: Job,
    tz: query::tz::ReportTz,
    full: bool,
    before: Before,
) -> Result<usize> {
    let mut out = Out::default();
    let now = chrono::Utc::now().timestamp_micros();
    for (spec, old, was) in before.tables {
        let Some(new) = lake.open(&table_name(spec.table)).await? else {
            continue;
        };
        let (Some(old_v), Some(new_v)) = (old.version(), new.version()) else {
            continue;
        };
        // Nothing was complete before any watermark.
        let Some(watermark) = was.watermark else {
            continue;
        };
        if new_v == old_v {
            continue;
        }
        let now_v = versions(&new, job, tz).await?;
        let touched = touched_days(&new, old_v, new_v).await?;
        let filter = complete_filter(spec, watermark * 1000, tz, touched.as_ref());
        let Some(filter) = filter else { continue };
        let (Some(before_rows), Some(after_rows)) = (
            figures(spec, &old, &filter).await?,
            figures(spec, &new, &filter).await?,
        ) else {
            continue;
        };
        let reason = reason(&was, &now_v, full);
        let keys: BTreeSet<&RowKey> = before_rows.keys().chain(after_rows.keys()).collect();
        for key in keys {
            let b = before_rows.get(key);
            let a = after_rows.get(key);
            if !spec.daily {
                let due = b.or(a).and_then(|r| r[spec.measures.len()]);
                if due.is_none_or(|due| due > (watermark * 1000) as f64) {
                    continue;
                }
            }
            for (m, metric) in spec.measures.iter().enumerate() {
                let bv = b.and_then(|r| r[m]);
                let av = a.and_then(|r| r[m]);
                let change = av.unwrap_or(0.0) - bv.unwrap_or(0.0);
                if bv == av || change == 0.0 {
                    continue;
                }
                out.push(Revision {
                    now,
                    spec,
                    version: new_v as i64,
                    key,
                    metric,
                    before: bv,
                    after: av,
                    change,
                    reason: &reason,
                    events: (was.events, now_v.events),
                });
            }
        }
    }
    let n = out.len();
    if n > 0 {
        publish(
            lake,
            TABLE,
            table_schema(),
            vec![out.finish()?],
            &Scope::Append,
            &[],
        )
        .await?;
    }
    Ok(n)
}

/// Why a table was recomputed, in words.
fn reason(was: &Versions, now: &Versions, full: bool) -> String {
    let mut why = Vec::new();
    if was.registry != now.registry {
        why.push("the campaign's definition changed");
    }
    if was.baselines != now.baselines {
        why.push("a follower baseline was imported");
    }
    if was.events != now.events {
        why.push("late events");
    }
    if why.is_empty() {
        why.push(if full {
            "a full recompute"
        } else {
            "a recompute"
        });
    }
    why.join(", ")
}

/// The `day` partitions the commits after `old` up to `new` wrote (`None`: the table has no
/// day partitions, or a commit removed files of every day).
async fn touched_days(table: &DeltaTable, old: u64, new: u64) -> Result<Option<BTreeSet<String>>> {
    let mut days = BTreeSet::new();
    for v in old + 1..=new {
        for action in commit_actions::<serde_json::Value>(table, v).await? {
            for kind in ["add", "remove"] {
                if let Some(a) = action.get(kind) {
                    match a["partitionValues"]["day"].as_str() {
                        Some(d) => {
                            days.insert(d.to_string());
                        }
                        None => return Ok(None),
                    }
                }
            }
        }
    }
    Ok(Some(days))
}

/// The SQL filter of the complete rows among the touched ones; `None` when none can be.
fn complete_filter(
    spec: &Spec,
    watermark_us: i64,
    tz: query::tz::ReportTz,
    touched: Option<&BTreeSet<String>>,
) -> Option<String> {
    // Milestones: every row; which are complete is decided per row from the start it had
    // before the run (a campaign's new start must not make a passed milestone look open).
    if !spec.daily {
        return Some("TRUE".to_string());
    }
    // The last day whose end the watermark had passed.
    let last = LocalClock::new(tz).day(watermark_us) - 1;
    let mut filter = format!("day <= DATE '{}'", format_day(last));
    if let Some(days) = touched {
        let days: Vec<String> = days
            .iter()
            .filter(|d| query::tz::parse_day(d).is_ok_and(|d| d <= last))
            .map(|d| format!("DATE '{d}'"))
            .collect();
        if days.is_empty() {
            return None;
        }
        filter.push_str(&format!(" AND day IN ({})", days.join(", ")));
    }
    Some(filter)
}

/// The tracked figures of the rows of `table` that pass `filter`, by row (`None` when the
/// table lacks a tracked column: written by an older spacepulse).
async fn figures(
    spec: &Spec,
    table: &DeltaTable,
    filter: &str,
) -> Result<Option<HashMap<RowKey, Vec<Option<f64>>>>> {
    let ctx = query::session::context();
    query::session::register(&ctx, "t", table).await?;
    let has = |c: &str| {
        table
            .snapshot()
            .ok()
            .is_some_and(|s| s.schema().field(c).is_some())
    };
    if !spec.measures.iter().chain(spec.keys).all(|c| has(c)) {
        return Ok(None);
    }
    let entity = spec
        .entity
        .map_or("CAST(NULL AS VARCHAR)".to_string(), |e| e.to_string());
    let day = if spec.daily {
        "day"
    } else {
        "CAST(NULL AS DATE)"
    };
    let key = if spec.keys.is_empty() {
        "''".to_string()
    } else {
        let parts: Vec<String> = spec
            .keys
            .iter()
            .map(|k| format!("'{k}=' || CAST({k} AS VARCHAR)"))
            .collect();
        parts.join(" || ', ' || ")
    };
    let mut measures: Vec<String> = spec
        .measures
        .iter()
        .map(|m| format!("CAST({m} AS DOUBLE)"))
        .collect();
    // A milestone's instant (µs), after the measures.
    if !spec.daily {
        measures.push("CAST(CAST(start AS BIGINT) + after_seconds * 1000000 AS DOUBLE)".into());
    }
    let sql = format!(
        "SELECT {entity}, {day}, {key}, {} FROM t WHERE {filter}",
        measures.join(", ")
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut out = HashMap::new();
    for b in &batches {
        // Strings may come as views: read them as plain UTF-8.
        let e = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let e = e.as_string::<i32>();
        let d = b.column(1).as_primitive::<Date32Type>();
        let k = arrow::compute::cast(b.column(2), &DataType::Utf8)?;
        let k = k.as_string::<i32>();
        for i in 0..b.num_rows() {
            let values = (0..spec.measures.len() + usize::from(!spec.daily))
                .map(|m| {
                    let c = b.column(3 + m).as_primitive::<Float64Type>();
                    c.is_valid(i).then(|| c.value(i))
                })
                .collect();
            out.insert(
                (
                    e.is_valid(i).then(|| e.value(i).to_string()),
                    d.is_valid(i).then(|| d.value(i)),
                    k.value(i).to_string(),
                ),
                values,
            );
        }
    }
    Ok(Some(out))
}

struct Revision<'a> {
    now: i64,
    spec: &'a Spec,
    version: i64,
    key: &'a RowKey,
    metric: &'a str,
    before: Option<f64>,
    after: Option<f64>,
    change: f64,
    reason: &'a str,
    events: (Option<i64>, Option<i64>),
}

#[derive(Default)]
struct Out {
    n: usize,
    at: TimestampMicrosecondBuilder,
    table: StringBuilder,
    version: Int64Builder,
    kind: StringBuilder,
    entity: StringBuilder,
    day: Date32Builder,
    key: StringBuilder,
    metric: StringBuilder,
    before: Float64Builder,
    after: Float64Builder,
    change: Float64Builder,
    reason: StringBuilder,
    events_before: Int64Builder,
    events_after: Int64Builder,
}

impl Out {
    fn len(&self) -> usize {
        self.n
    }

    fn push(&mut self, r: Revision<'_>) {
        self.n += 1;
        self.at.append_value(r.now);
        self.table.append_value(r.spec.table);
        self.version.append_value(r.version);
        self.kind.append_value(r.spec.kind);
        self.entity.append_option(r.key.0.as_deref());
        self.day.append_option(r.key.1);
        self.key.append_value(&r.key.2);
        self.metric.append_value(r.metric);
        self.before.append_option(r.before);
        self.after.append_option(r.after);
        self.change.append_value(r.change);
        self.reason.append_value(r.reason);
        self.events_before.append_option(r.events.0);
        self.events_after.append_option(r.events.1);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(self.at.finish().with_timezone("UTC")),
            Arc::new(self.table.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.entity.finish()),
            Arc::new(self.day.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.before.finish()),
            Arc::new(self.after.finish()),
            Arc::new(self.change.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.events_before.finish()),
            Arc::new(self.events_after.finish()),
        ];
        Ok(RecordBatch::try_new(table_schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(events: i64, registry: Option<i64>) -> Versions {
        Versions {
            events: Some(events),
            watermark: Some(0),
            registry,
            baselines: None,
        }
    }

    #[test]
    fn reasons_name_what_changed() {
        assert_eq!(reason(&v(1, None), &v(2, None), false), "late events");
        assert_eq!(
            reason(&v(1, Some(5)), &v(1, Some(6)), false),
            "the campaign's definition changed"
        );
        assert_eq!(reason(&v(1, None), &v(1, None), true), "a full recompute");
    }

    #[test]
    fn only_complete_days_are_compared() {
        let tz: query::tz::ReportTz = "Asia/Shanghai".parse().unwrap();
        let spec = &SPECS[2];
        // 2015-04-28T16:00:00Z is midnight in Shanghai: the 28th is complete, not the 29th.
        let w = chrono::DateTime::parse_from_rfc3339("2015-04-28T16:00:00Z")
            .unwrap()
            .timestamp_micros();
        let touched: BTreeSet<String> = ["2015-04-28", "2015-04-29"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = complete_filter(spec, w, tz, Some(&touched)).unwrap();
        assert!(f.contains("day IN (DATE '2015-04-28')"), "{f}");
        let late: BTreeSet<String> = ["2015-04-29".to_string()].into();
        assert_eq!(complete_filter(spec, w, tz, Some(&late)), None);
    }
}
