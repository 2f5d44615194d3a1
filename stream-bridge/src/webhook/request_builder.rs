//! Builds webhook requests from records: the JSON body and the signed headers. No I/O, so
//! what a partner receives is pinned down by unit tests.

use bytes::Bytes;
use locus_wire::TenantId;
use locus_wire::headers::CONTENT_TYPE_JSON;
use locus_wire::record::SCHEMA_VERSION;
use locus_wire::webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, sign};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// The wire shape of [`locus_wire::webhook::WebhookDelivery`], with the records kept as the
/// exact JSON read from Kafka: a field added to the record schema after this bridge was
/// built still reaches the partner.
#[derive(Serialize)]
struct Body<'a> {
    schema_version: u32,
    delivery_id: Uuid,
    tenant_id: &'a TenantId,
    records: &'a [&'a RawValue],
}

/// One delivery, ready to send (and to send again: retries reuse the body and the id).
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Id of the delivery, the same on every attempt.
    pub delivery_id: Uuid,
    /// The tenant whose records these are.
    pub tenant_id: TenantId,
    /// The JSON body, signed as is.
    pub body: Bytes,
    /// How many records the body carries.
    pub record_count: usize,
}

impl WebhookRequest {
    /// A delivery of `records` (JSON location records of `tenant_id`, in Kafka order).
    pub fn build(tenant_id: &TenantId, delivery_id: Uuid, records: &[&RawValue]) -> Self {
        let body = serde_json::to_vec(&Body {
            schema_version: SCHEMA_VERSION,
            delivery_id,
            tenant_id,
            records,
        })
        .expect("a struct of strings, ids and raw JSON always serialises");
        Self {
            delivery_id,
            tenant_id: tenant_id.clone(),
            body: Bytes::from(body),
            record_count: records.len(),
        }
    }

    /// The headers of an attempt sent at `timestamp` (unix seconds). Each attempt is signed
    /// afresh, so a retry late in the backoff still falls inside the receiver's replay
    /// tolerance.
    pub fn headers(&self, secret: &SecretString, timestamp: i64) -> HeaderMap {
        let signature = sign(secret.expose_secret().as_bytes(), timestamp, &self.body);
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON));
        headers.insert(
            HeaderName::from_static(SIGNATURE_HEADER),
            HeaderValue::from_str(&signature).expect("the signature is ASCII"),
        );
        headers.insert(
            HeaderName::from_static(DELIVERY_HEADER),
            HeaderValue::from_str(&self.delivery_id.to_string()).expect("a UUID is ASCII"),
        );
        headers
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use locus_wire::record::LocationRecord;
    use locus_wire::webhook::{WebhookDelivery, verify};
    use locus_wire::{DeviceId, SessionId};

    use super::*;

    fn record(index: u32) -> LocationRecord {
        let session = SessionId::new();
        LocationRecord {
            schema_version: SCHEMA_VERSION,
            record_id: locus_wire::record::record_id(session, "b1", index),
            tenant_id: TenantId::parse("acme").unwrap(),
            session_id: session,
            device_id: DeviceId::parse("phone-1").unwrap(),
            batch_id: "b1".to_owned(),
            batch_index: index,
            recorded_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            received_at: Utc.timestamp_opt(1_700_000_001, 0).unwrap(),
            lat: 52.5,
            lon: 13.4,
            accuracy: Some(5.0),
            altitude: None,
            speed: None,
            heading: None,
            battery: None,
            fix_key: None,
            attributes: None,
        }
    }

    fn raw(value: &impl Serialize) -> Box<RawValue> {
        serde_json::value::to_raw_value(value).unwrap()
    }

    #[test]
    fn the_body_is_a_webhook_delivery_with_the_records_in_order() {
        let records: Vec<_> = (0..3).map(record).collect();
        let raws: Vec<_> = records.iter().map(raw).collect();
        let refs: Vec<&RawValue> = raws.iter().map(AsRef::as_ref).collect();
        let id = Uuid::new_v4();
        let tenant = TenantId::parse("acme").unwrap();
        let req = WebhookRequest::build(&tenant, id, &refs);
        let parsed: WebhookDelivery = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            parsed,
            WebhookDelivery {
                schema_version: SCHEMA_VERSION,
                delivery_id: id,
                tenant_id: tenant,
                records,
            }
        );
        assert_eq!(req.record_count, 3);
        assert_eq!(req.delivery_id, id);
    }

    #[test]
    fn record_fields_unknown_to_the_bridge_are_passed_through() {
        let mut value = serde_json::to_value(record(0)).unwrap();
        value["floor"] = serde_json::json!(3);
        let raw = raw(&value);
        let req = WebhookRequest::build(&TenantId::parse("acme").unwrap(), Uuid::nil(), &[&raw]);
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["records"][0]["floor"], 3);
    }

    #[test]
    fn the_headers_carry_a_verifiable_signature_the_delivery_id_and_the_content_type() {
        let raw = raw(&record(0));
        let id = Uuid::new_v4();
        let req = WebhookRequest::build(&TenantId::parse("acme").unwrap(), id, &[&raw]);
        let secret = SecretString::from("s3cret");
        let headers = req.headers(&secret, 1_700_000_000);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["locus-delivery-id"], id.to_string().as_str());
        let signature = headers["locus-signature"].to_str().unwrap();
        assert!(signature.starts_with("t=1700000000,v1="), "{signature}");
        assert_eq!(
            verify(b"s3cret", signature, &req.body, 1_700_000_005, 300),
            Ok(())
        );
        assert!(verify(b"other", signature, &req.body, 1_700_000_005, 300).is_err());
    }

    #[test]
    fn every_attempt_is_signed_with_its_own_timestamp() {
        let raw = raw(&record(0));
        let req = WebhookRequest::build(&TenantId::parse("acme").unwrap(), Uuid::nil(), &[&raw]);
        let secret = SecretString::from("s3cret");
        let first = req.headers(&secret, 1_700_000_000);
        let retry = req.headers(&secret, 1_700_000_060);
        assert_ne!(first["locus-signature"], retry["locus-signature"]);
        assert_eq!(first["locus-delivery-id"], retry["locus-delivery-id"]);
    }
}
