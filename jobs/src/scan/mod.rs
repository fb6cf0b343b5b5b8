//! Reading the events of report days. Each file has one job:
//! - this one, a DataFusion scan of `events` pruned to the UTC hour partitions of the days, cut
//!   exactly at the days' bounds, with only the columns and event types a job needs, folded in
//!   parallel (one task per scan partition);
//! - [`files`]: the lake's event files of given days, folded straight from Parquet;
//! - [`source`]: one Parquet file of such a fold, its low-cardinality columns read as
//!   dictionaries (and [`crate::pages`] below it for their codes);
//! - [`columns`]: typed access to a batch's columns, and event-id keys;
//! - [`flags`]: the distinct-user map the folds fill.
//!
//! Work that is not I/O runs on rayon's pool ([`par_map`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::datafusion::physical_plan::execute_stream_partitioned;
use deltalake::datafusion::prelude::{Expr, SessionContext, col, lit};
use deltalake::datafusion::scalar::ScalarValue;
use futures::StreamExt;
use query::tz::ReportTz;

use crate::{Error, Result};

pub mod columns;
pub mod files;
pub mod flags;
pub mod source;

pub use columns::{Strs, distinct, event_key, ints, strs, times, types};
pub use files::{EventFile, files_of_days, files_with, fold_files, fold_sources};
pub use flags::{FlagsBuffer, SharedFlags, U64Flags};
pub use source::Source;

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

/// The folds' accumulators, in task order; the first error wins.
pub(crate) async fn joined<A>(tasks: Vec<tokio::task::JoinHandle<Result<A>>>) -> Result<Vec<A>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| Error::Internal(e.to_string()))??);
    }
    Ok(out)
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Maps `f` over `items` on rayon's pool, keeping the order; items are taken as threads come
/// free, so items of unequal cost (say, a job's figures beside its days' encodings) balance
/// out.
///
/// Called from a background thread ([`crate::background`]), the work runs on the background
/// pool, at the same lower priority.
pub fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    let map = || items.into_par_iter().with_max_len(1).map(f).collect();
    match crate::background::is_background()
        .then(crate::background::pool)
        .flatten()
    {
        Some(pool) => pool.install(map),
        None => map(),
    }
}
