//! Join store figures (a plain main, not criterion: the interesting runs take tens of seconds).
//!
//! Run: `cargo bench --bench join_store` (env `STREAMLR_BENCH_PAIRS`, default 1 000 000, and
//! `STREAMLR_BENCH_PENDING`, default 10 000 000).
//! Prints: insert + take pairs/s with 30-feature entries, with and without the undo log, each
//! with every cut committed inline and with cuts committed on their own thread as the worker
//! takes them (the next cut waits for the previous commit); peak RSS and on-disk bytes per entry
//! with N pending entries; expiry sweep time per 1M entries; and the process's RSS after every
//! million entries in both runs (`rss:` lines), which shows whether memory grows with what the
//! store holds on disk.

use std::time::Instant;

use streamlr::config::JoinConfig;
use streamlr::duration::HumanDuration;
use streamlr::event::Label;
use streamlr::features::SparseVec;
use streamlr::join::{Entry, Joiner, Swept};
use streamlr::simulate::Rng;
use streamlr::store::{DiskShard, InFlight, JoinStore};

/// The allocator the binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const COMMIT_EVERY: u64 = 100_000;

fn entry(rng: &mut Rng, ts: i64) -> Entry {
    let bucket = |k: u32| streamlr::hash::murmur3_32(&k.to_le_bytes(), 0) & ((1 << 20) - 1);
    let mut x = SparseVec::default();
    for f in 0..20 {
        x.idx.push(bucket(f));
        x.val.push(rng.normal() as f32);
    }
    for f in 0..10u32 {
        x.idx
            .push(bucket(1000 + f * 1000 + rng.zipf(1000, 1.1) as u32));
        x.val.push(1.0);
    }
    Entry {
        x,
        score: rng.uniform(),
        model_version: 1,
        event_ts: ts,
    }
}

/// Entries drawn in advance: the timed loops clone one (as the worker builds one per event)
/// instead of drawing 20 normals and 10 Zipf values each, which took ~10 % of the loop and is
/// not the store's work.
struct Pool(Vec<Entry>);

impl Pool {
    fn new(rng: &mut Rng) -> Self {
        Pool((0..4096).map(|_| entry(rng, 0)).collect())
    }

    fn entry(&self, i: u64, ts: i64) -> Entry {
        let mut e = self.0[i as usize % self.0.len()].clone();
        e.event_ts = ts;
        e
    }
}

/// A memory figure of this process (`VmHWM`, `VmRSS`), in MiB; NaN where /proc is not there.
fn status_mib(field: &str) -> f64 {
    streamlr::telemetry::memory_status_bytes(field).map_or(f64::NAN, |b| b as f64 / 1048576.0)
}

/// Collects VmRSS after every million entries and prints them as one line.
#[derive(Default)]
struct RssCurve(Vec<(u64, f64)>);

impl RssCurve {
    fn sample(&mut self, done: u64) {
        if done.is_multiple_of(1_000_000) {
            self.0.push((done / 1_000_000, status_mib("VmRSS")));
        }
    }

    fn print(&self, what: &str) {
        let points: Vec<String> = self
            .0
            .iter()
            .map(|(m, mib)| format!("{m}M {mib:.0}"))
            .collect();
        println!("rss: {what}: MiB after N entries: {}", points.join(", "));
    }
}

/// A cut the way the worker takes it: wait for the previous cut's commit, then begin this one
/// on its own thread and go on (returns the seconds spent waiting).
fn pipelined_commit(
    store: &JoinStore,
    j: &mut Joiner<DiskShard>,
    tag: u64,
    in_flight: &mut Option<InFlight>,
) -> f64 {
    let t = Instant::now();
    finish(j, in_flight);
    let waited = t.elapsed().as_secs_f64();
    let state = j.state().clone();
    match store.begin_commit(tag, &mut [(j.backend_mut(), &state)]) {
        Ok(job) => *in_flight = Some(job),
        Err(e) => {
            eprintln!("commit failed: {e}");
            std::process::exit(1);
        }
    }
    waited
}

/// Waits for the commit in flight, if any.
fn finish(j: &mut Joiner<DiskShard>, in_flight: &mut Option<InFlight>) {
    if let Some(job) = in_flight.take()
        && let Err(e) = job.finish(&mut [j.backend_mut()])
    {
        eprintln!("commit failed: {e}");
        std::process::exit(1);
    }
}

fn commit(store: &JoinStore, j: &mut Joiner<DiskShard>, tag: u64) {
    let state = j.state().clone();
    if let Err(e) = store.commit(tag, &mut [(j.backend_mut(), &state)]) {
        eprintln!("commit failed: {e}");
        std::process::exit(1);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` / `--list`: nothing to run.
    }
    let pending: u64 = std::env::var("STREAMLR_BENCH_PENDING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let cfg = JoinConfig {
        window: HumanDuration::from_secs(7 * 86_400),
        grace: HumanDuration::from_secs(3_600),
        ..JoinConfig::default()
    };
    let mut rng = Rng::new(7);
    let pool = Pool::new(&mut rng);

    // 1. Insert + take: N events then their labels, committing every 100k operations; without
    //    and with the undo log (rollback to the previous cut).
    let pairs: u64 = std::env::var("STREAMLR_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    for (keep, pipelined) in [(0, false), (0, true), (1, false), (1, true)] {
        let n = pairs;
        let mut curve = RssCurve::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JoinStore::open(dir.path(), 64 << 20, keep).expect("open");
        let (shard, _) = store.shard(0).expect("shard");
        let mut j = Joiner::new(&cfg, shard);
        let t = Instant::now();
        let mut sw = Swept::default();
        let mut in_commit = 0.0;
        let mut in_flight = None;
        for i in 0..n {
            let ts = 1_700_000_000_000 + i as i64;
            j.insert(&format!("tx-{i}"), pool.entry(i, ts));
            j.advance(ts, &mut sw);
            if (i + 1) % COMMIT_EVERY == 0 {
                if pipelined {
                    in_commit += pipelined_commit(&store, &mut j, i, &mut in_flight);
                } else {
                    let c = Instant::now();
                    commit(&store, &mut j, i);
                    in_commit += c.elapsed().as_secs_f64();
                }
            }
            curve.sample(i + 1);
            // The label of an event ~50k events earlier.
            if i >= 50_000 {
                let id = format!("tx-{}", i - 50_000);
                let _ = j.label(Label {
                    id,
                    label: false,
                    ts: None,
                    weight: 1.0,
                    entity: None,
                });
            }
        }
        finish(&mut j, &mut in_flight);
        commit(&store, &mut j, n);
        let secs = t.elapsed().as_secs_f64();
        let (how, waiting) = if pipelined {
            (
                "commits on their own thread, as the worker",
                "waiting for commits",
            )
        } else {
            ("commits inline", "in commits")
        };
        println!(
            "insert+take (undo log for {keep} cut, {how}): {n} entries (30 features), {:.0} pairs/s ({secs:.2} s, {in_commit:.2} s {waiting})",
            n as f64 / secs
        );
        curve.print(&format!(
            "insert+take, undo log for {keep} cut, {how} (each entry held after its label: 7-day window)"
        ));
    }

    // 2. N pending entries: RSS and bytes on disk; then an expiry sweep of the first 1M.
    // Reset the peak-RSS counter so the figure is this section's own.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JoinStore::open(dir.path(), 64 << 20, 0).expect("open");
    let (shard, _) = store.shard(0).expect("shard");
    let mut j = Joiner::new(&cfg, shard);
    let mut curve = RssCurve::default();
    let t = Instant::now();
    for i in 0..pending {
        let ts = 1_700_000_000_000 + i as i64;
        j.insert(&format!("tx-{i:010}"), pool.entry(i, ts));
        if (i + 1) % COMMIT_EVERY == 0 {
            commit(&store, &mut j, i);
        }
        curve.sample(i + 1);
    }
    commit(&store, &mut j, pending);
    curve.print("pending entries");
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(std::time::Duration::from_secs(2)); // let flushes settle before measuring
    let disk = store.disk_space();
    println!(
        "pending: {pending} entries inserted at {:.0}/s; peak RSS {:.0} MiB; {} bytes on disk ({:.1} B/entry)",
        pending as f64 / secs,
        status_mib("VmHWM"),
        disk,
        disk as f64 / pending as f64
    );
    let sweep = 1_000_000.min(pending);
    let watermark =
        1_700_000_000_000 + sweep as i64 + cfg.window.as_millis_i64() + cfg.grace.as_millis_i64();
    let t = Instant::now();
    let mut sw = Swept::default();
    j.advance(watermark, &mut sw);
    commit(&store, &mut j, pending + 1);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "expiry sweep: {} entries expired in {secs:.2} s ({:.2} s per 1M, commit included)",
        sw.expired.len(),
        secs * 1e6 / sw.expired.len().max(1) as f64
    );
}
