//! A batch's columns, typed, whatever their physical layout; the event-type filter; event-id
//! keys for deduplication.

use arrow::array::{
    Array, AsArray, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use deltalake::datafusion::prelude::{Expr, col, lit};

use crate::{Error, Result};

/// `type IN (...)`.
pub fn types(names: &[&str]) -> Expr {
    col("type").in_list(names.iter().map(|n| lit(*n)).collect(), false)
}

/// A string column whatever its physical layout.
pub enum Strs<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
    /// A dictionary of strings: the row's key, then its value.
    Dict(&'a Int32Array, &'a StringArray),
}

impl Strs<'_> {
    #[inline]
    pub fn get(&self, i: usize) -> Option<&str> {
        match self {
            Strs::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strs::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strs::View(a) => a.is_valid(i).then(|| a.value(i)),
            Strs::Dict(k, v) => k.is_valid(i).then(|| v.value(k.value(i) as usize)),
        }
    }
}

fn missing(name: &str) -> Error {
    Error::Internal(format!("column {name} is missing or of an unexpected type"))
}

pub fn strs<'a>(batch: &'a RecordBatch, name: &str) -> Result<Strs<'a>> {
    let a = batch.column_by_name(name).ok_or_else(|| missing(name))?;
    Ok(match a.data_type() {
        DataType::Utf8 => Strs::Utf8(a.as_string::<i32>()),
        DataType::LargeUtf8 => Strs::Large(a.as_string::<i64>()),
        DataType::Utf8View => Strs::View(a.as_string_view()),
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let d = a.as_dictionary::<Int32Type>();
            Strs::Dict(d.keys(), d.values().as_string::<i32>())
        }
        _ => return Err(missing(name)),
    })
}

pub fn ints<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    let a = batch.column_by_name(name).ok_or_else(|| missing(name))?;
    a.as_primitive_opt::<Int64Type>()
        .ok_or_else(|| missing(name))
}

pub fn times<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a TimestampMicrosecondArray> {
    let a = batch.column_by_name(name).ok_or_else(|| missing(name))?;
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Ok(a.as_primitive::<TimestampMicrosecondType>())
        }
        _ => Err(missing(name)),
    }
}

/// A 128-bit key for an `event_id` (deduplication without keeping the strings).
#[inline]
pub fn event_key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// The number of distinct keys among `(key, amount)` items and the sum of their amounts (a
/// producer's retry repeats the key and counts once).
pub fn distinct(items: &mut Vec<(u128, i64)>) -> (i64, i64) {
    items.sort_unstable_by_key(|e| e.0);
    items.dedup_by_key(|e| e.0);
    (items.len() as i64, items.iter().map(|e| e.1).sum())
}
