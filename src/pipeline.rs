//! The ingester's and the jobs' counters for Prometheus: at the dashboard's `/metrics` under
//! `spacepulse run`, at `spacepulse ingest --metrics-listen`, and in the textfile `spacepulse
//! jobs run --metrics-file` writes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An ingester's counters across its restarts.
#[derive(Debug, Default)]
pub struct Ingester {
    /// The ingest runs that ended, summed; and the one running.
    runs: Mutex<(ingest::stats::Stats, ingest::stats::Stats)>,
    restarts: AtomicU64,
}

impl Ingester {
    /// The running ingest's totals so far.
    pub fn ingesting(&self, s: &ingest::stats::Stats) {
        lock(&self.runs).1 = s.clone();
    }

    /// The running ingest ended (`failed`: to be started again): its totals join the ended
    /// ones'.
    pub fn ended(&self, failed: bool) {
        if failed {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        let mut runs = lock(&self.runs);
        let ended = std::mem::take(&mut runs.1);
        runs.0.absorb(&ended);
    }

    /// Every run's totals.
    pub fn totals(&self) -> ingest::stats::Stats {
        let runs = lock(&self.runs);
        let mut all = runs.0.clone();
        all.absorb(&runs.1);
        all
    }

    pub fn render(&self, out: &mut String) {
        self.totals()
            .render_metrics(self.restarts.load(Ordering::Relaxed), out);
    }
}

impl dashboard::metrics::ExtraMetrics for Ingester {
    fn render(&self, out: &mut String) {
        Ingester::render(self, out)
    }
}

/// One job's runs in this process.
#[derive(Debug, Default, Clone, Copy)]
struct JobStats {
    ok: u64,
    failed: u64,
    millis: u64,
    rows: u64,
    /// The events version its tables last recorded, and when it last ran to the end.
    events_seen: Option<i64>,
    last_run: Option<i64>,
    /// How long its last run took.
    last_seconds: f64,
    /// When it runs next at the latest (epoch s; sooner at a commit, for the campaigns job).
    next_run: Option<i64>,
    /// When the run in progress started (epoch s).
    running_since: Option<i64>,
}

/// The jobs' runs, per job.
#[derive(Debug)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<&'static str, JobStats>>,
    /// The newest events version found (-1: none yet).
    events_latest: AtomicI64,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            jobs: Mutex::default(),
            events_latest: AtomicI64::new(-1),
        }
    }
}

impl Jobs {
    /// Continues the counters of an earlier process's text (a `jobs run --metrics-file` of
    /// the previous run): runs, time, rows and the last successful run carry on, so that the
    /// counters only grow and a failed run keeps the last success's timestamp.
    pub fn resume(&self, text: &str) {
        let mut jobs = lock(&self.jobs);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let Some((name, labels)) = series.strip_suffix('}').and_then(|s| s.split_once('{'))
            else {
                continue;
            };
            let label = |key: &str| {
                labels.split(',').find_map(|kv| {
                    kv.strip_prefix(key)
                        .and_then(|v| v.strip_prefix("=\""))
                        .and_then(|v| v.strip_suffix('"'))
                })
            };
            let Some(job) = label("job").and_then(|j| {
                jobs::Job::ALL
                    .into_iter()
                    .map(|k| k.name())
                    .find(|n| *n == j)
            }) else {
                continue;
            };
            if !value.is_finite() || value < 0.0 {
                continue;
            }
            let j = jobs.entry(job).or_default();
            match (name, label("outcome")) {
                ("spacepulse_jobs_runs_total", Some("ok")) => j.ok = value as u64,
                ("spacepulse_jobs_runs_total", Some("failed")) => j.failed = value as u64,
                ("spacepulse_jobs_run_seconds_total", _) => j.millis = (value * 1000.0) as u64,
                ("spacepulse_jobs_rows_total", _) => j.rows = value as u64,
                ("spacepulse_jobs_events_version", _) => j.events_seen = Some(value as i64),
                ("spacepulse_jobs_last_run_timestamp_seconds", _) => {
                    j.last_run = Some(value as i64)
                }
                _ => {}
            }
        }
    }

    /// These jobs will run: they are listed before their first run.
    pub fn expect(&self, names: &[&'static str]) {
        let mut jobs = lock(&self.jobs);
        for n in names {
            jobs.entry(n).or_default();
        }
    }

    /// The events table is at `version`.
    pub fn found_version(&self, version: u64) {
        self.events_latest
            .fetch_max(version as i64, Ordering::Relaxed);
    }

    /// A run of `names` starts at `now` (epoch s).
    pub fn starting(&self, names: &[&'static str], now: i64) {
        let mut jobs = lock(&self.jobs);
        for n in names {
            jobs.entry(n).or_default().running_since = Some(now);
        }
    }

    /// A run ended at `now` (epoch s); the next comes `every` later at the latest.
    pub fn ran(&self, summaries: &[jobs::Summary], now: i64, every: Option<Duration>) {
        let mut jobs = lock(&self.jobs);
        for s in summaries {
            self.events_latest
                .fetch_max(s.events_version, Ordering::Relaxed);
            let j = jobs.entry(s.job).or_default();
            j.ok += 1;
            j.millis += (s.seconds * 1000.0) as u64;
            j.rows += s.rows;
            j.events_seen = Some(s.events_version);
            j.last_run = Some(now);
            j.last_seconds = s.seconds;
            j.next_run = every.map(|e| now + e.as_secs().max(1) as i64);
            j.running_since = None;
        }
    }

    /// A run of `names` failed after `took`.
    pub fn failed(&self, names: &[&'static str], took: Duration) {
        let mut jobs = lock(&self.jobs);
        let share = took.as_millis() as u64 / names.len().max(1) as u64;
        for n in names {
            let j = jobs.entry(n).or_default();
            j.failed += 1;
            j.millis += share;
            j.running_since = None;
        }
    }

    /// Per job: runs, last run, duration, next run (for `GET /api/v1/status`).
    pub fn status(&self) -> std::collections::BTreeMap<String, dashboard::metrics::JobRuns> {
        let instant = |s: Option<i64>| {
            s.and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map(|t| t.to_rfc3339())
        };
        lock(&self.jobs)
            .iter()
            .map(|(name, j)| {
                (
                    name.to_string(),
                    dashboard::metrics::JobRuns {
                        runs_ok: j.ok,
                        runs_failed: j.failed,
                        last_run: instant(j.last_run),
                        duration_seconds: j.last_seconds,
                        next_run: instant(j.next_run),
                        running_since: instant(j.running_since),
                    },
                )
            })
            .collect()
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let latest = self.events_latest.load(Ordering::Relaxed);
        let nan = |v: Option<i64>| v.map_or("NaN".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "# HELP spacepulse_events_version The newest version of the events table the jobs found.\n\
             # TYPE spacepulse_events_version gauge\n\
             spacepulse_events_version {}",
            nan((latest >= 0).then_some(latest)),
        );
        let jobs = lock(&self.jobs).clone();
        type Value = fn(&JobStats, i64) -> String;
        let families: [(&str, &str, &str, Value); 5] = [
            (
                "spacepulse_jobs_run_seconds_total",
                "counter",
                "Time spent running each job.",
                |j, _| format!("{}", j.millis as f64 / 1000.0),
            ),
            (
                "spacepulse_jobs_rows_total",
                "counter",
                "Rows each job wrote to its metric tables.",
                |j, _| j.rows.to_string(),
            ),
            (
                "spacepulse_jobs_events_version",
                "gauge",
                "The events table version each job's tables last recorded.",
                |j, _| j.events_seen.map_or("NaN".into(), |v| v.to_string()),
            ),
            (
                "spacepulse_jobs_events_version_lag",
                "gauge",
                "Versions of the events table each job has not seen.",
                |j, latest| match j.events_seen {
                    Some(v) if latest >= 0 => (latest - v).max(0).to_string(),
                    _ => "NaN".into(),
                },
            ),
            (
                "spacepulse_jobs_last_run_timestamp_seconds",
                "gauge",
                "When each job last ran to the end.",
                |j, _| j.last_run.map_or("NaN".into(), |v| v.to_string()),
            ),
        ];
        let _ = writeln!(
            out,
            "# HELP spacepulse_jobs_runs_total Runs of each job, by outcome (a failed run counts against each job it was to run).\n\
             # TYPE spacepulse_jobs_runs_total counter"
        );
        for (job, j) in &jobs {
            let _ = writeln!(
                out,
                "spacepulse_jobs_runs_total{{job=\"{job}\",outcome=\"ok\"}} {}\n\
                 spacepulse_jobs_runs_total{{job=\"{job}\",outcome=\"failed\"}} {}",
                j.ok, j.failed
            );
        }
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (job, j) in &jobs {
                let _ = writeln!(out, "{name}{{job=\"{job}\"}} {}", value(j, latest));
            }
        }
    }
}

/// `spacepulse run`'s parts' counters together.
#[derive(Debug, Default)]
pub struct Pipeline {
    pub ingester: Ingester,
    pub jobs: Jobs,
}

impl dashboard::metrics::ExtraMetrics for Pipeline {
    fn status(&self) -> dashboard::metrics::ProcessStatus {
        // Per topic, per partition: a backfill's partitions (other sources) have no lag.
        let totals = self.ingester.totals();
        let mut lag = std::collections::BTreeMap::new();
        if let Some(topic) = totals.topic {
            lag.insert(topic, totals.partition_lag.iter().copied().collect());
        }
        dashboard::metrics::ProcessStatus {
            lag,
            jobs: self.jobs.status(),
        }
    }

    fn render(&self, out: &mut String) {
        self.ingester.render(out);
        self.jobs.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().to_string())
    }

    #[test]
    fn a_metrics_file_goes_on_from_the_last_one_and_a_failure_keeps_the_last_success() {
        let first = Jobs::default();
        let summary = jobs::Summary {
            job: "activity",
            days: 3,
            rows: 40,
            seconds: 1.5,
            events_version: 7,
            up_to_date: false,
        };
        first.ran(std::slice::from_ref(&summary), 1_000, None);
        let mut text = String::new();
        first.render(&mut text);

        let second = Jobs::default();
        second.resume(&text);
        second.ran(&[summary], 2_000, None);
        let third = Jobs::default();
        let mut text = String::new();
        second.render(&mut text);
        third.resume(&text);
        third.failed(&["activity"], Duration::from_secs(2));
        let mut text = String::new();
        third.render(&mut text);

        let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
        assert_eq!(
            get("spacepulse_jobs_runs_total{job=\"activity\",outcome=\"ok\"}"),
            "2"
        );
        assert_eq!(
            get("spacepulse_jobs_runs_total{job=\"activity\",outcome=\"failed\"}"),
            "1"
        );
        assert_eq!(get("spacepulse_jobs_rows_total{job=\"activity\"}"), "80");
        assert_eq!(
            get("spacepulse_jobs_run_seconds_total{job=\"activity\"}"),
            "5"
        );
        assert_eq!(
            get("spacepulse_jobs_last_run_timestamp_seconds{job=\"activity\"}"),
            "2000"
        );
        assert_eq!(get("spacepulse_jobs_events_version{job=\"activity\"}"), "7");

        // Text that is not ours starts from zero.
        let other = Jobs::default();
        other.resume("garbage\nspacepulse_jobs_runs_total{job=\"nope\",outcome=\"ok\"} 9\n");
        let mut text = String::new();
        other.render(&mut text);
        assert!(!text.contains("nope"), "{text}");
    }
}
