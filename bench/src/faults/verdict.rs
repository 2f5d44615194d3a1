//! The comparison after a fault: what got a 202 against what reached Kafka and the webhook.
//!
//! Per leg (Kafka, the webhook): records raw and after dropping copies by `record_id`; lost
//! (acknowledged, never seen); duplicates (raw minus distinct); out of order (a first copy
//! whose sequence number is below one already seen in its session); a wrong body (a record
//! whose latitude is not the one its sequence number was posted with: a reused batch id
//! whose other body got through); and extra (seen, never acknowledged: a batch whose answer
//! was lost and that the device did not retry to the end, allowed by the contract).

use std::collections::{HashMap, HashSet};

use locus_wire::SessionId;
use locus_wire::record::record_id;
use serde::Serialize;
use uuid::Uuid;

use super::load::{AckedBatch, Device, lat_of, seq_of};

/// What a 202 promised: every record id of the acknowledged batches.
#[derive(Debug, Default)]
pub struct Promised {
    ids: HashSet<Uuid>,
    batch_size: u32,
}

impl Promised {
    /// The records of `acked`.
    pub fn new(devices: &[Device], acked: &[AckedBatch], batch_size: u32) -> Self {
        let mut ids = HashSet::new();
        for a in acked {
            let bid = super::load::batch_id(&devices[a.device].device_id, a.seq);
            for i in 0..batch_size {
                ids.insert(record_id(a.session, &bid, i));
            }
        }
        Self { ids, batch_size }
    }

    /// Acknowledged records.
    pub fn len(&self) -> u64 {
        self.ids.len() as u64
    }

    /// No record acknowledged.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` was acknowledged.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }
}

/// One record as a leg saw it, in the order it saw them.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    /// Record id.
    pub record_id: Uuid,
    /// Session.
    pub session: SessionId,
    /// Batch id.
    pub batch_id: &'a str,
    /// Index in the batch.
    pub index: u32,
    /// Latitude.
    pub lat: f64,
}

/// The figures of one leg.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Leg {
    /// Records seen, copies included.
    pub raw: u64,
    /// Distinct record ids seen.
    pub distinct: u64,
    /// Acknowledged and never seen.
    pub lost: u64,
    /// Raw minus distinct.
    pub duplicates: u64,
    /// First copies that came after a later record of their session.
    pub out_of_order: u64,
    /// Records whose body is not the one acknowledged.
    pub wrong_body: u64,
    /// Distinct records never acknowledged.
    pub extra: u64,
}

/// Compares one leg's records, in the order seen, with what was promised.
pub fn leg<'a>(promised: &Promised, seen: impl IntoIterator<Item = Seen<'a>>) -> Leg {
    let mut leg = Leg::default();
    let mut first: HashSet<Uuid> = HashSet::new();
    let mut high: HashMap<SessionId, u64> = HashMap::new();
    for s in seen {
        leg.raw += 1;
        if !first.insert(s.record_id) {
            continue;
        }
        let Some(seq) = seq_of(s.batch_id) else {
            leg.extra += 1;
            continue;
        };
        let n = seq * u64::from(promised.batch_size) + u64::from(s.index);
        if (s.lat - lat_of(n)).abs() > 1e-9 {
            leg.wrong_body += 1;
        }
        if !promised.contains(&s.record_id) {
            leg.extra += 1;
        }
        let top = high.entry(s.session).or_insert(n);
        if n < *top {
            leg.out_of_order += 1;
        } else {
            *top = n;
        }
    }
    leg.distinct = first.len() as u64;
    leg.duplicates = leg.raw - leg.distinct;
    leg.lost = promised.ids.iter().filter(|id| !first.contains(id)).count() as u64;
    leg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(
        session: SessionId,
        batch: &str,
        index: u32,
        batch_size: u32,
    ) -> (Uuid, String, u32, f64) {
        let n = seq_of(batch).unwrap() * u64::from(batch_size) + u64::from(index);
        (
            record_id(session, batch, index),
            batch.to_owned(),
            index,
            lat_of(n),
        )
    }

    #[test]
    fn a_reproduced_tail_counts_as_duplicates_and_an_earlier_record_after_a_later_one_as_out_of_order()
     {
        let session = SessionId::new();
        let device = Device {
            tenant: "acme".into(),
            device_id: "d".into(),
            index: 0,
            session,
            authorization: String::new(),
            t0: chrono::Utc::now(),
        };
        let acked: Vec<_> = (0..5)
            .map(|seq| AckedBatch {
                device: 0,
                session,
                seq,
                duplicate: false,
            })
            .collect();
        let promised = Promised::new(&[device], &acked, 1);
        // Kafka holds 0, 3, 4, 1, 2, 3, 4 (a timed-out produce written again): 1 and 2 are
        // late first copies, 3 and 4 copies.
        let order = [0, 3, 4, 1, 2, 3, 4];
        let rows: Vec<_> = order
            .iter()
            .map(|s| seen(session, &format!("d:{s}"), 0, 1))
            .collect();
        let l = leg(
            &promised,
            rows.iter().map(|(id, b, i, lat)| Seen {
                record_id: *id,
                session,
                batch_id: b,
                index: *i,
                lat: *lat,
            }),
        );
        assert_eq!(
            (l.raw, l.distinct, l.duplicates, l.lost, l.out_of_order),
            (7, 5, 2, 0, 2)
        );
        let missing = leg(
            &promised,
            rows[..3].iter().map(|(id, b, i, lat)| Seen {
                record_id: *id,
                session,
                batch_id: b,
                index: *i,
                lat: *lat,
            }),
        );
        assert_eq!((missing.lost, missing.out_of_order), (2, 0));
    }
}
