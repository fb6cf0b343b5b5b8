//! The `.slt` files, run by the `sqllogictest` crate: those in `tests/slt/` against the
//! functions in a bare session (a new one per file), those in `tests/slt/lake/` against a lake
//! backfilled from `tests/slt/lake/events.ndjson`, through the read-only guard analysts' SQL
//! goes through. Every `.slt` file found is a test: a new case is a new file.
//!
//! Values print as Arrow displays them, NULL as `NULL`. Column types: `I` integer, `R`
//! floating point, `T` text, `B` boolean, `?` anything else.
//!
//! `cargo test --workspace --test slt -- --complete` rewrites each file's expected output
//! (and column types) from what its queries return now: review the diff before committing.

use std::path::{Path, PathBuf};

use arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;
use sqllogictest::{ColumnType, DBOutput};

mod common;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Type {
    Integer,
    Float,
    Text,
    Bool,
    Other,
}

impl ColumnType for Type {
    fn from_char(c: char) -> Option<Self> {
        Some(match c {
            'I' => Type::Integer,
            'R' => Type::Float,
            'T' => Type::Text,
            'B' => Type::Bool,
            _ => Type::Other,
        })
    }

    fn to_char(&self) -> char {
        match self {
            Type::Integer => 'I',
            Type::Float => 'R',
            Type::Text => 'T',
            Type::Bool => 'B',
            Type::Other => '?',
        }
    }
}

fn type_of(t: &DataType) -> Type {
    match t {
        t if t.is_integer() => Type::Integer,
        t if t.is_floating()
            || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            Type::Float
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::Text,
        DataType::Boolean => Type::Bool,
        _ => Type::Other,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbError(String);

/// A session the runner sends each record's SQL to.
struct Db {
    ctx: SessionContext,
    guarded: bool,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = Type;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Type>, DbError> {
        let batches = common::batches(&self.ctx, sql, self.guarded)
            .await
            .map_err(DbError)?;
        let Some(first) = batches.first() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        let types = first
            .schema()
            .fields()
            .iter()
            .map(|f| type_of(f.data_type()))
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: common::cells(&batches),
        })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(d: std::time::Duration) {
        tokio::time::sleep(d).await;
    }
}

fn slt_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

/// Runs (or, with `complete`, rewrites) one file; `lake` is the fixture lake for the files
/// under `lake/`, None for the bare ones.
async fn run(path: &Path, lake: Option<&lake::tables::Lake>, complete: bool) -> Result<(), String> {
    let ctx = match lake {
        Some(l) => query::session::session(l)
            .await
            .map_err(|e| e.to_string())?,
        None => query::session::context(),
    };
    let guarded = lake.is_some();
    let mut runner = sqllogictest::Runner::new(move || {
        let ctx = ctx.clone();
        async move { Ok(Db { ctx, guarded }) }
    });
    if complete {
        runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::strict_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        runner
            .run_file_async(path)
            .await
            .map_err(|e| e.display(true).to_string())
    }
}

fn main() -> std::process::ExitCode {
    // `--complete` is ours; the rest (a filter, --list, --exact, ...) is libtest's.
    let mut args: Vec<String> = std::env::args().collect();
    let complete = args.iter().any(|a| a == "--complete");
    args.retain(|a| a != "--complete");
    let args = libtest_mimic::Arguments::from_iter(args);
    let dir = common::slt_dir();
    let mut files: Vec<(PathBuf, bool)> =
        slt_files_in(&dir).into_iter().map(|f| (f, false)).collect();
    files.extend(
        slt_files_in(&dir.join("lake"))
            .into_iter()
            .map(|f| (f, true)),
    );
    let trials = files
        .into_iter()
        .map(|(path, on_lake)| {
            let name = path
                .strip_prefix(&dir)
                .unwrap_or(&path)
                .display()
                .to_string();
            libtest_mimic::Trial::test(name, move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    if on_lake {
                        let (_dir, lake) = common::fixture_lake().await;
                        run(&path, Some(&lake), complete).await
                    } else {
                        run(&path, None, complete).await
                    }
                })
                .map_err(Into::into)
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
