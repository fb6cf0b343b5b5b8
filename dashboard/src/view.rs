//! The server's view of the lake: a query session reopened when the jobs publish, and the
//! report responses cached until then.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use lake::tables::{Lake, METRIC_TABLES, REVISIONS_TABLE};
use query::guard::{Guarded, Limits};
use query::tz::ReportTz;

use crate::error::ApiError;
use crate::rows::FromBatch;

/// How often the Delta logs are looked at for new commits (a request at most this long after
/// the jobs publish may still get the previous figures).
const CHECK_EVERY: Duration = Duration::from_millis(250);

pub struct View {
    pub ctx: SessionContext,
    pub sql: Guarded,
    fingerprint: String,
    /// Reports as typed values and response bodies, by key.
    cache: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
    tz: ReportTz,
    /// The metric tables the session reads, at the versions it reads.
    tables: HashMap<String, deltalake::DeltaTable>,
    /// Per metric table, the completeness its job recorded (epoch ms), read once per view.
    watermarks: tokio::sync::Mutex<HashMap<String, Option<i64>>>,
}

/// How fresh a report is: the instant up to which every partition's events are in the lake
/// and the report's job has seen them, less the allowed lateness.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// Epoch ms; `None` before the job has recorded one.
    pub complete_up_to: Option<i64>,
    pub tz: ReportTz,
}

impl Freshness {
    /// `complete_up_to` in the report time zone, RFC 3339.
    pub fn instant(&self) -> Option<String> {
        let ms = self.complete_up_to?;
        let offset = self.tz.offset_us(ms * 1000) / 1_000_000;
        let fixed = chrono::FixedOffset::east_opt(offset as i32)?;
        Some(
            chrono::DateTime::from_timestamp_millis(ms)?
                .with_timezone(&fixed)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        )
    }

    /// Whether local day `day` (Date32) may still change: it ends after `complete_up_to`.
    pub fn provisional(&self, day: i32) -> bool {
        self.complete_up_to
            .is_none_or(|c| self.tz.day_start_us(day + 1) / 1000 > c)
    }

    /// Whether the day `day` (`YYYY-MM-DD`, a report row's) may still change.
    pub fn provisional_text(&self, day: &str) -> bool {
        query::tz::parse_day(day).is_ok_and(|d| self.provisional(d))
    }
}

impl View {
    /// The rows of a trusted (server-written) query, typed; none when a table it reads does
    /// not exist yet (the jobs have not run).
    pub async fn typed<R: FromBatch>(
        &self,
        sql: &str,
        tables: &[&str],
    ) -> Result<Vec<R>, ApiError> {
        Ok(match self.batches(sql, tables).await? {
            Some(batches) => crate::rows::decode_all(&batches)?,
            None => Vec::new(),
        })
    }

    /// The batches of a trusted query; `None` when a table it reads does not exist yet.
    async fn batches(
        &self,
        sql: &str,
        tables: &[&str],
    ) -> Result<Option<Vec<RecordBatch>>, ApiError> {
        for t in tables {
            if !self.ctx.table_exist(*t).unwrap_or(false) {
                return Ok(None);
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
        Ok(Some(batches))
    }

    /// How fresh the figures of metric table `table` are: the completeness its job recorded
    /// with them, less `lateness`.
    pub async fn freshness(&self, table: &str, lateness: Duration) -> Result<Freshness, ApiError> {
        let mut known = self.watermarks.lock().await;
        let mark = match known.get(table) {
            Some(m) => *m,
            None => {
                let job = jobs::Job::ALL
                    .into_iter()
                    .find(|j| j.tables().contains(&table));
                // The version the session's queries read, not the newest: a job that
                // commits after the view was built must not make older figures look fresher.
                let mark = match (job, self.tables.get(table)) {
                    (Some(job), Some(t)) => {
                        lake::tables::covered(t, &jobs::watermark_app_id(job, self.tz)).await?
                    }
                    _ => None,
                };
                known.insert(table.to_string(), mark);
                mark
            }
        };
        Ok(Freshness {
            complete_up_to: mark.map(|m| m.saturating_sub(lateness.as_millis() as i64)),
            tz: self.tz,
        })
    }

    /// The value cached under `key` (a typed report, a response body), made by `make` on a
    /// miss; kept until the lake changes.
    pub async fn cached<T, F, Fut>(&self, key: String, make: F) -> Result<Arc<T>, ApiError>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let hit = self.cache.lock().expect("not poisoned").get(&key).cloned();
        if let Some(hit) = hit.and_then(|h| h.downcast::<T>().ok()) {
            return Ok(hit);
        }
        let made = Arc::new(make().await?);
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&made) as Arc<dyn Any + Send + Sync>);
        Ok(made)
    }
}

pub struct LakeView {
    lake: Lake,
    limits: Limits,
    tz: ReportTz,
    current: tokio::sync::RwLock<Arc<View>>,
    checked: Mutex<Instant>,
}

impl LakeView {
    pub async fn open(lake: Lake, limits: Limits, tz: ReportTz) -> Result<Self, ApiError> {
        let view = build(&lake, limits, tz, fingerprint(&lake)).await?;
        Ok(Self {
            lake,
            limits,
            tz,
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
                    *slot = Arc::new(build(&self.lake, self.limits, self.tz, now).await?);
                    tracing::info!("the lake changed: session reopened, report cache cleared");
                }
            }
        }
        Ok(Arc::clone(&*self.current.read().await))
    }
}

async fn build(
    lake: &Lake,
    limits: Limits,
    tz: ReportTz,
    fingerprint: String,
) -> Result<View, ApiError> {
    let (ctx, tables) = query::session::session_and_tables(lake)
        .await
        .map_err(|e| ApiError::internal(format!("opening the lake: {e}")))?;
    Ok(View {
        sql: Guarded::new(ctx.clone(), limits),
        ctx,
        fingerprint,
        cache: Mutex::new(HashMap::new()),
        tz,
        tables,
        watermarks: tokio::sync::Mutex::new(HashMap::new()),
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
    dirs.extend(
        METRIC_TABLES
            .iter()
            .chain(&[REVISIONS_TABLE])
            .map(|t| root.join("metrics").join(t)),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Ingests `ts_ms`'s event (from a file: complete once committed) and runs the jobs.
    async fn add_event(lake: &Lake, dir: &std::path::Path, ts_ms: i64) {
        let file = dir.join(format!("{ts_ms}.ndjson"));
        std::fs::write(
            &file,
            format!(
                r#"{{"event_id":"e{ts_ms}","ts":{ts_ms},"user_id":7,"type":"like","platform":"ios"}}"#
            ) + "\n",
        )
        .unwrap();
        let mut writer = ingest::writer::LakeWriter::open(lake, Default::default())
            .await
            .unwrap();
        ingest::backfill::run(&mut writer, &file, |_| {})
            .await
            .unwrap();
        let opts = jobs::Options {
            lake: lake.clone(),
            registry: None,
            tz: Default::default(),
            from: None,
            to: None,
            full: false,
            jobs: vec![jobs::Job::Activity],
            memory: None,
        };
        jobs::run(&opts, &jobs::Quiet).await.unwrap();
    }

    #[tokio::test]
    async fn freshness_comes_from_the_versions_the_figures_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(&dir.path().join("lake").to_string_lossy()).unwrap();
        let first = 1_430_186_400_000; // 2015-04-28T02:00:00Z
        add_event(&lake, dir.path(), first).await;
        let views = LakeView::open(lake.clone(), Limits::default(), ReportTz::default())
            .await
            .unwrap();
        let old = views.current().await.unwrap();
        // The job commits a day later's figures after the view was built and before the
        // view is first asked how fresh it is.
        add_event(&lake, dir.path(), first + 86_400_000).await;
        let lateness = Duration::from_secs(60);
        let fresh = old.freshness("activity", lateness).await.unwrap();
        assert_eq!(fresh.complete_up_to, Some(first - 60_000));
        crate::row! {
            pub struct Days { pub days: i64 }
        }
        let rows: Vec<Days> = old
            .typed(
                "SELECT count(*) AS days FROM activity WHERE breakdown = 'total'",
                &["activity"],
            )
            .await
            .unwrap();
        assert_eq!(rows[0].days, 1);
        // A view built now has both.
        let new = build(&lake, Limits::default(), ReportTz::default(), String::new())
            .await
            .unwrap();
        let fresh = new.freshness("activity", lateness).await.unwrap();
        assert_eq!(fresh.complete_up_to, Some(first + 86_400_000 - 60_000));
    }
}
