//! Durations counted in fine logarithmic buckets, so that counts from many
//! hours can be added up and still give percentiles within 1 %.
//!
//! Each 1-2-5 step of the histograms (`[1, 2)`, `[2, 5)`, `[5, 10)` times a
//! power of ten, in nanoseconds) is cut into [`SUB_BUCKETS`] buckets of equal
//! width on a log scale, so a bucket is at most 2.5^(1/64) ≈ 1.44 % wide and
//! its middle is within 0.72 % of any duration in it (DDSketch's idea, with
//! bucket edges that fall on the 1-2-5 histogram bounds, so a histogram built
//! from these buckets is exact).

use crate::stats::{LatencySummary, histogram_bounds, percentile};

/// Buckets per 1-2-5 step.
const SUB_BUCKETS: u16 = 64;
/// The 1-2-5 steps of one decade, as multiples of its power of ten.
const STEPS: [(f64, f64); 3] = [(1.0, 2.0), (2.0, 5.0), (5.0, 10.0)];
/// Buckets below the first histogram bound (1 µs = decade 3, step 0).
const STEPS_BELOW_FIRST_BOUND: u16 = 3 * 3;

/// The bucket of a duration; 0 holds durations of zero or less.
pub(crate) fn bucket_of(duration_ns: i64) -> u16 {
    if duration_ns <= 0 {
        return 0;
    }
    let mut decade = 0u16;
    let mut power = 1i64;
    while let Some(next) = power.checked_mul(10)
        && next <= duration_ns
    {
        power = next;
        decade += 1;
    }
    let step = if duration_ns < 2 * power {
        0
    } else if duration_ns < 5 * power {
        1
    } else {
        2
    };
    let (low, high) = STEPS[usize::from(step)];
    let ratio = duration_ns as f64 / (low * power as f64);
    let sub = ((ratio.ln() / (high / low).ln()) * f64::from(SUB_BUCKETS)) as u16;
    1 + (decade * 3 + step) * SUB_BUCKETS + sub.min(SUB_BUCKETS - 1)
}

/// The duration that stands for a bucket: the geometric middle of its edges.
pub(crate) fn bucket_value(bucket: u16) -> f64 {
    if bucket == 0 {
        return 0.0;
    }
    let steps = (bucket - 1) / SUB_BUCKETS;
    let sub = f64::from((bucket - 1) % SUB_BUCKETS);
    let (low, high) = STEPS[usize::from(steps % 3)];
    let base = low * 10f64.powi(i32::from(steps / 3));
    base * (high / low).powf((sub + 0.5) / f64::from(SUB_BUCKETS))
}

/// The bucket of [`histogram_bounds`] (0 below the first bound, `bounds.len()`
/// at or above the last) that holds every duration of a sketch bucket.
pub(crate) fn histogram_bin_of(bucket: u16, bins: usize) -> usize {
    if bucket == 0 {
        return 0;
    }
    let steps = (bucket - 1) / SUB_BUCKETS;
    usize::from((steps + 1).saturating_sub(STEPS_BELOW_FIRST_BOUND)).min(bins - 1)
}

/// Durations and errors of a set of requests or calls: exact values where
/// they were read from spans, bucket counts where they came from rollups.
/// Percentiles are exact (`percentile_cont`) while no rollup was added.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    exact: Vec<i64>,
    /// (bucket, count), sorted by bucket: rollup rows arrive in that order,
    /// so adding one is almost always a push.
    buckets: Vec<(u16, u64)>,
    rolled_up: u64,
    errors: u64,
}

impl Samples {
    pub(crate) fn add(&mut self, duration_ns: i64, error: bool) {
        self.exact.push(duration_ns);
        self.errors += u64::from(error);
    }

    pub(crate) fn add_rollup(&mut self, bucket: u16, count: u64, errors: u64) {
        match self.buckets.last_mut() {
            Some(last) if last.0 == bucket => last.1 += count,
            Some(last) if last.0 > bucket => {
                match self.buckets.binary_search_by_key(&bucket, |&(b, _)| b) {
                    Ok(i) => self.buckets[i].1 += count,
                    Err(i) => self.buckets.insert(i, (bucket, count)),
                }
            }
            _ => self.buckets.push((bucket, count)),
        }
        self.rolled_up += count;
        self.errors += errors;
    }

    pub(crate) fn merge(&mut self, other: &Samples) {
        self.exact.extend_from_slice(&other.exact);
        self.buckets = merge_sorted(&self.buckets, &other.buckets);
        self.rolled_up += other.rolled_up;
        self.errors += other.errors;
    }

    pub(crate) fn count(&self) -> u64 {
        self.exact.len() as u64 + self.rolled_up
    }

    pub(crate) fn summary(mut self) -> LatencySummary {
        let count = self.count();
        let errors = self.errors;
        let estimated = self.rolled_up > 0;
        let [p50_ns, p95_ns, p99_ns] = if self.rolled_up == 0 {
            self.exact.sort_unstable();
            [0.5, 0.95, 0.99].map(|p| percentile(&self.exact, p))
        } else {
            let mut exact: Vec<(u16, u64)> =
                self.exact.iter().map(|&d| (bucket_of(d), 1)).collect();
            exact.sort_unstable();
            self.buckets = merge_sorted(&self.buckets, &exact);
            [0.5, 0.95, 0.99].map(|p| self.bucket_percentile(p, count))
        };
        LatencySummary {
            count,
            errors,
            p50_ns,
            p95_ns,
            p99_ns,
            estimated,
        }
    }

    /// `percentile_cont` over the buckets' middles.
    fn bucket_percentile(&self, p: f64, count: u64) -> f64 {
        if count == 0 {
            return 0.0;
        }
        let rank = p * (count - 1) as f64;
        let (lower, upper) = (rank.floor() as u64, rank.ceil() as u64);
        let (mut a, mut b) = (None, None);
        let mut seen = 0;
        for &(bucket, n) in &self.buckets {
            seen += n;
            if a.is_none() && lower < seen {
                a = Some(bucket_value(bucket));
            }
            if upper < seen {
                b = Some(bucket_value(bucket));
                break;
            }
        }
        let (a, b) = (a.unwrap_or_default(), b.or(a).unwrap_or_default());
        a + (b - a) * (rank - lower as f64)
    }

    /// Counts per [`histogram_bounds`] bucket (`bounds.len() + 1` of them): exact,
    /// since sketch buckets never straddle a bound.
    pub(crate) fn histogram_counts(&self) -> Vec<u64> {
        let bounds = histogram_bounds();
        let mut counts = vec![0u64; bounds.len() + 1];
        for &duration in &self.exact {
            counts[bounds.partition_point(|&bound| bound <= duration)] += 1;
        }
        let bins = counts.len();
        for &(bucket, n) in &self.buckets {
            counts[histogram_bin_of(bucket, bins)] += n;
        }
        counts
    }
}

/// Two sorted (bucket, count) lists as one, counts of equal buckets added.
fn merge_sorted(a: &[(u16, u64)], b: &[(u16, u64)]) -> Vec<(u16, u64)> {
    let mut merged: Vec<(u16, u64)> = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => break,
        };
        if let Some(&(bucket, n)) = next {
            match merged.last_mut() {
                Some(last) if last.0 == bucket => last.1 += n,
                _ => merged.push((bucket, n)),
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_their_middles_are_within_one_percent() {
        let mut previous = 0;
        let mut duration = 1i64;
        while duration < 4_000_000_000_000 {
            let bucket = bucket_of(duration);
            assert!(bucket >= previous, "{duration} ns went back a bucket");
            previous = bucket;
            let error = (bucket_value(bucket) - duration as f64).abs() / duration as f64;
            // Below 64 ns a bucket is narrower than the integer step.
            if duration >= 64 {
                assert!(error < 0.0075, "{duration} ns: middle off by {error}");
            }
            duration += duration / 97 + 1;
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(-5), 0);
        assert!(bucket_of(i64::MAX) > bucket_of(4_000_000_000_000));
    }

    #[test]
    fn sketch_buckets_fall_inside_one_histogram_bucket() {
        let bounds = histogram_bounds();
        let bins = bounds.len() + 1;
        for duration in [0, 1, 999, 1_000, 1_999, 2_000, 4_999, 5_000, 9_999, 10_000]
            .into_iter()
            .chain(bounds.iter().flat_map(|&b| [b - 1, b, b + 1]))
            .chain([i64::MAX])
        {
            let expected = bounds.partition_point(|&bound| bound <= duration);
            assert_eq!(
                histogram_bin_of(bucket_of(duration), bins),
                expected,
                "{duration} ns"
            );
        }
    }

    #[test]
    fn rolled_up_percentiles_stay_within_one_percent_of_exact_ones() {
        let durations: Vec<i64> = (0..10_000i64)
            .map(|i| 1_000 + (i * i * 7919) % 250_000_000)
            .collect();
        let mut exact = Samples::default();
        let mut rolled = Samples::default();
        for (i, &d) in durations.iter().enumerate() {
            exact.add(d, i % 10 == 0);
            if i % 2 == 0 {
                rolled.add(d, i % 10 == 0);
            } else {
                rolled.add_rollup(bucket_of(d), 1, 0);
            }
        }
        assert_eq!(exact.histogram_counts(), rolled.histogram_counts());
        let (exact, rolled) = (exact.summary(), rolled.summary());
        assert_eq!((rolled.count, rolled.errors), (10_000, 1_000));
        for (a, b) in [
            (exact.p50_ns, rolled.p50_ns),
            (exact.p95_ns, rolled.p95_ns),
            (exact.p99_ns, rolled.p99_ns),
        ] {
            assert!((a - b).abs() / a < 0.01, "exact {a}, from buckets {b}");
        }
    }
}
