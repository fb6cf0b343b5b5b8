//! A small deterministic random number generator: the same seed gives the same numbers on
//! every machine and every version (integer arithmetic only, no platform maths library).

/// SplitMix64 (Steele, Lea and Flood): fast, stateless to seed, good enough for synthetic data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one (seed, stream, index) triple, independent of every other.
    pub fn derive(seed: u64, stream: u64, index: u64) -> Self {
        let mut r = Self(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.0 ^= index.wrapping_mul(0xE703_7ED1_A0B4_28DB);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0), by Lemire's multiply-shift (bias below 2^-64 · n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    /// A heavy-tailed rank in `0..n`: the cube of a uniform number, so low ranks are far more
    /// likely (a Zipf-like activity curve without floating-point library calls).
    pub fn skewed(&mut self, n: u64) -> u64 {
        // u in [0, 2^32): u^3 / 2^32 < 2^64, so every rank below n < 2^64 is reachable.
        let u = (self.next_u64() >> 32) as u128;
        let cube = (u * u * u) >> 32;
        ((cube * n as u128) >> 64) as u64
    }
}
