//! Core costs per event (criterion):
//! - `score_update`: score + FTRL/AdaGrad/SGD update of a 30-slot vector (20 numeric + 10 hashed
//!   categorical features) in a 2^20-bucket model;
//! - `decode_encode_score`: JSON bytes → decoded event → feature vector → score;
//! - `drift`: drift bookkeeping per event with 30 declared features (20 numeric, 10 categorical):
//!   sample check + extract + observe, window evaluations (PSI, KS with p-value over 31 columns)
//!   amortized in, watching every event and one in 16 or 32 (`drift.sample_every`); extract alone;
//! - `snapshot`: serialize the learner state.
//!
//! Run: `cargo bench --bench core`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use streamlr::config::{Config, InputConfig, LimitsConfig, ModelConfig, OptimizerKind};
use streamlr::event::Decoder;
use streamlr::features::{Encoded, Encoder, SparseVec};
use streamlr::model::Model;
use streamlr::optim::Optimizer;
use streamlr::simulate::Rng;

/// The allocator the binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Feature vectors shaped like real traffic: 20 numeric features at fixed buckets (one per
/// name) and 10 categorical features of 1000 values each (Zipf-distributed), hashed with the
/// encoder's hash.
fn vectors(n: usize, dim: u32, rng: &mut Rng) -> Vec<(SparseVec, bool)> {
    let bucket = |key: &str| streamlr::hash::murmur3_32(key.as_bytes(), 0) & (dim - 1);
    (0..n)
        .map(|_| {
            let mut x = SparseVec::default();
            for f in 0..20 {
                x.idx.push(bucket(&format!("num_{f}")));
                x.val.push(rng.normal() as f32);
            }
            for f in 0..10 {
                x.idx
                    .push(bucket(&format!("cat_{f}\u{1f}v{}", rng.zipf(1000, 1.1))));
                x.val.push(1.0);
            }
            (x, rng.uniform() < 0.05)
        })
        .collect()
}

fn score_update(c: &mut Criterion) {
    // STREAMLR_BENCH_DIM_BITS: a smaller model (e.g. 14 bits: all state in L2) separates the
    // cost of the arithmetic from that of reaching three 8 MiB arrays.
    let bits = std::env::var("STREAMLR_BENCH_DIM_BITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dim = 1u32 << bits;
    let mut rng = Rng::new(1);
    let data = vectors(4096, dim, &mut rng);
    for kind in [
        OptimizerKind::Ftrl,
        OptimizerKind::Adagrad,
        OptimizerKind::Sgd,
    ] {
        let cfg = ModelConfig {
            optimizer: kind,
            ..ModelConfig::default()
        };
        let mut model = Model::new(dim as usize);
        let mut opt = Optimizer::new(kind, dim as usize);
        let mut i = 0;
        c.bench_function(&format!("score_update/{kind:?}"), |b| {
            b.iter(|| {
                let (x, y) = &data[i % data.len()];
                i += 1;
                black_box(model.score(x));
                black_box(opt.step(&cfg, &mut model, x, *y, 1.0, 0.0).ok());
            })
        });
    }
}

fn event_lines(n: u64) -> Vec<String> {
    let cfg = streamlr::simulate::SimConfig {
        count: n,
        ..Default::default()
    };
    let mut sim = streamlr::simulate::Simulator::new(cfg);
    let mut out = Vec::new();
    while let Some(r) = sim.next_record() {
        if let streamlr::simulate::Record::Event { line, .. } = r {
            out.push(line);
        }
    }
    out
}

/// A 30-feature event: 20 numeric, 10 categorical.
fn wide_lines(n: usize, rng: &mut Rng) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut s = format!(
                r#"{{"id":"tx-{i}","ts":{},"features":{{"#,
                1_700_000_000_000u64 + i as u64
            );
            for f in 0..20 {
                s.push_str(&format!(r#""num_{f}":{:.3},"#, rng.normal() * 100.0));
            }
            for f in 0..10 {
                s.push_str(&format!(r#""cat_{f}":"v{}","#, rng.zipf(1000, 1.1)));
            }
            s.pop();
            s.push_str("}}");
            s
        })
        .collect()
}

fn decode_encode_score(c: &mut Criterion) {
    let cfg = Config::default();
    let decoder = Decoder::new(InputConfig::default(), LimitsConfig::default());
    let mut rng = Rng::new(2);
    for (name, lines) in [
        ("simulated_10_features", event_lines(4096)),
        ("wide_30_features", wide_lines(4096, &mut rng)),
    ] {
        let mut encoder = Encoder::new(&cfg.features);
        let model = Model::new(encoder.dim());
        let mut enc = Encoded::default();
        let mut i = 0;
        c.bench_function(&format!("decode_encode_score/{name}"), |b| {
            b.iter(|| {
                let line = &lines[i % lines.len()];
                i += 1;
                let ev = decoder.decode_event(line.as_bytes()).ok();
                if let Some(ev) = ev {
                    let _ = encoder.encode(&ev, &mut enc);
                    black_box(model.score(&enc.x));
                }
            })
        });
        let mut i = 0;
        c.bench_function(&format!("decode/{name}"), |b| {
            b.iter(|| {
                let line = &lines[i % lines.len()];
                i += 1;
                black_box(decoder.decode_event(line.as_bytes()).ok());
            })
        });
    }
}

fn drift(c: &mut Criterion) {
    use streamlr::config::{CategoricalFeature, DriftConfig, FeaturesConfig, NumericFeature};
    use streamlr::drift::Drift;
    let mut features = FeaturesConfig::default();
    for f in 0..20 {
        features
            .numeric
            .insert(format!("num_{f}"), NumericFeature::default());
    }
    for f in 0..10 {
        features
            .categorical
            .insert(format!("cat_{f}"), CategoricalFeature::default());
    }
    let decoder = Decoder::new(InputConfig::default(), LimitsConfig::default());
    let mut rng = Rng::new(4);
    let lines = wide_lines(20_000, &mut rng);
    let evs: Vec<_> = lines
        .iter()
        .filter_map(|l| decoder.decode_event(l.as_bytes()).ok())
        .collect();
    // The whole per-event bookkeeping as the engine does it: is the event watched, extract its
    // values, observe them (window evaluations amortized in), for every event and with
    // `drift.sample_every` = 16 and 32.
    for every in [1u32, 16, 32] {
        let cfg = DriftConfig {
            sample_every: every,
            ..DriftConfig::default()
        };
        let mut d = Drift::new(&cfg, &features);
        let mut out = Vec::new();
        let mut step = |d: &mut Drift, i: usize| {
            let ev = &evs[i % evs.len()];
            if d.samples(&ev.id) {
                d.extract(ev, &mut out);
                black_box(d.observe(&out, (i % 100) as f64 / 100.0, u64::MAX));
            }
        };
        // Past the reference, so every call is the steady state.
        let warm = cfg.reference_events * every as usize * 2;
        for i in 0..warm {
            step(&mut d, i);
        }
        let mut i = warm;
        c.bench_function(
            &format!("drift/per_event_30_features_sample_{every}"),
            |b| {
                b.iter(|| {
                    step(&mut d, i);
                    i += 1;
                })
            },
        );
    }
    let d = Drift::new(&DriftConfig::default(), &features);
    let mut out = Vec::new();
    let mut i = 0;
    c.bench_function("drift/extract_30_features", |b| {
        b.iter(|| {
            d.extract(&evs[i % evs.len()], &mut out);
            i += 1;
            black_box(&out);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = score_update, decode_encode_score, drift
}
criterion_main!(benches);
