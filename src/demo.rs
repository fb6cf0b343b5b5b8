//! `spacepulse demo`: the pipeline end to end on an embedded broker.
//!
//! So far (the demo issue extends it with the generator and the dashboard): starts
//! librdkafka's mock cluster unless `--brokers` names a real one, produces the shipped
//! sample through the real producer, runs the ingester exactly as `spacepulse ingest` does
//! until it has caught up, prints the lake's ledger, then runs the metric jobs as
//! `spacepulse jobs run` does and prints the activity table.

use anyhow::{Context, Result};
use ingest::kafka::KafkaOptions;
use ingest::writer::{LakeWriter, WriterOptions};
use lake::ledger::Ledger;
use lake::tables::Lake;
use rdkafka::mocking::MockCluster;

use crate::cli::DemoArgs;
use crate::commands::{Progress, render_ledger, shutdown_signal};

const TOPIC: &str = "events";

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.reset && args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("removing {}", args.dir.display()))?;
    }
    let lake_dir = args.dir.join("lake");
    let lake = Lake::new(&lake_dir.to_string_lossy())?;

    let mock;
    let brokers = match &args.brokers {
        Some(b) => b.clone(),
        None => {
            mock = MockCluster::new(1).context("starting the embedded Kafka broker")?;
            mock.create_topic(TOPIC, 3, 1)
                .context("creating the events topic")?;
            println!(
                "embedded Kafka broker (librdkafka mock cluster) at {}",
                mock.bootstrap_servers()
            );
            mock.bootstrap_servers()
        }
    };

    let sample = std::io::Cursor::new(datasets::SAMPLE_NDJSON.as_bytes().to_vec());
    let produced = datasets::produce::produce_lines(&brokers, TOPIC, &[], sample).await?;
    println!("produced {produced} messages of the shipped sample to topic {TOPIC:?}");

    let writer = LakeWriter::open(&lake, WriterOptions::default()).await?;
    let options = KafkaOptions {
        brokers: brokers.clone(),
        topic: TOPIC.to_string(),
        group: "spacepulse-demo".to_string(),
        overrides: Vec::new(),
        until_caught_up: true,
    };
    let mut progress = Progress::new();
    let stats =
        ingest::kafka::run(writer, &options, shutdown_signal(), |s| progress.update(s)).await?;
    progress.finish();
    println!("ingested {}", stats.line());

    let ledger = Ledger::read(&lake).await?;
    println!("\nthe lake at {}:", lake.url());
    print!("{}", render_ledger(&ledger, false));
    let opts = jobs::Options {
        lake: lake.clone(),
        registry: None,
        tz: query::tz::ReportTz::default(),
        from: None,
        to: None,
        full: false,
        jobs: Vec::new(),
    };
    println!("\nmetric jobs (report days in {}):", opts.tz);
    let summaries = jobs::run(&opts, &jobs::Quiet).await?;
    crate::metrics::print_summaries(&summaries, opts.tz);
    let ctx = query::session::session(&lake).await?;
    println!("\nactivity (exact; dau_hll: HyperLogLog++ p=14, ±0.81% standard error):");
    ctx.sql(
        "SELECT day, dau, wau, mau, new_users, round(dau_approx) AS dau_hll \
         FROM activity WHERE breakdown = 'total' ORDER BY day",
    )
    .await?
    .show()
    .await?;
    println!(
        "\nquery it with any Delta reader, e.g. DuckDB: SELECT type, count(*) FROM delta_scan('{}') GROUP BY 1",
        lake_dir.join("events").display()
    );
    Ok(())
}
