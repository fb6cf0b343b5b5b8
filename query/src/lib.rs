//! The query layer: the DataFusion session over the lake that jobs, the dashboard and
//! analysts share.
//!
//! [`session`] registers the lake's Delta tables by name; [`functions`] adds the SQL
//! functions (`window_funnel`, `hll_*`, `bitmap_*`) built on the same cores the jobs use:
//! [`funnel`] (how far a user got through ordered steps in a window) and [`sketch`]
//! (HyperLogLog++ with a fixed-seed hash, roaring bitmaps). [`tz`] cuts instants into days of
//! the report time zone.

pub mod forecast;
pub mod functions;
pub mod funnel;
pub mod guard;
pub mod output;
pub mod session;
pub mod sketch;
pub mod tz;

/// What went wrong while opening or querying the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lake(#[from] lake::Error),
    #[error(transparent)]
    Delta(#[from] deltalake::DeltaTableError),
    #[error(transparent)]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl lake::Classify for Error {
    fn class(&self) -> lake::Class {
        match self {
            Error::Lake(e) => e.class(),
            Error::Delta(e) => lake::error::delta_class(e),
            Error::DataFusion(e) => datafusion_class(e),
        }
    }
}

/// A DataFusion error: what it wraps decides (a lake's, an object store's, a file's); memory
/// or spill limits are the machine's; the rest (plans over our own tables) is ours.
pub fn datafusion_class(e: &deltalake::datafusion::error::DataFusionError) -> lake::Class {
    use deltalake::datafusion::error::DataFusionError as D;
    match e {
        D::ResourcesExhausted(_) => lake::Class::Unavailable,
        D::ObjectStore(e) => lake::error::object_store_class(e),
        D::IoError(e) => lake::error::io_class(e),
        D::Context(_, inner) | D::Diagnostic(_, inner) => datafusion_class(inner),
        D::Shared(inner) => datafusion_class(inner),
        D::External(inner) => {
            if let Some(e) = inner.downcast_ref::<lake::Error>() {
                lake::Classify::class(e)
            } else if let Some(e) = inner.downcast_ref::<deltalake::DeltaTableError>() {
                lake::error::delta_class(e)
            } else {
                lake::Class::Internal
            }
        }
        _ => lake::Class::Internal,
    }
}
