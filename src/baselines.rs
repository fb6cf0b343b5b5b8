//! `spacepulse accounts import-followers` and `spacepulse accounts baselines`: official
//! accounts' follower baselines from the platform's own records, read from CSV or Parquet.

use std::path::Path;

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{CastOptions, cast, cast_with_options};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType};
use deltalake::datafusion::prelude::{
    CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext,
};
use lake::registry::{BaselineRow, Imported};

use crate::UsageError;
use crate::cli::{LakeArg, RegistryArg};
use crate::metrics::registry;

/// The columns a file must have, by name, in any order.
const COLUMNS: [&str; 3] = ["account_id", "as_of", "followers"];

pub async fn import(lake: &LakeArg, reg: &RegistryArg, file: &Path, actor: &str) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("FILE {}", file.display()))?;
    let sha256 = lake::registry::sha256_hex(&bytes);
    let rows = read(file, &bytes).await?;
    let source = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string());
    let mut r = registry(lake, reg)?;
    match r.import_baselines(&sha256, &source, &rows, actor)? {
        Imported::New(i) => {
            let accounts: std::collections::BTreeSet<&str> =
                rows.iter().map(|r| r.0.as_str()).collect();
            outln!(
                "imported {} follower baselines of {} accounts from {} (sha256 {}); \
                 `spacepulse jobs run accounts` applies them",
                i.rows,
                accounts.len(),
                file.display(),
                &i.sha256[..12]
            );
        }
        Imported::Already(i) => {
            let at = chrono::DateTime::from_timestamp_millis(i.imported_at_ms).unwrap_or_default();
            outln!(
                "{} was imported before ({} as {}, at {at} by {}): nothing changed",
                file.display(),
                &i.sha256[..12],
                i.source,
                i.actor
            );
        }
    }
    Ok(())
}

pub fn list(lake: &LakeArg, reg: &RegistryArg, json: bool) -> Result<()> {
    let r = registry(lake, reg)?;
    let imports = r.baseline_imports()?;
    if json {
        let body = serde_json::json!({"imports": imports, "baselines": r.baselines()?});
        outln!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    outln!(
        "{:<25} {:<12} {:>6} {:<20} file",
        "imported at",
        "sha256",
        "rows",
        "by"
    );
    for i in imports {
        let at = chrono::DateTime::from_timestamp_millis(i.imported_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        outln!(
            "{at:<25} {:<12} {:>6} {:<20} {}",
            &i.sha256[..12],
            i.rows,
            i.actor,
            i.source
        );
    }
    Ok(())
}

/// The file's rows, in file order; any value that is not what its column needs fails naming
/// its row (numbered from 1, the header not counted) and column.
async fn read(file: &Path, bytes: &[u8]) -> Result<Vec<BaselineRow>> {
    let name = file.display().to_string();
    let given = file
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let ext = given.trim_start_matches('.').to_ascii_lowercase();
    // One partition: the rows come back in the file's order, so errors can number them.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let frame = match ext.as_str() {
        "csv" => {
            let header = csv_header(bytes).map_err(|e| UsageError(format!("{name}: {e}")))?;
            // Every column as text, by the names the header gives; the values are parsed
            // below, where a bad one can be named.
            let schema = Schema::new(
                header
                    .iter()
                    .map(|h| Field::new(h, DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            );
            ctx.read_csv(
                &name,
                CsvReadOptions::new()
                    .has_header(true)
                    .schema(&schema)
                    .file_extension(&given),
            )
            .await
        }
        "parquet" => {
            ctx.read_parquet(&name, ParquetReadOptions::default().file_extension(&given))
                .await
        }
        _ => {
            return Err(UsageError(format!(
                "FILE {name}: expected a .csv or .parquet file of account_id, as_of, followers"
            ))
            .into());
        }
    }
    .map_err(|e| UsageError(format!("{name}: {e}")))?;
    let batches = frame
        .collect()
        .await
        .map_err(|e| UsageError(format!("{name}: {e}")))?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows_of(batch, rows.len(), &mut rows).map_err(|e| UsageError(format!("{name}: {e}")))?;
    }
    Ok(rows)
}

/// A CSV file's column names, checked to include [`COLUMNS`] once each.
fn csv_header(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "the header is not UTF-8".to_string())?;
    let names: Vec<String> = line
        .trim_end_matches('\r')
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .collect();
    for want in COLUMNS {
        match names.iter().filter(|n| *n == want).count() {
            1 => {}
            0 => {
                return Err(format!(
                    "the header has no column {want} (expected account_id,as_of,followers; \
                     found {})",
                    names.join(",")
                ));
            }
            _ => return Err(format!("the header names column {want} twice")),
        }
    }
    Ok(names)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("no column {name} (expected account_id, as_of, followers)"))
}

/// Appends the batch's rows; `before` rows came before it.
fn rows_of(batch: &RecordBatch, before: usize, out: &mut Vec<BaselineRow>) -> Result<(), String> {
    let accounts = text(column(batch, "account_id")?, "account_id")?;
    let accounts = accounts.as_string::<i32>();
    let as_of = instants(column(batch, "as_of")?, before)?;
    let followers = counts(column(batch, "followers")?, before)?;
    for i in 0..batch.num_rows() {
        let row = before + i + 1;
        let account = accounts.is_valid(i).then(|| accounts.value(i).trim());
        let Some(account) = account.filter(|a| !a.is_empty()) else {
            return Err(format!("row {row}: account_id is empty"));
        };
        let (Some(at), Some(n)) = (as_of[i], followers[i]) else {
            let which = if as_of[i].is_none() {
                "as_of"
            } else {
                "followers"
            };
            return Err(format!("row {row}: {which} is empty"));
        };
        out.push((account.to_string(), at, n));
    }
    Ok(())
}

fn text(a: &ArrayRef, name: &str) -> Result<ArrayRef, String> {
    match a.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            cast(a, &DataType::Utf8).map_err(|e| format!("{name}: {e}"))
        }
        t => Err(format!("{name}: expected text, the file has {t}")),
    }
}

/// `as_of` as epoch ms: a timestamp (one without a zone is taken as UTC), epoch-ms integers,
/// or text holding an RFC 3339 instant with its offset or epoch ms.
fn instants(a: &ArrayRef, before: usize) -> Result<Vec<Option<i64>>, String> {
    match a.data_type() {
        DataType::Timestamp(_, _) => {
            let ms = cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .map_err(|e| format!("as_of: {e}"))?;
            Ok(ms
                .as_primitive::<TimestampMillisecondType>()
                .iter()
                .collect())
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            let ms = cast(a, &DataType::Int64).map_err(|e| format!("as_of: {e}"))?;
            Ok(ms.as_primitive::<Int64Type>().iter().collect())
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = text(a, "as_of")?;
            s.as_string::<i32>()
                .iter()
                .enumerate()
                .map(|(i, v)| match v.map(str::trim).filter(|v| !v.is_empty()) {
                    None => Ok(None),
                    Some(v) => parse_instant(v)
                        .map(Some)
                        .map_err(|e| format!("row {}: as_of: {e}", before + i + 1)),
                })
                .collect()
        }
        t => Err(format!(
            "as_of: expected a timestamp, epoch milliseconds or RFC 3339 text, the file has {t}"
        )),
    }
}

/// An RFC 3339 instant with its offset, or epoch milliseconds.
fn parse_instant(v: &str) -> Result<i64, String> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|d| d.timestamp_millis())
        .map_err(|_| {
            format!(
                "expected an RFC 3339 instant with its offset (2015-04-01T00:00:00+08:00) or \
                 epoch milliseconds, got {v:?}"
            )
        })
}

/// `followers` as whole numbers.
fn counts(a: &ArrayRef, before: usize) -> Result<Vec<Option<i64>>, String> {
    match a.data_type() {
        t if t.is_integer() => {
            let strict = CastOptions {
                safe: false,
                ..Default::default()
            };
            let n = cast_with_options(a, &DataType::Int64, &strict)
                .map_err(|e| format!("followers: {e}"))?;
            Ok(n.as_primitive::<Int64Type>().iter().collect())
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = text(a, "followers")?;
            s.as_string::<i32>()
                .iter()
                .enumerate()
                .map(|(i, v)| match v.map(str::trim).filter(|v| !v.is_empty()) {
                    None => Ok(None),
                    Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                        format!(
                            "row {}: followers: expected a whole number, got {v:?}",
                            before + i + 1
                        )
                    }),
                })
                .collect()
        }
        t => Err(format!(
            "followers: expected whole numbers, the file has {t}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn instants_are_rfc3339_with_an_offset_or_epoch_ms() {
        assert_eq!(
            parse_instant("2015-04-01T08:00:00+08:00"),
            Ok(1_427_846_400_000)
        );
        assert_eq!(parse_instant("1427846400000"), Ok(1_427_846_400_000));
        let e = parse_instant("2015-04-01 08:00:00").unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn a_csv_header_needs_each_column_once() {
        assert_eq!(
            csv_header(b"\xEF\xBB\xBFfollowers,\"account_id\",as_of\r\nx").unwrap(),
            vec!["followers", "account_id", "as_of"]
        );
        let e = csv_header(b"account,as_of,followers\n").unwrap_err();
        assert!(e.contains("no column account_id"), "{e}");
        let e = csv_header(b"account_id,as_of,followers,as_of\n").unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn rows_name_the_bad_value() {
        let batch = |followers: &str| {
            RecordBatch::try_from_iter(vec![
                (
                    "account_id",
                    Arc::new(arrow::array::StringArray::from(vec!["xiaomi", "xiaomi"])) as ArrayRef,
                ),
                (
                    "as_of",
                    Arc::new(arrow::array::StringArray::from(vec![
                        "2015-04-01T00:00:00Z",
                        "1427846400000",
                    ])),
                ),
                (
                    "followers",
                    Arc::new(arrow::array::StringArray::from(vec!["10", followers])),
                ),
            ])
            .unwrap()
        };
        let mut out = Vec::new();
        rows_of(&batch("12"), 0, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                ("xiaomi".to_string(), 1_427_846_400_000, 10),
                ("xiaomi".to_string(), 1_427_846_400_000, 12)
            ]
        );
        let e = rows_of(&batch("many"), 40, &mut Vec::new()).unwrap_err();
        assert_eq!(
            e,
            "row 42: followers: expected a whole number, got \"many\""
        );
    }
}
