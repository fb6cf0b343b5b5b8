//! Analysts' SQL, read-only and contained: which statements may run, and the limits every
//! query runs under (time, memory, rows), each with an error that says which was hit.
//!
//! Two locks, the way a database with untrusted clients does it: the statement is parsed
//! and every statement in it, nested ones included (a `WITH ... INSERT`, a DML body inside a
//! CTE), must be a query, `EXPLAIN` of one, `SHOW` or `DESCRIBE`; then DataFusion plans it
//! with DDL, DML and statements (`SET`, transactions) switched off all the same.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::SessionStateBuilder;
use deltalake::datafusion::execution::TaskContext;
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::physical_plan::{
    ExecutionPlan, SendableRecordBatchStream, execute_stream,
};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::sql::parser::{DFParser, Statement as DfStatement};
use deltalake::datafusion::sql::sqlparser::ast::{
    Expr, Query, SetExpr, Statement, TableFactor, Visit, Visitor, visit_statements,
};
use futures::StreamExt;
use tokio::sync::Semaphore;

/// What one query may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time from parsing to the last row.
    pub timeout: Duration,
    /// DataFusion's memory pool for the query's operators, and the cap on the buffered result.
    pub memory_bytes: usize,
    /// Rows in the result.
    pub max_rows: usize,
    /// Queries running at once; more wait their turn (within their time limit).
    pub concurrent: usize,
    /// Queries one caller (a token) runs at once: one analyst cannot hold every turn.
    pub per_caller: usize,
    /// Queries of one caller that may wait for its turn; more are refused (429).
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_bytes: 512 << 20,
            max_rows: 100_000,
            concurrent: 2,
            per_caller: 1,
            queue: 4,
        }
    }
}

/// Why a query did not run to the end. Every variant is the client's to act on except
/// `Internal`.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the query ran longer than the time limit of {0:?} and was stopped")]
    Timeout(Duration),
    #[error("the query needed more than the memory limit of {limit} MiB and was stopped: {detail}")]
    Memory { limit: usize, detail: String },
    #[error("the result has more than {0} rows, the row limit: aggregate, filter or add a LIMIT")]
    TooManyRows(usize),
    #[error(
        "{0} of your queries are waiting for their turn already: wait for them before sending more"
    )]
    Busy(usize),
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            QueryError::Refused(_) => 403,
            QueryError::Invalid(_) => 400,
            QueryError::Timeout(_) => 408,
            QueryError::Memory { .. } | QueryError::TooManyRows(_) => 422,
            QueryError::Busy(_) => 429,
            QueryError::Internal(_) => 500,
        }
    }

    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "forbidden_statement",
            QueryError::Invalid(_) => "invalid_query",
            QueryError::Timeout(_) => "time_limit",
            QueryError::Memory { .. } => "memory_limit",
            QueryError::TooManyRows(_) => "row_limit",
            QueryError::Busy(_) => "too_many_queries",
            QueryError::Internal(_) => "internal",
        }
    }
}

const ALLOWED: &str = "only SELECT (WITH ...), EXPLAIN, SHOW and DESCRIBE run here";

/// The longest query text taken, in bytes (ClickHouse's `max_query_size`).
pub const MAX_SQL_BYTES: usize = 256 << 10;

/// The deepest expression taken (DuckDB's `max_expression_depth`, ClickHouse's
/// `max_ast_depth`): `1 + 1 + ... + 1` nests one level per `+`.
pub const MAX_EXPRESSION_DEPTH: usize = 1000;

/// The stack of the thread that parses and plans a query. The parser builds a chain of
/// infix operators without recursing, but walking or dropping the tree recurses once per
/// level: a text of [`MAX_SQL_BYTES`] nests up to 128 Ki levels before the depth check
/// refuses it. Reserved, not used: only the pages a query touches are mapped.
const PLANNING_STACK: usize = 256 << 20;

/// Runs `f` on a thread of its own with a [`PLANNING_STACK`] stack; a panic in it is the
/// query's internal error, not the process's.
async fn on_planning_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sql-planner".into())
        .stack_size(PLANNING_STACK)
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|p| Err(QueryError::Internal(panic_message(&*p))));
            let _ = tx.send(result);
        })
        .map_err(|e| QueryError::Internal(format!("no thread to plan the query on: {e}")))?;
    rx.await
        .map_err(|_| QueryError::Internal("the planning thread ended without an answer".into()))?
}

/// What a panic said (its message when it has one).
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    format!("planning the query failed: {}", panic_text(p))
}

/// The most tables (each a join, which nests the plan a level) one statement reads.
pub const MAX_TABLES: usize = 256;

/// The most queries one chain of UNION, INTERSECT and EXCEPT joins.
pub const MAX_SET_OPERANDS: usize = 256;

/// Walks a statement, stopping (before the walk itself goes deeper) at the first construct
/// past a limit: expressions nested deeper than [`MAX_EXPRESSION_DEPTH`], more than
/// [`MAX_TABLES`] tables, a set operation of more than [`MAX_SET_OPERANDS`] queries.
#[derive(Default)]
struct Depth {
    now: usize,
    tables: usize,
}

impl Visitor for Depth {
    type Break = String;

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
        self.now += 1;
        if self.now > MAX_EXPRESSION_DEPTH {
            return ControlFlow::Break(format!(
                "an expression nests deeper than {MAX_EXPRESSION_DEPTH} levels: split it up \
                 (a long chain of AND, OR or + nests a level per operator; IN (...) does not)"
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
        self.now -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<String> {
        self.tables += 1;
        if self.tables > MAX_TABLES {
            return ControlFlow::Break(format!(
                "the query reads more than {MAX_TABLES} tables: split it up"
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        // The operands of a set operation chain, counted without recursing: the parser
        // builds a chain of any length.
        let mut operands = 0usize;
        let mut todo = vec![query.body.as_ref()];
        while let Some(body) = todo.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    todo.push(left);
                    todo.push(right);
                }
                _ => operands += 1,
            }
            if operands > MAX_SET_OPERANDS {
                return ControlFlow::Break(format!(
                    "a UNION, INTERSECT or EXCEPT of more than {MAX_SET_OPERANDS} queries: \
                     split it up"
                ));
            }
        }
        ControlFlow::Continue(())
    }
}

/// Checks that `sql` is one read-only statement within the size and depth limits. Returns
/// whether it is a query (whose rows the row limit caps) rather than EXPLAIN, SHOW or
/// DESCRIBE. Parses on a thread of its own (see [`PLANNING_STACK`]) and waits for it.
pub fn check(sql: &str) -> Result<bool, QueryError> {
    let sql = sql.to_string();
    std::thread::Builder::new()
        .name("sql-check".into())
        .stack_size(PLANNING_STACK)
        .spawn(move || check_here(&sql))
        .map_err(|e| QueryError::Internal(format!("no thread to check the query on: {e}")))?
        .join()
        .unwrap_or_else(|p| Err(QueryError::Internal(panic_message(&*p))))
}

/// The deepest nesting of parentheses taken. The parser backtracks at every level of some
/// constructs when the statement is wrong (`CAST(CAST(CAST(... 1)))` without `AS`): its time
/// doubles with each level, 22 levels took 10 s and 40 would take days, on a thread that
/// holds a query's turn. Found by fuzzing (fuzz/, the `sql` target).
pub const MAX_NESTING: usize = 16;

/// The most parts a dotted name may have (`catalog.schema.table.column.field...`). The parser
/// backtracks at every dot of a wrong one (`WHERE a.b.c. ... .z.`, a trailing dot): 20 parts
/// took 0.5 s, 28 over two minutes. Found by fuzzing too.
pub const MAX_NAME_PARTS: usize = 8;

/// Refuses a statement whose parentheses nest deeper than [`MAX_NESTING`] or with a dotted name
/// of more than [`MAX_NAME_PARTS`] parts, from its tokens (one linear pass; strings, quoted
/// names and comments are single tokens). A text that does not tokenize is left to the
/// parser, which says why.
fn check_tokens(sql: &str) -> Result<(), QueryError> {
    use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
    use deltalake::datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let (mut depth, mut deepest) = (0usize, 0usize);
    // Dots in the current run of `name.name.name`.
    let (mut dots, mut after_dot) = (0usize, false);
    for t in &tokens {
        match t {
            Token::LParen => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        match t {
            Token::Period => {
                dots += 1;
                after_dot = true;
                if dots >= MAX_NAME_PARTS {
                    return Err(QueryError::Invalid(format!(
                        "a dotted name of more than {MAX_NAME_PARTS} parts"
                    )));
                }
            }
            Token::Whitespace(_) => {}
            Token::Word(_) | Token::Mul if after_dot || dots == 0 => after_dot = false,
            _ => (dots, after_dot) = (0, false),
        }
    }
    if deepest > MAX_NESTING {
        return Err(QueryError::Invalid(format!(
            "parentheses nest {deepest} levels deep, more than {MAX_NESTING}: use WITH for \
             nested subqueries"
        )));
    }
    Ok(())
}

fn too_long(sql: &str) -> QueryError {
    QueryError::Invalid(format!(
        "the query text is {} bytes, more than the limit of {} KiB",
        sql.len(),
        MAX_SQL_BYTES >> 10
    ))
}

/// [`check`] on this thread, which must have a [`PLANNING_STACK`].
fn check_here(sql: &str) -> Result<bool, QueryError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(too_long(sql));
    }
    check_tokens(sql)?;
    let statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Invalid(e.to_string()))?;
    match statements.len() {
        0 => return Err(QueryError::Invalid("empty query: no statement".into())),
        1 => {}
        n => {
            return Err(QueryError::Refused(format!(
                "{n} statements in one request: send one statement at a time"
            )));
        }
    }
    check_df(&statements[0])
}

fn check_df(statement: &DfStatement) -> Result<bool, QueryError> {
    match statement {
        DfStatement::Statement(s) => check_sql(s),
        DfStatement::Explain(e) => check_df(&e.statement).map(|_| false),
        DfStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(refused("COPY")),
        DfStatement::Reset(_) => Err(refused("RESET")),
    }
}

fn check_sql(statement: &Statement) -> Result<bool, QueryError> {
    if let ControlFlow::Break(why) = statement.visit(&mut Depth::default()) {
        return Err(QueryError::Invalid(why));
    }
    let top = match statement {
        Statement::Query(_) => true,
        Statement::Explain { statement, .. } => {
            check_sql(statement)?;
            false
        }
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. } => false,
        other => return Err(refused(&kind(other))),
    };
    // Statements nested in the query: DML in a CTE or a set operation's operand.
    let nested = visit_statements(statement, |s| match s {
        Statement::Query(_)
        | Statement::Explain { .. }
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. } => ControlFlow::Continue(()),
        other => ControlFlow::Break(kind(other)),
    });
    match nested {
        ControlFlow::Break(k) => Err(QueryError::Refused(format!(
            "{k} is not allowed (inside the query): the lake is read-only here; {ALLOWED}"
        ))),
        ControlFlow::Continue(()) => Ok(top),
    }
}

/// The statement's leading keywords, e.g. `INSERT`, `CREATE TABLE`, `SET`.
fn kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let n = match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("CREATE" | "DROP" | "ALTER" | "TRUNCATE") => {
            if words.get(1).is_some_and(|w| w.eq_ignore_ascii_case("OR")) {
                3
            } else {
                2
            }
        }
        _ => 1,
    };
    words
        .iter()
        .take(n)
        .map(|w| w.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn refused(what: &str) -> QueryError {
    QueryError::Refused(format!(
        "{what} is not allowed: the lake is read-only here; {ALLOWED}"
    ))
}

/// The result of a query that ran within its limits.
#[derive(Debug)]
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub elapsed: Duration,
}

/// Runs analysts' queries over a session's tables under [`Limits`].
pub struct Guarded {
    ctx: SessionContext,
    limits: Limits,
    turns: Arc<Semaphore>,
    /// Each caller's own turns, and how many of its queries wait for one.
    callers: std::sync::Mutex<std::collections::HashMap<String, Arc<CallerTurns>>>,
}

struct CallerTurns {
    slots: Arc<Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

/// A caller's turn: while it is held, that many of the caller's queries run.
pub struct CallerTurn {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Guarded {
    /// `ctx` supplies the tables and functions (see [`crate::session::session`]); each query
    /// runs in a session of its own that shares them, with its own memory pool and no
    /// spilling to disk.
    pub fn new(ctx: SessionContext, limits: Limits) -> Self {
        Self {
            ctx,
            limits,
            turns: Arc::new(Semaphore::new(limits.concurrent.max(1))),
            callers: Default::default(),
        }
    }

    /// A turn of `caller` (a token id), waiting at most `wait`: refused at once when
    /// `queue` of its queries wait already.
    pub async fn caller_turn(
        &self,
        caller: &str,
        wait: Duration,
    ) -> Result<CallerTurn, QueryError> {
        use std::sync::atomic::Ordering;
        let turns = {
            let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
            // Callers with nothing running or waiting are forgotten as the map grows.
            if callers.len() > 10_000 {
                callers.retain(|_, t| Arc::strong_count(t) > 1);
            }
            callers
                .entry(caller.to_string())
                .or_insert_with(|| {
                    Arc::new(CallerTurns {
                        slots: Arc::new(Semaphore::new(self.limits.per_caller.max(1))),
                        waiting: Default::default(),
                    })
                })
                .clone()
        };
        if let Ok(permit) = turns.slots.clone().try_acquire_owned() {
            return Ok(CallerTurn { _permit: permit });
        }
        let waiting = turns.waiting.fetch_add(1, Ordering::SeqCst);
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _waiting = Waiting(&turns.waiting);
        if waiting >= self.limits.queue {
            return Err(QueryError::Busy(waiting));
        }
        match tokio::time::timeout(wait, turns.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(CallerTurn { _permit: permit }),
            Ok(Err(e)) => Err(QueryError::Internal(e.to_string())),
            Err(_) => Err(QueryError::Timeout(self.limits.timeout)),
        }
    }

    /// [`Guarded::run`] as `caller` (a token id): within its own turns ([`Limits::per_caller`],
    /// [`Limits::queue`]), the wait counted in the time limit.
    pub async fn run_as(&self, caller: &str, sql: &str) -> Result<Answer, QueryError> {
        let start = Instant::now();
        let _turn = self.caller_turn(caller, self.limits.timeout).await?;
        let mut answer = self
            .run_within(sql, self.limits.timeout.saturating_sub(start.elapsed()))
            .await?;
        answer.elapsed = start.elapsed();
        Ok(answer)
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Checks, plans and runs `sql`, buffering the result (at most `max_rows` rows and
    /// `memory_bytes`), so that every limit ends in a clear error rather than a cut result.
    pub async fn run(&self, sql: &str) -> Result<Answer, QueryError> {
        self.run_within(sql, self.limits.timeout).await
    }

    /// [`Guarded::run`] with `time` left of the time limit.
    async fn run_within(&self, sql: &str, time: Duration) -> Result<Answer, QueryError> {
        let start = Instant::now();
        let limits = self.limits;
        let work = async {
            // Quick refusals before waiting for a turn.
            if sql.len() > MAX_SQL_BYTES {
                return Err(too_long(sql));
            }
            let turn = self
                .turns
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            let ctx = self.query_context()?;
            // The turn is held by the planning thread until it ends, even if this query's
            // time runs out first: abandoned plans cannot pile up threads.
            let (planned, _turn) = plan_with(&ctx, sql, Some(limits.max_rows + 1), turn).await?;
            let schema = planned.schema.clone();
            let mut stream = planned.execute()?;
            let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| classify(e, limits))?;
                rows += batch.num_rows();
                bytes += batch.get_array_memory_size();
                if rows > limits.max_rows {
                    return Err(QueryError::TooManyRows(limits.max_rows));
                }
                if bytes > limits.memory_bytes {
                    return Err(QueryError::Memory {
                        limit: limits.memory_bytes >> 20,
                        detail: format!("the result alone takes more than {bytes} bytes"),
                    });
                }
                batches.push(batch);
            }
            Ok(Answer {
                schema,
                batches,
                rows,
                elapsed: Duration::ZERO,
            })
        };
        match tokio::time::timeout(time, work).await {
            Ok(Ok(mut answer)) => {
                answer.elapsed = start.elapsed();
                Ok(answer)
            }
            Ok(Err(e)) => Err(e),
            // Dropping the query's future cancels its tasks.
            Err(_) => Err(QueryError::Timeout(limits.timeout)),
        }
    }

    /// A session sharing the tables, functions and object stores of `self.ctx` with a memory
    /// pool of its own.
    fn query_context(&self) -> Result<SessionContext, QueryError> {
        let state = self.ctx.state();
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.limits.memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .with_object_store_registry(state.runtime_env().object_store_registry.clone())
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let state = SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .build();
        Ok(SessionContext::new_with_state(state))
    }
}

/// A query planned down to its physical plan on the planning thread, ready to run.
pub struct Planned {
    pub schema: SchemaRef,
    pub plan: Arc<dyn ExecutionPlan>,
    pub task: Arc<TaskContext>,
    /// A query (rather than EXPLAIN, SHOW or DESCRIBE).
    pub is_query: bool,
}

impl Planned {
    /// Starts the plan; its operators' errors come with the batches.
    pub fn execute(&self) -> Result<SendableRecordBatchStream, QueryError> {
        execute_stream(self.plan.clone(), self.task.clone())
            .map_err(|e| classify(e, Limits::default()))
    }
}

/// Checks `sql` (see [`check`]) and plans it in `ctx` with DDL, DML and statements off,
/// logically and physically, all on a thread of its own (see [`PLANNING_STACK`]).
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<Planned, QueryError> {
    if sql.len() > MAX_SQL_BYTES {
        // Refused before a thread is started for it.
        return Err(too_long(sql));
    }
    Ok(plan_with(ctx, sql, None, ()).await?.0)
}

/// [`plan`], a query's rows capped at `max_rows` (a limit added to the plan), `turn` kept
/// by the planning thread until it ends and then handed back.
async fn plan_with<T: Send + 'static>(
    ctx: &SessionContext,
    sql: &str,
    max_rows: Option<usize>,
    turn: T,
) -> Result<(Planned, T), QueryError> {
    let (ctx, sql) = (ctx.clone(), sql.to_string());
    on_planning_thread(move || {
        let is_query = check_here(&sql)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let planned = runtime.block_on(async {
            let df = ctx
                .sql_with_options(&sql, options)
                .await
                .map_err(|e| planning_error(&ctx, e))?;
            let df = match max_rows {
                Some(n) if is_query => df
                    .limit(0, Some(n))
                    .map_err(|e| classify(e, Limits::default()))?,
                _ => df,
            };
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let task = Arc::new(df.task_ctx());
            let plan = df
                .create_physical_plan()
                .await
                .map_err(|e| planning_error(&ctx, e))?;
            Ok::<_, QueryError>(Planned {
                schema,
                plan,
                task,
                is_query,
            })
        })?;
        Ok((planned, turn))
    })
    .await
}

fn planning_error(ctx: &SessionContext, e: DataFusionError) -> QueryError {
    match classify(e, Limits::default()) {
        QueryError::Invalid(mut msg) => {
            if let Some(hint) = crate::session::table_hint(ctx, &msg) {
                msg.push_str(&hint);
            }
            QueryError::Invalid(msg)
        }
        other => other,
    }
}

/// Sorts DataFusion's errors into the user's (a plan that cannot be made), the limits', and
/// ours.
fn classify(e: DataFusionError, limits: Limits) -> QueryError {
    let root = e.find_root();
    match root {
        DataFusionError::ResourcesExhausted(detail) => QueryError::Memory {
            limit: limits.memory_bytes >> 20,
            detail: detail.clone(),
        },
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => QueryError::Invalid(root.to_string()),
        // "Disk manager is disabled": an operator wanted to spill past the memory limit.
        _ if root.to_string().contains("isk manager") => QueryError::Memory {
            limit: limits.memory_bytes >> 20,
            detail: root.to_string(),
        },
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
            QueryError::Invalid(root.to_string())
        }
        _ => QueryError::Internal(root.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_and_writes_are_refused() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM events",
            "DESCRIBE events",
            "SELECT 1;",
        ] {
            assert!(check(ok).is_ok(), "{ok}: {:?}", check(ok));
        }
        for (bad, word) in [
            ("INSERT INTO events VALUES (1)", "INSERT"),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE OR REPLACE"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("DROP TABLE events", "DROP TABLE"),
            ("DELETE FROM events", "DELETE"),
            ("UPDATE events SET platform = 'pc'", "UPDATE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("RESET datafusion.execution.batch_size", "RESET"),
            ("EXPLAIN INSERT INTO events VALUES (1)", "INSERT"),
            ("EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("SELECT 1; DROP TABLE events", "2 statements"),
        ] {
            match check(bad) {
                Err(QueryError::Refused(m)) => assert!(m.contains(word), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    /// One caller's queries wait for its one turn (at most `queue` of them; more answer 429)
    /// while other callers run; waiting past the time limit is the time limit's error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_caller_cannot_take_every_turn() {
        let limits = Limits {
            per_caller: 1,
            queue: 1,
            timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let guarded = Arc::new(Guarded::new(crate::session::context(), limits));
        let waiting = |g: &Guarded| {
            g.callers.lock().unwrap()["a"]
                .waiting
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        let held = guarded.caller_turn("a", limits.timeout).await.unwrap();
        assert_eq!(guarded.run_as("b", "SELECT 1").await.unwrap().rows, 1);
        let g = guarded.clone();
        let queued = tokio::spawn(async move { g.run_as("a", "SELECT 2 AS two").await });
        while waiting(&guarded) == 0 {
            tokio::task::yield_now().await;
        }
        match guarded.run_as("a", "SELECT 3").await {
            Err(e @ QueryError::Busy(_)) => {
                assert_eq!((e.status(), e.code()), (429, "too_many_queries"))
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        assert_eq!(queued.await.unwrap().unwrap().rows, 1);
        assert_eq!(waiting(&guarded), 0);
        let _held = guarded.caller_turn("a", limits.timeout).await.unwrap();
        match guarded.run_as("a", "SELECT 4").await {
            Err(e @ QueryError::Timeout(_)) => assert_eq!(e.status(), 408),
            other => panic!("{other:?}"),
        }
        assert_eq!(waiting(&guarded), 0, "a query that gave up no longer waits");
    }

    fn chain(terms: usize) -> String {
        format!("SELECT 1{}", "+1".repeat(terms - 1))
    }

    /// Texts that overflowed a worker's stack and aborted the server: refused with a 400
    /// for their size or depth, and a chain as deep as allowed still runs, on a runtime
    /// whose workers have tokio's default stack.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deep_and_long_queries_are_refused_not_fatal() {
        let guarded = Guarded::new(crate::session::context(), Limits::default());
        let refused = |r: Result<Answer, QueryError>, what: &str| match r {
            Err(e @ QueryError::Invalid(_)) => {
                assert_eq!(e.status(), 400);
                assert!(e.to_string().contains(what), "{e}");
            }
            other => panic!("{what}: {other:?}"),
        };
        // 200,000 terms: 400 KB, over the size limit.
        refused(guarded.run(&chain(200_000)).await, "KiB");
        // Under the size limit and 120,000 levels deep: parsed, refused by depth, its tree
        // dropped on the planning thread.
        refused(guarded.run(&chain(120_000)).await, "deeper than 1000");
        refused(
            guarded
                .run(&format!(
                    "SELECT 1 WHERE {}",
                    vec!["true"; 5_000].join(" AND ")
                ))
                .await,
            "deeper than 1000",
        );
        let answer = guarded.run(&chain(MAX_EXPRESSION_DEPTH - 1)).await.unwrap();
        let value =
            arrow::util::display::array_value_to_string(answer.batches[0].column(0), 0).unwrap();
        assert_eq!(value, (MAX_EXPRESSION_DEPTH - 1).to_string());
        // Over a column, so that execution (not constant folding) walks the 1000 levels.
        let terms = vec!["x"; MAX_EXPRESSION_DEPTH - 1].join(" + ");
        let answer = guarded
            .run(&format!(
                "SELECT {terms} AS s FROM (VALUES (2), (3)) AS t(x)"
            ))
            .await
            .unwrap();
        let col = answer.batches[0].column(0);
        assert_eq!(
            arrow::util::display::array_value_to_string(col, 1).unwrap(),
            (3 * (MAX_EXPRESSION_DEPTH - 1)).to_string()
        );
        // Plans as deep as the tables and set operations allowed run; past them, refused.
        let tables = |n: usize| {
            let from: Vec<String> = (0..n).map(|i| format!("(VALUES ({i})) AS t{i}")).collect();
            format!("SELECT count(*) AS n FROM {}", from.join(", "))
        };
        let unions = |n: usize| vec!["SELECT 1 AS one"; n].join(" UNION ALL ");
        let answer = guarded.run(&tables(100)).await.unwrap();
        assert_eq!(answer.rows, 1);
        let answer = guarded.run(&unions(MAX_SET_OPERANDS)).await.unwrap();
        assert_eq!(answer.rows, MAX_SET_OPERANDS);
        refused(
            guarded.run(&tables(MAX_TABLES + 1)).await,
            "more than 256 tables",
        );
        refused(
            guarded.run(&unions(MAX_SET_OPERANDS + 1)).await,
            "more than 256 queries",
        );
        // 10,000 operands in 256 KiB: refused, the chain dropped on the planning thread.
        refused(guarded.run(&unions(10_000)).await, "more than 256 queries");
        // Statements the parser takes exponential time on when they are wrong, refused in a
        // pass over their tokens; as deep a nesting as allowed, written right, runs.
        for bad in [
            format!("SELECT {}1{}", "CAST(".repeat(40), ")".repeat(40)),
            format!("SELECT {}", "TRY_CAST(".repeat(40)),
        ] {
            let started = Instant::now();
            refused(guarded.run(&bad).await, "more than 16");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
        }
        let nested = format!(
            "SELECT {}1 AS INT{} AS n",
            "CAST(".repeat(MAX_NESTING),
            ") AS INT".repeat(MAX_NESTING - 1) + ")"
        );
        assert_eq!(guarded.run(&nested).await.unwrap().rows, 1, "{nested}");
        assert!(
            guarded
                .run("SELECT '((((((((((((((((((((' AS s")
                .await
                .is_ok()
        );
        // A wrong dotted name after WHERE: exponential in its parts, refused by their count.
        let started = Instant::now();
        let dotted = format!(
            "SELECT 1 FROM (VALUES (1)) AS a(x) WHERE a{}.",
            ".b".repeat(40)
        );
        refused(guarded.run(&dotted).await, "more than 8 parts");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Qualified names, and dots in numbers and strings, still run.
        let answer = guarded
            .run("SELECT a.x, 1.5 AS f, 'a.b.c.d.e.f.g.h.i.j' AS s FROM (VALUES (1)) AS a(x)")
            .await
            .unwrap();
        assert_eq!(answer.rows, 1);
        // A long IN list is wide, not deep.
        let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
        let wide = format!("SELECT 7 IN ({}) AS hit", list.join(", "));
        assert!(guarded.run(&wide).await.is_ok());
        assert!(check(&chain(120_000)).is_err());
    }
}
