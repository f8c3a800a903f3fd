//! Every class of bad input in README's "Bad input" table, through the engine the worker and
//! replay run, with the shipped defaults: each gets its documented, counted outcome, nothing
//! panics, the model stays finite, and valid records around the bad ones are scored and learned.

use streamlr::config::Config;
use streamlr::engine::{Engine, LabelCount, LabelResult};
use streamlr::event::Reason;
use streamlr::join::MemoryBackend;

const T0: i64 = 1_700_000_000_000;
const NOW: i64 = T0 + 60_000;

fn engine() -> Engine<MemoryBackend> {
    let mut c = Config::default();
    c.features.hash_bits = 16;
    Engine::new(c, |_| (MemoryBackend::default(), None))
}

fn event(id: &str, ts: i64) -> String {
    format!(r#"{{"id":"{id}","ts":{ts},"features":{{"amount":12.5,"country":"DE"}}}}"#)
}

/// Event classes refused with a reason (the dead-letter reason in the worker).
#[test]
fn bad_events_are_refused_with_their_reason_and_counted() {
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_feature = format!(
        r#"{{"id":"a","features":{{"x":{}1{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let ten_mb = format!(
        r#"{{"id":"a","features":{{"s":"{}"}}}}"#,
        "x".repeat(10 << 20)
    );
    let one_mb_string = format!(
        r#"{{"id":"a","features":{{"s":"{}"}}}}"#,
        "x".repeat(1_000_000)
    );
    let many: Vec<String> = (0..100_000).map(|i| format!(r#""{i:x}":0"#)).collect();
    let many_features = format!(r#"{{"id":"a","features":{{{}}}}}"#, many.join(","));
    // Under the 1 MiB message limit, so the feature count is what is refused.
    assert!(many_features.len() < 1 << 20, "{}", many_features.len());
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "invalid JSON",
            br#"{"id":"a","features":{"#.to_vec(),
            Reason::NotJson,
        ),
        (
            "trailing garbage",
            br#"{"id":"a","features":{}} x"#.to_vec(),
            Reason::NotJson,
        ),
        (
            "invalid UTF-8",
            b"{\"id\":\"a\xff\",\"features\":{}}".to_vec(),
            Reason::InvalidUtf8,
        ),
        ("not an object", b"[1,2,3]".to_vec(), Reason::NotAnObject),
        (
            "deep nesting: the message",
            deep.into_bytes(),
            Reason::NotAnObject,
        ),
        (
            "deep nesting in a feature value",
            deep_feature.into_bytes(),
            Reason::InvalidFeatureValue,
        ),
        (
            "wrong type: id",
            br#"{"id":[1],"features":{}}"#.to_vec(),
            Reason::InvalidId,
        ),
        (
            "wrong type: timestamp",
            br#"{"id":"a","ts":"soon","features":{}}"#.to_vec(),
            Reason::InvalidTimestamp,
        ),
        (
            "wrong type: features",
            br#"{"id":"a","features":[1]}"#.to_vec(),
            Reason::FeaturesNotObject,
        ),
        (
            "wrong type: feature value",
            br#"{"id":"a","features":{"x":{"y":1}}}"#.to_vec(),
            Reason::InvalidFeatureValue,
        ),
        (
            "1e400",
            br#"{"id":"a","features":{"x":1e400}}"#.to_vec(),
            Reason::NonFiniteNumber,
        ),
        (
            "-1e400",
            br#"{"id":"a","features":{"x":-1e400}}"#.to_vec(),
            Reason::NonFiniteNumber,
        ),
        ("10 MB message", ten_mb.into_bytes(), Reason::TooLarge),
        (
            "100k features",
            many_features.into_bytes(),
            Reason::TooManyFeatures,
        ),
        (
            "1 MB string",
            one_mb_string.into_bytes(),
            Reason::StringTooLong,
        ),
        (
            "empty id",
            br#"{"id":"","features":{}}"#.to_vec(),
            Reason::EmptyId,
        ),
        (
            "missing id",
            br#"{"features":{"x":1}}"#.to_vec(),
            Reason::MissingId,
        ),
        (
            "duplicate field",
            br#"{"id":"a","id":"b","features":{}}"#.to_vec(),
            Reason::DuplicateField,
        ),
        (
            "event time far in the future",
            event("a", NOW + 2 * 3_600_000).into_bytes(),
            Reason::TimestampInFuture,
        ),
    ];
    let mut e = engine();
    for (i, (what, bytes, reason)) in cases.iter().enumerate() {
        let before = e.counters().events_invalid.clone();
        let got = e.on_event(bytes, 0, T0, NOW);
        let err = got.expect_err(what);
        assert_eq!(err.reason, *reason, "{what}: {err}");
        let mut want = before;
        want[Reason::ALL
            .iter()
            .position(|r| r == reason)
            .expect("a reason")] += 1;
        assert_eq!(e.counters().events_invalid, want, "{what}: counted once");
        // A valid event after each bad one is scored.
        let ok = event(&format!("ok{i}"), T0 + i as i64);
        assert!(e.on_event(ok.as_bytes(), 0, T0, NOW).is_ok(), "{what}");
    }
    assert_eq!(e.counters().events_scored, cases.len() as u64);
    // Deep nesting in a field that is not read is skipped without recursion: the event is fine.
    let deep_ignored = format!(
        r#"{{"id":"deep","ts":{T0},"features":{{"x":1}},"meta":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(e.on_event(deep_ignored.as_bytes(), 0, T0, NOW).is_ok());
    assert!(e.model().is_finite());
}

/// Label classes: refused with a reason, or a join outcome.
#[test]
fn bad_and_odd_labels_get_their_outcome() {
    let mut e = engine();
    let label = |e: &mut Engine<MemoryBackend>, s: &str| e.on_label(s.as_bytes(), 0);
    let invalid = |r: LabelResult| match r {
        LabelResult::Invalid(err) => err.reason,
        other => panic!("not refused: {other:?}"),
    };
    e.on_event(event("a", T0).as_bytes(), 0, T0, NOW)
        .expect("scored");
    // Label not 0/1, wrong types, bad weight.
    for (s, reason) in [
        (r#"{"id":"a","label":2}"#, Reason::InvalidLabel),
        (r#"{"id":"a","label":"yes"}"#, Reason::InvalidLabel),
        (r#"{"id":"a","label":0.5}"#, Reason::InvalidLabel),
        (r#"{"id":"a"}"#, Reason::MissingLabel),
        (r#"{"id":"a","label":1,"weight":-1}"#, Reason::InvalidWeight),
        (
            r#"{"id":"a","label":1,"weight":1e400}"#,
            Reason::NonFiniteNumber,
        ),
        (r#"{"label":1}"#, Reason::MissingId),
        ("\u{0}", Reason::NotJson),
    ] {
        assert_eq!(invalid(label(&mut e, s)), reason, "{s}");
    }
    assert_eq!(e.counters().updates, 0, "nothing learned from a bad label");
    // The good label joins; the same again is a duplicate, the opposite a conflict.
    let joined = LabelResult::Handled(Some(LabelCount::Joined));
    assert_eq!(label(&mut e, r#"{"id":"a","label":1}"#), joined);
    assert_eq!(
        label(&mut e, r#"{"id":"a","label":1}"#),
        LabelResult::Handled(Some(LabelCount::Duplicate))
    );
    assert_eq!(
        label(&mut e, r#"{"id":"a","label":0}"#),
        LabelResult::Handled(Some(LabelCount::Conflict))
    );
    assert_eq!(e.counters().updates, 1, "learned once");

    // Duplicate event id: scored, counted, the first entry kept (its label is a duplicate).
    e.on_event(event("a", T0 + 1).as_bytes(), 0, T0, NOW)
        .expect("a duplicate id is still scored");
    assert_eq!(e.counters().events_duplicate_id, 1);

    // Label before its event: waits, joins when the event comes.
    assert_eq!(
        label(&mut e, r#"{"id":"b","label":0}"#),
        LabelResult::Handled(None)
    );
    e.on_event(event("b", T0 + 2).as_bytes(), 0, T0, NOW)
        .expect("scored");
    assert_eq!(e.counters().label(LabelCount::Joined), 2);

    // Label for an unknown id: waits, then `unknown` once the watermark passes label_wait (10 m).
    assert_eq!(
        label(&mut e, r#"{"id":"never","label":1}"#),
        LabelResult::Handled(None)
    );
    e.advance(0, T0 + 11 * 60_000);
    assert_eq!(e.counters().label(LabelCount::Unknown), 1);

    // Label after the window (7 d + 1 h grace): the entry expired, the label is `late`.
    e.on_event(event("c", T0 + 11 * 60_000).as_bytes(), 0, T0, NOW)
        .expect("scored");
    e.advance(0, T0 + 11 * 60_000 + (7 * 24 + 1) * 3_600_000 + 1);
    assert!(e.counters().label(LabelCount::Expired) >= 1);
    assert_eq!(
        label(&mut e, r#"{"id":"c","label":1}"#),
        LabelResult::Handled(Some(LabelCount::Late))
    );
    assert_eq!(e.counters().updates, 2);
    assert!(e.model().is_finite());
}
