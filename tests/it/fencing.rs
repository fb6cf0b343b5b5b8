//! Zombie fencing: a writer whose partition was committed by another writer meanwhile must not
//! commit, both at our compare-and-set and at Delta's conflict checker.

use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::{DeltaOperation, SaveMode};
use ingest::writer::{LakeWriter, WriterOptions};
use lake::tables::{Lake, Table};
use spacepulse_tests::{event_id_counts, valid_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_is_fenced_and_resumes_where_the_lake_stands() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(&dir.path().to_string_lossy()).unwrap();
    let events = valid_events("f", 20, 1);
    let mut a = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    let mut b = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    assert_eq!(a.resume_at("events", 0).await.unwrap(), None);
    assert_eq!(b.resume_at("events", 0).await.unwrap(), None);
    for (i, e) in events.iter().enumerate().take(10) {
        a.push("events", 0, i as i64, e.as_bytes(), 1_430_150_400_000)
            .unwrap();
        b.push("events", 0, i as i64, e.as_bytes(), 1_430_150_400_000)
            .unwrap();
    }
    assert_eq!(a.flush().await.unwrap().len(), 1);
    let err = b.flush().await.unwrap_err();
    assert!(
        matches!(err, ingest::Error::Fenced(_)),
        "expected fenced, got {err}"
    );
    // The zombie re-reads its position and continues from there, adding nothing twice.
    b.reset();
    assert_eq!(b.resume_at("events", 0).await.unwrap(), Some(10));
    for (i, e) in events.iter().enumerate() {
        b.push("events", 0, i as i64, e.as_bytes(), 1_430_150_400_000)
            .unwrap();
    }
    b.flush().await.unwrap();
    let (total, ids) = event_id_counts(dir.path()).await;
    assert_eq!(total, 20);
    assert_eq!(ids.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_refuses_a_second_commit_of_the_same_app_id_from_a_stale_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(&dir.path().to_string_lossy()).unwrap();
    lake.open_or_create(Table::Events).await.unwrap();
    let first = lake.open("events").await.unwrap().unwrap();
    let second = lake.open("events").await.unwrap().unwrap();
    let commit = |table: deltalake::DeltaTable, version: i64| async move {
        let props = CommitProperties::default()
            .with_application_transaction(Transaction::new("spacepulse/events/0", version));
        let op = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        CommitBuilder::from(props)
            .build(Some(table.snapshot().unwrap()), table.log_store(), op)
            .await
            .map(|_| ())
    };
    commit(first, 5).await.unwrap();
    let err = commit(second, 9).await.unwrap_err();
    let err = ingest::Error::from(err);
    assert!(
        matches!(err, ingest::Error::Fenced(_)),
        "expected a concurrent-transaction conflict, got {err}"
    );
}

/// A broker that skips offsets (Tansu 0.6's in-memory engine drops the rest of a batch a fetch
/// starts inside) cannot hide it: the writer counts the offsets that never arrived, within a
/// run and across a resume, and the ledger shows the partition's published offsets as two
/// ranges around each gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_a_broker_skipped_are_counted_and_the_ledger_shows_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(&dir.path().to_string_lossy()).unwrap();
    let events = valid_events("g", 30, 2);
    let mut w = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    assert_eq!(w.resume_at("events", 0).await.unwrap(), None);
    // Offsets 0..=9, then 13..=19: 10, 11 and 12 never arrive.
    for i in (0..10).chain(13..20) {
        w.push(
            "events",
            0,
            i,
            events[i as usize].as_bytes(),
            1_430_150_400_000,
        )
        .unwrap();
    }
    assert_eq!(w.stats.gaps, 3);
    w.flush().await.unwrap();
    // A new writer resumes at 20 but the broker's first message is 25.
    let mut w = LakeWriter::open(&lake, WriterOptions::default())
        .await
        .unwrap();
    assert_eq!(w.resume_at("events", 0).await.unwrap(), Some(20));
    for i in 25..30 {
        w.push(
            "events",
            0,
            i,
            events[i as usize].as_bytes(),
            1_430_150_400_000,
        )
        .unwrap();
    }
    assert_eq!(w.stats.gaps, 5);
    assert!(
        w.stats.line().contains("5 offsets never arrived"),
        "{}",
        w.stats.line()
    );
    w.flush().await.unwrap();
    let ledger = lake::ledger::Ledger::read(&lake).await.unwrap();
    let p = &ledger.partitions[0];
    assert_eq!(p.ranges, vec![(0, 19), (25, 29)]);
    assert_eq!(p.events, 22);
}
