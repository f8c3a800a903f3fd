//! `streamlr replay`: runs the engine over an events file and a labels file (JSON lines),
//! merged by timestamp exactly as the worker merges its two topics: the record with the
//! smallest time goes first, and at equal times the event goes before the label.
//!
//! An event without a timestamp takes the previous event's time; a label without one takes the
//! previous label's time (before every event if it is the first). `scored_at` is the event time,
//! so the output is reproducible. Invalid lines are counted, never fatal.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::engine::{Engine, LabelCount};
use crate::event::{Label, Reason};
use crate::join::{JoinBackend, MemoryBackend};
use crate::metrics::{Quality, QualitySummary};

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
    /// Progressive quality over labels joined after 80 % of the events were scored.
    pub quality_last_20pct: QualitySummary,
    /// Exact AUC over the metrics window at the end.
    pub window_auc: f64,
    /// Throughput.
    pub throughput: Throughput,
    /// Model summary.
    pub model: ModelReport,
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

fn count_lines(path: &Path) -> Result<u64, ReplayError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    let mut last = b'\n';
    loop {
        let k = f.read(&mut buf).map_err(io(path))?;
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[k - 1];
    }
    Ok(n + u64::from(last != b'\n'))
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

/// The label lookahead: decoded label (or decode error) with its merge time.
type NextLabel = Option<(i64, Result<Label, crate::event::DecodeError>)>;

fn next_label<B: JoinBackend>(
    e: &Engine<B>,
    lines: &mut Lines,
    last_ts: &mut i64,
) -> Result<NextLabel, ReplayError> {
    if !lines.next()? {
        return Ok(None);
    }
    let decoded = e.decode_label(&lines.buf);
    if let Ok(Label { ts: Some(t), .. }) = &decoded {
        *last_ts = (*last_ts).max(*t);
    }
    Ok(Some((*last_ts, decoded)))
}

/// Runs a replay with an in-memory join store.
pub fn run(cfg: Config, args: &ReplayArgs) -> Result<Report, ReplayError> {
    let mut engine = Engine::new(cfg, MemoryBackend::default());
    run_with(&mut engine, args)
}

/// Runs a replay on a given engine.
pub fn run_with<B: JoinBackend>(
    engine: &mut Engine<B>,
    args: &ReplayArgs,
) -> Result<Report, ReplayError> {
    let started = Instant::now();
    let total_events = count_lines(&args.events)?;
    let cut_at = total_events - total_events / 5;
    let mut out = match &args.predictions {
        Some(p) => Some((
            BufWriter::with_capacity(1 << 20, File::create(p).map_err(io(p))?),
            p.clone(),
        )),
        None => None,
    };
    let progress = args.progress && std::io::stderr().is_terminal();
    let mut events = Lines::open(&args.events)?;
    let mut labels = Lines::open(&args.labels)?;
    let mut label_ts = i64::MIN;
    let mut lookahead = next_label(engine, &mut labels, &mut label_ts)?;
    let (mut event_ts, mut n_events, mut n_labels) = (0i64, 0u64, 0u64);
    let mut snapshot: Option<Quality> = None;
    let mut last_progress = Instant::now();
    let mut line = Vec::new();
    while events.next()? {
        n_events += 1;
        if n_events == cut_at + 1 {
            snapshot = Some(engine.quality().total.clone());
        }
        std::mem::swap(&mut line, &mut events.buf);
        let decoded = engine.decode_event(&line);
        let ts = match &decoded {
            Ok(ev) => ev.ts.unwrap_or(event_ts),
            Err(_) => event_ts,
        };
        event_ts = event_ts.max(ts);
        // Labels strictly before the event go first; at equal times the event wins.
        while let Some((lts, _)) = &lookahead {
            if *lts >= ts {
                break;
            }
            if let Some((_, l)) = lookahead.take() {
                n_labels += 1;
                match l {
                    Ok(l) => {
                        engine.apply_label(l);
                    }
                    Err(e) => engine.reject_label(&e),
                }
            }
            lookahead = next_label(engine, &mut labels, &mut label_ts)?;
        }
        match decoded {
            Ok(ev) => {
                if let Ok(p) = engine.score(&ev, ts, ts) {
                    if let Some((w, path)) = &mut out {
                        serde_json::to_writer(&mut *w, &p).map_err(|e| ReplayError::Io {
                            path: path.display().to_string(),
                            source: e.into(),
                        })?;
                        w.write_all(b"\n").map_err(io(path))?;
                    }
                }
            }
            Err(e) => engine.reject_event(&e),
        }
        if progress && n_events % 4096 == 0 && last_progress.elapsed().as_millis() > 250 {
            last_progress = Instant::now();
            let q = engine.quality().total.summary();
            eprint!(
                "\r{:>5.1}%  events {n_events}  labels {n_labels}  log loss {:.4}  AUC {:.4}   ",
                100.0 * n_events as f64 / total_events.max(1) as f64,
                q.log_loss,
                q.auc
            );
        }
        std::mem::swap(&mut line, &mut events.buf);
    }
    while let Some((_, l)) = lookahead.take() {
        n_labels += 1;
        match l {
            Ok(l) => {
                engine.apply_label(l);
            }
            Err(e) => engine.reject_label(&e),
        }
        lookahead = next_label(engine, &mut labels, &mut label_ts)?;
    }
    if let Some((w, path)) = &mut out {
        w.flush().map_err(io(path))?;
    }
    if progress {
        eprintln!();
    }
    let seconds = started.elapsed().as_secs_f64();
    let snapshot = snapshot.unwrap_or_else(|| engine.quality().total.clone());
    Ok(report(engine, &snapshot, seconds, n_events, n_labels))
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
        labels_waiting_at_end: e.joiner().waiting_labels(),
        updates: UpdateReport {
            applied: c.updates,
            refused: c.updates_refused,
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
    }
}
