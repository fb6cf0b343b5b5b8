//! One Parquet file of a fold: its footer parsed once, its low-cardinality columns read as
//! dictionaries, its dictionary-encoded columns' codes ([`crate::pages`]).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::file::metadata::{
    ParquetMetaDataOptions, ParquetMetaDataReader, ParquetStatisticsPolicy,
};

use crate::Result;
use crate::pages::{Coded, Parts};

/// Columns of few distinct values, read as dictionaries (their Parquet pages are dictionary
/// encoded): a fold looks at each distinct value once per batch, not at a string per row.
const DICTIONARY_COLUMNS: [&str; 2] = [lake::event::col::TYPE, lake::event::col::PLATFORM];

/// One Parquet file of a fold: its footer, parsed, and its bytes as far as read.
pub struct Source {
    parts: Parts,
    meta: ArrowReaderMetadata,
}

impl Source {
    pub(crate) fn open(parts: Parts) -> Result<Self> {
        thread_local! {
            /// The last file's top-level column names and the schema read for them: a lake's
            /// files share their schema, which is then derived once per thread, not per file.
            static SCHEMA: std::cell::RefCell<Option<(Vec<String>, SchemaRef)>> =
                const { std::cell::RefCell::new(None) };
        }
        // Only what reading needs: no column, encoding or size statistics (nothing is pruned).
        let options = ParquetMetaDataOptions::new()
            .with_column_stats_policy(ParquetStatisticsPolicy::SkipAll)
            .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
            .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll);
        let metadata = Arc::new(
            ParquetMetaDataReader::new()
                .with_metadata_options(Some(options))
                .parse_and_finish(&parts)?,
        );
        let names: Vec<String> = metadata
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let cached = SCHEMA.with_borrow(|c| {
            c.as_ref()
                .filter(|(n, _)| *n == names)
                .map(|(_, schema)| schema.clone())
        });
        let meta = match cached.and_then(|schema| {
            ArrowReaderMetadata::try_new(
                metadata.clone(),
                ArrowReaderOptions::new().with_schema(schema),
            )
            .ok()
        }) {
            Some(meta) => meta,
            None => {
                let plain =
                    ArrowReaderMetadata::try_new(metadata.clone(), ArrowReaderOptions::new())?;
                let schema = dictionary_schema(plain.schema());
                let meta = ArrowReaderMetadata::try_new(
                    metadata,
                    ArrowReaderOptions::new().with_schema(schema.clone()),
                )?;
                SCHEMA.with_borrow_mut(|c| *c = Some((names, schema)));
                meta
            }
        };
        Ok(Source { parts, meta })
    }

    /// A reader of the file's `columns`.
    pub fn batches(&mut self, columns: &[&str]) -> Result<ParquetRecordBatchReader> {
        self.reader(columns, None)
    }

    /// A reader of the file's `columns` on the rows where `column` (one of them) is not null:
    /// `column` is decoded first, the others only around those rows.
    pub fn batches_where_not_null(
        &mut self,
        columns: &[&str],
        column: &str,
    ) -> Result<ParquetRecordBatchReader> {
        self.reader(columns, Some(column))
    }

    fn reader(
        &mut self,
        columns: &[&str],
        not_null: Option<&str>,
    ) -> Result<ParquetRecordBatchReader> {
        self.parts.prefetch(self.meta.metadata(), columns)?;
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.parts.clone(),
            self.meta.clone(),
        );
        if let Some(column) = not_null {
            let predicate = ArrowPredicateFn::new(
                ProjectionMask::columns(builder.parquet_schema(), [column]),
                |batch: RecordBatch| arrow::compute::is_not_null(batch.column(0)),
            );
            builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
        }
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        Ok(builder
            .with_projection(mask)
            .with_batch_size(16 * 1024)
            .build()?)
    }

    /// Each of `columns` as its row groups' dictionaries and codes ([`pages::codes`]); `None`
    /// if one of them is not dictionary encoded throughout.
    pub fn codes(&mut self, columns: &[&str]) -> Result<Option<Vec<Vec<Coded>>>> {
        self.parts.prefetch(self.meta.metadata(), columns)?;
        let source = Arc::new(self.parts.clone());
        let mut out = Vec::with_capacity(columns.len());
        for column in columns {
            match crate::pages::codes(&source, self.meta.metadata(), column)? {
                Some(coded) => out.push(coded),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

/// `schema` with the [`DICTIONARY_COLUMNS`] read as dictionaries.
fn dictionary_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .map(|f| {
            if DICTIONARY_COLUMNS.contains(&f.name().as_str())
                && matches!(f.data_type(), DataType::Utf8)
            {
                Arc::new(f.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                )))
            } else {
                f.clone()
            }
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}
