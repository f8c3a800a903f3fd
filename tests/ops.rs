//! Operations files agree with the worker: every metric a Grafana panel or a Prometheus alert
//! rule uses is one the worker exports.

use std::collections::BTreeSet;
use std::time::Duration;

use streamlr::drift::{ColumnStats, Level, WindowReport};
use streamlr::telemetry::{Status, Telemetry};

/// Every sample name the worker exports, from a fully populated status.
fn exported() -> BTreeSet<String> {
    let t = Telemetry::default();
    let col = |name: &str, ks: Option<f64>| ColumnStats {
        column: name.into(),
        score: name == "score",
        psi: 0.1,
        ks,
        ks_p: ks,
        unseen_rate: None,
        level: Level::Ok,
    };
    let mut counters = streamlr::engine::Counters::new();
    counters.labels[0] = 3;
    t.publish(Status {
        counters,
        lag: vec![("events".into(), 0, 5)],
        drift_alerts: streamlr::telemetry::DriftAlerts {
            features: [(("amount".to_string(), "warn"), 1)].into(),
            score: [("alert", 1)].into(),
        },
        quality: Some({
            let mut q = streamlr::metrics::Quality::new(0.5, 10);
            q.add(0.2, false);
            q.add(0.8, true);
            q.summary()
        }),
        checkpoint_age_seconds: Some(1.0),
        resident_bytes: Some(1 << 20),
        drift: Some(WindowReport {
            window: 1,
            columns: vec![col("amount", Some(0.1)), col("score", Some(0.1))],
            mean_score: 0.1,
            observed_rate: None,
            action: "none",
        }),
        ..Status::default()
    });
    t.record_score(Duration::from_micros(10), 10, 0.5);
    // Sample names, and metric family names from the `# TYPE` lines (a histogram's base name).
    t.render()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("# HELP"))
        .filter_map(|l| {
            l.strip_prefix("# TYPE ")
                .unwrap_or(l)
                .split(['{', ' '])
                .next()
                .map(str::to_string)
        })
        .collect()
}

/// `streamlr_*` and `process_*` names used in a text (PromQL inside JSON or YAML).
fn used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["streamlr_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

fn file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .expect("read")
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(&file("configs/grafana/dashboards/streamlr.json")).expect("json");
    let mut exprs = String::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push_str(t["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    let in_dashboard = used(&exprs);
    assert!(in_dashboard.len() >= 15, "{in_dashboard:?}");
    let in_alerts = used(&file("configs/prometheus/alerts.yml"));
    for name in in_dashboard.iter().chain(&in_alerts) {
        assert!(
            exported.contains(name),
            "{name} is used but not exported; exported: {exported:?}"
        );
    }
}

/// The metrics the operations issue promises, by name: each is exported, and README documents
/// each.
#[test]
fn every_promised_metric_is_exported_and_documented() {
    let exported = exported();
    let readme = file("README.md");
    for name in [
        "streamlr_events_total",
        "streamlr_predictions_total",
        "streamlr_dead_letters_total",
        "streamlr_labels_total",
        "streamlr_updates_total",
        "streamlr_score_latency_seconds",
        "streamlr_event_to_prediction_seconds",
        "streamlr_label_delay_seconds",
        "streamlr_join_store_entries",
        "streamlr_join_store_table_bytes",
        "streamlr_join_store_tables",
        "streamlr_join_store_cache_bytes",
        "streamlr_join_store_memtable_bytes",
        "streamlr_join_store_recent_bytes",
        "streamlr_join_store_recent_joins_total",
        "process_resident_memory_bytes",
        "streamlr_model_version",
        "streamlr_checkpoint_age_seconds",
        "streamlr_checkpoint_duration_seconds",
        "streamlr_checkpoint_pause_seconds",
        "streamlr_progressive_log_loss",
        "streamlr_progressive_auc",
        "streamlr_calibration_error",
        "streamlr_feature_psi",
        "streamlr_feature_ks",
        "streamlr_score_psi",
        "streamlr_drift_alerts_total",
        "streamlr_score_drift_alerts_total",
        "streamlr_consumer_lag",
        "streamlr_checkpoint_offset",
        "streamlr_weight_norm",
        "streamlr_label_coverage_ratio",
        "streamlr_learning_frozen",
        "streamlr_offset_commits_total",
        "streamlr_loop_seconds_total",
    ] {
        assert!(exported.contains(name), "{name} is not exported");
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in README"
        );
    }
}
