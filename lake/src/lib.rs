//! The lake: the contract every spacepulse stage shares.
//!
//! A Kafka message is one JSON event ([`event`]). The [`decode::Decoder`] validates it and
//! appends it straight into Arrow column builders, or turns it into a [`decode::Rejection`]
//! that names the field and the problem. Accepted events land in the `events` Delta table,
//! rejections in `rejected` ([`tables`]); both record, per Kafka topic-partition or backfill
//! file, the last offset they cover in `txn` actions of the same commit. [`ledger`] reads
//! those commits back so that anyone can reconcile Kafka with the lake.

pub mod decode;
pub mod error;
pub mod event;
pub mod ledger;
pub mod registry;
pub mod tables;
pub mod txns;

pub use error::{Class, Classify, Error, Result};

/// `s` as a label value in Prometheus's text format (backslash, double quote and newline
/// escaped), for every process's `/metrics`.
pub fn prometheus_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
