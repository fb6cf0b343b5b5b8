//! The query layer: the DataFusion session over the lake that jobs, the dashboard and
//! analysts share.
//!
//! [`session`] registers the lake's Delta tables by name; [`functions`] adds the SQL
//! functions (`window_funnel`, `hll_*`, `bitmap_*`) built on the same cores the jobs use:
//! [`funnel`] (how far a user got through ordered steps in a window) and [`sketch`]
//! (HyperLogLog++ with a fixed-seed hash, roaring bitmaps). [`tz`] cuts instants into days of
//! the report time zone.

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
