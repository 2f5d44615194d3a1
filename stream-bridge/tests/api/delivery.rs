//! Records reach their tenant's webhook, in order per session, correctly signed.

use std::collections::HashMap;

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use locus_wire::record::SCHEMA_VERSION;
use locus_wire::webhook::{SigningKey, verify};
use sha2::Sha256;

use crate::helpers::{Receiver, TestBridge, config, fresh_topics, produce, session_records};

#[tokio::test]
async fn records_reach_the_tenants_webhook_in_session_order_and_correctly_signed() {
    let prefix = fresh_topics(3).await;
    let receiver = Receiver::spawn().await;
    let key = SigningKey::from_bytes(b"acme-webhook-key-of-24-bytes-or-more");
    let secret = key.to_secret();
    let bridge = TestBridge::spawn(
        config(&prefix)
            .with_sink("acme", &receiver.url("acme"), &secret)
            .with_sink("globex", &receiver.url("globex"), "globex-secret"),
    )
    .await;

    // Three sessions, interleaved the way several devices would post.
    let sessions: Vec<_> = (0..3).map(|_| session_records("acme", 20)).collect();
    let mut records = Vec::new();
    for i in 0..20 {
        for s in &sessions {
            records.push(s[i].clone());
        }
    }
    let globex = session_records("globex", 5);
    produce(&prefix, &records).await;
    produce(&prefix, &globex).await;

    let delivered = receiver.wait_for("acme", 60).await;
    assert_eq!(delivered.len(), 60, "no record twice");
    for s in &sessions {
        let order: Vec<u32> = delivered
            .iter()
            .filter(|r| r.session_id == s[0].session_id)
            .map(|r| r.batch_index)
            .collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>(), "session order");
    }
    let mut sent: HashMap<_, _> = records.iter().map(|r| (r.record_id, r)).collect();
    for r in &delivered {
        assert_eq!(
            Some(&r),
            sent.remove(&r.record_id).as_ref(),
            "records arrive unchanged"
        );
    }
    assert_eq!(receiver.wait_for("globex", 5).await.len(), 5);

    let now = Utc::now().timestamp();
    for request in receiver.requests_for("acme") {
        assert_eq!(request.header("content-type"), "application/json");
        let delivery = request.delivery();
        assert_eq!(delivery.schema_version, SCHEMA_VERSION);
        assert_eq!(delivery.tenant_id.as_str(), "acme");
        let id = request.header("webhook-id");
        assert_eq!(id, delivery.delivery_id.to_string());
        assert!(
            delivery
                .records
                .iter()
                .all(|r| r.tenant_id.as_str() == "acme")
        );

        let t = request.header("webhook-timestamp");
        let signature = request.header("webhook-signature");
        assert_eq!(
            verify(&key, id, t, signature, &request.body, now, 300),
            Ok(()),
            "locus_wire::webhook::verify accepts the signature"
        );
        let globex = SigningKey::from_stored("globex-secret").unwrap();
        assert!(verify(&globex, id, t, signature, &request.body, now, 300).is_err());

        // The same check without Locus code: HMAC-SHA256 over "{id}.{t}.{body}", keyed with
        // the base64-decoded part of the whsec_ secret.
        let raw_key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&raw_key).unwrap();
        mac.update(format!("{id}.{t}.").as_bytes());
        mac.update(&request.body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(signature, format!("v1,{expected}"));
        let t: i64 = t.parse().unwrap();
        assert!((now - t).abs() < 120, "the timestamp is the sending time");
    }
    bridge.stop().await;
}
