//! Runs the `.slt` files in `tests/slt/` against the query crate's session: a small
//! sqllogictest runner (`statement ok`, `statement error <text>`, `query <types> [rowsort]`
//! with expected rows after `----`, `query error <text>`). Values print as Arrow displays
//! them, NULL as `NULL`, columns separated by one space.

use std::path::Path;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::prelude::SessionContext;

#[derive(Debug)]
enum Record {
    Statement {
        sql: String,
        error: Option<String>,
        line: usize,
    },
    Query {
        sql: String,
        error: Option<String>,
        rowsort: bool,
        expected: Vec<String>,
        line: usize,
    },
}

fn parse(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let head = lines[i].trim();
        if head.is_empty() || head.starts_with('#') {
            i += 1;
            continue;
        }
        let line = i + 1;
        let words: Vec<&str> = head.split_whitespace().collect();
        let error = (words.get(1) == Some(&"error")).then(|| words[2..].join(" "));
        i += 1;
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let sql = sql.join("\n");
        match words[0] {
            "statement" => out.push(Record::Statement { sql, error, line }),
            "query" => {
                let mut expected = Vec::new();
                if i < lines.len() && lines[i].trim() == "----" {
                    i += 1;
                    while i < lines.len() && !lines[i].trim().is_empty() {
                        expected.push(lines[i].trim().to_string());
                        i += 1;
                    }
                }
                let rowsort = words.contains(&"rowsort");
                out.push(Record::Query {
                    sql,
                    error,
                    rowsort,
                    expected,
                    line,
                });
            }
            other => panic!("line {line}: unknown record {other:?}"),
        }
    }
    out
}

async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<String>, String> {
    let batches = ctx
        .sql(sql)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in &batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = fmts.iter().map(|f| f.value(r).to_string()).collect();
            out.push(cells.join(" "));
        }
    }
    Ok(out)
}

async fn run_file(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let ctx = query::session::context();
    let name = path.file_name().unwrap().to_string_lossy();
    let records = parse(&text);
    assert!(!records.is_empty(), "{name}: no records");
    for r in records {
        match r {
            Record::Statement { sql, error, line } => match (rows(&ctx, &sql).await, error) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => {
                    assert!(
                        e.contains(&want),
                        "{name}:{line}: error {e:?} lacks {want:?}"
                    )
                }
                (Ok(_), Some(want)) => panic!("{name}:{line}: expected an error with {want:?}"),
                (Err(e), None) => panic!("{name}:{line}: {e}"),
            },
            Record::Query {
                sql,
                error,
                rowsort,
                expected,
                line,
            } => match (rows(&ctx, &sql).await, error) {
                (Ok(mut got), None) => {
                    let mut want = expected;
                    if rowsort {
                        got.sort();
                        want.sort();
                    }
                    assert_eq!(got, want, "{name}:{line}: {sql}");
                }
                (Err(e), Some(want)) => {
                    assert!(
                        e.contains(&want),
                        "{name}:{line}: error {e:?} lacks {want:?}"
                    )
                }
                (Ok(got), Some(want)) => {
                    panic!("{name}:{line}: expected an error with {want:?}, got {got:?}")
                }
                (Err(e), None) => panic!("{name}:{line}: {e}"),
            },
        }
    }
}

#[tokio::test]
async fn slt_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "no .slt files in {}", dir.display());
    for f in files {
        run_file(&f).await;
    }
}
