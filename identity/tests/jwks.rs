//! The provider's JWKS, fetched from a real HTTP server on 127.0.0.1: keys of each type
//! verify, rotation, the unknown-kid rate limit, single flight under concurrency, and a
//! server that is down or hangs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use locus_identity::{AuthError, ProviderConfig, Role, TokenSigner, Verifier, VerifierConfig};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.test/";
const RSA_PRIVATE_PEM: &str = include_str!("fixtures/rsa-test-key.pem");
const RSA_MODULUS_HEX: &str = include_str!("fixtures/rsa-test-key.modulus.hex");

/// A JWKS server whose document can be swapped, that counts requests and can be slowed.
#[derive(Clone, Default)]
struct Jwks {
    document: Arc<Mutex<Value>>,
    requests: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
}

impl Jwks {
    async fn start(document: Value) -> (Self, url::Url) {
        let jwks = Jwks::default();
        jwks.set(document);
        let app = axum::Router::new()
            .route("/jwks", get(serve))
            .with_state(jwks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (jwks, format!("http://{addr}/jwks").parse().unwrap())
    }

    fn set(&self, document: Value) {
        *self.document.lock().unwrap() = document;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(State(jwks): State<Jwks>) -> Json<Value> {
    jwks.requests.fetch_add(1, Ordering::SeqCst);
    let delay = *jwks.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    Json(jwks.document.lock().unwrap().clone())
}

/// A provider signing key and its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    fn ed25519(kid: &str) -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Key {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}),
        }
    }

    fn rsa(kid: &str) -> Key {
        let n = hex::decode(RSA_MODULUS_HEX.trim()).unwrap();
        Key {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap(),
            // No `alg`: RS256 is inferred from the key type.
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig",
                        "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"}),
        }
    }

    /// Signs claims naming `role`, with this key's kid in the header.
    fn token(&self, sub: &str, role: &str) -> String {
        self.token_with_kid(&self.kid, sub, role)
    }

    fn token_with_kid(&self, kid: &str, sub: &str, role: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        let claims = json!({"iss": ISSUER, "aud": "locus", "sub": sub, "tenant": "acme",
                            "role": role, "iat": now, "exp": now + 300});
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

fn jwks_of(keys: &[&Key]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

fn verifier(url: url::Url, min_refresh: Duration, refresh_every: Duration) -> Verifier {
    let provider = ProviderConfig {
        min_refresh,
        refresh_every,
        fetch_timeout: Duration::from_millis(500),
        ..ProviderConfig::new(ISSUER, url)
    };
    let config = VerifierConfig {
        provider: Some(provider),
        ..VerifierConfig::default()
    };
    Verifier::new(config, TokenSigner::generate().public_keys()).unwrap()
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn tokens_signed_with_rsa_eddsa_and_es256_provider_keys_verify_after_one_fetch() {
    let rsa = Key::rsa("rsa-1");
    let ed = Key::ed25519("ed-1");
    // An ES256 provider key: the Locus signer is a P-256 key with a published JWK.
    let es = TokenSigner::generate();
    let mut document = jwks_of(&[&rsa, &ed]);
    document["keys"]
        .as_array_mut()
        .unwrap()
        .push(es.public_keys().jwks()["keys"][0].clone());
    let (server, url) = Jwks::start(document).await;
    let v = verifier(url, MINUTE, HOUR);

    let p = v.verify(&rsa.token("alice", "tenant_admin")).await.unwrap();
    assert_eq!((p.role, p.subject.as_str()), (Role::TenantAdmin, "alice"));
    assert_eq!(p.tenant.unwrap().as_str(), "acme");
    let p = v.verify(&ed.token("fleetco", "partner")).await.unwrap();
    assert_eq!(
        (p.role, p.subject.as_str(), p.tenant),
        (Role::Partner, "fleetco", None)
    );
    let now = p.expires_at - 300;
    let es_token = es.sign(&json!({"iss": ISSUER, "aud": "locus", "sub": "phone-1",
        "tenant": "acme", "role": "device", "iat": now, "exp": now + 300}));
    let p = v.verify(&es_token).await.unwrap();
    assert_eq!((p.role, p.subject.as_str()), (Role::Device, "phone-1"));
    assert_eq!(
        server.requests(),
        1,
        "one fetch serves every kid of the set"
    );
}

#[tokio::test]
async fn after_a_rotation_the_new_kid_verifies_after_one_refetch_and_the_old_until_the_periodic_refresh()
 {
    let old = Key::ed25519("old");
    let new = Key::rsa("new");
    let (server, url) = Jwks::start(jwks_of(&[&old])).await;
    let refresh_every = Duration::from_secs(2);
    let v = verifier(url, Duration::from_millis(200), refresh_every);
    let started = Instant::now();
    v.verify(&old.token("alice", "tenant_admin")).await.unwrap();
    assert_eq!(server.requests(), 1);

    // The provider rotates: only the new key is published.
    server.set(jwks_of(&[&new]));
    tokio::time::sleep(Duration::from_millis(250)).await;
    v.verify(&new.token("bob", "tenant_admin")).await.unwrap();
    assert_eq!(server.requests(), 2, "the unknown kid cost one refetch");
    // Tokens of the old kid, issued before the rotation, still verify: the refetch added
    // the new key without dropping the old one.
    v.verify(&old.token("alice", "tenant_admin")).await.unwrap();
    v.verify(&new.token("bob", "tenant_admin")).await.unwrap();
    assert_eq!(server.requests(), 2, "both kids are cached");

    // Once the set is older than refresh_every, it is replaced by what the provider
    // publishes, and the old kid stops verifying.
    tokio::time::sleep(refresh_every.saturating_sub(started.elapsed()) + Duration::from_millis(50))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match v.verify(&old.token("alice", "tenant_admin")).await {
            Err(AuthError::UnknownKid(kid)) => {
                assert_eq!(kid, "old");
                break;
            }
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("the old kid should be dropped by the periodic refresh: {other:?}"),
        }
    }
    v.verify(&new.token("bob", "tenant_admin")).await.unwrap();
}

#[tokio::test]
async fn an_unknown_kid_triggers_at_most_one_fetch_per_min_refresh() {
    let key = Key::ed25519("k1");
    let (server, url) = Jwks::start(jwks_of(&[&key])).await;
    let min_refresh = Duration::from_millis(700);
    let v = verifier(url, min_refresh, HOUR);
    v.verify(&key.token("alice", "tenant_admin")).await.unwrap();
    assert_eq!(server.requests(), 1);

    for i in 0..20 {
        let junk = key.token_with_kid(&format!("junk-{i}"), "alice", "tenant_admin");
        assert_eq!(
            v.verify(&junk).await,
            Err(AuthError::UnknownKid(format!("junk-{i}")))
        );
    }
    assert_eq!(
        server.requests(),
        1,
        "within min_refresh of the last fetch: no fetch"
    );

    tokio::time::sleep(min_refresh + Duration::from_millis(50)).await;
    for i in 0..20 {
        let junk = key.token_with_kid(&format!("later-{i}"), "alice", "tenant_admin");
        assert!(matches!(
            v.verify(&junk).await,
            Err(AuthError::UnknownKid(_))
        ));
    }
    assert_eq!(
        server.requests(),
        2,
        "one fetch after min_refresh, then the limit again"
    );
    v.verify(&key.token("alice", "tenant_admin")).await.unwrap();
}

#[tokio::test]
async fn concurrent_verifications_with_an_unknown_kid_cause_one_fetch() {
    let key = Key::ed25519("k1");
    let (server, url) = Jwks::start(jwks_of(&[&key])).await;
    *server.delay.lock().unwrap() = Duration::from_millis(200);
    let v = verifier(url, MINUTE, HOUR);

    // Nothing is cached yet: every task meets an unknown kid at once.
    let token = key.token("alice", "tenant_admin");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(server.requests(), 1, "50 concurrent lookups, one fetch");

    // The same for a kid the provider does not have: a fresh cache, one fetch.
    let (server, url) = Jwks::start(jwks_of(&[&key])).await;
    *server.delay.lock().unwrap() = Duration::from_millis(200);
    let v = verifier(url, MINUTE, HOUR);
    let junk = key.token_with_kid("junk", "alice", "tenant_admin");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (v, junk) = (v.clone(), junk.clone());
            tokio::spawn(async move { v.verify(&junk).await })
        })
        .collect();
    for task in tasks {
        let result = task.await.unwrap();
        assert_eq!(result, Err(AuthError::UnknownKid("junk".to_owned())));
    }
    assert_eq!(
        server.requests(),
        1,
        "50 concurrent lookups of a junk kid, one fetch"
    );
}

#[tokio::test]
async fn a_jwks_server_that_is_down_or_hangs_is_refused_within_the_timeout() {
    let key = Key::ed25519("k1");
    let token = key.token("alice", "tenant_admin");

    // Down: nothing listens on the port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down: url::Url = format!("http://{}/jwks", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    let v = verifier(down, MINUTE, HOUR);
    let result = tokio::time::timeout(Duration::from_secs(3), v.verify(&token))
        .await
        .expect("a down JWKS server must not hang verification");
    assert!(
        matches!(result, Err(AuthError::KeysUnavailable(_))),
        "{result:?}"
    );
    // Within min_refresh, the failure is reported again without a new attempt.
    let result = v.verify(&token).await;
    assert!(
        matches!(result, Err(AuthError::KeysUnavailable(_))),
        "{result:?}"
    );

    // Hangs: accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangs: url::Url = format!("http://{}/jwks", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let v = verifier(hangs, MINUTE, HOUR);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(3), v.verify(&token))
        .await
        .expect("a hanging JWKS server must not hang verification");
    assert!(
        matches!(result, Err(AuthError::KeysUnavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused after the 500 ms fetch timeout, took {:?}",
        started.elapsed()
    );
}
