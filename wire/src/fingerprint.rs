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

/// Bytes of a fingerprint (or of a batch id's tag) that the dedupe state keeps: 64 bits.
/// Two batches of one session are told apart by these, so a collision needs about 2^32
/// batches in one session; the dedupe state pays for each byte on every batch.
pub const SHORT_LEN: usize = 8;

/// The fingerprint of a batch: 128 bits of a SHA-256 of its fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; LEN / 2]);

impl Fingerprint {
    /// The first [`SHORT_LEN`] bytes: what the dedupe state remembers of a batch.
    pub fn short(&self) -> [u8; SHORT_LEN] {
        let mut out = [0; SHORT_LEN];
        out.copy_from_slice(&self.0[..SHORT_LEN]);
        out
    }
}

impl std::fmt::Display for Fingerprint {
    /// 32 lowercase hex characters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The tag of a batch id in its session's dedupe state: [`SHORT_LEN`] bytes of a SHA-256
/// of the id, so that an id of any length (a derived one is 70 characters) costs the same
/// few bytes.
pub fn batch_tag(batch_id: &BatchId) -> [u8; SHORT_LEN] {
    let digest = Sha256::digest(batch_id.as_str().as_bytes());
    let mut out = [0; SHORT_LEN];
    out.copy_from_slice(&digest[..SHORT_LEN]);
    out
}

/// The fingerprint of the fixes of a batch, in posted order.
pub fn of_fixes(fixes: &[FixSlot]) -> Fingerprint {
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
    let mut out = [0; LEN / 2];
    out.copy_from_slice(&hash.finalize()[..LEN / 2]);
    Fingerprint(out)
}

/// The batch id of a batch posted without one: derived from its session and fingerprint,
/// so that a retry after a lost answer gets the same id, hence the same record ids, and is
/// not stored twice.
pub fn derived_batch_id(session: SessionId, fingerprint: &Fingerprint) -> BatchId {
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
        assert_eq!(a.to_string().len(), LEN);
        assert_eq!(
            a.short()[..],
            hex::decode(&a.to_string()[..16]).unwrap()[..]
        );
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

    #[test]
    fn a_batch_tag_is_stable_and_differs_between_ids() {
        let a = BatchId::parse("0191c5a2-7b3e-7000-8000-000000000001").unwrap();
        let b = BatchId::parse("0191c5a2-7b3e-7000-8000-000000000002").unwrap();
        assert_eq!(batch_tag(&a), batch_tag(&a.clone()));
        assert_ne!(batch_tag(&a), batch_tag(&b));
    }
}
