//! Reading Parquet files below the Arrow reader: a file's needed byte ranges fetched with one
//! read each ([`Parts`]), and a dictionary-encoded column chunk's dictionary and row codes
//! ([`codes`]), which a distinct count folds without materializing a value per row.
//!
//! This is the one place that decodes Parquet pages by hand (the RLE/bit-packed hybrid of
//! dictionary indices, PLAIN dictionary pages, v1 and v2 data pages). It was checked against
//! the `parquet` crate 59.3 (Cargo.lock), whose Arrow reader is the oracle of the tests below:
//! every code decoded here must give the value that reader gives, for files written with
//! either page version and with RLE and bit-packed runs. Only required, non-repeated columns
//! are decoded; a nullable one, or a chunk in an encoding this module does not know, comes
//! back as `None`, and the caller reads it through the Arrow reader instead. On a `parquet`
//! upgrade, run these tests first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::Page;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;

/// The bytes of a Parquet file that one read of it needs, fetched up front: its tail (the
/// footer) and the span of the column chunks it decodes, each with one positioned read (a
/// `File` as a [`ChunkReader`] duplicates its descriptor, seeks and reads through a buffer for
/// every column chunk and page). A range outside them is read from the file when asked for.
#[derive(Clone)]
pub struct Parts {
    file: Option<Arc<File>>,
    len: u64,
    parts: Vec<(u64, Bytes)>,
}

/// The bytes read from a file's end before its footer is parsed: the footer, and in a small
/// file the column chunks too.
const TAIL: u64 = 64 * 1024;

impl Parts {
    /// A local file of `len` bytes, its tail read.
    pub fn open(file: File, len: u64) -> std::io::Result<Self> {
        let mut parts = Parts {
            file: Some(Arc::new(file)),
            len,
            parts: Vec::new(),
        };
        let start = len.saturating_sub(TAIL);
        let tail = parts.read(start, (len - start) as usize)?;
        parts.parts.push((start, tail));
        Ok(parts)
    }

    /// A file already in memory.
    pub fn whole(bytes: Bytes) -> Self {
        Parts {
            file: None,
            len: bytes.len() as u64,
            parts: vec![(0, bytes)],
        }
    }

    /// Fetches the span of the column chunks of `columns` (top-level names), unless held.
    pub fn prefetch(&mut self, meta: &ParquetMetaData, columns: &[&str]) -> std::io::Result<()> {
        let ranges = meta.row_groups().iter().flat_map(|rg| {
            rg.columns()
                .iter()
                .filter(|c| {
                    c.column_path()
                        .parts()
                        .first()
                        .is_some_and(|name| columns.contains(&name.as_str()))
                })
                .map(|c| c.byte_range())
        });
        let (start, end) = ranges.fold((u64::MAX, 0), |(s, e), (start, len)| {
            (s.min(start), e.max(start + len))
        });
        if start >= end || self.held(start, (end - start) as usize).is_some() {
            return Ok(());
        }
        let end = end.min(self.len);
        let bytes = self.read(start, (end - start) as usize)?;
        self.parts.push((start, bytes));
        Ok(())
    }

    /// The bytes `start..start + len` if a part holds them.
    fn held(&self, start: u64, len: usize) -> Option<Bytes> {
        self.parts.iter().find_map(|(at, bytes)| {
            let from = usize::try_from(start.checked_sub(*at)?).ok()?;
            (from + len <= bytes.len()).then(|| bytes.slice(from..from + len))
        })
    }

    fn read(&self, start: u64, len: usize) -> std::io::Result<Bytes> {
        let Some(mut file) = self.file.as_deref() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {start}..{} are beyond the file's",
                    start + len as u64
                ),
            ));
        };
        let mut buf = vec![0; len];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }
}

impl Length for Parts {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Parts {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // A page header: from `start` to the end of the part holding it, or a window read.
        let held = self.parts.iter().find_map(|(at, bytes)| {
            let from = usize::try_from(start.checked_sub(*at)?).ok()?;
            (from < bytes.len()).then(|| bytes.slice(from..))
        });
        match held {
            Some(bytes) => Ok(bytes.reader()),
            None => {
                let len = self.len.saturating_sub(start).min(TAIL) as usize;
                Ok(self.read(start, len)?.reader())
            }
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self.held(start, length) {
            Some(bytes) => Ok(bytes),
            None => Ok(self.read(start, length)?),
        }
    }
}

/// A dictionary's values.
#[derive(Debug, PartialEq)]
pub enum Dictionary {
    Int64(Vec<i64>),
    Bytes(Vec<Bytes>),
}

impl Dictionary {
    pub fn len(&self) -> usize {
        match self {
            Dictionary::Int64(v) => v.len(),
            Dictionary::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A column chunk as its dictionary and each row's code (index into it).
#[derive(Debug)]
pub struct Coded {
    pub dictionary: Dictionary,
    pub codes: Vec<u32>,
}

fn corrupt(what: String) -> ParquetError {
    ParquetError::General(format!("corrupt dictionary-encoded column chunk: {what}"))
}

/// The column chunks of `column` (a required, non-repeated INT64 or BYTE_ARRAY column), one
/// per row group, as dictionaries and codes; `None` if a chunk is not dictionary encoded
/// throughout (a writer falls back to plain pages when a dictionary grows too large), for the
/// caller to read it the usual way.
pub fn codes<R: ChunkReader + 'static>(
    source: &Arc<R>,
    meta: &ParquetMetaData,
    column: &str,
) -> parquet::errors::Result<Option<Vec<Coded>>> {
    let mut out = Vec::with_capacity(meta.num_row_groups());
    for rg in meta.row_groups() {
        let Some(chunk) = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == column)
        else {
            return Ok(None);
        };
        match chunk_codes(source, chunk, rg.num_rows() as usize)? {
            Some(coded) => out.push(coded),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

fn chunk_codes<R: ChunkReader + 'static>(
    source: &Arc<R>,
    chunk: &ColumnChunkMetaData,
    rows: usize,
) -> parquet::errors::Result<Option<Coded>> {
    let descr = chunk.column_descr();
    let physical = chunk.column_type();
    if descr.max_def_level() != 0
        || descr.max_rep_level() != 0
        || !matches!(physical, PhysicalType::INT64 | PhysicalType::BYTE_ARRAY)
    {
        return Ok(None);
    }
    let pages = SerializedPageReader::new(source.clone(), chunk, rows, None)?;
    let mut dictionary = None;
    let mut codes: Vec<u32> = Vec::with_capacity(rows);
    for page in pages {
        let (buf, values, encoding) = match page? {
            Page::DictionaryPage {
                buf,
                num_values,
                encoding,
                ..
            } => {
                if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                    return Ok(None);
                }
                dictionary = Some(plain_values(physical, buf, num_values as usize)?);
                continue;
            }
            // A required, non-repeated column's pages carry no levels.
            Page::DataPage {
                buf,
                num_values,
                encoding,
                ..
            } => (buf, num_values, encoding),
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let levels = (def_levels_byte_len + rep_levels_byte_len) as usize;
                if levels > buf.len() {
                    return Err(corrupt(format!(
                        "levels of {levels} bytes in a shorter page"
                    )));
                }
                (buf.slice(levels..), num_values, encoding)
            }
        };
        if !matches!(
            encoding,
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY
        ) {
            return Ok(None);
        }
        decode_codes(&buf, values as usize, &mut codes)?;
    }
    let Some(dictionary) = dictionary else {
        return Ok(None);
    };
    if codes.len() != rows {
        return Err(corrupt(format!("{} codes for {rows} rows", codes.len())));
    }
    if let Some(bad) = codes.iter().find(|&&c| c as usize >= dictionary.len()) {
        return Err(corrupt(format!(
            "code {bad} in a dictionary of {}",
            dictionary.len()
        )));
    }
    Ok(Some(Coded { dictionary, codes }))
}

/// `n` PLAIN-encoded values of `physical` type.
fn plain_values(
    physical: PhysicalType,
    buf: Bytes,
    n: usize,
) -> parquet::errors::Result<Dictionary> {
    match physical {
        PhysicalType::INT64 => {
            if buf.len() < n * 8 {
                return Err(corrupt(format!("{n} values in {} bytes", buf.len())));
            }
            Ok(Dictionary::Int64(
                buf.chunks_exact(8)
                    .take(n)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ))
        }
        _ => {
            let mut out = Vec::with_capacity(n);
            let mut at = 0usize;
            for _ in 0..n {
                let len = buf
                    .get(at..at + 4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                    .ok_or_else(|| corrupt("a dictionary value past the page".into()))?;
                at += 4;
                if at + len > buf.len() {
                    return Err(corrupt("a dictionary value past the page".into()));
                }
                out.push(buf.slice(at..at + len));
                at += len;
            }
            Ok(Dictionary::Bytes(out))
        }
    }
}

/// An unsigned LEB128 varint at the start of `buf`, and its length.
fn uleb128(buf: &[u8]) -> parquet::errors::Result<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(corrupt("an unterminated run header".into()))
}

/// Appends `n` codes decoded from a dictionary data page's body: the bit width in one byte,
/// then the RLE / bit-packed hybrid runs.
fn decode_codes(buf: &[u8], n: usize, out: &mut Vec<u32>) -> parquet::errors::Result<()> {
    let Some((&width, mut rest)) = buf.split_first() else {
        return if n == 0 {
            Ok(())
        } else {
            Err(corrupt("an empty data page".into()))
        };
    };
    let width = width as usize;
    if width > 32 {
        return Err(corrupt(format!("a bit width of {width}")));
    }
    let target = out.len() + n;
    while out.len() < target {
        let (header, used) = uleb128(rest)?;
        rest = &rest[used..];
        let want = target - out.len();
        if header & 1 == 1 {
            // Bit-packed: groups of eight values in `width` bytes each.
            let bytes = ((header >> 1) as usize).saturating_mul(width);
            let run = &rest[..bytes.min(rest.len())];
            let available = (run.len() * 8)
                .checked_div(width)
                .unwrap_or((header >> 1) as usize * 8);
            let count = want.min(available);
            if count == 0 {
                return Err(corrupt("an empty bit-packed run".into()));
            }
            let at = out.len();
            out.resize(at + count, 0);
            unpack(run, width, &mut out[at..]);
            rest = &rest[run.len()..];
        } else {
            // A run of one value in ceil(width / 8) bytes.
            let count = (header >> 1) as usize;
            let size = width.div_ceil(8);
            let value = rest
                .get(..size)
                .ok_or_else(|| corrupt("a run's value past the page".into()))?
                .iter()
                .rev()
                .fold(0u32, |v, &b| (v << 8) | u32::from(b));
            if count == 0 {
                return Err(corrupt("an empty run".into()));
            }
            out.extend(std::iter::repeat_n(value, count.min(want)));
            rest = &rest[size..];
        }
    }
    Ok(())
}

/// Fills `out` with values of `width` bits packed least significant bit first.
fn unpack(run: &[u8], width: usize, out: &mut [u32]) {
    if width == 0 {
        out.fill(0);
        return;
    }
    let mask = (1u64 << width) - 1;
    // The values whose eight bytes from their first lie in the run: one load each.
    let fast = match run.len().checked_sub(8) {
        Some(last) => (last * 8 / width + 1).min(out.len()),
        None => 0,
    };
    for (k, v) in out[..fast].iter_mut().enumerate() {
        let bit = k * width;
        let word = u64::from_le_bytes(run[bit / 8..bit / 8 + 8].try_into().expect("8 bytes"));
        *v = ((word >> (bit % 8)) & mask) as u32;
    }
    for (k, v) in out.iter_mut().enumerate().skip(fast) {
        let bit = k * width;
        let word = run
            .iter()
            .skip(bit / 8)
            .take(8)
            .rev()
            .fold(0u64, |w, &b| (w << 8) | u64::from(b));
        *v = ((word >> (bit % 8)) & mask) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::metadata::ParquetMetaDataReader;
    use parquet::file::properties::{WriterProperties, WriterVersion};

    fn file(rows: usize, distinct: u64, props: WriterProperties) -> Bytes {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("platform", DataType::Utf8, false),
            Field::new("photos", DataType::Int64, true),
        ]));
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut ids = Vec::with_capacity(rows);
        for i in 0..rows {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Runs of one id (RLE runs) among spread ids (bit-packed runs).
            let id = if i % 97 < 20 {
                42 % distinct
            } else {
                x % distinct
            };
            ids.push(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) as i64);
        }
        let platforms: Vec<&str> = (0..rows)
            .map(|i| ["android", "ios", "pc", "web"][(i / 3) % 4])
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(platforms)),
                Arc::new(Int64Array::from_iter(
                    (0..rows as i64).map(|i| (i % 5 != 0).then_some(i)),
                )),
            ],
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        Bytes::from(buf)
    }

    /// The codes of `column` looked up in their dictionaries, row by row.
    fn decoded(bytes: &Bytes, column: &str) -> Option<Vec<String>> {
        let parts = Arc::new(Parts::whole(bytes.clone()));
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(bytes)
            .unwrap();
        let coded = codes(&parts, &meta, column).unwrap()?;
        Some(
            coded
                .iter()
                .flat_map(|c| {
                    c.codes.iter().map(|&k| match &c.dictionary {
                        Dictionary::Int64(v) => v[k as usize].to_string(),
                        Dictionary::Bytes(v) => String::from_utf8(v[k as usize].to_vec()).unwrap(),
                    })
                })
                .collect(),
        )
    }

    fn arrow(bytes: &Bytes, column: &str) -> Vec<String> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .unwrap()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let a = batch.column_by_name(column).unwrap();
            match a.data_type() {
                DataType::Int64 => out.extend(
                    a.as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .map(|v| v.to_string()),
                ),
                _ => out.extend(a.as_string::<i32>().iter().map(|v| v.unwrap().to_string())),
            }
        }
        out
    }

    #[test]
    fn dictionary_codes_read_back_every_row() {
        // Bit widths from 0 (one value) to 17 (past the 16-bit fast path), several pages and
        // row groups, data pages of both versions.
        for (rows, distinct) in [
            (1000, 1),
            (5000, 3),
            (20_000, 700),
            (140_000, 1 << 40),
            (7, 5),
        ] {
            for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
                let props = WriterProperties::builder()
                    .set_writer_version(version)
                    .set_data_page_row_count_limit(3000)
                    .set_max_row_group_row_count(Some(100_000))
                    .set_dictionary_page_size_limit(1 << 30)
                    .build();
                let bytes = file(rows, distinct, props);
                for column in ["user_id", "platform"] {
                    assert_eq!(
                        decoded(&bytes, column).as_ref(),
                        Some(&arrow(&bytes, column)),
                        "{column}, {rows} rows of {distinct} ids, {version:?}"
                    );
                }
                if distinct > 1 << 20 {
                    // The widest codes: more than 2^16 values in a dictionary.
                    let parts = Arc::new(Parts::whole(bytes.clone()));
                    let meta = ParquetMetaDataReader::new()
                        .parse_and_finish(&bytes)
                        .unwrap();
                    let coded = codes(&parts, &meta, "user_id").unwrap().unwrap();
                    assert!(coded.iter().any(|c| c.dictionary.len() > 1 << 16));
                }
                // A nullable column is not read this way.
                assert_eq!(decoded(&bytes, "photos"), None);
            }
        }
        // Plain pages (no dictionary, or a dictionary that overflowed): not codes.
        let plain = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .build();
        assert_eq!(decoded(&file(5000, 700, plain), "user_id"), None);
        let overflowing = WriterProperties::builder()
            .set_dictionary_page_size_limit(1024)
            .set_data_page_row_count_limit(500)
            .build();
        assert_eq!(
            decoded(&file(20_000, 100_000, overflowing), "user_id"),
            None
        );
    }

    #[test]
    fn parts_read_what_they_do_not_hold() {
        let bytes = file(20_000, 700, WriterProperties::builder().build());
        let path = std::env::temp_dir().join(format!("spacepulse-parts-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let mut parts = Parts::open(File::open(&path).unwrap(), bytes.len() as u64).unwrap();
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&parts)
            .unwrap();
        parts.prefetch(&meta, &["platform"]).unwrap();
        let parts = Arc::new(parts);
        // Held, partly held and not held ranges all read the file's bytes.
        for (start, len) in [(0u64, 10usize), (4, 30_000), (bytes.len() as u64 - 8, 8)] {
            assert_eq!(
                parts.get_bytes(start, len).unwrap(),
                bytes.slice(start as usize..start as usize + len)
            );
        }
        let mut head = Vec::new();
        parts
            .get_read(0)
            .unwrap()
            .take(4)
            .read_to_end(&mut head)
            .unwrap();
        assert_eq!(head, b"PAR1");
        let coded = codes(&parts, &meta, "user_id").unwrap().unwrap();
        assert_eq!(coded.iter().map(|c| c.codes.len()).sum::<usize>(), 20_000);
        std::fs::remove_file(&path).unwrap();
        assert!(
            Parts::whole(bytes.clone())
                .get_bytes(bytes.len() as u64, 1)
                .is_err()
        );
    }
}
