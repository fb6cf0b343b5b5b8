//! Distinct-user sketches that merge across days: HyperLogLog++ (approximate) and roaring
//! bitmaps (exact), both stored as binary columns of the metric tables.
//!
//! The HLL++ hash is xxHash64 with seed 0 over the value's little-endian bytes: the same on
//! every process, machine and version, so sketches stored today merge with tomorrow's.

use std::hash::{BuildHasher, Hasher};

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};

/// HLL++ precision: 2^14 registers.
pub const HLL_PRECISION: u8 = 14;
/// Relative standard error of an HLL estimate at [`HLL_PRECISION`]: 1.04 / sqrt(2^p).
pub fn hll_relative_error() -> f64 {
    1.04 / ((1u64 << HLL_PRECISION) as f64).sqrt()
}
/// The estimator's name, stated beside every approximate number.
pub const HLL_ESTIMATOR: &str = "HyperLogLog++ p=14 (xxHash64 seed 0)";

const MAGIC: &[u8; 4] = b"SPH1";

/// A `BuildHasher` whose hash is xxHash64(seed 0) of the little-endian bytes written.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StableHash;

/// Hashes each write with xxHash64, chaining writes through the seed: one `u64` written
/// hashes to xxHash64(seed 0) of its little-endian bytes.
#[derive(Debug, Default)]
pub struct StableHasher {
    state: u64,
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        self.state
    }
    fn write(&mut self, bytes: &[u8]) {
        self.state = xxhash_rust::xxh64::xxh64(bytes, self.state);
    }
    // Integers are hashed little-endian whatever the machine's byte order.
    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }
    fn write_i64(&mut self, n: i64) {
        self.write(&n.to_le_bytes());
    }
    fn write_u32(&mut self, n: u32) {
        self.write(&n.to_le_bytes());
    }
    fn write_usize(&mut self, n: usize) {
        self.write(&(n as u64).to_le_bytes());
    }
}

impl BuildHasher for StableHash {
    type Hasher = StableHasher;
    fn build_hasher(&self) -> StableHasher {
        StableHasher::default()
    }
}

/// An HLL++ sketch of user ids.
#[derive(Clone, Debug)]
pub struct Hll(HyperLogLogPlus<u64, StableHash>);

impl Default for Hll {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SketchError {
    #[error("not a spacepulse HLL sketch ({0})")]
    BadHll(String),
    #[error("HLL sketches of different precision do not merge")]
    Precision,
    #[error("not a roaring bitmap: {0}")]
    BadBitmap(String),
}

impl Hll {
    pub fn new() -> Self {
        Self(HyperLogLogPlus::new(HLL_PRECISION, StableHash).expect("valid precision"))
    }

    #[inline]
    pub fn insert(&mut self, user: u64) {
        self.0.insert(&user);
    }

    pub fn merge(&mut self, other: &Hll) -> Result<(), SketchError> {
        self.0.merge(&other.0).map_err(|_| SketchError::Precision)
    }

    /// The estimated number of distinct values.
    pub fn estimate(&mut self) -> f64 {
        self.0.count()
    }

    /// The sketch's bytes: a magic, then the sketch. Deterministic for equal input: the
    /// temporary set is folded into the sparse list (which `count` does) before writing.
    pub fn to_bytes(&mut self) -> Vec<u8> {
        self.0.count();
        let mut out = MAGIC.to_vec();
        out.extend(postcard::to_allocvec(&self.0).expect("serialize HLL"));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchError> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| SketchError::BadHll("wrong magic".into()))?;
        let h: HyperLogLogPlus<u64, StableHash> =
            postcard::from_bytes(body).map_err(|e| SketchError::BadHll(e.to_string()))?;
        Ok(Self(h))
    }
}

/// A roaring treemap's portable serialization.
pub fn bitmap_to_bytes(b: &RoaringTreemap) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.serialized_size());
    b.serialize_into(&mut out).expect("write to a Vec");
    out
}

/// The portable serialization of the roaring treemap of `ids` (sorted, distinct): the bytes
/// of `bitmap_to_bytes(&RoaringTreemap::from_sorted_iter(ids))` without building the treemap,
/// whose map costs an allocation per id when ids spread over 64 bits (one id per bucket).
pub fn sorted_to_bitmap_bytes(ids: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + ids.len() * 22);
    out.extend(0u64.to_le_bytes());
    let mut buckets = 0u64;
    let mut i = 0;
    while i < ids.len() {
        let high = (ids[i] >> 32) as u32;
        let mut j = i + 1;
        while j < ids.len() && (ids[j] >> 32) as u32 == high {
            j += 1;
        }
        out.extend(high.to_le_bytes());
        if j == i + 1 {
            // One id: a bitmap of one array container, written as roaring writes it (cookie
            // without run containers, one container, its key and cardinality - 1, its
            // offset after the 16-byte header, its one value).
            let low = ids[i] as u32;
            out.extend(12346u32.to_le_bytes());
            out.extend(1u32.to_le_bytes());
            out.extend(((low >> 16) as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(16u32.to_le_bytes());
            out.extend((low as u16).to_le_bytes());
        } else {
            let low = roaring::RoaringBitmap::from_sorted_iter(ids[i..j].iter().map(|&u| u as u32))
                .expect("sorted input");
            low.serialize_into(&mut out).expect("write to a Vec");
        }
        buckets += 1;
        i = j;
    }
    out[..8].copy_from_slice(&buckets.to_le_bytes());
    out
}

pub fn bitmap_from_bytes(bytes: &[u8]) -> Result<RoaringTreemap, SketchError> {
    RoaringTreemap::deserialize_from(bytes).map_err(|e| SketchError::BadBitmap(e.to_string()))
}

/// Appends the ids of a serialized roaring treemap to `out`, in increasing order, without
/// building the treemap: a bucket holding one id (the common case when ids spread over 64
/// bits) is read straight from its 18 bytes, any other bucket through `RoaringBitmap`.
pub fn bitmap_ids_into(bytes: &[u8], out: &mut Vec<u64>) -> Result<(), SketchError> {
    fn take<const N: usize>(r: &mut &[u8]) -> Result<[u8; N], SketchError> {
        let (head, rest) = r
            .split_first_chunk::<N>()
            .ok_or_else(|| SketchError::BadBitmap("truncated treemap".into()))?;
        *r = rest;
        Ok(*head)
    }
    let mut r = bytes;
    let buckets = u64::from_le_bytes(take::<8>(&mut r)?);
    for _ in 0..buckets {
        let high = u64::from(u32::from_le_bytes(take::<4>(&mut r)?)) << 32;
        // Cookie without run containers, one container, cardinality - 1 = 0, offset 16.
        match r.first_chunk::<18>() {
            Some(b)
                if b[0..8] == [0x3a, 0x30, 0, 0, 1, 0, 0, 0]
                    && b[10..16] == [0, 0, 16, 0, 0, 0] =>
            {
                let key = u64::from(u16::from_le_bytes([b[8], b[9]]));
                let low = u64::from(u16::from_le_bytes([b[16], b[17]]));
                out.push(high | key << 16 | low);
                r = &r[18..];
            }
            _ => {
                let low = roaring::RoaringBitmap::deserialize_from(&mut r)
                    .map_err(|e| SketchError::BadBitmap(e.to_string()))?;
                out.extend(low.iter().map(|l| high | u64::from(l)));
            }
        }
    }
    Ok(())
}

/// The ids of a serialized roaring treemap, in increasing order (see [`bitmap_ids_into`]).
pub fn bitmap_ids(bytes: &[u8]) -> Result<Vec<u64>, SketchError> {
    let mut out = Vec::new();
    bitmap_ids_into(bytes, &mut out)?;
    Ok(out)
}

/// A bitmap of user ids from an unsorted list (sorted and deduplicated here).
pub fn bitmap_of(mut users: Vec<u64>) -> RoaringTreemap {
    users.sort_unstable();
    users.dedup();
    RoaringTreemap::from_sorted_iter(users).expect("sorted input")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_ids_serialize_as_the_treemap_does() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut spread: Vec<u64> = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect();
        // Dense runs in a few buckets, single ids, low and high keys of one bucket.
        spread.extend(0..70_000u64);
        spread.extend((5u64 << 32)..(5u64 << 32) + 3);
        spread.extend([7u64 << 32 | 0xffff_ffff, u64::MAX, 1 << 40 | 0x1_0000]);
        spread.sort_unstable();
        spread.dedup();
        for ids in [&spread[..], &spread[..1], &[][..], &spread[..10]] {
            let tree = RoaringTreemap::from_sorted_iter(ids.iter().copied()).unwrap();
            let bytes = bitmap_to_bytes(&tree);
            assert_eq!(sorted_to_bitmap_bytes(ids), bytes);
            // And read back without the treemap, single-id buckets and dense ones alike.
            assert_eq!(bitmap_ids(&bytes).unwrap(), ids);
        }
        let bytes = sorted_to_bitmap_bytes(&spread);
        assert!(bitmap_ids(&bytes[..bytes.len() - 1]).is_err(), "truncated");
    }

    #[test]
    fn hash_is_fixed() {
        let mut h = StableHash.build_hasher();
        h.write_u64(42);
        assert_eq!(
            h.finish(),
            xxhash_rust::xxh64::xxh64(&42u64.to_le_bytes(), 0)
        );
    }

    #[test]
    fn sketch_round_trips_and_merges() {
        let mut a = Hll::new();
        let mut b = Hll::new();
        for u in 0..50_000u64 {
            a.insert(u);
            b.insert(u + 25_000);
        }
        let bytes = a.to_bytes();
        assert_eq!(bytes, a.clone().to_bytes(), "deterministic bytes");
        let mut a2 = Hll::from_bytes(&bytes).unwrap();
        a2.merge(&Hll::from_bytes(&b.to_bytes()).unwrap()).unwrap();
        let est = a2.estimate();
        let rse = hll_relative_error();
        assert!((est - 75_000.0).abs() < 3.0 * rse * 75_000.0, "{est}");
        assert!(Hll::from_bytes(b"nope").is_err());
    }
}
