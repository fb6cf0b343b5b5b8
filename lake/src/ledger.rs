//! The reconciliation ledger, read from the tables' Delta logs.
//!
//! Every ingest commit records in its `commitInfo` which offsets of which source partitions it
//! covers and how many rows each became ([`CommitRanges`]); the `txn` actions of the same
//! commit carry the last offset. Reading the log back gives, per topic-partition, the offset
//! ranges published, the commits, files and rows they became and the messages rejected.

use std::collections::BTreeMap;

use deltalake::DeltaTable;
use deltalake::Path;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::tables::{Lake, Table};

/// The key under which ingest commits store their [`CommitRanges`] in `commitInfo`.
pub const COMMIT_INFO_KEY: &str = "spacepulse";

/// The source offsets one commit covers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitRanges {
    pub ranges: Vec<SourceRange>,
}

/// Offsets `first..=last` of one source partition, which became `rows` rows of the table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceRange {
    pub source: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub rows: u64,
}

/// One commit as the ledger sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CommitEntry {
    pub table: &'static str,
    pub version: u64,
    pub timestamp_ms: Option<i64>,
    pub operation: String,
    pub files_added: u64,
    pub files_removed: u64,
    pub rows_added: u64,
    pub data_change: bool,
    pub ranges: Vec<SourceRange>,
}

/// What the lake holds of one source partition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionEntry {
    pub source: String,
    pub partition: i32,
    /// Contiguous offset ranges published (adjacent commits merged).
    pub ranges: Vec<(i64, i64)>,
    pub commits: u64,
    pub events: u64,
    pub rejected: u64,
    /// The last offset the events table covers (its `txn` version).
    pub events_covered: Option<i64>,
    pub rejected_covered: Option<i64>,
}

/// The whole ledger of a lake.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ledger {
    pub partitions: Vec<PartitionEntry>,
    pub commits: Vec<CommitEntry>,
    /// Live files and rows of the events table at its latest version.
    pub events_files: u64,
    pub events_rows: u64,
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(rename = "commitInfo")]
    commit_info: Option<serde_json::Value>,
    add: Option<LogAdd>,
    remove: Option<serde_json::Value>,
    txn: Option<LogTxn>,
}

#[derive(Deserialize)]
struct LogAdd {
    stats: Option<String>,
    #[serde(rename = "dataChange", default)]
    data_change: bool,
}

#[derive(Deserialize)]
struct LogTxn {
    #[serde(rename = "appId")]
    app_id: String,
    version: i64,
}

/// The row count in an `add` action's statistics.
pub fn rows_in_stats(stats: Option<&str>) -> u64 {
    stats
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.get("numRecords").and_then(|n| n.as_u64()))
        .unwrap_or(0)
}

async fn read_commits(
    table: &DeltaTable,
    which: Table,
) -> Result<(Vec<CommitEntry>, BTreeMap<String, i64>)> {
    let store = table.object_store();
    let latest = table.version();
    let mut commits = Vec::new();
    let mut txns = BTreeMap::new();
    let listed: Vec<_> = store
        .list(Some(&Path::from("_delta_log")))
        .try_collect()
        .await?;
    let mut versions: Vec<u64> = listed
        .iter()
        .filter_map(|m| m.location.filename())
        .filter_map(|f| f.strip_suffix(".json"))
        .filter_map(|v| v.parse().ok())
        .filter(|v| latest.is_some_and(|l| *v <= l))
        .collect();
    versions.sort_unstable();
    for version in versions {
        let actions: Vec<LogLine> = crate::tables::commit_actions(table, version).await?;
        let mut entry = CommitEntry {
            table: which.name(),
            version,
            timestamp_ms: None,
            operation: String::new(),
            files_added: 0,
            files_removed: 0,
            rows_added: 0,
            data_change: false,
            ranges: Vec::new(),
        };
        for action in actions {
            if let Some(info) = action.commit_info {
                entry.timestamp_ms = info.get("timestamp").and_then(|t| t.as_i64());
                entry.operation = info
                    .get("operation")
                    .and_then(|o| o.as_str())
                    .unwrap_or("")
                    .to_string();
                if let Some(r) = info.get(COMMIT_INFO_KEY) {
                    entry.ranges = serde_json::from_value::<CommitRanges>(r.clone())
                        .map(|c| c.ranges)
                        .unwrap_or_default();
                }
            }
            if let Some(add) = action.add {
                entry.files_added += 1;
                entry.rows_added += rows_in_stats(add.stats.as_deref());
                entry.data_change |= add.data_change;
            }
            if action.remove.is_some() {
                entry.files_removed += 1;
            }
            if let Some(txn) = action.txn {
                txns.insert(txn.app_id, txn.version);
            }
        }
        commits.push(entry);
    }
    Ok((commits, txns))
}

impl Ledger {
    /// Reads the ledger of the lake's `events` and `rejected` tables.
    pub async fn read(lake: &Lake) -> Result<Self> {
        let mut ledger = Ledger::default();
        let mut parts: BTreeMap<(String, i32), PartitionEntry> = BTreeMap::new();
        for which in [Table::Events, Table::Rejected] {
            let Some(table) = lake.open(which.name()).await? else {
                continue;
            };
            let (commits, txns) = read_commits(&table, which).await?;
            for (app, version) in txns {
                if let Some((source, partition)) = crate::tables::parse_app_id(&app) {
                    let p = parts.entry((source.to_string(), partition)).or_default();
                    match which {
                        Table::Events => p.events_covered = Some(version),
                        Table::Rejected => p.rejected_covered = Some(version),
                    }
                }
            }
            for c in &commits {
                for r in &c.ranges {
                    let p = parts.entry((r.source.clone(), r.partition)).or_default();
                    match which {
                        Table::Events => {
                            p.events += r.rows;
                            p.commits += 1;
                            match p.ranges.last_mut() {
                                Some(last) if last.1 + 1 == r.first => last.1 = r.last,
                                _ => p.ranges.push((r.first, r.last)),
                            }
                        }
                        Table::Rejected => p.rejected += r.rows,
                    }
                }
            }
            if which == Table::Events {
                let log_data = table.snapshot()?.log_data();
                ledger.events_files = log_data.num_files() as u64;
                ledger.events_rows = log_data
                    .iter()
                    .map(|f| f.num_records().unwrap_or(0) as u64)
                    .sum();
            }
            ledger.commits.extend(commits);
        }
        ledger.partitions = parts
            .into_iter()
            .map(|((source, partition), mut p)| {
                p.source = source;
                p.partition = partition;
                p
            })
            .collect();
        Ok(ledger)
    }
}
