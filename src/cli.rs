//! Command-line interface.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::checkpoint::Checkpoints;
use crate::config::Config;
use crate::duration::HumanDuration;
use crate::replay::{self, ReplayArgs};
use crate::simulate::{Record, SimConfig, Simulator};

/// streamlr: score a Kafka event stream with online logistic regression and learn from
/// delayed labels.
#[derive(Debug, Parser)]
#[command(name = "streamlr", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration (defaults < file < STREAMLR__* environment), secrets
    /// redacted, or every problem with its key and value.
    CheckConfig(ConfigArg),
    /// Run the worker on Kafka until SIGTERM/SIGINT: score events, emit predictions, join
    /// delayed labels, learn, checkpoint.
    Run(ConfigArg),
    /// Run the learner over JSONL files of events and labels merged by time; write a JSON report.
    Replay(ReplayCmd),
    /// Generate synthetic fraud-like events and delayed labels with a known ground truth.
    Simulate(SimulateCmd),
    /// Inspect the checkpoints in `checkpoint.dir`.
    Checkpoint {
        /// What to do.
        #[command(subcommand)]
        action: CheckpointAction,
    },
    /// Make the model of checkpoint VERSION the new head (a new version with a lineage note;
    /// offsets are not rewound). Run it while no worker uses the state directory.
    Rollback {
        #[command(flatten)]
        config: ConfigArg,
        /// The version whose model becomes the head.
        #[arg(long)]
        to: u64,
    },
    /// Start a new drift reference from the next events (and lift a drift freeze): a new head
    /// checkpoint with the drift state reset. Run it while no worker uses the state directory.
    Rebaseline(ConfigArg),
}

/// `streamlr checkpoint ...`.
#[derive(Debug, Subcommand)]
pub enum CheckpointAction {
    /// One line per checkpoint: version, parent, time, store cut, lineage, or why it is refused.
    List(ConfigArg),
    /// A checkpoint's metadata and model summary as JSON (default: the newest valid one).
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Version to show.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Verifies every checkpoint (magic, format, checksum, payload); exit code 1 if any is refused.
    Verify(ConfigArg),
}

/// The `--config` option.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// TOML configuration file (built-in defaults when omitted).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `streamlr replay`.
#[derive(Debug, Args)]
pub struct ReplayCmd {
    #[command(flatten)]
    config: ConfigArg,
    /// Events, one JSON object per line.
    #[arg(long)]
    events: PathBuf,
    /// Labels, one JSON object per line.
    #[arg(long)]
    labels: PathBuf,
    /// Write predictions here (JSON lines).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Write the JSON report here (default: stdout).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Persist state as the worker does, in `checkpoint.dir` (which must be empty): the
    /// disk-backed join store and a checkpoint every --commit-every records (default: in memory).
    #[arg(long)]
    persist: bool,
    /// With --persist: take a cut (checkpoint + store commit) every this many records.
    #[arg(long, default_value_t = 100_000)]
    commit_every: u64,
}

/// `streamlr simulate`.
#[derive(Debug, Args)]
pub struct SimulateCmd {
    /// Write events here (JSON lines); with --events-out and --labels-out the stream goes to
    /// files, with --brokers to Kafka.
    #[arg(long, requires = "labels_out", conflicts_with = "brokers")]
    events_out: Option<PathBuf>,
    /// Write labels here (JSON lines).
    #[arg(long, requires = "events_out")]
    labels_out: Option<PathBuf>,
    /// Produce to Kafka at these bootstrap servers instead (records keyed by id, timestamped
    /// with the event or label time).
    #[arg(long, required_unless_present = "events_out")]
    brokers: Option<String>,
    /// Kafka topic for events.
    #[arg(long, default_value = "events")]
    events_topic: String,
    /// Kafka topic for labels.
    #[arg(long, default_value = "labels")]
    labels_topic: String,
    /// Pace the stream in wall-clock time at --rate events/s (default: as fast as possible).
    #[arg(long)]
    pace: bool,
    /// Event time of the first event, epoch ms (default: 2026-01-01 for files, now for Kafka).
    #[arg(long)]
    start_ts: Option<i64>,
    /// Write `{"id", "p"}` lines with each event's true probability here.
    #[arg(long)]
    truth_out: Option<PathBuf>,
    /// Number of events.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Target positive (fraud) rate.
    #[arg(long, default_value_t = 0.02)]
    positive_rate: f64,
    /// Events per second of event time.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Shortest label delay.
    #[arg(long, default_value = "1m")]
    label_delay_min: HumanDuration,
    /// Longest label delay (delays are log-uniform between the two).
    #[arg(long, default_value = "1h")]
    label_delay_max: HumanDuration,
    /// Fraction of events that get a label.
    #[arg(long, default_value_t = 1.0)]
    label_fraction: f64,
    /// Change the ground truth abruptly at this event index.
    #[arg(long)]
    drift_at: Option<u64>,
    /// Fraction of event records that are malformed.
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let env = std::env::vars();
    match cli.command {
        Command::CheckConfig(a) => {
            let cfg = Config::load(a.config.as_deref(), env)?;
            print!("{}", cfg.to_redacted_toml());
            Ok(())
        }
        Command::Replay(a) => {
            let cfg = Config::load(a.config.config.as_deref(), env)?;
            init_logging(&cfg.log);
            let args = ReplayArgs {
                events: a.events,
                labels: a.labels,
                predictions: a.predictions,
                progress: true,
            };
            let report = if a.persist {
                replay::run_persistent(cfg, &args, a.commit_every)?
            } else {
                replay::run(cfg, &args)?
            };
            let text = serde_json::to_string_pretty(&report)?;
            match a.report {
                Some(p) => std::fs::write(&p, text + "\n")
                    .map_err(|e| anyhow::anyhow!("cannot write report {}: {e}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
        Command::Run(a) => {
            let cfg = Config::load(a.config.as_deref(), env)?;
            init_logging(&cfg.log);
            let stop = crate::worker::Stop::new();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
            let telemetry = crate::telemetry::Telemetry::new();
            if !cfg.http.listen.is_empty() {
                let listener = std::net::TcpListener::bind(&cfg.http.listen).map_err(|e| {
                    anyhow::anyhow!("http.listen = {:?}: cannot listen: {e}", cfg.http.listen)
                })?;
                let http =
                    |e: std::io::Error| anyhow::anyhow!("http.listen = {:?}: {e}", cfg.http.listen);
                listener.set_nonblocking(true).map_err(http)?;
                let addr = listener.local_addr().map_err(http)?;
                let t = telemetry.clone();
                rt.spawn(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => crate::telemetry::serve(l, t).await,
                        Err(e) => tracing::error!(error = %e, "HTTP server failed"),
                    }
                });
                tracing::info!(%addr, "HTTP listening (/ status page, /metrics, /healthz, /readyz, /model)");
            }
            let on_signal = stop.clone();
            rt.spawn(async move {
                match shutdown_signal().await {
                    Ok(name) => tracing::info!(signal = name, "Stopping"),
                    Err(e) => tracing::error!(error = %e, "Cannot listen for signals"),
                }
                on_signal.request();
            });
            let result = crate::worker::run(cfg, stop, telemetry);
            rt.shutdown_background();
            result.map_err(|e| {
                tracing::error!(error = %e, "Worker stopped");
                e.into()
            })
        }
        Command::Simulate(a) => simulate(a),
        Command::Checkpoint { action } => checkpoint(action, env),
        Command::Rebaseline(a) => {
            let cfg = Config::load(a.config.as_deref(), env)?;
            init_logging(&cfg.log);
            let (state, restored) = crate::state::StateDir::open(&cfg)?;
            let (Some(meta), Some(mut learner)) = (restored.meta, restored.learner) else {
                anyhow::bail!(
                    "no valid checkpoint in {}: nothing to re-baseline",
                    cfg.checkpoint.dir
                );
            };
            let mut fresh = crate::drift::Drift::new(&cfg.drift, &cfg.features);
            fresh.rebaseline();
            learner.drift = fresh.state().clone();
            let schema = crate::state::schema_of(&cfg);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let head = state.checkpoints().new_head(
                &crate::snapshot::encode(&schema, &learner),
                meta.version,
                &schema.digest,
                format!("drift re-baseline of version {}", meta.version),
                now,
            )?;
            println!("{}", serde_json::to_string_pretty(&head)?);
            Ok(())
        }
        Command::Rollback { config, to } => {
            let cfg = Config::load(config.config.as_deref(), env)?;
            init_logging(&cfg.log);
            // Locks the directory (refused while a worker runs) and settles it first: orphan
            // checkpoints are removed, so the new head names a store cut that exists.
            let (state, _) = crate::state::StateDir::open(&cfg)?;
            let ckpts = state.checkpoints();
            let target = ckpts.load(to)?;
            crate::snapshot::decode(&target.learner, Some(&crate::state::schema_of(&cfg)))
                .map_err(|e| {
                    anyhow::anyhow!("checkpoint {to} cannot be used with this configuration: {e}")
                })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let meta = ckpts.rollback(to, now)?;
            println!("{}", serde_json::to_string_pretty(&meta)?);
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT with the signal's name.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Structured logs on stderr per `[log]`: a tracing filter and `pretty` or `json` lines.
pub fn init_logging(log: &crate::config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match log.format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Pretty => builder.try_init(),
    };
}

fn checkpoint(action: CheckpointAction, env: std::env::Vars) -> anyhow::Result<()> {
    let config = match &action {
        CheckpointAction::List(c) | CheckpointAction::Verify(c) => c,
        CheckpointAction::Show { config, .. } => config,
    };
    let cfg = Config::load(config.config.as_deref(), env)?;
    init_logging(&cfg.log);
    let ckpts = Checkpoints::open(&cfg.checkpoint.checkpoints_dir(), cfg.checkpoint.keep)?
        .with_key(&cfg.checkpoint.hmac_key);
    match action {
        CheckpointAction::List(_) => {
            for l in ckpts.list()? {
                match l.status {
                    Ok(m) => println!(
                        "{:>8}  parent {:<8} created_at {}  store_cut {:<6} {}",
                        m.version,
                        m.parent.map_or("-".into(), |p| p.to_string()),
                        m.created_at_ms,
                        m.store_cut.map_or("-".into(), |c| c.to_string()),
                        m.lineage.unwrap_or_default()
                    ),
                    Err(e) => println!("{:>8}  REFUSED: {e}", l.version),
                }
            }
            Ok(())
        }
        CheckpointAction::Verify(_) => {
            let list = ckpts.list()?;
            let mut refused = 0;
            for l in &list {
                match &l.status {
                    Ok(_) => println!("{:>8}  ok", l.version),
                    Err(e) => {
                        refused += 1;
                        println!("{:>8}  REFUSED: {e}", l.version);
                    }
                }
            }
            anyhow::ensure!(
                refused == 0,
                "{refused} of {} checkpoints refused",
                list.len()
            );
            Ok(())
        }
        CheckpointAction::Show { version, .. } => {
            let c = match version {
                Some(v) => ckpts.load(v)?,
                None => ckpts
                    .latest_valid(u64::MAX)?
                    .0
                    .ok_or_else(|| anyhow::anyhow!("no valid checkpoint"))?,
            };
            let (schema, learner) = crate::snapshot::decode(&c.learner, None)?;
            let out = serde_json::json!({
                "meta": c.meta,
                "schema": schema,
                "model": {
                    "version": learner.version,
                    "optimizer": learner.optim.kind,
                    "updates": learner.counters.updates,
                    "nonzero_weights": learner.model.nonzero(),
                    "weight_norm": learner.model.weight_norm(),
                    "bias": learner.model.bias(),
                },
                "quality": learner.quality.total.summary(),
                "counters": learner.counters.named(),
                "drift": {
                    "reference_set": learner.drift.reference.is_some(),
                    "windows": learner.drift.windows,
                    "frozen": learner.drift.frozen,
                },
                // Identifies the learner state bit for bit (weights, optimizer, scaler,
                // metrics, counters): equal digests mean identical models.
                "learner_crc32": format!("{:08x}", crc32fast::hash(&c.learner)),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}

fn simulate(a: SimulateCmd) -> anyhow::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let start_ts = a.start_ts.unwrap_or(if a.brokers.is_some() {
        now_ms
    } else {
        SimConfig::default().start_ts
    });
    let cfg = SimConfig {
        count: a.count,
        seed: a.seed,
        positive_rate: a.positive_rate,
        rate: a.rate,
        start_ts,
        label_delay_min_ms: a.label_delay_min.as_millis_i64(),
        label_delay_max_ms: a.label_delay_max.as_millis_i64(),
        label_fraction: a.label_fraction,
        drift_at: a.drift_at,
        malformed_rate: a.malformed_rate,
    };
    anyhow::ensure!(cfg.rate > 0.0, "--rate must be > 0");
    anyhow::ensure!(
        (0.0..1.0).contains(&cfg.positive_rate) && cfg.positive_rate > 0.0,
        "--positive-rate must be in (0, 1)"
    );
    let mut sim = Simulator::new(cfg);
    let mut sink = match (&a.brokers, &a.events_out, &a.labels_out) {
        (Some(brokers), _, _) => Sink::Kafka {
            producer: crate::kafka::client_config(brokers, std::iter::empty())
                .set("linger.ms", "5")
                .create()?,
            events: a.events_topic.clone(),
            labels: a.labels_topic.clone(),
        },
        (None, Some(e), Some(l)) => Sink::Files {
            events: OutFile::create(e)?,
            labels: OutFile::create(l)?,
        },
        _ => anyhow::bail!("give --events-out and --labels-out, or --brokers"),
    };
    let wall_start = std::time::Instant::now();
    while let Some(r) = sim.next_record() {
        let (ts, is_event, line) = match &r {
            Record::Event { ts, line } => (*ts, true, line),
            Record::Label { ts, line } => (*ts, false, line),
        };
        if a.pace {
            let due = std::time::Duration::from_millis((ts - start_ts).max(0) as u64);
            if let Some(wait) = due.checked_sub(wall_start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        sink.write(is_event, ts, line)?;
    }
    sink.finish()?;
    if let Some(p) = &a.truth_out {
        let mut t = OutFile::create(p)?;
        for (i, pr) in sim.truth_p.iter().enumerate() {
            if pr.is_finite() {
                t.line(format_args!(
                    r#"{{"id":"{}","p":{}}}"#,
                    Simulator::id(i as u64),
                    pr
                ))?;
            }
        }
        t.finish()?;
    }
    eprintln!("{}", serde_json::to_string(&sim.summary())?);
    Ok(())
}

/// An output file whose errors name it.
struct OutFile {
    path: PathBuf,
    w: BufWriter<std::fs::File>,
}

impl OutFile {
    fn create(p: &Path) -> anyhow::Result<Self> {
        let f = std::fs::File::create(p)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?;
        Ok(Self {
            path: p.to_path_buf(),
            w: BufWriter::with_capacity(1 << 20, f),
        })
    }

    fn line(&mut self, text: impl std::fmt::Display) -> anyhow::Result<()> {
        writeln!(self.w, "{text}").map_err(|e| self.error(e))
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.w.flush().map_err(|e| self.error(e))
    }

    fn error(&self, e: std::io::Error) -> anyhow::Error {
        anyhow::anyhow!("cannot write {}: {e}", self.path.display())
    }
}

/// Where simulated records go.
enum Sink {
    Files {
        events: OutFile,
        labels: OutFile,
    },
    Kafka {
        producer: rdkafka::producer::BaseProducer,
        events: String,
        labels: String,
    },
}

impl Sink {
    fn write(&mut self, is_event: bool, ts: i64, line: &str) -> anyhow::Result<()> {
        match self {
            Sink::Files { events, labels } => if is_event { events } else { labels }.line(line)?,
            Sink::Kafka {
                producer,
                events,
                labels,
            } => {
                // Key by id so both topics put an id in the same partition (co-partitioning);
                // malformed records without a readable id go keyless.
                let key = record_id(line).unwrap_or_default();
                let topic = if is_event {
                    events.as_str()
                } else {
                    labels.as_str()
                };
                crate::kafka::send_blocking(
                    producer,
                    topic,
                    key.as_bytes(),
                    line.as_bytes(),
                    Some(ts),
                )?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Files { events, labels } => {
                events.finish()?;
                labels.finish()?;
            }
            Sink::Kafka { producer, .. } => {
                crate::kafka::flush(producer, std::time::Duration::from_secs(60))?
            }
        }
        Ok(())
    }
}

/// The `"id"` of a generated record (the generator writes it first).
fn record_id(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(r#"{"id":""#)?;
    rest.split('"').next()
}
