//! streamlr: a Kafka worker that scores events with online logistic regression and learns from
//! delayed labels.
//!
//! Module map (the pure learning core first, I/O at the edges):
//! - [`config`]   — configuration: defaults < file < environment, validated into checked types.
//! - [`duration`] — human durations ("30s", "7d") used by the config.
//! - [`event`]    — wire types (event, label, prediction) and strict, typed decoding.
//! - `frame`      — the checksummed envelope of snapshot and checkpoint files.
//! - `scan`       — the fast path of decoding: flat events and labels without serde, same results.
//! - [`hash`]     — MurmurHash3 x86_32, the fixed hash behind categorical features.
//! - [`features`] — the declared schema: numeric scaling/clipping, hashing, crosses, missing values.
//! - [`model`]    — logistic regression: stable sigmoid and log loss, scoring, contributions.
//! - [`math`]     — `exp`, `ln`, `ln_1p`, `powf` with the same bits on every machine.
//! - [`optim`]    — SGD, AdaGrad and FTRL-Proximal updates with L1/L2, class weights, clipping.
//! - [`drift`]    — PSI and KS per feature and on the score against a reference window.
//! - [`guard`]    — guardrails: loss-spike pause, weight-change cap, skipped-update counts.
//! - [`ks`]       — the two-sample KS statistic and its p-value as scipy computes it.
//! - [`metrics`]  — progressive (prequential) quality: log loss, AUC, calibration, Brier, rates.
//! - [`inspect`]  — what `/model` shows: the largest coefficients, named by the values seen.
//! - [`merge`]    — the timestamp merge of the two input topics, pure and deterministic.
//! - [`kafka`]    — Kafka clients at the edge: configuration passthrough, backpressured sends.
//! - [`join`]     — what was scored, waiting for its label: join outcomes and the store interface.
//! - [`engine`]   — the learner that owns the state and applies events and labels in order.
//! - [`snapshot`] — versioned, checksummed serialization of model, optimizer and scaler state.
//! - [`store`]    — the disk-backed join store (fjall): shards, overlays, atomic cuts.
//! - [`simulate`] — a deterministic generator of fraud-like traffic with a known ground truth.
//! - [`replay`]   — runs the engine over JSONL files exactly as the worker runs it live.
//! - [`state`]    — the locked state directory: resume consistently, take cuts.
//! - [`checkpoint`] — versioned, checksummed checkpoint files: write, list, verify, roll back.
//! - [`telemetry`] — Prometheus metrics, health and readiness over HTTP.
//! - [`worker`]   — `streamlr run`: the worker on Kafka (consume, merge, score, learn, cut).
//! - [`cli`]      — command-line interface.

pub mod checkpoint;
#[cfg(feature = "kafka")]
pub mod cli;
pub mod config;
pub mod drift;
pub mod duration;
pub mod engine;
pub mod event;
pub mod features;
mod frame;
pub mod guard;
pub mod hash;
pub mod inspect;
pub mod join;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod ks;
pub mod math;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod replay;
mod scan;
pub mod simulate;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(feature = "kafka")]
pub mod worker;
