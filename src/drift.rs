//! Drift monitoring: PSI and two-sample KS, per declared feature and on the score, of a window of
//! recent events against a reference window — continuously, in memory bounded by the two window
//! sizes, and kept in the checkpoint so a restart does not move the reference.
//!
//! - **Reference**: the first `drift.reference_events` events after start (or after a
//!   re-baseline). Each numeric column (numeric features and the score) keeps its sorted sample
//!   (the KS reference, exact) and `drift.bins` quantile bins cut from it (+ a missing bin); each
//!   categorical column (categorical and boolean features) keeps its `drift.top_k` most frequent
//!   values, "other" (seen in the reference, not in the top k), "unseen" and missing.
//! - **Window**: the last `drift.window_events` events, evaluated every `drift.evaluate_every`
//!   events (= the window size: tumbling windows; smaller: sliding).
//! - **PSI** = Σ (c_i − r_i) · ln(c_i / r_i) over the bins, where r_i and c_i are the reference
//!   and window proportions, each floored at `drift.epsilon` so empty bins stay finite.
//! - **KS**: D = sup |F_ref − F_win| over the present values, and the asymptotic p-value exactly as
//!   `scipy.stats.ks_2samp(method="asymp")` computes it ([`crate::ks`]). The reference sample is
//!   kept whole, so D is exact (no sketch error).
//! - Levels: `alert` when PSI ≥ `psi_alert` or the KS p-value < `ks_p_alert`; `warn` when PSI ≥
//!   `psi_warn`. (With thousands of events per window KS is very sensitive: p < 0.01 flags shifts
//!   of a few percent of a standard deviation; PSI measures how large the shift is.)
//!
//! Pure: the engine feeds it; callers log and export what it reports.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::{DriftAction, DriftConfig, FeaturesConfig};
use crate::event::{FeatureValue, RawEvent};

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Numbers (a numeric feature, or the score).
    Numeric,
    /// Categories (categorical and boolean features), as 32-bit hashes.
    Categorical,
}

/// The reference of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ColumnRef {
    /// Numeric: sorted sample, inner bin edges, proportions per bin (+ missing last).
    Numeric {
        /// Present values, ascending.
        sorted: Vec<f64>,
        /// Inner edges: bin i holds values in [edges[i-1], edges[i]).
        edges: Vec<f64>,
        /// Proportion per bin, then missing.
        props: Vec<f64>,
    },
    /// Categorical: top-k values, every value seen, proportions for top-k, other, unseen (0),
    /// missing.
    Categorical {
        /// The most frequent values, most frequent first.
        top: Vec<u32>,
        /// Every value seen in the reference.
        seen: Vec<u32>,
        /// Proportions: top-k…, other, unseen, missing.
        props: Vec<f64>,
    },
    /// Not collected yet: the score's reference waits until the model has learned
    /// `drift.score_reference_after_updates` labels.
    Pending,
}

/// Drift state: part of the learner checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftState {
    /// The reference per column, once collected.
    pub reference: Option<Vec<ColumnRef>>,
    /// Observations collected for the reference, per column (NaN = missing).
    collecting: Vec<Vec<f64>>,
    /// The window: a ring of the last `window_events` observations per column.
    window: Vec<Vec<f64>>,
    /// Next ring slot.
    head: usize,
    /// Events observed since the last evaluation.
    since_eval: u64,
    /// Windows evaluated since the reference was set.
    pub windows: u64,
    /// Learning frozen by a drift alert (`drift.action = "freeze"`).
    pub frozen: bool,
    /// Window sums for predicted vs observed positive rate: score sum, events, label
    /// positives, labels.
    rates: [f64; 4],
}

/// One column's figures in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnStats {
    /// Column name (`score` for the score).
    pub column: String,
    /// The model's score, not a declared feature (which may be named `score` too).
    pub score: bool,
    /// PSI against the reference.
    pub psi: f64,
    /// KS statistic (numeric columns).
    pub ks: Option<f64>,
    /// KS p-value (numeric columns).
    pub ks_p: Option<f64>,
    /// Share of values not seen in the reference (categorical columns).
    pub unseen_rate: Option<f64>,
    /// `ok`, `warn` or `alert`.
    pub level: Level,
}

/// Drift level of a column in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below the warn threshold.
    Ok,
    /// PSI ≥ psi_warn.
    Warn,
    /// PSI ≥ psi_alert, or KS p-value < ks_p_alert.
    Alert,
}

/// The evaluation of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowReport {
    /// Window number since the reference was set (1-based).
    pub window: u64,
    /// Per column.
    pub columns: Vec<ColumnStats>,
    /// Mean score of the window's events.
    pub mean_score: f64,
    /// Positive rate of the labels learned during the window (`None` without labels).
    pub observed_rate: Option<f64>,
    /// What the configured action did: `none`, `froze`, `unfroze`, `rebaselined`.
    pub action: &'static str,
}

impl WindowReport {
    /// Columns at warn or alert.
    pub fn flagged(&self) -> impl Iterator<Item = &ColumnStats> {
        self.columns.iter().filter(|c| c.level > Level::Ok)
    }
}

/// The drift monitor.
#[derive(Debug, Clone)]
pub struct Drift {
    cfg: DriftConfig,
    names: Vec<String>,
    kinds: Vec<ColumnKind>,
    by_name: HashMap<String, usize, foldhash::fast::RandomState>,
    state: DriftState,
}

/// Hash of a category value (the same text a categorical feature is hashed from).
/// Seed of the id hash that picks the watched events (`drift.sample_every`).
pub const SAMPLE_SEED: u32 = 0x0d41_f7e5;

fn cat_hash(s: &str) -> f64 {
    f64::from(crate::hash::murmur3_32(s.as_bytes(), 0x0d71_f7ed))
}

impl Drift {
    /// A monitor for the declared features of `features` plus the score.
    pub fn new(cfg: &DriftConfig, features: &FeaturesConfig) -> Self {
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        for n in features.numeric.keys() {
            names.push(n.clone());
            kinds.push(ColumnKind::Numeric);
        }
        for n in features.categorical.keys().chain(features.boolean.keys()) {
            names.push(n.clone());
            kinds.push(ColumnKind::Categorical);
        }
        names.push("score".into());
        kinds.push(ColumnKind::Numeric);
        let by_name = names
            .iter()
            .enumerate()
            .take(names.len() - 1)
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let cols = names.len();
        Self {
            cfg: cfg.clone(),
            state: DriftState {
                reference: None,
                collecting: vec![Vec::new(); cols],
                window: vec![Vec::new(); cols],
                head: 0,
                since_eval: 0,
                windows: 0,
                frozen: false,
                rates: [0.0; 4],
            },
            names,
            kinds,
            by_name,
        }
    }

    /// Whether the event with this id is watched: drift is enabled and the id falls in the
    /// `sample_every` sample (MurmurHash3 of the id, seed [`SAMPLE_SEED`], modulo N is 0).
    #[inline]
    pub fn samples(&self, id: &str) -> bool {
        self.cfg.enabled
            && (self.cfg.sample_every <= 1
                || crate::hash::murmur3_32(id.as_bytes(), SAMPLE_SEED)
                    .is_multiple_of(self.cfg.sample_every))
    }

    /// Column names, the score last.
    pub fn columns(&self) -> &[String] {
        &self.names
    }

    /// The event's values per column except the score (NaN = missing), in column order.
    pub fn extract(&self, ev: &RawEvent<'_>, out: &mut Vec<f64>) {
        out.clear();
        out.resize(self.names.len() - 1, f64::NAN);
        for (name, v) in &ev.features {
            let Some(&i) = self.by_name.get(name.as_ref()) else {
                continue;
            };
            out[i] = match (self.kinds[i], v) {
                (ColumnKind::Numeric, FeatureValue::Number(x)) => *x,
                (ColumnKind::Categorical, FeatureValue::Str(s)) => cat_hash(s),
                (ColumnKind::Categorical, FeatureValue::Bool(b)) => {
                    cat_hash(if *b { "true" } else { "false" })
                }
                (ColumnKind::Categorical, FeatureValue::Number(x)) => cat_hash(&x.to_string()),
                _ => f64::NAN,
            };
        }
    }

    /// Whether learning is frozen by a drift alert.
    pub fn frozen(&self) -> bool {
        self.state.frozen
    }

    /// The state, for checkpoints.
    pub fn state(&self) -> &DriftState {
        &self.state
    }

    /// Restores a checkpointed state (ignored if it has another column count).
    pub fn restore(&mut self, s: DriftState) {
        if s.window.len() == self.names.len() {
            self.state = s;
        }
    }

    /// Lifts a drift freeze (an operator's command); the next alert freezes again.
    pub fn unfreeze(&mut self) {
        self.state.frozen = false;
    }

    /// Starts a new reference from the next events (a re-baseline); unfreezes learning.
    pub fn rebaseline(&mut self) {
        let cols = self.names.len();
        self.state.reference = None;
        self.state.collecting = vec![Vec::new(); cols];
        self.state.window = vec![Vec::new(); cols];
        self.state.head = 0;
        self.state.since_eval = 0;
        self.state.windows = 0;
        self.state.frozen = false;
        self.state.rates = [0.0; 4];
    }

    /// A label was learned (for the window's observed positive rate).
    pub fn on_label(&mut self, positive: bool) {
        self.state.rates[2] += f64::from(u8::from(positive));
        self.state.rates[3] += 1.0;
    }

    /// Observes one scored event: `values` from [`Self::extract`], its score, and the number of
    /// updates the model has learned so far. Returns the window's report when a window was
    /// evaluated.
    ///
    /// The features' reference is the first `reference_events` watched events. The score's is
    /// the first `reference_events` scores once the model has learned
    /// `score_reference_after_updates` labels: the scores of a model still learning from
    /// scratch move because it learns, not because anything drifted.
    pub fn observe(
        &mut self,
        values: &[f64],
        score: f64,
        model_updates: u64,
    ) -> Option<WindowReport> {
        if !self.cfg.enabled {
            return None;
        }
        let warm = model_updates >= self.cfg.score_reference_after_updates;
        let need = self.cfg.reference_events;
        let st = &mut self.state;
        let last = self.names.len() - 1;
        if st.reference.is_none() {
            for (col, v) in st.collecting.iter_mut().zip(values) {
                col.push(*v);
            }
            if warm {
                st.collecting[last].push(score);
            }
            if st.collecting[0].len() >= need {
                let mut reference: Vec<ColumnRef> = st.collecting[..last]
                    .iter()
                    .zip(&self.kinds)
                    .map(|(c, k)| build_reference(c, *k, &self.cfg))
                    .collect();
                let scores = std::mem::take(&mut st.collecting[last]);
                st.collecting = vec![Vec::new(); self.names.len()];
                if scores.len() >= need {
                    reference.push(build_reference(&scores, ColumnKind::Numeric, &self.cfg));
                } else {
                    reference.push(ColumnRef::Pending);
                    st.collecting[last] = scores;
                }
                st.reference = Some(reference);
            }
            return None;
        }
        if warm
            && let Some(reference) = st.reference.as_mut()
            && reference[last] == ColumnRef::Pending
        {
            st.collecting[last].push(score);
            if st.collecting[last].len() >= need {
                let scores = std::mem::take(&mut st.collecting[last]);
                reference[last] = build_reference(&scores, ColumnKind::Numeric, &self.cfg);
            }
        }
        let row = values.iter().copied().chain(std::iter::once(score));
        let cap = self.cfg.window_events;
        for (col, v) in st.window.iter_mut().zip(row) {
            if col.len() < cap {
                col.push(v);
            } else {
                col[st.head] = v;
            }
        }
        st.head = (st.head + 1) % cap;
        st.rates[0] += score;
        st.rates[1] += 1.0;
        st.since_eval += 1;
        let every = if self.cfg.evaluate_every == 0 {
            cap
        } else {
            self.cfg.evaluate_every
        } as u64;
        if st.window[0].len() < cap || st.since_eval < every {
            return None;
        }
        st.since_eval = 0;
        Some(self.evaluate())
    }

    fn evaluate(&mut self) -> WindowReport {
        let st = &mut self.state;
        st.windows += 1;
        let columns = match &st.reference {
            Some(reference) => reference
                .iter()
                .zip(&st.window)
                .zip(&self.names)
                .enumerate()
                .filter(|(_, ((r, _), _))| **r != ColumnRef::Pending)
                .map(|(i, ((r, w), name))| ColumnStats {
                    score: i == self.names.len() - 1,
                    ..column_stats(name, r, w, &self.cfg)
                })
                .collect(),
            None => Vec::new(),
        };
        let [score_sum, n, pos, labels] = st.rates;
        st.rates = [0.0; 4];
        let mut report = WindowReport {
            window: st.windows,
            columns,
            mean_score: score_sum / n.max(1.0),
            observed_rate: (labels > 0.0).then(|| pos / labels),
            action: "none",
        };
        // Actions follow the features only: the score of a model that keeps learning moves with
        // its weights, and freezing on that would stop learning for good.
        let alert = report
            .columns
            .iter()
            .any(|c| !c.score && c.level == Level::Alert);
        match self.cfg.action {
            DriftAction::None => {}
            DriftAction::Freeze => {
                if alert && !st.frozen {
                    st.frozen = true;
                    report.action = "froze";
                } else if !alert && st.frozen {
                    st.frozen = false;
                    report.action = "unfroze";
                }
            }
            DriftAction::Rebaseline => {
                if alert {
                    report.action = "rebaselined";
                    self.rebaseline();
                }
            }
        }
        report
    }
}

fn build_reference(values: &[f64], kind: ColumnKind, cfg: &DriftConfig) -> ColumnRef {
    let n = values.len().max(1) as f64;
    match kind {
        ColumnKind::Numeric => {
            let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
            sorted.sort_unstable_by(f64::total_cmp);
            let mut edges: Vec<f64> = (1..cfg.bins)
                .filter_map(|i| {
                    let q = i * sorted.len() / cfg.bins;
                    sorted.get(q).copied()
                })
                .collect();
            edges.dedup();
            let props = bin_props(values, &edges, n);
            ColumnRef::Numeric {
                sorted,
                edges,
                props,
            }
        }
        ColumnKind::Categorical => {
            let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
            for v in values.iter().filter(|v| !v.is_nan()) {
                *counts.entry(*v as u32).or_default() += 1;
            }
            let mut by_count: Vec<(u32, u64)> = counts.iter().map(|(k, c)| (*k, *c)).collect();
            by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let top: Vec<u32> = by_count.iter().take(cfg.top_k).map(|(k, _)| *k).collect();
            let seen: Vec<u32> = counts.keys().copied().collect();
            let props = cat_props(values, &top, &seen, n);
            ColumnRef::Categorical { top, seen, props }
        }
    }
}

/// Proportion of values per numeric bin, then missing.
fn bin_props(values: &[f64], edges: &[f64], n: f64) -> Vec<f64> {
    let mut counts = vec![0.0; edges.len() + 2];
    for v in values {
        let i = if v.is_nan() {
            edges.len() + 1
        } else {
            edges.partition_point(|e| *e <= *v)
        };
        counts[i] += 1.0;
    }
    counts.iter().map(|c| c / n).collect()
}

/// Proportions for the top values…, other, unseen, missing.
fn cat_props(values: &[f64], top: &[u32], seen: &[u32], n: f64) -> Vec<f64> {
    let index: HashMap<u32, usize> = top.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let seen: HashSet<u32> = seen.iter().copied().collect();
    let k = top.len();
    let mut counts = vec![0.0; k + 3];
    for v in values {
        let i = if v.is_nan() {
            k + 2
        } else {
            let h = *v as u32;
            match index.get(&h) {
                Some(i) => *i,
                None if seen.contains(&h) => k,
                None => k + 1,
            }
        };
        counts[i] += 1.0;
    }
    counts.iter().map(|c| c / n).collect()
}

/// Population stability index with proportions floored at `eps`.
pub fn psi(reference: &[f64], current: &[f64], eps: f64) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let (r, c) = (r.max(eps), c.max(eps));
            (c - r) * (c / r).ln()
        })
        .sum()
}

fn column_stats(name: &str, r: &ColumnRef, window: &[f64], cfg: &DriftConfig) -> ColumnStats {
    let n = window.len().max(1) as f64;
    let (psi_v, ks, ks_p, unseen_rate) = match r {
        ColumnRef::Numeric {
            sorted,
            edges,
            props,
        } => {
            let cur = bin_props(window, edges, n);
            let mut present: Vec<f64> = window.iter().copied().filter(|v| !v.is_nan()).collect();
            present.sort_unstable_by(f64::total_cmp);
            let (d, p) = if present.is_empty() || sorted.is_empty() {
                (None, None)
            } else {
                let d = crate::ks::ks_statistic(sorted, &present);
                let p =
                    crate::ks::ks_2samp_asymp_pvalue(sorted.len() as u64, present.len() as u64, d);
                (Some(d), Some(p))
            };
            (psi(props, &cur, cfg.epsilon), d, p, None)
        }
        ColumnRef::Pending => (0.0, None, None, None),
        ColumnRef::Categorical { top, seen, props } => {
            let cur = cat_props(window, top, seen, n);
            let unseen = cur[top.len() + 1];
            (psi(props, &cur, cfg.epsilon), None, None, Some(unseen))
        }
    };
    let level = if psi_v >= cfg.psi_alert || ks_p.is_some_and(|p| p < cfg.ks_p_alert) {
        Level::Alert
    } else if psi_v >= cfg.psi_warn {
        Level::Warn
    } else {
        Level::Ok
    };
    ColumnStats {
        column: name.to_string(),
        score: false,
        psi: psi_v,
        ks,
        ks_p,
        unseen_rate,
        level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CategoricalFeature, NumericFeature};
    use crate::simulate::Rng;

    fn features() -> FeaturesConfig {
        let mut f = FeaturesConfig::default();
        for n in ["a", "b", "c"] {
            f.numeric.insert(n.into(), NumericFeature::default());
        }
        f.categorical
            .insert("cat".into(), CategoricalFeature::default());
        f
    }

    /// A model past `score_reference_after_updates`.
    const WARM: u64 = u64::MAX;

    fn cfg() -> DriftConfig {
        DriftConfig {
            reference_events: 10_000,
            window_events: 5_000,
            ..DriftConfig::default()
        }
    }

    /// Values for columns a, b, c, cat (ordered like `Drift::columns`).
    fn row(rng: &mut Rng, shift_a: f64, cats: &[&str]) -> Vec<f64> {
        let c = cats[(rng.uniform() * cats.len() as f64) as usize % cats.len()];
        vec![
            rng.normal() + shift_a,
            rng.normal(),
            rng.normal(),
            cat_hash(c),
        ]
    }

    fn level_of(r: &WindowReport, column: &str) -> Level {
        r.columns
            .iter()
            .find(|c| c.column == column)
            .map_or(Level::Ok, |c| c.level)
    }

    #[test]
    fn psi_equals_a_direct_computation_on_fixed_bins() {
        let r = [0.1, 0.2, 0.3, 0.4, 0.0];
        let c = [0.25, 0.25, 0.25, 0.25, 0.0];
        let eps = 1e-4;
        let direct: f64 = (0..5)
            .map(|i| {
                let (ri, ci) = (f64::max(r[i], eps), f64::max(c[i], eps));
                (ci - ri) * (ci / ri).ln()
            })
            .sum();
        assert!((psi(&r, &c, eps) - direct).abs() < 1e-15);
        assert_eq!(psi(&r, &r, eps), 0.0);
        // Binning: edges 1, 2 (bins (-inf,1), [1,2), [2,inf)) and a missing bin.
        let values = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, f64::NAN, 0.1];
        let props = bin_props(&values, &[1.0, 2.0], values.len() as f64);
        assert_eq!(props, vec![2.0 / 8.0, 2.0 / 8.0, 3.0 / 8.0, 1.0 / 8.0]);
    }

    #[test]
    fn reference_bins_are_quantiles_of_the_reference() {
        let c = DriftConfig { bins: 4, ..cfg() };
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let ColumnRef::Numeric { edges, props, .. } =
            build_reference(&values, ColumnKind::Numeric, &c)
        else {
            panic!("numeric");
        };
        assert_eq!(edges, vec![250.0, 500.0, 750.0]);
        assert_eq!(props, vec![0.25, 0.25, 0.25, 0.25, 0.0]);
    }

    #[test]
    fn a_half_sigma_shift_is_flagged_within_two_windows_and_quiet_features_stay_quiet() {
        let (mut quiet, mut total) = (0u32, 0u32);
        for seed in 1..=20u64 {
            let mut rng = Rng::new(seed);
            let mut d = Drift::new(&cfg(), &features());
            let cats = ["x", "y", "z", "w"];
            for _ in 0..10_000 {
                let r = row(&mut rng, 0.0, &cats);
                assert!(d.observe(&r, rng.uniform(), WARM).is_none());
            }
            let mut reports = Vec::new();
            // Two quiet windows, then the shift of a.
            for i in 0..(4 * 5_000) {
                let shift = if i >= 2 * 5_000 { 0.5 } else { 0.0 };
                let r = row(&mut rng, shift, &cats);
                if let Some(rep) = d.observe(&r, rng.uniform(), WARM) {
                    reports.push(rep);
                }
            }
            assert_eq!(reports.len(), 4);
            assert!(
                reports[2..]
                    .iter()
                    .any(|r| level_of(r, "a") == Level::Alert),
                "seed {seed}: shift of a not flagged: {reports:?}"
            );
            for r in &reports {
                for col in ["b", "c", "cat", "score"] {
                    total += 1;
                    quiet += u32::from(
                        r.columns
                            .iter()
                            .find(|c| c.column == col)
                            .is_some_and(|c| c.psi < 0.1),
                    );
                }
            }
        }
        assert!(
            f64::from(quiet) >= 0.95 * f64::from(total),
            "{quiet} of {total} quiet windows below warn"
        );
    }

    #[test]
    fn categorical_change_and_unseen_values_are_flagged() {
        let mut rng = Rng::new(7);
        let mut d = Drift::new(&cfg(), &features());
        for _ in 0..10_000 {
            let r = row(&mut rng, 0.0, &["x", "y", "z", "w"]);
            d.observe(&r, 0.5, WARM);
        }
        // Skewed: mostly x.
        let mut rep = None;
        for _ in 0..5_000 {
            let r = row(&mut rng, 0.0, &["x", "x", "x", "x", "x", "x", "y", "z"]);
            rep = d.observe(&r, 0.5, WARM).or(rep);
        }
        let rep = rep.expect("window");
        assert_eq!(level_of(&rep, "cat"), Level::Alert, "{rep:?}");
        // Unseen values: half the window is new categories.
        let mut rep = None;
        for _ in 0..5_000 {
            let r = row(&mut rng, 0.0, &["x", "y", "new1", "new2"]);
            rep = d.observe(&r, 0.5, WARM).or(rep);
        }
        let rep = rep.expect("window");
        let cat = rep.columns.iter().find(|c| c.column == "cat").expect("cat");
        let unseen = cat.unseen_rate.expect("unseen rate");
        assert!((0.45..0.55).contains(&unseen), "{unseen}");
        assert_eq!(cat.level, Level::Alert);
    }

    #[test]
    fn sliding_windows_evaluate_every_step_over_the_last_window() {
        let c = DriftConfig {
            reference_events: 1_000,
            window_events: 1_000,
            evaluate_every: 250,
            ..cfg()
        };
        let mut d = Drift::new(&c, &features());
        let mut rng = Rng::new(3);
        let mut windows = 0;
        for _ in 0..3_000 {
            let r = row(&mut rng, 0.0, &["x"]);
            windows += usize::from(d.observe(&r, 0.5, WARM).is_some());
        }
        // Reference 1000, first full window at 2000, then every 250: 2000, 2250, ..., 3000.
        assert_eq!(windows, 5);
    }

    #[test]
    fn freeze_stops_updates_until_a_quiet_window_and_rebaseline_resets() {
        let c = DriftConfig {
            reference_events: 1_000,
            window_events: 1_000,
            action: DriftAction::Freeze,
            ..cfg()
        };
        let mut d = Drift::new(&c, &features());
        let mut rng = Rng::new(5);
        for _ in 0..1_000 {
            d.observe(&row(&mut rng, 0.0, &["x"]), 0.5, WARM);
        }
        let mut last = None;
        for _ in 0..1_000 {
            last = d.observe(&row(&mut rng, 3.0, &["x"]), 0.5, WARM).or(last);
        }
        assert_eq!(last.as_ref().map(|r| r.action), Some("froze"));
        assert!(d.frozen());
        for _ in 0..1_000 {
            last = d.observe(&row(&mut rng, 0.0, &["x"]), 0.5, WARM).or(last);
        }
        assert_eq!(last.as_ref().map(|r| r.action), Some("unfroze"));
        assert!(!d.frozen());
        d.rebaseline();
        assert!(d.state().reference.is_none());
    }

    #[test]
    fn the_score_reference_waits_for_a_trained_model_and_score_drift_does_not_freeze() {
        let c = DriftConfig {
            reference_events: 1_000,
            window_events: 1_000,
            score_reference_after_updates: 600,
            action: DriftAction::Freeze,
            ..cfg()
        };
        let mut d = Drift::new(&c, &features());
        let mut rng = Rng::new(9);
        // A model learning from scratch: its scores fall from 0.5 as it learns. The features'
        // reference fills with the first 1 000 events; the score's starts at update 600 (event
        // 1 200).
        let mut updates = 0;
        let mut reports = Vec::new();
        for i in 0..3_000u64 {
            let score = if updates < 600 {
                0.5
            } else {
                0.02 + 0.01 * rng.uniform()
            };
            reports.extend(d.observe(&row(&mut rng, 0.0, &["x"]), score, updates));
            if i % 2 == 0 {
                updates += 1;
            }
        }
        let reference = d.state().reference.as_ref().expect("reference");
        let ColumnRef::Numeric { sorted, .. } = &reference[4] else {
            panic!("score reference: {:?}", reference[4]);
        };
        // Scores of events 1 200..2 200: all from the trained model.
        assert_eq!(sorted.len(), 1_000);
        assert!(sorted.iter().all(|s| (0.02..0.03).contains(s)));
        // Window 1 (events 1 000..2 000) had no score reference yet: no score column; window 2
        // has one, quiet.
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].columns.len(), 4);
        assert!(
            reports[0]
                .columns
                .iter()
                .all(|c| c.column != "score" && !c.score)
        );
        assert_eq!(reports[1].columns.len(), 5);
        // The score's column is flagged as the score (a feature may be named `score` too).
        let flags: Vec<bool> = reports[1].columns.iter().map(|c| c.score).collect();
        assert_eq!(flags, [false, false, false, false, true]);
        assert_eq!(level_of(&reports[1], "score"), Level::Ok);

        // The score moves (the model keeps learning) while the features stay put: reported,
        // but learning is not frozen.
        let mut last = None;
        for _ in 0..1_000 {
            last = d
                .observe(&row(&mut rng, 0.0, &["x"]), 0.9, updates)
                .or(last);
        }
        let last = last.expect("a window");
        assert_eq!(level_of(&last, "score"), Level::Alert);
        assert_eq!(last.action, "none");
        assert!(!d.frozen());
    }

    #[test]
    fn frozen_learning_keeps_scoring_and_the_drift_state_survives_a_snapshot() {
        use crate::engine::{Engine, LabelCount, LabelResult};
        use crate::join::MemoryBackend;
        let cfg = crate::config::Config {
            features: features(),
            drift: DriftConfig {
                reference_events: 100,
                window_events: 100,
                action: DriftAction::Freeze,
                ..DriftConfig::default()
            },
            ..crate::config::Config::default()
        };
        let mut e = Engine::new(cfg.clone(), |_| (MemoryBackend::default(), None));
        let mut rng = Rng::new(11);
        let event = |i: u32, shift: f64, rng: &mut Rng| {
            format!(
                r#"{{"id":"e{i}","ts":{},"features":{{"a":{},"b":{},"c":{},"cat":"x"}}}}"#,
                1_000 + i,
                rng.normal() + shift,
                rng.normal(),
                rng.normal()
            )
        };
        for i in 0..200 {
            let shift = if i >= 100 { 5.0 } else { 0.0 };
            e.on_event(event(i, shift, &mut rng).as_bytes(), 0, 0, 0)
                .expect("scored");
        }
        let reports = e.take_drift_reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].action, "froze");
        assert!(e.drift().frozen());
        // A joined label is measured but not learned; scoring goes on.
        let r = e.on_label(br#"{"id":"e150","label":1}"#, 0);
        assert_eq!(r, LabelResult::Handled(Some(LabelCount::Joined)));
        assert_eq!(e.counters().updates, 0);
        assert_eq!(e.counters().updates_frozen, 1);
        assert_eq!(e.quality().total.summary().n, 1);
        e.on_event(event(999, 0.0, &mut rng).as_bytes(), 0, 0, 0)
            .expect("still scoring");

        // The reference and the freeze survive a snapshot bit for bit.
        let schema = crate::state::schema_of(&cfg);
        let st = e.learner_state();
        assert!(st.drift.reference.is_some() && st.drift.frozen);
        let bytes = crate::snapshot::encode(&schema, &st);
        let (_, back) = crate::snapshot::decode(&bytes, Some(&schema)).expect("decode");
        assert_eq!(back, st);
        assert_eq!(crate::snapshot::encode(&schema, &back), bytes);
        let mut restored = Engine::new(cfg, |_| (MemoryBackend::default(), None));
        restored.restore_learner(back);
        assert!(restored.drift().frozen());
        assert_eq!(restored.drift().state(), e.drift().state());
    }

    #[test]
    fn sampling_watches_one_id_in_n_and_always_the_same_ones() {
        let sampled = |n: u32| {
            let d = Drift::new(
                &DriftConfig {
                    sample_every: n,
                    ..cfg()
                },
                &features(),
            );
            (0..100_000)
                .filter(|i| d.samples(&format!("tx-{i}")))
                .collect::<Vec<u32>>()
        };
        assert_eq!(sampled(1).len(), 100_000);
        let a = sampled(16);
        // Binomial(100 000, 1/16): mean 6250, sd 76.5; ±5 sd.
        assert!((5_867..=6_633).contains(&a.len()), "{}", a.len());
        assert_eq!(a, sampled(16), "deterministic");
        // The ids in the sample are those whose hash is 0 modulo 16, by the documented hash.
        for i in a.iter().take(100) {
            let h = crate::hash::murmur3_32(format!("tx-{i}").as_bytes(), SAMPLE_SEED);
            assert!(h.is_multiple_of(16));
        }
        let off = Drift::new(
            &DriftConfig {
                enabled: false,
                ..cfg()
            },
            &features(),
        );
        assert!(!off.samples("tx-1"));
    }

    #[test]
    fn a_sampled_engine_counts_windows_in_watched_events_and_still_detects() {
        use crate::engine::Engine;
        use crate::join::MemoryBackend;
        let cfg = crate::config::Config {
            features: features(),
            drift: DriftConfig {
                reference_events: 200,
                window_events: 200,
                sample_every: 4,
                ..DriftConfig::default()
            },
            ..crate::config::Config::default()
        };
        let mut e = Engine::new(cfg, |_| (MemoryBackend::default(), None));
        let mut rng = Rng::new(3);
        let (mut watched, mut reports) = (0, Vec::new());
        for i in 0..6_000u32 {
            let id = format!("e{i}");
            watched += usize::from(e.drift().samples(&id));
            let shift = if i >= 4_000 { 2.0 } else { 0.0 };
            let ev = format!(
                r#"{{"id":"{id}","ts":{},"features":{{"a":{},"b":{},"c":{},"cat":"x"}}}}"#,
                1_000 + i,
                rng.normal() + shift,
                rng.normal(),
                rng.normal()
            );
            e.on_event(ev.as_bytes(), 0, 0, 0).expect("scored");
            reports.extend(e.take_drift_reports());
        }
        // Reference and windows count watched events only.
        assert!((1_300..1_700).contains(&watched), "{watched}");
        assert_eq!(reports.len(), (watched - 200) / 200);
        let last = reports.last().expect("a window");
        assert_eq!(level_of(last, "a"), Level::Alert, "the shift is seen");
        assert_ne!(level_of(&reports[0], "a"), Level::Alert);
    }
}
