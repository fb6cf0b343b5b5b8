//! The validating JSON → Arrow decoder.
//!
//! Each message is parsed once into borrowed raw field values (no allocation for the common
//! case of strings without escapes), checked against the contract, and appended to Arrow
//! builders. A message that breaks the contract becomes a [`Rejection`] naming the field and
//! the problem, and is appended with its original bytes to the rejected builders instead.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{
    self, EVENTS_SCHEMA, MAX_EVENT_ID_BYTES, MAX_FUTURE_MS, MAX_MESSAGE_BYTES, MIN_TS_MS,
    PLATFORMS, REJECTED_SCHEMA,
};

/// Why a message was refused: the field concerned (if one is) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The offending field, or `None` when the message as a whole is bad.
    pub field: Option<&'static str>,
    pub problem: String,
}

impl Rejection {
    fn field(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            problem: problem.into(),
        }
    }
    fn message(problem: impl Into<String>) -> Self {
        Self {
            field: None,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field.unwrap_or("message"), self.problem)
    }
}

impl std::error::Error for Rejection {}

/// Where a message came from: a Kafka topic-partition and offset, or a backfill file
/// (`file/<content hash>`, partition 0, offset = line number).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub source: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// One valid event, borrowing from the message it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub ts_ms: i64,
    pub user_id: u64,
    pub event_type: Cow<'a, str>,
    pub platform: &'static str,
    pub account_id: Option<Cow<'a, str>>,
    pub campaign_id: Option<Cow<'a, str>>,
    pub advertiser_id: Option<Cow<'a, str>>,
    pub ad_id: Option<Cow<'a, str>>,
    /// Photos in an upload; a `photo_upload` without the field counts 1.
    pub photos: Option<u32>,
    pub amount_cents: Option<i64>,
    pub region: Option<Cow<'a, str>>,
    /// The `props` object as the JSON text it was sent as.
    pub props: Option<&'a str>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    platform: Option<&'a RawValue>,
    #[serde(borrow, default)]
    account_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    campaign_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    advertiser_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ad_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    photos: Option<&'a RawValue>,
    #[serde(borrow, default)]
    amount_cents: Option<&'a RawValue>,
    #[serde(borrow, default)]
    region: Option<&'a RawValue>,
    #[serde(borrow, default)]
    props: Option<&'a RawValue>,
}

/// Shows a bad value in a reason, shortened so a huge value cannot flood the reason column.
fn shown(raw: &RawValue) -> String {
    let text = raw.get();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A present, non-null raw value (JSON `null` counts as absent).
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

fn string<'a>(field: &'static str, raw: &'a RawValue) -> Result<Cow<'a, str>, Rejection> {
    let text = raw.get();
    if !text.starts_with('"') {
        return Err(Rejection::field(
            field,
            format!("expected a string, got {}", shown(raw)),
        ));
    }
    // Borrow when the string has no escapes; decode into an owned String otherwise.
    match serde_json::from_str::<&'a str>(text) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(|e| Rejection::field(field, format!("bad string: {e}"))),
    }
}

fn required<'a>(field: &'static str, raw: Option<&'a RawValue>) -> Result<&'a RawValue, Rejection> {
    present(raw).ok_or_else(|| Rejection::field(field, "required field is missing"))
}

fn optional_string<'a>(
    field: &'static str,
    raw: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    present(raw).map(|r| string(field, r)).transpose()
}

fn unsigned(field: &'static str, raw: &RawValue, allow_string: bool) -> Result<u64, Rejection> {
    let text = raw.get();
    let digits = if allow_string && text.starts_with('"') {
        &text[1..text.len() - 1]
    } else {
        text
    };
    let expected = if allow_string {
        "an unsigned integer (number or decimal string)"
    } else {
        "an unsigned integer"
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::field(
            field,
            format!("expected {expected}, got {}", shown(raw)),
        ));
    }
    digits.parse::<u64>().map_err(|_| {
        Rejection::field(
            field,
            format!("{} is out of range for {expected}", shown(raw)),
        )
    })
}

fn timestamp(raw: &RawValue, now_ms: i64) -> Result<i64, Rejection> {
    let text = raw.get();
    let ms = if text.starts_with('"') {
        let s = string(event::col::TS, raw)?;
        DateTime::parse_from_rfc3339(&s)
            .map_err(|e| {
                Rejection::field(
                    event::col::TS,
                    format!("expected RFC 3339 with an offset, got {} ({e})", shown(raw)),
                )
            })?
            .timestamp_millis()
    } else {
        text.parse::<i64>().map_err(|_| {
            Rejection::field(
                event::col::TS,
                format!(
                    "expected integer epoch milliseconds or an RFC 3339 string, got {}",
                    shown(raw)
                ),
            )
        })?
    };
    if ms < MIN_TS_MS {
        return Err(Rejection::field(
            event::col::TS,
            format!("{} is before 2000-01-01", shown(raw)),
        ));
    }
    if ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(Rejection::field(
            event::col::TS,
            format!("{} is more than 24 h ahead of the ingest clock", shown(raw)),
        ));
    }
    Ok(ms)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Validates one message against the contract; `now_ms` is the ingest clock.
pub fn parse(payload: &[u8], now_ms: i64) -> Result<Event<'_>, Rejection> {
    use event::col;
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection::message(format!(
            "{} bytes is larger than the 1 MiB limit",
            payload.len()
        )));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::message(format!("not valid UTF-8 (at byte {})", e.valid_up_to()))
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => Rejection::message(format!("expected a JSON object, got {}", json_kind(&v))),
            Err(e) => Rejection::message(format!("not valid JSON: {e}")),
        });
    }
    let wire: Wire<'_> = serde_json::from_str(text)
        .map_err(|e| Rejection::message(format!("not valid JSON: {e}")))?;

    let event_id = string(col::EVENT_ID, required(col::EVENT_ID, wire.event_id)?)?;
    if event_id.is_empty() || event_id.len() > MAX_EVENT_ID_BYTES {
        return Err(Rejection::field(
            col::EVENT_ID,
            format!(
                "must be 1 to {MAX_EVENT_ID_BYTES} bytes, got {}",
                event_id.len()
            ),
        ));
    }
    let ts_ms = timestamp(required(col::TS, wire.ts)?, now_ms)?;
    let user_id = unsigned(col::USER_ID, required(col::USER_ID, wire.user_id)?, true)?;
    let type_raw = required(col::TYPE, wire.event_type)?;
    let event_type = string(col::TYPE, type_raw)?;
    if !crate::event::valid_type_name(&event_type) {
        return Err(Rejection::field(
            col::TYPE,
            format!(
                "{} does not match ^[a-z][a-z0-9_]{{0,63}}$",
                shown(type_raw)
            ),
        ));
    }
    let platform_raw = required(col::PLATFORM, wire.platform)?;
    let platform_name = string(col::PLATFORM, platform_raw)?;
    let platform = PLATFORMS
        .iter()
        .copied()
        .find(|p| *p == platform_name)
        .ok_or_else(|| {
            Rejection::field(
                col::PLATFORM,
                format!(
                    "unknown platform {}, expected one of {}",
                    shown(platform_raw),
                    PLATFORMS.join(", ")
                ),
            )
        })?;

    let mut ev = Event {
        event_id,
        ts_ms,
        user_id,
        event_type,
        platform,
        account_id: optional_string(col::ACCOUNT_ID, wire.account_id)?,
        campaign_id: optional_string(col::CAMPAIGN_ID, wire.campaign_id)?,
        advertiser_id: optional_string(col::ADVERTISER_ID, wire.advertiser_id)?,
        ad_id: optional_string(col::AD_ID, wire.ad_id)?,
        photos: present(wire.photos)
            .map(|r| {
                let n = unsigned(col::PHOTOS, r, false)?;
                u32::try_from(n).map_err(|_| {
                    Rejection::field(
                        col::PHOTOS,
                        format!("{n} is out of range for an unsigned 32-bit integer"),
                    )
                })
            })
            .transpose()?,
        amount_cents: present(wire.amount_cents)
            .map(|r| {
                r.get().parse::<i64>().map_err(|_| {
                    Rejection::field(
                        col::AMOUNT_CENTS,
                        format!("expected a signed 64-bit integer, got {}", shown(r)),
                    )
                })
            })
            .transpose()?,
        region: optional_string(col::REGION, wire.region)?,
        props: present(wire.props)
            .map(|r| {
                if r.get().starts_with('{') {
                    Ok(r.get())
                } else {
                    Err(Rejection::field(
                        col::PROPS,
                        format!("expected a JSON object, got {}", shown(r)),
                    ))
                }
            })
            .transpose()?,
    };
    for field in event::required_for(&ev.event_type) {
        let value = match *field {
            col::ACCOUNT_ID => &ev.account_id,
            col::CAMPAIGN_ID => &ev.campaign_id,
            col::ADVERTISER_ID => &ev.advertiser_id,
            _ => &ev.ad_id,
        };
        match value {
            None => {
                return Err(Rejection::field(
                    field,
                    format!("required for type {} but missing", ev.event_type),
                ));
            }
            Some(v) if v.is_empty() => {
                return Err(Rejection::field(
                    field,
                    format!("must not be empty for type {}", ev.event_type),
                ));
            }
            Some(_) => {}
        }
    }
    if ev.event_type == "photo_upload" && ev.photos.is_none() {
        ev.photos = Some(1);
    }
    Ok(ev)
}

/// The UTC `date` (YYYY-MM-DD) and `hour` partition values of an instant.
pub fn partition_of(ts_ms: i64) -> (String, i32) {
    let dt = Utc.timestamp_millis_opt(ts_ms).single().unwrap_or_default();
    (
        dt.format("%Y-%m-%d").to_string(),
        (ts_ms.div_euclid(3_600_000).rem_euclid(24)) as i32,
    )
}

/// Appends decoded events and rejections to Arrow builders, one pair of batches per flush.
pub struct Decoder {
    events: EventBuilders,
    rejected: RejectedBuilders,
    /// The last hour bucket seen and its date string: consecutive events mostly share an hour.
    hour_cache: Option<(i64, String)>,
}

#[derive(Default)]
struct EventBuilders {
    event_id: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    user_id: Int64Builder,
    event_type: StringBuilder,
    platform: StringBuilder,
    account_id: StringBuilder,
    campaign_id: StringBuilder,
    advertiser_id: StringBuilder,
    ad_id: StringBuilder,
    photos: Int64Builder,
    amount_cents: Int64Builder,
    region: StringBuilder,
    props: StringBuilder,
    source: StringBuilder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
    ingested_at: TimestampMicrosecondBuilder,
    date: StringBuilder,
    hour: Int32Builder,
    len: usize,
}

#[derive(Default)]
struct RejectedBuilders {
    raw: BinaryBuilder,
    raw_bytes: Int64Builder,
    reason: StringBuilder,
    field: StringBuilder,
    source: StringBuilder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
    ingested_at: TimestampMicrosecondBuilder,
    date: StringBuilder,
    len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            events: EventBuilders::default(),
            rejected: RejectedBuilders::default(),
            hour_cache: None,
        }
    }

    /// Decodes one message. An accepted event is appended to the events builders (its time,
    /// epoch ms, is returned); a rejected
    /// message is returned and, when `store_rejection` is set (it is not when the rejected
    /// table already holds that offset), appended with its original bytes to the rejected
    /// builders.
    pub fn push(
        &mut self,
        payload: &[u8],
        origin: Origin<'_>,
        ingested_at_ms: i64,
        store_rejection: bool,
    ) -> Result<i64, Rejection> {
        match parse(payload, ingested_at_ms) {
            Ok(ev) => {
                self.append_event(&ev, origin, ingested_at_ms);
                Ok(ev.ts_ms)
            }
            Err(rejection) => {
                if store_rejection {
                    self.append_rejection(payload, &rejection, origin, ingested_at_ms);
                }
                Err(rejection)
            }
        }
    }

    fn date_of_hour(&mut self, ts_ms: i64) -> (&str, i32) {
        let bucket = ts_ms.div_euclid(3_600_000);
        if self.hour_cache.as_ref().is_none_or(|(b, _)| *b != bucket) {
            self.hour_cache = Some((bucket, partition_of(ts_ms).0));
        }
        let date = &self.hour_cache.as_ref().expect("set above").1;
        (date, bucket.rem_euclid(24) as i32)
    }

    fn append_event(&mut self, ev: &Event<'_>, origin: Origin<'_>, ingested_at_ms: i64) {
        let (date, hour) = self.date_of_hour(ev.ts_ms);
        let (date, hour) = (date.to_owned(), hour);
        let b = &mut self.events;
        b.event_id.append_value(&ev.event_id);
        b.ts.append_value(ev.ts_ms * 1000);
        b.user_id.append_value(ev.user_id as i64);
        b.event_type.append_value(&ev.event_type);
        b.platform.append_value(ev.platform);
        b.account_id.append_option(ev.account_id.as_deref());
        b.campaign_id.append_option(ev.campaign_id.as_deref());
        b.advertiser_id.append_option(ev.advertiser_id.as_deref());
        b.ad_id.append_option(ev.ad_id.as_deref());
        b.photos.append_option(ev.photos.map(i64::from));
        b.amount_cents.append_option(ev.amount_cents);
        b.region.append_option(ev.region.as_deref());
        b.props.append_option(ev.props);
        b.source.append_value(origin.source);
        b.source_partition.append_value(origin.partition);
        b.source_offset.append_value(origin.offset);
        b.ingested_at.append_value(ingested_at_ms * 1000);
        b.date.append_value(date);
        b.hour.append_value(hour);
        b.len += 1;
    }

    fn append_rejection(
        &mut self,
        payload: &[u8],
        why: &Rejection,
        origin: Origin<'_>,
        ingested_at_ms: i64,
    ) {
        let b = &mut self.rejected;
        b.raw
            .append_value(&payload[..payload.len().min(MAX_MESSAGE_BYTES)]);
        b.raw_bytes.append_value(payload.len() as i64);
        b.reason.append_value(why.to_string());
        b.field.append_option(why.field);
        b.source.append_value(origin.source);
        b.source_partition.append_value(origin.partition);
        b.source_offset.append_value(origin.offset);
        b.ingested_at.append_value(ingested_at_ms * 1000);
        b.date.append_value(partition_of(ingested_at_ms).0);
        b.len += 1;
    }

    /// Accepted events since the last [`Decoder::finish`].
    pub fn events_len(&self) -> usize {
        self.events.len
    }

    /// Rejected messages since the last [`Decoder::finish`].
    pub fn rejected_len(&self) -> usize {
        self.rejected.len
    }

    /// The buffered events and rejections as record batches; the builders start empty again.
    pub fn finish(&mut self) -> (RecordBatch, RecordBatch) {
        let e = &mut self.events;
        let utc = Some(Arc::<str>::from("UTC"));
        let events: Vec<ArrayRef> = vec![
            Arc::new(e.event_id.finish()),
            Arc::new(e.ts.finish().with_timezone_opt(utc.clone())),
            Arc::new(e.user_id.finish()),
            Arc::new(e.event_type.finish()),
            Arc::new(e.platform.finish()),
            Arc::new(e.account_id.finish()),
            Arc::new(e.campaign_id.finish()),
            Arc::new(e.advertiser_id.finish()),
            Arc::new(e.ad_id.finish()),
            Arc::new(e.photos.finish()),
            Arc::new(e.amount_cents.finish()),
            Arc::new(e.region.finish()),
            Arc::new(e.props.finish()),
            Arc::new(e.source.finish()),
            Arc::new(e.source_partition.finish()),
            Arc::new(e.source_offset.finish()),
            Arc::new(e.ingested_at.finish().with_timezone_opt(utc.clone())),
            Arc::new(e.date.finish()),
            Arc::new(e.hour.finish()),
        ];
        e.len = 0;
        let r = &mut self.rejected;
        let rejected: Vec<ArrayRef> = vec![
            Arc::new(r.raw.finish()),
            Arc::new(r.raw_bytes.finish()),
            Arc::new(r.reason.finish()),
            Arc::new(r.field.finish()),
            Arc::new(r.source.finish()),
            Arc::new(r.source_partition.finish()),
            Arc::new(r.source_offset.finish()),
            Arc::new(r.ingested_at.finish().with_timezone_opt(utc)),
            Arc::new(r.date.finish()),
        ];
        r.len = 0;
        (
            RecordBatch::try_new(EVENTS_SCHEMA.clone(), events)
                .expect("builders follow EVENTS_SCHEMA"),
            RecordBatch::try_new(REJECTED_SCHEMA.clone(), rejected)
                .expect("builders follow REJECTED_SCHEMA"),
        )
    }
}
