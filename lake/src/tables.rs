//! Where every table lives and how it is opened or created.

use std::collections::HashMap;
use std::path::Path;

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
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
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
        Ok(Self { root })
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
    pub async fn open(&self, name: &str) -> Result<Option<DeltaTable>> {
        let url = self.table_url(name)?;
        if let Ok(dir) = url.to_file_path()
            && !dir.join("_delta_log").is_dir()
        {
            return Ok(None);
        }
        let table = DeltaTable::try_from_url(url).await?;
        Ok(table.version().is_some().then_some(table))
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
