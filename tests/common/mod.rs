//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use streamlr::simulate::{Record, SimConfig, Simulator};

/// The streamlr binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_streamlr"))
}

/// Runs the binary with args and extra environment.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run streamlr")
}

/// Files written by [`write_stream`].
#[derive(Debug)]
pub struct Stream {
    pub events: PathBuf,
    pub labels: PathBuf,
    /// True probability per event index (NaN for malformed records).
    pub truth: Vec<f32>,
    pub summary: streamlr::simulate::SimSummary,
}

impl Stream {
    /// Replay arguments for this stream, writing predictions to `predictions` if given.
    pub fn args(&self, predictions: Option<PathBuf>) -> streamlr::replay::ReplayArgs {
        streamlr::replay::ReplayArgs {
            events: self.events.clone(),
            labels: self.labels.clone(),
            predictions,
            progress: false,
        }
    }
}

/// Writes a simulated stream into `dir`.
pub fn write_stream(dir: &Path, cfg: SimConfig) -> Stream {
    let events = dir.join("events.jsonl");
    let labels = dir.join("labels.jsonl");
    let mut ev = std::io::BufWriter::new(std::fs::File::create(&events).expect("create"));
    let mut lb = std::io::BufWriter::new(std::fs::File::create(&labels).expect("create"));
    let mut sim = Simulator::new(cfg);
    while let Some(r) = sim.next_record() {
        match r {
            Record::Event { line, .. } => writeln!(ev, "{line}").expect("write"),
            Record::Label { line, .. } => writeln!(lb, "{line}").expect("write"),
        }
    }
    ev.flush().expect("flush");
    lb.flush().expect("flush");
    Stream {
        events,
        labels,
        truth: sim.truth_p.clone(),
        summary: sim.summary(),
    }
}

/// Reads a JSON-lines file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// A local Kafka-protocol broker (tansu, memory storage) started by `scripts/broker.sh` on a free
/// loopback port; stopped (by its pid, through the same script) when dropped.
#[derive(Debug)]
pub struct Broker {
    dir: tempfile::TempDir,
    /// `host:port` to bootstrap from.
    pub bootstrap: String,
}

/// Runs `scripts/broker.sh COMMAND DIR ARGS...`.
fn broker_script(command: &str, dir: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/broker.sh"))
        .arg(command)
        .arg(dir)
        .args(args)
        .output()
}

impl Broker {
    /// Starts a broker.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = broker_script("start", dir.path(), &[]).expect("broker.sh start");
        assert!(
            out.status.success(),
            "broker did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Self { dir, bootstrap }
    }

    /// Creates a topic with `partitions` partitions.
    pub fn topic(&self, name: &str, partitions: u32) {
        let out = broker_script("topic", self.dir.path(), &[name, &partitions.to_string()])
            .expect("broker.sh topic");
        assert!(
            out.status.success(),
            "topic {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = broker_script("stop", self.dir.path(), &[]);
    }
}
