//! Webhook deliveries of the stream bridge and their signature, in the Standard Webhooks
//! format (<https://www.standardwebhooks.com>), so a partner's existing library verifies
//! them.
//!
//! Every request carries three headers: `webhook-id` (the delivery id, the same on every
//! retry), `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`: one
//! or more space-separated `v1,<base64 HMAC-SHA256>` signatures over
//! `"{id}.{timestamp}.{body}"`, one per secret that signs (two during a secret rollover).
//! Binding the id and the timestamp into the MAC lets a receiver trust the id it dedupes on
//! and refuse replays older than its tolerance.
//!
//! Secrets are written `whsec_<base64 key>`: the HMAC key is the decoded part, not the
//! text.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::TenantId;
use crate::record::LocationRecord;

/// Header that carries the delivery id (the same on every retry of a delivery; signed).
pub const ID_HEADER: &str = "webhook-id";
/// Header that carries the attempt's time, unix seconds (signed).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header that carries the signatures, space-separated `v1,<base64>`.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Prefix of a secret in the Standard Webhooks format.
pub const SECRET_PREFIX: &str = "whsec_";
/// Version tag of an HMAC-SHA256 signature.
const V1: &str = "v1,";

/// Body of one webhook POST: a batch of location records of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// Schema version of the records.
    pub schema_version: u32,
    /// Id of this delivery; retries reuse it. The same as the `webhook-id` header.
    pub delivery_id: Uuid,
    /// The tenant whose records these are.
    pub tenant_id: TenantId,
    /// The records, in Kafka order within each session.
    pub records: Vec<LocationRecord>,
}

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The timestamp is not a number, or no signature is `v1,<base64>`.
    #[error("signature headers are malformed")]
    Malformed,
    /// The timestamp is outside the receiver's tolerance.
    #[error("signature timestamp is outside the tolerance")]
    Stale,
    /// No signature matches the id, timestamp and body.
    #[error("no signature matches the body")]
    Mismatch,
}

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// It does not start with `whsec_`.
    #[error("the secret must be written whsec_<base64 key>")]
    NoPrefix,
    /// The part after `whsec_` is not base64.
    #[error("the part after whsec_ is not valid base64")]
    NotBase64,
    /// The decoded key is shorter or longer than allowed.
    #[error("the key is {len} bytes; it must be {min} to {max} bytes")]
    Length {
        /// The decoded length.
        len: usize,
        /// The shortest allowed.
        min: usize,
        /// The longest allowed.
        max: usize,
    },
}

/// Shortest key a partner may choose (the Standard Webhooks recommendation).
pub const MIN_KEY_BYTES: usize = 24;
/// Longest key a partner may choose (the Standard Webhooks recommendation).
pub const MAX_KEY_BYTES: usize = 64;
/// Longest key the bridge signs with: secrets of the old Locus format (up to 512 ASCII
/// characters) were carried over as `whsec_` + base64 of their bytes.
pub const MAX_STORED_KEY_BYTES: usize = 512;

/// Base64 as Standard Webhooks libraries read it: the standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An HMAC key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(<{} bytes>)", self.0.len())
    }
}

impl SigningKey {
    /// The key of a `whsec_<base64>` secret whose key has `min..=max` bytes.
    pub fn parse_bounded(secret: &str, min: usize, max: usize) -> Result<Self, SecretError> {
        let encoded = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::NoPrefix)?;
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if !(min..=max).contains(&key.len()) {
            return Err(SecretError::Length {
                len: key.len(),
                min,
                max,
            });
        }
        Ok(Self(key))
    }

    /// The key of a `whsec_` secret a partner sets: 24 to 64 bytes.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        Self::parse_bounded(secret, MIN_KEY_BYTES, MAX_KEY_BYTES)
    }

    /// The key of a secret as the bridge has it: `whsec_<base64>` (1 to 512 bytes), or,
    /// for a static sink still written in the old Locus format, the text's own bytes (the
    /// same key the migration gave database rows: `whsec_` + base64 of the text).
    pub fn from_stored(secret: &str) -> Result<Self, SecretError> {
        if secret.starts_with(SECRET_PREFIX) {
            Self::parse_bounded(secret, 1, MAX_STORED_KEY_BYTES)
        } else if secret.is_empty() {
            Err(SecretError::Length {
                len: 0,
                min: 1,
                max: MAX_STORED_KEY_BYTES,
            })
        } else {
            Ok(Self(secret.as_bytes().to_vec()))
        }
    }

    /// A key of these bytes (a fresh random key, say).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The key written as a secret: `whsec_<base64>`.
    pub fn to_secret(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&self.0)
        )
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// One signature, `v1,<base64>`, of `body` sent as delivery `id` at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!(
            "{V1}{}",
            base64::engine::general_purpose::STANDARD.encode(tag)
        )
    }
}

/// The `webhook-signature` value: one signature per key, space-separated, in order.
pub fn signature_header(keys: &[&SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a request as a receiver holding `key` would: `timestamp` (the
/// `webhook-timestamp` value) within `tolerance_secs` of `now` (unix seconds), and one of
/// the `v1,` signatures of `signatures` (the `webhook-signature` value) made by `key` over
/// `id`, `timestamp` and `body`. Signatures of other versions are ignored; comparison is
/// constant-time.
pub fn verify(
    key: &SigningKey,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let t: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed)?;
    let tags: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix(V1))
        .filter_map(|b| BASE64.decode(b).ok())
        .collect();
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let mac = key.mac(id, t, body);
    if tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// [`verify`] of a whole request: `header` looks each of the three headers up by name (a
/// missing one is [`SignatureError::Malformed`]).
pub fn verify_request<'a>(
    key: &SigningKey,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header(ID_HEADER),
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
    ) else {
        return Err(SignatureError::Malformed);
    };
    verify(key, id, timestamp, signatures, body, now, tolerance_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The test vector of the Standard Webhooks reference libraries (and Svix's).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_standard_webhooks_test_vector_reproduces_exactly() {
        // The key is 24 bytes: the reference vector is also the shortest allowed key.
        let key = SigningKey::parse(VECTOR_SECRET).unwrap();
        assert_eq!(
            key.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
        assert_eq!(key.to_secret(), VECTOR_SECRET);
        assert_eq!(
            verify(
                &key,
                VECTOR_ID,
                "1614265330",
                VECTOR_SIGNATURE,
                VECTOR_BODY,
                VECTOR_TIMESTAMP,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn a_signature_verifies_only_for_its_id_body_key_and_time() {
        let key = SigningKey::parse(VECTOR_SECRET).unwrap();
        let other = SigningKey::from_bytes(&[7; 32]);
        let h = key.sign("d1", 1_700_000_000, b"{}");
        let check = |k: &SigningKey, id: &str, t: &str, sig: &str, body: &[u8], now: i64| {
            verify(k, id, t, sig, body, now, 300)
        };
        assert_eq!(
            check(&key, "d1", "1700000000", &h, b"{}", 1_700_000_010),
            Ok(())
        );
        assert_eq!(
            check(&key, "d1", "1700000000", &h, b"{ }", 1_700_000_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&key, "d2", "1700000000", &h, b"{}", 1_700_000_010),
            Err(SignatureError::Mismatch),
            "the id is signed"
        );
        assert_eq!(
            check(&key, "d1", "1700000001", &h, b"{}", 1_700_000_010),
            Err(SignatureError::Mismatch),
            "the timestamp is signed"
        );
        assert_eq!(
            check(&other, "d1", "1700000000", &h, b"{}", 1_700_000_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&key, "d1", "1700000000", &h, b"{}", 1_700_001_000),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(&key, "d1", "soon", &h, b"{}", 0),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(&key, "d1", "1700000000", "t=1,v1=ab", b"{}", 1_700_000_000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn during_a_rollover_either_key_verifies_the_two_signatures() {
        let new = SigningKey::from_bytes(&[1; 32]);
        let old = SigningKey::from_bytes(&[2; 32]);
        let header = signature_header(&[&new, &old], "d1", 1_700_000_000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        for key in [&new, &old] {
            assert_eq!(
                verify(key, "d1", "1700000000", &header, b"{}", 1_700_000_000, 0),
                Ok(())
            );
        }
        // Signatures of a version a receiver does not know are skipped, not fatal.
        let with_v2 = format!("v2,abcd {}", new.sign("d1", 1_700_000_000, b"{}"));
        assert_eq!(
            verify(&new, "d1", "1700000000", &with_v2, b"{}", 1_700_000_000, 0),
            Ok(())
        );
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes_and_old_locus_secrets_keep_their_bytes() {
        assert_eq!(SigningKey::parse("MfKQ9r8G"), Err(SecretError::NoPrefix));
        assert_eq!(
            SigningKey::parse("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
        assert!(matches!(
            SigningKey::parse("whsec_c2hvcnQ="),
            Err(SecretError::Length { len: 5, .. })
        ));
        let long = SigningKey::from_bytes(&[9; 65]).to_secret();
        assert!(matches!(
            SigningKey::parse(&long),
            Err(SecretError::Length { len: 65, .. })
        ));
        // The padding is optional, as in the reference libraries.
        let key = SigningKey::from_bytes(&[3; 32]);
        let secret = key.to_secret();
        assert!(secret.ends_with('='));
        assert_eq!(SigningKey::parse(secret.trim_end_matches('=')), Ok(key));
        // An old-format secret signs with its own bytes, which is what its whsec_ form
        // (the migration's conversion) decodes to.
        let old = "an-old-locus-secret-of-32-chars!";
        let converted = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(old)
        );
        assert_eq!(
            SigningKey::from_stored(old),
            SigningKey::from_stored(&converted)
        );
        assert!(SigningKey::from_stored("").is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = SigningKey::from_bytes(b"hunter2hunter2hunter2hunter2");
        assert_eq!(format!("{key:?}"), "SigningKey(<28 bytes>)");
    }

    proptest! {
        #[test]
        fn any_body_signed_now_verifies(body in proptest::collection::vec(any::<u8>(), 0..512), t in 0i64..4_000_000_000, key in proptest::collection::vec(any::<u8>(), 24..=64)) {
            let key = SigningKey::from_bytes(&key);
            let h = signature_header(&[&key], "msg_1", t, &body);
            prop_assert_eq!(verify(&key, "msg_1", &t.to_string(), &h, &body, t, 0), Ok(()));
            prop_assert_eq!(SigningKey::parse(&key.to_secret()), Ok(key));
        }
    }
}
