//! Datasets: realistic events at any size, the same every time, for every later stage.
//!
//! [`generate`] makes a deterministic stream with the platform's shapes (daily cycle in China
//! time, May Day upload peaks, the `redmi-launch` reservation curve, ads, follows, and mess on
//! request) into a [`generate::Sink`]: NDJSON, Parquet or Kafka ([`sinks`], [`produce`]), and
//! bookkeeps a [`generate::Manifest`] of the figures that can be known exactly. The shipped
//! sample and the hand-made fixtures (`datasets/fixtures/`) serve the quick start and tests.

pub mod error;
pub mod generate;
pub mod produce;
pub mod rng;
pub mod sinks;

pub use error::{Error, Result};

/// The shipped sample: a few hundred events, valid and deliberately bad, in NDJSON.
pub const SAMPLE_NDJSON: &str = include_str!("../sample/events.ndjson");
