//! The operator's view of a running worker on a real broker: `/model`, `/status.json`, the new
//! metrics, and the live status page loaded in a real headless browser (Debian's chromium,
//! installed by `scripts/install.sh`), which must draw numbers into every chart. The screenshot
//! is kept as a test artifact: `$CARGO_TARGET_DIR/tmp/status-page.png`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Broker, WorkerProc};
use streamlr::simulate::SimConfig;

const START_TS: i64 = 1_780_000_000_000;
const LONG: Duration = Duration::from_secs(120);

fn status(addr: &str) -> serde_json::Value {
    let (code, body) = common::http_get(addr, "/status.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status.json is JSON")
}

/// Every value of attribute `name` in the tags called `tag` inside the element with `id`.
fn attrs(dom: &str, id: &str, tag: &str, name: &str) -> Vec<String> {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let end = rest.find("</svg>").or_else(|| rest.find("</table>"));
    let section = &rest[..end.unwrap_or(rest.len())];
    section
        .split(&format!("<{tag} "))
        .skip(1)
        .filter_map(|t| {
            let t = format!(" {}", &t[..t.find('>').unwrap_or(t.len())]);
            let v = t.split(&format!(" {name}=\"")).nth(1)?;
            Some(v[..v.find('"')?].to_string())
        })
        .collect()
}

fn numbers(v: &[String]) -> Vec<f64> {
    v.iter()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}")))
        .collect()
}

/// The `data-value` of the tile `id` (a number, or `None` while it shows "–").
fn tile(dom: &str, id: &str) -> Option<f64> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag = &dom[at..at + dom[at..].find('>')?];
    let v = tag.split("data-value=\"").nth(1)?;
    v[..v.find('"')?].parse().ok()
}

fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs (scripts/install.sh installs it)")
}

#[test]
fn the_status_page_draws_a_running_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    for t in ["events", "labels"] {
        broker.topic(t, 2);
    }
    broker.topic("dead-letter", 1);
    broker.topic("predictions", 2);
    let stream = common::write_stream(
        dir.path(),
        SimConfig {
            count: 8_000,
            seed: 5,
            start_ts: START_TS,
            malformed_rate: 0.01,
            label_delay_max_ms: 600_000,
            ..SimConfig::default()
        },
    );
    let events = common::lines_of(&stream.events);
    let labels = common::lines_of(&stream.labels);
    let config = common::worker_config(
        dir.path(),
        &broker.bootstrap,
        "ops",
        "predictions",
        2_000,
        "admin_token = \"t0k3n\"\n[drift]\nreference_events = 1000\nwindow_events = 1000\nscore_reference_after_updates = 0\n\
         [features.numeric.amount]\n[features.categorical.country]\n[features.boolean.new_device]\n",
    );
    let half = events.len() / 2;
    common::produce_lines(&broker.bootstrap, "events", &events[..half]);
    common::produce_lines(&broker.bootstrap, "labels", &labels);
    let w = WorkerProc::start(&config, &dir.path().join("ops.log"));
    let addr = common::wait_for(LONG, "the HTTP address in the log", || {
        common::http_addr(&w.log_text())
    });

    // The first half learned: /model lists weights, largest first, with the lineage.
    let model = common::wait_for(LONG, "a learned model on /model", || {
        let (code, body) = common::http_get(&addr, "/model");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["updates"].as_u64()? > 0 && !v["coefficients"].as_array()?.is_empty())
            .then_some(v)
    });
    let weights: Vec<f64> = model["coefficients"]
        .as_array()
        .expect("coefficients")
        .iter()
        .map(|c| c["weight"].as_f64().expect("weight"))
        .collect();
    assert!(weights.len() <= 100);
    assert!(
        weights.windows(2).all(|p| p[0].abs() >= p[1].abs()),
        "sorted by |weight|: {weights:?}"
    );
    assert_eq!(model["model"]["optimizer"], "ftrl");
    let cfg = streamlr::config::Config::load(Some(&config), Vec::new()).expect("config");
    assert_eq!(
        model["schema_digest"].as_str(),
        Some(cfg.schema_digest().as_str())
    );
    // The second half of the stream names the buckets the view shows.
    common::produce_lines(&broker.bootstrap, "events", &events[half..]);
    let named = common::wait_for(LONG, "named coefficients on /model", || {
        let (_, body) = common::http_get(&addr, "/model");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let names: Vec<String> = v["coefficients"]
            .as_array()?
            .iter()
            .filter_map(|c| c["feature"].as_str().map(str::to_string))
            .collect();
        // Checkpoints are cut every second: by now the view carries the last one's lineage.
        let checkpoint = v["lineage"]["checkpoint"].as_u64()?;
        (names.len() >= 5 && checkpoint >= 1).then_some(names)
    });
    // The simulator's features (amount, country=C07, mcc=5411, ...), never a bucket number.
    let known = [
        "amount",
        "distance_km",
        "tx_count_24h",
        "card_age_days",
        "new_device",
        "hour",
        "country",
        "mcc",
        "channel",
        "merchant",
    ];
    for n in &named {
        let base = n.split('=').next().unwrap_or_default();
        assert!(known.contains(&base), "{n} is not a simulator feature");
    }

    // Everything processed: the status, the metrics and lag agree.
    let s = common::wait_for(LONG, "every event scored and a drift window", || {
        let s = status(&addr);
        let lag: i64 = s["lag"]
            .as_array()?
            .iter()
            .filter_map(|l| l["lag"].as_i64())
            .sum();
        let lagged = s["lag"].as_array()?.len();
        (s["predictions"].as_u64()? + s["dead_letters"].as_u64()? == events.len() as u64
            && s["drift"].is_object()
            && lagged == 4
            && lag == 0)
            .then_some(s)
    });
    let joined = s["labels"]
        .as_array()
        .and_then(|l| l.iter().find(|o| o["outcome"] == "joined"))
        .and_then(|o| o["count"].as_f64())
        .expect("joined count");
    assert!(joined > 0.0);
    let (_, metrics) = common::http_get(&addr, "/metrics");
    let delays = common::metric(&metrics, "streamlr_label_delay_seconds_count").expect("delays");
    assert!(delays > 0.0, "label delays recorded");
    let coverage = common::metric(&metrics, "streamlr_label_coverage_ratio");
    assert!(
        coverage.is_none() || coverage.is_some_and(|c| (0.0..=1.0).contains(&c)),
        "{coverage:?}"
    );
    assert!(metrics.contains("streamlr_consumer_lag{topic=\"labels\",partition=\"1\"} 0"));

    // The page, in a real browser: it fetched /status.json and drew every chart with numbers.
    let url = format!("http://{addr}/");
    let profile = dir.path().join("chromium");
    let out = chromium(&["--dump-dom", &url], &profile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never rendered:\n{dom}"
    );
    let predictions = s["predictions"].as_u64().expect("predictions") as f64;
    assert_eq!(tile(&dom, "model-version"), s["model_version"].as_f64());
    assert!(tile(&dom, "events-rate").is_some_and(|r| r >= 0.0));
    assert!(
        tile(&dom, "auc").is_some_and(|a| a > 0.5 && a <= 1.0),
        "a learned model ranks"
    );
    assert!(tile(&dom, "latency-p99").is_some_and(|l| l > 0.0));
    assert_eq!(tile(&dom, "lag-total"), Some(0.0));
    let hist = numbers(&attrs(&dom, "score-histogram", "rect", "data-value"));
    assert_eq!(hist.len(), 20);
    assert_eq!(
        hist.iter().sum::<f64>(),
        predictions,
        "every score in the histogram"
    );
    let observed = numbers(&attrs(&dom, "reliability", "circle", "data-observed"));
    assert!(!observed.is_empty());
    assert!(observed.iter().all(|o| (0.0..=1.0).contains(o)));
    let columns = s["drift"]["columns"].as_array().expect("columns");
    let psi = numbers(&attrs(&dom, "psi", "rect", "data-value"));
    assert_eq!(psi.len(), columns.len());
    assert!(psi.len() >= 4, "amount, country, new_device and the score");
    for (bar, col) in psi.iter().zip(columns) {
        // The same number printed by JavaScript and parsed here, and parsed by serde_json
        // (whose default float parsing may be one ulp off): equal to 1e-12 relative.
        let want = col["psi"].as_f64().expect("psi");
        assert!((bar - want).abs() <= 1e-12 * want.abs(), "{bar} vs {want}");
    }
    let lines = attrs(&dom, "psi", "line", "class");
    assert!(lines.iter().any(|c| c == "warn") && lines.iter().any(|c| c == "alert"));
    let outcomes = attrs(&dom, "label-outcomes", "rect", "data-label");
    let counts = numbers(&attrs(&dom, "label-outcomes", "rect", "data-value"));
    let bar = outcomes
        .iter()
        .position(|o| o == "joined")
        .expect("joined bar");
    assert_eq!(counts[bar], joined);
    assert_eq!(
        outcomes.first().map(String::as_str),
        Some("joined"),
        "in outcome order"
    );
    assert_eq!(attrs(&dom, "lag-table", "td", "data-value").len(), 4);

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let out = chromium(
        &[
            "--window-size=1280,1100",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
        &profile,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    eprintln!("status page screenshot: {}", shot.display());

    // Admin endpoints: refused without the bearer token, or by GET; an operator's freeze keeps
    // scoring and stops learning, counted; unfreeze learns again.
    let auth = "Authorization: Bearer t0k3n\r\n";
    for (method, headers, code) in [
        ("POST", "", 401),
        ("POST", "Authorization: Bearer wrong\r\n", 401),
        ("POST", "Authorization: t0k3n\r\n", 401),
        ("GET", auth, 405),
    ] {
        let (got, body) = common::http_request(&addr, method, "/admin/freeze", headers);
        assert_eq!(got, code, "{method} {headers:?}: {body}");
    }
    assert_eq!(
        common::http_request(&addr, "POST", "/admin/nope", auth).0,
        404
    );
    let (_, metrics) = common::http_get(&addr, "/metrics");
    let updates = common::metric(&metrics, "streamlr_updates_total").expect("updates");
    let (code, body) = common::http_request(&addr, "POST", "/admin/freeze", auth);
    assert_eq!((code, body.as_str()), (202, "accepted: freeze\n"));
    common::wait_for(LONG, "the freeze applied", || {
        let (_, m) = common::http_get(&addr, "/metrics");
        (common::metric(&m, "streamlr_learning_frozen") == Some(1.0)).then_some(())
    });
    let extra = 20;
    // Just after the stream (80 s of event time): a label that is fetched before its event waits
    // for it, within join.label_wait of the watermark.
    let ts = START_TS + 200_000;
    let new_events: Vec<Vec<u8>> = (0..extra)
        .map(|i| {
            format!(
                r#"{{"id":"admin-{i}","ts":{},"features":{{"amount":{i}}}}}"#,
                ts + i
            )
            .into_bytes()
        })
        .collect();
    let new_labels: Vec<Vec<u8>> = (0..extra)
        .map(|i| format!(r#"{{"id":"admin-{i}","label":1,"ts":{}}}"#, ts + 1_000 + i).into_bytes())
        .collect();
    common::produce_lines(&broker.bootstrap, "events", &new_events);
    common::produce_lines(&broker.bootstrap, "labels", &new_labels);
    let deadline = std::time::Instant::now() + LONG;
    let m = loop {
        let (_, m) = common::http_get(&addr, "/metrics");
        let skipped = common::metric(
            &m,
            "streamlr_updates_skipped_total{reason=\"operator_freeze\"}",
        );
        if skipped >= Some(extra as f64) {
            break m;
        }
        let log = w.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "the new labels did not join: {skipped:?} skipped; status {}; log tail:\n{}",
            status(&addr),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        common::metric(
            &m,
            "streamlr_updates_skipped_total{reason=\"operator_freeze\"}"
        ),
        Some(extra as f64)
    );
    assert_eq!(common::metric(&m, "streamlr_updates_total"), Some(updates));
    let (code, _) = common::http_request(&addr, "POST", "/admin/unfreeze", auth);
    assert_eq!(code, 202);
    common::wait_for(LONG, "the unfreeze applied", || {
        let (_, m) = common::http_get(&addr, "/metrics");
        (common::metric(&m, "streamlr_learning_frozen") == Some(0.0)).then_some(())
    });
    assert!(w.log_text().contains("Admin command applied"));
    assert!(!w.log_text().contains("t0k3n"), "the token is never logged");
    assert!(w.terminate(Duration::from_secs(30)).success());
}
