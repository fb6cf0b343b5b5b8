//! Official accounts: per account and report day, follows, unfollows, net, cumulative
//! followers, reach (distinct users who viewed the account's pages or its campaigns' pages:
//! exact for the day, and an HLL++ sketch that merges over ranges) and engagement (likes and
//! comments carrying the account). Cumulative followers of later days are carried forward from
//! the stored rows when an earlier day changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Field, Int64Type, SchemaRef};
use futures::TryStreamExt;
use query::sketch::{HLL_ESTIMATOR, HLL_PRECISION, Hll, bitmap_of, hll_relative_error};

use crate::publish::{Scope, publish, schema, table_name};
use crate::scan::{distinct, event_key, ints, strs, types};
use crate::{Ctx, Job, Result};

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
}

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
) -> Result<BTreeMap<String, Row>> {
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
            &["event_id", "user_id", "type", "account_id", "campaign_id"],
            Acc::new,
            move |acc: &mut Acc, batch| {
                let ids = strs(batch, "event_id")?;
                let users = ints(batch, "user_id")?;
                let ty = strs(batch, "type")?;
                let account = strs(batch, "account_id")?;
                let campaign = strs(batch, "campaign_id")?;
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
                    let entry = acc.entry(a.to_string()).or_default();
                    let item = (event_key(ids.get(i).unwrap_or("")), 0);
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
        out.insert(
            account,
            Row {
                follows: distinct(&mut a.follows).0,
                unfollows: distinct(&mut a.unfollows).0,
                reach: viewers.len() as i64,
                reach_approx: hll.estimate(),
                likes: distinct(&mut a.likes).0,
                comments: distinct(&mut a.comments).0,
                hll: hll.to_bytes(),
            },
        );
    }
    Ok(out)
}

/// Stored rows of days from `first` on that are not being recomputed, and each account's net
/// followers before `first`.
async fn stored(
    ctx: &Ctx<'_>,
    first: i32,
    skip: &BTreeSet<i32>,
) -> Result<(BTreeMap<(i32, String), Row>, HashMap<String, i64>)> {
    let mut rows = BTreeMap::new();
    let mut base = HashMap::new();
    let Some(table) = ctx.opts.lake.open(&table_name(TABLE)).await? else {
        return Ok((rows, base));
    };
    let session = query::session::context();
    query::session::register(&session, TABLE, &table).await?;
    let mut stream = session
        .sql(&format!(
            "SELECT day, account_id, follows, unfollows, reach, reach_approx, likes, comments, reach_hll FROM {TABLE}"
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
        for i in 0..batch.num_rows() {
            let day = days.value(i);
            let account = accounts.get(i).unwrap_or("").to_string();
            let (follows, unfollows) = (col(2).value(i), col(3).value(i));
            if day < first {
                *base.entry(account).or_insert(0) += follows - unfollows;
                continue;
            }
            if skip.contains(&day) {
                continue;
            }
            rows.insert(
                (day, account),
                Row {
                    follows,
                    unfollows,
                    reach: col(4).value(i),
                    reach_approx: approx.value(i),
                    likes: col(6).value(i),
                    comments: col(7).value(i),
                    hll: hll.value(i).to_vec(),
                },
            );
        }
    }
    Ok((rows, base))
}

pub async fn run(ctx: &Ctx<'_>) -> Result<(usize, u64, bool)> {
    let plan = ctx.plan(Job::Accounts).await?;
    if plan.up_to_date {
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
    let first = plan.days.first().copied().unwrap_or(i32::MAX);
    let (mut rows, base) = match plan.scope {
        Scope::All => Default::default(),
        Scope::Days(_) | Scope::Append => stored(ctx, first, &plan.days).await?,
    };
    for &day in &plan.days {
        for (account, row) in day_rows(ctx, day, owners.clone()).await? {
            rows.insert((day, account), row);
        }
        ctx.progress.advance(Job::Accounts.name());
    }
    let write_days: BTreeSet<i32> = rows
        .keys()
        .map(|k| k.0)
        .chain(plan.days.iter().copied())
        .collect();
    // Followers carried forward in day order.
    let mut followers = base;
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
    );
    for ((day, account), r) in ordered {
        let net = r.follows - r.unfollows;
        let total = followers.entry(account.clone()).or_insert(0);
        *total += net;
        b.0.append_value(*day);
        b.1.append_value(account);
        for (builder, v) in b.2.iter_mut().zip([
            r.follows,
            r.unfollows,
            net,
            *total,
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
    ];
    let batch = RecordBatch::try_new(table_schema(), cols)?;
    let n = batch.num_rows() as u64;
    let scope = plan.widened(write_days);
    publish(
        &ctx.opts.lake,
        TABLE,
        table_schema(),
        vec![batch],
        &scope,
        &plan.txns,
    )
    .await?;
    Ok((plan.days.len(), n, false))
}
