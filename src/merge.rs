//! The timestamp merge of the worker's inputs: every assigned partition of the events and labels
//! topics has a bounded queue, and the next record is the one with the smallest
//! `(timestamp, side, partition, offset)` among the queue heads: at equal timestamps events go
//! before labels, then lower partitions, then lower offsets (as Kafka Streams picks the record
//! with the smallest timestamp).
//!
//! A record is only released when the merge knows every partition's next record, or knows that
//! a partition has none: it is at its end (the consumer's partition-EOF signal) or nothing has
//! arrived from it for `idle` (Kafka Streams' `max.task.idle.ms`) — the idle rule applies only
//! once the partition has delivered something (a record or its end) since it was assigned. So replaying the same logs
//! yields the same sequence however the fetches interleave, and a live worker whose label
//! traffic is quiet still scores without waiting more than `idle`.
//!
//! Pure: time is passed in, no I/O.

use std::collections::{BTreeMap, VecDeque};

/// Which input topic a record comes from. Events order before labels at equal timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The events topic.
    Event,
    /// The labels topic.
    Label,
}

/// One consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its topic.
    pub side: Side,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka timestamp, epoch ms.
    pub ts: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Queue {
    buf: VecDeque<Record>,
    /// The consumer reported the partition's end after the last record it delivered.
    at_end: bool,
    /// Wall time (ms) since which the queue has been empty.
    empty_since: i64,
    /// Something (a record or the end) has come from this partition since it was added: until
    /// then the idle rule does not apply, so a slow first fetch after an assignment (or a
    /// restart) cannot reorder records.
    primed: bool,
}

/// The merge state: one queue per `(side, partition)`.
#[derive(Debug)]
pub struct Merge {
    queues: BTreeMap<(Side, i32), Queue>,
    idle_ms: i64,
}

/// The merge order: timestamp, then events before labels, then partition, then offset.
type MergeKey = (i64, Side, i32, i64);

/// What [`Merge::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The next record in merge order.
    Record(Record),
    /// Some partition with nothing buffered may still deliver an earlier record: wait until
    /// this wall time (ms) at most, or until something arrives.
    WaitUntil(i64),
    /// Nothing buffered anywhere.
    Empty,
}

impl Merge {
    /// A merge that waits at most `idle_ms` for a partition with nothing buffered.
    pub fn new(idle_ms: i64) -> Self {
        Self {
            queues: BTreeMap::new(),
            idle_ms,
        }
    }

    /// Starts merging a partition (assigned at wall time `now`).
    pub fn add(&mut self, side: Side, partition: i32, now: i64) {
        self.queues.entry((side, partition)).or_insert(Queue {
            empty_since: now,
            ..Queue::default()
        });
    }

    /// Stops merging a partition (revoked); returns how many buffered records were dropped
    /// (they were not processed, so their offsets were not committed: they will be read again).
    pub fn remove(&mut self, side: Side, partition: i32) -> usize {
        self.queues
            .remove(&(side, partition))
            .map_or(0, |q| q.buf.len())
    }

    /// Buffers a record (from a partition that was added; others are ignored and `false` is
    /// returned).
    pub fn push(&mut self, rec: Record) -> bool {
        match self.queues.get_mut(&(rec.side, rec.partition)) {
            Some(q) => {
                q.at_end = false;
                q.primed = true;
                q.buf.push_back(rec);
                true
            }
            None => false,
        }
    }

    /// The consumer reached the end of a partition (the signal comes after the partition's last
    /// record): once what is buffered is processed, it has nothing more to offer until a new
    /// record arrives.
    pub fn at_end(&mut self, side: Side, partition: i32) {
        if let Some(q) = self.queues.get_mut(&(side, partition)) {
            q.at_end = true;
            q.primed = true;
        }
    }

    /// Records buffered for a partition.
    pub fn buffered(&self, side: Side, partition: i32) -> usize {
        self.queues
            .get(&(side, partition))
            .map_or(0, |q| q.buf.len())
    }

    /// Records buffered, all partitions.
    pub fn len(&self) -> usize {
        self.queues.values().map(|q| q.buf.len()).sum()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next record in merge order at wall time `now`, if it can be known.
    pub fn pop(&mut self, now: i64) -> Next {
        let mut best: Option<(MergeKey, (Side, i32))> = None;
        let mut wait: Option<i64> = None;
        let mut any = false;
        for (k, q) in &self.queues {
            match q.buf.front() {
                Some(r) => {
                    any = true;
                    let key = (r.ts, r.side, r.partition, r.offset);
                    if best.as_ref().is_none_or(|(b, _)| key < *b) {
                        best = Some((key, *k));
                    }
                }
                None if q.at_end => {}
                None => {
                    let until = if q.primed {
                        q.empty_since.saturating_add(self.idle_ms)
                    } else {
                        i64::MAX
                    };
                    if now < until {
                        wait = Some(wait.map_or(until, |w| w.min(until)));
                    }
                }
            }
        }
        if !any {
            return Next::Empty;
        }
        if let Some(until) = wait {
            return Next::WaitUntil(until);
        }
        let Some((_, k)) = best else {
            return Next::Empty;
        };
        let Some(q) = self.queues.get_mut(&k) else {
            return Next::Empty;
        };
        let Some(rec) = q.buf.pop_front() else {
            return Next::Empty;
        };
        if q.buf.is_empty() {
            q.empty_since = now;
        }
        Next::Record(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(side: Side, partition: i32, offset: i64, ts: i64) -> Record {
        Record {
            side,
            partition,
            offset,
            ts,
            key: None,
            payload: None,
        }
    }

    fn order(m: &mut Merge, now: i64) -> Vec<(Side, i32, i64)> {
        let mut out = Vec::new();
        while let Next::Record(r) = m.pop(now) {
            out.push((r.side, r.partition, r.offset));
        }
        out
    }

    #[test]
    fn smallest_timestamp_first_events_before_labels_on_ties() {
        let mut m = Merge::new(1_000);
        for s in [Side::Event, Side::Label] {
            for p in 0..2 {
                m.add(s, p, 0);
            }
        }
        m.push(rec(Side::Label, 0, 0, 10));
        m.push(rec(Side::Event, 1, 0, 10));
        m.push(rec(Side::Event, 0, 0, 10));
        m.push(rec(Side::Label, 1, 0, 5));
        m.push(rec(Side::Event, 0, 1, 20));
        for (s, p) in [(Side::Event, 1), (Side::Label, 0), (Side::Label, 1)] {
            m.at_end(s, p);
        }
        // Heads known everywhere (or at end): 5 (label p1), then the three records at 10 in
        // (side, partition) order; event p0 @20 waits for nothing since the others are at end.
        assert_eq!(
            order(&mut m, 0),
            vec![
                (Side::Label, 1, 0),
                (Side::Event, 0, 0),
                (Side::Event, 1, 0),
                (Side::Label, 0, 0),
                (Side::Event, 0, 1),
            ]
        );
        assert_eq!(m.pop(0), Next::Empty);
    }

    #[test]
    fn waits_for_an_unknown_partition_at_most_idle() {
        let mut m = Merge::new(100);
        m.add(Side::Event, 0, 0);
        m.add(Side::Label, 0, 0);
        m.push(rec(Side::Event, 0, 0, 50));
        // Nothing has come from the labels partition since it was assigned: no idle rule yet,
        // however long its first fetch takes.
        assert_eq!(m.pop(1_000_000), Next::WaitUntil(i64::MAX));
        // Once it has delivered (here: its end, then a new record), idle applies.
        m.at_end(Side::Label, 0);
        assert!(matches!(m.pop(10), Next::Record(_)));
        m.push(rec(Side::Event, 0, 1, 50));
        m.push(rec(Side::Label, 0, 0, 30));
        assert!(matches!(m.pop(10), Next::Record(r) if r.side == Side::Label));
        // The labels queue emptied at 10; the event may wait until 110.
        assert_eq!(m.pop(10), Next::WaitUntil(110));
        let mut m = Merge::new(100);
        m.add(Side::Event, 0, 0);
        m.add(Side::Label, 0, 0);
        m.push(rec(Side::Event, 0, 0, 50));
        m.push(rec(Side::Label, 0, 0, 60));
        assert!(matches!(m.pop(0), Next::Record(r) if r.side == Side::Event));
        // The event queue emptied at 0 (primed): the label waits until 100 at most.
        assert_eq!(m.pop(10), Next::WaitUntil(100));
        // An event at 55 arrives in time and goes first; then idle expires and the label goes.
        m.push(rec(Side::Event, 0, 1, 55));
        assert_eq!(order(&mut m, 20), vec![(Side::Event, 0, 1)]);
        assert_eq!(m.pop(30), Next::WaitUntil(120));
        assert!(matches!(m.pop(120), Next::Record(r) if r.side == Side::Label));
    }

    #[test]
    fn end_of_partition_releases_without_waiting_and_a_new_record_clears_it() {
        let mut m = Merge::new(1_000_000);
        m.add(Side::Event, 0, 0);
        m.add(Side::Label, 0, 0);
        m.push(rec(Side::Event, 0, 0, 50));
        m.at_end(Side::Label, 0);
        assert!(matches!(m.pop(0), Next::Record(_)));
        m.push(rec(Side::Label, 0, 0, 60));
        m.push(rec(Side::Event, 0, 1, 70));
        assert!(matches!(m.pop(0), Next::Record(r) if r.side == Side::Label));
        // The label queue is empty again and not known to be at its end: wait.
        assert_eq!(m.pop(0), Next::WaitUntil(1_000_000));
        // The end signal comes after the last record: it holds once the buffer drains.
        m.push(rec(Side::Label, 0, 1, 80));
        m.at_end(Side::Label, 0);
        m.push(rec(Side::Event, 0, 2, 90));
        assert!(matches!(m.pop(0), Next::Record(r) if r.side == Side::Event && r.offset == 1));
        assert!(matches!(m.pop(0), Next::Record(r) if r.side == Side::Label && r.offset == 1));
        assert!(matches!(m.pop(0), Next::Record(r) if r.side == Side::Event && r.offset == 2));
    }

    #[test]
    fn removed_partitions_drop_their_buffer_and_ignore_records() {
        let mut m = Merge::new(0);
        m.add(Side::Event, 3, 0);
        m.push(rec(Side::Event, 3, 0, 1));
        m.push(rec(Side::Event, 3, 1, 2));
        assert_eq!(m.buffered(Side::Event, 3), 2);
        assert_eq!(m.remove(Side::Event, 3), 2);
        assert!(!m.push(rec(Side::Event, 3, 2, 3)));
        assert!(m.is_empty());
    }

    proptest! {
        /// However fetches interleave (any arrival order across partitions, each partition in
        /// offset order), once every partition is complete and at its end the merge yields the
        /// same sequence: the brute-force sort of all records by the merge key, applied
        /// partition by partition (each partition keeps its offset order).
        #[test]
        fn order_is_independent_of_arrival(
            parts in proptest::collection::vec(proptest::collection::vec(0i64..20, 0..8), 1..5),
            seed in any::<u64>(),
        ) {
            let mut m = Merge::new(i64::MAX / 4);
            let mut all = Vec::new();
            for (i, ts) in parts.iter().enumerate() {
                let (side, p) = if i % 2 == 0 { (Side::Event, i as i32) } else { (Side::Label, i as i32) };
                m.add(side, p, 0);
                for (o, t) in ts.iter().enumerate() {
                    all.push(rec(side, p, o as i64, *t));
                }
            }
            // Reference: repeatedly take the smallest head, by brute force over the partitions.
            let mut heads: Vec<VecDeque<Record>> = parts.iter().enumerate().map(|(i, _)| {
                all.iter().filter(|r| r.partition == i as i32).cloned().collect()
            }).collect();
            let mut expected = Vec::new();
            loop {
                let mut best: Option<usize> = None;
                for (i, h) in heads.iter().enumerate() {
                    if let Some(r) = h.front() {
                        let better = best.is_none_or(|b| {
                            let x = &heads[b][0];
                            (r.ts, r.side, r.partition) < (x.ts, x.side, x.partition)
                        });
                        if better { best = Some(i); }
                    }
                }
                let Some(b) = best else { break };
                let r = heads[b].pop_front().expect("head");
                expected.push((r.side, r.partition, r.offset));
            }
            // Arrival: a pseudo-random interleaving of the partitions, popping whenever possible.
            let mut pending: Vec<VecDeque<Record>> = parts.iter().enumerate().map(|(i, _)| {
                all.iter().filter(|r| r.partition == i as i32).cloned().collect()
            }).collect();
            let mut x = seed | 1;
            let mut got = Vec::new();
            loop {
                let open: Vec<usize> = (0..pending.len()).filter(|i| !pending[*i].is_empty()).collect();
                if open.is_empty() { break; }
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                let i = open[(x % open.len() as u64) as usize];
                let r = pending[i].pop_front().expect("record");
                let (side, p) = (r.side, r.partition);
                m.push(r);
                if pending[i].is_empty() { m.at_end(side, p); }
                got.extend(order(&mut m, 0));
            }
            for (i, _) in parts.iter().enumerate() {
                let side = if i % 2 == 0 { Side::Event } else { Side::Label };
                m.at_end(side, i as i32);
            }
            got.extend(order(&mut m, 0));
            prop_assert_eq!(got, expected);
        }
    }
}
