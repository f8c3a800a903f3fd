//! `streamlr run`: the worker on Kafka. One thread owns the state (engine + join store) and runs
//! the loop: fetch → timestamp merge → score / join / learn → produce; every `checkpoint.every`,
//! `checkpoint.every_updates` or `checkpoint.every_records`, on partition revoke and at shutdown
//! it takes a cut (flush the producer → checkpoint + store commit → commit offsets).
//!
//! **Consumers.** The events topic is consumed in the consumer group (`kafka.group_id`); the
//! labels topic follows it: whenever the group assigns events partition p, the worker assigns
//! labels partition p to a second, group-less consumer, at the offset committed in the same
//! group. Co-partitioned topics thus stay together by construction whatever assignor the group
//! uses, and each consumer's end-of-partition signal names its topic (the merge waits on it).
//!
//! **Offsets follow durable state.** Nothing is auto-committed. An offset is committed only
//! after the predictions up to it are acknowledged by the broker and the cut that includes it is
//! on disk; so after a crash the worker resumes from its last cut: predictions since then are
//! produced again (at-least-once) and labels since then are applied again to the model *of that
//! cut* (so the applied-update count equals the joined-label count: exactly-once with respect to
//! the model).
//!
//! **Assignment.** The worker remembers the next offset of every partition it has held (in each
//! checkpoint). When the group assigns partition p and the group's committed offsets are not
//! beyond what the worker remembers, p's join state in the local store continues where it was; if
//! another worker has advanced p in the meantime, the local state of p is stale: it is dropped
//! and p starts fresh at the committed offsets (its pending entries stay with the worker that
//! had them).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientContext;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::checkpoint::PartitionOffset;
use crate::config::Config;
use crate::engine::{Engine, LabelCount, LabelResult};
use crate::event::DecodeError;
use crate::inspect::Lineage;
use crate::kafka::{self, TopicError};
use crate::merge::{Merge, Next, Record, Side};
use crate::state::{StateDir, StateError};
use crate::store::DiskShard;
use crate::telemetry::{LoopActivity, Status, Telemetry};

/// A stop request, shared between the signal handler (or a test) and the worker.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the worker to stop gracefully.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The topics are missing or not co-partitioned.
    #[error(transparent)]
    Topics(#[from] TopicError),
    /// A Kafka client could not be created or used.
    #[error("kafka: {what}: {source}")]
    Kafka {
        /// What was being done.
        what: &'static str,
        /// Cause.
        source: KafkaError,
    },
    /// The broker refused a record for good (it was not delivered; nothing after it is
    /// committed, so it is produced again on restart).
    #[error("kafka: {count} record(s) could not be delivered, last error: {last}")]
    Delivery {
        /// Failed deliveries.
        count: u64,
        /// The last error.
        last: String,
    },
    /// The drain did not finish within `checkpoint.drain_timeout`.
    #[error(
        "shutdown: predictions not acknowledged within checkpoint.drain_timeout ({0:?}); the previous cut stays valid"
    )]
    DrainTimeout(Duration),
    /// librdkafka did not give a partition's own queue (the topic or partition is unknown to it).
    #[error("no queue of its own for partition {0} (unknown topic or partition)")]
    PartitionQueue(i32),
    /// A thread of the worker could not be started.
    #[error("cannot start the offset commit thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The input topic of a side.
fn topic_of(k: &crate::config::KafkaConfig, side: Side) -> &str {
    match side {
        Side::Event => &k.events_topic,
        Side::Label => &k.labels_topic,
    }
}

/// What the worker produces, by topic.
#[derive(Debug, Clone, Copy)]
enum Output {
    Predictions,
    DeadLetters,
    Drift,
}

fn output_topic(k: &crate::config::KafkaConfig, out: Output) -> &str {
    match out {
        Output::Predictions => &k.predictions_topic,
        Output::DeadLetters => &k.dead_letter_topic,
        Output::Drift => &k.drift_topic,
    }
}

/// Wraps a client error with what was being done.
fn kerr(what: &'static str) -> impl FnOnce(KafkaError) -> WorkerError {
    move |source| WorkerError::Kafka { what, source }
}

/// Sets a flag and wakes the loop when a librdkafka queue becomes non-empty.
#[derive(Debug, Default)]
struct Waker {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Waker {
    fn wake(&self) {
        if let Ok(mut f) = self.flag.lock() {
            *f = true;
            self.cv.notify_one();
        }
    }

    /// Waits until woken or `timeout`; clears the flag.
    fn wait(&self, timeout: Duration) {
        let Ok(mut f) = self.flag.lock() else { return };
        if !*f {
            f = match self.cv.wait_timeout(f, timeout) {
                Ok((f, _)) => f,
                Err(_) => return,
            };
        }
        *f = false;
    }
}

/// A rebalance, as the group delivered it; handled by the loop (which owns the state) right
/// after the poll that saw it. librdkafka waits for the loop's assign/unassign call.
#[derive(Debug)]
enum Rebalance {
    Assign(TopicPartitionList),
    Revoke(TopicPartitionList),
}

/// The last client error (connection refused, all brokers down...), for readiness.
#[derive(Debug, Default)]
struct BrokerHealth {
    last_error: Mutex<Option<(Instant, String)>>,
    /// The previous connection failure (see [`Self::connection_failed`]).
    last_fail: Mutex<Option<Instant>>,
    /// Per consumer (librdkafka client name): whether its last statistics showed no broker
    /// connection up. A consumer always has one up while it fetches; the error callback and
    /// the log can stay silent through an outage (librdkafka suppresses repeated failures).
    none_up: Mutex<BTreeMap<String, bool>>,
}

impl BrokerHealth {
    fn error(&self, e: String) {
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some((Instant::now(), e));
        }
    }

    /// A connection dropped or failed. One alone can be an idle connection being closed; a
    /// second within 15 s (the reconnect failed too) makes it an error.
    fn connection_failed(&self, e: String) {
        let now = Instant::now();
        let previous = self.last_fail.lock().ok().and_then(|mut l| l.replace(now));
        if previous.is_some_and(|t| now.duration_since(t) < Duration::from_secs(15)) {
            self.error(e);
        }
    }

    /// A consumer's statistics: which of its broker connections are up.
    fn stats(&self, stats: &rdkafka::Statistics) {
        let none_up = !stats.brokers.values().any(|b| b.state == "UP");
        if let Ok(mut m) = self.none_up.lock() {
            m.insert(stats.name.clone(), none_up);
        }
    }

    /// The error of the last 15 s, if any (librdkafka repeats them while the broker stays
    /// unreachable, at most every `reconnect.backoff.max.ms` = 10 s), or a consumer whose last
    /// statistics showed no connection up.
    fn recent(&self) -> Option<String> {
        let recent = self.last_error.lock().ok().and_then(|l| {
            l.as_ref()
                .filter(|(at, _)| at.elapsed() < Duration::from_secs(15))
                .map(|(_, e)| e.clone())
        });
        recent.or_else(|| {
            let m = self.none_up.lock().ok()?;
            m.iter()
                .find(|(_, none_up)| **none_up)
                .map(|(name, _)| format!("no broker connection up for consumer {name}"))
        })
    }
}

/// High watermarks per (topic, partition), from librdkafka's statistics (every
/// `statistics.interval.ms`, [`kafka::STATS_INTERVAL_MS`] unless configured): for consumer lag.
#[derive(Debug, Default)]
struct Watermarks(Mutex<BTreeMap<(String, i32), i64>>);

impl Watermarks {
    fn update(&self, stats: &rdkafka::Statistics) {
        let Ok(mut m) = self.0.lock() else {
            return;
        };
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.hi_offset >= 0 {
                    m.insert((topic.clone(), *p), part.hi_offset);
                }
            }
        }
    }

    fn high(&self, topic: &str, partition: i32) -> Option<i64> {
        let m = self.0.lock().ok()?;
        m.get(&(topic.to_string(), partition)).copied()
    }
}

/// The group consumer's context: queues rebalances for the loop.
#[derive(Debug)]
struct GroupContext {
    health: Arc<BrokerHealth>,
    watermarks: Arc<Watermarks>,
    pending: Mutex<VecDeque<Rebalance>>,
    /// Set once the final cut is written: rebalances are then acknowledged directly, so the
    /// consumer can leave the group on drop.
    closing: AtomicBool,
    waker: Arc<Waker>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason, &self.health);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.watermarks.update(&statistics);
        self.health.stats(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message, &self.health);
    }
}

/// librdkafka's log lines, to tracing as rdkafka does by default; `FAIL` lines (a broker
/// connection failed or dropped) also count for readiness (see
/// [`BrokerHealth::connection_failed`]): librdkafka logs them at once, while its error callback
/// may only come after several reconnect attempts.
fn client_log(
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
    health: &BrokerHealth,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    // librdkafka logs a dropped connection at info level, a refused one at error level.
    if fac == "FAIL" {
        health.connection_failed(format!("{fac} {message}"));
    }
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            error!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        L::Warning => warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
        L::Notice | L::Info => info!(target: "librdkafka", "librdkafka: {fac} {message}"),
        L::Debug => debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
    }
}

/// librdkafka's global errors: end-of-partition is news, not an error (the merge receives it
/// through the poll); the rest are transient (librdkafka retries) and logged as warnings.
fn client_error(error: KafkaError, reason: &str, health: &BrokerHealth) {
    let eof = matches!(
        error.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
    );
    if eof {
        debug!(%reason, "End of partition");
    } else {
        warn!(error = %error, %reason, "Kafka client error (retrying)");
        health.error(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        if self.closing.load(Ordering::SeqCst) {
            if let Err(e) = consumer.unassign() {
                warn!(error = %e, "Unassign while closing failed");
            }
            return;
        }
        let ev = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl.clone()),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl.clone()),
            other => {
                warn!(error = ?other, "Rebalance error; unassigning");
                Rebalance::Revoke(TopicPartitionList::new())
            }
        };
        if let Ok(mut p) = self.pending.lock() {
            p.push_back(ev);
        }
        self.waker.wake();
    }
}

/// The outcome of one offset commit job.
#[derive(Debug)]
enum CommitOutcome {
    /// The group stored these offsets.
    Stored(Vec<PartitionOffset>),
    /// The broker or librdkafka refused the commit.
    Failed(String),
    /// Not sent: a newer job covered it, or its partitions were revoked before it was sent.
    Skipped,
}

/// One commit to send: offsets, their metadata, and the assignment generation they belong to.
struct CommitJob {
    offsets: Vec<PartitionOffset>,
    tag: String,
    generation: u64,
}

/// Commits offsets on a thread of its own, so that the loop never waits on a commit: librdkafka
/// holds a commit request for up to `session.timeout.ms` while no group coordinator is known,
/// and until `socket.timeout.ms` when the network drops packets. A synchronous commit on this
/// thread is also the only way to learn a manual commit's outcome: librdkafka hands an
/// asynchronous one's result only to an `offset_commit_cb`, which rdkafka's event-based
/// consumer does not set.
///
/// Jobs queue while a commit is held; the thread then sends only the newest (newer offsets
/// cover older ones), and none queued before the partitions were revoked
/// ([`Self::revoked`]): those offsets could overwrite the next owner's.
struct Committer {
    jobs: Option<mpsc::Sender<CommitJob>>,
    reports: Arc<Mutex<VecDeque<CommitOutcome>>>,
    generation: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn start(group: Arc<BaseConsumer<GroupContext>>, waker: Arc<Waker>) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<CommitJob>();
        let reports = Arc::new(Mutex::new(VecDeque::new()));
        let generation = Arc::new(AtomicU64::new(0));
        let (out, current) = (reports.clone(), generation.clone());
        let report = move |o: CommitOutcome| {
            if let Ok(mut r) = out.lock() {
                r.push_back(o);
            }
        };
        let thread = std::thread::Builder::new()
            .name("offset-commit".into())
            .spawn(move || {
                while let Ok(mut job) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        report(CommitOutcome::Skipped);
                        job = newer;
                    }
                    if job.generation != current.load(Ordering::SeqCst) {
                        report(CommitOutcome::Skipped);
                        waker.wake();
                        continue;
                    }
                    let mut tpl = TopicPartitionList::new();
                    for o in &job.offsets {
                        let mut e = tpl.add_partition(&o.topic, o.partition);
                        let _ = e.set_offset(Offset::Offset(o.offset));
                        e.set_metadata(job.tag.as_str());
                    }
                    report(match group.commit(&tpl, CommitMode::Sync) {
                        Ok(()) => CommitOutcome::Stored(job.offsets),
                        Err(e) => CommitOutcome::Failed(e.to_string()),
                    });
                    waker.wake();
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            reports,
            generation,
            thread: Some(thread),
        })
    }

    /// Queues a commit of `offsets` with metadata `tag`; false if the thread is gone.
    fn send(&self, offsets: Vec<PartitionOffset>, tag: String) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        self.jobs.as_ref().is_some_and(|j| {
            j.send(CommitJob {
                offsets,
                tag,
                generation,
            })
            .is_ok()
        })
    }

    /// The partitions were revoked: jobs queued until now are not sent.
    fn revoked(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The outcomes that came back since the last call, oldest first (one per job).
    fn take(&self) -> Vec<CommitOutcome> {
        match self.reports.lock() {
            Ok(mut r) => r.drain(..).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Ends the thread: joined when `idle` (it holds the group consumer, whose close leaves the
    /// group), left behind when a commit still waits on the broker.
    fn close(&mut self, idle: bool) {
        self.jobs = None;
        if let Some(t) = self.thread.take()
            && idle
        {
            let _ = t.join();
        }
    }
}

/// The labels consumer's context (no group).
#[derive(Debug)]
struct PlainContext {
    health: Arc<BrokerHealth>,
    watermarks: Arc<Watermarks>,
}
impl ClientContext for PlainContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(error, reason, &self.health);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.watermarks.update(&statistics);
        self.health.stats(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message, &self.health);
    }
}
impl ConsumerContext for PlainContext {}

/// Counts deliveries the broker refused for good.
#[derive(Debug, Default)]
struct DeliveryContext {
    /// Delivery reports received, success or failure: progress of the producer queue.
    reports: AtomicU64,
    failed: AtomicU64,
    last: Mutex<String>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        if let Err((e, m)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            error!(error = %e, topic = m.topic(), "Record not delivered");
            if let Ok(mut l) = self.last.lock() {
                *l = e.to_string();
            }
        }
    }
}

/// A dead letter: a record that could not be used, with why.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    reason: &'static str,
    detail: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// The record as text, or base64 when it is not UTF-8 (see `payload_encoding`).
    payload: String,
    payload_encoding: &'static str,
    /// Payloads over [`DEAD_LETTER_PAYLOAD_MAX`] bytes are cut there.
    payload_truncated: bool,
}

/// Largest payload copied into a dead letter, in bytes.
pub const DEAD_LETTER_PAYLOAD_MAX: usize = 64 * 1024;
/// Largest key copied into a dead letter, in bytes.
pub const DEAD_LETTER_KEY_MAX: usize = 1024;

/// Base64 (RFC 4648, standard alphabet, padded).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How often the join's wall-clock rule runs.
const TICK: Duration = Duration::from_secs(1);
/// How often `/model` is refreshed (it scans every weight).
const MODEL_EVERY: Duration = Duration::from_secs(5);
/// How often a progress line is logged.
const PROGRESS: Duration = Duration::from_secs(10);
/// Records taken from one consumer per poll round (keeps rebalances and cuts responsive).
const POLL_BATCH: usize = 2_000;
/// No delivery report for this long while records wait in the producer: not ready.
const PRODUCER_STALLED_AFTER: Duration = Duration::from_secs(10);
/// How long a send waits for room in a full producer queue before publishing the status again.
const PUBLISH_WHILE_WAITING: Duration = Duration::from_millis(200);
/// Records processed per round before the loop polls again.
const PROCESS_BATCH: usize = 5_000;

/// A cut whose checkpoint is written and whose store commit runs on the commit thread.
#[derive(Debug)]
struct PendingCut {
    meta: crate::checkpoint::CheckpointMeta,
    /// The positions the cut covers: committed to the group once it is durable.
    offsets: Vec<PartitionOffset>,
    started: Instant,
    /// Seconds the loop stopped for it.
    paused: f64,
    model_version: u64,
    updates: u64,
}

/// The running worker.
struct Worker {
    cfg: Config,
    state: StateDir,
    engine: Engine<DiskShard>,
    group: Arc<BaseConsumer<GroupContext>>,
    labels: Arc<BaseConsumer<PlainContext>>,
    producer: BaseProducer<DeliveryContext>,
    waker: Arc<Waker>,
    merge: Merge,
    /// Partitions (events and labels p alike) currently assigned.
    assigned: BTreeSet<i32>,
    /// Each assigned partition's own librdkafka queue (split off the consumer's queue before it
    /// is assigned). The loop takes from a queue only while the merge has room for that
    /// partition; librdkafka stops fetching a partition whose queue holds
    /// `queued.max.messages.kbytes` or `queued.min.messages`, so flow control needs no
    /// pause/resume (which discards what was prefetched and fetches it again).
    event_queues: BTreeMap<i32, PartitionQueue<GroupContext>>,
    label_queues: BTreeMap<i32, PartitionQueue<PlainContext>>,
    /// Next offset of every partition this worker has held; -1: assigned, nothing read yet.
    known: BTreeMap<(Side, i32), i64>,
    /// First label offset read per partition since the last cut.
    label_from: BTreeMap<i32, i64>,
    /// Records processed since the last cut.
    dirty: bool,
    last_cut: Instant,
    updates_at_cut: u64,
    /// Records read and processed (merged out, not just buffered) since the last cut started.
    records_since_cut: u64,
    reset_latest: bool,
    progress: Progress,
    telemetry: Arc<Telemetry>,
    health: Arc<BrokerHealth>,
    predictions: u64,
    dead_letters: Vec<u64>,
    last_drift: Option<crate::drift::WindowReport>,
    cut_at: Option<Instant>,
    cut_seconds: f64,
    /// How long the last cut stopped the loop (flush, checkpoint file, freezing the store's
    /// changes), seconds.
    cut_pause_seconds: f64,
    /// The offsets the last durable checkpoint covers (where a restart resumes).
    durable_offsets: Vec<PartitionOffset>,
    /// A cut whose store commit runs on the commit thread.
    pending_cut: Option<PendingCut>,
    committer: Committer,
    /// When the drain after a stop request must end.
    drain_deadline: Option<Instant>,
    /// Offset commits sent whose outcome has not come back yet.
    commits_in_flight: usize,
    /// Offset commit jobs by outcome: stored, failed, skipped.
    commits: [u64; 3],
    stop: Stop,
    /// Drift flags raised by this process.
    drift_alerts: crate::telemetry::DriftAlerts,
    watermarks: Arc<Watermarks>,
    /// The last checkpoint, for `/model`.
    lineage: Option<Lineage>,
    /// When `/model` was last published.
    model_at: Option<Instant>,
    /// Delivery reports counted at the last publication, and when the producer was last seen
    /// making progress (a report arrived, or nothing was waiting).
    delivered: (u64, Instant),
    /// Where the loop's time goes.
    clock: LoopClock,
    /// What one poll took from the consumers, kept from poll to poll: a new vector each time
    /// (up to `POLL_BATCH` records of ~100 bytes) came from freshly faulted pages.
    polled: Vec<Consumed>,
    /// The JSON of the prediction being produced (one buffer, reused from event to event).
    json: Vec<u8>,
}

/// Where the loop's time goes: each lap is charged to one activity, so together they cover the
/// loop's whole life.
#[derive(Debug)]
struct LoopClock {
    mark: Instant,
    seconds: [Duration; LoopActivity::ALL.len()],
}

impl LoopClock {
    fn new() -> Self {
        Self {
            mark: Instant::now(),
            seconds: Default::default(),
        }
    }

    /// Charges the time since the last lap to `activity`.
    fn lap(&mut self, activity: LoopActivity) {
        let now = Instant::now();
        self.seconds[activity as usize] += now - self.mark;
        self.mark = now;
    }

    fn seconds(&self) -> [f64; LoopActivity::ALL.len()] {
        self.seconds.map(|d| d.as_secs_f64())
    }
}

#[derive(Debug)]
struct Progress {
    at: Instant,
    scored: u64,
}

/// Runs the worker until `stop` is requested (then drains and exits `Ok`) or a fatal error,
/// publishing its status to `telemetry` about once a second.
pub fn run(cfg: Config, stop: Stop, telemetry: Arc<Telemetry>) -> Result<(), WorkerError> {
    telemetry.set_admin_token(&cfg.http.admin_token);
    let (state, restored) = StateDir::open(&cfg)?;
    for e in &restored.refused {
        warn!(error = %e, "Checkpoint refused; using an older one");
    }
    for v in &restored.orphans {
        warn!(
            version = v,
            "Checkpoint removed: written by a run that crashed before its store commit"
        );
    }
    if let Some(seq) = restored.store_rolled_back_to {
        warn!(cut = seq, "Join store rolled back to the checkpoint's cut");
    }
    let opener = state.store().clone();
    let mut engine = Engine::new(cfg.clone(), move |p| opener.shard_or_poisoned(p as u32));
    engine.collect_label_delays(true);
    let mut known = BTreeMap::new();
    let lineage = restored.meta.as_ref().map(lineage_of);
    let durable_offsets = restored
        .meta
        .as_ref()
        .map(|m| m.offsets.clone())
        .unwrap_or_default();
    match (restored.meta, restored.learner) {
        (Some(meta), Some(learner)) => {
            info!(
                version = meta.version,
                model_version = learner.version,
                updates = learner.counters.updates,
                "Resuming from checkpoint"
            );
            engine.restore_learner(learner);
            for o in meta.offsets {
                let side = if o.topic == cfg.kafka.events_topic {
                    Side::Event
                } else if o.topic == cfg.kafka.labels_topic {
                    Side::Label
                } else {
                    continue;
                };
                known.insert((side, o.partition), o.offset);
            }
        }
        _ => info!(dir = %cfg.checkpoint.dir, "New state directory"),
    }

    let k = &cfg.kafka;
    let waker = Arc::new(Waker::default());
    let health = Arc::new(BrokerHealth::default());
    let watermarks = Arc::new(Watermarks::default());
    let consumer_props = kafka::client_props(k, kafka::Role::Consumer);
    let reset_latest = matches!(
        consumer_props.get("auto.offset.reset").map(String::as_str),
        Some("latest" | "largest" | "end")
    );
    let base = |extra: &[(&str, &str)]| {
        let mut c = kafka::client_config(&k.brokers, &consumer_props);
        for (key, v) in extra {
            c.set(*key, *v);
        }
        c
    };
    let mut group: BaseConsumer<GroupContext> = base(&[
        ("group.id", k.group_id.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "true"),
        ("partition.assignment.strategy", "range"),
    ])
    .create_with_context(GroupContext {
        health: health.clone(),
        watermarks: watermarks.clone(),
        pending: Mutex::new(VecDeque::new()),
        closing: AtomicBool::new(false),
        waker: waker.clone(),
    })
    .map_err(kerr("creating the events consumer"))?;
    // Same group id (librdkafka needs one to assign), but it never subscribes, so it never
    // joins the group: it only reads the partitions it is given.
    let mut labels: BaseConsumer<PlainContext> = base(&[
        ("group.id", k.group_id.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "true"),
    ])
    .create_with_context(PlainContext {
        health: health.clone(),
        watermarks: watermarks.clone(),
    })
    .map_err(kerr("creating the labels consumer"))?;
    let w = waker.clone();
    group.set_nonempty_callback(move || w.wake());
    let w = waker.clone();
    labels.set_nonempty_callback(move || w.wake());
    let (group, labels) = (Arc::new(group), Arc::new(labels));
    let producer: BaseProducer<DeliveryContext> =
        kafka::client_config(&k.brokers, &kafka::client_props(k, kafka::Role::Producer))
            .create_with_context(DeliveryContext::default())
            .map_err(kerr("creating the producer"))?;

    let partitions = wait_for_topics(&cfg, &group, &stop)?;
    let Some(partitions) = partitions else {
        return Ok(());
    };
    info!(
        partitions,
        events = %k.events_topic,
        labels = %k.labels_topic,
        group = %k.group_id,
        "Topics co-partitioned; joining the group"
    );
    group
        .subscribe(&[k.events_topic.as_str()])
        .map_err(kerr("subscribing"))?;

    let committer = Committer::start(group.clone(), waker.clone()).map_err(WorkerError::Thread)?;
    let mut worker = Worker {
        merge: Merge::new(cfg.kafka.merge_idle.as_millis_i64()),
        updates_at_cut: engine.counters().updates,
        records_since_cut: 0,
        progress: Progress {
            at: Instant::now(),
            scored: engine.counters().events_scored,
        },
        cfg,
        state,
        engine,
        group,
        labels,
        producer,
        waker,
        assigned: BTreeSet::new(),
        event_queues: BTreeMap::new(),
        label_queues: BTreeMap::new(),
        known,
        label_from: BTreeMap::new(),
        dirty: false,
        last_cut: Instant::now(),
        reset_latest,
        telemetry,
        health,
        predictions: 0,
        dead_letters: vec![0; crate::event::Reason::ALL.len()],
        last_drift: None,
        cut_at: None,
        cut_seconds: 0.0,
        cut_pause_seconds: 0.0,
        durable_offsets,
        pending_cut: None,
        committer,
        drain_deadline: None,
        commits_in_flight: 0,
        commits: [0; 3],
        stop: stop.clone(),
        drift_alerts: Default::default(),
        watermarks,
        lineage,
        model_at: None,
        delivered: (0, Instant::now()),
        clock: LoopClock::new(),
        polled: Vec::new(),
        json: Vec::new(),
    };
    worker.publish();
    let result = worker.run_loop(&stop);
    worker.serve_commits();
    worker.committer.close(worker.commits_in_flight == 0);
    worker.group.context().closing.store(true, Ordering::SeqCst);
    // A rebalance interrupted by an error still waits for our (un)assign call, and closing the
    // consumer would wait for it forever: give everything up explicitly.
    let _ = worker.group.unassign();
    let _ = worker.labels.unassign();
    let deadline = worker
        .drain_deadline
        .unwrap_or_else(|| Instant::now() + worker.cfg.checkpoint.drain_timeout.0);
    let Worker {
        group,
        labels,
        event_queues,
        label_queues,
        producer,
        ..
    } = worker;
    close_clients(
        (group, labels, event_queues, label_queues, producer),
        deadline,
    );
    result
}

/// Drops the Kafka clients on a thread of their own and waits for them until `deadline` (at
/// least a second): closing the group consumer sends LeaveGroup and waits for the answer, which a
/// network that drops packets never gives. Past the deadline the process goes on without it,
/// and the group reassigns the partitions after `session.timeout.ms`.
fn close_clients<T: Send + 'static>(clients: T, deadline: Instant) {
    let (done, closed) = mpsc::channel();
    let closing = std::thread::Builder::new()
        .name("close-clients".into())
        .spawn(move || {
            drop(clients);
            let _ = done.send(());
        });
    if closing.is_err() {
        warn!("Cannot start a thread to close the Kafka clients; leaving without closing them");
        return;
    }
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    if closed.recv_timeout(wait).is_err() {
        warn!(
            waited_ms = wait.as_millis() as u64,
            "Leaving the group did not finish in time; exiting without it (the group reassigns \
             the partitions after session.timeout.ms)"
        );
    }
}

/// Waits until the topics exist (retrying while the broker is unreachable); `None` if a stop
/// was requested meanwhile.
fn wait_for_topics(
    cfg: &Config,
    group: &BaseConsumer<GroupContext>,
    stop: &Stop,
) -> Result<Option<usize>, WorkerError> {
    let k = &cfg.kafka;
    let timeout = k.request_timeout.0;
    loop {
        let checked =
            kafka::check_co_partitioned(group.client(), &k.events_topic, &k.labels_topic, timeout)
                .and_then(|n| {
                    for out in [&k.predictions_topic, &k.dead_letter_topic] {
                        kafka::partition_count(group.client(), out, timeout)?;
                    }
                    Ok(n)
                });
        match checked {
            Ok(n) => return Ok(Some(n)),
            Err(TopicError::Metadata { topic, source }) => {
                warn!(%topic, error = %source, "Broker not reachable; retrying");
            }
            Err(e) => return Err(e.into()),
        }
        for _ in 0..10 {
            if stop.requested() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Worker {
    fn run_loop(&mut self, stop: &Stop) -> Result<(), WorkerError> {
        let mut last_tick = Instant::now();
        while !stop.requested() {
            self.clock.lap(LoopActivity::Other);
            let mut progressed = self.poll_consumers()?;
            self.clock.lap(LoopActivity::Consume);
            let now = now_ms();
            let mut wait_until = None;
            for _ in 0..PROCESS_BATCH {
                match self.merge.pop(now) {
                    Next::Record(r) => {
                        self.process(r)?;
                        progressed = true;
                    }
                    Next::WaitUntil(t) => {
                        wait_until = Some(t);
                        break;
                    }
                    Next::Empty => break,
                }
            }
            self.clock.lap(LoopActivity::Process);
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                let before = self.engine.counters().labels.clone();
                self.engine.tick(now_ms());
                // The wall-clock rule expired something: the state changed.
                self.dirty |= self.engine.counters().labels != before;
                self.publish();
            }
            self.producer.poll(Duration::ZERO);
            self.clock.lap(LoopActivity::Other);
            if self.pending_cut.is_some() && !self.state.cut_running() {
                self.complete_cut()?;
            }
            let updates = self.engine.counters().updates;
            let cut_due = self.dirty
                && (self.last_cut.elapsed() >= self.cfg.checkpoint.every.0
                    || updates - self.updates_at_cut >= self.cfg.checkpoint.every_updates
                    || self.records_since_cut >= self.cfg.checkpoint.every_records);
            if cut_due {
                self.start_cut(None)?;
            }
            self.clock.lap(LoopActivity::Checkpoint);
            if !cut_due
                && !self.dirty
                && self.pending_cut.is_none()
                && self.commits_in_flight == 0
                && self.last_cut.elapsed() >= self.cfg.checkpoint.every.0
            {
                // Idle: commit the last cut's offsets again, so the group's offsets (the labels
                // topic's above all, which the group does not subscribe) do not expire after
                // the broker's offsets.retention.minutes.
                self.last_cut = Instant::now();
                let positions = self.positions();
                self.commit_offsets(&positions);
            }
            self.log_progress();
            if !progressed {
                let wait = wait_until.map_or(Duration::from_millis(100), |t| {
                    Duration::from_millis((t - now_ms()).clamp(1, 100) as u64)
                });
                self.clock.lap(LoopActivity::Other);
                self.waker.wait(wait);
                self.clock.lap(LoopActivity::Wait);
            }
        }
        info!("Stop requested: draining");
        let deadline = Instant::now() + self.cfg.checkpoint.drain_timeout.0;
        self.drain_deadline = Some(deadline);
        if self.dirty {
            self.cut(Some(deadline))?;
        } else if self.pending_cut.is_some() {
            // The last cut covers everything: it commits its offsets once durable.
            self.complete_cut()?;
        } else {
            // The last cut covers everything: just make sure its offsets are committed.
            let positions = self.positions();
            self.commit_offsets(&positions);
        }
        self.await_commits(deadline);
        info!(
            version = self.state.version(),
            "Final checkpoint written; leaving the group"
        );
        Ok(())
    }

    /// Takes what the consumers have (up to a batch each), handles rebalances. Returns whether
    /// anything happened.
    fn poll_consumers(&mut self) -> Result<bool, WorkerError> {
        let mut polled = std::mem::take(&mut self.polled);
        take_ready(
            || self.group.poll(Duration::ZERO),
            Side::Event,
            POLL_BATCH,
            &mut polled,
        );
        let mut progressed = !polled.is_empty();
        for c in polled.drain(..) {
            self.accept(c);
        }
        self.serve_commits();
        let pending: Vec<Rebalance> = match self.group.context().pending.lock() {
            Ok(mut p) => p.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for ev in pending {
            progressed = true;
            match ev {
                Rebalance::Revoke(tpl) => self.revoke(&tpl)?,
                Rebalance::Assign(tpl) => self.assign(&tpl)?,
            }
        }
        let mut taken = polled;
        take_ready(
            || self.labels.poll(Duration::ZERO),
            Side::Label,
            POLL_BATCH,
            &mut taken,
        );
        // Each partition's own queue, as far as the merge has room for it.
        for (&p, q) in &self.event_queues {
            let room = self.room(Side::Event, p);
            take_ready(|| q.poll(Duration::ZERO), Side::Event, room, &mut taken);
        }
        for (&p, q) in &self.label_queues {
            let room = self.room(Side::Label, p);
            take_ready(|| q.poll(Duration::ZERO), Side::Label, room, &mut taken);
        }
        progressed |= !taken.is_empty();
        for c in taken.drain(..) {
            self.accept(c);
        }
        self.polled = taken;
        Ok(progressed)
    }

    /// How many more records the merge takes from a partition's queue now.
    fn room(&self, side: Side, partition: i32) -> usize {
        self.buffer_cap()
            .saturating_sub(self.merge.buffered(side, partition))
            .min(POLL_BATCH)
    }

    /// Routes what a consumer returned into the merge.
    fn accept(&mut self, c: Consumed) {
        match c {
            Consumed::Record(rec) => {
                self.merge.push(rec);
            }
            Consumed::End(side, p) => self.merge.at_end(side, p),
            Consumed::Error(side, e) => {
                warn!(topic = ?side, error = %e, "Consumer error (retrying)");
            }
        }
    }

    fn buffer_cap(&self) -> usize {
        self.cfg.kafka.buffer_records
    }

    fn topic(&self, side: Side) -> &str {
        topic_of(&self.cfg.kafka, side)
    }

    /// Scores an event or learns from a label, and produces what it yields.
    fn process(&mut self, r: Record) -> Result<(), WorkerError> {
        let payload = r.payload.as_deref().unwrap_or(&[]);
        let started = Instant::now();
        match r.side {
            Side::Event => match self.engine.on_event(payload, r.partition, r.ts, now_ms()) {
                Ok(pred) => {
                    let mut json = std::mem::take(&mut self.json);
                    json.clear();
                    if serde_json::to_writer(&mut json, &pred).is_err() {
                        json.clear();
                    }
                    self.send(Output::Predictions, pred.id.as_bytes(), &json)?;
                    self.json = json;
                    self.predictions += 1;
                    self.telemetry.record_score(
                        started.elapsed(),
                        pred.scored_at.saturating_sub(pred.event_ts),
                        pred.score,
                    );
                }
                Err(e) => self.dead_letter(&r, &e)?,
            },
            Side::Label => {
                self.label_from.entry(r.partition).or_insert(r.offset);
                let record_ts = (r.ts > 0).then_some(r.ts);
                match self.engine.on_label_at(payload, r.partition, record_ts) {
                    LabelResult::Invalid(e) => self.dead_letter(&r, &e)?,
                    LabelResult::Handled(Some(LabelCount::Joined)) | LabelResult::Handled(_) => {}
                }
            }
        }
        self.known.insert((r.side, r.partition), r.offset + 1);
        self.dirty = true;
        self.records_since_cut += 1;
        for report in self.engine.take_drift_reports() {
            self.drift_report(&report)?;
        }
        for t in self.engine.take_guard_transitions() {
            log_guard(&t, self.engine.version());
        }
        Ok(())
    }

    /// Logs a drift window's flagged columns and the action taken, and produces the report to
    /// `kafka.drift_topic` when one is set.
    fn drift_report(&mut self, r: &crate::drift::WindowReport) -> Result<(), WorkerError> {
        let model_version = self.engine.version();
        for (c, level) in self.drift_alerts.count(r) {
            let (psi, ks, ks_p) = (c.psi, c.ks.unwrap_or(f64::NAN), c.ks_p.unwrap_or(f64::NAN));
            if level == "alert" {
                warn!(window = r.window, column = %c.column, score = c.score, psi, ks, ks_p, level, model_version, "Drift detected");
            } else {
                info!(window = r.window, column = %c.column, score = c.score, psi, ks, ks_p, level, model_version, "Drift detected");
            }
        }
        if r.action != "none" {
            warn!(window = r.window, action = r.action, "Drift action");
        }
        self.last_drift = Some(r.clone());
        if !self.cfg.kafka.drift_topic.is_empty() && r.flagged().next().is_some() {
            let bytes = serde_json::to_vec(r).unwrap_or_default();
            self.send(Output::Drift, r.window.to_string().as_bytes(), &bytes)?;
        }
        Ok(())
    }

    fn dead_letter(&mut self, r: &Record, e: &DecodeError) -> Result<(), WorkerError> {
        let payload = r.payload.as_deref().unwrap_or(&[]);
        let truncated = payload.len() > DEAD_LETTER_PAYLOAD_MAX;
        let cut = &payload[..payload.len().min(DEAD_LETTER_PAYLOAD_MAX)];
        let (payload, payload_encoding) = match std::str::from_utf8(cut) {
            Ok(s) => (s.to_string(), "utf8"),
            Err(_) => (base64(cut), "base64"),
        };
        let dl = DeadLetter {
            reason: e.reason.as_str(),
            detail: &e.detail,
            topic: self.topic(r.side),
            partition: r.partition,
            offset: r.offset,
            payload,
            payload_encoding,
            payload_truncated: truncated,
        };
        let bytes = serde_json::to_vec(&dl).unwrap_or_default();
        debug!(
            topic = dl.topic,
            partition = r.partition,
            offset = r.offset,
            reason = dl.reason,
            "Dead letter"
        );
        // The original key, cut like the payload so a huge key cannot make the dead letter
        // itself undeliverable.
        let key = r.key.as_deref().unwrap_or_default();
        let key = &key[..key.len().min(DEAD_LETTER_KEY_MAX)];
        self.send(Output::DeadLetters, key, &bytes)?;
        if let Some(i) = crate::event::Reason::ALL
            .iter()
            .position(|x| *x == e.reason)
        {
            self.dead_letters[i] += 1;
        }
        Ok(())
    }

    /// Produces one record. While the producer queue is full (the broker is slow or a topic
    /// unavailable) it waits, publishing the status meanwhile (so `/readyz` and
    /// `streamlr_producer_unacknowledged` show the stall), but not beyond `drain_timeout` after
    /// a stop request.
    fn send(&mut self, out: Output, key: &[u8], payload: &[u8]) -> Result<(), WorkerError> {
        let drain = self.cfg.checkpoint.drain_timeout.0;
        let mut stop_seen: Option<Instant> = None;
        loop {
            let topic = output_topic(&self.cfg.kafka, out);
            // Timed from the first look at a full queue, not read at every send.
            let slice = std::cell::OnceCell::new();
            let sent = kafka::send_waiting(&self.producer, topic, key, payload, None, || {
                slice.get_or_init(Instant::now).elapsed() >= PUBLISH_WHILE_WAITING
            });
            match sent {
                Ok(()) => return Ok(()),
                Err(KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)) => {
                    if self.stop.requested()
                        && stop_seen.get_or_insert_with(Instant::now).elapsed() >= drain
                    {
                        return Err(WorkerError::DrainTimeout(drain));
                    }
                    debug!(topic, "Producer queue full: waiting for the broker");
                    self.publish();
                }
                Err(source) => {
                    return Err(WorkerError::Kafka {
                        what: "producing",
                        source,
                    });
                }
            }
        }
    }

    /// Takes a cut and waits for it: predictions acknowledged → checkpoint + store commit →
    /// offsets committed. `deadline` bounds the flush at shutdown.
    fn cut(&mut self, deadline: Option<Instant>) -> Result<(), WorkerError> {
        self.start_cut(deadline)?;
        self.complete_cut()
    }

    /// Starts a cut: waits until the broker has acknowledged every prediction, writes the
    /// checkpoint and hands the join store's commit to the commit thread, then returns so the
    /// loop goes on while the commit is written and synced. [`Self::complete_cut`] commits the
    /// cut's offsets once it is durable. A cut still in flight is completed first.
    fn start_cut(&mut self, mut deadline: Option<Instant>) -> Result<(), WorkerError> {
        self.complete_cut()?;
        let started = Instant::now();
        loop {
            // `kafka::flush` fails only by timing out with records not yet acknowledged.
            match kafka::flush(&self.producer, Duration::from_millis(200)) {
                Ok(()) => break,
                Err(_) => {
                    // A stop request during any cut bounds it by the drain timeout.
                    if deadline.is_none() && self.stop.requested() {
                        deadline = Some(Instant::now() + self.cfg.checkpoint.drain_timeout.0);
                    }
                    if let Some(d) = deadline
                        && Instant::now() >= d
                    {
                        return Err(WorkerError::DrainTimeout(
                            self.cfg.checkpoint.drain_timeout.0,
                        ));
                    }
                    debug!("Waiting for the broker to acknowledge predictions");
                    self.publish();
                }
            }
        }
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::SeqCst);
        if failed > 0 {
            let last = ctx.last.lock().map(|l| l.clone()).unwrap_or_default();
            return Err(WorkerError::Delivery {
                count: failed,
                last,
            });
        }
        let offsets = self.positions();
        let ranges: Vec<(i32, i64, i64)> = self
            .label_from
            .iter()
            .map(|(p, from)| {
                let to = self.known.get(&(Side::Label, *p)).copied().unwrap_or(*from);
                (*p, *from, to)
            })
            .collect();
        let meta = self
            .state
            .begin_cut(&mut self.engine, offsets.clone(), ranges)?;
        self.label_from.clear();
        self.dirty = false;
        self.last_cut = Instant::now();
        self.updates_at_cut = self.engine.counters().updates;
        self.records_since_cut = 0;
        self.pending_cut = Some(PendingCut {
            meta,
            offsets,
            started,
            paused: started.elapsed().as_secs_f64(),
            model_version: self.engine.version(),
            updates: self.updates_at_cut,
        });
        Ok(())
    }

    /// Waits for the cut in flight (if any) to be durable, then commits its offsets.
    fn complete_cut(&mut self) -> Result<(), WorkerError> {
        let Some(cut) = self.pending_cut.take() else {
            return Ok(());
        };
        self.state.finish_cut(&mut self.engine)?;
        self.lineage = Some(lineage_of(&cut.meta));
        self.cut_at = Some(Instant::now());
        self.cut_seconds = cut.started.elapsed().as_secs_f64();
        self.cut_pause_seconds = cut.paused;
        info!(
            version = cut.meta.version,
            model_version = cut.model_version,
            updates = cut.updates,
            loop_paused_ms = (cut.paused * 1000.0).round() as u64,
            "Checkpoint written"
        );
        self.commit_offsets(&cut.offsets);
        self.durable_offsets = cut.offsets;
        // What is durable shows at once, not at the next tick.
        self.publish();
        Ok(())
    }

    /// Where every partition this worker has held stands (next offset to read).
    fn positions(&self) -> Vec<PartitionOffset> {
        self.known
            .iter()
            .map(|((side, p), o)| PartitionOffset {
                topic: self.topic(*side).to_string(),
                partition: *p,
                offset: *o,
            })
            .collect()
    }

    /// Commits `positions` (a cut's, once durable) of the partitions still assigned (both
    /// topics, in the group), on the commit thread: its outcome comes back through
    /// [`Self::serve_commits`]. A failure is logged and retried at the next cut: the
    /// checkpoint, not the commit, is the truth.
    fn commit_offsets(&mut self, positions: &[PartitionOffset]) {
        let offsets: Vec<PartitionOffset> = positions
            .iter()
            .filter(|o| self.assigned.contains(&o.partition) && o.offset >= 0)
            .cloned()
            .collect();
        if offsets.is_empty() {
            return;
        }
        let tag = self.commit_tag();
        if self.committer.send(offsets, tag) {
            self.commits_in_flight += 1;
        } else {
            self.commits[1] += 1;
            warn!("Offset commit thread gone; the offsets are not committed");
        }
    }

    /// Takes the outcomes of the offset commits that came back: a stored commit is recorded
    /// (file `COMMITTED`), a failed one logged (the next cut commits again).
    fn serve_commits(&mut self) {
        for r in self.committer.take() {
            self.commits_in_flight = self.commits_in_flight.saturating_sub(1);
            match r {
                CommitOutcome::Stored(offsets) => {
                    self.commits[0] += 1;
                    if let Err(e) = self.state.record_commit(offsets) {
                        warn!(error = %e, "Cannot record the committed offsets");
                    }
                }
                CommitOutcome::Failed(e) => {
                    self.commits[1] += 1;
                    warn!(error = %e, "Offset commit failed; the next checkpoint retries it");
                }
                CommitOutcome::Skipped => self.commits[2] += 1,
            }
        }
    }

    /// Waits until every offset commit sent has come back, or `deadline` passes (a stop
    /// request meanwhile bounds the wait by the drain timeout).
    fn await_commits(&mut self, mut deadline: Instant) {
        let mut stop_seen = false;
        let mut published = Instant::now();
        loop {
            if published.elapsed() >= TICK {
                published = Instant::now();
                self.publish();
            }
            self.serve_commits();
            if self.commits_in_flight == 0 {
                return;
            }
            if !stop_seen && self.stop.requested() {
                stop_seen = true;
                deadline = deadline.min(Instant::now() + self.cfg.checkpoint.drain_timeout.0);
            }
            if Instant::now() >= deadline {
                warn!(
                    in_flight = self.commits_in_flight,
                    "Offset commit not confirmed in time; going on (if it never lands, a \
                     partition's next owner starts at the previous commit and scores the events \
                     since then again)"
                );
                return;
            }
            self.waker.wait(Duration::from_millis(20));
        }
    }

    /// The metadata of this worker's offset commits: `streamlr:<state directory instance>`.
    fn commit_tag(&self) -> String {
        format!("streamlr:{}", self.state.instance())
    }

    /// Partitions are taken away: cut and commit first, then let go.
    fn revoke(&mut self, tpl: &TopicPartitionList) -> Result<(), WorkerError> {
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        info!(
            partitions = ?parts,
            model_version = self.engine.version(),
            cut_in_flight = self.pending_cut.is_some(),
            "Partitions revoked: checkpoint and commit first"
        );
        // Shards are about to go: a cut in flight lands first (every branch below).
        if self.group.assignment_lost() {
            // The group already gave these partitions to someone else (session timed out): a
            // commit would fail. The cuts still make our state durable for a later return.
            warn!(partitions = ?parts, "Assignment lost: checkpoint without commit");
            let assigned = std::mem::take(&mut self.assigned);
            let r = self
                .complete_cut()
                .and_then(|()| if self.dirty { self.cut(None) } else { Ok(()) });
            self.assigned = assigned;
            r?;
        } else {
            if self.dirty || !self.assigned.is_empty() {
                self.cut(None)?;
            } else {
                self.complete_cut()?;
            }
            // The next owner starts at the committed offsets: they must be stored first.
            self.await_commits(Instant::now() + self.cfg.kafka.request_timeout.0);
        }
        // Commits still queued carry offsets of partitions about to be someone else's.
        self.committer.revoked();
        for p in std::mem::take(&mut self.assigned) {
            self.engine.remove_shard(p);
            for side in [Side::Event, Side::Label] {
                self.merge.remove(side, p);
            }
            self.event_queues.remove(&p);
            self.label_queues.remove(&p);
        }
        self.group.unassign().map_err(kerr("unassigning"))?;
        self.labels.unassign().map_err(kerr("unassigning labels"))?;
        Ok(())
    }

    /// Partitions are given: continue their local state if nobody else advanced them, else
    /// start them fresh at the group's committed offsets.
    fn assign(&mut self, tpl: &TopicPartitionList) -> Result<(), WorkerError> {
        // Opening and dropping shards writes to the store: not while a commit is in flight.
        self.complete_cut()?;
        let parts: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let mut query = TopicPartitionList::new();
        for p in &parts {
            query.add_partition(&self.cfg.kafka.events_topic, *p);
            query.add_partition(&self.cfg.kafka.labels_topic, *p);
        }
        let committed = self
            .group
            .committed_offsets(query, self.cfg.kafka.request_timeout.0)
            .map_err(kerr("reading committed offsets"))?;
        let tag = self.commit_tag();
        // The committed offset of a partition, and whether this worker committed it.
        let kafka = &self.cfg.kafka;
        let committed_of = |side: Side, p: i32| -> (Option<i64>, bool) {
            let topic = topic_of(kafka, side);
            match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => (Some(o), self.state.committed_by_us(topic, p, o)),
                _ => (None, false),
            }
        };
        let mut events = TopicPartitionList::new();
        let mut labels = TopicPartitionList::new();
        let now = now_ms();
        for p in &parts {
            let p = *p;
            // Continuous: nobody else has committed this partition beyond what this worker's
            // state covers. Its own commits may be ahead of its state (the newest checkpoint
            // was refused and an older one restored): the state, not the commit, is the truth.
            let continuous = [Side::Event, Side::Label].iter().all(|s| {
                match (self.known.get(&(*s, p)), committed_of(*s, p)) {
                    (None, _) => false,
                    (Some(_), (Some(_), true)) => true,
                    (Some(o), (c, false)) if *o < 0 => c.is_none(),
                    (Some(o), (c, _)) => c.is_none_or(|c| c <= *o),
                }
            });
            let store = self.state.store().clone();
            if continuous {
                let (backend, st) = store.shard(p as u32).map_err(StateError::from)?;
                self.engine.add_shard(p, backend, st);
            } else {
                if self.known.contains_key(&(Side::Event, p))
                    || self.known.contains_key(&(Side::Label, p))
                {
                    let by = committed
                        .find_partition(&self.cfg.kafka.events_topic, p)
                        .map(|e| e.metadata().to_string())
                        .unwrap_or_default();
                    warn!(
                        partition = p,
                        committed_by = %by,
                        ours = %tag,
                        "Partition advanced by another worker since this one held it: its local join state is dropped"
                    );
                }
                store.drop_shard(p as u32).map_err(StateError::from)?;
                let (backend, _) = store.shard(p as u32).map_err(StateError::from)?;
                self.engine.add_shard(p, backend, None);
                for s in [Side::Event, Side::Label] {
                    self.known
                        .insert((s, p), committed_of(s, p).0.unwrap_or(-1));
                }
            }
            for s in [Side::Event, Side::Label] {
                let topic = self.topic(s).to_string();
                let start = match self.known.get(&(s, p)).copied().unwrap_or(-1) {
                    o if o >= 0 => Offset::Offset(o),
                    _ => {
                        // Nothing read or committed yet: resolve the reset policy to an
                        // absolute offset now and remember it, so the next cut commits it.
                        // Left logical, a crash before the first cut would resolve `latest`
                        // again, past the records that came in meanwhile.
                        let timeout = self.cfg.kafka.request_timeout.0;
                        match self.group.fetch_watermarks(&topic, p, timeout) {
                            Ok((low, high)) => {
                                let o = if self.reset_latest { high } else { low };
                                self.known.insert((s, p), o);
                                self.dirty = true;
                                Offset::Offset(o)
                            }
                            Err(e) => {
                                warn!(%topic, partition = p, error = %e, "Cannot resolve the start offset; using the reset policy");
                                if self.reset_latest {
                                    Offset::End
                                } else {
                                    Offset::Beginning
                                }
                            }
                        }
                    }
                };
                let list = match s {
                    Side::Event => &mut events,
                    Side::Label => &mut labels,
                };
                let _ = list.add_partition_offset(&topic, p, start);
                self.merge.add(s, p, now);
            }
            self.assigned.insert(p);
        }
        info!(partitions = ?parts, model_version = self.engine.version(), "Partitions assigned");
        self.publish();
        // Split each partition's queue off before the assignment starts fetching it, so that
        // no record of it goes to the consumer's own queue first. librdkafka (2.x) remembers
        // the split: a later assign of the partition does not forward it to the consumer's
        // queue again, and records fetched before an unassign are dropped as outdated. An
        // old handle goes first: dropping it would clear the new one's wake-up callback.
        for &p in &parts {
            self.event_queues.remove(&p);
            self.label_queues.remove(&p);
            let k = &self.cfg.kafka;
            let q = split_queue(&self.group, &k.events_topic, p, &self.waker)?;
            self.event_queues.insert(p, q);
            let q = split_queue(&self.labels, &k.labels_topic, p, &self.waker)?;
            self.label_queues.insert(p, q);
        }
        self.group
            .assign(&events)
            .map_err(kerr("assigning events partitions"))?;
        self.labels
            .assign(&labels)
            .map_err(kerr("assigning labels partitions"))?;
        Ok(())
    }

    /// Publishes the status for `/metrics`, `/readyz` and the status page, and every
    /// [`MODEL_EVERY`] the model for `/model`.
    fn publish(&mut self) {
        for cmd in self.telemetry.take_admin_commands() {
            use crate::telemetry::AdminCommand;
            match cmd {
                AdminCommand::Freeze => self.engine.set_operator_frozen(true),
                AdminCommand::Unfreeze => self.engine.set_operator_frozen(false),
                AdminCommand::Rebaseline => self.engine.rebaseline_drift(),
            }
            self.dirty = true;
            warn!(
                command = cmd.as_str(),
                model_version = self.engine.version(),
                "Admin command applied"
            );
        }
        self.telemetry
            .record_label_delays(&self.engine.take_label_delays());
        if self.model_at.is_none_or(|t| t.elapsed() >= MODEL_EVERY) {
            self.model_at = Some(Instant::now());
            let mut view = self.engine.model_view(self.cfg.http.model_coefficients);
            view.lineage = self.lineage.clone();
            if let Ok(json) = serde_json::to_string(&view) {
                self.telemetry.publish_model(json);
            }
        }
        let unacknowledged = u64::try_from(self.producer.in_flight_count()).unwrap_or(0);
        let reports = self.producer.context().reports.load(Ordering::Relaxed);
        if reports != self.delivered.0 || unacknowledged == 0 {
            self.delivered = (reports, Instant::now());
        }
        let stalled = self.delivered.1.elapsed();
        let not_ready = if let Some(e) = self.health.recent() {
            Some(format!("broker unreachable: {e}"))
        } else if stalled >= PRODUCER_STALLED_AFTER {
            Some(format!(
                "the broker has acknowledged none of {unacknowledged} produced records for {} s \
                 (predictions topic unavailable?)",
                stalled.as_secs()
            ))
        } else if self.assigned.is_empty() {
            Some("no partitions assigned".to_string())
        } else {
            None
        };
        let q = self.engine.quality().total.summary();
        self.telemetry.publish(Status {
            counters: self.engine.counters().clone(),
            predictions: self.predictions,
            dead_letters: self.dead_letters.clone(),
            quality: (q.n > 0).then_some(q),
            model_version: self.engine.version(),
            weight_norm: self.engine.model().weight_norm(),
            join_entries: self.engine.join_entries() as u64,
            join_store: self.state.store().figures(),
            resident_bytes: crate::telemetry::resident_bytes(),
            checkpoint_age_seconds: self.cut_at.map(|t| t.elapsed().as_secs_f64()),
            checkpoint_duration_seconds: self.cut_seconds,
            checkpoint_pause_seconds: self.cut_pause_seconds,
            partitions: self.assigned.len(),
            unacknowledged,
            not_ready,
            frozen: self.engine.learning_frozen(),
            loss_paused: self.engine.loss_paused(),
            skipped: crate::guard::Skip::ALL.map(|why| self.engine.skipped(why)),
            drift: self.last_drift.clone(),
            psi_levels: (self.cfg.drift.psi_warn, self.cfg.drift.psi_alert),
            drift_alerts: self.drift_alerts.clone(),
            lag: self.lag(),
            checkpoint_offsets: self.checkpoint_offsets(),
            reliability: self.engine.quality().total.reliability(),
            offset_commits: self.commits,
            loop_seconds: self.clock.seconds(),
        });
    }

    /// The next offset the last durable checkpoint covers, per assigned partition of both
    /// topics (a restart resumes there). Partitions with no offset yet are left out.
    fn checkpoint_offsets(&self) -> Vec<(String, i32, i64)> {
        let ours = [self.topic(Side::Event), self.topic(Side::Label)];
        self.durable_offsets
            .iter()
            .filter(|o| {
                o.offset >= 0
                    && self.assigned.contains(&o.partition)
                    && ours.contains(&o.topic.as_str())
            })
            .map(|o| (o.topic.clone(), o.partition, o.offset))
            .collect()
    }

    /// Records not yet processed per assigned partition: the high watermark in librdkafka's
    /// last statistics minus the next offset to process (records fetched but still in the
    /// merge count as lag). Partitions with no watermark or no position yet are left out.
    fn lag(&self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for ((side, p), next) in &self.known {
            if !self.assigned.contains(p) || *next < 0 {
                continue;
            }
            let topic = self.topic(*side);
            if let Some(high) = self.watermarks.high(topic, *p) {
                out.push((topic.to_string(), *p, (high - next).max(0)));
            }
        }
        out
    }

    fn log_progress(&mut self) {
        let elapsed = self.progress.at.elapsed();
        if elapsed < PROGRESS {
            return;
        }
        let c = self.engine.counters();
        let q = self.engine.quality().total.summary();
        let rate = (c.events_scored - self.progress.scored) as f64 / elapsed.as_secs_f64();
        info!(
            events_per_sec = format!("{rate:.0}"),
            scored = c.events_scored,
            labels_joined = c.label(LabelCount::Joined),
            log_loss = format!("{:.4}", q.log_loss),
            auc = format!("{:.4}", q.auc),
            model_version = self.engine.version(),
            partitions = ?self.assigned,
            "Progress"
        );
        self.progress = Progress {
            at: Instant::now(),
            scored: c.events_scored,
        };
    }
}

/// The lineage `/model` shows for a checkpoint.
fn lineage_of(m: &crate::checkpoint::CheckpointMeta) -> Lineage {
    Lineage {
        checkpoint: m.version,
        parent: m.parent,
        created_at_ms: m.created_at_ms,
        note: m.lineage.clone(),
    }
}

/// What a poll returned, owned.
enum Consumed {
    Record(Record),
    End(Side, i32),
    Error(Side, KafkaError),
}

/// Splits a partition's queue off `consumer`'s own; its first record wakes the loop.
fn split_queue<C: ConsumerContext>(
    consumer: &Arc<BaseConsumer<C>>,
    topic: &str,
    partition: i32,
    waker: &Arc<Waker>,
) -> Result<PartitionQueue<C>, WorkerError> {
    let mut q = consumer
        .split_partition_queue(topic, partition)
        .ok_or(WorkerError::PartitionQueue(partition))?;
    let w = waker.clone();
    q.set_nonempty_callback(move || w.wake());
    Ok(q)
}

/// Up to `max` of what `poll` (a consumer's queue or a partition's) has ready, without waiting.
/// The group consumer's poll also serves its rebalance callback.
fn take_ready<'a>(
    mut poll: impl FnMut() -> Option<Result<BorrowedMessage<'a>, KafkaError>>,
    side: Side,
    max: usize,
    out: &mut Vec<Consumed>,
) {
    out.extend(std::iter::from_fn(|| poll().map(|r| consumed(r, side))).take(max));
}

fn consumed(r: Result<BorrowedMessage<'_>, KafkaError>, side: Side) -> Consumed {
    match r {
        Ok(m) => Consumed::Record(Record {
            side,
            partition: m.partition(),
            offset: m.offset(),
            ts: m.timestamp().to_millis().unwrap_or(0),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        }),
        Err(KafkaError::PartitionEOF(p)) => Consumed::End(side, p),
        Err(e) => Consumed::Error(side, e),
    }
}

/// Logs a loss-spike pause or resumption.
fn log_guard(t: &crate::guard::Transition, model_version: u64) {
    match t {
        crate::guard::Transition::Paused { window, baseline } => warn!(
            window_log_loss = window,
            baseline_log_loss = baseline,
            model_version,
            "Learning paused: loss spike (labels are measured, not learned)"
        ),
        crate::guard::Transition::Resumed {
            window,
            baseline,
            limit: false,
        } => info!(
            window_log_loss = window,
            baseline_log_loss = baseline,
            model_version,
            "Learning resumed: loss back under the spike factor"
        ),
        crate::guard::Transition::Resumed {
            window,
            baseline,
            limit: true,
        } => warn!(
            window_log_loss = window,
            baseline_log_loss = baseline,
            model_version,
            "Learning resumed: the loss stayed high for guard.loss_spike_max_windows windows; taken as the new normal"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaving the group runs on a thread of its own: a close that ends in time is waited for,
    /// one that does not (a broker that does not answer the LeaveGroup) is left behind at the
    /// drain deadline, but never sooner than 1 s.
    #[test]
    fn closing_the_clients_waits_up_to_the_deadline_only() {
        struct SlowToClose(Duration, Arc<AtomicBool>);
        impl Drop for SlowToClose {
            fn drop(&mut self) {
                std::thread::sleep(self.0);
                self.1.store(true, Ordering::SeqCst);
            }
        }
        let closed = Arc::new(AtomicBool::new(false));
        let far = Instant::now() + Duration::from_secs(30);
        close_clients(SlowToClose(Duration::from_millis(300), closed.clone()), far);
        assert!(
            closed.load(Ordering::SeqCst),
            "returned before the clients closed"
        );

        let closed = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        // The deadline has passed already: the 1 s floor applies.
        close_clients(SlowToClose(Duration::from_secs(6), closed.clone()), started);
        let waited = started.elapsed();
        assert!(!closed.load(Ordering::SeqCst));
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
            "waited {waited:?}"
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        // RFC 4648 section 10.
        for (input, out) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), out);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    /// Waits until the committer has reported `n` outcomes (20 s at most).
    fn reports(c: &Committer, n: usize) -> Vec<CommitOutcome> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(c.take());
            std::thread::sleep(Duration::from_millis(10));
        }
        got
    }

    fn committed(group: &BaseConsumer<GroupContext>) -> Option<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        let got = group
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        match got.find_partition("t", 0).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        }
    }

    /// librdkafka's mock cluster, its coordinator slowed down so that a commit is held while
    /// others queue behind it: of the queued jobs only the newest is sent, and none at all once
    /// the partitions were revoked — the group never stores offsets queued before a revoke.
    #[test]
    fn committer_sends_neither_superseded_nor_revoked_commits() {
        let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let waker = Arc::new(Waker::default());
        let group: BaseConsumer<GroupContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "g")
            .set("enable.auto.commit", "false")
            .create_with_context(GroupContext {
                health: Arc::default(),
                watermarks: Arc::default(),
                pending: Mutex::new(VecDeque::new()),
                closing: AtomicBool::new(false),
                waker: waker.clone(),
            })
            .expect("consumer");
        let group = Arc::new(group);
        let mut c = Committer::start(group.clone(), waker).expect("committer");
        let at = |offset| {
            vec![PartitionOffset {
                topic: "t".into(),
                partition: 0,
                offset,
            }]
        };
        assert!(c.send(at(1), "tag".into()));
        let first = reports(&c, 1);
        assert!(
            matches!(first.as_slice(), [CommitOutcome::Stored(o)] if o[0].offset == 1),
            "{first:?}"
        );
        assert_eq!(committed(&group), Some(1));

        // Job 2 is held by the slow coordinator; 3 and 4 queue; then the partitions go.
        cluster
            .broker_round_trip_time(1, Duration::from_millis(1000))
            .expect("rtt");
        assert!(c.send(at(2), "tag".into()));
        std::thread::sleep(Duration::from_millis(200));
        assert!(c.send(at(3), "tag".into()));
        assert!(c.send(at(4), "tag".into()));
        c.revoked();
        let held = reports(&c, 3);
        assert_eq!(held.len(), 3, "one outcome per job: {held:?}");
        let stored: Vec<i64> = held
            .iter()
            .filter_map(|o| match o {
                CommitOutcome::Stored(o) => Some(o[0].offset),
                _ => None,
            })
            .collect();
        assert!(stored.iter().all(|&o| o == 2), "{held:?}");
        let skipped = held
            .iter()
            .filter(|o| matches!(o, CommitOutcome::Skipped))
            .count();
        assert!(
            skipped >= 2,
            "3 (superseded) and 4 (revoked) are skipped: {held:?}"
        );
        cluster
            .broker_round_trip_time(1, Duration::ZERO)
            .expect("rtt");
        let after_revoke = committed(&group);
        assert!(matches!(after_revoke, Some(1 | 2)), "{after_revoke:?}");

        // Jobs of the new generation are sent.
        assert!(c.send(at(5), "tag".into()));
        let last = reports(&c, 1);
        assert!(
            matches!(last.as_slice(), [CommitOutcome::Stored(o)] if o[0].offset == 5),
            "{last:?}"
        );
        assert_eq!(committed(&group), Some(5));
        c.close(true);
    }
}
