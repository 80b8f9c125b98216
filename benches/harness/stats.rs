//! Summaries of samples: nearest-rank percentiles, nothing interpolated,
//! so every figure reported is one that was actually measured.

/// A summary of samples in nanoseconds (or any unit: the numbers are kept
/// as they came).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of(samples: &[u64]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let count = sorted.len();
        Some(Summary {
            count,
            min: *sorted.first()?,
            p50: percentile(&sorted, 50.0)?,
            p90: percentile(&sorted, 90.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
            mean: sorted.iter().map(|&s| s as f64).sum::<f64>() / count as f64,
        })
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample with
/// at least `p` percent of the samples at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// A duration in nanoseconds, in the unit that reads best: `85 µs`,
/// `1.23 ms`, `2.5 s`.
pub fn human_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.0} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        let ms = ns / 1e6;
        if ms < 10.0 {
            format!("{ms:.2} ms")
        } else {
            format!("{ms:.1} ms")
        }
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// KiB as MiB with two decimals.
pub fn human_kib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// Bytes as MiB with two decimals.
pub fn human_bytes(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / 1_048_576.0)
}

/// A statistic of several series measured side by side (a ratio of
/// medians, say), with a 90% bootstrap interval: the statistic computed
/// again on [`RESAMPLES`] resamplings of every series (drawn with
/// replacement, each to its own size), its 5th and 95th percentiles. It
/// says how far the figure could move if the same runs were made again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Resamplings per interval.
pub const RESAMPLES: usize = 1000;

impl Estimate {
    /// `statistic` is given the median of each series, in order. `None`
    /// when a series is empty or the statistic is not finite.
    pub fn of_medians(series: &[&[u64]], statistic: impl Fn(&[f64]) -> f64) -> Option<Estimate> {
        if series.iter().any(|s| s.is_empty()) {
            return None;
        }
        let medians: Vec<f64> = series
            .iter()
            .map(|s| Summary::of(s).map_or(f64::NAN, |m| m.p50 as f64))
            .collect();
        let value = statistic(&medians);
        if !value.is_finite() {
            return None;
        }
        // A fixed seed: the same samples give the same interval.
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut scratch = Vec::new();
        let mut resampled: Vec<f64> = Vec::with_capacity(RESAMPLES);
        for _ in 0..RESAMPLES {
            let medians: Vec<f64> = series
                .iter()
                .map(|s| {
                    scratch.clear();
                    scratch.extend((0..s.len()).map(|_| s[random.below(s.len())]));
                    let rank = (s.len().div_ceil(2)).max(1) - 1;
                    *scratch.select_nth_unstable(rank).1 as f64
                })
                .collect();
            let v = statistic(&medians);
            if v.is_finite() {
                resampled.push(v);
            }
        }
        Estimate::from_resamples(value, resampled)
    }

    /// `statistic` of the means of each series, in order, with the same
    /// interval as [`Estimate::of_medians`]. For figures that move in
    /// whole steps (a Job's seconds, in steps of the kubelet's), whose
    /// median over a few runs jumps by a step between runs where the mean
    /// shows how often the step comes.
    pub fn of_means(series: &[&[u64]], statistic: impl Fn(&[f64]) -> f64) -> Option<Estimate> {
        if series.iter().any(|s| s.is_empty()) {
            return None;
        }
        let mean = |s: &[u64]| s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
        let means: Vec<f64> = series.iter().map(|s| mean(s)).collect();
        let value = statistic(&means);
        if !value.is_finite() {
            return None;
        }
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut resampled: Vec<f64> = Vec::with_capacity(RESAMPLES);
        for _ in 0..RESAMPLES {
            let means: Vec<f64> = series
                .iter()
                .map(|s| {
                    (0..s.len())
                        .map(|_| s[random.below(s.len())] as f64)
                        .sum::<f64>()
                        / s.len() as f64
                })
                .collect();
            let v = statistic(&means);
            if v.is_finite() {
                resampled.push(v);
            }
        }
        Estimate::from_resamples(value, resampled)
    }

    /// `value` with the 5th and 95th percentiles of its `resampled`
    /// values; `None` without any.
    fn from_resamples(value: f64, mut resampled: Vec<f64>) -> Option<Estimate> {
        resampled.sort_by(f64::total_cmp);
        if resampled.is_empty() {
            return None;
        }
        let at = |p: f64| {
            let rank = ((p * resampled.len() as f64).ceil() as usize).clamp(1, resampled.len());
            resampled[rank - 1]
        };
        Some(Estimate {
            value,
            low: at(0.05),
            high: at(0.95),
        })
    }

    /// The ratio of two series' medians.
    pub fn ratio(numerator: &[u64], denominator: &[u64]) -> Option<Estimate> {
        Estimate::of_medians(&[numerator, denominator], |m| m[0] / m[1])
    }

    /// `1.42× (1.35–1.50)`.
    pub fn times(&self) -> String {
        format!("{:.2}× ({:.2}–{:.2})", self.value, self.low, self.high)
    }
}

/// xorshift64*: enough randomness for resampling, and no dependency.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (((x >> 32) * n as u64) >> 32) as usize
    }
}
