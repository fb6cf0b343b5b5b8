//! The subcommands: typed options in, a call into a crate, a summary out.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ingest::kafka::KafkaOptions;
use ingest::stats::Stats;
use ingest::writer::{LakeWriter, WriterOptions};
use lake::ledger::Ledger;
use lake::registry::Registry;
use lake::tables::Lake;

use crate::UsageError;
use crate::cli::{DatasetFormat, DatasetsCommand, IngestArgs, LakeCommand};

/// Resolves on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // The handlers are installed now, not at the first poll: what a command prints after
    // calling this is said with the signals already caught.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A progress line: a spinner on a terminal, a log line every 10 s otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    last_log: std::time::Instant,
}

impl Progress {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            last_log: std::time::Instant::now(),
        }
    }

    pub fn update(&mut self, stats: &Stats) {
        match &self.bar {
            Some(bar) => bar.set_message(stats.line()),
            None if self.last_log.elapsed() >= Duration::from_secs(10) => {
                self.last_log = std::time::Instant::now();
                tracing::info!(accepted = stats.accepted, rejected = stats.rejected, skipped = stats.skipped, files = stats.files, lag = ?stats.lag, "progress");
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub fn writer_options(args: &IngestArgs) -> Result<WriterOptions> {
    if !(args.flush_secs.is_finite() && args.flush_secs > 0.0) {
        return Err(UsageError(format!(
            "--flush-secs: expected a positive number of seconds, got {}",
            args.flush_secs
        ))
        .into());
    }
    Ok(WriterOptions {
        max_rows: args.flush_rows as usize,
        max_bytes: (args.flush_mib as usize) << 20,
        max_age: Duration::from_secs_f64(args.flush_secs),
    })
}

pub async fn ingest(args: IngestArgs) -> Result<()> {
    let lake = Lake::new(&args.lake.lake)?;
    let options = writer_options(&args)?;
    // Leftovers of killed runs, before this run writes anything of its own.
    let leftovers: u64 = ingest::maintenance::vacuum(&lake, args.vacuum_retain, false)
        .await
        .context("removing unpublished leftovers (--vacuum-retain)")?
        .iter()
        .map(|r| r.files_deleted)
        .sum();
    if leftovers > 0 {
        tracing::info!(
            files = leftovers,
            "removed files that earlier runs wrote but never published"
        );
    }
    let mut writer = LakeWriter::open(&lake, options)
        .await
        .context("opening the lake")?;
    let mut progress = Progress::new();
    // With --metrics-listen, the counters a scrape reads, and the endpoint serving them until
    // the ingest ends.
    let counters = Arc::new(crate::pipeline::Ingester::default());
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = match args.metrics_listen {
        Some(listen) => {
            let registry = Registry::path_for(&lake, args.registry.registry.as_deref())?;
            let shutdown = async move {
                let _ = metrics_stopped.await;
            };
            let served = counters.clone();
            let (server, addr) = crate::run::spawn_server(|ready| {
                dashboard::scrape::serve_metrics(registry, served, listen, shutdown, ready)
            })
            .await?;
            outln!("metrics at http://{addr}/metrics");
            Some(server)
        }
        None => None,
    };
    let mut observe = |s: &ingest::stats::Stats| {
        progress.update(s);
        counters.ingesting(s);
    };
    let stats = if let Some(path) = &args.from_file {
        let run = ingest::backfill::run(&mut writer, path, |w| observe(&w.stats));
        tokio::select! {
            r = run => r?,
            _ = shutdown_signal() => {
                // Nothing committed is lost; the buffer is re-read from the file next time.
                tracing::warn!("interrupted: committed lines stay, the rest resumes on the next run");
            }
        }
        writer.stats.clone()
    } else {
        let options = KafkaOptions {
            brokers: args
                .brokers
                .clone()
                .expect("clap requires --brokers without --from-file"),
            topic: args.topic.topic.clone(),
            group: args.topic.group.clone(),
            overrides: args.topic.kafka.clone(),
            until_caught_up: args.until_caught_up,
        };
        ingest::kafka::run(writer, &options, shutdown_signal(), |s| observe(s)).await?
    };
    progress.finish();
    let _ = metrics_stop.send(());
    if let Some(server) = metrics {
        server
            .await?
            .map_err(|e| anyhow::anyhow!("the metrics endpoint: {e}"))?;
    }
    outln!(
        "ingested {} in {:.1}s",
        stats.line(),
        stats.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn lake(cmd: LakeCommand) -> Result<()> {
    match cmd {
        LakeCommand::Ledger {
            lake,
            json,
            commits,
        } => {
            let lake = Lake::new(&lake.lake)?;
            let ledger = Ledger::read(&lake).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&ledger)?);
            } else {
                out!("{}", render_ledger(&ledger, commits));
            }
        }
        LakeCommand::Compact { lake, target_mib } => {
            let lake = Lake::new(&lake.lake)?;
            for r in ingest::maintenance::compact(&lake, target_mib << 20).await? {
                outln!(
                    "{}: {} small files merged into {} in {} partitions",
                    r.table,
                    r.files_removed,
                    r.files_added,
                    r.partitions_optimized
                );
            }
        }
        LakeCommand::Vacuum {
            lake,
            retain,
            dry_run,
        } => {
            let lake = Lake::new(&lake.lake)?;
            // The ingest's tables, then the metric tables: each job run replaces files.
            let mut reports = ingest::maintenance::vacuum(&lake, retain, dry_run).await?;
            let metrics = jobs::metric_tables();
            let names: Vec<&str> = metrics.iter().map(String::as_str).collect();
            reports
                .extend(ingest::maintenance::vacuum_tables(&lake, &names, retain, dry_run).await?);
            for r in reports {
                let verb = if r.dry_run { "would delete" } else { "deleted" };
                outln!("{}: {verb} {} unreferenced files", r.table, r.files_deleted);
            }
        }
    }
    Ok(())
}

pub fn render_ledger(ledger: &Ledger, commits: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<44} {:>9} {:>22} {:>8} {:>12} {:>10}",
        "source/partition", "covered", "offset ranges", "commits", "events", "rejected"
    );
    for p in &ledger.partitions {
        let ranges = p
            .ranges
            .iter()
            .map(|(a, b)| format!("{a}..={b}"))
            .collect::<Vec<_>>()
            .join(",");
        let covered = p
            .events_covered
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>22} {:>8} {:>12} {:>10}",
            format!("{}/{}", p.source, p.partition),
            covered,
            ranges,
            p.commits,
            p.events,
            p.rejected
        );
    }
    let events: u64 = ledger.partitions.iter().map(|p| p.events).sum();
    let rejected: u64 = ledger.partitions.iter().map(|p| p.rejected).sum();
    let _ = writeln!(
        out,
        "total: {events} events and {rejected} rejected published; events table now {} rows in {} files",
        ledger.events_rows, ledger.events_files
    );
    if commits {
        for c in &ledger.commits {
            let _ = writeln!(
                out,
                "{} v{} {} +{} files -{} files {} rows{}",
                c.table,
                c.version,
                c.operation,
                c.files_added,
                c.files_removed,
                c.rows_added,
                if c.data_change || c.files_added == 0 {
                    ""
                } else {
                    " (no data change)"
                }
            );
        }
    }
    out
}

pub async fn datasets(cmd: DatasetsCommand) -> Result<()> {
    match cmd {
        DatasetsCommand::Generate {
            rows,
            days,
            start,
            seed,
            scale,
            users,
            id_space,
            dirty,
            launch_at,
            out,
            format,
            brokers,
            topic,
            kafka,
        } => {
            let options = datasets::generate::Options {
                rows,
                days,
                start,
                seed,
                scale,
                users,
                id_space,
                dirty,
                launch_at_ms: launch_at.map(|t| t.timestamp_millis()),
                // A default Kafka broker refuses messages over 1 MiB.
                oversized: !matches!(format, DatasetFormat::Kafka),
            };
            if dirty && matches!(format, DatasetFormat::Parquet) {
                return Err(UsageError(
                    "--dirty: Parquet holds only valid events; use --format ndjson or kafka".into(),
                )
                .into());
            }
            // Bad options are reported before any output file exists.
            options.check().map_err(|e| UsageError(e.0))?;
            std::fs::create_dir_all(&out)
                .map_err(|e| UsageError(format!("--out {}: {e}", out.display())))?;
            let started = std::time::Instant::now();
            let out2 = out.clone();
            let manifest =
                tokio::task::spawn_blocking(move || -> Result<datasets::generate::Manifest> {
                    use datasets::generate::{GenerateError, NdjsonSink, generate};
                    let usage = |e: GenerateError| -> anyhow::Error {
                        match e {
                            GenerateError::Options(o) => UsageError(o.0).into(),
                            other => other.into(),
                        }
                    };
                    Ok(match format {
                        DatasetFormat::Ndjson => {
                            let file = std::fs::File::create(out2.join("events.ndjson"))?;
                            let mut sink =
                                NdjsonSink(std::io::BufWriter::with_capacity(1 << 20, file));
                            let m = generate(&options, &mut sink).map_err(usage)?;
                            std::io::Write::flush(&mut sink.0)?;
                            m
                        }
                        DatasetFormat::Parquet => {
                            let mut sink =
                                datasets::sinks::ParquetSink::create(&out2.join("events.parquet"))?;
                            let m = generate(&options, &mut sink).map_err(usage)?;
                            sink.finish()?;
                            m
                        }
                        DatasetFormat::Kafka => {
                            let brokers =
                                brokers.expect("clap requires --brokers with --format kafka");
                            let config = datasets::produce::producer_config(&brokers, &kafka);
                            let mut sink = datasets::produce::KafkaSink::new(&config, &topic)?;
                            let m = generate(&options, &mut sink).map_err(usage)?;
                            sink.finish()?;
                            m
                        }
                    })
                })
                .await??;
            let secs = started.elapsed().as_secs_f64();
            std::fs::write(
                out.join("manifest.json"),
                serde_json::to_vec_pretty(&manifest)?,
            )?;
            outln!(
                "generated {} messages ({} distinct events, {} users) in {secs:.2}s ({:.0} messages/s) into {}",
                manifest.rows,
                manifest.distinct_events,
                manifest.distinct_users,
                manifest.rows as f64 / secs.max(1e-9),
                out.display()
            );
        }
        DatasetsCommand::Produce {
            brokers,
            topic,
            input,
            rate,
            kafka,
        } => {
            let lines: Box<dyn std::io::BufRead + Send> = if input.as_os_str() == "-" {
                Box::new(std::io::BufReader::new(std::io::stdin()))
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(&input)
                        .map_err(|e| UsageError(format!("--input {}: {e}", input.display())))?,
                ))
            };
            let config = datasets::produce::producer_config(&brokers, &kafka);
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopping = stop.clone();
            let name = topic.clone();
            // A thread of its own, not the runtime's blocking pool: a read of standard input
            // blocks until a line comes, and the runtime's shutdown would wait for it.
            let (tx, mut producing) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(datasets::produce::produce_paced(
                    &config,
                    &name,
                    lines,
                    rate,
                    Some(stopping),
                ));
            });
            let signal = shutdown_signal();
            errln!(
                "producing {} to {topic}{}; Ctrl-C stops",
                if input.as_os_str() == "-" {
                    "standard input".to_string()
                } else {
                    input.display().to_string()
                },
                rate.map(|r| format!(" at {r} messages/s"))
                    .unwrap_or_default()
            );
            let n = tokio::select! {
                r = &mut producing => r.context("the producer thread ended")??,
                _ = signal => {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    // The producer stops at its next line; one waiting on standard input is
                    // left behind.
                    match tokio::time::timeout(Duration::from_secs(5), producing).await {
                        Ok(Ok(Err(datasets::Error::Stopped))) | Err(_) => {
                            tracing::warn!("interrupted: messages not yet acknowledged may be lost");
                            return Ok(());
                        }
                        Ok(r) => r.context("the producer thread ended")??,
                    }
                }
            };
            outln!("produced {n} messages to {topic}");
        }
    }
    Ok(())
}
