//! Publishing a metric table: one Delta commit that replaces the recomputed days (or the whole
//! table) and records, in `txn` actions of the same commit, the version of `events` (and of
//! the registry) the results were computed from. A job killed before the commit leaves the
//! previous version whole; readers never see a half state.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, MetadataExt, StructType, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use lake::tables::{Lake, covered};

use crate::Result;

/// What a commit replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every row (a full recompute, or a table that is not daily).
    All,
    /// The rows of these days (Date32); the table is partitioned by `day`.
    Days(BTreeSet<i32>),
    /// Nothing: the rows are added.
    Append,
}

/// The path of a metric table in the lake.
pub fn table_name(name: &str) -> String {
    format!("metrics/{name}")
}

/// Whether `table` has `schema`'s columns: a table written by an older spacepulse is rewritten
/// whole by a full recompute.
pub fn same_columns(table: &DeltaTable, schema: &SchemaRef) -> Result<bool> {
    let wanted: StructType = schema.as_ref().try_into_kernel()?;
    Ok(columns(table.snapshot()?.schema().as_ref()) == columns(&wanted))
}

/// A schema's column names and types.
fn columns(s: &StructType) -> Vec<(String, deltalake::kernel::DataType)> {
    s.fields()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect()
}

/// Replaces `scope` of metric table `name` with `batches` in one commit carrying `txns`.
/// A daily table's day partitions are written on every core (each writer takes whole days),
/// then one commit adds their files and removes those they replace.
pub async fn publish(
    lake: &Lake,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    scope: &Scope,
    txns: &[(String, i64)],
) -> Result<()> {
    publish_after(lake, name, schema, batches, scope, txns, None).await
}

/// [`publish`], only onto a table whose `txn` of application `expect.0` is `expect.1` (`None`:
/// the table has none, or does not exist): a writer that read the table at that point and
/// records the application's next version with its commit fails with a conflict, never
/// commits on top of another writer's rows it did not see.
pub async fn publish_after(
    lake: &Lake,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    scope: &Scope,
    txns: &[(String, i64)],
    expect: Option<(&str, Option<i64>)>,
) -> Result<()> {
    let daily = schema.field_with_name("day").is_ok();
    let partition_by: Vec<String> = if daily {
        vec!["day".into()]
    } else {
        Vec::new()
    };
    let path = table_name(name);
    let table = match lake.open(&path).await? {
        Some(t) => t,
        None => create(lake, name, &schema, &partition_by).await?,
    };
    if let Some((app, version)) = expect {
        let found = covered(&table, app).await?;
        if found != version {
            return Err(crate::Error::Conflict(format!(
                "{path}: another run wrote it meanwhile ({app} is at {found:?}, not {version:?}); \
                 run the job again"
            )));
        }
    }
    // A job whose columns changed since the table was written replaces it whole, with its
    // new schema in the same commit.
    let wanted: StructType = schema.as_ref().try_into_kernel()?;
    let evolved = columns(table.snapshot()?.schema().as_ref()) != columns(&wanted);
    if evolved && *scope != Scope::All {
        return Err(crate::Error::Internal(format!(
            "{path}: its columns changed; only a full recompute may rewrite it"
        )));
    }
    let writer = writer_properties(&schema, &batches);
    let mut tasks = tokio::task::JoinSet::new();
    for part in by_writer(&batches, daily)? {
        let w = if evolved {
            RecordBatchWriter::try_new(
                table.table_url().as_str(),
                schema.clone(),
                Some(partition_by.clone()),
                None,
            )?
        } else {
            RecordBatchWriter::for_table(&table)?
        };
        let mut w = w.with_writer_properties(writer.clone());
        tasks.spawn(async move {
            for batch in part {
                w.write(batch).await?;
            }
            w.flush().await
        });
    }
    let mut actions = Vec::new();
    while let Some(adds) = tasks.join_next().await {
        let adds = adds.map_err(|e| crate::Error::Internal(e.to_string()))??;
        actions.extend(adds.into_iter().map(Action::Add));
    }
    // The files replaced: every file, or those of the recomputed days.
    let replaced: Option<BTreeSet<String>> = match scope {
        Scope::All => None,
        // Delta writes a date partition value as YYYY-MM-DD.
        Scope::Days(days) => Some(days.iter().map(|d| query::tz::format_day(*d)).collect()),
        Scope::Append => Some(BTreeSet::new()),
    };
    let snapshot = table.snapshot()?;
    if evolved {
        actions.push(Action::Metadata(
            snapshot
                .metadata()
                .clone()
                .with_schema(&wanted)
                .map_err(deltalake::DeltaTableError::from)?,
        ));
    }
    for f in snapshot.log_data().iter() {
        let day = f.partition_values_map().get("day").cloned().flatten();
        let hit = match (&replaced, day) {
            (None, _) => true,
            (Some(days), Some(day)) => days.contains(&day),
            (Some(_), None) => false,
        };
        if hit {
            actions.push(Action::Remove(f.remove_action(true)));
        }
    }
    let predicate = replaced.filter(|d| !d.is_empty()).map(|days| {
        let list: Vec<String> = days.iter().map(|d| format!("'{d}'")).collect();
        format!("day IN ({})", list.join(", "))
    });
    let props = CommitProperties::default().with_application_transactions(
        txns.iter()
            .map(|(app, v)| Transaction::new(app, *v))
            .collect::<Vec<_>>(),
    );
    let operation = DeltaOperation::Write {
        mode: if *scope == Scope::Append {
            SaveMode::Append
        } else {
            SaveMode::Overwrite
        },
        partition_by: daily.then(|| partition_by.clone()),
        predicate,
    };
    CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    Ok(())
}

/// Creates metric table `name` (empty), or opens it if another process just did.
async fn create(
    lake: &Lake,
    name: &str,
    schema: &SchemaRef,
    partition_by: &[String],
) -> Result<DeltaTable> {
    let path = table_name(name);
    let url = lake.table_url(&path)?;
    if let Ok(dir) = url.to_file_path() {
        std::fs::create_dir_all(&dir)?;
    }
    let columns: StructType = schema.as_ref().try_into_kernel()?;
    let created = deltalake::DeltaTableBuilder::from_url(url)?
        .build()?
        .create()
        .with_table_name(name)
        .with_columns(columns.fields().cloned())
        .with_partition_columns(partition_by.iter().cloned())
        // Readers replay the log from the last checkpoint: keep that replay short, a range
        // query over stored sketches should not spend its time reading commits. Every run
        // replaces the files of the days it recomputes, and a checkpoint carries each replaced
        // file's tombstone for the retention: Delta's default week makes every open of a
        // table refreshed each minute read tens of thousands; an hour, as long as `lake
        // vacuum` keeps unreferenced files by default (a full vacuum needs no tombstones).
        .with_configuration([
            (
                "delta.checkpointInterval".to_string(),
                Some("5".to_string()),
            ),
            (
                "delta.deletedFileRetentionDuration".to_string(),
                Some("interval 1 hours".to_string()),
            ),
        ])
        .with_save_mode(SaveMode::Ignore)
        .await?;
    match created.version() {
        Some(_) => Ok(created),
        None => lake
            .open(&path)
            .await?
            .ok_or_else(|| crate::Error::Internal(format!("{path}: creation failed"))),
    }
}

/// How the columns are written. A small table's columns are plain (a zstd context per
/// column chunk costs more than it saves on a few hundred rows); bitmaps and sketches, the
/// bulk of the bytes, with zstd, no dictionary (each row's is its own) and no statistics (no
/// reader prunes on them; Delta keeps none for binary columns).
fn writer_properties(schema: &SchemaRef, batches: &[RecordBatch]) -> WriterProperties {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut writer = WriterProperties::builder().set_compression(if rows < 100_000 {
        Compression::UNCOMPRESSED
    } else {
        Compression::ZSTD(ZstdLevel::default())
    });
    for f in schema.fields() {
        if matches!(f.data_type(), arrow::datatypes::DataType::Binary) {
            let column = ColumnPath::from(f.name().as_str());
            writer = writer
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_statistics_enabled(column.clone(), EnabledStatistics::None)
                .set_column_compression(column, Compression::ZSTD(ZstdLevel::default()));
        }
    }
    writer.build()
}

/// The rows cut into one share per writer: a daily table's days dealt out so that each
/// writer gets whole days (one file each) and about as many rows; any other table's rows to
/// one writer.
fn by_writer(batches: &[RecordBatch], daily: bool) -> Result<Vec<Vec<RecordBatch>>> {
    let cores = crate::scan::cores();
    if !daily || cores == 1 {
        return Ok(vec![batches.to_vec()]);
    }
    // Each day's runs of rows (a job's rows come grouped by day: one run per day).
    let mut days: std::collections::BTreeMap<i32, (usize, Vec<RecordBatch>)> = Default::default();
    for batch in batches {
        let day = batch
            .column_by_name("day")
            .ok_or_else(|| crate::Error::Internal("no day column".into()))?;
        let values =
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Date32Type>(day.as_ref());
        for run in arrow::compute::partition(std::slice::from_ref(day))?.ranges() {
            let rows = batch.slice(run.start, run.len());
            let entry = days.entry(values.value(run.start)).or_default();
            entry.0 += rows.num_rows();
            entry.1.push(rows);
        }
    }
    let mut days: Vec<(usize, Vec<RecordBatch>)> = days.into_values().collect();
    days.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut shares: Vec<(usize, Vec<RecordBatch>)> = vec![(0, Vec::new()); cores];
    for (rows, runs) in days {
        let least = shares
            .iter_mut()
            .min_by_key(|s| s.0)
            .expect("one share per core");
        least.0 += rows;
        least.1.extend(runs);
    }
    Ok(shares
        .into_iter()
        .map(|s| s.1)
        .filter(|s| !s.is_empty())
        .collect())
}

/// Shorthand for a schema from fields.
pub fn schema(fields: Vec<arrow::datatypes::Field>) -> SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(fields))
}
