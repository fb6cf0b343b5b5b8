//! Official accounts: per account and report day, follows, unfollows, net, cumulative
//! followers, reach (distinct users who viewed the account's pages or its campaigns' pages:
//! exact for the day, and an HLL++ sketch that merges over ranges) and engagement (likes and
//! comments carrying the account). Cumulative followers of later days are carried forward from
//! the stored rows when an earlier day changes.
//!
//! Followers stand on the account's latest follower baseline (imported into the registry with
//! `spacepulse accounts import-followers`) when it has one: the baseline's figure plus the net
//! follows after its instant; before any baseline, on the net follows since the lake's first
//! day. Each row names the baseline it stands on. A baseline restarts the running figure, so a
//! change to the baselines recomputes every day.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Date32Builder, Float64Builder, Int32Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Field, Int64Type, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use query::sketch::{HLL_ESTIMATOR, HLL_PRECISION, Hll, bitmap_of, hll_relative_error};

use crate::publish::{Scope, publish, schema, table_name};
use crate::scan::{distinct, event_key, ints, strs, times, types};
use crate::{Ctx, Job, Result};
use lake::registry::Baseline;

pub const TABLE: &str = "accounts_daily";

pub fn table_schema() -> SchemaRef {
    schema(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("account_id", DataType::Utf8, false),
        Field::new("follows", DataType::Int64, false),
        Field::new("unfollows", DataType::Int64, false),
        Field::new("net", DataType::Int64, false),
        Field::new("followers", DataType::Int64, false),
        Field::new("reach", DataType::Int64, false),
        Field::new("reach_approx", DataType::Float64, false),
        Field::new("likes", DataType::Int64, false),
        Field::new("comments", DataType::Int64, false),
        Field::new("engagement", DataType::Int64, false),
        Field::new("estimator", DataType::Utf8, false),
        Field::new("hll_precision", DataType::Int32, false),
        Field::new("hll_relative_error", DataType::Float64, false),
        Field::new("reach_hll", DataType::Binary, false),
        // The follower baseline `followers` stands on: none before the account's first one.
        Field::new("baseline_followers", DataType::Int64, true),
        Field::new(
            "baseline_as_of",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ])
}

/// One output row before followers are carried forward.
#[derive(Debug, Clone)]
struct Row {
    follows: i64,
    unfollows: i64,
    reach: i64,
    reach_approx: f64,
    likes: i64,
    comments: i64,
    hll: Vec<u8>,
    /// Net follows after the cutoff of the day's follower baseline (see [`Cutoffs`]), when the
    /// day is recomputed; a stored row's figure carries it in `followers`.
    after: Option<i64>,
    /// A stored row's `followers` and baseline instant.
    stored: Option<(i64, Option<i64>)>,
}

/// Per account, the instant (epoch µs) of its latest follower baseline within a day.
type Cutoffs = HashMap<String, i64>;

#[derive(Default)]
struct Acct {
    follows: Vec<(u128, i64)>,
    unfollows: Vec<(u128, i64)>,
    likes: Vec<(u128, i64)>,
    comments: Vec<(u128, i64)>,
    viewers: Vec<u64>,
}

type Acc = HashMap<String, Acct>;

async fn day_rows(
    ctx: &Ctx<'_>,
    day: i32,
    owners: Arc<HashMap<String, String>>,
    cutoffs: Arc<Cutoffs>,
) -> Result<BTreeMap<String, Row>> {
    let fold_cutoffs = cutoffs.clone();
    let parts = ctx
        .scan
        .fold(
            ctx.scan.day_filter(day).and(types(&[
                "follow",
                "unfollow",
                "like",
                "comment",
                "page_view",
            ])),
            &[
                "event_id",
                "user_id",
                "type",
                "account_id",
                "campaign_id",
                "ts",
            ],
            Acc::new,
            move |acc: &mut Acc, batch| {
                let ids = strs(batch, "event_id")?;
                let users = ints(batch, "user_id")?;
                let ty = strs(batch, "type")?;
                let account = strs(batch, "account_id")?;
                let campaign = strs(batch, "campaign_id")?;
                let ts = times(batch, "ts")?;
                for i in 0..batch.num_rows() {
                    let t = ty.get(i).unwrap_or("");
                    let a = account.get(i);
                    if t == "page_view" {
                        let owner = campaign.get(i).and_then(|c| owners.get(c));
                        let user = users.value(i) as u64;
                        if let Some(a) = a {
                            acc.entry(a.to_string()).or_default().viewers.push(user);
                        }
                        if let Some(o) = owner
                            && Some(o.as_str()) != a
                        {
                            acc.entry(o.clone()).or_default().viewers.push(user);
                        }
                        continue;
                    }
                    let Some(a) = a else { continue };
                    // A follow or unfollow after the day's baseline instant counts on top.
                    let after = fold_cutoffs.get(a).is_some_and(|cut| ts.value(i) > *cut);
                    let entry = acc.entry(a.to_string()).or_default();
                    let item = (event_key(ids.get(i).unwrap_or("")), i64::from(after));
                    match t {
                        "follow" => entry.follows.push(item),
                        "unfollow" => entry.unfollows.push(item),
                        "like" => entry.likes.push(item),
                        _ => entry.comments.push(item),
                    }
                }
                Ok(())
            },
        )
        .await?;
    let mut merged: HashMap<String, Acct> = HashMap::new();
    for part in parts {
        for (k, a) in part {
            let m = merged.entry(k).or_default();
            m.follows.extend(a.follows);
            m.unfollows.extend(a.unfollows);
            m.likes.extend(a.likes);
            m.comments.extend(a.comments);
            m.viewers.extend(a.viewers);
        }
    }
    let mut out = BTreeMap::new();
    for (account, mut a) in merged {
        let viewers = bitmap_of(std::mem::take(&mut a.viewers));
        let mut hll = Hll::new();
        for u in viewers.iter() {
            hll.insert(u);
        }
        let (follows, follows_after) = distinct(&mut a.follows);
        let (unfollows, unfollows_after) = distinct(&mut a.unfollows);
        let after = cutoffs
            .contains_key(&account)
            .then_some(follows_after - unfollows_after);
        out.insert(
            account,
            Row {
                follows,
                unfollows,
                reach: viewers.len() as i64,
                reach_approx: hll.estimate(),
                likes: distinct(&mut a.likes).0,
                comments: distinct(&mut a.comments).0,
                hll: hll.to_bytes(),
                after,
                stored: None,
            },
        );
    }
    // A day a baseline lands on shows it, though the account did nothing that day.
    for account in cutoffs.keys() {
        out.entry(account.clone()).or_insert_with(|| Row {
            follows: 0,
            unfollows: 0,
            reach: 0,
            reach_approx: 0.0,
            likes: 0,
            comments: 0,
            hll: Hll::new().to_bytes(),
            after: Some(0),
            stored: None,
        });
    }
    Ok(out)
}

/// Where an account's running followers stand: the figure and the instant (epoch µs) of the
/// baseline it stands on.
type Standing = (i64, Option<i64>);

/// Stored rows of days from `first` on that are not being recomputed, and where each
/// account's followers stood at its last row before `first`.
async fn stored(
    ctx: &Ctx<'_>,
    first: i32,
    skip: &BTreeSet<i32>,
) -> Result<(BTreeMap<(i32, String), Row>, HashMap<String, Standing>)> {
    let mut rows = BTreeMap::new();
    let mut base: HashMap<String, (i32, Standing)> = HashMap::new();
    let Some(table) = ctx.opts.lake.open(&table_name(TABLE)).await? else {
        return Ok((rows, HashMap::new()));
    };
    let session = query::session::context();
    query::session::register(&session, TABLE, &table).await?;
    let mut stream = session
        .sql(&format!(
            "SELECT day, account_id, follows, unfollows, reach, reach_approx, likes, comments, \
             reach_hll, followers, CAST(baseline_as_of AS BIGINT) FROM {TABLE}"
        ))
        .await?
        .execute_stream()
        .await?;
    while let Some(batch) = stream.try_next().await? {
        let days = batch.column(0).as_primitive::<Date32Type>();
        let accounts = strs(&batch, "account_id")?;
        let col = |i: usize| batch.column(i).as_primitive::<Int64Type>();
        let approx = batch
            .column(5)
            .as_primitive::<arrow::datatypes::Float64Type>();
        let hll = arrow::compute::cast(batch.column(8), &DataType::Binary)?;
        let hll = hll.as_binary::<i32>();
        let as_of = col(10);
        for i in 0..batch.num_rows() {
            let day = days.value(i);
            let account = accounts.get(i).unwrap_or("").to_string();
            let standing = (col(9).value(i), (!as_of.is_null(i)).then(|| as_of.value(i)));
            if day < first {
                let last = base.entry(account).or_insert((day, standing));
                if day >= last.0 {
                    *last = (day, standing);
                }
                continue;
            }
            if skip.contains(&day) {
                continue;
            }
            rows.insert(
                (day, account),
                Row {
                    follows: col(2).value(i),
                    unfollows: col(3).value(i),
                    reach: col(4).value(i),
                    reach_approx: approx.value(i),
                    likes: col(6).value(i),
                    comments: col(7).value(i),
                    hll: hll.value(i).to_vec(),
                    after: None,
                    stored: Some(standing),
                },
            );
        }
    }
    Ok((rows, base.into_iter().map(|(a, (_, s))| (a, s)).collect()))
}

/// The registry's follower baselines, or none for a lake without a local registry.
fn baselines(ctx: &Ctx<'_>) -> Result<Vec<Baseline>> {
    match crate::campaigns::registry(ctx)? {
        Some(r) => Ok(r.baselines()?),
        None => Ok(Vec::new()),
    }
}

fn fingerprint(baselines: &[Baseline]) -> i64 {
    let json = serde_json::to_vec(baselines).unwrap_or_default();
    (xxhash_rust::xxh64::xxh64(&json, 0) & (i64::MAX as u64)) as i64
}

/// Per account, its baselines' instants (epoch µs) and figures, in time order.
type Baselines = HashMap<String, Vec<(i64, i64)>>;

/// The cutoffs of `day`: each account's latest baseline instant within it.
fn cutoffs_of(all: &Baselines, tz: query::tz::ReportTz, day: i32) -> Cutoffs {
    let (start, end) = (tz.day_start_us(day), tz.day_start_us(day + 1));
    all.iter()
        .filter_map(|(account, list)| {
            list.iter()
                .rev()
                .find(|(at, _)| (start..end).contains(at))
                .map(|(at, _)| (account.clone(), *at))
        })
        .collect()
}

pub async fn run(ctx: &Ctx<'_>) -> Result<(usize, u64, bool)> {
    let all_baselines = baselines(ctx)?;
    let baselines_app = format!("jobs/{}/baselines", Job::Accounts.name());
    let print = fingerprint(&all_baselines);
    // New baselines restart running figures anywhere, and a table written before the
    // baseline columns existed is rewritten whole.
    let current = ctx.has_columns(TABLE, &table_schema()).await?
        && ctx.seen(TABLE, &baselines_app).await? == Some(print);
    let plan = if current {
        ctx.plan(Job::Accounts).await?
    } else {
        ctx.plan_everything(Job::Accounts).await?
    };
    if plan.up_to_date && current {
        return Ok((0, 0, true));
    }
    ctx.progress
        .start(Job::Accounts.name(), plan.days.len() as u64);
    let owners: Arc<HashMap<String, String>> = Arc::new(
        crate::campaigns::registered(ctx)?
            .into_iter()
            .map(|c| (c.id, c.account_id))
            .collect(),
    );
    let mut by_account: Baselines = HashMap::new();
    for b in &all_baselines {
        by_account
            .entry(b.account_id.clone())
            .or_default()
            .push((b.as_of_ms.saturating_mul(1000), b.followers));
    }
    let first = plan.days.first().copied().unwrap_or(i32::MAX);
    let (mut rows, base) = match plan.scope {
        Scope::All => Default::default(),
        Scope::Days(_) | Scope::Append => stored(ctx, first, &plan.days).await?,
    };
    // A full run also shows each baseline on its day, within the lake's days, though the
    // account did nothing that day (an incremental run keeps those rows).
    let mut days = plan.days.clone();
    if let (Scope::All, Some(&lo), Some(&hi)) = (&plan.scope, plan.days.first(), plan.days.last()) {
        let mut tz = query::tz::LocalClock::new(ctx.opts.tz);
        days.extend(
            by_account
                .values()
                .flatten()
                .map(|(at, _)| tz.day(*at))
                .filter(|d| (lo..=hi).contains(d)),
        );
    }
    for &day in &days {
        let cutoffs = Arc::new(cutoffs_of(&by_account, ctx.opts.tz, day));
        for (account, row) in day_rows(ctx, day, owners.clone(), cutoffs).await? {
            rows.insert((day, account), row);
        }
        ctx.progress.advance(Job::Accounts.name());
    }
    let write_days: BTreeSet<i32> = rows
        .keys()
        .map(|k| k.0)
        .chain(days.iter().copied())
        .collect();
    // Followers carried forward in day order, restarting at each baseline.
    let mut standing: HashMap<String, Standing> = base;
    let mut ordered: Vec<(&(i32, String), &Row)> = rows.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(b.0));
    let mut b = (
        Date32Builder::new(),
        StringBuilder::new(),
        (0..8).map(|_| Int64Builder::new()).collect::<Vec<_>>(),
        Float64Builder::new(),
        StringBuilder::new(),
        Int32Builder::new(),
        Float64Builder::new(),
        BinaryBuilder::new(),
        Int64Builder::new(),
        TimestampMicrosecondBuilder::new().with_timezone("UTC"),
    );
    for ((day, account), r) in ordered {
        let net = r.follows - r.unfollows;
        let (total, on) = standing.entry(account.clone()).or_insert((0, None));
        // The latest baseline before the day ends, and whether it lands within the day.
        let end = ctx.opts.tz.day_start_us(day + 1);
        let latest = by_account
            .get(account)
            .and_then(|list| list.iter().rev().find(|(at, _)| *at < end));
        match latest {
            Some(&(at, figure)) if *on != Some(at) => {
                *total = match (r.stored, r.after) {
                    // A stored row of the day it landed on: its figure stands.
                    (Some((f, _)), _) => f,
                    (None, Some(after)) if at >= ctx.opts.tz.day_start_us(*day) => figure + after,
                    // Landed on an earlier day the account did nothing on.
                    _ => figure + net,
                };
                *on = Some(at);
            }
            _ => *total += net,
        }
        let (total, on) = (*total, *on);
        let figure = on.and_then(|at| {
            by_account
                .get(account)
                .and_then(|list| list.iter().find(|(t, _)| *t == at))
                .map(|(_, f)| *f)
        });
        b.0.append_value(*day);
        b.1.append_value(account);
        for (builder, v) in b.2.iter_mut().zip([
            r.follows,
            r.unfollows,
            net,
            total,
            r.reach,
            r.likes,
            r.comments,
            r.likes + r.comments,
        ]) {
            builder.append_value(v);
        }
        b.3.append_value(r.reach_approx);
        b.4.append_value(HLL_ESTIMATOR);
        b.5.append_value(HLL_PRECISION as i32);
        b.6.append_value(hll_relative_error());
        b.7.append_value(&r.hll);
        b.8.append_option(figure);
        b.9.append_option(on);
    }
    let mut ints =
        b.2.into_iter()
            .map(|mut x| Arc::new(x.finish()) as ArrayRef);
    let mut next = || ints.next().expect("eight columns");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(b.0.finish()),
        Arc::new(b.1.finish()),
        next(),
        next(),
        next(),
        next(),
        next(),
        Arc::new(b.3.finish()),
        next(),
        next(),
        next(),
        Arc::new(b.4.finish()),
        Arc::new(b.5.finish()),
        Arc::new(b.6.finish()),
        Arc::new(b.7.finish()),
        Arc::new(b.8.finish()),
        Arc::new(b.9.finish()),
    ];
    let batch = RecordBatch::try_new(table_schema(), cols)?;
    let n = batch.num_rows() as u64;
    let scope = plan.widened(write_days);
    let mut txns = plan.txns.clone();
    txns.push((baselines_app, print));
    publish(
        &ctx.opts.lake,
        TABLE,
        table_schema(),
        vec![batch],
        &scope,
        &txns,
    )
    .await?;
    Ok((plan.days.len(), n, false))
}
