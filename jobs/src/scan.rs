//! Reading the events of one report day: a DataFusion scan of `events` pruned to the UTC
//! hour partitions of the day, cut exactly at the day's bounds, with only the columns and
//! event types a job needs, folded in parallel (one task per scan partition).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Int32Type, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use deltalake::DeltaTable;
use deltalake::datafusion::physical_plan::execute_stream_partitioned;
use deltalake::datafusion::prelude::{Expr, SessionContext, col, lit};
use deltalake::datafusion::scalar::ScalarValue;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::file::metadata::{
    ParquetMetaDataOptions, ParquetMetaDataReader, ParquetStatisticsPolicy,
};
use query::tz::ReportTz;

use crate::changes::{Hour, hour_of_path};
use crate::pages::{Coded, Parts};
use crate::{Error, Result};

/// The session over `events` that every job scans.
pub struct Scan {
    ctx: SessionContext,
    pub tz: ReportTz,
}

fn ts_lit(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(us),
        Some("UTC".into()),
    ))
}

impl Scan {
    pub fn new(ctx: SessionContext, tz: ReportTz) -> Self {
        Self { ctx, tz }
    }

    pub fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    /// The filter selecting local day `day`: its UTC hour partitions, then its exact bounds.
    pub fn day_filter(&self, day: i32) -> Expr {
        self.days_filter(&BTreeSet::from([day]))
    }

    /// The filter selecting the UTC hour partitions of `days` and, where a day does not start
    /// on a whole UTC hour, the instants from the first day's start to the last day's end
    /// (rows of days in between that are not in `days` are the caller's to skip).
    pub fn days_filter(&self, days: &BTreeSet<i32>) -> Expr {
        let (Some(&first), Some(&last)) = (days.first(), days.last()) else {
            return lit(false);
        };
        let mut by_date: std::collections::BTreeMap<String, BTreeSet<i32>> = Default::default();
        for &day in days {
            for (date, hour) in self.tz.utc_hours(day) {
                by_date.entry(date).or_default().insert(hour);
            }
        }
        let partitions = by_date
            .into_iter()
            .map(|(date, hours)| {
                let on_date = col("date").eq(lit(date));
                if hours.len() == 24 {
                    on_date
                } else {
                    on_date.and(col("hour").in_list(hours.into_iter().map(lit).collect(), false))
                }
            })
            .reduce(Expr::or)
            .unwrap_or(lit(false));
        let whole = days.iter().all(|d| {
            self.tz.day_start_us(*d) % query::tz::HOUR_US == 0
                && self.tz.day_start_us(*d + 1) % query::tz::HOUR_US == 0
        });
        if whole {
            // Each hour lies in one day: the partitions are the days exactly.
            return partitions;
        }
        let start = self.tz.day_start_us(first);
        let end = self.tz.day_start_us(last + 1);
        partitions
            .and(col("ts").gt_eq(ts_lit(start)))
            .and(col("ts").lt(ts_lit(end)))
    }

    /// Folds the rows of `events` matching `filter` (with `columns` projected) into one
    /// accumulator per scan partition, each on its own task.
    pub async fn fold<A, I, F>(
        &self,
        filter: Expr,
        columns: &[&str],
        init: I,
        fold: F,
    ) -> Result<Vec<A>>
    where
        A: Send + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&mut A, &RecordBatch) -> Result<()> + Send + Sync + 'static,
    {
        let df = self
            .ctx
            .table("events")
            .await?
            .filter(filter)?
            .select_columns(columns)?;
        let plan = df.create_physical_plan().await?;
        let streams = execute_stream_partitioned(plan, self.ctx.task_ctx())?;
        let init = Arc::new(init);
        let fold = Arc::new(fold);
        let mut tasks = Vec::with_capacity(streams.len());
        for mut stream in streams {
            let init = init.clone();
            let fold = fold.clone();
            tasks.push(tokio::spawn(async move {
                let mut acc = init();
                while let Some(batch) = stream.next().await {
                    fold(&mut acc, &batch?)?;
                }
                Ok::<A, Error>(acc)
            }));
        }
        joined(tasks).await
    }
}

/// A Parquet file of `events` in the current snapshot, its UTC hour partition and the report
/// days that hour overlaps (one, or two in a zone whose days start mid-hour).
#[derive(Debug, Clone)]
pub struct EventFile {
    pub path: deltalake::Path,
    pub size: u64,
    pub hour: Hour,
    pub days: Vec<i32>,
}

/// The files of `events` whose hour partition overlaps one of `days`, largest first.
pub fn files_of_days(
    events: &DeltaTable,
    tz: ReportTz,
    days: &BTreeSet<i32>,
) -> Result<Vec<EventFile>> {
    event_files(events, tz, |_, overlapped| {
        overlapped.iter().any(|d| days.contains(d))
    })
}

/// The files of `events` holding a row whose `column` is not null, largest first: all but
/// those whose Delta statistics count as many nulls in it as rows (a file without statistics
/// is kept).
pub fn files_with(events: &DeltaTable, tz: ReportTz, column: &str) -> Result<Vec<EventFile>> {
    event_files(events, tz, |f, _| {
        !f.stats()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|stats| {
                let rows = stats["numRecords"].as_i64();
                rows.is_some() && stats["nullCount"][column].as_i64() == rows
            })
    })
}

/// The files of `events` in an hour partition that `keep` keeps (told the file and the report
/// days its hour overlaps), largest first.
fn event_files(
    events: &DeltaTable,
    tz: ReportTz,
    keep: impl Fn(&deltalake::kernel::LogicalFileView, &[i32]) -> bool,
) -> Result<Vec<EventFile>> {
    let mut out = Vec::new();
    for f in events.snapshot()?.log_data().iter() {
        let Some(hour) = hour_of_path(&f.path()) else {
            continue;
        };
        let overlapped = tz.days_of_utc_hour(hour.0, hour.1);
        if keep(&f, &overlapped) {
            out.push(EventFile {
                path: f.object_store_path(),
                size: f.size().max(0) as u64,
                hour,
                days: overlapped,
            });
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.size));
    Ok(out)
}

/// Folds the rows of `files` (only the columns `columns` picks for each file decoded) into one
/// accumulator per core, reading the Parquet files directly: a job that needs no filter but
/// the files' hours skips the query planner and the per-file work of a general scan. The fold
/// is told each batch's file.
pub async fn fold_files<A, C, I, F>(
    events: &DeltaTable,
    files: Vec<EventFile>,
    columns: C,
    init: I,
    fold: F,
) -> Result<Vec<A>>
where
    A: Send + 'static,
    C: Fn(&EventFile) -> &'static [&'static str] + Send + Sync + 'static,
    I: Fn() -> A + Send + Sync + 'static,
    F: Fn(&mut A, &EventFile, &RecordBatch) -> Result<()> + Send + Sync + 'static,
{
    fold_sources(events, files, init, move |acc, f, source| {
        for batch in source.batches(columns(f))? {
            fold(acc, f, &batch?)?;
        }
        Ok(())
    })
    .await
}

/// Folds `files` into one accumulator per core, each file handed to `fold` as a [`Source`] to
/// read as it likes; files are taken in their order, each by the next free worker.
/// A local lake's files are read in place; an object store's are fetched whole, one at a time
/// per core.
pub async fn fold_sources<A, I, F>(
    events: &DeltaTable,
    files: Vec<EventFile>,
    init: I,
    fold: F,
) -> Result<Vec<A>>
where
    A: Send + 'static,
    I: Fn() -> A + Send + Sync + 'static,
    F: Fn(&mut A, &EventFile, &mut Source) -> Result<()> + Send + Sync + 'static,
{
    let workers = cores();
    let local = events.table_url().to_file_path().ok();
    let store = events.object_store();
    let files = Arc::new(files);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let init = Arc::new(init);
    let fold = Arc::new(fold);
    let handle = tokio::runtime::Handle::current();
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (files, next) = (files.clone(), next.clone());
        let (init, fold) = (init.clone(), fold.clone());
        let (local, store, handle) = (local.clone(), store.clone(), handle.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut acc = init();
            while let Some(f) = files.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                let parts = match &local {
                    Some(root) => {
                        let file = std::fs::File::open(root.join(f.path.as_ref()))?;
                        let len = match f.size {
                            0 => file.metadata()?.len(),
                            n => n,
                        };
                        Parts::open(file, len)?
                    }
                    None => Parts::whole(
                        handle.block_on(async { store.get(&f.path).await?.bytes().await })?,
                    ),
                };
                fold(&mut acc, f, &mut Source::open(parts)?)?;
            }
            Ok::<A, Error>(acc)
        }));
    }
    joined(tasks).await
}

/// The folds' accumulators, in task order; the first error wins.
async fn joined<A>(tasks: Vec<tokio::task::JoinHandle<Result<A>>>) -> Result<Vec<A>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| Error::Internal(e.to_string()))??);
    }
    Ok(out)
}

/// Columns of few distinct values, read as dictionaries (their Parquet pages are dictionary
/// encoded): a fold looks at each distinct value once per batch, not at a string per row.
const DICTIONARY_COLUMNS: [&str; 2] = [lake::event::col::TYPE, lake::event::col::PLATFORM];

/// One Parquet file of a fold: its footer, parsed, and its bytes as far as read.
pub struct Source {
    parts: Parts,
    meta: ArrowReaderMetadata,
}

impl Source {
    fn open(parts: Parts) -> Result<Self> {
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

/// A map of `u64`s (user ids) to bit flags (say, the platforms a user was seen on), the
/// inner loop of a distinct count: open addressing with linear probing in a power-of-two
/// table at most three quarters full, slots indexed by Fibonacci hashing (the product's top
/// bits), no flags marking an empty slot (the id 0 is kept aside). An insert ORs its flags into
/// the id's. The ids need no protection from crafted collisions here.
#[derive(Clone, Default)]
pub struct U64Flags {
    slots: Vec<(u64, u8)>,
    len: usize,
    zero: u8,
    shift: u32,
}

impl U64Flags {
    /// A map that holds `n` ids without growing.
    pub fn with_capacity(n: usize) -> Self {
        let mut map = Self::default();
        map.reserve(n);
        map
    }

    /// Room for `additional` more ids without growing: one allocation where inserts would
    /// double the table step by step (each step a fresh zeroed table, page faults and, when
    /// the old one is unmapped, a TLB flush on every core).
    pub fn reserve(&mut self, additional: usize) {
        // An insert grows the table past three quarters full.
        let want = (self.len + additional + 1) * 4 / 3 + 1;
        if want > self.slots.len() {
            self.rehash(want.next_power_of_two().max(64));
        }
    }

    /// Adds `flags` (not 0) to those of `id`.
    #[inline]
    pub fn insert(&mut self, id: u64, flags: u8) {
        if id == 0 {
            self.zero |= flags;
            return;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize;
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == id {
                slot.1 |= flags;
                return;
            }
            if slot.1 == 0 {
                *slot = (id, flags);
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        self.rehash((self.slots.len() * 2).max(64));
    }

    fn rehash(&mut self, capacity: usize) {
        // Written, not allocated zeroed: calloc's pages map the shared zero page, and the
        // first insert into each then takes a copy-on-write fault with a TLB flush on every
        // core (a fifth of a scan's time, measured). Pages written first fault once, locally.
        let mut slots = Vec::with_capacity(capacity);
        slots.resize(capacity, (0, 0));
        let old = std::mem::replace(&mut self.slots, slots);
        self.shift = 64 - capacity.trailing_zeros();
        self.len = 0;
        for (id, flags) in old {
            if flags != 0 {
                self.insert(id, flags);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len + usize::from(self.zero != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each id with its flags.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        (self.zero != 0)
            .then_some((0, self.zero))
            .into_iter()
            .chain(self.slots.iter().copied().filter(|s| s.1 != 0))
    }

    /// Adds every id and flags of `other`.
    pub fn merge(&mut self, other: &U64Flags) {
        self.reserve(other.len());
        for (id, flags) in other.iter() {
            self.insert(id, flags);
        }
    }

    /// The ids with their flags, sorted by id.
    pub fn into_sorted(self) -> Vec<(u64, u8)> {
        let mut v: Vec<(u64, u8)> = self.iter().collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }
}

/// A [`U64Flags`] that the scan's workers fill together, one copy however many workers see
/// the same ids (a day's users are in most of its hours): shards picked by a second hash of the
/// id, each behind a lock, each worker's inserts buffered per shard ([`FlagsBuffer`]) and
/// taken in a lock at a time.
pub struct SharedFlags {
    shards: Vec<std::sync::Mutex<U64Flags>>,
}

const SHARDS: usize = 64;
const SHARD_BUFFER: usize = 256;

fn shard_of(id: u64) -> usize {
    // Not the multiplier of the shards' own slots: a shard's ids must spread over its table.
    (id.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 58) as usize
}

fn locked(m: &std::sync::Mutex<U64Flags>) -> std::sync::MutexGuard<'_, U64Flags> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SharedFlags {
    /// A set sized for `n` ids.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| std::sync::Mutex::new(U64Flags::with_capacity(n / SHARDS)))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| locked(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids with their flags, sorted by id; each shard is freed once read.
    pub fn into_sorted(self) -> Vec<(u64, u8)> {
        let mut shards: Vec<U64Flags> = self
            .shards
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .collect();
        let mut v = Vec::with_capacity(shards.iter().map(U64Flags::len).sum());
        for shard in &mut shards {
            v.extend(std::mem::take(shard).iter());
        }
        v.sort_unstable_by_key(|e| e.0);
        v
    }
}

/// A worker's inserts into a [`SharedFlags`], buffered per shard; [`FlagsBuffer::flush`]
/// (or dropping it) hands the rest over.
pub struct FlagsBuffer {
    shared: Arc<SharedFlags>,
    pending: Vec<Vec<(u64, u8)>>,
}

impl FlagsBuffer {
    pub fn new(shared: Arc<SharedFlags>) -> Self {
        Self {
            shared,
            pending: vec![Vec::new(); SHARDS],
        }
    }

    /// Adds `flags` (not 0) to those of `id`.
    #[inline]
    pub fn insert(&mut self, id: u64, flags: u8) {
        let s = shard_of(id);
        let p = &mut self.pending[s];
        p.push((id, flags));
        if p.len() >= SHARD_BUFFER {
            self.flush_shard(s);
        }
    }

    fn flush_shard(&mut self, s: usize) {
        let mut shard = locked(&self.shared.shards[s]);
        for (id, flags) in self.pending[s].drain(..) {
            shard.insert(id, flags);
        }
    }

    pub fn flush(&mut self) {
        for s in 0..SHARDS {
            if !self.pending[s].is_empty() {
                self.flush_shard(s);
            }
        }
    }
}

impl Drop for FlagsBuffer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Maps `f` over `items` on every core (scoped threads), keeping the order: each item is
/// taken by the next free thread, so items of unequal cost (say, a job's figures beside its
/// days' encodings) balance out.
pub fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = cores().min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let slots: Vec<std::sync::Mutex<Option<T>>> = items
        .into_iter()
        .map(|t| std::sync::Mutex::new(Some(t)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (f, slots, next) = (&f, &slots, &next);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(slot) = slots.get(i) else {
                            break out;
                        };
                        let item = slot
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take()
                            .expect("each item is taken once");
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    });
    done.sort_unstable_by_key(|d| d.0);
    debug_assert_eq!(done.len(), n);
    done.into_iter().map(|d| d.1).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_map_holds_each_id_once_with_all_its_flags() {
        let mut map = super::U64Flags::default();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000u64 {
            // Spread ids, sequential ids, repeats and 0.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for id in [x, i, i / 3, x % 7, (i % 50) << 40] {
                let flags = 1u8 << (x % 5);
                map.insert(id, flags);
                *model.entry(id).or_insert(0u8) |= flags;
            }
        }
        assert_eq!(map.len(), model.len());
        let mut halves = (super::U64Flags::default(), super::U64Flags::default());
        for (n, (id, flags)) in map.iter().enumerate() {
            let half = if n % 2 == 0 {
                &mut halves.0
            } else {
                &mut halves.1
            };
            half.insert(id, flags);
        }
        halves.0.merge(&halves.1);
        // Sized ahead, too small and large enough: the same map.
        let mut sized = [
            super::U64Flags::with_capacity(100),
            super::U64Flags::with_capacity(map.len()),
        ];
        for m in &mut sized {
            for (id, flags) in map.iter() {
                m.insert(id, flags);
            }
        }
        let want: Vec<(u64, u8)> = model.into_iter().collect();
        // Two threads filling one shared set, each every id with its own flags.
        let shared = std::sync::Arc::new(super::SharedFlags::with_capacity(10));
        std::thread::scope(|scope| {
            for t in 0..2u8 {
                let mut buffer = super::FlagsBuffer::new(shared.clone());
                let map = &map;
                scope.spawn(move || {
                    for (id, flags) in map.iter() {
                        // The second thread only each id's lowest flag: the union is all.
                        buffer.insert(
                            id,
                            if t == 0 {
                                flags
                            } else {
                                flags & flags.wrapping_neg()
                            },
                        );
                    }
                });
            }
        });
        let shared = std::sync::Arc::try_unwrap(shared)
            .ok()
            .expect("the buffers flushed and dropped");
        assert_eq!(shared.len(), want.len());
        assert_eq!(shared.into_sorted(), want);
        for m in sized {
            assert_eq!(m.into_sorted(), want);
        }
        assert_eq!(map.into_sorted(), want);
        assert_eq!(halves.0.into_sorted(), want);
        assert!(super::U64Flags::default().is_empty());
    }
}
