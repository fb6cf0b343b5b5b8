//! Activity: per report day and segment (all users, each platform, each platform group),
//! DAU, WAU and MAU (distinct users over the 7 and 30 days ending that day), DAU/MAU, and new
//! users (first seen in the segment), exact from one roaring bitmap of user codes (the
//! dictionary [`crate::codes`]) per day and segment and approximate from one HLL++ sketch of
//! the user ids per day and segment. Both are stored, so any range's distinct users is an OR
//! (or merge) of stored days without rescanning events; WAU and MAU of later days are
//! recomputed from them when an earlier day changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use futures::TryStreamExt;
use query::sketch::{
    HLL_ESTIMATOR, HLL_PRECISION, Hll, append_codes_bytes, codes_are_dense, codes_from_bytes,
    estimate_of_codes, hll_relative_error, user_code,
};
use roaring::RoaringBitmap;

use crate::codes::UserCodes;

use crate::changes::Hour;
use crate::hours::{self, Kept, Live, Reading, Slot, SlotOf};
use crate::pages::{Coded, Dictionary};
use crate::publish::{Scope, publish, schema};
use crate::scan::{
    EventFile, FlagsBuffer, SharedFlags, Source, Strs, files_of_days, fold_sources, ints, par_map,
    strs, times,
};
use crate::{Ctx, Error, Job, Result};

pub const TABLE: &str = "activity";

/// The segments, in the order rows are written: (breakdown, segment).
pub const SEGMENTS: [(&str, &str); 10] = [
    ("total", "all"),
    ("platform", "pc"),
    ("platform", "android"),
    ("platform", "ios"),
    ("platform", "web"),
    ("platform", "other"),
    ("platform_group", "mobile"),
    ("platform_group", "pc"),
    ("platform_group", "web"),
    ("platform_group", "other"),
];

pub fn table_schema() -> arrow::datatypes::SchemaRef {
    schema(vec![
        Field::new("day", DataType::Date32, false),
        Field::new("breakdown", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("dau", DataType::Int64, false),
        Field::new("wau", DataType::Int64, false),
        Field::new("mau", DataType::Int64, false),
        Field::new("dau_mau", DataType::Float64, true),
        Field::new("new_users", DataType::Int64, false),
        Field::new("dau_approx", DataType::Float64, false),
        Field::new("wau_approx", DataType::Float64, false),
        Field::new("mau_approx", DataType::Float64, false),
        Field::new("estimator", DataType::Utf8, false),
        Field::new("hll_precision", DataType::Int32, false),
        Field::new("hll_relative_error", DataType::Float64, false),
        Field::new("users_bitmap", DataType::Binary, false),
        Field::new("users_hll", DataType::Binary, false),
    ])
}

/// The platform groups pc, web and other are the platforms pc, web and other: the segment
/// whose figures each segment shares.
const SAME_AS: [usize; 10] = [0, 1, 2, 3, 4, 5, 6, 1, 4, 5];

fn platform_index(p: &str) -> usize {
    match p {
        "pc" => 0,
        "android" => 1,
        "ios" => 2,
        "web" => 3,
        _ => 4,
    }
}

/// Each row's platform index; a dictionary's values are looked at once each.
fn platform_indices(platforms: &Strs<'_>, rows: usize) -> Vec<u8> {
    match platforms {
        Strs::Dict(keys, values) => {
            let of_key: Vec<u8> = (0..values.len())
                .map(|k| platform_index(values.value(k)) as u8)
                .collect();
            (0..rows)
                .map(|i| {
                    if keys.is_valid(i) {
                        of_key.get(keys.value(i) as usize).copied().unwrap_or(4)
                    } else {
                        4
                    }
                })
                .collect()
        }
        other => (0..rows)
            .map(|i| platform_index(other.get(i).unwrap_or("other")) as u8)
            .collect(),
    }
}

/// The platforms (bits of `platform_index`) of each of the distinct segments (those `SAME_AS`
/// maps to themselves): all, each platform, mobile.
const MASKS: [u8; 7] = [
    0x1f,
    1 << 0,
    1 << 1,
    1 << 2,
    1 << 3,
    1 << 4,
    1 << 1 | 1 << 2,
];

/// Each slot's users with the platforms they were seen on, shared by the scan's workers.
type SharedSlots = Arc<std::sync::Mutex<BTreeMap<Slot, Arc<SharedFlags>>>>;

/// A worker's buffer into the users of `slot` (their platforms).
fn slot_users<'a>(
    per_slot: &'a mut BTreeMap<Slot, FlagsBuffer>,
    shared: &SharedSlots,
    slot: Option<Slot>,
) -> Option<&'a mut FlagsBuffer> {
    let slot = slot?;
    Some(per_slot.entry(slot).or_insert_with(|| {
        let mut all = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Files come in hour order: a new day is sized as the day before it, whose users it
        // resembles, instead of growing from nothing.
        let like = all.range(..slot).next_back().map_or(0, |(_, u)| u.len());
        let set = all
            .entry(slot)
            .or_insert_with(|| Arc::new(SharedFlags::with_capacity(like)));
        FlagsBuffer::new(set.clone())
    }))
}

/// Adds a row group's users with the platforms each was seen on, from the dictionary codes of
/// `user_id` and `platform`: the codes' pairs are gathered as bit flags per user code, and
/// each user of the group is inserted once.
fn insert_coded(users: &mut FlagsBuffer, ids: &Coded, platforms: &Coded) -> Result<()> {
    let (Dictionary::Int64(ids_of), Dictionary::Bytes(names)) =
        (&ids.dictionary, &platforms.dictionary)
    else {
        return Err(Error::Internal(
            "user_id or platform has an unexpected physical type".into(),
        ));
    };
    let bit: Vec<u8> = names
        .iter()
        .map(|n| 1 << platform_index(std::str::from_utf8(n).unwrap_or("other")))
        .collect();
    let mut flags = vec![0u8; ids_of.len()];
    for (&u, &p) in ids.codes.iter().zip(&platforms.codes) {
        flags[u as usize] |= bit[p as usize];
    }
    for (&id, &f) in ids_of.iter().zip(&flags) {
        if f != 0 {
            users.insert(id as u64, f);
        }
    }
    Ok(())
}

/// A batch's user ids and each row's platform index.
fn users_and_platforms(batch: &RecordBatch) -> Result<(&[i64], Vec<u8>)> {
    let ids = ints(batch, "user_id")?.values();
    Ok((
        ids,
        platform_indices(&strs(batch, "platform")?, batch.num_rows()),
    ))
}

/// The distinct users (each with the platforms they were seen on) of each slot that
/// `slot_of` gives the rows of `files`, from one scan.
async fn slots_users(
    ctx: &Ctx<'_>,
    mut files: Vec<EventFile>,
    slot_of: SlotOf,
) -> Result<BTreeMap<Slot, Vec<(u64, u8)>>> {
    let tz = ctx.opts.tz;
    // Per slot, each user and the platforms they were seen on; a worker's buffers into them.
    let shared: SharedSlots = Default::default();
    let into = shared.clone();
    type Acc = (query::tz::LocalClock, BTreeMap<Slot, FlagsBuffer>);
    // Hour by hour: both cores fill the same day's sets, which stay in their caches (taken
    // largest first, the files of 30 days interleave and every insert misses the cache).
    files.sort_by_key(|f| f.hour);
    let parts = fold_sources(
        &ctx.events,
        files,
        move || (query::tz::LocalClock::new(tz), BTreeMap::new()),
        move |acc: &mut Acc, file: &EventFile, source: &mut Source| -> Result<()> {
            let (clock, per_day) = (&mut acc.0, &mut acc.1);
            if let [day] = file.days[..] {
                // An hour in one report day: every row is the hour's day, and a distinct
                // count needs each (user, platform) pair once: from the columns' dictionary
                // codes where the file has them.
                let Some(users) = slot_users(per_day, &into, slot_of(day, file)) else {
                    return Ok(());
                };
                if let Some(coded) = source.codes(&["user_id", "platform"])? {
                    for (ids, platforms) in coded[0].iter().zip(&coded[1]) {
                        insert_coded(users, ids, platforms)?;
                    }
                    return Ok(());
                }
                for batch in source.batches(&["user_id", "platform"])? {
                    let batch = batch?;
                    let (ids, platforms) = users_and_platforms(&batch)?;
                    for (&u, &p) in ids.iter().zip(&platforms) {
                        users.insert(u as u64, 1 << p);
                    }
                }
                return Ok(());
            }
            // An hour split between two report days: each row's day from its `ts`.
            for batch in source.batches(&["ts", "user_id", "platform"])? {
                let batch = batch?;
                let (ids, platforms) = users_and_platforms(&batch)?;
                let ts = times(&batch, "ts")?;
                let mut current = i32::MIN;
                let mut slot: Option<&mut FlagsBuffer> = None;
                for (i, (&u, &p)) in ids.iter().zip(&platforms).enumerate() {
                    let day = clock.day(ts.value(i));
                    if day != current {
                        current = day;
                        slot = slot_users(per_day, &into, slot_of(day, file));
                    }
                    if let Some(m) = slot.as_mut() {
                        m.insert(u as u64, 1 << p);
                    }
                }
            }
            Ok(())
        },
    )
    .await?;
    // The workers' last buffered users handed over; then each day's set is this one's alone.
    for (_, mut buffers) in parts {
        for b in buffers.values_mut() {
            b.flush();
        }
    }
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| Error::Internal("the scan's user sets are still shared".into()))?
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut sets = Vec::with_capacity(shared.len());
    for (slot, set) in shared {
        let set = Arc::try_unwrap(set)
            .map_err(|_| Error::Internal("a slot's user set is still shared".into()))?;
        sets.push((slot, set));
    }
    Ok(par_map(sets, |(slot, users)| (slot, users.into_sorted()))
        .into_iter()
        .collect())
}

/// `RoaringBitmap::from_lsb0_bytes(0, bits)`, with each container of exactly 4096 values made
/// an array: roaring 0.11 builds that one as a bitmap, which its serialization then writes as
/// a bitmap while every reader of the portable format (roaring's own included) takes a
/// container of 4096 values for an array. Removing and inserting one value again has the
/// container checked (`ensure_correct_store`).
fn bitmap_of_bits(bits: &[u8]) -> RoaringBitmap {
    let mut b = RoaringBitmap::from_lsb0_bytes(0, bits);
    let containers = (bits.len() as u64 * 8).div_ceil(1 << 16);
    for k in 0..containers {
        let lo = (k << 16) as u32;
        let range = lo..=(lo | 0xffff);
        if b.range_cardinality(range) == 4096 {
            let before = if lo == 0 { 0 } else { b.rank(lo - 1) };
            if let Some(v) = b.select(before as u32) {
                b.remove(v);
                b.insert(v);
            }
        }
    }
    b
}

impl Day {
    /// A day of fresh users (sorted distinct ids, each with its platforms' bits): per segment
    /// the bitmap of their codes in `dict` (which has every one of them) and the sketch of
    /// their ids; the platform groups pc, web and other are the platforms'.
    fn of_users(users: &[(u64, u8)], dict: &UserCodes) -> Result<Self> {
        // A bitset of codes per platform and one of all: a bit set per user and platform, then
        // each read into a roaring bitmap by 64 Ki-code containers.
        let bytes = dict.len().div_ceil(8);
        let mut bits = vec![vec![0u8; bytes]; 6];
        let mut missing = 0usize;
        let mut k = 0;
        dict.each_code(users.iter().map(|u| u.0), |_, code| {
            let f = users[k].1;
            k += 1;
            let Some(code) = code else {
                missing += 1;
                return;
            };
            let (byte, bit) = ((code / 8) as usize, 1u8 << (code % 8));
            bits[5][byte] |= bit;
            for (p, b) in bits[..5].iter_mut().enumerate() {
                if f & 1 << p != 0 {
                    b[byte] |= bit;
                }
            }
        });
        if missing > 0 {
            return Err(Error::Internal(format!(
                "{missing} users have no code in the user dictionary"
            )));
        }
        let mut of_bits: Vec<RoaringBitmap> =
            bits.into_iter().map(|b| bitmap_of_bits(&b)).collect();
        let all = of_bits.pop().expect("six bitsets");
        let mobile = &of_bits[1] | &of_bits[2];
        let mut bitmaps = vec![all];
        bitmaps.extend(of_bits);
        bitmaps.push(mobile);
        // The sketches hash the ids, as `hll_sketch(user_id)` in SQL does.
        let mut sketches = Vec::with_capacity(SEGMENTS.len());
        let mut codes = Vec::with_capacity(SEGMENTS.len());
        for mask in MASKS {
            let mut c: Vec<u32> = users
                .iter()
                .filter(|u| u.1 & mask != 0)
                .map(|u| user_code(u.0))
                .collect();
            c.sort_unstable();
            c.dedup();
            sketches.push(Hll::of_codes(&c));
            // A dense sketch's windows merge registers: its codes are not needed.
            codes.push((!codes_are_dense(&c)).then_some(c));
        }
        for s in 7..SEGMENTS.len() {
            bitmaps.push(bitmaps[SAME_AS[s]].clone());
            codes.push(codes[SAME_AS[s]].clone());
            sketches.push(sketches[SAME_AS[s]].clone());
        }
        Ok(Day {
            users: bitmaps,
            sketches,
            codes,
        })
    }
}

impl Day {
    /// A day without users.
    fn empty() -> Self {
        Day {
            users: vec![RoaringBitmap::new(); SEGMENTS.len()],
            sketches: vec![Hll::new(); SEGMENTS.len()],
            codes: vec![Some(Vec::new()); SEGMENTS.len()],
        }
    }

    /// Adds `other`'s users: the union of each segment's users and sketches.
    fn merge(&mut self, other: &Day) -> Result<()> {
        for s in 0..SEGMENTS.len() {
            self.users[s] |= &other.users[s];
            self.sketches[s]
                .merge(&other.sketches[s])
                .map_err(internal)?;
            self.codes[s] = self.sketches[s].sparse_codes();
        }
        Ok(())
    }
}

/// What `spacepulse run` keeps of the activity job between runs, so that a commit into the
/// current hour reads only its own files (see [`crate::hours`]): the newest report days' users
/// in parts (per open UTC hour, and each day's closed hours together: the files read and their
/// users' bitmaps and sketches per segment), a day being the merge of its parts. A part is read
/// again when a file it read is no longer live (a compaction rewrote it); everything is, when
/// the events table was replaced or the user dictionary or the report time zone changed.
#[derive(Debug, Default)]
pub struct Memory(Kept<Hours>);

/// A part of a day's users: one open hour, or (`None`) the day's closed hours together, so
/// that memory holds at most two open hours and one part per kept day.
type PartKey = (i32, Option<Hour>);

struct Hours {
    table_id: String,
    dict: Option<String>,
    tz: query::tz::ReportTz,
    parts: BTreeMap<PartKey, HourPart>,
    reading: Reading,
}

struct HourPart {
    files: std::collections::HashSet<deltalake::Path>,
    users: Day,
}

impl Memory {
    /// The hours kept, checked against this run's live `files` of the changed `days`.
    fn take(
        &self,
        ctx: &Ctx<'_>,
        dict: Option<String>,
        days: &BTreeSet<i32>,
        files: &[EventFile],
    ) -> Result<Hours> {
        let table_id = hours::table_id(ctx)?;
        let tz = ctx.opts.tz;
        let kept = self
            .0
            .take()
            .filter(|h| h.table_id == table_id && h.dict == dict && h.tz == tz);
        let mut parts = kept.map(|h| h.parts).unwrap_or_default();
        let live = Live::of(days, files);
        parts.retain(|key, part| {
            let within = match key.1 {
                Some(hour) => live.hours.get(&(key.0, hour)),
                None => live.days.get(&key.0),
            };
            live.keeps(key.0, &part.files, within)
        });
        let read = |day, hour, p: &deltalake::Path| {
            [(day, Some(hour)), (day, None)]
                .iter()
                .any(|k| parts.get(k).is_some_and(|part| part.files.contains(p)))
        };
        let reading = live.reading(read);
        Ok(Hours {
            table_id,
            dict,
            tz,
            parts,
            reading,
        })
    }

    /// The parts kept (open hours, and each day's closed hours as one; 0 with nothing kept).
    pub fn hours(&self) -> usize {
        self.0.peek(|h| h.parts.len()).unwrap_or(0)
    }
}

impl Hours {
    /// Folds each closed hour into its day's closed part.
    fn close_hours(&mut self) -> Result<()> {
        let Some(newest) = hours::newest(self.parts.keys().filter_map(|k| k.1.as_ref())) else {
            return Ok(());
        };
        let closing: Vec<PartKey> = self
            .parts
            .keys()
            .filter(|k| k.1.as_ref().is_some_and(|h| hours::closed(h, newest)))
            .copied()
            .collect();
        for key in closing {
            let Some(part) = self.parts.remove(&key) else {
                continue;
            };
            match self.parts.get_mut(&(key.0, None)) {
                Some(closed) => {
                    closed.users.merge(&part.users)?;
                    closed.files.extend(part.files);
                }
                None => {
                    self.parts.insert((key.0, None), part);
                }
            }
        }
        Ok(())
    }

    /// Adds the users read from each hour's unread files to the hour, and gives each day
    /// gathered hour by hour as the merge of its hours.
    fn merge(&mut self, read: Vec<(i32, Hour, Day)>) -> Result<Vec<(i32, Day)>> {
        let mut read: BTreeMap<(i32, Hour), Day> =
            read.into_iter().map(|(d, h, u)| ((d, h), u)).collect();
        for ((day, hour), paths) in std::mem::take(&mut self.reading.new_files) {
            let key = (day, Some(hour));
            let users = read.remove(&(day, hour));
            match self.parts.get_mut(&key) {
                Some(part) => {
                    if let Some(u) = users {
                        part.users.merge(&u)?;
                    }
                    part.files.extend(paths);
                }
                None => {
                    let part = HourPart {
                        files: paths.into_iter().collect(),
                        users: users.unwrap_or_else(Day::empty),
                    };
                    self.parts.insert(key, part);
                }
            }
        }
        if let Some((day, hour)) = read.keys().next() {
            return Err(Error::Internal(format!(
                "activity: users read for day {day}, hour {hour:?}, which had no file to read"
            )));
        }
        self.close_hours()?;
        let mut out = Vec::new();
        for &day in self.reading.days.iter() {
            let mut hours = self.parts.iter().filter(|(k, _)| k.0 == day);
            let Some((_, first)) = hours.next() else {
                continue;
            };
            let mut merged = first.users.clone();
            for (_, part) in hours {
                merged.merge(&part.users)?;
            }
            out.push((day, merged));
        }
        Ok(out)
    }
}

#[derive(Clone)]
struct Day {
    /// Per segment, the day's users: their codes in the user dictionary.
    users: Vec<RoaringBitmap>,
    sketches: Vec<Hll>,
    /// Per segment, the sketch's codes (sorted, distinct) while it is sparse (a dense
    /// one's windows merge registers).
    codes: Vec<Option<Vec<u32>>>,
}

/// The stored days' bitmaps and sketches (those not being recomputed).
async fn stored(ctx: &Ctx<'_>, skip: &BTreeSet<i32>) -> Result<BTreeMap<i32, Day>> {
    let mut out: BTreeMap<i32, Day> = BTreeMap::new();
    let Some(table) = ctx
        .opts
        .lake
        .open(&crate::publish::table_name(TABLE))
        .await?
    else {
        return Ok(out);
    };
    let session = query::session::context();
    query::session::register(&session, TABLE, &table).await?;
    let mut stream = session
        .sql("SELECT day, breakdown, segment, users_bitmap, users_hll FROM activity")
        .await?
        .execute_stream()
        .await?;
    let index: BTreeMap<(&str, &str), usize> =
        SEGMENTS.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    while let Some(batch) = stream.try_next().await? {
        let days = arrow::array::AsArray::as_primitive::<arrow::datatypes::Date32Type>(
            batch.column(0).as_ref(),
        )
        .clone();
        let breakdowns = strs(&batch, "breakdown")?;
        let segments = strs(&batch, "segment")?;
        let bitmaps = arrow::compute::cast(batch.column(3), &DataType::Binary)?;
        let bitmaps = arrow::array::AsArray::as_binary::<i32>(bitmaps.as_ref());
        let sketches = arrow::compute::cast(batch.column(4), &DataType::Binary)?;
        let sketches = arrow::array::AsArray::as_binary::<i32>(sketches.as_ref());
        for i in 0..batch.num_rows() {
            let day = days.value(i);
            if skip.contains(&day) {
                continue;
            }
            let key = (
                breakdowns.get(i).unwrap_or(""),
                segments.get(i).unwrap_or(""),
            );
            let Some(&s) = index.get(&key) else { continue };
            let entry = out.entry(day).or_insert_with(Day::empty);
            entry.users[s] = codes_from_bytes(bitmaps.value(i)).map_err(internal)?;
            let mut sketch = Hll::from_bytes(sketches.value(i)).map_err(internal)?;
            entry.codes[s] = sketch.sparse_codes();
            entry.sketches[s] = sketch;
        }
    }
    Ok(out)
}

pub async fn run(ctx: &Ctx<'_>) -> Result<(usize, u64, bool)> {
    let mut plan = ctx.plan(Job::Activity).await?;
    // Stored days are built on only if their bitmaps hold the dictionary's codes: a table of
    // an older spacepulse (bitmaps of ids), or coded with a dictionary since deleted, is
    // recomputed whole, even when no event changed.
    let lake = &ctx.opts.lake;
    if plan.scope != Scope::All && !coded_with(lake, crate::codes::current_app(lake).await?).await?
    {
        tracing::warn!(
            "metrics/activity was not coded with the lake's user dictionary: recomputing every day"
        );
        plan = ctx.plan_everything(Job::Activity).await?;
    }
    if plan.up_to_date {
        return Ok((0, 0, true));
    }
    let mut dict = UserCodes::load(lake).await?;
    ctx.progress
        .start(Job::Activity.name(), plan.days.len() as u64);
    let mut days: BTreeMap<i32, Day> = if plan.scope == Scope::All {
        BTreeMap::new()
    } else {
        stored(ctx, &plan.days).await?
    };
    let started = std::time::Instant::now();
    let files = files_of_days(&ctx.events, ctx.opts.tz, &plan.days)?;
    // Under `spacepulse run` the newest days are gathered hour by hour, and only the files
    // committed since the last run are read: a day is the merge of its hours.
    let mut hours = match &ctx.opts.memory {
        Some(m) => Some(m.activity.take(ctx, dict.app(), &plan.days, &files)?),
        None => None,
    };
    let (slot_of, files) = match &hours {
        Some(h) => (
            h.reading.slot_of(&plan.days),
            h.reading.to_read(files, &plan.days),
        ),
        None => (hours::whole_days(&plan.days), files),
    };
    let fresh = slots_users(ctx, files, slot_of).await?;
    tracing::debug!(secs = started.elapsed().as_secs_f64(), "activity: scan");
    // The users no run has coded yet get the next codes, committed before any bitmap uses them.
    let mut new: Vec<u64> = Vec::new();
    for users in fresh.values() {
        dict.each_code(users.iter().map(|u| u.0), |id, code| {
            if code.is_none() {
                new.push(id);
            }
        });
    }
    new.sort_unstable();
    new.dedup();
    dict.add(&ctx.opts.lake, new).await?;
    tracing::debug!(
        secs = started.elapsed().as_secs_f64(),
        codes = dict.len(),
        "activity: scan, codes"
    );
    let fresh = par_map(fresh.into_iter().collect(), |(slot, users)| {
        Day::of_users(&users, &dict).map(|d| (slot, d))
    });
    tracing::debug!(
        secs = started.elapsed().as_secs_f64(),
        "activity: scan, bitmaps, sketches"
    );
    for &day in &plan.days {
        days.remove(&day);
        ctx.progress.advance(Job::Activity.name());
    }
    let mut by_hour = Vec::new();
    for f in fresh {
        match f? {
            ((day, None), d) => {
                if !d.users[0].is_empty() {
                    days.insert(day, d);
                }
            }
            ((day, Some(hour)), d) => by_hour.push((day, hour, d)),
        }
    }
    if let Some(h) = hours.as_mut() {
        for (day, d) in h.merge(by_hour)? {
            if !d.users[0].is_empty() {
                days.insert(day, d);
            }
        }
    }
    // Every day from the first recomputed one on: its WAU, MAU and new users may change.
    let first = plan.days.first().copied().unwrap_or(i32::MAX);
    let write_days: BTreeSet<i32> = days
        .keys()
        .copied()
        .filter(|d| *d >= first)
        .chain(plan.days.iter().copied())
        .collect();
    let t = std::time::Instant::now();
    let batches = rows(&days, &write_days)?;
    tracing::debug!(
        secs = t.elapsed().as_secs_f64(),
        "activity: figures and encoding"
    );
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let t = std::time::Instant::now();
    let scope = plan.widened(write_days);
    let mut txns = plan.txns.clone();
    if let Some(app) = dict.app() {
        txns.push((app, dict.len() as i64));
    }
    publish(
        &ctx.opts.lake,
        TABLE,
        table_schema(),
        batches,
        &scope,
        &txns,
    )
    .await?;
    tracing::debug!(secs = t.elapsed().as_secs_f64(), "activity: publish");
    if let (Some(m), Some(mut h)) = (&ctx.opts.memory, hours) {
        // The codes are the dictionary's as it is now (the first run creates it).
        h.dict = dict.app();
        m.activity.0.keep(h);
    }
    Ok((plan.days.len(), rows, false))
}

/// Whether the activity table's bitmaps hold codes of the dictionary whose `txn` application
/// id is `app` (true when there is no activity table yet).
async fn coded_with(lake: &lake::tables::Lake, app: Option<String>) -> Result<bool> {
    let Some(table) = lake.open(&crate::publish::table_name(TABLE)).await? else {
        return Ok(true);
    };
    Ok(match app {
        Some(app) => lake::tables::covered(&table, &app).await?.is_some(),
        // No dictionary yet: only a table without rows holds no codes.
        None => table.snapshot()?.log_data().num_files() == 0,
    })
}

/// A sliding window of sketches merged by two stacks (amortized three merges per day,
/// not one per day in the window): `front` holds suffix merges, oldest last.
#[derive(Default)]
struct Window {
    front: Vec<(i32, Hll)>,
    back: Vec<(i32, Hll)>,
    back_merged: Hll,
}

impl Window {
    fn push(&mut self, day: i32, h: &Hll) -> Result<()> {
        self.back_merged.merge(h).map_err(internal)?;
        self.back.push((day, h.clone()));
        Ok(())
    }

    /// Drops the days before `first`; returns the estimate of the days left.
    fn estimate_from(&mut self, first: i32) -> Result<f64> {
        loop {
            if self.front.is_empty() {
                if self.back.is_empty() {
                    break;
                }
                let mut merged = Hll::new();
                for (d, h) in self.back.drain(..).rev() {
                    merged.merge(&h).map_err(internal)?;
                    self.front.push((d, merged.clone()));
                }
                self.back_merged = Hll::new();
            }
            match self.front.last() {
                Some((d, _)) if *d < first => {
                    self.front.pop();
                }
                _ => break,
            }
        }
        let mut all = self.front.last().map(|f| f.1.clone()).unwrap_or_default();
        all.merge(&self.back_merged).map_err(internal)?;
        Ok(all.estimate())
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// One segment's figures for one day.
#[derive(Default, Clone, Copy)]
struct Figures {
    wau: i64,
    mau: i64,
    new_users: i64,
    wau_approx: f64,
    mau_approx: f64,
}

/// Every day's WAU, MAU and new users of segment `s`, exact from the users' last active day
/// (a user counts in a window if their last active day so far falls in it: no union of
/// bitmaps per window), kept in a slot per user code; approximate from the daily sketches
/// merged over the window.
fn figures(days: &BTreeMap<i32, Day>, s: usize) -> Result<BTreeMap<i32, Figures>> {
    let (Some(&first), Some(&end)) = (days.keys().next(), days.keys().next_back()) else {
        return Ok(BTreeMap::new());
    };
    let span = usize::try_from(end - first + 1).map_err(internal)?;
    if span >= usize::from(u16::MAX) {
        return Err(Error::Internal(format!("{span} days of activity at once")));
    }
    // Each code's last active day so far (its offset from `first`, plus one; 0: not yet seen).
    let codes = days
        .values()
        .filter_map(|d| d.users[s].max())
        .max()
        .map_or(0, |m| m as usize + 1);
    let mut last = vec![0u16; codes];
    // Users by their last active day, a slot per day from the first.
    let mut by_last = vec![0i64; span];
    let at = |day: i32| (day - first) as usize;
    let window = |by_last: &[i64], day: i32, days: i32| -> i64 {
        by_last[at((day - days + 1).max(first))..=at(day)]
            .iter()
            .sum()
    };
    let approx = approx_windows(days, s)?;
    let mut out = BTreeMap::new();
    for (&day, d) in days {
        let mut new_users = 0;
        let today = at(day) as u16 + 1;
        for code in &d.users[s] {
            let slot = &mut last[code as usize];
            match *slot {
                0 => new_users += 1,
                prev => by_last[usize::from(prev - 1)] -= 1,
            }
            *slot = today;
        }
        by_last[at(day)] += d.users[s].len() as i64;
        let (wau_approx, mau_approx) = approx[&day];
        out.insert(
            day,
            Figures {
                wau: window(&by_last, day, 7),
                mau: window(&by_last, day, 30),
                new_users,
                wau_approx,
                mau_approx,
            },
        );
    }
    Ok(out)
}

/// `last`, each key's last day (sorted by key), after day `day` whose keys are `today` (sorted,
/// distinct); `seen` is told each of today's keys' previous last day (`None`: a new key).
fn advance_last<K: Ord + Copy>(
    last: &[(K, i32)],
    today: &[K],
    day: i32,
    mut seen: impl FnMut(Option<i32>),
) -> Vec<(K, i32)> {
    let mut merged = Vec::with_capacity(last.len() + today.len());
    let (mut i, mut j) = (0, 0);
    while i < last.len() && j < today.len() {
        match last[i].0.cmp(&today[j]) {
            std::cmp::Ordering::Less => {
                merged.push(last[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                seen(None);
                merged.push((today[j], day));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                seen(Some(last[i].1));
                merged.push((today[j], day));
                i += 1;
                j += 1;
            }
        }
    }
    merged.extend_from_slice(&last[i..]);
    for &k in &today[j..] {
        seen(None);
        merged.push((k, day));
    }
    merged
}

/// Every day's approximate WAU and MAU of segment `s`: the estimate of the merge of the
/// window's daily sketches, computed the cheap way for each window. While the codes of every
/// day in a window are known, the merge is the sketch of the union of their codes: each
/// code's last day is kept (one sorted list) and a window is the codes whose last day falls
/// in it, one pass instead of a chain of merges. A window holding a stored dense day (whose
/// codes are gone) merges dense: the days' dense copies in a two-stack window.
fn approx_windows(days: &BTreeMap<i32, Day>, s: usize) -> Result<BTreeMap<i32, (f64, f64)>> {
    // Days whose sketch holds registers: stored ones (codes gone), and fresh ones whose own
    // codes are past the sparse threshold, so every window holding them is too and merging
    // registers (a few thousand words a day) beats a pass over every code of the window.
    let dense_days: BTreeSet<i32> = days
        .iter()
        .filter(|(_, d)| d.codes[s].as_deref().is_none_or(codes_are_dense))
        .map(|(&day, _)| day)
        .collect();
    let (mut week, mut month) = (Window::default(), Window::default());
    let mut last: Vec<(u32, i32)> = Vec::new();
    let mut out = BTreeMap::new();
    // Every window holds a dense day when every day is: no list of codes is needed then.
    let all_dense = dense_days.len() == days.len();
    for (&day, d) in days {
        if !all_dense {
            last = advance_last(
                &last,
                d.codes[s].as_deref().unwrap_or_default(),
                day,
                |_| {},
            );
        }
        if !dense_days.is_empty() {
            let dense = d.sketches[s].to_dense().map_err(internal)?;
            week.push(day, &dense)?;
            month.push(day, &dense)?;
        }
        let estimate = |window: &mut Window, from: i32| -> Result<f64> {
            if dense_days.range(from..=day).next().is_some() {
                return window.estimate_from(from);
            }
            Ok(estimate_of_codes(
                last.iter().filter(|e| e.1 >= from).map(|e| e.0),
            ))
        };
        let wau = estimate(&mut week, day - 6)?;
        let mau = estimate(&mut month, day - 29)?;
        out.insert(day, (wau, mau));
    }
    Ok(out)
}

/// A day's sketches and bitmaps, encoded: per segment (in order) its DAU estimate, and its
/// serialized sketch and bitmap as ranges of one buffer each (the day's binary columns as
/// they are written, so no bytes are copied into a builder).
struct Encoded {
    dau_approx: Vec<f64>,
    hll: (Vec<i32>, Vec<u8>),
    bitmap: (Vec<i32>, Vec<u8>),
}

impl Encoded {
    fn of(today: &Day) -> Result<Self> {
        let n = SEGMENTS.len();
        let bytes: usize = today.users.iter().map(|b| b.serialized_size() + 12).sum();
        let mut e = Encoded {
            dau_approx: Vec::with_capacity(n),
            hll: (vec![0], Vec::new()),
            bitmap: (vec![0], Vec::with_capacity(bytes)),
        };
        for (s, &same) in SAME_AS.iter().enumerate() {
            if same == s {
                let mut h = today.sketches[s].clone();
                e.dau_approx.push(h.estimate());
                e.hll.1.extend(h.to_bytes());
                append_codes_bytes(&today.users[s], &mut e.bitmap.1);
            } else {
                // A platform group that is one platform: that segment's cells again.
                e.dau_approx.push(e.dau_approx[same]);
                for (offsets, bytes) in [&mut e.hll, &mut e.bitmap] {
                    bytes.extend_from_within(offsets[same] as usize..offsets[same + 1] as usize);
                }
            }
            for (offsets, bytes) in [&mut e.hll, &mut e.bitmap] {
                offsets.push(i32::try_from(bytes.len()).map_err(|_| {
                    Error::Internal("a day's bitmaps or sketches exceed 2 GiB".into())
                })?);
            }
        }
        Ok(e)
    }
}

/// The rows of the days of `write`, a batch per day.
fn rows(days: &BTreeMap<i32, Day>, write: &BTreeSet<i32>) -> Result<Vec<RecordBatch>> {
    enum Work {
        Figures(usize),
        Encode(i32),
    }
    enum Done {
        Figures(BTreeMap<i32, Figures>),
        Encoded(i32, Encoded),
    }
    // The figures of each distinct segment and the encoding of each day, on every core.
    let work: Vec<Work> = (0..SEGMENTS.len())
        .filter(|&s| SAME_AS[s] == s)
        .map(Work::Figures)
        .chain(
            days.keys()
                .filter(|d| write.contains(d))
                .map(|&d| Work::Encode(d)),
        )
        .collect();
    let mut computed = Vec::new();
    let mut encoded = Vec::new();
    for done in par_map(work, |w| match w {
        Work::Figures(s) => figures(days, s).map(Done::Figures),
        Work::Encode(day) => Encoded::of(&days[&day]).map(|e| Done::Encoded(day, e)),
    }) {
        match done? {
            Done::Figures(f) => computed.push(f),
            Done::Encoded(day, e) => encoded.push((day, e)),
        }
    }
    let per_segment: Vec<&BTreeMap<i32, Figures>> = SAME_AS.iter().map(|&s| &computed[s]).collect();
    encoded
        .into_iter()
        .map(|(day, e)| {
            let today = &days[&day];
            let mut b = Builders::default();
            for (s, seg) in SEGMENTS.iter().enumerate() {
                let f = per_segment[s][&day];
                let dau = today.users[s].len() as i64;
                b.day.append_value(day);
                b.breakdown.append_value(seg.0);
                b.segment.append_value(seg.1);
                b.dau.append_value(dau);
                b.wau.append_value(f.wau);
                b.mau.append_value(f.mau);
                b.dau_mau
                    .append_option((f.mau > 0).then(|| dau as f64 / f.mau as f64));
                b.new_users.append_value(f.new_users);
                b.dau_approx.append_value(e.dau_approx[s]);
                b.wau_approx.append_value(f.wau_approx);
                b.mau_approx.append_value(f.mau_approx);
                b.estimator.append_value(HLL_ESTIMATOR);
                b.precision.append_value(HLL_PRECISION as i32);
                b.rse.append_value(hll_relative_error());
            }
            b.finish(e.bitmap, e.hll)
        })
        .collect()
}

#[derive(Default)]
struct Builders {
    day: Date32Builder,
    breakdown: StringBuilder,
    segment: StringBuilder,
    dau: Int64Builder,
    wau: Int64Builder,
    mau: Int64Builder,
    dau_mau: Float64Builder,
    new_users: Int64Builder,
    dau_approx: Float64Builder,
    wau_approx: Float64Builder,
    mau_approx: Float64Builder,
    estimator: StringBuilder,
    precision: Int32Builder,
    rse: Float64Builder,
}

/// A binary array of the values `bytes[offsets[i]..offsets[i + 1]]`.
fn binary((offsets, bytes): (Vec<i32>, Vec<u8>)) -> Result<ArrayRef> {
    Ok(Arc::new(BinaryArray::try_new(
        OffsetBuffer::new(offsets.into()),
        bytes.into(),
        None,
    )?))
}

impl Builders {
    fn finish(
        mut self,
        bitmap: (Vec<i32>, Vec<u8>),
        hll: (Vec<i32>, Vec<u8>),
    ) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.day.finish()),
            Arc::new(self.breakdown.finish()),
            Arc::new(self.segment.finish()),
            Arc::new(self.dau.finish()),
            Arc::new(self.wau.finish()),
            Arc::new(self.mau.finish()),
            Arc::new(self.dau_mau.finish()),
            Arc::new(self.new_users.finish()),
            Arc::new(self.dau_approx.finish()),
            Arc::new(self.wau_approx.finish()),
            Arc::new(self.mau_approx.finish()),
            Arc::new(self.estimator.finish()),
            Arc::new(self.precision.finish()),
            Arc::new(self.rse.finish()),
            binary(bitmap)?,
            binary(hll)?,
        ];
        Ok(RecordBatch::try_new(table_schema(), cols)?)
    }
}

/// Distinct users of a segment over the report days `from..=to` (Date32), exact (an OR of the
/// stored daily bitmaps) and approximate (a merge of the stored daily sketches), with no event
/// rescanned. `None` if the activity table does not exist yet.
pub async fn distinct_users(
    lake: &lake::tables::Lake,
    from: i32,
    to: i32,
    breakdown: &str,
    segment: &str,
) -> Result<Option<RangeUsers>> {
    use deltalake::datafusion::prelude::{col, lit};
    use deltalake::datafusion::scalar::ScalarValue;
    let Some(table) = lake.open(&crate::publish::table_name(TABLE)).await? else {
        return Ok(None);
    };
    if !coded_with(lake, crate::codes::current_app(lake).await?).await? {
        return Err(Error::Usage(
            "metrics/activity predates the lake's user dictionary (metrics/user_codes): \
             run `spacepulse jobs run activity` first"
                .into(),
        ));
    }
    let session = query::session::context();
    query::session::register(&session, TABLE, &table).await?;
    let date = |d: i32| lit(ScalarValue::Date32(Some(d)));
    let mut stream = session
        .table(TABLE)
        .await?
        .filter(
            col("day")
                .gt_eq(date(from))
                .and(col("day").lt_eq(date(to)))
                .and(col("breakdown").eq(lit(breakdown.to_string())))
                .and(col("segment").eq(lit(segment.to_string()))),
        )?
        .select_columns(&["users_bitmap", "users_hll"])?
        .execute_stream()
        .await?;
    let mut blobs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while let Some(batch) = stream.try_next().await? {
        let b = arrow::compute::cast(batch.column(0), &DataType::Binary)?;
        let h = arrow::compute::cast(batch.column(1), &DataType::Binary)?;
        let b = arrow::array::AsArray::as_binary::<i32>(b.as_ref());
        let h = arrow::array::AsArray::as_binary::<i32>(h.as_ref());
        for i in 0..batch.num_rows() {
            blobs.push((b.value(i).to_vec(), h.value(i).to_vec()));
        }
    }
    let days = blobs.len();
    // Each core ORs half the days' bitmaps of codes and merges their sketches; then the halves.
    let threads = crate::scan::cores();
    let chunk = days.div_ceil(threads).max(1);
    let mut chunks: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::new();
    let mut it = blobs.into_iter();
    loop {
        let c: Vec<_> = it.by_ref().take(chunk).collect();
        if c.is_empty() {
            break;
        }
        chunks.push(c);
    }
    let halves = par_map(chunks, |c| -> Result<(RoaringBitmap, Hll)> {
        let mut users = RoaringBitmap::new();
        let mut hll = Hll::new();
        for (b, h) in c {
            users |= codes_from_bytes(&b).map_err(internal)?;
            hll.merge(&Hll::from_bytes(&h).map_err(internal)?)
                .map_err(internal)?;
        }
        Ok((users, hll))
    });
    let mut users = RoaringBitmap::new();
    let mut approx = Hll::new();
    for half in halves {
        let (u, h) = half?;
        users |= u;
        approx.merge(&h).map_err(internal)?;
    }
    let exact = users.len();
    Ok(Some(RangeUsers {
        days,
        exact,
        approx: approx.estimate(),
        relative_error: hll_relative_error(),
        estimator: HLL_ESTIMATOR,
    }))
}

/// Distinct users over a range of days.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RangeUsers {
    /// Days with activity in the range.
    pub days: usize,
    pub exact: u64,
    pub approx: f64,
    pub relative_error: f64,
    pub estimator: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use query::sketch::codes_of;

    /// A container of exactly 4096 codes survives the round trip through the stored bytes
    /// (roaring 0.11 builds it from bits as a bitmap, which its readers take for an array).
    #[test]
    fn a_container_of_4096_codes_round_trips() {
        for ones in [4095u32, 4096, 4097] {
            let mut bits = vec![0u8; 3 * 8192];
            // The second container: every 16th code, then the rest as needed.
            let codes: Vec<u32> = (0..ones).map(|i| 65_536 + i * 16).collect();
            for c in &codes {
                bits[(*c / 8) as usize] |= 1 << (c % 8);
            }
            bits[0] = 1;
            let b = bitmap_of_bits(&bits);
            assert_eq!(b.len(), u64::from(ones) + 1);
            let mut bytes = Vec::new();
            append_codes_bytes(&b, &mut bytes);
            assert_eq!(codes_from_bytes(&bytes).unwrap(), b, "{ones} codes");
        }
    }

    #[test]
    fn window_estimates_equal_merged_sketches() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut days = BTreeMap::new();
        // Days with gaps between them, users recurring across days; sparse days, then a
        // dense one (its windows merge dense), then sparse days again.
        for day in (100..170).filter(|d| d % 7 != 3) {
            let n = if day == 120 {
                30_000
            } else {
                400 + (day % 5) * 300
            };
            let mut users: Vec<u64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % 40_000
                })
                .collect();
            users.sort_unstable();
            users.dedup();
            let codes = codes_of(&users);
            days.insert(
                day,
                Day {
                    sketches: vec![Hll::of_codes(&codes)],
                    users: vec![RoaringBitmap::new()],
                    codes: vec![Some(codes)],
                },
            );
        }
        assert!(days[&120].sketches[0].clone().sparse_codes().is_none());
        assert!(days[&121].sketches[0].clone().sparse_codes().is_some());
        // The codes tell a dense sketch as the crate does.
        for d in days.values() {
            assert_eq!(
                codes_are_dense(d.codes[0].as_deref().unwrap()),
                d.sketches[0].clone().sparse_codes().is_none()
            );
        }
        let fresh = approx_windows(&days, 0).unwrap();
        // The dense day as read back from the table: its codes are gone.
        days.get_mut(&120).unwrap().codes[0] = None;
        let stored = approx_windows(&days, 0).unwrap();
        let (mut week, mut month) = (Window::default(), Window::default());
        for (&day, d) in &days {
            week.push(day, &d.sketches[0]).unwrap();
            month.push(day, &d.sketches[0]).unwrap();
            let merged = (
                week.estimate_from(day - 6).unwrap(),
                month.estimate_from(day - 29).unwrap(),
            );
            assert_eq!(fresh[&day], merged, "day {day}");
            assert_eq!(stored[&day], merged, "day {day}, stored");
        }
    }
}
