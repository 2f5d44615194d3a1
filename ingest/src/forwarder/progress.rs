//! The session progress tally: per session, how many fixes one forwarded read brought and
//! the latest of them, written to PostgreSQL in one statement per read rather than one per
//! batch.

use std::collections::HashMap;

use locus_session::SessionProgress;
use locus_wire::SessionId;
use locus_wire::api::Position;
use locus_wire::buffer::BufferedBatch;

/// Progress of the sessions of one read.
#[derive(Debug, Default)]
pub struct Tally {
    sessions: HashMap<SessionId, SessionProgress>,
}

impl Tally {
    /// Counts the fixes of `batch` and keeps its latest fix (by `recorded_at`) if it is the
    /// session's latest so far.
    pub fn add(&mut self, batch: &BufferedBatch) {
        let Some(last) = batch.fixes.iter().max_by_key(|f| f.recorded_at) else {
            return;
        };
        let position = Position {
            lat: last.lat,
            lon: last.lon,
        };
        let p = self
            .sessions
            .entry(batch.session_id)
            .or_insert(SessionProgress {
                session_id: batch.session_id,
                fixes: 0,
                last_fix_at: last.recorded_at,
                last_position: position,
            });
        p.fixes += batch.fixes.len() as i64;
        if last.recorded_at >= p.last_fix_at {
            p.last_fix_at = last.recorded_at;
            p.last_position = position;
        }
    }

    /// Whether no session made progress.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The progress per session, in no particular order.
    pub fn into_progress(self) -> Vec<SessionProgress> {
        self.sessions.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};
    use locus_wire::api::Fix;
    use locus_wire::{BatchId, DeviceId, TenantId};

    use super::*;

    fn fix(index: u32, at: DateTime<Utc>, lat: f64) -> Fix {
        Fix {
            index,
            recorded_at: at,
            lat,
            lon: 13.4,
            accuracy: None,
            altitude: None,
            speed: None,
            heading: None,
            battery: None,
            key: None,
            attributes: None,
        }
    }

    fn batch(session: SessionId, fixes: Vec<Fix>) -> BufferedBatch {
        BufferedBatch {
            tenant_id: TenantId::parse("acme").unwrap(),
            session_id: session,
            device_id: DeviceId::parse("phone-1").unwrap(),
            batch_id: BatchId::generate(),
            received_at: Utc::now(),
            fixes,
        }
    }

    #[test]
    fn fixes_add_up_per_session_and_the_latest_fix_wins_whatever_the_order() {
        let t0 = Utc::now();
        let (a, b) = (SessionId::new(), SessionId::new());
        let mut tally = Tally::default();
        tally.add(&batch(
            a,
            vec![fix(0, t0, 1.0), fix(1, t0 + Duration::seconds(2), 2.0)],
        ));
        // Posted later but recorded earlier: counts, but does not move the position back.
        tally.add(&batch(a, vec![fix(0, t0 + Duration::seconds(1), 3.0)]));
        tally.add(&batch(b, vec![fix(0, t0, 4.0)]));
        let mut progress = tally.into_progress();
        progress.sort_by_key(|p| p.session_id);
        let a_progress = progress.iter().find(|p| p.session_id == a).unwrap();
        assert_eq!(a_progress.fixes, 3);
        assert_eq!(a_progress.last_fix_at, t0 + Duration::seconds(2));
        assert_eq!(a_progress.last_position.lat, 2.0);
        let b_progress = progress.iter().find(|p| p.session_id == b).unwrap();
        assert_eq!((b_progress.fixes, b_progress.last_position.lat), (1, 4.0));
    }

    #[test]
    fn a_batch_without_fixes_changes_nothing() {
        let mut tally = Tally::default();
        tally.add(&batch(SessionId::new(), Vec::new()));
        assert!(tally.is_empty());
    }
}
