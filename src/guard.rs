//! Guardrails against learning garbage: a pause of learning on a loss spike, and the counters of
//! every update the learner did not apply and why.
//!
//! - **Loss spike** (`guard.loss_spike_factor` > 0): labels are taken in tumbling windows of
//!   `guard.loss_spike_window`. A window whose mean log loss (of the scores the labels join,
//!   prequential) exceeds `factor` × the long-run mean pauses learning: labels are still
//!   measured, not learned. The long-run mean is over the windows that were not spikes, and the
//!   check starts once it holds `guard.loss_spike_min_labels` labels (a young model's loss falls,
//!   it does not spike). The first window back under the factor resumes learning. A pause that
//!   lasts `guard.loss_spike_max_windows` windows is not a spike but a new regime (the labels
//!   really changed, or the spike window itself was learned and hurt the model, which a paused
//!   model cannot repair): learning resumes and the long-run mean starts over.
//! - **Weight change** (`guard.max_weight_change` > 0, applied by [`crate::optim`]): an update
//!   that would move any weight by more than this is refused whole.
//! - **Label rate per entity** (`guard.label_rate_limit` > 0): at most that many labels per
//!   entity (`input.label_entity_field`) are joined per tumbling window of label time
//!   (`guard.label_rate_window`); the rest are counted `rate_limited` and dropped before the
//!   join, so one card or merchant flooding labels cannot steer the model. Windows follow label
//!   time (the label's own, else its record's), never the wall clock, so replay and a restarted
//!   worker decide alike; a label older than the current window counts in it.
//!
//! Pure: the engine feeds it; its state is part of the learner snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::GuardConfig;

/// Why a joined label did not update the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The update would have made a weight or optimizer state non-finite.
    NonFinite,
    /// The update would have moved a weight by more than `guard.max_weight_change`.
    WeightChange,
    /// Learning frozen by a drift alert.
    DriftFreeze,
    /// Learning paused by a loss spike.
    LossSpike,
    /// Learning frozen by an operator (`POST /admin/freeze`).
    Operator,
}

impl Skip {
    /// Every reason.
    pub const ALL: [Skip; 5] = [
        Skip::NonFinite,
        Skip::WeightChange,
        Skip::DriftFreeze,
        Skip::LossSpike,
        Skip::Operator,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NonFinite => "non_finite",
            Skip::WeightChange => "weight_change",
            Skip::DriftFreeze => "drift_freeze",
            Skip::LossSpike => "loss_spike",
            Skip::Operator => "operator_freeze",
        }
    }
}

/// What a finished window did to the pause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Learning paused: the window's mean loss and the long-run mean.
    Paused {
        /// Mean log loss of the window.
        window: f64,
        /// Long-run mean log loss.
        baseline: f64,
    },
    /// Learning resumed.
    Resumed {
        /// Mean log loss of the window.
        window: f64,
        /// Long-run mean log loss.
        baseline: f64,
        /// Resumed because the pause reached `loss_spike_max_windows` (the long-run mean
        /// starts over), not because the loss came back.
        limit: bool,
    },
}

/// Guard state: part of the learner snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    /// Loss sum and labels of the open window.
    window: (f64, u64),
    /// Loss sum and labels of the windows that were not spikes.
    long_run: (f64, u64),
    /// Learning paused by a loss spike.
    pub paused: bool,
    /// Windows closed while paused.
    paused_windows: u64,
    /// Updates refused by the weight-change cap.
    pub weight_change: u64,
    /// Labels not learned while paused by a loss spike.
    pub loss_spike: u64,
    /// Learning frozen by an operator until unfrozen (`POST /admin/freeze`).
    pub operator_frozen: bool,
    /// Labels not learned while frozen by an operator.
    pub operator: u64,
    /// Labels per entity in the current window (stored after the rest: snapshot format 4).
    #[serde(skip)]
    pub rates: EntityRates,
}

/// The key of an entity: 64 bits of MurmurHash3 (two 32-bit hashes with fixed seeds) of its
/// text. Two entities share a budget only on a full 64-bit collision.
pub fn entity_key(text: &[u8]) -> u64 {
    let hi = crate::hash::murmur3_32(text, 0x5eed_e171);
    let lo = crate::hash::murmur3_32(text, 0x7a1e_0b5e);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Labels counted per entity in the current window of label time (`guard.label_rate_limit`).
/// Memory: one (key, count) pair per entity seen in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityRates {
    /// Window number (label time / window length) the counts belong to.
    window: i64,
    /// Labels admitted per entity key in that window.
    counts: BTreeMap<u64, u32>,
}

impl EntityRates {
    /// Whether a label of `entity` at label time `ts` is admitted under the limit (counting it
    /// if so). Always true when the limit is off or the label has no entity.
    pub fn admit(&mut self, cfg: &GuardConfig, entity: Option<u64>, ts: Option<i64>) -> bool {
        let Some(entity) = entity else {
            return true;
        };
        if cfg.label_rate_limit == 0 {
            return true;
        }
        let len = i64::try_from(cfg.label_rate_window.0.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        if let Some(ts) = ts {
            let w = ts.div_euclid(len);
            if w > self.window {
                self.window = w;
                self.counts.clear();
            }
        }
        let n = self.counts.entry(entity).or_insert(0);
        if *n >= cfg.label_rate_limit {
            return false;
        }
        *n += 1;
        true
    }

    /// Entities counted in the current window.
    pub fn entities(&self) -> usize {
        self.counts.len()
    }
}

impl GuardState {
    /// Long-run mean log loss (`None` before the first window).
    pub fn baseline(&self) -> Option<f64> {
        (self.long_run.1 > 0).then(|| self.long_run.0 / self.long_run.1 as f64)
    }

    /// Adds the loss of one joined label; returns a transition when a window closed and the
    /// pause changed.
    pub fn observe(&mut self, cfg: &GuardConfig, loss: f64) -> Option<Transition> {
        if cfg.loss_spike_factor <= 0.0 || !loss.is_finite() {
            return None;
        }
        self.window.0 += loss;
        self.window.1 += 1;
        if self.window.1 < cfg.loss_spike_window.max(1) {
            return None;
        }
        let (sum, n) = std::mem::take(&mut self.window);
        let mean = sum / n as f64;
        let armed = self.long_run.1 >= cfg.loss_spike_min_labels;
        let baseline = self.baseline();
        let spike = armed && baseline.is_some_and(|b| mean > cfg.loss_spike_factor * b);
        if !spike {
            self.long_run.0 += sum;
            self.long_run.1 += n;
        }
        let baseline = baseline.unwrap_or(mean);
        match (spike, self.paused) {
            (true, false) => {
                self.paused = true;
                self.paused_windows = 0;
                Some(Transition::Paused {
                    window: mean,
                    baseline,
                })
            }
            (true, true) => {
                self.paused_windows += 1;
                if self.paused_windows < cfg.loss_spike_max_windows {
                    return None;
                }
                self.paused = false;
                self.long_run = (0.0, 0);
                Some(Transition::Resumed {
                    window: mean,
                    baseline,
                    limit: true,
                })
            }
            (false, true) => {
                self.paused = false;
                Some(Transition::Resumed {
                    window: mean,
                    baseline,
                    limit: false,
                })
            }
            (false, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GuardConfig {
        GuardConfig {
            loss_spike_factor: 2.0,
            loss_spike_window: 100,
            loss_spike_min_labels: 1_000,
            loss_spike_max_windows: 5,
            ..GuardConfig::default()
        }
    }

    #[test]
    fn a_spike_pauses_and_the_first_quiet_window_resumes() {
        let c = cfg();
        let mut g = GuardState::default();
        // 10 windows of loss 0.1 arm the check (1 000 labels); nothing happens.
        for _ in 0..1_000 {
            assert_eq!(g.observe(&c, 0.1), None);
        }
        assert!((g.baseline().expect("baseline") - 0.1).abs() < 1e-12);
        // A window at 0.2 is not above 2 × 0.1: no pause.
        for _ in 0..100 {
            assert_eq!(g.observe(&c, 0.2), None);
        }
        let baseline = g.baseline().expect("baseline");
        assert!((baseline - 1.2 / 11.0).abs() < 1e-12, "{baseline}");
        // A window at 0.5 is: paused at its last label, and the baseline keeps out the spike.
        let mut t = None;
        for _ in 0..100 {
            t = g.observe(&c, 0.5).or(t);
        }
        let Some(Transition::Paused { window, baseline }) = t else {
            panic!("{t:?}");
        };
        assert!((window - 0.5).abs() < 1e-12 && (baseline - 1.2 / 11.0).abs() < 1e-12);
        assert!(g.paused);
        assert_eq!(g.baseline(), Some(baseline));
        // Still spiking: stays paused, no new transition.
        for _ in 0..100 {
            assert_eq!(g.observe(&c, 0.5), None);
        }
        assert!(g.paused);
        // Back to normal: resumed.
        let mut t = None;
        for _ in 0..100 {
            t = g.observe(&c, 0.1).or(t);
        }
        assert!(
            matches!(t, Some(Transition::Resumed { limit: false, .. })),
            "{t:?}"
        );
        assert!(!g.paused);
    }

    #[test]
    fn a_pause_ends_at_the_window_limit_and_the_baseline_starts_over() {
        let c = cfg();
        let mut g = GuardState::default();
        for _ in 0..1_000 {
            g.observe(&c, 0.1);
        }
        let mut transitions = Vec::new();
        // The loss stays at 0.5: paused at window 1, then 4 more paused windows, then the limit.
        for _ in 0..600 {
            transitions.extend(g.observe(&c, 0.5));
        }
        assert!(matches!(transitions[0], Transition::Paused { .. }));
        assert!(
            matches!(transitions[1], Transition::Resumed { limit: true, .. }),
            "{transitions:?}"
        );
        assert_eq!(transitions.len(), 2);
        assert!(!g.paused);
        // The long-run mean starts over: 0.5 is the new normal, not a spike.
        assert_eq!(g.baseline(), None);
        for _ in 0..2_000 {
            assert_eq!(g.observe(&c, 0.5), None);
        }
        assert!((g.baseline().expect("baseline") - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_young_model_is_not_paused_and_off_means_off() {
        let c = cfg();
        let mut g = GuardState::default();
        // The first 1 000 labels only build the baseline, however their loss moves.
        for i in 0..1_000 {
            let loss = if i < 900 { 0.05 } else { 5.0 };
            assert_eq!(g.observe(&c, loss), None);
        }
        assert!(!g.paused);
        let off = GuardConfig::default();
        assert_eq!(off.loss_spike_factor, 0.0);
        let mut g = GuardState::default();
        for _ in 0..10_000 {
            assert_eq!(g.observe(&off, 100.0), None);
        }
        assert_eq!(g, GuardState::default());
    }

    /// Through the engine: a burst of flipped labels pauses learning (measured, not learned,
    /// counted), honest labels resume it; the weight cap refuses and counts.
    #[test]
    fn the_engine_pauses_on_flipped_labels_and_counts_what_it_skipped() {
        use crate::engine::{Engine, LabelCount, LabelResult};
        use crate::join::MemoryBackend;
        use crate::simulate::Rng;
        let mut cfg = crate::config::Config::default();
        cfg.features.hash_bits = 12;
        cfg.guard = GuardConfig {
            loss_spike_factor: 3.0,
            loss_spike_window: 200,
            loss_spike_min_labels: 2_000,
            loss_spike_max_windows: 3,
            ..GuardConfig::default()
        };
        let mut e = Engine::new(cfg, |_| (MemoryBackend::default(), None));
        let mut rng = Rng::new(3);
        let mut id = 0u32;
        // x ~ N(0,1); y = x > 0 (flipped when `flip`).
        let mut feed = |e: &mut Engine<MemoryBackend>, n: u32, flip: bool| {
            for _ in 0..n {
                id += 1;
                let x = rng.normal();
                let ev = format!(r#"{{"id":"{id}","ts":{id},"features":{{"x":{x}}}}}"#);
                e.on_event(ev.as_bytes(), 0, 0, i64::MAX).expect("scored");
                let y = u8::from((x > 0.0) != flip);
                let l = format!(r#"{{"id":"{id}","label":{y}}}"#);
                assert_eq!(
                    e.on_label(l.as_bytes(), 0),
                    LabelResult::Handled(Some(LabelCount::Joined))
                );
            }
        };
        feed(&mut e, 4_000, false);
        assert!(!e.loss_paused());
        let learned = e.counters().updates;
        assert_eq!(learned, 4_000);
        // Flipped labels: the first window of them pauses learning at its last label.
        feed(&mut e, 200, true);
        assert!(e.loss_paused());
        let t = e.take_guard_transitions();
        assert!(
            matches!(t[..], [Transition::Paused { window, baseline }] if window > 3.0 * baseline),
            "{t:?}"
        );
        // The label that closed the spike window was the first not learned.
        assert_eq!(e.counters().updates, 4_199);
        feed(&mut e, 200, true);
        assert_eq!(e.counters().updates, 4_199, "nothing learned while paused");
        assert_eq!(e.skipped(Skip::LossSpike), 201);
        // Honest labels again: the model, hurt by the flipped labels it learned before the pause,
        // stays above the factor; the pause ends at its limit (3 more windows) and learning
        // starts over with the label that closed the last one.
        feed(&mut e, 400, false);
        let t = e.take_guard_transitions();
        assert!(
            matches!(t[..], [Transition::Resumed { limit: true, .. }]),
            "{t:?}"
        );
        assert!(!e.loss_paused());
        assert_eq!(e.skipped(Skip::LossSpike), 600);
        assert_eq!(e.counters().updates, 4_200);
        feed(&mut e, 100, false);
        assert_eq!(e.counters().updates, 4_300);
        // Every joined label is measured.
        assert_eq!(e.quality().total.summary().n, 4_900);
    }

    #[test]
    fn the_engine_refuses_updates_past_the_weight_cap() {
        use crate::engine::Engine;
        use crate::join::MemoryBackend;
        let mut cfg = crate::config::Config::default();
        cfg.features.hash_bits = 12;
        // FTRL's first step on a fresh coordinate moves it by about alpha = 0.5 at most.
        cfg.guard.max_weight_change = 0.05;
        let mut e = Engine::new(cfg, |_| (MemoryBackend::default(), None));
        for id in 0..50 {
            let ev = format!(r#"{{"id":"{id}","ts":{id},"features":{{"x":1.0,"c":"a"}}}}"#);
            e.on_event(ev.as_bytes(), 0, 0, i64::MAX).expect("scored");
            e.on_label(format!(r#"{{"id":"{id}","label":1}}"#).as_bytes(), 0);
        }
        assert_eq!(e.skipped(Skip::WeightChange), 50);
        assert_eq!(e.counters().updates, 0);
        assert!(
            e.model().w.iter().all(|w| *w == 0.0),
            "the model is untouched"
        );
    }

    #[test]
    fn an_operator_freeze_holds_until_unfrozen_and_survives_a_snapshot() {
        use crate::engine::Engine;
        use crate::join::MemoryBackend;
        let mut cfg = crate::config::Config::default();
        cfg.features.hash_bits = 12;
        let mut e = Engine::new(cfg, |_| (MemoryBackend::default(), None));
        let feed = |e: &mut Engine<MemoryBackend>, from: u32, n: u32| {
            for id in from..from + n {
                let ev = format!(r#"{{"id":"{id}","ts":{id},"features":{{"x":{id}}}}}"#);
                e.on_event(ev.as_bytes(), 0, 0, i64::MAX).expect("scored");
                e.on_label(format!(r#"{{"id":"{id}","label":1}}"#).as_bytes(), 0);
            }
        };
        feed(&mut e, 0, 10);
        e.set_operator_frozen(true);
        feed(&mut e, 10, 5);
        assert_eq!(e.counters().updates, 10);
        assert_eq!(e.skipped(Skip::Operator), 5);
        assert_eq!(e.quality().total.summary().n, 15, "still measured");
        // The freeze is part of the learner state.
        let st = e.learner_state();
        assert!(st.guard.operator_frozen);
        let mut restored = Engine::new(e.config().clone(), |_| (MemoryBackend::default(), None));
        restored.restore_learner(st);
        assert!(restored.operator_frozen());
        assert!(
            e.learning_frozen() && e.model_view(0).frozen,
            "/model shows the freeze"
        );
        e.set_operator_frozen(false);
        assert!(!e.learning_frozen());
        feed(&mut e, 15, 5);
        assert_eq!(e.counters().updates, 15);
    }

    /// The rate table: two labels per entity per hour of label time; a new hour starts over;
    /// an older label counts in the current hour; no entity or no limit admits everything.
    #[test]
    fn entity_rates_admit_the_limit_per_window_of_label_time() {
        let g = GuardConfig {
            label_rate_limit: 2,
            label_rate_window: crate::duration::HumanDuration::from_secs(3600),
            ..GuardConfig::default()
        };
        let h = 3_600_000i64;
        let t0 = 1_780_000_000_000i64 / h * h;
        let mut r = EntityRates::default();
        let table: [(Option<u64>, Option<i64>, bool); 11] = [
            (Some(1), Some(t0), true),
            (Some(1), Some(t0 + 1), true),
            (Some(1), Some(t0 + 2), false),
            (Some(2), Some(t0 + 3), true),
            (None, Some(t0 + 4), true),
            (None, Some(t0 + 5), true),
            (Some(1), None, false),
            (Some(1), Some(t0 + h), true),
            (Some(1), Some(t0 + 7), true),
            (Some(1), Some(t0 + h + 1), false),
            (Some(2), Some(t0 + 2 * h - 1), true),
        ];
        for (i, (entity, ts, want)) in table.into_iter().enumerate() {
            assert_eq!(
                r.admit(&g, entity, ts),
                want,
                "row {i}: {entity:?} at {ts:?}"
            );
        }
        let off = GuardConfig::default();
        assert!((0..10).all(|_| r.admit(&off, Some(1), Some(t0 + 2 * h))));
    }

    proptest::proptest! {
        /// Against a plain model: the current window is the largest window of label time seen;
        /// an entity is admitted while fewer than `limit` of its labels were admitted in it.
        #[test]
        fn entity_rates_match_a_plain_model(
            labels in proptest::collection::vec((0u64..4, proptest::option::of(0i64..5_000)), 0..200),
            limit in 1u32..4,
        ) {
            let g = GuardConfig {
                label_rate_limit: limit,
                label_rate_window: crate::duration::HumanDuration(std::time::Duration::from_millis(1_000)),
                ..GuardConfig::default()
            };
            let mut r = EntityRates::default();
            let mut current = 0i64;
            let mut admitted: Vec<(i64, u64)> = Vec::new();
            for (entity, ts) in labels {
                if let Some(ts) = ts {
                    current = current.max(ts / 1_000);
                }
                let n = admitted.iter().filter(|&&(w, e)| w == current && e == entity).count();
                let want = n < limit as usize;
                if want {
                    admitted.push((current, entity));
                }
                proptest::prop_assert_eq!(r.admit(&g, Some(entity), ts), want);
            }
        }
    }

    /// Through the engine: a flooding entity's labels beyond the limit are counted
    /// `rate_limited`, neither joined nor learned; their entries stay pending (a later label in
    /// a new window joins them); other entities and entity-less labels are untouched.
    #[test]
    fn the_engine_drops_labels_over_an_entitys_rate() {
        use crate::engine::{Engine, LabelCount, LabelResult};
        use crate::join::MemoryBackend;
        let mut cfg = crate::config::Config::default();
        cfg.features.hash_bits = 12;
        cfg.guard.label_rate_limit = 3;
        let problems = cfg.validate();
        assert!(
            problems.iter().any(|p| p.key == "guard.label_rate_limit"),
            "a limit without an entity field is a config error naming the key: {problems:?}"
        );
        cfg.input.label_entity_field = "card".into();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let mut e = Engine::new(cfg, |_| (MemoryBackend::default(), None));
        let t0 = 1_780_000_000_000i64 / 3_600_000 * 3_600_000;
        for id in 0..20 {
            let ev = format!(
                r#"{{"id":"{id}","ts":{},"features":{{"x":{id}}}}}"#,
                t0 + id
            );
            e.on_event(ev.as_bytes(), 0, 0, i64::MAX).expect("scored");
        }
        let label = |e: &mut Engine<MemoryBackend>, id: u32, card: &str, ts: i64| {
            let l = format!(r#"{{"id":"{id}","label":1,"ts":{ts},"card":{card}}}"#);
            match e.on_label(l.as_bytes(), 0) {
                LabelResult::Handled(o) => o,
                LabelResult::Invalid(err) => panic!("{err}"),
            }
        };
        // Card "A" (as a string, and as the number's text: the same entity) floods 8 labels.
        for id in 0..8 {
            let card = if id % 2 == 0 { r#""7""# } else { "7" };
            let want = if id < 3 {
                LabelCount::Joined
            } else {
                LabelCount::RateLimited
            };
            assert_eq!(label(&mut e, id, card, t0 + 100), Some(want), "label {id}");
        }
        // Another card and a label without one are not limited.
        for id in 8..12 {
            assert_eq!(
                label(&mut e, id, r#""B""#, t0 + 100),
                Some(if id < 11 {
                    LabelCount::Joined
                } else {
                    LabelCount::RateLimited
                })
            );
        }
        assert_eq!(
            label(&mut e, 12, "null", t0 + 100),
            Some(LabelCount::Joined)
        );
        assert_eq!(e.counters().label(LabelCount::RateLimited), 6);
        assert_eq!(e.counters().updates, 7);
        // A dropped label did not close its entry: in the next hour it joins.
        assert_eq!(
            label(&mut e, 5, "7", t0 + 3_600_000),
            Some(LabelCount::Joined)
        );
        assert_eq!(e.counters().updates, 8);
        // A wrongly typed entity is refused with its own reason.
        let bad = e.on_label(br#"{"id":"13","label":1,"card":{"n":1}}"#, 0);
        assert!(
            matches!(&bad, LabelResult::Invalid(err) if err.reason == crate::event::Reason::InvalidEntity),
            "{bad:?}"
        );
        // The counts are part of the learner state.
        let st = e.learner_state();
        assert_eq!(st.guard.rates.entities(), 1);
    }
}
