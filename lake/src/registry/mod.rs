//! The embedded registry: one SQLite file beside the tables (`<lake>/_registry.sqlite`).
//!
//! This module owns its schema, migrations (`PRAGMA user_version`) and queries; nothing else
//! writes SQL against it. It holds the campaigns the funnel and launch jobs compute; the
//! dashboard extends it with accounts and tokens.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::Class;
use crate::tables::Lake;
use crate::{Error, Result};

mod access;
mod baselines;
mod shares;
pub use access::{
    Account, AccountKind, Audit, DEFAULT_CURRENCY, QueryRecord, QueryRun, Role, SESSION_PREFIX,
    Token, TokenInfo, VerificationState, check_currency,
};
pub use baselines::{Baseline, BaselineImport, BaselineRow, Imported};
pub use shares::{
    LOCKOUT_AFTER, LOCKOUT_WINDOW_MS, MAX_SHARE_MS, NewShare, Opened, SHARE_PREFIX, ShareEvent,
    ShareLink, SharedReport, SharedSecret,
};

/// The registry file's name in a local lake.
pub const REGISTRY_FILE: &str = "_registry.sqlite";

/// The default funnel: page view, then reservation, then pre-order, within 24 hours.
pub const DEFAULT_STEPS: [&str; 3] = ["page_view", "reserve", "preorder"];
pub const DEFAULT_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// A launch's milestones, in seconds after its start: the jobs' table and the live view both
/// report users at these moments.
pub const LAUNCH_MILESTONES: [i64; 7] = [1, 10, 60, 600, 1800, 3600, 86_400];
pub const DEFAULT_MODE: &str = "furthest";

/// A launch campaign of an official account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Campaign {
    pub id: String,
    pub account_id: String,
    /// When the campaign starts (epoch ms): the launch curve's zero, the funnel's first instant.
    pub start_ms: i64,
    /// Event types, in order.
    pub steps: Vec<String>,
    pub window_ms: i64,
    /// `furthest` or `first` (see the query crate's funnel).
    pub mode: String,
}

impl Campaign {
    /// A campaign with the default funnel (page view, reservation, pre-order within 24 hours,
    /// each user's furthest chain).
    pub fn with_defaults(id: &str, account_id: &str, start_ms: i64) -> Self {
        Self {
            id: id.into(),
            account_id: account_id.into(),
            start_ms,
            steps: DEFAULT_STEPS.iter().map(|s| s.to_string()).collect(),
            window_ms: DEFAULT_WINDOW_MS,
            mode: "furthest".into(),
        }
    }
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE campaigns (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        steps TEXT NOT NULL,
        window_ms INTEGER NOT NULL,
        mode TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );",
    // The dashboard's accounts, their verification history, and access tokens (hashes only).
    "CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE account_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        label TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );",
    // The dashboard's login sessions: the cookie holds a session's secret, never a token.
    "CREATE TABLE sessions (
        hash TEXT PRIMARY KEY,
        token_id TEXT NOT NULL REFERENCES tokens(id),
        created_at_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_token ON sessions(token_id);",
    // Analysts' and operators' SQL over HTTP, one record per query.
    "CREATE TABLE sql_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        token_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        role TEXT NOT NULL,
        sql_sha256 TEXT NOT NULL,
        sql_text TEXT NOT NULL,
        sql_bytes INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        rows INTEGER,
        outcome TEXT NOT NULL,
        request_id TEXT
    );
    CREATE INDEX sql_audit_by_token ON sql_audit(token_id, seq);",
    // Official accounts' follower baselines, from imported files.
    baselines::MIGRATION,
    // The currency an advertiser's money is reported in.
    "ALTER TABLE accounts ADD COLUMN currency TEXT NOT NULL DEFAULT 'CNY';",
    // Read-only links to one report, for people without an account.
    shares::MIGRATION,
];

/// An open registry.
pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The caller's input is wrong.
fn bad(what: impl Into<String>) -> Error {
    classed(Class::BadInput, what)
}

/// What the caller named is not in the registry.
fn missing(what: impl Into<String>) -> Error {
    classed(Class::NotFound, what)
}

/// The registry already holds what the caller would add, or is in that state already.
fn conflict(what: impl Into<String>) -> Error {
    classed(Class::Conflict, what)
}

fn classed(class: Class, what: impl Into<String>) -> Error {
    Error::Registry {
        class,
        message: what.into(),
    }
}

impl Registry {
    /// Where the registry of `lake` lives: `explicit`, or `_registry.sqlite` in a local lake.
    pub fn path_for(lake: &Lake, explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = explicit {
            return Ok(p.to_path_buf());
        }
        let dir = lake.url().to_file_path().map_err(|()| {
            bad("the lake is not a local directory: name the registry file with --registry")
        })?;
        Ok(dir.join(REGISTRY_FILE))
    }

    /// Opens (creating and migrating if needed) the registry at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            return Err(classed(
                Class::Unavailable,
                format!(
                    "{}: schema version {version} is newer than this spacepulse knows ({})",
                    path.display(),
                    MIGRATIONS.len()
                ),
            ));
        }
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers a campaign; its id must be new.
    pub fn add_campaign(&self, c: &Campaign) -> Result<()> {
        validate(c)?;
        let steps = serde_json::to_string(&c.steps)?;
        let now = chrono::Utc::now().timestamp_millis();
        let inserted = self.conn.execute(
            "INSERT INTO campaigns (id, account_id, start_ms, steps, window_ms, mode, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO NOTHING",
            params![c.id, c.account_id, c.start_ms, steps, c.window_ms, c.mode, now],
        )?;
        if inserted == 0 {
            return Err(conflict(format!(
                "campaign {:?} is already registered (remove it first to change it)",
                c.id
            )));
        }
        Ok(())
    }

    /// Removes a campaign; false if there was none with that id.
    pub fn remove_campaign(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM campaigns WHERE id = ?1", params![id])?
            > 0)
    }

    pub fn campaign(&self, id: &str) -> Result<Option<Campaign>> {
        self.conn
            .query_row(
                "SELECT id, account_id, start_ms, steps, window_ms, mode FROM campaigns WHERE id = ?1",
                params![id],
                row_to_campaign,
            )
            .optional()?
            .transpose()
    }

    /// Every campaign, by id.
    pub fn campaigns(&self) -> Result<Vec<Campaign>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, account_id, start_ms, steps, window_ms, mode FROM campaigns ORDER BY id",
        )?;
        let rows = stmt.query_map([], row_to_campaign)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }
}

fn row_to_campaign(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Campaign>> {
    let steps: String = r.get(3)?;
    Ok(match serde_json::from_str(&steps) {
        Ok(steps) => Ok(Campaign {
            id: r.get(0)?,
            account_id: r.get(1)?,
            start_ms: r.get(2)?,
            steps,
            window_ms: r.get(4)?,
            mode: r.get(5)?,
        }),
        Err(e) => Err(e.into()),
    })
}

fn validate(c: &Campaign) -> Result<()> {
    if c.id.is_empty() || c.id.len() > 64 {
        return Err(bad("campaign id: expected 1 to 64 bytes"));
    }
    if c.account_id.is_empty() {
        return Err(bad("account: must not be empty"));
    }
    if c.steps.is_empty() || c.steps.len() > 32 {
        return Err(bad("steps: expected 1 to 32 event types"));
    }
    for s in &c.steps {
        if !crate::event::valid_type_name(s) {
            return Err(bad(format!(
                "steps: {s:?} is not an event type (lowercase letters, digits, _)"
            )));
        }
    }
    if c.window_ms <= 0 {
        return Err(bad("window: must be positive"));
    }
    if c.mode != "furthest" && c.mode != "first" {
        return Err(bad(format!(
            "mode: expected furthest or first, got {:?}",
            c.mode
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaigns_round_trip_and_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        let c = Campaign {
            id: "redmi-launch".into(),
            account_id: "xiaomi".into(),
            start_ms: 1_430_186_400_000,
            steps: DEFAULT_STEPS.iter().map(|s| s.to_string()).collect(),
            window_ms: DEFAULT_WINDOW_MS,
            mode: DEFAULT_MODE.into(),
        };
        {
            let r = Registry::open(&path).unwrap();
            r.add_campaign(&c).unwrap();
            assert!(
                r.add_campaign(&c)
                    .unwrap_err()
                    .to_string()
                    .contains("already")
            );
        }
        let r = Registry::open(&path).unwrap();
        assert_eq!(r.campaigns().unwrap(), vec![c.clone()]);
        assert_eq!(r.campaign("redmi-launch").unwrap(), Some(c));
        assert!(r.remove_campaign("redmi-launch").unwrap());
        assert!(!r.remove_campaign("redmi-launch").unwrap());
        let mut bad_steps = Campaign {
            id: "x".into(),
            account_id: "a".into(),
            start_ms: 0,
            steps: vec!["Page View".into()],
            window_ms: 1,
            mode: "furthest".into(),
        };
        assert!(
            r.add_campaign(&bad_steps)
                .unwrap_err()
                .to_string()
                .contains("steps")
        );
        bad_steps.steps = vec!["page_view".into()];
        bad_steps.mode = "last".into();
        assert!(
            r.add_campaign(&bad_steps)
                .unwrap_err()
                .to_string()
                .contains("mode")
        );
    }
}
