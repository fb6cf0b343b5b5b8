//! What the daily jobs keep hour by hour under `spacepulse run`, so that a commit into the
//! current hour reads only its own files: the bookkeeping they share. A job keeps, for the
//! newest changed report days, parts (per UTC hour, or its closed hours together) built from
//! the files it read; each run it learns which live files no part has read, reads only
//! those (the other changed days whole), and merges the parts into each day.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use deltalake::Path;

use crate::changes::Hour;
use crate::scan::EventFile;
use crate::{Ctx, Result};

/// What a scan gathers rows for: a report day, or one UTC hour of it.
pub type Slot = (i32, Option<Hour>);

/// Which slot the rows of a report day in a file go to, if any.
pub type SlotOf = Arc<dyn Fn(i32, &EventFile) -> Option<Slot> + Send + Sync>;

/// The report days kept hour by hour: the newest changed day and the one before it (late
/// events of yesterday keep coming after midnight).
pub const HOURLY_DAYS: i32 = 2;

/// Hours before the newest one read by more than this are closed.
pub const OPEN_HOURS: i64 = 1;

/// A job's memory between runs: taken out for a run and put back only at its end, so a run
/// that failed or was stopped part way leaves nothing half built.
pub struct Kept<T>(Mutex<Option<T>>);

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<T> std::fmt::Debug for Kept<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept").finish_non_exhaustive()
    }
}

impl<T> Kept<T> {
    pub fn take(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    pub fn keep(&self, t: T) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(t);
    }

    /// What `f` says of the kept value (`None` with nothing kept).
    pub fn peek<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(f)
    }
}

/// The events table's id: a table deleted and created again has another, and nothing kept of
/// the old one applies.
pub fn table_id(ctx: &Ctx<'_>) -> Result<String> {
    Ok(ctx.events.snapshot()?.metadata().id().to_string())
}

/// This run's live files of the days kept hour by hour.
pub struct Live<'a> {
    /// The changed days gathered hour by hour (the newest `HOURLY_DAYS`).
    pub hourly: BTreeSet<i32>,
    /// Parts of days before this one are dropped.
    pub oldest: i32,
    pub hours: BTreeMap<(i32, Hour), HashSet<&'a Path>>,
    pub days: BTreeMap<i32, HashSet<&'a Path>>,
}

impl<'a> Live<'a> {
    /// The live `files` of the changed `days`.
    pub fn of(days: &BTreeSet<i32>, files: &'a [EventFile]) -> Self {
        let newest = days.last().copied().unwrap_or(i32::MIN);
        let first_kept = newest.saturating_sub(HOURLY_DAYS - 1);
        let hourly: BTreeSet<i32> = days.range(first_kept..).copied().collect();
        let mut hours: BTreeMap<(i32, Hour), HashSet<&Path>> = BTreeMap::new();
        let mut by_day: BTreeMap<i32, HashSet<&Path>> = BTreeMap::new();
        for f in files {
            for d in f.days.iter().filter(|d| hourly.contains(d)) {
                hours.entry((*d, f.hour)).or_default().insert(&f.path);
                by_day.entry(*d).or_default().insert(&f.path);
            }
        }
        Self {
            oldest: first_kept,
            hourly,
            hours,
            days: by_day,
        }
    }

    /// Whether a part of `day` whose files are `read` can be kept: its day is not too old,
    /// and every file it read is live in `within` (its hour, or its day) if its day changed.
    pub fn keeps(&self, day: i32, read: &HashSet<Path>, within: Option<&HashSet<&Path>>) -> bool {
        if day < self.oldest {
            return false;
        }
        if !self.hourly.contains(&day) {
            return true;
        }
        within.is_some_and(|live| read.iter().all(|p| live.contains(p)))
    }

    /// Whether a part of one hour that read `read` can be kept (see `keeps`); a closed one
    /// (`open` false), which can take no more rows, only while no other file is live in its
    /// hour.
    pub fn keeps_hour(&self, key: &(i32, Hour), read: &HashSet<Path>, open: bool) -> bool {
        let within = self.hours.get(key);
        self.keeps(key.0, read, within)
            && (open
                || !self.hourly.contains(&key.0)
                || within.is_some_and(|f| f.len() == read.len()))
    }

    /// What to read: each live file of an hourly day for which `read(day, hour, path)` is
    /// false.
    pub fn reading(&self, read: impl Fn(i32, Hour, &Path) -> bool) -> Reading {
        let mut unread = HashSet::new();
        let mut new_files: BTreeMap<(i32, Hour), Vec<Path>> = BTreeMap::new();
        for ((day, hour), files) in &self.hours {
            for p in files {
                if !read(*day, *hour, p) {
                    unread.insert((*day, (*p).clone()));
                    new_files
                        .entry((*day, *hour))
                        .or_default()
                        .push((*p).clone());
                }
            }
        }
        Reading {
            days: Arc::new(self.hourly.clone()),
            unread: Arc::new(unread),
            new_files,
        }
    }
}

/// This run's days gathered hour by hour, and their live files not read yet (by day, and by
/// day and hour).
#[derive(Default)]
pub struct Reading {
    pub days: Arc<BTreeSet<i32>>,
    pub unread: Arc<HashSet<(i32, Path)>>,
    pub new_files: BTreeMap<(i32, Hour), Vec<Path>>,
}

impl Reading {
    /// Where rows go: the unread files' rows of a day gathered hour by hour to their hour,
    /// the rows of the other changed `days` to their day.
    pub fn slot_of(&self, days: &BTreeSet<i32>) -> SlotOf {
        let (hourly, unread, days) = (self.days.clone(), self.unread.clone(), days.clone());
        Arc::new(move |day, file: &EventFile| {
            if hourly.contains(&day) {
                unread
                    .contains(&(day, file.path.clone()))
                    .then_some((day, Some(file.hour)))
            } else {
                days.contains(&day).then_some((day, None))
            }
        })
    }

    /// The files to read: those of the changed `days` gathered whole, and the unread ones of
    /// the days gathered hour by hour.
    pub fn to_read(&self, files: Vec<EventFile>, days: &BTreeSet<i32>) -> Vec<EventFile> {
        files
            .into_iter()
            .filter(|f| {
                f.days.iter().any(|d| {
                    if self.days.contains(d) {
                        self.unread.contains(&(*d, f.path.clone()))
                    } else {
                        days.contains(d)
                    }
                })
            })
            .collect()
    }
}

/// The slots of one file's rows, in row order: the file's report day when its hour lies in
/// one, else each row's own day from its `ts` (asking `slot_of` once per run of rows of a day).
pub struct RowSlots<'a> {
    file: &'a EventFile,
    slot_of: &'a SlotOf,
    whole_day: Option<i32>,
    current: i32,
    slot: Option<Slot>,
}

impl<'a> RowSlots<'a> {
    pub fn new(file: &'a EventFile, slot_of: &'a SlotOf) -> Self {
        let whole_day = match file.days.as_slice() {
            [d] => Some(*d),
            _ => None,
        };
        Self {
            file,
            slot_of,
            whole_day,
            current: i32::MIN,
            slot: None,
        }
    }

    /// The slot of a row at `ts` (µs).
    pub fn of(&mut self, clock: &mut query::tz::LocalClock, ts: i64) -> Option<Slot> {
        let day = self.whole_day.unwrap_or_else(|| clock.day(ts));
        if day != self.current {
            self.current = day;
            self.slot = (self.slot_of)(day, self.file);
        }
        self.slot
    }
}

/// Where rows go without a memory: each changed day whole.
pub fn whole_days(days: &BTreeSet<i32>) -> SlotOf {
    let days = days.clone();
    Arc::new(move |day, _: &EventFile| days.contains(&day).then_some((day, None)))
}

/// An hour's place in time, for comparing hours.
fn ordinal(h: &Hour) -> i64 {
    use chrono::Datelike;
    i64::from(h.0.num_days_from_ce()) * 24 + i64::from(h.1)
}

/// The newest of `hours`, but not after the current UTC hour: an event dated ahead of the
/// clock (a client sending local time as UTC) must not close the hour being written.
pub fn newest<'a>(hours: impl Iterator<Item = &'a Hour>) -> Option<i64> {
    use chrono::Timelike;
    let now = chrono::Utc::now();
    let current = ordinal(&(now.date_naive(), now.hour() as i32));
    hours.map(ordinal).max().map(|n| n.min(current))
}

/// Whether `hour` is closed: older than `newest` by more than `OPEN_HOURS`.
pub fn closed(hour: &Hour, newest: i64) -> bool {
    ordinal(hour) < newest - OPEN_HOURS
}
