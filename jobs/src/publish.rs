//! Publishing a metric table: one Delta commit that replaces the recomputed days (or the whole
//! table) and records, in `txn` actions of the same commit, the version of `events` (and of
//! the registry) the results were computed from. A job killed before the commit leaves the
//! previous version whole; readers never see a half state.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::{col, lit};
use deltalake::datafusion::scalar::ScalarValue;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use lake::tables::{Lake, covered};

use crate::Result;

/// What a commit replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every row (a full recompute, or a table that is not daily).
    All,
    /// The rows of these days (Date32); the table is partitioned by `day`.
    Days(BTreeSet<i32>),
}

/// The path of a metric table in the lake.
pub fn table_name(name: &str) -> String {
    format!("metrics/{name}")
}

/// The last version of `app` that metric table `name` has seen; `None` if the table does not
/// exist or never recorded `app`.
pub async fn seen(lake: &Lake, name: &str, app: &str) -> Result<Option<i64>> {
    match lake.open(&table_name(name)).await? {
        Some(t) => Ok(covered(&t, app).await?),
        None => Ok(None),
    }
}

/// Replaces `scope` of metric table `name` with `batches` in one commit carrying `txns`.
pub async fn publish(
    lake: &Lake,
    name: &str,
    schema: SchemaRef,
    mut batches: Vec<RecordBatch>,
    scope: &Scope,
    txns: &[(String, i64)],
) -> Result<()> {
    let daily = schema.field_with_name("day").is_ok();
    let path = table_name(name);
    let (table, exists) = match lake.open(&path).await? {
        Some(t) => (t, true),
        None => {
            let url = lake.table_url(&path)?;
            if let Ok(dir) = url.to_file_path() {
                std::fs::create_dir_all(&dir)?;
            }
            (deltalake::DeltaTableBuilder::from_url(url)?.build()?, false)
        }
    };
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema.clone()));
    }
    let mut props = CommitProperties::default();
    props = props.with_application_transactions(
        txns.iter()
            .map(|(app, v)| Transaction::new(app, *v))
            .collect::<Vec<_>>(),
    );
    // A small table's columns are written plain (a zstd context per column chunk costs more
    // than it saves on a few hundred rows); bitmaps and sketches, the bulk of the bytes, with
    // zstd and no dictionary (each row's is its own).
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut writer = WriterProperties::builder().set_compression(if rows < 100_000 {
        Compression::UNCOMPRESSED
    } else {
        Compression::ZSTD(ZstdLevel::default())
    });
    for f in schema.fields() {
        if matches!(f.data_type(), arrow::datatypes::DataType::Binary) {
            let column = deltalake::parquet::schema::types::ColumnPath::from(f.name().as_str());
            writer = writer
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_compression(column, Compression::ZSTD(ZstdLevel::default()));
        }
    }
    let writer = writer.build();
    let mut write = table
        .write(batches)
        .with_save_mode(SaveMode::Overwrite)
        .with_writer_properties(writer)
        .with_commit_properties(props)
        .with_table_name(name);
    if daily {
        write = write.with_partition_columns(["day"]);
    }
    if !exists {
        // Readers replay the log from the last checkpoint: keep that replay short, a range
        // query over stored sketches should not spend its time reading commits.
        write = write.with_configuration([(
            "delta.checkpointInterval".to_string(),
            Some("5".to_string()),
        )]);
    }
    if let (Scope::Days(days), true) = (scope, exists) {
        let list = days
            .iter()
            .map(|d| lit(ScalarValue::Date32(Some(*d))))
            .collect();
        write = write.with_replace_where(col("day").in_list(list, false));
    }
    write.await?;
    Ok(())
}

/// Shorthand for a schema from fields.
pub fn schema(fields: Vec<arrow::datatypes::Field>) -> SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(fields))
}
