//! What `/model` shows: the largest coefficients by |weight|, named after the feature values
//! that were seen hashing into their buckets.
//!
//! Hashing keeps no vocabulary, so a bucket has no name of its own. [`BucketNames`] learns names
//! on demand: the view asks for the buckets it is about to show, and the engine names those
//! buckets as events that hit them go by (a bit test per slot while some are wanted, nothing
//! otherwise). A bucket is named after the first value seen in it; hashing may put other values
//! in the same bucket (with 2^bits buckets and n distinct values, about n/2^bits per bucket).

use serde::Serialize;

use crate::model::Model;

/// Names of the buckets a view asked for.
#[derive(Debug, Clone, Default)]
pub struct BucketNames {
    /// One bit per bucket: wanted and not named yet.
    wanted: Vec<u64>,
    /// How many bits of `wanted` are set.
    pending: usize,
    /// The name seen per bucket (only buckets that were wanted).
    names: std::collections::HashMap<u32, String>,
}

impl BucketNames {
    /// True while some wanted bucket has no name yet (the only check on the hot path).
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending > 0
    }

    /// True when bucket `b` is wanted and not named yet.
    #[inline]
    pub fn wants(&self, b: u32) -> bool {
        let (word, bit) = (b as usize / 64, b % 64);
        self.wanted.get(word).is_some_and(|w| w >> bit & 1 == 1)
    }

    /// Asks for names of `buckets`; names of buckets not in it are forgotten (memory stays
    /// proportional to the view).
    pub fn want(&mut self, buckets: &[u32]) {
        self.names.retain(|b, _| buckets.contains(b));
        self.wanted.iter_mut().for_each(|w| *w = 0);
        self.pending = 0;
        for &b in buckets {
            if self.names.contains_key(&b) {
                continue;
            }
            let word = b as usize / 64;
            if self.wanted.len() <= word {
                self.wanted.resize(word + 1, 0);
            }
            if self.wanted[word] >> (b % 64) & 1 == 0 {
                self.wanted[word] |= 1 << (b % 64);
                self.pending += 1;
            }
        }
    }

    /// Records that `name` hashed into bucket `b`, if `b` is wanted (it is no longer).
    pub fn note(&mut self, b: u32, name: String) {
        if self.wants(b) {
            self.wanted[b as usize / 64] &= !(1 << (b % 64));
            self.pending -= 1;
            self.names.insert(b, name);
        }
    }

    /// The name seen for bucket `b`.
    pub fn name(&self, b: u32) -> Option<&str> {
        self.names.get(&b).map(String::as_str)
    }
}

/// One coefficient of the view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coefficient {
    /// The hash bucket.
    pub bucket: u32,
    /// The weight.
    pub weight: f64,
    /// The feature seen in the bucket (`amount`, `country=DE`); `None` until an event that
    /// uses the bucket has been scored since the view first showed it.
    pub feature: Option<String>,
}

/// The checkpoint a model came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lineage {
    /// Checkpoint version.
    pub checkpoint: u64,
    /// The version it continues from.
    pub parent: Option<u64>,
    /// When it was written, epoch ms.
    pub created_at_ms: i64,
    /// How it came to be (e.g. "rollback to 12"), when not by learning.
    pub note: Option<String>,
}

/// What `/model` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelView {
    /// Model version (advances every `model.version_every_updates` updates).
    pub version: u64,
    /// The last checkpoint of this worker (`None` before the first).
    pub lineage: Option<Lineage>,
    /// The model section of the configuration: optimizer, its settings, class weights.
    pub model: crate::config::ModelConfig,
    /// Digest of the feature schema the weights belong to.
    pub schema_digest: String,
    /// Hash buckets (2^bits).
    pub buckets: usize,
    /// Buckets with a non-zero weight.
    pub nonzero: usize,
    /// L2 norm of the bucket weights.
    pub weight_norm: f64,
    /// The intercept.
    pub intercept: f64,
    /// Updates applied.
    pub updates: u64,
    /// Learning frozen by a drift alert or an operator.
    pub frozen: bool,
    /// The largest coefficients by |weight|.
    pub coefficients: Vec<Coefficient>,
}

/// The `k` buckets with the largest |weight| (the intercept excluded), largest first; ties in
/// bucket order. Zero weights are never shown.
pub fn top_buckets(model: &Model, k: usize) -> Vec<(u32, f64)> {
    let mut all: Vec<(u32, f64)> = model
        .w
        .iter()
        .take(model.dim())
        .enumerate()
        .filter(|(_, w)| **w != 0.0)
        .map(|(i, w)| (i as u32, *w))
        .collect();
    let by_size =
        |a: &(u32, f64), b: &(u32, f64)| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0));
    if all.len() > k && k > 0 {
        all.select_nth_unstable_by(k - 1, by_size);
        all.truncate(k);
    } else if k == 0 {
        all.clear();
    }
    all.sort_by(by_size);
    all
}

/// The `k` largest coefficients named by `names`, which is then asked for the buckets shown.
pub fn coefficients(model: &Model, k: usize, names: &mut BucketNames) -> Vec<Coefficient> {
    let top = top_buckets(model, k);
    let buckets: Vec<u32> = top.iter().map(|(b, _)| *b).collect();
    names.want(&buckets);
    top.into_iter()
        .map(|(bucket, weight)| Coefficient {
            bucket,
            weight,
            feature: names.name(bucket).map(str::to_string),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(w: &[f64]) -> Model {
        let mut m = Model::new(w.len());
        for (i, x) in w.iter().enumerate() {
            m.w[i] = *x;
        }
        m
    }

    #[test]
    fn top_buckets_equal_a_full_sort_by_absolute_weight() {
        // A brute-force reference: sort everything, drop zeros, take k.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let w: Vec<f64> = (0..1000)
            .map(|i| {
                if i % 7 == 0 {
                    0.0
                } else {
                    (next() * 100.0).round() / 10.0
                }
            })
            .collect();
        let m = model(&w);
        for k in [0, 1, 5, 50, 857, 2000] {
            let mut all: Vec<(u32, f64)> = w
                .iter()
                .enumerate()
                .filter(|(_, x)| **x != 0.0)
                .map(|(i, x)| (i as u32, *x))
                .collect();
            all.sort_by(|a, b| {
                b.1.abs()
                    .partial_cmp(&a.1.abs())
                    .expect("finite weights")
                    .then(a.0.cmp(&b.0))
            });
            all.truncate(k);
            assert_eq!(top_buckets(&m, k), all, "k = {k}");
        }
    }

    #[test]
    fn the_intercept_is_not_a_coefficient() {
        let mut m = model(&[0.5, -2.0]);
        let bias = m.bias_index();
        m.w[bias] = 9.0;
        assert_eq!(top_buckets(&m, 10), vec![(1, -2.0), (0, 0.5)]);
    }

    #[test]
    fn buckets_are_named_once_wanted() {
        let mut n = BucketNames::default();
        assert!(!n.pending());
        n.note(3, "ignored".into());
        assert_eq!(n.name(3), None, "only wanted buckets are named");
        n.want(&[3, 200]);
        assert!(n.pending() && n.wants(3) && n.wants(200) && !n.wants(4));
        n.note(3, "country=DE".into());
        n.note(3, "mcc=5411".into());
        assert_eq!(
            n.name(3),
            Some("country=DE"),
            "the first value seen names it"
        );
        assert!(!n.wants(3));
        assert!(n.pending(), "bucket 200 still waits");
        n.note(200, "amount".into());
        assert!(!n.pending());
        // A new view keeps the names it still shows and forgets the rest.
        n.want(&[3, 9]);
        assert_eq!(n.name(3), Some("country=DE"));
        assert!(!n.wants(3) && n.wants(9) && !n.wants(200));
        assert_eq!(n.name(200), None);
    }

    #[test]
    fn coefficients_name_what_was_seen() {
        let m = model(&[0.0, 1.5, -3.0, 0.25]);
        let mut n = BucketNames::default();
        let first = coefficients(&m, 2, &mut n);
        assert_eq!(
            first
                .iter()
                .map(|c| (c.bucket, c.weight))
                .collect::<Vec<_>>(),
            [(2, -3.0), (1, 1.5)]
        );
        assert!(first.iter().all(|c| c.feature.is_none()));
        n.note(2, "amount".into());
        let second = coefficients(&m, 2, &mut n);
        assert_eq!(second[0].feature.as_deref(), Some("amount"));
        assert_eq!(second[1].feature, None);
    }
}
