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
    scratch: Scratch,
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
            scratch: Scratch::default(),
        }
    }

    /// Applies one example (x, y) with weight `weight` to `model`, unless it would move a weight
    /// by more than `max_change` (0 = no cap).
    ///
    /// Three passes over the example's slots and then the intercept: gather the state each
    /// touches into contiguous scratch arrays (the margin is summed on the way, in slot order as
    /// [`Model::margin`] does), compute the new state there as plain loops over equal-length
    /// slices (vectorized: the square roots and divisions run two at a time), then check it and
    /// scatter it back. A bucket that appears twice in one example reads the old state both times
    /// and the later slot's result is the one kept.
    pub fn step(
        &mut self,
        cfg: &ModelConfig,
        model: &mut Model,
        x: &SparseVec,
        y: bool,
        weight: f64,
        max_change: f64,
    ) -> Result<Step, UpdateError> {
        let bias = model.bias_index();
        let w = model.w.as_slice_mut().ok_or(UpdateError::NonFinite)?;
        let s = &mut self.scratch;
        // Gather: slots first, the intercept last. The vectors are sized up front so the loop
        // stores into slices and the margin's sum stays in a register (summed in slot order, as
        // `Model::margin` does, so the two agree bit for bit).
        let m = x.idx.len().min(x.val.len());
        s.resize(m + 1);
        // The state each optimizer keeps per coordinate, gathered into `s.acc` / `s.z` first:
        // these loads do not wait on the margin, so their cache misses overlap the weights'.
        let gather = |from: &[f64], to: &mut Vec<f64>| {
            to.extend(x.idx[..m].iter().map(|&i| from[i as usize]));
            to.push(from[bias]);
        };
        match self.kind {
            OptimizerKind::Sgd => {}
            OptimizerKind::Adagrad => gather(&self.acc, &mut s.acc),
            OptimizerKind::Ftrl => {
                gather(&self.acc, &mut s.acc);
                gather(&self.z, &mut s.z);
            }
        }
        let mut zm = w[bias];
        let slots = s.idx.iter_mut().zip(s.g.iter_mut()).zip(s.w_old.iter_mut());
        for (((si, sg), sw), (&i, &v)) in slots.zip(x.idx.iter().zip(&x.val)) {
            let (i, v) = (i as usize, f64::from(v));
            let wi = w[i];
            zm += wi * v;
            (*si, *sg, *sw) = (i, v, wi);
        }
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
        // g_i = r·x_i for the slots; the intercept's x is 1, so its g is r.
        for g in &mut s.g[..m] {
            *g *= r;
        }
        (s.idx[m], s.g[m], s.w_old[m]) = (bias, r, w[bias]);
        // Each optimizer is one per-coordinate rule, run over the example's slots with their
        // l1/l2 and then over the intercept (last) with none.
        match self.kind {
            OptimizerKind::Sgd => {
                let c = &cfg.sgd;
                let eta = match c.schedule {
                    Schedule::Constant => c.learning_rate,
                    Schedule::InverseScaling => {
                        c.learning_rate / crate::math::powf((1 + self.t) as f64, c.power_t)
                    }
                };
                let (w, w_b) = s.w.split_at_mut(m);
                let (w0, w0_b) = s.w_old.split_at(m);
                let (g, g_b) = s.g.split_at(m);
                sgd(eta, (c.l1, c.l2), g, w0, w);
                sgd(eta, (0.0, 0.0), g_b, w0_b, w_b);
            }
            OptimizerKind::Adagrad => {
                let a = &cfg.adagrad;
                let (w, w_b) = s.w.split_at_mut(m);
                let (w0, w0_b) = s.w_old.split_at(m);
                let (acc, acc_b) = s.acc.split_at_mut(m);
                let (g, g_b) = s.g.split_at(m);
                let rule =
                    |reg, g, w0, w, acc| adagrad(a.learning_rate, a.epsilon, reg, g, w0, w, acc);
                rule((a.l1, a.l2), g, w0, w, acc);
                rule((0.0, 0.0), g_b, w0_b, w_b, acc_b);
            }
            OptimizerKind::Ftrl => {
                let f = &cfg.ftrl;
                let (w, w_b) = s.w.split_at_mut(m);
                let (w0, w0_b) = s.w_old.split_at(m);
                let (acc, acc_b) = s.acc.split_at_mut(m);
                let (z, z_b) = s.z.split_at_mut(m);
                let (g, g_b) = s.g.split_at(m);
                let state = |w_old, w, acc, z| FtrlSlots { w_old, w, acc, z };
                ftrl(f.alpha, f.beta, (f.l1, f.l2), g, state(w0, w, acc, z));
                ftrl(
                    f.alpha,
                    f.beta,
                    (0.0, 0.0),
                    g_b,
                    state(w0_b, w_b, acc_b, z_b),
                );
            }
        }
        let finite = all_finite(&s.w) & all_finite(&s.acc) & all_finite(&s.z);
        let capped = finite
            && max_change > 0.0
            && s.w
                .iter()
                .zip(&s.w_old)
                .any(|(new, old)| (new - old).abs() > max_change);
        let outcome = if !finite {
            Err(UpdateError::NonFinite)
        } else if capped {
            Err(UpdateError::WeightChange)
        } else {
            Ok(Step { p })
        };
        if outcome.is_ok() {
            // One loop per optimizer writing every array it keeps, over slices bound first (so
            // the stores need not reload the vectors' pointers).
            match self.kind {
                OptimizerKind::Sgd => scatter(&s.idx, &s.w, w),
                OptimizerKind::Adagrad => {
                    let acc = &mut self.acc[..];
                    for (&i, (&wi, &ai)) in s.idx.iter().zip(s.w.iter().zip(&s.acc)) {
                        (w[i], acc[i]) = (wi, ai);
                    }
                }
                OptimizerKind::Ftrl => {
                    let (acc, z) = (&mut self.acc[..], &mut self.z[..]);
                    let new = s.w.iter().zip(&s.acc).zip(&s.z);
                    for (&i, ((&wi, &ai), &zi)) in s.idx.iter().zip(new) {
                        (w[i], acc[i], z[i]) = (wi, ai, zi);
                    }
                }
            }
            self.t += 1;
        }
        outcome
    }
}

/// One update's gathered coordinates: bucket, gradient, weight before and after, and the
/// optimizer's accumulators (after, once computed; empty where the optimizer keeps none).
#[derive(Debug, Clone, Default)]
struct Scratch {
    idx: Vec<usize>,
    g: Vec<f64>,
    w_old: Vec<f64>,
    w: Vec<f64>,
    acc: Vec<f64>,
    z: Vec<f64>,
}

impl Scratch {
    /// `n` coordinates of index, gradient and weights; no optimizer state (gathered per kind).
    fn resize(&mut self, n: usize) {
        self.idx.resize(n, 0);
        for v in [&mut self.g, &mut self.w_old, &mut self.w] {
            v.resize(n, 0.0);
        }
        self.acc.clear();
        self.z.clear();
    }
}

/// True when no value is infinite or NaN. Every value is checked (no early exit), so the loop
/// runs as vector compares and the common case, all finite, costs a few instructions per four
/// values instead of a branch per value.
fn all_finite(vals: &[f64]) -> bool {
    vals.iter()
        .fold(0u32, |bad, v| bad | u32::from(!v.is_finite()))
        == 0
}

/// Writes `vals[k]` to `to[idx[k]]` in order (a later duplicate bucket wins).
fn scatter(idx: &[usize], vals: &[f64], to: &mut [f64]) {
    for (&i, &v) in idx.iter().zip(vals) {
        to[i] = v;
    }
}

/// SGD on gathered coordinates: w ← prox_{η·l1}(w₀ − η(g + l2·w₀)).
fn sgd(eta: f64, (l1, l2): (f64, f64), g: &[f64], w_old: &[f64], w: &mut [f64]) {
    for ((w, &w0), &g) in w.iter_mut().zip(w_old).zip(g) {
        *w = prox_l1(w0 - eta * (g + l2 * w0), eta * l1);
    }
}

/// AdaGrad on gathered coordinates: G ← G + g'², w ← prox_{η'·l1}(w − η'·g') with
/// g' = g + l2·w₀ and η' = η / (√G + ε).
fn adagrad(
    lr: f64,
    eps: f64,
    (l1, l2): (f64, f64),
    g: &[f64],
    w_old: &[f64],
    w: &mut [f64],
    acc: &mut [f64],
) {
    let n = g.len().min(w_old.len()).min(w.len()).min(acc.len());
    let (g, w0, w, acc) = (&g[..n], &w_old[..n], &mut w[..n], &mut acc[..n]);
    for k in 0..n {
        let g = g[k] + l2 * w0[k];
        acc[k] += g * g;
        let eta = lr / (acc[k].sqrt() + eps);
        w[k] = prox_l1(w0[k] - eta * g, eta * l1);
    }
}

/// Gathered FTRL state: weight before and after, √n and z per coordinate (updated in place).
struct FtrlSlots<'a> {
    w_old: &'a [f64],
    w: &'a mut [f64],
    acc: &'a mut [f64],
    z: &'a mut [f64],
}

/// FTRL-Proximal on gathered coordinates. `acc` holds √n rather than n, so each coordinate
/// costs one square root and one division: σ = (√n' − √n)/α, z ← z + g − σ·w, and the
/// closed-form weight w = (sign(z)·l1 − z) / ((β + √n')/α + l2), or 0 when |z| ≤ l1.
fn ftrl(alpha: f64, beta: f64, (l1, l2): (f64, f64), g: &[f64], st: FtrlSlots<'_>) {
    let inv_alpha = 1.0 / alpha;
    let n = g.len().min(st.w_old.len()).min(st.w.len());
    let n = n.min(st.acc.len()).min(st.z.len());
    let (g, w0, w) = (&g[..n], &st.w_old[..n], &mut st.w[..n]);
    let (acc, zs) = (&mut st.acc[..n], &mut st.z[..n]);
    for k in 0..n {
        let g = g[k];
        let sqrt_n = acc[k];
        let sqrt_n_new = (sqrt_n * sqrt_n + g * g).sqrt();
        let sigma = (sqrt_n_new - sqrt_n) * inv_alpha;
        let z = zs[k] + g - sigma * w0[k];
        // Both sides computed, one selected: no branch to mispredict on hashed slots whose
        // |z| hovers around l1, and a loop the compiler vectorizes.
        let shrunk = (z.signum() * l1 - z) / ((beta + sqrt_n_new) * inv_alpha + l2);
        w[k] = if z.abs() <= l1 { 0.0 } else { shrunk };
        acc[k] = sqrt_n_new;
        zs[k] = z;
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

    /// FTRL-Proximal as McMahan et al. (2013) write it in Algorithm 1: per coordinate it keeps n
    /// and z and derives the weight from them at prediction time,
    ///   w_i = 0 if |z_i| ≤ λ1, else −(z_i − sgn(z_i)·λ1) / ((β + √n_i)/α + λ2),
    /// then on (x, y): g_i = (p − y)·x_i, σ_i = (√(n_i + g_i²) − √n_i)/α, z_i += g_i − σ_i·w_i,
    /// n_i += g_i². The intercept is a coordinate with x = 1 and no λ1, λ2.
    struct PaperFtrl {
        n: Vec<f64>,
        z: Vec<f64>,
        cfg: FtrlConfig,
    }

    impl PaperFtrl {
        fn weight(&self, i: usize, bias: bool) -> f64 {
            let (l1, l2) = if bias {
                (0.0, 0.0)
            } else {
                (self.cfg.l1, self.cfg.l2)
            };
            let (z, n) = (self.z[i], self.n[i]);
            if z.abs() <= l1 {
                0.0
            } else {
                -(z - z.signum() * l1) / ((self.cfg.beta + n.sqrt()) / self.cfg.alpha + l2)
            }
        }

        /// Dense coordinates: the slots of `x` then the intercept (index `dim`).
        fn learn(&mut self, x: &SparseVec, y: bool) {
            let dim = self.n.len() - 1;
            let mut coords: Vec<(usize, f64)> =
                x.iter().map(|(i, v)| (i as usize, f64::from(v))).collect();
            coords.push((dim, 1.0));
            let w: Vec<f64> = coords
                .iter()
                .map(|&(i, _)| self.weight(i, i == dim))
                .collect();
            let z: f64 = coords.iter().zip(&w).map(|(&(_, v), w)| w * v).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            for (&(i, v), w) in coords.iter().zip(&w) {
                let g = (p - f64::from(u8::from(y))) * v;
                let sigma = ((self.n[i] + g * g).sqrt() - self.n[i].sqrt()) / self.cfg.alpha;
                self.z[i] += g - sigma * w;
                self.n[i] += g * g;
            }
        }
    }

    #[test]
    fn ftrl_steps_match_the_papers_algorithm() {
        // 2 000 examples of 1–6 distinct slots over 32 buckets, with l1 and l2 on: after every
        // step the weights equal those the paper's per-coordinate state gives, to rounding (the
        // paper keeps n, the optimizer keeps √n and the weight itself).
        let dim = 32;
        let cfg = FtrlConfig {
            alpha: 0.3,
            beta: 1.0,
            l1: 0.5,
            l2: 2.0,
        };
        let model_cfg = ModelConfig {
            optimizer: OptimizerKind::Ftrl,
            ftrl: cfg.clone(),
            ..ModelConfig::default()
        };
        let mut paper = PaperFtrl {
            n: vec![0.0; dim + 1],
            z: vec![0.0; dim + 1],
            cfg,
        };
        let mut model = Model::new(dim);
        let mut opt = Optimizer::new(OptimizerKind::Ftrl, dim);
        let mut rng = Rng(11);
        let mut zeros = 0;
        for t in 0..2000 {
            let mut x = SparseVec::default();
            let len = 1 + (rng.next_f64() * 6.0) as usize;
            while x.len() < len {
                let i = (rng.next_f64() * dim as f64) as u32;
                if !x.idx.contains(&i) {
                    x.idx.push(i);
                    x.val.push((rng.normal() * 2.0) as f32);
                }
            }
            let y = rng.next_f64() < 0.3;
            opt.step(&model_cfg, &mut model, &x, y, 1.0, 0.0)
                .expect("finite");
            paper.learn(&x, y);
            for i in 0..=dim {
                let want = paper.weight(i, i == dim);
                let got = model.w[i];
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1e-3),
                    "step {t}, coordinate {i}: {got} vs the paper's {want}"
                );
                zeros += usize::from(i < dim && got == 0.0 && paper.z[i] != 0.0);
            }
        }
        // l1 is doing something: some touched coordinates sit at exactly zero.
        assert!(zeros > 0);
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
