//! `spacepulse jobs` and `spacepulse campaigns`: the metric jobs and their registry.

use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lake::registry::{Campaign, Registry};
use lake::tables::Lake;

use crate::cli::{CampaignsCommand, JobsCommand, LakeArg, RegistryArg};

/// A progress bar per job on a terminal; nothing otherwise.
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<Vec<(&'static str, ProgressBar)>>,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: std::io::stderr().is_terminal().then(MultiProgress::new),
            bars: Mutex::new(Vec::new()),
        }
    }
}

impl jobs::Progress for Bars {
    fn start(&self, job: &'static str, units: u64) {
        if let Some(m) = &self.multi {
            let bar = m.add(ProgressBar::new(units));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(job);
            self.bars.lock().expect("bars").push((job, bar));
        }
    }
    fn advance(&self, job: &'static str) {
        if let Some((_, bar)) = self.bars.lock().expect("bars").iter().find(|b| b.0 == job) {
            bar.inc(1);
        }
    }
    fn finish(&self, s: &jobs::Summary) {
        if let Some((_, bar)) = self
            .bars
            .lock()
            .expect("bars")
            .iter()
            .find(|b| b.0 == s.job)
        {
            bar.finish_and_clear();
        }
    }
}

pub fn registry(lake: &LakeArg, registry: &RegistryArg) -> Result<Registry> {
    let lake = Lake::new(&lake.lake)?;
    let path = Registry::path_for(&lake, registry.registry.as_deref())?;
    Ok(Registry::open(&path)?)
}

pub async fn jobs(cmd: JobsCommand) -> Result<()> {
    let args = match cmd {
        JobsCommand::Run(args) => args,
        JobsCommand::Users {
            lake,
            from,
            to,
            breakdown,
            segment,
            json,
        } => return users(&lake, from, to, &breakdown, &segment, json).await,
    };
    let day = |d: Option<chrono::NaiveDate>| d.map(query::tz::date32);
    let opts = jobs::Options {
        lake: Lake::new(&args.lake.lake)?,
        registry: args.registry.registry.clone(),
        tz: args.tz,
        from: day(args.from),
        to: day(args.to),
        full: args.full,
        jobs: args.jobs.clone(),
        memory: None,
    };
    let bars = Bars::new();
    let started = std::time::Instant::now();
    let result = jobs::run(&opts, &bars).await;
    if let Some(path) = &args.metrics_file {
        let counters = crate::pipeline::Jobs::default();
        // The counters go on from the previous run's file (a textfile's counters must not
        // reset at each run); a file that is not there, or not ours, starts them at zero.
        if let Ok(before) = std::fs::read_to_string(path) {
            counters.resume(&before);
        }
        match &result {
            Ok(summaries) => counters.ran(summaries, chrono::Utc::now().timestamp(), None),
            Err(_) => {
                let all = if opts.jobs.is_empty() {
                    jobs::Job::ALL.to_vec()
                } else {
                    opts.jobs.clone()
                };
                let names: Vec<&'static str> = all.iter().map(|j| j.name()).collect();
                counters.failed(&names, started.elapsed());
            }
        }
        let mut text = String::new();
        counters.render(&mut text);
        write_whole(path, text.as_bytes())
            .with_context(|| format!("--metrics-file {}", path.display()))?;
    }
    let summaries = result?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summaries)?);
        return Ok(());
    }
    print_summaries(&summaries, opts.tz);
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`: a reader sees
/// the old file or the new one, never a part.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// One line per job: what it recomputed, or that it was up to date.
pub fn print_summaries(summaries: &[jobs::Summary], tz: query::tz::ReportTz) {
    for s in summaries {
        if s.up_to_date {
            outln!(
                "{:<12} up to date (events version {})",
                s.job,
                s.events_version
            );
        } else {
            let unit = if s.job == "campaigns" {
                "campaigns"
            } else {
                "days"
            };
            outln!(
                "{:<12} {} {unit}, {} rows in {:.2} s (events version {}, {})",
                s.job,
                s.days,
                s.rows,
                s.seconds,
                s.events_version,
                tz
            );
        }
    }
}

pub async fn campaigns(cmd: CampaignsCommand) -> Result<()> {
    match cmd {
        CampaignsCommand::Add {
            lake,
            registry: reg,
            id,
            account,
            start,
            steps,
            window,
            mode,
        } => {
            let r = registry(&lake, &reg)?;
            let c = Campaign {
                id,
                account_id: account,
                start_ms: start.timestamp_millis(),
                steps,
                window_ms: window.as_millis() as i64,
                mode,
            };
            r.add_campaign(&c)?;
            outln!("registered campaign {} in {}", c.id, r.path().display());
        }
        CampaignsCommand::List {
            lake,
            registry: reg,
            json,
        } => {
            let list = registry(&lake, &reg)?.campaigns()?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                outln!(
                    "{:<20} {:<16} {:<26} {:>10} {:<9} steps",
                    "id",
                    "account",
                    "start (UTC)",
                    "window",
                    "mode"
                );
                for c in list {
                    let start = chrono::DateTime::from_timestamp_millis(c.start_ms)
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                        .unwrap_or_default();
                    outln!(
                        "{:<20} {:<16} {:<26} {:>9}s {:<9} {}",
                        c.id,
                        c.account_id,
                        start,
                        c.window_ms / 1000,
                        c.mode,
                        c.steps.join(" > ")
                    );
                }
            }
        }
        CampaignsCommand::Remove {
            lake,
            registry: reg,
            id,
        } => {
            if !registry(&lake, &reg)?.remove_campaign(&id)? {
                return Err(crate::UsageError(format!("no campaign {id:?} is registered")).into());
            }
            outln!("removed campaign {id}");
        }
    }
    Ok(())
}

async fn users(
    lake: &LakeArg,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    breakdown: &str,
    segment: &str,
    json: bool,
) -> Result<()> {
    if from > to {
        return Err(crate::UsageError("--from is after --to".into()).into());
    }
    let started = std::time::Instant::now();
    let lake = Lake::new(&lake.lake)?;
    let (f, t) = (query::tz::date32(from), query::tz::date32(to));
    let Some(r) = jobs::activity::distinct_users(&lake, f, t, breakdown, segment).await? else {
        return Err(crate::UsageError(
            "no activity table yet: run `spacepulse jobs run` first".into(),
        )
        .into());
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if json {
        let mut v = serde_json::to_value(&r)?;
        v["milliseconds"] = ms.into();
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            "{breakdown}/{segment} {from}..{to} ({} days with activity): {} distinct users exact, {:.0} approximate ({}, ±{:.2}% standard error); {ms:.1} ms",
            r.days,
            r.exact,
            r.approx,
            r.estimator,
            r.relative_error * 100.0
        );
    }
    Ok(())
}
