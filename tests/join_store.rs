//! Crash consistency of the disk-backed join store: a child process writes a deterministic
//! workload, committing a cut every `OPS_PER_CUT` operations in batches of 4 KiB, and is
//! killed with SIGKILL at a random moment. Reopening the store must give exactly the state of its
//! last committed cut, which this process recomputes in memory from the same workload.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use streamlr::config::JoinConfig;
use streamlr::duration::HumanDuration;
use streamlr::event::Label;
use streamlr::features::SparseVec;
use streamlr::join::{Entry, JoinBackend, Joiner, MemoryBackend, Swept};
use streamlr::simulate::Rng;
use streamlr::store::JoinStore;

const OPS_PER_CUT: u64 = 300;

fn join_cfg() -> JoinConfig {
    JoinConfig {
        window: HumanDuration::from_millis(2_000),
        grace: HumanDuration::from_millis(100),
        label_wait: HumanDuration::from_millis(500),
        ..JoinConfig::default()
    }
}

/// Applies operation `k` of the deterministic workload (seeded by its index).
fn apply_op<B: JoinBackend>(j: &mut Joiner<B>, k: u64) {
    let mut rng = Rng::new(k.wrapping_mul(0x9E37_79B9) ^ 0xC0FFEE);
    let now = 1_000_000 + (k as i64) * 3;
    let mut sw = Swept::default();
    match rng.below(10) {
        0..=5 => {
            let dim = 2 + rng.below(30) as usize;
            let x = SparseVec {
                idx: (0..dim).map(|_| rng.below(1 << 20) as u32).collect(),
                val: (0..dim).map(|_| rng.normal() as f32).collect(),
            };
            let ts = now - rng.below(50) as i64;
            let entry = Entry {
                x,
                score: rng.uniform(),
                model_version: k / 100,
                event_ts: ts,
            };
            j.insert(&format!("e{k}"), entry);
            j.advance(ts, &mut sw);
        }
        _ => {
            // A label for a recent (or not yet seen) event.
            let target = k.saturating_sub(rng.below(700)) + rng.below(5);
            j.label(Label {
                id: format!("e{target}"),
                label: rng.below(2) == 1,
                ts: Some(now),
                weight: 1.0,
                entity: None,
            });
        }
    }
}

/// The writer, run as a child process by `sigkill_leaves_the_last_committed_cut`.
#[test]
#[ignore = "run as a child process by sigkill_leaves_the_last_committed_cut"]
fn crash_child_writer() {
    let dir = std::env::var("STREAMLR_CRASH_DIR").expect("STREAMLR_CRASH_DIR");
    // Small batches: each cut (~60 KB) reaches the disk in many, so a kill may land between two
    // of them and leave a half-written cut to roll back. Rarely: writing them takes microseconds
    // against the milliseconds of the fsync that ends the cut (none in 9 rounds, counted once);
    // `store::tests::a_cut_stopped_between_its_batches_is_rolled_back` is that case,
    // made deterministic.
    let store = JoinStore::open(std::path::Path::new(&dir), 8 << 20, 4)
        .expect("open")
        .with_cut_batch_bytes(4 << 10);
    let (shard, _) = store.shard(0).expect("shard");
    let mut j = Joiner::new(&join_cfg(), shard);
    for k in 0..2_000_000u64 {
        apply_op(&mut j, k);
        if (k + 1) % OPS_PER_CUT == 0 {
            let state = j.state().clone();
            let cut = store
                .commit(k + 1, &mut [(j.backend_mut(), &state)])
                .expect("commit");
            println!("cut {} {}", cut.seq, cut.tag);
        }
    }
}

#[test]
fn sigkill_leaves_the_last_committed_cut() {
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Rng::new(2026);
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STREAMLR_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let kill_after = 2 + rng.below(10);
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if line.starts_with("cut ") {
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        // Mid-stream: the writer is already applying the next operations, maybe committing.
        std::thread::sleep(std::time::Duration::from_millis(rng.below(30)));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");

        let store = JoinStore::open(dir.path(), 8 << 20, 4).expect("reopen");
        let cut = store
            .last_cut()
            .expect("read cut")
            .expect("a cut was committed");
        assert!(
            cut.seq >= kill_after,
            "round {round}: cut {} < {kill_after} seen",
            cut.seq
        );
        assert_eq!(
            cut.tag,
            cut.seq * OPS_PER_CUT,
            "the cut record belongs to its batch"
        );
        let (shard, state) = store.shard(0).expect("shard");
        let mut disk = Joiner::new(&join_cfg(), shard);
        disk.restore_state(state.expect("joiner state committed with the cut"));

        let mut mem = Joiner::new(&join_cfg(), MemoryBackend::default());
        for k in 0..cut.tag {
            apply_op(&mut mem, k);
        }
        assert_eq!(
            disk.state(),
            mem.state(),
            "round {round}: joiner state at cut {}",
            cut.seq
        );
        let got = disk.backend_mut().slots();
        let want = mem.backend().slots();
        assert_eq!(got.len(), want.len(), "round {round}");
        assert!(
            got == want,
            "round {round}: slots differ from the recomputed cut {}",
            cut.seq
        );
        assert_eq!(disk.backend().len(), want.len());
        eprintln!(
            "round {round}: killed after {seen} cuts seen, store at cut {} with {} slots",
            cut.seq,
            got.len()
        );
    }
}
