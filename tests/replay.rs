//! End-to-end tests of `streamlr replay` and `streamlr check-config` through the binary and the
//! library, on generated streams written to real files.

mod common;

use std::collections::HashMap;

use streamlr::config::Config;
use streamlr::model::log_loss_prob;
use streamlr::replay;
use streamlr::simulate::SimConfig;

/// On a stationary stream with a known logistic ground truth and labels delayed up to a minute,
/// the progressive log loss over the events after the first 200k is within 10 % of the ground
/// truth's own log loss on the same events.
#[test]
fn replay_learns_close_to_the_ground_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = SimConfig {
        count: 300_000,
        seed: 11,
        label_delay_min_ms: 1_000,
        label_delay_max_ms: 60_000,
        ..SimConfig::default()
    };
    let s = common::write_stream(dir.path(), cfg);
    let predictions = dir.path().join("predictions.jsonl");
    let args = s.args(Some(predictions.clone()));
    let report = replay::run(Config::default(), &args).expect("replay");
    assert_eq!(report.events.scored, 300_000);
    assert_eq!(report.labels["joined"], 300_000);
    let labels: HashMap<String, bool> = common::read_jsonl(&s.labels)
        .into_iter()
        .map(|l| {
            (
                l["id"].as_str().expect("id").to_string(),
                l["label"].as_u64() == Some(1),
            )
        })
        .collect();
    let (mut model, mut truth, mut n) = (0.0, 0.0, 0);
    for p in common::read_jsonl(&predictions) {
        let id = p["id"].as_str().expect("id");
        let i: usize = id.trim_start_matches("tx-").parse().expect("index");
        if i < 200_000 {
            continue;
        }
        let y = labels[id];
        model += log_loss_prob(p["score"].as_f64().expect("score"), y);
        truth += log_loss_prob(f64::from(s.truth[i]), y);
        n += 1;
    }
    let (model, truth) = (model / n as f64, truth / n as f64);
    assert!(
        model <= 1.10 * truth,
        "log loss after 200k: model {model:.5}, ground truth {truth:.5}"
    );
}

/// The binary: every event line ends as a prediction or a counted refusal, every label of a
/// valid event joins once, and the report's numbers add up.
#[test]
fn replay_cli_accounts_for_every_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = common::write_stream(
        dir.path(),
        SimConfig {
            count: 20_000,
            seed: 5,
            malformed_rate: 0.05,
            ..SimConfig::default()
        },
    );
    let predictions = dir.path().join("p.jsonl");
    let report_path = dir.path().join("report.json");
    let out = common::run(
        &[
            "replay",
            "--events",
            s.events.to_str().expect("utf8"),
            "--labels",
            s.labels.to_str().expect("utf8"),
            "--predictions",
            predictions.to_str().expect("utf8"),
            "--report",
            report_path.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report"))
            .expect("json");
    let scored = r["events"]["scored"].as_u64().expect("scored");
    let invalid = r["events"]["invalid"].as_u64().expect("invalid");
    assert_eq!(scored, s.summary.events);
    assert_eq!(invalid, s.summary.malformed);
    assert!(invalid > 500, "the stream has malformed records");
    assert_eq!(scored + invalid, 20_000);
    let reasons = r["events"]["invalid_by_reason"]
        .as_object()
        .expect("reasons");
    for reason in [
        "not_json",
        "missing_id",
        "non_finite_number",
        "features_not_object",
        "empty_id",
        "invalid_timestamp",
    ] {
        assert!(
            reasons.get(reason).and_then(|v| v.as_u64()).unwrap_or(0) > 0,
            "{reason} counted"
        );
    }
    assert_eq!(
        reasons
            .values()
            .map(|v| v.as_u64().unwrap_or(0))
            .sum::<u64>(),
        invalid
    );
    assert_eq!(common::read_jsonl(&predictions).len() as u64, scored);
    assert_eq!(r["labels"]["joined"].as_u64(), Some(s.summary.labels));
    assert_eq!(r["updates"]["applied"].as_u64(), Some(s.summary.labels));
    let q = &r["quality_all"];
    assert_eq!(q["n"].as_u64(), Some(s.summary.labels));
    assert!(q["log_loss"].as_f64().expect("ll").is_finite());
    // Predictions carry the documented fields.
    let p = &common::read_jsonl(&predictions)[0];
    for k in [
        "id",
        "score",
        "decision",
        "threshold",
        "model_version",
        "event_ts",
        "scored_at",
        "contributions",
    ] {
        assert!(p.get(k).is_some(), "prediction has {k}: {p}");
    }
}

/// Replaying the same files twice gives byte-identical predictions.
#[test]
fn replay_is_deterministic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = common::write_stream(
        dir.path(),
        SimConfig {
            count: 5_000,
            seed: 9,
            ..SimConfig::default()
        },
    );
    let run = |name: &str| {
        let p = dir.path().join(name);
        let args = s.args(Some(p.clone()));
        replay::run(Config::default(), &args).expect("replay");
        std::fs::read(p).expect("read")
    };
    assert_eq!(run("a.jsonl"), run("b.jsonl"));
}

#[test]
fn check_config_layers_and_reports_errors() {
    let out = common::run(
        &[
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/configs/streamlr.toml"),
        ],
        &[("STREAMLR__MODEL__THRESHOLD", "0.85")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let effective: toml::Table = text.parse().expect("prints TOML");
    assert_eq!(effective["model"]["threshold"].as_float(), Some(0.85));
    // Without --config the built-in defaults apply.
    let out = common::run(&["check-config"], &[]);
    assert!(out.status.success());
    // Errors name the key and the value, and the exit code says so.
    let out = common::run(&["check-config"], &[("STREAMLR__MODEL__FTRL__ALPHA", "-1")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.ftrl.alpha = -1"), "{err}");
    // A file that cannot be read: the path and the OS error, said once.
    let out = common::run(
        &["check-config", "--config", "/nonexistent/streamlr.toml"],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/streamlr.toml"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

/// A file `simulate` cannot write (a full disk: `/dev/full`) is a clean error that names it.
#[test]
fn simulate_names_the_file_it_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = dir.path().join("ok.jsonl");
    let ok = ok.to_str().expect("path");
    for args in [
        [
            "--events-out",
            "/dev/full",
            "--labels-out",
            ok,
            "--count",
            "1000",
        ]
        .as_slice(),
        [
            "--events-out",
            ok,
            "--labels-out",
            "/dev/full",
            "--count",
            "1000",
        ]
        .as_slice(),
    ] {
        let out = common::run(&[&["simulate"], args].concat(), &[]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot write /dev/full: ") && err.contains("os error 28"),
            "{err}"
        );
    }
}

/// The two-thread replay ends in exactly the state of feeding one engine record by record in
/// the documented merge order (smallest time first, the event first at equal times), computed
/// here independently by sorting both files.
#[test]
fn pipelined_replay_equals_record_by_record() {
    use streamlr::engine::Engine;
    use streamlr::join::MemoryBackend;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = common::write_stream(
        dir.path(),
        SimConfig {
            count: 30_000,
            seed: 21,
            malformed_rate: 0.01,
            label_delay_max_ms: 120_000,
            ..SimConfig::default()
        },
    );
    let mut cfg = Config::default();
    cfg.join.window = "80s".parse().expect("duration");
    cfg.join.grace = "10s".parse().expect("duration");
    let mut piped = Engine::new(cfg.clone(), |_| (MemoryBackend::default(), None));
    let args = s.args(None);
    replay::run_with(&mut piped, &args, |_| Ok(())).expect("replay");

    let mut records: Vec<(i64, u8, usize, String)> = Vec::new();
    let mut last = 0;
    for (i, line) in std::fs::read_to_string(&s.events)
        .expect("read")
        .lines()
        .enumerate()
    {
        let ts = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["ts"].as_i64())
            .unwrap_or(last)
            .max(last);
        last = ts;
        records.push((ts, 0, i, line.to_string()));
    }
    for (i, line) in std::fs::read_to_string(&s.labels)
        .expect("read")
        .lines()
        .enumerate()
    {
        let ts = serde_json::from_str::<serde_json::Value>(line).expect("label")["ts"]
            .as_i64()
            .expect("ts");
        records.push((ts, 1, i, line.to_string()));
    }
    records.sort();
    let mut single = Engine::new(cfg, |_| (MemoryBackend::default(), None));
    for (ts, kind, _, line) in &records {
        if *kind == 0 {
            let _ = single.on_event(line.as_bytes(), 0, *ts, *ts);
        } else {
            single.on_label(line.as_bytes(), 0);
        }
    }
    let (a, b) = (piped.learner_state(), single.learner_state());
    let bits = |m: &streamlr::model::Model| m.w.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.model), bits(&b.model));
    assert_eq!(a.counters, b.counters);
    assert!(
        a.counters.label(streamlr::engine::LabelCount::Expired) > 0,
        "the short window expires some entries"
    );
    assert_eq!(a, b);
}

/// Replay on the disk-backed join store (committing a cut every 5k records, with the undo log)
/// ends in the same learner state and the same report counts as replay in memory, on a stream
/// whose short window makes entries expire, tombstones purge and labels arrive late.
#[test]
fn replay_on_the_disk_store_equals_replay_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = common::write_stream(
        dir.path(),
        SimConfig {
            count: 20_000,
            seed: 33,
            malformed_rate: 0.01,
            label_delay_max_ms: 240_000,
            ..SimConfig::default()
        },
    );
    let mut cfg = Config::default();
    cfg.join.window = "90s".parse().expect("duration");
    cfg.join.grace = "10s".parse().expect("duration");
    cfg.join.on_expiry = streamlr::config::OnExpiry::Implicit;
    let args = s.args(None);
    let mem = replay::run(cfg.clone(), &args).expect("memory replay");
    let mut persisted = cfg.clone();
    persisted.checkpoint.dir = dir.path().join("state").display().to_string();
    persisted.checkpoint.keep = 3;
    let store_dir = persisted.checkpoint.join_dir();
    let disk = replay::run_persistent(persisted.clone(), &args, 5_000).expect("disk replay");
    assert_eq!(disk.labels, mem.labels);
    assert!(
        mem.labels["implicit"] > 0 && mem.labels["late"] > 0,
        "{:?}",
        mem.labels
    );
    assert_eq!(disk.events.scored, mem.events.scored);
    assert_eq!(disk.updates.applied, mem.updates.applied);
    assert_eq!(
        disk.model.weight_norm.to_bits(),
        mem.model.weight_norm.to_bits()
    );
    assert_eq!(disk.model.bias.to_bits(), mem.model.bias.to_bits());
    assert_eq!(
        disk.quality_all.log_loss.to_bits(),
        mem.quality_all.log_loss.to_bits()
    );
    let store = streamlr::store::JoinStore::open(&store_dir, 1 << 20, 1).expect("reopen");
    let cut = store.last_cut().expect("cut").expect("committed");
    assert!(cut.seq >= 8, "about one cut per 5k records: {cut:?}");
    // The newest checkpoint is the one the store's last cut names, and holds the final model.
    let ckpts = streamlr::checkpoint::Checkpoints::open(&persisted.checkpoint.checkpoints_dir(), 3)
        .expect("dir");
    assert_eq!(ckpts.versions().expect("versions").len(), 3, "keep = 3");
    let head = ckpts.load(cut.tag).expect("checkpoint of the last cut");
    assert_eq!(head.meta.store_cut, Some(cut.seq));
    let (_, learner) = streamlr::snapshot::decode(&head.learner, None).expect("learner");
    assert_eq!(learner.counters.updates, mem.updates.applied);
    assert_eq!(learner.model.bias().to_bits(), mem.model.bias.to_bits());
    // A second run into the same state directory is refused.
    assert!(replay::run_persistent(persisted, &args, 5_000).is_err());
}

/// The checkpoint commands on the state a persisted replay leaves: list, verify, show, a
/// tampered file refused by verify (exit 1) and skipped by show, and rollback to an older model.
#[test]
fn checkpoint_commands_list_verify_show_and_roll_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = common::write_stream(
        dir.path(),
        SimConfig {
            count: 6_000,
            seed: 2,
            ..SimConfig::default()
        },
    );
    let state = dir.path().join("state");
    let env = [
        ("STREAMLR__CHECKPOINT__DIR", state.to_str().expect("utf8")),
        ("STREAMLR__CHECKPOINT__KEEP", "10"),
        ("STREAMLR__DRIFT__REFERENCE_EVENTS", "1000"),
        ("STREAMLR__DRIFT__WINDOW_EVENTS", "1000"),
        ("STREAMLR__DRIFT__SCORE_REFERENCE_AFTER_UPDATES", "0"),
    ];
    let run = |args: &[&str]| common::run(args, &env);
    let out = run(&[
        "replay",
        "--events",
        s.events.to_str().expect("utf8"),
        "--labels",
        s.labels.to_str().expect("utf8"),
        "--persist",
        "--commit-every",
        "3000",
        "--report",
        dir.path().join("r.json").to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Drift: reference of 1000 events, then tumbling windows of 1000 over the other 5000.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).expect("report"))
            .expect("json");
    assert_eq!(
        report["drift"]["windows"].as_u64(),
        Some(5),
        "{}",
        report["drift"]
    );
    assert!(
        report["drift"]["last"]["columns"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    let out = run(&["checkpoint", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(listed >= 3, "a checkpoint every 3000 records: {listed}");
    // Tamper with the newest: verify fails naming it, show falls back to the previous one.
    let newest = listed as u64;
    let path = state
        .join("checkpoints")
        .join(format!("ckpt-{newest:020}.bin"));
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&path, bytes).expect("tamper");
    let out = run(&["checkpoint", "verify"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("checksum mismatch"));
    let out = run(&["checkpoint", "show"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["meta"]["version"].as_u64(), Some(newest - 1));
    // Roll back to version 1: a new head, parent 1, with version 1's model.
    let out = run(&["rollback", "--to", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(head["version"].as_u64(), Some(newest + 1));
    assert_eq!(head["parent"].as_u64(), Some(1));
    let one: serde_json::Value =
        serde_json::from_slice(&run(&["checkpoint", "show", "--version", "1"]).stdout)
            .expect("json");
    let new: serde_json::Value =
        serde_json::from_slice(&run(&["checkpoint", "show"]).stdout).expect("json");
    assert_eq!(new["meta"]["version"].as_u64(), Some(newest + 1));
    assert_eq!(new["model"], one["model"]);

    // Re-baseline drift: a new head with the same model and the drift reference reset.
    assert_eq!(new["drift"]["reference_set"], true, "{new}");
    assert!(new["drift"]["windows"].as_u64().expect("windows") >= 1);
    let out = run(&["rebaseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebased: serde_json::Value =
        serde_json::from_slice(&run(&["checkpoint", "show"]).stdout).expect("json");
    assert_eq!(rebased["meta"]["version"].as_u64(), Some(newest + 2));
    assert_eq!(rebased["meta"]["parent"].as_u64(), Some(newest + 1));
    assert!(
        rebased["meta"]["lineage"]
            .as_str()
            .is_some_and(|l| l.contains("drift re-baseline"))
    );
    assert_eq!(rebased["model"], new["model"]);
    assert_eq!(rebased["drift"]["reference_set"], false);
    assert_eq!(rebased["drift"]["windows"].as_u64(), Some(0));
}
