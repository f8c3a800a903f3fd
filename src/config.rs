//! Configuration: built-in defaults < TOML file < environment (`STREAMLR__SECTION__KEY`).
//!
//! The raw layers are merged as TOML values, deserialized once with `deny_unknown_fields` (so a
//! misspelt key is an error that names it), then [`Config::validate`] checks ranges and
//! cross-references and reports every problem with its key and bad value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// Environment prefix; `STREAMLR__MODEL__THRESHOLD=0.7` sets `model.threshold`.
pub const ENV_PREFIX: &str = "STREAMLR__";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where fields live in incoming events and labels.
    pub input: InputConfig,
    /// Size limits applied while decoding; records over a limit are dead-lettered.
    pub limits: LimitsConfig,
    /// The feature schema.
    pub features: FeaturesConfig,
    /// Logistic regression, decision threshold and optimizer.
    pub model: ModelConfig,
    /// Progressive quality metrics.
    pub metrics: MetricsConfig,
    /// Joining delayed labels to what was scored.
    pub join: JoinConfig,
    /// Where state lives and how often the worker takes a cut.
    pub checkpoint: CheckpointConfig,
    /// Kafka: brokers, group, topics, merge and client properties (the worker only).
    pub kafka: KafkaConfig,
    /// Drift monitoring: PSI and KS per feature and on the score against a reference window.
    pub drift: DriftConfig,
    /// Guardrails against learning garbage (see `src/guard.rs`).
    pub guard: GuardConfig,
    /// The worker's HTTP endpoints (metrics, health).
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Where state lives. The join store is `<dir>/join`, checkpoint files `<dir>/checkpoints`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// State directory.
    pub dir: String,
    /// Checkpoint files kept (older ones are deleted).
    pub keep: usize,
    /// The worker takes a cut (checkpoint + store commit + offset commit) this often...
    pub every: HumanDuration,
    /// ...or after this many model updates...
    pub every_updates: u64,
    /// ...or after this many records (events and labels) read, whichever comes first. The join
    /// store keeps what changed since the last cut in memory, so this bounds that memory when
    /// the worker runs through a backlog.
    pub every_records: u64,
    /// On SIGTERM/SIGINT: how long the worker may take to flush predictions and write its final
    /// cut before it gives up (exit code 1; the previous cut stays valid).
    pub drain_timeout: HumanDuration,
    /// Key of the HMAC-SHA256 that signs checkpoint files ("" = unsigned, CRC-32 only). When
    /// set, unsigned or wrongly signed checkpoints are refused. Best given by environment
    /// (`STREAMLR__CHECKPOINT__HMAC_KEY`); redacted when printed.
    pub hmac_key: String,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            dir: "state".into(),
            keep: 5,
            every: HumanDuration::from_secs(30),
            every_updates: 100_000,
            every_records: 100_000,
            drain_timeout: HumanDuration::from_secs(30),
            hmac_key: String::new(),
        }
    }
}

/// Kafka, for `streamlr run`. Events and labels must be co-partitioned (same partition count,
/// keyed by id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group; its committed offsets follow the checkpoints.
    pub group_id: String,
    /// Input topic of events.
    pub events_topic: String,
    /// Input topic of labels.
    pub labels_topic: String,
    /// Output topic of predictions (key = id).
    pub predictions_topic: String,
    /// Output topic of records that cannot be used, with the reason.
    pub dead_letter_topic: String,
    /// Output topic of drift window reports with a column at warn or alert; empty = none.
    pub drift_topic: String,
    /// Longest the merge waits for a partition with nothing buffered before it goes on without
    /// it (Kafka Streams' `max.task.idle.ms`); partitions known to be at their end never wait.
    pub merge_idle: HumanDuration,
    /// Records the merge buffers per partition; the rest waits in the partition's own
    /// librdkafka queue (bounded by `queued.max.messages.kbytes` and `queued.min.messages`).
    pub buffer_records: usize,
    /// Timeout of metadata and committed-offset requests at start-up and on assignment, and of
    /// the wait for the offset commit when partitions are revoked.
    pub request_timeout: HumanDuration,
    /// librdkafka properties for both consumer and producer (TLS, SASL, timeouts), passed
    /// through as given. Keys containing password/secret/token are redacted when printed.
    pub client: BTreeMap<String, String>,
    /// librdkafka properties for the two consumers only (fetch and prefetch tuning,
    /// `auto.offset.reset`, `group.instance.id`), applied after `client`.
    pub consumer: BTreeMap<String, String>,
    /// librdkafka properties for the producer only (`linger.ms`, `compression.type`,
    /// `message.timeout.ms`), applied after `client`.
    pub producer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "streamlr".into(),
            events_topic: "events".into(),
            labels_topic: "labels".into(),
            predictions_topic: "predictions".into(),
            dead_letter_topic: "dead-letter".into(),
            drift_topic: String::new(),
            merge_idle: HumanDuration::from_millis(100),
            buffer_records: 10_000,
            request_timeout: HumanDuration::from_secs(30),
            client: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

/// The worker's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/model`, the status page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (`host:port`; port 0 picks a free one, logged); empty = no HTTP.
    pub listen: String,
    /// How many coefficients `/model` lists (the largest by |weight|).
    pub model_coefficients: usize,
    /// Bearer token of the endpoints that change state (`POST /admin/freeze`, `/admin/unfreeze`,
    /// `/admin/rebaseline`); "" = those endpoints are disabled. Best given by environment
    /// (`STREAMLR__HTTP__ADMIN_TOKEN`); redacted when printed.
    pub admin_token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9898".into(),
            model_coefficients: 100,
            admin_token: String::new(),
        }
    }
}

/// Drift monitoring (see `src/drift.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Monitor drift at all.
    pub enabled: bool,
    /// Events in the reference window (the first after start or a re-baseline).
    pub reference_events: usize,
    /// The score's reference starts once the model has learned this many labels (the scores of
    /// a model learning from scratch move because it learns).
    pub score_reference_after_updates: u64,
    /// Events in the current window.
    pub window_events: usize,
    /// Evaluate every this many events; 0 = every `window_events` (tumbling windows).
    pub evaluate_every: usize,
    /// Watch one event in this many, chosen by a hash of its id (so replay and the worker, and
    /// every restart, watch the same events). 1 = every event. Reference and window sizes count
    /// watched events.
    pub sample_every: u32,
    /// Quantile bins of numeric columns (+ one for missing).
    pub bins: usize,
    /// Categories kept by name per categorical column (+ other, unseen, missing).
    pub top_k: usize,
    /// Floor of bin proportions in the PSI (keeps empty bins finite).
    pub epsilon: f64,
    /// PSI at or above which a column is at `warn`.
    pub psi_warn: f64,
    /// PSI at or above which a column is at `alert`.
    pub psi_alert: f64,
    /// KS p-value below which a numeric column is at `alert`.
    pub ks_p_alert: f64,
    /// On alert: `none`, `freeze` (keep scoring, stop learning until a window without alert), or
    /// `rebaseline` (take a new reference from the next events).
    pub action: DriftAction,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reference_events: 10_000,
            score_reference_after_updates: 10_000,
            window_events: 5_000,
            evaluate_every: 0,
            sample_every: 1,
            bins: 10,
            top_k: 10,
            epsilon: 1e-4,
            psi_warn: 0.1,
            psi_alert: 0.25,
            ks_p_alert: 0.01,
            action: DriftAction::None,
        }
    }
}

/// Guardrails against learning garbage (see `src/guard.rs`). All off by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// An update that would move any weight by more than this is refused whole (0 = off).
    pub max_weight_change: f64,
    /// Pause learning while a window's mean log loss exceeds this many times the long-run mean
    /// (0 = off; e.g. 3).
    pub loss_spike_factor: f64,
    /// Labels per loss window.
    pub loss_spike_window: u64,
    /// Labels in the long-run mean before the loss check applies.
    pub loss_spike_min_labels: u64,
    /// A pause lasting this many windows ends (a new regime, not a spike): learning resumes
    /// and the long-run mean starts over.
    pub loss_spike_max_windows: u64,
    /// Labels learned per entity (`input.label_entity_field`) per `label_rate_window` of label
    /// time; the rest are counted `rate_limited` and not joined (0 = off).
    pub label_rate_limit: u32,
    /// The window of `label_rate_limit`.
    pub label_rate_window: HumanDuration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            max_weight_change: 0.0,
            loss_spike_factor: 0.0,
            loss_spike_window: 1_000,
            loss_spike_min_labels: 10_000,
            loss_spike_max_windows: 10,
            label_rate_limit: 0,
            label_rate_window: HumanDuration::from_secs(3600),
        }
    }
}

/// What a drift alert does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DriftAction {
    /// Report only.
    None,
    /// Stop model updates (scoring goes on) until a window without alert.
    Freeze,
    /// Take a new reference from the next events.
    Rebaseline,
}

/// librdkafka properties the worker sets itself: its delivery guarantees depend on them.
pub const KAFKA_OWNED_PROPERTIES: [&str; 6] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "partition.assignment.strategy",
    "group.id",
    "bootstrap.servers",
];

impl CheckpointConfig {
    /// The join store's directory.
    pub fn join_dir(&self) -> std::path::PathBuf {
        Path::new(&self.dir).join("join")
    }

    /// The checkpoint files' directory.
    pub fn checkpoints_dir(&self) -> std::path::PathBuf {
        Path::new(&self.dir).join("checkpoints")
    }
}

/// Field names of the wire formats, so existing topics work without a translation step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Event field holding the id (the join key): a non-empty string, or an integer.
    pub id_field: String,
    /// Event field holding the event time in epoch milliseconds; the Kafka timestamp (or, in
    /// replay, the previous event's time) is used when it is absent.
    pub timestamp_field: String,
    /// `"nested"`: features are the members of the object at `features_field`;
    /// `"top_level"`: features are the event's top-level fields except id and timestamp.
    pub features_from: FeaturesFrom,
    /// Name of the nested features object (with `features_from = "nested"`).
    pub features_field: String,
    /// With `features_from = "top_level"`: read only these fields (empty = all but id and ts).
    pub include: Vec<String>,
    /// Label field holding the id.
    pub label_id_field: String,
    /// Label field holding the outcome: 0/1 or false/true.
    pub label_field: String,
    /// Label field holding the label time in epoch milliseconds (optional in the record).
    pub label_timestamp_field: String,
    /// Label field holding a non-negative example weight (optional in the record, default 1).
    pub label_weight_field: String,
    /// Label field naming the entity the label is about (card, account, merchant), for
    /// `guard.label_rate_limit` ("" = none).
    pub label_entity_field: String,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            id_field: "id".into(),
            timestamp_field: "ts".into(),
            features_from: FeaturesFrom::Nested,
            features_field: "features".into(),
            include: Vec::new(),
            label_id_field: "id".into(),
            label_field: "label".into(),
            label_timestamp_field: "ts".into(),
            label_weight_field: "weight".into(),
            label_entity_field: String::new(),
        }
    }
}

/// Where an event's features are read from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FeaturesFrom {
    /// An object inside the event (`features_field`).
    Nested,
    /// The event's own top-level fields.
    TopLevel,
}

/// Decoding limits. Each has a safe default; a record over a limit gets a distinct reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
    /// Longest accepted id, in bytes.
    pub max_id_bytes: usize,
    /// Most features in one event.
    pub max_features: usize,
    /// Longest string feature value, in bytes.
    pub max_string_bytes: usize,
    /// Longest feature name, in bytes.
    pub max_name_bytes: usize,
    /// The live worker refuses (dead-letters, `timestamp_in_future`) an event whose time is
    /// further than this ahead of its wall clock: one absurd time would otherwise expire every
    /// pending entry of its partition. Replay has no wall clock and does not apply it.
    pub max_future_skew: HumanDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            max_id_bytes: 256,
            max_features: 1000,
            max_string_bytes: 4096,
            max_name_bytes: 256,
            max_future_skew: HumanDuration::from_secs(3_600),
        }
    }
}

/// The feature schema: declared features plus the policy for undeclared ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// Weight space size is 2^hash_bits (plus the intercept). 10..=28.
    pub hash_bits: u32,
    /// Seed of the MurmurHash3 bucket hash. Changing it re-maps every weight.
    pub hash_seed: u32,
    /// What to do with features that are not declared below.
    pub undeclared: Undeclared,
    /// How undeclared numbers are treated with `undeclared = "auto"`.
    pub auto_numeric: NumericFeature,
    /// Declared numeric features, by name.
    pub numeric: BTreeMap<String, NumericFeature>,
    /// Declared categorical features (hashed), by name.
    pub categorical: BTreeMap<String, CategoricalFeature>,
    /// Declared boolean features, by name.
    pub boolean: BTreeMap<String, BooleanFeature>,
    /// Feature crosses: each a pair of declared feature names hashed together.
    pub crosses: Vec<[String; 2]>,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            hash_bits: 20,
            hash_seed: 0,
            undeclared: Undeclared::Auto,
            auto_numeric: NumericFeature {
                transform: Transform::SignedLog1p,
                clip_z: 5.0,
                missing_indicator: true,
                ..NumericFeature::default()
            },
            numeric: BTreeMap::new(),
            categorical: BTreeMap::new(),
            boolean: BTreeMap::new(),
            crosses: Vec::new(),
        }
    }
}

/// Policy for features that the schema does not declare.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Undeclared {
    /// Learn them by type: numbers as `auto_numeric`, strings hashed, booleans 0/1.
    Auto,
    /// Skip them (counted).
    Ignore,
    /// Refuse the event (dead letter `undeclared_feature`).
    Reject,
}

/// A numeric feature: transform, clip, scale, and what to do when it is missing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NumericFeature {
    /// Applied first: `none` or `signed_log1p` (sign(x)·ln(1+|x|), for heavy tails like amounts).
    pub transform: Transform,
    /// Clip range [lo, hi] in raw units, applied before the transform.
    pub clip: Option<[f64; 2]>,
    /// `online` (Welford mean/std of the values seen at scoring time), `fixed`, or `none`.
    pub scaling: Scaling,
    /// Mean for `scaling = "fixed"`.
    pub mean: f64,
    /// Standard deviation for `scaling = "fixed"` (> 0).
    pub std: f64,
    /// After scaling, clip to ±clip_z (0 = no clip).
    pub clip_z: f64,
    /// Missing (absent or null): `mean` imputes the mean (0 after scaling) or `constant`.
    pub missing: MissingNumeric,
    /// Raw value imputed when `missing = "constant"`.
    pub missing_value: f64,
    /// Also emit a 0/1 indicator feature `<name>=<missing>` when the value is missing.
    pub missing_indicator: bool,
}

impl Default for NumericFeature {
    fn default() -> Self {
        Self {
            transform: Transform::None,
            clip: None,
            scaling: Scaling::Online,
            mean: 0.0,
            std: 1.0,
            clip_z: 5.0,
            missing: MissingNumeric::Mean,
            missing_value: 0.0,
            missing_indicator: false,
        }
    }
}

/// Numeric transform applied before scaling.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// The raw value.
    None,
    /// sign(x)·ln(1 + |x|).
    SignedLog1p,
}

/// Numeric scaling.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// Standardize with a running (Welford) mean and standard deviation, updated at scoring time.
    Online,
    /// Standardize with the configured `mean` and `std`.
    Fixed,
    /// Use the (clipped, transformed) value as is.
    None,
}

/// Missing numeric policy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingNumeric {
    /// Impute the current mean (contributes 0 after standardization).
    Mean,
    /// Impute `missing_value`.
    Constant,
}

/// A categorical feature: each value hashed to its own bucket; missing has its own bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CategoricalFeature {
    /// Accept integers and booleans as category text (e.g. merchant codes sent as numbers).
    pub accept_numbers: bool,
}

/// A boolean feature: 1.0 when true, 0.0 when false.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BooleanFeature {
    /// Emit a `<name>=<missing>` indicator when absent or null (otherwise missing counts as false).
    pub missing_indicator: bool,
}

/// Logistic regression and its optimizer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Decision threshold: `decision = score >= threshold`.
    pub threshold: f64,
    /// How many top contributions (w_i·x_i by |value|) each prediction carries; 0 = none.
    pub top_contributions: usize,
    /// `ftrl`, `adagrad` or `sgd`.
    pub optimizer: OptimizerKind,
    /// Weight of positive (label 1) examples in the loss.
    pub positive_weight: f64,
    /// Weight of negative (label 0) examples in the loss.
    pub negative_weight: f64,
    /// Clip the per-example gradient to this L2 norm (0 = off).
    pub gradient_clip: f64,
    /// SGD settings.
    pub sgd: SgdConfig,
    /// AdaGrad settings.
    pub adagrad: AdaGradConfig,
    /// FTRL-Proximal settings.
    pub ftrl: FtrlConfig,
    /// The model version advances by one every this many applied updates (deterministic, so
    /// replay and the worker agree on versions for the same logs).
    pub version_every_updates: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            top_contributions: 3,
            optimizer: OptimizerKind::Ftrl,
            positive_weight: 1.0,
            negative_weight: 1.0,
            gradient_clip: 0.0,
            sgd: SgdConfig::default(),
            adagrad: AdaGradConfig::default(),
            ftrl: FtrlConfig::default(),
            version_every_updates: 10_000,
        }
    }
}

/// Which optimizer learns the weights.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent.
    Sgd,
    /// AdaGrad (per-coordinate rates).
    Adagrad,
    /// FTRL-Proximal (McMahan et al. 2013).
    Ftrl,
}

/// SGD: `w -= eta_t * (g + l2*w)`, then the L1 proximal step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SgdConfig {
    /// Base learning rate eta0.
    pub learning_rate: f64,
    /// `constant` (eta0) or `inverse_scaling` (eta0 / (1 + t)^power_t).
    pub schedule: Schedule,
    /// Exponent for `inverse_scaling`.
    pub power_t: f64,
    /// L1 strength.
    pub l1: f64,
    /// L2 strength.
    pub l2: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            learning_rate: 0.05,
            schedule: Schedule::InverseScaling,
            power_t: 0.5,
            l1: 0.0,
            l2: 1e-6,
        }
    }
}

/// SGD learning-rate schedule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// eta0 at every step.
    Constant,
    /// eta0 / (1 + t)^power_t, t = updates so far.
    InverseScaling,
}

/// AdaGrad: per coordinate `G += g^2; w -= lr * g / (sqrt(G) + eps)`, with L1/L2 like SGD.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdaGradConfig {
    /// Learning rate.
    pub learning_rate: f64,
    /// Added to sqrt(G) for stability.
    pub epsilon: f64,
    /// L1 strength.
    pub l1: f64,
    /// L2 strength.
    pub l2: f64,
}

impl Default for AdaGradConfig {
    fn default() -> Self {
        Self {
            learning_rate: 0.1,
            epsilon: 1e-8,
            l1: 0.0,
            l2: 1e-6,
        }
    }
}

/// FTRL-Proximal per coordinate (McMahan et al. 2013, Algorithm 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FtrlConfig {
    /// alpha: learning-rate scale.
    pub alpha: f64,
    /// beta: learning-rate smoothing.
    pub beta: f64,
    /// L1 strength (sparsity).
    pub l1: f64,
    /// L2 strength.
    pub l2: f64,
}

impl Default for FtrlConfig {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            beta: 1.0,
            l1: 0.1,
            l2: 1.0,
        }
    }
}

/// Progressive metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Size of the sliding window over which AUC is computed exactly.
    pub auc_window: usize,
    /// Number of equal-width bins for the expected calibration error.
    pub calibration_bins: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            auc_window: 10_000,
            calibration_bins: 10,
        }
    }
}

/// Joining delayed labels to what was scored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JoinConfig {
    /// Join window W: a label joins while its entry is pending.
    pub window: HumanDuration,
    /// Grace G: entries expire when the watermark passes event time + W + G.
    pub grace: HumanDuration,
    /// On expiry: `drop` (counted `expired`) or `implicit` (learn `implicit_label`).
    pub on_expiry: OnExpiry,
    /// Label learned for expired entries with `on_expiry = "implicit"`.
    pub implicit_label: u8,
    /// How long a label that arrives before its event waits (in event time) for it.
    pub label_wait: HumanDuration,
    /// Most labels waiting for their event at once; beyond it the oldest is counted `unknown`.
    pub max_waiting_labels: usize,
    /// Wall-clock rule: after this long without events, the watermark follows the wall clock, so
    /// entries still expire when traffic stops (live worker only; replay is pure event time).
    pub idle_after: HumanDuration,
    /// Block cache of the disk-backed join store, in bytes.
    pub cache_bytes: u64,
    /// Pending entries the disk-backed store keeps in memory once their checkpoint has written
    /// them, in bytes for the whole worker (0: none): a label that comes while its entry is
    /// still there joins without a read of the store.
    pub recent_bytes: u64,
    /// How many cuts back the disk store can be rolled back (its undo log), so a worker whose
    /// latest checkpoint is unreadable can restart from the previous one. 0 turns the undo log
    /// off, which roughly doubles the store's write throughput.
    pub rollback_cuts: u64,
    /// With the undo log on, a cut is written in batches of about this many bytes, each with
    /// its before-images (a crash between them is rolled back when the store opens); 0 writes
    /// each cut as one batch. Smaller batches keep the commit's copy of the cut and the
    /// memtables near their configured size, at some throughput (measured in README).
    pub cut_batch_bytes: u64,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            window: HumanDuration::from_secs(7 * 86_400),
            grace: HumanDuration::from_secs(3_600),
            on_expiry: OnExpiry::Drop,
            implicit_label: 0,
            label_wait: HumanDuration::from_secs(600),
            max_waiting_labels: 100_000,
            idle_after: HumanDuration::from_secs(300),
            cache_bytes: 64 << 20,
            recent_bytes: 0,
            rollback_cuts: 1,
            cut_batch_bytes: 0,
        }
    }
}

/// What happens to an entry whose window passed without a label.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// Forget it (counted `expired`).
    Drop,
    /// Learn `implicit_label` for it (counted `implicit`).
    Implicit,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `streamlr=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info,fjall=warn,lsm_tree=warn".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// Dotted key, e.g. `model.ftrl.alpha`.
    pub key: String,
    /// The offending value as written, if there is one.
    pub value: Option<String>,
    /// What is wrong and what would be right.
    pub problem: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {}: {}", self.key, v, self.problem),
            None => write!(f, "{}: {}", self.key, self.problem),
        }
    }
}

/// Configuration errors: reading the file, or a list of problems with keys and values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// File path.
        path: String,
        /// Parser message with line and column.
        message: String,
    },
    /// Keys or values that are wrong.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl Config {
    /// Loads defaults, then the file (if any), then `STREAMLR__*` variables from `env`, and
    /// validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Some((path.display().to_string(), text))
            }
            None => None,
        };
        Self::from_sources(file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())), env)
    }

    /// [`Self::load`] with the file's text already read: `file` is (name for messages, TOML).
    pub fn from_sources(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut merged = toml::Value::try_from(Config::default()).map_err(|e| {
            ConfigError::Invalid(vec![ConfigProblem {
                key: "<defaults>".into(),
                value: None,
                problem: e.to_string(),
            }])
        })?;
        if let Some((path, text)) = file {
            let file: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.to_string(),
                        message: e.to_string(),
                    })?;
            merge(&mut merged, toml::Value::Table(file));
        }
        let mut problems = Vec::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path.iter().any(String::is_empty) {
                problems.push(ConfigProblem {
                    key: name.clone(),
                    value: Some(raw),
                    problem: "malformed variable name (use STREAMLR__SECTION__KEY)".into(),
                });
                continue;
            }
            let mut overlay = parse_env_value(&raw);
            for part in path.iter().rev() {
                let mut t = toml::Table::new();
                t.insert(part.clone(), overlay);
                overlay = toml::Value::Table(t);
            }
            merge(&mut merged, overlay);
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let config: Config = serde_path_to_error::deserialize(merged.clone()).map_err(|e| {
            let key = e.path().to_string();
            let value = lookup(&merged, &key).map(|v| v.to_string());
            ConfigError::Invalid(vec![ConfigProblem {
                key,
                value,
                problem: e.inner().to_string(),
            }])
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Checks ranges and cross-references; every problem names its key and value.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, value: String, problem: &str| {
            p.push(ConfigProblem {
                key: key.into(),
                value: Some(value),
                problem: problem.into(),
            })
        };
        let f = &self.features;
        if !(10..=28).contains(&f.hash_bits) {
            bad(
                "features.hash_bits",
                f.hash_bits.to_string(),
                "must be between 10 and 28",
            );
        }
        let mut numeric: Vec<(String, &NumericFeature)> = f
            .numeric
            .iter()
            .map(|(k, v)| (format!("features.numeric.{k}"), v))
            .collect();
        numeric.push(("features.auto_numeric".into(), &f.auto_numeric));
        for (key, n) in numeric {
            if let Some([lo, hi]) = n.clip
                && !(lo.is_finite() && hi.is_finite() && lo < hi)
            {
                bad(
                    &format!("{key}.clip"),
                    format!("[{lo}, {hi}]"),
                    "need finite lo < hi",
                );
            }
            if n.scaling == Scaling::Fixed && !(n.std.is_finite() && n.std > 0.0) {
                bad(
                    &format!("{key}.std"),
                    n.std.to_string(),
                    "fixed scaling needs std > 0",
                );
            }
            if !n.mean.is_finite() {
                bad(&format!("{key}.mean"), n.mean.to_string(), "must be finite");
            }
            if !(n.clip_z.is_finite() && n.clip_z >= 0.0) {
                bad(
                    &format!("{key}.clip_z"),
                    n.clip_z.to_string(),
                    "must be >= 0 (0 = off)",
                );
            }
            if !n.missing_value.is_finite() {
                bad(
                    &format!("{key}.missing_value"),
                    n.missing_value.to_string(),
                    "must be finite",
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in f
            .numeric
            .keys()
            .chain(f.categorical.keys())
            .chain(f.boolean.keys())
        {
            if !seen.insert(name) {
                bad(
                    &format!("features.*.{name}"),
                    name.clone(),
                    "declared under two types",
                );
            }
        }
        for (i, [a, b]) in f.crosses.iter().enumerate() {
            for side in [a, b] {
                if !seen.contains(side) {
                    bad(
                        &format!("features.crosses[{i}]"),
                        format!("{side:?}"),
                        "crosses may only name declared features",
                    );
                }
            }
        }
        let m = &self.model;
        if !(m.threshold >= 0.0 && m.threshold <= 1.0) {
            bad(
                "model.threshold",
                m.threshold.to_string(),
                "must be in [0, 1]",
            );
        }
        for (key, v) in [
            ("model.positive_weight", m.positive_weight),
            ("model.negative_weight", m.negative_weight),
            ("model.gradient_clip", m.gradient_clip),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bad(key, v.to_string(), "must be finite and >= 0");
            }
        }
        let positive = [
            ("model.sgd.learning_rate", m.sgd.learning_rate),
            ("model.adagrad.learning_rate", m.adagrad.learning_rate),
            ("model.adagrad.epsilon", m.adagrad.epsilon),
            ("model.ftrl.alpha", m.ftrl.alpha),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                bad(key, v.to_string(), "must be finite and > 0");
            }
        }
        let non_negative = [
            ("model.sgd.power_t", m.sgd.power_t),
            ("model.sgd.l1", m.sgd.l1),
            ("model.sgd.l2", m.sgd.l2),
            ("model.adagrad.l1", m.adagrad.l1),
            ("model.adagrad.l2", m.adagrad.l2),
            ("model.ftrl.beta", m.ftrl.beta),
            ("model.ftrl.l1", m.ftrl.l1),
            ("model.ftrl.l2", m.ftrl.l2),
        ];
        for (key, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                bad(key, v.to_string(), "must be finite and >= 0");
            }
        }
        if m.version_every_updates == 0 {
            bad("model.version_every_updates", "0".into(), "must be >= 1");
        }
        if self.metrics.auc_window < 2 {
            bad(
                "metrics.auc_window",
                self.metrics.auc_window.to_string(),
                "must be >= 2",
            );
        }
        if !(1..=1000).contains(&self.metrics.calibration_bins) {
            bad(
                "metrics.calibration_bins",
                self.metrics.calibration_bins.to_string(),
                "must be 1..=1000",
            );
        }
        if self.join.implicit_label > 1 {
            bad(
                "join.implicit_label",
                self.join.implicit_label.to_string(),
                "must be 0 or 1",
            );
        }
        if self.checkpoint.keep == 0 {
            bad("checkpoint.keep", "0".into(), "must be >= 1");
        }
        if self.checkpoint.dir.trim().is_empty() {
            bad("checkpoint.dir", "\"\"".into(), "must not be empty");
        }
        let g = &self.guard;
        if !(g.max_weight_change >= 0.0 && g.max_weight_change.is_finite()) {
            bad(
                "guard.max_weight_change",
                g.max_weight_change.to_string(),
                "must be a finite number >= 0 (0 = off)",
            );
        }
        if !(g.loss_spike_factor == 0.0
            || g.loss_spike_factor > 1.0 && g.loss_spike_factor.is_finite())
        {
            bad(
                "guard.loss_spike_factor",
                g.loss_spike_factor.to_string(),
                "must be 0 (off) or a finite number > 1",
            );
        }
        if g.loss_spike_window == 0 {
            bad("guard.loss_spike_window", "0".into(), "must be >= 1");
        }
        if g.loss_spike_max_windows == 0 {
            bad("guard.loss_spike_max_windows", "0".into(), "must be >= 1");
        }
        if g.label_rate_limit > 0 && self.input.label_entity_field.is_empty() {
            bad(
                "guard.label_rate_limit",
                g.label_rate_limit.to_string(),
                "needs input.label_entity_field: the label field that names the entity",
            );
        }
        if g.label_rate_window.0.is_zero() {
            bad(
                "guard.label_rate_window",
                format!("{:?}", g.label_rate_window.0),
                "must be > 0",
            );
        }
        let d = &self.drift;
        for (key, v) in [
            ("drift.reference_events", d.reference_events),
            ("drift.window_events", d.window_events),
        ] {
            if v < 100 {
                bad(key, v.to_string(), "must be >= 100");
            }
        }
        if d.evaluate_every > d.window_events {
            bad(
                "drift.evaluate_every",
                d.evaluate_every.to_string(),
                "must be <= drift.window_events (0 = tumbling)",
            );
        }
        if d.sample_every == 0 {
            bad(
                "drift.sample_every",
                "0".into(),
                "must be >= 1 (1 = every event)",
            );
        }
        if !(2..=100).contains(&d.bins) {
            bad("drift.bins", d.bins.to_string(), "must be in 2..=100");
        }
        if d.top_k == 0 {
            bad("drift.top_k", "0".into(), "must be >= 1");
        }
        if !(d.epsilon > 0.0 && d.epsilon < 0.01) {
            bad(
                "drift.epsilon",
                d.epsilon.to_string(),
                "must be in (0, 0.01)",
            );
        }
        if !(d.psi_warn > 0.0 && d.psi_warn <= d.psi_alert && d.psi_alert.is_finite()) {
            bad(
                "drift.psi_warn",
                format!("{} (psi_alert {})", d.psi_warn, d.psi_alert),
                "need 0 < psi_warn <= psi_alert",
            );
        }
        if !(d.ks_p_alert > 0.0 && d.ks_p_alert < 1.0) {
            bad(
                "drift.ks_p_alert",
                d.ks_p_alert.to_string(),
                "must be in (0, 1)",
            );
        }
        if self.checkpoint.every_updates == 0 {
            bad("checkpoint.every_updates", "0".into(), "must be >= 1");
        }
        if self.checkpoint.every_records == 0 {
            bad("checkpoint.every_records", "0".into(), "must be >= 1");
        }
        if self.checkpoint.every.0.is_zero() {
            bad("checkpoint.every", "0s".into(), "must be > 0");
        }
        let k = &self.kafka;
        for (key, v) in [
            ("kafka.brokers", &k.brokers),
            ("kafka.group_id", &k.group_id),
            ("kafka.events_topic", &k.events_topic),
            ("kafka.labels_topic", &k.labels_topic),
            ("kafka.predictions_topic", &k.predictions_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ] {
            if v.trim().is_empty() {
                bad(key, "\"\"".into(), "must not be empty");
            }
        }
        if k.events_topic == k.labels_topic {
            bad(
                "kafka.labels_topic",
                format!("{:?}", k.labels_topic),
                "must differ from kafka.events_topic",
            );
        }
        if k.buffer_records == 0 {
            bad("kafka.buffer_records", "0".into(), "must be >= 1");
        }
        for (table, props) in [
            ("client", &k.client),
            ("consumer", &k.consumer),
            ("producer", &k.producer),
        ] {
            for (key, v) in props {
                if KAFKA_OWNED_PROPERTIES.contains(&key.as_str()) {
                    bad(
                        &format!("kafka.{table}.\"{key}\""),
                        v.clone(),
                        "is set by the worker (its delivery guarantees depend on it); use the kafka.* keys",
                    );
                }
            }
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.max_id_bytes", l.max_id_bytes),
            ("limits.max_features", l.max_features),
            ("limits.max_string_bytes", l.max_string_bytes),
            ("limits.max_name_bytes", l.max_name_bytes),
        ] {
            if v == 0 {
                bad(key, v.to_string(), "must be > 0");
            }
        }
        p
    }

    /// The effective configuration as TOML, with secret-looking values redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut v = toml::Value::try_from(self).unwrap_or(toml::Value::Table(toml::Table::new()));
        redact(&mut v);
        toml::to_string_pretty(&v).unwrap_or_default()
    }

    /// A digest of everything that decides how an event becomes a feature vector (schema, hash
    /// bits and seed, input field names). A model is only valid with the schema it was trained on.
    pub fn schema_digest(&self) -> String {
        let text = serde_json::to_string(&(&self.features, &self.input)).unwrap_or_default();
        let a = crate::hash::murmur3_32(text.as_bytes(), 0x5eed_0001);
        let b = crate::hash::murmur3_32(text.as_bytes(), 0x5eed_0002);
        format!("{a:08x}{b:08x}")
    }
}

/// Words that mark a key as secret (librdkafka `sasl.password`, `ssl.key.password`, tokens).
const SECRET_MARKERS: [&str; 5] = ["password", "secret", "token", "jaas", "hmac"];

fn redact(v: &mut toml::Value) {
    if let toml::Value::Table(t) = v {
        for (k, val) in t.iter_mut() {
            let lower = k.to_ascii_lowercase();
            if SECRET_MARKERS.iter().any(|m| lower.contains(m))
                && !matches!(val, toml::Value::Table(_))
            {
                *val = toml::Value::String("<redacted>".into());
            } else {
                redact(val);
            }
        }
    }
}

/// Environment values are TOML scalars or arrays when they parse as such, otherwise strings.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn lookup<'a>(v: &'a toml::Value, dotted: &str) -> Option<&'a toml::Value> {
    let mut cur = v;
    for part in dotted.split('.') {
        if part == "?" || part.is_empty() {
            return None;
        }
        let (name, index) = match part.find('[') {
            Some(i) => (
                &part[..i],
                part[i + 1..].trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (part, None),
        };
        cur = cur.get(name)?;
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(
            Config::load(None, env(&[])).expect("defaults"),
            Config::default()
        );
    }

    #[test]
    fn layers_file_then_env() {
        let f = file("[model]\nthreshold = 0.7\noptimizer = \"sgd\"\n[join]\nwindow = \"2d\"\n");
        let c = Config::load(
            Some(f.path()),
            env(&[("STREAMLR__MODEL__THRESHOLD", "0.9"), ("OTHER", "x")]),
        )
        .expect("load");
        assert_eq!(c.model.threshold, 0.9);
        assert_eq!(c.model.optimizer, OptimizerKind::Sgd);
        assert_eq!(c.join.window, HumanDuration::from_secs(2 * 86_400));
        let c =
            Config::load(Some(f.path()), env(&[("STREAMLR__JOIN__WINDOW", "3h")])).expect("load");
        assert_eq!(c.join.window, HumanDuration::from_secs(3 * 3600));
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = file("[model]\nthreshhold = 0.7\n");
        let e = Config::load(Some(f.path()), env(&[]))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("model") && e.contains("threshhold"), "{e}");
        let e = Config::load(None, env(&[("STREAMLR__MODLE__THRESHOLD", "0.7")]))
            .expect_err("unknown section")
            .to_string();
        assert!(e.contains("modle"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let f = file("[model.ftrl]\nalpha = \"fast\"\n");
        let e = Config::load(Some(f.path()), env(&[]))
            .expect_err("type")
            .to_string();
        assert!(e.contains("model.ftrl.alpha") && e.contains("fast"), "{e}");
        let e = Config::load(None, env(&[("STREAMLR__MODEL__THRESHOLD", "1.5")]))
            .expect_err("range")
            .to_string();
        assert!(e.contains("model.threshold = 1.5"), "{e}");
        let e = Config::load(None, env(&[("STREAMLR__JOIN__WINDOW", "7 parsecs")]))
            .expect_err("duration")
            .to_string();
        assert!(e.contains("join.window") && e.contains("7 parsecs"), "{e}");
        let f = file("[features]\ncrosses = [[\"a\", \"b\"]]\n");
        let e = Config::load(Some(f.path()), env(&[]))
            .expect_err("cross")
            .to_string();
        assert!(
            e.contains("features.crosses[0]") && e.contains("\"a\""),
            "{e}"
        );
    }

    #[test]
    fn shipped_example_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/streamlr.toml");
        let c = Config::load(Some(&path), env(&[])).expect("configs/streamlr.toml loads");
        assert_eq!(c.model.optimizer, OptimizerKind::Ftrl);
        // Every key of the built-in defaults is written out in the example.
        let text = std::fs::read_to_string(&path).expect("read");
        let file: toml::Table = text.parse().expect("toml");
        let defaults = toml::Value::try_from(Config::default()).expect("defaults");
        let mut missing = Vec::new();
        fn walk(d: &toml::Value, f: Option<&toml::Value>, at: &str, missing: &mut Vec<String>) {
            if let toml::Value::Table(t) = d {
                for (k, v) in t {
                    let key = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    let sub = f.and_then(|f| f.get(k));
                    if sub.is_none() {
                        missing.push(key.clone());
                    }
                    walk(v, sub, &key, missing);
                }
            }
        }
        walk(&defaults, Some(&toml::Value::Table(file)), "", &mut missing);
        assert!(
            missing.is_empty(),
            "keys missing from configs/streamlr.toml: {missing:?}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let mut v: toml::Value = "[kafka]\n\"sasl.password\" = \"hunter2\"\nbrokers = \"b:9092\"\n"
            .parse::<toml::Table>()
            .map(toml::Value::Table)
            .expect("toml");
        redact(&mut v);
        let s = v.to_string();
        assert!(!s.contains("hunter2") && s.contains("b:9092"), "{s}");
        // The checkpoint HMAC key, from the environment, is redacted in check-config's output.
        let c = Config::load(
            None,
            [(
                "STREAMLR__CHECKPOINT__HMAC_KEY".to_string(),
                "sw0rdf1sh".to_string(),
            )],
        )
        .expect("config");
        assert_eq!(c.checkpoint.hmac_key, "sw0rdf1sh");
        let shown = c.to_redacted_toml();
        assert!(
            !shown.contains("sw0rdf1sh") && shown.contains("hmac_key"),
            "{shown}"
        );
    }

    #[test]
    fn kafka_client_passthrough_is_redacted_and_owned_keys_refused() {
        let f = file(
            "[kafka.client]\n\"sasl.password\" = \"hunter2\"\n\"security.protocol\" = \"SASL_SSL\"\n",
        );
        let c = Config::load(Some(f.path()), env(&[])).expect("valid");
        assert_eq!(c.kafka.client["security.protocol"], "SASL_SSL");
        let shown = c.to_redacted_toml();
        assert!(
            !shown.contains("hunter2") && shown.contains("SASL_SSL"),
            "{shown}"
        );

        let f = file("[kafka.client]\n\"enable.auto.commit\" = \"true\"\n");
        let Err(ConfigError::Invalid(p)) = Config::load(Some(f.path()), env(&[])) else {
            panic!("owned property accepted");
        };
        assert_eq!(p[0].key, "kafka.client.\"enable.auto.commit\"");
        assert_eq!(p[0].value.as_deref(), Some("true"));

        // The consumer- and producer-only tables: redacted the same way, owned keys refused.
        let f = file(
            "[kafka.consumer]\n\"fetch.wait.max.ms\" = \"10\"\n\"sasl.password\" = \"hunter3\"\n\
             [kafka.producer]\n\"linger.ms\" = \"20\"\n",
        );
        let c = Config::load(Some(f.path()), env(&[])).expect("valid");
        assert_eq!(c.kafka.consumer["fetch.wait.max.ms"], "10");
        assert_eq!(c.kafka.producer["linger.ms"], "20");
        assert!(!c.to_redacted_toml().contains("hunter3"));
        let f = file("[kafka.producer]\n\"bootstrap.servers\" = \"x:1\"\n");
        let Err(ConfigError::Invalid(p)) = Config::load(Some(f.path()), env(&[])) else {
            panic!("owned property accepted");
        };
        assert_eq!(p[0].key, "kafka.producer.\"bootstrap.servers\"");
    }
}
