//! The fast path of decoding: a scanner for the events and labels most producers send — one
//! JSON object of scalars and, in nested mode, one object of scalar features, with strings that
//! have no escapes and numbers of at most 19 digits.
//!
//! [`event`] and [`label`] return `None` for anything else and for anything
//! [`crate::event::Decoder`] would refuse; the decoder then decodes the message with serde_json,
//! which is where every error and every unusual form is handled. So the fast path never decides
//! what is valid: when it returns an event it is the event serde_json's path returns, value for
//! value and bit for bit (the tests below and the `event` and `label` fuzz targets compare the
//! two paths).
//!
//! Numbers are what serde_json reports with its `float_roundtrip` feature (on in this crate): an
//! integer is a `u64` (or its negation), any other number the double nearest to its text — by
//! exact arithmetic where the digits fit in 53 bits and the power of ten is exact, by the
//! standard library's correctly rounded parse otherwise.

use std::borrow::Cow;

use crate::config::{FeaturesFrom, InputConfig, LimitsConfig};
use crate::event::{FeatureValue, Label, RawEvent};

/// 10^0 … 10^22: every one exact in an f64.
const POW10: [f64; 23] = {
    let mut t = [1.0; 23];
    let mut i = 1;
    while i < 23 {
        t[i] = t[i - 1] * 10.0;
        i += 1;
    }
    t
};

/// One scalar as serde_json's deserializer would report it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Str(&'a str),
    /// A non-negative integer (`visit_u64`).
    UInt(u64),
    /// `-n` for an integer n; serde_json reports it as `visit_i64(-n)`, or as `visit_f64` for
    /// `-0` and n > 2^63.
    NegInt(u64),
    Float(f64),
    Bool(bool),
    Null,
}

/// The scanner's position in a message.
struct Scan<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    /// Skips JSON whitespace; the next byte, not consumed (`None` at the end).
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    /// Consumes `c` (after whitespace), or gives up.
    #[inline]
    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string without escapes or control characters; the caller has seen its opening quote at
    /// the position.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let start = self.i + 1;
        let mut k = start;
        // Eight bytes at a time to the first quote, backslash or control character: the lowest
        // flagged byte of `(v - ONES) & !v & HIGH` is exactly the lowest zero byte of v.
        while let Some(chunk) = self.b.get(k..k + 8) {
            let w = u64::from_le_bytes(chunk.try_into().ok()?);
            let quote = w ^ (ONES * u64::from(b'"'));
            let backslash = w ^ (ONES * u64::from(b'\\'));
            let flagged = ((quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash)
                | (w.wrapping_sub(ONES * 0x20) & !w))
                & HIGH;
            if flagged != 0 {
                k += (flagged.trailing_zeros() / 8) as usize;
                break;
            }
            k += 8;
        }
        for (n, &c) in self.b.get(k..)?.iter().enumerate() {
            if c == b'"' {
                self.i = k + n + 1;
                // Both ends are next to an ASCII quote, so on character boundaries (checked all
                // the same, by two splits that inline where `str::get` is a call).
                let (upto, _) = self.s.split_at_checked(k + n)?;
                return upto.split_at_checked(start).map(|(_, text)| text);
            }
            if c == b'\\' || c < 0x20 {
                return None;
            }
        }
        None
    }

    /// A number, in serde_json's grammar and with its value; `None` where serde_json would err,
    /// and where the scanner leaves it to serde_json (more than 19 digits, more than four
    /// exponent digits).
    #[inline(always)]
    fn number(&mut self) -> Option<Tok<'a>> {
        let b = self.b;
        let begin = self.i;
        let mut i = begin;
        let positive = *b.get(i)? != b'-';
        if !positive {
            i += 1;
        }
        // Digits accumulate without overflow checks; more than 19 of them (where a u64 could
        // overflow) are left to serde_json.
        let digits_start = i;
        let mut sig: u64 = match b.get(i) {
            Some(b'0') => {
                i += 1;
                if matches!(b.get(i), Some(b'0'..=b'9')) {
                    return None;
                }
                0
            }
            Some(&c @ b'1'..=b'9') => {
                i += 1;
                u64::from(c - b'0')
            }
            _ => return None,
        };
        while let Some(&c @ b'0'..=b'9') = b.get(i) {
            sig = sig.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            i += 1;
        }
        let mut digits = i - digits_start;
        let mut exp: i32 = 0;
        let mut float = false;
        if b.get(i) == Some(&b'.') {
            i += 1;
            float = true;
            let start = i;
            while let Some(&c @ b'0'..=b'9') = b.get(i) {
                sig = sig.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                i += 1;
            }
            if i == start {
                return None;
            }
            digits += i - start;
            exp = -i32::try_from(i - start).ok()?;
        }
        if digits > 19 {
            return None;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            float = true;
            let positive_exp = match b.get(i) {
                Some(b'+') => {
                    i += 1;
                    true
                }
                Some(b'-') => {
                    i += 1;
                    false
                }
                _ => true,
            };
            let start = i;
            let mut e: i32 = 0;
            while let Some(&c @ b'0'..=b'9') = b.get(i) {
                if i - start == 4 {
                    return None;
                }
                e = e * 10 + i32::from(c - b'0');
                i += 1;
            }
            if i == start {
                return None;
            }
            exp = if positive_exp { exp + e } else { exp - e };
        }
        self.i = i;
        if !float {
            return Some(if positive {
                Tok::UInt(sig)
            } else {
                Tok::NegInt(sig)
            });
        }
        // The nearest double, as serde_json's `float_roundtrip` parse gives it. Digits that fit
        // in 53 bits times or divided by an exact power of ten round once, so the arithmetic is
        // exact (Clinger's fast path); the rest is the standard library's correctly rounded
        // parse of the same text.
        let f = match POW10.get(exp.unsigned_abs() as usize) {
            Some(&pow) if sig <= 1 << 53 => {
                // `sig` fits an i64: one conversion instruction (a u64 takes a sequence).
                let sig = i64::try_from(sig).ok()? as f64;
                let f = if exp >= 0 { sig * pow } else { sig / pow };
                if positive { f } else { -f }
            }
            _ => self.s.get(begin..i)?.parse::<f64>().ok()?,
        };
        f.is_finite().then_some(Tok::Float(f))
    }

    /// A scalar value; `None` for objects, arrays and anything serde_json would refuse.
    #[inline(always)]
    fn scalar(&mut self) -> Option<Tok<'a>> {
        let c = self.peek()?;
        let literal = |sc: &mut Self, text: &[u8], tok: Tok<'a>| {
            let end = sc.i + text.len();
            (sc.b.get(sc.i..end)? == text).then(|| {
                sc.i = end;
                tok
            })
        };
        match c {
            b'"' => self.string().map(Tok::Str),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => literal(self, b"true", Tok::Bool(true)),
            b'f' => literal(self, b"false", Tok::Bool(false)),
            b'n' => literal(self, b"null", Tok::Null),
            _ => None,
        }
    }

    /// The members of an object whose `{` is next: for each, `member` is called with the key,
    /// the position after the colon.
    #[inline]
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.expect(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Appends one feature as the decoder's `push_feature` would, or gives up where it would refuse.
#[inline(always)]
fn push<'a>(
    out: &mut Vec<(Cow<'a, str>, FeatureValue<'a>)>,
    name: &'a str,
    tok: Tok<'a>,
    limits: &LimitsConfig,
) -> Option<()> {
    if out.len() >= limits.max_features || name.len() > limits.max_name_bytes {
        return None;
    }
    // Room first, then a check the optimizer can see: with `len < capacity` known, the push
    // below cannot reallocate and writes the element in place. A push that might reallocate
    // builds the element on the stack and copies it (8-byte stores read back as 16-byte loads:
    // a store-forwarding stall per feature).
    if out.len() == out.capacity() {
        out.reserve(8);
    }
    if out.len() >= out.capacity() {
        return None;
    }
    let value = match tok {
        Tok::Str(s) if s.len() <= limits.max_string_bytes => FeatureValue::Str(Cow::Borrowed(s)),
        Tok::Str(_) => return None,
        Tok::UInt(n) => FeatureValue::Number(n as f64),
        Tok::NegInt(n) => FeatureValue::Number(-(n as f64)),
        Tok::Float(f) => FeatureValue::Number(f),
        Tok::Bool(b) => FeatureValue::Bool(b),
        Tok::Null => FeatureValue::Null,
    };
    out.push((Cow::Borrowed(name), value));
    Some(())
}

/// An id as the decoder's `id_from` makes it: a non-empty string within the limit, or an
/// unsigned integer's decimal text.
fn id_of<'a>(tok: Tok<'a>, limits: &LimitsConfig) -> Option<Cow<'a, str>> {
    let id = match tok {
        Tok::Str(s) => Cow::Borrowed(s),
        Tok::UInt(n) => Cow::Owned(n.to_string()),
        _ => return None,
    };
    (!id.is_empty() && id.len() <= limits.max_id_bytes).then_some(id)
}

/// A timestamp as the decoder's `ts_from` makes it: null, or an integer that fits an i64.
fn ts_of(tok: Tok<'_>) -> Option<Option<i64>> {
    Some(match tok {
        Tok::Null => None,
        Tok::UInt(n) => Some(i64::try_from(n).ok()?),
        // serde_json reports -n as an i64 for 1 <= n <= 2^63 (and `-0` as a float).
        Tok::NegInt(n) if n >= 1 => Some(0i64.checked_sub_unsigned(n)?),
        _ => return None,
    })
}

/// Fills a field's slot with `value`; `None` (serde_json's path then refuses the record) for a
/// field seen before or a value the scanner does not take.
fn set_once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

/// The event in `text` if it is in the fast path's subset and valid; `None` otherwise (the
/// caller then decodes it with serde_json).
pub(crate) fn event<'a>(
    input: &InputConfig,
    limits: &LimitsConfig,
    text: &'a str,
) -> Option<RawEvent<'a>> {
    let mut sc = Scan::new(text);
    let nested = input.features_from == FeaturesFrom::Nested;
    let mut id: Option<Cow<'a, str>> = None;
    let mut ts: Option<Option<i64>> = None;
    let mut saw_features = false;
    let mut features = Vec::with_capacity(32);
    sc.object(|sc, key| {
        if key == input.id_field {
            set_once(&mut id, id_of(sc.scalar()?, limits))?;
        } else if key == input.timestamp_field {
            set_once(&mut ts, ts_of(sc.scalar()?))?;
        } else if nested {
            if key == input.features_field {
                if saw_features {
                    return None;
                }
                saw_features = true;
                sc.object(|sc, name| {
                    let tok = sc.scalar()?;
                    push(&mut features, name, tok, limits)
                })?;
            } else {
                sc.scalar()?;
            }
        } else if input.include.is_empty() || input.include.iter().any(|n| *n == key) {
            let tok = sc.scalar()?;
            push(&mut features, key, tok, limits)?;
        } else {
            sc.scalar()?;
        }
        Some(())
    })?;
    if sc.peek().is_some() || (nested && !saw_features) {
        return None;
    }
    Some(RawEvent {
        id: id?,
        ts: ts.flatten(),
        features,
    })
}

/// The label in `text` if it is in the fast path's subset and valid; `None` otherwise (the
/// caller then decodes it with serde_json).
pub(crate) fn label(input: &InputConfig, limits: &LimitsConfig, text: &str) -> Option<Label> {
    let mut sc = Scan::new(text);
    let entity_field = input.label_entity_field.as_str();
    let (mut id, mut label, mut ts, mut weight, mut entity) = (None, None, None, None, None);
    // Each field, in the order the decoder tests the names.
    sc.object(|sc, key| {
        let tok = sc.scalar()?;
        if key == input.label_id_field {
            set_once(&mut id, id_of(tok, limits).map(Cow::into_owned))
        } else if key == input.label_field {
            // As `label_from`: true/false, 0/1, 0.0/1.0 (`-0` is left to serde_json).
            set_once(
                &mut label,
                match tok {
                    Tok::Bool(b) => Some(b),
                    Tok::UInt(0) => Some(false),
                    Tok::UInt(1) => Some(true),
                    Tok::Float(0.0) => Some(false),
                    Tok::Float(1.0) => Some(true),
                    _ => None,
                },
            )
        } else if key == input.label_timestamp_field {
            set_once(&mut ts, ts_of(tok))
        } else if key == input.label_weight_field {
            // As `weight_from`: null, or a finite number >= 0.
            let w = match tok {
                Tok::Null => Some(None),
                Tok::UInt(n) => Some(Some(n as f64)),
                Tok::Float(f) if f.is_finite() && f >= 0.0 => Some(Some(f)),
                _ => None,
            };
            set_once(&mut weight, w)
        } else if !entity_field.is_empty() && key == entity_field {
            // As `entity_from` for null, strings and unsigned integers.
            let e = match tok {
                Tok::Null => Some(None),
                Tok::Str(s) => Some(Some(crate::guard::entity_key(s.as_bytes()))),
                Tok::UInt(n) => Some(Some(crate::guard::entity_key(n.to_string().as_bytes()))),
                _ => None,
            };
            set_once(&mut entity, e)
        } else {
            Some(())
        }
    })?;
    if sc.peek().is_some() {
        return None;
    }
    Some(Label {
        id: id?,
        label: label?,
        ts: ts.flatten(),
        weight: weight.flatten().unwrap_or(1.0),
        entity: entity.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DecodeError, Decoder, Label};
    use proptest::prelude::*;

    /// Equal results, floats compared by their bits (`-0.0` is not `0.0` here).
    fn same(a: &Result<RawEvent<'_>, DecodeError>, b: &Result<RawEvent<'_>, DecodeError>) -> bool {
        match (a, b) {
            (Ok(x), Ok(y)) => {
                x.id == y.id
                    && x.ts == y.ts
                    && x.features.len() == y.features.len()
                    && x.features.iter().zip(&y.features).all(|((n, v), (m, w))| {
                        n == m
                            && match (v, w) {
                                (FeatureValue::Number(p), FeatureValue::Number(q)) => {
                                    p.to_bits() == q.to_bits()
                                }
                                _ => v == w,
                            }
                    })
            }
            (Err(x), Err(y)) => x == y,
            _ => false,
        }
    }

    /// The layouts and limits the differential tests run under.
    fn decoders() -> Vec<Decoder> {
        let top = InputConfig {
            features_from: FeaturesFrom::TopLevel,
            ..InputConfig::default()
        };
        vec![
            Decoder::new(InputConfig::default(), LimitsConfig::default()),
            Decoder::new(top.clone(), LimitsConfig::default()),
            Decoder::new(
                InputConfig {
                    include: vec!["a".into(), "amount".into()],
                    ..top
                },
                LimitsConfig::default(),
            ),
            Decoder::new(
                InputConfig {
                    id_field: "key".into(),
                    timestamp_field: "a".into(),
                    features_field: "f".into(),
                    ..InputConfig::default()
                },
                LimitsConfig::default(),
            ),
            Decoder::new(
                InputConfig::default(),
                LimitsConfig {
                    max_id_bytes: 6,
                    max_features: 3,
                    max_string_bytes: 5,
                    max_name_bytes: 6,
                    ..LimitsConfig::default()
                },
            ),
        ]
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        for d in decoders() {
            let fast = d.decode_event(text.as_bytes());
            let slow = d.decode_event_with_serde(text.as_bytes());
            prop_assert!(same(&fast, &slow), "{text}\nfast {fast:?}\nserde {slow:?}");
        }
        Ok(())
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            12 => Just(""),
            3 => Just(" "),
            1 => Just("\n\t "),
            1 => Just("\r"),
        ]
    }

    /// Number texts: valid ones of every form and range, and near misses.
    fn number() -> impl Strategy<Value = String> {
        let digits = "[0-9]{1,24}";
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            (-1e6..1e6f64).prop_map(|f| format!("{f:.3}")),
            (
                any::<bool>(),
                digits,
                proptest::option::of("[0-9]{0,24}"),
                proptest::option::of(("[eE]", "[+-]?", "[0-9]{0,6}")),
            )
                .prop_map(|(neg, int, frac, exp)| {
                    let mut s = String::new();
                    if neg {
                        s.push('-');
                    }
                    s.push_str(&int);
                    if let Some(f) = frac {
                        s.push('.');
                        s.push_str(&f);
                    }
                    if let Some((e, sign, d)) = exp {
                        s.push_str(&e);
                        s.push_str(&sign);
                        s.push_str(&d);
                    }
                    s
                }),
            prop::sample::select(vec![
                "-0",
                "0",
                "-",
                "01",
                "-01",
                "1.",
                ".5",
                "1e",
                "1e+",
                "-0.0",
                "1E22",
                "1e23",
                "1e-22",
                "1e-23",
                "9007199254740993",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775808",
                "-9223372036854775809",
                "1e400",
                "0e999999",
                "0.1e-5",
                "+1",
                "1ee2",
                "2.5E-0003",
            ])
            .prop_map(String::from),
        ]
    }

    fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zA-Z0-9_ -]{0,24}".prop_map(|s| format!("\"{s}\"")),
            1 => "[a-zé€😀]{0,4}".prop_map(|s| format!("\"{s}\"")),
            1 => prop::sample::select(vec![
                r#""a\"b""#, r#""\u0041""#, "\"tab\there\"", "\"x\\\\\"", "\"unterminated",
                r#""i\u0064""#, r#""123456""#, "\"abcdefghij\tk\"", r#""abcdefghijklmno\"p""#,
                "\"abcdefghijklmnop\u{1f}\"", "\"abcdefghé€😀ijklmnop\"",
            ])
            .prop_map(String::from),
        ]
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => number(),
            6 => string(),
            2 => prop::sample::select(vec!["true", "false", "null", "tru", "nul", "falsey"])
                .prop_map(String::from),
            1 => prop::sample::select(vec!["{}", "[]", "[1]", r#"{"a":1}"#]).prop_map(String::from),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::sample::select(vec!["a", "amount", "country", "n", "é", "long_name"])
                .prop_map(|k| format!("\"{k}\"")),
            1 => prop::sample::select(vec![r#""x\"y""#, r#""""#, r#""i\u0064""#, "noquote"])
                .prop_map(String::from),
        ]
    }

    /// An object of members made by `member`, with whitespace around every token and,
    /// sometimes, a glitch (a trailing comma, a missing colon, a non-JSON space).
    fn object(
        member: impl Strategy<Value = (String, String)>,
        max: usize,
    ) -> impl Strategy<Value = String> {
        object_of(proptest::collection::vec(member, 0..max))
    }

    /// `required` members (each present, e.g. an id), and up to `max` more from `member`, in
    /// any order.
    fn object_with(
        required: Vec<BoxedStrategy<(String, String)>>,
        member: impl Strategy<Value = (String, String)>,
        max: usize,
    ) -> impl Strategy<Value = String> {
        object_of(
            (required, proptest::collection::vec(member, 0..max)).prop_flat_map(
                |(mut all, more)| {
                    all.extend(more);
                    Just(all).prop_shuffle()
                },
            ),
        )
    }

    fn object_of(
        members: impl Strategy<Value = Vec<(String, String)>>,
    ) -> impl Strategy<Value = String> {
        (
            members.prop_flat_map(|m| {
                let n = m.len();
                (
                    Just(m),
                    proptest::collection::vec((ws(), ws(), ws(), ws()), n),
                )
            }),
            ws(),
            0u8..20,
        )
            .prop_map(|((members, spaces), end, glitch)| {
                let mut s = String::from("{");
                for (i, ((k, v), (a, b, c, d))) in members.iter().zip(&spaces).enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(a);
                    s.push_str(k);
                    s.push_str(b);
                    if !(glitch == 1 && i == 0) {
                        s.push(':');
                    }
                    s.push_str(c);
                    s.push_str(v);
                    s.push_str(d);
                }
                if glitch == 2 {
                    s.push(',');
                }
                if glitch == 3 {
                    // Not JSON whitespace.
                    s.push('\u{a0}');
                }
                s.push_str(end);
                s.push('}');
                s
            })
    }

    fn event_text() -> impl Strategy<Value = String> {
        let features = || object((key(), scalar()), 6);
        let id = || {
            (
                Just("\"id\"".to_string()),
                prop_oneof![3 => string(), 1 => number()],
            )
        };
        let member = prop_oneof![
            1 => id(),
            2 => (Just("\"ts\"".to_string()), prop_oneof![3 => number(), 1 => Just("null".into()), 1 => string()]),
            1 => (Just("\"features\"".to_string()), prop_oneof![4 => features(), 1 => scalar()]),
            1 => (Just("\"key\"".to_string()), string()),
            1 => (Just("\"f\"".to_string()), features()),
            3 => (key(), scalar()),
        ];
        let required = vec![
            id().boxed(),
            (Just("\"features\"".to_string()), features()).boxed(),
            (Just("\"key\"".to_string()), string()).boxed(),
            (Just("\"f\"".to_string()), features()).boxed(),
        ];
        (object_with(required, member, 3), ws(), 0u8..20).prop_map(
            |(o, end, glitch)| match glitch {
                0 => format!("{o}{end}x"),
                1 => {
                    let mut half = o.len() / 2;
                    while !o.is_char_boundary(half) {
                        half -= 1;
                    }
                    o[..half].to_string()
                }
                _ => format!("{end}{o}{end}"),
            },
        )
    }

    /// A producer's event: the fast path's subset.
    fn flat_event() -> impl Strategy<Value = String> {
        (
            "[a-z0-9-]{1,20}",
            proptest::option::of(0i64..=i64::MAX),
            proptest::collection::vec(
                (
                    "[a-z_]{1,12}",
                    prop_oneof![
                        (-1e9..1e9f64).prop_map(|f| format!("{f:.4}")),
                        any::<i64>().prop_map(|n| n.to_string()),
                        "[a-zA-Z0-9 ]{0,16}".prop_map(|s| format!("\"{s}\"")),
                        Just("true".to_string()),
                        Just("null".to_string()),
                    ],
                ),
                0..40,
            ),
        )
            .prop_map(|(id, ts, fs)| {
                let mut s = format!(r#"{{"id":"{id}""#);
                if let Some(ts) = ts {
                    s.push_str(&format!(r#","ts":{ts}"#));
                }
                s.push_str(r#","features":{"#);
                let body: Vec<String> = fs.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
                s.push_str(&body.join(","));
                s.push_str("}}");
                s
            })
    }

    fn label_decoders() -> Vec<Decoder> {
        vec![
            Decoder::new(InputConfig::default(), LimitsConfig::default()),
            Decoder::new(
                InputConfig {
                    label_entity_field: "card".into(),
                    ..InputConfig::default()
                },
                LimitsConfig {
                    max_id_bytes: 6,
                    ..LimitsConfig::default()
                },
            ),
            Decoder::new(
                InputConfig {
                    label_id_field: "key".into(),
                    label_field: "y".into(),
                    label_timestamp_field: "at".into(),
                    label_weight_field: "w".into(),
                    label_entity_field: "a".into(),
                    ..InputConfig::default()
                },
                LimitsConfig::default(),
            ),
        ]
    }

    /// Equal label results, the weight compared by its bits.
    fn same_label(a: &Result<Label, DecodeError>, b: &Result<Label, DecodeError>) -> bool {
        match (a, b) {
            (Ok(x), Ok(y)) => {
                x.id == y.id
                    && x.label == y.label
                    && x.ts == y.ts
                    && x.weight.to_bits() == y.weight.to_bits()
                    && x.entity == y.entity
            }
            (Err(x), Err(y)) => x == y,
            _ => false,
        }
    }

    fn label_text() -> impl Strategy<Value = String> {
        let field = |names: &'static [&'static str]| {
            prop::sample::select(names.to_vec()).prop_map(|k| format!("\"{k}\""))
        };
        let id = move || {
            (
                field(&["id", "key"]),
                prop_oneof![3 => string(), 1 => number()],
            )
        };
        let label = move || {
            (
                field(&["label", "y"]),
                prop_oneof![
                    2 => prop::sample::select(vec!["0", "1", "true", "false", "0.0", "1.0", "1e0", "-0", "2", "0.5", "null", "\"1\""])
                        .prop_map(String::from),
                    1 => number(),
                ],
            )
        };
        let member = prop_oneof![
            1 => id(),
            1 => label(),
            2 => (field(&["ts", "at"]), prop_oneof![3 => number(), 1 => Just("null".into())]),
            2 => (field(&["weight", "w"]), prop_oneof![3 => number(), 1 => Just("null".into()), 1 => string()]),
            2 => (field(&["card", "a"]), scalar()),
            1 => (key(), scalar()),
        ];
        (
            object_with(vec![id().boxed(), label().boxed()], member, 4),
            ws(),
            0u8..20,
        )
            .prop_map(|(o, end, glitch)| match glitch {
                0 => format!("{o}{end}x"),
                _ => format!("{end}{o}{end}"),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Labels: the decoder's result is serde_json's, bit for bit.
        #[test]
        fn labels_same_result_as_serde(text in label_text()) {
            for d in label_decoders() {
                let fast = d.decode_label(text.as_bytes());
                let slow = d.decode_label_with_serde(text.as_bytes());
                prop_assert!(same_label(&fast, &slow), "{text}\nfast {fast:?}\nserde {slow:?}");
            }
        }

        /// Producers' labels take the fast path.
        #[test]
        fn flat_labels_take_the_fast_path(
            id in "[a-z0-9-]{1,20}",
            y in any::<bool>(),
            ts in proptest::option::of(0i64..=i64::MAX),
            w in proptest::option::of(0.0..1e6f64),
            card in proptest::option::of("[a-z0-9]{1,10}"),
        ) {
            let mut text = format!(r#"{{"id":"{id}","label":{}"#, u8::from(y));
            if let Some(ts) = ts {
                text.push_str(&format!(r#","ts":{ts}"#));
            }
            if let Some(w) = w {
                text.push_str(&format!(r#","weight":{w:.3}"#));
            }
            if let Some(card) = card {
                text.push_str(&format!(r#","card":"{card}""#));
            }
            text.push('}');
            let input = InputConfig { label_entity_field: "card".into(), ..InputConfig::default() };
            let limits = LimitsConfig::default();
            let fast = label(&input, &limits, &text);
            prop_assert!(fast.is_some(), "{text}");
            let d = Decoder::new(input, limits);
            prop_assert!(same_label(&d.decode_label(text.as_bytes()), &d.decode_label_with_serde(text.as_bytes())));
        }

        /// Whatever the bytes, the decoder's result is serde_json's, bit for bit.
        #[test]
        fn same_result_as_serde(text in event_text()) {
            check(&text)?;
        }

        #[test]
        fn same_result_for_numbers(n in number(), m in number()) {
            check(&format!(r#"{{"id":"a","ts":{n},"features":{{"x":{n},"y":{m}}}}}"#))?;
            check(&format!(r#"{{"id":{n},"features":{{}},"other":{m}}}"#))?;
        }

        /// Producers' events take the fast path: the differential tests above compare it with
        /// serde_json, not serde_json with itself.
        #[test]
        fn flat_events_take_the_fast_path(text in flat_event()) {
            let ev = event(&InputConfig::default(), &LimitsConfig::default(), &text);
            prop_assert!(ev.is_some(), "{text}");
            check(&text)?;
        }
    }

    /// Near misses one token from a fast-path event, and the edges of its number range: both
    /// paths agree, and the scanner takes (or leaves) the number edges as documented.
    #[test]
    fn edge_cases_agree() {
        let d = Decoder::new(InputConfig::default(), LimitsConfig::default());
        let events = [
            (r#"{"id":"a","features":{}}"#, true),
            (" {\"id\":\"a\",\"features\":{}}\n", true),
            (r#"{"id":"a","features":{}}x"#, false),
            (r#"{"id":"a","features":{}}{}"#, false),
            (r#"{"id":"a","features":{},}"#, false),
            (r#"{"id":"a","features":{"x":1,}}"#, false),
            (r#"{"id":"a" "features":{}}"#, false),
            (r#"{"id":"a","features":{"x" 1}}"#, false),
            (r#"{"id":"a","features":{"x":1}"#, false),
            (r#"{"id":"a","features":[]}"#, false),
            (r#"{"id":"a","id":"b","features":{}}"#, false),
            (r#"{"id":"","features":{}}"#, false),
            (r#"{"id":7,"features":{}}"#, true),
            (r#"{"id":-7,"features":{}}"#, true),
            (r#"{"id":"a","ts":-0,"features":{}}"#, false),
            (r#"{"id":"a","ts":-5,"features":{}}"#, true),
            (r#"{"id":"a","ts":1.0,"features":{}}"#, false),
            (r#"{"id":"a","features":{"x":"a\u0041"}}"#, true),
            ("{\"id\":\"a\",\"features\":{\"x\":\"a\tb\"}}", false),
            (r#"{"id":"a","features":{"x":01}}"#, false),
            (r#"{"id":"a","features":{"x":1.}}"#, false),
            (r#"{"id":"a","features":{"x":.5}}"#, false),
            (r#"{"id":"a","features":{"x":-}}"#, false),
            (r#"{"id":"a","features":{"x":1e}}"#, false),
            (r#"{"id":"a","features":{"x":+1}}"#, false),
            (r#"{"id":"a","features":{"x":tru}}"#, false),
            (r#"{"id":"a","features":{"x":nulls}}"#, false),
            (r#"{"id":"a","features":{"x":-0}}"#, true),
            (r#"{"id":"a","features":{"x":-0.0}}"#, true),
            (
                r#"{"id":"a","features":{"x":1e22,"y":1e-22,"z":4.5E+3}}"#,
                true,
            ),
            (r#"{"id":"a","features":{"x":1e23}}"#, true),
            (r#"{"id":"a","features":{"x":9999999999999999999}}"#, true),
            (r#"{"id":"a","features":{"x":99999999999999999999}}"#, true),
            (r#"{"id":"a","features":{"x":0.30000000000000004}}"#, true),
            (r#"{"id":"a","features":{"x":1e400}}"#, false),
            (r#"{"id":"a","features":{"x":{"y":1}}}"#, false),
        ];
        for (text, valid) in events {
            let fast = d.decode_event(text.as_bytes());
            let slow = d.decode_event_with_serde(text.as_bytes());
            assert!(same(&fast, &slow), "{text}: {fast:?} / {slow:?}");
            assert_eq!(slow.is_ok(), valid, "{text}: {slow:?}");
        }
        // The scanner's share: what it decodes itself; the rest (valid or not) is serde_json's.
        let fast = |t: &str| event(&InputConfig::default(), &LimitsConfig::default(), t).is_some();
        assert!(fast(
            r#"{"id":7,"ts":-5,"features":{"x":-0,"y":1e22,"z":9999999999999999999}}"#
        ));
        assert!(fast(r#"{"id":"a","features":{"x":1e23}}"#));
        assert!(!fast(r#"{"id":"a","features":{"x":99999999999999999999}}"#));
        // Numbers are the nearest double to their text (the reference: the standard library's
        // correctly rounded parse), on both paths. serde_json without `float_roundtrip` read the
        // first two as 117.79312028613028 and 7.217284394992692e108 (one and two ulps off; the
        // first is Python's shortest text for a double, as a producer writes it).
        for text in [
            "117.79312028613029",
            "7.2172843949926904e108",
            "0.30000000000000004",
            "7.2172843949926904e108",
            "2.0000000000000003e-300",
            "9007199254740993.5",
            "1e23",
            "123456789012345678.9",
        ] {
            let want = text.parse::<f64>().expect("number").to_bits();
            let line = format!(r#"{{"id":"a","features":{{"x":{text}}}}}"#);
            for ev in [
                d.decode_event(line.as_bytes()),
                d.decode_event_with_serde(line.as_bytes()),
            ] {
                let ev = ev.expect("valid");
                assert!(
                    matches!(ev.features[0].1, FeatureValue::Number(x) if x.to_bits() == want),
                    "{text}: {:?}",
                    ev.features[0].1
                );
            }
        }
        let labels = [
            (r#"{"id":"a","label":1}"#, true),
            (r#"{"id":"a","label":1}x"#, false),
            (r#"{"id":"a","label":2}"#, false),
            (r#"{"id":"a","label":-0}"#, true),
            (r#"{"id":"a","label":1.0,"weight":0.5}"#, true),
            (r#"{"id":"a","label":1e0,"weight":-0.0}"#, true),
            (r#"{"id":"a","label":1,"weight":-1.5}"#, false),
            (r#"{"id":"a","label":1,"label":0}"#, false),
            (r#"{"id":"a","label":true,"ts":null,"weight":null}"#, true),
            (r#"{"id":"a"}"#, false),
        ];
        for (text, valid) in labels {
            let fast = d.decode_label(text.as_bytes());
            let slow = d.decode_label_with_serde(text.as_bytes());
            assert!(same_label(&fast, &slow), "{text}: {fast:?} / {slow:?}");
            assert_eq!(slow.is_ok(), valid, "{text}: {slow:?}");
        }
    }

    #[test]
    fn the_documented_event_takes_the_fast_path() {
        let text = r#"{"id": "tx-1", "ts": 1732700000000, "features": {"amount": 12.5, "country": "DE", "new_device": true, "age_days": null}}"#;
        let ev = event(&InputConfig::default(), &LimitsConfig::default(), text).expect("fast");
        assert_eq!(ev.id, "tx-1");
        assert_eq!(ev.ts, Some(1_732_700_000_000));
        assert_eq!(
            ev.features[0],
            ("amount".into(), FeatureValue::Number(12.5))
        );
        assert_eq!(ev.features[3], ("age_days".into(), FeatureValue::Null));
    }

    #[test]
    fn powers_of_ten_are_exact() {
        for (i, p) in POW10.iter().enumerate() {
            assert_eq!(*p, format!("1e{i}").parse::<f64>().expect("number"));
        }
    }
}
