//! `spacepulse serve`, `spacepulse accounts` and `spacepulse tokens`.

use std::time::Duration;

use anyhow::Result;
use lake::registry::{AccountKind, Role, VerificationState};
use lake::tables::Lake;

use crate::UsageError;
use crate::cli::{AccountsCommand, ServeArgs, StateArgs, TokensCommand};
use crate::metrics::registry;

/// Who did it, for the audit log, on the command line: the operating-system user.
fn cli_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let tz: query::tz::ReportTz = args
        .tz
        .parse()
        .map_err(|e: String| UsageError(format!("--tz: {e}")))?;
    if !(args.sql_timeout.is_finite() && args.sql_timeout > 0.0) {
        return Err(
            UsageError("--sql-timeout: expected a positive number of seconds".into()).into(),
        );
    }
    let mut options = dashboard::Options::new(Lake::new(&args.lake.lake)?);
    options.registry = args.registry.registry;
    options.tz = tz;
    options.sql_limits = query::guard::Limits {
        timeout: Duration::from_secs_f64(args.sql_timeout),
        memory_bytes: args.sql_memory_mib << 20,
        max_rows: args.sql_max_rows,
        concurrent: args.sql_concurrent as usize,
        per_caller: args.sql_per_token as usize,
        queue: args.sql_queue as usize,
    };
    options.public_url = args.public_url.as_deref().map(public_origin).transpose()?;
    options.trust_forwarded_proto = args.trust_forwarded_proto;
    options.session_idle = Duration::from_secs(args.session_idle_minutes * 60);
    options.session_max = Duration::from_secs(args.session_max_hours * 3600);
    options.allowed_lateness = args.allowed_lateness;
    options.live = args.brokers.map(|brokers| dashboard::live::LiveOptions {
        brokers,
        topic: args.topic,
        group: args.group,
        overrides: args.kafka,
    });
    dashboard::serve(
        options,
        args.listen,
        crate::commands::shutdown_signal(),
        |addr| {
            outln!("serving http://{addr}/ (API under /api/v1; Ctrl-C stops)");
        },
    )
    .await?;
    errln!("stopped");
    Ok(())
}

/// `--public-url`'s origin (`scheme://host[:port]`, lowercase): http or https, a host, no
/// path, query or credentials.
fn public_origin(url: &str) -> Result<String, UsageError> {
    let bad = |why: &str| UsageError(format!("--public-url {url:?}: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected http(s)://HOST"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("expected only a host and port, no path, query or user"));
    }
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

fn state_change(args: StateArgs, to: VerificationState) -> Result<()> {
    let r = registry(&args.lake, &args.registry)?;
    let a = r.set_state(&args.id, to, &cli_actor(), &args.reason)?;
    outln!("{} is {}", a.id, a.state);
    Ok(())
}

pub async fn accounts(cmd: AccountsCommand) -> Result<()> {
    match cmd {
        AccountsCommand::ImportFollowers {
            lake,
            registry: reg,
            file,
        } => crate::baselines::import(&lake, &reg, &file, &cli_actor()).await?,
        AccountsCommand::Baselines {
            lake,
            registry: reg,
            json,
        } => crate::baselines::list(&lake, &reg, json)?,
        AccountsCommand::Add {
            lake,
            registry: reg,
            id,
            kind,
            name,
            currency,
        } => {
            let kind: AccountKind = kind
                .parse()
                .map_err(|e: lake::Error| UsageError(format!("--kind: {e}")))?;
            lake::registry::check_currency(&currency)
                .map_err(|e| UsageError(format!("--currency: {e}")))?;
            let r = registry(&lake, &reg)?;
            let mut a = r.add_account(&id, kind, &name, &cli_actor())?;
            if currency != a.currency {
                a = r.set_currency(&id, &currency)?;
            }
            outln!(
                "added {} account {} ({}, {})",
                a.kind,
                a.id,
                a.state,
                a.currency
            );
        }
        AccountsCommand::Verify(a) => state_change(a, VerificationState::Verified)?,
        AccountsCommand::Reject(a) => state_change(a, VerificationState::Rejected)?,
        AccountsCommand::Revoke(a) => state_change(a, VerificationState::Revoked)?,
        AccountsCommand::List {
            lake,
            registry: reg,
            json,
            audit,
        } => {
            let r = registry(&lake, &reg)?;
            if let Some(id) = audit {
                if r.account(&id)?.is_none() {
                    return Err(UsageError(format!("--audit: no account {id:?}")).into());
                }
                let log = r.audit(&id)?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&log)?);
                } else {
                    for e in log {
                        let at =
                            chrono::DateTime::from_timestamp_millis(e.at_ms).unwrap_or_default();
                        let from = e
                            .from_state
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "-".into());
                        outln!(
                            "{at}  {from} -> {}  by {}: {}",
                            e.to_state,
                            e.actor,
                            e.reason
                        );
                    }
                }
                return Ok(());
            }
            let all = r.accounts()?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                outln!("{:<24} {:<11} {:<9} name", "id", "kind", "state");
                for a in all {
                    outln!("{:<24} {:<11} {:<9} {}", a.id, a.kind, a.state, a.name);
                }
            }
        }
    }
    Ok(())
}

pub fn tokens(cmd: TokensCommand) -> Result<()> {
    match cmd {
        TokensCommand::Issue {
            lake,
            registry: reg,
            role,
            account,
            label,
        } => {
            let role: Role = role
                .parse()
                .map_err(|e: lake::Error| UsageError(format!("--role: {e}")))?;
            let t = registry(&lake, &reg)?.issue_token(role, &account, &label)?;
            errln!(
                "issued {} ({} for {}); the token, shown this once:",
                t.info.id,
                t.info.role,
                t.info.account_id
            );
            outln!("{}", t.secret);
        }
        TokensCommand::Revoke {
            lake,
            registry: reg,
            id,
        } => {
            if !registry(&lake, &reg)?.revoke_token(&id)? {
                return Err(UsageError(format!("no live token {id:?}")).into());
            }
            outln!("revoked {id}");
        }
        TokensCommand::List {
            lake,
            registry: reg,
            json,
        } => {
            let all = registry(&lake, &reg)?.tokens()?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                outln!(
                    "{:<17} {:<10} {:<24} {:<8} label",
                    "id",
                    "role",
                    "account",
                    "state"
                );
                for t in all {
                    let state = if t.revoked_at_ms.is_some() {
                        "revoked"
                    } else {
                        "live"
                    };
                    outln!(
                        "{:<17} {:<10} {:<24} {:<8} {}",
                        t.id,
                        t.role,
                        t.account_id,
                        state,
                        t.label
                    );
                }
            }
        }
    }
    Ok(())
}
