//! Where the generator writes: NDJSON files, Parquet files in the events schema, or Kafka.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use lake::decode::{Decoder, Origin};
use lake::event::EVENTS_SCHEMA;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::generate::Sink;
use crate::produce::KafkaSink;

impl Sink for KafkaSink {
    fn line(&mut self, key: Option<u64>, bytes: &[u8]) -> std::io::Result<()> {
        let key = key.map(|k| itoa::Buffer::new().format(k).as_bytes().to_vec());
        self.send(key.as_deref(), bytes)
            .map_err(std::io::Error::other)
    }
}

/// Valid events decoded by the lake's decoder into one Parquet file of the events schema
/// (`source` = `generated`, `source_offset` = the line number).
pub struct ParquetSink {
    decoder: Decoder,
    writer: ArrowWriter<BufWriter<File>>,
    line: i64,
    now_ms: i64,
}

impl ParquetSink {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .build();
        let file = BufWriter::new(File::create(path)?);
        let writer = ArrowWriter::try_new(file, EVENTS_SCHEMA.clone(), Some(props))
            .map_err(std::io::Error::other)?;
        Ok(Self {
            decoder: Decoder::new(),
            writer,
            line: 0,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
    }

    fn write_batch(&mut self) -> std::io::Result<()> {
        let (events, _) = self.decoder.finish();
        self.writer.write(&events).map_err(std::io::Error::other)
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.write_batch()?;
        self.writer.close().map_err(std::io::Error::other)?;
        Ok(())
    }
}

impl Sink for ParquetSink {
    fn line(&mut self, _key: Option<u64>, bytes: &[u8]) -> std::io::Result<()> {
        let origin = Origin {
            source: "generated",
            partition: 0,
            offset: self.line,
        };
        self.line += 1;
        // Only valid events have a place in the events schema.
        let _ = self.decoder.push(bytes, origin, self.now_ms, false);
        if self.decoder.events_len() >= 100_000 {
            self.write_batch()?;
        }
        Ok(())
    }
}
