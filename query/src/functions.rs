//! SQL functions over the lake: `window_funnel`, the HLL++ sketch functions and roaring
//! bitmap functions. Each wraps the same core the jobs use ([`crate::funnel`],
//! [`crate::sketch`]), so SQL and the metric tables agree.
//!
//! - `window_funnel(window, ts, cond1, cond2, ...)` → Int32: the furthest step reached
//!   (`window` in milliseconds as an integer, or an interval); `window_funnel_first` anchors
//!   at the first step-1 event.
//! - `hll_sketch(user_id)` → Binary, `hll_merge(sketch)` → Binary, `hll_count(sketch)` →
//!   Float64.
//! - `local_date(ts, tz)` → Date32, `local_hour(ts, tz)` → Int32: report days and hours.
//! - `bitmap_agg(user_id)` → Binary (a roaring bitmap of the ids), `bitmap_union(bitmap)` →
//!   Binary, `bitmap_count(bitmap)` → Int64: exact distinct counts that merge.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array, Int64Builder,
    UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, IntervalUnit, TimeUnit, UInt64Type};
use deltalake::datafusion::common::utils::SingleRowListArrayBuilder;
use deltalake::datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use deltalake::datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use deltalake::datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use deltalake::datafusion::prelude::SessionContext;
use roaring::RoaringTreemap;

use crate::funnel::{FunnelMode, MAX_STEPS, reach};
use crate::sketch::{Hll, bitmap_from_bytes, bitmap_to_bytes};

/// Registers every spacepulse function in `ctx`.
pub fn register(ctx: &SessionContext) {
    for mode in [FunnelMode::Furthest, FunnelMode::First] {
        ctx.register_udaf(AggregateUDF::from(WindowFunnel::new(mode)));
    }
    for kind in [
        SketchKind::HllSketch,
        SketchKind::HllMerge,
        SketchKind::BitmapAgg,
        SketchKind::BitmapUnion,
    ] {
        ctx.register_udaf(AggregateUDF::from(SketchAgg::new(kind)));
    }
    for kind in [ScalarKind::HllCount, ScalarKind::BitmapCount] {
        ctx.register_udf(ScalarUDF::from(SketchScalar::new(kind)));
    }
    for hour in [false, true] {
        ctx.register_udf(ScalarUDF::from(LocalTime::new(hour)));
    }
}

fn ext(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(e.to_string())
}

/// An array of binary values whatever its physical type (Binary, LargeBinary, BinaryView).
fn as_binary(a: &ArrayRef) -> Result<BinaryArray> {
    let b = cast(a, &DataType::Binary)?;
    Ok(b.as_binary::<i32>().clone())
}

// ---------------------------------------------------------------- window_funnel

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFunnel {
    mode: FunnelMode,
    signature: Signature,
}

impl WindowFunnel {
    pub fn new(mode: FunnelMode) -> Self {
        Self {
            mode,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for WindowFunnel {
    fn name(&self) -> &str {
        match self.mode {
            FunnelMode::Furthest => "window_funnel",
            FunnelMode::First => "window_funnel_first",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() < 3 {
            return plan_err!(
                "{}(window, ts, cond1, cond2, ...): expected a window, a timestamp and at least one condition, got {} arguments",
                self.name(),
                args.len()
            );
        }
        if args.len() - 2 > MAX_STEPS {
            return plan_err!("{}: at most {MAX_STEPS} steps", self.name());
        }
        match &args[0] {
            t if t.is_integer() => {}
            DataType::Interval(_) | DataType::Duration(_) => {}
            t => {
                return plan_err!(
                    "{}: window must be milliseconds or an interval, got {t}",
                    self.name()
                );
            }
        }
        match &args[1] {
            DataType::Timestamp(..) | DataType::Int64 | DataType::Date32 => {}
            t => return plan_err!("{}: ts must be a timestamp, got {t}", self.name()),
        }
        for (i, t) in args[2..].iter().enumerate() {
            if t != &DataType::Boolean && t != &DataType::Null {
                return plan_err!(
                    "{}: condition {} must be boolean, got {t}",
                    self.name(),
                    i + 1
                );
            }
        }
        Ok(DataType::Int32)
    }
    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(FunnelAcc {
            mode: self.mode,
            steps: args.exprs.len().saturating_sub(2),
            window_us: None,
            events: Vec::new(),
        }))
    }
    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        let item = |t: DataType| Arc::new(Field::new_list_field(t, true));
        Ok(vec![
            Arc::new(Field::new(
                format!("{}_window", args.name),
                DataType::Int64,
                true,
            )),
            Arc::new(Field::new(
                format!("{}_ts", args.name),
                DataType::List(item(DataType::Int64)),
                true,
            )),
            Arc::new(Field::new(
                format!("{}_mask", args.name),
                DataType::List(item(DataType::UInt64)),
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct FunnelAcc {
    mode: FunnelMode,
    steps: usize,
    window_us: Option<i64>,
    events: Vec<(i64, u64)>,
}

/// The window argument in microseconds (integers are milliseconds).
fn window_us(a: &ArrayRef) -> Result<Option<i64>> {
    if a.is_empty() || a.is_null(0) {
        return Ok(None);
    }
    let us = match a.data_type() {
        t if t.is_integer() => {
            cast(a, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .value(0)
                * 1000
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = a
                .as_primitive::<arrow::datatypes::IntervalMonthDayNanoType>()
                .value(0);
            if v.months != 0 {
                return exec_err!("window_funnel: a window in months has no fixed length");
            }
            v.days as i64 * 86_400_000_000 + v.nanoseconds / 1000
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = a
                .as_primitive::<arrow::datatypes::IntervalDayTimeType>()
                .value(0);
            v.days as i64 * 86_400_000_000 + v.milliseconds as i64 * 1000
        }
        DataType::Duration(_) => cast(a, &DataType::Duration(TimeUnit::Microsecond))?
            .as_primitive::<arrow::datatypes::DurationMicrosecondType>()
            .value(0),
        t => return exec_err!("window_funnel: unsupported window type {t}"),
    };
    if us < 0 {
        return exec_err!("window_funnel: the window must not be negative");
    }
    Ok(Some(us))
}

fn ts_us(a: &ArrayRef) -> Result<Int64Array> {
    let us = match a.data_type() {
        DataType::Timestamp(..) | DataType::Date32 => cast(
            &cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
            &DataType::Int64,
        )?,
        // Integers are epoch milliseconds.
        _ => {
            let ms = cast(a, &DataType::Int64)?;
            Arc::new(arrow::compute::kernels::numeric::mul(
                &ms,
                &Int64Array::new_scalar(1000),
            )?)
        }
    };
    Ok(us.as_primitive::<Int64Type>().clone())
}

impl Accumulator for FunnelAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if self.window_us.is_none() {
            self.window_us = window_us(&values[0])?;
        }
        let ts = ts_us(&values[1])?;
        let conds: Vec<BooleanArray> = values[2..]
            .iter()
            .map(|c| cast(c, &DataType::Boolean).map(|b| b.as_boolean().clone()))
            .collect::<std::result::Result<_, _>>()?;
        for row in 0..ts.len() {
            if ts.is_null(row) {
                continue;
            }
            let mut mask = 0u64;
            for (k, c) in conds.iter().enumerate() {
                if c.is_valid(row) && c.value(row) {
                    mask |= 1 << k;
                }
            }
            if mask != 0 {
                self.events.push((ts.value(row), mask));
            }
        }
        Ok(())
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let window = self.window_us.unwrap_or(0);
        let r = reach(&mut self.events, self.steps, window, self.mode);
        Ok(ScalarValue::Int32(Some(r.level as i32)))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.events.capacity() * 16
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let ts: Int64Array = self.events.iter().map(|e| e.0).collect();
        let masks: UInt64Array = self.events.iter().map(|e| e.1).collect();
        Ok(vec![
            ScalarValue::Int64(self.window_us),
            SingleRowListArrayBuilder::new(Arc::new(ts)).build_list_scalar(),
            SingleRowListArrayBuilder::new(Arc::new(masks)).build_list_scalar(),
        ])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let windows = states[0].as_primitive::<Int64Type>();
        let ts = states[1].as_list::<i32>();
        let masks = states[2].as_list::<i32>();
        for row in 0..ts.len() {
            if self.window_us.is_none() && windows.is_valid(row) {
                self.window_us = Some(windows.value(row));
            }
            if ts.is_null(row) {
                continue;
            }
            let t = ts.value(row);
            let m = masks.value(row);
            let t = t.as_primitive::<Int64Type>();
            let m = m.as_primitive::<UInt64Type>();
            self.events
                .extend(t.values().iter().copied().zip(m.values().iter().copied()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- sketches

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SketchKind {
    HllSketch,
    HllMerge,
    BitmapAgg,
    BitmapUnion,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SketchAgg {
    kind: SketchKind,
    signature: Signature,
}

impl SketchAgg {
    fn new(kind: SketchKind) -> Self {
        Self {
            kind,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SketchAgg {
    fn name(&self) -> &str {
        match self.kind {
            SketchKind::HllSketch => "hll_sketch",
            SketchKind::HllMerge => "hll_merge",
            SketchKind::BitmapAgg => "bitmap_agg",
            SketchKind::BitmapUnion => "bitmap_union",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let ok = match self.kind {
            SketchKind::BitmapAgg => args[0].is_integer() || args[0] == DataType::Null,
            SketchKind::HllSketch => {
                args[0].is_integer()
                    || matches!(
                        args[0],
                        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null
                    )
            }
            _ => matches!(
                args[0],
                DataType::Binary | DataType::BinaryView | DataType::LargeBinary | DataType::Null
            ),
        };
        if !ok {
            let want = match self.kind {
                SketchKind::HllSketch => "an integer or string",
                SketchKind::BitmapAgg => "an integer id",
                SketchKind::HllMerge => "an HLL sketch (binary)",
                SketchKind::BitmapUnion => "a bitmap (binary)",
            };
            return plan_err!("{}: expected {want}, got {}", self.name(), args[0]);
        }
        Ok(DataType::Binary)
    }
    fn accumulator(&self, _args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAcc {
            kind: self.kind,
            hll: Hll::new(),
            bitmap: RoaringTreemap::new(),
        }))
    }
    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}_state", args.name),
            DataType::Binary,
            true,
        ))])
    }
}

#[derive(Debug)]
struct SketchAcc {
    kind: SketchKind,
    hll: Hll,
    bitmap: RoaringTreemap,
}

impl SketchAcc {
    fn merge_bytes(&mut self, a: &ArrayRef) -> Result<()> {
        for bytes in as_binary(a)?.iter().flatten() {
            match self.kind {
                SketchKind::BitmapUnion | SketchKind::BitmapAgg => {
                    self.bitmap |= bitmap_from_bytes(bytes).map_err(ext)?
                }
                _ => self
                    .hll
                    .merge(&Hll::from_bytes(bytes).map_err(ext)?)
                    .map_err(ext)?,
            }
        }
        Ok(())
    }
    fn bytes(&mut self) -> Vec<u8> {
        match self.kind {
            SketchKind::BitmapUnion | SketchKind::BitmapAgg => bitmap_to_bytes(&self.bitmap),
            _ => self.hll.to_bytes(),
        }
    }
}

impl Accumulator for SketchAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let a = &values[0];
        match self.kind {
            SketchKind::HllMerge | SketchKind::BitmapUnion => return self.merge_bytes(a),
            SketchKind::BitmapAgg => {
                if a.data_type().is_integer() {
                    let ints = cast(a, &DataType::Int64)?;
                    let mut ids: Vec<u64> = ints
                        .as_primitive::<Int64Type>()
                        .iter()
                        .flatten()
                        .map(|v| v as u64)
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    self.bitmap |= RoaringTreemap::from_sorted_iter(ids).map_err(ext)?;
                }
                return Ok(());
            }
            SketchKind::HllSketch => {}
        }
        if a.data_type().is_integer() {
            let ints = cast(a, &DataType::Int64)?;
            for v in ints.as_primitive::<Int64Type>().iter().flatten() {
                self.hll.insert(v as u64);
            }
        } else if !matches!(a.data_type(), DataType::Null) {
            let s = cast(a, &DataType::Utf8)?;
            for v in s.as_string::<i32>().iter().flatten() {
                self.hll.insert(xxhash_rust::xxh64::xxh64(v.as_bytes(), 0));
            }
        }
        Ok(())
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.bytes())))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.bitmap.serialized_size() + (1 << 14)
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.bytes()))])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.merge_bytes(&states[0])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ScalarKind {
    HllCount,
    BitmapCount,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SketchScalar {
    kind: ScalarKind,
    signature: Signature,
}

impl SketchScalar {
    fn new(kind: ScalarKind) -> Self {
        Self {
            kind,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SketchScalar {
    fn name(&self) -> &str {
        match self.kind {
            ScalarKind::HllCount => "hll_count",
            ScalarKind::BitmapCount => "bitmap_count",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !matches!(
            args[0],
            DataType::Binary | DataType::BinaryView | DataType::LargeBinary | DataType::Null
        ) {
            return plan_err!("{}: expected a binary sketch, got {}", self.name(), args[0]);
        }
        Ok(match self.kind {
            ScalarKind::HllCount => DataType::Float64,
            ScalarKind::BitmapCount => DataType::Int64,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let a = args.args[0].clone().into_array(rows)?;
        let bin = as_binary(&a)?;
        let out: ArrayRef = match self.kind {
            ScalarKind::HllCount => {
                let mut v = Vec::with_capacity(bin.len());
                for b in bin.iter() {
                    v.push(match b {
                        Some(b) => Some(Hll::from_bytes(b).map_err(ext)?.estimate()),
                        None => None,
                    });
                }
                Arc::new(Float64Array::from(v))
            }
            ScalarKind::BitmapCount => {
                let mut out = Int64Builder::with_capacity(bin.len());
                for b in bin.iter() {
                    match b {
                        Some(b) => {
                            out.append_value(bitmap_from_bytes(b).map_err(ext)?.len() as i64)
                        }
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Bytes of one bitmap of the given ids (a test and example helper).
pub fn bitmap_bytes(ids: &[u64]) -> Vec<u8> {
    bitmap_to_bytes(&crate::sketch::bitmap_of(ids.to_vec()))
}

// ---------------------------------------------------------------- report time zones

/// `local_date(ts, tz)` → Date32 and `local_hour(ts, tz)` → Int32: the report day and hour of
/// an instant in an IANA time zone (`tz` a constant string, e.g. 'Asia/Shanghai').
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LocalTime {
    hour: bool,
    signature: Signature,
}

impl LocalTime {
    pub fn new(hour: bool) -> Self {
        Self {
            hour,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for LocalTime {
    fn name(&self) -> &str {
        if self.hour {
            "local_hour"
        } else {
            "local_date"
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !matches!(args[0], DataType::Timestamp(..) | DataType::Null) {
            return plan_err!(
                "{}(ts, tz): ts must be a timestamp, got {}",
                self.name(),
                args[0]
            );
        }
        if !matches!(
            args[1],
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        ) {
            return plan_err!(
                "{}(ts, tz): tz must be a string such as 'Asia/Shanghai', got {}",
                self.name(),
                args[1]
            );
        }
        Ok(if self.hour {
            DataType::Int32
        } else {
            DataType::Date32
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let tz: crate::tz::ReportTz = match &args.args[1] {
            ColumnarValue::Scalar(s) => match s.try_as_str() {
                Some(Some(name)) => name.parse().map_err(ext)?,
                _ => return exec_err!("{}: tz must not be NULL", self.name()),
            },
            ColumnarValue::Array(_) => {
                return exec_err!("{}: tz must be a constant string", self.name());
            }
        };
        let ts = args.args[0].clone().into_array(rows)?;
        let us = cast(
            &cast(&ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
            &DataType::Int64,
        )?;
        let us = us.as_primitive::<Int64Type>();
        let mut clock = crate::tz::LocalClock::new(tz);
        let out: ArrayRef = if self.hour {
            Arc::new(arrow::array::Int32Array::from_iter(us.iter().map(|t| {
                t.map(|t| (clock.local_us(t).rem_euclid(86_400_000_000) / 3_600_000_000) as i32)
            })))
        } else {
            Arc::new(arrow::array::Date32Array::from_iter(
                us.iter().map(|t| t.map(|t| clock.day(t))),
            ))
        };
        Ok(ColumnarValue::Array(out))
    }
}
