//! A deterministic generator of fraud-like traffic with a hidden logistic ground truth.
//!
//! Events carry numeric (heavy-tailed amount, distance; counts; card age with missing values),
//! boolean and categorical features, including a high-cardinality merchant id. The probability
//! of fraud is σ(truth · features), with the intercept solved so the positive rate matches the
//! request. Labels follow their event after a log-uniform delay. Optionally the ground truth
//! changes abruptly at one event (drift), and a fraction of records is malformed.
//! The same seed gives the same bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use crate::model::{log_loss_prob, sigmoid};

/// xoshiro256** seeded by splitmix64: fast, well-tested and reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Zipf-like index in [0, n): heavier at small indices (inverse-CDF of a power law).
    pub fn zipf(&mut self, n: u64, s: f64) -> u64 {
        let u = self.uniform();
        let x = ((n as f64 + 1.0).powf(1.0 - s) - 1.0) * u + 1.0;
        (x.powf(1.0 / (1.0 - s)) as u64)
            .saturating_sub(1)
            .min(n - 1)
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Events to generate.
    pub count: u64,
    /// Seed.
    pub seed: u64,
    /// Target fraction of positive labels.
    pub positive_rate: f64,
    /// Event time of the first event, epoch ms.
    pub start_ts: i64,
    /// Events per second of event time.
    pub rate: f64,
    /// Shortest label delay, ms.
    pub label_delay_min_ms: i64,
    /// Longest label delay, ms.
    pub label_delay_max_ms: i64,
    /// Fraction of events that get a label.
    pub label_fraction: f64,
    /// The ground truth changes at this event index.
    pub drift_at: Option<u64>,
    /// Fraction of event records replaced by malformed ones.
    pub malformed_rate: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            count: 100_000,
            seed: 1,
            positive_rate: 0.02,
            start_ts: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            rate: 100.0,
            label_delay_min_ms: 60_000,
            label_delay_max_ms: 3_600_000,
            label_fraction: 1.0,
            drift_at: None,
            malformed_rate: 0.0,
        }
    }
}

const COUNTRIES: usize = 20;
const MCCS: usize = 40;
const MERCHANTS: u64 = 20_000;
const CHANNELS: [&str; 3] = ["web", "app", "pos"];

/// The hidden ground truth.
#[derive(Debug, Clone)]
struct Truth {
    bias: f64,
    amount: f64,
    distance: f64,
    card_age: f64,
    tx_count: f64,
    new_device: f64,
    night: f64,
    country: Vec<f64>,
    mcc: Vec<f64>,
    channel: [f64; 3],
    risky_merchant_salt: u64,
    risky_merchant: f64,
}

impl Truth {
    fn draw(rng: &mut Rng, scale: f64) -> Self {
        Self {
            bias: 0.0,
            amount: 0.7 * scale,
            distance: 0.4,
            card_age: -0.5,
            tx_count: 0.5,
            new_device: 1.2 * scale,
            night: 0.8,
            country: (0..COUNTRIES).map(|_| 0.6 * rng.normal()).collect(),
            mcc: (0..MCCS).map(|_| 0.6 * rng.normal()).collect(),
            channel: [0.3, 0.0, -0.4],
            risky_merchant_salt: rng.next_u64(),
            risky_merchant: 2.0,
        }
    }

    fn risky(&self, merchant: u64) -> bool {
        // 3 % of merchants are risky.
        (merchant.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.risky_merchant_salt) % 100 < 3
    }

    fn logit(&self, f: &Features) -> f64 {
        let mut z = self.bias
            + self.amount * ((f.amount.ln_1p() - 3.5) / 1.2)
            + self.distance * ((f.distance.ln_1p() - 2.5) / 1.3)
            + self.tx_count * ((f.tx_count as f64).ln_1p() - 1.2)
            + if f.new_device { self.new_device } else { 0.0 }
            + if f.hour < 6 { self.night } else { 0.0 }
            + self.country[f.country]
            + self.mcc[f.mcc]
            + self.channel[f.channel]
            + if self.risky(f.merchant) {
                self.risky_merchant
            } else {
                0.0
            };
        if let Some(age) = f.card_age {
            z += self.card_age * ((age.ln_1p() - 5.0) / 1.0);
        }
        z
    }
}

#[derive(Debug, Clone)]
struct Features {
    amount: f64,
    distance: f64,
    tx_count: u32,
    card_age: Option<f64>,
    new_device: bool,
    hour: u32,
    country: usize,
    mcc: usize,
    channel: usize,
    merchant: u64,
}

fn draw_features(rng: &mut Rng, drifted: bool) -> Features {
    let country_shift = if drifted { 5 } else { 0 };
    Features {
        amount: (3.5 + 1.2 * rng.normal()).exp(),
        distance: (2.5 + 1.3 * rng.normal()).exp(),
        tx_count: {
            // Geometric with mean 3.
            let u = rng.uniform().max(1e-12);
            (u.ln() / (0.75f64).ln()) as u32
        },
        card_age: if rng.uniform() < 0.05 {
            None
        } else {
            Some((5.0 + rng.normal()).exp())
        },
        new_device: rng.uniform() < 0.1,
        hour: rng.below(24) as u32,
        country: (rng.zipf(COUNTRIES as u64, 1.3) as usize + country_shift) % COUNTRIES,
        mcc: rng.zipf(MCCS as u64, 1.1) as usize,
        channel: rng.below(3) as usize,
        merchant: rng.zipf(MERCHANTS, 1.05),
    }
}

/// Solves the intercept so the mean probability over a sample equals `rate` (bisection).
fn calibrate(truth: &mut Truth, rng: &mut Rng, drifted: bool, rate: f64) {
    let sample: Vec<Features> = (0..20_000).map(|_| draw_features(rng, drifted)).collect();
    let (mut lo, mut hi) = (-30.0, 10.0);
    for _ in 0..60 {
        truth.bias = (lo + hi) / 2.0;
        let mean =
            sample.iter().map(|f| sigmoid(truth.logit(f))).sum::<f64>() / sample.len() as f64;
        if mean > rate {
            hi = truth.bias
        } else {
            lo = truth.bias
        }
    }
}

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An event line (possibly malformed) with its time.
    Event {
        /// Event time, epoch ms.
        ts: i64,
        /// The JSON line.
        line: String,
    },
    /// A label line with its time.
    Label {
        /// Label time, epoch ms.
        ts: i64,
        /// The JSON line.
        line: String,
    },
}

/// Totals of a generated stream.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SimSummary {
    /// Events written (valid).
    pub events: u64,
    /// Malformed event records written.
    pub malformed: u64,
    /// Labels written.
    pub labels: u64,
    /// Positive labels.
    pub positives: u64,
    /// Mean log loss of the true probabilities on the labels.
    pub truth_log_loss: f64,
}

/// The generator: yields events and labels merged in time order (labels at their time).
#[derive(Debug)]
pub struct Simulator {
    cfg: SimConfig,
    rng: Rng,
    truth: Truth,
    drifted_truth: Truth,
    i: u64,
    pending: BinaryHeap<Reverse<(i64, u64, bool)>>,
    /// Truth probability of each event index, for evaluation (id → p).
    pub truth_p: Vec<f32>,
    summary: SimSummary,
    ll_sum: f64,
}

impl Simulator {
    /// A simulator for `cfg`.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let mut truth = Truth::draw(&mut rng, 1.0);
        calibrate(&mut truth, &mut rng, false, cfg.positive_rate);
        let mut drifted_truth = Truth::draw(&mut rng, 1.6);
        drifted_truth.new_device = 0.2;
        calibrate(&mut drifted_truth, &mut rng, true, cfg.positive_rate);
        Self {
            cfg,
            rng,
            truth,
            drifted_truth,
            i: 0,
            pending: BinaryHeap::new(),
            truth_p: Vec::new(),
            summary: SimSummary::default(),
            ll_sum: 0.0,
        }
    }

    /// The id of event `i`.
    pub fn id(i: u64) -> String {
        format!("tx-{i}")
    }

    /// Totals so far.
    pub fn summary(&self) -> SimSummary {
        let mut s = self.summary.clone();
        s.truth_log_loss = if s.labels > 0 {
            self.ll_sum / s.labels as f64
        } else {
            f64::NAN
        };
        s
    }

    fn event_ts(&self, i: u64) -> i64 {
        self.cfg.start_ts + (i as f64 * 1000.0 / self.cfg.rate) as i64
    }

    /// The next record in time order, or `None` at the end.
    pub fn next_record(&mut self) -> Option<Record> {
        let next_event_ts = (self.i < self.cfg.count).then(|| self.event_ts(self.i));
        if let Some(Reverse((lts, idx, y))) = self.pending.peek().copied()
            && next_event_ts.is_none_or(|ets| lts < ets)
        {
            self.pending.pop();
            self.summary.labels += 1;
            self.summary.positives += u64::from(y);
            let line = format!(
                r#"{{"id":"{}","label":{},"ts":{lts}}}"#,
                Self::id(idx),
                u8::from(y)
            );
            return Some(Record::Label { ts: lts, line });
        }
        let ts = next_event_ts?;
        let i = self.i;
        self.i += 1;
        if self.cfg.malformed_rate > 0.0 && self.rng.uniform() < self.cfg.malformed_rate {
            self.summary.malformed += 1;
            self.truth_p.push(f32::NAN);
            return Some(Record::Event {
                ts,
                line: malformed(i, ts, &mut self.rng),
            });
        }
        let drifted = self.cfg.drift_at.is_some_and(|d| i >= d);
        let f = draw_features(&mut self.rng, drifted);
        let truth = if drifted {
            &self.drifted_truth
        } else {
            &self.truth
        };
        let p = sigmoid(truth.logit(&f));
        let y = self.rng.uniform() < p;
        self.truth_p.push(p as f32);
        if self.rng.uniform() < self.cfg.label_fraction {
            let (lo, hi) = (
                self.cfg.label_delay_min_ms.max(1) as f64,
                self.cfg.label_delay_max_ms.max(1) as f64,
            );
            let delay = (lo.ln() + (hi.ln() - lo.ln()) * self.rng.uniform()).exp() as i64;
            self.pending.push(Reverse((ts + delay, i, y)));
            self.ll_sum += log_loss_prob(p, y);
        }
        self.summary.events += 1;
        let mut line = String::with_capacity(320);
        let _ = write!(
            line,
            r#"{{"id":"{}","ts":{ts},"features":{{"amount":{:.2},"distance_km":{:.1},"tx_count_24h":{},"card_age_days":{},"new_device":{},"hour":"{:02}","country":"C{:02}","mcc":"{}","channel":"{}","merchant":"m{}"}}}}"#,
            Self::id(i),
            f.amount,
            f.distance,
            f.tx_count,
            f.card_age.map_or("null".to_string(), |a| format!("{a:.0}")),
            f.new_device,
            f.hour,
            f.country,
            5000 + f.mcc * 37,
            CHANNELS[f.channel],
            f.merchant,
        );
        Some(Record::Event { ts, line })
    }
}

fn malformed(i: u64, ts: i64, rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => "{not json".to_string(),
        1 => format!(r#"{{"ts":{ts},"features":{{"amount":1}}}}"#),
        2 => format!(r#"{{"id":"tx-{i}","ts":{ts},"features":{{"amount":1e400}}}}"#),
        3 => format!(r#"{{"id":"tx-{i}","ts":{ts},"features":[1,2]}}"#),
        4 => format!(r#"{{"id":"","ts":{ts},"features":{{}}}}"#),
        _ => format!(r#"{{"id":"tx-{i}","ts":"soon","features":{{}}}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_ordered_and_near_the_requested_rate() {
        let cfg = SimConfig {
            count: 20_000,
            seed: 3,
            ..SimConfig::default()
        };
        let collect = |cfg: SimConfig| {
            let mut s = Simulator::new(cfg);
            let mut v = Vec::new();
            while let Some(r) = s.next_record() {
                v.push(r);
            }
            (v, s.summary())
        };
        let (a, sa) = collect(cfg.clone());
        let (b, _) = collect(cfg);
        assert_eq!(a, b);
        let ts: Vec<i64> = a
            .iter()
            .map(|r| match r {
                Record::Event { ts, .. } | Record::Label { ts, .. } => *ts,
            })
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "records are in time order"
        );
        assert_eq!(sa.events, 20_000);
        assert_eq!(sa.labels, 20_000);
        let rate = sa.positives as f64 / sa.labels as f64;
        assert!((0.01..0.03).contains(&rate), "positive rate {rate}");
    }

    #[test]
    fn zipf_stays_in_range() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            assert!(r.zipf(10, 1.1) < 10);
        }
    }
}
