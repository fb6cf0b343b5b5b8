//! Producing NDJSON lines to Kafka with a real (librdkafka) producer.

use std::io::BufRead;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Error, Result};

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

#[derive(Deserialize)]
struct KeyOnly<'a> {
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
}

/// The message key of an event: its `user_id` as decimal text, when it has one.
pub fn key_of(line: &[u8]) -> Option<&[u8]> {
    let parsed: KeyOnly<'_> = serde_json::from_slice(line).ok()?;
    let raw = parsed.user_id?.get().as_bytes();
    Some(
        raw.strip_prefix(b"\"")
            .and_then(|r| r.strip_suffix(b"\""))
            .unwrap_or(raw),
    )
}

/// A producer tuned for throughput. Idempotence is off by default: Tansu 0.6 stalls consumers
/// of idempotently produced partitions (seen in the group test); pass
/// `-X enable.idempotence=true` for a broker that handles it, so a retry never writes twice.
pub fn producer_config(brokers: &str, overrides: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000");
    for (k, v) in overrides {
        config.set(k, v);
    }
    config
}

/// Sends each non-empty line as one message (keyed by user id) and waits until every message
/// is acknowledged. Returns how many were sent; fails if any was not delivered.
pub async fn produce_lines(
    brokers: &str,
    topic: &str,
    overrides: &[(String, String)],
    lines: impl BufRead + Send + 'static,
) -> Result<u64> {
    let config = producer_config(brokers, overrides);
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || produce_blocking(&config, &topic, lines))
        .await
        .expect("producer thread does not panic")
}

/// A producer that sends keyed messages and, at [`KafkaSink::finish`], waits for every
/// acknowledgement.
pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    sent: u64,
    /// Set to stop waiting on the broker (see [`KafkaSink::stop_when`]).
    stop: Option<Arc<AtomicBool>>,
}

impl KafkaSink {
    pub fn new(config: &ClientConfig, topic: &str) -> Result<Self> {
        Ok(Self {
            producer: config.create_with_context(Deliveries::default())?,
            topic: topic.to_string(),
            sent: 0,
            stop: None,
        })
    }

    /// Once `stop` is set, a [`KafkaSink::send`] waiting for room in the queue and a
    /// [`KafkaSink::finish`] waiting for acknowledgements give up with [`Error::Stopped`]:
    /// a broker that is gone never drains the queue, and a signal must not wait on it.
    pub fn stop_when(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Enqueues one message, waiting while librdkafka's queue is full. Fails as soon as a
    /// message already sent was not delivered (its `message.timeout.ms` passed): a broker that
    /// times out every request would otherwise take the queue's whole length in timeouts.
    pub fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        self.undelivered()?;
        loop {
            let mut record = BaseRecord::to(&self.topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.stopped() {
                        return Err(Error::Stopped);
                    }
                    self.undelivered()?;
                    // Back-pressure: the background thread drains the queue.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.sent += 1;
        Ok(())
    }

    /// Waits (two minutes at most) for every message to be acknowledged; fails if any was not
    /// delivered.
    pub fn finish(self) -> Result<u64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.producer.flush(Duration::from_millis(100)) {
                Ok(()) => break,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                    if std::time::Instant::now() < deadline =>
                {
                    if self.stopped() {
                        return Err(Error::Stopped);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.undelivered()?;
        Ok(self.sent)
    }

    /// [`Error::Undelivered`] once a delivery report said a message was lost.
    fn undelivered(&self) -> Result<()> {
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = self
                .producer
                .context()
                .first_error
                .lock()
                .expect("not poisoned")
                .clone()
                .unwrap_or_default();
            return Err(Error::Undelivered {
                sent: self.sent,
                failed,
                first,
            });
        }
        Ok(())
    }
}

/// The blocking body of [`produce_lines`], for callers outside an async runtime.
pub fn produce_blocking(config: &ClientConfig, topic: &str, lines: impl BufRead) -> Result<u64> {
    produce_paced(config, topic, lines, None, None)
}

/// [`produce_blocking`] at most `rate` messages a second (evenly, in steps of a millisecond),
/// giving up with [`Error::Stopped`] once `stop` is set.
pub fn produce_paced(
    config: &ClientConfig,
    topic: &str,
    mut lines: impl BufRead,
    rate: Option<f64>,
    stop: Option<Arc<AtomicBool>>,
) -> Result<u64> {
    let mut sink = KafkaSink::new(config, topic)?;
    if let Some(stop) = stop {
        sink = sink.stop_when(stop);
    }
    let started = std::time::Instant::now();
    let mut line = Vec::new();
    loop {
        if sink.stopped() {
            return Err(Error::Stopped);
        }
        if let Some(rate) = rate {
            // Ahead of the pace: wait until the next message is due.
            let due = Duration::from_secs_f64(sink.sent as f64 / rate);
            let elapsed = started.elapsed();
            // In slices, so that a stop is seen at once at a slow pace too.
            if due > elapsed + Duration::from_millis(1) {
                std::thread::sleep((due - elapsed).min(Duration::from_millis(100)));
                continue;
            }
        }
        line.clear();
        if lines.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        if payload.is_empty() {
            continue;
        }
        sink.send(key_of(payload), payload)?;
    }
    sink.finish()
}
