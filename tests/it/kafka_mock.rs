//! The Kafka path on librdkafka's in-process mock cluster: the fast tier.

use ingest::kafka::{self, KafkaOptions};
use ingest::writer::{LakeWriter, WriterOptions};
use lake::tables::Lake;
use rdkafka::mocking::MockCluster;
use spacepulse_tests::{event_id_counts, query, session};

fn options(brokers: &str, group: &str) -> KafkaOptions {
    KafkaOptions {
        brokers: brokers.to_string(),
        topic: "events".into(),
        group: group.into(),
        overrides: Vec::new(),
        until_caught_up: true,
    }
}

/// Consumes the topic into the lake at `dir` in `group` until caught up.
async fn consume(dir: &std::path::Path, brokers: &str, group: &str) -> ingest::stats::Stats {
    let lake = Lake::new(&dir.to_string_lossy()).unwrap();
    let writer = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    kafka::run(
        writer,
        &options(brokers, group),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_goes_through_kafka_once_even_when_consumed_again() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("events", 3, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let sample = std::io::Cursor::new(datasets::SAMPLE_NDJSON.as_bytes().to_vec());
    assert_eq!(
        datasets::produce::produce_lines(&brokers, "events", &[], sample)
            .await
            .unwrap(),
        275
    );

    let dir = tempfile::tempdir().unwrap();
    let stats = consume(dir.path(), &brokers, "g1").await;
    assert_eq!((stats.accepted, stats.rejected), (267, 8));

    // A new group starts from the earliest offsets; the lake's positions make it skip all.
    let stats = consume(dir.path(), &brokers, "g2").await;
    assert_eq!((stats.accepted, stats.rejected), (0, 0), "{}", stats.line());
    // The assignment started each partition where the lake stands: nothing was read again.
    assert_eq!((stats.read, stats.skipped), (0, 0), "{}", stats.line());

    // A new lake behind the group's committed offsets (g1 consumed everything) starts from
    // the beginning: the lake's positions, not the group's, say where to read.
    let fresh = tempfile::tempdir().unwrap();
    let stats = consume(fresh.path(), &brokers, "g1").await;
    assert_eq!(
        (stats.accepted, stats.rejected),
        (267, 8),
        "{}",
        stats.line()
    );
    assert_eq!(event_id_counts(fresh.path()).await.0, 267);

    let (total, ids) = event_id_counts(dir.path()).await;
    assert_eq!((total, ids.len()), (267, 260));
    let ctx = session(dir.path()).await;
    let r = query(&ctx, "SELECT count(*) AS n FROM rejected WHERE reason LIKE 'user_id: expected an unsigned integer%'").await;
    assert_eq!(r[0]["n"].as_i64(), Some(1));
    // Kafka's key is the user id.
    let parts = query(
        &ctx,
        "SELECT count(DISTINCT source_partition) AS p FROM events",
    )
    .await;
    assert!(
        parts[0]["p"].as_i64().unwrap() > 1,
        "keys spread over partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_produced_to_kafka_arrives_as_the_manifest_says() {
    let _turn = spacepulse_tests::HEAVY.lock().await;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("events", 2, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gen");
    let (code, o, e) = spacepulse_tests::spacepulse(&[
        "datasets",
        "generate",
        "--days",
        "2",
        "--scale",
        "0.0002",
        "--dirty",
        "--format",
        "kafka",
        "--brokers",
        &brokers,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let lake = Lake::new(&dir.path().join("lake").to_string_lossy()).unwrap();
    let writer = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    let stats = kafka::run(
        writer,
        &options(&brokers, "gen"),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    let malformed: u64 = manifest["malformed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(stats.accepted, manifest["valid_messages"].as_u64().unwrap());
    assert_eq!(stats.rejected, malformed);
    let (_, ids) = event_id_counts(&dir.path().join("lake")).await;
    assert_eq!(
        ids.len() as u64,
        manifest["distinct_events"].as_u64().unwrap()
    );
}
