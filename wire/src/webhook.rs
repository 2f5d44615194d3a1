//! Webhook deliveries of the stream bridge and their signature.
//!
//! The signature header reads `t=<unix seconds>,v1=<hex HMAC-SHA256>`, where the MAC is
//! computed with the sink's secret over `"<t>.<raw body>"`. Binding the timestamp into the
//! MAC lets a receiver refuse replays older than its tolerance.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::TenantId;
use crate::record::LocationRecord;

/// Header that carries the signature.
pub const SIGNATURE_HEADER: &str = "locus-signature";
/// Header that carries the delivery id (the same on every retry of a delivery).
pub const DELIVERY_HEADER: &str = "locus-delivery-id";

/// Body of one webhook POST: a batch of location records of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// Schema version of the records.
    pub schema_version: u32,
    /// Id of this delivery; retries reuse it.
    pub delivery_id: Uuid,
    /// The tenant whose records these are.
    pub tenant_id: TenantId,
    /// The records, in Kafka order within each session.
    pub records: Vec<LocationRecord>,
}

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is not `t=...,v1=...`.
    #[error("signature header is malformed")]
    Malformed,
    /// The timestamp is outside the receiver's tolerance.
    #[error("signature timestamp is outside the tolerance")]
    Stale,
    /// The MAC does not match the body.
    #[error("signature does not match the body")]
    Mismatch,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Checks a signature header against `body`, accepting timestamps within
/// `tolerance_secs` of `now` (unix seconds). Comparison is constant-time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut tag = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => tag = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(tag)) = (timestamp, tag) else {
        return Err(SignatureError::Malformed);
    };
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    mac(secret, timestamp, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let h = sign(b"s3cret", 1_700_000_000, b"{}");
        assert_eq!(verify(b"s3cret", &h, b"{}", 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify(b"s3cret", &h, b"{ }", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &h, b"{}", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &h, b"{}", 1_700_001_000, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"s3cret", "garbage", b"{}", 0, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_signature_matches_an_independent_hmac_computation() {
        // Computed with: printf '1700000000.hello' | openssl dgst -sha256 -hmac key
        let h = sign(b"key", 1_700_000_000, b"hello");
        assert_eq!(
            h,
            "t=1700000000,v1=4d583a269f4f276a3fa80ff31b5a01879a848096983222a17893d198418939aa"
        );
    }

    proptest! {
        #[test]
        fn any_body_signed_now_verifies(body in proptest::collection::vec(any::<u8>(), 0..512), t in 0i64..4_000_000_000) {
            let h = sign(b"k", t, &body);
            prop_assert_eq!(verify(b"k", &h, &body, t, 0), Ok(()));
        }
    }
}
