//! Distinct-user sketches that merge across days: HyperLogLog++ (approximate) and roaring
//! bitmaps (exact), both stored as binary columns of the metric tables.
//!
//! The HLL++ sketch is our own (Heule, Nunkesser and Hall, "HyperLogLog in Practice", 2013):
//! 2^14 six-bit registers, a sparse list of 25-bit codes while few users are in it, and
//! Ertl's improved estimator over the registers ("New cardinality estimation algorithms for
//! HyperLogLog sketches", 2017), which needs no empirical bias tables. The hash is xxHash64
//! with seed 0 over the value's little-endian bytes: the same on every process, machine and
//! version, so sketches stored today merge with tomorrow's. The byte format (docs/metrics.md,
//! "Sketch formats") is versioned by its magic; sketches written before it (`SPH1`, the
//! hyperloglogplus crate's serialization) are still read.

use std::hash::{BuildHasher, Hasher};

use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};

/// HLL++ precision: 2^14 registers.
pub const HLL_PRECISION: u8 = 14;
/// Relative standard error of an HLL estimate at [`HLL_PRECISION`]: 1.04 / sqrt(2^p).
pub fn hll_relative_error() -> f64 {
    1.04 / ((1u64 << HLL_PRECISION) as f64).sqrt()
}
/// The estimator's name, stated beside every approximate number.
pub const HLL_ESTIMATOR: &str =
    "HyperLogLog++ p=14, sparse p'=25, Ertl's improved estimator (xxHash64 seed 0)";

/// The current format's magic.
const MAGIC: &[u8; 4] = b"SPH2";
/// The magic of sketches written by spacepulse before its own format (read only).
const LEGACY_MAGIC: &[u8; 4] = b"SPH1";
/// The legacy layout's sizes at p = 14: registers, its sparse registers (2^24), and its sparse
/// list's largest size in bytes (4 × 2^14 / 5).
const LEGACY_COUNTS: (usize, usize, usize) = (1 << 14, 1 << 24, 13_107);

/// Registers.
const M: usize = 1 << HLL_PRECISION;
/// A register's largest value: the 50 bits after the index all zero, plus one.
const MAX_RANK: u8 = 64 - HLL_PRECISION + 1;
/// The sparse list's largest size, in varint bytes, before the sketch turns to registers: the
/// size of the registers packed in six bits.
const SPARSE_MAX_BYTES: usize = M * 6 / 8;
/// New codes kept unsorted before they are folded into the sparse list.
const PENDING_MAX: usize = 1024;
/// Registers of HLL++'s sparse precision p' (linear counting while sparse).
const SPARSE_M: usize = 1 << SPARSE_PRECISION;

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

/// An HLL++ sketch of user ids: sparse (sorted distinct codes, plus new codes not yet folded
/// in) until its list would outgrow its registers, then 2^14 registers.
#[derive(Clone, Debug, Default)]
pub struct Hll {
    sparse: Vec<u32>,
    pending: Vec<u32>,
    registers: Option<Box<[u8]>>,
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

fn bad_hll<T>(why: &str) -> Result<T, SketchError> {
    Err(SketchError::BadHll(why.to_string()))
}

/// The register index and value of a 64-bit hash.
#[inline]
fn rank(hash: u64) -> (usize, u8) {
    let p = u32::from(HLL_PRECISION);
    let index = (hash >> (64 - p)) as usize;
    let value = ((hash << p) | (1 << (p - 1))).leading_zeros() + 1;
    (index, value as u8)
}

/// The varint bytes of the sparse list `codes` (sorted, distinct).
fn sparse_bytes(codes: &[u32]) -> usize {
    let mut last = 0;
    codes
        .iter()
        .map(|&c| {
            let n = varint_len(c - last);
            last = c;
            n
        })
        .sum()
}

/// Linear counting over the sparse registers.
fn linear_count(n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    SPARSE_M as f64 * (SPARSE_M as f64 / (SPARSE_M - n) as f64).ln()
}

/// Ertl's improved raw estimator over `registers` (each 0..=51).
fn ertl(registers: &[u8]) -> f64 {
    let q = usize::from(MAX_RANK) - 1;
    let mut c = [0u32; 64];
    for &r in registers {
        c[usize::from(r.min(MAX_RANK))] += 1;
    }
    let m = registers.len() as f64;
    let mut z = m * tau(1.0 - f64::from(c[q + 1]) / m);
    for k in (1..=q).rev() {
        z = 0.5 * (z + f64::from(c[k]));
    }
    z += m * sigma(f64::from(c[0]) / m);
    if !z.is_finite() {
        return 0.0;
    }
    m * m / (2.0 * std::f64::consts::LN_2 * z)
}

fn sigma(x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut x, mut y, mut z) = (x, 1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn tau(x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut x, mut y, mut z) = (x, 1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

/// Merges sorted distinct `b` into sorted distinct `a`.
fn union_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The registers the sparse codes set.
fn registers_of(codes: &[u32]) -> Box<[u8]> {
    let mut r = vec![0u8; M].into_boxed_slice();
    for &c in codes {
        let (index, value) = decode(c);
        r[index] = r[index].max(value as u8);
    }
    r
}

impl Hll {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn insert(&mut self, user: u64) {
        let hash = xxhash_rust::xxh64::xxh64(&user.to_le_bytes(), 0);
        match &mut self.registers {
            Some(r) => {
                let (index, value) = rank(hash);
                r[index] = r[index].max(value);
            }
            None => {
                self.pending.push(sparse_code(hash));
                if self.pending.len() >= PENDING_MAX {
                    self.fold();
                }
            }
        }
    }

    /// Folds the new codes into the sparse list, turning to registers past its size.
    fn fold(&mut self) {
        if self.pending.is_empty() || self.registers.is_some() {
            self.pending.clear();
            return;
        }
        self.pending.sort_unstable();
        self.pending.dedup();
        self.sparse = union_sorted(&self.sparse, &self.pending);
        self.pending.clear();
        if sparse_bytes(&self.sparse) > SPARSE_MAX_BYTES {
            self.densify();
        }
    }

    fn densify(&mut self) {
        if self.registers.is_none() {
            self.pending.sort_unstable();
            let codes = union_sorted(&self.sparse, &self.pending);
            self.registers = Some(registers_of(&codes));
            self.sparse = Vec::new();
            self.pending = Vec::new();
        }
    }

    pub fn merge(&mut self, other: &Hll) -> Result<(), SketchError> {
        match (&mut self.registers, &other.registers) {
            (Some(mine), Some(theirs)) => {
                for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                    *a = (*a).max(*b);
                }
            }
            (Some(mine), None) => {
                for &c in other.sparse.iter().chain(&other.pending) {
                    let (index, value) = decode(c);
                    mine[index] = mine[index].max(value as u8);
                }
            }
            (None, Some(_)) => {
                self.densify();
                return self.merge(other);
            }
            (None, None) => {
                self.pending.extend_from_slice(&other.sparse);
                self.pending.extend_from_slice(&other.pending);
                self.fold();
            }
        }
        Ok(())
    }

    /// The estimated number of distinct values: linear counting over the sparse registers
    /// while sparse, Ertl's estimator over the registers after.
    pub fn estimate(&mut self) -> f64 {
        self.fold();
        match &self.registers {
            Some(r) => ertl(r),
            None => linear_count(self.sparse.len()),
        }
    }

    /// The sketch's bytes (docs/metrics.md, "Sketch formats"): `SPH2`, the precision, then
    /// `0` and the sparse list (a little-endian u32 count and the codes' differences as
    /// LEB128 varints) or `1` and the 2^14 registers, a byte each. Equal sketches have equal
    /// bytes.
    pub fn to_bytes(&mut self) -> Vec<u8> {
        self.fold();
        let mut out = MAGIC.to_vec();
        out.push(HLL_PRECISION);
        match &self.registers {
            Some(r) => {
                out.push(1);
                out.extend_from_slice(r);
            }
            None => {
                out.push(0);
                out.extend_from_slice(&(self.sparse.len() as u32).to_le_bytes());
                let mut last = 0u32;
                for &c in &self.sparse {
                    let mut v = c - last;
                    while v >= 0x80 {
                        out.push((v as u8 & 0x7f) | 0x80);
                        v >>= 7;
                    }
                    out.push(v as u8);
                    last = c;
                }
            }
        }
        out
    }

    /// Reads a sketch in the current format or the legacy one, refusing anything a sketch of
    /// this precision never holds (bytes may come from a request).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchError> {
        if let Some(body) = bytes.strip_prefix(LEGACY_MAGIC.as_slice()) {
            return Self::from_legacy(body);
        }
        let Some(body) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return bad_hll("wrong magic");
        };
        match body {
            [p, ..] if *p != HLL_PRECISION => Err(SketchError::Precision),
            [_, 1, registers @ ..] => {
                if registers.len() != M {
                    return bad_hll("registers of another size");
                }
                if registers.iter().any(|&r| r > MAX_RANK) {
                    return bad_hll("a register past its largest value");
                }
                Ok(Self {
                    registers: Some(registers.into()),
                    ..Self::default()
                })
            }
            [_, 0, n0, n1, n2, n3, list @ ..] => {
                let n = u32::from_le_bytes([*n0, *n1, *n2, *n3]) as usize;
                if list.len() > SPARSE_MAX_BYTES || n > list.len() {
                    return bad_hll("a sparse list longer than a sparse sketch holds");
                }
                let codes = decode_list(list)?;
                if codes.len() != n {
                    return bad_hll("the sparse list does not decode to its count");
                }
                Ok(Self {
                    sparse: codes,
                    ..Self::default()
                })
            }
            _ => bad_hll("neither sparse nor registers"),
        }
    }

    /// A sketch written as the hyperloglogplus crate's serialization.
    fn from_legacy(body: &[u8]) -> Result<Self, SketchError> {
        let layout: Layout =
            postcard::from_bytes(body).map_err(|e| SketchError::BadHll(e.to_string()))?;
        layout.check()?;
        let mut h = Self::new();
        match &layout.registers {
            Some(r) => {
                let mut registers = vec![0u8; M].into_boxed_slice();
                for (i, reg) in registers.iter_mut().enumerate() {
                    let value = (r.buf[i / 5] >> ((i % 5) * 6)) & 0x3f;
                    *reg = (value as u8).min(MAX_RANK);
                }
                h.registers = Some(registers);
            }
            None => h.sparse = decode_list(&layout.sparse.buf)?,
        }
        h.merge(&Self {
            pending: layout.tmpset.clone(),
            ..Self::default()
        })?;
        Ok(h)
    }

    /// The sketch of `users`, equal (byte for byte once serialized) to inserting them one by
    /// one, in one sort.
    pub fn of_users(users: &[u64]) -> Self {
        Self::of_codes(&codes_of(users))
    }

    /// The sketch whose sparse list is `codes` (sorted, distinct).
    pub fn of_codes(codes: &[u32]) -> Self {
        if codes_are_dense(codes) {
            return Self {
                registers: Some(registers_of(codes)),
                ..Self::default()
            };
        }
        Self {
            sparse: codes.to_vec(),
            ..Self::default()
        }
    }

    /// The sketch in registers, as a merge into registers would set them. Merges of dense
    /// sketches are a pass over the registers.
    pub fn to_dense(&self) -> Result<Self, SketchError> {
        let mut h = self.clone();
        h.densify();
        Ok(h)
    }

    /// The sketch's sparse list of codes (sorted, distinct), or `None` once it uses registers.
    pub fn sparse_codes(&mut self) -> Option<Vec<u32>> {
        self.fold();
        self.registers.is_none().then(|| self.sparse.clone())
    }
}

/// The codes of a sparse list: LEB128 differences, strictly increasing, each a code
/// [`sparse_code`] can make.
fn decode_list(list: &[u8]) -> Result<Vec<u32>, SketchError> {
    let mut out = Vec::with_capacity(list.len() / 2);
    let (mut last, mut v, mut shift) = (0u32, 0u32, 0u32);
    for &b in list {
        if shift > 28 {
            return bad_hll("bad varint in the sparse list");
        }
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            if !out.is_empty() && v == 0 {
                return bad_hll("sparse codes not increasing");
            }
            last = last
                .checked_add(v)
                .filter(|&c| valid_code(c))
                .ok_or_else(|| SketchError::BadHll("sparse code out of range".into()))?;
            out.push(last);
            (v, shift) = (0, 0);
        } else {
            shift += 7;
        }
    }
    if shift != 0 {
        return bad_hll("a varint cut short");
    }
    Ok(out)
}

/// Whether the sketch of the sparse list `codes` (sorted, distinct) holds registers: its list
/// is past the sparse size. A superset of such a list is past it too (inserting a code splits
/// one difference into two, never fewer varint bytes).
pub fn codes_are_dense(codes: &[u32]) -> bool {
    sparse_bytes(codes) > SPARSE_MAX_BYTES
}

/// The estimate of the sketch whose sparse list is `codes` (sorted, distinct): exactly
/// `Hll::of_codes(codes).estimate()`, without keeping the list.
pub fn estimate_of_codes<I: Iterator<Item = u32> + Clone>(codes: I) -> f64 {
    let (mut n, mut bytes, mut last) = (0usize, 0usize, 0u32);
    for c in codes.clone() {
        n += 1;
        bytes += varint_len(c - last);
        last = c;
    }
    if bytes <= SPARSE_MAX_BYTES {
        return linear_count(n);
    }
    let mut r = vec![0u8; M];
    for c in codes {
        let (index, value) = decode(c);
        r[index] = r[index].max(value as u8);
    }
    ertl(&r)
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
        let (m, _, threshold) = LEGACY_COUNTS;
        if self.precision != HLL_PRECISION || self.counts != LEGACY_COUNTS {
            return bad("precision or sizes are not those of precision 14");
        }
        if self.tmpset.len() > m || !self.tmpset.iter().all(|&c| valid_code(c)) {
            return bad("bad temporary codes");
        }
        if self.sparse.buf.len() > threshold + 8 {
            return bad("sparse list longer than a sparse sketch holds");
        }
        let codes = decode_list(&self.sparse.buf)?;
        if codes.len() != self.sparse.count
            || codes.last().copied().unwrap_or(0) != self.sparse.last
        {
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

/// The legacy `SPH1` body: hyperloglogplus 0.4.1's `HyperLogLogPlus<u64, _>` as postcard wrote it
/// (a struct's fields in order, without names), which spacepulse stored before it had a format
/// of its own. Read only, and checked before use, so that sketches in existing lakes still
/// merge with new ones.
#[derive(Serialize, Deserialize)]
struct Layout {
    builder: (),
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

/// The bytes of `v` as a varint (the sparse list's encoding of a difference).
fn varint_len(v: u32) -> usize {
    (32 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// The register index and value (leading zeros plus one) of a sparse code at the sketch's
/// precision.
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
        // Past the sparse size (about 6,000 codes at p = 14) and well under it.
        for n in [0usize, 1, 100, 3_000, 5_000, 8_000, 40_000] {
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
                    assert!(n <= 5_000, "{n} users are past the threshold");
                    assert_eq!(Hll::of_codes(&codes).to_bytes(), bulk.to_bytes());
                }
                None => assert!(n >= 8_000, "{n} users are under the threshold"),
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
        // Two sparse sketches merge into the sketch of the union, turning dense past the size.
        let mut halves = Hll::of_users(&ids[..4_000]);
        halves.merge(&Hll::of_users(&ids[4_000..8_000])).unwrap();
        assert_eq!(halves.to_bytes(), Hll::of_users(&ids[..8_000]).to_bytes());
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
        assert_eq!(&bytes[..6], b"SPH2\x0e\x01");
        let mut a2 = Hll::from_bytes(&bytes).unwrap();
        a2.merge(&Hll::from_bytes(&b.to_bytes()).unwrap()).unwrap();
        let est = a2.estimate();
        let rse = hll_relative_error();
        assert!((est - 75_000.0).abs() < 3.0 * rse * 75_000.0, "{est}");
        assert!(Hll::from_bytes(b"nope").is_err());
        let mut empty = Hll::new();
        assert_eq!(empty.estimate(), 0.0);
        assert_eq!(Hll::from_bytes(&empty.to_bytes()).unwrap().estimate(), 0.0);
        let mut small = Hll::of_users(&[7, 8, 9]);
        assert_eq!(small.estimate().round(), 3.0);
        assert_eq!(&small.to_bytes()[..6], b"SPH2\x0e\x00");
    }

    /// Ertl's estimator stays within the stated error from a thousand to ten million users,
    /// across the sparse-to-registers switch and the range where raw HLL is biased.
    #[test]
    fn estimates_are_within_the_stated_error() {
        let rse = hll_relative_error();
        for n in [
            1_000u64, 6_000, 10_000, 20_000, 40_000, 80_000, 300_000, 1_000_000, 10_000_000,
        ] {
            let mut h = Hll::new();
            for u in 0..n {
                h.insert(u.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            }
            let e = h.estimate();
            let err = (e - n as f64).abs() / n as f64;
            assert!(err < 3.0 * rse, "{n}: {e} ({:.3} %)", err * 100.0);
        }
    }

    /// Sketches stored as the hyperloglogplus crate's serialization (`SPH1`, written by
    /// spacepulse before its own format; these were made by `hll_sketch` over the values
    /// 0..300 and 0..20000) read as the sketches of the same values today: the same codes,
    /// the same registers, so they merge with new ones.
    #[test]
    fn legacy_sketches_read_as_ours() {
        let hex = |s: &str| -> Vec<u8> {
            let s = s.trim();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        for (file, n, crate_estimate) in [
            (
                include_str!("../testdata/hll_sph1_0_to_300.hex"),
                300u64,
                300.0026822419223,
            ),
            (
                include_str!("../testdata/hll_sph1_0_to_20000.hex"),
                20_000,
                19926.506873402504,
            ),
        ] {
            let bytes = hex(file);
            assert_eq!(&bytes[..4], LEGACY_MAGIC);
            let mut old = Hll::from_bytes(&bytes).unwrap();
            let mut now = Hll::of_users(&(0..n).collect::<Vec<_>>());
            assert_eq!(old.to_bytes(), now.to_bytes(), "0..{n}");
            let e = old.estimate();
            assert!(
                (e - crate_estimate).abs() / crate_estimate < 0.01,
                "{e} vs {crate_estimate}"
            );
            assert!(
                (e - n as f64).abs() < 3.0 * hll_relative_error() * n as f64,
                "{e}"
            );
            now.merge(&old).unwrap();
        }
    }

    /// The legacy layout of a sketch, as the crate wrote it.
    fn legacy(h: &mut Hll) -> Layout {
        let codes = h.sparse_codes();
        let mut l = Layout {
            builder: (),
            precision: HLL_PRECISION,
            counts: LEGACY_COUNTS,
            tmpset: Vec::new(),
            sparse: SparseLayout {
                count: 0,
                last: 0,
                buf: Vec::new(),
            },
            registers: None,
            phantom: (),
        };
        match codes {
            Some(codes) => {
                let bytes = Hll::of_codes(&codes).to_bytes();
                l.sparse = SparseLayout {
                    count: codes.len(),
                    last: codes.last().copied().unwrap_or(0),
                    buf: bytes[10..].to_vec(),
                };
            }
            None => {
                let r = h.registers.as_ref().unwrap();
                let mut buf = vec![0u32; M.div_ceil(5)];
                for (i, &v) in r.iter().enumerate() {
                    buf[i / 5] |= u32::from(v) << ((i % 5) * 6);
                }
                let zeros = r.iter().filter(|&&v| v == 0).count();
                l.registers = Some(RegistersLayout {
                    buf,
                    count: M,
                    zeros,
                });
            }
        }
        l
    }

    /// Bytes from a request never make a sketch allocate without bound, index out of range or
    /// panic: a crafted size is refused, and every one-byte change of a sparse and a dense
    /// sketch, in either format, either is refused or reads as a sketch that merges and
    /// estimates.
    #[test]
    fn crafted_sketch_bytes_are_refused_or_harmless() {
        let bytes_of = |l: &Layout| -> Vec<u8> {
            let mut out = LEGACY_MAGIC.to_vec();
            out.extend(postcard::to_allocvec(l).unwrap());
            out
        };
        let mut sparse = Hll::of_users(&(0..300u64).collect::<Vec<_>>());
        let mut dense = Hll::of_users(&(0..40_000u64).collect::<Vec<_>>());
        for h in [&mut sparse, &mut dense] {
            let good = legacy(h);
            assert_eq!(
                Hll::from_bytes(&bytes_of(&good)).unwrap().to_bytes(),
                h.to_bytes()
            );
            let mut huge = legacy(h);
            huge.counts.0 = 1 << 60;
            assert!(
                Hll::from_bytes(&bytes_of(&huge)).is_err(),
                "register count 2^60"
            );
            let mut wrong = legacy(h);
            wrong.precision = 4;
            assert!(Hll::from_bytes(&bytes_of(&wrong)).is_err(), "precision");
        }
        let mut far = legacy(&mut sparse);
        far.tmpset.push(u32::MAX - 1);
        assert!(
            Hll::from_bytes(&bytes_of(&far)).is_err(),
            "a code past 25 bits"
        );
        let mut short = legacy(&mut dense);
        short.registers.as_mut().unwrap().buf.pop();
        assert!(
            Hll::from_bytes(&bytes_of(&short)).is_err(),
            "registers cut short"
        );
        let mut cut = dense.to_bytes();
        cut.pop();
        assert!(Hll::from_bytes(&cut).is_err(), "registers cut short");
        let mut big = dense.to_bytes();
        big[100] = MAX_RANK + 1;
        assert!(Hll::from_bytes(&big).is_err(), "a register past 51");
        let mut other_p = sparse.to_bytes();
        other_p[4] = 12;
        assert!(matches!(
            Hll::from_bytes(&other_p),
            Err(SketchError::Precision)
        ));
        let other = dense.clone();
        let formats: [(Vec<u8>, usize); 4] = [
            (sparse.to_bytes(), usize::MAX),
            (dense.to_bytes(), 96),
            (bytes_of(&legacy(&mut sparse)), usize::MAX),
            (bytes_of(&legacy(&mut dense)), 96),
        ];
        for (good, reach) in formats {
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
                        x.to_bytes();
                    }
                }
            }
        }
    }
}
