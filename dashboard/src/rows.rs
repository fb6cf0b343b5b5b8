//! Typed report rows. Each report's row is a struct declared with [`row!`]: its fields name the
//! query's columns, and [`FromBatch::decode`] reads them from Arrow once (each column cast to
//! the field's type), so a report travels Arrow → struct → JSON or CSV by serde, and a page
//! reads the struct's fields rather than looking keys up in a JSON value.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};

use crate::error::ApiError;

/// A value one cell of a typed row holds.
pub trait Cell: Sized {
    /// The Arrow type the column is cast to before it is read.
    fn arrow_type() -> DataType;
    /// The cell of row `i`; `None` for a null (an error unless the field is an `Option`).
    fn read(a: &ArrayRef, i: usize) -> Option<Self>;
    /// Whether a null is this field's value (`Option`), not an error.
    fn nullable() -> bool {
        false
    }
    /// Null as a value (only called when [`Cell::nullable`]).
    fn null() -> Option<Self> {
        None
    }
    /// The cell as a spreadsheet may show it: text a spreadsheet would evaluate as a formula
    /// (`=`, `+`, `-`, `@`, a tab or a carriage return first) gets a leading `'`.
    fn spreadsheet_safe(self) -> Self {
        self
    }
}

impl Cell for i64 {
    fn arrow_type() -> DataType {
        DataType::Int64
    }
    fn read(a: &ArrayRef, i: usize) -> Option<Self> {
        a.is_valid(i)
            .then(|| a.as_primitive::<Int64Type>().value(i))
    }
}

impl Cell for f64 {
    fn arrow_type() -> DataType {
        DataType::Float64
    }
    fn read(a: &ArrayRef, i: usize) -> Option<Self> {
        a.is_valid(i)
            .then(|| a.as_primitive::<Float64Type>().value(i))
    }
}

impl Cell for bool {
    fn arrow_type() -> DataType {
        DataType::Boolean
    }
    fn read(a: &ArrayRef, i: usize) -> Option<Self> {
        a.is_valid(i).then(|| a.as_boolean().value(i))
    }
}

impl Cell for String {
    fn arrow_type() -> DataType {
        DataType::Utf8
    }
    fn read(a: &ArrayRef, i: usize) -> Option<Self> {
        a.is_valid(i)
            .then(|| a.as_string::<i32>().value(i).to_string())
    }
    fn spreadsheet_safe(self) -> Self {
        if query::output::formula_like(&self) {
            format!("'{self}")
        } else {
            self
        }
    }
}

impl<T: Cell> Cell for Option<T> {
    fn arrow_type() -> DataType {
        T::arrow_type()
    }
    fn read(a: &ArrayRef, i: usize) -> Option<Self> {
        T::read(a, i).map(Some)
    }
    fn nullable() -> bool {
        true
    }
    fn null() -> Option<Self> {
        Some(None)
    }
    fn spreadsheet_safe(self) -> Self {
        self.map(T::spreadsheet_safe)
    }
}

/// A typed row of a report's query.
pub trait FromBatch: Sized + Send + Sync + 'static {
    /// The columns, in the order of the fields (a CSV's header).
    const COLUMNS: &'static [&'static str];
    /// Every row of `batch`; a missing column or a null in a field that may not be null is an
    /// error naming the column.
    fn decode(batch: &RecordBatch) -> Result<Vec<Self>, String>;
    /// The row with its text cells safe for a spreadsheet (see [`Cell::spreadsheet_safe`]).
    fn spreadsheet_safe(self) -> Self;
}

/// Column `name` of `batch`, cast to `T`'s Arrow type.
pub fn column<T: Cell>(batch: &RecordBatch, name: &str) -> Result<ArrayRef, String> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| format!("the query has no column {name:?}"))?;
    if c.data_type() == &T::arrow_type() {
        return Ok(Arc::clone(c));
    }
    // Not `safe`: a value the type cannot hold is an error, never a null.
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(c, &T::arrow_type(), &options)
        .map_err(|e| format!("column {name:?}: {e}"))
}

/// Cell `i` of column `name` (cast by [`column`]).
pub fn cell<T: Cell>(a: &ArrayRef, i: usize, name: &str) -> Result<T, String> {
    match T::read(a, i) {
        Some(v) => Ok(v),
        None if T::nullable() => T::null().ok_or_else(|| format!("column {name:?}: null")),
        None => Err(format!("column {name:?}: null in row {i}")),
    }
}

/// Declares a typed row: a struct whose fields are the query's columns (by name), with
/// [`FromBatch`] and `Serialize`. Fields after `;` are not read from the query: they start
/// at their default and the report fills them (a row's `provisional`, a revision's text).
#[macro_export]
macro_rules! row {
    (
        $(#[$m:meta])*
        pub struct $name:ident {
            $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)?
            $( ; $( $(#[$cm:meta])* pub $cf:ident : $ct:ty ),* $(,)? )?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        pub struct $name {
            $( $(#[$fm])* pub $f: $t, )*
            $( $( $(#[$cm])* pub $cf: $ct, )* )?
        }

        impl $crate::rows::FromBatch for $name {
            const COLUMNS: &'static [&'static str] =
                &[$( stringify!($f), )* $( $( stringify!($cf), )* )?];

            fn decode(batch: &arrow::array::RecordBatch) -> Result<Vec<Self>, String> {
                $( let $f = $crate::rows::column::<$t>(batch, stringify!($f))?; )*
                (0..batch.num_rows())
                    .map(|i| {
                        Ok(Self {
                            $( $f: $crate::rows::cell::<$t>(&$f, i, stringify!($f))?, )*
                            $( $( $cf: <$ct>::default(), )* )?
                        })
                    })
                    .collect()
            }

            fn spreadsheet_safe(self) -> Self {
                Self {
                    $( $f: $crate::rows::Cell::spreadsheet_safe(self.$f), )*
                    $( $( $cf: $crate::rows::Cell::spreadsheet_safe(self.$cf), )* )?
                }
            }
        }
    };
}

/// Every row of `batches` as `R`.
pub fn decode_all<R: FromBatch>(batches: &[RecordBatch]) -> Result<Vec<R>, ApiError> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(R::decode(b).map_err(ApiError::internal)?);
    }
    Ok(out)
}

/// `rows` as CSV: the header, then one line per row, text a spreadsheet would evaluate made
/// safe.
pub fn csv<R: FromBatch + serde::Serialize + Clone>(rows: &[R]) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let failed = |e: csv::Error| ApiError::internal(format!("writing CSV: {e}"));
    w.write_record(R::COLUMNS).map_err(failed)?;
    for r in rows {
        w.serialize(r.clone().spreadsheet_safe()).map_err(failed)?;
    }
    w.into_inner()
        .map_err(|e| ApiError::internal(format!("writing CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    crate::row! {
        /// A test row.
        pub struct T {
            pub name: String,
            pub n: i64,
            pub x: Option<f64>;
            pub note: String,
        }
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("x", DataType::Float64, true),
                Field::new("n", DataType::Int32, false),
                Field::new("name", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Float64Array::from(vec![Some(0.5), None])),
                Arc::new(Int32Array::from(vec![1, -2])),
                Arc::new(StringArray::from(vec!["a,b", "=HYPERLINK(\"x\")"])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_decode_by_column_name_and_write_csv_safely() {
        let rows = decode_all::<T>(&[batch()]).unwrap();
        assert_eq!(rows[0].name, "a,b");
        assert_eq!(rows[1].n, -2);
        assert_eq!((rows[0].x, rows[1].x), (Some(0.5), None));
        let csv = String::from_utf8(csv(&rows).unwrap()).unwrap();
        assert_eq!(
            csv,
            "name,n,x,note\n\"a,b\",1,0.5,\n\"'=HYPERLINK(\"\"x\"\")\",-2,,\n"
        );
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(json["name"], "=HYPERLINK(\"x\")", "JSON keeps the text");
        assert_eq!(json["x"], serde_json::Value::Null);
    }

    #[test]
    fn a_missing_column_or_an_unexpected_null_is_named() {
        crate::row! {
            pub struct Missing { pub y: i64 }
        }
        let e = decode_all::<Missing>(&[batch()]).unwrap_err();
        assert!(e.message.contains("\"y\""), "{}", e.message);
        crate::row! {
            pub struct NotNull { pub x: f64 }
        }
        let e = decode_all::<NotNull>(&[batch()]).unwrap_err();
        assert!(e.message.contains("null in row 1"), "{}", e.message);
    }
}
