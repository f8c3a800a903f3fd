//! Wire types — the event, label and prediction records users produce and consume — and their
//! strict, typed decoding.
//!
//! Decoding never panics on input. Every way a record can be wrong is a distinct [`Reason`]; the
//! worker turns it into a dead-letter record, replay into a count. Decoding borrows strings from
//! the input wherever JSON allows, so the hot path allocates one small vector per event.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::config::{FeaturesFrom, InputConfig, LimitsConfig};

/// Why a record was refused. The snake_case name is the dead-letter `reason` and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The message is larger than `limits.max_message_bytes`.
    TooLarge,
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// The bytes are not JSON (syntax error, truncated, trailing garbage).
    NotJson,
    /// JSON, but not an object.
    NotAnObject,
    /// Nested deeper than the JSON parser allows (128 levels).
    NestingTooDeep,
    /// A number that does not fit a finite f64 (e.g. `1e400`).
    NonFiniteNumber,
    /// A top-level field (id, timestamp, features, label, weight) appears twice.
    DuplicateField,
    /// No id field.
    MissingId,
    /// The id is an empty string.
    EmptyId,
    /// The id is longer than `limits.max_id_bytes`.
    IdTooLong,
    /// The id is neither a string nor an integer.
    InvalidId,
    /// The timestamp is not an integer number of epoch milliseconds.
    InvalidTimestamp,
    /// The nested features object is absent.
    MissingFeatures,
    /// The features field is not an object.
    FeaturesNotObject,
    /// A feature value is not a number, string, boolean or null (or has the wrong type for its
    /// declared kind).
    InvalidFeatureValue,
    /// More than `limits.max_features` features.
    TooManyFeatures,
    /// A feature name longer than `limits.max_name_bytes`.
    NameTooLong,
    /// A string value longer than `limits.max_string_bytes`.
    StringTooLong,
    /// A feature that the schema does not declare, with `features.undeclared = "reject"`.
    UndeclaredFeature,
    /// A label record without its label field.
    MissingLabel,
    /// A label that is not 0/1 or false/true.
    InvalidLabel,
    /// A weight that is not a finite number >= 0.
    InvalidWeight,
    /// An event time further in the future than `limits.max_future_skew` (live worker: against
    /// the wall clock). Such a time would move its partition's watermark past every pending
    /// entry.
    TimestampInFuture,
    /// The label's entity field (`input.label_entity_field`) is not a string, number or null.
    InvalidEntity,
}

impl Reason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [Reason; 24] = [
        Reason::TooLarge,
        Reason::InvalidUtf8,
        Reason::NotJson,
        Reason::NotAnObject,
        Reason::NestingTooDeep,
        Reason::NonFiniteNumber,
        Reason::DuplicateField,
        Reason::MissingId,
        Reason::EmptyId,
        Reason::IdTooLong,
        Reason::InvalidId,
        Reason::InvalidTimestamp,
        Reason::MissingFeatures,
        Reason::FeaturesNotObject,
        Reason::InvalidFeatureValue,
        Reason::TooManyFeatures,
        Reason::NameTooLong,
        Reason::StringTooLong,
        Reason::UndeclaredFeature,
        Reason::MissingLabel,
        Reason::InvalidLabel,
        Reason::InvalidWeight,
        Reason::TimestampInFuture,
        Reason::InvalidEntity,
    ];

    /// The snake_case name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::NotJson => "not_json",
            Reason::NotAnObject => "not_an_object",
            Reason::NestingTooDeep => "nesting_too_deep",
            Reason::NonFiniteNumber => "non_finite_number",
            Reason::DuplicateField => "duplicate_field",
            Reason::MissingId => "missing_id",
            Reason::EmptyId => "empty_id",
            Reason::IdTooLong => "id_too_long",
            Reason::InvalidId => "invalid_id",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::MissingFeatures => "missing_features",
            Reason::FeaturesNotObject => "features_not_object",
            Reason::InvalidFeatureValue => "invalid_feature_value",
            Reason::TooManyFeatures => "too_many_features",
            Reason::NameTooLong => "name_too_long",
            Reason::StringTooLong => "string_too_long",
            Reason::UndeclaredFeature => "undeclared_feature",
            Reason::MissingLabel => "missing_label",
            Reason::InvalidLabel => "invalid_label",
            Reason::InvalidWeight => "invalid_weight",
            Reason::TimestampInFuture => "timestamp_in_future",
            Reason::InvalidEntity => "invalid_entity",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused record: the reason and a human-readable detail (with position where known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    /// The class of problem.
    pub reason: Reason,
    /// What exactly was wrong.
    pub detail: String,
}

impl DecodeError {
    /// A new error.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// A feature value as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue<'a> {
    /// A finite number.
    Number(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// A boolean.
    Bool(bool),
    /// JSON null: the value is missing.
    Null,
}

/// A decoded event, borrowing from the message where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent<'a> {
    /// The join key.
    pub id: Cow<'a, str>,
    /// Event time in epoch milliseconds, if the record carries one.
    pub ts: Option<i64>,
    /// Features in arrival order.
    pub features: Vec<(Cow<'a, str>, FeatureValue<'a>)>,
}

/// A decoded label.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The id of the event it labels.
    pub id: String,
    /// The outcome: true = positive (fraud).
    pub label: bool,
    /// Label time in epoch milliseconds, if the record carries one.
    pub ts: Option<i64>,
    /// Example weight (default 1).
    pub weight: f64,
    /// The entity it is about (`input.label_entity_field`), as [`crate::guard::entity_key`] of
    /// its text; `None` when not configured, absent or null.
    pub entity: Option<u64>,
}

/// One contribution w_i·x_i to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Feature name, with the value for categorical features (`country=DE`).
    pub feature: String,
    /// w_i·x_i (log-odds units).
    pub value: f64,
}

/// What the worker emits for every valid event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The event id.
    pub id: String,
    /// Probability of the positive class.
    pub score: f64,
    /// `score >= threshold`.
    pub decision: bool,
    /// The threshold in force.
    pub threshold: f64,
    /// Version of the model that scored it.
    pub model_version: u64,
    /// Event time, epoch milliseconds.
    pub event_ts: i64,
    /// When it was scored, epoch milliseconds.
    pub scored_at: i64,
    /// Top contributions by absolute value.
    pub contributions: Vec<Contribution>,
}

/// Decodes events and labels according to the configured field names and limits.
#[derive(Debug, Clone)]
pub struct Decoder {
    input: InputConfig,
    limits: LimitsConfig,
}

impl Decoder {
    /// A decoder for the given input layout and limits.
    pub fn new(input: InputConfig, limits: LimitsConfig) -> Self {
        Self { input, limits }
    }

    /// Decodes one event message.
    ///
    /// Flat events (scalars only, strings without escapes, numbers of at most 19 digits) take a
    /// hand-written scanner (`src/scan.rs`); everything else, and every error,
    /// goes through serde_json. Both give the same result: see [`Self::decode_event_with_serde`].
    pub fn decode_event<'a>(&self, bytes: &'a [u8]) -> Result<RawEvent<'a>, DecodeError> {
        let text = self.precheck(bytes)?;
        if let Some(ev) = crate::scan::event(&self.input, &self.limits, text) {
            return Ok(ev);
        }
        self.serde_event(text)
    }

    /// Decodes one event message with serde_json alone: the reference [`Self::decode_event`]
    /// must agree with on every input, value for value and bit for bit (public so that tests and
    /// the fuzz target can compare the two).
    pub fn decode_event_with_serde<'a>(
        &self,
        bytes: &'a [u8],
    ) -> Result<RawEvent<'a>, DecodeError> {
        let text = self.precheck(bytes)?;
        self.serde_event(text)
    }

    fn serde_event<'a>(&self, text: &'a str) -> Result<RawEvent<'a>, DecodeError> {
        let reason = Cell::new(None);
        let seed = EventSeed {
            d: self,
            reason: &reason,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let out = seed
            .deserialize(&mut de)
            .and_then(|ev| de.end().map(|()| ev));
        out.map_err(|e| classify(e, reason.get()))
    }

    /// Decodes one label message, flat labels by the scanner as [`Self::decode_event`] does.
    pub fn decode_label(&self, bytes: &[u8]) -> Result<Label, DecodeError> {
        let text = self.precheck(bytes)?;
        if let Some(l) = crate::scan::label(&self.input, &self.limits, text) {
            return Ok(l);
        }
        self.serde_label(text)
    }

    /// Decodes one label message with serde_json alone: the reference for
    /// [`Self::decode_label`], as [`Self::decode_event_with_serde`] is for events.
    pub fn decode_label_with_serde(&self, bytes: &[u8]) -> Result<Label, DecodeError> {
        let text = self.precheck(bytes)?;
        self.serde_label(text)
    }

    fn serde_label(&self, text: &str) -> Result<Label, DecodeError> {
        let reason = Cell::new(None);
        let seed = LabelSeed {
            d: self,
            reason: &reason,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let out = seed.deserialize(&mut de).and_then(|l| de.end().map(|()| l));
        out.map_err(|e| classify(e, reason.get()))
    }

    fn precheck<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, DecodeError> {
        if bytes.len() > self.limits.max_message_bytes {
            return Err(DecodeError::new(
                Reason::TooLarge,
                format!(
                    "{} bytes > limit {}",
                    bytes.len(),
                    self.limits.max_message_bytes
                ),
            ));
        }
        std::str::from_utf8(bytes).map_err(|e| DecodeError::new(Reason::InvalidUtf8, e.to_string()))
    }
}

fn classify(e: serde_json::Error, reason: Option<Reason>) -> DecodeError {
    let detail = e.to_string();
    let reason = reason.unwrap_or_else(|| {
        if detail.starts_with("number out of range") {
            Reason::NonFiniteNumber
        } else if detail.starts_with("recursion limit exceeded") {
            Reason::NestingTooDeep
        } else {
            Reason::NotJson
        }
    });
    DecodeError { reason, detail }
}

/// Fails the current decode with `reason`; the detail travels in the serde error message.
fn fail<E: de::Error>(cell: &Cell<Option<Reason>>, reason: Reason, detail: impl fmt::Display) -> E {
    cell.set(Some(reason));
    E::custom(detail)
}

/// A string that borrows from the input when it has no escapes.
struct CowStr<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A scalar as it arrives, before it is judged by the field that holds it.
enum Scalar<'de> {
    /// An integer that fits an `i64`.
    Int(i64),
    /// An integer above `i64::MAX` (a variant of its own rather than an `i128` for all: that
    /// made every scalar 16-byte aligned and twice as large to copy; decoding a 30-feature
    /// event took 1.46 µs with it, 1.39 µs without).
    BigUInt(u64),
    Float(f64),
    Str(Cow<'de, str>),
    Bool(bool),
    Null,
    Compound(&'static str),
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, string, boolean or null")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Scalar::BigUInt(v), Scalar::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound("array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound("object"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Int(_) | Scalar::BigUInt(_) | Scalar::Float(_) => "number",
            Scalar::Str(_) => "string",
            Scalar::Bool(_) => "boolean",
            Scalar::Null => "null",
            Scalar::Compound(k) => k,
        }
    }
}

fn id_from<'de, E: de::Error>(
    s: Scalar<'de>,
    field: &str,
    limits: &LimitsConfig,
    cell: &Cell<Option<Reason>>,
) -> Result<Cow<'de, str>, E> {
    let id = match s {
        Scalar::Str(s) => s,
        Scalar::Int(i) => Cow::Owned(i.to_string()),
        Scalar::BigUInt(u) => Cow::Owned(u.to_string()),
        other => {
            return Err(fail(
                cell,
                Reason::InvalidId,
                format_args!("{field:?} is a {}, expected a string", other.kind()),
            ));
        }
    };
    if id.is_empty() {
        return Err(fail(
            cell,
            Reason::EmptyId,
            format_args!("{field:?} is empty"),
        ));
    }
    if id.len() > limits.max_id_bytes {
        return Err(fail(
            cell,
            Reason::IdTooLong,
            format_args!(
                "{field:?} is {} bytes > limit {}",
                id.len(),
                limits.max_id_bytes
            ),
        ));
    }
    Ok(id)
}

fn ts_from<E: de::Error>(
    s: Scalar<'_>,
    field: &str,
    cell: &Cell<Option<Reason>>,
) -> Result<Option<i64>, E> {
    match s {
        Scalar::Null => Ok(None),
        Scalar::Int(i) => Ok(Some(i)),
        Scalar::BigUInt(u) => Err(fail(
            cell,
            Reason::InvalidTimestamp,
            format_args!("{field:?} = {u} is out of range"),
        )),
        other => Err(fail(
            cell,
            Reason::InvalidTimestamp,
            format_args!(
                "{field:?} is a {}, expected integer epoch milliseconds",
                other.kind()
            ),
        )),
    }
}

fn feature_value<'de, E: de::Error>(
    name: &str,
    s: Scalar<'de>,
    limits: &LimitsConfig,
    cell: &Cell<Option<Reason>>,
) -> Result<FeatureValue<'de>, E> {
    Ok(match s {
        Scalar::Int(i) => FeatureValue::Number(i as f64),
        Scalar::BigUInt(u) => FeatureValue::Number(u as f64),
        Scalar::Float(f) if f.is_finite() => FeatureValue::Number(f),
        Scalar::Float(f) => {
            return Err(fail(
                cell,
                Reason::NonFiniteNumber,
                format_args!("feature {name:?} = {f}"),
            ));
        }
        Scalar::Str(s) if s.len() > limits.max_string_bytes => {
            return Err(fail(
                cell,
                Reason::StringTooLong,
                format_args!(
                    "feature {name:?} is {} bytes > limit {}",
                    s.len(),
                    limits.max_string_bytes
                ),
            ));
        }
        Scalar::Str(s) => FeatureValue::Str(s),
        Scalar::Bool(b) => FeatureValue::Bool(b),
        Scalar::Null => FeatureValue::Null,
        Scalar::Compound(kind) => {
            return Err(fail(
                cell,
                Reason::InvalidFeatureValue,
                format_args!(
                    "feature {name:?} is an {kind}, expected number, string, boolean or null"
                ),
            ));
        }
    })
}

struct EventSeed<'c> {
    d: &'c Decoder,
    reason: &'c Cell<Option<Reason>>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = RawEvent<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! not_an_object {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Err(fail(self.reason, Reason::NotAnObject, "expected a JSON object"))
        }
    )*};
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    not_an_object!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(fail(
            self.reason,
            Reason::NotAnObject,
            "expected a JSON object, got null",
        ))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(fail(
            self.reason,
            Reason::NotAnObject,
            "expected a JSON object, got an array",
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let input = &self.d.input;
        let limits = &self.d.limits;
        let cell = self.reason;
        let mut id: Option<Cow<'de, str>> = None;
        let mut ts: Option<Option<i64>> = None;
        let mut features = Vec::with_capacity(32);
        let mut saw_features = false;
        let nested = input.features_from == FeaturesFrom::Nested;
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            if *key == *input.id_field {
                if id.is_some() {
                    return Err(fail(
                        cell,
                        Reason::DuplicateField,
                        format_args!("{key:?} appears twice"),
                    ));
                }
                id = Some(id_from(
                    map.next_value::<Scalar<'de>>()?,
                    &key,
                    limits,
                    cell,
                )?);
            } else if *key == *input.timestamp_field {
                if ts.is_some() {
                    return Err(fail(
                        cell,
                        Reason::DuplicateField,
                        format_args!("{key:?} appears twice"),
                    ));
                }
                ts = Some(ts_from(map.next_value::<Scalar<'de>>()?, &key, cell)?);
            } else if nested {
                if *key == *input.features_field {
                    if saw_features {
                        return Err(fail(
                            cell,
                            Reason::DuplicateField,
                            format_args!("{key:?} appears twice"),
                        ));
                    }
                    saw_features = true;
                    map.next_value_seed(FeaturesSeed {
                        limits,
                        reason: cell,
                        out: &mut features,
                    })?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            } else if input.include.is_empty() || input.include.iter().any(|n| **n == *key) {
                let v = map.next_value::<Scalar<'de>>()?;
                push_feature(&mut features, key, v, limits, cell)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        let Some(id) = id else {
            return Err(fail(
                cell,
                Reason::MissingId,
                format_args!("no {:?} field", input.id_field),
            ));
        };
        if nested && !saw_features {
            return Err(fail(
                cell,
                Reason::MissingFeatures,
                format_args!("no {:?} object", input.features_field),
            ));
        }
        Ok(RawEvent {
            id,
            ts: ts.flatten(),
            features,
        })
    }
}

fn push_feature<'de, E: de::Error>(
    out: &mut Vec<(Cow<'de, str>, FeatureValue<'de>)>,
    name: Cow<'de, str>,
    v: Scalar<'de>,
    limits: &LimitsConfig,
    cell: &Cell<Option<Reason>>,
) -> Result<(), E> {
    if out.len() >= limits.max_features {
        return Err(fail(
            cell,
            Reason::TooManyFeatures,
            format_args!("more than {} features", limits.max_features),
        ));
    }
    if name.len() > limits.max_name_bytes {
        return Err(fail(
            cell,
            Reason::NameTooLong,
            format_args!(
                "feature name of {} bytes > limit {}",
                name.len(),
                limits.max_name_bytes
            ),
        ));
    }
    let value = feature_value(&name, v, limits, cell)?;
    out.push((name, value));
    Ok(())
}

struct FeaturesSeed<'c, 'o, 'de> {
    limits: &'c LimitsConfig,
    reason: &'c Cell<Option<Reason>>,
    out: &'o mut Vec<(Cow<'de, str>, FeatureValue<'de>)>,
}

impl<'de> DeserializeSeed<'de> for FeaturesSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FeaturesSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a features object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            let v = map.next_value::<Scalar<'de>>()?;
            push_feature(self.out, key, v, self.limits, self.reason)?;
        }
        Ok(())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(fail(
            self.reason,
            Reason::FeaturesNotObject,
            "features is an array, expected an object",
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(fail(
            self.reason,
            Reason::FeaturesNotObject,
            "features is null, expected an object",
        ))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(fail(
            self.reason,
            Reason::FeaturesNotObject,
            "features is a boolean, expected an object",
        ))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(fail(
            self.reason,
            Reason::FeaturesNotObject,
            "features is a number, expected an object",
        ))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(fail(
            self.reason,
            Reason::FeaturesNotObject,
            "features is a number, expected an object",
        ))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(fail(
            self.reason,
            Reason::FeaturesNotObject,
            "features is a number, expected an object",
        ))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(fail(
            self.reason,
            Reason::FeaturesNotObject,
            "features is a string, expected an object",
        ))
    }
}

struct LabelSeed<'c> {
    d: &'c Decoder,
    reason: &'c Cell<Option<Reason>>,
}

impl<'de> DeserializeSeed<'de> for LabelSeed<'_> {
    type Value = Label;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Label, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LabelSeed<'_> {
    type Value = Label;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a label object")
    }

    not_an_object!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Label, E> {
        Err(fail(
            self.reason,
            Reason::NotAnObject,
            "expected a JSON object, got null",
        ))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Label, A::Error> {
        Err(fail(
            self.reason,
            Reason::NotAnObject,
            "expected a JSON object, got an array",
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Label, A::Error> {
        let input = &self.d.input;
        let cell = self.reason;
        let mut id = None;
        let mut label = None;
        let mut ts = None;
        let mut weight = None;
        let mut entity = None;
        let entity_field = input.label_entity_field.as_str();
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            let slot = if *key == *input.label_id_field {
                0
            } else if *key == *input.label_field {
                1
            } else if *key == *input.label_timestamp_field {
                2
            } else if *key == *input.label_weight_field {
                3
            } else if !entity_field.is_empty() && *key == *entity_field {
                4
            } else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let seen = [
                id.is_some(),
                label.is_some(),
                ts.is_some(),
                weight.is_some(),
                entity.is_some(),
            ][slot];
            if seen {
                return Err(fail(
                    cell,
                    Reason::DuplicateField,
                    format_args!("{key:?} appears twice"),
                ));
            }
            let v = map.next_value::<Scalar<'de>>()?;
            match slot {
                0 => id = Some(id_from(v, &key, &self.d.limits, cell)?.into_owned()),
                1 => label = Some(label_from(v, &key, cell)?),
                2 => ts = Some(ts_from(v, &key, cell)?),
                3 => weight = Some(weight_from(v, &key, cell)?),
                _ => entity = Some(entity_from(v, &key, cell)?),
            }
        }
        let Some(id) = id else {
            return Err(fail(
                cell,
                Reason::MissingId,
                format_args!("no {:?} field", input.label_id_field),
            ));
        };
        let Some(label) = label else {
            return Err(fail(
                cell,
                Reason::MissingLabel,
                format_args!("no {:?} field", input.label_field),
            ));
        };
        Ok(Label {
            id,
            label,
            ts: ts.flatten(),
            weight: weight.flatten().unwrap_or(1.0),
            entity: entity.flatten(),
        })
    }
}

/// The entity of a label: a string, or a number (by its decimal text; an integral float as the
/// integer), as its [`crate::guard::entity_key`]; null means none.
fn entity_from<E: de::Error>(
    s: Scalar<'_>,
    field: &str,
    cell: &Cell<Option<Reason>>,
) -> Result<Option<u64>, E> {
    let key = |t: &str| Some(crate::guard::entity_key(t.as_bytes()));
    match s {
        Scalar::Null => Ok(None),
        Scalar::Str(s) => Ok(key(&s)),
        Scalar::Int(i) => Ok(key(&i.to_string())),
        Scalar::BigUInt(u) => Ok(key(&u.to_string())),
        Scalar::Float(f)
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 =>
        {
            Ok(key(&(f as i64).to_string()))
        }
        Scalar::Float(f) if f.is_finite() => Ok(key(&f.to_string())),
        other => Err(fail(
            cell,
            Reason::InvalidEntity,
            format_args!(
                "{field:?} is a {}, expected a string, number or null",
                other.kind()
            ),
        )),
    }
}

fn label_from<E: de::Error>(
    s: Scalar<'_>,
    field: &str,
    cell: &Cell<Option<Reason>>,
) -> Result<bool, E> {
    match s {
        Scalar::Bool(b) => Ok(b),
        Scalar::Int(0) => Ok(false),
        Scalar::Int(1) => Ok(true),
        Scalar::Float(0.0) => Ok(false),
        Scalar::Float(1.0) => Ok(true),
        Scalar::Int(i) => Err(fail(
            cell,
            Reason::InvalidLabel,
            format_args!("{field:?} = {i}, expected 0 or 1"),
        )),
        Scalar::BigUInt(u) => Err(fail(
            cell,
            Reason::InvalidLabel,
            format_args!("{field:?} = {u}, expected 0 or 1"),
        )),
        Scalar::Float(f) => Err(fail(
            cell,
            Reason::InvalidLabel,
            format_args!("{field:?} = {f}, expected 0 or 1"),
        )),
        other => Err(fail(
            cell,
            Reason::InvalidLabel,
            format_args!(
                "{field:?} is a {}, expected 0/1 or false/true",
                other.kind()
            ),
        )),
    }
}

fn weight_from<E: de::Error>(
    s: Scalar<'_>,
    field: &str,
    cell: &Cell<Option<Reason>>,
) -> Result<Option<f64>, E> {
    let w = match s {
        Scalar::Null => return Ok(None),
        Scalar::Int(i) => i as f64,
        Scalar::BigUInt(u) => u as f64,
        Scalar::Float(f) => f,
        other => {
            return Err(fail(
                cell,
                Reason::InvalidWeight,
                format_args!("{field:?} is a {}, expected a number", other.kind()),
            ));
        }
    };
    if w.is_finite() && w >= 0.0 {
        Ok(Some(w))
    } else {
        Err(fail(
            cell,
            Reason::InvalidWeight,
            format_args!("{field:?} = {w}, expected a finite number >= 0"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec() -> Decoder {
        Decoder::new(InputConfig::default(), LimitsConfig::default())
    }

    fn reason(bytes: &[u8]) -> Reason {
        dec()
            .decode_event(bytes)
            .expect_err("should be refused")
            .reason
    }

    #[test]
    fn decodes_the_documented_event() {
        let ev = dec()
            .decode_event(br#"{"id": "tx-1", "ts": 1732700000000, "features": {"amount": 12.5, "country": "DE", "new_device": true, "age_days": null}, "extra": [1, {"a": 2}]}"#)
            .expect("valid");
        assert_eq!(ev.id, "tx-1");
        assert_eq!(ev.ts, Some(1_732_700_000_000));
        assert_eq!(
            ev.features,
            vec![
                ("amount".into(), FeatureValue::Number(12.5)),
                ("country".into(), FeatureValue::Str("DE".into())),
                ("new_device".into(), FeatureValue::Bool(true)),
                ("age_days".into(), FeatureValue::Null),
            ]
        );
        assert!(matches!(ev.id, Cow::Borrowed("tx-1")));
        assert!(matches!(
            ev.features[1].1,
            FeatureValue::Str(Cow::Borrowed("DE"))
        ));
    }

    #[test]
    fn integer_ids_and_escaped_strings() {
        let ev = dec()
            .decode_event(br#"{"id": 42, "features": {"c": "a\"b"}}"#)
            .expect("valid");
        assert_eq!(ev.id, "42");
        assert_eq!(ev.ts, None);
        assert_eq!(ev.features[0].1, FeatureValue::Str("a\"b".into()));
    }

    #[test]
    fn integers_beyond_i64_are_numbers_everywhere() {
        let d = dec();
        let ev = d
            .decode_event(
                br#"{"id": 18446744073709551615, "features": {"n": 18446744073709551615, "m": -9223372036854775808}}"#,
            )
            .expect("valid");
        assert_eq!(ev.id, "18446744073709551615");
        assert_eq!(ev.features[0].1, FeatureValue::Number(u64::MAX as f64));
        assert_eq!(ev.features[1].1, FeatureValue::Number(i64::MIN as f64));
        let ev = d
            .decode_event(br#"{"id": "a", "ts": 9223372036854775807, "features": {}}"#)
            .expect("valid");
        assert_eq!(ev.ts, Some(i64::MAX));
        let e = d
            .decode_event(br#"{"id": "a", "ts": 9223372036854775808, "features": {}}"#)
            .expect_err("refused");
        assert_eq!(e.reason, Reason::InvalidTimestamp);
        assert!(e.detail.contains("9223372036854775808"), "{}", e.detail);
        let r = |b: &[u8]| d.decode_label(b).expect_err("refused").reason;
        assert_eq!(
            r(br#"{"id":"a","label":18446744073709551615}"#),
            Reason::InvalidLabel
        );
        let l = d
            .decode_label(br#"{"id":"a","label":1,"weight":18446744073709551615}"#)
            .expect("valid");
        assert_eq!(l.weight, u64::MAX as f64);
    }

    #[test]
    fn every_event_reason() {
        let small = Decoder::new(
            InputConfig::default(),
            LimitsConfig {
                max_message_bytes: 200,
                max_features: 2,
                max_string_bytes: 5,
                max_id_bytes: 8,
                max_name_bytes: 6,
                ..LimitsConfig::default()
            },
        );
        let r = |d: &Decoder, b: &[u8]| d.decode_event(b).expect_err("refused").reason;
        assert_eq!(r(&small, &[b' '; 201]), Reason::TooLarge);
        assert_eq!(reason(b"{\"id\": \"\xff\"}"), Reason::InvalidUtf8);
        assert_eq!(reason(b"{\"id\": "), Reason::NotJson);
        assert_eq!(reason(b"hello"), Reason::NotJson);
        assert_eq!(
            reason(br#"{"id":"a","features":{}} trailing"#),
            Reason::NotJson
        );
        assert_eq!(reason(b"[1,2]"), Reason::NotAnObject);
        assert_eq!(reason(b"\"str\""), Reason::NotAnObject);
        assert_eq!(reason(b"null"), Reason::NotAnObject);
        // Deep nesting never recurses: refused inside features, skipped in an ignored field.
        let deep = |at: &str| format!("{{\"id\":\"a\",\"features\":{{{at}}}}}");
        let nest = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            reason(deep(&format!("\"x\":{nest}")).as_bytes()),
            Reason::InvalidFeatureValue
        );
        let ignored = format!("{{\"id\":\"a\",\"features\":{{}},\"x\":{nest}}}");
        assert!(dec().decode_event(ignored.as_bytes()).is_ok());
        assert_eq!(
            reason(br#"{"id":"a","features":{"x":1e400}}"#),
            Reason::NonFiniteNumber
        );
        assert_eq!(
            reason(br#"{"id":"a","features":{"x":-1e400}}"#),
            Reason::NonFiniteNumber
        );
        assert_eq!(
            reason(br#"{"id":"a","id":"b","features":{}}"#),
            Reason::DuplicateField
        );
        assert_eq!(reason(br#"{"features":{}}"#), Reason::MissingId);
        assert_eq!(reason(br#"{"id":"","features":{}}"#), Reason::EmptyId);
        assert_eq!(
            r(&small, br#"{"id":"123456789","features":{}}"#),
            Reason::IdTooLong
        );
        assert_eq!(reason(br#"{"id":1.5,"features":{}}"#), Reason::InvalidId);
        assert_eq!(reason(br#"{"id":["a"],"features":{}}"#), Reason::InvalidId);
        assert_eq!(
            reason(br#"{"id":"a","ts":"yesterday","features":{}}"#),
            Reason::InvalidTimestamp
        );
        assert_eq!(
            reason(br#"{"id":"a","ts":1.5,"features":{}}"#),
            Reason::InvalidTimestamp
        );
        assert_eq!(reason(br#"{"id":"a"}"#), Reason::MissingFeatures);
        assert_eq!(
            reason(br#"{"id":"a","features":[1]}"#),
            Reason::FeaturesNotObject
        );
        assert_eq!(
            reason(br#"{"id":"a","features":"x"}"#),
            Reason::FeaturesNotObject
        );
        assert_eq!(
            reason(br#"{"id":"a","features":{"x":[1]}}"#),
            Reason::InvalidFeatureValue
        );
        assert_eq!(
            reason(br#"{"id":"a","features":{"x":{"y":1}}}"#),
            Reason::InvalidFeatureValue
        );
        assert_eq!(
            r(&small, br#"{"id":"a","features":{"a":1,"b":2,"c":3}}"#),
            Reason::TooManyFeatures
        );
        assert_eq!(
            r(&small, br#"{"id":"a","features":{"abcdefg":1}}"#),
            Reason::NameTooLong
        );
        assert_eq!(
            r(&small, br#"{"id":"a","features":{"s":"abcdef"}}"#),
            Reason::StringTooLong
        );
    }

    #[test]
    fn errors_carry_detail_with_position() {
        let e = dec()
            .decode_event(br#"{"id":"a","features":{"x":[1]}}"#)
            .expect_err("bad");
        assert!(
            e.detail.contains("\"x\"") && e.detail.contains("column"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn top_level_features_with_custom_names() {
        let input = InputConfig {
            id_field: "txn_id".into(),
            timestamp_field: "event_time".into(),
            features_from: FeaturesFrom::TopLevel,
            ..InputConfig::default()
        };
        let d = Decoder::new(input.clone(), LimitsConfig::default());
        let ev = d
            .decode_event(br#"{"txn_id":"t","event_time":5,"amount":3,"mcc":"5411"}"#)
            .expect("valid");
        assert_eq!(ev.id, "t");
        assert_eq!(ev.ts, Some(5));
        assert_eq!(ev.features.len(), 2);
        let d = Decoder::new(
            InputConfig {
                include: vec!["amount".into()],
                ..input
            },
            LimitsConfig::default(),
        );
        let ev = d
            .decode_event(br#"{"txn_id":"t","amount":3,"mcc":"5411","blob":{"x":1}}"#)
            .expect("valid");
        assert_eq!(
            ev.features,
            vec![("amount".into(), FeatureValue::Number(3.0))]
        );
    }

    #[test]
    fn labels() {
        let d = dec();
        let l = d
            .decode_label(br#"{"id":"tx-1","label":1,"ts":1732790000000,"weight":2.0}"#)
            .expect("valid");
        assert_eq!(
            l,
            Label {
                id: "tx-1".into(),
                label: true,
                ts: Some(1_732_790_000_000),
                weight: 2.0,
                entity: None,
            }
        );
        let l = d
            .decode_label(br#"{"id":"tx-2","label":false}"#)
            .expect("valid");
        assert_eq!((l.label, l.ts, l.weight), (false, None, 1.0));
        let r = |b: &[u8]| d.decode_label(b).expect_err("refused").reason;
        assert_eq!(r(br#"{"id":"a","label":2}"#), Reason::InvalidLabel);
        assert_eq!(r(br#"{"id":"a","label":"yes"}"#), Reason::InvalidLabel);
        assert_eq!(r(br#"{"id":"a","label":0.5}"#), Reason::InvalidLabel);
        assert_eq!(r(br#"{"id":"a"}"#), Reason::MissingLabel);
        assert_eq!(r(br#"{"label":1}"#), Reason::MissingId);
        assert_eq!(
            r(br#"{"id":"a","label":1,"weight":-1}"#),
            Reason::InvalidWeight
        );
        assert_eq!(
            r(br#"{"id":"a","label":1,"weight":"x"}"#),
            Reason::InvalidWeight
        );
        assert_eq!(
            r(br#"{"id":"a","label":1,"label":0}"#),
            Reason::DuplicateField
        );
        assert_eq!(
            r(br#"{"id":"a","label":1,"weight":1e999}"#),
            Reason::NonFiniteNumber
        );
        assert_eq!(r(b"[]"), Reason::NotAnObject);
    }

    #[test]
    fn reason_names_are_unique() {
        let names: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
    }
}
