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
    broker_script_env(command, dir, args, &[])
}

fn broker_script_env(
    command: &str,
    dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> std::io::Result<Output> {
    let mut c = Command::new("bash");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/broker.sh"))
        .arg(command)
        .arg(dir)
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output()
}

impl Broker {
    /// Starts a broker.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a broker that advertises `127.0.0.1:port` (where the caller runs a proxy).
    pub fn start_advertising(port: u16) -> Self {
        Self::start_with(&[("ADVERTISED_PORT", port.to_string())])
    }

    /// Starts `tansu` at `bin`, built with SQLite storage, keeping its data in its directory's
    /// `tansu.db` across [`Self::restart`].
    pub fn start_persistent(bin: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // tansu reads `sqlite://` + a path relative to its working directory: an absolute one
        // keeps its leading slash.
        let storage = format!("sqlite:///{}", dir.path().join("tansu.db").display());
        Self::start_in(dir, &[("TANSU_BIN", bin.to_string()), ("STORAGE", storage)])
    }

    /// Stops the broker (by pid) and starts it again on the same port and storage.
    pub fn restart(&self) {
        let out = broker_script("restart", self.dir.path(), &[]).expect("broker.sh restart");
        assert!(
            out.status.success(),
            "broker did not restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_with(env: &[(&str, String)]) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), env)
    }

    fn start_in(dir: tempfile::TempDir, env: &[(&str, String)]) -> Self {
        let out = broker_script_env("start", dir.path(), &[], env).expect("broker.sh start");
        assert!(
            out.status.success(),
            "broker did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Self { dir, bootstrap }
    }

    /// The port the broker itself listens on (written by the script to `DIR/listen`).
    pub fn listen_port(&self) -> u16 {
        std::fs::read_to_string(self.dir.path().join("listen"))
            .expect("listen file")
            .trim()
            .parse()
            .expect("port")
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

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Msg {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

impl Msg {
    /// The payload as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
}

/// Reads a whole topic from the beginning (no group: partitions assigned directly), keeping on
/// until `done(records)` holds and every partition reported its end, or `timeout` passes.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: std::time::Duration,
    done: impl Fn(&[Msg]) -> bool,
) -> Vec<Msg> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut at_end = std::collections::HashSet::new();
    while std::time::Instant::now() < deadline {
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                out.push(Msg {
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {
                if at_end.len() == partitions as usize && done(&out) {
                    break;
                }
            }
        }
    }
    out
}

/// Produces JSON lines to `topic`, keyed by their `"id"` and timestamped with their `"ts"` (a line
/// without them, e.g. malformed, gets the id found in its text, if any, and the previous time).
pub fn produce_lines(bootstrap: &str, topic: &str, lines: &[Vec<u8>]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    let mut ts = 1_000_000_000_000i64;
    for line in lines {
        let v: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        if let Some(t) = v.as_ref().and_then(|v| v["ts"].as_i64()) {
            ts = t;
        }
        let text = String::from_utf8_lossy(line);
        let id = v
            .as_ref()
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .or_else(|| {
                let rest = text.split("\"id\":\"").nth(1)?;
                Some(rest.split('"').next()?.to_string())
            })
            .unwrap_or_default();
        loop {
            let rec = BaseRecord::to(topic)
                .key(id.as_bytes())
                .payload(line.as_slice())
                .timestamp(ts);
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    producer.poll(std::time::Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(std::time::Duration::from_secs(30))
        .expect("flush");
}

/// The lines of a file, as bytes.
pub fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .expect("read")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// A worker configuration for tests: the given brokers, group, state directory and outputs; test
/// profile session timeouts (tansu joins a group in ~1 s with them; real Kafka needs >= 6 s);
/// a deterministic merge (it waits for every partition's next record or end) and no wall-clock
/// expiry, so the same logs always give the same model. `extra` is appended (other sections).
pub fn worker_config(
    dir: &Path,
    brokers: &str,
    group: &str,
    predictions: &str,
    every_updates: u64,
    extra: &str,
) -> PathBuf {
    let state = dir.join(format!("state-{group}"));
    let text = format!(
        r#"[kafka]
brokers = "{brokers}"
group_id = "{group}"
predictions_topic = "{predictions}"
merge_idle = "1h"
request_timeout = "10s"
[kafka.consumer]
"session.timeout.ms" = "2000"
"heartbeat.interval.ms" = "300"
[checkpoint]
dir = "{state}"
every = "1s"
every_updates = {every_updates}
drain_timeout = "20s"
[join]
idle_after = "1000d"
[http]
listen = "127.0.0.1:0"
{extra}
"#,
        state = state.display()
    );
    let path = dir.join(format!("{group}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// A `streamlr run` child process; killed (SIGKILL) if still running when dropped.
#[derive(Debug)]
pub struct WorkerProc {
    child: std::process::Child,
    pub log: PathBuf,
    /// Length of the (shared, appended) log when this process started: its own lines follow.
    log_from: usize,
}

impl WorkerProc {
    /// Starts `streamlr run --config CONFIG`, logging to `log` (appended).
    pub fn start(config: &Path, log: &Path) -> Self {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let log_from = f.metadata().map_or(0, |m| m.len() as usize);
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn worker");
        Self {
            child,
            log: log.to_path_buf(),
            log_from,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines this process wrote (the log file may hold earlier runs' before them).
    pub fn own_log_text(&self) -> String {
        let text = self.log_text();
        text.get(self.log_from..).unwrap_or_default().to_string()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Sends SIGTERM (to this child's pid only) and waits for the exit.
    pub fn terminate(mut self, timeout: std::time::Duration) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker did not stop within {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash at whatever instant it is at.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `streamlr checkpoint show` of the newest valid checkpoint (`None` if there is none yet).
pub fn checkpoint_show(config: &Path) -> Option<serde_json::Value> {
    let out = run(
        &["checkpoint", "show", "--config", &config.to_string_lossy()],
        &[],
    );
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Sum of the checkpointed next offsets of `topic` (= records consumed from it).
pub fn consumed(show: &serde_json::Value, topic: &str) -> i64 {
    show["meta"]["offsets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|o| o["topic"] == topic)
                .map(|o| o["offset"].as_i64().unwrap_or(0).max(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A TCP proxy on loopback in front of the broker, to cut the network: while `down`, every
/// connection through it is closed and new ones are refused.
#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections stay open but every byte is dropped (see [`Self::set_blackhole`]).
    mute: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Proxy {
    /// Listens on a free loopback port; forwards to the target set by [`Self::forward_to`].
    pub fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::net::TcpStream>::new()));
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
        let mute = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, c, t, m) = (down.clone(), conns.clone(), target.clone(), mute.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let to = t.load(Ordering::SeqCst);
                if d.load(Ordering::SeqCst) || to == 0 {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    let mute = m.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if !mute.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                if let (Ok(c1), Ok(s1)) = (client.try_clone(), server.try_clone()) {
                    if let Ok(mut all) = c.lock() {
                        all.push(c1);
                        all.push(s1);
                    }
                    if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                        pipe(c2, server);
                        pipe(s2, client);
                    }
                }
            }
        });
        Self {
            port,
            down,
            mute,
            conns,
            target,
        }
    }

    /// Where connections go.
    pub fn forward_to(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
    }

    /// A network that drops every packet (true) or delivers them again (false): connections
    /// stay open and new ones are accepted, but no byte gets through in either direction, so a
    /// request waits for an answer until the client's own timeout. Turning it off closes the
    /// connections that lost bytes (their Kafka framing is broken): clients reconnect.
    pub fn set_blackhole(&self, on: bool) {
        self.mute.store(on, std::sync::atomic::Ordering::SeqCst);
        if !on && let Ok(mut all) = self.conns.lock() {
            for s in all.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Cuts the network (true) or restores it (false).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down && let Ok(mut all) = self.conns.lock() {
            for s in all.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// `GET path` on `addr`: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, "")
}

/// Sends `method path` with extra header lines (each ending in CRLF); status code and body.
pub fn http_request(addr: &str, method: &str, path: &str, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    // Sent in small pieces on purpose: the server must read the whole head, however it arrives.
    for piece in [
        format!("{method} {path} "),
        "HTTP/1.1\r\n".to_string(),
        format!("Host: {addr}\r\n{headers}Connection: close\r\n\r\n"),
    ] {
        s.write_all(piece.as_bytes()).expect("send");
        s.flush().expect("flush");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

/// The worker's HTTP address, from its log line `HTTP listening addr=...`.
pub fn http_addr(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains("HTTP listening"))?
        .split("addr=")
        .nth(1)?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// The value of an unlabelled (or exactly labelled) sample in a Prometheus exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
