//! Logistic regression: p(y=1 | x) = σ(b + Σ w_i x_i) over hashed sparse features.
//!
//! Loss for a label y ∈ {0,1} and margin z = b + w·x (natural log):
//!   ℓ(z, y) = log(1 + e^{-z}) if y = 1, log(1 + e^{z}) if y = 0,
//! and its gradient with respect to w_i is (σ(z) − y)·x_i. Both are computed from the margin
//! with sign branches so that no |z| overflows to inf or NaN.

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::features::SparseVec;
use crate::math;

/// σ(z) = 1 / (1 + e^{−z}), evaluated without overflow for any finite z.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + math::exp(-z))
    } else {
        let e = math::exp(z);
        e / (1.0 + e)
    }
}

/// log(1 + e^z) without overflow.
#[inline]
pub fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + math::ln_1p(math::exp(-z))
    } else {
        math::ln_1p(math::exp(z))
    }
}

/// Log loss of margin `z` for label `y`, finite for every finite z.
#[inline]
pub fn log_loss_margin(z: f64, y: bool) -> f64 {
    if y { softplus(-z) } else { softplus(z) }
}

/// Smallest probability distance from 0 or 1 used when scoring a probability (1e-15, as in
/// scikit-learn's `log_loss` before 1.5), so the loss of p = 0 or p = 1 is finite (≈ 34.5).
pub const PROB_EPS: f64 = 1e-15;

/// Log loss of a probability `p` for label `y`, with p clipped to [1e-15, 1 − 1e-15].
#[inline]
pub fn log_loss_prob(p: f64, y: bool) -> f64 {
    let p = p.clamp(PROB_EPS, 1.0 - PROB_EPS);
    if y { -math::ln(p) } else { -math::ln(1.0 - p) }
}

/// Weights of a logistic regression over `dim` hashed buckets plus an intercept (stored last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// `dim` bucket weights followed by the intercept.
    pub w: Array1<f64>,
}

impl Model {
    /// A zero model over `dim` buckets.
    pub fn new(dim: usize) -> Self {
        Self {
            w: Array1::zeros(dim + 1),
        }
    }

    /// Number of buckets (without the intercept).
    pub fn dim(&self) -> usize {
        self.w.len() - 1
    }

    /// Index of the intercept weight.
    pub fn bias_index(&self) -> usize {
        self.w.len() - 1
    }

    /// The intercept.
    pub fn bias(&self) -> f64 {
        self.w[self.bias_index()]
    }

    /// Margin z = b + Σ w_i x_i.
    #[inline]
    pub fn margin(&self, x: &SparseVec) -> f64 {
        let w = self.w.as_slice().unwrap_or(&[]);
        let mut z = w.last().copied().unwrap_or(0.0);
        for (i, v) in x.iter() {
            z += w.get(i as usize).copied().unwrap_or(0.0) * f64::from(v);
        }
        z
    }

    /// Probability of the positive class.
    #[inline]
    pub fn score(&self, x: &SparseVec) -> f64 {
        sigmoid(self.margin(x))
    }

    /// The `k` slots with the largest |w_i·x_i|, as (slot position, contribution), largest first;
    /// ties keep slot order.
    pub fn top_contributions(&self, x: &SparseVec, k: usize, out: &mut Vec<(usize, f64)>) {
        out.clear();
        if k == 0 {
            return;
        }
        for (pos, (i, v)) in x.iter().enumerate() {
            let c = self.w[i as usize] * f64::from(v);
            if c == 0.0 {
                continue;
            }
            let at = out
                .iter()
                .position(|&(_, o)| c.abs() > o.abs())
                .unwrap_or(out.len());
            if at < k {
                out.insert(at, (pos, c));
                out.truncate(k);
            }
        }
    }

    /// Euclidean norm of the bucket weights (without the intercept).
    pub fn weight_norm(&self) -> f64 {
        let n = self.dim();
        self.w.iter().take(n).map(|w| w * w).sum::<f64>().sqrt()
    }

    /// Number of non-zero bucket weights.
    pub fn nonzero(&self) -> usize {
        let n = self.dim();
        self.w.iter().take(n).filter(|w| **w != 0.0).count()
    }

    /// True when every weight is finite.
    pub fn is_finite(&self) -> bool {
        self.w.iter().all(|w| w.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        for z in [-1e308, -745.0, -40.0, -1.0, 0.0, 1.0, 40.0, 745.0, 1e308] {
            let p = sigmoid(z);
            assert!((0.0..=1.0).contains(&p), "{z} -> {p}");
            assert!((sigmoid(-z) - (1.0 - p)).abs() < 1e-15, "{z}");
        }
        assert_eq!(sigmoid(0.0), 0.5);
        // Closed form at z = 2: 1 / (1 + e^-2).
        assert!((sigmoid(2.0) - 0.880_797_077_977_882_3).abs() < 1e-15);
    }

    #[test]
    fn log_loss_is_finite_everywhere() {
        for z in [-1e308, -1000.0, -1.0, 0.0, 1.0, 1000.0, 1e308] {
            for y in [false, true] {
                let l = log_loss_margin(z, y);
                assert!(l.is_finite() && l >= 0.0, "{z} {y} -> {l}");
            }
        }
        assert!((log_loss_margin(0.0, true) - std::f64::consts::LN_2).abs() < 1e-15);
        // Large margins: loss ≈ |z| on the wrong side.
        assert!((log_loss_margin(1000.0, false) - 1000.0).abs() < 1e-9);
        assert_eq!(
            log_loss_prob(0.0, false),
            0.0f64.max(-(1.0 - PROB_EPS).ln())
        );
        let at_zero = log_loss_prob(0.0, true);
        assert!(at_zero.is_finite() && (at_zero - (-(1e-15f64).ln())).abs() < 1e-9);
        assert!(log_loss_prob(1.0, false).is_finite());
    }

    #[test]
    fn contributions_are_the_largest_by_magnitude() {
        let mut m = Model::new(8);
        m.w[1] = 0.5;
        m.w[2] = -3.0;
        m.w[3] = 1.0;
        let x = SparseVec {
            idx: vec![1, 2, 3, 4],
            val: vec![4.0, 1.0, 1.0, 9.0],
        };
        let mut out = Vec::new();
        m.top_contributions(&x, 2, &mut out);
        assert_eq!(out, vec![(1, -3.0), (0, 2.0)]);
        m.top_contributions(&x, 0, &mut out);
        assert!(out.is_empty());
    }
}
