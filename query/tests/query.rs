//! The query crate's tests. The `.slt` files in `tests/slt/` run against the functions in a
//! bare session; those in `tests/slt/lake/` against a lake backfilled from
//! `tests/slt/lake/events.ndjson`, through the read-only guard analysts' SQL goes through.
//! A small sqllogictest runner: `statement ok`, `statement error <text>`,
//! `query <types> [rowsort]` with expected rows after `----`, `query error <text>`. Values
//! print as Arrow displays them, NULL as `NULL`, columns separated by one space.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::prelude::SessionContext;

#[derive(Debug)]
enum Record {
    Statement {
        sql: String,
        error: Option<String>,
        line: usize,
    },
    Query {
        sql: String,
        error: Option<String>,
        rowsort: bool,
        expected: Vec<String>,
        line: usize,
    },
}

fn parse(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let head = lines[i].trim();
        if head.is_empty() || head.starts_with('#') {
            i += 1;
            continue;
        }
        let line = i + 1;
        let words: Vec<&str> = head.split_whitespace().collect();
        let error = (words.get(1) == Some(&"error")).then(|| words[2..].join(" "));
        i += 1;
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let sql = sql.join("\n");
        match words[0] {
            "statement" => out.push(Record::Statement { sql, error, line }),
            "query" => {
                let mut expected = Vec::new();
                if i < lines.len() && lines[i].trim() == "----" {
                    i += 1;
                    while i < lines.len() && !lines[i].trim().is_empty() {
                        expected.push(lines[i].trim().to_string());
                        i += 1;
                    }
                }
                let rowsort = words.contains(&"rowsort");
                out.push(Record::Query {
                    sql,
                    error,
                    rowsort,
                    expected,
                    line,
                });
            }
            other => panic!("line {line}: unknown record {other:?}"),
        }
    }
    out
}

async fn rows(ctx: &SessionContext, sql: &str, guarded: bool) -> Result<Vec<String>, String> {
    let batches = if guarded {
        let planned = query::guard::plan(ctx, sql)
            .await
            .map_err(|e| e.to_string())?;
        let stream = planned.execute().map_err(|e| e.to_string())?;
        futures::TryStreamExt::try_collect::<Vec<_>>(stream)
            .await
            .map_err(|e| e.to_string())?
    } else {
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        df.collect().await.map_err(|e| e.to_string())?
    };
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in &batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = fmts.iter().map(|f| f.value(r).to_string()).collect();
            out.push(cells.join(" "));
        }
    }
    Ok(out)
}

async fn run_file(path: &Path, ctx: &SessionContext, guarded: bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let records = parse(&text);
    assert!(!records.is_empty(), "{name}: no records");
    for r in records {
        match r {
            Record::Statement { sql, error, line } => match (rows(ctx, &sql, guarded).await, error)
            {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => {
                    assert!(
                        e.contains(&want),
                        "{name}:{line}: error {e:?} lacks {want:?}"
                    )
                }
                (Ok(_), Some(want)) => panic!("{name}:{line}: expected an error with {want:?}"),
                (Err(e), None) => panic!("{name}:{line}: {e}"),
            },
            Record::Query {
                sql,
                error,
                rowsort,
                expected,
                line,
            } => match (rows(ctx, &sql, guarded).await, error) {
                (Ok(mut got), None) => {
                    let mut want = expected;
                    if rowsort {
                        got.sort();
                        want.sort();
                    }
                    assert_eq!(got, want, "{name}:{line}: {sql}");
                }
                (Err(e), Some(want)) => {
                    assert!(
                        e.contains(&want),
                        "{name}:{line}: error {e:?} lacks {want:?}"
                    )
                }
                (Ok(got), Some(want)) => {
                    panic!("{name}:{line}: expected an error with {want:?}, got {got:?}")
                }
                (Err(e), None) => panic!("{name}:{line}: {e}"),
            },
        }
    }
}

fn slt_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "no .slt files in {}", dir.display());
    files
}

fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt")
}

#[tokio::test]
async fn slt_files() {
    for f in slt_files_in(&slt_dir()) {
        run_file(&f, &query::session::context(), false).await;
    }
}

/// A lake backfilled from the fixture: 7 events (one retried), one rejected line.
async fn fixture_lake() -> (tempfile::TempDir, lake::tables::Lake) {
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

#[tokio::test]
async fn lake_slt_files_through_the_guard() {
    let (_dir, lake) = fixture_lake().await;
    let ctx = query::session::session(&lake).await.unwrap();
    for f in slt_files_in(&slt_dir().join("lake")) {
        run_file(&f, &ctx, true).await;
    }
}

/// The files a query scans, from EXPLAIN ANALYZE's `count_files_scanned`.
async fn files_scanned(ctx: &SessionContext, sql: &str) -> usize {
    let text = rows(ctx, &format!("EXPLAIN ANALYZE {sql}"), true)
        .await
        .unwrap()
        .join("\n");
    let n = text
        .split("count_files_scanned=")
        .nth(1)
        .unwrap_or_else(|| panic!("no count_files_scanned in {text}"));
    n.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn predicates_on_ts_prune_the_hour_partitions() {
    let (_dir, lake) = fixture_lake().await;
    let ctx = query::session::session(&lake).await.unwrap();
    // The fixture's events sit in four hour folders.
    assert_eq!(
        files_scanned(&ctx, "SELECT count(*) FROM events WHERE user_id > 0").await,
        4
    );
    let one_hour = "SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2015-04-29 03:00:00' \
                    AND ts < TIMESTAMP '2015-04-29 04:00:00'";
    assert_eq!(files_scanned(&ctx, one_hour).await, 1);
    assert_eq!(rows(&ctx, one_hour, true).await.unwrap(), ["3"]);
    let after = "SELECT count(*) FROM events WHERE ts > TIMESTAMP '2015-04-30 00:00:00'";
    assert_eq!(files_scanned(&ctx, after).await, 1);
    // The same on the partition columns.
    assert_eq!(
        files_scanned(
            &ctx,
            "SELECT count(user_id) FROM events WHERE date = '2015-04-28' AND user_id > 0"
        )
        .await,
        2
    );
}

/// The query after one that hit a limit runs.
async fn next(g: &query::guard::Guarded) {
    let a = g
        .run("SELECT count(*) AS n FROM events_dedup")
        .await
        .expect("the next query runs");
    assert_eq!(a.rows, 1);
}

fn limited(ctx: SessionContext, limits: query::guard::Limits) -> query::guard::Guarded {
    query::guard::Guarded::new(ctx, limits)
}

#[tokio::test]
async fn each_limit_stops_its_query_and_the_next_query_runs() {
    use query::guard::{Limits, QueryError};
    let (_dir, lake) = fixture_lake().await;
    let ctx = query::session::session(&lake).await.unwrap();
    let small = Limits {
        timeout: Duration::from_secs(1),
        memory_bytes: 8 << 20,
        max_rows: 100,
        concurrent: 1,
        ..Limits::default()
    };
    let g = limited(ctx, small);
    // Rows: 101 rows of range(1000) are enough to know.
    match g.run("SELECT * FROM range(1000)").await {
        Err(e @ QueryError::TooManyRows(100)) => {
            assert_eq!(e.status(), 422);
            assert!(e.to_string().contains("row limit"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    next(&g).await;
    // Exactly at the limit is fine.
    assert_eq!(g.run("SELECT * FROM range(100)").await.unwrap().rows, 100);
    // Time: a scan of ten billion generated rows.
    match g.run("SELECT count(*) FROM range(10000000000)").await {
        Err(e @ QueryError::Timeout(_)) => {
            assert_eq!(e.status(), 408);
            assert!(e.to_string().contains("time limit"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    next(&g).await;
    // Memory: a hash table of ten million distinct keys in an 8 MiB pool.
    match g
        .run("SELECT value % 10000000 AS k, count(*) FROM range(20000000) GROUP BY 1 ORDER BY 2 DESC LIMIT 1")
        .await
    {
        Err(e @ QueryError::Memory { .. }) => {
            assert_eq!(e.status(), 422);
            assert!(e.to_string().contains("memory limit of 8 MiB"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    next(&g).await;
}

#[tokio::test]
async fn every_format_carries_the_same_rows() {
    use query::output::{Format, encode};
    let (_dir, lake) = fixture_lake().await;
    let ctx = query::session::session(&lake).await.unwrap();
    let g = limited(ctx, Default::default());
    let a = g
        .run("SELECT event_id, user_id, ts, photos FROM events_dedup ORDER BY event_id")
        .await
        .unwrap();
    assert_eq!(a.rows, 6);
    let ids = ["e1", "e2", "e3", "e4", "e5", "e6"];
    let csv =
        String::from_utf8(encode(Format::Csv, a.schema.clone(), &a.batches).unwrap()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "event_id,user_id,ts,photos");
    let csv_ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(csv_ids, ids);
    let json: serde_json::Value =
        serde_json::from_slice(&encode(Format::Json, a.schema.clone(), &a.batches).unwrap())
            .unwrap();
    let ndjson =
        String::from_utf8(encode(Format::Ndjson, a.schema.clone(), &a.batches).unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.as_array().unwrap(), &lines);
    assert_eq!(lines[2]["photos"], 3);
    assert_eq!(lines[0]["user_id"], 1);
    let ipc = encode(Format::Arrow, a.schema.clone(), &a.batches).unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let back: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(
        arrow::compute::concat_batches(&a.schema, &back).unwrap(),
        arrow::compute::concat_batches(&a.schema, &a.batches).unwrap()
    );
    let pq = encode(Format::Parquet, a.schema.clone(), &a.batches).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(pq),
    )
    .unwrap()
    .build()
    .unwrap();
    let back: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(
        arrow::compute::concat_batches(&a.schema, &back)
            .unwrap()
            .num_rows(),
        6
    );
    // An empty result still names its columns.
    let empty = g
        .run("SELECT event_id FROM events WHERE false")
        .await
        .unwrap();
    assert_eq!(
        encode(Format::Csv, empty.schema.clone(), &empty.batches).unwrap(),
        b"event_id\n"
    );
    assert_eq!(
        encode(Format::Json, empty.schema, &empty.batches).unwrap(),
        b"[]\n"
    );
}
