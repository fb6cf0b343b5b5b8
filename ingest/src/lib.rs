//! Ingest: Kafka topics and backfill files into the lake's `events` and `rejected` tables,
//! exactly once.
//!
//! Messages are decoded by the lake's validating decoder into Arrow builders
//! ([`writer::LakeWriter`]). When the buffer rolls (rows, bytes or age) it is written as zstd
//! Parquet files and committed to each table in one Delta commit that also carries, per
//! source partition, the last offset covered (`txn` actions) — the lake, not the consumer
//! group, is the truth about what was ingested. Before each commit the writer checks that
//! the table still covers exactly what it last committed itself (fencing), and Delta's
//! conflict checker refuses a commit if another writer committed the same partition after
//! that snapshot. [`kafka`] drives a consumer group through it, [`backfill`] NDJSON and Parquet
//! files (a file's source is a hash of its records, so a copy adds nothing), and
//! [`maintenance`] compacts and vacuums. `docs/ingest.md` states the protocol.

pub mod backfill;
pub mod error;
pub mod kafka;
pub mod maintenance;
pub mod stats;
pub mod writer;

pub use error::{Error, Result};
