//! The registry (tenants, devices, credentials) against a real, fresh PostgreSQL database,
//! connected as the service role; audit rows are read back as the owner.

use chrono::{Duration, Utc};
use locus_session::registry::{Actor, Registry, RegistryError};
use locus_session::revocation::revoked_since;
use locus_wire::{DeviceId, TenantId};
use sqlx::PgPool;
use uuid::Uuid;

const PLATFORM: Actor<'static> = Actor {
    subject: "ops@locus",
    role: "platform_admin",
};
const ADMIN: Actor<'static> = Actor {
    subject: "admin@acme",
    role: "tenant_admin",
};

struct Fixture {
    registry: Registry,
    owner: PgPool,
    _db: locus_testkit::TestDatabase,
}

/// A registry on a fresh database with tenants acme and globex.
async fn fixture() -> Fixture {
    let db = locus_testkit::test_database().await;
    let pool = PgPool::connect(&db.url)
        .await
        .expect("connect as locus_app");
    let owner = PgPool::connect(&db.owner_url)
        .await
        .expect("connect as owner");
    let registry = Registry::new(pool);
    for t in ["acme", "globex"] {
        registry
            .create_tenant(PLATFORM, &tenant(t), Some(t))
            .await
            .expect("create tenant");
    }
    Fixture {
        registry,
        owner,
        _db: db,
    }
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn device(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

/// A random 32-byte "secret hash" (the store never sees the secret itself).
fn secret_hash() -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    h[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    h
}

/// (action, target_id) of every audit row, in order, as the owner sees them.
async fn audit_actions(owner: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, target_id FROM audit_log ORDER BY id")
        .fetch_all(owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenant_is_created_once_and_its_creation_is_audited() {
    let f = fixture().await;
    let err = f
        .registry
        .create_tenant(PLATFORM, &tenant("acme"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::TenantExists), "{err:?}");
    let acme = f.registry.get_tenant(&tenant("acme")).await.unwrap();
    assert_eq!(acme.name.as_deref(), Some("acme"));
    assert!(matches!(
        f.registry.get_tenant(&tenant("nobody")).await,
        Err(RegistryError::TenantNotFound)
    ));
    let (actor, role, tenant_id): (String, String, Option<String>) = sqlx::query_as(
        "SELECT actor, actor_role, tenant_id FROM audit_log WHERE action = 'tenant.created' \
         AND target_id = 'acme'",
    )
    .fetch_one(&f.owner)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), role.as_str(), tenant_id.as_deref()),
        ("ops@locus", "platform_admin", Some("acme"))
    );
    // Only the two creations of the fixture: the refused one wrote nothing.
    assert_eq!(audit_actions(&f.owner).await.len(), 2);
}

#[tokio::test]
async fn tenants_are_listed_by_id_a_page_at_a_time() {
    let f = fixture().await;
    f.registry
        .create_tenant(PLATFORM, &tenant("initech"), None)
        .await
        .unwrap();
    let first = f.registry.list_tenants(None, 2).await.unwrap();
    let ids: Vec<String> = first
        .items
        .iter()
        .map(|t| t.tenant_id.to_string())
        .collect();
    assert_eq!(ids, ["acme", "globex"]);
    assert_eq!(first.next_after.as_deref(), Some("globex"));
    let after = tenant(first.next_after.as_deref().unwrap());
    let second = f.registry.list_tenants(Some(&after), 2).await.unwrap();
    let ids: Vec<String> = second
        .items
        .iter()
        .map(|t| t.tenant_id.to_string())
        .collect();
    assert_eq!((ids, second.next_after), (vec!["initech".to_owned()], None));
}

#[tokio::test]
async fn a_registered_device_exchanges_its_credential_and_only_the_hash_is_stored() {
    let f = fixture().await;
    let hash = secret_hash();
    let (d, c) = f
        .registry
        .register_device(ADMIN, &tenant("acme"), &device("p1"), Some("van 1"), &hash)
        .await
        .unwrap();
    assert_eq!(
        (d.device_id.as_str(), d.name.as_deref()),
        ("p1", Some("van 1"))
    );
    assert_eq!(d.revoked_at, None);
    assert_eq!(c.device_id, device("p1"));
    assert_eq!(
        f.registry.exchange(&hash).await.unwrap(),
        (tenant("acme"), device("p1"))
    );
    assert!(matches!(
        f.registry.exchange(&secret_hash()).await,
        Err(RegistryError::CredentialRefused("no such credential"))
    ));
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM device_credentials")
        .fetch_one(&f.owner)
        .await
        .unwrap();
    assert_eq!(stored, hash);
    let actions = audit_actions(&f.owner).await;
    assert_eq!(actions[2], ("device.registered".into(), "p1".into()));
    assert_eq!(
        actions[3],
        ("credential.issued".into(), c.credential_id.to_string())
    );
}

#[tokio::test]
async fn a_device_id_is_registered_once_per_tenant_and_only_in_a_tenant_that_exists() {
    let f = fixture().await;
    let p1 = device("p1");
    f.registry
        .register_device(ADMIN, &tenant("acme"), &p1, None, &secret_hash())
        .await
        .unwrap();
    let again = f
        .registry
        .register_device(ADMIN, &tenant("acme"), &p1, None, &secret_hash())
        .await;
    assert!(
        matches!(again, Err(RegistryError::DeviceExists)),
        "{again:?}"
    );
    // The same id in another tenant is another device.
    f.registry
        .register_device(ADMIN, &tenant("globex"), &p1, None, &secret_hash())
        .await
        .unwrap();
    let nowhere = f
        .registry
        .register_device(ADMIN, &tenant("nobody"), &p1, None, &secret_hash())
        .await;
    assert!(
        matches!(nowhere, Err(RegistryError::TenantNotFound)),
        "{nowhere:?}"
    );
}

#[tokio::test]
async fn revoking_a_device_refuses_every_credential_of_it_at_once_and_is_audited_once() {
    let f = fixture().await;
    let (acme, p1) = (tenant("acme"), device("p1"));
    let first = secret_hash();
    let second = secret_hash();
    f.registry
        .register_device(ADMIN, &acme, &p1, None, &first)
        .await
        .unwrap();
    f.registry
        .issue_credential(ADMIN, &acme, &p1, &second)
        .await
        .unwrap();
    // Both work side by side.
    f.registry.exchange(&first).await.unwrap();
    f.registry.exchange(&second).await.unwrap();

    let before_revoke = Utc::now() - Duration::seconds(5);
    let revoked = f.registry.revoke_device(ADMIN, &acme, &p1).await.unwrap();
    let at = revoked.revoked_at.expect("revoked_at set");
    for hash in [first, second] {
        let refused = f.registry.exchange(&hash).await;
        assert!(
            matches!(
                refused,
                Err(RegistryError::CredentialRefused("the device is revoked"))
            ),
            "{refused:?}"
        );
    }
    let credentials_revoked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM device_credentials WHERE revoked_at = $1")
            .bind(at)
            .fetch_one(&f.owner)
            .await
            .unwrap();
    assert_eq!(credentials_revoked, 2);

    // Again: nothing changes, the first time stands, no second audit row.
    let again = f.registry.revoke_device(ADMIN, &acme, &p1).await.unwrap();
    assert_eq!(again.revoked_at, Some(at));
    let revocations: Vec<_> = audit_actions(&f.owner)
        .await
        .into_iter()
        .filter(|(a, _)| a == "device.revoked")
        .collect();
    assert_eq!(
        revocations,
        [("device.revoked".to_owned(), "p1".to_owned())]
    );

    // A revoked device takes no new credential.
    let more = f
        .registry
        .issue_credential(ADMIN, &acme, &p1, &secret_hash())
        .await;
    assert!(
        matches!(more, Err(RegistryError::DeviceRevoked)),
        "{more:?}"
    );

    // The replicas' revocation poll sees it.
    let pool = PgPool::connect(&f._db.url).await.unwrap();
    let polled = revoked_since(&pool, before_revoke).await.unwrap();
    assert_eq!(polled, [(acme, p1, at)]);
}

#[tokio::test]
async fn another_tenants_device_cannot_be_read_revoked_or_given_a_credential() {
    let f = fixture().await;
    let p1 = device("p1");
    let hash = secret_hash();
    f.registry
        .register_device(ADMIN, &tenant("acme"), &p1, None, &hash)
        .await
        .unwrap();
    let globex = tenant("globex");
    let globex_admin = Actor {
        subject: "admin@globex",
        role: "tenant_admin",
    };
    assert!(matches!(
        f.registry.get_device(&globex, &p1).await,
        Err(RegistryError::DeviceNotFound)
    ));
    assert!(matches!(
        f.registry.revoke_device(globex_admin, &globex, &p1).await,
        Err(RegistryError::DeviceNotFound)
    ));
    assert!(matches!(
        f.registry
            .issue_credential(globex_admin, &globex, &p1, &secret_hash())
            .await,
        Err(RegistryError::DeviceNotFound)
    ));
    assert!(
        f.registry
            .list_devices(&globex, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // acme's device is untouched and its credential still works.
    f.registry.exchange(&hash).await.unwrap();
    assert_eq!(
        f.registry
            .get_device(&tenant("acme"), &p1)
            .await
            .unwrap()
            .revoked_at,
        None
    );
}

#[tokio::test]
async fn devices_are_listed_by_id_a_page_at_a_time() {
    let f = fixture().await;
    let acme = tenant("acme");
    for d in ["c", "a", "e", "b", "d"] {
        f.registry
            .register_device(ADMIN, &acme, &device(d), None, &secret_hash())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<DeviceId> = None;
    let mut pages = 0;
    loop {
        let page = f
            .registry
            .list_devices(&acme, after.as_ref(), 2)
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|d| d.device_id.to_string()));
        match page.next_after {
            Some(next) => after = Some(device(&next)),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn a_disabled_tenants_devices_get_no_token() {
    let f = fixture().await;
    let hash = secret_hash();
    f.registry
        .register_device(ADMIN, &tenant("acme"), &device("p1"), None, &hash)
        .await
        .unwrap();
    sqlx::query("UPDATE tenants SET disabled_at = now() WHERE id = 'acme'")
        .execute(&f.owner)
        .await
        .unwrap();
    assert!(matches!(
        f.registry.exchange(&hash).await,
        Err(RegistryError::CredentialRefused("the tenant is disabled"))
    ));
}

#[tokio::test]
async fn no_audit_row_holds_a_secret_hash() {
    let f = fixture().await;
    let (acme, p1) = (tenant("acme"), device("p1"));
    let first = secret_hash();
    let second = secret_hash();
    f.registry
        .register_device(ADMIN, &acme, &p1, None, &first)
        .await
        .unwrap();
    f.registry
        .issue_credential(ADMIN, &acme, &p1, &second)
        .await
        .unwrap();
    f.registry.revoke_device(ADMIN, &acme, &p1).await.unwrap();
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(a)::text FROM audit_log a ORDER BY id")
            .fetch_all(&f.owner)
            .await
            .unwrap();
    // Two tenants; the registration and its credential; one more credential; the revocation.
    assert_eq!(rows.len(), 2 + 2 + 1 + 1, "{rows:#?}");
    for hash in [first, second] {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        for row in &rows {
            assert!(!row.contains(&hex), "an audit row holds a hash: {row}");
            assert!(
                !row.contains("secret"),
                "an audit row names a secret: {row}"
            );
        }
    }
}
