//! Which offset each partition may store when records finish out of order: records of one
//! partition go to several tenants' lanes, and a healthy tenant's records finish while a
//! paused tenant's older ones still wait. Pure bookkeeping, with its tests beside it.

use std::collections::{BTreeSet, HashMap};

/// The records of each partition read and not yet finished (delivered or dead-lettered).
///
/// The rule is at-least-once: a partition's stored position never passes a record that is
/// not finished, however many later records finished before it. Those later ones are
/// delivered again after a restart or a rebalance, which `record_id` lets a partner drop.
#[derive(Debug, Default)]
pub struct Watermarks {
    partitions: HashMap<i32, Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    /// Offsets read and not finished.
    pending: BTreeSet<i64>,
    /// One past the highest offset read.
    next: i64,
    /// The position last stored (the next offset to read after a restart), or the first
    /// offset read: the position the group had already.
    stored: i64,
}

impl Watermarks {
    /// Notes that `offset` of `partition` was read and is not finished yet.
    pub fn read(&mut self, partition: i32, offset: i64) {
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition {
                stored: offset,
                ..Partition::default()
            });
        p.pending.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// Notes that `offset` of `partition` is finished. Returns the offset to hand to
    /// `store_offset` (the last record of the finished prefix: librdkafka stores it plus
    /// one) if the partition's position moved, else `None`. A partition not read since the
    /// last [`Watermarks::clear`] is ignored: its records belong to an older assignment.
    pub fn finished(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition)?;
        if !p.pending.remove(&offset) {
            return None;
        }
        let position = p.pending.first().copied().unwrap_or(p.next);
        if p.stored >= position {
            return None;
        }
        p.stored = position;
        Some(position - 1)
    }

    /// Forgets everything: after a revocation, records read before it are someone else's
    /// (or ours again, read anew from the committed offset).
    pub fn clear(&mut self) {
        self.partitions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_finishes_store_each_record() {
        let mut w = Watermarks::default();
        for o in 10..13 {
            w.read(0, o);
        }
        assert_eq!(w.finished(0, 10), Some(10));
        assert_eq!(w.finished(0, 11), Some(11));
        assert_eq!(w.finished(0, 12), Some(12));
    }

    #[test]
    fn a_partition_never_stores_past_an_unfinished_record() {
        let mut w = Watermarks::default();
        for o in 10..15 {
            w.read(0, o);
        }
        w.read(1, 5);
        // 10 belongs to a paused tenant; the others finish first.
        assert_eq!(w.finished(0, 11), None);
        assert_eq!(w.finished(0, 13), None);
        assert_eq!(w.finished(0, 14), None);
        assert_eq!(
            w.finished(1, 5),
            Some(5),
            "other partitions are independent"
        );
        // 10 finishes: the position jumps to the next unfinished record, 12.
        assert_eq!(w.finished(0, 10), Some(11));
        assert_eq!(w.finished(0, 12), Some(14));
    }

    #[test]
    fn a_finish_from_before_a_revocation_or_twice_is_ignored() {
        let mut w = Watermarks::default();
        w.read(0, 1);
        w.read(0, 2);
        w.clear();
        assert_eq!(w.finished(0, 1), None);
        w.read(0, 2);
        assert_eq!(w.finished(0, 1), None, "not read under this assignment");
        assert_eq!(w.finished(0, 2), Some(2));
        assert_eq!(w.finished(0, 2), None);
    }
}
