//! Follower baselines: how many followers an official account had at an instant, from the
//! platform's own records (an account had millions of fans before the lake's first day). The
//! accounts job reports followers as the latest baseline plus the net follows since it.
//!
//! A file is imported once: its SHA-256 is recorded with the import, and importing the same
//! bytes again changes nothing. A later file's figure for the same account and instant
//! replaces the earlier one.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{AccountKind, Registry, bad};
use crate::Result;

/// One account's followers at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Baseline {
    pub account_id: String,
    /// The instant the figure is for (epoch ms): follows after it count on top.
    pub as_of_ms: i64,
    pub followers: i64,
    /// The SHA-256 of the file it came from.
    pub import_sha256: String,
}

/// One imported file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaselineImport {
    pub sha256: String,
    /// The file's name as given to the import.
    pub source: String,
    pub rows: i64,
    pub imported_at_ms: i64,
    pub actor: String,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// The file's rows are now baselines.
    New(BaselineImport),
    /// The same bytes were imported before: nothing changed.
    Already(BaselineImport),
}

pub(super) const MIGRATION: &str = "CREATE TABLE follower_imports (
        sha256 TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        rows INTEGER NOT NULL,
        imported_at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL
    );
    CREATE TABLE follower_baselines (
        account_id TEXT NOT NULL,
        as_of_ms INTEGER NOT NULL,
        followers INTEGER NOT NULL,
        import_sha256 TEXT NOT NULL REFERENCES follower_imports(sha256),
        PRIMARY KEY (account_id, as_of_ms)
    );";

/// A row of a file to import: `(account_id, as_of_ms, followers)`.
pub type BaselineRow = (String, i64, i64);

impl Registry {
    /// Imports a file's baselines in one transaction: every row's account must be a
    /// registered official account, its followers not negative, and each account and instant
    /// once in the file (rows are numbered from 1 in errors). Importing bytes already imported
    /// (the same `sha256`) changes nothing.
    pub fn import_baselines(
        &mut self,
        sha256: &str,
        source: &str,
        rows: &[BaselineRow],
        actor: &str,
    ) -> Result<Imported> {
        if let Some(before) = self.baseline_import(sha256)? {
            return Ok(Imported::Already(before));
        }
        if rows.is_empty() {
            return Err(bad(format!("{source}: no rows")));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, (account, as_of_ms, followers)) in rows.iter().enumerate() {
            let row = i + 1;
            match self.account(account)? {
                Some(a) if a.kind == AccountKind::Official => {}
                Some(a) => {
                    return Err(bad(format!(
                        "{source}: row {row}: account_id {account:?} is of kind {}, not official",
                        a.kind
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "{source}: row {row}: account_id {account:?} is not a registered \
                         account (spacepulse accounts add {account} --kind official)"
                    )));
                }
            }
            if *followers < 0 {
                return Err(bad(format!(
                    "{source}: row {row}: followers must not be negative, got {followers}"
                )));
            }
            if !seen.insert((account.as_str(), *as_of_ms)) {
                return Err(bad(format!(
                    "{source}: row {row}: account_id {account:?} has a second figure for the \
                     same as_of"
                )));
            }
        }
        let import = BaselineImport {
            sha256: sha256.to_string(),
            source: source.to_string(),
            rows: rows.len() as i64,
            imported_at_ms: chrono::Utc::now().timestamp_millis(),
            actor: actor.to_string(),
        };
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO follower_imports (sha256, source, rows, imported_at_ms, actor)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                import.sha256,
                import.source,
                import.rows,
                import.imported_at_ms,
                import.actor
            ],
        )?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO follower_baselines (account_id, as_of_ms, followers, import_sha256)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(account_id, as_of_ms) DO UPDATE
                 SET followers = excluded.followers, import_sha256 = excluded.import_sha256",
            )?;
            for (account, as_of_ms, followers) in rows {
                insert.execute(params![account, as_of_ms, followers, sha256])?;
            }
        }
        tx.commit()?;
        Ok(Imported::New(import))
    }

    fn baseline_import(&self, sha256: &str) -> Result<Option<BaselineImport>> {
        Ok(self
            .conn
            .query_row(
                "SELECT sha256, source, rows, imported_at_ms, actor FROM follower_imports
                 WHERE sha256 = ?1",
                params![sha256],
                row_to_import,
            )
            .optional()?)
    }

    /// Every imported file, oldest first.
    pub fn baseline_imports(&self) -> Result<Vec<BaselineImport>> {
        let mut stmt = self.conn.prepare(
            "SELECT sha256, source, rows, imported_at_ms, actor FROM follower_imports
             ORDER BY imported_at_ms, sha256",
        )?;
        let rows = stmt.query_map([], row_to_import)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every baseline, by account and instant.
    pub fn baselines(&self) -> Result<Vec<Baseline>> {
        let mut stmt = self.conn.prepare(
            "SELECT account_id, as_of_ms, followers, import_sha256 FROM follower_baselines
             ORDER BY account_id, as_of_ms",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Baseline {
                account_id: r.get(0)?,
                as_of_ms: r.get(1)?,
                followers: r.get(2)?,
                import_sha256: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn row_to_import(r: &rusqlite::Row<'_>) -> rusqlite::Result<BaselineImport> {
    Ok(BaselineImport {
        sha256: r.get(0)?,
        source: r.get(1)?,
        rows: r.get(2)?,
        imported_at_ms: r.get(3)?,
        actor: r.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classify;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(&dir.path().join("r.sqlite")).unwrap();
        r.add_account("xiaomi", AccountKind::Official, "Xiaomi", "test")
            .unwrap();
        r.add_account("ads-co", AccountKind::Advertiser, "Ads", "test")
            .unwrap();
        (dir, r)
    }

    #[test]
    fn a_file_imports_once_and_a_later_file_replaces_the_same_instant() {
        let (_dir, mut r) = registry();
        let rows = vec![
            ("xiaomi".to_string(), 1_000, 5_000_000),
            ("xiaomi".to_string(), 2_000, 5_000_100),
        ];
        let first = r.import_baselines("aa", "a.csv", &rows, "me").unwrap();
        assert!(matches!(first, Imported::New(ref i) if i.rows == 2));
        let again = r.import_baselines("aa", "a.csv", &rows, "me").unwrap();
        assert!(matches!(again, Imported::Already(ref i) if i.source == "a.csv"));
        assert_eq!(r.baselines().unwrap().len(), 2);
        r.import_baselines("bb", "b.csv", &[("xiaomi".into(), 2_000, 7)], "me")
            .unwrap();
        let all = r.baselines().unwrap();
        assert_eq!(
            all.iter()
                .map(|b| (b.as_of_ms, b.followers, b.import_sha256.as_str()))
                .collect::<Vec<_>>(),
            vec![(1_000, 5_000_000, "aa"), (2_000, 7, "bb")]
        );
        assert_eq!(r.baseline_imports().unwrap().len(), 2);
    }

    #[test]
    fn a_bad_row_names_itself_and_nothing_is_imported() {
        let (_dir, mut r) = registry();
        let cases: [(BaselineRow, &str); 3] = [
            (
                ("nobody".into(), 1, 1),
                "row 2: account_id \"nobody\" is not a registered",
            ),
            (
                ("ads-co".into(), 1, 1),
                "row 2: account_id \"ads-co\" is of kind advertiser",
            ),
            (
                ("xiaomi".into(), 5, -1),
                "row 2: followers must not be negative",
            ),
        ];
        for (row, want) in cases {
            let rows = vec![("xiaomi".to_string(), 9, 1), row];
            let e = r.import_baselines("cc", "f.csv", &rows, "me").unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(e.class(), crate::error::Class::BadInput);
        }
        let dup = vec![("xiaomi".to_string(), 9, 1), ("xiaomi".to_string(), 9, 2)];
        let e = r.import_baselines("cc", "f.csv", &dup, "me").unwrap_err();
        assert!(e.to_string().contains("row 2"), "{e}");
        assert!(r.baselines().unwrap().is_empty());
        assert!(r.baseline_imports().unwrap().is_empty());
    }
}
