//! Joining delayed labels to what was scored: the rules, independent of where entries live.
//!
//! State machine of one id (W = window, G = grace, wm = watermark = largest event time seen):
//!
//! ```text
//!            event                 label (same)            wm > ts + 2(W+G)
//!   (none) ────────► Pending ───────────────────► Joined ───────────────────► (gone)
//!                      │ wm > ts + W + G                      wm > ts + 2(W+G)
//!                      └────────────────────────► Expired ──────────────────► (gone)
//! ```
//! A label for a `Pending` id joins it; for `Joined` it is a `duplicate` (same label) or a
//! `conflict` (different label, ignored); for `Expired` it is `late`; for an unknown id it waits
//! in a bounded buffer (labels may overtake their event) until the watermark passes its
//! deadline, then counts as `unknown`. Tombstones (`Joined`, `Expired`) live one more W+G so
//! duplicates and late labels are recognized.
//!
//! Where slots are kept is a [`JoinBackend`]: memory here; the disk-backed store implements the
//! same trait, so replay and the worker share these rules.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use hashbrown::{HashTable, hash_table};

use serde::{Deserialize, Serialize};

use crate::config::JoinConfig;
use crate::event::Label;
use crate::features::SparseVec;

/// What was scored for an event: everything the update and the metrics need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The feature vector exactly as scored.
    pub x: SparseVec,
    /// The probability that was emitted.
    pub score: f64,
    /// Version of the model that scored it.
    pub model_version: u64,
    /// Event time, epoch ms.
    pub event_ts: i64,
}

/// The state of one id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Slot {
    /// Scored, waiting for its label (boxed: most slots are small tombstones).
    Pending(Box<Entry>),
    /// Joined with `label`; kept to recognize duplicates.
    Joined {
        /// The label that was applied.
        label: bool,
        /// Event time, epoch ms.
        event_ts: i64,
    },
    /// The window passed without a label.
    Expired {
        /// Event time, epoch ms.
        event_ts: i64,
    },
}

impl Slot {
    /// Event time of the slot.
    pub fn event_ts(&self) -> i64 {
        match self {
            Slot::Pending(e) => e.event_ts,
            Slot::Joined { event_ts, .. } | Slot::Expired { event_ts } => *event_ts,
        }
    }
}

/// What [`JoinBackend::join`] found for an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// It was pending: here is the entry; the slot is now `Joined`.
    Joined(Entry),
    /// Already joined with this label.
    AlreadyJoined(bool),
    /// Its window had passed.
    Expired,
    /// Unknown id.
    Missing,
}

/// Storage of slots, ordered by event time for expiry. Each method is one state transition, so
/// a disk-backed store can implement it with one read and one write.
pub trait JoinBackend {
    /// Stores `slot` for `id` unless the id is known; returns false (and stores nothing) if it is.
    fn insert(&mut self, id: &str, slot: Slot) -> bool;
    /// Moves `id` from `Pending` to `Joined { label }` and returns the entry, or reports its state.
    fn join(&mut self, id: &str, label: bool) -> Lookup;
    /// Moves every `Pending` slot with event time in (`after`, `until`] to `Expired`, appending
    /// the entries in (time, id) order — the same order for every backend, so replay and the
    /// worker learn implicit labels in the same sequence.
    fn expire(&mut self, after: i64, until: i64, out: &mut Vec<Expired>);
    /// Removes every slot with event time in (`after`, `until`] (nothing at or before `after`
    /// remains: earlier purges removed it).
    fn purge(&mut self, after: i64, until: i64);
    /// Slots held (all states).
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Slots in memory: a hash table plus an event-time index. Event times mostly arrive in order,
/// so the index is a deque (amortized O(1) expiry) with a sorted side set for the stragglers.
///
/// The table keeps each id's hash next to it, and the index holds (event time, hash) rather
/// than the id: growing the table then never reads an id again (each read is a cache miss
/// into the id's allocation), and an id is one allocation with no reference count. The index
/// finds its slot by hash and event time. Two ids could share both; the table may then give
/// either one's slot to either's index item, which changes nothing: items of the same event
/// time are always swept together, one slot each.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    slots: HashTable<Stored>,
    hasher: IdHasher,
    /// (event time, id hash) in non-decreasing event time.
    order: VecDeque<(i64, u64)>,
    /// `order[..cursor]` are at or before the last expiry bound.
    cursor: usize,
    /// Hashes of the ids that arrived with an event time before the back of `order`, keyed by
    /// (time, arrival).
    stragglers: BTreeMap<(i64, u64), u64>,
    arrivals: u64,
}

/// One slot of [`MemoryBackend`] with its id and the id's hash.
#[derive(Debug, Clone)]
struct Stored {
    id: Box<str>,
    slot: Slot,
    hash: u64,
}

/// The hash of ids in [`MemoryBackend`].
#[derive(Debug, Default, Clone)]
struct IdHasher {
    state: foldhash::fast::RandomState,
    /// Tests: keep only these bits of each hash (0: every id collides with every other).
    #[cfg(test)]
    mask: Option<u64>,
}

impl IdHasher {
    fn hash(&self, id: &str) -> u64 {
        let h = self.state.hash_one(id);
        #[cfg(test)]
        if let Some(mask) = self.mask {
            return h & mask;
        }
        h
    }
}

impl MemoryBackend {
    /// Every slot with its id.
    pub fn slots(&self) -> std::collections::BTreeMap<String, Slot> {
        self.slots
            .iter()
            .map(|s| (s.id.to_string(), s.slot.clone()))
            .collect()
    }

    /// A backend whose id hashes keep only the bits of `mask` (0: all ids collide), to test
    /// that collisions change no outcome.
    #[cfg(test)]
    pub(crate) fn with_hash_mask(mask: u64) -> Self {
        let mut b = Self::default();
        b.hasher.mask = Some(mask);
        b
    }

    /// Expires the pending slot of hash `h` and time `ts`, if there is one.
    fn expire_one(&mut self, ts: i64, h: u64, out: &mut Vec<Expired>) {
        let pending =
            |s: &Stored| s.hash == h && matches!(&s.slot, Slot::Pending(e) if e.event_ts == ts);
        if let Some(s) = self.slots.find_mut(h, pending)
            && let Slot::Pending(entry) =
                std::mem::replace(&mut s.slot, Slot::Expired { event_ts: ts })
        {
            out.push(Expired {
                id: s.id.to_string(),
                entry: *entry,
            });
        }
    }

    /// Removes a slot of hash `h` and time `ts`, if there is one.
    fn remove_one(&mut self, ts: i64, h: u64) {
        if let Ok(found) = self
            .slots
            .find_entry(h, |s| s.hash == h && s.slot.event_ts() == ts)
        {
            found.remove();
        }
    }
}

impl JoinBackend for MemoryBackend {
    fn insert(&mut self, id: &str, slot: Slot) -> bool {
        let ts = slot.event_ts();
        let h = self.hasher.hash(id);
        let found = self
            .slots
            .entry(h, |s| s.hash == h && *s.id == *id, |s| s.hash);
        let hash_table::Entry::Vacant(v) = found else {
            return false;
        };
        v.insert(Stored {
            id: id.into(),
            slot,
            hash: h,
        });
        if self.order.back().is_none_or(|(t, _)| *t <= ts) {
            self.order.push_back((ts, h));
        } else {
            self.arrivals += 1;
            self.stragglers.insert((ts, self.arrivals), h);
        }
        true
    }

    fn join(&mut self, id: &str, label: bool) -> Lookup {
        let h = self.hasher.hash(id);
        let Some(Stored { slot, .. }) = self.slots.find_mut(h, |s| s.hash == h && *s.id == *id)
        else {
            return Lookup::Missing;
        };
        match slot {
            Slot::Pending(_) => {
                let event_ts = slot.event_ts();
                match std::mem::replace(slot, Slot::Joined { label, event_ts }) {
                    Slot::Pending(e) => Lookup::Joined(*e),
                    _ => Lookup::Missing,
                }
            }
            Slot::Joined { label: l, .. } => Lookup::AlreadyJoined(*l),
            Slot::Expired { .. } => Lookup::Expired,
        }
    }

    fn expire(&mut self, after: i64, until: i64, out: &mut Vec<Expired>) {
        let start = out.len();
        while let Some(&(ts, h)) = self.order.get(self.cursor) {
            if ts > until {
                break;
            }
            if ts > after {
                self.expire_one(ts, h, out);
            }
            self.cursor += 1;
        }
        if !self.stragglers.is_empty() {
            let lo = (after.saturating_add(1), 0);
            let due: Vec<(i64, u64)> = self
                .stragglers
                .range(lo..)
                .take_while(|((t, _), _)| *t <= until)
                .map(|(&(t, _), &h)| (t, h))
                .collect();
            for (ts, h) in due {
                self.expire_one(ts, h, out);
            }
        }
        out[start..].sort_by(|a, b| (a.entry.event_ts, &a.id).cmp(&(b.entry.event_ts, &b.id)));
    }

    fn purge(&mut self, _after: i64, until: i64) {
        while let Some(&(ts, h)) = self.order.front() {
            if ts > until {
                break;
            }
            self.remove_one(ts, h);
            self.order.pop_front();
            self.cursor = self.cursor.saturating_sub(1);
        }
        while let Some((&(ts, _), &h)) = self.stragglers.first_key_value() {
            if ts > until {
                break;
            }
            self.remove_one(ts, h);
            self.stragglers.pop_first();
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// A label joined to its entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The id.
    pub id: String,
    /// What was scored.
    pub entry: Entry,
    /// The label.
    pub label: bool,
    /// Example weight.
    pub weight: f64,
    /// Label time, if known.
    pub label_ts: Option<i64>,
}

/// What happened to a label.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelOutcome {
    /// Joined to its entry: learn from it.
    Joined(Joined),
    /// Its event has not been seen yet: waiting.
    Waiting,
    /// Same label again for a joined id: ignored.
    Duplicate,
    /// A different label for a joined id: ignored.
    Conflict,
    /// The entry's window had passed.
    Late,
}

/// What happened to an event's entry on insert.
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    /// Stored, pending.
    Stored,
    /// A waiting label joined it at once.
    Joined(Joined),
    /// The id is already known: the first entry is kept.
    DuplicateId,
    /// Older than the window already: nothing will join it.
    TooOld,
}

/// An entry whose window passed, returned so the caller can learn an implicit label.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    /// The id.
    pub id: String,
    /// What was scored.
    pub entry: Entry,
}

/// Events of a sweep that the caller counts.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Swept {
    /// Entries that expired.
    pub expired: Vec<Expired>,
    /// Waiting labels that gave up (counted `unknown`).
    pub unknown_labels: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WaitingLabel {
    label: bool,
    weight: f64,
    ts: Option<i64>,
    /// Arrival number: tells this label from an older one of the same id in `waiting_order`.
    seq: u64,
}

/// The join rules over a backend. Owns the watermark and the waiting-label buffer.
#[derive(Debug, Clone)]
pub struct Joiner<B> {
    window_ms: i64,
    wait_ms: i64,
    idle_ms: i64,
    max_waiting: usize,
    backend: B,
    state: JoinerState,
    /// The wall-clock rule's memory: not part of a checkpoint, so a restarted worker starts
    /// its idle clock afresh instead of jumping over the time it was down.
    idle: IdleClock,
}

/// When events last arrived, in wall-clock time, for [`Joiner::tick`].
#[derive(Debug, Clone, Default)]
struct IdleClock {
    /// Wall-clock time and watermark at the last tick that had seen events.
    last_active: Option<(i64, i64)>,
    /// Events inserted since the last tick.
    events_since_tick: u64,
}

/// The joiner's own state (besides the backend), for checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinerState {
    /// Largest event time seen.
    pub watermark: Option<i64>,
    /// Entries with event time ≤ this are expired.
    pub expired_upto: i64,
    /// Tombstones with event time ≤ this are gone.
    pub purged_upto: i64,
    waiting: FastMap<String, WaitingLabel>,
    /// (deadline, arrival number, id) in arrival order. Deadlines are the watermark at arrival
    /// plus `label_wait`, so arrival order is deadline order. Entries of labels that have since
    /// joined stay until they reach the front.
    waiting_order: VecDeque<(i64, u64, String)>,
    /// Labels that ever waited (numbers them).
    waiting_seq: u64,
}

impl<B: JoinBackend> Joiner<B> {
    /// Rules from the config over `backend`.
    pub fn new(cfg: &JoinConfig, backend: B) -> Self {
        Self {
            window_ms: cfg
                .window
                .as_millis_i64()
                .saturating_add(cfg.grace.as_millis_i64()),
            wait_ms: cfg.label_wait.as_millis_i64(),
            idle_ms: cfg.idle_after.as_millis_i64(),
            max_waiting: cfg.max_waiting_labels,
            backend,
            idle: IdleClock::default(),
            state: JoinerState {
                expired_upto: i64::MIN,
                purged_upto: i64::MIN,
                ..JoinerState::default()
            },
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (for checkpoints).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The joiner state, for checkpoints.
    pub fn state(&self) -> &JoinerState {
        &self.state
    }

    /// Restores joiner state from a checkpoint.
    pub fn restore_state(&mut self, s: JoinerState) {
        self.state = s;
    }

    /// Labels waiting for their event.
    pub fn waiting_labels(&self) -> usize {
        self.state.waiting.len()
    }

    /// Remembers what was scored for `id`; joins a waiting label at once if there is one.
    pub fn insert(&mut self, id: &str, entry: Entry) -> InsertOutcome {
        let ts = entry.event_ts;
        self.idle.events_since_tick += 1;
        if let Some(w) = self.state.waiting.remove(id) {
            // Keep a tombstone (unless it would already be purged) so duplicates are recognized.
            if ts > self.state.purged_upto
                && !self.backend.insert(
                    id,
                    Slot::Joined {
                        label: w.label,
                        event_ts: ts,
                    },
                )
            {
                return InsertOutcome::DuplicateId;
            }
            return InsertOutcome::Joined(Joined {
                id: id.to_string(),
                entry,
                label: w.label,
                weight: w.weight,
                label_ts: w.ts,
            });
        }
        if ts <= self.state.expired_upto {
            return InsertOutcome::TooOld;
        }
        if self.backend.insert(id, Slot::Pending(Box::new(entry))) {
            InsertOutcome::Stored
        } else {
            InsertOutcome::DuplicateId
        }
    }

    /// Applies a label.
    pub fn label(&mut self, label: Label) -> LabelOutcome {
        match self.backend.join(&label.id, label.label) {
            Lookup::Joined(entry) => LabelOutcome::Joined(Joined {
                id: label.id,
                entry,
                label: label.label,
                weight: label.weight,
                label_ts: label.ts,
            }),
            Lookup::AlreadyJoined(l) if l == label.label => LabelOutcome::Duplicate,
            Lookup::AlreadyJoined(_) => LabelOutcome::Conflict,
            Lookup::Expired => LabelOutcome::Late,
            Lookup::Missing => match self.state.waiting.get(&label.id) {
                Some(w) if w.label == label.label => LabelOutcome::Duplicate,
                Some(_) => LabelOutcome::Conflict,
                None => {
                    // Before the first event the deadline is set by the first watermark.
                    let deadline = self
                        .state
                        .watermark
                        .map_or(i64::MIN, |wm| wm.saturating_add(self.wait_ms));
                    self.state.waiting_seq += 1;
                    let seq = self.state.waiting_seq;
                    self.state
                        .waiting_order
                        .push_back((deadline, seq, label.id.clone()));
                    self.state.waiting.insert(
                        label.id,
                        WaitingLabel {
                            label: label.label,
                            weight: label.weight,
                            ts: label.ts,
                            seq,
                        },
                    );
                    LabelOutcome::Waiting
                }
            },
        }
    }

    /// The wall-clock rule, called periodically by a live worker (never by replay). While
    /// events arrive it notes the wall-clock time; once none has arrived for `join.idle_after`,
    /// the watermark follows the wall clock from where the events left it, so entries still
    /// expire (and waiting labels give up) when traffic stops.
    pub fn tick(&mut self, now_wall: i64, out: &mut Swept) {
        let Some(wm) = self.state.watermark else {
            return;
        };
        match self.idle.last_active {
            Some((since, wm0)) if self.idle.events_since_tick == 0 => {
                let idle = now_wall.saturating_sub(since).saturating_sub(self.idle_ms);
                if idle > 0 {
                    self.advance(wm0.saturating_add(idle), out);
                }
            }
            _ => {
                self.idle = IdleClock {
                    last_active: Some((now_wall, wm)),
                    events_since_tick: 0,
                };
            }
        }
    }

    /// Moves the watermark to `ts` (if later) and sweeps: expires entries, purges tombstones,
    /// and gives up on waiting labels past their deadline or over capacity.
    pub fn advance(&mut self, ts: i64, out: &mut Swept) {
        let wm = self.state.watermark.map_or(ts, |w| w.max(ts));
        if self.state.watermark.is_none() {
            // Labels that arrived before any event and without a time of their own start
            // waiting now.
            for (deadline, _, _) in self.state.waiting_order.iter_mut() {
                if *deadline == i64::MIN {
                    *deadline = wm.saturating_add(self.wait_ms);
                }
            }
        }
        self.state.watermark = Some(wm);
        // An entry expires once wm > ts + W + G, i.e. ts < wm − (W + G).
        let expire_until = wm.saturating_sub(self.window_ms).saturating_sub(1);
        if expire_until > self.state.expired_upto {
            self.backend
                .expire(self.state.expired_upto, expire_until, &mut out.expired);
            self.state.expired_upto = expire_until;
            let purge_until = expire_until.saturating_sub(self.window_ms);
            if purge_until > self.state.purged_upto {
                self.backend.purge(self.state.purged_upto, purge_until);
                self.state.purged_upto = purge_until;
            }
        }
        let st = &mut self.state;
        while let Some((deadline, seq, id)) = st.waiting_order.front() {
            let live = st.waiting.get(id).is_some_and(|w| w.seq == *seq);
            if live {
                let over = st.waiting.len() > self.max_waiting;
                if !(over || *deadline < wm) {
                    break;
                }
                st.waiting.remove(id);
                out.unknown_labels += 1;
            }
            st.waiting_order.pop_front();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::duration::HumanDuration;

    pub(crate) fn cfg() -> JoinConfig {
        JoinConfig {
            window: HumanDuration::from_millis(100),
            grace: HumanDuration::from_millis(10),
            label_wait: HumanDuration::from_millis(50),
            max_waiting_labels: 3,
            ..JoinConfig::default()
        }
    }

    pub(crate) fn entry(ts: i64) -> Entry {
        Entry {
            x: SparseVec {
                idx: vec![1],
                val: vec![0.5],
            },
            score: 0.25,
            model_version: 1,
            event_ts: ts,
        }
    }

    pub(crate) fn label(id: &str, y: bool, ts: i64) -> Label {
        Label {
            id: id.into(),
            label: y,
            ts: Some(ts),
            weight: 1.0,
            entity: None,
        }
    }

    fn is_joined(o: &LabelOutcome) -> bool {
        matches!(o, LabelOutcome::Joined(_))
    }

    /// One row per outcome: a sequence of steps and what the last one must produce. `cp` runs
    /// between steps (the disk store commits and reopens there); it is generic so every backend
    /// passes the same table.
    pub(crate) fn outcome_table<B: JoinBackend>(
        j: Joiner<B>,
        mut cp: impl FnMut(Joiner<B>) -> Joiner<B>,
    ) {
        let mut j = cp(j);
        let mut sw = Swept::default();
        // joined
        assert_eq!(j.insert("a", entry(1000)), InsertOutcome::Stored);
        j.advance(1000, &mut sw);
        let mut j = cp(j);
        assert!(is_joined(&j.label(label("a", true, 1005))));
        let mut j = cp(j);
        // duplicate (same label), conflict (other label)
        assert_eq!(j.label(label("a", true, 1006)), LabelOutcome::Duplicate);
        assert_eq!(j.label(label("a", false, 1007)), LabelOutcome::Conflict);
        // out of order: label first, then its event joins it at once
        assert_eq!(j.label(label("b", false, 1010)), LabelOutcome::Waiting);
        let mut j = cp(j);
        assert!(matches!(
            j.insert("b", entry(1012)),
            InsertOutcome::Joined(Joined { label: false, .. })
        ));
        // duplicate event id keeps the first entry
        assert_eq!(j.insert("b", entry(1013)), InsertOutcome::DuplicateId);
        // expired: window 100 + grace 10 passes for "c" (ts 1020) once wm > 1130
        assert_eq!(j.insert("c", entry(1020)), InsertOutcome::Stored);
        let mut j = cp(j);
        j.advance(1130, &mut sw);
        assert!(sw.expired.is_empty());
        j.advance(1131, &mut sw);
        assert_eq!(
            sw.expired.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            vec!["c"]
        );
        assert_eq!(sw.expired[0].entry, entry(1020));
        let mut j = cp(j);
        // late: label for the expired entry
        assert_eq!(j.label(label("c", true, 1131)), LabelOutcome::Late);
        // too old: an event already beyond the window when it arrives
        assert_eq!(j.insert("d", entry(1000)), InsertOutcome::TooOld);
        // unknown: a waiting label whose deadline (wm at arrival + 50) passes
        assert_eq!(j.label(label("zz", true, 1131)), LabelOutcome::Waiting);
        let mut j = cp(j);
        let mut sw = Swept::default();
        j.advance(1181, &mut sw);
        assert_eq!(sw.unknown_labels, 0);
        j.advance(1182, &mut sw);
        assert_eq!(sw.unknown_labels, 1);
        let mut j = cp(j);
        // tombstones are purged after another W+G: "a" (ts 1000) is gone once wm > 1220
        j.advance(1300, &mut sw);
        let mut j = cp(j);
        assert_eq!(j.backend_mut().join("a", true), Lookup::Missing);
        assert_eq!(j.label(label("a", true, 1300)), LabelOutcome::Waiting);
        assert_eq!(
            j.backend().len(),
            0,
            "everything older than 2(W+G) is purged"
        );
    }

    #[test]
    fn outcome_table_in_memory() {
        outcome_table(Joiner::new(&cfg(), MemoryBackend::default()), |j| j);
    }

    /// The wall-clock deadline: with traffic stopped, entries expire once the mocked wall clock
    /// has run for idle_after + (W + G) past the last event.
    #[test]
    fn expiry_follows_the_wall_clock_when_traffic_stops() {
        let mut c = cfg();
        c.idle_after = HumanDuration::from_millis(1000);
        let mut j = Joiner::new(&c, MemoryBackend::default());
        let mut sw = Swept::default();
        assert_eq!(j.insert("a", entry(5000)), InsertOutcome::Stored);
        j.advance(5000, &mut sw);
        let wall = 1_000_000;
        j.tick(wall, &mut sw);
        // Idle, but within idle_after: nothing moves.
        j.tick(wall + 1000, &mut sw);
        assert!(sw.expired.is_empty());
        // 110 ms more (W + G) brings the watermark to 5110: not yet past 5000 + 110.
        j.tick(wall + 1110, &mut sw);
        assert!(sw.expired.is_empty());
        assert_eq!(j.state().watermark, Some(5110));
        j.tick(wall + 1111, &mut sw);
        assert_eq!(sw.expired.len(), 1);
        assert_eq!(j.state().watermark, Some(5111));
        // New events reset the idle clock.
        assert_eq!(j.insert("b", entry(5200)), InsertOutcome::Stored);
        j.advance(5200, &mut sw);
        j.tick(wall + 5000, &mut sw);
        j.tick(wall + 5500, &mut sw);
        assert_eq!(j.state().watermark, Some(5200));
        j.tick(wall + 6001, &mut sw);
        assert_eq!(j.state().watermark, Some(5201));
    }

    /// A label without a time that arrives before any event waits `label_wait` from the first
    /// watermark, then gives up.
    #[test]
    fn early_timeless_labels_wait_from_the_first_watermark() {
        let mut j = Joiner::new(&cfg(), MemoryBackend::default());
        let mut sw = Swept::default();
        let l = Label {
            id: "early".into(),
            label: true,
            ts: None,
            weight: 1.0,
            entity: None,
        };
        assert_eq!(j.label(l), LabelOutcome::Waiting);
        j.advance(1000, &mut sw);
        j.advance(1050, &mut sw);
        assert_eq!(sw.unknown_labels, 0);
        j.advance(1051, &mut sw);
        assert_eq!(sw.unknown_labels, 1);
    }

    /// Late events that do not move the watermark still count as traffic for the idle rule.
    #[test]
    fn late_events_keep_the_idle_clock_from_running() {
        let mut c = cfg();
        c.idle_after = HumanDuration::from_millis(1000);
        let mut j = Joiner::new(&c, MemoryBackend::default());
        let mut sw = Swept::default();
        j.insert("a", entry(5000));
        j.advance(5000, &mut sw);
        j.tick(0, &mut sw);
        for (k, wall) in [(1, 900), (2, 1800), (3, 2700)] {
            j.insert(&format!("late{k}"), entry(4990));
            j.advance(4990, &mut sw);
            j.tick(wall, &mut sw);
        }
        j.tick(3500, &mut sw);
        assert_eq!(j.state().watermark, Some(5000), "traffic kept flowing");
        j.tick(3701, &mut sw);
        assert_eq!(
            j.state().watermark,
            Some(5001),
            "idle for 1001 ms since the last tick with events"
        );
    }

    /// Labels give up in the order of their deadlines even when a label's own time is far in
    /// the future, and labels that joined do not count against the buffer.
    #[test]
    fn waiting_deadlines_follow_arrival_and_joined_labels_free_their_place() {
        let mut j = Joiner::new(&cfg(), MemoryBackend::default());
        let mut sw = Swept::default();
        j.advance(1000, &mut sw);
        assert_eq!(
            j.label(label("future", true, 10_000)),
            LabelOutcome::Waiting
        );
        assert_eq!(j.label(label("b", true, 1000)), LabelOutcome::Waiting);
        j.advance(1051, &mut sw);
        assert_eq!(sw.unknown_labels, 2, "both deadlines (1050) passed");
        // Capacity 3: three wait, two of them join, two more arrive: nobody is evicted.
        let mut sw = Swept::default();
        for id in ["w1", "w2", "w3"] {
            assert_eq!(j.label(label(id, true, 1051)), LabelOutcome::Waiting);
        }
        assert!(matches!(
            j.insert("w2", entry(1051)),
            InsertOutcome::Joined(_)
        ));
        assert!(matches!(
            j.insert("w3", entry(1051)),
            InsertOutcome::Joined(_)
        ));
        for id in ["w4", "w5"] {
            assert_eq!(j.label(label(id, true, 1051)), LabelOutcome::Waiting);
        }
        j.advance(1052, &mut sw);
        assert_eq!(sw.unknown_labels, 0);
        assert_eq!(j.waiting_labels(), 3);
        assert!(matches!(
            j.insert("w1", entry(1052)),
            InsertOutcome::Joined(_)
        ));
    }

    #[test]
    fn waiting_buffer_is_bounded() {
        let mut j = Joiner::new(&cfg(), MemoryBackend::default());
        let mut sw = Swept::default();
        j.advance(0, &mut sw);
        for i in 0..5 {
            assert_eq!(
                j.label(label(&format!("w{i}"), true, 0)),
                LabelOutcome::Waiting
            );
        }
        j.advance(0, &mut sw);
        assert_eq!(sw.unknown_labels, 2);
        assert_eq!(j.waiting_labels(), 3);
        // The oldest two were evicted; w2 is still waiting and joins.
        assert!(matches!(j.insert("w2", entry(1)), InsertOutcome::Joined(_)));
        assert_eq!(j.insert("w0", entry(1)), InsertOutcome::Stored);
    }
}
