//! The Kafka consumer group driving a [`LakeWriter`].
//!
//! Positions come from the lake, never from the group's committed offsets: an assignment
//! starts each partition where the lake stood when this process last read or wrote it (from
//! the beginning when the lake has nothing of it), the first message of a newly assigned
//! partition is checked against what the `events` table covers now, and the consumer seeks
//! to the lake's position when they differ (another ingester of the group committed since).
//! Group offsets are committed only after a Delta commit, so that lag shows in Kafka tools.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::stats::Stats;
use crate::writer::{Committed, LakeWriter, Outcome};
use crate::{Error, Result};

/// How to reach Kafka and what to read.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// librdkafka properties (`-X key=value`), applied last.
    pub overrides: Vec<(String, String)>,
    /// Stop once every assigned partition is consumed up to its high watermark and flushed.
    pub until_caught_up: bool,
}

/// Rebalances seen by the consumer, handed to the ingest loop, and the watermarks of
/// librdkafka's last statistics.
#[derive(Default)]
struct GroupContext {
    events: Mutex<Vec<(bool, Vec<i32>)>>,
    /// (low, high) per topic and partition as librdkafka last saw them in fetch responses:
    /// reading lag from here costs no broker round trip (a watermark query to a slow broker
    /// once a second would starve the loop).
    watermarks: Mutex<HashMap<(String, i32), (i64, i64)>>,
    /// The topic consumed and, per partition, the next offset the lake wants as this process
    /// last knew it: where an assignment starts (an older value only costs a seek forward).
    topic: String,
    lake: Mutex<HashMap<i32, i64>>,
}

impl GroupContext {
    fn lake_at(&self, partition: i32) -> Option<i64> {
        self.lake
            .lock()
            .expect("not poisoned")
            .get(&partition)
            .copied()
    }

    fn set_lake_at(&self, partition: i32, next: i64) {
        self.lake
            .lock()
            .expect("not poisoned")
            .insert(partition, next);
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        let mut watermarks = self.watermarks.lock().expect("not poisoned");
        for (name, topic) in &statistics.topics {
            for (&p, partition) in &topic.partitions {
                if p >= 0 && partition.hi_offset >= 0 {
                    watermarks.insert(
                        (name.clone(), p),
                        (partition.lo_offset, partition.hi_offset),
                    );
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    /// Starts every assigned partition at the lake's position, never at the group's
    /// committed offset: a lake that is behind the group (a new lake, or one restored from a
    /// backup) would otherwise wait for a new message before it noticed.
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            for mut e in list.elements_for_topic(&self.topic) {
                let at = self
                    .lake_at(e.partition())
                    .map_or(Offset::Beginning, Offset::Offset);
                if let Err(err) = e.set_offset(at) {
                    warn!(partition = e.partition(), error = %err, "setting the start offset");
                }
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (assigned, list) = match rebalance {
            Rebalance::Assign(l) => (true, l),
            Rebalance::Revoke(l) => (false, l),
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance error");
                return;
            }
        };
        let partitions = list.elements().iter().map(|e| e.partition()).collect();
        self.events
            .lock()
            .expect("not poisoned")
            .push((assigned, partitions));
    }
}

/// Where a partition stands in the loop, with the next offset it expects.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Sought to this offset; earlier messages still in flight are dropped.
    Seeking(i64),
    Active(i64),
}

impl Position {
    fn next(self) -> i64 {
        match self {
            Position::Seeking(n) | Position::Active(n) => n,
        }
    }
}

/// Builds the consumer configuration: ours first, then the user's overrides.
pub fn client_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        // Bounded memory: at most 32 MiB of prefetched messages in the consumer's queue
        // (one queue for all partitions), which takes precedence over the message count.
        .set("queued.max.messages.kbytes", "32768")
        .set("queued.min.messages", "1000000")
        // Fetch again 10 ms after the queue was full, not librdkafka's 1 s: with the default
        // the queue ran dry while partitions waited out their backoff (Kafka to the lake
        // went from 116,000 to 262,000 events/s here, bench/RESULTS.md).
        .set("fetch.queue.backoff.ms", "10")
        .set("enable.partition.eof", "false")
        // Watermarks for the lag, from fetch responses (see `GroupContext::watermarks`).
        .set("statistics.interval.ms", "1000");
    for (k, v) in &options.overrides {
        config.set(k, v);
    }
    config
}

/// Consumes `options.topic` into the lake until `shutdown` resolves (or, with
/// `until_caught_up`, until the topic is consumed to its end), then flushes and commits.
pub async fn run(
    mut writer: LakeWriter,
    options: &KafkaOptions,
    shutdown: impl Future<Output = ()>,
    mut progress: impl FnMut(&Stats),
) -> Result<Stats> {
    let topic = options.topic.as_str();
    writer.streaming();
    let partitions = topic_partitions(options).await;
    let context = GroupContext {
        topic: topic.to_string(),
        lake: Mutex::new(
            writer
                .lake_positions(topic, &partitions)
                .await?
                .into_iter()
                .collect(),
        ),
        ..GroupContext::default()
    };
    let consumer: StreamConsumer<GroupContext> =
        client_config(options).create_with_context(context)?;
    consumer.subscribe(&[&options.topic])?;
    let mut positions: HashMap<i32, Position> = HashMap::new();
    let mut last_tick = Instant::now();
    let mut told_commits = writer.stats.commits;
    writer.stats.topic = Some(topic.to_string());
    tokio::pin!(shutdown);

    loop {
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = tokio::time::timeout(Duration::from_millis(200), consumer.recv()) => m.ok(),
        };
        // The message that ended the wait, then up to DRAIN that librdkafka has queued
        // already, taken without a timer each; the clock is read once per batch.
        let now = chrono::Utc::now().timestamp_millis();
        let mut next = first;
        let mut drained = 0;
        loop {
            apply_rebalances(&consumer, &mut writer, topic, &mut positions);
            let Some(message) = next else { break };
            match message {
                Ok(m) => {
                    let (partition, offset) = (m.partition(), m.offset());
                    if !writer.is_positioned(topic, partition) {
                        positions.remove(&partition);
                    }
                    let accept = match positions.get(&partition) {
                        Some(Position::Active(_)) => true,
                        Some(Position::Seeking(target)) => offset >= *target,
                        None => {
                            let resume = writer.resume_at(topic, partition).await?;
                            let target = resume.unwrap_or(0);
                            consumer.context().set_lake_at(partition, target);
                            if offset == target || (resume.is_none() && offset == 0) {
                                true
                            } else {
                                let to = resume.map(Offset::Offset).unwrap_or(Offset::Beginning);
                                debug!(partition, offset, ?to, "seeking to the lake's position");
                                consumer.seek(topic, partition, to, Duration::from_secs(10))?;
                                positions.insert(partition, Position::Seeking(target));
                                false
                            }
                        }
                    };
                    if accept {
                        positions.insert(partition, Position::Active(offset + 1));
                        let payload = m.payload().unwrap_or_default();
                        if let Outcome::Rejected(r) =
                            writer.push(topic, partition, offset, payload, now)?
                        {
                            debug!(partition, offset, reason = %r, "rejected");
                        }
                    }
                }
                Err(e) => warn!(error = %e, "kafka"),
            }
            drained += 1;
            next = if drained < DRAIN {
                consumer.recv().now_or_never()
            } else {
                None
            };
        }
        if writer.should_flush() {
            let started = writer.start_flush().await;
            settle(started, &mut writer, &consumer, topic, &mut positions)?;
        } else if writer.flush_ended() {
            let ended = writer.finish_flush().await;
            settle(ended, &mut writer, &consumer, topic, &mut positions)?;
        }
        // Told each second, and at once after a commit (what runs jobs at launch pace waits
        // on commits).
        if last_tick.elapsed() >= Duration::from_secs(1) || writer.stats.commits != told_commits {
            last_tick = Instant::now();
            told_commits = writer.stats.commits;
            let (lag, each) = lag(&consumer, topic, &positions).unzip();
            writer.stats.lag = lag;
            writer.stats.partition_lag = each.unwrap_or_default();
            progress(&writer.stats);
            if options.until_caught_up && lag == Some(0) {
                info!("caught up");
                break;
            }
        }
    }
    let started = writer.start_flush().await;
    settle(started, &mut writer, &consumer, topic, &mut positions)?;
    let ended = writer.finish_flush().await;
    settle(ended, &mut writer, &consumer, topic, &mut positions)?;
    let (lag, each) = lag(&consumer, topic, &positions).unzip();
    writer.stats.lag = lag;
    writer.stats.partition_lag = each.unwrap_or_default();
    Ok(writer.stats)
}

/// Messages taken from librdkafka's queue between two checks of the flush thresholds and
/// the progress tick.
const DRAIN: usize = 1024;

/// Applies the rebalances the consumer's callbacks recorded: newly assigned partitions are
/// positioned from the lake at their first message, revoked ones forgotten.
fn apply_rebalances(
    consumer: &StreamConsumer<GroupContext>,
    writer: &mut LakeWriter,
    topic: &str,
    positions: &mut HashMap<i32, Position>,
) {
    for (assigned, list) in consumer
        .context()
        .events
        .lock()
        .expect("not poisoned")
        .drain(..)
    {
        for p in list {
            positions.remove(&p);
            if !assigned {
                writer.forget(topic, p);
            }
        }
        info!(assigned, "rebalance");
    }
}

/// The topic's partitions from the broker's metadata (none when it cannot tell yet: the
/// assignment then starts them from the beginning and the first message seeks).
async fn topic_partitions(options: &KafkaOptions) -> Vec<i32> {
    let config = client_config(options);
    let topic = options.topic.clone();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create().ok()?;
        let metadata = client
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| warn!(error = %e, "reading the topic's partitions"))
            .ok()?;
        let t = metadata.topics().iter().find(|t| t.name() == topic)?;
        Some(t.partitions().iter().map(|p| p.id()).collect())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Handles what a flush call returned: the partitions committed since move the lake's
/// positions and the group's offsets; a fenced flush (the writer has dropped its buffers)
/// makes every partition seek to the lake's position again.
fn settle(
    result: Result<()>,
    writer: &mut LakeWriter,
    consumer: &StreamConsumer<GroupContext>,
    topic: &str,
    positions: &mut HashMap<i32, Position>,
) -> Result<()> {
    match result {
        Ok(()) => {}
        Err(Error::Fenced(why)) => {
            warn!(%why, "fenced: dropping the buffer and re-reading positions from the lake");
            positions.clear();
        }
        Err(e) => return Err(e),
    }
    let committed = writer.take_committed();
    for c in &committed {
        consumer.context().set_lake_at(c.partition, c.last + 1);
    }
    commit_offsets(consumer, topic, &committed);
    Ok(())
}

fn commit_offsets(consumer: &StreamConsumer<GroupContext>, topic: &str, committed: &[Committed]) {
    if committed.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for c in committed {
        if tpl
            .add_partition_offset(topic, c.partition, Offset::Offset(c.last + 1))
            .is_err()
        {
            return;
        }
    }
    // Informational only (the lake holds the truth): a failure is logged, not fatal.
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        debug!(error = %e, "offset commit");
    }
}

/// Messages between where each assigned partition stands and its high watermark, summed;
/// `None` while unknown.
fn lag(
    consumer: &StreamConsumer<GroupContext>,
    topic: &str,
    positions: &HashMap<i32, Position>,
) -> Option<(i64, Vec<(i32, i64)>)> {
    let assignment = consumer.assignment().ok()?;
    if assignment.count() == 0 {
        return None;
    }
    let mut total = 0;
    let mut each = Vec::new();
    for e in assignment.elements_for_topic(topic) {
        let p = e.partition();
        let seen = consumer
            .context()
            .watermarks
            .lock()
            .expect("not poisoned")
            .get(&(topic.to_string(), p))
            .copied();
        let query = || {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(2))
                .ok()
        };
        let (low, high) = match seen {
            Some(w) => w,
            None => query()?,
        };
        // A partition that delivered nothing yet: where the lake stands (never the group's
        // offset: a lake behind the group is behind), or its start when the lake has nothing.
        let at = match positions.get(&p) {
            Some(pos) => pos.next(),
            None => match consumer.context().lake_at(p) {
                Some(at) => at.max(low),
                None if low >= 0 => low,
                // The low watermark is not always in the statistics: ask the broker.
                None => query()?.0,
            },
        };
        total += (high - at).max(0);
        each.push((p, (high - at).max(0)));
    }
    each.sort_unstable();
    Some((total, each))
}
