//! Builds webhook requests from records: the JSON body and the signed headers. No I/O, so
//! what a partner receives is pinned down by unit tests.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use locus_wire::TenantId;
use locus_wire::headers::CONTENT_TYPE_JSON;
use locus_wire::record::SCHEMA_VERSION;
use locus_wire::webhook::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::config::Sink;

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

    /// The headers of an attempt sent at `now`, signed by `sink`'s key and, during a
    /// rollover (before the previous key's expiry), by the previous key too. Each attempt is
    /// signed afresh, so a retry late in the backoff still falls inside the receiver's replay
    /// tolerance; the id is the same on every attempt.
    pub fn headers(&self, sink: &Sink, now: DateTime<Utc>) -> HeaderMap {
        let timestamp = now.timestamp();
        let id = self.delivery_id.to_string();
        let mut keys = vec![&sink.key];
        if let Some(previous) = sink.previous.as_ref().filter(|p| now < p.until) {
            keys.push(&previous.key);
        }
        let signature = signature_header(&keys, &id, timestamp, &self.body);
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON));
        headers.insert(
            HeaderName::from_static(ID_HEADER),
            HeaderValue::from_str(&id).expect("a UUID is ASCII"),
        );
        headers.insert(
            HeaderName::from_static(TIMESTAMP_HEADER),
            HeaderValue::from(timestamp),
        );
        headers.insert(
            HeaderName::from_static(SIGNATURE_HEADER),
            HeaderValue::from_str(&signature).expect("base64 signatures are ASCII"),
        );
        headers
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use locus_wire::record::LocationRecord;
    use locus_wire::webhook::{SigningKey, WebhookDelivery, verify};
    use locus_wire::{DeviceId, SessionId};
    use secrecy::SecretString;

    use super::*;
    use crate::webhook::config::PreviousKey;

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

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn sink(secret: &str) -> Sink {
        Sink::parse(
            "acme",
            "https://hooks.example/locus",
            SecretString::from(secret),
            false,
        )
        .unwrap()
        .1
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    #[test]
    fn the_headers_are_standard_webhooks_with_a_verifiable_signature_over_the_id() {
        let raw = raw(&record(0));
        let id = Uuid::new_v4();
        let req = WebhookRequest::build(&TenantId::parse("acme").unwrap(), id, &[&raw]);
        let headers = req.headers(&sink(SECRET), at(1_700_000_000));
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["webhook-id"], id.to_string().as_str());
        assert_eq!(headers["webhook-timestamp"], "1700000000");
        let signature = headers["webhook-signature"].to_str().unwrap();
        assert!(signature.starts_with("v1,"), "{signature}");
        assert!(
            !signature.contains(' '),
            "one key, one signature: {signature}"
        );
        let key = SigningKey::parse(SECRET).unwrap();
        let check = |k: &SigningKey| {
            verify(
                k,
                &id.to_string(),
                "1700000000",
                signature,
                &req.body,
                1_700_000_005,
                300,
            )
        };
        assert_eq!(check(&key), Ok(()));
        assert!(check(&SigningKey::from_bytes(&[0; 32])).is_err());
        assert_eq!(headers.len(), 4, "no old locus-* headers: {headers:?}");
    }

    #[test]
    fn every_attempt_is_signed_with_its_own_timestamp_and_the_same_id() {
        let raw = raw(&record(0));
        let req = WebhookRequest::build(&TenantId::parse("acme").unwrap(), Uuid::nil(), &[&raw]);
        let first = req.headers(&sink(SECRET), at(1_700_000_000));
        let retry = req.headers(&sink(SECRET), at(1_700_000_060));
        assert_ne!(first["webhook-signature"], retry["webhook-signature"]);
        assert_ne!(first["webhook-timestamp"], retry["webhook-timestamp"]);
        assert_eq!(first["webhook-id"], retry["webhook-id"]);
    }

    #[test]
    fn during_a_rollover_both_keys_sign_and_after_its_expiry_only_the_new_one() {
        let raw = raw(&record(0));
        let id = Uuid::new_v4();
        let req = WebhookRequest::build(&TenantId::parse("acme").unwrap(), id, &[&raw]);
        let old = SigningKey::from_bytes(&[5; 32]);
        let mut rolling = sink(SECRET);
        rolling.previous = Some(PreviousKey {
            key: old.clone(),
            until: at(1_700_000_100),
        });
        let new = SigningKey::parse(SECRET).unwrap();
        let verifies = |key: &SigningKey, headers: &HeaderMap| {
            verify(
                key,
                &id.to_string(),
                headers["webhook-timestamp"].to_str().unwrap(),
                headers["webhook-signature"].to_str().unwrap(),
                &req.body,
                1_700_000_050,
                300,
            )
            .is_ok()
        };
        let during = req.headers(&rolling, at(1_700_000_099));
        assert_eq!(
            during["webhook-signature"]
                .to_str()
                .unwrap()
                .split(' ')
                .count(),
            2
        );
        assert!(verifies(&new, &during) && verifies(&old, &during));
        let after = req.headers(&rolling, at(1_700_000_100));
        assert_eq!(
            after["webhook-signature"]
                .to_str()
                .unwrap()
                .split(' ')
                .count(),
            1
        );
        assert!(verifies(&new, &after) && !verifies(&old, &after));
    }
}
