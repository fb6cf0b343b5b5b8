//! One type per report: the rows each report's queries return (decoded from Arrow once by
//! [`crate::rows`]) and the report around them, as the API serialises it to JSON (and its rows
//! to CSV) and the pages render it.

use serde::Serialize;

use crate::row;

row! {
    /// A day of `activity`, overall or for one platform group.
    pub struct ActivityRow {
        pub day: String,
        pub breakdown: String,
        pub segment: String,
        pub dau: i64,
        pub wau: i64,
        pub mau: i64,
        pub dau_mau: Option<f64>,
        pub new_users: i64,
        pub dau_approx: f64,
        pub wau_approx: f64,
        pub mau_approx: f64,
        pub estimator: String,
        pub hll_precision: i64,
        pub hll_relative_error: f64;
        /// The day ends after the report's `complete_up_to`: it may still change.
        pub provisional: bool,
    }
}

row! {
    /// A day of photo uploads with its peak second, minute and hour.
    pub struct UploadsRow {
        pub day: String,
        pub uploads: i64,
        pub photos: i64,
        pub peak_second: Option<String>,
        pub peak_second_photos: i64,
        pub peak_minute: Option<String>,
        pub peak_minute_photos: i64,
        pub peak_hour: Option<String>,
        pub peak_hour_photos: i64;
        pub provisional: bool,
    }
}

row! {
    /// A day of an official account's followers, reach and engagement.
    pub struct FollowersRow {
        pub day: String,
        pub follows: i64,
        pub unfollows: i64,
        pub net: i64,
        pub followers: i64,
        pub reach: i64,
        pub reach_approx: f64,
        pub likes: i64,
        pub comments: i64,
        pub engagement: i64,
        pub baseline_followers: Option<i64>,
        pub baseline_as_of: Option<String>;
        pub provisional: bool,
    }
}

row! {
    /// A day of one ad.
    pub struct AdDayRow {
        pub day: String,
        pub ad_id: String,
        pub impressions: i64,
        pub clicks: i64,
        pub ctr: Option<f64>,
        pub conversions: i64,
        pub conversion_rate: Option<f64>,
        pub spend_cents: i64,
        pub spend: f64,
        pub conversion_value_cents: i64,
        pub conversion_value: f64,
        pub reach: i64,
        pub reach_approx: f64,
        pub frequency: Option<f64>;
        pub provisional: bool,
    }
}

row! {
    /// An advertiser's figures over a range (all its ads, or one): money in its currency,
    /// unique reach exact beside the HLL++ estimate.
    pub struct AdFigures {
        pub currency: String,
        pub impressions: Option<i64>,
        pub clicks: Option<i64>,
        pub ctr: Option<f64>,
        pub conversions: Option<i64>,
        pub conversion_rate: Option<f64>,
        pub spend_cents: Option<i64>,
        pub conversion_value_cents: Option<i64>,
        pub spend: Option<f64>,
        pub conversion_value: Option<f64>,
        pub unique_reach: Option<i64>,
        pub frequency: Option<f64>,
        pub unique_reach_approx: Option<f64>,
        pub unique_reach_estimator: String,
        pub unique_reach_relative_error: f64,
    }
}

/// One ad's figures over the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdOverRange {
    pub ad_id: String,
    #[serde(flatten)]
    pub figures: AdFigures,
}

impl crate::rows::FromBatch for AdOverRange {
    const COLUMNS: &'static [&'static str] = &[
        "ad_id",
        "currency",
        "impressions",
        "clicks",
        "ctr",
        "conversions",
        "conversion_rate",
        "spend_cents",
        "conversion_value_cents",
        "spend",
        "conversion_value",
        "unique_reach",
        "frequency",
        "unique_reach_approx",
        "unique_reach_estimator",
        "unique_reach_relative_error",
    ];

    fn decode(batch: &arrow::array::RecordBatch) -> Result<Vec<Self>, String> {
        let ids = crate::rows::column::<String>(batch, "ad_id")?;
        AdFigures::decode(batch)?
            .into_iter()
            .enumerate()
            .map(|(i, figures)| {
                Ok(Self {
                    ad_id: crate::rows::cell(&ids, i, "ad_id")?,
                    figures,
                })
            })
            .collect()
    }

    fn spreadsheet_safe(self) -> Self {
        Self {
            ad_id: crate::rows::Cell::spreadsheet_safe(self.ad_id),
            figures: self.figures.spreadsheet_safe(),
        }
    }
}

/// A daily report: its rows over a range of days, with the range, time zone and freshness.
#[derive(Debug, Serialize)]
pub struct DailyReport<R> {
    pub report: &'static str,
    pub tz: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The newest day with data (a preset's range ends on it).
    pub newest_day: Option<String>,
    pub complete_up_to: Option<String>,
    pub allowed_lateness_seconds: u64,
    pub rows: Vec<R>,
}

/// The advertiser's report: its ads per day, with totals and each ad over the range.
#[derive(Debug, Serialize)]
pub struct AdvertiserReport {
    #[serde(flatten)]
    pub daily: DailyReport<AdDayRow>,
    pub totals: Option<AdFigures>,
    pub ads: Vec<AdOverRange>,
}

/// An official account's campaigns (the registry's).
#[derive(Debug, Serialize)]
pub struct CampaignList {
    pub account_id: String,
    pub campaigns: Vec<lake::registry::Campaign>,
}

row! {
    /// A step of the funnel, overall or in one segment (platform, region, hour or day of the
    /// first view).
    pub struct FunnelRow {
        pub breakdown: String,
        pub segment: String,
        pub step: i64,
        pub step_type: String,
        pub users: i64,
        pub conversion_from_previous: Option<f64>,
        pub conversion_overall: Option<f64>,
        pub drop_off: Option<i64>,
        pub dropped_window_closed: Option<i64>,
        pub dropped_never_came_back: Option<i64>,
        pub median_seconds_from_previous: Option<f64>,
        pub p90_seconds_from_previous: Option<f64>,
        pub window_ms: i64,
        pub mode: String,
        pub registered: bool,
    }
}

row! {
    /// A step of the funnel of the users who came in a range of days.
    pub struct RangeFunnelRow {
        pub step: i64,
        pub step_type: String,
        pub users: i64,
        pub conversion_from_previous: Option<f64>,
        pub conversion_overall: Option<f64>,
        pub drop_off: Option<i64>,
        pub dropped_window_closed: Option<i64>,
        pub dropped_never_came_back: Option<i64>,
    }
}

row! {
    /// Users of a step by the time from the step before: `[from_seconds, to_seconds)`.
    pub struct TimeBucket {
        pub step: i64,
        pub step_type: String,
        pub from_seconds: i64,
        pub to_seconds: Option<i64>,
        pub users: i64,
    }
}

row! {
    /// A day of a campaign's reach (exact) and new users.
    pub struct CampaignDay {
        pub day: String,
        pub reach: i64,
        pub new_users: i64;
        pub provisional: bool,
    }
}

row! {
    /// Reach over a range: the days' users unioned, and their sketches merged.
    pub struct ReachCounts {
        pub reach: i64,
        pub reach_approx: f64,
    }
}

/// A campaign's reach over the range, exact and HLL++.
#[derive(Debug, Serialize)]
pub struct Reach {
    pub reach: i64,
    pub reach_approx: f64,
    pub estimator: &'static str,
    pub hll_relative_error: f64,
}

/// The funnel report.
#[derive(Debug, Serialize)]
pub struct FunnelReport {
    pub campaign_id: String,
    pub complete_up_to: Option<String>,
    pub allowed_lateness_seconds: u64,
    pub time_zone: String,
    pub tz: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub newest_day: Option<String>,
    pub rows: Vec<FunnelRow>,
    /// With a range, the funnel of the users who came in it (`null` without one).
    pub range_rows: Option<Vec<RangeFunnelRow>>,
    pub reach: Reach,
    pub daily: Vec<CampaignDay>,
    pub time_to_convert: Vec<TimeBucket>,
}

row! {
    /// A launch milestone as stored: users by `after_seconds` past the launch's start.
    pub struct MilestoneRow {
        pub after_seconds: i64,
        pub users: i64,
        pub start_us: i64,
    }
}

/// A launch milestone as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Milestone {
    pub after_seconds: i64,
    pub users: i64,
    /// Its instant is after `complete_up_to`: it may still grow.
    pub provisional: bool,
}

row! {
    /// A second of the launch's first hour.
    pub struct CurvePoint {
        pub second: i64,
        pub new_users: i64,
        pub users: i64,
    }
}

/// The +24 h forecast (or, once +24 h is complete, the figure itself).
#[derive(Debug, Serialize)]
pub struct Forecast {
    pub from_second: i64,
    pub observed: u64,
    pub users_24h: f64,
    pub low: f64,
    pub high: f64,
    pub interval: &'static str,
    pub stretch: f64,
    pub method: &'static str,
}

/// The launch report.
#[derive(Debug, Serialize)]
pub struct LaunchReport {
    pub campaign_id: String,
    pub forecast: Option<Forecast>,
    pub start: Option<String>,
    pub complete_up_to: Option<String>,
    pub allowed_lateness_seconds: u64,
    pub provisional_from_second: i64,
    pub milestones: Vec<Milestone>,
    pub curve: Vec<CurvePoint>,
}

row! {
    /// A complete figure a job run changed.
    pub struct Revision {
        pub recorded_at: String,
        pub table_name: String,
        pub table_version: i64,
        pub entity_kind: String,
        pub entity_id: Option<String>,
        pub day: Option<String>,
        pub key: String,
        pub metric: String,
        pub before: Option<f64>,
        pub after: Option<f64>,
        pub change: f64,
        pub reason: String,
        pub events_version_before: Option<i64>,
        pub events_version_after: Option<i64>;
        /// The revision in one line ("+1,204 followers on 2015-04-28 after late events").
        pub text: String,
    }
}
