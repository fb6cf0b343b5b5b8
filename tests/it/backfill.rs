//! Backfill from files through the binary: the shipped sample, twice, and compressed.

use std::io::Write;

use spacepulse_tests::{event_id_counts, query, session, spacepulse};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../datasets/sample/events.ndjson"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_backfills_once_even_when_ingested_twice() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let (code, out, err) = spacepulse(&["ingest", "--from-file", SAMPLE, "--lake", lake]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("267 events") && out.contains("8 rejected"),
        "summary: {out}"
    );
    // Ingesting the same file again adds nothing: its content names the source.
    let gz = dir.path().join("copy.ndjson.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(SAMPLE).unwrap()).unwrap();
    enc.finish().unwrap();
    let (code, out, err) = spacepulse(&["ingest", "--from-file", SAMPLE, "--lake", lake]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 events") && out.contains("275 skipped"),
        "second run: {out}"
    );

    let (total, ids) = event_id_counts(&dir.path().join("lake")).await;
    assert_eq!(total, 267);
    assert_eq!(ids.len(), 260);
    let ctx = session(&dir.path().join("lake")).await;
    let rejected = query(
        &ctx,
        "SELECT count(*) AS n, count(DISTINCT source_offset) AS d FROM rejected",
    )
    .await;
    assert_eq!(
        (rejected[0]["n"].as_i64(), rejected[0]["d"].as_i64()),
        (Some(8), Some(8))
    );

    // A gzip file is decoded too: its bytes differ, so it is a new source with the same events.
    let (code, out, err) = spacepulse(&[
        "ingest",
        "--from-file",
        gz.to_str().unwrap(),
        "--lake",
        lake,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("267 events") && out.contains("8 rejected"),
        "gzip run: {out}"
    );

    let (code, ledger, err) = spacepulse(&["lake", "ledger", "--lake", lake]);
    assert_eq!(code, 0, "{err}");
    assert!(ledger.contains("0..=274"), "ledger: {ledger}");
    assert!(
        ledger.contains("total: 534 events and 16 rejected"),
        "ledger: {ledger}"
    );
}
