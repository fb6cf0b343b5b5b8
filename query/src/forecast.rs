//! A launch's +24 h forecast from its first minutes.
//!
//! The reference is the published curve of a phone launch (50,000 reservers at +1 s, 300,000
//! at +1 min, 600,000 at +10 min, 1 million at +30 min, 3.5 million at +24 h), straight lines
//! between its points in log time and log users. A launch seen up to second `T` is scaled to
//! the reference at `T`, with the reference's growth from `T` to +24 h stretched by how much
//! faster or slower this launch grew than the reference over its last decade of seconds
//! (`T/10` to `T`): a launch that slows down faster than the reference is forecast to gain less.
//!
//! The interval is multiplicative: `point · exp(±1.2816 σ(T))`, an 80 % band when the log
//! error is normal with standard deviation σ(T), which narrows as more of the launch is seen
//! (0.45 at +1 min, 0.30 at +10 min, 0.22 at +30 min, 0.18 at +1 h). bench/RESULTS.md has
//! the backtest's errors on the reference, on noisy launches at three scales and on launches
//! of other shapes.

use serde::Serialize;

/// The published launch: distinct reservers at seconds after the start.
pub const REFERENCE: [(f64, f64); 5] = [
    (1.0, 50_000.0),
    (60.0, 300_000.0),
    (600.0, 600_000.0),
    (1_800.0, 1_000_000.0),
    (86_400.0, 3_500_000.0),
];

/// The forecast's horizon: +24 h.
pub const HORIZON_S: f64 = 86_400.0;

/// A forecast of a launch's distinct reservers at +24 h.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// The last second seen.
    pub from_second: i64,
    /// Distinct reservers up to it.
    pub observed: u64,
    pub users_24h: f64,
    /// The 80 % interval.
    pub low: f64,
    pub high: f64,
    /// How much faster (>1) or slower (<1) than the reference the launch grew over its last
    /// decade of seconds.
    pub stretch: f64,
    pub method: &'static str,
}

/// ln(users) of the reference at `t` seconds (t ≥ 1/10), straight in log-log between its
/// points and beyond its ends.
fn reference_ln(t: f64) -> f64 {
    let lt = t.max(0.1).ln();
    let pts: Vec<(f64, f64)> = REFERENCE.iter().map(|(s, u)| (s.ln(), u.ln())).collect();
    let i = pts
        .windows(2)
        .position(|w| lt <= w[1].0)
        .unwrap_or(pts.len() - 2);
    let (a, b) = (pts[i], pts[i + 1]);
    a.1 + (b.1 - a.1) * (lt - a.0) / (b.0 - a.0)
}

/// Cumulative users at second `t` of a curve of `(second, cumulative users)` points in time
/// order: the last point at or before `t`.
fn users_at(curve: &[(i64, u64)], t: i64) -> u64 {
    curve
        .iter()
        .take_while(|(s, _)| *s <= t)
        .last()
        .map_or(0, |(_, u)| *u)
}

/// The log error's standard deviation when forecasting from `t` seconds.
fn sigma(t: f64) -> f64 {
    let knots = [
        (60.0f64, 0.45f64),
        (600.0, 0.30),
        (1_800.0, 0.22),
        (3_600.0, 0.18),
    ];
    if t <= knots[0].0 {
        return knots[0].1;
    }
    for w in knots.windows(2) {
        if t <= w[1].0 {
            let f = (t.ln() - w[0].0.ln()) / (w[1].0.ln() - w[0].0.ln());
            return w[0].1 + (w[1].1 - w[0].1) * f;
        }
    }
    knots[3].1
}

/// The +24 h forecast from the curve seen up to second `from` (at least 10 s, and some users).
pub fn forecast(curve: &[(i64, u64)], from: i64) -> Option<Forecast> {
    if from < 10 {
        return None;
    }
    let observed = users_at(curve, from);
    if observed == 0 {
        return None;
    }
    let t = from as f64;
    if t >= HORIZON_S {
        return Some(Forecast {
            from_second: from,
            observed,
            users_24h: observed as f64,
            low: observed as f64,
            high: observed as f64,
            stretch: 1.0,
            method: "observed",
        });
    }
    // The launch's growth over its last decade of seconds against the reference's.
    let t0 = (from / 10).max(1);
    let before = users_at(curve, t0);
    let ref_growth = reference_ln(t) - reference_ln(t0 as f64);
    let stretch = if before > 0 && ref_growth > 0.0 {
        ((observed as f64).ln() - (before as f64).ln()) / ref_growth
    } else {
        1.0
    }
    .clamp(0.25, 4.0);
    let point = (observed as f64).ln() + stretch * (reference_ln(HORIZON_S) - reference_ln(t));
    let band = 1.2816 * sigma(t);
    Some(Forecast {
        from_second: from,
        observed,
        users_24h: point.exp().max(observed as f64),
        low: (point - band).exp().max(observed as f64),
        high: (point + band).exp(),
        stretch,
        method: "the published launch curve, stretched by this launch's last decade of growth",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cumulative users by second.
    type Curve = Vec<(i64, u64)>;

    /// A launch whose cumulative users follow `f(second)`, per second for the first hour.
    fn curve(f: impl Fn(f64) -> f64) -> Curve {
        (1..=3600)
            .map(|s| (s, f(s as f64).round() as u64))
            .collect()
    }

    fn reference(scale: f64) -> impl Fn(f64) -> f64 {
        move |s| scale * reference_ln(s).exp()
    }

    /// A launch like the reference at +1 s whose growth after it is `k` times the reference's
    /// (in log users): the truth at +24 h follows from the same rule.
    fn shaped(scale: f64, k: f64) -> (impl Fn(f64) -> f64, f64) {
        let base = reference_ln(1.0);
        let f = move |s: f64| scale * (base + k * (reference_ln(s) - base)).exp();
        let truth = f(HORIZON_S);
        (f, truth)
    }

    /// A deterministic draw of the users of a launch of `total` reservers by +24 h whose
    /// times follow `f`, as the generator's are: each second's new users rounded from the
    /// expected count with a fixed pseudo-random remainder.
    fn sampled(f: impl Fn(f64) -> f64) -> Curve {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut total = 0u64;
        let mut prev = 0.0;
        (1..=3600)
            .map(|s| {
                let want = f(s as f64);
                let expected = want - prev;
                prev = want;
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
                total += (expected + u).floor().max(0.0) as u64;
                (s, total)
            })
            .collect()
    }

    #[test]
    fn the_reference_forecasts_itself() {
        for from in [60, 600, 1800] {
            let f = forecast(&curve(reference(1.0)), from).unwrap();
            let err = f.users_24h / 3_500_000.0 - 1.0;
            assert!(err.abs() < 0.01, "from {from}: {f:?}");
            assert!(f.low < 3_500_000.0 && 3_500_000.0 < f.high, "{f:?}");
        }
        assert!(forecast(&curve(reference(1.0)), 5).is_none());
        assert!(forecast(&[], 60).is_none());
    }

    #[test]
    fn a_launch_that_slows_sooner_is_forecast_lower() {
        let (slow, truth_slow) = shaped(1.0, 0.8);
        let (fast, truth_fast) = shaped(1.0, 1.2);
        let s = forecast(&curve(slow), 600).unwrap();
        let f = forecast(&curve(fast), 600).unwrap();
        assert!(s.users_24h < 3_500_000.0 && f.users_24h > 3_500_000.0);
        for (fc, truth) in [(s, truth_slow), (f, truth_fast)] {
            assert!(
                (fc.users_24h / truth - 1.0).abs() < 0.15,
                "{fc:?} vs {truth}"
            );
        }
    }

    /// The backtest of bench/RESULTS.md: the forecast's error from +1 min, +10 min and +30 min
    /// on the reference, on launches drawn from it at three scales (the generator's launches
    /// follow the reference at any scale), and on launches whose growth after +1 s is 0.7 to
    /// 1.3 times the reference's. Printed as a table (`-- --nocapture`); each error within
    /// the 80 % band's half-width and the band holding the truth.
    #[test]
    fn forecast_backtest() {
        let mut cases: Vec<(String, Curve, f64)> = vec![(
            "the published curve".into(),
            curve(reference(1.0)),
            3_500_000.0,
        )];
        for scale in [0.001, 0.01, 0.1] {
            cases.push((
                format!("drawn at scale {scale}"),
                sampled(reference(scale)),
                3_500_000.0 * scale,
            ));
        }
        for k in [0.7, 0.85, 1.15, 1.3] {
            let (f, truth) = shaped(1.0, k);
            cases.push((format!("growth ×{k} after +1 s"), curve(f), truth));
        }
        println!("| launch | from +1 min | from +10 min | from +30 min |");
        println!("|---|---|---|---|");
        for (name, c, truth) in &cases {
            let cells: Vec<String> = [60, 600, 1800]
                .iter()
                .map(|from| {
                    let f = forecast(c, *from).unwrap();
                    let err = f.users_24h / truth - 1.0;
                    assert!(
                        f.low <= *truth && *truth <= f.high,
                        "{name} from {from}: {truth} outside {f:?}"
                    );
                    format!("{:+.1} %", 100.0 * err)
                })
                .collect();
            println!("| {name} | {} |", cells.join(" | "));
        }
        // What the model cannot see coming: a launch like the reference for its first half
        // hour that then grows at 0.7 times the reference's pace. Reported, with whether the
        // band held the truth.
        let late = |s: f64| {
            let at = reference_ln(1_800.0);
            if s <= 1_800.0 {
                reference_ln(s).exp()
            } else {
                (at + 0.7 * (reference_ln(s) - at)).exp()
            }
        };
        let truth = late(HORIZON_S);
        let c = curve(late);
        let cells: Vec<String> = [60, 600, 1800]
            .iter()
            .map(|from| {
                let f = forecast(&c, *from).unwrap();
                let inside = f.low <= truth && truth <= f.high;
                format!(
                    "{:+.1} %{}",
                    100.0 * (f.users_24h / truth - 1.0),
                    if inside { "" } else { " (outside the band)" }
                )
            })
            .collect();
        println!(
            "| like the published curve, then ×0.7 after +30 min | {} |",
            cells.join(" | ")
        );
    }
}
