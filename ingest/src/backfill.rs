//! Backfill: NDJSON (optionally .gz or .zst) and Parquet files through the same decoder and
//! writer.
//!
//! A file is a sequence of records: the lines of NDJSON, decompressed, without their line
//! ends (blank lines are not records), or the rows of a Parquet file, each as a canonical JSON
//! object ([`rows`]) that the decoder validates like any line. A file is a source partition of
//! its own, named by a hash of its records (`file/<xxh3-128>`, partition 0), with a record's
//! number (from 0) as its offset: a file ingested twice, under any name, compressed or not,
//! or resumed after a kill, adds nothing twice.
//!
//! A file the lake does not know may continue one it knows (lines appended to a log). While
//! hashing, the running hash after n records is compared with the hash of every known file
//! that the lake covers to its end and that has n records; the records of the longest such
//! prefix are skipped and only the rest is ingested, under the new file's own source.

mod rows;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use xxhash_rust::xxh3::Xxh3;

use crate::writer::LakeWriter;
use crate::{Error, Result};

/// The prefix of every backfill source: `file/<xxh3-128 of the records>`.
const FILE_SOURCE: &str = "file/";

/// NDJSON file extensions, each optionally followed by `.gz` or `.zst`.
const NDJSON_EXTENSIONS: &[&str] = &[".ndjson", ".jsonl", ".json"];

fn input_error(path: &Path, source: std::io::Error) -> Error {
    Error::Input {
        path: path.display().to_string(),
        source,
    }
}

fn source_name(hash: u128) -> String {
    format!("{FILE_SOURCE}{hash:032x}")
}

/// Whether a directory walk takes a file of this name.
fn is_input_name(name: &str) -> bool {
    // What `datasets generate` writes next to its events: a description, not data.
    if name == "manifest.json" {
        return false;
    }
    let base = name.trim_end_matches(".gz").trim_end_matches(".zst");
    name.ends_with(".parquet") || NDJSON_EXTENSIONS.iter().any(|ext| base.ends_with(ext))
}

/// Whether a directory is a Delta table (a lake inside the input directory): not input, its
/// Parquet files are the lake's own, removed ones included.
fn is_table(dir: &Path) -> bool {
    dir.join("_delta_log").is_dir()
}

/// The input files at `path`: the file itself, or every `.ndjson`/`.jsonl`/`.json` file
/// (optionally `.gz`/`.zst`) and every `.parquet` file below a directory, in name order, but
/// none inside a Delta table.
pub fn input_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| input_error(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    dirs.retain(|d| !is_table(d));
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| input_error(&dir, e))? {
            let p = entry.map_err(|e| input_error(&dir, e))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name.starts_with('_') {
                // Hidden files and Delta logs (a lake inside the input directory) are not input.
                continue;
            }
            if p.is_dir() {
                if !is_table(&p) {
                    dirs.push(p);
                }
            } else if is_input_name(name) {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "--from-file {}: no .ndjson, .jsonl or .json (optionally .gz or .zst) or .parquet files in it (Delta tables and names starting with . or _ are skipped)",
            path.display()
        )));
    }
    Ok(files)
}

/// The records of one input file, in order.
struct Records {
    path: PathBuf,
    inner: Inner,
    /// Blank lines are records too (as versions before records were hashed numbered lines).
    blank_lines: bool,
}

enum Inner {
    Lines {
        reader: Box<dyn BufRead + Send>,
        line: Vec<u8>,
    },
    Rows(Box<rows::Rows>),
}

impl Inner {
    fn lines(reader: impl Read + Send + 'static) -> Self {
        Inner::Lines {
            reader: Box::new(BufReader::with_capacity(1 << 20, reader)),
            line: Vec::with_capacity(4096),
        }
    }
}

impl Records {
    /// Opens a file as Parquet (by its `.parquet` name or its `PAR1` magic), or as NDJSON,
    /// decompressed by its `.gz`/`.zst` name or its gzip/zstd magic.
    fn open(path: &Path) -> Result<Self> {
        Self::open_as(path, false)
    }

    /// Opens a file as versions before records were hashed read it: NDJSON decompressed by
    /// its name alone, every line a record, blank ones too.
    fn legacy(path: &Path) -> Result<Self> {
        Self::open_as(path, true)
    }

    fn open_as(path: &Path, legacy: bool) -> Result<Self> {
        let io = |e: std::io::Error| input_error(path, e);
        let mut file = File::open(path).map_err(io)?;
        let mut magic = Vec::with_capacity(4);
        if !legacy {
            (&mut file).take(4).read_to_end(&mut magic).map_err(io)?;
            file.rewind().map_err(io)?;
        }
        let name = path.to_string_lossy();
        let inner = if !legacy && (name.ends_with(".parquet") || magic == b"PAR1") {
            Inner::Rows(Box::new(rows::Rows::open(file).map_err(io)?))
        } else if name.ends_with(".gz") || magic.starts_with(&[0x1f, 0x8b]) {
            Inner::lines(flate2::read::MultiGzDecoder::new(file))
        } else if name.ends_with(".zst") || magic == [0x28, 0xb5, 0x2f, 0xfd] {
            Inner::lines(zstd::Decoder::new(file).map_err(io)?)
        } else {
            Inner::lines(file)
        };
        Ok(Self {
            path: path.to_path_buf(),
            inner,
            blank_lines: legacy,
        })
    }

    /// The next record, or `None` at the end of the file.
    fn next_record(&mut self) -> Result<Option<&[u8]>> {
        let (path, blank_lines) = (&self.path, self.blank_lines);
        match &mut self.inner {
            Inner::Lines { reader, line } => loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', line)
                    .map_err(|e| input_error(path, e))?;
                if n == 0 {
                    return Ok(None);
                }
                let mut end = line.len();
                if line[..end].ends_with(b"\n") {
                    end -= 1;
                }
                if line[..end].ends_with(b"\r") {
                    end -= 1;
                }
                if !blank_lines && line[..end].iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(&line[..end]));
            },
            Inner::Rows(rows) => rows.next_record().map_err(|e| input_error(path, e)),
        }
    }
}

/// The files the lake holds, by their number of records: the hashes of the file sources whose
/// version (last record covered) is that number minus one.
#[derive(Debug, Clone, Default)]
struct Known {
    by_records: HashMap<i64, Vec<u128>>,
    /// Every file source's last record covered, by hash.
    last: HashMap<u128, i64>,
}

impl Known {
    fn add(&mut self, source: &str, last: i64) {
        if let Some(hex) = source.strip_prefix(FILE_SOURCE)
            && let Ok(hash) = u128::from_str_radix(hex, 16)
        {
            self.last.insert(hash, last);
            let hashes = self.by_records.entry(last + 1).or_default();
            if !hashes.contains(&hash) {
                hashes.push(hash);
            }
        }
    }
}

/// One pass over a file's records.
struct Scan {
    /// The hash of all its records: the file's source is `file/<hash>`.
    hash: u128,
    records: i64,
    /// The longest prefix that is a whole file the lake holds: its records and hash.
    prefix: Option<(i64, u128)>,
}

/// Hashes a file's records: each record's bytes, then `\n`.
fn scan(path: &Path, known: &Known, stop: &AtomicBool) -> Result<Scan> {
    let mut records = Records::open(path)?;
    let mut hasher = Xxh3::new();
    let mut n: i64 = 0;
    let mut prefix = None;
    while let Some(record) = records.next_record()? {
        if n % 65_536 == 0 && stop.load(Ordering::Relaxed) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the backfill is stopping",
            )));
        }
        hasher.update(record);
        hasher.update(b"\n");
        n += 1;
        if let Some(hashes) = known.by_records.get(&n) {
            // The running hash, without ending the stream.
            let so_far = hasher.digest128();
            if hashes.contains(&so_far) {
                prefix = Some((n, so_far));
            }
        }
    }
    Ok(Scan {
        hash: hasher.digest128(),
        records: n,
        prefix,
    })
}

/// Set when dropped: tells a blocking pass that nobody awaits it any more (the process is
/// stopping, and its runtime waits for blocking threads before it exits).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn scan_in_background(path: &Path, known: &Arc<Known>) -> Result<Scan> {
    let (owned, known) = (path.to_path_buf(), Arc::clone(known));
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = Arc::clone(&stop.0);
    match tokio::task::spawn_blocking(move || scan(&owned, &known, &flag)).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            // A decoder that panics on a malformed file (Parquet metadata, say): the file's
            // problem, reported as such rather than taking the process down.
            let payload = e.into_panic();
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(input_error(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("reading it failed: {why}"),
                ),
            ))
        }
        Err(e) => Err(Error::Io(std::io::Error::other(e))),
    }
}

/// The name that versions before records were hashed gave a file: the xxh3-128 of its bytes
/// as stored (compressed ones too).
pub fn legacy_hash(path: &Path) -> Result<u128> {
    let mut file = File::open(path).map_err(|e| input_error(path, e))?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| input_error(path, e))?;
        if n == 0 {
            return Ok(hasher.digest128());
        }
        hasher.update(&buf[..n]);
    }
}

/// Goes on with a file that an earlier version ingested under its legacy source, numbered as
/// it numbered lines (every line, blank ones too, decompressed by the file's extension), so
/// nothing it covered is ingested again.
async fn legacy_resume(
    writer: &mut LakeWriter,
    file: &Path,
    source: &str,
    last: i64,
    progress: &mut impl FnMut(&LakeWriter),
) -> Result<()> {
    let resume = writer.resume_at(source, 0).await?.unwrap_or(last + 1);
    tracing::info!(file = %file.display(), %source, resume_at_line = resume, "backfill of a file an earlier version ingested");
    let mut records = Records::legacy(file)?;
    push_records(writer, &mut records, source, resume, i64::MAX, progress).await?;
    writer.flush().await?;
    progress(writer);
    Ok(())
}

/// Pushes `records` under `source`, numbered from 0: those before `start` are counted as
/// already ingested, blank ones are numbered but not pushed, and reading stops after `end`.
async fn push_records(
    writer: &mut LakeWriter,
    records: &mut Records,
    source: &str,
    start: i64,
    end: i64,
    progress: &mut impl FnMut(&LakeWriter),
) -> Result<()> {
    let mut number: i64 = 0;
    while number < end
        && let Some(record) = records.next_record()?
    {
        let this = number;
        number += 1;
        if this < start {
            writer.stats.skipped += 1;
            continue;
        }
        if record.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let now = chrono::Utc::now().timestamp_millis();
        writer.push(source, 0, this, record, now)?;
        if writer.should_flush() {
            // Writes in the background while the next records decode.
            writer.start_flush().await?;
            progress(writer);
        }
    }
    Ok(())
}

/// Ingests every file at `path`, flushing as the writer's thresholds say and at each file's
/// end. Records already in the lake (by the file's content and the record's number, or as the
/// beginning of a file the lake holds) are skipped.
pub async fn run(
    writer: &mut LakeWriter,
    path: &Path,
    mut progress: impl FnMut(&LakeWriter),
) -> Result<()> {
    let files = input_files(path)?;
    let mut known = Known::default();
    for c in writer.covered_sources(FILE_SOURCE).await? {
        if c.partition == 0 {
            known.add(&c.source, c.last);
        }
    }
    let mut known = Arc::new(known);
    for file in files {
        // Hashing reads the whole file: off the async threads, so a Ctrl-C is heard.
        let content = scan_in_background(&file, &known).await?;
        let source = source_name(content.hash);
        let start = match (writer.resume_at(&source, 0).await?, content.prefix) {
            (Some(resume), _) => resume,
            (None, Some((records, of))) => {
                tracing::info!(
                    file = %file.display(),
                    continues = %source_name(of),
                    records,
                    "the file begins with a whole file the lake holds: only what follows is new"
                );
                records
            }
            (None, None) => 0,
        };
        tracing::info!(
            file = %file.display(),
            %source,
            records = content.records,
            start_at_record = start,
            "backfill"
        );
        if start == 0 && !known.last.is_empty() {
            // A file an earlier version ingested: it named the file by its bytes as stored.
            let legacy = legacy_hash(&file)?;
            if let Some(&last) = known.last.get(&legacy) {
                legacy_resume(writer, &file, &source_name(legacy), last, &mut progress).await?;
                continue;
            }
        }
        if start >= content.records {
            writer.stats.skipped += content.records as u64;
            progress(writer);
            continue;
        }
        // Only the records hashed: a file growing meanwhile gets the rest on its next run.
        let mut records = Records::open(&file)?;
        push_records(
            writer,
            &mut records,
            &source,
            start,
            content.records,
            &mut progress,
        )
        .await?;
        for c in writer.flush().await? {
            if c.partition == 0 {
                Arc::make_mut(&mut known).add(&c.source, c.last);
            }
        }
        progress(writer);
    }
    Ok(())
}
