//! Fuzz targets: what a message or a request hands the server, each a function of bytes that
//! must return (any error is fine) and never panic, abort or allocate without bound. The
//! driver (`spacepulse-fuzz`, `bench/fuzz.sh`) mutates the checked-in corpus
//! (`fuzz/corpus/TARGET/`) and runs them; bench/RESULTS.md says why it is not cargo-fuzz.

use std::sync::Arc;

use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;

/// A target: its name, its setup, and one run over an input.
pub struct Target {
    pub name: &'static str,
    /// Tokens the mutator splices in (keywords, field names, delimiters).
    pub dictionary: &'static [&'static str],
    pub largest: usize,
}

pub const TARGETS: [Target; 4] = [
    Target {
        name: "event_decoder",
        dictionary: &[
            "{",
            "}",
            "\"",
            ":",
            ",",
            "[",
            "]",
            "null",
            "true",
            "1e308",
            "-0",
            "\\u0000",
            "\\ud800",
            "\"event_id\"",
            "\"ts\"",
            "\"user_id\"",
            "\"type\"",
            "\"platform\"",
            "\"photos\"",
            "\"campaign_id\"",
            "\"account_id\"",
            "\"advertiser_id\"",
            "\"ad_id\"",
            "\"amount_cents\"",
            "\"region\"",
            "\"photo_upload\"",
            "\"reserve\"",
            "\"2015-04-28T10:00:00+08:00\"",
            "18446744073709551615",
            "-9223372036854775808",
        ],
        largest: 8 << 10,
    },
    Target {
        name: "sql",
        dictionary: &[
            "SELECT ",
            " FROM ",
            " WHERE ",
            " GROUP BY ",
            " ORDER BY ",
            " LIMIT ",
            " UNION ALL ",
            " JOIN ",
            " ON ",
            " AND ",
            " OR ",
            " NOT ",
            "(",
            ")",
            ",",
            "*",
            "+",
            "'",
            "\"",
            "--",
            "/*",
            ";",
            "events",
            "events_dedup",
            "user_id",
            "ts",
            "type",
            "count(*)",
            "hll_count(",
            "hll_sketch(",
            "hll_merge(",
            "bitmap_count(",
            "bitmap_union(",
            "bitmap_agg(",
            "window_funnel(",
            "local_date(",
            "X'",
            "CAST(",
            " AS ",
            "WITH ",
            "INSERT ",
            "COPY ",
            "CREATE ",
            "EXPLAIN ",
            "VALUES ",
            "range(",
            "1e400",
            "NULL",
        ],
        // Statements of a few lines: the size and depth limits' own tests take the long and
        // deep ones (query::guard), whose parsing alone would set this target's pace.
        largest: 2 << 10,
    },
    Target {
        name: "sketch",
        dictionary: &[
            "SPH1",
            "\x0e",
            "\u{80}\u{80}\u{01}",
            "\u{ff}\u{ff}\u{ff}\u{ff}",
        ],
        largest: 64 << 10,
    },
    Target {
        name: "report_query",
        dictionary: &[
            "range=",
            "from=",
            "to=",
            "format=",
            "&",
            "=",
            "%",
            "%00",
            "%ff",
            "+",
            "today",
            "7d",
            "30d",
            "csv",
            "json",
            "2015-04-28",
            "9999-12-31",
            "0000-01-01",
            "-1",
        ],
        largest: 4 << 10,
    },
];

/// What a target needs built once: the SQL session over empty tables of the lake's shapes.
pub struct Setup {
    sql: SessionContext,
    runtime: tokio::runtime::Runtime,
}

/// How one run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded, planned, parsed.
    Accepted,
    /// Refused with an error naming the problem.
    Refused,
    /// An internal error (a 5xx to a caller): a bug, ours or a library's, but no crash.
    Internal,
}

impl Setup {
    pub fn new() -> Self {
        let sql = query::session::context();
        let events = lake::tables::Table::Events.schema();
        for name in ["events", "events_dedup"] {
            let table = MemTable::try_new(events.clone(), vec![vec![]]).expect("an empty table");
            sql.register_table(name, Arc::new(table))
                .expect("a fresh name");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Self { sql, runtime }
    }

    /// Runs target `name` over `data`.
    pub fn run(&self, name: &str, data: &[u8]) -> Outcome {
        let accepted = |ok: bool| {
            if ok {
                Outcome::Accepted
            } else {
                Outcome::Refused
            }
        };
        match name {
            "event_decoder" => accepted(lake::decode::parse(data, 1_430_186_400_000).is_ok()),
            "sql" => self.sql(data),
            "sketch" => accepted(sketch(data)),
            "report_query" => accepted(
                std::str::from_utf8(data)
                    .is_ok_and(|q| dashboard::check_report_query(q, Some(16_553)).is_ok()),
            ),
            other => panic!("no target {other}"),
        }
    }

    /// The guard's checks, then (for what they let through) planning, as `POST /api/v1/sql`
    /// does: on the planning thread, within the size and depth limits. The planning thread
    /// turns a panic into an internal error for the caller; here it is a crash.
    fn sql(&self, data: &[u8]) -> Outcome {
        use query::guard::QueryError;
        let Ok(text) = std::str::from_utf8(data) else {
            return Outcome::Refused;
        };
        let planned = match query::guard::check(text) {
            Ok(_) => self
                .runtime
                .block_on(query::guard::plan(&self.sql, text))
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match planned {
            Ok(()) => Outcome::Accepted,
            Err(QueryError::Internal(m)) if m.starts_with("planning the query failed") => {
                panic!("{m}")
            }
            Err(QueryError::Internal(_)) => Outcome::Internal,
            Err(_) => Outcome::Refused,
        }
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

/// Sketch and bitmap bytes as SQL functions take them: read, merged into a dense sketch,
/// estimated; bitmaps read and counted.
fn sketch(data: &[u8]) -> bool {
    use query::sketch::{Hll, bitmap_from_bytes, codes_from_bytes};
    let mut accepted = false;
    if let Ok(mut h) = Hll::from_bytes(data) {
        let mut dense = Hll::of_users(&(0..20_000u64).collect::<Vec<_>>());
        dense.merge(&h).expect("same precision");
        let mut empty = Hll::new();
        empty.merge(&h).expect("same precision");
        assert!(h.estimate().is_finite() && dense.estimate().is_finite());
        assert!(empty.estimate().is_finite());
        accepted = true;
    }
    if let Ok(b) = bitmap_from_bytes(data) {
        let _ = b.len();
        accepted = true;
    }
    if let Ok(b) = codes_from_bytes(data) {
        let _ = b.len();
        accepted = true;
    }
    accepted
}
