//! A batch of consumed records and the pure bookkeeping around it: grouping by tenant in
//! Kafka order, and which offset each partition may store once some records are handled.

use std::collections::HashMap;

use locus_wire::TenantId;
use rdkafka::message::OwnedMessage;

use crate::record::ParsedRecord;

/// One record read from the location topic.
#[derive(Debug)]
pub struct Consumed {
    /// The message as read (kept whole for the dead-letter topic).
    pub message: OwnedMessage,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The consumer's rebalance generation when it was read: a record read before a
    /// revocation belongs to whoever owns its partition now.
    pub generation: u64,
    /// The record, or why its value cannot be delivered.
    pub parsed: Result<ParsedRecord, String>,
}

/// A batch split by what happens to each record. Indices point into the batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Groups {
    /// Records whose value cannot be delivered, in batch order.
    pub malformed: Vec<usize>,
    /// Records per tenant, each list in batch (so Kafka) order; tenants in order of first
    /// appearance.
    pub tenants: Vec<(TenantId, Vec<usize>)>,
}

/// Splits `batch` by tenant, keeping Kafka order within each tenant, which keeps it within
/// each session (a session lives in one partition, and one tenant's records of a session
/// are never split across groups).
pub fn group_by_tenant(batch: &[Consumed]) -> Groups {
    let mut groups = Groups::default();
    let mut slot: HashMap<&TenantId, usize> = HashMap::new();
    for (i, consumed) in batch.iter().enumerate() {
        match &consumed.parsed {
            Err(_) => groups.malformed.push(i),
            Ok(parsed) => {
                let tenant = &parsed.record.tenant_id;
                let at = *slot.entry(tenant).or_insert_with(|| {
                    groups.tenants.push((tenant.clone(), Vec::new()));
                    groups.tenants.len() - 1
                });
                groups.tenants[at].1.push(i);
            }
        }
    }
    groups
}

/// For each partition in `batch`, the offset of the last record of its longest handled
/// prefix (in batch order), if that prefix is not empty. `handled[i]` says whether record
/// `i` was delivered, dead-lettered or skipped.
///
/// This is the at-least-once rule: a partition never stores an offset past a record that
/// was not handled, even when later records of it were; those are delivered again after a
/// restart.
pub fn offsets_to_store(batch: &[Consumed], handled: &[bool]) -> Vec<(i32, i64)> {
    debug_assert_eq!(batch.len(), handled.len());
    // partition -> (last handled offset of the prefix, prefix still open)
    let mut state: Vec<(i32, Option<i64>, bool)> = Vec::new();
    for (consumed, &done) in batch.iter().zip(handled) {
        let entry = match state.iter_mut().find(|(p, ..)| *p == consumed.partition) {
            Some(entry) => entry,
            None => {
                state.push((consumed.partition, None, true));
                state.last_mut().expect("just pushed")
            }
        };
        let (_, last, open) = entry;
        if !*open {
            continue;
        }
        if done {
            *last = Some(last.map_or(consumed.offset, |l| l.max(consumed.offset)));
        } else {
            *open = false;
        }
    }
    state
        .into_iter()
        .filter_map(|(partition, last, _)| last.map(|offset| (partition, offset)))
        .collect()
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn consumed(partition: i32, offset: i64, tenant: Option<&str>) -> Consumed {
        let parsed = match tenant {
            None => Err("not JSON".to_owned()),
            Some(tenant) => {
                let value = serde_json::json!({
                    "schema_version": 1,
                    "record_id": uuid::Uuid::new_v4(),
                    "tenant_id": tenant,
                    "session_id": uuid::Uuid::now_v7(),
                    "device_id": "d",
                    "batch_id": "b",
                    "batch_index": offset,
                    "recorded_at": "2024-05-01T12:00:00Z",
                    "received_at": "2024-05-01T12:00:00Z",
                    "lat": 0.0,
                    "lon": 0.0
                });
                Ok(ParsedRecord::parse(Some(&serde_json::to_vec(&value).unwrap())).unwrap())
            }
        };
        Consumed {
            message: OwnedMessage::new(
                None,
                None,
                "t".to_owned(),
                Timestamp::NotAvailable,
                partition,
                offset,
                None,
            ),
            partition,
            offset,
            generation: 0,
            parsed,
        }
    }

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn records_are_grouped_by_tenant_in_kafka_order() {
        let batch = vec![
            consumed(0, 10, Some("a")),
            consumed(1, 5, Some("b")),
            consumed(0, 11, None),
            consumed(0, 12, Some("a")),
            consumed(1, 6, Some("a")),
            consumed(1, 7, Some("b")),
        ];
        assert_eq!(
            group_by_tenant(&batch),
            Groups {
                malformed: vec![2],
                tenants: vec![(tenant("a"), vec![0, 3, 4]), (tenant("b"), vec![1, 5])],
            }
        );
    }

    #[test]
    fn every_partition_stores_its_last_offset_when_all_is_handled() {
        let batch = vec![
            consumed(0, 10, Some("a")),
            consumed(1, 5, Some("b")),
            consumed(0, 11, Some("a")),
        ];
        let mut stored = offsets_to_store(&batch, &[true, true, true]);
        stored.sort();
        assert_eq!(stored, vec![(0, 11), (1, 5)]);
    }

    #[test]
    fn a_partition_never_stores_past_an_unhandled_record() {
        let batch = vec![
            consumed(0, 10, Some("a")),
            consumed(0, 11, Some("b")),
            consumed(0, 12, Some("a")),
            consumed(1, 5, Some("b")),
            consumed(2, 7, Some("a")),
        ];
        // 0/11 and 1/5 (tenant b) were abandoned; tenant a was delivered.
        let mut stored = offsets_to_store(&batch, &[true, false, true, false, true]);
        stored.sort();
        assert_eq!(stored, vec![(0, 10), (2, 7)]);
        assert!(offsets_to_store(&batch, &[false; 5]).is_empty());
    }
}
