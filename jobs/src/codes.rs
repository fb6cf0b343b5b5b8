//! The user dictionary, `metrics/user_codes`: a dense code (0, 1, 2, ...) for every user id
//! the activity job has seen, given once and never changed, so that a day's users are stored
//! as a 32-bit roaring bitmap of codes rather than of ids (the global dictionary that Kylin
//! and Doris build for exact distinct counts). Ids spread over 64 bits (hashed ids) cost a
//! treemap bucket each, ~22 bytes an id and a cell past Parquet's 2 GiB at ~100 million users
//! a day; codes of a day with most of the pool active cost about a bit each.
//!
//! Codes only grow: a run gives the ids it has not seen the next codes in increasing id order
//! and appends them in one commit that records the new count as the `txn` version of
//! `jobs/user_codes`, made only if the table is still at the count it read (two runs at once:
//! one fails with a conflict). The dictionary is committed before the bitmaps that use it, so
//! a run stopped between the two leaves codes no bitmap uses, never the reverse.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type};
use futures::TryStreamExt;
use lake::tables::{Lake, covered};

use crate::publish::{Scope, publish_after, schema, table_name};
use crate::{Error, Result};

pub const TABLE: &str = "user_codes";
const APP: &str = "jobs/user_codes";

pub fn table_schema() -> arrow::datatypes::SchemaRef {
    schema(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("code", DataType::Int64, false),
    ])
}

/// The dictionary as read from the lake, plus the codes given in this run.
#[derive(Debug, Default)]
pub struct UserCodes {
    /// Every coded id (as `u64`), sorted, and each one's code.
    ids: Vec<u64>,
    codes: Vec<u32>,
    /// The `txn` version the table was read at (its count of codes); `None`: no table.
    read_at: Option<i64>,
    /// The table's Delta id (set when it is created): bitmaps coded with this dictionary say
    /// so under [`UserCodes::app`].
    table_id: Option<String>,
    /// Files in the table as read.
    files: usize,
}

/// The `txn` application id under which a metric table records that its bitmaps hold codes
/// of dictionary table `id` (the version: the count of codes when it was written).
fn app_of(table_id: &str) -> String {
    format!("{APP}/{table_id}")
}

/// A dictionary of more appended files than this is rewritten as one.
const MAX_FILES: usize = 64;

/// The `txn` application id under which a table coded with the lake's current dictionary
/// records so; `None` if the lake has no dictionary.
pub async fn current_app(lake: &Lake) -> Result<Option<String>> {
    Ok(match lake.open(&table_name(TABLE)).await? {
        Some(t) => Some(app_of(t.snapshot()?.metadata().id())),
        None => None,
    })
}

impl UserCodes {
    /// The lake's dictionary (empty if it has none yet).
    pub async fn load(lake: &Lake) -> Result<Self> {
        let Some(table) = lake.open(&table_name(TABLE)).await? else {
            return Ok(Self::default());
        };
        let read_at = covered(&table, APP).await?;
        let table_id = Some(table.snapshot()?.metadata().id().to_string());
        let files = table.snapshot()?.log_data().num_files();
        let session = query::session::context();
        query::session::register(&session, TABLE, &table).await?;
        let mut stream = session
            .sql("SELECT user_id, code FROM user_codes")
            .await?
            .execute_stream()
            .await?;
        let mut pairs: Vec<(u64, u32)> = Vec::new();
        while let Some(batch) = stream.try_next().await? {
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let codes = batch.column(1).as_primitive::<Int64Type>();
            pairs.reserve(batch.num_rows());
            for (id, code) in ids.values().iter().zip(codes.values()) {
                let code = u32::try_from(*code)
                    .map_err(|_| Error::Internal(format!("{TABLE}: code {code} out of range")))?;
                pairs.push((*id as u64, code));
            }
        }
        // Each append is sorted: a stable sort merges the runs.
        pairs.sort_by_key(|p| p.0);
        let count = pairs.len() as i64;
        if read_at.unwrap_or(0) != count || pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::Internal(format!(
                "{TABLE}: {count} rows but the table records {read_at:?} codes, or an id twice"
            )));
        }
        let (ids, codes) = pairs.into_iter().unzip();
        Ok(Self {
            ids,
            codes,
            read_at,
            table_id,
            files,
        })
    }

    /// The `txn` application id a table coded with this dictionary records (see
    /// [`current_app`]); `None` until the dictionary exists.
    pub fn app(&self) -> Option<String> {
        self.table_id.as_deref().map(app_of)
    }

    /// The number of codes given (the next code).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Calls `f` with each of `sorted` (ids sorted, distinct) and its code, `None` for an id
    /// not in the dictionary: one merge of the two sorted lists.
    pub fn each_code(
        &self,
        sorted: impl Iterator<Item = u64>,
        mut f: impl FnMut(u64, Option<u32>),
    ) {
        let mut j = 0;
        for id in sorted {
            // Gallop past the dictionary's smaller ids: a day's users are a small share of
            // a large dictionary.
            if j < self.ids.len() && self.ids[j] < id {
                let mut step = 1;
                while j + step < self.ids.len() && self.ids[j + step] < id {
                    j += step;
                    step *= 2;
                }
                let end = (j + step + 1).min(self.ids.len());
                j += self.ids[j..end].partition_point(|&x| x < id);
            }
            if j < self.ids.len() && self.ids[j] == id {
                f(id, Some(self.codes[j]));
            } else {
                f(id, None);
            }
        }
    }

    /// Gives `new` (ids sorted, distinct, none in the dictionary) the next codes, in their
    /// order, and appends them to the lake's table in one commit.
    pub async fn add(&mut self, lake: &Lake, new: Vec<u64>) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let first = self.ids.len();
        let total = first + new.len();
        if total > u32::MAX as usize {
            return Err(Error::Internal(format!(
                "{TABLE}: more than {} distinct users",
                u32::MAX
            )));
        }
        let ids = Int64Array::from_iter_values(new.iter().map(|&u| u as i64));
        let codes = Int64Array::from_iter_values(first as i64..total as i64);
        let batch = RecordBatch::try_new(table_schema(), vec![Arc::new(ids), Arc::new(codes)])?;
        self.commit(lake, vec![batch], &Scope::Append, total)
            .await?;
        self.files += 1;
        // The two sorted lists merged.
        let (old_ids, old_codes) = (
            std::mem::take(&mut self.ids),
            std::mem::take(&mut self.codes),
        );
        let (mut ids, mut codes) = (Vec::with_capacity(total), Vec::with_capacity(total));
        let mut old = old_ids.into_iter().zip(old_codes).peekable();
        for (id, code) in new.into_iter().zip(first as u32..) {
            while let Some(o) = old.next_if(|o| o.0 < id) {
                ids.push(o.0);
                codes.push(o.1);
            }
            ids.push(id);
            codes.push(code);
        }
        for o in old {
            ids.push(o.0);
            codes.push(o.1);
        }
        (self.ids, self.codes) = (ids, codes);
        if self.files > MAX_FILES {
            self.compact(lake).await?;
        }
        Ok(())
    }

    /// Commits `batches` to the table, only on top of the state it was read at, recording
    /// `total` codes.
    async fn commit(
        &mut self,
        lake: &Lake,
        batches: Vec<RecordBatch>,
        scope: &Scope,
        total: usize,
    ) -> Result<()> {
        publish_after(
            lake,
            TABLE,
            table_schema(),
            batches,
            scope,
            &[(APP.to_string(), total as i64)],
            Some((APP, self.read_at)),
        )
        .await
        .map_err(|e| match e {
            Error::Delta(deltalake::DeltaTableError::Transaction { source }) => Error::Conflict(
                format!("{TABLE}: another run appended at the same time ({source}); run again"),
            ),
            other => other,
        })?;
        self.read_at = Some(total as i64);
        if self.table_id.is_none()
            && let Some(t) = lake.open(&table_name(TABLE)).await?
        {
            self.table_id = Some(t.snapshot()?.metadata().id().to_string());
        }
        Ok(())
    }

    /// Rewrites the table as one file sorted by id (every run appends one).
    async fn compact(&mut self, lake: &Lake) -> Result<()> {
        let ids = Int64Array::from_iter_values(self.ids.iter().map(|&u| u as i64));
        let codes = Int64Array::from_iter_values(self.codes.iter().map(|&c| i64::from(c)));
        let batch = RecordBatch::try_new(table_schema(), vec![Arc::new(ids), Arc::new(codes)])?;
        let total = self.ids.len();
        self.commit(lake, vec![batch], &Scope::All, total).await?;
        self.files = 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes_of(dict: &UserCodes, ids: &[u64]) -> Vec<Option<u32>> {
        let mut out = Vec::new();
        dict.each_code(ids.iter().copied(), |_, c| out.push(c));
        out
    }

    #[tokio::test]
    async fn codes_are_given_once_and_a_second_writer_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path().to_str().unwrap()).unwrap();
        let mut first = UserCodes::load(&lake).await.unwrap();
        assert!(first.is_empty());
        first.add(&lake, vec![3, 10, u64::MAX]).await.unwrap();
        // Two readers of the same state: the first to append wins, the other conflicts.
        let mut a = UserCodes::load(&lake).await.unwrap();
        let mut b = UserCodes::load(&lake).await.unwrap();
        assert_eq!(a.len(), 3);
        a.add(&lake, vec![4, 1 << 63]).await.unwrap();
        let lost = b.add(&lake, vec![5]).await.unwrap_err();
        assert!(matches!(lost, Error::Conflict(_)), "{lost}");
        // Codes in order of the ids within an append, never reused; lookups from the lake
        // and in memory after an append agree.
        let ids = [3, 4, 5, 10, 1 << 63, u64::MAX];
        let want = vec![Some(0), Some(3), None, Some(1), Some(4), Some(2)];
        assert_eq!(codes_of(&a, &ids), want);
        let read = UserCodes::load(&lake).await.unwrap();
        assert_eq!(codes_of(&read, &ids), want);
        assert_eq!(read.len(), 5);
        // Past MAX_FILES appends the table is one file again, the codes unchanged.
        let mut d = UserCodes::load(&lake).await.unwrap();
        for k in 0..MAX_FILES as u64 {
            d.add(&lake, vec![1_000 + 2 * k, 1_001 + 2 * k])
                .await
                .unwrap();
        }
        let read = UserCodes::load(&lake).await.unwrap();
        assert!(read.files < 4, "{} files", read.files);
        assert_eq!(
            (read.ids.clone(), read.codes.clone()),
            (d.ids.clone(), d.codes.clone())
        );
        assert_eq!(codes_of(&read, &ids), want);
        assert_eq!(
            codes_of(&read, &[1_000, 1_127]),
            vec![Some(5), Some(5 + 127)]
        );
        assert_eq!(read.app(), d.app());
        // A dictionary much larger than the ids looked up: the gallop finds each.
        let big = UserCodes {
            ids: (0..10_000u64).map(|i| i * 7).collect(),
            codes: (0..10_000u32).collect(),
            ..Default::default()
        };
        let probe: Vec<u64> = vec![0, 6, 7, 700, 701, 69_993, 69_994];
        assert_eq!(
            codes_of(&big, &probe),
            vec![Some(0), None, Some(1), Some(100), None, Some(9_999), None]
        );
    }
}
