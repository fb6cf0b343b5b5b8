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
        // The layout is checked before the crate sees it: its sizes and indexes come from
        // these bytes, and a crafted size makes it allocate or index without bound.
        let layout: Layout =
            postcard::from_bytes(body).map_err(|e| SketchError::BadHll(e.to_string()))?;
        layout.check()?;
        let h: HyperLogLogPlus<u64, StableHash> =
            postcard::from_bytes(body).map_err(|e| SketchError::BadHll(e.to_string()))?;
        Ok(Self(h))
    }
}

/// Whether `code` is a sparse code [`sparse_code`] can make: a 25-bit index, and with the flag
/// a count of zeros that 64-bit hashes can have.
fn valid_code(code: u32) -> bool {
    if code & 1 == 0 {
        code >> 1 < 1 << SPARSE_PRECISION
    } else {
        let zeros = (code >> 1) & 0x3f;
        (1..=64 - SPARSE_PRECISION + 1).contains(&zeros)
    }
}

impl Layout {
    /// Refuses a layout that sketches of this precision never have: other sizes, codes out
    /// of range, a sparse list that does not decode to its count, registers of another size.
    fn check(&self) -> Result<(), SketchError> {
        let bad = |m: &str| Err(SketchError::BadHll(m.to_string()));
        let (m, _, threshold) = counts();
        if self.precision != HLL_PRECISION || self.counts != counts() {
            return bad("precision or sizes are not those of precision 14");
        }
        if self.tmpset.len() > m || !self.tmpset.iter().all(|&c| valid_code(c)) {
            return bad("bad temporary codes");
        }
        if self.sparse.buf.len() > threshold + 8 {
            return bad("sparse list longer than a sparse sketch holds");
        }
        let (mut n, mut last, mut v, mut shift) = (0usize, 0u32, 0u32, 0u32);
        for &b in &self.sparse.buf {
            if shift > 28 {
                return bad("bad varint in the sparse list");
            }
            v |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if n > 0 && v == 0 {
                    return bad("sparse codes not increasing");
                }
                last = last
                    .checked_add(v)
                    .filter(|&c| valid_code(c))
                    .ok_or_else(|| SketchError::BadHll("sparse code out of range".into()))?;
                n += 1;
                (v, shift) = (0, 0);
            } else {
                shift += 7;
            }
        }
        if shift != 0 || n != self.sparse.count || last != self.sparse.last {
            return bad("the sparse list does not decode to its count");
        }
        if let Some(r) = &self.registers {
            if r.count != m || r.buf.len() != m.div_ceil(5) {
                return bad("registers of another size");
            }
            let zeros = r
                .buf
                .iter()
                .map(|w| (0..5).filter(|i| (w >> (6 * i)) & 0x3f == 0).count())
                .sum::<usize>()
                .saturating_sub(r.buf.len() * 5 - m);
            if r.zeros != zeros {
                return bad("a count of zero registers that the registers do not have");
            }
        }
        Ok(())
    }
}

/// The crate's serialized layout of a sketch (postcard writes a struct's fields in order,
/// without names), mirrored so that a sketch can be built from, and read as, its sparse list
/// of hash codes: the crate inserts one value at a time and folds its buffer of new codes
/// into the sparse list every ~130 inserts, a pass over the whole list each time.
#[derive(Serialize, Deserialize)]
struct Layout {
    builder: StableHash,
    precision: u8,
    counts: (usize, usize, usize),
    tmpset: Vec<u32>,
    sparse: SparseLayout,
    registers: Option<RegistersLayout>,
    phantom: (),
}

/// The sparse list: sorted distinct codes, difference- then varint-encoded.
#[derive(Serialize, Deserialize)]
struct SparseLayout {
    count: usize,
    last: u32,
    buf: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct RegistersLayout {
    buf: Vec<u32>,
    count: usize,
    zeros: usize,
}

/// HLL++'s sparse precision (the crate's, as in the paper).
const SPARSE_PRECISION: u32 = 25;

/// The HLL++ sparse code of a 64-bit hash at [`HLL_PRECISION`] (Heule et al., section 5.3.3,
/// as the crate encodes it): the hash's top 25 bits, and, when the bits after the first p of
/// them are all zero, the count of leading zeros after the 25.
#[inline]
pub fn sparse_code(hash: u64) -> u32 {
    let p = u32::from(HLL_PRECISION);
    let index = hash >> (64 - SPARSE_PRECISION);
    let dif = (hash << p) >> (64 - (SPARSE_PRECISION - p));
    if dif == 0 {
        let zeros =
            1 + ((hash << SPARSE_PRECISION) | (1 << (SPARSE_PRECISION - 1))).leading_zeros();
        ((index as u32) << 7) | (zeros << 1) | 1
    } else {
        (index << 1) as u32
    }
}

/// The sparse code of a user id under the stable hash.
#[inline]
pub fn user_code(user: u64) -> u32 {
    sparse_code(xxhash_rust::xxh64::xxh64(&user.to_le_bytes(), 0))
}

/// The sparse codes of `users`: sorted, distinct.
pub fn codes_of(users: &[u64]) -> Vec<u32> {
    let mut codes: Vec<u32> = users.iter().map(|&u| user_code(u)).collect();
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// The crate's sizes: registers, sparse registers, and the sparse list's largest size in
/// bytes (past it the sketch turns to registers).
fn counts() -> (usize, usize, usize) {
    static COUNTS: std::sync::OnceLock<(usize, usize, usize)> = std::sync::OnceLock::new();
    *COUNTS.get_or_init(|| Layout::empty().counts)
}

/// The bytes of `v` as a varint (the sparse list's encoding of a difference).
fn varint_len(v: u32) -> usize {
    (32 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// The register index and value (leading zeros plus one) that the crate decodes from a
/// sparse code at the sketch's precision.
fn decode(code: u32) -> (usize, u32) {
    let p = u32::from(HLL_PRECISION);
    if code & 1 == 1 {
        let zeros = ((code >> 1) & 0x3f) + (SPARSE_PRECISION - p);
        ((code >> (32 - p)) as usize, zeros)
    } else {
        let index = (code >> (SPARSE_PRECISION + 1 - p)) & ((1 << p) - 1);
        (
            index as usize,
            (code << (32 - SPARSE_PRECISION + p - 1)).leading_zeros() + 1,
        )
    }
}

/// Whether the sketch of the sparse list `codes` (sorted, distinct) holds registers: its list
/// is past the crate's sparse threshold. A superset of such a list is past it too (inserting a
/// code splits one difference into two, never fewer varint bytes).
pub fn codes_are_dense(codes: &[u32]) -> bool {
    let (_, _, threshold) = counts();
    let mut last = 0;
    let mut bytes = 0;
    for &c in codes {
        bytes += varint_len(c - last);
        last = c;
        if bytes > threshold {
            return true;
        }
    }
    false
}

/// The estimate of the sketch whose sparse list is `codes` (sorted, distinct): exactly
/// `Hll::of_codes(codes).estimate()`, without building the sketch. While the list is sparse,
/// the crate's estimate is linear counting over the sparse registers (a count of codes);
/// past the threshold, the estimate of the registers the codes set.
pub fn estimate_of_codes<I: Iterator<Item = u32> + Clone>(codes: I) -> f64 {
    let (m, sparse_m, threshold) = counts();
    let (mut n, mut bytes, mut last) = (0usize, 0usize, 0u32);
    for c in codes.clone() {
        n += 1;
        bytes += varint_len(c - last);
        last = c;
    }
    if bytes <= threshold {
        // The crate's linear counting, operation for operation.
        return sparse_m as f64 * (sparse_m as f64 / (sparse_m - n) as f64).ln();
    }
    let mut buf = vec![0u32; m.div_ceil(5)];
    let mut zeros = m;
    for c in codes {
        let (index, value) = decode(c);
        let (word, shift) = (index / 5, (index % 5) * 6);
        let current = (buf[word] >> shift) & 0x3f;
        if value > current {
            if current == 0 {
                zeros -= 1;
            }
            buf[word] = (buf[word] & !(0x3f << shift)) | (value << shift);
        }
    }
    Layout::dense(buf, zeros).estimate()
}

impl Layout {
    fn of(h: &HyperLogLogPlus<u64, StableHash>) -> Self {
        postcard::from_bytes(&postcard::to_allocvec(h).expect("serialize HLL"))
            .expect("the crate's layout")
    }

    /// The layout of an empty sketch.
    fn empty() -> Self {
        Self::of(&Hll::new().0)
    }

    /// The sketch in registers `buf` (six-bit registers, five to a 32-bit word) of which
    /// `zeros` are 0.
    fn dense(buf: Vec<u32>, zeros: usize) -> Hll {
        let mut layout = Self::empty();
        let count = layout.counts.0;
        layout.registers = Some(RegistersLayout { buf, count, zeros });
        layout.into_hll()
    }

    /// The sketch with this layout.
    fn into_hll(self) -> Hll {
        let bytes = postcard::to_allocvec(&self).expect("serialize HLL");
        Hll(postcard::from_bytes(&bytes).expect("the crate's layout"))
    }
}

impl Hll {
    /// The sketch of `users`, equal (byte for byte once serialized) to inserting them one by
    /// one, in one sort instead of the crate's repeated passes.
    pub fn of_users(users: &[u64]) -> Self {
        Self::of_codes(&codes_of(users))
    }

    /// The sketch whose sparse list is `codes` (sorted, distinct).
    pub fn of_codes(codes: &[u32]) -> Self {
        let mut layout = Layout::empty();
        let mut buf = Vec::with_capacity(codes.len() * 2 + 8);
        let mut last = 0u32;
        for &c in codes {
            let mut v = c - last;
            while v >= 0x80 {
                buf.push((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            }
            buf.push(v as u8);
            last = c;
        }
        layout.sparse = SparseLayout {
            count: codes.len(),
            last,
            buf,
        };
        // The crate folds the list on its first estimate or serialization (turning it into
        // registers if it is past the sparse threshold), as after its own inserts.
        layout.into_hll()
    }

    /// The sketch in registers (the crate's dense form), with the same registers the crate's
    /// merge into a dense sketch would set. Merges of dense sketches are a pass over the
    /// registers; merges of sparse ones hash every code into a set.
    pub fn to_dense(&self) -> Result<Self, SketchError> {
        let count = counts().0;
        let mut h = Layout::dense(vec![0; count.div_ceil(5)], count);
        h.merge(self)?;
        Ok(h)
    }

    /// The sketch's sparse list of codes (sorted, distinct), or `None` once it uses registers.
    pub fn sparse_codes(&mut self) -> Option<Vec<u32>> {
        self.0.count();
        let layout = Layout::of(&self.0);
        if layout.registers.is_some() {
            return None;
        }
        let mut out = Vec::with_capacity(layout.sparse.count);
        let (mut last, mut v, mut shift) = (0u32, 0u32, 0);
        for b in layout.sparse.buf {
            v |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                last += v;
                out.push(last);
                (v, shift) = (0, 0);
            } else {
                shift += 7;
            }
        }
        Some(out)
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
    append_bitmap_bytes(ids, &mut out);
    out
}

/// [`sorted_to_bitmap_bytes`] appended to `out`.
pub fn append_bitmap_bytes(ids: &[u64], out: &mut Vec<u8>) {
    let start = out.len();
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
            low.serialize_into(&mut *out).expect("write to a Vec");
        }
        buckets += 1;
        i = j;
    }
    out[start..start + 8].copy_from_slice(&buckets.to_le_bytes());
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

/// Appends the portable treemap serialization of `codes`, 32-bit values (a treemap of one
/// bucket, or of none when empty): the form of a metric table's bitmap of user codes, read by
/// `bitmap_union` and `bitmap_count` like any other.
pub fn append_codes_bytes(codes: &roaring::RoaringBitmap, out: &mut Vec<u8>) {
    if codes.is_empty() {
        out.extend(0u64.to_le_bytes());
        return;
    }
    out.extend(1u64.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    codes.serialize_into(&mut *out).expect("write to a Vec");
}

/// The 32-bit values of a serialized treemap written by [`append_codes_bytes`]; a treemap
/// holding a value of 2^32 or more is an error.
pub fn codes_from_bytes(bytes: &[u8]) -> Result<roaring::RoaringBitmap, SketchError> {
    let bad = |m: &str| SketchError::BadBitmap(m.to_string());
    let (count, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| bad("truncated treemap"))?;
    match u64::from_le_bytes(*count) {
        0 => Ok(roaring::RoaringBitmap::new()),
        1 => {
            let (high, rest) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| bad("truncated treemap"))?;
            if *high != [0; 4] {
                return Err(bad("a bitmap of codes holds a value of 2^32 or more"));
            }
            roaring::RoaringBitmap::deserialize_from(rest).map_err(|e| bad(&e.to_string()))
        }
        _ => Err(bad("a bitmap of codes holds values of 2^32 or more")),
    }
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
    fn bitmaps_of_codes_are_treemaps() {
        let sparse: roaring::RoaringBitmap = [0u32, 7, 70_000, u32::MAX].into_iter().collect();
        let dense: roaring::RoaringBitmap = (0..200_000u32).filter(|c| c % 3 != 0).collect();
        for codes in [roaring::RoaringBitmap::new(), sparse, dense] {
            let mut bytes = Vec::new();
            append_codes_bytes(&codes, &mut bytes);
            let tree: RoaringTreemap = codes.iter().map(u64::from).collect();
            assert_eq!(bytes, bitmap_to_bytes(&tree), "what bitmap_union reads");
            assert_eq!(codes_from_bytes(&bytes).unwrap(), codes);
        }
        let wide = bitmap_to_bytes(&[1u64 << 32].into_iter().collect());
        assert!(codes_from_bytes(&wide).is_err());
        assert!(codes_from_bytes(&[1, 0, 0]).is_err(), "truncated");
    }

    #[test]
    fn a_sketch_built_in_bulk_is_the_sketch_built_by_inserts() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut ids: Vec<u64> = Vec::new();
        // Past the sparse threshold (about 6,500 codes at p = 14) and well under it.
        for n in [0usize, 1, 100, 3_000, 6_000, 7_000, 40_000] {
            while ids.len() < n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ids.push(x % 1_000_000_007);
            }
            let mut one_by_one = Hll::new();
            for &u in &ids {
                one_by_one.insert(u);
            }
            let mut bulk = Hll::of_users(&ids);
            assert_eq!(bulk.to_bytes(), one_by_one.to_bytes(), "{n} users");
            assert_eq!(bulk.estimate(), one_by_one.estimate());
            // The estimate from the codes alone, on both sides of the threshold.
            let codes = codes_of(&ids);
            assert_eq!(estimate_of_codes(codes.iter().copied()), bulk.estimate());
            match bulk.sparse_codes() {
                Some(codes) => {
                    assert!(n <= 7_000, "{n} users are past the threshold");
                    assert_eq!(Hll::of_codes(&codes).to_bytes(), bulk.to_bytes());
                }
                None => assert!(n >= 6_000, "{n} users are under the threshold"),
            }
        }
        assert!(Hll::of_users(&ids).sparse_codes().is_none());
        // A dense copy has the registers a merge into a dense sketch sets.
        let mut big = Hll::of_users(&ids);
        assert!(big.sparse_codes().is_none());
        let small = Hll::of_users(&ids[..3_000]);
        let mut merged = big.clone();
        merged.merge(&small).unwrap();
        let mut dense = small.to_dense().unwrap();
        assert!(dense.sparse_codes().is_none());
        dense.merge(&big).unwrap();
        assert_eq!(dense.to_bytes(), merged.to_bytes());
        assert_eq!(big.to_dense().unwrap().to_bytes(), big.to_bytes());
        assert_eq!(Hll::of_users(&ids[..10]).sparse_codes().unwrap().len(), 10);
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

    /// Bytes from a request never make the sketch crate allocate without bound, index out of
    /// range or panic: a crafted size is refused, and every one-byte change of a sparse and a
    /// dense sketch either is refused or reads as a sketch that merges and estimates.
    #[test]
    fn crafted_sketch_bytes_are_refused_or_harmless() {
        let body = |h: &Hll| -> Layout { Layout::of(&h.0) };
        let bytes_of = |l: &Layout| -> Vec<u8> {
            let mut out = MAGIC.to_vec();
            out.extend(postcard::to_allocvec(l).unwrap());
            out
        };
        let mut sparse = Hll::of_users(&(0..300u64).collect::<Vec<_>>());
        let mut dense = Hll::of_users(&(0..40_000u64).collect::<Vec<_>>());
        for h in [&mut sparse, &mut dense] {
            h.estimate();
            let mut huge = body(h);
            huge.counts.0 = 1 << 60;
            assert!(
                Hll::from_bytes(&bytes_of(&huge)).is_err(),
                "register count 2^60"
            );
            let mut wrong = body(h);
            wrong.precision = 4;
            assert!(Hll::from_bytes(&bytes_of(&wrong)).is_err(), "precision");
        }
        let mut far = body(&sparse);
        far.tmpset.push(u32::MAX - 1);
        assert!(
            Hll::from_bytes(&bytes_of(&far)).is_err(),
            "a code past 25 bits"
        );
        let mut short = body(&dense);
        short.registers.as_mut().unwrap().buf.pop();
        assert!(
            Hll::from_bytes(&bytes_of(&short)).is_err(),
            "registers cut short"
        );
        let other = dense.clone();
        for (h, reach) in [(&mut sparse, usize::MAX), (&mut dense, 96)] {
            let good = h.to_bytes();
            for i in 0..good.len().min(reach) {
                for v in [0u8, 1, 0x7f, 0x80, 0xff, good[i] ^ 0x40] {
                    let mut b = good.clone();
                    b[i] = v;
                    if let Ok(mut x) = Hll::from_bytes(&b) {
                        let mut m = Hll::new();
                        m.merge(&x).unwrap();
                        m.merge(&other).unwrap();
                        let (a, c) = (x.estimate(), m.estimate());
                        assert!(a.is_finite() && c.is_finite(), "byte {i} = {v}");
                    }
                }
            }
        }
    }
}
