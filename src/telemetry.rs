//! Telemetry at the edge: the worker publishes a [`Status`] snapshot about once a second (and
//! records latencies into hdrhistograms); a small HTTP/1.1 server on tokio serves it as
//! Prometheus text on `/metrics`, liveness on `/healthz`, readiness on `/readyz`.
//!
//! Metric names live here, in [`render`], and only here. Labels stay low-cardinality (outcome,
//! reason, feature name — never an event id).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::drift::WindowReport;
use crate::engine::{Counters, LabelCount};
use crate::event::Reason;
use crate::metrics::QualitySummary;

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
    /// Seconds since the last checkpoint (`None` before the first).
    pub checkpoint_age_seconds: Option<f64>,
    /// Duration of the last cut, seconds.
    pub checkpoint_duration_seconds: f64,
    /// Partitions assigned.
    pub partitions: usize,
    /// Why the worker is not ready (`None`: ready).
    pub not_ready: Option<String>,
    /// Learning frozen by drift.
    pub frozen: bool,
    /// The last drift window.
    pub drift: Option<WindowReport>,
}

/// Shared between the worker (writer) and the HTTP server (reader).
#[derive(Debug)]
pub struct Telemetry {
    status: Mutex<Status>,
    /// When the worker last published (a stuck loop stops publishing).
    published_at: Mutex<Option<std::time::Instant>>,
    /// Wall time from an event's arrival in the loop to its prediction being queued, seconds ×1e6.
    score_latency_us: Mutex<Histogram<u64>>,
    /// Event time to prediction, milliseconds.
    event_to_prediction_ms: Mutex<Histogram<u64>>,
}

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
            score_latency_us: Mutex::new(h()),
            event_to_prediction_ms: Mutex::new(h()),
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
        if let Ok(mut st) = self.status.lock() {
            *st = s;
        }
        if let Ok(mut at) = self.published_at.lock() {
            *at = Some(std::time::Instant::now());
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

    /// Records one scoring: loop latency and event-time-to-prediction delay.
    pub fn record_score(&self, latency: Duration, event_age_ms: i64) {
        if let Ok(mut h) = self.score_latency_us.lock() {
            let _ = h.record((latency.as_micros() as u64).max(1));
        }
        if let Ok(mut h) = self.event_to_prediction_ms.lock() {
            let _ = h.record((event_age_ms.max(1)) as u64);
        }
    }

    /// The published status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let lat = self.score_latency_us.lock().map(|h| h.clone()).ok();
        let age = self.event_to_prediction_ms.lock().map(|h| h.clone()).ok();
        render(&self.status(), lat.as_ref(), age.as_ref())
    }
}

/// Bucket bounds (seconds) of the latency histograms.
const LATENCY_BUCKETS: [f64; 12] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1, 1.0,
];
/// Bucket bounds (seconds) of event time → prediction.
const AGE_BUCKETS: [f64; 10] = [
    0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 600.0, 3600.0, 86_400.0,
];

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    h: &Histogram<u64>,
    unit: f64,
    buckets: &[f64],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for b in buckets {
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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus exposition of a status and the latency histograms.
pub fn render(
    s: &Status,
    latency_us: Option<&Histogram<u64>>,
    age_ms: Option<&Histogram<u64>>,
) -> String {
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
    family(
        &mut o,
        "streamlr_partitions_assigned",
        "gauge",
        "Partitions assigned to this worker.",
    );
    let _ = writeln!(o, "streamlr_partitions_assigned {}", s.partitions);
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
        "Duration of the last cut.",
    );
    let _ = writeln!(
        o,
        "streamlr_checkpoint_duration_seconds {}",
        s.checkpoint_duration_seconds
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
        for col in d.columns.iter().filter(|c| c.column != "score") {
            let _ = writeln!(
                o,
                "streamlr_feature_psi{{feature=\"{}\"}} {}",
                col.column, col.psi
            );
        }
        family(
            &mut o,
            "streamlr_feature_ks",
            "gauge",
            "KS statistic of the last drift window, per numeric feature.",
        );
        for col in d.columns.iter().filter(|c| c.column != "score") {
            if let Some(ks) = col.ks {
                let _ = writeln!(o, "streamlr_feature_ks{{feature=\"{}\"}} {ks}", col.column);
            }
        }
        if let Some(sc) = d.columns.iter().find(|c| c.column == "score") {
            family(
                &mut o,
                "streamlr_score_psi",
                "gauge",
                "PSI of the score in the last drift window.",
            );
            let _ = writeln!(o, "streamlr_score_psi {}", sc.psi);
        }
    }
    if let Some(h) = latency_us {
        histogram(
            &mut o,
            "streamlr_score_latency_seconds",
            "From a record leaving the merge to its prediction queued.",
            h,
            1e-6,
            &LATENCY_BUCKETS,
        );
    }
    if let Some(h) = age_ms {
        histogram(
            &mut o,
            "streamlr_event_to_prediction_seconds",
            "From the event's time to its prediction.",
            h,
            1e-3,
            &AGE_BUCKETS,
        );
    }
    o
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the runtime stops.
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
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = match path {
                "/metrics" => (200, "text/plain; version=0.0.4", t.render()),
                "/healthz" => (200, "text/plain", "ok\n".to_string()),
                "/readyz" => match t.not_ready() {
                    None => (200, "text/plain", "ready\n".to_string()),
                    Some(why) => (503, "text/plain", format!("not ready: {why}\n")),
                },
                _ => (404, "text/plain", "not found\n".to_string()),
            };
            let reason = match code {
                200 => "OK",
                503 => "Service Unavailable",
                _ => "Not Found",
            };
            let head = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
            t.record_score(Duration::from_micros(us), 1_000);
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
}
