//! The lake's event files of given report days (or holding a column), and folds that read
//! them straight from Parquet: a job that needs no filter but the files' hours skips the query
//! planner and the per-file work of a general scan.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use query::tz::ReportTz;

use super::{Source, cores, joined};
use crate::changes::{Hour, hour_of_path};
use crate::pages::Parts;
use crate::{Error, Result};

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
