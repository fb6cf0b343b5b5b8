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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_without_changing_content() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    // Tiny buffers: many commits, many small files.
    let (code, out, err) = spacepulse(&[
        "ingest",
        "--from-file",
        SAMPLE,
        "--lake",
        lake,
        "--flush-rows",
        "20",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let before = lake::ledger::Ledger::read(&lake::tables::Lake::new(lake).unwrap())
        .await
        .unwrap();
    let (_, ids_before) = event_id_counts(&dir.path().join("lake")).await;
    let (code, out, err) = spacepulse(&["lake", "compact", "--lake", lake]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("events: "), "{out}");
    let after = lake::ledger::Ledger::read(&lake::tables::Lake::new(lake).unwrap())
        .await
        .unwrap();
    assert!(
        after.events_files < before.events_files,
        "{} files before, {} after",
        before.events_files,
        after.events_files
    );
    assert_eq!(after.events_rows, before.events_rows);
    let (total, ids_after) = event_id_counts(&dir.path().join("lake")).await;
    assert_eq!(total, 267);
    assert_eq!(ids_after, ids_before);
    // The compaction commit adds files without a change of content (what incremental jobs rely on).
    let optimize = after
        .commits
        .iter()
        .find(|c| c.table == "events" && c.operation == "OPTIMIZE")
        .expect("an OPTIMIZE commit");
    assert!(optimize.files_added > 0 && optimize.files_removed > 0 && !optimize.data_change);
    // The offsets covered are unchanged.
    let covered = |l: &lake::ledger::Ledger| {
        l.partitions
            .iter()
            .map(|p| p.events_covered)
            .collect::<Vec<_>>()
    };
    assert_eq!(covered(&after), covered(&before));
}
