//! Command-line interface.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Run the learner over JSONL files of events and labels merged by time; write a JSON report.
    Replay(ReplayCmd),
    /// Generate synthetic fraud-like events and delayed labels with a known ground truth.
    Simulate(SimulateCmd),
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
    /// Keep join entries in the disk-backed store in this directory (default: in memory).
    #[arg(long)]
    store: Option<PathBuf>,
    /// With --store: commit a cut every this many records.
    #[arg(long, default_value_t = 100_000)]
    commit_every: u64,
}

/// `streamlr simulate`.
#[derive(Debug, Args)]
pub struct SimulateCmd {
    /// Write events here (JSON lines).
    #[arg(long)]
    events_out: PathBuf,
    /// Write labels here (JSON lines).
    #[arg(long)]
    labels_out: PathBuf,
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
            let args = ReplayArgs {
                events: a.events,
                labels: a.labels,
                predictions: a.predictions,
                progress: true,
            };
            let report = match &a.store {
                Some(dir) => replay::run_on_store(cfg, &args, dir, a.commit_every)?,
                None => replay::run(cfg, &args)?,
            };
            let text = serde_json::to_string_pretty(&report)?;
            match a.report {
                Some(p) => std::fs::write(&p, text + "\n")
                    .map_err(|e| anyhow::anyhow!("cannot write report {}: {e}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
        Command::Simulate(a) => simulate(a),
    }
}

fn simulate(a: SimulateCmd) -> anyhow::Result<()> {
    let cfg = SimConfig {
        count: a.count,
        seed: a.seed,
        positive_rate: a.positive_rate,
        rate: a.rate,
        label_delay_min_ms: a.label_delay_min.as_millis_i64(),
        label_delay_max_ms: a.label_delay_max.as_millis_i64(),
        label_fraction: a.label_fraction,
        drift_at: a.drift_at,
        malformed_rate: a.malformed_rate,
        ..SimConfig::default()
    };
    anyhow::ensure!(cfg.rate > 0.0, "--rate must be > 0");
    anyhow::ensure!(
        (0.0..1.0).contains(&cfg.positive_rate) && cfg.positive_rate > 0.0,
        "--positive-rate must be in (0, 1)"
    );
    let create = |p: &PathBuf| {
        std::fs::File::create(p)
            .map(|f| BufWriter::with_capacity(1 << 20, f))
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))
    };
    let mut ev = create(&a.events_out)?;
    let mut lb = create(&a.labels_out)?;
    let mut sim = Simulator::new(cfg);
    while let Some(r) = sim.next_record() {
        match r {
            Record::Event { line, .. } => writeln!(ev, "{line}")?,
            Record::Label { line, .. } => writeln!(lb, "{line}")?,
        }
    }
    ev.flush()?;
    lb.flush()?;
    if let Some(p) = &a.truth_out {
        let mut t = create(p)?;
        for (i, pr) in sim.truth_p.iter().enumerate() {
            if pr.is_finite() {
                writeln!(t, r#"{{"id":"{}","p":{}}}"#, Simulator::id(i as u64), pr)?;
            }
        }
        t.flush()?;
    }
    eprintln!("{}", serde_json::to_string(&sim.summary())?);
    Ok(())
}
