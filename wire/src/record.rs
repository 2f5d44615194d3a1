//! Kafka records: their JSON values and keys (headers are in [`crate::headers`]). JSON Schemas for each value live in
//! `schemas/` at the repository root; `SCHEMA_VERSION` changes when a field changes meaning
//! or disappears (adding an optional field does not bump it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::{Fix, StopReason};
use crate::buffer::BufferedBatch;
use crate::{DeviceId, SessionId, TenantId};

/// Version of the record schemas below.
pub const SCHEMA_VERSION: u32 = 1;

// Header names and the headers each record carries live in `crate::headers`.

/// Namespace of record ids (UUID v5): the same fix always gets the same id, so a consumer
/// that sees a record twice (at-least-once delivery) can drop the copy.
const RECORD_NAMESPACE: Uuid = Uuid::from_u128(0x6c6f_6375_735f_7265_636f_7264_5f69_6431);

/// One location fix on the location topic. Key: the session id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationRecord {
    /// Always [`SCHEMA_VERSION`] for this shape.
    pub schema_version: u32,
    /// Stable, unique id of this fix (same on every redelivery).
    pub record_id: Uuid,
    /// Tenant that owns the session.
    pub tenant_id: TenantId,
    /// The session.
    pub session_id: SessionId,
    /// The device.
    pub device_id: DeviceId,
    /// The batch the fix came in.
    pub batch_id: String,
    /// Index of the fix in that batch.
    pub batch_index: u32,
    /// When the device took the fix.
    pub recorded_at: DateTime<Utc>,
    /// When ingest accepted it.
    pub received_at: DateTime<Utc>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Horizontal accuracy in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Altitude in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
    /// Speed in metres per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// Heading in degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    /// Battery level in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
}

/// The stable id of fix `index` of batch `batch_id` in `session`.
pub fn record_id(session: SessionId, batch_id: &str, index: u32) -> Uuid {
    let name = format!("{session}/{batch_id}/{index}");
    Uuid::new_v5(&RECORD_NAMESPACE, name.as_bytes())
}

impl LocationRecord {
    /// The record for one fix of a buffered batch.
    pub fn from_fix(batch: &BufferedBatch, fix: &Fix) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            record_id: record_id(batch.session_id, batch.batch_id.as_str(), fix.index),
            tenant_id: batch.tenant_id.clone(),
            session_id: batch.session_id,
            device_id: batch.device_id.clone(),
            batch_id: batch.batch_id.to_string(),
            batch_index: fix.index,
            recorded_at: fix.recorded_at,
            received_at: batch.received_at,
            lat: fix.lat,
            lon: fix.lon,
            accuracy: fix.accuracy,
            altitude: fix.altitude,
            speed: fix.speed,
            heading: fix.heading,
            battery: fix.battery,
        }
    }
}

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEventKind {
    /// The device started the session.
    Started,
    /// The session stopped (see `reason`).
    Stopped,
}

/// One record on the session events topic. Key: the session id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// Always [`SCHEMA_VERSION`] for this shape.
    pub schema_version: u32,
    /// Unique id of the event.
    pub event_id: Uuid,
    /// Started or stopped.
    pub kind: SessionEventKind,
    /// Tenant that owns the session.
    pub tenant_id: TenantId,
    /// The session.
    pub session_id: SessionId,
    /// The device.
    pub device_id: DeviceId,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Why the session stopped (stopped events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StopReason>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_stable_and_distinct() {
        let s = SessionId::new();
        assert_eq!(record_id(s, "b1", 0), record_id(s, "b1", 0));
        assert_ne!(record_id(s, "b1", 0), record_id(s, "b1", 1));
        assert_ne!(record_id(s, "b1", 0), record_id(s, "b2", 0));
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;
    use crate::api::Fix;
    use crate::buffer::BufferedBatch;
    use chrono::Utc;
    use serde_json::Value;

    fn schema(text: &str) -> Value {
        serde_json::from_str(text).expect("schema is JSON")
    }

    fn assert_matches(schema: &Value, value: &Value) {
        let obj = value.as_object().unwrap();
        for field in schema["required"].as_array().unwrap() {
            let field = field.as_str().unwrap();
            assert!(obj.contains_key(field), "required field {field} is missing");
        }
        let props = schema["properties"].as_object().unwrap();
        for key in obj.keys() {
            assert!(props.contains_key(key), "field {key} is not in the schema");
        }
        assert_eq!(
            value["schema_version"],
            schema["properties"]["schema_version"]["const"]
        );
    }

    #[test]
    fn a_location_record_has_exactly_the_fields_its_json_schema_names() {
        let batch = BufferedBatch {
            tenant_id: TenantId::parse("acme").unwrap(),
            session_id: SessionId::new(),
            device_id: DeviceId::parse("p").unwrap(),
            batch_id: crate::BatchId::parse("b").unwrap(),
            received_at: Utc::now(),
            fixes: vec![],
        };
        let fix = Fix {
            index: 0,
            lat: 1.0,
            lon: 2.0,
            recorded_at: Utc::now(),
            accuracy: Some(1.0),
            altitude: Some(1.0),
            speed: Some(1.0),
            heading: Some(1.0),
            battery: Some(1.0),
        };
        let value = serde_json::to_value(LocationRecord::from_fix(&batch, &fix)).unwrap();
        assert_matches(
            &schema(include_str!("../../schemas/location-record.v1.json")),
            &value,
        );
    }

    #[test]
    fn a_session_event_has_exactly_the_fields_its_json_schema_names() {
        let event = SessionEvent {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::now_v7(),
            kind: SessionEventKind::Stopped,
            tenant_id: TenantId::parse("acme").unwrap(),
            session_id: SessionId::new(),
            device_id: DeviceId::parse("p").unwrap(),
            at: Utc::now(),
            reason: Some(StopReason::Expired),
        };
        let value = serde_json::to_value(event).unwrap();
        assert_matches(
            &schema(include_str!("../../schemas/session-event.v1.json")),
            &value,
        );
    }
}
