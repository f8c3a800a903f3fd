//! `streamlr replay`: runs the engine over an events file and a labels file (JSON lines),
//! merged by timestamp exactly as the worker merges its two topics: the record with the
//! smallest time goes first, and at equal times the event goes before the label.
//!
//! An event without a timestamp takes the largest event time seen so far; a label without one takes the
//! previous label's time (before every event if it is the first). `scored_at` is the event time,
//! so the output is reproducible. Invalid lines are counted, never fatal.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use std::sync::mpsc::SyncSender;

use crate::drift::Drift;
use crate::engine::{EncodedEvent, Engine, LabelCount, encode_event};
use crate::event::{DecodeError, Decoder, Label, Reason};
use crate::features::{Encoded, Encoder};
use crate::join::{JoinBackend, MemoryBackend};
use crate::metrics::{Quality, QualitySummary};
use crate::state::StateDir;
use crate::store::DiskShard;

/// Replay inputs and outputs.
#[derive(Debug, Clone)]
pub struct ReplayArgs {
    /// Events, one JSON object per line.
    pub events: PathBuf,
    /// Labels, one JSON object per line.
    pub labels: PathBuf,
    /// Where to write predictions (JSON lines), if anywhere.
    pub predictions: Option<PathBuf>,
    /// Show progress on stderr (only when it is a terminal).
    pub progress: bool,
}

/// The replay report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Event outcomes.
    pub events: EventReport,
    /// Label outcomes.
    pub labels: BTreeMap<&'static str, u64>,
    /// Label decode failures by reason.
    pub labels_invalid_by_reason: BTreeMap<&'static str, u64>,
    /// Labels still waiting for their event at the end.
    pub labels_waiting_at_end: usize,
    /// Updates applied and refused.
    pub updates: UpdateReport,
    /// Progressive quality over the whole run.
    pub quality_all: QualitySummary,
    /// Progressive quality over the labels joined after 80 % of the events file (by bytes) was
    /// scored.
    pub quality_last_20pct: QualitySummary,
    /// Exact AUC over the metrics window at the end.
    pub window_auc: f64,
    /// Throughput.
    pub throughput: Throughput,
    /// Model summary.
    pub model: ModelReport,
    /// Drift: every evaluated window with the columns at warn or alert.
    pub drift: DriftSummary,
}

/// Drift over the replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftSummary {
    /// Windows evaluated.
    pub windows: u64,
    /// Windows with at least one column at alert.
    pub alert_windows: u64,
    /// Per window (in order): its number, mean score, observed positive rate, action, and the
    /// columns at warn or alert.
    pub flagged: Vec<crate::drift::WindowReport>,
    /// The last window, every column.
    pub last: Option<crate::drift::WindowReport>,
}

impl DriftSummary {
    fn add(&mut self, r: crate::drift::WindowReport) {
        self.windows += 1;
        if r.flagged().any(|c| c.level == crate::drift::Level::Alert) {
            self.alert_windows += 1;
        }
        if r.flagged().next().is_some() {
            let mut f = r.clone();
            f.columns.retain(|c| c.level > crate::drift::Level::Ok);
            self.flagged.push(f);
        }
        self.last = Some(r);
    }
}

/// Event outcomes.
#[derive(Debug, Clone, Serialize)]
pub struct EventReport {
    /// Scored (one prediction each).
    pub scored: u64,
    /// Refused.
    pub invalid: u64,
    /// Refusals by reason.
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
    /// Scored events whose id was already pending.
    pub duplicate_id: u64,
    /// Scored events older than the join window.
    pub too_old: u64,
}

/// Update counts.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateReport {
    /// Applied.
    pub applied: u64,
    /// Refused as non-finite.
    pub refused: u64,
    /// Joined labels not learned, by reason (non_finite, weight_change, drift_freeze,
    /// loss_spike).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Loss-spike pauses during the run.
    pub loss_spike_pauses: u64,
}

/// Throughput figures.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Wall time, seconds.
    pub seconds: f64,
    /// Event lines per second.
    pub events_per_sec: f64,
    /// Event and label lines per second.
    pub records_per_sec: f64,
}

/// Model summary.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Model version at the end.
    pub version: u64,
    /// Optimizer.
    pub optimizer: crate::config::OptimizerKind,
    /// Buckets with a non-zero weight.
    pub nonzero_weights: usize,
    /// L2 norm of the bucket weights.
    pub weight_norm: f64,
    /// Intercept.
    pub bias: f64,
}

/// Replay errors (files only: bad records are counted, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A line reader that reuses its buffer and strips the line ending.
struct Lines {
    r: BufReader<File>,
    buf: Vec<u8>,
    path: PathBuf,
}

impl Lines {
    fn open(path: &Path) -> Result<Self, ReplayError> {
        let f = File::open(path).map_err(io(path))?;
        Ok(Self {
            r: BufReader::with_capacity(1 << 20, f),
            buf: Vec::new(),
            path: path.to_path_buf(),
        })
    }

    /// Reads the next non-empty line into the buffer; false at the end.
    fn next(&mut self) -> Result<bool, ReplayError> {
        loop {
            self.buf.clear();
            if self
                .r
                .read_until(b'\n', &mut self.buf)
                .map_err(io(&self.path))?
                == 0
            {
                return Ok(false);
            }
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            if !self.buf.is_empty() {
                return Ok(true);
            }
        }
    }
}

/// One record in merge order, decoded and (for events) encoded by the reader thread.
enum Rec {
    Event(EncodedEvent),
    /// An event line for the learner to decode and encode itself, with its merge time.
    Raw(Vec<u8>, i64),
    BadEvent(DecodeError),
    Label(Label),
    BadLabel(DecodeError),
    /// 80 % of the events file has been read: the metrics of the last 20 % start here.
    Cut,
}

const BATCH: usize = 1024;

/// What the reader thread hands back.
struct ReaderDone {
    /// The reader's encoder, when it encoded.
    encoder: Option<Encoder>,
    events: u64,
    labels: u64,
}

/// Runs a replay with an in-memory join store.
pub fn run(cfg: Config, args: &ReplayArgs) -> Result<Report, ReplayError> {
    let mut engine = Engine::new(cfg, |_| (MemoryBackend::default(), None));
    run_with(&mut engine, args, |_| Ok(()))
}

/// Runs a replay that persists its state the way the worker does, in `checkpoint.dir`: the
/// disk-backed join store in `join/` and checkpoint files in `checkpoints/`. Every
/// `commit_every` records and at the end it takes a cut: the checkpoint file of version V first
/// (learner state, naming the store cut it belongs to), then the store's atomic commit tagged V.
/// The state directory must not hold a previous run.
pub fn run_persistent(
    cfg: Config,
    args: &ReplayArgs,
    commit_every: u64,
) -> Result<Report, ReplayError> {
    let dir = std::path::PathBuf::from(&cfg.checkpoint.dir);
    let failed = |e: String| ReplayError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::other(e),
    };
    let (mut state, restored) = StateDir::open(&cfg).map_err(|e| failed(e.to_string()))?;
    if restored.meta.is_some() {
        return Err(failed(
            "holds the state of an earlier run: use an empty checkpoint.dir".into(),
        ));
    }
    let opener = state.store().clone();
    let mut engine = Engine::new(cfg, move |p| opener.shard_or_poisoned(p as u32));
    let mut since = 0u64;
    let mut cut = |engine: &mut Engine<DiskShard>, force: bool| -> Result<(), ReplayError> {
        since += 1;
        if !(force || since >= commit_every.max(1)) {
            return Ok(());
        }
        since = 0;
        state
            .cut(engine, Vec::new(), Vec::new())
            .map(|_| ())
            .map_err(|e| failed(e.to_string()))
    };
    let report = run_inner(&mut engine, args, false, |e| cut(e, false))?;
    cut(&mut engine, true)?;
    Ok(report)
}

/// Runs a replay on a given engine, on two threads: a reader that reads both files, merges them
/// by time, decodes and encodes (it owns the scaling statistics while it runs, and updates them in
/// event order exactly as the engine would), and this thread, which scores, joins and learns in
/// the same order. The result is identical to feeding the engine one record at a time.
/// `after_record` runs on the learner thread after every record (replay on the disk store
/// commits cuts there).
pub fn run_with<B: JoinBackend>(
    engine: &mut Engine<B>,
    args: &ReplayArgs,
    after_record: impl FnMut(&mut Engine<B>) -> Result<(), ReplayError>,
) -> Result<Report, ReplayError> {
    run_inner(engine, args, true, after_record)
}

/// `encode_on_reader = false`: the learner decodes and encodes events itself, so the engine's
/// scaling statistics are current at every record (what a checkpoint taken mid-run needs).
fn run_inner<B: JoinBackend>(
    engine: &mut Engine<B>,
    args: &ReplayArgs,
    encode_on_reader: bool,
    mut after_record: impl FnMut(&mut Engine<B>) -> Result<(), ReplayError>,
) -> Result<Report, ReplayError> {
    let started = Instant::now();
    let events_size = std::fs::metadata(&args.events)
        .map_err(io(&args.events))?
        .len();
    let mut out = match &args.predictions {
        Some(p) => Some((
            BufWriter::with_capacity(1 << 20, File::create(p).map_err(io(p))?),
            p.clone(),
        )),
        None => None,
    };
    let with_names = out.is_some();
    engine.set_contributions(with_names);
    let progress = args.progress && std::io::stderr().is_terminal();
    let decoder = engine.decoder().clone();
    let encoder = engine.encoder().clone();
    let drift_monitor = engine.drift().clone();
    let mut snapshot: Option<Quality> = None;
    let mut last_progress = Instant::now();
    let mut written: Result<(), ReplayError> = Ok(());
    let mut drift = DriftSummary::default();
    let mut pauses = 0u64;
    let done = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Rec>>(16);
        let reader = scope.spawn(move || {
            let encoder = encode_on_reader.then_some(encoder);
            read_merged(
                args,
                events_size,
                decoder,
                encoder,
                drift_monitor,
                with_names,
                tx,
            )
        });
        let mut n = 0u64;
        for batch in rx {
            for rec in batch {
                match rec {
                    Rec::Event(mut e) => {
                        n += 1;
                        let names = std::mem::take(&mut e.names);
                        let (id, ts) = (e.id.clone(), e.ts);
                        let scored = engine.apply_encoded(e, 0);
                        if let (Some((w, path)), Ok(())) = (&mut out, &written) {
                            let p = engine.prediction_named(&id, &scored, ts, &names);
                            written = write_line(w, path, &p);
                        }
                    }
                    Rec::Raw(bytes, ts) => {
                        n += 1;
                        if let Ok(p) = engine.on_event(&bytes, 0, ts, ts)
                            && let (Some((w, path)), Ok(())) = (&mut out, &written)
                        {
                            written = write_line(w, path, &p);
                        }
                    }
                    Rec::BadEvent(e) => {
                        n += 1;
                        engine.reject_event(&e);
                    }
                    Rec::Label(l) => {
                        engine.apply_label(l, 0);
                    }
                    Rec::BadLabel(e) => engine.reject_label(&e),
                    Rec::Cut => snapshot = Some(engine.quality().total.clone()),
                }
                for r in engine.take_drift_reports() {
                    drift.add(r);
                }
                for t in engine.take_guard_transitions() {
                    if matches!(t, crate::guard::Transition::Paused { .. }) {
                        pauses += 1;
                    }
                }
                if let (Err(e), Ok(())) = (after_record(engine), &written) {
                    written = Err(e);
                }
            }
            if progress && last_progress.elapsed().as_millis() > 250 {
                last_progress = Instant::now();
                let q = engine.quality().total.summary();
                eprint!(
                    "\revents {n}  log loss {:.4}  AUC {:.4}   ",
                    q.log_loss, q.auc
                );
            }
        }
        reader.join().unwrap_or_else(|_| {
            Err(ReplayError::Io {
                path: args.events.display().to_string(),
                source: std::io::Error::other("reader thread panicked"),
            })
        })
    })?;
    written?;
    if let Some(encoder) = &done.encoder {
        engine.restore_scaler(&encoder.scaler_state());
    }
    if let Some((w, path)) = &mut out {
        w.flush().map_err(io(path))?;
    }
    if progress {
        eprintln!();
    }
    let seconds = started.elapsed().as_secs_f64();
    let snapshot = snapshot.unwrap_or_else(|| engine.quality().total.clone());
    let mut r = report(engine, &snapshot, seconds, done.events, done.labels);
    r.drift = drift;
    r.updates.loss_spike_pauses = pauses;
    Ok(r)
}

fn write_line(
    w: &mut BufWriter<File>,
    path: &Path,
    p: &crate::event::Prediction,
) -> Result<(), ReplayError> {
    serde_json::to_writer(&mut *w, p).map_err(|e| ReplayError::Io {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    w.write_all(b"\n").map_err(io(path))
}

/// The reader thread: merges the two files by time and decodes/encodes every record.
fn read_merged(
    args: &ReplayArgs,
    events_size: u64,
    decoder: Decoder,
    mut encoder: Option<Encoder>,
    drift: Drift,
    with_names: bool,
    tx: SyncSender<Vec<Rec>>,
) -> Result<ReaderDone, ReplayError> {
    let cut_bytes = events_size - events_size / 5;
    let mut events = Lines::open(&args.events)?;
    let mut labels = Lines::open(&args.labels)?;
    let mut label_ts = i64::MIN;
    let mut next_label = |labels: &mut Lines| -> Result<Option<(i64, Rec)>, ReplayError> {
        if !labels.next()? {
            return Ok(None);
        }
        Ok(Some(match decoder.decode_label(&labels.buf) {
            Ok(l) => {
                if let Some(t) = l.ts {
                    label_ts = label_ts.max(t);
                }
                (label_ts, Rec::Label(l))
            }
            Err(e) => (label_ts, Rec::BadLabel(e)),
        }))
    };
    let mut lookahead = next_label(&mut labels)?;
    let (mut event_ts, mut n_events, mut n_labels, mut bytes) = (0i64, 0u64, 0u64, 0u64);
    let mut cut_sent = false;
    let mut batch = Vec::with_capacity(BATCH);
    let mut buf = Encoded::default();
    let send = |batch: &mut Vec<Rec>, force: bool| -> bool {
        if batch.len() >= BATCH || (force && !batch.is_empty()) {
            let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
            return tx.send(full).is_ok();
        }
        true
    };
    while events.next()? {
        n_events += 1;
        bytes += events.buf.len() as u64 + 1;
        let decoded = decoder.decode_event(&events.buf);
        let ts = match &decoded {
            Ok(ev) => ev.ts.unwrap_or(event_ts),
            Err(_) => event_ts,
        };
        event_ts = event_ts.max(ts);
        // Labels strictly before the event go first; at equal times the event wins.
        while lookahead.as_ref().is_some_and(|(lts, _)| *lts < ts) {
            if let Some((_, rec)) = lookahead.take() {
                n_labels += 1;
                batch.push(rec);
            }
            lookahead = next_label(&mut labels)?;
        }
        if !cut_sent && bytes > cut_bytes {
            cut_sent = true;
            batch.push(Rec::Cut);
        }
        batch.push(match (&mut encoder, decoded) {
            (None, _) => Rec::Raw(events.buf.clone(), ts),
            (Some(encoder), Ok(ev)) => {
                match encode_event(encoder, &drift, &ev, ts, &mut buf, with_names) {
                    Ok(e) => Rec::Event(e),
                    Err(e) => Rec::BadEvent(e),
                }
            }
            (Some(_), Err(e)) => Rec::BadEvent(e),
        });
        if !send(&mut batch, false) {
            break;
        }
    }
    while let Some((_, rec)) = lookahead.take() {
        n_labels += 1;
        batch.push(rec);
        send(&mut batch, false);
        lookahead = next_label(&mut labels)?;
    }
    send(&mut batch, true);
    Ok(ReaderDone {
        encoder,
        events: n_events,
        labels: n_labels,
    })
}

fn report<B: JoinBackend>(
    e: &Engine<B>,
    at_80: &Quality,
    seconds: f64,
    n_events: u64,
    n_labels: u64,
) -> Report {
    let c = e.counters();
    let by_reason = |v: &[u64]| {
        Reason::ALL
            .iter()
            .zip(v)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.as_str(), *n))
            .collect()
    };
    let q = &e.quality().total;
    Report {
        events: EventReport {
            scored: c.events_scored,
            invalid: c.events_invalid_total(),
            invalid_by_reason: by_reason(&c.events_invalid),
            duplicate_id: c.events_duplicate_id,
            too_old: c.events_too_old,
        },
        labels: LabelCount::ALL
            .iter()
            .map(|l| (l.as_str(), c.label(*l)))
            .collect(),
        labels_invalid_by_reason: by_reason(&c.labels_invalid),
        labels_waiting_at_end: e.waiting_labels(),
        updates: UpdateReport {
            applied: c.updates,
            refused: c.updates_refused,
            skipped: crate::guard::Skip::ALL
                .iter()
                .map(|why| (why.as_str(), e.skipped(*why)))
                .collect(),
            loss_spike_pauses: 0,
        },
        quality_all: q.summary(),
        quality_last_20pct: q.minus(at_80).summary(),
        window_auc: e.quality().window.auc(),
        throughput: Throughput {
            seconds,
            events_per_sec: n_events as f64 / seconds.max(1e-9),
            records_per_sec: (n_events + n_labels) as f64 / seconds.max(1e-9),
        },
        model: ModelReport {
            version: e.version(),
            optimizer: e.config().model.optimizer,
            nonzero_weights: e.model().nonzero(),
            weight_norm: e.model().weight_norm(),
            bias: e.model().bias(),
        },
        drift: DriftSummary::default(),
    }
}
