//! Counters an ingest run reports as progress and in its summary.

use std::time::{Duration, Instant};

/// Running totals of one ingest process.
#[derive(Debug, Clone)]
pub struct Stats {
    pub started: Instant,
    /// Messages read, including those skipped because the lake already covered them.
    pub read: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Messages the lake already covered (replayed after a restart or rebalance).
    pub skipped: u64,
    pub commits: u64,
    pub files: u64,
    /// Buffers dropped because another writer had committed the same partitions.
    pub fenced: u64,
    /// Offsets a partition skipped between two messages it delivered (or after the lake's
    /// position): compaction, transaction markers, or messages the broker lost.
    pub gaps: u64,
    /// Messages behind the partitions' high watermarks, when known.
    pub lag: Option<i64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            read: 0,
            accepted: 0,
            rejected: 0,
            skipped: 0,
            commits: 0,
            files: 0,
            fenced: 0,
            gaps: 0,
            lag: None,
        }
    }
}

impl Stats {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn rate(&self) -> f64 {
        let secs = self.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.accepted as f64 / secs
        } else {
            0.0
        }
    }

    /// One line for a progress display or a summary.
    pub fn line(&self) -> String {
        let lag = self.lag.map(|l| format!(", lag {l}")).unwrap_or_default();
        format!(
            "{} events ({:.0}/s), {} rejected, {} skipped as already ingested, {} files in {} commits{}{}{}",
            self.accepted,
            self.rate(),
            self.rejected,
            self.skipped,
            self.files,
            self.commits,
            if self.fenced > 0 {
                format!(", {} fenced buffers re-read", self.fenced)
            } else {
                String::new()
            },
            if self.gaps > 0 {
                format!(", {} offsets never arrived", self.gaps)
            } else {
                String::new()
            },
            lag,
        )
    }
}
