//! Any bytes as an event message: decoded and scored, or refused with a counted reason; never a
//! panic, never a non-finite score or model. Then the same bytes as a label for it. And the
//! decoder's fast path agrees with serde_json's, bit for bit, under both layouts.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use streamlr::config::{FeaturesFrom, InputConfig, LimitsConfig};
use streamlr::engine::LabelResult;
use streamlr::event::{DecodeError, Decoder, FeatureValue, RawEvent};

fuzz_target!(|data: &[u8]| {
    for features_from in [FeaturesFrom::Nested, FeaturesFrom::TopLevel] {
        let input = InputConfig {
            features_from,
            ..InputConfig::default()
        };
        let d = Decoder::new(input, LimitsConfig::default());
        let fast = d.decode_event(data);
        let slow = d.decode_event_with_serde(data);
        assert_eq!(bits(&fast), bits(&slow), "fast path against serde_json");
    }
    for mut e in common::engines() {
        let before = e.counters().events_invalid.iter().sum::<u64>();
        match e.on_event(data, 0, 1_700_000_000_000, 1_700_000_000_000) {
            Ok(p) => {
                assert!((0.0..=1.0).contains(&p.score), "score {}", p.score);
                // Learn a label for it: the update keeps the model finite.
                let label = format!(r#"{{"id":{},"label":1}}"#, serde_id(&p.id));
                let r = e.on_label(label.as_bytes(), 0);
                assert!(matches!(r, LabelResult::Handled(_)), "{r:?}");
            }
            Err(err) => {
                let after = e.counters().events_invalid.iter().sum::<u64>();
                assert_eq!(after, before + 1, "refusal counted: {err}");
            }
        }
        common::check(&e);
    }
});

/// A decode result with floats as their bits (`-0.0 == 0.0` would hide a difference).
type Bits = Result<(String, Option<i64>, Vec<(String, String)>), DecodeError>;

fn bits(r: &Result<RawEvent<'_>, DecodeError>) -> Bits {
    r.clone().map(|e| {
        let values = e
            .features
            .iter()
            .map(|(n, v)| match v {
                FeatureValue::Number(x) => (n.to_string(), format!("{:#x}", x.to_bits())),
                other => (n.to_string(), format!("{other:?}")),
            })
            .collect();
        (e.id.into_owned(), e.ts, values)
    })
}

fn serde_id(id: &str) -> String {
    let mut out = String::from("\"");
    for c in id.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
