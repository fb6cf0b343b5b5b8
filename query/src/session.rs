//! The DataFusion session over the lake: the lake's tables registered by name, the
//! spacepulse functions, and settings that make scans of the lake fast.

use deltalake::DeltaTable;
use deltalake::datafusion::execution::config::SessionConfig;
use deltalake::datafusion::prelude::SessionContext;
use lake::tables::{Lake, METRIC_TABLES, REVISIONS_TABLE};

use crate::Result;

/// A session with the spacepulse functions and scan settings, no tables yet.
pub fn context() -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true);
    // Filters inside the Parquet scan: a campaign's rows are a small share of the events.
    config.options_mut().execution.parquet.pushdown_filters = true;
    config.options_mut().execution.parquet.reorder_filters = true;
    let ctx = SessionContext::new_with_config(config);
    crate::functions::register(&ctx);
    ctx
}

/// Registers one Delta table under `name`.
pub async fn register(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// A session over `lake`: `events`, `events_dedup` (each `event_id` once), `rejected`,
/// every metric table that exists under its name (`activity`, `uploads_daily`, ...), and the
/// registry's `campaigns` when the lake has a registry.
pub async fn session(lake: &Lake) -> Result<SessionContext> {
    Ok(session_and_tables(lake).await?.0)
}

/// [`session`], and the metric tables it registered, by name, at the versions its queries
/// read (what a report says about its figures comes from the same snapshot as they do).
pub async fn session_and_tables(
    lake: &Lake,
) -> Result<(
    SessionContext,
    std::collections::HashMap<String, DeltaTable>,
)> {
    let ctx = context();
    for name in ["events", "rejected"] {
        if let Some(t) = lake.open(name).await? {
            register(&ctx, name, &t).await?;
        }
    }
    if ctx.table_exist("events")? {
        // A producer's retry repeats the event: keep the first copy ingested.
        ctx.sql(
            "CREATE VIEW events_dedup AS SELECT DISTINCT ON (event_id) * FROM events \
             ORDER BY event_id, ingested_at, source, source_partition, source_offset",
        )
        .await?;
    }
    if let Ok(path) = lake::registry::Registry::path_for(lake, None)
        && path.exists()
    {
        register_campaigns(&ctx, &lake::registry::Registry::open(&path)?.campaigns()?)?;
    }
    let mut metrics = std::collections::HashMap::new();
    for name in METRIC_TABLES.iter().chain(&[REVISIONS_TABLE]) {
        if let Some(t) = lake.open(&format!("metrics/{name}")).await? {
            register(&ctx, name, &t).await?;
            metrics.insert(name.to_string(), t);
        }
    }
    Ok((ctx, metrics))
}

/// Registers the registry's campaigns as the table `campaigns`.
pub fn register_campaigns(
    ctx: &SessionContext,
    campaigns: &[lake::registry::Campaign],
) -> Result<()> {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use deltalake::datafusion::datasource::MemTable;

    let schema = Arc::new(Schema::new(vec![
        Field::new("campaign_id", DataType::Utf8, false),
        Field::new("account_id", DataType::Utf8, false),
        Field::new(
            "start",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("steps", DataType::Utf8, false),
        Field::new("window_ms", DataType::Int64, false),
        Field::new("mode", DataType::Utf8, false),
    ]));
    let col = |f: &dyn Fn(&lake::registry::Campaign) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(campaigns.iter().map(f)))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            col(&|c| c.id.clone()),
            col(&|c| c.account_id.clone()),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(campaigns.iter().map(|c| c.start_ms))
                    .with_timezone("UTC"),
            ),
            col(&|c| c.steps.join(",")),
            Arc::new(Int64Array::from_iter_values(
                campaigns.iter().map(|c| c.window_ms),
            )),
            col(&|c| c.mode.clone()),
        ],
    )
    .map_err(deltalake::datafusion::error::DataFusionError::from)?;
    let table = MemTable::try_new(schema, vec![vec![batch]])?;
    ctx.register_table("campaigns", Arc::new(table))?;
    Ok(())
}

/// For an unknown table: the closest table name, and the tables there are.
pub fn table_hint(ctx: &SessionContext, error: &str) -> Option<String> {
    let missing = error.split("table '").nth(1)?.split('\'').next()?;
    let missing = missing.rsplit('.').next()?.to_ascii_lowercase();
    let schema = ctx.catalog("datafusion")?.schema("public")?;
    let mut names = schema.table_names();
    names.sort();
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    let best = names.iter().min_by_key(|n| distance(&missing, n))?;
    let mut hint = String::new();
    if distance(&missing, best) <= 3 {
        hint.push_str(&format!("\ndid you mean {best:?}?"));
    }
    hint.push_str(&format!("\ntables: {}", names.join(", ")));
    Some(hint)
}
