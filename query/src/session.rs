//! The DataFusion session over the lake: the lake's tables registered by name, the
//! spacepulse functions, and settings that make scans of the lake fast.

use deltalake::DeltaTable;
use deltalake::datafusion::execution::config::SessionConfig;
use deltalake::datafusion::prelude::SessionContext;
use lake::tables::{Lake, METRIC_TABLES};

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

/// A session over `lake`: `events`, `rejected` and every metric table that exists, under
/// their names (`activity`, `uploads_daily`, ...).
pub async fn session(lake: &Lake) -> Result<SessionContext> {
    let ctx = context();
    for name in ["events", "rejected"] {
        if let Some(t) = lake.open(name).await? {
            register(&ctx, name, &t).await?;
        }
    }
    for name in METRIC_TABLES {
        if let Some(t) = lake.open(&format!("metrics/{name}")).await? {
            register(&ctx, name, &t).await?;
        }
    }
    Ok(ctx)
}
