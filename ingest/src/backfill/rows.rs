//! Parquet rows as JSON objects: each row becomes the record the decoder validates, exactly as
//! an NDJSON line would be, so a bad row lands in `rejected` with these bytes and its reason.
//!
//! The form is canonical, so the same rows give the same bytes (hence the same source) whatever
//! the file's compression, encoding, row groups or column order:
//! - the contract's fields in its order, then any other columns by name; a null is left out;
//! - the lake's own columns (`source`, `source_partition`, `source_offset`, `ingested_at`,
//!   `date`, `hour`: the generator writes the events schema) are not event fields and are
//!   dropped;
//! - timestamps are integer epoch milliseconds (one without a time zone is read as UTC);
//! - `user_id` in a signed 64-bit column is the lake's unsigned id bit for bit;
//! - `props` as text holding a JSON object is that object; structs and maps are objects,
//!   lists arrays; dictionaries are their values;
//! - any other type is the text Arrow displays for it, as a JSON string.

use std::fmt::Write as _;
use std::fs::File;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatchReader;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use lake::event::col;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::value::RawValue;

/// The contract's fields, in the order a record lists them.
const CONTRACT: &[&str] = &[
    col::EVENT_ID,
    col::TS,
    col::USER_ID,
    col::TYPE,
    col::PLATFORM,
    col::ACCOUNT_ID,
    col::CAMPAIGN_ID,
    col::ADVERTISER_ID,
    col::AD_ID,
    col::PHOTOS,
    col::AMOUNT_CENTS,
    col::REGION,
    col::PROPS,
];

/// Columns the lake adds to an event: where it came from, when it was ingested, its partition.
const LAKE_COLUMNS: &[&str] = &[
    col::SOURCE,
    col::SOURCE_PARTITION,
    col::SOURCE_OFFSET,
    col::INGESTED_AT,
    col::DATE,
    col::HOUR,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    /// `user_id`: a signed 64-bit value is the unsigned id bit for bit.
    UserId,
    /// `props`: text holding a JSON object is that object.
    Props,
}

/// A column of the file that becomes a field of each record.
struct Column {
    /// Its index in the projected batches.
    index: usize,
    name: String,
    role: Role,
}

/// The fields a record lists, in record order.
fn plan(schema: &Schema) -> Vec<Column> {
    let mut columns: Vec<Column> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !LAKE_COLUMNS.contains(&f.name().as_str()))
        .map(|(index, f)| Column {
            index,
            name: f.name().clone(),
            role: match f.name().as_str() {
                col::USER_ID => Role::UserId,
                col::PROPS => Role::Props,
                _ => Role::Plain,
            },
        })
        .collect();
    let rank = |name: &str| {
        CONTRACT
            .iter()
            .position(|c| *c == name)
            .unwrap_or(CONTRACT.len())
    };
    // Stable: columns of the same name keep the file's order.
    columns.sort_by(|a, b| {
        rank(&a.name)
            .cmp(&rank(&b.name))
            .then_with(|| a.name.cmp(&b.name))
    });
    columns
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// The rows of one Parquet file, each as its canonical JSON record.
pub struct Rows {
    batches: ParquetRecordBatchReader,
    columns: Vec<Column>,
    /// The current batch's columns in [`Rows::columns`] order, dictionaries decoded.
    arrays: Vec<ArrayRef>,
    len: usize,
    next: usize,
    record: String,
}

impl Rows {
    /// Opens a Parquet file; an unreadable or corrupt one is an `InvalidData` error.
    pub fn open(file: File) -> std::io::Result<Self> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(invalid)?;
        let kept: Vec<usize> = builder
            .parquet_schema()
            .root_schema()
            .get_fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !LAKE_COLUMNS.contains(&f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), kept);
        let batches = builder
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(invalid)?;
        let columns = plan(&batches.schema());
        Ok(Self {
            batches,
            columns,
            arrays: Vec::new(),
            len: 0,
            next: 0,
            record: String::new(),
        })
    }

    /// The next row's record, or `None` after the last row.
    pub fn next_record(&mut self) -> std::io::Result<Option<&[u8]>> {
        while self.next >= self.len {
            let Some(batch) = self.batches.next() else {
                return Ok(None);
            };
            let batch = batch.map_err(invalid)?;
            self.arrays = self
                .columns
                .iter()
                .map(|c| decoded(batch.column(c.index)))
                .collect();
            self.len = batch.num_rows();
            self.next = 0;
        }
        self.record.clear();
        write_record(&mut self.record, &self.columns, &self.arrays, self.next);
        self.next += 1;
        Ok(Some(self.record.as_bytes()))
    }
}

/// A dictionary-encoded column as its values (what pandas writes for categoricals).
fn decoded(array: &ArrayRef) -> ArrayRef {
    match array.data_type() {
        DataType::Dictionary(_, values) => {
            cast(array.as_ref(), values.as_ref()).unwrap_or_else(|_| array.clone())
        }
        _ => array.clone(),
    }
}

fn write_record(out: &mut String, columns: &[Column], arrays: &[ArrayRef], row: usize) {
    out.push('{');
    let mut first = true;
    for (column, array) in columns.iter().zip(arrays) {
        if is_absent(array.as_ref(), row) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_str(out, &column.name);
        out.push(':');
        write_value(out, array.as_ref(), row, column.role);
    }
    out.push('}');
}

fn is_absent(array: &dyn Array, row: usize) -> bool {
    matches!(array.data_type(), DataType::Null) || array.is_null(row)
}

fn write_value(out: &mut String, array: &dyn Array, row: usize, role: Role) {
    if is_absent(array, row) {
        out.push_str("null");
        return;
    }
    match array.data_type() {
        DataType::Boolean => {
            out.push_str(if array.as_boolean().value(row) {
                "true"
            } else {
                "false"
            });
        }
        DataType::Int8 => number(out, array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => number(out, array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => number(out, array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => {
            let v = array.as_primitive::<Int64Type>().value(row);
            if role == Role::UserId {
                // The events table's convention (docs/events.md): ids ≥ 2^63 read as negative.
                number(out, v as u64);
            } else {
                number(out, v);
            }
        }
        DataType::UInt8 => number(out, array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => number(out, array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => number(out, array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => number(out, array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float16 => float(out, array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => {
            let v = array.as_primitive::<Float32Type>().value(row);
            if v.is_finite() {
                number(out, v);
            } else {
                write_str(out, &v.to_string());
            }
        }
        DataType::Float64 => float(out, array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => formatted(out, array, row, false),
        DataType::Timestamp(unit, _) => {
            let ms = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(row)
                    .div_euclid(1000),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1_000_000),
            };
            number(out, ms);
        }
        DataType::Utf8 => text(out, array.as_string::<i32>().value(row), role),
        DataType::LargeUtf8 => text(out, array.as_string::<i64>().value(row), role),
        DataType::Utf8View => text(out, array.as_string_view().value(row), role),
        DataType::Binary => binary(out, array.as_binary::<i32>().value(row), array, row, role),
        DataType::LargeBinary => binary(out, array.as_binary::<i64>().value(row), array, row, role),
        DataType::BinaryView => binary(out, array.as_binary_view().value(row), array, row, role),
        DataType::FixedSizeBinary(_) => binary(
            out,
            array.as_fixed_size_binary().value(row),
            array,
            row,
            role,
        ),
        DataType::Struct(_) => {
            let s = array.as_struct();
            out.push('{');
            let mut first = true;
            for (field, child) in s.fields().iter().zip(s.columns()) {
                if is_absent(child.as_ref(), row) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                write_str(out, field.name());
                out.push(':');
                write_value(out, child.as_ref(), row, Role::Plain);
            }
            out.push('}');
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            out.push('{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(',');
                }
                match keys.data_type() {
                    DataType::Utf8 => write_str(out, keys.as_string::<i32>().value(i)),
                    DataType::LargeUtf8 => write_str(out, keys.as_string::<i64>().value(i)),
                    DataType::Utf8View => write_str(out, keys.as_string_view().value(i)),
                    _ => formatted(out, keys.as_ref(), i, true),
                }
                out.push(':');
                write_value(out, values.as_ref(), i, Role::Plain);
            }
            out.push('}');
        }
        DataType::List(_) => list(out, array.as_list::<i32>().value(row).as_ref()),
        DataType::LargeList(_) => list(out, array.as_list::<i64>().value(row).as_ref()),
        DataType::FixedSizeList(..) => list(out, array.as_fixed_size_list().value(row).as_ref()),
        DataType::Dictionary(_, values) => match cast(&array.slice(row, 1), values.as_ref()) {
            Ok(plain) => write_value(out, plain.as_ref(), 0, role),
            Err(_) => formatted(out, array, row, true),
        },
        _ => formatted(out, array, row, true),
    }
}

fn number(out: &mut String, v: impl std::fmt::Display) {
    let _ = write!(out, "{v}");
}

/// A finite float as a JSON number (`1` for 1.0, so a count that pandas stored as a double
/// still reads as an integer); NaN and infinities as strings, which no numeric field accepts.
fn float(out: &mut String, v: f64) {
    if v.is_finite() {
        number(out, v);
    } else {
        write_str(out, &v.to_string());
    }
}

fn text(out: &mut String, s: &str, role: Role) {
    if role == Role::Props
        && let Ok(raw) = serde_json::from_str::<&RawValue>(s)
        && raw.get().starts_with('{')
    {
        out.push_str(raw.get());
        return;
    }
    write_str(out, s);
}

fn binary(out: &mut String, bytes: &[u8], array: &dyn Array, row: usize, role: Role) {
    match std::str::from_utf8(bytes) {
        Ok(s) => text(out, s, role),
        Err(_) => formatted(out, array, row, true),
    }
}

fn list(out: &mut String, items: &dyn Array) {
    out.push('[');
    for i in 0..items.len() {
        if i > 0 {
            out.push(',');
        }
        write_value(out, items, i, Role::Plain);
    }
    out.push(']');
}

/// The text Arrow displays for a value: a JSON string, or (`quoted` false, for decimals) a
/// JSON number.
fn formatted(out: &mut String, array: &dyn Array, row: usize, quoted: bool) {
    let options = FormatOptions::default();
    let shown = ArrayFormatter::try_new(array, &options).and_then(|f| f.value(row).try_to_string());
    match shown {
        Ok(s) if quoted => write_str(out, &s),
        Ok(s) => out.push_str(&s),
        Err(e) => write_str(out, &format!("unsupported {}: {e}", array.data_type())),
    }
}

/// A JSON string literal.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Int64Array, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
        TimestampMillisecondArray, UInt64Array,
    };
    use arrow::datatypes::Field;
    use parquet::arrow::ArrowWriter;

    use super::*;

    fn records(batch: &RecordBatch) -> Vec<String> {
        let file = tempfile::tempfile().unwrap();
        let mut writer =
            ArrowWriter::try_new(file.try_clone().unwrap(), batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        let mut rows = Rows::open(file).unwrap();
        let mut out = Vec::new();
        while let Some(r) = rows.next_record().unwrap() {
            out.push(String::from_utf8(r.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn rows_become_canonical_records_the_decoder_accepts() {
        let nested = StructArray::from(vec![(
            Arc::new(Field::new("k", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
        )]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("zeta", DataType::Utf8, true),
            Field::new("source", DataType::Utf8, true),
            Field::new("platform", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("user_id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("event_id", DataType::Utf8, false),
            Field::new("props", DataType::Utf8, true),
            Field::new("extra", nested.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("z\"\n"), None])),
                Arc::new(StringArray::from(vec![Some("t"), Some("t")])),
                Arc::new(StringArray::from(vec!["ios", "symbian"])),
                Arc::new(StringArray::from(vec!["like", "like"])),
                Arc::new(Int64Array::from(vec![5, -1])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        1_430_150_400_000_999,
                        1_430_150_400_001_000,
                    ])
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(StringArray::from(vec![
                    Some(r#" {"x": [1, 2]} "#),
                    Some("[1]"),
                ])),
                Arc::new(nested),
            ],
        )
        .unwrap();
        let got = records(&batch);
        assert_eq!(
            got,
            vec![
                r#"{"event_id":"a","ts":1430150400000,"user_id":5,"type":"like","platform":"ios","props":{"x": [1, 2]},"extra":{"k":1},"zeta":"z\"\n"}"#,
                r#"{"event_id":"b","ts":1430150400001,"user_id":18446744073709551615,"type":"like","platform":"symbian","props":"[1]","extra":{}}"#,
            ]
        );
        let now = 1_430_150_400_000;
        let ev = lake::decode::parse(got[0].as_bytes(), now).unwrap();
        assert_eq!(
            (ev.ts_ms, ev.user_id, ev.props),
            (1_430_150_400_000, 5, Some(r#"{"x": [1, 2]}"#))
        );
        let why = lake::decode::parse(got[1].as_bytes(), now).unwrap_err();
        assert_eq!(why.field, Some("platform"));
    }

    #[test]
    fn column_order_and_encoding_do_not_change_the_records() {
        let a = RecordBatch::try_from_iter(vec![
            (
                "event_id",
                Arc::new(StringArray::from(vec!["e"])) as ArrayRef,
            ),
            ("user_id", Arc::new(UInt64Array::from(vec![7])) as ArrayRef),
            (
                "ts",
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_430_150_400_000]).with_timezone("UTC"),
                ) as ArrayRef,
            ),
        ])
        .unwrap();
        let b = RecordBatch::try_from_iter(vec![
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![1_430_150_400_000_000])) as ArrayRef,
            ),
            ("user_id", Arc::new(UInt64Array::from(vec![7])) as ArrayRef),
            (
                "event_id",
                Arc::new(StringArray::from(vec!["e"])) as ArrayRef,
            ),
        ])
        .unwrap();
        assert_eq!(records(&a), records(&b));
        assert_eq!(
            records(&a),
            vec![r#"{"event_id":"e","ts":1430150400000,"user_id":7}"#]
        );
    }
}
