//! Telemetry at the edge: the worker publishes a [`Status`] snapshot about once a second (and
//! records latencies into hdrhistograms); a small HTTP/1.1 server on tokio serves it as
//! Prometheus text on `/metrics`, liveness on `/healthz`, readiness on `/readyz`, the model on
//! `/model`, and a live status page on `/` (which polls `/status.json`).
//!
//! Metric names live here, in [`render`], and only here. Labels stay low-cardinality (outcome,
//! reason, feature name — never an event id).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::drift::{ColumnStats, Level, WindowReport};
use crate::engine::{Counters, LabelCount};
use crate::event::Reason;
use crate::metrics::QualitySummary;

/// Drift flags raised by this process: per feature and level, and the model's score per level
/// (kept apart, so a declared feature named `score` is never counted as the score).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriftAlerts {
    /// By (feature, level).
    pub features: BTreeMap<(String, &'static str), u64>,
    /// The model's score, by level.
    pub score: BTreeMap<&'static str, u64>,
}

impl DriftAlerts {
    /// Counts the columns a drift window flagged; returns each with its level's name.
    pub fn count<'r>(&mut self, r: &'r WindowReport) -> Vec<(&'r ColumnStats, &'static str)> {
        let mut out = Vec::new();
        for c in r.flagged() {
            let level = if c.level == Level::Alert {
                "alert"
            } else {
                "warn"
            };
            let n = if c.score {
                self.score.entry(level).or_default()
            } else {
                self.features.entry((c.column.clone(), level)).or_default()
            };
            *n += 1;
            out.push((c, level));
        }
        out
    }
}

/// This process's resident memory in bytes, from `VmRSS` in /proc/self/status (Linux); `None`
/// elsewhere or when it cannot be read.
pub fn resident_bytes() -> Option<u64> {
    memory_status_bytes("VmRSS")
}

/// A memory figure of this process from /proc/self/status in bytes (`VmRSS`, `VmHWM`, …; Linux);
/// `None` elsewhere or when it cannot be read.
pub fn memory_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the worker last published.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Counters of the engine (restored from the checkpoint at start, so totals survive
    /// restarts).
    pub counters: Counters,
    /// Predictions produced by this process.
    pub predictions: u64,
    /// Dead letters produced by this process, by reason (indexed like [`Reason::ALL`]).
    pub dead_letters: Vec<u64>,
    /// Progressive quality over everything learned.
    pub quality: Option<QualitySummary>,
    /// Model version.
    pub model_version: u64,
    /// L2 norm of the weights.
    pub weight_norm: f64,
    /// Join entries held, all shards.
    pub join_entries: u64,
    /// What the join store's engine holds (tables, block cache, memtables).
    pub join_store: crate::store::StoreFigures,
    /// Resident memory of this process in bytes (`VmRSS`; `None` where /proc is not there).
    pub resident_bytes: Option<u64>,
    /// Seconds since the last checkpoint (`None` before the first).
    pub checkpoint_age_seconds: Option<f64>,
    /// Duration of the last cut, seconds: from its start until durable.
    pub checkpoint_duration_seconds: f64,
    /// How long the last cut stopped the processing loop, seconds (the store's commit and
    /// fsync run on a thread of their own meanwhile).
    pub checkpoint_pause_seconds: f64,
    /// Partitions assigned.
    pub partitions: usize,
    /// Records produced (predictions, dead letters, drift reports) the broker has not yet
    /// acknowledged.
    pub unacknowledged: u64,
    /// Why the worker is not ready (`None`: ready).
    pub not_ready: Option<String>,
    /// Learning frozen by drift.
    pub frozen: bool,
    /// Learning paused by a loss spike (`guard.loss_spike_factor`).
    pub loss_paused: bool,
    /// Joined labels not learned, by reason (like [`crate::guard::Skip::ALL`]).
    pub skipped: [u64; 5],
    /// The last drift window.
    pub drift: Option<WindowReport>,
    /// Drift thresholds (`drift.psi_warn`, `drift.psi_alert`), for the status page.
    pub psi_levels: (f64, f64),
    /// Drift flags raised by this process.
    pub drift_alerts: DriftAlerts,
    /// Records not yet processed per assigned partition: (topic, partition, lag), from the
    /// high watermark the consumer last fetched.
    pub lag: Vec<(String, i32, i64)>,
    /// The next offset the last durable checkpoint covers per assigned partition: (topic,
    /// partition, offset). A restart resumes there.
    pub checkpoint_offsets: Vec<(String, i32, i64)>,
    /// Reliability diagram of everything learned: (mean predicted, observed rate, count) per
    /// calibration bin.
    pub reliability: Vec<(f64, f64, u64)>,
    /// Offset commits of this process by outcome: stored by the group, failed, skipped (a newer
    /// commit covered it, or its partitions were revoked before it was sent).
    pub offset_commits: [u64; 3],
    /// Seconds the processing loop has spent on each activity since it began (once the topics
    /// were found), indexed like [`LoopActivity::ALL`].
    pub loop_seconds: [f64; LoopActivity::ALL.len()],
}

/// What the worker's processing loop (one thread: every record goes through it) spends its
/// time on. Every moment of the loop is one of these, so the shares add up to its wall time,
/// and the share of all but `wait` is how busy it is: near 1 the worker is at capacity. The
/// variants are in the order of [`LoopActivity::ALL`] (their discriminants index it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopActivity {
    /// Taking records from the consumers' queues, and handling rebalances (a revocation's
    /// final cut included).
    Consume,
    /// Scoring events and learning from labels: decoding, the join store, the model, drift,
    /// producing predictions (and waiting for room in a full producer queue).
    Process,
    /// Cuts: waiting for the previous store commit and for the broker to acknowledge the
    /// predictions, writing the checkpoint file, handing the store's changes to its commit
    /// thread.
    Checkpoint,
    /// Nothing to do: no records ready, or the merge holding records back for a partition
    /// that has not caught up (`kafka.merge_idle`).
    Wait,
    /// The rest: the wall-clock join rule, publishing the status, serving delivery reports.
    Other,
}

impl LoopActivity {
    /// Every activity, in the order of [`Status::loop_seconds`].
    pub const ALL: [LoopActivity; 5] = [
        LoopActivity::Consume,
        LoopActivity::Process,
        LoopActivity::Checkpoint,
        LoopActivity::Wait,
        LoopActivity::Other,
    ];

    /// The `activity` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopActivity::Consume => "consume",
            LoopActivity::Process => "process",
            LoopActivity::Checkpoint => "checkpoint",
            LoopActivity::Wait => "wait",
            LoopActivity::Other => "other",
        }
    }
}

impl Status {
    /// Share of the labels a window closed on that were real: joined / (joined + expired +
    /// implicit). `None` before any.
    pub fn label_coverage(&self) -> Option<f64> {
        let c = &self.counters;
        let joined = c.label(LabelCount::Joined);
        let closed = joined + c.label(LabelCount::Expired) + c.label(LabelCount::Implicit);
        (closed > 0).then(|| joined as f64 / closed as f64)
    }
}

/// Bins of the score histogram on the status page.
pub const SCORE_BINS: usize = 20;

/// What the worker records per prediction and per label, behind one lock.
#[derive(Debug)]
struct Recorders {
    /// Wall time from a record leaving the merge to its prediction being queued, µs.
    score_latency_us: Histogram<u64>,
    /// Event time to prediction, ms.
    event_to_prediction_ms: Histogram<u64>,
    /// Label time − event time of joined labels, ms.
    label_delay_ms: Histogram<u64>,
    /// Scores of this process's predictions, in [`SCORE_BINS`] equal bins of [0, 1].
    scores: [u64; SCORE_BINS],
}

/// Shared between the worker (writer) and the HTTP server (reader).
#[derive(Debug)]
pub struct Telemetry {
    status: Mutex<Status>,
    /// When the worker last published (a stuck loop stops publishing).
    published_at: Mutex<Option<Instant>>,
    recorders: Mutex<Recorders>,
    /// (time, events scored, labels handled) of the publications of the last [`RATE_SPAN`].
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
    /// `/model` as JSON, as the worker last published it.
    model: Mutex<Option<String>>,
    /// The admin endpoints' token and the commands they queued for the worker.
    admin: Mutex<Admin>,
}

/// A command of an admin endpoint, applied by the worker loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCommand {
    /// `POST /admin/freeze`: stop learning (scoring goes on) until unfrozen.
    Freeze,
    /// `POST /admin/unfreeze`: learn again (lifts an operator's and a drift freeze).
    Unfreeze,
    /// `POST /admin/rebaseline`: take a new drift reference from the next events.
    Rebaseline,
}

impl AdminCommand {
    fn from_path(path: &str) -> Option<Self> {
        match path {
            "/admin/freeze" => Some(Self::Freeze),
            "/admin/unfreeze" => Some(Self::Unfreeze),
            "/admin/rebaseline" => Some(Self::Rebaseline),
            _ => None,
        }
    }

    /// The endpoint's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freeze => "freeze",
            Self::Unfreeze => "unfreeze",
            Self::Rebaseline => "rebaseline",
        }
    }
}

#[derive(Debug, Default)]
struct Admin {
    token: Option<String>,
    queue: VecDeque<AdminCommand>,
}

/// Whether the request head carries `Authorization: Bearer <token>` (header name any case; the
/// token compared in time independent of where it differs).
fn authorized(head: &str, token: &str) -> bool {
    head.lines().skip(1).any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return false;
        }
        let value = value.trim();
        let Some(given) = value
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .map(|_| value[7..].trim())
        else {
            return false;
        };
        given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// The answer to a request for an admin path: status, body, and the command to queue.
fn admin_request(
    method: &str,
    path: &str,
    head: &str,
    token: Option<&str>,
) -> (u16, String, Option<AdminCommand>) {
    let Some(cmd) = AdminCommand::from_path(path) else {
        return (404, "not found\n".into(), None);
    };
    if method != "POST" {
        return (405, "use POST\n".into(), None);
    }
    let Some(token) = token else {
        return (
            403,
            "admin endpoints are disabled: set http.admin_token\n".into(),
            None,
        );
    };
    if !authorized(head, token) {
        return (401, "missing or wrong bearer token\n".into(), None);
    }
    (202, format!("accepted: {}\n", cmd.as_str()), Some(cmd))
}

/// Span over which the status page's rates are measured.
const RATE_SPAN: Duration = Duration::from_secs(10);

impl Default for Telemetry {
    fn default() -> Self {
        // Auto-resizing histograms with 3 significant digits: creation cannot fail for these
        // constant arguments, and values beyond any bound are still recorded.
        let h = || {
            let mut h = Histogram::new(3).expect("3 significant digits is a valid precision");
            h.auto(true);
            h
        };
        Self {
            status: Mutex::new(Status {
                not_ready: Some("starting".into()),
                ..Status::default()
            }),
            published_at: Mutex::new(None),
            recorders: Mutex::new(Recorders {
                score_latency_us: h(),
                event_to_prediction_ms: h(),
                label_delay_ms: h(),
                scores: [0; SCORE_BINS],
            }),
            samples: Mutex::new(VecDeque::new()),
            model: Mutex::new(None),
            admin: Mutex::new(Admin::default()),
        }
    }
}

impl Telemetry {
    /// A new, not-ready telemetry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the published status.
    pub fn publish(&self, s: Status) {
        let now = Instant::now();
        if let Ok(mut q) = self.samples.lock() {
            let labels = s.counters.labels.iter().sum();
            q.push_back((now, s.counters.events_scored, labels));
            while q.len() > 2 && q.front().is_some_and(|f| now - f.0 > RATE_SPAN) {
                q.pop_front();
            }
        }
        if let Ok(mut st) = self.status.lock() {
            *st = s;
        }
        if let Ok(mut at) = self.published_at.lock() {
            *at = Some(now);
        }
    }

    /// Replaces what `/model` answers.
    pub fn publish_model(&self, json: String) {
        if let Ok(mut m) = self.model.lock() {
            *m = Some(json);
        }
    }

    /// `/model` as last published.
    pub fn model(&self) -> Option<String> {
        self.model.lock().ok().and_then(|m| m.clone())
    }

    /// Enables the admin endpoints with this bearer token (`""` disables them).
    pub fn set_admin_token(&self, token: &str) {
        if let Ok(mut a) = self.admin.lock() {
            a.token = (!token.is_empty()).then(|| token.to_string());
        }
    }

    /// Answers an admin request, queueing its command when authorized.
    fn admin(&self, method: &str, path: &str, head: &str) -> (u16, String) {
        let Ok(mut a) = self.admin.lock() else {
            return (503, "unavailable\n".into());
        };
        let (code, body, cmd) = admin_request(method, path, head, a.token.as_deref());
        if let Some(cmd) = cmd {
            a.queue.push_back(cmd);
        }
        (code, body)
    }

    /// The admin commands queued since the last call, oldest first.
    pub fn take_admin_commands(&self) -> Vec<AdminCommand> {
        self.admin
            .lock()
            .map(|mut a| a.queue.drain(..).collect())
            .unwrap_or_default()
    }

    /// Events and labels per second over the last publications (about [`RATE_SPAN`]).
    pub fn rates(&self) -> (f64, f64) {
        let Ok(q) = self.samples.lock() else {
            return (0.0, 0.0);
        };
        match (q.front(), q.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                (
                    b.1.saturating_sub(a.1) as f64 / dt,
                    b.2.saturating_sub(a.2) as f64 / dt,
                )
            }
            _ => (0.0, 0.0),
        }
    }

    /// Why the worker is not ready, or `None`: what it last published, or that it has not
    /// published for more than 5 s (its loop is stuck, e.g. waiting for the broker).
    pub fn not_ready(&self) -> Option<String> {
        let age = self
            .published_at
            .lock()
            .ok()
            .and_then(|a| a.map(|t| t.elapsed()));
        match age {
            Some(age) if age > Duration::from_secs(5) => Some(format!(
                "the worker loop has not reported for {:.0} s (waiting for the broker?)",
                age.as_secs_f64()
            )),
            _ => self.status().not_ready,
        }
    }

    /// Records one scoring: loop latency, event-time-to-prediction delay and the score.
    pub fn record_score(&self, latency: Duration, event_age_ms: i64, score: f64) {
        if let Ok(mut r) = self.recorders.lock() {
            let _ = r
                .score_latency_us
                .record((latency.as_micros() as u64).max(1));
            let _ = r.event_to_prediction_ms.record(event_age_ms.max(1) as u64);
            let bin = ((score * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
            r.scores[bin] += 1;
        }
    }

    /// Records the delays (label time − event time, ms) of joined labels.
    pub fn record_label_delays(&self, delays_ms: &[i64]) {
        if delays_ms.is_empty() {
            return;
        }
        if let Ok(mut r) = self.recorders.lock() {
            for d in delays_ms {
                let _ = r.label_delay_ms.record((*d).max(1) as u64);
            }
        }
    }

    /// The published status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let Ok(r) = self.recorders.lock() else {
            return render(&self.status(), &[]);
        };
        let hists = [
            Hist {
                name: "streamlr_score_latency_seconds",
                help: "From a record leaving the merge to its prediction queued.",
                h: r.score_latency_us.clone(),
                unit: 1e-6,
                buckets: &LATENCY_BUCKETS,
            },
            Hist {
                name: "streamlr_event_to_prediction_seconds",
                help: "From the event's time to its prediction.",
                h: r.event_to_prediction_ms.clone(),
                unit: 1e-3,
                buckets: &AGE_BUCKETS,
            },
            Hist {
                name: "streamlr_label_delay_seconds",
                help: "From the event's time to its label's time, for joined labels.",
                h: r.label_delay_ms.clone(),
                unit: 1e-3,
                buckets: &DELAY_BUCKETS,
            },
        ];
        drop(r);
        render(&self.status(), &hists)
    }

    /// What the status page shows, as JSON.
    pub fn status_json(&self) -> String {
        let s = self.status();
        let (events_rate, labels_rate) = self.rates();
        let (lat, age, scores) = match self.recorders.lock() {
            Ok(r) => (
                quantiles(&r.score_latency_us, 1e-6),
                quantiles(&r.event_to_prediction_ms, 1e-3),
                r.scores.to_vec(),
            ),
            Err(_) => Default::default(),
        };
        let q = s.quality.as_ref();
        let labels: Vec<serde_json::Value> = LabelCount::ALL
            .iter()
            .map(|l| serde_json::json!({"outcome": l.as_str(), "count": s.counters.label(*l)}))
            .collect();
        let drift = s.drift.as_ref().map(|d| {
            serde_json::json!({
                "window": d.window,
                "columns": d.columns.iter().map(|c| serde_json::json!({
                    "feature": c.column, "score": c.score, "psi": c.psi, "ks": c.ks, "level": c.level,
                })).collect::<Vec<_>>(),
            })
        });
        let not_ready = self.not_ready();
        serde_json::json!({
            "ready": not_ready.is_none(),
            "not_ready": not_ready,
            "model_version": s.model_version,
            "checkpoint_age_seconds": s.checkpoint_age_seconds,
            "partitions": s.partitions,
            "frozen": s.frozen,
            "events_per_second": events_rate,
            "labels_per_second": labels_rate,
            "scored": s.counters.events_scored,
            "predictions": s.predictions,
            "updates": s.counters.updates,
            "dead_letters": s.dead_letters.iter().sum::<u64>(),
            "labels": labels,
            "label_coverage": s.label_coverage(),
            "latency_seconds": lat,
            "event_to_prediction_seconds": age,
            "lag": s.lag.iter().map(|(t, p, n)| serde_json::json!({
                "topic": t, "partition": p, "lag": n,
            })).collect::<Vec<_>>(),
            "checkpoint_offsets": s.checkpoint_offsets.iter().map(|(t, p, o)| serde_json::json!({
                "topic": t, "partition": p, "offset": o,
            })).collect::<Vec<_>>(),
            "quality": q.map(|q| serde_json::json!({
                "log_loss": q.log_loss, "auc": q.auc, "calibration_error": q.ece, "labels": q.n,
            })),
            "reliability": s.reliability.iter().map(|(p, y, n)| serde_json::json!({
                "predicted": p, "observed": y, "count": n,
            })).collect::<Vec<_>>(),
            "score_histogram": scores,
            "psi_warn": s.psi_levels.0,
            "psi_alert": s.psi_levels.1,
            "drift": drift,
        })
        .to_string()
    }
}

/// p50, p99 and p999 of `h` in seconds (`unit` seconds per recorded value).
fn quantiles(h: &Histogram<u64>, unit: f64) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "p50": h.value_at_quantile(0.5) as f64 * unit,
        "p99": h.value_at_quantile(0.99) as f64 * unit,
        "p999": h.value_at_quantile(0.999) as f64 * unit,
    })
}

/// A histogram to render.
struct Hist {
    name: &'static str,
    help: &'static str,
    h: Histogram<u64>,
    /// Seconds per recorded value.
    unit: f64,
    /// Bucket bounds, seconds.
    buckets: &'static [f64],
}

/// Bucket bounds (seconds) of the latency histograms.
const LATENCY_BUCKETS: [f64; 12] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1, 1.0,
];
/// Bucket bounds (seconds) of event time → prediction.
const AGE_BUCKETS: [f64; 10] = [
    0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 600.0, 3600.0, 86_400.0,
];
/// Bucket bounds (seconds) of event time → label time: a minute to 30 days.
const DELAY_BUCKETS: [f64; 11] = [
    60.0,
    300.0,
    1800.0,
    3600.0,
    6.0 * 3600.0,
    86_400.0,
    2.0 * 86_400.0,
    4.0 * 86_400.0,
    7.0 * 86_400.0,
    14.0 * 86_400.0,
    30.0 * 86_400.0,
];

fn histogram(out: &mut String, hist: &Hist) {
    let Hist {
        name,
        help,
        h,
        unit,
        buckets,
    } = hist;
    let unit = *unit;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for b in *buckets {
        let upto = (b / unit).floor() as u64;
        let n = h.count_between(0, upto);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let sum: f64 = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        * unit;
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", h.len());
    for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
        let _ = writeln!(
            out,
            "{name}_{label} {}",
            h.value_at_quantile(q) as f64 * unit
        );
    }
}

/// A label value as the exposition format wants it: backslash, quote and newline escaped.
fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A gauge family with one sample per (topic, partition).
fn partition_gauge(out: &mut String, name: &str, help: &str, rows: &[(String, i32, i64)]) {
    family(out, name, "gauge", help);
    for (topic, p, n) in rows {
        let _ = writeln!(
            out,
            "{name}{{topic=\"{}\",partition=\"{p}\"}} {n}",
            esc(topic)
        );
    }
}

/// The Prometheus exposition of a status and the histograms.
fn render(s: &Status, hists: &[Hist]) -> String {
    let mut o = String::new();
    let c = &s.counters;
    family(
        &mut o,
        "streamlr_events_total",
        "counter",
        "Events by outcome.",
    );
    let _ = writeln!(
        o,
        "streamlr_events_total{{outcome=\"scored\"}} {}",
        c.events_scored
    );
    let _ = writeln!(
        o,
        "streamlr_events_total{{outcome=\"invalid\"}} {}",
        c.events_invalid_total()
    );
    let _ = writeln!(
        o,
        "streamlr_events_total{{outcome=\"duplicate_id\"}} {}",
        c.events_duplicate_id
    );
    let _ = writeln!(
        o,
        "streamlr_events_total{{outcome=\"too_old\"}} {}",
        c.events_too_old
    );
    family(
        &mut o,
        "streamlr_predictions_total",
        "counter",
        "Predictions produced by this process.",
    );
    let _ = writeln!(o, "streamlr_predictions_total {}", s.predictions);
    family(
        &mut o,
        "streamlr_dead_letters_total",
        "counter",
        "Dead letters produced by this process, by reason.",
    );
    for (r, n) in Reason::ALL
        .iter()
        .zip(s.dead_letters.iter().chain(std::iter::repeat(&0)))
    {
        let _ = writeln!(
            o,
            "streamlr_dead_letters_total{{reason=\"{}\"}} {n}",
            r.as_str()
        );
    }
    family(
        &mut o,
        "streamlr_labels_total",
        "counter",
        "Labels by outcome.",
    );
    for l in LabelCount::ALL {
        let n = c.labels.get(l as usize).copied().unwrap_or(0);
        let _ = writeln!(o, "streamlr_labels_total{{outcome=\"{}\"}} {n}", l.as_str());
    }
    family(
        &mut o,
        "streamlr_updates_total",
        "counter",
        "Model updates applied.",
    );
    let _ = writeln!(o, "streamlr_updates_total {}", c.updates);
    family(
        &mut o,
        "streamlr_learning_frozen",
        "gauge",
        "1 while a drift alert froze learning.",
    );
    let _ = writeln!(o, "streamlr_learning_frozen {}", u8::from(s.frozen));
    family(
        &mut o,
        "streamlr_learning_paused",
        "gauge",
        "1 while a loss spike paused learning.",
    );
    let _ = writeln!(o, "streamlr_learning_paused {}", u8::from(s.loss_paused));
    family(
        &mut o,
        "streamlr_updates_skipped_total",
        "counter",
        "Joined labels not learned, by reason.",
    );
    for (why, n) in crate::guard::Skip::ALL.iter().zip(s.skipped) {
        let _ = writeln!(
            o,
            "streamlr_updates_skipped_total{{reason=\"{}\"}} {n}",
            why.as_str()
        );
    }
    family(&mut o, "streamlr_model_version", "gauge", "Model version.");
    let _ = writeln!(o, "streamlr_model_version {}", s.model_version);
    family(
        &mut o,
        "streamlr_weight_norm",
        "gauge",
        "L2 norm of the weights.",
    );
    let _ = writeln!(o, "streamlr_weight_norm {}", s.weight_norm);
    family(
        &mut o,
        "streamlr_join_store_entries",
        "gauge",
        "Join entries held (pending and tombstones).",
    );
    let _ = writeln!(o, "streamlr_join_store_entries {}", s.join_entries);
    for (name, help, value) in [
        (
            "streamlr_join_store_table_bytes",
            "Bytes of the join store's tables on disk (journals not included).",
            s.join_store.table_bytes,
        ),
        (
            "streamlr_join_store_tables",
            "Tables (SST files) of the join store.",
            s.join_store.tables,
        ),
        (
            "streamlr_join_store_cache_bytes",
            "Bytes in the join store's block cache (at most join.cache_bytes).",
            s.join_store.cache_bytes,
        ),
        (
            "streamlr_join_store_memtable_bytes",
            "Bytes of keys and values in the join store's memtables (not yet flushed to tables; the skiplist's own nodes, about as much again, are not counted).",
            s.join_store.memtable_bytes,
        ),
        (
            "streamlr_join_store_recent_bytes",
            "Bytes of pending entries the join store holds in memory after their checkpoint (at most join.recent_bytes).",
            s.join_store.recent_bytes,
        ),
    ] {
        family(&mut o, name, "gauge", help);
        let _ = writeln!(o, "{name} {value}");
    }
    family(
        &mut o,
        "streamlr_join_store_recent_joins_total",
        "counter",
        "Labels joined to an entry the join store held in memory after its checkpoint (no read of the store).",
    );
    let _ = writeln!(
        o,
        "streamlr_join_store_recent_joins_total {}",
        s.join_store.recent_joins
    );
    if let Some(rss) = s.resident_bytes {
        family(
            &mut o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(o, "process_resident_memory_bytes {rss}");
    }
    family(
        &mut o,
        "streamlr_partitions_assigned",
        "gauge",
        "Partitions assigned to this worker.",
    );
    let _ = writeln!(o, "streamlr_partitions_assigned {}", s.partitions);
    family(
        &mut o,
        "streamlr_producer_unacknowledged",
        "gauge",
        "Records produced (predictions, dead letters, drift reports) not yet acknowledged by the broker.",
    );
    let _ = writeln!(o, "streamlr_producer_unacknowledged {}", s.unacknowledged);
    family(
        &mut o,
        "streamlr_offset_commits_total",
        "counter",
        "Offset commits to the consumer group by outcome (a failed one is retried by the next cut; a skipped one was covered by a newer commit or its partitions were revoked before it was sent).",
    );
    for (outcome, n) in ["stored", "failed", "skipped"].iter().zip(s.offset_commits) {
        let _ = writeln!(
            o,
            "streamlr_offset_commits_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        &mut o,
        "streamlr_loop_seconds_total",
        "counter",
        "Seconds the processing loop spent on each activity (wait: nothing to do; the rate of all the others is how busy it is).",
    );
    for (a, secs) in LoopActivity::ALL.iter().zip(s.loop_seconds) {
        let _ = writeln!(
            o,
            "streamlr_loop_seconds_total{{activity=\"{}\"}} {secs}",
            a.as_str()
        );
    }
    if let Some(a) = s.checkpoint_age_seconds {
        family(
            &mut o,
            "streamlr_checkpoint_age_seconds",
            "gauge",
            "Seconds since the last checkpoint.",
        );
        let _ = writeln!(o, "streamlr_checkpoint_age_seconds {a}");
    }
    family(
        &mut o,
        "streamlr_checkpoint_duration_seconds",
        "gauge",
        "Duration of the last cut, from its start until durable.",
    );
    let _ = writeln!(
        o,
        "streamlr_checkpoint_duration_seconds {}",
        s.checkpoint_duration_seconds
    );
    family(
        &mut o,
        "streamlr_checkpoint_pause_seconds",
        "gauge",
        "How long the last cut stopped the processing loop.",
    );
    let _ = writeln!(
        o,
        "streamlr_checkpoint_pause_seconds {}",
        s.checkpoint_pause_seconds
    );
    if let Some(q) = &s.quality {
        for (name, help, v) in [
            (
                "streamlr_progressive_log_loss",
                "Progressive log loss.",
                q.log_loss,
            ),
            ("streamlr_progressive_auc", "Progressive AUC.", q.auc),
            (
                "streamlr_calibration_error",
                "Expected calibration error.",
                q.ece,
            ),
        ] {
            if v.is_finite() {
                family(&mut o, name, "gauge", help);
                let _ = writeln!(o, "{name} {v}");
            }
        }
    }
    if let Some(d) = &s.drift {
        family(
            &mut o,
            "streamlr_feature_psi",
            "gauge",
            "PSI of the last drift window, per feature.",
        );
        for col in d.columns.iter().filter(|c| !c.score) {
            let _ = writeln!(
                o,
                "streamlr_feature_psi{{feature=\"{}\"}} {}",
                esc(&col.column),
                col.psi
            );
        }
        family(
            &mut o,
            "streamlr_feature_ks",
            "gauge",
            "KS statistic of the last drift window, per numeric feature.",
        );
        for col in d.columns.iter().filter(|c| !c.score) {
            if let Some(ks) = col.ks {
                let _ = writeln!(
                    o,
                    "streamlr_feature_ks{{feature=\"{}\"}} {ks}",
                    esc(&col.column)
                );
            }
        }
        if let Some(sc) = d.columns.iter().find(|c| c.score) {
            family(
                &mut o,
                "streamlr_score_psi",
                "gauge",
                "PSI of the score in the last drift window.",
            );
            let _ = writeln!(o, "streamlr_score_psi {}", sc.psi);
        }
    }
    family(
        &mut o,
        "streamlr_drift_alerts_total",
        "counter",
        "Drift flags raised by this process, per feature and level.",
    );
    for ((feature, level), n) in &s.drift_alerts.features {
        let _ = writeln!(
            o,
            "streamlr_drift_alerts_total{{feature=\"{}\",level=\"{level}\"}} {n}",
            esc(feature)
        );
    }
    family(
        &mut o,
        "streamlr_score_drift_alerts_total",
        "counter",
        "Drift flags raised by this process on the model's score, per level.",
    );
    for (level, n) in &s.drift_alerts.score {
        let _ = writeln!(
            o,
            "streamlr_score_drift_alerts_total{{level=\"{level}\"}} {n}"
        );
    }
    if let Some(r) = s.label_coverage() {
        family(
            &mut o,
            "streamlr_label_coverage_ratio",
            "gauge",
            "Joined labels / (joined + expired + implicit): how many scored events got a real label.",
        );
        let _ = writeln!(o, "streamlr_label_coverage_ratio {r}");
    }
    partition_gauge(
        &mut o,
        "streamlr_consumer_lag",
        "Records not yet processed, per assigned partition (from the last fetched high watermark).",
        &s.lag,
    );
    partition_gauge(
        &mut o,
        "streamlr_checkpoint_offset",
        "Next offset the last durable checkpoint covers, per assigned partition (a restart resumes there).",
        &s.checkpoint_offsets,
    );
    for h in hists {
        histogram(&mut o, h);
    }
    o
}

/// The live status page: one self-contained file (no external scripts, styles or fonts) that
/// polls `/status.json`.
const STATUS_PAGE: &str = include_str!("status.html");

/// Serves `/metrics`, `/healthz`, `/readyz`, `/model`, `/status.json` and the status page `/`
/// on `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let t = telemetry.clone();
        tokio::spawn(async move {
            // Read the request head (it may arrive in several packets), at most 8 KiB and 5 s.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf);
            let method = req.split_whitespace().next().unwrap_or("GET");
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = match path {
                p if p.starts_with("/admin/") => {
                    let (code, body) = t.admin(method, p, &req);
                    (code, "text/plain", body)
                }
                "/metrics" => (200, "text/plain; version=0.0.4", t.render()),
                "/healthz" => (200, "text/plain", "ok\n".to_string()),
                "/readyz" => match t.not_ready() {
                    None => (200, "text/plain", "ready\n".to_string()),
                    Some(why) => (503, "text/plain", format!("not ready: {why}\n")),
                },
                "/model" => match t.model() {
                    Some(json) => (200, "application/json", json),
                    None => (503, "text/plain", "no model published yet\n".to_string()),
                },
                "/status.json" => (200, "application/json", t.status_json()),
                "/" | "/index.html" => (200, "text/html; charset=utf-8", STATUS_PAGE.to_string()),
                _ => (404, "text/plain", "not found\n".to_string()),
            };
            let reason = match code {
                200 => "OK",
                202 => "Accepted",
                401 => "Unauthorized",
                403 => "Forbidden",
                405 => "Method Not Allowed",
                503 => "Service Unavailable",
                _ => "Not Found",
            };
            let challenge = if code == 401 {
                "WWW-Authenticate: Bearer\r\n"
            } else {
                ""
            };
            let head = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_requests_need_post_and_the_exact_bearer_token() {
        let head = |auth: &str| format!("POST /admin/freeze HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
        let ok = head("authorization: bearer s3cret\r\n");
        assert_eq!(
            admin_request("POST", "/admin/freeze", &ok, Some("s3cret")),
            (202, "accepted: freeze\n".into(), Some(AdminCommand::Freeze))
        );
        for bad in [
            "",
            "Authorization: Bearer s3cre\r\n",
            "Authorization: Bearer s3cret2\r\n",
            "Authorization: Basic s3cret\r\n",
            "Authorization: s3cret\r\n",
            "X-Authorization: Bearer s3cret\r\n",
        ] {
            let (code, _, cmd) = admin_request("POST", "/admin/freeze", &head(bad), Some("s3cret"));
            assert_eq!((code, cmd), (401, None), "{bad:?}");
        }
        // No token configured: disabled, whatever the request carries.
        assert_eq!(admin_request("POST", "/admin/rebaseline", &ok, None).0, 403);
        assert_eq!(
            admin_request("GET", "/admin/freeze", &ok, Some("s3cret")).0,
            405
        );
        assert_eq!(
            admin_request("POST", "/admin/other", &ok, Some("s3cret")).0,
            404
        );
        // Through the telemetry: queued in order, taken once.
        let t = Telemetry::default();
        assert_eq!(t.admin("POST", "/admin/freeze", &ok).0, 403);
        t.set_admin_token("s3cret");
        assert_eq!(t.admin("POST", "/admin/freeze", &ok).0, 202);
        let rebase = ok.replace("/admin/freeze", "/admin/rebaseline");
        assert_eq!(t.admin("POST", "/admin/rebaseline", &rebase).0, 202);
        assert_eq!(t.admin("POST", "/admin/unfreeze", &head("")).0, 401);
        assert_eq!(
            t.take_admin_commands(),
            vec![AdminCommand::Freeze, AdminCommand::Rebaseline]
        );
        assert!(t.take_admin_commands().is_empty());
    }

    #[test]
    fn exposition_has_the_counters_and_histogram_buckets_are_cumulative() {
        let t = Telemetry::default();
        let mut s = Status::default();
        s.counters.events_scored = 7;
        s.counters.labels = vec![3, 0, 0, 1, 0, 0, 0, 0];
        s.predictions = 7;
        s.dead_letters = vec![0; Reason::ALL.len()];
        s.dead_letters[1] = 2;
        t.publish(s);
        for us in [5u64, 50, 500, 5_000] {
            t.record_score(Duration::from_micros(us), 1_000, 0.5);
        }
        let text = t.render();
        assert!(
            text.contains("streamlr_events_total{outcome=\"scored\"} 7"),
            "{text}"
        );
        assert!(text.contains("streamlr_labels_total{outcome=\"joined\"} 3"));
        assert!(text.contains("streamlr_labels_total{outcome=\"duplicate\"} 1"));
        assert!(text.contains(&format!(
            "streamlr_dead_letters_total{{reason=\"{}\"}} 2",
            Reason::ALL[1].as_str()
        )));
        // 5 µs ≤ 10 µs; 50 µs ≤ 50 µs; 500 µs ≤ 500 µs; 5000 µs ≤ 5 ms; all ≤ +Inf.
        for (le, n) in [
            ("0.00001", 1),
            ("0.00005", 2),
            ("0.0005", 3),
            ("0.005", 4),
            ("+Inf", 4),
        ] {
            assert!(
                text.contains(&format!(
                    "streamlr_score_latency_seconds_bucket{{le=\"{le}\"}} {n}"
                )),
                "{le}: {text}"
            );
        }
        assert!(text.contains("streamlr_score_latency_seconds_count 4"));
    }

    /// A declared feature may be named `score`: its PSI is a feature's, and `streamlr_score_psi`
    /// stays the model's score.
    #[test]
    fn a_feature_named_score_is_not_the_models_score() {
        use crate::drift::{ColumnStats, Level, WindowReport};
        let col = |score: bool, psi: f64| ColumnStats {
            column: "score".into(),
            score,
            psi,
            ks: Some(0.01),
            ks_p: Some(0.5),
            unseen_rate: None,
            level: Level::Ok,
        };
        let t = Telemetry::default();
        t.publish(Status {
            drift: Some(WindowReport {
                window: 1,
                columns: vec![col(false, 0.125), col(true, 0.75)],
                mean_score: 0.1,
                observed_rate: None,
                action: "none",
            }),
            ..Status::default()
        });
        let text = t.render();
        for line in [
            "streamlr_feature_psi{feature=\"score\"} 0.125",
            "streamlr_feature_ks{feature=\"score\"} 0.01",
            "streamlr_score_psi 0.75",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(text.matches("streamlr_feature_psi{").count(), 1, "{text}");

        // Flagged, both are counted, each in its own family.
        let flagged = |score: bool, level: Level| ColumnStats {
            level,
            ..col(score, 0.5)
        };
        let mut alerts = DriftAlerts::default();
        for cols in [
            vec![flagged(false, Level::Warn), flagged(true, Level::Alert)],
            vec![flagged(true, Level::Alert), col(false, 0.01)],
        ] {
            alerts.count(&WindowReport {
                window: 2,
                columns: cols,
                mean_score: 0.1,
                observed_rate: None,
                action: "none",
            });
        }
        assert_eq!(alerts.features.len(), 1);
        assert_eq!(alerts.features[&("score".to_string(), "warn")], 1);
        assert_eq!(alerts.score.len(), 1);
        assert_eq!(alerts.score["alert"], 2);
        t.publish(Status {
            drift_alerts: alerts,
            ..Status::default()
        });
        let text = t.render();
        for line in [
            "streamlr_drift_alerts_total{feature=\"score\",level=\"warn\"} 1",
            "streamlr_score_drift_alerts_total{level=\"alert\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(
            text.matches("streamlr_drift_alerts_total{").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn coverage_lag_alerts_and_label_delays_are_exported() {
        let t = Telemetry::default();
        let mut s = Status {
            counters: Counters::new(),
            ..Status::default()
        };
        s.counters.labels[LabelCount::Joined as usize] = 6;
        s.counters.labels[LabelCount::Expired as usize] = 2;
        s.counters.labels[LabelCount::Duplicate as usize] = 9; // not a closed window
        s.lag = vec![("events".into(), 3, 42)];
        s.checkpoint_offsets = vec![("labels".into(), 3, 1234)];
        s.drift_alerts
            .features
            .insert(("we\"ird".into(), "alert"), 2);
        t.publish(s);
        // 30 s, 2 h, 2.5 days.
        t.record_label_delays(&[30_000, 7_200_000, 216_000_000]);
        let text = t.render();
        for line in [
            "streamlr_label_coverage_ratio 0.75",
            "streamlr_consumer_lag{topic=\"events\",partition=\"3\"} 42",
            "streamlr_checkpoint_offset{topic=\"labels\",partition=\"3\"} 1234",
            "streamlr_drift_alerts_total{feature=\"we\\\"ird\",level=\"alert\"} 2",
            "streamlr_label_delay_seconds_bucket{le=\"60\"} 1",
            "streamlr_label_delay_seconds_bucket{le=\"3600\"} 1",
            "streamlr_label_delay_seconds_bucket{le=\"21600\"} 2",
            "streamlr_label_delay_seconds_bucket{le=\"172800\"} 2",
            "streamlr_label_delay_seconds_bucket{le=\"345600\"} 3",
            "streamlr_label_delay_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // No coverage before any window closed.
        t.publish(Status::default());
        assert!(!t.render().contains("streamlr_label_coverage_ratio"));
    }

    #[test]
    fn resident_memory_follows_what_the_process_touches() {
        // 64 MiB written page by page must show in VmRSS (read independently of any allocator
        // figure); the gauge carries what was published and is absent when unknown.
        let before = resident_bytes().expect("VmRSS on Linux");
        let block = vec![1u8; 64 << 20];
        let after = resident_bytes().expect("VmRSS on Linux");
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        assert_eq!(std::hint::black_box(&block)[12345], 1);
        let t = Telemetry::default();
        t.publish(Status {
            resident_bytes: Some(after),
            ..Status::default()
        });
        let line = format!("process_resident_memory_bytes {after}");
        assert!(t.render().lines().any(|l| l == line), "{line} missing");
        t.publish(Status::default());
        assert!(!t.render().contains("process_resident_memory_bytes"));
    }

    #[test]
    fn the_status_json_has_what_the_page_draws() {
        let t = Telemetry::default();
        for score in [0.0, 0.5, 0.999, 1.0] {
            t.record_score(Duration::from_micros(100), 1_000, score);
        }
        let mut s = Status {
            counters: Counters::new(),
            psi_levels: (0.1, 0.25),
            reliability: vec![(0.1, 0.08, 50), (0.9, 0.85, 20)],
            ..Status::default()
        };
        s.counters.events_scored = 4;
        s.counters.labels[LabelCount::Joined as usize] = 1;
        t.publish(s);
        let v: serde_json::Value = serde_json::from_str(&t.status_json()).expect("json");
        let hist: Vec<u64> = serde_json::from_value(v["score_histogram"].clone()).expect("bins");
        assert_eq!(hist.len(), SCORE_BINS);
        assert_eq!((hist[0], hist[10], hist[19]), (1, 1, 2), "{hist:?}");
        assert_eq!(hist.iter().sum::<u64>(), 4);
        assert_eq!(
            v["labels"][0],
            serde_json::json!({"outcome": "joined", "count": 1})
        );
        assert_eq!(v["label_coverage"], 1.0);
        assert_eq!(v["reliability"][1]["observed"], 0.85);
        assert_eq!(v["psi_alert"], 0.25);
        let p50 = v["latency_seconds"]["p50"].as_f64().expect("p50");
        assert!((p50 - 1e-4).abs() < 1e-6, "{p50}");
        assert_eq!(v["ready"], true);
    }

    #[test]
    fn rates_come_from_the_publications_of_the_last_seconds() {
        let t = Telemetry::default();
        let mut s = Status {
            counters: Counters::new(),
            ..Status::default()
        };
        t.publish(s.clone());
        std::thread::sleep(Duration::from_millis(200));
        s.counters.events_scored = 100;
        s.counters.labels[0] = 50;
        t.publish(s);
        let (events, labels) = t.rates();
        // 100 events in a little over 0.2 s: at most 500/s, and well above 0.
        assert!(events > 100.0 && events <= 500.0, "{events}");
        assert!((labels - events / 2.0).abs() < 1e-9, "{labels} vs {events}");
    }

    #[tokio::test]
    async fn the_server_answers_the_page_the_model_and_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let t = Telemetry::new();
        tokio::spawn(serve(listener, t.clone()));
        let get = |path: &'static str| async move {
            let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
            sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut out = String::new();
            sock.read_to_string(&mut out).await.expect("read");
            out
        };
        let page = get("/").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("text/html") && page.contains("/status.json"));
        // Self-contained: nothing is loaded from elsewhere (no scripts, styles, fonts, images).
        for loads in ["src=", "<link", "@import", "url("] {
            assert!(!page.contains(loads), "the page loads something: {loads}");
        }
        assert!(get("/model").await.starts_with("HTTP/1.1 503"));
        t.publish_model(r#"{"version":3}"#.into());
        let model = get("/model").await;
        assert!(model.starts_with("HTTP/1.1 200") && model.ends_with(r#"{"version":3}"#));
        let status = get("/status.json").await;
        assert!(status.contains("application/json") && status.contains("\"score_histogram\""));
    }
}
