//! A small log-linear latency histogram (HDR-like): exact below 128 ns, then 64
//! sub-buckets per power of two, so every recorded value is kept within 1/64 (≈1.6 %)
//! of its true value. Fixed memory (≈30 KiB), O(1) record, mergeable.

use std::time::Duration;

/// Sub-buckets per power of two (2^6): the relative precision is 1/64.
const SUB_BUCKETS: u64 = 64;
/// log2 of [`SUB_BUCKETS`].
const SUB_BITS: u32 = 6;
/// Values below this are counted exactly (one bucket per nanosecond).
const LINEAR_LIMIT: u64 = 2 * SUB_BUCKETS;
/// Buckets needed to cover every `u64`: the largest shift is 63 - SUB_BITS = 57,
/// whose buckets end at index 64 * 57 + 127.
const BUCKETS: usize = (SUB_BUCKETS as usize) * (64 - SUB_BITS as usize) + 2 * SUB_BUCKETS as usize;

/// Latency histogram in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish()
    }
}

/// Bucket index of `v` nanoseconds.
fn index_of(v: u64) -> usize {
    if v < LINEAR_LIMIT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let top = v >> shift; // in [64, 128)
    (shift as usize) * SUB_BUCKETS as usize + top as usize
}

/// Largest value that falls in bucket `index` (HDR's "highest equivalent value").
fn highest_of(index: usize) -> u64 {
    let i = index as u64;
    if i < LINEAR_LIMIT {
        return i;
    }
    let shift = i / SUB_BUCKETS - 1;
    let top = i - SUB_BUCKETS * shift;
    let end = u128::from(top + 1) << shift;
    u64::try_from(end - 1).unwrap_or(u64::MAX)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.counts[index_of(ns)] += 1;
        self.total += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum += u128::from(ns);
    }

    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Largest recorded value (0 when empty).
    pub fn max_ns(&self) -> u64 {
        self.max
    }

    /// Mean in nanoseconds (0 when empty).
    pub fn mean_ns(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0..=1): the highest value equivalent to the
    /// `ceil(q · n)`-th smallest recording, capped at the true maximum. 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return highest_of(i).min(self.max).max(self.min);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut prev = 0usize;
        for v in 0..100_000u64 {
            let i = index_of(v);
            assert!(i == prev || i == prev + 1, "gap at {v}");
            assert!(highest_of(i) >= v);
            prev = i;
        }
        assert!(index_of(u64::MAX) < BUCKETS);
        assert_eq!(highest_of(index_of(u64::MAX)), u64::MAX);
    }

    #[test]
    fn relative_error_is_bounded() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            let hi = highest_of(index_of(v));
            assert!(hi >= v);
            assert!((hi - v) as f64 <= v as f64 / 64.0, "v={v} hi={hi}");
            v = v * 3 + 1;
        }
    }

    #[test]
    fn exact_below_linear_limit() {
        for v in 0..LINEAR_LIMIT {
            assert_eq!(highest_of(index_of(v)), v);
        }
    }

    #[test]
    fn quantiles_of_uniform_values() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record_ns(v * 1000);
        }
        let p50 = h.quantile_ns(0.5) as f64;
        let p99 = h.quantile_ns(0.99) as f64;
        assert!((p50 - 5_000_000.0).abs() / 5_000_000.0 < 0.02, "{p50}");
        assert!((p99 - 9_900_000.0).abs() / 9_900_000.0 < 0.02, "{p99}");
        assert_eq!(h.quantile_ns(1.0), 10_000_000);
        assert_eq!(h.len(), 10_000);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert!(h.is_empty());
        assert_eq!(h.quantile_ns(0.99), 0);
        assert_eq!(h.mean_ns(), 0.0);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record_ns(10);
        b.record_ns(1_000_000);
        b.record_ns(20);
        a.merge(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.max_ns(), 1_000_000);
        assert_eq!(a.quantile_ns(0.0), 10);
    }

    #[test]
    fn single_value_quantiles_are_that_value() {
        let mut h = Histogram::new();
        h.record(Duration::from_micros(1234));
        assert_eq!(h.quantile_ns(0.5), 1_234_000);
        assert_eq!(h.quantile_ns(0.999), 1_234_000);
    }
}
