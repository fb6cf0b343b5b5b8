//! Errors of the ingest crate.

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};

/// What stopped an ingest. [`Error::Usage`] is the user's to fix (a bad flag or input path);
/// [`Error::Internal`] is a bug of spacepulse's own (never a usage error: exit 1, not 2);
/// [`Error::Fenced`] means another writer committed the same source partition, and the writer
/// recovers from it by re-reading its position from the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("internal error (a bug in spacepulse): {0}")]
    Internal(String),
    #[error("{path}: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error("fenced: {0}")]
    Fenced(String),
    #[error(transparent)]
    Lake(#[from] lake::Error),
    #[error(transparent)]
    Delta(DeltaTableError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    ObjectStore(#[from] deltalake::ObjectStoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<DeltaTableError> for Error {
    fn from(e: DeltaTableError) -> Self {
        match e {
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
            } => Error::Fenced("another writer committed the same source partition".into()),
            other => Error::Delta(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
