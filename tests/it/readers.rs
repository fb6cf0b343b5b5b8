//! What we write is read back by independent readers: the `deltalake` Python package and
//! DuckDB's delta extension.

use spacepulse_tests::{python_json, spacepulse};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../datasets/sample/events.ndjson"
);

const READ: &str = r#"
import json, os, sys, duckdb, deltalake, duckdb_extension_delta
lake = sys.argv[1]
events = deltalake.DeltaTable(os.path.join(lake, "events")).to_pyarrow_table()
rejected = deltalake.DeltaTable(os.path.join(lake, "rejected")).to_pyarrow_table()
ext = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "v" + duckdb.__version__, "delta.duckdb_extension")
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
q = lambda sql: con.execute(sql.replace("EVENTS", f"delta_scan('{lake}/events')").replace("REJECTED", f"delta_scan('{lake}/rejected')")).fetchall()
row = q("SELECT epoch_ms(ts), user_id, type, platform, region, date, hour FROM EVENTS WHERE event_id = 's-00002'")[0]
print(json.dumps({
  "py_rows": events.num_rows,
  "py_rejected": rejected.num_rows,
  "py_columns": events.column_names,
  "duck_rows": q("SELECT count(*) FROM EVENTS")[0][0],
  "duck_ids": q("SELECT count(DISTINCT event_id) FROM EVENTS")[0][0],
  "duck_photos": q("SELECT sum(photos) FROM EVENTS WHERE type = 'photo_upload'")[0][0],
  "duck_row": [str(v) for v in row],
  "duck_bad": q("SELECT CAST(raw AS VARCHAR), reason FROM REJECTED WHERE field IS NULL ORDER BY source_offset LIMIT 1")[0],
}))
"#;

#[test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "reads the lake back with Python's deltalake and DuckDB: scripts/test installs them and runs this tier"
)]
fn python_deltalake_and_duckdb_read_what_we_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (code, out, err) = spacepulse(&[
        "ingest",
        "--from-file",
        SAMPLE,
        "--lake",
        lake.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let got = python_json(READ, &[lake.to_str().unwrap()]);
    assert_eq!(got["py_rows"], 267);
    assert_eq!(got["py_rejected"], 8);
    assert_eq!(got["duck_rows"], 267);
    assert_eq!(got["duck_ids"], 260);
    assert!(
        got["py_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "event_id")
    );

    // The same figures computed from the source file by a plain pass.
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let mut photos = 0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("type").and_then(|t| t.as_str()) == Some("photo_upload")
            && v.get("event_id").is_some()
        {
            photos += v.get("photos").and_then(|p| p.as_i64()).unwrap_or(1);
        }
    }
    assert_eq!(got["duck_photos"], photos);
    let expected: serde_json::Value = text
        .lines()
        .find(|l| l.contains("\"s-00002\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    let ts = expected["ts"].as_i64().unwrap();
    let row = got["duck_row"].as_array().unwrap();
    assert_eq!(row[0], ts.to_string());
    assert_eq!(row[1], expected["user_id"].to_string());
    assert_eq!(row[2], expected["type"]);
    assert_eq!(row[3], expected["platform"]);
    let (date, hour) = lake::decode::partition_of(ts);
    assert_eq!(row[5], date);
    assert_eq!(row[6], hour.to_string());
    assert_eq!(got["duck_bad"][0], "not json at all");
    assert!(
        got["duck_bad"][1]
            .as_str()
            .unwrap()
            .starts_with("message: not valid JSON")
    );
}

const REACH: &str = r#"
import json, os, sys, duckdb, duckdb_extension_delta
lake, a, b, c, d = sys.argv[1:6]
ext = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "v" + duckdb.__version__, "delta.duckdb_extension")
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
q = lambda sql: con.execute(sql.replace("EVENTS", f"delta_scan('{lake}/events')")).fetchall()
# The report day in Asia/Shanghai (UTC+8 all year since 1991), without the ICU extension.
day = "CAST(make_timestamp((epoch_ms(ts) + 28800000) * 1000) AS DATE)"
ads = f"type = 'ad_impression' AND {day} BETWEEN DATE '{a}' AND DATE '{b}'"
camp = f"campaign_id IS NOT NULL AND type IN ('page_view', 'reserve', 'preorder') AND {day} BETWEEN DATE '{c}' AND DATE '{d}'"
print(json.dumps({
  "ads": {f"{r[0]}/{r[1]}": r[2] for r in q(f"SELECT advertiser_id, ad_id, count(DISTINCT user_id) FROM EVENTS WHERE {ads} GROUP BY ALL")},
  "advertisers": {r[0]: r[1] for r in q(f"SELECT advertiser_id, count(DISTINCT user_id) FROM EVENTS WHERE {ads} GROUP BY ALL")},
  "campaigns": {r[0]: r[1] for r in q(f"SELECT campaign_id, count(DISTINCT user_id) FROM EVENTS WHERE {camp} GROUP BY ALL")},
}))
"#;

/// Exact reach over a range of days, as the reports compute it (the days' roaring bitmaps
/// unioned), equals DuckDB's `count(DISTINCT user_id)` over the same events, for every ad,
/// advertiser and campaign, on generated data with hashed 63-bit ids, retries and late events.
#[test]
#[cfg_attr(
    not(feature = "external"),
    ignore = "compares with DuckDB: scripts/test installs it and runs this tier"
)]
fn exact_reach_over_a_range_equals_duckdbs_distinct_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let run = |args: &[&str]| {
        let (code, out, err) = spacepulse(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        out
    };
    run(&[
        "datasets",
        "generate",
        "--out",
        data.to_str().unwrap(),
        "--scale",
        "0.0002",
        "--days",
        "6",
        "--seed",
        "7",
        "--id-space",
        "u64",
        "--dirty",
    ]);
    run(&[
        "ingest",
        "--from-file",
        data.join("events.ndjson").to_str().unwrap(),
        "--lake",
        lake,
    ]);
    run(&["jobs", "run", "--lake", lake]);
    // Ads over three days; the campaigns over the launch day and the two before it.
    let (a, b, c, d) = ("2015-04-29", "2015-05-01", "2015-05-01", "2015-05-03");
    let duck = python_json(REACH, &[lake, a, b, c, d]);
    let ours = |sql: String| -> serde_json::Value {
        serde_json::from_str(&run(&["sql", "--lake", lake, "--format", "json", &sql])).unwrap()
    };
    let ads = ours(format!(
        "SELECT advertiser_id || '/' || ad_id AS k, bitmap_count(bitmap_union(reach_bitmap)) AS reach, \
         sum(reach) AS daily_sum FROM advertisers_daily \
         WHERE day BETWEEN DATE '{a}' AND DATE '{b}' GROUP BY advertiser_id, ad_id"
    ));
    let advertisers = ours(format!(
        "SELECT advertiser_id AS k, bitmap_count(bitmap_union(reach_bitmap)) AS reach, \
         sum(reach) AS daily_sum FROM advertisers_daily \
         WHERE day BETWEEN DATE '{a}' AND DATE '{b}' GROUP BY advertiser_id"
    ));
    let campaigns = ours(format!(
        "SELECT campaign_id AS k, bitmap_count(bitmap_union(reach_bitmap)) AS reach, \
         sum(reach) AS daily_sum FROM campaigns_daily \
         WHERE day BETWEEN DATE '{c}' AND DATE '{d}' GROUP BY campaign_id"
    ));
    for (what, rows) in [
        ("ads", ads),
        ("advertisers", advertisers),
        ("campaigns", campaigns),
    ] {
        let rows = rows.as_array().unwrap();
        let want = duck[what].as_object().unwrap();
        assert!(!want.is_empty(), "{what}: DuckDB found none");
        assert_eq!(rows.len(), want.len(), "{what}: {rows:?} vs {want:?}");
        let mut returned = false;
        for r in rows {
            let k = r["k"].as_str().unwrap();
            assert_eq!(r["reach"], want[k], "{what} {k}");
            returned |= r["daily_sum"].as_i64() > r["reach"].as_i64();
        }
        // Users came back on several days: a sum of the days would be wrong.
        assert!(returned, "{what}: no user on two days of the range");
    }
}
