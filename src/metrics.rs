//! Progressive (prequential) quality metrics: each label is scored against the prediction that
//! was emitted for its event, before the model learned from it.
//!
//! Memory is constant. Everything except the sliding-window AUC is a sum over examples, so
//! [`Quality::minus`] gives the metrics of any suffix of the stream (replay uses it for the last
//! 20 %).
//!
//! AUC is reported two ways:
//! - **window** — exact over the last `auc_window` examples (rank-sum with average ranks for ties,
//!   the Mann–Whitney U statistic), computed when asked;
//! - **all time** — from two score histograms of 4096 bins equally spaced in log-odds over
//!   [−12, 12] (scores beyond are in the end bins). Pairs in different bins are counted exactly;
//!   pairs that share a bin count ½, so the error is at most half the fraction of
//!   positive–negative pairs that share a bin (each bin is 0.006 wide in log-odds).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::log_loss_prob;

const AUC_BINS: usize = 4096;
const LOGIT_RANGE: f64 = 12.0;

/// Additive quality counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Labelled examples.
    pub n: u64,
    /// Positives among them.
    pub positives: u64,
    /// Σ log loss.
    pub log_loss_sum: f64,
    /// Σ (p − y)².
    pub brier_sum: f64,
    /// Σ p.
    pub p_sum: f64,
    /// Decision threshold for the confusion counts.
    pub threshold: f64,
    /// True positives at the threshold.
    pub tp: u64,
    /// False positives at the threshold.
    pub fp: u64,
    /// True negatives at the threshold.
    pub tn: u64,
    /// False negatives at the threshold.
    pub fn_: u64,
    /// Calibration bins: count, Σp, Σy per equal-width bin of p.
    pub cal_n: Vec<u64>,
    /// Σp per calibration bin.
    pub cal_p: Vec<f64>,
    /// Σy per calibration bin.
    pub cal_y: Vec<u64>,
    /// Score histogram of positives (log-odds bins) for the all-time AUC.
    pub hist_pos: Vec<u64>,
    /// Score histogram of negatives.
    pub hist_neg: Vec<u64>,
}

impl Quality {
    /// Empty counters.
    pub fn new(threshold: f64, calibration_bins: usize) -> Self {
        Self {
            n: 0,
            positives: 0,
            log_loss_sum: 0.0,
            brier_sum: 0.0,
            p_sum: 0.0,
            threshold,
            tp: 0,
            fp: 0,
            tn: 0,
            fn_: 0,
            cal_n: vec![0; calibration_bins],
            cal_p: vec![0.0; calibration_bins],
            cal_y: vec![0; calibration_bins],
            hist_pos: vec![0; AUC_BINS],
            hist_neg: vec![0; AUC_BINS],
        }
    }

    /// Adds one (prediction, label) pair.
    pub fn add(&mut self, p: f64, y: bool) {
        let p = if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let yf = if y { 1.0 } else { 0.0 };
        self.n += 1;
        self.positives += u64::from(y);
        self.log_loss_sum += log_loss_prob(p, y);
        self.brier_sum += (p - yf) * (p - yf);
        self.p_sum += p;
        match (p >= self.threshold, y) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
        let bins = self.cal_n.len();
        let b = ((p * bins as f64) as usize).min(bins - 1);
        self.cal_n[b] += 1;
        self.cal_p[b] += p;
        self.cal_y[b] += u64::from(y);
        let h = auc_bin(p);
        if y {
            self.hist_pos[h] += 1
        } else {
            self.hist_neg[h] += 1
        }
    }

    /// The counters of the examples added after `earlier` was taken (same configuration).
    pub fn minus(&self, earlier: &Quality) -> Quality {
        let sub = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>();
        Quality {
            n: self.n - earlier.n,
            positives: self.positives - earlier.positives,
            log_loss_sum: self.log_loss_sum - earlier.log_loss_sum,
            brier_sum: self.brier_sum - earlier.brier_sum,
            p_sum: self.p_sum - earlier.p_sum,
            threshold: self.threshold,
            tp: self.tp - earlier.tp,
            fp: self.fp - earlier.fp,
            tn: self.tn - earlier.tn,
            fn_: self.fn_ - earlier.fn_,
            cal_n: sub(&self.cal_n, &earlier.cal_n),
            cal_p: self
                .cal_p
                .iter()
                .zip(&earlier.cal_p)
                .map(|(a, b)| a - b)
                .collect(),
            cal_y: sub(&self.cal_y, &earlier.cal_y),
            hist_pos: sub(&self.hist_pos, &earlier.hist_pos),
            hist_neg: sub(&self.hist_neg, &earlier.hist_neg),
        }
    }

    /// Mean log loss.
    pub fn log_loss(&self) -> f64 {
        ratio(self.log_loss_sum, self.n as f64)
    }

    /// Mean squared error of the probability (Brier score).
    pub fn brier(&self) -> f64 {
        ratio(self.brier_sum, self.n as f64)
    }

    /// Expected calibration error: Σ_b (n_b / n) · |mean p_b − mean y_b| over equal-width bins.
    pub fn ece(&self) -> f64 {
        let n = self.n as f64;
        let mut e = 0.0;
        for b in 0..self.cal_n.len() {
            let nb = self.cal_n[b] as f64;
            if nb > 0.0 {
                e += nb / n * (self.cal_p[b] / nb - self.cal_y[b] as f64 / nb).abs();
            }
        }
        if self.n == 0 { f64::NAN } else { e }
    }

    /// Reliability diagram: per bin (mean predicted, observed rate, count).
    pub fn reliability(&self) -> Vec<(f64, f64, u64)> {
        (0..self.cal_n.len())
            .map(|b| {
                let nb = self.cal_n[b] as f64;
                (
                    ratio(self.cal_p[b], nb),
                    ratio(self.cal_y[b] as f64, nb),
                    self.cal_n[b],
                )
            })
            .collect()
    }

    /// All-time AUC from the log-odds histograms (see the module docs for the error bound).
    pub fn auc_binned(&self) -> f64 {
        let (mut pairs, mut neg_below) = (0.0, 0.0);
        for b in 0..AUC_BINS {
            let (p, n) = (self.hist_pos[b] as f64, self.hist_neg[b] as f64);
            pairs += p * neg_below + 0.5 * p * n;
            neg_below += n;
        }
        let total = self.positives as f64 * (self.n - self.positives) as f64;
        ratio(pairs, total)
    }

    /// Precision at the threshold.
    pub fn precision(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fp) as f64)
    }

    /// Recall (true-positive rate) at the threshold.
    pub fn recall(&self) -> f64 {
        ratio(self.tp as f64, (self.tp + self.fn_) as f64)
    }

    /// False-positive rate at the threshold.
    pub fn fpr(&self) -> f64 {
        ratio(self.fp as f64, (self.fp + self.tn) as f64)
    }

    /// Mean predicted probability.
    pub fn predicted_rate(&self) -> f64 {
        ratio(self.p_sum, self.n as f64)
    }

    /// Observed positive rate.
    pub fn observed_rate(&self) -> f64 {
        ratio(self.positives as f64, self.n as f64)
    }

    /// A JSON-friendly summary.
    pub fn summary(&self) -> QualitySummary {
        QualitySummary {
            n: self.n,
            positives: self.positives,
            log_loss: self.log_loss(),
            auc: self.auc_binned(),
            ece: self.ece(),
            brier: self.brier(),
            precision: self.precision(),
            recall: self.recall(),
            fpr: self.fpr(),
            predicted_rate: self.predicted_rate(),
            observed_rate: self.observed_rate(),
        }
    }
}

/// Headline quality numbers (NaN where undefined, e.g. AUC with one class).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualitySummary {
    /// Examples.
    pub n: u64,
    /// Positives.
    pub positives: u64,
    /// Mean log loss.
    pub log_loss: f64,
    /// AUC (binned, all examples).
    pub auc: f64,
    /// Expected calibration error.
    pub ece: f64,
    /// Brier score.
    pub brier: f64,
    /// Precision at the threshold.
    pub precision: f64,
    /// Recall at the threshold.
    pub recall: f64,
    /// False-positive rate at the threshold.
    pub fpr: f64,
    /// Mean predicted probability.
    pub predicted_rate: f64,
    /// Observed positive rate.
    pub observed_rate: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn auc_bin(p: f64) -> usize {
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let logit = crate::math::ln(p / (1.0 - p)).clamp(-LOGIT_RANGE, LOGIT_RANGE);
    let b = ((logit + LOGIT_RANGE) / (2.0 * LOGIT_RANGE) * AUC_BINS as f64) as usize;
    b.min(AUC_BINS - 1)
}

/// Exact AUC over the most recent examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowAuc {
    cap: usize,
    buf: VecDeque<(f64, bool)>,
}

impl WindowAuc {
    /// A window of `cap` examples.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            buf: VecDeque::with_capacity(cap),
        }
    }

    /// Adds one example, evicting the oldest when full.
    pub fn add(&mut self, p: f64, y: bool) {
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back((p, y));
    }

    /// Exact AUC of the window (NaN with one class).
    pub fn auc(&self) -> f64 {
        auc_exact(self.buf.iter().copied())
    }

    /// Examples in the window.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Exact AUC by the rank-sum (Mann–Whitney) formula with average ranks for ties.
pub fn auc_exact(items: impl Iterator<Item = (f64, bool)>) -> f64 {
    let mut v: Vec<(f64, bool)> = items.collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut pos) = (0.0, 0u64);
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // ranks i+1 ..= j
        for item in &v[i..j] {
            if item.1 {
                rank_sum += avg_rank;
                pos += 1;
            }
        }
        i = j;
    }
    let neg = v.len() as u64 - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    let (p, n) = (pos as f64, neg as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// Progressive metrics: the additive counters plus the exact window AUC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progressive {
    /// All-time counters.
    pub total: Quality,
    /// Sliding window for the exact AUC.
    pub window: WindowAuc,
}

impl Progressive {
    /// New metrics.
    pub fn new(threshold: f64, calibration_bins: usize, auc_window: usize) -> Self {
        Self {
            total: Quality::new(threshold, calibration_bins),
            window: WindowAuc::new(auc_window),
        }
    }

    /// Records the prediction `p` that was emitted for an example whose label is `y`.
    pub fn add(&mut self, p: f64, y: bool) {
        self.total.add(p, y);
        self.window.add(p, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute_auc(v: &[(f64, bool)]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for a in v.iter().filter(|x| x.1) {
            for b in v.iter().filter(|x| !x.1) {
                den += 1.0;
                num += if a.0 > b.0 {
                    1.0
                } else if a.0 == b.0 {
                    0.5
                } else {
                    0.0
                };
            }
        }
        if den == 0.0 { f64::NAN } else { num / den }
    }

    proptest! {
        #[test]
        fn exact_auc_equals_pairwise_count(v in prop::collection::vec((0u8..20, any::<bool>()), 0..200)) {
            // Coarse scores make ties common.
            let v: Vec<(f64, bool)> = v.into_iter().map(|(s, y)| (f64::from(s) / 20.0, y)).collect();
            let (a, b) = (auc_exact(v.iter().copied()), brute_auc(&v));
            prop_assert!((a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12, "{} vs {}", a, b);
        }

        #[test]
        fn window_auc_is_exact_over_the_window(v in prop::collection::vec((0.0f64..1.0, any::<bool>()), 1..300), cap in 2usize..100) {
            let mut w = WindowAuc::new(cap);
            for &(p, y) in &v { w.add(p, y); }
            let tail = &v[v.len().saturating_sub(cap)..];
            let (a, b) = (w.auc(), brute_auc(tail));
            prop_assert!((a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12);
        }

        #[test]
        fn binned_auc_equals_pairwise_when_scores_are_in_distinct_bins(v in prop::collection::vec((0usize..AUC_BINS, any::<bool>()), 2..200)) {
            // Put each score at the centre of a log-odds bin: the binned AUC is then exact.
            let v: Vec<(f64, bool)> = v.into_iter().map(|(b, y)| {
                let logit = (b as f64 + 0.5) / AUC_BINS as f64 * 2.0 * LOGIT_RANGE - LOGIT_RANGE;
                (1.0 / (1.0 + (-logit).exp()), y)
            }).collect();
            let mut q = Quality::new(0.5, 10);
            for &(p, y) in &v { q.add(p, y); }
            let (a, b) = (q.auc_binned(), brute_auc(&v));
            prop_assert!((a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12, "{} vs {}", a, b);
        }
    }

    #[test]
    fn ece_log_loss_brier_equal_direct_computation() {
        let v = [
            (0.05, false),
            (0.15, true),
            (0.12, false),
            (0.55, true),
            (0.58, false),
            (0.95, true),
            (1.0, true),
            (0.0, false),
        ];
        let mut q = Quality::new(0.5, 10);
        for &(p, y) in &v {
            q.add(p, y);
        }
        let n = v.len() as f64;
        // Direct: bins [0,.1): {0.05 n, 0.0 n}; [.1,.2): {0.15 y, 0.12 n}; [.5,.6): {0.55 y, 0.58 n};
        // [.9,1]: {0.95 y, 1.0 y}.
        let ece = (2.0 / n) * ((0.05 + 0.0) / 2.0 - 0.0f64).abs()
            + (2.0 / n) * ((0.15 + 0.12) / 2.0 - 0.5f64).abs()
            + (2.0 / n) * ((0.55 + 0.58) / 2.0 - 0.5f64).abs()
            + (2.0 / n) * ((0.95 + 1.0) / 2.0 - 1.0f64).abs();
        assert!((q.ece() - ece).abs() < 1e-12, "{} vs {ece}", q.ece());
        let ll: f64 = v
            .iter()
            .map(|&(p, y)| {
                let p = f64::clamp(p, 1e-15, 1.0 - 1e-15);
                if y { -p.ln() } else { -(1.0 - p).ln() }
            })
            .sum::<f64>()
            / n;
        assert!((q.log_loss() - ll).abs() < 1e-12);
        assert!(q.log_loss().is_finite());
        let brier: f64 = v
            .iter()
            .map(|&(p, y)| (p - f64::from(u8::from(y))).powi(2))
            .sum::<f64>()
            / n;
        assert!((q.brier() - brier).abs() < 1e-12);
        assert_eq!((q.tp, q.fp, q.tn, q.fn_), (3, 1, 3, 1));
        assert_eq!(q.precision(), 0.75);
        assert_eq!(q.recall(), 0.75);
        assert_eq!(q.fpr(), 0.25);
    }

    #[test]
    fn minus_gives_the_suffix() {
        let mut q = Quality::new(0.5, 10);
        let mut suffix = Quality::new(0.5, 10);
        for i in 0..100 {
            let p = f64::from(i) / 100.0;
            let y = i % 3 == 0;
            q.add(p, y);
        }
        let snap = q.clone();
        for i in 0..50 {
            let p = f64::from(i) / 50.0;
            let y = i % 2 == 0;
            q.add(p, y);
            suffix.add(p, y);
        }
        let d = q.minus(&snap);
        assert_eq!(d.n, suffix.n);
        assert_eq!(d.hist_pos, suffix.hist_pos);
        assert_eq!(d.cal_n, suffix.cal_n);
        assert!((d.log_loss() - suffix.log_loss()).abs() < 1e-9);
    }
}
