//! Any bytes as an event message: decoded and scored, or refused with a counted reason; never a
//! panic, never a non-finite score or model. Then the same bytes as a label for it.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use streamlr::engine::LabelResult;

fuzz_target!(|data: &[u8]| {
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
