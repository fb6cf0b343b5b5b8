//! Errors of the lake crate.

/// What went wrong while opening, creating or reading the lake's tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user named a lake location that cannot be used.
    #[error("lake location {location:?}: {reason}")]
    BadLocation { location: String, reason: String },
    /// The table exists but was not written by spacepulse (or by an incompatible version).
    #[error("table {table}: {reason}")]
    Incompatible { table: String, reason: String },
    /// The registry refused a change or could not be read.
    #[error("registry: {0}")]
    Registry(String),
    #[error("registry: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Delta(#[from] deltalake::DeltaTableError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
