//! Share links: a read-only link to one report and range that an official account or an
//! advertiser hands to someone without an account. The link carries 256 random bits; the
//! registry keeps only their SHA-256. A link expires, may need a password (PBKDF2-HMAC-SHA256,
//! salted), can be revoked, and every creation, opening, wrong password and revocation is in
//! its audit log.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::access::{now_ms, random_hex};
use super::{AccountKind, Registry, bad, missing, sha256_hex};
use crate::Result;

/// How a share link's secret starts.
pub const SHARE_PREFIX: &str = "spl_";
/// The longest a link may live: 90 days.
pub const MAX_SHARE_MS: i64 = 90 * 86_400_000;
/// PBKDF2 rounds of a link's password.
const PBKDF2_ROUNDS: u32 = 60_000;

pub(super) const MIGRATION: &str = "CREATE TABLE share_links (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        report TEXT NOT NULL,
        target TEXT NOT NULL,
        range TEXT,
        from_day TEXT,
        to_day TEXT,
        password TEXT,
        created_by TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );
    CREATE INDEX share_links_by_account ON share_links(account_id);
    CREATE TABLE share_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        link_id TEXT NOT NULL REFERENCES share_links(id),
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL
    );
    CREATE INDEX share_audit_by_link ON share_audit(link_id, seq);";

/// A report a link can share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedReport {
    /// An official account's followers page (target: the account).
    Followers,
    /// An advertiser's report (target: the advertiser).
    Advertiser,
    /// A campaign's funnel and launch (target: the campaign).
    Campaign,
}

impl SharedReport {
    pub fn as_str(self) -> &'static str {
        match self {
            SharedReport::Followers => "followers",
            SharedReport::Advertiser => "advertiser",
            SharedReport::Campaign => "campaign",
        }
    }
}

impl std::str::FromStr for SharedReport {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "followers" => Ok(SharedReport::Followers),
            "advertiser" => Ok(SharedReport::Advertiser),
            "campaign" => Ok(SharedReport::Campaign),
            _ => Err(bad(format!(
                "report {s:?}: expected followers, advertiser or campaign"
            ))),
        }
    }
}

/// A share link as its owner and operators see it (never its secret or password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareLink {
    pub id: String,
    pub account_id: String,
    pub report: SharedReport,
    pub target: String,
    /// A preset (`today`, `7d`, `30d`) or `from`/`to` days; all days when none.
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub password: bool,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// What a new link shares.
#[derive(Debug, Clone, Default)]
pub struct NewShare {
    pub account_id: String,
    pub report: Option<SharedReport>,
    pub target: String,
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// How long it lives, at most [`MAX_SHARE_MS`].
    pub lifetime_ms: i64,
    pub password: Option<String>,
}

/// A new link and its secret, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct SharedSecret {
    pub secret: String,
    pub link: ShareLink,
}

/// One entry of a link's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareEvent {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
}

/// What opening a link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The link is live and the password (if any) right.
    Open(Box<ShareLink>),
    /// The link needs a password and none was given.
    NeedsPassword,
    /// The password given was wrong.
    WrongPassword,
    /// No such link, or revoked, or expired: the visitor learns nothing more.
    Gone,
    /// Too many wrong passwords for the link lately: no password is checked until
    /// `retry_after_s` seconds have passed.
    LockedOut { retry_after_s: i64 },
}

/// Wrong passwords for one link within [`LOCKOUT_WINDOW_MS`] after which it takes none.
pub const LOCKOUT_AFTER: i64 = 10;
/// The window the wrong passwords are counted over, and how long a lockout lasts.
pub const LOCKOUT_WINDOW_MS: i64 = 15 * 60 * 1000;

const COLUMNS: &str = "id, account_id, report, target, range, from_day, to_day, \
     password IS NOT NULL, created_by, created_at_ms, expires_at_ms, revoked_at_ms";

fn row_to_link(r: &rusqlite::Row<'_>) -> rusqlite::Result<ShareLink> {
    let report: String = r.get(2)?;
    Ok(ShareLink {
        id: r.get(0)?,
        account_id: r.get(1)?,
        report: report.parse().map_err(|e: crate::Error| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        target: r.get(3)?,
        range: r.get(4)?,
        from: r.get(5)?,
        to: r.get(6)?,
        password: r.get(7)?,
        created_by: r.get(8)?,
        created_at_ms: r.get(9)?,
        expires_at_ms: r.get(10)?,
        revoked_at_ms: r.get(11)?,
    })
}

fn valid_day(d: &str) -> bool {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()
}

impl Registry {
    /// Creates a link to one of the account's own reports: its followers (an official
    /// account), its advertiser report (an advertiser), or a campaign it owns.
    pub fn create_share(&self, new: &NewShare, actor: &str) -> Result<SharedSecret> {
        let report = new
            .report
            .ok_or_else(|| bad("report: expected followers, advertiser or campaign"))?;
        let account = self
            .account(&new.account_id)?
            .ok_or_else(|| missing(format!("no account {:?}", new.account_id)))?;
        let owns = match report {
            SharedReport::Followers => {
                account.kind == AccountKind::Official && new.target == account.id
            }
            SharedReport::Advertiser => {
                account.kind == AccountKind::Advertiser && new.target == account.id
            }
            SharedReport::Campaign => self
                .campaign(&new.target)?
                .is_some_and(|c| c.account_id == account.id),
        };
        if !owns {
            return Err(missing(format!(
                "no {} report {:?} of account {:?}",
                report.as_str(),
                new.target,
                account.id
            )));
        }
        if let Some(r) = &new.range
            && !["today", "7d", "30d"].contains(&r.as_str())
        {
            return Err(bad(format!(
                "range {r:?}: expected today, 7d or 30d (or from and to)"
            )));
        }
        for (name, d) in [("from", &new.from), ("to", &new.to)] {
            if let Some(d) = d
                && !valid_day(d)
            {
                return Err(bad(format!("{name} {d:?}: expected YYYY-MM-DD")));
            }
        }
        if new.range.is_some() && (new.from.is_some() || new.to.is_some()) {
            return Err(bad("range: give a preset or from/to, not both"));
        }
        if let (Some(f), Some(t)) = (&new.from, &new.to)
            && f > t
        {
            return Err(bad("from: after to"));
        }
        if new.lifetime_ms <= 0 || new.lifetime_ms > MAX_SHARE_MS {
            return Err(bad(format!(
                "expires: a link lives between a second and 90 days, got {} s",
                new.lifetime_ms / 1000
            )));
        }
        let password = match &new.password {
            Some(p) if p.chars().count() < 8 => {
                return Err(bad("password: at least 8 characters"));
            }
            Some(p) if p.len() > 1024 => return Err(bad("password: at most 1024 bytes")),
            Some(p) => Some(hash_password(p)?),
            None => None,
        };
        let secret = format!("{SHARE_PREFIX}{}", random_hex(32)?);
        let at = now_ms();
        let link = ShareLink {
            id: format!("shr_{}", random_hex(6)?),
            account_id: account.id.clone(),
            report,
            target: new.target.clone(),
            range: new.range.clone(),
            from: new.from.clone(),
            to: new.to.clone(),
            password: password.is_some(),
            created_by: actor.into(),
            created_at_ms: at,
            expires_at_ms: at.saturating_add(new.lifetime_ms),
            revoked_at_ms: None,
        };
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO share_links (id, hash, account_id, report, target, range, from_day, \
             to_day, password, created_by, created_at_ms, expires_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                link.id,
                sha256_hex(secret.as_bytes()),
                link.account_id,
                report.as_str(),
                link.target,
                link.range,
                link.from,
                link.to,
                password,
                actor,
                at,
                link.expires_at_ms
            ],
        )?;
        audit(&tx, &link.id, at, actor, "created")?;
        tx.commit()?;
        Ok(SharedSecret { secret, link })
    }

    /// The links of `account` (every link when `None`), newest first.
    pub fn shares(&self, account: Option<&str>) -> Result<Vec<ShareLink>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM share_links WHERE ?1 IS NULL OR account_id = ?1 \
             ORDER BY created_at_ms DESC, id"
        ))?;
        let rows = stmt.query_map(params![account], row_to_link)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A link by id, if it is `account`'s (any account's when `None`).
    pub fn share(&self, id: &str, account: Option<&str>) -> Result<Option<ShareLink>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM share_links WHERE id = ?1 \
                     AND (?2 IS NULL OR account_id = ?2)"
                ),
                params![id, account],
                row_to_link,
            )
            .optional()?)
    }

    /// Revokes a live link of `account` (any account's when `None`); false if there was none.
    pub fn revoke_share(&self, id: &str, account: Option<&str>, actor: &str) -> Result<bool> {
        let at = now_ms();
        let tx = self.conn.unchecked_transaction()?;
        let n = tx.execute(
            "UPDATE share_links SET revoked_at_ms = ?3 WHERE id = ?1 \
             AND (?2 IS NULL OR account_id = ?2) AND revoked_at_ms IS NULL",
            params![id, account, at],
        )?;
        if n > 0 {
            audit(&tx, id, at, actor, "revoked")?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Opens a link by its secret, checking its password; each opening and each wrong
    /// password is audited under `visitor`.
    pub fn open_share(
        &self,
        secret: &str,
        password: Option<&str>,
        visitor: &str,
    ) -> Result<Opened> {
        let at = now_ms();
        let found: Option<(ShareLink, Option<String>)> = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS}, password FROM share_links WHERE hash = ?1"),
                params![sha256_hex(secret.as_bytes())],
                |r| Ok((row_to_link(r)?, r.get::<_, Option<String>>(12)?)),
            )
            .optional()?;
        let Some((link, stored)) = found else {
            return Ok(Opened::Gone);
        };
        if link.revoked_at_ms.is_some() || link.expires_at_ms <= at {
            return Ok(Opened::Gone);
        }
        if let Some(stored) = stored {
            let Some(given) = password else {
                return Ok(Opened::NeedsPassword);
            };
            // Guessing is slowed per link, whatever the visitor's address: after
            // LOCKOUT_AFTER wrong passwords in the window, none is checked (nor hashed) until
            // the oldest of them leaves it.
            let (wrong, oldest): (i64, Option<i64>) = self.conn.query_row(
                "SELECT count(*), min(at_ms) FROM (SELECT at_ms FROM share_audit \
                 WHERE link_id = ?1 AND action = 'wrong password' AND at_ms > ?2 \
                 ORDER BY seq DESC LIMIT ?3)",
                params![link.id, at - LOCKOUT_WINDOW_MS, LOCKOUT_AFTER],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if wrong >= LOCKOUT_AFTER {
                let until = oldest.unwrap_or(at) + LOCKOUT_WINDOW_MS;
                return Ok(Opened::LockedOut {
                    retry_after_s: ((until - at) as f64 / 1000.0).ceil().max(1.0) as i64,
                });
            }
            if !check_password(given, &stored) {
                audit(&self.conn, &link.id, at, visitor, "wrong password")?;
                return Ok(Opened::WrongPassword);
            }
        }
        audit(&self.conn, &link.id, at, visitor, "opened")?;
        Ok(Opened::Open(Box::new(link)))
    }

    /// A link's audit log, oldest first.
    pub fn share_audit(&self, id: &str) -> Result<Vec<ShareEvent>> {
        let mut stmt = self.conn.prepare(
            "SELECT at_ms, actor, action FROM share_audit WHERE link_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id], |r| {
            Ok(ShareEvent {
                at_ms: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn audit(conn: &rusqlite::Connection, id: &str, at: i64, actor: &str, action: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO share_audit (link_id, at_ms, actor, action) VALUES (?1, ?2, ?3, ?4)",
        params![id, at, actor, action],
    )?;
    Ok(())
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// PBKDF2-HMAC-SHA256 (RFC 8018), one 32-byte block.
fn pbkdf2(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..rounds {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

fn hash_password(password: &str) -> Result<String> {
    let salt = random_hex(16)?;
    let key = pbkdf2(password.as_bytes(), salt.as_bytes(), PBKDF2_ROUNDS);
    Ok(format!(
        "pbkdf2-sha256${PBKDF2_ROUNDS}${salt}${}",
        hex::encode(key)
    ))
}

fn check_password(given: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(want), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Ok(rounds) = rounds.parse::<u32>() else {
        return false;
    };
    let got = hex::encode(pbkdf2(given.as_bytes(), salt.as_bytes(), rounds.max(1)));
    // Compared in full whatever differs first.
    got.len() == want.len()
        && got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Campaign;

    #[test]
    fn pbkdf2_matches_rfc_7914s_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1), first 32 bytes.
        assert_eq!(
            hex::encode(pbkdf2(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        let h = hash_password("correct horse").unwrap();
        assert!(check_password("correct horse", &h));
        assert!(!check_password("correct hors", &h));
        assert!(!check_password("x", "garbage"));
    }

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(&dir.path().join("r.sqlite")).unwrap();
        r.add_account("xiaomi", AccountKind::Official, "", "t")
            .unwrap();
        r.add_account("huawei", AccountKind::Official, "", "t")
            .unwrap();
        r.add_account("ads", AccountKind::Advertiser, "", "t")
            .unwrap();
        r.add_campaign(&Campaign::with_defaults("launch", "xiaomi", 0))
            .unwrap();
        (dir, r)
    }

    /// A link's audit log, its actions alone.
    fn actions(r: &Registry, id: &str) -> Vec<String> {
        r.share_audit(id)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    fn new(account: &str, report: SharedReport, target: &str) -> NewShare {
        NewShare {
            account_id: account.into(),
            report: Some(report),
            target: target.into(),
            range: Some("7d".into()),
            lifetime_ms: 3_600_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_link_opens_its_one_report_until_revoked() {
        let (_dir, r) = registry();
        let s = r
            .create_share(&new("xiaomi", SharedReport::Campaign, "launch"), "tok_x")
            .unwrap();
        assert!(s.secret.starts_with(SHARE_PREFIX) && s.secret.len() == 4 + 64);
        assert_eq!(
            r.open_share(&s.secret, None, "visitor").unwrap(),
            Opened::Open(Box::new(s.link.clone()))
        );
        assert_eq!(r.open_share("spl_00", None, "v").unwrap(), Opened::Gone);
        assert_eq!(r.shares(Some("huawei")).unwrap(), vec![]);
        assert_eq!(r.shares(Some("xiaomi")).unwrap(), vec![s.link.clone()]);
        // Another account cannot revoke it; its owner can.
        assert!(!r.revoke_share(&s.link.id, Some("huawei"), "h").unwrap());
        assert!(r.revoke_share(&s.link.id, Some("xiaomi"), "x").unwrap());
        assert_eq!(r.open_share(&s.secret, None, "v").unwrap(), Opened::Gone);
        assert_eq!(actions(&r, &s.link.id), ["created", "opened", "revoked"]);
    }

    #[test]
    fn an_expired_link_opens_no_more() {
        let (_dir, r) = registry();
        let mut n = new("xiaomi", SharedReport::Followers, "xiaomi");
        n.lifetime_ms = 1;
        let s = r.create_share(&n, "t").unwrap();
        // The link's lifetime is a millisecond: once that has passed it is gone.
        let until = s.link.expires_at_ms;
        while now_ms() <= until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(r.open_share(&s.secret, None, "v").unwrap(), Opened::Gone);
    }

    #[test]
    fn only_the_owners_reports_and_sane_settings() {
        let (_dir, r) = registry();
        for (account, report, target) in [
            ("huawei", SharedReport::Campaign, "launch"),
            ("huawei", SharedReport::Followers, "xiaomi"),
            ("ads", SharedReport::Followers, "ads"),
            ("xiaomi", SharedReport::Advertiser, "xiaomi"),
        ] {
            let e = r
                .create_share(&new(account, report, target), "t")
                .unwrap_err();
            assert!(e.to_string().contains("no "), "{account} {report:?}: {e}");
        }
        let mut bad_range = new("xiaomi", SharedReport::Followers, "xiaomi");
        bad_range.range = Some("1y".into());
        assert!(r.create_share(&bad_range, "t").is_err());
        let mut forever = new("xiaomi", SharedReport::Followers, "xiaomi");
        forever.lifetime_ms = MAX_SHARE_MS + 1;
        assert!(r.create_share(&forever, "t").is_err());
        let mut short = new("xiaomi", SharedReport::Followers, "xiaomi");
        short.password = Some("short".into());
        assert!(r.create_share(&short, "t").is_err());
    }

    #[test]
    fn a_password_is_asked_checked_and_audited() {
        let (_dir, r) = registry();
        let mut n = new("ads", SharedReport::Advertiser, "ads");
        n.password = Some("board meeting".into());
        let s = r.create_share(&n, "t").unwrap();
        assert!(s.link.password);
        assert_eq!(
            r.open_share(&s.secret, None, "v").unwrap(),
            Opened::NeedsPassword
        );
        assert_eq!(
            r.open_share(&s.secret, Some("board"), "v").unwrap(),
            Opened::WrongPassword
        );
        assert!(matches!(
            r.open_share(&s.secret, Some("board meeting"), "v").unwrap(),
            Opened::Open(_)
        ));
        assert_eq!(
            actions(&r, &s.link.id),
            ["created", "wrong password", "opened"]
        );
    }

    #[test]
    fn guessing_a_password_locks_the_link_for_a_while() {
        let (_dir, r) = registry();
        let mut n = new("ads", SharedReport::Advertiser, "ads");
        n.password = Some("board meeting".into());
        let s = r.create_share(&n, "t").unwrap();
        for _ in 0..LOCKOUT_AFTER {
            assert_eq!(
                r.open_share(&s.secret, Some("guess"), "v").unwrap(),
                Opened::WrongPassword
            );
        }
        // Now even the right password is not checked, and the refusal says for how long.
        match r.open_share(&s.secret, Some("board meeting"), "v").unwrap() {
            Opened::LockedOut { retry_after_s } => {
                assert!((1..=LOCKOUT_WINDOW_MS / 1000).contains(&retry_after_s))
            }
            other => panic!("{other:?}"),
        }
        // Without a password the form is still shown; once the wrong guesses are older than
        // the window, the right password opens it.
        assert_eq!(
            r.open_share(&s.secret, None, "v").unwrap(),
            Opened::NeedsPassword
        );
        r.conn
            .execute(
                "UPDATE share_audit SET at_ms = at_ms - ?1 WHERE action = 'wrong password'",
                params![LOCKOUT_WINDOW_MS],
            )
            .unwrap();
        assert!(matches!(
            r.open_share(&s.secret, Some("board meeting"), "v").unwrap(),
            Opened::Open(_)
        ));
    }
}
