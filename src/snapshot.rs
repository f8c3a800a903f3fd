//! Versioned, checksummed serialization of the learner state (model, optimizer, scaler,
//! metrics, counters).
//!
//! Layout: `b"STRMLRSN"` · format version (u16 LE) · CRC-32 of the payload (u32 LE) · payload
//! length (u64 LE) · payload (postcard). The payload records the schema digest, hash seed and
//! hash bits; a snapshot is refused for a different schema. Weights and optimizer state are
//! stored sparsely (only entries whose bits are not all zero), and f64 values as their exact
//! bits, so a round trip is bit-exact.
//!
//! Format 3 appends the guardrail state after format 2's payload, format 4 the per-entity label
//! counts after that; formats 2 and 3 are still read (with fresh state for what they lack).

use std::borrow::Cow;

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::config::OptimizerKind;
use crate::engine::{Counters, LearnerState, LearnerView};
use crate::features::ScalerState;
use crate::frame::{self, FrameError};
use crate::metrics::Progressive;
use crate::model::Model;
use crate::optim::Optimizer;

const MAGIC: &[u8; 8] = b"STRMLRSN";
/// Current snapshot format version.
pub const FORMAT_VERSION: u16 = 4;
/// Older formats, still read: 2 (no guardrail state), 3 (no per-entity label counts).
const FORMAT_V2: u16 = 2;
const FORMAT_V3: u16 = 3;

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a snapshot, or truncated.
    #[error("not a streamlr snapshot or truncated ({0})")]
    Malformed(&'static str),
    /// Written by a newer or unknown format.
    #[error("snapshot format {0} is not supported (this build reads {FORMAT_VERSION})")]
    Version(u16),
    /// The checksum does not match: the file is corrupt or was altered.
    #[error("checksum mismatch: the snapshot is corrupt or was altered")]
    Checksum,
    /// The payload could not be decoded.
    #[error("snapshot payload does not decode: {0}")]
    Payload(String),
    /// Trained on another feature schema.
    #[error("snapshot schema {found} does not match the configured schema {expected}")]
    Schema {
        /// Digest in the snapshot.
        found: String,
        /// Digest of the configuration.
        expected: String,
    },
}

/// A vector stored as (index, bits) pairs for its non-zero-bit entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseF64 {
    len: u32,
    idx: Vec<u32>,
    bits: Vec<u64>,
}

impl SparseF64 {
    fn from_slice(v: &[f64]) -> Self {
        let (mut idx, mut bits) = (Vec::new(), Vec::new());
        for (i, x) in v.iter().enumerate() {
            if x.to_bits() != 0 {
                idx.push(i as u32);
                bits.push(x.to_bits());
            }
        }
        Self {
            len: v.len() as u32,
            idx,
            bits,
        }
    }

    fn to_vec(&self) -> Result<Vec<f64>, SnapshotError> {
        let mut v = vec![0.0; self.len as usize];
        for (&i, &b) in self.idx.iter().zip(&self.bits) {
            *v.get_mut(i as usize)
                .ok_or(SnapshotError::Malformed("index out of range"))? = f64::from_bits(b);
        }
        Ok(v)
    }
}

/// Identity of the schema a snapshot was trained with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaId {
    /// [`crate::config::Config::schema_digest`].
    pub digest: String,
    /// Hash seed.
    pub hash_seed: u32,
    /// Hash bits.
    pub hash_bits: u32,
}

/// The snapshot's body: borrowed from the engine when encoding (a checkpoint need not copy the
/// state first), owned when decoding; `Cow` serializes as what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payload<'a> {
    schema: Cow<'a, SchemaId>,
    version: u64,
    weights: SparseF64,
    kind: OptimizerKind,
    t: u64,
    acc: SparseF64,
    z: SparseF64,
    scaler: Cow<'a, ScalerState>,
    quality: Cow<'a, Progressive>,
    counters: Cow<'a, Counters>,
    drift: Cow<'a, crate::drift::DriftState>,
}

/// Serializes the learner state.
pub fn encode(schema: &SchemaId, s: &LearnerState) -> Vec<u8> {
    encode_view(schema, &s.view())
}

/// Serializes the learner state without copying it first ([`crate::engine::Engine::learner_view`]:
/// a checkpoint need not clone ~24 MiB of weights and optimizer state to write a few MiB).
pub fn encode_view(schema: &SchemaId, s: &LearnerView<'_>) -> Vec<u8> {
    let payload = Payload {
        schema: Cow::Borrowed(schema),
        version: s.version,
        weights: SparseF64::from_slice(s.model.w.as_slice().unwrap_or(&[])),
        kind: s.optim.kind,
        t: s.optim.t,
        acc: SparseF64::from_slice(&s.optim.acc),
        z: SparseF64::from_slice(&s.optim.z),
        scaler: Cow::Borrowed(&s.scaler),
        quality: Cow::Borrowed(s.quality),
        counters: Cow::Borrowed(s.counters),
        drift: Cow::Borrowed(s.drift),
    };
    let mut body = postcard::to_stdvec(&payload).unwrap_or_default();
    body.extend(postcard::to_stdvec(s.guard).unwrap_or_default());
    body.extend(postcard::to_stdvec(&s.guard.rates).unwrap_or_default());
    frame::seal(MAGIC, FORMAT_VERSION, &body)
}

/// Reads a snapshot, checking magic, format, checksum and (if `expected` is given) schema.
pub fn decode(
    bytes: &[u8],
    expected: Option<&SchemaId>,
) -> Result<(SchemaId, LearnerState), SnapshotError> {
    let (version, body) =
        frame::open(MAGIC, bytes).map_err(|_| SnapshotError::Malformed("bad header"))?;
    if ![FORMAT_V2, FORMAT_V3, FORMAT_VERSION].contains(&version) {
        return Err(SnapshotError::Version(version));
    }
    let body = body.map_err(|e| match e {
        FrameError::Checksum => SnapshotError::Checksum,
        _ => SnapshotError::Malformed("length mismatch"),
    })?;
    let (p, rest): (Payload, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| SnapshotError::Payload(e.to_string()))?;
    let payload_err = |e: postcard::Error| SnapshotError::Payload(e.to_string());
    let (mut guard, rest) = if version == FORMAT_V2 {
        (crate::guard::GuardState::default(), rest)
    } else {
        postcard::take_from_bytes::<crate::guard::GuardState>(rest).map_err(payload_err)?
    };
    let rest = if version == FORMAT_VERSION {
        let (rates, rest) = postcard::take_from_bytes(rest).map_err(payload_err)?;
        guard.rates = rates;
        rest
    } else {
        rest
    };
    if !rest.is_empty() {
        return Err(SnapshotError::Payload("trailing bytes".into()));
    }
    if let Some(exp) = expected
        && *exp != *p.schema
    {
        return Err(SnapshotError::Schema {
            found: p.schema.digest.clone(),
            expected: exp.digest.clone(),
        });
    }
    let w = p.weights.to_vec()?;
    let expected_len = match p.kind {
        OptimizerKind::Sgd => 0,
        _ => w.len(),
    };
    let acc = p.acc.to_vec()?;
    let z = p.z.to_vec()?;
    if acc.len() != expected_len || (p.kind == OptimizerKind::Ftrl && z.len() != w.len()) {
        return Err(SnapshotError::Malformed("optimizer state size"));
    }
    let mut optim = Optimizer::new(p.kind, w.len().saturating_sub(1));
    optim.t = p.t;
    optim.acc = acc;
    optim.z = z;
    let state = LearnerState {
        version: p.version,
        model: Model { w: Array1::from(w) },
        optim,
        scaler: p.scaler.into_owned(),
        quality: p.quality.into_owned(),
        counters: p.counters.into_owned(),
        drift: p.drift.into_owned(),
        guard,
    };
    Ok((p.schema.into_owned(), state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::join::MemoryBackend;
    use proptest::prelude::*;

    fn schema(c: &Config) -> SchemaId {
        SchemaId {
            digest: c.schema_digest(),
            hash_seed: c.features.hash_seed,
            hash_bits: c.features.hash_bits,
        }
    }

    fn trained(
        kind: OptimizerKind,
        events: &[(String, f64, bool)],
    ) -> (Config, Engine<MemoryBackend>) {
        let mut c = Config::default();
        c.features.hash_bits = 12;
        c.model.optimizer = kind;
        let mut e = Engine::new(c.clone(), |_| (MemoryBackend::default(), None));
        for (i, (cat, x, y)) in events.iter().enumerate() {
            let ev =
                serde_json::json!({"id": i.to_string(), "ts": i, "features": {"c": cat, "x": x}});
            let _ = e.on_event(ev.to_string().as_bytes(), 0, 0, 0);
            let l = serde_json::json!({"id": i.to_string(), "label": y});
            let _ = e.on_label(l.to_string().as_bytes(), 0);
        }
        (c, e)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn round_trip_is_bit_exact(
            events in prop::collection::vec(("[a-e]", -1e6f64..1e6, any::<bool>()), 0..60),
            kind in prop::sample::select(vec![OptimizerKind::Sgd, OptimizerKind::Adagrad, OptimizerKind::Ftrl]),
        ) {
            let (c, e) = trained(kind, &events);
            let s = e.learner_state();
            let bytes = encode(&schema(&c), &s);
            // A checkpoint encodes the engine's state borrowed, not copied: the same bytes.
            prop_assert_eq!(&encode_view(&schema(&c), &e.learner_view()), &bytes);
            let (_, back) = decode(&bytes, Some(&schema(&c))).expect("decodes");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(back.model.w.as_slice().unwrap_or(&[])), bits(s.model.w.as_slice().unwrap_or(&[])));
            prop_assert_eq!(bits(&back.optim.acc), bits(&s.optim.acc));
            prop_assert_eq!(bits(&back.optim.z), bits(&s.optim.z));
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(encode(&schema(&c), &back), bytes);
        }
    }

    #[test]
    fn guard_state_round_trips_and_formats_2_and_3_are_still_read() {
        use crate::config::GuardConfig;
        use crate::guard::{EntityRates, GuardState};
        let events: Vec<(String, f64, bool)> = (0..40)
            .map(|i| (format!("c{}", i % 3), f64::from(i), i % 4 == 0))
            .collect();
        let (c, e) = trained(OptimizerKind::Ftrl, &events);
        let mut s = e.learner_state();
        let g = GuardConfig {
            loss_spike_factor: 2.0,
            loss_spike_window: 3,
            loss_spike_min_labels: 3,
            label_rate_limit: 2,
            ..GuardConfig::default()
        };
        for loss in [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 5.0, 5.0, 5.0, 0.3] {
            s.guard.observe(&g, loss);
        }
        s.guard.weight_change = 7;
        s.guard.loss_spike = 3;
        for entity in [1, 2, 2, 3] {
            assert!(s.guard.rates.admit(&g, Some(entity), Some(7_200_000)));
        }
        assert!(s.guard.paused && s.guard != GuardState::default());
        assert_eq!(s.guard.rates.entities(), 3);
        let bytes = encode(&schema(&c), &s);
        let (_, back) = decode(&bytes, Some(&schema(&c))).expect("format 4");
        assert_eq!(back, s);
        assert_eq!(back.guard.rates, s.guard.rates);
        let (_, body) = frame::open(MAGIC, &bytes).expect("frame");
        let body = body.expect("checksum");
        // Format 3 is format 4 without the entity counts at the end.
        let rates_len = postcard::to_stdvec(&s.guard.rates).expect("encode").len();
        let v3 = frame::seal(MAGIC, 3, &body[..body.len() - rates_len]);
        let (_, mut old) = decode(&v3, Some(&schema(&c))).expect("format 3");
        assert_eq!(old.guard.rates, EntityRates::default());
        old.guard.rates = s.guard.rates.clone();
        assert_eq!(old, s);
        // Format 2 is format 3 without the guard state at the end.
        let guard_len = postcard::to_stdvec(&s.guard).expect("encode").len();
        let v2 = frame::seal(MAGIC, 2, &body[..body.len() - rates_len - guard_len]);
        let (_, mut old) = decode(&v2, Some(&schema(&c))).expect("format 2");
        assert_eq!(old.guard, GuardState::default());
        old.guard = s.guard.clone();
        assert_eq!(old, s);
        // An older format with bytes after its payload is refused.
        for version in [2, 3] {
            let long = frame::seal(MAGIC, version, body);
            assert!(matches!(
                decode(&long, None),
                Err(SnapshotError::Payload(_))
            ));
        }
    }

    #[test]
    fn corruption_and_schema_changes_are_refused() {
        let (c, e) = trained(
            OptimizerKind::Ftrl,
            &[("a".into(), 1.0, true), ("b".into(), 2.0, false)],
        );
        let bytes = encode(&schema(&c), &e.learner_state());
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode(&bad, None).map(|_| ()), Err(SnapshotError::Checksum));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3], None),
            Err(SnapshotError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"nope", None),
            Err(SnapshotError::Malformed(_))
        ));
        let mut other = schema(&c);
        other.hash_seed = 9;
        assert!(matches!(
            decode(&bytes, Some(&other)),
            Err(SnapshotError::Schema { .. })
        ));
        let mut other_format = bytes.clone();
        other_format[8] = (FORMAT_VERSION + 1) as u8;
        assert_eq!(
            decode(&other_format, None).map(|_| ()),
            Err(SnapshotError::Version(FORMAT_VERSION + 1))
        );
    }
}
