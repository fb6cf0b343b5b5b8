//! What changed in `events`: the UTC hour partitions that commits with `dataChange: true`
//! added since a version, read from the Delta log. Compaction (`dataChange: false`) changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use deltalake::DeltaTable;
use deltalake::Path;
use futures::TryStreamExt;
use query::tz::ReportTz;

use crate::Result;

/// A UTC hour partition of `events`.
pub type Hour = (NaiveDate, i32);

fn parse_hour(date: Option<&str>, hour: Option<&str>) -> Option<Hour> {
    let date = NaiveDate::parse_from_str(date?, "%Y-%m-%d").ok()?;
    let hour: i32 = hour?.parse().ok()?;
    (0..24).contains(&hour).then_some((date, hour))
}

/// The hour partition of a file from its path (`.../date=YYYY-MM-DD/hour=HH/...`).
pub fn hour_of_path(path: &str) -> Option<Hour> {
    let mut date = None;
    let mut hour = None;
    for part in path.split('/') {
        if let Some(d) = part.strip_prefix("date=") {
            date = Some(d);
        } else if let Some(h) = part.strip_prefix("hour=") {
            hour = Some(h);
        }
    }
    parse_hour(date, hour)
}

/// Every hour partition that holds a file in the table's current snapshot.
pub fn all_hours(events: &DeltaTable) -> Result<BTreeSet<Hour>> {
    let mut out = BTreeSet::new();
    for f in events.snapshot()?.log_data().iter() {
        if let Some(h) = hour_of_path(&f.path()) {
            out.insert(h);
        }
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct LogLine {
    add: Option<Add>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Add {
    #[serde(default)]
    partition_values: std::collections::HashMap<String, Option<String>>,
    #[serde(default = "yes")]
    data_change: bool,
}

fn yes() -> bool {
    true
}

/// The hours that commits after `since` (up to the table's version) added data to, or `None`
/// when a commit in that range is no longer in the log (then everything is recomputed).
pub async fn hours_since(events: &DeltaTable, since: i64) -> Result<Option<BTreeSet<Hour>>> {
    let Some(latest) = events.version() else {
        return Ok(Some(BTreeSet::new()));
    };
    let store = events.object_store();
    let listed: Vec<_> = store
        .list(Some(&Path::from("_delta_log")))
        .try_collect()
        .await?;
    let present: BTreeSet<i64> = listed
        .iter()
        .filter_map(|m| m.location.filename())
        .filter_map(|f| f.strip_suffix(".json"))
        .filter_map(|v| v.parse().ok())
        .collect();
    let mut out = BTreeSet::new();
    for version in (since + 1)..=(latest as i64) {
        if !present.contains(&version) {
            return Ok(None);
        }
        let actions: Vec<LogLine> = lake::tables::commit_actions(events, version as u64).await?;
        for add in actions.into_iter().filter_map(|a| a.add) {
            if !add.data_change {
                continue;
            }
            let get = |k: &str| add.partition_values.get(k).cloned().flatten();
            if let Some(h) = parse_hour(get("date").as_deref(), get("hour").as_deref()) {
                out.insert(h);
            }
        }
    }
    Ok(Some(out))
}

/// The report days (Date32) that the hours overlap.
pub fn days_of(hours: &BTreeSet<Hour>, tz: ReportTz) -> BTreeSet<i32> {
    hours
        .iter()
        .flat_map(|(date, hour)| tz.days_of_utc_hour(*date, *hour))
        .collect()
}

/// How complete `events` is at its loaded version, epoch ms: the smallest event-time watermark
/// the streamed partitions recorded ([`lake::tables::watermark_app_id`]); with no streamed
/// partition (a lake filled from files, which are whole once committed), the newest event
/// time, from the files' statistics (or the end of the newest hour without them). `None` for
/// an empty table.
pub async fn watermark(events: &DeltaTable) -> Result<Option<i64>> {
    let txns = lake::txns::app_versions(events, "").await?;
    let mut marks: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for (id, version) in &txns {
        if let Some((source, partition)) = id
            .strip_prefix(lake::tables::WATERMARK_PREFIX)
            .and_then(|rest| rest.rsplit_once('/'))
            .and_then(|(s, p)| Some((s, p.parse::<i32>().ok()?)))
        {
            marks.insert((source, partition), *version);
        }
    }
    if let Some(min) = marks.values().min() {
        // A partition of a streamed source whose commits hold no watermark (written before
        // watermarks were recorded, or with no accepted event yet) leaves the table's
        // completeness unknown: its events may be anywhere behind the others'.
        let streamed: BTreeSet<&str> = marks.keys().map(|(s, _)| *s).collect();
        let unknown = txns
            .keys()
            .filter_map(|id| lake::tables::parse_app_id(id))
            .any(|(source, partition)| {
                streamed.contains(source) && !marks.contains_key(&(source, partition))
            });
        return Ok(if unknown { None } else { Some(*min) });
    }
    let mut newest: Option<i64> = None;
    for f in events.snapshot()?.log_data().iter() {
        let from_stats = f
            .stats()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|s| {
                let ts = s["maxValues"]["ts"].as_str()?.to_string();
                chrono::DateTime::parse_from_rfc3339(&ts).ok()
            })
            .map(|t| t.timestamp_millis());
        let from_hour = || {
            hour_of_path(&f.path()).and_then(|(d, h)| {
                Some(d.and_hms_opt(h as u32, 0, 0)?.and_utc().timestamp_millis() + 3_599_999)
            })
        };
        newest = newest.max(from_stats.or_else(from_hour));
    }
    Ok(newest)
}
