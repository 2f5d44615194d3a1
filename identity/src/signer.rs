//! Locus device tokens: ES256 (ECDSA P-256, SHA-256) signatures made with `ring`, the key
//! stored as PKCS#8 PEM, named by its RFC 7638 thumbprint, published as a JWKS.
//!
//! The key pair is parsed once and kept, and the header is encoded once: signing a token is
//! one JSON serialization, two base64 encodings and one ECDSA signature.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use locus_wire::{DeviceId, TenantId};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ConfigError;

/// Signs Locus device tokens with one P-256 key. Cheap to clone.
#[derive(Clone)]
pub struct TokenSigner {
    inner: Arc<SignerInner>,
}

struct SignerInner {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    rng: SystemRandom,
    kid: String,
    /// `base64url({"alg":"ES256","typ":"JWT","kid":...})`, the first part of every token.
    header: String,
    public: LocusPublicKeys,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("TokenSigner")
            .field("kid", &self.inner.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A fresh random P-256 key.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("the system random generator works");
        Self::from_pkcs8_der(doc.as_ref().to_vec())
            .expect("ring parses the PKCS#8 document it generated")
    }

    /// The key in a PEM `PRIVATE KEY` (PKCS#8) block, as written by [`Self::to_pkcs8_pem`]
    /// or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, ConfigError> {
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let start = pem.find(BEGIN).ok_or_else(|| {
            let hint = if pem.contains("BEGIN EC PRIVATE KEY") {
                "it is a SEC1 `EC PRIVATE KEY`; convert it with `openssl pkcs8 -topk8 -nocrypt`"
            } else {
                "no `-----BEGIN PRIVATE KEY-----` line"
            };
            ConfigError::SigningKey(hint.to_owned())
        })? + BEGIN.len();
        let end = pem[start..]
            .find(END)
            .ok_or_else(|| ConfigError::SigningKey("no `-----END PRIVATE KEY-----` line".into()))?
            + start;
        let body: String = pem[start..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|e| ConfigError::SigningKey(format!("the PEM body is not base64: {e}")))?;
        Self::from_pkcs8_der(der)
    }

    fn from_pkcs8_der(pkcs8: Vec<u8>) -> Result<Self, ConfigError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| ConfigError::SigningKey(e.to_string()))?;
        let public = LocusPublicKeys::from_point(pair.public_key().as_ref())?;
        let kid = public.keys[0].kid.clone();
        let header = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"alg": "ES256", "typ": "JWT", "kid": kid}))
                .expect("a JSON object serializes"),
        );
        Ok(Self {
            inner: Arc::new(SignerInner {
                pair,
                pkcs8,
                rng,
                kid,
                header,
                public,
            }),
        })
    }

    /// The key as a PEM `PRIVATE KEY` (PKCS#8) block, for `locus-ingest keygen`.
    pub fn to_pkcs8_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.inner.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// The key id: the RFC 7638 JWK thumbprint of the public key (base64url SHA-256).
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The public key, to verify with and to publish. Add the previous key's during a
    /// rotation so tokens signed before it still verify.
    pub fn public_keys(&self) -> LocusPublicKeys {
        self.inner.public.clone()
    }

    /// A device token: `iss`, `aud`, `sub` = the device, `tenant`, `role` = device, `iat`
    /// = now, `exp` = now + `ttl_secs`.
    pub fn sign_device_token(
        &self,
        issuer: &str,
        audience: &str,
        tenant: &TenantId,
        device: &DeviceId,
        ttl_secs: i64,
    ) -> String {
        let now = crate::unix_now();
        self.sign(&json!({
            "iss": issuer,
            "aud": audience,
            "sub": device.as_str(),
            "tenant": tenant.as_str(),
            "role": "device",
            "iat": now,
            "exp": now + ttl_secs,
        }))
    }

    /// A token with exactly these claims (tests, tools).
    pub fn sign(&self, claims: &Value) -> String {
        let payload = serde_json::to_vec(claims).expect("a JSON value serializes");
        let mut token = String::with_capacity(self.inner.header.len() + payload.len() * 2 + 90);
        token.push_str(&self.inner.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self
            .inner
            .pair
            .sign(&self.inner.rng, token.as_bytes())
            .expect("ECDSA signing with the system random generator works");
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        token
    }
}

/// Public keys Locus signs with: verified against by kid, published as a JWKS.
#[derive(Clone, Default)]
pub struct LocusPublicKeys {
    keys: Vec<LocusKey>,
}

#[derive(Clone)]
struct LocusKey {
    kid: String,
    decoding: DecodingKey,
    jwk: Value,
}

impl fmt::Debug for LocusPublicKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.kid))
            .finish()
    }
}

impl LocusPublicKeys {
    /// The key set of an uncompressed P-256 point (`04 || x || y`).
    fn from_point(point: &[u8]) -> Result<Self, ConfigError> {
        if point.len() != 65 || point[0] != 4 {
            return Err(ConfigError::SigningKey(
                "the public key is not an uncompressed P-256 point".into(),
            ));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|e| ConfigError::SigningKey(e.to_string()))?;
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": kid, "alg": "ES256", "use": "sig",
        });
        Ok(Self {
            keys: vec![LocusKey { kid, decoding, jwk }],
        })
    }

    /// The JWKS document (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }

    /// Adds `other`'s keys (a previous key during rotation); a kid already present is kept once.
    pub fn add(&mut self, other: LocusPublicKeys) {
        for key in other.keys {
            if !self.keys.iter().any(|k| k.kid == key.kid) {
                self.keys.push(key);
            }
        }
    }

    /// The kids, current first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| &k.decoding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_the_pem_round_trip_with_its_kid() {
        let signer = TokenSigner::generate();
        let pem = signer.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = TokenSigner::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.kid(), signer.kid());
        assert_ne!(TokenSigner::generate().kid(), signer.kid());
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 7638 has no EC example; compute the thumbprint independently from the JWK.
        let signer = TokenSigner::generate();
        let jwk = &signer.public_keys().jwks()["keys"][0];
        let canonical = serde_json::to_string(&json!({
            "crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"],
        }))
        .unwrap();
        assert_eq!(
            signer.kid(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
        );
        assert_eq!(jwk["kid"], signer.kid());
        assert_eq!(signer.kid().len(), 43);
    }

    #[test]
    fn a_sec1_key_or_garbage_is_refused_with_a_hint() {
        let err =
            TokenSigner::from_pkcs8_pem("-----BEGIN EC PRIVATE KEY-----\nAAAA\n").unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
        assert!(
            TokenSigner::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
            )
            .is_err()
        );
    }

    #[test]
    fn adding_the_previous_keys_publishes_both_once() {
        let a = TokenSigner::generate();
        let b = TokenSigner::generate();
        let mut keys = a.public_keys();
        keys.add(b.public_keys());
        keys.add(b.public_keys());
        let kids: Vec<&str> = keys.kids().collect();
        assert_eq!(kids, [a.kid(), b.kid()]);
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 2);
    }
}
