//! Advertisers: per advertiser, ad and report day, impressions, clicks, CTR, conversions,
//! conversion rate, spend (`amount_cents` of impressions and clicks), conversion value,
//! unique reach (exact, with the reached users' bitmap that unions exactly over any range, and
//! an HLL++ sketch that merges over ranges) and frequency.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use query::sketch::{
    HLL_ESTIMATOR, HLL_PRECISION, Hll, bitmap_of, bitmap_to_bytes, hll_relative_error,
};

use crate::publish::{publish, schema};
use crate::scan::{distinct, event_key, ints, strs, types};
use crate::{Ctx, Job, Result};

pub const TABLE: &str = "advertisers_daily";

pub fn table_schema() -> SchemaRef {
    schema(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("advertiser_id", DataType::Utf8, false),
        Field::new("ad_id", DataType::Utf8, false),
        Field::new("impressions", DataType::Int64, false),
        Field::new("clicks", DataType::Int64, false),
        Field::new("ctr", DataType::Float64, true),
        Field::new("conversions", DataType::Int64, false),
        Field::new("conversion_rate", DataType::Float64, true),
        Field::new("spend_cents", DataType::Int64, false),
        Field::new("conversion_value_cents", DataType::Int64, false),
        Field::new("reach", DataType::Int64, false),
        Field::new("reach_approx", DataType::Float64, false),
        Field::new("frequency", DataType::Float64, true),
        Field::new("estimator", DataType::Utf8, false),
        Field::new("hll_precision", DataType::Int32, false),
        Field::new("hll_relative_error", DataType::Float64, false),
        Field::new("reach_hll", DataType::Binary, false),
        // The reached users (a serialized RoaringTreemap): `bitmap_count(bitmap_union(..))`
        // is the exact unique reach of any range.
        Field::new("reach_bitmap", DataType::Binary, false),
    ])
}

#[derive(Default)]
struct Ad {
    impressions: Vec<(u128, i64)>,
    clicks: Vec<(u128, i64)>,
    conversions: Vec<(u128, i64)>,
    reached: Vec<u64>,
}

type Acc = HashMap<(String, String), Ad>;

async fn day_ads(ctx: &Ctx<'_>, day: i32) -> Result<Vec<((String, String), Ad)>> {
    let parts = ctx
        .scan
        .fold(
            ctx.scan
                .day_filter(day)
                .and(types(&["ad_impression", "ad_click", "ad_conversion"])),
            &[
                "event_id",
                "user_id",
                "type",
                "advertiser_id",
                "ad_id",
                "amount_cents",
            ],
            Acc::new,
            |acc: &mut Acc, batch| {
                let ids = strs(batch, "event_id")?;
                let users = ints(batch, "user_id")?;
                let ty = strs(batch, "type")?;
                let adv = strs(batch, "advertiser_id")?;
                let ad = strs(batch, "ad_id")?;
                let amount = ints(batch, "amount_cents")?;
                for i in 0..batch.num_rows() {
                    let key = (
                        adv.get(i).unwrap_or("").to_string(),
                        ad.get(i).unwrap_or("").to_string(),
                    );
                    let a = acc.entry(key).or_default();
                    let item = (
                        event_key(ids.get(i).unwrap_or("")),
                        if amount.is_null(i) {
                            0
                        } else {
                            amount.value(i)
                        },
                    );
                    match ty.get(i) {
                        Some("ad_impression") => {
                            a.impressions.push(item);
                            a.reached.push(users.value(i) as u64);
                        }
                        Some("ad_click") => a.clicks.push(item),
                        _ => a.conversions.push(item),
                    }
                }
                Ok(())
            },
        )
        .await?;
    let mut merged: HashMap<(String, String), Ad> = HashMap::new();
    for part in parts {
        for (k, a) in part {
            let m = merged.entry(k).or_default();
            m.impressions.extend(a.impressions);
            m.clicks.extend(a.clicks);
            m.conversions.extend(a.conversions);
            m.reached.extend(a.reached);
        }
    }
    let mut out: Vec<_> = merged.into_iter().collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub async fn run(ctx: &Ctx<'_>) -> Result<(usize, u64, bool)> {
    // A table written before its columns changed is rewritten whole.
    let current = ctx.has_columns(TABLE, &table_schema()).await?;
    let plan = if current {
        ctx.plan(Job::Advertisers).await?
    } else {
        ctx.plan_everything(Job::Advertisers).await?
    };
    if plan.up_to_date && current {
        return Ok((0, 0, true));
    }
    ctx.progress
        .start(Job::Advertisers.name(), plan.days.len() as u64);
    let mut day_b = Date32Builder::new();
    let mut adv_b = StringBuilder::new();
    let mut ad_b = StringBuilder::new();
    let mut ints_b: Vec<Int64Builder> = (0..6).map(|_| Int64Builder::new()).collect();
    let mut ctr_b = Float64Builder::new();
    let mut rate_b = Float64Builder::new();
    let mut approx_b = Float64Builder::new();
    let mut freq_b = Float64Builder::new();
    let mut est_b = StringBuilder::new();
    let mut prec_b = Int32Builder::new();
    let mut rse_b = Float64Builder::new();
    let mut hll_b = BinaryBuilder::new();
    let mut bitmap_b = BinaryBuilder::new();
    for &day in &plan.days {
        for ((adv, ad), mut a) in day_ads(ctx, day).await? {
            let (impressions, impression_cost) = distinct(&mut a.impressions);
            let (clicks, click_cost) = distinct(&mut a.clicks);
            let (conversions, value) = distinct(&mut a.conversions);
            let reached = bitmap_of(std::mem::take(&mut a.reached));
            let mut hll = Hll::new();
            for u in reached.iter() {
                hll.insert(u);
            }
            let reach = reached.len() as i64;
            let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
            day_b.append_value(day);
            adv_b.append_value(adv);
            ad_b.append_value(ad);
            for (b, v) in ints_b.iter_mut().zip([
                impressions,
                clicks,
                conversions,
                impression_cost + click_cost,
                value,
                reach,
            ]) {
                b.append_value(v);
            }
            ctr_b.append_option(ratio(clicks, impressions));
            rate_b.append_option(ratio(conversions, clicks));
            approx_b.append_value(hll.estimate());
            freq_b.append_option(ratio(impressions, reach));
            est_b.append_value(HLL_ESTIMATOR);
            prec_b.append_value(HLL_PRECISION as i32);
            rse_b.append_value(hll_relative_error());
            hll_b.append_value(hll.to_bytes());
            bitmap_b.append_value(bitmap_to_bytes(&reached));
        }
        ctx.progress.advance(Job::Advertisers.name());
    }
    let mut i = ints_b
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || i.next().expect("six columns");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(day_b.finish()),
        Arc::new(adv_b.finish()),
        Arc::new(ad_b.finish()),
        next(),
        next(),
        Arc::new(ctr_b.finish()),
        next(),
        Arc::new(rate_b.finish()),
        next(),
        next(),
        next(),
        Arc::new(approx_b.finish()),
        Arc::new(freq_b.finish()),
        Arc::new(est_b.finish()),
        Arc::new(prec_b.finish()),
        Arc::new(rse_b.finish()),
        Arc::new(hll_b.finish()),
        Arc::new(bitmap_b.finish()),
    ];
    let batch = RecordBatch::try_new(table_schema(), cols)?;
    let rows = batch.num_rows() as u64;
    publish(
        &ctx.opts.lake,
        TABLE,
        table_schema(),
        vec![batch],
        &plan.scope,
        &plan.txns,
    )
    .await?;
    Ok((plan.days.len(), rows, false))
}
