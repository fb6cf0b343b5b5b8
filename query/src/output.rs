//! Query results as bytes: a table for people, CSV, JSON, JSON lines, Arrow IPC and
//! Parquet, encoded batch by batch so that a server can stream them.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text, for a terminal.
    Table,
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// The Arrow IPC stream format.
    Arrow,
    Parquet,
}

impl Format {
    pub const NAMES: &[&str] = &["table", "csv", "json", "ndjson", "arrow", "parquet"];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "table" => Format::Table,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "ndjson" | "jsonl" => Format::Ndjson,
            "arrow" => Format::Arrow,
            "parquet" => Format::Parquet,
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Whether the bytes are text a terminal can show.
    pub fn is_text(self) -> bool {
        !matches!(self, Format::Arrow | Format::Parquet)
    }
}

/// Encodes batches of one schema into a format, a chunk of bytes per batch.
pub struct Encoder {
    format: Format,
    schema: SchemaRef,
    state: State,
}

enum State {
    Text {
        first: bool,
        table: Vec<RecordBatch>,
    },
    Arrow(StreamWriter<Vec<u8>>),
    Parquet(ArrowWriter<Vec<u8>>),
}

impl Encoder {
    pub fn new(format: Format, schema: SchemaRef) -> Result<Self, ArrowError> {
        let state = match format {
            Format::Arrow => State::Arrow(StreamWriter::try_new(Vec::new(), &schema)?),
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                State::Parquet(
                    ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props))
                        .map_err(|e| ArrowError::ExternalError(Box::new(e)))?,
                )
            }
            _ => State::Text {
                first: true,
                table: Vec::new(),
            },
        };
        Ok(Self {
            format,
            schema,
            state,
        })
    }

    /// The bytes for one more batch (may be empty: a table and Parquet come at the end).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        let format = self.format;
        match &mut self.state {
            State::Arrow(w) => {
                w.write(batch)?;
                Ok(std::mem::take(w.get_mut()))
            }
            State::Parquet(w) => {
                w.write(batch)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                Ok(Vec::new())
            }
            State::Text { table, .. } if format == Format::Table => {
                table.push(batch.clone());
                Ok(Vec::new())
            }
            State::Text { first, .. } => {
                let mut out = Vec::new();
                match format {
                    Format::Csv => {
                        let mut w = arrow::csv::WriterBuilder::new()
                            .with_header(*first)
                            .build(&mut out);
                        w.write(batch)?;
                    }
                    Format::Json => {
                        out.push(if *first { b'[' } else { b',' });
                        let mut body = Vec::new();
                        let mut w = arrow::json::ArrayWriter::new(&mut body);
                        w.write(batch)?;
                        w.finish()?;
                        // Drop this batch's own brackets: the rows join the one array.
                        if body.len() >= 2 {
                            out.extend_from_slice(&body[1..body.len() - 1]);
                        }
                        if body.len() <= 2 {
                            // An empty batch: undo the separator.
                            out.pop();
                            if *first {
                                return Ok(Vec::new());
                            }
                        }
                    }
                    _ => {
                        let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
                        w.write(batch)?;
                        w.finish()?;
                    }
                }
                if !out.is_empty() {
                    *first = false;
                }
                Ok(out)
            }
        }
    }

    /// The closing bytes.
    pub fn finish(self) -> Result<Vec<u8>, ArrowError> {
        match self.state {
            State::Arrow(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            State::Parquet(w) => w
                .into_inner()
                .map_err(|e| ArrowError::ExternalError(Box::new(e))),
            State::Text { table, first } => Ok(match self.format {
                Format::Table => {
                    let mut text = if table.is_empty() {
                        // Still show the columns of an empty result.
                        arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(
                            self.schema,
                        )])?
                        .to_string()
                    } else {
                        arrow::util::pretty::pretty_format_batches(&table)?.to_string()
                    };
                    text.push('\n');
                    text.into_bytes()
                }
                Format::Json if first => b"[]\n".to_vec(),
                Format::Json => b"]\n".to_vec(),
                Format::Csv if first => {
                    // No rows: the header alone.
                    let names: Vec<&str> = self
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    format!("{}\n", names.join(",")).into_bytes()
                }
                _ => Vec::new(),
            }),
        }
    }
}

/// Whether a spreadsheet would evaluate text cell `v` as a formula (`=`, `+`, `-`, `@`, a tab
/// or a carriage return first); such cells are written with a leading `'`.
pub fn formula_like(v: &str) -> bool {
    v.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// `batch` with every text cell that a spreadsheet would take for a formula (starting with
/// `=`, `+`, `-`, `@`, a tab or a carriage return) prefixed with `'`, which spreadsheets show
/// as text (OWASP's advice on CSV injection); other columns as they are.
pub fn spreadsheet_safe(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    use arrow::array::{Array, AsArray, StringArray};
    use arrow::datatypes::DataType;
    let risky = formula_like;
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            if !matches!(
                c.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                return Ok(c.clone());
            }
            let text = arrow::compute::cast(c, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            if !text.iter().flatten().any(risky) {
                return Ok(c.clone());
            }
            let safe: StringArray = text
                .iter()
                .map(|v| {
                    v.map(|v| {
                        if risky(v) {
                            format!("'{v}")
                        } else {
                            v.to_string()
                        }
                    })
                })
                .collect();
            arrow::compute::cast(&safe, c.data_type())
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// Encodes all of `batches` at once.
pub fn encode(
    format: Format,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, ArrowError> {
    let mut encoder = Encoder::new(format, schema)?;
    let mut out = Vec::new();
    for b in batches {
        out.extend(encoder.batch(b)?);
    }
    out.extend(encoder.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn cells_a_spreadsheet_would_evaluate_become_text() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ad", DataType::Utf8, true),
            Field::new("clicks", DataType::Int64, false),
        ]));
        let ads = StringArray::from(vec![
            Some("=HYPERLINK(\"http://x\")"),
            Some("+1"),
            Some("-2"),
            Some("@SUM(A1)"),
            Some("\tx"),
            Some("plain"),
            None,
        ]);
        let clicks = Int64Array::from(vec![-5, 1, 2, 3, 4, 5, 6]);
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ads), Arc::new(clicks)]).unwrap();
        let safe = spreadsheet_safe(&batch).unwrap();
        let ads = safe.column(0).as_string::<i32>();
        let got: Vec<Option<&str>> = ads.iter().collect();
        assert_eq!(
            got,
            vec![
                Some("'=HYPERLINK(\"http://x\")"),
                Some("'+1"),
                Some("'-2"),
                Some("'@SUM(A1)"),
                Some("'\tx"),
                Some("plain"),
                None
            ]
        );
        // Numbers stay numbers, negative ones too.
        assert_eq!(safe.column(1).as_ref(), batch.column(1).as_ref());
        assert!(ads.is_null(6));
        let csv = String::from_utf8(encode(Format::Csv, schema, &[safe]).unwrap()).unwrap();
        assert!(
            csv.contains("'=HYPERLINK") && csv.contains("\n-5,") || csv.contains(",-5\n"),
            "{csv}"
        );
    }
}
