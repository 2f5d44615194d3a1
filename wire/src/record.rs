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
    /// The client's own id of the fix (e.g. Transistorsoft `uuid`), when it sent one; the
    /// record id is then derived from it, not from the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_key: Option<String>,
    /// What the client app sent beside the position (extras, activity, odometer, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The stable id of fix `index` of batch `batch_id` in `session`.
pub fn record_id(session: SessionId, batch_id: &str, index: u32) -> Uuid {
    let name = format!("{session}/{batch_id}/{index}");
    Uuid::new_v5(&RECORD_NAMESPACE, name.as_bytes())
}

/// The stable id of the fix a client app calls `key`: the same for that device whatever
/// batch or session it comes in, so an app that sends a fix again (its sync retried after a
/// lost answer) makes the same record, which consumers drop as a repeat.
pub fn keyed_record_id(tenant: &TenantId, device: &DeviceId, key: &str) -> Uuid {
    let name = format!("{tenant}/{device}/key/{key}");
    Uuid::new_v5(&RECORD_NAMESPACE, name.as_bytes())
}

impl LocationRecord {
    /// The record for one fix of a buffered batch.
    pub fn from_fix(batch: &BufferedBatch, fix: &Fix) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            record_id: match &fix.key {
                Some(key) => keyed_record_id(&batch.tenant_id, &batch.device_id, key),
                None => record_id(batch.session_id, batch.batch_id.as_str(), fix.index),
            },
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
            fix_key: fix.key.clone(),
            attributes: fix.attributes.clone(),
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

/// The last known position of a device on the compacted positions topic. Key: the device
/// id, so the broker keeps each device's latest record. Written by the tracker, only ever
/// forward in `recorded_at`: a fix that arrives late never becomes the position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionRecord {
    /// Always [`SCHEMA_VERSION`] for this shape.
    pub schema_version: u32,
    /// Tenant that owns the device.
    pub tenant_id: TenantId,
    /// The device.
    pub device_id: DeviceId,
    /// The session the fix came in.
    pub session_id: SessionId,
    /// The fix (the location record's id).
    pub record_id: Uuid,
    /// When the device took the fix.
    pub recorded_at: DateTime<Utc>,
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

/// Namespace of geofence event ids (UUID v5): a transition decided again (a replay after a
/// crash before the commit) gets the id it had, so a consumer can drop the copy.
const GEOFENCE_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6c6f_6375_735f_6765_6f66_656e_6365_5f31);

/// Whether a device went into a geofence or out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeofenceEventKind {
    /// The fix is inside the fence; the one before it (or none) was not.
    Enter,
    /// The fix is outside the fence; the one before it was inside.
    Exit,
}

impl GeofenceEventKind {
    /// The kind as it appears in the record (`enter`, `exit`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enter => "enter",
            Self::Exit => "exit",
        }
    }
}

/// One record on the geofence events topic: a device entered or left a fence, and the fix
/// that crossed. Key: the device id (one device's events stay in order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeofenceEvent {
    /// Always [`SCHEMA_VERSION`] for this shape.
    pub schema_version: u32,
    /// Stable id of the transition ([`geofence_event_id`]).
    pub event_id: Uuid,
    /// Tenant that owns the device and the fence.
    pub tenant_id: TenantId,
    /// The device.
    pub device_id: DeviceId,
    /// The session of the fix that crossed.
    pub session_id: SessionId,
    /// The fence.
    pub geofence_id: crate::GeofenceId,
    /// Enter or exit.
    pub kind: GeofenceEventKind,
    /// The record id of the fix that crossed (on the location topic).
    pub record_id: Uuid,
    /// When the device took that fix.
    pub recorded_at: DateTime<Utc>,
    /// Its latitude in degrees.
    pub lat: f64,
    /// Its longitude in degrees.
    pub lon: f64,
}

/// The stable id of the transition `kind` of `device` through `fence` at fix `record_id`.
pub fn geofence_event_id(
    tenant: &TenantId,
    device: &DeviceId,
    fence: &crate::GeofenceId,
    record_id: Uuid,
    kind: GeofenceEventKind,
) -> Uuid {
    let name = format!("{tenant}/{device}/{fence}/{record_id}/{}", kind.as_str());
    Uuid::new_v5(&GEOFENCE_EVENT_NAMESPACE, name.as_bytes())
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

    #[test]
    fn a_keyed_fix_has_the_same_record_id_in_any_batch_or_session() {
        let tenant = TenantId::parse("acme").unwrap();
        let device = DeviceId::parse("phone-1").unwrap();
        let fix = Fix {
            index: 0,
            lat: 1.0,
            lon: 2.0,
            recorded_at: Utc::now(),
            accuracy: None,
            altitude: None,
            speed: None,
            heading: None,
            battery: None,
            key: Some("a1b2".to_owned()),
            attributes: None,
        };
        let batch = |batch_id: &str| BufferedBatch {
            tenant_id: tenant.clone(),
            session_id: SessionId::new(),
            device_id: device.clone(),
            batch_id: crate::BatchId::parse(batch_id).unwrap(),
            received_at: Utc::now(),
            fixes: vec![],
        };
        let one = LocationRecord::from_fix(&batch("b1"), &fix);
        let mut later = fix.clone();
        later.index = 7;
        let two = LocationRecord::from_fix(&batch("b2"), &later);
        assert_eq!(one.record_id, two.record_id);
        assert_eq!(one.record_id, keyed_record_id(&tenant, &device, "a1b2"));
        assert_eq!(one.fix_key.as_deref(), Some("a1b2"));
        let other_device = DeviceId::parse("phone-2").unwrap();
        assert_ne!(
            one.record_id,
            keyed_record_id(&tenant, &other_device, "a1b2")
        );
        // Without a key the id is the batch's, as before.
        let unkeyed = Fix { key: None, ..fix };
        let b = batch("b3");
        assert_eq!(
            LocationRecord::from_fix(&b, &unkeyed).record_id,
            record_id(b.session_id, "b3", 0)
        );
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
            key: Some("0b5c3a8e-uuid".to_owned()),
            attributes: Some(serde_json::Map::from_iter([(
                "odometer".to_owned(),
                Value::from(12.5),
            )])),
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

    #[test]
    fn a_position_record_has_exactly_the_fields_its_json_schema_names() {
        let position = PositionRecord {
            schema_version: SCHEMA_VERSION,
            tenant_id: TenantId::parse("acme").unwrap(),
            device_id: DeviceId::parse("p").unwrap(),
            session_id: SessionId::new(),
            record_id: Uuid::now_v7(),
            recorded_at: Utc::now(),
            lat: 1.0,
            lon: 2.0,
            accuracy: Some(1.0),
            altitude: Some(1.0),
            speed: Some(1.0),
            heading: Some(1.0),
            battery: Some(1.0),
        };
        let value = serde_json::to_value(position).unwrap();
        assert_matches(
            &schema(include_str!("../../schemas/position-record.v1.json")),
            &value,
        );
    }
}

#[cfg(test)]
mod geofence_event_tests {
    use super::*;
    use serde_json::Value;

    fn event(kind: GeofenceEventKind) -> GeofenceEvent {
        let tenant = TenantId::parse("acme").unwrap();
        let device = DeviceId::parse("van-1").unwrap();
        let fence = crate::GeofenceId::parse("depot").unwrap();
        let record_id = Uuid::now_v7();
        GeofenceEvent {
            schema_version: SCHEMA_VERSION,
            event_id: geofence_event_id(&tenant, &device, &fence, record_id, kind),
            tenant_id: tenant,
            device_id: device,
            session_id: SessionId::new(),
            geofence_id: fence,
            kind,
            record_id,
            recorded_at: Utc::now(),
            lat: 52.52,
            lon: 13.405,
        }
    }

    #[test]
    fn a_geofence_event_has_exactly_the_fields_its_json_schema_names() {
        let schema: Value =
            serde_json::from_str(include_str!("../../schemas/geofence-event.schema.json")).unwrap();
        let value = serde_json::to_value(event(GeofenceEventKind::Exit)).unwrap();
        let obj = value.as_object().unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let props = schema["properties"].as_object().unwrap();
        for key in obj.keys() {
            assert!(props.contains_key(key), "field {key} is not in the schema");
            assert!(
                required.contains(&key.as_str()),
                "field {key} is not required"
            );
        }
        assert_eq!(required.len(), obj.len(), "{required:?}");
        assert_eq!(value["kind"], "exit");
        assert_eq!(value["schema_version"], props["schema_version"]["const"]);
    }

    #[test]
    fn a_geofence_event_id_is_stable_and_differs_by_kind_and_fix() {
        let e = event(GeofenceEventKind::Enter);
        let id = |record_id, kind| {
            geofence_event_id(&e.tenant_id, &e.device_id, &e.geofence_id, record_id, kind)
        };
        assert_eq!(id(e.record_id, GeofenceEventKind::Enter), e.event_id);
        assert_ne!(id(e.record_id, GeofenceEventKind::Exit), e.event_id);
        assert_ne!(id(Uuid::now_v7(), GeofenceEventKind::Enter), e.event_id);
        let back: GeofenceEvent =
            serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
