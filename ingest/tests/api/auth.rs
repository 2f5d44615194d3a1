//! Tokens at the HTTP edge: every refused token gets the same 401 and a Bearer challenge,
//! an external identity provider's tokens work through its JWKS and a claim mapping, and a
//! production start refuses development secrets.

use std::time::Duration;

use axum::Json;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use locus_ingest::Application;
use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{Scope, spawn_app, spawn_in};

const RSA_PRIVATE_PEM: &str = include_str!("../../../identity/tests/fixtures/rsa-test-key.pem");
const RSA_PUBLIC_PEM: &str = include_str!("../../../identity/tests/fixtures/rsa-test-key.pub.pem");
const RSA_MODULUS_HEX: &str =
    include_str!("../../../identity/tests/fixtures/rsa-test-key.modulus.hex");
const IDP: &str = "https://idp.test/pool-1";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn rs256(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// Claims of a development token of `role` (HS256, issuer `locus`).
fn dev_claims(role: &str, exp_in: i64) -> Value {
    json!({"iss": "locus", "aud": "locus", "sub": "phone-1", "tenant": "acme", "role": role,
           "iat": now(), "exp": now() + exp_in})
}

/// A JWKS server on 127.0.0.1 with the test RSA key under `kid`.
async fn jwks_server(kid: &str) -> String {
    let n = hex::decode(RSA_MODULUS_HEX.trim()).unwrap();
    let document = json!({"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                                     "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"}]});
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let d = document.clone();
            async move { Json(d) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/.well-known/jwks.json")
}

#[tokio::test]
async fn every_refused_token_gets_the_same_401_with_a_bearer_challenge() {
    let (app, scope) = spawn_app().await;
    scope.device_token("acme", "phone-1").await;
    let secret = kit::JWT_SECRET.as_bytes();
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(dev_claims("device", 600).to_string())
    );
    let mut idp_claims = dev_claims("tenant_admin", 600);
    idp_claims["iss"] = json!(IDP);
    let mut other_audience = dev_claims("device", 600);
    other_audience["aud"] = json!("another-service");
    let mut no_tenant = dev_claims("device", 600);
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let mut not_yet = dev_claims("device", 600);
    not_yet["nbf"] = json!(now() + 3600);
    let mut no_exp = dev_claims("device", 600);
    no_exp.as_object_mut().unwrap().remove("exp");
    let cases = [
        ("expired", hs256(secret, &dev_claims("device", -600))),
        (
            "another secret",
            hs256(b"not-the-secret", &dev_claims("device", 600)),
        ),
        ("alg none", alg_none),
        ("another audience", hs256(secret, &other_audience)),
        ("no tenant claim", hs256(secret, &no_tenant)),
        ("not yet valid", hs256(secret, &not_yet)),
        ("no exp", hs256(secret, &no_exp)),
        (
            "lifetime over the cap",
            hs256(secret, &dev_claims("device", 3 * 86_400)),
        ),
        // The classic key confusion: HS256 "signed" with a provider's RSA public key. No
        // provider is configured here, and HS256 is never pinned to a provider key.
        (
            "HS256 with an RSA public key",
            hs256(RSA_PUBLIC_PEM.as_bytes(), &idp_claims),
        ),
        (
            "oversized",
            format!(
                "{}{}",
                hs256(secret, &dev_claims("device", 600)),
                "A".repeat(9000)
            ),
        ),
        ("not a JWT", "not-a-jwt".to_owned()),
    ];
    let mut messages = Vec::new();
    for (name, token) in &cases {
        let r = app
            .client
            .post(app.url("/v1/sessions"))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer realm="locus", error="invalid_token""#,
            "{name}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{name}");
        messages.push(body["message"].as_str().unwrap().to_owned());
    }
    messages.dedup();
    assert_eq!(
        messages.len(),
        1,
        "the 401 body names the failed check: {messages:?}"
    );
    // No token at all: the challenge carries no error (RFC 6750 §3).
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="locus""#);
    app.stop().await;
}

#[tokio::test]
async fn an_identity_providers_tokens_work_through_its_jwks_and_claim_mapping() {
    let jwks = jwks_server("idp-key-1").await;
    let scope = Scope::new().await;
    scope.device_token("acme", "phone-1").await;
    // Cognito-style: the tenant in a custom claim, the role from a group name.
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.jwt.oidc.issuer = Some(IDP.into());
        c.jwt.oidc.jwks_url = Some(jwks.clone());
        c.jwt.oidc.tenant_claim = "custom:tenant".into();
        c.jwt.oidc.role_claim = "cognito:groups".into();
        c.jwt.oidc.role_map = vec!["acme-admins=tenant_admin".into()];
    })
    .await;
    let claims = |groups: Value| {
        json!({"iss": IDP, "aud": "locus", "sub": "alice@acme.example", "custom:tenant": "acme",
               "cognito:groups": groups, "iat": now(), "exp": now() + 600})
    };
    let list = |token: String| {
        app.client
            .get(app.url("/v1/sessions"))
            .bearer_auth(token)
            .send()
    };
    let ok = list(rs256(
        "idp-key-1",
        &claims(json!(["everyone", "acme-admins"])),
    ))
    .await
    .unwrap();
    assert_eq!(ok.status(), 200, "{}", ok.text().await.unwrap());
    // Without a mapped group there is no role: refused.
    let r = list(rs256("idp-key-1", &claims(json!(["everyone"]))))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The provider's key type pins RS256: an HS256 token keyed with its public key fails.
    let r = list(hs256(
        RSA_PUBLIC_PEM.as_bytes(),
        &claims(json!(["acme-admins"])),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    // A kid the provider does not publish: refused (after one refetch).
    let r = list(rs256("idp-key-9", &claims(json!(["acme-admins"]))))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_production_start_refuses_development_secrets_and_a_missing_signing_key() {
    let scope = Scope::new().await;
    let strong = "0123456789abcdef0123456789abcdef-strong";
    let key_file = std::env::temp_dir().join(format!("{}.pem", kit::unique("locus-key-")));
    std::fs::write(
        &key_file,
        locus_identity::TokenSigner::generate().to_pkcs8_pem(),
    )
    .unwrap();
    let production = |secret: Option<&str>, key: bool| {
        scope.config(&[Role::Api]).with(|c| {
            c.jwt.dev_mode = false;
            c.jwt.secret = secret.map(|s| secrecy::SecretString::from(s.to_owned()));
            c.jwt.signing_key_file = key.then(|| key_file.clone());
        })
    };
    for (secret, key, names) in [
        (
            Some("locus-local-dev-secret-change-me"),
            true,
            "LOCUS_JWT_SECRET",
        ),
        (Some("short-but-not-published"), true, "LOCUS_JWT_SECRET"),
        (Some(strong), false, "LOCUS_TOKEN_SIGNING_KEY_FILE"),
        (None, false, "LOCUS_TOKEN_SIGNING_KEY_FILE"),
    ] {
        let refused = Application::build(production(secret, key)).await;
        let e = refused
            .err()
            .unwrap_or_else(|| panic!("{secret:?} {key} started"));
        assert!(e.to_string().contains(names), "{e}");
    }
    // A strong secret and a key file: starts. So does the published secret in dev mode.
    let app = Application::build(production(Some(strong), true)).await;
    assert!(app.is_ok(), "{:?}", app.err());
    let dev = scope.config(&[Role::Api]).with(|c| {
        c.jwt.secret = Some("locus-local-dev-secret-change-me".to_owned().into());
    });
    assert!(Application::build(dev).await.is_ok());
    std::fs::remove_file(&key_file).ok();
    // The real binary says so and exits non-zero (the test secret is a published one).
    let mut args = scope.args("api");
    if let Some(i) = args.iter().position(|a| a == "--dev-mode") {
        args.drain(i..i + 2);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_locus-ingest"))
            .arg("serve")
            .args(args)
            .env_clear()
            .output(),
    )
    .await
    .expect("the binary exits")
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LOCUS_JWT_SECRET"), "{stderr}");
}
