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
