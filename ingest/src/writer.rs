//! The exactly-once writer: buffers decoded messages and commits them to the lake.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::kernels::partition::partition;
use arrow::compute::{sort_to_indices, take_record_batch};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use lake::decode::{Decoder, Origin, Rejection};
use lake::event::col;
use lake::ledger::{COMMIT_INFO_KEY, CommitRanges, SourceRange};
use lake::tables::{Lake, Table, app_id, covered, parse_app_id, watermark_app_id};

use crate::stats::Stats;
use crate::{Error, Result};

/// When a buffer rolls into files and a commit.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Buffered messages (accepted and rejected) that trigger a flush.
    pub max_rows: usize,
    /// Buffered message bytes that trigger a flush.
    pub max_bytes: usize,
    /// Age of the oldest buffered message that triggers a flush.
    pub max_age: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        // ~500k events are ~150 MB of Arrow builders: with Kafka's fetch buffers the process
        // stays well under 1 GiB.
        Self {
            max_rows: 500_000,
            max_bytes: 128 << 20,
            max_age: Duration::from_secs(5),
        }
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Rejected(Rejection),
    /// The lake already covers this offset.
    Skipped,
}

/// A source partition as the writer tracks it: what the lake covers, as far as this writer
/// knows (the fencing expectation), and what is buffered.
#[derive(Debug, Clone)]
struct Part {
    source: String,
    partition: i32,
    events_covered: Option<i64>,
    rejected_covered: Option<i64>,
    first: Option<i64>,
    last: Option<i64>,
    accepted: u64,
    rejected: u64,
    /// The newest event time (epoch ms, capped at the ingest clock) of the partition in the
    /// lake and the buffer: recorded with each events commit when the writer streams.
    watermark: Option<i64>,
}

/// A committed source partition: its last offset now in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub source: String,
    pub partition: i32,
    pub last: i64,
}

/// The two tables a flush commits to.
struct Tables {
    events: DeltaTable,
    rejected: DeltaTable,
}

/// What a background flush hands back: the tables, its result (events and rejected rows
/// written) and how long its commit took.
type Flushed = (Tables, Result<(u64, u64)>, Duration);

/// A flush writing and committing in the background while the next buffer fills; the tables
/// come back with its result.
struct InFlight {
    task: tokio::task::JoinHandle<Flushed>,
    /// The partitions it commits, with their last offsets.
    committing: Vec<Committed>,
    /// Their event-time watermarks, when the commits record them.
    watermarks: Vec<(i32, i64)>,
    rows: usize,
    started: Instant,
}

/// Buffers messages of any number of source partitions and commits them exactly once. At
/// most one flush runs in the background ([`LakeWriter::start_flush`]); the next one, and
/// anything that reads the lake's positions, waits for it first.
pub struct LakeWriter {
    /// `None` while a flush holds them.
    tables: Option<Tables>,
    in_flight: Option<InFlight>,
    /// Partitions committed by flushes finished since the last [`LakeWriter::take_committed`].
    committed: Vec<Committed>,
    decoder: Decoder,
    parts: Vec<Part>,
    buffered_bytes: usize,
    buffered_rows: usize,
    oldest: Option<Instant>,
    options: WriterOptions,
    /// Whether the sources are streams whose event-time watermarks the commits record.
    streaming: bool,
    pub stats: Stats,
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

impl LakeWriter {
    /// Opens (creating if needed) the lake's `events` and `rejected` tables.
    pub async fn open(lake: &Lake, options: WriterOptions) -> Result<Self> {
        Ok(Self {
            tables: Some(Tables {
                events: lake.open_or_create(Table::Events).await?,
                rejected: lake.open_or_create(Table::Rejected).await?,
            }),
            in_flight: None,
            committed: Vec::new(),
            decoder: Decoder::new(),
            parts: Vec::new(),
            buffered_bytes: 0,
            buffered_rows: 0,
            oldest: None,
            options,
            streaming: false,
            stats: Stats::default(),
        })
    }

    /// Marks the sources as streams (Kafka topics): each events commit then records, per
    /// partition, its event-time watermark ([`lake::tables::watermark_app_id`]) from which the
    /// jobs tell how complete the lake is. Files are whole once committed and record none.
    pub fn streaming(&mut self) {
        self.streaming = true;
    }

    fn part_index(&self, source: &str, partition: i32) -> Option<usize> {
        self.parts
            .iter()
            .position(|p| p.partition == partition && p.source == source)
    }

    /// Reads from the lake what it covers of a source partition and returns the offset to
    /// resume at (`None`: from the beginning). Any buffered data of that partition must have
    /// been dropped with [`LakeWriter::reset`] before.
    pub async fn resume_at(&mut self, source: &str, partition: i32) -> Result<Option<i64>> {
        let tables = self.settled_tables().await?;
        tables.events.update_state().await?;
        tables.rejected.update_state().await?;
        let app = app_id(source, partition);
        let events_covered = covered(&tables.events, &app).await?;
        let rejected_covered = covered(&tables.rejected, &app).await?;
        let watermark = covered(&tables.events, &watermark_app_id(source, partition)).await?;
        let part = Part {
            source: source.to_string(),
            partition,
            events_covered,
            rejected_covered,
            first: None,
            last: None,
            accepted: 0,
            rejected: 0,
            watermark,
        };
        match self.part_index(source, partition) {
            Some(i) if self.parts[i].last.is_some() => {
                return Err(Error::Internal(format!(
                    "{app}: re-read while data is buffered"
                )));
            }
            Some(i) => self.parts[i] = part,
            None => self.parts.push(part),
        }
        // The events table's version covers every message of the partition, accepted or not:
        // rejections are committed before the events commit of the same flush.
        Ok(events_covered.map(|v| v + 1))
    }

    /// The offset to resume at (what the `events` table covers, plus one) of each of
    /// `partitions` the lake knows, read without positioning them.
    pub async fn lake_positions(
        &mut self,
        source: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>> {
        let tables = self.settled_tables().await?;
        tables.events.update_state().await?;
        let mut out = Vec::new();
        for &p in partitions {
            if let Some(v) = covered(&tables.events, &app_id(source, p)).await? {
                out.push((p, v + 1));
            }
        }
        Ok(out)
    }

    /// Every source partition whose source name starts with `prefix` that the `events` table
    /// covers, with the last offset it covers (backfill looks up the files the lake knows).
    pub async fn covered_sources(&mut self, prefix: &str) -> Result<Vec<Committed>> {
        let tables = self.settled_tables().await?;
        tables.events.update_state().await?;
        let apps = lake::txns::app_versions(&tables.events, "").await?;
        Ok(apps
            .iter()
            .filter_map(|(app, &last)| {
                let (source, partition) = parse_app_id(app)?;
                source.starts_with(prefix).then(|| Committed {
                    source: source.to_string(),
                    partition,
                    last,
                })
            })
            .collect())
    }

    /// Decodes one message at `offset` of a source partition that [`LakeWriter::resume_at`]
    /// has positioned. Offsets must come in increasing order per partition.
    pub fn push(
        &mut self,
        source: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Outcome> {
        let Some(i) = self.part_index(source, partition) else {
            return Err(Error::Internal(format!(
                "{}: not positioned",
                app_id(source, partition)
            )));
        };
        let part = &mut self.parts[i];
        self.stats.read += 1;
        if part.events_covered.is_some_and(|c| offset <= c)
            || part.last.is_some_and(|l| offset <= l)
        {
            self.stats.skipped += 1;
            return Ok(Outcome::Skipped);
        }
        if let Some(next) = part.last.or(part.events_covered).map(|l| l + 1)
            && offset > next
        {
            self.stats.gaps += (offset - next) as u64;
            // Kafka leaves gaps for compaction and transaction markers; anywhere else the
            // broker lost them (Tansu 0.6's in-memory engine skips the rest of a batch a
            // fetch starts inside). The ledger shows the gap as two offset ranges.
            tracing::warn!(
                partition = %app_id(source, partition),
                "the broker returned offset {offset} after {}: offsets {next}..={} never arrived (compaction, transaction markers, or lost by the broker; `spacepulse lake ledger` shows the gap)",
                next - 1,
                offset - 1
            );
        }
        let store_rejection = part.rejected_covered.is_none_or(|c| offset > c);
        let origin = Origin {
            source,
            partition,
            offset,
        };
        let outcome = match self.decoder.push(payload, origin, now_ms, store_rejection) {
            Ok(ts_ms) => {
                part.watermark = part.watermark.max(Some(ts_ms.min(now_ms)));
                part.accepted += 1;
                self.stats.accepted += 1;
                Outcome::Accepted
            }
            Err(r) => {
                if store_rejection {
                    part.rejected += 1;
                }
                self.stats.rejected += 1;
                *self
                    .stats
                    .rejected_by_field
                    .entry(r.field.unwrap_or("message"))
                    .or_default() += 1;
                Outcome::Rejected(r)
            }
        };
        part.first.get_or_insert(offset);
        part.last = Some(offset);
        self.buffered_rows += 1;
        self.buffered_bytes += payload.len();
        self.oldest.get_or_insert_with(Instant::now);
        Ok(outcome)
    }

    /// Whether [`LakeWriter::resume_at`] has positioned this partition (since the last reset
    /// or failed flush).
    pub fn is_positioned(&self, source: &str, partition: i32) -> bool {
        self.part_index(source, partition).is_some()
    }

    /// Whether the buffer has reached a roll threshold.
    pub fn should_flush(&self) -> bool {
        self.buffered_rows >= self.options.max_rows
            || self.buffered_bytes >= self.options.max_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.options.max_age)
    }

    /// Whether anything is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffered_rows == 0
    }

    /// Drops everything buffered (files already streamed out stay unreferenced until a vacuum)
    /// and forgets all positions: each partition must be positioned again.
    pub fn reset(&mut self) {
        self.decoder.finish();
        self.parts.clear();
        self.buffered_bytes = 0;
        self.buffered_rows = 0;
        self.oldest = None;
    }

    /// Forgets a partition (revoked in a rebalance). Its buffered rows, if any, are still
    /// committed by the next flush; fencing keeps that safe.
    pub fn forget(&mut self, source: &str, partition: i32) {
        if let Some(i) = self.part_index(source, partition)
            && self.parts[i].last.is_none()
        {
            self.parts.remove(i);
        }
    }

    /// The tables, once the flush in flight (if any) has ended; a fenced flush has dropped
    /// what was buffered and the positions, which the caller sees as unpositioned partitions.
    async fn settled_tables(&mut self) -> Result<&mut Tables> {
        match self.finish_flush().await {
            Ok(()) => {}
            Err(Error::Fenced(why)) => {
                tracing::warn!(%why, "fenced: dropped the buffer; positions are re-read from the lake");
            }
            Err(e) => return Err(e),
        }
        Ok(self.tables.as_mut().expect("no flush in flight"))
    }

    /// Writes the buffer as Parquet files and commits it, rejected table first, waiting for
    /// the commit. Returns the partitions committed (by this flush and any that ended since
    /// the last [`LakeWriter::take_committed`]) with their last offsets. On [`Error::Fenced`]
    /// the buffer is dropped and every partition must be positioned again.
    pub async fn flush(&mut self) -> Result<Vec<Committed>> {
        self.start_flush().await?;
        self.finish_flush().await?;
        Ok(self.take_committed())
    }

    /// Starts writing and committing the buffer in the background, after waiting for the
    /// flush before it: decoding goes on meanwhile. The buffer that fills next already
    /// expects this flush's commit; if this flush is fenced, that buffer is dropped too.
    pub async fn start_flush(&mut self) -> Result<()> {
        self.finish_flush().await?;
        if self.buffered_rows == 0 {
            self.oldest = None;
            return Ok(());
        }
        let (events, rejected) = self.decoder.finish();
        // What this flush commits; the next buffer builds on its positions.
        let mut flushing: Vec<Part> = Vec::new();
        for p in &mut self.parts {
            if let Some(last) = p.last {
                flushing.push(p.clone());
                p.events_covered = Some(last);
                if p.rejected > 0 {
                    p.rejected_covered = Some(last);
                }
            }
            p.first = None;
            p.last = None;
            p.accepted = 0;
            p.rejected = 0;
        }
        let committing = flushing
            .iter()
            .map(|p| Committed {
                source: p.source.clone(),
                partition: p.partition,
                last: p.last.expect("flushed parts have data"),
            })
            .collect();
        let rows = self.buffered_rows;
        self.buffered_bytes = 0;
        self.buffered_rows = 0;
        self.oldest = None;
        let mut tables = self.tables.take().expect("no flush in flight");
        let streaming = self.streaming;
        let watermarks = if streaming {
            flushing
                .iter()
                .filter_map(|p| Some((p.partition, p.watermark?)))
                .collect()
        } else {
            Vec::new()
        };
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let result = commit_both(&mut tables, &flushing, events, rejected, streaming).await;
            (tables, result, began.elapsed())
        });
        self.in_flight = Some(InFlight {
            task,
            committing,
            watermarks,
            rows,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Whether no flush is running (none started, or the last one has ended and awaits
    /// [`LakeWriter::finish_flush`]).
    pub fn flush_ended(&self) -> bool {
        self.in_flight.as_ref().is_none_or(|f| f.task.is_finished())
    }

    /// Waits for the flush in flight, if any; its partitions join
    /// [`LakeWriter::take_committed`]. On [`Error::Fenced`] everything buffered since is
    /// dropped too and every partition must be positioned again.
    pub async fn finish_flush(&mut self) -> Result<()> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(());
        };
        let (tables, result, took) = match flight.task.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(Error::Internal(format!("flush task: {e}"))),
        };
        self.tables = Some(tables);
        tracing::debug!(
            rows = flight.rows,
            secs = flight.started.elapsed().as_secs_f64(),
            ok = result.is_ok(),
            "flush"
        );
        match result {
            Ok((files, commits)) => {
                self.stats.files += files;
                self.stats.commits += commits;
                self.stats.commit_seconds.observe(took.as_secs_f64());
                for (p, w) in flight.watermarks {
                    self.stats.raise_watermark(p, w);
                }
                self.committed.extend(flight.committing);
                Ok(())
            }
            Err(e) => {
                if matches!(e, Error::Fenced(_)) {
                    self.stats.fenced += 1;
                }
                // Positions are unknown now (and the buffer built on this flush is void):
                // every partition is re-read from the lake.
                self.reset();
                Err(e)
            }
        }
    }

    /// The partitions committed by flushes that ended since the last call.
    pub fn take_committed(&mut self) -> Vec<Committed> {
        std::mem::take(&mut self.committed)
    }
}

/// Commits the rejected rows, then the events, of one flush; returns (files, commits).
async fn commit_both(
    tables: &mut Tables,
    parts: &[Part],
    events: RecordBatch,
    rejected: RecordBatch,
    watermarks: bool,
) -> Result<(u64, u64)> {
    let (mut files, mut commits) = (0, 0);
    let with_rejects: Vec<(&Part, u64, Option<i64>)> = parts
        .iter()
        .filter(|p| p.rejected > 0)
        .map(|p| (p, p.rejected, p.rejected_covered))
        .collect();
    if !with_rejects.is_empty() {
        files += commit(
            &mut tables.rejected,
            Table::Rejected,
            rejected,
            &with_rejects,
            false,
        )
        .await?;
        commits += 1;
    }
    let ranges: Vec<(&Part, u64, Option<i64>)> = parts
        .iter()
        .map(|p| (p, p.accepted, p.events_covered))
        .collect();
    let events = sort_by_ts(events)?;
    files += commit(
        &mut tables.events,
        Table::Events,
        events,
        &ranges,
        watermarks,
    )
    .await?;
    commits += 1;
    Ok((files, commits))
}

fn sort_by_ts(batch: RecordBatch) -> Result<RecordBatch> {
    if batch.num_rows() < 2 {
        return Ok(batch);
    }
    let ts = batch.column_by_name(col::TS).expect("events have ts");
    let order = sort_to_indices(ts, None, None)?;
    Ok(take_record_batch(&batch, &order)?)
}

/// Writes `batch` into `table` and commits it with one `txn` per source partition in
/// `ranges` (part, rows, expected covered version). Returns the number of files added.
async fn commit(
    table: &mut DeltaTable,
    which: Table,
    batch: RecordBatch,
    ranges: &[(&Part, u64, Option<i64>)],
    watermarks: bool,
) -> Result<u64> {
    table.update_state().await?;
    // Fencing: the table must still cover exactly what this writer last saw it cover. Every
    // partition's `txn` is read in one pass over the log, not in a log replay per partition.
    let covering = lake::txns::app_versions(table, "spacepulse/").await?;
    for (part, _, expected) in ranges {
        let app = app_id(&part.source, part.partition);
        let mut now = covering.get(&app).copied();
        if now != *expected {
            // Confirmed by Delta's own reader (a rare path), which is what the writer
            // resumes from: the two never disagree into fencing every commit.
            now = covered(table, &app).await?;
        }
        if now != *expected {
            return Err(Error::Fenced(format!(
                "{}: {app} covers {now:?}, this writer expected {expected:?}",
                which.name()
            )));
        }
    }
    let mut actions = Vec::new();
    if batch.num_rows() > 0 {
        let mut writer =
            RecordBatchWriter::for_table(table)?.with_writer_properties(writer_properties());
        // One partition's file at a time: a writer open per partition (and each Parquet
        // column's zstd contexts and dictionaries) cost 500 MB for a buffer spread over a
        // week of hours. The batch comes sorted by its partition columns' order (events by
        // `ts`, rejections by arrival), so each run of equal values is one file.
        let keys: Vec<_> = which
            .partition_columns()
            .iter()
            .map(|c| batch.column_by_name(c).expect("partition column").clone())
            .collect();
        for run in partition(&keys)?.ranges() {
            writer.write(batch.slice(run.start, run.len())).await?;
            actions.extend(writer.flush().await?.into_iter().map(Action::Add));
        }
    }
    let files = actions.len() as u64;
    let mut txns: Vec<Transaction> = ranges
        .iter()
        .map(|(p, _, _)| {
            Transaction::new(app_id(&p.source, p.partition), p.last.expect("buffered"))
        })
        .collect();
    if which == Table::Events && watermarks {
        txns.extend(ranges.iter().filter_map(|(p, _, _)| {
            Some(Transaction::new(
                watermark_app_id(&p.source, p.partition),
                p.watermark?,
            ))
        }));
    }
    let info = CommitRanges {
        ranges: ranges
            .iter()
            .map(|(p, rows, _)| SourceRange {
                source: p.source.clone(),
                partition: p.partition,
                first: p.first.expect("buffered"),
                last: p.last.expect("buffered"),
                rows: *rows,
            })
            .collect(),
    };
    let properties = CommitProperties::default()
        .with_application_transactions(txns)
        .with_metadata([(
            COMMIT_INFO_KEY.to_string(),
            serde_json::to_value(&info).expect("serializable"),
        )]);
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(
            which
                .partition_columns()
                .iter()
                .map(|c| c.to_string())
                .collect(),
        ),
        predicate: None,
    };
    let snapshot = table.snapshot()?;
    CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    table.update_incremental(None).await?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller's bug (a push before the partition is positioned) is an internal error, never
    /// one the user is told to fix with a flag (exit 2).
    #[tokio::test]
    async fn a_push_to_an_unpositioned_partition_is_an_internal_error() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(&dir.path().join("lake").to_string_lossy()).unwrap();
        let mut writer = LakeWriter::open(&lake, WriterOptions::default())
            .await
            .unwrap();
        let err = writer.push("events", 0, 0, b"{}", 0).unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
        assert!(err.to_string().contains("not positioned"), "{err}");
    }
}
