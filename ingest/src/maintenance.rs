//! Compaction and vacuum of the lake's ingest tables.

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::operations::vacuum::VacuumMode;
use lake::tables::{Lake, Table};

use crate::Result;

/// What one compaction did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompactReport {
    pub table: &'static str,
    pub files_removed: u64,
    pub files_added: u64,
    pub partitions_optimized: u64,
}

/// Merges small files into files of about `target_bytes`, exactly once: one commit removes the
/// small files and adds the merged ones with `dataChange: false`, so readers see either all
/// of the old files or all of the new ones, and jobs see no change of content.
pub async fn compact(lake: &Lake, target_bytes: u64) -> Result<Vec<CompactReport>> {
    let mut reports = Vec::new();
    for which in [Table::Events, Table::Rejected] {
        let Some(table) = lake.open(which.name()).await? else {
            continue;
        };
        let target = NonZeroU64::new(target_bytes.max(1)).expect("at least 1");
        let (_, metrics) = table
            .optimize()
            .with_target_size(target)
            .with_max_concurrent_tasks(2)
            .await?;
        reports.push(CompactReport {
            table: which.name(),
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            partitions_optimized: metrics.partitions_optimized,
        });
    }
    Ok(reports)
}

/// What one vacuum did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VacuumReport {
    pub table: String,
    pub files_deleted: u64,
    pub dry_run: bool,
}

/// Deletes files no live commit references (compacted-away files and files a killed writer
/// wrote but never committed) once they are older than `retain`, which must outlast the
/// longest time a running writer holds a written file before committing it.
pub async fn vacuum(lake: &Lake, retain: Duration, dry_run: bool) -> Result<Vec<VacuumReport>> {
    let names = [Table::Events.name(), Table::Rejected.name()];
    vacuum_tables(lake, &names, retain, dry_run).await
}

/// [`vacuum`] of the tables `names` (paths in the lake) that exist.
pub async fn vacuum_tables(
    lake: &Lake,
    names: &[&str],
    retain: Duration,
    dry_run: bool,
) -> Result<Vec<VacuumReport>> {
    let mut reports = Vec::new();
    for &name in names {
        let Some(table) = lake.open(name).await? else {
            continue;
        };
        let retention = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
        let (_, metrics) = table
            .vacuum()
            .with_mode(VacuumMode::Full)
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_dry_run(dry_run)
            .await?;
        reports.push(VacuumReport {
            table: name.to_string(),
            files_deleted: metrics.files_deleted.len() as u64,
            dry_run,
        });
    }
    Ok(reports)
}
