//! Event contract v1: the fields of one event and the Arrow schemas of the tables that hold
//! them. `docs/events.md` is the prose version of this module.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The largest message the ingest accepts; anything larger is rejected (and stored truncated).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The longest `event_id`, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 64;
/// Events before this instant (2000-01-01T00:00:00Z, epoch milliseconds) are rejected.
pub const MIN_TS_MS: i64 = 946_684_800_000;
/// Events more than this far ahead of the ingest clock are rejected.
pub const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;

/// The event types the platform emits; other types matching the name pattern are accepted too.
pub const BUILT_IN_TYPES: &[&str] = &[
    "app_open",
    "photo_upload",
    "post",
    "comment",
    "like",
    "follow",
    "unfollow",
    "page_view",
    "reserve",
    "preorder",
    "ad_impression",
    "ad_click",
    "ad_conversion",
];

/// The platforms an event may come from.
pub const PLATFORMS: &[&str] = &["pc", "android", "ios", "web", "other"];

/// Fields an event of `type` must carry beyond the always-required ones.
/// Whether `name` matches `^[a-z][a-z0-9_]{0,63}$`, the form of an event type.
pub fn valid_type_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

pub fn required_for(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "follow" | "unfollow" => &["account_id"],
        "reserve" | "preorder" => &["campaign_id"],
        "ad_impression" | "ad_click" | "ad_conversion" => &["advertiser_id", "ad_id"],
        _ => &[],
    }
}

/// Column names of the `events` table, in schema order.
pub mod col {
    pub const EVENT_ID: &str = "event_id";
    pub const TS: &str = "ts";
    pub const USER_ID: &str = "user_id";
    pub const TYPE: &str = "type";
    pub const PLATFORM: &str = "platform";
    pub const ACCOUNT_ID: &str = "account_id";
    pub const CAMPAIGN_ID: &str = "campaign_id";
    pub const ADVERTISER_ID: &str = "advertiser_id";
    pub const AD_ID: &str = "ad_id";
    pub const PHOTOS: &str = "photos";
    pub const AMOUNT_CENTS: &str = "amount_cents";
    pub const REGION: &str = "region";
    pub const PROPS: &str = "props";
    pub const SOURCE: &str = "source";
    pub const SOURCE_PARTITION: &str = "source_partition";
    pub const SOURCE_OFFSET: &str = "source_offset";
    pub const INGESTED_AT: &str = "ingested_at";
    pub const DATE: &str = "date";
    pub const HOUR: &str = "hour";
    pub const RAW: &str = "raw";
    pub const RAW_BYTES: &str = "raw_bytes";
    pub const REASON: &str = "reason";
    pub const FIELD: &str = "field";
}

fn ts_type() -> DataType {
    // Delta's `timestamp` is microseconds in UTC; the contract's milliseconds fit it exactly.
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The `events` table: every accepted event, partitioned by UTC `date` and `hour`.
///
/// `user_id` is the contract's unsigned 64-bit id stored bit for bit in a signed 64-bit column
/// (Delta has no unsigned types): ids below 2^63 read as themselves, larger ones as negative
/// numbers that map back one to one.
pub static EVENTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::EVENT_ID, DataType::Utf8, false),
        Field::new(col::TS, ts_type(), false),
        Field::new(col::USER_ID, DataType::Int64, false),
        Field::new(col::TYPE, DataType::Utf8, false),
        Field::new(col::PLATFORM, DataType::Utf8, false),
        Field::new(col::ACCOUNT_ID, DataType::Utf8, true),
        Field::new(col::CAMPAIGN_ID, DataType::Utf8, true),
        Field::new(col::ADVERTISER_ID, DataType::Utf8, true),
        Field::new(col::AD_ID, DataType::Utf8, true),
        Field::new(col::PHOTOS, DataType::Int64, true),
        Field::new(col::AMOUNT_CENTS, DataType::Int64, true),
        Field::new(col::REGION, DataType::Utf8, true),
        Field::new(col::PROPS, DataType::Utf8, true),
        Field::new(col::SOURCE, DataType::Utf8, false),
        Field::new(col::SOURCE_PARTITION, DataType::Int32, false),
        Field::new(col::SOURCE_OFFSET, DataType::Int64, false),
        Field::new(col::INGESTED_AT, ts_type(), false),
        Field::new(col::DATE, DataType::Utf8, false),
        Field::new(col::HOUR, DataType::Int32, false),
    ]))
});

/// The `rejected` table: dead letters with their original bytes, partitioned by arrival `date`.
pub static REJECTED_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::RAW, DataType::Binary, false),
        Field::new(col::RAW_BYTES, DataType::Int64, false),
        Field::new(col::REASON, DataType::Utf8, false),
        Field::new(col::FIELD, DataType::Utf8, true),
        Field::new(col::SOURCE, DataType::Utf8, false),
        Field::new(col::SOURCE_PARTITION, DataType::Int32, false),
        Field::new(col::SOURCE_OFFSET, DataType::Int64, false),
        Field::new(col::INGESTED_AT, ts_type(), false),
        Field::new(col::DATE, DataType::Utf8, false),
    ]))
});
