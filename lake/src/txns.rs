//! Every `txn` action of a table at once: Delta answers for one app id at a time
//! ([`crate::tables::covered`]), but backfill needs all the files the lake knows to recognise a
//! file that continues one of them, and the jobs every source partition's watermark.
//!
//! Read the way Delta replays its log: the latest checkpoint's `txn` rows, then the commits
//! after it (at most a checkpoint interval of small JSON files), the later version of an app
//! id winning. Commits older than the checkpoint may have been cleaned up, so they are not read.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use deltalake::{DeltaTable, ObjectMeta, Path};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::ChunkReader;
use serde::Deserialize;

use crate::Result;

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    txn: Option<Txn>,
}

#[derive(Deserialize)]
struct LastCheckpoint {
    version: u64,
}

#[derive(Deserialize)]
struct Txn {
    #[serde(rename = "appId")]
    app_id: String,
    version: i64,
}

/// The app ids starting with `prefix` that the table's loaded version carries in `txn`
/// actions, with their versions.
pub async fn app_versions(table: &DeltaTable, prefix: &str) -> Result<BTreeMap<String, i64>> {
    let mut versions = BTreeMap::new();
    let Some(latest) = table.version() else {
        return Ok(versions);
    };
    let store = table.object_store();
    // Only what follows the last checkpoint Delta recorded is listed (a month of commits may
    // precede it); a missing or unreadable `_last_checkpoint` lists the whole log.
    let log = Path::from("_delta_log");
    let last = match store.get(&Path::from("_delta_log/_last_checkpoint")).await {
        Ok(found) => serde_json::from_slice::<LastCheckpoint>(&found.bytes().await?).ok(),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let hinted = match last {
        // A checkpoint newer than the loaded version (written since the table was opened)
        // says nothing of that version: the whole log is listed then.
        Some(LastCheckpoint { version }) if version <= latest => {
            let from = Path::from(format!("_delta_log/{version:020}"));
            Some(
                store
                    .list_with_offset(Some(&log), &from)
                    .try_collect::<Vec<ObjectMeta>>()
                    .await?,
            )
        }
        _ => None,
    };
    let (mut commits, mut checkpoints) = match hinted.map(|l| log_files(&l, latest)) {
        Some(found) if !found.1.is_empty() => found,
        // No whole checkpoint where `_last_checkpoint` points (one of another kind, or parts
        // missing): the commits before it must not be skipped, so the whole log is read.
        _ => log_files(
            &store
                .list(Some(&log))
                .try_collect::<Vec<ObjectMeta>>()
                .await?,
            latest,
        ),
    };
    let checkpoint = checkpoints.pop_last();
    if let Some((_, parts)) = &checkpoint {
        for part in parts {
            let bytes = store.get(part).await?.bytes().await?;
            read_checkpoint(bytes, prefix, &mut versions)?;
        }
    }
    let after = checkpoint.map(|(v, _)| v);
    commits.retain(|v| after.is_none_or(|c| *v > c));
    commits.sort_unstable();
    for version in commits {
        let actions: Vec<LogLine> = crate::tables::commit_actions(table, version).await?;
        for txn in actions.into_iter().filter_map(|a| a.txn) {
            if txn.app_id.starts_with(prefix) {
                versions.insert(txn.app_id, txn.version);
            }
        }
    }
    Ok(versions)
}

/// The commit versions and the whole checkpoints (each version's parts) among `listed`, up
/// to version `latest`.
fn log_files(listed: &[ObjectMeta], latest: u64) -> (Vec<u64>, BTreeMap<u64, Vec<Path>>) {
    // Log files are `<version:020>.json` and `<version:020>.checkpoint[.<part>.<parts>].parquet`.
    let mut commits: Vec<u64> = Vec::new();
    let mut checkpoints: BTreeMap<u64, Vec<Path>> = BTreeMap::new();
    for meta in listed {
        let Some((version, kind)) = meta.location.filename().and_then(|f| f.split_once('.')) else {
            continue;
        };
        let Ok(version) = version.parse::<u64>() else {
            continue;
        };
        if version > latest {
            continue;
        }
        if kind == "json" {
            commits.push(version);
        } else if kind.starts_with("checkpoint") && kind.ends_with(".parquet") {
            checkpoints
                .entry(version)
                .or_default()
                .push(meta.location.clone());
        }
    }
    // The newest checkpoint with all its parts (a writer killed while writing a multi-part
    // checkpoint leaves some): `checkpoint.parquet`, or `checkpoint.<part>.<parts>.parquet`.
    checkpoints.retain(|_, parts| {
        let expected = parts[0]
            .filename()
            .and_then(|f| f.split('.').nth(3))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1);
        parts.len() == expected
    });
    (commits, checkpoints)
}

/// The `txn` rows of one checkpoint file (only its `txn` column is decoded).
fn read_checkpoint(
    bytes: impl ChunkReader + 'static,
    prefix: &str,
    versions: &mut BTreeMap<String, i64>,
) -> Result<()> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let Some(root) = builder
        .parquet_schema()
        .root_schema()
        .get_fields()
        .iter()
        .position(|f| f.name() == "txn")
    else {
        return Ok(());
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [root]);
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let Some(txn) = batch.column_by_name("txn").and_then(|c| c.as_struct_opt()) else {
            continue;
        };
        let (Some(app), Some(version)) =
            (txn.column_by_name("appId"), txn.column_by_name("version"))
        else {
            continue;
        };
        let app = cast(app.as_ref(), &DataType::Utf8)?;
        let version = cast(version.as_ref(), &DataType::Int64)?;
        let (Some(app), Some(version)) = (
            app.as_string_opt::<i32>(),
            version.as_primitive_opt::<Int64Type>(),
        ) else {
            continue;
        };
        for i in 0..txn.len() {
            if txn.is_valid(i) && app.is_valid(i) && version.is_valid(i) {
                let id = app.value(i);
                if id.starts_with(prefix) {
                    versions.insert(id.to_string(), version.value(i));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use deltalake::kernel::Transaction;
    use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
    use deltalake::protocol::{DeltaOperation, SaveMode};

    use super::*;

    /// Commits nothing but `txn` (`app`, `version`) onto `table`.
    async fn txn(table: &mut DeltaTable, app: &str, version: i64) {
        CommitBuilder::from(
            CommitProperties::default()
                .with_application_transactions(vec![Transaction::new(app, version)]),
        )
        .with_actions(Vec::new())
        .build(
            Some(table.snapshot().unwrap()),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await
        .unwrap();
        table.update_incremental(None).await.unwrap();
    }

    #[tokio::test]
    async fn a_checkpoint_hint_without_its_checkpoint_does_not_hide_older_commits() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let mut table = crate::tables::one_column_table(url).await;
        txn(&mut table, "spacepulse/t/0", 10).await;
        txn(&mut table, "spacepulse/t/1", 20).await;
        txn(&mut table, "spacepulse/t/0", 11).await;
        let want = BTreeMap::from([
            ("spacepulse/t/0".to_string(), 11),
            ("spacepulse/t/1".to_string(), 20),
        ]);
        assert_eq!(app_versions(&table, "spacepulse/").await.unwrap(), want);
        // `_last_checkpoint` names version 3, whose checkpoint is not there (a writer killed
        // while writing it, or one of a kind this reader does not know): the commits before
        // it still count.
        std::fs::write(
            dir.path().join("_delta_log/_last_checkpoint"),
            r#"{"version":3,"size":1}"#,
        )
        .unwrap();
        assert_eq!(app_versions(&table, "spacepulse/").await.unwrap(), want);
        assert_eq!(
            app_versions(&table, "spacepulse/t/1").await.unwrap(),
            BTreeMap::from([("spacepulse/t/1".to_string(), 20)])
        );
    }
}
