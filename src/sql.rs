//! `spacepulse sql`: one read-only query, or an interactive shell in the manner of
//! datafusion-cli (history, multi-line statements ended by `;`, backslash commands).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use deltalake::datafusion::prelude::SessionContext;
use futures::StreamExt;
use lake::tables::Lake;
use query::guard::QueryError;
use query::output::{Encoder, Format};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::UsageError;
use crate::cli::SqlArgs;

pub async fn sql(args: SqlArgs) -> Result<()> {
    let format = args.format;
    let lake = Lake::new(&args.lake.lake)?;
    let ctx = query::session::session(&lake).await?;
    match args.query {
        Some(q) => {
            if args.output.is_none() && !format.is_text() && std::io::stdout().is_terminal() {
                return Err(UsageError(format!(
                    "--format {}: binary output to a terminal; add --output FILE or redirect",
                    Format::NAMES[format as usize]
                ))
                .into());
            }
            let mut out = output(args.output.as_ref())?;
            match run(&ctx, &q, format, &mut out).await {
                Ok(_) => Ok(()),
                Err(e @ (QueryError::Invalid(_) | QueryError::Refused(_))) => {
                    Err(UsageError(format!("sql: {e}")).into())
                }
                Err(e) => Err(anyhow::anyhow!("sql: {e}")),
            }
        }
        None => shell(&ctx, format, args.output).await,
    }
}

fn output(path: Option<&PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| UsageError(format!("--output {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    })
}

/// Plans `sql` read-only and streams its result into `out`; returns the rows written.
async fn run(
    ctx: &SessionContext,
    sql: &str,
    format: Format,
    out: &mut dyn Write,
) -> Result<usize, QueryError> {
    let internal = |e: &dyn std::fmt::Display| QueryError::Internal(e.to_string());
    let planned = query::guard::plan(ctx, sql).await?;
    let schema = planned.schema.clone();
    let mut stream = planned.execute()?;
    let mut encoder = Encoder::new(format, schema).map_err(|e| internal(&e))?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| QueryError::Invalid(e.find_root().to_string()))?;
        rows += batch.num_rows();
        let bytes = encoder.batch(&batch).map_err(|e| internal(&e))?;
        out.write_all(&bytes).map_err(|e| internal(&e))?;
    }
    let bytes = encoder.finish().map_err(|e| internal(&e))?;
    out.write_all(&bytes).map_err(|e| internal(&e))?;
    out.flush().map_err(|e| internal(&e))?;
    Ok(rows)
}

const HELP: &str = "\
Statements end with ';' and may span lines. Read-only: SELECT, EXPLAIN, SHOW, DESCRIBE.
  \\d           list the tables
  \\d NAME      describe a table
  \\f FORMAT    output format: table, csv, json, ndjson
  \\q           quit (also Ctrl-D)
  \\?           this help";

/// The interactive shell. Reads standard input line by line when it is not a terminal, so
/// that `spacepulse sql < queries.sql` runs a file of statements.
async fn shell(
    ctx: &SessionContext,
    mut format: Format,
    output_path: Option<PathBuf>,
) -> Result<()> {
    if !format.is_text() {
        return Err(UsageError(
            "the shell prints text: --format table, csv, json or ndjson".into(),
        )
        .into());
    }
    let interactive = std::io::stdin().is_terminal();
    let mut editor = DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".spacepulse_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    if interactive {
        errln!("spacepulse SQL shell over the lake; \\? for help, \\q to quit");
    }
    let mut out = output(output_path.as_ref())?;
    let mut buffer = String::new();
    let mut failed = false;
    loop {
        let prompt = if buffer.is_empty() {
            "spacepulse> "
        } else {
            "         -> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            let mut words = trimmed.split_whitespace();
            match (words.next(), words.next()) {
                (Some("\\q"), _) => break,
                (Some("\\?" | "\\h"), _) => errln!("{HELP}"),
                (Some("\\d"), None) => {
                    failed |= !statement(ctx, "SHOW TABLES", format, &mut out).await;
                }
                (Some("\\d"), Some(name)) => {
                    failed |= !statement(ctx, &format!("DESCRIBE {name}"), format, &mut out).await;
                }
                (Some("\\f"), Some(name)) => match Format::parse(name).filter(|f| f.is_text()) {
                    Some(f) => format = f,
                    None => errln!("\\f: table, csv, json or ndjson, not {name:?}"),
                },
                _ => errln!("unknown command {trimmed:?}; \\? for help"),
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let text = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(text.trim());
        failed |= !statement(ctx, text.trim(), format, &mut out).await;
    }
    if !buffer.trim().is_empty() {
        // A last statement without its ';' (the end of a piped file).
        failed |= !statement(ctx, buffer.trim(), format, &mut out).await;
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if failed && !interactive {
        // A script with a failed statement fails, as psql -v ON_ERROR_STOP would.
        return Err(anyhow::anyhow!("sql: a statement failed"));
    }
    Ok(())
}

/// Runs one statement of the shell; prints its error and returns false on failure.
async fn statement(ctx: &SessionContext, sql: &str, format: Format, out: &mut dyn Write) -> bool {
    let start = Instant::now();
    match run(ctx, sql, format, out).await {
        Ok(rows) => {
            errln!(
                "{rows} row{} in {:.3}s",
                if rows == 1 { "" } else { "s" },
                start.elapsed().as_secs_f64()
            );
            true
        }
        Err(e) => {
            errln!("error: {e}");
            false
        }
    }
}
