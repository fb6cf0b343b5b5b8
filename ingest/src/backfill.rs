//! Backfill: NDJSON files (optionally .gz or .zst) through the same decoder and writer.
//!
//! A file is a source partition of its own, named by a hash of its content
//! (`file/<xxh3-128>`, partition 0) with the line number as offset, so a file ingested twice,
//! or resumed after a kill, adds nothing twice.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::writer::LakeWriter;
use crate::{Error, Result};

fn input_error(path: &Path, source: std::io::Error) -> Error {
    Error::Input {
        path: path.display().to_string(),
        source,
    }
}

/// The NDJSON files at `path`: the file itself, or every `.ndjson`/`.jsonl`/`.json` file
/// (optionally `.gz`/`.zst`) below a directory, in name order.
pub fn input_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| input_error(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| input_error(&dir, e))? {
            let p = entry.map_err(|e| input_error(&dir, e))?.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
            if hidden {
                // Hidden files and Delta logs (a lake inside the input directory) are not input.
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let base = name.trim_end_matches(".gz").trim_end_matches(".zst");
                if base.ends_with(".ndjson") || base.ends_with(".jsonl") || base.ends_with(".json")
                {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "--from-file {}: no .ndjson, .jsonl or .json files in it",
            path.display()
        )));
    }
    Ok(files)
}

/// The source name of a file: a hash of its bytes, so renaming or moving it changes nothing.
pub fn source_of(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| input_error(path, e))?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| input_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("file/{:032x}", hasher.digest128()))
}

fn open_lines(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).map_err(|e| input_error(path, e))?;
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".zst") {
        Box::new(zstd::Decoder::new(file).map_err(|e| input_error(path, e))?)
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// Ingests every file at `path`, flushing as the writer's thresholds say and at each file's
/// end. Lines already in the lake (by file content and line number) are skipped.
pub async fn run(
    writer: &mut LakeWriter,
    path: &Path,
    mut progress: impl FnMut(&LakeWriter),
) -> Result<()> {
    for file in input_files(path)? {
        let source = source_of(&file)?;
        let resume = writer.resume_at(&source, 0).await?.unwrap_or(0);
        tracing::info!(file = %file.display(), %source, resume_at_line = resume, "backfill");
        let mut lines = open_lines(&file)?;
        let mut line = Vec::with_capacity(4096);
        let mut number: i64 = 0;
        loop {
            line.clear();
            let n = lines
                .read_until(b'\n', &mut line)
                .map_err(|e| input_error(&file, e))?;
            if n == 0 {
                break;
            }
            let this = number;
            number += 1;
            if this < resume {
                writer.stats.skipped += 1;
                continue;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let now = chrono::Utc::now().timestamp_millis();
            writer.push(&source, 0, this, text, now)?;
            if writer.should_flush() {
                // Writes in the background while the next lines decode.
                writer.start_flush().await?;
                progress(writer);
            }
        }
        writer.flush().await?;
        progress(writer);
    }
    Ok(())
}
