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

impl lake::Classify for Error {
    fn class(&self) -> lake::Class {
        use lake::Class;
        match self {
            Error::Usage(_) | Error::Input { .. } => Class::BadInput,
            Error::Internal(_) | Error::Arrow(_) | Error::Parquet(_) => Class::Internal,
            Error::Fenced(_) => Class::Conflict,
            Error::Lake(e) => e.class(),
            Error::Delta(e) => lake::error::delta_class(e),
            Error::Kafka(_) => Class::Unavailable,
            Error::ObjectStore(e) => lake::error::object_store_class(e),
            Error::Io(e) => lake::error::io_class(e),
        }
    }
}
