//! Batch fingerprints: what makes two uploads "the same batch". A retry carries the same
//! fixes, so the fingerprint is a hash of the fixes as posted (their values, not their
//! bytes: a client that serializes its retry with other whitespace or key order still
//! sends the same batch). It decides whether a reused batch id is a retry or a mistake, and
//! names a batch that came without an id.

use sha2::{Digest, Sha256};

use crate::decode::FixSlot;
use crate::{BatchId, SessionId};

/// Length of a fingerprint, in hex characters (128 bits).
pub const LEN: usize = 32;

/// The fingerprint of the fixes of a batch, in posted order: 32 hex characters.
pub fn of_fixes(fixes: &[FixSlot]) -> String {
    let mut hash = Sha256::new();
    for slot in fixes {
        match &slot.0 {
            Ok(fix) => {
                hash.update([1]);
                hash.update(fix.lat.to_bits().to_be_bytes());
                hash.update(fix.lon.to_bits().to_be_bytes());
                let at = fix.recorded_at;
                hash.update(at.timestamp().to_be_bytes());
                hash.update(at.timestamp_subsec_nanos().to_be_bytes());
                for value in [
                    fix.accuracy,
                    fix.altitude,
                    fix.speed,
                    fix.heading,
                    fix.battery,
                ] {
                    match value {
                        Some(v) => {
                            hash.update([1]);
                            hash.update(v.to_bits().to_be_bytes());
                        }
                        None => hash.update([0]),
                    }
                }
            }
            // A fix that did not decode still belongs to the batch: its error text stands
            // for it (with its length, so two errors cannot run into one).
            Err(error) => {
                hash.update([2]);
                hash.update((error.len() as u64).to_be_bytes());
                hash.update(error.as_bytes());
            }
        }
    }
    hex::encode(&hash.finalize()[..LEN / 2])
}

/// The batch id of a batch posted without one: derived from its session and fingerprint,
/// so that a retry after a lost answer gets the same id, hence the same record ids, and is
/// not stored twice.
pub fn derived_batch_id(session: SessionId, fingerprint: &str) -> BatchId {
    BatchId::parse(format!("auto-{}-{fingerprint}", session.0.simple()))
        .expect("a uuid and hex digits are printable ASCII and short enough")
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::api::FixInput;

    fn fix(lat: f64) -> FixSlot {
        FixSlot(Ok(FixInput {
            lat,
            lon: 13.4,
            recorded_at: Utc.timestamp_opt(1_700_000_000, 5).unwrap(),
            accuracy: Some(5.0),
            altitude: None,
            speed: None,
            heading: None,
            battery: None,
        }))
    }

    #[test]
    fn the_same_fixes_give_the_same_fingerprint_and_any_change_another() {
        let a = of_fixes(&[fix(52.5), fix(52.6)]);
        assert_eq!(a.len(), LEN);
        assert_eq!(a, of_fixes(&[fix(52.5), fix(52.6)]));
        assert_ne!(a, of_fixes(&[fix(52.6), fix(52.5)]), "order matters");
        assert_ne!(a, of_fixes(&[fix(52.5)]), "count matters");
        let mut other = fix(52.5);
        if let Ok(f) = &mut other.0 {
            f.battery = Some(80.0);
        }
        assert_ne!(a, of_fixes(&[other, fix(52.6)]), "every field matters");
        let bad = FixSlot(Err("lat: expected a number".into()));
        assert_ne!(of_fixes(std::slice::from_ref(&bad)), of_fixes(&[fix(52.5)]));
    }

    #[test]
    fn a_derived_batch_id_is_stable_per_session_and_fingerprint() {
        let s = SessionId::new();
        let fp = of_fixes(&[fix(1.0)]);
        assert_eq!(derived_batch_id(s, &fp), derived_batch_id(s, &fp));
        assert_ne!(
            derived_batch_id(s, &fp),
            derived_batch_id(SessionId::new(), &fp)
        );
        assert!(derived_batch_id(s, &fp).as_str().len() <= BatchId::MAX_LEN);
    }
}
