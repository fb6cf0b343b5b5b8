//! A throwaway Kafka broker in its own process for `bench/ingest.sh`: librdkafka's mock
//! cluster (one broker, in memory) with an `events` topic. Prints the bootstrap address on
//! its first line, then serves until killed. The mock keeps only the newest 5 MiB of
//! (compressed) batches per partition, so a large input needs many partitions: 64 hold about
//! 5 million generated events with lz4.
//!
//! Usage: cargo run --release --example mock_broker [PARTITIONS]   (default 64)

use anyhow::{Context, Result};
use rdkafka::mocking::MockCluster;

fn main() -> Result<()> {
    let partitions: i32 = match std::env::args().nth(1) {
        None => 64,
        Some(p) => p
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .with_context(|| format!("PARTITIONS: expected a positive integer, got {p:?}"))?,
    };
    let mock = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
    mock.create_topic("events", partitions, 1)
        .context("creating the events topic")?;
    println!("{}", mock.bootstrap_servers());
    loop {
        std::thread::park();
    }
}
