//! spacepulse's end-to-end tests: one binary, one module per area.

mod backfill;
mod contract;
mod demo;
mod fencing;
mod generator;
mod jobs;
mod kafka_mock;
mod readers;
mod run;
mod sessions;
mod tansu;
