//! Incremental updates on one labelled example: SGD, AdaGrad and FTRL-Proximal.
//!
//! Every optimizer sees the per-coordinate gradient g_i = s·(σ(z) − y)·x_i of the log loss, where
//! s = example weight × class weight, optionally rescaled so ‖g‖₂ ≤ `gradient_clip`. The intercept
//! is updated like any coordinate but never regularized. Regularization is applied lazily to the
//! coordinates an example touches (the usual sparse-update convention).
//!
//! An update is computed into scratch space and committed only if every new value is finite; a
//! non-finite update is refused with [`UpdateError::NonFinite`] and the model is unchanged; so is
//! one that would move any weight by more than `max_change` ([`UpdateError::WeightChange`]).

use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, OptimizerKind, Schedule};
use crate::features::SparseVec;
use crate::model::{Model, sigmoid};

/// Why an update was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The update would have made a weight or optimizer state non-finite.
    #[error("update refused: it would make a weight non-finite")]
    NonFinite,
    /// The update would have moved a weight by more than the cap (`guard.max_weight_change`).
    #[error("update refused: it would move a weight by more than the cap")]
    WeightChange,
}

/// Result of one applied update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Probability under the weights before the update.
    pub p: f64,
}

/// Optimizer state: per-coordinate accumulators and the step counter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Optimizer {
    /// Which algorithm.
    pub kind: OptimizerKind,
    /// Updates applied.
    pub t: u64,
    /// AdaGrad: G = Σg²; FTRL: √n = √(Σg²). Empty for SGD.
    pub acc: Vec<f64>,
    /// FTRL: z. Empty otherwise.
    pub z: Vec<f64>,
    #[serde(skip)]
    scratch: Vec<(usize, f64, f64, f64)>,
}

/// Equality of the learned state (the scratch buffer is not state).
impl PartialEq for Optimizer {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && self.t == o.t && self.acc == o.acc && self.z == o.z
    }
}

impl Optimizer {
    /// Fresh state for a model of `dim` buckets (+ intercept).
    pub fn new(kind: OptimizerKind, dim: usize) -> Self {
        let n = dim + 1;
        let (acc, z) = match kind {
            OptimizerKind::Sgd => (Vec::new(), Vec::new()),
            OptimizerKind::Adagrad => (vec![0.0; n], Vec::new()),
            OptimizerKind::Ftrl => (vec![0.0; n], vec![0.0; n]),
        };
        Self {
            kind,
            t: 0,
            acc,
            z,
            scratch: Vec::new(),
        }
    }

    /// Applies one example (x, y) with weight `weight` to `model`, unless it would move a weight
    /// by more than `max_change` (0 = no cap).
    pub fn step(
        &mut self,
        cfg: &ModelConfig,
        model: &mut Model,
        x: &SparseVec,
        y: bool,
        weight: f64,
        max_change: f64,
    ) -> Result<Step, UpdateError> {
        let zm = model.margin(x);
        let p = sigmoid(zm);
        let class_w = if y {
            cfg.positive_weight
        } else {
            cfg.negative_weight
        };
        let mut r = weight * class_w * (p - if y { 1.0 } else { 0.0 });
        if cfg.gradient_clip > 0.0 {
            let norm = r.abs() * (x.norm_sq() + 1.0).sqrt();
            if norm > cfg.gradient_clip {
                r *= cfg.gradient_clip / norm;
            }
        }
        let bias = model.bias_index();
        let w = model.w.as_slice_mut().ok_or(UpdateError::NonFinite)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        // Each optimizer is one per-coordinate rule `(i, g, l1, l2) -> (w', acc', z')`, run over
        // the example's slots (regularized) and then the intercept (not regularized). The slots
        // are a plain loop over two slices with l1/l2 fixed, so the rule is inlined into a tight
        // loop; the arithmetic per coordinate is the same as written here, operation for
        // operation.
        fn each(
            x: &SparseVec,
            r: f64,
            bias: usize,
            (l1, l2): (f64, f64),
            scratch: &mut Vec<(usize, f64, f64, f64)>,
            mut rule: impl FnMut(usize, f64, f64, f64) -> (f64, f64, f64),
        ) {
            for (&i, &v) in x.idx.iter().zip(&x.val) {
                let i = i as usize;
                let (wi, acc, z) = rule(i, r * f64::from(v), l1, l2);
                scratch.push((i, wi, acc, z));
            }
            let (wi, acc, z) = rule(bias, r, 0.0, 0.0);
            scratch.push((bias, wi, acc, z));
        }
        match self.kind {
            OptimizerKind::Sgd => {
                let s = &cfg.sgd;
                let eta = match s.schedule {
                    Schedule::Constant => s.learning_rate,
                    Schedule::InverseScaling => {
                        s.learning_rate / ((1 + self.t) as f64).powf(s.power_t)
                    }
                };
                each(x, r, bias, (s.l1, s.l2), &mut scratch, |i, g, l1, l2| {
                    let wi = w[i] - eta * (g + l2 * w[i]);
                    (prox_l1(wi, eta * l1), 0.0, 0.0)
                });
            }
            OptimizerKind::Adagrad => {
                let a = &cfg.adagrad;
                let acc = &self.acc;
                each(x, r, bias, (a.l1, a.l2), &mut scratch, |i, g, l1, l2| {
                    let g = g + l2 * w[i];
                    let acc = acc[i] + g * g;
                    let eta = a.learning_rate / (acc.sqrt() + a.epsilon);
                    (prox_l1(w[i] - eta * g, eta * l1), acc, 0.0)
                });
            }
            OptimizerKind::Ftrl => {
                // `acc` holds √n rather than n, so each coordinate costs one square root and one
                // division: σ = (√n' − √n)/α and the closed-form weight.
                let f = &cfg.ftrl;
                let inv_alpha = 1.0 / f.alpha;
                let (acc, zs) = (&self.acc, &self.z);
                each(x, r, bias, (f.l1, f.l2), &mut scratch, |i, g, l1, l2| {
                    let sqrt_n = acc[i];
                    let sqrt_n_new = (sqrt_n * sqrt_n + g * g).sqrt();
                    let sigma = (sqrt_n_new - sqrt_n) * inv_alpha;
                    let z = zs[i] + g - sigma * w[i];
                    // Both sides computed, one selected: no branch to mispredict on hashed
                    // slots whose |z| hovers around l1.
                    let shrunk = (z.signum() * l1 - z) / ((f.beta + sqrt_n_new) * inv_alpha + l2);
                    let wi = if z.abs() <= l1 { 0.0 } else { shrunk };
                    (wi, sqrt_n_new, z)
                });
            }
        }
        let finite = scratch
            .iter()
            .all(|&(_, a, b, c)| a.is_finite() && b.is_finite() && c.is_finite());
        let capped = finite
            && max_change > 0.0
            && scratch
                .iter()
                .any(|&(i, wi, _, _)| (wi - w[i]).abs() > max_change);
        let outcome = if !finite {
            Err(UpdateError::NonFinite)
        } else if capped {
            Err(UpdateError::WeightChange)
        } else {
            Ok(Step { p })
        };
        if outcome.is_ok() {
            match self.kind {
                OptimizerKind::Sgd => {
                    for &(i, wi, _, _) in &scratch {
                        w[i] = wi;
                    }
                }
                OptimizerKind::Adagrad => {
                    for &(i, wi, acc, _) in &scratch {
                        w[i] = wi;
                        self.acc[i] = acc;
                    }
                }
                OptimizerKind::Ftrl => {
                    for &(i, wi, acc, z) in &scratch {
                        w[i] = wi;
                        self.acc[i] = acc;
                        self.z[i] = z;
                    }
                }
            }
            self.t += 1;
        }
        self.scratch = scratch;
        outcome
    }
}

/// Proximal step of the L1 norm: soft thresholding.
#[inline]
fn prox_l1(w: f64, t: f64) -> f64 {
    if t == 0.0 {
        w
    } else if w > t {
        w - t
    } else if w < -t {
        w + t
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FtrlConfig, SgdConfig};

    /// Deterministic pseudo-random numbers for the tests (splitmix64).
    struct Rng(u64);
    impl Rng {
        fn next_f64(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let u1 = self.next_f64().max(1e-300);
            let u2 = self.next_f64();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    /// A small dense data set: 4 features, a known logistic ground truth.
    fn data(n: usize) -> (Vec<SparseVec>, Vec<bool>) {
        let mut rng = Rng(7);
        let truth = [1.5, -2.0, 0.7, 0.0];
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..n {
            let v: Vec<f32> = (0..4).map(|_| rng.normal() as f32).collect();
            let z = -0.5
                + v.iter()
                    .zip(truth)
                    .map(|(a, b)| f64::from(*a) * b)
                    .sum::<f64>();
            ys.push(rng.next_f64() < sigmoid(z));
            xs.push(SparseVec {
                idx: vec![0, 1, 2, 3],
                val: v,
            });
        }
        (xs, ys)
    }

    /// Independent reference: Newton's method on
    ///   J(w, b) = (1/n) Σ ℓ(b + w·x_i, y_i) + (λ/2)‖w‖²   (intercept unregularized),
    /// the stationary point every optimizer below must reach. Dense 5×5 solve by Gaussian
    /// elimination with partial pivoting.
    #[allow(clippy::needless_range_loop)]
    fn newton(xs: &[SparseVec], ys: &[bool], lambda: f64) -> Vec<f64> {
        let d = 5;
        let mut w = vec![0.0; d];
        let feats = |x: &SparseVec| {
            let mut f: Vec<f64> = x.val.iter().map(|v| f64::from(*v)).collect();
            f.push(1.0);
            f
        };
        for _ in 0..50 {
            let mut g = vec![0.0; d];
            let mut h = vec![vec![0.0; d]; d];
            let n = xs.len() as f64;
            for (x, &y) in xs.iter().zip(ys) {
                let f = feats(x);
                let z: f64 = f.iter().zip(&w).map(|(a, b)| a * b).sum();
                let p = sigmoid(z);
                for a in 0..d {
                    g[a] += (p - f64::from(u8::from(y))) * f[a] / n;
                    for b in 0..d {
                        h[a][b] += p * (1.0 - p) * f[a] * f[b] / n;
                    }
                }
            }
            for a in 0..4 {
                g[a] += lambda * w[a];
                h[a][a] += lambda;
            }
            // Solve h·delta = g.
            let mut m: Vec<Vec<f64>> = h
                .iter()
                .zip(&g)
                .map(|(r, gi)| {
                    let mut r = r.clone();
                    r.push(*gi);
                    r
                })
                .collect();
            for c in 0..d {
                let piv = (c..d)
                    .max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))
                    .unwrap_or(c);
                m.swap(c, piv);
                for r in 0..d {
                    if r != c {
                        let f = m[r][c] / m[c][c];
                        for k in c..=d {
                            m[r][k] -= f * m[c][k];
                        }
                    }
                }
            }
            for a in 0..d {
                w[a] -= m[a][d] / m[a][a];
            }
        }
        w
    }

    fn train(cfg: &ModelConfig, xs: &[SparseVec], ys: &[bool], passes: usize) -> Model {
        let mut m = Model::new(4);
        let mut o = Optimizer::new(cfg.optimizer, 4);
        for _ in 0..passes {
            for (x, &y) in xs.iter().zip(ys) {
                o.step(cfg, &mut m, x, y, 1.0, 0.0).expect("finite");
            }
        }
        m
    }

    fn assert_close(m: &Model, reference: &[f64], what: &str) {
        for (i, r) in reference.iter().enumerate() {
            let got = m.w[if i < 4 { i } else { 4 }];
            assert!(
                (got - r).abs() < 1e-3,
                "{what}: coef {i}: {got} vs reference {r}"
            );
        }
    }

    const LAMBDA: f64 = 0.05;

    #[test]
    fn sgd_reaches_the_regularized_optimum() {
        let (xs, ys) = data(200);
        let reference = newton(&xs, &ys, LAMBDA);
        let cfg = ModelConfig {
            optimizer: OptimizerKind::Sgd,
            sgd: SgdConfig {
                learning_rate: 1.5,
                schedule: Schedule::InverseScaling,
                power_t: 0.75,
                l1: 0.0,
                l2: LAMBDA,
            },
            ..ModelConfig::default()
        };
        assert_close(&train(&cfg, &xs, &ys, 3000), &reference, "sgd");
    }

    #[test]
    fn adagrad_reaches_the_regularized_optimum() {
        let (xs, ys) = data(200);
        let reference = newton(&xs, &ys, LAMBDA);
        let mut cfg = ModelConfig {
            optimizer: OptimizerKind::Adagrad,
            ..ModelConfig::default()
        };
        cfg.adagrad.learning_rate = 0.05;
        cfg.adagrad.l2 = LAMBDA;
        cfg.adagrad.l1 = 0.0;
        assert_close(&train(&cfg, &xs, &ys, 3000), &reference, "adagrad");
    }

    #[test]
    fn ftrl_reaches_the_regularized_optimum() {
        // FTRL-Proximal's l2 regularizes the cumulative objective Σ_{t≤T} ℓ_t(w) + (l2/2)‖w‖²
        // (McMahan et al. 2013, eq. 2), so over T = passes·n steps its optimum is the Newton
        // solution with per-example strength λ = l2 / T. Its gradients are linearized at past
        // iterates, a bias that shrinks like 1/T: 10 000 passes bring it well under 1e-3.
        let (xs, ys) = data(200);
        let passes = 10_000;
        let l2 = 10.0;
        let reference = newton(&xs, &ys, l2 / (passes * xs.len()) as f64);
        let cfg = ModelConfig {
            optimizer: OptimizerKind::Ftrl,
            ftrl: FtrlConfig {
                alpha: 0.1,
                beta: 1.0,
                l1: 0.0,
                l2,
            },
            ..ModelConfig::default()
        };
        assert_close(&train(&cfg, &xs, &ys, passes), &reference, "ftrl");
    }

    #[test]
    fn l1_gives_exact_zeros() {
        // Feature 3 has no effect in the ground truth: a strong enough L1 zeroes it exactly.
        let (xs, ys) = data(200);
        let cfg = ModelConfig {
            optimizer: OptimizerKind::Ftrl,
            ftrl: FtrlConfig {
                alpha: 0.1,
                beta: 1.0,
                l1: 30.0,
                l2: 1.0,
            },
            ..ModelConfig::default()
        };
        let m = train(&cfg, &xs, &ys, 20);
        assert_eq!(m.w[3], 0.0);
        assert!(m.w[0] > 0.5 && m.w[1] < -0.5, "{:?}", m.w);
    }

    #[test]
    fn class_weights_scale_the_gradient() {
        // One SGD step from zero with constant rate: w_i = -eta * s * (0.5 - y) * x_i.
        let mut cfg = ModelConfig {
            optimizer: OptimizerKind::Sgd,
            positive_weight: 4.0,
            ..ModelConfig::default()
        };
        cfg.sgd = SgdConfig {
            learning_rate: 0.1,
            schedule: Schedule::Constant,
            power_t: 0.0,
            l1: 0.0,
            l2: 0.0,
        };
        let x = SparseVec {
            idx: vec![2],
            val: vec![2.0],
        };
        let mut m = Model::new(4);
        let mut o = Optimizer::new(OptimizerKind::Sgd, 4);
        o.step(&cfg, &mut m, &x, true, 0.5, 0.0).expect("finite");
        // s = 0.5 (example) * 4 (class): w = -0.1 * 2 * (-0.5) * 2 = 0.2; bias = 0.1.
        assert!(
            (m.w[2] - 0.2).abs() < 1e-15 && (m.bias() - 0.1).abs() < 1e-15,
            "{:?}",
            m.w
        );
        // Gradient clipping to norm 0.1: |r|·sqrt(|x|²+1) = 1·sqrt(5) → scaled to 0.1.
        cfg.positive_weight = 1.0;
        cfg.gradient_clip = 0.1;
        let mut m = Model::new(4);
        o.step(&cfg, &mut m, &x, true, 2.0, 0.0).expect("finite");
        let g_norm = (m.w[2].powi(2) + m.bias().powi(2)).sqrt() / 0.1;
        assert!((g_norm - 0.1).abs() < 1e-12, "{g_norm}");
    }

    #[test]
    fn non_finite_updates_are_refused() {
        let mut cfg = ModelConfig {
            optimizer: OptimizerKind::Sgd,
            ..ModelConfig::default()
        };
        cfg.sgd.schedule = Schedule::Constant;
        cfg.sgd.learning_rate = 1e300;
        let mut m = Model::new(4);
        let mut o = Optimizer::new(OptimizerKind::Sgd, 4);
        let x = SparseVec {
            idx: vec![0],
            val: vec![f32::MAX],
        };
        let before = m.clone();
        assert_eq!(
            o.step(&cfg, &mut m, &x, true, 1e300, 0.0),
            Err(UpdateError::NonFinite)
        );
        assert_eq!(m, before);
        assert_eq!(o.t, 0);
    }

    #[test]
    fn an_update_moving_a_weight_past_the_cap_is_refused_whole() {
        let x = SparseVec {
            idx: vec![1, 3],
            val: vec![1.0, 20.0],
        };
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Adagrad,
            OptimizerKind::Ftrl,
        ] {
            let mut cfg = ModelConfig {
                optimizer: kind,
                ..ModelConfig::default()
            };
            cfg.ftrl.l1 = 0.0;
            // The uncapped step: how far each weight moves.
            let (mut free, mut o) = (Model::new(4), Optimizer::new(kind, 4));
            o.step(&cfg, &mut free, &x, true, 1.0, 0.0).expect("finite");
            let moved = (0..5).map(|i| free.w[i].abs()).fold(0.0f64, f64::max);
            assert!(moved > 0.0, "{kind:?}");
            // A cap below the largest move refuses the update and leaves everything as it was.
            let (mut m, mut o) = (Model::new(4), Optimizer::new(kind, 4));
            let (m0, o0) = (m.clone(), o.clone());
            assert_eq!(
                o.step(&cfg, &mut m, &x, true, 1.0, moved * 0.99),
                Err(UpdateError::WeightChange),
                "{kind:?}"
            );
            assert_eq!((m, o), (m0, o0));
            // A cap at the largest move lets it through, identical to the uncapped step.
            let (mut m, mut o) = (Model::new(4), Optimizer::new(kind, 4));
            o.step(&cfg, &mut m, &x, true, 1.0, moved)
                .expect("within the cap");
            assert_eq!(m, free, "{kind:?}");
        }
    }
}
