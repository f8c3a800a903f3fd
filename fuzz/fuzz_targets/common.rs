//! What the targets share: small engines (1 024 buckets) over the in-memory join store, and the
//! invariants every input must keep.

use streamlr::config::{Config, FeaturesFrom};
use streamlr::engine::Engine;
use streamlr::join::MemoryBackend;

/// Engines (index 0 nested, 1 top-level) with the default config (nested features, every feature learned by type) and with
/// top-level features, small enough to build for every input.
pub fn engines() -> [Engine<MemoryBackend>; 2] {
    let mut nested = Config::default();
    nested.features.hash_bits = 10;
    nested.drift.reference_events = 100;
    nested.drift.window_events = 100;
    nested.drift.score_reference_after_updates = 0;
    let mut top = nested.clone();
    top.input.features_from = FeaturesFrom::TopLevel;
    [nested, top].map(|c| {
        let problems = c.validate();
        assert!(problems.is_empty(), "fuzz config: {problems:?}");
        Engine::new(c, |_| (MemoryBackend::default(), None))
    })
}

/// The model is finite and every prediction a probability.
pub fn check(e: &Engine<MemoryBackend>) {
    assert!(e.model().is_finite(), "the model stays finite");
}
