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
    /// The registry refused a change or could not be read; `class` says whose fault it is.
    #[error("registry: {message}")]
    Registry { class: Class, message: String },
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

/// Who must act on an error. Every crate's error carries one; `main` turns it into an exit
/// code and the server into an HTTP status, each in one place ([`Class::exit_code`],
/// [`Class::http_status`]), so that a bug never passes for the caller's mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The caller's input (a flag, a request, a file) is wrong: they fix it.
    BadInput,
    /// What the caller named does not exist.
    NotFound,
    /// The caller may not do this.
    Forbidden,
    /// The state the caller assumed has changed (it exists already, another writer won).
    Conflict,
    /// Something outside is away or refuses (a broker, the disk, an object store, a lake or
    /// registry of another version): try again, or an operator acts.
    Unavailable,
    /// A bug in spacepulse.
    Internal,
}

impl Class {
    /// The process's exit code: 2 for a usage error (with a hint to `--help`), 1 otherwise.
    pub fn exit_code(self) -> u8 {
        match self {
            Class::BadInput => 2,
            _ => 1,
        }
    }

    /// The HTTP status of a request that failed so.
    pub fn http_status(self) -> u16 {
        match self {
            Class::BadInput => 400,
            Class::NotFound => 404,
            Class::Forbidden => 403,
            Class::Conflict => 409,
            Class::Unavailable => 503,
            Class::Internal => 500,
        }
    }

    /// The `code` of a JSON error body.
    pub fn code(self) -> &'static str {
        match self {
            Class::BadInput => "bad_request",
            Class::NotFound => "not_found",
            Class::Forbidden => "forbidden",
            Class::Conflict => "conflict",
            Class::Unavailable => "unavailable",
            Class::Internal => "internal",
        }
    }
}

/// An error that knows its [`Class`].
pub trait Classify {
    fn class(&self) -> Class;
}

impl Classify for Error {
    fn class(&self) -> Class {
        match self {
            Error::BadLocation { .. } => Class::BadInput,
            Error::Incompatible { .. } => Class::Unavailable,
            Error::Registry { class, .. } => *class,
            Error::Sqlite(e) => sqlite_class(e),
            Error::ObjectStore(e) => object_store_class(e),
            Error::Io(e) => io_class(e),
            Error::Delta(e) => delta_class(e),
            Error::Arrow(_) | Error::Json(_) | Error::Parquet(_) => Class::Internal,
        }
    }
}

/// A busy or locked SQLite file is another process's doing; anything else is ours.
fn sqlite_class(e: &rusqlite::Error) -> Class {
    match e.sqlite_error_code() {
        Some(
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::ReadOnly
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::PermissionDenied,
        ) => Class::Unavailable,
        _ => Class::Internal,
    }
}

/// The storage refusing or away is outside; a request we built wrong is ours.
pub fn object_store_class(e: &object_store::Error) -> Class {
    match e {
        object_store::Error::NotFound { .. } => Class::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            Class::Conflict
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::Generic { .. } => Class::Unavailable,
        _ => Class::Internal,
    }
}

/// A file that is not there, or not ours to read, is outside; so is a full disk.
pub fn io_class(e: &std::io::Error) -> Class {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => Class::NotFound,
        ErrorKind::PermissionDenied
        | ErrorKind::StorageFull
        | ErrorKind::QuotaExceeded
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::TimedOut
        | ErrorKind::Interrupted => Class::Unavailable,
        _ => Class::Internal,
    }
}

/// A Delta commit that lost a race is a conflict; storage trouble is outside.
pub fn delta_class(e: &deltalake::DeltaTableError) -> Class {
    use deltalake::DeltaTableError as D;
    match e {
        D::ObjectStore { source } => object_store_class(source),
        D::Io { source } => io_class(source),
        D::VersionAlreadyExists(_) | D::Transaction { .. } => Class::Conflict,
        D::NotATable(_) | D::InvalidTableLocation(_) => Class::BadInput,
        _ => Class::Internal,
    }
}
