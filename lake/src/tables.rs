//! Where every table lives and how it is opened or created.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::event::{EVENTS_SCHEMA, REJECTED_SCHEMA, col};
use crate::{Error, Result};

/// The tables ingest writes. Metric tables live under `metrics/<name>` (the jobs issue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Events,
    Rejected,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Rejected => "rejected",
        }
    }

    pub fn schema(self) -> arrow::datatypes::SchemaRef {
        match self {
            Table::Events => EVENTS_SCHEMA.clone(),
            Table::Rejected => REJECTED_SCHEMA.clone(),
        }
    }

    pub fn partition_columns(self) -> &'static [&'static str] {
        match self {
            Table::Events => &[col::DATE, col::HOUR],
            Table::Rejected => &[col::DATE],
        }
    }
}

/// The application id of a source partition in the tables' `txn` actions; its version is the
/// last offset (or line) of that partition the table covers.
pub fn app_id(source: &str, partition: i32) -> String {
    format!("spacepulse/{source}/{partition}")
}

/// The application id under which the events table records a streamed source partition's
/// event-time watermark: its version is the newest event time (epoch ms) the partition has
/// brought into the table, capped at the ingest clock (an event stamped ahead of it does not
/// move the watermark past the moment it arrived).
pub fn watermark_app_id(source: &str, partition: i32) -> String {
    format!("{WATERMARK_PREFIX}{source}/{partition}")
}

/// The prefix of every [`watermark_app_id`].
pub const WATERMARK_PREFIX: &str = "watermark/";

/// Splits an [`app_id`] back into source and partition.
pub fn parse_app_id(app_id: &str) -> Option<(&str, i32)> {
    let rest = app_id.strip_prefix("spacepulse/")?;
    let (source, partition) = rest.rsplit_once('/')?;
    Some((source, partition.parse().ok()?))
}

/// The metric tables the jobs write, each at `metrics/<name>` (docs/metrics.md).
pub const METRIC_TABLES: &[&str] = &[
    "activity",
    "uploads_daily",
    "uploads_by_second",
    "uploads_by_minute",
    "uploads_by_hour",
    "campaign_peaks",
    "funnels",
    "funnel_times",
    "launch_milestones",
    "launch_curve",
    "campaigns_daily",
    "accounts_daily",
    "advertisers_daily",
    "user_codes",
];

/// The record of what job runs changed in figures already published as complete, at
/// `metrics/revisions`; appended to, never recomputed, so not among [`METRIC_TABLES`].
pub const REVISIONS_TABLE: &str = "revisions";

/// A lake: a local directory or an object-store URL holding Delta tables.
///
/// A lake keeps the snapshot of every table it opened, shared by its clones: opening the
/// table again reads only the commits made since ([`Lake::open`]). A long-running process
/// (`spacepulse run`, `serve`) opens its tables many times a second; replaying each log from
/// its last checkpoint every time was most of a launch report's delay.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    opened: Opened,
}

/// The snapshots a lake has loaded, by table name.
#[derive(Clone, Default)]
struct Opened(Arc<Mutex<HashMap<String, Loaded>>>);

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("tables", &self.lock().len())
            .finish()
    }
}

impl Opened {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Loaded>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A table's snapshot and the commit file it was loaded up to: the same file (size and time)
/// still there says the snapshot is an older state of the same table, not of one deleted and
/// created again, nor past a log cleanup.
#[derive(Clone)]
struct Loaded {
    table: DeltaTable,
    commit: CommitFile,
}

type CommitFile = (u64, chrono::DateTime<chrono::Utc>);

/// The size and time of the commit file of `version` of `table`, if it is there.
async fn commit_file(
    table: &DeltaTable,
    version: deltalake::kernel::Version,
) -> Option<CommitFile> {
    use object_store::ObjectStoreExt;
    let meta = table
        .object_store()
        .head(&deltalake::Path::from(format!(
            "_delta_log/{version:020}.json"
        )))
        .await
        .ok()?;
    Some((meta.size, meta.last_modified))
}

impl Lake {
    /// A lake at `location`: a path (created if missing) or a URL such as `s3://bucket/prefix`.
    pub fn new(location: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadLocation {
            location: location.to_string(),
            reason,
        };
        let root = if location.contains("://") {
            Url::parse(location).map_err(|e| bad(e.to_string()))?
        } else {
            let path = Path::new(location);
            std::fs::create_dir_all(path).map_err(|e| bad(e.to_string()))?;
            let abs = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
            Url::from_directory_path(&abs).map_err(|()| bad("not an absolute directory".into()))?
        };
        let mut root = root;
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        Ok(Self {
            root,
            opened: Opened::default(),
        })
    }

    pub fn url(&self) -> &Url {
        &self.root
    }

    /// The URL of a table by its relative name (`events`, `metrics/dau`, ...).
    pub fn table_url(&self, name: &str) -> Result<Url> {
        self.root
            .join(&format!("{name}/"))
            .map_err(|e| Error::BadLocation {
                location: self.root.to_string(),
                reason: e.to_string(),
            })
    }

    /// Opens a table at its latest version, or `None` if it was never created.
    ///
    /// A table this lake (or a clone of it) opened before is brought up to date from the
    /// snapshot it loaded then, reading only the newer commits; it is loaded afresh when that
    /// snapshot's commit file is gone or differs (the table was deleted and created again, or
    /// its log cleaned up) or the update fails. Either way the result is the latest version.
    pub async fn open(&self, name: &str) -> Result<Option<DeltaTable>> {
        let url = self.table_url(name)?;
        if let Ok(dir) = url.to_file_path()
            && !dir.join("_delta_log").is_dir()
        {
            self.opened.lock().remove(name);
            return Ok(None);
        }
        if let Some(table) = self.updated(name).await {
            return Ok(Some(table));
        }
        let table = DeltaTable::try_from_url(url).await?;
        if table.version().is_none() {
            return Ok(None);
        }
        self.keep(name, &table).await;
        Ok(Some(table))
    }

    /// The snapshot of `name` loaded before, updated to the latest version; `None` when there
    /// is none or it cannot be built on.
    async fn updated(&self, name: &str) -> Option<DeltaTable> {
        let Loaded { mut table, commit } = self.opened.lock().get(name).cloned()?;
        let version = table.version()?;
        if commit_file(&table, version).await != Some(commit) {
            self.opened.lock().remove(name);
            return None;
        }
        let updated = table.update_incremental(None).await;
        if let Err(e) = &updated {
            tracing::debug!(table = name, error = %e, "loading the table afresh");
        }
        // The commit file looked at again: a table deleted and created again while the
        // update read its log would have had its newer commits put on the old one's snapshot.
        if updated.is_err() || commit_file(&table, version).await != Some(commit) {
            self.opened.lock().remove(name);
            return None;
        }
        // Kept even at the same version: the update may have taken up a checkpoint written
        // since, which the next update then need not read again.
        self.keep(name, &table).await;
        Some(table)
    }

    /// Keeps `table`'s snapshot for the next [`Lake::open`] of `name`: only when the commit
    /// file of its version is the one its load listed (same time), so that a table created
    /// again since cannot pass for it. A snapshot at a checkpoint's version (no commit file
    /// listed) is not kept: the next open loads the table afresh.
    async fn keep(&self, name: &str, table: &DeltaTable) {
        let listed = table
            .version()
            .and_then(|v| Some((v, table.snapshot().ok()?.version_timestamp(v)?)));
        let commit = match listed {
            Some((v, ms)) => commit_file(table, v)
                .await
                .filter(|c| c.1.timestamp_millis() == ms),
            None => None,
        };
        let Some(commit) = commit else {
            self.opened.lock().remove(name);
            return;
        };
        let mut opened = self.opened.lock();
        // Two opens side by side: the newer snapshot stays.
        if opened
            .get(name)
            .is_none_or(|l| l.table.version() <= table.version())
        {
            opened.insert(
                name.to_string(),
                Loaded {
                    table: table.clone(),
                    commit,
                },
            );
        }
    }

    /// Opens one of the ingest's tables, creating it with its schema and partitioning if it
    /// does not exist yet. Safe when several processes race to create it.
    pub async fn open_or_create(&self, table: Table) -> Result<DeltaTable> {
        if let Some(t) = self.open(table.name()).await? {
            self.check_schema(table, &t)?;
            return Ok(t);
        }
        let schema: StructType = table.schema().as_ref().try_into_kernel()?;
        let url = self.table_url(table.name())?;
        if let Ok(dir) = url.to_file_path() {
            std::fs::create_dir_all(&dir)?;
        }
        // Not loaded: there is nothing to load yet.
        let handle = deltalake::DeltaTableBuilder::from_url(url)?.build()?;
        let created = handle
            .create()
            .with_table_name(table.name())
            .with_columns(schema.fields().cloned())
            .with_partition_columns(table.partition_columns().iter().copied())
            .with_configuration(HashMap::from([
                (
                    "delta.checkpointInterval".to_string(),
                    Some("50".to_string()),
                ),
                ("delta.appendOnly".to_string(), Some("false".to_string())),
            ]))
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(t) if t.version().is_some() => Ok(t),
            // Lost the race to another creator: the table exists now.
            Ok(_) | Err(DeltaTableError::VersionAlreadyExists(_)) => self
                .open(table.name())
                .await?
                .ok_or_else(|| Error::Incompatible {
                    table: table.name().into(),
                    reason: "creation failed".into(),
                }),
            Err(e) => Err(e.into()),
        }
    }

    fn check_schema(&self, table: Table, t: &DeltaTable) -> Result<()> {
        let snapshot = t.snapshot()?;
        let have: Vec<String> = snapshot
            .schema()
            .fields()
            .map(|f| f.name().to_string())
            .collect();
        let want: Vec<String> = table
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        if have != want {
            return Err(Error::Incompatible {
                table: table.name().into(),
                reason: format!("columns {have:?} differ from the contract's {want:?}"),
            });
        }
        Ok(())
    }
}

/// A new empty table at `url` of one non-null `n` BIGINT column (the lake's tests).
#[cfg(test)]
pub(crate) async fn one_column_table(url: Url) -> DeltaTable {
    use deltalake::kernel::{DataType, StructField};
    deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_columns([StructField::new("n", DataType::LONG, false)])
        .await
        .unwrap()
}

/// The last offset of `app_id` that the table's snapshot covers.
pub async fn covered(table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
    let snapshot = table.snapshot()?;
    Ok(snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await?)
}

/// The actions of commit `version` in `table`'s log, each JSON line parsed as `T`; a line that
/// does not parse as `T` is skipped (each reader picks out the few actions it needs).
pub async fn commit_actions<T: serde::de::DeserializeOwned>(
    table: &DeltaTable,
    version: u64,
) -> Result<Vec<T>> {
    use object_store::ObjectStoreExt;
    let bytes = table
        .object_store()
        .get(&deltalake::Path::from(format!(
            "_delta_log/{version:020}.json"
        )))
        .await?
        .bytes()
        .await?;
    Ok(bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use deltalake::writer::{DeltaWriter, RecordBatchWriter};

    use super::*;

    /// Table `name` of one `n` column, created empty by another handle than the lake's.
    async fn create(lake: &Lake, name: &str) -> DeltaTable {
        let url = lake.table_url(name).unwrap();
        std::fs::create_dir_all(url.to_file_path().unwrap()).unwrap();
        one_column_table(url).await
    }

    /// Commits one row `n` through `table` (not through the lake).
    async fn append(table: &mut DeltaTable, n: i64) {
        let batch = RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("n", arrow::datatypes::DataType::Int64, false),
            ])),
            vec![Arc::new(Int64Array::from(vec![n]))],
        )
        .unwrap();
        let mut w = RecordBatchWriter::for_table(table).unwrap();
        w.write(batch).await.unwrap();
        w.flush_and_commit(table).await.unwrap();
    }

    fn files(t: &DeltaTable) -> usize {
        t.snapshot().unwrap().log_data().iter().count()
    }

    #[tokio::test]
    async fn an_open_table_is_brought_up_to_the_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(&dir.path().to_string_lossy()).unwrap();
        let mut writer = create(&lake, "t").await;
        append(&mut writer, 1).await;
        let first = lake.open("t").await.unwrap().unwrap();
        assert_eq!((first.version(), files(&first)), (Some(1), 1));
        // Committed by another handle: a clone of the lake sees it, from the kept snapshot.
        append(&mut writer, 2).await;
        append(&mut writer, 3).await;
        let later = lake.clone().open("t").await.unwrap().unwrap();
        assert_eq!((later.version(), files(&later)), (Some(3), 3));
        // The handle returned before is not moved on behind its holder's back.
        assert_eq!(first.version(), Some(1));
        assert_eq!(lake.opened.lock()["t"].table.version(), Some(3));
    }

    #[tokio::test]
    async fn a_table_deleted_and_created_again_is_loaded_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(&dir.path().to_string_lossy()).unwrap();
        let mut writer = create(&lake, "t").await;
        for n in 0..3 {
            append(&mut writer, n).await;
        }
        assert_eq!(lake.open("t").await.unwrap().unwrap().version(), Some(3));
        let table_dir = lake.table_url("t").unwrap().to_file_path().unwrap();
        // Gone: none, and nothing kept.
        std::fs::remove_dir_all(&table_dir).unwrap();
        assert!(lake.open("t").await.unwrap().is_none());
        assert!(lake.opened.lock().get("t").is_none());
        // Kept, then replaced behind the lake's back by a younger table (version 1 < 3) and
        // by one as old (version 3, another commit file): each is read afresh, never the
        // kept snapshot brought "up to date".
        let mut writer = create(&lake, "t").await;
        for n in 0..3 {
            append(&mut writer, n).await;
        }
        assert_eq!(lake.open("t").await.unwrap().unwrap().version(), Some(3));
        std::fs::remove_dir_all(&table_dir).unwrap();
        let mut writer = create(&lake, "t").await;
        append(&mut writer, 10).await;
        let young = lake.open("t").await.unwrap().unwrap();
        assert_eq!((young.version(), files(&young)), (Some(1), 1));
        std::fs::remove_dir_all(&table_dir).unwrap();
        let mut writer = create(&lake, "t").await;
        for n in [100, 200] {
            append(&mut writer, n).await;
        }
        append(&mut writer, 1_000_000_007).await;
        let again = lake.open("t").await.unwrap().unwrap();
        assert_eq!((again.version(), files(&again)), (Some(3), 3));
        let paths = |t: &DeltaTable| {
            let mut p: Vec<String> = t
                .snapshot()
                .unwrap()
                .log_data()
                .iter()
                .map(|f| f.path().to_string())
                .collect();
            p.sort();
            p
        };
        assert_eq!(paths(&again), paths(&writer));
    }
}
