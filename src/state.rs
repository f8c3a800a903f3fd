//! The state directory of one worker: its lock, the join store and the checkpoint files, kept
//! consistent with each other.
//!
//! A **cut** writes the checkpoint file of version V first (learner state, offsets, and the
//! number S of the store commit it belongs to), then the store's atomic commit S tagged V. So
//! after a crash at any instant the directory holds one of:
//! - checkpoint V and store cut S (the cut completed);
//! - checkpoint V naming S, store still at S-1 (crash between the two writes): V is an orphan,
//!   deleted at start-up, and V-1 (naming S-1) is used.
//!
//! At start-up the newest valid checkpoint whose store cut exists is used; if the store is ahead
//! of it (the newest checkpoint was refused as corrupt), the store is rolled back to that
//! checkpoint's cut through its undo log (`join.rollback_cuts`).
//!
//! The directory is locked (`LOCK`, an OS file lock) by the process that writes it, so a second
//! worker or a `rollback` cannot write it at the same time.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checkpoint::{CheckpointError, CheckpointMeta, Checkpoints, PartitionOffset};
use crate::config::Config;
use crate::engine::{Engine, LearnerState};
use crate::join::JoinerState;
use crate::snapshot::{self, SchemaId, SnapshotError};
use crate::store::{DiskShard, InFlight, JoinStore, StoreError};

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another process holds the lock.
    #[error(
        "state directory {0} is in use by another process (a running worker?): stop it first, or give this one its own checkpoint.dir"
    )]
    Locked(String),
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Checkpoint files.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The join store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint's learner snapshot does not decode or has another schema.
    #[error(
        "checkpoint {version}: {source} (the feature schema changed? a model is only valid with the schema it was trained on: use a new checkpoint.dir)"
    )]
    Snapshot {
        /// Checkpoint version.
        version: u64,
        /// Cause.
        source: SnapshotError,
    },
    /// The store has state but no checkpoint describes it.
    #[error(
        "the join store in {dir} has {cuts} committed cut(s) but no valid checkpoint matches them: the directory cannot be resumed; move it away to start fresh"
    )]
    NoCheckpoint {
        /// The state directory.
        dir: String,
        /// Cuts in the store.
        cuts: u64,
    },
    /// A checkpoint names a store cut the store never reached (more than one ahead).
    #[error(
        "checkpoint {version} needs join store cut {needed}, but the store is at cut {at}: the join store was lost or replaced; restore it, or move the state directory away to start fresh"
    )]
    StoreBehind {
        /// Checkpoint version.
        version: u64,
        /// Its store cut.
        needed: u64,
        /// The store's last cut.
        at: u64,
    },
    /// The store cannot go back to the checkpoint's cut.
    #[error(
        "checkpoint {version} needs join store cut {needed}, but the store is at cut {at} and cannot roll back that far ({source}); move the state directory away to start fresh"
    )]
    Rollback {
        /// Checkpoint version.
        version: u64,
        /// Its store cut.
        needed: u64,
        /// The store's last cut.
        at: u64,
        /// Cause.
        source: StoreError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What start-up found in the directory.
#[derive(Debug, Default)]
pub struct Restored {
    /// The checkpoint resumed from (`None`: a new directory).
    pub meta: Option<CheckpointMeta>,
    /// Its learner state.
    pub learner: Option<LearnerState>,
    /// Checkpoints refused on the way (corrupt, truncated, tampered), newest first.
    pub refused: Vec<CheckpointError>,
    /// Orphan checkpoints deleted (written, but their store commit never happened).
    pub orphans: Vec<u64>,
    /// The store cut rolled back to, if the store was ahead of the checkpoint.
    pub store_rolled_back_to: Option<u64>,
}

/// An open, locked state directory.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
    store: JoinStore,
    ckpts: Checkpoints,
    schema: SchemaId,
    /// Last checkpoint version written or resumed from (0: none).
    version: u64,
    /// Highest checkpoint version present, so a new one never reuses a refused file's number.
    max_version: u64,
    /// Last store cut.
    seq: u64,
    /// This directory's identity (see [`Self::instance`]).
    instance: String,
    /// The offsets this worker last committed to the group (see [`Self::record_commit`]).
    committed: Vec<PartitionOffset>,
    /// A cut whose store commit runs on the commit thread, with its checkpoint version.
    in_flight: Option<(InFlight, u64)>,
}

/// Locks `checkpoint.dir` (created if missing) for this process.
pub fn lock(cfg: &Config) -> Result<File, StateError> {
    let dir = Path::new(&cfg.checkpoint.dir);
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StateError::Locked(dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// The file of [`StateDir::record_commit`].
const COMMITTED: &str = "COMMITTED";

/// Reads `dir/INSTANCE`, or makes it (random, fsynced) for a new directory.
fn instance_id(dir: &Path) -> Result<String, StateError> {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Write;
    let path = dir.join("INSTANCE");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }
    // RandomState is seeded from the OS per process; mix in time and pid for good measure.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let id = format!("{:016x}", h.finish());
    let tmp = dir.join(".INSTANCE.tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(id.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(id)
}

/// The schema identity of a configuration (what a snapshot must match).
pub fn schema_of(cfg: &Config) -> SchemaId {
    SchemaId {
        digest: cfg.schema_digest(),
        hash_seed: cfg.features.hash_seed,
        hash_bits: cfg.features.hash_bits,
    }
}

impl StateDir {
    /// Locks and opens the state directory of `cfg`, reconciles checkpoints with the store as
    /// described in the module docs, and returns what to resume from.
    pub fn open(cfg: &Config) -> Result<(Self, Restored), StateError> {
        let lock = lock(cfg)?;
        let store = JoinStore::open(
            &cfg.checkpoint.join_dir(),
            cfg.join.cache_bytes,
            cfg.join.rollback_cuts,
        )?
        .with_cut_batch_bytes(usize::try_from(cfg.join.cut_batch_bytes).unwrap_or(usize::MAX))
        .with_recent_bytes(usize::try_from(cfg.join.recent_bytes).unwrap_or(usize::MAX));
        let ckpts = Checkpoints::open(&cfg.checkpoint.checkpoints_dir(), cfg.checkpoint.keep)?
            .with_key(&cfg.checkpoint.hmac_key);
        let schema = schema_of(cfg);
        let seq = store.last_cut()?.map_or(0, |c| c.seq);
        let mut restored = Restored::default();
        let mut chosen = None;
        for version in ckpts.versions()?.into_iter().rev() {
            match ckpts.load(version) {
                Ok(c) if c.meta.store_cut.unwrap_or(0) == seq + 1 => {
                    // Written, but the store commit that completes it never happened.
                    let path = ckpts.path(version);
                    std::fs::remove_file(&path).map_err(io(&path))?;
                    restored.orphans.push(version);
                }
                Ok(c) if c.meta.store_cut.unwrap_or(0) > seq + 1 => {
                    // The store is behind by more than one cut: it was lost or replaced.
                    return Err(StateError::StoreBehind {
                        version,
                        needed: c.meta.store_cut.unwrap_or(0),
                        at: seq,
                    });
                }
                Ok(c) => {
                    chosen = Some(c);
                    break;
                }
                Err(e) => restored.refused.push(e),
            }
        }
        let max_version = ckpts.versions()?.last().copied().unwrap_or(0);
        let instance = instance_id(Path::new(&cfg.checkpoint.dir))?;
        let committed = std::fs::read(Path::new(&cfg.checkpoint.dir).join(COMMITTED))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut state = Self {
            dir: Path::new(&cfg.checkpoint.dir).to_path_buf(),
            _lock: lock,
            store,
            ckpts,
            schema,
            version: 0,
            max_version,
            seq,
            instance,
            committed,
            in_flight: None,
        };
        let Some(c) = chosen else {
            if seq > 0 {
                return Err(StateError::NoCheckpoint {
                    dir: state.dir.display().to_string(),
                    cuts: seq,
                });
            }
            return Ok((state, restored));
        };
        let (_, learner) = snapshot::decode(&c.learner, Some(&state.schema)).map_err(|source| {
            StateError::Snapshot {
                version: c.meta.version,
                source,
            }
        })?;
        let needed = c.meta.store_cut.unwrap_or(0);
        if needed < seq {
            state
                .store
                .rollback_to(needed)
                .map_err(|source| StateError::Rollback {
                    version: c.meta.version,
                    needed,
                    at: seq,
                    source,
                })?;
            state.seq = needed;
            restored.store_rolled_back_to = Some(needed);
        }
        state.version = c.meta.version;
        restored.learner = Some(learner);
        restored.meta = Some(c.meta);
        Ok((state, restored))
    }

    /// A random identity made when the directory was created: the worker writes it into the
    /// metadata of its offset commits, so it can tell its own commits from another worker's.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Remembers the offsets this worker just committed to the group (file `COMMITTED`), so that
    /// after falling back to an older checkpoint it can tell its own commits, which are ahead of
    /// its state, from another worker's. A lost write only makes the worker treat its own
    /// commit as another's.
    pub fn record_commit(&mut self, offsets: Vec<PartitionOffset>) -> Result<(), StateError> {
        let path = self.dir.join(COMMITTED);
        let tmp = self.dir.join(".COMMITTED.tmp");
        let bytes = serde_json::to_vec(&offsets).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.committed = offsets;
        Ok(())
    }

    /// Whether the group's committed `offset` of `topic`/`partition` is one this worker wrote.
    pub fn committed_by_us(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.committed
            .iter()
            .any(|o| o.topic == topic && o.partition == partition && o.offset == offset)
    }

    /// The join store.
    pub fn store(&self) -> &JoinStore {
        &self.store
    }

    /// The checkpoint files.
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.ckpts
    }

    /// The last checkpoint version written or resumed from (0: none yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Takes a cut: checkpoint V (the learner state of `engine`, `offsets`, `label_ranges`),
    /// then the store commit of every shard of `engine` tagged V. Returns the checkpoint's
    /// metadata. On error nothing after the failing step happened; the caller must stop (the
    /// store poisons itself on a failed commit).
    pub fn cut(
        &mut self,
        engine: &mut Engine<DiskShard>,
        offsets: Vec<PartitionOffset>,
        label_ranges: Vec<(i32, i64, i64)>,
    ) -> Result<CheckpointMeta, StateError> {
        let meta = self.begin_cut(engine, offsets, label_ranges)?;
        self.finish_cut(engine)?;
        Ok(meta)
    }

    /// [`Self::cut`] whose store commit runs on the commit thread: writes checkpoint V, freezes
    /// the shards' changes and returns; `engine` goes on (reads see the frozen changes). The cut
    /// is durable once [`Self::finish_cut`] returns. A cut still in flight is
    /// finished first.
    pub fn begin_cut(
        &mut self,
        engine: &mut Engine<DiskShard>,
        offsets: Vec<PartitionOffset>,
        label_ranges: Vec<(i32, i64, i64)>,
    ) -> Result<CheckpointMeta, StateError> {
        self.finish_cut(engine)?;
        let version = self.max_version.max(self.version) + 1;
        let meta = CheckpointMeta {
            version,
            parent: (self.version > 0).then_some(self.version),
            created_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            schema_digest: self.schema.digest.clone(),
            offsets,
            label_ranges,
            store_cut: Some(self.seq + 1),
            lineage: None,
        };
        self.ckpts.write(
            &meta,
            &snapshot::encode_view(&self.schema, &engine.learner_view()),
        )?;
        self.max_version = version;
        let states: Vec<JoinerState> = engine
            .shards()
            .values()
            .map(|j| j.state().clone())
            .collect();
        let mut shards: Vec<(&mut DiskShard, &JoinerState)> = engine
            .shards_mut()
            .values_mut()
            .zip(states.iter())
            .map(|(j, st)| (j.backend_mut(), st))
            .collect();
        let job = self.store.begin_commit(version, &mut shards)?;
        self.in_flight = Some((job, version));
        Ok(meta)
    }

    /// True while a cut's store commit runs and has not ended.
    pub fn cut_running(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|(job, _)| !job.is_finished())
    }

    /// Waits for the cut in flight, if any, until it is durable.
    pub fn finish_cut(&mut self, engine: &mut Engine<DiskShard>) -> Result<(), StateError> {
        let Some((job, version)) = self.in_flight.take() else {
            return Ok(());
        };
        let mut shards: Vec<&mut DiskShard> = engine
            .shards_mut()
            .values_mut()
            .map(|j| j.backend_mut())
            .collect();
        let c = job.finish(&mut shards)?;
        self.version = version;
        self.seq = c.seq;
        self.ckpts.prune()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> Config {
        let mut c = Config::default();
        c.checkpoint.dir = dir.display().to_string();
        c.join.cache_bytes = 1 << 20;
        c
    }

    fn engine(state: &StateDir, cfg: &Config) -> Engine<DiskShard> {
        let store = state.store().clone();
        Engine::new(cfg.clone(), move |p| store.shard_or_poisoned(p as u32))
    }

    fn event(e: &mut Engine<DiskShard>, i: u32) {
        let line = format!(
            r#"{{"id":"e{i}","ts":{},"features":{{"amount":{i}}}}}"#,
            1000 + i
        );
        e.on_event(line.as_bytes(), 0, 0, 0).expect("valid event");
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path());
        let (first, _) = StateDir::open(&c).expect("first");
        assert!(matches!(StateDir::open(&c), Err(StateError::Locked(_))));
        drop(first);
        StateDir::open(&c).expect("free again once the first is gone");
    }

    #[test]
    fn an_orphan_checkpoint_is_removed_and_the_previous_one_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path());
        {
            let (mut state, restored) = StateDir::open(&c).expect("open");
            assert!(restored.meta.is_none());
            let mut e = engine(&state, &c);
            event(&mut e, 1);
            assert_eq!(
                state
                    .cut(&mut e, Vec::new(), Vec::new())
                    .expect("cut")
                    .version,
                1
            );
            event(&mut e, 2);
            assert_eq!(
                state
                    .cut(&mut e, Vec::new(), Vec::new())
                    .expect("cut")
                    .version,
                2
            );
            // A crash between writing checkpoint 3 and committing store cut 3.
            let meta = CheckpointMeta {
                version: 3,
                parent: Some(2),
                created_at_ms: 0,
                schema_digest: schema_of(&c).digest,
                offsets: Vec::new(),
                label_ranges: Vec::new(),
                store_cut: Some(3),
                lineage: None,
            };
            let learner = snapshot::encode(&schema_of(&c), &e.learner_state());
            state.checkpoints().write(&meta, &learner).expect("write");
        }
        let (state, restored) = StateDir::open(&c).expect("reopen");
        assert_eq!(restored.orphans, vec![3]);
        assert_eq!(restored.meta.map(|m| m.version), Some(2));
        assert_eq!(restored.learner.map(|l| l.counters.events_scored), Some(2));
        assert_eq!(
            state.checkpoints().versions().expect("versions"),
            vec![1, 2]
        );
        assert_eq!(restored.store_rolled_back_to, None);
    }

    #[test]
    fn a_store_without_any_valid_checkpoint_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path());
        {
            let (mut state, _) = StateDir::open(&c).expect("open");
            let mut e = engine(&state, &c);
            event(&mut e, 1);
            state.cut(&mut e, Vec::new(), Vec::new()).expect("cut");
            std::fs::remove_file(state.checkpoints().path(1)).expect("remove");
        }
        assert!(matches!(
            StateDir::open(&c),
            Err(StateError::NoCheckpoint { cuts: 1, .. })
        ));
    }

    #[test]
    fn own_commits_are_recognized_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path());
        let id = {
            let (mut state, _) = StateDir::open(&c).expect("open");
            let o = PartitionOffset {
                topic: "events".into(),
                partition: 1,
                offset: 42,
            };
            state.record_commit(vec![o]).expect("record");
            state.instance().to_string()
        };
        let (state, _) = StateDir::open(&c).expect("reopen");
        assert_eq!(state.instance(), id, "the identity is stable");
        assert!(state.committed_by_us("events", 1, 42));
        assert!(!state.committed_by_us("events", 1, 43));
        assert!(!state.committed_by_us("labels", 1, 42));
    }
}
