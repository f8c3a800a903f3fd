//! Any bytes as a label message, after three scored events (ids a, b, c): joined, buffered,
//! counted or refused; never a panic, never a non-finite model. Applied twice: the second is a
//! duplicate or conflict, never learned again. And the decoder's fast path agrees with
//! serde_json's, the weight by its bits, with and without an entity field.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use streamlr::config::{InputConfig, LimitsConfig};
use streamlr::engine::LabelResult;
use streamlr::event::Decoder;

fuzz_target!(|data: &[u8]| {
    for entity in ["", "card"] {
        let input = InputConfig {
            label_entity_field: entity.into(),
            ..InputConfig::default()
        };
        let d = Decoder::new(input, LimitsConfig::default());
        let bits = |r: Result<streamlr::event::Label, _>| {
            r.map(|l| (l.id, l.label, l.ts, l.weight.to_bits(), l.entity))
        };
        assert_eq!(
            bits(d.decode_label(data)),
            bits(d.decode_label_with_serde(data)),
            "fast path against serde_json"
        );
    }
    for (layout, mut e) in common::engines().into_iter().enumerate() {
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let (ts, amount) = (1_700_000_000_000i64 + i as i64, 10 * i);
            let ev = if layout == 0 {
                format!(
                    r#"{{"id":"{id}","ts":{ts},"features":{{"amount":{amount},"country":"DE"}}}}"#
                )
            } else {
                format!(r#"{{"id":"{id}","ts":{ts},"amount":{amount},"country":"FR"}}"#)
            };
            e.on_event(ev.as_bytes(), 0, 0, 1_800_000_000_000)
                .expect("a valid event");
        }
        let first = e.on_label(data, 0);
        let updates = e.counters().updates;
        let second = e.on_label(data, 0);
        match (&first, &second) {
            (LabelResult::Invalid(_), LabelResult::Invalid(_)) => {}
            (LabelResult::Handled(_), LabelResult::Handled(_)) => {
                assert_eq!(e.counters().updates, updates, "a label is learned once")
            }
            _ => panic!("the same bytes decoded differently: {first:?} / {second:?}"),
        }
        common::check(&e);
    }
});
