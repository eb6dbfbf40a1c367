//! Median / min / max of repeated runs, and percentiles of latency samples.
//!
//! Why the median and not the mean: the machine is bimodal (throughput flips between two
//! levels for seconds), so a mean lands between the modes where no run ever was; the
//! median is a value some run actually saw, and min/max show the spread honestly.

use serde::{Deserialize, Serialize};

/// Summary of the runs of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// None when there are no (finite) values.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Summary {
            median: percentile_sorted(&v, 50.0),
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        })
    }
}

/// The p-th percentile (0..=100) of sorted values, linear interpolation between ranks.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// Ratio of two medians, when both exist and the denominator is not zero.
pub fn ratio(num: Option<Summary>, den: Option<Summary>) -> Option<f64> {
    let (n, d) = (num?, den?);
    (d.median > 0.0).then(|| n.median / d.median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn non_finite_values_are_ignored() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
        assert_eq!(Summary::of(&[f64::NAN, 5.0]).unwrap().median, 5.0);
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile_sorted(&v, 50.0) - 50.5).abs() < 1e-9);
        assert!((percentile_sorted(&v, 99.0) - 99.01).abs() < 1e-9);
        assert_eq!(percentile_sorted(&v, 0.0), 1.0);
        assert_eq!(percentile_sorted(&v, 100.0), 100.0);
    }

    #[test]
    fn ratios() {
        let a = Summary::of(&[2.0]);
        let b = Summary::of(&[4.0]);
        assert_eq!(ratio(a, b), Some(0.5));
        assert_eq!(ratio(a, Summary::of(&[0.0])), None);
        assert_eq!(ratio(None, b), None);
    }
}
