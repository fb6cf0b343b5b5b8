//! Window funnels: how far each user got through ordered steps inside a time window.
//!
//! [`reach`] is the core that the campaigns job calls per user and that the SQL aggregate
//! `window_funnel(window, ts, cond1, cond2, ...)` wraps. Semantics are ClickHouse's
//! `windowFunnel`: a chain's steps happen in order, each at or after the previous one, and at
//! most `window` after the chain's first step (the edge is inside).
//! - `furthest`: over every attempt, the longest chain; each user counts once, at the
//!   furthest step reached. The latest start of a chain at each level dominates earlier ones
//!   (it leaves more room), so one pass in time order finds it.
//! - `first`: one chain, anchored at the user's first step-1 event.

use serde::{Deserialize, Serialize};

/// At most this many steps (a step is a bit of a `u64` mask).
pub const MAX_STEPS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FunnelMode {
    #[default]
    Furthest,
    First,
}

impl std::str::FromStr for FunnelMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "furthest" => Ok(Self::Furthest),
            "first" => Ok(Self::First),
            _ => Err(format!(
                "funnel mode: expected furthest or first, got {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for FunnelMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Furthest => "furthest",
            Self::First => "first",
        })
    }
}

/// A user's result: the furthest step reached (0 = none) and the times of that chain's steps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reached {
    pub level: usize,
    /// `times[k]` is when step `k` of the counted chain happened (`level` entries).
    pub times: Vec<i64>,
}

/// How far one user got. `events` are `(ts, mask)` with bit `k` set when the event satisfies
/// step `k`; they are sorted here. `window` is in the unit of `ts`.
pub fn reach(events: &mut [(i64, u64)], steps: usize, window: i64, mode: FunnelMode) -> Reached {
    let steps = steps.min(MAX_STEPS);
    // Ties at the same instant are taken in step order, so that steps at one moment chain.
    events.sort_unstable_by_key(|&(ts, mask)| (ts, mask.trailing_zeros()));
    let mut chains: Vec<Option<Vec<i64>>> = vec![None; steps];
    for &(ts, mask) in events.iter() {
        // Higher steps first: one event never advances a chain twice.
        for k in (0..steps).rev() {
            if mask & (1 << k) == 0 {
                continue;
            }
            if k == 0 {
                let replace = match (&chains[0], mode) {
                    (None, _) => true,
                    (Some(c), FunnelMode::Furthest) => c[0] < ts,
                    (Some(_), FunnelMode::First) => false,
                };
                if replace {
                    chains[0] = Some(vec![ts]);
                }
                continue;
            }
            let Some(prev) = &chains[k - 1] else { continue };
            if ts - prev[0] > window {
                continue;
            }
            let better = match (&chains[k], mode) {
                (None, _) => true,
                (Some(c), FunnelMode::Furthest) => c[0] < prev[0],
                (Some(_), FunnelMode::First) => false,
            };
            if better {
                let mut chain = prev.clone();
                chain.push(ts);
                chains[k] = Some(chain);
            }
        }
    }
    match chains.iter().rposition(Option::is_some) {
        Some(k) => Reached {
            level: k + 1,
            times: chains[k].clone().unwrap_or_default(),
        },
        None => Reached::default(),
    }
}

/// The `q` quantile (0..=1) of sorted values by the nearest-rank method.
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    nearest_rank(sorted.len(), q).map(|i| sorted[i])
}

/// `quantile` of values in any order, which it reorders: the same value, found by selection
/// in linear time instead of a sort.
pub fn quantile_unsorted(values: &mut [i64], q: f64) -> Option<i64> {
    nearest_rank(values.len(), q).map(|i| *values.select_nth_unstable(i).1)
}

/// The index, among `n` sorted values, of the `q` quantile by the nearest-rank method.
fn nearest_rank(n: usize, q: f64) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let rank = (q * n as f64).ceil().max(1.0) as usize;
    Some(rank.min(n) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(events: &[(i64, u64)], mode: FunnelMode) -> usize {
        reach(&mut events.to_vec(), 3, 100, mode).level
    }

    #[test]
    fn in_order_and_window_edge() {
        assert_eq!(lv(&[(0, 1), (10, 2), (100, 4)], FunnelMode::Furthest), 3);
        assert_eq!(lv(&[(0, 1), (10, 2), (101, 4)], FunnelMode::Furthest), 2);
        assert_eq!(lv(&[(10, 2), (20, 1)], FunnelMode::Furthest), 1);
        assert_eq!(lv(&[(5, 4), (5, 2), (5, 1)], FunnelMode::Furthest), 3);
        assert_eq!(lv(&[(20, 4)], FunnelMode::Furthest), 0);
    }

    #[test]
    fn furthest_versus_first() {
        let e = [(0, 1), (10, 2), (500, 1), (510, 2), (520, 4)];
        assert_eq!(lv(&e, FunnelMode::Furthest), 3);
        assert_eq!(lv(&e, FunnelMode::First), 2);
        let r = reach(&mut e.to_vec(), 3, 100, FunnelMode::Furthest);
        assert_eq!(r.times, vec![500, 510, 520]);
    }

    #[test]
    fn one_event_advances_one_step() {
        // An event matching steps 1 and 2 does not chain with itself.
        assert_eq!(lv(&[(0, 3)], FunnelMode::Furthest), 1);
        assert_eq!(lv(&[(0, 3), (1, 3)], FunnelMode::Furthest), 2);
    }

    #[test]
    fn quantiles() {
        assert_eq!(quantile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(quantile(&[1, 2, 3, 4], 0.9), Some(4));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn quantiles_of_unsorted_values_equal_the_sorted_ones() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in [1usize, 2, 3, 10, 101, 1000] {
            let values: Vec<i64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 97) as i64
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let mut shuffled = values.clone();
            for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
                assert_eq!(
                    quantile_unsorted(&mut shuffled, q),
                    quantile(&sorted, q),
                    "n {n}, q {q}"
                );
            }
        }
        assert_eq!(quantile_unsorted(&mut [], 0.5), None);
    }
}
