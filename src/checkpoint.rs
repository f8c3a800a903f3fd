//! Checkpoint files: the learner state of one atomic cut, with its lineage and the Kafka offsets
//! it covers.
//!
//! A checkpoint is `ckpt-<version, 20 digits>.bin` in the checkpoint directory:
//! `b"STRMLRCK"` · format (u16 LE) · CRC-32 of the payload (u32 LE) · payload length (u64 LE) ·
//! payload (postcard: [`CheckpointMeta`] then the learner snapshot of [`crate::snapshot`]). It is
//! written to a temporary file, fsynced, renamed into place and the directory fsynced, so a reader
//! sees a whole checkpoint or none. The last `keep` are kept. A file whose magic, format,
//! checksum or payload is wrong is refused with its reason, and readers fall back to the newest
//! valid one.
//!
//! Signed checkpoints (`checkpoint.hmac_key` set) are format 2: the payload is followed by the
//! HMAC-SHA256, under the key, of magic · format · payload. With a key configured, a file that
//! is unsigned or whose tag does not verify is refused; without one, a signed file is read on
//! its CRC alone.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError};

const MAGIC: &[u8; 8] = b"STRMLRCK";
/// Checkpoint format, unsigned.
pub const FORMAT: u16 = 1;
/// Checkpoint format, signed: the payload is followed by its HMAC-SHA256 tag.
pub const FORMAT_SIGNED: u16 = 2;
const TAG: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The HMAC of magic · format · payload under `key`.
fn mac(key: &[u8], format: u16, payload: &[u8]) -> HmacSha256 {
    use hmac::Mac;
    // HMAC takes keys of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(MAGIC);
    m.update(&format.to_le_bytes());
    m.update(payload);
    m
}

/// The next offset to read from one partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to consume.
    pub offset: i64,
}

/// What a checkpoint is, besides the learner state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Monotonic version.
    pub version: u64,
    /// The version this one continues from (`None` for the first).
    pub parent: Option<u64>,
    /// Wall-clock time of writing, epoch ms.
    pub created_at_ms: i64,
    /// Schema digest of the configuration that trained the model.
    pub schema_digest: String,
    /// Next offset of every assigned partition of both topics.
    pub offsets: Vec<PartitionOffset>,
    /// Label offsets consumed since the parent: (partition, from, to exclusive).
    pub label_ranges: Vec<(i32, i64, i64)>,
    /// The join store cut written with this checkpoint.
    pub store_cut: Option<u64>,
    /// A note on how this version came to be (e.g. "rollback to 12").
    pub lineage: Option<String>,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a checkpoint, truncated, wrong format, bad checksum or undecodable payload.
    #[error("{path}: refused: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No such version.
    #[error("no checkpoint with version {0}")]
    Missing(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A checkpoint read back from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// The learner snapshot bytes ([`crate::snapshot::encode`]).
    pub learner: Vec<u8>,
}

/// One entry of [`Checkpoints::list`]: a version and whether its file is valid.
#[derive(Debug)]
pub struct Listed {
    /// Version from the file name.
    pub version: u64,
    /// The file.
    pub path: PathBuf,
    /// Its metadata, or why it was refused.
    pub status: Result<CheckpointMeta, CheckpointError>,
}

/// The checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    keep: usize,
    /// HMAC key: sign what is written, require and verify a signature on what is read.
    key: Option<Vec<u8>>,
}

impl Checkpoints {
    /// The directory `dir` (created if missing), keeping the last `keep` checkpoints.
    pub fn open(dir: &Path, keep: usize) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            key: None,
        })
    }

    /// Signs and verifies with this HMAC key (`""` = unsigned).
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = (!key.is_empty()).then(|| key.as_bytes().to_vec());
        self
    }

    /// The file of `version`.
    pub fn path(&self, version: u64) -> PathBuf {
        self.dir.join(format!("ckpt-{version:020}.bin"))
    }

    /// Versions present, ascending (valid or not).
    pub fn versions(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut v = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(num) = name
                .strip_prefix("ckpt-")
                .and_then(|n| n.strip_suffix(".bin"))
                && let Ok(version) = num.parse()
            {
                v.push(version);
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    /// Writes a checkpoint atomically (temp file, fsync, rename, directory fsync). Old files are
    /// removed by [`Self::prune`].
    pub fn write(&self, meta: &CheckpointMeta, learner: &[u8]) -> Result<PathBuf, CheckpointError> {
        let body = postcard::to_stdvec(&(meta, learner)).map_err(|e| CheckpointError::Invalid {
            path: self.path(meta.version).display().to_string(),
            reason: e.to_string(),
        })?;
        let bytes = match &self.key {
            None => frame::seal(MAGIC, FORMAT, &body),
            Some(key) => {
                use hmac::Mac;
                let tag = mac(key, FORMAT_SIGNED, &body).finalize().into_bytes();
                let mut signed = body;
                signed.extend_from_slice(&tag);
                frame::seal(MAGIC, FORMAT_SIGNED, &signed)
            }
        };
        let path = self.path(meta.version);
        let tmp = self.dir.join(format!(".ckpt-{:020}.tmp", meta.version));
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(path)
    }

    /// Removes all but the newest `keep` checkpoint files. The worker calls it only once the
    /// newest one's store cut is committed, so a crash in between never leaves no usable one.
    pub fn prune(&self) -> Result<(), CheckpointError> {
        let versions = self.versions()?;
        if versions.len() > self.keep {
            for old in &versions[..versions.len() - self.keep] {
                let p = self.path(*old);
                fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        Ok(())
    }

    /// Reads and verifies `version`.
    pub fn load(&self, version: u64) -> Result<Checkpoint, CheckpointError> {
        let path = self.path(version);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckpointError::Missing(version));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let bad = |reason: String| CheckpointError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let (format, body) = frame::open(MAGIC, &bytes)
            .map_err(|_| bad("not a streamlr checkpoint, or truncated".into()))?;
        if format != FORMAT && format != FORMAT_SIGNED {
            return Err(bad(format!(
                "format {format} is not supported (this build reads {FORMAT} and {FORMAT_SIGNED})"
            )));
        }
        let body = body.map_err(|e| {
            bad(match e {
                FrameError::Checksum => "checksum mismatch: corrupt or tampered".into(),
                _ => "length does not match: truncated or extended".into(),
            })
        })?;
        let body = match (format == FORMAT_SIGNED, &self.key) {
            (false, None) => body,
            (false, Some(_)) => {
                return Err(bad(
                    "not signed, and checkpoint.hmac_key is set: refused".into()
                ));
            }
            (true, key) => {
                if body.len() < TAG {
                    return Err(bad("signed, but shorter than its tag".into()));
                }
                let (payload, tag) = body.split_at(body.len() - TAG);
                if let Some(key) = key {
                    use hmac::Mac;
                    mac(key, FORMAT_SIGNED, payload)
                        .verify_slice(tag)
                        .map_err(|_| {
                            bad("HMAC mismatch: tampered, or signed with another key".into())
                        })?;
                }
                payload
            }
        };
        let (meta, learner): (CheckpointMeta, Vec<u8>) =
            postcard::from_bytes(body).map_err(|e| bad(format!("payload does not decode: {e}")))?;
        if meta.version != version {
            return Err(bad(format!(
                "file name says version {version}, content says {}",
                meta.version
            )));
        }
        Ok(Checkpoint { meta, learner })
    }

    /// Every checkpoint with its status, ascending.
    pub fn list(&self) -> Result<Vec<Listed>, CheckpointError> {
        Ok(self
            .versions()?
            .into_iter()
            .map(|version| Listed {
                version,
                path: self.path(version),
                status: self.load(version).map(|c| c.meta),
            })
            .collect())
    }

    /// The newest valid checkpoint at or below `at_most`, with the refusals met on the way
    /// (newest first) so the caller can log them.
    pub fn latest_valid(
        &self,
        at_most: u64,
    ) -> Result<(Option<Checkpoint>, Vec<CheckpointError>), CheckpointError> {
        let mut refused = Vec::new();
        for version in self.versions()?.into_iter().rev().filter(|v| *v <= at_most) {
            match self.load(version) {
                Ok(c) => return Ok((Some(c), refused)),
                Err(e) => refused.push(e),
            }
        }
        Ok((None, refused))
    }

    /// Makes the model of `version` the new head: a new checkpoint with the next version, its
    /// parent `version`, a lineage note, and the *current head's* offsets (offsets are not
    /// rewound: the rolled-back model continues from where the stream is).
    pub fn rollback(&self, version: u64, now_ms: i64) -> Result<CheckpointMeta, CheckpointError> {
        let target = self.load(version)?;
        let head = self.versions()?.last().copied().unwrap_or(version);
        self.new_head(
            &target.learner,
            version,
            &target.meta.schema_digest,
            format!("rollback to version {version} (head was {head})"),
            now_ms,
        )
    }

    /// Writes `learner` as the new head: the next version after every file present, with
    /// `parent`, `lineage`, and the newest valid checkpoint's offsets and store cut (the join
    /// store and the stream position stay where they are).
    pub fn new_head(
        &self,
        learner: &[u8],
        parent: u64,
        schema_digest: &str,
        lineage: String,
        now_ms: i64,
    ) -> Result<CheckpointMeta, CheckpointError> {
        let head_version = self.versions()?.last().copied().unwrap_or(parent);
        let (head, _) = self.latest_valid(head_version)?;
        let head = head.ok_or(CheckpointError::Missing(head_version))?;
        let meta = CheckpointMeta {
            version: head_version + 1,
            parent: Some(parent),
            created_at_ms: now_ms,
            schema_digest: schema_digest.to_string(),
            offsets: head.meta.offsets.clone(),
            label_ranges: Vec::new(),
            store_cut: head.meta.store_cut,
            lineage: Some(lineage),
        };
        self.write(&meta, learner)?;
        self.prune()?;
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u64) -> CheckpointMeta {
        CheckpointMeta {
            version,
            parent: version.checked_sub(1).filter(|v| *v > 0),
            created_at_ms: 1_700_000_000_000 + version as i64,
            schema_digest: "abc".into(),
            offsets: vec![
                PartitionOffset {
                    topic: "events".into(),
                    partition: 0,
                    offset: 10 * version as i64,
                },
                PartitionOffset {
                    topic: "labels".into(),
                    partition: 0,
                    offset: 7 * version as i64,
                },
            ],
            label_ranges: vec![(0, 7 * (version as i64 - 1), 7 * version as i64)],
            store_cut: Some(version),
            lineage: None,
        }
    }

    #[test]
    fn signed_checkpoints_are_verified_and_a_forged_one_is_refused() {
        use hmac::Mac;
        let dir = tempfile::tempdir().expect("tempdir");
        let signed = Checkpoints::open(dir.path(), 10)
            .expect("open")
            .with_key("k1");
        signed.write(&meta(1), b"model 1").expect("write");
        assert_eq!(signed.load(1).expect("verified").learner, b"model 1");
        let reason = |r: Result<Checkpoint, CheckpointError>| match r {
            Err(CheckpointError::Invalid { reason, .. }) => reason,
            other => panic!("not refused: {other:?}"),
        };
        // Another key: refused.
        let other = Checkpoints::open(dir.path(), 10)
            .expect("open")
            .with_key("k2");
        assert!(reason(other.load(1)).contains("HMAC mismatch"));
        // The tag is the HMAC-SHA256 of magic · format · payload, computed here independently.
        let bytes = fs::read(signed.path(1)).expect("read");
        let body = &bytes[22..];
        let (payload, tag) = body.split_at(body.len() - 32);
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k1").expect("key");
        m.update(b"STRMLRCK");
        m.update(&FORMAT_SIGNED.to_le_bytes());
        m.update(payload);
        assert_eq!(&m.finalize().into_bytes()[..], tag);
        // A forgery that fixes the CRC (anyone can) but cannot fix the tag: refused.
        let mut forged_payload = payload.to_vec();
        let last = forged_payload.len() - 1;
        forged_payload[last] ^= 1;
        let mut forged_body = forged_payload.clone();
        forged_body.extend_from_slice(tag);
        fs::write(
            signed.path(2),
            frame::seal(MAGIC, FORMAT_SIGNED, &forged_body),
        )
        .expect("write");
        assert!(reason(signed.load(2)).contains("HMAC mismatch"));
        // An unsigned checkpoint where a key is configured: refused (no downgrade).
        let unsigned = Checkpoints::open(dir.path(), 10).expect("open");
        unsigned.write(&meta(3), b"model 3").expect("write");
        assert!(reason(signed.load(3)).contains("not signed"));
        // Without a key, a signed file is read on its CRC.
        assert_eq!(unsigned.load(1).expect("crc only").learner, b"model 1");
        // latest_valid skips the refused ones.
        let (found, refused) = signed.latest_valid(u64::MAX).expect("scan");
        assert_eq!(refused.len(), 2);
        assert_eq!(found.expect("valid").meta.version, 1);
    }

    #[test]
    fn write_load_keep_last_k() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Checkpoints::open(dir.path(), 3).expect("open");
        for v in 1..=5 {
            c.write(&meta(v), format!("model {v}").as_bytes())
                .expect("write");
        }
        // Writing never removes (the store commit comes after); pruning keeps the newest 3.
        assert_eq!(c.versions().expect("list"), vec![1, 2, 3, 4, 5]);
        c.prune().expect("prune");
        assert_eq!(c.versions().expect("list"), vec![3, 4, 5]);
        let back = c.load(5).expect("load");
        assert_eq!(back.meta, meta(5));
        assert_eq!(back.learner, b"model 5");
        assert!(matches!(c.load(1), Err(CheckpointError::Missing(1))));
        // No temporary files are left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("e").file_name().to_string_lossy().into())
            .collect();
        assert!(names.iter().all(|n| n.starts_with("ckpt-")), "{names:?}");
    }

    #[test]
    fn corrupt_truncated_or_renamed_files_are_refused_and_the_previous_one_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Checkpoints::open(dir.path(), 5).expect("open");
        for v in 1..=3 {
            c.write(&meta(v), &[v as u8; 100]).expect("write");
            c.prune().expect("prune");
        }
        // Flip one payload byte of the newest.
        let p3 = c.path(3);
        let mut bytes = fs::read(&p3).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&p3, &bytes).expect("tamper");
        let err = c.load(3).expect_err("tampered").to_string();
        assert!(err.contains("checksum"), "{err}");
        let (found, refused) = c.latest_valid(u64::MAX).expect("scan");
        assert_eq!(found.expect("a valid one").meta.version, 2);
        assert_eq!(refused.len(), 1);
        // Truncated.
        let p2 = c.path(2);
        let bytes = fs::read(&p2).expect("read");
        fs::write(&p2, &bytes[..bytes.len() / 2]).expect("truncate");
        assert!(
            c.load(2)
                .expect_err("truncated")
                .to_string()
                .contains("truncated")
        );
        assert_eq!(
            c.latest_valid(u64::MAX)
                .expect("scan")
                .0
                .expect("v1")
                .meta
                .version,
            1
        );
        // A file renamed to another version is refused too.
        fs::copy(c.path(1), c.path(9)).expect("copy");
        assert!(
            c.load(9)
                .expect_err("renamed")
                .to_string()
                .contains("content says 1")
        );
        // Garbage.
        fs::write(c.path(10), b"hello").expect("garbage");
        assert!(c.load(10).is_err());
        let listed = c.list().expect("list");
        assert_eq!(listed.iter().filter(|l| l.status.is_ok()).count(), 1);
    }

    #[test]
    fn rollback_makes_an_old_model_the_new_head_without_rewinding_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Checkpoints::open(dir.path(), 10).expect("open");
        for v in 1..=4 {
            c.write(&meta(v), format!("model {v}").as_bytes())
                .expect("write");
        }
        let m = c.rollback(2, 42).expect("rollback");
        assert_eq!(m.version, 5);
        assert_eq!(m.parent, Some(2));
        assert_eq!(m.offsets, meta(4).offsets, "offsets stay at the head's");
        assert!(
            m.lineage
                .as_deref()
                .unwrap_or("")
                .contains("rollback to version 2")
        );
        let head = c.load(5).expect("new head");
        assert_eq!(head.learner, b"model 2");
        assert!(matches!(
            c.rollback(99, 0),
            Err(CheckpointError::Missing(99))
        ));
    }
}
