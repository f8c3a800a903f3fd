//! The feature schema: turns a decoded event into a sparse vector of hashed indices and values.
//!
//! Every feature lands in a weight bucket `murmur3_32(key, seed) mod 2^bits`, where the key is:
//! - numeric and boolean features: the UTF-8 name;
//! - categorical features: name ++ 0x1F ++ value (missing: value = a single 0x00 byte);
//! - missing indicators: name ++ 0x1F ++ 0x00 (the same bucket as a missing categorical);
//! - crosses of a and b: le32(h_a) ++ le32(h_b), where h is the full 32-bit hash of each side's
//!   key; the value is the product of the two sides' values (1 for a category).
//!
//! The same [`Encoder`] builds the vector that is scored and, through the join store, the vector
//! that is learned from, so training and scoring cannot disagree. Online scaling statistics are
//! updated at scoring time, in event order, and are part of the snapshot.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::config::{
    FeaturesConfig, MissingNumeric, NumericFeature, Scaling, Transform, Undeclared,
};
use crate::event::{DecodeError, FeatureValue, RawEvent, Reason};
use crate::hash::{Murmur3, murmur3_32};

/// Separator between a feature name and its value in hash keys.
pub const NAME_VALUE_SEP: u8 = 0x1F;
/// The value hashed for a missing feature.
pub const MISSING_VALUE: &[u8] = &[0x00];
/// How a missing value is shown in contribution names.
const MISSING_TEXT: &str = "<missing>";
/// Most distinct auto-learned numeric buckets that get their own scaler.
const MAX_AUTO_SCALERS: usize = 100_000;

/// Where a slot of the encoded vector came from, to name it in contributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The i-th feature of the raw event.
    Raw(u32),
    /// A declared feature that was absent or null: its missing bucket or imputed value.
    Missing(u32),
    /// An undeclared feature that was null.
    RawMissing(u32),
    /// The i-th declared cross.
    Cross(u32),
}

/// A sparse feature vector: parallel bucket indices and values (the intercept is implicit).
///
/// Values are f32: standardized, clipped features need no more than 7 significant digits, and
/// the join store keeps exactly these values, so the vector learned from is the one scored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVec {
    /// Bucket indices in [0, 2^bits).
    pub idx: Vec<u32>,
    /// Values, one per index.
    pub val: Vec<f32>,
}

impl SparseVec {
    /// Removes every slot.
    pub fn clear(&mut self) {
        self.idx.clear();
        self.val.clear();
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    /// Iterates `(index, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.idx.iter().copied().zip(self.val.iter().copied())
    }

    /// Squared L2 norm (in f64).
    pub fn norm_sq(&self) -> f64 {
        self.val.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
    }
}

/// An encoded event: the vector plus where each slot came from.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// The feature vector.
    pub x: SparseVec,
    /// Origin of each slot, parallel to `x`.
    pub origin: Vec<Origin>,
    /// Undeclared features skipped with `undeclared = "ignore"`.
    pub ignored: u32,
}

impl Encoded {
    fn push(&mut self, idx: u32, val: f64, origin: Origin) {
        self.x.idx.push(idx);
        self.x.val.push(val as f32);
        self.origin.push(origin);
    }

    fn clear(&mut self) {
        self.x.clear();
        self.origin.clear();
        self.ignored = 0;
    }

    /// Removes the slots at `positions` (ascending), keeping the others in order.
    fn remove(&mut self, positions: impl Iterator<Item = usize>) {
        let mut positions = positions.peekable();
        let mut kept = 0;
        for k in 0..self.len() {
            if positions.next_if_eq(&k).is_some() {
                continue;
            }
            self.x.idx[kept] = self.x.idx[k];
            self.x.val[kept] = self.x.val[k];
            self.origin[kept] = self.origin[k];
            kept += 1;
        }
        self.x.idx.truncate(kept);
        self.x.val.truncate(kept);
        self.origin.truncate(kept);
    }

    fn len(&self) -> usize {
        self.x.len()
    }
}

/// Welford's running mean and variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Welford {
    /// Values seen.
    pub n: u64,
    /// Running mean.
    pub mean: f64,
    /// Sum of squared deviations.
    pub m2: f64,
}

impl Welford {
    /// Adds a value.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Sample variance (0 with fewer than two values).
    #[inline]
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            self.m2 / (self.n - 1) as f64
        }
    }

    /// Sample standard deviation (0 with fewer than two values).
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }
}

/// Identity hasher for keys that already are hashes.
#[derive(Debug, Default, Clone, Copy)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u32(&mut self, i: u32) {
        // Spread the bits: hashbrown uses the top 7 bits as a tag.
        self.0 = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type HashedMap<V> = HashMap<u32, V, BuildHasherDefault<PreHashed>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Numeric,
    Categorical { accept_numbers: bool },
    Boolean { missing_indicator: bool },
}

#[derive(Debug, Clone)]
struct Declared {
    name: String,
    kind: Kind,
    numeric: NumericFeature,
    /// Full 32-bit hash of the name.
    name_hash: Murmur3,
    name_h32: u32,
    /// Full hash of name ␟ NUL.
    missing_h32: u32,
}

/// Scaling statistics: the only mutable state of the encoder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// One per declared feature, in declaration order (unused for non-numeric ones).
    pub declared: Vec<Welford>,
    /// Auto-learned numeric features, by full name hash, sorted.
    pub auto: Vec<(u32, Welford)>,
}

/// A numeric value of the event being encoded, waiting to be scaled into the slot reserved for
/// it: the raw value, then its scaled value; and the statistics it is scaled with.
#[derive(Debug, Clone, Copy)]
struct Pending {
    slot: u32,
    x: f64,
    stats: Stats,
}

/// Whose statistics scale a numeric value.
#[derive(Debug, Clone, Copy)]
enum Stats {
    Declared(u32),
    Auto(u32),
}

/// Per-event scratch: the cross key and value of each declared feature.
#[derive(Debug, Clone, Copy, Default)]
struct CrossSide {
    key: u32,
    value: f64,
}

/// Turns raw events into sparse vectors according to the schema.
#[derive(Debug, Clone)]
pub struct Encoder {
    cfg: FeaturesConfig,
    mask: u32,
    seed: u32,
    declared: Vec<Declared>,
    by_name: HashedMap<Vec<u32>>,
    crosses: Vec<(u32, u32, String)>,
    declared_stats: Vec<Welford>,
    /// Auto-learned numeric features' statistics by full name hash, in creation order, and
    /// where each hash's are.
    auto_stats: Vec<(u32, Welford)>,
    auto_index: HashedMap<u32>,
    seen: Vec<bool>,
    sides: Vec<CrossSide>,
    /// The name resolved at each feature position of the last events.
    names: Vec<NameSlot>,
    /// The event's numeric values, scaled after its other features are encoded.
    pending: Vec<Pending>,
}

/// What the feature name at one position of an event resolved to. Producers send their fields
/// in the same order event after event, so the name at position i is usually the one resolved
/// there last time: comparing it to the remembered one replaces hashing it and looking it up.
/// The resolution depends on the name and the fixed schema only, so a remembered one never
/// goes stale; a position whose name changed is resolved again and remembered instead.
#[derive(Debug, Clone)]
struct NameSlot {
    name: String,
    /// Hash state after the name (categorical values continue it).
    hash: Murmur3,
    name_h32: u32,
    /// The declared feature of that name.
    decl: Option<u32>,
    /// Where its statistics are when it is an auto-learned numeric feature (set on first use).
    auto: Option<u32>,
}

impl Encoder {
    /// An encoder for a validated feature configuration, with fresh scaling statistics.
    pub fn new(cfg: &FeaturesConfig) -> Self {
        let seed = cfg.hash_seed;
        let mut declared = Vec::new();
        let mut add = |name: &String, kind: Kind, numeric: NumericFeature| {
            let mut h = Murmur3::new(seed);
            h.write(name.as_bytes());
            let mut m = h.clone();
            m.write_u8(NAME_VALUE_SEP);
            m.write(MISSING_VALUE);
            declared.push(Declared {
                name: name.clone(),
                kind,
                numeric,
                name_h32: h.finish(),
                name_hash: h,
                missing_h32: m.finish(),
            });
        };
        for (name, n) in &cfg.numeric {
            add(name, Kind::Numeric, n.clone());
        }
        for (name, c) in &cfg.categorical {
            add(
                name,
                Kind::Categorical {
                    accept_numbers: c.accept_numbers,
                },
                NumericFeature::default(),
            );
        }
        for (name, b) in &cfg.boolean {
            add(
                name,
                Kind::Boolean {
                    missing_indicator: b.missing_indicator,
                },
                NumericFeature::default(),
            );
        }
        let mut by_name: HashedMap<Vec<u32>> = HashedMap::default();
        for (i, d) in declared.iter().enumerate() {
            by_name.entry(d.name_h32).or_default().push(i as u32);
        }
        let pos = |n: &str| declared.iter().position(|d| d.name == n).map(|p| p as u32);
        let crosses = cfg
            .crosses
            .iter()
            .filter_map(|[a, b]| Some((pos(a)?, pos(b)?, format!("{a}&{b}"))))
            .collect();
        let n = declared.len();
        Self {
            cfg: cfg.clone(),
            mask: (1u32 << cfg.hash_bits) - 1,
            seed,
            declared,
            by_name,
            crosses,
            declared_stats: vec![Welford::default(); n],
            auto_stats: Vec::new(),
            auto_index: HashedMap::default(),
            seen: vec![false; n],
            sides: vec![CrossSide::default(); n],
            names: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Number of weight buckets (2^bits).
    pub fn dim(&self) -> usize {
        self.mask as usize + 1
    }

    /// The scaling statistics, for snapshots.
    pub fn scaler_state(&self) -> ScalerState {
        let mut auto = self.auto_stats.clone();
        auto.sort_by_key(|(k, _)| *k);
        ScalerState {
            declared: self.declared_stats.clone(),
            auto,
        }
    }

    /// Restores scaling statistics from a snapshot taken with the same schema.
    pub fn restore_scaler(&mut self, s: &ScalerState) {
        if s.declared.len() == self.declared_stats.len() {
            self.declared_stats.clone_from(&s.declared);
        }
        self.auto_stats.clone_from(&s.auto);
        self.auto_index = (s.auto.iter().enumerate())
            .map(|(k, (h, _))| (*h, k as u32))
            .collect();
        // The positions remember indices into the statistics replaced here.
        self.names.clear();
    }

    /// Encodes `ev` into `out` (cleared first), updating online scaling statistics.
    pub fn encode(&mut self, ev: &RawEvent<'_>, out: &mut Encoded) -> Result<(), DecodeError> {
        out.clear();
        self.pending.clear();
        self.seen.iter_mut().for_each(|s| *s = false);
        for (i, (name, value)) in ev.features.iter().enumerate() {
            let (name_h32, decl) = self.resolve(i, name);
            let i = i as u32;
            match decl {
                Some(d) => self.encode_declared(d, i, name, value, out)?,
                None => match self.cfg.undeclared {
                    Undeclared::Ignore => out.ignored += 1,
                    Undeclared::Reject => {
                        return Err(DecodeError::new(
                            Reason::UndeclaredFeature,
                            format!("feature {name:?} is not declared in [features]"),
                        ));
                    }
                    Undeclared::Auto => self.encode_auto(i, name_h32, value, out),
                },
            }
        }
        self.scale_pending(out);
        for d in 0..self.declared.len() {
            if !self.seen[d] {
                self.encode_missing(d as u32, out);
            }
        }
        for c in 0..self.crosses.len() {
            let (a, b, _) = self.crosses[c];
            let (sa, sb) = (self.sides[a as usize], self.sides[b as usize]);
            let mut key = [0u8; 8];
            key[..4].copy_from_slice(&sa.key.to_le_bytes());
            key[4..].copy_from_slice(&sb.key.to_le_bytes());
            let v = sa.value * sb.value;
            if v != 0.0 {
                out.push(
                    murmur3_32(&key, self.seed) & self.mask,
                    v,
                    Origin::Cross(c as u32),
                );
            }
        }
        Ok(())
    }

    /// The 32-bit hash of `name` and its declared feature, for the name at position `pos` of an
    /// event; afterwards `self.names[pos]` holds its resolution (with the hash state after it).
    #[inline]
    fn resolve(&mut self, pos: usize, name: &str) -> (u32, Option<u32>) {
        if let Some(slot) = self.names.get(pos)
            && same_name(&slot.name, name)
        {
            return (slot.name_h32, slot.decl);
        }
        let mut h = Murmur3::new(self.seed);
        h.write(name.as_bytes());
        let name_h32 = h.finish();
        let decl = self.by_name.get(&name_h32).and_then(|c| {
            c.iter()
                .copied()
                .find(|&d| self.declared[d as usize].name == name)
        });
        if pos >= self.names.len() {
            let blank = NameSlot {
                name: String::new(),
                hash: Murmur3::new(self.seed),
                name_h32: 0,
                decl: None,
                auto: None,
            };
            self.names.resize(pos + 1, blank);
        }
        let slot = &mut self.names[pos];
        slot.name.clear();
        slot.name.push_str(name);
        (slot.hash, slot.name_h32, slot.decl) = (h, name_h32, decl);
        slot.auto = None;
        (name_h32, decl)
    }

    /// Index of the statistics of the auto-learned numeric feature at position `pos` (resolved
    /// to `name_h32`), created on first sight while fewer than [`MAX_AUTO_SCALERS`] exist.
    #[inline]
    fn auto_slot(&mut self, pos: usize, name_h32: u32) -> Option<u32> {
        if let Some(k) = self.names.get(pos).and_then(|s| s.auto) {
            return Some(k);
        }
        let k = match self.auto_index.get(&name_h32) {
            Some(&k) => k,
            None if self.auto_stats.len() < MAX_AUTO_SCALERS => {
                let k = self.auto_stats.len() as u32;
                self.auto_stats.push((name_h32, Welford::default()));
                self.auto_index.insert(name_h32, k);
                k
            }
            None => return None,
        };
        if let Some(slot) = self.names.get_mut(pos) {
            slot.auto = Some(k);
        }
        Some(k)
    }

    /// Reserves the slot of a numeric value, scaled by [`Self::scale_pending`].
    fn defer(&mut self, out: &mut Encoded, bucket: u32, x: f64, stats: Stats, origin: Origin) {
        let slot = out.len() as u32;
        self.pending.push(Pending { slot, x, stats });
        out.push(bucket, 0.0, origin);
    }

    /// Scales the event's numeric values into their slots, in feature order, updating the
    /// statistics as it goes, then removes the slots whose value is exactly 0, as for any
    /// feature whose value is 0. The values are scaled once the event's features are encoded,
    /// so an event refused while encoding updates no statistics.
    fn scale_pending(&mut self, out: &mut Encoded) {
        let mut zeros = false;
        for p in &mut self.pending {
            let (n, stats) = match p.stats {
                Stats::Declared(d) => (
                    &self.declared[d as usize].numeric,
                    &mut self.declared_stats[d as usize],
                ),
                Stats::Auto(k) => (&self.cfg.auto_numeric, &mut self.auto_stats[k as usize].1),
            };
            let x = prepare(n, p.x);
            stats.push(x);
            let z = standardize(n, x, stats.mean, stats.variance());
            if let Stats::Declared(d) = p.stats {
                let key = self.declared[d as usize].name_h32;
                self.sides[d as usize] = CrossSide { key, value: z };
            }
            out.x.val[p.slot as usize] = z as f32;
            p.x = z;
            zeros |= z == 0.0;
        }
        if zeros {
            out.remove(
                (self.pending.iter())
                    .filter(|p| p.x == 0.0)
                    .map(|p| p.slot as usize),
            );
        }
    }

    fn encode_declared(
        &mut self,
        d: u32,
        i: u32,
        name: &str,
        value: &FeatureValue<'_>,
        out: &mut Encoded,
    ) -> Result<(), DecodeError> {
        let du = d as usize;
        self.seen[du] = true;
        let decl = &self.declared[du];
        let wrong = |expected: &str| {
            Err(DecodeError::new(
                Reason::InvalidFeatureValue,
                format!(
                    "feature {name:?} is declared {expected}, got {}",
                    kind_of(value)
                ),
            ))
        };
        match (decl.kind, value) {
            (_, FeatureValue::Null) => {
                self.encode_missing(d, out);
            }
            (Kind::Numeric, FeatureValue::Number(x)) => {
                let bucket = decl.name_h32 & self.mask;
                self.defer(out, bucket, *x, Stats::Declared(d), Origin::Raw(i));
            }
            (Kind::Numeric, _) => return wrong("numeric"),
            (Kind::Categorical { accept_numbers }, v) => {
                let mut h = decl.name_hash.clone();
                h.write_u8(NAME_VALUE_SEP);
                match v {
                    FeatureValue::Str(s) => h.write(s.as_bytes()),
                    FeatureValue::Number(x) if accept_numbers => {
                        h.write(number_text(*x).as_bytes())
                    }
                    FeatureValue::Bool(b) if accept_numbers => {
                        h.write(if *b { b"true" } else { b"false" })
                    }
                    _ => return wrong("categorical"),
                }
                let key = h.finish();
                self.sides[du] = CrossSide { key, value: 1.0 };
                out.push(key & self.mask, 1.0, Origin::Raw(i));
            }
            (Kind::Boolean { .. }, FeatureValue::Bool(b)) => {
                let v = if *b { 1.0 } else { 0.0 };
                self.sides[du] = CrossSide {
                    key: decl.name_h32,
                    value: v,
                };
                if *b {
                    out.push(decl.name_h32 & self.mask, 1.0, Origin::Raw(i));
                }
            }
            (Kind::Boolean { .. }, _) => return wrong("boolean"),
        }
        Ok(())
    }

    fn encode_missing(&mut self, d: u32, out: &mut Encoded) {
        let du = d as usize;
        let decl = &self.declared[du];
        let missing_bucket = decl.missing_h32 & self.mask;
        match decl.kind {
            Kind::Numeric => {
                let n = &decl.numeric;
                let z = match n.missing {
                    MissingNumeric::Mean => 0.0,
                    MissingNumeric::Constant => {
                        let stats = &self.declared_stats[du];
                        let x = prepare(n, n.missing_value);
                        standardize(n, x, stats.mean, stats.variance())
                    }
                };
                self.sides[du] = CrossSide {
                    key: decl.name_h32,
                    value: z,
                };
                if z != 0.0 {
                    out.push(decl.name_h32 & self.mask, z, Origin::Missing(d));
                }
                if n.missing_indicator {
                    out.push(missing_bucket, 1.0, Origin::Missing(d));
                }
            }
            Kind::Categorical { .. } => {
                self.sides[du] = CrossSide {
                    key: decl.missing_h32,
                    value: 1.0,
                };
                out.push(missing_bucket, 1.0, Origin::Missing(d));
            }
            Kind::Boolean { missing_indicator } => {
                self.sides[du] = CrossSide {
                    key: decl.name_h32,
                    value: 0.0,
                };
                if missing_indicator {
                    out.push(missing_bucket, 1.0, Origin::Missing(d));
                }
            }
        }
    }

    /// Encodes the undeclared feature at position `i` (resolved: `self.names[i]`).
    fn encode_auto(&mut self, i: u32, name_h32: u32, value: &FeatureValue<'_>, out: &mut Encoded) {
        match value {
            FeatureValue::Number(x) => {
                let bucket = name_h32 & self.mask;
                match self.auto_slot(i as usize, name_h32) {
                    Some(k) => self.defer(out, bucket, *x, Stats::Auto(k), Origin::Raw(i)),
                    None => {
                        let z = prepare(&self.cfg.auto_numeric, *x);
                        if z != 0.0 {
                            out.push(bucket, z, Origin::Raw(i));
                        }
                    }
                }
            }
            FeatureValue::Str(s) => {
                let mut h = self.names[i as usize].hash.clone();
                h.write_u8(NAME_VALUE_SEP);
                h.write(s.as_bytes());
                out.push(h.finish() & self.mask, 1.0, Origin::Raw(i));
            }
            FeatureValue::Bool(b) => {
                if *b {
                    out.push(name_h32 & self.mask, 1.0, Origin::Raw(i));
                }
            }
            FeatureValue::Null => {
                let mut h = self.names[i as usize].hash.clone();
                h.write_u8(NAME_VALUE_SEP);
                h.write(MISSING_VALUE);
                out.push(h.finish() & self.mask, 1.0, Origin::RawMissing(i));
            }
        }
    }

    /// A readable name for a slot, e.g. `amount`, `country=DE`, `age_days=<missing>`.
    pub fn slot_name(&self, ev: &RawEvent<'_>, origin: Origin) -> String {
        match origin {
            Origin::Raw(i) | Origin::RawMissing(i) => match ev.features.get(i as usize) {
                Some((name, FeatureValue::Str(s))) => format!("{name}={s}"),
                Some((name, FeatureValue::Null)) => format!("{name}={MISSING_TEXT}"),
                Some((name, FeatureValue::Number(x))) => match self.declared_kind(name) {
                    Some(Kind::Categorical { .. }) => format!("{name}={}", number_text(*x)),
                    _ => name.to_string(),
                },
                Some((name, FeatureValue::Bool(b))) => match self.declared_kind(name) {
                    Some(Kind::Categorical { .. }) => format!("{name}={b}"),
                    _ => name.to_string(),
                },
                None => String::new(),
            },
            Origin::Missing(d) => match self.declared.get(d as usize) {
                Some(decl)
                    if decl.kind == Kind::Numeric
                        && decl.numeric.missing == MissingNumeric::Constant =>
                {
                    decl.name.clone()
                }
                Some(decl) => format!("{}={MISSING_TEXT}", decl.name),
                None => String::new(),
            },
            Origin::Cross(c) => self
                .crosses
                .get(c as usize)
                .map(|c| c.2.clone())
                .unwrap_or_default(),
        }
    }

    fn declared_kind(&self, name: &str) -> Option<Kind> {
        self.declared
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.kind)
    }
}

fn kind_of(v: &FeatureValue<'_>) -> &'static str {
    match v {
        FeatureValue::Number(_) => "a number",
        FeatureValue::Str(_) => "a string",
        FeatureValue::Bool(_) => "a boolean",
        FeatureValue::Null => "null",
    }
}

/// Integers print without a fraction so `5411` and `5411.0` are the same category.
fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// `a == b`, for the short names features have without a call to `memcmp`: up to 16 bytes
/// are compared as two words loaded from each end (overlapping when shorter), which together
/// cover every byte; longer names compare as usual.
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let ends = |s: &[u8], w: usize| -> (u64, u64) {
        let word = |at: usize| {
            let mut v = [0u8; 8];
            v[..w].copy_from_slice(&s[at..at + w]);
            u64::from_le_bytes(v)
        };
        (word(0), word(n - w))
    };
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => ends(a, 4) == ends(b, 4),
        8..=16 => ends(a, 8) == ends(b, 8),
        _ => a == b,
    }
}

/// Clip (raw units) then transform.
fn prepare(n: &NumericFeature, x: f64) -> f64 {
    let x = match n.clip {
        Some([lo, hi]) => x.clamp(lo, hi),
        None => x,
    };
    match n.transform {
        Transform::None => x,
        Transform::SignedLog1p => x.signum() * crate::math::ln_1p(x.abs()),
    }
}

/// Standardize a transformed value `x` (with the running `mean` and `var`iance when the scaling
/// is online), then clip to ±clip_z.
#[inline]
fn standardize(n: &NumericFeature, x: f64, mean: f64, var: f64) -> f64 {
    let z = match n.scaling {
        Scaling::None => x,
        Scaling::Fixed => (x - n.mean) / n.std,
        Scaling::Online => {
            let sd = var.sqrt();
            if sd > 0.0 { (x - mean) / sd } else { 0.0 }
        }
    };
    if n.clip_z > 0.0 {
        z.clamp(-n.clip_z, n.clip_z)
    } else {
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BooleanFeature, CategoricalFeature, InputConfig, LimitsConfig};
    use crate::event::Decoder;

    fn cfg() -> FeaturesConfig {
        let mut c = FeaturesConfig {
            hash_bits: 18,
            ..FeaturesConfig::default()
        };
        c.numeric.insert(
            "amount".into(),
            NumericFeature {
                scaling: Scaling::Fixed,
                mean: 10.0,
                std: 2.0,
                clip: Some([0.0, 30.0]),
                clip_z: 0.0,
                missing_indicator: true,
                ..NumericFeature::default()
            },
        );
        c.categorical
            .insert("country".into(), CategoricalFeature::default());
        c.boolean
            .insert("new_device".into(), BooleanFeature::default());
        c.crosses.push(["country".into(), "new_device".into()]);
        c
    }

    fn encode(enc: &mut Encoder, json: &str) -> Result<Encoded, DecodeError> {
        let d = Decoder::new(InputConfig::default(), LimitsConfig::default());
        let ev = d.decode_event(json.as_bytes())?;
        let mut out = Encoded::default();
        enc.encode(&ev, &mut out)?;
        Ok(out)
    }

    fn bucket(key: &[u8], bits: u32) -> u32 {
        murmur3_32(key, 0) & ((1 << bits) - 1)
    }

    /// Golden buckets: if these change, every deployed model's weights are re-mapped.
    /// Reference: python3 -c "import mmh3; print(mmh3.hash(b'country\x1fDE', 0, signed=False) % 2**18)"
    #[test]
    fn golden_buckets() {
        assert_eq!(murmur3_32(b"amount", 0), GOLDEN_AMOUNT);
        assert_eq!(murmur3_32(b"country\x1fDE", 0), GOLDEN_COUNTRY_DE);
        assert_eq!(murmur3_32(b"country\x1f\x00", 0), GOLDEN_COUNTRY_MISSING);
        assert_eq!(murmur3_32(b"country\x1fDE", 7), GOLDEN_COUNTRY_DE_SEED7);
        let mut enc = Encoder::new(&cfg());
        let out = encode(
            &mut enc,
            r#"{"id":"a","features":{"amount":14,"country":"DE","new_device":true}}"#,
        )
        .expect("valid");
        let key_de = murmur3_32(b"country\x1fDE", 0);
        let key_nd = murmur3_32(b"new_device", 0);
        let mut cross = key_de.to_le_bytes().to_vec();
        cross.extend_from_slice(&key_nd.to_le_bytes());
        assert_eq!(
            out.x.idx,
            vec![
                GOLDEN_AMOUNT & 0x3FFFF,
                GOLDEN_COUNTRY_DE & 0x3FFFF,
                bucket(b"new_device", 18),
                bucket(&cross, 18)
            ]
        );
        // amount: (14 - 10) / 2 = 2.
        assert_eq!(out.x.val, vec![2.0, 1.0, 1.0, 1.0]);
    }

    // Computed with Python mmh3 5.3.1: mmh3.hash(key, seed, signed=False).
    const GOLDEN_AMOUNT: u32 = 0x499F_CB7A;
    const GOLDEN_COUNTRY_DE: u32 = 0xB983_A5B3;
    const GOLDEN_COUNTRY_MISSING: u32 = 0x9CCD_548C;
    const GOLDEN_COUNTRY_DE_SEED7: u32 = 0xD47E_4F96;

    #[test]
    fn missing_and_clipping() {
        let mut enc = Encoder::new(&cfg());
        let out = encode(
            &mut enc,
            r#"{"id":"a","features":{"amount":1000,"new_device":null}}"#,
        )
        .expect("valid");
        // amount clipped to 30 → (30-10)/2 = 10; country missing → its own bucket; bool null → 0.
        assert_eq!(out.x.idx[0], GOLDEN_AMOUNT & 0x3FFFF);
        assert_eq!(out.x.val[0], 10.0);
        assert!(out.x.idx.contains(&(GOLDEN_COUNTRY_MISSING & 0x3FFFF)));
        let out = encode(&mut enc, r#"{"id":"a","features":{}}"#).expect("valid");
        // amount missing: mean imputation (0) + indicator; country missing bucket.
        assert_eq!(
            out.x.idx,
            vec![
                bucket(b"amount\x1f\x00", 18),
                GOLDEN_COUNTRY_MISSING & 0x3FFFF
            ]
        );
        assert_eq!(
            enc.slot_name(
                &Decoder::new(InputConfig::default(), LimitsConfig::default())
                    .decode_event(br#"{"id":"a","features":{}}"#)
                    .expect("ok"),
                out.origin[1]
            ),
            "country=<missing>"
        );
    }

    #[test]
    fn declared_type_mismatch_is_refused() {
        let mut enc = Encoder::new(&cfg());
        for bad in [
            r#"{"amount":"12"}"#,
            r#"{"country":5}"#,
            r#"{"new_device":1}"#,
        ] {
            let json = format!(r#"{{"id":"a","features":{bad}}}"#);
            assert_eq!(
                encode(&mut enc, &json).expect_err(bad).reason,
                Reason::InvalidFeatureValue
            );
        }
    }

    #[test]
    fn undeclared_policies() {
        let json =
            r#"{"id":"a","features":{"amount":1,"zzz":"q","flag":true,"n":3.5,"nothing":null}}"#;
        let mut c = cfg();
        c.undeclared = Undeclared::Reject;
        assert_eq!(
            encode(&mut Encoder::new(&c), json)
                .expect_err("reject")
                .reason,
            Reason::UndeclaredFeature
        );
        c.undeclared = Undeclared::Ignore;
        assert_eq!(
            encode(&mut Encoder::new(&c), json).expect("ignore").ignored,
            4
        );
        c.undeclared = Undeclared::Auto;
        let out = encode(&mut Encoder::new(&c), json).expect("auto");
        assert!(out.x.idx.contains(&bucket(b"zzz\x1fq", 18)));
        assert!(out.x.idx.contains(&bucket(b"flag", 18)));
        assert!(out.x.idx.contains(&bucket(b"nothing\x1f\x00", 18)));
    }

    #[test]
    fn online_scaling_matches_closed_form() {
        let mut c = FeaturesConfig {
            hash_bits: 12,
            ..FeaturesConfig::default()
        };
        c.numeric.insert(
            "x".into(),
            NumericFeature {
                clip_z: 0.0,
                ..NumericFeature::default()
            },
        );
        let mut enc = Encoder::new(&c);
        let xs = [3.0, 7.0, 1.0, 9.0, 5.0];
        let mut last = 0.0f32;
        for x in xs {
            let out = encode(&mut enc, &format!(r#"{{"id":"a","features":{{"x":{x}}}}}"#))
                .expect("valid");
            last = out.x.val.first().copied().unwrap_or(0.0);
        }
        // After all five: mean 5, sample std sqrt(10); the last value 5 scales to 0.
        assert_eq!(last, 0.0);
        let s = enc.scaler_state().declared[0];
        assert_eq!(s.mean, 5.0);
        assert!((s.std() - 10f64.sqrt()).abs() < 1e-12);
    }

    /// Events whose features arrive in changing orders and subsets (so the names remembered
    /// per position keep going stale) encode to the same slots and values, and leave the same
    /// statistics, as the same events with their features always in one order.
    #[test]
    fn feature_order_does_not_change_the_encoding() {
        let mut c = cfg();
        c.numeric.insert("amount".into(), NumericFeature::default());
        let (mut shuffled, mut sorted) = (Encoder::new(&c), Encoder::new(&c));
        let mut rng = crate::simulate::Rng::new(7);
        let pool = [
            "amount",
            "country",
            "new_device",
            "a1",
            "a2",
            "s1",
            "b1",
            "n1",
        ];
        for _ in 0..2000 {
            let mut fields: Vec<(&str, String)> = Vec::new();
            for name in pool {
                if rng.uniform() < 0.3 {
                    continue;
                }
                let v = match name {
                    "country" | "s1" => format!("\"v{}\"", rng.below(5)),
                    "new_device" | "b1" => (rng.uniform() < 0.5).to_string(),
                    "n1" => "null".to_string(),
                    _ => format!("{:.3}", rng.normal() * 10.0),
                };
                fields.push((name, v));
            }
            let json = |fields: &[(&str, String)]| {
                let body: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!(r#"{{"id":"a","features":{{{}}}}}"#, body.join(","))
            };
            let canonical = json(&fields);
            for k in (1..fields.len()).rev() {
                fields.swap(k, rng.below(k as u64 + 1) as usize);
            }
            let slots = |out: Encoded| {
                let mut v: Vec<(u32, u32)> =
                    (out.x.iter()).map(|(i, x)| (i, x.to_bits())).collect();
                v.sort_unstable();
                v
            };
            let a = slots(encode(&mut shuffled, &json(&fields)).expect("valid"));
            let b = slots(encode(&mut sorted, &canonical).expect("valid"));
            assert_eq!(a, b, "{canonical}");
        }
        assert_eq!(shuffled.scaler_state(), sorted.scaler_state());
        assert_eq!(shuffled.scaler_state().auto.len(), 2, "a1 and a2");
    }

    /// An event refused while it is encoded (here for its third feature) leaves every scaling
    /// statistic as it was, those of the numeric features before the bad one included.
    #[test]
    fn a_refused_event_updates_no_statistics() {
        let mut c = cfg();
        c.numeric.insert("amount".into(), NumericFeature::default());
        let mut enc = Encoder::new(&c);
        for x in [1.0, 4.0, 2.0] {
            let json = format!(r#"{{"id":"a","features":{{"amount":{x},"a1":{x}}}}}"#);
            encode(&mut enc, &json).expect("valid");
        }
        let before = enc.scaler_state();
        let bad = r#"{"id":"a","features":{"amount":9,"a1":9,"country":5}}"#;
        let err = encode(&mut enc, bad).expect_err("country is categorical");
        assert_eq!(err.reason, Reason::InvalidFeatureValue);
        assert_eq!(enc.scaler_state(), before);
        assert_eq!(before.declared[0].n, 3);
    }

    /// Restoring statistics into an encoder that has already encoded events (a rollback)
    /// gives the encoding a fresh encoder restored from them gives, whatever order the used
    /// encoder first met its features in (the restored statistics are ordered by name hash).
    #[test]
    fn restored_statistics_replace_what_the_encoder_remembered() {
        let c = cfg();
        let ev = |a: f64, b: f64| format!(r#"{{"id":"a","features":{{"a1":{a},"a2":{b}}}}}"#);
        let mut first = Encoder::new(&c);
        for k in 0..5 {
            encode(&mut first, &ev(f64::from(k), f64::from(k * 7))).expect("valid");
        }
        let state = first.scaler_state();
        for alone in ["a1", "a2"] {
            // Met `alone` first, then both at the positions `ev` puts them.
            let mut used = Encoder::new(&c);
            let json = format!(r#"{{"id":"a","features":{{"{alone}":2}}}}"#);
            encode(&mut used, &json).expect("valid");
            for k in 0..5 {
                encode(&mut used, &ev(f64::from(-k), f64::from(k))).expect("valid");
            }
            used.restore_scaler(&state);
            let mut fresh = Encoder::new(&c);
            fresh.restore_scaler(&state);
            let (a, b) = (
                encode(&mut used, &ev(3.0, 3.0)).expect("valid"),
                encode(&mut fresh, &ev(3.0, 3.0)).expect("valid"),
            );
            assert_eq!(a.x, b.x, "{alone} first");
            assert_eq!(used.scaler_state(), fresh.scaler_state(), "{alone} first");
        }
    }

    /// `same_name` agrees with `==` on every pair of short strings that differ in one byte at
    /// any position, and on equal ones (lengths 0 to 20: each of its branches and the fallback).
    #[test]
    fn same_name_is_string_equality() {
        for n in 0..=20usize {
            let a: String = (0..n).map(|k| char::from(b'a' + (k % 26) as u8)).collect();
            assert!(same_name(&a, &a.clone()), "{a}");
            for at in 0..n {
                let mut b = a.clone().into_bytes();
                b[at] = b'Z';
                let b = String::from_utf8(b).expect("ascii");
                assert!(!same_name(&a, &b), "{a} vs {b}");
            }
            assert!(!same_name(&a, &format!("{a}x")), "{a}: lengths differ");
        }
    }
}
