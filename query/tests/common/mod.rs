//! What the query crate's test targets share: a lake backfilled from the fixture, and a
//! query's rows as text.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::prelude::SessionContext;

pub fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt")
}

/// Runs `sql` (through the read-only guard analysts' SQL goes through when `guarded`).
pub async fn batches(
    ctx: &SessionContext,
    sql: &str,
    guarded: bool,
) -> Result<Vec<RecordBatch>, String> {
    if guarded {
        let planned = query::guard::plan(ctx, sql)
            .await
            .map_err(|e| e.to_string())?;
        let stream = planned.execute().map_err(|e| e.to_string())?;
        futures::TryStreamExt::try_collect::<Vec<_>>(stream)
            .await
            .map_err(|e| e.to_string())
    } else {
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        df.collect().await.map_err(|e| e.to_string())
    }
}

/// Each row's cells as Arrow displays them, NULL as `NULL`.
pub fn cells(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    out
}

/// Each row's cells separated by one space.
#[allow(dead_code)]
pub async fn rows(ctx: &SessionContext, sql: &str, guarded: bool) -> Result<Vec<String>, String> {
    Ok(cells(&batches(ctx, sql, guarded).await?)
        .into_iter()
        .map(|r| r.join(" "))
        .collect())
}

/// A lake backfilled from the fixture: 7 events (one retried), one rejected line.
pub async fn fixture_lake() -> (tempfile::TempDir, lake::tables::Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake::tables::Lake::new(&dir.path().join("lake").to_string_lossy()).unwrap();
    let mut writer = ingest::writer::LakeWriter::open(&lake, Default::default())
        .await
        .unwrap();
    ingest::backfill::run(&mut writer, &slt_dir().join("lake/events.ndjson"), |_| {})
        .await
        .unwrap();
    (dir, lake)
}
