//! The server's view of the lake: a query session reopened when the jobs publish, and the
//! report responses cached until then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use lake::tables::{Lake, METRIC_TABLES};
use query::guard::{Guarded, Limits};
use serde_json::Value;

use crate::error::ApiError;

/// How often the Delta logs are looked at for new commits.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A response body: its content type and bytes.
pub type Cached = Arc<(String, Vec<u8>)>;

pub struct View {
    pub ctx: SessionContext,
    pub sql: Guarded,
    fingerprint: String,
    cache: Mutex<HashMap<String, Cached>>,
}

impl View {
    /// Rows of a trusted (server-written) query as JSON objects; no rows when a table it
    /// reads does not exist yet (the jobs have not run).
    pub async fn rows(&self, sql: &str, tables: &[&str]) -> Result<Vec<Value>, ApiError> {
        for t in tables {
            if !self.ctx.table_exist(*t).unwrap_or(false) {
                return Ok(Vec::new());
            }
        }
        let batches = self
            .ctx
            .sql(sql)
            .await
            .map_err(|e| ApiError::internal(format!("{sql}: {e}")))?
            .collect()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        to_json(&batches)
    }

    /// A cached response body (content type, bytes) for `key`, made by `make` on a miss.
    pub async fn cached<F, Fut>(&self, key: String, make: F) -> Result<Cached, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, Vec<u8>), ApiError>>,
    {
        if let Some(hit) = self.cache.lock().expect("not poisoned").get(&key) {
            return Ok(Arc::clone(hit));
        }
        let made = Arc::new(make().await?);
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&made));
        Ok(made)
    }
}

pub fn to_json(batches: &[RecordBatch]) -> Result<Vec<Value>, ApiError> {
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        w.write(b).map_err(|e| ApiError::internal(e.to_string()))?;
    }
    w.finish().map_err(|e| ApiError::internal(e.to_string()))?;
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))
}

pub struct LakeView {
    lake: Lake,
    limits: Limits,
    current: tokio::sync::RwLock<Arc<View>>,
    checked: Mutex<Instant>,
}

impl LakeView {
    pub async fn open(lake: Lake, limits: Limits) -> Result<Self, ApiError> {
        let view = build(&lake, limits, fingerprint(&lake)).await?;
        Ok(Self {
            lake,
            limits,
            current: tokio::sync::RwLock::new(Arc::new(view)),
            checked: Mutex::new(Instant::now()),
        })
    }

    /// The current view; reopened first when a table's log has moved on.
    pub async fn current(&self) -> Result<Arc<View>, ApiError> {
        let due = {
            let mut checked = self.checked.lock().expect("not poisoned");
            let due = checked.elapsed() >= CHECK_EVERY;
            if due {
                *checked = Instant::now();
            }
            due
        };
        if due {
            let now = fingerprint(&self.lake);
            if now != self.current.read().await.fingerprint {
                let mut slot = self.current.write().await;
                if slot.fingerprint != now {
                    *slot = Arc::new(build(&self.lake, self.limits, now).await?);
                    tracing::info!("the lake changed: session reopened, report cache cleared");
                }
            }
        }
        Ok(Arc::clone(&*self.current.read().await))
    }
}

async fn build(lake: &Lake, limits: Limits, fingerprint: String) -> Result<View, ApiError> {
    let ctx = query::session::session(lake)
        .await
        .map_err(|e| ApiError::internal(format!("opening the lake: {e}")))?;
    Ok(View {
        sql: Guarded::new(ctx.clone(), limits),
        ctx,
        fingerprint,
        cache: Mutex::new(HashMap::new()),
    })
}

/// What changes when the ingester or the jobs commit, or the registry changes: the newest
/// entry of each table's `_delta_log` and the registry's size and time. For a lake that is
/// not a local directory, the clock's 10-second slot.
fn fingerprint(lake: &Lake) -> String {
    let Ok(root) = lake.url().to_file_path() else {
        let slot = chrono::Utc::now().timestamp() / 10;
        return slot.to_string();
    };
    let mut out = String::new();
    let registry = root.join(lake::registry::REGISTRY_FILE);
    let mut dirs = vec![root.join("events"), root.join("rejected")];
    dirs.extend(METRIC_TABLES.iter().map(|t| root.join("metrics").join(t)));
    for dir in dirs {
        let newest = std::fs::read_dir(dir.join("_delta_log"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .max();
        out.push_str(newest.as_deref().unwrap_or("-"));
        out.push('|');
    }
    // The registry is in WAL mode: its changes land in the -wal file first.
    for f in [registry.clone(), registry.with_extension("sqlite-wal")] {
        if let Ok(m) = std::fs::metadata(f) {
            out.push_str(&format!("{}:{:?}|", m.len(), m.modified().ok()));
        }
    }
    out
}
