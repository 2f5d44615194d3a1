//! Entries of the Redis streams that sit between the HTTP edge and Kafka.
//!
//! Session events travel through the same stream shard as the session's fixes, so the
//! forwarder writes `started`, then the fixes, then `stopped` in the order ingest saw them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::Fix;
use crate::record::SessionEvent;
use crate::{BatchId, DeviceId, SessionId, TenantId};

/// Field of a stream entry that holds the JSON-encoded [`BufferEntry`].
pub const ENTRY_FIELD: &str = "e";

/// One Redis stream entry: `{"type": "fixes" | "session_event", "data": {...}}`.
///
/// Adjacently tagged with the tag first, so serde decodes it in one pass: an internally
/// tagged enum would buffer every entry into an intermediate tree first, which profiling
/// showed as a top cost of the forwarder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum BufferEntry {
    /// The accepted fixes of one HTTP batch.
    Fixes(BufferedBatch),
    /// A session started or stopped.
    SessionEvent(SessionEvent),
}

impl BufferEntry {
    /// The session this entry belongs to (it decides the stream shard).
    pub fn session_id(&self) -> SessionId {
        match self {
            Self::Fixes(b) => b.session_id,
            Self::SessionEvent(e) => e.session_id,
        }
    }
}

/// The accepted fixes of one HTTP batch, as ingest stored them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferedBatch {
    /// Tenant that owns the session.
    pub tenant_id: TenantId,
    /// The session.
    pub session_id: SessionId,
    /// The device that posted the batch.
    pub device_id: DeviceId,
    /// Client (or server-given) batch id.
    pub batch_id: BatchId,
    /// When ingest accepted the batch.
    pub received_at: DateTime<Utc>,
    /// The accepted fixes, in posted order.
    pub fixes: Vec<Fix>,
}

/// Shard of a session: a session's entries always land in the same stream, in order.
pub fn shard_of(session: SessionId, shards: u32) -> u32 {
    // The low bits of a v7 UUID are random, so they spread sessions evenly.
    let bytes = session.0.as_bytes();
    let low = u64::from_be_bytes(bytes[8..16].try_into().expect("16-byte uuid"));
    (low % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_always_maps_to_the_same_shard_in_range() {
        for _ in 0..1000 {
            let s = SessionId::new();
            let shard = shard_of(s, 4);
            assert!(shard < 4);
            assert_eq!(shard, shard_of(s, 4));
        }
    }

    #[test]
    fn sessions_spread_over_every_shard() {
        let mut hits = [0u32; 4];
        for _ in 0..1000 {
            hits[shard_of(SessionId::new(), 4) as usize] += 1;
        }
        // 1000 random sessions over 4 shards: each gets about 250; under 150 would mean
        // the spread is broken, not bad luck (that is over 7 standard deviations off).
        assert!(hits.iter().all(|&n| n > 150), "{hits:?}");
        assert_eq!(shard_of(SessionId::new(), 0), 0, "no shards count as one");
    }

    #[test]
    fn an_entry_belongs_to_its_session() {
        let session = SessionId::new();
        let tenant = TenantId::parse("acme").unwrap();
        let device = DeviceId::parse("phone").unwrap();
        let batch = BufferEntry::Fixes(BufferedBatch {
            tenant_id: tenant.clone(),
            session_id: session,
            device_id: device.clone(),
            batch_id: BatchId::parse("b").unwrap(),
            received_at: Utc::now(),
            fixes: Vec::new(),
        });
        assert_eq!(batch.session_id(), session);
        let event = BufferEntry::SessionEvent(SessionEvent {
            schema_version: crate::record::SCHEMA_VERSION,
            event_id: uuid::Uuid::new_v4(),
            kind: crate::record::SessionEventKind::Started,
            tenant_id: tenant,
            session_id: session,
            device_id: device,
            at: Utc::now(),
            reason: None,
        });
        assert_eq!(event.session_id(), session);
    }
}
