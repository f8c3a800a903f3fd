//! The learner: owns the encoder, model, optimizer, join rules and metrics, and applies events
//! and labels in the order it is given them. Replay and the Kafka worker both drive this one
//! type, so the same logs in the same order give the same model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Config, OnExpiry};
use crate::drift::{Drift, DriftState, WindowReport};
use crate::event::{Contribution, DecodeError, Decoder, Label, Prediction, RawEvent, Reason};
use crate::features::{Encoded, Encoder, SparseVec};
use crate::guard::{GuardState, Skip, Transition};
use crate::inspect::{self, BucketNames, ModelView};
use crate::join::{
    Entry, InsertOutcome, JoinBackend, Joined, Joiner, JoinerState, LabelOutcome, Swept,
};
use crate::metrics::Progressive;
use crate::model::Model;
use crate::optim::{Optimizer, UpdateError};

/// Label outcomes, as counted (and exported as `streamlr_labels_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelCount {
    /// Joined to its entry and learned.
    Joined,
    /// Entry expired without a label (dropped).
    Expired,
    /// Entry expired and an implicit label was learned.
    Implicit,
    /// Same label again.
    Duplicate,
    /// A different label for an already-joined id (ignored).
    Conflict,
    /// The event was never seen (the label waited and gave up).
    Unknown,
    /// The entry had already expired.
    Late,
    /// The label record could not be decoded.
    Invalid,
    /// Over its entity's `guard.label_rate_limit`: dropped before the join.
    RateLimited,
}

impl LabelCount {
    /// Every outcome.
    pub const ALL: [LabelCount; 9] = [
        LabelCount::Joined,
        LabelCount::Expired,
        LabelCount::Implicit,
        LabelCount::Duplicate,
        LabelCount::Conflict,
        LabelCount::Unknown,
        LabelCount::Late,
        LabelCount::Invalid,
        LabelCount::RateLimited,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelCount::Joined => "joined",
            LabelCount::Expired => "expired",
            LabelCount::Implicit => "implicit",
            LabelCount::Duplicate => "duplicate",
            LabelCount::Conflict => "conflict",
            LabelCount::Unknown => "unknown",
            LabelCount::Late => "late",
            LabelCount::Invalid => "invalid",
            LabelCount::RateLimited => "rate_limited",
        }
    }
}

/// Everything the engine counts. Part of the checkpoint, so counts survive restarts exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Events scored (a prediction was produced).
    pub events_scored: u64,
    /// Events refused, by reason (indexed like [`Reason::ALL`]).
    pub events_invalid: Vec<u64>,
    /// Scored events whose id was already pending (the first entry is kept).
    pub events_duplicate_id: u64,
    /// Scored events older than the join window (nothing can join them).
    pub events_too_old: u64,
    /// Undeclared features skipped (`features.undeclared = "ignore"`).
    pub features_ignored: u64,
    /// Label outcomes (indexed like [`LabelCount::ALL`]).
    pub labels: Vec<u64>,
    /// Labels refused, by reason (indexed like [`Reason::ALL`]).
    pub labels_invalid: Vec<u64>,
    /// Model updates applied.
    pub updates: u64,
    /// Model updates refused because they were non-finite.
    pub updates_refused: u64,
    /// Labels joined while learning was frozen by a drift alert (not learned).
    pub updates_frozen: u64,
}

impl Counters {
    /// All zero, with a slot for every reason and outcome.
    pub fn new() -> Self {
        Self {
            events_invalid: vec![0; Reason::ALL.len()],
            labels: vec![0; LabelCount::ALL.len()],
            labels_invalid: vec![0; Reason::ALL.len()],
            ..Self::default()
        }
    }

    /// Count of one label outcome.
    pub fn label(&self, c: LabelCount) -> u64 {
        self.labels.get(c as usize).copied().unwrap_or(0)
    }

    /// Events refused, all reasons.
    pub fn events_invalid_total(&self) -> u64 {
        self.events_invalid.iter().sum()
    }

    /// The counters with every outcome and reason named (for `checkpoint show`, reports).
    pub fn named(&self) -> serde_json::Value {
        let by_reason = |v: &[u64]| -> serde_json::Map<String, serde_json::Value> {
            Reason::ALL
                .iter()
                .zip(v)
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| (r.as_str().to_string(), (*n).into()))
                .collect()
        };
        let labels: serde_json::Map<String, serde_json::Value> = LabelCount::ALL
            .iter()
            .map(|l| (l.as_str().to_string(), self.label(*l).into()))
            .collect();
        serde_json::json!({
            "events_scored": self.events_scored,
            "events_invalid": self.events_invalid_total(),
            "events_invalid_by_reason": by_reason(&self.events_invalid),
            "events_duplicate_id": self.events_duplicate_id,
            "events_too_old": self.events_too_old,
            "features_ignored": self.features_ignored,
            "labels": labels,
            "labels_invalid_by_reason": by_reason(&self.labels_invalid),
            "updates": self.updates,
            "updates_refused": self.updates_refused,
            "updates_frozen": self.updates_frozen,
        })
    }

    fn invalid_event(&mut self, r: Reason) {
        self.events_invalid[reason_index(r)] += 1;
    }
}

fn reason_index(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

/// An event turned into its feature vector, ready to be scored (possibly on another thread).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    /// The id.
    pub id: String,
    /// Event time (the record's, or the fallback).
    pub ts: i64,
    /// The feature vector.
    pub x: SparseVec,
    /// Undeclared features skipped.
    pub ignored: u32,
    /// A name per slot, when the caller asked for them (to name contributions).
    pub names: Vec<String>,
    /// The event's values per drift column (see [`Drift::extract`]); `None` when drift does
    /// not watch this event ([`Drift::samples`]).
    pub drift: Option<Vec<f64>>,
}

/// Encodes a decoded event with `encoder` (whose scaling statistics it updates) into an owned
/// [`EncodedEvent`]; `buf` is scratch space.
pub fn encode_event(
    encoder: &mut Encoder,
    drift: &Drift,
    ev: &RawEvent<'_>,
    fallback_ts: i64,
    buf: &mut Encoded,
    with_names: bool,
) -> Result<EncodedEvent, DecodeError> {
    encoder.encode(ev, buf)?;
    let names = if with_names {
        buf.origin
            .iter()
            .map(|o| encoder.slot_name(ev, *o))
            .collect()
    } else {
        Vec::new()
    };
    let values = drift.samples(&ev.id).then(|| {
        let mut values = Vec::new();
        drift.extract(ev, &mut values);
        values
    });
    Ok(EncodedEvent {
        id: ev.id.to_string(),
        ts: ev.ts.unwrap_or(fallback_ts),
        x: buf.x.clone(),
        ignored: buf.ignored,
        names,
        drift: values,
    })
}

/// The result of scoring one event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Probability of the positive class.
    pub score: f64,
    /// Event time used (the record's, or the fallback).
    pub event_ts: i64,
    /// Version of the model that scored it.
    pub model_version: u64,
}

/// What became of a label record.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelResult {
    /// Decoded and handled with this outcome (`None` while it waits for its event).
    Handled(Option<LabelCount>),
    /// Refused.
    Invalid(DecodeError),
}

/// The learner's mutable state besides the join store, as saved in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnerState {
    /// Model version.
    pub version: u64,
    /// Weights.
    pub model: Model,
    /// Optimizer state.
    pub optim: Optimizer,
    /// Online scaling statistics.
    pub scaler: crate::features::ScalerState,
    /// Progressive metrics.
    pub quality: Progressive,
    /// Counters.
    pub counters: Counters,
    /// Drift reference, window and freeze state.
    pub drift: DriftState,
    /// Guardrail state: loss windows, the pause, refused and skipped updates.
    pub guard: GuardState,
}

impl LearnerState {
    /// The state as a [`LearnerView`].
    pub fn view(&self) -> LearnerView<'_> {
        LearnerView {
            version: self.version,
            model: &self.model,
            optim: &self.optim,
            scaler: self.scaler.clone(),
            quality: &self.quality,
            counters: &self.counters,
            drift: &self.drift,
            guard: &self.guard,
        }
    }
}

/// [`LearnerState`] borrowed from the engine (the scaler statistics, small, are copied out).
#[derive(Debug)]
pub struct LearnerView<'a> {
    /// Model version.
    pub version: u64,
    /// Weights.
    pub model: &'a Model,
    /// Optimizer state.
    pub optim: &'a Optimizer,
    /// Online scaling statistics.
    pub scaler: crate::features::ScalerState,
    /// Progressive metrics.
    pub quality: &'a Progressive,
    /// Counters.
    pub counters: &'a Counters,
    /// Drift reference, window and freeze state.
    pub drift: &'a DriftState,
    /// Guardrail state.
    pub guard: &'a GuardState,
}

/// Makes the join backend of a partition the engine has not seen yet.
pub type MakeBackend<B> = Box<dyn FnMut(i32) -> (B, Option<JoinerState>) + Send>;

/// The learner. One model for everything it is given; one join shard (rules + store) per
/// Kafka partition, since co-partitioned topics make every partition its own join domain.
pub struct Engine<B> {
    cfg: Config,
    decoder: Decoder,
    encoder: Encoder,
    model: Model,
    optim: Optimizer,
    version: u64,
    shards: BTreeMap<i32, Joiner<B>>,
    make_backend: MakeBackend<B>,
    quality: Progressive,
    counters: Counters,
    enc: Encoded,
    top: Vec<(usize, f64)>,
    contributions: bool,
    swept: Swept,
    drift: Drift,
    drift_values: Vec<f64>,
    drift_reports: Vec<WindowReport>,
    guard: GuardState,
    guard_transitions: Vec<Transition>,
    names: BucketNames,
    /// Label delays (label time − event time, ms) of joins since the last take, when collected.
    label_delays: Option<Vec<i64>>,
}

impl<B: std::fmt::Debug> std::fmt::Debug for Engine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("version", &self.version)
            .field("shards", &self.shards.keys().collect::<Vec<_>>())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<B: JoinBackend> Engine<B> {
    /// A fresh learner for a validated config; `make_backend(partition)` makes the join store
    /// of a partition the first time it is needed (or see [`Self::add_shard`]).
    pub fn new(
        cfg: Config,
        make_backend: impl FnMut(i32) -> (B, Option<JoinerState>) + Send + 'static,
    ) -> Self {
        let encoder = Encoder::new(&cfg.features);
        let dim = encoder.dim();
        let m = &cfg.metrics;
        Self {
            decoder: Decoder::new(cfg.input.clone(), cfg.limits.clone()),
            model: Model::new(dim),
            optim: Optimizer::new(cfg.model.optimizer, dim),
            version: 1,
            shards: BTreeMap::new(),
            make_backend: Box::new(make_backend),
            quality: Progressive::new(cfg.model.threshold, m.calibration_bins, m.auc_window),
            counters: Counters::new(),
            encoder,
            enc: Encoded::default(),
            top: Vec::new(),
            contributions: true,
            swept: Swept::default(),
            drift: Drift::new(&cfg.drift, &cfg.features),
            drift_values: Vec::new(),
            drift_reports: Vec::new(),
            guard: GuardState::default(),
            guard_transitions: Vec::new(),
            names: BucketNames::default(),
            label_delays: None,
            cfg,
        }
    }

    /// Counts an event that could not be decoded or encoded (here or by [`encode_event`] on
    /// another thread).
    pub fn reject_event(&mut self, e: &DecodeError) {
        self.counters.invalid_event(e.reason);
    }

    /// Decodes and scores one event message: see [`Self::score`]. An event time more than
    /// `limits.max_future_skew` ahead of `now_ms` is refused (`timestamp_in_future`).
    pub fn on_event(
        &mut self,
        bytes: &[u8],
        partition: i32,
        fallback_ts: i64,
        now_ms: i64,
    ) -> Result<Prediction, DecodeError> {
        match self.decoder.decode_event(bytes) {
            Ok(ev) => {
                let skew = self.cfg.limits.max_future_skew.as_millis_i64();
                if let Some(ts) = ev.ts
                    && ts > now_ms.saturating_add(skew)
                {
                    let e = DecodeError::new(
                        Reason::TimestampInFuture,
                        format!(
                            "event time {ts} is more than {skew} ms ahead of the clock ({now_ms})"
                        ),
                    );
                    self.reject_event(&e);
                    return Err(e);
                }
                self.score(&ev, partition, fallback_ts, now_ms)
            }
            Err(e) => {
                self.reject_event(&e);
                Err(e)
            }
        }
    }

    /// Scores a decoded event from `partition`, remembers it for its label, and advances that
    /// partition's watermark. `fallback_ts` is used when the event carries no time; `now_ms`
    /// becomes `scored_at`. Returns the prediction, or why the event was refused by the schema.
    pub fn score(
        &mut self,
        ev: &RawEvent<'_>,
        partition: i32,
        fallback_ts: i64,
        now_ms: i64,
    ) -> Result<Prediction, DecodeError> {
        let s = self.score_only(ev, partition, fallback_ts)?;
        Ok(self.prediction(ev, &s, now_ms))
    }

    /// Like [`Self::score`], without building the prediction record: for callers that do not
    /// emit it (replay without `--predictions`). The learned state is the same.
    pub fn score_only(
        &mut self,
        ev: &RawEvent<'_>,
        partition: i32,
        fallback_ts: i64,
    ) -> Result<Scored, DecodeError> {
        if let Err(e) = self.encoder.encode(ev, &mut self.enc) {
            self.counters.invalid_event(e.reason);
            return Err(e);
        }
        if self.names.pending() {
            for (pos, &b) in self.enc.x.idx.iter().enumerate() {
                if self.names.wants(b) {
                    let name = self.encoder.slot_name(ev, self.enc.origin[pos]);
                    self.names.note(b, name);
                }
            }
        }
        let ts = ev.ts.unwrap_or(fallback_ts);
        let x = self.enc.x.clone();
        let mut values = std::mem::take(&mut self.drift_values);
        let watched = self.drift.samples(&ev.id);
        if watched {
            self.drift.extract(ev, &mut values);
        }
        let drift = watched.then_some(values.as_slice());
        let scored = self.apply(&ev.id, partition, ts, x, self.enc.ignored, drift);
        self.drift_values = values;
        Ok(scored)
    }

    /// Scores an event that was encoded elsewhere (by [`encode_event`] on another thread, with
    /// an encoder that has seen the same events in the same order).
    pub fn apply_encoded(&mut self, e: EncodedEvent, partition: i32) -> Scored {
        if self.names.pending() {
            for (&b, name) in e.x.idx.iter().zip(&e.names) {
                if self.names.wants(b) {
                    self.names.note(b, name.clone());
                }
            }
        }
        self.apply(&e.id, partition, e.ts, e.x, e.ignored, e.drift.as_deref())
    }

    fn apply(
        &mut self,
        id: &str,
        partition: i32,
        ts: i64,
        x: SparseVec,
        ignored: u32,
        drift_values: Option<&[f64]>,
    ) -> Scored {
        self.counters.features_ignored += u64::from(ignored);
        let score = self.model.score(&x);
        if let Some(values) = drift_values
            && let Some(report) = self.drift.observe(values, score, self.counters.updates)
        {
            self.drift_reports.push(report);
        }
        // Contributions under the weights that scored the event, before anything is learned.
        let k = if self.contributions {
            self.cfg.model.top_contributions
        } else {
            0
        };
        self.model.top_contributions(&x, k, &mut self.top);
        let scored = Scored {
            score,
            event_ts: ts,
            model_version: self.version,
        };
        self.counters.events_scored += 1;
        let entry = Entry {
            x,
            score,
            model_version: self.version,
            event_ts: ts,
        };
        match self.shard(partition).insert(id, entry) {
            InsertOutcome::Stored => {}
            InsertOutcome::Joined(j) => self.learn(j, LabelCount::Joined),
            InsertOutcome::DuplicateId => self.counters.events_duplicate_id += 1,
            InsertOutcome::TooOld => self.counters.events_too_old += 1,
        }
        self.advance(partition, ts);
        scored
    }

    /// The prediction record for the event just scored by [`Self::score_only`], with its top
    /// contributions under the weights that scored it. Call before scoring the next event.
    pub fn prediction(&self, ev: &RawEvent<'_>, s: &Scored, now_ms: i64) -> Prediction {
        self.prediction_with(&ev.id, s, now_ms, |pos| {
            self.encoder.slot_name(ev, self.enc.origin[pos])
        })
    }

    /// The prediction record for the event just applied by [`Self::apply_encoded`], naming its
    /// contributions from `names` (one per slot).
    pub fn prediction_named(
        &self,
        id: &str,
        s: &Scored,
        now_ms: i64,
        names: &[String],
    ) -> Prediction {
        self.prediction_with(id, s, now_ms, |pos| {
            names.get(pos).cloned().unwrap_or_default()
        })
    }

    fn prediction_with(
        &self,
        id: &str,
        s: &Scored,
        now_ms: i64,
        name: impl Fn(usize) -> String,
    ) -> Prediction {
        let contributions = self
            .top
            .iter()
            .map(|&(pos, value)| Contribution {
                feature: name(pos),
                value,
            })
            .collect();
        let threshold = self.cfg.model.threshold;
        Prediction {
            id: id.to_string(),
            score: s.score,
            decision: s.score >= threshold,
            threshold,
            model_version: s.model_version,
            event_ts: s.event_ts,
            scored_at: now_ms,
            contributions,
        }
    }

    /// Counts a label that could not be decoded.
    pub fn reject_label(&mut self, e: &DecodeError) {
        self.counters.labels_invalid[reason_index(e.reason)] += 1;
        self.counters.labels[LabelCount::Invalid as usize] += 1;
    }

    /// Decodes and applies one label message from `partition`.
    pub fn on_label(&mut self, bytes: &[u8], partition: i32) -> LabelResult {
        self.on_label_at(bytes, partition, None)
    }

    /// Like [`Self::on_label`]; a label without a time of its own takes `record_ts` (the Kafka
    /// record's), which only measures label delay: the join does not depend on label times.
    pub fn on_label_at(
        &mut self,
        bytes: &[u8],
        partition: i32,
        record_ts: Option<i64>,
    ) -> LabelResult {
        match self.decoder.decode_label(bytes) {
            Ok(mut l) => {
                if l.ts.is_none() {
                    l.ts = record_ts;
                }
                LabelResult::Handled(self.apply_label(l, partition))
            }
            Err(e) => {
                self.reject_label(&e);
                LabelResult::Invalid(e)
            }
        }
    }

    /// Joins a decoded label and learns from it. Returns the outcome, or `None` while the label
    /// waits for its event.
    pub fn apply_label(&mut self, label: Label, partition: i32) -> Option<LabelCount> {
        if !self
            .guard
            .rates
            .admit(&self.cfg.guard, label.entity, label.ts)
        {
            self.counters.labels[LabelCount::RateLimited as usize] += 1;
            return Some(LabelCount::RateLimited);
        }
        let outcome = match self.shard(partition).label(label) {
            LabelOutcome::Joined(j) => {
                self.learn(j, LabelCount::Joined);
                return Some(LabelCount::Joined);
            }
            LabelOutcome::Waiting => return None,
            LabelOutcome::Duplicate => LabelCount::Duplicate,
            LabelOutcome::Conflict => LabelCount::Conflict,
            LabelOutcome::Late => LabelCount::Late,
        };
        self.counters.labels[outcome as usize] += 1;
        Some(outcome)
    }

    /// Moves the event-time watermark of `partition`, expiring what falls out of its window.
    pub fn advance(&mut self, partition: i32, ts: i64) {
        let mut swept = std::mem::take(&mut self.swept);
        self.shard(partition).advance(ts, &mut swept);
        self.settle(swept);
    }

    /// The join's wall-clock rule for every shard (see [`Joiner::tick`]); a live worker calls
    /// it periodically.
    pub fn tick(&mut self, now_wall: i64) {
        let mut swept = std::mem::take(&mut self.swept);
        for joiner in self.shards.values_mut() {
            joiner.tick(now_wall, &mut swept);
        }
        self.settle(swept);
    }

    /// The join shard of `partition`, made on first use.
    fn shard(&mut self, partition: i32) -> &mut Joiner<B> {
        let (cfg, make) = (&self.cfg.join, &mut self.make_backend);
        self.shards.entry(partition).or_insert_with(|| {
            let (backend, state) = make(partition);
            let mut j = Joiner::new(cfg, backend);
            if let Some(state) = state {
                j.restore_state(state);
            }
            j
        })
    }

    /// Installs the join shard of `partition` (restored from a store), replacing any.
    pub fn add_shard(&mut self, partition: i32, backend: B, state: Option<JoinerState>) {
        let mut j = Joiner::new(&self.cfg.join, backend);
        if let Some(state) = state {
            j.restore_state(state);
        }
        self.shards.insert(partition, j);
    }

    /// Removes the join shard of `partition` (a revoked partition).
    pub fn remove_shard(&mut self, partition: i32) -> Option<Joiner<B>> {
        self.shards.remove(&partition)
    }

    /// Counts what a sweep gave up on and learns implicit labels for expired entries.
    fn settle(&mut self, mut swept: Swept) {
        self.counters.labels[LabelCount::Unknown as usize] += swept.unknown_labels;
        swept.unknown_labels = 0;
        for e in swept.expired.drain(..) {
            match self.cfg.join.on_expiry {
                OnExpiry::Drop => self.counters.labels[LabelCount::Expired as usize] += 1,
                OnExpiry::Implicit => {
                    let j = Joined {
                        id: e.id,
                        entry: e.entry,
                        label: self.cfg.join.implicit_label == 1,
                        weight: 1.0,
                        label_ts: None,
                    };
                    self.learn(j, LabelCount::Implicit);
                }
            }
        }
        self.swept = swept;
    }

    fn learn(&mut self, j: Joined, count: LabelCount) {
        self.counters.labels[count as usize] += 1;
        if let (Some(delays), Some(lts)) = (self.label_delays.as_mut(), j.label_ts) {
            delays.push(lts.saturating_sub(j.entry.event_ts));
        }
        self.quality.add(j.entry.score, j.label);
        self.drift.on_label(j.label);
        if self.cfg.guard.loss_spike_factor > 0.0 {
            let loss = crate::model::log_loss_prob(j.entry.score, j.label);
            if let Some(t) = self.guard.observe(&self.cfg.guard, loss) {
                self.guard_transitions.push(t);
            }
        }
        if self.drift.frozen() {
            // Frozen by a drift alert: measured, not learned.
            self.counters.updates_frozen += 1;
            return;
        }
        if self.guard.paused {
            // Paused by a loss spike: measured, not learned.
            self.guard.loss_spike += 1;
            return;
        }
        if self.guard.operator_frozen {
            self.guard.operator += 1;
            return;
        }
        match self.optim.step(
            &self.cfg.model,
            &mut self.model,
            &j.entry.x,
            j.label,
            j.weight,
            self.cfg.guard.max_weight_change,
        ) {
            Ok(_) => {
                self.counters.updates += 1;
                if self
                    .counters
                    .updates
                    .is_multiple_of(self.cfg.model.version_every_updates)
                {
                    self.version += 1;
                }
            }
            Err(UpdateError::NonFinite) => self.counters.updates_refused += 1,
            Err(UpdateError::WeightChange) => self.guard.weight_change += 1,
        }
    }

    /// Joined labels not learned, by reason.
    pub fn skipped(&self, why: Skip) -> u64 {
        match why {
            Skip::NonFinite => self.counters.updates_refused,
            Skip::WeightChange => self.guard.weight_change,
            Skip::DriftFreeze => self.counters.updates_frozen,
            Skip::LossSpike => self.guard.loss_spike,
            Skip::Operator => self.guard.operator,
        }
    }

    /// Freezes (or unfreezes) learning by an operator's command: labels are measured, not
    /// learned, until unfrozen. Unfreezing also lifts a drift freeze.
    pub fn set_operator_frozen(&mut self, frozen: bool) {
        self.guard.operator_frozen = frozen;
        if !frozen {
            self.drift.unfreeze();
        }
    }

    /// Whether an operator froze learning.
    pub fn operator_frozen(&self) -> bool {
        self.guard.operator_frozen
    }

    /// Whether learning is frozen, by a drift alert or by an operator.
    pub fn learning_frozen(&self) -> bool {
        self.drift.frozen() || self.guard.operator_frozen
    }

    /// Whether a loss spike paused learning.
    pub fn loss_paused(&self) -> bool {
        self.guard.paused
    }

    /// Loss-spike pauses and resumptions since the last call (for the log).
    pub fn take_guard_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.guard_transitions)
    }

    /// Starts (or stops) collecting label delays for [`Self::take_label_delays`].
    pub fn collect_label_delays(&mut self, on: bool) {
        self.label_delays = on.then(Vec::new);
    }

    /// Label time − event time (ms) of each join with a known label time since the last call.
    pub fn take_label_delays(&mut self) -> Vec<i64> {
        self.label_delays
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The model as `/model` shows it: the `k` largest coefficients, named by the events seen
    /// since the buckets were first shown (see [`BucketNames`]).
    pub fn model_view(&mut self, k: usize) -> ModelView {
        ModelView {
            version: self.version,
            lineage: None,
            model: self.cfg.model.clone(),
            schema_digest: self.cfg.schema_digest(),
            buckets: self.model.dim(),
            nonzero: self.model.nonzero(),
            weight_norm: self.model.weight_norm(),
            intercept: self.model.bias(),
            updates: self.counters.updates,
            frozen: self.learning_frozen(),
            coefficients: inspect::coefficients(&self.model, k, &mut self.names),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Current model version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Progressive metrics.
    pub fn quality(&self) -> &Progressive {
        &self.quality
    }

    /// The join shards, by partition.
    pub fn shards(&self) -> &BTreeMap<i32, Joiner<B>> {
        &self.shards
    }

    /// The join shards, mutably (for commits).
    pub fn shards_mut(&mut self) -> &mut BTreeMap<i32, Joiner<B>> {
        &mut self.shards
    }

    /// Labels waiting for their event, all shards.
    pub fn waiting_labels(&self) -> usize {
        self.shards.values().map(Joiner::waiting_labels).sum()
    }

    /// Join entries held (all states), all shards.
    pub fn join_entries(&self) -> usize {
        self.shards.values().map(|j| j.backend().len()).sum()
    }

    /// Copies out the learner state (everything but the join store).
    pub fn learner_state(&self) -> LearnerState {
        LearnerState {
            version: self.version,
            model: self.model.clone(),
            optim: self.optim.clone(),
            scaler: self.encoder.scaler_state(),
            quality: self.quality.clone(),
            counters: self.counters.clone(),
            drift: self.drift.state().clone(),
            guard: self.guard.clone(),
        }
    }

    /// The learner state, borrowed (what a checkpoint encodes, without copying it).
    pub fn learner_view(&self) -> LearnerView<'_> {
        LearnerView {
            version: self.version,
            model: &self.model,
            optim: &self.optim,
            scaler: self.encoder.scaler_state(),
            quality: &self.quality,
            counters: &self.counters,
            drift: self.drift.state(),
            guard: &self.guard,
        }
    }

    /// Restores the learner state from a snapshot of the same schema.
    pub fn restore_learner(&mut self, s: LearnerState) {
        self.version = s.version;
        self.model = s.model;
        self.optim = s.optim;
        self.encoder.restore_scaler(&s.scaler);
        self.quality = s.quality;
        self.counters = s.counters;
        // A snapshot from a build with fewer reasons or outcomes: grow the tables (never index
        // past them).
        self.counters.events_invalid.resize(Reason::ALL.len(), 0);
        self.counters.labels_invalid.resize(Reason::ALL.len(), 0);
        self.counters.labels.resize(LabelCount::ALL.len(), 0);
        self.drift.restore(s.drift);
        self.guard = s.guard;
    }

    /// The drift monitor.
    pub fn drift(&self) -> &Drift {
        &self.drift
    }

    /// Drift window reports produced since the last call.
    pub fn take_drift_reports(&mut self) -> Vec<WindowReport> {
        std::mem::take(&mut self.drift_reports)
    }

    /// Starts a new drift reference from the next events (and unfreezes learning).
    pub fn rebaseline_drift(&mut self) {
        self.drift.rebaseline();
    }

    /// The feature encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Whether predictions will be built (and so need their top contributions). Replay turns it
    /// off when it writes no predictions; the learned model is the same either way.
    pub fn set_contributions(&mut self, on: bool) {
        self.contributions = on;
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Replaces the scaling statistics (after encoding happened on another thread).
    pub fn restore_scaler(&mut self, s: &crate::features::ScalerState) {
        self.encoder.restore_scaler(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::MemoryBackend;

    #[test]
    fn an_event_from_the_far_future_is_refused_and_moves_nothing() {
        let mut e = Engine::new(Config::default(), |_| (MemoryBackend::default(), None));
        let now = 1_780_000_000_000i64;
        let ev =
            |id: &str, ts: i64| format!(r#"{{"id":"{id}","ts":{ts},"features":{{"amount":1}}}}"#);
        e.on_event(ev("a", now).as_bytes(), 0, now, now)
            .expect("now");
        // Two hours ahead of the clock (default skew 1 h): refused.
        let r = e.on_event(ev("b", now + 2 * 3_600_000).as_bytes(), 0, now, now);
        assert_eq!(
            r.map(|_| ()).map_err(|e| e.reason),
            Err(Reason::TimestampInFuture)
        );
        // Half an hour ahead: accepted.
        e.on_event(ev("c", now + 30 * 60_000).as_bytes(), 0, now, now)
            .expect("within the skew");
        // The refused time did not move the watermark: a's entry is still pending and joins.
        assert_eq!(
            e.on_label(br#"{"id":"a","label":1}"#, 0),
            LabelResult::Handled(Some(LabelCount::Joined))
        );
        let c = e.counters();
        assert_eq!(c.events_invalid[reason_index(Reason::TimestampInFuture)], 1);
        assert_eq!(c.events_scored, 2);
    }

    #[test]
    fn the_model_view_names_its_buckets_from_the_events_that_follow() {
        let mut e = Engine::new(Config::default(), |_| (MemoryBackend::default(), None));
        let now = 1_780_000_000_000i64;
        for i in 0..50 {
            let ev = format!(
                r#"{{"id":"e{i}","ts":{now},"features":{{"amount":{},"country":"{}"}}}}"#,
                i % 7,
                if i % 2 == 0 { "DE" } else { "FR" }
            );
            e.on_event(ev.as_bytes(), 0, now, now).expect("valid");
            let label = format!(r#"{{"id":"e{i}","label":{}}}"#, i % 2);
            e.on_label(label.as_bytes(), 0);
        }
        let first = e.model_view(10);
        assert_eq!(first.updates, 50);
        assert!(!first.coefficients.is_empty());
        assert!(first.coefficients.iter().all(|c| c.feature.is_none()));
        // One more event with the same features names every bucket shown.
        let ev = format!(r#"{{"id":"x","ts":{now},"features":{{"amount":3,"country":"DE"}}}}"#);
        e.on_event(ev.as_bytes(), 0, now, now).expect("valid");
        let ev = format!(r#"{{"id":"y","ts":{now},"features":{{"amount":3,"country":"FR"}}}}"#);
        e.on_event(ev.as_bytes(), 0, now, now).expect("valid");
        let view = e.model_view(10);
        let mut names: Vec<&str> = view
            .coefficients
            .iter()
            .filter_map(|c| c.feature.as_deref())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["amount", "country=DE", "country=FR"]);
        // The names agree with the buckets the encoder uses.
        for c in &view.coefficients {
            assert_eq!(c.weight, e.model().w[c.bucket as usize]);
        }
    }

    #[test]
    fn label_delays_are_label_time_minus_event_time_when_collected() {
        let mut e = Engine::new(Config::default(), |_| (MemoryBackend::default(), None));
        let now = 1_780_000_000_000i64;
        let ev = |id: &str| format!(r#"{{"id":"{id}","ts":{now},"features":{{"amount":1}}}}"#);
        e.on_event(ev("a").as_bytes(), 0, now, now).expect("valid");
        e.on_label(br#"{"id":"a","label":1}"#, 0);
        assert!(e.take_label_delays().is_empty(), "not collected by default");
        e.collect_label_delays(true);
        for id in ["b", "c", "d"] {
            e.on_event(ev(id).as_bytes(), 0, now, now).expect("valid");
        }
        let with_ts = format!(r#"{{"id":"b","label":0,"ts":{}}}"#, now + 60_000);
        e.on_label_at(with_ts.as_bytes(), 0, Some(now + 1));
        e.on_label_at(br#"{"id":"c","label":0}"#, 0, Some(now + 5_000));
        e.on_label_at(br#"{"id":"d","label":0}"#, 0, None);
        // b: its own time wins over the record's; c: the record's; d: no time, no delay.
        assert_eq!(e.take_label_delays(), [60_000, 5_000]);
        assert!(e.take_label_delays().is_empty());
    }
}
