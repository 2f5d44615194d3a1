//! Partners, grants, sinks, the audit log's pages and relay claims, and the filtered
//! session listing, against a real, fresh PostgreSQL database connected as the service
//! role (row-level security applies; the owner's pool is only for checks).

use std::collections::HashSet;

use chrono::{Duration, Utc};
use locus_session::audit_feed::AuditScope;
use locus_session::partners::{Actor, PartnerError};
use locus_session::sinks::SinkError;
use locus_session::{Scope, SessionCursor, SessionError, SessionFilter, SessionStore};
use locus_wire::api::{SessionStatus, StopReason};
use locus_wire::{DeviceId, SessionId, TenantId};
use sqlx::PgPool;

const PLATFORM: Actor<'static> = Actor {
    subject: "root@example.com",
    role: "platform_admin",
};
const ADMIN: Actor<'static> = Actor {
    subject: "admin@acme.example",
    role: "tenant_admin",
};

/// A store as the service role, the owner's pool, and tenants acme and globex (acme with
/// devices d1 to d7, globex with g1).
async fn setup() -> (SessionStore, PgPool) {
    let db = locus_testkit::test_database().await;
    for n in 1..=7 {
        locus_testkit::register_device(&db.owner_url, "acme", &format!("d{n}")).await;
    }
    locus_testkit::register_device(&db.owner_url, "globex", "g1").await;
    let pool = PgPool::connect(&db.url)
        .await
        .expect("connect as locus_app");
    let owner = PgPool::connect(&db.owner_url)
        .await
        .expect("connect as the owner");
    (SessionStore::new(pool), owner)
}

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

#[tokio::test]
async fn a_partner_is_created_once_listed_and_audited_as_a_platform_change() {
    let (store, owner) = setup().await;
    let p = store
        .create_partner(PLATFORM, "fleet-co", Some("Fleet Co"))
        .await
        .unwrap();
    assert_eq!(
        (p.id.as_str(), p.name.as_deref()),
        ("fleet-co", Some("Fleet Co"))
    );
    assert!(matches!(
        store.create_partner(PLATFORM, "fleet-co", None).await,
        Err(PartnerError::PartnerExists)
    ));
    let all = store.list_partners().await.unwrap();
    assert_eq!(all, vec![p.clone()]);
    assert_eq!(store.get_partner("fleet-co").await.unwrap(), p);
    assert!(matches!(
        store.get_partner("nobody").await,
        Err(PartnerError::PartnerNotFound)
    ));
    let rows: Vec<(Option<String>, String, String)> =
        sqlx::query_as("SELECT tenant_id, action, actor FROM audit_log ORDER BY id")
            .fetch_all(&owner)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(None, "partner.created".into(), "root@example.com".into())]
    );
}

#[tokio::test]
async fn a_grant_needs_an_existing_partner_and_is_withdrawn_at_once() {
    let (store, _owner) = setup().await;
    let acme = tenant("acme");
    assert!(matches!(
        store.grant(ADMIN, &acme, "fleet-co").await,
        Err(PartnerError::PartnerNotFound)
    ));
    store
        .create_partner(PLATFORM, "fleet-co", None)
        .await
        .unwrap();
    let first = store.grant(ADMIN, &acme, "fleet-co").await.unwrap();
    assert!(first.created);
    let again = store.grant(ADMIN, &acme, "fleet-co").await.unwrap();
    assert!(!again.created, "granting twice changes nothing");
    assert_eq!(again.grant, first.grant);
    assert_eq!(store.list_grants(&acme).await.unwrap(), vec![first.grant]);
    assert_eq!(store.list_grants(&tenant("globex")).await.unwrap(), vec![]);
    assert_eq!(
        store.granted_tenants("fleet-co").await.unwrap(),
        vec![acme.clone()]
    );

    store
        .withdraw_grant(ADMIN, &acme, "fleet-co")
        .await
        .unwrap();
    assert_eq!(store.granted_tenants("fleet-co").await.unwrap(), vec![]);
    assert!(matches!(
        store.withdraw_grant(ADMIN, &acme, "fleet-co").await,
        Err(PartnerError::GrantNotFound)
    ));
    // One audit row per change (the second grant changed nothing), in acme's log.
    let page = store
        .audit_page(AuditScope::Tenant(&acme), None, 50)
        .await
        .unwrap();
    let actions: Vec<&str> = page.records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["grant.withdrawn", "grant.created"]);
    assert!(
        page.records
            .iter()
            .all(|r| r.tenant_id.as_deref() == Some("acme"))
    );
}

#[tokio::test]
async fn a_tenant_cannot_withdraw_another_tenants_grant() {
    let (store, _owner) = setup().await;
    store
        .create_partner(PLATFORM, "fleet-co", None)
        .await
        .unwrap();
    store
        .grant(ADMIN, &tenant("acme"), "fleet-co")
        .await
        .unwrap();
    assert!(matches!(
        store
            .withdraw_grant(ADMIN, &tenant("globex"), "fleet-co")
            .await,
        Err(PartnerError::GrantNotFound)
    ));
    assert_eq!(
        store.granted_tenants("fleet-co").await.unwrap(),
        vec![tenant("acme")]
    );
}

#[tokio::test]
async fn a_sink_keeps_its_secret_out_of_reads_and_audit_rows() {
    let (store, owner) = setup().await;
    let acme = tenant("acme");
    let secret = "whsec-very-secret-value-0123456789";
    assert!(matches!(
        store.get_sink(&acme).await,
        Err(SinkError::NotFound)
    ));
    let put = store
        .put_sink(ADMIN, &acme, "https://hooks.example/a", secret)
        .await
        .unwrap();
    assert!(put.created);
    let replaced = store
        .put_sink(ADMIN, &acme, "https://hooks.example/b", secret)
        .await
        .unwrap();
    assert!(!replaced.created);
    assert_eq!(
        replaced.sink.id, put.sink.id,
        "one sink per tenant, updated"
    );
    let got = store.get_sink(&acme).await.unwrap();
    assert_eq!(got.url, "https://hooks.example/b");
    assert!(matches!(
        store.get_sink(&tenant("globex")).await,
        Err(SinkError::NotFound)
    ));
    // The bridge reads the secret from the table; nothing else holds it.
    let stored: String = sqlx::query_scalar("SELECT secret FROM sinks")
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(stored, secret);
    store.delete_sink(ADMIN, &acme).await.unwrap();
    assert!(matches!(
        store.delete_sink(ADMIN, &acme).await,
        Err(SinkError::NotFound)
    ));
    let audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, concat(before::text, ' ', after::text) FROM audit_log ORDER BY id",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["sink.set", "sink.set", "sink.deleted"]);
    for (action, body) in &audit {
        assert!(!body.contains(secret), "{action} holds the secret: {body}");
        assert!(body.contains("https://hooks.example/"), "{action}: {body}");
    }
}

#[tokio::test]
async fn audit_pages_walk_a_tenants_rows_and_the_platform_sees_them_all() {
    let (store, _owner) = setup().await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    store.create_partner(PLATFORM, "p1", None).await.unwrap();
    for n in 0..5 {
        let url = format!("https://hooks.example/{n}");
        store.put_sink(ADMIN, &acme, &url, "s").await.unwrap();
    }
    store
        .put_sink(ADMIN, &globex, "https://g.example/", "s")
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .audit_page(AuditScope::Tenant(&acme), before, 2)
            .await
            .unwrap();
        seen.extend(page.records.iter().map(|r| r.id));
        match page.next_before {
            Some(id) => before = Some(id),
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        5,
        "acme's five rows, none of globex or the platform"
    );
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );

    let all = store
        .audit_page(AuditScope::Platform, None, 100)
        .await
        .unwrap();
    assert_eq!(all.records.len(), 7);
    assert_eq!(all.next_before, None);
    assert!(all.records.iter().any(|r| r.tenant_id.is_none()));
}

#[tokio::test]
async fn two_relays_never_claim_the_same_audit_row_and_marked_rows_are_not_claimed_again() {
    let (store, _owner) = setup().await;
    for n in 0..4 {
        store
            .create_partner(PLATFORM, &format!("p{n}"), None)
            .await
            .unwrap();
    }
    let first = store.claim_audit(3).await.unwrap();
    let second = store.claim_audit(3).await.unwrap();
    let ids = |c: &locus_session::audit_feed::ClaimedAudit| -> Vec<i64> {
        c.records().iter().map(|r| r.id).collect()
    };
    let (a, b) = (ids(&first), ids(&second));
    assert_eq!(a.len(), 3);
    assert_eq!(
        b.len(),
        1,
        "the second claim skips the first's rows: {a:?} {b:?}"
    );
    assert!(a.windows(2).all(|w| w[0] < w[1]), "oldest first");
    // The first relay got only two acknowledged: the third goes back.
    first.finish(&a[..2]).await.unwrap();
    second.finish(&b).await.unwrap();
    assert_eq!(store.audit_backlog().await.unwrap(), 1);
    let again = store.claim_audit(10).await.unwrap();
    assert_eq!(ids(&again), vec![a[2]]);
}

/// Starts and stops `n` sessions of acme's devices d1..d7 in turn, returning their ids
/// in start order.
async fn sessions(store: &SessionStore, n: usize) -> Vec<SessionId> {
    let acme = tenant("acme");
    let mut out = Vec::new();
    for i in 0..n {
        let device = DeviceId::parse(format!("d{}", i % 7 + 1)).unwrap();
        let s = store
            .start(&acme, &device, Duration::minutes(10))
            .await
            .unwrap()
            .session;
        if i % 2 == 0 {
            store
                .stop(&acme, s.id, StopReason::Requested)
                .await
                .unwrap();
        }
        out.push(s.id);
    }
    out
}

#[tokio::test]
async fn cursor_pages_return_every_session_exactly_once_newest_first() {
    let (store, _owner) = setup().await;
    let started = sessions(&store, 7).await;
    let acme = tenant("acme");
    let filter = SessionFilter::default();
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_filtered(Scope::Tenant(&acme), &filter, cursor, 3)
            .await
            .unwrap();
        sizes.push(page.sessions.len());
        seen.extend(page.sessions.iter().map(|s| s.id));
        // The cursor goes through its string form, as it does over HTTP.
        match page.next {
            Some(c) => cursor = Some(SessionCursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    let mut newest_first = started.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);
}

#[tokio::test]
async fn the_listing_filters_by_device_status_and_start_time() {
    let (store, _owner) = setup().await;
    let before = Utc::now();
    let started = sessions(&store, 7).await;
    let acme = tenant("acme");
    let list = |filter: SessionFilter| {
        let store = store.clone();
        let acme = acme.clone();
        async move {
            store
                .list_filtered(Scope::Tenant(&acme), &filter, None, 100)
                .await
                .unwrap()
                .sessions
        }
    };
    let d1 = list(SessionFilter {
        device: Some(DeviceId::parse("d1").unwrap()),
        ..Default::default()
    })
    .await;
    assert_eq!(d1.iter().map(|s| s.id).collect::<Vec<_>>(), [started[0]]);
    let active = list(SessionFilter {
        status: Some(SessionStatus::Active),
        ..Default::default()
    })
    .await;
    assert_eq!(active.len(), 3, "sessions 1, 3 and 5 were left active");
    assert!(active.iter().all(|s| s.status == SessionStatus::Active));
    let stopped = list(SessionFilter {
        status: Some(SessionStatus::Stopped),
        ..Default::default()
    })
    .await;
    assert_eq!(stopped.len(), 4);
    let all = list(SessionFilter::default()).await;
    let pivot = all[2].started_at;
    let after = list(SessionFilter {
        started_after: Some(pivot),
        ..Default::default()
    })
    .await;
    assert_eq!(after.len(), 3, "started at or after the third newest");
    let older = list(SessionFilter {
        started_before: Some(pivot),
        ..Default::default()
    })
    .await;
    assert_eq!(older.len(), 4);
    let none = list(SessionFilter {
        started_before: Some(before),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());
    // Another tenant's filter inside acme's scope finds nothing: the scope is the wall.
    let globex = list(SessionFilter {
        tenant: Some(tenant("globex")),
        ..Default::default()
    })
    .await;
    assert!(globex.is_empty());
}

#[tokio::test]
async fn a_session_is_found_only_in_a_scope_that_holds_its_tenant() {
    let (store, _owner) = setup().await;
    let id = sessions(&store, 1).await[0];
    let acme = [tenant("acme")];
    let globex = [tenant("globex")];
    assert_eq!(
        store
            .get_scoped(Scope::Tenants(&acme), id)
            .await
            .unwrap()
            .id,
        id
    );
    for scope in [Scope::Tenants(&globex), Scope::Tenants(&[])] {
        assert!(matches!(
            store.get_scoped(scope, id).await,
            Err(SessionError::NotFound)
        ));
    }
}

#[test]
fn a_cursor_survives_its_string_form_and_anything_else_is_refused() {
    let c = SessionCursor {
        started_at: chrono::DateTime::from_timestamp_micros(1_764_657_000_123_456).unwrap(),
        id: SessionId::new(),
    };
    assert_eq!(SessionCursor::decode(&c.encode()).unwrap(), c);
    assert!(
        c.encode()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
        "URL-safe: {}",
        c.encode()
    );
    for bad in [
        "",
        "x",
        "12",
        "12.not-a-uuid",
        "a.0190f1c2-0000-7000-8000-000000000000",
    ] {
        assert!(SessionCursor::decode(bad).is_err(), "{bad:?}");
    }
}
