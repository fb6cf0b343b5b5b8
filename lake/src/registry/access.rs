//! Accounts, their verification with its audit log, and access tokens.
//!
//! A token is 256 random bits shown once when issued; the registry keeps only its SHA-256.
//! Each token belongs to one role and one account: official-account and advertiser tokens to
//! that tenant, operator and analyst tokens to a staff account.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Registry, bad, classed, conflict, missing};
use crate::Result;
use crate::error::Class;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(bad(format!(
                        "{}: expected one of {}, got {s:?}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What an account is.
    AccountKind { Official = "official", Advertiser = "advertiser", Staff = "staff" }
);
string_enum!(
    /// Where an account stands; only verified tenants get reports.
    VerificationState {
        Pending = "pending",
        Verified = "verified",
        Rejected = "rejected",
        Revoked = "revoked",
    }
);
string_enum!(
    /// What a token may do.
    Role {
        Operator = "operator",
        Analyst = "analyst",
        Official = "official",
        Advertiser = "advertiser",
        // Reads `/metrics` and nothing else (Prometheus's scrape credential).
        Scraper = "scraper",
    }
);

impl Role {
    /// The kind of account a token of this role belongs to.
    pub fn account_kind(self) -> AccountKind {
        match self {
            Role::Official => AccountKind::Official,
            Role::Advertiser => AccountKind::Advertiser,
            Role::Operator | Role::Analyst | Role::Scraper => AccountKind::Staff,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    pub kind: AccountKind,
    pub name: String,
    pub state: VerificationState,
    pub created_at_ms: i64,
    /// The ISO 4217 code an advertiser's money is reported in (`amount_cents` are its cents).
    pub currency: String,
}

/// One change of an account's state: who, when, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub at_ms: i64,
    pub actor: String,
    pub from_state: Option<VerificationState>,
    pub to_state: VerificationState,
    pub reason: String,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub account_id: String,
    pub label: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// One SQL query over HTTP, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub token_id: String,
    pub account_id: String,
    pub role: String,
    /// SHA-256 of the whole text, hex.
    pub sql_sha256: String,
    /// The text's first [`AUDIT_TEXT_BYTES`] bytes (cut at a character boundary).
    pub sql_text: String,
    pub sql_bytes: i64,
    pub duration_ms: i64,
    /// Rows returned; `None` when the query failed.
    pub rows: Option<i64>,
    /// `ok`, or the error's code (`time_limit`, `invalid_query`, ...).
    pub outcome: String,
    pub request_id: Option<String>,
}

/// One SQL query over HTTP as it ended, to record ([`Registry::record_query`]).
#[derive(Debug, Clone)]
pub struct QueryRun<'a> {
    pub token_id: &'a str,
    pub account_id: &'a str,
    pub role: &'a str,
    /// The whole text.
    pub sql: &'a str,
    pub duration_ms: i64,
    pub rows: Option<i64>,
    pub outcome: &'a str,
    pub request_id: Option<String>,
}

/// The most of a query's text the audit log keeps (its hash covers all of it).
pub const AUDIT_TEXT_BYTES: usize = 4096;
/// Records the audit log keeps; older ones are dropped as new ones come.
pub const AUDIT_RECORDS: i64 = 100_000;

/// A newly issued token: the secret is here once and nowhere else.
#[derive(Debug, Clone)]
pub struct Token {
    pub secret: String,
    pub info: TokenInfo,
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(super) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        classed(
            Class::Unavailable,
            format!("no randomness for a token: {e}"),
        )
    })?;
    Ok(hex::encode(buf))
}

fn hash(secret: &str) -> String {
    super::sha256_hex(secret.as_bytes())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn parse<T: std::str::FromStr>(s: String) -> rusqlite::Result<T> {
    s.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown value {s:?}").into(),
        )
    })
}

fn row_to_account(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        kind: parse(r.get(1)?)?,
        name: r.get(2)?,
        state: parse(r.get(3)?)?,
        created_at_ms: r.get(4)?,
        currency: r.get(5)?,
    })
}

fn row_to_token(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        role: parse(r.get(1)?)?,
        account_id: r.get(2)?,
        label: r.get(3)?,
        created_at_ms: r.get(4)?,
        revoked_at_ms: r.get(5)?,
    })
}

const ACCOUNT_COLUMNS: &str = "id, kind, name, state, created_at_ms, currency";
const TOKEN_COLUMNS: &str = "id, role, account_id, label, created_at_ms, revoked_at_ms";

/// Fails unless `currency` looks like an ISO 4217 code: three capital letters.
pub fn check_currency(currency: &str) -> Result<()> {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(format!(
            "currency {currency:?}: expected an ISO 4217 code of three capital letters (CNY)"
        )));
    }
    Ok(())
}

/// The currency of an account that names none.
pub const DEFAULT_CURRENCY: &str = "CNY";

/// How a session's secret starts (a token's starts `spt_`).
pub const SESSION_PREFIX: &str = "sps_";

impl Registry {
    /// Adds an account. Official accounts and advertisers start `pending` (an operator
    /// verifies them); staff accounts start `verified`.
    pub fn add_account(
        &self,
        id: &str,
        kind: AccountKind,
        name: &str,
        actor: &str,
    ) -> Result<Account> {
        if !valid_id(id) {
            return Err(bad(format!(
                "account id {id:?}: expected 1 to 64 of a-z, 0-9, -, _ and ."
            )));
        }
        let state = match kind {
            AccountKind::Staff => VerificationState::Verified,
            _ => VerificationState::Pending,
        };
        let at = now_ms();
        let name = if name.is_empty() { id } else { name };
        let tx = self.conn.unchecked_transaction()?;
        let inserted = tx.execute(
            "INSERT INTO accounts (id, kind, name, state, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO NOTHING",
            params![id, kind.as_str(), name, state.as_str(), at],
        )?;
        if inserted == 0 {
            return Err(conflict(format!("account {id:?} already exists")));
        }
        tx.execute(
            "INSERT INTO account_audit (account_id, at_ms, actor, from_state, to_state, reason)
             VALUES (?1, ?2, ?3, NULL, ?4, 'created')",
            params![id, at, actor, state.as_str()],
        )?;
        tx.commit()?;
        Ok(Account {
            id: id.into(),
            kind,
            name: name.into(),
            state,
            created_at_ms: at,
            currency: DEFAULT_CURRENCY.into(),
        })
    }

    /// Sets the currency an account's money is reported in: an ISO 4217 code (CNY, USD, ...).
    pub fn set_currency(&self, id: &str, currency: &str) -> Result<Account> {
        check_currency(currency)?;
        let changed = self.conn.execute(
            "UPDATE accounts SET currency = ?2 WHERE id = ?1",
            params![id, currency],
        )?;
        if changed == 0 {
            return Err(missing(format!("no account {id:?}")));
        }
        self.account(id)?
            .ok_or_else(|| missing(format!("no account {id:?}")))
    }

    pub fn account(&self, id: &str) -> Result<Option<Account>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                params![id],
                row_to_account,
            )
            .optional()?)
    }

    pub fn accounts(&self) -> Result<Vec<Account>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
        ))?;
        let rows = stmt.query_map([], row_to_account)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Changes an account's verification state, with the actor and reason in the audit log.
    /// Staff accounts are not verified (their tokens are revoked instead).
    pub fn set_state(
        &self,
        id: &str,
        to: VerificationState,
        actor: &str,
        reason: &str,
    ) -> Result<Account> {
        let account = self
            .account(id)?
            .ok_or_else(|| missing(format!("no account {id:?}")))?;
        if account.kind == AccountKind::Staff {
            return Err(bad(format!(
                "account {id:?} is a staff account: revoke its tokens instead"
            )));
        }
        if reason.trim().is_empty() {
            return Err(bad("reason: say why (it goes in the audit log)"));
        }
        if account.state == to {
            return Err(conflict(format!("account {id:?} is already {to}")));
        }
        if to == VerificationState::Pending {
            return Err(bad("state: an account cannot go back to pending"));
        }
        let at = now_ms();
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE accounts SET state = ?2 WHERE id = ?1",
            params![id, to.as_str()],
        )?;
        tx.execute(
            "INSERT INTO account_audit (account_id, at_ms, actor, from_state, to_state, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, at, actor, account.state.as_str(), to.as_str(), reason],
        )?;
        if matches!(to, VerificationState::Rejected | VerificationState::Revoked) {
            // A revoked (or rejected) account's logins end with it.
            tx.execute(
                "DELETE FROM sessions WHERE token_id IN (SELECT id FROM tokens WHERE account_id = ?1)",
                params![id],
            )?;
        }
        tx.commit()?;
        Ok(Account {
            state: to,
            ..account
        })
    }

    /// The account's audit log, oldest first.
    pub fn audit(&self, id: &str) -> Result<Vec<Audit>> {
        let mut stmt = self.conn.prepare(
            "SELECT at_ms, actor, from_state, to_state, reason FROM account_audit
             WHERE account_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id], |r| {
            Ok(Audit {
                at_ms: r.get(0)?,
                actor: r.get(1)?,
                from_state: r.get::<_, Option<String>>(2)?.map(parse).transpose()?,
                to_state: parse(r.get(3)?)?,
                reason: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Issues a token of `role` for `account_id` (an account of the role's kind).
    pub fn issue_token(&self, role: Role, account_id: &str, label: &str) -> Result<Token> {
        let account = self
            .account(account_id)?
            .ok_or_else(|| missing(format!("no account {account_id:?}: add it first")))?;
        if account.kind != role.account_kind() {
            return Err(bad(format!(
                "role {role}: needs a {} account, and {account_id:?} is {}",
                role.account_kind(),
                account.kind
            )));
        }
        let secret = format!("spt_{}", random_hex(32)?);
        let info = TokenInfo {
            id: format!("tok_{}", random_hex(6)?),
            role,
            account_id: account_id.into(),
            label: label.into(),
            created_at_ms: now_ms(),
            revoked_at_ms: None,
        };
        self.conn.execute(
            "INSERT INTO tokens (id, hash, role, account_id, label, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                info.id,
                hash(&secret),
                role.as_str(),
                account_id,
                label,
                info.created_at_ms
            ],
        )?;
        Ok(Token { secret, info })
    }

    /// Revokes a token, and ends the sessions logged in with it; false if there was no live
    /// token with that id.
    pub fn revoke_token(&self, id: &str) -> Result<bool> {
        let tx = self.conn.unchecked_transaction()?;
        let revoked = tx.execute(
            "UPDATE tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id, now_ms()],
        )? > 0;
        tx.execute("DELETE FROM sessions WHERE token_id = ?1", params![id])?;
        tx.commit()?;
        Ok(revoked)
    }

    /// Starts a login session for the live token `token_id`, ending at the latest after
    /// `max_ms`; returns its secret (`sps_` and 64 hex digits), which only the caller's cookie
    /// holds (the registry keeps its hash).
    pub fn start_session(&self, token_id: &str, max_ms: i64) -> Result<String> {
        let secret = format!("{SESSION_PREFIX}{}", random_hex(32)?);
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO sessions (hash, token_id, created_at_ms, last_seen_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?3, ?4)",
            params![hash(&secret), token_id, now, now.saturating_add(max_ms)],
        )?;
        // Ended sessions are swept as new ones start.
        self.conn.execute(
            "DELETE FROM sessions WHERE expires_at_ms <= ?1",
            params![now],
        )?;
        Ok(secret)
    }

    /// The session with this secret, its token and account, if it is live: not logged out,
    /// its token not revoked, its account not rejected or revoked, used within `idle_ms` and not past its
    /// end. A use is recorded (to the minute).
    pub fn session(&self, secret: &str, idle_ms: i64) -> Result<Option<(TokenInfo, Account)>> {
        self.session_at(secret, idle_ms, now_ms())
    }

    fn session_at(
        &self,
        secret: &str,
        idle_ms: i64,
        now: i64,
    ) -> Result<Option<(TokenInfo, Account)>> {
        if !secret.starts_with(SESSION_PREFIX) || secret.len() != SESSION_PREFIX.len() + 64 {
            return Ok(None);
        }
        let key = hash(secret);
        let found: Option<(String, i64)> = self
            .conn
            .query_row(
                "SELECT s.token_id, s.last_seen_ms FROM sessions s JOIN tokens t ON t.id = s.token_id
                 WHERE s.hash = ?1 AND t.revoked_at_ms IS NULL AND s.expires_at_ms > ?2
                   AND s.last_seen_ms > ?2 - ?3",
                params![key, now, idle_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((token_id, last_seen)) = found else {
            return Ok(None);
        };
        let Some((token, account)) = self.token_in_force(&token_id)? else {
            return Ok(None);
        };
        if now - last_seen >= 60_000 {
            self.conn.execute(
                "UPDATE sessions SET last_seen_ms = ?2 WHERE hash = ?1",
                params![key, now],
            )?;
        }
        Ok(Some((token, account)))
    }

    /// Records one query: its time, hash, kept text and size are taken here.
    pub fn record_query(&self, q: &QueryRun<'_>) -> Result<()> {
        let mut cut = q.sql.len().min(AUDIT_TEXT_BYTES);
        while !q.sql.is_char_boundary(cut) {
            cut -= 1;
        }
        let seq: i64 = self.conn.query_row(
            "INSERT INTO sql_audit (at_ms, token_id, account_id, role, sql_sha256, sql_text,
                 sql_bytes, duration_ms, rows, outcome, request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING seq",
            params![
                now_ms(),
                q.token_id,
                q.account_id,
                q.role,
                hash(q.sql),
                &q.sql[..cut],
                q.sql.len() as i64,
                q.duration_ms,
                q.rows,
                q.outcome,
                q.request_id
            ],
            |r| r.get(0),
        )?;
        if seq % 1000 == 0 {
            self.conn.execute(
                "DELETE FROM sql_audit WHERE seq <= ?1",
                params![seq - AUDIT_RECORDS],
            )?;
        }
        Ok(())
    }

    /// The newest `limit` query records, of one token if given, newest first.
    pub fn queries(&self, token_id: Option<&str>, limit: usize) -> Result<Vec<QueryRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, at_ms, token_id, account_id, role, sql_sha256, sql_text, sql_bytes,
                 duration_ms, rows, outcome, request_id FROM sql_audit
             WHERE ?1 IS NULL OR token_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![token_id, limit as i64], |r| {
            Ok(QueryRecord {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                token_id: r.get(2)?,
                account_id: r.get(3)?,
                role: r.get(4)?,
                sql_sha256: r.get(5)?,
                sql_text: r.get(6)?,
                sql_bytes: r.get(7)?,
                duration_ms: r.get(8)?,
                rows: r.get(9)?,
                outcome: r.get(10)?,
                request_id: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Token `id` and its account while the token may still be used: not revoked, its account
    /// not rejected or revoked (which also ends its login sessions).
    pub fn token_in_force(&self, id: &str) -> Result<Option<(TokenInfo, Account)>> {
        let Some(token) = self.token(id)?.filter(|t| t.revoked_at_ms.is_none()) else {
            return Ok(None);
        };
        let Some(account) = self.account(&token.account_id)? else {
            return Ok(None);
        };
        if matches!(
            account.state,
            VerificationState::Rejected | VerificationState::Revoked
        ) {
            return Ok(None);
        }
        Ok(Some((token, account)))
    }

    /// Ends the session with this secret (logout); false if there was none.
    pub fn end_session(&self, secret: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM sessions WHERE hash = ?1",
            params![hash(secret)],
        )? > 0)
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY account_id, created_at_ms, id"
        ))?;
        let rows = stmt.query_map([], row_to_token)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenInfo>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                params![id],
                row_to_token,
            )
            .optional()?)
    }

    /// The live token with this secret and its account, if any.
    pub fn authenticate(&self, secret: &str) -> Result<Option<(TokenInfo, Account)>> {
        if !secret.starts_with("spt_") || secret.len() != 68 {
            return Ok(None);
        }
        let token = self
            .conn
            .query_row(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_at_ms IS NULL"
                ),
                params![hash(secret)],
                row_to_token,
            )
            .optional()?;
        let Some(token) = token else { return Ok(None) };
        let account = self.account(&token.account_id)?.ok_or_else(|| {
            classed(
                Class::Internal,
                format!("token {} has no account", token.id),
            )
        })?;
        Ok(Some((token, account)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_tokens_and_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(&dir.path().join("r.sqlite")).unwrap();
        let a = r
            .add_account("xiaomi", AccountKind::Official, "Xiaomi", "op")
            .unwrap();
        assert_eq!(a.state, VerificationState::Pending);
        assert!(
            r.add_account("xiaomi", AccountKind::Official, "", "op")
                .is_err()
        );
        assert!(
            r.add_account("Bad Id", AccountKind::Official, "", "op")
                .is_err()
        );
        let t = r
            .issue_token(Role::Official, "xiaomi", "launch team")
            .unwrap();
        assert_eq!(t.secret.len(), 68);
        // Only the hash is stored.
        let stored: String = r
            .conn
            .query_row("SELECT hash FROM tokens", [], |row| row.get(0))
            .unwrap();
        assert_ne!(stored, t.secret);
        assert!(!stored.contains(&t.secret[4..]));
        let (info, account) = r.authenticate(&t.secret).unwrap().unwrap();
        assert_eq!(
            (info.role, account.state),
            (Role::Official, VerificationState::Pending)
        );
        assert!(r.authenticate("spt_nope").unwrap().is_none());
        // A role needs an account of its kind.
        let e = r.issue_token(Role::Operator, "xiaomi", "").unwrap_err();
        assert!(e.to_string().contains("staff"), "{e}");
        r.set_state(
            "xiaomi",
            VerificationState::Verified,
            "op",
            "documents checked",
        )
        .unwrap();
        assert!(
            r.set_state("xiaomi", VerificationState::Verified, "op", "again")
                .is_err()
        );
        assert!(
            r.set_state("xiaomi", VerificationState::Revoked, "op", " ")
                .is_err()
        );
        r.set_state("xiaomi", VerificationState::Revoked, "op2", "fraud")
            .unwrap();
        let log = r.audit("xiaomi").unwrap();
        let states: Vec<_> = log.iter().map(|a| (a.from_state, a.to_state)).collect();
        assert_eq!(
            states,
            [
                (None, VerificationState::Pending),
                (
                    Some(VerificationState::Pending),
                    VerificationState::Verified
                ),
                (
                    Some(VerificationState::Verified),
                    VerificationState::Revoked
                ),
            ]
        );
        assert_eq!(
            (log[2].actor.as_str(), log[2].reason.as_str()),
            ("op2", "fraud")
        );
        assert!(r.revoke_token(&t.info.id).unwrap());
        assert!(!r.revoke_token(&t.info.id).unwrap());
        assert!(r.authenticate(&t.secret).unwrap().is_none());
        assert!(r.tokens().unwrap()[0].revoked_at_ms.is_some());
    }

    #[test]
    fn sessions_end_by_logout_idleness_age_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(&dir.path().join("r.sqlite")).unwrap();
        r.add_account("bi", AccountKind::Staff, "BI", "op").unwrap();
        r.add_account("xiaomi", AccountKind::Official, "Xiaomi", "op")
            .unwrap();
        r.set_state("xiaomi", VerificationState::Verified, "op", "ok")
            .unwrap();
        let analyst = r.issue_token(Role::Analyst, "bi", "").unwrap();
        let brand = r.issue_token(Role::Official, "xiaomi", "").unwrap();
        let (hour, day) = (3_600_000, 86_400_000);
        let s = r.start_session(&analyst.info.id, day).unwrap();
        assert!(s.starts_with("sps_") && s.len() == 68 && !s.contains(&analyst.secret));
        let now = now_ms();
        let (token, account) = r.session(&s, hour).unwrap().unwrap();
        assert_eq!(
            (token.id.as_str(), account.id.as_str()),
            (analyst.info.id.as_str(), "bi")
        );
        // A session is not a token and a token is not a session.
        assert!(r.authenticate(&s).unwrap().is_none());
        assert!(r.session(&analyst.secret, hour).unwrap().is_none());
        // Idle past the limit, or past its end: over.
        assert!(r.session_at(&s, hour, now + hour / 2).unwrap().is_some());
        assert!(r.session_at(&s, hour, now + 2 * hour).unwrap().is_none());
        assert!(r.session_at(&s, 2 * day, now + day + 1).unwrap().is_none());
        // Logout ends it; the copied secret is worth nothing.
        assert!(r.end_session(&s).unwrap());
        assert!(r.session(&s, hour).unwrap().is_none());
        // Revoking the token ends its sessions; so does revoking the account.
        let s = r.start_session(&analyst.info.id, day).unwrap();
        assert!(r.revoke_token(&analyst.info.id).unwrap());
        assert!(r.session(&s, hour).unwrap().is_none());
        let s = r.start_session(&brand.info.id, day).unwrap();
        assert!(r.session(&s, hour).unwrap().is_some());
        r.set_state("xiaomi", VerificationState::Revoked, "op", "fraud")
            .unwrap();
        assert!(r.session(&s, hour).unwrap().is_none());
        assert!(r.session("sps_short", hour).unwrap().is_none());
    }
}
