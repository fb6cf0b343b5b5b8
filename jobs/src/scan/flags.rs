//! The inner loop of a distinct count: user ids mapped to bit flags, alone
//! ([`U64Flags`]) or shared by the threads of one fold ([`SharedFlags`], filled through a
//! [`FlagsBuffer`] per thread).

use std::sync::Arc;

/// A map of `u64`s (user ids) to bit flags (say, the platforms a user was seen on), the
/// inner loop of a distinct count: open addressing with linear probing in a power-of-two
/// table at most three quarters full, slots indexed by Fibonacci hashing (the product's top
/// bits), no flags marking an empty slot (the id 0 is kept aside). An insert ORs its flags into
/// the id's. The ids need no protection from crafted collisions here.
#[derive(Clone, Default)]
pub struct U64Flags {
    slots: Vec<(u64, u8)>,
    len: usize,
    zero: u8,
    shift: u32,
}

impl U64Flags {
    /// A map that holds `n` ids without growing.
    pub fn with_capacity(n: usize) -> Self {
        let mut map = Self::default();
        map.reserve(n);
        map
    }

    /// Room for `additional` more ids without growing: one allocation where inserts would
    /// double the table step by step (each step a fresh zeroed table, page faults and, when
    /// the old one is unmapped, a TLB flush on every core).
    pub fn reserve(&mut self, additional: usize) {
        // An insert grows the table past three quarters full.
        let want = (self.len + additional + 1) * 4 / 3 + 1;
        if want > self.slots.len() {
            self.rehash(want.next_power_of_two().max(64));
        }
    }

    /// Adds `flags` (not 0) to those of `id`.
    #[inline]
    pub fn insert(&mut self, id: u64, flags: u8) {
        if id == 0 {
            self.zero |= flags;
            return;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize;
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == id {
                slot.1 |= flags;
                return;
            }
            if slot.1 == 0 {
                *slot = (id, flags);
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        self.rehash((self.slots.len() * 2).max(64));
    }

    fn rehash(&mut self, capacity: usize) {
        // Written, not allocated zeroed: calloc's pages map the shared zero page, and the
        // first insert into each then takes a copy-on-write fault with a TLB flush on every
        // core (a fifth of a scan's time, measured). Pages written first fault once, locally.
        let mut slots = Vec::with_capacity(capacity);
        slots.resize(capacity, (0, 0));
        let old = std::mem::replace(&mut self.slots, slots);
        self.shift = 64 - capacity.trailing_zeros();
        self.len = 0;
        for (id, flags) in old {
            if flags != 0 {
                self.insert(id, flags);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len + usize::from(self.zero != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each id with its flags.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        (self.zero != 0)
            .then_some((0, self.zero))
            .into_iter()
            .chain(self.slots.iter().copied().filter(|s| s.1 != 0))
    }

    /// Adds every id and flags of `other`.
    pub fn merge(&mut self, other: &U64Flags) {
        self.reserve(other.len());
        for (id, flags) in other.iter() {
            self.insert(id, flags);
        }
    }

    /// The ids with their flags, sorted by id.
    pub fn into_sorted(self) -> Vec<(u64, u8)> {
        let mut v: Vec<(u64, u8)> = self.iter().collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }
}

/// A [`U64Flags`] that the scan's workers fill together, one copy however many workers see
/// the same ids (a day's users are in most of its hours): shards picked by a second hash of the
/// id, each behind a lock, each worker's inserts buffered per shard ([`FlagsBuffer`]) and
/// taken in a lock at a time.
pub struct SharedFlags {
    shards: Vec<std::sync::Mutex<U64Flags>>,
}

const SHARDS: usize = 64;
const SHARD_BUFFER: usize = 256;

fn shard_of(id: u64) -> usize {
    // Not the multiplier of the shards' own slots: a shard's ids must spread over its table.
    (id.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 58) as usize
}

fn locked(m: &std::sync::Mutex<U64Flags>) -> std::sync::MutexGuard<'_, U64Flags> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SharedFlags {
    /// A set sized for `n` ids.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| std::sync::Mutex::new(U64Flags::with_capacity(n / SHARDS)))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| locked(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids with their flags, sorted by id; each shard is freed once read.
    pub fn into_sorted(self) -> Vec<(u64, u8)> {
        let mut shards: Vec<U64Flags> = self
            .shards
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .collect();
        let mut v = Vec::with_capacity(shards.iter().map(U64Flags::len).sum());
        for shard in &mut shards {
            v.extend(std::mem::take(shard).iter());
        }
        v.sort_unstable_by_key(|e| e.0);
        v
    }
}

/// A worker's inserts into a [`SharedFlags`], buffered per shard; [`FlagsBuffer::flush`]
/// (or dropping it) hands the rest over.
pub struct FlagsBuffer {
    shared: Arc<SharedFlags>,
    pending: Vec<Vec<(u64, u8)>>,
}

impl FlagsBuffer {
    pub fn new(shared: Arc<SharedFlags>) -> Self {
        Self {
            shared,
            pending: vec![Vec::new(); SHARDS],
        }
    }

    /// Adds `flags` (not 0) to those of `id`.
    #[inline]
    pub fn insert(&mut self, id: u64, flags: u8) {
        let s = shard_of(id);
        let p = &mut self.pending[s];
        p.push((id, flags));
        if p.len() >= SHARD_BUFFER {
            self.flush_shard(s);
        }
    }

    fn flush_shard(&mut self, s: usize) {
        let mut shard = locked(&self.shared.shards[s]);
        for (id, flags) in self.pending[s].drain(..) {
            shard.insert(id, flags);
        }
    }

    pub fn flush(&mut self) {
        for s in 0..SHARDS {
            if !self.pending[s].is_empty() {
                self.flush_shard(s);
            }
        }
    }
}

impl Drop for FlagsBuffer {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_map_holds_each_id_once_with_all_its_flags() {
        let mut map = super::U64Flags::default();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000u64 {
            // Spread ids, sequential ids, repeats and 0.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for id in [x, i, i / 3, x % 7, (i % 50) << 40] {
                let flags = 1u8 << (x % 5);
                map.insert(id, flags);
                *model.entry(id).or_insert(0u8) |= flags;
            }
        }
        assert_eq!(map.len(), model.len());
        let mut halves = (super::U64Flags::default(), super::U64Flags::default());
        for (n, (id, flags)) in map.iter().enumerate() {
            let half = if n % 2 == 0 {
                &mut halves.0
            } else {
                &mut halves.1
            };
            half.insert(id, flags);
        }
        halves.0.merge(&halves.1);
        // Sized ahead, too small and large enough: the same map.
        let mut sized = [
            super::U64Flags::with_capacity(100),
            super::U64Flags::with_capacity(map.len()),
        ];
        for m in &mut sized {
            for (id, flags) in map.iter() {
                m.insert(id, flags);
            }
        }
        let want: Vec<(u64, u8)> = model.into_iter().collect();
        // Two threads filling one shared set, each every id with its own flags.
        let shared = std::sync::Arc::new(super::SharedFlags::with_capacity(10));
        std::thread::scope(|scope| {
            for t in 0..2u8 {
                let mut buffer = super::FlagsBuffer::new(shared.clone());
                let map = &map;
                scope.spawn(move || {
                    for (id, flags) in map.iter() {
                        // The second thread only each id's lowest flag: the union is all.
                        buffer.insert(
                            id,
                            if t == 0 {
                                flags
                            } else {
                                flags & flags.wrapping_neg()
                            },
                        );
                    }
                });
            }
        });
        let shared = std::sync::Arc::try_unwrap(shared)
            .ok()
            .expect("the buffers flushed and dropped");
        assert_eq!(shared.len(), want.len());
        assert_eq!(shared.into_sorted(), want);
        for m in sized {
            assert_eq!(m.into_sorted(), want);
        }
        assert_eq!(map.into_sorted(), want);
        assert_eq!(halves.0.into_sorted(), want);
        assert!(super::U64Flags::default().is_empty());
    }
}
