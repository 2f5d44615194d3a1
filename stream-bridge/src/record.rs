//! Reading location records off the topic: a value either parses into a record this bridge
//! can deliver (keeping its exact JSON for the webhook body) or is dead-lettered as
//! malformed, with the reason in words.

use locus_wire::record::{LocationRecord, SCHEMA_VERSION};
use serde_json::value::RawValue;

/// A location record read from Kafka.
#[derive(Debug, Clone)]
pub struct ParsedRecord {
    /// The typed record (its tenant routes it; its `received_at` times it).
    pub record: LocationRecord,
    /// The value exactly as read, forwarded as is.
    pub raw: Box<RawValue>,
}

impl ParsedRecord {
    /// Parses a Kafka value, or says why it cannot be delivered.
    pub fn parse(payload: Option<&[u8]>) -> Result<Self, String> {
        let payload = payload.ok_or_else(|| "the record has no value".to_owned())?;
        let raw: Box<RawValue> =
            serde_json::from_slice(payload).map_err(|e| format!("the value is not JSON: {e}"))?;
        let record: LocationRecord = serde_json::from_str(raw.get())
            .map_err(|e| format!("the value is not a location record: {e}"))?;
        // A newer major version may have changed what a field means: better parked in the
        // dead-letter topic than delivered under the wrong schema.
        if record.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schema version {} is not supported (this bridge reads {SCHEMA_VERSION})",
                record.schema_version
            ));
        }
        Ok(Self { record, raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1,
            "record_id": "6d3c1b1e-2f1a-5f7e-9a4b-000000000001",
            "tenant_id": "acme",
            "session_id": "01890a5d-ac96-774b-bcce-b302099a8057",
            "device_id": "phone-1",
            "batch_id": "b1",
            "batch_index": 0,
            "recorded_at": "2024-05-01T12:00:00Z",
            "received_at": "2024-05-01T12:00:01Z",
            "lat": 52.5,
            "lon": 13.4
        })
    }

    #[test]
    fn a_location_record_parses_and_keeps_its_exact_json() {
        let bytes = serde_json::to_vec(&valid()).unwrap();
        let parsed = ParsedRecord::parse(Some(&bytes)).unwrap();
        assert_eq!(parsed.record.tenant_id.as_str(), "acme");
        assert_eq!(parsed.raw.get().as_bytes(), bytes.as_slice());
    }

    #[test]
    fn values_that_are_not_version_1_location_records_are_refused_with_a_reason() {
        let mut v2 = valid();
        v2["schema_version"] = serde_json::json!(2);
        let mut bad_tenant = valid();
        bad_tenant["tenant_id"] = serde_json::json!("a b");
        for (payload, expected) in [
            (None, "no value"),
            (Some(b"not json".to_vec()), "not JSON"),
            (Some(b"{\"lat\": 1}".to_vec()), "not a location record"),
            (
                Some(serde_json::to_vec(&bad_tenant).unwrap()),
                "not a location record",
            ),
            (Some(serde_json::to_vec(&v2).unwrap()), "schema version 2"),
        ] {
            let err = ParsedRecord::parse(payload.as_deref()).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
