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
    /// The same per assigned partition (empty while unknown).
    pub partition_lag: Vec<(i32, i64)>,
    /// The topic the partitions of `partition_lag` and `partition_watermark` belong to (a
    /// Kafka ingest's source), None for a backfill.
    pub topic: Option<String>,
    /// Per partition, the event-time watermark (epoch ms) its last commit recorded.
    pub partition_watermark: Vec<(i32, i64)>,
    /// Rejected messages by the field at fault (`message` when the message as a whole is).
    pub rejected_by_field: std::collections::BTreeMap<&'static str, u64>,
    /// How long commits took, from the buffer's hand-over to the Delta commit.
    pub commit_seconds: Histogram,
}

/// A Prometheus histogram of seconds with fixed buckets.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Counts per bucket of [`Histogram::BOUNDS`], not cumulative; the last one is +Inf.
    pub counts: [u64; 9],
    pub sum: f64,
}

impl Histogram {
    pub const BOUNDS: [f64; 8] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

    pub fn observe(&mut self, seconds: f64) {
        let i = Self::BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(Self::BOUNDS.len());
        self.counts[i] += 1;
        self.sum += seconds;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn absorb(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum += o.sum;
    }

    /// The `_bucket`, `_sum` and `_count` lines of metric `name`.
    pub fn render(&self, name: &str, out: &mut String) {
        use std::fmt::Write;
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c;
            let le = Self::BOUNDS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {}",
            self.sum,
            self.count()
        );
    }
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
            partition_lag: Vec::new(),
            topic: None,
            partition_watermark: Vec::new(),
            rejected_by_field: Default::default(),
            commit_seconds: Histogram::default(),
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

    /// Partition `p`'s watermark is at least `w`.
    pub fn raise_watermark(&mut self, p: i32, w: i64) {
        let marks = &mut self.partition_watermark;
        match marks.iter_mut().find(|(q, _)| *q == p) {
            Some(e) => e.1 = e.1.max(w),
            None => {
                marks.push((p, w));
                marks.sort_unstable();
            }
        }
    }

    /// Adds the counters of a later run of the same process (the latest's gauges win).
    pub fn absorb(&mut self, o: &Stats) {
        self.read += o.read;
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.skipped += o.skipped;
        self.commits += o.commits;
        self.files += o.files;
        self.fenced += o.fenced;
        self.gaps += o.gaps;
        if o.topic.is_some() {
            self.topic = o.topic.clone();
        }
        if o.lag.is_some() {
            self.lag = o.lag;
            self.partition_lag = o.partition_lag.clone();
        }
        for (p, w) in &o.partition_watermark {
            self.raise_watermark(*p, *w);
        }
        for (f, n) in &o.rejected_by_field {
            *self.rejected_by_field.entry(f).or_default() += n;
        }
        self.commit_seconds.absorb(&o.commit_seconds);
    }

    /// The ingester's metrics in Prometheus's text format; `restarts`: times it failed and
    /// started again.
    pub fn render_metrics(&self, restarts: u64, out: &mut String) {
        use std::fmt::Write;
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            out,
            "spacepulse_ingest_messages_total",
            "counter",
            "Messages the ingester read, by what became of them.",
        );
        for (outcome, n) in [
            ("accepted", self.accepted),
            ("rejected", self.rejected),
            ("skipped", self.skipped),
        ] {
            let _ = writeln!(
                out,
                "spacepulse_ingest_messages_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        family(
            out,
            "spacepulse_ingest_rejected_total",
            "counter",
            "Rejected messages by the field at fault (message: the message as a whole).",
        );
        for (field, n) in &self.rejected_by_field {
            let _ = writeln!(
                out,
                "spacepulse_ingest_rejected_total{{field=\"{field}\"}} {n}"
            );
        }
        for (name, help, v) in [
            (
                "spacepulse_ingest_commits_total",
                "Delta commits of the events and rejected tables.",
                self.commits,
            ),
            (
                "spacepulse_ingest_files_total",
                "Parquet files the commits added.",
                self.files,
            ),
            (
                "spacepulse_ingest_fenced_total",
                "Buffers dropped because another writer had committed their partitions.",
                self.fenced,
            ),
            (
                "spacepulse_ingest_gap_offsets_total",
                "Offsets a partition skipped between two messages it delivered.",
                self.gaps,
            ),
            (
                "spacepulse_ingest_restarts_total",
                "Times the ingester failed and started again.",
                restarts,
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        family(
            out,
            "spacepulse_ingest_commit_duration_seconds",
            "histogram",
            "How long a commit took, from the buffer's hand-over to the Delta commit.",
        );
        self.commit_seconds
            .render("spacepulse_ingest_commit_duration_seconds", out);
        family(
            out,
            "spacepulse_ingest_lag_messages",
            "gauge",
            "Messages behind the partitions' high watermarks.",
        );
        let _ = writeln!(
            out,
            "spacepulse_ingest_lag_messages {}",
            self.lag.map_or("NaN".to_string(), |l| l.to_string())
        );
        family(
            out,
            "spacepulse_ingest_partition_lag_messages",
            "gauge",
            "Messages behind the high watermark, per partition.",
        );
        let topic = self.topic_label();
        for (p, l) in &self.partition_lag {
            let _ = writeln!(
                out,
                "spacepulse_ingest_partition_lag_messages{{{topic}partition=\"{p}\"}} {l}"
            );
        }
        family(
            out,
            "spacepulse_ingest_watermark_timestamp_seconds",
            "gauge",
            "The newest event time each partition's commits have recorded.",
        );
        for (p, w) in &self.partition_watermark {
            let _ = writeln!(
                out,
                "spacepulse_ingest_watermark_timestamp_seconds{{{topic}partition=\"{p}\"}} {}",
                *w as f64 / 1000.0
            );
        }
    }

    /// `topic="NAME",` for a per-partition series' labels (the name escaped as Prometheus's
    /// text format wants), or nothing when the partitions belong to no topic.
    fn topic_label(&self) -> String {
        match &self.topic {
            Some(t) => format!("topic=\"{}\",", lake::prometheus_label(t)),
            None => String::new(),
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
