//! Backfill from files through the binary: the shipped sample twice, compressed, with lines
//! appended; Parquet files, the generator's and hand-made ones with a bad row.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use spacepulse_tests::{event_id_counts, query, session, spacepulse, valid_events};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../datasets/sample/events.ndjson"
);

/// `spacepulse ingest --from-file PATH --lake LAKE`, which must succeed; returns its output.
fn ingest(path: &Path, lake: &Path) -> String {
    let (code, out, err) = spacepulse(&[
        "ingest",
        "--from-file",
        path.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "ingest {}: {out}{err}", path.display());
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// `data` as one zstd frame of raw (stored) blocks, which every zstd decoder reads: the test
/// crate has no zstd encoder.
fn zstd_stored(data: &[u8]) -> Vec<u8> {
    // Magic number; frame header: single segment, an 8-byte content size.
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let blocks: Vec<&[u8]> = data.chunks(1 << 17).collect();
    for (i, block) in blocks.iter().enumerate() {
        // Block header: size, type 0 (raw), last-block flag.
        let header = ((block.len() as u32) << 3) | u32::from(i + 1 == blocks.len());
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(block);
    }
    out
}

fn with_lines(base: &[u8], lines: &[String]) -> Vec<u8> {
    let mut text = base.to_vec();
    for l in lines {
        text.extend_from_slice(l.as_bytes());
        text.push(b'\n');
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_backfills_once_whatever_its_name_or_compression() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let out = ingest(Path::new(SAMPLE), &lake);
    assert!(
        out.contains("ingested 267 events") && out.contains("8 rejected"),
        "summary: {out}"
    );
    // The same records, whatever the bytes: the file again, gzip and zstd copies under other
    // names, Windows line ends. Each is the same source and adds nothing.
    let sample = std::fs::read(SAMPLE).unwrap();
    let crlf: Vec<u8> = sample
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
        .collect();
    let copies = [
        ("copy.ndjson.gz", gzip(&sample)),
        ("copy.ndjson.zst", zstd_stored(&sample)),
        ("windows.ndjson", crlf),
    ];
    let again = ingest(Path::new(SAMPLE), &lake);
    assert!(
        again.contains("ingested 0 events") && again.contains(", 0 rejected, 275 skipped"),
        "second run: {again}"
    );
    for (name, bytes) in copies {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = ingest(&path, &lake);
        assert!(
            out.contains("ingested 0 events") && out.contains(", 0 rejected, 275 skipped"),
            "{name}: {out}"
        );
    }

    let (total, ids) = event_id_counts(&lake).await;
    assert_eq!(total, 267);
    assert_eq!(ids.len(), 260);
    let ctx = session(&lake).await;
    let rejected = query(
        &ctx,
        "SELECT count(*) AS n, count(DISTINCT source_offset) AS d FROM rejected",
    )
    .await;
    assert_eq!(
        (rejected[0]["n"].as_i64(), rejected[0]["d"].as_i64()),
        (Some(8), Some(8))
    );

    let (code, ledger, err) = spacepulse(&["lake", "ledger", "--lake", lake.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(ledger.contains("0..=274"), "ledger: {ledger}");
    assert!(
        ledger.contains("total: 267 events and 8 rejected"),
        "ledger: {ledger}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appended_file_adds_only_its_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sample = std::fs::read(SAMPLE).unwrap();
    ingest(Path::new(SAMPLE), &lake);

    // The sample with three lines more, under another name: only they are new.
    let more = with_lines(&sample, &valid_events("appended", 3, 7));
    let more_path = dir.path().join("more.ndjson");
    std::fs::write(&more_path, &more).unwrap();
    let out = ingest(&more_path, &lake);
    assert!(
        out.contains("ingested 3 events") && out.contains(", 0 rejected, 275 skipped"),
        "appended: {out}"
    );
    let out = ingest(&more_path, &lake);
    assert!(
        out.contains("ingested 0 events") && out.contains(", 0 rejected, 278 skipped"),
        "appended, again: {out}"
    );
    // Two more lines, compressed: the longest file the lake holds is the prefix.
    let most = with_lines(&more, &valid_events("later", 2, 8));
    let most_path = dir.path().join("most.ndjson.gz");
    std::fs::write(&most_path, gzip(&most)).unwrap();
    let out = ingest(&most_path, &lake);
    assert!(
        out.contains("ingested 2 events") && out.contains(", 0 rejected, 278 skipped"),
        "appended twice: {out}"
    );

    let (total, ids) = event_id_counts(&lake).await;
    assert_eq!(total, 272);
    assert_eq!(ids.len(), 265);
    assert!(ids.keys().any(|id| id == "appended-2") && ids.keys().any(|id| id == "later-1"));
    let (code, ledger, err) = spacepulse(&["lake", "ledger", "--lake", lake.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for range in ["0..=274", "275..=277", "278..=279"] {
        assert!(ledger.contains(range), "{range} in ledger: {ledger}");
    }
    assert!(
        ledger.contains("total: 272 events and 8 rejected"),
        "ledger: {ledger}"
    );

    // A file and its longer version in one directory, into a new lake: the second file sees
    // the first one's commit.
    let input = dir.path().join("input");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("a.ndjson"), &sample).unwrap();
    std::fs::write(input.join("b.ndjson"), &more).unwrap();
    let lake2 = dir.path().join("lake2");
    let out = ingest(&input, &lake2);
    assert!(
        out.contains("ingested 270 events") && out.contains(", 8 rejected, 275 skipped"),
        "directory: {out}"
    );
    assert_eq!(event_id_counts(&lake2).await.0, 270);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generators_parquet_backfills_once() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("pq");
    let manifest = spacepulse_tests::generated_parquet(&generated);
    let valid = manifest["valid_messages"].as_u64().unwrap();
    let lake = dir.path().join("lake");
    // The generator's output directory as it is (its manifest.json is not data).
    let out = ingest(&generated, &lake);
    assert!(
        out.contains(&format!("ingested {valid} events")) && out.contains(", 0 rejected"),
        "summary: {out}"
    );
    let ctx = session(&lake).await;
    let e = query(
        &ctx,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events",
    )
    .await;
    assert_eq!(e[0]["n"].as_u64(), Some(valid));
    assert_eq!(e[0]["d"].as_u64(), manifest["distinct_events"].as_u64());
    let r = query(&ctx, "SELECT count(*) AS n FROM rejected").await;
    assert_eq!(r[0]["n"].as_u64(), Some(0));
    // Field for field what the file holds.
    let figures = "SELECT count(*) AS n, count(DISTINCT user_id) AS users, sum(photos) AS photos, \
         sum(amount_cents) AS cents, count(props) AS props, sum(length(props)) AS props_bytes, \
         count(region) AS regions, min(ts) AS first, max(ts) AS last FROM";
    let plain = deltalake::datafusion::prelude::SessionContext::new();
    plain
        .register_parquet(
            "g",
            generated.join("events.parquet").to_str().unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        query(&ctx, &format!("{figures} events")).await,
        query(&plain, &format!("{figures} g")).await
    );

    // Rewritten uncompressed in small row groups: the same rows, so the same source.
    let copy = dir.path().join("copy.parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(generated.join("events.parquet")).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_max_row_group_row_count(Some(1000))
        .build();
    let mut writer = None;
    for batch in reader {
        let batch = batch.unwrap();
        writer
            .get_or_insert_with(|| {
                ArrowWriter::try_new(
                    std::fs::File::create(&copy).unwrap(),
                    batch.schema(),
                    Some(props.clone()),
                )
                .unwrap()
            })
            .write(&batch)
            .unwrap();
    }
    writer.unwrap().close().unwrap();
    for path in [&copy, &generated] {
        let out = ingest(path, &lake);
        assert!(
            out.contains("ingested 0 events")
                && out.contains(&format!(", 0 rejected, {valid} skipped")),
            "{}: {out}",
            path.display()
        );
    }
    assert_eq!(event_id_counts(&lake).await.0, valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_parquet_row_is_rejected_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("user_id", DataType::UInt64, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("platform", DataType::Utf8, false),
        Field::new("photos", DataType::Int32, true),
        Field::new("props", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["p-0", "p-1", "p-2"])),
        Arc::new(
            TimestampMillisecondArray::from(vec![
                1_430_150_400_000,
                1_430_150_401_000,
                1_430_150_402_000,
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(UInt64Array::from(vec![1, 2, u64::MAX])),
        Arc::new(StringArray::from(vec!["photo_upload", "app_open", "like"])),
        Arc::new(StringArray::from(vec!["android", "symbian", "ios"])),
        Arc::new(Int32Array::from(vec![Some(3), None, None])),
        Arc::new(StringArray::from(vec![Some(r#"{"k":1}"#), None, None])),
        Arc::new(StringArray::from(vec![
            Some("not an event field"),
            None,
            None,
        ])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let file = input.join("bad.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let out = ingest(&input, &lake);
    assert!(
        out.contains("ingested 2 events") && out.contains(", 1 rejected"),
        "summary: {out}"
    );
    let ctx = session(&lake).await;
    let rejected = query(
        &ctx,
        "SELECT field, reason, source_offset, CAST(raw AS VARCHAR) AS raw FROM rejected",
    )
    .await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let r = &rejected[0];
    assert_eq!(r["field"], "platform");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with(r#"platform: unknown platform "symbian""#),
        "{r:?}"
    );
    assert_eq!(r["source_offset"].as_i64(), Some(1));
    // The row as the decoder saw it: the contract's fields, nulls left out.
    assert_eq!(
        r["raw"],
        r#"{"event_id":"p-1","ts":1430150401000,"user_id":2,"type":"app_open","platform":"symbian"}"#
    );
    let events = query(
        &ctx,
        "SELECT event_id, user_id, photos, props, date, hour, source_offset FROM events ORDER BY event_id",
    )
    .await;
    assert_eq!(events.len(), 2, "{events:?}");
    let (first, last) = (&events[0], &events[1]);
    assert_eq!(first["event_id"], "p-0");
    assert_eq!(first["user_id"].as_i64(), Some(1));
    assert_eq!(first["photos"].as_i64(), Some(3));
    assert_eq!(first["props"], r#"{"k":1}"#);
    assert_eq!(first["date"], "2015-04-27");
    assert_eq!(first["hour"].as_i64(), Some(16));
    assert_eq!(first["source_offset"].as_i64(), Some(0));
    // An unsigned id above 2^63, stored bit for bit.
    assert_eq!(last["event_id"], "p-2");
    assert_eq!(last["user_id"].as_i64(), Some(-1));
    assert!(last.get("props").is_none_or(|p| p.is_null()), "{last:?}");

    let out = ingest(&file, &lake);
    assert!(
        out.contains("ingested 0 events") && out.contains(", 0 rejected, 3 skipped"),
        "again: {out}"
    );

    // A corrupt Parquet file is an input error naming it; nothing is ingested.
    let broken = dir.path().join("broken.parquet");
    std::fs::write(&broken, b"PAR1 this is not a Parquet file").unwrap();
    let (code, out, err) = spacepulse(&[
        "ingest",
        "--from-file",
        broken.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("broken.parquet"), "{err}");
    // A directory with nothing to ingest is a usage error naming the flag.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not input").unwrap();
    let (code, out, err) = spacepulse(&[
        "ingest",
        "--from-file",
        empty.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--from-file") && err.contains(".parquet"),
        "{err}"
    );
    assert_eq!(event_id_counts(&lake).await.0, 2);
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

/// Past a checkpoint (every 50 commits) the lake's file sources are read from the checkpoint
/// and the commits after it: an appended file still adds only its new lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appended_file_is_recognised_past_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let first = dir.path().join("first.ndjson");
    std::fs::write(&first, with_lines(b"", &valid_events("c", 60, 3))).unwrap();
    // A commit per line: 60 commits, so the events table has a checkpoint at version 50.
    let (code, out, err) = spacepulse(&[
        "ingest",
        "--from-file",
        first.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
        "--flush-rows",
        "1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let checkpoints = std::fs::read_dir(lake.join("events/_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".checkpoint")
        })
        .count();
    assert!(checkpoints > 0, "no checkpoint after 60 commits");
    let longer = dir.path().join("longer.ndjson");
    let text = with_lines(&std::fs::read(&first).unwrap(), &valid_events("d", 4, 3));
    std::fs::write(&longer, text).unwrap();
    let out = ingest(&longer, &lake);
    assert!(
        out.contains("ingested 4 events") && out.contains(", 60 skipped"),
        "{out}"
    );
    assert_eq!(event_id_counts(&lake).await.0, 64);
}

/// A lake written before records were hashed names a file by its bytes as stored: the same
/// `.gz` file ingested again now adds nothing, and a half-ingested one goes on where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_an_earlier_version_ingested_are_not_ingested_again() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let text = with_lines(b"", &valid_events("old", 40, 5));
    let path = dir.path().join("old.ndjson.gz");
    std::fs::write(&path, gzip(&text)).unwrap();
    // As the earlier version did: the source is the hash of the stored bytes, the offset the
    // line number; it stopped after 25 lines.
    let legacy = format!(
        "file/{:032x}",
        ingest::backfill::legacy_hash(&path).unwrap()
    );
    let lake = lake::tables::Lake::new(&lake_dir.to_string_lossy()).unwrap();
    let mut writer = ingest::writer::LakeWriter::open(&lake, Default::default())
        .await
        .unwrap();
    assert_eq!(writer.resume_at(&legacy, 0).await.unwrap(), None);
    let now = chrono::Utc::now().timestamp_millis();
    for (i, line) in text.split(|b| *b == b'\n').take(25).enumerate() {
        writer.push(&legacy, 0, i as i64, line, now).unwrap();
    }
    writer.flush().await.unwrap();
    drop(writer);
    assert_eq!(event_id_counts(&lake_dir).await.0, 25);
    let out = ingest(&path, &lake_dir);
    assert!(out.contains("ingested 15 events"), "{out}");
    let out = ingest(&path, &lake_dir);
    assert!(out.contains("ingested 0 events"), "{out}");
    let (total, ids) = event_id_counts(&lake_dir).await;
    assert_eq!((total, ids.len()), (40, 40));
}
