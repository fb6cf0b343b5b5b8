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
