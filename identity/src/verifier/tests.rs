//! The bad-token catalogue: each way a token can be wrong, refused with its own error; and
//! valid tokens of each role, with the principal they stand for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::*;
use crate::{ClaimMapping, Role, TokenSigner};
use locus_wire::TenantId;

const NOW: i64 = 1_800_000_000;
const DEV_SECRET: &str = "a-development-secret-of-forty-bytes-xxxx";
const PROVIDER: &str = "https://idp.example.com/";
const RSA_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/rsa-test-key.pub.pem");
const RSA_MODULUS_HEX: &str = include_str!("../../tests/fixtures/rsa-test-key.modulus.hex");

struct Fixture {
    signer: TokenSigner,
    ed: Ed25519KeyPair,
    ed_pkcs8: Vec<u8>,
    verifier: Verifier,
}

fn fixture_with(dev_secret: Option<&str>) -> Fixture {
    fixture_cached(dev_secret, VerifierConfig::default().cache_capacity)
}

fn fixture_cached(dev_secret: Option<&str>, cache_capacity: usize) -> Fixture {
    let signer = TokenSigner::generate();
    let rng = ring::rand::SystemRandom::new();
    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let ed = Ed25519KeyPair::from_pkcs8(&ed_pkcs8).unwrap();
    let mut claims = ClaimMapping::default();
    claims.roles.insert("admins".to_owned(), Role::TenantAdmin);
    let provider = ProviderConfig {
        claims,
        // Nothing listens there: a fetch fails fast, and none is expected.
        ..ProviderConfig::new(PROVIDER, "http://127.0.0.1:9/jwks".parse().unwrap())
    };
    let config = VerifierConfig {
        dev_secret: dev_secret.map(|s| SecretString::from(s.to_owned())),
        provider: Some(provider),
        cache_capacity,
        ..VerifierConfig::default()
    };
    let verifier = Verifier::new(config, signer.public_keys()).unwrap();
    let modulus = hex::decode(RSA_MODULUS_HEX.trim()).unwrap();
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "n": URL_SAFE_NO_PAD.encode(modulus), "e": "AQAB"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())},
    ]});
    preload(&verifier, &jwks);
    Fixture {
        signer,
        ed,
        ed_pkcs8,
        verifier,
    }
}

/// Installs `jwks` as the provider's key set, as a refresh would.
fn preload(verifier: &Verifier, jwks: &Value) {
    verifier
        .inner
        .provider
        .as_ref()
        .unwrap()
        .keys
        .preload(jwks.to_string().as_bytes());
}

fn signature_checks(f: &Fixture) -> u64 {
    f.verifier
        .inner
        .signature_checks
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn fixture() -> Fixture {
    fixture_with(Some(DEV_SECRET))
}

fn device_claims() -> Value {
    json!({"iss": "locus", "aud": "locus", "sub": "phone-1", "tenant": "acme",
           "role": "device", "iat": NOW, "exp": NOW + 600})
}

/// `base` with `changes` applied; a `null` removes the claim.
fn with(base: Value, changes: Value) -> Value {
    let mut claims = base;
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn dev(claims: &Value) -> String {
    hs256(claims, DEV_SECRET.as_bytes())
}

fn eddsa(f: &Fixture, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&f.ed_pkcs8)).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn refused(f: &Fixture, token: &str) -> AuthError {
    f.verifier
        .verify_at(token, NOW)
        .await
        .expect_err("the token must be refused")
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused_by_name() {
    let f = fixture();
    let token = format!("eyJhbGciOiJub25lIn0.{}.", b64(&device_claims()));
    assert_eq!(refused(&f, &token).await, AuthError::AlgNone);
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "None"})),
        b64(&device_claims())
    );
    assert_eq!(refused(&f, &token).await, AuthError::AlgNone);
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_providers_rsa_public_key_is_refused() {
    let f = fixture();
    let claims = with(device_claims(), json!({"iss": PROVIDER}));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        refused(&f, &token).await,
        AuthError::AlgNotAllowed {
            alg: "HS256".into(),
            issuer: PROVIDER.into()
        }
    );
}

#[tokio::test]
async fn a_token_whose_alg_differs_from_its_keys_alg_is_refused() {
    let f = fixture();
    // An RS256 header naming the Ed25519 key: the key's alg (EdDSA) is what counts.
    let claims = with(device_claims(), json!({"iss": PROVIDER}));
    let token = eddsa(&f, "ed-1", &claims);
    let (_, rest) = token.split_once('.').unwrap();
    let forged = format!("{}.{rest}", b64(&json!({"alg": "RS256", "kid": "ed-1"})));
    assert_eq!(
        refused(&f, &forged).await,
        AuthError::AlgMismatch {
            token: "RS256".into(),
            key: "EdDSA".into()
        }
    );
}

#[tokio::test]
async fn other_audiences_and_issuers_are_refused() {
    let f = fixture();
    let token = dev(&with(device_claims(), json!({"aud": "elsewhere"})));
    assert_eq!(
        refused(&f, &token).await,
        AuthError::WrongAudience("locus".into())
    );
    let token = dev(&with(device_claims(), json!({"aud": ["a", "b"]})));
    assert_eq!(
        refused(&f, &token).await,
        AuthError::WrongAudience("locus".into())
    );
    let token = dev(&with(device_claims(), json!({"iss": "mallory"})));
    assert_eq!(
        refused(&f, &token).await,
        AuthError::UnknownIssuer("mallory".into())
    );
}

#[tokio::test]
async fn tokens_missing_exp_sub_tenant_role_iss_or_aud_are_refused_naming_the_claim() {
    let f = fixture();
    for claim in ["exp", "sub", "tenant", "role", "iss", "aud"] {
        let token = dev(&with(device_claims(), json!({claim: null})));
        assert_eq!(
            refused(&f, &token).await,
            AuthError::MissingClaim(claim.into()),
            "{claim}"
        );
    }
}

#[tokio::test]
async fn expired_premature_future_and_too_long_lived_tokens_are_refused() {
    let f = fixture();
    let cases = [
        (
            json!({"iat": NOW - 700, "exp": NOW - 100}),
            AuthError::Expired {
                exp: NOW - 100,
                now: NOW,
                leeway: 30,
            },
        ),
        (
            json!({"nbf": NOW + 100}),
            AuthError::NotYetValid {
                nbf: NOW + 100,
                now: NOW,
            },
        ),
        (
            json!({"iat": NOW + 100, "exp": NOW + 700}),
            AuthError::IssuedInFuture {
                iat: NOW + 100,
                now: NOW,
            },
        ),
        (
            json!({"exp": NOW + 86_401}),
            AuthError::LifetimeTooLong {
                lifetime: 86_401,
                max: 86_400,
            },
        ),
    ];
    for (changes, expected) in cases {
        let token = dev(&with(device_claims(), changes));
        assert_eq!(refused(&f, &token).await, expected);
    }
}

#[tokio::test]
async fn the_leeway_is_honoured_to_the_second_at_the_expiry_edge() {
    let f = fixture();
    let at_edge = dev(&with(
        device_claims(),
        json!({"iat": NOW - 630, "exp": NOW - 30}),
    ));
    f.verifier.verify_at(&at_edge, NOW).await.unwrap();
    let past_edge = dev(&with(
        device_claims(),
        json!({"iat": NOW - 631, "exp": NOW - 31}),
    ));
    assert!(matches!(
        refused(&f, &past_edge).await,
        AuthError::Expired { .. }
    ));
}

#[tokio::test]
async fn an_oversized_token_is_refused_before_it_is_decoded() {
    let f = fixture();
    let token = format!("{}{}", dev(&device_claims()), "A".repeat(8192));
    assert!(matches!(
        refused(&f, &token).await,
        AuthError::TooLarge { max: 8192, .. }
    ));
}

#[tokio::test]
async fn a_typ_other_than_jwt_or_at_jwt_is_refused() {
    let f = fixture();
    for (typ, ok) in [
        ("JWT", true),
        ("at+JWT", true),
        ("application/at+jwt", true),
        ("JOSE+JSON", false),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(typ.to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &device_claims(),
            &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
        )
        .unwrap();
        let result = f.verifier.verify_at(&token, NOW).await;
        if ok {
            result.unwrap();
        } else {
            assert_eq!(result, Err(AuthError::BadTyp(typ.into())));
        }
    }
}

#[tokio::test]
async fn unknown_kids_wrong_signatures_and_missing_kids_are_refused() {
    let f = fixture();
    let stranger = TokenSigner::generate();
    let token = stranger.sign(&device_claims());
    assert_eq!(
        refused(&f, &token).await,
        AuthError::UnknownKid(stranger.kid().into())
    );

    // Header and payload of a real token, signature of another token of the same key.
    let real = f.signer.sign(&device_claims());
    let other = f
        .signer
        .sign(&with(device_claims(), json!({"sub": "phone-2"})));
    let (message, _) = real.rsplit_once('.').unwrap();
    let (_, signature) = other.rsplit_once('.').unwrap();
    let token = format!("{message}.{signature}");
    assert_eq!(refused(&f, &token).await, AuthError::BadSignature);

    let token = hs256(&device_claims(), b"another-secret-of-more-than-32-bytes!!");
    assert_eq!(refused(&f, &token).await, AuthError::BadSignature);

    let (_, rest) = real.split_once('.').unwrap();
    let kidless = format!("{}.{rest}", b64(&json!({"alg": "ES256", "typ": "JWT"})));
    assert_eq!(refused(&f, &kidless).await, AuthError::MissingKid);
}

#[tokio::test]
async fn hs256_is_refused_when_no_development_secret_is_configured() {
    let f = fixture_with(None);
    let token = dev(&device_claims());
    assert_eq!(refused(&f, &token).await, AuthError::NoDevSecret);
}

#[tokio::test]
async fn malformed_tokens_unknown_algs_crit_headers_and_foreign_algs_are_refused() {
    let f = fixture();
    for token in ["", "abc", "a.b", "a.b.c.d", "!!.e30.x"] {
        assert!(
            matches!(refused(&f, token).await, AuthError::Malformed(_)),
            "{token:?}"
        );
    }
    let payload = b64(&device_claims());
    let token = format!("{}.{payload}.x", b64(&json!({"alg": "HS1"})));
    assert_eq!(
        refused(&f, &token).await,
        AuthError::UnsupportedAlg("HS1".into())
    );
    let token = format!(
        "{}.{payload}.x",
        b64(&json!({"alg": "HS256", "crit": ["exp"]}))
    );
    assert_eq!(refused(&f, &token).await, AuthError::CritHeader);
    let token = format!(
        "{}.{payload}.x",
        b64(&json!({"alg": "RS256", "kid": "rsa-1"}))
    );
    assert_eq!(
        refused(&f, &token).await,
        AuthError::AlgNotAllowed {
            alg: "RS256".into(),
            issuer: "locus".into()
        }
    );
}

#[tokio::test]
async fn valid_tokens_of_each_role_verify_with_their_principal() {
    let f = fixture();
    let acme = TenantId::parse("acme").unwrap();
    let device = f
        .verifier
        .verify_at(&f.signer.sign(&device_claims()), NOW)
        .await
        .unwrap();
    assert_eq!(
        device,
        Principal {
            role: Role::Device,
            subject: "phone-1".into(),
            tenant: Some(acme.clone()),
            issued_at: Some(NOW),
            expires_at: NOW + 600,
        }
    );
    let admin = dev(&with(
        device_claims(),
        json!({"role": "tenant_admin", "sub": "alice@acme"}),
    ));
    let admin = f.verifier.verify_at(&admin, NOW).await.unwrap();
    assert_eq!(
        (admin.role, admin.subject.as_str(), admin.tenant),
        (Role::TenantAdmin, "alice@acme", Some(acme.clone()))
    );
    // Platform admins and partners have no tenant, whatever the token says.
    for role in [Role::PlatformAdmin, Role::Partner] {
        let token = dev(&with(
            device_claims(),
            json!({"role": role.as_str(), "sub": "p", "tenant": null}),
        ));
        let p = f.verifier.verify_at(&token, NOW).await.unwrap();
        assert_eq!((p.role, p.tenant), (role, None));
    }
    // A provider token, role mapped from the provider's vocabulary.
    let token = eddsa(
        &f,
        "ed-1",
        &json!({"iss": PROVIDER, "aud": "locus", "sub": "bob", "tenant": "acme",
                "role": ["staff", "admins"], "exp": NOW + 300}),
    );
    let p = f.verifier.verify_at(&token, NOW).await.unwrap();
    assert_eq!(
        p,
        Principal {
            role: Role::TenantAdmin,
            subject: "bob".into(),
            tenant: Some(acme),
            issued_at: None,
            expires_at: NOW + 300,
        }
    );
    let _ = &f.ed;
}

#[tokio::test]
async fn a_device_token_with_a_malformed_tenant_or_device_id_is_refused() {
    let f = fixture();
    let token = dev(&with(device_claims(), json!({"tenant": "a b"})));
    assert!(matches!(
        refused(&f, &token).await,
        AuthError::InvalidClaim { claim, .. } if claim == "tenant"
    ));
    let token = dev(&with(device_claims(), json!({"sub": "phone 1"})));
    assert!(matches!(
        refused(&f, &token).await,
        AuthError::InvalidClaim { claim, .. } if claim == "sub"
    ));
    let token = dev(&with(device_claims(), json!({"role": "root"})));
    assert_eq!(
        refused(&f, &token).await,
        AuthError::UnknownRole("root".into())
    );
}

#[tokio::test]
async fn a_signed_device_token_verifies_through_the_public_clock() {
    let f = fixture();
    let token = f.signer.sign_device_token(
        "locus",
        "locus",
        &TenantId::parse("acme").unwrap(),
        &locus_wire::DeviceId::parse("phone-9").unwrap(),
        900,
    );
    let p = f.verifier.verify(&token).await.unwrap();
    assert_eq!((p.role, p.subject.as_str()), (Role::Device, "phone-9"));
    assert_eq!(p.expires_at - p.issued_at.unwrap(), 900);
}

/// Not an assertion of speed (machines differ), a measurement printed for the record:
/// `cargo test -p locus-identity --release --lib verification_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, run on demand in release mode"]
async fn verification_cost() {
    const N: u32 = 100_000;
    fn per(start: std::time::Instant, n: u32) -> f64 {
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    }
    // No cache: every verification checks the signature.
    let f = fixture_cached(Some(DEV_SECRET), 0);
    let hs = dev(&device_claims());
    let es = f.signer.sign(&device_claims());
    let ed = provider_token(&f);
    for (name, token) in [("HS256", &hs), ("ES256", &es), ("EdDSA provider", &ed)] {
        for _ in 0..1000 {
            f.verifier.verify_at(token, NOW).await.unwrap();
        }
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(f.verifier.verify_at(token, NOW).await.unwrap());
        }
        println!("{name}, no cache: {:.2} µs per verification", per(start, N));
    }
    // The default cache (65,536 entries). Cold: N distinct tokens, each a miss (signature
    // check, then insert; past 65,536 the inserts evict too). Warm: one token, each a hit.
    let c = fixture_cached(Some(DEV_SECRET), VerifierConfig::default().cache_capacity);
    let distinct: Vec<String> = (0..N)
        .map(|i| c.signer.sign(&with(device_claims(), json!({"jti": i}))))
        .collect();
    let start = std::time::Instant::now();
    for token in &distinct {
        std::hint::black_box(c.verifier.verify_at(token, NOW).await.unwrap());
    }
    println!(
        "ES256 cold (cache miss): {:.2} µs per verification",
        per(start, N)
    );
    let warm = [
        ("HS256", dev(&device_claims())),
        ("ES256", c.signer.sign(&device_claims())),
        ("EdDSA provider", provider_token(&c)),
    ];
    for (name, token) in &warm {
        c.verifier.verify_at(token, NOW).await.unwrap();
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(c.verifier.verify_at(token, NOW).await.unwrap());
        }
        println!(
            "{name} warm (cache hit): {:.2} µs per verification",
            per(start, N)
        );
    }
    // jsonwebtoken alone, for comparison: what this crate adds is the difference.
    let inner = &f.verifier.inner;
    let dev_key = &inner.dev.as_ref().unwrap().0;
    let es_key = inner.locus_keys.find(f.signer.kid()).unwrap();
    let raw = [
        ("HS256", &hs, dev_key, &inner.dev.as_ref().unwrap().1),
        ("ES256", &es, es_key, &inner.es256),
    ];
    for (name, token, key, validation) in raw {
        let n = 20_000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(jsonwebtoken::decode::<Value>(token, key, validation).unwrap());
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!("{name}, jsonwebtoken::decode alone: {per:.2} µs");
    }
    let start = std::time::Instant::now();
    for _ in 0..10_000 {
        std::hint::black_box(f.signer.sign(&device_claims()));
    }
    println!(
        "ES256 signing: {:.2} µs per token",
        start.elapsed().as_secs_f64() * 1e6 / 10_000.0
    );
}

#[test]
fn a_provider_with_the_locus_issuer_or_an_empty_secret_is_refused_at_startup() {
    let keys = TokenSigner::generate().public_keys();
    let clash = VerifierConfig {
        provider: Some(ProviderConfig::new(
            "locus",
            "http://127.0.0.1:9/jwks".parse().unwrap(),
        )),
        ..VerifierConfig::default()
    };
    assert!(matches!(
        Verifier::new(clash, keys.clone()),
        Err(ConfigError::Invalid(_))
    ));
    let empty = VerifierConfig {
        dev_secret: Some(SecretString::from(String::new())),
        ..VerifierConfig::default()
    };
    assert!(matches!(
        Verifier::new(empty, keys.clone()),
        Err(ConfigError::Invalid(_))
    ));
    let debug = format!("{:?}", fixture().verifier);
    assert!(!debug.contains(DEV_SECRET), "{debug}");
}

fn provider_token(f: &Fixture) -> String {
    eddsa(
        f,
        "ed-1",
        &json!({"iss": PROVIDER, "aud": "locus", "sub": "bob", "tenant": "acme",
                "role": "admins", "exp": NOW + 300}),
    )
}

#[tokio::test]
async fn a_verified_token_is_signature_checked_once_then_served_from_the_cache() {
    let f = fixture();
    let tokens = [
        f.signer.sign(&device_claims()),
        dev(&device_claims()),
        provider_token(&f),
    ];
    for (i, token) in tokens.iter().enumerate() {
        let first = f.verifier.verify_at(token, NOW).await.unwrap();
        for _ in 0..10 {
            assert_eq!(f.verifier.verify_at(token, NOW + 5).await.unwrap(), first);
        }
        assert_eq!(signature_checks(&f), i as u64 + 1, "token {i}");
    }
    // Clones share the cache.
    f.verifier.clone().verify_at(&tokens[0], NOW).await.unwrap();
    assert_eq!(signature_checks(&f), 3);
}

#[tokio::test]
async fn without_a_cache_every_verification_checks_the_signature() {
    let f = fixture_cached(Some(DEV_SECRET), 0);
    let token = f.signer.sign(&device_claims());
    for _ in 0..5 {
        f.verifier.verify_at(&token, NOW).await.unwrap();
    }
    assert_eq!(signature_checks(&f), 5);
}

#[tokio::test]
async fn a_cached_token_is_refused_past_its_expiry_and_before_its_verification() {
    let f = fixture();
    // exp NOW + 600, leeway 30: served up to NOW + 630 inclusive, as uncached.
    let token = f.signer.sign(&device_claims());
    f.verifier.verify_at(&token, NOW).await.unwrap();
    f.verifier.verify_at(&token, NOW + 630).await.unwrap();
    assert_eq!(signature_checks(&f), 1);
    assert_eq!(
        f.verifier.verify_at(&token, NOW + 631).await,
        Err(AuthError::Expired {
            exp: NOW + 600,
            now: NOW + 631,
            leeway: 30
        })
    );
    assert_eq!(signature_checks(&f), 2, "an expired entry is not served");

    // A token not yet valid is never cached; verified once valid, a clock stepped back
    // before that moment gets the full checks again, which refuse it.
    let early = dev(&with(device_claims(), json!({"nbf": NOW + 100})));
    assert!(matches!(
        refused(&f, &early).await,
        AuthError::NotYetValid { .. }
    ));
    f.verifier.verify_at(&early, NOW + 100).await.unwrap();
    assert!(matches!(
        refused(&f, &early).await,
        AuthError::NotYetValid { .. }
    ));
}

#[tokio::test]
async fn a_cached_token_with_one_byte_changed_is_not_a_hit() {
    let f = fixture();
    let token = f.signer.sign(&device_claims());
    f.verifier.verify_at(&token, NOW).await.unwrap();
    // A signature character: the signature no longer verifies. Not the last one: its
    // unused low bits must be zero, so changing it can make the base64 invalid instead
    // (it did, in one CI run in a few, with a random key).
    let mut bytes = token.clone().into_bytes();
    let at = bytes.len() - 6;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(refused(&f, &tampered).await, AuthError::BadSignature);
    assert_eq!(signature_checks(&f), 2);
    // A payload character: another subject, refused all the same.
    let (header, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let forged = b64(&with(device_claims(), json!({"sub": "phone-2"})));
    assert_ne!(forged, payload);
    let tampered = format!("{header}.{forged}.{signature}");
    assert_eq!(refused(&f, &tampered).await, AuthError::BadSignature);
}

#[tokio::test]
async fn refused_tokens_are_not_cached() {
    let f = fixture();
    let stranger = TokenSigner::generate();
    for i in 0..50 {
        let junk = stranger.sign(&with(device_claims(), json!({"jti": i})));
        refused(&f, &junk).await;
        refused(
            &f,
            &dev(&with(device_claims(), json!({"exp": NOW - 100 - i}))),
        )
        .await;
    }
    assert!(f.verifier.inner.cache.as_ref().unwrap().is_empty());
}

#[tokio::test]
async fn a_provider_key_withdrawn_by_a_replacement_stops_its_cached_tokens() {
    let f = fixture();
    let token = provider_token(&f);
    f.verifier.verify_at(&token, NOW).await.unwrap();
    f.verifier.verify_at(&token, NOW).await.unwrap();
    assert_eq!(signature_checks(&f), 1);

    // The same keys installed again: a new generation, so one more check, then cached.
    let ed_only = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": URL_SAFE_NO_PAD.encode(f.ed.public_key().as_ref())},
    ]});
    preload(&f.verifier, &ed_only);
    f.verifier.verify_at(&token, NOW).await.unwrap();
    f.verifier.verify_at(&token, NOW).await.unwrap();
    assert_eq!(signature_checks(&f), 2);

    // The provider withdraws ed-1: its cached token is refused at once, like an uncached one.
    let modulus = hex::decode(RSA_MODULUS_HEX.trim()).unwrap();
    let rsa_only = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "n": URL_SAFE_NO_PAD.encode(modulus), "e": "AQAB"},
    ]});
    preload(&f.verifier, &rsa_only);
    let result = f.verifier.verify_at(&token, NOW).await;
    assert!(
        matches!(
            result,
            Err(AuthError::UnknownKid(_) | AuthError::KeysUnavailable(_))
        ),
        "{result:?}"
    );
    // Locus tokens are not affected by the provider's keys.
    let device = f.signer.sign(&device_claims());
    f.verifier.verify_at(&device, NOW).await.unwrap();
    preload(&f.verifier, &ed_only);
    let checks = signature_checks(&f);
    f.verifier.verify_at(&device, NOW).await.unwrap();
    assert_eq!(signature_checks(&f), checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_verifications_from_many_threads_each_get_their_own_principal() {
    let f = fixture();
    let shared = f.signer.sign(&device_claims());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let verifier = f.verifier.clone();
            let own = f.signer.sign(&with(
                device_claims(),
                json!({"sub": format!("phone-t{t}")}),
            ));
            let shared = shared.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    let p = verifier.verify_at(&own, NOW).await.unwrap();
                    assert_eq!(p.subject, format!("phone-t{t}"));
                    let p = verifier.verify_at(&shared, NOW).await.unwrap();
                    assert_eq!(p.subject, "phone-1");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // Each own token once; the shared one at least once, at most once per racing task.
    let checks = signature_checks(&f);
    assert!((9..=16).contains(&checks), "{checks} signature checks");
}
