//! The query crate's tests beyond the `.slt` files (`tests/slt.rs` runs those): partition
//! pruning, the guard's limits, the output formats.

use std::time::Duration;

use deltalake::datafusion::prelude::SessionContext;

mod common;

use common::{fixture_lake, rows};

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
